//! # mmaudiogen
//!
//! Generates a synchronized soundtrack (Foley) for a video stream with MMAudio: raw video
//! in as decoders produce it (I420, YV12, NV12, NV21, Y42B, Y444, GRAY8, the packed
//! RGB/BGR family with or without alpha or padding, and the 10-bit I420_10LE, I422_10LE,
//! Y444_10LE and P010_10LE), mono 32-bit float audio out at the
//! model's rate (16 000 Hz for `small-16k`, 44 100 Hz for the other variants).
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
//! The streaming thread reads each frame in its own format, plans windows and queues them; at most `max-in-flight` windows are queued or being generated, beyond
//! that the streaming thread blocks (backpressure), so memory is bounded for any length:
//! one window of frames plus `max-in-flight` windows of requests. With the MMAudio
//! generator each frame is resized on arrival, on the streaming thread, to the two sizes the
//! model sees (384×384 for CLIP, 224×224 for Synchformer; ≈ 11 ms for a 1080p frame), so a
//! window holds ≈ 0.6 MB per frame whatever the input size, and this work overlaps the
//! generation of the previous window on the worker thread. YUV and the other formats are
//! converted to RGB row by row inside that resize, with the matrix and range of the caps'
//! colorimetry (`mmaudio::features::pixels`): no full-size RGB copy is made. An interlaced
//! frame (interlace-mode `interleaved`, or `mixed` with the INTERLACED buffer flag) is read
//! as its first field in time (caps `field-order` or the TFF flag), stretched to the
//! frame's height. (Generators that do not ask for prepared frames get the frame as packed
//! RGB24.)
//!
//! Flow errors of the source pad are returned upstream from the next `chain`; a fatal one
//! (not-negotiated, not-linked, error) is first posted as an ERROR of this element saying
//! why (e.g. `Downstream refused audio/x-raw rate=16000 (mono F32): add audioconvert !
//! audioresample after mmaudiogen`), since the video may already have ended and no `chain`
//! would carry it. FLUSH_START
//! cancels the generator between sampler steps and returns at once; FLUSH_STOP resets
//! everything and the next output buffer is flagged DISCONT. A new SEGMENT that differs
//! from the current one (other than in position) drains the current stream first; EOS
//! drains the partial window before EOS is forwarded. A GAP before the first frame is forwarded; later GAPs
//! are covered by the frame before them (it holds until the next frame), and a trailing
//! GAP does not lengthen the output. Caps may change size mid-stream; frames of any size
//! go to the generator as they are.
//!
//! The model is loaded on a separate thread started at READY→PAUSED (PROGRESS messages
//! `start`/`complete`/`error`, code `load`); the first buffer waits for it. `model-dir`
//! unset means `$MMAUDIO_MODEL_DIR`, else `./models`; `variant=auto` (the default) loads
//! what the folder holds, and a variant contradicting the folder's `mmaudio.json` is
//! refused. A failure
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
//! When the model is loaded the element posts the PROGRESS `complete` message and an INFO
//! message with one sentence (`Loaded MMAudio small_16k, 16000 Hz, on cpu in f32 from
//! models in 9.8 s`) and an ELEMENT message `mmaudiogen-model`:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `name` | string | e.g. `MMAudio small_16k` |
//! | `variant` | string | official spelling (`small_16k`), empty for custom generators |
//! | `rate` | u32 | output sample rate |
//! | `device` | string | device in use (`cpu`, `cuda:0`): what `device=auto` chose |
//! | `precision` | string | `f32`, `f16` or `bf16`: what `precision=auto` chose |
//! | `load-time` | GstClockTime | wall time of the load |
//!
//! While a window is generated the element also posts `mmaudiogen-progress` ELEMENT
//! messages, so a progress display can move within a window (a window takes minutes on a
//! CPU):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `index` | u64 | window number in the stream |
//! | `stage` | string | `features` (video and text encoders), `sampling` or `decoding` (VAE and vocoder) |
//! | `step` | u32 | sampler steps done (`sampling`; 0 otherwise) |
//! | `steps` | u32 | sampler steps of the window (`num-steps`) |
//!
//! ## Stopping early
//!
//! EOS drains: every window the element holds frames for is generated (up to
//! `max-in-flight` + 1 windows). To stop sooner, emit the action signal
//! `stop-after-window` (no arguments): the stream then ends after the window being
//! generated — windows queued behind it are dropped, later frames are refused (`chain`
//! returns EOS, so upstream stops), that window's audio is output in full (no fade-out) and
//! EOS is pushed; a later EOS from upstream is absorbed. The signal returns the pts at which
//! the audio will end (`GstClockTime`), or `GST_CLOCK_TIME_NONE` when no window has been
//! generated or is being generated (the stream then ends without audio). A flush or a
//! READY→PAUSED change starts over. `mmaudio generate` uses it for Ctrl-C and SIGTERM.
//!
//! ## Example
//!
//! ```text
//! gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! \
//!     mmaudiogen model-dir=/models/mmaudio prompt="footsteps on gravel" ! \
//!     audioconvert ! wavenc ! filesink location=foley.wav
//! ```

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::prelude::*;

use mmaudio::generator::{AudioGenerator, LoadOptions};
use mmaudio::request::{Cancel, GenerationParams, WindowRequest};
use mmaudio::window::{
    Assembler, Chunk, Planned, TimedFrame, WindowConfig, WindowPlanner, WindowSpan, samples_to_ns,
};

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{GeneratorFactory, ModelPrecision, ModelVariant};

mod control;
mod loader;
mod settings;
mod sink;
mod src_pad;
mod worker;

use settings::{DEFAULT_MAX_IN_FLIGHT, Settings};

pub(super) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "mmaudiogen",
        gst::DebugColorFlags::empty(),
        Some("MMAudio video-to-audio generator"),
    )
});

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
    /// `stop-after-window`: output the held tail of the last window generated, then
    /// nothing more of this stream.
    Finish,
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
    /// The window the worker is generating (for `stop-after-window`).
    current: Option<WindowSpan>,
    /// `stop-after-window` was emitted: the stream ends after the current window.
    finished: bool,
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
            current: None,
            finished: false,
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
    /// The last window pushed while the assembler holds its tail (for
    /// `stop-after-window`); cleared when the stream ends.
    held: Option<WindowSpan>,
}

impl Default for Output {
    fn default() -> Self {
        Self {
            assembler: None,
            rate: None,
            discont: true,
            late_warned: false,
            held: None,
        }
    }
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

    // The streaming thread is in sink.rs, the worker in worker.rs, the source pad in
    // src_pad.rs, model loading in loader.rs, the properties in settings.rs.
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
    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(control::signals);
        SIGNALS.as_ref()
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(settings::param_specs);
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        self.set_setting(value, pspec)
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        self.setting(pspec)
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
                "gst-mmaudio developers <gst-mmaudio@users.noreply.github.com>",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst_video::VideoCapsBuilder::new()
                .format_list(sink::SINK_FORMATS)
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
                    ("Invalid window settings: {err}")
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
                shared.current = None;
                shared.finished = false;
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
