//! Reliability of `mmaudiogen` (issue 13): downstream can preroll before the first window,
//! segment seeks and reverse playback, properties that need READY, the element's ERROR
//! before any flow error, live QoS under overload. Harness tests and in-process pipelines
//! with injected fake generators.

// `mmaudio::Error` (returned by the generator closures) is large by design.
#![allow(clippy::result_large_err)]

mod common;

use common::*;
use gst::prelude::*;
use gst_check::Harness;
use mmaudio::generator::{AudioGenerator, LoadOptions};
use mmaudio::request::{Cancel, WindowRequest};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MS: gst::ClockTime = gst::ClockTime::MSECOND;
const CAPS: &str = "video/x-raw,format=RGB,width=8,height=6,framerate=25/1";

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

/// Like [`start`], recording everything that leaves the element from the start on.
fn start_recorded(element: gst::Element) -> (Run, Record) {
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    let rec = record(&h);
    h.set_src_caps_str(CAPS);
    (Run { h, bus, element }, rec)
}

fn frame(value: u8, pts: gst::ClockTime) -> gst::Buffer {
    let mut buf = gst::Buffer::from_mut_slice(vec![value; 8 * 6 * 3]);
    {
        let b = buf.get_mut().unwrap();
        b.set_pts(pts);
        b.set_duration(40 * MS);
    }
    buf
}

/// Push frames `range` of a 25 fps stream starting at `t0`.
fn push_frames(h: &mut Harness, range: std::ops::Range<u64>, t0: gst::ClockTime, value: u8) {
    for i in range {
        h.push(frame(value, t0 + i * 40 * MS))
            .unwrap_or_else(|e| panic!("push of frame {i} failed: {e:?}"));
    }
}

/// What left the element, in order.
#[derive(Debug, Clone)]
enum Item {
    Buffer {
        pts: gst::ClockTime,
        samples: Vec<f32>,
        discont: bool,
    },
    Event(gst::Event),
}

type Record = Arc<Mutex<Vec<Item>>>;

/// Record every buffer and downstream event reaching the harness, in order.
fn record(h: &Harness) -> Record {
    let rec: Record = Arc::default();
    let r = rec.clone();
    h.sinkpad()
        .unwrap()
        .add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                let item = match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => {
                        let map = b.map_readable().unwrap();
                        Item::Buffer {
                            pts: b.pts().unwrap(),
                            samples: map
                                .chunks_exact(4)
                                .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
                                .collect(),
                            discont: b.flags().contains(gst::BufferFlags::DISCONT),
                        }
                    }
                    Some(gst::PadProbeData::Event(e)) => Item::Event(e.clone()),
                    _ => return gst::PadProbeReturn::Ok,
                };
                r.lock().unwrap().push(item);
                gst::PadProbeReturn::Ok
            },
        )
        .unwrap();
    rec
}

