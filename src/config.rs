//! Model configurations: sequence arithmetic and the official variant presets.
//!
//! Mirrors `mmaudio/model/sequence_config.py`, `mmaudio/model/networks.py` (the preset
//! functions) and `mmaudio/eval_utils.py` (`ModelConfig`) of hkchengrex/MMAudio @ 974010a.
//! Nothing here is tied to 8 s: every length follows from the duration.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Audio mode: 16 kHz (small_16k) or 44.1 kHz (the other variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    #[serde(rename = "16k")]
    Khz16,
    #[serde(rename = "44k")]
    Khz44,
}

impl Mode {
    pub fn sampling_rate(self) -> u32 {
        match self {
            Mode::Khz16 => 16_000,
            Mode::Khz44 => 44_100,
        }
    }
    /// Hop of the mel spectrogram in samples (`spectrogram_frame_rate` in the official code).
    pub fn hop_length(self) -> usize {
        match self {
            Mode::Khz16 => 256,
            Mode::Khz44 => 512,
        }
    }
    pub fn n_mels(self) -> usize {
        match self {
            Mode::Khz16 => 80,
            Mode::Khz44 => 128,
        }
    }
    /// Channels of the VAE latent (`latent_dim` of the network).
    pub fn latent_dim(self) -> usize {
        match self {
            Mode::Khz16 => 20,
            Mode::Khz44 => 40,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Mode::Khz16 => "16k",
            Mode::Khz44 => "44k",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "16k" | "16000" => Ok(Mode::Khz16),
            "44k" | "44.1k" | "44100" => Ok(Mode::Khz44),
            other => Err(Error::config(format!(
                "unknown mode `{other}` (use 16k or 44k)"
            ))),
        }
    }
    /// Official VAE checkpoint of this mode (`ext_weights/`).
    pub fn vae_file(self) -> &'static str {
        match self {
            Mode::Khz16 => "v1-16.pth",
            Mode::Khz44 => "v1-44.pth",
        }
    }
    pub fn sequence(self, duration_s: f64) -> SequenceConfig {
        SequenceConfig::new(duration_s, self)
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Frame rates and segmenting of the visual streams (fixed by the trained model).
pub const CLIP_FPS: f64 = 8.0;
pub const SYNC_FPS: f64 = 25.0;
pub const SYNC_SEGMENT_FRAMES: usize = 16;
pub const SYNC_STEP: usize = 8;
/// Synchformer tokens per segment.
pub const SYNC_TOKENS_PER_SEGMENT: usize = 8;
pub const CLIP_SIZE: usize = 384;
pub const SYNC_SIZE: usize = 224;
pub const TEXT_SEQ_LEN: usize = 77;
/// Shortest duration the sync stream supports: one 16-frame segment at 25 fps.
pub const MIN_DURATION_S: f64 = SYNC_SEGMENT_FRAMES as f64 / SYNC_FPS;

/// Sequence lengths for a duration (official `SequenceConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequenceConfig {
    pub duration: f64,
    pub mode: Mode,
}

impl SequenceConfig {
    pub fn new(duration: f64, mode: Mode) -> Self {
        Self { duration, mode }
    }
    pub fn sampling_rate(&self) -> u32 {
        self.mode.sampling_rate()
    }
    /// `ceil(duration · sr / hop / 2)` evaluated in f64 as Python does.
    pub fn latent_seq_len(&self) -> usize {
        (self.duration * self.mode.sampling_rate() as f64 / self.mode.hop_length() as f64 / 2.0)
            .ceil() as usize
    }
    /// `int(duration · 8)`.
    pub fn clip_seq_len(&self) -> usize {
        (self.duration * CLIP_FPS) as usize
    }
    /// Number of 16-frame Synchformer segments (stride 8) at 25 fps; 0 below 0.64 s.
    pub fn sync_num_segments(&self) -> usize {
        let num_frames = self.duration * SYNC_FPS;
        let segs = ((num_frames - SYNC_SEGMENT_FRAMES as f64) / SYNC_STEP as f64).floor() + 1.0;
        if segs < 0.0 { 0 } else { segs as usize }
    }
    /// `int(num_segments · 16 / 2)`: 8 tokens per segment.
    pub fn sync_seq_len(&self) -> usize {
        self.sync_num_segments() * SYNC_TOKENS_PER_SEGMENT
    }
    /// Number of 25 fps frames the official reader keeps: `int(25 · duration)`.
    pub fn sync_frames(&self) -> usize {
        (self.duration * SYNC_FPS) as usize
    }
    /// Samples produced by the decoder for this duration (a whole number of latents; at least
    /// `duration · sr`, trimmed by the caller).
    pub fn num_audio_samples(&self) -> usize {
        self.latent_seq_len() * self.mode.hop_length() * 2
    }
    /// Samples that the duration really covers: `round(duration · sr)`.
    pub fn exact_samples(&self) -> usize {
        (self.duration * self.mode.sampling_rate() as f64).round() as usize
    }
    /// Error if the duration is too short for the visual streams.
    pub fn validate(&self) -> Result<()> {
        if !(self.duration.is_finite() && self.duration > 0.0) {
            return Err(Error::config(format!(
                "invalid duration {} s",
                self.duration
            )));
        }
        Ok(())
    }
}

