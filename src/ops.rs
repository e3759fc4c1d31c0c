//! Fused CPU kernels for the hot paths of the transformer, with generic candle fallbacks.
//!
//! candle's CPU backend runs every op as a separate pass with a fresh allocation, and
//! concatenating or splitting along inner dimensions goes through strided copies. Profiling
//! the network showed ~25 % of a forward pass in such copies, so the few patterns that
//! dominate are fused here for contiguous f32 CPU tensors: time-axis im2col, the SwiGLU
//! gate, LayerNorm + adaLN modulation, gated residuals, and the q/k/v split with RMSNorm and
//! RoPE. On other devices/dtypes each function falls back to plain candle ops with the same
//! result (unit tests compare both paths).

use crate::cpu::{self, multiversion, rows};
use candle_core::{CpuStorage, D, DType, Device, Result, Storage, Tensor};
use rayon::prelude::*;

/// Run `f` on the f32 data of a contiguous CPU tensor; `None` if not applicable.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if !t.device().is_cpu() || t.dtype() != DType::F32 || !t.is_contiguous() {
        return None;
    }
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(CpuStorage::F32(v)) => {
            let o = l.start_offset();
            Some(f(&v[o..o + t.elem_count()]))
        }
        _ => None,
    }
}

/// The fused CPU kernels apply: contiguous f32 CPU tensors, fast kernels enabled
/// ([`crate::device::set_fast_cpu_kernels`]).
fn fast(ts: &[&Tensor]) -> bool {
    crate::device::fast_cpu_kernels() && cpu_f32_contiguous(ts)
}

fn cpu_f32_contiguous(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous())
}

/// Whether models built on `device` in `dtype` take the fast CPU kernels (weights laid out
/// for them) rather than the generic path every device runs.
pub fn fast_cpu_path(device: &Device, dtype: DType) -> bool {
    crate::device::fast_cpu_kernels() && device.is_cpu() && dtype == DType::F32
}

/// Rows per rayon task: keep tasks around 16k floats.
fn rows_per_task(row_len: usize) -> usize {
    (16_384 / row_len.max(1)).max(1)
}

/// im2col along time for `(B, N, C)`: `(B, N + 2·pad − k + 1, k·C)`, zero padded; row `t`
/// holds `[x[t−pad], …, x[t−pad+k−1]]`.
pub fn im2col_time(x: &Tensor, k: usize, pad: usize) -> Result<Tensor> {
    if k == 1 && pad == 0 {
        return x.contiguous();
    }
    let (b, n, c) = x.dims3()?;
    let n_out = n + 2 * pad + 1 - k;
    if fast(&[x]) {
        let out = with_f32(x, |xs| {
            let row = k * c;
            let mut out = vec![0f32; b * n_out * row];
            out.par_chunks_mut(row * rows_per_task(row))
                .enumerate()
                .for_each(|(ci, chunk)| {
                    let first = ci * rows_per_task(row);
                    for (ri, o) in chunk.chunks_mut(row).enumerate() {
                        let r = first + ri;
                        let (bi, t) = (r / n_out, r % n_out);
                        for j in 0..k {
                            let src = t + j;
                            if src >= pad && src - pad < n {
                                let s = (bi * n + src - pad) * c;
                                o[j * c..(j + 1) * c].copy_from_slice(&xs[s..s + c]);
                            }
                        }
                    }
                });
            out
        })
        .unwrap();
        return Tensor::from_vec(out, (b, n_out, k * c), &Device::Cpu);
    }
    im2col_time_generic(x, k, pad, &Im2colCache::default())
}

/// `silu(h[..., :H]) · h[..., H:]` for `h (…, 2H)`.
pub fn swiglu_gate(h: &Tensor, hidden: usize) -> Result<Tensor> {
    if fast(&[h]) && h.dim(D::Minus1)? == 2 * hidden {
        let mut dims = h.dims().to_vec();
        *dims.last_mut().unwrap() = hidden;
        let isa = cpu::isa();
        let out = with_f32(h, |hs| {
            let rows = hs.len() / (2 * hidden);
            let mut out = vec![0f32; rows * hidden];
            let rpt = rows_per_task(hidden);
            out.par_chunks_mut(hidden * rpt)
                .enumerate()
                .for_each(|(ci, chunk)| {
                    for (ri, o) in chunk.chunks_mut(hidden).enumerate() {
                        let r = ci * rpt + ri;
                        let a = &hs[r * 2 * hidden..r * 2 * hidden + hidden];
                        let g = &hs[r * 2 * hidden + hidden..(r + 1) * 2 * hidden];
                        rows::swiglu_row(isa, a, g, o);
                    }
                });
            out
        })
        .unwrap();
        return Tensor::from_vec(out, dims, &Device::Cpu);
    }
    let a = h.narrow(D::Minus1, 0, hidden)?;
    let g = h.narrow(D::Minus1, hidden, hidden)?;
    candle_nn::ops::silu(&a)? * g
}

