//! GStreamer set-up shared by the CLI's GStreamer subcommands: where the `mmaudiogen`
//! plugin is looked for, and which packages provide missing elements.

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// File name of the plugin built by `cargo build --release --workspace`.
pub const PLUGIN_FILE: &str = "libgstmmaudio.so";

/// Folders searched for the plugin besides `GST_PLUGIN_PATH` and GStreamer's defaults:
/// the folder of this executable (`target/release` after a cargo build) and the plugin
/// folders of an install prefix next to it (`<prefix>/bin/mmaudio` →
/// `<prefix>/lib/gstreamer-1.0`, `<prefix>/lib/<arch>-linux-gnu/gstreamer-1.0`).
pub fn own_plugin_dirs() -> Vec<PathBuf> {
    let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.canonicalize().ok())
        .and_then(|e| e.parent().map(Path::to_path_buf))
    else {
        return Vec::new();
    };
    let mut dirs = vec![exe_dir.clone()];
    if let Some(prefix) = exe_dir.parent() {
        dirs.push(prefix.join("lib").join("gstreamer-1.0"));
        dirs.push(
            prefix
                .join("lib")
                .join(format!("{}-linux-gnu", std::env::consts::ARCH))
                .join("gstreamer-1.0"),
        );
    }
    dirs.retain(|d| d.join(PLUGIN_FILE).is_file());
    dirs
}

/// Add [`own_plugin_dirs`] to `GST_PLUGIN_PATH` (after the folders already named there, so
/// that an explicit `GST_PLUGIN_PATH` wins), then initialise GStreamer.
pub fn init() -> Result<()> {
    let mut paths: Vec<PathBuf> = std::env::var_os("GST_PLUGIN_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    for d in own_plugin_dirs() {
        if !paths.contains(&d) {
            paths.push(d);
        }
    }
    if !paths.is_empty() {
        let joined = std::env::join_paths(&paths)?;
        // SAFETY: called from the main thread before GStreamer (or any other thread) starts.
        unsafe { std::env::set_var("GST_PLUGIN_PATH", joined) };
    }
    if let Err(e) = gst::init() {
        bail!("cannot initialise GStreamer: {e}");
    }
    Ok(())
}

/// Fail with instructions unless the `mmaudiogen` element is available.
pub fn require_mmaudiogen() -> Result<()> {
    if gst::ElementFactory::find("mmaudiogen").is_some() {
        return Ok(());
    }
    let searched: Vec<PathBuf> = std::env::var_os("GST_PLUGIN_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    let present: Vec<String> = searched
        .iter()
        .filter(|d| d.join(PLUGIN_FILE).is_file())
        .map(|d| d.join(PLUGIN_FILE).display().to_string())
        .collect();
    let list = |v: &[PathBuf]| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    if present.is_empty() {
        bail!(
            "the GStreamer element `mmaudiogen` was not found. Build the plugin with \
             `cargo build --release --workspace` (it is target/release/{PLUGIN_FILE}, found next \
             to target/release/mmaudio), or point GST_PLUGIN_PATH at the folder that holds \
             {PLUGIN_FILE}. Searched GST_PLUGIN_PATH: {} and GStreamer's default plugin folders",
            list(&searched)
        );
    }
    bail!(
        "the GStreamer element `mmaudiogen` was not found although {} exists: the plugin \
         failed to load, or GStreamer's registry cache still lists an older, broken build. \
         Delete the cache (`rm ~/.cache/gstreamer-1.0/registry.*.bin`) and retry; \
         `GST_DEBUG=GST_PLUGIN_LOADING:4 gst-inspect-1.0 {}` shows why it does not load",
        present.join(", "),
        present[0]
    )
}

/// Fail naming the package to install unless every element factory exists.
pub fn require_elements(names: &[&str]) -> Result<()> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| gst::ElementFactory::find(n).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let package = |n: &str| match n {
        "avenc_aac" => "gstreamer1.0-libav",
        "mp4mux" | "qtmux" | "matroskamux" | "webmmux" | "wavenc" | "flacenc" => {
            "gstreamer1.0-plugins-good"
        }
        "fdkaacenc" | "voaacenc" => "gstreamer1.0-plugins-bad",
        _ => "gstreamer1.0-plugins-base",
    };
    let mut packages: Vec<&str> = missing.iter().map(|n| package(n)).collect();
    packages.dedup();
    bail!(
        "GStreamer element(s) {} not installed (Debian/Ubuntu: `sudo apt-get install {}`)",
        missing.join(", "),
        packages.join(" ")
    )
}
