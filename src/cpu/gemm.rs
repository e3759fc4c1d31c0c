//! Matrix products on f32 slices through the `gemm` crate (AVX-512 / AVX2 kernels chosen at
//! run time), with the bias, a residual and an activation folded in so that a Linear layer
//! is one pass over its output.

use super::rows::{Act, act_par};

/// Threads for a GEMM: the rayon pool when it has more than one thread.
pub fn parallelism() -> gemm::Parallelism {
    let n = rayon::current_num_threads();
    if n > 1 {
        gemm::Parallelism::Rayon(n)
    } else {
        gemm::Parallelism::None
    }
}

/// A strided f32 matrix: element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

impl View {
    /// Row-major `rows × cols` from the start of a slice.
    pub fn rows(s: &[f32], cols: usize) -> Self {
        Self {
            ptr: s.as_ptr(),
            rs: cols as isize,
            cs: 1,
        }
    }
}

/// `dst (m × n) = [dst +] scale · a (m × k) · b (k × n)`; `dst` row-major with row stride
/// `dst_rs`.
///
/// # Safety
/// Every element the views address (`m × k` of `a`, `k × n` of `b`, `m × n` of `dst`) must
/// be in bounds, and `dst` must not overlap `a` or `b` nor be written concurrently.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    accumulate: bool,
    a: View,
    b: View,
    scale: f32,
    par: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: rows of dst are in bounds (caller contract)
                unsafe { std::slice::from_raw_parts_mut(dst.offset(i as isize * dst_rs), n) }
                    .fill(0.0);
            }
        }
        return;
    }
    // SAFETY: forwarded caller contract
    unsafe {
        gemm::gemm(
            m, n, k, dst, 1, dst_rs, accumulate, a.ptr, a.cs, a.rs, b.ptr, b.cs, b.rs, 1.0f32,
            scale, false, false, false, par,
        )
    }
}

/// A Linear layer's weight for [`linear`], stored transposed: `Wᵀ (in, out)` row-major
/// with row stride `ld` (≥ out; a column block of a wider matrix has ld > out). The GEMM
/// reads this layout several times faster than PyTorch's `(out, in)` when there are few
/// rows (measured with the `gemm` crate: 77 rows × 1024 × 3072, 4.0 vs 8.6 ms).
#[derive(Debug, Clone, Copy)]
pub struct Weight<'a> {
    w_t: &'a [f32],
    in_dim: usize,
    out_dim: usize,
    ld: usize,
}

impl<'a> Weight<'a> {
    /// `w_t` holds `in_dim × out_dim` row-major.
    pub fn new(w_t: &'a [f32], in_dim: usize, out_dim: usize) -> Self {
        assert_eq!(w_t.len(), in_dim * out_dim, "weight size");
        Self {
            w_t,
            in_dim,
            out_dim,
            ld: out_dim,
        }
    }

