//! Writing a bundle: one tar (or volumes of at most `--split` bytes each)
//! that is an OCI layout of every image, a docker archive of the images it
//! carries whole, and an imgsync bundle manifest.
//!
//! Blobs are written as they arrive, in parallel, each into the region of a
//! volume reserved for it (see [`crate::store::tar::out`]). A blob that an
//! earlier bundle (`--since`) carried or relied on is left out and listed as
//! required; manifests and image configs are always carried, so every
//! bundle can be planned and verified on its own. Volumes are written to
//! temporary files and renamed into place on commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::manifest::{
    BlobPlace, BundleBlob, BundleManifest, PARTS_DIR, RequiredBlob, VolumeEntry, new_id,
    volume_path,
};
use crate::content::media_type::is_image_config;
use crate::content::referrers::digest_tag_subject;
use crate::content::{Descriptor, Digest, DigestHasher, MAX_MANIFEST_BYTES, Platform, RawManifest};
use crate::error::{Error, Result};
use crate::store::atomic_file::locked_destination_tempfile;
use crate::store::cleanup::{register_cleanup, unregister_cleanup};
use crate::store::tar::out::{BLOCK, TarOut, padded};
use crate::store::tar::writer::Capture;
use crate::store::{ImageName, ImageSink, SinkCaps};

/// Room kept in every volume for its listing line per entry.
const LISTING_PER_ENTRY: u64 = 160;
/// Room kept in every volume for the tar's end and the listing's frame.
const VOLUME_OVERHEAD: u64 = 8 * BLOCK;
/// The smallest `--split` accepted.
pub const MIN_VOLUME: u64 = 1024 * 1024;

/// How to write a bundle.
#[derive(Debug, Clone, Default)]
pub struct BundleOptions {
    /// Split into volumes of at most this many bytes.
    pub split: Option<u64>,
    /// The bundle this one follows: what it carried or relied on is left out.
    pub since: Option<(BundleManifest, String)>,
    /// The platform `docker load` gets from a multi-platform image.
    pub docker_platform: Option<Platform>,
}

pub(super) struct Volume {
    pub(super) number: u32,
    pub(super) tmp: tempfile::NamedTempFile,
    pub(super) out: Arc<TarOut>,
    /// Bytes reserved so far (entries, listing lines, overhead).
    pub(super) used: u64,
    pub(super) entries: BTreeMap<String, VolumeEntry>,
}

pub struct BundleSink {
    pub(super) label: String,
    pub(super) out: PathBuf,
    pub(super) opts: BundleOptions,
    pub(super) id: String,
    pub(super) created: String,
    /// From `--since`: digest → (size, id of the bundle that carried it).
    pub(super) covered: HashMap<Digest, (u64, String)>,
    pub(super) volumes: Mutex<Vec<Arc<Mutex<Volume>>>>,
    /// Blobs some image of the run writes (or has written): another image
    /// that needs one skips it rather than reading it again.
    pub(super) claimed: Mutex<HashSet<Digest>>,
    /// Blobs whose entries were started.
    pub(super) written: Mutex<HashSet<Digest>>,
    pub(super) blobs: Mutex<BTreeMap<Digest, BundleBlob>>,
    pub(super) required: Mutex<BTreeMap<Digest, RequiredBlob>>,
    pub(super) manifests: Mutex<HashMap<Digest, RawManifest>>,
    pub(super) configs: Mutex<HashMap<Digest, Vec<u8>>>,
    pub(super) images: Mutex<Vec<(Descriptor, Vec<ImageName>)>>,
    /// Referrers and digest-tagged manifests, as they arrive: the manifest,
    /// what it is attached to, and the digest tag it goes by (if one).
    pub(super) attached: Mutex<Vec<(Descriptor, Digest, Option<String>)>>,
    /// The manifest written on commit.
    pub(super) committed: Mutex<Option<BundleManifest>>,
}

pub(super) fn blob_entry(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.encoded())
}