/// Constructor arguments of the official `MMAudio` network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetConfig {
    pub latent_dim: usize,
    pub clip_dim: usize,
    pub sync_dim: usize,
    pub text_dim: usize,
    pub hidden_dim: usize,
    pub depth: usize,
    pub fused_depth: usize,
    pub num_heads: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "default_text_len")]
    pub text_seq_len: usize,
    #[serde(default)]
    pub v2: bool,
}

fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_text_len() -> usize {
    TEXT_SEQ_LEN
}

impl NetConfig {
    fn preset(
        latent_dim: usize,
        num_heads: usize,
        depth: usize,
        fused_depth: usize,
        v2: bool,
    ) -> Self {
        Self {
            latent_dim,
            clip_dim: 1024,
            sync_dim: 768,
            text_dim: 1024,
            hidden_dim: 64 * num_heads,
            depth,
            fused_depth,
            num_heads,
            mlp_ratio: 4.0,
            text_seq_len: TEXT_SEQ_LEN,
            v2,
        }
    }
    pub fn small_16k() -> Self {
        Self::preset(20, 7, 12, 8, false)
    }
    pub fn small_44k() -> Self {
        Self::preset(40, 7, 12, 8, false)
    }
    pub fn medium_44k() -> Self {
        Self::preset(40, 14, 12, 8, false)
    }
    pub fn large_44k() -> Self {
        Self::preset(40, 14, 21, 14, false)
    }
    pub fn large_44k_v2() -> Self {
        Self::preset(40, 14, 21, 14, true)
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_dim / self.num_heads
    }
    /// Joint (multimodal) blocks: `depth − fused_depth`; the last one is `pre_only`.
    pub fn joint_depth(&self) -> usize {
        self.depth - self.fused_depth
    }
    /// Hidden width of the SwiGLU MLPs for a nominal `hidden · mlp_ratio`:
    /// `256 · ceil(int(2h/3) / 256)`.
    pub fn mlp_hidden(&self) -> usize {
        swiglu_hidden((self.hidden_dim as f64 * self.mlp_ratio) as usize)
    }
    /// Frequency-embedding size of the timestep embedder (256 in v1, `hidden_dim` in v2).
    pub fn t_freq_dim(&self) -> usize {
        if self.v2 { self.hidden_dim } else { 256 }
    }
    pub fn validate(&self) -> Result<()> {
        if self.num_heads == 0 || !self.hidden_dim.is_multiple_of(self.num_heads) {
            return Err(Error::config(format!(
                "hidden_dim {} is not a multiple of num_heads {}",
                self.hidden_dim, self.num_heads
            )));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(Error::config("head_dim must be even for RoPE"));
        }
        if self.fused_depth >= self.depth {
            return Err(Error::config(format!(
                "depth {} must exceed fused_depth {} (at least one joint block)",
                self.depth, self.fused_depth
            )));
        }
        Ok(())
    }
}

/// `int(2·h/3)` rounded up to a multiple of 256 (official `MLP`/`ConvMLP`).
pub fn swiglu_hidden(nominal: usize) -> usize {
    let h = (2.0 * nominal as f64 / 3.0) as usize;
    256 * h.div_ceil(256)
}

/// One of the five official model variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Variant {
    // explicit names: `rename_all = "snake_case"` would give `small16k`, not the official
    // `small_16k` that the CLI, the element and file names use
    #[serde(rename = "small_16k")]
    Small16k,
    #[serde(rename = "small_44k")]
    Small44k,
    #[serde(rename = "medium_44k")]
    Medium44k,
    #[serde(rename = "large_44k")]
    Large44k,
    #[serde(rename = "large_44k_v2")]
    Large44kV2,
}

