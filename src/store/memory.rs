//! A store held in memory: blobs and manifests by digest, names pointing at
//! root manifests. It is both a source and a sink, so the engine, the
//! bundle writer and the planners can be exercised without files or a
//! registry.
//!
//! As a sink it stages what it is given and shows it only on
//! [`ImageSink::commit`]; [`ImageSink::abort`] drops the staged part, so a
//! failed copy leaves the store as it was. Knobs for tests: per-digest read
//! and write counts, failures injected on reading or writing a digest,
//! corrupted content, and blobs declared present without bytes.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{BlobReader, ImageName, ImageSink, ImageSource, SinkCaps, SourceImage};
use crate::content::{Descriptor, Digest, DigestHasher, RawManifest};
use crate::error::{Error, ErrorClass, Result};

/// An injected failure: how many more times it fires, and as which class.
#[derive(Debug, Clone, Copy)]
struct Failure {
    times: usize,
    class: ErrorClass,
}

#[derive(Default)]
struct State {
    /// Committed content (blobs, manifests, configs) by digest.
    content: HashMap<Digest, Arc<Vec<u8>>>,
    /// Committed images in the order they were named.
    images: Vec<(Descriptor, Vec<ImageName>)>,
    /// Content put since the last commit.
    staged: HashMap<Digest, Arc<Vec<u8>>>,
    /// Images named since the last commit.
    staged_images: Vec<(Descriptor, Vec<ImageName>)>,
    /// Committed referrers by subject.
    referrers: HashMap<Digest, Vec<Descriptor>>,
    /// Referrers recorded since the last commit: (subject, referrer).
    staged_referrers: Vec<(Digest, Descriptor)>,
    /// Digests `has_blob` answers yes for, bytes or not.
    present: HashSet<Digest>,
    blob_reads: HashMap<Digest, usize>,
    manifest_reads: HashMap<Digest, usize>,
    writes: HashMap<Digest, usize>,
    fail_read: HashMap<Digest, Failure>,
    fail_write: HashMap<Digest, Failure>,
}

/// An image store in memory; see the module documentation.
pub struct MemoryStore {
    label: String,
    caps: SinkCaps,
    state: Mutex<State>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new("memory")
    }
}

/// The error an injected failure raises, of the class asked for.
fn injected(class: ErrorClass, what: String) -> Error {
    match class {
        ErrorClass::Usage => Error::Usage(what),
        ErrorClass::NotFound => Error::NotFound(what),
        ErrorClass::Format => Error::Format(what),
        ErrorClass::Integrity => Error::Integrity(what),
        ErrorClass::Unsupported => Error::Unsupported(what),
        ErrorClass::Io => Error::Io {
            what,
            source: io::Error::other("injected failure"),
        },
        ErrorClass::Auth => Error::Auth(what),
        ErrorClass::Network => Error::Network(what),
        ErrorClass::Quota => Error::Quota {
            registry: "memory".into(),
            message: what,
        },
        ErrorClass::Interrupted => Error::Interrupted,
    }
}

/// Takes one firing of the failure registered for `digest`, if any.
fn take_failure(map: &mut HashMap<Digest, Failure>, digest: &Digest) -> Option<ErrorClass> {
    let f = map.get_mut(digest)?;
    let class = f.class;
    f.times -= 1;
    if f.times == 0 {
        map.remove(digest);
    }
    Some(class)
}

/// Hands out the first half of a blob, then fails: a transfer that breaks
/// mid-stream, as networks and disks do.
struct BreakingReader {
    bytes: Arc<Vec<u8>>,
    pos: usize,
    error: Option<Error>,
}

impl Read for BreakingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let half = self.bytes.len() / 2;
        if self.pos >= half {
            return Err(self
                .error
                .take()
                .map(Error::into_io)
                .unwrap_or_else(|| io::Error::other("read after failure")));
        }
        let mut first_half = self.bytes.get(self.pos..half).unwrap_or_default();
        let n = first_half.read(buf)?;
        self.pos += n;
        Ok(n)
    }
}

/// Owned bytes as a reader.
struct SharedBytes {
    bytes: Arc<Vec<u8>>,
    pos: usize,
}

