//! One model per process (issue 14 point 1): two pipelines in one process with the same
//! model folder load it once, the second element shares it (PROGRESS and the
//! `mmaudiogen-model` message say so), their windows go through the one CPU worker, and
//! both outputs are complete and the same sample for sample; a flushing seek on one of them
//! cancels only its own windows. Runs on the tiny random test model.

mod common;

use common::{init, scratch_dir};
use gst::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one pipeline produced and said.
#[derive(Default, Debug)]
struct Run {
    samples: Vec<f32>,
    /// (pts, samples) of every buffer.
    buffers: Vec<(u64, usize)>,
    progress: Vec<String>,
    shared: Vec<bool>,
}

/// The tests of this file count loads and batches of the process: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn pipeline(dir: &std::path::Path, seconds: u32) -> (gst::Pipeline, Arc<Mutex<Run>>) {
    pipeline_with(dir, &format!("num-buffers={}", seconds * 25), 2)
}

/// `src` sets the length (`num-buffers=N`, or nothing for a seek to bound it); audio
/// collected before a FLUSH_STOP is forgotten.
fn pipeline_with(dir: &std::path::Path, src: &str, steps: u32) -> (gst::Pipeline, Arc<Mutex<Run>>) {
    let desc = format!(
        "videotestsrc {src} pattern=ball ! \
         video/x-raw,format=RGB,width=64,height=48,framerate=25/1 ! \
         mmaudiogen name=gen model-dir={} num-steps={steps} window-duration=2000 prompt=rain ! \
         fakesink",
        dir.display()
    );
    let p = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let run = Arc::new(Mutex::new(Run::default()));
    let src = p.by_name("gen").unwrap().static_pad("src").unwrap();
    let r = run.clone();
    src.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_FLUSH,
        move |_, info| {
            if let Some(gst::PadProbeData::Event(e)) = &info.data
                && e.type_() == gst::EventType::FlushStop
            {
                let mut r = r.lock().unwrap();
                r.samples.clear();
                r.buffers.clear();
            }
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                let map = b.map_readable().unwrap();
                let s: Vec<f32> = map
                    .chunks_exact(4)
                    .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
                    .collect();
                let mut r = r.lock().unwrap();
                r.buffers.push((b.pts().unwrap().nseconds(), s.len()));
                r.samples.extend(s);
            }
            gst::PadProbeReturn::Ok
        },
    );
    (p, run)
}

/// Run both pipelines to EOS at once, collecting their PROGRESS `complete` texts and
/// `mmaudiogen-model` messages.
fn run_together(pipes: &[(gst::Pipeline, Arc<Mutex<Run>>)]) {
    for (p, _) in pipes {
        p.set_state(gst::State::Playing).unwrap();
    }
    wait_eos(pipes, &mut |_, _| {});
}