/// Wait (bounded) until `pred` holds for the record.
fn wait_for(rec: &Record, secs: u64, what: &str, pred: impl Fn(&[Item]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !pred(&rec.lock().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "{what} within {secs} s; got {:#?}",
            summary(&rec.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A readable summary of a record (event names, buffer pts and sizes).
fn summary(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i {
            Item::Buffer { pts, samples, .. } => format!("buffer {pts} {}", samples.len()),
            Item::Event(e) => format!("{:?}", e.type_()),
        })
        .collect()
}

fn count_events(items: &[Item], t: gst::EventType) -> usize {
    items
        .iter()
        .filter(|i| matches!(i, Item::Event(e) if e.type_() == t))
        .count()
}

fn samples_before(items: &[Item], n_event: usize, t: gst::EventType) -> usize {
    let mut seen = 0;
    let mut samples = 0;
    for i in items {
        match i {
            Item::Buffer { samples: s, .. } => samples += s.len(),
            Item::Event(e) if e.type_() == t => {
                if seen == n_event {
                    return samples;
                }
                seen += 1;
            }
            _ => {}
        }
    }
    panic!("no {t:?} event number {n_event}");
}

fn text_of(msg: &gst::Message) -> String {
    match msg.view() {
        gst::MessageView::Error(e) => format!("{} | {:?}", e.error(), e.debug()),
        gst::MessageView::Warning(w) => format!("{} | {:?}", w.error(), w.debug()),
        _ => panic!("not an error/warning: {msg:?}"),
    }
}

fn pop_all(bus: &gst::Bus, t: gst::MessageType) -> Vec<gst::Message> {
    std::iter::from_fn(|| bus.pop_filtered(&[t])).collect()
}

// ---------------------------------------------------------------------------------------
// 1. Downstream prerolls before the first window is ready.

/// With 8 s windows the first audio comes 8 s of video later; one frame must already give
/// downstream something to preroll on: the caps and a GAP at the frame's time that claims
/// no duration (the audio for that time comes later), and nothing before it.
#[test]
fn first_frame_lets_downstream_preroll_with_a_gap() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.1), &log, None);
    let (mut r, rec) = start_recorded(element);
    let t0 = gst::ClockTime::SECOND;
    push_frames(&mut r.h, 0..1, t0, 7);
    wait_for(&rec, 5, "a GAP", |items| {
        count_events(items, gst::EventType::Gap) > 0
    });
    {
        let items = rec.lock().unwrap();
        let gap_at = items
            .iter()
            .position(|i| matches!(i, Item::Event(e) if e.type_() == gst::EventType::Gap))
            .unwrap();
        let Item::Event(gap) = &items[gap_at] else {
            unreachable!()
        };
        let gst::EventView::Gap(g) = gap.view() else {
            unreachable!()
        };
        assert_eq!(g.get(), (t0, Some(gst::ClockTime::ZERO)));
        let before: Vec<gst::EventType> = items[..gap_at]
            .iter()
            .map(|i| match i {
                Item::Event(e) => e.type_(),
                Item::Buffer { .. } => panic!("a buffer before the GAP"),
            })
            .collect();
        assert_eq!(
            before,
            [
                gst::EventType::StreamStart,
                gst::EventType::Caps,
                gst::EventType::Segment
            ]
        );
    }
    // The audio then starts exactly at the GAP's time.
    push_frames(&mut r.h, 1..250, t0, 7);
    r.h.push_event(gst::event::Eos::new());
    wait_for(&rec, 10, "EOS", |items| {
        count_events(items, gst::EventType::Eos) == 1
    });
    let items = rec.lock().unwrap();
    let first = items
        .iter()
        .find_map(|i| match i {
            Item::Buffer { pts, discont, .. } => Some((*pts, *discont)),
            _ => None,
        })
        .unwrap();
    assert_eq!(first, (t0, true));
    let total: usize = items
        .iter()
        .map(|i| match i {
            Item::Buffer { samples, .. } => samples.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(total, 160_000);
    assert_eq!(count_events(&items, gst::EventType::Gap), 1);
}

/// Not live: no preroll GAP (the sinks preroll on the first audio; a GAP would start a
/// non-live clock a window too early).
#[test]
fn no_preroll_gap_when_upstream_is_not_live() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.1), &log, None);
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 200u32);
    let (mut r, rec) = start_recorded(element);
    r.h.set_live(false);
    push_frames(&mut r.h, 0..50, gst::ClockTime::ZERO, 7);
    r.h.push_event(gst::event::Eos::new());
    wait_for(&rec, 10, "EOS", |items| {
        count_events(items, gst::EventType::Eos) == 1
    });
    let items = rec.lock().unwrap();
    assert_eq!(count_events(&items, gst::EventType::Gap), 0);
    assert_eq!(samples_before(&items, 0, gst::EventType::Eos), 32_000);
}

// ---------------------------------------------------------------------------------------
// 2. Segment seeks, looping, reverse playback.