pub(super) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl BundleSink {
    pub fn create(out: &Path, opts: BundleOptions) -> Result<BundleSink> {
        let label = format!("bundle {}", out.display());
        if out.is_dir() {
            return Err(Error::Usage(format!(
                "{label}: {} is a directory",
                out.display()
            )));
        }
        if let Some(s) = opts.split
            && s < MIN_VOLUME
        {
            return Err(Error::Usage(format!(
                "--split {s}: volumes must be at least 1MiB"
            )));
        }
        let covered = opts
            .since
            .as_ref()
            .map(|(m, _)| m.covered())
            .unwrap_or_default();
        Ok(BundleSink {
            label,
            out: out.to_path_buf(),
            id: new_id(out),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            opts,
            covered,
            volumes: Mutex::new(Vec::new()),
            claimed: Mutex::new(HashSet::new()),
            written: Mutex::new(HashSet::new()),
            blobs: Mutex::new(BTreeMap::new()),
            required: Mutex::new(BTreeMap::new()),
            manifests: Mutex::new(HashMap::new()),
            configs: Mutex::new(HashMap::new()),
            images: Mutex::new(Vec::new()),
            attached: Mutex::new(Vec::new()),
            committed: Mutex::new(None),
        })
    }

    /// The bundle manifest, once committed.
    pub fn manifest(&self) -> Option<BundleManifest> {
        self.committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn dir(&self) -> PathBuf {
        match self.out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Opens the next volume (call with the volume list locked).
    pub(super) fn new_volume(
        &self,
        volumes: &mut Vec<Arc<Mutex<Volume>>>,
    ) -> Result<Arc<Mutex<Volume>>> {
        let dir = self.dir();
        let prefix = format!(".{}.imgsync-partial-", file_name(&self.out));
        let tmp = locked_destination_tempfile(&dir, &prefix)
            .map_err(|e| Error::path("cannot write the bundle; create a file in", &dir, e))?;
        register_cleanup(tmp.path());
        let f = tmp
            .reopen()
            .map_err(|e| Error::path("write", tmp.path(), e))?;
        let number = volumes.len() as u32 + 1;
        let label = if self.opts.split.is_some() {
            volume_path(&self.out, number).display().to_string()
        } else {
            self.out.display().to_string()
        };
        let out = TarOut::file(f, label);
        out.dir("blobs/")?;
        out.dir("blobs/sha256/")?;
        let v = Arc::new(Mutex::new(Volume {
            number,
            tmp,
            out: Arc::new(out),
            used: VOLUME_OVERHEAD,
            entries: BTreeMap::new(),
        }));
        volumes.push(v.clone());
        Ok(v)
    }

    /// Reserves room for an entry of `size` bytes: the volume to write it
    /// into, or `None` when it does not fit in any one volume.
    fn place(&self, path: &str, desc: &Descriptor) -> Result<Option<(u32, Arc<TarOut>)>> {
        let size = desc.size;
        let need = padded(size)
            .saturating_add(BLOCK)
            .saturating_add(LISTING_PER_ENTRY);
        let mut volumes = self.volumes.lock().unwrap_or_else(|e| e.into_inner());
        let cap = self.opts.split.unwrap_or(u64::MAX);
        if need.saturating_add(VOLUME_OVERHEAD) > cap {
            return Ok(None);
        }
        let v = match volumes.last() {
            Some(v)
                if v.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .used
                    .saturating_add(need)
                    <= cap =>
            {
                v.clone()
            }
            _ => self.new_volume(&mut volumes)?,
        };
        let mut v = v.lock().unwrap_or_else(|e| e.into_inner());
        v.used = v.used.saturating_add(need);
        v.entries.insert(
            path.to_string(),
            VolumeEntry {
                size,
                digest: desc.digest.clone(),
            },
        );
        Ok(Some((v.number, v.out.clone())))
    }

    /// Writes a blob, whole or in parts; returns where it went.
    fn write_blob(&self, desc: &Descriptor, reader: &mut dyn Read) -> Result<Vec<BlobPlace>> {
        let path = blob_entry(&desc.digest);
        if let Some((number, out)) = self.place(&path, desc)? {
            out.entry(&path, desc.size, reader)?;
            return Ok(vec![BlobPlace {
                volume: number,
                size: desc.size,
            }]);
        }
        // Larger than a volume: numbered parts, each in a volume of its own.
        // Only a split bundle has a cap a blob can exceed.
        let Some(cap) = self.opts.split else {
            return Err(Error::Unsupported(format!(
                "blob {} ({} bytes) is too large for one bundle",
                desc.digest, desc.size
            )));
        };
        let part_max = (cap - VOLUME_OVERHEAD - BLOCK - LISTING_PER_ENTRY) / BLOCK * BLOCK;
        let mut places = Vec::new();
        let mut left = desc.size;
        let mut k = 1;
        while left > 0 {
            let path = format!(
                "{PARTS_DIR}/{}/{}.{k:04}",
                desc.digest.algorithm(),
                desc.digest.encoded()
            );
            let (v, size) = {
                let mut volumes = self.volumes.lock().unwrap_or_else(|e| e.into_inner());
                // The first part fills what is left of the current volume;
                // the others get volumes of their own.
                let current = match volumes.last() {
                    Some(v) if k == 1 => {
                        let used = v.lock().unwrap_or_else(|e| e.into_inner()).used
                            + BLOCK
                            + LISTING_PER_ENTRY;
                        let room = cap.saturating_sub(used) / BLOCK * BLOCK;
                        (room >= 64 * 1024).then(|| (v.clone(), left.min(room)))
                    }
                    _ => None,
                };
                let (v, size) = match current {
                    Some(here) => here,
                    None => (self.new_volume(&mut volumes)?, left.min(part_max)),
                };
                v.lock().unwrap_or_else(|e| e.into_inner()).used +=
                    BLOCK + padded(size) + LISTING_PER_ENTRY;
                (v, size)
            };
            let (number, out) = {
                let v = v.lock().unwrap_or_else(|e| e.into_inner());
                (v.number, v.out.clone())
            };
            // Each part is hashed too, so its volume can be checked alone.
            let mut hashed = HashingReader {
                inner: &mut *reader,
                hasher: DigestHasher::sha256(),
                limit: size,
                last: left == size,
            };
            out.entry(&path, size, &mut hashed)?;
            v.lock().unwrap_or_else(|e| e.into_inner()).entries.insert(
                path.clone(),
                VolumeEntry {
                    size,
                    digest: hashed.hasher.finish(),
                },
            );
            places.push(BlobPlace {
                volume: number,
                size,
            });
            left -= size;
            k += 1;
        }
        Ok(places)
    }

    fn carry(&self, desc: &Descriptor, reader: &mut dyn Read) -> Result<()> {
        if !self
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(desc.digest.clone())
        {
            return Ok(());
        }
        self.claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(desc.digest.clone());
        let parts = self.write_blob(desc, reader)?;
        self.blobs.lock().unwrap_or_else(|e| e.into_inner()).insert(
            desc.digest.clone(),
            BundleBlob {
                digest: desc.digest.clone(),
                size: desc.size,
                parts,
            },
        );
        Ok(())
    }
}

impl ImageSink for BundleSink {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn caps(&self) -> SinkCaps {
        // A tar's space for a blob is taken when it starts: no retries.
        SinkCaps {
            retry_blobs: false,
            ..SinkCaps::ANY
        }
    }

    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        if self
            .claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&desc.digest)
        {
            return Ok(true);
        }
        // Configs are always carried: loading and verifying read them.
        if !is_image_config(&desc.media_type)
            && let Some((size, bundle)) = self.covered.get(&desc.digest)
            && *size == desc.size
        {
            self.required
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    desc.digest.clone(),
                    RequiredBlob {
                        digest: desc.digest.clone(),
                        size: desc.size,
                        bundle: bundle.clone(),
                    },
                );
            return Ok(true);
        }
        // The caller writes it; images saved at the same time skip it. (A
        // failed blob fails the whole bundle, so none is left half-claimed.)
        Ok(!self
            .claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(desc.digest.clone()))
    }

    fn has_config(&self, desc: &Descriptor) -> Result<bool> {
        // Configs are always carried (the engine reads them when loading
        // and verifying), an artifact's `{}` or Helm config too.
        Ok(!self
            .claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(desc.digest.clone()))
    }

    fn put_blob(&self, desc: &Descriptor, reader: &mut dyn Read) -> Result<()> {
        let capture = is_image_config(&desc.media_type) && desc.size <= MAX_MANIFEST_BYTES;
        let mut r = Capture {
            inner: reader,
            buf: capture.then(Vec::new),
        };
        self.carry(desc, &mut r)?;
        if let Some(b) = r.buf
            && !b.is_empty()
        {
            self.configs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(desc.digest.clone(), b);
        }
        Ok(())
    }

    fn put_manifest(&self, manifest: &RawManifest) -> Result<()> {
        self.carry(&manifest.descriptor(), &mut &manifest.bytes[..])?;
        self.manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(manifest.digest.clone(), manifest.clone());
        Ok(())
    }

    fn add_image(&self, root: &Descriptor, names: &[ImageName]) -> Result<()> {
        // A manifest named only by digest tags travels with the manifest
        // the tag names, not as an image of its own.
        let tags: Vec<(String, Digest)> = names
            .iter()
            .filter_map(|n| {
                let tag = match n {
                    ImageName::RefName(t) => t.clone(),
                    ImageName::Reference(r) => r.tag.clone()?,
                };
                let (subject, _) = digest_tag_subject(&tag)?;
                Some((tag, subject))
            })
            .collect();
        if !names.is_empty() && tags.len() == names.len() {
            let mut attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
            for (tag, subject) in tags {
                attached.push((root.clone(), subject, Some(tag)));
            }
            return Ok(());
        }
        let mut images = self.images.lock().unwrap_or_else(|e| e.into_inner());
        match images.iter_mut().find(|(d, _)| d.digest == root.digest) {
            Some((_, existing)) => {
                for n in names {
                    if !existing.contains(n) {
                        existing.push(n.clone());
                    }
                }
            }
            None => images.push((root.clone(), names.to_vec())),
        }
        Ok(())
    }

    fn add_referrer(&self, referrer: &Descriptor, subject: &Descriptor) -> Result<()> {
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((referrer.clone(), subject.digest.clone(), None));
        Ok(())
    }

    fn commit(&self) -> Result<()> {
        let manifest = self.finish()?;
        self.persist()?;
        *self.committed.lock().unwrap_or_else(|e| e.into_inner()) = Some(manifest);
        Ok(())
    }

    fn abort(&self) {
        // Dropping a volume's temporary file deletes it.
        for v in std::mem::take(&mut *self.volumes.lock().unwrap_or_else(|e| e.into_inner())) {
            if let Ok(v) = v.lock() {
                unregister_cleanup(v.tmp.path());
            }
        }
    }
}

/// Reads at most `limit` bytes (or, for the last part, to the end, where a
/// verifying reader gives its verdict), hashing them.
struct HashingReader<'a> {
    inner: &'a mut dyn Read,
    hasher: DigestHasher,
    limit: u64,
    last: bool,
}

impl Read for HashingReader<'_> {
    #[allow(
        clippy::indexing_slicing,
        reason = "want is at most buf.len(), and counted at most the n <= want bytes read"
    )]
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = if self.last {
            buf.len()
        } else {
            buf.len().min(self.limit as usize)
        };
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        let counted = n.min(self.limit as usize);
        self.hasher.update(&buf[..counted]);
        self.limit -= counted as u64;
        Ok(n)
    }
}
