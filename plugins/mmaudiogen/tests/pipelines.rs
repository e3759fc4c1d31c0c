//! Real pipelines on encoded files that the tests make (H.264/MP4 and VP8/WebM, with and
//! without an audio track, so decodebin has one or two pads).
//!
//! * In-process: `gst::parse::launch` of
//!   `filesrc ! decodebin ! videoconvert ! mmaudiogen ! audioconvert ! wavenc ! filesink`
//!   with a fake generator injected into `mmaudiogen` (the real one is not needed to
//!   check sample counts and timestamps).
//! * Out-of-process: `gst-inspect-1.0` and `gst-launch-1.0` against the built
//!   `libgstmmaudio.so` (GST_PLUGIN_PATH = the target directory, fresh GST_REGISTRY).
//!   Without a model they check the documentation and the missing-model ERROR;
//!   `gst_launch_with_test_model` runs the real generator on a tiny random model written by
//!   `mmaudio::test_model` (what `mmaudio make-test-model <dir>` writes). Against another
//!   model folder:
//!   `MMAUDIO_TEST_MODEL_DIR=<dir> [MMAUDIO_TEST_MODEL_VARIANT=small-16k]
//!    cargo test --release -p gst-plugin-mmaudio --test pipelines`.

// `mmaudio::Error` (returned by the generator closures) is large by design.
#![allow(clippy::result_large_err)]

mod common;

use common::*;
use gst::prelude::*;
use mmaudio::window::samples_to_ns;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug)]
enum Container {
    Mp4H264,
    WebmVp8,
}

/// Encode `frames` frames at `num/den` fps (64x48), optionally with an audio track of the
/// same duration plus `audio_extra_ms`.
fn make_media(
    name: &str,
    container: Container,
    audio: Option<u64>,
    frames: u64,
    num: u64,
    den: u64,
) -> PathBuf {
    init();
    let path = scratch_dir("media").join(name);
    let (venc, mux, aenc) = match container {
        Container::Mp4H264 => ("x264enc ! h264parse", "mp4mux", "avenc_aac ! aacparse"),
        Container::WebmVp8 => ("vp8enc deadline=1", "webmmux", "opusenc"),
    };
    // 8-bit 4:2:0 as cameras and phones record (left free, x264enc may pick 10-bit 4:4:4)
    let mut desc = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! \
         video/x-raw,format=I420,width=64,height=48,framerate={num}/{den} ! {venc} ! \
         {mux} name=mux ! filesink location={}",
        path.display()
    );
    if let Some(audio_extra_ms) = audio {
        // 48 kHz in 10 ms buffers.
        let buffers = (frames * den * 100).div_ceil(num) + audio_extra_ms / 10;
        desc += &format!(
            " audiotestsrc num-buffers={buffers} samplesperbuffer=480 ! \
             audio/x-raw,rate=48000,channels=1 ! {aenc} ! mux."
        );
    }
    let pipeline = gst::parse::launch(&desc).unwrap();
    run_to_eos(&pipeline, 120).unwrap_or_else(|e| panic!("encoding {name}: {e}"));
    path
}

fn run_to_eos(pipeline: &gst::Element, secs: u64) -> Result<(), String> {
    let bus = pipeline.bus().unwrap();
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let res = loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(secs)) else {
            break Err(format!("no EOS within {secs} s"));
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(e) => {
                break Err(format!("{} ({:?})", e.error(), e.debug()));
            }
            _ => {}
        }
    };
    pipeline.set_state(gst::State::Null).unwrap();
    res
}

#[derive(Default, Debug)]
struct Observed {
    /// (pts, duration) of every video frame entering mmaudiogen.
    video: Vec<(gst::ClockTime, Option<gst::ClockTime>)>,
    /// (pts, duration, offset, samples) of every audio buffer leaving it.
    audio: Vec<(gst::ClockTime, gst::ClockTime, u64, u64)>,
}

