//! # mmaudiogen
//!
//! Generates a synchronized soundtrack (Foley) for a video stream with MMAudio: raw RGB
//! video in, mono 32-bit float audio out at the model's rate (16 000 Hz for `small-16k`,
//! 44 100 Hz for the other variants).
//!
//! The video is cut into windows of `window-duration` that start every
//! `window-duration − overlap`; each window's frames (and the `prompt`) are turned into
//! audio by the generator on a worker thread (the source pad's task), and consecutive
//! windows are crossfaded with a constant-power curve over the overlap. The output is
//! sample-exact: its sample count is `round(video duration × rate)` where the video lasts
//! from the first frame's pts to the end of the last frame, the first sample carries the
//! first frame's pts, and every timestamp is derived from the sample count, so nothing
//! drifts. At EOS the last, shorter window is generated at its true duration. All of the
//! bookkeeping is `mmaudio::window` (pure, unit-tested); this file is the GStreamer side.
//!
//! ## Threads and bounds
//!
//! The streaming thread copies each frame (packed RGB, stride removed), plans windows and
//! queues them; at most `max-in-flight` windows are queued or being generated, beyond
//! that the streaming thread blocks (backpressure), so memory is bounded for any length:
//! one window of frames plus `max-in-flight` windows of requests. With the MMAudio
//! generator each frame is resized on arrival, on the streaming thread, to the two sizes the
//! model sees (384×384 for CLIP, 224×224 for Synchformer; ≈ 11 ms for a 1080p frame), so a
//! window holds ≈ 0.6 MB per frame whatever the input size, and this work overlaps the
//! generation of the previous window on the worker thread. (Generators that do not ask for
//! prepared frames get the packed RGB frame as it arrived.)
//!
//! Flow errors of the source pad are returned upstream from the next `chain`. FLUSH_START
//! cancels the generator between sampler steps and returns at once; FLUSH_STOP resets
//! everything and the next output buffer is flagged DISCONT. A new SEGMENT that differs
//! from the current one (other than in position) drains the current stream first; EOS
//! drains the partial window before EOS is forwarded. A GAP before the first frame is forwarded; later GAPs
//! are covered by the frame before them (it holds until the next frame), and a trailing
//! GAP does not lengthen the output. Caps may change size mid-stream; frames of any size
//! go to the generator as they are.
//!
//! The model is loaded on a separate thread started at READY→PAUSED (PROGRESS messages
//! `start`/`complete`/`error`, code `load`); the first buffer waits for it. A failure
//! posts an ERROR naming the file and the reason, and the streaming thread returns a flow
//! error. A loaded model is kept across PAUSED→READY→PAUSED when `model-dir`, `variant`,
//! `device` and `precision` are unchanged, and released at READY→NULL.
//!
//! ## Latency
//!
//! A window can only be generated once the video has reached its end (a frame at or past
//! the window end arrived), so the first sample of a window is output one window (plus
//! one frame) after its own time, plus the time the generation takes. The element reports
//!
//! ```text
//! min = upstream min + window-duration + frame duration (from the caps, 0 if variable)
//!       + processing-latency
//! max = upstream max + the same + max-in-flight × (window-duration − overlap)
//! ```
//!
//! and posts a LATENCY message when one of these terms changes. A window that takes longer
//! than `processing-latency` to generate posts a WARNING (every time in a live pipeline,
//! once per stream otherwise, since it then only delays the output).
//!
//! Changes of `prompt`, `negative-prompt`, `num-steps`, `cfg-strength`, `seed`,
//! `mask-away-clip` and `text-only` while PLAYING apply from the next window planned.
//!
//! ## Messages
//!
//! After each window is generated (before its audio is crossfaded and pushed) the element
//! posts an ELEMENT message whose structure is named `mmaudiogen-window`, for progress
//! reporting (`mmaudio generate` drives its progress bar from it; `gst-launch-1.0 -m`
//! prints it):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `index` | u64 | window number in the stream (0, 1, ...) |
//! | `start` | GstClockTime | pts of the window's first output sample |
//! | `duration` | GstClockTime | duration of the window's output (before crossfading; the last window is shorter) |
//! | `samples` | u64 | that duration in samples at the output rate |
//! | `frames` | u32 | video frames the window was given (0 in `text-only` mode) |
//! | `processing-time` | GstClockTime | wall time the generator took for the window |
//! | `last` | bool | the stream's last window (planned at EOS or a drain) |
//!
//! The model load is reported with PROGRESS messages (see above).
//!
//! ## Example
//!
//! ```text
//! gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! \
//!     mmaudiogen model-dir=/models/mmaudio variant=small-16k prompt="footsteps on gravel" ! \
//!     audioconvert ! wavenc ! filesink location=foley.wav
//! ```

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::prelude::*;

