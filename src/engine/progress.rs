//! Progress events from the engine. The library never prints; the CLI
//! implements [`Progress`] to draw bars, write lines or emit JSON.

use crate::content::Digest;
use crate::error::Error;

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Bytes were moved (and verified).
    Copied,
    /// The destination already had it, or this run already moved it.
    Skipped,
    /// Made available at the destination from another repository of the
    /// same registry, without moving bytes.
    Mounted,
    /// Foreign layer whose bytes the source does not have; descriptor kept.
    Absent,
}

/// Something a run did that its user should hear about although nothing
/// failed.
#[derive(Debug)]
pub enum Notice<'a> {
    /// A tag pointed elsewhere when its image was copied than when the run
    /// was planned; what it points to now is copied.
    TagMoved {
        source: &'a str,
        planned: &'a Digest,
        now: &'a Digest,
    },
    /// A transient failure; the work is tried again (`attempt` counts from
    /// 1 for the first retry).
    Retry {
        what: &'a str,
        attempt: u32,
        cause: &'a Error,
    },
}

impl std::fmt::Display for Notice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::TagMoved {
                source,
                planned,
                now,
            } => write!(
                f,
                "{source}: the tag moved during the run ({planned} -> {now}); copying {now}"
            ),
            Notice::Retry {
                what,
                attempt,
                cause,
            } => write!(f, "{what}: retry {attempt} after: {cause}"),
        }
    }
}

pub trait Progress: Send + Sync {
    fn image_started(&self, _label: &str, _digest: &Digest) {}
    fn blob_started(&self, _digest: &Digest, _size: u64) {}
    fn blob_bytes(&self, _digest: &Digest, _bytes: u64) {}
    fn blob_done(&self, _digest: &Digest, _size: u64, _outcome: BlobOutcome) {}
    fn image_done(&self, _label: &str, _digest: &Digest) {}
    /// A conversion changed a digest.
    fn converted(&self, _what: &str, _old: &Digest, _new: &Digest, _why: &str) {}
    /// Something worth telling that is not a failure.
    fn notice(&self, _notice: &Notice) {}
    /// A referrer or digest tag could not be carried; the images were.
    fn referrer_failed(&self, _failure: &crate::engine::referrers::ReferrerFailure) {}
}

/// Reports nothing.
pub struct Hidden;

impl Progress for Hidden {}
