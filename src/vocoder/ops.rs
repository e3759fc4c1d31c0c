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
//! * a **fast CPU f32** one. Convolutions are GEMMs straight on the input, with weights laid
//!   out at load time for the layer's shape: wide layers with k ≥ 3 use Winograd F(4,3)
//!   (vocoders) or F(2,3) (VAE), i.e. about half the multiply-adds (see `set_winograd_tile`
//!   for the accuracy); other wide layers are one GEMM per tap; narrow layers (C_in ≤ 128)
//!   are cache-blocked im2col + one GEMM. Long sequences are split into cache-sized column
//!   blocks run in parallel; the bias is folded into the accumulator. The whole
//!   `Activation1d` (×2 upsample → Snake/SnakeBeta → ×2 downsample) is one fused,
//!   multi-threaded, vectorised, cache-tiled pass per channel row that never materialises the
//!   2× signal.
//!
//! The fast path is chosen when a model is built on the CPU in f32 (weights are laid out for
//! it then); it can be switched off process-wide with [`set_fast_cpu_kernels`] before loading
//! (tests compare both). See also [`tune_allocator`] for long-running processes.

use crate::cpu::rows::axpy;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::atomic::Ordering;

/// Taps of the Kaiser-sinc anti-aliasing filters (official `Activation1d` default).
pub const AA_KERNEL: usize = 12;
/// Replicate padding before the ×2 transposed-conv upsampler: `kernel / ratio − 1`.
const UP_PAD: usize = AA_KERNEL / 2 - 1;
/// Crop of the upsampler output on each side: `pad·ratio + (kernel − ratio)/2`.
const UP_CROP: usize = UP_PAD * 2 + (AA_KERNEL - 2) / 2;
/// Replicate padding of the low-pass filter of the downsampler (even kernel).
const DOWN_PAD_LEFT: usize = AA_KERNEL / 2 - 1;
const DOWN_PAD_RIGHT: usize = AA_KERNEL / 2;

/// The process-wide choice between the fast CPU f32 kernels (default) and the generic
/// ones; read when weights and activations are prepared, i.e. when a model is built.
pub use crate::device::{fast_cpu_kernels, set_fast_cpu_kernels};

pub use crate::device::tune_allocator;

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

/// Memory layout of a [`ConvWeight`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WLayout {
    /// As in the checkpoint (generic kernels).
    Official,
    /// (K, C_out, C_in): one row-major GEMM operand per tap (wide layers).
    TapsFirst,
    /// (C_out, K, C_in): one GEMM with K·C_in columns over im2col blocks (narrow `Conv1d`).
    OutFirst,
    /// Winograd F(m,3) transformed (α, C_out, ⌈K/3⌉·C_in) (wide `Conv1d` with K ≥ 3). The
    /// official weight is not kept.
    Winograd {
        k: usize,
        scheme: &'static WinoScheme,
    },
}

/// Narrow convolutions (C_in up to this) run as cache-blocked im2col + one GEMM per block.
static IM2COL_MAX_CIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(128);

/// Widest input (channels) a convolution may have to take the im2col path instead of
/// Winograd / per-tap GEMMs (default 128). Read when a model is built; tests set 0 to run
/// every k ≥ 3 convolution of a small fixture through Winograd.
pub fn set_im2col_max_cin(c: usize) {
    IM2COL_MAX_CIN.store(c, Ordering::Relaxed);
}

/// A convolution weight in the layout the current device runs fastest: on the CPU in f32 a
/// GEMM-friendly layout (see `WLayout`), elsewhere the official layout.
#[derive(Debug, Clone)]
pub struct ConvWeight {
    t: Tensor,
    kind: ConvKind,
    layout: WLayout,
}

impl ConvWeight {
    /// From the official layout, with the Winograd tile selected by [`set_winograd_tile`]
    /// (the vocoders' setting).
    pub fn new(w: Tensor, kind: ConvKind) -> candle_core::Result<Self> {
        Self::with_winograd(w, kind, winograd_tile())
    }

    /// From the official layout with an explicit Winograd tile for wide k ≥ 3 convolutions
    /// (0: none, 2: F(2,3), 4: F(4,3)).
    pub fn with_winograd(w: Tensor, kind: ConvKind, tile: usize) -> candle_core::Result<Self> {
        let (_, cin, _) = match kind {
            ConvKind::Conv => w.dims3()?,
            ConvKind::Transposed => {
                let (i, o, k) = w.dims3()?;
                (o, i, k)
            }
        };
        if !(fast_cpu_kernels() && w.device().is_cpu() && w.dtype() == DType::F32) {
            return Ok(Self {
                t: w,
                kind,
                layout: WLayout::Official,
            });
        }
        let k = w.dim(2)?;
        let scheme = scheme_for_tile(tile);
        let im2col_max = IM2COL_MAX_CIN.load(Ordering::Relaxed);
        let (t, layout) = match kind {
            ConvKind::Conv if cin <= im2col_max => (w.permute((0, 2, 1))?, WLayout::OutFirst),
            ConvKind::Conv if k >= 3 && scheme.is_some() => {
                let scheme = scheme.expect("checked");
                (
                    winograd_weight(&w, scheme)?,
                    WLayout::Winograd { k, scheme },
                )
            }
            ConvKind::Conv => (w.permute((2, 0, 1))?, WLayout::TapsFirst),
            ConvKind::Transposed => (w.permute((2, 1, 0))?, WLayout::TapsFirst),
        };
        Ok(Self {
            t: t.contiguous()?,
            kind,
            layout,
        })
    }

