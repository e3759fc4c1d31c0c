//! Building blocks shared by the CLIP towers and the Synchformer visual encoder: LayerNorm
//! with a two-pass variance, PyTorch's `nn.MultiheadAttention` with its fused `in_proj`,
//! the MLP of the ViT blocks, chunked softmax attention and a recorder of intermediate
//! tensors for the parity tests.
//!
//! Layouts follow PyTorch: activations are `(batch, tokens, channels)`, checkpoint Linear
//! weights are `(out, in)` (kept transposed in memory, see [`Linear`]), fused q/k/v
//! projections are the three `(dim, dim)` blocks q, k, v stacked along the output axis, and
//! heads are contiguous `head_dim` slices of each block.
//!
//! Each block has two forward passes with the same result: the generic one of candle ops
//! (any device and dtype), and, for f32 weights on the CPU, a `*_host` one on plain `f32`
//! buffers with the kernels of [`crate::cpu`]: the bias, the activation and the residual
//! folded into the GEMMs, LayerNorm rows in parallel, attention read in place from the
//! q/k/v projection and written with the heads merged. The towers run their blocks on one
//! host buffer updated in place.

use crate::cpu;
use crate::cpu::attention::{OutRows, Problem, Rows};
use crate::cpu::gemm::Weight;
use crate::cpu::rows::Act;
use crate::cpu::tensor::{HostF32, host_f32};
use crate::error::{Error, Result};
use candle_core::{CpuStorage, D, DType, Layout, Shape, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;

/// Records named intermediate tensors of a forward pass when switched on (parity tests,
/// debugging); costs nothing when off.
#[derive(Debug, Default)]
pub struct Trace {
    on: bool,
    items: Vec<(String, Tensor)>,
}

impl Trace {
    /// A trace that records nothing.
    pub fn off() -> Self {
        Self::default()
    }

    /// A trace that records every tensor offered to it.
    pub fn on() -> Self {
        Self {
            on: true,
            items: Vec::new(),
        }
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Record `name` if the trace is on; `f` is only evaluated then. A name recorded again
    /// (a model called on several chunks) is concatenated along dim 0.
    pub fn record(&mut self, name: &str, f: impl FnOnce() -> Result<Tensor>) -> Result<()> {
        if !self.on {
            return Ok(());
        }
        let t = f()?;
        if let Some(slot) = self.items.iter_mut().find(|(n, _)| n == name) {
            slot.1 = Tensor::cat(&[&slot.1, &t], 0)?;
        } else {
            self.items.push((name.to_string(), t));
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.items.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Names in recording order.
    pub fn names(&self) -> Vec<&str> {
        self.items.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub fn into_map(self) -> HashMap<String, Tensor> {
        self.items.into_iter().collect()
    }
}

/// `nn.LayerNorm(dim, eps)` with affine weight and bias.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    /// On host f32 rows (the CPU fast path): a new buffer.
    pub fn forward_host(&self, x: &[f32]) -> Result<Vec<f32>> {
        let (w, b) = (host(&self.weight)?, host(&self.bias)?);
        let n = w.as_slice().len();
        Ok(cpu::rows::layer_norm(
            x,
            n,
            w.as_slice(),
            b.as_slice(),
            self.eps as f32,
        ))
    }
}

/// Borrow a weight for the CPU fast path (an error if it is not host f32: callers check
/// [`host_ok`] when they build the model).
pub fn host(t: &Tensor) -> Result<HostF32<'_>> {
    host_f32(t).ok_or_else(|| Error::config("CPU fast path on a tensor that is not host f32"))
}

/// Whether the CPU f32 fast path applies to a model built with `vb`.
pub fn host_ok(vb: &VarBuilder) -> bool {
    crate::ops::fast_cpu_path(vb.device(), vb.dtype())
}

/// LayerNorm over the last dimension, with the variance computed in two passes (mean first,
/// then the mean squared deviation), as PyTorch does, rather than as E[x²] − E[x]², which
/// loses digits on activations with a large common offset (CLIP's residual stream has
/// channels of several hundred). On the CPU in float32 one fused kernel does it (rows in
/// parallel on the widest vector unit the host has, [`crate::cpu`]); elsewhere (CUDA, bf16,
/// or the generic kernels forced) the row mean is subtracted before candle's one-pass
/// kernel, which then sees centred rows: the same numerics on every device.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.contiguous()?;
    if crate::ops::fast_cpu_path(x.device(), x.dtype()) {
        Ok(x.apply_op3_no_bwd(w, b, &TwoPassLayerNorm { eps: eps as f32 })?)
    } else {
        layer_norm_centered(&x, w, b, eps)
    }
}

/// The generic branch of [`layer_norm`]: the row mean subtracted first, then candle's
/// one-pass kernel on centred rows.
pub fn layer_norm_centered(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    Ok(candle_nn::ops::layer_norm(&xc, w, b, eps as f32)?)
}

struct TwoPassLayerNorm {
    eps: f32,
}

impl candle_core::CustomOp3 for TwoPassLayerNorm {
    fn name(&self) -> &'static str {
        "two-pass-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let slice = |s: &'_ CpuStorage, l: &Layout| -> candle_core::Result<Vec<f32>> {
            let CpuStorage::F32(v) = s else {
                candle_core::bail!("two-pass-layer-norm: expected f32 storage")
            };
            match l.contiguous_offsets() {
                Some((a, b)) => Ok(v[a..b].to_vec()),
                None => candle_core::bail!("two-pass-layer-norm: non-contiguous operand"),
            }
        };
        let CpuStorage::F32(xs) = s1 else {
            candle_core::bail!("two-pass-layer-norm: expected f32 input")
        };
        let Some((o1, o2)) = l1.contiguous_offsets() else {
            candle_core::bail!("two-pass-layer-norm: non-contiguous input")
        };
        let xs = &xs[o1..o2];
        let w = slice(s2, l2)?;
        let b = slice(s3, l3)?;
        let n = w.len();
        if n == 0 || b.len() != n || xs.len() % n != 0 {
            candle_core::bail!("two-pass-layer-norm: shape mismatch")
        }
        let out = cpu::rows::layer_norm(xs, n, &w, &b, self.eps);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `nn.Linear` with its weight kept transposed, `Wᵀ (in, out)`: the layout the GEMM reads
/// fastest (see [`cpu::gemm::Weight`]), transposed once at load time.
#[derive(Debug, Clone)]
pub struct Linear {
    w_t: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    /// From PyTorch's `(out, in)` weight.
    pub fn new(w: Tensor, b: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            w_t: w.t()?.contiguous()?,
            b,
        })
    }

    pub fn out_dim(&self) -> usize {
        self.w_t.dim(1).unwrap_or(0)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = crate::nn::matmul_last(&x.contiguous()?, &self.w_t)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// Output columns `start..start + n` only (a new layer; copies that part).
    pub fn cols(&self, start: usize, n: usize) -> Result<Self> {
        Ok(Self {
            w_t: self.w_t.narrow(1, start, n)?.contiguous()?,
            b: self.b.as_ref().map(|b| b.narrow(0, start, n)).transpose()?,
        })
    }

    /// `act(x Wᵀ + b)` for `rows` host rows (CPU fast path), output columns `cols` of the
    /// layer (all of them with `0..out_dim`).
    fn host(
        &self,
        x: &[f32],
        rows: usize,
        act: Act,
        cols: std::ops::Range<usize>,
    ) -> Result<Vec<f32>> {
        let w = host(&self.w_t)?;
        let (in_dim, out_dim) = self.w_t.dims2()?;
        let b = self.b.as_ref().map(host).transpose()?;
        Ok(cpu::gemm::linear(
            x,
            rows,
            Weight::new(w.as_slice(), in_dim, out_dim).cols(cols.start, cols.len()),
            b.as_ref().map(|b| &b.as_slice()[cols.clone()]),
            act,
            None,
        ))
    }
}

/// `nn.Linear(in, out)` loaded from `{weight, bias}`; weight `(out, in)`.
pub fn linear(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Linear> {
    Linear::new(
        vb.get((out_dim, in_dim), "weight")?,
        Some(vb.get(out_dim, "bias")?),
    )
}

/// Activation of the MLPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x · sigmoid(1.702 x)` (OpenAI CLIP, `quick_gelu`).
    QuickGelu,
    /// Exact GELU `x · Φ(x)` with erf (`nn.GELU()`).
    GeluErf,
}

impl Activation {
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        if crate::ops::fast_cpu_path(x.device(), x.dtype()) {
            // one fused, vectorised pass on all cores instead of candle's unary maps
            return Ok(x
                .contiguous()?
                .apply_op1_no_bwd(&ParallelActivation(self))?);
        }
        Ok(match self {
            Activation::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
            Activation::GeluErf => x.gelu_erf()?,
        })
    }

    /// The CPU kernels' activation.
    pub fn cpu(self) -> Act {
        match self {
            Activation::QuickGelu => Act::QuickGelu,
            Activation::GeluErf => Act::GeluErf,
        }
    }
}

