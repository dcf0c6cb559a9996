//! Signals. Ctrl-C (SIGINT) and SIGTERM stop a run: what it wrote and did
//! not publish is removed (no tag is moved by a copy that did not finish),
//! and the exit code says which signal it was (130, 143), as shells do.
//! A `sync --every`/`--schedule` waiting between runs has nothing half
//! done: SIGTERM (a Kubernetes pod stopping) ends it with exit 0.

use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A `sync --every`/`--schedule` is waiting for its next run.
static BETWEEN_RUNS: AtomicBool = AtomicBool::new(false);

/// Handles SIGINT and SIGTERM on a thread of their own for the rest of the
/// process.
pub fn install() {
    let Ok(mut signals) = Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            if signal == SIGTERM && BETWEEN_RUNS.load(Ordering::SeqCst) {
                super::console::message("imgsync: stopped between runs");
                std::process::exit(0);
            }
            super::cleanup_on_interrupt();
            std::process::exit(if signal == SIGTERM { 143 } else { 130 });
        }
    });
}

/// Marks the time between two runs of a repeating sync (`true`) or a run
/// under way (`false`).
pub fn between_runs(waiting: bool) {
    BETWEEN_RUNS.store(waiting, Ordering::SeqCst);
}
