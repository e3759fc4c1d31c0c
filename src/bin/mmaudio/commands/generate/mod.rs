//! `mmaudio generate`: soundtracks for one file, many files (several inputs, folders, a
//! JSON Lines manifest), or a share of a manifest on one machine of many. Each file runs
//! through a GStreamer pipeline around the `mmaudiogen` element (`pipeline.rs`); the
//! element — and so the model — is made once and moved from file to file.
//!
//! Promises (each has a test in `tests/generate.rs`):
//! - Nothing is written under an output's name until the file is complete: the pipeline
//!   writes `NAME.partial` and renames it at the end (`output.rs`). A failed, killed or
//!   aborted run leaves at most the `.partial` file; an existing output is replaced only
//!   with `-y`, and only by a complete file.
//! - SIGINT and SIGTERM are the same (`signals.rs`, `session.rs`): once, a single-file run
//!   finishes the window being generated and writes a valid file whose soundtrack and video
//!   end together at that window's end; a batch run stops at once, keeping every finished
//!   file and the summary; twice, nothing more is written.
//! - A batch run skips outputs that exist (so a killed run resumes where it was), keeps
//!   going after a failed file, writes a JSON summary (`summary.rs`) after every file and
//!   exits non-zero if a file failed (1) or it was interrupted (128 + signal).
//! - `--shard-index/--shard-count`, or the variables Kubernetes Indexed Jobs and Slurm job
//!   arrays set, take a stable round-robin share of the list (`jobs.rs`).

mod jobs;
mod output;
mod pipeline;
mod progress;
mod session;
mod signals;
mod summary;

use crate::gst_env;
use anyhow::{Context, Result, anyhow, bail};
use gst::prelude::*;
use jobs::{Job, Naming, Shard};
use mmaudio::Variant;
use mmaudio::model_dir::ModelDir;
use output::{Output, Partial, output_kind};
use pipeline::{AudioFormat, OriginalAudio, Trim};
use progress::Progress;
use session::Ending;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;
use summary::{FileReport, Status, Summary};

