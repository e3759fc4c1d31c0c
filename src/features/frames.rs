//! Frame timing and frame picking, exactly as the official reader does it.
//!
//! MMAudio conditions on frames sampled at 8 fps (CLIP) and 25 fps (Synchformer). The
//! official code (`mmaudio/data/av_utils.py::read_frames` called by
//! `mmaudio/eval_utils.py::load_video`) does **not** pick the nearest frame; it walks the
//! decoded frames in presentation order and, per target rate `f`:
//!
//! * keeps a slot time `next_t` that starts at `0.0` and grows by `next_t += 1/f`
//!   (float64, accumulated by repeated addition, so it drifts away from `k/f`);
//! * for each frame with time `t` (frames with `t < 0` and `t > duration` are skipped;
//!   `t == duration` is kept): `while t >= next_t { slot ← this frame; next_t += 1/f }`.
//!
//! So slot `k` holds the *first* frame whose time is `>= next_t_k`; source frames are
//! repeated when `f` is faster than the source and skipped when it is slower, and exact ties
//! (a frame time equal to a slot time) are decided by the float error of `next_t`.
//! Afterwards `load_video` shrinks the duration when a stream came out short
//! (`len/8 < duration` or `len/25 < duration`) and cuts the streams to `int(8·duration)` and
//! `int(25·duration)` frames. [`plan_frames`] reproduces all of it and reports the final
//! duration (the official code uses it for the sequence lengths of the network).
//!
//! ## Frame times
//!
//! The official frame time is PyAV's `frame.time = float(pts) * tb.num / tb.den` (float64):
//! [`pts_to_seconds`]. GStreamer hands out nanoseconds rounded from the container's
//! timescale, and for 1001-based rates (23.976, 29.97, 59.94 fps) `ns / 1e9` can land on the
//! other side of a slot time than PyAV's value and flip a tie. [`frame_time_from_ns`] undoes
//! that: when the stream's frame rate `num/den` is known and the nanosecond value is within
//! 1 ns of a point `k·den/num` of the frame grid, the time is the correctly rounded float64
//! of that rational, which is what PyAV computes for a frame on that grid. Any other
//! rational tick works as "frame rate" too (e.g. `(90000, 1)` for a 90 kHz MPEG-TS clock).
//! Otherwise the time is `ns / 1e9` (exact for timescales that divide 1e9, e.g. Matroska's
//! milliseconds).
//!
//! ## Windows that do not start at time 0
//!
//! The streaming element cuts a stream into consecutive windows and treats **each window
//! as its own video**: frame times are taken relative to the window start
//! ([`relative_frame_time`]), slot times restart at 0 in every window, frames before the
//! window start (negative relative time) are ignored, as are frames after the window's
//! duration. The relative time is computed exactly (as a rational) before one final
//! rounding: for a window that starts on a frame of the grid (the usual case when windows
//! are a whole number of frames long, or are aligned to a frame) the result is bit-identical
//! to running the official code on the same frames cut into a file whose first frame has
//! pts 0. A window start between two frames gives exact relative times too; the first slot
//! then takes the first frame at or after the window start. A frame at exactly `duration`
//! (relative) may still be picked (official `t == end_sec` is kept), so callers should pass
//! it when they have it; frames beyond the duration are ignored here, so passing more
//! frames than the window needs is harmless. The element should fill
//! [`VideoFrame::pts`](crate::request::VideoFrame) with [`relative_frame_time`] and pass
//! those times to [`plan_frames`].

use crate::config::{CLIP_FPS, SYNC_FPS, SYNC_SEGMENT_FRAMES, SYNC_STEP, SYNC_TOKENS_PER_SEGMENT};
use crate::error::{Error, Result};
use std::ops::Range;

const NS_PER_S: i128 = 1_000_000_000;