impl Read for SharedBytes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rest = self.bytes.get(self.pos..).unwrap_or_default();
        let n = rest.read(buf)?;
        self.pos += n;
        Ok(n)
    }
}

impl MemoryStore {
    /// An empty store that holds anything as it is ([`SinkCaps::ANY`]).
    pub fn new(label: impl Into<String>) -> MemoryStore {
        MemoryStore {
            label: label.into(),
            caps: SinkCaps::ANY,
            state: Mutex::new(State::default()),
        }
    }

    /// The same store, claiming other capabilities (a sink that wants plain
    /// layers, or takes produced blobs as streams, ...).
    pub fn with_caps(mut self, caps: SinkCaps) -> MemoryStore {
        self.caps = caps;
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide the
        // store's content from the next assertion.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds content directly (committed); returns its digest.
    pub fn insert(&self, bytes: Vec<u8>) -> Digest {
        let digest = Digest::sha256_of(&bytes);
        self.state().content.insert(digest.clone(), Arc::new(bytes));
        digest
    }

    /// Names a root directly (committed), as a source image.
    pub fn name(&self, root: Descriptor, names: Vec<ImageName>) {
        let mut s = self.state();
        add_names(&mut s.images, root, &names);
    }

    /// The committed bytes of a digest.
    pub fn get(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.state().content.get(digest).map(|b| b.to_vec())
    }

    /// Every committed digest, sorted.
    pub fn digests(&self) -> Vec<Digest> {
        let mut d: Vec<Digest> = self.state().content.keys().cloned().collect();
        d.sort();
        d
    }

    /// The committed images and their names, in naming order.
    /// The referrers recorded for `subject`.
    pub fn referrers_of(&self, subject: &Digest) -> Vec<Descriptor> {
        self.state()
            .referrers
            .get(subject)
            .cloned()
            .unwrap_or_default()
    }

    pub fn named(&self) -> Vec<(Descriptor, Vec<ImageName>)> {
        self.state().images.clone()
    }

    /// The committed root a name points at.
    pub fn resolve(&self, name: &ImageName) -> Option<Descriptor> {
        self.state()
            .images
            .iter()
            .find(|(_, names)| names.contains(name))
            .map(|(d, _)| d.clone())
    }

    /// How much was put and named since the last commit or abort:
    /// `(content items, images)`.
    pub fn staged(&self) -> (usize, usize) {
        let s = self.state();
        (s.staged.len(), s.staged_images.len())
    }

    /// Times a blob was opened for reading ([`ImageSource::open_blob`]).
    pub fn blob_reads(&self, digest: &Digest) -> usize {
        self.state().blob_reads.get(digest).copied().unwrap_or(0)
    }

    /// Times a manifest or config was read ([`ImageSource::read_manifest`]).
    pub fn manifest_reads(&self, digest: &Digest) -> usize {
        self.state()
            .manifest_reads
            .get(digest)
            .copied()
            .unwrap_or(0)
    }

    /// Times content with this digest was put (blob or manifest), failed
    /// attempts included.
    pub fn writes(&self, digest: &Digest) -> usize {
        self.state().writes.get(digest).copied().unwrap_or(0)
    }

    /// Every digest put at least once, with its count.
    pub fn all_writes(&self) -> HashMap<Digest, usize> {
        self.state().writes.clone()
    }

    /// The next `times` reads of `digest` break half-way with an error of
    /// `class` (manifests and configs fail at once instead).
    pub fn fail_reads(&self, digest: &Digest, times: usize, class: ErrorClass) {
        if times > 0 {
            self.state()
                .fail_read
                .insert(digest.clone(), Failure { times, class });
        }
    }

    /// The next `times` puts of `digest` fail with an error of `class`,
    /// after reading part of the stream; nothing of it is kept.
    pub fn fail_writes(&self, digest: &Digest, times: usize, class: ErrorClass) {
        if times > 0 {
            self.state()
                .fail_write
                .insert(digest.clone(), Failure { times, class });
        }
    }

    /// Flips a byte in the middle of the committed content of `digest`,
    /// which keeps its digest as a key: readers get bytes that do not hash
    /// to it.
    pub fn corrupt(&self, digest: &Digest) {
        let mut s = self.state();
        if let Some(b) = s.content.get_mut(digest) {
            let mut bytes = b.to_vec();
            if let Some(mid) = bytes.get_mut(b.len() / 2) {
                *mid ^= 0xff;
            }
            *b = Arc::new(bytes);
        }
    }

    /// Declares the sink already has `digest` (without holding its bytes),
    /// as a destination that received it from an earlier run.
    pub fn declare_present(&self, digest: &Digest) {
        self.state().present.insert(digest.clone());
    }

    /// Stages bytes read from `reader` under `digest`, honouring injected
    /// write failures.
    fn stage(&self, digest: &Digest, reader: &mut dyn Read) -> Result<()> {
        let failure = {
            let mut s = self.state();
            *s.writes.entry(digest.clone()).or_default() += 1;
            take_failure(&mut s.fail_write, digest)
        };
        let mut bytes = Vec::new();
        if let Some(class) = failure {
            // Part of the stream is consumed, as a real write would.
            let _ = reader.take(1).read_to_end(&mut bytes);
            return Err(injected(
                class,
                format!("{}: injected write failure of {digest}", self.label),
            ));
        }
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(format!("copy blob {digest}"), e))?;
        self.state().staged.insert(digest.clone(), Arc::new(bytes));
        Ok(())
    }

