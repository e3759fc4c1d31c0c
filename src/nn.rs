//! Shared layers, laid out for speed on channel-last `(B, N, C)` data.
//!
//! Weights are loaded under the official key names, then re-arranged once at load time into
//! the layout the forward pass wants (transposed, unfolded, fused), so no step of the sampler
//! pays for a transpose:
//! * [`Linear`] keeps `Wᵀ` `(in, out)` and flattens leading dims into one matmul.
//! * [`ChannelLastConv1d`] is the official `ChannelLastConv1d` (a `Conv1d` applied to
//!   `(B, N, C)`), computed as an im2col along time — `k` shifted views concatenated on the
//!   channel axis — and a single matmul with the weight unfolded to `(k·in, out)`.
//! * [`SwiGlu`] is the official `MLP`/`ConvMLP` (`w2(silu(w1 x) ⊙ w3 x)`) with `w1` and `w3`
//!   fused into one matmul.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `y = x Wᵀ + b` over the last dimension of a tensor of any rank.
#[derive(Debug, Clone)]
pub struct Linear {
    w_t: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let w = vb.get((out_dim, in_dim), "weight")?;
        let b = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Self::from_weights(&w, b)
    }

    /// From an official `(out, in)` weight.
    pub fn from_weights(w: &Tensor, b: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            w_t: w.t()?.contiguous()?,
            b,
        })
    }

    /// From a weight already in the `(in, out)` layout (e.g. a view into a fused matrix).
    pub fn from_transposed(w_t: Tensor, b: Option<Tensor>) -> Self {
        Self { w_t, b }
    }

    pub fn out_dim(&self) -> usize {
        self.w_t.dim(1).unwrap_or(0)
    }

    /// `Wᵀ`, `(in, out)`.
    pub fn weight_t(&self) -> &Tensor {
        &self.w_t
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.b.as_ref()
    }
}

/// Matmul over the last dim of `x` with a `(in, out)` matrix, flattening leading dims.
pub fn matmul_last(x: &Tensor, w_t: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let in_dim = *dims.last().unwrap();
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let y = x.reshape((rows, in_dim))?.matmul(w_t)?;
    let mut out = dims.to_vec();
    *out.last_mut().unwrap() = w_t.dim(1)?;
    y.reshape(out)
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = crate::ops::linear_cpu(x, &self.w_t, self.b.as_ref())? {
            return Ok(y);
        }
        let y = matmul_last(&x.contiguous()?, &self.w_t)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// im2col along time for channel-last data: `(B, N, C)` → `(B, N_out, k·C)` with zero padding
/// `pad` on both sides and stride 1; position `t` holds `[x[t−pad], …, x[t−pad+k−1]]`.
pub fn unfold_time(x: &Tensor, k: usize, pad: usize) -> Result<Tensor> {
    crate::ops::im2col_time(x, k, pad)
}

/// The official `ChannelLastConv1d` (stride 1, "same"-style padding).
#[derive(Debug, Clone)]
pub struct ChannelLastConv1d {
    w: ConvW,
    b: Option<Tensor>,
    k: usize,
    pad: usize,
}

/// The weight of a channel-last convolution in the layout its forward pass uses.
#[derive(Debug, Clone)]
enum ConvW {
    /// `(k·in, out)`: row `j·in + c` is the official `weight[:, c, j]` (im2col + one matmul),
    /// with the generic im2col's per-shape index and padding.
    Im2col(Tensor, crate::ops::Im2colCache),
    /// Winograd F(m, 3) form `(α, in, out)` (k = 3, padding 1, CPU f32).
    Wino(Tensor, usize),
}

impl ConvW {
    /// From an official `(out, in, k)` weight: Winograd where the fast CPU path applies.
    fn new(w: &Tensor, pad: usize) -> Result<Self> {
        let (out_dim, in_dim, k) = w.dims3()?;
        let m = crate::ops::net_winograd_tile();
        if k == 3 && pad == 1 && m > 0 && crate::ops::fast_cpu_path(w.device(), w.dtype()) {
            return Ok(ConvW::Wino(crate::ops::winograd3_weight(w, m)?, m));
        }
        Ok(ConvW::Im2col(
            w.permute((2, 1, 0))?
                .reshape((k * in_dim, out_dim))?
                .contiguous()?,
            Default::default(),
        ))
    }
}

/// Channel-last k-tap convolution with a prepared weight.
fn conv_cl(x: &Tensor, w: &ConvW, k: usize, pad: usize) -> Result<Tensor> {
    match w {
        ConvW::Im2col(w, cache) => {
            let cols = if crate::ops::fast_cpu_path(x.device(), x.dtype()) {
                unfold_time(x, k, pad)?
            } else {
                crate::ops::im2col_time_generic(x, k, pad, cache)?
            };
            matmul_last(&cols, w)
        }
        ConvW::Wino(u, m) => match crate::ops::winograd3_cl(&x.contiguous()?, u, *m)? {
            Some(y) => Ok(y),
            None => candle_core::bail!(
                "Winograd weights need contiguous f32 CPU inputs, got {:?} on {:?}",
                x.dtype(),
                x.device()
            ),
        },
    }
}

impl ChannelLastConv1d {
    pub fn load(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        k: usize,
        pad: usize,
        bias: bool,
    ) -> Result<Self> {
        let w = vb.get((out_dim, in_dim, k), "weight")?;
        let b = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Self::from_weights(&w, b, pad)
    }

    /// From an official `(out, in, k)` weight.
    pub fn from_weights(w: &Tensor, b: Option<Tensor>, pad: usize) -> Result<Self> {
        let k = w.dim(2)?;
        Ok(Self {
            w: ConvW::new(w, pad)?,
            b,
            k,
            pad,
        })
    }
}

impl Module for ChannelLastConv1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = conv_cl(x, &self.w, self.k, self.pad)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// SwiGLU feed-forward (`MLP` when `k == 1`, `ConvMLP` otherwise), no biases.
#[derive(Debug, Clone)]
pub struct SwiGlu {
    /// `[w1 | w3]`: `in → 2·hidden`.
    w13: ConvW,
    /// `hidden → out`
    w2: ConvW,
    hidden: usize,
    k: usize,
    pad: usize,
}

impl SwiGlu {
    /// `hidden` is the already-rounded SwiGLU width (see [`crate::config::swiglu_hidden`]).
    pub fn load(vb: VarBuilder, dim: usize, hidden: usize, k: usize, pad: usize) -> Result<Self> {
        let get = |name: &str, o: usize, i: usize| -> Result<Tensor> {
            if k == 1 {
                vb.pp(name).get((o, i), "weight")?.unsqueeze(2)
            } else {
                vb.pp(name).get((o, i, k), "weight")
            }
        };
        let w1 = get("w1", hidden, dim)?;
        let w2 = get("w2", dim, hidden)?;
        let w3 = get("w3", hidden, dim)?;
        Ok(Self {
            w13: ConvW::new(&Tensor::cat(&[&w1, &w3], 0)?, pad)?,
            w2: ConvW::new(&w2, pad)?,
            hidden,
            k,
            pad,
        })
    }
}

impl Module for SwiGlu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = conv_cl(x, &self.w13, self.k, self.pad)?;
        let h = crate::ops::swiglu_gate(&h, self.hidden)?;
        conv_cl(&h, &self.w2, self.k, self.pad)
    }
}

