//! Convolution and anti-aliased activation kernels shared by the vocoders and the VAE.
//!
//! Every operation has two implementations with the same numerics (up to float summation
//! order):
//!
//! * a **generic** one built from candle ops, which runs on every device and dtype. It avoids
//!   candle's slow paths: transposed convolutions run with padding 0 and are cropped with
//!   `narrow` (a non-zero padding takes a slow path on CUDA), and the depthwise anti-alias
//!   filters run as ONE single-channel convolution over a `[B·C, 1, T]` view (candle loops
//!   over groups one by one);
//! * a **fast CPU f32** one: convolutions are a sum over kernel taps of GEMMs straight on the
//!   input (no im2col buffer, no output transpose, bias folded into the accumulator), and the
//!   whole `Activation1d` (×2 upsample → Snake/SnakeBeta → ×2 downsample) is one fused,
//!   multi-threaded, vectorised pass per channel row that never materialises the 2× signal.
//!
//! The fast path is used automatically for contiguous f32 tensors on the CPU; it can be
//! switched off process-wide with [`set_fast_cpu_kernels`] (tests compare both).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Taps of the Kaiser-sinc anti-aliasing filters (official `Activation1d` default).
pub const AA_KERNEL: usize = 12;
/// Replicate padding before the ×2 transposed-conv upsampler: `kernel / ratio − 1`.
const UP_PAD: usize = AA_KERNEL / 2 - 1;
/// Crop of the upsampler output on each side: `pad·ratio + (kernel − ratio)/2`.
const UP_CROP: usize = UP_PAD * 2 + (AA_KERNEL - 2) / 2;
/// Replicate padding of the low-pass filter of the downsampler (even kernel).
const DOWN_PAD_LEFT: usize = AA_KERNEL / 2 - 1;
const DOWN_PAD_RIGHT: usize = AA_KERNEL / 2;

static FAST_CPU: AtomicBool = AtomicBool::new(true);

/// Enable or disable the fast CPU f32 kernels (default: enabled).
pub fn set_fast_cpu_kernels(on: bool) {
    FAST_CPU.store(on, Ordering::Relaxed);
}

pub fn fast_cpu_kernels() -> bool {
    FAST_CPU.load(Ordering::Relaxed)
}

fn use_fast(t: &Tensor) -> bool {
    fast_cpu_kernels() && t.device().is_cpu() && t.dtype() == DType::F32
}

