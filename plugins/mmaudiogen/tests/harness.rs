//! `gst_check::Harness` tests of `mmaudiogen` with injected fake generators.

// `mmaudio::Error` (returned by the generator closures) is large by design.
#![allow(clippy::result_large_err)]

mod common;

use common::*;
use gst::prelude::*;
use gst_check::Harness;
use mmaudio::window::samples_to_ns;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

const MS: gst::ClockTime = gst::ClockTime::MSECOND;

struct Run {
    h: Harness,
    bus: gst::Bus,
    element: gst::Element,
}

fn start(element: gst::Element, caps: &str) -> Run {
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps_str(caps);
    Run { h, bus, element }
}

fn rgb_info(w: u32, h: u32) -> gst_video::VideoInfo {
    gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w, h)
        .build()
        .unwrap()
}

/// An RGB buffer laid out as `info` says (stride padding filled with `pad`).
fn rgb_buffer(
    info: &gst_video::VideoInfo,
    fill: impl Fn(usize, usize, usize) -> u8,
    pad: u8,
    pts: gst::ClockTime,
    duration: Option<gst::ClockTime>,
) -> gst::Buffer {
    let stride = info.stride()[0] as usize;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let mut buf = gst::Buffer::with_size(info.size()).unwrap();
    {
        let b = buf.get_mut().unwrap();
        b.set_pts(pts);
        b.set_duration(duration);
        let mut map = b.map_writable().unwrap();
        map.fill(pad);
        for y in 0..h {
            for x in 0..w * 3 {
                map[y * stride + x] = fill(x / 3, y, x % 3);
            }
        }
    }
    buf
}

/// Frame timestamps of a constant-rate stream, as GStreamer computes them.
fn cfr_ts(i: u64, num: u64, den: u64) -> gst::ClockTime {
    gst::ClockTime::SECOND.mul_div_floor(i * den, num).unwrap()
}

/// Push `n` constant-rate frames starting at `t0`, all bytes = `value(i)`.
fn push_cfr(
    h: &mut Harness,
    info: &gst_video::VideoInfo,
    range: std::ops::Range<u64>,
    (num, den): (u64, u64),
    t0: gst::ClockTime,
    value: impl Fn(u64) -> u8,
) {
    for i in range {
        let pts = t0 + cfr_ts(i, num, den);
        let dur = cfr_ts(i + 1, num, den) - cfr_ts(i, num, den);
        let v = value(i);
        h.push(rgb_buffer(info, |_, _, _| v, 0, pts, Some(dur)))
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

/// Check sample-counter timestamps (continuous from `first_pts`, offsets = sample
/// counts, first buffer DISCONT) and return the samples.
fn check_output(buffers: &[gst::Buffer], rate: u32, first_pts: gst::ClockTime) -> Vec<f32> {
    assert!(!buffers.is_empty(), "no output");
    assert!(
        buffers[0].flags().contains(gst::BufferFlags::DISCONT),
        "first buffer not DISCONT"
    );
    let mut samples = Vec::new();
    let mut count = 0u64;
    for (i, b) in buffers.iter().enumerate() {
        let n = b.size() as u64 / 4;
        let pts = first_pts + gst::ClockTime::from_nseconds(samples_to_ns(count, rate));
        let end = first_pts + gst::ClockTime::from_nseconds(samples_to_ns(count + n, rate));
        assert_eq!(b.pts(), Some(pts), "buffer {i} pts");
        assert_eq!(
            b.pts().unwrap() + b.duration().unwrap(),
            end,
            "buffer {i} end"
        );
        assert_eq!(b.offset(), count, "buffer {i} offset");
        assert_eq!(b.offset_end(), count + n, "buffer {i} offset_end");
        if i > 0 {
            assert!(!b.flags().contains(gst::BufferFlags::DISCONT));
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

fn assert_close(actual: &[f32], expected: &[f32], tol: f32) {
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol, "sample {i}: {a} vs {e}");
    }
}

fn messages(bus: &gst::Bus, t: gst::MessageType) -> Vec<gst::Message> {
    std::iter::from_fn(|| bus.pop_filtered(&[t])).collect()
}

/// Messages of type `t`, waiting up to `secs` until `n` have arrived (posting is asynchronous
/// to the data flow, e.g. PROGRESS "complete" from the loader thread).
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
    out.extend(messages(bus, t));
    out
}

/// The loader runs on its own thread: wait (bounded) until it has been called `n` times,
/// then check it is not called again within a short grace period.
fn wait_loads(loads: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while loads.load(Ordering::SeqCst) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(loads.load(Ordering::SeqCst), n);
}

fn wait_message(bus: &gst::Bus, t: gst::MessageType, secs: u64) -> Option<gst::Message> {
    bus.timed_pop_filtered(gst::ClockTime::from_seconds(secs), &[t])
}

/// All messages up to and including the first of type `t` (none dropped).
fn messages_until(bus: &gst::Bus, t: gst::MessageType, secs: u64) -> Vec<gst::Message> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut out = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64)) else {
            break;
        };
        let done = msg.type_() == t;
        out.push(msg);
        if done {
            return out;
        }
    }
    panic!("no {t:?} message within {secs} s; got {out:?}");
}

fn error_text(msg: &gst::Message) -> String {
    match msg.view() {
        gst::MessageView::Error(e) => format!("{} | {:?}", e.error(), e.debug()),
        gst::MessageView::Warning(w) => format!("{} | {:?}", w.error(), w.debug()),
        _ => panic!("not an error/warning: {msg:?}"),
    }
}

fn output_caps(h: &Harness) -> gst::Caps {
    h.sinkpad().unwrap().current_caps().expect("caps")
}