/// Variant used when neither `--variant` nor the folder's manifest names one.
const DEFAULT_VARIANT: Variant = Variant::Large44kV2;

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Input videos (any file GStreamer can decode) or folders of videos. One input and
    /// no --output-dir: a single-file run. Several, a folder, or --output-dir: a batch
    /// run. None, with --duration: audio from the prompt alone (text-only).
    pub inputs: Vec<PathBuf>,
    /// Output file of a single-file run: .wav or .flac get the soundtrack alone; .mp4,
    /// .mov, .mkv or .webm get the input's video stream (copied, not re-encoded) with the
    /// new soundtrack (AAC in .mp4/.mov, lossless FLAC in .mkv, Opus in .webm). Default:
    /// <IN stem>.mmaudio.wav next to IN (text-only: text-only.mmaudio.wav).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Batch: folder for the outputs, named <input stem>.<--output-ext> (created if
    /// needed). Without it outputs go next to their inputs as <stem>.mmaudio.<ext>.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Batch: type of the outputs not named by a manifest (wav, flac, mp4, mov, mkv,
    /// webm).
    #[arg(long, default_value = "wav")]
    pub output_ext: String,
    /// Batch: a JSON Lines file, one object per line: {"input": ..., "output": ...,
    /// "prompt": ..., "negative_prompt": ..., "seed": ..., "variant": ...} (only "input"
    /// is required; relative inputs are relative to the manifest's folder, relative
    /// outputs to --output-dir, else to the manifest's folder).
    #[arg(long, conflicts_with = "inputs")]
    pub manifest: Option<PathBuf>,
    /// Write the JSON summary (per file: status, error, duration, windows, processing
    /// time, real-time factor) here. Batch default: mmaudio-summary.json (with the shard
    /// in the name when sharded) in --output-dir, else in the manifest's folder, else here.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Batch: this process takes files i, i+N, i+2N, ... of the list (0-based). Default:
    /// MMAUDIO_SHARD_INDEX, a Kubernetes Indexed Job's JOB_COMPLETION_INDEX, or a Slurm
    /// array's SLURM_ARRAY_TASK_ID (minus SLURM_ARRAY_TASK_MIN).
    #[arg(long)]
    pub shard_index: Option<usize>,
    /// Batch: number of shards N. Default: MMAUDIO_SHARD_COUNT, or SLURM_ARRAY_TASK_COUNT.
    #[arg(long)]
    pub shard_count: Option<usize>,
    /// Replace existing outputs (a single-file run refuses to, a batch run skips them as
    /// already done). The old file is replaced only once the new one is complete.
    #[arg(short = 'y', long)]
    pub overwrite: bool,
    /// Model folder (official layout, see `mmaudio fetch-weights`). Default:
    /// $MMAUDIO_MODEL_DIR, else ./models.
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Model variant: small_16k, small_44k, medium_44k, large_44k, large_44k_v2 (or the
    /// element's spelling, small-16k, ...). Default: the one named by the folder's
    /// mmaudio.json, else large_44k_v2.
    #[arg(long)]
    pub variant: Option<Variant>,
    /// Text describing the wanted sound.
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Text describing sounds to avoid.
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Seconds of the input to use from --start on, as the official demo's --duration
    /// (without an input: seconds of audio from the prompt alone).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds into the input to start at. Into a .mp4/.mov/.mkv/.webm (the video is
    /// copied) the start moves back to the key frame at or before it.
    #[arg(long)]
    pub start: Option<f64>,
    /// Random seed (window k uses seed + k).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Flow-matching (Euler) steps per window: fewer is faster and coarser.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub num_steps: u32,
    /// Classifier-free guidance strength (1.0 disables guidance).
    #[arg(long, default_value_t = 4.5)]
    pub cfg_strength: f64,
    /// Compute device: auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Precision of the networks: auto (bf16 on CUDA, f32 on the CPU), f32, f16 or bf16.
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Ignore the semantic (CLIP) video features; keep only the synchronisation features.
    #[arg(long)]
    pub mask_away_clip: bool,
    /// With an input: ignore the video content, use it only for the timing (text-to-audio).
    #[arg(long)]
    pub text_only: bool,
    /// Length of one generation window in milliseconds (MMAudio is trained on 8000).
    #[arg(long, default_value_t = 8000)]
    pub window_duration: u32,
    /// Crossfade between consecutive windows in milliseconds (at most half a window).
    #[arg(long, default_value_t = 1000)]
    pub overlap: u32,
    /// The input's own audio: drop (the output has the new soundtrack only), mix (mixed
    /// with the new soundtrack, which is at --mix-gain-db), or track (kept as the first
    /// audio track, the new soundtrack second; containers only).
    #[arg(long, value_enum, default_value_t = OriginalAudio::Drop)]
    pub original_audio: OriginalAudio,
    /// Gain of the new soundtrack in a mix, in dB (the original stays at 0 dB).
    #[arg(long, default_value_t = -6.0, allow_negative_numbers = true)]
    pub mix_gain_db: f64,
    /// Sample rate of the written soundtrack (default: the model's, 16000 or 44100, where
    /// the codec takes it — Opus does not take 44100 and gets 48000; a mix: the original's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(8000..=192_000))]
    pub sample_rate: Option<u32>,
    /// Channels of the written soundtrack: 1 or 2 (default: 1; a mix: the original's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=2))]
    pub channels: Option<u32>,
    /// Bitrate of a lossy soundtrack (AAC in .mp4/.mov, Opus in .webm) in kbit/s
    /// (default: the encoder's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(6..=512))]
    pub audio_bitrate: Option<u32>,
    /// No progress bar; lines instead.
    #[arg(long)]
    pub no_progress: bool,
    /// Without a progress bar: seconds between the lines that report progress within a
    /// window (0: every stage and sampler step).
    #[arg(long, default_value_t = 10.0)]
    pub log_interval: f64,
}

impl GenerateArgs {
    /// A batch run (as opposed to one file): several inputs, a folder, a manifest or
    /// --output-dir.
    fn is_batch(&self) -> bool {
        self.manifest.is_some()
            || self.output_dir.is_some()
            || self.inputs.len() > 1
            || self.inputs.iter().any(|p| p.is_dir())
    }
}

