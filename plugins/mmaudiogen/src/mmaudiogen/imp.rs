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
//! audio by the generator on its own thread, and consecutive windows are crossfaded with a
//! constant-power curve over the overlap. The output is
//! sample-exact: its sample count is `round(video duration × rate)` where the video lasts
//! from the first frame's pts to the end of the last frame, the first sample carries the
//! first frame's pts, and every timestamp is derived from the sample count, so nothing
//! drifts. At EOS the last, shorter window is generated at its true duration. All of the
//! bookkeeping is `mmaudio::window` (pure, unit-tested); this file is the GStreamer side.
//!
//! ## Threads and bounds
//!
//! Three threads, in a line: the streaming thread reads each frame in its own format,
//! plans windows and queues them; the generator thread (`mmaudiogen-gen`) generates and
//! crossfades them; the source pad's task pushes the audio and the events downstream, in
//! stream order. A synchronised sink that blocks the push (waiting for its clock, or an
//! audio device draining its ring buffer) thus never delays the next window. At most
//! `max-in-flight` windows are queued, being generated or waiting to be pushed; beyond
//! that the streaming thread blocks (backpressure), so memory is bounded for any length:
//! one window of frames plus `max-in-flight` windows of requests and audio. With the MMAudio
//! generator each frame is resized on arrival, on the streaming thread, to the two sizes the
//! model sees (384×384 for CLIP, 224×224 for Synchformer; ≈ 11 ms for a 1080p frame), so a
//! window holds ≈ 0.6 MB per frame whatever the input size, and this work overlaps the
//! generation of the previous window on the generator thread. YUV and the other formats are
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
//! would carry it. FLUSH_START cancels the generator between sampler steps and returns at once; FLUSH_STOP
//! waits for the generator thread to let go of the flushed stream, resets everything, and
//! the next output buffer is flagged DISCONT. A new SEGMENT that differs from the current
//! one (other than in position) drains the current stream first; EOS and SEGMENT_DONE
//! drain the partial window before they are forwarded, so a segment seek's audio, all of
//! it, precedes its SEGMENT_DONE and looping segment seeks loop the audio too. Reverse
//! playback is refused: a seek with a negative rate fails with a WARNING, and a reverse
//! segment that arrives anyway gets a GAP for each frame (and the WARNING), never audio.
//! A GAP before the first frame is forwarded; later GAPs are covered by the frame before
//! them (it holds until the next frame), and a trailing GAP does not lengthen the output.
//! Caps may change size mid-stream; frames of any size go to the generator as they are.
//!
//! ## Preroll
//!
//! The first audio of a stream needs a window of video. So that downstream can preroll
//! (a sink commits its state to PAUSED on its first buffer or GAP, and a pipeline only
//! plays when all its sinks have), in a live pipeline the first frame of every stream
//! (after a segment, a flush or a drain) makes the element push the caps and a GAP of
//! duration zero at that frame's pts. It claims no time — the audio for that pts follows,
//! within the reported latency — but lets a sink preroll at once: without it a live tee
//! deadlocks (the video sink prerolls and blocks, the video queue fills, the tee blocks,
//! and the window never gets its video). Whether upstream is live is asked (a LATENCY
//! query) at that first frame. A non-live pipeline gets no such GAP: there is no latency
//! to cover the first window, so its sinks must preroll on the first audio (else its
//! clock would start a window too early and the audio would begin late); a non-live tee
//! therefore needs a queue that holds a window of video on its other branch.
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
//! once per stream otherwise, since it then only delays the output). `window-duration`,
//! `overlap` and the model properties are read at READY→PAUSED; changing them later is
//! refused with a WARNING (the latency reported would not be the stream's).
//!
//! In a live pipeline (upstream live, PLAYING, a LATENCY event received) a window whose
//! audio cannot reach the sinks by its running time + the pipeline latency is skipped
//! instead of generated late: it becomes silence (crossfaded like any window, so the
//! output stays sample-exact), a QoS message is posted (and a WARNING for the first of a
//! stream), and `mmaudiogen-window` counts it. A window that is generated but still runs
//! at its deadline is cancelled then. So under any overload no audio is later than its
//! deadline (plus one sampler step), and the output recovers as soon as the load drops;
//! see `qos.rs` for the rule.
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
//! | `skipped` | bool | the window was not generated (live QoS): its span is silence |
//! | `windows-skipped` | u64 | windows skipped since READY→PAUSED |
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
//! Skipped windows (live QoS, above) also post a QoS message each.
//!
//! ## Example
//!
//! ```text
//! gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! \
//!     mmaudiogen model-dir=/models/mmaudio prompt="footsteps on gravel" ! \
//!     audioconvert ! wavenc ! filesink location=foley.wav
//! ```
//!
//! Live, the video shown in sync with its soundtrack: the video branch's queue holds the
//! pipeline latency of video (the sinks show each frame that late), the other is a
//! default queue.
//!
//! ```text
//! gst-launch-1.0 -e v4l2src ! videoconvert ! tee name=t \
//!     t. ! queue max-size-time=12000000000 max-size-bytes=0 max-size-buffers=0 ! autovideosink \
//!     t. ! queue ! mmaudiogen model-dir=/models/mmaudio device=cuda:0 ! \
//!     audioconvert ! autoaudiosink
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

