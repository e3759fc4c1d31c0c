//! `synchformer`: MotionFormer (`vfeat_extractor`) with MMAudio's segmenting
//! (`encode_video_with_sync`).
//!
//! The configuration is the MotionFormer config found in case.json (an object with a `VIT`
//! section, or a flat one with `EMBED_DIM`; the one whose width matches the weights wins).
//! Every golden tensor the model traces is compared, and the weights are also loaded back
//! from an official-format `.pth` (bit-identical result required).

use super::clip::{compare_traced, pth_roundtrip};
use crate::features::synchformer::{Synchformer, SynchformerConfig};
use crate::features::vit::Trace;
use crate::parity::common::{Case, Checker, Outcome, Tol};
use crate::weights::WeightFile;
use anyhow::{Result, anyhow, bail};
use candle_core::DType;
use std::sync::Arc;

fn sync_config(case: &Case, wf: &WeightFile) -> Result<SynchformerConfig> {
    let obj = case
        .json
        .as_object()
        .ok_or_else(|| anyhow!("case.json is not an object"))?;
    let width = wf
        .shape("vfeat_extractor.cls_token")
        .and_then(|s| s.last().copied())
        .ok_or_else(|| anyhow!("weights have no vfeat_extractor.cls_token"))?;
    let mut tried = Vec::new();
    for (k, v) in obj {
        let vit = v.get("VIT").unwrap_or(v);
        if vit.get("EMBED_DIM").is_none() {
            continue;
        }
        let cfg = match SynchformerConfig::from_motionformer_cfg(v) {
            Ok(c) => c,
            Err(e) => {
                tried.push(format!("{k} ({e})"));
                continue;
            }
        };
        if cfg.embed_dim == width {
            return Ok(cfg);
        }
        tried.push(k.clone());
    }
    bail!("no MotionFormer config in case.json matches width {width} (tried {tried:?})")
}

pub fn run(case: &Case, chk: &mut Checker) -> Result<Outcome> {
    let dev = case.device().clone();
    let wpath = case.weights_path()?;
    let wf = Arc::new(WeightFile::open(&wpath)?);
    let cfg = sync_config(case, &wf)?;
    let model = Synchformer::load(&wf, &cfg, case.dtype(), &dev)?;
    let inputs = case.inputs()?;
    let golden = case.outputs()?;
    let video = inputs
        .get("sync_video")
        .ok_or_else(|| anyhow!("input `sync_video` missing"))?;

    let mut trace = Trace::on();
    let feats = model.encode_video_traced(video, &mut trace)?;
    chk.check(case, "sync_features", &feats, &golden, true)?;
    compare_traced(case, chk, &trace, &golden, &["sync_features"])?;

    // one segment per forward pass (as MMAudio with batch 1) and weights from a .pth
    let again = pth_roundtrip(case, &wpath, |wf| {
        let mut m = Synchformer::load(wf, &cfg, DType::F32, &dev)?;
        m.max_batch = 1;
        Ok(m.encode_video(video)?)
    })?;
    chk.close(
        "sync_features (.pth, 1 segment per pass)",
        &again,
        &feats,
        Tol {
            atol: 1e-6,
            rtol: 0.0,
        },
    )?;
    Ok(Outcome::Ran)
}
