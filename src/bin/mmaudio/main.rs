//! `mmaudio`: soundtrack generation, weights, benchmarks and test models for gst-mmaudio.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mmaudio::bench::{self, BenchOpts};
use mmaudio::{Mode, Variant};
use std::path::PathBuf;

/// The system allocator, watched only inside `--count-ops` measurements (see
/// `mmaudio::opcount`).
#[global_allocator]
static ALLOC: mmaudio::opcount::CountingAlloc = mmaudio::opcount::CountingAlloc;

#[cfg(feature = "gst")]
mod commands;
#[cfg(feature = "gst")]
mod gst_env;
#[cfg(feature = "gst")]
use commands::{generate, spectrogram};

#[derive(Parser)]
#[command(
    name = "mmaudio",
    version,
    about = "MMAudio (video+text → synchronized audio) in Rust"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure speed and memory at real model size with random weights.
    Bench(BenchArgs),
    /// Download the official weights a variant needs into a model folder (resumable,
    /// checksum-verified, idempotent).
    FetchWeights(FetchWeightsArgs),
    /// Verify a model folder: every component present, checksums, and that each file holds
    /// the component the variant needs.
    CheckWeights(CheckWeightsArgs),
    /// Write a complete tiny model folder with random weights (every component, official
    /// formats and layout, plus an mmaudio.json manifest). It produces noise; it exists so
    /// tests and CI can run the whole pipeline in seconds.
    MakeTestModel(MakeTestModelArgs),
    /// Generate audio for a window of frames from a raw-video stand-in, without GStreamer:
    /// a quick check that a model folder works end to end.
    Selftest(SelftestArgs),
    /// Run the parity fixtures (golden outputs of the official code) on a device and
    /// precision: what `cargo test --test parity` runs, without a Rust toolchain.
    Parity(ParityArgs),
    /// Generate a soundtrack for a video file (or audio from a prompt alone) with a GStreamer
    /// pipeline around the mmaudiogen element: .wav/.flac get the audio, .mp4/.mov/.mkv/.webm
    /// the original video stream (not re-encoded) with the new soundtrack.
    #[cfg(feature = "gst")]
    Generate(generate::GenerateArgs),
    /// Draw a soundtrack as a PNG: the video's frames above the log-mel spectrogram of the
    /// audio, with time (s), frequency (Hz) and level (dB) scales and a title, e.g.
    /// docs/spectrogram.png (made from the output of `mmaudio generate`).
    #[cfg(feature = "gst")]
    Spectrogram(spectrogram::SpectrogramArgs),
}

#[derive(clap::Args)]
struct ParityArgs {
    /// Fixture folder (default: MMAUDIO_PARITY_DIR or ../shared/parity of the source tree).
    dir: Option<PathBuf>,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// f32 (checks the tolerances) or f16/bf16 (reports the errors against the f32 goldens).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Only cases whose name contains this or whose kind equals it (several, comma-separated:
    /// a case matching any of them runs).
    #[arg(long)]
    filter: Option<String>,
    /// Also write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run every model through its generic path (the code a GPU runs) instead of the fast
    /// CPU f32 kernels, with the same tolerances.
    #[arg(long)]
    generic_kernels: bool,
}

#[derive(clap::Args)]
struct MakeTestModelArgs {
    /// Folder to write (created if needed); same as --model-dir.
    dir: Option<PathBuf>,
    /// Folder to write (created if needed).
    #[arg(long = "model-dir", conflicts_with = "dir")]
    model_dir: Option<PathBuf>,
    /// Audio mode: 16k or 44k.
    #[arg(long, default_value = "16k")]
    mode: String,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(clap::Args)]
struct SelftestArgs {
    /// Model folder (default: $MMAUDIO_MODEL_DIR, else ./models).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Variant (defaults to the folder's manifest).
    #[arg(long)]
    variant: Option<Variant>,
    /// Seconds of audio.
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Flow-matching (Euler) steps.
    #[arg(long = "num-steps", alias = "steps", default_value_t = 25)]
    num_steps: usize,
    /// Text prompt.
    #[arg(long, default_value = "")]
    prompt: String,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// auto, f32, f16 or bf16.
    #[arg(long, default_value = "auto")]
    precision: String,
}

