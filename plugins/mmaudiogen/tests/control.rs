//! Control from the application: the `stop-after-window` action signal and the
//! `mmaudiogen-progress` messages (harness tests with fake generators).

// `mmaudio::Error` (returned by the generator closures) is large by design.
#![allow(clippy::result_large_err)]

mod common;

use common::*;
use gst::prelude::*;
use gst_check::Harness;
use mmaudio::generator::{AudioGenerator, LoadOptions};
use mmaudio::request::{Cancel, Stage, WindowRequest};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const MS: gst::ClockTime = gst::ClockTime::MSECOND;
const CAPS: &str = "video/x-raw,format=RGB,width=8,height=6,framerate=25/1";

fn start(element: &gst::Element) -> (Harness, gst::Bus) {
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let mut h = Harness::with_element(element, Some("sink"), Some("src"));
    h.set_src_caps_str(CAPS);
    (h, bus)
}

fn frame(i: u64) -> gst::Buffer {
    let mut b = gst::Buffer::from_mut_slice(vec![(i % 200) as u8 + 1; 8 * 6 * 3]);
    {
        let b = b.get_mut().unwrap();
        b.set_pts(i * 40 * MS);
        b.set_duration(40 * MS);
    }
    b
}

/// Audio buffers pulled until EOS (bounded) and the EOS events downstream got.
fn pull_all(h: &mut Harness) -> (Vec<gst::Buffer>, u64) {
    let mut out = Vec::new();
    while let Some(b) = h.pull_until_eos().expect("output before timeout") {
        out.push(b);
    }
    // The harness notes EOS before it queues the event: wait for the event itself, then
    // count any later one.
    let mut eos = 0;
    while eos == 0 {
        let e = h.pull_event().expect("the EOS event");
        eos += (e.type_() == gst::EventType::Eos) as u64;
    }
    while let Some(e) = h.try_pull_event() {
        eos += (e.type_() == gst::EventType::Eos) as u64;
    }
    (out, eos)
}

fn samples(buffers: &[gst::Buffer]) -> u64 {
    buffers.iter().map(|b| b.size() as u64 / 4).sum()
}

fn stop(element: &gst::Element) -> Option<gst::ClockTime> {
    let t = element.emit_by_name::<u64>("stop-after-window", &[]);
    (t != u64::MAX).then(|| gst::ClockTime::from_nseconds(t))
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn stop_after_window_finishes_the_current_window_and_drops_the_queued_ones() {
    let log = new_log();
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let element = element_with(16000, Behaviour::Gate(gate.clone()), &log, None);
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 200u32);
    let (mut h, _bus) = start(&element);
    // Frames up to 2.48 s: window 0 [0, 1) s is being generated (held at the gate),
    // window 1 [0.8, 1.8) s is queued.
    for i in 0..63 {
        h.push(frame(i)).unwrap();
    }
    wait_until("window 0 started", || log.lock().unwrap().len() == 1);
    assert_eq!(stop(&element), Some(gst::ClockTime::SECOND));
    // Later frames are refused: upstream stops.
    assert_eq!(h.push(frame(63)), Err(gst::FlowError::Eos));
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    let (out, _) = pull_all(&mut h);
    // Window 0 in full (its overlap is not faded out), nothing of window 1.
    assert_eq!(samples(&out), 16_000);
    let last = out.last().unwrap();
    assert_eq!(
        last.pts().unwrap() + last.duration().unwrap(),
        gst::ClockTime::SECOND
    );
    assert!(out.iter().all(|b| {
        b.map_readable()
            .unwrap()
            .chunks_exact(4)
            .all(|c| f32::from_ne_bytes(c.try_into().unwrap()) == 1.0 / 255.0)
    }));
    // Upstream's own EOS is absorbed: exactly one EOS downstream.
    assert!(h.push_event(gst::event::Eos::new()));
    std::thread::sleep(Duration::from_millis(100));
    let mut extra_eos = 0;
    while let Some(e) = h.try_pull_event() {
        extra_eos += (e.type_() == gst::EventType::Eos) as u32;
    }
    assert_eq!(extra_eos, 0);
    assert_eq!(log.lock().unwrap().len(), 1, "window 1 was generated");
}

