//! The streaming thread: frames and serialized events in, jobs queued for the generator
//! thread (with backpressure), flushing, draining at EOS, new segments and SEGMENT_DONE.

use super::*;
use mmaudio::features::pixels::{Colorimetry, Field, Matrix, PixelFormat, Plane, Range, RawFrame};
use mmaudio::window::FrameSource;

/// The raw video formats of the sink pad (what decoders output, and the RGB family).
pub(super) const SINK_FORMATS: [gst_video::VideoFormat; 21] = {
    use gst_video::VideoFormat as F;
    [
        F::I420,
        F::Yv12,
        F::Nv12,
        F::Nv21,
        F::Y42b,
        F::Y444,
        F::Rgb,
        F::Bgr,
        F::Rgbx,
        F::Bgrx,
        F::Xrgb,
        F::Xbgr,
        F::Rgba,
        F::Bgra,
        F::Argb,
        F::Abgr,
        F::Gray8,
        F::I42010le,
        F::I42210le,
        F::Y44410le,
        F::P01010le,
    ]
};

fn pixel_format(format: gst_video::VideoFormat) -> Option<PixelFormat> {
    use gst_video::VideoFormat as F;
    Some(match format {
        F::I420 => PixelFormat::I420,
        F::Yv12 => PixelFormat::Yv12,
        F::Nv12 => PixelFormat::Nv12,
        F::Nv21 => PixelFormat::Nv21,
        F::Y42b => PixelFormat::Y42b,
        F::Y444 => PixelFormat::Y444,
        F::Rgb => PixelFormat::Rgb,
        F::Bgr => PixelFormat::Bgr,
        F::Rgbx => PixelFormat::Rgbx,
        F::Bgrx => PixelFormat::Bgrx,
        F::Xrgb => PixelFormat::Xrgb,
        F::Xbgr => PixelFormat::Xbgr,
        F::Rgba => PixelFormat::Rgba,
        F::Bgra => PixelFormat::Bgra,
        F::Argb => PixelFormat::Argb,
        F::Abgr => PixelFormat::Abgr,
        F::Gray8 => PixelFormat::Gray8,
        F::I42010le => PixelFormat::I42010le,
        F::I42210le => PixelFormat::I42210le,
        F::Y44410le => PixelFormat::Y44410le,
        F::P01010le => PixelFormat::P01010le,
        _ => return None,
    })
}

/// The caps' colorimetry as the core library reads it. GstVideoInfo already fills in
/// GStreamer's defaults when the caps say nothing (BT.601 up to 576 lines, BT.709 above,
/// BT.2020 from 2160; limited range for YUV; MPEG-2 chroma siting above 576 lines).
fn colorimetry(info: &gst_video::VideoInfo) -> Colorimetry {
    use gst_video::{VideoChromaSite as Site, VideoColorMatrix as M, VideoColorRange as R};
    let c = info.colorimetry();
    let matrix = match c.matrix() {
        M::Bt709 => Matrix::Bt709,
        M::Bt2020 => Matrix::Bt2020,
        M::Smpte240m => Matrix::Smpte240m,
        M::Fcc => Matrix::Fcc,
        M::Bt601 => Matrix::Bt601,
        // unknown (or an RGB matrix on YUV caps): GStreamer's default by size
        _ if info.height() > 576 => Matrix::Bt709,
        _ => Matrix::Bt601,
    };
    let range = match c.range() {
        R::Range0_255 => Range::Full,
        R::Range16_235 => Range::Limited,
        _ if info.format_info().is_gray() => Range::Full,
        _ => Range::Limited,
    };
    let site = info.chroma_site();
    // unknown siting: MPEG-2 (horizontally cosited), what most video codecs use
    let unknown = site.is_empty();
    Colorimetry {
        matrix,
        range,
        chroma_h_cosited: unknown || site.contains(Site::H_COSITED),
        chroma_v_cosited: site.contains(Site::V_COSITED),
    }
}