/// The correctly rounded (round-half-to-even) float64 of the rational `num / den`.
///
/// Exact for every pair of `i128`s whose magnitudes stay below 2^125 (far beyond any
/// timestamp arithmetic). Returns NaN for `den == 0`.
pub fn ratio_to_f64(num: i128, den: i128) -> f64 {
    if den == 0 {
        return f64::NAN;
    }
    if num == 0 {
        return 0.0;
    }
    let negative = (num < 0) != (den < 0);
    let (mut p, mut q) = (num.unsigned_abs(), den.unsigned_abs());
    let g = gcd(p, q);
    p /= g;
    q /= g;
    const EXACT: u128 = 1 << 53;
    let v = if p <= EXACT && q <= EXACT {
        // both exactly representable: IEEE division rounds correctly
        p as f64 / q as f64
    } else {
        round_quotient(p, q)
    };
    if negative { -v } else { v }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// p / q (p, q > 0, q < 2^126) correctly rounded: long division to 54 significant bits plus
/// a sticky remainder, then round-half-to-even.
fn round_quotient(p: u128, q: u128) -> f64 {
    let mut m = p / q;
    let mut r = p % q;
    let mut scale: i32 = 0; // value = (m + r/q) · 2^-scale
    let mut sticky = false;
    // too many integer bits: drop low bits into the sticky flag
    while m >= (1u128 << 54) {
        sticky |= (m & 1) != 0;
        m >>= 1;
        scale -= 1;
    }
    // too few: pull in fraction bits
    while m < (1u128 << 53) {
        r <<= 1;
        m <<= 1;
        if r >= q {
            r -= q;
            m |= 1;
        }
        scale += 1;
    }
    sticky |= r != 0;
    // m has 54 bits: 53 mantissa bits and a guard bit
    let guard = (m & 1) != 0;
    let mut mant = m >> 1;
    if guard && (sticky || (mant & 1) != 0) {
        mant += 1;
    }
    // mant ≤ 2^53 is exact as f64; scaling by a power of two is exact for normal results
    mant as f64 * 2f64.powi(1 - scale)
}

/// PyAV's `frame.time`: `float(pts) * time_base.num / time_base.den`, evaluated in float64
/// in that order.
pub fn pts_to_seconds(pts: i64, time_base: (i64, i64)) -> f64 {
    pts as f64 * time_base.0 as f64 / time_base.1 as f64
}

/// A time as an exact rational `num / den` seconds (`den > 0`).
fn exact_time_ns(pts_ns: i64, framerate: Option<(u32, u32)>) -> (i128, i128) {
    if let Some((fnum, fden)) = framerate
        && fnum > 0
        && fden > 0
    {
        let (fnum, fden) = (fnum as i128, fden as i128);
        // grid point k·fden/fnum s = k·fden·1e9/fnum ns; nearest k:
        let unit = fden * NS_PER_S; // ns · fnum per frame
        let scaled = pts_ns as i128 * fnum;
        let k = (2 * scaled + unit).div_euclid(2 * unit);
        let err = (scaled - k * unit).abs(); // |ns − grid| · fnum
        if err <= fnum {
            return (k * fden, fnum);
        }
    }
    (pts_ns as i128, NS_PER_S)
}

/// Frame time in seconds from a nanosecond timestamp, recovering the exact rational time
/// when the frame sits (within 1 ns) on the grid of `framerate = (num, den)` frames per
/// second, so that ties against the 8/25 fps slot times break as in the official reader.
/// With `None` (or a zero rate, e.g. variable-rate caps `0/1`) the time is `ns / 1e9`.
pub fn frame_time_from_ns(pts_ns: i64, framerate: Option<(u32, u32)>) -> f64 {
    let (n, d) = exact_time_ns(pts_ns, framerate);
    ratio_to_f64(n, d)
}

/// Frame time relative to a window start, both in nanoseconds, computed exactly (each end
/// snapped to the frame grid as in [`frame_time_from_ns`]) and rounded once. See the module
/// documentation for the window rule.
pub fn relative_frame_time(
    pts_ns: i64,
    window_start_ns: i64,
    framerate: Option<(u32, u32)>,
) -> f64 {
    let (a, b) = exact_time_ns(pts_ns, framerate);
    let (c, d) = exact_time_ns(window_start_ns, framerate);
    ratio_to_f64(a * d - c * b, b * d)
}

/// The picks of one target rate.
#[derive(Debug, Clone, PartialEq)]
pub struct RatePick {
    /// Target rate in frames per second.
    pub fps: f64,
    /// For each output slot, the index (into the caller's frame list) of the picked frame.
    pub indices: Vec<usize>,
    /// The accumulated float64 slot time of each output slot.
    pub slot_times: Vec<f64>,
}

impl RatePick {
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
    fn truncate(&mut self, n: usize) {
        self.indices.truncate(n);
        self.slot_times.truncate(n);
    }
}

/// `read_frames` for one target rate: the slots filled by frames with times `times` (in
/// presentation order, seconds from the clip start), keeping frames with `0 <= t <= end`.
/// Not truncated: the official reader can emit one slot more than `int(fps·end)`.
pub fn pick_rate(times: &[f64], fps: f64, end: f64) -> RatePick {
    let delta = 1.0 / fps;
    let mut next_t = 0.0f64;
    let mut indices = Vec::new();
    let mut slot_times = Vec::new();
    for (i, &t) in times.iter().enumerate() {
        // official: `if t < start_sec: continue`, `if t > end_sec: break` (within a packet;
        // with presentation-ordered input every later frame is later too, so skipping is
        // the same and also copes with an out-of-order frame)
        if t < 0.0 || t > end {
            continue;
        }
        while t >= next_t {
            indices.push(i);
            slot_times.push(next_t);
            next_t += delta;
        }
    }
    RatePick {
        fps,
        indices,
        slot_times,
    }
}

/// Frames picked for one clip: 8 fps for CLIP, 25 fps for Synchformer, and the duration the
/// official `load_video` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct FramePlan {
    /// The duration asked for.
    pub requested_duration: f64,
    /// The duration after `load_video`'s shortening (≤ requested); the official demo sets
    /// the sequence lengths of the network from it.
    pub duration: f64,
    /// `int(8 · duration)` CLIP slots.
    pub clip: RatePick,
    /// `int(25 · duration)` Synchformer slots.
    pub sync: RatePick,
}

