//! Writing into an OCI layout directory.
//!
//! Blobs are written under a per-run temporary directory inside the layout
//! and renamed into `blobs/<alg>/` once complete; the engine has verified
//! their bytes by then. Nothing is named until commit: `index.json` is then
//! re-read, merged and replaced atomically while the layout directory is
//! locked, so concurrent writers into one layout lose no entry.
//!
//! A failed or interrupted run takes back, under the lock, the blobs it
//! added that no image named in `index.json` uses (one another run
//! committed meanwhile may), and the layout it started if nobody else wrote
//! into it. A run that counted on a blob taken back finds it missing at its
//! own commit and fails cleanly, naming it.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::{INDEX_FILE, OCI_LAYOUT_FILE, blob_path};
use crate::content::descriptor::{ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use crate::content::media_type::OCI_INDEX;
use crate::content::{Descriptor, MAX_MANIFEST_BYTES, RawManifest, Reference};
use crate::error::{Error, Result};
use crate::store::atomic_file::{publish, sync_dir};
use crate::store::cleanup::{claim_dir, reclaim_stale_dirs, register_hook, unregister_hook};

/// The name every writer's temporary directory in a layout starts with.
pub const TMP_PREFIX: &str = ".imgsync-tmp-";
/// A temporary directory being set up (see `make_tmp_dir`).
const STAGING_PREFIX: &str = ".imgsync-new-";

/// Removes staging directories: one can only be seen under the layout lock
/// after its writer died setting it up.
fn reclaim_staging_dirs(root: &Path) {
    let Ok(rd) = fs::read_dir(root) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}
use crate::store::{ImageName, ImageSink, SinkCaps};

pub const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

pub struct LayoutSink {
    root: PathBuf,
    label: String,
    tmp: PathBuf,
    /// The locked marker that tells other writers `tmp` is in use.
    claim: Mutex<Option<File>>,
    undo: Arc<Undo>,
    hook: usize,
    /// Every blob the images of this run need, written or found present.
    relied: Mutex<Vec<Descriptor>>,
    images: Mutex<Vec<(Descriptor, Vec<ImageName>)>>,
}

/// What a failed run takes back.
struct Undo {
    root: PathBuf,
    tmp: PathBuf,
    created_root: bool,
    wrote_layout_file: Mutex<bool>,
    added: Mutex<Vec<PathBuf>>,
}

impl Undo {
    fn run(&self) {
        let _ = fs::remove_dir_all(&self.tmp);
        let Ok(dir) = File::open(&self.root) else {
            return;
        };
        if dir.lock().is_err() {
            return;
        }
        reclaim_stale_dirs(&self.root, TMP_PREFIX);
        // Under the lock no run commits: the blobs this run added go back,
        // except those an image named in index.json already uses (a run
        // that committed meanwhile). A run still writing that counted on one
        // of them finds it missing at its commit and fails cleanly.
        let added = std::mem::take(&mut *self.added.lock().unwrap_or_else(|e| e.into_inner()));
        let used = reachable_blobs(&self.root);
        for p in &added {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !used.contains(&name) {
                let _ = fs::remove_file(p);
            }
        }
        // The layout this run started goes too, unless another run has
        // committed into it or is writing into it now.
        let started_it = *self
            .wrote_layout_file
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let others_writing = fs::read_dir(&self.root)
            .map(|rd| {
                rd.filter_map(|e| e.ok()).any(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with(TMP_PREFIX) || name.starts_with(STAGING_PREFIX)
                })
            })
            .unwrap_or(true);
        let blobs_left = fs::read_dir(self.root.join("blobs/sha256"))
            .map(|mut rd| rd.next().is_some())
            .unwrap_or(false);
        if started_it && !self.root.join(INDEX_FILE).exists() && !others_writing && !blobs_left {
            let _ = fs::remove_file(self.root.join(OCI_LAYOUT_FILE));
            let _ = fs::remove_dir(self.root.join("blobs/sha256"));
            let _ = fs::remove_dir(self.root.join("blobs"));
            if self.created_root {
                let _ = fs::remove_dir(&self.root);
            }
        }
        let _ = dir.unlock();
    }
}

