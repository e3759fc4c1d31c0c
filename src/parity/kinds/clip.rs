//! `clip_vision` and `clip_text`: the open_clip towers as MMAudio calls them.
//!
//! The model configuration is the open_clip model config found in case.json (whichever entry
//! matches the widths of the weight file), inputs are `clip_video` resp. the golden
//! `token_ids` (so no tokenizer is needed), and every golden tensor the model can trace
//! (`patch_embeds`, `block{i}_out`, ...) is compared. The weights are also written to an
//! official-format `.pth` and loaded back through the same loader: the result must be
//! bit-identical.

use crate::features::clip::{ClipConfig, ClipText, ClipVision};
use crate::features::vit::Trace;
use crate::parity::common::{Case, Checker, Outcome, Tensors, Tol, as_i64};
use crate::weights::WeightFile;
use anyhow::{Context, Result, anyhow, bail};
use candle_core::{DType, Device, IndexOp, Tensor};
use std::path::Path;
use std::sync::Arc;

/// The open_clip model config of the case: every object in case.json that looks like one
/// (`vision_cfg` + `text_cfg`, possibly under `model_cfg`) is a candidate; the one whose
/// widths match the weight file wins.
fn clip_config(case: &Case, wf: &WeightFile) -> Result<ClipConfig> {
    let obj = case
        .json
        .as_object()
        .ok_or_else(|| anyhow!("case.json is not an object"))?;
    let mut tried = Vec::new();
    for (k, v) in obj {
        let inner = v.get("model_cfg").unwrap_or(v);
        if inner.get("vision_cfg").is_none() || inner.get("text_cfg").is_none() {
            continue;
        }
        let cfg = match ClipConfig::from_open_clip_json(v) {
            Ok(c) => c,
            Err(e) => {
                tried.push(format!("{k} ({e})"));
                continue;
            }
        };
        let fits = |key: &str, want: usize| wf.shape(key).map(|s| s.last() == Some(&want));
        let vis = fits("visual.class_embedding", cfg.vision.width);
        let txt = fits("token_embedding.weight", cfg.text.width);
        if vis != Some(false) && txt != Some(false) && (vis.is_some() || txt.is_some()) {
            return Ok(cfg);
        }
        tried.push(k.clone());
    }
    bail!("no open_clip model config in case.json matches the weights (tried {tried:?})")
}

pub fn run_vision(case: &Case, chk: &mut Checker) -> Result<Outcome> {
    let dev = case.device().clone();
    let wpath = case.weights_path()?;
    let wf = Arc::new(WeightFile::open(&wpath)?);
    let cfg = clip_config(case, &wf)?;
    let model = ClipVision::load(&wf, &cfg, case.dtype(), &dev)?;
    let inputs = case.inputs()?;
    let golden = case.outputs()?;
    let video = inputs
        .get("clip_video")
        .ok_or_else(|| anyhow!("input `clip_video` missing"))?;

    let mut trace = Trace::on();
    let feats = model.encode_video_traced(video, &mut trace)?;
    chk.check(case, "clip_features", &feats, &golden, true)?;
    compare_traced(case, chk, &trace, &golden, &["clip_features"])?;

    // the same weights through an official-format .pth
    let again = pth_roundtrip(case, &wpath, |wf| {
        Ok(ClipVision::load(wf, &cfg, DType::F32, &dev)?.encode_video(video)?)
    })?;
    chk.close(
        "clip_features (.pth weights)",
        &again,
        &feats,
        Tol {
            atol: 0.0,
            rtol: 0.0,
        },
    )?;
    Ok(Outcome::Ran)
}

