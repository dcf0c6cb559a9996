//! Reading `docker save` archives.
//!
//! The archive is indexed once and read in place. Images come from
//! `manifest.json`; when the archive also carries an OCI layout (Docker 25+,
//! containerd) and an image's config is reachable from `index.json`, that
//! layout's manifest is used as is, so its digest is preserved. Otherwise an
//! OCI manifest is built from the config and layer files: an uncompressed
//! layer's digest is its DiffID, a compressed layer's digest comes from
//! `LayerSources` when it matches or is computed. Compression is told by
//! magic bytes, never by file names.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::content::config::ConfigView;
use crate::content::media_type::{self, Compression, OCI_CONFIG, OCI_MANIFEST, Sniffed};
use crate::content::{
    Descriptor, Digest, DigestHasher, MAX_GRAPH_NODES, MAX_MANIFEST_BYTES, ManifestView, Reference,
};
use crate::error::{Error, Result};
use crate::store::files::FileTree;
use crate::store::layout::{LayoutSource, Selector, blob_path};
use crate::store::spool::{OpenedArchive, open_archive};
use crate::store::tar::index::TarIndex;
use crate::store::{BlobReader, ImageName, ImageSource, SourceImage};

const MANIFEST_JSON_CAP: u64 = 20 * 1024 * 1024;

pub struct DockerArchiveSource {
    tar: Arc<TarIndex>,
    label: String,
    images: Vec<SourceImage>,
    synthesized: HashMap<Digest, Vec<u8>>,
    blob_entries: HashMap<Digest, String>,
    _spool: OpenedArchive,
}

/// One `manifest.json` entry, read case-insensitively (Go decoders are).
pub(crate) struct Entry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
    layer_sources: HashMap<String, Descriptor>,
}

fn field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

pub(crate) fn parse_manifest_json(bytes: &[u8], what: &str) -> Result<Vec<Entry>> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::Format(format!("{what}: manifest.json is not valid JSON: {e}")))?;
    let list = match doc {
        Value::Null => return Err(Error::Format(format!("{what}: manifest.json is null"))),
        Value::Array(a) => a,
        _ => {
            return Err(Error::Format(format!(
                "{what}: manifest.json is not a list"
            )));
        }
    };
    let bad = |i: usize, why: &str| Error::Format(format!("{what}: manifest.json entry {i} {why}"));
    let mut out = Vec::new();
    for (i, e) in list.into_iter().enumerate() {
        let obj = e.as_object().ok_or_else(|| bad(i, "is not an object"))?;
        let config = field(obj, "Config")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(i, "has no Config"))?
            .to_string();
        let strings = |v: Option<&Value>| -> Result<Vec<String>> {
            match v {
                None => Ok(vec![]),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| bad(i, "has a non-string list item"))
                    })
                    .collect(),
                Some(_) => Err(bad(i, "has a field that should be a list")),
            }
        };
        let repo_tags = strings(field(obj, "RepoTags"))?;
        let layers = strings(field(obj, "Layers"))?;
        let layer_sources = match field(obj, "LayerSources") {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| bad(i, &format!("has invalid LayerSources: {e}")))?,
            None => HashMap::new(),
        };
        out.push(Entry {
            config,
            repo_tags,
            layers,
            layer_sources,
        });
    }
    Ok(out)
}

