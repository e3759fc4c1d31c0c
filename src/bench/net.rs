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
    if opts.count_ops {
        reports.push(count_ops(&net, opts, lens, &mut randn)?);
    }

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

/// Tensor operations (≈ kernel launches on a GPU, see [`crate::opcount`]) of the sampling:
/// the whole `generate_latents` with 1 and with 2 Euler steps (CFG batched), whose
/// difference is one step and whose remainder the per-window part (conditions, empty
/// conditions, time embeddings, unnormalise).
fn count_ops(
    net: &MmAudioNet,
    opts: &BenchOpts,
    lens: SeqLens,
    randn: &mut dyn FnMut(&[usize]) -> Result<Tensor>,
) -> Result<BenchReport> {
    let cfg = &net.cfg;
    let feats = FeatureSet {
        clip: Some(randn(&[1, lens.clip, cfg.clip_dim])?),
        sync: Some(randn(&[1, lens.sync, cfg.sync_dim])?),
        text: Some(randn(&[1, cfg.text_seq_len, cfg.text_dim])?),
        negative_text: None,
    };
    let x0 = randn(&[1, lens.latent, cfg.latent_dim])?;
    let mut counts = vec![];
    let mut times = vec![];
    for steps in [1usize, 2] {
        let sampler = EulerSampler::new(steps, 4.5);
        // a first run outside the count fills the layers' per-shape caches
        generate_latents(net, &sampler, &feats, lens, &x0, None, None)?;
        let t = std::time::Instant::now();
        let (r, n) = crate::opcount::count(|| {
            generate_latents(net, &sampler, &feats, lens, &x0, None, None)
        })
        .map_err(crate::error::Error::config)?;
        r?;
        opts.device.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
        counts.push(n.ops);
    }
    let per_step = counts[1] as i64 - counts[0] as i64;
    let per_window = counts[0] as i64 - per_step;
    let path = if crate::ops::fast_cpu_path(&opts.device, opts.dtype) {
        "fast-cpu"
    } else {
        "generic"
    };
    let v = opts.variant.name();
    eprintln!(
        "ops {v} [{path} {:?}]: {per_step} per sampler step (cond + uncond batched), \
         {per_window} per window besides the steps",
        opts.dtype
    );
    Ok(BenchReport::new(
        &format!("ops_{v}_sampling"),
        "generate_latents with 1 and 2 Euler steps, tensor operations counted",
        times,
        opts,
    )
    .with("ops_per_step", per_step)
    .with("ops_per_window_besides_steps", per_window)
    .with("kernel_path", path))
}