#[test]
fn ten_seconds_at_25fps_gives_160000_continuous_samples() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Tone(440.0), &log, None);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    let info = rgb_info(8, 6);
    let t0 = gst::ClockTime::from_seconds(2);
    push_cfr(&mut r.h, &info, 0..250, (25, 1), t0, |i| i as u8);
    assert!(r.h.push_event(gst::event::Eos::new()));
    let buffers = drain(&mut r.h);
    let samples = check_output(&buffers, 16000, t0);
    assert_eq!(samples.len(), 160_000);
    let caps = output_caps(&r.h);
    let s = caps.structure(0).unwrap();
    assert_eq!(s.get::<i32>("rate").unwrap(), 16000);
    assert_eq!(s.get::<i32>("channels").unwrap(), 1);
    assert_eq!(s.get::<&str>("format").unwrap(), "F32LE");
    // Default geometry 8 s / 1 s: the tone is continuous outside the crossfade and
    // tone · (cos + sin) inside.
    let want = expected_tone(440.0, 2.0, 16000, 128_000, 16_000, 160_000);
    assert_close(&samples, &want, 1e-4);
    let seen = log.lock().unwrap();
    let d: Vec<f64> = seen.iter().map(|s| s.duration).collect();
    assert_eq!(d, vec![8.0, 3.0]);
    assert_eq!(seen[0].frames.len(), 200);
    assert_eq!(seen[1].frames.len(), 75);
    assert_eq!(seen[1].frames[0].3[0], 175);
    assert_eq!((seen[0].seed, seen[1].seed), (42, 43));
}

#[test]
fn ntsc_4004ms_gives_64064_samples() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Tone(220.0), &log, None);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=30000/1001",
    );
    push_cfr(
        &mut r.h,
        &rgb_info(8, 6),
        0..120,
        (30000, 1001),
        gst::ClockTime::ZERO,
        |_| 1,
    );
    r.h.push_event(gst::event::Eos::new());
    let samples = check_output(&drain(&mut r.h), 16000, gst::ClockTime::ZERO);
    assert_eq!(samples.len(), 64_064);
    let want = expected_tone(220.0, 0.0, 16000, 128_000, 16_000, 64_064);
    assert_close(&samples, &want, 1e-4);
}

#[test]
fn variable_frame_rate_at_44k() {
    let log = new_log();
    let element = element_with(44100, Behaviour::Tone(330.0), &log, None);
    element.set_property("window-duration", 3000u32);
    element.set_property("overlap", 700u32);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=0/1",
    );
    let info = rgb_info(8, 6);
    let t0 = 500 * MS;
    let mut pts = t0;
    let mut x = 7u64;
    for i in 0..150 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let step = gst::ClockTime::from_mseconds(15 + (x >> 40) % 70);
        // Every third buffer has no duration; the last one says 50 ms.
        let dur = if i == 149 {
            Some(50 * MS)
        } else if i % 3 == 0 {
            None
        } else {
            Some(step)
        };
        r.h.push(rgb_buffer(&info, |_, _, _| 3, 0, pts, dur))
            .unwrap();
        if i < 149 {
            pts += step;
        }
    }
    r.h.push_event(gst::event::Eos::new());
    let samples = check_output(&drain(&mut r.h), 44100, t0);
    let total = ((pts + 50 * MS - t0).nseconds() as u128 * 44100 + 500_000_000) / 1_000_000_000;
    assert_eq!(samples.len() as u128, total);
    let want = expected_tone(330.0, 0.5, 44100, 132_300, 30_870, total as u64);
    assert_close(&samples, &want, 1e-4);
    assert_eq!(
        output_caps(&r.h)
            .structure(0)
            .unwrap()
            .get::<i32>("rate")
            .unwrap(),
        44100
    );
}

#[test]
fn eos_mid_window_generates_the_true_short_window() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.5), &log, None);
    element.set_property("window-duration", 2000u32);
    element.set_property("overlap", 500u32);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    // 83 frames = 3.32 s: window 0 [0, 2 s) is planned during the stream, window 1
    // [1.5 s, 3.32 s) only at EOS, at its true duration of 1.82 s.
    push_cfr(
        &mut r.h,
        &rgb_info(8, 6),
        0..83,
        (25, 1),
        gst::ClockTime::ZERO,
        |_| 0,
    );
    let first = r.h.pull().unwrap();
    assert_eq!(log.lock().unwrap().len(), 1);
    r.h.push_event(gst::event::Eos::new());
    let mut buffers = vec![first];
    buffers.extend(drain(&mut r.h));
    let samples = check_output(&buffers, 16000, gst::ClockTime::ZERO);
    assert_eq!(samples.len(), 53_120);
    let seen = log.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(
        (seen[1].duration - 1.82).abs() < 1e-9,
        "{}",
        seen[1].duration
    );
    assert!((seen[1].start - 1.5).abs() < 1e-9);
    // Constant 0.5 in both windows: the crossfade gives 0.5 · (cos + sin) ≥ 0.5.
    assert!(
        samples
            .iter()
            .all(|&s| (0.5 - 1e-6..=0.5 * 1.4143).contains(&s))
    );
}

#[test]
fn sample_counts_for_several_lengths() {
    for n in [1u64, 5, 16, 37, 50, 51, 200] {
        let log = new_log();
        let element = element_with(16000, Behaviour::Constant(0.1), &log, None);
        element.set_property("window-duration", 2000u32);
        element.set_property("overlap", 500u32);
        let mut r = start(
            element,
            "video/x-raw,format=RGB,width=4,height=4,framerate=25/1",
        );
        let t0 = gst::ClockTime::from_mseconds(1234);
        push_cfr(&mut r.h, &rgb_info(4, 4), 0..n, (25, 1), t0, |_| 0);
        r.h.push_event(gst::event::Eos::new());
        let samples = check_output(&drain(&mut r.h), 16000, t0);
        assert_eq!(samples.len() as u64, n * 640, "{n} frames");
        // Windows shorter than 0.64 s are generated at 0.64 s and trimmed.
        let seen = log.lock().unwrap();
        assert!(
            seen.iter().all(|s| s.duration >= 0.64 - 1e-12),
            "{n} frames"
        );
    }
}