fn parallelism() -> gemm::Parallelism {
    let n = rayon::current_num_threads();
    if n > 1 {
        gemm::Parallelism::Rayon(n)
    } else {
        gemm::Parallelism::None
    }
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d.as_slice(),
        _ => candle_core::bail!("{what}: expected f32 storage"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

// ---------------------------------------------------------------------------------------------
// Weights and work splitting
// ---------------------------------------------------------------------------------------------

/// Which convolution a weight belongs to (their official layouts differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    /// `Conv1d`: official layout (C_out, C_in, K).
    Conv,
    /// `ConvTranspose1d`: official layout (C_in, C_out, K).
    Transposed,
}

/// A convolution weight in the layout the current device runs fastest: on the CPU in f32 the
/// taps come first, (K, C_out, C_in) contiguous, so each tap is a plain row-major GEMM
/// operand; elsewhere the official layout.
#[derive(Debug, Clone)]
pub struct ConvWeight {
    t: Tensor,
    kind: ConvKind,
    taps_first: bool,
}

impl ConvWeight {
    /// From the official layout.
    pub fn new(w: Tensor, kind: ConvKind) -> candle_core::Result<Self> {
        w.dims3()?;
        if w.device().is_cpu() && w.dtype() == DType::F32 {
            let t = match kind {
                ConvKind::Conv => w.permute((2, 0, 1))?,
                ConvKind::Transposed => w.permute((2, 1, 0))?,
            }
            .contiguous()?;
            Ok(Self {
                t,
                kind,
                taps_first: true,
            })
        } else {
            Ok(Self {
                t: w,
                kind,
                taps_first: false,
            })
        }
    }

    /// The weight in the official layout.
    pub fn official(&self) -> candle_core::Result<Tensor> {
        if !self.taps_first {
            return Ok(self.t.clone());
        }
        match self.kind {
            ConvKind::Conv => self.t.permute((1, 2, 0)),
            ConvKind::Transposed => self.t.permute((2, 1, 0)),
        }
    }

    pub fn dtype(&self) -> DType {
        self.t.dtype()
    }

    /// Official shape.
    pub fn dims(&self) -> candle_core::Result<(usize, usize, usize)> {
        let (a, b, c) = self.t.dims3()?;
        Ok(if !self.taps_first {
            (a, b, c)
        } else {
            match self.kind {
                ConvKind::Conv => (b, c, a),
                ConvKind::Transposed => (c, b, a),
            }
        })
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

impl SendPtr {
    /// Taking `self` makes closures capture the whole (Send) wrapper, not the raw field.
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY (of the callers): offsets stay inside the buffer the pointer came from.
        self.0.wrapping_add(offset)
    }
}
// SAFETY: used only to hand disjoint output regions to rayon tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Columns per task so that a task's input and output blocks stay in cache (~512 KB).
fn chunk_cols(cin: usize, cout: usize) -> usize {
    (131_072 / (cin + cout)).clamp(256, 8192)
}

/// Run `f(start, end, parallelism)` over `[0, n)`: one call with GEMM-level threading when the
/// range is short, else cache-sized column chunks in parallel with single-threaded GEMMs.
fn split_cols(n: usize, chunk: usize, f: impl Fn(usize, usize, gemm::Parallelism) + Sync) {
    let threads = rayon::current_num_threads();
    if threads <= 1 || n < 2 * chunk {
        f(0, n, parallelism());
        return;
    }
    let n_chunks = n.div_ceil(chunk);
    (0..n_chunks).into_par_iter().for_each(|c| {
        let s = c * chunk;
        f(s, (s + chunk).min(n), gemm::Parallelism::None)
    });
}

/// dst (m × n, row stride dst_rs) += lhs (m × k, row-major contiguous) · rhs (k × n, row
/// stride rhs_rs).
///
/// # Safety
/// The pointers must cover the described matrices; dst must not overlap the inputs or
/// regions written concurrently.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_acc(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    rhs: *const f32,
    rhs_rs: usize,
    par: gemm::Parallelism,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            true,
            lhs,
            1,
            k as isize,
            rhs,
            1,
            rhs_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Conv1d (stride 1)
// ---------------------------------------------------------------------------------------------

/// 1-D convolution, stride 1, zero padding `padding` on both sides, dilation `dilation`.
/// `x`: (B, C_in, T), `w`: official (C_out, C_in, K), `bias`: (C_out,).
pub fn conv1d(
    x: &Tensor,
    w: &ConvWeight,
    bias: Option<&Tensor>,
    padding: usize,
    dilation: usize,
) -> candle_core::Result<Tensor> {
    if use_fast(x) && w.taps_first && bias.is_none_or(|b| b.dtype() == DType::F32) {
        let x = x.contiguous()?;
        let op = Conv1dGemm { padding, dilation };
        return match bias {
            Some(b) => x.apply_op3_no_bwd(&w.t, &b.contiguous()?, &op),
            None => x.apply_op2_no_bwd(&w.t, &op),
        };
    }
    let y = x.conv1d(&w.official()?.contiguous()?, padding, 1, dilation, 1)?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1))?),
        None => Ok(y),
    }
}

struct Conv1dGemm {
    padding: usize,
    dilation: usize,
}

impl Conv1dGemm {
    /// `w` taps-first (K, C_out, C_in).
    fn run(
        &self,
        x: &[f32],
        xl: &Layout,
        w: &[f32],
        wl: &Layout,
        bias: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, cin, t) = xl.shape().dims3()?;
        let (k, cout, cin_w) = wl.shape().dims3()?;
        if cin != cin_w {
            candle_core::bail!("conv1d: input has {cin} channels, weight expects {cin_w}");
        }
        let (p, d) = (self.padding, self.dilation);
        let span = d * (k - 1);
        if t + 2 * p < span + 1 {
            candle_core::bail!("conv1d: input length {t} too short for kernel {k}");
        }
        let t_out = t + 2 * p - span;
        let mut dst = vec![0f32; b * cout * t_out];
        for bi in 0..b {
            let xb = &x[bi * cin * t..(bi + 1) * cin * t];
            let db = SendPtr(dst[bi * cout * t_out..].as_mut_ptr());
            split_cols(t_out, chunk_cols(cin, cout), |c0, c1, par| {
                // SAFETY: this task owns output columns [c0, c1) of every row.
                unsafe {
                    for co in 0..cout {
                        let row = std::slice::from_raw_parts_mut(db.at(co * t_out + c0), c1 - c0);
                        row.fill(bias.map_or(0.0, |bv| bv[co]));
                    }
                    for tap in 0..k {
                        // output o reads input o + off
                        let off = (tap * d) as isize - p as isize;
                        let o0 = (c0 as isize).max(-off);
                        let o1 = (c1 as isize).min(t as isize - off);
                        if o1 <= o0 {
                            continue;
                        }
                        gemm_acc(
                            cout,
                            (o1 - o0) as usize,
                            cin,
                            db.at(o0 as usize),
                            t_out,
                            w.as_ptr().add(tap * cout * cin),
                            xb.as_ptr().add((o0 + off) as usize),
                            t,
                            par,
                        );
                    }
                }
            });
        }
        Ok((CpuStorage::F32(dst), Shape::from((b, cout, t_out))))
    }
}