    fn committed(&self, desc: &Descriptor) -> Result<Arc<Vec<u8>>> {
        self.state()
            .content
            .get(&desc.digest)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("{}: no blob {}", self.label, desc.digest)))
    }
}

/// Names `root`: each name leaves the entry it was on, and an entry left
/// with no name goes; a root named with no names is listed once, unnamed.
fn add_names(
    images: &mut Vec<(Descriptor, Vec<ImageName>)>,
    root: Descriptor,
    names: &[ImageName],
) {
    let had_names: Vec<bool> = images.iter().map(|(_, n)| !n.is_empty()).collect();
    for (_, existing) in images.iter_mut() {
        existing.retain(|n| !names.contains(n));
    }
    let mut had_names = had_names.into_iter();
    images.retain(|(_, n)| {
        let had_name = had_names.next().unwrap_or(false);
        !had_name || !n.is_empty()
    });
    match images.iter_mut().find(|(d, _)| d.digest == root.digest) {
        Some((_, existing)) => existing.extend(names.iter().cloned()),
        None => images.push((root, names.to_vec())),
    }
}

impl ImageSource for MemoryStore {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn images(&self) -> Result<Vec<SourceImage>> {
        Ok(self
            .state()
            .images
            .iter()
            .map(|(root, names)| SourceImage {
                root: root.clone(),
                names: names.clone(),
                synthesized: false,
            })
            .collect())
    }

    fn read_manifest(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        let failure = {
            let mut s = self.state();
            *s.manifest_reads.entry(desc.digest.clone()).or_default() += 1;
            take_failure(&mut s.fail_read, &desc.digest)
        };
        if let Some(class) = failure {
            return Err(injected(
                class,
                format!("{}: injected read failure of {}", self.label, desc.digest),
            ));
        }
        Ok(self.committed(desc)?.to_vec())
    }

    fn referrers(&self, subject: &Descriptor) -> Result<Vec<Descriptor>> {
        Ok(self.referrers_of(&subject.digest))
    }

    fn digest_tags(&self, subject: &Digest) -> Result<Vec<(String, Descriptor)>> {
        Ok(self
            .state()
            .images
            .iter()
            .flat_map(|(root, names)| {
                names.iter().filter_map(move |n| match n {
                    ImageName::RefName(t)
                        if crate::content::referrers::is_digest_tag_of(t, subject) =>
                    {
                        Some((t.clone(), root.clone()))
                    }
                    _ => None,
                })
            })
            .collect())
    }

