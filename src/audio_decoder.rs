//! Latents → waveform: the VAE decoder (latent → log-mel) followed by the vocoder of the mode
//! (mel → waveform), as the official `FeaturesUtils.decode` + `FeaturesUtils.vocode`.
//!
//! * 16 kHz (`small_16k`): VAE `v1-16.pth` (80 mels, 20 latent channels) + MMAudio's BigVGAN
//!   `best_netG.pt` (`{"generator": state_dict}`, hyper-parameters of `bigvgan_vocoder.yml`),
//!   hop 256.
//! * 44.1 kHz (other variants): VAE `v1-44.pth` (128 mels, 40 channels) + NVIDIA BigVGAN-v2
//!   `bigvgan_generator.pt` with its `config.json` (read when it sits next to the weights;
//!   otherwise the published values are used), hop 512.
//!
//! **Sample count.** [`AudioDecoder::decode`] returns exactly what the official code returns:
//! N latents → 2·N mel frames → 2·N·hop samples per batch row (8 s: 250 latents → 128 000
//! samples at 16 kHz; 345 latents → 353 280 samples at 44.1 kHz, i.e. 8.011 s). Trimming to the
//! requested duration (`SequenceConfig::exact_samples`) is left to the caller.
//!
//! **Precision.** Weights may be loaded as f32, f16 or bf16. Under f16/bf16 the parts that are
//! sensitive to rounding stay in f32 while the convolutions (where the time goes) run in the
//! chosen dtype:
//! * the vocoder's whole signal path — residual stream, AMP means and the anti-aliased
//!   Snake/SnakeBeta activations (on by default, [`AudioDecoder::set_f32_activations`]):
//!   sin²(α·x) is evaluated at arguments of tens of radians, where a bf16 x is off by ~0.1 rad,
//!   which turns into broadband noise; and the residual sums over 18 blocks per stage would
//!   otherwise accumulate bf16 rounding;
//! * the VAE's pixel norms, attention softmax and the mel unnormalisation (always);
//! * the returned waveform (f32). The STFT/mel converter ([`crate::mel`]) computes in f64/f32.

use crate::config::Mode;
use crate::error::{Error, Result};
use crate::vae::{Vae, VaeConfig, VaeParts, VaeWeights};
use crate::vocoder::{BigVgan, BigVganConfig};
use crate::weights::WeightFile;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::path::Path;
use std::sync::Arc;

/// VAE decoder + vocoder of one audio mode.
#[derive(Debug, Clone)]
pub struct AudioDecoder {
    mode: Mode,
    vae: Vae,
    vocoder: BigVgan,
}

impl AudioDecoder {
    /// Load the official checkpoints (`.pth` or safetensors conversions with the same keys).
    /// The vocoder file may hold its state dict under `generator` (as shipped) or flat.
    pub fn load(
        mode: Mode,
        vae_path: &Path,
        vocoder_path: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let voc_cfg = Self::vocoder_config_for(mode, vocoder_path)?;
        Self::load_with_config(mode, vae_path, vocoder_path, &voc_cfg, dtype, device)
    }

    /// The vocoder hyper-parameters used by [`load`](Self::load): for 44.1 kHz the
    /// `config.json` next to the weights when present, else the official values.
    pub fn vocoder_config_for(mode: Mode, vocoder_path: &Path) -> Result<BigVganConfig> {
        let cfg = match mode {
            Mode::Khz16 => BigVganConfig::mmaudio_16k(),
            Mode::Khz44 => {
                let json = vocoder_path.with_file_name("config.json");
                if json.is_file() {
                    BigVganConfig::from_json_file(&json)?
                } else {
                    BigVganConfig::bigvgan_v2_44k()
                }
            }
        };
        if cfg.num_mels != mode.n_mels() || cfg.hop_length() != mode.hop_length() {
            return Err(Error::config(format!(
                "vocoder config for {mode} has {} mels / hop {}, expected {} / {}",
                cfg.num_mels,
                cfg.hop_length(),
                mode.n_mels(),
                mode.hop_length()
            )));
        }
        Ok(cfg)
    }

    /// [`load`](Self::load) with explicit vocoder hyper-parameters.
    pub fn load_with_config(
        mode: Mode,
        vae_path: &Path,
        vocoder_path: &Path,
        vocoder_cfg: &BigVganConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::load_with_configs(
            mode,
            &VaeConfig::for_mode(mode),
            vae_path,
            vocoder_cfg,
            vocoder_path,
            dtype,
            device,
        )
    }