/// The element's enum nick of a variant (`small_16k` → `small-16k`).
fn variant_nick(v: Variant) -> String {
    v.name().replace('_', "-")
}

/// Check the arguments that need neither GStreamer nor the file system.
fn check_common(a: &GenerateArgs) -> Result<()> {
    if !["auto", "f32", "f16", "bf16"].contains(&a.precision.as_str()) {
        bail!(
            "invalid --precision `{}` (auto, f32, f16 or bf16)",
            a.precision
        );
    }
    if !(a.cfg_strength.is_finite() && (0.0..=100.0).contains(&a.cfg_strength)) {
        bail!("--cfg-strength must be within 0..100");
    }
    mmaudio::window::WindowConfig::from_millis(16_000, a.window_duration as u64, a.overlap as u64)
        .map_err(|e| anyhow!("invalid --window-duration/--overlap: {e}"))?;
    if a.window_duration > 60_000 || a.overlap > 30_000 {
        bail!("--window-duration is at most 60000 ms and --overlap at most 30000 ms");
    }
    if let Some(d) = a.duration
        && !(d.is_finite() && (0.001..=36_000.0).contains(&d))
    {
        bail!("invalid --duration {d}: give seconds, from 0.001 to 36000");
    }
    if let Some(s) = a.start
        && !(s.is_finite() && s >= 0.0)
    {
        bail!("invalid --start {s}: give seconds from the start of the input, 0 or more");
    }
    if !(a.mix_gain_db.is_finite() && (-100.0..=40.0).contains(&a.mix_gain_db)) {
        bail!("--mix-gain-db must be within -100..40");
    }
    if !(a.log_interval.is_finite() && a.log_interval >= 0.0) {
        bail!("--log-interval must be 0 or more seconds");
    }
    Ok(())
}

/// Check what an output type allows (`--original-audio track`, `--audio-bitrate`, the
/// Opus rates, text-only).
fn check_output_options(
    a: &GenerateArgs,
    out: &Path,
    kind: &Output,
    text_only: bool,
) -> Result<()> {
    if text_only && matches!(kind, Output::Mux { .. }) {
        bail!("text-only generation writes audio only: give an output ending in .wav or .flac");
    }
    if text_only && a.original_audio != OriginalAudio::Drop {
        bail!(
            "--original-audio {} needs an input video",
            a.original_audio.name()
        );
    }
    if a.original_audio == OriginalAudio::Track && !matches!(kind, Output::Mux { .. }) {
        bail!(
            "--original-audio track adds a second audio track, which {} cannot hold: write \
             .mp4, .mov, .mkv or .webm, or use --original-audio mix",
            out.display()
        );
    }
    if a.audio_bitrate.is_some() && !kind.lossy() {
        bail!(
            "--audio-bitrate is for lossy soundtracks (AAC in .mp4/.mov, Opus in .webm); {} \
             is lossless",
            out.display()
        );
    }
    if let (Output::Mux { audio: "opus", .. }, Some(r)) = (kind, a.sample_rate)
        && ![8000, 12_000, 16_000, 24_000, 48_000].contains(&r)
    {
        bail!("Opus (.webm) takes 8000, 12000, 16000, 24000 or 48000 Hz, not --sample-rate {r}");
    }
    Ok(())
}

