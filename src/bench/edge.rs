//! `mmaudio bench decoder-edge`: how far a window's end disturbs the decode of the latents
//! before it — the measurement behind continuation mode's held-back guard and crossfade
//! (`crate::window::continuation`).
//!
//! Random latents `L` (80 of them) are decoded as two windows of 60 that share 40:
//! `L[0..60]` and `L[20..80]`. Latent `20 + j` is then decoded once `40 − j` latents before
//! a window's end and once `j` latents after a window's start. For each shared latent the
//! report gives the largest difference of the two decodes' mel frames (the VAE decoder's
//! output; the VAE has global attention in its middle block, so some difference remains
//! everywhere) and, with `--vocoder`, of the waveform. Real-size decoders with random
//! weights (`--tiny` for the test-model sizes): the reach of the edge is a matter of
//! structure (kernel sizes, depth, attention), not of the trained values, which a trained
//! decoder may make smaller but not longer. (A random vocoder's output is saturated noise,
//! so the waveform difference says little; the mel is the meaningful part.)

use super::{BenchOpts, BenchReport};
use crate::audio_decoder::AudioDecoder;
use crate::error::Result;
use crate::vae::VaeConfig;
use crate::vocoder::BigVganConfig;
use crate::weights::random::RandomWeights;
use candle_core::{DType, Tensor};
use std::time::Instant;

/// Latents per window and shift between the two windows.
const WINDOW: usize = 60;
const SHIFT: usize = 20;

pub fn run(opts: &BenchOpts, vocoder: bool) -> Result<Vec<BenchReport>> {
    let mode = opts.mode;
    let (vae_cfg, voc_cfg) = if opts.pipeline.tiny {
        let (_, v, b, _, _) = crate::test_model::tiny_configs(mode);
        (v, b)
    } else {
        (VaeConfig::for_mode(mode), BigVganConfig::for_mode(mode))
    };
    let dev = &opts.device;
    let vb = |k: u64| RandomWeights::new(9 + k).var_builder(opts.dtype, dev);
    let dec = AudioDecoder::from_var_builders(mode, &vae_cfg, vb(1), &voc_cfg, vb(2))?;
    let lat = crate::rng::Rng::new(3).randn(&[1, WINDOW + SHIFT, vae_cfg.embed_dim], dev)?;
    let a = lat.narrow(1, 0, WINDOW)?.to_dtype(opts.dtype)?;
    let b = lat.narrow(1, SHIFT, WINDOW)?.to_dtype(opts.dtype)?;
    let t = Instant::now();
    let (ma, mb) = (dec.decode_mel(&a)?, dec.decode_mel(&b)?);
    let frames = |m: &Tensor| -> Result<Vec<Vec<f32>>> {
        Ok(m.squeeze(0)?.t()?.to_dtype(DType::F32)?.to_vec2()?)
    };
    let (fa, fb) = (frames(&ma)?, frames(&mb)?);
    let waves = if vocoder {
        let w = |m: &Tensor| -> Result<Vec<f32>> { Ok(dec.vocode(m)?.flatten_all()?.to_vec1()?) };
        Some((w(&ma)?, w(&mb)?))
    } else {
        None
    };
    let secs = t.elapsed().as_secs_f64();
    let p = 2 * mode.hop_length();
    let shared = WINDOW - SHIFT;
    let mut rows = Vec::new();
    let mut mel_diffs = Vec::new();
    for j in 0..shared {
        let mut d = 0f32;
        for f in [2 * j, 2 * j + 1] {
            for (x, y) in fa[2 * SHIFT + f].iter().zip(&fb[f]) {
                d = d.max((x - y).abs());
            }
        }
        let wave = waves.as_ref().map(|(wa, wb)| {
            let sa = &wa[(SHIFT + j) * p..(SHIFT + j + 1) * p];
            let sb = &wb[j * p..(j + 1) * p];
            sa.iter()
                .zip(sb)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        });
        mel_diffs.push(d as f64);
        rows.push(serde_json::json!({
            "latents_before_end": shared - j,
            "latents_after_start": j,
            "mel_max_abs_diff": d,
            "wave_max_abs_diff": wave,
        }));
        eprintln!(
            "shared latent {j:2}: {:2} before window A's end, {j:2} after window B's start: \
             mel max |diff| {d:.3}{}",
            shared - j,
            wave.map_or(String::new(), |w| format!(", wave max |diff| {w:.3}"))
        );
    }
    let what = format!(
        "{} {mode} decoders, random weights: {WINDOW}-latent windows {SHIFT} apart, \
         per shared latent the largest mel difference between the two decodes",
        if opts.pipeline.tiny {
            "tiny"
        } else {
            "real-size"
        }
    );
    Ok(vec![
        BenchReport::new(&format!("decoder_edge_{mode}"), &what, vec![secs], opts)
            .with("latent_period_samples", p)
            .with("mel_max_abs_diff", serde_json::json!(mel_diffs))
            .with("per_latent", serde_json::Value::Array(rows)),
    ])
}
