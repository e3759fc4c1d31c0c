//! `mmaudio check-weights`: verify a model folder without running the model.
//!
//! For every component a variant needs ([`ModelDir::resolve_all`] order):
//! 1. presence (the official layout, flat, a safetensors conversion or a manifest entry);
//! 2. checksum: the official MD5 for files under their official name, the MD5 a manifest
//!    entry gives, or the SHA-256 recorded when `fetch-weights` verified the download
//!    ([`super::checksums`]); conversions have no reference;
//! 3. content: the file opens as a weight file and holds the component for the variant/mode.
//!    All of this reads only headers and pickle indices (no tensor data), so it is quick even
//!    for 4 GB files.
//!
//! The content check of each component is one function here ([`check_net`], [`check_vae`],
//! [`check_vocoder`], [`check_synchformer`], [`check_clip`]), dispatched by
//! [`check_component_file`]. The network check is complete (every tensor's name and shape
//! against the configuration, strict like `load_state_dict(strict=True)`); the others check
//! the characteristic tensors of the official modules (key names and shapes from the official
//! VAE, BigVGAN, MotionFormer and open_clip code), until their loaders are wired in.

use crate::config::{Mode, NetConfig, Variant};
use crate::error::{Error, Result};
use crate::model_dir::{
    BIGVGAN_V2_DIR, CLIP_DIR, Component, KNOWN_HUB_SHA256, ModelDir, ResolvedFile,
    is_official_name, official_md5, official_name_of_md5,
};
use crate::weights::WeightFile;
use crate::weights::checksums::{ChecksumStore, rel_key};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Severity of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    /// Informational (e.g. a conversion has no reference checksum).
    Note,
    Warn,
    Error,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Note => "note",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// One result of a check on a file.
#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    /// `presence`, `checksum`, `content` or `config`.
    pub aspect: &'static str,
    pub message: String,
}

/// Everything found about one file.
#[derive(Debug, Clone)]
pub struct FileCheck {
    pub component: Component,
    /// The file (or, if it is missing, where it belongs).
    pub path: PathBuf,
    pub size: Option<u64>,
    pub findings: Vec<Finding>,
}

impl FileCheck {
    pub fn level(&self) -> Level {
        self.findings
            .iter()
            .map(|f| f.level)
            .max()
            .unwrap_or(Level::Ok)
    }
    fn push(&mut self, level: Level, aspect: &'static str, message: impl Into<String>) {
        self.findings.push(Finding {
            level,
            aspect,
            message: message.into(),
        });
    }
}

/// Result of checking a folder.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub dir: PathBuf,
    pub variant: Variant,
    pub mode: Mode,
    pub files: Vec<FileCheck>,
    /// Folder-level remarks (e.g. an unreadable checksum record).
    pub notes: Vec<String>,
}

impl CheckReport {
    pub fn count(&self, level: Level) -> usize {
        self.files
            .iter()
            .flat_map(|f| &f.findings)
            .filter(|f| f.level == level)
            .count()
    }
    pub fn errors(&self) -> usize {
        self.count(Level::Error)
    }
    pub fn ok(&self) -> bool {
        self.errors() == 0
    }

    /// Human-readable report.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} — variant {}, {} Hz\n",
            self.dir.display(),
            self.variant,
            self.mode.sampling_rate()
        );
        for n in &self.notes {
            s += &format!("  note: {n}\n");
        }
        for f in &self.files {
            let rel = f.path.strip_prefix(&self.dir).unwrap_or(&f.path);
            s += &format!(
                "{:<6} {:<12} {}{}\n",
                f.level().tag(),
                f.component.describe(),
                rel.display(),
                f.size
                    .map(|n| format!(" ({})", crate::fetch::human_bytes(n)))
                    .unwrap_or_default()
            );
            for x in &f.findings {
                s += &format!(
                    "         {:<5} {:<8} {}\n",
                    x.level.tag(),
                    x.aspect,
                    x.message.replace('\n', "\n                        ")
                );
            }
        }
        let (e, w) = (self.errors(), self.count(Level::Warn));
        s += &if e == 0 {
            format!(
                "all {} component(s) present and consistent with {}{}\n",
                self.files
                    .iter()
                    .map(|f| f.component)
                    .collect::<std::collections::HashSet<_>>()
                    .len(),
                self.variant,
                if w > 0 {
                    format!(" ({w} warning(s))")
                } else {
                    String::new()
                }
            )
        } else {
            format!("{e} error(s), {w} warning(s)\n")
        };
        s
    }

    /// `Err` with the rendered report if anything is wrong.
    pub fn into_result(self) -> Result<Self> {
        if self.ok() {
            Ok(self)
        } else {
            Err(Error::WrongModel {
                path: self.dir.clone(),
                reason: format!("the model folder has problems:\n{}", self.render()),
            })
        }
    }
}