/// Run `file → decodebin → mmaudiogen (tone generator) → wavenc` and check the WAV and the
/// timestamps. Returns the sample count.
fn resoundtrack(file: &Path, rate: u32) -> u64 {
    let out = file.with_extension(format!("{rate}.wav"));
    let desc = format!(
        "filesrc location={} ! decodebin ! videoconvert ! mmaudiogen name=gen ! \
         audioconvert ! wavenc ! filesink location={}",
        file.display(),
        out.display()
    );
    let pipeline = gst::parse::launch(&desc).unwrap();
    let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
    let generator = bin.by_name("gen").unwrap();
    let log = new_log();
    let log2 = log.clone();
    generator
        .downcast_ref::<gstmmaudio::MMAudioGen>()
        .unwrap()
        .set_generator_factory(move |_| {
            Ok(Box::new(Fake::new(
                rate,
                Behaviour::Tone(440.0),
                log2.clone(),
            )))
        });
    let observed = Arc::new(Mutex::new(Observed::default()));
    let o = observed.clone();
    generator
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                o.lock()
                    .unwrap()
                    .video
                    .push((b.pts().unwrap(), b.duration()));
            }
            gst::PadProbeReturn::Ok
        });
    let o = observed.clone();
    generator
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                o.lock().unwrap().audio.push((
                    b.pts().unwrap(),
                    b.duration().unwrap(),
                    b.offset(),
                    b.size() as u64 / 4,
                ));
            }
            gst::PadProbeReturn::Ok
        });
    run_to_eos(&pipeline, 120).unwrap_or_else(|e| panic!("{}: {e}", file.display()));

    let (count, bits, channels, wav_rate) = wav_info(&out);
    assert_eq!((bits, channels, wav_rate), (32, 1, rate));
    let obs = observed.lock().unwrap();
    let first = obs.video[0].0;
    let (last_pts, last_dur) = *obs.video.last().unwrap();
    let end = last_pts + last_dur.expect("demuxed frames have durations");
    let expected = ((end - first).nseconds() as u128 * rate as u128 + 500_000_000) / 1_000_000_000;
    assert_eq!(count as u128, expected, "{}", file.display());
    // Timestamps continuous from the first video frame.
    let mut n = 0u64;
    for &(pts, dur, offset, samples) in &obs.audio {
        assert_eq!(offset, n);
        assert_eq!(
            pts,
            first + gst::ClockTime::from_nseconds(samples_to_ns(n, rate))
        );
        assert_eq!(
            pts + dur,
            first + gst::ClockTime::from_nseconds(samples_to_ns(n + samples, rate))
        );
        n += samples;
    }
    assert_eq!(n, count);
    count
}

#[test]
fn mp4_h264_10s_25fps_gives_160000_samples_with_and_without_audio() {
    for audio in [None, Some(0)] {
        let f = make_media(
            &format!("h264-10s-{audio:?}.mp4"),
            Container::Mp4H264,
            audio,
            250,
            25,
            1,
        );
        assert_eq!(resoundtrack(&f, 16000), 160_000, "audio track: {audio:?}");
    }
}

#[test]
fn mp4_h264_4004ms_ntsc_gives_64064_samples_with_and_without_audio() {
    for audio in [None, Some(0)] {
        let f = make_media(
            &format!("h264-4004ms-{audio:?}.mp4"),
            Container::Mp4H264,
            audio,
            120,
            30000,
            1001,
        );
        assert_eq!(resoundtrack(&f, 16000), 64_064, "audio track: {audio:?}");
    }
}

#[test]
fn webm_vp8_10s_25fps_with_and_without_audio() {
    // Some(5000): the audio track runs 5 s longer; matroskademux then sends ~100 GAPs on
    // the lagging video pad, which must not lengthen the output.
    for audio in [None, Some(0), Some(5000)] {
        let f = make_media(
            &format!("vp8-10s-{audio:?}.webm"),
            Container::WebmVp8,
            audio,
            250,
            25,
            1,
        );
        assert_eq!(resoundtrack(&f, 16000), 160_000, "audio track: {audio:?}");
        assert_eq!(resoundtrack(&f, 44100), 441_000, "audio track: {audio:?}");
    }
}

