//! The scenario suite, in the spirit of gst-validate (which Debian does not package, so CI
//! cannot run it): gst-validate's standard scenarios — play to EOS, simple seeks, seeking
//! forward and backward, pause/resume, intensive state changes, live play — plus segment
//! seeks (looping), a caps change and reverse playback, each run through a real pipeline
//! (`filesrc ! decodebin ! videoconvert ! mmaudiogen ! fakesink`, or a live source) with the
//! real generator on the tiny random test model.
//!
//! A monitor on both pads of `mmaudiogen` checks what gst-validate checks on an element:
//! stream-start, caps and segment before data; every buffer inside the segment; timestamps
//! increasing and contiguous (sample-exact, derived from the sample count) within a stream;
//! DISCONT on the first buffer after a flush or a new stream; nothing but flushes after EOS;
//! serialized events forwarded with their seqnum (segment, EOS, SEGMENT_DONE, flushes);
//! the audio only covering time whose video was received; and on the bus, no ERROR and no
//! unexpected WARNING. Scenarios add their own checks (sample counts, positions after
//! seeks, the latency answered). The test prints one line per scenario and fails if any
//! scenario found an issue.

// `mmaudio::Error` (returned by the generator closures) is large by design.
#![allow(clippy::result_large_err)]

mod common;

use common::*;
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RATE: u32 = 16000;
const MS: gst::ClockTime = gst::ClockTime::MSECOND;
/// Length of the test clip (25 fps, 64x48, H.264 in MP4).
const CLIP_S: u64 = 6;

/// What the monitor tracks on the source pad.
#[derive(Default)]
struct SrcState {
    stream_start: bool,
    caps: bool,
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    eos: bool,
    /// End of the last buffer of the current stream.
    last_end: Option<gst::ClockTime>,
    /// The next buffer must be DISCONT (after a flush or a new segment).
    need_discont: bool,
    buffers: u64,
    samples: u64,
    /// Samples since the last flush or stream-start.
    samples_since_flush: u64,
    first_pts_since_flush: Option<gst::ClockTime>,
    /// Samples pushed since the last flush before each SEGMENT_DONE.
    segment_done_at: Vec<u64>,
}

/// What the monitor tracks on the sink pad.
#[derive(Default)]
struct SinkState {
    /// Seqnums of the serialized events received, in order (type, seqnum).
    received: Vec<(gst::EventType, gst::Seqnum)>,
    /// End of the latest frame received since the last flush (pts + duration).
    video_end: Option<gst::ClockTime>,
    video_start: Option<gst::ClockTime>,
}

#[derive(Default)]
struct MonitorState {
    src: SrcState,
    sink: SinkState,
    issues: Vec<String>,
}

#[derive(Clone, Default)]
struct Monitor(Arc<Mutex<MonitorState>>);

impl Monitor {
    fn attach(element: &gst::Element) -> Self {
        let m = Monitor::default();
        let sink = element.static_pad("sink").unwrap();
        let src = element.static_pad("src").unwrap();
        let mm = m.clone();
        sink.add_probe(
            gst::PadProbeType::BUFFER
                | gst::PadProbeType::EVENT_DOWNSTREAM
                | gst::PadProbeType::EVENT_FLUSH,
            move |_, info| {
                mm.on_sink(info);
                gst::PadProbeReturn::Ok
            },
        )
        .unwrap();
        let mm = m.clone();
        src.add_probe(
            gst::PadProbeType::BUFFER
                | gst::PadProbeType::EVENT_DOWNSTREAM
                | gst::PadProbeType::EVENT_FLUSH,
            move |_, info| {
                mm.on_src(info);
                gst::PadProbeReturn::Ok
            },
        )
        .unwrap();
        m
    }

