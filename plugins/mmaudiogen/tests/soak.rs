//! The CI version of the soak (`scripts/soak.sh` runs an hour): minutes of 25 fps video
//! through `mmaudiogen` with the real generator on the tiny test model (1 step), as fast as
//! it goes, the process's RSS sampled at every window; after a warm-up the RSS must stay
//! flat within a bound. Every sample of the output is counted too.

// `mmaudio::Error` (returned by the generator closures) is large by design.
#![allow(clippy::result_large_err)]

mod common;

use common::*;
use gst::prelude::*;
use std::sync::{Arc, Mutex};

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Video minutes (`MMAUDIO_SOAK_MINUTES`, default 3).
#[test]
fn soak_short() {
    let minutes: u64 = std::env::var("MMAUDIO_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    init();
    let model = scratch_dir("soak-model");
    mmaudio::test_model::write_test_model(&model, mmaudio::Mode::Khz16, 1).unwrap();
    let frames = minutes * 60 * 25;
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! \
         video/x-raw,width=64,height=48,framerate=25/1 ! videoconvert ! \
         mmaudiogen name=gen variant=small-16k num-steps=1 processing-latency=600000 ! \
         fakesink name=sink sync=false"
    ))
    .unwrap();
    let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
    let generator = bin.by_name("gen").unwrap();
    generator.set_property("model-dir", model.to_str().unwrap());
    let samples = Arc::new(Mutex::new(0u64));
    let s = samples.clone();
    bin.by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                *s.lock().unwrap() += b.size() as u64 / 4;
            }
            gst::PadProbeReturn::Ok
        })
        .unwrap();
    // RSS at each window, read on the thread that posts the message (right after the
    // window was generated, so every sample is taken at the same point of the cycle).
    let rss: Arc<Mutex<Vec<u64>>> = Arc::default();
    let r = rss.clone();
    let bus = pipeline.bus().unwrap();
    bus.set_sync_handler(move |_, msg| {
        if let gst::MessageView::Element(e) = msg.view()
            && e.structure()
                .is_some_and(|s| s.name() == "mmaudiogen-window")
        {
            r.lock().unwrap().push(rss_kb());
        }
        gst::BusSyncReply::Pass
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60 * minutes.max(5) * 2),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS in time");
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
    assert_eq!(*samples.lock().unwrap(), minutes * 60 * 16000);

    let rss = rss.lock().unwrap();
    // Warm-up: the first minute of video (8 windows of 7 s); then the highest sample of the
    // second minute against the highest of the rest.
    // The stream's last window (at EOS, shorter) is left out: its tensors have new sizes,
    // which the allocator serves once from fresh pages (a one-off of tens of MB with the
    // tiny model, at the end of the stream; 6 minutes with it left out grew 0.9 MB).
    let n = rss.len();
    assert!(n >= 17, "{n} windows");
    let warm = rss[8..16].iter().max().unwrap();
    let rest = rss[16..n - 1].iter().max().unwrap_or(warm);
    let growth_mb = (*rest as f64 - *warm as f64) / 1024.0;
    println!(
        "soak: {minutes} min of video, {n} windows; RSS first {:.1} MB, after warm-up {:.1} MB, \
         max later {:.1} MB, growth {growth_mb:.1} MB",
        rss[0] as f64 / 1024.0,
        *warm as f64 / 1024.0,
        *rest as f64 / 1024.0
    );
    assert!(
        growth_mb <= 16.0,
        "RSS grew by {growth_mb:.1} MB after warm-up: {rss:?}"
    );
}
