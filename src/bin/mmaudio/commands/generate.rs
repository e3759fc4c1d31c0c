//! `mmaudio generate`: the batch entry point. Builds a GStreamer pipeline around the
//! `mmaudiogen` element, runs it to the end and reports progress per window.
//!
//! ```text
//! .wav / .flac:  filesrc ! decodebin ! videoconvert ! mmaudiogen ! audioconvert ! wavenc|flacenc ! filesink
//! .mp4 / .mov / .mkv / .webm:
//!   filesrc ! parsebin ! tee name=t                       (the video stream only)
//!     t. ! queue (unbounded) ! mux.video_0                 (copied, not re-encoded)
//!     t. ! queue ! decodebin ! videoconvert ! mmaudiogen ! audioconvert ! audioresample
//!        ! avenc_aac|flacenc|opusenc ! queue ! mux.audio_0
//!   mp4mux|qtmux|matroskamux|webmmux name=mux ! filesink
//! text-only (no IN, --duration S):
//!   videotestsrc (black, exactly S long) ! mmaudiogen text-only=true ! audioconvert ! wavenc|flacenc ! filesink
//! ```
//!
//! Frames reach the element at their decoded size: when the real generator is loaded the
//! element keeps only the 384² (CLIP) and 224² (Synchformer) versions of each frame, so
//! memory does not grow with the video size, and the model sees frames resized from the
//! full-size picture as the official code does (no extra scaling step).

use crate::gst_env;
use anyhow::{Context, Result, anyhow, bail};
use gst::prelude::*;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mmaudio::Variant;
use mmaudio::model_dir::ModelDir;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Variant used when neither `--variant` nor the folder's manifest names one.
const DEFAULT_VARIANT: Variant = Variant::Large44kV2;

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Input video (any file GStreamer can decode). Leave it out and give --duration for
    /// audio from the prompt alone (text-only).
    pub input: Option<PathBuf>,
    /// Output file: .wav or .flac get the soundtrack alone; .mp4, .mov, .mkv or .webm get
    /// the input's video stream (copied, not re-encoded) with the new soundtrack (AAC in
    /// .mp4/.mov, lossless FLAC in .mkv, Opus in .webm). Default: <IN stem>.mmaudio.wav
    /// next to IN
    /// (text-only: text-only.mmaudio.wav).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
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
    /// Without IN: seconds of audio to generate from the prompt alone (text-only).
    #[arg(long)]
    pub duration: Option<f64>,
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
    /// With IN: ignore the video content, use it only for the timing (text-to-audio).
    #[arg(long)]
    pub text_only: bool,
    /// Length of one generation window in milliseconds (MMAudio is trained on 8000).
    #[arg(long, default_value_t = 8000)]
    pub window_duration: u32,
    /// Crossfade between consecutive windows in milliseconds (at most half a window).
    #[arg(long, default_value_t = 1000)]
    pub overlap: u32,
    /// No progress bar; one line per window instead.
    #[arg(long)]
    pub no_progress: bool,
}

/// What the output file gets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Output {
    /// The soundtrack alone, encoded by this element (`wavenc`, `flacenc`).
    Audio { encoder: &'static str },
    /// The input's video stream copied + the soundtrack.
    Mux {
        muxer: &'static str,
        /// `aac`, `flac` or `opus`.
        audio: &'static str,
    },
}

fn output_kind(path: &Path) -> Result<Output> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    Ok(match ext.as_str() {
        "wav" => Output::Audio { encoder: "wavenc" },
        "flac" => Output::Audio { encoder: "flacenc" },
        "mp4" | "m4v" => Output::Mux {
            muxer: "mp4mux",
            audio: "aac",
        },
        "mov" => Output::Mux {
            muxer: "qtmux",
            audio: "aac",
        },
        "mkv" => Output::Mux {
            muxer: "matroskamux",
            audio: "flac",
        },
        "webm" => Output::Mux {
            muxer: "webmmux",
            audio: "opus",
        },
        _ => bail!(
            "unknown output type `{}`: use .wav or .flac (the soundtrack alone) or .mp4, .mov, \
             .mkv or .webm (the input's video with the new soundtrack)",
            path.display()
        ),
    })
}

