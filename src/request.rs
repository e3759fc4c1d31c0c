//! The plain data of a generation request: frames, per-window settings, cancellation.
//!
//! The bottom of the library's layering: everything above (frame preprocessing, the
//! MMAudio model composition, the generator interface, the window engine, the element)
//! uses these types; this module uses none of them.

use crate::error::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A frame resized once for both models: planar uint8 `(3, 384, 384)` for CLIP and
/// `(3, 224, 224)` for Synchformer — exactly what
/// [`crate::features::preprocess::transform_u8`] would compute from the full frame. Made by
/// [`crate::features::preprocess::prepare_frame`].
#[derive(Debug, Clone)]
pub struct PreparedFrame {
    pub clip: Vec<u8>,
    pub sync: Vec<u8>,
}

/// One decoded video frame: packed RGB24, `width * height * 3` bytes, rows without padding —
/// or, when `prepared` is set, only its two model-size versions (then `data` may be empty).
#[derive(Debug, Clone)]
pub struct VideoFrame {
    /// Presentation time in seconds, relative to the start of the window it is given in.
    pub pts: f64,
    pub width: usize,
    pub height: usize,
    pub data: Arc<Vec<u8>>,
    /// The frame already resized for CLIP and Synchformer (see
    /// [`crate::features::preprocess::prepare_frame`]): done once per frame as it arrives,
    /// so overlapping windows share the work and only ~0.6 MB per frame is kept whatever
    /// the video size.
    pub prepared: Option<Arc<PreparedFrame>>,
}

impl VideoFrame {
    /// A raw packed-RGB24 frame.
    pub fn rgb(pts: f64, width: usize, height: usize, data: Arc<Vec<u8>>) -> Self {
        Self {
            pts,
            width,
            height,
            data,
            prepared: None,
        }
    }
}

/// Per-window generation settings (the element's properties at the time the window starts).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub num_steps: usize,
    pub cfg_strength: f64,
    pub seed: u64,
    /// Drop the CLIP (semantic) video features and keep only the sync stream, as the
    /// official demo's `--mask_away_clip`.
    pub mask_away_clip: bool,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            num_steps: 25,
            cfg_strength: 4.5,
            seed: 42,
            mask_away_clip: false,
        }
    }
}

/// One window to generate.
#[derive(Debug, Clone)]
pub struct WindowRequest {
    /// Sequence number of the window in the stream (0, 1, ...).
    pub index: u64,
    /// Start of the window on the stream's time axis, in seconds (informational; frame
    /// times are relative to it).
    pub start: f64,
    /// Duration of the window in seconds; the generator returns `round(duration · sr)` samples.
    pub duration: f64,
    /// Frames whose (relative) pts lie in `[0, duration)`, in order. Empty = text-to-audio.
    ///
    /// The frames are a step function: each frame is shown from its pts until the next
    /// frame's, the last one until `duration`. The first frame is the one shown at the
    /// window start (its pts clamped to 0), so sampling "the frame shown at time t" for
    /// any `t` in `[0, duration)` is always defined. The window engine sends a window
    /// shorter than the model's minimum with that minimum `duration` and only the real
    /// frames: the last frame then holds to the end (see `crate::window`).
    pub frames: Vec<VideoFrame>,
    pub params: GenerationParams,
}

impl WindowRequest {
    /// Samples this window must produce at `rate`.
    pub fn num_samples(&self, rate: u32) -> usize {
        (self.duration * rate as f64).round() as usize
    }
}

/// Where the generation of a window stands, reported through [`Cancel::report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Video (CLIP, Synchformer) and text features are being computed.
    Features,
    /// `step` of the `of` sampler steps are done.
    Sampling { step: usize, of: usize },
    /// The latents are being decoded (VAE, vocoder).
    Decoding,
}

/// Receives the [`Stage`]s of a generation (on the generating thread).
pub type StageObserver = Arc<dyn Fn(Stage) + Send + Sync>;

/// Cooperative cancellation, checked between sampler steps; also the channel through which
/// a generator reports its progress ([`Stage`]) to whoever holds the handle.
#[derive(Clone, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    observer: Option<StageObserver>,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("cancelled", &self.is_cancelled())
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }
    /// A handle sharing this one's cancellation flag whose [`Cancel::report`] calls
    /// `observer`.
    pub fn with_observer(&self, observer: StageObserver) -> Self {
        Self {
            flag: self.flag.clone(),
            observer: Some(observer),
        }
    }
    /// Tell the observer (if any) where the generation stands.
    pub fn report(&self, stage: Stage) {
        if let Some(observer) = &self.observer {
            observer(stage);
        }
    }
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst)
    }
    pub fn reset(&self) {
        self.flag.store(false, Ordering::SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    /// `Err(Error::Aborted)` once cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Aborted)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn an_observed_handle_shares_the_flag_and_reports_stages() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let base = Cancel::new();
        let observed = base.with_observer(Arc::new(move |st| s.lock().unwrap().push(st)));
        base.report(Stage::Features); // no observer: nothing
        observed.report(Stage::Features);
        observed.report(Stage::Sampling { step: 1, of: 2 });
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Stage::Features, Stage::Sampling { step: 1, of: 2 }]
        );
        base.cancel();
        assert!(observed.is_cancelled() && observed.check().is_err());
        observed.reset();
        assert!(!base.is_cancelled());
    }
}
