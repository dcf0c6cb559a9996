//! Planning (sequential, small): read and verify every manifest, index and
//! config; select platforms; decide per layer whether it is copied as is or
//! transcoded; collect one job per distinct blob of the whole run.

use std::collections::HashMap;
use std::sync::Arc;

use super::CopyOptions;
use crate::content::config::ConfigView;
use crate::content::manifest::is_manifest_media_type;
use crate::content::media_type::{self, Compression};
use crate::content::{
    Descriptor, Digest, MAX_GRAPH_NODES, MAX_MANIFEST_BYTES, ManifestKind, ManifestView, Platform,
};
use crate::engine::progress::BlobOutcome;
use crate::error::{Error, Result};
use crate::store::{ImageSink, ImageSource, SourceImage};

pub(super) type JobId = usize;
pub(super) type JobResult = Result<(JobOutput, BlobOutcome)>;

pub(super) struct Job {
    pub(super) src: Descriptor,
    /// Expected DiffID of a layer (from the config).
    pub(super) diff_id: Option<Digest>,
    /// Compression of the source layer, when it is a known layer type.
    pub(super) compression: Option<Compression>,
    /// Recompress to this.
    pub(super) transcode: Option<Compression>,
    /// Bytes already in memory (configs).
    pub(super) inline: Option<Arc<Vec<u8>>>,
    /// A foreign layer: its bytes may be absent.
    pub(super) foreign: bool,
    pub(super) what: String,
}

#[derive(Debug, Clone)]
pub(super) struct JobOutput {
    pub(super) desc: Descriptor,
}

pub(super) enum Node {
    Index {
        src: Descriptor,
        raw: Vec<u8>,
        kind: ManifestKind,
        /// (position in the original list, child); a manifest listed
        /// several times in the image is one shared node.
        children: Vec<(usize, Arc<Node>)>,
        filtered: bool,
    },
    Manifest {
        src: Descriptor,
        raw: Vec<u8>,
        kind: ManifestKind,
        /// A container image (not an artifact): media types may be converted.
        image: bool,
        subject: Option<Digest>,
        config: Option<JobId>,
        layers: Vec<JobId>,
    },
    /// Anything else an index lists: copied as an opaque blob.
    Blob { job: JobId },
}

/// Deepest nesting of indexes below a root.
const MAX_DEPTH: usize = 8;

/// What one image's walk has seen: each distinct manifest below the root is
/// planned once (with the height of its subtree, so that the depth limit
/// holds wherever it is listed again), and every descriptor is counted.
#[derive(Default)]
struct Walk {
    planned: HashMap<Digest, (Arc<Node>, usize)>,
    descriptors: usize,
}

impl Walk {
    fn count(&mut self, n: usize, label: &str) -> Result<()> {
        self.descriptors += n;
        if self.descriptors > MAX_GRAPH_NODES {
            return Err(Error::Format(format!(
                "{label}: the image lists more than {MAX_GRAPH_NODES} manifests and blobs \
                 (indexes repeating their children?)"
            )));
        }
        Ok(())
    }
}

pub(super) struct Planner<'a> {
    pub(super) source: &'a dyn ImageSource,
    pub(super) sink: &'a dyn ImageSink,
    pub(super) opts: &'a CopyOptions,
    pub(super) jobs: Vec<Job>,
    pub(super) by_key: HashMap<(Digest, Option<Compression>), JobId>,
    pub(super) manifests_read: HashMap<Digest, Vec<u8>>,
    /// The image being planned was built by its source (no digest to keep).
    pub(super) synthesized: bool,
}

impl<'a> Planner<'a> {
    fn fetch(&mut self, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
        if let Some(b) = self.manifests_read.get(&desc.digest) {
            // The same bytes can be described wrongly by another descriptor.
            verify_bytes(b, desc, what)?;
            return Ok(b.clone());
        }
        if desc.size > MAX_MANIFEST_BYTES {
            return Err(Error::Format(format!(
                "{what}: {} is {} bytes, over the {MAX_MANIFEST_BYTES}-byte manifest limit",
                desc.digest, desc.size
            )));
        }
        let bytes = self.source.read_manifest(desc)?;
        verify_bytes(&bytes, desc, what)?;
        self.manifests_read
            .insert(desc.digest.clone(), bytes.clone());
        Ok(bytes)
    }