/// A looping segment seek over [0, 2.48 s): three SEGMENTs with the SEGMENT flag and the
/// base advanced by the segment length, each ended by SEGMENT_DONE (no EOS). Each loop's
/// audio, all of it, leaves the element before its SEGMENT_DONE — also the last loop's,
/// with nothing coming after it.
#[test]
fn segment_done_is_forwarded_after_all_of_the_segment_audio() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.25), &log, None);
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 200u32);
    let (mut r, rec) = start_recorded(element);
    let stop = 62 * 40 * MS;
    for lp in 0..3u64 {
        let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
        segment.set_flags(gst::SegmentFlags::SEGMENT);
        segment.set_start(gst::ClockTime::ZERO);
        segment.set_stop(stop);
        segment.set_base(stop * lp);
        assert!(r.h.push_event(gst::event::Segment::new(&segment)));
        push_frames(&mut r.h, 0..62, gst::ClockTime::ZERO, 10 + lp as u8);
        assert!(
            r.h.push_event(gst::event::SegmentDone::new(stop)),
            "loop {lp}"
        );
    }
    wait_for(&rec, 10, "three SEGMENT_DONE", |items| {
        count_events(items, gst::EventType::SegmentDone) == 3
    });
    let items = rec.lock().unwrap();
    for lp in 0..3 {
        assert_eq!(
            samples_before(&items, lp, gst::EventType::SegmentDone),
            (lp + 1) * 39_680,
            "audio out before SEGMENT_DONE {lp}: {:#?}",
            summary(&items)
        );
    }
    // Each loop is a stream of its own: starts at 0 with DISCONT.
    let starts: Vec<(gst::ClockTime, bool)> = items
        .iter()
        .filter_map(|i| match i {
            Item::Buffer { pts, discont, .. } if pts.is_zero() => Some((*pts, *discont)),
            _ => None,
        })
        .collect();
    assert_eq!(starts, vec![(gst::ClockTime::ZERO, true); 3]);
}

/// Reverse playback cannot be generated (the model needs the video forwards): the seek is
/// refused with a WARNING saying so, and a reverse segment that comes anyway (a seek sent
/// to the source directly) gives GAPs for its frames and a WARNING, never audio.
#[test]
fn reverse_playback_is_refused_with_a_warning() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.25), &log, None);
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 200u32);
    let (mut r, rec) = start_recorded(element);
    push_frames(&mut r.h, 0..10, gst::ClockTime::ZERO, 1);

    let seek = gst::event::Seek::new(
        -1.0,
        gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
        gst::SeekType::Set,
        gst::ClockTime::ZERO,
        gst::SeekType::Set,
        gst::ClockTime::from_seconds(2),
    );
    assert!(!r.h.push_upstream_event(seek), "reverse seek accepted");
    assert!(
        r.h.try_pull_upstream_event()
            .is_none_or(|e| e.type_() != gst::EventType::Seek),
        "reverse seek forwarded upstream"
    );
    let warnings = pop_all(&r.bus, gst::MessageType::Warning);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let text = text_of(&warnings[0]);
    assert!(text.contains("reverse playback"), "{text}");

    // A forward seek still works.
    let seek = gst::event::Seek::new(
        1.0,
        gst::SeekFlags::FLUSH,
        gst::SeekType::Set,
        gst::ClockTime::ZERO,
        gst::SeekType::None,
        gst::ClockTime::NONE,
    );
    assert!(r.h.push_upstream_event(seek));

    // A reverse segment arrives anyway: frames from 1.96 s down to 0.
    assert!(r.h.push_event(gst::event::FlushStart::new()));
    assert!(r.h.push_event(gst::event::FlushStop::new(true)));
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_rate(-1.0);
    segment.set_start(gst::ClockTime::ZERO);
    segment.set_stop(gst::ClockTime::from_seconds(2));
    rec.lock().unwrap().clear();
    assert!(r.h.push_event(gst::event::Segment::new(&segment)));
    for i in (0..50).rev() {
        r.h.push(frame(3, i * 40 * MS)).unwrap();
    }
    r.h.push_event(gst::event::Eos::new());
    wait_for(&rec, 10, "EOS", |items| {
        count_events(items, gst::EventType::Eos) == 1
    });
    let items = rec.lock().unwrap();
    assert!(
        items.iter().all(|i| matches!(i, Item::Event(_))),
        "audio in a reverse segment: {:#?}",
        summary(&items)
    );
    // One GAP per frame, covering it.
    let gaps: Vec<(gst::ClockTime, Option<gst::ClockTime>)> = items
        .iter()
        .filter_map(|i| match i {
            Item::Event(e) => match e.view() {
                gst::EventView::Gap(g) => Some(g.get()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(gaps.len(), 50, "{gaps:?}");
    assert_eq!(gaps[0], (49 * 40 * MS, Some(40 * MS)));
    assert_eq!(gaps[49], (gst::ClockTime::ZERO, Some(40 * MS)));
    let warnings = pop_all(&r.bus, gst::MessageType::Warning);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(text_of(&warnings[0]).contains("reverse playback"));
    assert!(log.lock().unwrap().iter().all(|s| s.frames[0].3[0] != 3));
}

// ---------------------------------------------------------------------------------------
// 3. Properties that need NULL/READY.

/// `window-duration`, `overlap`, `model-dir`, `variant`, `device` and `precision` can only
/// change in NULL or READY: while PLAYING a change is refused with a WARNING naming the
/// property, and the reported latency stays what the stream actually has.
#[test]
fn ready_only_properties_are_refused_while_playing() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.1), &log, None);
    let mut r = start(element);
    r.h.set_upstream_latency(gst::ClockTime::ZERO);
    let latency = r.h.query_latency();
    assert_eq!(latency, Some((8000 + 40 + 2000) * MS));
    let e = &r.element;
    e.set_property("window-duration", 3000u32);
    e.set_property("overlap", 500u32);
    e.set_property("model-dir", "/elsewhere");
    e.set_property_from_str("variant", "small-44k");
    e.set_property("device", "cuda:3");
    e.set_property_from_str("precision", "bf16");
    assert_eq!(e.property::<u32>("window-duration"), 8000);
    assert_eq!(e.property::<u32>("overlap"), 1000);
    assert_eq!(e.property::<Option<String>>("model-dir"), None);
    assert_eq!(e.property::<String>("device"), "auto");
    let warnings = pop_all(&r.bus, gst::MessageType::Warning);
    let texts: Vec<String> = warnings.iter().map(text_of).collect();
    assert_eq!(texts.len(), 6, "{texts:#?}");
    for (text, name) in texts.iter().zip([
        "window-duration",
        "overlap",
        "model-dir",
        "variant",
        "device",
        "precision",
    ]) {
        assert!(text.contains(name) && text.contains("READY"), "{text}");
    }
    assert_eq!(r.h.query_latency(), latency);
    // Properties marked changeable while playing still are.
    e.set_property("processing-latency", 500u32);
    assert_eq!(e.property::<u32>("processing-latency"), 500);
    assert!(pop_all(&r.bus, gst::MessageType::Warning).is_empty());
    // In READY the others apply.
    e.set_state(gst::State::Ready).unwrap();
    e.set_property("window-duration", 3000u32);
    assert_eq!(e.property::<u32>("window-duration"), 3000);
    assert!(pop_all(&r.bus, gst::MessageType::Warning).is_empty());
}