#[test]
fn flush_cancels_generation_and_drops_stale_audio() {
    let log = new_log();
    let (tx, rx) = mpsc::channel();
    let element = element_with(
        16000,
        Behaviour::BlockUntilCancel {
            first_only: true,
            started: Arc::new(Mutex::new(tx)),
        },
        &log,
        None,
    );
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 200u32);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    let info = rgb_info(8, 6);
    // Stream 1 (value 10): window 0 starts generating and blocks; frames 25..40 wait.
    push_cfr(
        &mut r.h,
        &info,
        0..40,
        (25, 1),
        gst::ClockTime::ZERO,
        |_| 10,
    );
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 0);

    let t = Instant::now();
    assert!(r.h.push_event(gst::event::FlushStart::new()));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "flush took {:?}",
        t.elapsed()
    );
    assert!(r.h.push_event(gst::event::FlushStop::new(true)));
    let mut types = Vec::new();
    while let Some(ev) = r.h.try_pull_event() {
        types.push(ev.type_());
    }
    assert!(types.contains(&gst::EventType::FlushStart), "{types:?}");
    assert!(types.contains(&gst::EventType::FlushStop), "{types:?}");

    // Stream 2 after a seek to 5 s (value 200).
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_start(gst::ClockTime::from_seconds(5));
    segment.set_time(gst::ClockTime::from_seconds(5));
    assert!(r.h.push_event(gst::event::Segment::new(&segment)));
    let t0 = gst::ClockTime::from_seconds(5);
    push_cfr(&mut r.h, &info, 0..50, (25, 1), t0, |_| 200);
    r.h.push_event(gst::event::Eos::new());
    let buffers = drain(&mut r.h);
    let samples = check_output(&buffers, 16000, t0);
    assert_eq!(samples.len(), 32_000);
    let v = 200.0 / 255.0;
    assert!(
        samples
            .iter()
            .all(|&s| (s - v).abs() < 1e-6 || (s > v && s < v * 1.4143)),
        "stale audio after flush"
    );
    assert!(messages(&r.bus, gst::MessageType::Error).is_empty());
}

#[test]
fn state_change_to_null_cancels_a_running_window() {
    let log = new_log();
    let (tx, rx) = mpsc::channel();
    let element = element_with(
        16000,
        Behaviour::BlockUntilCancel {
            first_only: false,
            started: Arc::new(Mutex::new(tx)),
        },
        &log,
        None,
    );
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 0u32);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    push_cfr(
        &mut r.h,
        &rgb_info(8, 6),
        0..30,
        (25, 1),
        gst::ClockTime::ZERO,
        |_| 0,
    );
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let t = Instant::now();
    assert!(r.element.set_state(gst::State::Null).is_ok());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn caps_change_mid_stream_keeps_the_stream_continuous() {
    let log = new_log();
    let element = element_with(16000, Behaviour::FirstPixel, &log, None);
    element.set_property("window-duration", 2000u32);
    element.set_property("overlap", 500u32);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    push_cfr(
        &mut r.h,
        &rgb_info(8, 6),
        0..50,
        (25, 1),
        gst::ClockTime::ZERO,
        |_| 1,
    );
    let caps: gst::Caps = "video/x-raw,format=RGB,width=16,height=12,framerate=25/1"
        .parse()
        .unwrap();
    assert!(r.h.push_event(gst::event::Caps::new(&caps)));
    push_cfr(
        &mut r.h,
        &rgb_info(16, 12),
        50..100,
        (25, 1),
        gst::ClockTime::ZERO,
        |_| 2,
    );
    r.h.push_event(gst::event::Eos::new());
    let samples = check_output(&drain(&mut r.h), 16000, gst::ClockTime::ZERO);
    assert_eq!(samples.len(), 64_000);
    let seen = log.lock().unwrap();
    let mut sizes: Vec<(usize, usize)> = seen
        .iter()
        .flat_map(|s| s.frames.iter().map(|f| (f.1, f.2)))
        .collect();
    sizes.dedup();
    assert_eq!(sizes, vec![(8, 6), (16, 12)]);
    for s in seen.iter() {
        for f in &s.frames {
            assert_eq!(f.3.len(), f.1 * f.2 * 3);
        }
    }
}

/// Byte of frame `f` at (x, y, channel); `f` is recoverable from byte 0 (31 is odd).
fn pattern(f: u64, x: usize, y: usize, c: usize) -> u8 {
    ((f * 31) as usize + x * 7 + y * 13 + c * 3) as u8
}

