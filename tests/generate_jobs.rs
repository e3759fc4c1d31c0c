//! `mmaudio generate` as scripts, schedulers and impatient users drive it (tiny random test
//! model, short clips): SIGINT/SIGTERM once and twice, SIGKILL, `-y`, batch runs over
//! folders and manifests with their JSON summary, resumption, three shards at once, the
//! original audio dropped/mixed/kept as a track, output rate/channels, `--start` and
//! `--duration`, and one spelling per option across subcommands.

mod support;

use std::path::{Path, PathBuf};
use support::*;

/// The 16 kHz geometry used by the signal tests: 1 s windows every 0.8 s.
const WINDOW: u64 = 16_000;
const HOP: u64 = 12_800;

fn generate(input: &Path, out: &Path) -> std::process::Command {
    let mut cmd = mmaudio();
    cmd.arg("generate")
        .arg(input)
        .arg("-o")
        .arg(out)
        .arg("--model-dir")
        .arg(test_model("16k"))
        .arg("--no-progress");
    cmd
}

/// A 10 s video (160×120) cut into 13 windows of 1 s, slow enough (sampler steps) that a
/// signal lands mid-run.
fn slow_generate(input: &Path, out: &Path) -> std::process::Command {
    let mut cmd = generate(input, out);
    cmd.args([
        "--window-duration",
        "1000",
        "--overlap",
        "200",
        "--num-steps",
        "12",
    ]);
    cmd
}

