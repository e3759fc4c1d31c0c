//! The generator thread: takes the jobs the streaming thread queued, generates and
//! crossfades the windows, and hands audio and events to the source pad task (push.rs) in
//! stream order. Generation runs on its own thread so that a downstream sink that blocks
//! (a synchronised sink waiting for its clock, an audio device draining its ring buffer)
//! never delays the next window.

use super::*;

impl MMAudioGen {
    /// Start the generator thread (source pad activation).
    pub(super) fn start_generator(&self) -> Result<(), std::io::Error> {
        let mut thread = lock(&self.generator_thread);
        if thread.is_some() {
            return Ok(());
        }
        lock(&self.shared).quit = false;
        // The thread holds the element until `stop_generator` (pad deactivation) joins it.
        let obj = self.obj().clone();
        *thread = Some(
            std::thread::Builder::new()
                .name("mmaudiogen-gen".into())
                .spawn(move || obj.imp().generator_loop())?,
        );
        Ok(())
    }

    /// End the generator thread (source pad deactivation; flushing is set, so a running
    /// window is cancelled).
    pub(super) fn stop_generator(&self) {
        let Some(thread) = lock(&self.generator_thread).take() else {
            return;
        };
        {
            let mut shared = lock(&self.shared);
            shared.quit = true;
            self.cond.notify_all();
        }
        if thread.join().is_err() {
            gst::error!(CAT, imp = self, "The generator thread panicked");
        }
    }

