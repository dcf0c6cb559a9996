//! Reading a bundle: one file, or its volumes given in any order. Every
//! volume is indexed once and read in place (nothing is extracted); a blob
//! split into parts is read as one stream across its volumes.
//!
//! Opening checks the structure: every volume belongs to the bundle and
//! matches the checksum the bundle manifest gives its listing, no volume is
//! missing, and every blob the manifest lists is where it says with the size
//! it says. Problems are collected, so `verify` can name all of them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::manifest::{
    BundleManifest, PARTS_DIR, VolumeListing, listing_in, manifest_in, volume_path,
};
use super::tree::BundleTree;
use crate::content::referrers::is_digest_tag_of;
use crate::content::{Descriptor, Digest};
use crate::error::{Error, Result};
use crate::store::files::FileTree;
use crate::store::layout::{LayoutSource, blob_path};
use crate::store::spool::{OpenedArchive, open_archive};
use crate::store::tar::index::TarIndex;
use crate::store::{BlobReader, ImageSource, SourceImage};

pub struct Bundle {
    manifest: BundleManifest,
    label: String,
    /// Structural problems found while opening (missing or corrupt volumes,
    /// blobs not where the manifest says).
    problems: Vec<String>,
    layout: Option<LayoutSource<Arc<BundleTree>>>,
    tree: Arc<BundleTree>,
    /// Listings of the split bundle's volumes given.
    listings: BTreeMap<u32, VolumeListing>,
    /// Spool files of compressed volumes, deleted on drop.
    _opened: Vec<OpenedArchive>,
}

/// What a file given to `load` or `verify` turned out to be.
pub enum Opened {
    Bundle(Box<Bundle>),
    /// A tar without a bundle manifest or volume listing (a plain docker
    /// or OCI archive).
    NotABundle,
}

fn file_label(p: &Path) -> String {
    p.display().to_string()
}

/// One part of a blob cut across volumes, as its volume lists it.
pub struct BlobPart<'a> {
    volume: u32,
    path: &'a String,
    entry: &'a super::manifest::VolumeEntry,
}

impl Bundle {
    /// Adds to a blob's integrity error the volume that holds the blob.
    pub fn locate_error(&self, e: Error) -> Error {
        let Error::Blob { digest, message } = &e else {
            return e;
        };
        if self.manifest().volumes.len() < 2 {
            return e;
        }
        match self.location_of(digest) {
            Some(at) => Error::Blob {
                digest: digest.clone(),
                message: format!("{message} (in {at}: the volume is corrupt)"),
            },
            None => e,
        }
    }

