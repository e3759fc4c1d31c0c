//! The producer half shared by both engines: frames in, window requests out.
//!
//! The planner holds the frames a not-yet-planned window can still show, gives every frame
//! a stream-unique id (the same in every request that carries it), plans each window as
//! soon as the video reaches its end ([`EngineConfig::window_end`]) and, at the end of the
//! stream, the remaining windows against the exact total ([`EngineConfig::window`]).
//!
//! # Frames kept at any input rate
//!
//! MMAudio looks at a window through two samplings of its frames, relative to the window
//! start: 8 fps for CLIP and 25 fps for Synchformer, where slot `m` of rate `f` (at
//! `m/f` s) takes the first frame at or after it, and the frame shown at the window start
//! counts as being at 0 ([`crate::features::frames`]). So a frame `f` with predecessor `p`
//! can only be picked by a window `k` if a slot of `k` lies in `(t_p, t_f]`, or if `f` is
//! the frame shown at `k`'s start (`t_f ≤ S_k < t_next`). When the generator says it only
//! looks at these picks ([`crate::generator::AudioGenerator::picks_frames`], switched on
//! with [`WindowPlanner::set_frame_picking`]), the planner applies that rule to every
//! window not yet planned (their starts are known in advance in both engines): a frame no
//! slot can pick is dropped, and a frame is prepared ([`Preparer`]) only at the model sizes
//! it can be picked for ([`FramePlanes`]). Dropping a frame no slot picks does not change
//! what any slot picks (the slots in `(t_p, t_next]` all lie in `(t_f, t_next]` and go to
//! the next frame either way), so the generator sees the same picks as with every frame.
//! The comparison uses the frame times exactly as the request will carry them
//! ([`crate::features::frames::relative_frame_time`]) and the slot times exactly as the
//! official reader accumulates them, so it decides ties as the generator will.
//!
//! Whether a frame is a window's start frame is only known when the next frame arrives, so
//! each frame waits, full size, until the next one (or the end of the stream) has arrived;
//! then it is kept and prepared, or dropped. No window is planned later for it: a window
//! is planned by a frame at or past its end, after the frame before it is settled.
//!
//! The bound: per window at most `8 + 25` frames per second of window are picked, and a
//! frame is kept only for the windows still to be planned that contain it (at most
//! `⌈W/H⌉ + 1` of them), so the store holds at most `min(input fps, 33 · (⌈W/H⌉ + 1))` frames
//! per second of window, independent of the input rate beyond that, and a frame picked
//! only at 25 fps keeps only its 224×224 plane (150 kB instead of 590 kB).

use super::{
    DEFAULT_FRAME_NS, EngineConfig, MAX_FRAME_JUMP_NS, NS_PER_S, Planned, TimedFrame, WindowPlace,
    WindowSpan, ns_to_samples_round, samples_to_ns,
};
use crate::config::{CLIP_FPS, SYNC_FPS};
use crate::error::Result;
use crate::request::{GenerationParams, PreparedFrame, VideoFrame, WindowRequest};
use std::collections::VecDeque;
use std::sync::Arc;

/// Which model-size versions of a frame are needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePlanes {
    /// 384×384 for CLIP (8 fps picks).
    pub clip: bool,
    /// 224×224 for Synchformer (25 fps picks).
    pub sync: bool,
}

impl FramePlanes {
    pub const BOTH: Self = Self {
        clip: true,
        sync: true,
    };
    pub const NONE: Self = Self {
        clip: false,
        sync: false,
    };
    pub fn any(self) -> bool {
        self.clip || self.sync
    }
}

/// Resizes a kept frame to the planes it needs (the element passes
/// [`crate::features::preprocess::prepare_frame_planes`]); the frame's full-size data is
/// then released. On error the frame is kept as it is (the generator resizes it itself).
pub type Preparer = Arc<dyn Fn(&TimedFrame, FramePlanes) -> Result<PreparedFrame> + Send + Sync>;

/// The official slot times of rate `fps` (`next_t += 1/fps` from 0, in f64, as
/// `read_frames` accumulates them), extended so that the table holds a slot after `t`.
fn slot_table(table: &mut Vec<f64>, fps: f64, t: f64) -> &[f64] {
    if table.is_empty() {
        table.push(0.0);
    }
    while *table.last().expect("not empty") <= t {
        let next = table.last().expect("not empty") + 1.0 / fps;
        table.push(next);
    }
    table
}

