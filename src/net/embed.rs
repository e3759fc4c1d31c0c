//! Timestep embedding (official `mmaudio/model/embeddings.py`, DiT style).
//!
//! `t_freq = [cos(t·f), sin(t·f)]` (cos first) with `f_i = s / 10000^(2i/F)`, `s = 10000 /
//! max_period`; v1: `F = 256`, `max_period = 10000`; v2: `F = hidden`, `max_period = 1`, so
//! angles reach 10⁴ rad — they are formed in f32 on the host exactly like the official code,
//! for all sampler times at once, then `Linear → SiLU → Linear`.

use crate::nn::Linear;
use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct TimestepEmbedder {
    freqs: Vec<f32>,
    mlp0: Linear,
    mlp2: Linear,
}

impl TimestepEmbedder {
    pub fn load(vb: VarBuilder, hidden: usize, freq_dim: usize, max_period: f64) -> Result<Self> {
        let scale = (10_000.0 / max_period) as f32;
        let freqs = (0..freq_dim / 2)
            .map(|i| {
                let e = (2 * i) as f32 / freq_dim as f32;
                scale * (1.0f32 / 10_000f32.powf(e))
            })
            .collect();
        Ok(Self {
            freqs,
            mlp0: Linear::load(vb.pp("mlp").pp(0), freq_dim, hidden, true)?,
            mlp2: Linear::load(vb.pp("mlp").pp(2), hidden, hidden, true)?,
        })
    }

    /// Sinusoidal features `(len(ts), F)` in f32.
    pub fn timestep_features(&self, ts: &[f32], device: &Device) -> Result<Tensor> {
        let half = self.freqs.len();
        let mut v = Vec::with_capacity(ts.len() * half * 2);
        for &t in ts {
            v.extend(self.freqs.iter().map(|f| (t * f).cos()));
            v.extend(self.freqs.iter().map(|f| (t * f).sin()));
        }
        Tensor::from_vec(v, (ts.len(), half * 2), device)
    }

    /// MLP of given features (converted to the weights' dtype).
    pub fn embed_features(&self, t_freq: &Tensor, dtype: candle_core::DType) -> Result<Tensor> {
        let h = self.mlp0.forward(&t_freq.to_dtype(dtype)?)?;
        self.mlp2.forward(&candle_nn::ops::silu(&h)?)
    }
}