/// The model folder: --model-dir, else $MMAUDIO_MODEL_DIR, else ./models.
fn model_dir_arg(a: &GenerateArgs) -> PathBuf {
    a.model_dir
        .clone()
        .or_else(|| std::env::var_os("MMAUDIO_MODEL_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("models"))
}

/// Model folder and variant, checked before GStreamer starts (clear errors early).
fn resolve_model(dir: &Path, wanted: Option<Variant>) -> Result<Variant> {
    let fetch_hint = |v: Variant| {
        format!(
            "download the weights with `mmaudio fetch-weights --variant {v} --model-dir {}` (see \
             docs/weights.md to place them by hand), or pass --model-dir / set MMAUDIO_MODEL_DIR",
            dir.display()
        )
    };
    if !dir.is_dir() {
        bail!(
            "model folder {} does not exist: {}",
            dir.display(),
            fetch_hint(wanted.unwrap_or(DEFAULT_VARIANT))
        );
    }
    let md = ModelDir::open(dir)?;
    // What the folder holds wins; a contradicting request is refused (ModelDir says why).
    let variant = md.choose_variant(wanted)?;
    if let Err(e) = md.resolve_all(variant) {
        bail!(
            "model folder {} is incomplete for {variant}: {e}",
            dir.display()
        );
    }
    Ok(variant)
}

/// The run's job list and whether it is a batch.
fn make_jobs(a: &GenerateArgs) -> Result<(Vec<Job>, bool)> {
    if !a.is_batch() {
        if a.output_ext != "wav" {
            bail!("--output-ext is for batch runs; name the output with -o");
        }
        if a.shard_index.is_some() || a.shard_count.is_some() {
            bail!("--shard-index/--shard-count are for batch runs (a manifest or several inputs)");
        }
        let job = match a.inputs.first() {
            None => {
                if a.duration.is_none() {
                    bail!(
                        "no input video: give one (`mmaudio generate in.mp4 -o out.mp4`), or \
                         --duration SECONDS to generate audio from the prompt alone"
                    );
                }
                if a.start.is_some() {
                    bail!("--start needs an input video");
                }
                Job {
                    input: None,
                    output: a
                        .output
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("text-only.mmaudio.wav")),
                    prompt: None,
                    negative_prompt: None,
                    seed: None,
                    variant: None,
                    line: None,
                }
            }
            Some(input) => {
                if !input.exists() {
                    bail!("input file {} does not exist", input.display());
                }
                if !input.is_file() {
                    bail!("input {} is not a file", input.display());
                }
                let naming = Naming {
                    output_dir: None,
                    ext: "wav".into(),
                };
                Job {
                    input: Some(input.clone()),
                    output: a.output.clone().unwrap_or_else(|| naming.output_for(input)),
                    prompt: None,
                    negative_prompt: None,
                    seed: None,
                    variant: None,
                    line: None,
                }
            }
        };
        jobs::check_outputs(std::slice::from_ref(&job))?;
        return Ok((vec![job], false));
    }
    if a.output.is_some() {
        bail!(
            "-o names the output of a single file: with several inputs, a folder or a manifest \
             use --output-dir (or \"output\" in the manifest)"
        );
    }
    let ext = a.output_ext.trim_start_matches('.').to_ascii_lowercase();
    output_kind(Path::new(&format!("x.{ext}")))
        .map_err(|_| anyhow!("--output-ext {ext}: use {}", output::EXTENSIONS))?;
    let naming = Naming {
        output_dir: a.output_dir.clone(),
        ext,
    };
    let list = match &a.manifest {
        Some(m) => {
            let text = std::fs::read_to_string(m)
                .with_context(|| format!("reading the manifest {}", m.display()))?;
            jobs::from_manifest(&text, m, &naming)?
        }
        None => {
            if a.inputs.is_empty() {
                bail!("no input: give files, folders or --manifest FILE");
            }
            jobs::from_inputs(&a.inputs, &naming)?
        }
    };
    jobs::check_outputs(&list)?;
    Ok((list, true))
}

/// What one file's run gives back.
struct Finished {
    status: Status,
    stats: session::RunStats,
    samples: u64,
    model_rate: u32,
    first_pts: Option<u64>,
    /// Rate and channels written.
    written: (u32, u32),
    /// What the element says it loaded (`MMAudio small_16k, 16000 Hz, on cpu in f32`).
    model: Option<String>,
}

/// Configure the (kept) generator for a job.
fn configure_generator(
    g: &gst::Element,
    a: &GenerateArgs,
    job: &Job,
    model_dir: &Path,
    variant: Variant,
) -> Result<()> {
    g.set_property("model-dir", pipeline::path_str(model_dir)?);
    g.set_property_from_str("variant", &variant_nick(variant));
    g.set_property("device", a.device.as_str());
    g.set_property_from_str("precision", &a.precision);
    g.set_property("prompt", job.prompt.as_deref().unwrap_or(a.prompt.as_str()));
    g.set_property(
        "negative-prompt",
        job.negative_prompt
            .as_deref()
            .unwrap_or(a.negative_prompt.as_str()),
    );
    g.set_property("num-steps", a.num_steps);
    g.set_property("cfg-strength", a.cfg_strength);
    g.set_property("seed", job.seed.unwrap_or(a.seed));
    g.set_property("mask-away-clip", a.mask_away_clip);
    g.set_property("text-only", a.text_only || job.input.is_none());
    g.set_property("window-duration", a.window_duration);
    g.set_property("overlap", a.overlap);
    // Offline: a slow window only delays the file, it is not "late".
    g.set_property("processing-latency", 3_600_000u32);
    Ok(())
}

/// Generate one file. `Err`: the file failed (nothing written under its name).
#[allow(clippy::too_many_arguments)]
fn run_job(
    a: &GenerateArgs,
    job: &Job,
    batch: bool,
    generator: &gst::Element,
    model_dir: &Path,
    variant: Variant,
    report: &mut FileReport,
    progress: &mut Progress,
) -> Result<Finished> {
    let kind = output_kind(&job.output)?;
    check_output_options(a, &job.output, &kind, job.input.is_none())?;
    if let Some(input) = &job.input
        && !input.is_file()
    {
        bail!("input file {} does not exist", input.display());
    }
    match job.output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !parent.is_dir() => {
            if batch {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            } else {
                bail!("output folder {} does not exist", parent.display());
            }
        }
        _ => {}
    }
    let info = match &job.input {
        Some(input) => {
            let info = pipeline::probe_input(input)?;
            if info.video.is_none() {
                bail!(
                    "{} has no video stream (for audio from a prompt alone, leave out the \
                     input and give --duration)",
                    input.display()
                );
            }
            info
        }
        None => pipeline::InputInfo::default(),
    };
    let original = if info.audio.is_some() || job.input.is_none() {
        a.original_audio
    } else {
        OriginalAudio::Drop
    };
    report.original_audio = match (&job.input, &info.audio) {
        (Some(_), None) => "none".into(),
        (None, _) => "none".into(),
        _ => a.original_audio.name().into(),
    };
    if info.audio.is_none() && job.input.is_some() && a.original_audio != OriginalAudio::Drop {
        progress.say(&format!(
            "{} has no audio track: --original-audio {} has nothing to keep",
            job.name(),
            a.original_audio.name()
        ));
    }
    let trim = match (&job.input, a.start, a.duration) {
        (Some(_), None, None) | (None, _, _) => None,
        (Some(input), start, duration) => {
            let start_ns = (start.unwrap_or(0.0) * 1e9).round() as u64;
            if let Some(total) = info.duration
                && start_ns >= total.nseconds()
            {
                bail!(
                    "--start {:.3} is at or past the end of {} ({:.3} s)",
                    start.unwrap_or(0.0),
                    input.display(),
                    total.nseconds() as f64 / 1e9
                );
            }
            Some(Trim {
                start: gst::ClockTime::from_nseconds(start_ns),
                stop: duration
                    .map(|d| gst::ClockTime::from_nseconds(start_ns + (d * 1e9).round() as u64)),
                key_unit: matches!(kind, Output::Mux { .. }),
            })
        }
    };
    let expected = match (&trim, info.duration) {
        (Some(t), Some(d)) => Some(t.stop.map_or(d, |s| s.min(d)).saturating_sub(t.start)),
        (
            Some(Trim {
                stop: Some(s),
                start,
                ..
            }),
            None,
        ) => Some(s.saturating_sub(*start)),
        (None, d) if job.input.is_some() => d,
        _ => a
            .duration
            .map(|d| gst::ClockTime::from_nseconds((d * 1e9).round() as u64)),
    };

    let partial = Partial::new(&job.output)?;
    configure_generator(generator, a, job, model_dir, variant)?;
    let format = AudioFormat {
        rate: a.sample_rate,
        channels: a.channels,
        bitrate_kbps: a.audio_bitrate,
    };
    let plan = pipeline::Plan {
        input: job.input.as_deref(),
        info: info.clone(),
        text_only_s: if job.input.is_none() {
            a.duration
        } else {
            None
        },
        write_to: partial.path(),
        kind: kind.clone(),
        original,
        mix_gain_db: a.mix_gain_db,
        format,
        trim,
    };
    let built = pipeline::build(&plan, generator)?;
    let opts = session::RunOptions {
        finish_on_signal: !batch,
        trim,
        window_ms: a.window_duration,
        overlap_ms: a.overlap,
        duration: expected,
    };
    progress.set_message(&format!("loading {variant}"));
    let result = session::run(&built, generator, &opts, progress);
    // The written format, from the caps that reached the encoder.
    let written = written_format(&built.pipeline, &kind);
    session::teardown(&built.pipeline, generator);
    let stats = result?;
    let model = stats.model.clone();
    let c = &built.control;
    let samples = c.samples.load(Ordering::Relaxed);
    let model_rate = c.rate.load(Ordering::Relaxed) as u32;
    let first = c.first_pts.load(Ordering::Relaxed);
    let status = match stats.ending {
        Ending::Complete => {
            if samples == 0 {
                bail!("the pipeline ended without generating any audio");
            }
            partial.commit()?;
            Status::Done
        }
        Ending::Stopped { .. } => {
            partial.commit()?;
            Status::Interrupted
        }
        Ending::Aborted => {
            drop(partial);
            Status::Interrupted
        }
    };
    Ok(Finished {
        status,
        stats,
        samples,
        model_rate,
        first_pts: (first != u64::MAX).then_some(first),
        written: written.unwrap_or((model_rate, 1)),
        model,
    })
}

