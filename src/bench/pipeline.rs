//! Whole-generator benches with random weights: `mmaudio bench e2e` (one window end to
//! end, per stage) and `mmaudio bench stream` (the window engine over a simulated live
//! stream, real-time factor).
//!
//! Every component — CLIP image and text towers, Synchformer, the flow network, VAE decoder
//! and vocoder — is built at real size with [`RandomWeights::on_device`] (drawn directly on
//! the bench device) and assembled with [`MmAudio::from_parts`]; the window then goes
//! through exactly the code the element runs ([`MmAudio::generate_window`]). With
//! `--tiny` the sizes of the test models (`mmaudio make-test-model`) are used instead, so
//! the code path can be exercised in seconds on a CPU.
//!
//! Stage times come from [`MmAudio::last_timings`], which synchronises the device at each
//! stage boundary, so they are complete on CUDA too.

use super::{BenchOpts, BenchReport, time_runs};
use crate::audio_decoder::AudioDecoder;
use crate::config::Variant;
use crate::error::{Error, Result};
use crate::features::clip::{Clip, ClipConfig, ClipText, ClipVision};
use crate::features::pixels::RawFrame;
use crate::features::preprocess::prepare_frame_planes;
use crate::features::synchformer::{Synchformer, SynchformerConfig};
use crate::generator::{AudioGenerator, CacheStats};
use crate::model::{MmAudio, MmAudioStream, WindowTimings};
use crate::net::MmAudioNet;
use crate::request::{Cancel, GenerationParams, VideoFrame, WindowRequest};
use crate::vae::VaeConfig;
use crate::vocoder::BigVganConfig;
use crate::weights::random::RandomWeights;
use crate::window::{
    Assembler, ContinuationConfig, EngineConfig, FramePlanes, NS_PER_S, Planned, Preparer,
    TimedFrame, WindowConfig, WindowPlanner,
};
use candle_core::{DType, Device};
use std::sync::Arc;
use std::time::Instant;

/// Options of the `e2e` and `stream` targets.
#[derive(Debug, Clone)]
pub struct PipelineOpts {
    /// Tiny test-model sizes instead of the real ones (fast smoke runs).
    pub tiny: bool,
    /// Size and rate of the synthetic input video (packed RGB24).
    pub width: usize,
    pub height: usize,
    pub fps: f64,
    pub prompt: String,
    /// `stream`: windows to generate after the warm-up.
    pub windows: usize,
    /// `stream`: window length and hop in seconds (`windows` mode allows hop ≥ window/2,
    /// `continuation` mode hop ≤ window/2).
    pub window_s: f64,
    pub hop_s: f64,
    /// `stream`: deliver frames at their presentation times (live pacing) instead of as
    /// fast as preparation allows.
    pub realtime: bool,
    /// `stream`: which engine.
    pub mode: StreamMode,
    /// `stream`: use the generator's feature caches (off: every window computes all its
    /// CLIP and Synchformer features).
    pub feature_cache: bool,
    /// `stream`: run this many streams at once on one model, one report per count
    /// (`bench::streams`); empty: the single-stream bench.
    pub streams: Vec<usize>,
    /// `stream --streams`: sample through one batching device worker (else each stream
    /// samples on its own thread).
    pub batch: bool,
    /// `stream --streams`: windows without frames (text to audio).
    pub text_only: bool,
    /// `stream --streams`: windows of a stream generated per call (one batch).
    pub batch_windows: usize,
}

impl Default for PipelineOpts {
    fn default() -> Self {
        Self {
            tiny: false,
            width: 1280,
            height: 720,
            fps: 25.0,
            prompt: "waves crashing on a rocky beach".into(),
            windows: 8,
            window_s: 8.0,
            hop_s: 2.0,
            realtime: false,
            mode: StreamMode::Windows,
            feature_cache: true,
            streams: Vec::new(),
            batch: true,
            text_only: false,
            batch_windows: 1,
        }
    }
}

