//! `mmaudio bench vae|vocoder --mode 16k|44k`: the real-size VAE decoder and vocoders with
//! random weights (built through the same loaders as the checkpoints, from a `VarMap`).
//!
//! Inputs follow the duration: N = latent_seq_len(duration) latents → 2N mel frames. The
//! process allocator is tuned first (`ops::tune_allocator`). With `MMAUDIO_GENERIC_KERNELS=1`
//! the generic (device-independent) kernels are measured instead of the fast CPU ones;
//! `MMAUDIO_WINOGRAD=0|2|4` selects the vocoders' Winograd tile.

use super::{BenchOpts, BenchReport, time_runs};
use crate::config::Mode;
use crate::error::Result;
use crate::vae::{Vae, VaeConfig, VaeParts, VaeWeights};
use crate::vocoder::{BigVgan, BigVganConfig, ops};
use candle_core::{DType, Tensor};
use candle_nn::{VarBuilder, VarMap};

/// Official CPU timings (2 threads, f32, 8 s) from `shared/anchors/reference_cpu_timings.json`.
fn official_cpu_s(item: &str) -> Option<f64> {
    match item {
        "vae_16k_decode" => Some(1.1626),
        "vae_44k_decode" => Some(2.8179),
        "bigvgan_16k_vocode" => Some(18.996),
        "bigvgan_v2_44k_vocode" => Some(87.820),
        _ => None,
    }
}

/// Kernel selection for this run: `MMAUDIO_GENERIC_KERNELS=1` measures the generic
/// (device-independent) kernels, `MMAUDIO_WINOGRAD=0|2|4` the Winograd tile of the wide
/// vocoder convolutions.
fn kernels_note() -> String {
    // what a long-running process using the audio decoders should do at start-up
    let tuned = ops::tune_allocator();
    let alloc = if tuned { ", allocator tuned" } else { "" };
    if std::env::var("MMAUDIO_GENERIC_KERNELS").is_ok_and(|v| v == "1") {
        ops::set_fast_cpu_kernels(false);
        return format!("generic{alloc}");
    }
    if let Ok(v) = std::env::var("MMAUDIO_WINOGRAD")
        && let Ok(m) = v.parse::<usize>()
    {
        ops::set_winograd_tile(m);
    }
    match ops::winograd_tile() {
        0 => format!("fast-cpu, direct convolutions{alloc}"),
        m => format!("fast-cpu, winograd F({m},3){alloc}"),
    }
}

fn finish(item: &str, what: &str, times: Vec<f64>, opts: &BenchOpts) -> BenchReport {
    let mut r = BenchReport::new(item, what, times, opts);
    if let Some(off) = official_cpu_s(item)
        && (opts.duration - 8.0).abs() < 1e-9
        && opts.device.is_cpu()
        && opts.dtype == DType::F32
    {
        let speedup = off / r.median_s;
        r = r
            .with("official_cpu_s", off)
            .with("speedup_vs_official", speedup);
    }
    r
}

fn mode_tag(mode: Mode) -> &'static str {
    match mode {
        Mode::Khz16 => "16k",
        Mode::Khz44 => "44k",
    }
}

pub fn run_vae(opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    let kernels = kernels_note();
    let mode = opts.mode;
    let cfg = VaeConfig::for_mode(mode);
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, opts.dtype, &opts.device);
    let vae = Vae::new(&cfg, vb, VaeParts::DECODER, VaeWeights::Raw)?;
    let n = mode.sequence(opts.duration).latent_seq_len();
    let z = Tensor::randn(0f32, 1f32, (1, cfg.embed_dim, n), &opts.device)?.to_dtype(opts.dtype)?;
    let times = time_runs(opts.warmup, opts.runs, &opts.device, || {
        vae.decode(&z)?;
        Ok(())
    })?;
    let item = format!("vae_{}_decode", mode_tag(mode));
    let what = format!(
        "VAE.decode z (1, {}, {n}) -> mel (1, {}, {}), hidden {}",
        cfg.embed_dim,
        cfg.data_dim,
        2 * n,
        cfg.hidden_dim
    );
    Ok(vec![
        finish(&item, &what, times, opts).with("kernels", kernels),
    ])
}

fn random_vocoder(cfg: &BigVganConfig, opts: &BenchOpts) -> Result<BigVgan> {
    let vm = VarMap::new();
    BigVgan::new(cfg, VarBuilder::from_varmap(&vm, opts.dtype, &opts.device))
}

pub fn run_vocoder(opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    let kernels = kernels_note();
    let mode = opts.mode;
    let cfg = BigVganConfig::for_mode(mode);
    let voc = random_vocoder(&cfg, opts)?;
    let frames = 2 * mode.sequence(opts.duration).latent_seq_len();
    let mel = (Tensor::randn(0f32, 1f32, (1, cfg.num_mels, frames), &opts.device)? - 4.0)?
        .to_dtype(opts.dtype)?;
    let mut peak = 0f32;
    let times = time_runs(opts.warmup, opts.runs, &opts.device, || {
        let w = voc.forward(&mel)?;
        peak = w
            .abs()?
            .max_all()?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        Ok(())
    })?;
    let item = match mode {
        Mode::Khz16 => "bigvgan_16k_vocode",
        Mode::Khz44 => "bigvgan_v2_44k_vocode",
    };
    let what = format!(
        "BigVGAN{} mel (1, {}, {frames}) -> wav (1, 1, {}), upsample_initial_channel {}",
        if mode == Mode::Khz44 { "-v2" } else { "" },
        cfg.num_mels,
        frames * cfg.hop_length(),
        cfg.upsample_initial_channel
    );
    Ok(vec![
        finish(item, &what, times, opts)
            .with("kernels", kernels)
            .with("wav_peak", peak as f64),
    ])
}
