//! Cross-repository mounts (formats reference §6.3): which repository of a
//! registry this run knows holds a blob, and one upload per blob and
//! registry at a time, so that a second image mounts a blob rather than
//! uploading it again.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex};

use crate::content::Digest;

/// Blobs this run knows a repository holds, per registry: where to mount
/// them from.
#[derive(Default)]
pub struct MountIndex {
    known: Mutex<HashMap<(String, Digest), Vec<String>>>,
    /// Blobs being uploaded right now, per registry: a second image that
    /// needs one waits and mounts it rather than uploading it again.
    uploading: Mutex<HashSet<(String, Digest)>>,
    done: Condvar,
}

impl MountIndex {
    /// Claims the upload of a blob to a registry. `true`: the caller
    /// uploads and must call [`MountIndex::release`]; `false`: another
    /// upload of it ended meanwhile (look it up with `find`).
    pub(super) fn claim(&self, host: &str, digest: &Digest) -> bool {
        let key = (host.to_string(), digest.clone());
        let mut up = self.uploading.lock().unwrap();
        if !up.contains(&key) {
            up.insert(key);
            return true;
        }
        while up.contains(&key) {
            up = self.done.wait(up).unwrap();
        }
        false
    }

    pub(super) fn release(&self, host: &str, digest: &Digest) {
        self.uploading
            .lock()
            .unwrap()
            .remove(&(host.to_string(), digest.clone()));
        self.done.notify_all();
    }

    pub(super) fn note(&self, host: &str, digest: &Digest, repo: &str) {
        let mut known = self.known.lock().unwrap();
        let repos = known.entry((host.to_string(), digest.clone())).or_default();
        if !repos.iter().any(|r| r == repo) {
            repos.push(repo.to_string());
        }
    }

    /// Records that `repo` on `host` holds a blob (found by a `HEAD`), so
    /// other repositories of the run can mount it from there.
    pub fn remember(&self, host: &str, digest: &Digest, repo: &str) {
        self.note(host, digest, repo);
    }

    /// Does this run know `repo` holds the blob?
    pub(super) fn holds(&self, host: &str, digest: &Digest, repo: &str) -> bool {
        self.known
            .lock()
            .unwrap()
            .get(&(host.to_string(), digest.clone()))
            .is_some_and(|repos| repos.iter().any(|r| r == repo))
    }

    /// A repository other than `not` that holds the blob.
    pub(super) fn find_other(&self, host: &str, digest: &Digest, not: &str) -> Option<String> {
        self.known
            .lock()
            .unwrap()
            .get(&(host.to_string(), digest.clone()))
            .and_then(|repos| repos.iter().find(|r| *r != not).cloned())
    }
}
