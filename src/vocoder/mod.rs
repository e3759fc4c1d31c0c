//! BigVGAN vocoders (mel → waveform): MMAudio's 16 kHz BigVGAN (`mmaudio/ext/bigvgan`) and
//! NVIDIA's BigVGAN-v2 44.1 kHz 128-band 512× (`mmaudio/ext/bigvgan_v2`).
//!
//! Both share one structure, selected by [`BigVganConfig`]:
//! `conv_pre` (k7) → for each stage i: `ups.i.0` (ConvTranspose1d, stride uᵢ, kernel kᵢ,
//! padding (kᵢ − uᵢ)/2) → mean of `num_kernels` AMP blocks (`resblocks.{i·n + j}`) →
//! `activation_post` (anti-aliased Snake/SnakeBeta) → `conv_post` (k7, bias unless
//! `use_bias_at_final = false`) → tanh (or clamp to [−1, 1] when `use_tanh_at_final = false`).
//!
//! AMP block (`AMPBlock1`): for each dilation d: x += c2(a₂(c1_d(a₁(x)))) with the
//! anti-aliased activations `activations.{2j, 2j+1}`.
//!
//! Checkpoints load in any of the forms they ship in: plain `weight` (after
//! `remove_weight_norm`), legacy weight norm `weight_g`/`weight_v`, or the parametrization form
//! `parametrizations.weight.original0/original1`; the weight norm is folded at load time
//! (w = g·v/‖v‖, norm over every dim but 0 — for ConvTranspose1d dim 0 is the input channel).
//! The Kaiser-sinc filters are read from the checkpoint buffers when present and computed
//! otherwise.

pub mod ops;

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder};
use ops::{AntiAliasAct, SnakeParams};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Hyper-parameters of a BigVGAN generator (the keys of the official yml / `config.json`;
/// unknown keys such as training settings are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BigVganConfig {
    pub resblock: String,
    pub num_mels: usize,
    pub upsample_rates: Vec<usize>,
    pub upsample_kernel_sizes: Vec<usize>,
    pub upsample_initial_channel: usize,
    pub resblock_kernel_sizes: Vec<usize>,
    pub resblock_dilation_sizes: Vec<Vec<usize>>,
    pub activation: String,
    pub snake_logscale: bool,
    /// v2 only; the v1 model always has a bias and a final tanh.
    #[serde(default = "default_true")]
    pub use_tanh_at_final: bool,
    #[serde(default = "default_true")]
    pub use_bias_at_final: bool,
}

fn default_true() -> bool {
    true
}

impl BigVganConfig {
    /// MMAudio's 16 kHz vocoder: `mmaudio/ext/bigvgan/bigvgan_vocoder.yml`.
    pub fn mmaudio_16k() -> Self {
        Self {
            resblock: "1".into(),
            num_mels: 80,
            upsample_rates: vec![4, 4, 2, 2, 2, 2],
            upsample_kernel_sizes: vec![8, 8, 4, 4, 4, 4],
            upsample_initial_channel: 1536,
            resblock_kernel_sizes: vec![3, 7, 11],
            resblock_dilation_sizes: vec![vec![1, 3, 5]; 3],
            activation: "snakebeta".into(),
            snake_logscale: true,
            use_tanh_at_final: true,
            use_bias_at_final: true,
        }
    }

    /// `nvidia/bigvgan_v2_44khz_128band_512x` (`config.json` of the Hugging Face repo).
    pub fn bigvgan_v2_44k() -> Self {
        Self {
            resblock: "1".into(),
            num_mels: 128,
            upsample_rates: vec![8, 4, 2, 2, 2, 2],
            upsample_kernel_sizes: vec![16, 8, 4, 4, 4, 4],
            upsample_initial_channel: 1536,
            resblock_kernel_sizes: vec![3, 7, 11],
            resblock_dilation_sizes: vec![vec![1, 3, 5]; 3],
            activation: "snakebeta".into(),
            snake_logscale: true,
            use_tanh_at_final: false,
            use_bias_at_final: false,
        }
    }

