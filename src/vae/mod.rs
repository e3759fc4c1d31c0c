//! MMAudio's mel VAE (`mmaudio/ext/autoencoder`, EDM2-style magnitude-preserving 1-D U-Net
//! without skips): decoder (latent → log-mel, used at inference) and encoder (log-mel →
//! diagonal Gaussian).
//!
//! * Every convolution is an `MPConv1D` without bias. The checkpoints store the raw weights;
//!   the official `remove_weight_norm()` is applied here at load time:
//!   w ← w / (‖w_o‖₂ + 1e−4·√fan_in) per output channel (fan_in = in·k), computed in f32 as the
//!   official code does. `conv_out` is further scaled by `1 + learnable_gain`.
//! * Res block: pixel norm x ← x / (1e−4 + ‖x‖_C/√C), h = conv2(mp_silu(conv1(mp_silu(x)))),
//!   out = mp_sum(skip(x), h, 0.3) where mp_sum(a, b, t) = lerp(a, b, t)/√((1−t)² + t²),
//!   mp_silu = silu/0.596 and skip is identity or the 1×1 `nin_shortcut`.
//! * Middle attention: 1 head; q/k/v = channels 0::3, 1::3, 2::3 of a 1×1 conv, each
//!   pixel-normed, softmax(qkᵀ/√C)v, 1×1 `proj_out`, mp_sum with t = 0.3.
//! * Activations are clamped to ±256 after every block; the decoder upsamples by repeating
//!   frames ×2 then a k3 conv; the encoder downsamples with 1×1 conv → avg-pool 2 → 1×1 conv.
//! * The decoder output is unnormalised with the fixed per-bin `data_mean` / `data_std`
//!   buffers of the state dict; the encoder input is normalised with them.
//!
//! Structure (fixed in the official code): ch_mult (1, 2, 4), 2 res blocks per level
//! (3 in the decoder), attention only in the middle, one ×2 resampling level.

mod fused;

use crate::error::{Error, Result};
use crate::vocoder::ops;
use candle_core::{D, DType, Device, Tensor};
use candle_nn::{Init, VarBuilder};
use std::path::Path;

/// Receives named intermediate tensors (names as in the parity fixtures).
pub type Hook<'a> = &'a mut dyn FnMut(&str, &Tensor);

const CH_MULT: [usize; 3] = [1, 2, 4];
const NUM_RES_BLOCKS: usize = 2;
/// Levels with a 2× resampling (`down_layers`); the decoder upsamples after level `i + 1`.
const DOWN_LAYERS: [usize; 1] = [0];
const CLIP_ACT: f64 = 256.0;
const KERNEL: usize = 3;

/// Constructor arguments of the official `VAE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VaeConfig {
    pub data_dim: usize,
    pub embed_dim: usize,
    pub hidden_dim: usize,
}

impl VaeConfig {
    /// `VAE_16k`: 80 mels, 20 latent channels, hidden 384 (`v1-16.pth`).
    pub fn vae_16k() -> Self {
        Self {
            data_dim: 80,
            embed_dim: 20,
            hidden_dim: 384,
        }
    }
    /// `VAE_44k`: 128 mels, 40 latent channels, hidden 512 (`v1-44.pth`).
    pub fn vae_44k() -> Self {
        Self {
            data_dim: 128,
            embed_dim: 40,
            hidden_dim: 512,
        }
    }
    pub fn for_mode(mode: crate::Mode) -> Self {
        match mode {
            crate::Mode::Khz16 => Self::vae_16k(),
            crate::Mode::Khz44 => Self::vae_44k(),
        }
    }
}

/// Which halves of the VAE to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaeParts {
    pub encoder: bool,
    pub decoder: bool,
}

impl VaeParts {
    pub const DECODER: Self = Self {
        encoder: false,
        decoder: true,
    };
    pub const ENCODER: Self = Self {
        encoder: true,
        decoder: false,
    };
    pub const BOTH: Self = Self {
        encoder: true,
        decoder: true,
    };
}

