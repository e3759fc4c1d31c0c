//! The MMAudio model composition: every network loaded on one device, and one window of
//! frames (+ prompt) → one window of audio.
//!
//! Composes, per window: frame picking at 8 and 25 fps ([`crate::features::frames`]),
//! preprocessing, CLIP image features, Synchformer features, CLIP text features of the
//! prompt and negative prompt (cached), the flow sampler ([`crate::sampler`]) and the audio
//! decoder (VAE + vocoder). Conditions are computed once per window and reused by every
//! sampler step. Paths as in the official `demo.py`:
//!
//! * video-to-audio: CLIP + Synchformer features of the window's frames and the prompt;
//! * `mask_away_clip`: the CLIP stream is replaced by the learned empty tokens;
//! * text-to-audio (no frames): both visual streams are the learned empty tokens.
//!
//! As in `demo.py`, the prompt and the negative prompt are always encoded with CLIP (the
//! empty string included), and the negative prompt drives the unconditional branch.
//!
//! The initial noise comes from our own seeded generator ([`crate::rng`]); seeds do not
//! reproduce PyTorch's noise.

use crate::NetConfig;
use crate::audio_decoder::AudioDecoder;
use crate::config::{CLIP_FPS, MIN_DURATION_S, Mode, SYNC_FPS, SequenceConfig, Variant};
use crate::error::{Error, Result};
use crate::features::clip::{Clip, ClipConfig};
use crate::features::frames::{pick_rate, plan_frames};
use crate::features::preprocess;
use crate::features::synchformer::{Synchformer, SynchformerConfig};
use crate::features::tokenizer::ClipTokenizer;
use crate::generator::{AudioGenerator, LoadOptions, ModelInfo};
use crate::model_dir::{Component, ModelDir, ResolvedFile};
use crate::net::MmAudioNet;
use crate::request::{Cancel, Stage, VideoFrame, WindowRequest};
use crate::rng::Rng;
use crate::sampler::{EulerSampler, FeatureSet, SeqLens, StepRecord, generate_latents};
use crate::vae::VaeConfig;
use crate::vocoder::BigVganConfig;
use crate::weights::WeightFile;
use candle_core::{DType, Device, Tensor};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Prompts whose CLIP text features are kept.
const TEXT_CACHE: usize = 16;

/// Every model of MMAudio, loaded on one device.
pub struct MmAudio {
    pub variant: Variant,
    pub mode: Mode,
    pub device: Device,
    pub dtype: DType,
    pub net: MmAudioNet,
    pub decoder: AudioDecoder,
    pub clip: Clip,
    pub synchformer: Synchformer,
    /// What the device is called in messages (`cpu`, `cuda:0`).
    pub device_name: String,
    /// A note on the weights (the manifest's, e.g. for a tiny random test model).
    pub note: Option<String>,
    text_cache: Mutex<VecDeque<(String, Tensor)>>,
    /// Timings of the last window, seconds (features, sampling, decoding).
    pub last_timings: Mutex<Option<WindowTimings>>,
}

/// Where the time of one window went. The device is synchronised at each stage boundary
/// before the clock is read, so on CUDA the stages are measured to completion (a handful of
/// synchronisations per window; the work inside a stage stays asynchronous).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct WindowTimings {
    /// Frame picking and the CLIP/Synchformer transforms (CPU), upload included.
    pub preprocess_s: f64,
    /// CLIP image + Synchformer features (`clip_s + sync_s`).
    pub features_s: f64,
    pub clip_s: f64,
    pub sync_s: f64,
    /// CLIP text features of the prompt and the negative prompt (cached per prompt).
    pub text_s: f64,
    /// Initial noise, conditions and the Euler steps with CFG (text features excluded).
    pub sampling_s: f64,
    /// VAE + vocoder + download of the samples (`vae_s + vocoder_s`).
    pub decode_s: f64,
    pub vae_s: f64,
    pub vocoder_s: f64,
    /// The whole `generate_window` call.
    pub total_s: f64,
}