#[derive(clap::Args)]
struct FetchWeightsArgs {
    /// Model variant (small_16k, small_44k, medium_44k, large_44k, large_44k_v2).
    #[arg(long)]
    variant: Variant,
    /// Model folder (official layout: weights/, ext_weights/); created if absent.
    /// Default: $MMAUDIO_MODEL_DIR, else ./models.
    #[arg(long = "model-dir", alias = "dir")]
    model_dir: Option<PathBuf>,
    /// Only print each URL and the exact path it belongs at (to place files by hand).
    #[arg(long)]
    list: bool,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
}

#[derive(clap::Args)]
struct CheckWeightsArgs {
    /// Model folder; same as --model-dir.
    dir: Option<PathBuf>,
    /// Model folder (default: $MMAUDIO_MODEL_DIR, else ./models).
    #[arg(long = "model-dir", conflicts_with = "dir")]
    model_dir: Option<PathBuf>,
    /// Model variant (default: the one named by the folder's mmaudio.json).
    #[arg(long)]
    variant: Option<Variant>,
    /// Also load every tensor of the network (slow for the large variants).
    #[arg(long)]
    full: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// What to measure: net, vae, vocoder, clip, text, sync, preprocess, e2e (the whole
    /// generator, one window, per stage), stream (window engine, real-time factor),
    /// decoder-edge[-wave] (how far a window's end disturbs the decode before it).
    target: String,
    /// Model variant (small_16k, small_44k, medium_44k, large_44k, large_44k_v2).
    #[arg(long, default_value = "small_16k")]
    variant: Variant,
    /// vae/vocoder: audio mode (16k or 44k; defaults to the variant's). stream: the
    /// window engine, windows (default) or continuation.
    #[arg(long)]
    mode: Option<String>,
    /// Clip duration in seconds.
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Flow-matching (Euler) steps of the full sampling run.
    #[arg(long = "num-steps", alias = "steps", default_value_t = 25)]
    num_steps: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Frames for the CLIP vision bench.
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// auto, f32, f16 or bf16.
    #[arg(long, default_value = "auto")]
    precision: String,
    /// Also write the reports as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// e2e/stream: tiny test-model sizes instead of the real ones (smoke runs).
    #[arg(long)]
    tiny: bool,
    /// e2e/stream: synthetic input video size and rate (RGB24).
    #[arg(long, default_value_t = 1280)]
    width: usize,
    #[arg(long, default_value_t = 720)]
    height: usize,
    #[arg(long, default_value_t = 25.0)]
    fps: f64,
    /// e2e/stream: text prompt.
    #[arg(long, default_value = "waves crashing on a rocky beach")]
    prompt: String,
    /// stream: windows to generate (after --warmup warm-up windows).
    #[arg(long, default_value_t = 8)]
    windows: usize,
    /// stream: window length in seconds.
    #[arg(long, default_value_t = 8.0)]
    window: f64,
    /// stream: hop in seconds. windows mode: between window starts (the engine needs
    /// hop >= window/2; a shorter hop runs at window/2 and the report gives the RTF for
    /// both). continuation mode: new audio per window (0.25 s to window/2, rounded to whole
    /// latents).
    #[arg(long, default_value_t = 2.0)]
    hop: f64,
    /// stream: deliver frames at their presentation times (live pacing).
    #[arg(long)]
    realtime: bool,
    /// net: also count the tensor operations (≈ GPU kernel launches) per sampler step.
    #[arg(long)]
    count_ops: bool,
    /// Run the generic path (the code a GPU runs) instead of the fast CPU f32 kernels.
    #[arg(long)]
    generic_kernels: bool,
    /// stream: switch the generator's CLIP/Synchformer feature caches off.
    #[arg(long)]
    no_feature_cache: bool,
    /// stream: run N streams at once on one shared model, their windows batched by one
    /// device worker; a list (1,2,4) runs each count in turn and reports throughput per
    /// stream and in total.
    #[arg(long, value_delimiter = ',')]
    streams: Vec<usize>,
    /// stream --streams: no batching worker (each stream samples on its own thread).
    #[arg(long)]
    no_batch: bool,
    /// stream --streams: generate from the prompt alone (no video features).
    #[arg(long)]
    text_only: bool,
    /// stream --streams: windows of one stream generated as one batch (what `mmaudio
    /// generate --batch-windows` does).
    #[arg(long, default_value_t = 1)]
    batch_windows: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    mmaudio::device::tune_allocator();
    match cli.cmd {
        Cmd::Bench(a) => cmd_bench(a),
        Cmd::FetchWeights(a) => cmd_fetch_weights(a),
        Cmd::CheckWeights(a) => cmd_check_weights(a),
        Cmd::MakeTestModel(a) => {
            let mode = Mode::parse(&a.mode)?;
            // No default here: random weights must never land in a real model folder.
            let dir = a.dir.or(a.model_dir).ok_or_else(|| {
                anyhow::anyhow!("give the folder to write: mmaudio make-test-model DIR")
            })?;
            mmaudio::test_model::write_test_model(&dir, mode, a.seed)?;
            println!("wrote a tiny random {mode} test model to {}", dir.display());
            Ok(())
        }
        Cmd::Selftest(a) => cmd_selftest(a),
        Cmd::Parity(a) => cmd_parity(a),
        #[cfg(feature = "gst")]
        Cmd::Generate(a) => {
            let status = generate::run(a)?;
            if status != 0 {
                std::process::exit(status);
            }
            Ok(())
        }
        #[cfg(feature = "gst")]
        Cmd::Spectrogram(a) => spectrogram::run(a),
    }
}