/// [`Activation`] on contiguous f32 CPU tensors, split over the available cores.
struct ParallelActivation(Activation);

impl candle_core::CustomOp1 for ParallelActivation {
    fn name(&self) -> &'static str {
        "parallel-activation"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("parallel-activation: expected f32")
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("parallel-activation: non-contiguous input")
        };
        let mut dst = v[a..b].to_vec();
        cpu::rows::act_par(&mut dst, self.0.cpu());
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }
}

/// Two-layer MLP `fc2(act(fc1(x)))`, the layer names given by the caller (`c_fc`/`c_proj` in
/// open_clip, `fc1`/`fc2` in timm-style blocks, `linear1`/`linear2` in PyTorch's encoder layer).
#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Mlp {
    pub fn load(
        vb: &VarBuilder,
        names: (&str, &str),
        dim: usize,
        hidden: usize,
        act: Activation,
    ) -> Result<Self> {
        Ok(Self {
            fc1: linear(vb.pp(names.0), dim, hidden)?,
            fc2: linear(vb.pp(names.1), hidden, dim)?,
            act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.fc1.forward(x)?;
        let h = self.act.forward(&h)?;
        self.fc2.forward(&h)
    }

    /// CPU fast path: `y += fc2(act(fc1(x)))` for `rows` host rows (bias and activation
    /// fused into the GEMMs, the residual accumulated in place).
    pub fn add_host(&self, y: &mut [f32], x: &[f32], rows: usize) -> Result<()> {
        let h = linear_host(&self.fc1, x, rows, self.act.cpu())?;
        linear_add_host(&self.fc2, y, &h, rows)
    }
}

/// `act(x Wᵀ + b)` on host rows (CPU fast path).
pub fn linear_host(l: &Linear, x: &[f32], rows: usize, act: Act) -> Result<Vec<f32>> {
    l.host(x, rows, act, 0..l.out_dim())
}

/// `y += x Wᵀ + b` on host rows (CPU fast path).
pub fn linear_add_host(l: &Linear, y: &mut [f32], x: &[f32], rows: usize) -> Result<()> {
    let w = host(&l.w_t)?;
    let (in_dim, out_dim) = l.w_t.dims2()?;
    let b = l.b.as_ref().map(host).transpose()?;
    cpu::gemm::linear_add(
        y,
        x,
        rows,
        Weight::new(w.as_slice(), in_dim, out_dim),
        b.as_ref().map(|b| b.as_slice()),
    );
    Ok(())
}

/// Largest number of attention scores materialised at once (elements), so that long batches
/// do not allocate (groups × Tq × Tk) in one go.
const MAX_SCORES: usize = 1 << 24;

/// Softmax attention `softmax(q kᵀ + mask) v` over groups: q `(G, Tq, D)` already scaled,
/// k and v `(G, Tk, D)`, optional additive mask broadcastable to `(Tq, Tk)`. Groups are
/// processed in chunks so that at most [`MAX_SCORES`] scores exist at a time.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (g, tq, _) = q.dims3()?;
    let tk = k.dim(1)?;
    let per_group = (tq * tk).max(1);
    let chunk = (MAX_SCORES / per_group).clamp(1, g.max(1));
    let one = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<Tensor> {
        let mut s = q.matmul(&k.t()?)?;
        if let Some(m) = mask {
            s = s.broadcast_add(m)?;
        }
        let p = candle_nn::ops::softmax_last_dim(&s)?;
        Ok(p.matmul(v)?)
    };
    if chunk >= g {
        return one(q, k, v);
    }
    let mut outs = Vec::with_capacity(g.div_ceil(chunk));
    let mut start = 0;
    while start < g {
        let n = chunk.min(g - start);
        outs.push(one(
            &q.narrow(0, start, n)?,
            &k.narrow(0, start, n)?,
            &v.narrow(0, start, n)?,
        )?);
        start += n;
    }
    Ok(Tensor::cat(&outs, 0)?)
}