/// The element's enum nick of a variant (`small_16k` → `small-16k`).
fn variant_nick(v: Variant) -> String {
    v.name().replace('_', "-")
}

/// Number of windows of a stream of `duration_ns` (the window engine's geometry: window
/// `k` covers `[k·H, k·H + W)`, the last one is the first reaching the end).
fn window_count(duration_ns: u64, window_ms: u32, overlap_ms: u32) -> u64 {
    let w = window_ms as u64 * 1_000_000;
    let h = (window_ms.saturating_sub(overlap_ms) as u64).max(1) * 1_000_000;
    if duration_ns <= w {
        1
    } else {
        1 + (duration_ns - w).div_ceil(h)
    }
}

/// Frames and frame rate of a black video lasting exactly `duration_ms`: about 25 fps,
/// with a rate of `frames · 1000 / duration_ms` so that the last frame ends on the
/// millisecond.
fn text_only_timing(duration_ms: u64) -> (u64, gst::Fraction) {
    let frames = duration_ms.div_ceil(40).max(1);
    let (mut num, mut den) = (frames * 1000, duration_ms);
    let g = gcd(num, den);
    num /= g;
    den /= g;
    (frames, gst::Fraction::new(num as i32, den as i32))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow!("path {} is not valid UTF-8", p.display()))
}

fn make(factory: &str) -> Result<gst::Element> {
    gst::ElementFactory::make(factory)
        .build()
        .with_context(|| format!("cannot create the GStreamer element {factory}"))
}

/// An error on the bus from a pad-added callback (so the bus loop reports it).
fn post_error(pipeline: &gst::Pipeline, error: gst::StreamError, text: &str) {
    let _ = pipeline.post_message(
        gst::message::Error::builder(error, text)
            .src(pipeline)
            .build(),
    );
}

/// Link `pad` to a fakesink (streams we do not use: without a sink they would stop the
/// demuxer with not-linked).
fn discard(pipeline: &gst::Pipeline, pad: &gst::Pad) {
    let Ok(sink) = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
    else {
        return;
    };
    if pipeline.add(&sink).is_ok() {
        let _ = sink.sync_state_with_parent();
        let _ = pad.link(&sink.static_pad("sink").unwrap());
    }
}

fn pad_caps_name(pad: &gst::Pad) -> (Option<gst::Caps>, String) {
    let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None)));
    let name = caps
        .as_ref()
        .and_then(|c| c.structure(0).map(|s| s.name().to_string()))
        .unwrap_or_default();
    (caps, name)
}

/// `decodebin` whose first raw video pad is linked to `target` (other pads are
/// discarded); posts an error if the stream has no video.
fn decoder_to(pipeline: &gst::Pipeline, target: &gst::Element, what: &str) -> Result<gst::Element> {
    let decodebin = make("decodebin")?;
    let linked = Arc::new(AtomicBool::new(false));
    let weak = pipeline.downgrade();
    let target_pad = target.static_pad("sink").unwrap();
    let l = linked.clone();
    decodebin.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let (_, name) = pad_caps_name(pad);
        if name.starts_with("video/") && !l.load(Ordering::SeqCst) {
            match pad.link(&target_pad) {
                Ok(_) => l.store(true, Ordering::SeqCst),
                Err(e) => post_error(
                    &pipeline,
                    gst::StreamError::Format,
                    &format!("cannot link the decoded video ({name}): {e:?}"),
                ),
            }
        } else {
            discard(&pipeline, pad);
        }
    });
    let weak = pipeline.downgrade();
    let what = what.to_string();
    decodebin.connect_no_more_pads(move |_| {
        if !linked.load(Ordering::SeqCst)
            && let Some(pipeline) = weak.upgrade()
        {
            post_error(
                &pipeline,
                gst::StreamError::WrongType,
                &format!(
                    "{what} has no video stream (for audio from a prompt alone, leave out the \
                     input and give --duration)"
                ),
            );
        }
    });
    Ok(decodebin)
}

struct Built {
    pipeline: gst::Pipeline,
    generator: gst::Element,
}

