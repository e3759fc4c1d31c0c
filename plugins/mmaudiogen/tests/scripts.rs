//! The `pipelines/*.sh` scripts, run for real: each script prints its gst-launch-1.0
//! arguments (`MMAUDIO_DRY_RUN=argv`), which are parsed here exactly as gst-launch-1.0
//! does (`gst::parse::launchv`) and run in-process with a fake generator injected into
//! the element named `gen`.

// `mmaudio::Error` (returned by the generator closures) is large by design.
#![allow(clippy::result_large_err)]

mod common;

use common::*;
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

fn script_argv(script: &str, args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../pipelines")
        .join(script);
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .env("MMAUDIO_DRY_RUN", "argv")
        .env("MMAUDIO_MODEL_DIR", "/models/injected-by-the-test")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

/// Parse like gst-launch-1.0, inject the fake into `gen`, run to EOS. Returns the
/// pipeline (stopped) and the number of samples `gen` produced.
fn run_argv(argv: &[String], rate: u32, behaviour: Behaviour, log: &Log) -> (gst::Element, u64) {
    init();
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let pipeline = gst::parse::launchv(&args).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
    let generator = bin.by_name("gen").expect("element named gen");
    let log2 = log.clone();
    generator
        .downcast_ref::<gstmmaudio::MMAudioGen>()
        .unwrap()
        .set_generator_factory(move |opts| {
            assert_eq!(
                opts.model_dir,
                PathBuf::from("/models/injected-by-the-test")
            );
            Ok(Box::new(Fake::new(rate, behaviour.clone(), log2.clone())))
        });
    let samples = Arc::new(Mutex::new(0u64));
    let s = samples.clone();
    generator
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                *s.lock().unwrap() += b.size() as u64 / 4;
            }
            gst::PadProbeReturn::Ok
        });
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(120))
            .expect("EOS within 120 s");
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{argv:?}: {} {:?}", e.error(), e.debug()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let n = *samples.lock().unwrap();
    (pipeline, n)
}

/// Encode a 10 s 25 fps 64x48 video with a 10 s audio track.
fn make_input(name: &str, venc: &str, aenc: &str, mux: &str) -> PathBuf {
    init();
    let path = scratch_dir("scripts").join(name);
    let desc = format!(
        "videotestsrc num-buffers=250 ! video/x-raw,width=64,height=48,framerate=25/1 ! \
         {venc} ! {mux} name=mux ! filesink location={} \
         audiotestsrc num-buffers=1000 samplesperbuffer=480 ! \
         audio/x-raw,rate=48000,channels=1 ! {aenc} ! mux.",
        path.display()
    );
    run(&desc);
    path
}

fn run(desc: &str) -> gst::Element {
    let p = gst::parse::launch(desc).unwrap();
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(120))
            .expect("EOS within 120 s");
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{desc}: {} {:?}", e.error(), e.debug()),
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    p
}

/// The parsed video frames of a file.
fn video_frames(path: &Path, caps: &str) -> Vec<Vec<u8>> {
    let p = gst::parse::launch(&format!(
        "filesrc location={} ! parsebin ! {caps} ! fakesink name=sink",
        path.display()
    ))
    .unwrap();
    let frames = Arc::new(Mutex::new(Vec::new()));
    let f = frames.clone();
    let sink = p
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("sink")
        .unwrap();
    sink.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                f.lock().unwrap().push(b.map_readable().unwrap().to_vec());
            }
            gst::PadProbeReturn::Ok
        });
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let _ = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    p.set_state(gst::State::Null).unwrap();
    std::mem::take(&mut *frames.lock().unwrap())
}

/// Duration in seconds of the decoded audio of a file.
fn audio_seconds(path: &Path) -> f64 {
    let p = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! audioconvert ! \
         audio/x-raw,format=F32LE,channels=1 ! fakesink name=sink",
        path.display()
    ))
    .unwrap();
    let acc = Arc::new(Mutex::new((0u64, 0i32)));
    let a = acc.clone();
    let sink = p
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("sink")
        .unwrap();
    sink.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(b) = info.buffer() {
                let rate = pad
                    .current_caps()
                    .and_then(|c| c.structure(0).unwrap().get::<i32>("rate").ok())
                    .unwrap();
                let mut a = a.lock().unwrap();
                a.0 += b.size() as u64 / 4;
                a.1 = rate;
            }
            gst::PadProbeReturn::Ok
        });
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let _ = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    p.set_state(gst::State::Null).unwrap();
    let (n, rate) = *acc.lock().unwrap();
    n as f64 / rate as f64
}

