//! Flow-matching sampler: the official Euler schedule with classifier-free guidance
//! (`mmaudio/model/flow_matching.py` + `MMAudio.ode_wrapper` + `eval_utils.generate`).
//!
//! `t_k = linspace(0, 1, K+1)` in f32, `x ← x + (t_{k+1} − t_k) · v(t_k, x)` with
//! `v = cfg · v_cond + (1 − cfg) · v_uncond` (only `v_cond` when `cfg < 1`). The negative
//! prompt enters through the unconditional branch. Conditions are computed once; the time
//! embeddings of all steps are computed before the loop; cond and uncond run as one batch
//! of `2B` by default ([`CfgMode::Batched`]), which is faster on CPU and GPU alike.
//!
//! The sampler is outside the network, as in candle-transformers' flux/mmdit.
//!
//! **Inpainting** (continuation windows, [`EulerSampler::sample_inpaint`]): the leading
//! `k` latents of the sequence may be known (the final latents of earlier windows, in the
//! network's normalised space). Before each step at time `t` their positions of the state
//! are set to the point of the official conditional flow
//! (`FlowMatching.get_conditional_flow`) between the same window's noise `x0` and the known
//! `x1`: `x_t = t·x1 + (1 − (1 − σ_min)·t)·x0`, with `σ_min = 0` as in the official
//! inference; after the last step they are set to `x1` exactly. The network sees a state
//! that is on the path it was trained on at the known positions, so the new latents are
//! generated in context and the known ones come out unchanged. With `k = 0` nothing is
//! touched: the sampler is bit-identical to plain sampling.

use crate::error::{Error, Result};
use crate::net::{Conditions, MmAudioNet};
use crate::request::{Cancel, Stage};
use candle_core::{DType, Tensor};

/// How to evaluate the two CFG branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CfgMode {
    /// cond and uncond concatenated into one batch of `2B`.
    #[default]
    Batched,
    /// Two network calls of batch `B` (as the official code does; less peak memory).
    Separate,
}

/// `torch.linspace(0, 1, K + 1)` in f32 (same two-sided formula as PyTorch's CPU kernel).
pub fn euler_grid(num_steps: usize) -> Vec<f32> {
    let n = num_steps + 1;
    if num_steps == 0 {
        return vec![0.0];
    }
    let (start, end) = (0.0f32, 1.0f32);
    let step = (end - start) / num_steps as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

/// `cfg · v_cond + (1 − cfg) · v_uncond`.
pub fn cfg_combine(v_cond: &Tensor, v_uncond: &Tensor, cfg: f64) -> Result<Tensor> {
    Ok(((v_cond * cfg)? + (v_uncond * (1.0 - cfg))?)?)
}

/// What one Euler step saw (for tests, progress and debugging).
pub struct StepRecord<'a> {
    pub step: usize,
    pub num_steps: usize,
    pub t: f32,
    /// State before the step.
    pub x: &'a Tensor,
    pub v_cond: &'a Tensor,
    /// `None` when `cfg < 1`.
    pub v_uncond: Option<&'a Tensor>,
    pub v_cfg: &'a Tensor,
}

pub struct EulerSampler {
    pub num_steps: usize,
    pub cfg_strength: f64,
    pub mode: CfgMode,
}

impl EulerSampler {
    pub fn new(num_steps: usize, cfg_strength: f64) -> Self {
        Self {
            num_steps,
            cfg_strength,
            mode: CfgMode::default(),
        }
    }

    /// Integrate from noise `x0 (B, N, C)` (normalised latent space) to `x1`.
    pub fn sample(
        &self,
        net: &MmAudioNet,
        x0: &Tensor,
        cond: &Conditions,
        uncond: &Conditions,
        cancel: Option<&Cancel>,
        observer: Option<&mut dyn FnMut(&StepRecord)>,
    ) -> Result<Tensor> {
        self.sample_inpaint(net, x0, None, cond, uncond, cancel, observer)
    }

