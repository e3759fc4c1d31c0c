//! Softmax attention for the CPU, read straight from projection outputs.
//!
//! A [`Problem`] is one head of one sequence (or one group of a divided attention): a block
//! of query rows, the key/value rows of one or more segments (the streams of a joint
//! attention, a CLS token prepended to every group), and where the output rows go. Rows are
//! addressed by pointer and stride, so the q/k/v columns of a fused projection
//! `(B, T, 3·H·D)` are used where they lie and the output is written in the merged-heads
//! layout `(B, T, H·D)`: no head split, no concatenation, no merge copy. Queries are
//! processed in blocks of at most [`Q_BLOCK`] rows, so only `Q_BLOCK × keys` scores exist per
//! thread (not `heads × T × T`). Scores come from one GEMM per segment (`Q·Kᵀ`), then an
//! in-place softmax per row and one accumulating GEMM per segment (`P·V`); small problems
//! (a few keys, or a single query) use dot products instead. Scores are `scale · q·k`
//! (pass 1 when the scale is folded into the q projection).

use super::gemm::{View, gemm_raw};
use super::rows::{axpy, dot, softmax_row};
use super::{Isa, SendPtr};
use rayon::prelude::*;

/// Query rows per task.
pub const Q_BLOCK: usize = 128;

/// `rows` rows of `d` contiguous floats, the first at `ptr`, `stride` floats apart.
#[derive(Debug, Clone, Copy)]
pub struct Rows {
    ptr: *const f32,
    rows: usize,
    stride: usize,
}

impl Rows {
    /// `rows` rows of `d` floats in `s`, the first at `start`, `stride` apart. Panics when
    /// they exceed `s`.
    pub fn new(s: &[f32], start: usize, rows: usize, stride: usize, d: usize) -> Self {
        if rows > 0 {
            assert!(
                start + (rows - 1) * stride + d <= s.len(),
                "attention rows out of bounds"
            );
        }
        Self {
            // SAFETY: in bounds (checked above; an empty block is never read)
            ptr: unsafe { s.as_ptr().add(start.min(s.len())) },
            rows,
            stride,
        }
    }

    fn row<'a>(&self, i: usize, d: usize) -> &'a [f32] {
        // SAFETY: construction checked the block against its slice, which outlives the run
        unsafe { std::slice::from_raw_parts(self.ptr.add(i * self.stride), d) }
    }
}

/// Where output rows go: `rows` (as the query block) of `d` floats, `stride` apart.
#[derive(Debug, Clone, Copy)]
pub struct OutRows {
    ptr: SendPtr,
    stride: usize,
}

impl OutRows {
    /// Output rows of `d` floats in `s`, the first at `start`, `stride` apart; `rows` of them
    /// must fit (checked).
    pub fn new(s: &mut [f32], start: usize, rows: usize, stride: usize, d: usize) -> Self {
        if rows > 0 {
            assert!(
                start + (rows - 1) * stride + d <= s.len(),
                "attention output out of bounds"
            );
        }
        Self {
            // SAFETY: in bounds (checked above)
            ptr: SendPtr(unsafe { s.as_mut_ptr().add(start.min(s.len())) }),
            stride,
        }
    }
}

/// One attention problem (see the module doc).
#[derive(Debug, Clone)]
pub struct Problem {
    pub q: Rows,
    /// `(keys, values)` per segment, concatenated along the sequence.
    pub kv: Vec<(Rows, Rows)>,
    pub out: OutRows,
    /// Causal: query `i` sees keys `0..=i + offset` only.
    pub causal: Option<usize>,
}

// SAFETY: the pointers address buffers that outlive `run` and the output regions of
// different problems are disjoint (the contract of `run`)
unsafe impl Send for Problem {}
unsafe impl Sync for Problem {}