/// A folder holding only the `libgstmmaudio.so` built with this test. `cargo test` builds
/// the cdylib next to the test binary (`target/<profile>/deps/`) without copying it to
/// `target/<profile>/`, which may hold an older build; and `deps/` itself is full of other
/// shared objects that GStreamer would try to load.
///
/// Copied once per test process: copying it again while another test's `gst-launch-1.0`
/// has it mapped would pull the code from under that process (SIGBUS).
fn plugin_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let built = exe.parent().unwrap().join("libgstmmaudio.so");
        assert!(built.exists(), "{} missing", built.display());
        let dir = scratch_dir("plugin");
        std::fs::copy(&built, dir.join("libgstmmaudio.so")).unwrap();
        dir
    })
    .clone()
}

fn gst_command(tool: &str) -> Command {
    let mut cmd = Command::new(tool);
    cmd.env("GST_PLUGIN_PATH", plugin_dir()).env(
        "GST_REGISTRY",
        scratch_dir("registry").join(format!("{tool}.bin")),
    );
    cmd
}

#[test]
fn gst_inspect_lists_the_element_and_documents_every_property() {
    let out = gst_command("gst-inspect-1.0")
        .arg("mmaudiogen")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Converter/Video/Audio"), "{text}");
    for (name, doc) in [
        ("model-dir", "weight files"),
        ("variant", "small-16k outputs 16000 Hz"),
        ("device", "cuda:N"),
        ("precision", "bf16"),
        ("prompt", "next window"),
        ("negative-prompt", "avoid"),
        ("num-steps", "Default: 25"),
        ("cfg-strength", "Default:             4.5"),
        ("seed", "seed + k"),
        ("mask-away-clip", "CLIP"),
        ("text-only", "text-to-audio"),
        ("window-duration", "milliseconds"),
        ("overlap", "milliseconds"),
        ("max-in-flight", "backpressure"),
        ("processing-latency", "milliseconds"),
    ] {
        let at = text
            .find(&format!("  {name} "))
            .unwrap_or_else(|| panic!("property {name} not listed:\n{text}"));
        let block: String = text[at..].lines().take(4).collect::<Vec<_>>().join("\n");
        assert!(block.contains(doc), "{name}: {doc:?} not in\n{block}");
    }
}

