//! `mmaudio bench stream --streams N[,N...]`: N streams at once on one shared model, each on
//! its own thread with its own window engine, prompt seed and feature caches, their windows
//! sampled by one device worker that batches them ([`crate::batch`]; `--no-batch`: each
//! stream samples on its own thread instead, competing for the device).
//!
//! Reports, per N: the wall time until every stream is done, the audio each stream
//! produced, throughput per stream and in total (seconds of audio per second of wall time;
//! `> 1` is faster than real time), the worker's batch sizes, and the per-window times.
//! `--text-only` generates from the prompt alone (no CLIP/Synchformer: the sampler and the
//! decoder, which is where batching acts, dominate).

use super::pipeline::{StreamMode, random_mmaudio, synthetic_frames};
use super::{BenchOpts, BenchReport, process_cpu_s};
use crate::batch::{BatchOptions, BatchStats, DeviceWorker};
use crate::error::{Error, Result};
use crate::features::pixels::RawFrame;
use crate::features::preprocess::prepare_frame_planes;
use crate::generator::AudioGenerator;
use crate::model::{MmAudio, MmAudioStream};
use crate::request::{Cancel, GenerationParams, WindowRequest};
use crate::window::{
    Assembler, EngineConfig, FramePlanes, NS_PER_S, Planned, Preparer, TimedFrame, WindowConfig,
    WindowPlanner,
};
use std::sync::Arc;
use std::time::Instant;

/// What one stream of a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamRun {
    pub stream: usize,
    pub windows: usize,
    pub audio_s: f64,
    /// From the start of the run to this stream's last sample.
    pub wall_s: f64,
    /// `generate` wall time per window (waiting for the batch included; with
    /// `--batch-windows`, a batch's time divided among its windows).
    pub window_s: Vec<f64>,
}

/// One stream's windows through `generator` (windows mode; frames prepared on arrival as
/// the element does).
fn run_one(
    generator: &mut MmAudioStream,
    cfg: EngineConfig,
    opts: &BenchOpts,
    stream: usize,
    t0: Instant,
) -> Result<StreamRun> {
    let p = &opts.pipeline;
    let rate = generator.sample_rate();
    let mut planner = WindowPlanner::new(cfg);
    planner.set_params(GenerationParams {
        prompt: p.prompt.clone(),
        num_steps: opts.steps,
        seed: 1000 + stream as u64,
        ..Default::default()
    });
    planner.set_frame_picking(generator.picks_frames());
    if generator.wants_prepared_frames() && !p.text_only {
        let preparer: Preparer = Arc::new(|f: &TimedFrame, planes: FramePlanes| {
            prepare_frame_planes(
                &RawFrame::rgb(f.width, f.height, &f.data),
                planes.clip,
                planes.sync,
            )
        });
        planner.set_preparer(Some(preparer));
    }
    let hop_s = match cfg {
        EngineConfig::Windows(c) => c.hop_samples() as f64 / rate as f64,
        EngineConfig::Continuation(c) => c.hop_samples() as f64 / rate as f64,
    };
    let n_windows = p.windows.max(1);
    let stream_s = p.window_s + (n_windows - 1) as f64 * hop_s;
    let n_frames = ((stream_s * p.fps + 1e-6).floor() as usize).max(1);
    let frame_ns = (NS_PER_S as f64 / p.fps).round() as u64;
    let frames = synthetic_frames(4.min(n_frames), p.width, p.height, p.fps, 0.0);
    let cancel = Cancel::new();
    let mut assembler = Assembler::new(cfg);
    let mut run = StreamRun {
        stream,
        windows: 0,
        audio_s: 0.0,
        wall_s: 0.0,
        window_s: Vec::new(),
    };
    let mut emitted = 0u64;
    let per_call = p.batch_windows.max(1);
    let mut ready: Vec<(WindowRequest, crate::window::WindowSpan)> = Vec::new();
    let mut handle = |item: Option<Planned>, run: &mut StreamRun| -> Result<()> {
        let end = match item {
            Some(Planned::End { total }) => Some(total),
            _ => None,
        };
        if let Some(Planned::Window { mut request, span }) = item {
            if span.index == 0 {
                generator.reset();
            }
            if p.text_only {
                request = WindowRequest {
                    frames: Vec::new(),
                    retain_from: None,
                    ..request
                };
            }
            ready.push((request, span));
            if ready.len() < per_call {
                return Ok(());
            }
        }
        // the windows held back for one batch (`--batch-windows`), in order
        if !ready.is_empty() {
            let reqs: Vec<WindowRequest> = ready.iter().map(|(r, _)| r.clone()).collect();
            let t = Instant::now();
            let audio = generator.generate_many(&reqs, &cancel)?;
            let each = t.elapsed().as_secs_f64() / reqs.len() as f64;
            for ((_, span), audio) in ready.drain(..).zip(audio) {
                run.window_s.push(each);
                run.windows += 1;
                emitted += assembler.push(&span, audio)?.samples.len() as u64;
            }
        }
        match end {
            None => {}
            Some(total) => {
                emitted += assembler.finish(total)?.samples.len() as u64;
                if emitted != total {
                    return Err(Error::input(format!(
                        "stream {stream} emitted {emitted} samples, expected {total}"
                    )));
                }
                run.audio_s = total as f64 / rate as f64;
            }
        }
        Ok(())
    };
    for i in 0..n_frames {
        let src = &frames[i % frames.len()];
        let tf = TimedFrame {
            pts: i as u64 * frame_ns,
            duration: Some(frame_ns),
            width: p.width,
            height: p.height,
            data: src.data.clone(),
            prepared: None,
            source: None,
        };
        for item in planner.push_frame(tf) {
            handle(Some(item), &mut run)?;
        }
    }
    for item in planner.finish() {
        handle(Some(item), &mut run)?;
    }
    handle(None, &mut run)?;
    run.wall_s = t0.elapsed().as_secs_f64();
    Ok(run)
}

