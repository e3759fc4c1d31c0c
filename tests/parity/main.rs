//! Data-driven parity runner.
//!
//! Runs every case folder under `MMAUDIO_PARITY_DIR` (default `../shared/parity`) whose
//! `case.json` `kind` is implemented, and prints one line per case:
//! `parity <case> <kind> ok max_abs=<x> max_rel=<y> ...`, `... FAIL <why>` or
//! `... skip (not implemented)`. Fails on any FAIL, and if the folder exists but no case ran.
//! Skips (loudly) only when the folder is absent.
//!
//! `cargo test --release --test parity -- --nocapture`

mod common;
mod kinds;

use common::{Case, Checker, Outcome};
use std::path::PathBuf;

type Runner = fn(&Case, &mut Checker) -> anyhow::Result<Outcome>;

/// kind → runner. A kind absent here prints `skip (not implemented)`.
fn runner(kind: &str) -> Option<Runner> {
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
        _ => return None,
    })
}

fn parity_dir() -> PathBuf {
    match std::env::var_os("MMAUDIO_PARITY_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/parity"),
    }
}

#[test]
fn parity() {
    let dir = parity_dir();
    if !dir.is_dir() {
        eprintln!(
            "\n!!! parity SKIPPED: fixture folder {} is absent (set MMAUDIO_PARITY_DIR) !!!\n",
            dir.display()
        );
        return;
    }
    let filter = std::env::var("MMAUDIO_PARITY_FILTER").ok();
    let mut case_dirs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read parity dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("case.json").is_file())
        .collect();
    case_dirs.sort();

    let (mut ran, mut failed, mut skipped) = (0, 0, 0);
    for cd in case_dirs {
        let case = match Case::load(&cd) {
            Ok(c) => c,
            Err(e) => {
                println!("parity {} ? FAIL unreadable case: {e:#}", cd.display());
                failed += 1;
                continue;
            }
        };
        if let Some(f) = &filter {
            if !case.name.contains(f.as_str()) && case.kind != *f {
                continue;
            }
        }
        let Some(run) = runner(&case.kind) else {
            println!("parity {} {} skip (not implemented)", case.name, case.kind);
            skipped += 1;
            continue;
        };
        let mut chk = Checker::default();
        let start = std::time::Instant::now();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&case, &mut chk)));
        let secs = start.elapsed().as_secs_f64();
        match res {
            Ok(Ok(Outcome::Skip(why))) => {
                println!("parity {} {} skip ({why})", case.name, case.kind);
                skipped += 1;
            }
            Ok(Ok(Outcome::Ran)) if chk.failures.is_empty() && chk.compared > 0 => {
                println!(
                    "parity {} {} ok max_abs={:.3e} max_rel={:.3e} ({} tensors, worst {} at {:.2} of its tolerance, {secs:.1}s)",
                    case.name,
                    case.kind,
                    chk.max_abs,
                    chk.max_rel,
                    chk.compared,
                    chk.worst.1,
                    chk.worst.0
                );
                for n in &chk.notes {
                    println!("    note: {n}");
                }
                ran += 1;
            }
            Ok(Ok(Outcome::Ran)) => {
                let why = if chk.compared == 0 {
                    "nothing compared".to_string()
                } else {
                    chk.failures.join("; ")
                };
                println!(
                    "parity {} {} FAIL max_abs={:.3e} max_rel={:.3e}: {why}",
                    case.name, case.kind, chk.max_abs, chk.max_rel
                );
                ran += 1;
                failed += 1;
            }
            Ok(Err(e)) => {
                println!("parity {} {} FAIL error: {e:#}", case.name, case.kind);
                ran += 1;
                failed += 1;
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("parity {} {} FAIL panic: {msg}", case.name, case.kind);
                ran += 1;
                failed += 1;
            }
        }
    }
    println!("parity summary: {ran} ran, {failed} failed, {skipped} skipped");
    assert!(failed == 0, "{failed} parity case(s) failed");
    assert!(
        ran > 0 || filter.is_some(),
        "fixture folder {} exists but no case ran",
        dir.display()
    );
}
