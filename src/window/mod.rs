//! The window engine: a video stream of any length → generation windows → one seamless,
//! sample-exact audio stream.
//!
//! Pure bookkeeping: no GStreamer, no tensors. It is split in two halves so that the
//! producer side (the streaming thread that receives frames) and the consumer side (the
//! thread that generates and outputs audio) can live on different threads:
//!
//! * [`WindowPlanner`] takes frames (presentation times in nanoseconds) and the end of the
//!   stream, and emits [`Planned`] items: windows to generate (a [`WindowRequest`] with
//!   only the frames that window needs, plus its [`WindowSpan`] on the output sample axis)
//!   and, at the end, the exact total sample count.
//! * [`Assembler`] takes the generated audio of each window, in order, joins it to the
//!   audio before it and emits finished [`Chunk`]s whose sample offsets tile the output
//!   without gap or overlap.
//!
//! [`render`] glues both to a generator for offline use (and is what the tests drive).
//!
//! Two engines share the planner, the frame store and the output type; they differ in
//! where windows lie and how consecutive windows are joined ([`EngineConfig`]):
//!
//! * [`windows`] (`mode=windows`): independent windows of `W` every `H = W − O`,
//!   crossfaded over the overlap `O`. A sample leaves one window (plus one frame and the
//!   generation time) after its own time.
//! * [`continuation`] (`mode=continuation`): window `k` ends at the newest frame boundary
//!   and starts `W` earlier; everything but its last hop is already known (the final
//!   latents of the windows before it, held by inpainting), so only the hop is new. A
//!   sample leaves one hop plus a short held-back crossfade (plus one frame and the
//!   generation time) after its own time.
//!
//! # What both engines share
//!
//! * **Integer geometry.** Window boundaries are computed in integer samples from the
//!   first frame's pts, never by adding up floating-point durations, so nothing drifts
//!   over hours. [`ns_to_samples_round`] and [`samples_to_ns`] convert exactly.
//! * **Exact length.** The video lasts from the first frame's pts to the end of its last
//!   frame, `pts_last + duration_last`. The duration of the last frame is the buffer
//!   duration if known, else the interval between the last two frames, else
//!   [`DEFAULT_FRAME_NS`] (a single frame without any timing information). The durations
//!   of the other frames play no role: a frame is shown until the next one starts (a pause
//!   in the frames, or a GAP event, is covered by the frame before it). The output has
//!   exactly `N = round(video duration · rate)` samples; nothing after the last frame (such
//!   as a trailing GAP from a demuxer whose other streams run longer) lengthens it. A
//!   window is generated as soon as the video is known to reach its end (a frame with
//!   `pts ≥` window end arrives); at EOS (or a drain) the remaining windows are planned
//!   against `N` and the last one ends exactly at `N`.
//! * **Very short windows.** MMAudio's sync stream needs at least
//!   [`MIN_DURATION_S`](crate::config::MIN_DURATION_S) (one 16-frame Synchformer segment at
//!   25 fps). A window shorter than that is *generated* at the minimum duration and
//!   *trimmed* to its true length: the request's `duration` is the longer one, its frames
//!   are the real ones (the last frame holds, see [`WindowRequest`]), and the assembler
//!   keeps only the first `len` samples.
//! * **Frames in a request.** A request carries the frame shown at the window start (its
//!   pts clamped to 0) and all frames starting before the window's true end, with pts
//!   relative to the window start. Each frame holds until the next one; the last one
//!   holds until `duration`. Every frame has a stream-unique [`VideoFrame::id`] (the same
//!   in every window that shows it), and the request says from which id on frames can
//!   still come ([`WindowRequest::retain_from`]), so a generator can cache per-frame
//!   features and evict them when no future window can use them.
//! * **Timestamp jumps.** A frame more than [`MAX_FRAME_JUMP_NS`] (10 s) after the end of
//!   the previous one ends the stream (its last window is planned, [`Planned::End`]) and
//!   starts a new one at the new frame, instead of holding one frozen frame over the
//!   hole and generating every window in between.
//! * **Headroom.** No crossfade puts a sample beyond full scale ([`crossfade`]).
//!
//! # Memory
//!
//! The planner keeps only the frames a not-yet-planned window can still show: the frame
//! shown at the next window's start and every frame after it. Frame payloads are
//! `Arc`-shared with the requests, not copied. When the generator says it only looks at
//! MMAudio's 8 fps and 25 fps picks ([`AudioGenerator::picks_frames`]) the planner also
//! drops, as they arrive, the frames that no slot of a present or future window can pick
//! (and keeps only the model-size plane a frame is picked for), before they are prepared:
//! the frames held per window are then at most `(8 + 25) · W` whatever the input rate
//! (see [`planner`]).

