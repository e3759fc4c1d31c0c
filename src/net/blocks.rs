//! Transformer blocks (official `mmaudio/model/transformer_layers.py`): the single-stream
//! `MMDitSingleBlock`, the three-stream `JointBlock` with one joint attention, and the final
//! layer. adaLN: `Linear(SiLU(c))` → shift/scale/gate chunks; `modulate(x) = LN(x)·(1 +
//! scale) + shift` (LayerNorm eps 1e−5, no affine).

use super::Trace;
use super::rope::RopeTable;
use crate::config::NetConfig;
use crate::nn::{ChannelLastConv1d, Linear, SwiGlu, finfo_eps};
use crate::ops;

const LN_EPS: f32 = 1e-5;
use candle_core::{D, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// The input of a stream's adaLN: `SiLU(c)`, computed once per flow step and shared by every
/// block, possibly at fewer rows than the stream plus the index that expands the modulation
/// to the stream's rows. The per-token sync conditioning has only `sync_len` distinct rows
/// (the sync features are resampled to the latent length by nearest-neighbour), so every
/// latent-stream adaLN GEMM runs on those rows (192 instead of 250 at 8 s) and its output is
/// gathered; the result is the official `Linear(SiLU(global_c + sync_f))` exactly.
#[derive(Debug, Clone)]
pub struct AdaInput {
    /// `SiLU(c)`: `(B, 1, H)` (global), `(B, N, H)` or `(B, U, H)` with `idx`.
    pub silu: Tensor,
    /// `(N,)` u32 row of `silu` for each stream row.
    pub idx: Option<Tensor>,
}

impl AdaInput {
    pub fn new(c: &Tensor, idx: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            silu: candle_nn::ops::silu(c)?,
            idx,
        })
    }

    fn modulation(&self, ada: &Linear) -> Result<Tensor> {
        let m = ada.forward(&self.silu)?;
        match &self.idx {
            Some(idx) => m.index_select(idx, 1),
            None => Ok(m),
        }
    }
}

/// Per-stream q/k/v projection with RMSNorm on q and k.
#[derive(Debug, Clone)]
pub struct SelfAttention {
    /// qkv Linear with its output rows regrouped from the official `(heads, head_dim, 3)`
    /// interleave into `[q | k | v]` blocks.
    qkv: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    /// Host copies of the norm weights for the fused CPU kernel (f32 models only).
    host_norms: Option<(Vec<f32>, Vec<f32>)>,
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
        let q_norm = vb.pp("q_norm").get(head_dim, "weight")?;
        let k_norm = vb.pp("k_norm").get(head_dim, "weight")?;
        let host_norms = if vb.dtype() == candle_core::DType::F32 && vb.device().is_cpu() {
            Some((q_norm.to_vec1::<f32>()?, k_norm.to_vec1::<f32>()?))
        } else {
            None
        };
        Ok(Self {
            qkv: Linear::from_weights(&w, Some(b))?,
            q_norm,
            k_norm,
            host_norms,
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
        let qkv = self.qkv.forward(x)?;
        if let Some((qw, kw)) = &self.host_norms {
            let fused =
                crate::ops::qkv_prep_cpu(&qkv, self.heads, qw, kw, self.eps, rot.map(|r| &r.host))?;
            if let Some(out) = fused {
                if trace.on() {
                    // the intermediates through the generic path, for comparison only
                    self.pre_attention_generic(&qkv, rot, trace, name)?;
                }
                return Ok(out);
            }
        }
        self.pre_attention_generic(&qkv, rot, trace, name)
    }

    fn pre_attention_generic(
        &self,
        qkv: &Tensor,
        rot: Option<&RopeTable>,
        trace: &Trace,
        name: &str,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, n, c3) = qkv.dims3()?;
        let c = c3 / 3;
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

/// Scaled dot-product attention of `(B, H, N, D)` tensors → `(B, H, N, D)`.
pub fn attention_heads(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let d = q.dim(3)?;
    let scale = 1.0 / (d as f64).sqrt();
    let att = (q.matmul(&k.transpose(2, 3)?)? * scale)?;
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    att.matmul(v)
}

/// Tokens `[start, start + len)` of an attention output `(B, H, N, D)` as `(B, len, H·D)`,
/// contiguous (one copy).
pub fn merge_heads(out: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    let (b, h, _, d) = out.dims4()?;
    out.narrow(2, start, len)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, len, h * d))
}