    /// Opens a bundle from its file or volumes.
    pub fn open(paths: &[PathBuf], tmpdir: &Path) -> Result<Opened> {
        if paths.is_empty() {
            return Err(Error::Usage("give the bundle file or its volumes".into()));
        }
        // The name of a split bundle stands for its volumes.
        let expanded;
        let paths = match paths {
            [one] if !one.exists() && volume_path(one, 1).exists() => {
                expanded = existing_volumes(one);
                &expanded[..]
            }
            _ => paths,
        };
        let mut problems = Vec::new();
        let mut opened: Vec<(PathBuf, Arc<TarIndex>, Option<VolumeListing>, OpenedArchive)> =
            Vec::new();
        let mut manifests: Vec<(PathBuf, BundleManifest, Arc<TarIndex>)> = Vec::new();
        for p in paths {
            let what = file_label(p);
            let o = open_archive(&what, tmpdir)?;
            let f = o
                .file
                .try_clone()
                .map_err(|e| Error::io(format!("read {what}"), e))?;
            let tar = match TarIndex::new(f, &what) {
                Ok(t) => Arc::new(t),
                Err(e) if paths.len() > 1 => {
                    problems.push(format!("{e} (the volume is corrupt)"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let listing = match listing_in(&tar) {
                Ok(l) => l,
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            };
            match manifest_in(&tar) {
                Ok(Some(m)) => manifests.push((p.clone(), m, tar.clone())),
                Ok(None) => {}
                Err(e) if paths.len() > 1 => problems.push(e.to_string()),
                Err(e) => return Err(e),
            }
            opened.push((p.clone(), tar, listing, o));
        }
        if let [(a, ma, _), (b, mb, _), ..] = manifests.as_slice()
            && ma.id != mb.id
        {
            return Err(Error::Usage(format!(
                "{} and {} are two different bundles; give one bundle (or the volumes of one) at a time",
                a.display(),
                b.display()
            )));
        }
        let Some((meta_path, manifest, meta)) = manifests.into_iter().next() else {
            if paths.len() == 1
                && problems.is_empty()
                && opened.first().is_some_and(|o| o.2.is_none())
            {
                return Ok(Opened::NotABundle);
            }
            let highest = opened
                .iter()
                .filter_map(|(_, _, l, _)| l.as_ref().map(|l| l.number))
                .max();
            let mut why = match highest {
                Some(n) => format!(
                    "none of the given files holds the bundle manifest: it is in the last volume, after volume {n}; is the last volume missing?"
                ),
                None => "none of the given files is an imgsync bundle or bundle volume".into(),
            };
            if !problems.is_empty() {
                why = format!("{why} ({})", problems.join("; "));
            }
            return Err(Error::NotFound(why));
        };
        let label = match (paths.len(), manifest.volumes.len()) {
            (1, 1) => format!("bundle {}", file_label(&meta_path)),
            _ => {
                let base = meta_path
                    .to_string_lossy()
                    .rsplit_once('.')
                    .map(|(b, _)| b.to_string())
                    .unwrap_or_else(|| file_label(&meta_path));
                format!("bundle {base}")
            }
        };
        let dir = meta_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut volumes: BTreeMap<u32, Arc<TarIndex>> = BTreeMap::new();
        let split = opened.iter().any(|(_, _, l, _)| l.is_some());
        let mut kept = Vec::new();
        let mut listings = BTreeMap::new();
        for (p, tar, listing, o) in opened {
            let what = file_label(&p);
            let number = match (&listing, split) {
                (Some(l), _) => {
                    if l.bundle != manifest.id {
                        problems.push(format!(
                            "{what} is volume {} of another bundle ({}), not of {label} ({})",
                            l.number, l.bundle, manifest.id
                        ));
                        continue;
                    }
                    match manifest.volumes.iter().find(|v| v.number == l.number) {
                        Some(v) if v.checksum == l.checksum => {}
                        Some(_) => {
                            problems.push(format!(
                                "{what}: volume {} does not match the bundle manifest (its listing differs: corrupt, or rewritten)",
                                l.number
                            ));
                            continue;
                        }
                        None => {
                            problems.push(format!(
                                "{what}: the bundle manifest lists no volume {}",
                                l.number
                            ));
                            continue;
                        }
                    }
                    l.number
                }
                (None, true) if Arc::ptr_eq(&tar, &meta) => {
                    problems.push(format!("{what}: volume listing missing"));
                    continue;
                }
                (None, true) => {
                    problems.push(format!(
                        "{what} is not a volume of {label} (it has no volume listing)"
                    ));
                    continue;
                }
                (None, false) => 1,
            };
            if volumes.insert(number, tar).is_some() {
                return Err(Error::Usage(format!(
                    "{what}: volume {number} of {label} is given twice"
                )));
            }
            kept.push(o);
            if let Some(l) = listing {
                listings.insert(number, l);
            }
        }
        for v in &manifest.volumes {
            if !volumes.contains_key(&v.number) {
                problems.push(format!(
                    "volume {} of {} ({}) is missing",
                    v.number,
                    manifest.volumes.len(),
                    dir.join(&v.file).display()
                ));
            }
        }
        // Every blob where the manifest says.
        let mut places = HashMap::new();
        for b in &manifest.blobs {
            let split_blob = b.parts.len() > 1;
            let mut place = Vec::new();
            for (k, part) in b.parts.iter().enumerate() {
                let entry = if split_blob {
                    format!(
                        "{PARTS_DIR}/{}/{}.{:04}",
                        b.digest.algorithm(),
                        b.digest.encoded(),
                        k + 1
                    )
                } else {
                    blob_path(&b.digest)
                };
                if let Some(tar) = volumes.get(&part.volume) {
                    match tar.resolve(&entry) {
                        Ok(Some((_, size))) if size == part.size => {}
                        Ok(Some((_, size))) => problems.push(format!(
                            "{}: {entry} is {size} bytes, the bundle manifest says {} (the volume is corrupt)",
                            tar.describe(),
                            part.size
                        )),
                        Ok(None) => problems.push(format!(
                            "{}: blob {} is not in it, though the bundle manifest says so (the volume is corrupt)",
                            tar.describe(),
                            b.digest
                        )),
                        Err(e) => problems.push(e.to_string()),
                    }
                }
                place.push((part.volume, entry, part.size));
            }
            places.insert(b.digest.clone(), place);
        }
        let tree = Arc::new(BundleTree {
            label: label.clone(),
            meta,
            volumes,
            places,
        });
        let layout = match LayoutSource::open(tree.clone(), None, label.clone()) {
            Ok(l) => Some(l),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        Ok(Opened::Bundle(Box::new(Bundle {
            manifest,
            label,
            problems,
            layout,
            tree,
            listings,
            _opened: kept,
        })))
    }

    pub fn manifest(&self) -> &BundleManifest {
        &self.manifest
    }

    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Fails with every structural problem, if there are any.
    pub fn check(&self) -> Result<()> {
        match self.problems.as_slice() {
            [] => Ok(()),
            [one] => Err(Error::Integrity(format!("{}: {one}", self.label))),
            many => Err(Error::Integrity(format!(
                "{}: {} problems: {}",
                self.label,
                many.len(),
                many.join("; ")
            ))),
        }
    }

    /// Every part of a blob cut across volumes, to be re-hashed against its
    /// volume's listing with [`Bundle::check_part`] (a whole blob is
    /// checked by its own digest, and [`Bundle::location_of`] names its
    /// volume).
    pub fn parts(&self) -> Vec<BlobPart<'_>> {
        self.listings
            .iter()
            .flat_map(|(n, l)| {
                l.entries.iter().map(move |(path, entry)| BlobPart {
                    volume: *n,
                    path,
                    entry,
                })
            })
            .filter(|p| p.path.starts_with(PARTS_DIR))
            .collect()
    }

    /// Re-hashes one part: the problem, naming its volume, and the blob it
    /// belongs to; `None` when the part is sound.
    pub fn check_part(&self, part: &BlobPart) -> Option<(String, Option<Digest>)> {
        let Some(tar) = self.tree.volumes.get(&part.volume) else {
            return Some((
                format!("volume {} was not given", part.volume),
                entry_blob(part.path),
            ));
        };
        check_entry(tar, part.path, part.entry).map(|p| (p, entry_blob(part.path)))
    }

    /// Blobs with a part in a volume that was not given.
    pub fn unavailable(&self) -> HashSet<Digest> {
        self.tree
            .places
            .iter()
            .filter(|(_, place)| {
                place
                    .iter()
                    .any(|(v, _, _)| !self.tree.volumes.contains_key(v))
            })
            .map(|(d, _)| d.clone())
            .collect()
    }

    /// Where a blob is, for messages: `volume 3 (week49.tar.003)`.
    pub fn location_of(&self, digest: &Digest) -> Option<String> {
        let place = self.tree.places.get(digest)?;
        let vols: Vec<String> = place
            .iter()
            .map(|(v, _, _)| match self.tree.volumes.get(v) {
                Some(t) => format!("volume {v} ({})", t.describe()),
                None => format!("volume {v}"),
            })
            .collect();
        Some(vols.join(", "))
    }

    /// Does the bundle carry this blob?
    pub fn carries(&self, digest: &Digest) -> bool {
        self.tree.places.contains_key(digest)
    }

    fn layout(&self) -> Result<&LayoutSource<Arc<BundleTree>>> {
        self.layout.as_ref().ok_or_else(|| {
            Error::Format(format!(
                "{}: the bundle's index cannot be read (see the problems above)",
                self.label
            ))
        })
    }
}

impl ImageSource for Bundle {
    fn describe(&self) -> String {
        self.label.clone()
    }
    fn images(&self) -> Result<Vec<SourceImage>> {
        // What is attached to the images travels with them: digest tags
        // are no names of an image, and a referrer is no image.
        let referrers: HashSet<&Digest> = self
            .manifest
            .referrers()
            .into_iter()
            .map(|r| &r.digest)
            .collect();
        let listed: HashSet<&Digest> = self.manifest.images.iter().map(|i| &i.digest).collect();
        let mut images = self.layout()?.images()?;
        images.retain_mut(|img| {
            let before = img.names.len();
            img.names.retain(|n| !n.is_digest_tag());
            let attached_only =
                img.names.is_empty() && (before > 0 || referrers.contains(&img.root.digest));
            !attached_only || listed.contains(&img.root.digest)
        });
        Ok(images)
    }
    fn read_manifest(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        self.layout()?.read_manifest(desc)
    }
    fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader> {
        if !self.carries(&desc.digest) {
            let why = match self
                .manifest
                .required
                .iter()
                .find(|r| r.digest == desc.digest)
            {
                Some(r) => format!(
                    "it was carried by an earlier bundle ({})",
                    self.manifest
                        .bundle_file(&r.bundle)
                        .unwrap_or(r.bundle.clone())
                ),
                None => "the bundle does not carry it".into(),
            };
            return Err(Error::NotFound(format!(
                "{}: blob {}: {why}",
                self.label, desc.digest
            )));
        }
        self.layout()?.open_blob(desc)
    }
    fn referrers(&self, subject: &Descriptor) -> Result<Vec<Descriptor>> {
        // The bundle manifest (checksummed, and what `verify` checks) is
        // what the bundle says is attached, not whatever `index.json` holds.
        Ok(self
            .manifest
            .referrers()
            .into_iter()
            .filter(|r| r.tag.is_none() && r.subject == subject.digest)
            .map(|r| r.descriptor())
            .collect())
    }
    fn digest_tags(&self, subject: &Digest) -> Result<Vec<(String, Descriptor)>> {
        let mut out: Vec<(String, Descriptor)> = Vec::new();
        for r in self.manifest.referrers() {
            if let Some(tag) = &r.tag
                && is_digest_tag_of(tag, subject)
                && !out.iter().any(|(t, _)| t == tag)
            {
                out.push((tag.clone(), r.descriptor()));
            }
        }
        Ok(out)
    }
    fn may_have_attached(&self, subject: &Digest) -> Option<bool> {
        Some(
            self.manifest
                .referrers()
                .iter()
                .any(|r| &r.subject == subject),
        )
    }
}

/// The volumes of a split bundle written to `base` that exist on disk.
pub fn existing_volumes(base: &Path) -> Vec<PathBuf> {
    (1..10_000)
        .map(|n| volume_path(base, n))
        .take_while(|p| p.exists())
        .collect()
}

/// Hashes one volume entry; a message when it is missing or corrupt.
fn check_entry(tar: &TarIndex, path: &str, entry: &super::manifest::VolumeEntry) -> Option<String> {
    let what = tar.describe();
    let (mut r, size) = match TarIndex::open(tar, path) {
        Ok(Some(x)) => x,
        Ok(None) => return Some(format!("{what}: {path} is missing (the volume is corrupt)")),
        Err(e) => return Some(e.to_string()),
    };
    if size != entry.size {
        return Some(format!(
            "{what}: {path} is {size} bytes, its listing says {} (the volume is corrupt)",
            entry.size
        ));
    }
    let mut h = match entry.digest.hasher() {
        Ok(h) => h,
        Err(e) => return Some(format!("{what}: {path}: {e}")),
    };
    if let Err(e) = io::copy(&mut r, &mut h) {
        return Some(format!("{what}: cannot read {path}: {e}"));
    }
    let got = h.finish();
    (got != entry.digest).then(|| {
        format!(
            "{what}: {path} is corrupt: its bytes hash to {got}, not {}",
            entry.digest
        )
    })
}

/// The blob an entry of a volume holds (or holds a part of).
fn entry_blob(path: &str) -> Option<Digest> {
    let rest = path
        .strip_prefix("blobs/")
        .or_else(|| path.strip_prefix(&format!("{PARTS_DIR}/")))?;
    let (alg, hex) = rest.split_once('/')?;
    let hex = hex.split('.').next()?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
}