/// Options of [`check_weights`].
#[derive(Clone, Default)]
pub struct CheckOptions {
    /// Also load every tensor of the components whose loader is available (the network), on
    /// the CPU in f32. Slow for big variants; the default checks read headers only.
    pub full: bool,
    /// Status lines (e.g. "hashing ...").
    pub log: Option<crate::fetch::Log>,
}

impl CheckOptions {
    fn say(&self, m: &str) {
        if let Some(l) = &self.log {
            l(m);
        }
    }
}

/// Check the folder `dir` for `variant` (default: the manifest's).
pub fn check_weights(
    dir: &Path,
    variant: Option<Variant>,
    opts: &CheckOptions,
) -> Result<CheckReport> {
    let md = ModelDir::open(dir)?;
    let variant = md.choose_variant(variant)?;
    let mode = md.mode(variant);
    let mut store = ChecksumStore::load(&md.root);
    let mut report = CheckReport {
        dir: md.root.clone(),
        variant,
        mode,
        files: vec![],
        notes: vec![],
    };
    if let Some(w) = store.load_warning.take() {
        report.notes.push(w);
    }
    for c in Component::ALL {
        let mut fc = FileCheck {
            component: c,
            path: md.root.join(crate::model_dir::official_path(variant, c)),
            size: None,
            findings: vec![],
        };
        match md.resolve(variant, c) {
            Err(e) => fc.push(Level::Error, "presence", e.to_string()),
            Ok(r) => {
                fc.path = r.path.clone();
                fc.size = std::fs::metadata(&r.path).ok().map(|m| m.len());
                check_checksum(&md, variant, &r, &mut store, opts, &mut fc);
                match check_component_file(&md, variant, &r) {
                    Ok(summary) => fc.push(Level::Ok, "content", summary),
                    Err(e) => fc.push(Level::Error, "content", e.to_string()),
                }
                if opts.full && c == Component::Net && fc.level() < Level::Error {
                    opts.say(&format!("loading {} ...", r.path.display()));
                    let cfg = net_config_for(&r, variant);
                    match cfg.and_then(|cfg| {
                        crate::net::MmAudioNet::load_file(&r.path, &cfg, DType::F32, &Device::Cpu)
                    }) {
                        Ok(_) => fc.push(Level::Ok, "load", "every tensor loads"),
                        Err(e) => fc.push(Level::Error, "load", e.to_string()),
                    }
                }
            }
        }
        report.files.push(fc);
    }
    // configuration files published next to the weights (optional: the official values are
    // built in)
    for (c, rel) in companion_configs(variant) {
        let p = md.root.join(&rel);
        let flat = md.root.join(rel.file_name().unwrap_or_default());
        let found = [p.clone(), flat].into_iter().find(|p| p.is_file());
        let Some(p) = found else {
            continue;
        };
        let mut fc = FileCheck {
            component: c,
            size: std::fs::metadata(&p).ok().map(|m| m.len()),
            path: p.clone(),
            findings: vec![],
        };
        let key = rel_key(&md.root, &p);
        if let Some(v) = store.get(&key).and_then(|r| r.verified.clone()) {
            match sums_logged(&md.root, &p, &mut store, opts) {
                Ok(s) if s.sha256 == v.sha256 => {
                    fc.push(Level::Ok, "checksum", format!("matches {}", v.against))
                }
                Ok(s) => fc.push(
                    Level::Error,
                    "checksum",
                    format!(
                        "changed since it was verified ({}): SHA-256 {} expected, got {}",
                        v.against, v.sha256, s.sha256
                    ),
                ),
                Err(e) => fc.push(Level::Error, "checksum", e.to_string()),
            }
        }
        let configured = md
            .manifest
            .as_ref()
            .and_then(|m| m.entry(c))
            .is_some_and(|e| e.config.is_some());
        if configured {
            // the loader takes the manifest's configuration and never reads this file
            fc.push(
                Level::Ok,
                "config",
                format!(
                    "not used: {} configures the {}",
                    crate::model_dir::MANIFEST,
                    c.describe()
                ),
            );
        } else {
            match check_companion_config(c, &p, mode) {
                Ok(s) => fc.push(Level::Ok, "config", s),
                Err(e) => fc.push(Level::Error, "config", e.to_string()),
            }
        }
        report.files.push(fc);
    }
    if let Err(e) = store.save(&md.root) {
        report
            .notes
            .push(format!("cannot update the checksum record: {e}"));
    }
    Ok(report)
}

