//! Transformer blocks (official `mmaudio/model/transformer_layers.py`): the single-stream
//! `MMDitSingleBlock`, the three-stream `JointBlock` with one joint attention, and the final
//! layer. adaLN: `Linear(SiLU(c))` → shift/scale/gate chunks; `modulate(x) = LN(x)·(1 +
//! scale) + shift` (LayerNorm eps 1e−5, no affine).

use super::Trace;
use super::rope::RopeTable;
use crate::config::NetConfig;
use crate::nn::{ChannelLastConv1d, Linear, SwiGlu, finfo_eps};
use crate::ops::{self, CenteredNorm};

const LN_EPS: f32 = 1e-5;
use candle_core::{D, DType, Module, Result, Tensor, TensorId};
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
    /// The modulations of all blocks fed by this input, from one fused matmul (generic path).
    pub fused: Option<FusedModulations>,
}

/// The adaLN outputs of every block fed by one [`AdaInput`] in one step, computed by a single
/// matmul with the blocks' adaLN weights side by side (`m (B, 1 or N, K)`, see
/// [`FusedAdaLn`]); the scale chunks already hold `1 + scale`.
#[derive(Debug, Clone)]
pub struct FusedModulations {
    m: Tensor,
    /// id of a block's adaLN weight view → index of its first chunk (width H) in `m`
    chunks: std::sync::Arc<Vec<(TensorId, usize)>>,
}

impl AdaInput {
    pub fn new(c: &Tensor, idx: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            silu: candle_nn::ops::silu(c)?,
            idx,
            fused: None,
        })
    }

    /// Compute the modulations of every block of `fused` now, in one matmul (+ bias, + one
    /// gather of the distinct rows to the stream's rows).
    pub fn with_fused(mut self, fused: &FusedAdaLn) -> Result<Self> {
        let m = fused.linear.forward(&self.silu)?;
        let m = match &self.idx {
            Some(idx) => m.index_select(idx, 1)?,
            None => m,
        };
        self.fused = Some(FusedModulations {
            m,
            chunks: fused.chunks.clone(),
        });
        Ok(self)
    }

    fn modulation(&self, ada: &Linear) -> Result<Modulation> {
        if let Some(f) = &self.fused {
            let id = ada.weight_t().id();
            if let Some(&(_, base)) = f.chunks.iter().find(|(i, _)| *i == id) {
                return Ok(Modulation {
                    m: f.m.clone(),
                    base,
                    one_added: true,
                });
            }
        }
        let m = ada.forward(&self.silu)?;
        let m = match &self.idx {
            Some(idx) => m.index_select(idx, 1)?,
            None => m,
        };
        Ok(Modulation {
            m,
            base: 0,
            one_added: false,
        })
    }
}

/// The adaLN projections of several blocks as one `Linear` (`H → Σ chunks·H`), for the
/// generic path: one matmul per step and input instead of one per block. Built by
/// [`FusedAdaLn::fuse`], which moves each block's weights into it (the blocks keep views).
#[derive(Debug, Clone)]
pub struct FusedAdaLn {
    linear: Linear,
    chunks: std::sync::Arc<Vec<(TensorId, usize)>>,
}