impl CustomOp2 for Conv1dGemm {
    fn name(&self) -> &'static str {
        "conv1d-gemm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "conv1d input")?;
        let w = f32_slice(s2, l2, "conv1d weight")?;
        self.run(x, l1, w, l2, None)
    }
}

impl CustomOp3 for Conv1dGemm {
    fn name(&self) -> &'static str {
        "conv1d-gemm-bias"
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
        let x = f32_slice(s1, l1, "conv1d input")?;
        let w = f32_slice(s2, l2, "conv1d weight")?;
        let b = f32_slice(s3, l3, "conv1d bias")?;
        if b.len() != l2.dims()[1] {
            candle_core::bail!(
                "conv1d: bias has {} values, expected {}",
                b.len(),
                l2.dims()[1]
            );
        }
        self.run(x, l1, w, l2, Some(b))
    }
}

// ---------------------------------------------------------------------------------------------
// ConvTranspose1d
// ---------------------------------------------------------------------------------------------

/// 1-D transposed convolution (PyTorch semantics), dilation 1, no output padding.
/// `x`: (B, C_in, T), `w`: official (C_in, C_out, K), `bias`: (C_out,). Output length
/// `(T − 1)·stride − 2·padding + K`.
pub fn conv_transpose1d(
    x: &Tensor,
    w: &ConvWeight,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    if use_fast(x) && w.taps_first && bias.is_none_or(|b| b.dtype() == DType::F32) {
        let x = x.contiguous()?;
        let op = ConvTr1dGemm { stride, padding };
        return match bias {
            Some(b) => x.apply_op3_no_bwd(&w.t, &b.contiguous()?, &op),
            None => x.apply_op2_no_bwd(&w.t, &op),
        };
    }
    // candle's transposed conv with padding > 0 takes a slow path on CUDA: run it unpadded
    // and crop.
    let w = w.official()?.contiguous()?;
    let (b, _, t) = x.dims3()?;
    let (_, _, k) = w.dims3()?;
    let full = if b > 1 && x.device().is_cpu() {
        // candle 0.11.1's CPU col2im path folds the batch of a transposed lhs into one GEMM
        // and gets batch > 1 wrong: run the items one by one.
        let items = (0..b)
            .map(|i| x.narrow(0, i, 1)?.conv_transpose1d(&w, 0, 0, stride, 1, 1))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&items, 0)?
    } else {
        x.conv_transpose1d(&w, 0, 0, stride, 1, 1)?
    };
    let t_out = (t - 1) * stride + k - 2 * padding;
    let y = if padding > 0 {
        full.narrow(2, padding, t_out)?
    } else {
        full
    };
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1))?),
        None => Ok(y),
    }
}

struct ConvTr1dGemm {
    stride: usize,
    padding: usize,
}

impl ConvTr1dGemm {
    /// `w` taps-first (K, C_out, C_in).
    fn run(
        &self,
        x: &[f32],
        xl: &Layout,
        w: &[f32],
        wl: &Layout,
        bias: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, cin, tin) = xl.shape().dims3()?;
        let (k, cout, cin_w) = wl.shape().dims3()?;
        if cin != cin_w {
            candle_core::bail!(
                "conv_transpose1d: input has {cin} channels, weight expects {cin_w}"
            );
        }
        let (s, p) = (self.stride, self.padding);
        if tin == 0 || (tin - 1) * s + k < 2 * p + 1 {
            candle_core::bail!("conv_transpose1d: input length {tin} too short");
        }
        let t_out = (tin - 1) * s + k - 2 * p;
        // Polyphase: output o = q·s + r. Tap j adds W_jᵀ·x[i] at o = i·s + j − p, i.e. to phase
        // r = (j − p) mod s at q = i + dq. Each task owns a range of q, accumulates every phase
        // in a contiguous scratch (C_out × q-range per phase) and interleaves it into the output.
        let nq = t_out.div_ceil(s);
        let mut dst = vec![0f32; b * cout * t_out];
        for bi in 0..b {
            let xb = &x[bi * cin * tin..(bi + 1) * cin * tin];
            let db = SendPtr(dst[bi * cout * t_out..].as_mut_ptr());
            split_cols(nq, chunk_cols(cin, cout * s), |q0, q1, par| {
                let nc = q1 - q0;
                let mut ph = vec![0f32; s * cout * nc];
                for (i, row) in ph.chunks_mut(nc).enumerate() {
                    row.fill(bias.map_or(0.0, |bv| bv[i % cout]));
                }
                for j in 0..k {
                    let jp = j as isize - p as isize;
                    let r = jp.rem_euclid(s as isize) as usize;
                    let dq = (jp - r as isize) / s as isize;
                    let nq_r = (t_out - r).div_ceil(s) as isize;
                    let a = (q0 as isize).max(dq);
                    let e = (q1 as isize).min(nq_r).min(tin as isize + dq);
                    if e <= a {
                        continue;
                    }
                    // SAFETY: ranges above keep every access inside `ph`, `w`, `xb`.
                    unsafe {
                        gemm_acc(
                            cout,
                            (e - a) as usize,
                            cin,
                            ph.as_mut_ptr().add(r * cout * nc + (a as usize - q0)),
                            nc,
                            w.as_ptr().add(j * cout * cin),
                            xb.as_ptr().add((a - dq) as usize),
                            tin,
                            par,
                        );
                    }
                }
                // SAFETY: this task owns output columns [q0·s, q1·s) ∩ [0, t_out) of every row.
                unsafe {
                    let o_end = (q1 * s).min(t_out);
                    for co in 0..cout {
                        let row = std::slice::from_raw_parts_mut(
                            db.at(co * t_out + q0 * s),
                            o_end - q0 * s,
                        );
                        for r in 0..s {
                            let src = &ph[(r * cout + co) * nc..(r * cout + co + 1) * nc];
                            for (q, v) in src.iter().enumerate() {
                                if let Some(o) = row.get_mut(q * s + r) {
                                    *o = *v;
                                }
                            }
                        }
                    }
                }
            });
        }
        Ok((CpuStorage::F32(dst), Shape::from((b, cout, t_out))))
    }
}