/// Fold the attention scale into the q rows (the first third) of a fused q/k/v projection, so
/// that its output q is already scaled. For power-of-two scales (head_dim 64: 1/8) this is
/// exact; otherwise it differs from scaling q afterwards by float rounding only.
pub fn fold_q_scale(
    w: &Tensor,
    b: Option<&Tensor>,
    scale: f64,
) -> Result<(Tensor, Option<Tensor>)> {
    let c = w.dim(0)? / 3;
    let fold = |t: &Tensor| -> Result<Tensor> {
        let q = (t.narrow(0, 0, c)? * scale)?;
        Ok(Tensor::cat(&[&q, &t.narrow(0, c, 2 * c)?], 0)?)
    };
    Ok((fold(w)?, b.map(fold).transpose()?))
}

/// Split a fused q/k/v projection `(B, T, 3·H·Dh)` into q, k, v, each `(B·H, T, Dh)` and
/// contiguous.
pub fn split_heads_qkv(qkv: &Tensor, heads: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, t, c3) = qkv.dims3()?;
    let c = c3 / 3;
    let dh = c / heads;
    let qkv = qkv.reshape((b, t, 3, heads, dh))?;
    let part = |i: usize| -> Result<Tensor> {
        Ok(qkv
            .narrow(2, i, 1)?
            .squeeze(2)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * heads, t, dh))?)
    };
    Ok((part(0)?, part(1)?, part(2)?))
}

