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
//!
//! ## Shared model, per-stream state
//!
//! [`MmAudio`] is the immutable model (every method takes `&self`; it is `Send + Sync`, so
//! one loaded model can serve many streams). What a stream carries from one window to the
//! next lives in [`MmAudioStream`], which holds an `Arc<MmAudio>` and implements
//! [`AudioGenerator`]:
//!
//! * **continuation latents**: the final latents (normalised) of the previous window with
//!   their place on the stream's latent grid; a continuation window
//!   ([`crate::request::Continuation`]) holds its known prefix from them by inpainting
//!   ([`crate::sampler::EulerSampler::sample_inpaint`]);
//! * **feature caches**, keyed by the engine's frame ids ([`VideoFrame::id`]): CLIP image
//!   features per picked source frame, Synchformer features per 16-frame segment (keyed by
//!   its 16 source frame ids). Entries of frames the engine will never send again
//!   ([`WindowRequest::retain_from`]) are evicted after each window, so the caches hold at
//!   most the frames of the windows still to come. A frame's CLIP features do not depend
//!   on the other frames of the window, nor a segment's Synchformer features on the other
//!   segments, so a hit gives the features a full computation would (up to the rounding
//!   of a different batch size). A hit needs two windows to pick the same source frames:
//!   CLIP frames when their 8 fps grids (which start at each window's start) land on the
//!   same frames, Synchformer segments when the same 16 frames fill a segment's slots, which
//!   the official slot rule (slot times accumulated from the window start) rarely repeats
//!   once windows slide (measured in BENCHMARKS.md; see `crate::window`).

use crate::NetConfig;
use crate::audio_decoder::AudioDecoder;
use crate::batch::DeviceWorker;
use crate::config::{
    CLIP_FPS, MIN_DURATION_S, Mode, SYNC_FPS, SYNC_SEGMENT_FRAMES, SYNC_STEP, SequenceConfig,
    Variant,
};
use crate::error::{Error, Result};
use crate::features::clip::{Clip, ClipConfig};
use crate::features::frames::{pick_rate, plan_frames};
use crate::features::preprocess;
use crate::features::synchformer::{Synchformer, SynchformerConfig};
use crate::features::tokenizer::ClipTokenizer;
use crate::generator::{AudioGenerator, CacheStats, LoadOptions, ModelInfo};
use crate::model_dir::{Component, ModelDir, ResolvedFile};
use crate::net::MmAudioNet;
use crate::request::{Cancel, Stage, VideoFrame, WindowRequest};
use crate::rng::Rng;
use crate::sampler::{
    EulerSampler, FeatureSet, SeqLens, StepRecord, build_conditions, generate_normalized_latents,
};
use crate::vae::VaeConfig;
use crate::vocoder::BigVganConfig;
use crate::weights::WeightFile;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, VecDeque};
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
    /// Feature-cache lookups of this window (all misses without a stream's cache).
    pub cache: CacheStats,
}

/// A window ready for the sampler ([`MmAudio::prepare_window`]): its features, sequence
/// lengths, initial noise and known latents, all of batch 1.
pub struct PreparedWindow {
    pub features: FeatureSet,
    pub lens: SeqLens,
    /// `(1, N, C)` f32.
    pub x0: Tensor,
    /// `(1, k, C)` normalised known latents of a continuation window.
    pub known: Option<Tensor>,
    pub timings: WindowTimings,
    started: Instant,
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

/// A component configuration from the manifest that does not parse: say whose.
fn manifest_config_error(r: &ResolvedFile, what: &str, e: Error) -> Error {
    Error::config(format!(
        "manifest config of the {what} ({}): {e}",
        r.path.display()
    ))
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
            Some(v) => ClipConfig::from_open_clip_json(v)
                .map_err(|e| manifest_config_error(&clip_file, "CLIP", e))?,
            None => {
                let json = clip_file.path.with_file_name("open_clip_config.json");
                if json.is_file() {
                    let in_json = |e: &dyn std::fmt::Display| {
                        Error::config(format!("{}: {e}", json.display()))
                    };
                    let text = std::fs::read_to_string(&json).map_err(|e| in_json(&e))?;
                    let v: serde_json::Value =
                        serde_json::from_str(&text).map_err(|e| in_json(&e))?;
                    ClipConfig::from_open_clip_json(&v).map_err(|e| in_json(&e))?
                } else {
                    ClipConfig::dfn5b_vit_h_14_384()
                }
            }
        };
        let clip = Clip::load(&clip_file.path, &clip_cfg, dtype, device)?;