#[test]
fn gst_launch_with_a_missing_model_dir_fails_naming_it() {
    let out = gst_command("gst-launch-1.0")
        .args([
            "videotestsrc",
            "num-buffers=30",
            "!",
            "videoconvert",
            "!",
            "mmaudiogen",
            "model-dir=/nonexistent/mmaudio-launch-test",
            "!",
            "fakesink",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("ERROR: from element"), "{text}");
    assert!(text.contains("/nonexistent/mmaudio-launch-test"), "{text}");
}

/// The real generator end to end on the tiny random test model (`mmaudio make-test-model`,
/// written here), through `gst-launch-1.0`: exact sample counts for 25 fps and 30000/1001
/// files, with and without an audio track. `MMAUDIO_TEST_MODEL_DIR` (+
/// `MMAUDIO_TEST_MODEL_VARIANT`) runs it against another model folder instead.
#[test]
fn gst_launch_with_test_model() {
    let (dir, variant) = match std::env::var("MMAUDIO_TEST_MODEL_DIR") {
        Ok(d) => (
            d,
            std::env::var("MMAUDIO_TEST_MODEL_VARIANT").unwrap_or_else(|_| "small-16k".into()),
        ),
        Err(_) => {
            let d = scratch_dir("test-model-16k");
            mmaudio::test_model::write_test_model(&d, mmaudio::Mode::Khz16, 1).unwrap();
            (d.display().to_string(), "small-16k".to_string())
        }
    };
    let rate = if variant.contains("16k") {
        16000
    } else {
        44100
    };
    for (name, frames, num, den, audio, seconds) in [
        ("model-10s.mp4", 250, 25, 1, None, 10.0),
        ("model-10s-audio.mp4", 250, 25, 1, Some(0), 10.0),
        ("model-4004ms.mp4", 120, 30000, 1001, None, 4.004),
    ] {
        let file = make_media(name, Container::Mp4H264, audio, frames, num, den);
        let wav = file.with_extension("model.wav");
        let out = gst_command("gst-launch-1.0")
            .args([
                "filesrc".into(),
                format!("location={}", file.display()),
                "!".into(),
                "decodebin".into(),
                "!".into(),
                "videoconvert".into(),
                "!".into(),
                "mmaudiogen".into(),
                format!("model-dir={dir}"),
                format!("variant={variant}"),
                "num-steps=3".into(),
                "!".into(),
                "audioconvert".into(),
                "!".into(),
                "wavenc".into(),
                "!".into(),
                "filesink".into(),
                format!("location={}", wav.display()),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let (count, _, channels, wav_rate) = wav_info(&wav);
        assert_eq!((channels, wav_rate), (1, rate));
        assert_eq!(count, (seconds * rate as f64).round() as u64, "{name}");
    }
}

/// The README's live tee, as the issue ran it (default queues on both branches, both sinks
/// synchronised), through `gst-launch-1.0 -e` with the real generator on the tiny test
/// model: the pipeline must preroll and play (the element's preroll GAP lets the audio sink
/// preroll before the first window is ready), and Ctrl-C (SIGINT, EOS with `-e`) must end
/// it within the latency plus a window — it used to deadlock in preroll and ignore Ctrl-C.
#[test]
fn gst_launch_live_tee_with_default_queues_stops_on_ctrl_c() {
    let d = scratch_dir("test-model-16k-live");
    mmaudio::test_model::write_test_model(&d, mmaudio::Mode::Khz16, 1).unwrap();
    let mut child = gst_command("gst-launch-1.0")
        .args([
            "-e",
            "videotestsrc",
            "is-live=true",
            "!",
            "video/x-raw,width=64,height=48,framerate=25/1",
            "!",
            "videoconvert",
            "!",
            "tee",
            "name=t",
            "t.",
            "!",
            "queue",
            "!",
            "fakesink",
            "sync=true",
            "t.",
            "!",
            "queue",
            "!",
            "mmaudiogen",
            &format!("model-dir={}", d.display()),
            "variant=small-16k",
            "num-steps=1",
            "window-duration=2000",
            "overlap=400",
            "processing-latency=5000",
            "!",
            "audioconvert",
            "!",
            "fakesink",
            "sync=true",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(6));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let sent = std::time::Instant::now();
    // Latency 7.04 s (window + frame + processing-latency) before the last audio renders.
    let limit = std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running {limit:?} after SIGINT (deadlock):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.success(), "{text}");
    assert!(text.contains("Got EOS from element"), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
}

/// Run `desc` (its `mmaudiogen` named `gen`, with a constant generator at `rate`) until
/// EOS or ERROR within `secs`; the ERROR's (source name, message, debug).
fn error_of(desc: &str, rate: u32, secs: u64) -> Result<(String, String, String), String> {
    init();
    let pipeline = gst::parse::launch(desc).unwrap();
    let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
    let generator = bin.by_name("gen").unwrap();
    let log = new_log();
    generator
        .downcast_ref::<gstmmaudio::MMAudioGen>()
        .unwrap()
        .set_generator_factory(move |_| {
            Ok(Box::new(Fake::new(
                rate,
                Behaviour::Constant(0.1),
                log.clone(),
            )))
        });
    let bus = pipeline.bus().unwrap();
    let _ = pipeline.set_state(gst::State::Playing);
    let res = loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(secs)) else {
            break Err(format!(
                "neither EOS nor ERROR within {secs} s: the pipeline hangs"
            ));
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Err("EOS instead of an ERROR".into()),
            gst::MessageView::Error(e) => {
                break Ok((
                    msg.src().map(|s| s.name().to_string()).unwrap_or_default(),
                    e.error().to_string(),
                    e.debug().map(|d| d.to_string()).unwrap_or_default(),
                ));
            }
            _ => {}
        }
    };
    pipeline.set_state(gst::State::Null).unwrap();
    res
}

/// The hang: downstream refuses the 16 kHz output after the video has already
/// ended (EOS before the first window), so nothing upstream would ever see the flow error.
/// mmaudiogen posts an ERROR whose main message says what was refused and what to add.
#[test]
fn refused_output_rate_posts_an_error_instead_of_hanging() {
    for frames in [10, 60] {
        let (src, message, debug) = error_of(
            &format!(
                "videotestsrc num-buffers={frames} ! video/x-raw,width=64,height=64 ! \
                 mmaudiogen name=gen window-duration=1000 overlap=0 ! \
                 audio/x-raw,rate=44100 ! fakesink"
            ),
            16000,
            20,
        )
        .unwrap_or_else(|e| panic!("{frames} frames: {e}"));
        assert_eq!(src, "gen", "{message} | {debug}");
        assert!(
            message.contains("refused audio/x-raw rate=16000") && message.contains("audioresample"),
            "{message} | {debug}"
        );
        assert!(debug.contains("44100"), "{debug}");
    }
}

/// An unlinked source pad (the audio goes nowhere) is an ERROR naming the pad, not a
/// pipeline stuck in PAUSED.
#[test]
fn unlinked_src_pad_posts_an_error_instead_of_hanging() {
    let (src, message, debug) = error_of(
        "videotestsrc num-buffers=10 ! video/x-raw,width=64,height=64 ! \
         mmaudiogen name=gen window-duration=1000 overlap=0",
        16000,
        20,
    )
    .unwrap();
    assert_eq!(src, "gen", "{message} | {debug}");
    assert!(message.contains("not linked"), "{message} | {debug}");
}

/// The debug category is registered when the plugin loads (before any element exists), and
/// the author field reads `Name <email>`.
#[test]
fn debug_category_at_plugin_load_and_author_with_email() {
    let out = gst_command("gst-inspect-1.0")
        .arg("--gst-debug-help")
        .env("GST_DEBUG_NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some("mmaudiogen") && l.contains("MMAudio video-to-audio generator")
        }),
        "mmaudiogen not among the debug categories:\n{text}"
    );
    let out = gst_command("gst-inspect-1.0")
        .arg("mmaudiogen")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let author = text
        .lines()
        .find(|l| l.trim_start().starts_with("Author"))
        .unwrap_or_else(|| panic!("no Author line:\n{text}"));
    let value = author.trim_start().trim_start_matches("Author").trim();
    let (name, email) = value
        .split_once(" <")
        .unwrap_or_else(|| panic!("{author:?} is not `Name <email>`"));
    assert!(
        !name.is_empty() && email.ends_with('>') && email.contains('@'),
        "{author:?}"
    );
}