/// `bench stream --streams ...` (see the module documentation).
pub fn run(opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    let p = &opts.pipeline;
    if p.mode != StreamMode::Windows {
        return Err(Error::config(
            "bench stream --streams runs the windows engine (--mode windows)",
        ));
    }
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
    let overlap_s = (p.window_s - p.hop_s).max(0.0).min(p.window_s / 2.0);
    let cfg: EngineConfig = WindowConfig::new(rate, p.window_s, overlap_s)?.into();
    warm_up(&model, opts)?;
    let mut reports = Vec::new();
    for &n in &p.streams {
        if n == 0 {
            return Err(Error::config("--streams needs counts of at least 1"));
        }
        let worker = if p.batch {
            Some(Arc::new(DeviceWorker::start(
                &crate::bench::device_name(&opts.device),
                BatchOptions::default(),
            )?))
        } else {
            None
        };
        let mut generators: Vec<MmAudioStream> = (0..n)
            .map(|_| match &worker {
                Some(w) => MmAudioStream::with_worker(model.clone(), w.clone()),
                None => MmAudioStream::new(model.clone()),
            })
            .collect();
        for g in &mut generators {
            g.set_feature_cache(p.feature_cache);
        }
        let cpu0 = process_cpu_s();
        let t0 = Instant::now();
        let runs: Vec<Result<StreamRun>> = std::thread::scope(|s| {
            let hs: Vec<_> = generators
                .iter_mut()
                .enumerate()
                .map(|(i, g)| s.spawn(move || run_one(g, cfg, opts, i, t0)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::config("a stream thread panicked")))
                })
                .collect()
        });
        let wall_s = t0.elapsed().as_secs_f64();
        let cpu_s = process_cpu_s() - cpu0;
        let runs: Vec<StreamRun> = runs.into_iter().collect::<Result<_>>()?;
        let stats = worker.as_ref().map(|w| w.stats()).unwrap_or_default();
        reports.push(report(opts, n, &runs, wall_s, cpu_s, &stats, build_s));
    }
    Ok(reports)
}

/// Kernels, allocator and the prompt's text features before any timing.
fn warm_up(model: &MmAudio, opts: &BenchOpts) -> Result<()> {
    let p = &opts.pipeline;
    let frames = if p.text_only {
        Vec::new()
    } else {
        synthetic_frames(
            (p.window_s * p.fps).ceil() as usize,
            p.width,
            p.height,
            p.fps,
            0.0,
        )
    };
    let req = WindowRequest {
        duration: p.window_s,
        frames,
        params: GenerationParams {
            prompt: p.prompt.clone(),
            num_steps: opts.steps,
            ..Default::default()
        },
        ..Default::default()
    };
    for _ in 0..opts.warmup {
        model.generate_window(&req, &Cancel::new(), None)?;
    }
    Ok(())
}