        let sync_file = get(Component::Synchformer);
        progress(&format!("loading Synchformer {}", sync_file.path.display()));
        let sync_cfg: SynchformerConfig = match &sync_file.config {
            Some(v) => SynchformerConfig::from_motionformer_cfg(v)
                .map_err(|e| manifest_config_error(&sync_file, "Synchformer", e))?,
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

    /// Generate one independent window (no feature cache, no continuation state).
    /// `observer` sees every sampler step.
    pub fn generate_window(
        &self,
        req: &WindowRequest,
        cancel: &Cancel,
        observer: Option<&mut dyn FnMut(&StepRecord)>,
    ) -> Result<Vec<f32>> {
        self.generate_window_in(req, None, cancel, observer, None)
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
        self.generate_window_in(req, x0, cancel, observer, None)
    }

    /// Generate one window of a stream whose carried state is `stream` (continuation
    /// latents and feature caches; `None` = an independent window), from the initial noise
    /// `x0` if given (else the seeded draw).
    pub fn generate_window_in(
        &self,
        req: &WindowRequest,
        x0: Option<&Tensor>,
        cancel: &Cancel,
        observer: Option<&mut dyn FnMut(&StepRecord)>,
        mut stream: Option<&mut StreamState>,
    ) -> Result<Vec<f32>> {
        let prepared = self.prepare_window(req, x0, cancel, stream.as_deref_mut())?;
        let mut t = Instant::now();
        let sampler = EulerSampler::new(req.params.num_steps, req.params.cfg_strength);
        let x1 = generate_normalized_latents(
            &self.net,
            &sampler,
            &prepared.features,
            prepared.lens,
            &prepared.x0,
            prepared.known.as_ref(),
            Some(cancel),
            observer,
        )?;
        let sampling_s = self.lap(&mut t)?;
        self.finish_window(req, prepared, x1, sampling_s, cancel, stream)
    }

    /// Seconds since `t` once the device has finished the queued work; restarts `t`.
    fn lap(&self, t: &mut Instant) -> Result<f64> {
        self.device.synchronize()?;
        let s = t.elapsed().as_secs_f64();
        *t = Instant::now();
        Ok(s)
    }

    /// Everything of a window before the sampler: checks, the known latents from the
    /// stream, visual features (through the stream's caches), text features, initial noise.
    pub fn prepare_window(
        &self,
        req: &WindowRequest,
        x0: Option<&Tensor>,
        cancel: &Cancel,
        stream: Option<&mut StreamState>,
    ) -> Result<PreparedWindow> {
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
        let latent_len = match &req.continuation {
            Some(c) => {
                let period = self.latent_period() as usize;
                if c.latents * period != want || c.known >= c.latents || c.keep > c.latents {
                    return Err(Error::input(format!(
                        "continuation window {}: {} latents ({} known, {} kept) do not match \
                         {want} samples at {period} samples per latent",
                        req.index, c.latents, c.known, c.keep
                    )));
                }
                c.latents
            }
            None => seq.latent_seq_len(),
        };
        // the known prefix, from the stream's carried latents
        let known = match (&req.continuation, stream.as_deref()) {
            (Some(c), _) if c.known == 0 => None,
            (
                Some(c),
                Some(StreamState {
                    carried: Some(k), ..
                }),
            ) if k.first_latent <= c.first_latent
                && c.first_latent + c.known as u64 <= k.first_latent + k.len() as u64 =>
            {
                Some(
                    k.latents
                        .narrow(1, (c.first_latent - k.first_latent) as usize, c.known)?,
                )
            }
            (Some(c), state) => {
                let held = match state.and_then(|s| s.carried.as_ref()) {
                    Some(k) => format!(
                        "latents [{}, {})",
                        k.first_latent,
                        k.first_latent + k.len() as u64
                    ),
                    None => "no latents (a new stream, or the generator was reset)".into(),
                };
                return Err(Error::input(format!(
                    "continuation window {} needs the stream's latents [{}, {}), the generator \
                     holds {held}",
                    req.index,
                    c.first_latent,
                    c.first_latent + c.known as u64
                )));
            }
            (None, _) => None,
        };
        let p = &req.params;
        let mut timings = WindowTimings::default();
        let start = Instant::now();
        let mut t = Instant::now();
        cancel.report(Stage::Features);

        let (clip_f, sync_f, lens) = if req.frames.is_empty() {
            (
                None,
                None,
                SeqLens {
                    latent: latent_len,
                    ..SeqLens::from(seq)
                },
            )
        } else {
            let (ci, si) = Self::pick_frames(&req.frames, duration)?;
            let caches = stream.filter(|s| !s.cache_off).map(|s| &mut s.cache);
            let mut features = FeatureJob::new(self, req, &ci, &si, caches)?;
            timings.preprocess_s = self.lap(&mut t)?;
            cancel.check()?;
            let clip_f = if p.mask_away_clip {
                None
            } else {
                Some(features.clip()?)
            };
            timings.clip_s = self.lap(&mut t)?;
            cancel.check()?;
            let sync_f = features.sync()?;
            timings.sync_s = self.lap(&mut t)?;
            timings.features_s = timings.clip_s + timings.sync_s;
            timings.cache = features.stats;
            let lens = SeqLens {
                latent: latent_len,
                clip: ci.len(),
                sync: sync_f.dim(1)?,
            };
            (clip_f, Some(sync_f), lens)
        };
        cancel.check()?;
        let text = self.text_features(&p.prompt)?;
        let negative = self.text_features(&p.negative_prompt)?;
        timings.text_s = self.lap(&mut t)?;
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
        Ok(PreparedWindow {
            features,
            lens,
            x0,
            known,
            timings,
            started: start,
        })
    }

    /// Everything of a window after the sampler: the audio decoder, the trim to the
    /// window's samples, the stream's carried latents and cache eviction.
    pub fn finish_window(
        &self,
        req: &WindowRequest,
        prepared: PreparedWindow,
        x1: Tensor,
        sampling_s: f64,
        cancel: &Cancel,
        stream: Option<&mut StreamState>,
    ) -> Result<Vec<f32>> {
        let want = req.num_samples(self.sample_rate());
        let mut timings = prepared.timings;
        timings.sampling_s = sampling_s;
        let mut t = Instant::now();
        let latents = self.net.unnormalize(&x1)?;
        cancel.check()?;
        cancel.report(Stage::Decoding);
        let mel = self.decoder.decode_mel(&latents.to_dtype(self.dtype)?)?;
        timings.vae_s = self.lap(&mut t)?;
        let wav = self.decoder.vocode(&mel)?;
        let mut samples: Vec<f32> = wav.get(0)?.to_dtype(DType::F32)?.to_vec1()?;
        timings.vocoder_s = self.lap(&mut t)?;
        timings.decode_s = timings.vae_s + timings.vocoder_s;
        timings.total_s = prepared.started.elapsed().as_secs_f64();
        *self.last_timings.lock().unwrap() = Some(timings);
        if samples.len() < want {
            return Err(Error::input(format!(
                "decoder produced {} samples for {:.3} s, expected at least {want}",
                samples.len(),
                req.duration
            )));
        }
        samples.truncate(want);
        if let Some(state) = stream {
            if let Some(c) = &req.continuation {
                state.carried = Some(Carried {
                    first_latent: c.first_latent,
                    latents: x1.narrow(1, 0, c.keep)?.contiguous()?,
                });
            }
            if let Some(r) = req.retain_from {
                state.cache.evict_below(r);
            }
        }
        Ok(samples)
    }

    /// What was loaded, for the messages that report it.
    pub fn describe(&self) -> ModelInfo {
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

    /// Output samples per latent (2 mel frames): 512 at 16 kHz, 1024 at 44.1 kHz.
    pub fn latent_period(&self) -> u32 {
        2 * self.mode.hop_length() as u32
    }
}

/// The final latents of a stream's previous window, normalised, with their place on the
/// stream's latent grid.
#[derive(Debug, Clone)]
pub struct Carried {
    /// Stream latent index of `latents[0]`.
    pub first_latent: u64,
    /// `(1, n, C)` f32, in the network's normalised space.
    pub latents: Tensor,
}

impl Carried {
    fn len(&self) -> usize {
        self.latents.dim(1).unwrap_or(0)
    }
}

/// Per-frame feature caches of one stream (see the module documentation).
#[derive(Debug, Default)]
pub struct FeatureCache {
    /// Frame id → CLIP image features `(D,)`.
    clip: BTreeMap<u64, Tensor>,
    /// The 16 source frame ids of a segment → Synchformer features `(8, D)`.
    sync: BTreeMap<Vec<u64>, Tensor>,
    pub stats: CacheStats,
}

/// Entries kept without an eviction horizon from the engine (requests made by hand).
const CACHE_LIMIT: usize = 4096;

impl FeatureCache {
    /// Forget the entries of frames with ids below `id`.
    pub fn evict_below(&mut self, id: u64) {
        self.clip = self.clip.split_off(&id);
        self.sync = self.sync.split_off(&vec![id]);
    }
    /// Cached CLIP frames and Synchformer segments.
    pub fn len(&self) -> (usize, usize) {
        (self.clip.len(), self.sync.len())
    }
    pub fn is_empty(&self) -> bool {
        self.clip.is_empty() && self.sync.is_empty()
    }
    fn bound(&mut self) {
        while self.clip.len() > CACHE_LIMIT {
            self.clip.pop_first();
        }
        while self.sync.len() > CACHE_LIMIT {
            self.sync.pop_first();
        }
    }
}

/// What a stream carries between windows: continuation latents and feature caches.
#[derive(Debug, Default)]
pub struct StreamState {
    pub carried: Option<Carried>,
    pub cache: FeatureCache,
    /// Compute every window's features from scratch (benchmarks of the cache's effect).
    pub cache_off: bool,
}

/// The visual features of one window, computed through the stream's caches when there are
/// any (and the frames have ids), else directly as the official code does.
struct FeatureJob<'a> {
    model: &'a MmAudio,
    frames: &'a [VideoFrame],
    clip_idx: &'a [usize],
    sync_idx: &'a [usize],
    cache: Option<&'a mut FeatureCache>,
    stats: CacheStats,
}

impl<'a> FeatureJob<'a> {
    fn new(
        model: &'a MmAudio,
        req: &'a WindowRequest,
        clip_idx: &'a [usize],
        sync_idx: &'a [usize],
        cache: Option<&'a mut FeatureCache>,
    ) -> Result<Self> {
        let ids_known = req.frames.iter().all(|f| f.id.is_some());
        Ok(Self {
            model,
            frames: &req.frames,
            clip_idx,
            sync_idx,
            cache: cache.filter(|_| ids_known),
            stats: CacheStats::default(),
        })
    }

