//! Progress events from the engine. The library never prints; the CLI
//! implements [`Progress`] to draw bars, write lines or emit JSON.

use crate::content::Digest;

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

pub trait Progress: Send + Sync {
    fn image_started(&self, _label: &str, _digest: &Digest) {}
    fn blob_started(&self, _digest: &Digest, _size: u64) {}
    fn blob_bytes(&self, _digest: &Digest, _bytes: u64) {}
    fn blob_done(&self, _digest: &Digest, _size: u64, _outcome: BlobOutcome) {}
    fn image_done(&self, _label: &str, _digest: &Digest) {}
    /// A conversion changed a digest.
    fn converted(&self, _what: &str, _old: &Digest, _new: &Digest, _why: &str) {}
}

/// Reports nothing.
pub struct Hidden;

impl Progress for Hidden {}
