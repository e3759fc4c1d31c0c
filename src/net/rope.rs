//! Aligned rotary position embeddings (official `mmaudio/ext/rotary_embeddings.py`).
//!
//! Latent tokens use positions `0..N`; CLIP tokens use `0..L` with every frequency scaled by
//! `N / L`, so both streams rotate on the latent time axis ("aligned RoPE"). Text tokens get
//! no rotation. Pairs are adjacent channels `(x₂ᵢ, x₂ᵢ₊₁)`. Tables are computed in f32 on
//! the host exactly as the official code does (same operation order), then uploaded.

use candle_core::{Device, Result, Tensor};

pub const THETA: f32 = 10_000.0;

/// `(cos, sin)` tables of shape `(len, head_dim / 2)`, f32.
#[derive(Debug, Clone)]
pub struct RopeTable {
    pub cos: Tensor,
    pub sin: Tensor,
    /// Host copy for the fused CPU kernel.
    pub host: crate::ops::HostRope,
}

/// Angles `pos · freq_i · scaling` in f32, with `freq_i = 1 / θ^(2i / dim)`.
pub fn rope_angles(len: usize, head_dim: usize, freq_scaling: f64) -> Vec<f32> {
    let half = head_dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| {
            let e = (2 * i) as f32 / head_dim as f32;
            let f = 1.0f32 / THETA.powf(e);
            f * freq_scaling as f32
        })
        .collect();
    let mut out = Vec::with_capacity(len * half);
    for p in 0..len {
        let pos = p as f32;
        out.extend(freqs.iter().map(|f| pos * f));
    }
    out
}

impl RopeTable {
    pub fn new(len: usize, head_dim: usize, freq_scaling: f64, device: &Device) -> Result<Self> {
        let ang = rope_angles(len, head_dim, freq_scaling);
        let cos: Vec<f32> = ang.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = ang.iter().map(|a| a.sin()).collect();
        let half = head_dim / 2;
        Ok(Self {
            cos: Tensor::from_vec(cos.clone(), (len, half), device)?,
            sin: Tensor::from_vec(sin.clone(), (len, half), device)?,
            host: crate::ops::HostRope { cos, sin, half },
        })
    }

    /// Tables of the latent stream (`N` tokens) and the CLIP stream (`L` tokens).
    pub fn pair(
        latent_len: usize,
        clip_len: usize,
        head_dim: usize,
        device: &Device,
    ) -> Result<(Self, Self)> {
        let latent = Self::new(latent_len, head_dim, 1.0, device)?;
        let scale = if clip_len > 0 {
            latent_len as f64 / clip_len as f64
        } else {
            1.0
        };
        let clip = Self::new(clip_len, head_dim, scale, device)?;
        Ok((latent, clip))
    }

    /// The official buffer layout `(1, len, dim/2, 2, 2)` = `[[cos, −sin], [sin, cos]]`.
    pub fn as_rotation_matrices(&self) -> Result<Tensor> {
        let (len, half) = self.cos.dims2()?;
        let neg_sin = self.sin.neg()?;
        let m = Tensor::stack(&[&self.cos, &neg_sin, &self.sin, &self.cos], 2)?;
        m.reshape((1, len, half, 2, 2))
    }

    /// Rotate `x` `(B, H, len, head_dim)`, computing in f32 (as the official code does under
    /// autocast) and returning `x`'s dtype.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let dt = x.dtype();
        let xf = x.to_dtype(candle_core::DType::F32)?.contiguous()?;
        let y = candle_nn::rotary_emb::rope_i(&xf, &self.cos, &self.sin)?;
        y.to_dtype(dt)
    }
}
