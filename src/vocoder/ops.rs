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
// Conv1d (stride 1)
// ---------------------------------------------------------------------------------------------

/// 1-D convolution, stride 1, zero padding `padding` on both sides, dilation `dilation`.
/// `x`: (B, C_in, T), `w`: (C_out, C_in, K), `bias`: (C_out,).
pub fn conv1d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    padding: usize,
    dilation: usize,
) -> candle_core::Result<Tensor> {
    if use_fast(x) && w.dtype() == DType::F32 && bias.is_none_or(|b| b.dtype() == DType::F32) {
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        let op = Conv1dGemm { padding, dilation };
        return match bias {
            Some(b) => x.apply_op3_no_bwd(&w, &b.contiguous()?, &op),
            None => x.apply_op2_no_bwd(&w, &op),
        };
    }
    let y = x.conv1d(w, padding, 1, dilation, 1)?;
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
    fn run(
        &self,
        x: &[f32],
        xl: &Layout,
        w: &[f32],
        wl: &Layout,
        bias: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, cin, t) = xl.shape().dims3()?;
        let (cout, cin_w, k) = wl.shape().dims3()?;
        if cin != cin_w {
            candle_core::bail!("conv1d: input has {cin} channels, weight expects {cin_w}");
        }
        let span = self.dilation * (k - 1);
        if t + 2 * self.padding < span + 1 {
            candle_core::bail!("conv1d: input length {t} too short for kernel {k}");
        }
        let t_out = t + 2 * self.padding - span;
        let mut dst = vec![0f32; b * cout * t_out];
        if let Some(bias) = bias {
            for row in dst.chunks_mut(t_out).enumerate() {
                row.1.fill(bias[row.0 % cout]);
            }
        }
        let par = parallelism();
        for bi in 0..b {
            let xb = &x[bi * cin * t..(bi + 1) * cin * t];
            let db = &mut dst[bi * cout * t_out..(bi + 1) * cout * t_out];
            for tap in 0..k {
                // output index o reads input index o + off
                let off = (tap * self.dilation) as isize - self.padding as isize;
                let o0 = (-off).max(0) as usize;
                let o1 = (t as isize - off).min(t_out as isize);
                if o1 <= o0 as isize {
                    continue;
                }
                let n = o1 as usize - o0;
                let i0 = (o0 as isize + off) as usize;
                // SAFETY: all pointers and strides stay inside `db`, `w`, `xb` by the
                // range computation above; dst does not alias the inputs.
                unsafe {
                    gemm::gemm(
                        cout,
                        n,
                        cin,
                        db.as_mut_ptr().add(o0),
                        1,
                        t_out as isize,
                        true,
                        w.as_ptr().add(tap),
                        k as isize,
                        (cin * k) as isize,
                        xb.as_ptr().add(i0),
                        1,
                        t as isize,
                        1.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        par,
                    );
                }
            }
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
        if b.len() != l2.shape().dims()[0] {
            candle_core::bail!(
                "conv1d: bias has {} values, expected {}",
                b.len(),
                l2.dims()[0]
            );
        }
        self.run(x, l1, w, l2, Some(b))
    }
}

// ---------------------------------------------------------------------------------------------
// ConvTranspose1d
// ---------------------------------------------------------------------------------------------

