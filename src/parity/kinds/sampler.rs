//! `flow_sampler`: the Euler/CFG sampler as `eval_utils.generate` runs it, in the modes the
//! case lists (`av`, `t2a`, `neg`, ...), from the fixture's `x0`.

use crate::NetConfig;
use crate::net::MmAudioNet;
use crate::parity::common::{Case, Checker, Outcome};
use crate::sampler::{EulerSampler, FeatureSet, SeqLens, StepRecord, generate_latents};
use anyhow::{Result, bail};
use candle_core::{Device, Tensor};

fn net_config(case: &Case) -> Result<NetConfig> {
    // the constructor args sit in the case itself or in its `network_case` entry (an object
    // with `constructor_args`, or the name of a sibling network case)
    if let Ok(args) = case.at("constructor_args") {
        return Ok(serde_json::from_value(args.clone())?);
    }
    let net_case = case.at("network_case")?;
    if let Some(args) = net_case.get("constructor_args") {
        return Ok(serde_json::from_value(args.clone())?);
    }
    let name = match net_case {
        serde_json::Value::String(s) => s.clone(),
        v => match v.get("case").and_then(|c| c.as_str()) {
            Some(s) => s.to_string(),
            None => bail!("network_case names no case and has no constructor_args"),
        },
    };
    let dir = case.dir.parent().unwrap().join(name);
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json"))?)?;
    Ok(serde_json::from_value(j["constructor_args"].clone())?)
}

pub fn run(case: &Case, chk: &mut Checker) -> Result<Outcome> {
    let cfg = net_config(case)?;
    let net = MmAudioNet::load_file(&case.weights_path()?, &cfg, case.dtype(), case.device())?;
    let inp = case.inputs()?;
    let gold = case.outputs()?;
    let steps = case.num("num_steps")? as usize;
    let cfg_strength = case.num("cfg_strength")?;
    let x0 = &inp["x0"];
    let lens = SeqLens {
        latent: x0.dim(1)?,
        clip: inp["clip_f"].dim(1)?,
        sync: inp["sync_f"].dim(1)?,
    };
    let sampler = EulerSampler::new(steps, cfg_strength);
    let modes: Vec<String> = case
        .at("modes")?
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if modes.is_empty() {
        bail!("case.json lists no modes");
    }
    for mode in modes {
        let mut f = FeatureSet {
            clip: None,
            sync: None,
            text: Some(inp["text_f"].clone()),
            negative_text: None,
        };
        match mode.as_str() {
            "av" => {
                f.clip = Some(inp["clip_f"].clone());
                f.sync = Some(inp["sync_f"].clone());
            }
            "t2a" => {}
            "neg" => {
                f.clip = Some(inp["clip_f"].clone());
                f.sync = Some(inp["sync_f"].clone());
                f.negative_text = Some(inp["neg_text_f"].clone());
            }
            other => {
                chk.notes
                    .push(format!("mode `{other}` not known to the runner; skipped"));
                continue;
            }
        }
        let mut xs: Vec<Tensor> = vec![];
        let mut ts: Vec<f32> = vec![];
        let (mut vcfg, mut vc, mut vu) = (vec![], vec![], vec![]);
        let mut obs = |r: &StepRecord| {
            xs.push(r.x.clone());
            ts.push(r.t);
            vcfg.push(r.v_cfg.clone());
            vc.push(r.v_cond.clone());
            if let Some(u) = r.v_uncond {
                vu.push(u.clone());
            }
        };
        let x1u = generate_latents(&net, &sampler, &f, lens, x0, None, Some(&mut obs))?;
        // x1 normalised straight from the integration: the last state
        let last = {
            // recompute from the last record: x_K = x_{K-1} + dt v
            let grid = crate::sampler::euler_grid(steps);
            (xs.last().unwrap() + (vcfg.last().unwrap() * (grid[steps] - grid[steps - 1]) as f64)?)?
        };
        xs.push(last.clone());
        let p = |n: &str| format!("{mode}.{n}");
        let stack = |v: &[Tensor]| Tensor::stack(v, 0);
        chk.check(case, &p("x_steps"), &stack(&xs)?, &gold, true)?;
        chk.check(
            case,
            &p("t_grid"),
            &Tensor::new(ts.as_slice(), &Device::Cpu)?,
            &gold,
            true,
        )?;
        chk.check(case, &p("v_cfg"), &stack(&vcfg)?, &gold, true)?;
        chk.check(case, &p("x1_normalized"), &last, &gold, true)?;
        chk.check(case, &p("x1_unnormalized"), &x1u, &gold, true)?;
        if gold.contains_key(&p("v_cond")) {
            chk.check(case, &p("v_cond"), &stack(&vc)?, &gold, true)?;
        }
        if gold.contains_key(&p("v_uncond")) && !vu.is_empty() {
            chk.check(case, &p("v_uncond"), &stack(&vu)?, &gold, true)?;
        }
    }
    Ok(Outcome::Ran)
}