fn parse_config<T: serde::de::DeserializeOwned>(r: &ResolvedFile, what: &str) -> Result<Option<T>> {
    match &r.config {
        None => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
            Error::config(format!(
                "{} config of the {what} ({}) is invalid: {e}, in {v}",
                crate::model_dir::MANIFEST,
                r.path.display()
            ))
        }),
    }
}

impl MmAudio {
    /// Load every component from a model folder. `progress` gets a line per component.
    pub fn load(
        dir: &ModelDir,
        variant: Variant,
        device: &Device,
        dtype: DType,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Self> {
        let mode = dir.mode(variant);
        let files = dir.resolve_all(variant)?;
        crate::device::tune_allocator();
        let get = |c: Component| files.iter().find(|f| f.component == c).cloned().unwrap();

        let net_file = get(Component::Net);
        progress(&format!("loading flow network {}", net_file.path.display()));
        let net_cfg: NetConfig =
            parse_config(&net_file, "flow network")?.unwrap_or_else(|| variant.net_config());
        let net = MmAudioNet::load_file(&net_file.path, &net_cfg, dtype, device)?;

        let vae_file = get(Component::Vae);
        let voc_file = get(Component::Vocoder);
        progress(&format!(
            "loading VAE {} and vocoder {}",
            vae_file.path.display(),
            voc_file.path.display()
        ));
        let vae_cfg: VaeConfig =
            parse_config(&vae_file, "VAE")?.unwrap_or_else(|| VaeConfig::for_mode(mode));
        let voc_cfg: BigVganConfig = match parse_config(&voc_file, "vocoder")? {
            Some(c) => c,
            None => AudioDecoder::vocoder_config_for(mode, &voc_file.path)?,
        };
        if voc_cfg.hop_length() != mode.hop_length() {
            return Err(Error::config(format!(
                "vocoder {} has hop {}, but {mode} audio needs hop {} (wrong vocoder or config)",
                voc_file.path.display(),
                voc_cfg.hop_length(),
                mode.hop_length()
            )));
        }
        let decoder = AudioDecoder::load_with_configs(
            mode,
            &vae_cfg,
            &vae_file.path,
            &voc_cfg,
            &voc_file.path,
            dtype,
            device,
        )?;

        let clip_file = get(Component::Clip);
        progress(&format!("loading CLIP {}", clip_file.path.display()));
        let clip_cfg = match &clip_file.config {
            Some(v) => ClipConfig::from_open_clip_json(v)?,
            None => {
                let json = clip_file.path.with_file_name("open_clip_config.json");
                if json.is_file() {
                    let v: serde_json::Value =
                        serde_json::from_str(&std::fs::read_to_string(&json)?)
                            .map_err(|e| Error::config(format!("{}: {e}", json.display())))?;
                    ClipConfig::from_open_clip_json(&v)?
                } else {
                    ClipConfig::dfn5b_vit_h_14_384()
                }
            }
        };
        let clip = Clip::load(&clip_file.path, &clip_cfg, dtype, device)?;

        let sync_file = get(Component::Synchformer);
        progress(&format!("loading Synchformer {}", sync_file.path.display()));
        let sync_cfg: SynchformerConfig = match &sync_file.config {
            Some(v) => SynchformerConfig::from_motionformer_cfg(v)?,
            None => SynchformerConfig::base(),
        };
        let synchformer = Synchformer::load(
            &Arc::new(WeightFile::open(&sync_file.path)?),
            &sync_cfg,
            dtype,
            device,
        )?;

        Self::from_parts(
            variant,
            mode,
            device,
            dtype,
            net,
            decoder,
            clip,
            synchformer,
        )
    }

    /// Assemble from already built parts (benchmarks with random weights, embedding apps).
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        variant: Variant,
        mode: Mode,
        device: &Device,
        dtype: DType,
        net: MmAudioNet,
        decoder: AudioDecoder,
        clip: Clip,
        synchformer: Synchformer,
    ) -> Result<Self> {
        let me = Self {
            variant,
            mode,
            device: device.clone(),
            dtype,
            net,
            decoder,
            clip,
            synchformer,
            device_name: match device {
                Device::Cpu => "cpu".into(),
                Device::Cuda(_) => "cuda".into(),
                Device::Metal(_) => "metal".into(),
            },
            note: None,
            text_cache: Mutex::new(VecDeque::new()),
            last_timings: Mutex::new(None),
        };
        me.check_dims()?;
        Ok(me)
    }

