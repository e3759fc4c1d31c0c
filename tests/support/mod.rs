//! Shared by the CLI tests: the `mmaudio` binary with the plugin built for this test run,
//! tiny test models, scratch files, media made with gst-launch-1.0 and readers for what
//! the CLI writes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

fn scratch_root() -> PathBuf {
    std::env::temp_dir().join(format!("mmaudio-cli-tests-{}", std::process::id()))
}

extern "C" fn remove_scratch_root() {
    if std::env::var_os("MMAUDIO_KEEP_TEST_FILES").is_none() {
        let _ = std::fs::remove_dir_all(scratch_root());
    }
}

unsafe extern "C" {
    fn atexit(f: extern "C" fn()) -> std::ffi::c_int;
}

/// This process's scratch folder, removed when the process exits (set
/// `MMAUDIO_KEEP_TEST_FILES` to keep it).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_root();
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: registers a plain function that only removes a folder.
        unsafe {
            atexit(remove_scratch_root);
        }
        dir
    })
}

/// A fresh sub-folder of the scratch folder.
pub fn folder(name: &str) -> PathBuf {
    let d = scratch().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A folder holding only the plugin built for this test run (`target/<profile>/deps/`),
/// so an older `target/<profile>/libgstmmaudio.so` is never picked up.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let built = exe.parent().unwrap().join("libgstmmaudio.so");
        assert!(built.exists(), "{} missing", built.display());
        let dir = scratch().join("plugin");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&built, dir.join("libgstmmaudio.so")).unwrap();
        dir
    })
}

pub fn mmaudio_exe() -> &'static str {
    env!("CARGO_BIN_EXE_mmaudio")
}

/// `mmaudio` with the test plugin and a private registry; no MMAUDIO_* or scheduler
/// variables from the caller's environment.
pub fn mmaudio() -> Command {
    let mut cmd = Command::new(mmaudio_exe());
    cmd.env("GST_PLUGIN_PATH", plugin_dir())
        .env("GST_REGISTRY", scratch().join("registry.bin"));
    for v in [
        "MMAUDIO_MODEL_DIR",
        "MMAUDIO_SHARD_INDEX",
        "MMAUDIO_SHARD_COUNT",
        "JOB_COMPLETION_INDEX",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_STEP",
    ] {
        cmd.env_remove(v);
    }
    cmd
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = text(&out);
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

pub fn run_err(cmd: &mut Command) -> String {
    let out: Output = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{cmd:?} should fail; stderr:\n{text}"
    );
    text
}

pub fn test_model(mode: &str) -> &'static Path {
    static M16: OnceLock<PathBuf> = OnceLock::new();
    static M44: OnceLock<PathBuf> = OnceLock::new();
    let cell = if mode == "16k" { &M16 } else { &M44 };
    cell.get_or_init(|| {
        let dir = scratch().join(format!("model-{mode}"));
        run_ok(
            mmaudio()
                .args(["make-test-model", "--mode", mode])
                .arg(&dir),
        );
        dir
    })
}

/// `gst-launch-1.0 -q ARGS` under a time limit (one retry of a stall of gst-launch itself,
/// see tests/generate.rs).
pub fn gst_launch(args: &str) {
    for attempt in 0..2 {
        let out = Command::new("timeout")
            .args(["120", "gst-launch-1.0", "-q"])
            .args(args.split_whitespace())
            .output()
            .unwrap();
        if out.status.code() == Some(124) && attempt == 0 {
            eprintln!("gst-launch-1.0 {args}: stalled for 120 s, retrying once");
            continue;
        }
        assert!(
            out.status.success(),
            "gst-launch-1.0 {args} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
}

/// An H.264 MP4, 25 fps, `w`×`h`, `frames` long, a key frame every second; with a sine
/// audio track (AAC, 48 kHz mono) when `audio`.
pub fn make_video(name: &str, frames: u32, w: u32, h: u32, audio: bool) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap();
    let p = scratch().join(name);
    if p.exists() {
        return p;
    }
    let tmp = scratch().join(format!("{name}.tmp"));
    let audio_branch = if audio {
        // 48000 / 1920 = 25 buffers per second: as long as the video
        format!(
            "audiotestsrc num-buffers={frames} samplesperbuffer=1920 freq=440 volume=0.5 \
             ! audio/x-raw,rate=48000,channels=1 ! audioconvert ! avenc_aac ! mux."
        )
    } else {
        String::new()
    };
    gst_launch(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width={w},height={h},framerate=25/1 \
         ! x264enc speed-preset=ultrafast key-int-max=25 bframes=0 ! mp4mux name=mux \
         ! filesink location={} {audio_branch}",
        tmp.display()
    ));
    std::fs::rename(&tmp, &p).unwrap();
    p
}

