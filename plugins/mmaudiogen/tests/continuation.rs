//! `mode=continuation` (near-live windows), timestamp jumps and frame picking at high
//! frame rates, through `gst_check::Harness`, plus a live pipeline on the tiny test model
//! that measures the latency the element achieves against what it answers.
//!
//! The fake generator here behaves as the real one does towards the engine: it carries
//! the range of latents its previous window kept and fails a continuation window whose
//! known latents it does not hold (as after a missing reset), and it counts resets.

// `mmaudio::Error` (returned by the generator closures) is large by design.
#![allow(clippy::result_large_err)]

mod common;

use common::*;
use gst::prelude::*;
use gst_check::Harness;
use mmaudio::generator::{AudioGenerator, LoadOptions};
use mmaudio::request::{Cancel, WindowRequest};
use mmaudio::window::samples_to_ns;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MS: gst::ClockTime = gst::ClockTime::MSECOND;
const CAPS: &str = "video/x-raw,format=RGB,width=8,height=6,framerate=25/1";

/// What the carrying fake saw for one window.
#[derive(Debug, Clone)]
struct Window {
    index: u64,
    start: f64,
    duration: f64,
    frames: usize,
    first_latent: u64,
    known: usize,
    keep: usize,
}

#[derive(Default)]
struct Shared {
    windows: Vec<Window>,
    resets: usize,
}

/// A tone at the absolute time of each sample (so two windows agree on the samples they
/// share, as two decodes of the same latents do), with the real generator's bookkeeping
/// of carried latents.
struct Carrying {
    rate: u32,
    amplitude: f32,
    picks: bool,
    carried: Option<(u64, usize)>,
    shared: Arc<Mutex<Shared>>,
}

