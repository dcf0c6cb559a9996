//! Reading an OCI layout: `oci-layout`, `index.json`, and blobs by digest.
//!
//! Images are named by `org.opencontainers.image.ref.name` and, as
//! containerd and Docker write them, `io.containerd.image.name`. A selector
//! resolves against (1) the containerd name after normalisation, (2) the
//! exact ref name, (3) a ref name that is the tag of the requested reference,
//! or `@N` for the N-th entry (formats reference §4.2).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

use super::{INDEX_FILE, OCI_LAYOUT_FILE, blob_path};
use crate::content::descriptor::{ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use crate::content::manifest::is_manifest_media_type;
use crate::content::referrers::{fallback_tag, is_digest_tag_of, referrer_descriptor};
use crate::content::{Descriptor, Digest, MAX_MANIFEST_BYTES, ManifestView, Reference};
use crate::error::{Error, Result};
use crate::store::files::FileTree;
use crate::store::{BlobReader, ImageName, ImageSource, SourceImage};

/// Which images of a multi-image store to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A name (tag, ref name or full reference).
    Name(String),
    /// The N-th image (`@N`), counting from 0.
    Index(usize),
}

/// `index.json`, leniently read.
#[derive(Debug, Clone, Default)]
pub struct LayoutIndex {
    pub manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct IndexWire {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    manifests: Option<Vec<Descriptor>>,
}

impl LayoutIndex {
    pub fn parse(bytes: &[u8], what: &str) -> Result<LayoutIndex> {
        let wire: IndexWire = serde_json::from_slice(bytes)
            .map_err(|e| Error::Format(format!("{what}: invalid index.json: {e}")))?;
        if wire.schema_version.is_some_and(|v| v != 2) {
            return Err(Error::Format(format!(
                "{what}: index.json schemaVersion is not 2"
            )));
        }
        Ok(LayoutIndex {
            manifests: wire.manifests.unwrap_or_default(),
        })
    }
}

/// Checks `oci-layout` and reads `index.json` from a tree.
pub fn read_layout_index(files: &dyn FileTree) -> Result<LayoutIndex> {
    let what = files.describe();
    read_index_if_present(files)?
        .ok_or_else(|| Error::Format(format!("{what} is not an OCI layout: it has no index.json")))
}

/// Checks that a tree's `oci-layout` file names a version imgsync reads.
fn check_layout_file(files: &dyn FileTree) -> Result<()> {
    let what = files.describe();
    let layout = files
        .read_small(OCI_LAYOUT_FILE, 64 * 1024)?
        .ok_or_else(|| {
            Error::Format(format!(
                "{what} is not an OCI layout: it has no oci-layout file"
            ))
        })?;
    #[derive(Deserialize)]
    struct LayoutWire {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let v: LayoutWire = serde_json::from_slice(&layout)
        .map_err(|e| Error::Format(format!("{what}: invalid oci-layout file: {e}")))?;
    if v.version != "1.0.0" {
        return Err(Error::Unsupported(format!(
            "{what}: OCI layout version {} is not supported (only 1.0.0)",
            v.version
        )));
    }
    Ok(())
}

/// Checks `oci-layout` and reads `index.json` from a tree whose `index.json`
/// may not exist yet (a layout another writer is creating): `None` then.
pub fn read_index_if_present(files: &dyn FileTree) -> Result<Option<LayoutIndex>> {
    check_layout_file(files)?;
    let what = files.describe();
    match files.read_small(INDEX_FILE, MAX_MANIFEST_BYTES)? {
        Some(index) => LayoutIndex::parse(&index, &what).map(Some),
        None => Ok(None),
    }
}

/// The names an `index.json` entry gives its image.
pub fn entry_names(desc: &Descriptor) -> Vec<ImageName> {
    if let Some(full) = desc.annotation(ANNOTATION_CONTAINERD_NAME)
        && let Ok(r) = Reference::parse(full)
        && r.tag.is_some()
    {
        return vec![ImageName::Reference(r)];
    }
    match desc.annotation(ANNOTATION_REF_NAME) {
        Some(name) => {
            let n = ImageName::RefName(name.to_string());
            match n.reference() {
                Some(r) => vec![ImageName::Reference(r)],
                None => vec![n],
            }
        }
        None => vec![],
    }
}

/// Picks the images of an index a selector asks for.
pub fn select_entries(
    entries: &[Descriptor],
    selector: Option<&Selector>,
    what: &str,
) -> Result<Vec<SourceImage>> {
    let chosen: Vec<&Descriptor> = match selector {
        None => entries.iter().collect(),
        Some(Selector::Index(n)) => match entries.get(*n) {
            Some(d) => vec![d],
            None => {
                return Err(Error::NotFound(format!(
                    "{what} has {} image(s); there is no image @{n}",
                    entries.len()
                )));
            }
        },
        Some(Selector::Name(name)) => {
            let wanted = Reference::parse(name).ok().map(Reference::with_default_tag);
            let by_full: Vec<&Descriptor> = entries
                .iter()
                .filter(|d| {
                    let Some(w) = &wanted else { return false };
                    d.annotation(ANNOTATION_CONTAINERD_NAME)
                        .and_then(|n| Reference::parse(n).ok())
                        .map(Reference::with_default_tag)
                        .as_ref()
                        == Some(w)
                        || d.annotation(ANNOTATION_REF_NAME)
                            .filter(|r| r.contains(['/', ':']))
                            .and_then(|n| Reference::parse(n).ok())
                            .map(Reference::with_default_tag)
                            .as_ref()
                            == Some(w)
                })
                .collect();
            let exact: Vec<&Descriptor> = entries
                .iter()
                .filter(|d| d.annotation(ANNOTATION_REF_NAME) == Some(name.as_str()))
                .collect();
            let by_tag: Vec<&Descriptor> = match &wanted {
                Some(w) if name.contains(':') => entries
                    .iter()
                    .filter(|d| {
                        d.annotation(ANNOTATION_CONTAINERD_NAME).is_none()
                            && d.annotation(ANNOTATION_REF_NAME) == w.tag.as_deref()
                    })
                    .collect(),
                _ => vec![],
            };
            let found = [by_full, exact, by_tag]
                .into_iter()
                .find_map(|v| Some((*v.first()?, v)));
            let Some((first_found, found)) = found else {
                return Err(Error::NotFound(format!(
                    "{what} has no image named {name:?}; it has: {}",
                    list_names(entries)
                )));
            };
            let first = &first_found.digest;
            if found.iter().any(|d| &d.digest != first) {
                return Err(Error::Format(format!(
                    "{what}: the name {name:?} is ambiguous: it points at {} different images",
                    found
                        .iter()
                        .map(|d| d.digest.as_str())
                        .collect::<std::collections::BTreeSet<_>>()
                        .len()
                )));
            }
            vec![first_found]
        }
    };
    // Entries with the same digest are one image with several names.
    let mut images: Vec<SourceImage> = Vec::new();
    for d in chosen {
        let names = entry_names(d);
        if let Some(img) = images.iter_mut().find(|i| i.root.digest == d.digest) {
            for n in names {
                if !img.names.contains(&n) {
                    img.names.push(n);
                }
            }
            continue;
        }
        let mut root = d.clone();
        root.annotations = None;
        images.push(SourceImage {
            root,
            names,
            synthesized: false,
        });
    }
    Ok(images)
}

pub fn list_names(entries: &[Descriptor]) -> String {
    if entries.is_empty() {
        return "no images".into();
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let names = entry_names(d);
            if names.is_empty() {
                format!("@{i} (untagged {})", d.digest.short())
            } else {
                names
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Referrers by subject, as a layout holds them.
type Attached = HashMap<Digest, Vec<Descriptor>>;

/// An OCI layout as an image source.
pub struct LayoutSource<F: FileTree> {
    files: F,
    index: LayoutIndex,
    selector: Option<Selector>,
    label: String,
    /// Found on first use: reading every entry's manifest costs a little.
    attached: OnceLock<Attached>,
}

impl<F: FileTree> LayoutSource<F> {
    pub fn open(files: F, selector: Option<Selector>, label: String) -> Result<LayoutSource<F>> {
        let index = read_layout_index(&files)?;
        Ok(LayoutSource {
            files,
            index,
            selector,
            label,
            attached: OnceLock::new(),
        })
    }

    /// The referrers the layout holds, by subject: `index.json` entries
    /// whose manifest has a `subject` (as oras stores them), and the
    /// entries of indexes under a fallback tag `<alg>-<hex>` (as a
    /// registry without the referrers API lists them). Entries that cannot
    /// be read are not referrers; the engine checks what it takes.
    fn attached(&self) -> &Attached {
        self.attached.get_or_init(|| {
            let mut out: Attached = HashMap::new();
            let mut add = |subject: Digest, d: Descriptor| {
                let list = out.entry(subject).or_default();
                if !list.iter().any(|e| e.digest == d.digest) {
                    list.push(d);
                }
            };
            for entry in &self.index.manifests {
                if !is_manifest_media_type(&entry.media_type) {
                    continue;
                }
                let Ok(bytes) = read_blob_small(&self.files, entry, &self.label) else {
                    continue;
                };
                let Ok(view) = ManifestView::parse(&bytes, Some(&entry.media_type)) else {
                    continue;
                };
                if let Some(subject) = &view.subject {
                    add(subject.digest.clone(), referrer_descriptor(entry, &bytes));
                }
                let fallback_of = entry_names(entry).iter().find_map(|n| {
                    let tag = match n {
                        ImageName::Reference(r) => r.tag.clone()?,
                        ImageName::RefName(t) => t.clone(),
                    };
                    let (alg, enc) = tag.split_once('-')?;
                    let d = Digest::parse(&format!("{alg}:{enc}")).ok()?;
                    (fallback_tag(&d) == tag).then_some(d)
                });
                if let Some(subject) = fallback_of
                    && view.kind.is_index()
                {
                    for m in view.manifests {
                        add(subject.clone(), m);
                    }
                }
            }
            out
        })
    }

    pub fn index(&self) -> &LayoutIndex {
        &self.index
    }
}

/// Reads a manifest-sized blob from a layout tree.
pub fn read_blob_small(files: &dyn FileTree, desc: &Descriptor, label: &str) -> Result<Vec<u8>> {
    if desc.size > MAX_MANIFEST_BYTES {
        return Err(Error::Format(format!(
            "{label}: manifest {} is {} bytes, over the {MAX_MANIFEST_BYTES}-byte limit",
            desc.digest, desc.size
        )));
    }
    files
        .read_small(&blob_path(&desc.digest), MAX_MANIFEST_BYTES)?
        .ok_or_else(|| missing(desc, label))
}

pub fn open_blob(files: &dyn FileTree, desc: &Descriptor, label: &str) -> Result<BlobReader> {
    files
        .open(&blob_path(&desc.digest))?
        .map(|(r, _)| r)
        .ok_or_else(|| missing(desc, label))
}

fn missing(desc: &Descriptor, label: &str) -> Error {
    Error::NotFound(format!("{label}: blob {} is missing", desc.digest))
}

impl<F: FileTree> ImageSource for LayoutSource<F> {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn images(&self) -> Result<Vec<SourceImage>> {
        select_entries(&self.index.manifests, self.selector.as_ref(), &self.label)
    }

    fn read_manifest(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        read_blob_small(&self.files, desc, &self.label)
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader> {
        open_blob(&self.files, desc, &self.label)
    }

    fn referrers(&self, subject: &Descriptor) -> Result<Vec<Descriptor>> {
        Ok(self
            .attached()
            .get(&subject.digest)
            .cloned()
            .unwrap_or_default())
    }

    fn digest_tags(&self, subject: &Digest) -> Result<Vec<(String, Descriptor)>> {
        let mut out: Vec<(String, Descriptor)> = Vec::new();
        for entry in &self.index.manifests {
            for name in entry_names(entry) {
                let tag = match name {
                    ImageName::Reference(r) => r.tag,
                    ImageName::RefName(t) => Some(t),
                };
                if let Some(tag) = tag
                    && is_digest_tag_of(&tag, subject)
                    && !out.iter().any(|(t, _)| t == &tag)
                {
                    let mut d = entry.clone();
                    d.annotations = None;
                    out.push((tag, d));
                }
            }
        }
        Ok(out)
    }

    fn may_have_attached(&self, subject: &Digest) -> Option<bool> {
        // Reading the layout is cheap: look.
        Some(
            self.attached().contains_key(subject)
                || self.digest_tags(subject).is_ok_and(|t| !t.is_empty()),
        )
    }
}