    /// Wait until the generator thread is between jobs (flushing is set, so a running window
    /// is cancelled): nothing it produces afterwards belongs to the flushed stream.
    pub(super) fn wait_generator_idle(&self) {
        let mut shared = lock(&self.shared);
        while shared.generating {
            shared = self
                .cond
                .wait(shared)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn generator_loop(&self) {
        loop {
            let jobs = {
                let mut shared = lock(&self.shared);
                loop {
                    if shared.quit {
                        return;
                    }
                    // After an error (posted already) nothing more is generated until a
                    // flush or a state change resets the flow.
                    let stopped = matches!(shared.flow, Err(e) if e != gst::FlowError::Eos);
                    if !shared.flushing
                        && !stopped
                        && let Some(n) = Self::ready_jobs(&shared)
                    {
                        shared.generating = true;
                        let jobs = shared.jobs.drain(..n).collect::<Vec<Job>>();
                        if let Some(Job::Window { span, .. }) = jobs.last() {
                            // `stop-after-window` ends the stream after this one (the last
                            // of a batch).
                            shared.current = Some(*span);
                        }
                        break jobs;
                    }
                    shared = self
                        .cond
                        .wait(shared)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            };
            let res = if jobs.len() > 1 {
                self.generate_batch(jobs)
            } else {
                self.process(jobs.into_iter().next().expect("one job"))
            };
            let mut shared = lock(&self.shared);
            shared.generating = false;
            shared.current = None;
            if let Err(err) = res {
                gst::debug!(CAT, imp = self, "Generator stopped: {err:?}");
                if !shared.flushing {
                    shared.flow = Err(err);
                }
            }
            self.cond.notify_all();
        }
    }

    /// How many jobs at the front of the queue to take now, if any: one, or with
    /// `batch-windows` > 1 (windows mode, upstream not live) the windows at the front once
    /// there are `batch-windows` of them or the stream ends after them (an event, its end).
    fn ready_jobs(shared: &Shared) -> Option<usize> {
        let first = shared.jobs.front()?;
        let batchable = |job: &Job| {
            matches!(
                job,
                Job::Window {
                    cfg: EngineConfig::Windows(_),
                    ..
                }
            )
        };
        if shared.batch_windows <= 1 || shared.upstream_live || !batchable(first) {
            return Some(1);
        }
        let windows = shared.jobs.iter().take_while(|j| batchable(j)).count();
        if windows >= shared.batch_windows {
            Some(shared.batch_windows)
        } else if windows < shared.jobs.len() {
            Some(windows)
        } else {
            None // more windows of this stream are coming
        }
    }

    /// Hand an item to the source pad task (dropped while flushing: it is stale).
    pub(super) fn emit(&self, item: Out) -> Result<(), gst::FlowError> {
        let mut shared = lock(&self.shared);
        if shared.flushing {
            return Err(gst::FlowError::Flushing);
        }
        shared.out.push_back(item);
        self.cond.notify_all();
        Ok(())
    }

    pub(super) fn process(&self, job: Job) -> Result<gst::FlowSuccess, gst::FlowError> {
        match job {
            Job::Event(event) => {
                // An event between two streams: they are not one stream with a hole.
                lock(&self.output).hole_from = None;
                if let gst::EventView::Segment(s) = event.view()
                    && let Ok(segment) = s.segment().clone().downcast::<gst::ClockTime>()
                {
                    lock(&self.output).segment = Some(segment);
                }
                self.emit(Out::Event(event))?;
                Ok(gst::FlowSuccess::Ok)
            }
            Job::Preroll(pts) => {
                // (never after a timestamp jump: a preroll follows a segment, a drain or a
                // flush, each of which forgets the hole)
                self.emit(Out::Preroll(pts))?;
                Ok(gst::FlowSuccess::Ok)
            }
            Job::Window { request, span, cfg } => self.generate_window(request, span, cfg),
            Job::Finish => self.finish_stream(),
            Job::End { total } => {
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
                match res {
                    Ok(Some(chunk)) => {
                        // Where this stream's audio ends: a next stream after a timestamp
                        // jump starts with a GAP from there (`cover_hole`).
                        let (_, info) = self.wait_for_model()?;
                        lock(&self.output).hole_from = Some(chunk.time_range(info.rate).1);
                        self.emit(Out::Chunk(chunk, ChunkKind::End))?
                    }
                    Ok(None) => {}
                    Err(err) => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Failed,
                            ("Window bookkeeping failed: {err}")
                        );
                        return Err(gst::FlowError::Error);
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            }
        }
    }

    /// Push the audio caps before anything that needs them (waits for the model).
    pub(super) fn ensure_caps(&self) -> Result<u32, gst::FlowError> {
        if let Some(rate) = lock(&self.output).rate {
            return Ok(rate);
        }
        let (_, traits) = self.wait_for_model()?;
        let rate = traits.rate;
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

    pub(super) fn generate_window(
        &self,
        request: WindowRequest,
        span: WindowSpan,
        cfg: EngineConfig,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (generator, info) = self.wait_for_model()?;
        let rate = info.rate;
        let mut request = request;
        if span.index == 0 {
            // A new stream: nothing carried from the previous one (latents, caches).
            lock(&generator).reset();
            lock(&self.output).continuity_lost = false;
        }
        // Continuation: a window skipped by QoS left no latents for the next one to hold,
        // so the window after it starts afresh (nothing known) and is crossfaded against
        // the skipped window's silence; the chain resumes from its latents.
        if let Some(c) = request.continuation.as_mut()
            && c.known > 0
            && lock(&self.output).continuity_lost
        {
            gst::debug!(
                CAT,
                imp = self,
                "Window {}: the window before it was skipped, nothing known",
                request.index
            );
            c.known = 0;
        }
        // Live QoS: a window whose audio can no longer be on time is not generated.
        let gate = self.qos_gate(&span, rate);
        let generated = match &gate {
            Some(gate) if !gate.generate => None,
            _ => self.run_generator(&generator, &request, gate.as_ref())?,
        };
        let skipped = generated.is_none();
        lock(&self.output).continuity_lost = skipped;
        let (audio, elapsed) = match generated {
            Some((audio, elapsed)) => {
                self.check_budget(request.index, elapsed);
                (audio, elapsed)
            }
            None => {
                let gate = gate.expect("only a QoS gate skips");
                self.window_skipped(&span, &gate);
                (vec![0.0; span.generated as usize], Duration::ZERO)
            }
        };
        self.finish_window(&request, &span, cfg, rate, audio, elapsed, skipped)
    }

    /// A generated (or skipped) window's audio: the window message, the crossfade, and the
    /// chunk to the source pad task.
    #[allow(clippy::too_many_arguments)]
    fn finish_window(
        &self,
        request: &WindowRequest,
        span: &WindowSpan,
        cfg: EngineConfig,
        rate: u32,
        audio: Vec<f32>,
        elapsed: Duration,
        skipped: bool,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.post_window_message(request, span, rate, elapsed, skipped);

        let res = {
            let mut output = lock(&self.output);
            if span.index == 0 || output.assembler.is_none() {
                output.assembler = Some(Assembler::new(cfg));
            }
            let res = output
                .assembler
                .as_mut()
                .expect("set above")
                .push(span, audio);
            output.held = (res.is_ok() && !span.last).then_some(*span);
            res
        };
        match res {
            Ok(chunk) => {
                if span.index == 0 {
                    self.cover_hole(span.origin)?;
                }
                self.emit(Out::Chunk(chunk, ChunkKind::Window))?;
                Ok(gst::FlowSuccess::Ok)
            }
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

    /// Several windows of one stream (windows mode, `batch-windows`), generated as one
    /// batch, then crossfaded and handed on in order. The window messages give each window
    /// an equal share of the batch's time.
    // `mmaudio::Error` is large (it carries paths and shapes); it is the generator's type.
    #[allow(clippy::result_large_err)]
    fn generate_batch(&self, jobs: Vec<Job>) -> Result<gst::FlowSuccess, gst::FlowError> {
        let windows: Vec<(WindowRequest, WindowSpan, EngineConfig)> = jobs
            .into_iter()
            .filter_map(|job| match job {
                Job::Window { request, span, cfg } => Some((request, span, cfg)),
                _ => None,
            })
            .collect();
        let (generator, info) = self.wait_for_model()?;
        if windows[0].1.index == 0 {
            lock(&generator).reset();
            lock(&self.output).continuity_lost = false;
        }
        let requests: Vec<WindowRequest> = windows.iter().map(|w| w.0.clone()).collect();
        let (first, last) = (requests[0].index, requests[requests.len() - 1].index);
        gst::debug!(
            CAT,
            imp = self,
            "Generating windows {first} to {last} as one batch"
        );
        // progress messages carry the first window's index
        let cancel = self.progress_cancel(first, requests[0].params.num_steps);
        let started = Instant::now();
        let res = panic::catch_unwind(AssertUnwindSafe(|| {
            lock(&generator).generate_many(&requests, &cancel)
        }));
        let elapsed = started.elapsed();
        if self.cancel.is_cancelled() {
            return Err(gst::FlowError::Flushing);
        }
        let audio = match res {
            Ok(Ok(audio)) if audio.len() == windows.len() => audio,
            Ok(Ok(audio)) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    (
                        "Generating windows {first} to {last}: the generator gave {} windows \
                         for {}",
                        audio.len(),
                        windows.len()
                    )
                );
                return Err(gst::FlowError::Error);
            }
            Ok(Err(mmaudio::Error::Aborted)) => return Err(gst::FlowError::Flushing),
            Ok(Err(err)) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("Generating windows {first} to {last} failed: {err}")
                );
                return Err(gst::FlowError::Error);
            }
            Err(panic) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    (
                        "The generator panicked on windows {first} to {last}: {}",
                        panic_message(panic.as_ref())
                    )
                );
                return Err(gst::FlowError::Error);
            }
        };
        let each = elapsed / windows.len() as u32;
        for ((request, span, cfg), audio) in windows.into_iter().zip(audio) {
            self.check_budget(request.index, each);
            self.finish_window(&request, &span, cfg, info.rate, audio, each, false)?;
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Run the generator on one window: its audio and the wall time it took, or `None` when
    /// the QoS deadline passed during the generation (it was cancelled for it).
    // `mmaudio::Error` is large (it carries paths and shapes); it is the generator's type.
    #[allow(clippy::result_large_err)]
    fn run_generator(
        &self,
        generator: &SharedGenerator,
        request: &WindowRequest,
        gate: Option<&qos::Gate>,
    ) -> Result<Option<(Vec<f32>, Duration)>, gst::FlowError> {
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
        let deadline = gate.and_then(|gate| self.arm_deadline(gate));
        let started = Instant::now();
        let cancel = self.progress_cancel(request.index, request.params.num_steps);
        let res = panic::catch_unwind(AssertUnwindSafe(|| {
            let mut generator = lock(generator);
            let audio = generator.generate(request, &cancel);
            if let Some(c) = generator.cache_stats() {
                gst::debug!(
                    CAT,
                    imp = self,
                    "Feature caches: CLIP {} hits / {} misses ({:.0} %), Synchformer {} / {} \
                     ({:.0} %)",
                    c.clip_hits,
                    c.clip_misses,
                    100.0 * c.clip_hit_rate().unwrap_or(0.0),
                    c.sync_hits,
                    c.sync_misses,
                    100.0 * c.sync_hit_rate().unwrap_or(0.0)
                );
            }
            audio
        }));
        let elapsed = started.elapsed();
        let missed = deadline.is_some_and(|d| self.disarm_deadline(d));
        if self.cancel.is_cancelled() {
            // Flushing: whatever came back is stale.
            return Err(gst::FlowError::Flushing);
        }
        if missed {
            return Ok(None);
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
        if let Some(gate) = gate {
            self.qos_generated(gate);
        }
        Ok(Some((audio, elapsed)))
    }

    /// A stream that starts after a timestamp jump (the previous one ended with no event
    /// in between): a GAP covers the hole, so downstream knows nothing is missing.
    fn cover_hole(&self, origin: u64) -> Result<(), gst::FlowError> {
        let Some(from) = lock(&self.output).hole_from.take() else {
            return Ok(());
        };
        if origin <= from {
            return Ok(());
        }
        let (start, duration) = (
            gst::ClockTime::from_nseconds(from),
            gst::ClockTime::from_nseconds(origin - from),
        );
        gst::debug!(
            CAT,
            imp = self,
            "Timestamp jump: GAP at {start} for {duration} before the new stream"
        );
        self.emit(Out::Event(
            gst::event::Gap::builder(start).duration(duration).build(),
        ))
    }

    /// The `mmaudiogen-window` element message (see the module documentation).
    pub(super) fn post_window_message(
        &self,
        request: &WindowRequest,
        span: &WindowSpan,
        rate: u32,
        elapsed: Duration,
        skipped: bool,
    ) {
        let windows_skipped = lock(&self.output).qos.skipped;
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
                "held",
                gst::ClockTime::from_nseconds(samples_to_ns(
                    request.continuation.map_or(0, |c| {
                        c.known as u64 * (span.generated / c.latents.max(1) as u64)
                    }),
                    rate,
                )),
            )
            .field(
                "processing-time",
                gst::ClockTime::from_nseconds(elapsed.as_nanos() as u64),
            )
            .field("last", span.last)
            .field("skipped", skipped)
            .field("windows-skipped", windows_skipped)
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