impl CustomOp2 for ConvTr1dGemm {
    fn name(&self) -> &'static str {
        "conv-transpose1d-gemm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "conv_transpose1d input")?;
        let w = f32_slice(s2, l2, "conv_transpose1d weight")?;
        self.run(x, l1, w, l2, None)
    }
}

impl CustomOp3 for ConvTr1dGemm {
    fn name(&self) -> &'static str {
        "conv-transpose1d-gemm-bias"
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
        let x = f32_slice(s1, l1, "conv_transpose1d input")?;
        let w = f32_slice(s2, l2, "conv_transpose1d weight")?;
        let b = f32_slice(s3, l3, "conv_transpose1d bias")?;
        if b.len() != l2.dims()[1] {
            candle_core::bail!(
                "conv_transpose1d: bias has {} values, expected {}",
                b.len(),
                l2.dims()[1]
            );
        }
        self.run(x, l1, w, l2, Some(b))
    }
}

// ---------------------------------------------------------------------------------------------
// Anti-aliased activation (alias-free-torch Activation1d with ratio 2 and 12 taps)
// ---------------------------------------------------------------------------------------------

/// Zeroth-order modified Bessel function of the first kind (power series, f64).
fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for k in 1..200 {
        term *= q / (k as f64 * k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// The official Kaiser-windowed sinc low-pass filter (`kaiser_sinc_filter1d`), computed in f64
/// and rounded to f32. The checkpoints carry these as buffers; this is used when they do not.
pub fn kaiser_sinc_filter(cutoff: f64, half_width: f64, kernel_size: usize) -> Vec<f32> {
    let even = kernel_size.is_multiple_of(2);
    let half = (kernel_size / 2) as f64;
    let delta_f = 4.0 * half_width;
    let a = 2.285 * (half - 1.0) * std::f64::consts::PI * delta_f + 7.95;
    let beta = if a > 50.0 {
        0.1102 * (a - 8.7)
    } else if a >= 21.0 {
        0.5842 * (a - 21.0).powf(0.4) + 0.07886 * (a - 21.0)
    } else {
        0.0
    };
    let n = kernel_size as f64;
    let i0b = bessel_i0(beta);
    let mut f: Vec<f64> = (0..kernel_size)
        .map(|i| {
            // symmetric Kaiser window
            let r = if kernel_size > 1 {
                2.0 * i as f64 / (n - 1.0) - 1.0
            } else {
                0.0
            };
            let win = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / i0b;
            let time = if even {
                i as f64 - half + 0.5
            } else {
                i as f64 - half
            };
            let arg = 2.0 * cutoff * time;
            let sinc = if arg == 0.0 {
                1.0
            } else {
                (std::f64::consts::PI * arg).sin() / (std::f64::consts::PI * arg)
            };
            2.0 * cutoff * win * sinc
        })
        .collect();
    let s: f64 = f.iter().sum();
    if cutoff != 0.0 {
        f.iter_mut().for_each(|v| *v /= s);
    }
    f.into_iter().map(|v| v as f32).collect()
}

/// Snake parameters of one activation in their evaluated form: `a = α` (after `exp` for
/// log-scale parameters), `inv_b = 1 / (β + 1e−9)` (Snake uses α for β).
#[derive(Debug, Clone)]
pub struct SnakeParams {
    /// (C,)
    pub alpha: Tensor,
    /// (C,)
    pub inv_beta: Tensor,
}

/// `x + inv_b · sin²(a·x)` with per-channel parameters, x: (B, C, T). Generic candle ops.
pub fn snake_generic(x: &Tensor, p: &SnakeParams) -> candle_core::Result<Tensor> {
    let a = p.alpha.to_dtype(x.dtype())?.reshape((1, (), 1))?;
    let ib = p.inv_beta.to_dtype(x.dtype())?.reshape((1, (), 1))?;
    let s = x.broadcast_mul(&a)?.sin()?.sqr()?;
    x + s.broadcast_mul(&ib)?
}

/// ×2 upsampler of `Activation1d`: replicate pad, transposed conv with the filter (as one
/// single-channel conv over all rows), ×2 gain, crop.
pub fn upsample2_generic(x: &Tensor, filter: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, t) = x.dims3()?;
    let f = filter.to_dtype(x.dtype())?.reshape((1, 1, AA_KERNEL))?;
    let xp = x
        .pad_with_same(2, UP_PAD, UP_PAD)?
        .reshape((b * c, 1, t + 2 * UP_PAD))?;
    let y = xp.conv_transpose1d(&f, 0, 0, 2, 1, 1)?;
    let y = (y.narrow(2, UP_CROP, 2 * t)? * 2.0)?;
    y.reshape((b, c, 2 * t))
}

/// ×2 downsampler of `Activation1d`: replicate pad (5, 6), low-pass, stride 2.
pub fn downsample2_generic(x: &Tensor, filter: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, t) = x.dims3()?;
    let f = filter.to_dtype(x.dtype())?.reshape((1, 1, AA_KERNEL))?;
    let xp = x
        .pad_with_same(2, DOWN_PAD_LEFT, DOWN_PAD_RIGHT)?
        .reshape((b * c, 1, t + DOWN_PAD_LEFT + DOWN_PAD_RIGHT))?;
    let y = xp.conv1d(&f, 0, 2, 1, 1)?;
    let t_out = y.dim(2)?;
    y.reshape((b, c, t_out))
}