    /// The feature widths of the encoders must be what the network was trained on.
    fn check_dims(&self) -> Result<()> {
        let cfg = &self.net.cfg;
        let clip_dim = self.clip.vision.embed_dim();
        let text_dim = self.clip.text.config().width;
        let sync_dim = self.synchformer.config().embed_dim;
        if (clip_dim, text_dim, sync_dim) != (cfg.clip_dim, cfg.text_dim, cfg.sync_dim) {
            return Err(Error::config(format!(
                "feature encoders give clip {clip_dim} / text {text_dim} / sync {sync_dim} features, \
                 the network expects {} / {} / {}",
                cfg.clip_dim, cfg.text_dim, cfg.sync_dim
            )));
        }
        Ok(())
    }

    pub fn sample_rate(&self) -> u32 {
        self.mode.sampling_rate()
    }

    /// Forget the cached text features (benchmarks that time the text encoder).
    pub fn clear_text_cache(&self) {
        self.text_cache.lock().unwrap().clear();
    }

    /// CLIP text features `(1, 77, D)` of a prompt, cached.
    pub fn text_features(&self, prompt: &str) -> Result<Tensor> {
        if let Some((_, t)) = self
            .text_cache
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| p == prompt)
        {
            return Ok(t.clone());
        }
        let ids = ClipTokenizer::shared().tokenize_batch(&[prompt], &self.device)?;
        let f = self.clip.text.encode_ids(&ids)?;
        let mut c = self.text_cache.lock().unwrap();
        if c.len() >= TEXT_CACHE {
            c.pop_front();
        }
        c.push_back((prompt.to_string(), f.clone()));
        Ok(f)
    }

    /// Frame indices for the 8 fps and 25 fps streams of a window of `duration`, holding the
    /// last frame when the frames end before the window does.
    ///
    /// Each rate is picked as the official `read_frames` does, but without `load_video`'s
    /// shortening of the duration to the slots filled: a window's frames stop short of its
    /// end (the frame at the end belongs to the next window), where the official reader,
    /// given the whole video, still sees it. Shortening would cut the 8 fps picks to
    /// `int(8 · 25-fps-length)` and hold an earlier frame in the last CLIP slot (caught by the
    /// `mmaudio_e2e` parity cases).
    pub fn pick_frames(frames: &[VideoFrame], duration: f64) -> Result<(Vec<usize>, Vec<usize>)> {
        let times: Vec<f64> = frames.iter().map(|f| f.pts).collect();
        let plan = plan_frames(&times, duration)?; // validates the duration and the frames
        let clip = pick_rate(&times, CLIP_FPS, duration);
        let sync = pick_rate(&times, SYNC_FPS, duration);
        debug_assert!(
            plan.clip
                .indices
                .starts_with(&clip.indices[..plan.clip.len()])
        );
        let n_clip = (duration * CLIP_FPS) as usize;
        let n_sync = (duration * SYNC_FPS) as usize;
        let pad = |mut v: Vec<usize>, n: usize| -> Vec<usize> {
            let last = v.last().copied().unwrap_or(0);
            v.truncate(n);
            v.resize(n, last);
            v
        };
        Ok((pad(clip.indices, n_clip), pad(sync.indices, n_sync)))
    }

    /// Generate one window. `observer` sees every sampler step.
    pub fn generate_window(
        &self,
        req: &WindowRequest,
        cancel: &Cancel,
        observer: Option<&mut dyn FnMut(&StepRecord)>,
    ) -> Result<Vec<f32>> {
        self.generate_window_from_noise(req, None, cancel, observer)
    }

    /// [`generate_window`](Self::generate_window) from the given initial noise `x0`
    /// `(1, N, latent_dim)` instead of the seeded draw (`None`): the end-to-end parity cases
    /// inject the official code's torch noise, which our generator does not reproduce.
    pub fn generate_window_from_noise(
        &self,
        req: &WindowRequest,
        x0: Option<&Tensor>,
        cancel: &Cancel,
        observer: Option<&mut dyn FnMut(&StepRecord)>,
    ) -> Result<Vec<f32>> {
        let rate = self.sample_rate();
        let want = req.num_samples(rate);
        if !(req.duration.is_finite() && req.duration > 0.0) {
            return Err(Error::input(format!(
                "invalid window duration {} s",
                req.duration
            )));
        }
        // the sync stream needs one 16-frame segment: generate at least that long, trim after
        let duration = req.duration.max(MIN_DURATION_S);
        let seq = SequenceConfig::new(duration, self.mode);
        let p = &req.params;
        let mut timings = WindowTimings::default();
        let start = Instant::now();
        let dev = &self.device;
        // seconds since `t` once the device has finished the queued work; restarts `t`
        let lap = |t: &mut Instant| -> Result<f64> {
            dev.synchronize()?;
            let s = t.elapsed().as_secs_f64();
            *t = Instant::now();
            Ok(s)
        };
        let mut t = Instant::now();
        cancel.report(Stage::Features);

        let (clip_f, sync_f, lens) = if req.frames.is_empty() {
            (None, None, SeqLens::from(seq))
        } else {
            let (ci, si) = Self::pick_frames(&req.frames, duration)?;
            let clip_in = if p.mask_away_clip {
                None
            } else {
                Some(preprocess::clip_frames(&req.frames, &ci, &self.device)?)
            };
            let sync_in = preprocess::sync_frames(&req.frames, &si, &self.device)?;
            timings.preprocess_s = lap(&mut t)?;
            cancel.check()?;
            let clip_f = match clip_in {
                Some(x) => Some(
                    self.clip
                        .vision
                        .encode_video(&x.to_dtype(self.dtype)?.unsqueeze(0)?)?,
                ),
                None => None,
            };
            timings.clip_s = lap(&mut t)?;
            cancel.check()?;
            let sync_f = self
                .synchformer
                .encode_video(&sync_in.to_dtype(self.dtype)?.unsqueeze(0)?)?;
            timings.sync_s = lap(&mut t)?;
            timings.features_s = timings.clip_s + timings.sync_s;
            let lens = SeqLens {
                latent: seq.latent_seq_len(),
                clip: ci.len(),
                sync: sync_f.dim(1)?,
            };
            (clip_f, Some(sync_f), lens)
        };
        cancel.check()?;
        let text = self.text_features(&p.prompt)?;
        let negative = self.text_features(&p.negative_prompt)?;
        timings.text_s = lap(&mut t)?;
        let features = FeatureSet {
            clip: clip_f,
            sync: sync_f,
            text: Some(text),
            negative_text: Some(negative),
        };
        let shape = [1, lens.latent, self.net.cfg.latent_dim];
        let x0 = match x0 {
            Some(x) if x.dims() == shape => x.to_dtype(DType::F32)?.to_device(&self.device)?,
            Some(x) => {
                return Err(Error::input(format!(
                    "initial noise has shape {:?}, the window needs {shape:?}",
                    x.dims()
                )));
            }
            None => Rng::new(p.seed).randn(&shape, &self.device)?,
        };
        let sampler = EulerSampler::new(p.num_steps, p.cfg_strength);
        let latents = generate_latents(
            &self.net,
            &sampler,
            &features,
            lens,
            &x0,
            Some(cancel),
            observer,
        )?;
        timings.sampling_s = lap(&mut t)?;
        cancel.check()?;
        cancel.report(Stage::Decoding);
        let mel = self.decoder.decode_mel(&latents.to_dtype(self.dtype)?)?;
        timings.vae_s = lap(&mut t)?;
        let wav = self.decoder.vocode(&mel)?;
        let mut samples: Vec<f32> = wav.get(0)?.to_dtype(DType::F32)?.to_vec1()?;
        timings.vocoder_s = lap(&mut t)?;
        timings.decode_s = timings.vae_s + timings.vocoder_s;
        timings.total_s = start.elapsed().as_secs_f64();
        *self.last_timings.lock().unwrap() = Some(timings);
        if samples.len() < want {
            return Err(Error::input(format!(
                "decoder produced {} samples for {:.3} s, expected at least {want}",
                samples.len(),
                req.duration
            )));
        }
        samples.truncate(want);
        Ok(samples)
    }
}