    /// Output columns `start..start + n` (the weight of part of the outputs).
    pub fn cols(self, start: usize, n: usize) -> Self {
        assert!(start + n <= self.out_dim, "weight columns out of range");
        Self {
            w_t: &self.w_t[start..],
            out_dim: n,
            ..self
        }
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    fn view(&self) -> View {
        View {
            ptr: self.w_t.as_ptr(),
            rs: self.ld as isize,
            cs: 1,
        }
    }
}

/// `y = act(x Wᵀ + b) [+ residual]` for `rows` rows of `x`, as one GEMM: the bias (and the
/// residual) pre-fill the output, which the GEMM accumulates into; the activation is one
/// parallel pass. A residual with an activation is added after it.
pub fn linear(
    x: &[f32],
    rows: usize,
    w: Weight,
    bias: Option<&[f32]>,
    act: Act,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let mut y = vec![0f32; rows * w.out_dim];
    linear_into(&mut y, x, rows, w, bias, act, residual);
    y
}

/// [`linear`] into an existing buffer of `rows × out_dim` (its contents are overwritten).
pub fn linear_into(
    y: &mut [f32],
    x: &[f32],
    rows: usize,
    w: Weight,
    bias: Option<&[f32]>,
    act: Act,
    residual: Option<&[f32]>,
) {
    let (n, k) = (w.out_dim, w.in_dim);
    assert!(x.len() >= rows * k, "linear: input too short");
    assert!(y.len() >= rows * n, "linear: output too short");
    let y = &mut y[..rows * n];
    let fold_residual = act == Act::None && residual.is_some();
    let mut accumulate = false;
    if let Some(r) = residual.filter(|_| fold_residual) {
        y.copy_from_slice(&r[..rows * n]);
        accumulate = true;
    }
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear: bias size");
        if accumulate {
            for row in y.chunks_exact_mut(n) {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        } else {
            for row in y.chunks_exact_mut(n) {
                row.copy_from_slice(b);
            }
            accumulate = true;
        }
    }
    // SAFETY: x holds rows × k, w addresses k rows of n columns, y holds rows × n and is
    // exclusively borrowed
    unsafe {
        gemm_raw(
            rows,
            n,
            k,
            y.as_mut_ptr(),
            n as isize,
            accumulate,
            View::rows(x, k),
            w.view(),
            1.0,
            parallelism(),
        )
    };
    act_par(y, act);
    if let Some(r) = residual.filter(|_| !fold_residual) {
        y.iter_mut().zip(r).for_each(|(v, r)| *v += r);
    }
}

/// `y += x Wᵀ + b` in place (the residual stream of a pre-norm transformer block).
pub fn linear_add(y: &mut [f32], x: &[f32], rows: usize, w: Weight, bias: Option<&[f32]>) {
    let (n, k) = (w.out_dim, w.in_dim);
    assert!(
        x.len() >= rows * k && y.len() >= rows * n,
        "linear_add: sizes"
    );
    let y = &mut y[..rows * n];
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(n) {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
    }
    // SAFETY: as in linear_into
    unsafe {
        gemm_raw(
            rows,
            n,
            k,
            y.as_mut_ptr(),
            n as isize,
            true,
            View::rows(x, k),
            w.view(),
            1.0,
            parallelism(),
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], rows: usize, w: &[f32], n: usize, k: usize) -> Vec<f64> {
        let mut y = vec![0f64; rows * n];
        for i in 0..rows {
            for j in 0..n {
                y[i * n + j] = (0..k)
                    .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                    .sum();
            }
        }
        y
    }

    #[test]
    fn linear_with_bias_residual_and_activation() {
        let (rows, k, n) = (37, 19, 23);
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 7) % 13) as f32 * 0.1 - 0.6)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 5) % 11) as f32 * 0.1 - 0.5)
            .collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let r: Vec<f32> = (0..rows * n).map(|i| (i % 3) as f32).collect();
        let want = naive(&x, rows, &w, n, k);
        let w_t: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        let wt = Weight::new(&w_t, k, n);
        let y = linear(&x, rows, wt, Some(&b), Act::None, Some(&r));
        for i in 0..rows * n {
            let e = want[i] + b[i % n] as f64 + r[i] as f64;
            assert!((y[i] as f64 - e).abs() < 1e-4, "{i}");
        }
        let y = linear(&x, rows, wt, Some(&b), Act::Silu, Some(&r));
        for i in 0..rows * n {
            let h = want[i] + b[i % n] as f64;
            let e = h / (1.0 + (-h).exp()) + r[i] as f64;
            assert!((y[i] as f64 - e).abs() < 1e-4, "{i}");
        }
        let mut acc = r.clone();
        linear_add(&mut acc, &x, rows, wt, None);
        for i in 0..rows * n {
            assert!((acc[i] as f64 - want[i] - r[i] as f64).abs() < 1e-4);
        }
        // a column block of the weight: outputs 5..12 only
        let part = linear(&x, rows, wt.cols(5, 7), Some(&b[5..12]), Act::None, None);
        for i in 0..rows {
            for j in 0..7 {
                let e = want[i * n + 5 + j] + b[5 + j] as f64;
                assert!((part[i * 7 + j] as f64 - e).abs() < 1e-4);
            }
        }
        // no rows, no inputs: nothing to do, nothing breaks
        assert!(linear(&[], 0, wt, Some(&b), Act::None, None).is_empty());
    }
}