#[test]
fn resoundtrack_script_keeps_the_video_and_replaces_the_audio() {
    for (name, venc, aenc, mux, out_ext, video_caps) in [
        (
            "in.mp4",
            "x264enc ! h264parse",
            "avenc_aac",
            "mp4mux",
            "mp4",
            "video/x-h264",
        ),
        (
            "in.webm",
            "vp8enc deadline=1",
            "opusenc",
            "webmmux",
            "webm",
            "video/x-vp8",
        ),
    ] {
        let input = make_input(name, venc, aenc, mux);
        let output = input.with_extension(format!("resoundtracked.{out_ext}"));
        let _ = std::fs::remove_file(&output);
        let argv = script_argv(
            "resoundtrack.sh",
            &[input.to_str().unwrap(), output.to_str().unwrap()],
            &[("MMAUDIO_PROMPT", "waves on a beach")],
        );
        let log = new_log();
        let (_, samples) = run_argv(&argv, 16000, Behaviour::Tone(300.0), &log);
        assert_eq!(samples, 160_000, "{name}");
        assert!(
            log.lock()
                .unwrap()
                .iter()
                .all(|s| s.prompt == "waves on a beach")
        );
        // The video bitstream is copied, not re-encoded: the same frames, except that
        // h264parse may put the SPS/PPS in-band in front of the first keyframe.
        let a = video_frames(&input, video_caps);
        let b = video_frames(&output, video_caps);
        assert_eq!((a.len(), b.len()), (250, 250), "{name}");
        assert!(
            b[0].ends_with(&a[0]) && b[0].len() - a[0].len() <= 64,
            "{name}"
        );
        assert!(a[1..] == b[1..], "{name}: video frames changed");
        // The new audio track lasts as long as the video (encoder padding aside).
        let secs = audio_seconds(&output);
        assert!((secs - 10.0).abs() < 0.05, "{name}: audio lasts {secs} s");
    }
}

#[test]
fn text_to_audio_script_generates_the_requested_duration() {
    let out = scratch_dir("scripts").join("text.wav");
    let argv = script_argv(
        "text-to-audio.sh",
        &["a dog barks twice", "3", out.to_str().unwrap()],
        &[],
    );
    let log = new_log();
    let (_, samples) = run_argv(&argv, 16000, Behaviour::Constant(0.3), &log);
    assert_eq!(samples, 48_000);
    assert_eq!(wav_info(&out).0, 48_000);
    let seen = log.lock().unwrap();
    assert!(
        seen.iter()
            .all(|s| s.frames.is_empty() && s.prompt == "a dog barks twice")
    );
}

#[test]
fn live_preview_script_runs_live_with_the_reported_latency() {
    let argv = script_argv(
        "live-preview.sh",
        &["--test"],
        &[
            ("NUM_BUFFERS", "50"),
            ("VIDEO_SINK", "fakesink sync=true"),
            ("AUDIO_SINK", "fakesink sync=true"),
            ("MMAUDIO_WINDOW_MS", "1000"),
            ("MMAUDIO_OVERLAP_MS", "200"),
            ("MMAUDIO_PROCESSING_LATENCY_MS", "300"),
        ],
    );
    let log = new_log();
    let started = std::time::Instant::now();
    let (pipeline, samples) = run_argv(&argv, 16000, Behaviour::Constant(0.1), &log);
    assert_eq!(samples, 32_000);
    // Live: 2 s of video + about 1.34 s of latency before the last audio is rendered.
    let took = started.elapsed().as_secs_f64();
    assert!(took > 3.0, "ran in {took} s: not synchronised?");
    drop(pipeline);
}