// ---------------------------------------------------------------------------------------
// 4. The element's ERROR comes before any flow error leaves it.

/// A model that fails to load: the first ERROR on the bus is the element's own (naming the
/// reason), never upstream's generic "Internal data stream error" — 100 times in a row.
#[test]
fn load_failure_error_comes_before_the_flow_error_every_time() {
    init();
    for run in 0..100 {
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc ! {CAPS} ! mmaudiogen name=gen ! fakesink"
        ))
        .unwrap();
        let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
        let generator = bin.by_name("gen").unwrap();
        generator
            .downcast_ref::<gstmmaudio::MMAudioGen>()
            .unwrap()
            .set_generator_factory(|_: &LoadOptions| {
                // Long enough for the first buffer to wait for the model.
                std::thread::sleep(Duration::from_millis(3));
                Err(mmaudio::Error::config("synthetic model load failure"))
            });
        let bus = pipeline.bus().unwrap();
        let _ = pipeline.set_state(gst::State::Playing);
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Error])
            .unwrap_or_else(|| panic!("run {run}: no ERROR"));
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(
            msg.src().map(|s| s.name()).as_deref(),
            Some("gen"),
            "run {run}: first ERROR {}",
            text_of(&msg)
        );
        assert!(text_of(&msg).contains("synthetic model load failure"));
    }
}

// ---------------------------------------------------------------------------------------
// 1 (pipelines). A live tee with default queues prerolls and ends at EOS.

/// Sample counts reaching a sink.
fn count_samples(pad: &gst::Pad) -> Arc<Mutex<u64>> {
    let n = Arc::new(Mutex::new(0u64));
    let c = n.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
            *c.lock().unwrap() += b.size() as u64 / 4;
        }
        gst::PadProbeReturn::Ok
    })
    .unwrap();
    n
}