/// Chunk `i` (width `C`) of a modulation tensor `m (B, 1 or N, K·C)`, for row `(b, t)`.
#[inline]
fn mod_row(ms: &[f32], b: usize, t: usize, nm: usize, kc: usize, c: usize, i: usize) -> &[f32] {
    let row = if nm == 1 { b } else { b * nm + t };
    &ms[row * kc + i * c..row * kc + (i + 1) * c]
}

/// `LayerNorm(x)·(1 + scale) + shift` (LayerNorm without affine), with `shift`/`scale` the
/// chunks `i_shift`/`i_scale` of `m (B, 1 or N, K·C)` along the last dim.
pub fn ln_modulate(
    x: &Tensor,
    m: &Tensor,
    i_shift: usize,
    i_scale: usize,
    eps: f32,
) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    let (mb, nm, kc) = m.dims3()?;
    if fast(&[x, m]) && mb == b && (nm == 1 || nm == n) {
        let isa = cpu::isa();
        let out = with_f32(x, |xs| {
            with_f32(m, |ms| {
                let mut out = vec![0f32; b * n * c];
                let rpt = rows_per_task(c);
                out.par_chunks_mut(c * rpt)
                    .enumerate()
                    .for_each(|(ci, chunk)| {
                        for (ri, o) in chunk.chunks_mut(c).enumerate() {
                            let r = ci * rpt + ri;
                            let (bi, t) = (r / n, r % n);
                            let xr = &xs[r * c..(r + 1) * c];
                            let shift = mod_row(ms, bi, t, nm, kc, c, i_shift);
                            let scale = mod_row(ms, bi, t, nm, kc, c, i_scale);
                            let affine = rows::Affine::Modulate { shift, scale };
                            rows::layer_norm_row(isa, xr, o, affine, eps);
                        }
                    });
                out
            })
        })
        .flatten()
        .unwrap();
        return Tensor::from_vec(out, (b, n, c), &Device::Cpu);
    }
    let norm = CenteredNorm::new(c, eps, x.dtype(), x.device())?;
    ln_modulate_generic(x, m, i_shift, i_scale, &norm, false)
}

/// `x + y · gate` with `gate` chunk `i_gate` of `m (B, 1 or N, K·C)`.
pub fn gated_residual(x: &Tensor, y: &Tensor, m: &Tensor, i_gate: usize) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    let (mb, nm, kc) = m.dims3()?;
    if fast(&[x, y, m]) && y.dims() == x.dims() && mb == b && (nm == 1 || nm == n) {
        let isa = cpu::isa();
        let out = with_f32(x, |xs| {
            with_f32(y, |ys| {
                with_f32(m, |ms| {
                    let mut out = vec![0f32; b * n * c];
                    let rpt = rows_per_task(c);
                    out.par_chunks_mut(c * rpt)
                        .enumerate()
                        .for_each(|(ci, chunk)| {
                            for (ri, o) in chunk.chunks_mut(c).enumerate() {
                                let r = ci * rpt + ri;
                                let g = mod_row(ms, r / n, r % n, nm, kc, c, i_gate);
                                let (xr, yr) = (&xs[r * c..(r + 1) * c], &ys[r * c..(r + 1) * c]);
                                rows::gated_add_row(isa, xr, yr, g, o);
                            }
                        });
                    out
                })
            })
        })
        .flatten()
        .flatten()
        .unwrap();
        return Tensor::from_vec(out, (b, n, c), &Device::Cpu);
    }
    gated_residual_generic(x, y, m, i_gate)
}

/// Host copy of a RoPE table for the fused kernel: `cos`, `sin` as `(len, D/2)` row-major.
#[derive(Debug, Clone)]
pub struct HostRope {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub half: usize,
}