/// Pump the buses until every pipeline posted EOS; `on` sees every other message.
fn wait_eos(pipes: &[(gst::Pipeline, Arc<Mutex<Run>>)], on: &mut dyn FnMut(usize, &gst::Message)) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut done = vec![false; pipes.len()];
    while done.iter().any(|d| !d) {
        assert!(Instant::now() < deadline, "pipelines did not finish");
        for (i, (p, run)) in pipes.iter().enumerate() {
            if done[i] {
                continue;
            }
            let bus = p.bus().unwrap();
            while let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(10)) {
                match msg.view() {
                    gst::MessageView::Eos(_) => {
                        done[i] = true;
                        break;
                    }
                    gst::MessageView::Error(e) => {
                        panic!("pipeline {i}: {} ({:?})", e.error(), e.debug())
                    }
                    gst::MessageView::Progress(pr) => {
                        let (kind, _, text) = pr.get();
                        if kind == gst::ProgressType::Complete {
                            run.lock().unwrap().progress.push(text.to_string());
                        }
                    }
                    gst::MessageView::Element(e) => {
                        if let Some(s) = e.structure()
                            && s.name() == "mmaudiogen-model"
                        {
                            run.lock().unwrap().shared.push(s.get("shared").unwrap());
                        }
                        on(i, &msg);
                    }
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn two_pipelines_load_once_and_both_outputs_are_sample_exact() {
    init();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch_dir("shared-model-16k");
    mmaudio::test_model::write_test_model(&dir, mmaudio::Mode::Khz16, 5).unwrap();
    let before = mmaudio::shared::loads();
    let pipes = [pipeline(&dir, 3), pipeline(&dir, 3)];
    run_together(&pipes);
    // the worker's counters while both elements still hold it
    let stats = mmaudio::batch::DeviceWorker::for_device("cpu")
        .unwrap()
        .stats();
    assert_eq!(mmaudio::shared::loads() - before, 1, "loaded once");
    let runs: Vec<std::sync::MutexGuard<Run>> = pipes.iter().map(|p| p.1.lock().unwrap()).collect();
    let texts: Vec<&String> = runs.iter().flat_map(|r| &r.progress).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.starts_with("Loaded MMAudio"))
            .count(),
        1,
        "{texts:?}"
    );
    let shared: Vec<&&String> = texts
        .iter()
        .filter(|t| t.starts_with("Shared MMAudio small_16k") && t.contains("already loaded"))
        .collect();
    assert_eq!(shared.len(), 1, "{texts:?}");
    let mut flags: Vec<bool> = runs.iter().flat_map(|r| r.shared.clone()).collect();
    flags.sort();
    assert_eq!(flags, vec![false, true]);
    // 3 s at 16 kHz on both, buffers at the same timestamps, the same samples
    for r in &runs {
        assert_eq!(r.samples.len(), 48_000);
        assert_eq!(r.buffers.first().map(|b| b.0), Some(0));
    }
    assert_eq!(runs[0].buffers, runs[1].buffers);
    let diff = runs[0]
        .samples
        .iter()
        .zip(&runs[1].samples)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("worker: {stats:?}; largest difference between the outputs {diff:e}");
    assert!(diff <= 1e-5, "outputs differ by {diff}");
    assert!(
        runs[0].samples.iter().any(|s| s.abs() > 1e-3),
        "not silence"
    );
    // every window of both streams went through the one worker
    assert!(stats.items >= 4, "{stats:?}");
    drop(runs);
    for (p, _) in &pipes {
        p.set_state(gst::State::Null).unwrap();
    }
    drop(pipes);
    assert_eq!(
        mmaudio::shared::models_alive(),
        0,
        "released with the last element"
    );
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// A stream of [0, 3 s) (segment stop), started in PAUSED.
fn start_3s(p: &gst::Pipeline) {
    p.set_state(gst::State::Paused).unwrap();
    assert_eq!(
        p.state(gst::ClockTime::from_seconds(60)).0,
        Ok(gst::StateChangeSuccess::Success)
    );
    seek_3s(p);
}

fn seek_3s(p: &gst::Pipeline) {
    assert!(
        p.seek(
            1.0,
            gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
            gst::SeekType::Set,
            gst::ClockTime::ZERO,
            gst::SeekType::Set,
            gst::ClockTime::from_seconds(3),
        )
        .is_ok()
    );
}

/// Two pipelines share the model and its worker; a flushing seek on the first while its
/// window is in the sampler cancels only its own windows: the second's output is what it
/// gives alone, and the first, after the seek, also gives the whole stream again.
#[test]
fn a_flushing_seek_on_one_stream_leaves_the_other_intact() {
    init();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch_dir("shared-model-flush-16k");
    mmaudio::test_model::write_test_model(&dir, mmaudio::Mode::Khz16, 6).unwrap();
    // enough steps that the seek lands while a window is being sampled
    let steps = 60;
    let alone = [pipeline_with(&dir, "", steps)];
    start_3s(&alone[0].0);
    alone[0].0.set_state(gst::State::Playing).unwrap();
    wait_eos(&alone, &mut |_, _| {});
    alone[0].0.set_state(gst::State::Null).unwrap();
    let reference = alone[0].1.lock().unwrap().samples.clone();
    assert_eq!(reference.len(), 48_000);

    let pipes = [
        pipeline_with(&dir, "", steps),
        pipeline_with(&dir, "", steps),
    ];
    for (p, _) in &pipes {
        start_3s(p);
    }
    // what the prerolls before the seeks said is stale
    for (p, _) in &pipes {
        let bus = p.bus().unwrap();
        while bus.pop().is_some() {}
    }
    for (p, _) in &pipes {
        p.set_state(gst::State::Playing).unwrap();
    }
    let seeked = AtomicBool::new(false);
    let first = pipes[0].0.clone();
    wait_eos(&pipes, &mut |i, msg| {
        // the first sampler step of the first pipeline's first window: seek it
        if let gst::MessageView::Element(e) = msg.view()
            && let Some(s) = e.structure()
            && i == 0
            && s.name() == "mmaudiogen-progress"
            && s.get::<&str>("stage").ok() == Some("sampling")
            && !seeked.swap(true, Ordering::SeqCst)
        {
            seek_3s(&first);
        }
    });
    assert!(
        seeked.load(Ordering::SeqCst),
        "no progress message to seek on"
    );
    let stats = mmaudio::batch::DeviceWorker::for_device("cpu")
        .unwrap()
        .stats();
    let (a, b) = (pipes[0].1.lock().unwrap(), pipes[1].1.lock().unwrap());
    eprintln!(
        "worker: {stats:?}; after the seek the first differs by {:e}, the second by {:e}",
        max_diff(&a.samples, &reference),
        max_diff(&b.samples, &reference)
    );
    assert_eq!(b.samples.len(), 48_000);
    assert!(max_diff(&b.samples, &reference) <= 1e-5);
    assert_eq!(a.samples.len(), 48_000, "the seeked stream is whole again");
    assert!(max_diff(&a.samples, &reference) <= 1e-5);
    drop((a, b));
    for (p, _) in &pipes {
        p.set_state(gst::State::Null).unwrap();
    }
}