/// Form of the convolution weights in the state dict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaeWeights {
    /// As stored in the official checkpoints: normalised at load time.
    Raw,
    /// Already normalised (a state dict saved after `remove_weight_norm()`).
    Normalized,
}

/// `normalize(w)` then `/ √fan_in`, per output channel, in f32 (official `remove_weight_norm`).
pub fn mp_weight_normalize(w: &Tensor) -> Result<Tensor> {
    let w = w.to_dtype(DType::F32)?;
    let o = w.dim(0)?;
    let fan_in = w.elem_count() / o;
    let flat = w.reshape((o, fan_in))?;
    let norm = flat.sqr()?.sum_keepdim(1)?.sqrt()?;
    let alpha = (1.0 / fan_in as f64).sqrt();
    let denom = ((norm * alpha)? + 1e-4)?;
    let flat = flat.broadcast_div(&denom)?;
    let flat = (flat / (fan_in as f64).sqrt())?;
    Ok(flat.reshape(w.shape())?)
}

/// `MPConv1D` after weight normalisation: conv with padding k/2, no bias.
#[derive(Debug, Clone)]
struct MpConv1d {
    /// Weight used by the forward pass (normalised × gain).
    weight: ops::ConvWeight,
}

impl MpConv1d {
    fn load(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        form: VaeWeights,
        gain: Option<&Tensor>,
    ) -> Result<Self> {
        let raw = vb.get_with_hints_dtype(
            (cout, cin, k),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
            DType::F32,
        )?;
        let w = match form {
            VaeWeights::Raw => mp_weight_normalize(&raw)?,
            VaeWeights::Normalized => raw,
        };
        let w = match gain {
            Some(g) => w.broadcast_mul(g)?,
            None => w,
        };
        Ok(Self {
            // F(2,3): as accurate as a direct conv and the fastest for the VAE's short
            // sequences
            weight: ops::ConvWeight::with_winograd(
                w.to_dtype(vb.dtype())?,
                ops::ConvKind::Conv,
                2,
            )?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, k) = self.weight.dims()?;
        Ok(ops::conv1d(x, &self.weight, None, k / 2, 1)?)
    }
}

/// Pixel norm over channels (dim 1): x / (1e−4 + ‖x‖/√C), the norm taken in f32.
fn pixel_norm(x: &Tensor, dim: usize) -> Result<Tensor> {
    if dim == 1
        && let Some(y) = fused::pixel_norm(x)?
    {
        return Ok(y);
    }
    let c = x.dim(dim)?;
    let xf = x.to_dtype(DType::F32)?;
    let norm = xf.sqr()?.sum_keepdim(dim)?.sqrt()?;
    let denom = ((norm * (1.0 / c as f64).sqrt())? + 1e-4)?;
    Ok(xf.broadcast_div(&denom)?.to_dtype(x.dtype())?)
}

fn mp_silu(x: &Tensor) -> Result<Tensor> {
    if let Some(y) = fused::mp_silu(x)? {
        return Ok(y);
    }
    Ok((candle_nn::ops::silu(x)? / 0.596)?)
}

/// (a + t·(b − a)) / √((1−t)² + t²)
fn mp_sum(a: &Tensor, b: &Tensor, t: f64) -> Result<Tensor> {
    if let Some(y) = fused::mp_sum(a, b, t)? {
        return Ok(y);
    }
    let lerp = (a + ((b - a)? * t)?)?;
    Ok((lerp / ((1.0 - t) * (1.0 - t) + t * t).sqrt())?)
}

fn clamp_act(x: &Tensor) -> Result<Tensor> {
    if let Some(y) = fused::clamp(x, CLIP_ACT)? {
        return Ok(y);
    }
    Ok(x.clamp(-CLIP_ACT, CLIP_ACT)?)
}

#[derive(Debug, Clone)]
struct ResnetBlock1d {
    conv1: MpConv1d,
    conv2: MpConv1d,
    nin_shortcut: Option<MpConv1d>,
}

impl ResnetBlock1d {
    fn load(vb: VarBuilder, cin: usize, cout: usize, form: VaeWeights) -> Result<Self> {
        Ok(Self {
            conv1: MpConv1d::load(vb.pp("conv1"), cin, cout, KERNEL, form, None)?,
            conv2: MpConv1d::load(vb.pp("conv2"), cout, cout, KERNEL, form, None)?,
            nin_shortcut: if cin != cout {
                Some(MpConv1d::load(
                    vb.pp("nin_shortcut"),
                    cin,
                    cout,
                    1,
                    form,
                    None,
                )?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = pixel_norm(x, 1)?;
        let h = self.conv1.forward(&mp_silu(&x)?)?;
        let h = self.conv2.forward(&mp_silu(&h)?)?;
        let skip = match &self.nin_shortcut {
            Some(c) => c.forward(&x)?,
            None => x,
        };
        mp_sum(&skip, &h, 0.3)
    }
}

#[derive(Debug, Clone)]
struct AttnBlock1d {
    qkv: MpConv1d,
    proj_out: MpConv1d,
}

impl AttnBlock1d {
    fn load(vb: VarBuilder, c: usize, form: VaeWeights) -> Result<Self> {
        Ok(Self {
            qkv: MpConv1d::load(vb.pp("qkv"), c, 3 * c, 1, form, None)?,
            proj_out: MpConv1d::load(vb.pp("proj_out"), c, c, 1, form, None)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, l) = x.dims3()?;
        let y = self.qkv.forward(x)?.reshape((b, c, 3, l))?;
        // pixel norm over the channel dim of each of q, k, v
        let y = pixel_norm(&y, 1)?;
        let q = y
            .narrow(2, 0, 1)?
            .squeeze(2)?
            .transpose(1, 2)?
            .contiguous()?; // (b, l, c)
        let k = y.narrow(2, 1, 1)?.squeeze(2)?.contiguous()?; // (b, c, l)
        let v = y
            .narrow(2, 2, 1)?
            .squeeze(2)?
            .transpose(1, 2)?
            .contiguous()?; // (b, l, c)
        let scale = 1.0 / (c as f64).sqrt();
        let att = (q.matmul(&k)? * scale)?;
        let att =
            candle_nn::ops::softmax_last_dim(&att.to_dtype(DType::F32)?)?.to_dtype(v.dtype())?;
        let h = att.matmul(&v)?.transpose(1, 2)?.contiguous()?; // (b, c, l)
        let h = self.proj_out.forward(&h)?;
        mp_sum(x, &h, 0.3)
    }
}

#[derive(Debug, Clone)]
struct Mid {
    block_1: ResnetBlock1d,
    attn_1: AttnBlock1d,
    block_2: ResnetBlock1d,
}

impl Mid {
    fn load(vb: VarBuilder, c: usize, form: VaeWeights) -> Result<Self> {
        Ok(Self {
            block_1: ResnetBlock1d::load(vb.pp("block_1"), c, c, form)?,
            attn_1: AttnBlock1d::load(vb.pp("attn_1"), c, form)?,
            block_2: ResnetBlock1d::load(vb.pp("block_2"), c, c, form)?,
        })
    }

    fn forward(&self, x: &Tensor, prefix: &str, hook: &mut Option<Hook>) -> Result<Tensor> {
        let h = self.block_1.forward(x)?;
        report(hook, &format!("{prefix}.mid.block_1_out"), &h);
        let h = self.attn_1.forward(&h)?;
        report(hook, &format!("{prefix}.mid.attn_1_out"), &h);
        let h = self.block_2.forward(&h)?;
        report(hook, &format!("{prefix}.mid.block_2_out"), &h);
        clamp_act(&h)
    }
}

fn report(hook: &mut Option<Hook>, name: &str, t: &Tensor) {
    if let Some(h) = hook {
        h(name, t)
    }
}

/// One encoder level: res blocks and the optional downsampler (conv1, avg-pool, conv2).
type DownLevel = (Vec<ResnetBlock1d>, Option<(MpConv1d, MpConv1d)>);

/// `Encoder1D`.
#[derive(Debug, Clone)]
struct Encoder1d {
    conv_in: MpConv1d,
    down: Vec<DownLevel>,
    mid: Mid,
    conv_out: MpConv1d,
}

impl Encoder1d {
    fn load(vb: VarBuilder, cfg: &VaeConfig, form: VaeWeights) -> Result<Self> {
        let dim = cfg.hidden_dim;
        let conv_in = MpConv1d::load(vb.pp("conv_in"), cfg.data_dim, dim, KERNEL, form, None)?;
        let mut down = Vec::new();
        let mut block_in = dim;
        for (i, &mult) in CH_MULT.iter().enumerate() {
            let vbl = vb.pp("down").pp(i);
            let block_out = dim * mult;
            let mut blocks = Vec::new();
            for j in 0..NUM_RES_BLOCKS {
                blocks.push(ResnetBlock1d::load(
                    vbl.pp("block").pp(j),
                    block_in,
                    block_out,
                    form,
                )?);
                block_in = block_out;
            }
            let ds = if DOWN_LAYERS.contains(&i) {
                let vd = vbl.pp("downsample");
                Some((
                    MpConv1d::load(vd.pp("conv1"), block_in, block_in, 1, form, None)?,
                    MpConv1d::load(vd.pp("conv2"), block_in, block_in, 1, form, None)?,
                ))
            } else {
                None
            };
            down.push((blocks, ds));
        }
        let mid = Mid::load(vb.pp("mid"), block_in, form)?;
        let gain = learnable_gain(&vb)?;
        let conv_out = MpConv1d::load(
            vb.pp("conv_out"),
            block_in,
            2 * cfg.embed_dim,
            KERNEL,
            form,
            Some(&gain),
        )?;
        Ok(Self {
            conv_in,
            down,
            mid,
            conv_out,
        })
    }

    fn forward(&self, x: &Tensor, hook: &mut Option<Hook>) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        report(hook, "encoder.conv_in_out", &h);
        for (i, (blocks, ds)) in self.down.iter().enumerate() {
            for b in blocks {
                h = clamp_act(&b.forward(&h)?)?;
            }
            if let Some((c1, c2)) = ds {
                let y = c1.forward(&h)?;
                let (bsz, c, l) = y.dims3()?;
                let y = y
                    .narrow(2, 0, (l / 2) * 2)?
                    .reshape((bsz, c, l / 2, 2))?
                    .mean(D::Minus1)?;
                h = c2.forward(&y)?;
                report(hook, &format!("encoder.down.{i}.downsample_out"), &h);
            }
        }
        let h = self.mid.forward(&h, "encoder", hook)?;
        self.conv_out.forward(&mp_silu(&h)?)
    }
}

fn learnable_gain(vb: &VarBuilder) -> Result<Tensor> {
    let g = vb.get_with_hints_dtype((), "learnable_gain", Init::Const(0.0), DType::F32)?;
    Ok((g + 1.0)?)
}

/// `Decoder1D`.
#[derive(Debug, Clone)]
struct Decoder1d {
    conv_in: MpConv1d,
    mid: Mid,
    /// index = level; applied in reverse order. (blocks, optional upsample conv)
    up: Vec<(Vec<ResnetBlock1d>, Option<MpConv1d>)>,
    conv_out: MpConv1d,
}

impl Decoder1d {
    fn load(vb: VarBuilder, cfg: &VaeConfig, form: VaeWeights) -> Result<Self> {
        let dim = cfg.hidden_dim;
        let mut block_in = dim * CH_MULT[CH_MULT.len() - 1];
        let conv_in = MpConv1d::load(
            vb.pp("conv_in"),
            cfg.embed_dim,
            block_in,
            KERNEL,
            form,
            None,
        )?;
        let mid = Mid::load(vb.pp("mid"), block_in, form)?;
        let mut up: Vec<(Vec<ResnetBlock1d>, Option<MpConv1d>)> = Vec::new();
        for i in (0..CH_MULT.len()).rev() {
            let vbl = vb.pp("up").pp(i);
            let block_out = dim * CH_MULT[i];
            let mut blocks = Vec::new();
            for j in 0..NUM_RES_BLOCKS + 1 {
                blocks.push(ResnetBlock1d::load(
                    vbl.pp("block").pp(j),
                    block_in,
                    block_out,
                    form,
                )?);
                block_in = block_out;
            }
            let upsample = if DOWN_LAYERS.iter().any(|&d| d + 1 == i) {
                Some(MpConv1d::load(
                    vbl.pp("upsample").pp("conv"),
                    block_in,
                    block_in,
                    KERNEL,
                    form,
                    None,
                )?)
            } else {
                None
            };
            up.insert(0, (blocks, upsample));
        }
        let gain = learnable_gain(&vb)?;
        let conv_out = MpConv1d::load(
            vb.pp("conv_out"),
            block_in,
            cfg.data_dim,
            KERNEL,
            form,
            Some(&gain),
        )?;
        Ok(Self {
            conv_in,
            mid,
            up,
            conv_out,
        })
    }

    fn forward(&self, z: &Tensor, hook: &mut Option<Hook>) -> Result<Tensor> {
        let h = self.conv_in.forward(z)?;
        report(hook, "decoder.conv_in_out", &h);
        let mut h = self.mid.forward(&h, "decoder", hook)?;
        for (i, (blocks, upsample)) in self.up.iter().enumerate().rev() {
            let n = blocks.len();
            for (j, b) in blocks.iter().enumerate() {
                let y = b.forward(&h)?;
                if j + 1 == n {
                    report(hook, &format!("decoder.up.{i}.last_block_out"), &y);
                }
                h = clamp_act(&y)?;
            }
            if let Some(conv) = upsample {
                // nearest-exact ×2 = every frame twice
                let (b, c, l) = h.dims3()?;
                let rep = h
                    .unsqueeze(3)?
                    .broadcast_as((b, c, l, 2))?
                    .reshape((b, c, 2 * l))?;
                h = conv.forward(&rep)?;
                report(hook, &format!("decoder.up.{i}.upsample_out"), &h);
            }
        }
        let h = self.conv_out.forward(&mp_silu(&h)?)?;
        report(hook, "decoder.conv_out_out", &h);
        Ok(h)
    }
}

/// The encoder's output distribution (`DiagonalGaussianDistribution`).
#[derive(Debug, Clone)]
pub struct Posterior {
    /// (B, 2·embed_dim, T/2): mean and (unclamped) logvar concatenated on channels.
    pub moments: Tensor,
    pub mean: Tensor,
    /// Clamped to [−30, 20].
    pub logvar: Tensor,
    /// exp(logvar / 2).
    pub std: Tensor,
}

/// The mel VAE.
#[derive(Debug, Clone)]
pub struct Vae {
    cfg: VaeConfig,
    encoder: Option<Encoder1d>,
    decoder: Option<Decoder1d>,
    /// (1, data_dim, 1), f32
    data_mean: Tensor,
    data_std: Tensor,
}

impl Vae {
    /// Build from a `VarBuilder` rooted at the VAE state dict (official key names).
    pub fn new(cfg: &VaeConfig, vb: VarBuilder, parts: VaeParts, form: VaeWeights) -> Result<Self> {
        if !parts.encoder && !parts.decoder {
            return Err(Error::config(
                "VAE: build at least the encoder or the decoder",
            ));
        }
        if cfg.hidden_dim == 0 || cfg.embed_dim == 0 || cfg.data_dim == 0 {
            return Err(Error::config(format!("VAE: invalid sizes {cfg:?}")));
        }
        let buf = |name: &str, default: f32| -> Result<Tensor> {
            Ok(vb.get_with_hints_dtype(
                (1, cfg.data_dim, 1),
                name,
                Init::Const(default as f64),
                DType::F32,
            )?)
        };
        let data_mean = buf("data_mean", 0.0)?;
        let data_std = buf("data_std", 1.0)?;
        let encoder = if parts.encoder {
            Some(Encoder1d::load(vb.pp("encoder"), cfg, form)?)
        } else {
            None
        };
        let decoder = if parts.decoder {
            Some(Decoder1d::load(vb.pp("decoder"), cfg, form)?)
        } else {
            None
        };
        Ok(Self {
            cfg: *cfg,
            encoder,
            decoder,
            data_mean,
            data_std,
        })
    }

    /// Load an official checkpoint (`v1-16.pth` / `v1-44.pth`) or a safetensors file with the
    /// same keys. Strict: unknown tensors are an error; the encoder's tensors are accepted and
    /// skipped when only the decoder is built (and vice versa).
    pub fn load(
        cfg: &VaeConfig,
        path: &Path,
        parts: VaeParts,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let wf = std::sync::Arc::new(crate::weights::WeightFile::open(path)?);
        if let Some(shape) = wf.shape("decoder.conv_out.weight")
            && shape.first() != Some(&cfg.data_dim)
        {
            return Err(Error::WrongModel {
                path: path.to_owned(),
                reason: format!(
                    "this VAE produces {:?} mel bins, expected {} (16k/44k mix-up?)",
                    shape.first(),
                    cfg.data_dim
                ),
            });
        }
        let vae = Self::new(cfg, wf.var_builder(dtype, device), parts, VaeWeights::Raw)?;
        wf.check_all_used("the MMAudio VAE", |k| {
            (!parts.encoder && k.starts_with("encoder."))
                || (!parts.decoder && k.starts_with("decoder."))
        })?;
        Ok(vae)
    }

    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// z (B, embed_dim, N) → log-mel (B, data_dim, 2N), unnormalised (official `VAE.decode`).
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.decode_impl(z, None)
    }

    pub fn decode_with_hook(&self, z: &Tensor, hook: Hook) -> Result<Tensor> {
        self.decode_impl(z, Some(hook))
    }

    fn decode_impl(&self, z: &Tensor, mut hook: Option<Hook>) -> Result<Tensor> {
        let dec = self
            .decoder
            .as_ref()
            .ok_or_else(|| Error::config("VAE decoder was not loaded"))?;
        let (_, c, n) = z.dims3()?;
        if c != self.cfg.embed_dim {
            return Err(Error::input(format!(
                "VAE decoder expects {} latent channels, got {c}",
                self.cfg.embed_dim
            )));
        }
        if n == 0 {
            return Err(Error::input("VAE decoder: empty latent sequence"));
        }
        let dtype = dec.conv_in.weight.dtype();
        let h = dec.forward(&z.to_dtype(dtype)?, &mut hook)?;
        let h = h.to_dtype(DType::F32)?;
        Ok(h.broadcast_mul(&self.data_std)?
            .broadcast_add(&self.data_mean)?)
    }

    /// log-mel (B, data_dim, T) → posterior over (B, embed_dim, T/2) (official `VAE.encode`
    /// with `normalize=True`). T must be even.
    pub fn encode(&self, mel: &Tensor) -> Result<Posterior> {
        self.encode_impl(mel, None)
    }

    pub fn encode_with_hook(&self, mel: &Tensor, hook: Hook) -> Result<Posterior> {
        self.encode_impl(mel, Some(hook))
    }

    fn encode_impl(&self, mel: &Tensor, mut hook: Option<Hook>) -> Result<Posterior> {
        let enc = self
            .encoder
            .as_ref()
            .ok_or_else(|| Error::config("VAE encoder was not loaded"))?;
        let (_, c, t) = mel.dims3()?;
        if c != self.cfg.data_dim {
            return Err(Error::input(format!(
                "VAE encoder expects {} mel bins, got {c}",
                self.cfg.data_dim
            )));
        }
        if t < 2 {
            return Err(Error::input(format!(
                "VAE encoder: mel too short ({t} frames)"
            )));
        }
        let x = mel
            .to_dtype(DType::F32)?
            .broadcast_sub(&self.data_mean)?
            .broadcast_div(&self.data_std)?;
        let dtype = enc.conv_in.weight.dtype();
        let moments = enc
            .forward(&x.to_dtype(dtype)?, &mut hook)?
            .to_dtype(DType::F32)?;
        let e = self.cfg.embed_dim;
        let mean = moments.narrow(1, 0, e)?;
        let logvar = moments.narrow(1, e, e)?.clamp(-30f32, 20f32)?;
        let std = (&logvar * 0.5)?.exp()?;
        Ok(Posterior {
            moments,
            mean,
            logvar,
            std,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::{WeightFile, write_pth};
    use candle_nn::VarMap;
    use std::collections::HashMap;
    use std::sync::Arc;

    const TINY: VaeConfig = VaeConfig {
        data_dim: 10,
        embed_dim: 4,
        hidden_dim: 8,
    };

    fn random_state() -> Vec<(String, Tensor)> {
        let vm = VarMap::new();
        Vae::new(
            &TINY,
            VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
            VaeParts::BOTH,
            VaeWeights::Raw,
        )
        .unwrap();
        let mut sd: Vec<(String, Tensor)> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let t = v.as_tensor().clone();
                // deterministic values (candle's CPU RNG cannot be seeded)
                let seed = k
                    .bytes()
                    .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
                let t = if t.rank() == 3 {
                    crate::rng::Rng::new(seed)
                        .randn(t.dims(), &Device::Cpu)
                        .unwrap()
                } else {
                    t
                };
                // non-trivial gains and normalisation constants
                let t = match k.as_str() {
                    "decoder.learnable_gain" | "encoder.learnable_gain" => (t + 0.25).unwrap(),
                    "data_std" => (t * 2.0).unwrap(),
                    "data_mean" => (t - 3.0).unwrap(),
                    _ => t,
                };
                (k.clone(), t)
            })
            .collect();
        sd.sort_by(|a, b| a.0.cmp(&b.0));
        sd
    }

    fn build(sd: &[(String, Tensor)], parts: VaeParts) -> Result<Vae> {
        let wf = Arc::new(WeightFile::from_tensors(
            "mem",
            sd.iter().cloned().collect::<HashMap<_, _>>(),
        ));
        let v = Vae::new(
            &TINY,
            wf.var_builder(DType::F32, &Device::Cpu),
            parts,
            VaeWeights::Raw,
        )?;
        wf.check_all_used("the VAE", |k| {
            (!parts.encoder && k.starts_with("encoder."))
                || (!parts.decoder && k.starts_with("decoder."))
        })?;
        Ok(v)
    }

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

    #[test]
    fn mp_normalization_formula() {
        let w = Tensor::new(&[[[3f32, 4.0]], [[0.0, 0.0]]], &Device::Cpu).unwrap();
        let n = mp_weight_normalize(&w)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // fan_in 2: w / (‖w‖ + 1e-4·√2)
        let d = 5.0 + 1e-4 * 2f64.sqrt();
        assert!((n[0] as f64 - 3.0 / d).abs() < 1e-6 && (n[1] as f64 - 4.0 / d).abs() < 1e-6);
        assert_eq!(&n[2..], &[0.0, 0.0]);
    }

    #[test]
    fn shapes_batches_and_pth_round_trip() {
        let sd = random_state();
        let vae = build(&sd, VaeParts::BOTH).unwrap();
        let z = Tensor::randn(0f32, 1.0, (2, 4, 9), &Device::Cpu).unwrap();
        let mel = vae.decode(&z).unwrap();
        assert_eq!(mel.dims(), &[2, 10, 18]);
        for i in 0..2 {
            let one = vae.decode(&z.narrow(0, i, 1).unwrap()).unwrap();
            assert!(max_diff(&one, &mel.narrow(0, i, 1).unwrap()) < 1e-5);
        }
        let post = vae.encode(&mel).unwrap();
        assert_eq!(post.moments.dims(), &[2, 8, 9]);
        assert_eq!(post.mean.dims(), &[2, 4, 9]);
        let one = vae.encode(&mel.narrow(0, 1, 1).unwrap()).unwrap();
        assert!(max_diff(&one.moments, &post.moments.narrow(0, 1, 1).unwrap()) < 1e-5);

        // the official .pth layout: a flat state dict
        let dir = std::env::temp_dir().join(format!("mmaudio-vae-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("v1-tiny.pth");
        write_pth(&p, &sd, None).unwrap();
        let dec = Vae::load(&TINY, &p, VaeParts::DECODER, DType::F32, &Device::Cpu).unwrap();
        let wrong = Vae::load(
            &VaeConfig {
                data_dim: 12,
                ..TINY
            },
            &p,
            VaeParts::DECODER,
            DType::F32,
            &Device::Cpu,
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(max_diff(&dec.decode(&z).unwrap(), &mel) < 1e-5);
        let e = wrong.unwrap_err().to_string();
        assert!(e.contains("mel bins"), "{e}");
        assert!(
            dec.encode(&mel)
                .unwrap_err()
                .to_string()
                .contains("encoder was not loaded")
        );
    }

    #[test]
    fn normalized_state_dict_loads_as_is() {
        let sd = random_state();
        let vae = build(&sd, VaeParts::DECODER).unwrap();
        let eff: HashMap<String, Tensor> = sd
            .iter()
            .map(|(k, t)| {
                let t = if k.ends_with(".weight") && t.rank() == 3 {
                    mp_weight_normalize(t).unwrap()
                } else {
                    t.clone()
                };
                (k.clone(), t)
            })
            .collect();
        let wf = Arc::new(WeightFile::from_tensors("mem", eff));
        let v2 = Vae::new(
            &TINY,
            wf.var_builder(DType::F32, &Device::Cpu),
            VaeParts::DECODER,
            VaeWeights::Normalized,
        )
        .unwrap();
        let z = Tensor::randn(0f32, 1.0, (1, 4, 5), &Device::Cpu).unwrap();
        assert!(max_diff(&v2.decode(&z).unwrap(), &vae.decode(&z).unwrap()) < 1e-5);
    }

    #[test]
    fn strict_loading_and_input_checks() {
        let mut sd = random_state();
        sd.push((
            "decoder.extra.weight".into(),
            Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
        ));
        let e = build(&sd, VaeParts::DECODER).unwrap_err().to_string();
        assert!(e.contains("decoder.extra.weight"), "{e}");
        sd.pop();
        // encoder tensors are fine when only the decoder is built
        let vae = build(&sd, VaeParts::DECODER).unwrap();
        let z = Tensor::zeros((1, 5, 3), DType::F32, &Device::Cpu).unwrap();
        let e = vae.decode(&z).unwrap_err().to_string();
        assert!(e.contains("4 latent channels"), "{e}");
    }

    #[test]
    fn half_precision_decodes_close_to_f32() {
        let sd = random_state();
        let vae = build(&sd, VaeParts::DECODER).unwrap();
        let z = crate::rng::Rng::new(3)
            .randn(&[1, 4, 6], &Device::Cpu)
            .unwrap();
        let want = vae.decode(&z).unwrap();
        for dt in [DType::F16, DType::BF16] {
            let wf = Arc::new(WeightFile::from_tensors(
                "mem",
                sd.iter().cloned().collect::<HashMap<_, _>>(),
            ));
            let v = Vae::new(
                &TINY,
                wf.var_builder(dt, &Device::Cpu),
                VaeParts::DECODER,
                VaeWeights::Raw,
            )
            .unwrap();
            let got = v.decode(&z).unwrap();
            assert_eq!(got.dtype(), DType::F32);
            // relative rms error (half precision through ~20 layers)
            let rms = |t: &Tensor| t.sqr().unwrap().mean_all().unwrap().sqrt().unwrap();
            let e = rms(&(&got - &want).unwrap()).to_scalar::<f32>().unwrap();
            let scale = rms(&want).to_scalar::<f32>().unwrap();
            let rel = if dt == DType::BF16 { 2e-2 } else { 5e-3 };
            assert!(
                e < rel * scale,
                "{dt:?}: rms error {e} (signal rms {scale})"
            );
        }
    }
}