#[derive(Debug)]
struct Held {
    frame: TimedFrame,
    id: u64,
    /// Pts of the frame that arrived before it (None for a stream's first frame).
    prev_pts: Option<u64>,
    /// Kept for good; false while it waits for the next frame (see the module doc).
    settled: bool,
}

/// Producer half: frames in, window requests out (both engines).
pub struct WindowPlanner {
    cfg: EngineConfig,
    params: GenerationParams,
    text_only: bool,
    /// Pts of the first frame of the current stream.
    origin: Option<u64>,
    frames: VecDeque<Held>,
    last_pts: Option<u64>,
    last_duration: Option<u64>,
    last_interval: Option<u64>,
    /// Furthest time (ns, absolute) the video is known to reach: the latest frame start.
    reached: u64,
    next_index: u64,
    dropped: u64,
    decimated: u64,
    next_id: u64,
    /// Constant frame rate of the stream, if known: frame times are then recovered exactly
    /// from the nanosecond timestamps (see [`crate::features::frames::frame_time_from_ns`]).
    framerate: Option<(u32, u32)>,
    picking: bool,
    preparer: Option<Preparer>,
    /// Official slot times at 8 and 25 fps (see [`slot_table`]).
    slots: [Vec<f64>; 2],
    /// The first error of the preparer since it was last taken.
    prepare_error: Option<crate::Error>,
}

impl std::fmt::Debug for WindowPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowPlanner")
            .field("cfg", &self.cfg)
            .field("origin", &self.origin)
            .field("frames", &self.frames.len())
            .field("next_index", &self.next_index)
            .field("picking", &self.picking)
            .field("preparer", &self.preparer.is_some())
            .finish()
    }
}

