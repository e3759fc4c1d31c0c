//! `windows` mode: independent windows of `W` samples every `H = W − O`, crossfaded over
//! the overlap `O`.
//!
//! # Geometry (all in integer samples, counted from the first frame)
//!
//! Window `k` covers output samples `[k·H, k·H + W)`. `O ≤ W/2` so at most two windows
//! meet at any sample.
//!
//! Output sample `s` comes from window `k` alone on `[k·H + O, (k+1)·H)`, and on the
//! overlap `[(k+1)·H, k·H + W)` it is the constant-power crossfade
//! `cos θ · a_k + sin θ · a_{k+1}` with `θ = π/2 · (i + ½)/O` (so `w_out² + w_in² = 1`
//! exactly, and the two halves are symmetric), limited to full scale where two correlated
//! windows would exceed it ([`super::crossfade`]). The first window has no fade-in and the
//! last no fade-out.
//!
//! A window is generated as soon as the video reaches its end. At EOS the last window `L`
//! (the first with `L·H + W ≥ N`) is generated at its true, shorter duration `N − L·H`
//! (the generator's sequence lengths follow the duration) and ends exactly at `N`. Its
//! length is always `> O`, so the crossfade into it is complete. A window shorter than
//! the model's minimum — only possible for a whole video shorter than it, or for the last
//! window when the overlap is below the minimum — is generated at the minimum and
//! trimmed. `window-duration` itself must be at least the minimum.
//!
//! # Latency and memory
//!
//! The first sample of window `k` is at `k·H` and can only be generated once the video
//! reaches `k·H + W`: a sample leaves one window (plus one frame and the generation time)
//! after its own time. Once window `k` is planned, the frames superseded before window
//! `k+1` starts are dropped, so at most one window's worth of frames (+2) is held
//! (at most `(8 + 25) · W` when the generator only looks at MMAudio's picks, see
//! [`super::planner`]), whatever the stream length.

use super::crossfade::{self, crossfade_weights};
use super::{Chunk, WindowPlace, WindowSpan};
use crate::config::MIN_DURATION_S;
use crate::error::{Error, Result};

/// Window geometry in samples at the generator's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    rate: u32,
    window: u64,
    overlap: u64,
    min_len: u64,
}

impl WindowConfig {
    /// Geometry from durations in seconds; the minimum generated duration is
    /// [`MIN_DURATION_S`].
    pub fn new(rate: u32, window_s: f64, overlap_s: f64) -> Result<Self> {
        if rate == 0 {
            return Err(Error::config("sample rate must be positive"));
        }
        if !(window_s.is_finite() && overlap_s.is_finite() && window_s > 0.0 && overlap_s >= 0.0) {
            return Err(Error::config(format!(
                "invalid window {window_s} s / overlap {overlap_s} s"
            )));
        }
        let r = rate as f64;
        // The tolerance keeps 0.64 s · 16000 Hz (10240.000000000002 in f64) at 10240.
        let min_len = (MIN_DURATION_S * r - 1e-6).ceil() as u64;
        Self::from_samples(
            rate,
            (window_s * r).round() as u64,
            (overlap_s * r).round() as u64,
            min_len,
        )
    }

    /// Geometry from durations in milliseconds (the element's property units).
    pub fn from_millis(rate: u32, window_ms: u64, overlap_ms: u64) -> Result<Self> {
        Self::new(rate, window_ms as f64 / 1e3, overlap_ms as f64 / 1e3)
    }

    /// Geometry in samples. `min_len` is the shortest duration the generator is asked to
    /// produce (shorter windows are generated at `min_len` and trimmed).
    pub fn from_samples(rate: u32, window: u64, overlap: u64, min_len: u64) -> Result<Self> {
        if rate == 0 {
            return Err(Error::config("sample rate must be positive"));
        }
        if window == 0 {
            return Err(Error::config("window duration must be positive"));
        }
        if window < min_len {
            return Err(Error::config(format!(
                "window duration {:.3} s is shorter than the model's minimum {:.3} s",
                window as f64 / rate as f64,
                min_len as f64 / rate as f64
            )));
        }
        if 2 * overlap > window {
            return Err(Error::config(format!(
                "overlap {:.3} s must be at most half the window duration {:.3} s",
                overlap as f64 / rate as f64,
                window as f64 / rate as f64
            )));
        }
        Ok(Self {
            rate,
            window,
            overlap,
            min_len,
        })
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }
    pub fn window_samples(&self) -> u64 {
        self.window
    }
    pub fn overlap_samples(&self) -> u64 {
        self.overlap
    }
    pub fn hop_samples(&self) -> u64 {
        self.window - self.overlap
    }
    pub fn min_samples(&self) -> u64 {
        self.min_len
    }