#[test]
fn tiny_and_odd_frame_sizes_with_stride_padding() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.0), &log, None);
    element.set_property("window-duration", 640u32);
    element.set_property("overlap", 0u32);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=2,height=2,framerate=25/1",
    );
    let frame_ts = |i: u64| (cfr_ts(i, 25, 1), Some(40 * MS));
    // 2x2: stride 8 (2 bytes padding per row).
    let info = rgb_info(2, 2);
    assert_eq!(info.stride()[0], 8);
    for i in 0..25 {
        let (pts, dur) = frame_ts(i);
        r.h.push(rgb_buffer(
            &info,
            |x, y, c| pattern(i, x, y, c),
            0xEE,
            pts,
            dur,
        ))
        .unwrap();
    }
    // 17x9: stride 52 (one byte padding per row).
    let caps: gst::Caps = "video/x-raw,format=RGB,width=17,height=9,framerate=25/1"
        .parse()
        .unwrap();
    assert!(r.h.push_event(gst::event::Caps::new(&caps)));
    let info = rgb_info(17, 9);
    assert_eq!(info.stride()[0], 52);
    for i in 25..50 {
        let (pts, dur) = frame_ts(i);
        r.h.push(rgb_buffer(
            &info,
            |x, y, c| pattern(i, x, y, c),
            0xEE,
            pts,
            dur,
        ))
        .unwrap();
    }
    // 17x9 with a VideoMeta saying stride 64.
    for i in 50..75 {
        let (pts, dur) = frame_ts(i);
        let mut buf = gst::Buffer::with_size(64 * 9).unwrap();
        {
            let b = buf.get_mut().unwrap();
            b.set_pts(pts);
            b.set_duration(dur);
            {
                let mut map = b.map_writable().unwrap();
                map.fill(0xEE);
                for y in 0..9 {
                    for x in 0..17 * 3 {
                        map[y * 64 + x] = pattern(i, x / 3, y, x % 3);
                    }
                }
            }
            gst_video::VideoMeta::add_full(
                b,
                gst_video::VideoFrameFlags::empty(),
                gst_video::VideoFormat::Rgb,
                17,
                9,
                &[0],
                &[64],
            )
            .unwrap();
        }
        r.h.push(buf).unwrap();
    }
    r.h.push_event(gst::event::Eos::new());
    let samples = check_output(&drain(&mut r.h), 16000, gst::ClockTime::ZERO);
    assert_eq!(samples.len(), 75 * 640);
    let seen = log.lock().unwrap();
    let mut got = std::collections::BTreeSet::new();
    for s in seen.iter() {
        for (_, w, h, data) in &s.frames {
            let f = (data[0] as u64 * 223) % 256; // 31 · 223 ≡ 1 (mod 256)
            let want: Vec<u8> = (0..*h)
                .flat_map(|y| (0..*w * 3).map(move |x| pattern(f, x / 3, y, x % 3)))
                .collect();
            assert_eq!(data.len(), w * h * 3);
            assert_eq!(**data, want, "frame {f} ({w}x{h})");
            got.insert(f);
        }
    }
    assert_eq!(got, (0..75).collect());
}

#[test]
fn non_time_segment_is_an_error() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.0), &log, None);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    // (push_event of a sticky event reports whether it was stored, not the answer.)
    let segment = gst::FormattedSegment::<gst::format::Bytes>::new();
    r.h.push_event(gst::event::Segment::new(&segment));
    let msg = wait_message(&r.bus, gst::MessageType::Error, 5).expect("ERROR");
    let text = error_text(&msg);
    assert!(text.contains("TIME"), "{text}");
}

#[test]
fn gaps_are_covered_by_the_held_frame_and_leading_gaps_forwarded() {
    let log = new_log();
    let element = element_with(16000, Behaviour::FirstPixel, &log, None);
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 200u32);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    let info = rgb_info(8, 6);
    // Leading gap [0, 1 s): no video yet, forwarded as a GAP.
    let gap = gst::event::Gap::builder(gst::ClockTime::ZERO)
        .duration(gst::ClockTime::SECOND)
        .build();
    assert!(r.h.push_event(gap));
    let t0 = gst::ClockTime::SECOND;
    // Frames [1 s, 2 s), gap [2 s, 4 s), frames [4 s, 5 s).
    push_cfr(&mut r.h, &info, 0..25, (25, 1), t0, |_| 50);
    let gap = gst::event::Gap::builder(gst::ClockTime::from_seconds(2))
        .duration(gst::ClockTime::from_seconds(2))
        .build();
    assert!(r.h.push_event(gap));
    push_cfr(&mut r.h, &info, 75..100, (25, 1), t0, |_| 150);
    // A trailing GAP (other streams of a file run longer) does not lengthen the output.
    let gap = gst::event::Gap::builder(gst::ClockTime::from_seconds(5))
        .duration(gst::ClockTime::from_seconds(3))
        .build();
    assert!(r.h.push_event(gap));
    r.h.push_event(gst::event::Eos::new());
    let samples = check_output(&drain(&mut r.h), 16000, t0);
    assert_eq!(samples.len(), 64_000);
    let mut gaps = Vec::new();
    while let Some(ev) = r.h.try_pull_event() {
        if let gst::EventView::Gap(g) = ev.view() {
            gaps.push(g.get());
        }
    }
    // Only the leading gap is forwarded; the first frame adds the preroll GAP (no duration).
    assert_eq!(
        gaps,
        [
            (gst::ClockTime::ZERO, Some(gst::ClockTime::SECOND)),
            (t0, Some(gst::ClockTime::ZERO))
        ]
    );
    // Windows inside the gap see the held last frame (value 50) at pts 0.
    let seen = log.lock().unwrap();
    let inside: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.start >= 2.0 && s.start + s.duration <= 4.0)
        .collect();
    assert!(!inside.is_empty());
    for s in inside {
        assert_eq!(s.frames.len(), 1, "window {}", s.index);
        assert_eq!(s.frames[0].0, 0.0);
        assert_eq!(s.frames[0].3[0], 50);
    }
}

#[test]
fn latency_query_and_latency_message() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.0), &log, None);
    element.set_property("processing-latency", 500u32);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    r.h.set_upstream_latency(100 * MS);
    // upstream + window + one frame (25 fps) + processing budget
    assert_eq!(r.h.query_latency(), Some((100 + 8000 + 40 + 500) * MS));
    while r.bus.pop_filtered(&[gst::MessageType::Latency]).is_some() {}
    r.element.set_property("processing-latency", 700u32);
    assert!(wait_message(&r.bus, gst::MessageType::Latency, 2).is_some());
    assert_eq!(r.h.query_latency(), Some((100 + 8000 + 40 + 700) * MS));
    // A frame rate change changes the latency too.
    let caps: gst::Caps = "video/x-raw,format=RGB,width=8,height=6,framerate=10/1"
        .parse()
        .unwrap();
    assert!(r.h.push_event(gst::event::Caps::new(&caps)));
    assert!(wait_message(&r.bus, gst::MessageType::Latency, 2).is_some());
    assert_eq!(r.h.query_latency(), Some((100 + 8000 + 100 + 700) * MS));
}

