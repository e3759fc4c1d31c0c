//! Data-driven parity runner against the golden fixtures of the official code.
//!
//! A fixture folder holds one sub-folder per case with a `case.json` whose `kind` selects the
//! code to run (`mmaudio_net`, `flow_sampler`, `vae_decoder`, `vae_encoder`, `bigvgan`,
//! `bigvgan_v2`, `mel`, `clip_vision`, `clip_text`, `clip_tokenizer`, `synchformer`,
//! `sync_segments`, `frame_preprocess`, and `mmaudio_e2e`: the whole window generation, see
//! `kinds::e2e`). Nothing depends on a case's folder name or sizes:
//! hyper-parameters and shapes come from `case.json` and the tensors.
//!
//! Used by `tests/parity/main.rs` (`cargo test --release --test parity -- --nocapture`) and by
//! `mmaudio parity DIR [--device cuda:0] [--precision bf16]`, which runs the same cases on a
//! GPU machine without a Rust toolchain. Each case prints one line:
//! `parity <case> <kind> ok max_abs=<x> max_rel=<y> …`, `… FAIL <why>` or `… skip (<why>)`.
//! Runs in a reduced precision report their errors against the f32 golden values
//! (`report`) instead of failing on the f32 tolerances.

pub mod common;
pub mod kinds;

use candle_core::{DType, Device};
use common::{Case, Checker, Outcome};
use serde::Serialize;
use std::path::{Path, PathBuf};

type Runner = fn(&Case, &mut Checker) -> anyhow::Result<Outcome>;

/// Kinds this runner deliberately does not run, with the reason: reported as `skip`. Any
/// other kind without a runner is a FAIL (a new fixture kind must not pass unnoticed).
pub const UNSUPPORTED_KINDS: &[(&str, &str)] = &[];

/// kind → runner. A kind absent here is a FAIL unless listed in [`UNSUPPORTED_KINDS`].
pub fn runner(kind: &str) -> Option<Runner> {
    Some(match kind {
        "mmaudio_net" => kinds::net::run,
        "flow_sampler" => kinds::sampler::run,
        "vae_decoder" => kinds::vae::run_decoder,
        "vae_encoder" => kinds::vae::run_encoder,
        "bigvgan" => kinds::vocoder::run_bigvgan,
        "bigvgan_v2" => kinds::vocoder::run_bigvgan_v2,
        "mel" => kinds::mel::run,
        "clip_vision" => kinds::clip::run_vision,
        "clip_text" => kinds::clip::run_text,
        "clip_tokenizer" => kinds::tokenizer::run,
        "synchformer" => kinds::synchformer::run,
        "sync_segments" => kinds::frames::run_sync_segments,
        "frame_preprocess" => kinds::frames::run_frame_preprocess,
        "mmaudio_e2e" => kinds::e2e::run,
        _ => return None,
    })
}

/// The default fixture folder: `MMAUDIO_PARITY_DIR`, else `<crate>/../shared/parity`.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("MMAUDIO_PARITY_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/parity"),
    }
}

/// The end-to-end cases committed with the sources (`tests/fixtures/e2e`).
pub fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/e2e")
}

/// What to say when the fixture folder `dir` is absent: where the fixtures come from.
pub fn missing_fixtures_help(dir: &Path) -> String {
    format!(
        "parity fixture folder {} not found. The component fixtures are generated from the \
         official MMAudio code: `python tools/parity/make_fixtures.py --ref <MMAudio checkout> \
         --out <folder>` (see tools/parity/README.md for the versions and the time it takes), \
         then point MMAUDIO_PARITY_DIR (or `mmaudio parity <folder>`) at that folder. \
         The end-to-end cases ship with the sources in tests/fixtures/e2e.",
        dir.display()
    )
}

/// How to run the cases.
#[derive(Debug, Clone)]
pub struct Options {
    pub device: Device,
    pub dtype: DType,
    /// Only cases whose name contains this, or whose kind equals it; several such filters
    /// may be given separated by commas (a case matching any of them runs).
    pub filter: Option<String>,
    /// Run every model through its generic path (the code a GPU runs), not the fast CPU f32
    /// kernels ([`crate::device::set_fast_cpu_kernels`], process-wide for the run).
    pub generic_kernels: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            filter: None,
            generic_kernels: false,
        }
    }
}

/// Whether a case passes [`Options::filter`]: one of the comma-separated parts is a
/// substring of its name or equals its kind.
pub fn filter_matches(filter: &str, name: &str, kind: &str) -> bool {
    filter
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .any(|f| name.contains(f) || kind == f)
}

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub case: String,
    pub kind: String,
    /// `ok`, `FAIL`, `skip` or `report` (reduced precision: errors only).
    pub status: String,
    pub max_abs: f64,
    pub max_rel: f64,
    pub tensors: usize,
    pub worst: String,
    pub worst_ratio: f64,
    pub seconds: f64,
    pub detail: String,
    pub line: String,
}

/// Summary of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub dir: PathBuf,
    pub device: String,
    pub dtype: String,
    pub ran: usize,
    pub failed: usize,
    pub skipped: usize,
    pub cases: Vec<CaseResult>,
}

/// Run every case under `dir`; `on_line` gets each result line as it is produced.
pub fn run_dir(
    dir: &Path,
    opts: &Options,
    mut on_line: impl FnMut(&str),
) -> anyhow::Result<Summary> {
    let mut case_dirs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("case.json").is_file())
        .collect();
    case_dirs.sort();
    let fast_before = crate::device::fast_cpu_kernels();
    if opts.generic_kernels {
        crate::device::set_fast_cpu_kernels(false);
    }
    let sum = run_cases(dir, case_dirs, opts, &mut on_line);
    crate::device::set_fast_cpu_kernels(fast_before);
    sum
}

