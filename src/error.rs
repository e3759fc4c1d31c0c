//! Error type of the core library.
//!
//! Every error that concerns a file names it: a user who points the element at a
//! wrong folder must be told which file and which tensor is the problem.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A weight file could not be opened or parsed.
    #[error("cannot read weights file {path}: {reason}")]
    WeightFile { path: PathBuf, reason: String },

    /// A tensor the model needs is not in the file.
    #[error("weights file {path}: missing tensor `{key}` (expected shape {expected:?})")]
    MissingTensor {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
    },

    /// A tensor has the wrong shape for the configured model.
    #[error(
        "weights file {path}: tensor `{key}` has shape {actual:?}, expected {expected:?}{hint}"
    )]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
        /// Extra explanation, e.g. which variant the file looks like.
        hint: String,
    },

    /// The file holds tensors that do not belong to the requested model (wrong variant or
    /// wrong file).
    #[error("weights file {path}: {reason}")]
    WrongModel { path: PathBuf, reason: String },

    /// A required file of a model folder is absent.
    #[error("model file not found: {path} ({what})")]
    MissingFile { path: PathBuf, what: String },

    /// Downloading weights failed; the message names every URL that failed and where to
    /// place the files by hand.
    #[error("{0}")]
    Fetch(String),

    /// A file's content does not match its reference checksum.
    #[error("checksum mismatch for {path}: expected {algo} {expected}, got {actual}{hint}")]
    Checksum {
        path: PathBuf,
        algo: String,
        expected: String,
        actual: String,
        /// Extra explanation (what the file looks like, what to do).
        hint: String,
    },

    /// Invalid argument or configuration.
    #[error("{0}")]
    Config(String),

    /// Invalid input data (frames, features, durations).
    #[error("{0}")]
    Input(String),

    /// Work was aborted on request (flush, shutdown).
    #[error("aborted")]
    Aborted,

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }
}