/// Every component of `variant` with random weights, drawn on `device`, assembled into a
/// generator. `tiny` selects the test-model sizes ([`crate::test_model::tiny_configs`]).
pub fn random_mmaudio(
    variant: Variant,
    device: &Device,
    dtype: DType,
    tiny: bool,
    seed: u64,
) -> Result<MmAudio> {
    let mode = variant.mode();
    let (net_cfg, vae_cfg, voc_cfg, clip_cfg, sync_cfg) = if tiny {
        let (net, vae, voc, clip, sync) = crate::test_model::tiny_configs(mode);
        (
            net,
            vae,
            voc,
            ClipConfig::from_open_clip_json(&clip)?,
            SynchformerConfig::from_motionformer_cfg(&sync)?,
        )
    } else {
        (
            variant.net_config(),
            VaeConfig::for_mode(mode),
            BigVganConfig::for_mode(mode),
            ClipConfig::dfn5b_vit_h_14_384(),
            SynchformerConfig::base(),
        )
    };
    let vb = |k: u64| RandomWeights::on_device(seed.wrapping_add(k)).var_builder(dtype, device);
    let net = MmAudioNet::new(vb(0), &net_cfg)?;
    let decoder = AudioDecoder::from_var_builders(mode, &vae_cfg, vb(1), &voc_cfg, vb(2))?;
    let clip = Clip {
        vision: ClipVision::new(&clip_cfg, vb(3))?,
        text: ClipText::new(&clip_cfg, vb(3))?,
    };
    let synchformer = Synchformer::new(&sync_cfg, vb(4))?;
    let model = MmAudio::from_parts(
        variant,
        mode,
        device,
        dtype,
        net,
        decoder,
        clip,
        synchformer,
    )?;
    device.synchronize()?;
    Ok(model)
}

/// `n` packed RGB24 frames of `w`×`h` at `fps` (pts `i/fps` from `t0`): a moving pattern on
/// 4 distinct buffers shared between the frames (each frame is still processed on its own).
pub fn synthetic_frames(n: usize, w: usize, h: usize, fps: f64, t0: f64) -> Vec<VideoFrame> {
    let bufs: Vec<Arc<Vec<u8>>> = (0..4usize)
        .map(|s| {
            Arc::new(
                (0..w * h * 3)
                    .map(|j| {
                        let (x, y) = (j / 3 % w, j / 3 / w);
                        ((x + 2 * y + 37 * s + (j % 3) * 80) % 256) as u8
                    })
                    .collect(),
            )
        })
        .collect();
    (0..n)
        .map(|i| VideoFrame::rgb(t0 + i as f64 / fps, w, h, bufs[i % bufs.len()].clone()))
        .collect()
}

fn check_opts(o: &BenchOpts) -> Result<()> {
    let p = &o.pipeline;
    if p.width == 0 || p.height == 0 || !(p.fps.is_finite() && p.fps > 0.0) {
        return Err(Error::config(format!(
            "invalid synthetic video {}x{} at {} fps",
            p.width, p.height, p.fps
        )));
    }
    if !(o.duration.is_finite() && o.duration > 0.0) {
        return Err(Error::config(format!("invalid duration {}", o.duration)));
    }
    Ok(())
}

fn size_tag(o: &BenchOpts) -> &'static str {
    if o.pipeline.tiny { "tiny" } else { "real-size" }
}

