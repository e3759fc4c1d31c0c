//! The VAE's elementwise steps as single parallel passes on contiguous f32 CPU tensors (the
//! candle versions take several ops each, every one a pass through memory with its own
//! thread hand-off). Each function returns `None` when the fast path does not apply; the
//! caller then runs the generic ops, which give the same values up to float rounding.

use crate::cpu::tensor::host_f32;
use crate::cpu::{self, math, multiversion};
use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

/// Columns per task of the pixel-norm reduction.
const COLS: usize = 512;
/// Floats per task of the elementwise passes.
const CHUNK: usize = 1 << 14;

/// Pixel norm over dim 1 of `x (B, C, M)`: `x / (1e−4 + ‖x[b, :, m]‖₂ / √C)`.
pub fn pixel_norm(x: &Tensor) -> Result<Option<Tensor>> {
    let Some(h) = host_f32(x) else {
        return Ok(None);
    };
    let dims = x.dims();
    if dims.len() < 3 {
        return Ok(None);
    }
    let (b, c) = (dims[0], dims[1]);
    let m: usize = dims[2..].iter().product();
    let xs = h.as_slice();
    if b * c * m == 0 {
        return Ok(None);
    }
    let isa = cpu::isa();
    // denominators per (batch, column), in column blocks
    let blocks = m.div_ceil(COLS);
    let den: Vec<Vec<f32>> = (0..b * blocks)
        .into_par_iter()
        .map(|task| {
            let (bi, j0) = (task / blocks, (task % blocks) * COLS);
            let n = COLS.min(m - j0);
            let mut acc = vec![0f32; n];
            for ci in 0..c {
                let row = &xs[(bi * c + ci) * m + j0..][..n];
                square_add(isa, &mut acc, row);
            }
            let r = (1.0 / c as f64).sqrt() as f32;
            acc.iter_mut().for_each(|v| *v = v.sqrt() * r + 1e-4);
            acc
        })
        .collect();
    let mut out = vec![0f32; b * c * m];
    out.par_chunks_mut(m)
        .zip(xs.par_chunks(m))
        .enumerate()
        .for_each(|(row, (o, xr))| {
            let bi = row / c;
            for (k, d) in den[bi * blocks..(bi + 1) * blocks].iter().enumerate() {
                let j0 = k * COLS;
                divide(isa, &mut o[j0..j0 + d.len()], &xr[j0..j0 + d.len()], d);
            }
        });
    Ok(Some(Tensor::from_vec(out, dims, &Device::Cpu)?))
}

/// `silu(x) / 0.596` (`mp_silu`).
pub fn mp_silu(x: &Tensor) -> Result<Option<Tensor>> {
    let Some(h) = host_f32(x) else {
        return Ok(None);
    };
    let isa = cpu::isa();
    let mut out = h.as_slice().to_vec();
    out.par_chunks_mut(CHUNK)
        .for_each(|c| scaled_silu(isa, c, (1.0 / 0.596f64) as f32));
    Ok(Some(Tensor::from_vec(out, x.dims(), &Device::Cpu)?))
}

/// `(a + t·(b − a)) / √((1−t)² + t²)` (`mp_sum`).
pub fn mp_sum(a: &Tensor, b: &Tensor, t: f64) -> Result<Option<Tensor>> {
    if a.dims() != b.dims() {
        return Ok(None);
    }
    let (Some(ha), Some(hb)) = (host_f32(a), host_f32(b)) else {
        return Ok(None);
    };
    let isa = cpu::isa();
    let inv = (1.0 / ((1.0 - t) * (1.0 - t) + t * t).sqrt()) as f32;
    let mut out = vec![0f32; a.elem_count()];
    out.par_chunks_mut(CHUNK)
        .zip(ha.as_slice().par_chunks(CHUNK))
        .zip(hb.as_slice().par_chunks(CHUNK))
        .for_each(|((o, x), y)| lerp_scale(isa, o, x, y, t as f32, inv));
    Ok(Some(Tensor::from_vec(out, a.dims(), &Device::Cpu)?))
}

/// `x` clamped to `±lim`.
pub fn clamp(x: &Tensor, lim: f64) -> Result<Option<Tensor>> {
    let Some(h) = host_f32(x) else {
        return Ok(None);
    };
    let isa = cpu::isa();
    let mut out = h.as_slice().to_vec();
    out.par_chunks_mut(CHUNK)
        .for_each(|c| clamp_inplace(isa, c, lim as f32));
    Ok(Some(Tensor::from_vec(out, x.dims(), &Device::Cpu)?))
}

multiversion! {
    fn square_add(acc: &mut [f32], x: &[f32]) {
        let n = acc.len();
        let x = &x[..n];
        for i in 0..n {
            acc[i] += x[i] * x[i];
        }
    }
}

multiversion! {
    fn divide(out: &mut [f32], x: &[f32], d: &[f32]) {
        let n = out.len();
        let (x, d) = (&x[..n], &d[..n]);
        for i in 0..n {
            out[i] = x[i] / d[i];
        }
    }
}

multiversion! {
    fn scaled_silu(x: &mut [f32], scale: f32) {
        for v in x.iter_mut() {
            *v = math::silu(*v) * scale;
        }
    }
}

multiversion! {
    fn lerp_scale(out: &mut [f32], a: &[f32], b: &[f32], t: f32, inv: f32) {
        let n = out.len();
        let (a, b) = (&a[..n], &b[..n]);
        for i in 0..n {
            out[i] = (a[i] + (b[i] - a[i]) * t) * inv;
        }
    }
}

multiversion! {
    fn clamp_inplace(x: &mut [f32], lim: f32) {
        for v in x.iter_mut() {
            *v = v.max(-lim).min(lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Each fused pass against the candle ops it replaces (the generic path of the VAE).
    #[test]
    fn fused_passes_match_candle_ops() -> Result<()> {
        let dev = Device::Cpu;
        // (B, C, 3, M) as in the attention block, and more columns than one task takes
        for dims in [vec![2, 5, 3, 7], vec![1, 3, 1100]] {
            let x = (Tensor::randn(0f32, 3.0, dims.as_slice(), &dev)? + 0.5)?;
            let c = dims[1];
            let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?;
            let want = x.broadcast_div(&((norm * (1.0 / c as f64).sqrt())? + 1e-4)?)?;
            let got = pixel_norm(&x)?.unwrap();
            assert_eq!(got.dims(), x.dims());
            assert!(max_diff(&got, &want) < 1e-5, "pixel_norm {dims:?}");
            let want = (candle_nn::ops::silu(&x)? / 0.596)?;
            assert!(max_diff(&mp_silu(&x)?.unwrap(), &want) < 1e-5);
            let y = Tensor::randn(0f32, 1.0, dims.as_slice(), &dev)?;
            let want = ((&x + ((&y - &x)? * 0.3)?)? / (0.7f64 * 0.7 + 0.09).sqrt())?;
            assert!(max_diff(&mp_sum(&x, &y, 0.3)?.unwrap(), &want) < 1e-5);
            let big = (&x * 200.0)?;
            let want = big.clamp(-256.0, 256.0)?;
            assert_eq!(max_diff(&clamp(&big, 256.0)?.unwrap(), &want), 0.0);
        }
        // not applicable: f64 or strided inputs go the generic way
        let x = Tensor::ones((2, 3, 4), candle_core::DType::F64, &dev)?;
        assert!(pixel_norm(&x)?.is_none());
        let s = Tensor::ones((4, 3), candle_core::DType::F32, &dev)?.t()?;
        assert!(mp_silu(&s)?.is_none());
        Ok(())
    }
}