fn configure_generator(
    a: &GenerateArgs,
    model_dir: &Path,
    variant: Variant,
) -> Result<gst::Element> {
    let g = gst::ElementFactory::make("mmaudiogen")
        .name("gen")
        .build()
        .context("cannot create mmaudiogen")?;
    g.set_property("model-dir", path_str(model_dir)?);
    g.set_property_from_str("variant", &variant_nick(variant));
    g.set_property("device", a.device.as_str());
    g.set_property_from_str("precision", &a.precision);
    g.set_property("prompt", a.prompt.as_str());
    g.set_property("negative-prompt", a.negative_prompt.as_str());
    g.set_property("num-steps", a.num_steps);
    g.set_property("cfg-strength", a.cfg_strength);
    g.set_property("seed", a.seed);
    g.set_property("mask-away-clip", a.mask_away_clip);
    g.set_property("text-only", a.text_only || a.input.is_none());
    g.set_property("window-duration", a.window_duration);
    g.set_property("overlap", a.overlap);
    // Offline: a slow window only delays the file, it is not "late".
    g.set_property("processing-latency", 3_600_000u32);
    Ok(g)
}

/// `audioconvert ! audioresample ! <encoder>` for the soundtrack; returns (first, last).
fn audio_chain(
    pipeline: &gst::Pipeline,
    encoders: &[&str],
) -> Result<(gst::Element, gst::Element)> {
    let mut chain = vec![make("audioconvert")?, make("audioresample")?];
    for e in encoders {
        chain.push(make(e)?);
    }
    pipeline.add_many(&chain)?;
    gst::Element::link_many(&chain)?;
    Ok((chain[0].clone(), chain[chain.len() - 1].clone()))
}