/// Median of `v` (NaN when empty).
pub fn median_of(v: &[f64]) -> f64 {
    median(v)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// A stage: its name, how to read its time, what it covers.
type Stage = (&'static str, fn(&WindowTimings) -> f64, &'static str);

/// Stage names and accessors, in pipeline order.
const STAGES: &[Stage] = &[
    (
        "preprocess",
        |t| t.preprocess_s,
        "frame picking + CLIP/Synchformer resize of the raw frames (CPU) + upload",
    ),
    ("clip", |t| t.clip_s, "CLIP image tower on the 8 fps frames"),
    ("sync", |t| t.sync_s, "Synchformer on the 25 fps frames"),
    (
        "text",
        |t| t.text_s,
        "CLIP text tower, prompt + negative prompt (cache cleared before each run)",
    ),
    (
        "sampling",
        |t| t.sampling_s,
        "conditions + Euler steps with CFG (cond+uncond batched)",
    ),
    ("vae", |t| t.vae_s, "VAE decoder latents -> mel"),
    (
        "vocoder",
        |t| t.vocoder_s,
        "vocoder mel -> waveform + download",
    ),
    ("total", |t| t.total_s, "generate_window, end to end"),
    (
        "total_without_preprocess",
        |t| t.total_s - t.preprocess_s,
        "generate_window minus the frame resize, which the element does as frames arrive",
    ),
];

/// `mmaudio bench e2e`: one window of `--duration` s with `--steps` CFG steps, end to end,
/// per stage; median of `--runs` after `--warmup`.
pub fn run_e2e(opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    check_opts(opts)?;
    let p = &opts.pipeline;
    let t = Instant::now();
    let model = random_mmaudio(opts.variant, &opts.device, opts.dtype, p.tiny, 1)?;
    let build_s = t.elapsed().as_secs_f64();
    let n_frames = (opts.duration * p.fps).ceil() as usize;
    let req = WindowRequest {
        index: 0,
        start: 0.0,
        duration: opts.duration,
        frames: synthetic_frames(n_frames, p.width, p.height, p.fps, 0.0),
        params: GenerationParams {
            prompt: p.prompt.clone(),
            num_steps: opts.steps,
            ..Default::default()
        },
        ..Default::default()
    };
    let cancel = Cancel::new();
    let mut stage_runs: Vec<WindowTimings> = Vec::new();
    let mut calls = 0usize;
    let mut samples = 0usize;
    let times = time_runs(opts.warmup, opts.runs, &opts.device, || {
        model.clear_text_cache();
        let audio = model.generate_window(&req, &cancel, None)?;
        samples = audio.len();
        if audio.iter().any(|x| !x.is_finite()) {
            return Err(Error::input("the generator produced non-finite samples"));
        }
        if calls >= opts.warmup {
            stage_runs.push(model.last_timings.lock().unwrap().unwrap_or_default());
        }
        calls += 1;
        Ok(())
    })?;
    let v = opts.variant.name();
    let what = format!(
        "{} random weights, {} s window, {} steps, {} frames {}x{} at {} fps, prompt {:?}",
        size_tag(opts),
        opts.duration,
        opts.steps,
        n_frames,
        p.width,
        p.height,
        p.fps,
        p.prompt
    );
    let mut stages = serde_json::Map::new();
    for (name, get, _) in STAGES {
        let ts: Vec<f64> = stage_runs.iter().map(get).collect();
        stages.insert(
            name.to_string(),
            serde_json::json!({"median_s": median(&ts), "times_s": ts}),
        );
    }
    let mut reports = vec![
        BenchReport::new(&format!("e2e_{v}_{}s", opts.duration), &what, times, opts)
            .with("build_s", build_s)
            .with("tiny", p.tiny)
            .with("steps", opts.steps)
            .with("duration_s", opts.duration)
            .with("samples", samples)
            .with("sample_rate", model.sample_rate())
            .with("frames", n_frames)
            .with("stages", serde_json::Value::Object(stages)),
    ];
    for (name, get, what) in STAGES {
        let ts: Vec<f64> = stage_runs.iter().map(get).collect();
        reports.push(BenchReport::new(&format!("e2e_{v} {name}"), what, ts, opts));
    }
    Ok(reports)
}

/// One window processed by the stream bench.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamWindow {
    pub index: u64,
    /// Sequence the generator sampled, seconds (continuation windows grow to the window).
    pub duration_s: f64,
    /// Latents held from earlier windows (continuation), 0 otherwise.
    pub known_latents: usize,
    /// `generate` wall time (synchronised).
    pub process_s: f64,
    pub timings: WindowTimings,
    /// Time the generator thread waited for this window's request (0 = it was ready).
    pub wait_s: f64,
    /// Samples this window emitted, and the media time of the first one (s).
    pub emitted: u64,
    pub emitted_at_media_s: f64,
    /// Live pacing only: wall time since the stream started when the samples were
    /// emitted, minus their media time: the latency the window achieved (s).
    pub achieved_latency_s: Option<f64>,
}

