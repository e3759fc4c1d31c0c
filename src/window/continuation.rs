//! `continuation` mode: every window sees `W` of video, but only its last hop is new.
//!
//! # Geometry (integers: latents of `P` samples, counted from the first frame)
//!
//! Positions live on the stream's latent grid: latent `j` covers output samples
//! `[j·P, (j+1)·P)`, `P` = the generator's latent period (512 samples = 32 ms at 16 kHz,
//! 1024 = 23.2 ms at 44.1 kHz). With `W` = window, `H` = hop and `M` = the model's minimum,
//! all in latents:
//!
//! ```text
//! W = ⌈round(window-duration · rate) / P⌉        8 s → 250 (16 kHz), 345 (44.1 kHz), as
//!                                                the official 8 s sequence lengths
//! H = round(hop · rate / P)                      1000 ms → 31 = 992 ms (16 kHz),
//!                                                43 = 998.4 ms (44.1 kHz)
//! M = ⌈⌈0.64 s · rate⌉ / P⌉                      20 (16 kHz), 28 (44.1 kHz)
//! window k:  e_k = (k+1)·H,  s_k = max(0, e_k − W)       latents [s_k, e_k)
//!            generated: max(e_k − s_k, M) latents (the model's minimum; the extra
//!            latents of a padded window are scratch, generated with the last frame held)
//!            known:     e_{k−1} − s_k = min(k·H, W − H) leading latents (0 for k = 0)
//! ```
//!
//! So windows grow at the start of a stream (`H`, `2H`, … up to `W`, each generated at
//! least at `M`) and then slide by `H`. A window is planned as soon as the video reaches
//! `e_k·P` (a frame at or past it arrived). Its known latents are the final latents of the
//! windows before it, which the generator carries (see [`crate::request::Continuation`]);
//! the sampler holds them by inpainting, so only `[e_{k−1}, e_k)` is new.
//!
//! # Output: the held-back guard and crossfade
//!
//! Window `k` is decoded whole. A decode is worst at its right edge: the convolutions of
//! the VAE decoder and of the vocoder see zero padding past the last latent, while the
//! next window decodes the same latents in the middle of its sequence. So each window
//! holds back its last `G + X` latents of audio: the last `G` (the *guard*, the edge zone)
//! are never emitted from it, and over the `X` before them the output crossfades from its
//! decode to the next window's decode of the same samples. Window `k` emits output
//! `[e_{k−1}·P − (G+X)·P, e_k·P − (G+X)·P)`, its first `X·P` samples crossfaded:
//!
//! ```text
//!   window k−1 decode: ───────────────────────┤ X ├─ G ─┤
//!   window k decode:          ────────────────┤ X ├─ G ─┼──── new ────┤ X ├─ G ─┤
//!   output:            … k−1 ─────────────────┘ fade └──────── k ────┘  (held back)
//! ```
//!
//! `G` = [`GUARD_LATENTS`] = 4 and `X` = [`CROSSFADE_LATENTS`] = 2 latent periods: 192 ms
//! held back at 16 kHz, 139 ms at 44.1 kHz. Why 4 + 2: `mmaudio bench decoder-edge`
//! decodes 60 random latents and the same latents shifted by 20 with the real-size VAE
//! decoders (random weights: the structure, not the trained values) and compares the mel
//! of the 40 shared latents. At 16 kHz they differ by 0.31–0.90 in the last 3 latents
//! before a window's end, 0.09–0.11 at 4–5 latents and 0.03–0.06 everywhere else; at
//! 44.1 kHz by 0.13–0.35 in the last 4, 0.04–0.05 at 5–6 and 0.02–0.04 elsewhere (the
//! VAE's middle attention sees the whole window, so two windows never decode exactly
//! alike; BENCHMARKS.md, "Decoder edge"). The guard drops the
//! worst 4; the crossfade over the next 2 moves from a decode that is close to its interior
//! quality to one that is. The fade is correlation-aware ([`super::crossfade`]): both sides
//! are the same sound, so it keeps their level instead of adding a constant-power bump,
//! and the limiter guarantees full scale. At EOS the last window ends exactly at `N`
//! samples and holds nothing back; its start is its regular `s_k`, so it is shorter than
//! `W`.
//!
//! `H` must be more than `G + X` and at most `W/2` (so every window holds at least half a
//! window of context and the fade lies inside it): the `hop` property accepts
//! [`HOP_MIN_MS`] to half the `window-duration`.
//!
//! # Latency and cost
//!
//! The first sample window `k` emits is at `e_{k−1}·P − (G+X)·P`, and window `k` can be
//! planned once the video reaches `e_k·P`: a sample leaves `H·P + (G+X)·P` samples (plus
//! one frame and the generation time) after its own time. The first window of a stream ends at `H`
//! (at `M` generated), so the start of a stream is near-live too. Each hop costs one
//! window of sampling and decoding (a `W`-long sequence), so the real-time factor is
//! `window compute / hop`; the CLIP and Synchformer features of frames seen by earlier
//! windows come from the generator's caches.
//!
//! # Memory
//!
//! As [`super::windows`]: the frames from the next window's start on (at most `W` of
//! video), plus the held-back `(G+X)·P` samples.