/// LayerNorm over the last dim without affine parameters (`elementwise_affine=False`),
/// computed stably on every device (see [`crate::ops::CenteredNorm`]).
#[derive(Debug, Clone)]
pub struct LayerNormNoAffine(crate::ops::CenteredNorm);

impl LayerNormNoAffine {
    pub fn new(dim: usize, eps: f32, dtype: DType, device: &candle_core::Device) -> Result<Self> {
        Ok(Self(crate::ops::CenteredNorm::new(
            dim, eps, dtype, device,
        )?))
    }
}

impl Module for LayerNormNoAffine {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.0.forward(x)
    }
}

/// `torch.nn.SELU`.
pub fn selu(x: &Tensor) -> Result<Tensor> {
    const ALPHA: f64 = 1.673_263_242_354_377_3;
    const SCALE: f64 = 1.050_700_987_355_480_5;
    x.elu(ALPHA)? * SCALE
}

/// Machine epsilon of a dtype, as `torch.finfo(dtype).eps` (the default eps of `nn.RMSNorm`).
pub fn finfo_eps(dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => 0.0078125,
        DType::F16 => 0.000_976_562_5,
        _ => f32::EPSILON,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn conv_matches_candle_conv1d() -> Result<()> {
        let dev = Device::Cpu;
        let (b, n, cin, cout, k, pad) = (2, 11, 5, 7, 3, 1);
        let x = Tensor::randn(0f32, 1., (b, n, cin), &dev)?;
        let w = Tensor::randn(0f32, 1., (cout, cin, k), &dev)?;
        let bias = Tensor::randn(0f32, 1., cout, &dev)?;
        let ours = ChannelLastConv1d::from_weights(&w, Some(bias.clone()), pad)?.forward(&x)?;
        let reference = x
            .transpose(1, 2)?
            .contiguous()?
            .conv1d(&w, pad, 1, 1, 1)?
            .broadcast_add(&bias.reshape((1, cout, 1))?)?
            .transpose(1, 2)?;
        let diff = (ours - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "diff {diff}");
        // k = 7, pad = 3 keeps the length
        let w7 = Tensor::randn(0f32, 1., (cout, cin, 7), &dev)?;
        let y = ChannelLastConv1d::from_weights(&w7, None, 3)?.forward(&x)?;
        assert_eq!(y.dims(), &[b, n, cout]);
        Ok(())
    }
}
