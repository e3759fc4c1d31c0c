//! Conditioning-feature benches at real size with random weights: CLIP ViT-H-14-384 image
//! tower (`clip`), its text tower (`text`) and the Synchformer visual encoder (`sync`).
//!
//! Reference (official PyTorch code, 2-core CPU, `shared/anchors/reference_cpu_timings_features.json`):
//! image tower 18.4 s for 1 frame and 140.3 s for a batch of 8, text 1.24 s for one prompt,
//! Synchformer 7.45 s per 16-frame segment.

use super::{BenchOpts, BenchReport, time_runs};
use crate::config::{CLIP_SIZE, SYNC_SEGMENT_FRAMES, SYNC_SIZE, TEXT_SEQ_LEN};
use crate::error::Result;
use crate::features::clip::{ClipConfig, ClipText, ClipVision};
use crate::features::synchformer::{Synchformer, SynchformerConfig};
use crate::features::tokenizer::ClipTokenizer;
use crate::features::vit::RandomWeights;
use crate::rng::Rng;
use candle_core::{Device, Tensor};

const SEED: u64 = 0x5EED_F00D;

/// CPU time (user + system) of this process in seconds, from `/proc/self/stat` (NaN where
/// unavailable). On a shared machine it is a steadier measure than wall time; the reference
/// file records it too (`process_cpu_s`).
fn process_cpu_s() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // fields after the parenthesised command name; utime and stime are fields 14 and 15
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(st)) => (u + st) / 100.0,
        _ => f64::NAN,
    }
}

/// Time `f` like [`time_runs`], also recording the process CPU time of each timed run; the
/// median CPU time is added to the report as `median_cpu_s`.
fn timed(
    opts: &BenchOpts,
    item: &str,
    what: &str,
    mut f: impl FnMut() -> Result<()>,
) -> Result<BenchReport> {
    let mut cpu = Vec::new();
    let mut calls = 0usize;
    let mut start = 0.0;
    let times = time_runs(opts.warmup, opts.runs, &opts.device, || {
        if calls >= opts.warmup {
            start = process_cpu_s();
        }
        f()?;
        opts.device.synchronize()?;
        if calls >= opts.warmup {
            cpu.push(process_cpu_s() - start);
        }
        calls += 1;
        Ok(())
    })?;
    cpu.sort_by(|a, b| a.total_cmp(b));
    let med = cpu.get(cpu.len() / 2).copied().unwrap_or(f64::NAN);
    Ok(BenchReport::new(item, what, times, opts).with("median_cpu_s", med))
}

/// Uniform [lo, hi) test input of `shape` (deterministic).
fn uniform(shape: &[usize], lo: f32, hi: f32, device: &Device) -> Result<Tensor> {
    let mut rng = Rng::new(SEED);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| lo + (hi - lo) * rng.uniform() as f32)
        .collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// `mmaudio bench clip`: the image tower on 1 frame and on `--frames` frames (one batch).
pub fn run_clip(opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    let cfg = ClipConfig::dfn5b_vit_h_14_384();
    let model = ClipVision::new(
        &cfg,
        RandomWeights::on_device(SEED).var_builder(opts.dtype, &opts.device),
    )?;
    let mut reports = Vec::new();
    let mut counts = vec![1];
    if opts.frames > 1 {
        counts.push(opts.frames);
    }
    for n in counts {
        let x = uniform(&[n, 3, CLIP_SIZE, CLIP_SIZE], 0.0, 1.0, &opts.device)?;
        let mut m = model.clone();
        m.max_batch = n.max(1);
        let item = format!(
            "clip_vision ViT-H-14-384 {n} frame{}",
            if n == 1 { "" } else { "s" }
        );
        reports.push(
            timed(
                opts,
                &item,
                "encode_video_with_clip (normalise + encode_image)",
                || m.encode_images(&x).map(|_| ()),
            )?
            .with("frames", n)
            .with("image_size", CLIP_SIZE),
        );
    }
    Ok(reports)
}

/// `mmaudio bench text`: the text tower on one prompt (77 tokens).
pub fn run_text(opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    let cfg = ClipConfig::dfn5b_vit_h_14_384();
    let model = ClipText::new(
        &cfg,
        RandomWeights::on_device(SEED).var_builder(opts.dtype, &opts.device),
    )?;
    // the prompt of the official item (`official_bench.py text`), tokenised in the timed call
    // as `FeaturesUtils.encode_text` does
    let prompt = "a dog barking while waves crash on the shore";
    let tok = ClipTokenizer::shared();
    Ok(vec![
        timed(
            opts,
            "clip_text ViT-H-14 1 prompt",
            "tokenise + patched encode_text (77 tokens, per-token features)",
            || {
                let ids = tok.tokenize(prompt);
                model.encode_tokens(std::slice::from_ref(&ids)).map(|_| ())
            },
        )?
        .with("tokens", TEXT_SEQ_LEN),
    ])
}

/// `mmaudio bench sync`: the Synchformer visual encoder on one 16-frame segment.
pub fn run_sync(opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    let cfg = SynchformerConfig::base();
    let model = Synchformer::new(
        &cfg,
        RandomWeights::on_device(SEED).var_builder(opts.dtype, &opts.device),
    )?;
    let x = uniform(
        &[1, SYNC_SEGMENT_FRAMES, 3, SYNC_SIZE, SYNC_SIZE],
        -1.0,
        1.0,
        &opts.device,
    )?;
    Ok(vec![
        timed(
            opts,
            "synchformer 1 segment",
            "encode_video_with_sync, 16 frames 224×224 -> 8 tokens",
            || model.encode_video(&x).map(|_| ()),
        )?
        .with("segments", 1),
    ])
}