use super::crossfade::{self, correlation, crossfade_weights_correlated};
use super::{Chunk, WindowPlace, WindowSpan};
use crate::config::MIN_DURATION_S;
use crate::error::{Error, Result};
use crate::request::Continuation;

/// Crossfade between consecutive windows' decodes, in latent periods (see the module
/// documentation).
pub const CROSSFADE_LATENTS: u64 = 2;

/// A window's last latent periods that are never emitted from it (the decoder's edge zone).
pub const GUARD_LATENTS: u64 = 4;

/// Smallest `hop`, in milliseconds: the hop must exceed the held-back guard and crossfade
/// (6 latents: 192 ms at 16 kHz), and each hop costs a whole window of generation.
pub const HOP_MIN_MS: u64 = 250;

/// Geometry of `continuation` mode, in latents of `period` samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContinuationConfig {
    rate: u32,
    period: u64,
    window: u64,
    hop: u64,
    min: u64,
}

impl ContinuationConfig {
    /// Geometry from the element's properties: `window_ms` is rounded up to whole
    /// latents, `hop_ms` to the nearest whole latent (half up). `hop_ms` must lie in
    /// `[HOP_MIN_MS, window_ms / 2]`.
    pub fn from_millis(rate: u32, period: u32, window_ms: u64, hop_ms: u64) -> Result<Self> {
        if rate == 0 || period == 0 {
            return Err(Error::config(
                "sample rate and latent period must be positive",
            ));
        }
        let min_ms = (MIN_DURATION_S * 1e3).round() as u64;
        if window_ms < min_ms {
            return Err(Error::config(format!(
                "window duration {window_ms} ms is shorter than the model's minimum {min_ms} ms"
            )));
        }
        let max_hop = window_ms / 2;
        if !(HOP_MIN_MS..=max_hop).contains(&hop_ms) {
            return Err(Error::config(format!(
                "hop {hop_ms} ms is outside the allowed range {HOP_MIN_MS} ms to {max_hop} ms \
                 (at most half the window-duration of {window_ms} ms)"
            )));
        }
        let (r, p) = (rate as u64, period as u64);
        let window_samples = (window_ms * r + 500) / 1000;
        let window = window_samples.div_ceil(p);
        let hop = (2 * hop_ms * r + 1000 * p) / (2000 * p);
        let min_samples = (MIN_DURATION_S * r as f64 - 1e-6).ceil() as u64;
        let min = min_samples.div_ceil(p);
        Self::from_latents(rate, period, window, hop, min)
    }