pub fn run_text(case: &Case, chk: &mut Checker) -> Result<Outcome> {
    let dev = case.device().clone();
    let wpath = case.weights_path()?;
    let wf = Arc::new(WeightFile::open(&wpath)?);
    let cfg = clip_config(case, &wf)?;
    let model = ClipText::load(&wf, &cfg, case.dtype(), &dev)?;
    let golden = case.outputs()?;
    let ids = golden
        .get("token_ids")
        .ok_or_else(|| anyhow!("golden `token_ids` missing (the input of the text tower)"))?;
    let (b, l) = ids.dims2()?;
    let host = as_i64(ids)?;
    // the ids are the tower's input here; they must also be what our tokenizer makes of the
    // case's prompts
    let inputs = case.inputs()?;
    if let (Some(bytes), Some(offs)) = (
        inputs.get("prompts_utf8"),
        inputs.get("prompts_utf8_offsets"),
    ) {
        let bytes: Vec<u8> = as_i64(bytes)?.into_iter().map(|v| v as u8).collect();
        let offs = as_i64(offs)?;
        let prompts: Vec<String> = offs
            .windows(2)
            .map(|w| String::from_utf8(bytes[w[0] as usize..w[1] as usize].to_vec()))
            .collect::<std::result::Result<_, _>>()?;
        let tok = crate::features::tokenizer::ClipTokenizer::shared();
        let ours: Vec<i64> = prompts
            .iter()
            .flat_map(|p| tok.tokenize(p).into_iter().map(i64::from))
            .collect();
        chk.exact("token_ids", &ours, &host);
    } else {
        chk.not_compared(
            "token_ids",
            "no prompts in the inputs: used as the tower's input only",
        );
    }
    let ids = Tensor::from_vec(host.clone(), (b, l), &dev)?;

    let mut trace = Trace::on();
    let feats = model.encode_ids_traced(&ids, &mut trace)?;
    chk.check(case, "text_features", &feats, &golden, true)?;
    compare_traced(
        case,
        chk,
        &trace,
        &golden,
        &[
            "text_features",
            "token_ids",
            "unused_standard_pooled_projected",
        ],
    )?;

    // open_clip's standard (unpatched) encode_text, which MMAudio does NOT use: ln_final at
    // the argmax (EOT) token @ text_projection. Checks that our ln_final rows are the ones
    // open_clip pools, and documents the difference.
    if golden.contains_key("unused_standard_pooled_projected") {
        let ln = trace
            .get("ln_final_out")
            .ok_or_else(|| anyhow!("ln_final_out not traced"))?;
        let proj = wf.load("text_projection", case.dtype(), &dev)?;
        let rows = (0..b)
            .map(|i| {
                let row = &host[i * l..(i + 1) * l];
                // torch.argmax returns the first maximal index
                let mut best = 0;
                for (j, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = j;
                    }
                }
                ln.i((i, best))?.unsqueeze(0)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let pooled = Tensor::cat(&rows, 0)?.matmul(&proj)?;
        chk.check(
            case,
            "unused_standard_pooled_projected",
            &pooled,
            &golden,
            false,
        )?;
    }

    let again = pth_roundtrip(case, &wpath, |wf| {
        Ok(ClipText::load(wf, &cfg, DType::F32, &dev)?.encode_ids(&ids)?)
    })?;
    chk.close(
        "text_features (.pth weights)",
        &again,
        &feats,
        Tol {
            atol: 0.0,
            rtol: 0.0,
        },
    )?;

    // the L2 normalisation is per token: every row has unit norm
    let norms = feats.sqr()?.sum(2)?;
    let ones = Tensor::ones_like(&norms)?;
    chk.close(
        "text_features row norms",
        &norms,
        &ones,
        Tol {
            atol: 1e-5,
            rtol: 0.0,
        },
    )?;
    Ok(Outcome::Ran)
}

/// Compare every golden tensor that the model traced under the same name (intermediates),
/// except `skip` (compared by the caller). Golden tensors the model does not produce are
/// listed in a note.
pub fn compare_traced(
    case: &Case,
    chk: &mut Checker,
    trace: &Trace,
    golden: &Tensors,
    skip: &[&str],
) -> Result<()> {
    let mut names: Vec<&String> = golden.keys().collect();
    names.sort();
    let mut missing = Vec::new();
    for name in names {
        if skip.contains(&name.as_str()) {
            continue;
        }
        match trace.get(name) {
            Some(t) => chk.check(case, name, t, golden, false)?,
            None => missing.push(name.as_str()),
        }
    }
    if !missing.is_empty() {
        chk.notes.push(format!(
            "golden tensors not compared: {}",
            missing.join(", ")
        ));
    }
    Ok(())
}

/// Write the case's weights as an official-format `.pth` (`torch.save(state_dict)`), open it
/// through `WeightFile` and run `f` on it.
pub fn pth_roundtrip(
    case: &Case,
    weights: &Path,
    f: impl FnOnce(&Arc<WeightFile>) -> Result<Tensor>,
) -> Result<Tensor> {
    let tensors = candle_core::safetensors::load(weights, &Device::Cpu)
        .with_context(|| format!("loading {}", weights.display()))?;
    let mut list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let path = std::env::temp_dir().join(format!(
        "mmaudio-parity-{}-{}.pth",
        case.name,
        std::process::id()
    ));
    crate::weights::write_pth(&path, &list, None)?;
    let res = WeightFile::open(&path)
        .map_err(anyhow::Error::from)
        .and_then(|wf| f(&Arc::new(wf)));
    let _ = std::fs::remove_file(&path);
    res.with_context(|| format!("with weights written to {}", path.display()))
}
