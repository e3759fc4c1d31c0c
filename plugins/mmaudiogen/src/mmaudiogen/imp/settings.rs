//! The properties: their defaults, specs and values (`Settings`).

use super::*;

pub(super) const DEFAULT_DEVICE: &str = "auto";
pub(super) const DEFAULT_NUM_STEPS: u32 = 25;
pub(super) const DEFAULT_CFG_STRENGTH: f64 = 4.5;
pub(super) const DEFAULT_SEED: u64 = 42;
pub(super) const DEFAULT_WINDOW_MS: u32 = 8000;
pub(super) const DEFAULT_OVERLAP_MS: u32 = 1000;
pub(super) const DEFAULT_MAX_IN_FLIGHT: u32 = 2;
pub(super) const DEFAULT_PROCESSING_LATENCY_MS: u32 = 2000;
pub(super) const DEFAULT_HOP_MS: u32 = 1000;

/// The folder used when `model-dir` is not set: `$MMAUDIO_MODEL_DIR`, else `models` in the
/// current directory (where `scripts/quickstart.sh` and `mmaudio fetch-weights --dir models`
/// put the weights; the same default as `mmaudio generate`), so that
/// `... ! decodebin ! mmaudiogen ! ...` works as typed.
pub(super) fn default_model_dir() -> PathBuf {
    std::env::var_os("MMAUDIO_MODEL_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("models"), PathBuf::from)
}

/// The properties.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) model_dir: Option<String>,
    pub(super) variant: ModelVariant,
    pub(super) device: String,
    pub(super) precision: ModelPrecision,
    pub(super) prompt: String,
    pub(super) negative_prompt: String,
    pub(super) num_steps: u32,
    pub(super) cfg_strength: f64,
    pub(super) seed: u64,
    pub(super) mask_away_clip: bool,
    pub(super) text_only: bool,
    pub(super) window_ms: u32,
    pub(super) overlap_ms: u32,
    pub(super) max_in_flight: u32,
    pub(super) processing_latency_ms: u32,
    pub(super) mode: GenerationMode,
    pub(super) hop_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model_dir: None,
            variant: ModelVariant::default(),
            device: DEFAULT_DEVICE.into(),
            precision: ModelPrecision::default(),
            prompt: String::new(),
            negative_prompt: String::new(),
            num_steps: DEFAULT_NUM_STEPS,
            cfg_strength: DEFAULT_CFG_STRENGTH,
            seed: DEFAULT_SEED,
            mask_away_clip: false,
            text_only: false,
            window_ms: DEFAULT_WINDOW_MS,
            overlap_ms: DEFAULT_OVERLAP_MS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            processing_latency_ms: DEFAULT_PROCESSING_LATENCY_MS,
            mode: GenerationMode::default(),
            hop_ms: DEFAULT_HOP_MS,
        }
    }
}

impl Settings {
    pub(super) fn params(&self) -> GenerationParams {
        GenerationParams {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            num_steps: self.num_steps as usize,
            cfg_strength: self.cfg_strength,
            seed: self.seed,
            mask_away_clip: self.mask_away_clip,
        }
    }

    pub(super) fn load_options(&self) -> LoadOptions {
        LoadOptions {
            model_dir: match self.model_dir.as_deref() {
                Some(dir) if !dir.is_empty() => PathBuf::from(dir),
                _ => default_model_dir(),
            },
            variant: self.variant.requested(),
            device: self.device.clone(),
            precision: self.precision.as_str().into(),
        }
    }

    pub(super) fn window(&self) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(self.window_ms as u64)
    }

    /// Time between window starts of `windows` mode.
    pub(super) fn hop(&self) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(self.window_ms.saturating_sub(self.overlap_ms) as u64)
    }

    /// The window geometry of the current `mode` at `rate` with `period` samples per
    /// latent (errors name the offending property and its allowed range).
    // `mmaudio::Error` is large (it carries paths and shapes); it is the engine's type.
    #[allow(clippy::result_large_err)]
    pub(super) fn engine(&self, rate: u32, period: u32) -> Result<EngineConfig, mmaudio::Error> {
        Ok(match self.mode {
            GenerationMode::Windows => {
                WindowConfig::from_millis(rate, self.window_ms as u64, self.overlap_ms as u64)?
                    .into()
            }
            GenerationMode::Continuation => ContinuationConfig::from_millis(
                rate,
                period,
                self.window_ms as u64,
                self.hop_ms as u64,
            )?
            .into(),
        })
    }

    pub(super) fn processing_latency(&self) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(self.processing_latency_ms as u64)
    }
}