impl AudioGenerator for Carrying {
    fn sample_rate(&self) -> u32 {
        self.rate
    }
    fn picks_frames(&self) -> bool {
        self.picks
    }
    fn reset(&mut self) {
        self.carried = None;
        self.shared.lock().unwrap().resets += 1;
    }
    fn generate(&mut self, req: &WindowRequest, _cancel: &Cancel) -> mmaudio::Result<Vec<f32>> {
        let c = req.continuation.unwrap_or(mmaudio::request::Continuation {
            first_latent: 0,
            latents: 0,
            known: 0,
            keep: 0,
        });
        if c.known > 0 {
            let ok = self.carried.is_some_and(|(first, keep)| {
                first <= c.first_latent && c.first_latent + c.known as u64 <= first + keep as u64
            });
            if !ok {
                return Err(mmaudio::Error::input(format!(
                    "window {} needs latents the fake does not hold ({:?})",
                    req.index, self.carried
                )));
            }
        }
        if req.continuation.is_some() {
            self.carried = Some((c.first_latent, c.keep));
        }
        self.shared.lock().unwrap().windows.push(Window {
            index: req.index,
            start: req.start,
            duration: req.duration,
            frames: req.frames.len(),
            first_latent: c.first_latent,
            known: c.known,
            keep: c.keep,
        });
        let n = req.num_samples(self.rate);
        let rate = self.rate as f64;
        let a = self.amplitude as f64;
        Ok((0..n)
            .map(|i| {
                let t = req.start + i as f64 / rate;
                (a * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as f32
            })
            .collect())
    }
}

fn carrying(mode: &str, amplitude: f32, picks: bool) -> (gst::Element, Arc<Mutex<Shared>>) {
    init();
    let element = gst::ElementFactory::make("mmaudiogen").build().unwrap();
    element.set_property_from_str("mode", mode);
    let shared = Arc::new(Mutex::new(Shared::default()));
    let s = shared.clone();
    element
        .downcast_ref::<gstmmaudio::MMAudioGen>()
        .unwrap()
        .set_generator_factory(move |_opts: &LoadOptions| {
            Ok(Box::new(Carrying {
                rate: 16000,
                amplitude,
                picks,
                carried: None,
                shared: s.clone(),
            }) as Box<dyn AudioGenerator>)
        });
    (element, shared)
}

struct Run {
    h: Harness,
    bus: gst::Bus,
    element: gst::Element,
}

fn start(element: gst::Element) -> Run {
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps_str(CAPS);
    Run { h, bus, element }
}

fn frame(pts: gst::ClockTime, duration: gst::ClockTime, value: u8) -> gst::Buffer {
    let mut buf = gst::Buffer::from_mut_slice(vec![value; 8 * 6 * 3]);
    {
        let b = buf.get_mut().unwrap();
        b.set_pts(pts);
        b.set_duration(duration);
    }
    buf
}

fn ts(i: u64, fps: u64) -> gst::ClockTime {
    gst::ClockTime::SECOND.mul_div_floor(i, fps).unwrap()
}

/// Push frames `range` of a `fps` stream starting at `t0`.
fn push(h: &mut Harness, range: std::ops::Range<u64>, fps: u64, t0: gst::ClockTime) {
    for i in range {
        let b = frame(t0 + ts(i, fps), ts(i + 1, fps) - ts(i, fps), i as u8);
        h.push(b)
            .unwrap_or_else(|e| panic!("push of frame {i} failed: {e:?}"));
    }
}

fn drain(h: &mut Harness) -> Vec<gst::Buffer> {
    let mut out = Vec::new();
    while let Some(b) = h.pull_until_eos().expect("output before timeout") {
        out.push(b);
    }
    out
}

/// Samples of `buffers`, checking that their timestamps and offsets follow the sample
/// count from `first_pts` and that only the first is DISCONT.
fn check_output(buffers: &[gst::Buffer], first_pts: gst::ClockTime) -> Vec<f32> {
    assert!(!buffers.is_empty(), "no output");
    assert!(buffers[0].flags().contains(gst::BufferFlags::DISCONT));
    let mut samples = Vec::new();
    let mut count = 0u64;
    for (i, b) in buffers.iter().enumerate() {
        let n = b.size() as u64 / 4;
        let pts = first_pts + gst::ClockTime::from_nseconds(samples_to_ns(count, 16000));
        let end = first_pts + gst::ClockTime::from_nseconds(samples_to_ns(count + n, 16000));
        assert_eq!(b.pts(), Some(pts), "buffer {i} pts");
        assert_eq!(
            b.pts().unwrap() + b.duration().unwrap(),
            end,
            "buffer {i} end"
        );
        assert_eq!(b.offset(), count, "buffer {i} offset");
        if i > 0 {
            assert!(!b.flags().contains(gst::BufferFlags::DISCONT), "buffer {i}");
        }
        let map = b.map_readable().unwrap();
        samples.extend(
            map.chunks_exact(4)
                .map(|c| f32::from_ne_bytes(c.try_into().unwrap())),
        );
        count += n;
    }
    samples
}

fn tone(a: f64, t: f64) -> f32 {
    (a * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as f32
}

fn error_text(msg: &gst::Message) -> String {
    match msg.view() {
        gst::MessageView::Error(e) => format!("{} | {:?}", e.error(), e.debug()),
        _ => panic!("not an error: {msg:?}"),
    }
}

/// 10 s at 25 fps with hop=1000: 160 000 samples, continuous, the tone unchanged through
/// every held-back crossfade, windows growing from 0.992 s to 8 s and each holding what
/// the ones before it generated.
#[test]
fn ten_seconds_in_continuation_mode_are_exact_and_seamless() {
    let (element, shared) = carrying("continuation", 0.5, false);
    element.set_property("hop", 1000u32);
    let mut r = start(element);
    let t0 = gst::ClockTime::from_seconds(2);
    push(&mut r.h, 0..250, 25, t0);
    assert!(r.h.push_event(gst::event::Eos::new()));
    let samples = check_output(&drain(&mut r.h), t0);
    assert_eq!(samples.len(), 160_000);
    for (s, &v) in samples.iter().enumerate() {
        let want = tone(0.5, 2.0 + s as f64 / 16000.0);
        assert!((v - want).abs() < 1e-4, "sample {s}: {v} vs {want}");
    }
    let sh = shared.lock().unwrap();
    assert_eq!(sh.resets, 1);
    // e_k = 31 (k+1) latents of 32 ms; 160 000 samples end in window 10's hop
    assert_eq!(sh.windows.len(), 11);
    for w in &sh.windows {
        let e = 31 * (w.index + 1);
        let s = e.saturating_sub(250);
        assert_eq!(w.first_latent, s, "window {}", w.index);
        assert_eq!(w.known as u64, 31 * w.index - s, "window {}", w.index);
        assert!((w.start - (2.0 + s as f64 * 0.032)).abs() < 1e-9);
        if w.index < 10 {
            assert_eq!(w.keep as u64, e - s);
            assert!((w.duration - (e - s) as f64 * 0.032).abs() < 1e-9);
        }
    }
    assert_eq!(sh.windows[9].duration, 8.0);
    // the last window ends exactly at 10 s: latents 313 (of 32 ms) hold 160 000 samples
    assert_eq!(sh.windows[10].keep as u64, 313 - 91);
    assert!(messages_of(&r.bus, gst::MessageType::Error).is_empty());
}

fn messages_of(bus: &gst::Bus, t: gst::MessageType) -> Vec<gst::Message> {
    std::iter::from_fn(|| bus.pop_filtered(&[t])).collect()
}

#[test]
fn sample_counts_for_several_lengths_in_continuation_mode() {
    for (frames, num, den, want) in [
        (5u64, 25u64, 1u64, 3_200u64),
        (37, 25, 1, 23_680),
        (120, 30_000, 1001, 64_064),
        (238, 25, 1, 152_320),
    ] {
        let (element, shared) = carrying("continuation", 0.25, false);
        element.set_property("hop", 500u32);
        let mut r = start(element);
        let caps = format!("video/x-raw,format=RGB,width=8,height=6,framerate={num}/{den}");
        r.h.set_src_caps_str(&caps);
        for i in 0..frames {
            let t = |i: u64| gst::ClockTime::SECOND.mul_div_floor(i * den, num).unwrap();
            r.h.push(frame(t(i), t(i + 1) - t(i), 0)).unwrap();
        }
        assert!(r.h.push_event(gst::event::Eos::new()));
        let samples = check_output(&drain(&mut r.h), gst::ClockTime::ZERO);
        assert_eq!(samples.len() as u64, want, "{frames} frames at {num}/{den}");
        let sh = shared.lock().unwrap();
        let last = sh.windows.last().unwrap();
        // the last window's kept latents end in the latent holding the last sample
        assert_eq!(
            last.first_latent + last.keep as u64,
            want.div_ceil(512),
            "{frames} frames"
        );
        drop(sh);
        assert!(messages_of(&r.bus, gst::MessageType::Error).is_empty());
    }
}

/// A flush drops the stream; the next one starts at window 0 after a generator reset,
/// its first buffer is DISCONT at the new position, and nothing stale comes out.
#[test]
fn flush_and_segment_restart_the_continuation_stream() {
    let (element, shared) = carrying("continuation", 0.5, false);
    element.set_property("hop", 500u32);
    let mut r = start(element);
    push(&mut r.h, 0..60, 25, gst::ClockTime::ZERO);
    // wait until some audio came out, then flush mid-stream
    let first = r.h.pull().expect("audio before the flush");
    assert!(first.flags().contains(gst::BufferFlags::DISCONT));
    assert!(r.h.push_event(gst::event::FlushStart::new()));
    assert!(r.h.push_event(gst::event::FlushStop::new(true)));
    while r.h.try_pull().is_some() {}
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    let t1 = gst::ClockTime::from_seconds(20);
    segment.set_start(t1);
    segment.set_time(t1);
    assert!(r.h.push_event(gst::event::Segment::new(&segment)));
    push(&mut r.h, 0..50, 25, t1);
    // a new segment (not just a position update) drains: the second stream ends there
    let mut segment2 = segment.clone();
    let t2 = gst::ClockTime::from_seconds(40);
    segment2.set_start(t2);
    segment2.set_time(t2);
    assert!(r.h.push_event(gst::event::Segment::new(&segment2)));
    push(&mut r.h, 0..10, 25, t2);
    assert!(r.h.push_event(gst::event::Eos::new()));
    let buffers = drain(&mut r.h);
    let split = buffers
        .iter()
        .position(|b| b.pts().unwrap() >= t2)
        .expect("third stream");
    let second = check_output(&buffers[..split], t1);
    assert_eq!(second.len(), 32_000);
    for (s, &v) in second.iter().enumerate() {
        let want = tone(0.5, 20.0 + s as f64 / 16000.0);
        assert!((v - want).abs() < 1e-4, "sample {s}: {v} vs {want}");
    }
    let third = check_output(&buffers[split..], t2);
    assert_eq!(third.len(), 6_400);
    let sh = shared.lock().unwrap();
    // one reset per stream (the flushed one, the one after the seek, the drained one)
    assert_eq!(sh.resets, 3);
    assert!(messages_of(&r.bus, gst::MessageType::Error).is_empty());
}

/// A leading GAP is forwarded, a GAP inside the stream is covered by the held frame, a
/// trailing GAP does not lengthen the output.
#[test]
fn gaps_in_continuation_mode() {
    let (element, shared) = carrying("continuation", 0.5, false);
    let mut r = start(element);
    assert!(
        r.h.push_event(
            gst::event::Gap::builder(gst::ClockTime::ZERO)
                .duration(gst::ClockTime::SECOND)
                .build()
        )
    );
    let t0 = gst::ClockTime::SECOND;
    push(&mut r.h, 0..25, 25, t0);
    assert!(
        r.h.push_event(
            gst::event::Gap::builder(gst::ClockTime::from_seconds(2))
                .duration(gst::ClockTime::from_seconds(2))
                .build()
        )
    );
    push(&mut r.h, 75..100, 25, t0);
    assert!(
        r.h.push_event(
            gst::event::Gap::builder(gst::ClockTime::from_seconds(5))
                .duration(gst::ClockTime::from_seconds(3))
                .build()
        )
    );
    assert!(r.h.push_event(gst::event::Eos::new()));
    let samples = check_output(&drain(&mut r.h), t0);
    assert_eq!(samples.len(), 64_000);
    let mut gaps = Vec::new();
    while let Some(ev) = r.h.try_pull_event() {
        // the preroll GAPs (no duration, at a stream's first frame: the harness answers
        // the LATENCY query as a live upstream) are not holes
        if let gst::EventView::Gap(g) = ev.view()
            && g.get().1 != Some(gst::ClockTime::ZERO)
        {
            gaps.push(g.get());
        }
    }
    assert_eq!(
        gaps,
        vec![(gst::ClockTime::ZERO, Some(gst::ClockTime::SECOND))]
    );
    // the windows ending inside the pause saw the held frame only
    let sh = shared.lock().unwrap();
    assert!(sh.windows.iter().any(|w| w.frames > 0));
}

#[test]
fn latency_in_continuation_mode_is_hop_plus_held_back() {
    // upstream + hop + held back (6 latents of 32 ms) + frame + processing
    let latency = |mode: &str, hop: u32| {
        let (element, _shared) = carrying(mode, 0.5, false);
        element.set_property("processing-latency", 500u32);
        element.set_property("hop", hop);
        let mut r = start(element);
        r.h.set_upstream_latency(100 * MS);
        push(&mut r.h, 0..2, 25, gst::ClockTime::ZERO);
        (r.h.query_latency(), r)
    };
    // 1000 ms = 31 latents of 32 ms
    let (answer, r) = latency("continuation", 1000);
    assert_eq!(answer, Some((100 + 992 + 192 + 40 + 500) * MS));
    // 2000 ms = 62.5 latents: rounded (half up) to 63 = 2016 ms
    assert_eq!(
        latency("continuation", 2000).0,
        Some((100 + 2016 + 192 + 40 + 500) * MS)
    );
    assert_eq!(
        latency("windows", 1000).0,
        Some((100 + 8000 + 40 + 500) * MS)
    );
    // `hop` and `mode` shape the stream's windows, read at READY→PAUSED: changed while
    // PLAYING they are refused with a WARNING, and the latency stays the stream's.
    while r.bus.pop_filtered(&[gst::MessageType::Latency]).is_some() {}
    r.element.set_property("hop", 2000u32);
    r.element.set_property_from_str("mode", "windows");
    assert_eq!(messages_n(&r.bus, gst::MessageType::Warning, 2, 2).len(), 2);
    assert!(messages_n(&r.bus, gst::MessageType::Latency, 1, 1).is_empty());
    assert_eq!(r.element.property::<u32>("hop"), 1000);
    assert_eq!(r.h.query_latency(), Some((100 + 992 + 192 + 40 + 500) * MS));
}

fn messages_n(bus: &gst::Bus, t: gst::MessageType, n: usize, secs: u64) -> Vec<gst::Message> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut out = Vec::new();
    while out.len() < n {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match bus.timed_pop_filtered(gst::ClockTime::from_nseconds(left.as_nanos() as u64), &[t]) {
            Some(m) => out.push(m),
            None => break,
        }
    }
    out
}

#[test]
fn hop_out_of_range_fails_the_state_change_naming_the_range() {
    for hop in [50u32, 249, 4500] {
        let (element, _shared) = carrying("continuation", 0.5, false);
        element.set_property("hop", hop);
        let bus = gst::Bus::new();
        element.set_bus(Some(&bus));
        assert!(element.set_state(gst::State::Paused).is_err());
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(2), &[gst::MessageType::Error])
            .expect("ERROR");
        let text = error_text(&msg);
        assert!(
            text.contains(&format!("hop {hop} ms")) && text.contains("250 ms to 4000 ms"),
            "{text}"
        );
        let _ = element.set_state(gst::State::Null);
    }
}