    /// Load with explicit VAE and vocoder hyper-parameters (e.g. from a model folder's
    /// manifest). Strict: every tensor of the vocoder file and every decoder tensor of the
    /// VAE file must be used.
    pub fn load_with_configs(
        mode: Mode,
        vae_cfg: &VaeConfig,
        vae_path: &Path,
        vocoder_cfg: &BigVganConfig,
        vocoder_path: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let vae = Vae::load(vae_cfg, vae_path, VaeParts::DECODER, dtype, device)?;
        let wf = Arc::new(open_vocoder(vocoder_path)?);
        let vocoder = BigVgan::new(vocoder_cfg, wf.var_builder(dtype, device))
            .map_err(|e| wf.wrap_error(e))?;
        wf.check_all_used("the BigVGAN vocoder", |_| false)?;
        Self::from_parts(mode, vae, vocoder)
    }

    /// Build from `VarBuilder`s (checkpoint files, or a `VarMap` for random weights at real
    /// shapes). `vae_vb` is rooted at the VAE state dict, `vocoder_vb` at the generator's.
    pub fn from_var_builders(
        mode: Mode,
        vae_cfg: &VaeConfig,
        vae_vb: VarBuilder,
        vocoder_cfg: &BigVganConfig,
        vocoder_vb: VarBuilder,
    ) -> Result<Self> {
        let vae = Vae::new(vae_cfg, vae_vb, VaeParts::DECODER, VaeWeights::Raw)?;
        let vocoder = BigVgan::new(vocoder_cfg, vocoder_vb)?;
        Self::from_parts(mode, vae, vocoder)
    }

    fn from_parts(mode: Mode, vae: Vae, vocoder: BigVgan) -> Result<Self> {
        if vae.config().data_dim != vocoder.config().num_mels {
            return Err(Error::config(format!(
                "VAE produces {} mel bins but the vocoder expects {}",
                vae.config().data_dim,
                vocoder.config().num_mels
            )));
        }
        Ok(Self { mode, vae, vocoder })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn vae(&self) -> &Vae {
        &self.vae
    }

    pub fn vocoder(&self) -> &BigVgan {
        &self.vocoder
    }

    /// Under f16/bf16 weights, keep the vocoder's signal path (residual stream, Snake
    /// activations) in f32 and run only its convolutions in the weight dtype (default: on).
    pub fn set_f32_activations(&mut self, on: bool) {
        self.vocoder.set_f32_activations(on);
    }

    /// Waveform samples produced for `n_latents` latent frames: 2·N·hop.
    pub fn num_samples(&self, n_latents: usize) -> usize {
        2 * n_latents * self.vocoder.config().hop_length()
    }

    /// Unnormalised latents (B, N, C) channel-last, as `net.unnormalize` returns them →
    /// log-mel (B, n_mels, 2N), f32.
    pub fn decode_mel(&self, latents: &Tensor) -> Result<Tensor> {
        let (_, _, c) = latents.dims3()?;
        if c != self.vae.config().embed_dim {
            return Err(Error::input(format!(
                "audio decoder ({}) expects latents with {} channels (B, N, C), got shape {:?}",
                self.mode,
                self.vae.config().embed_dim,
                latents.dims()
            )));
        }
        self.vae.decode(&latents.transpose(1, 2)?.contiguous()?)
    }

    /// log-mel (B, n_mels, T) → waveform (B, T·hop), f32.
    pub fn vocode(&self, mel: &Tensor) -> Result<Tensor> {
        let wav = self.vocoder.forward(mel)?;
        Ok(wav.squeeze(1)?.to_dtype(DType::F32)?)
    }

    /// Unnormalised latents (B, N, C) → waveform (B, 2·N·hop), f32 (see the module docs for
    /// the exact sample count).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let mel = self.decode_mel(latents)?;
        self.vocode(&mel)
    }
}

