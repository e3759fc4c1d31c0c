//! Row-wise kernels: LayerNorm (affine, none, or adaLN-modulated), softmax, activations,
//! dot products. Each works on one row (or one slice) and is multiversioned
//! ([`super::multiversion`]); the parallel drivers at the bottom split rows over the rayon
//! pool.
//!
//! Sums use 32 partial sums (two AVX-512 registers, four AVX2 ones), which both vectorises
//! and keeps the rounding error of a 1280-wide row near that of pairwise summation.

#[cfg(test)]
use super::Isa;
use super::{math, multiversion};
use rayon::prelude::*;

const LANES: usize = 32;

#[inline(always)]
fn reduce(acc: [f32; LANES]) -> f32 {
    let mut w = LANES;
    let mut a = acc;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            a[i] += a[i + w];
        }
    }
    a[0]
}

#[inline(always)]
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut ch = v.chunks_exact(LANES);
    for c in &mut ch {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    for (i, &x) in ch.remainder().iter().enumerate() {
        acc[i] += x;
    }
    reduce(acc)
}

#[inline(always)]
fn sum_sq_dev(v: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut ch = v.chunks_exact(LANES);
    for c in &mut ch {
        for i in 0..LANES {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    for (i, &x) in ch.remainder().iter().enumerate() {
        let d = x - mean;
        acc[i] += d * d;
    }
    reduce(acc)
}

/// `Σ a[i]·b[i]` for use inside other multiversioned kernels.
#[inline(always)]
pub fn dot_inline(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[i] += x * y;
    }
    reduce(acc)
}

/// How a normalised row is scaled and shifted.
#[derive(Debug, Clone, Copy)]
pub enum Affine<'a> {
    /// Plain normalisation.
    None,
    /// `x̂ · w + b` (`nn.LayerNorm` with elementwise affine).
    WeightBias(&'a [f32], &'a [f32]),
    /// `x̂ · (1 + scale) + shift` (adaLN `modulate`).
    Modulate { shift: &'a [f32], scale: &'a [f32] },
}

multiversion! {
    /// LayerNorm of one row: mean and variance in two passes (as PyTorch), then the affine.
    pub fn layer_norm_row(x: &[f32], out: &mut [f32], affine: Affine, eps: f32) {
        let n = x.len();
        let out = &mut out[..n];
        let mean = sum(x) / n as f32;
        let rstd = 1.0 / (sum_sq_dev(x, mean) / n as f32 + eps).sqrt();
        match affine {
            Affine::None => {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = (v - mean) * rstd;
                }
            }
            Affine::WeightBias(w, b) => {
                let (w, b) = (&w[..n], &b[..n]);
                for i in 0..n {
                    out[i] = (x[i] - mean) * rstd * w[i] + b[i];
                }
            }
            Affine::Modulate { shift, scale } => {
                let (sh, sc) = (&shift[..n], &scale[..n]);
                for i in 0..n {
                    out[i] = (x[i] - mean) * rstd * (1.0 + sc[i]) + sh[i];
                }
            }
        }
    }
}

/// An elementwise activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    None,
    /// `x · sigmoid(1.702 x)`.
    QuickGelu,
    /// `½ x (1 + erf(x/√2))`.
    GeluErf,
    /// `x · sigmoid(x)`.
    Silu,
}

multiversion! {
    /// Apply `act` in place. (Plain `for` loops: a closure passed to `for_each` may be
    /// compiled out of line, without this function's target features.)
    pub fn act_inplace(x: &mut [f32], act: Act) {
        match act {
            Act::None => {}
            Act::QuickGelu => {
                for v in x.iter_mut() {
                    *v = math::quick_gelu(*v);
                }
            }
            Act::GeluErf => {
                for v in x.iter_mut() {
                    *v = math::gelu_erf(*v);
                }
            }
            Act::Silu => {
                for v in x.iter_mut() {
                    *v = math::silu(*v);
                }
            }
        }
    }
}

multiversion! {
    /// `out = silu(a) · g` (the SwiGLU gate).
    pub fn swiglu_row(a: &[f32], g: &[f32], out: &mut [f32]) {
        let n = out.len();
        let (a, g) = (&a[..n], &g[..n]);
        for i in 0..n {
            out[i] = math::silu(a[i]) * g[i];
        }
    }
}

multiversion! {
    /// Softmax of one row in place; a row of −∞ only becomes zeros.
    pub fn softmax_row(x: &mut [f32]) {
        let mut mx = [f32::NEG_INFINITY; LANES];
        let mut ch = x.chunks_exact(LANES);
        for c in &mut ch {
            for i in 0..LANES {
                mx[i] = mx[i].max(c[i]);
            }
        }
        for (i, &v) in ch.remainder().iter().enumerate() {
            mx[i] = mx[i].max(v);
        }
        let m = mx.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        if m == f32::NEG_INFINITY {
            x.fill(0.0);
            return;
        }
        for v in x.iter_mut() {
            *v = math::exp(*v - m);
        }
        let inv = 1.0 / sum(x);
        for v in x.iter_mut() {
            *v *= inv;
        }
    }
}

multiversion! {
    /// `Σ a[i]·b[i]` over the shorter length.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        dot_inline(a, b)
    }
}

multiversion! {
    /// `y += alpha · x`.
    pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
        let n = y.len();
        let x = &x[..n];
        for i in 0..n {
            y[i] += alpha * x[i];
        }
    }
}