/// Creates this run's temporary directory in the layout at `root`, and
/// takes back those of writers killed before they could (SIGKILL, power
/// loss). Both happen with the layout locked. The directory is made under a
/// staging name, its marker locked, and only then renamed to its
/// `TMP_PREFIX` name: a writer killed in between leaves a staging
/// directory, which (being made only under the lock) is dead whenever a
/// later writer holding the lock sees one, never a marker-less
/// `TMP_PREFIX` directory that would look like an older imgsync's.
fn make_tmp_dir(root: &Path) -> Result<(PathBuf, File)> {
    let dir = File::open(root).map_err(|e| Error::path("open", root, e))?;
    dir.lock().map_err(|e| Error::path("lock", root, e))?;
    let made = (|| {
        reclaim_stale_dirs(root, TMP_PREFIX);
        reclaim_staging_dirs(root);
        let staging = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(root)
            .map_err(|e| Error::path("write into", root, e))?
            .keep();
        let claimed = claim_dir(&staging).and_then(|claim| {
            let suffix = staging
                .file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .trim_start_matches(STAGING_PREFIX)
                        .to_string()
                })
                .unwrap_or_default();
            let tmp = root.join(format!("{TMP_PREFIX}{}-{suffix}", std::process::id()));
            // The marker's lock stays with the open file across the rename.
            fs::rename(&staging, &tmp)?;
            Ok((tmp, claim))
        });
        claimed.map_err(|e| {
            let _ = fs::remove_dir_all(&staging);
            Error::path("write into", &staging, e)
        })
    })();
    let _ = dir.unlock();
    made
}

/// The encoded digests of every blob reachable from `index.json` (through
/// indexes, manifests, configs, layers and subjects).
fn reachable_blobs(root: &Path) -> std::collections::HashSet<String> {
    let mut seen = std::collections::HashSet::new();
    let Ok(index) = fs::read(root.join(INDEX_FILE)) else {
        return seen;
    };
    let mut stack: Vec<Value> = serde_json::from_slice::<Value>(&index)
        .ok()
        .and_then(|v| v.get("manifests").and_then(Value::as_array).cloned())
        .unwrap_or_default();
    while let Some(d) = stack.pop() {
        let Some(digest) = d.get("digest").and_then(Value::as_str) else {
            continue;
        };
        let Some((alg, enc)) = digest.split_once(':') else {
            continue;
        };
        if !seen.insert(enc.to_string()) {
            continue;
        }
        let size = d.get("size").and_then(Value::as_u64).unwrap_or(u64::MAX);
        if size > MAX_MANIFEST_BYTES {
            continue;
        }
        let Ok(bytes) = fs::read(root.join("blobs").join(alg).join(enc)) else {
            continue;
        };
        let Ok(doc) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        for key in ["manifests", "layers"] {
            if let Some(list) = doc.get(key).and_then(Value::as_array) {
                stack.extend(list.iter().cloned());
            }
        }
        for key in ["config", "subject"] {
            if let Some(c) = doc.get(key) {
                stack.push(c.clone());
            }
        }
    }
    seen
}