/// 1-D transposed convolution (PyTorch semantics), dilation 1, no output padding.
/// `x`: (B, C_in, T), `w`: (C_in, C_out, K), `bias`: (C_out,). Output length
/// `(T − 1)·stride − 2·padding + K`.
pub fn conv_transpose1d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    if use_fast(x) && w.dtype() == DType::F32 && bias.is_none_or(|b| b.dtype() == DType::F32) {
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        let op = ConvTr1dGemm { stride, padding };
        return match bias {
            Some(b) => x.apply_op3_no_bwd(&w, &b.contiguous()?, &op),
            None => x.apply_op2_no_bwd(&w, &op),
        };
    }
    // candle's transposed conv with padding > 0 takes a slow path on CUDA: run it unpadded
    // and crop.
    let (_, _, t) = x.dims3()?;
    let (_, _, k) = w.dims3()?;
    let full = x.conv_transpose1d(w, 0, 0, stride, 1, 1)?;
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
    fn run(
        &self,
        x: &[f32],
        xl: &Layout,
        w: &[f32],
        wl: &Layout,
        bias: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, cin, tin) = xl.shape().dims3()?;
        let (cin_w, cout, k) = wl.shape().dims3()?;
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
        // Polyphase: output o = q·s + r. Each phase r is a contiguous (C_out, nq) buffer that
        // the taps j with (j − p) ≡ r (mod s) accumulate into with one GEMM each.
        let nq = t_out.div_ceil(s);
        let mut phases = vec![0f32; s * cout * nq];
        let mut dst = vec![0f32; b * cout * t_out];
        let par = parallelism();
        for bi in 0..b {
            let xb = &x[bi * cin * tin..(bi + 1) * cin * tin];
            match bias {
                Some(bias) => {
                    for (i, row) in phases.chunks_mut(nq).enumerate() {
                        row.fill(bias[i % cout]);
                    }
                }
                None => phases.fill(0.0),
            }
            for j in 0..k {
                let jp = j as isize - p as isize;
                let r = jp.rem_euclid(s as isize) as usize;
                let dq = (jp - r as isize) / s as isize; // q = i + dq
                let nq_r = (t_out - r).div_ceil(s) as isize;
                let q0 = dq.max(0);
                let q1 = (tin as isize + dq).min(nq_r);
                if q1 <= q0 {
                    continue;
                }
                let n = (q1 - q0) as usize;
                let i0 = (q0 - dq) as usize;
                let ph = &mut phases[r * cout * nq..(r + 1) * cout * nq];
                // SAFETY: ranges computed above keep every access in bounds; no aliasing.
                unsafe {
                    gemm::gemm(
                        cout,
                        n,
                        cin,
                        ph.as_mut_ptr().add(q0 as usize),
                        1,
                        nq as isize,
                        true,
                        w.as_ptr().add(j),
                        (cout * k) as isize,
                        k as isize,
                        xb.as_ptr().add(i0),
                        1,
                        tin as isize,
                        1.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        par,
                    );
                }
            }
            // interleave the phases into the output
            let db = &mut dst[bi * cout * t_out..(bi + 1) * cout * t_out];
            db.par_chunks_mut(t_out).enumerate().for_each(|(co, row)| {
                for r in 0..s {
                    let src = &phases[(r * cout + co) * nq..(r * cout + co + 1) * nq];
                    for (q, v) in src.iter().enumerate() {
                        let o = q * s + r;
                        if o < t_out {
                            row[o] = *v;
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
        if b.len() != l2.shape().dims()[1] {
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
    let even = kernel_size % 2 == 0;
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
    ze: Vec<f32>,
    zo: Vec<f32>,
}

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

/// One channel row of `Activation1d`, fused.
///
/// Upsampler (transposed conv, stride 2, 12 taps, ×2, replicate pad 5, crop 15), written per
/// output phase with `xp` the padded input (`xp[q] = x[clamp(q − 5)]`):
///   u[2r]   = 2 Σₖ f[2k+1] · xp[r + 7 − k]
///   u[2r+1] = 2 Σₖ f[2k]   · xp[r + 8 − k]          (k = 0..6)
/// Snake: z = u + inv_b · sin²(a·u), kept as even/odd phases zE[r] = z[2r], zO[r] = z[2r+1].
/// Downsampler (replicate pad 5 | 6, 12 taps, stride 2):
///   out[t] = Σₖ g[2k+1] · z[2(t+k−2)] + g[2k] · z[2(t+k−3)+1],
/// with indices outside [0, 2T) clamped to z[0] (left) or z[2T−1] (right); that is what the
/// padded phase buffers `ze` (2 left, 3 right) and `zo` (3 left, 2 right) hold.
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
    // padded input
    s.xp.clear();
    s.xp.resize(t + 2 * UP_PAD, 0.0);
    s.xp[..UP_PAD].fill(x[0]);
    s.xp[UP_PAD..UP_PAD + t].copy_from_slice(x);
    s.xp[UP_PAD + t..].fill(x[t - 1]);
    s.ze.clear();
    s.ze.resize(t + 5, 0.0);
    s.zo.clear();
    s.zo.resize(t + 5, 0.0);
    {
        let xp = &s.xp[..];
        let ze = &mut s.ze[2..2 + t];
        let zo = &mut s.zo[3..3 + t];
        // upsample (even / odd phases), ×2 gain
        for k in 0..6 {
            let ce = up[2 * k + 1];
            let co = up[2 * k];
            let se = &xp[7 - k..7 - k + t];
            let so = &xp[8 - k..8 - k + t];
            for ((e, xe), (o, xo)) in ze.iter_mut().zip(se).zip(zo.iter_mut().zip(so)) {
                *e += ce * *xe;
                *o += co * *xo;
            }
        }
        snake_inplace(ze, a, inv_b, 2.0);
        snake_inplace(zo, a, inv_b, 2.0);
    }
    let first = s.ze[2];
    let last = s.zo[2 + t];
    s.ze[..2].fill(first);
    s.ze[2 + t..].fill(last);
    s.zo[..3].fill(first);
    s.zo[3 + t..].fill(last);
    out.fill(0.0);
    for k in 0..6 {
        let ge = down[2 * k + 1];
        let go = down[2 * k];
        let se = &s.ze[k..k + t];
        let so = &s.zo[k..k + t];
        for ((o, e), od) in out.iter_mut().zip(se).zip(so) {
            *o += ge * *e + go * *od;
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