#[test]
fn late_windows_post_warnings() {
    for live in [false, true] {
        let log = new_log();
        let element = element_with(
            16000,
            Behaviour::Sleep(Duration::from_millis(300)),
            &log,
            None,
        );
        element.set_property("processing-latency", 100u32);
        element.set_property("window-duration", 1000u32);
        element.set_property("overlap", 200u32);
        let mut r = start(
            element,
            "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
        );
        r.h.set_live(live);
        assert!(r.h.query_latency().is_some());
        push_cfr(
            &mut r.h,
            &rgb_info(8, 6),
            0..50,
            (25, 1),
            gst::ClockTime::ZERO,
            |_| 0,
        );
        r.h.push_event(gst::event::Eos::new());
        let samples = check_output(&drain(&mut r.h), 16000, gst::ClockTime::ZERO);
        assert_eq!(samples.len(), 32_000);
        assert_eq!(log.lock().unwrap().len(), 3);
        let warnings = messages(&r.bus, gst::MessageType::Warning);
        // Live: every late window; otherwise once.
        assert_eq!(warnings.len(), if live { 3 } else { 1 }, "live {live}");
        let text = error_text(&warnings[0]);
        assert!(text.contains("processing-latency"), "{text}");
    }
}

#[test]
fn missing_model_dir_posts_an_error_naming_it() {
    init();
    let element = gst::ElementFactory::make("mmaudiogen")
        .property("model-dir", "/nonexistent/mmaudio-test-models")
        .property_from_str("variant", "small-16k")
        .build()
        .unwrap();
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    let res = r.h.push(rgb_buffer(
        &rgb_info(8, 6),
        |_, _, _| 0,
        0,
        gst::ClockTime::ZERO,
        Some(40 * MS),
    ));
    assert_eq!(res, Err(gst::FlowError::Error));
    let msgs = messages_until(&r.bus, gst::MessageType::Error, 5);
    let text = error_text(msgs.last().unwrap());
    assert!(text.contains("/nonexistent/mmaudio-test-models"), "{text}");
    let progress: Vec<gst::ProgressType> = msgs
        .iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Progress(p) => Some(p.get().0),
            _ => None,
        })
        .collect();
    assert_eq!(
        progress,
        vec![gst::ProgressType::Start, gst::ProgressType::Error]
    );
}

#[test]
fn default_loader_on_an_existing_dir_fails_loudly() {
    // Until the real loader is wired this says so; afterwards an empty folder lacks
    // every weight file. Either way: an ERROR naming the folder and a flow error.
    init();
    let dir = scratch_dir("empty-model-dir");
    let element = gst::ElementFactory::make("mmaudiogen")
        .property("model-dir", dir.to_str().unwrap())
        .build()
        .unwrap();
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    let res = r.h.push(rgb_buffer(
        &rgb_info(8, 6),
        |_, _, _| 0,
        0,
        gst::ClockTime::ZERO,
        None,
    ));
    assert_eq!(res, Err(gst::FlowError::Error));
    let text = error_text(&wait_message(&r.bus, gst::MessageType::Error, 5).expect("ERROR"));
    assert!(text.contains(dir.to_str().unwrap()), "{text}");
}

#[test]
fn corrupt_model_error_names_the_file_and_reason() {
    init();
    let element = gst::ElementFactory::make("mmaudiogen").build().unwrap();
    element
        .downcast_ref::<gstmmaudio::MMAudioGen>()
        .unwrap()
        .set_generator_factory(|_opts| {
            Err(mmaudio::Error::WeightFile {
                path: "/models/mmaudio_small_16k.pth".into(),
                reason: "truncated zip archive".into(),
            })
        });
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    let res = r.h.push(rgb_buffer(
        &rgb_info(8, 6),
        |_, _, _| 0,
        0,
        gst::ClockTime::ZERO,
        None,
    ));
    assert_eq!(res, Err(gst::FlowError::Error));
    let text = error_text(&wait_message(&r.bus, gst::MessageType::Error, 5).expect("ERROR"));
    assert!(text.contains("/models/mmaudio_small_16k.pth"), "{text}");
    assert!(text.contains("truncated zip archive"), "{text}");
}

#[test]
fn generator_failure_posts_an_error_and_stops_the_stream() {
    let log = new_log();
    let element = element_with(16000, Behaviour::FailAt(1), &log, None);
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 200u32);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    let info = rgb_info(8, 6);
    let mut failed = None;
    for i in 0..200u64 {
        let pts = cfr_ts(i, 25, 1);
        if let Err(e) =
            r.h.push(rgb_buffer(&info, |_, _, _| 0, 0, pts, Some(40 * MS)))
        {
            failed = Some(e);
            break;
        }
        if i == 60 {
            // Let the worker reach window 1.
            let _ = wait_message(&r.bus, gst::MessageType::Error, 5);
        }
    }
    assert_eq!(failed, Some(gst::FlowError::Error));
    let seen = log.lock().unwrap();
    assert_eq!(seen.last().unwrap().index, 1);
}

#[test]
fn generator_failure_message_names_the_window() {
    let log = new_log();
    let element = element_with(16000, Behaviour::FailAt(0), &log, None);
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 200u32);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    let info = rgb_info(8, 6);
    for i in 0..26 {
        // Frame 25 plans window 0; its failure may already show on that push.
        let res = r.h.push(rgb_buffer(
            &info,
            |_, _, _| 0,
            0,
            cfr_ts(i, 25, 1),
            Some(40 * MS),
        ));
        assert!(res.is_ok() || (i == 25 && res == Err(gst::FlowError::Error)));
    }
    let text = error_text(&wait_message(&r.bus, gst::MessageType::Error, 10).expect("ERROR"));
    assert!(
        text.contains("window 0") && text.contains("synthetic generator failure"),
        "{text}"
    );
}