    /// Geometry in latents (`min` = the shortest sequence the generator is asked for).
    pub fn from_latents(rate: u32, period: u32, window: u64, hop: u64, min: u64) -> Result<Self> {
        if rate == 0 || period == 0 {
            return Err(Error::config(
                "sample rate and latent period must be positive",
            ));
        }
        if hop <= GUARD_LATENTS + CROSSFADE_LATENTS || 2 * hop > window {
            return Err(Error::config(format!(
                "hop of {hop} latents must be more than the {} held-back latents and at \
                 most half the window of {window} latents",
                GUARD_LATENTS + CROSSFADE_LATENTS
            )));
        }
        Ok(Self {
            rate,
            period: period as u64,
            window,
            hop,
            min: min.max(1),
        })
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }
    /// Samples per latent.
    pub fn period(&self) -> u64 {
        self.period
    }
    pub fn window_latents(&self) -> u64 {
        self.window
    }
    pub fn hop_latents(&self) -> u64 {
        self.hop
    }
    pub fn min_latents(&self) -> u64 {
        self.min
    }
    pub fn hop_samples(&self) -> u64 {
        self.hop * self.period
    }
    pub fn window_samples(&self) -> u64 {
        self.window * self.period
    }
    /// The crossfade `X·P`, in samples.
    pub fn crossfade_samples(&self) -> u64 {
        CROSSFADE_LATENTS * self.period
    }
    /// What each window holds back, `(G + X)·P` samples: guard and crossfade.
    pub fn held_back_samples(&self) -> u64 {
        (GUARD_LATENTS + CROSSFADE_LATENTS) * self.period
    }
    /// Samples between a sample's time and the end of the window that emits it:
    /// `H·P + (G + X)·P` (the element adds one frame and the processing time).
    pub fn latency_samples(&self) -> u64 {
        self.hop_samples() + self.held_back_samples()
    }

    /// First output sample of window `k`: `s_k·P`.
    pub fn window_start(&self, k: u64) -> u64 {
        ((k + 1) * self.hop).saturating_sub(self.window) * self.period
    }

    /// End of window `k` before EOS: `e_k·P`.
    pub fn window_end(&self, k: u64) -> u64 {
        (k + 1) * self.hop * self.period
    }

    /// Window `k` (see [`super::EngineConfig::window`]).
    pub fn place(&self, k: u64, total: Option<u64>) -> Option<WindowPlace> {
        let p = self.period;
        let e = (k + 1) * self.hop;
        let s = e.saturating_sub(self.window);
        let (len, keep, last) = match total {
            None => ((e - s) * p, e - s, false),
            Some(n) => {
                if n == 0 || (k > 0 && k * self.hop * p >= n) {
                    return None;
                }
                if n > e * p {
                    ((e - s) * p, e - s, false)
                } else {
                    (n - s * p, n.div_ceil(p) - s, true)
                }
            }
        };
        let latents = keep.max(self.min);
        Some(WindowPlace {
            start: s * p,
            len,
            generated: latents * p,
            last,
            continuation: Some(Continuation {
                first_latent: s,
                latents: latents as usize,
                known: (k * self.hop - s.min(k * self.hop)) as usize,
                keep: keep as usize,
            }),
        })
    }
}

/// `continuation` mode's consumer half: decoded windows in (in order), the new audio of
/// each out, with the held-back crossfade between consecutive decodes.
#[derive(Debug)]
pub struct ContinuationAssembler {
    cfg: ContinuationConfig,
    /// The previous window's decode of `[emitted, emitted + tail.len())`: crossfade, then
    /// guard.
    tail: Vec<f32>,
    emitted: u64,
    next_index: u64,
    origin: u64,
    last_correlation: Option<f64>,
}

impl ContinuationAssembler {
    pub fn new(cfg: ContinuationConfig) -> Self {
        Self {
            cfg,
            tail: Vec::new(),
            emitted: 0,
            next_index: 0,
            origin: 0,
            last_correlation: None,
        }
    }

    pub fn config(&self) -> &ContinuationConfig {
        &self.cfg
    }

    /// Samples emitted in the current stream.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Correlation of the two decodes over the last crossfade (how alike consecutive
    /// windows decode the same latents).
    pub fn last_correlation(&self) -> Option<f64> {
        self.last_correlation
    }

    pub fn reset(&mut self) {
        self.tail.clear();
        self.emitted = 0;
        self.next_index = 0;
        self.origin = 0;
    }