/// Inverse of the head split: `(B·H, T, Dh)` → `(B, T, H·Dh)`.
pub fn merge_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (bh, t, dh) = x.dims3()?;
    let b = bh / heads;
    Ok(x.reshape((b, heads, t, dh))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, t, heads * dh))?)
}

/// PyTorch `nn.MultiheadAttention(dim, heads, batch_first=True)` in inference: fused
/// `in_proj_weight (3·dim, dim)` / `in_proj_bias`, `out_proj`, scale 1/√head_dim (folded
/// into the q projection at load time).
#[derive(Debug, Clone)]
pub struct MultiheadAttention {
    in_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl MultiheadAttention {
    pub fn load(vb: VarBuilder, dim: usize, heads: usize) -> Result<Self> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(Error::config(format!(
                "attention width {dim} is not a multiple of the head count {heads}"
            )));
        }
        let w = vb.get((3 * dim, dim), "in_proj_weight")?;
        let b = vb.get(3 * dim, "in_proj_bias")?;
        let scale = 1.0 / ((dim / heads) as f64).sqrt();
        let (w, b) = fold_q_scale(&w, Some(&b), scale)?;
        Ok(Self {
            in_proj: Linear::new(w, b)?,
            out_proj: linear(vb.pp("out_proj"), dim, dim)?,
            heads,
        })
    }

    /// Self-attention over `x (B, T, dim)` with an optional additive mask `(T, T)`.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let qkv = self.in_proj.forward(x)?;
        let (q, k, v) = split_heads_qkv(&qkv, self.heads)?;
        let o = attention(&q, &k, &v, mask)?;
        self.out_proj.forward(&merge_heads(&o, self.heads)?)
    }

    /// CPU fast path: `y += out_proj(attention(in_proj(x)))` for `b` sequences of `t` host
    /// rows, causal (query i sees keys 0..=i) when asked.
    pub fn add_host(
        &self,
        y: &mut [f32],
        x: &[f32],
        b: usize,
        t: usize,
        causal: bool,
    ) -> Result<()> {
        let c = self.out_proj.out_dim();
        let qkv = linear_host(&self.in_proj, x, b * t, Act::None)?;
        let o = self_attention_host(&qkv, b, t, self.heads, c, causal);
        linear_add_host(&self.out_proj, y, &o, b * t)
    }

    /// Self-attention output of the first token only, `(B, 1, dim)`: the keys and values of
    /// all tokens but a single query (for layers whose other outputs are discarded).
    pub fn forward_first(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        if let Some(host) = cpu::tensor::host_f32(x) {
            let o = self.first_host(host.as_slice(), b, t)?;
            return Ok(Tensor::from_vec(o, (b, 1, c), &candle_core::Device::Cpu)?);
        }
        let x0 = x.narrow(1, 0, 1)?;
        let q = self.in_proj.cols(0, c)?.forward(&x0)?;
        let kv = self.in_proj.cols(c, 2 * c)?.forward(x)?;
        let dh = c / self.heads;
        let q = q
            .reshape((b, 1, self.heads, dh))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * self.heads, 1, dh))?;
        let kv = kv.reshape((b, t, 2, self.heads, dh))?;
        let part = |i: usize| -> Result<Tensor> {
            Ok(kv
                .narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * self.heads, t, dh))?)
        };
        let (k, v) = (part(0)?, part(1)?);
        let o = attention(&q, &k, &v, None)?;
        self.out_proj.forward(&merge_heads(&o, self.heads)?)
    }

    /// [`forward_first`](Self::forward_first) on host rows `(B, T, C)` → `(B, C)`: the q
    /// projection of the first rows only, k/v of all rows, read in place by the attention.
    fn first_host(&self, x: &[f32], b: usize, t: usize) -> Result<Vec<f32>> {
        let c = self.out_proj.out_dim();
        let d = c / self.heads;
        let x0: Vec<f32> = x
            .chunks_exact(t * c)
            .flat_map(|s| &s[..c])
            .copied()
            .collect();
        let q = self.in_proj.host(&x0, b, Act::None, 0..c)?;
        let kv = self.in_proj.host(x, b * t, Act::None, c..3 * c)?;
        let mut o = vec![0f32; b * c];
        let mut problems = Vec::with_capacity(b * self.heads);
        for bi in 0..b {
            for h in 0..self.heads {
                let kv0 = bi * t * 2 * c + h * d;
                problems.push(Problem {
                    q: Rows::new(&q, bi * c + h * d, 1, c, d),
                    kv: vec![(
                        Rows::new(&kv, kv0, t, 2 * c, d),
                        Rows::new(&kv, kv0 + c, t, 2 * c, d),
                    )],
                    out: OutRows::new(&mut o, bi * c + h * d, 1, c, d),
                    causal: None,
                });
            }
        }
        // SAFETY: rows from `q`, `kv` and `o`, which outlive the call; disjoint outputs
        unsafe { cpu::attention::run(cpu::isa(), d, 1.0, &problems) };
        drop(problems);
        linear_host(&self.out_proj, &o, b, Act::None)
    }
}