    fn id(&self, i: usize) -> u64 {
        self.frames[i].id.expect("checked in new")
    }

    /// CLIP image features `(1, T, D)` of the picked frames.
    fn clip(&mut self) -> Result<Tensor> {
        let m = self.model;
        let encode = |idx: &[usize]| -> Result<Tensor> {
            let x = preprocess::clip_frames(self.frames, idx, &m.device)?;
            m.clip
                .vision
                .encode_video(&x.to_dtype(m.dtype)?.unsqueeze(0)?)
        };
        if self.cache.is_none() {
            self.stats.clip_misses += distinct(self.clip_idx).len() as u64;
            return encode(self.clip_idx);
        }
        let ids: Vec<u64> = self.clip_idx.iter().map(|&i| self.id(i)).collect();
        let cache = self.cache.as_deref_mut().expect("checked above");
        let mut missing = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (&i, &id) in self.clip_idx.iter().zip(&ids) {
            if seen.insert(id) {
                if cache.clip.contains_key(&id) {
                    self.stats.clip_hits += 1;
                } else {
                    self.stats.clip_misses += 1;
                    missing.push(i);
                }
            }
        }
        if !missing.is_empty() {
            let f = encode(&missing)?.squeeze(0)?;
            let cache = self.cache.as_deref_mut().expect("checked above");
            for (k, &i) in missing.iter().enumerate() {
                cache
                    .clip
                    .insert(self.frames[i].id.expect("checked"), f.get(k)?);
            }
        }
        let cache = self.cache.as_deref_mut().expect("checked above");
        let rows: Vec<Tensor> = ids.iter().map(|id| cache.clip[id].clone()).collect();
        cache.stats.clip_hits += self.stats.clip_hits;
        cache.stats.clip_misses += self.stats.clip_misses;
        cache.bound();
        Ok(Tensor::stack(&rows, 0)?.unsqueeze(0)?)
    }

