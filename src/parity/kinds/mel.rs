//! `mel`: the official mel converter. Parameters come from `case.json["params"]`; the filter
//! bank and window are computed by us and checked against the fixture buffers.

use crate::mel::{LogKind, MelConverter, MelParams};
use crate::parity::common::{Case, Checker, Outcome, Tol};
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};

pub fn run(case: &Case, chk: &mut Checker) -> Result<Outcome> {
    let p = case.at("params")?;
    let num = |k: &str| -> Result<f64> {
        p.get(k)
            .and_then(|v| v.as_f64())
            .with_context(|| format!("params.{k} missing"))
    };
    let log = match p.get("log").and_then(|v| v.as_str()) {
        Some("log10") => LogKind::Log10,
        Some("ln") | Some("log") => LogKind::Ln,
        other => bail!("unknown log kind {other:?}"),
    };
    let params = MelParams {
        sampling_rate: num("sampling_rate")?,
        n_fft: num("n_fft")? as usize,
        num_mels: num("num_mels")? as usize,
        hop_size: num("hop_size")? as usize,
        win_size: num("win_size")? as usize,
        fmin: num("fmin")?,
        fmax: num("fmax")?,
        log,
    };
    let conv = MelConverter::new(params.clone())?;
    let n_freq = params.n_fft / 2 + 1;

    let w = candle_core::safetensors::load(case.weights_path()?, &Device::Cpu)?;
    let basis = Tensor::from_slice(conv.mel_basis(), (params.num_mels, n_freq), &Device::Cpu)?;
    let basis_tol = Tol {
        atol: 1e-8,
        rtol: 1e-5,
    };
    chk.close(
        "mel_basis",
        &basis,
        w.get("mel_basis").context("mel_basis")?,
        basis_tol,
    )?;
    let win = Tensor::from_slice(conv.window(), params.win_size, &Device::Cpu)?;
    let win_tol = Tol {
        atol: 1e-7,
        rtol: 1e-5,
    };
    chk.close(
        "hann_window",
        &win,
        w.get("hann_window").context("hann_window")?,
        win_tol,
    )?;

    let inputs = case.inputs()?;
    let golden = case.outputs()?;
    let wav = inputs.get("wav").context("input `wav` missing")?;
    let out = conv.forward_full(wav)?;
    chk.check(case, "mel", &out.mel, &golden, true)?;
    chk.check(case, "linear_magnitude", &out.magnitude, &golden, false)?;
    Ok(Outcome::Ran)
}