    fn job(&mut self, job: Job) -> Result<JobId> {
        let key = (job.src.digest.clone(), job.transcode);
        if let Some(&id) = self.by_key.get(&key)
            && let Some(first) = self.jobs.get_mut(id)
        {
            // The same blob described again: every description must agree.
            if first.src.size != job.src.size {
                return Err(Error::Integrity(format!(
                    "{}: descriptor says {} bytes, but {} says {}",
                    job.what, job.src.size, first.what, first.src.size
                )));
            }
            if let (Some(a), Some(b)) = (&first.diff_id, &job.diff_id)
                && a != b
            {
                return Err(Error::Integrity(format!(
                    "{}: its config gives DiffID {b}, but {} gives {a}",
                    job.what, first.what
                )));
            }
            if first.diff_id.is_none() && job.diff_id.is_some() {
                first.diff_id = job.diff_id;
            }
            return Ok(id);
        }
        let id = self.jobs.len();
        self.jobs.push(job);
        self.by_key.insert(key, id);
        Ok(id)
    }

    pub(super) fn plan_image(&mut self, image: &SourceImage) -> Result<Arc<Node>> {
        self.synthesized = image.synthesized;
        let label = image.label();
        let platforms: Vec<Platform> =
            if self.opts.platforms.is_empty() && self.sink.caps().single_platform {
                vec![Platform::host()]
            } else {
                self.opts.platforms.clone()
            };
        let mut walk = Walk::default();
        self.plan_node(&image.root, &label, &platforms, 0, true, &mut walk)
            .map(|(node, _)| node)
    }

    /// Plans the graph below `desc`; returns the node and the height of its
    /// subtree (0 for a manifest).
    fn plan_node(
        &mut self,
        desc: &Descriptor,
        label: &str,
        platforms: &[Platform],
        depth: usize,
        root: bool,
        walk: &mut Walk,
    ) -> Result<(Arc<Node>, usize)> {
        let too_deep = || {
            Error::Format(format!(
                "{label}: indexes nested more than {MAX_DEPTH} deep (a loop?)"
            ))
        };
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        // Below the root, a manifest plans the same wherever it is listed.
        if !root && let Some((node, height)) = walk.planned.get(&desc.digest) {
            let (node, height) = (node.clone(), *height);
            if depth + height > MAX_DEPTH {
                return Err(too_deep());
            }
            // This descriptor must describe those bytes too.
            self.fetch(desc, label)?;
            return Ok((node, height));
        }
        let (node, height) = self.plan_new_node(desc, label, platforms, depth, root, walk)?;
        if !root {
            walk.planned
                .insert(desc.digest.clone(), (node.clone(), height));
        }
        Ok((node, height))
    }