    fn may_have_attached(&self, subject: &Digest) -> Option<bool> {
        Some(
            self.state().referrers.contains_key(subject)
                || self.digest_tags(subject).is_ok_and(|t| !t.is_empty()),
        )
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader> {
        let failure = {
            let mut s = self.state();
            *s.blob_reads.entry(desc.digest.clone()).or_default() += 1;
            take_failure(&mut s.fail_read, &desc.digest)
        };
        let bytes = self.committed(desc)?;
        Ok(match failure {
            Some(class) => Box::new(BreakingReader {
                bytes,
                pos: 0,
                error: Some(injected(
                    class,
                    format!("{}: injected read failure of {}", self.label, desc.digest),
                )),
            }),
            None => Box::new(SharedBytes { bytes, pos: 0 }),
        })
    }
}

/// Collects produced bytes while hashing them.
struct Collect {
    bytes: Vec<u8>,
    hasher: DigestHasher,
}

impl Write for Collect {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ImageSink for MemoryStore {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn caps(&self) -> SinkCaps {
        self.caps
    }

    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        let s = self.state();
        let held = |m: &HashMap<Digest, Arc<Vec<u8>>>| {
            m.get(&desc.digest)
                .is_some_and(|b| b.len() as u64 == desc.size)
        };
        Ok(s.present.contains(&desc.digest) || held(&s.content) || held(&s.staged))
    }

    fn has_image(
        &self,
        root: &Descriptor,
        _config: Option<&Digest>,
        names: &[ImageName],
    ) -> Result<bool> {
        let s = self.state();
        Ok(!names.is_empty()
            && names.iter().all(|n| {
                s.images
                    .iter()
                    .any(|(d, ns)| d.digest == root.digest && ns.contains(n))
            }))
    }

    fn put_blob(&self, desc: &Descriptor, reader: &mut dyn Read) -> Result<()> {
        self.stage(&desc.digest, reader)
    }

    fn put_blob_produced(
        &self,
        what: &str,
        produce: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<(Digest, u64)> {
        if !self.caps.streams_produced_blobs {
            return Err(Error::Unsupported(format!(
                "{what}: {} takes no streamed blobs",
                self.label
            )));
        }
        let mut out = Collect {
            bytes: Vec::new(),
            hasher: DigestHasher::sha256(),
        };
        produce(&mut out)?;
        let digest = out.hasher.finish();
        let size = out.bytes.len() as u64;
        self.stage(&digest, &mut out.bytes.as_slice())?;
        Ok((digest, size))
    }

    fn put_manifest(&self, manifest: &RawManifest) -> Result<()> {
        self.stage(&manifest.digest, &mut manifest.bytes.as_slice())
    }

    fn add_image(&self, root: &Descriptor, names: &[ImageName]) -> Result<()> {
        self.state()
            .staged_images
            .push((root.clone(), names.to_vec()));
        Ok(())
    }

    fn add_referrer(&self, referrer: &Descriptor, subject: &Descriptor) -> Result<()> {
        self.state()
            .staged_referrers
            .push((subject.digest.clone(), referrer.clone()));
        Ok(())
    }

    fn commit(&self) -> Result<()> {
        let mut s = self.state();
        // Names only what is there: a name on a root never put is refused
        // before anything becomes visible.
        if let Some((root, _)) = s.staged_images.iter().find(|(root, _)| {
            !s.content.contains_key(&root.digest)
                && !s.staged.contains_key(&root.digest)
                && !s.present.contains(&root.digest)
        }) {
            return Err(Error::NotFound(format!(
                "{}: image {} was named but never put",
                self.label, root.digest
            )));
        }
        let staged = std::mem::take(&mut s.staged);
        s.content.extend(staged);
        for (root, names) in std::mem::take(&mut s.staged_images) {
            add_names(&mut s.images, root, &names);
        }
        for (subject, r) in std::mem::take(&mut s.staged_referrers) {
            let list = s.referrers.entry(subject).or_default();
            if !list.iter().any(|d| d.digest == r.digest) {
                list.push(r);
            }
        }
        Ok(())
    }

    fn abort(&self) {
        let mut s = self.state();
        s.staged.clear();
        s.staged_images.clear();
        s.staged_referrers.clear();
    }
}