/// The S16 samples of a WAV file (interleaved) and its channel count.
fn wav_s16(path: &Path) -> (Vec<i16>, u16) {
    let (_, bits, channels, _) = wav_info(path);
    assert_eq!(bits, 16);
    let data = std::fs::read(path).unwrap();
    let at = data.windows(4).position(|w| w == b"data").unwrap() + 8;
    let samples = data[at..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    (samples, channels)
}

#[test]
fn mix_live_script_mixes_the_soundtrack_under_the_live_sound() {
    let out = scratch_dir("scripts").join("mix-live.wav");
    let argv = script_argv(
        "mix-live.sh",
        &["--test"],
        &[
            ("NUM_BUFFERS", "50"),
            ("VIDEO_SINK", "fakesink sync=true"),
            (
                "AUDIO_SINK",
                &format!(
                    "audio/x-raw,format=S16LE ! wavenc ! filesink location={}",
                    out.display()
                ),
            ),
            ("MMAUDIO_WINDOW_MS", "1000"),
            ("MMAUDIO_OVERLAP_MS", "200"),
            ("MMAUDIO_PROCESSING_LATENCY_MS", "300"),
            ("MMAUDIO_MIX_GAIN_DB", "-6"),
        ],
    );
    assert!(argv.iter().any(|a| a == "audiomixer"), "{argv:?}");
    let log = new_log();
    let (_, samples) = run_argv(&argv, 16000, Behaviour::Constant(0.2), &log);
    assert_eq!(samples, 32_000);
    let (x, channels) = wav_s16(&out);
    assert_eq!(channels, 2);
    // Live: the mix runs from the earlier of the two live starts to the later end, within a
    // few tens of ms of the 2 s both sources last.
    let frames = x.len() / 2;
    assert!(
        (94_000..=98_500).contains(&frames),
        "{frames} frames at 48 kHz, expected about 2 s"
    );
    // Middle second: the soundtrack (0.2 at −6 dB ≈ 0.1) is the mean, the live 440 Hz sine
    // (amplitude 0.5) the rest.
    let mid: Vec<f64> = x[48_000..144_000]
        .iter()
        .map(|&v| v as f64 / 32768.0)
        .collect();
    let mean = mid.iter().sum::<f64>() / mid.len() as f64;
    let rms = (mid.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / mid.len() as f64).sqrt();
    assert!(
        (mean - 0.2 * 0.501).abs() < 0.01,
        "mean {mean}: soundtrack not mixed in"
    );
    assert!(
        (rms - 0.5 / 2f64.sqrt()).abs() < 0.03,
        "rms {rms}: live sound not mixed in"
    );
}

fn script_path(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../pipelines")
        .join(script)
}

/// `--help` prints the usage on stdout and succeeds; missing (or too many) arguments print
/// it on stderr and fail with 2. Either way only the header text: no shebang, no shell.
#[test]
fn every_script_prints_its_usage_for_help_and_missing_arguments() {
    let mut scripts: Vec<String> = std::fs::read_dir(script_path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sh") && n != "common.sh")
        .collect();
    scripts.sort();
    assert_eq!(
        scripts,
        [
            "live-preview.sh",
            "mix-live.sh",
            "resoundtrack.sh",
            "text-to-audio.sh"
        ]
    );
    let clean = |script: &str, text: &str| {
        assert!(
            text.contains(&format!("Usage: {script}")),
            "{script}: no usage in\n{text}"
        );
        for bad in ["#!", "source ", "$(", "BASH_SOURCE", "sed -n", "set -"] {
            assert!(!text.contains(bad), "{script}: stray {bad:?} in\n{text}");
        }
    };
    for script in &scripts {
        for flag in ["--help", "-h"] {
            let out = Command::new("bash")
                .arg(script_path(script))
                .arg(flag)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{script} {flag}");
            clean(script, &String::from_utf8_lossy(&out.stdout));
        }
        // live-preview takes at most one argument, mix-live two, the others need two or
        // three
        let bad_args: &[&str] = match script.as_str() {
            "live-preview.sh" => &["a", "b"],
            "mix-live.sh" => &["a", "b", "c"],
            _ => &[],
        };
        let out = Command::new("bash")
            .arg(script_path(script))
            .args(bad_args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{script} {bad_args:?}");
        assert!(out.stdout.is_empty());
        clean(script, &String::from_utf8_lossy(&out.stderr));
    }
}

/// A pipeline GStreamer cannot build ends with a sentence that says what to do, after
/// gst-launch-1.0's own line: here the plugin is not on GST_PLUGIN_PATH.
#[test]
fn scripts_turn_link_errors_into_a_sentence() {
    let empty = scratch_dir("no-plugins");
    let out = Command::new("bash")
        .arg(script_path("text-to-audio.sh"))
        .args(["rain", "1", empty.join("x.wav").to_str().unwrap()])
        .env("GST_PLUGIN_PATH", &empty)
        .env("GST_REGISTRY", empty.join("registry.bin"))
        .env("MMAUDIO_MODEL_DIR", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no element \"mmaudiogen\""), "{err}");
    assert!(
        err.contains("mmaudiogen was not found: build the plugin")
            && err.contains("GST_PLUGIN_PATH"),
        "{err}"
    );
    // an element that exists but cannot take the other's output: named in the sentence
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; launch videotestsrc num-buffers=1 ! audioconvert ! fakesink",
            script_path("common.sh").display()
        ))
        .env("MMAUDIO_MODEL_DIR", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("could not connect videotestsrc0 to audioconvert0"),
        "{err}"
    );
}