/// One anti-aliased activation with everything the fused kernel needs on the CPU.
#[derive(Debug, Clone)]
pub struct AntiAliasAct {
    pub snake: SnakeParams,
    /// (12,) Kaiser-sinc filters of the upsampler and of the downsampler's low-pass.
    pub up_filter: Tensor,
    pub down_filter: Tensor,
    cpu: Option<FusedAct>,
}

impl AntiAliasAct {
    pub fn new(
        snake: SnakeParams,
        up_filter: Tensor,
        down_filter: Tensor,
    ) -> candle_core::Result<Self> {
        let cpu = if up_filter.device().is_cpu() {
            Some(FusedAct {
                alpha: snake.alpha.to_dtype(DType::F32)?.to_vec1()?,
                inv_beta: snake.inv_beta.to_dtype(DType::F32)?.to_vec1()?,
                up: up_filter.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
                down: down_filter.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
            })
        } else {
            None
        };
        Ok(Self {
            snake,
            up_filter,
            down_filter,
            cpu,
        })
    }

    /// Upsample → Snake → downsample; (B, C, T) → (B, C, T).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(op) = &self.cpu
            && use_fast(x)
        {
            return x.contiguous()?.apply_op1_no_bwd(op);
        }
        self.forward_generic(x)
    }

    /// The same through generic candle ops, exposing the intermediates.
    pub fn forward_generic(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let u = upsample2_generic(x, &self.up_filter)?;
        let a = snake_generic(&u, &self.snake)?;
        downsample2_generic(&a, &self.down_filter)
    }

    /// Generic path returning (upsampled, activated, output).
    pub fn forward_steps(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let u = upsample2_generic(x, &self.up_filter)?;
        let a = snake_generic(&u, &self.snake)?;
        let o = downsample2_generic(&a, &self.down_filter)?;
        Ok((u, a, o))
    }
}

#[derive(Debug, Clone)]
struct FusedAct {
    alpha: Vec<f32>,
    inv_beta: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
}

impl CustomOp1 for FusedAct {
    fn name(&self) -> &'static str {
        "anti-alias-snake"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "anti-aliased activation input")?;
        let (b, c, t) = l.shape().dims3()?;
        if c != self.alpha.len() {
            candle_core::bail!(
                "anti-aliased activation: input has {c} channels, parameters have {}",
                self.alpha.len()
            );
        }
        if self.up.len() != AA_KERNEL || self.down.len() != AA_KERNEL {
            candle_core::bail!("anti-aliased activation: filters must have {AA_KERNEL} taps");
        }
        let mut dst = vec![0f32; b * c * t];
        if t > 0 {
            dst.par_chunks_mut(t)
                .zip(x.par_chunks(t))
                .enumerate()
                .for_each_init(RowScratch::default, |scratch, (row, (out, inp))| {
                    let ch = row % c;
                    act_row(
                        inp,
                        out,
                        self.alpha[ch],
                        self.inv_beta[ch],
                        &self.up,
                        &self.down,
                        scratch,
                    );
                });
        }
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }
}

