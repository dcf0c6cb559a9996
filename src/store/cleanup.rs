//! Undo on interrupt: what a run has half written (temporary files, spool
//! files, layout changes) is registered here, and the interrupt handler
//! removes or reverts all of it before the process exits.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static CLEANUP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

type Hook = std::sync::Arc<dyn Fn() + Send + Sync>;
static HOOKS: Mutex<Vec<(usize, Hook)>> = Mutex::new(Vec::new());
static NEXT_HOOK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Registers something to undo if the process is interrupted; returns an id
/// for [`unregister_hook`].
pub fn register_hook(hook: Hook) -> usize {
    let id = NEXT_HOOK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    HOOKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((id, hook));
    id
}

pub fn unregister_hook(id: usize) {
    HOOKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(i, _)| *i != id);
}

/// Registers a path to delete if the process is interrupted.
pub fn register_cleanup(path: &Path) {
    CLEANUP
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(path.to_path_buf());
}

/// Forgets a path registered with [`register_cleanup`].
pub fn unregister_cleanup(path: &Path) {
    CLEANUP
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| p != path);
}

/// Runs every registered hook and deletes every registered path (called
/// from the interrupt handler).
pub fn cleanup_all() {
    let hooks = std::mem::take(&mut *HOOKS.lock().unwrap_or_else(|e| e.into_inner()));
    for (_, h) in hooks {
        h();
    }
    let paths = std::mem::take(&mut *CLEANUP.lock().unwrap_or_else(|e| e.into_inner()));
    for p in paths {
        if p.is_dir() {
            let _ = std::fs::remove_dir_all(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}