    /// The official vocoder of an audio mode.
    pub fn for_mode(mode: crate::Mode) -> Self {
        match mode {
            crate::Mode::Khz16 => Self::mmaudio_16k(),
            crate::Mode::Khz44 => Self::bigvgan_v2_44k(),
        }
    }

    /// Parse a BigVGAN `config.json` (or any JSON object with these keys).
    pub fn from_json_str(s: &str) -> Result<Self> {
        let c: Self = serde_json::from_str(s)
            .map_err(|e| Error::config(format!("invalid BigVGAN config: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    pub fn from_json_file(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path).map_err(|e| Error::WeightFile {
            path: path.to_owned(),
            reason: format!("cannot read BigVGAN config: {e}"),
        })?;
        Self::from_json_str(&s).map_err(|e| Error::config(format!("{}: {e}", path.display())))
    }

    /// Samples per mel frame: the product of the upsample rates.
    pub fn hop_length(&self) -> usize {
        self.upsample_rates.iter().product()
    }

    pub fn validate(&self) -> Result<()> {
        if self.resblock != "1" {
            return Err(Error::config(format!(
                "BigVGAN resblock type `{}` is not supported (the official checkpoints use \"1\")",
                self.resblock
            )));
        }
        if self.activation != "snake" && self.activation != "snakebeta" {
            return Err(Error::config(format!(
                "BigVGAN activation `{}` is not supported (snake or snakebeta)",
                self.activation
            )));
        }
        if self.upsample_rates.is_empty()
            || self.upsample_rates.len() != self.upsample_kernel_sizes.len()
        {
            return Err(Error::config(
                "BigVGAN: upsample_rates and upsample_kernel_sizes must be non-empty and of equal length",
            ));
        }
        for (&u, &k) in self.upsample_rates.iter().zip(&self.upsample_kernel_sizes) {
            if u == 0 || k < u || (k - u) % 2 != 0 {
                return Err(Error::config(format!(
                    "BigVGAN: upsample kernel {k} / rate {u} must satisfy k >= u and k - u even"
                )));
            }
        }
        if self.resblock_kernel_sizes.is_empty()
            || self.resblock_kernel_sizes.len() != self.resblock_dilation_sizes.len()
        {
            return Err(Error::config(
                "BigVGAN: resblock_kernel_sizes and resblock_dilation_sizes must be non-empty and of equal length",
            ));
        }
        if self.upsample_initial_channel >> self.upsample_rates.len() == 0 {
            return Err(Error::config(format!(
                "BigVGAN: upsample_initial_channel {} is too small for {} stages",
                self.upsample_initial_channel,
                self.upsample_rates.len()
            )));
        }
        Ok(())
    }
}

/// Receives named intermediate tensors (names as in the parity fixtures).
pub type Hook<'a> = &'a mut dyn FnMut(&str, &Tensor);

/// Load a conv weight in whatever form the checkpoint holds and fold the weight norm.
/// `shape` is the weight shape; the norm is over every dim except 0. `init_gain / √fan_in` is
/// the standard deviation used when the builder creates weights (a `VarMap`: random models).
pub(crate) fn load_conv_weight(
    vb: &VarBuilder,
    shape: &[usize],
    fan_in: usize,
    init_gain: f64,
) -> Result<Tensor> {
    let dtype = vb.dtype();
    let g_shape: Vec<usize> = std::iter::once(shape[0])
        .chain(std::iter::repeat_n(1, shape.len() - 1))
        .collect();
    let pair = if vb.contains_tensor("weight") {
        None
    } else if vb.contains_tensor("weight_g") || vb.contains_tensor("weight_v") {
        Some(("weight_g", "weight_v"))
    } else if vb.contains_tensor("parametrizations.weight.original0") {
        Some((
            "parametrizations.weight.original0",
            "parametrizations.weight.original1",
        ))
    } else {
        None
    };
    match pair {
        None => {
            let std = init_gain / (fan_in as f64).sqrt();
            Ok(vb.get_with_hints(
                shape,
                "weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
            )?)
        }
        Some((gk, vk)) => {
            let g =
                vb.get_with_hints_dtype(g_shape.as_slice(), gk, Init::Const(1.0), DType::F32)?;
            let v = vb.get_with_hints_dtype(shape, vk, Init::Const(1.0), DType::F32)?;
            let w = fold_weight_norm(&g, &v)?;
            Ok(w.to_dtype(dtype)?)
        }
    }
}

/// w = g · v / ‖v‖ (norm over all dims but 0), in f32.
pub fn fold_weight_norm(g: &Tensor, v: &Tensor) -> Result<Tensor> {
    let o = v.dim(0)?;
    let flat = v.reshape((o, ()))?;
    let norm = flat.sqr()?.sum_keepdim(1)?.sqrt()?;
    let g = g.reshape((o, 1))?;
    Ok(flat
        .broadcast_mul(&g.broadcast_div(&norm)?)?
        .reshape(v.shape())?)
}

#[derive(Debug, Clone)]
struct Conv1d {
    weight: ops::ConvWeight,
    bias: Option<Tensor>,
    padding: usize,
    dilation: usize,
}

impl Conv1d {
    #[allow(clippy::too_many_arguments)]
    fn load(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        dilation: usize,
        padding: usize,
        bias: bool,
        init_gain: f64,
    ) -> Result<Self> {
        let weight = ops::ConvWeight::new(
            load_conv_weight(&vb, &[cout, cin, k], cin * k, init_gain)?,
            ops::ConvKind::Conv,
        )?;
        let bias = if bias {
            Some(vb.get_with_hints(
                cout,
                "bias",
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.05,
                },
            )?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            padding,
            dilation,
        })
    }