impl DockerArchiveSource {
    pub fn open(
        path: &str,
        selector: Option<Selector>,
        tmpdir: &std::path::Path,
        label: String,
    ) -> Result<DockerArchiveSource> {
        let opened = open_archive(path, tmpdir)?;
        let file = opened
            .file
            .try_clone()
            .map_err(|e| Error::io(format!("read {label}"), e))?;
        let tar = Arc::new(TarIndex::new(file, &label)?);
        let manifest_json = match tar.read_small("manifest.json", MANIFEST_JSON_CAP)? {
            Some(b) => b,
            None if tar.contains("repositories")? => {
                return Err(Error::Unsupported(format!(
                    "{label} has no manifest.json: it is a pre-1.10 docker save archive, which imgsync does not read"
                )));
            }
            None if tar.contains("oci-layout")? => {
                return Err(Error::Format(format!(
                    "{label} has no manifest.json; it looks like an OCI archive: use oci-archive:{path}"
                )));
            }
            None => {
                return Err(Error::Format(format!(
                    "{label} has no manifest.json: not a docker save archive"
                )));
            }
        };
        let entries = parse_manifest_json(&manifest_json, &label)?;
        let mut src = DockerArchiveSource {
            tar: tar.clone(),
            label: label.clone(),
            images: Vec::new(),
            synthesized: HashMap::new(),
            blob_entries: HashMap::new(),
            _spool: opened,
        };
        // The OCI half of a Docker 25+ or containerd archive, when present.
        let layout_images = if tar.contains("oci-layout")? && tar.contains("index.json")? {
            let layout = LayoutSource::open(tar.clone(), None, label.clone())?;
            let mut imgs = Vec::new();
            for img in layout.images()? {
                let reached = reach(&layout, &img.root);
                imgs.push((img, reached));
            }
            imgs
        } else {
            Vec::new()
        };
        let mut used_layout = vec![false; layout_images.len()];
        let mut images: Vec<SourceImage> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let config_bytes = tar
                .read_small(&entry.config, MAX_MANIFEST_BYTES)?
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "{label}: image {i} references config {}, which is not in the archive",
                        entry.config
                    ))
                })?;
            let config_digest = Digest::sha256_of(&config_bytes);
            let names: Vec<ImageName> = entry
                .repo_tags
                .iter()
                .filter_map(|t| Reference::parse(t).ok())
                .map(|r| ImageName::Reference(r.with_default_tag()))
                .collect();
            let found = layout_images.iter().enumerate().find_map(|(k, (img, r))| {
                r.manifests
                    .iter()
                    .find(|(c, _)| c == &config_digest)
                    .map(|(_, m)| (k, img, r, m))
            });
            let image = match found {
                Some((k, img, reached, m)) => {
                    if let Some(used) = used_layout.get_mut(k) {
                        *used = true;
                    }
                    let mut img = img.clone();
                    // A containerd-store archive lists platforms whose blobs
                    // it does not carry: take the manifest that manifest.json
                    // describes rather than an index that cannot be copied.
                    if !reached.complete {
                        img.root = m.clone();
                        img.root.platform = None;
                        img.root.annotations = None;
                    }
                    for n in names {
                        if !img.names.contains(&n) {
                            img.names.push(n);
                        }
                    }
                    img
                }
                None => src.synthesize(i, entry, &config_bytes, config_digest, names)?,
            };
            // Several entries for one image: one image with every name, kept
            // at each position so that `@N` still counts manifest.json entries.
            let mut merged = image;
            for other in images
                .iter_mut()
                .filter(|m| m.root.digest == merged.root.digest)
            {
                for n in &merged.names {
                    if !other.names.contains(n) {
                        other.names.push(n.clone());
                    }
                }
                merged.names = other.names.clone();
            }
            images.push(merged);
        }
        for ((img, _), used) in layout_images.into_iter().zip(used_layout) {
            if !used && !images.iter().any(|m| m.root.digest == img.root.digest) {
                images.push(img);
            }
        }
        src.images = select(images, selector.as_ref(), &label)?;
        Ok(src)
    }

    fn synthesize(
        &mut self,
        i: usize,
        entry: &Entry,
        config_bytes: &[u8],
        config_digest: Digest,
        names: Vec<ImageName>,
    ) -> Result<SourceImage> {
        let label = &self.label;
        let config = ConfigView::parse(config_bytes).map_err(|e| {
            Error::Format(format!(
                "{label}: config {} of image {i}: {e}",
                entry.config
            ))
        })?;
        if entry.layers.len() != config.diff_ids.len() {
            return Err(Error::Format(format!(
                "{label}: image {i} lists {} layers but its config has {} diff_ids",
                entry.layers.len(),
                config.diff_ids.len()
            )));
        }
        self.blob_entries
            .insert(config_digest.clone(), entry.config.clone());
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&config.diff_ids) {
            let source = entry.layer_sources.get(diff_id.as_str());
            let Some((mut reader, size)) = self.tar.open(path)? else {
                match source {
                    Some(d)
                        if let Some(t) = media_type::layer_type(&d.media_type)
                            && t.foreign =>
                    {
                        // Described the way a present foreign layer is, so the
                        // image has one manifest whether or not its bytes came along.
                        let mut desc = d.clone();
                        desc.media_type =
                            media_type::layer_media_type(t.compression, true, false).to_string();
                        layers.push(desc);
                        continue;
                    }
                    _ => {
                        return Err(Error::NotFound(format!(
                            "{label}: image {i} references layer {path}, which is not in the archive"
                        )));
                    }
                }
            };
            let mut head = [0u8; 8];
            let head = crate::store::io::read_head(&mut reader, &mut head)
                .map_err(|e| Error::io(format!("read {path} in {label}"), e))?;
            let compression = match Compression::sniff(head) {
                Sniffed::Known(c) => c,
                Sniffed::Other(kind) => {
                    return Err(Error::Unsupported(format!(
                        "{label}: layer {path} is {kind}-compressed, which imgsync cannot decompress"
                    )));
                }
            };
            let foreign = source
                .and_then(|d| media_type::layer_type(&d.media_type))
                .is_some_and(|t| t.foreign);
            let digest = if compression == Compression::None {
                diff_id.clone()
            } else {
                match source.filter(|d| {
                    d.size == size
                        && media_type::layer_type(&d.media_type)
                            .is_some_and(|t| t.compression == compression)
                }) {
                    Some(d) => d.digest.clone(),
                    None => self.hash_entry(path)?,
                }
            };
            let mut desc = Descriptor::new(
                media_type::layer_media_type(compression, foreign, false),
                digest.clone(),
                size,
            );
            if foreign {
                desc.urls = source.and_then(|d| d.urls.clone());
            }
            self.blob_entries.insert(digest, path.clone());
            layers.push(desc);
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": Descriptor::new(OCI_CONFIG, config_digest, config_bytes.len() as u64),
            "layers": layers,
        });
        #[allow(
            clippy::expect_used,
            reason = "a serde_json::Value (string keys only) always serialises"
        )]
        let bytes = serde_json::to_vec(&manifest).expect("JSON values serialise");
        let digest = Digest::sha256_of(&bytes);
        let root = Descriptor::new(OCI_MANIFEST, digest.clone(), bytes.len() as u64);
        self.synthesized.insert(digest, bytes);
        Ok(SourceImage {
            root,
            names,
            synthesized: true,
        })
    }

    fn hash_entry(&self, path: &str) -> Result<Digest> {
        let (mut r, _) = self.tar.open(path)?.ok_or_else(|| {
            Error::NotFound(format!("{}: {path} is not in the archive", self.label))
        })?;
        let mut h = DigestHasher::sha256();
        std::io::copy(&mut r, &mut h)
            .map_err(|e| Error::io(format!("read {path} in {}", self.label), e))?;
        Ok(h.finish())
    }
}

