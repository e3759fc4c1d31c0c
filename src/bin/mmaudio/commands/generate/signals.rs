//! SIGINT (Ctrl-C) and SIGTERM (what `docker stop`, Kubernetes and Slurm send) are handled
//! alike: counted here, acted on by the bus loop (see `session.rs`). The first asks to stop
//! cleanly, the second to abort; a third ends the process at once (a last resort if
//! stopping itself hangs; the output's name is never touched, only a `.partial` file can
//! remain).

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

static COUNT: AtomicUsize = AtomicUsize::new(0);
static FIRST: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only atomics and _exit: async-signal-safe.
    let _ = FIRST.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    if COUNT.fetch_add(1, Ordering::SeqCst) >= 2 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) };
    }
}

/// Count SIGINT and SIGTERM instead of dying.
pub fn install() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches atomics and calls _exit.
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
}

/// How many SIGINT/SIGTERM arrived since [`install`].
pub fn count() -> usize {
    COUNT.load(Ordering::SeqCst)
}

/// The first signal received, if any.
pub fn first() -> Option<i32> {
    match FIRST.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Name of a signal for messages.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT (Ctrl-C)",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// The conventional exit status after a signal: 128 + its number (130 for SIGINT, 143
/// for SIGTERM).
pub fn exit_status(sig: i32) -> i32 {
    128 + sig
}