fn build(
    a: &GenerateArgs,
    out: &Path,
    kind: &Output,
    model_dir: &Path,
    variant: Variant,
) -> Result<Built> {
    let pipeline = gst::Pipeline::new();
    let generator = configure_generator(a, model_dir, variant)?;
    pipeline.add(&generator)?;
    let sink = gst::ElementFactory::make("filesink")
        .property("location", path_str(out)?)
        .build()?;
    pipeline.add(&sink)?;

    match (&a.input, kind) {
        (None, Output::Audio { encoder }) => {
            let secs = a
                .duration
                .ok_or_else(|| anyhow!("give an input video, or --duration for text-only"))?;
            let ms = (secs * 1000.0).round();
            if !(secs.is_finite() && (1.0..=10.0 * 3600e3).contains(&ms)) {
                bail!("invalid --duration {secs}: give seconds, from 0.001 to 36000");
            }
            let (frames, rate) = text_only_timing(ms as u64);
            let src = gst::ElementFactory::make("videotestsrc")
                .property("num-buffers", frames as i32)
                .property_from_str("pattern", "black")
                .build()?;
            let caps = gst::ElementFactory::make("capsfilter")
                .property(
                    "caps",
                    gst::Caps::builder("video/x-raw")
                        .field("format", "RGB")
                        .field("width", 64i32)
                        .field("height", 64i32)
                        .field("framerate", rate)
                        .build(),
                )
                .build()?;
            pipeline.add_many([&src, &caps])?;
            gst::Element::link_many([&src, &caps, &generator])?;
            let (first, last) = audio_chain(&pipeline, &[encoder])?;
            generator.link(&first)?;
            last.link(&sink)?;
        }
        (None, Output::Mux { .. }) => {
            bail!("text-only generation writes audio only: give an output ending in .wav or .flac")
        }
        (Some(input), Output::Audio { encoder }) => {
            let src = gst::ElementFactory::make("filesrc")
                .property("location", path_str(input)?)
                .build()?;
            let convert = make("videoconvert")?;
            let decodebin = decoder_to(&pipeline, &convert, &input.display().to_string())?;
            pipeline.add_many([&src, &decodebin, &convert])?;
            src.link(&decodebin)?;
            convert.link(&generator)?;
            let (first, last) = audio_chain(&pipeline, &[encoder])?;
            generator.link(&first)?;
            last.link(&sink)?;
        }
        (Some(input), Output::Mux { muxer, audio }) => {
            let src = gst::ElementFactory::make("filesrc")
                .property("location", path_str(input)?)
                .build()?;
            let parsebin = make("parsebin")?;
            let tee = make("tee")?;
            let copy_queue = gst::ElementFactory::make("queue")
                .property("max-size-time", 0u64)
                .property("max-size-bytes", 0u32)
                .property("max-size-buffers", 0u32)
                .build()?;
            // The decoding branch keeps the default limits: the demuxer then runs at most a
            // little ahead of the generator, and the copy queue holds only the video the
            // audio has not caught up with yet.
            let decode_queue = make("queue")?;
            let convert = make("videoconvert")?;
            let decodebin = decoder_to(&pipeline, &convert, &input.display().to_string())?;
            let mux = make(muxer)?;
            pipeline.add_many([
                &src,
                &parsebin,
                &tee,
                &copy_queue,
                &decode_queue,
                &decodebin,
                &convert,
                &mux,
            ])?;
            src.link(&parsebin)?;
            tee.link(&copy_queue)?;
            tee.link(&decode_queue)?;
            decode_queue.link(&decodebin)?;
            convert.link(&generator)?;
            let video_pad = mux
                .request_pad_simple("video_%u")
                .ok_or_else(|| anyhow!("{muxer} has no video pad"))?;
            let video_template_caps = video_pad
                .pad_template()
                .map(|t| t.caps().clone())
                .unwrap_or_else(gst::Caps::new_any);
            copy_queue.static_pad("src").unwrap().link(&video_pad)?;
            let encoders: Vec<&str> = match *audio {
                "aac" => vec![aac_encoder()?],
                "flac" => vec!["flacenc"],
                _ => vec!["opusenc"],
            };
            let (first, last) = audio_chain(&pipeline, &encoders)?;
            generator.link(&first)?;
            clip_encoded_to_generated(&generator, &last);
            let audio_queue = make("queue")?;
            pipeline.add(&audio_queue)?;
            last.link(&audio_queue)?;
            let audio_pad = mux
                .request_pad_simple("audio_%u")
                .ok_or_else(|| anyhow!("{muxer} has no audio pad"))?;
            audio_queue.static_pad("src").unwrap().link(&audio_pad)?;
            mux.link(&sink)?;

            let linked = Arc::new(AtomicBool::new(false));
            let weak = pipeline.downgrade();
            let tee_sink = tee.static_pad("sink").unwrap();
            let l = linked.clone();
            let ext = out
                .extension()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            parsebin.connect_pad_added(move |_, pad| {
                let Some(pipeline) = weak.upgrade() else {
                    return;
                };
                let (caps, name) = pad_caps_name(pad);
                if !name.starts_with("video/") || l.load(Ordering::SeqCst) {
                    discard(&pipeline, pad);
                    return;
                }
                if let Some(caps) = &caps
                    && !caps.can_intersect(&video_template_caps)
                {
                    post_error(
                        &pipeline,
                        gst::StreamError::Format,
                        &format!(
                            "the input's video ({name}) cannot be copied into a .{ext} file \
                             (the video is not re-encoded): choose .mkv, which takes most \
                             codecs, or .wav for the soundtrack alone"
                        ),
                    );
                    discard(&pipeline, pad);
                    return;
                }
                match pad.link(&tee_sink) {
                    Ok(_) => l.store(true, Ordering::SeqCst),
                    Err(e) => post_error(
                        &pipeline,
                        gst::StreamError::Format,
                        &format!("cannot link the input's video ({name}): {e:?}"),
                    ),
                }
            });
            let weak = pipeline.downgrade();
            let what = input.display().to_string();
            parsebin.connect_no_more_pads(move |_| {
                if !linked.load(Ordering::SeqCst)
                    && let Some(pipeline) = weak.upgrade()
                {
                    post_error(
                        &pipeline,
                        gst::StreamError::WrongType,
                        &format!("{what} has no video stream to copy"),
                    );
                }
            });
        }
    }
    Ok(Built {
        pipeline,
        generator,
    })
}