    fn plan_new_node(
        &mut self,
        desc: &Descriptor,
        label: &str,
        platforms: &[Platform],
        depth: usize,
        root: bool,
        walk: &mut Walk,
    ) -> Result<(Arc<Node>, usize)> {
        let raw = self.fetch(desc, label)?;
        let view = ManifestView::parse(&raw, Some(&desc.media_type))
            .map_err(|e| Error::Format(format!("{label}: manifest {}: {e}", desc.digest)))?;
        let mut src = desc.clone();
        src.media_type = view
            .media_type
            .clone()
            .unwrap_or_else(|| view.kind.media_type().to_string());
        if view.kind == ManifestKind::Schema1 {
            return Err(Error::Unsupported(format!(
                "{label}: {} is a Docker schema 1 manifest, which imgsync does not copy",
                desc.digest
            )));
        }
        if !view.kind.is_index() {
            walk.count(view.layers.len() + 1, label)?;
            let node = self.plan_manifest(src, raw, view, label, root)?;
            return Ok((Arc::new(node), 0));
        }
        walk.count(view.manifests.len(), label)?;
        // An index: keep every child, or the ones for the wanted platforms.
        let single = root && platforms.len() == 1;
        let mut children = Vec::new();
        let mut filtered = false;
        let mut height = 0;
        for (i, child) in view.manifests.iter().enumerate() {
            // An entry without a media type is a manifest if its bytes
            // read as one (media types were optional before OCI 1.0.2).
            let is_manifest = is_manifest_media_type(&child.media_type)
                || (child.media_type.is_empty()
                    && child.size <= MAX_MANIFEST_BYTES
                    && ManifestView::parse(&self.fetch(child, label)?, None).is_ok());
            if !platforms.is_empty() {
                let keep = match &child.platform {
                    Some(p) => !p.is_unknown() && platforms.iter().any(|w| p.matches(w)),
                    // Nested indexes without a platform are searched.
                    None => ManifestKind::from_media_type(&child.media_type)
                        .is_some_and(ManifestKind::is_index),
                };
                if !keep {
                    filtered = true;
                    continue;
                }
            }
            if !is_manifest {
                if single {
                    continue;
                }
                let job = self.job(Job {
                    src: child.clone(),
                    diff_id: None,
                    compression: None,
                    transcode: None,
                    inline: None,
                    foreign: false,
                    what: format!("{label}: index entry {}", child.digest),
                })?;
                children.push((i, Arc::new(Node::Blob { job })));
                continue;
            }
            let (node, h) = self.plan_node(child, label, platforms, depth + 1, false, walk)?;
            height = height.max(h + 1);
            if matches!(&*node, Node::Index { children, .. } if children.is_empty()) {
                filtered = true;
                continue;
            }
            if single {
                return Ok((first_manifest(&node), height));
            }
            children.push((i, node));
        }
        if root && !platforms.is_empty() && children.is_empty() {
            let available: Vec<String> = view
                .manifests
                .iter()
                .filter_map(|c| c.platform.as_ref())
                .filter(|p| !p.is_unknown())
                .map(|p| p.to_string())
                .collect();
            return Err(Error::NotFound(format!(
                "{label}: no manifest for platform {} (available: {})",
                platforms
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                }
            )));
        }
        Ok((
            Arc::new(Node::Index {
                src,
                raw,
                kind: view.kind,
                children,
                filtered,
            }),
            height,
        ))
    }

    fn plan_manifest(
        &mut self,
        src: Descriptor,
        raw: Vec<u8>,
        view: ManifestView,
        label: &str,
        root: bool,
    ) -> Result<Node> {
        let caps = self.sink.caps();
        let mut diff_ids: Option<Vec<Digest>> = None;
        let config = match &view.config {
            Some(c) => {
                let inline =
                    if media_type::is_image_config(&c.media_type) || c.size <= MAX_MANIFEST_BYTES {
                        let bytes = self.fetch(c, label)?;
                        // Attestation manifests carry `{}` as an image config
                        // and in-toto layers: no DiffIDs to check against.
                        let image_layers = view
                            .layers
                            .iter()
                            .any(|l| media_type::layer_type(&l.media_type).is_some());
                        if media_type::is_image_config(&c.media_type) && image_layers {
                            let cfg = ConfigView::parse(&bytes).map_err(|e| {
                                Error::Format(format!("{label}: config {}: {e}", c.digest))
                            })?;
                            let wanted = &self.opts.platforms;
                            if root
                                && !wanted.is_empty()
                                && !cfg.platform.os.is_empty()
                                && !wanted.iter().any(|w| cfg.platform.matches(w))
                            {
                                return Err(Error::NotFound(format!(
                                    "{label}: the image is for {}, not {}",
                                    cfg.platform,
                                    wanted
                                        .iter()
                                        .map(|p| p.to_string())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )));
                            }
                            diff_ids = Some(cfg.diff_ids);
                        }
                        Some(Arc::new(bytes))
                    } else {
                        None
                    };
                Some(self.job(Job {
                    src: c.clone(),
                    diff_id: None,
                    compression: None,
                    transcode: None,
                    inline,
                    foreign: false,
                    what: format!("{label}: config {}", c.digest),
                })?)
            }
            None => None,
        };
        if caps.images_only && root && !view.is_image() {
            return Err(Error::Unsupported(format!(
                "{label}: {} is not a container image (artifact); this destination holds images only",
                src.digest
            )));
        }
        if let Some(ids) = &diff_ids
            && ids.len() != view.layers.len()
        {
            return Err(Error::Format(format!(
                "{label}: manifest {} has {} layers but its config lists {} diff_ids",
                src.digest,
                view.layers.len(),
                ids.len()
            )));
        }
        let is_image = view.is_image();
        let mut layers = Vec::new();
        for (i, layer) in view.layers.iter().enumerate() {
            let lt = media_type::layer_type(&layer.media_type);
            // Checked above: as many DiffIDs as layers.
            let diff_id = diff_ids.as_ref().and_then(|ids| ids.get(i).cloned());
            let current = lt.map(|t| t.compression);
            // Artifacts (attestations, charts) are copied as they are.
            let wanted = match (current, lt.is_some_and(|t| t.foreign)) {
                _ if !is_image => None,
                // Foreign layers keep their bytes, unless the sink needs
                // plain tars.
                (Some(c), true) => {
                    (caps.wants_uncompressed && c != Compression::None).then_some(Compression::None)
                }
                (None, true) => None,
                (Some(c), false) => {
                    let target = self.opts.compress.or(if caps.wants_uncompressed {
                        Some(Compression::None)
                    } else if (!caps.accepts_zstd && c == Compression::Zstd)
                        || (caps.compress_layers && self.synthesized && c == Compression::None)
                    {
                        Some(Compression::Gzip)
                    } else {
                        None
                    });
                    target.filter(|t| *t != c)
                }
                (None, false) => {
                    if self.opts.compress.is_some() || caps.wants_uncompressed {
                        return Err(Error::Unsupported(format!(
                            "{label}: cannot recompress layer {} of media type {:?}",
                            layer.digest, layer.media_type
                        )));
                    }
                    None
                }
            };
            if current == Some(Compression::None)
                && let Some(d) = &diff_id
                && d != &layer.digest
            {
                return Err(Error::Integrity(format!(
                    "{label}: uncompressed layer {} does not match its DiffID {d}",
                    layer.digest
                )));
            }
            layers.push(self.job(Job {
                src: layer.clone(),
                diff_id: if lt.is_some() { diff_id } else { None },
                compression: current,
                transcode: wanted,
                inline: None,
                foreign: lt.is_some_and(|t| t.foreign),
                what: format!("{label}: layer {} ({})", i + 1, layer.digest),
            })?);
        }
        Ok(Node::Manifest {
            src,
            raw,
            kind: view.kind,
            image: view.is_image(),
            subject: view.subject.as_ref().map(|d| d.digest.clone()),
            config,
            layers,
        })
    }
}