fn companion_configs(variant: Variant) -> Vec<(Component, PathBuf)> {
    let mut v = vec![];
    if variant.mode() == Mode::Khz44 {
        v.push((
            Component::Vocoder,
            Path::new("ext_weights")
                .join(BIGVGAN_V2_DIR)
                .join("config.json"),
        ));
    }
    v.push((
        Component::Clip,
        Path::new("ext_weights")
            .join(CLIP_DIR)
            .join("open_clip_config.json"),
    ));
    v
}

fn sums_logged(
    root: &Path,
    path: &Path,
    store: &mut ChecksumStore,
    opts: &CheckOptions,
) -> Result<crate::weights::checksums::Sums> {
    store.sums(
        root,
        path,
        &mut |p, n| {
            opts.say(&format!(
                "hashing {} ({})",
                p.display(),
                crate::fetch::human_bytes(n)
            ))
        },
        &mut |_| {},
    )
}

/// Compare a component file with its reference checksum, if it has one.
fn check_checksum(
    md: &ModelDir,
    variant: Variant,
    r: &ResolvedFile,
    store: &mut ChecksumStore,
    opts: &CheckOptions,
    fc: &mut FileCheck,
) {
    let name = r
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let manifest_md5 = md
        .manifest
        .as_ref()
        .and_then(|m| m.entry(r.component))
        .and_then(|e| e.md5.clone());
    let official = is_official_name(variant, r.component, &r.path);
    let md5_ref: Option<(String, String)> = match manifest_md5 {
        Some(m) => Some((m, format!("MD5 given by {}", crate::model_dir::MANIFEST))),
        None if official => official_md5(&name).map(|m| (m.to_string(), "official MD5".into())),
        None => None,
    };
    let key = rel_key(&md.root, &r.path);
    let recorded = store.get(&key).and_then(|x| x.verified.clone());
    let known: Vec<&(&str, &str, &str)> = KNOWN_HUB_SHA256
        .iter()
        .filter(|(n, _, _)| *n == name)
        .collect();
    if md5_ref.is_none() && recorded.is_none() && known.is_empty() {
        if official {
            fc.push(
                Level::Warn,
                "checksum",
                format!(
                    "no recorded checksum (placed by hand?): run `mmaudio fetch-weights --variant {variant} --model-dir {}` \
                     with network access to verify it against the Hugging Face Hub",
                    md.root.display()
                ),
            );
        } else {
            fc.push(
                Level::Note,
                "checksum",
                "no reference checksum (conversion or alternative file)",
            );
        }
        return;
    }
    let sums = match sums_logged(&md.root, &r.path, store, opts) {
        Ok(s) => s,
        Err(e) => {
            fc.push(Level::Error, "checksum", format!("cannot read: {e}"));
            return;
        }
    };
    if let Some((m, what)) = md5_ref {
        if sums.md5.eq_ignore_ascii_case(&m) {
            fc.push(Level::Ok, "checksum", format!("matches the {what} {m}"));
        } else {
            let hint = match official_name_of_md5(&sums.md5) {
                Some(other) => format!(": this is the official {other}"),
                None => match recorded.as_ref().filter(|v| v.size > sums.size) {
                    Some(v) => format!(
                        ": the file is truncated ({} bytes; the verified download had {})",
                        sums.size, v.size
                    ),
                    None => ": the file is corrupt, incomplete or another file".into(),
                },
            };
            fc.push(
                Level::Error,
                "checksum",
                Error::Checksum {
                    path: r.path.clone(),
                    algo: "MD5".into(),
                    expected: m,
                    actual: sums.md5.clone(),
                    hint: format!(
                        " ({what}){hint}; delete it and run `mmaudio fetch-weights --variant {variant} --model-dir {}`",
                        md.root.display()
                    ),
                }
                .to_string(),
            );
        }
        return;
    }
    if let Some(v) = recorded {
        if v.sha256 == sums.sha256 {
            fc.push(Level::Ok, "checksum", format!("matches {}", v.against));
        } else {
            let what = if sums.size < v.size {
                format!(
                    "the file is truncated ({} bytes; the verified download had {})",
                    sums.size, v.size
                )
            } else {
                "the file changed since it was downloaded and verified".to_string()
            };
            fc.push(
                Level::Error,
                "checksum",
                Error::Checksum {
                    path: r.path.clone(),
                    algo: "SHA-256".into(),
                    expected: v.sha256.clone(),
                    actual: sums.sha256.clone(),
                    hint: format!(
                        " (recorded at download, {}): {what}; delete it and run `mmaudio fetch-weights --variant {variant} --model-dir {}`",
                        v.against,
                        md.root.display()
                    ),
                }
                .to_string(),
            );
        }
        return;
    }
    match known.iter().find(|(_, s, _)| *s == sums.sha256) {
        Some((_, _, note)) => fc.push(
            Level::Ok,
            "checksum",
            format!("matches the Hub SHA-256 of {note}"),
        ),
        None => fc.push(
            Level::Warn,
            "checksum",
            format!(
                "SHA-256 {} is not a known published version and no download was recorded: run \
                 `mmaudio fetch-weights --variant {variant} --model-dir {}` with network access to verify it",
                sums.sha256,
                md.root.display()
            ),
        ),
    }
}

