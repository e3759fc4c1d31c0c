//! The machine-readable result of a run (`--summary FILE`, written by default for batch
//! runs): one entry per file with its status, error, duration, windows, processing time
//! and real-time factor. It is rewritten (atomically) after every file, so a run killed
//! half-way still leaves the record of what it finished.

use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Written in full.
    Done,
    /// The output existed already (a finished earlier run): left alone.
    Skipped,
    /// An error; nothing was written under the output's name.
    Failed,
    /// Stopped by SIGINT/SIGTERM (a single-file run keeps the audio generated so far,
    /// clipped to a window end; a batch run writes nothing for the file).
    Interrupted,
    /// Not started: the run was stopped before.
    Pending,
}

/// One file of the run.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub input: Option<PathBuf>,
    pub output: PathBuf,
    pub status: Status,
    pub error: Option<String>,
    /// Seconds of audio written (for an interrupted single-file run: up to where it
    /// stopped).
    pub duration_s: Option<f64>,
    pub windows: Option<u64>,
    /// Wall-clock seconds spent on the file (model load included when it happened here).
    pub processing_s: Option<f64>,
    /// `processing_s / duration_s` (< 1 is faster than real time).
    pub real_time_factor: Option<f64>,
    pub samples: Option<u64>,
    /// Rate and channels of the written soundtrack.
    pub sample_rate: Option<u32>,
    pub channels: Option<u32>,
    /// The model's rate (before any `--sample-rate` resampling).
    pub model_sample_rate: Option<u32>,
    pub variant: String,
    /// What the element loaded: variant, rate, device and precision in use.
    pub model: Option<String>,
    /// What became of the input's own audio: `drop`, `mix`, `track`, or `none` (the input
    /// has no audio track).
    pub original_audio: String,
    /// Seconds the model load took, when it happened during this file.
    pub load_s: Option<f64>,
}

impl FileReport {
    pub fn new(input: Option<PathBuf>, output: PathBuf, variant: String) -> Self {
        Self {
            input,
            output,
            status: Status::Pending,
            error: None,
            duration_s: None,
            windows: None,
            processing_s: None,
            real_time_factor: None,
            samples: None,
            sample_rate: None,
            channels: None,
            model_sample_rate: None,
            variant,
            model: None,
            original_audio: String::new(),
            load_s: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardInfo {
    pub index: usize,
    pub count: usize,
    pub source: &'static str,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub done: usize,
    pub skipped: usize,
    pub failed: usize,
    pub interrupted: usize,
    pub pending: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub version: &'static str,
    /// Seconds since the Unix epoch at the start of the run.
    pub started_unix_s: f64,
    pub shard: ShardInfo,
    /// Jobs of the whole list (all shards) and of this shard.
    pub jobs_total: usize,
    pub jobs_in_shard: usize,
    /// `--original-audio` (the default, `drop`, leaves the input's audio out).
    pub original_audio: String,
    pub counts: Counts,
    /// Set when the run was stopped by a signal.
    pub interrupted_by: Option<String>,
    pub files: Vec<FileReport>,
}

impl Summary {
    pub fn count(&mut self) {
        let mut c = Counts::default();
        for f in &self.files {
            match f.status {
                Status::Done => c.done += 1,
                Status::Skipped => c.skipped += 1,
                Status::Failed => c.failed += 1,
                Status::Interrupted => c.interrupted += 1,
                Status::Pending => c.pending += 1,
            }
        }
        self.counts = c;
    }

    /// Write as pretty JSON to `path` through a temporary file and a rename.
    pub fn write(&mut self, path: &Path) -> Result<()> {
        self.count();
        let text = serde_json::to_string_pretty(self)? + "\n";
        let tmp = super::output::partial_path(path);
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// The default summary file of a batch run: `mmaudio-summary.json` in `dir`, with the
/// shard in the name when the list is sharded (so shards never write the same file).
pub fn default_path(dir: &Path, shard: &ShardInfo) -> PathBuf {
    if shard.count > 1 {
        dir.join(format!(
            "mmaudio-summary.shard-{}-of-{}.json",
            shard.index, shard.count
        ))
    } else {
        dir.join("mmaudio-summary.json")
    }
}