/// Frames that jump 28 s ahead: the stream before the jump ends, a GAP covers the hole,
/// the stream after it starts at its first frame (DISCONT), and nothing is generated for
/// the hole — in both modes.
#[test]
fn a_timestamp_jump_ends_the_stream_and_a_gap_covers_the_hole() {
    for mode in ["windows", "continuation"] {
        let (element, shared) = carrying(mode, 0.5, false);
        let mut r = start(element);
        let t0 = gst::ClockTime::from_seconds(1);
        push(&mut r.h, 0..25, 25, t0);
        let t1 = gst::ClockTime::from_seconds(30);
        push(&mut r.h, 0..25, 25, t1);
        assert!(r.h.push_event(gst::event::Eos::new()));
        let buffers = drain(&mut r.h);
        let split = buffers
            .iter()
            .position(|b| b.pts().unwrap() >= t1)
            .expect("second stream");
        assert_eq!(check_output(&buffers[..split], t0).len(), 16_000, "{mode}");
        assert_eq!(check_output(&buffers[split..], t1).len(), 16_000, "{mode}");
        let mut gaps = Vec::new();
        while let Some(ev) = r.h.try_pull_event() {
            if let gst::EventView::Gap(g) = ev.view()
                && g.get().1 != Some(gst::ClockTime::ZERO)
            {
                gaps.push(g.get());
            }
        }
        assert_eq!(
            gaps,
            vec![(
                gst::ClockTime::from_seconds(2),
                Some(gst::ClockTime::from_seconds(28))
            )],
            "{mode}"
        );
        let sh = shared.lock().unwrap();
        assert_eq!(sh.resets, 2, "{mode}");
        let audio_s: f64 = sh.windows.iter().map(|w| w.duration).sum();
        assert!(audio_s < 6.0, "{mode}: {audio_s} s generated");
    }
}

