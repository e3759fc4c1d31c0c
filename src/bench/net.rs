//! `mmaudio bench net`: the flow network at real size with random weights.
//!
//! Items (matching the official reference in `shared/anchors/reference_cpu_timings.json`):
//! * `net_<variant>_fwd_b2` — `forward` (conditions + flow) at batch 2 (cond + uncond rows);
//! * `net_<variant>_cfg_step` — one CFG step as our sampler runs it (conditions precomputed,
//!   cond and uncond in one batch of 2);
//! * `sample_<variant>_<K>steps` — the whole sampling: conditions, empty conditions, K Euler
//!   steps with CFG, unnormalise.

use super::{BenchOpts, BenchReport, time_runs};
use crate::error::Result;
use crate::net::MmAudioNet;
use crate::rng::Rng;
use crate::sampler::{EulerSampler, FeatureSet, SeqLens, generate_latents};
use candle_core::{Device, Tensor};

/// The network of `opts.variant` with random weights (drawn on the bench device).
pub fn random_net(opts: &BenchOpts, seed: u64) -> Result<MmAudioNet> {
    let cfg = opts.variant.net_config();
    let vb = crate::weights::random::RandomWeights::on_device(seed)
        .var_builder(opts.dtype, &opts.device);
    MmAudioNet::new(vb, &cfg)
}

pub fn run(opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    let net = random_net(opts, 1)?;
    let seq = opts.variant.mode().sequence(opts.duration);
    let lens = SeqLens::from(seq);
    let cfg = &net.cfg;
    let dev = &opts.device;
    let mut rng = Rng::new(7);
    let mut randn =
        |shape: &[usize]| -> Result<Tensor> { Ok(rng.randn(shape, &Device::Cpu)?.to_device(dev)?) };
    let params: usize = cfg_param_count(opts)?;
    let v = opts.variant.name();
    let mut reports = vec![];

    // 1. forward at batch 2
    let latent = randn(&[2, lens.latent, cfg.latent_dim])?;
    let clip = randn(&[2, lens.clip, cfg.clip_dim])?;
    let sync = randn(&[2, lens.sync, cfg.sync_dim])?;
    let text = randn(&[2, cfg.text_seq_len, cfg.text_dim])?;
    let times = time_runs(opts.warmup, opts.runs, dev, || {
        net.forward(&latent, &clip, &sync, &text, &[0.3, 0.3])?;
        Ok(())
    })?;
    reports.push(
        BenchReport::new(
            &format!("net_{v}_fwd_b2"),
            "forward (preprocess_conditions + predict_flow), batch 2",
            times,
            opts,
        )
        .with("params_M", params as f64 / 1e6)
        .with("latent_len", lens.latent)
        .with("duration_s", opts.duration),
    );

    // 2. one CFG step with precomputed conditions, cond+uncond batched
    let feats = FeatureSet {
        clip: Some(clip.narrow(0, 0, 1)?),
        sync: Some(sync.narrow(0, 0, 1)?),
        text: Some(text.narrow(0, 0, 1)?),
        negative_text: None,
    };
    let (c, u) = crate::sampler::build_conditions(&net, 1, &feats, lens)?;
    let both = crate::net::Conditions::cat(&[&c, &u])?;
    let x = randn(&[1, lens.latent, cfg.latent_dim])?;
    let t_emb = net.time_embeddings(&[0.5])?;
    let times = time_runs(opts.warmup, opts.runs, dev, || {
        let xx = Tensor::cat(&[&x, &x], 0)?;
        let v = net.predict_flow(&xx, &t_emb, &both)?;
        let _ = crate::sampler::cfg_combine(&v.narrow(0, 0, 1)?, &v.narrow(0, 1, 1)?, 4.5)?;
        Ok(())
    })?;
    reports.push(BenchReport::new(
        &format!("net_{v}_cfg_step"),
        "one CFG step: predict_flow on cond+uncond as one batch of 2, conditions precomputed",
        times,
        opts,
    ));

    // 3. full sampling
    if opts.steps > 0 {
        let sampler = EulerSampler::new(opts.steps, 4.5);
        let x0 = randn(&[1, lens.latent, cfg.latent_dim])?;
        let runs = opts.runs.min(3);
        let times = time_runs(opts.warmup.min(1), runs, dev, || {
            generate_latents(&net, &sampler, &feats, lens, &x0, None, None)?;
            Ok(())
        })?;
        reports.push(
            BenchReport::new(
                &format!("sample_{v}_{}steps", opts.steps),
                "conditions + empty conditions + K Euler steps with CFG (batched) + unnormalise, batch 1",
                times,
                opts,
            )
            .with("steps", opts.steps),
        );
    }
    Ok(reports)
}

fn cfg_param_count(opts: &BenchOpts) -> Result<usize> {
    let cfg = opts.variant.net_config();
    let shapes =
        crate::weights::check::expected_shapes(|vb| MmAudioNet::new(vb, &cfg).map(|_| ()))?;
    Ok(shapes
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum())
}
