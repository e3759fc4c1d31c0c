//! The generator interface: one window of video frames (+ prompt) → one window of audio.
//!
//! The window engine and the GStreamer element talk to generation only through
//! [`AudioGenerator`], so the streaming logic can be tested with cheap fake generators and
//! the real MMAudio generator ([`crate::model::MmAudio`], loaded by
//! [`crate::model::load_generator`]) plugs in unchanged. The plain data a request carries
//! lives below this interface, in [`crate::request`].

use crate::config::Variant;
use crate::error::Result;
use crate::request::{Cancel, WindowRequest};
use std::path::PathBuf;

/// Anything that turns a window request into audio.
///
/// A generator serves one stream at a time and may carry state between its windows: the
/// final latents of the previous window (continuation mode holds them by inpainting, see
/// [`crate::request::Continuation`]) and per-frame feature caches keyed by
/// [`crate::request::VideoFrame::id`]. [`reset`](Self::reset) forgets that state; the
/// window engine's users call it before a stream's first window.
pub trait AudioGenerator: Send {
    /// Output sample rate (16 000 or 44 100 for MMAudio).
    fn sample_rate(&self) -> u32;
    /// Whether this generator wants frames prepared on arrival
    /// ([`crate::features::preprocess::prepare_frame`]) instead of full-size RGB.
    fn wants_prepared_frames(&self) -> bool {
        false
    }
    /// Whether the generator only looks at the frames that MMAudio's 8 fps and 25 fps
    /// sampling ([`crate::features::frames::plan_frames`]) picks in each window: the window
    /// engine may then drop the others as they arrive (memory and CPU independent of the
    /// input frame rate). A generator that looks at every frame keeps the default `false`.
    fn picks_frames(&self) -> bool {
        false
    }
    /// Output samples per latent: continuation windows are placed on this grid
    /// ([`crate::request::Continuation`]). MMAudio: 2 mel frames = 512 samples at 16 kHz
    /// (32 ms), 1024 at 44.1 kHz (23.2 ms); the default follows that rule
    /// ([`default_latent_period`]).
    fn latent_period(&self) -> u32 {
        default_latent_period(self.sample_rate())
    }
    /// Forget everything carried from earlier windows (a new stream starts).
    fn reset(&mut self) {}
    /// Hits and misses of the per-frame feature caches since the last reset, if any.
    fn cache_stats(&self) -> Option<CacheStats> {
        None
    }
    /// What was loaded, for the messages that report it (the element's PROGRESS/INFO
    /// messages, `mmaudio generate`'s summary).
    fn describe(&self) -> ModelInfo {
        ModelInfo {
            name: "custom generator".into(),
            variant: None,
            sample_rate: self.sample_rate(),
            device: None,
            precision: None,
        }
    }
    /// Generate exactly `req.num_samples(self.sample_rate())` mono samples in [-1, 1].
    /// Returns `Err(Error::Aborted)` if `cancel` fires during the work. A continuation
    /// request whose known latents the generator does not hold is an error.
    fn generate(&mut self, req: &WindowRequest, cancel: &Cancel) -> Result<Vec<f32>>;
}

/// MMAudio's latent period: 512 samples at 16 kHz (mel hop 256 × 2), 1024 at 44.1 kHz (mel
/// hop 512 × 2); other rates get 512 below 32 kHz and 1024 from there on.
pub fn default_latent_period(rate: u32) -> u32 {
    if rate < 32_000 { 512 } else { 1024 }
}

/// Feature-cache counters of a generator (see [`AudioGenerator::cache_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// CLIP image features: picked source frames found in the cache / computed.
    pub clip_hits: u64,
    pub clip_misses: u64,
    /// Synchformer features: 16-frame segments found in the cache / computed.
    pub sync_hits: u64,
    pub sync_misses: u64,
}

impl CacheStats {
    /// Hits / (hits + misses), or `None` before any lookup.
    pub fn clip_hit_rate(&self) -> Option<f64> {
        rate(self.clip_hits, self.clip_misses)
    }
    pub fn sync_hit_rate(&self) -> Option<f64> {
        rate(self.sync_hits, self.sync_misses)
    }
    /// Counters accumulated since `earlier`.
    pub fn since(&self, earlier: &CacheStats) -> CacheStats {
        CacheStats {
            clip_hits: self.clip_hits - earlier.clip_hits.min(self.clip_hits),
            clip_misses: self.clip_misses - earlier.clip_misses.min(self.clip_misses),
            sync_hits: self.sync_hits - earlier.sync_hits.min(self.sync_hits),
            sync_misses: self.sync_misses - earlier.sync_misses.min(self.sync_misses),
        }
    }
}

fn rate(hits: u64, misses: u64) -> Option<f64> {
    (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64)
}

/// What a generator is loaded from: the element's `model-dir`, `variant`, `device` and
/// `precision` properties (or the CLI's equivalents).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Folder with the weight files (official names, see `Variant::net_file` etc.).
    pub model_dir: PathBuf,
    /// `None` (auto): the variant the folder holds (see
    /// [`crate::model_dir::ModelDir::choose_variant`], which also refuses a requested
    /// variant that contradicts the folder's manifest).
    pub variant: Option<Variant>,
    /// `auto`, `cpu` or `cuda:N` (see `crate::device::select_device`).
    pub device: String,
    /// `auto`, `f32`, `f16` or `bf16` (see `crate::device::select_dtype`).
    pub precision: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            model_dir: PathBuf::new(),
            variant: None,
            device: "auto".into(),
            precision: "auto".into(),
        }
    }
}

/// What a loaded generator is and runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// e.g. `MMAudio small_16k`, or `MMAudio small_16k (tiny random test model)`.
    pub name: String,
    pub variant: Option<Variant>,
    pub sample_rate: u32,
    /// `cpu`, `cuda:0`, ... (what `device=auto` chose).
    pub device: Option<String>,
    /// `f32`, `f16` or `bf16` (what `precision=auto` chose).
    pub precision: Option<String>,
}

impl std::fmt::Display for ModelInfo {
    /// `MMAudio small_16k, 16000 Hz, on cpu in f32`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {} Hz", self.name, self.sample_rate)?;
        if let Some(d) = &self.device {
            write!(f, ", on {d}")?;
        }
        if let Some(p) = &self.precision {
            write!(f, " in {p}")?;
        }
        Ok(())
    }
}