impl FusedAdaLn {
    /// Fuse the adaLN projections `adas` (each `H → n·H` with n = 6: shift, scale, gate of
    /// attention and MLP; or n = 2: shift, scale). `1` is added to the bias of every scale
    /// chunk (chunks 1 and 4 of six, 1 of two), so the modulation needs no `1 + scale` op; the
    /// blocks' adaLN become views of the fused weights, which [`AdaInput::modulation`] finds
    /// by id.
    pub fn fuse(adas: Vec<&mut Linear>, hidden: usize) -> Result<Self> {
        let mut ws = Vec::with_capacity(adas.len());
        let mut bs = Vec::with_capacity(adas.len());
        for ada in adas.iter() {
            let n = ada.out_dim() / hidden;
            let w = ada.weight_t().clone();
            let b = match ada.bias() {
                Some(b) => b.clone(),
                None => Tensor::zeros(n * hidden, w.dtype(), w.device())?,
            };
            // + 1 on the scale chunks, in f32 then back to the weights' dtype
            let scale_chunks: &[usize] = if n == 6 { &[1, 4] } else { &[1] };
            let mut one = vec![0f32; n * hidden];
            for &c in scale_chunks {
                one[c * hidden..(c + 1) * hidden].fill(1.0);
            }
            let one = Tensor::from_vec(one, n * hidden, b.device())?;
            let dt = b.dtype();
            let b = (b.to_dtype(candle_core::DType::F32)? + one)?.to_dtype(dt)?;
            ws.push(w);
            bs.push(b);
        }
        let w = Tensor::cat(&ws, 1)?.contiguous()?;
        let b = Tensor::cat(&bs, 0)?.contiguous()?;
        drop((ws, bs));
        let mut chunks = Vec::with_capacity(adas.len());
        let mut off = 0;
        for ada in adas {
            let width = ada.out_dim();
            *ada =
                Linear::from_transposed(w.narrow(1, off, width)?, Some(b.narrow(0, off, width)?));
            chunks.push((ada.weight_t().id(), off / hidden));
            off += width;
        }
        Ok(Self {
            linear: Linear::from_transposed(w, Some(b)),
            chunks: std::sync::Arc::new(chunks),
        })
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
    /// Generic path: `(2, 1, 1, 1, D)` = `[q_norm / √D, k_norm]` (the attention scale folded
    /// into q; exact for D = 64) and a `(D,)` of ones for the shared RMSNorm of q and k.
    generic_norms: Option<(Tensor, Tensor)>,
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
        let (host_norms, generic_norms) = if ops::fast_cpu_path(vb.device(), vb.dtype()) {
            let host = (q_norm.to_vec1::<f32>()?, k_norm.to_vec1::<f32>()?);
            (Some(host), None)
        } else {
            let scale = 1.0 / (head_dim as f64).sqrt();
            let w = Tensor::stack(&[(&q_norm * scale)?, k_norm.clone()], 0)?
                .reshape((2, 1, 1, 1, head_dim))?;
            let ones = Tensor::ones(head_dim, q_norm.dtype(), q_norm.device())?;
            (None, Some((w, ones)))
        };
        Ok(Self {
            qkv: Linear::from_weights(&w, Some(b))?,
            q_norm,
            k_norm,
            host_norms,
            generic_norms,
            heads,
            head_dim,
            eps,
        })
    }

    /// Whether the q returned by [`Self::pre_attention`] carries the attention scale
    /// `1/√D` already (generic path; see [`attention_heads_scaled`]).
    pub fn q_prescaled(&self) -> bool {
        self.host_norms.is_none() && self.generic_norms.is_some()
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
        match &self.generic_norms {
            Some(norms) => self.pre_attention_fat(&qkv, norms, rot, trace, name),
            None => self.pre_attention_generic(&qkv, rot, trace, name),
        }
    }

    /// The generic path in few ops: one copy regroups `qkv (B, N, 3C)` into `(3, B, H, N,
    /// D)`; q and k are normalised by one RMSNorm, scaled by their weights (q's carrying the
    /// attention scale) in one multiply and rotated by one RoPE.
    fn pre_attention_fat(
        &self,
        qkv: &Tensor,
        (w, ones): &(Tensor, Tensor),
        rot: Option<&RopeTable>,
        trace: &Trace,
        name: &str,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let n = qkv.dim(1)?;
        let traced = [(name.to_string(), 0, n, rot.is_some())];
        qkv_regroup(qkv, self.heads, self.eps, ones, w, rot, trace, &traced)
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

/// The generic q/k/v preparation in few ops: one copy regroups `qkv (B, N, 3C)` into `(3, B,
/// H, N, D)`; q and k are normalised by one RMSNorm, scaled by their weights `w (2, 1, 1, 1
/// or N, D)` (q's carrying the attention scale `1/√D`) in one multiply and rotated by one
/// RoPE. `traced`: `(name, first token, tokens, rotated)` of the streams whose intermediates
/// a trace records (unscaled, as the official code has them).
#[allow(clippy::too_many_arguments)]
fn qkv_regroup(
    qkv: &Tensor,
    heads: usize,
    eps: f32,
    ones: &Tensor,
    w: &Tensor,
    rot: Option<&RopeTable>,
    trace: &Trace,
    traced: &[(String, usize, usize, bool)],
) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, n, c3) = qkv.dims3()?;
    let d = c3 / 3 / heads;
    let all = qkv
        .reshape((b, n, 3, heads, d))?
        .permute((2, 0, 3, 1, 4))?
        .contiguous()?;
    let v = all.get(2)?;
    let qk = candle_nn::ops::rms_norm(&all.narrow(0, 0, 2)?, ones, eps)?;
    let qk = qk.broadcast_mul(w)?;
    let unscale = (d as f64).sqrt();
    if trace.on() {
        for (name, start, len, _) in traced {
            let q = (qk.get(0)?.narrow(2, *start, *len)? * unscale)?;
            trace.put(&format!("{name}.q_norope"), &q);
            trace.put(&format!("{name}.q"), &q);
            trace.put(&format!("{name}.v"), &v.narrow(2, *start, *len)?);
        }
    }
    let qk = match rot {
        Some(r) => r
            .apply(&qk.reshape((2 * b, heads, n, d))?)?
            .reshape((2, b, heads, n, d))?,
        None => qk,
    };
    if trace.on() {
        for (name, start, len, rotated) in traced {
            if *rotated {
                let q = qk.get(0)?.narrow(2, *start, *len)?;
                trace.put(&format!("{name}.q_rope"), &(q * unscale)?);
                trace.put(
                    &format!("{name}.k_rope"),
                    &qk.get(1)?.narrow(2, *start, *len)?,
                );
            }
        }
    }
    Ok((qk.get(0)?, qk.get(1)?, v))
}