/// Run a pipeline to EOS; the messages it posted (errors fail).
fn run_live(pipeline: &gst::Element, secs: u64) -> Vec<gst::Message> {
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64)) else {
            pipeline.set_state(gst::State::Null).unwrap();
            panic!("no EOS within {secs} s (deadlock?)");
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                pipeline.set_state(gst::State::Null).unwrap();
                panic!("{} ({:?})", e.error(), e.debug());
            }
            _ => seen.push(msg),
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    seen
}

fn window_messages(msgs: &[gst::Message]) -> Vec<gst::Structure> {
    msgs.iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Element(e) => e
                .structure()
                .filter(|s| s.name() == "mmaudiogen-window")
                .map(|s| s.to_owned()),
            _ => None,
        })
        .collect()
}

/// The pipeline: a live source, a tee, default queues on both branches, both sinks
/// synchronised. The video sink prerolls on its first frame and blocks until the pipeline
/// plays; the audio sink must preroll too although the first window needs 2 s of video
/// (more than a default queue holds), or the tee blocks for good. With the queue of the
/// video branch sized to hold the latency (as the README says) no window is late.
#[test]
fn live_tee_prerolls_plays_and_ends_at_eos() {
    init();
    for (video_queue, sized) in [
        ("queue", false),
        (
            "queue max-size-time=5000000000 max-size-buffers=0 max-size-bytes=0",
            true,
        ),
    ] {
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc is-live=true num-buffers=75 ! {CAPS} ! tee name=t \
             t. ! {video_queue} ! fakesink sync=true \
             t. ! queue ! mmaudiogen name=gen window-duration=2000 overlap=400 \
             processing-latency=1000 ! fakesink name=asink sync=true"
        ))
        .unwrap();
        let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
        let generator = bin.by_name("gen").unwrap();
        let log = new_log();
        generator
            .downcast_ref::<gstmmaudio::MMAudioGen>()
            .unwrap()
            .set_generator_factory(move |_: &LoadOptions| {
                Ok(
                    Box::new(Fake::new(16000, Behaviour::Constant(0.1), log.clone()))
                        as Box<dyn AudioGenerator>,
                )
            });
        let asink = bin.by_name("asink").unwrap();
        let samples = count_samples(&asink.static_pad("sink").unwrap());
        let t = Instant::now();
        let msgs = run_live(&pipeline, 30);
        let took = t.elapsed();
        assert_eq!(*samples.lock().unwrap(), 48_000, "sized queue {sized}");
        // 3 s of live video + 3.04 s of latency, and no deadlock.
        assert!(took < Duration::from_secs(20), "took {took:?}");
        if sized {
            let windows = window_messages(&msgs);
            assert!(!windows.is_empty());
            assert!(
                windows.iter().all(|w| !w.get::<bool>("skipped").unwrap()),
                "{windows:#?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 5. Live QoS.

/// A generator whose speed the test sets per window; it checks the cancel every 2 ms as
/// the real sampler does between steps.
struct Slow {
    delays: Arc<dyn Fn(u64) -> Duration + Send + Sync>,
}

impl AudioGenerator for Slow {
    fn sample_rate(&self) -> u32 {
        16000
    }

    fn generate(&mut self, req: &WindowRequest, cancel: &Cancel) -> mmaudio::Result<Vec<f32>> {
        let until = Instant::now() + (self.delays)(req.index);
        while Instant::now() < until {
            cancel.check()?;
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(vec![0.5; req.num_samples(16000)])
    }
}

/// A live stream on the real clock, windows of 1 s every 0.8 s, a budget of 600 ms: the
/// generator takes 20 ms, then 3 s for windows 2..=5 (far beyond the budget), then 20 ms
/// again. Every buffer leaves the element within one window of its due time (pts +
/// latency); the windows that cannot be on time are skipped (silence, a QoS message, the
/// count in `mmaudiogen-window`), and once the load drops the windows carry audio again.
#[test]
fn live_overload_skips_late_windows_and_recovers() {
    init();
    let element = gst::ElementFactory::make("mmaudiogen").build().unwrap();
    element
        .downcast_ref::<gstmmaudio::MMAudioGen>()
        .unwrap()
        .set_generator_factory(|_: &LoadOptions| {
            Ok(Box::new(Slow {
                delays: Arc::new(|k| {
                    Duration::from_millis(if (2..=5).contains(&k) { 3000 } else { 20 })
                }),
            }) as Box<dyn AudioGenerator>)
        });
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 200u32);
    element.set_property("processing-latency", 600u32);
    let mut r = start(element);
    r.h.use_systemclock();
    let clock = gst::SystemClock::obtain();
    let base = clock.time();
    r.element.set_base_time(base);
    r.h.set_upstream_latency(gst::ClockTime::ZERO);
    let latency = r.h.query_latency().unwrap();
    assert_eq!(latency, 1640 * MS);
    assert!(r.h.push_upstream_event(gst::event::Latency::new(latency)));

    // Arrival running time of every buffer.
    let arrivals: Arc<Mutex<Vec<(gst::ClockTime, gst::ClockTime, f32)>>> = Arc::default();
    let a = arrivals.clone();
    let c = clock.clone();
    r.h.sinkpad()
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                let map = b.map_readable().unwrap();
                let last = f32::from_ne_bytes(map[map.len() - 4..].try_into().unwrap());
                a.lock()
                    .unwrap()
                    .push((b.pts().unwrap(), c.time() - base, last));
            }
            gst::PadProbeReturn::Ok
        })
        .unwrap();

    // 8 s of live video, each frame pushed at its capture time.
    for i in 0..200u64 {
        let pts = i * 40 * MS;
        let now = clock.time() - base;
        if pts > now {
            std::thread::sleep(Duration::from_nanos((pts - now).nseconds()));
        }
        r.h.push(frame(0, pts)).unwrap();
    }
    r.h.push_event(gst::event::Eos::new());
    let mut total = 0;
    while let Some(b) = r.h.pull_until_eos().unwrap() {
        total += b.size() / 4;
    }
    assert_eq!(total, 128_000);

    let arrivals = arrivals.lock().unwrap();
    for (pts, arrived, _) in arrivals.iter() {
        let due = *pts + latency;
        assert!(
            *arrived <= due + gst::ClockTime::SECOND,
            "buffer {pts} arrived at {arrived}, due {due}: {arrivals:#?}"
        );
    }
    let msgs: Vec<gst::Message> = std::iter::from_fn(|| r.bus.pop()).collect();
    let windows = window_messages(&msgs);
    let skipped: Vec<u64> = windows
        .iter()
        .filter(|w| w.get::<bool>("skipped").unwrap())
        .map(|w| w.get::<u64>("index").unwrap())
        .collect();
    assert!(!skipped.is_empty(), "{windows:#?}");
    assert!(skipped.iter().all(|k| (2..=6).contains(k)), "{skipped:?}");
    let last = windows.last().unwrap();
    assert_eq!(
        last.get::<u64>("windows-skipped").unwrap(),
        skipped.len() as u64
    );
    let qos = msgs
        .iter()
        .filter(|m| m.type_() == gst::MessageType::Qos)
        .count();
    assert_eq!(qos, skipped.len());
    // Recovered: the last windows were generated, and their audio is there.
    assert!(
        windows[windows.len() - 3..]
            .iter()
            .all(|w| !w.get::<bool>("skipped").unwrap())
    );
    assert_eq!(arrivals.last().unwrap().2, 0.5);
}

