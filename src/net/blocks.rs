//! Transformer blocks (official `mmaudio/model/transformer_layers.py`): the single-stream
//! `MMDitSingleBlock`, the three-stream `JointBlock` with one joint attention, and the final
//! layer. adaLN: `Linear(SiLU(c))` → shift/scale/gate chunks; `modulate(x) = LN(x)·(1 +
//! scale) + shift` (LayerNorm eps 1e−5, no affine).

use super::Trace;
use super::rope::RopeTable;
use crate::config::NetConfig;
use crate::nn::{ChannelLastConv1d, LayerNormNoAffine, Linear, SwiGlu, finfo_eps};
use candle_core::{D, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Per-stream q/k/v projection with RMSNorm on q and k.
#[derive(Debug, Clone)]
pub struct SelfAttention {
    /// qkv Linear with its output rows regrouped from the official `(heads, head_dim, 3)`
    /// interleave into `[q | k | v]` blocks.
    qkv: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    heads: usize,
    head_dim: usize,
    eps: f32,
}

impl SelfAttention {
    pub fn load(vb: VarBuilder, dim: usize, heads: usize) -> Result<Self> {
        let head_dim = dim / heads;
        let w = vb.pp("qkv").get((3 * dim, dim), "weight")?;
        let b = vb.pp("qkv").get(3 * dim, "bias")?;
        // official split: 'b n (h d j) -> b h n d j' with j = 3 innermost
        let w = w
            .reshape((dim, 3, dim))?
            .permute((1, 0, 2))?
            .reshape((3 * dim, dim))?;
        let b = b.reshape((dim, 3))?.t()?.reshape(3 * dim)?.contiguous()?;
        let eps = finfo_eps(vb.dtype());
        Ok(Self {
            qkv: Linear::from_weights(&w, Some(b))?,
            q_norm: vb.pp("q_norm").get(head_dim, "weight")?,
            k_norm: vb.pp("k_norm").get(head_dim, "weight")?,
            heads,
            head_dim,
            eps,
        })
    }

    /// `(q, k, v)` as `(B, heads, N, head_dim)`, RoPE applied to q and k when given.
    pub fn pre_attention(
        &self,
        x: &Tensor,
        rot: Option<&RopeTable>,
        trace: &Trace,
        name: &str,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, n, c) = x.dims3()?;
        let qkv = self.qkv.forward(x)?;
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(D::Minus1, i * c, c)?
                .reshape((b, n, self.heads, self.head_dim))
        };
        let q = candle_nn::ops::rms_norm(&split(0)?.contiguous()?, &self.q_norm, self.eps)?;
        let k = candle_nn::ops::rms_norm(&split(1)?.contiguous()?, &self.k_norm, self.eps)?;
        let v = split(2)?;
        let q = q.transpose(1, 2)?.contiguous()?;
        let k = k.transpose(1, 2)?.contiguous()?;
        let v = v.transpose(1, 2)?.contiguous()?;
        if trace.on() {
            trace.put(&format!("{name}.q_norope"), &q);
            trace.put(&format!("{name}.q"), &q);
            trace.put(&format!("{name}.v"), &v);
        }
        match rot {
            Some(r) => {
                let q = r.apply(&q)?;
                let k = r.apply(&k)?;
                if trace.on() {
                    trace.put(&format!("{name}.q_rope"), &q);
                    trace.put(&format!("{name}.k_rope"), &k);
                }
                Ok((q, k, v))
            }
            None => Ok((q, k, v)),
        }
    }
}

/// Scaled dot-product attention of `(B, H, N, D)` tensors → `(B, N, H·D)`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (b, h, n, d) = q.dims4()?;
    let scale = 1.0 / (d as f64).sqrt();
    let att = (q.matmul(&k.transpose(2, 3)?)? * scale)?;
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    let out = att.matmul(v)?;
    out.transpose(1, 2)?.reshape((b, n, h * d))
}

/// Post-attention projection: a k3 conv for latent/clip streams, a Linear for text.
#[derive(Debug, Clone)]
enum Proj {
    Conv(ChannelLastConv1d),
    Linear(Linear),
}