impl WindowPlanner {
    pub fn new(cfg: impl Into<EngineConfig>) -> Self {
        Self {
            cfg: cfg.into(),
            framerate: None,
            params: GenerationParams::default(),
            text_only: false,
            origin: None,
            frames: VecDeque::new(),
            last_pts: None,
            last_duration: None,
            last_interval: None,
            reached: 0,
            next_index: 0,
            dropped: 0,
            decimated: 0,
            next_id: 0,
            picking: false,
            preparer: None,
            slots: [Vec::new(), Vec::new()],
            prepare_error: None,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Settings for windows planned from now on. The seed of window `k` is
    /// `params.seed + k`, so windows differ but a stream is reproducible.
    pub fn set_params(&mut self, params: GenerationParams) {
        self.params = params;
    }

    /// The stream's constant frame rate (`None` or `0/1` for variable rate). With it, the
    /// frame times handed to the generator are the exact rational frame times (relative to
    /// the window start), as the official reader computes them from the container's pts,
    /// instead of differences of rounded nanoseconds — this decides ties between a frame
    /// and an 8/25 fps slot the same way the official code does.
    pub fn set_framerate(&mut self, framerate: Option<(u32, u32)>) {
        self.framerate = framerate.filter(|&(n, d)| n > 0 && d > 0);
    }

    /// Plan windows without frames (text-to-audio) from now on; frames still set the
    /// timing.
    pub fn set_text_only(&mut self, text_only: bool) {
        self.text_only = text_only;
    }

    /// Drop, as they arrive, the frames no 8/25 fps slot of a present or future window can
    /// pick (see the module documentation). Only for generators that look at nothing else.
    pub fn set_frame_picking(&mut self, on: bool) {
        self.picking = on;
    }

    /// Resize kept frames with `preparer` (at the planes they are picked for when frame
    /// picking is on) and release their full-size data.
    pub fn set_preparer(&mut self, preparer: Option<Preparer>) {
        self.preparer = preparer;
    }

    /// Frames currently held.
    pub fn buffered_frames(&self) -> usize {
        self.frames.len()
    }

    /// Bytes of frame data currently held (full-size and prepared planes).
    pub fn buffered_bytes(&self) -> usize {
        self.frames
            .iter()
            .map(|h| {
                h.frame.data.len()
                    + h.frame
                        .prepared
                        .as_ref()
                        .map_or(0, |p| p.clip.len() + p.sync.len())
            })
            .sum()
    }

    /// Frames dropped because their pts did not increase.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped
    }

    /// Frames dropped because no slot could pick them (frame picking).
    pub fn decimated_frames(&self) -> u64 {
        self.decimated
    }

    /// Whether a stream is in progress (a frame was received since the last end/reset).
    pub fn started(&self) -> bool {
        self.origin.is_some()
    }

    /// Pts of the first frame of the current stream.
    pub fn origin(&self) -> Option<u64> {
        self.origin
    }

    /// Forget the current stream (flush).
    pub fn reset(&mut self) {
        self.origin = None;
        self.frames.clear();
        self.last_pts = None;
        self.last_duration = None;
        self.last_interval = None;
        self.reached = 0;
        self.next_index = 0;
    }

    /// Add a frame; returns the windows that became complete. A frame whose pts is not
    /// after the previous one is dropped (counted in [`Self::dropped_frames`]); one more
    /// than [`MAX_FRAME_JUMP_NS`] after the end of the previous one ends the stream and
    /// starts a new one.
    pub fn push_frame(&mut self, frame: TimedFrame) -> Vec<Planned> {
        if let Some(last) = self.last_pts {
            if frame.pts <= last {
                self.dropped += 1;
                return Vec::new();
            }
            let last_end = last.saturating_add(self.last_duration.unwrap_or(0));
            if frame.pts.saturating_sub(last_end) > MAX_FRAME_JUMP_NS {
                let mut out = self.finish();
                out.extend(self.push_frame(frame));
                return out;
            }
            self.last_interval = Some(frame.pts - last);
        }
        if self.origin.is_none() {
            self.origin = Some(frame.pts);
        }
        self.settle_last(frame.pts);
        let prev_pts = self.last_pts;
        self.last_pts = Some(frame.pts);
        self.last_duration = frame.duration;
        self.reached = self.reached.max(frame.pts);
        let id = self.next_id;
        self.next_id += 1;
        let mut held = Held {
            frame,
            id,
            prev_pts,
            settled: !self.picking,
        };
        if held.settled {
            self.prepare(&mut held, FramePlanes::BOTH);
        }
        self.frames.push_back(held);
        self.release_full_windows()
    }

    /// End of stream (EOS or a drain before a new segment): plans the remaining windows,
    /// the last one ending exactly at the total, then [`Planned::End`]. The planner is then
    /// ready for a new stream (new origin at the next frame).
    pub fn finish(&mut self) -> Vec<Planned> {
        let mut out = Vec::new();
        let (Some(origin), Some(last_pts)) = (self.origin, self.last_pts) else {
            self.reset();
            out.push(Planned::End { total: 0 });
            return out;
        };
        let last_dur = self
            .last_duration
            .or(self.last_interval)
            .unwrap_or(DEFAULT_FRAME_NS);
        let end = last_pts.saturating_add(last_dur);
        self.settle_last(end);
        let total = ns_to_samples_round(end - origin, self.cfg.rate());
        let mut k = self.next_index;
        while let Some(place) = self.cfg.window(k, Some(total)) {
            out.push(self.plan_window(k, place));
            k += 1;
            if place.last {
                break;
            }
        }
        out.push(Planned::End { total });
        self.reset();
        out
    }

    /// Time `t` (absolute ns) relative to the origin, compared exactly with output sample
    /// `s`: `(t − origin)·rate ≥ s·1e9`.
    fn at_or_after(&self, t: u64, sample: u64) -> bool {
        let origin = self.origin.unwrap_or(0);
        (t.saturating_sub(origin) as u128) * self.cfg.rate() as u128
            >= sample as u128 * NS_PER_S as u128
    }

    /// Whether a frame at `pts` starts at or before output sample `s`.
    fn starts_by(&self, pts: u64, sample: u64) -> bool {
        let origin = self.origin.unwrap_or(0);
        (pts.saturating_sub(origin) as u128) * self.cfg.rate() as u128
            <= sample as u128 * NS_PER_S as u128
    }

    fn release_full_windows(&mut self) -> Vec<Planned> {
        let mut out = Vec::new();
        loop {
            let end = self.cfg.window_end(self.next_index);
            if !self.at_or_after(self.reached, end) {
                break;
            }
            let place = self
                .cfg
                .window(self.next_index, None)
                .expect("a window before the end of the stream always exists");
            out.push(self.plan_window(self.next_index, place));
        }
        out
    }

    /// Settle the newest frame now that the next frame (or the end) is at `next_pts`.
    fn settle_last(&mut self, next_pts: u64) {
        let Some(last) = self.frames.back() else {
            return;
        };
        if last.settled {
            return;
        }
        let (pts, prev) = (last.frame.pts, last.prev_pts);
        let mut planes = self.slot_planes(pts, prev);
        if self.shown_at_a_start(pts, next_pts) {
            planes = FramePlanes::BOTH;
        }
        if !planes.any() {
            self.frames.pop_back();
            self.decimated += 1;
            return;
        }
        let mut held = self.frames.pop_back().expect("checked above");
        held.settled = true;
        self.prepare(&mut held, planes);
        self.frames.push_back(held);
    }

    fn prepare(&mut self, held: &mut Held, planes: FramePlanes) {
        let Some(prep) = &self.preparer else {
            return;
        };
        if held.frame.prepared.is_some() || !planes.any() {
            return;
        }
        match prep(&held.frame, planes) {
            Ok(p) => {
                held.frame.prepared = Some(Arc::new(p));
                held.frame.data = Arc::new(Vec::new());
                held.frame.source = None;
            }
            // the frame stays as it is; the producer hears of it (take_prepare_error)
            Err(err) => {
                self.prepare_error.get_or_insert(err);
            }
        }
    }

    /// The first error of the [`Preparer`] since the last call (a frame it could not
    /// resize is kept as it came).
    pub fn take_prepare_error(&mut self) -> Option<crate::Error> {
        self.prepare_error.take()
    }

    /// Whether a frame at `pts`, followed by one at `next`, is the frame shown at the start
    /// of a window not yet planned (`pts ≤ S_k < next`; window starts never decrease).
    fn shown_at_a_start(&self, pts: u64, next: u64) -> bool {
        let mut k = self.next_index;
        loop {
            let s = self.cfg.window_start(k);
            if self.starts_by(next, s) {
                // next ≤ S_k: this start and every later one is shown by a later frame
                return false;
            }
            if self.starts_by(pts, s) {
                return true;
            }
            k += 1;
        }
    }

    /// The planes a frame at `pts` (predecessor at `prev`) can be picked for by an 8/25 fps
    /// slot of a window not yet planned: some slot time `τ` with `r_prev < τ ≤ r_f`, where
    /// the `r` are the frame times relative to the window start exactly as the request will
    /// carry them (a predecessor before the start is the window's start frame, at 0) and the
    /// `τ` the slot times accumulated exactly as the official reader accumulates them.
    fn slot_planes(&mut self, pts: u64, prev: Option<u64>) -> FramePlanes {
        let origin = self.origin.unwrap_or(0);
        let rate = self.cfg.rate();
        let mut planes = FramePlanes::NONE;
        let mut k = self.next_index;
        loop {
            let start = self.cfg.window_start(k);
            // the window starts after the frame: so do all later ones
            if !self.at_or_after(pts, start) {
                break;
            }
            k += 1;
            // the frame is not in a window it does not start before the end of
            if self.at_or_after(pts, self.cfg.window_end(k - 1)) {
                continue;
            }
            let start_ns = samples_to_ns(start, rate) as i64;
            let rel = |p: u64| {
                crate::features::frames::relative_frame_time(
                    (p - origin) as i64,
                    start_ns,
                    self.framerate,
                )
            };
            let r_f = rel(pts);
            if r_f < 0.0 {
                continue;
            }
            let lo = prev.map(|p| rel(p).max(0.0));
            for (i, fps) in [CLIP_FPS, SYNC_FPS].into_iter().enumerate() {
                let slots = slot_table(&mut self.slots[i], fps, r_f);
                let m = match lo {
                    None => 0,
                    Some(lo) => slots.partition_point(|&t| t <= lo),
                };
                if slots[m] <= r_f {
                    if i == 0 {
                        planes.clip = true;
                    } else {
                        planes.sync = true;
                    }
                }
            }
            if planes == FramePlanes::BOTH {
                break;
            }
        }
        planes
    }

    fn plan_window(&mut self, k: u64, place: WindowPlace) -> Planned {
        let origin = self.origin.expect("plan_window without a stream");
        let rate = self.cfg.rate();
        let WindowPlace {
            start,
            len,
            generated,
            last,
            continuation,
        } = place;
        let start_rel_s = start as f64 / rate as f64;

        let mut frames = Vec::new();
        if !self.text_only {
            // The frame shown at the window start: the last one starting at or before it.
            let first = self
                .frames
                .iter()
                .rposition(|h| self.starts_by(h.frame.pts, start))
                .unwrap_or(0);
            for h in self.frames.iter().skip(first) {
                let f = &h.frame;
                if self.at_or_after(f.pts, start + len) {
                    break;
                }
                let rel = crate::features::frames::relative_frame_time(
                    (f.pts - origin) as i64,
                    samples_to_ns(start, rate) as i64,
                    self.framerate,
                );
                frames.push(VideoFrame {
                    pts: rel.max(0.0),
                    width: f.width,
                    height: f.height,
                    data: f.data.clone(),
                    prepared: f.prepared.clone(),
                    id: Some(h.id),
                });
            }
        }

        let mut params = self.params.clone();
        params.seed = params.seed.wrapping_add(k);
        let mut request = WindowRequest {
            index: k,
            start: origin as f64 / NS_PER_S as f64 + start_rel_s,
            duration: generated as f64 / rate as f64,
            frames,
            params,
            continuation,
            retain_from: None,
        };
        let span = WindowSpan {
            index: k,
            origin,
            start,
            len,
            generated,
            last,
        };
        self.next_index = k + 1;

        // Drop frames no later window can show: keep the one shown at the next start.
        let next_start = self.cfg.window_start(self.next_index);
        while self.frames.len() >= 2 && self.starts_by(self.frames[1].frame.pts, next_start) {
            self.frames.pop_front();
        }
        request.retain_from = Some(self.frames.front().map_or(self.next_id, |h| h.id));
        Planned::Window { request, span }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MIN_DURATION_S;
    use crate::features::frames::plan_frames;
    use crate::window::test_frames::{cfr, frame};
    use crate::window::{ContinuationConfig, WindowConfig};

    /// The ids of the frames MMAudio's sampling picks in each window (8 fps, 25 fps), and
    /// whether each picked frame carries the plane it is picked for.
    #[derive(Default)]
    struct Picks {
        windows: Vec<(Vec<u64>, Vec<u64>)>,
        missing_plane: usize,
    }

    impl Picks {
        fn record(&mut self, req: &WindowRequest) {
            let times: Vec<f64> = req.frames.iter().map(|f| f.pts).collect();
            let plan = plan_frames(&times, req.duration.max(MIN_DURATION_S)).unwrap();
            let ids = |idx: &[usize]| -> Vec<u64> {
                idx.iter().map(|&i| req.frames[i].id.unwrap()).collect()
            };
            for (idx, clip) in [(&plan.clip.indices, true), (&plan.sync.indices, false)] {
                for &i in idx.iter() {
                    if let Some(p) = &req.frames[i].prepared {
                        let plane = if clip { &p.clip } else { &p.sync };
                        self.missing_plane += plane.is_empty() as usize;
                    }
                }
            }
            self.windows
                .push((ids(&plan.clip.indices), ids(&plan.sync.indices)));
        }
    }

    /// Planes in proportion to the real ones (384² and 224² RGB, in units of 1000 bytes).
    fn fake_preparer() -> Preparer {
        Arc::new(|_f: &TimedFrame, planes: FramePlanes| {
            Ok(PreparedFrame {
                clip: vec![0; if planes.clip { 442 } else { 0 }],
                sync: vec![0; if planes.sync { 150 } else { 0 }],
            })
        })
    }

    struct Run {
        picks: Picks,
        max_frames: usize,
        max_bytes: usize,
        windows: usize,
    }

    fn run(cfg: EngineConfig, frames: &[TimedFrame], picking: bool) -> Run {
        let mut p = WindowPlanner::new(cfg);
        p.set_frame_picking(picking);
        p.set_preparer(Some(fake_preparer()));
        p.set_framerate(None);
        let mut r = Run {
            picks: Picks::default(),
            max_frames: 0,
            max_bytes: 0,
            windows: 0,
        };
        let take = |items: Vec<Planned>, r: &mut Run| {
            for it in items {
                if let Planned::Window { request, .. } = it {
                    r.picks.record(&request);
                    r.windows += 1;
                }
            }
        };
        for f in frames {
            let items = p.push_frame(f.clone());
            r.max_frames = r.max_frames.max(p.buffered_frames());
            r.max_bytes = r.max_bytes.max(p.buffered_bytes());
            take(items, &mut r);
        }
        let items = p.finish();
        take(items, &mut r);
        r
    }

    /// At 25, 120 and 1000 fps, in both modes: dropping the frames no slot can pick gives
    /// every window exactly the picks it gets with every frame, each picked frame has the
    /// plane it is picked for, and what the planner holds stops growing with the input
    /// rate.
    #[test]
    fn frame_picking_keeps_the_picks_and_bounds_memory_at_any_rate() {
        let engines: [(EngineConfig, usize); 2] = [
            (WindowConfig::new(16_000, 8.0, 1.0).unwrap().into(), 3),
            (
                ContinuationConfig::from_millis(16_000, 512, 8000, 1000)
                    .unwrap()
                    .into(),
                10,
            ),
        ];
        for (cfg, windows_in_reach) in engines {
            let mut held = Vec::new();
            for fps in [25u64, 120, 1000] {
                let frames = cfr(3 * NS_PER_S, 12 * fps, fps, 1);
                let all = run(cfg, &frames, false);
                let picked = run(cfg, &frames, true);
                let ctx = format!("{cfg:?} at {fps} fps");
                assert!(all.windows >= 2, "{ctx}");
                assert_eq!(picked.windows, all.windows, "{ctx}");
                for (k, (a, b)) in all
                    .picks
                    .windows
                    .iter()
                    .zip(&picked.picks.windows)
                    .enumerate()
                {
                    assert_eq!(a, b, "{ctx}: window {k}");
                }
                assert_eq!(picked.picks.missing_plane, 0, "{ctx}");
                // bound: 33 picks per second of window, for each window still to come
                let bound = (fps as usize).min(33 * windows_in_reach) * 8 + 4;
                assert!(
                    picked.max_frames <= bound,
                    "{ctx}: {} > {bound}",
                    picked.max_frames
                );
                held.push((fps, picked.max_frames, picked.max_bytes, all.max_frames));
            }
            let (f120, f1000) = (held[1], held[2]);
            // without picking the frames held grow with the rate; with it they do not
            assert!(f1000.3 >= 8000, "{held:?}");
            assert!(f1000.1 * 3 < f1000.3, "{held:?}");
            assert!(f1000.2 <= 2 * f120.2 + 4000, "{held:?}");
            eprintln!("{cfg:?}: (fps, frames held, kB held, frames held without picking) {held:?}");
        }
    }

    /// A frame that starts more than 10 s after the end of the previous one ends the
    /// stream; a shorter pause is held; a long frame that covers the time to the next one
    /// (a slideshow) is no jump.
    #[test]
    fn jumps_beyond_ten_seconds_end_the_stream_in_both_modes() {
        let engines: [EngineConfig; 2] = [
            WindowConfig::new(16_000, 8.0, 1.0).unwrap().into(),
            ContinuationConfig::from_millis(16_000, 512, 8000, 1000)
                .unwrap()
                .into(),
        ];
        for cfg in engines {
            let ends = |frames: Vec<TimedFrame>| -> (Vec<u64>, usize) {
                let mut p = WindowPlanner::new(cfg);
                let mut ends = Vec::new();
                let mut windows = 0;
                let mut items = Vec::new();
                for f in frames {
                    items.extend(p.push_frame(f));
                }
                items.extend(p.finish());
                for it in items {
                    match it {
                        Planned::End { total } => ends.push(total),
                        Planned::Window { .. } => windows += 1,
                    }
                }
                (ends, windows)
            };
            // 1 s of video, then a frame 10.5 s after its end: two streams
            let mut f = cfr(0, 25, 25, 1);
            f.push(frame(11_500_000_000, Some(40_000_000)));
            let (e, w) = ends(f);
            assert_eq!(e, vec![16_000, 640], "{cfg:?}");
            assert!(w <= 3, "{cfg:?}: {w} windows");
            // a pause of 9.5 s: held, one stream of 11.54 s
            let mut f = cfr(0, 25, 25, 1);
            f.push(frame(10_500_000_000, Some(40_000_000)));
            assert_eq!(ends(f).0, vec![168_640], "{cfg:?}");
            // 15 s frames that last 15 s: one stream
            let f = vec![
                frame(0, Some(15 * NS_PER_S)),
                frame(15 * NS_PER_S, Some(15 * NS_PER_S)),
            ];
            assert_eq!(ends(f).0, vec![480_000], "{cfg:?}");
        }
    }
}
