//! The subcommands that run GStreamer pipelines (feature `gst`); the others live in
//! `main.rs`.

pub mod generate;
pub mod spectrogram;
