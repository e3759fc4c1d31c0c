//! `batch-windows` (issue 14 point 2): in windows mode, with a non-live upstream, the
//! element generates several windows of the stream as one sampler batch; the audio is what
//! one window at a time gives (same sample count, timestamps, and samples within float
//! tolerance). Runs on the tiny random test model.

mod common;

use common::{init, scratch_dir};
use gst::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Samples, and (pts, samples) of every buffer.
type Audio = (Vec<f32>, Vec<(u64, usize)>);

/// The audio of a 5 s stream through mmaudiogen with `batch` windows per batch: samples and
/// (pts, samples) of every buffer.
fn run(dir: &std::path::Path, batch: u32) -> Audio {
    let desc = format!(
        "videotestsrc num-buffers=125 pattern=ball ! \
         video/x-raw,format=RGB,width=64,height=48,framerate=25/1 ! \
         mmaudiogen name=gen model-dir={} num-steps=2 window-duration=2000 overlap=500 \
         batch-windows={batch} prompt=rain ! fakesink",
        dir.display()
    );
    let p = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let out: Arc<Mutex<Audio>> = Default::default();
    let o = out.clone();
    p.by_name("gen")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                let map = b.map_readable().unwrap();
                let s: Vec<f32> = map
                    .chunks_exact(4)
                    .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
                    .collect();
                let mut o = o.lock().unwrap();
                o.1.push((b.pts().unwrap().nseconds(), s.len()));
                o.0.extend(s);
            }
            gst::PadProbeReturn::Ok
        });
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "no EOS");
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{} ({:?})", e.error(), e.debug()),
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    let o = out.lock().unwrap();
    (o.0.clone(), o.1.clone())
}

#[test]
fn batched_windows_give_the_audio_of_one_at_a_time() {
    init();
    let dir = scratch_dir("batch-windows-16k");
    mmaudio::test_model::write_test_model(&dir, mmaudio::Mode::Khz16, 9).unwrap();
    let (one, one_buffers) = run(&dir, 1);
    // hold the process's CPU worker across the runs: its counters cover the batched one
    let worker = mmaudio::batch::DeviceWorker::for_device("cpu").unwrap();
    let before = worker.stats();
    let (batched, batched_buffers) = run(&dir, 3);
    let stats = worker.stats();
    // 5 s, 2 s windows every 1.5 s: 3 windows, one batch of 3
    assert_eq!(one.len(), 80_000);
    assert_eq!(batched.len(), one.len());
    assert_eq!(batched_buffers, one_buffers);
    assert_eq!(stats.batches - before.batches, 1, "{before:?} -> {stats:?}");
    assert_eq!(stats.items - before.items, 3, "{before:?} -> {stats:?}");
    let diff = one
        .iter()
        .zip(&batched)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "batched windows differ by {diff}");
    assert!(one.iter().any(|s| s.abs() > 1e-3), "not silence");
}