/// Multi-head self-attention on host rows of a fused projection `(B, T, 3·C)` (`[q | k | v]`
/// column blocks, head `h` the columns `h·C/H..(h+1)·C/H` of each, q pre-scaled) →
/// `(B, T, C)` with the heads merged; causal when asked (CPU fast path, [`cpu::attention`]).
pub fn self_attention_host(
    qkv: &[f32],
    b: usize,
    t: usize,
    heads: usize,
    c: usize,
    causal: bool,
) -> Vec<f32> {
    let d = c / heads;
    let mut out = vec![0f32; b * t * c];
    let mut problems = Vec::with_capacity(b * heads);
    for bi in 0..b {
        let (base, obase) = (bi * t * 3 * c, bi * t * c);
        for h in 0..heads {
            let col = h * d;
            problems.push(Problem {
                q: Rows::new(qkv, base + col, t, 3 * c, d),
                kv: vec![(
                    Rows::new(qkv, base + c + col, t, 3 * c, d),
                    Rows::new(qkv, base + 2 * c + col, t, 3 * c, d),
                )],
                out: OutRows::new(&mut out, obase + col, t, c, d),
                causal: causal.then_some(0),
            });
        }
    }
    // SAFETY: the rows come from `qkv` and `out`, which outlive the call; every problem
    // writes its own (sequence, head) columns of `out`
    unsafe { cpu::attention::run(cpu::isa(), d, 1.0, &problems) };
    out
}

/// `F.normalize(x, dim=-1)`: x / max(‖x‖₂, 1e-12), computed in float32.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&n)?)
}