/// Solve every problem, in parallel over problems and query blocks.
///
/// # Safety
/// Every `Rows`/`OutRows` must address memory valid for the whole call (`Rows::of`,
/// `OutRows::of` check this against their slices, which must outlive the call), the
/// output regions (query rows × `d` floats) of all problems must be pairwise disjoint and
/// not overlap any input, and no other thread may access them meanwhile.
pub unsafe fn run(isa: Isa, d: usize, scale: f32, problems: &[Problem]) {
    let tasks: Vec<(usize, usize)> = problems
        .iter()
        .enumerate()
        .flat_map(|(pi, p)| (0..p.q.rows).step_by(Q_BLOCK).map(move |s| (pi, s)))
        .collect();
    tasks
        .par_iter()
        .for_each_init(Vec::new, |scratch, &(pi, q0)| {
            let p = &problems[pi];
            let nq = Q_BLOCK.min(p.q.rows - q0);
            // SAFETY: forwarded contract; this task owns query rows q0..q0+nq of problem pi
            unsafe { solve_block(isa, d, scale, p, q0, nq, scratch) }
        });
}

/// Keys visible to query `i` (global index) of a problem with `nk` keys.
fn visible(causal: Option<usize>, i: usize, nk: usize) -> usize {
    match causal {
        Some(off) => (i + off + 1).min(nk),
        None => nk,
    }
}

