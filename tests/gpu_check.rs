//! `scripts/gpu-check.sh`: the bundle's CLI starts without GStreamer, the run plan fits the
//! device time limit, and the run's logic — steps under limits and a deadline, the summary
//! rewritten after every step — holds when a step hangs (exercised on the CPU with the
//! smoke settings, as on a GPU machine).
//!
//! `cargo test --release --test gpu_check -- --nocapture`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

/// The CLI test rebuilds `target/release/mmaudio` for a moment: the others wait for it.
static BIN: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    root().join("scripts/gpu-check.sh")
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_mmaudio"))
        .parent()
        .unwrap()
        .to_owned()
}

fn needed(file: &Path) -> Vec<String> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(file)
        .output()
        .expect("readelf (binutils) runs");
    assert!(out.status.success(), "readelf -d {}", file.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| {
            let a = l.find('[')?;
            let b = l.rfind(']')?;
            Some(l[a + 1..b].to_string())
        })
        .collect()
}

fn is_gst_or_glib(lib: &str) -> bool {
    [
        "libgst",
        "libglib-",
        "libgobject-",
        "libgio-",
        "libgmodule-",
    ]
    .iter()
    .any(|p| lib.starts_with(p))
}

/// The bundle's CLI is built as `gpu-check.sh build` builds it (`--no-default-features`),
/// here without CUDA: it must not need GStreamer or GLib, and `check-cli` must say so — and
/// must reject the default CLI, which does need them.
#[test]
fn bundled_cli_needs_no_gstreamer() {
    let _guard = BIN.lock().unwrap_or_else(|e| e.into_inner());
    let default_cli = PathBuf::from(env!("CARGO_BIN_EXE_mmaudio"));
    let with_gst = needed(&default_cli);
    assert!(
        with_gst.iter().any(|l| is_gst_or_glib(l)),
        "the default CLI is expected to link GStreamer: {with_gst:?}"
    );
    let check = Command::new("bash")
        .arg(script())
        .arg("check-cli")
        .arg(&default_cli)
        .output()
        .unwrap();
    assert!(
        !check.status.success(),
        "check-cli accepted a CLI that needs GStreamer"
    );
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("needs GStreamer/GLib libraries"),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // the nested build rewrites target/release/mmaudio: keep the default CLI for the tests
    // that run after this one, and restore it whatever happens
    let saved = std::env::temp_dir().join(format!("mmaudio-default-cli-{}", std::process::id()));
    std::fs::copy(&default_cli, &saved).unwrap();
    struct Restore(PathBuf, PathBuf);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.1);
            let _ = std::fs::copy(&self.0, &self.1);
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _restore = Restore(saved, default_cli.clone());
    let target = bin_dir().parent().unwrap().to_owned();
    let out = Command::new("bash")
        .arg(script())
        .arg("build-cli")
        .env("GPU_CHECK_FEATURES", "none")
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "gpu-check.sh build-cli failed:\n{err}"
    );
    let cli = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert_eq!(cli, target.join("release/mmaudio"));
    let libs = needed(&cli);
    assert!(!libs.is_empty());
    assert!(
        libs.iter().all(|l| !is_gst_or_glib(l)),
        "the bundle's CLI needs {libs:?}"
    );
    // and it runs: the subcommands of a GPU check are there
    let help = Command::new(&cli).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for cmd in ["bench", "parity", "selftest"] {
        assert!(help.contains(cmd), "{help}");
    }
    assert!(!help.contains("generate"), "{help}");
}

/// The plan's limits add up to at most 540 s (a device command is killed at 600 s).
#[test]
fn plan_fits_the_device_time_limit() {
    let out = Command::new("bash")
        .arg(script())
        .arg("plan")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sum = 0;
    let mut total = None;
    let mut names = vec![];
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 3 && f[2] == "s" {
            let v: u64 = f[1].parse().unwrap();
            if f[0] == "total" {
                total = Some(v);
            } else {
                sum += v;
                names.push(f[0].to_string());
            }
        }
    }
    assert_eq!(total, Some(sum), "{text}");
    assert!(sum <= 540, "{text}");
    // by value: bf16 parity on a few cases first, then the e2e benchmarks
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(pos("warm-up") < pos("parity-bf16-first"), "{names:?}");
    assert!(pos("parity-bf16-first") < pos("e2e-small_16k"), "{names:?}");
    assert!(pos("e2e-small_16k") < pos("e2e-large_44k_v2"), "{names:?}");
    assert!(pos("e2e-large_44k_v2") < pos("parity-f32"), "{names:?}");
}

fn smoke_run(out: &Path, envs: &[(&str, &str)]) -> (std::process::Output, f64) {
    let parity = mmaudio::parity::default_dir();
    let t = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .arg("run")
        .env("OUT", out)
        .env("GPU_CHECK_DEVICE", "cpu")
        .env("GPU_CHECK_SMOKE", "1")
        .env("GPU_CHECK_BIN_DIR", bin_dir())
        .env("GST_REGISTRY", out.join("registry.bin"))
        .env("GPU_CHECK_PARITY_DIR", &parity);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    (o, t.elapsed().as_secs_f64())
}

