//! The worker (the source pad's task): generates queued windows, crossfades them and
//! pushes audio and events downstream in stream order.

use super::*;

impl MMAudioGen {
    pub(super) fn start_task(&self) -> Result<(), glib::BoolError> {
        let weak = self.downgrade();
        self.srcpad.start_task(move || {
            if let Some(imp) = weak.upgrade() {
                imp.src_loop();
            }
        })
    }

    pub(super) fn src_loop(&self) {
        let job = {
            let mut shared = lock(&self.shared);
            loop {
                if shared.flushing {
                    drop(shared);
                    let _ = self.srcpad.pause_task();
                    return;
                }
                if let Some(job) = shared.jobs.pop_front() {
                    if let Job::Window { span, .. } = &job {
                        shared.current = Some(*span);
                    }
                    break job;
                }
                shared = self
                    .cond
                    .wait(shared)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let is_window = matches!(job, Job::Window { .. });
        let res = self.process(job);
        let mut shared = lock(&self.shared);
        if is_window {
            shared.windows = shared.windows.saturating_sub(1);
            shared.current = None;
        }
        self.cond.notify_all();
        if let Err(err) = res {
            gst::debug!(CAT, imp = self, "Pausing task: {err:?}");
            if !shared.flushing {
                shared.flow = Err(err);
            }
            drop(shared);
            let _ = self.srcpad.pause_task();
        }
    }

    pub(super) fn process(&self, job: Job) -> Result<gst::FlowSuccess, gst::FlowError> {
        match job {
            Job::Event(event) => {
                if event.type_() != gst::EventType::StreamStart {
                    self.ensure_caps()?;
                }
                let eos = event.type_() == gst::EventType::Eos;
                if !self.srcpad.push_event(event) {
                    gst::debug!(CAT, imp = self, "Downstream refused an event");
                }
                if eos {
                    let mut shared = lock(&self.shared);
                    if !shared.flushing {
                        shared.flow = Err(gst::FlowError::Eos);
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            }
            Job::Window { request, span, cfg } => self.generate_window(request, span, cfg),
            Job::Finish => self.finish_stream(),
            Job::End { total } => {
                let rate = self.ensure_caps()?;
                let res = {
                    let mut output = lock(&self.output);
                    output.held = None;
                    match output.assembler.as_mut() {
                        Some(a) => a.finish(total).map(Some),
                        None if total == 0 => Ok(None),
                        None => Err(mmaudio::Error::input(format!(
                            "stream of {total} samples ended without any window"
                        ))),
                    }
                };
                let res = match res {
                    Ok(Some(chunk)) => self.push_chunk(chunk, rate),
                    Ok(None) => Ok(gst::FlowSuccess::Ok),
                    Err(err) => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Failed,
                            ("Window bookkeeping failed: {err}")
                        );
                        Err(gst::FlowError::Error)
                    }
                };
                // A new stream (after a drain) starts at a new timestamp.
                lock(&self.output).discont = true;
                res
            }
        }
    }

    /// Push the audio caps before anything that needs them (waits for the model).
    pub(super) fn ensure_caps(&self) -> Result<u32, gst::FlowError> {
        if let Some(rate) = lock(&self.output).rate {
            return Ok(rate);
        }
        let (_, rate, _) = self.wait_for_model()?;
        let caps = audio_caps(rate);
        gst::debug!(CAT, imp = self, "Output caps {caps}");
        if !self.srcpad.push_event(gst::event::Caps::new(&caps)) {
            if self.srcpad.pad_flags().contains(gst::PadFlags::FLUSHING) {
                return Err(gst::FlowError::Flushing);
            }
            return self.downstream_flow(Err(gst::FlowError::NotNegotiated), &caps);
        }
        lock(&self.output).rate = Some(rate);
        Ok(rate)
    }

    /// A flow return of downstream on the source pad. A fatal one (not-negotiated,
    /// not-linked, error) is posted as an ERROR of this element that says why, before the
    /// task pauses: the streaming thread may already have seen EOS, so nobody else would.
    pub(super) fn downstream_flow<T>(
        &self,
        res: Result<T, gst::FlowError>,
        caps: &gst::Caps,
    ) -> Result<T, gst::FlowError> {
        let err = match res {
            Ok(v) => return Ok(v),
            Err(err) => err,
        };
        if matches!(err, gst::FlowError::Flushing | gst::FlowError::Eos)
            || lock(&self.shared).flushing
        {
            return Err(err);
        }
        let described = caps
            .structure(0)
            .map(|s| {
                let rate = s.get::<i32>("rate").unwrap_or_default();
                format!("audio/x-raw rate={rate} (mono F32)")
            })
            .unwrap_or_else(|| caps.to_string());
        match err {
            gst::FlowError::NotNegotiated => {
                let accepted = self
                    .srcpad
                    .peer_query_caps(None)
                    .to_string()
                    .replace("audio/x-raw, ", "");
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("Downstream refused {described}: add audioconvert ! \
                         audioresample after mmaudiogen"),
                    ["offered {caps}; downstream accepts {accepted}"]
                );
            }
            gst::FlowError::NotLinked => {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Pad,
                    ("The src pad is not linked: nothing takes the generated audio"),
                    ["pushing {described} returned not-linked"]
                );
            }
            other => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    (
                        "Downstream stopped taking the generated audio ({})",
                        flow_name(other)
                    ),
                    ["pushing {described} returned {other:?}"]
                );
            }
        }
        Err(err)
    }

    // `mmaudio::Error` is large (it carries paths and shapes); it is the generator's type.
    #[allow(clippy::result_large_err)]
    pub(super) fn generate_window(
        &self,
        request: WindowRequest,
        span: WindowSpan,
        cfg: WindowConfig,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let rate = self.ensure_caps()?;
        let (generator, _, _) = self.wait_for_model()?;
        gst::debug!(
            CAT,
            imp = self,
            "Generating window {} at {:.3} s: {:.3} s, {} frames, prompt {:?}",
            request.index,
            request.start,
            request.duration,
            request.frames.len(),
            request.params.prompt
        );
        let started = Instant::now();
        let cancel = self.progress_cancel(request.index, request.params.num_steps);
        let res = panic::catch_unwind(AssertUnwindSafe(|| {
            lock(&generator).generate(&request, &cancel)
        }));
        let elapsed = started.elapsed();
        if self.cancel.is_cancelled() {
            // Flushing: whatever came back is stale.
            return Err(gst::FlowError::Flushing);
        }
        let audio = match res {
            Ok(Ok(audio)) => audio,
            Ok(Err(mmaudio::Error::Aborted)) => return Err(gst::FlowError::Flushing),
            Ok(Err(err)) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("Generating window {} failed: {err}", request.index)
                );
                return Err(gst::FlowError::Error);
            }
            Err(panic) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    (
                        "The generator panicked on window {}: {}",
                        request.index,
                        panic_message(panic.as_ref())
                    )
                );
                return Err(gst::FlowError::Error);
            }
        };
        gst::debug!(
            CAT,
            imp = self,
            "Window {} generated in {elapsed:?}",
            request.index
        );
        self.check_budget(request.index, elapsed);
        self.post_window_message(&request, &span, rate, elapsed);

        let res = {
            let mut output = lock(&self.output);
            if span.index == 0 || output.assembler.is_none() {
                output.assembler = Some(Assembler::new(cfg));
            }
            let res = output
                .assembler
                .as_mut()
                .expect("set above")
                .push(&span, audio);
            output.held = (res.is_ok() && !span.last).then_some(span);
            res
        };
        match res {
            Ok(chunk) => self.push_chunk(chunk, rate),
            Err(err) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("Window {}: {err}", request.index)
                );
                Err(gst::FlowError::Error)
            }
        }
    }

    /// The `mmaudiogen-window` element message (see the module documentation).
    pub(super) fn post_window_message(
        &self,
        request: &WindowRequest,
        span: &WindowSpan,
        rate: u32,
        elapsed: Duration,
    ) {
        let structure = gst::Structure::builder("mmaudiogen-window")
            .field("index", span.index)
            .field(
                "start",
                gst::ClockTime::from_nseconds(span.origin + samples_to_ns(span.start, rate)),
            )
            .field(
                "duration",
                gst::ClockTime::from_nseconds(samples_to_ns(span.len, rate)),
            )
            .field("samples", span.len)
            .field("frames", request.frames.len() as u32)
            .field(
                "processing-time",
                gst::ClockTime::from_nseconds(elapsed.as_nanos() as u64),
            )
            .field("last", span.last)
            .build();
        let _ = self.obj().post_message(
            gst::message::Element::builder(structure)
                .src(&*self.obj())
                .build(),
        );
    }

    pub(super) fn check_budget(&self, index: u64, elapsed: Duration) {
        let budget = Duration::from_millis(lock(&self.settings).processing_latency_ms as u64);
        if elapsed <= budget {
            return;
        }
        let live = lock(&self.shared).upstream_live;
        let first = {
            let mut output = lock(&self.output);
            !std::mem::replace(&mut output.late_warned, true)
        };
        if live || first {
            gst::element_imp_warning!(
                self,
                gst::CoreError::Failed,
                (
                    "Window {index} took {:.3} s to generate, more than processing-latency ({} ms)",
                    elapsed.as_secs_f64(),
                    budget.as_millis()
                ),
                [
                    "Audio will be late in a live pipeline{}. Raise processing-latency, lower \
                     num-steps or use a faster device.",
                    if live {
                        ""
                    } else {
                        " (further late windows are only logged, in the mmaudiogen debug \
                         category at INFO level, until the element goes back to READY)"
                    }
                ]
            );
        } else {
            gst::info!(
                CAT,
                imp = self,
                "Window {index} took {elapsed:?}, budget {budget:?}"
            );
        }
    }

    pub(super) fn push_chunk(
        &self,
        chunk: Chunk,
        rate: u32,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        if chunk.samples.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        let n = chunk.samples.len() as u64;
        let (pts, end) = chunk.time_range(rate);
        let mut buffer =
            gst::Buffer::with_size(chunk.samples.len() * 4).map_err(|_| gst::FlowError::Error)?;
        {
            let buffer = buffer.get_mut().expect("new buffer is writable");
            buffer.set_pts(gst::ClockTime::from_nseconds(pts));
            buffer.set_duration(gst::ClockTime::from_nseconds(end - pts));
            buffer.set_offset(chunk.offset);
            buffer.set_offset_end(chunk.offset + n);
            let mut map = buffer.map_writable().map_err(|_| gst::FlowError::Error)?;
            for (dst, s) in map.chunks_exact_mut(4).zip(&chunk.samples) {
                dst.copy_from_slice(&s.to_ne_bytes());
            }
        }
        {
            let mut output = lock(&self.output);
            if output.discont {
                output.discont = false;
                buffer
                    .get_mut()
                    .expect("not shared yet")
                    .set_flags(gst::BufferFlags::DISCONT);
            }
        }
        gst::log!(CAT, imp = self, "Pushing {buffer:?}");
        let res = self.srcpad.push(buffer);
        self.downstream_flow(res, &audio_caps(rate))
    }
}

/// The caps of the output at `rate`.
pub(super) fn audio_caps(rate: u32) -> gst::Caps {
    gst_audio::AudioCapsBuilder::new_interleaved()
        .format(gst_audio::AUDIO_FORMAT_F32)
        .rate(rate as i32)
        .channels(1)
        .build()
}

/// The name GStreamer gives a flow return (`gst_flow_get_name`).
fn flow_name(err: gst::FlowError) -> &'static str {
    match err {
        gst::FlowError::NotLinked => "not-linked",
        gst::FlowError::Flushing => "flushing",
        gst::FlowError::Eos => "eos",
        gst::FlowError::NotNegotiated => "not-negotiated",
        gst::FlowError::Error => "error",
        gst::FlowError::NotSupported => "not-supported",
        _ => "custom error",
    }
}