/// Open a vocoder checkpoint whose state dict sits under `generator` (official) or at the top.
fn open_vocoder(path: &Path) -> Result<WeightFile> {
    match WeightFile::open_with_key(path, Some("generator")) {
        Ok(wf) => Ok(wf),
        Err(first) => match WeightFile::open(path) {
            Ok(wf) if wf.keys().iter().any(|k| k.starts_with("conv_pre.")) => Ok(wf),
            _ => Err(first),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    fn tiny() -> AudioDecoder {
        tiny_with(&VarMap::new())
    }

    fn tiny_with(vm: &VarMap) -> AudioDecoder {
        let (vae_cfg, voc_cfg) = tiny_configs();
        AudioDecoder::from_var_builders(
            Mode::Khz44,
            &vae_cfg,
            VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu).pp("vae"),
            &voc_cfg,
            VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu).pp("vocoder"),
        )
        .unwrap()
    }

    fn tiny_configs() -> (VaeConfig, BigVganConfig) {
        let vae_cfg = VaeConfig {
            data_dim: 6,
            embed_dim: 4,
            hidden_dim: 8,
        };
        let voc_cfg = BigVganConfig {
            resblock: "1".into(),
            num_mels: 6,
            upsample_rates: vec![2, 2],
            upsample_kernel_sizes: vec![4, 4],
            upsample_initial_channel: 8,
            resblock_kernel_sizes: vec![3],
            resblock_dilation_sizes: vec![vec![1, 3]],
            activation: "snakebeta".into(),
            snake_logscale: true,
            use_tanh_at_final: false,
            use_bias_at_final: false,
        };
        (vae_cfg, voc_cfg)
    }

    #[test]
    fn decode_takes_channel_last_latents_and_returns_2n_hop_samples() {
        let dec = tiny();
        let lat = Tensor::randn(0f32, 1.0, (2, 5, 4), &Device::Cpu).unwrap();
        let wav = dec.decode(&lat).unwrap();
        assert_eq!(wav.dims(), &[2, dec.num_samples(5)]);
        assert_eq!(dec.num_samples(5), 5 * 2 * 4);
        assert_eq!(wav.dtype(), DType::F32);
        // the VAE sees (B, C, N): same as decoding the transposed latent by hand
        let mel = dec.vae().decode(&lat.transpose(1, 2).unwrap()).unwrap();
        let by_hand = dec.vocode(&mel).unwrap();
        let d = (wav - by_hand).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
        // (B, C, N) by mistake is reported
        let e = dec
            .decode(&lat.transpose(1, 2).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("expects latents with 4 channels"), "{e}");
    }

    #[test]
    fn loads_official_file_layouts() {
        use crate::weights::write_pth;
        let vm = VarMap::new();
        let dec = tiny_with(&vm);
        let lat = crate::rng::Rng::new(1)
            .randn(&[1, 3, 4], &Device::Cpu)
            .unwrap();
        let want = dec.decode(&lat).unwrap();
        let data = vm.data().lock().unwrap();
        let part = |prefix: &str| -> Vec<(String, Tensor)> {
            let mut v: Vec<(String, Tensor)> = data
                .iter()
                .filter_map(|(k, t)| {
                    k.strip_prefix(prefix)
                        .map(|k| (k.to_string(), t.as_tensor().clone()))
                })
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let dir = std::env::temp_dir().join(format!("mmaudio-dec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vae = dir.join("v1-tiny.pth");
        write_pth(&vae, &part("vae."), None).unwrap();
        // as shipped: {"generator": state_dict}; and a flat state dict
        let gen_pt = dir.join("best_netG.pt");
        write_pth(&gen_pt, &part("vocoder."), Some("generator")).unwrap();
        let flat_pt = dir.join("flat.pt");
        write_pth(&flat_pt, &part("vocoder."), None).unwrap();
        let (vae_cfg, voc_cfg) = tiny_configs();
        let load = |voc: &Path| {
            AudioDecoder::load_with_configs(
                Mode::Khz44,
                &vae_cfg,
                &vae,
                &voc_cfg,
                voc,
                DType::F32,
                &Device::Cpu,
            )
        };
        let a = load(&gen_pt).unwrap().decode(&lat).unwrap();
        let b = load(&flat_pt).unwrap().decode(&lat).unwrap();
        // the VAE file in the vocoder's place is refused, naming the file
        let e = load(&vae).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        for got in [a, b] {
            let d = (got - &want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
        }
        assert!(e.contains("v1-tiny.pth"), "{e}");
    }

    #[test]
    fn official_vocoder_configs_match_the_modes() {
        for mode in [Mode::Khz16, Mode::Khz44] {
            let c = AudioDecoder::vocoder_config_for(mode, Path::new("/nonexistent/x.pt")).unwrap();
            assert_eq!(c.num_mels, mode.n_mels());
            assert_eq!(c.hop_length(), mode.hop_length());
            assert_eq!(VaeConfig::for_mode(mode).data_dim, mode.n_mels());
            assert_eq!(VaeConfig::for_mode(mode).embed_dim, mode.latent_dim());
        }
    }
}