/// Which engine `bench stream` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamMode {
    #[default]
    Windows,
    Continuation,
}

impl StreamMode {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "windows" => Ok(StreamMode::Windows),
            "continuation" => Ok(StreamMode::Continuation),
            other => Err(Error::config(format!(
                "unknown stream mode `{other}` (windows or continuation)"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            StreamMode::Windows => "windows",
            StreamMode::Continuation => "continuation",
        }
    }
}

/// `mmaudio bench stream`: the window engine ([`WindowPlanner`] + [`Assembler`]) in either
/// mode over a synthetic stream, frames settled, dropped or prepared on arrival in a
/// producer thread (as the element's streaming thread does) while the generator thread
/// works. Reports per-window compute split by stage, the feature-cache hit rates, the
/// latency the engine gives (and, with `--realtime`, the one achieved), and
/// RTF = compute per hop / hop.
///
/// `--windows n`: in `windows` mode the stream is `window + (n−1)·hop` long (n windows);
/// in `continuation` mode it is `n·hop` long (n windows, the first ones growing).
pub fn run_stream(opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    check_opts(opts)?;
    let p = opts.pipeline.clone();
    let t = Instant::now();
    let model = Arc::new(random_mmaudio(
        opts.variant,
        &opts.device,
        opts.dtype,
        p.tiny,
        1,
    )?);
    let build_s = t.elapsed().as_secs_f64();
    let rate = model.sample_rate();
    let mut generator = MmAudioStream::new(model.clone());
    generator.set_feature_cache(p.feature_cache);
    let mut note = String::new();
    let (cfg, hop_s, held_back_s): (EngineConfig, f64, f64) = match p.mode {
        StreamMode::Windows => {
            // The engine needs overlap ≤ window/2: use the hop closest to the requested one.
            let requested_overlap = (p.window_s - p.hop_s).max(0.0);
            let overlap_s = requested_overlap.min(p.window_s / 2.0);
            let cfg = WindowConfig::new(rate, p.window_s, overlap_s)?;
            let hop_s = cfg.hop_samples() as f64 / rate as f64;
            if overlap_s < requested_overlap {
                note = format!(
                    "the windows engine allows overlap <= window/2: requested {} s windows with {} s hop, ran {} s hop (the closest allowed); rtf_requested_hop = process time / requested hop",
                    p.window_s, p.hop_s, hop_s
                );
            }
            (cfg.into(), hop_s, 0.0)
        }
        StreamMode::Continuation => {
            let cfg = ContinuationConfig::from_millis(
                rate,
                model.latent_period(),
                (p.window_s * 1e3).round() as u64,
                (p.hop_s * 1e3).round() as u64,
            )?;
            let hop_s = cfg.hop_samples() as f64 / rate as f64;
            let x = cfg.held_back_samples() as f64 / rate as f64;
            (cfg.into(), hop_s, x)
        }
    };
    let params = GenerationParams {
        prompt: p.prompt.clone(),
        num_steps: opts.steps,
        ..Default::default()
    };
    let cancel = Cancel::new();

    // warm-up windows (kernel compilation, allocator, text cache) outside the stream
    let n_warm = (p.window_s * p.fps).ceil() as usize;
    let warm_req = WindowRequest {
        index: 0,
        start: 0.0,
        duration: p.window_s,
        frames: synthetic_frames(n_warm, p.width, p.height, p.fps, 0.0),
        params: params.clone(),
        ..Default::default()
    };
    for _ in 0..opts.warmup {
        model.generate_window(&warm_req, &cancel, None)?;
    }

    let n_windows = p.windows.max(1);
    let stream_s = match p.mode {
        StreamMode::Windows => p.window_s + (n_windows - 1) as f64 * hop_s,
        StreamMode::Continuation => n_windows as f64 * hop_s,
    };
    // whole frames only, so the stream does not spill into one more window
    let n_frames = ((stream_s * p.fps + 1e-6).floor() as usize).max(1);
    let frame_ns = (NS_PER_S as f64 / p.fps).round() as u64;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Planned>(1);
    let prepare = generator.wants_prepared_frames();
    let picks = generator.picks_frames();
    let (w, h, fps, realtime) = (p.width, p.height, p.fps, p.realtime);
    let planner_params = params.clone();
    let prep_time = Arc::new(std::sync::Mutex::new(0.0f64));
    let prep_time2 = prep_time.clone();
    let t_stream = Instant::now();
    let producer = std::thread::spawn(move || -> Result<(usize, usize, u64)> {
        let mut planner = WindowPlanner::new(cfg);
        planner.set_params(planner_params);
        planner.set_frame_picking(picks);
        if prepare {
            let preparer: Preparer = Arc::new(move |f: &TimedFrame, planes: FramePlanes| {
                let t = Instant::now();
                let raw = RawFrame::rgb(f.width, f.height, &f.data);
                let r = prepare_frame_planes(&raw, planes.clip, planes.sync);
                *prep_time2.lock().unwrap() += t.elapsed().as_secs_f64();
                r
            });
            planner.set_preparer(Some(preparer));
        }
        let frames = synthetic_frames(4.min(n_frames), w, h, fps, 0.0);
        let start = Instant::now();
        let mut max_held = 0;
        for i in 0..n_frames {
            let pts = i as u64 * frame_ns;
            if realtime {
                let due = std::time::Duration::from_nanos(pts);
                if let Some(d) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(d);
                }
            }
            let src = &frames[i % frames.len()];
            let tf = TimedFrame {
                pts,
                duration: Some(frame_ns),
                width: w,
                height: h,
                data: src.data.clone(),
                prepared: None,
                source: None,
            };
            let items = planner.push_frame(tf);
            max_held = max_held.max(planner.buffered_frames());
            for item in items {
                if tx.send(item).is_err() {
                    return Ok((i, max_held, planner.decimated_frames()));
                }
            }
        }
        let decimated = planner.decimated_frames();
        for item in planner.finish() {
            if tx.send(item).is_err() {
                break;
            }
        }
        Ok((n_frames, max_held, decimated))
    });