impl FramePlan {
    /// True when the video was shorter than requested and the duration shrank.
    pub fn shortened(&self) -> bool {
        self.duration < self.requested_duration
    }
}

/// The official frame selection for a clip of `duration` seconds whose frames have times
/// `times` (presentation order, seconds from the clip start; see [`frame_time_from_ns`],
/// [`relative_frame_time`]).
///
/// Errors when the duration is not a positive finite number or no frame lies in
/// `[0, duration]` (the official reader then fails in `np.stack`).
pub fn plan_frames(times: &[f64], duration: f64) -> Result<FramePlan> {
    if !(duration.is_finite() && duration > 0.0) {
        return Err(Error::input(format!(
            "frame picking: duration must be a positive number of seconds, got {duration}"
        )));
    }
    let mut clip = pick_rate(times, CLIP_FPS, duration);
    let mut sync = pick_rate(times, SYNC_FPS, duration);
    if clip.is_empty() || sync.is_empty() {
        let (lo, hi) = times
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &t| {
                (a.min(t), b.max(t))
            });
        return Err(Error::input(format!(
            "frame picking: none of the {} frames lies in [0, {duration}] s (frame times span \
             {lo} .. {hi} s)",
            times.len()
        )));
    }
    let mut d = duration;
    let clip_len = clip.len() as f64 / CLIP_FPS;
    let sync_len = sync.len() as f64 / SYNC_FPS;
    if clip_len < d {
        d = clip_len;
    }
    if sync_len < d {
        d = sync_len;
    }
    clip.truncate((CLIP_FPS * d) as usize);
    sync.truncate((SYNC_FPS * d) as usize);
    Ok(FramePlan {
        requested_duration: duration,
        duration: d,
        clip,
        sync,
    })
}