use crate::error::{Error, Result};
use crate::generator::AudioGenerator;
use crate::request::{Cancel, Continuation, GenerationParams};
#[cfg(doc)]
use crate::request::{VideoFrame, WindowRequest};
use std::sync::Arc;

/// The last chunk of a stream: the `tail` held back after `emitted` samples, which must
/// bring the stream to exactly `total` samples (both assemblers' `finish`).
fn final_chunk(origin: u64, emitted: u64, tail: Vec<f32>, total: u64) -> Result<Chunk> {
    let ended = emitted + tail.len() as u64;
    if ended != total {
        return Err(Error::input(format!(
            "stream ended after {ended} samples, expected {total} (a window is missing)"
        )));
    }
    Ok(Chunk {
        origin,
        offset: emitted,
        samples: tail,
    })
}

/// Frames for the engine's unit tests.
#[cfg(test)]
mod test_frames {
    use super::*;

    pub fn frame(pts: u64, duration: Option<u64>) -> TimedFrame {
        TimedFrame {
            pts,
            duration,
            width: 2,
            height: 2,
            data: Arc::new(pts.to_le_bytes().to_vec()),
            prepared: None,
            source: None,
        }
    }

    /// `n` frames at `num/den` fps from `t0` (ns), each with its duration.
    pub fn cfr(t0: u64, n: u64, num: u64, den: u64) -> Vec<TimedFrame> {
        let ts = |i: u64| (i as u128 * den as u128 * NS_PER_S as u128 / num as u128) as u64;
        (0..n)
            .map(|i| frame(t0 + ts(i), Some(ts(i + 1) - ts(i))))
            .collect()
    }
}

pub mod continuation;
pub mod crossfade;
pub mod planner;
pub mod windows;

pub use continuation::{ContinuationAssembler, ContinuationConfig};
pub use crossfade::{crossfade_weights, crossfade_weights_correlated, limit_to_full_scale};
pub use planner::{FramePlanes, Preparer, WindowPlanner};
pub use windows::{WindowConfig, WindowsAssembler};

/// Nanoseconds per second (stream times are in nanoseconds, as GStreamer's).
pub const NS_PER_S: u64 = 1_000_000_000;

/// A frame starting more than this (10 s) after the end of the previous frame is taken for
/// a discontinuity (broken timestamps, a source that stalled, a spliced stream): the
/// current stream is finished and a new one starts at the new frame, rather than one
/// frozen frame being held over the hole and every window in between being generated.
///
/// Why 10 s: longer than any pause a held frame should bridge in a real video (a dropped
/// frame, a short stall, a still scene between two shots) and longer than the default
/// 8 s window, so a legitimate pause never splits a window; short enough that a broken
/// jump costs at most about one extra window of a frozen frame instead of hours of them.
/// A frame whose buffer duration covers the time to the next frame is never a jump,
/// whatever its length (slideshows).
pub const MAX_FRAME_JUMP_NS: u64 = 10 * NS_PER_S;

/// Duration assumed for the last frame when nothing tells it (no buffer duration, no
/// frame rate, a single frame): one frame at 25 fps.
pub const DEFAULT_FRAME_NS: u64 = 40_000_000;

/// `floor(ns · rate / 1e9)` without overflow.
pub fn ns_to_samples_floor(ns: u64, rate: u32) -> u64 {
    (ns as u128 * rate as u128 / NS_PER_S as u128) as u64
}

/// `round(ns · rate / 1e9)` (half up) without overflow.
pub fn ns_to_samples_round(ns: u64, rate: u32) -> u64 {
    ((ns as u128 * rate as u128 + NS_PER_S as u128 / 2) / NS_PER_S as u128) as u64
}

/// `floor(samples · 1e9 / rate)`: the time of a sample offset, as GStreamer's audio
/// elements compute it (`gst_util_uint64_scale_int(samples, GST_SECOND, rate)`).
pub fn samples_to_ns(samples: u64, rate: u32) -> u64 {
    (samples as u128 * NS_PER_S as u128 / rate as u128) as u64
}

/// One input frame on the stream's time axis.
#[derive(Debug, Clone)]
pub struct TimedFrame {
    /// Presentation time in nanoseconds.
    pub pts: u64,
    /// Duration in nanoseconds, if known (only the last frame's matters).
    pub duration: Option<u64>,
    pub width: usize,
    pub height: usize,
    /// Packed RGB24, `width * height * 3` bytes (may be empty when `prepared` is set).
    pub data: Arc<Vec<u8>>,
    /// The frame already resized for the models (see [`VideoFrame::prepared`]).
    pub prepared: Option<Arc<crate::request::PreparedFrame>>,
    /// The frame as its producer holds it until the planner's [`Preparer`] has resized it
    /// (e.g. a copy of a YUV frame's planes); only the preparer reads it, and it is dropped
    /// once the frame is prepared.
    pub source: Option<FrameSource>,
}