    let mut assembler = Assembler::new(cfg);
    let mut windows: Vec<StreamWindow> = Vec::new();
    let mut emitted = 0u64;
    let mut total = 0u64;
    let mut gen_err = None;
    loop {
        let t_wait = Instant::now();
        let Ok(item) = rx.recv() else { break };
        let wait_s = t_wait.elapsed().as_secs_f64();
        match item {
            Planned::Window { request, span } => {
                if span.index == 0 {
                    generator.reset();
                }
                let t = Instant::now();
                let audio = match generator.generate(&request, &cancel) {
                    Ok(a) => a,
                    Err(e) => {
                        gen_err = Some(e);
                        break;
                    }
                };
                let process_s = t.elapsed().as_secs_f64();
                let chunk = assembler.push(&span, audio)?;
                let at = chunk.offset as f64 / rate as f64;
                let n = chunk.samples.len() as u64;
                emitted += n;
                windows.push(StreamWindow {
                    index: request.index,
                    duration_s: request.duration,
                    known_latents: request.continuation.map_or(0, |c| c.known),
                    process_s,
                    timings: model.last_timings.lock().unwrap().unwrap_or_default(),
                    wait_s,
                    emitted: n,
                    emitted_at_media_s: at,
                    achieved_latency_s: realtime.then(|| t_stream.elapsed().as_secs_f64() - at),
                });
            }
            Planned::End { total: n } => {
                emitted += assembler.finish(n)?.samples.len() as u64;
                total = n;
            }
        }
    }
    drop(rx);
    let wall_s = t_stream.elapsed().as_secs_f64();
    let (_, max_held, decimated) = producer
        .join()
        .map_err(|_| Error::config("stream producer thread panicked"))??;
    let prep_s = *prep_time.lock().unwrap();
    if let Some(e) = gen_err {
        return Err(e);
    }
    if emitted != total || windows.is_empty() {
        return Err(Error::input(format!(
            "stream emitted {emitted} samples, expected {total} ({} windows)",
            windows.len()
        )));
    }

