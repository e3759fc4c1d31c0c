//! `bigvgan` (MMAudio's 16 kHz BigVGAN) and `bigvgan_v2` (NVIDIA BigVGAN-v2 44.1 kHz).
//!
//! Runs the fixture weights (plain form) with the intermediates, then the same model from the
//! legacy weight-norm file, from an official-format `.pth` (`{"generator": state_dict}`), and
//! through the generic (device-independent) kernels; all must reproduce `wav`.

use crate::parity::common::{Case, Checker, Outcome, Tensors};
use crate::vocoder::{BigVgan, BigVganConfig, ops};
use crate::weights::WeightFile;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

pub fn run_bigvgan(case: &Case, chk: &mut Checker) -> Result<Outcome> {
    run(case, chk, false)
}

pub fn run_bigvgan_v2(case: &Case, chk: &mut Checker) -> Result<Outcome> {
    run(case, chk, true)
}

fn config(case: &Case, v2: bool) -> Result<BigVganConfig> {
    let hp = case.at("constructor_hparams")?;
    let mut cfg = BigVganConfig::from_json_str(&hp.to_string())?;
    if !v2 {
        // the v1 class has no such switches: conv_post always has a bias, output is tanh
        cfg.use_tanh_at_final = true;
        cfg.use_bias_at_final = true;
    }
    Ok(cfg)
}

fn load(case: &Case, cfg: &BigVganConfig, path: &std::path::Path) -> Result<BigVgan> {
    let wf = Arc::new(WeightFile::open(path)?);
    let m = BigVgan::new(cfg, wf.var_builder(case.dtype(), case.device()))
        .with_context(|| format!("building the vocoder from {}", path.display()))?;
    wf.check_all_used("the vocoder", |_| false)?;
    Ok(m)
}

/// The official stage loop accumulates in place (`xs = resblocks[0](x); xs += ...`), so a
/// forward hook on `resblocks.0` that keeps the returned tensor ends up holding the SUM of the
/// stage's AMP blocks. Accept the golden as either the block's own output or that aliased sum
/// (saying which), never anything else: the candidate nearer the golden is checked (so a
/// reduced-precision run, which passes neither f32 tolerance, still reports the right one).
fn check_block_out(
    case: &Case,
    chk: &mut Checker,
    own: &Tensor,
    got: &Tensors,
    golden: &Tensors,
) -> Result<()> {
    let name = "resblocks.0.out";
    let sum = got
        .get("stage.0.amp_sum")
        .context("stage.0.amp_sum missing")?;
    let want = golden
        .get(name)
        .with_context(|| format!("golden {name} missing"))?
        .to_dtype(DType::F32)?;
    let dist = |t: &Tensor| -> Result<f32> {
        let t = t.to_dtype(DType::F32)?.to_device(want.device())?;
        if t.dims() != want.dims() {
            return Ok(f32::INFINITY);
        }
        Ok((t - &want)?.abs()?.max_all()?.to_scalar::<f32>()?)
    };
    if dist(sum)? < dist(own)? {
        chk.notes.push(
            "golden resblocks.0.out is the in-place-aliased sum of stage 0's AMP blocks \
             (official `xs += ...`); compared with our stage.0.amp_sum"
                .into(),
        );
        return chk.check(case, name, sum, golden, false);
    }
    chk.check(case, name, own, golden, false)
}