/// At 1000 fps a window is given only the frames that MMAudio's 8/25 fps sampling of it or
/// of another window still to come can pick (at most 33 per second of window for each of
/// the windows in reach: 3 with 8 s windows every 7 s, 10 with a 1 s hop), not the 1000
/// per second that arrive.
#[test]
fn frames_per_window_do_not_grow_with_the_input_rate() {
    for (mode, reach) in [("windows", 3.0), ("continuation", 10.0)] {
        let (element, shared) = carrying(mode, 0.25, true);
        let counter = Arc::new(AtomicUsize::new(0));
        let mut r = start(element);
        r.h.set_src_caps_str("video/x-raw,format=RGB,width=8,height=6,framerate=1000/1");
        push(&mut r.h, 0..9_000, 1000, gst::ClockTime::ZERO);
        assert!(r.h.push_event(gst::event::Eos::new()));
        let samples = check_output(&drain(&mut r.h), gst::ClockTime::ZERO);
        assert_eq!(samples.len(), 144_000, "{mode}");
        let sh = shared.lock().unwrap();
        for w in &sh.windows {
            let bound = (33.0 * reach * w.duration).ceil() as usize + 2;
            assert!(bound < (1000.0 * w.duration * 0.4) as usize);
            assert!(
                w.frames <= bound,
                "{mode}: window {} has {} frames",
                w.index,
                w.frames
            );
            counter.fetch_add(1, Ordering::SeqCst);
        }
        assert!(counter.load(Ordering::SeqCst) >= 2);
    }
}