/// Split `qkv (B, N, 3C)` (column blocks `[q | k | v]`, each head-major `(H, D)`) into
/// `q, k, v (B, H, N, D)`, applying RMSNorm (weights `qw`, `kw` of size D, `eps`) to q and k
/// and, when given, the adjacent-pair rotation. Returns `None` when the fast path does not
/// apply (the caller then uses the generic ops).
pub fn qkv_prep_cpu(
    qkv: &Tensor,
    heads: usize,
    qw: &[f32],
    kw: &[f32],
    eps: f32,
    rope: Option<&HostRope>,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    if !fast(&[qkv]) {
        return Ok(None);
    }
    let (b, n, c3) = qkv.dims3()?;
    let c = c3 / 3;
    let d = c / heads;
    if let Some(r) = rope
        && (r.half * 2 != d || r.cos.len() < n * r.half)
    {
        return Ok(None);
    }
    let isa = cpu::isa();
    let out = with_f32(qkv, |xs| {
        // output layout (3, B, H, N, D); one task per (which, b, h)
        let per = n * d;
        let mut out = vec![0f32; 3 * b * heads * per];
        out.par_chunks_mut(per).enumerate().for_each(|(idx, o)| {
            let which = idx / (b * heads);
            let bi = (idx / heads) % b;
            let h = idx % heads;
            for t in 0..n {
                let src = &xs[(bi * n + t) * c3 + which * c + h * d..][..d];
                let dst = &mut o[t * d..(t + 1) * d];
                if which == 2 {
                    dst.copy_from_slice(src);
                    continue;
                }
                let w = if which == 0 { qw } else { kw };
                let (cs, sn): (&[f32], &[f32]) = match rope {
                    Some(rp) => (
                        &rp.cos[t * rp.half..(t + 1) * rp.half],
                        &rp.sin[t * rp.half..(t + 1) * rp.half],
                    ),
                    None => (&[], &[]),
                };
                rms_rope_row(isa, src, dst, w, eps, cs, sn);
            }
        });
        out
    })
    .unwrap();
    let all = Tensor::from_vec(out, (3, b, heads, n, d), &Device::Cpu)?;
    Ok(Some((all.get(0)?, all.get(1)?, all.get(2)?)))
}

/// `x Wᵀ + b` over the last dim on the CPU with `w_t (in, out)`, the bias folded into the
/// GEMM's accumulator (one pass over the output); `None` when the fast path does not apply.
pub fn linear_cpu(x: &Tensor, w_t: &Tensor, b: Option<&Tensor>) -> Result<Option<Tensor>> {
    let mut ts = vec![x, w_t];
    ts.extend(b);
    if !fast(&ts) {
        return Ok(None);
    }
    let (in_dim, out_dim) = w_t.dims2()?;
    let dims = x.dims();
    if dims.last() != Some(&in_dim) || b.is_some_and(|b| b.dims() != [out_dim]) {
        return Ok(None);
    }
    let rows = x.elem_count() / in_dim.max(1);
    let (xh, wh) = (cpu::tensor::host_f32(x), cpu::tensor::host_f32(w_t));
    let bh = b.and_then(cpu::tensor::host_f32);
    let (Some(xh), Some(wh)) = (xh, wh) else {
        return Ok(None);
    };
    let y = cpu::gemm::linear(
        xh.as_slice(),
        rows,
        cpu::gemm::Weight::new(wh.as_slice(), in_dim, out_dim),
        bh.as_ref().map(|b| b.as_slice()),
        rows::Act::None,
        None,
    );
    let mut shape = dims.to_vec();
    *shape.last_mut().unwrap() = out_dim;
    Ok(Some(Tensor::from_vec(y, shape, &Device::Cpu)?))
}