#[test]
fn backpressure_bounds_windows_in_flight() {
    let log = new_log();
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let element = element_with(16000, Behaviour::Gate(gate.clone()), &log, None);
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 200u32);
    element.set_property("max-in-flight", 1u32);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    let pushed = Arc::new(AtomicUsize::new(0));
    let opener = {
        let (gate, pushed) = (gate.clone(), pushed.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            let at_open = pushed.load(Ordering::SeqCst);
            *gate.0.lock().unwrap() = true;
            gate.1.notify_all();
            at_open
        })
    };
    let info = rgb_info(8, 6);
    for i in 0..100u64 {
        pushed.store(i as usize + 1, Ordering::SeqCst);
        let pts = cfr_ts(i, 25, 1);
        r.h.push(rgb_buffer(&info, |_, _, _| 1, 0, pts, Some(40 * MS)))
            .unwrap();
    }
    // Window 0 is generating (blocked) from frame 25 on; frame 45 plans window 1, which
    // must wait: the 46th push blocks until the gate opens.
    assert_eq!(opener.join().unwrap(), 46);
    r.h.push_event(gst::event::Eos::new());
    let samples = check_output(&drain(&mut r.h), 16000, gst::ClockTime::ZERO);
    assert_eq!(samples.len(), 64_000);
}

#[test]
fn prompt_changes_apply_from_the_next_window_and_text_only_drops_frames() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.0), &log, None);
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 200u32);
    element.set_property("prompt", "wind");
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    let info = rgb_info(8, 6);
    push_cfr(&mut r.h, &info, 0..30, (25, 1), gst::ClockTime::ZERO, |_| 0);
    r.element.set_property("prompt", "rain");
    r.element.set_property("text-only", true);
    push_cfr(
        &mut r.h,
        &info,
        30..60,
        (25, 1),
        gst::ClockTime::ZERO,
        |_| 0,
    );
    r.h.push_event(gst::event::Eos::new());
    let samples = check_output(&drain(&mut r.h), 16000, gst::ClockTime::ZERO);
    assert_eq!(samples.len(), 38_400);
    let seen = log.lock().unwrap();
    let prompts: Vec<&str> = seen.iter().map(|s| s.prompt.as_str()).collect();
    assert_eq!(prompts, vec!["wind", "rain", "rain"]);
    assert_eq!(seen[0].frames.len(), 25);
    assert!(seen[1..].iter().all(|s| s.frames.is_empty()));
}

#[test]
fn new_segment_drains_and_restarts_the_stream() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.2), &log, None);
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 200u32);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    let info = rgb_info(8, 6);
    push_cfr(&mut r.h, &info, 0..50, (25, 1), gst::ClockTime::ZERO, |_| 0);
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_start(gst::ClockTime::from_seconds(10));
    segment.set_time(gst::ClockTime::from_seconds(10));
    assert!(r.h.push_event(gst::event::Segment::new(&segment)));
    let t1 = gst::ClockTime::from_seconds(10);
    push_cfr(&mut r.h, &info, 0..25, (25, 1), t1, |_| 0);
    r.h.push_event(gst::event::Eos::new());
    let buffers = drain(&mut r.h);
    let split = buffers
        .iter()
        .position(|b| b.pts().unwrap() >= t1)
        .expect("second stream");
    let first = check_output(&buffers[..split], 16000, gst::ClockTime::ZERO);
    assert_eq!(first.len(), 32_000);
    // The second stream restarts its sample count at its first frame, flagged DISCONT.
    assert!(buffers[split].flags().contains(gst::BufferFlags::DISCONT));
    let mut count = 0u64;
    for b in &buffers[split..] {
        assert_eq!(b.offset(), count);
        assert_eq!(
            b.pts().unwrap(),
            t1 + gst::ClockTime::from_nseconds(samples_to_ns(count, 16000))
        );
        count += b.size() as u64 / 4;
    }
    assert_eq!(count, 16_000);
}

#[test]
fn model_is_loaded_once_across_ready_and_reloaded_on_change() {
    let log = new_log();
    let loads = Arc::new(AtomicUsize::new(0));
    let element = element_with(16000, Behaviour::Constant(0.0), &log, Some(loads.clone()));
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    push_cfr(
        &mut r.h,
        &rgb_info(8, 6),
        0..5,
        (25, 1),
        gst::ClockTime::ZERO,
        |_| 0,
    );
    wait_loads(&loads, 1);
    let progress = messages_n(&r.bus, gst::MessageType::Progress, 2, 10);
    assert_eq!(progress.len(), 2, "start + complete");
    r.element.set_state(gst::State::Ready).unwrap();
    r.element.set_state(gst::State::Playing).unwrap();
    r.h.set_src_caps_str("video/x-raw,format=RGB,width=8,height=6,framerate=25/1");
    push_cfr(
        &mut r.h,
        &rgb_info(8, 6),
        0..5,
        (25, 1),
        gst::ClockTime::ZERO,
        |_| 0,
    );
    wait_loads(&loads, 1);
    r.element.set_state(gst::State::Ready).unwrap();
    r.element.set_property_from_str("variant", "small-44k");
    r.element.set_state(gst::State::Playing).unwrap();
    r.h.set_src_caps_str("video/x-raw,format=RGB,width=8,height=6,framerate=25/1");
    push_cfr(
        &mut r.h,
        &rgb_info(8, 6),
        0..5,
        (25, 1),
        gst::ClockTime::ZERO,
        |_| 0,
    );
    wait_loads(&loads, 2);
}

#[test]
fn invalid_overlap_fails_the_state_change() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.0), &log, None);
    element.set_property("window-duration", 2000u32);
    element.set_property("overlap", 1500u32);
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    assert!(element.set_state(gst::State::Paused).is_err());
    let text = error_text(&wait_message(&bus, gst::MessageType::Error, 2).expect("ERROR"));
    assert!(text.contains("at most half"), "{text}");
    let _ = element.set_state(gst::State::Null);
}