mod loader;
mod push;
mod qos;
mod settings;
mod sink;
mod src_pad;
mod worker;

use push::{ChunkKind, Out};

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
    /// A frame arrived since the stream began (segment, flush or drain): downstream was
    /// given its preroll GAP.
    stream_open: bool,
    /// The segment plays backwards: its frames become GAPs (see `sink_chain`).
    reverse: bool,
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

/// What the streaming thread hands to the generator thread, in stream order.
enum Job {
    /// A serialized event, forwarded after the audio queued before it.
    Event(gst::Event),
    /// The first frame of a stream arrived at this pts: let downstream preroll.
    Preroll(gst::ClockTime),
    Window {
        request: WindowRequest,
        span: WindowSpan,
        cfg: WindowConfig,
    },
    /// End of a stream (EOS or drain): flush the last samples.
    End { total: u64 },
}

/// Shared between the streaming thread, the generator thread, the source pad task and the
/// loader (with `cond`).
struct Shared {
    jobs: VecDeque<Job>,
    /// What the generator produced, for the source pad task to push, in stream order.
    out: VecDeque<Out>,
    /// Windows queued, being generated or waiting to be pushed.
    windows: usize,
    /// The generator thread is working on a job (FLUSH_STOP waits until it is not).
    generating: bool,
    /// The generator thread is to end (source pad deactivated).
    quit: bool,
    /// Number of the window being generated under a QoS deadline; the deadline's clock
    /// callback only cancels that one.
    deadline_seq: u64,
    /// The deadline of the window being generated passed (it was cancelled for it).
    deadline_hit: bool,
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
            out: VecDeque::new(),
            windows: 0,
            generating: false,
            quit: false,
            deadline_seq: 0,
            deadline_hit: false,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT as usize,
            flushing: true,
            flow: Err(gst::FlowError::Flushing),
            model: Model::None,
            load_id: 0,
            upstream_live: false,
        }
    }
}

/// Source-side state: the generator thread's assembler and QoS, the source pad task's caps
/// and DISCONT.
#[derive(Debug)]
struct Output {
    assembler: Option<Assembler>,
    /// Rate of the caps pushed downstream.
    rate: Option<u32>,
    discont: bool,
    late_warned: bool,
    /// The segment of the audio the generator produces (for running times).
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    qos: qos::Qos,
}

impl Default for Output {
    fn default() -> Self {
        Self {
            assembler: None,
            rate: None,
            discont: true,
            late_warned: false,
            segment: None,
            qos: qos::Qos::default(),
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
    /// Pipeline latency from the last LATENCY event (the sinks render this late).
    pipeline_latency: Mutex<Option<gst::ClockTime>>,
    /// The generator thread (runs while the source pad is active).
    generator_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl MMAudioGen {
    pub(super) fn set_factory(&self, factory: Option<Arc<GeneratorFactory>>) {
        let mut f = lock(&self.factory);
        f.0 = factory;
        f.1 += 1;
    }

    // The streaming thread is in sink.rs, the generator thread in worker.rs, the source pad
    // task in push.rs, live QoS in qos.rs, queries and activation in src_pad.rs, model
    // loading in loader.rs, the properties in settings.rs.
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
            .event_function(|pad, parent, event| {
                MMAudioGen::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_event(pad, event),
                )
            })
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
            pipeline_latency: Mutex::new(None),
            generator_thread: Mutex::new(None),
        }
    }
}

impl ObjectImpl for MMAudioGen {
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
                *lock(&self.pipeline_latency) = None;
                let mut shared = lock(&self.shared);
                shared.jobs.clear();
                shared.out.clear();
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