    /// Runs in the weight dtype; returns the input's dtype.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let wd = self.weight.dtype();
        let y = ops::conv1d(
            &x.to_dtype(wd)?,
            &self.weight,
            self.bias.as_ref(),
            self.padding,
            self.dilation,
        )?;
        Ok(y.to_dtype(x.dtype())?)
    }
}

#[derive(Debug, Clone)]
struct ConvTranspose1d {
    weight: ops::ConvWeight,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl ConvTranspose1d {
    fn load(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Self> {
        let weight = ops::ConvWeight::new(
            load_conv_weight(&vb, &[cin, cout, k], cin * k / stride, 0.7)?,
            ops::ConvKind::Transposed,
        )?;
        let bias = vb.get_with_hints(
            cout,
            "bias",
            Init::Randn {
                mean: 0.0,
                stdev: 0.05,
            },
        )?;
        Ok(Self {
            weight,
            bias,
            stride,
            padding: (k - stride) / 2,
        })
    }

    /// Runs in the weight dtype; returns the input's dtype.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let wd = self.weight.dtype();
        let y = ops::conv_transpose1d(
            &x.to_dtype(wd)?,
            &self.weight,
            Some(&self.bias),
            self.stride,
            self.padding,
        )?;
        Ok(y.to_dtype(x.dtype())?)
    }
}

/// `Activation1d(Snake | SnakeBeta)`: keys `act.alpha`, `act.beta`, `upsample.filter`,
/// `downsample.lowpass.filter`.
#[derive(Debug, Clone)]
struct Activation1d {
    act: AntiAliasAct,
}

impl Activation1d {
    fn load(vb: VarBuilder, channels: usize, cfg: &BigVganConfig) -> Result<Self> {
        let dev = vb.device().clone();
        // parameters are evaluated in f32 (exp of log-scale values) and kept in f32
        let get = |name: &str| -> Result<Tensor> {
            Ok(vb.pp("act").get_with_hints_dtype(
                channels,
                name,
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.3,
                },
                DType::F32,
            )?)
        };
        let alpha = get("alpha")?;
        let beta = if cfg.activation == "snakebeta" {
            get("beta")?
        } else {
            alpha.clone()
        };
        let (alpha, beta) = if cfg.snake_logscale {
            (alpha.exp()?, beta.exp()?)
        } else {
            (alpha, beta)
        };
        let inv_beta = (beta + 1e-9)?.recip()?;
        let filter = |vb: VarBuilder| -> Result<Tensor> {
            if vb.contains_tensor("filter") {
                Ok(vb.get_with_hints_dtype(
                    (1, 1, ops::AA_KERNEL),
                    "filter",
                    Init::Const(0.0),
                    DType::F32,
                )?)
            } else {
                let f = ops::kaiser_sinc_filter(0.25, 0.3, ops::AA_KERNEL);
                Ok(Tensor::from_vec(f, (1, 1, ops::AA_KERNEL), &dev)?)
            }
        };
        let up = filter(vb.pp("upsample"))?;
        let down = filter(vb.pp("downsample").pp("lowpass"))?;
        let act = AntiAliasAct::new(SnakeParams { alpha, inv_beta }, up, down)?;
        Ok(Self { act })
    }

