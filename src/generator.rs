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
pub trait AudioGenerator: Send {
    /// Output sample rate (16 000 or 44 100 for MMAudio).
    fn sample_rate(&self) -> u32;
    /// Whether this generator wants frames prepared on arrival
    /// ([`crate::features::preprocess::prepare_frame`]) instead of full-size RGB.
    fn wants_prepared_frames(&self) -> bool {
        false
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
    /// Returns `Err(Error::Aborted)` if `cancel` fires during the work.
    fn generate(&mut self, req: &WindowRequest, cancel: &Cancel) -> Result<Vec<f32>>;
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