impl AudioGenerator for MmAudio {
    fn sample_rate(&self) -> u32 {
        MmAudio::sample_rate(self)
    }
    fn wants_prepared_frames(&self) -> bool {
        true
    }
    fn describe(&self) -> ModelInfo {
        let mut name = format!("MMAudio {}", self.variant);
        if let Some(note) = &self.note {
            name += &format!(" ({note})");
        }
        ModelInfo {
            name,
            variant: Some(self.variant),
            sample_rate: self.sample_rate(),
            device: Some(self.device_name.clone()),
            precision: Some(format!("{:?}", self.dtype).to_lowercase()),
        }
    }
    fn generate(&mut self, req: &WindowRequest, cancel: &Cancel) -> Result<Vec<f32>> {
        self.generate_window(req, cancel, None)
    }
}

/// Load the MMAudio generator described by `opts`. Errors name the file and the reason.
pub fn load_generator(opts: &LoadOptions) -> Result<Box<dyn AudioGenerator>> {
    if opts.model_dir.as_os_str().is_empty() {
        return Err(Error::config("no model directory given"));
    }
    if !opts.model_dir.is_dir() {
        return Err(Error::MissingFile {
            path: opts.model_dir.clone(),
            what: "MMAudio model directory".into(),
        });
    }
    Ok(Box::new(load(opts, &mut |_| {})?))
}