/// Codecs that work in whole frames (AAC: 1024 samples) pad the last frame: without care
/// the soundtrack in the file would be up to a frame longer than the video. The muxer
/// takes each sample's duration from the buffer, and the demuxer clips the decoded audio
/// to the track's duration, so shortening the last encoded buffer's duration to the end
/// of the generated audio makes the file's soundtrack exactly as long as the video.
/// (FLAC is exact by itself. Opus in .webm: Matroska carries the codec's padding, but
/// Opus needs 48 kHz, and GStreamer's resampler may end one 48 kHz sample short of a
/// 44.1 kHz soundtrack.)
fn clip_encoded_to_generated(generator: &gst::Element, encoder: &gst::Element) {
    let end = Arc::new(AtomicU64::new(0));
    let e = end.clone();
    generator
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer()
                && let (Some(pts), Some(d)) = (b.pts(), b.duration())
            {
                e.fetch_max((pts + d).nseconds(), Ordering::SeqCst);
            }
            gst::PadProbeReturn::Ok
        });
    encoder
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let end = end.load(Ordering::SeqCst);
            if let Some(b) = info.buffer_mut()
                && let (Some(pts), Some(d)) = (b.pts(), b.duration())
                && end > 0
                && (pts + d).nseconds() > end
                && pts.nseconds() < end
            {
                let b = b.make_mut();
                b.set_duration(gst::ClockTime::from_nseconds(end - pts.nseconds()));
            }
            gst::PadProbeReturn::Ok
        });
}

fn aac_encoder() -> Result<&'static str> {
    for e in ["avenc_aac", "fdkaacenc", "voaacenc"] {
        if gst::ElementFactory::find(e).is_some() {
            return Ok(e);
        }
    }
    bail!(
        "no AAC encoder for the .mp4/.mov soundtrack: install gstreamer1.0-libav (avenc_aac), \
         or write .mkv (FLAC)"
    )
}

/// Model folder and variant, checked before GStreamer starts (clear errors early).
fn resolve_model(a: &GenerateArgs) -> Result<(PathBuf, Variant)> {
    let dir = a
        .model_dir
        .clone()
        .or_else(|| std::env::var_os("MMAUDIO_MODEL_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("models"));
    let fetch_hint = |v: Variant| {
        format!(
            "download the weights with `mmaudio fetch-weights --variant {v} --dir {}` (see \
             docs/weights.md to place them by hand), or pass --model-dir / set MMAUDIO_MODEL_DIR",
            dir.display()
        )
    };
    if !dir.is_dir() {
        bail!(
            "model folder {} does not exist: {}",
            dir.display(),
            fetch_hint(a.variant.unwrap_or(DEFAULT_VARIANT))
        );
    }
    let md = ModelDir::open(&dir)?;
    let variant = md.choose_variant(a.variant)?;
    if let Err(e) = md.resolve_all(variant) {
        bail!(
            "model folder {} is incomplete for {variant}: {e}",
            dir.display()
        );
    }
    Ok((dir, variant))
}

fn default_output(a: &GenerateArgs) -> PathBuf {
    match &a.input {
        Some(input) => {
            let stem = input
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "out".into());
            input.with_file_name(format!("{stem}.mmaudio.wav"))
        }
        None => PathBuf::from("text-only.mmaudio.wav"),
    }
}

/// Check the arguments that need no GStreamer.
fn check_args(a: &GenerateArgs) -> Result<(PathBuf, Output)> {
    match (&a.input, a.duration) {
        (None, None) => bail!(
            "no input video: give one (`mmaudio generate in.mp4 -o out.mp4`), or --duration \
             SECONDS to generate audio from the prompt alone"
        ),
        (Some(_), Some(_)) => bail!(
            "--duration is only for text-only generation without an input video (the video \
             sets the duration)"
        ),
        _ => {}
    }
    if let Some(input) = &a.input {
        if !input.exists() {
            bail!("input file {} does not exist", input.display());
        }
        if !input.is_file() {
            bail!("input {} is not a file", input.display());
        }
    }
    let out = a.output.clone().unwrap_or_else(|| default_output(a));
    let kind = output_kind(&out)?;
    if let Some(input) = &a.input
        && let (Ok(i), Ok(o)) = (input.canonicalize(), out.canonicalize())
        && i == o
    {
        bail!("the output {} would overwrite the input", out.display());
    }
    if let Some(parent) = out.parent()
        && !parent.as_os_str().is_empty()
        && !parent.is_dir()
    {
        bail!("output folder {} does not exist", parent.display());
    }
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
    Ok((out, kind))
}

/// Progress reporting: a bar on a terminal, one line per window otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    total: Option<u64>,
    done: u64,
    /// Pts of the first window (times are shown from the start of the video).
    origin: Option<f64>,
}