/// Like [`Slow`], but it holds latents as MMAudio's continuation does: a window that asks
/// for known latents the generator does not hold (the window before it was skipped or
/// cancelled) is an error, as it is for the real model. Records the `known` of each window.
struct SlowCarrying {
    delays: Arc<dyn Fn(u64) -> Duration + Send + Sync>,
    /// Stream latents `[start, end)` held from the last generated window.
    held: Option<(u64, u64)>,
    known: Arc<Mutex<Vec<(u64, usize)>>>,
}

impl AudioGenerator for SlowCarrying {
    fn sample_rate(&self) -> u32 {
        16000
    }

    fn reset(&mut self) {
        self.held = None;
    }

    fn generate(&mut self, req: &WindowRequest, cancel: &Cancel) -> mmaudio::Result<Vec<f32>> {
        let c = req.continuation.expect("continuation mode");
        self.known.lock().unwrap().push((req.index, c.known));
        if c.known > 0 {
            let need = (c.first_latent, c.first_latent + c.known as u64);
            match self.held {
                Some((a, b)) if a <= need.0 && need.1 <= b => {}
                held => {
                    return Err(mmaudio::Error::input(format!(
                        "window {} needs latents {need:?}, holds {held:?}",
                        req.index
                    )));
                }
            }
        }
        let until = Instant::now() + (self.delays)(req.index);
        while Instant::now() < until {
            cancel.check()?;
            std::thread::sleep(Duration::from_millis(2));
        }
        self.held = Some((c.first_latent, c.first_latent + c.keep as u64));
        Ok(vec![0.5; req.num_samples(16000)])
    }
}