/// An opaque frame payload for the [`Preparer`] (see [`TimedFrame::source`]).
#[derive(Clone)]
pub struct FrameSource(Arc<dyn std::any::Any + Send + Sync>);

impl FrameSource {
    pub fn new<T: std::any::Any + Send + Sync>(value: T) -> Self {
        Self(Arc::new(value))
    }
    /// The payload, if it is a `T`.
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for FrameSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameSource")
    }
}

/// Where a planned window lies on the output sample axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpan {
    /// Window number within the stream (0, 1, ...).
    pub index: u64,
    /// Pts of the stream's first frame, in ns: output sample `s` is at
    /// `origin + samples_to_ns(s)`.
    pub origin: u64,
    /// First output sample of the window.
    pub start: u64,
    /// Samples of the window that are real (before crossfading): the window covers
    /// output samples `[start, start + len)`.
    pub len: u64,
    /// Samples the generator is asked for (`≥ len`); the excess is trimmed.
    pub generated: u64,
    /// The stream's last window: no fade-out, everything is emitted.
    pub last: bool,
}

/// What the planner asks for.
// A handful per second; boxing the request would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Planned {
    /// Generate this window, then pass the audio to [`Assembler::push`] with the span.
    Window {
        request: crate::request::WindowRequest,
        span: WindowSpan,
    },
    /// The stream ended (EOS, a drain or a timestamp jump) after exactly `total` output
    /// samples; pass to [`Assembler::finish`].
    End { total: u64 },
}

/// Finished output samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Pts of the stream's first frame (ns).
    pub origin: u64,
    /// Sample offset of `samples[0]` from the origin.
    pub offset: u64,
    pub samples: Vec<f32>,
}

impl Chunk {
    /// Pts of the first sample and of the end of the chunk, in ns, derived from the sample
    /// count so consecutive chunks meet exactly.
    pub fn time_range(&self, rate: u32) -> (u64, u64) {
        let end = self.offset + self.samples.len() as u64;
        (
            self.origin + samples_to_ns(self.offset, rate),
            self.origin + samples_to_ns(end, rate),
        )
    }
}

/// One window as the geometry places it (see [`EngineConfig::window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPlace {
    /// First output sample.
    pub start: u64,
    /// Real samples (`[start, start + len)`).
    pub len: u64,
    /// Samples to generate (`≥ len`: at least the model's minimum).
    pub generated: u64,
    pub last: bool,
    pub continuation: Option<Continuation>,
}

/// The geometry of either engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineConfig {
    Windows(WindowConfig),
    Continuation(ContinuationConfig),
}

impl From<WindowConfig> for EngineConfig {
    fn from(c: WindowConfig) -> Self {
        EngineConfig::Windows(c)
    }
}

impl From<ContinuationConfig> for EngineConfig {
    fn from(c: ContinuationConfig) -> Self {
        EngineConfig::Continuation(c)
    }
}

impl EngineConfig {
    /// New output samples per window: the window start step (`windows`) or the hop
    /// (`continuation`).
    pub fn hop_samples(&self) -> u64 {
        match self {
            EngineConfig::Windows(c) => c.hop_samples(),
            EngineConfig::Continuation(c) => c.hop_samples(),
        }
    }

    pub fn rate(&self) -> u32 {
        match self {
            EngineConfig::Windows(c) => c.rate(),
            EngineConfig::Continuation(c) => c.rate(),
        }
    }

    /// First output sample of window `k`.
    pub fn window_start(&self, k: u64) -> u64 {
        match self {
            EngineConfig::Windows(c) => k * c.hop_samples(),
            EngineConfig::Continuation(c) => c.window_start(k),
        }
    }

    /// End of window `k` before EOS (the video must reach it before `k` is planned).
    pub fn window_end(&self, k: u64) -> u64 {
        match self {
            EngineConfig::Windows(c) => k * c.hop_samples() + c.window_samples(),
            EngineConfig::Continuation(c) => c.window_end(k),
        }
    }

    /// Window `k`: before EOS (`total = None`) a full window; at EOS (`total = Some(N)`)
    /// the window as it must be for a stream of `N` samples, `None` when the windows
    /// before it already cover the stream.
    pub fn window(&self, k: u64, total: Option<u64>) -> Option<WindowPlace> {
        match self {
            EngineConfig::Windows(c) => c.place(k, total),
            EngineConfig::Continuation(c) => c.place(k, total),
        }
    }
}

