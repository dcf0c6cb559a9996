//! One image into several sinks at once (a sync entry with `targets: [a,
//! b]`): the engine sees one sink, reads each source blob once, and the
//! bytes go to every sink that lacks the blob, streamed to all of them
//! together. Each sink names the image its own way (its own repository
//! and tag); a sink that holds a blob already, or mounts it, gets no
//! bytes.
//!
//! A blob written to some sinks and not to others (one failed) is not
//! written again to the ones that have it when the engine retries.
//! Committing commits every sink; the first failure is the copy's.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc;

use bytes::Bytes;

use super::{ImageName, ImageSink, SinkCaps};
use crate::content::{Descriptor, Digest, RawManifest};
use crate::error::{Error, Result};

/// Chunks read from the source and handed to every writing sink; a few
/// in flight per sink bound the memory a slow sink can hold up.
const CHUNK: usize = 256 * 1024;
const CHUNKS_AHEAD: usize = 4;

/// A sink with the names it gives the image.
pub struct Target {
    pub sink: Box<dyn ImageSink>,
    pub names: Vec<ImageName>,
    /// The registry (host) a registry sink writes to: sinks of one
    /// registry share its upload claims.
    pub registry: Option<String>,
}

pub struct FanOut {
    targets: Vec<Target>,
    /// The names the engine is given for the image: a call naming exactly
    /// these means "the image", which each target names its own way.
    image_names: Vec<ImageName>,
    /// Per blob, the targets known to hold it (found there, mounted, or
    /// written by this copy).
    held: Mutex<HashMap<Digest, Vec<bool>>>,
}

impl FanOut {
    /// Fans out to `targets` (at least one); the engine names the image
    /// with the first target's names.
    pub fn new(targets: Vec<Target>) -> FanOut {
        let image_names = targets.first().map(|t| t.names.clone()).unwrap_or_default();
        FanOut {
            targets,
            image_names,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The names the engine should give the image.
    pub fn image_names(&self) -> &[ImageName] {
        &self.image_names
    }

    /// The names target `t` gives a manifest the engine names `names`.
    fn names_for<'a>(&'a self, t: &'a Target, names: &'a [ImageName]) -> &'a [ImageName] {
        if names == self.image_names.as_slice() {
            &t.names
        } else {
            names
        }
    }

    fn held_by(&self, digest: &Digest) -> Vec<bool> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned()
            .unwrap_or_else(|| vec![false; self.targets.len()])
    }

    fn note_held(&self, digest: &Digest, k: usize) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let row = held
            .entry(digest.clone())
            .or_insert_with(|| vec![false; self.targets.len()]);
        if let Some(slot) = row.get_mut(k) {
            *slot = true;
        }
    }

    /// The targets still lacking a blob.
    fn lacking(&self, digest: &Digest) -> Vec<usize> {
        self.held_by(digest)
            .iter()
            .enumerate()
            .filter(|(_, held)| !**held)
            .map(|(k, _)| k)
            .collect()
    }

    /// Asks every target not known to hold the blob whether it does.
    fn ask(&self, desc: &Descriptor, has: impl Fn(&dyn ImageSink) -> Result<bool>) -> Result<bool> {
        for k in self.lacking(&desc.digest) {
            if let Some(t) = self.targets.get(k)
                && has(t.sink.as_ref())?
            {
                self.note_held(&desc.digest, k);
            }
        }
        Ok(self.lacking(&desc.digest).is_empty())
    }

    /// Streams `reader` into every target in `to` at once.
    fn tee(&self, desc: &Descriptor, reader: &mut dyn Read, to: &[usize]) -> Result<()> {
        let results: Vec<(usize, Result<()>)> = std::thread::scope(|s| {
            let mut feeds = Vec::new();
            let mut writers = Vec::new();
            for &k in to {
                let Some(t) = self.targets.get(k) else {
                    continue;
                };
                let (tx, rx) = mpsc::sync_channel::<io::Result<Bytes>>(CHUNKS_AHEAD);
                feeds.push(Some(tx));
                writers.push((
                    k,
                    s.spawn(move || {
                        let mut fed = Fed {
                            rx,
                            chunk: Bytes::new(),
                            at: 0,
                        };
                        t.sink.put_blob(desc, &mut fed)
                    }),
                ));
            }
            let mut buf = vec![0u8; CHUNK];
            loop {
                let chunk = match reader.read(&mut buf) {
                    Ok(0) => break,
                    // One copy of the chunk, shared by every sink.
                    Ok(n) => Ok(Bytes::copy_from_slice(buf.get(..n).unwrap_or_default())),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let failed = chunk.is_err();
                for feed in feeds.iter_mut() {
                    let sent = match (&chunk, feed.as_ref()) {
                        (_, None) => continue,
                        (Ok(bytes), Some(tx)) => tx.send(Ok(bytes.clone())),
                        (Err(e), Some(tx)) => tx.send(Err(io::Error::new(e.kind(), e.to_string()))),
                    };
                    // That sink stopped reading (it failed): the others go on.
                    if sent.is_err() {
                        *feed = None;
                    }
                }
                if failed {
                    break;
                }
            }
            drop(feeds);
            writers
                .into_iter()
                .map(|(k, w)| {
                    let r = w.join().unwrap_or_else(|_| {
                        Err(Error::Io {
                            what: format!("{}", desc.digest),
                            source: io::Error::other("its writer stopped"),
                        })
                    });
                    (k, r)
                })
                .collect()
        });
        let mut first_error = None;
        for (k, r) in results {
            match r {
                Ok(()) => self.note_held(&desc.digest, k),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The reading end of one target's feed: the source's bytes as the
/// fan-out read them, or the error it read.
struct Fed {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
    at: usize,
}

impl Read for Fed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The source is read to its end.
                Err(_) => return Ok(0),
            }
        }
        let rest = self.chunk.get(self.at..).unwrap_or_default();
        let n = rest.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.at += n;
        Ok(n)
    }
}