/// Scaled dot-product attention of `(B, H, N, D)` tensors → `(B, N, H·D)`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    if let Some(mut o) = ops::joint_attention_cpu(&[(q, k, v)], 1)? {
        return Ok(o.remove(0));
    }
    let n = q.dim(2)?;
    merge_heads(&attention_heads(q, k, v)?, 0, n)
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

/// adaLN output of one block for one call, `(B, 1 or N, 6H)`: chunks shift_msa, scale_msa,
/// gate_msa, shift_mlp, scale_mlp, gate_mlp.
pub struct Modulation(Tensor);

/// The official `MMDitSingleBlock` (used alone for fused blocks and as each stream of a
/// joint block).
#[derive(Debug, Clone)]
pub struct SingleBlock {
    attn: SelfAttention,
    ada: Linear,
    post: Option<PostAttn>,
}

impl SingleBlock {
    /// `kernel == 1`: Linear projection and MLP (text stream); otherwise k-conv and ConvMLP.
    pub fn load(vb: VarBuilder, cfg: &NetConfig, pre_only: bool, kernel: usize) -> Result<Self> {
        let dim = cfg.hidden_dim;
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
        Ok(Self { attn, ada, post })
    }

    /// adaLN modulation + normalisation + q/k/v; `c` global or per-token.
    pub fn pre_attention(
        &self,
        x: &Tensor,
        c: &AdaInput,
        rot: Option<&RopeTable>,
        trace: &Trace,
        name: &str,
    ) -> Result<((Tensor, Tensor, Tensor), Option<Modulation>)> {
        let m = c.modulation(&self.ada)?;
        let xm = ops::ln_modulate(&x.contiguous()?, &m, 0, 1, LN_EPS)?;
        let qkv = self.attn.pre_attention(&xm, rot, trace, name)?;
        let modulation = if self.post.is_some() {
            Some(Modulation(m))
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
        let m = &m.0;
        let x = ops::gated_residual(&x.contiguous()?, &post.linear1.forward(attn_out)?, m, 2)?;
        let r = ops::ln_modulate(&x, m, 3, 4, LN_EPS)?;
        ops::gated_residual(&x, &post.ffn.forward(&r)?, m, 5)
    }

    /// Self-attention block on one stream (fused blocks).
    pub fn forward(
        &self,
        x: &Tensor,
        c: &AdaInput,
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
        global_c: &AdaInput,
        extended_c: &AdaInput,
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
        // CPU: no concatenation, and only the latent queries when the other streams' outputs
        // are discarded (the last joint block)
        let streams = [
            (&xq.0, &xq.1, &xq.2),
            (&cq.0, &cq.1, &cq.2),
            (&tq.0, &tq.1, &tq.2),
        ];
        let n_out = if self.pre_only { 1 } else { 3 };
        if let Some(outs) = ops::joint_attention_cpu(&streams, n_out)? {
            let latent = self.latent_block.post_attention(latent, &outs[0], xm)?;
            if self.pre_only {
                return Ok((latent, clip_f.clone(), text_f.clone()));
            }
            let clip_f = self.clip_block.post_attention(clip_f, &outs[1], cm)?;
            let text_f = self.text_block.post_attention(text_f, &outs[2], tm)?;
            return Ok((latent, clip_f, text_f));
        }
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
    conv: ChannelLastConv1d,
}

impl FinalBlock {
    pub fn load(vb: VarBuilder, dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            ada: Linear::load(vb.pp("adaLN_modulation").pp(1), dim, 2 * dim, true)?,
            conv: ChannelLastConv1d::load(vb.pp("conv"), dim, out_dim, 7, 3, true)?,
        })
    }

    pub fn forward(&self, latent: &Tensor, c: &AdaInput) -> Result<Tensor> {
        let m = c.modulation(&self.ada)?;
        let x = ops::ln_modulate(&latent.contiguous()?, &m, 0, 1, LN_EPS)?;
        self.conv.forward(&x)
    }
}
