//! `vae_decoder` / `vae_encoder`: the MMAudio mel VAE, from the raw checkpoint form (weight
//! normalisation applied at load time, checked against `weights_wn_removed.safetensors`).

use crate::parity::common::{Case, Checker, Outcome, Tensors};
use crate::vae::{Vae, VaeConfig, VaeParts, VaeWeights, mp_weight_normalize};
use crate::vocoder::ops;
use crate::weights::WeightFile;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

fn config(case: &Case) -> Result<VaeConfig> {
    let n = |k: &str| -> Result<usize> { Ok(case.num(&format!("constructor_args/{k}"))? as usize) };
    Ok(VaeConfig {
        data_dim: n("data_dim")?,
        embed_dim: n("embed_dim")?,
        hidden_dim: n("hidden_dim")?,
    })
}

fn load(
    case: &Case,
    cfg: &VaeConfig,
    path: &std::path::Path,
    parts: VaeParts,
    form: VaeWeights,
) -> Result<Vae> {
    let wf = Arc::new(WeightFile::open(path)?);
    let vae = Vae::new(
        cfg,
        wf.var_builder(case.dtype(), case.device()),
        parts,
        form,
    )
    .with_context(|| format!("building the VAE from {}", path.display()))?;
    wf.check_all_used("the VAE", |k| {
        (!parts.encoder && k.starts_with("encoder."))
            || (!parts.decoder && k.starts_with("decoder."))
    })?;
    Ok(vae)
}

/// The load-time normalisation (`mp_weight_normalize`, what `Vae::load` applies to every
/// conv) must reproduce the official `remove_weight_norm()` result for every conv weight.
fn check_normalization(case: &Case, chk: &mut Checker) -> Result<()> {
    let rel = match case
        .json
        .get("weights_effective_file")
        .and_then(|v| v.as_str())
    {
        Some(r) => r.to_string(),
        None => "weights_wn_removed.safetensors".into(),
    };
    let path = case.dir.join(rel);
    if !path.is_file() {
        chk.notes
            .push("no weights_wn_removed file: normalisation not checked".into());
        return Ok(());
    }
    let raw = WeightFile::open(case.weights_path()?)?;
    let eff = WeightFile::open(&path)?;
    let tol = mmaudio_tol();
    let mut n = 0;
    for key in raw.keys() {
        if !key.ends_with(".weight") || raw.shape(&key).map(|s| s.len()) != Some(3) {
            continue;
        }
        let w = mp_weight_normalize(&raw.load(&key, DType::F32, &Device::Cpu)?)?;
        let g = eff.load(&key, DType::F32, &Device::Cpu)?;
        let mut probe = Checker::default();
        probe.close(&key, &w, &g, tol)?;
        chk.max_abs = chk.max_abs.max(probe.max_abs);
        chk.failures.extend(probe.failures);
        n += 1;
    }
    chk.compared += 1;
    chk.notes.push(format!(
        "load-time MP weight normalisation checked on {n} conv weights"
    ));
    Ok(())
}

fn mmaudio_tol() -> crate::parity::common::Tol {
    crate::parity::common::Tol {
        atol: 1e-7,
        rtol: 1e-5,
    }
}

fn compare(
    case: &Case,
    chk: &mut Checker,
    got: &Tensors,
    golden: &Tensors,
    main: &[&str],
) -> Result<()> {
    let outputs = case.at("outputs")?.as_object().context("outputs")?;
    for name in outputs.keys() {
        match got.get(name) {
            Some(t) => chk.check(case, name, t, golden, main.contains(&name.as_str()))?,
            None => chk.fail(format!("output `{name}` was not produced")),
        }
    }
    Ok(())
}