impl Progress {
    fn new(show_bar: bool) -> Self {
        let bar = show_bar.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:30}] {pos}/{len} windows, {elapsed} (ETA {eta})",
                )
                .unwrap()
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            total: None,
            done: 0,
            origin: None,
        }
    }

    fn say(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn set_message(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        }
    }

    fn set_total(&mut self, total: u64) {
        self.total = Some(total.max(self.done));
        if let Some(b) = &self.bar {
            b.set_length(total.max(self.done));
        }
    }

    fn window(&mut self, w: &WindowInfo) {
        self.done = w.index + 1;
        if w.last || self.total.is_some_and(|t| t < self.done) {
            self.set_total(self.done);
        }
        let total = self
            .total
            .map(|t| t.to_string())
            .unwrap_or_else(|| "?".into());
        let origin = *self.origin.get_or_insert(w.start_s);
        let start = w.start_s - origin;
        let line = format!(
            "window {}/{total}: {:.2}–{:.2} s ({} frames) generated in {:.2} s",
            w.index + 1,
            start,
            start + w.duration_s,
            w.frames,
            w.processing_s
        );
        match &self.bar {
            Some(b) => {
                b.set_position(self.done);
                b.set_message("generating");
            }
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The fields of a `mmaudiogen-window` message.
#[derive(Debug)]
struct WindowInfo {
    index: u64,
    start_s: f64,
    duration_s: f64,
    frames: u32,
    processing_s: f64,
    last: bool,
}

fn window_info(s: &gst::StructureRef) -> Option<WindowInfo> {
    let secs = |f: &str| {
        s.get::<gst::ClockTime>(f)
            .map(|t| t.nseconds() as f64 / 1e9)
            .ok()
    };
    Some(WindowInfo {
        index: s.get("index").ok()?,
        start_s: secs("start")?,
        duration_s: secs("duration")?,
        frames: s.get("frames").unwrap_or(0),
        processing_s: secs("processing-time")?,
        last: s.get("last").unwrap_or(false),
    })
}

/// The `mmaudiogen-model` message as one phrase: `MMAudio small_16k, 16000 Hz, on cpu in f32`.
fn model_info(s: &gst::StructureRef) -> Option<String> {
    let name = s.get::<String>("name").ok()?;
    let rate = s.get::<u32>("rate").ok()?;
    let mut text = format!("{name}, {rate} Hz");
    if let Ok(d) = s.get::<String>("device")
        && !d.is_empty()
    {
        text += &format!(", on {d}");
    }
    if let Ok(p) = s.get::<String>("precision")
        && !p.is_empty()
    {
        text += &format!(" in {p}");
    }
    Some(text)
}

/// Run `mmaudio generate`.
pub fn run(a: GenerateArgs) -> Result<()> {
    let (out, kind) = check_args(&a)?;
    let (model_dir, variant) = resolve_model(&a)?;
    mmaudio::device::select_device(&a.device)
        .map_err(|e| anyhow!("invalid --device `{}`: {e}", a.device))?;

    gst_env::init()?;
    gst_env::require_mmaudiogen()?;
    let mut needed: Vec<&str> = vec!["audioconvert", "audioresample", "filesink"];
    match (&a.input, &kind) {
        (None, _) => needed.extend(["videotestsrc", "capsfilter"]),
        (Some(_), Output::Audio { .. }) => needed.extend(["filesrc", "decodebin", "videoconvert"]),
        (Some(_), Output::Mux { .. }) => needed.extend([
            "filesrc",
            "parsebin",
            "tee",
            "queue",
            "decodebin",
            "videoconvert",
        ]),
    }
    match &kind {
        Output::Audio { encoder } => needed.push(encoder),
        Output::Mux { muxer, audio } => {
            needed.push(muxer);
            if *audio == "opus" {
                needed.push("opusenc");
            } else if *audio == "flac" {
                needed.push("flacenc");
            }
        }
    }
    gst_env::require_elements(&needed)?;

    let Built {
        pipeline,
        generator,
    } = build(&a, &out, &kind, &model_dir, variant)?;

    // Count the generated samples at the element's source pad (mono F32).
    let samples = Arc::new(AtomicU64::new(0));
    let rate = Arc::new(AtomicU64::new(0));
    let (s, r) = (samples.clone(), rate.clone());
    generator
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(b) = info.buffer() {
                s.fetch_add(b.size() as u64 / 4, Ordering::Relaxed);
                if r.load(Ordering::Relaxed) == 0
                    && let Some(rate) = pad
                        .current_caps()
                        .and_then(|c| c.structure(0).and_then(|s| s.get::<i32>("rate").ok()))
                {
                    r.store(rate as u64, Ordering::Relaxed);
                }
            }
            gst::PadProbeReturn::Ok
        });

    let show_bar = !a.no_progress && std::io::stderr().is_terminal();
    let mut progress = Progress::new(show_bar);
    match &a.input {
        Some(i) => progress.say(&format!("{} → {}", i.display(), out.display())),
        None => progress.say(&format!(
            "text-only, {} s → {}",
            a.duration.unwrap_or_default(),
            out.display()
        )),
    }
    if let Some(d) = a.duration {
        let ns = (d * 1e9).round() as u64;
        progress.set_total(window_count(ns, a.window_duration, a.overlap));
    }
    progress.set_message(&format!("loading {variant}"));

    gst_env::catch_ctrl_c();
    let started = Instant::now();
    let result = run_pipeline(&pipeline, &generator, &a, &mut progress);
    let wall = started.elapsed().as_secs_f64();
    let _ = pipeline.set_state(gst::State::Null);
    progress.finish();
    let stats = result?;

    let n = samples.load(Ordering::Relaxed);
    let rate = rate.load(Ordering::Relaxed);
    let secs = if rate > 0 {
        n as f64 / rate as f64
    } else {
        0.0
    };
    let gen_wall = wall - stats.load_s.unwrap_or(0.0);
    // what the element reports it loaded (variant, rate, device and precision in use)
    let model = stats.model.clone().unwrap_or_else(|| variant.to_string());
    println!(
        "wrote {}: {secs:.3} s of {rate} Hz audio ({n} samples) from {} window(s) with {model}; \
         wall time {wall:.1} s (model load {:.1} s); real-time factor {:.2} ({:.2} without the \
         load; < 1 is faster than real time)",
        out.display(),
        stats.windows,
        stats.load_s.unwrap_or(0.0),
        if secs > 0.0 { wall / secs } else { 0.0 },
        if secs > 0.0 { gen_wall / secs } else { 0.0 },
    );
    Ok(())
}

