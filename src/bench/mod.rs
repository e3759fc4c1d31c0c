//! Benchmarks at real model size with random weights (`mmaudio bench ...`).
//!
//! Speed is measured here, not in tests: each target runs warm-up iterations, then reports
//! the median of several timed runs and the process's peak RSS. Compare the numbers with the
//! official reference timings in `shared/anchors/` (see `BENCHMARKS.md`).

pub mod audio;
pub mod edge;
pub mod features;
pub mod net;
pub mod pipeline;
pub mod preprocess;
pub mod streams;

use crate::error::{Error, Result};
use candle_core::{DType, Device};
use serde::Serialize;
use std::time::Instant;

/// Options shared by all bench targets.
#[derive(Debug, Clone)]
pub struct BenchOpts {
    pub variant: crate::Variant,
    /// Mode for the VAE/vocoder targets (defaults to the variant's).
    pub mode: crate::Mode,
    pub duration: f64,
    pub steps: usize,
    pub warmup: usize,
    pub runs: usize,
    pub device: Device,
    pub dtype: DType,
    /// Number of frames for the CLIP vision bench.
    pub frames: usize,
    /// Options of the whole-generator targets (`e2e`, `stream`).
    pub pipeline: pipeline::PipelineOpts,
    /// `net`: also count the tensor operations of a sampler step (see [`crate::opcount`]).
    pub count_ops: bool,
}

/// One measured item.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub item: String,
    pub what: String,
    pub median_s: f64,
    pub min_s: f64,
    pub times_s: Vec<f64>,
    /// Process CPU time (user + system) of each timed run; `cpu / wall ≈ threads used`.
    pub cpu_s: Vec<f64>,
    pub peak_rss_mb: f64,
    pub device: String,
    pub dtype: String,
    /// CPU model and the instruction sets the CPU kernels and the GEMM ran with
    /// ([`crate::cpu::describe`]).
    pub cpu: String,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl BenchReport {
    pub fn new(item: &str, what: &str, times: Vec<f64>, opts: &BenchOpts) -> Self {
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = if sorted.is_empty() {
            f64::NAN
        } else if sorted.len() % 2 == 1 {
            sorted[sorted.len() / 2]
        } else {
            0.5 * (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2])
        };
        Self {
            item: item.into(),
            what: what.into(),
            median_s: median,
            min_s: sorted.first().copied().unwrap_or(f64::NAN),
            times_s: times,
            cpu_s: LAST_CPU.with(|c| c.take()),
            peak_rss_mb: peak_rss_mb(),
            device: device_name(&opts.device),
            dtype: format!("{:?}", opts.dtype).to_lowercase(),
            cpu: crate::cpu::describe(),
            extra: Default::default(),
        }
    }

    pub fn with(mut self, key: &str, v: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.into(), v.into());
        self
    }

    pub fn summary(&self) -> String {
        let cpu = if self.cpu_s.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.2}",
                self.cpu_s.iter().sum::<f64>() / self.times_s.iter().sum::<f64>()
            )
        };
        let mut line = format!(
            "{:<32} median {:>9.4} s  min {:>9.4} s  ({} runs, cpu/wall {})  peak RSS {:>7.0} MB  [{} {}]",
            self.item,
            self.median_s,
            self.min_s,
            self.times_s.len(),
            cpu,
            self.peak_rss_mb,
            self.device,
            self.dtype
        );
        // `bench stream --streams`: the times are per stream; say what they amount to
        if let (Some(total), Some(per)) = (
            self.extra.get("throughput_total").and_then(|v| v.as_f64()),
            self.extra
                .get("throughput_per_stream_mean")
                .and_then(|v| v.as_f64()),
        ) {
            line += &format!(
                "\n{:<32} throughput {total:.4} audio s per wall s in total, {per:.4} per stream",
                ""
            );
        }
        line
    }
}

pub fn device_name(d: &Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

/// Run `f` `warmup` times untimed, then `runs` times timed; `sync` is called after each run
/// so asynchronous devices are measured to completion.
pub fn time_runs(
    warmup: usize,
    runs: usize,
    device: &Device,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
        device.synchronize()?;
    }
    let mut times = Vec::with_capacity(runs);
    let mut cpu = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let c0 = process_cpu_s();
        let t = Instant::now();
        f()?;
        device.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
        cpu.push(process_cpu_s() - c0);
    }
    LAST_CPU.with(|c| c.replace(cpu));
    Ok(times)
}

thread_local! {
    /// CPU times of the last `time_runs`, picked up by the next `BenchReport::new`.
    static LAST_CPU: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// User + system CPU time of this process, in seconds.
pub fn process_cpu_s() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return f64::NAN;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

/// Peak resident set size of this process in MB (`VmHWM`), NaN where unavailable.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Targets of `mmaudio bench`.
pub const TARGETS: &[&str] = &[
    "net",
    "vae",
    "vocoder",
    "clip",
    "text",
    "sync",
    "preprocess",
    "e2e",
    "stream",
    "decoder-edge",
    "decoder-edge-wave",
];

/// Run one bench target.
pub fn run(target: &str, opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    match target {
        "net" => net::run(opts),
        "vae" => audio::run_vae(opts),
        "vocoder" => audio::run_vocoder(opts),
        "clip" => features::run_clip(opts),
        "text" => features::run_text(opts),
        "sync" => features::run_sync(opts),
        "preprocess" => preprocess::run(opts),
        "e2e" => pipeline::run_e2e(opts),
        "stream" if !opts.pipeline.streams.is_empty() => streams::run(opts),
        "stream" => pipeline::run_stream(opts),
        "decoder-edge" => edge::run(opts, false),
        "decoder-edge-wave" => edge::run(opts, true),
        other => Err(Error::config(format!(
            "unknown bench target `{other}` (one of: {})",
            TARGETS.join(", ")
        ))),
    }
}