    fn on_sink(&self, info: &gst::PadProbeInfo) {
        let mut s = self.0.lock().unwrap();
        match &info.data {
            Some(gst::PadProbeData::Buffer(b)) => {
                if let Some(pts) = b.pts() {
                    let end = pts + b.duration().unwrap_or(40 * MS);
                    s.sink.video_end = Some(s.sink.video_end.map_or(end, |e| e.max(end)));
                    s.sink.video_start.get_or_insert(pts);
                }
            }
            Some(gst::PadProbeData::Event(e)) => {
                if e.type_() == gst::EventType::FlushStop {
                    s.sink.video_end = None;
                    s.sink.video_start = None;
                }
                if e.type_() == gst::EventType::Segment {
                    s.sink.video_start = None;
                }
                s.sink.received.push((e.type_(), e.seqnum()));
            }
            _ => {}
        }
    }

    fn on_src(&self, info: &gst::PadProbeInfo) {
        let mut guard = self.0.lock().unwrap();
        let s = &mut *guard;
        let mut issue = |text: String| s.issues.push(text);
        match &info.data {
            Some(gst::PadProbeData::Buffer(b)) => {
                let src = &mut s.src;
                if !(src.stream_start && src.caps && src.segment.is_some()) {
                    issue("buffer before stream-start, caps and segment".into());
                }
                if src.eos {
                    issue(format!("buffer {:?} after EOS", b.pts()));
                }
                let (Some(pts), Some(dur)) = (b.pts(), b.duration()) else {
                    issue("buffer without pts or duration".into());
                    return;
                };
                let end = pts + dur;
                let n = b.size() as u64 / 4;
                if let Some(seg) = &src.segment
                    && seg.clip(pts, end).is_none()
                {
                    issue(format!(
                        "buffer {pts}..{end} outside the segment {}..{:?}",
                        seg.start().unwrap_or_default(),
                        seg.stop()
                    ));
                }
                let discont = b.flags().contains(gst::BufferFlags::DISCONT);
                if src.need_discont && !discont {
                    issue(format!("first buffer {pts} of a stream not DISCONT"));
                }
                match src.last_end {
                    Some(last) if !discont && pts != last => {
                        issue(format!("buffer {pts} not contiguous with {last}"))
                    }
                    _ => {}
                }
                // Timestamps from the sample count: pts + samples/rate = end (to 1 ns).
                let expected = mmaudio::window::samples_to_ns(b.offset() + n, RATE)
                    - mmaudio::window::samples_to_ns(b.offset(), RATE);
                if dur.nseconds().abs_diff(expected) > 1 {
                    issue(format!("buffer {pts}: duration {dur} for {n} samples"));
                }
                match (s.sink.video_start, s.sink.video_end) {
                    (_, Some(vend)) if end > vend => {
                        issue(format!("audio until {end} but video only until {vend}"))
                    }
                    _ => {}
                }
                src.need_discont = false;
                src.last_end = Some(end);
                src.buffers += 1;
                src.samples += n;
                src.samples_since_flush += n;
                src.first_pts_since_flush.get_or_insert(pts);
            }
            Some(gst::PadProbeData::Event(e)) => {
                let t = e.type_();
                // Forwarded serialized events keep their seqnum.
                if matches!(
                    t,
                    gst::EventType::Segment
                        | gst::EventType::Eos
                        | gst::EventType::SegmentDone
                        | gst::EventType::FlushStart
                        | gst::EventType::FlushStop
                        | gst::EventType::StreamStart
                ) && !s.sink.received.contains(&(t, e.seqnum()))
                {
                    issue(format!("{t:?} with a seqnum it did not receive"));
                }
                let src = &mut s.src;
                if src.eos
                    && !matches!(
                        t,
                        gst::EventType::FlushStart
                            | gst::EventType::FlushStop
                            | gst::EventType::StreamStart
                    )
                {
                    issue(format!("{t:?} after EOS"));
                }
                match e.view() {
                    gst::EventView::StreamStart(_) => {
                        src.stream_start = true;
                        src.eos = false;
                        src.samples_since_flush = 0;
                        src.first_pts_since_flush = None;
                    }
                    gst::EventView::Caps(_) => {
                        if !src.stream_start {
                            issue("caps before stream-start".into());
                        }
                        src.caps = true;
                    }
                    gst::EventView::Segment(seg) => {
                        if !src.stream_start {
                            issue("segment before stream-start".into());
                        }
                        src.segment = seg.segment().clone().downcast::<gst::ClockTime>().ok();
                        src.last_end = None;
                        src.need_discont = true;
                    }
                    gst::EventView::Gap(g) => {
                        if !(src.stream_start && src.caps && src.segment.is_some()) {
                            issue("GAP before stream-start, caps and segment".into());
                        }
                        let (pts, _) = g.get();
                        if let Some(last) = src.last_end
                            && pts < last
                        {
                            issue(format!("GAP at {pts} before the end of the audio {last}"));
                        }
                    }
                    gst::EventView::FlushStop(_) => {
                        src.eos = false;
                        src.last_end = None;
                        src.need_discont = true;
                        src.samples_since_flush = 0;
                        src.first_pts_since_flush = None;
                    }
                    gst::EventView::Eos(_) => src.eos = true,
                    gst::EventView::SegmentDone(_) => {
                        src.segment_done_at.push(src.samples_since_flush);
                        // The next segment is a new stream.
                        src.last_end = None;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn issues(&self) -> Vec<String> {
        self.0.lock().unwrap().issues.clone()
    }
}

/// A pipeline under test with its monitor.
struct Run {
    pipeline: gst::Pipeline,
    generator: gst::Element,
    monitor: Monitor,
    bus: gst::Bus,
    /// Issues found by the scenario itself.
    issues: Vec<String>,
    /// Bus WARNINGs the scenario expects (substring).
    expected_warning: Option<&'static str>,
    bus_log: Vec<String>,
    /// Model loads completed (PROGRESS complete messages read by `drain_bus`).
    loads: u32,
}

impl Run {
    fn new(desc: &str, model: &Path) -> Self {
        init();
        let pipeline = gst::parse::launch(desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let generator = pipeline.by_name("gen").unwrap();
        generator.set_property("model-dir", model.to_str().unwrap());
        generator.set_property_from_str("variant", "small-16k");
        generator.set_property("num-steps", 2u32);
        generator.set_property("window-duration", 2000u32);
        generator.set_property("overlap", 400u32);
        // Time is not what these scenarios test (the live one sets its own budget).
        generator.set_property("processing-latency", 60_000u32);
        let monitor = Monitor::attach(&generator);
        let bus = pipeline.bus().unwrap();
        Run {
            pipeline,
            generator,
            monitor,
            bus,
            issues: Vec::new(),
            expected_warning: None,
            bus_log: Vec::new(),
            loads: 0,
        }
    }

    fn issue(&mut self, text: impl Into<String>) {
        self.issues.push(text.into());
    }

    /// Read the bus until `want` (or EOS/ERROR, or the time limit); ERRORs and unexpected
    /// WARNINGs are issues. Returns the message waited for.
    fn wait(&mut self, want: gst::MessageType, secs: u64) -> Option<gst::Message> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(msg) = self
                .bus
                .timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64))
            else {
                self.issue(format!("no {want:?} within {secs} s"));
                return None;
            };
            match msg.view() {
                gst::MessageView::Error(e) => {
                    self.issue(format!("ERROR {} ({:?})", e.error(), e.debug()));
                    return None;
                }
                gst::MessageView::Warning(w) => {
                    let text = format!("{} ({:?})", w.error(), w.debug());
                    if !self.expected_warning.is_some_and(|x| text.contains(x)) {
                        self.issue(format!("WARNING {text}"));
                    }
                    self.bus_log.push(text);
                }
                _ => {}
            }
            if msg.type_() == want {
                return Some(msg);
            }
        }
    }

    /// Read what is on the bus now (ERRORs and unexpected WARNINGs are issues).
    fn drain_bus(&mut self) {
        while let Some(msg) = self.bus.pop() {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    self.issue(format!("ERROR {} ({:?})", e.error(), e.debug()));
                }
                gst::MessageView::Warning(w) => {
                    let text = format!("{} ({:?})", w.error(), w.debug());
                    if !self.expected_warning.is_some_and(|x| text.contains(x)) {
                        self.issue(format!("WARNING {text}"));
                    }
                    self.bus_log.push(text);
                }
                gst::MessageView::Progress(p) if p.get().0 == gst::ProgressType::Complete => {
                    self.loads += 1;
                }
                _ => {}
            }
        }
    }