/// Load the generator described by element/CLI options: the variant as
/// [`ModelDir::choose_variant`] decides, on the device and in the precision they ask for
/// (`auto` resolved; the result's `device_name` and `dtype` say what was chosen).
pub fn load(opts: &LoadOptions, progress: &mut dyn FnMut(&str)) -> Result<MmAudio> {
    let dir = ModelDir::open(&opts.model_dir)?;
    let variant = dir.choose_variant(opts.variant)?;
    let device = crate::device::select_device(&opts.device)?;
    let dtype = crate::device::select_dtype(&opts.precision, &device)?;
    let mut model = MmAudio::load(&dir, variant, &device, dtype, progress)?;
    model.device_name = crate::device::device_name(&opts.device, &device);
    model.note = dir.manifest.as_ref().and_then(|m| {
        m.description
            .as_deref()
            .filter(|d| d.contains("test model"))
            .map(|_| "tiny random test model: noise".to_string())
    });
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_generator_names_a_missing_directory() {
        let opts = LoadOptions {
            model_dir: "/nonexistent/mmaudio-models".into(),
            ..Default::default()
        };
        let e = load_generator(&opts).err().unwrap().to_string();
        assert!(e.contains("/nonexistent/mmaudio-models"), "{e}");
        // the test model's manifest names small_16k: that is what loads and is reported,
        // and a contradicting request is refused
        let dir = std::env::temp_dir().join(format!("mmaudio-model-load-{}", std::process::id()));
        crate::test_model::write_test_model(&dir, Mode::Khz16, 3).unwrap();
        let opts = LoadOptions {
            model_dir: dir.clone(),
            device: "auto".into(),
            ..Default::default()
        };
        let info = load_generator(&opts).unwrap().describe();
        assert_eq!(info.variant, Some(Variant::Small16k));
        assert_eq!(
            info.to_string(),
            "MMAudio small_16k (tiny random test model: noise), 16000 Hz, on cpu in f32"
        );
        let e = load_generator(&LoadOptions {
            variant: Some(Variant::Large44kV2),
            ..opts
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("not the requested large_44k_v2"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
        let e = load_generator(&LoadOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no model directory"), "{e}");
    }
}