/// The model folder: the argument, else $MMAUDIO_MODEL_DIR, else ./models (the same for
/// every subcommand).
fn model_dir(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| std::env::var_os("MMAUDIO_MODEL_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("models"))
}

fn cmd_parity(a: ParityArgs) -> Result<()> {
    let dir = a.dir.unwrap_or_else(mmaudio::parity::default_dir);
    anyhow::ensure!(dir.is_dir(), mmaudio::parity::missing_fixtures_help(&dir));
    let device = mmaudio::device::select_device(&a.device)?;
    let dtype = mmaudio::device::select_dtype(&a.precision, &device)?;
    let opts = mmaudio::parity::Options {
        device,
        dtype,
        filter: a.filter,
        generic_kernels: a.generic_kernels,
    };
    let sum = mmaudio::parity::run_dir(&dir, &opts, |l| println!("{l}"))?;
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&sum)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    anyhow::ensure!(sum.failed == 0, "{} parity case(s) failed", sum.failed);
    anyhow::ensure!(sum.ran > 0, "no parity case ran in {}", dir.display());
    Ok(())
}

fn cmd_selftest(a: SelftestArgs) -> Result<()> {
    use mmaudio::request::{GenerationParams, VideoFrame, WindowRequest};
    let dir = mmaudio::model_dir::ModelDir::open(model_dir(a.model_dir))?;
    let variant = dir.variant(a.variant)?;
    let device = mmaudio::device::select_device(&a.device)?;
    let dtype = mmaudio::device::select_dtype(&a.precision, &device)?;
    let t = std::time::Instant::now();
    let model =
        mmaudio::model::MmAudio::load(&dir, variant, &device, dtype, &mut |m| eprintln!("{m}"))?;
    eprintln!("loaded in {:.2} s", t.elapsed().as_secs_f64());
    // a moving gradient at 25 fps
    let (w, h) = (64usize, 48usize);
    let n = (a.duration * 25.0).ceil() as usize;
    let frames: Vec<VideoFrame> = (0..n)
        .map(|i| {
            let data: Vec<u8> = (0..w * h * 3)
                .map(|j| ((j / 3 % w + 4 * i) % 256) as u8)
                .collect();
            VideoFrame::rgb(i as f64 / 25.0, w, h, std::sync::Arc::new(data))
        })
        .collect();
    let req = WindowRequest {
        index: 0,
        start: 0.0,
        duration: a.duration,
        frames,
        params: GenerationParams {
            prompt: a.prompt,
            num_steps: a.num_steps,
            ..Default::default()
        },
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let audio = model.generate_window(&req, &mmaudio::request::Cancel::new(), None)?;
    let secs = t.elapsed().as_secs_f64();
    let peak = audio.iter().fold(0f32, |m, x| m.max(x.abs()));
    let timings = model.last_timings.lock().unwrap().unwrap_or_default();
    println!(
        "{} samples at {} Hz ({:.3} s) in {secs:.2} s (preprocess {:.2} s, features {:.2} s, sampling {:.2} s, decode {:.2} s); peak {peak:.3}",
        audio.len(),
        model.sample_rate(),
        audio.len() as f64 / model.sample_rate() as f64,
        timings.preprocess_s,
        timings.features_s,
        timings.sampling_s,
        timings.decode_s
    );
    anyhow::ensure!(audio.iter().all(|x| x.is_finite()), "non-finite samples");
    Ok(())
}

fn cmd_fetch_weights(a: FetchWeightsArgs) -> Result<()> {
    use mmaudio::fetch::{self, FetchOptions};
    let dir = model_dir(a.model_dir);
    use std::io::IsTerminal;
    let log: fetch::Log = std::sync::Arc::new(|m: &str| eprintln!("{m}"));
    let opts = FetchOptions {
        progress: !a.no_progress && std::io::stderr().is_terminal(),
        log: Some(log.clone()),
        ..FetchOptions::default()
    };
    if a.list {
        print!("{}", fetch::plan_listing(&dir, a.variant, &opts.endpoints));
        return Ok(());
    }
    let shown = std::path::absolute(&dir).unwrap_or_else(|_| dir.clone());
    eprintln!("fetching {} into {}", a.variant, shown.display());
    fetch::fetch_variant(&dir, a.variant, &opts)?;
    let report = mmaudio::weights::check::check_weights(
        &dir,
        Some(a.variant),
        &mmaudio::weights::check::CheckOptions {
            full: false,
            log: Some(log),
        },
    )?;
    print!("{}", report.render());
    if !report.ok() {
        anyhow::bail!(
            "the files were fetched but {} has {} problem(s) (see above)",
            shown.display(),
            report.errors()
        );
    }
    Ok(())
}

fn cmd_check_weights(a: CheckWeightsArgs) -> Result<()> {
    use mmaudio::weights::check::{CheckOptions, check_weights};
    let opts = CheckOptions {
        full: a.full,
        log: Some(std::sync::Arc::new(|m: &str| eprintln!("{m}"))),
    };
    let dir = model_dir(a.dir.or(a.model_dir));
    let report = check_weights(&dir, a.variant, &opts)?;
    print!("{}", report.render());
    if !report.ok() {
        anyhow::bail!("{} error(s) in {}", report.errors(), dir.display());
    }
    Ok(())
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
    if a.generic_kernels {
        mmaudio::device::set_fast_cpu_kernels(false);
    }
    let device = mmaudio::device::select_device(&a.device)?;
    let dtype = mmaudio::device::select_dtype(&a.precision, &device)?;
    let stream_mode = match (a.target.as_str(), &a.mode) {
        ("stream", Some(m)) => bench::pipeline::StreamMode::parse(m)?,
        _ => bench::pipeline::StreamMode::Windows,
    };
    let mode = match &a.mode {
        Some(m) if a.target != "stream" => Mode::parse(m)?,
        _ => a.variant.mode(),
    };
    let opts = BenchOpts {
        variant: a.variant,
        mode,
        duration: a.duration,
        steps: a.num_steps,
        warmup: a.warmup,
        runs: a.runs,
        device,
        dtype,
        frames: a.frames,
        pipeline: bench::pipeline::PipelineOpts {
            tiny: a.tiny,
            width: a.width,
            height: a.height,
            fps: a.fps,
            prompt: a.prompt,
            windows: a.windows,
            window_s: a.window,
            hop_s: a.hop,
            realtime: a.realtime,
            mode: stream_mode,
            feature_cache: !a.no_feature_cache,
            streams: a.streams,
            batch: !a.no_batch,
            text_only: a.text_only,
            batch_windows: a.batch_windows,
        },
        count_ops: a.count_ops,
    };
    eprintln!(
        "bench {}: {} on {} in {:?}",
        a.target,
        a.variant,
        bench::device_name(&opts.device),
        opts.dtype
    );
    // which kernels run (AVX-512 / AVX2 / generic), for the record
    println!("cpu: {}", mmaudio::cpu::describe());
    let reports = bench::run(&a.target, &opts)?;
    for r in &reports {
        println!("{}", r.summary());
    }
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&reports)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