fn run_cases(
    dir: &Path,
    case_dirs: Vec<PathBuf>,
    opts: &Options,
    on_line: &mut impl FnMut(&str),
) -> anyhow::Result<Summary> {
    let reduced = opts.dtype != DType::F32;
    let mut sum = Summary {
        dir: dir.to_owned(),
        device: crate::bench::device_name(&opts.device),
        dtype: format!("{:?}", opts.dtype).to_lowercase(),
        ran: 0,
        failed: 0,
        skipped: 0,
        cases: vec![],
    };
    for cd in case_dirs {
        let mut case = match Case::load(&cd) {
            Ok(c) => c,
            Err(e) => {
                let line = format!("parity {} ? FAIL unreadable case: {e:#}", cd.display());
                on_line(&line);
                sum.failed += 1;
                continue;
            }
        };
        if let Some(f) = &opts.filter
            && !filter_matches(f, &case.name, &case.kind)
        {
            continue;
        }
        case.device = opts.device.clone();
        case.dtype = opts.dtype;
        let mut r = CaseResult {
            case: case.name.clone(),
            kind: case.kind.clone(),
            status: String::new(),
            max_abs: 0.0,
            max_rel: 0.0,
            tensors: 0,
            worst: String::new(),
            worst_ratio: 0.0,
            seconds: 0.0,
            detail: String::new(),
            line: String::new(),
        };
        let Some(run) = runner(&case.kind) else {
            if let Some((_, why)) = UNSUPPORTED_KINDS.iter().find(|(k, _)| *k == case.kind) {
                r.status = "skip".into();
                r.detail = format!("deliberately unsupported: {why}");
                r.line = format!("parity {} {} skip ({})", case.name, case.kind, r.detail);
                sum.skipped += 1;
            } else {
                r.status = "FAIL".into();
                r.detail = "unknown fixture kind (no runner, not listed as unsupported)".into();
                r.line = format!("parity {} {} FAIL {}", case.name, case.kind, r.detail);
                sum.ran += 1;
                sum.failed += 1;
            }
            on_line(&r.line);
            sum.cases.push(r);
            continue;
        };
        let mut chk = Checker::default();
        let start = std::time::Instant::now();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&case, &mut chk)));
        // every golden tensor must have been compared or explicitly waived
        if let Ok(Ok(Outcome::Ran)) = &res {
            let out = case.file("outputs.safetensors");
            if out.is_file() {
                match common::safetensors_names(&out) {
                    Ok(names) => {
                        let missing = chk.uncompared_goldens(&names);
                        if !missing.is_empty() {
                            chk.fail(format!(
                                "golden tensor(s) not compared (the port produced nothing to \
                                 compare them with): {}",
                                missing.join(", ")
                            ));
                        }
                    }
                    Err(e) => chk.fail(format!("{e:#}")),
                }
            }
            for (n, why) in &chk.waived {
                if std::env::var_os("MMAUDIO_PARITY_VERBOSE").is_some() {
                    chk.notes.push(format!("{n}: not compared ({why})"));
                }
            }
        }
        r.seconds = start.elapsed().as_secs_f64();
        (r.max_abs, r.max_rel, r.tensors) = (chk.max_abs, chk.max_rel, chk.compared);
        (r.worst_ratio, r.worst) = chk.worst.clone();
        let secs = r.seconds;
        match res {
            Ok(Ok(Outcome::Skip(why))) => {
                r.status = "skip".into();
                r.line = format!("parity {} {} skip ({why})", case.name, case.kind);
                r.detail = why;
                sum.skipped += 1;
            }
            Ok(Ok(Outcome::Ran)) if chk.compared > 0 && (chk.failures.is_empty() || reduced) => {
                r.status = if reduced { "report" } else { "ok" }.into();
                r.line = format!(
                    "parity {} {} {} max_abs={:.3e} max_rel={:.3e} ({} tensors, worst {} at {:.2} of its f32 tolerance, {secs:.1}s)",
                    case.name,
                    case.kind,
                    r.status,
                    chk.max_abs,
                    chk.max_rel,
                    chk.compared,
                    chk.worst.1,
                    chk.worst.0
                );
                for n in &chk.notes {
                    r.line.push_str(&format!("\n    note: {n}"));
                }
                sum.ran += 1;
            }
            Ok(Ok(Outcome::Ran)) => {
                let why = if chk.compared == 0 {
                    "nothing compared".to_string()
                } else {
                    chk.failures.join("; ")
                };
                r.status = "FAIL".into();
                r.line = format!(
                    "parity {} {} FAIL max_abs={:.3e} max_rel={:.3e}: {why}",
                    case.name, case.kind, chk.max_abs, chk.max_rel
                );
                r.detail = why;
                sum.ran += 1;
                sum.failed += 1;
            }
            Ok(Err(e)) => {
                r.status = "FAIL".into();
                r.detail = format!("error: {e:#}");
                r.line = format!("parity {} {} FAIL error: {e:#}", case.name, case.kind);
                sum.ran += 1;
                sum.failed += 1;
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                r.status = "FAIL".into();
                r.detail = format!("panic: {msg}");
                r.line = format!("parity {} {} FAIL panic: {msg}", case.name, case.kind);
                sum.ran += 1;
                sum.failed += 1;
            }
        }
        on_line(&r.line);
        sum.cases.push(r);
    }
    let path = if opts.generic_kernels {
        ", generic kernels"
    } else {
        ""
    };
    on_line(&format!(
        "parity summary: {} ran, {} failed, {} skipped ({} {}{path})",
        sum.ran, sum.failed, sum.skipped, sum.device, sum.dtype
    ));
    Ok(sum)
}