fn net_config_for(r: &ResolvedFile, variant: Variant) -> Result<NetConfig> {
    match &r.config {
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            Error::config(format!(
                "network configuration in {}: {e}",
                crate::model_dir::MANIFEST
            ))
        }),
        None => Ok(variant.net_config()),
    }
}

/// Open a resolved component file and check it holds that component for the variant. Returns
/// a one-line summary.
pub fn check_component_file(md: &ModelDir, variant: Variant, r: &ResolvedFile) -> Result<String> {
    let wf = WeightFile::open_with_key(&r.path, r.key.as_deref())?;
    let mode = md.mode(variant);
    let custom = r.config.is_some();
    let dtype = wf
        .dominant_dtype()
        .map(|d| format!("{d:?}").to_lowercase())
        .unwrap_or_default();
    let what = match r.component {
        Component::Net => check_net(&wf, &net_config_for(r, variant)?, variant)?,
        _ if custom => format!(
            "custom configuration from {}: shapes are checked when it is loaded",
            crate::model_dir::MANIFEST
        ),
        Component::Vae => check_vae(&wf, mode)?,
        Component::Vocoder => check_vocoder(&wf, mode)?,
        Component::Synchformer => check_synchformer(&wf)?,
        Component::Clip => check_clip(&wf)?,
    };
    Ok(format!("{what}; {} tensors, {dtype}", wf.keys().len()))
}

// ---------------------------------------------------------------------------------------------
// expected shapes without allocating

/// A var-builder backend that records every requested name and shape and returns zero-stride
/// views of one zero, so a model constructor yields its list of parameters without reading or
/// allocating weights (only the copies the constructor itself makes cost memory).
struct ShapeRecorder(Arc<Mutex<ShapeList>>);