    /// [`sample`](Self::sample) with the leading latents `known (B, k, C)` (normalised,
    /// `k < N`) held by inpainting (see the module documentation). The returned state has
    /// exactly `known` in its first `k` positions.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_inpaint(
        &self,
        net: &MmAudioNet,
        x0: &Tensor,
        known: Option<&Tensor>,
        cond: &Conditions,
        uncond: &Conditions,
        cancel: Option<&Cancel>,
        mut observer: Option<&mut dyn FnMut(&StepRecord)>,
    ) -> Result<Tensor> {
        if self.num_steps == 0 {
            return Err(Error::config("num-steps must be at least 1"));
        }
        let b = x0.dim(0)?;
        let n = x0.dim(1)?;
        let known = match known {
            Some(k) if k.dim(1)? > 0 => {
                let kn = k.dim(1)?;
                if k.dim(0)? != b || k.dim(2)? != x0.dim(2)? || kn >= n {
                    return Err(Error::input(format!(
                        "known latents {:?} do not fit a state {:?} (at most {} positions)",
                        k.dims(),
                        x0.dims(),
                        n.saturating_sub(1)
                    )));
                }
                let x0k = x0.narrow(1, 0, kn)?.to_dtype(DType::F32)?;
                Some((k.to_dtype(DType::F32)?, x0k, kn))
            }
            _ => None,
        };
        // x_t at the known positions, the rest of the state unchanged
        let hold = |x: Tensor, t: f32| -> Result<Tensor> {
            let Some((x1, x0k, kn)) = &known else {
                return Ok(x);
            };
            let t = t as f64;
            let xt = ((x1 * t)? + (x0k * (1.0 - (1.0 - SIGMA_MIN) * t))?)?;
            Ok(Tensor::cat(&[&xt, &x.narrow(1, *kn, n - kn)?], 1)?)
        };
        let grid = euler_grid(self.num_steps);
        let t_embs = net.time_embeddings(&grid[..self.num_steps])?;
        let use_cfg = self.cfg_strength >= 1.0;
        let batched = if use_cfg && self.mode == CfgMode::Batched {
            Some(Conditions::cat(&[cond, uncond])?)
        } else {
            None
        };
        // The state is integrated in f32 whatever the network's precision: in bf16, 25
        // additions of small velocity steps to the latent would each round to 8 bits of
        // mantissa. The network sees x in its own dtype; v comes back as f32.
        let ndt = net.dtype();
        let mut x = x0.to_dtype(DType::F32)?;
        for k in 0..self.num_steps {
            if let Some(c) = cancel {
                c.check()?;
            }
            x = hold(x, grid[k])?;
            let t_emb = t_embs.narrow(0, k, 1)?;
            let xn = x.to_dtype(ndt)?;
            let f32v = |v: Tensor| v.to_dtype(DType::F32);
            let (v_cond, v_uncond) = if !use_cfg {
                (f32v(net.predict_flow(&xn, &t_emb, cond)?)?, None)
            } else if let Some(bc) = &batched {
                let xx = Tensor::cat(&[&xn, &xn], 0)?;
                let v = f32v(net.predict_flow(&xx, &t_emb, bc)?)?;
                (v.narrow(0, 0, b)?, Some(v.narrow(0, b, b)?))
            } else {
                (
                    f32v(net.predict_flow(&xn, &t_emb, cond)?)?,
                    Some(f32v(net.predict_flow(&xn, &t_emb, uncond)?)?),
                )
            };
            let v = match &v_uncond {
                Some(vu) => cfg_combine(&v_cond, vu, self.cfg_strength)?,
                None => v_cond.clone(),
            };
            if let Some(obs) = observer.as_deref_mut() {
                obs(&StepRecord {
                    step: k,
                    num_steps: self.num_steps,
                    t: grid[k],
                    x: &x,
                    v_cond: &v_cond,
                    v_uncond: v_uncond.as_ref(),
                    v_cfg: &v,
                });
            }
            let dt = (grid[k + 1] - grid[k]) as f64;
            x = (x + (v * dt)?)?;
            if let Some(c) = cancel {
                c.report(Stage::Sampling {
                    step: k + 1,
                    of: self.num_steps,
                });
            }
        }
        if let Some((x1, _, kn)) = &known {
            x = Tensor::cat(&[x1, &x.narrow(1, *kn, n - kn)?], 1)?;
        }
        Ok(x)
    }
}