    // steady state: the windows that sample a full-length sequence
    let full = windows.iter().map(|w| w.duration_s).fold(0.0f64, f64::max);
    let steady: Vec<&StreamWindow> = windows
        .iter()
        .filter(|w| w.duration_s >= full - 1e-9)
        .collect();
    let times: Vec<f64> = windows.iter().map(|w| w.process_s).collect();
    let steady_times: Vec<f64> = steady.iter().map(|w| w.process_s).collect();
    let max = steady_times.iter().cloned().fold(f64::NAN, f64::max);
    let med = median(&steady_times);
    let mut stages = serde_json::Map::new();
    for (name, get, _) in STAGES {
        let ts: Vec<f64> = steady.iter().map(|w| get(&w.timings)).collect();
        stages.insert(name.to_string(), serde_json::json!(median(&ts)));
    }
    // the lookups of every window (with the caches off, all of them are misses)
    let cache = windows.iter().fold(CacheStats::default(), |mut c, w| {
        let t = &w.timings.cache;
        c.clip_hits += t.clip_hits;
        c.clip_misses += t.clip_misses;
        c.sync_hits += t.sync_hits;
        c.sync_misses += t.sync_misses;
        c
    });
    let frame_s = 1.0 / p.fps;
    let latency_model_s = hop_s + held_back_s + frame_s + med;
    let achieved: Vec<f64> = windows
        .iter()
        .filter_map(|w| w.achieved_latency_s)
        .collect();
    let v = opts.variant.name();
    let what = format!(
        "{} random weights, {} mode, {} windows, window {} s, hop {} s, {} steps, {}x{} at {} fps{}{}",
        size_tag(opts),
        p.mode.name(),
        windows.len(),
        p.window_s,
        hop_s,
        opts.steps,
        p.width,
        p.height,
        p.fps,
        if realtime { ", live pacing" } else { "" },
        if p.feature_cache {
            ""
        } else {
            ", feature cache off"
        }
    );
    // process_s is measured around generate: record it without cpu times
    super::LAST_CPU.with(|c| c.take());
    let mut r = BenchReport::new(&format!("stream_{v}_{}", p.mode.name()), &what, times, opts)
        .with("build_s", build_s)
        .with("tiny", p.tiny)
        .with("mode", p.mode.name())
        .with("steps", opts.steps)
        .with("window_s", p.window_s)
        .with("hop_s", hop_s)
        .with("requested_hop_s", p.hop_s)
        .with("held_back_s", held_back_s)
        .with("steady_windows", steady.len())
        .with("steady_duration_s", full)
        .with("compute_per_hop_median_s", med)
        .with("rtf_median", med / hop_s)
        .with("rtf_max", max / hop_s)
        .with("stages_median_s", serde_json::Value::Object(stages))
        .with("feature_cache", p.feature_cache)
        .with("cache", serde_json::to_value(cache).unwrap_or_default())
        .with("clip_hit_rate", cache.clip_hit_rate())
        .with("sync_hit_rate", cache.sync_hit_rate())
        .with("latency_engine_s", hop_s + held_back_s + frame_s)
        .with("latency_with_median_compute_s", latency_model_s)
        .with(
            "achieved_latency_max_s",
            achieved.iter().cloned().fold(f64::NAN, f64::max),
        )
        .with("achieved_latency_median_s", median(&achieved))
        .with("stream_audio_s", total as f64 / rate as f64)
        .with("wall_s", wall_s)
        .with("throughput_rtf", wall_s / (total as f64 / rate as f64))
        .with("frames", n_frames)
        .with("frames_held_max", max_held)
        .with("frames_dropped_by_picking", decimated)
        .with("frame_prepare_s_total", prep_s)
        .with("frame_prepare_ms_per_frame", prep_s / n_frames.max(1) as f64 * 1e3)
        .with(
            "preprocess_overlap",
            if prepare {
                "yes: frames are resized on arrival in the producer thread (as the element's streaming thread does) while the generator thread runs the previous window; only the per-window conversion of the prepared frames (timings.preprocess_s) is on the generator thread"
            } else {
                "no: the generator takes raw frames"
            },
        )
        .with("realtime_pacing", realtime)
        .with("windows", serde_json::to_value(&windows).unwrap_or_default());
    if !note.is_empty() {
        r = r
            .with("rtf_requested_hop_median", med / p.hop_s)
            .with("rtf_requested_hop_max", max / p.hop_s)
            .with("note", note);
    }
    Ok(vec![r])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_opts(variant: Variant) -> BenchOpts {
        BenchOpts {
            variant,
            mode: variant.mode(),
            duration: 1.0,
            steps: 1,
            warmup: 0,
            runs: 1,
            device: Device::Cpu,
            dtype: DType::F32,
            frames: 1,
            pipeline: PipelineOpts {
                tiny: true,
                width: 32,
                height: 24,
                windows: 3,
                window_s: 1.0,
                hop_s: 0.25,
                ..Default::default()
            },
            count_ops: false,
        }
    }