pub use crate::weights::random::RandomWeights;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn two_pass_layer_norm_matches_formula_with_offset() -> Result<()> {
        let dev = Device::Cpu;
        // large common offset: E[x²] − E[x]² would lose all digits in f32
        let base = Tensor::arange(0f32, 1024f32, &dev)?.reshape((2, 512))?;
        let x = (base.sin()? + 300.0)?;
        let w = ((Tensor::arange(0f32, 512f32, &dev)? * 0.001)? + 1.0)?;
        let b = (Tensor::arange(0f32, 512f32, &dev)? * -0.002)?;
        let got = layer_norm(&x, &w, &b, 1e-5)?;
        let generic = layer_norm_centered(&x, &w, &b, 1e-5)?;
        let one_pass = candle_nn::ops::layer_norm(&x, &w, &b, 1e-5)?;
        let x64 = x.to_dtype(DType::F64)?;
        let mean = x64.mean_keepdim(D::Minus1)?;
        let d = x64.broadcast_sub(&mean)?;
        let var = d.sqr()?.mean_keepdim(D::Minus1)?;
        let want = d
            .broadcast_div(&(var + 1e-5)?.sqrt()?)?
            .broadcast_mul(&w.to_dtype(DType::F64)?)?
            .broadcast_add(&b.to_dtype(DType::F64)?)?;
        let err = |t: &Tensor| -> Result<f64> {
            Ok((t.to_dtype(DType::F64)? - &want)?
                .abs()?
                .max_all()?
                .to_scalar::<f64>()?)
        };
        assert!(err(&got)? < 1e-3, "max error {}", err(&got)?);
        // the generic path (GPUs) is as exact; candle's kernel alone is not
        assert!(
            err(&generic)? < 1e-3,
            "generic max error {}",
            err(&generic)?
        );
        assert!(err(&one_pass)? > 1e-2, "one-pass error {}", err(&one_pass)?);
        Ok(())
    }

    #[test]
    fn chunked_attention_equals_unchunked() -> Result<()> {
        let dev = Device::Cpu;
        let g = 3;
        let (tq, tk, d) = (2500, 2500, 4);
        let q = Tensor::randn(0f32, 1.0, (g, tq, d), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (g, tk, d), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (g, tk, d), &dev)?;
        // 3 × 2500 × 2500 > MAX_SCORES: runs in chunks
        let a = attention(&q, &k, &v, None)?;
        let b = Tensor::cat(
            &(0..g)
                .map(|i| {
                    let s = q.narrow(0, i, 1)?.matmul(&k.narrow(0, i, 1)?.t()?)?;
                    candle_nn::ops::softmax_last_dim(&s)?.matmul(&v.narrow(0, i, 1)?)
                })
                .collect::<candle_core::Result<Vec<_>>>()?,
            0,
        )?;
        let err = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-6, "{err}");
        Ok(())
    }

    #[test]
    fn fused_activations_match_reference_formulas() -> Result<()> {
        let dev = Device::Cpu;
        let x = (Tensor::arange(-40000f32, 40000f32, &dev)? / 5000.0)?;
        let x64 = x.to_dtype(DType::F64)?;
        let quick = Activation::QuickGelu.forward(&x)?;
        let want = (&x64 * candle_nn::ops::sigmoid(&(&x64 * 1.702)?)?)?;
        let e = (quick.to_dtype(DType::F64)? - want)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert!(e < 1e-6, "quick gelu {e}");
        let gelu = Activation::GeluErf.forward(&x)?;
        let want = x64.gelu_erf()?;
        let e = (gelu.to_dtype(DType::F64)? - want)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert!(e < 1e-6, "gelu {e}");
        Ok(())
    }

    #[test]
    fn trace_records_only_when_on() -> Result<()> {
        let dev = Device::Cpu;
        let mut off = Trace::off();
        off.record("a", || panic!("must not be evaluated"))?;
        assert!(off.names().is_empty());
        let mut on = Trace::on();
        on.record("a", || Ok(Tensor::zeros((1, 2), DType::F32, &dev)?))?;
        on.record("a", || Ok(Tensor::ones((2, 2), DType::F32, &dev)?))?;
        assert_eq!(on.get("a").unwrap().dims(), &[3, 2]);
        Ok(())
    }
}