/// Rate and channels of the raw audio entering the soundtrack's encoder.
fn written_format(pipeline: &gst::Pipeline, kind: &Output) -> Option<(u32, u32)> {
    let name = pipeline::encoder_for(kind).ok()?;
    let mut it = pipeline.iterate_recurse();
    while let Ok(Some(e)) = it.next() {
        if e.factory().is_some_and(|f| f.name() == name)
            && let Some(caps) = e.static_pad("sink").and_then(|p| p.current_caps())
            && let Some(s) = caps.structure(0)
            && let (Ok(r), Ok(c)) = (s.get::<i32>("rate"), s.get::<i32>("channels"))
        {
            return Some((r as u32, c as u32));
        }
    }
    None
}

/// Run `mmaudio generate`; returns the process's exit status.
pub fn run(a: GenerateArgs) -> Result<i32> {
    check_common(&a)?;
    let (all_jobs, batch) = make_jobs(&a)?;
    for job in &all_jobs {
        let kind = output_kind(&job.output).with_context(|| match job.line {
            Some(n) => format!("manifest line {n}"),
            None => job.name(),
        })?;
        check_output_options(&a, &job.output, &kind, job.input.is_none())?;
    }
    let shard = if batch {
        Shard::resolve(a.shard_index, a.shard_count, &|k| std::env::var(k).ok())?
    } else {
        Shard::ALL
    };
    let model_dir = model_dir_arg(&a);
    let default_variant = resolve_model(&model_dir, a.variant)?;
    let mut variants = std::collections::HashMap::new();
    for job in &all_jobs {
        if let Some(v) = job.variant
            && !variants.contains_key(&v)
        {
            variants.insert(v, resolve_model(&model_dir, Some(v))?);
        }
    }
    mmaudio::device::select_device(&a.device)
        .map_err(|e| anyhow!("invalid --device `{}`: {e}", a.device))?;
    if !batch && !a.overwrite && all_jobs[0].output.exists() {
        bail!(
            "{} exists: give -y (--overwrite) to replace it (it is replaced only once the new \
             file is complete)",
            all_jobs[0].output.display()
        );
    }

    gst_env::init()?;
    gst_env::require_mmaudiogen()?;
    let mut needed: Vec<&'static str> = Vec::new();
    for job in &all_jobs {
        let kind = output_kind(&job.output)?;
        if let Output::Mux { audio: "aac", .. } = kind {
            pipeline::aac_encoder()?;
        }
        for e in pipeline::needed_elements(&kind, job.input.is_none(), a.original_audio) {
            if !needed.contains(&e) {
                needed.push(e);
            }
        }
    }
    gst_env::require_elements(&needed)?;

    let mine: Vec<(usize, &Job)> = all_jobs
        .iter()
        .enumerate()
        .filter(|(i, _)| shard.takes(*i))
        .collect();
    let summary_path = match (&a.summary, batch) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => {
            let dir = a
                .output_dir
                .clone()
                .or_else(|| {
                    a.manifest
                        .as_ref()
                        .and_then(|m| m.parent().map(Path::to_path_buf))
                })
                .unwrap_or_default();
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let info = summary::ShardInfo {
                index: shard.index,
                count: shard.count,
                source: shard.source,
            };
            Some(summary::default_path(&dir, &info))
        }
        (None, false) => None,
    };
    let mut summary = Summary {
        version: env!("CARGO_PKG_VERSION"),
        started_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        shard: summary::ShardInfo {
            index: shard.index,
            count: shard.count,
            source: shard.source,
        },
        jobs_total: all_jobs.len(),
        jobs_in_shard: mine.len(),
        original_audio: a.original_audio.name().into(),
        counts: Default::default(),
        interrupted_by: None,
        files: mine
            .iter()
            .map(|(_, j)| {
                let v = j.variant.map(|v| variants[&v]).unwrap_or(default_variant);
                FileReport::new(j.input.clone(), j.output.clone(), v.to_string())
            })
            .collect(),
    };
    if batch {
        let share = if shard.count > 1 {
            format!(
                "shard {} of {} (from {}): ",
                shard.index, shard.count, shard.source
            )
        } else {
            String::new()
        };
        eprintln!(
            "{share}{} of {} file(s); original audio: {}{}",
            mine.len(),
            all_jobs.len(),
            a.original_audio.name(),
            summary_path
                .as_ref()
                .map(|p| format!("; summary: {}", p.display()))
                .unwrap_or_default()
        );
    }

    signals::install();
    let generator = gst::ElementFactory::make("mmaudiogen")
        .name("gen")
        .build()
        .context("cannot create mmaudiogen")?;
    let show_bar = !a.no_progress && std::io::stderr().is_terminal();
    let log_interval = Duration::from_secs_f64(a.log_interval);
    let mut single_error: Option<anyhow::Error> = None;
    let mut loaded: Option<(Variant, String)> = None;
    let n = mine.len();
    for (k, (_, job)) in mine.iter().enumerate() {
        if signals::count() > 0 {
            break;
        }
        let report = &mut summary.files[k];
        let prefix = if batch {
            format!("[{}/{n}] ", k + 1)
        } else {
            String::new()
        };
        if batch && !a.overwrite && job.output.exists() {
            report.status = Status::Skipped;
            eprintln!(
                "{prefix}{}: {} exists, skipped",
                job.name(),
                job.output.display()
            );
            if let Some(p) = &summary_path {
                summary.write(p)?;
            }
            continue;
        }
        let variant = job.variant.map(|v| variants[&v]).unwrap_or(default_variant);
        let mut progress = Progress::new(show_bar, log_interval, prefix.clone());
        match &job.input {
            Some(i) => progress.say(&format!("{} → {}", i.display(), job.output.display())),
            None => progress.say(&format!(
                "text-only, {} s → {}",
                a.duration.unwrap_or_default(),
                job.output.display()
            )),
        }
        let result = run_job(
            &a,
            job,
            batch,
            &generator,
            &model_dir,
            variant,
            report,
            &mut progress,
        );
        progress.finish();
        match result {
            Ok(mut f) => {
                // The element (kept across files) says what it loaded only when it loads.
                match &f.model {
                    Some(m) => loaded = Some((variant, m.clone())),
                    None => {
                        f.model = loaded
                            .as_ref()
                            .filter(|(v, _)| *v == variant)
                            .map(|(_, m)| m.clone())
                    }
                }
                fill_report(report, &f);
                print_result(&prefix, job, &f, report, batch);
            }
            Err(e) => {
                report.status = Status::Failed;
                report.error = Some(format!("{e:#}"));
                if batch {
                    eprintln!("{prefix}{}: failed: {e:#}", job.name());
                } else {
                    single_error = Some(e);
                }
            }
        }
        if let Some(p) = &summary_path {
            summary.write(p)?;
        }
    }
    let _ = generator.set_state(gst::State::Null);
    let signal = signals::first();
    if let Some(sig) = signal {
        summary.interrupted_by = Some(signals::name(sig).into());
    }
    if let Some(p) = &summary_path {
        summary.write(p)?;
    }
    if let Some(e) = single_error {
        return Err(e);
    }
    summary.count();
    if batch {
        let c = &summary.counts;
        eprintln!(
            "{} done, {} skipped, {} failed{}{}",
            c.done,
            c.skipped,
            c.failed,
            if c.interrupted + c.pending > 0 {
                format!(", {} interrupted, {} not started", c.interrupted, c.pending)
            } else {
                String::new()
            },
            summary_path
                .as_ref()
                .map(|p| format!("; summary in {}", p.display()))
                .unwrap_or_default()
        );
    }
    if let Some(sig) = signal {
        return Ok(signals::exit_status(sig));
    }
    Ok(if summary.counts.failed > 0 { 1 } else { 0 })
}

