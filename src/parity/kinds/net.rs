//! `mmaudio_net`: the MMAudio network against the official module (conditions, flow,
//! intermediates, empty conditions, CFG, latent (un)normalisation).

use crate::NetConfig;
use crate::net::{MmAudioNet, Trace};
use crate::parity::common::{Case, Checker, Outcome};
use crate::sampler::cfg_combine;
use anyhow::{Context, Result};
use candle_core::Tensor;

pub fn load_net(case: &Case, cfg: &NetConfig) -> Result<MmAudioNet> {
    let path = case.weights_path()?;
    MmAudioNet::load_file(&path, cfg, case.dtype(), case.device())
        .with_context(|| format!("loading {}", path.display()))
}

pub fn config(case: &Case) -> Result<NetConfig> {
    let args = case.at("constructor_args")?.clone();
    serde_json::from_value(args).context("constructor_args")
}

pub fn run(case: &Case, chk: &mut Checker) -> Result<Outcome> {
    let cfg = config(case)?;
    let mut net = load_net(case, &cfg)?;
    net.trace = Trace::enabled();
    let inp = case.inputs()?;
    let gold = case.outputs()?;
    let latent = &inp["latent"];
    let t: Vec<f32> = inp["t"].to_vec1()?;
    let n = latent.dim(1)?;
    let b = latent.dim(0)?;

    let cond = net.preprocess_conditions(&inp["clip_f"], &inp["sync_f"], &inp["text_f"], n)?;
    for (name, tensor) in [
        ("cond.clip_f", &cond.clip_f),
        ("cond.sync_f", &cond.sync_f()?),
        ("cond.text_f", &cond.text_f),
        ("cond.clip_f_c", &cond.clip_f_c),
        ("cond.text_f_c", &cond.text_f_c),
    ] {
        chk.check(case, name, tensor, &gold, true)?;
    }
    for (name, rot) in [
        ("latent_rot", &cond.latent_rot),
        ("clip_rot", &cond.clip_rot),
    ] {
        if gold.contains_key(name) {
            chk.check(case, name, &rot.as_rotation_matrices()?, &gold, false)?;
        }
    }
    let t_emb = net.time_embeddings(&t)?;
    let flow = net.predict_flow(latent, &t_emb, &cond)?;
    chk.check(case, "flow", &flow, &gold, true)?;
    let trace = net.trace.take();
    let mut names: Vec<&String> = gold.keys().collect();
    names.sort();
    for name in names {
        if let Some(t) = trace.get(name.as_str()) {
            chk.check(case, name, t, &gold, false)?;
        }
    }
    net.trace = Trace::default();

    // unconditional branch, computed at batch 1 like the official get_empty_conditions
    let clip_len = inp["clip_f"].dim(1)?;
    let sync_len = inp["sync_f"].dim(1)?;
    let empty = net.empty_conditions(1, n, clip_len, sync_len, None)?;
    for (name, tensor) in [
        ("empty.clip_f", &empty.clip_f),
        ("empty.sync_f", &empty.sync_f()?),
        ("empty.text_f", &empty.text_f),
        ("empty.clip_f_c", &empty.clip_f_c),
        ("empty.text_f_c", &empty.text_f_c),
    ] {
        chk.check(case, name, tensor, &gold, true)?;
    }
    let empty_b = empty.expand(b)?;
    let flow_uncond = net.predict_flow(latent, &t_emb, &empty_b)?;
    chk.check(case, "flow_uncond", &flow_uncond, &gold, true)?;

    // ode_wrapper at the scalar cfg_t
    let cfg_t = case.num("cfg_t")? as f32;
    let cfg_strength = case.num("cfg_strength")?;
    let te = net.time_embeddings(&[cfg_t])?;
    let vc = net.predict_flow(latent, &te, &cond)?;
    let v = if cfg_strength >= 1.0 {
        cfg_combine(&vc, &net.predict_flow(latent, &te, &empty_b)?, cfg_strength)?
    } else {
        vc
    };
    chk.check(case, "ode_wrapper_cfg", &v, &gold, true)?;

    // the other convolution paths (im2col as on GPUs, Winograd F(2,3)) give the same flow
    for tile in [0, 2] {
        crate::ops::set_net_winograd_tile(Some(tile));
        let other = load_net(case, &cfg);
        crate::ops::set_net_winograd_tile(None);
        let f = other?.forward(latent, &inp["clip_f"], &inp["sync_f"], &inp["text_f"], &t)?;
        chk.check(case, "flow", &f, &gold, true)?;
    }

    chk.check(
        case,
        "latent_normalized",
        &net.normalize(latent)?,
        &gold,
        true,
    )?;
    chk.check(
        case,
        "latent_unnormalized",
        &net.unnormalize(latent)?,
        &gold,
        true,
    )?;
    let _: &Tensor = latent;
    Ok(Outcome::Ran)
}