unsafe fn solve_block(
    isa: Isa,
    d: usize,
    scale: f32,
    p: &Problem,
    q0: usize,
    nq: usize,
    scratch: &mut Vec<f32>,
) {
    let nk: usize = p.kv.iter().map(|(k, _)| k.rows).sum();
    let out_row = |i: usize| -> &mut [f32] {
        // SAFETY: query rows of this block are owned by this task (run's contract)
        unsafe { std::slice::from_raw_parts_mut(p.out.ptr.0.add((q0 + i) * p.out.stride), d) }
    };
    if nk == 0 {
        for i in 0..nq {
            out_row(i).fill(0.0);
        }
        return;
    }
    // the longest row any query of the block sees
    let width = visible(p.causal, q0 + nq - 1, nk);
    scratch.resize(nq * width, 0.0);
    let s = &mut scratch[..nq * width];
    let direct = nq <= 2 || nk <= 16 || d < 16;
    if direct {
        for i in 0..nq {
            let q = p.q.row(q0 + i, d);
            let row = &mut s[i * width..(i + 1) * width];
            let vis = visible(p.causal, q0 + i, nk);
            let mut j = 0;
            for (k, _) in &p.kv {
                for r in 0..k.rows {
                    if j < vis {
                        row[j] = scale * dot(isa, q, k.row(r, d));
                    }
                    j += 1;
                }
            }
            row[vis..].fill(f32::NEG_INFINITY);
        }
    } else {
        let mut off = 0;
        for (k, _) in &p.kv {
            let cols = k.rows.min(width.saturating_sub(off));
            if cols > 0 {
                // SAFETY: q rows, key rows and the score block are in bounds
                unsafe {
                    gemm_raw(
                        nq,
                        cols,
                        d,
                        s.as_mut_ptr().add(off),
                        width as isize,
                        false,
                        View {
                            ptr: p.q.ptr.add(q0 * p.q.stride),
                            rs: p.q.stride as isize,
                            cs: 1,
                        },
                        View {
                            ptr: k.ptr,
                            rs: 1,
                            cs: k.stride as isize,
                        },
                        scale,
                        gemm::Parallelism::None,
                    )
                };
            }
            off += k.rows;
        }
        if p.causal.is_some() {
            for i in 0..nq {
                let vis = visible(p.causal, q0 + i, nk);
                s[i * width + vis..(i + 1) * width].fill(f32::NEG_INFINITY);
            }
        }
    }
    for i in 0..nq {
        softmax_row(isa, &mut s[i * width..(i + 1) * width]);
    }
    if direct {
        for i in 0..nq {
            let o = out_row(i);
            o.fill(0.0);
            let row = &s[i * width..(i + 1) * width];
            let mut j = 0;
            for (_, v) in &p.kv {
                for r in 0..v.rows {
                    if j < width && row[j] != 0.0 {
                        axpy(isa, o, row[j], v.row(r, d));
                    }
                    j += 1;
                }
            }
        }
    } else {
        let mut off = 0;
        let mut first = true;
        for (_, v) in &p.kv {
            let cols = v.rows.min(width.saturating_sub(off));
            if cols > 0 {
                // SAFETY: probabilities, value rows and the output block are in bounds
                unsafe {
                    gemm_raw(
                        nq,
                        d,
                        cols,
                        p.out.ptr.0.add(q0 * p.out.stride),
                        p.out.stride as isize,
                        !first,
                        View {
                            ptr: s.as_ptr().add(off),
                            rs: width as isize,
                            cs: 1,
                        },
                        View {
                            ptr: v.ptr,
                            rs: v.stride as isize,
                            cs: 1,
                        },
                        1.0,
                        gemm::Parallelism::None,
                    )
                };
                first = false;
            }
            off += v.rows;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::rows::each_isa;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut r = crate::rng::Rng::new(seed);
        (0..n).map(|_| r.uniform() as f32 * 2.0 - 1.0).collect()
    }

    /// Reference: out[i] = Σ_j softmax(q_i·k_j) v_j over the visible keys, in f64.
    fn reference(
        q: &[Vec<f32>],
        k: &[Vec<f32>],
        v: &[Vec<f32>],
        causal: Option<usize>,
    ) -> Vec<Vec<f64>> {
        q.iter()
            .enumerate()
            .map(|(i, qi)| {
                let vis = visible(causal, i, k.len());
                let s: Vec<f64> = k[..vis]
                    .iter()
                    .map(|kj| qi.iter().zip(kj).map(|(a, b)| *a as f64 * *b as f64).sum())
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                (0..qi.len())
                    .map(|c| {
                        e.iter()
                            .zip(&v[..vis])
                            .map(|(p, vj)| p * vj[c] as f64)
                            .sum::<f64>()
                            / z
                    })
                    .collect()
            })
            .collect()
    }

    /// Fused (B, T, 3·H·D) projections with heads at strides; keys from two segments (a
    /// prepended 1-row "CLS" block and the sequence), causal or not, many query blocks.
    #[test]
    fn strided_segments_match_reference() {
        for (t, d, h, causal) in [
            (300, 24, 3, None),
            (77, 16, 2, Some(0)),
            (5, 8, 2, None),
            (20, 32, 1, None),
        ] {
            let c = h * d;
            let qkv = data(t * 3 * c, 11);
            let cls = data(3 * c, 12);
            each_isa(|isa| {
                let mut out = vec![f32::NAN; t * c];
                let mut problems = Vec::new();
                for hi in 0..h {
                    let with_cls = causal.is_none();
                    let mut kv = Vec::new();
                    if with_cls {
                        kv.push((
                            Rows::new(&cls, c + hi * d, 1, 3 * c, d),
                            Rows::new(&cls, 2 * c + hi * d, 1, 3 * c, d),
                        ));
                    }
                    kv.push((
                        Rows::new(&qkv, c + hi * d, t, 3 * c, d),
                        Rows::new(&qkv, 2 * c + hi * d, t, 3 * c, d),
                    ));
                    problems.push(Problem {
                        q: Rows::new(&qkv, hi * d, t, 3 * c, d),
                        kv,
                        out: OutRows::new(&mut out, hi * d, t, c, d),
                        causal,
                    });
                }
                // SAFETY: all blocks come from live slices; heads write disjoint columns
                unsafe { run(isa, d, 1.0, &problems) };
                for hi in 0..h {
                    let rows = |base: &[f32], n: usize, col: usize| -> Vec<Vec<f32>> {
                        (0..n)
                            .map(|i| base[i * 3 * c + col + hi * d..][..d].to_vec())
                            .collect()
                    };
                    let q = rows(&qkv, t, 0);
                    let mut k = rows(&qkv, t, c);
                    let mut v = rows(&qkv, t, 2 * c);
                    if causal.is_none() {
                        k.insert(0, cls[c + hi * d..][..d].to_vec());
                        v.insert(0, cls[2 * c + hi * d..][..d].to_vec());
                    }
                    let want = reference(&q, &k, &v, causal);
                    for i in 0..t {
                        for j in 0..d {
                            let got = out[i * c + hi * d + j] as f64;
                            assert!(
                                (got - want[i][j]).abs() < 2e-5,
                                "{} t={t} d={d} h={hi} i={i}: {got} vs {}",
                                isa.name(),
                                want[i][j]
                            );
                        }
                    }
                }
            });
        }
    }
}
