//! # mmaudio — MMAudio in Rust
//!
//! The core library of gst-mmaudio: a candle implementation of MMAudio (Cheng et al.,
//! "Taming Multimodal Joint Training for High-Quality Video-to-Audio Synthesis",
//! arXiv 2412.15322; official code hkchengrex/MMAudio @ 974010a), with no GStreamer
//! dependency.
//!
//! Data flows one way: frames → [`features`] (frame sampling, CLIP, Synchformer, text) →
//! [`net`] + [`sampler`] (flow matching with classifier-free guidance) → [`vae`] +
//! [`vocoder`] (latents → mel → waveform) → windowing/crossfade.
//!
//! Modules are layered, and imports only go downwards:
//!
//! 1. plain data: [`request`] (frames, per-window settings, cancellation), [`config`],
//!    [`error`];
//! 2. the models: [`features`], [`net`], [`sampler`], [`vae`], [`vocoder`],
//!    [`audio_decoder`], with [`weights`] and [`model_dir`] to load them;
//! 3. the generator interface [`generator`] and the MMAudio composition [`model`] that
//!    implements it;
//! 4. one model per process and one sampler worker per device that batches the windows of
//!    many streams: [`shared`], [`batch`];
//! 5. the window engine [`window`], which drives any [`generator::AudioGenerator`].
//!
//! Module and variable paths mirror the official checkpoint keys, so the official `.pth`
//! files (and their safetensors conversions) load without renaming, through [`weights`].

pub mod audio_decoder;
pub mod batch;
pub mod bench;
pub mod config;
pub mod cpu;
pub mod device;
pub mod error;
pub mod features;
pub mod fetch;
pub mod generator;
pub mod mel;
pub mod model;
pub mod model_dir;
pub mod net;
pub mod nn;
pub mod opcount;
pub mod ops;
pub mod parity;
pub mod request;
pub mod rng;
pub mod sampler;
pub mod shared;
pub mod test_model;
pub mod vae;
pub mod vocoder;
pub mod weights;
pub mod window;

pub use config::{Mode, NetConfig, SequenceConfig, Variant};
pub use error::{Error, Result};