    /// Add the decode of the window `span` (at least `span.len` samples, from
    /// `span.start`). Returns the samples that are now final.
    pub fn push(&mut self, span: &WindowSpan, mut audio: Vec<f32>) -> Result<Chunk> {
        let pending_end = self.emitted + self.tail.len() as u64;
        if span.index != self.next_index
            || span.start > self.emitted
            || span.start + span.len < pending_end
        {
            return Err(Error::input(format!(
                "window {} (samples {}..{}) arrived out of order: expected window {} \
                 covering samples {}..{}",
                span.index,
                span.start,
                span.start + span.len,
                self.next_index,
                self.emitted,
                pending_end
            )));
        }
        let len = span.len as usize;
        if audio.len() < len {
            return Err(Error::input(format!(
                "generator returned {} samples for window {}, expected {}",
                audio.len(),
                span.index,
                span.generated
            )));
        }
        audio.truncate(len);
        if span.index == 0 {
            self.origin = span.origin;
        }
        let x = self.cfg.crossfade_samples() as usize;
        let held = self.cfg.held_back_samples() as usize;
        let from = (self.emitted - span.start) as usize;
        let to = if span.last {
            len
        } else {
            len.checked_sub(held)
                .filter(|&t| t >= from + x)
                .ok_or_else(|| {
                    Error::input(format!(
                        "window {} ({len} samples) is too short for its crossfade",
                        span.index
                    ))
                })?
        };
        let tail = audio.split_off(to);
        let mut out = audio.split_off(from);
        let mut prev = std::mem::take(&mut self.tail);
        // the previous window's guard is dropped: this window decodes those samples inside
        prev.truncate(x);
        if !prev.is_empty() {
            let rho = correlation(&prev, &out[..prev.len()]);
            self.last_correlation = Some(rho);
            crossfade::fade_into(&mut out, &prev, self.cfg.rate, |i, n| {
                crossfade_weights_correlated(i, n, rho)
            });
        }
        self.tail = tail;
        let chunk = Chunk {
            origin: self.origin,
            offset: self.emitted,
            samples: out,
        };
        self.emitted += chunk.samples.len() as u64;
        self.next_index += 1;
        Ok(chunk)
    }

    /// End of the stream after exactly `total` samples: emits what is held back, guard
    /// included (when the last window was planned before the end was known), and resets
    /// for a new stream.
    pub fn finish(&mut self, total: u64) -> Result<Chunk> {
        let (origin, emitted) = (self.origin, self.emitted);
        let tail = std::mem::take(&mut self.tail);
        self.reset();
        super::final_chunk(origin, emitted, tail, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::AudioGenerator;
    use crate::request::{Cancel, GenerationParams, WindowRequest};
    use crate::window::test_frames::cfr;
    use crate::window::*;
    use std::sync::Arc;

    /// `0.5 · sin(2π·220·t)` at the absolute time of each sample: every window decodes
    /// the same samples identically, as two decodes of the same latents ideally would.
    struct Tone {
        rate: u32,
        seen: Vec<WindowRequest>,
    }

    fn tone(t: f64) -> f32 {
        (0.5 * (2.0 * std::f64::consts::PI * 220.0 * t).sin()) as f32
    }

    impl AudioGenerator for Tone {
        fn sample_rate(&self) -> u32 {
            self.rate
        }
        fn generate(&mut self, req: &WindowRequest, _c: &Cancel) -> Result<Vec<f32>> {
            let mut r = req.clone();
            r.frames
                .iter_mut()
                .for_each(|f| f.data = Arc::new(Vec::new()));
            self.seen.push(r);
            let n = req.num_samples(self.rate);
            Ok((0..n)
                .map(|i| tone(req.start + i as f64 / self.rate as f64))
                .collect())
        }
    }

    #[test]
    fn geometry_in_whole_latents() {
        let c = ContinuationConfig::from_millis(16_000, 512, 8000, 1000).unwrap();
        assert_eq!(
            (c.window_latents(), c.hop_latents(), c.min_latents()),
            (250, 31, 20)
        );
        assert_eq!(c.hop_samples(), 15_872); // 992 ms
        assert_eq!(c.crossfade_samples(), 1024); // 64 ms
        assert_eq!(c.held_back_samples(), 3072); // 192 ms
        assert_eq!(c.latency_samples(), 15_872 + 3072);
        let c = ContinuationConfig::from_millis(44_100, 1024, 8000, 2000).unwrap();
        // 345 latents as the official 8 s sequence; 2000 ms → 86 latents = 1.997 s
        assert_eq!(
            (c.window_latents(), c.hop_latents(), c.min_latents()),
            (345, 86, 28)
        );
        assert_eq!(c.crossfade_samples(), 2048);
        assert_eq!(c.held_back_samples(), 6144); // 139 ms
        // rounding to the nearest latent: 1000 ms at 44.1 kHz = 43.07 → 43
        let c = ContinuationConfig::from_millis(44_100, 1024, 8000, 1000).unwrap();
        assert_eq!(c.hop_latents(), 43);
        // the range is named in the error
        for hop in [0, 99, 249, 4001, 30_000] {
            let e = ContinuationConfig::from_millis(16_000, 512, 8000, hop)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("hop {hop} ms")) && e.contains("250 ms to 4000 ms"),
                "{e}"
            );
        }
        assert!(ContinuationConfig::from_millis(16_000, 512, 8000, 250).is_ok());
        assert!(ContinuationConfig::from_millis(16_000, 512, 8000, 4000).is_ok());
        let e = ContinuationConfig::from_millis(16_000, 512, 500, 200)
            .unwrap_err()
            .to_string();
        assert!(e.contains("minimum"), "{e}");
    }