    /// In the input's dtype.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.act.forward(x)?)
    }

    /// Generic path with intermediates (upsampled, activated, output).
    fn forward_steps(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        Ok(self.act.forward_steps(x)?)
    }
}

/// `AMPBlock1`.
#[derive(Debug, Clone)]
struct AmpBlock1 {
    convs1: Vec<Conv1d>,
    convs2: Vec<Conv1d>,
    activations: Vec<Activation1d>,
}

impl AmpBlock1 {
    fn load(
        vb: VarBuilder,
        channels: usize,
        k: usize,
        dilations: &[usize],
        cfg: &BigVganConfig,
    ) -> Result<Self> {
        let pad = |d: usize| (k * d - d) / 2;
        let mut convs1 = Vec::new();
        let mut convs2 = Vec::new();
        for (i, &d) in dilations.iter().enumerate() {
            convs1.push(Conv1d::load(
                vb.pp("convs1").pp(i),
                channels,
                channels,
                k,
                d,
                pad(d),
                true,
                1.0,
            )?);
            convs2.push(Conv1d::load(
                vb.pp("convs2").pp(i),
                channels,
                channels,
                k,
                1,
                pad(1),
                true,
                0.3,
            )?);
        }
        let activations = (0..2 * dilations.len())
            .map(|i| Activation1d::load(vb.pp("activations").pp(i), channels, cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            convs1,
            convs2,
            activations,
        })
    }

    fn forward(&self, x: &Tensor, mut hook: Option<(&str, Hook)>) -> Result<Tensor> {
        let mut x = x.clone();
        for (j, (c1, c2)) in self.convs1.iter().zip(&self.convs2).enumerate() {
            let a1 = &self.activations[2 * j];
            let xt = match (j, hook.as_mut()) {
                (0, Some((prefix, h))) => {
                    let (u, a, _) = a1.forward_steps(&x)?;
                    h(&format!("{prefix}.activations.0.upsample_out"), &u);
                    h(&format!("{prefix}.activations.0.act_out"), &a);
                    let o = a1.forward(&x)?;
                    h(&format!("{prefix}.activations.0.out"), &o);
                    o
                }
                _ => a1.forward(&x)?,
            };
            let xt = c1.forward(&xt)?;
            let xt = self.activations[2 * j + 1].forward(&xt)?;
            let xt = c2.forward(&xt)?;
            x = (xt + x)?;
        }
        if let Some((prefix, h)) = hook {
            h(&format!("{prefix}.out"), &x);
        }
        Ok(x)
    }
}