    /// Wait until a pending (asynchronous) state change, e.g. the preroll after a flushing
    /// seek, has completed.
    fn settle(&mut self, what: &str) {
        let (res, _, _) = self.pipeline.state(gst::ClockTime::from_seconds(30));
        if res.is_err() {
            self.issue(format!("{what}: the pipeline did not preroll ({res:?})"));
        }
    }

    /// Set a state and wait until the pipeline is there.
    fn state(&mut self, state: gst::State) {
        match self.pipeline.set_state(state) {
            Err(e) => self.issue(format!("set_state({state:?}) failed: {e}")),
            Ok(gst::StateChangeSuccess::Async) => {
                let (res, cur, _) = self.pipeline.state(gst::ClockTime::from_seconds(30));
                if res.is_err() || cur != state {
                    self.issue(format!("state {state:?} not reached: {res:?}, {cur:?}"));
                }
            }
            Ok(_) => {}
        }
    }

    fn seek(
        &mut self,
        rate: f64,
        flags: gst::SeekFlags,
        start: gst::ClockTime,
        stop: Option<gst::ClockTime>,
    ) -> bool {
        let stop_type = if stop.is_some() {
            gst::SeekType::Set
        } else {
            gst::SeekType::None
        };
        self.pipeline.send_event(gst::event::Seek::new(
            rate,
            flags,
            gst::SeekType::Set,
            start,
            stop_type,
            stop,
        ))
    }