    /// The weight in the official layout (not available for Winograd-transformed weights).
    pub fn official(&self) -> candle_core::Result<Tensor> {
        match (self.layout, self.kind) {
            (WLayout::Official, _) => Ok(self.t.clone()),
            (WLayout::Winograd { .. }, _) => {
                candle_core::bail!(
                    "the official layout of a Winograd-transformed weight is not kept"
                )
            }
            (WLayout::TapsFirst, ConvKind::Conv) => self.t.permute((1, 2, 0)),
            (WLayout::TapsFirst, ConvKind::Transposed) => self.t.permute((2, 1, 0)),
            (WLayout::OutFirst, _) => self.t.permute((0, 2, 1)),
        }
    }

    pub fn dtype(&self) -> DType {
        self.t.dtype()
    }

    /// Official shape.
    pub fn dims(&self) -> candle_core::Result<(usize, usize, usize)> {
        let (a, b, c) = self.t.dims3()?;
        Ok(match (self.layout, self.kind) {
            (WLayout::Official, _) => (a, b, c),
            (WLayout::TapsFirst, ConvKind::Conv) => (b, c, a),
            (WLayout::TapsFirst, ConvKind::Transposed) => (c, b, a),
            (WLayout::OutFirst, _) => (a, c, b),
            (WLayout::Winograd { k, .. }, _) => (b, c / k.div_ceil(3), k),
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
    let fast_input = x.device().is_cpu() && x.dtype() == DType::F32;
    if let WLayout::Winograd { k, scheme } = w.layout {
        if !fast_input || bias.is_some_and(|b| b.dtype() != DType::F32) {
            candle_core::bail!("conv1d: Winograd weights need f32 CPU inputs");
        }
        let x = x.contiguous()?;
        let op = Conv1dWinograd {
            padding,
            dilation,
            k,
            scheme,
        };
        return match bias {
            Some(b) => x.apply_op3_no_bwd(&w.t, &b.contiguous()?, &op),
            None => x.apply_op2_no_bwd(&w.t, &op),
        };
    }
    if fast_input && w.layout != WLayout::Official && bias.is_none_or(|b| b.dtype() == DType::F32) {
        let x = x.contiguous()?;
        let op = Conv1dGemm {
            padding,
            dilation,
            im2col: w.layout == WLayout::OutFirst,
        };
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
    /// weight (C_out, K, C_in) and im2col blocks, else taps-first (K, C_out, C_in)
    im2col: bool,
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
        if self.im2col {
            return self.run_im2col(x, xl, w, wl, bias);
        }
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

    /// Narrow layers: for each block of output columns, gather the K·C_in shifted input rows
    /// (im2col, sized for L2) and run one GEMM with the (C_out, K·C_in) weight.
    fn run_im2col(
        &self,
        x: &[f32],
        xl: &Layout,
        w: &[f32],
        wl: &Layout,
        bias: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, cin, t) = xl.shape().dims3()?;
        let (cout, k, cin_w) = wl.shape().dims3()?;
        if cin != cin_w {
            candle_core::bail!("conv1d: input has {cin} channels, weight expects {cin_w}");
        }
        let (p, d) = (self.padding, self.dilation);
        let span = d * (k - 1);
        if t + 2 * p < span + 1 {
            candle_core::bail!("conv1d: input length {t} too short for kernel {k}");
        }
        let t_out = t + 2 * p - span;
        let kk = k * cin;
        let n_chunk = ((65_536 / kk).clamp(64, 4096) / 16) * 16;
        let n_chunks = t_out.div_ceil(n_chunk);
        let mut dst = vec![0f32; b * cout * t_out];
        for bi in 0..b {
            let xb = &x[bi * cin * t..(bi + 1) * cin * t];
            let db = SendPtr(dst[bi * cout * t_out..].as_mut_ptr());
            let par = if n_chunks == 1 {
                parallelism()
            } else {
                gemm::Parallelism::None
            };
            let work = |col: &mut Vec<f32>, c: usize| {
                let c0 = c * n_chunk;
                let n = n_chunk.min(t_out - c0);
                col.clear();
                col.resize(kk * n, 0.0);
                for tap in 0..k {
                    let off = c0 as isize + (tap * d) as isize - p as isize;
                    let j0 = (-off).clamp(0, n as isize) as usize;
                    let j1 = (t as isize - off).clamp(0, n as isize) as usize;
                    if j1 <= j0 {
                        continue;
                    }
                    for ch in 0..cin {
                        let dst = &mut col[(tap * cin + ch) * n..(tap * cin + ch + 1) * n];
                        let src0 = (ch * t) as isize + off + j0 as isize;
                        let src = &xb[src0 as usize..src0 as usize + (j1 - j0)];
                        dst[j0..j1].copy_from_slice(src);
                    }
                }
                // SAFETY: this task owns output columns [c0, c0 + n) of every row.
                unsafe {
                    for co in 0..cout {
                        let row = std::slice::from_raw_parts_mut(db.at(co * t_out + c0), n);
                        row.fill(bias.map_or(0.0, |bv| bv[co]));
                    }
                    gemm_acc(
                        cout,
                        n,
                        kk,
                        db.at(c0),
                        t_out,
                        w.as_ptr(),
                        col.as_ptr(),
                        n,
                        par,
                    );
                }
            };
            if n_chunks == 1 {
                work(&mut Vec::new(), 0);
            } else {
                (0..n_chunks)
                    .into_par_iter()
                    .for_each_init(Vec::new, |col, c| work(col, c));
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
        let cout = l2.dims()[if self.im2col { 0 } else { 1 }];
        if b.len() != cout {
            candle_core::bail!("conv1d: bias has {} values, expected {cout}", b.len());
        }
        self.run(x, l1, w, l2, Some(b))
    }
}

// ---------------------------------------------------------------------------------------------
// Winograd F(4, 3) for wide convolutions
// ---------------------------------------------------------------------------------------------
//
// A 1-D correlation with a 3-tap filter g over a 6-sample window d gives 4 outputs as
// y = Aᵀ[(G g) ⊙ (Bᵀ d)] (Lavin & Gray, interpolation points 0, ±1, ±2, ∞). A K-tap
// convolution is split into ⌈K/3⌉ groups of 3 taps (zero-padded); a dilation d is handled by
// running the d phases (outputs ≡ ρ mod d) as undilated correlations. In the transform domain
// the channel mixing of all groups is one GEMM per point ξ:
//   M_ξ (C_out × tiles) = U_ξ (C_out × G·C_in) · V_ξ (G·C_in × tiles)
// i.e. α·G·C_out·C_in multiply-adds per m outputs instead of m·K·C_out·C_in (F(4,3), K = 11:
// 24 vs 44; K = 3: 6 vs 12). F(2,3) (α = 4, m = 2) is used where accuracy or short sequences
// matter. Measured errors are in `set_winograd_tile`.

/// One Winograd F(m, 3) scheme: Bᵀ (α × α), G (α × 3), Aᵀ (m × α), α = m + 2, stored
/// row-major in fixed-size arrays (unused entries zero).
#[derive(Debug)]
pub struct WinoScheme {
    m: usize,
    a: usize,
    bt: [[f32; 6]; 6],
    g: [[f64; 3]; 6],
    at: [[f32; 6]; 4],
}

/// F(2,3), points 0, ±1, ∞: transform coefficients 0, ±1, ±½ — rounding like the direct
/// convolution; 4·G instead of 2·K multiply-adds per 2 outputs.
pub static WINO_F23: WinoScheme = WinoScheme {
    m: 2,
    a: 4,
    bt: [
        [1.0, 0.0, -1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        [0.0, -1.0, 1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, -1.0, 0.0, 0.0],
        [0.0; 6],
        [0.0; 6],
    ],
    g: [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
        [0.0; 3],
        [0.0; 3],
    ],
    at: [
        [1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, -1.0, -1.0, 0.0, 0.0],
        [0.0; 6],
        [0.0; 6],
    ],
};

/// F(4,3), points 0, ±1, ±2, ∞ (Lavin & Gray): 6·G instead of 4·K multiply-adds per 4
/// outputs, at the price of ~3× the float32 rounding error of the direct convolution.
pub static WINO_F43: WinoScheme = WinoScheme {
    m: 4,
    a: 6,
    bt: [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ],
    g: [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ],
    at: [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ],
};

impl PartialEq for WinoScheme {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for WinoScheme {}

/// Winograd tile of the vocoders' wide convolutions (0 = none, 2 = F(2,3), 4 = F(4,3)).
static WINOGRAD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(4);

/// Select the Winograd tile for the wide k ≥ 3 convolutions of vocoders built from now on
/// (the VAE always uses F(2,3), fastest for its short sequences):
///
/// * 4 — F(4,3), default: about half the multiply-adds of the direct convolution (the
///   16 kHz BigVGAN runs ~1.9× faster); rounding error ≈ 3× that of a direct float32
///   convolution (rms 3.5e−6 vs 1.1e−6 against an f64 reference at |y| ≈ 15);
/// * 2 — F(2,3): error like the direct convolution (rms 1.4e−6), ~1.2× faster;
/// * 0 — direct per-tap GEMMs.
pub fn set_winograd_tile(m: usize) {
    WINOGRAD.store(if m == 2 || m == 4 { m } else { 0 }, Ordering::Relaxed);
}

/// The Winograd tile selected by [`set_winograd_tile`] (0 = none).
pub fn winograd_tile() -> usize {
    WINOGRAD.load(Ordering::Relaxed)
}

fn scheme_for_tile(m: usize) -> Option<&'static WinoScheme> {
    match m {
        2 => Some(&WINO_F23),
        4 => Some(&WINO_F43),
        _ => None,
    }
}

/// Tiles per transform block: large enough to amortise packing U.
const WINO_BLOCK_OUTPUTS: usize = 2048;

/// U (α, C_out, G·C_in) from the official (C_out, C_in, K) weight.
fn winograd_weight(w: &Tensor, sc: &WinoScheme) -> candle_core::Result<Tensor> {
    let (cout, cin, k) = w.dims3()?;
    let groups = k.div_ceil(3);
    let wv: Vec<f64> = w.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let kk = groups * cin;
    let mut u = vec![0f32; sc.a * cout * kk];
    for xi in 0..sc.a {
        for co in 0..cout {
            for g in 0..groups {
                for ci in 0..cin {
                    let mut acc = 0f64;
                    for j in 0..3 {
                        let tap = 3 * g + j;
                        if tap < k {
                            acc += sc.g[xi][j] * wv[(co * cin + ci) * k + tap];
                        }
                    }
                    u[(xi * cout + co) * kk + g * cin + ci] = acc as f32;
                }
            }
        }
    }
    Tensor::from_vec(u, (sc.a, cout, kk), w.device())
}

struct Conv1dWinograd {
    padding: usize,
    dilation: usize,
    k: usize,
    scheme: &'static WinoScheme,
}

impl Conv1dWinograd {
    fn run(
        &self,
        x: &[f32],
        xl: &Layout,
        u: &[f32],
        ul: &Layout,
        bias: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, cin, t) = xl.shape().dims3()?;
        let (a, cout, kk) = ul.shape().dims3()?;
        let (p, d, k) = (self.padding, self.dilation, self.k);
        let sc = self.scheme;
        let wm = sc.m;
        let groups = k.div_ceil(3);
        if a != sc.a || kk != groups * cin {
            candle_core::bail!(
                "conv1d (winograd): weight shape {:?} does not fit input",
                ul.dims()
            );
        }
        let span = d * (k - 1);
        if t + 2 * p < span + 1 {
            candle_core::bail!("conv1d: input length {t} too short for kernel {k}");
        }
        let t_out = t + 2 * p - span;
        // Dilation phases ρ: outputs y[ρ + d·j], j < n_ρ, from the undilated correlation of
        // x'_ρ[i] = x[ρ + d·i − p] (0 outside). The tiles of all phases share one column
        // space, so every GEMM sees up to a full block of columns.
        let phases: Vec<(usize, usize, usize)> = (0..d.min(t_out))
            .map(|rho| {
                let n = (t_out - rho).div_ceil(d);
                (rho, n, n.div_ceil(wm))
            })
            .collect();
        let total: usize = phases.iter().map(|ph| ph.2).sum();
        let block = (WINO_BLOCK_OUTPUTS / wm).min(total);
        let mut dst = vec![0f32; b * cout * t_out];
        let mut v = vec![0f32; a * kk * block];
        let mut m = vec![0f32; a * cout * block];
        let isa = crate::cpu::isa();
        for bi in 0..b {
            let xb = &x[bi * cin * t..(bi + 1) * cin * t];
            let db = SendPtr(dst[bi * cout * t_out..].as_mut_ptr());
            let mut c0 = 0;
            while c0 < total {
                let nt = block.min(total - c0);
                // segments of this block: (ρ, n_ρ, first local tile, tiles, column offset)
                let mut segs = Vec::new();
                let mut start = 0;
                for &(rho, n, tiles) in &phases {
                    let (lo, hi) = (c0.max(start), (c0 + nt).min(start + tiles));
                    if lo < hi {
                        segs.push((rho, n, lo - start, hi - lo, lo - c0));
                    }
                    start += tiles;
                }
                // input transform, parallel over input channels. A segment's phase row is
                // split into its m polyphase components so that the window sample l of group
                // g over all tiles, x'[m·s + 3g + l], is one contiguous slice.
                let vp = SendPtr(v.as_mut_ptr());
                (0..cin)
                    .into_par_iter()
                    .for_each_init(Vec::new, |comp: &mut Vec<f32>, ci| {
                        let xr = &xb[ci * t..(ci + 1) * t];
                        for &(rho, _, s0, len, off) in &segs {
                            let comp_len = len + (3 * groups + a) / wm + 2;
                            comp.clear();
                            comp.resize(wm * comp_len, 0.0);
                            let stride = (d * wm) as isize;
                            for phi in 0..wm {
                                // comp[φ][i] = x'[m·(s0 + i) + φ] = x[base + stride·i]
                                let base = (rho + d * (phi + wm * s0)) as isize - p as isize;
                                let lo = if base < 0 {
                                    (-base + stride - 1) / stride
                                } else {
                                    0
                                };
                                let hi = if base < t as isize {
                                    (t as isize - 1 - base) / stride + 1
                                } else {
                                    0
                                };
                                let (lo, hi) =
                                    ((lo as usize).min(comp_len), (hi as usize).min(comp_len));
                                let c = &mut comp[phi * comp_len..(phi + 1) * comp_len];
                                for (i, val) in c.iter_mut().enumerate().take(hi).skip(lo) {
                                    *val = xr[(base + stride * i as isize) as usize];
                                }
                            }
                            for g in 0..groups {
                                for (xi, bt) in sc.bt[..a].iter().enumerate() {
                                    // SAFETY: columns [off, off + len) of row (ξ, g·C_in + ci)
                                    // are written by this task only
                                    let vrow = unsafe {
                                        std::slice::from_raw_parts_mut(
                                            vp.at((xi * kk + g * cin + ci) * nt + off),
                                            len,
                                        )
                                    };
                                    vrow.fill(0.0);
                                    for (l, &c) in bt[..a].iter().enumerate() {
                                        if c == 0.0 {
                                            continue;
                                        }
                                        let o = 3 * g + l;
                                        let at = (o % wm) * comp_len + o / wm;
                                        axpy(isa, vrow, c, &comp[at..at + len]);
                                    }
                                }
                            }
                        }
                    });
                // channel mixing: one GEMM per point
                for xi in 0..a {
                    // SAFETY: disjoint, in-bounds matrices
                    unsafe {
                        gemm::gemm(
                            cout,
                            nt,
                            kk,
                            m.as_mut_ptr().add(xi * cout * nt),
                            1,
                            nt as isize,
                            false,
                            u.as_ptr().add(xi * cout * kk),
                            1,
                            kk as isize,
                            v.as_ptr().add(xi * kk * nt),
                            1,
                            nt as isize,
                            0.0f32,
                            1.0f32,
                            false,
                            false,
                            false,
                            parallelism(),
                        );
                    }
                }
                // output transform, parallel over output channels
                let mr = &m;
                let segs = &segs;
                (0..cout)
                    .into_par_iter()
                    .for_each_init(Vec::new, |tmp: &mut Vec<f32>, co| {
                        let bv = bias.map_or(0.0, |bv| bv[co]);
                        for &(rho, n, s0, len, off) in segs {
                            for (i, at) in sc.at[..wm].iter().enumerate() {
                                tmp.clear();
                                tmp.resize(len, bv);
                                for (xi, &c) in at[..a].iter().enumerate() {
                                    if c == 0.0 {
                                        continue;
                                    }
                                    let row = (xi * cout + co) * nt + off;
                                    axpy(isa, tmp, c, &mr[row..row + len]);
                                }
                                for (s, val) in tmp.iter().enumerate() {
                                    let j = wm * (s0 + s) + i;
                                    if j >= n {
                                        break;
                                    }
                                    // SAFETY: output (co, ρ + d·j) is written once, by this task
                                    unsafe {
                                        *db.at(co * t_out + rho + d * j) = *val;
                                    }
                                }
                            }
                        }
                    });
                c0 += nt;
            }
        }
        Ok((CpuStorage::F32(dst), Shape::from((b, cout, t_out))))
    }
}

impl CustomOp2 for Conv1dWinograd {
    fn name(&self) -> &'static str {
        "conv1d-winograd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "conv1d input")?;
        let u = f32_slice(s2, l2, "conv1d weight")?;
        self.run(x, l1, u, l2, None)
    }
}

impl CustomOp3 for Conv1dWinograd {
    fn name(&self) -> &'static str {
        "conv1d-winograd-bias"
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
        let u = f32_slice(s2, l2, "conv1d weight")?;
        let b = f32_slice(s3, l3, "conv1d bias")?;
        if b.len() != l2.dims()[1] {
            candle_core::bail!(
                "conv1d: bias has {} values, expected {}",
                b.len(),
                l2.dims()[1]
            );
        }
        self.run(x, l1, u, l2, Some(b))
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
    let fast_input = x.device().is_cpu() && x.dtype() == DType::F32;
    if fast_input && w.layout == WLayout::TapsFirst && bias.is_none_or(|b| b.dtype() == DType::F32)
    {
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
    /// The generic path's block-Toeplitz form of the two filters.
    poly: Polyphase,
}

/// Input samples per row of the polyphase GEMMs.
const POLY_P: usize = 16;

/// Gather indices of the replicate paddings for one input length.
type PolyIndices = (usize, candle_core::DeviceLocation, Tensor, Tensor);

/// The ×2 upsampler and ×2 downsampler of `Activation1d` as GEMMs on blocks of the signal,
/// for the generic (non-CPU) path: no `[B·C, 1, T]` single-channel convolution, whose CUDA
/// im2col/col2im buffers hold 12 copies of the signal, and no 2× signal beyond the one
/// Snake needs.
///
/// Upsampler, per output phase φ with `xq[i] = x[clamp(i − 3)]` (the replicate padding):
///   u[2r + φ] = Σ_{j=0..6} A[j][φ] · xq[r + j],  A[j][0] = 2 f[11 − 2j] (j ≤ 5),
///   A[j][1] = 2 f[12 − 2j] (j ≥ 1), the others 0.
/// With the padded signal cut in rows of P samples, output block b (2P samples) reads rows
/// b and b + 1: one GEMM `(rows, P) · (P, 4P)` gives every row's contribution to its own
/// block (first 2P columns) and to the block before (last 2P), and one add of two shifted
/// views sums them. Downsampler alike with `zp[i] = z[clamp(i − 5)]`:
///   out[t] = Σ_{i=0..11} g[i] · zp[2t + i],
/// on rows of 2P samples with a `(2P, 2P)` matrix. The gathers that pad are one
/// `index_select` each, with indices kept per input length.
#[derive(Debug, Clone)]
struct Polyphase {
    /// `(P, 4P)` f32
    up: Tensor,
    /// `(2P, 2P)` f32
    down: Tensor,
    indices: std::sync::Arc<std::sync::Mutex<Option<PolyIndices>>>,
}

impl Polyphase {
    fn new(up: &Tensor, down: &Tensor) -> candle_core::Result<Self> {
        let f: Vec<f32> = up.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let g: Vec<f32> = down.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        if f.len() != AA_KERNEL || g.len() != AA_KERNEL {
            candle_core::bail!("anti-aliased activation: filters must have {AA_KERNEL} taps");
        }
        let p = POLY_P;
        let dev = up.device();
        // upsampler taps A[j][φ]
        let a = |j: usize, phi: usize| -> f32 {
            match phi {
                0 if j <= 5 => 2.0 * f[11 - 2 * j],
                1 if j >= 1 => 2.0 * f[12 - 2 * j],
                _ => 0.0,
            }
        };
        // (2P × 2P) block matrix over rows b, b + 1, laid out as [rows of b | rows of b + 1]
        // side by side: (P, 4P), column block 0 = from row b, 1 = from row b + 1
        let mut mu = vec![0f32; p * 4 * p];
        for s in 0..p {
            for phi in 0..2 {
                for j in 0..7 {
                    let i = s + j; // input sample of the two-row window
                    let (row, blk) = (i % p, i / p);
                    mu[row * 4 * p + blk * 2 * p + 2 * s + phi] = a(j, phi);
                }
            }
        }
        let mut md = vec![0f32; 2 * p * 2 * p];
        for s in 0..p {
            for (i, &gi) in g.iter().enumerate() {
                let q = 2 * s + i;
                let (row, blk) = (q % (2 * p), q / (2 * p));
                md[row * 2 * p + blk * p + s] = gi;
            }
        }
        Ok(Self {
            up: Tensor::from_vec(mu, (p, 4 * p), dev)?,
            down: Tensor::from_vec(md, (2 * p, 2 * p), dev)?,
            indices: Default::default(),
        })
    }

    /// `xq` and `zp` gather indices for inputs of length `t` (made once per length).
    fn indices(
        &self,
        t: usize,
        dev: &candle_core::Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let mut slot = self.indices.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t0, loc, iu, id)) = &*slot
            && *t0 == t
            && *loc == dev.location()
        {
            return Ok((iu.clone(), id.clone()));
        }
        let p = POLY_P;
        let nb = t.div_ceil(p);
        let clamp = |i: usize, off: usize, len: usize| i.saturating_sub(off).min(len - 1) as u32;
        let iu: Vec<u32> = (0..(nb + 1) * p).map(|i| clamp(i, 3, t)).collect();
        let id: Vec<u32> = (0..(nb + 1) * 2 * p).map(|i| clamp(i, 5, 2 * t)).collect();
        let iu = Tensor::from_vec(iu, (nb + 1) * p, dev)?;
        let id = Tensor::from_vec(id, (nb + 1) * 2 * p, dev)?;
        *slot = Some((t, dev.location(), iu.clone(), id.clone()));
        Ok((iu, id))
    }

    /// Rows `(R, nb + 1, w)` times `(w, 2W)`, then row b's first W columns plus row b + 1's
    /// last W: `(R, nb, W)`.
    fn apply(rows: &Tensor, m: &Tensor, nb: usize) -> candle_core::Result<Tensor> {
        let (r, n1, w) = rows.dims3()?;
        let ww = m.dim(1)? / 2;
        let y = rows
            .reshape((r * n1, w))?
            .matmul(m)?
            .reshape((r, n1, 2 * ww))?;
        y.narrow(1, 0, nb)?.narrow(2, 0, ww)? + y.narrow(1, 1, nb)?.narrow(2, ww, ww)?
    }
}

impl AntiAliasAct {
    pub fn new(
        snake: SnakeParams,
        up_filter: Tensor,
        down_filter: Tensor,
    ) -> candle_core::Result<Self> {
        let cpu = if fast_cpu_kernels() && up_filter.device().is_cpu() {
            Some(FusedAct {
                alpha: snake.alpha.to_dtype(DType::F32)?.to_vec1()?,
                inv_beta: snake.inv_beta.to_dtype(DType::F32)?.to_vec1()?,
                up: up_filter.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
                down: down_filter.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
            })
        } else {
            None
        };
        let poly = Polyphase::new(&up_filter, &down_filter)?;
        Ok(Self {
            snake,
            up_filter,
            down_filter,
            cpu,
            poly,
        })
    }

    /// Upsample → Snake → downsample; (B, C, T) → (B, C, T).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(op) = &self.cpu
            && x.device().is_cpu()
            && x.dtype() == DType::F32
        {
            return x.contiguous()?.apply_op1_no_bwd(op);
        }
        self.forward_polyphase(x)
    }

    /// The generic path (every device): upsample, Snake and downsample as two gathers, two
    /// block GEMMs with their adds and Snake's five element-wise ops, with no buffer larger
    /// than 4 × the signal (see [`Polyphase`]). Same values as [`Self::forward_generic`] up
    /// to float summation order.
    pub fn forward_polyphase(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, t) = x.dims3()?;
        if t == 0 {
            return Ok(x.clone());
        }
        let p = POLY_P;
        let nb = t.div_ceil(p);
        let (iu, id) = self.poly.indices(t, x.device())?;
        let dt = x.dtype();
        let (mu, md) = (self.poly.up.to_dtype(dt)?, self.poly.down.to_dtype(dt)?);
        let xq = x
            .contiguous()?
            .index_select(&iu, 2)?
            .reshape((b * c, nb + 1, p))?;
        let u = Polyphase::apply(&xq, &mu, nb)?.reshape((b, c, nb * 2 * p))?;
        // Snake over the whole blocks (beyond 2T: the replicate-padded tail, finite, unused)
        let z = snake_generic(&u, &self.snake)?;
        let zp = z.index_select(&id, 2)?.reshape((b * c, nb + 1, 2 * p))?;
        let y = Polyphase::apply(&zp, &md, nb)?.reshape((b, c, nb * p))?;
        y.narrow(2, 0, t)?.contiguous()
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
        let isa = crate::cpu::isa();
        if t > 0 {
            dst.par_chunks_mut(t)
                .zip(x.par_chunks(t))
                .enumerate()
                .for_each_init(RowScratch::default, |scratch, (row, (out, inp))| {
                    let ch = row % c;
                    act_row(
                        isa,
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

crate::cpu::multiversion! {
    /// One channel row of the fused activation, compiled for AVX-512, AVX2 and the baseline.
    fn act_row(
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
            (1, 130, 7, 3000, 3, 1, 1),
            (2, 140, 9, 50, 7, 3, 9),
            (1, 24, 24, 12_345, 11, 1, 5),
            // wide: Winograd F(4,3), kernels 3/7/11, dilations, odd lengths, several blocks
            (2, 136, 130, 41, 3, 1, 1),
            (1, 129, 140, 5_003, 11, 5, 25),
            (1, 160, 129, 2_101, 7, 3, 9),
            (1, 131, 7, 9, 11, 1, 5),
            (1, 200, 3, 30, 5, 2, 0),
        ] {
            let x = randn(&[b, cin, t], 1.0);
            let w = randn(&[cout, cin, k], 0.3);
            let bias = randn(&[cout], 0.1);
            let want = x
                .conv1d(&w, p, 1, d, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, cout, 1)).unwrap())
                .unwrap();
            let scale = want
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            // direct per-tap GEMMs and F(2,3) round like candle's conv; F(4,3) a few times
            // more (these weights are far larger than a trained model's)
            for (tile, tol) in [(0usize, 1e-4f32), (2, 1e-4), (4, 2e-5 * scale)] {
                let cw = ConvWeight::with_winograd(w.clone(), ConvKind::Conv, tile).unwrap();
                assert_ne!(cw.layout, WLayout::Official);
                assert_eq!(cw.dims().unwrap(), (cout, cin, k));
                let fast = conv1d(&x, &cw, Some(&bias), p, d).unwrap();
                let e = max_diff(&fast, &want);
                assert!(
                    e < tol,
                    "conv1d F({tile},3) {b} {cin} {cout} {t} {k} {d} {p}: {e}"
                );
                let nobias = conv1d(&x, &cw, None, p, d).unwrap();
                let e = max_diff(&nobias, &x.conv1d(&w, p, 1, d, 1).unwrap());
                assert!(e < tol, "conv1d F({tile},3) without bias: {e}");
            }
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
                layout: WLayout::Official,
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
            layout: WLayout::Official,
        };
        let g = conv_transpose1d(&x, &cw, None, 4, 2).unwrap();
        let want = x.conv_transpose1d(&w, 2, 0, 4, 1, 1).unwrap();
        assert!(max_diff(&g, &want) < 1e-5);
        let cc = ConvWeight {
            t: randn(&[4, 3, 5], 0.3),
            kind: ConvKind::Conv,
            layout: WLayout::Official,
        };
        let g = conv1d(&x, &cc, None, 4, 2).unwrap();
        let want = x.conv1d(&cc.t, 4, 1, 2, 1).unwrap();
        assert!(max_diff(&g, &want) < 1e-5);
    }

    /// N(0, std²) from a seeded generator: these tests must not depend on the run.
    fn seeded(rng: &mut crate::rng::Rng, shape: &[usize], std: f64) -> Tensor {
        (rng.randn(shape, &Device::Cpu).unwrap() * std).unwrap()
    }

    fn act(c: usize, rng: &mut crate::rng::Rng) -> AntiAliasAct {
        let alpha = seeded(rng, &[c], 0.3).exp().unwrap();
        let inv_beta = (seeded(rng, &[c], 0.3).exp().unwrap() + 1e-9)
            .unwrap()
            .recip()
            .unwrap();
        let f =
            Tensor::from_vec(kaiser_sinc_filter(0.25, 0.3, 12), (1, 1, 12), &Device::Cpu).unwrap();
        AntiAliasAct::new(SnakeParams { alpha, inv_beta }, f.clone(), f).unwrap()
    }

    /// Bound of the fused-vs-generic difference for arguments beyond the polynomial's range,
    /// in f32 ulps of the largest |x|: the output `x + sin²(αx)/β` is dominated by `x`
    /// (|x| up to ~8·10⁴, one ulp 2⁻⁷), and the two paths differ by whole ulps of it. Over
    /// 300 unseeded-style draws (`large_argument_error_distribution`) the difference was
    /// median 2, p99 3.5, max 4 ulps (1.56e-2 / 2.73e-2 / 3.13e-2): the old fixed bound 2e-2
    /// (2.56 ulps) failed 23 of these 300 draws (the issue saw about 1 run in 30). The seeded
    /// draw measures 2 ulps.
    const LARGE_ARG_ULPS: f32 = 4.0;

    /// One f32 ulp at magnitude `m`.
    fn ulp(m: f32) -> f32 {
        2f32.powi(m.abs().log2().floor() as i32 - 23)
    }

    /// The distribution of the large-argument difference over many input draws (run with
    /// `--ignored --nocapture`): what `LARGE_ARG_BOUND` is set from.
    #[test]
    #[ignore]
    fn large_argument_error_distribution() {
        let mut errs: Vec<(f32, f32)> = (0..300u64)
            .map(|seed| {
                let mut rng = crate::rng::Rng::new(seed);
                let a = act(3, &mut rng);
                let x = seeded(&mut rng, &[1, 3, 3000], 20_000.0);
                let e = max_diff(&a.forward(&x).unwrap(), &a.forward_generic(&x).unwrap());
                let u = ulp(x
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap());
                (e, e / u)
            })
            .collect();
        errs.sort_by(|a, b| a.1.total_cmp(&b.1));
        eprintln!(
            "large-argument max diff over 300 draws (abs, ulps of max|x|): median {:?}, \
             p90 {:?}, p99 {:?}, max {:?}; over 2e-2: {}",
            errs[150],
            errs[270],
            errs[297],
            errs[299],
            errs.iter().filter(|e| e.0 >= 2e-2).count()
        );
        assert!(errs.iter().all(|e| e.1 <= LARGE_ARG_ULPS));
    }

    #[test]
    fn polyphase_activation_matches_generic() {
        let mut rng = crate::rng::Rng::new(0x9017_9a5e);
        let a = act(3, &mut rng);
        for t in [1usize, 2, 5, 6, 7, 15, 16, 17, 33, 1023, 1024, 2053, 5000] {
            let x = seeded(&mut rng, &[2, 3, t], 3.0);
            let poly = a.forward_polyphase(&x).unwrap();
            let generic = a.forward_generic(&x).unwrap();
            assert_eq!(poly.dims(), &[2, 3, t]);
            let e = max_diff(&poly, &generic);
            assert!(e < 2e-5, "T={t}: {e}");
        }
        // the gather indices follow the length (cached per length)
        let x = seeded(&mut rng, &[1, 3, 40], 1.0);
        let e = max_diff(
            &a.forward_polyphase(&x).unwrap(),
            &a.forward_generic(&x).unwrap(),
        );
        assert!(e < 2e-5, "{e}");
    }

    #[test]
    fn fused_activation_matches_generic() {
        // Seeded: with unseeded inputs the large-argument bound failed about 1 run in 30.
        let mut rng = crate::rng::Rng::new(0x5eed_ac71);
        let a = act(3, &mut rng);
        for t in [1usize, 2, 5, 6, 7, 1023, 1024, 1025, 2053, 5000] {
            let x = seeded(&mut rng, &[2, 3, t], 3.0);
            let fused = a.forward(&x).unwrap();
            let generic = a.forward_generic(&x).unwrap();
            let e = max_diff(&fused, &generic);
            assert!(e < 2e-5, "T={t}: {e}");
        }
        // arguments beyond the polynomial's range take the library sin
        let x = seeded(&mut rng, &[1, 3, 3000], 20_000.0);
        let e = max_diff(&a.forward(&x).unwrap(), &a.forward_generic(&x).unwrap());
        let u = ulp(x
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap());
        if std::env::var_os("MMAUDIO_PRINT_LARGE_ARG_ERROR").is_some() {
            eprintln!("large-argument max diff {e:e} = {} ulps", e / u);
        }
        assert!(
            e <= LARGE_ARG_ULPS * u,
            "large arguments: {e} = {} ulps",
            e / u
        );
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
    fn winograd_identities() {
        // Aᵀ[(G g) ⊙ (Bᵀ d)] = correlation of d (m + 2) with g (3)
        let d = [0.3f64, -1.2, 2.5, 0.7, -0.4, 1.9];
        let g = [0.8f64, -0.5, 1.3];
        for sc in [&WINO_F23, &WINO_F43] {
            let u: Vec<f64> = (0..sc.a)
                .map(|x| (0..3).map(|j| sc.g[x][j] * g[j]).sum())
                .collect();
            let v: Vec<f64> = (0..sc.a)
                .map(|x| (0..sc.a).map(|l| sc.bt[x][l] as f64 * d[l]).sum())
                .collect();
            for i in 0..sc.m {
                let y: f64 = (0..sc.a).map(|x| sc.at[i][x] as f64 * u[x] * v[x]).sum();
                let want: f64 = (0..3).map(|j| g[j] * d[i + j]).sum();
                assert!(
                    (y - want).abs() < 1e-12,
                    "F({},3) output {i}: {y} vs {want}",
                    sc.m
                );
            }
        }
    }

    #[test]
    fn winograd_f43_conv_close_to_direct() {
        // built explicitly (the global tile selection is shared with parallel tests)
        let x = randn(&[1, 160, 3001], 1.0);
        let w = randn(&[140, 160, 11], 0.3);
        let cw = ConvWeight {
            t: winograd_weight(&w, &WINO_F43).unwrap(),
            kind: ConvKind::Conv,
            layout: WLayout::Winograd {
                k: 11,
                scheme: &WINO_F43,
            },
        };
        let got = conv1d(&x, &cw, None, 25, 5).unwrap();
        let want = x.conv1d(&w, 25, 1, 5, 1).unwrap();
        let scale = want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let e = max_diff(&got, &want);
        assert!(e < 1e-4 * scale, "F(4,3): {e} (scale {scale})");
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