/// Joint attention on the CPU: the queries of the first `n_out` streams attend to the
/// keys/values of all streams (concatenated along the sequence, as the official
/// `torch.cat` before `F.scaled_dot_product_attention`), each stream's `q, k, v` being
/// `(B, H, N_s, D)`; the scale is 1/√D. Returns each of those streams' output `(B, N_s, H·D)`
/// with the heads merged, or `None` when the fast path does not apply (not contiguous f32
/// on the CPU). Nothing is concatenated and only a block of scores exists per thread.
pub fn joint_attention_cpu(
    streams: &[(&Tensor, &Tensor, &Tensor)],
    n_out: usize,
) -> Result<Option<Vec<Tensor>>> {
    let all: Vec<&Tensor> = streams.iter().flat_map(|(q, k, v)| [*q, *k, *v]).collect();
    if !fast(&all) || streams.is_empty() || n_out > streams.len() {
        return Ok(None);
    }
    let (b, h, _, d) = streams[0].0.dims4()?;
    for t in &all {
        let (tb, th, _, td) = t.dims4()?;
        if (tb, th, td) != (b, h, d) {
            return Ok(None);
        }
    }
    let hosts: Vec<_> = all.iter().map(|t| cpu::tensor::host_f32(t)).collect();
    if hosts.iter().any(|h| h.is_none()) {
        return Ok(None);
    }
    let slices: Vec<&[f32]> = hosts
        .iter()
        .map(|h| h.as_ref().unwrap().as_slice())
        .collect();
    let lens: Vec<usize> = streams
        .iter()
        .map(|(q, _, _)| q.dim(2))
        .collect::<Result<_>>()?;
    let c = h * d;
    let mut outs: Vec<Vec<f32>> = (0..n_out).map(|s| vec![0f32; b * lens[s] * c]).collect();
    let mut problems = Vec::with_capacity(n_out * b * h);
    for (s, out) in outs.iter_mut().enumerate() {
        let n = lens[s];
        for bi in 0..b {
            for hh in 0..h {
                // block (bi, hh) of a (B, H, N, D) tensor: N rows of D floats
                let blk = |x: &[f32], len: usize| {
                    cpu::attention::Rows::new(x, (bi * h + hh) * len * d, len, d, d)
                };
                let kv = (0..streams.len())
                    .map(|j| {
                        (
                            blk(slices[3 * j + 1], lens[j]),
                            blk(slices[3 * j + 2], lens[j]),
                        )
                    })
                    .collect();
                problems.push(cpu::attention::Problem {
                    q: blk(slices[3 * s], n),
                    kv,
                    out: cpu::attention::OutRows::new(out, bi * n * c + hh * d, n, c, d),
                    causal: None,
                });
            }
        }
    }
    let scale = 1.0 / (d as f32).sqrt();
    // SAFETY: all rows come from the borrowed inputs and `outs`, which outlive the call;
    // every problem writes its own (stream, batch, head) block of columns
    unsafe { cpu::attention::run(cpu::isa(), d, scale, &problems) };
    drop(problems);
    let res = outs
        .into_iter()
        .enumerate()
        .map(|(s, o)| Tensor::from_vec(o, (b, lens[s], c), &Device::Cpu))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(res))
}