/// Non-live: the one WARNING says "further late windows are only logged", and that stays
/// true across a flushing seek (no second WARNING for the same run).
#[test]
fn late_window_warning_text_stays_true_across_a_seek() {
    let log = new_log();
    let element = element_with(
        16000,
        Behaviour::Sleep(Duration::from_millis(200)),
        &log,
        None,
    );
    element.set_property("processing-latency", 50u32);
    element.set_property("window-duration", 1000u32);
    element.set_property("overlap", 0u32);
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    let info = rgb_info(8, 6);
    push_cfr(&mut r.h, &info, 0..30, (25, 1), gst::ClockTime::ZERO, |_| 0);
    // wait until the first (late) window is out
    assert!(r.h.pull().is_ok());
    assert!(r.h.push_event(gst::event::FlushStart::new()));
    assert!(r.h.push_event(gst::event::FlushStop::new(true)));
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_start(gst::ClockTime::from_seconds(5));
    segment.set_time(gst::ClockTime::from_seconds(5));
    assert!(r.h.push_event(gst::event::Segment::new(&segment)));
    push_cfr(
        &mut r.h,
        &info,
        0..50,
        (25, 1),
        gst::ClockTime::from_seconds(5),
        |_| 0,
    );
    r.h.push_event(gst::event::Eos::new());
    drain(&mut r.h);
    assert!(log.lock().unwrap().len() >= 3);
    let warnings = messages(&r.bus, gst::MessageType::Warning);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        error_text(&warnings[0]).contains("further late windows are only logged"),
        "{}",
        error_text(&warnings[0])
    );
}

fn main_message(msg: &gst::Message) -> String {
    match msg.view() {
        gst::MessageView::Error(e) => e.error().to_string(),
        _ => panic!("not an error: {msg:?}"),
    }
}

/// Invalid property combinations put the reason in the ERROR's main message (what
/// `gst-launch-1.0` and most applications show), not only in the debug text.
#[test]
fn invalid_settings_error_has_the_reason_in_its_main_message() {
    let log = new_log();
    let element = element_with(16000, Behaviour::Constant(0.0), &log, None);
    element.set_property("window-duration", 2000u32);
    element.set_property("overlap", 1500u32);
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    assert!(element.set_state(gst::State::Paused).is_err());
    let text = main_message(&wait_message(&bus, gst::MessageType::Error, 2).expect("ERROR"));
    assert!(text.contains("at most half"), "{text}");
    let _ = element.set_state(gst::State::Null);
}

/// `variant` takes the official spelling (`small_16k`) as well as the element's
/// (`small-16k`), and defaults to `auto`.
#[test]
fn variant_property_takes_both_spellings_and_defaults_to_auto() {
    init();
    let element = gst::ElementFactory::make("mmaudiogen").build().unwrap();
    let nick = |e: &gst::Element| {
        let v = e.property_value("variant");
        gst::glib::EnumValue::from_value(&v)
            .unwrap()
            .1
            .nick()
            .to_string()
    };
    assert_eq!(nick(&element), "auto");
    for (spelling, want) in [
        ("small_16k", "small-16k"),
        ("small-16k", "small-16k"),
        ("large_44k_v2", "large-44k-v2"),
        ("medium-44k", "medium-44k"),
        ("auto", "auto"),
    ] {
        element.set_property_from_str("variant", spelling);
        assert_eq!(nick(&element), want, "{spelling}");
    }
}