#[test]
fn stop_after_window_when_idle_ends_at_the_last_window_generated() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.25), &log, None);
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 200u32);
    let (mut h, bus) = start(&element);
    // Window 0 is planned at 1.0 s; frames up to 1.2 s (window 1 needs 1.8 s).
    for i in 0..31 {
        h.push(frame(i)).unwrap();
    }
    // (the element also says what it loaded: mmaudiogen-model)
    loop {
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(20),
                &[gst::MessageType::Element],
            )
            .expect("window message");
        if msg.structure().unwrap().name() == "mmaudiogen-window" {
            break;
        }
    }
    // The worker holds window 0's overlap for the crossfade into window 1: it comes out.
    wait_until("window 0 pushed", || {
        h.buffers_in_queue() > 0 && h.buffers_received() > 0
    });
    assert_eq!(stop(&element), Some(gst::ClockTime::SECOND));
    let (out, eos) = pull_all(&mut h);
    assert_eq!(samples(&out), 16_000);
    assert_eq!(eos, 1);
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[test]
fn stop_before_any_window_ends_the_stream_without_audio() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.25), &log, None);
    let (mut h, _bus) = start(&element);
    for i in 0..10 {
        h.push(frame(i)).unwrap();
    }
    assert_eq!(stop(&element), None);
    assert_eq!(h.push(frame(10)), Err(gst::FlowError::Eos));
    let (out, eos) = pull_all(&mut h);
    assert!(out.is_empty());
    assert_eq!(eos, 1);
    assert!(log.lock().unwrap().is_empty());
}

#[test]
fn a_flush_after_stop_after_window_starts_a_new_stream() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.25), &log, None);
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 200u32);
    let (mut h, _bus) = start(&element);
    assert_eq!(stop(&element), None);
    assert_eq!(h.push(frame(0)), Err(gst::FlowError::Eos));
    assert_eq!(pull_all(&mut h).1, 1);
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    for i in 0..25 {
        h.push(frame(i)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    // (the harness keeps the first stream's EOS in mind: pull the buffers one by one)
    let mut n = 0;
    while n < 16_000 {
        n += h.pull().expect("output of the new stream").size() as u64 / 4;
    }
    assert_eq!(n, 16_000);
    loop {
        let e = h.pull_event().expect("the new stream's EOS");
        if e.type_() == gst::EventType::Eos {
            break;
        }
    }
    assert!(h.try_pull().is_none());
}

/// Reports every stage, with a sampler of `steps` steps.
struct Staged {
    steps: usize,
}

impl AudioGenerator for Staged {
    fn sample_rate(&self) -> u32 {
        16_000
    }
    fn generate(&mut self, req: &WindowRequest, cancel: &Cancel) -> mmaudio::Result<Vec<f32>> {
        cancel.report(Stage::Features);
        for step in 1..=self.steps {
            cancel.check()?;
            cancel.report(Stage::Sampling {
                step,
                of: self.steps,
            });
        }
        cancel.report(Stage::Decoding);
        Ok(vec![0.0; req.num_samples(16_000)])
    }
}

#[test]
fn progress_messages_move_within_a_window() {
    init();
    let element = gst::ElementFactory::make("mmaudiogen").build().unwrap();
    element
        .downcast_ref::<gstmmaudio::MMAudioGen>()
        .unwrap()
        .set_generator_factory(|opts: &LoadOptions| {
            let _ = opts;
            Ok(Box::new(Staged { steps: 3 }) as Box<dyn AudioGenerator>)
        });
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 200u32);
    element.set_property("num-steps", 3u32);
    let (mut h, bus) = start(&element);
    for i in 0..25 {
        h.push(frame(i)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let (out, _) = pull_all(&mut h);
    assert_eq!(samples(&out), 16_000);
    let mut seen = Vec::new();
    while let Some(m) = bus.pop_filtered(&[gst::MessageType::Element]) {
        let s = m.structure().unwrap();
        if s.name() == "mmaudiogen-model" {
            continue;
        }
        if s.name() == "mmaudiogen-progress" {
            seen.push((
                s.get::<u64>("index").unwrap(),
                s.get::<String>("stage").unwrap(),
                s.get::<u32>("step").unwrap(),
                s.get::<u32>("steps").unwrap(),
            ));
        } else {
            seen.push((99, s.name().to_string(), 0, 0));
        }
    }
    let want: Vec<(u64, String, u32, u32)> = [
        (0, "features", 0, 3),
        (0, "sampling", 1, 3),
        (0, "sampling", 2, 3),
        (0, "sampling", 3, 3),
        (0, "decoding", 0, 3),
        (99, "mmaudiogen-window", 0, 0),
    ]
    .into_iter()
    .map(|(i, s, a, b)| (i, s.to_string(), a, b))
    .collect();
    assert_eq!(seen, want);
}