/// `softmax(q kᵀ · scale) v` of `(B, H, N, D)` tensors, scaling by `1/√D` unless q carries
/// it already (`q_prescaled`, the generic path): one op less.
pub fn attention_heads_scaled(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    q_prescaled: bool,
) -> Result<Tensor> {
    if !q_prescaled {
        return attention_heads(q, k, v);
    }
    let att = q.matmul(&k.transpose(2, 3)?)?;
    candle_nn::ops::softmax_last_dim(&att)?.matmul(v)
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

/// adaLN output of one block for one call: chunks `base .. base + 6` (width H) of `m (B, 1 or
/// N, K)` are shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp; with
/// `one_added` (fused generic path) the scale chunks hold `1 + scale`.
pub struct Modulation {
    m: Tensor,
    base: usize,
    one_added: bool,
}

impl Modulation {
    /// `LN(x)·(1 + scale) + shift` with chunks `i_shift`, `i_scale`; `norm` selects the
    /// generic path (the block's centred LayerNorm), `None` the fused CPU kernel.
    fn ln_modulate(
        &self,
        x: &Tensor,
        i_shift: usize,
        i_scale: usize,
        norm: Option<&CenteredNorm>,
    ) -> Result<Tensor> {
        let (s, c) = (self.base + i_shift, self.base + i_scale);
        match norm {
            Some(n) => ops::ln_modulate_generic(x, &self.m, s, c, n, self.one_added),
            None if !self.one_added => ops::ln_modulate(&x.contiguous()?, &self.m, s, c, LN_EPS),
            None => candle_core::bail!("a fused modulation needs the generic LayerNorm"),
        }
    }

    /// `x + y · gate` with chunk `i_gate`.
    fn gated_residual(
        &self,
        x: &Tensor,
        y: &Tensor,
        i_gate: usize,
        generic: bool,
    ) -> Result<Tensor> {
        let g = self.base + i_gate;
        if generic {
            ops::gated_residual_generic(x, y, &self.m, g)
        } else {
            ops::gated_residual(&x.contiguous()?, y, &self.m, g)
        }
    }
}

/// The official `MMDitSingleBlock` (used alone for fused blocks and as each stream of a
/// joint block).
#[derive(Debug, Clone)]
pub struct SingleBlock {
    attn: SelfAttention,
    ada: Linear,
    post: Option<PostAttn>,
    /// The centred LayerNorm of the generic path (`None`: fused CPU kernels).
    norm: Option<CenteredNorm>,
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
        let norm = if ops::fast_cpu_path(vb.device(), vb.dtype()) {
            None
        } else {
            Some(CenteredNorm::new(dim, LN_EPS, vb.dtype(), vb.device())?)
        };
        Ok(Self {
            attn,
            ada,
            post,
            norm,
        })
    }

    /// The adaLN projection (to fuse it with others, see [`FusedAdaLn`]).
    pub fn ada_mut(&mut self) -> &mut Linear {
        &mut self.ada
    }

    /// Whether this block runs the generic path.
    pub fn is_generic(&self) -> bool {
        self.norm.is_some()
    }

    /// adaLN modulation and the modulated, normalised input of the attention.
    fn modulated(&self, x: &Tensor, c: &AdaInput) -> Result<(Tensor, Modulation)> {
        let m = c.modulation(&self.ada)?;
        let xm = m.ln_modulate(x, 0, 1, self.norm.as_ref())?;
        Ok((xm, m))
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
        let xm = m.ln_modulate(x, 0, 1, self.norm.as_ref())?;
        let qkv = self.attn.pre_attention(&xm, rot, trace, name)?;
        let modulation = if self.post.is_some() { Some(m) } else { None };
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
        let generic = self.norm.is_some();
        let x = m.gated_residual(x, &post.linear1.forward(attn_out)?, 2, generic)?;
        let r = m.ln_modulate(&x, 3, 4, self.norm.as_ref())?;
        m.gated_residual(&x, &post.ffn.forward(&r)?, 5, generic)
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
        let n = q.dim(2)?;
        let out = attention_heads_scaled(&q, &k, &v, self.attn.q_prescaled())?;
        self.post_attention(x, &merge_heads(&out, 0, n)?, m)
    }
}