fn run(case: &Case, chk: &mut Checker, v2: bool) -> Result<Outcome> {
    let cfg = config(case, v2)?;
    let inputs = case.inputs()?;
    let golden = case.outputs()?;
    let mel = inputs.get("mel").context("input `mel` missing")?;

    let model = load(case, &cfg, &case.weights_path()?)?;
    let mut got: Tensors = HashMap::new();
    let wav = model.forward_with_hook(mel, &mut |name: &str, t: &Tensor| {
        got.insert(name.to_string(), t.clone());
    })?;
    chk.check(case, "wav", &wav, &golden, true)?;
    let outputs = case.at("outputs")?.as_object().context("outputs")?;
    for name in outputs.keys().filter(|n| n.as_str() != "wav") {
        match got.get(name) {
            Some(t) if name == "resblocks.0.out" => check_block_out(case, chk, t, &got, &golden)?,
            Some(t) => chk.check(case, name, t, &golden, false)?,
            None => chk.fail(format!("intermediate `{name}` was not produced")),
        }
    }

    // our Kaiser-sinc filter (used when a checkpoint lacks the buffers) vs the official ones
    let wf = WeightFile::open(case.weights_path()?)?;
    let ours = Tensor::from_vec(
        ops::kaiser_sinc_filter(0.25, 0.3, ops::AA_KERNEL),
        (1, 1, ops::AA_KERNEL),
        &Device::Cpu,
    )?;
    let filter_tol = crate::parity::common::Tol {
        atol: 1e-7,
        rtol: 1e-5,
    };
    for key in [
        "activation_post.upsample.filter",
        "activation_post.downsample.lowpass.filter",
    ] {
        if wf.contains(key) {
            let g = wf.load(key, DType::F32, &Device::Cpu)?;
            chk.close(&format!("kaiser filter vs {key}"), &ours, &g, filter_tol)?;
        }
    }

    let tol_wav = case.tol("wav", true);
    // legacy weight-norm checkpoint (weight_g / weight_v), folded at load time
    let wn = case.file("weights_weightnorm.safetensors");
    if wn.is_file() {
        let m = load(case, &cfg, &wn)?;
        let w = m.forward(mel)?;
        chk.close("wav[weightnorm]", &w, &golden["wav"], tol_wav)?;
        chk.close("wav[weightnorm vs plain]", &w, &wav, tol_wav)?;

        // the same as an official-format .pth: {"generator": state_dict}
        let wf = WeightFile::open(&wn)?;
        let mut tensors = Vec::new();
        for k in wf.keys() {
            let t = wf.load(&k, DType::F32, &Device::Cpu)?;
            tensors.push((k, t));
        }
        let dir = std::env::temp_dir().join(format!("mmaudio-parity-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let pth = dir.join(format!("{}_generator.pt", case.name));
        crate::weights::write_pth(&pth, &tensors, Some("generator"))?;
        let m = BigVgan::load(&cfg, &pth, Some("generator"), case.dtype(), case.device());
        let _ = std::fs::remove_file(&pth);
        let _ = std::fs::remove_dir(&dir); // if no other case is using it
        let w = m?.forward(mel)?;
        chk.close("wav[pth generator]", &w, &golden["wav"], tol_wav)?;
    } else {
        chk.notes
            .push("no weights_weightnorm.safetensors: weight-norm load not checked".into());
    }

    // the fixture is narrow (every conv takes the im2col path): force the wide-layer
    // Winograd paths through the whole model as well
    ops::set_im2col_max_cin(0);
    for tile in [4usize, 2] {
        ops::set_winograd_tile(tile);
        let w = load(case, &cfg, &case.weights_path()?).and_then(|m| Ok(m.forward(mel)?));
        chk.close(
            &format!("wav[winograd F({tile},3)]"),
            &w?,
            &golden["wav"],
            tol_wav,
        )?;
    }
    ops::set_winograd_tile(4);
    ops::set_im2col_max_cin(128);

    // generic kernels (what CUDA / f16 / bf16 run)
    let fast_before = ops::fast_cpu_kernels();
    ops::set_fast_cpu_kernels(false);
    let generic = load(case, &cfg, &case.weights_path()?).and_then(|m| Ok(m.forward(mel)?));
    ops::set_fast_cpu_kernels(fast_before);
    chk.close("wav[generic kernels]", &generic?, &golden["wav"], tol_wav)?;
    Ok(Outcome::Ran)
}