pub fn wav_samples(path: &Path) -> (u64, u32, u16) {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&data[0..4], b"RIFF", "{} is not a WAV file", path.display());
    let mut pos = 12;
    let (mut frame, mut rate, mut channels) = (0u64, 0u32, 0u16);
    while pos + 8 <= data.len() {
        let size = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = &data[pos + 8..];
        match &data[pos..pos + 4] {
            b"fmt " => {
                channels = u16::from_le_bytes(body[2..4].try_into().unwrap());
                rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
                frame = channels as u64
                    * u16::from_le_bytes(body[14..16].try_into().unwrap()) as u64
                    / 8;
            }
            b"data" => return (size as u64 / frame, rate, channels),
            _ => {}
        }
        pos += 8 + size + (size & 1);
    }
    panic!("no data chunk in {}", path.display());
}

/// The decoded audio of stream `pad` of a file's demuxer (`decodebin` pad order when
/// `None`), as mono S16 at `rate`.
pub fn decoded_audio(file: &Path, rate: u32, demux: Option<(&str, &str)>) -> Vec<i16> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let raw = scratch().join(format!(
        "decoded-{}.raw",
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    let to_raw = format!(
        "queue ! decodebin ! audioconvert ! audioresample ! audio/x-raw,format=S16LE,channels=1,rate={rate} \
         ! filesink location={}",
        raw.display()
    );
    let desc = match demux {
        // e.g. ("matroskademux", "audio_1"): other streams go to fakesinks
        Some((demuxer, pad)) => format!(
            "filesrc location={} ! {demuxer} name=d d.{pad} ! {to_raw} d. ! queue ! fakesink \
             d. ! queue ! fakesink",
            file.display()
        ),
        None => {
            let ext = file
                .extension()
                .unwrap()
                .to_string_lossy()
                .to_ascii_lowercase();
            // a sink for the video of a file that has one (an unlinked pad would stop
            // the demuxer; a sink that never gets data would keep it from prerolling)
            let video = if ["wav", "flac"].contains(&ext.as_str()) {
                ""
            } else {
                "d. ! video/x-raw ! fakesink"
            };
            format!(
                "filesrc location={} ! decodebin name=d d. ! audio/x-raw ! {to_raw} {video}",
                file.display()
            )
        }
    };
    gst_launch(&desc);
    std::fs::read(&raw)
        .unwrap()
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Video frames of a file (decoded and counted).
pub fn video_frames(file: &Path) -> u64 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let raw = scratch().join(format!(
        "frames-{}.raw",
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    gst_launch(&format!(
        "filesrc location={} ! decodebin name=d d. ! video/x-raw ! videoconvert ! videoscale \
         ! video/x-raw,format=GRAY8,width=8,height=8 ! filesink location={} \
         d. ! audio/x-raw ! fakesink",
        file.display(),
        raw.display()
    ));
    std::fs::metadata(&raw).unwrap().len() / 64
}

/// `gst-discoverer-1.0 -v` output.
pub fn discover(file: &Path) -> String {
    let out = Command::new("gst-discoverer-1.0")
        .arg("-v")
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Relative power of `freq` in `x` (Goertzel power / total power, 0..1).
pub fn tone_share(x: &[i16], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / rate as f64;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut total = 0.0f64;
    for &v in x {
        let v = v as f64;
        let s = v + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
        total += v * v;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    // a pure tone of N samples: power = (N·A/2)², total = N·A²/2
    (power * 2.0 / x.len() as f64) / total.max(1e-9)
}

/// A child process with its stderr read line by line on a thread.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn start(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Wait (at most `secs`) for a stderr line containing `pat`.
    pub fn wait_for(&mut self, pat: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(pat);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no line with {pat:?} within {secs} s; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Exit status and all output (bounded wait).
    pub fn finish(mut self, secs: u64) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "still running after {secs} s; saw:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        use std::io::Read;
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(l);
        }
        (status, format!("{stdout}{}", self.seen.join("\n")))
    }
}

pub fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}