    /// Windows grow (H, 2H, … up to W latents, each generated at least at M), then slide
    /// by H; each holds what the windows before it generated; each is released by the
    /// first frame at or past its end.
    #[test]
    fn windows_grow_then_slide_and_hold_the_past() {
        let c = ContinuationConfig::from_millis(16_000, 512, 8000, 1000).unwrap();
        let mut p = WindowPlanner::new(c);
        let mut released = Vec::new();
        let mut reqs = Vec::new();
        for (i, f) in cfr(0, 300, 25, 1).into_iter().enumerate() {
            for item in p.push_frame(f) {
                if let Planned::Window { request, span } = item {
                    released.push((i, span.index));
                    reqs.push((request, span));
                }
            }
        }
        // window k ends at 31·(k+1) latents = 0.992·(k+1) s: frame ⌈24.8·(k+1)⌉ reaches it
        for &(i, k) in &released {
            let end_s = 0.992 * (k + 1) as f64;
            assert_eq!(i as u64, (end_s * 25.0 - 1e-9).ceil() as u64, "window {k}");
        }
        assert_eq!(released.len(), 12); // 12 s of video: windows ending at 0.992 … 11.904 s
        for (req, span) in &reqs {
            let k = req.index;
            let cont = req.continuation.unwrap();
            let e = 31 * (k + 1);
            let s = e.saturating_sub(250);
            assert_eq!(cont.first_latent, s);
            assert_eq!(cont.keep as u64, e - s);
            assert_eq!(cont.latents as u64, (e - s).max(20));
            assert_eq!(cont.known as u64, (31 * k).min(219));
            assert_eq!(span.start, s * 512);
            assert_eq!(span.len, (e - s) * 512);
            assert_eq!(span.generated, cont.latents as u64 * 512);
            assert_eq!(req.num_samples(16_000), cont.latents * 512);
            // the frames: from the one shown at the window start, all before its end
            assert_eq!(req.frames[0].pts, 0.0);
            assert!(
                req.frames
                    .iter()
                    .all(|f| f.pts < span.len as f64 / 16_000.0)
            );
            assert_eq!(req.params.seed, 42 + k);
        }
        // full windows from k = 8 on (31·8 = 248 < 250 ≤ 279): 8 s = 250 latents
        assert_eq!(reqs[8].0.duration, 8.0);
        assert_eq!(reqs[0].0.duration, 0.992);
        // frames held: at most one window of video (+2)
        assert!(p.buffered_frames() <= 202, "{}", p.buffered_frames());
    }