#[derive(Default)]
struct RowScratch {
    xp: Vec<f32>,
    le: Vec<f32>,
    lo: Vec<f32>,
}

/// Output samples per tile of the fused activation (the working set stays in L1).
const TILE: usize = 1024;

fn act_row(
    x: &[f32],
    out: &mut [f32],
    a: f32,
    inv_b: f32,
    up: &[f32],
    down: &[f32],
    s: &mut RowScratch,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features enabled on this function.
            unsafe { act_row_avx2(x, out, a, inv_b, up, down, s) };
            return;
        }
    }
    act_row_impl(x, out, a, inv_b, up, down, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn act_row_avx2(
    x: &[f32],
    out: &mut [f32],
    a: f32,
    inv_b: f32,
    up: &[f32],
    down: &[f32],
    s: &mut RowScratch,
) {
    act_row_impl(x, out, a, inv_b, up, down, s)
}

/// One channel row of `Activation1d`, fused and tiled.
///
/// Upsampler (transposed conv, stride 2, 12 taps, ×2, replicate pad 5, crop 15), written per
/// output phase with `xp` the padded input (`xp[q] = x[clamp(q − 5)]`):
///   u[2r]   = 2 Σₖ f[2k+1] · xp[r + 7 − k]
///   u[2r+1] = 2 Σₖ f[2k]   · xp[r + 8 − k]          (k = 0..6)
/// Snake: z = u + inv_b · sin²(a·u), kept as phases zE[r] = z[2r], zO[r] = z[2r+1].
/// Downsampler (replicate pad 5 | 6, 12 taps, stride 2):
///   out[t] = Σₖ g[2k+1] · zE[t+k−2] + g[2k] · zO[t+k−3],
/// where an index below 0 means z[0] (= zE[0]) and one at or beyond T means z[2T−1]
/// (= zO[T−1]): the replicate padding of z.
#[inline(always)]
fn act_row_impl(
    x: &[f32],
    out: &mut [f32],
    a: f32,
    inv_b: f32,
    up: &[f32],
    down: &[f32],
    s: &mut RowScratch,
) {
    let t = x.len();
    s.xp.clear();
    s.xp.extend(std::iter::repeat_n(x[0], UP_PAD));
    s.xp.extend_from_slice(x);
    s.xp.extend(std::iter::repeat_n(x[t - 1], UP_PAD));
    let te: [f32; 6] = std::array::from_fn(|k| up[2 * k + 1]);
    let to: [f32; 6] = std::array::from_fn(|k| up[2 * k]);
    let ge: [f32; 6] = std::array::from_fn(|k| down[2 * k + 1]);
    let go: [f32; 6] = std::array::from_fn(|k| down[2 * k]);
    let edge = |taps: &[f32; 6], r: usize, xoff: usize| {
        let mut v = [0f32];
        for (k, c) in taps.iter().enumerate() {
            v[0] += c * s.xp[r + xoff - k];
        }
        snake_inplace(&mut v, a, inv_b, 2.0);
        v[0]
    };
    let z_first = edge(&te, 0, 7);
    let z_last = edge(&to, t - 1, 8);
    s.le.resize(TILE + 5, 0.0);
    s.lo.resize(TILE + 5, 0.0);
    let mut t0 = 0;
    while t0 < t {
        let n = TILE.min(t - t0);
        let (le, lo) = (&mut s.le[..n + 5], &mut s.lo[..n + 5]);
        let p = PhaseArgs {
            t,
            xp: &s.xp,
            a,
            inv_b,
            z_first,
            z_last,
        };
        p.fill(le, t0 as isize - 2, &te, 7);
        p.fill(lo, t0 as isize - 3, &to, 8);
        let o = &mut out[t0..t0 + n];
        o.fill(0.0);
        for k in 0..6 {
            let (ce, co) = (ge[k], go[k]);
            for ((d, e), od) in o.iter_mut().zip(&le[k..k + n]).zip(&lo[k..k + n]) {
                *d += ce * *e + co * *od;
            }
        }
        t0 += n;
    }
}

struct PhaseArgs<'a> {
    t: usize,
    xp: &'a [f32],
    a: f32,
    inv_b: f32,
    z_first: f32,
    z_last: f32,
}