fn fill_report(r: &mut FileReport, f: &Finished) {
    r.status = f.status;
    let secs = if f.model_rate > 0 {
        f.samples as f64 / f.model_rate as f64
    } else {
        0.0
    };
    if f.samples > 0 {
        r.duration_s = Some(secs);
        r.samples = Some(f.samples);
        r.model_sample_rate = Some(f.model_rate);
        r.sample_rate = Some(f.written.0);
        r.channels = Some(f.written.1);
    }
    r.windows = Some(f.stats.windows);
    r.processing_s = Some(f.stats.wall_s);
    r.real_time_factor = (secs > 0.0).then(|| f.stats.wall_s / secs);
    r.load_s = f.stats.load_s;
    r.model = f.model.clone();
    if f.stats.ending == Ending::Aborted {
        r.error = Some("stopped by a signal before the file was complete: nothing written".into());
        r.duration_s = None;
        r.samples = None;
    }
}

fn print_result(prefix: &str, job: &Job, f: &Finished, r: &FileReport, batch: bool) {
    let secs = r.duration_s.unwrap_or(0.0);
    let wall = f.stats.wall_s;
    let load = f.stats.load_s.unwrap_or(0.0);
    let original = match r.original_audio.as_str() {
        "drop" => "; the input's audio was dropped (--original-audio mix|track keeps it)",
        "mix" => "; mixed with the input's audio",
        "track" => "; the input's audio kept as the first track",
        _ => "",
    };
    let format = if (f.written.0, f.written.1) != (f.model_rate, 1) && f.model_rate > 0 {
        format!(
            ", written at {} Hz, {} channel(s)",
            f.written.0, f.written.1
        )
    } else {
        String::new()
    };
    match f.stats.ending {
        Ending::Complete if batch => eprintln!(
            "{prefix}{} → {}: done, {secs:.3} s, {} window(s), {wall:.1} s (real-time factor \
             {:.2}){format}{original}",
            job.name(),
            job.output.display(),
            f.stats.windows,
            if secs > 0.0 { wall / secs } else { 0.0 },
        ),
        Ending::Complete => println!(
            "wrote {}: {secs:.3} s of {} Hz audio ({} samples) from {} window(s) with {}; wall \
             time {wall:.1} s (model load {load:.1} s); real-time factor {:.2} ({:.2} without \
             the load; < 1 is faster than real time){format}{original}",
            job.output.display(),
            f.model_rate,
            f.samples,
            f.stats.windows,
            r.model.as_deref().unwrap_or(r.variant.as_str()),
            if secs > 0.0 { wall / secs } else { 0.0 },
            if secs > 0.0 {
                (wall - load) / secs
            } else {
                0.0
            },
        ),
        Ending::Stopped { end_ns } => println!(
            "stopped early: {} holds {secs:.3} s ({} samples, {} window(s)), from {:.3} s to \
             {:.3} s of the input{format}{original}",
            job.output.display(),
            f.samples,
            f.stats.windows,
            f.first_pts.unwrap_or(0) as f64 / 1e9,
            end_ns as f64 / 1e9,
        ),
        Ending::Aborted => eprintln!(
            "{prefix}{}: stopped before it was complete; nothing written to {}",
            job.name(),
            job.output.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_nicks() {
        assert_eq!(variant_nick(Variant::Large44kV2), "large-44k-v2");
        assert_eq!(variant_nick(Variant::Small16k), "small-16k");
    }
}