impl ImageSink for FanOut {
    fn describe(&self) -> String {
        self.targets
            .iter()
            .map(|t| t.sink.describe())
            .collect::<Vec<_>>()
            .join(" + ")
    }

    fn caps(&self) -> SinkCaps {
        let all: Vec<SinkCaps> = self.targets.iter().map(|t| t.sink.caps()).collect();
        let any = |f: fn(&SinkCaps) -> bool| all.iter().any(f);
        let every = |f: fn(&SinkCaps) -> bool| all.iter().all(f);
        SinkCaps {
            wants_uncompressed: any(|c| c.wants_uncompressed),
            single_platform: any(|c| c.single_platform),
            accepts_zstd: every(|c| c.accepts_zstd),
            images_only: any(|c| c.images_only),
            needs_layer_bytes: any(|c| c.needs_layer_bytes),
            compress_layers: any(|c| c.compress_layers),
            remote: every(|c| c.remote),
            // A produced blob is spooled once, then put to each target.
            streams_produced_blobs: false,
            retry_blobs: every(|c| c.retry_blobs),
            holds_referrers: every(|c| c.holds_referrers),
        }
    }

    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        self.ask(desc, |s| s.has_blob(desc))
    }

    fn has_config(&self, desc: &Descriptor) -> Result<bool> {
        self.ask(desc, |s| s.has_config(desc))
    }

    fn has_image(
        &self,
        root: &Descriptor,
        config: Option<&Digest>,
        names: &[ImageName],
    ) -> Result<bool> {
        for t in &self.targets {
            if !t.sink.has_image(root, config, self.names_for(t, names))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn mount_blob(&self, desc: &Descriptor, from: Option<&(String, String)>) -> Result<bool> {
        // Every target is asked, each claiming the upload to its registry
        // when it cannot mount (other copies then wait for this one's
        // bytes instead of reading the source again), in the same order
        // for every copy. A second target of a registry that already
        // claimed here is not asked: it would wait for an upload only
        // this copy can make. It gets the bytes with the first.
        let mut claimed: Vec<&str> = Vec::new();
        for k in self.lacking(&desc.digest) {
            let Some(t) = self.targets.get(k) else {
                continue;
            };
            if let Some(r) = &t.registry
                && claimed.contains(&r.as_str())
            {
                continue;
            }
            if t.sink.mount_blob(desc, from)? {
                self.note_held(&desc.digest, k);
            } else if let Some(r) = &t.registry {
                claimed.push(r);
            }
        }
        Ok(self.lacking(&desc.digest).is_empty())
    }

    fn blob_abandoned(&self, desc: &Descriptor) {
        for t in &self.targets {
            t.sink.blob_abandoned(desc);
        }
    }

    fn put_blob(&self, desc: &Descriptor, reader: &mut dyn Read) -> Result<()> {
        let to = self.lacking(&desc.digest);
        if let [k] = to.as_slice() {
            let t = self.targets.get(*k);
            if let Some(t) = t {
                t.sink.put_blob(desc, reader)?;
                self.note_held(&desc.digest, *k);
            }
            return Ok(());
        }
        self.tee(desc, reader, &to)
    }

    fn spool_dir(&self) -> Option<&Path> {
        None
    }

    fn put_blob_file(&self, desc: &Descriptor, file: tempfile::NamedTempFile) -> Result<()> {
        let mut reader = file.reopen().map_err(|source| Error::Io {
            what: format!("{}: spooled blob", desc.digest),
            source,
        })?;
        let to = self.lacking(&desc.digest);
        self.tee(desc, &mut reader, &to)
    }

    fn put_manifest(&self, manifest: &RawManifest) -> Result<()> {
        self.targets
            .iter()
            .try_for_each(|t| t.sink.put_manifest(manifest))
    }

    fn add_image(&self, root: &Descriptor, names: &[ImageName]) -> Result<()> {
        self.targets
            .iter()
            .try_for_each(|t| t.sink.add_image(root, self.names_for(t, names)))
    }

    fn add_referrer(&self, referrer: &Descriptor, subject: &Descriptor) -> Result<()> {
        self.targets
            .iter()
            .try_for_each(|t| t.sink.add_referrer(referrer, subject))
    }

    fn referrers_listing_digest(&self, subject: &Digest) -> Result<Option<Digest>> {
        // The listing is the source's only when every target's is.
        let mut common: Option<Digest> = None;
        for t in &self.targets {
            match (t.sink.referrers_listing_digest(subject)?, &common) {
                (None, _) => return Ok(None),
                (Some(d), None) => common = Some(d),
                (Some(d), Some(c)) if &d == c => {}
                (Some(_), Some(_)) => return Ok(None),
            }
        }
        Ok(common)
    }

    fn commit(&self) -> Result<()> {
        let mut first_error = None;
        for t in &self.targets {
            if let Err(e) = t.sink.commit() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn abort(&self) {
        for t in &self.targets {
            t.sink.abort();
        }
    }
}