    fn src(&self) -> std::sync::MutexGuard<'_, MonitorState> {
        self.monitor.0.lock().unwrap()
    }

    /// Stop the pipeline and report: all issues of the monitor and the scenario.
    fn finish(mut self) -> Vec<String> {
        let _ = self.pipeline.set_state(gst::State::Null);
        let mut issues = self.monitor.issues();
        issues.append(&mut self.issues);
        issues
    }
}

fn samples(s: f64) -> u64 {
    (s * RATE as f64).round() as u64
}

// ------------------------------------------------------------------- the scenarios

type Scenario = fn(&Env) -> (String, Vec<String>);

struct Env {
    clip: PathBuf,
    model: PathBuf,
}

impl Env {
    fn file_pipeline(&self, sink: &str) -> String {
        format!(
            "filesrc location={} ! decodebin ! videoconvert ! mmaudiogen name=gen ! {sink}",
            self.clip.display()
        )
    }
}

/// play_15s: the whole clip to EOS; every sample there.
fn play(env: &Env) -> (String, Vec<String>) {
    let mut r = Run::new(&env.file_pipeline("fakesink sync=false"), &env.model);
    r.state(gst::State::Playing);
    r.wait(gst::MessageType::Eos, 60);
    let n = r.src().src.samples;
    if n != samples(CLIP_S as f64) {
        r.issue(format!("{n} samples, expected {}", samples(CLIP_S as f64)));
    }
    (format!("{n} samples"), r.finish())
}