/// The property specs, in the order `gst-inspect-1.0` lists them.
pub(super) fn param_specs() -> Vec<glib::ParamSpec> {
    let d = Settings::default();
    vec![
        glib::ParamSpecString::builder("model-dir")
            .nick("Model directory")
            .blurb(
                "Folder with the MMAudio weight files (flow network, VAE, vocoder, \
                 CLIP, Synchformer), loaded at READY→PAUSED. Unset: $MMAUDIO_MODEL_DIR, \
                 else ./models",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("variant", d.variant)
            .nick("Variant")
            .blurb(
                "MMAudio checkpoint: auto = the one the model-dir holds (its mmaudio.json, \
                 else the only flow network there, else large-44k-v2); small-16k outputs \
                 16000 Hz, small-44k, medium-44k, large-44k and large-44k-v2 (the official \
                 default) 44100 Hz. Official spellings (small_16k) work too. A variant that \
                 contradicts the folder's mmaudio.json is refused",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("device")
            .nick("Device")
            .blurb(
                "Compute device: auto (CUDA device 0 if this build and the machine \
                 have one, else the CPU), cpu, or cuda:N",
            )
            .default_value(Some(DEFAULT_DEVICE))
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("precision", d.precision)
            .nick("Precision")
            .blurb("Compute precision of the networks (auto: bf16 on CUDA, f32 on CPU)")
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("prompt")
            .nick("Prompt")
            .blurb(
                "Text describing the wanted sound; a change takes effect from the \
                 next window",
            )
            .default_value(Some(""))
            .mutable_playing()
            .build(),
        glib::ParamSpecString::builder("negative-prompt")
            .nick("Negative prompt")
            .blurb(
                "Text describing sounds to avoid; a change takes effect from the next \
                 window",
            )
            .default_value(Some(""))
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("num-steps")
            .nick("Sampling steps")
            .blurb(
                "Flow-matching (Euler) steps per window: fewer is faster and coarser. \
                 Takes effect from the next window",
            )
            .minimum(1)
            .maximum(1000)
            .default_value(d.num_steps)
            .mutable_playing()
            .build(),
        glib::ParamSpecDouble::builder("cfg-strength")
            .nick("Guidance strength")
            .blurb(
                "Classifier-free guidance strength (1.0 disables guidance). Takes \
                 effect from the next window",
            )
            .minimum(0.0)
            .maximum(100.0)
            .default_value(d.cfg_strength)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt64::builder("seed")
            .nick("Seed")
            .blurb(
                "Random seed; window k uses seed + k, so a stream is reproducible. \
                 Takes effect from the next window",
            )
            .default_value(d.seed)
            .mutable_playing()
            .build(),
        glib::ParamSpecBoolean::builder("mask-away-clip")
            .nick("Mask away CLIP")
            .blurb(
                "Ignore the semantic (CLIP) video features, keep only the \
                 synchronisation features; rely on the prompt for the content. Takes \
                 effect from the next window",
            )
            .default_value(d.mask_away_clip)
            .mutable_playing()
            .build(),
        glib::ParamSpecBoolean::builder("text-only")
            .nick("Text only")
            .blurb(
                "Ignore the video content: the frames only set the timing and the \
                 audio is generated from the prompt alone (text-to-audio). Takes \
                 effect from the next window",
            )
            .default_value(d.text_only)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("window-duration")
            .nick("Window duration")
            .blurb(
                "Length of one generation window in milliseconds (MMAudio is trained \
                 on 8000; at least 640): the video context of every window. Counts \
                 towards latency in windows mode",
            )
            .minimum(640)
            .maximum(60_000)
            .default_value(d.window_ms)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("overlap")
            .nick("Overlap")
            .blurb(
                "windows mode: crossfade between consecutive windows in milliseconds, at \
                 most half the window-duration; windows start every window-duration - \
                 overlap",
            )
            .maximum(30_000)
            .default_value(d.overlap_ms)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("max-in-flight")
            .nick("Maximum windows in flight")
            .blurb(
                "Maximum number of windows queued, being generated or waiting to be \
                 pushed; beyond it the streaming thread blocks (backpressure). Bounds memory",
            )
            .minimum(1)
            .maximum(64)
            .default_value(d.max_in_flight)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("processing-latency")
            .nick("Processing latency")
            .blurb(
                "Time budget in milliseconds to generate one window, added to the \
                 reported latency; a window taking longer posts a warning",
            )
            .maximum(3_600_000)
            .default_value(d.processing_latency_ms)
            .mutable_playing()
            .build(),
        glib::ParamSpecEnum::builder_with_default("mode", d.mode)
            .nick("Mode")
            .blurb(
                "windows: independent windows of window-duration every window-duration - \
                 overlap, crossfaded (latency about one window). continuation: near-live; \
                 each window ends at the newest frame and sees window-duration of video, \
                 only its last hop is new audio, the rest is held from earlier windows \
                 (latency about hop + processing; every hop costs one window of \
                 generation)",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("hop")
            .nick("Hop")
            .blurb(
                "continuation mode: new audio per window in milliseconds, rounded to whole \
                 latents of the model (32 ms at 16 kHz, 23.2 ms at 44.1 kHz: 1000 gives \
                 992 at 16 kHz); allowed from 250 to half the window-duration. Counts \
                 towards latency (with 192 ms at 16 kHz, 139 ms at 44.1 kHz held back \
                 for the crossfade)",
            )
            .maximum(30_000)
            .default_value(d.hop_ms)
            .mutable_ready()
            .build(),
    ]
}

impl MMAudioGen {
    pub(super) fn set_setting(&self, value: &glib::Value, pspec: &glib::ParamSpec) {
        if !self.setting_may_change(pspec) {
            return;
        }
        let mut settings = lock(&self.settings);
        let mut latency_changed = false;
        match pspec.name() {
            "model-dir" => {
                settings.model_dir = value.get::<Option<String>>().expect("type checked");
            }
            "variant" => settings.variant = value.get().expect("type checked"),
            "device" => {
                settings.device = value
                    .get::<Option<String>>()
                    .expect("type checked")
                    .unwrap_or_else(|| DEFAULT_DEVICE.into());
            }
            "precision" => settings.precision = value.get().expect("type checked"),
            "prompt" => {
                settings.prompt = value
                    .get::<Option<String>>()
                    .expect("type checked")
                    .unwrap_or_default();
                gst::info!(CAT, imp = self, "Prompt set to {:?}", settings.prompt);
            }
            "negative-prompt" => {
                settings.negative_prompt = value
                    .get::<Option<String>>()
                    .expect("type checked")
                    .unwrap_or_default();
            }
            "num-steps" => settings.num_steps = value.get().expect("type checked"),
            "cfg-strength" => settings.cfg_strength = value.get().expect("type checked"),
            "seed" => settings.seed = value.get().expect("type checked"),
            "mask-away-clip" => settings.mask_away_clip = value.get().expect("type checked"),
            "text-only" => settings.text_only = value.get().expect("type checked"),
            "window-duration" => {
                settings.window_ms = value.get().expect("type checked");
                latency_changed = true;
            }
            "overlap" => {
                settings.overlap_ms = value.get().expect("type checked");
                latency_changed = true;
            }
            "max-in-flight" => {
                settings.max_in_flight = value.get().expect("type checked");
                let max = settings.max_in_flight as usize;
                drop(settings);
                lock(&self.shared).max_in_flight = max;
                self.cond.notify_all();
                self.post_latency_if_changed();
                return;
            }
            "processing-latency" => {
                settings.processing_latency_ms = value.get().expect("type checked");
                latency_changed = true;
            }
            "mode" => {
                settings.mode = value.get().expect("type checked");
                latency_changed = true;
            }
            "hop" => {
                settings.hop_ms = value.get().expect("type checked");
                latency_changed = true;
            }
            other => unreachable!("unknown property {other}"),
        }
        drop(settings);
        if latency_changed {
            self.post_latency_if_changed();
        }
    }

    /// Properties flagged changeable only in NULL/READY (the model and the window
    /// geometry, read at READY→PAUSED) are refused from READY→PAUSED on, with a WARNING:
    /// accepting them would report a latency the stream does not have.
    fn setting_may_change(&self, pspec: &glib::ParamSpec) -> bool {
        if pspec.flags().contains(gst::PARAM_FLAG_MUTABLE_PLAYING)
            || !pspec.flags().contains(gst::PARAM_FLAG_MUTABLE_READY)
        {
            return true;
        }
        let obj = self.obj();
        let (current, pending) = (obj.current_state(), obj.pending_state());
        if current <= gst::State::Ready && pending <= gst::State::Ready {
            return true;
        }
        let state = if pending > current { pending } else { current };
        gst::warning!(
            CAT,
            imp = self,
            "Refusing to change {} in {state:?}",
            pspec.name()
        );
        gst::element_imp_warning!(
            self,
            gst::LibraryError::Settings,
            (
                "Property {} can only be changed in the NULL or READY state; the change is \
                 ignored",
                pspec.name()
            ),
            [
                "The element is {state:?}. Set the pipeline to READY, change the property, \
                 then play again."
            ]
        );
        false
    }

    pub(super) fn setting(&self, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = lock(&self.settings);
        match pspec.name() {
            "model-dir" => settings.model_dir.to_value(),
            "variant" => settings.variant.to_value(),
            "device" => settings.device.to_value(),
            "precision" => settings.precision.to_value(),
            "prompt" => settings.prompt.to_value(),
            "negative-prompt" => settings.negative_prompt.to_value(),
            "num-steps" => settings.num_steps.to_value(),
            "cfg-strength" => settings.cfg_strength.to_value(),
            "seed" => settings.seed.to_value(),
            "mask-away-clip" => settings.mask_away_clip.to_value(),
            "text-only" => settings.text_only.to_value(),
            "window-duration" => settings.window_ms.to_value(),
            "overlap" => settings.overlap_ms.to_value(),
            "max-in-flight" => settings.max_in_flight.to_value(),
            "processing-latency" => settings.processing_latency_ms.to_value(),
            "mode" => settings.mode.to_value(),
            "hop" => settings.hop_ms.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}