/// Number of Synchformer segments for `num_frames` 25 fps frames: `(T − 16) // 8 + 1`.
/// Errors for `T < 16` (the official code fails in `torch.stack([])`).
pub fn sync_num_segments(num_frames: usize) -> Result<usize> {
    if num_frames < SYNC_SEGMENT_FRAMES {
        return Err(Error::input(format!(
            "Synchformer needs at least {SYNC_SEGMENT_FRAMES} frames at 25 fps (0.64 s of \
             video), got {num_frames}"
        )));
    }
    Ok((num_frames - SYNC_SEGMENT_FRAMES) / SYNC_STEP + 1)
}

/// The frame range of each Synchformer segment: segment `s` covers `[8s, 8s + 16)`; frames
/// after the last full segment are dropped.
pub fn sync_segments(num_frames: usize) -> Result<Vec<Range<usize>>> {
    let s = sync_num_segments(num_frames)?;
    Ok((0..s)
        .map(|i| i * SYNC_STEP..i * SYNC_STEP + SYNC_SEGMENT_FRAMES)
        .collect())
}

/// For each of the `S·8` output tokens of the Synchformer features, the pair of frames it
/// was computed from: token `8s + k` comes from tubelet `k` of segment `s`, i.e. frames
/// `(8s + 2k, 8s + 2k + 1)`. Consecutive segments overlap, so tokens `8s + k` (k ≥ 4) and
/// `8(s+1) + k − 4` cover the same frames (computed in different segments).
pub fn sync_token_frames(num_frames: usize) -> Result<Vec<(usize, usize)>> {
    let tubelet = SYNC_SEGMENT_FRAMES / SYNC_TOKENS_PER_SEGMENT;
    Ok(sync_segments(num_frames)?
        .into_iter()
        .flat_map(|r| {
            (0..SYNC_TOKENS_PER_SEGMENT).map(move |k| {
                let f = r.start + k * tubelet;
                (f, f + tubelet - 1)
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent statement of the official rule (the loop of `read_frames` plus the
    /// truncation of `load_video`), to check `plan_frames` against on synthetic timelines.
    fn reference(times: &[f64], duration: f64) -> (Vec<usize>, Vec<usize>, f64) {
        let fpss = [8.0f64, 25.0];
        let mut out: [Vec<usize>; 2] = [vec![], vec![]];
        let mut next = [0.0f64; 2];
        for (i, &t) in times.iter().enumerate() {
            if t < 0.0 {
                continue;
            }
            if t > duration {
                break;
            }
            for j in 0..2 {
                while t >= next[j] {
                    out[j].push(i);
                    next[j] += 1.0 / fpss[j];
                }
            }
        }
        let mut d = duration;
        if (out[0].len() as f64) / 8.0 < d {
            d = out[0].len() as f64 / 8.0;
        }
        if (out[1].len() as f64) / 25.0 < d {
            d = out[1].len() as f64 / 25.0;
        }
        let [mut c, mut s] = out;
        c.truncate((8.0 * d) as usize);
        s.truncate((25.0 * d) as usize);
        (c, s, d)
    }

    fn grid(n: usize, num: u32, den: u32) -> Vec<f64> {
        (0..n as i128)
            .map(|k| ratio_to_f64(k * den as i128, num as i128))
            .collect()
    }

    fn check(times: &[f64], duration: f64) -> FramePlan {
        let plan = plan_frames(times, duration).unwrap();
        let (c, s, d) = reference(times, duration);
        assert_eq!(plan.clip.indices, c);
        assert_eq!(plan.sync.indices, s);
        assert_eq!(plan.duration, d);
        // every slot took the first frame at/after its slot time
        for pick in [&plan.clip, &plan.sync] {
            for (&i, &st) in pick.indices.iter().zip(&pick.slot_times) {
                assert!(times[i] >= st);
                assert!(i == 0 || times[i - 1] < st || times[i - 1] < 0.0);
            }
        }
        plan
    }

    #[test]
    fn ratio_rounding_is_correct() {
        // small cases agree with IEEE division
        for (p, q) in [(1i128, 3i128), (1001, 30000), (2, 3), (-7, 25), (5, -8)] {
            assert_eq!(ratio_to_f64(p, q), p as f64 / q as f64);
        }
        // large operands (beyond 2^53) still round correctly: (2^60+1)/2^7 = 2^53 + 2^-7,
        // which rounds to 2^53
        let big = (1i128 << 60) + 1;
        assert_eq!(ratio_to_f64(big, 1 << 7), 9007199254740992.0);
        // 3·2^70 / (3·2^10) = 2^60 exactly
        assert_eq!(ratio_to_f64(3 << 70, 3 << 10), 2f64.powi(60));
        // a non-terminating quotient of big numbers vs the f64 path after gcd reduction
        let p = 1001i128 * 123_456_789_012_345;
        let q = 24_000i128 * 1_000_000_007;
        let v = ratio_to_f64(p, q);
        // compare with a reconstruction: v must be within half an ulp of the true value
        let ulp = f64::EPSILON * v;
        let approx = 1001.0 * 123_456_789_012_345.0 / (24_000.0 * 1_000_000_007.0);
        assert!((v - approx).abs() <= 2.0 * ulp);
        assert!(ratio_to_f64(1, 0).is_nan());
        assert_eq!(ratio_to_f64(0, 5), 0.0);
        // halfway case rounds to even: (2^54 + 2) / 2 = 2^53 + 1 is not representable →
        // ties to 2^53 (even mantissa)
        assert_eq!(ratio_to_f64((1 << 54) + 2, 2), 9007199254740992.0);
        // (2^54 + 6) / 2 = 2^53 + 3 → ties to 2^53 + 4
        assert_eq!(ratio_to_f64((1 << 54) + 6, 2), 9007199254740996.0);
    }

    #[test]
    fn snapping_recovers_pyav_times_for_1001_rates() {
        for (num, den, tb_den) in [
            (24000u32, 1001u32, 24000i64),
            (30000, 1001, 30000),
            (60000, 1001, 60000),
        ] {
            for k in 0..3000i64 {
                let pts = k * den as i64; // timescale 1/tb_den, one frame = den ticks
                let pyav = pts_to_seconds(pts, (1, tb_den));
                let exact_ns = pts as i128 * NS_PER_S;
                // GStreamer rounds down (gst_util_uint64_scale) or to nearest
                let floor_ns = (exact_ns / tb_den as i128) as i64;
                let round_ns = ((2 * exact_ns + tb_den as i128) / (2 * tb_den as i128)) as i64;
                for ns in [floor_ns, round_ns] {
                    assert_eq!(
                        frame_time_from_ns(ns, Some((num, den))),
                        pyav,
                        "k={k} ns={ns}"
                    );
                }
            }
        }
    }

    #[test]
    fn naive_ns_times_can_flip_ties_but_snapped_do_not() {
        // 29.97 fps: find frames whose truncated-ns time differs from PyAV's value
        let mut differing = 0;
        for k in 0..30000i64 {
            let pts = k * 1001;
            let pyav = pts_to_seconds(pts, (1, 30000));
            let ns = (pts as i128 * NS_PER_S / 30000) as i64;
            if ns as f64 / 1e9 != pyav {
                differing += 1;
            }
            assert_eq!(frame_time_from_ns(ns, Some((30000, 1001))), pyav);
        }
        assert!(differing > 0, "expected some naive ns/1e9 values to differ");
    }

    #[test]
    fn off_grid_and_unknown_rate_use_ns() {
        // Matroska-style millisecond timestamps of a 23.976 fps stream are off the grid
        for k in 0..500i64 {
            let ms = (k * 1001 * 1000 + 12000) / 24000; // rounded ms
            let ns = ms * 1_000_000;
            let pyav = pts_to_seconds(ms, (1, 1000));
            assert_eq!(frame_time_from_ns(ns, Some((24000, 1001))), pyav);
            assert_eq!(frame_time_from_ns(ns, None), pyav);
            assert_eq!(frame_time_from_ns(ns, Some((0, 1))), pyav);
        }
        assert_eq!(frame_time_from_ns(-40_000_000, Some((25, 1))), -0.04);
    }

    #[test]
    fn relative_times_on_a_grid_aligned_window_match_a_cut_file() {
        let (num, den) = (30000u32, 1001u32);
        let ns_of = |k: i64| (k as i128 * den as i128 * NS_PER_S / num as i128) as i64;
        let k0 = 240; // window starting at frame 240
        for k in k0..k0 + 300 {
            let rel = relative_frame_time(ns_of(k), ns_of(k0), Some((num, den)));
            assert_eq!(
                rel,
                ratio_to_f64((k - k0) as i128 * den as i128, num as i128)
            );
        }
        // a window start between frames: exact difference, frames before it negative
        let start = 8_000_000_000i64;
        let rel = relative_frame_time(ns_of(239), start, Some((num, den)));
        assert!(rel < 0.0);
        let rel = relative_frame_time(ns_of(240), start, Some((num, den)));
        assert_eq!(
            rel,
            ratio_to_f64(240 * 1001 * 1_000 - 8 * 30_000_000, 30_000_000)
        );
    }

    #[test]
    fn constant_rates() {
        for (num, den) in [
            (25u32, 1u32),
            (30000, 1001),
            (24000, 1001),
            (60, 1),
            (5, 1),
            (30, 1),
            (50, 1),
            (24, 1),
        ] {
            for dur in [8.0, 10.0, 5.32, 1.0, 0.64, 7.99] {
                let n = (dur * num as f64 / den as f64).ceil() as usize + 2;
                let times = grid(n, num, den);
                let plan = check(&times, dur);
                // the drift of the slot times can make the last slot miss the last frame
                // (e.g. 25 fps at 7.99 s: slot 199 sits just above the frame at 7.96 s), and
                // the official code then shortens the clip by one slot
                // (a slow source can lose up to one source frame interval)
                let frame_dt = den as f64 / num as f64;
                assert!(plan.duration <= dur, "{num}/{den} {dur}");
                assert!(plan.duration >= dur - frame_dt - 0.05, "{num}/{den} {dur}");
                assert_eq!(plan.clip.len(), (8.0 * plan.duration) as usize);
                assert_eq!(plan.sync.len(), (25.0 * plan.duration) as usize);
            }
        }
    }

    #[test]
    fn source_25fps_is_not_one_to_one() {
        // the float drift of next_t makes some 25 fps frames repeat and others skip
        let times = grid(201, 25, 1);
        let plan = check(&times, 8.0);
        let identity: Vec<usize> = (0..200).collect();
        assert_ne!(plan.sync.indices, identity);
        assert_eq!(plan.sync.len(), 200);
    }

    #[test]
    fn slow_source_repeats_frames() {
        // 5 fps: each frame fills 5 sync slots, clip slots are ~1.6 per frame
        let times = grid(41, 5, 1);
        let plan = check(&times, 8.0);
        assert_eq!(plan.sync.len(), 200);
        let max_rep = plan
            .sync
            .indices
            .chunk_by(|a, b| a == b)
            .map(|c| c.len())
            .max()
            .unwrap();
        assert!(max_rep >= 5);
    }

    #[test]
    fn variable_rate_and_gaps() {
        // jittered 30 fps with a 1 s gap in the middle and a burst of close frames
        let mut times = Vec::new();
        let mut t = 0.0f64;
        let mut s = 12345u64;
        while t < 9.0 {
            times.push(t);
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let jitter = ((s >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.02;
            t += 1.0 / 30.0 + jitter;
            if (3.0..3.05).contains(&t) {
                t += 1.0; // gap
            }
            if (5.0..5.04).contains(&t) {
                for _ in 0..5 {
                    times.push(t);
                    t += 0.001; // burst
                }
            }
        }
        let plan = check(&times, 8.0);
        assert_eq!(plan.duration, 8.0);
        // during the gap, slots repeat the first frame after it
        let after_gap = times.iter().position(|&x| x > 3.5).unwrap();
        assert!(
            plan.sync
                .indices
                .iter()
                .filter(|&&i| i == after_gap)
                .count()
                > 20
        );
    }

    #[test]
    fn short_video_shrinks_duration() {
        // 3 s of 30 fps video for an 8 s request
        let times = grid(90, 30, 1);
        let plan = check(&times, 8.0);
        assert!(plan.shortened());
        // last frame at 89/30 = 2.9667 s: 24 clip slots (0..=2.875), 75 sync slots
        assert_eq!(plan.clip.len(), 24);
        assert_eq!(plan.duration, 24.0 / 8.0);
        assert_eq!(plan.sync.len(), 75);
        // odd length: 2.3 s of 25 fps
        let times = grid(58, 25, 1);
        let plan = check(&times, 10.0);
        assert!(plan.shortened());
        assert_eq!(plan.clip.len(), (8.0 * plan.duration) as usize);
    }

    #[test]
    fn frames_outside_the_window_are_ignored() {
        let mut times = vec![-0.2, -0.1];
        times.extend(grid(300, 30, 1));
        let plan = check(&times, 8.0);
        assert_eq!(plan.clip.indices[0], 2);
        assert!(plan.sync.indices.iter().all(|&i| i >= 2 && times[i] <= 8.0));
        // a frame at exactly the duration is kept, so an 8 fps source fills slot 63 even
        // though its slot time drifted above 7.875
        let times = grid(65, 8, 1);
        let plan = check(&times, 8.0);
        assert_eq!(plan.clip.len(), 64);
    }

    #[test]
    fn first_frame_late_leaves_no_gap() {
        // stream starting at 0.1 s: slot 0 (t=0) and following take the first frame
        let times: Vec<f64> = grid(250, 30, 1).iter().map(|t| t + 0.1).collect();
        let plan = check(&times, 8.0);
        assert_eq!(&plan.sync.indices[..3], &[0, 0, 0]);
    }

    #[test]
    fn errors_are_clear() {
        let e = plan_frames(&[], 8.0).unwrap_err().to_string();
        assert!(e.contains("none of the 0 frames"), "{e}");
        let e = plan_frames(&[9.0, 10.0], 8.0).unwrap_err().to_string();
        assert!(e.contains("[0, 8]") && e.contains("9 .. 10"), "{e}");
        assert!(plan_frames(&[0.0], f64::NAN).is_err());
        assert!(plan_frames(&[0.0], -1.0).is_err());
        // a single frame is a valid (very short) clip
        let p = plan_frames(&[0.0], 8.0).unwrap();
        assert_eq!((p.clip.len(), p.sync.len()), (0, 1));
    }

    #[test]
    fn segments() {
        assert_eq!(sync_num_segments(200).unwrap(), 24);
        assert_eq!(sync_num_segments(133).unwrap(), 15);
        assert_eq!(sync_num_segments(16).unwrap(), 1);
        assert_eq!(sync_num_segments(23).unwrap(), 1);
        assert_eq!(sync_num_segments(24).unwrap(), 2);
        let e = sync_num_segments(15).unwrap_err().to_string();
        assert!(
            e.contains("at least 16 frames") && e.contains("got 15"),
            "{e}"
        );
        let segs = sync_segments(133).unwrap();
        assert_eq!(segs.last().unwrap(), &(112..128));
        let tok = sync_token_frames(200).unwrap();
        assert_eq!(tok.len(), 192);
        assert_eq!(tok[0], (0, 1));
        assert_eq!(tok[7], (14, 15));
        assert_eq!(tok[8], (8, 9));
        assert_eq!(tok[191], (198, 199));
        assert!(sync_token_frames(0).is_err());
    }
}