/// Accurate flushing seeks; after each the audio restarts at the position (DISCONT), and
/// the last one plays to EOS with exactly the rest of the clip.
fn seek_sequence(env: &Env, positions_ms: &[u64], in_playing: bool) -> (String, Vec<String>) {
    let mut r = Run::new(&env.file_pipeline("fakesink sync=false"), &env.model);
    r.state(gst::State::Paused);
    let mut checked = 0;
    for &ms in positions_ms {
        let pos = ms * MS;
        if !r.seek(
            1.0,
            gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
            pos,
            None,
        ) {
            r.issue(format!("seek to {pos} refused"));
            continue;
        }
        // The sink prerolls after the flush (on the first window's audio).
        r.settle(&format!("seek to {pos}"));
        if in_playing {
            r.state(gst::State::Playing);
            // Let some audio out, then seek again from PLAYING.
            let deadline = Instant::now() + Duration::from_secs(30);
            while r.src().src.samples_since_flush == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let first = r.src().src.first_pts_since_flush;
            if first != Some(pos) {
                r.issue(format!(
                    "after the seek to {pos} the audio starts at {first:?}"
                ));
            }
            checked += 1;
            r.state(gst::State::Paused);
        }
    }
    let last = positions_ms.last().copied().unwrap_or(0) * MS;
    // An EOS of an earlier round may still be on the bus.
    r.drain_bus();
    r.state(gst::State::Playing);
    r.wait(gst::MessageType::Eos, 60);
    let (n, first) = {
        let m = r.src();
        (m.src.samples_since_flush, m.src.first_pts_since_flush)
    };
    let expected = samples((CLIP_S * 1000 - last.mseconds()) as f64 / 1000.0);
    if n != expected || first != Some(last) {
        r.issue(format!(
            "after the last seek: {n} samples from {first:?}, expected {expected} from {last}"
        ));
    }
    (
        format!(
            "{} seeks, {checked} checked while playing, {n} samples after the last",
            positions_ms.len()
        ),
        r.finish(),
    )
}

fn simple_seeks(env: &Env) -> (String, Vec<String>) {
    seek_sequence(env, &[1000, 4000, 2000, 0, 3000], true)
}

fn seek_forward(env: &Env) -> (String, Vec<String>) {
    seek_sequence(env, &[500, 1500, 3000, 4500], true)
}

fn seek_backward(env: &Env) -> (String, Vec<String>) {
    seek_sequence(env, &[4500, 3000, 1500, 0], true)
}

/// A flushing segment seek over [1 s, 3 s), looped three times by non-flushing segment
/// seeks on each SEGMENT_DONE, then a plain seek to the end: each loop's audio (2 s) is
/// out before its SEGMENT_DONE.
fn segment_seeks(env: &Env) -> (String, Vec<String>) {
    let mut r = Run::new(&env.file_pipeline("fakesink sync=false"), &env.model);
    r.state(gst::State::Paused);
    let (start, stop) = (gst::ClockTime::SECOND, 3 * gst::ClockTime::SECOND);
    let flags = gst::SeekFlags::SEGMENT | gst::SeekFlags::ACCURATE;
    if !r.seek(1.0, flags | gst::SeekFlags::FLUSH, start, Some(stop)) {
        r.issue("segment seek refused");
    }
    r.settle("segment seek");
    r.state(gst::State::Playing);
    for lp in 0..3 {
        if r.wait(gst::MessageType::SegmentDone, 60).is_none() {
            break;
        }
        if lp < 2 && !r.seek(1.0, flags, start, Some(stop)) {
            r.issue(format!("looping seek {lp} refused"));
        }
    }
    // The application's SEGMENT_DONE message comes from the demuxer; the element's
    // SEGMENT_DONE event follows its audio: wait for the third.
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.src().src.segment_done_at.len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let done = r.src().src.segment_done_at.clone();
    let per_loop = samples(2.0);
    let expected: Vec<u64> = (1..=3).map(|k| k * per_loop).collect();
    if done != expected {
        r.issue(format!(
            "samples out before each SEGMENT_DONE {done:?}, expected {expected:?}"
        ));
    }
    (format!("3 loops of {per_loop} samples"), r.finish())
}

/// pause_resume on a synchronised sink: PLAYING/PAUSED three times, then to EOS.
fn pause_resume(env: &Env) -> (String, Vec<String>) {
    let mut r = Run::new(&env.file_pipeline("fakesink sync=true"), &env.model);
    for _ in 0..3 {
        r.state(gst::State::Playing);
        std::thread::sleep(Duration::from_millis(700));
        r.state(gst::State::Paused);
        std::thread::sleep(Duration::from_millis(300));
    }
    r.state(gst::State::Playing);
    r.wait(gst::MessageType::Eos, 60);
    let n = r.src().src.samples;
    if n != samples(CLIP_S as f64) {
        r.issue(format!("{n} samples, expected {}", samples(CLIP_S as f64)));
    }
    (format!("3 pauses, {n} samples"), r.finish())
}

