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

/// The file a writer keeps locked inside its temporary directory for as
/// long as it lives. The kernel drops the lock when the process dies, even
/// by SIGKILL or power loss, and a lock cannot outlive its process, so an
/// unlocked marker proves the writer gone where a recorded process id
/// could be reused by an unrelated process.
pub const WRITER_MARKER: &str = ".writer";

/// Marks `dir` as the temporary directory of this live process: creates
/// its marker (holding the process id, for whoever looks) and locks it.
/// Keep the returned file open while the directory is in use. Create the
/// directory and call this with the directory around it locked, so that a
/// reclaimer never sees the marker before it is locked.
pub fn claim_dir(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    let mut marker = std::fs::File::create(dir.join(WRITER_MARKER))?;
    marker.lock()?;
    writeln!(marker, "{}", std::process::id())?;
    Ok(marker)
}

/// Whether the writer that locked `file` is gone: its lock can be taken.
/// A file another process holds, or one whose lock cannot be tried (a file
/// system without locks), counts as live.
fn writer_gone(file: &std::fs::File) -> bool {
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            true
        }
        Err(_) => false,
    }
}

/// Removes the temporary directories named `<prefix>…` in `root` whose
/// writer is gone (see [`claim_dir`]). A directory without a marker is left
/// alone: it may belong to an older imgsync that is still running. Call it
/// with `root` locked.
pub fn reclaim_stale_dirs(root: &Path, prefix: &str) {
    for path in prefixed_entries(root, prefix) {
        let Ok(marker) = std::fs::File::open(path.join(WRITER_MARKER)) else {
            continue;
        };
        if path.is_dir() && writer_gone(&marker) {
            log::debug!("removing {}, left by a writer that is gone", path.display());
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Removes the files named `<prefix>…` in `dir` that no live writer holds
/// locked (a destination's temporary file is locked by its writer for as
/// long as it is written). Call it with `dir` locked.
pub fn reclaim_stale_files(dir: &Path, prefix: &str) {
    for path in prefixed_entries(dir, prefix) {
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        if file.metadata().is_ok_and(|m| m.is_file()) && writer_gone(&file) {
            log::debug!("removing {}, left by a writer that is gone", path.display());
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn prefixed_entries(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect()
}

/// A temporary file made by `make` in `dir`, named `<prefix>…` and locked
/// for as long as it is open, so that a later run can tell it from the
/// leftover of one killed before it could clean up. Those leftovers
/// (unlocked files with the same prefix) are removed the first time this
/// process makes such a file in `dir`. The directory is locked meanwhile,
/// so no other run sees the new file before it is locked; where the
/// directory cannot be locked, nothing is reclaimed.
pub fn locked_tempfile(
    dir: &Path,
    prefix: &str,
    make: impl FnOnce() -> std::io::Result<tempfile::NamedTempFile>,
) -> std::io::Result<tempfile::NamedTempFile> {
    static RECLAIMED: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());
    let dir_lock = std::fs::File::open(dir).ok().filter(|d| d.lock().is_ok());
    if dir_lock.is_some() {
        let key = (dir.to_path_buf(), prefix.to_string());
        let mut done = RECLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        if !done.contains(&key) {
            reclaim_stale_files(dir, prefix);
            done.push(key);
        }
    }
    let made = make().and_then(|tmp| {
        tmp.as_file().lock()?;
        Ok(tmp)
    });
    if let Some(d) = dir_lock {
        let _ = d.unlock();
    }
    made
}

/// A private temporary file in `dir` (a spool of an archive that may be
/// someone's own), locked while it lives (see [`locked_tempfile`]).
pub fn claimed_tempfile(dir: &Path, prefix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    locked_tempfile(dir, prefix, || {
        tempfile::Builder::new().prefix(prefix).tempfile_in(dir)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_dir_is_kept_and_an_abandoned_one_reclaimed() {
        let root = tempfile::tempdir().unwrap();
        let live = root.path().join(".t-live");
        let dead = root.path().join(".t-dead");
        let legacy = root.path().join(".t-legacy");
        for d in [&live, &dead, &legacy] {
            std::fs::create_dir(d).unwrap();
        }
        let _held = claim_dir(&live).unwrap();
        drop(claim_dir(&dead).unwrap());
        reclaim_stale_dirs(root.path(), ".t-");
        assert!(live.exists(), "a live writer's directory was removed");
        assert!(!dead.exists(), "an abandoned directory was kept");
        assert!(legacy.exists(), "a directory without a marker was removed");
    }

    #[test]
    fn a_locked_file_is_kept_and_an_unlocked_one_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let live = std::fs::File::create(dir.path().join(".f-live")).unwrap();
        live.lock().unwrap();
        std::fs::write(dir.path().join(".f-dead"), b"x").unwrap();
        std::fs::write(dir.path().join("f-other"), b"x").unwrap();
        reclaim_stale_files(dir.path(), ".f-");
        assert!(dir.path().join(".f-live").exists());
        assert!(!dir.path().join(".f-dead").exists());
        assert!(dir.path().join("f-other").exists());
    }
}