/// A live source through the real generator on the tiny test model: the first audio
/// buffer leaves mmaudiogen about hop + held back + one frame + the generation time after
/// its own time, within what the LATENCY query answers, and far below the windows-mode
/// latency (8 s + …).
#[test]
fn live_pipeline_latency_in_continuation_mode() {
    init();
    let dir = scratch_dir("test-model-16k-live");
    mmaudio::test_model::write_test_model(&dir, mmaudio::Mode::Khz16, 1).unwrap();
    let desc = format!(
        "videotestsrc is-live=true pattern=ball ! \
         video/x-raw,format=RGB,width=64,height=48,framerate=25/1 ! \
         mmaudiogen name=gen model-dir={} variant=small-16k num-steps=2 \
         mode=continuation hop=1000 processing-latency=2000 ! fakesink sync=true",
        dir.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let generator = pipeline.by_name("gen").unwrap();
    let src = generator.static_pad("src").unwrap();
    // (arrival running time − pts) of every audio buffer leaving mmaudiogen before EOS
    let lags: Arc<Mutex<Vec<gst::ClockTime>>> = Arc::new(Mutex::new(Vec::new()));
    let eos_sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let buffers = Arc::new(AtomicUsize::new(0));
    {
        let lags = lags.clone();
        let buffers = buffers.clone();
        let element = generator.clone();
        let eos_sent = eos_sent.clone();
        src.add_probe(gst::PadProbeType::BUFFER, move |_pad, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data
                && let (Some(clock), Some(base)) = (element.clock(), element.base_time())
                && !eos_sent.load(Ordering::SeqCst)
            {
                let now = clock.time() - base;
                lags.lock()
                    .unwrap()
                    .push(now.saturating_sub(b.pts().unwrap()));
                buffers.fetch_add(1, Ordering::SeqCst);
            }
            gst::PadProbeReturn::Ok
        });
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while buffers.load(Ordering::SeqCst) < 5 && Instant::now() < deadline {
        if let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(100),
            &[gst::MessageType::Error],
        ) {
            panic!("{}", error_text(&msg));
        }
    }
    let mut q = gst::query::Latency::new();
    assert!(src.query(&mut q));
    let (live, min, _) = q.result();
    let mut up = gst::query::Latency::new();
    assert!(generator.static_pad("sink").unwrap().peer_query(&mut up));
    let own = min - up.result().1;
    eos_sent.store(true, Ordering::SeqCst);
    pipeline.send_event(gst::event::Eos::new());
    let eos = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(30),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        matches!(eos.as_ref().map(|m| m.type_()), Some(gst::MessageType::Eos)),
        "{eos:?}"
    );
    assert!(live);
    let lags = lags.lock().unwrap().clone();
    eprintln!(
        "continuation hop=1000: latency answered {min} (own {own}); each audio buffer left \
         mmaudiogen this long after its pts: {lags:?}"
    );
    // the answer: hop 992 ms + held back 192 ms + frame 40 ms + processing 2000 ms
    assert_eq!(own, (992 + 192 + 40 + 2000) * MS);
    assert!(lags.len() >= 5, "{lags:?}");
    let windows_mode = (8000 + 40 + 2000) * MS;
    // no buffer can leave before the video reaches the end of its window (≥ 0.992 s after
    // its pts); the first comes within what the element answered; the later ones too, but
    // for a generator slower than real time on a loaded machine (1.5 s of slack); all far
    // below the windows-mode latency (8 s + 40 ms + 2 s)
    assert!(lags.iter().all(|&l| l >= 950 * MS), "{lags:?}");
    // (the source pad task is held by the synchronised sink on the preroll GAP, which has
    // the first buffer's pts, until that same deadline: the first buffer follows it within
    // a scheduling delay)
    assert!(lags[0] <= min + 100 * MS, "{} vs {min}", lags[0]);
    for &l in &lags {
        assert!(l <= min + 1500 * MS, "{l} vs {min}");
        assert!(l * 2 < windows_mode, "{l}");
    }
}