impl Module for Proj {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Proj::Conv(c) => c.forward(x),
            Proj::Linear(l) => l.forward(x),
        }
    }
}

#[derive(Debug, Clone)]
struct PostAttn {
    linear1: Proj,
    ffn: SwiGlu,
}

/// Modulation chunks of one block for one call.
pub struct Modulation {
    gate_msa: Tensor,
    shift_mlp: Tensor,
    scale_mlp: Tensor,
    gate_mlp: Tensor,
}

/// The official `MMDitSingleBlock` (used alone for fused blocks and as each stream of a
/// joint block).
#[derive(Debug, Clone)]
pub struct SingleBlock {
    norm: LayerNormNoAffine,
    attn: SelfAttention,
    ada: Linear,
    post: Option<PostAttn>,
    dim: usize,
}

fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)
}

impl SingleBlock {
    /// `kernel == 1`: Linear projection and MLP (text stream); otherwise k-conv and ConvMLP.
    pub fn load(vb: VarBuilder, cfg: &NetConfig, pre_only: bool, kernel: usize) -> Result<Self> {
        let dim = cfg.hidden_dim;
        let dev = vb.device().clone();
        let norm = LayerNormNoAffine::new(dim, 1e-5, vb.dtype(), &dev)?;
        let attn = SelfAttention::load(vb.pp("attn"), dim, cfg.num_heads)?;
        let n_mod = if pre_only { 2 } else { 6 };
        let ada = Linear::load(vb.pp("adaLN_modulation").pp(1), dim, n_mod * dim, true)?;
        let post = if pre_only {
            None
        } else {
            let pad = kernel / 2;
            let linear1 = if kernel == 1 {
                Proj::Linear(Linear::load(vb.pp("linear1"), dim, dim, true)?)
            } else {
                Proj::Conv(ChannelLastConv1d::load(
                    vb.pp("linear1"),
                    dim,
                    dim,
                    kernel,
                    pad,
                    true,
                )?)
            };
            let ffn = SwiGlu::load(vb.pp("ffn"), dim, cfg.mlp_hidden(), kernel, pad)?;
            Some(PostAttn { linear1, ffn })
        };
        Ok(Self {
            norm,
            attn,
            ada,
            post,
            dim,
        })
    }

    /// adaLN modulation + normalisation + q/k/v. `c` is `(B, 1, H)` (global) or `(B, N, H)`
    /// (per-token).
    pub fn pre_attention(
        &self,
        x: &Tensor,
        c: &Tensor,
        rot: Option<&RopeTable>,
        trace: &Trace,
        name: &str,
    ) -> Result<((Tensor, Tensor, Tensor), Option<Modulation>)> {
        let m = self.ada.forward(&candle_nn::ops::silu(c)?)?;
        let chunk = |i: usize| m.narrow(D::Minus1, i * self.dim, self.dim);
        let xm = modulate(&self.norm.forward(x)?, &chunk(0)?, &chunk(1)?)?;
        let qkv = self.attn.pre_attention(&xm, rot, trace, name)?;
        let modulation = if self.post.is_some() {
            Some(Modulation {
                gate_msa: chunk(2)?,
                shift_mlp: chunk(3)?,
                scale_mlp: chunk(4)?,
                gate_mlp: chunk(5)?,
            })
        } else {
            None
        };
        Ok((qkv, modulation))
    }

    pub fn post_attention(
        &self,
        x: &Tensor,
        attn_out: &Tensor,
        m: Option<Modulation>,
    ) -> Result<Tensor> {
        let (Some(post), Some(m)) = (&self.post, m) else {
            return Ok(x.clone());
        };
        let x = (x + post.linear1.forward(attn_out)?.broadcast_mul(&m.gate_msa)?)?;
        let r = modulate(&self.norm.forward(&x)?, &m.shift_mlp, &m.scale_mlp)?;
        x + post.ffn.forward(&r)?.broadcast_mul(&m.gate_mlp)?
    }