/// A BigVGAN generator (v1 16 kHz or v2 44.1 kHz, by configuration).
#[derive(Debug, Clone)]
pub struct BigVgan {
    cfg: BigVganConfig,
    conv_pre: Conv1d,
    ups: Vec<ConvTranspose1d>,
    resblocks: Vec<AmpBlock1>,
    activation_post: Activation1d,
    conv_post: Conv1d,
    f32_stream: bool,
}

impl BigVgan {
    /// Build from a `VarBuilder` rooted at the generator's state dict (official key names).
    /// Works with checkpoint files (any weight-norm form) and with a `VarMap` (random
    /// weights at real shapes).
    pub fn new(cfg: &BigVganConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let c0 = cfg.upsample_initial_channel;
        let conv_pre = Conv1d::load(vb.pp("conv_pre"), cfg.num_mels, c0, 7, 1, 3, true, 1.0)?;
        let mut ups = Vec::new();
        let mut resblocks = Vec::new();
        let mut ch = c0;
        for (i, (&u, &k)) in cfg
            .upsample_rates
            .iter()
            .zip(&cfg.upsample_kernel_sizes)
            .enumerate()
        {
            let cin = c0 >> i;
            ch = c0 >> (i + 1);
            ups.push(ConvTranspose1d::load(
                vb.pp("ups").pp(i).pp(0),
                cin,
                ch,
                k,
                u,
            )?);
            for (j, (&rk, dil)) in cfg
                .resblock_kernel_sizes
                .iter()
                .zip(&cfg.resblock_dilation_sizes)
                .enumerate()
            {
                let idx = i * cfg.resblock_kernel_sizes.len() + j;
                resblocks.push(AmpBlock1::load(
                    vb.pp("resblocks").pp(idx),
                    ch,
                    rk,
                    dil,
                    cfg,
                )?);
            }
        }
        let activation_post = Activation1d::load(vb.pp("activation_post"), ch, cfg)?;
        let conv_post = Conv1d::load(
            vb.pp("conv_post"),
            ch,
            1,
            7,
            1,
            3,
            cfg.use_bias_at_final,
            0.3,
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            conv_pre,
            ups,
            resblocks,
            activation_post,
            conv_post,
            f32_stream: true,
        })
    }

    /// Load a checkpoint file (safetensors or official `.pth`; for `.pth` files whose state dict
    /// sits under `generator` pass `Some("generator")`). Strict: tensors the model does not
    /// use are an error.
    pub fn load(
        cfg: &BigVganConfig,
        path: &Path,
        key: Option<&str>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let wf = std::sync::Arc::new(crate::weights::WeightFile::open_with_key(path, key)?);
        let m = Self::new(cfg, wf.var_builder(dtype, device))?;
        wf.check_all_used("the BigVGAN vocoder", |_| false)?;
        Ok(m)
    }

    pub fn config(&self) -> &BigVganConfig {
        &self.cfg
    }

    /// With f16/bf16 weights, keep the signal (residual stream, Snake activations, AMP
    /// means, output) in f32 and run only the convolutions in the weight dtype (default on;
    /// see [`crate::audio_decoder`] for why). Off: everything in the weight dtype.
    pub fn set_f32_activations(&mut self, on: bool) {
        self.f32_stream = on;
    }

    /// mel (B, num_mels, T) → waveform (B, 1, T·hop), f32 unless the f32 signal path is off
    /// (then the weight dtype).
    pub fn forward(&self, mel: &Tensor) -> Result<Tensor> {
        self.forward_impl(mel, None)
    }

    /// [`forward`](Self::forward) reporting the intermediates named in the parity fixtures:
    /// `conv_pre_out`, `ups.{i}.out`, `resblocks.0.activations.0.{upsample_out, act_out, out}`
    /// (the first two from the generic kernels), `resblocks.0.out` (the block's own output),
    /// `stage.{i}.amp_sum` (sum of the stage's AMP blocks), `stage.{i}.amp_mean_out`,
    /// `activation_post_out`, `conv_post_out`.
    pub fn forward_with_hook(&self, mel: &Tensor, hook: Hook) -> Result<Tensor> {
        self.forward_impl(mel, Some(hook))
    }

    fn forward_impl(&self, mel: &Tensor, mut hook: Option<Hook>) -> Result<Tensor> {
        let (_, c, _) = mel.dims3()?;
        if c != self.cfg.num_mels {
            return Err(Error::input(format!(
                "vocoder expects {} mel bins, got {c}",
                self.cfg.num_mels
            )));
        }
        let dtype = if self.f32_stream {
            DType::F32
        } else {
            self.conv_pre.weight.dtype()
        };
        let mut x = self.conv_pre.forward(&mel.to_dtype(dtype)?)?;
        if let Some(h) = hook.as_mut() {
            h("conv_pre_out", &x);
        }
        let nk = self.cfg.resblock_kernel_sizes.len();
        for (i, up) in self.ups.iter().enumerate() {
            x = up.forward(&x)?;
            if let Some(h) = hook.as_mut() {
                h(&format!("ups.{i}.out"), &x);
            }
            let mut xs: Option<Tensor> = None;
            for j in 0..nk {
                let idx = i * nk + j;
                let sub = match (idx, hook.as_mut()) {
                    (0, Some(h)) => Some(("resblocks.0", &mut **h as Hook)),
                    _ => None,
                };
                let y = self.resblocks[idx].forward(&x, sub)?;
                xs = Some(match xs {
                    None => y,
                    Some(s) => (s + y)?,
                });
            }
            let xs = xs.expect("at least one resblock");
            if let Some(h) = hook.as_mut() {
                h(&format!("stage.{i}.amp_sum"), &xs);
            }
            x = (xs / nk as f64)?;
            if let Some(h) = hook.as_mut() {
                h(&format!("stage.{i}.amp_mean_out"), &x);
            }
        }
        x = self.activation_post.forward(&x)?;
        if let Some(h) = hook.as_mut() {
            h("activation_post_out", &x);
        }
        x = self.conv_post.forward(&x)?;
        if let Some(h) = hook.as_mut() {
            h("conv_post_out", &x);
        }
        let x = if self.cfg.use_tanh_at_final {
            x.tanh()?
        } else {
            x.clamp(-1f32, 1f32)?
        };
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::{WeightFile, write_pth};
    use candle_nn::VarMap;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn tiny(v2: bool) -> BigVganConfig {
        BigVganConfig {
            resblock: "1".into(),
            num_mels: 6,
            upsample_rates: vec![2, 2],
            upsample_kernel_sizes: vec![4, 4],
            upsample_initial_channel: 8,
            resblock_kernel_sizes: vec![3, 5],
            resblock_dilation_sizes: vec![vec![1, 3], vec![1, 2]],
            activation: "snakebeta".into(),
            snake_logscale: true,
            use_tanh_at_final: !v2,
            use_bias_at_final: !v2,
        }
    }

    fn random_state(cfg: &BigVganConfig) -> (BigVgan, Vec<(String, Tensor)>) {
        let vm = VarMap::new();
        BigVgan::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let mut sd: Vec<(String, Tensor)> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        sd.sort_by(|a, b| a.0.cmp(&b.0));
        // deterministic values (candle's CPU RNG cannot be seeded), same scale as the init
        let mut rng = crate::rng::Rng::new(7);
        for (_, t) in sd.iter_mut() {
            let std = t.flatten_all().unwrap().sqr().unwrap().mean_all().unwrap();
            let std = std.sqrt().unwrap().to_scalar::<f32>().unwrap().max(0.1);
            *t = (rng.randn(t.dims(), &Device::Cpu).unwrap() * std as f64).unwrap();
        }
        let m = from_tensors(sd.clone(), cfg).unwrap();
        (m, sd)
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

    /// Split every conv weight into (g, v) with v = w·c (c > 0 per output row), so that
    /// g·v/‖v‖ = w.
    fn to_weight_norm(
        sd: &[(String, Tensor)],
        g_name: &str,
        v_name: &str,
    ) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (k, t) in sd {
            match k.strip_suffix(".weight") {
                Some(base) if t.rank() == 3 => {
                    let o = t.dim(0).unwrap();
                    let flat = t.reshape((o, ())).unwrap();
                    let norm = flat.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap();
                    let scale = Tensor::arange(1u32, o as u32 + 1, &Device::Cpu)
                        .unwrap()
                        .to_dtype(DType::F32)
                        .unwrap()
                        .reshape((o, 1))
                        .unwrap();
                    let v = flat
                        .broadcast_mul(&scale)
                        .unwrap()
                        .reshape(t.shape())
                        .unwrap();
                    out.push((format!("{base}.{g_name}"), norm.reshape((o, 1, 1)).unwrap()));
                    out.push((format!("{base}.{v_name}"), v));
                }
                _ => out.push((k.clone(), t.clone())),
            }
        }
        out
    }

    fn from_tensors(sd: Vec<(String, Tensor)>, cfg: &BigVganConfig) -> Result<BigVgan> {
        let wf = Arc::new(WeightFile::from_tensors(
            "mem",
            sd.into_iter().collect::<HashMap<_, _>>(),
        ));
        let m = BigVgan::new(cfg, wf.var_builder(DType::F32, &Device::Cpu))?;
        wf.check_all_used("the vocoder", |_| false)?;
        Ok(m)
    }

    #[test]
    fn all_checkpoint_forms_and_pth_give_the_same_waveform() {
        for v2 in [false, true] {
            let cfg = tiny(v2);
            let (model, sd) = random_state(&cfg);
            let mel = (Tensor::randn(0f32, 1.0, (2, 6, 7), &Device::Cpu).unwrap() - 2.0).unwrap();
            let want = model.forward(&mel).unwrap();
            assert_eq!(want.dims(), &[2, 1, 7 * cfg.hop_length()]);
            if !v2 {
                assert!(sd.iter().any(|(k, _)| k == "conv_post.bias"));
            } else {
                assert!(!sd.iter().any(|(k, _)| k == "conv_post.bias"));
            }
            for (g, v) in [
                ("weight_g", "weight_v"),
                (
                    "parametrizations.weight.original0",
                    "parametrizations.weight.original1",
                ),
            ] {
                let m = from_tensors(to_weight_norm(&sd, g, v), &cfg).unwrap();
                let e = max_diff(&m.forward(&mel).unwrap(), &want);
                assert!(e < 1e-5, "{g}: {e}");
            }
            // official checkpoint layout: {"generator": state_dict} in a .pth
            let dir = std::env::temp_dir().join(format!("mmaudio-voc-{}-{v2}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let p = dir.join("bigvgan_generator.pt");
            write_pth(
                &p,
                &to_weight_norm(&sd, "weight_g", "weight_v"),
                Some("generator"),
            )
            .unwrap();
            let m = BigVgan::load(&cfg, &p, Some("generator"), DType::F32, &Device::Cpu).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            let e = max_diff(&m.forward(&mel).unwrap(), &want);
            assert!(e < 1e-5, "pth: {e}");
        }
    }

    #[test]
    fn batch_items_are_independent() {
        let cfg = tiny(true);
        let (model, _) = random_state(&cfg);
        let mel = Tensor::randn(0f32, 1.0, (3, 6, 9), &Device::Cpu).unwrap();
        let all = model.forward(&mel).unwrap();
        for i in 0..3 {
            let one = model.forward(&mel.narrow(0, i, 1).unwrap()).unwrap();
            assert!(max_diff(&one, &all.narrow(0, i, 1).unwrap()) < 1e-5);
        }
    }

    #[test]
    fn strict_loading_names_the_problem() {
        let cfg = tiny(false);
        let (_, mut sd) = random_state(&cfg);
        sd.push((
            "ups.9.0.bias".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        ));
        let e = from_tensors(sd.clone(), &cfg).unwrap_err().to_string();
        assert!(e.contains("ups.9.0.bias"), "{e}");
        sd.retain(|(k, _)| k != "ups.9.0.bias" && k != "conv_pre.bias");
        let e = from_tensors(sd, &cfg).unwrap_err().to_string();
        assert!(e.contains("conv_pre.bias"), "{e}");
        // wrong mel count
        let (m, _) = random_state(&cfg);
        let mel = Tensor::zeros((1, 5, 4), DType::F32, &Device::Cpu).unwrap();
        let e = m.forward(&mel).unwrap_err().to_string();
        assert!(e.contains("6 mel bins"), "{e}");
    }

    #[test]
    fn half_precision_loads_and_stays_close() {
        let cfg = tiny(true);
        let (model, sd) = random_state(&cfg);
        let mel = (crate::rng::Rng::new(5)
            .randn(&[1, 6, 8], &Device::Cpu)
            .unwrap()
            - 2.0)
            .unwrap();
        let want = model.forward(&mel).unwrap();
        for dt in [DType::F16, DType::BF16] {
            let wf = Arc::new(WeightFile::from_tensors(
                "mem",
                sd.iter().cloned().collect::<HashMap<_, _>>(),
            ));
            let mut m = BigVgan::new(&cfg, wf.var_builder(dt, &Device::Cpu)).unwrap();
            // default: f32 signal, convolutions in the weight dtype
            let got = m.forward(&mel).unwrap();
            assert_eq!(got.dtype(), DType::F32);
            let e = max_diff(&got, &want);
            assert!(e < 0.05, "{dt:?} (f32 signal): {e}");
            // everything in the weight dtype
            m.set_f32_activations(false);
            let got = m.forward(&mel).unwrap();
            assert_eq!(got.dtype(), dt);
            let e = max_diff(&got.to_dtype(DType::F32).unwrap(), &want);
            assert!(e < 0.05, "{dt:?}: {e}");
        }
    }

    #[test]
    fn config_json_parses_and_validates() {
        let j = r#"{"resblock": "1", "num_gpus": 0, "num_mels": 128,
            "upsample_rates": [8,4,2,2,2,2], "upsample_kernel_sizes": [16,8,4,4,4,4],
            "upsample_initial_channel": 1536, "resblock_kernel_sizes": [3,7,11],
            "resblock_dilation_sizes": [[1,3,5],[1,3,5],[1,3,5]],
            "use_tanh_at_final": false, "use_bias_at_final": false,
            "activation": "snakebeta", "snake_logscale": true, "sampling_rate": 44100}"#;
        let c = BigVganConfig::from_json_str(j).unwrap();
        assert_eq!(c, BigVganConfig::bigvgan_v2_44k());
        assert_eq!(c.hop_length(), 512);
        assert_eq!(BigVganConfig::mmaudio_16k().hop_length(), 256);
        let bad = j.replace(r#""resblock": "1""#, r#""resblock": "2""#);
        assert!(
            BigVganConfig::from_json_str(&bad)
                .unwrap_err()
                .to_string()
                .contains("resblock")
        );
    }

    #[test]
    fn weight_norm_fold() {
        let v = Tensor::new(&[[[3f32, 4.0]], [[1.0, 0.0]]], &Device::Cpu).unwrap();
        let g = Tensor::new(&[[[10f32]], [[2.0]]], &Device::Cpu).unwrap();
        let w = fold_weight_norm(&g, &v)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(w, vec![6.0, 8.0, 2.0, 0.0]);
    }
}
