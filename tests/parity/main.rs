//! Data-driven parity runner (the logic lives in `mmaudio::parity`, shared with
//! `mmaudio parity` for GPU machines).
//!
//! Runs every case folder under `MMAUDIO_PARITY_DIR` (default `../shared/parity`) whose
//! `case.json` `kind` is implemented, and prints one line per case:
//! `parity <case> <kind> ok max_abs=<x> max_rel=<y> ...`, `... FAIL <why>` or
//! `... skip (not implemented)`. Fails on any FAIL, and if the folder exists but no case ran.
//! Skips (loudly) only when the folder is absent. `MMAUDIO_PARITY_FILTER` selects cases by
//! name substring or kind (comma-separated). Every case runs twice: on the fast CPU kernels
//! and on the generic path of each model (`--generic-kernels`, the code a GPU runs).
//!
//! `cargo test --release --test parity -- --nocapture`

use mmaudio::parity::{Options, default_dir, run_dir};

#[test]
fn parity() {
    let dir = default_dir();
    if !dir.is_dir() {
        eprintln!(
            "\n!!! parity SKIPPED: fixture folder {} is absent (set MMAUDIO_PARITY_DIR) !!!\n",
            dir.display()
        );
        return;
    }
    let opts = Options {
        filter: std::env::var("MMAUDIO_PARITY_FILTER").ok(),
        ..Default::default()
    };
    let sum = run_dir(&dir, &opts, |l| println!("{l}")).expect("reading the parity folder");
    assert!(sum.failed == 0, "{} parity case(s) failed", sum.failed);
    assert!(
        sum.ran > 0 || opts.filter.is_some(),
        "fixture folder {} exists but no case ran",
        dir.display()
    );

    // the same cases through the generic path of every model (what a GPU runs), with the
    // same f32 tolerances; in the same test function because the kernel choice is
    // process-wide
    let generic = Options {
        generic_kernels: true,
        ..opts.clone()
    };
    let sum = run_dir(&dir, &generic, |l| println!("{l}")).expect("reading the parity folder");
    assert!(
        sum.failed == 0,
        "{} parity case(s) failed through the generic kernels",
        sum.failed
    );
    assert!(
        mmaudio::device::fast_cpu_kernels(),
        "kernel choice not restored"
    );
}