    /// Self-attention block on one stream (fused blocks).
    pub fn forward(
        &self,
        x: &Tensor,
        c: &Tensor,
        rot: Option<&RopeTable>,
        trace: &Trace,
        name: &str,
    ) -> Result<Tensor> {
        let ((q, k, v), m) = self.pre_attention(x, c, rot, trace, name)?;
        let out = attention(&q, &k, &v)?;
        self.post_attention(x, &out, m)
    }
}

/// Three streams (latent, CLIP, text) attending jointly.
#[derive(Debug, Clone)]
pub struct JointBlock {
    latent_block: SingleBlock,
    clip_block: SingleBlock,
    text_block: SingleBlock,
    pre_only: bool,
}

impl JointBlock {
    pub fn load(vb: VarBuilder, cfg: &NetConfig, pre_only: bool) -> Result<Self> {
        Ok(Self {
            latent_block: SingleBlock::load(vb.pp("latent_block"), cfg, false, 3)?,
            clip_block: SingleBlock::load(vb.pp("clip_block"), cfg, pre_only, 3)?,
            text_block: SingleBlock::load(vb.pp("text_block"), cfg, pre_only, 1)?,
            pre_only,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        latent: &Tensor,
        clip_f: &Tensor,
        text_f: &Tensor,
        global_c: &Tensor,
        extended_c: &Tensor,
        latent_rot: &RopeTable,
        clip_rot: &RopeTable,
        trace: &Trace,
        name: &str,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (xq, xm) = self.latent_block.pre_attention(
            latent,
            extended_c,
            Some(latent_rot),
            trace,
            &format!("{name}.latent"),
        )?;
        let (cq, cm) = self.clip_block.pre_attention(
            clip_f,
            global_c,
            Some(clip_rot),
            trace,
            &format!("{name}.clip"),
        )?;
        let (tq, tm) = self.text_block.pre_attention(
            text_f,
            global_c,
            None,
            trace,
            &format!("{name}.text"),
        )?;
        let n_lat = latent.dim(1)?;
        let n_clip = clip_f.dim(1)?;
        let n_text = text_f.dim(1)?;
        let q = Tensor::cat(&[&xq.0, &cq.0, &tq.0], 2)?;
        let k = Tensor::cat(&[&xq.1, &cq.1, &tq.1], 2)?;
        let v = Tensor::cat(&[&xq.2, &cq.2, &tq.2], 2)?;
        let out = attention(&q, &k, &v)?;
        let latent = self
            .latent_block
            .post_attention(latent, &out.narrow(1, 0, n_lat)?, xm)?;
        if self.pre_only {
            return Ok((latent, clip_f.clone(), text_f.clone()));
        }
        let clip_f = self
            .clip_block
            .post_attention(clip_f, &out.narrow(1, n_lat, n_clip)?, cm)?;
        let text_f =
            self.text_block
                .post_attention(text_f, &out.narrow(1, n_lat + n_clip, n_text)?, tm)?;
        Ok((latent, clip_f, text_f))
    }
}

/// Final adaLN + k7 conv to the latent channels.
#[derive(Debug, Clone)]
pub struct FinalBlock {
    ada: Linear,
    norm: LayerNormNoAffine,
    conv: ChannelLastConv1d,
    dim: usize,
}

impl FinalBlock {
    pub fn load(vb: VarBuilder, dim: usize, out_dim: usize) -> Result<Self> {
        let dev = vb.device().clone();
        Ok(Self {
            ada: Linear::load(vb.pp("adaLN_modulation").pp(1), dim, 2 * dim, true)?,
            norm: LayerNormNoAffine::new(dim, 1e-5, vb.dtype(), &dev)?,
            conv: ChannelLastConv1d::load(vb.pp("conv"), dim, out_dim, 7, 3, true)?,
            dim,
        })
    }

    pub fn forward(&self, latent: &Tensor, c: &Tensor) -> Result<Tensor> {
        let m = self.ada.forward(&candle_nn::ops::silu(c)?)?;
        let shift = m.narrow(D::Minus1, 0, self.dim)?;
        let scale = m.narrow(D::Minus1, self.dim, self.dim)?;
        let x = modulate(&self.norm.forward(latent)?, &shift, &scale)?;
        self.conv.forward(&x)
    }
}
