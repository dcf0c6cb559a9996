//! Cross-repository mounts (formats reference §6.3): which repository of a
//! registry this run knows holds a blob, and one upload per blob and
//! registry at a time, so that a second image mounts a blob rather than
//! uploading it again.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::content::Digest;

/// How long an image waits for another image's upload of a blob before it
/// uploads the blob itself. The other upload may be stuck behind a source
/// that fails, or waiting in turn on a blob this image claimed: a wait
/// without end could hang a whole run. A second upload of the same blob is
/// only wasted bandwidth.
const CLAIM_WAIT: Duration = Duration::from_secs(300);

/// What [`MountIndex::claim`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// The caller uploads the blob and must call [`MountIndex::release`].
    Owned,
    /// Another upload of it ended meanwhile (look it up with `find_other`
    /// or `holds`).
    Ended,
    /// Another upload kept it past the wait: the caller uploads it too,
    /// without a claim.
    GaveUp,
}

/// Blobs this run knows a repository holds, per registry: where to mount
/// them from.
pub struct MountIndex {
    known: Mutex<HashMap<(String, Digest), Vec<String>>>,
    /// Blobs being uploaded right now, per registry: a second image that
    /// needs one waits and mounts it rather than uploading it again.
    uploading: Mutex<HashSet<(String, Digest)>>,
    done: Condvar,
    /// The longest wait for another image's upload.
    wait: Duration,
}

impl Default for MountIndex {
    fn default() -> Self {
        MountIndex::with_claim_wait(CLAIM_WAIT)
    }
}

impl MountIndex {
    /// An index whose waits for another image's upload last at most `wait`.
    pub fn with_claim_wait(wait: Duration) -> MountIndex {
        MountIndex {
            known: Mutex::default(),
            uploading: Mutex::default(),
            done: Condvar::new(),
            wait,
        }
    }

    /// Claims the upload of a blob to a registry, waiting (at most the
    /// index's wait) while another image uploads it.
    pub(super) fn claim(&self, host: &str, digest: &Digest) -> Claim {
        let key = (host.to_string(), digest.clone());
        let mut up = self.uploading.lock().unwrap_or_else(|e| e.into_inner());
        if up.insert(key.clone()) {
            return Claim::Owned;
        }
        let (_up, waited) = self
            .done
            .wait_timeout_while(up, self.wait, |up| up.contains(&key))
            .unwrap_or_else(|e| e.into_inner());
        if waited.timed_out() {
            Claim::GaveUp
        } else {
            Claim::Ended
        }
    }

    pub(super) fn release(&self, host: &str, digest: &Digest) {
        self.uploading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(host.to_string(), digest.clone()));
        self.done.notify_all();
    }

    pub(super) fn note(&self, host: &str, digest: &Digest, repo: &str) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
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

    /// Forgets what is known of `repo` on `host` (an image copied there
    /// failed: what an earlier run remembered may be gone).
    pub fn forget_repo(&self, host: &str, repo: &str) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        for ((h, _), repos) in known.iter_mut() {
            if h == host {
                repos.retain(|r| r != repo);
            }
        }
    }

    /// Does this run know `repo` holds the blob?
    pub(super) fn holds(&self, host: &str, digest: &Digest, repo: &str) -> bool {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(host.to_string(), digest.clone()))
            .is_some_and(|repos| repos.iter().any(|r| r == repo))
    }

    /// A repository other than `not` that holds the blob.
    pub(super) fn find_other(&self, host: &str, digest: &Digest, not: &str) -> Option<String> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(host.to_string(), digest.clone()))
            .and_then(|repos| repos.iter().find(|r| *r != not).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two images each claimed a blob the other needs and neither uploads
    /// it (their source reads failed): both waits end, and each image goes
    /// on to upload the other's blob itself.
    #[test]
    fn crossed_claims_do_not_wait_forever() {
        let index = std::sync::Arc::new(MountIndex::with_claim_wait(Duration::from_millis(50)));
        let x = Digest::sha256_of(b"x");
        let y = Digest::sha256_of(b"y");
        assert_eq!(index.claim("reg", &x), Claim::Owned);
        assert_eq!(index.claim("reg", &y), Claim::Owned);
        let (tx, rx) = std::sync::mpsc::channel();
        for wanted in [x.clone(), y.clone()] {
            let (index, tx) = (index.clone(), tx.clone());
            std::thread::spawn(move || {
                let _ = tx.send(index.claim("reg", &wanted));
            });
        }
        for _ in 0..2 {
            let got = rx.recv_timeout(Duration::from_secs(20));
            assert_eq!(got, Ok(Claim::GaveUp), "a wait for a claim did not end");
        }
        // A released claim ends a wait at once, and the blob can be
        // claimed again.
        index.release("reg", &x);
        assert_eq!(index.claim("reg", &x), Claim::Owned);
    }
}