/// Parameter names with their shapes.
pub type ShapeList = Vec<(String, Vec<usize>)>;

impl candle_nn::var_builder::SimpleBackend for ShapeRecorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .unwrap()
            .push((name.to_string(), s.dims().to_vec()));
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!(
            "shape recorder: `{name}` requested without a shape"
        )))
    }
    fn contains_tensor(&self, _name: &str) -> bool {
        false
    }
}

/// Every parameter name and shape `build` requests, without weights. The var builder's dtype is
/// u8, so copies the constructor makes (transposed or fused weights) cost one byte per
/// parameter; build a reduced configuration when only the names matter (see [`check_net`]).
pub fn expected_shapes(build: impl FnOnce(VarBuilder) -> Result<()>) -> Result<ShapeList> {
    let rec = Arc::new(Mutex::new(vec![]));
    let vb = VarBuilder::from_backend(Box::new(ShapeRecorder(rec.clone())), DType::U8, Device::Cpu);
    build(vb)?;
    let mut v = std::mem::take(&mut *rec.lock().unwrap());
    v.sort();
    v.dedup();
    Ok(v)
}

/// Strictly compare a file's tensors with an expected list (`None`: any shape): missing
/// tensors, wrong shapes and tensors that do not belong (unless `ignore` says so) are all
/// reported in one error, like `load_state_dict(strict=True)`.
pub fn compare_tensors(
    wf: &WeightFile,
    expected: &[(String, Option<Vec<usize>>)],
    ignore: impl Fn(&str) -> bool,
    what: &str,
) -> Result<()> {
    let mut missing = vec![];
    let mut wrong = vec![];
    for (k, s) in expected {
        match (wf.shape(k), s) {
            (None, Some(s)) => missing.push(format!("`{k}` {s:?}")),
            (None, None) => missing.push(format!("`{k}`")),
            (Some(a), Some(s)) if a != s.as_slice() => {
                wrong.push(format!("`{k}` is {a:?}, expected {s:?}"))
            }
            _ => {}
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
    let extra: Vec<String> = wf
        .keys()
        .into_iter()
        .filter(|k| !known.contains(k.as_str()) && !ignore(k))
        .map(|k| format!("`{k}`"))
        .collect();
    if missing.is_empty() && wrong.is_empty() && extra.is_empty() {
        return Ok(());
    }
    let list = |v: &[String]| {
        let shown = v.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 4 {
            format!("{shown}, ...")
        } else {
            shown
        }
    };
    let mut parts = vec![];
    if !missing.is_empty() {
        parts.push(format!(
            "{} tensor(s) missing ({})",
            missing.len(),
            list(&missing)
        ));
    }
    if !wrong.is_empty() {
        parts.push(format!(
            "{} with a wrong shape ({})",
            wrong.len(),
            list(&wrong)
        ));
    }
    if !extra.is_empty() {
        parts.push(format!(
            "{} that do not belong to it ({})",
            extra.len(),
            list(&extra)
        ));
    }
    Err(Error::WrongModel {
        path: wf.path().to_owned(),
        reason: format!("does not hold {what}: {}", parts.join("; ")),
    })
}

// ---------------------------------------------------------------------------------------------
// per-component checks

/// A configuration with the same tensor names as `cfg` but a 64-wide hidden size: building it
/// lists the network's parameter names without the cost of the real widths (the constructor
/// copies some weights, so recording the real model would touch its full size).
fn structure_config(cfg: &NetConfig) -> NetConfig {
    NetConfig {
        hidden_dim: 64,
        num_heads: 1,
        ..cfg.clone()
    }
}

/// The flow network: the architecture read off the file (hidden and latent widths, joint and
/// fused depth, v1/v2 layout) must be `cfg`'s — a wrong variant is named as such — and the
/// file must hold exactly the tensors that architecture has (no missing, no foreign ones).
/// Reads only the file's index. The shape of every tensor is checked when it is loaded
/// (`check-weights --full`, or the element).
pub fn check_net(wf: &WeightFile, cfg: &NetConfig, variant: Variant) -> Result<String> {
    crate::net::check_variant(wf, cfg)?;
    let names: Vec<(String, Option<Vec<usize>>)> =
        expected_shapes(|vb| crate::net::MmAudioNet::new(vb, &structure_config(cfg)).map(|_| ()))?
            .into_iter()
            .map(|(k, _)| (k, None))
            .collect();
    let name = if *cfg == variant.net_config() {
        format!("the {variant} network")
    } else {
        "the configured network".to_string()
    };
    compare_tensors(wf, &names, crate::net::is_ignorable_key, &name)?;
    Ok(format!(
        "{name} (hidden {}, depth {}, fused {}, latent {}{}), all {} tensors present",
        cfg.hidden_dim,
        cfg.depth,
        cfg.fused_depth,
        cfg.latent_dim,
        if cfg.v2 { ", v2" } else { "" },
        names.len()
    ))
}

fn other_mode(m: Mode) -> Mode {
    match m {
        Mode::Khz16 => Mode::Khz44,
        Mode::Khz44 => Mode::Khz16,
    }
}

/// First of `keys` the file holds, with its shape; else a missing-tensor error naming the first.
fn find<'a>(
    wf: &'a WeightFile,
    keys: &[&str],
    expected: &[usize],
) -> Result<(String, &'a [usize])> {
    for k in keys {
        if let Some(s) = wf.shape(k) {
            return Ok((k.to_string(), s));
        }
    }
    Err(Error::MissingTensor {
        path: wf.path().to_owned(),
        key: keys.join("` or `"),
        expected: expected.to_vec(),
    })
}

/// Check a shape with wildcards (`None`); `hint` explains a mismatch.
fn expect(
    wf: &WeightFile,
    key: &str,
    actual: &[usize],
    want: &[Option<usize>],
    hint: &str,
) -> Result<()> {
    let ok = actual.len() == want.len()
        && actual
            .iter()
            .zip(want)
            .all(|(a, w)| w.is_none_or(|w| w == *a));
    if ok {
        return Ok(());
    }
    Err(Error::ShapeMismatch {
        path: wf.path().to_owned(),
        key: key.to_string(),
        expected: want.iter().map(|w| w.unwrap_or(0)).collect(),
        actual: actual.to_vec(),
        hint: hint.to_string(),
    })
}

fn count_indexed(wf: &WeightFile, prefix: &str) -> usize {
    wf.keys()
        .iter()
        .filter_map(|k| {
            k.strip_prefix(prefix)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1)
}

/// The VAE (`ext_weights/v1-16.pth` / `v1-44.pth`, official `mmaudio/ext/autoencoder/vae.py`):
/// mel statistics `data_mean`/`data_std` `[1, n_mels, 1]`, encoder input `[_, n_mels, k]`,
/// decoder input `[_, latent_dim, k]`.
pub fn check_vae(wf: &WeightFile, mode: Mode) -> Result<String> {
    let (mels, latent) = (mode.n_mels(), mode.latent_dim());
    let o = other_mode(mode);
    let hint = format!(" (this looks like the {o} VAE {})", o.vae_file());
    let looks_other = |dim: usize, other: usize| if dim == other { hint.as_str() } else { "" };
    for k in ["data_mean", "data_std"] {
        let (k, s) = find(wf, &[k], &[1, mels, 1])?;
        expect(
            wf,
            &k,
            s,
            &[Some(1), Some(mels), Some(1)],
            looks_other(s.get(1).copied().unwrap_or(0), o.n_mels()),
        )?;
    }
    let (k, s) = find(wf, &["encoder.conv_in.weight"], &[0, mels, 0])?;
    expect(
        wf,
        &k,
        s,
        &[None, Some(mels), None],
        looks_other(s.get(1).copied().unwrap_or(0), o.n_mels()),
    )?;
    let (k, s) = find(wf, &["decoder.conv_in.weight"], &[0, latent, 0])?;
    expect(
        wf,
        &k,
        s,
        &[None, Some(latent), None],
        looks_other(s.get(1).copied().unwrap_or(0), o.latent_dim()),
    )?;
    Ok(format!(
        "the {} VAE ({mels} mel bins, latent {latent})",
        mode
    ))
}

/// The vocoder: BigVGAN (16 kHz, `best_netG.pt`, official `mmaudio/ext/bigvgan`) or
/// BigVGAN-v2 (44.1 kHz, `nvidia/bigvgan_v2_44khz_128band_512x`). Both take `n_mels` input
/// channels in `conv_pre` (weight-norm `weight_v`, new-style parametrization, or plain weight
/// once weight norm is folded), with 6 upsampling stages.
pub fn check_vocoder(wf: &WeightFile, mode: Mode) -> Result<String> {
    let mels = mode.n_mels();
    let o = other_mode(mode);
    let (k, s) = find(
        wf,
        &[
            "conv_pre.weight_v",
            "conv_pre.parametrizations.weight.original1",
            "conv_pre.weight",
        ],
        &[0, mels, 7],
    )?;
    let hint = if s.get(1) == Some(&o.n_mels()) {
        format!(
            " (this is a vocoder for {} mel bins: the {o} one, {})",
            o.n_mels(),
            match o {
                Mode::Khz16 => "best_netG.pt",
                Mode::Khz44 => "bigvgan_generator.pt",
            }
        )
    } else {
        String::new()
    };
    expect(wf, &k, s, &[None, Some(mels), Some(7)], &hint)?;
    let ups = count_indexed(wf, "ups.");
    let res = count_indexed(wf, "resblocks.");
    if ups == 0 || res == 0 || !wf.keys().iter().any(|k| k.starts_with("conv_post.")) {
        return Err(Error::WrongModel {
            path: wf.path().to_owned(),
            reason: format!(
                "does not look like a BigVGAN generator ({ups} upsampling stages, {res} residual blocks, conv_post {})",
                if wf.keys().iter().any(|k| k.starts_with("conv_post.")) {
                    "present"
                } else {
                    "missing"
                }
            ),
        });
    }
    Ok(format!(
        "a BigVGAN{} generator for {mels} mel bins ({ups} upsampling stages, {res} residual blocks)",
        if mode == Mode::Khz44 { "-v2" } else { "" }
    ))
}

/// Synchformer (`synchformer_state_dict.pth`; only `vfeat_extractor.*` is used): MotionFormer
/// ViT-B/16 with 2-frame tubelets, 768 wide, 12 blocks, 8 temporal positions.
pub fn check_synchformer(wf: &WeightFile) -> Result<String> {
    let p = "vfeat_extractor.";
    let shapes: [(&str, Vec<usize>); 4] = [
        ("patch_embed_3d.proj.weight", vec![768, 3, 2, 16, 16]),
        ("cls_token", vec![1, 1, 768]),
        ("pos_embed", vec![1, 197, 768]),
        ("temp_embed", vec![1, 8, 768]),
    ];
    for (k, want) in &shapes {
        let key = format!("{p}{k}");
        let (k, s) = find(wf, &[&key], want)?;
        let w: Vec<Option<usize>> = want.iter().map(|&d| Some(d)).collect();
        expect(wf, &k, s, &w, "")?;
    }
    let blocks = count_indexed(wf, "vfeat_extractor.blocks.");
    if blocks != 12 {
        return Err(Error::WrongModel {
            path: wf.path().to_owned(),
            reason: format!("Synchformer has {blocks} transformer blocks, expected 12"),
        });
    }
    Ok("Synchformer (MotionFormer, 768 wide, 12 blocks)".into())
}

/// CLIP DFN5B ViT-H-14 at 384 px (open_clip): vision 1280 wide, 32 blocks, 27×27+1
/// positions, projection to 1024; text 1024 wide, 24 blocks, 77 positions, 49408 tokens.
pub fn check_clip(wf: &WeightFile) -> Result<String> {
    let shapes: [(&str, Vec<usize>); 6] = [
        ("visual.conv1.weight", vec![1280, 3, 14, 14]),
        ("visual.positional_embedding", vec![730, 1280]),
        ("visual.proj", vec![1280, 1024]),
        ("token_embedding.weight", vec![49408, 1024]),
        ("positional_embedding", vec![77, 1024]),
        ("text_projection", vec![1024, 1024]),
    ];
    for (k, want) in &shapes {
        let (k, s) = find(wf, &[k], want)?;
        let w: Vec<Option<usize>> = want.iter().map(|&d| Some(d)).collect();
        let hint = if k == "visual.positional_embedding" && s.first() == Some(&257) {
            " (a 224 px model: the DFN5B-CLIP-ViT-H-14 without -384/-378)"
        } else {
            ""
        };
        expect(wf, &k, s, &w, hint)?;
    }
    let (v, t) = (
        count_indexed(wf, "visual.transformer.resblocks."),
        count_indexed(wf, "transformer.resblocks."),
    );
    if (v, t) != (32, 24) {
        return Err(Error::WrongModel {
            path: wf.path().to_owned(),
            reason: format!(
                "CLIP has {v} vision and {t} text blocks, expected 32 and 24 (ViT-H-14)"
            ),
        });
    }
    Ok("CLIP ViT-H-14 (DFN5B, 384 px)".into())
}

/// Check a configuration file published next to the weights against the values the port
/// uses (fields that are absent are not checked).
pub fn check_companion_config(c: Component, path: &Path, mode: Mode) -> Result<String> {
    let text = std::fs::read_to_string(path)?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::WeightFile {
        path: path.to_owned(),
        reason: format!("invalid JSON: {e}"),
    })?;
    let bad = |what: String| Error::WrongModel {
        path: path.to_owned(),
        reason: what,
    };
    let check = |obj: &serde_json::Value, ptr: &str, want: i64| -> Result<()> {
        let got = obj.pointer(ptr);
        let got = match got {
            None => return Ok(()),
            Some(serde_json::Value::Array(a)) => a.first().and_then(|x| x.as_i64()),
            Some(x) => x.as_i64(),
        };
        match got {
            Some(g) if g == want => Ok(()),
            other => Err(bad(format!(
                "`{ptr}` is {}, expected {want}",
                other.map_or("not a number".into(), |g| g.to_string())
            ))),
        }
    };
    match c {
        Component::Vocoder => {
            check(&v, "/num_mels", mode.n_mels() as i64)?;
            check(&v, "/sampling_rate", mode.sampling_rate() as i64)?;
            check(&v, "/hop_size", mode.hop_length() as i64)?;
            Ok(format!(
                "BigVGAN-v2 configuration ({} mel bins, {} Hz)",
                mode.n_mels(),
                mode.sampling_rate()
            ))
        }
        Component::Clip => {
            let m = v.get("model_cfg").unwrap_or(&v);
            check(m, "/embed_dim", 1024)?;
            check(m, "/vision_cfg/image_size", 384)?;
            check(m, "/vision_cfg/patch_size", 14)?;
            check(m, "/vision_cfg/width", 1280)?;
            check(m, "/vision_cfg/layers", 32)?;
            check(m, "/text_cfg/width", 1024)?;
            check(m, "/text_cfg/layers", 24)?;
            Ok("open_clip configuration (ViT-H-14, 384 px)".into())
        }
        other => Ok(format!("{} configuration", other.describe())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_config_has_the_same_tensor_names() {
        let names = |c: &NetConfig| -> Vec<String> {
            expected_shapes(|vb| crate::net::MmAudioNet::new(vb, c).map(|_| ()))
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        // the real widths of the small variants are affordable here
        for cfg in [NetConfig::small_16k(), NetConfig::small_44k()] {
            assert_eq!(names(&structure_config(&cfg)), names(&cfg));
        }
        let mut v2 = NetConfig::small_16k();
        v2.v2 = true;
        assert_eq!(names(&structure_config(&v2)), names(&v2));
        let large = names(&structure_config(&NetConfig::large_44k_v2()));
        assert!(large.iter().any(|k| k.starts_with("fused_blocks.13.")));
        assert!(large.iter().any(|k| k.starts_with("joint_blocks.6.")));
    }
}