multiversion! {
    /// `out[i] = x[i] + y[i] · g[i]` (gated residual).
    pub fn gated_add_row(x: &[f32], y: &[f32], g: &[f32], out: &mut [f32]) {
        let n = out.len();
        let (x, y, g) = (&x[..n], &y[..n], &g[..n]);
        for i in 0..n {
            out[i] = x[i] + y[i] * g[i];
        }
    }
}

/// Rows per rayon task so that a task handles about 16k floats.
pub fn rows_per_task(row_len: usize) -> usize {
    (16_384 / row_len.max(1)).max(1)
}

/// LayerNorm of every `n`-wide row of `x` into a new buffer, rows in parallel.
pub fn layer_norm(x: &[f32], n: usize, w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let isa = super::isa();
    let mut out = vec![0f32; x.len()];
    let rpt = rows_per_task(n);
    out.par_chunks_mut(n * rpt)
        .zip(x.par_chunks(n * rpt))
        .for_each(|(o, xi)| {
            for (or, xr) in o.chunks_exact_mut(n).zip(xi.chunks_exact(n)) {
                layer_norm_row(isa, xr, or, Affine::WeightBias(w, b), eps);
            }
        });
    out
}

/// [`act_inplace`] over a large buffer, in parallel chunks.
pub fn act_par(x: &mut [f32], act: Act) {
    if act == Act::None {
        return;
    }
    let isa = super::isa();
    x.par_chunks_mut(1 << 14)
        .for_each(|c| act_inplace(isa, c, act));
}

/// Softmax of every `n`-wide row in place, rows in parallel.
pub fn softmax_par(x: &mut [f32], n: usize) {
    let isa = super::isa();
    x.par_chunks_mut(n * rows_per_task(n)).for_each(|c| {
        for r in c.chunks_exact_mut(n) {
            softmax_row(isa, r);
        }
    });
}

/// Check the dispatch wrappers compile to each level (used by tests in other modules).
#[cfg(test)]
pub(crate) fn each_isa(mut f: impl FnMut(Isa)) {
    for isa in Isa::supported() {
        f(isa);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 4.0 - 2.0
            })
            .collect()
    }

    #[test]
    fn layer_norm_row_matches_f64_at_every_isa() {
        for n in [1, 7, 33, 448, 1280] {
            // a large common offset: catches E[x²] − E[x]² shortcuts
            let x: Vec<f32> = data(n, 3).iter().map(|v| v + 300.0).collect();
            let w = data(n, 4);
            let b = data(n, 5);
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let rstd = 1.0 / (var + 1e-5).sqrt();
            each_isa(|isa| {
                let mut out = vec![0f32; n];
                layer_norm_row(isa, &x, &mut out, Affine::WeightBias(&w, &b), 1e-5);
                for i in 0..n {
                    let want = (x[i] as f64 - mean) * rstd * w[i] as f64 + b[i] as f64;
                    assert!(
                        (out[i] as f64 - want).abs() < 2e-4,
                        "{} n={n} i={i}: {} vs {want}",
                        isa.name(),
                        out[i]
                    );
                }
                layer_norm_row(
                    isa,
                    &x,
                    &mut out,
                    Affine::Modulate {
                        shift: &b,
                        scale: &w,
                    },
                    1e-5,
                );
                for i in 0..n {
                    let want = (x[i] as f64 - mean) * rstd * (1.0 + w[i] as f64) + b[i] as f64;
                    assert!(
                        (out[i] as f64 - want).abs() < 2e-4,
                        "{} modulate",
                        isa.name()
                    );
                }
            });
        }
    }

    #[test]
    fn softmax_dot_axpy_activations_at_every_isa() {
        let x = data(731, 9);
        let y = data(731, 10);
        let want_dot: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
        let mx = x.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
        let z: f64 = x.iter().map(|&v| (v as f64 - mx).exp()).sum();
        each_isa(|isa| {
            assert!(
                (dot(isa, &x, &y) as f64 - want_dot).abs() < 1e-4,
                "{}",
                isa.name()
            );
            let mut s = x.clone();
            softmax_row(isa, &mut s);
            for (i, &p) in s.iter().enumerate() {
                let want = (x[i] as f64 - mx).exp() / z;
                assert!(
                    (p as f64 - want).abs() < 1e-7 + 1e-5 * want,
                    "{}",
                    isa.name()
                );
            }
            let mut masked = vec![f32::NEG_INFINITY; 5];
            masked[2] = 1.0;
            softmax_row(isa, &mut masked);
            assert_eq!(masked, [0.0, 0.0, 1.0, 0.0, 0.0]);
            let mut all_masked = vec![f32::NEG_INFINITY; 3];
            softmax_row(isa, &mut all_masked);
            assert_eq!(all_masked, [0.0; 3]);
            let mut a = y.clone();
            axpy(isa, &mut a, 0.5, &x);
            assert!(a.iter().enumerate().all(|(i, v)| *v == y[i] + 0.5 * x[i]));
            for act in [Act::QuickGelu, Act::GeluErf, Act::Silu] {
                let mut v = x.clone();
                act_inplace(isa, &mut v, act);
                for (i, &got) in v.iter().enumerate() {
                    let want = match act {
                        Act::QuickGelu => math::quick_gelu(x[i]),
                        Act::GeluErf => math::gelu_erf(x[i]),
                        _ => math::silu(x[i]),
                    };
                    assert!((got - want).abs() < 1e-6, "{} {act:?}", isa.name());
                }
            }
            let mut o = vec![0f32; 731];
            swiglu_row(isa, &x, &y, &mut o);
            assert!((o[17] - math::silu(x[17]) * y[17]).abs() < 1e-6);
        });
    }
}