/// Describe a mapped frame for the core library. An interlaced frame is read as its first
/// field in time (see `mmaudio::features::pixels`).
fn raw_frame<'a>(
    frame: &'a gst_video::VideoFrameRef<&gst::BufferRef>,
) -> Result<RawFrame<'a>, String> {
    let info = frame.info();
    let format = pixel_format(info.format())
        .ok_or_else(|| format!("format {} is not supported", info.format().to_str()))?;
    let mut planes = [Plane::default(); 3];
    for (p, plane) in planes.iter_mut().enumerate().take(format.n_planes()) {
        *plane = Plane {
            data: frame
                .plane_data(p as u32)
                .map_err(|err| format!("plane {p}: {err}"))?,
            stride: usize::try_from(frame.plane_stride()[p])
                .map_err(|_| format!("plane {p} has a negative stride"))?,
        };
    }
    let field = frame.is_interlaced().then(|| {
        if frame.is_tff() {
            Field::Top
        } else {
            Field::Bottom
        }
    });
    Ok(RawFrame {
        format,
        width: info.width() as usize,
        height: info.height() as usize,
        planes,
        colorimetry: colorimetry(info),
        field,
    })
}

/// A frame's raw planes, copied out of its buffer until the planner has decided which
/// model sizes it needs (the buffer itself is not held).
struct OwnedRaw {
    format: PixelFormat,
    width: usize,
    height: usize,
    planes: Vec<(Vec<u8>, usize)>,
    colorimetry: Colorimetry,
    field: Option<Field>,
}

impl OwnedRaw {
    fn copy(raw: &RawFrame) -> Self {
        Self {
            format: raw.format,
            width: raw.width,
            height: raw.height,
            planes: raw.planes[..raw.format.n_planes()]
                .iter()
                .map(|p| (p.data.to_vec(), p.stride))
                .collect(),
            colorimetry: raw.colorimetry,
            field: raw.field,
        }
    }

    fn view(&self) -> RawFrame<'_> {
        let mut planes = [Plane::default(); 3];
        for (plane, (data, stride)) in planes.iter_mut().zip(&self.planes) {
            *plane = Plane {
                data,
                stride: *stride,
            };
        }
        RawFrame {
            format: self.format,
            width: self.width,
            height: self.height,
            planes,
            colorimetry: self.colorimetry,
            field: self.field,
        }
    }
}

impl MMAudioGen {
    // `mmaudio::Error` is large (it carries paths and shapes): the frame preparer's type.
    #[allow(clippy::result_large_err)]
    pub(super) fn sink_chain(
        &self,
        pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        gst::log!(CAT, obj = pad, "Handling buffer {buffer:?}");
        self.current_flow()?;
        if lock(&self.shared).finished {
            // stop-after-window: nothing more of this stream.
            return Err(gst::FlowError::Eos);
        }
        let (_, model) = self.wait_for_model()?;
        let settings = lock(&self.settings).clone();

        let mut state = lock(&self.state);
        let Some(info) = state.video_info.clone() else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("Received a buffer before caps")
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        let Some(pts) = buffer.pts().or(state.next_pts) else {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                ("Received a video buffer without timestamp")
            );
            return Err(gst::FlowError::Error);
        };
        let duration = buffer.duration().or(state.frame_duration);
        state.next_pts = duration.map(|d| pts + d);
        if state.reverse {
            // No audio for a reverse segment (see `refuse_reverse_playback`): its time is
            // covered by GAPs, so downstream still prerolls and advances.
            drop(state);
            let gap = gst::event::Gap::builder(pts).duration(duration).build();
            self.enqueue(Job::Event(gap))?;
            return self.current_flow();
        }
        let stream_starts = !std::mem::replace(&mut state.stream_open, true);
        let frame = self.copy_frame(&buffer, &info, pts, duration, model.prepared)?;