    fn check_stream(c: ContinuationConfig, frames: Vec<TimedFrame>) {
        let rate = c.rate();
        let first = frames[0].pts;
        let last = frames.last().unwrap();
        let end = last.pts + last.duration.unwrap();
        let total = ns_to_samples_round(end - first, rate);
        let mut planner = WindowPlanner::new(c);
        let mut asm = Assembler::new(c);
        let mut fake = Tone {
            rate,
            seen: Vec::new(),
        };
        let cancel = Cancel::new();
        let mut out = Vec::new();
        let mut prev_keep: Option<(u64, usize)> = None;
        let mut handle = |items: Vec<Planned>, out: &mut Vec<f32>| {
            for item in items {
                let chunk = match item {
                    Planned::Window { request, span } => {
                        let cont = request.continuation.unwrap();
                        // the known latents lie inside what the previous window kept
                        match prev_keep {
                            None => assert_eq!(cont.known, 0),
                            Some((first, keep)) => {
                                assert!(cont.first_latent >= first);
                                assert!(
                                    cont.first_latent + cont.known as u64 <= first + keep as u64
                                );
                                assert!(cont.known as u64 >= GUARD_LATENTS + CROSSFADE_LATENTS);
                            }
                        }
                        prev_keep = Some((cont.first_latent, cont.keep));
                        assert!(cont.known < cont.keep && cont.keep <= cont.latents);
                        assert_eq!(request.num_samples(rate) as u64, span.generated);
                        let audio = fake.generate(&request, &cancel).unwrap();
                        asm.push(&span, audio).unwrap()
                    }
                    Planned::End { total: t } => {
                        assert_eq!(t, total);
                        asm.finish(t).unwrap()
                    }
                };
                assert_eq!(chunk.offset, out.len() as u64);
                assert_eq!(chunk.origin, first);
                out.extend_from_slice(&chunk.samples);
            }
        };
        for f in frames {
            handle(planner.push_frame(f), &mut out);
        }
        handle(planner.finish(), &mut out);
        let ctx = format!(
            "rate {rate}, window {} hop {} latents, {total} samples",
            c.window_latents(),
            c.hop_latents()
        );
        assert_eq!(out.len() as u64, total, "{ctx}");
        // seamless: the crossfade of two identical decodes is the decode itself
        for (s, &v) in out.iter().enumerate() {
            let want = tone(first as f64 / 1e9 + s as f64 / rate as f64);
            assert!((v - want).abs() < 2e-6, "{ctx}: sample {s}: {v} vs {want}");
        }
        // the last window ends exactly at the total
        let last = fake.seen.last().unwrap();
        let cont = last.continuation.unwrap();
        let last_start = cont.first_latent * c.period();
        assert!(last_start < total && total <= last_start + cont.latents as u64 * c.period());
    }