/// The real loader on a tiny test model (a small_16k folder): the PROGRESS `complete`
/// message, an INFO message and the `mmaudiogen-model` element message say what was
/// loaded — variant, rate, device and precision as resolved from `auto` — and a variant
/// contradicting the folder's manifest is refused with the reason in the main message.
#[test]
fn load_messages_say_what_was_loaded() {
    init();
    let dir = scratch_dir("test-model-16k-load");
    mmaudio::test_model::write_test_model(&dir, mmaudio::Mode::Khz16, 2).unwrap();
    let element = gst::ElementFactory::make("mmaudiogen")
        .property("model-dir", dir.to_str().unwrap())
        .property("device", "auto")
        .build()
        .unwrap();
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    r.h.push(rgb_buffer(
        &rgb_info(8, 6),
        |_, _, _| 0,
        0,
        gst::ClockTime::ZERO,
        Some(40 * MS),
    ))
    .unwrap();
    let mut msgs = messages_until(&r.bus, gst::MessageType::Info, 30);
    let info_msg = msgs.last().unwrap().clone();
    // the element message follows the INFO
    msgs.extend(messages_n(&r.bus, gst::MessageType::Element, 1, 5));
    let progress: Vec<(gst::ProgressType, String)> = msgs
        .iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Progress(p) => Some((p.get().0, p.get().2.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(progress.len(), 2, "{progress:?}");
    assert!(
        progress[0].1.contains("Loading MMAudio auto"),
        "{progress:?}"
    );
    let want = "MMAudio small_16k (tiny random test model: noise), 16000 Hz, on cpu in f32";
    assert!(progress[1].1.contains(want), "{progress:?}");
    let gst::MessageView::Info(info) = info_msg.view() else {
        unreachable!()
    };
    assert!(info.error().to_string().contains(want), "{}", info.error());
    let model = msgs
        .iter()
        .find_map(|m| match m.view() {
            gst::MessageView::Element(e)
                if e.structure()
                    .is_some_and(|s| s.name() == "mmaudiogen-model") =>
            {
                e.structure().map(|s| s.to_owned())
            }
            _ => None,
        })
        .expect("mmaudiogen-model message");
    assert_eq!(model.get::<String>("variant").unwrap(), "small_16k");
    assert_eq!(model.get::<u32>("rate").unwrap(), 16000);
    assert_eq!(model.get::<String>("device").unwrap(), "cpu");
    assert_eq!(model.get::<String>("precision").unwrap(), "f32");
    drop(r);

    // asking for another variant than the folder holds is refused, saying why
    let element = gst::ElementFactory::make("mmaudiogen")
        .property("model-dir", dir.to_str().unwrap())
        .property_from_str("variant", "small_44k")
        .build()
        .unwrap();
    let mut r = start(
        element,
        "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
    );
    let res = r.h.push(rgb_buffer(
        &rgb_info(8, 6),
        |_, _, _| 0,
        0,
        gst::ClockTime::ZERO,
        Some(40 * MS),
    ));
    assert_eq!(res, Err(gst::FlowError::Error));
    let msgs = messages_until(&r.bus, gst::MessageType::Error, 30);
    let text = main_message(msgs.last().unwrap());
    assert!(
        text.contains("holds small_16k") && text.contains("not the requested small_44k"),
        "{text}"
    );
}

/// Every generation property reaches the generator with the value set (and the defaults
/// when nothing is set): prompt, negative-prompt, num-steps, cfg-strength, seed (+ window
/// index), mask-away-clip, text-only (no frames), window-duration and overlap (window
/// starts and lengths).
#[test]
fn every_generation_property_reaches_the_generator() {
    use mmaudio::request::GenerationParams;
    // (properties set, expected params, text-only, window s, overlap s)
    let custom = GenerationParams {
        prompt: "rain on a tin roof".into(),
        negative_prompt: "music, speech".into(),
        num_steps: 7,
        cfg_strength: 2.25,
        seed: 1234,
        mask_away_clip: true,
    };
    let cases: [(bool, GenerationParams, bool, f64, f64); 3] = [
        (false, GenerationParams::default(), false, 8.0, 1.0),
        (true, custom.clone(), false, 2.0, 0.5),
        (
            true,
            GenerationParams {
                mask_away_clip: false,
                ..custom
            },
            true,
            1.5,
            0.25,
        ),
    ];
    for (set, want, text_only, window_s, overlap_s) in cases {
        let log = new_log();
        let element = element_with(16000, Behaviour::Constant(0.1), &log, None);
        if set {
            element.set_property("prompt", want.prompt.as_str());
            element.set_property("negative-prompt", want.negative_prompt.as_str());
            element.set_property("num-steps", want.num_steps as u32);
            element.set_property("cfg-strength", want.cfg_strength);
            element.set_property("seed", want.seed);
            element.set_property("mask-away-clip", want.mask_away_clip);
            element.set_property("text-only", text_only);
            element.set_property("window-duration", (window_s * 1000.0) as u32);
            element.set_property("overlap", (overlap_s * 1000.0) as u32);
        }
        let mut r = start(
            element,
            "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
        );
        // 10 s of video: several windows whatever the geometry
        push_cfr(
            &mut r.h,
            &rgb_info(8, 6),
            0..250,
            (25, 1),
            gst::ClockTime::ZERO,
            |i| i as u8,
        );
        r.h.push_event(gst::event::Eos::new());
        let samples = check_output(&drain(&mut r.h), 16000, gst::ClockTime::ZERO);
        assert_eq!(samples.len(), 160_000);
        let seen = log.lock().unwrap();
        let hop = window_s - overlap_s;
        let windows = ((10.0 - window_s) / hop).ceil() as usize + 1;
        assert_eq!(
            seen.len(),
            windows,
            "windows for {window_s} s / {overlap_s} s"
        );
        for (k, s) in seen.iter().enumerate() {
            let expect = GenerationParams {
                seed: want.seed + k as u64,
                ..want.clone()
            };
            assert_eq!(
                s.params, expect,
                "window {k} ({window_s} s / {overlap_s} s)"
            );
            assert!(
                (s.start - k as f64 * hop).abs() < 1e-9,
                "window {k} start {}",
                s.start
            );
            if k + 1 < windows {
                assert!((s.duration - window_s).abs() < 1e-9, "window {k} duration");
            }
            assert_eq!(
                s.frames.is_empty(),
                text_only,
                "window {k}: text-only {text_only} but {} frames",
                s.frames.len()
            );
        }
    }
}

/// The LATENCY answer: live flag passed through from upstream, min = upstream min + window +
/// one frame + processing budget, max = upstream max + the same + one hop per window that
/// may be in flight (NONE stays NONE).
#[test]
fn latency_query_reports_min_max_and_live() {
    for (live, upstream_max) in [
        (false, None),
        (true, Some(300 * MS)),
        (false, Some(2 * gst::ClockTime::SECOND)),
    ] {
        let log = new_log();
        let element = element_with(16000, Behaviour::Constant(0.0), &log, None);
        element.set_property("processing-latency", 500u32);
        element.set_property("window-duration", 4000u32);
        element.set_property("overlap", 1000u32);
        element.set_property("max-in-flight", 3u32);
        let sinkpad = element.static_pad("sink").unwrap();
        let r = start(
            element,
            "video/x-raw,format=RGB,width=8,height=6,framerate=25/1",
        );
        // upstream's answer, as a live or non-live source with a known or unknown maximum
        sinkpad.add_probe(
            gst::PadProbeType::QUERY_UPSTREAM | gst::PadProbeType::PULL,
            move |_, info| {
                if let Some(gst::PadProbeData::Query(q)) = info.data.as_mut()
                    && let gst::QueryViewMut::Latency(l) = q.view_mut()
                {
                    l.set(live, 100 * MS, upstream_max);
                }
                gst::PadProbeReturn::Ok
            },
        );
        let mut q = gst::query::Latency::new();
        assert!(
            r.h.sinkpad().unwrap().peer_query(&mut q),
            "LATENCY query answered"
        );
        let (got_live, min, max) = q.result();
        assert_eq!(got_live, live);
        // 100 upstream + 4000 window + 40 (one 25 fps frame) + 500 processing
        assert_eq!(min, (100 + 4000 + 40 + 500) * MS);
        // + 3 windows in flight × 3000 ms hop
        let own_max = (4000 + 40 + 500 + 3 * 3000) * MS;
        assert_eq!(max, upstream_max.map(|m| m + own_max), "live {live}");
    }
}