    /// Window `k` (see [`super::EngineConfig::window`]).
    pub fn place(&self, k: u64, total: Option<u64>) -> Option<WindowPlace> {
        let (w, h) = (self.window, self.hop_samples());
        let start = k * h;
        let (len, last) = match total {
            None => (w, false),
            Some(n) => {
                let covered = if k == 0 { 0 } else { (k - 1) * h + w };
                if covered >= n {
                    return None;
                }
                (w.min(n - start), start + w >= n)
            }
        };
        Some(WindowPlace {
            start,
            len,
            generated: len.max(self.min_len),
            last,
            continuation: None,
        })
    }
}

/// `windows` mode's consumer half: generated windows in (in order), crossfaded output out.
#[derive(Debug)]
pub struct WindowsAssembler {
    cfg: WindowConfig,
    /// The previous window's samples beyond the current window's start.
    tail: Vec<f32>,
    emitted: u64,
    next_index: u64,
    origin: u64,
}

impl WindowsAssembler {
    pub fn new(cfg: WindowConfig) -> Self {
        Self {
            cfg,
            tail: Vec::new(),
            emitted: 0,
            next_index: 0,
            origin: 0,
        }
    }

    pub fn config(&self) -> &WindowConfig {
        &self.cfg
    }

    /// Samples emitted in the current stream.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    pub fn reset(&mut self) {
        self.tail.clear();
        self.emitted = 0;
        self.next_index = 0;
        self.origin = 0;
    }

    /// Add the audio generated for `span` (at least `span.len` samples; extra samples are
    /// trimmed). Returns the samples that are now final.
    pub fn push(&mut self, span: &WindowSpan, mut audio: Vec<f32>) -> Result<Chunk> {
        if span.index != self.next_index || span.start != self.emitted {
            return Err(Error::input(format!(
                "window {} (sample {}) arrived out of order: expected window {} at sample {}",
                span.index, span.start, self.next_index, self.emitted
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
        let n = self.tail.len();
        if n > len {
            return Err(Error::input(format!(
                "window {} is shorter ({len} samples) than the overlap ({n})",
                span.index
            )));
        }
        let prev = std::mem::take(&mut self.tail);
        crossfade::fade_into(&mut audio, &prev, self.cfg.rate, crossfade_weights);
        let keep = if span.last {
            len
        } else {
            (self.cfg.hop_samples() as usize).min(len)
        };
        self.tail = audio.split_off(keep);
        let chunk = Chunk {
            origin: self.origin,
            offset: self.emitted,
            samples: audio,
        };
        self.emitted += keep as u64;
        self.next_index += 1;
        Ok(chunk)
    }

    /// End of the stream after exactly `total` samples: emits what is left (the tail of a
    /// last window that was planned as full) and resets for a new stream.
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
    use crate::window::*;
    use std::sync::Arc;

    /// Returns `(index + 1) · 2⁻¹⁰` for every sample of window `index`, so the output
    /// tells which windows contributed where (scaled by a power of two, which is exact, to
    /// stay below full scale where the limiter would act); records the requests it saw.
    struct WindowIdGen {
        rate: u32,
        seen: Vec<WindowRequest>,
    }

    impl AudioGenerator for WindowIdGen {
        fn sample_rate(&self) -> u32 {
            self.rate
        }
        fn generate(&mut self, req: &WindowRequest, _cancel: &Cancel) -> Result<Vec<f32>> {
            let mut r = req.clone();
            r.frames
                .iter_mut()
                .for_each(|f| f.data = Arc::new(Vec::new()));
            self.seen.push(r);
            Ok(vec![
                (req.index + 1) as f32 * ID_SCALE;
                req.num_samples(self.rate)
            ])
        }
    }

    /// 2⁻¹⁰: window ids stay far below full scale.
    const ID_SCALE: f32 = 1.0 / 1024.0;

    fn frame(pts: u64, duration: Option<u64>) -> TimedFrame {
        TimedFrame {
            pts,
            duration,
            width: 2,
            height: 2,
            // The pts in the payload lets tests identify frames.
            data: Arc::new(pts.to_le_bytes().to_vec()),
            prepared: None,
            source: None,
        }
    }

    /// Frames of a constant-rate video: `n` frames at `num/den` fps starting at `t0`, with
    /// GStreamer-style timestamps (`gst_util_uint64_scale(i, den·1e9, num)`).
    fn cfr(t0: u64, n: u64, num: u64, den: u64, with_duration: bool) -> Vec<TimedFrame> {
        let ts = |i: u64| (i as u128 * den as u128 * NS_PER_S as u128 / num as u128) as u64;
        (0..n)
            .map(|i| frame(t0 + ts(i), with_duration.then(|| ts(i + 1) - ts(i))))
            .collect()
    }

    /// With the frame rate known, frame times are the exact rational times (relative to the
    /// window start) that the official reader would compute from the container pts.
    #[test]
    fn exact_relative_frame_times_at_ntsc_rates() {
        use crate::features::frames::ratio_to_f64;
        let cfg = WindowConfig::from_millis(16000, 8000, 1000).unwrap();
        for &(num, den) in &[(30000u64, 1001u64), (24000, 1001), (25, 1)] {
            let mut p = WindowPlanner::new(cfg);
            p.set_framerate(Some((num as u32, den as u32)));
            let mut windows = vec![];
            for f in cfr(0, 16 * num / den, num, den, true) {
                for pl in p.push_frame(f) {
                    if let Planned::Window { request, .. } = pl {
                        windows.push(request);
                    }
                }
            }
            assert!(windows.len() >= 2);
            let w = &windows[1]; // starts at 7 s
            for f in &w.frames {
                let pts = u64::from_le_bytes(f.data[..8].try_into().unwrap());
                // frame index from the GStreamer timestamp, then its exact time
                let k = ((pts as u128 * num as u128 + (den as u128 * NS_PER_S as u128) / 2)
                    / (den as u128 * NS_PER_S as u128)) as i128;
                let exact = ratio_to_f64(k * den as i128 - 7 * num as i128, num as i128);
                assert_eq!(f.pts, exact.max(0.0), "{num}/{den} frame {k}");
            }
        }
    }

    /// Independent reference for the `WindowIdGen` output: for each sample, which windows
    /// cover it and with which weights.
    fn expected(cfg: &WindowConfig, total: u64) -> Vec<f32> {
        let (w, h, o) = (
            cfg.window_samples(),
            cfg.hop_samples(),
            cfg.overlap_samples(),
        );
        let last = if total <= w {
            0
        } else {
            (total - w).div_ceil(h)
        };
        (0..total)
            .map(|s| {
                let k = (s / h).min(last);
                let v = (k + 1) as f32 * ID_SCALE;
                // Overlap with the previous window?
                if k > 0 && s < k * h + o {
                    let i = (s - k * h) as usize;
                    let (wo, wi) = crossfade_weights(i, o as usize);
                    k as f32 * ID_SCALE * wo + v * wi
                } else {
                    v
                }
            })
            .collect()
    }

    #[test]
    fn config_validation() {
        assert!(WindowConfig::new(16000, 8.0, 1.0).is_ok());
        assert!(WindowConfig::new(16000, 8.0, 4.0).is_ok());
        let e = WindowConfig::new(16000, 8.0, 4.5).unwrap_err().to_string();
        assert!(e.contains("at most half"), "{e}");
        let e = WindowConfig::new(16000, 0.5, 0.0).unwrap_err().to_string();
        assert!(e.contains("minimum"), "{e}");
        assert!(WindowConfig::new(0, 8.0, 1.0).is_err());
        assert!(WindowConfig::new(16000, f64::NAN, 1.0).is_err());
        let c = WindowConfig::from_millis(44100, 8000, 1000).unwrap();
        assert_eq!(
            (c.window_samples(), c.overlap_samples(), c.hop_samples()),
            (352_800, 44_100, 308_700)
        );
        assert_eq!(c.min_samples(), 28_224); // ceil(0.64 · 44100)
        // The minimum window itself is valid at every rate (no f64 round-up).
        for rate in [8000, 16000, 22050, 44100, 48000] {
            let c = WindowConfig::from_millis(rate, 640, 0).unwrap();
            assert_eq!(c.min_samples(), c.window_samples(), "{rate}");
        }
    }

    #[test]
    fn time_conversions_are_exact() {
        assert_eq!(ns_to_samples_round(4_004_000_000, 16000), 64_064);
        assert_eq!(ns_to_samples_round(10 * NS_PER_S, 44100), 441_000);
        assert_eq!(samples_to_ns(16000, 16000), NS_PER_S);
        assert_eq!(samples_to_ns(1, 44100), 22_675);
        // Hours in: no overflow, no drift.
        let ten_hours = 36_000 * NS_PER_S;
        assert_eq!(ns_to_samples_floor(ten_hours, 44100), 36_000 * 44_100);
        assert_eq!(samples_to_ns(36_000 * 44_100, 44100), ten_hours);
    }

    /// The main property: for many rates, frame rates, lengths and geometries, the output
    /// has exactly round(duration · rate) samples, chunks tile it, every sample equals the
    /// independent reference and the frame buffer stays bounded.
    #[test]
    fn exact_length_and_crossfade_over_many_combinations() {
        let rates = [16000u32, 44100];
        let fps = [(25u64, 1u64), (30000, 1001), (24, 1), (60, 1), (1, 1)];
        let geometries = [(8.0, 1.0), (8.0, 0.0), (2.5, 0.5), (0.64, 0.32), (1.0, 0.5)];
        let lengths_s = [0.04, 0.3, 0.64, 0.9, 2.0, 4.004, 7.99, 8.0, 10.0, 23.5];
        let mut cases = 0;
        for &rate in &rates {
            for &(num, den) in &fps {
                for &(win, ov) in &geometries {
                    for &len_s in &lengths_s {
                        let n = ((len_s * num as f64 / den as f64).round() as u64).max(1);
                        let cfg = WindowConfig::new(rate, win, ov).unwrap();
                        check_stream(cfg, cfr(1_000_000_000, n, num, den, true), num, den);
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 2 * 5 * 5 * 10);
    }

    fn check_stream(cfg: WindowConfig, frames: Vec<TimedFrame>, num: u64, den: u64) {
        let rate = cfg.rate();
        let first = frames[0].pts;
        let last = frames.last().unwrap();
        let end = last.pts + last.duration.unwrap();
        let total = ns_to_samples_round(end - first, rate);
        let frames_per_window =
            (cfg.window_samples() as f64 / rate as f64 * num as f64 / den as f64).ceil() as usize;

        let mut planner = WindowPlanner::new(cfg);
        let mut assembler = Assembler::new(cfg);
        let mut fake = WindowIdGen {
            rate,
            seen: Vec::new(),
        };
        let cancel = Cancel::new();
        let mut out = Vec::new();
        let mut max_buffered = 0;
        let mut handle = |items: Vec<Planned>, out: &mut Vec<f32>| {
            for item in items {
                let chunk = match item {
                    Planned::Window { request, span } => {
                        assert_eq!(span.generated, span.len.max(cfg.min_samples()));
                        assert_eq!(request.num_samples(rate) as u64, span.generated);
                        let audio = fake.generate(&request, &cancel).unwrap();
                        assembler.push(&span, audio).unwrap()
                    }
                    Planned::End { total: t } => {
                        assert_eq!(t, total);
                        assembler.finish(t).unwrap()
                    }
                };
                // Chunks tile the output exactly, timestamps derive from the count.
                assert_eq!(chunk.offset, out.len() as u64);
                assert_eq!(chunk.origin, first);
                out.extend_from_slice(&chunk.samples);
            }
        };
        for f in frames.clone() {
            let items = planner.push_frame(f);
            max_buffered = max_buffered.max(planner.buffered_frames());
            handle(items, &mut out);
        }
        handle(planner.finish(), &mut out);
        assert_eq!(planner.buffered_frames(), 0);

        let ctx = format!(
            "rate {rate}, {num}/{den} fps, {} frames, window {} overlap {}",
            frames.len(),
            cfg.window_samples(),
            cfg.overlap_samples()
        );
        assert_eq!(out.len() as u64, total, "{ctx}");
        let want = expected(&cfg, total);
        for (s, (a, b)) in out.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() < 1e-5 * ID_SCALE,
                "{ctx}: sample {s}: {a} vs {b}"
            );
        }
        // Memory bound: one window of frames plus the held one and the one past the end.
        assert!(
            max_buffered <= frames_per_window + 2,
            "{ctx}: buffered {max_buffered} > {}",
            frames_per_window + 2
        );
        // Every frame a window shows is there, relative pts in [0, duration), sorted,
        // starting at 0.
        for req in &fake.seen {
            let start = req.start - first as f64 / 1e9;
            let len = req.duration.min(total as f64 / rate as f64 - start);
            let shown: Vec<usize> = frames
                .iter()
                .enumerate()
                .filter(|(i, f)| {
                    let t = (f.pts - first) as f64 / 1e9;
                    let next = frames
                        .get(i + 1)
                        .map_or(f64::INFINITY, |n| (n.pts - first) as f64 / 1e9);
                    t < start + len - 1e-9 && next > start + 1e-9
                })
                .map(|(i, _)| i)
                .collect();
            assert_eq!(req.frames.len(), shown.len(), "{ctx}: window {}", req.index);
            assert_eq!(req.frames[0].pts, 0.0);
            assert!(req.frames.windows(2).all(|p| p[0].pts < p[1].pts));
            assert!(req.frames.iter().all(|f| f.pts < req.duration));
        }
    }

    #[test]
    fn last_window_has_its_true_duration() {
        // 10 s at 25 fps, 16 kHz, 8 s windows with 1 s overlap: windows at 0 and 7 s; the
        // second is 3 s long.
        let cfg = WindowConfig::new(16000, 8.0, 1.0).unwrap();
        let mut fake = WindowIdGen {
            rate: 16000,
            seen: Vec::new(),
        };
        let params = GenerationParams::default();
        let out = render(
            cfg,
            &params,
            cfr(0, 250, 25, 1, true),
            &mut fake,
            &Cancel::new(),
        )
        .unwrap();
        assert_eq!(out.len(), 160_000);
        let d: Vec<f64> = fake.seen.iter().map(|r| r.duration).collect();
        assert_eq!(d, vec![8.0, 3.0]);
        assert_eq!(fake.seen[1].start, 7.0);
        // 25 fps: window 1 shows frames 175..250.
        assert_eq!(fake.seen[1].frames.len(), 75);
        assert_eq!(fake.seen[0].frames.len(), 200);
        // Per-window seeds.
        assert_eq!(fake.seen[0].params.seed, params.seed);
        assert_eq!(fake.seen[1].params.seed, params.seed + 1);
    }

    #[test]
    fn short_video_is_generated_at_the_minimum_and_trimmed() {
        // 0.2 s (5 frames at 25 fps): generated at 0.64 s, trimmed to 3200 samples.
        let cfg = WindowConfig::new(16000, 8.0, 1.0).unwrap();
        let mut fake = WindowIdGen {
            rate: 16000,
            seen: Vec::new(),
        };
        let out = render(
            cfg,
            &GenerationParams::default(),
            cfr(5_000_000, 5, 25, 1, true),
            &mut fake,
            &Cancel::new(),
        )
        .unwrap();
        assert_eq!(out.len(), 3200);
        assert_eq!(fake.seen.len(), 1);
        assert!((fake.seen[0].duration - 0.64).abs() < 1e-12);
        assert_eq!(fake.seen[0].frames.len(), 5);

        // Overlap below the minimum: a last window of 0.1 s is generated at 0.64 s.
        let cfg = WindowConfig::new(16000, 2.0, 0.05).unwrap();
        let mut fake = WindowIdGen {
            rate: 16000,
            seen: Vec::new(),
        };
        // 2.05 s video: window 0 covers [0, 2), window 1 starts at 1.95 s, true length 0.1 s.
        let out = render(
            cfg,
            &GenerationParams::default(),
            cfr(0, 41, 20, 1, true),
            &mut fake,
            &Cancel::new(),
        )
        .unwrap();
        assert_eq!(out.len(), 32_800);
        assert_eq!(fake.seen.len(), 2);
        assert!((fake.seen[1].duration - 0.64).abs() < 1e-12);
        assert_eq!(out, expected(&cfg, 32_800));
    }

    #[test]
    fn ramp_generator_gives_the_crossfaded_ramp() {
        // Generator output = absolute time of each sample / 8 (below full scale): outside
        // overlaps the output is the ramp itself; inside, ramp · (cos θ + sin θ) since both
        // windows agree.
        struct Ramp;
        impl AudioGenerator for Ramp {
            fn sample_rate(&self) -> u32 {
                16000
            }
            fn generate(&mut self, req: &WindowRequest, _c: &Cancel) -> Result<Vec<f32>> {
                let n = req.num_samples(16000);
                Ok((0..n)
                    .map(|i| (req.start + i as f64 / 16000.0) as f32 / 8.0)
                    .collect())
            }
        }
        let cfg = WindowConfig::new(16000, 2.0, 0.5).unwrap();
        let out = render(
            cfg,
            &GenerationParams::default(),
            cfr(0, 125, 25, 1, true),
            &mut Ramp,
            &Cancel::new(),
        )
        .unwrap();
        assert_eq!(out.len(), 80_000);
        // 5 s: windows at 0, 1.5 and 3 s; the last one (k = 2) runs to the end.
        let (h, o) = (24_000u64, 8_000u64);
        for (s, &v) in out.iter().enumerate() {
            let s = s as u64;
            let t = s as f32 / 16000.0 / 8.0;
            let k = (s / h).min(2);
            let want = if k > 0 && s < k * h + o {
                let (a, b) = crossfade_weights((s - k * h) as usize, o as usize);
                t * (a + b)
            } else {
                t
            };
            assert!((v - want).abs() < 1e-4 / 8.0, "sample {s}: {v} vs {want}");
        }
    }

    /// Two windows carrying the same loud tone (0.9 of full scale, correlated as a steady
    /// sound can make two generations): the constant-power crossfade alone reaches
    /// 0.9·√2 = 1.27 (+2.1 dBFS) in the middle of each overlap; the output stays within
    /// full scale, and is the tone itself outside the overlaps.
    #[test]
    fn loud_correlated_windows_stay_within_full_scale() {
        struct Loud;
        impl AudioGenerator for Loud {
            fn sample_rate(&self) -> u32 {
                16000
            }
            fn generate(&mut self, req: &WindowRequest, _c: &Cancel) -> Result<Vec<f32>> {
                Ok((0..req.num_samples(16000))
                    .map(|i| tone(req.start + i as f64 / 16000.0))
                    .collect())
            }
        }
        fn tone(t: f64) -> f32 {
            (0.9 * (2.0 * std::f64::consts::PI * 110.0 * t).sin()) as f32
        }
        let cfg = WindowConfig::new(16000, 2.0, 0.5).unwrap();
        let out = render(
            cfg,
            &GenerationParams::default(),
            cfr(0, 125, 25, 1, true),
            &mut Loud,
            &Cancel::new(),
        )
        .unwrap();
        assert_eq!(out.len(), 80_000);
        let peak = out.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(peak <= 1.0, "{peak}");
        let (h, o) = (24_000u64, 8_000u64);
        let mut loudest_fade = 0f32;
        for (s, &v) in out.iter().enumerate() {
            let s = s as u64;
            let k = (s / h).min(2);
            let want = tone(s as f64 / 16000.0);
            if k > 0 && s < k * h + o {
                let (a, b) = crossfade_weights((s - k * h) as usize, o as usize);
                loudest_fade = loudest_fade.max((want * (a + b)).abs());
            } else {
                assert!((v - want).abs() < 1e-6, "sample {s}: {v} vs {want}");
            }
        }
        assert!(loudest_fade > 1.25, "{loudest_fade}");
    }

    #[test]
    fn variable_frame_rate_and_missing_durations() {
        // Irregular intervals, no buffer durations: the last frame lasts as long as the
        // previous interval.
        let mut pts = 0u64;
        let mut frames = Vec::new();
        let mut x = 12345u64;
        for _ in 0..300 {
            frames.push(frame(pts, None));
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            pts += 10_000_000 + (x >> 33) % 90_000_000; // 10..100 ms
        }
        let last_interval = frames[299].pts - frames[298].pts;
        let end = frames[299].pts + last_interval;
        let cfg = WindowConfig::new(44100, 3.0, 0.7).unwrap();
        let mut fake = WindowIdGen {
            rate: 44100,
            seen: Vec::new(),
        };
        let out = render(
            cfg,
            &GenerationParams::default(),
            frames,
            &mut fake,
            &Cancel::new(),
        )
        .unwrap();
        let total = ns_to_samples_round(end, 44100);
        assert_eq!(out.len() as u64, total);
        assert_eq!(out, expected(&cfg, total));

        // A single frame without any timing: DEFAULT_FRAME_NS.
        let mut fake = WindowIdGen {
            rate: 16000,
            seen: Vec::new(),
        };
        let cfg = WindowConfig::new(16000, 8.0, 1.0).unwrap();
        let out = render(
            cfg,
            &GenerationParams::default(),
            vec![frame(7, None)],
            &mut fake,
            &Cancel::new(),
        )
        .unwrap();
        assert_eq!(out.len(), 640);
    }

    #[test]
    fn windows_are_released_as_soon_as_the_video_reaches_their_end() {
        let cfg = WindowConfig::new(16000, 2.0, 0.5).unwrap();
        let mut p = WindowPlanner::new(cfg);
        let frames = cfr(0, 200, 25, 1, true);
        let mut released = Vec::new();
        for (i, f) in frames.into_iter().enumerate() {
            for item in p.push_frame(f) {
                if let Planned::Window { span, .. } = item {
                    released.push((i, span.index));
                }
            }
        }
        // Window k ends at (1.5k + 2) s = frame 25·(1.5k+2): released by that frame.
        // Window 4 ends at 8 s = frame 200, which does not exist: planned at EOS.
        assert_eq!(released, vec![(50, 0), (88, 1), (125, 2), (163, 3)]);
    }

    #[test]
    fn a_pause_in_the_frames_is_covered_by_the_held_frame() {
        let cfg = WindowConfig::new(16000, 2.0, 0.5).unwrap();
        let mut p = WindowPlanner::new(cfg);
        let mut items = Vec::new();
        // Frames [1 s, 1.4 s), nothing until 4.5 s, then frames to 5 s.
        for f in cfr(NS_PER_S, 10, 25, 1, true) {
            items.extend(p.push_frame(f));
        }
        assert!(items.is_empty());
        // The frame at 4.5 s completes windows 0 [0, 2 s) and 1 [1.5 s, 3.5 s).
        items.extend(p.push_frame(frame(4_500_000_000, Some(40_000_000))));
        let windows: Vec<(u64, usize)> = items
            .iter()
            .filter_map(|i| match i {
                Planned::Window { span, request } => Some((span.index, request.frames.len())),
                _ => None,
            })
            .collect();
        assert_eq!(windows, vec![(0, 10), (1, 1)]);
        // Window 1 shows only the held frame of 1.36 s, at pts 0.
        if let Planned::Window { request, .. } = &items[1] {
            assert_eq!(request.frames[0].pts, 0.0);
            assert_eq!(
                request.frames[0].data[..],
                (NS_PER_S + 360_000_000).to_le_bytes()
            );
        }
        let rest = p.finish();
        match rest.last() {
            Some(Planned::End { total }) => assert_eq!(*total, 3_540 * 16),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn absurd_timestamp_jumps_start_a_new_stream() {
        let cfg = WindowConfig::new(16000, 8.0, 1.0).unwrap();
        let mut p = WindowPlanner::new(cfg);
        for f in cfr(0, 25, 25, 1, true) {
            assert!(p.push_frame(f).is_empty());
        }
        let far = 1u64 << 60;
        let items = p.push_frame(frame(far, Some(40_000_000)));
        // The first stream (1 s) is finished: one window and its end; nothing else.
        assert_eq!(items.len(), 2);
        assert!(matches!(items[1], Planned::End { total: 16000 }));
        assert_eq!(p.origin(), Some(far));
        match p.finish().last() {
            Some(Planned::End { total }) => assert_eq!(*total, 640),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn non_increasing_frames_are_dropped() {
        let cfg = WindowConfig::new(16000, 8.0, 1.0).unwrap();
        let mut p = WindowPlanner::new(cfg);
        p.push_frame(frame(100, None));
        p.push_frame(frame(200, None));
        p.push_frame(frame(200, None));
        p.push_frame(frame(150, None));
        assert_eq!(p.dropped_frames(), 2);
        assert_eq!(p.buffered_frames(), 2);
    }

    #[test]
    fn finish_starts_a_new_stream_and_params_apply_to_next_window() {
        let cfg = WindowConfig::new(16000, 1.0, 0.2).unwrap();
        let mut p = WindowPlanner::new(cfg);
        let mut a = Assembler::new(cfg);
        let mut prompts = Vec::new();
        let mut chunks = Vec::new();
        let mut run = |items: Vec<Planned>, a: &mut Assembler, prompts: &mut Vec<String>| {
            for it in items {
                chunks.push(match it {
                    Planned::Window { request, span } => {
                        prompts.push(request.params.prompt.clone());
                        a.push(&span, vec![0.5; span.generated as usize]).unwrap()
                    }
                    Planned::End { total } => a.finish(total).unwrap(),
                });
            }
        };
        for (i, f) in cfr(0, 50, 25, 1, true).into_iter().enumerate() {
            if i == 30 {
                p.set_params(GenerationParams {
                    prompt: "rain".into(),
                    ..Default::default()
                });
            }
            run(p.push_frame(f), &mut a, &mut prompts);
        }
        run(p.finish(), &mut a, &mut prompts);
        assert!(!p.started());
        // Window 0 is planned at frame 25 (before the change), windows 1 and 2 after it.
        assert_eq!(prompts, vec!["", "rain", "rain"]);
        // A new stream at 100 s: fresh origin, offsets restart at 0.
        for f in cfr(100 * NS_PER_S, 10, 25, 1, true) {
            run(p.push_frame(f), &mut a, &mut prompts);
        }
        run(p.finish(), &mut a, &mut prompts);
        let first: usize = chunks[..4].iter().map(|c| c.samples.len()).sum();
        assert_eq!(first, 32_000);
        let second = &chunks[4..];
        assert_eq!(second[0].origin, 100 * NS_PER_S);
        assert_eq!(second[0].offset, 0);
        let n: usize = second.iter().map(|c| c.samples.len()).sum();
        assert_eq!(n, 6400);
        let last = second.iter().rev().find(|c| !c.samples.is_empty()).unwrap();
        assert_eq!(last.time_range(16000).1, 100 * NS_PER_S + 400_000_000);
    }

    #[test]
    fn text_only_requests_have_no_frames() {
        let cfg = WindowConfig::new(16000, 1.0, 0.2).unwrap();
        let mut p = WindowPlanner::new(cfg);
        p.set_text_only(true);
        let mut items = Vec::new();
        for f in cfr(0, 30, 25, 1, true) {
            items.extend(p.push_frame(f));
        }
        items.extend(p.finish());
        let mut n = 0;
        for it in &items {
            if let Planned::Window { request, .. } = it {
                assert!(request.frames.is_empty());
                n += 1;
            }
        }
        assert_eq!(n, 2);
    }

    #[test]
    fn assembler_rejects_bad_input() {
        let cfg = WindowConfig::new(16000, 1.0, 0.2).unwrap();
        let mut a = Assembler::new(cfg);
        let span = |index, start, len, last| WindowSpan {
            index,
            origin: 0,
            start,
            len,
            generated: len,
            last,
        };
        // Out of order.
        let e = a.push(&span(1, 12800, 16000, false), vec![0.0; 16000]);
        assert!(e.unwrap_err().to_string().contains("out of order"));
        // Too short.
        let e = a.push(&span(0, 0, 16000, false), vec![0.0; 100]);
        assert!(e.unwrap_err().to_string().contains("returned 100 samples"));
        // Longer audio is trimmed.
        let c = a.push(&span(0, 0, 16000, false), vec![1.0; 20000]).unwrap();
        assert_eq!(c.samples.len(), 12800);
        // A missing window is detected at the end.
        let e = a.finish(50_000).unwrap_err().to_string();
        assert!(e.contains("expected 50000"), "{e}");
    }
}