    /// Exact length and a seamless output for many rates, frame rates, hops and lengths,
    /// including streams shorter than one hop and than the model's minimum.
    #[test]
    fn exact_length_and_seamless_output_over_many_combinations() {
        let mut cases = 0;
        for &(rate, period) in &[(16_000u32, 512u32), (44_100, 1024)] {
            for &(window_ms, hop_ms) in &[(8000u64, 1000u64), (8000, 4000), (2000, 250), (640, 320)]
            {
                let c = ContinuationConfig::from_millis(rate, period, window_ms, hop_ms).unwrap();
                for &(num, den) in &[(25u64, 1u64), (30000, 1001), (60, 1)] {
                    for &len_s in &[0.04, 0.3, 0.9, 2.0, 8.0, 9.5] {
                        let n = ((len_s * num as f64 / den as f64).round() as u64).max(1);
                        check_stream(c, cfr(1_000_000_000, n, num, den));
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 2 * 4 * 3 * 6);
    }

    /// Every output sample comes from the window that owns it, exactly, except over the
    /// crossfade, where it is the constant-gain fade (the two sides correlate fully) from
    /// the previous window to the next; no window's guard is ever emitted (but the last).
    #[test]
    fn output_is_each_windows_decode_away_from_the_crossfade() {
        struct Id;
        impl AudioGenerator for Id {
            fn sample_rate(&self) -> u32 {
                16_000
            }
            fn generate(&mut self, req: &WindowRequest, _c: &Cancel) -> Result<Vec<f32>> {
                Ok(vec![(req.index + 1) as f32 / 64.0; req.num_samples(16_000)])
            }
        }
        let c = ContinuationConfig::from_millis(16_000, 512, 2000, 500).unwrap();
        let (h, x, hb) = (
            c.hop_samples(),
            c.crossfade_samples(),
            c.held_back_samples(),
        );
        assert_eq!((h, x, hb), (8192, 1024, 3072));
        let out = render(
            c,
            &GenerationParams::default(),
            cfr(0, 125, 25, 1),
            &mut Id,
            &Cancel::new(),
        )
        .unwrap();
        assert_eq!(out.len(), 80_000);
        let last = (80_000u64 - 1) / h; // the window whose new part holds the last sample
        for (s, &v) in out.iter().enumerate() {
            let s = s as u64;
            // window k emits [k·H − (G+X)·P, (k+1)·H − (G+X)·P) (k = 0 from 0, the last to
            // the end), crossfaded over its first X·P
            let k = ((s + hb) / h).min(last);
            let own = (k + 1) as f32 / 64.0;
            let fade_start = k * h - hb.min(k * h);
            if k > 0 && s < fade_start + x {
                let (o, i) =
                    crossfade_weights_correlated((s - fade_start) as usize, x as usize, 1.0);
                let want = k as f32 / 64.0 * o + own * i;
                assert!((v - want).abs() < 1e-7, "sample {s}: {v} vs {want}");
            } else {
                assert_eq!(v, own, "sample {s}");
            }
        }
    }

    #[test]
    fn short_streams_are_generated_at_the_minimum_and_trimmed() {
        let c = ContinuationConfig::from_millis(16_000, 512, 8000, 1000).unwrap();
        let mut fake = Tone {
            rate: 16_000,
            seen: Vec::new(),
        };
        // 0.2 s: one window of 7 real latents, generated at the 20-latent minimum
        let out = render(
            c,
            &GenerationParams::default(),
            cfr(5_000_000, 5, 25, 1),
            &mut fake,
            &Cancel::new(),
        )
        .unwrap();
        assert_eq!(out.len(), 3200);
        assert_eq!(fake.seen.len(), 1);
        let cont = fake.seen[0].continuation.unwrap();
        assert_eq!((cont.latents, cont.keep, cont.known), (20, 7, 0));
        assert_eq!(fake.seen[0].duration, 0.64);
        assert_eq!(fake.seen[0].frames.len(), 5);
        // EOS 0.3 s into the third hop: 2 regular windows, the last one ends at N
        let mut fake = Tone {
            rate: 16_000,
            seen: Vec::new(),
        };
        let n_frames = 57; // 2.28 s
        let out = render(
            c,
            &GenerationParams::default(),
            cfr(0, n_frames, 25, 1),
            &mut fake,
            &Cancel::new(),
        )
        .unwrap();
        assert_eq!(out.len(), 36_480);
        let conts: Vec<_> = fake.seen.iter().map(|r| r.continuation.unwrap()).collect();
        assert_eq!(conts.len(), 3);
        assert_eq!(conts[2].first_latent, 0);
        assert_eq!(conts[2].known, 62);
        assert_eq!(conts[2].keep, 36_480usize.div_ceil(512));
    }

    #[test]
    fn assembler_rejects_windows_out_of_order() {
        let c = ContinuationConfig::from_millis(16_000, 512, 2000, 500).unwrap();
        let mut a = ContinuationAssembler::new(c);
        let span = |index, start, len, last| WindowSpan {
            index,
            origin: 0,
            start,
            len,
            generated: len,
            last,
        };
        let e = a.push(&span(1, 0, 16_384, false), vec![0.0; 16_384]);
        assert!(e.unwrap_err().to_string().contains("out of order"));
        let e = a.push(&span(0, 0, 8192, false), vec![0.0; 100]);
        assert!(e.unwrap_err().to_string().contains("returned 100 samples"));
        let c0 = a.push(&span(0, 0, 8192, false), vec![0.25; 8192]).unwrap();
        assert_eq!(c0.samples.len(), 8192 - 3072);
        // a window that does not reach back over the held-back samples
        let e = a.push(&span(1, 8192, 8192, false), vec![0.0; 8192]);
        assert!(e.unwrap_err().to_string().contains("out of order"));
        let e = a.finish(50_000).unwrap_err().to_string();
        assert!(e.contains("expected 50000"), "{e}");
    }
}