impl PhaseArgs<'_> {
    /// buf[j] = z of the phase at r = r_start + j (edge values outside [0, T)).
    #[inline(always)]
    fn fill(&self, buf: &mut [f32], r_start: isize, taps: &[f32; 6], xoff: usize) {
        let len = buf.len() as isize;
        let j0 = (-r_start).clamp(0, len) as usize;
        let j1 = (self.t as isize - r_start).clamp(0, len) as usize;
        buf[..j0].fill(self.z_first);
        buf[j1.max(j0)..].fill(self.z_last);
        if j1 > j0 {
            let seg = &mut buf[j0..j1];
            seg.fill(0.0);
            let rs = (r_start + j0 as isize) as usize;
            for (k, &c) in taps.iter().enumerate() {
                let src = &self.xp[rs + xoff - k..rs + xoff - k + seg.len()];
                for (d, v) in seg.iter_mut().zip(src) {
                    *d += c * *v;
                }
            }
            snake_inplace(seg, self.a, self.inv_b, 2.0);
        }
    }
}

/// In place: u = gain·v; v ← u + inv_b · sin²(a·u). Vectorised polynomial sin², with the
/// library `sin` for chunks holding arguments beyond the polynomial's range (or NaN/inf).
#[inline(always)]
fn snake_inplace(v: &mut [f32], a: f32, inv_b: f32, gain: f32) {
    for chunk in v.chunks_mut(256) {
        let mut ok = true;
        for x in chunk.iter() {
            ok &= (a * (*x * gain)).abs() < SIN_POLY_MAX;
        }
        if ok {
            for x in chunk.iter_mut() {
                let u = *x * gain;
                *x = u + inv_b * sin_sq(a * u);
            }
        } else {
            for x in chunk.iter_mut() {
                let u = *x * gain;
                let s = (a * u).sin();
                *x = u + inv_b * (s * s);
            }
        }
    }
}

/// Largest |argument| for which the Cody–Waite reduction below is accurate.
const SIN_POLY_MAX: f32 = 8192.0;