use mmaudio::generator::{AudioGenerator, Cancel, GenerationParams, LoadOptions, WindowRequest};
use mmaudio::window::{
    Assembler, Chunk, Planned, TimedFrame, WindowConfig, WindowPlanner, WindowSpan, samples_to_ns,
};

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{GeneratorFactory, ModelPrecision, ModelVariant};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "mmaudiogen",
        gst::DebugColorFlags::empty(),
        Some("MMAudio video-to-audio generator"),
    )
});

const DEFAULT_DEVICE: &str = "auto";
const DEFAULT_NUM_STEPS: u32 = 25;
const DEFAULT_CFG_STRENGTH: f64 = 4.5;
const DEFAULT_SEED: u64 = 42;
const DEFAULT_WINDOW_MS: u32 = 8000;
const DEFAULT_OVERLAP_MS: u32 = 1000;
const DEFAULT_MAX_IN_FLIGHT: u32 = 2;
const DEFAULT_PROCESSING_LATENCY_MS: u32 = 2000;

/// The properties.
#[derive(Debug, Clone)]
struct Settings {
    model_dir: Option<String>,
    variant: ModelVariant,
    device: String,
    precision: ModelPrecision,
    prompt: String,
    negative_prompt: String,
    num_steps: u32,
    cfg_strength: f64,
    seed: u64,
    mask_away_clip: bool,
    text_only: bool,
    window_ms: u32,
    overlap_ms: u32,
    max_in_flight: u32,
    processing_latency_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model_dir: None,
            variant: ModelVariant::default(),
            device: DEFAULT_DEVICE.into(),
            precision: ModelPrecision::default(),
            prompt: String::new(),
            negative_prompt: String::new(),
            num_steps: DEFAULT_NUM_STEPS,
            cfg_strength: DEFAULT_CFG_STRENGTH,
            seed: DEFAULT_SEED,
            mask_away_clip: false,
            text_only: false,
            window_ms: DEFAULT_WINDOW_MS,
            overlap_ms: DEFAULT_OVERLAP_MS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            processing_latency_ms: DEFAULT_PROCESSING_LATENCY_MS,
        }
    }
}

impl Settings {
    fn params(&self) -> GenerationParams {
        GenerationParams {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            num_steps: self.num_steps as usize,
            cfg_strength: self.cfg_strength,
            seed: self.seed,
            mask_away_clip: self.mask_away_clip,
        }
    }

    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            model_dir: PathBuf::from(self.model_dir.clone().unwrap_or_default()),
            variant: self.variant.into(),
            device: self.device.clone(),
            precision: self.precision.as_str().into(),
        }
    }

    fn window(&self) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(self.window_ms as u64)
    }

    fn hop(&self) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(self.window_ms.saturating_sub(self.overlap_ms) as u64)
    }

    fn processing_latency(&self) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(self.processing_latency_ms as u64)
    }
}

/// Streaming-thread state (sink side), reset on flush and stop.
#[derive(Debug, Default)]
struct State {
    video_info: Option<gst_video::VideoInfo>,
    /// Frame duration from the caps' frame rate (None for variable rate).
    frame_duration: Option<gst::ClockTime>,
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    planner: Option<WindowPlanner>,
    window_cfg: Option<WindowConfig>,
    /// Pts to give a buffer without one (previous pts + duration).
    next_pts: Option<gst::ClockTime>,
}

/// Identity of a loaded model: the load options and which factory made it.
#[derive(Debug, Clone, PartialEq)]
struct ModelKey {
    options: LoadOptions,
    factory_id: u64,
}

type SharedGenerator = Arc<Mutex<Box<dyn AudioGenerator>>>;

enum Model {
    None,
    Loading(ModelKey),
    Ready {
        key: ModelKey,
        generator: SharedGenerator,
        rate: u32,
        /// The generator wants frames prepared on arrival (`prepare_frame`).
        prepared: bool,
    },
    /// Loading failed (the ERROR is posted); retried at the next READY→PAUSED.
    Failed,
}

/// What the streaming thread hands to the worker, in stream order.
enum Job {
    /// A serialized event, forwarded after the audio queued before it.
    Event(gst::Event),
    Window {
        request: WindowRequest,
        span: WindowSpan,
        cfg: WindowConfig,
    },
    /// End of a stream (EOS or drain): flush the last samples.
    End { total: u64 },
}

/// Shared between the streaming thread, the worker and the loader (with `cond`).
struct Shared {
    jobs: VecDeque<Job>,
    /// Windows queued or being generated.
    windows: usize,
    max_in_flight: usize,
    flushing: bool,
    /// Last flow result of the source pad, returned upstream.
    flow: Result<gst::FlowSuccess, gst::FlowError>,
    model: Model,
    load_id: u64,
    upstream_live: bool,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            jobs: VecDeque::new(),
            windows: 0,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT as usize,
            flushing: true,
            flow: Err(gst::FlowError::Flushing),
            model: Model::None,
            load_id: 0,
            upstream_live: false,
        }
    }
}