/// change_state_intensive: 10 round trips through every state, the model loaded once.
/// (On `videotestsrc`: `gst::parse::launch` links decodebin's dynamic pad only once, so a
/// file pipeline would not relink after READY.)
fn change_state_intensive(env: &Env) -> (String, Vec<String>) {
    let mut r = Run::new(
        &format!(
            "videotestsrc num-buffers={} ! video/x-raw,width=64,height=48,framerate=25/1 ! \
             videoconvert ! mmaudiogen name=gen ! fakesink sync=false",
            CLIP_S * 25
        ),
        &env.model,
    );
    for _ in 0..10 {
        for s in [
            gst::State::Ready,
            gst::State::Paused,
            gst::State::Playing,
            gst::State::Paused,
            gst::State::Ready,
        ] {
            r.state(s);
        }
    }
    // The model is kept across READY (loaded once); NULL releases it.
    std::thread::sleep(Duration::from_millis(100));
    r.drain_bus();
    if r.loads != 1 {
        r.issue(format!(
            "model loaded {} times across READY, expected once",
            r.loads
        ));
    }
    r.state(gst::State::Null);
    r.drain_bus();
    r.state(gst::State::Playing);
    r.wait(gst::MessageType::Eos, 60);
    let n = r.src().src.samples_since_flush;
    if n != samples(CLIP_S as f64) {
        r.issue(format!(
            "last run: {n} samples, expected {}",
            samples(CLIP_S as f64)
        ));
    }
    (
        "10 cycles READY..PLAYING..READY, then NULL..PLAYING".into(),
        r.finish(),
    )
}

/// play_15s_live: a live source, synchronised sink; the latency is answered (upstream +
/// window + frame + processing-latency) and every sample is there.
fn live_play(env: &Env) -> (String, Vec<String>) {
    let mut r = Run::new(
        "videotestsrc is-live=true num-buffers=100 ! \
         video/x-raw,width=64,height=48,framerate=25/1 ! videoconvert ! \
         mmaudiogen name=gen ! fakesink sync=true",
        &env.model,
    );
    r.generator.set_property("processing-latency", 4000u32);
    // On a loaded machine the tiny model may not keep up: skipping is then right.
    r.expected_warning = Some("Skipping windows that cannot be on time");
    r.state(gst::State::Playing);
    let mut upstream = gst::query::Latency::new();
    let sink = r.generator.static_pad("sink").unwrap();
    if !sink.peer_query(&mut upstream) {
        r.issue("upstream did not answer the latency query");
    }
    let mut q = gst::query::Latency::new();
    let answered = r.generator.static_pad("src").unwrap().query(&mut q);
    let (live, min, _) = q.result();
    // upstream + window + one frame + processing-latency
    let expected = upstream.result().1 + (2000 + 40 + 4000) * MS;
    if !answered || !live || min != expected {
        r.issue(format!(
            "latency query: answered {answered}, live {live}, min {min} (expected {expected})"
        ));
    }
    // The pipeline's answer includes it (plus the sink's processing deadline).
    let mut q = gst::query::Latency::new();
    if !r.pipeline.query(&mut q) || q.result().1 < expected {
        r.issue(format!(
            "pipeline latency {:?} below {expected}",
            q.result()
        ));
    }
    r.wait(gst::MessageType::Eos, 60);
    let n = r.src().src.samples;
    if n != samples(4.0) {
        r.issue(format!("{n} samples, expected {}", samples(4.0)));
    }
    let skipped = r.bus_log.len();
    (
        format!("latency {min}, {n} samples, {skipped} QoS warning(s)"),
        r.finish(),
    )
}