/// sin²(y) for |y| < SIN_POLY_MAX, branch-free (vectorises): reduce y by multiples of π/2
/// (three-part Cody–Waite), then sin² or cos² of the remainder by quadrant parity, with the
/// Cephes single-precision minimax polynomials on [−π/4, π/4].
#[inline(always)]
fn sin_sq(y: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2^23: rounds to nearest integer when added
    const DP1: f32 = 1.570_312_5;
    const DP2: f32 = 4.837_513e-4;
    const DP3: f32 = 7.549_79e-8;
    let qf = (y * std::f32::consts::FRAC_2_PI + MAGIC) - MAGIC;
    let r = ((y - qf * DP1) - qf * DP2) - qf * DP3;
    let z = r * r;
    let sin_r = r + r * z * (-1.666_665_5e-1 + z * (8.332_161e-3 + z * -1.951_529_6e-4));
    let cos_r =
        1.0 - 0.5 * z + z * z * (4.166_664_6e-2 + z * (-1.388_731_6e-3 + z * 2.443_315_7e-5));
    let odd = (qf as i32) & 1;
    if odd == 0 {
        sin_r * sin_r
    } else {
        cos_r * cos_r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn randn(shape: &[usize], std: f32) -> Tensor {
        Tensor::randn(0f32, std, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn conv1d_fast_matches_candle() {
        // (b, cin, cout, t, k, dilation, padding): plain, chunked (long t), tiny input,
        // 1x1, asymmetric coverage
        for &(b, cin, cout, t, k, d, p) in &[
            (2, 3, 5, 37, 7, 3, 9),
            (1, 8, 4, 20_000, 11, 5, 25),
            (2, 4, 6, 9_000, 3, 1, 1),
            (1, 2, 3, 2, 3, 1, 1),
            (3, 5, 7, 11, 1, 1, 0),
            (1, 3, 2, 40, 5, 2, 0),
        ] {
            let x = randn(&[b, cin, t], 1.0);
            let w = randn(&[cout, cin, k], 0.3);
            let bias = randn(&[cout], 0.1);
            let cw = ConvWeight::new(w.clone(), ConvKind::Conv).unwrap();
            assert!(cw.taps_first);
            assert_eq!(cw.dims().unwrap(), (cout, cin, k));
            let fast = conv1d(&x, &cw, Some(&bias), p, d).unwrap();
            let want = x
                .conv1d(&w, p, 1, d, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, cout, 1)).unwrap())
                .unwrap();
            let e = max_diff(&fast, &want);
            assert!(e < 1e-4, "conv1d {b} {cin} {cout} {t} {k} {d} {p}: {e}");
            let nobias = conv1d(&x, &cw, None, p, d).unwrap();
            let e = max_diff(&nobias, &x.conv1d(&w, p, 1, d, 1).unwrap());
            assert!(e < 1e-4, "conv1d without bias: {e}");
        }
    }

    #[test]
    fn conv_transpose1d_fast_matches_candle() {
        for &(b, cin, cout, t, k, s, p) in &[
            (2, 6, 3, 50, 8, 4, 2),
            (1, 4, 2, 30_000, 4, 2, 1),
            (1, 5, 3, 700, 16, 8, 4),
            (2, 3, 1, 1, 4, 2, 1),
            (1, 3, 2, 9, 3, 1, 1),
        ] {
            let x = randn(&[b, cin, t], 1.0);
            let w = randn(&[cin, cout, k], 0.3);
            let bias = randn(&[cout], 0.1);
            let cw = ConvWeight::new(w.clone(), ConvKind::Transposed).unwrap();
            assert_eq!(cw.dims().unwrap(), (cin, cout, k));
            let fast = conv_transpose1d(&x, &cw, Some(&bias), s, p).unwrap();
            let want = x
                .conv_transpose1d(&w, p, 0, s, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, cout, 1)).unwrap())
                .unwrap();
            let e = max_diff(&fast, &want);
            assert!(
                e < 1e-4,
                "conv_transpose1d {b} {cin} {cout} {t} {k} {s} {p}: {e}"
            );
            // the generic path (unpadded + narrow), as on devices without the fast kernels
            let official = ConvWeight {
                t: w.clone(),
                kind: ConvKind::Transposed,
                taps_first: false,
            };
            let g = conv_transpose1d(&x, &official, Some(&bias), s, p).unwrap();
            let e = max_diff(&g, &want);
            assert!(e < 1e-4, "generic conv_transpose1d {b} {cin} {t}: {e}");
        }
    }

    #[test]
    fn generic_transposed_conv_crops_like_padding() {
        let x = randn(&[2, 3, 20], 1.0);
        let w = randn(&[3, 4, 8], 0.3);
        let cw = ConvWeight {
            t: w.clone(),
            kind: ConvKind::Transposed,
            taps_first: false,
        };
        let g = conv_transpose1d(&x, &cw, None, 4, 2).unwrap();
        let want = x.conv_transpose1d(&w, 2, 0, 4, 1, 1).unwrap();
        assert!(max_diff(&g, &want) < 1e-5);
        let cc = ConvWeight {
            t: randn(&[4, 3, 5], 0.3),
            kind: ConvKind::Conv,
            taps_first: false,
        };
        let g = conv1d(&x, &cc, None, 4, 2).unwrap();
        let want = x.conv1d(&cc.t, 4, 1, 2, 1).unwrap();
        assert!(max_diff(&g, &want) < 1e-5);
    }

    fn act(c: usize) -> AntiAliasAct {
        let alpha = randn(&[c], 0.3).exp().unwrap();
        let inv_beta = (randn(&[c], 0.3).exp().unwrap() + 1e-9)
            .unwrap()
            .recip()
            .unwrap();
        let f =
            Tensor::from_vec(kaiser_sinc_filter(0.25, 0.3, 12), (1, 1, 12), &Device::Cpu).unwrap();
        AntiAliasAct::new(SnakeParams { alpha, inv_beta }, f.clone(), f).unwrap()
    }

    #[test]
    fn fused_activation_matches_generic() {
        let a = act(3);
        for t in [1usize, 2, 5, 6, 7, 1023, 1024, 1025, 2053, 5000] {
            let x = randn(&[2, 3, t], 3.0);
            let fused = a.forward(&x).unwrap();
            let generic = a.forward_generic(&x).unwrap();
            let e = max_diff(&fused, &generic);
            assert!(e < 2e-5, "T={t}: {e}");
        }
        // arguments beyond the polynomial's range take the library sin
        let x = (randn(&[1, 3, 3000], 1.0) * 20_000.0).unwrap();
        let e = max_diff(&a.forward(&x).unwrap(), &a.forward_generic(&x).unwrap());
        assert!(e < 2e-2, "large arguments: {e}");
        // non-finite input propagates like the generic path
        let mut v = vec![0.5f32; 3 * 100];
        v[150] = f32::NAN;
        let x = Tensor::from_vec(v, (1, 3, 100), &Device::Cpu).unwrap();
        let y = a
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(y[145..155].iter().any(|v| v.is_nan()));
        assert!(y[..100].iter().all(|v| v.is_finite()));
    }

    #[test]
    fn sin_sq_accuracy() {
        let mut worst = 0f64;
        let mut y = -8000.0f32;
        while y < 8000.0 {
            let want = (y as f64).sin().powi(2);
            worst = worst.max((sin_sq(y) as f64 - want).abs());
            y += 0.0137;
        }
        assert!(worst < 2e-6, "max |sin_sq − sin²| = {worst}");
    }

    #[test]
    fn kaiser_filter_properties() {
        let f = kaiser_sinc_filter(0.25, 0.3, 12);
        assert_eq!(f.len(), 12);
        let s: f32 = f.iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
        for i in 0..6 {
            assert!((f[i] - f[11 - i]).abs() < 1e-7, "symmetric");
        }
        // the two centre taps dominate, the outer ones are tiny
        assert!(f[5] > 0.4 && f[0].abs() < 0.01);
    }
}