/// Worker-side state (source side).
#[derive(Debug)]
struct Output {
    assembler: Option<Assembler>,
    /// Rate of the caps pushed downstream.
    rate: Option<u32>,
    discont: bool,
    late_warned: bool,
}

impl Default for Output {
    fn default() -> Self {
        Self {
            assembler: None,
            rate: None,
            discont: true,
            late_warned: false,
        }
    }
}

/// A model loading failure: the message names the file and the reason.
struct LoadError {
    domain: gst::ResourceError,
    message: String,
}

impl From<mmaudio::Error> for LoadError {
    fn from(err: mmaudio::Error) -> Self {
        use mmaudio::Error as E;
        let domain = match &err {
            E::MissingFile { .. } => gst::ResourceError::NotFound,
            E::WeightFile { .. }
            | E::MissingTensor { .. }
            | E::ShapeMismatch { .. }
            | E::WrongModel { .. }
            | E::Io(_) => gst::ResourceError::Read,
            E::Config(_) => gst::ResourceError::Settings,
            _ => gst::ResourceError::Failed,
        };
        LoadError {
            domain,
            message: format!("Could not load the MMAudio model: {err}"),
        }
    }
}

/// The default way to get a generator: check `model-dir`, then the core library's loader.
/// With an injected factory, the factory alone decides.
fn load_generator(
    options: &LoadOptions,
    factory: Option<&GeneratorFactory>,
) -> Result<Box<dyn AudioGenerator>, LoadError> {
    if let Some(factory) = factory {
        return factory(options).map_err(LoadError::from);
    }
    let dir = &options.model_dir;
    if dir.as_os_str().is_empty() {
        return Err(LoadError {
            domain: gst::ResourceError::Settings,
            message: "No model directory: set the model-dir property to the folder holding \
                      the MMAudio weight files"
                .into(),
        });
    }
    match std::fs::metadata(dir) {
        Err(err) => {
            return Err(LoadError {
                domain: gst::ResourceError::NotFound,
                message: format!(
                    "Model directory {} does not exist or cannot be read: {err}",
                    dir.display()
                ),
            });
        }
        Ok(meta) if !meta.is_dir() => {
            return Err(LoadError {
                domain: gst::ResourceError::NotFound,
                message: format!("Model directory {} is not a directory", dir.display()),
            });
        }
        Ok(_) => {}
    }
    mmaudio::generator::load_generator(options).map_err(LoadError::from)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct MMAudioGen {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    shared: Mutex<Shared>,
    cond: Condvar,
    output: Mutex<Output>,
    cancel: Cancel,
    factory: Mutex<(Option<Arc<GeneratorFactory>>, u64)>,
    /// Own minimum latency last reported in a LATENCY query.
    reported_latency: Mutex<Option<gst::ClockTime>>,
}

impl MMAudioGen {
    pub(super) fn set_factory(&self, factory: Option<Arc<GeneratorFactory>>) {
        let mut f = lock(&self.factory);
        f.0 = factory;
        f.1 += 1;
    }

    // ----- streaming thread (sink pad) -----

    fn sink_chain(
        &self,
        pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        gst::log!(CAT, obj = pad, "Handling buffer {buffer:?}");
        self.current_flow()?;
        let (_, rate, prepare) = self.wait_for_model()?;
        let settings = lock(&self.settings).clone();

        let mut state = lock(&self.state);
        let Some(info) = state.video_info.clone() else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ["Received a buffer before caps"]
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        let Some(pts) = buffer.pts().or(state.next_pts) else {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                ["Received a video buffer without timestamp"]
            );
            return Err(gst::FlowError::Error);
        };
        let duration = buffer.duration().or(state.frame_duration);
        state.next_pts = duration.map(|d| pts + d);
        let frame = self.copy_frame(&buffer, &info, pts, duration, prepare)?;

        if state.planner.is_none() {
            let cfg = WindowConfig::from_millis(
                rate,
                settings.window_ms as u64,
                settings.overlap_ms as u64,
            )
            .map_err(|err| {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Settings,
                    ["Invalid window settings: {err}"]
                );
                gst::FlowError::Error
            })?;
            gst::debug!(
                CAT,
                imp = self,
                "Windows of {} samples every {} samples at {rate} Hz",
                cfg.window_samples(),
                cfg.hop_samples()
            );
            state.planner = Some(WindowPlanner::new(cfg));
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
        if planner.dropped_frames() > dropped {
            gst::warning!(
                CAT,
                imp = self,
                "Dropped frame with pts {pts}: not after the previous frame"
            );
        }
        drop(state);

        self.enqueue_planned(planned, cfg)?;
        self.current_flow()
    }

    /// Copy the RGB rows of a frame without the stride padding.
    fn copy_frame(
        &self,
        buffer: &gst::Buffer,
        info: &gst_video::VideoInfo,
        pts: gst::ClockTime,
        duration: Option<gst::ClockTime>,
        prepare: bool,
    ) -> Result<TimedFrame, gst::FlowError> {
        let map_error = |what: &str| {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                [
                    "Cannot read a {}x{} RGB frame from a buffer of {} bytes: {what}",
                    info.width(),
                    info.height(),
                    buffer.size()
                ]
            );
            gst::FlowError::Error
        };
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), info)
            .map_err(|_| map_error("mapping failed"))?;
        let (width, height) = (frame.width() as usize, frame.height() as usize);
        let row = width * 3;
        let stride = usize::try_from(frame.plane_stride()[0]).unwrap_or(0);
        let src = frame
            .plane_data(0)
            .map_err(|_| map_error("no plane data"))?;
        if stride < row || src.len() < stride * (height - 1) + row {
            return Err(map_error("stride or size too small"));
        }
        let mut data = Vec::with_capacity(row * height);
        for y in 0..height {
            data.extend_from_slice(&src[y * stride..y * stride + row]);
        }
        // The MMAudio generator only needs the frame at its two model sizes: resize it now
        // (once per frame, on the streaming thread, overlapping the worker's generation of
        // the previous window) and keep ~0.6 MB instead of the full frame.
        let (data, prepared) = if prepare {
            let p = mmaudio::features::preprocess::prepare_frame(width, height, &data).map_err(
                |err| {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Format,
                        ["Cannot prepare a {width}x{height} frame: {err}"]
                    );
                    gst::FlowError::Error
                },
            )?;
            (Vec::new(), Some(Arc::new(p)))
        } else {
            (data, None)
        };
        Ok(TimedFrame {
            pts: pts.nseconds(),
            duration: duration.map(|d| d.nseconds()),
            width,
            height,
            data: Arc::new(data),
            prepared,
        })
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
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
                        ["Invalid video caps {}: {err}", c.caps()]
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
                            [
                                "Only TIME segments are supported, got a {:?} segment",
                                segment.format()
                            ]
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
                let cfg = state.window_cfg;
                state.segment = Some(segment);
                drop(state);
                if let Some(cfg) = cfg
                    && self.enqueue_planned(planned, cfg).is_err()
                {
                    return false;
                }
                self.enqueue(Job::Event(event)).is_ok()
            }
            EventView::Eos(_) => {
                let mut state = lock(&self.state);
                let planned = state
                    .planner
                    .as_mut()
                    .map(|p| p.finish())
                    .unwrap_or_default();
                let cfg = state.window_cfg;
                drop(state);
                gst::debug!(CAT, imp = self, "EOS: draining {} items", planned.len());
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

    fn sink_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
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

    fn enqueue_planned(
        &self,
        planned: Vec<Planned>,
        cfg: WindowConfig,
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
    fn enqueue(&self, job: Job) -> Result<(), gst::FlowError> {
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

    fn current_flow(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let shared = lock(&self.shared);
        if shared.flushing {
            Err(gst::FlowError::Flushing)
        } else {
            shared.flow
        }
    }

    /// Wait until the model is loaded (interrupted by flushing).
    /// The loaded generator, its sample rate and whether it wants frames prepared on arrival.
    fn wait_for_model(&self) -> Result<(SharedGenerator, u32, bool), gst::FlowError> {
        let mut shared = lock(&self.shared);
        loop {
            if shared.flushing {
                return Err(gst::FlowError::Flushing);
            }
            match &shared.model {
                Model::Ready {
                    generator,
                    rate,
                    prepared,
                    ..
                } => return Ok((generator.clone(), *rate, *prepared)),
                // The loader posted the ERROR.
                Model::Failed => return Err(gst::FlowError::Error),
                Model::None => {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::StateChange,
                        ["No model is being loaded"]
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

    fn set_flushing(&self) {
        let mut shared = lock(&self.shared);
        shared.flushing = true;
        shared.flow = Err(gst::FlowError::Flushing);
        self.cancel.cancel();
        self.cond.notify_all();
    }

    fn unset_flushing(&self) {
        let mut shared = lock(&self.shared);
        shared.jobs.clear();
        shared.windows = 0;
        shared.flushing = false;
        shared.flow = Ok(gst::FlowSuccess::Ok);
        self.cancel.reset();
        self.cond.notify_all();
    }

    /// Forget the current stream (the worker is paused).
    fn reset_stream(&self) {
        {
            let mut state = lock(&self.state);
            if let Some(p) = state.planner.as_mut() {
                p.reset();
            }
            state.segment = None;
            state.next_pts = None;
        }
        {
            let mut output = lock(&self.output);
            if let Some(a) = output.assembler.as_mut() {
                a.reset();
            }
            output.discont = true;
            output.late_warned = false;
        }
        let mut shared = lock(&self.shared);
        shared.jobs.clear();
        shared.windows = 0;
    }

    // ----- worker (source pad task) -----

    fn start_task(&self) -> Result<(), glib::BoolError> {
        let weak = self.downgrade();
        self.srcpad.start_task(move || {
            if let Some(imp) = weak.upgrade() {
                imp.src_loop();
            }
        })
    }

    fn src_loop(&self) {
        let job = {
            let mut shared = lock(&self.shared);
            loop {
                if shared.flushing {
                    drop(shared);
                    let _ = self.srcpad.pause_task();
                    return;
                }
                if let Some(job) = shared.jobs.pop_front() {
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

    fn process(&self, job: Job) -> Result<gst::FlowSuccess, gst::FlowError> {
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
            Job::End { total } => {
                let rate = self.ensure_caps()?;
                let res = {
                    let mut output = lock(&self.output);
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
                            ["Window bookkeeping failed: {err}"]
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
    fn ensure_caps(&self) -> Result<u32, gst::FlowError> {
        if let Some(rate) = lock(&self.output).rate {
            return Ok(rate);
        }
        let (_, rate, _) = self.wait_for_model()?;
        let caps = gst_audio::AudioCapsBuilder::new_interleaved()
            .format(gst_audio::AUDIO_FORMAT_F32)
            .rate(rate as i32)
            .channels(1)
            .build();
        gst::debug!(CAT, imp = self, "Output caps {caps}");
        if !self.srcpad.push_event(gst::event::Caps::new(&caps)) {
            if self.srcpad.pad_flags().contains(gst::PadFlags::FLUSHING) {
                return Err(gst::FlowError::Flushing);
            }
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ["Downstream does not accept {caps}"]
            );
            return Err(gst::FlowError::NotNegotiated);
        }
        lock(&self.output).rate = Some(rate);
        Ok(rate)
    }

    // `mmaudio::Error` is large (it carries paths and shapes); it is the generator's type.
    #[allow(clippy::result_large_err)]
    fn generate_window(
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
        let res = panic::catch_unwind(AssertUnwindSafe(|| {
            lock(&generator).generate(&request, &self.cancel)
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
                    ["Generating window {} failed: {err}", request.index]
                );
                return Err(gst::FlowError::Error);
            }
            Err(panic) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    [
                        "The generator panicked on window {}: {}",
                        request.index,
                        panic_message(panic.as_ref())
                    ]
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
            output
                .assembler
                .as_mut()
                .expect("set above")
                .push(&span, audio)
        };
        match res {
            Ok(chunk) => self.push_chunk(chunk, rate),
            Err(err) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ["Window {}: {err}", request.index]
                );
                Err(gst::FlowError::Error)
            }
        }
    }

    /// The `mmaudiogen-window` element message (see the module documentation).
    fn post_window_message(
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

    fn check_budget(&self, index: u64, elapsed: Duration) {
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
                        " (further late windows are only logged)"
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

    fn push_chunk(&self, chunk: Chunk, rate: u32) -> Result<gst::FlowSuccess, gst::FlowError> {
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
        self.srcpad.push(buffer)
    }

    // ----- source pad -----

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        gst::log!(CAT, obj = pad, "Handling query {query:?}");
        match query.view_mut() {
            gst::QueryViewMut::Latency(q) => {
                let mut upstream = gst::query::Latency::new();
                if !self.sinkpad.peer_query(&mut upstream) {
                    return false;
                }
                let (live, min, max) = upstream.result();
                let (own_min, own_max) = self.own_latency();
                lock(&self.shared).upstream_live = live;
                *lock(&self.reported_latency) = Some(own_min);
                gst::debug!(
                    CAT,
                    imp = self,
                    "Latency: upstream {min}/{max:?}, own {own_min}/{own_max}, live {live}"
                );
                q.set(live, min + own_min, max.map(|m| m + own_max));
                true
            }
            gst::QueryViewMut::Caps(q) => {
                let caps = match lock(&self.output).rate {
                    Some(rate) => gst_audio::AudioCapsBuilder::new_interleaved()
                        .format(gst_audio::AUDIO_FORMAT_F32)
                        .rate(rate as i32)
                        .channels(1)
                        .build(),
                    None => pad.pad_template_caps(),
                };
                let caps = match q.filter() {
                    Some(filter) => {
                        filter.intersect_with_mode(&caps, gst::CapsIntersectMode::First)
                    }
                    None => caps,
                };
                q.set_result(&caps);
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    /// (min, max) latency this element adds.
    fn own_latency(&self) -> (gst::ClockTime, gst::ClockTime) {
        let settings = lock(&self.settings).clone();
        let frame = lock(&self.state)
            .frame_duration
            .unwrap_or(gst::ClockTime::ZERO);
        let min = settings.window() + frame + settings.processing_latency();
        let max = min + settings.hop() * settings.max_in_flight as u64;
        (min, max)
    }

    fn post_latency_if_changed(&self) {
        let (own_min, _) = self.own_latency();
        let reported = *lock(&self.reported_latency);
        if reported.is_some_and(|r| r != own_min) {
            gst::debug!(CAT, imp = self, "Latency changed to {own_min}");
            let _ = self
                .obj()
                .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
        }
    }

    fn src_activatemode(&self, mode: gst::PadMode, active: bool) -> Result<(), gst::LoggableError> {
        if mode != gst::PadMode::Push {
            return Err(gst::loggable_error!(CAT, "Only push mode is supported"));
        }
        if active {
            self.unset_flushing();
            self.start_task()
                .map_err(|err| gst::loggable_error!(CAT, "Failed to start task: {err}"))
        } else {
            self.set_flushing();
            self.srcpad
                .stop_task()
                .map_err(|err| gst::loggable_error!(CAT, "Failed to stop task: {err}"))
        }
    }

    // ----- model loading -----

    /// Start loading the model on its own thread unless the right one is loaded or
    /// loading.
    fn start_loading(&self) {
        let options = lock(&self.settings).load_options();
        let (factory, factory_id) = {
            let f = lock(&self.factory);
            (f.0.clone(), f.1)
        };
        let key = ModelKey {
            options: options.clone(),
            factory_id,
        };
        let id = {
            let mut shared = lock(&self.shared);
            match &shared.model {
                Model::Ready { key: k, .. } | Model::Loading(k) if *k == key => {
                    gst::debug!(CAT, imp = self, "Model already loaded or loading");
                    return;
                }
                _ => {}
            }
            shared.load_id += 1;
            shared.model = Model::Loading(key.clone());
            shared.load_id
        };
        let what = format!(
            "MMAudio {} from {}",
            options.variant,
            options.model_dir.display()
        );
        gst::info!(CAT, imp = self, "Loading {what}");
        let _ = self.obj().post_message(
            gst::message::Progress::builder(
                gst::ProgressType::Start,
                "load",
                &format!("Loading {what}"),
            )
            .src(&*self.obj())
            .build(),
        );
        let weak = self.obj().downgrade();
        let spawned = std::thread::Builder::new()
            .name("mmaudiogen-load".into())
            .spawn(move || {
                let started = Instant::now();
                let result = panic::catch_unwind(AssertUnwindSafe(|| {
                    load_generator(&options, factory.as_deref())
                }))
                .unwrap_or_else(|panic| {
                    Err(LoadError {
                        domain: gst::ResourceError::Failed,
                        message: format!(
                            "Loading the MMAudio model panicked: {}",
                            panic_message(panic.as_ref())
                        ),
                    })
                });
                if let Some(obj) = weak.upgrade() {
                    obj.imp()
                        .finish_loading(id, key, result, what, started.elapsed());
                }
            });
        if let Err(err) = spawned {
            let key = ModelKey {
                options: lock(&self.settings).load_options(),
                factory_id,
            };
            let error = LoadError {
                domain: gst::ResourceError::Failed,
                message: format!("Cannot start the model loading thread: {err}"),
            };
            self.finish_loading(id, key, Err(error), String::new(), Duration::ZERO);
        }
    }

    fn finish_loading(
        &self,
        id: u64,
        key: ModelKey,
        result: Result<Box<dyn AudioGenerator>, LoadError>,
        what: String,
        elapsed: Duration,
    ) {
        let mut shared = lock(&self.shared);
        if shared.load_id != id {
            gst::debug!(CAT, imp = self, "Dropping a stale model load");
            return;
        }
        match result {
            Ok(generator) => {
                let rate = generator.sample_rate();
                let prepared = generator.wants_prepared_frames();
                shared.model = Model::Ready {
                    key,
                    generator: Arc::new(Mutex::new(generator)),
                    rate,
                    prepared,
                };
                self.cond.notify_all();
                drop(shared);
                gst::info!(CAT, imp = self, "Loaded {what} in {elapsed:?} ({rate} Hz)");
                let _ = self.obj().post_message(
                    gst::message::Progress::builder(
                        gst::ProgressType::Complete,
                        "load",
                        &format!("Loaded {what} in {:.1} s", elapsed.as_secs_f64()),
                    )
                    .src(&*self.obj())
                    .build(),
                );
            }
            Err(err) => {
                let options = key.options;
                shared.model = Model::Failed;
                if !shared.flushing {
                    shared.flow = Err(gst::FlowError::Error);
                }
                self.cond.notify_all();
                drop(shared);
                let _ = self.obj().post_message(
                    gst::message::Progress::builder(gst::ProgressType::Error, "load", &err.message)
                        .src(&*self.obj())
                        .build(),
                );
                gst::element_imp_error!(
                    self,
                    err.domain,
                    ("{}", err.message),
                    [
                        "model-dir={}, variant={}, device={}, precision={}",
                        options.model_dir.display(),
                        options.variant,
                        options.device,
                        options.precision
                    ]
                );
            }
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for MMAudioGen {
    const NAME: &'static str = "GstMMAudioGen";
    type Type = super::MMAudioGen;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let sinkpad = gst::Pad::builder_from_template(&klass.pad_template("sink").unwrap())
            .chain_function(|pad, parent, buffer| {
                MMAudioGen::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                MMAudioGen::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .query_function(|pad, parent, query| {
                MMAudioGen::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_query(pad, query),
                )
            })
            .activatemode_function(|_pad, parent, _mode, active| {
                MMAudioGen::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "Panic activating sink pad")),
                    |imp| {
                        if !active {
                            // Wake a chain blocked on backpressure or on the model.
                            imp.set_flushing();
                        }
                        Ok(())
                    },
                )
            })
            .build();

        let srcpad = gst::Pad::builder_from_template(&klass.pad_template("src").unwrap())
            .query_function(|pad, parent, query| {
                MMAudioGen::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_query(pad, query),
                )
            })
            .activatemode_function(|_pad, parent, mode, active| {
                MMAudioGen::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "Panic activating src pad")),
                    |imp| imp.src_activatemode(mode, active),
                )
            })
            .flags(gst::PadFlags::FIXED_CAPS)
            .build();

        Self {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::default()),
            shared: Mutex::new(Shared::default()),
            cond: Condvar::new(),
            output: Mutex::new(Output::default()),
            cancel: Cancel::new(),
            factory: Mutex::new((None, 0)),
            reported_latency: Mutex::new(None),
        }
    }
}

impl ObjectImpl for MMAudioGen {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let d = Settings::default();
            vec![
                glib::ParamSpecString::builder("model-dir")
                    .nick("Model directory")
                    .blurb(
                        "Folder with the MMAudio weight files (flow network, VAE, vocoder, \
                         CLIP, Synchformer). Loaded at READY→PAUSED",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("variant", d.variant)
                    .nick("Variant")
                    .blurb("MMAudio checkpoint: small-16k outputs 16000 Hz, the others 44100 Hz")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("device")
                    .nick("Device")
                    .blurb(
                        "Compute device: auto (CUDA device 0 if this build and the machine \
                         have one, else the CPU), cpu, or cuda:N",
                    )
                    .default_value(Some(DEFAULT_DEVICE))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("precision", d.precision)
                    .nick("Precision")
                    .blurb("Compute precision of the networks (auto: bf16 on CUDA, f32 on CPU)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("prompt")
                    .nick("Prompt")
                    .blurb(
                        "Text describing the wanted sound; a change takes effect from the \
                         next window",
                    )
                    .default_value(Some(""))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("negative-prompt")
                    .nick("Negative prompt")
                    .blurb(
                        "Text describing sounds to avoid; a change takes effect from the next \
                         window",
                    )
                    .default_value(Some(""))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("num-steps")
                    .nick("Sampling steps")
                    .blurb(
                        "Flow-matching (Euler) steps per window: fewer is faster and coarser. \
                         Takes effect from the next window",
                    )
                    .minimum(1)
                    .maximum(1000)
                    .default_value(d.num_steps)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("cfg-strength")
                    .nick("Guidance strength")
                    .blurb(
                        "Classifier-free guidance strength (1.0 disables guidance). Takes \
                         effect from the next window",
                    )
                    .minimum(0.0)
                    .maximum(100.0)
                    .default_value(d.cfg_strength)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("seed")
                    .nick("Seed")
                    .blurb(
                        "Random seed; window k uses seed + k, so a stream is reproducible. \
                         Takes effect from the next window",
                    )
                    .default_value(d.seed)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("mask-away-clip")
                    .nick("Mask away CLIP")
                    .blurb(
                        "Ignore the semantic (CLIP) video features, keep only the \
                         synchronisation features; rely on the prompt for the content. Takes \
                         effect from the next window",
                    )
                    .default_value(d.mask_away_clip)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("text-only")
                    .nick("Text only")
                    .blurb(
                        "Ignore the video content: the frames only set the timing and the \
                         audio is generated from the prompt alone (text-to-audio). Takes \
                         effect from the next window",
                    )
                    .default_value(d.text_only)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("window-duration")
                    .nick("Window duration")
                    .blurb(
                        "Length of one generation window in milliseconds (MMAudio is trained \
                         on 8000; at least 640). Counts towards latency",
                    )
                    .minimum(640)
                    .maximum(60_000)
                    .default_value(d.window_ms)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("overlap")
                    .nick("Overlap")
                    .blurb(
                        "Crossfade between consecutive windows in milliseconds, at most half \
                         the window-duration; windows start every window-duration - overlap",
                    )
                    .maximum(30_000)
                    .default_value(d.overlap_ms)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-in-flight")
                    .nick("Maximum windows in flight")
                    .blurb(
                        "Maximum number of windows queued or being generated; beyond it the \
                         streaming thread blocks (backpressure). Bounds memory",
                    )
                    .minimum(1)
                    .maximum(64)
                    .default_value(d.max_in_flight)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("processing-latency")
                    .nick("Processing latency")
                    .blurb(
                        "Time budget in milliseconds to generate one window, added to the \
                         reported latency; a window taking longer posts a warning",
                    )
                    .maximum(3_600_000)
                    .default_value(d.processing_latency_ms)
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = lock(&self.settings);
        let mut latency_changed = false;
        match pspec.name() {
            "model-dir" => {
                settings.model_dir = value.get::<Option<String>>().expect("type checked");
            }
            "variant" => settings.variant = value.get().expect("type checked"),
            "device" => {
                settings.device = value
                    .get::<Option<String>>()
                    .expect("type checked")
                    .unwrap_or_else(|| DEFAULT_DEVICE.into());
            }
            "precision" => settings.precision = value.get().expect("type checked"),
            "prompt" => {
                settings.prompt = value
                    .get::<Option<String>>()
                    .expect("type checked")
                    .unwrap_or_default();
                gst::info!(CAT, imp = self, "Prompt set to {:?}", settings.prompt);
            }
            "negative-prompt" => {
                settings.negative_prompt = value
                    .get::<Option<String>>()
                    .expect("type checked")
                    .unwrap_or_default();
            }
            "num-steps" => settings.num_steps = value.get().expect("type checked"),
            "cfg-strength" => settings.cfg_strength = value.get().expect("type checked"),
            "seed" => settings.seed = value.get().expect("type checked"),
            "mask-away-clip" => settings.mask_away_clip = value.get().expect("type checked"),
            "text-only" => settings.text_only = value.get().expect("type checked"),
            "window-duration" => {
                settings.window_ms = value.get().expect("type checked");
                latency_changed = true;
            }
            "overlap" => {
                settings.overlap_ms = value.get().expect("type checked");
                latency_changed = true;
            }
            "max-in-flight" => {
                settings.max_in_flight = value.get().expect("type checked");
                let max = settings.max_in_flight as usize;
                drop(settings);
                lock(&self.shared).max_in_flight = max;
                self.cond.notify_all();
                self.post_latency_if_changed();
                return;
            }
            "processing-latency" => {
                settings.processing_latency_ms = value.get().expect("type checked");
                latency_changed = true;
            }
            other => unreachable!("unknown property {other}"),
        }
        drop(settings);
        if latency_changed {
            self.post_latency_if_changed();
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = lock(&self.settings);
        match pspec.name() {
            "model-dir" => settings.model_dir.to_value(),
            "variant" => settings.variant.to_value(),
            "device" => settings.device.to_value(),
            "precision" => settings.precision.to_value(),
            "prompt" => settings.prompt.to_value(),
            "negative-prompt" => settings.negative_prompt.to_value(),
            "num-steps" => settings.num_steps.to_value(),
            "cfg-strength" => settings.cfg_strength.to_value(),
            "seed" => settings.seed.to_value(),
            "mask-away-clip" => settings.mask_away_clip.to_value(),
            "text-only" => settings.text_only.to_value(),
            "window-duration" => settings.window_ms.to_value(),
            "overlap" => settings.overlap_ms.to_value(),
            "max-in-flight" => settings.max_in_flight.to_value(),
            "processing-latency" => settings.processing_latency_ms.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }
}

impl GstObjectImpl for MMAudioGen {}

impl ElementImpl for MMAudioGen {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "MMAudio Foley generator",
                "Converter/Video/Audio",
                "Generates a synchronized soundtrack for a video stream with MMAudio \
                 (video + text to audio), in crossfaded windows",
                "gst-mmaudio developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::Rgb)
                .build();
            let src_caps = gst_audio::AudioCapsBuilder::new_interleaved()
                .format(gst_audio::AUDIO_FORMAT_F32)
                .rate_list([16_000, 44_100])
                .channels(1)
                .build();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &sink_caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &src_caps,
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        gst::trace!(CAT, imp = self, "Changing state {transition:?}");
        if transition == gst::StateChange::ReadyToPaused {
            let settings = lock(&self.settings).clone();
            // The geometry does not depend on the rate beyond rounding: check it now.
            if let Err(err) = WindowConfig::from_millis(
                16_000,
                settings.window_ms as u64,
                settings.overlap_ms as u64,
            ) {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Settings,
                    ["Invalid window settings: {err}"]
                );
                return Err(gst::StateChangeError);
            }
            lock(&self.shared).max_in_flight = settings.max_in_flight as usize;
            *lock(&self.state) = State::default();
            *lock(&self.output) = Output::default();
        }

        let ret = self.parent_change_state(transition)?;

        match transition {
            gst::StateChange::ReadyToPaused => self.start_loading(),
            gst::StateChange::PausedToReady => {
                // Pads are deactivated: the task is stopped.
                *lock(&self.state) = State::default();
                *lock(&self.output) = Output::default();
                *lock(&self.reported_latency) = None;
                let mut shared = lock(&self.shared);
                shared.jobs.clear();
                shared.windows = 0;
                shared.upstream_live = false;
            }
            gst::StateChange::ReadyToNull => {
                let mut shared = lock(&self.shared);
                shared.load_id += 1;
                shared.model = Model::None;
            }
            _ => {}
        }
        Ok(ret)
    }
}