    #[test]
    fn e2e_tiny_runs_every_stage() {
        let r = run_e2e(&tiny_opts(Variant::Small16k)).unwrap();
        assert_eq!(r.len(), 1 + STAGES.len());
        assert_eq!(r[0].extra["samples"], 16000);
        for rep in &r {
            assert!(rep.median_s.is_finite() && rep.median_s >= 0.0, "{rep:?}");
        }
        let stages = r[0].extra["stages"].as_object().unwrap();
        for s in ["clip", "sync", "text", "sampling", "vae", "vocoder"] {
            assert!(stages[s]["median_s"].as_f64().unwrap() > 0.0, "{s}");
        }
    }

    #[test]
    fn stream_tiny_closest_hop_and_rtf() {
        let r = run_stream(&tiny_opts(Variant::Large44kV2)).unwrap();
        let r = &r[0];
        // 1 s windows, 0.25 s hop requested: the engine allows at most 0.5 s overlap
        assert_eq!(r.extra["hop_s"], 0.5);
        assert_eq!(r.times_s.len(), 3);
        assert!(r.extra["rtf_median"].as_f64().unwrap() > 0.0);
        assert!(r.extra.contains_key("note"));
        assert_eq!(r.extra["stream_audio_s"], 2.0);
    }

    #[test]
    fn stream_tiny_continuation_reports_latency_cache_and_rtf() {
        let mut o = tiny_opts(Variant::Small16k);
        o.pipeline.mode = StreamMode::Continuation;
        o.pipeline.window_s = 1.28;
        o.pipeline.hop_s = 0.32; // 10 latents = 8 frames
        o.pipeline.windows = 6;
        let r = &run_stream(&o).unwrap()[0];
        assert_eq!(r.extra["mode"], "continuation");
        assert_eq!(r.extra["hop_s"], 0.32);
        assert_eq!(r.extra["held_back_s"], 0.192);
        assert_eq!(r.times_s.len(), 6);
        // 6 hops of 0.32 s; full 1.28 s windows from the 4th on
        assert_eq!(r.extra["stream_audio_s"], 1.92);
        assert_eq!(r.extra["steady_windows"], 3);
        assert!(r.extra["rtf_median"].as_f64().unwrap() > 0.0);
        // 8 fps picks recur across windows (per-frame cache); whole 25 fps segments only
        // where the official reader's accumulated slot times pick alike in both windows
        let clip = r.extra["clip_hit_rate"].as_f64().unwrap();
        assert!(clip > 0.2, "{clip}");
        let c = &r.extra["cache"];
        let lookups = c["clip_hits"].as_u64().unwrap() + c["clip_misses"].as_u64().unwrap();
        let lat = r.extra["latency_engine_s"].as_f64().unwrap();
        assert!((lat - (0.32 + 0.192 + 0.04)).abs() < 1e-9, "{lat}");
        // without the caches every window computes all its features
        o.pipeline.feature_cache = false;
        let r = &run_stream(&o).unwrap()[0];
        assert_eq!(r.extra["cache"]["clip_hits"], 0);
        assert_eq!(r.extra["cache"]["clip_misses"].as_u64().unwrap(), lookups);
    }
}