/// Consumer half: generated windows in (in order), finished output out. Both engines
/// emit the same [`Chunk`]s, so whatever pushes them downstream does not depend on the
/// mode.
#[derive(Debug)]
pub enum Assembler {
    Windows(WindowsAssembler),
    Continuation(ContinuationAssembler),
}

impl Assembler {
    pub fn new(cfg: impl Into<EngineConfig>) -> Self {
        match cfg.into() {
            EngineConfig::Windows(c) => Assembler::Windows(WindowsAssembler::new(c)),
            EngineConfig::Continuation(c) => Assembler::Continuation(ContinuationAssembler::new(c)),
        }
    }

    pub fn config(&self) -> EngineConfig {
        match self {
            Assembler::Windows(a) => EngineConfig::Windows(*a.config()),
            Assembler::Continuation(a) => EngineConfig::Continuation(*a.config()),
        }
    }

    /// Samples emitted in the current stream.
    pub fn emitted(&self) -> u64 {
        match self {
            Assembler::Windows(a) => a.emitted(),
            Assembler::Continuation(a) => a.emitted(),
        }
    }

    pub fn reset(&mut self) {
        match self {
            Assembler::Windows(a) => a.reset(),
            Assembler::Continuation(a) => a.reset(),
        }
    }

    /// Add the audio generated for `span` (at least `span.len` samples; extra samples are
    /// trimmed). Returns the samples that are now final.
    pub fn push(&mut self, span: &WindowSpan, audio: Vec<f32>) -> Result<Chunk> {
        match self {
            Assembler::Windows(a) => a.push(span, audio),
            Assembler::Continuation(a) => a.push(span, audio),
        }
    }

    /// End of the stream after exactly `total` samples: emits what is left and resets for
    /// a new stream.
    pub fn finish(&mut self, total: u64) -> Result<Chunk> {
        match self {
            Assembler::Windows(a) => a.finish(total),
            Assembler::Continuation(a) => a.finish(total),
        }
    }
}

/// Offline use: run a whole stream of frames through planner, generator and assembler.
/// Returns the output samples (exactly `round(video duration · rate)`; a timestamp jump
/// starts a new stream whose samples follow). The generator is reset before every stream,
/// and frames are dropped as they arrive when it only looks at MMAudio's picks
/// ([`AudioGenerator::picks_frames`]).
pub fn render(
    cfg: impl Into<EngineConfig>,
    params: &GenerationParams,
    frames: impl IntoIterator<Item = TimedFrame>,
    generator: &mut dyn AudioGenerator,
    cancel: &Cancel,
) -> Result<Vec<f32>> {
    let cfg = cfg.into();
    if generator.sample_rate() != cfg.rate() {
        return Err(Error::config(format!(
            "generator rate {} Hz does not match window rate {} Hz",
            generator.sample_rate(),
            cfg.rate()
        )));
    }
    let mut planner = WindowPlanner::new(cfg);
    planner.set_params(params.clone());
    planner.set_frame_picking(generator.picks_frames());
    let mut assembler = Assembler::new(cfg);
    let mut out = Vec::new();
    let mut run = |items: Vec<Planned>, out: &mut Vec<f32>| -> Result<()> {
        for item in items {
            let chunk = match item {
                Planned::Window { request, span } => {
                    if span.index == 0 {
                        generator.reset();
                    }
                    let audio = generator.generate(&request, cancel)?;
                    assembler.push(&span, audio)?
                }
                Planned::End { total } => assembler.finish(total)?,
            };
            out.extend_from_slice(&chunk.samples);
        }
        Ok(())
    };
    for frame in frames {
        let items = planner.push_frame(frame);
        run(items, &mut out)?;
    }
    let items = planner.finish();
    run(items, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both assemblers end a stream the same way: the held tail, exactly the stream's length,
    /// else an error saying a window is missing; either way they are ready for a new stream.
    #[test]
    fn finish_checks_the_stream_length_in_both_modes() {
        let windows = EngineConfig::Windows(WindowConfig::from_millis(16000, 8000, 1000).unwrap());
        let continuation = EngineConfig::Continuation(
            ContinuationConfig::from_millis(16000, 512, 8000, 1000).unwrap(),
        );
        for cfg in [windows, continuation] {
            let mut a = Assembler::new(cfg);
            let err = a.finish(5).unwrap_err().to_string();
            assert!(
                err.contains("ended after 0 samples, expected 5 (a window is missing)"),
                "{err}"
            );
            assert_eq!(a.emitted(), 0);
            let chunk = a.finish(0).unwrap();
            assert_eq!((chunk.offset, chunk.samples.len()), (0, 0));
        }
    }
}