/// Live QoS in continuation mode: a skipped (or cancelled) window leaves no latents for the
/// next one to hold, so the window after it starts afresh (nothing known) instead of failing
/// the stream, and the chain resumes from there. Hop 512 ms in 1 s windows, a budget of
/// 600 ms; windows 3..=6 take 3 s.
#[test]
fn live_overload_in_continuation_mode_skips_and_resumes_the_chain() {
    init();
    let known: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
    let k = known.clone();
    let element = gst::ElementFactory::make("mmaudiogen").build().unwrap();
    element
        .downcast_ref::<gstmmaudio::MMAudioGen>()
        .unwrap()
        .set_generator_factory(move |_: &LoadOptions| {
            Ok(Box::new(SlowCarrying {
                delays: Arc::new(|k| {
                    Duration::from_millis(if (3..=6).contains(&k) { 3000 } else { 20 })
                }),
                held: None,
                known: k.clone(),
            }) as Box<dyn AudioGenerator>)
        });
    element.set_property_from_str("mode", "continuation");
    element.set_property("window-duration", 1000u32);
    element.set_property("hop", 500u32);
    element.set_property("processing-latency", 600u32);
    let mut r = start(element);
    r.h.use_systemclock();
    let clock = gst::SystemClock::obtain();
    let base = clock.time();
    r.element.set_base_time(base);
    r.h.set_upstream_latency(gst::ClockTime::ZERO);
    // the first frame waits for the model: its rate sets the latent grid of the latency
    r.h.push(frame(0, gst::ClockTime::ZERO)).unwrap();
    let latency = r.h.query_latency().unwrap();
    // hop 16 latents (512 ms) + held back 6 (192 ms) + frame 40 ms + budget 600 ms
    assert_eq!(latency, (512 + 192 + 40 + 600) * MS);
    assert!(r.h.push_upstream_event(gst::event::Latency::new(latency)));

    for i in 1..200u64 {
        let pts = i * 40 * MS;
        let now = clock.time() - base;
        if pts > now {
            std::thread::sleep(Duration::from_nanos((pts - now).nseconds()));
        }
        r.h.push(frame(0, pts)).unwrap();
    }
    r.h.push_event(gst::event::Eos::new());
    let mut total = 0;
    let mut last = 0.0;
    while let Some(b) = r.h.pull_until_eos().unwrap() {
        total += b.size() / 4;
        let map = b.map_readable().unwrap();
        last = f32::from_ne_bytes(map[map.len() - 4..].try_into().unwrap());
    }
    let msgs: Vec<gst::Message> = std::iter::from_fn(|| r.bus.pop()).collect();
    let errors: Vec<_> = msgs
        .iter()
        .filter(|m| m.type_() == gst::MessageType::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(total, 128_000);
    let windows = window_messages(&msgs);
    let skipped: Vec<u64> = windows
        .iter()
        .filter(|w| w.get::<bool>("skipped").unwrap())
        .map(|w| w.get::<u64>("index").unwrap())
        .collect();
    assert!(!skipped.is_empty(), "{windows:#?}");
    let known = known.lock().unwrap().clone();
    // every window generated right after a skipped one held nothing; the others held
    // their prefix (after the first)
    for &(index, held) in &known {
        if index > 0 && skipped.contains(&(index - 1)) {
            assert_eq!(held, 0, "window {index}: {known:?}");
        }
    }
    let tail = &windows[windows.len() - 3..];
    assert!(tail.iter().all(|w| !w.get::<bool>("skipped").unwrap()));
    let last_index = known.last().unwrap().0;
    assert!(known.last().unwrap().1 > 0, "the chain resumed: {known:?}");
    assert!(last_index > skipped.iter().max().unwrap() + 1);
    assert_eq!(last, 0.5);
}