/// `σ_min` of the official inference `FlowMatching` (`min_sigma=0`).
pub const SIGMA_MIN: f64 = 0.0;

/// Features of one generation (official `generate` after feature extraction). `None` means
/// the learned empty sequence (no video → text-to-audio; `mask-away-clip` → no CLIP).
#[derive(Default, Clone)]
pub struct FeatureSet {
    /// `(B, clip_len, clip_dim)`
    pub clip: Option<Tensor>,
    /// `(B, sync_len, sync_dim)`
    pub sync: Option<Tensor>,
    /// `(B, 77, text_dim)`; `None` = empty string.
    pub text: Option<Tensor>,
    /// Negative prompt features `(B, 77, text_dim)`; `None` = the checkpoint's empty string.
    pub negative_text: Option<Tensor>,
}

/// Sequence lengths of one generation.
#[derive(Debug, Clone, Copy)]
pub struct SeqLens {
    pub latent: usize,
    pub clip: usize,
    pub sync: usize,
}

impl From<crate::config::SequenceConfig> for SeqLens {
    fn from(s: crate::config::SequenceConfig) -> Self {
        Self {
            latent: s.latent_seq_len(),
            clip: s.clip_seq_len(),
            sync: s.sync_seq_len(),
        }
    }
}

/// Conditional and unconditional conditions for a feature set, as `generate` builds them.
pub fn build_conditions(
    net: &MmAudioNet,
    b: usize,
    f: &FeatureSet,
    lens: SeqLens,
) -> Result<(Conditions, Conditions)> {
    let clip = match &f.clip {
        Some(c) => c.clone(),
        None => net.empty_clip_sequence(b, lens.clip)?,
    };
    let sync = match &f.sync {
        Some(s) => s.clone(),
        None => net.empty_sync_sequence(b, lens.sync)?,
    };
    let text = match &f.text {
        Some(t) => t.clone(),
        None => net.empty_string_sequence(b)?,
    };
    let cond = net.preprocess_conditions(&clip, &sync, &text, lens.latent)?;
    let uncond = net.empty_conditions(
        b,
        lens.latent,
        clip.dim(1)?,
        sync.dim(1)?,
        f.negative_text.as_ref(),
    )?;
    Ok((cond, uncond))
}

/// Noise → unnormalised latent `(B, N, C)` in f32 (official `generate` up to `unnormalize`).
pub fn generate_latents(
    net: &MmAudioNet,
    sampler: &EulerSampler,
    features: &FeatureSet,
    lens: SeqLens,
    x0: &Tensor,
    cancel: Option<&Cancel>,
    observer: Option<&mut dyn FnMut(&StepRecord)>,
) -> Result<Tensor> {
    let x1 = generate_normalized_latents(net, sampler, features, lens, x0, None, cancel, observer)?;
    net.unnormalize(&x1)
}

/// Noise → the sampler's final state `(B, N, C)` in f32, still in the network's normalised
/// space, with the leading latents `known` (normalised) held by inpainting.
#[allow(clippy::too_many_arguments)]
pub fn generate_normalized_latents(
    net: &MmAudioNet,
    sampler: &EulerSampler,
    features: &FeatureSet,
    lens: SeqLens,
    x0: &Tensor,
    known: Option<&Tensor>,
    cancel: Option<&Cancel>,
    observer: Option<&mut dyn FnMut(&StepRecord)>,
) -> Result<Tensor> {
    let b = x0.dim(0)?;
    let (cond, uncond) = build_conditions(net, b, features, lens)?;
    sampler.sample_inpaint(net, x0, known, &cond, &uncond, cancel, observer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_linspace() {
        let g = euler_grid(25);
        assert_eq!(g.len(), 26);
        assert_eq!(g[0], 0.0);
        assert_eq!(g[25], 1.0);
        for w in g.windows(2) {
            assert!((w[1] - w[0] - 0.04).abs() < 1e-6);
        }
        assert_eq!(euler_grid(4), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    }
}