/// "holds X s (N samples, K window(s))" of the stopped-early line.
fn stopped_counts(text: &str) -> (u64, u64) {
    let line = text
        .lines()
        .find(|l| l.starts_with("stopped early:"))
        .unwrap_or_else(|| panic!("no stopped-early line:\n{text}"));
    let nums: Vec<u64> = line
        .split(['(', ' ', ','])
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

#[test]
fn sigint_once_finishes_the_window_and_clips_the_mp4() {
    let input = make_video("ten.mp4", 250, 160, 120, false);
    let out = folder("sigint-mp4").join("out.mp4");
    let mut run = Running::start(&mut slow_generate(&input, &out));
    run.wait_for("window 2/13", 120);
    run.signal(libc::SIGINT);
    let (status, text) = run.finish(120);
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(
        text.contains("SIGINT (Ctrl-C): closing the file after window"),
        "{text}"
    );
    let (samples, windows) = stopped_counts(&text);
    // The file ends at the end of the window being generated when the signal came (or of
    // window 2, if the worker was waiting for frames): no window after it.
    assert!((2..13).contains(&windows), "{windows} windows:\n{text}");
    assert_eq!(samples, (windows - 1) * HOP + WINDOW, "{text}");
    assert!(
        text.contains(&format!("closing the file after window {windows},")),
        "{text}"
    );
    assert!(
        !support::scratch()
            .join("sigint-mp4/out.mp4.partial")
            .exists()
    );
    // A valid file whose soundtrack and video end together.
    assert_eq!(decoded_audio(&out, 16_000, None).len() as u64, samples);
    let frames = video_frames(&out);
    assert_eq!(
        frames * 640,
        samples,
        "{frames} frames for {samples} samples"
    );
}

#[test]
fn sigterm_once_does_what_sigint_does() {
    let input = make_video("ten.mp4", 250, 160, 120, false);
    let out = folder("sigterm-wav").join("out.wav");
    let mut run = Running::start(&mut slow_generate(&input, &out));
    run.wait_for("window 2/13", 120);
    run.signal(libc::SIGTERM);
    let (status, text) = run.finish(120);
    assert_eq!(status.code(), Some(143), "{text}");
    assert!(
        text.contains("SIGTERM: closing the file after window"),
        "{text}"
    );
    let (samples, windows) = stopped_counts(&text);
    assert!((2..13).contains(&windows), "{text}");
    assert_eq!(wav_samples(&out), ((windows - 1) * HOP + WINDOW, 16_000, 1));
    assert_eq!(samples, (windows - 1) * HOP + WINDOW);
}

#[test]
fn a_second_signal_aborts_and_leaves_the_old_output_untouched() {
    // Text-only: frames are always there, so the first signal finds a window being
    // generated and closing takes that window's time; the second comes 5 ms later (two
    // signals sent at once would merge into one pending signal).
    let dir = folder("sigint-twice");
    let out = dir.join("out.wav");
    std::fs::write(&out, b"an older file").unwrap();
    let mut run = Running::start(
        mmaudio()
            .arg("generate")
            .arg("-o")
            .arg(&out)
            .arg("-y")
            .arg("--model-dir")
            .arg(test_model("16k"))
            .args(["--no-progress", "--duration", "10"])
            .args(["--window-duration", "1000", "--overlap", "200"])
            .args(["--num-steps", "12"]),
    );
    run.wait_for("window 2/13", 120);
    run.signal(libc::SIGINT);
    std::thread::sleep(std::time::Duration::from_millis(5));
    run.signal(libc::SIGINT);
    let (status, text) = run.finish(120);
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(text.contains("nothing written"), "{text}");
    assert_eq!(std::fs::read(&out).unwrap(), b"an older file");
    assert!(!dir.join("out.wav.partial").exists());
}

#[test]
fn a_killed_run_leaves_only_the_partial_file_and_a_rerun_completes() {
    let input = make_video("ten.mp4", 250, 160, 120, false);
    let dir = folder("sigkill");
    let out = dir.join("out.wav");
    let mut run = Running::start(&mut slow_generate(&input, &out));
    run.wait_for("window 2/13", 120);
    run.signal(libc::SIGKILL);
    let (status, _) = run.finish(30);
    assert_eq!(status.code(), None);
    assert!(
        !out.exists(),
        "a killed run left a file under the output's name"
    );
    assert!(dir.join("out.wav.partial").exists());
    // The rerun starts over, replaces the stale partial file and completes.
    let text = run_ok(generate(&input, &out).args(["--num-steps", "1"]));
    assert!(text.contains("160000 samples"), "{text}");
    assert_eq!(wav_samples(&out), (160_000, 16_000, 1));
    assert!(!dir.join("out.wav.partial").exists());
}

#[test]
fn an_existing_output_is_replaced_only_with_y_and_only_by_a_complete_file() {
    let input = make_video("two.mp4", 50, 64, 48, false);
    let dir = folder("overwrite");
    let out = dir.join("out.wav");
    std::fs::write(&out, b"keep me").unwrap();
    let e = run_err(&mut generate(&input, &out));
    assert!(e.contains("exists") && e.contains("-y"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    // -y, but the run fails: the old file stays
    let e = run_err(generate(&input, &out).args(["-y", "--start", "5"]));
    assert!(e.contains("--start") && e.contains("past the end"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    run_ok(generate(&input, &out).args(["-y", "--num-steps", "1"]));
    assert_eq!(wav_samples(&out), (32_000, 16_000, 1));
    assert!(!dir.join("out.wav.partial").exists());
}

#[test]
fn progress_moves_within_a_window() {
    let input = make_video("two.mp4", 50, 64, 48, false);
    let out = folder("progress").join("out.wav");
    let text = run_ok(generate(&input, &out).args(["--num-steps", "3", "--log-interval", "0"]));
    for want in [
        "window 1/1: video and text features",
        "window 1/1: sampling step 1/3",
        "window 1/1: sampling step 3/3",
        "window 1/1: decoding",
        "window 1/1: 0.00–2.00 s",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
}

#[test]
fn start_and_duration_trim_the_input() {
    let input = make_video("ten.mp4", 250, 160, 120, false);
    let dir = folder("trim");
    // into a WAV: exactly from 2 s for 3 s
    let wav = dir.join("trim.wav");
    let text = run_ok(generate(&input, &wav).args([
        "--start",
        "2",
        "--duration",
        "3",
        "--num-steps",
        "1",
    ]));
    assert!(text.contains("48000 samples"), "{text}");
    assert_eq!(wav_samples(&wav), (48_000, 16_000, 1));
    // --duration alone: the first 3 s, as the official demo's --duration
    let head = dir.join("head.wav");
    run_ok(generate(&input, &head).args(["--duration", "3", "--num-steps", "1"]));
    assert_eq!(wav_samples(&head).0, 48_000);
    // into an MP4 the video is copied: it starts on the key frame at 2 s (one per second)
    let mp4 = dir.join("trim.mp4");
    run_ok(generate(&input, &mp4).args(["--start", "2", "--duration", "3", "--num-steps", "1"]));
    assert_eq!(decoded_audio(&mp4, 16_000, None).len(), 48_000);
    assert_eq!(video_frames(&mp4), 75);
}

#[test]
fn original_audio_mixed_kept_as_a_track_or_dropped() {
    let input = make_video("four-with-audio.mp4", 100, 64, 48, true);
    let dir = folder("original-audio");
    let model = test_model("16k");

    // drop (the default), said in the summary
    let dropped = dir.join("drop.wav");
    let text = run_ok(generate(&input, &dropped).args(["--num-steps", "1"]));
    assert!(text.contains("audio was dropped"), "{text}");
    let x = decoded_audio(&dropped, 16_000, None);
    assert_eq!(x.len(), 64_000);
    assert!(
        tone_share(&x, 16_000, 440.0) < 0.2,
        "the 440 Hz original leaked in"
    );

    // mix: the original's 440 Hz sine under the (quiet) soundtrack, exactly as long
    let mixed = dir.join("mix.wav");
    let summary = dir.join("mix.json");
    run_ok(
        generate(&input, &mixed)
            .arg("--summary")
            .arg(&summary)
            .args([
                "--original-audio",
                "mix",
                "--mix-gain-db",
                "-40",
                "--sample-rate",
                "16000",
                "--channels",
                "1",
                "--num-steps",
                "1",
            ]),
    );
    assert_eq!(wav_samples(&mixed), (64_000, 16_000, 1));
    let x = decoded_audio(&mixed, 16_000, None);
    assert!(tone_share(&x, 16_000, 440.0) > 0.8, "no 440 Hz in the mix");
    let s = json(&summary);
    assert_eq!(s["original_audio"], "mix");
    assert_eq!(s["files"][0]["status"], "done");
    assert_eq!(s["files"][0]["original_audio"], "mix");

    // track: the original first (AAC, copied), the soundtrack second (FLAC), both 4 s
    let mkv = dir.join("track.mkv");
    run_ok(
        mmaudio()
            .arg("generate")
            .arg(&input)
            .arg("-o")
            .arg(&mkv)
            .arg("--model-dir")
            .arg(model)
            .args([
                "--no-progress",
                "--original-audio",
                "track",
                "--num-steps",
                "1",
            ]),
    );
    let info = discover(&mkv);
    let tracks: Vec<&str> = info
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("audio #"))
        .collect();
    assert_eq!(tracks.len(), 2, "{info}");
    assert!(
        tracks[0].contains("audio/mpeg") && tracks[1].contains("audio/x-flac"),
        "the original (AAC) is not the first audio track:\n{info}"
    );
    let original = decoded_audio(&mkv, 16_000, Some(("matroskademux", "audio_0")));
    let generated = decoded_audio(&mkv, 16_000, Some(("matroskademux", "audio_1")));
    assert_eq!(generated.len(), 64_000);
    assert!(tone_share(&original, 16_000, 440.0) > 0.8);
    assert!(
        (original.len() as i64 - 64_000).abs() < 1_600,
        "{}",
        original.len()
    );

    // output controls: 48 kHz stereo AAC at a set bitrate
    let mp4 = dir.join("stereo.mp4");
    let text = run_ok(generate(&input, &mp4).args([
        "--sample-rate",
        "48000",
        "--channels",
        "2",
        "--audio-bitrate",
        "96",
        "--num-steps",
        "1",
    ]));
    assert!(text.contains("written at 48000 Hz, 2 channel(s)"), "{text}");
    let info = discover(&mp4);
    assert!(
        info.contains("Sample rate: 48000") && info.contains("Channels: 2"),
        "{info}"
    );
    // The file holds exactly 4 s (its sample table says 187 × 1024 + 512 samples);
    // GStreamer's AAC decoder rounds the clipped last frame up by one sample at rates where
    // a frame is not a whole number of nanoseconds.
    assert!(info.contains("Duration: 0:00:04.000000000"), "{info}");
    let n = decoded_audio(&mp4, 48_000, None).len();
    assert!((192_000..=192_001).contains(&n), "{n} samples");

    // combinations that cannot work say why
    let e = run_err(generate(&input, &dir.join("x.wav")).args(["--original-audio", "track"]));
    assert!(e.contains("second audio track"), "{e}");
    let e = run_err(generate(&input, &dir.join("x.mkv")).args(["--audio-bitrate", "96"]));
    assert!(e.contains("lossless"), "{e}");
}

fn file_entries(summary: &serde_json::Value) -> Vec<(String, String)> {
    summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                Path::new(f["output"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                f["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_folder_batch_keeps_going_after_a_bad_file_and_resumes() {
    let clip = make_video("two.mp4", 50, 64, 48, false);
    let inputs = folder("batch-in");
    std::fs::copy(&clip, inputs.join("a.mp4")).unwrap();
    std::fs::copy(&clip, inputs.join("c.mp4")).unwrap();
    std::fs::write(inputs.join("b.mp4"), b"not a video at all").unwrap();
    std::fs::write(inputs.join("notes.txt"), b"ignored").unwrap();
    let outputs = scratch().join("batch-out"); // created by the run
    let _ = std::fs::remove_dir_all(&outputs);
    let batch = || {
        let mut cmd = mmaudio();
        cmd.arg("generate")
            .arg(&inputs)
            .arg("--output-dir")
            .arg(&outputs)
            .arg("--model-dir")
            .arg(test_model("16k"))
            .args(["--no-progress", "--num-steps", "1"]);
        cmd
    };
    let out = batch().output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "a file failed: exit 1\n{t}");
    let summary = json(&outputs.join("mmaudio-summary.json"));
    assert_eq!(
        file_entries(&summary),
        [("a.wav", "done"), ("b.wav", "failed"), ("c.wav", "done")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let files = &summary["files"];
    assert!(
        files[1]["error"].as_str().unwrap().contains("b.mp4"),
        "{summary}"
    );
    for f in [&files[0], &files[2]] {
        assert_eq!(f["duration_s"], 2.0);
        assert_eq!(f["samples"], 32_000);
        assert_eq!(f["windows"], 1);
        assert!(f["processing_s"].as_f64().unwrap() > 0.0);
        let rtf = f["real_time_factor"].as_f64().unwrap();
        assert!((rtf - f["processing_s"].as_f64().unwrap() / 2.0).abs() < 1e-9);
    }
    assert_eq!(summary["counts"]["done"], 2);
    assert_eq!(summary["original_audio"], "drop");
    assert_eq!(wav_samples(&outputs.join("a.wav")).0, 32_000);
    assert!(!outputs.join("b.wav").exists() && !outputs.join("b.wav.partial").exists());
    let before = std::fs::metadata(outputs.join("a.wav"))
        .unwrap()
        .modified()
        .unwrap();

    // Again: the finished files are skipped, not redone.
    let out = batch().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let summary = json(&outputs.join("mmaudio-summary.json"));
    assert_eq!(
        file_entries(&summary),
        [
            ("a.wav", "skipped"),
            ("b.wav", "failed"),
            ("c.wav", "skipped")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let after = std::fs::metadata(outputs.join("a.wav"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);
}

/// A manifest of `n` lines over the same clip, outputs o0.wav … with prompts and seeds.
fn write_manifest(dir: &Path, clip: &Path, n: usize) -> PathBuf {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            serde_json::json!({
                "input": clip,
                "output": format!("o{i}.wav"),
                "prompt": format!("sound {i}"),
                "seed": i,
            })
            .to_string()
        })
        .collect();
    let m = dir.join("manifest.jsonl");
    std::fs::write(&m, lines.join("\n") + "\n").unwrap();
    m
}

#[test]
fn a_manifest_names_outputs_prompts_seeds_and_variants() {
    let clip = make_video("two.mp4", 50, 64, 48, false);
    let dir = folder("manifest");
    std::fs::copy(&clip, dir.join("clip.mp4")).unwrap();
    let manifest = dir.join("m.jsonl");
    std::fs::write(
        &manifest,
        "{\"input\": \"clip.mp4\", \"output\": \"rain.flac\", \"prompt\": \"rain\", \"seed\": 3}\n\
         # a comment\n\
         {\"input\": \"clip.mp4\", \"output\": \"sub/dog.wav\", \"negative_prompt\": \"music\", \"variant\": \"small_16k\"}\n",
    )
    .unwrap();
    let text = run_ok(
        mmaudio()
            .arg("generate")
            .arg("--manifest")
            .arg(&manifest)
            .arg("--model-dir")
            .arg(test_model("16k"))
            .args(["--no-progress", "--num-steps", "1"]),
    );
    assert!(text.contains("2 done, 0 skipped, 0 failed"), "{text}");
    assert_eq!(
        decoded_audio(&dir.join("rain.flac"), 16_000, None).len(),
        32_000
    );
    assert_eq!(wav_samples(&dir.join("sub/dog.wav")).0, 32_000);
    let summary = json(&dir.join("mmaudio-summary.json"));
    assert_eq!(summary["files"][1]["variant"], "small_16k");
    // a typo is refused before anything runs, naming the line
    std::fs::write(&manifest, "{\"input\": \"clip.mp4\", \"promt\": \"x\"}\n").unwrap();
    let e = run_err(
        mmaudio()
            .arg("generate")
            .arg("--manifest")
            .arg(&manifest)
            .arg("--model-dir")
            .arg(test_model("16k")),
    );
    assert!(e.contains("line 1") && e.contains("promt"), "{e}");
}

#[test]
fn three_shards_at_once_do_each_file_exactly_once() {
    let clip = make_video("two.mp4", 50, 64, 48, false);
    let dir = folder("shards");
    let manifest = write_manifest(&dir, &clip, 7);
    let out = dir.join("out");
    let base = |cmd: &mut std::process::Command| {
        cmd.arg("--manifest")
            .arg(&manifest)
            .arg("--output-dir")
            .arg(&out)
            .arg("--model-dir")
            .arg(test_model("16k"))
            .args(["--no-progress", "--num-steps", "1"]);
    };
    // shard 0: the Slurm array script as Slurm runs it
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/slurm-array.sh");
    let mut slurm = std::process::Command::new("bash");
    slurm
        .arg(&script)
        .env("GST_PLUGIN_PATH", plugin_dir())
        .env("GST_REGISTRY", scratch().join("registry.bin"))
        .env("MMAUDIO", mmaudio_exe())
        .env("MANIFEST", &manifest)
        .env("OUT_DIR", &out)
        .env("MMAUDIO_MODEL_DIR", test_model("16k"))
        .env("MMAUDIO_VARIANT", "small_16k")
        .env("MMAUDIO_ARGS", "--num-steps 1")
        .env("SLURM_ARRAY_TASK_ID", "10")
        .env("SLURM_ARRAY_TASK_MIN", "10")
        .env("SLURM_ARRAY_TASK_COUNT", "3")
        .env_remove("JOB_COMPLETION_INDEX");
    // shard 1: a Kubernetes Indexed Job pod
    let mut k8s = mmaudio();
    k8s.arg("generate")
        .env("JOB_COMPLETION_INDEX", "1")
        .env("MMAUDIO_SHARD_COUNT", "3");
    base(&mut k8s);
    // shard 2: by hand
    let mut by_hand = mmaudio();
    by_hand
        .arg("generate")
        .args(["--shard-index", "2", "--shard-count", "3"]);
    base(&mut by_hand);
    let runs: Vec<_> = [&mut slurm, &mut k8s, &mut by_hand]
        .into_iter()
        .map(Running::start)
        .collect();
    for (i, r) in runs.into_iter().enumerate() {
        let (status, text) = r.finish(300);
        assert!(status.success(), "shard {i}: {text}");
    }
    let mut done = Vec::new();
    for i in 0..3 {
        let s = json(&out.join(format!("mmaudio-summary.shard-{i}-of-3.json")));
        assert_eq!(s["shard"]["index"], i);
        assert_eq!(s["jobs_total"], 7);
        for (name, status) in file_entries(&s) {
            assert_eq!(status, "done", "shard {i}: {name}");
            let k: usize = name[1..name.len() - 4].parse().unwrap();
            assert_eq!(k % 3, i, "shard {i} did {name}");
            done.push(k);
        }
    }
    done.sort();
    assert_eq!(done, (0..7).collect::<Vec<_>>(), "each file exactly once");
    for k in 0..7 {
        assert_eq!(wav_samples(&out.join(format!("o{k}.wav"))).0, 32_000);
    }
    // The Kubernetes manifest sets the shard count to its completions.
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes-indexed-job.yaml"),
    )
    .unwrap();
    let field = |key: &str| {
        yaml.lines()
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap()
    };
    assert_eq!(field("completions:"), "4");
    assert!(yaml.contains("name: MMAUDIO_SHARD_COUNT\n              value: \"4\""));
}

#[test]
fn a_shard_killed_mid_file_resumes_without_redoing_finished_files() {
    let short = make_video("two.mp4", 50, 64, 48, false);
    let long = make_video("ten.mp4", 250, 160, 120, false);
    let dir = folder("resume");
    let m = dir.join("m.jsonl");
    let line =
        |input: &Path, out: &str| serde_json::json!({"input": input, "output": out}).to_string();
    std::fs::write(
        &m,
        [
            line(&short, "a.wav"),
            line(&long, "b.wav"),
            line(&short, "c.wav"),
        ]
        .join("\n"),
    )
    .unwrap();
    let shard = |steps: &str| {
        let mut cmd = mmaudio();
        cmd.arg("generate")
            .arg("--manifest")
            .arg(&m)
            .arg("--model-dir")
            .arg(test_model("16k"))
            .args([
                "--no-progress",
                "--num-steps",
                steps,
                "--window-duration",
                "1000",
                "--overlap",
                "200",
            ])
            .env("SLURM_ARRAY_TASK_ID", "0")
            .env("SLURM_ARRAY_TASK_COUNT", "1");
        cmd
    };
    let mut run = Running::start(&mut shard("12"));
    run.wait_for("[2/3] window 1/13", 120);
    run.signal(libc::SIGKILL);
    let _ = run.finish(30);
    assert_eq!(wav_samples(&dir.join("a.wav")).0, 32_000);
    assert!(!dir.join("b.wav").exists());
    let summary = json(&dir.join("mmaudio-summary.json"));
    assert_eq!(summary["files"][0]["status"], "done");
    assert_eq!(summary["files"][1]["status"], "pending");
    let before = std::fs::metadata(dir.join("a.wav"))
        .unwrap()
        .modified()
        .unwrap();

    let text = run_ok(&mut shard("1"));
    assert!(text.contains("a.wav exists, skipped"), "{text}");
    let summary = json(&dir.join("mmaudio-summary.json"));
    assert_eq!(
        file_entries(&summary),
        [("a.wav", "skipped"), ("b.wav", "done"), ("c.wav", "done")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(wav_samples(&dir.join("b.wav")).0, 160_000);
    assert!(!dir.join("b.wav.partial").exists());
    let after = std::fs::metadata(dir.join("a.wav"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "a finished file was redone");
}

#[test]
fn a_batch_stops_at_once_on_sigterm_and_keeps_finished_files() {
    let short = make_video("two.mp4", 50, 64, 48, false);
    let long = make_video("ten.mp4", 250, 160, 120, false);
    let dir = folder("batch-sigterm");
    let m = dir.join("m.jsonl");
    let line =
        |input: &Path, out: &str| serde_json::json!({"input": input, "output": out}).to_string();
    std::fs::write(
        &m,
        [
            line(&short, "a.wav"),
            line(&long, "b.wav"),
            line(&short, "c.wav"),
        ]
        .join("\n"),
    )
    .unwrap();
    let mut run = Running::start(
        mmaudio()
            .arg("generate")
            .arg("--manifest")
            .arg(&m)
            .arg("--model-dir")
            .arg(test_model("16k"))
            .args([
                "--no-progress",
                "--num-steps",
                "12",
                "--window-duration",
                "1000",
                "--overlap",
                "200",
            ]),
    );
    run.wait_for("[2/3] window 1/13", 120);
    run.signal(libc::SIGTERM);
    let (status, text) = run.finish(60);
    assert_eq!(status.code(), Some(143), "{text}");
    assert!(dir.join("a.wav").exists());
    assert!(!dir.join("b.wav").exists() && !dir.join("b.wav.partial").exists());
    let summary = json(&dir.join("mmaudio-summary.json"));
    assert_eq!(
        file_entries(&summary),
        [
            ("a.wav", "done"),
            ("b.wav", "interrupted"),
            ("c.wav", "pending")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(summary["interrupted_by"], "SIGTERM");
}

#[test]
fn every_subcommand_spells_an_option_the_same_way() {
    let help = |sub: &str| run_ok(mmaudio().args([sub, "--help"]));
    for sub in [
        "generate",
        "selftest",
        "bench",
        "fetch-weights",
        "check-weights",
        "make-test-model",
        "parity",
    ] {
        let h = help(sub);
        for old in ["--steps ", "--dir "] {
            assert!(!h.contains(old), "{sub} --help still offers {old}:\n{h}");
        }
        // the --device entry: its line and the description lines up to the next option
        let lines: Vec<&str> = h.lines().collect();
        if let Some(at) = lines
            .iter()
            .position(|l| l.trim_start().starts_with("--device"))
        {
            let entry: Vec<&str> = lines[at..]
                .iter()
                .enumerate()
                .take_while(|(i, l)| *i == 0 || !l.trim_start().starts_with('-'))
                .map(|(_, l)| *l)
                .collect();
            assert!(
                entry.join("\n").contains("[default: auto]"),
                "{sub}: --device does not default to auto:\n{}",
                entry.join("\n")
            );
        }
    }
    for sub in ["generate", "selftest", "fetch-weights", "check-weights"] {
        assert!(help(sub).contains("--model-dir"), "{sub}");
    }
    for sub in ["generate", "selftest", "bench"] {
        assert!(help(sub).contains("--num-steps"), "{sub}");
    }
    // the old spellings still work (hidden aliases), so scripts do not break
    let dir = folder("old-spelling");
    run_ok(
        mmaudio()
            .args(["fetch-weights", "--variant", "small_16k", "--list", "--dir"])
            .arg(&dir),
    );
}