        if state.planner.is_none() {
            let cfg = settings.engine(model.rate, model.period).map_err(|err| {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Settings,
                    ("Invalid window settings: {err}")
                );
                gst::FlowError::Error
            })?;
            match &cfg {
                EngineConfig::Windows(c) => gst::debug!(
                    CAT,
                    imp = self,
                    "Windows of {} samples every {} samples at {} Hz",
                    c.window_samples(),
                    c.hop_samples(),
                    model.rate
                ),
                EngineConfig::Continuation(c) => gst::debug!(
                    CAT,
                    imp = self,
                    "Continuation windows of {} latents, hop {} latents ({} samples), \
                     crossfade {} samples at {} Hz",
                    c.window_latents(),
                    c.hop_latents(),
                    c.hop_samples(),
                    c.crossfade_samples(),
                    model.rate
                ),
            }
            let mut planner = WindowPlanner::new(cfg);
            // Only the frames MMAudio's 8/25 fps sampling can pick are kept, each resized
            // once to the model sizes it is picked for (as it is settled, on this thread,
            // overlapping the worker's generation) instead of being kept whole.
            planner.set_frame_picking(model.picks);
            if model.prepared {
                let preparer: Preparer = Arc::new(|f: &TimedFrame, planes: FramePlanes| {
                    let raw = f
                        .source
                        .as_ref()
                        .and_then(|s| s.get::<OwnedRaw>())
                        .ok_or_else(|| mmaudio::Error::input("no raw frame to prepare"))?;
                    mmaudio::features::preprocess::prepare_frame_planes(
                        &raw.view(),
                        planes.clip,
                        planes.sync,
                    )
                });
                planner.set_preparer(Some(preparer));
            }
            state.planner = Some(planner);
            state.window_cfg = Some(cfg);
        }
        let cfg = state.window_cfg.expect("set with the planner");
        let fps = info.fps();
        let planner = state.planner.as_mut().expect("created above");
        planner.set_framerate(Some((fps.numer() as u32, fps.denom() as u32)));
        planner.set_params(settings.params());
        planner.set_text_only(settings.text_only);
        let dropped = planner.dropped_frames();
        let planned = planner.push_frame(frame);
        if let Some(err) = planner.take_prepare_error() {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "Cannot read a {}x{} {} frame: {err}",
                    info.width(),
                    info.height(),
                    info.format().to_str()
                )
            );
            return Err(gst::FlowError::Error);
        }
        if planner.dropped_frames() > dropped {
            gst::warning!(
                CAT,
                imp = self,
                "Dropped frame with pts {pts}: not after the previous frame"
            );
        }
        drop(state);

        if stream_starts && self.upstream_is_live() {
            self.enqueue(Job::Preroll(pts))?;
        }
        self.enqueue_planned(planned, cfg)?;
        self.current_flow()
    }

    /// Read a frame in whatever raw format it came: with the MMAudio generator its raw
    /// planes are kept for the planner's preparer (no conversion yet); other generators get
    /// it as packed RGB24.
    pub(super) fn copy_frame(
        &self,
        buffer: &gst::Buffer,
        info: &gst_video::VideoInfo,
        pts: gst::ClockTime,
        duration: Option<gst::ClockTime>,
        prepare: bool,
    ) -> Result<TimedFrame, gst::FlowError> {
        let fail = |what: String| {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "Cannot read a {}x{} {} frame from a buffer of {} bytes: {what}",
                    info.width(),
                    info.height(),
                    info.format().to_str(),
                    buffer.size()
                )
            );
            gst::FlowError::Error
        };
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), info)
            .map_err(|_| fail("mapping failed".into()))?;
        let raw = raw_frame(&frame).map_err(fail)?;
        raw.validate().map_err(|err| fail(err.to_string()))?;
        let (width, height) = (raw.width, raw.height);
        // The MMAudio generator only needs a frame at the model sizes its 8/25 fps
        // sampling picks it for, which the planner knows once the next frame has arrived:
        // until then the frame's raw planes are kept (a plain copy), then the planner
        // converts and resizes it once (on this thread, overlapping the worker's
        // generation) and drops the copy, or drops the frame. Other generators get every
        // frame as packed RGB24.
        let (data, source) = if prepare {
            (Vec::new(), Some(FrameSource::new(OwnedRaw::copy(&raw))))
        } else {
            (raw.to_rgb24().map_err(|err| fail(err.to_string()))?, None)
        };
        Ok(TimedFrame {
            pts: pts.nseconds(),
            duration: duration.map(|d| d.nseconds()),
            width,
            height,
            data: Arc::new(data),
            prepared: None,
            source,
        })
    }

    pub(super) fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        gst::log!(CAT, obj = pad, "Handling event {event:?}");
        match event.view() {
            EventView::FlushStart(_) => {
                gst::debug!(CAT, imp = self, "Flush start: cancelling generation");
                self.set_flushing();
                let ret = self.srcpad.push_event(event);
                let _ = self.srcpad.pause_task();
                ret
            }
            EventView::FlushStop(_) => {
                gst::debug!(CAT, imp = self, "Flush stop: resetting");
                // In case no FLUSH_START came before.
                self.set_flushing();
                let _ = self.srcpad.pause_task();
                self.wait_generator_idle();
                self.reset_stream();
                self.unset_flushing();
                let ret = self.srcpad.push_event(event);
                if let Err(err) = self.start_task() {
                    gst::error!(CAT, imp = self, "Failed to restart the task: {err}");
                    return false;
                }
                ret
            }
            EventView::Caps(c) => match gst_video::VideoInfo::from_caps(c.caps()) {
                Ok(info)
                    if matches!(
                        info.interlace_mode(),
                        gst_video::VideoInterlaceMode::Alternate
                            | gst_video::VideoInterlaceMode::Fields
                    ) =>
                {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Negotiation,
                        (
                            "mmaudiogen takes whole frames, not one field per buffer \
                             (interlace-mode={}): put deinterlace before it",
                            info.interlace_mode().to_str()
                        ),
                        ["caps {}", c.caps()]
                    );
                    false
                }
                Ok(info) => {
                    let fps = info.fps();
                    let frame_duration = (fps.numer() > 0 && fps.denom() > 0).then(|| {
                        gst::ClockTime::SECOND
                            .mul_div_floor(fps.denom() as u64, fps.numer() as u64)
                            .unwrap_or(gst::ClockTime::ZERO)
                    });
                    gst::debug!(CAT, imp = self, "Video caps {info:?}");
                    let mut state = lock(&self.state);
                    let changed = state.frame_duration != frame_duration;
                    state.frame_duration = frame_duration;
                    state.video_info = Some(info);
                    drop(state);
                    if changed {
                        self.post_latency_if_changed();
                    }
                    true
                }
                Err(err) => {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Negotiation,
                        ("Invalid video caps {}: {err}", c.caps())
                    );
                    false
                }
            },
            EventView::Segment(s) => {
                let segment = match s.segment().clone().downcast::<gst::ClockTime>() {
                    Ok(segment) => segment,
                    Err(segment) => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Format,
                            (
                                "Only TIME segments are supported, got a {:?} segment",
                                segment.format()
                            )
                        );
                        return false;
                    }
                };
                let mut state = lock(&self.state);
                let drain = state.planner.as_ref().is_some_and(|p| p.started())
                    && state.segment.as_ref().is_some_and(|old| {
                        let mut cmp = segment.clone();
                        cmp.set_position(old.position());
                        *old != cmp
                    });
                let planned = match state.planner.as_mut() {
                    Some(p) if drain => {
                        gst::debug!(CAT, imp = self, "New segment: draining the stream");
                        p.finish()
                    }
                    _ => Vec::new(),
                };
                if drain {
                    state.stream_open = false;
                }
                let cfg = state.window_cfg;
                let reverse = segment.rate() < 0.0;
                let warn = reverse && !state.reverse;
                state.reverse = reverse;
                state.segment = Some(segment);
                drop(state);
                if warn {
                    self.refuse_reverse_playback(s.segment().rate());
                }
                if let Some(cfg) = cfg
                    && self.enqueue_planned(planned, cfg).is_err()
                {
                    return false;
                }
                self.enqueue(Job::Event(event)).is_ok()
            }
            EventView::Eos(_) if lock(&self.shared).finished => {
                // stop-after-window already ended the stream (and queued its EOS).
                gst::debug!(CAT, imp = self, "EOS after stop-after-window: absorbed");
                true
            }
            // The end of the stream, or of a segment seek's segment: its audio goes out
            // first, all of it (a looping application seeks again on SEGMENT_DONE).
            EventView::Eos(_) | EventView::SegmentDone(_) => {
                let mut state = lock(&self.state);
                let planned = state
                    .planner
                    .as_mut()
                    .map(|p| p.finish())
                    .unwrap_or_default();
                state.stream_open = false;
                let cfg = state.window_cfg;
                drop(state);
                gst::debug!(
                    CAT,
                    imp = self,
                    "{:?}: draining {} items",
                    event.type_(),
                    planned.len()
                );
                if let Some(cfg) = cfg
                    && self.enqueue_planned(planned, cfg).is_err()
                {
                    return false;
                }
                self.enqueue(Job::Event(event)).is_ok()
            }
            EventView::Gap(_) => {
                let started = lock(&self.state)
                    .planner
                    .as_ref()
                    .is_some_and(|p| p.started());
                if started {
                    // The last frame holds until the next one; a trailing GAP (a demuxer
                    // whose other streams run longer) does not lengthen the output.
                    gst::debug!(CAT, imp = self, "Consuming GAP {event:?}");
                    true
                } else {
                    // Before the first frame there is no audio either: forward it, so
                    // that downstream can preroll.
                    self.enqueue(Job::Event(event)).is_ok()
                }
            }
            EventView::StreamStart(_) => {
                {
                    let mut shared = lock(&self.shared);
                    if shared.flow == Err(gst::FlowError::Eos) {
                        shared.flow = Ok(gst::FlowSuccess::Ok);
                    }
                }
                self.enqueue(Job::Event(event)).is_ok()
            }
            // Tags of the video stream (codec, bitrate) do not describe our audio.
            EventView::Tag(t) if t.tag().scope() == gst::TagScope::Stream => true,
            _ if event.is_serialized() => self.enqueue(Job::Event(event)).is_ok(),
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// Whether upstream is live (asked at each stream's first frame: the pipeline's own
    /// latency query only comes once every sink has prerolled). Only a live pipeline gets
    /// the preroll GAP: its clock runs from PLAYING on and the reported latency covers the
    /// first window. A non-live pipeline has no latency to cover it, so its sinks preroll
    /// on the first audio, as before (the clock must not start before it).
    fn upstream_is_live(&self) -> bool {
        let mut q = gst::query::Latency::new();
        self.sinkpad.peer_query(&mut q) && q.result().0
    }

    pub(super) fn sink_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        gst::log!(CAT, obj = pad, "Handling query {query:?}");
        match query.view_mut() {
            gst::QueryViewMut::Allocation(q) => {
                // Frames are read through VideoFrameRef, which honours any stride.
                q.add_allocation_meta::<gst_video::VideoMeta>(None);
                true
            }
            // Frames are copied: no upstream buffer is held.
            gst::QueryViewMut::Drain(_) => true,
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    pub(super) fn enqueue_planned(
        &self,
        planned: Vec<Planned>,
        cfg: EngineConfig,
    ) -> Result<(), gst::FlowError> {
        for item in planned {
            let job = match item {
                Planned::Window { request, span } => Job::Window { request, span, cfg },
                Planned::End { total } => Job::End { total },
            };
            self.enqueue(job)?;
        }
        Ok(())
    }

    /// Queue a job for the worker; a window waits while `max-in-flight` windows are
    /// queued or being generated (backpressure).
    pub(super) fn enqueue(&self, job: Job) -> Result<(), gst::FlowError> {
        let is_window = matches!(job, Job::Window { .. });
        let mut shared = lock(&self.shared);
        loop {
            if shared.flushing {
                return Err(gst::FlowError::Flushing);
            }
            match shared.flow {
                Err(err) if err != gst::FlowError::Eos => return Err(err),
                _ => {}
            }
            if shared.finished {
                // stop-after-window: nothing more of this stream goes downstream (events
                // are accepted and dropped, data is refused).
                return match job {
                    Job::Event(_) => Ok(()),
                    _ => Err(gst::FlowError::Eos),
                };
            }
            if !is_window || shared.windows < shared.max_in_flight {
                break;
            }
            gst::trace!(
                CAT,
                imp = self,
                "{} windows in flight, waiting",
                shared.windows
            );
            shared = self
                .cond
                .wait(shared)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if is_window {
            shared.windows += 1;
        }
        shared.jobs.push_back(job);
        self.cond.notify_all();
        Ok(())
    }

    pub(super) fn current_flow(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let shared = lock(&self.shared);
        if shared.flushing {
            Err(gst::FlowError::Flushing)
        } else {
            shared.flow
        }
    }

    /// Wait until the model is loaded (interrupted by flushing): the loaded generator and
    /// what the element needs to know about it.
    pub(super) fn wait_for_model(
        &self,
    ) -> Result<(SharedGenerator, GeneratorInfo), gst::FlowError> {
        let mut shared = lock(&self.shared);
        loop {
            if shared.flushing {
                return Err(gst::FlowError::Flushing);
            }
            match &shared.model {
                Model::Ready {
                    generator, traits, ..
                } => return Ok((generator.clone(), *traits)),
                // The loader posted the ERROR.
                Model::Failed => return Err(gst::FlowError::Error),
                Model::None => {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::StateChange,
                        ("No model is being loaded")
                    );
                    return Err(gst::FlowError::Error);
                }
                Model::Loading(_) => {}
            }
            gst::debug!(CAT, imp = self, "Waiting for the model to load");
            shared = self
                .cond
                .wait(shared)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    pub(super) fn set_flushing(&self) {
        let mut shared = lock(&self.shared);
        shared.flushing = true;
        shared.flow = Err(gst::FlowError::Flushing);
        self.cancel.cancel();
        self.cond.notify_all();
    }

    pub(super) fn unset_flushing(&self) {
        let mut shared = lock(&self.shared);
        shared.jobs.clear();
        shared.out.clear();
        shared.windows = 0;
        shared.current = None;
        shared.finished = false;
        shared.flushing = false;
        shared.flow = Ok(gst::FlowSuccess::Ok);
        self.cancel.reset();
        self.cond.notify_all();
    }

    /// Forget the current stream (the worker is paused).
    pub(super) fn reset_stream(&self) {
        {
            let mut state = lock(&self.state);
            if let Some(p) = state.planner.as_mut() {
                p.reset();
            }
            state.segment = None;
            state.next_pts = None;
            state.stream_open = false;
            state.reverse = false;
        }
        {
            let mut output = lock(&self.output);
            if let Some(a) = output.assembler.as_mut() {
                a.reset();
            }
            output.discont = true;
            // `late_warned` stays: the WARNING said further late windows are only logged
            output.held = None;
            output.hole_from = None;
        }
        let mut shared = lock(&self.shared);
        shared.jobs.clear();
        shared.out.clear();
        shared.windows = 0;
    }
}