/// Caps change mid-stream (the frame size doubles after 2 s): the audio stays one
/// continuous stream.
fn caps_change(env: &Env) -> (String, Vec<String>) {
    let mut r = Run::new(
        "videotestsrc num-buffers=100 name=src ! videoscale ! \
         capsfilter name=cf caps=video/x-raw,width=32,height=24,framerate=25/1 ! videoconvert ! \
         mmaudiogen name=gen ! fakesink sync=false",
        &env.model,
    );
    let cf = r.pipeline.by_name("cf").unwrap();
    let src = r
        .pipeline
        .by_name("src")
        .unwrap()
        .static_pad("src")
        .unwrap();
    let frames = Arc::new(Mutex::new(0u32));
    let f = frames.clone();
    src.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        let mut n = f.lock().unwrap();
        *n += 1;
        if *n == 50 {
            let caps: gst::Caps = "video/x-raw,width=64,height=48,framerate=25/1"
                .parse()
                .unwrap();
            cf.set_property("caps", &caps);
        }
        gst::PadProbeReturn::Ok
    })
    .unwrap();
    r.state(gst::State::Playing);
    r.wait(gst::MessageType::Eos, 60);
    let n = r.src().src.samples;
    if n != samples(4.0) {
        r.issue(format!("{n} samples, expected {}", samples(4.0)));
    }
    (format!("32x24 → 64x48 after 2 s, {n} samples"), r.finish())
}

/// reverse_playback: refused with a WARNING; forward playback still works afterwards.
fn reverse_playback(env: &Env) -> (String, Vec<String>) {
    let mut r = Run::new(&env.file_pipeline("fakesink sync=false"), &env.model);
    r.expected_warning = Some("reverse playback");
    r.state(gst::State::Paused);
    let accepted = r.seek(
        -1.0,
        gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
        gst::ClockTime::ZERO,
        Some(gst::ClockTime::from_seconds(CLIP_S)),
    );
    if accepted {
        r.issue("a reverse seek was accepted");
    }
    let warned = r.bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(5),
        &[gst::MessageType::Warning],
    );
    match warned.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Warning(w)) if w.error().to_string().contains("reverse") => {}
        _ => r.issue(format!("no WARNING about reverse playback: {warned:?}")),
    }
    r.state(gst::State::Playing);
    r.wait(gst::MessageType::Eos, 60);
    let n = r.src().src.samples;
    if n != samples(CLIP_S as f64) {
        r.issue(format!("{n} samples, expected {}", samples(CLIP_S as f64)));
    }
    (
        "seek refused with a WARNING, then played forward".into(),
        r.finish(),
    )
}

fn make_clip(dir: &Path) -> PathBuf {
    init();
    let path = dir.join("clip.mp4");
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers={} pattern=ball ! \
         video/x-raw,width=64,height=48,framerate=25/1 ! x264enc key-int-max=25 bframes=0 ! h264parse ! \
         mp4mux ! filesink location={}",
        CLIP_S * 25,
        path.display()
    ))
    .unwrap();
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("clip encoded");
    assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
    pipeline.set_state(gst::State::Null).unwrap();
    path
}

#[test]
fn scenarios() {
    let dir = scratch_dir("scenarios");
    let model = dir.join("model");
    mmaudio::test_model::write_test_model(&model, mmaudio::Mode::Khz16, 1).unwrap();
    let env = Env {
        clip: make_clip(&dir),
        model,
    };
    let only = std::env::var("MMAUDIO_SCENARIO").ok();
    let scenarios: [(&str, Scenario); 10] = [
        ("play_15s", play),
        ("simple_seeks", simple_seeks),
        ("seek_forward", seek_forward),
        ("seek_backward", seek_backward),
        ("segment_seeks", segment_seeks),
        ("pause_resume", pause_resume),
        ("change_state_intensive", change_state_intensive),
        ("play_15s_live", live_play),
        ("caps_change", caps_change),
        ("reverse_playback", reverse_playback),
    ];
    let mut failed = Vec::new();
    for (name, scenario) in scenarios {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let t = Instant::now();
        let (what, issues) = scenario(&env);
        let secs = t.elapsed().as_secs_f64();
        if issues.is_empty() {
            println!("scenario {name:<24} ok    {secs:5.1} s  {what}");
        } else {
            println!(
                "scenario {name:<24} FAIL  {secs:5.1} s  {what}: {} issue(s): {}",
                issues.len(),
                issues.join("; ")
            );
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "failed scenarios: {failed:?}");
}