pub fn run_decoder(case: &Case, chk: &mut Checker) -> Result<Outcome> {
    let cfg = config(case)?;
    let inputs = case.inputs()?;
    let golden = case.outputs()?;
    let z = inputs.get("z").context("input `z` missing")?;
    let vae = load(
        case,
        &cfg,
        &case.weights_path()?,
        VaeParts::DECODER,
        VaeWeights::Raw,
    )?;
    check_normalization(case, chk)?;
    let mut got: Tensors = HashMap::new();
    let mel = vae.decode_with_hook(z, &mut |n: &str, t: &Tensor| {
        got.insert(n.to_string(), t.clone());
    })?;
    got.insert("mel".into(), mel.clone());
    compare(case, chk, &got, &golden, &["mel"])?;

    let tol = case.tol("mel", true);
    // the normalised state dict, used as is
    let eff = case.dir.join(
        case.json
            .get("weights_effective_file")
            .and_then(|v| v.as_str())
            .unwrap_or("weights_wn_removed.safetensors"),
    );
    if eff.is_file() {
        let v = load(case, &cfg, &eff, VaeParts::DECODER, VaeWeights::Normalized)?;
        chk.close(
            "mel[normalized weights]",
            &v.decode(z)?,
            &golden["mel"],
            tol,
        )?;
    }
    // official .pth form (flat state dict)
    let wf = WeightFile::open(case.weights_path()?)?;
    let mut tensors = Vec::new();
    for k in wf.keys() {
        let t = wf.load(&k, DType::F32, &Device::Cpu)?;
        tensors.push((k, t));
    }
    let dir = std::env::temp_dir().join(format!("mmaudio-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pth = dir.join(format!("{}.pth", case.name));
    crate::weights::write_pth(&pth, &tensors, None)?;
    let v = Vae::load(&cfg, &pth, VaeParts::DECODER, case.dtype(), case.device());
    let _ = std::fs::remove_file(&pth);
    let _ = std::fs::remove_dir(&dir); // if no other case is using it
    chk.close("mel[pth]", &v?.decode(z)?, &golden["mel"], tol)?;

    // the fixture is narrow: force the wide-layer Winograd path through the model too
    ops::set_im2col_max_cin(0);
    let wino = load(
        case,
        &cfg,
        &case.weights_path()?,
        VaeParts::DECODER,
        VaeWeights::Raw,
    )
    .and_then(|v| Ok(v.decode(z)?));
    ops::set_im2col_max_cin(128);
    chk.close("mel[winograd F(2,3)]", &wino?, &golden["mel"], tol)?;

    let fast_before = ops::fast_cpu_kernels();
    ops::set_fast_cpu_kernels(false);
    let generic = load(
        case,
        &cfg,
        &case.weights_path()?,
        VaeParts::DECODER,
        VaeWeights::Raw,
    )
    .and_then(|v| Ok(v.decode(z)?));
    ops::set_fast_cpu_kernels(fast_before);
    chk.close("mel[generic kernels]", &generic?, &golden["mel"], tol)?;
    Ok(Outcome::Ran)
}

pub fn run_encoder(case: &Case, chk: &mut Checker) -> Result<Outcome> {
    let cfg = config(case)?;
    let inputs = case.inputs()?;
    let golden = case.outputs()?;
    let mel = inputs.get("mel").context("input `mel` missing")?;
    let vae = load(
        case,
        &cfg,
        &case.weights_path()?,
        VaeParts::ENCODER,
        VaeWeights::Raw,
    )?;
    check_normalization(case, chk)?;
    let mut got: Tensors = HashMap::new();
    let post = vae.encode_with_hook(mel, &mut |n: &str, t: &Tensor| {
        got.insert(n.to_string(), t.clone());
    })?;
    got.insert("moments".into(), post.moments.clone());
    got.insert("mean".into(), post.mean.clone());
    got.insert("logvar".into(), post.logvar.clone());
    got.insert("std".into(), post.std.clone());
    compare(
        case,
        chk,
        &got,
        &golden,
        &["moments", "mean", "logvar", "std"],
    )?;

    ops::set_im2col_max_cin(0);
    let wino = load(
        case,
        &cfg,
        &case.weights_path()?,
        VaeParts::ENCODER,
        VaeWeights::Raw,
    )
    .and_then(|v| Ok(v.encode(mel)?));
    ops::set_im2col_max_cin(128);
    chk.close(
        "moments[winograd F(2,3)]",
        &wino?.moments,
        &golden["moments"],
        case.tol("moments", true),
    )?;

    let fast_before = ops::fast_cpu_kernels();
    ops::set_fast_cpu_kernels(false);
    let generic = load(
        case,
        &cfg,
        &case.weights_path()?,
        VaeParts::ENCODER,
        VaeWeights::Raw,
    )
    .and_then(|v| Ok(v.encode(mel)?));
    ops::set_fast_cpu_kernels(fast_before);
    chk.close(
        "moments[generic kernels]",
        &generic?.moments,
        &golden["moments"],
        case.tol("moments", true),
    )?;
    Ok(Outcome::Ran)
}