/// Per window shape `(latent, CLIP, text tokens)`: the joint q/k weights `(2, 1, 1, N, D)`
/// and the joint RoPE table (text rows: the identity rotation).
type JointTables = ((usize, usize, usize), Tensor, RopeTable);

/// Three streams (latent, CLIP, text) attending jointly.
#[derive(Debug, Clone)]
pub struct JointBlock {
    latent_block: SingleBlock,
    clip_block: SingleBlock,
    text_block: SingleBlock,
    pre_only: bool,
    /// Generic path: the tables of the last window shape.
    joint: std::sync::Arc<std::sync::Mutex<Option<JointTables>>>,
}

impl JointBlock {
    /// The three streams' blocks: latent, CLIP, text.
    pub fn streams_mut(&mut self) -> (&mut SingleBlock, &mut SingleBlock, &mut SingleBlock) {
        (
            &mut self.latent_block,
            &mut self.clip_block,
            &mut self.text_block,
        )
    }

    pub fn load(vb: VarBuilder, cfg: &NetConfig, pre_only: bool) -> Result<Self> {
        Ok(Self {
            latent_block: SingleBlock::load(vb.pp("latent_block"), cfg, false, 3)?,
            clip_block: SingleBlock::load(vb.pp("clip_block"), cfg, pre_only, 3)?,
            text_block: SingleBlock::load(vb.pp("text_block"), cfg, pre_only, 1)?,
            pre_only,
            joint: Default::default(),
        })
    }

    /// The q/k weights and the RoPE table of the three streams side by side, for a window
    /// shape (made once per shape).
    fn joint_tables(
        &self,
        lens: (usize, usize, usize),
        latent_rot: &RopeTable,
        clip_rot: &RopeTable,
    ) -> Result<(Tensor, RopeTable)> {
        let mut slot = self.joint.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((l, w, r)) = &*slot
            && *l == lens
        {
            return Ok((w.clone(), r.clone()));
        }
        let streams = [
            (&self.latent_block, lens.0),
            (&self.clip_block, lens.1),
            (&self.text_block, lens.2),
        ];
        let mut ws = Vec::with_capacity(3);
        for (block, n) in streams {
            let Some((w, _)) = &block.attn.generic_norms else {
                candle_core::bail!("joint tables on a block without the generic path");
            };
            let (two, one, one2, _, d) = w.dims5()?;
            ws.push(w.broadcast_as((two, one, one2, n, d))?);
        }
        let w = Tensor::cat(&ws, 3)?.contiguous()?;
        let half = latent_rot.cos.dim(1)?;
        let dev = latent_rot.cos.device();
        let cos = Tensor::cat(
            &[
                &latent_rot.cos,
                &clip_rot.cos,
                &Tensor::ones((lens.2, half), DType::F32, dev)?,
            ],
            0,
        )?;
        let sin = Tensor::cat(
            &[
                &latent_rot.sin,
                &clip_rot.sin,
                &Tensor::zeros((lens.2, half), DType::F32, dev)?,
            ],
            0,
        )?;
        let rope = RopeTable {
            cos,
            sin,
            host: crate::ops::HostRope {
                cos: vec![],
                sin: vec![],
                half,
            },
        };
        *slot = Some((lens, w.clone(), rope.clone()));
        Ok((w, rope))
    }