/// What a layout root reaches: each image manifest with its config digest,
/// and whether every manifest it lists is present.
struct Reach {
    manifests: Vec<(Digest, Descriptor)>,
    complete: bool,
}

fn reach<F: FileTree>(layout: &LayoutSource<F>, root: &Descriptor) -> Reach {
    let mut r = Reach {
        manifests: Vec::new(),
        complete: true,
    };
    let mut seen = HashSet::new();
    walk(layout, root, 0, &mut r, &mut seen);
    r
}

/// Visits each distinct manifest once (indexes may list a child many
/// times, level after level); a graph past [`MAX_GRAPH_NODES`] counts as
/// incomplete, and copying it is refused when it is planned.
fn walk<F: FileTree>(
    layout: &LayoutSource<F>,
    desc: &Descriptor,
    depth: usize,
    r: &mut Reach,
    seen: &mut HashSet<Digest>,
) {
    if !seen.insert(desc.digest.clone()) {
        return;
    }
    let view = (depth <= 8 && seen.len() <= MAX_GRAPH_NODES)
        .then(|| layout.read_manifest(desc).ok())
        .flatten()
        .and_then(|b| ManifestView::parse(&b, Some(&desc.media_type)).ok());
    let Some(view) = view else {
        r.complete = false;
        return;
    };
    if view.kind.is_index() {
        for child in &view.manifests {
            walk(layout, child, depth + 1, r, seen);
        }
    } else if let Some(c) = view.config {
        r.manifests.push((c.digest, desc.clone()));
    }
}

fn select(
    images: Vec<SourceImage>,
    selector: Option<&Selector>,
    label: &str,
) -> Result<Vec<SourceImage>> {
    let listing = || {
        if images.is_empty() {
            return "no images".to_string();
        }
        images
            .iter()
            .enumerate()
            .map(|(i, img)| {
                if img.names.is_empty() {
                    format!("@{i} (untagged)")
                } else {
                    img.names
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    match selector {
        None => {
            let mut unique: Vec<SourceImage> = Vec::new();
            for img in images {
                if !unique.iter().any(|u| u.root.digest == img.root.digest) {
                    unique.push(img);
                }
            }
            Ok(unique)
        }
        Some(Selector::Index(n)) => match images.get(*n) {
            Some(img) => Ok(vec![img.clone()]),
            None => Err(Error::NotFound(format!(
                "{label} has {} image(s); there is no image @{n}",
                images.len()
            ))),
        },
        Some(Selector::Name(name)) => {
            let wanted = Reference::parse(name)
                .map_err(|e| Error::Usage(format!("{label}: {e}")))?
                .with_default_tag();
            let wanted_name = ImageName::Reference(wanted.clone());
            match images.iter().find(|img| img.names.contains(&wanted_name)) {
                Some(img) => {
                    let mut img = img.clone();
                    img.names = vec![wanted_name];
                    Ok(vec![img])
                }
                None => Err(Error::NotFound(format!(
                    "{label} has no image named {wanted}; it has: {}",
                    listing()
                ))),
            }
        }
    }
}

impl ImageSource for DockerArchiveSource {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn images(&self) -> Result<Vec<SourceImage>> {
        Ok(self.images.clone())
    }

    fn read_manifest(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        if let Some(b) = self.synthesized.get(&desc.digest) {
            return Ok(b.clone());
        }
        let path = self
            .blob_entries
            .get(&desc.digest)
            .cloned()
            .unwrap_or_else(|| blob_path(&desc.digest));
        self.tar
            .read_small(&path, MAX_MANIFEST_BYTES)?
            .ok_or_else(|| {
                Error::NotFound(format!("{}: blob {} is missing", self.label, desc.digest))
            })
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader> {
        let path = self
            .blob_entries
            .get(&desc.digest)
            .cloned()
            .unwrap_or_else(|| blob_path(&desc.digest));
        match self.tar.open(&path)? {
            Some((r, _)) => Ok(Box::new(r)),
            None => Err(Error::NotFound(format!(
                "{}: blob {} is missing",
                self.label, desc.digest
            ))),
        }
    }
}