/// The design card's pipeline as a user types it: `filesrc ! decodebin ! mmaudiogen ! sink`
/// with no `videoconvert` (the decoder's I420 goes straight in), no `model-dir` (the
/// weights are found through `MMAUDIO_MODEL_DIR`, or in `./models`) and no variant (the
/// folder's), on H.264 MP4 files with and without an audio track, with the real generator
/// on the tiny test model. `wavenc` stands in for `autoaudiosink` so the samples can be
/// counted: 2.4 s at 16 kHz.
#[test]
fn design_card_pipeline_works_as_typed() {
    let model = scratch_dir("as-typed").join("models");
    if !model.join("mmaudio.json").exists() {
        mmaudio::test_model::write_test_model(&model, mmaudio::Mode::Khz16, 4).unwrap();
    }
    for (name, audio, env_dir) in [
        ("typed-2400ms.mp4", None, true),
        ("typed-2400ms-audio.mp4", Some(0), false),
    ] {
        let file = make_media(name, Container::Mp4H264, audio, 60, 25, 1);
        let wav = file.with_extension("typed.wav");
        let mut cmd = gst_command("gst-launch-1.0");
        cmd.arg("filesrc")
            .arg(format!("location={}", file.display()))
            .args(["!", "decodebin", "!", "mmaudiogen", "!"])
            .args(["audioconvert", "!", "wavenc", "!", "filesink"])
            .arg(format!("location={}", wav.display()));
        if env_dir {
            cmd.env("MMAUDIO_MODEL_DIR", &model);
        } else {
            // the default: ./models
            cmd.env_remove("MMAUDIO_MODEL_DIR")
                .current_dir(model.parent().unwrap());
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{name} ({}): {text}", out.status);
        assert!(
            text.contains("Loaded MMAudio small_16k") && text.contains("on cpu in f32"),
            "{name}: {text}"
        );
        let (count, _, channels, rate) = wav_info(&wav);
        assert_eq!((channels, rate), (1, 16000), "{name}");
        assert_eq!(count, 38_400, "{name}");
    }
}