fn steps(out: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(out.join("steps.tsv"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[1].to_string())
        })
        .collect()
}

/// A hanging step is killed at its limit, the next steps run, and the summary names every
/// step; with the budget spent the rest is skipped, and the run still ends with a summary.
#[test]
fn smoke_run_survives_a_hanging_step() {
    let _guard = BIN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempdir("hang");
    let (o, secs) = smoke_run(
        &dir,
        &[
            ("GPU_CHECK_HANG", "e2e-small_16k"),
            ("GPU_CHECK_HANG_LIMIT", "2"),
        ],
    );
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{log}");
    let st = steps(&dir);
    let status = |n: &str| {
        st.iter()
            .find(|(s, _)| s == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no step {n}: {st:?}\n{log}"))
    };
    assert_eq!(status("e2e-small_16k"), "FAIL(timeout after 2s)", "{log}");
    for n in [
        "warm-up",
        "e2e-large_44k_v2",
        "stream-large_44k_v2",
        "stream-small_16k",
    ] {
        assert_eq!(status(n), "ok", "{n}\n{log}");
    }
    let summary = std::fs::read_to_string(dir.join("summary.txt")).unwrap();
    assert!(
        summary.contains("e2e-small_16k") && summary.contains("timeout"),
        "{summary}"
    );
    assert!(summary.contains("e2e large_44k_v2 [cpu bf16]"), "{summary}");
    assert!(secs < 240.0, "smoke run took {secs:.0} s");
    let _ = std::fs::remove_dir_all(&dir);

    // a budget that the hang exhausts: the hanging step is cut at the deadline (or, on a
    // slow machine, already skipped), the later steps are skipped, the run ends near its
    // budget with a summary
    let dir = tempdir("budget");
    let budget = 20;
    let (o, secs) = smoke_run(
        &dir,
        &[
            ("GPU_CHECK_HANG", "warm-up"),
            ("GPU_CHECK_HANG_LIMIT", "600"),
            ("GPU_CHECK_BUDGET_S", &budget.to_string()),
        ],
    );
    assert!(o.status.success());
    assert!(secs < budget as f64 + 15.0, "the run took {secs:.0} s");
    let st = steps(&dir);
    let warm = st.iter().find(|(n, _)| n == "warm-up").unwrap();
    assert!(
        warm.1.starts_with("FAIL(timeout") || warm.1.starts_with("skipped (time budget"),
        "{st:?}"
    );
    let last = st.last().unwrap();
    assert!(last.1.starts_with("skipped (time budget"), "{st:?}");
    let summary = std::fs::read_to_string(dir.join("summary.txt")).unwrap();
    assert!(summary.contains("skipped (time budget spent)"), "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Missing CUDA libraries are named up front and every step that needs the CLI is skipped,
/// instead of each failing at exec.
#[test]
fn missing_libraries_are_reported_up_front() {
    let dir = tempdir("nolib");
    // a stand-in "CLI" that needs a library no machine has
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let so = dir.join("libmmaudio-gpu-check-missing.so");
    let src = dir.join("m.c");
    std::fs::write(&src, "int missing_fn(void) { return 1; }\n").unwrap();
    let cc = |args: &[&str]| Command::new("cc").args(args).status();
    match cc(&[
        "-shared",
        "-fPIC",
        "-o",
        so.to_str().unwrap(),
        src.to_str().unwrap(),
    ]) {
        Ok(s) if s.success() => {}
        _ => {
            eprintln!("no C compiler: skipping");
            return;
        }
    }
    let main = dir.join("main.c");
    std::fs::write(
        &main,
        "int missing_fn(void); int main(void) { return missing_fn(); }\n",
    )
    .unwrap();
    let exe = bin.join("mmaudio");
    assert!(
        cc(&[
            "-o",
            exe.to_str().unwrap(),
            main.to_str().unwrap(),
            "-L",
            dir.to_str().unwrap(),
            "-lmmaudio-gpu-check-missing",
        ])
        .unwrap()
        .success()
    );
    std::fs::remove_file(&so).unwrap();
    let out = dir.join("out");
    let o = Command::new("bash")
        .arg(script())
        .arg("run")
        .env("OUT", &out)
        .env("GPU_CHECK_DEVICE", "cpu")
        .env("GPU_CHECK_BIN_DIR", &bin)
        .env("GPU_CHECK_PARITY_DIR", dir.join("none"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap();
    assert!(
        summary.contains("missing libmmaudio-gpu-check-missing.so"),
        "{summary}"
    );
    let st = steps(&out);
    let e2e = st.iter().find(|(n, _)| n == "e2e-small_16k").unwrap();
    assert!(e2e.1.starts_with("skipped (the CLI misses"), "{st:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mmaudio-gpu-check-test-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