multiversion! {
    /// RMSNorm of one head row (`x / rms(x) · w`), then, when `cos`/`sin` are not empty, the
    /// rotation of adjacent pairs `(x₂ᵢ, x₂ᵢ₊₁)` by the angle whose cosine and sine they hold.
    fn rms_rope_row(src: &[f32], dst: &mut [f32], w: &[f32], eps: f32, cos: &[f32], sin: &[f32]) {
        let d = dst.len();
        let (src, w) = (&src[..d], &w[..d]);
        let ms = rows::dot_inline(src, src) / d as f32;
        let r = 1.0 / (ms + eps).sqrt();
        if cos.is_empty() {
            for i in 0..d {
                dst[i] = src[i] * r * w[i];
            }
        } else {
            let half = d / 2;
            let (cos, sin) = (&cos[..half], &sin[..half]);
            for i in 0..half {
                let x0 = src[2 * i] * r * w[2 * i];
                let x1 = src[2 * i + 1] * r * w[2 * i + 1];
                dst[2 * i] = cos[i] * x0 - sin[i] * x1;
                dst[2 * i + 1] = sin[i] * x0 + cos[i] * x1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maxdiff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Same values, non-contiguous layout: forces the generic path.
    fn strided(t: &Tensor) -> Tensor {
        t.transpose(0, 1)
            .unwrap()
            .contiguous()
            .unwrap()
            .transpose(0, 1)
            .unwrap()
    }

    #[test]
    fn fused_match_generic() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 9, 6), &dev)?;
        let xs = strided(&x);
        assert!(!xs.is_contiguous());
        for (k, pad) in [(3, 1), (7, 3), (1, 0)] {
            let a = im2col_time(&x, k, pad)?;
            let g = im2col_time(&xs, k, pad)?;
            assert_eq!(a.dims(), g.dims());
            assert!(maxdiff(&a, &g) == 0.0);
        }
        let h = Tensor::randn(0f32, 1., (2, 9, 8), &dev)?;
        let a = swiglu_gate(&h, 4)?;
        let g = swiglu_gate(&strided(&h), 4)?;
        assert!(maxdiff(&a, &g) < 1e-5);
        for nm in [1, 9] {
            let m = Tensor::randn(0f32, 1., (2, nm, 6 * 6), &dev)?;
            let a = ln_modulate(&x, &m, 0, 1, 1e-5)?;
            let g = ln_modulate(&xs, &strided(&m), 0, 1, 1e-5)?;
            assert!(maxdiff(&a, &g) < 1e-5, "ln_modulate nm={nm}");
            let y = Tensor::randn(0f32, 1., (2, 9, 6), &dev)?;
            let a = gated_residual(&x, &y, &m, 2)?;
            let g = gated_residual(&xs, &strided(&y), &m, 2)?;
            assert!(maxdiff(&a, &g) < 1e-6);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Winograd F(m, 3) for the channel-last k = 3, padding 1 convolutions of the transformer
// ---------------------------------------------------------------------------------------------
//
// y[t] = Σ_k W_k x[t − 1 + k] over (B, N, C) rows. Tiles of m outputs read α = m + 2 padded
// input rows; in the transform domain the channel mixing is one GEMM per point ξ:
//   M_ξ (tiles × H) = V_ξ (tiles × C) · U_ξ (C × H),  V_ξ = Σ_l Bᵀ[ξ][l] x_l,  U_ξ = Σ_k G[ξ][k] W_k,
//   y_r = Σ_ξ Aᵀ[r][ξ] M_ξ.
// F(2,3) (points 0, ±1, ∞; coefficients 0, ±1, ±½) rounds like the direct convolution with
// 2/3 of its multiply-adds; F(4,3) (points 0, ±1, ±2, ∞) needs half of them at ~3× the
// float32 rounding error. The transforms are textbook (Lavin & Gray 2016).

/// Bᵀ, G and Aᵀ of F(m, 3), m ∈ {2, 4}.
struct Wino {
    m: usize,
    bt: &'static [&'static [f32]],
    g: &'static [[f64; 3]],
    at: &'static [&'static [f32]],
}

static F23: Wino = Wino {
    m: 2,
    bt: &[
        &[1.0, 0.0, -1.0, 0.0],
        &[0.0, 1.0, 1.0, 0.0],
        &[0.0, -1.0, 1.0, 0.0],
        &[0.0, 1.0, 0.0, -1.0],
    ],
    g: &[
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ],
    at: &[&[1.0, 1.0, 1.0, 0.0], &[0.0, 1.0, -1.0, -1.0]],
};

static F43: Wino = Wino {
    m: 4,
    bt: &[
        &[4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        &[0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        &[0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        &[0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        &[0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        &[0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ],
    g: &[
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ],
    at: &[
        &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        &[0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        &[0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        &[0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ],
};

fn wino(m: usize) -> Option<&'static Wino> {
    match m {
        2 => Some(&F23),
        4 => Some(&F43),
        _ => None,
    }
}

/// Tile size of the transformer's k = 3 convolutions on CPU f32, read when a network is
/// built: `MMAUDIO_NET_WINOGRAD` = 4 (F(4,3), default: half the multiply-adds of the
/// direct convolution, ~3× its float32 rounding error — still 4× inside the parity
/// tolerances, and far more accurate than the TF32 matmuls the official demo enables on
/// GPUs), 2 (F(2,3): 2/3 of the multiply-adds, rounding like the direct convolution) or
/// 0 (im2col + GEMM).
pub fn net_winograd_tile() -> usize {
    let forced = NET_WINOGRAD.load(std::sync::atomic::Ordering::Relaxed);
    if forced != usize::MAX {
        return forced;
    }
    match std::env::var("MMAUDIO_NET_WINOGRAD").ok().as_deref() {
        Some("0") => 0,
        Some("2") => 2,
        _ => 4,
    }
}

static NET_WINOGRAD: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(usize::MAX);

/// Override the tile of networks built from now on (0, 2 or 4; `None` = environment /
/// default). Process-wide; tests use it to run both paths.
pub fn set_net_winograd_tile(m: Option<usize>) {
    let v = match m {
        Some(0) => 0,
        Some(2) => 2,
        Some(4) => 4,
        _ => usize::MAX,
    };
    NET_WINOGRAD.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// `U (α, C_in, C_out)` of F(m, 3) from an official `(C_out, C_in, 3)` weight, formed in f64.
pub fn winograd3_weight(w: &Tensor, m: usize) -> Result<Tensor> {
    let sc = wino(m).ok_or_else(|| candle_core::Error::Msg(format!("no Winograd F({m},3)")))?;
    let (cout, cin, k) = w.dims3()?;
    if k != 3 {
        candle_core::bail!("winograd3_weight: kernel size {k} != 3");
    }
    let wv: Vec<f64> = w.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let a = sc.m + 2;
    let mut u = vec![0f32; a * cin * cout];
    for (xi, g) in sc.g.iter().enumerate() {
        for ci in 0..cin {
            for co in 0..cout {
                let base = (co * cin + ci) * 3;
                let v = g[0] * wv[base] + g[1] * wv[base + 1] + g[2] * wv[base + 2];
                u[(xi * cin + ci) * cout + co] = v as f32;
            }
        }
    }
    Tensor::from_vec(u, (a, cin, cout), &Device::Cpu)?.to_device(w.device())
}

/// The k = 3, padding 1 convolution of channel-last `x (B, N, C)` (contiguous f32 CPU) with
/// Winograd weights `u (α, C, H)`; `None` when the fast path does not apply.
pub fn winograd3_cl(x: &Tensor, u: &Tensor, m: usize) -> Result<Option<Tensor>> {
    let Some(sc) = wino(m) else { return Ok(None) };
    // the weights were laid out for this kernel when the model was built: run it whatever
    // the process-wide kernel choice says now
    if !cpu_f32_contiguous(&[x, u]) {
        return Ok(None);
    }
    let (b, n, c) = x.dims3()?;
    let (a, uc, h) = u.dims3()?;
    if a != m + 2 || uc != c || n == 0 {
        return Ok(None);
    }
    let tiles = n.div_ceil(m);
    let rows = b * tiles;
    let isa = cpu::isa();
    // input transform: V (α, rows, C)
    let v = with_f32(x, |xs| {
        let mut v = vec![0f32; a * rows * c];
        let vp = SendPtr(v.as_mut_ptr());
        (0..rows).into_par_iter().for_each(|row| {
            let (bi, j) = (row / tiles, row % tiles);
            // padded input row i (0 ≤ i < α) of this tile: x[bi, j·m + i − 1] or zeros
            let xrow = |i: usize| -> Option<&[f32]> {
                let t = (j * m + i).checked_sub(1)?;
                (t < n).then(|| &xs[(bi * n + t) * c..(bi * n + t + 1) * c])
            };
            let ins: Vec<Option<&[f32]>> = (0..a).map(xrow).collect();
            for (xi, bt) in sc.bt.iter().enumerate() {
                // SAFETY: row `row` of plane ξ is written by this task only
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(vp.ptr().add((xi * rows + row) * c), c)
                };
                for (l, &coef) in bt.iter().enumerate() {
                    if coef == 0.0 {
                        continue;
                    }
                    if let Some(src) = ins[l] {
                        rows::axpy(isa, dst, coef, src);
                    }
                }
            }
        });
        v
    })
    .unwrap();
    let v = Tensor::from_vec(v, (a, rows, c), &Device::Cpu)?;
    // channel mixing: α GEMMs
    let mm = v.matmul(u)?;
    // output transform
    let out = with_f32(&mm, |ms| {
        let mut out = vec![0f32; b * n * h];
        let op = SendPtr(out.as_mut_ptr());
        (0..rows).into_par_iter().for_each(|row| {
            let (bi, j) = (row / tiles, row % tiles);
            for (r, at) in sc.at.iter().enumerate() {
                let t = j * m + r;
                if t >= n {
                    break;
                }
                // SAFETY: output row (bi, t) is written by this task only
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(op.ptr().add((bi * n + t) * h), h) };
                for (xi, &coef) in at.iter().enumerate() {
                    if coef == 0.0 {
                        continue;
                    }
                    let src = &ms[(xi * rows + row) * h..(xi * rows + row + 1) * h];
                    rows::axpy(isa, dst, coef, src);
                }
            }
        });
        out
    })
    .unwrap();
    Ok(Some(Tensor::from_vec(out, (b, n, h), &Device::Cpu)?))
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to write disjoint regions from parallel tasks
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

// ---------------------------------------------------------------------------------------------
// Generic paths: few, fat candle ops (what a GPU runs, one kernel launch per op)
// ---------------------------------------------------------------------------------------------

/// Key of the device tensors a generic im2col needs for one input shape.
type Im2colKey = (
    usize,
    usize,
    usize,
    usize,
    usize,
    DType,
    candle_core::DeviceLocation,
);

/// What the generic time im2col of one layer keeps between calls: the gather index and a
/// zero-padded buffer of the input's shape (its end rows stay zero; each call copies the
/// input into its middle in place). So a sampler step uploads, fills and allocates nothing
/// for the padding — an upload from pageable host memory would also stall the GPU stream —
/// and the padding is one copy instead of a three-piece `cat`. Shared by the clones of a
/// layer; one entry (the last shape).
#[derive(Debug, Clone, Default)]
pub struct Im2colCache(std::sync::Arc<std::sync::Mutex<Option<Im2colAux>>>);

/// The key, the gather index and the padded buffer (absent without padding).
type Im2colAux = (Im2colKey, Tensor, Option<Tensor>);

/// `[t + j for t in 0..n_out for j in 0..k]`: row `t` of the im2col gathers padded rows
/// `t .. t + k`.
fn im2col_index(n_out: usize, k: usize, device: &Device) -> Result<Tensor> {
    let idx: Vec<u32> = (0..n_out)
        .flat_map(|t| (0..k).map(move |j| (t + j) as u32))
        .collect();
    Tensor::from_vec(idx, n_out * k, device)
}

/// The time im2col as two ops: the input copied into the layer's zero-padded buffer, then
/// one `index_select` of the padded rows, whose `(B, N_out·k, C)` result is the `(B, N_out,
/// k·C)` im2col as it lies in memory. Same values as [`im2col_time`].
pub fn im2col_time_generic(
    x: &Tensor,
    k: usize,
    pad: usize,
    cache: &Im2colCache,
) -> Result<Tensor> {
    if k == 1 && pad == 0 {
        return x.contiguous();
    }
    let (b, n, c) = x.dims3()?;
    let n_out = n + 2 * pad + 1 - k;
    let key: Im2colKey = (b, n, c, k, pad, x.dtype(), x.device().location());
    let x = x.contiguous()?;
    // the lock is held until the gather is issued: the buffer is this call's until then
    // (on a GPU both ops are queued in order on the device's stream)
    let mut slot = cache.0.lock().unwrap_or_else(|e| e.into_inner());
    if !matches!(&*slot, Some((k0, _, _)) if *k0 == key) {
        let idx = im2col_index(n_out, k, x.device())?;
        let padded = if pad > 0 {
            Some(Tensor::zeros((b, n + 2 * pad, c), x.dtype(), x.device())?)
        } else {
            None
        };
        *slot = Some((key, idx, padded));
    }
    let Some((_, idx, padded)) = &*slot else {
        unreachable!("filled above")
    };
    let cols = match padded {
        Some(p) => {
            p.slice_set(&x, 1, pad)?;
            crate::opcount::note_in_place(1);
            p.index_select(idx, 1)?
        }
        None => x.index_select(idx, 1)?,
    };
    cols.reshape((b, n_out, k * c))
}

/// LayerNorm without affine parameters over the last dimension, numerically stable on every
/// device. candle's LayerNorm kernels (CPU and CUDA alike) take the variance in one pass as
/// E[x²] − E[x]², which loses the digits of activations with a large common offset; the
/// official code (PyTorch) does not. Here the row mean — one matmul with a `(dim, 1)` column
/// of `1/dim`, accumulated in f32 also for bf16 — is subtracted first, so the kernel sees
/// centred rows and its one-pass variance is exact to rounding: two-pass numerics in three
/// ops, with constants made once.
#[derive(Debug, Clone)]
pub struct CenteredNorm {
    ones: Tensor,
    zeros: Tensor,
    /// `(dim, 1)`: `1/dim`
    inv_n: Tensor,
    eps: f32,
}

impl CenteredNorm {
    pub fn new(dim: usize, eps: f32, dtype: DType, device: &Device) -> Result<Self> {
        Ok(Self {
            ones: Tensor::ones(dim, dtype, device)?,
            zeros: Tensor::zeros(dim, dtype, device)?,
            inv_n: Tensor::full(1.0 / dim as f32, (dim, 1), device)?.to_dtype(dtype)?,
            eps,
        })
    }

    /// `x − mean(x)` over the last dimension.
    pub fn center(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        let dims = x.dims();
        let c = *dims.last().unwrap_or(&0);
        let rows = x.elem_count() / c.max(1);
        let mut mdims = dims.to_vec();
        *mdims.last_mut().unwrap() = 1;
        let mean = x.reshape((rows, c))?.matmul(&self.inv_n)?.reshape(mdims)?;
        x.broadcast_sub(&mean)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(&self.center(x)?, &self.ones, &self.zeros, self.eps)
    }
}

/// Generic `LayerNorm(x)·(1 + scale) + shift` with `shift`/`scale` the chunks `i_shift`/
/// `i_scale` (width `C`) of `m (B, 1 or N, K·C)`; when `one_added`, the scale chunk already
/// holds `1 + scale` (the fused modulation of the generic network path adds it in its bias).
pub fn ln_modulate_generic(
    x: &Tensor,
    m: &Tensor,
    i_shift: usize,
    i_scale: usize,
    norm: &CenteredNorm,
    one_added: bool,
) -> Result<Tensor> {
    let c = x.dim(D::Minus1)?;
    let xn = norm.forward(x)?;
    let shift = m.narrow(D::Minus1, i_shift * c, c)?;
    let scale = m.narrow(D::Minus1, i_scale * c, c)?;
    let scale = if one_added { scale } else { (scale + 1.0)? };
    xn.broadcast_mul(&scale)?.broadcast_add(&shift)
}

/// Generic `x + y · gate` with `gate` chunk `i_gate` of `m (B, 1 or N, K·C)`.
pub fn gated_residual_generic(x: &Tensor, y: &Tensor, m: &Tensor, i_gate: usize) -> Result<Tensor> {
    let c = x.dim(D::Minus1)?;
    let gate = m.narrow(D::Minus1, i_gate * c, c)?;
    x + y.broadcast_mul(&gate)?
}

#[cfg(test)]
mod generic_tests {
    use super::*;

    fn maxdiff(a: &Tensor, b: &Tensor) -> f64 {
        (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    #[test]
    fn generic_im2col_equals_the_fused_one() -> Result<()> {
        let dev = Device::Cpu;
        let cache = Im2colCache::default();
        for (n, k, pad) in [
            (9, 3, 1),
            (9, 7, 3),
            (9, 1, 0),
            (9, 5, 0),
            (4, 7, 3),
            (9, 3, 1),
        ] {
            let x = Tensor::randn(0f32, 1., (2, n, 6), &dev)?;
            let g = im2col_time_generic(&x, k, pad, &cache)?;
            let f = im2col_time(&x, k, pad)?;
            assert_eq!(g.dims(), f.dims());
            assert_eq!(maxdiff(&g, &f), 0.0, "n {n} k {k} pad {pad}");
        }
        Ok(())
    }

    /// Rows with a large common offset (as CLIP's residual stream has): candle's one-pass
    /// LayerNorm loses most digits, the centred one matches the two-pass f64 formula.
    #[test]
    fn centered_norm_is_stable_with_offsets() -> Result<()> {
        let dev = Device::Cpu;
        let base = Tensor::arange(0f32, 2048f32, &dev)?.reshape((4, 512))?;
        let x = ((base.sin()? * 0.5)? + 300.0)?;
        let x64 = x.to_dtype(DType::F64)?;
        let d = x64.broadcast_sub(&x64.mean_keepdim(D::Minus1)?)?;
        let var = d.sqr()?.mean_keepdim(D::Minus1)?;
        let want = d.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        let norm = CenteredNorm::new(512, 1e-5, DType::F32, &dev)?;
        let got = norm.forward(&x)?;
        assert!(
            maxdiff(&got, &want) < 2e-4,
            "centred: {}",
            maxdiff(&got, &want)
        );
        let ones = Tensor::ones(512, DType::F32, &dev)?;
        let zeros = Tensor::zeros(512, DType::F32, &dev)?;
        let one_pass = candle_nn::ops::layer_norm(&x, &ones, &zeros, 1e-5)?;
        assert!(
            maxdiff(&one_pass, &want) > 1e-2,
            "candle's one-pass LayerNorm is expected to lose digits here: {}",
            maxdiff(&one_pass, &want)
        );
        Ok(())
    }

    #[test]
    fn generic_modulation_matches_the_fused_kernels() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 9, 6), &dev)?;
        let norm = CenteredNorm::new(6, 1e-5, DType::F32, &dev)?;
        for nm in [1, 9] {
            let m = Tensor::randn(0f32, 1., (2, nm, 6 * 6), &dev)?;
            let fast = ln_modulate(&x, &m, 3, 4, 1e-5)?;
            let g = ln_modulate_generic(&x, &m, 3, 4, &norm, false)?;
            assert!(maxdiff(&fast, &g) < 1e-5);
            // the scale chunk with 1 added in advance
            let c = 6;
            let plus = Tensor::cat(
                &[
                    m.narrow(D::Minus1, 0, 4 * c)?,
                    (m.narrow(D::Minus1, 4 * c, c)? + 1.0)?,
                    m.narrow(D::Minus1, 5 * c, c)?,
                ],
                D::Minus1,
            )?;
            let g1 = ln_modulate_generic(&x, &plus, 3, 4, &norm, true)?;
            assert!(maxdiff(&fast, &g1) < 1e-5);
            let y = Tensor::randn(0f32, 1., (2, 9, 6), &dev)?;
            let a = gated_residual(&x, &y, &m, 5)?;
            let b = gated_residual_generic(&x, &y, &m, 5)?;
            assert!(maxdiff(&a, &b) < 1e-6);
        }
        Ok(())
    }
}