impl LayoutSink {
    /// Opens `root` for writing: an existing layout, an empty directory, or a
    /// path that does not exist yet.
    pub fn open(root: &Path, label: String) -> Result<LayoutSink> {
        let existed = match fs::metadata(root) {
            Ok(m) if !m.is_dir() => {
                return Err(Error::Usage(format!(
                    "{label}: {} exists and is not a directory",
                    root.display()
                )));
            }
            Ok(_) => true,
            Err(_) => false,
        };
        if existed {
            if !root.join(OCI_LAYOUT_FILE).exists() {
                let foreign = fs::read_dir(root)
                    .map_err(|e| Error::path("read directory", root, e))?
                    .filter_map(|e| e.ok())
                    .any(|e| {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        !name.starts_with(TMP_PREFIX) && !name.starts_with(STAGING_PREFIX)
                    });
                // Another writer may have claimed it as a layout meanwhile.
                if foreign && !root.join(OCI_LAYOUT_FILE).exists() {
                    return Err(Error::Usage(format!(
                        "{label}: {} is a non-empty directory without an oci-layout file; refusing to write into it",
                        root.display()
                    )));
                }
            }
            if root.join(OCI_LAYOUT_FILE).exists() {
                // Without index.json it is a layout another writer is
                // creating right now; that writer may commit it at any time.
                super::read::read_index_if_present(&crate::store::files::DirTree {
                    root: root.to_path_buf(),
                })?;
            }
        } else {
            fs::create_dir_all(root).map_err(|e| Error::path("create directory", root, e))?;
        }
        let created_root = !existed;
        let (tmp, claim) = make_tmp_dir(root)?;
        let undo = Arc::new(Undo {
            root: root.to_path_buf(),
            tmp: tmp.clone(),
            created_root,
            wrote_layout_file: Mutex::new(false),
            added: Mutex::new(Vec::new()),
        });
        let hook_undo = undo.clone();
        let hook = register_hook(Arc::new(move || hook_undo.run()));
        let sink = LayoutSink {
            root: root.to_path_buf(),
            label,
            tmp,
            claim: Mutex::new(Some(claim)),
            undo,
            hook,
            relied: Mutex::new(Vec::new()),
            images: Mutex::new(Vec::new()),
        };
        // Claim the directory as a layout at once, so that concurrent
        // writers creating the same new layout recognise it.
        if !root.join(OCI_LAYOUT_FILE).exists() {
            sink.write_atomic(OCI_LAYOUT_FILE, OCI_LAYOUT_CONTENT)?;
            *sink
                .undo
                .wrote_layout_file
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = true;
        }
        Ok(sink)
    }

    fn install(&self, desc: &Descriptor, file: tempfile::NamedTempFile) -> Result<()> {
        let dest = self.root.join(blob_path(&desc.digest));
        #[allow(
            clippy::expect_used,
            reason = "blob_path is blobs/<algorithm>/<encoded>, under the root"
        )]
        let dir = dest.parent().expect("blob path has a parent");
        fs::create_dir_all(dir).map_err(|e| Error::path("create directory", dir, e))?;
        let existed = dest.exists();
        // The blob's directory is synced once, at commit, before index.json
        // names it.
        publish(file, &dest)?;
        if !existed {
            self.undo
                .added
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(dest);
        }
        self.relied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(desc.clone());
        Ok(())
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let dest = self.root.join(name);
        let mut tmp = crate::store::atomic_file::destination_tempfile(&self.tmp, ".blob-")
            .map_err(|e| Error::path("write into", &self.tmp, e))?;
        tmp.write_all(bytes)
            .map_err(|e| Error::path("write", tmp.path(), e))?;
        publish(tmp, &dest)
    }

    fn merge_index(&self, existing: Option<Vec<u8>>) -> Result<Vec<u8>> {
        let mut doc: Value = match existing {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Format(format!("{}: invalid index.json: {e}", self.label)))?,
            None => json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
        };
        let obj = doc
            .as_object_mut()
            .ok_or_else(|| Error::Format(format!("{}: index.json is not an object", self.label)))?;
        let entries: Vec<Value> = match obj.remove("manifests") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        };
        let entries = merge_index_entries(
            entries,
            &self.images.lock().unwrap_or_else(|e| e.into_inner()),
        );
        obj.insert("manifests".into(), Value::Array(entries));
        Ok(index_bytes(&doc))
    }
}

/// Serialises an index document the way imgsync writes `index.json`.
#[allow(
    clippy::expect_used,
    reason = "a serde_json::Value (string keys only) always serialises"
)]
pub fn index_bytes(doc: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(doc).expect("JSON values serialise");
    out.push(b'\n');
    out
}