impl Variant {
    pub const ALL: [Variant; 5] = [
        Variant::Small16k,
        Variant::Small44k,
        Variant::Medium44k,
        Variant::Large44k,
        Variant::Large44kV2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Small16k => "small_16k",
            Variant::Small44k => "small_44k",
            Variant::Medium44k => "medium_44k",
            Variant::Large44k => "large_44k",
            Variant::Large44kV2 => "large_44k_v2",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|v| v.name() == norm)
            .ok_or_else(|| {
                Error::config(format!(
                    "unknown variant `{s}` (one of: {})",
                    Self::ALL.map(|v| v.name()).join(", ")
                ))
            })
    }
    pub fn mode(self) -> Mode {
        match self {
            Variant::Small16k => Mode::Khz16,
            _ => Mode::Khz44,
        }
    }
    pub fn net_config(self) -> NetConfig {
        match self {
            Variant::Small16k => NetConfig::small_16k(),
            Variant::Small44k => NetConfig::small_44k(),
            Variant::Medium44k => NetConfig::medium_44k(),
            Variant::Large44k => NetConfig::large_44k(),
            Variant::Large44kV2 => NetConfig::large_44k_v2(),
        }
    }
    /// Official file name of the flow network (`weights/` on Hugging Face).
    pub fn net_file(self) -> String {
        format!("mmaudio_{}.pth", self.name())
    }
    /// Official VAE file.
    pub fn vae_file(self) -> &'static str {
        self.mode().vae_file()
    }
    /// Vocoder file: the 16 kHz BigVGAN of the MMAudio release, or NVIDIA's BigVGAN-v2
    /// generator (from `nvidia/bigvgan_v2_44khz_128band_512x`).
    pub fn vocoder_file(self) -> &'static str {
        match self.mode() {
            Mode::Khz16 => "best_netG.pt",
            Mode::Khz44 => "bigvgan_generator.pt",
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Synchformer checkpoint shared by all variants.
pub const SYNCHFORMER_FILE: &str = "synchformer_state_dict.pth";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_8s_lengths() {
        let c = Mode::Khz16.sequence(8.0);
        assert_eq!(
            (c.latent_seq_len(), c.clip_seq_len(), c.sync_seq_len()),
            (250, 64, 192)
        );
        assert_eq!(c.num_audio_samples(), 128_000);
        let c = Mode::Khz44.sequence(8.0);
        assert_eq!(
            (c.latent_seq_len(), c.clip_seq_len(), c.sync_seq_len()),
            (345, 64, 192)
        );
        assert_eq!(c.num_audio_samples(), 353_280);
    }

    #[test]
    fn other_durations() {
        // 5 s (the net_tiny_5s fixture): 157 / 40 / 112
        let c = Mode::Khz16.sequence(5.0);
        assert_eq!(
            (c.latent_seq_len(), c.clip_seq_len(), c.sync_seq_len()),
            (157, 40, 112)
        );
        // 10 s -> 240 sync tokens (30 segments)
        assert_eq!(Mode::Khz16.sequence(10.0).sync_seq_len(), 240);
        // one segment exactly at 0.64 s, none below
        assert_eq!(Mode::Khz16.sequence(0.64).sync_seq_len(), 8);
        assert_eq!(Mode::Khz16.sequence(0.5).sync_seq_len(), 0);
        // 4.004 s at 44.1k
        let c = Mode::Khz44.sequence(4.004);
        assert_eq!(
            c.latent_seq_len(),
            (4.004f64 * 44100.0 / 512.0 / 2.0).ceil() as usize
        );
        assert_eq!(c.exact_samples(), 176_576);
        assert!(c.num_audio_samples() >= c.exact_samples());
    }

    #[test]
    fn presets() {
        let s = NetConfig::small_16k();
        assert_eq!(
            (
                s.hidden_dim,
                s.depth,
                s.fused_depth,
                s.num_heads,
                s.latent_dim
            ),
            (448, 12, 8, 7, 20)
        );
        assert_eq!(s.mlp_hidden(), 1280);
        let l = NetConfig::large_44k_v2();
        assert_eq!(
            (
                l.hidden_dim,
                l.depth,
                l.fused_depth,
                l.num_heads,
                l.latent_dim
            ),
            (896, 21, 14, 14, 40)
        );
        assert!(l.v2 && !NetConfig::large_44k().v2);
        assert_eq!(l.mlp_hidden(), 2560);
        assert_eq!(l.t_freq_dim(), 896);
        assert_eq!(swiglu_hidden(512), 512);
        for v in Variant::ALL {
            assert_eq!(Variant::parse(v.name()).unwrap(), v);
            // serde (mmaudio.json) uses the same names
            assert_eq!(serde_json::to_value(v).unwrap(), v.name());
            assert_eq!(
                serde_json::from_value::<Variant>(v.name().into()).unwrap(),
                v
            );
            assert_eq!(v.net_config().latent_dim, v.mode().latent_dim());
        }
        assert!(
            Variant::parse("huge")
                .unwrap_err()
                .to_string()
                .contains("small_16k")
        );
    }
}