fn report(
    opts: &BenchOpts,
    n: usize,
    runs: &[StreamRun],
    wall_s: f64,
    cpu_s: f64,
    stats: &BatchStats,
    build_s: f64,
) -> BenchReport {
    let p = &opts.pipeline;
    let audio_s: f64 = runs.iter().map(|r| r.audio_s).sum();
    let per_stream: Vec<f64> = runs.iter().map(|r| r.audio_s / r.wall_s).collect();
    let what = format!(
        "{} random weights, {n} stream(s) on one model, {} windows of {} s each (hop {} s{}), \
         {} steps, {}, {}",
        if p.tiny { "tiny" } else { "real-size" },
        p.windows,
        p.window_s,
        p.hop_s,
        if p.batch_windows > 1 {
            format!(", {} windows of a stream per batch", p.batch_windows)
        } else {
            String::new()
        },
        opts.steps,
        if p.text_only {
            "text only".to_string()
        } else {
            format!("{}x{} at {} fps", p.width, p.height, p.fps)
        },
        if p.batch {
            "windows batched by one device worker"
        } else {
            "no batching (each stream samples on its own thread)"
        }
    );
    let times: Vec<f64> = runs.iter().map(|r| r.wall_s).collect();
    let window_times: Vec<f64> = runs.iter().flat_map(|r| r.window_s.clone()).collect();
    BenchReport::new(
        &format!("streams_{}_n{n}", opts.variant.name()),
        &what,
        times,
        opts,
    )
    .with("streams", n)
    .with("batched", p.batch)
    .with("batch_windows", p.batch_windows.max(1))
    .with("text_only", p.text_only)
    .with("build_s", build_s)
    .with("wall_s", wall_s)
    .with("cpu_over_wall", cpu_s / wall_s)
    .with("audio_s_total", audio_s)
    .with("throughput_total", audio_s / wall_s)
    .with(
        "throughput_per_stream_mean",
        per_stream.iter().sum::<f64>() / n as f64,
    )
    .with("throughput_per_stream", per_stream)
    .with("window_s_median", super::pipeline::median_of(&window_times))
    .with("batch", serde_json::to_value(stats).unwrap_or_default())
    .with("runs", serde_json::to_value(runs).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Variant;
    use crate::bench::pipeline::PipelineOpts;
    use candle_core::{DType, Device};

    fn opts(streams: Vec<usize>, batch: bool) -> BenchOpts {
        BenchOpts {
            variant: Variant::Small16k,
            mode: Variant::Small16k.mode(),
            duration: 1.0,
            steps: 2,
            warmup: 0,
            runs: 1,
            device: Device::Cpu,
            dtype: DType::F32,
            frames: 1,
            count_ops: false,
            pipeline: PipelineOpts {
                tiny: true,
                width: 32,
                height: 24,
                windows: 2,
                window_s: 1.0,
                hop_s: 0.5,
                streams,
                batch,
                ..Default::default()
            },
        }
    }

    /// Every stream gets its whole audio; with the worker, every window of every stream is
    /// one item of its batches.
    #[test]
    fn streams_tiny_every_stream_complete_and_counted() {
        let r = run(&opts(vec![1, 3], true)).unwrap();
        assert_eq!(r.len(), 2);
        for (rep, n) in r.iter().zip([1usize, 3]) {
            assert_eq!(rep.extra["streams"], n);
            // 2 windows of 1 s, 0.5 s hop: 1.5 s, 37 whole frames at 25 fps: 1.48 s per stream
            let total = rep.extra["audio_s_total"].as_f64().unwrap();
            assert!((total - 1.48 * n as f64).abs() < 1e-9, "{total}");
            assert_eq!(rep.extra["batch"]["items"], 2 * n);
            assert_eq!(
                rep.extra["throughput_per_stream"].as_array().unwrap().len(),
                n
            );
        }
        let r = run(&opts(vec![2], false)).unwrap();
        assert_eq!(r[0].extra["batch"]["items"], 0);
        assert!((r[0].extra["audio_s_total"].as_f64().unwrap() - 2.96).abs() < 1e-9);
    }
}