/// The config digest of a root that is a single image manifest.
pub(super) fn single_manifest_config(
    source: &dyn ImageSource,
    root: &Descriptor,
) -> Option<Digest> {
    let bytes = source.read_manifest(root).ok()?;
    if verify_bytes(&bytes, root, "").is_err() {
        return None;
    }
    let view = ManifestView::parse(&bytes, Some(&root.media_type)).ok()?;
    view.is_image()
        .then(|| view.config.map(|c| c.digest))
        .flatten()
}

/// The first manifest below `node` (a root planned for one platform is
/// that platform's manifest, not an index of one entry).
fn first_manifest(node: &Arc<Node>) -> Arc<Node> {
    match &**node {
        Node::Index { children, .. } => match children.first() {
            Some((_, first)) => first_manifest(first),
            None => node.clone(),
        },
        _ => node.clone(),
    }
}

fn verify_bytes(bytes: &[u8], desc: &Descriptor, what: &str) -> Result<()> {
    if bytes.len() as u64 != desc.size {
        return Err(Error::Integrity(format!(
            "{what}: {} has {} bytes but its descriptor says {}",
            desc.digest,
            bytes.len(),
            desc.size
        )));
    }
    let mut h = desc.digest.hasher()?;
    h.update(bytes);
    let got = h.finish();
    if got != desc.digest {
        return Err(Error::Integrity(format!(
            "{what}: content of {} hashes to {got}",
            desc.digest
        )));
    }
    Ok(())
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