/// Adds named images to the entries of an `index.json`. A full reference is
/// written as `io.containerd.image.name` plus the tag as
/// `org.opencontainers.image.ref.name` (the containerd and Docker
/// convention) and replaces the entry with the same full name; a bare ref
/// name replaces the entry with that ref name. An untagged entry for the
/// same digest is dropped in favour of the new one.
pub fn merge_index_entries(
    mut entries: Vec<Value>,
    images: &[(Descriptor, Vec<ImageName>)],
) -> Vec<Value> {
    for (root, names) in images {
        let digest = root.digest.as_str();
        // An unnamed entry for the same digest gives way to the new one.
        entries.retain(|e| e["digest"] != digest || is_named(e));
        if names.is_empty() {
            entries.push(entry(root, None, None));
            continue;
        }
        for name in names {
            match name {
                ImageName::Reference(r) => {
                    entries.retain(|e| !same_full_name(e, r));
                    if let Some(tag) = &r.tag {
                        strip_ref_name(&mut entries, tag);
                    }
                    entries.push(entry(root, r.tag.as_deref(), Some(&r.to_string())));
                }
                ImageName::RefName(s) => {
                    strip_ref_name(&mut entries, s);
                    entries.push(entry(root, Some(s), None));
                }
            }
        }
    }
    // Entries left without any name are dropped when another entry already
    // lists their digest.
    let named: std::collections::HashSet<String> = entries
        .iter()
        .filter(|e| is_named(e))
        .filter_map(|e| e["digest"].as_str().map(str::to_string))
        .collect();
    entries.retain(|e| is_named(e) || !e["digest"].as_str().is_some_and(|d| named.contains(d)));
    entries
}

fn is_named(e: &Value) -> bool {
    e["annotations"].get(ANNOTATION_REF_NAME).is_some()
        || e["annotations"].get(ANNOTATION_CONTAINERD_NAME).is_some()
}

/// A ref name names one entry: writing it takes it from any other entry
/// (as skopeo does), which keeps its other annotations; an entry left with
/// no name at all is dropped.
fn strip_ref_name(entries: &mut Vec<Value>, name: &str) {
    entries.retain_mut(|e| {
        let names_it = e
            .get("annotations")
            .and_then(|a| a.get(ANNOTATION_REF_NAME))
            .and_then(Value::as_str)
            == Some(name);
        if !names_it {
            return true;
        }
        if let Some(obj) = e.as_object_mut()
            && let Some(a) = obj.get_mut("annotations").and_then(Value::as_object_mut)
        {
            a.remove(ANNOTATION_REF_NAME);
            if a.is_empty() {
                obj.remove("annotations");
            }
        }
        is_named(e)
    });
}

fn same_full_name(e: &Value, r: &Reference) -> bool {
    e.get("annotations")
        .and_then(|a| a.get(ANNOTATION_CONTAINERD_NAME))
        .and_then(Value::as_str)
        .and_then(|n| Reference::parse(n).ok())
        .is_some_and(|n| &n.with_default_tag() == r)
}

#[allow(
    clippy::expect_used,
    reason = "a descriptor is strings, numbers and string-keyed maps, which always serialise"
)]
fn entry(root: &Descriptor, ref_name: Option<&str>, full: Option<&str>) -> Value {
    let mut d = Descriptor::new(root.media_type.clone(), root.digest.clone(), root.size);
    // A referrer's entry carries its artifact type, as a referrers list does.
    d.artifact_type = root.artifact_type.clone();
    if let Some(full) = full {
        d.set_annotation(ANNOTATION_CONTAINERD_NAME, full);
    }
    if let Some(r) = ref_name {
        d.set_annotation(ANNOTATION_REF_NAME, r);
    }
    serde_json::to_value(d).expect("descriptors serialise")
}