    /// Synchformer features `(1, S·8, D)` of the picked frames.
    fn sync(&mut self) -> Result<Tensor> {
        let m = self.model;
        let encode = |idx: &[usize]| -> Result<Tensor> {
            let x = preprocess::sync_frames(self.frames, idx, &m.device)?;
            m.synchformer
                .encode_video(&x.to_dtype(m.dtype)?.unsqueeze(0)?)
        };
        let n_seg = crate::features::frames::sync_num_segments(self.sync_idx.len())?;
        if self.cache.is_none() {
            self.stats.sync_misses += n_seg as u64;
            return encode(self.sync_idx);
        }
        let (seg, step) = (SYNC_SEGMENT_FRAMES, SYNC_STEP);
        let keys: Vec<Vec<u64>> = (0..n_seg)
            .map(|s| {
                self.sync_idx[s * step..s * step + seg]
                    .iter()
                    .map(|&i| self.id(i))
                    .collect()
            })
            .collect();
        let cache = self.cache.as_deref_mut().expect("checked above");
        let hit: Vec<bool> = keys.iter().map(|k| cache.sync.contains_key(k)).collect();
        // runs of consecutive missing segments are encoded as one clip each
        let mut s = 0;
        while s < n_seg {
            if hit[s] {
                self.stats.sync_hits += 1;
                s += 1;
                continue;
            }
            let mut e = s;
            while e < n_seg && !hit[e] {
                e += 1;
            }
            self.stats.sync_misses += (e - s) as u64;
            let slots = &self.sync_idx[s * step..(e - 1) * step + seg];
            let f = encode(slots)?.squeeze(0)?; // ((e − s)·8, D)
            let per = f.dim(0)? / (e - s);
            let cache = self.cache.as_deref_mut().expect("checked above");
            for (k, key) in keys[s..e].iter().enumerate() {
                cache.sync.insert(key.clone(), f.narrow(0, k * per, per)?);
            }
            s = e;
        }
        let cache = self.cache.as_deref_mut().expect("checked above");
        let parts: Vec<Tensor> = keys.iter().map(|k| cache.sync[k].clone()).collect();
        cache.stats.sync_hits += self.stats.sync_hits;
        cache.stats.sync_misses += self.stats.sync_misses;
        cache.bound();
        Ok(Tensor::cat(&parts, 0)?.unsqueeze(0)?)
    }
}

fn distinct(idx: &[usize]) -> Vec<usize> {
    let mut v = idx.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// The MMAudio generator of one stream: a shared [`MmAudio`] plus what the stream carries
/// from window to window ([`StreamState`]). This is what [`load_generator`] returns.
pub struct MmAudioStream {
    model: Arc<MmAudio>,
    state: StreamState,
    /// The device's sampler worker, which batches this stream's windows with other
    /// streams' ([`crate::batch`]); `None`: sample on the calling thread.
    worker: Option<Arc<DeviceWorker>>,
}

impl MmAudioStream {
    pub fn new(model: Arc<MmAudio>) -> Self {
        Self {
            model,
            state: StreamState::default(),
            worker: None,
        }
    }
    /// A stream whose sampling goes through `worker` (batched with other streams').
    pub fn with_worker(model: Arc<MmAudio>, worker: Arc<DeviceWorker>) -> Self {
        Self {
            worker: Some(worker),
            ..Self::new(model)
        }
    }
    pub fn worker(&self) -> Option<&Arc<DeviceWorker>> {
        self.worker.as_ref()
    }
    pub fn model(&self) -> &Arc<MmAudio> {
        &self.model
    }
    pub fn state(&self) -> &StreamState {
        &self.state
    }
    /// Switch the feature caches off (every window computes all its features) or on.
    pub fn set_feature_cache(&mut self, on: bool) {
        self.state.cache_off = !on;
        if !on {
            self.state.cache = FeatureCache::default();
        }
    }
    /// [`AudioGenerator::generate`] with a sampler-step observer.
    pub fn generate_with(
        &mut self,
        req: &WindowRequest,
        cancel: &Cancel,
        observer: Option<&mut dyn FnMut(&StepRecord)>,
    ) -> Result<Vec<f32>> {
        let Some(worker) = self.worker.as_ref().filter(|_| observer.is_none()) else {
            return self.model.generate_window_in(
                req,
                None,
                cancel,
                observer,
                Some(&mut self.state),
            );
        };
        let m = &self.model;
        let guard = worker.preparing();
        let prepared = m.prepare_window(req, None, cancel, Some(&mut self.state))?;
        let (cond, uncond) = build_conditions(&m.net, 1, &prepared.features, prepared.lens)?;
        let sampler = EulerSampler::new(req.params.num_steps, req.params.cfg_strength);
        let (x1, sampling_s) = worker.sample(
            guard,
            m,
            prepared.x0.clone(),
            prepared.known.clone(),
            cond,
            uncond,
            &sampler,
            cancel,
        )?;
        m.finish_window(req, prepared, x1, sampling_s, cancel, Some(&mut self.state))
    }
}

impl MmAudioStream {
    /// Several windows of this stream at once (windows mode, `--batch-windows`): features
    /// window by window through the stream's caches, then all of them queued to the
    /// device worker together, so those of the same length share one network batch, then
    /// decoded in order. Without a worker, or when a window holds latents of the one before
    /// it (continuation), they are generated one after the other.
    pub fn generate_windows(
        &mut self,
        reqs: &[WindowRequest],
        cancel: &Cancel,
    ) -> Result<Vec<Vec<f32>>> {
        let chained = reqs
            .iter()
            .any(|r| r.continuation.is_some_and(|c| c.known > 0));
        let worker = match &self.worker {
            Some(w) if reqs.len() > 1 && !chained => w.clone(),
            _ => {
                return reqs
                    .iter()
                    .map(|r| self.generate_with(r, cancel, None))
                    .collect();
            }
        };
        let m = self.model.clone();
        let guard = worker.preparing();
        let mut prepared = Vec::with_capacity(reqs.len());
        let mut items = Vec::with_capacity(reqs.len());
        for r in reqs {
            let p = m.prepare_window(r, None, cancel, Some(&mut self.state))?;
            let (cond, uncond) = build_conditions(&m.net, 1, &p.features, p.lens)?;
            items.push(crate::batch::WindowItem {
                x0: p.x0.clone(),
                known: p.known.clone(),
                cond,
                uncond,
                steps: r.params.num_steps,
                cfg: r.params.cfg_strength,
            });
            prepared.push(p);
        }
        let sampled = worker.sample_many(guard, &m, items, cancel);
        reqs.iter()
            .zip(prepared)
            .zip(sampled)
            .map(|((r, p), x)| {
                let (x1, secs) = x?;
                m.finish_window(r, p, x1, secs, cancel, Some(&mut self.state))
            })
            .collect()
    }
}

impl AudioGenerator for MmAudioStream {
    fn sample_rate(&self) -> u32 {
        self.model.sample_rate()
    }
    fn wants_prepared_frames(&self) -> bool {
        true
    }
    fn picks_frames(&self) -> bool {
        true
    }
    fn latent_period(&self) -> u32 {
        self.model.latent_period()
    }
    fn reset(&mut self) {
        self.state = StreamState {
            cache_off: self.state.cache_off,
            ..Default::default()
        };
    }
    fn cache_stats(&self) -> Option<CacheStats> {
        Some(self.state.cache.stats)
    }
    fn describe(&self) -> ModelInfo {
        self.model.describe()
    }
    fn generate(&mut self, req: &WindowRequest, cancel: &Cancel) -> Result<Vec<f32>> {
        self.generate_with(req, cancel, None)
    }
    fn generate_many(&mut self, reqs: &[WindowRequest], cancel: &Cancel) -> Result<Vec<Vec<f32>>> {
        self.generate_windows(reqs, cancel)
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
    Ok(Box::new(MmAudioStream::new(Arc::new(load(
        opts,
        &mut |_| {},
    )?))))
}

/// Load the generator described by element/CLI options: the variant as
/// [`ModelDir::choose_variant`] decides, on the device and in the precision they ask for
/// (`auto` resolved; the result's `device_name` and `dtype` say what was chosen).
pub fn load(opts: &LoadOptions, progress: &mut dyn FnMut(&str)) -> Result<MmAudio> {
    load_resolved(&Resolved::new(opts)?, progress)
}

/// What [`load`] would load: the folder, the variant it holds or was asked for, the device
/// and precision with `auto` decided. Two option sets that resolve alike load the same model
/// (the process-wide registry, `crate::shared`, keys on this).
pub struct Resolved {
    pub dir: ModelDir,
    pub variant: Variant,
    pub device: Device,
    /// `cpu`, `cuda:0`, ...
    pub device_name: String,
    pub dtype: DType,
}

impl Resolved {
    pub fn new(opts: &LoadOptions) -> Result<Self> {
        let dir = ModelDir::open(&opts.model_dir)?;
        let variant = dir.choose_variant(opts.variant)?;
        let device = crate::device::select_device(&opts.device)?;
        let dtype = crate::device::select_dtype(&opts.precision, &device)?;
        let device_name = crate::device::device_name(&opts.device, &device);
        Ok(Self {
            dir,
            variant,
            device,
            device_name,
            dtype,
        })
    }
}

/// [`load`] of resolved options.
pub fn load_resolved(r: &Resolved, progress: &mut dyn FnMut(&str)) -> Result<MmAudio> {
    let dir = &r.dir;
    let mut model = MmAudio::load(dir, r.variant, &r.device, r.dtype, progress)?;
    model.device_name = r.device_name.clone();
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
    use crate::request::{Continuation, GenerationParams};

    fn tiny() -> Arc<MmAudio> {
        Arc::new(
            crate::bench::pipeline::random_mmaudio(
                Variant::Small16k,
                &Device::Cpu,
                DType::F32,
                true,
                5,
            )
            .unwrap(),
        )
    }

    /// 25 fps frames of a moving gradient with ids `first_id..`, halfway between the 25 fps
    /// slots (no ties), pts relative to `t0_s`.
    fn frames(first_id: u64, n: usize, t0_s: f64) -> Vec<VideoFrame> {
        let (w, h) = (24usize, 16usize);
        (0..n)
            .map(|k| {
                let id = first_id + k as u64;
                let data: Vec<u8> = (0..w * h * 3)
                    .map(|i| ((i / 3 % w) * 7 + id as usize * 13 + (i % 3) * 50) as u8)
                    .collect();
                VideoFrame {
                    id: Some(id),
                    ..VideoFrame::rgb(
                        ((k as f64 + 0.5) / 25.0 - t0_s).max(0.0),
                        w,
                        h,
                        Arc::new(data),
                    )
                }
            })
            .collect()
    }

    fn params() -> GenerationParams {
        GenerationParams {
            prompt: "rain".into(),
            num_steps: 3,
            ..Default::default()
        }
    }

    /// Two continuation windows of 40 latents (1.28 s at 16 kHz), the second starting 10
    /// latents (0.32 s = 8 frames) later and holding 30 latents.
    fn two_windows() -> (WindowRequest, WindowRequest) {
        let r0 = WindowRequest {
            index: 0,
            duration: 1.28,
            frames: frames(0, 32, 0.0),
            params: params(),
            continuation: Some(Continuation {
                first_latent: 0,
                latents: 40,
                known: 0,
                keep: 40,
            }),
            retain_from: Some(0),
            ..Default::default()
        };
        let r1 = WindowRequest {
            index: 1,
            start: 0.32,
            duration: 1.28,
            frames: frames(8, 32, 0.0),
            params: GenerationParams {
                seed: 43,
                ..params()
            },
            continuation: Some(Continuation {
                first_latent: 10,
                latents: 40,
                known: 30,
                keep: 40,
            }),
            retain_from: Some(8),
        };
        (r0, r1)
    }

    #[test]
    fn continuation_reproduces_the_known_prefix_exactly() {
        let model = tiny();
        let mut g = MmAudioStream::new(model.clone());
        let (r0, r1) = two_windows();
        let cancel = Cancel::new();
        let a0 = g.generate(&r0, &cancel).unwrap();
        assert_eq!(a0.len(), 40 * 512);
        let k0 = g.state().carried.clone().unwrap();
        assert_eq!(k0.first_latent, 0);
        let a1 = g.generate(&r1, &cancel).unwrap();
        assert_eq!(a1.len(), 40 * 512);
        let k1 = g.state().carried.clone().unwrap();
        assert_eq!(k1.first_latent, 10);
        // latents 10..40 of window 0 are latents 0..30 of window 1, bit for bit
        let held: Vec<f32> = k0
            .latents
            .narrow(1, 10, 30)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let got: Vec<f32> = k1
            .latents
            .narrow(1, 0, 30)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(held, got);
        // the new latents are not a copy of anything held
        let new: Vec<f32> = k1
            .latents
            .narrow(1, 30, 10)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(new.iter().all(|x| x.is_finite()));
        assert_ne!(new, held[..new.len()].to_vec());

        // After a reset the generator no longer holds the latents: a clear error.
        g.reset();
        let e = g.generate(&r1, &cancel).unwrap_err().to_string();
        assert!(
            e.contains("needs the stream's latents [10, 40)") && e.contains("reset"),
            "{e}"
        );
        // A window without continuation is what generate_window gives.
        let mut plain = r0.clone();
        plain.continuation = None;
        let a = g.generate(&plain, &cancel).unwrap();
        let b = model.generate_window(&plain, &cancel, None).unwrap();
        assert_eq!(a, b);
    }

    /// The caches give the features a full computation gives, and a continuation window
    /// decodes the same whatever computed its features; decoding is repeatable (the same
    /// history gives the same audio, bit for bit).
    #[test]
    fn caches_match_a_full_computation_and_decoding_is_repeatable() {
        let model = tiny();
        let cancel = Cancel::new();
        let (r0, r1) = two_windows();
        let mut g = MmAudioStream::new(model.clone());
        g.generate(&r0, &cancel).unwrap();
        let a1 = g.generate(&r1, &cancel).unwrap();
        let stats = g.cache_stats().unwrap();
        // window 1 starts 8 frames later: its first two 25 fps segments are window 0's
        // last two; its 8 fps picks (3.125 frames apart) land on other frames
        assert_eq!(
            (stats.sync_misses, stats.sync_hits),
            (3 + 1, 2),
            "{stats:?}"
        );
        assert_eq!(
            (stats.clip_misses, stats.clip_hits),
            (10 + 10, 0),
            "{stats:?}"
        );
        // frames 0..8 are evicted (retain_from = 8)
        assert!(g.state().cache.clip.keys().all(|&id| id >= 8));
        // the same history again: the same audio, bit for bit
        let mut again = MmAudioStream::new(model.clone());
        again.generate(&r0, &cancel).unwrap();
        assert_eq!(again.generate(&r1, &cancel).unwrap(), a1);

        // window 1 with cold caches (every feature computed): the same features and
        // latents up to rounding (the tiny random decoder's saturated output would turn
        // a rounding difference into a sign flip, so the audio is not compared)
        let mut cold = MmAudioStream::new(model.clone());
        cold.set_feature_cache(false);
        cold.generate(&r0, &cancel).unwrap();
        cold.generate(&r1, &cancel).unwrap();
        assert_eq!(cold.cache_stats().unwrap().sync_hits, 0);
        let lat = |g: &MmAudioStream| -> Vec<f32> {
            let k = g.state().carried.as_ref().unwrap();
            k.latents.flatten_all().unwrap().to_vec1().unwrap()
        };
        assert!(max_diff(&lat(&g), &lat(&cold)) < 1e-3);

        // features through the cache against a full computation, for window 1 after
        // window 0, and for two independent 2 s windows 1 s apart: CLIP frames recur when
        // windows move by a whole second (25 frames = 8 slots), 8 of 16 picks
        let wa = WindowRequest {
            duration: 2.0,
            frames: frames(0, 50, 0.0),
            params: params(),
            ..Default::default()
        };
        let wb = WindowRequest {
            index: 1,
            start: 1.0,
            frames: frames(25, 50, 0.0),
            ..wa.clone()
        };
        for (first, second, hits) in [(&r0, &r1, (0, 2)), (&wa, &wb, (8, 0))] {
            let mut cache = FeatureCache::default();
            features(&model, first, Some(&mut cache));
            cache.stats = CacheStats::default();
            let (c_hot, s_hot) = features(&model, second, Some(&mut cache));
            assert_eq!((cache.stats.clip_hits, cache.stats.sync_hits), hits);
            let (c_full, s_full) = features(&model, second, None);
            assert!(max_diff(&c_hot, &c_full) < 1e-5, "clip");
            assert!(max_diff(&s_hot, &s_full) < 1e-5, "sync");
        }
    }

    fn features(
        model: &MmAudio,
        req: &WindowRequest,
        cache: Option<&mut FeatureCache>,
    ) -> (Vec<f32>, Vec<f32>) {
        let (ci, si) = MmAudio::pick_frames(&req.frames, req.duration).unwrap();
        let mut job = FeatureJob::new(model, req, &ci, &si, cache).unwrap();
        let flat = |t: Tensor| -> Vec<f32> {
            t.to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        (flat(job.clip().unwrap()), flat(job.sync().unwrap()))
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Window requests of two different streams: own prompt, negative prompt, seed, frames.
    fn stream_windows(which: u64) -> (WindowRequest, WindowRequest) {
        let (mut r0, mut r1) = two_windows();
        for (r, seed) in [(&mut r0, 100 + which), (&mut r1, 200 + which)] {
            r.params.prompt = format!("stream {which}");
            r.params.negative_prompt = if which == 0 { "" } else { "music" }.into();
            r.params.seed = seed;
            r.frames = r
                .frames
                .iter()
                .map(|f| {
                    let data: Vec<u8> = f
                        .data
                        .iter()
                        .map(|&v| v.wrapping_add(which as u8 * 90))
                        .collect();
                    VideoFrame {
                        data: Arc::new(data),
                        ..f.clone()
                    }
                })
                .collect();
        }
        (r0, r1)
    }

    /// Run `reqs[i]` on `streams[i]` at once through a held worker: released when all are
    /// queued, so they form one round.
    fn batched_round(
        worker: &DeviceWorker,
        streams: &mut [MmAudioStream],
        reqs: &[WindowRequest],
        cancels: &[Cancel],
    ) -> Vec<Result<Vec<f32>>> {
        worker.hold();
        std::thread::scope(|s| {
            let hs: Vec<_> = streams
                .iter_mut()
                .zip(reqs)
                .zip(cancels)
                .map(|((g, r), c)| s.spawn(move || g.generate(r, c)))
                .collect();
            let t = Instant::now();
            while worker.queued() < reqs.len() {
                assert!(t.elapsed().as_secs() < 60, "items never queued");
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            worker.release();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Two streams sampled in one batch (fresh windows, then continuation windows holding
    /// their own known latents) give what each gives alone; items whose step counts differ
    /// are not batched and still give their own result.
    #[test]
    fn batched_streams_match_each_alone() {
        let model = tiny();
        let cancel = Cancel::new();
        let reqs: Vec<(WindowRequest, WindowRequest)> = (0..2).map(stream_windows).collect();
        let alone: Vec<(Vec<f32>, Vec<f32>)> = reqs
            .iter()
            .map(|(r0, r1)| {
                let mut g = MmAudioStream::new(model.clone());
                (
                    g.generate(r0, &cancel).unwrap(),
                    g.generate(r1, &cancel).unwrap(),
                )
            })
            .collect();
        assert!(
            max_diff(&alone[0].0, &alone[1].0) > 1e-3,
            "the streams differ"
        );
        let worker = DeviceWorker::start("cpu", crate::batch::BatchOptions::default()).unwrap();
        let worker = Arc::new(worker);
        let mut streams: Vec<MmAudioStream> = (0..2)
            .map(|_| MmAudioStream::with_worker(model.clone(), worker.clone()))
            .collect();
        let cancels = [Cancel::new(), Cancel::new()];
        let first: Vec<WindowRequest> = reqs.iter().map(|r| r.0.clone()).collect();
        let out = batched_round(&worker, &mut streams, &first, &cancels);
        let st = worker.stats();
        assert_eq!((st.batches, st.largest), (1, 2), "{st:?}");
        for (o, a) in out.iter().zip(&alone) {
            let o = o.as_ref().unwrap();
            assert_eq!(o.len(), 40 * 512);
            assert!(max_diff(o, &a.0) < 1e-4, "{}", max_diff(o, &a.0));
        }
        // continuation windows: each item holds its own stream's latents
        let second: Vec<WindowRequest> = reqs.iter().map(|r| r.1.clone()).collect();
        let out = batched_round(&worker, &mut streams, &second, &cancels);
        let st = worker.stats();
        assert_eq!((st.batches, st.sizes.clone()), (2, vec![0, 2]), "{st:?}");
        for (o, a) in out.iter().zip(&alone) {
            let o = o.as_ref().unwrap();
            assert!(max_diff(o, &a.1) < 1e-4, "{}", max_diff(o, &a.1));
        }
        // different step counts: two batches of one, each as alone
        let mut third = first.clone();
        third[1].params.num_steps = 2;
        for g in &mut streams {
            g.reset();
        }
        let out = batched_round(&worker, &mut streams, &third, &cancels);
        let st = worker.stats();
        assert_eq!((st.batches, st.sizes.clone()), (4, vec![2, 2]), "{st:?}");
        let mut g = MmAudioStream::new(model.clone());
        let two_steps = g.generate(&third[1], &cancel).unwrap();
        assert!(max_diff(out[0].as_ref().unwrap(), &alone[0].0) < 1e-4);
        assert!(max_diff(out[1].as_ref().unwrap(), &two_steps) < 1e-4);
    }

    /// Several windows of one stream generated as one batch (windows mode) give what they
    /// give one by one, through the stream's feature caches.
    #[test]
    fn a_streams_windows_batched_match_one_by_one() {
        let model = tiny();
        let reqs: Vec<WindowRequest> = (0..3u64)
            .map(|k| WindowRequest {
                index: k,
                start: 0.32 * k as f64,
                duration: 1.28,
                frames: frames(8 * k, 32, 0.32 * k as f64),
                params: GenerationParams {
                    seed: 7 + k,
                    ..params()
                },
                retain_from: Some(8 * k),
                ..Default::default()
            })
            .collect();
        let cancel = Cancel::new();
        let mut alone = MmAudioStream::new(model.clone());
        let one: Vec<Vec<f32>> = reqs
            .iter()
            .map(|r| alone.generate(r, &cancel).unwrap())
            .collect();
        let worker =
            Arc::new(DeviceWorker::start("cpu", crate::batch::BatchOptions::default()).unwrap());
        let mut g = MmAudioStream::with_worker(model.clone(), worker.clone());
        let many = g.generate_many(&reqs, &cancel).unwrap();
        let st = worker.stats();
        assert_eq!((st.batches, st.largest), (1, 3), "{st:?}");
        for (a, b) in one.iter().zip(&many) {
            assert_eq!(a.len(), b.len());
            assert!(max_diff(a, b) < 1e-4, "{}", max_diff(a, b));
        }
        // the same caches were used: the later windows found the earlier ones' frames
        assert_eq!(g.cache_stats(), alone.cache_stats());
    }

    /// An item cancelled in the middle of a batch leaves it; the other item's result is what
    /// it gives alone. A stream whose queued item is cancelled returns at once.
    #[test]
    fn cancelling_one_batched_item_leaves_the_other_intact() {
        let model = tiny();
        let m = &model;
        let prep = |r: &WindowRequest| {
            let p = m.prepare_window(r, None, &Cancel::new(), None).unwrap();
            let (c, u) = build_conditions(&m.net, 1, &p.features, p.lens).unwrap();
            (p, c, u)
        };
        let (a, b) = (stream_windows(0).0, stream_windows(1).0);
        let (pa, ca, ua) = prep(&a);
        let (pb, cb, ub) = prep(&b);
        let sampler = EulerSampler::new(4, 4.5);
        let (cancel_a, cancel_b) = (Cancel::new(), Cancel::new());
        let items = || {
            vec![
                crate::sampler::BatchItem {
                    x0: &pa.x0,
                    known: None,
                    cond: &ca,
                    uncond: &ua,
                    cancel: &cancel_a,
                },
                crate::sampler::BatchItem {
                    x0: &pb.x0,
                    known: None,
                    cond: &cb,
                    uncond: &ub,
                    cancel: &cancel_b,
                },
            ]
        };
        let flat = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
        let alone_b = sampler
            .sample(&m.net, &pb.x0, &cb, &ub, None, None)
            .unwrap();
        let both = crate::sampler::sample_batch(&m.net, &sampler, &items());
        assert!(max_diff(&flat(both[1].as_ref().unwrap()), &flat(&alone_b)) < 1e-5);
        // cancel the first item before step 2: the second goes on from its own row
        let out = crate::sampler::sample_batch_observed(&m.net, &sampler, &items(), &mut |k| {
            if k == 2 {
                cancel_a.cancel()
            }
        });
        assert!(matches!(out[0], Err(Error::Aborted)));
        let got = flat(out[1].as_ref().unwrap());
        assert!(
            max_diff(&got, &flat(&alone_b)) < 1e-5,
            "{}",
            max_diff(&got, &flat(&alone_b))
        );

        // through the worker: a queued item cancelled returns Aborted, the other completes
        let worker =
            Arc::new(DeviceWorker::start("cpu", crate::batch::BatchOptions::default()).unwrap());
        let mut streams: Vec<MmAudioStream> = (0..2)
            .map(|_| MmAudioStream::with_worker(model.clone(), worker.clone()))
            .collect();
        let alone = MmAudioStream::new(model.clone())
            .generate(&b, &Cancel::new())
            .unwrap();
        let cancels = [Cancel::new(), Cancel::new()];
        worker.hold();
        let out = std::thread::scope(|s| {
            let (ga, gb) = streams.split_at_mut(1);
            let ha = s.spawn(|| ga[0].generate(&a, &cancels[0]));
            let hb = s.spawn(|| gb[0].generate(&b, &cancels[1]));
            while worker.queued() < 2 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            cancels[0].cancel();
            let ra = ha.join().unwrap();
            assert!(matches!(ra, Err(Error::Aborted)), "returns while held");
            worker.release();
            hb.join().unwrap()
        });
        assert!(max_diff(&out.unwrap(), &alone) < 1e-4);
    }

    #[test]
    fn the_model_is_shared_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<MmAudio>();
    }

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