struct Stats {
    windows: u64,
    load_s: Option<f64>,
    /// The element's `mmaudiogen-model` message: `MMAudio small_16k, 16000 Hz, on cpu in f32`.
    model: Option<String>,
}

fn run_pipeline(
    pipeline: &gst::Pipeline,
    generator: &gst::Element,
    a: &GenerateArgs,
    progress: &mut Progress,
) -> Result<Stats> {
    let bus = pipeline.bus().unwrap();
    let started = Instant::now();
    let mut stats = Stats {
        windows: 0,
        load_s: None,
        model: None,
    };
    if pipeline.set_state(gst::State::Playing).is_err() {
        // The reason is on the bus.
        while let Some(msg) = bus.pop() {
            if let gst::MessageView::Error(e) = msg.view() {
                bail!("{}", error_text(e));
            }
        }
        bail!("the pipeline failed to start");
    }
    let mut eos_sent = false;
    let mut duration_known = a.duration.is_some();
    loop {
        let interrupts = gst_env::interrupts();
        if interrupts >= 2 {
            bail!("interrupted: {} is incomplete", out_name(a));
        }
        if interrupts == 1 && !eos_sent {
            eos_sent = true;
            progress.say(
                "interrupted: finishing the current window and closing the file (Ctrl-C again \
                 to abort)",
            );
            pipeline.send_event(gst::event::Eos::new());
        }
        if !duration_known
            && let Some(d) = generator
                .static_pad("sink")
                .and_then(|p| p.peer_query_duration::<gst::ClockTime>())
        {
            duration_known = true;
            progress.set_total(window_count(d.nseconds(), a.window_duration, a.overlap));
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => bail!("{}", error_text(e)),
            gst::MessageView::Warning(w) => {
                progress.say(&format!("warning: {}", w.error()));
            }
            gst::MessageView::Progress(p) => {
                let (kind, code, text) = p.get();
                if code == "load" {
                    match kind {
                        gst::ProgressType::Start => progress.say(text),
                        gst::ProgressType::Complete => {
                            stats.load_s = Some(started.elapsed().as_secs_f64());
                            progress.say(text);
                            progress.set_message("generating");
                        }
                        _ => {}
                    }
                }
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure()
                    && s.name() == "mmaudiogen-window"
                    && let Some(w) = window_info(s)
                {
                    stats.windows = stats.windows.max(w.index + 1);
                    progress.window(&w);
                }
                if let Some(s) = e.structure()
                    && s.name() == "mmaudiogen-model"
                {
                    stats.model = model_info(s);
                }
            }
            _ => {}
        }
    }
    if eos_sent {
        progress.say("stopped early: the output holds the audio generated so far");
    }
    Ok(stats)
}