impl ImageSink for LayoutSink {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn caps(&self) -> SinkCaps {
        SinkCaps::ANY
    }

    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        let path = self.root.join(blob_path(&desc.digest));
        let present = fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == desc.size);
        // Small blobs (manifests, configs) are cheap to check whole; large
        // ones are trusted by size, as every layout writer does.
        let present = present
            && (desc.size > MAX_MANIFEST_BYTES
                || fs::read(&path).is_ok_and(|b| {
                    desc.digest.hasher().is_ok_and(|mut h| {
                        h.update(&b);
                        h.finish() == desc.digest
                    })
                }));
        if present {
            self.relied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(desc.clone());
        }
        Ok(present)
    }

    fn put_blob(&self, desc: &Descriptor, reader: &mut dyn Read) -> Result<()> {
        let tmp = crate::store::atomic_file::destination_tempfile(&self.tmp, ".blob-")
            .map_err(|e| Error::path("write into", &self.tmp, e))?;
        {
            let mut w = BufWriter::with_capacity(256 * 1024, tmp.as_file());
            std::io::copy(reader, &mut w)
                .map_err(|e| Error::io(format!("copy blob {}", desc.digest), e))?;
            w.flush().map_err(|e| Error::path("write", tmp.path(), e))?;
        }
        self.install(desc, tmp)
    }

    fn spool_dir(&self) -> Option<&Path> {
        Some(&self.tmp)
    }

    fn put_blob_file(&self, desc: &Descriptor, file: tempfile::NamedTempFile) -> Result<()> {
        if file.path().parent() == Some(self.tmp.as_path()) {
            return self.install(desc, file);
        }
        let mut f = file
            .reopen()
            .map_err(|e| Error::path("read", file.path(), e))?;
        self.put_blob(desc, &mut f)
    }

    fn put_manifest(&self, manifest: &RawManifest) -> Result<()> {
        let desc = manifest.descriptor();
        if self.has_blob(&desc)? {
            return Ok(());
        }
        self.put_blob(&desc, &mut manifest.bytes.as_slice())
    }

    fn add_image(&self, root: &Descriptor, names: &[ImageName]) -> Result<()> {
        self.images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((root.clone(), names.to_vec()));
        Ok(())
    }

    fn add_referrer(&self, referrer: &Descriptor, _subject: &Descriptor) -> Result<()> {
        // An entry without a name, found again by its manifest's subject.
        self.add_image(referrer, &[])
    }

    fn commit(&self) -> Result<()> {
        let dir = File::open(&self.root).map_err(|e| Error::path("open", &self.root, e))?;
        dir.lock().map_err(|e| Error::path("lock", &self.root, e))?;
        let result = (|| {
            if !self.root.join(OCI_LAYOUT_FILE).exists() {
                self.write_atomic(OCI_LAYOUT_FILE, OCI_LAYOUT_CONTENT)?;
            }
            fs::create_dir_all(self.root.join("blobs/sha256"))
                .map_err(|e| Error::path("create directory", &self.root, e))?;
            for d in self.relied.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                if !self.root.join(blob_path(&d.digest)).exists() {
                    return Err(Error::NotFound(format!(
                        "{}: blob {} disappeared from the layout while copying; run the copy again",
                        self.label, d.digest
                    )));
                }
            }
            let existing = match fs::read(self.root.join(INDEX_FILE)) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::path("read", &self.root.join(INDEX_FILE), e)),
            };
            let merged = self.merge_index(existing)?;
            // Every blob's name is durable before index.json names it, and
            // index.json's before the copy reports success.
            sync_dir(&self.root.join("blobs/sha256"))?;
            sync_dir(&self.root.join("blobs"))?;
            self.write_atomic(INDEX_FILE, &merged)?;
            sync_dir(&self.root)
        })();
        let _ = dir.unlock();
        unregister_hook(self.hook);
        let _ = fs::remove_dir_all(&self.tmp);
        self.claim.lock().unwrap_or_else(|e| e.into_inner()).take();
        result
    }

    fn abort(&self) {
        unregister_hook(self.hook);
        self.undo.run();
    }
}