    /// The generic path: the three streams' q/k/v regrouped, normalised and rotated
    /// together (one copy, one RMSNorm, one multiply, one RoPE for all tokens).
    #[allow(clippy::too_many_arguments)]
    fn forward_generic(
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
        let (xm, lm) = self.latent_block.modulated(latent, extended_c)?;
        let (cm_in, cm) = self.clip_block.modulated(clip_f, global_c)?;
        let (tm_in, tm) = self.text_block.modulated(text_f, global_c)?;
        let qkv = Tensor::cat(
            &[
                self.latent_block.attn.qkv.forward(&xm)?,
                self.clip_block.attn.qkv.forward(&cm_in)?,
                self.text_block.attn.qkv.forward(&tm_in)?,
            ],
            1,
        )?;
        let (n_lat, n_clip, n_text) = (latent.dim(1)?, clip_f.dim(1)?, text_f.dim(1)?);
        let (w, rope) = self.joint_tables((n_lat, n_clip, n_text), latent_rot, clip_rot)?;
        let Some((_, ones)) = &self.latent_block.attn.generic_norms else {
            candle_core::bail!("joint block: no generic norms");
        };
        let traced = [
            (format!("{name}.latent"), 0, n_lat, true),
            (format!("{name}.clip"), n_lat, n_clip, true),
            (format!("{name}.text"), n_lat + n_clip, n_text, false),
        ];
        let a = &self.latent_block.attn;
        let (q, k, v) = qkv_regroup(&qkv, a.heads, a.eps, ones, &w, Some(&rope), trace, &traced)?;
        let out = attention_heads_scaled(&q, &k, &v, true)?;
        let latent =
            self.latent_block
                .post_attention(latent, &merge_heads(&out, 0, n_lat)?, Some(lm))?;
        if self.pre_only {
            return Ok((latent, clip_f.clone(), text_f.clone()));
        }
        let clip_f =
            self.clip_block
                .post_attention(clip_f, &merge_heads(&out, n_lat, n_clip)?, Some(cm))?;
        let text_f = self.text_block.post_attention(
            text_f,
            &merge_heads(&out, n_lat + n_clip, n_text)?,
            Some(tm),
        )?;
        Ok((latent, clip_f, text_f))
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
        let generic = [&self.latent_block, &self.clip_block, &self.text_block]
            .iter()
            .all(|b| b.attn.generic_norms.is_some() && b.is_generic());
        if generic {
            return self.forward_generic(
                latent, clip_f, text_f, global_c, extended_c, latent_rot, clip_rot, trace, name,
            );
        }
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
        let prescaled = self.latent_block.attn.q_prescaled();
        if prescaled != self.clip_block.attn.q_prescaled()
            || prescaled != self.text_block.attn.q_prescaled()
        {
            candle_core::bail!("joint block: the streams' attention paths differ");
        }
        // (B, H, N, D); each stream's tokens are merged to (B, n, H·D) with one copy
        let out = attention_heads_scaled(&q, &k, &v, prescaled)?;
        let latent = self
            .latent_block
            .post_attention(latent, &merge_heads(&out, 0, n_lat)?, xm)?;
        if self.pre_only {
            return Ok((latent, clip_f.clone(), text_f.clone()));
        }
        let clip_f =
            self.clip_block
                .post_attention(clip_f, &merge_heads(&out, n_lat, n_clip)?, cm)?;
        let text_f = self.text_block.post_attention(
            text_f,
            &merge_heads(&out, n_lat + n_clip, n_text)?,
            tm,
        )?;
        Ok((latent, clip_f, text_f))
    }
}

/// Final adaLN + k7 conv to the latent channels.
#[derive(Debug, Clone)]
pub struct FinalBlock {
    ada: Linear,
    conv: ChannelLastConv1d,
    /// The centred LayerNorm of the generic path (`None`: fused CPU kernels).
    norm: Option<CenteredNorm>,
}

impl FinalBlock {
    pub fn load(vb: VarBuilder, dim: usize, out_dim: usize) -> Result<Self> {
        let norm = if ops::fast_cpu_path(vb.device(), vb.dtype()) {
            None
        } else {
            Some(CenteredNorm::new(dim, LN_EPS, vb.dtype(), vb.device())?)
        };
        Ok(Self {
            ada: Linear::load(vb.pp("adaLN_modulation").pp(1), dim, 2 * dim, true)?,
            conv: ChannelLastConv1d::load(vb.pp("conv"), dim, out_dim, 7, 3, true)?,
            norm,
        })
    }

    /// The adaLN projection (to fuse it with others, see [`FusedAdaLn`]).
    pub fn ada_mut(&mut self) -> &mut Linear {
        &mut self.ada
    }

    pub fn forward(&self, latent: &Tensor, c: &AdaInput) -> Result<Tensor> {
        let m = c.modulation(&self.ada)?;
        let x = m.ln_modulate(latent, 0, 1, self.norm.as_ref())?;
        self.conv.forward(&x)
    }
}