fn out_name(a: &GenerateArgs) -> String {
    a.output
        .clone()
        .unwrap_or_else(|| default_output(a))
        .display()
        .to_string()
}

fn error_text(e: &gst::message::Error) -> String {
    let src = e
        .src()
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| "pipeline".into());
    match e.debug() {
        Some(d) if !d.is_empty() => format!("{} ({src}: {d})", e.error()),
        _ => format!("{} ({src})", e.error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_types() {
        assert_eq!(
            output_kind(Path::new("a/b.WAV")).unwrap(),
            Output::Audio { encoder: "wavenc" }
        );
        assert_eq!(
            output_kind(Path::new("x.mkv")).unwrap(),
            Output::Mux {
                muxer: "matroskamux",
                audio: "flac"
            }
        );
        let e = output_kind(Path::new("x.avi")).unwrap_err().to_string();
        assert!(e.contains("x.avi") && e.contains(".wav"), "{e}");
        assert!(output_kind(Path::new("noext")).is_err());
    }

    #[test]
    fn window_counts_follow_the_engine() {
        let s = 1_000_000_000u64;
        assert_eq!(window_count(3 * s, 8000, 1000), 1);
        assert_eq!(window_count(8 * s, 8000, 1000), 1);
        assert_eq!(window_count(10 * s, 8000, 1000), 2);
        assert_eq!(window_count(15 * s, 8000, 1000), 2);
        assert_eq!(window_count(15 * s + 1, 8000, 1000), 3);
        // windows start every 7 s; the one at 56 s is the first to reach 60 s
        assert_eq!(window_count(60 * s, 8000, 1000), 9);
    }

    #[test]
    fn text_only_video_lasts_exactly_the_duration() {
        for ms in [1u64, 39, 40, 1001, 3000, 4004, 12_345] {
            let (frames, rate) = text_only_timing(ms);
            let (n, d) = (rate.numer() as u64, rate.denom() as u64);
            // videotestsrc: pts(k) = k · d · 1e9 / n
            let end_ns = frames * d * 1_000_000_000 / n;
            assert_eq!(end_ns, ms * 1_000_000, "{ms} ms");
            if ms >= 40 {
                assert!(frames * 1000 / ms <= 25, "{ms}: {frames} frames");
            }
        }
    }

    #[test]
    fn variant_nicks() {
        assert_eq!(variant_nick(Variant::Large44kV2), "large-44k-v2");
        assert_eq!(variant_nick(Variant::Small16k), "small-16k");
    }
}
