//! Emitting (sequential): write manifests children first, rewritten only
//! where a conversion changed a child; the caller then names the images.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::Conversion;
use super::convert::{self, Format};
use super::plan::{Job, JobId, JobOutput, Node};
use crate::content::media_type::{self};
use crate::content::{Descriptor, Digest, ManifestKind, RawManifest};
use crate::engine::progress::Progress;
use crate::error::{Error, Result};
use crate::store::ImageSink;

pub(super) struct Emitter<'a> {
    pub(super) sink: &'a dyn ImageSink,
    pub(super) jobs: &'a [Job],
    pub(super) outputs: &'a [Option<JobOutput>],
    pub(super) format: Option<Format>,
    pub(super) progress: &'a dyn Progress,
    pub(super) conversions: Vec<Conversion>,
    /// Manifests this run rewrote: old digest → new descriptor, so that
    /// references to them (subjects, attestation annotations) follow.
    pub(super) renamed: HashMap<Digest, Descriptor>,
    /// What each planned node became, by the node's address: a manifest
    /// an image lists many times is one shared node, written once.
    pub(super) emitted: HashMap<*const Node, Descriptor>,
}

impl Emitter<'_> {
    /// Did every blob of this image arrive?
    pub(super) fn complete(&self, node: &Node) -> bool {
        self.complete_once(node, &mut HashSet::new())
    }

    /// `complete`, looking at each shared node once.
    fn complete_once(&self, node: &Node, seen: &mut HashSet<*const Node>) -> bool {
        match node {
            Node::Blob { job } => self.arrived(*job),
            Node::Manifest { config, layers, .. } => {
                config.iter().chain(layers).all(|id| self.arrived(*id))
            }
            Node::Index { children, .. } => children
                .iter()
                .all(|(_, c)| !seen.insert(Arc::as_ptr(c)) || self.complete_once(c, seen)),
        }
    }

    /// The digests of the blobs a node stands on at the sink (configs and
    /// layers, as written), each once.
    pub(super) fn blobs(&self, node: &Node) -> Vec<Digest> {
        let mut out = Vec::new();
        self.blobs_once(node, &mut HashSet::new(), &mut out);
        out
    }

    fn blobs_once(&self, node: &Node, seen: &mut HashSet<*const Node>, out: &mut Vec<Digest>) {
        let mut add = |id: JobId| {
            if let Some(Some(o)) = self.outputs.get(id)
                && !out.contains(&o.desc.digest)
            {
                out.push(o.desc.digest.clone());
            }
        };
        match node {
            Node::Blob { job } => add(*job),
            Node::Manifest { config, layers, .. } => {
                config.iter().chain(layers).for_each(|id| add(*id));
            }
            Node::Index { children, .. } => {
                for (_, c) in children {
                    if seen.insert(Arc::as_ptr(c)) {
                        self.blobs_once(c, seen, out);
                    }
                }
            }
        }
    }

    fn arrived(&self, id: JobId) -> bool {
        self.outputs.get(id).is_some_and(Option::is_some)
    }

    #[allow(
        clippy::indexing_slicing,
        reason = "job ids come from the planner that built `jobs`"
    )]
    fn job(&self, id: JobId) -> &Job {
        &self.jobs[id]
    }

    fn output(&self, id: JobId) -> Result<&JobOutput> {
        self.outputs
            .get(id)
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                let job = self.job(id);
                Error::Integrity(format!(
                    "{}: blob {} was not copied",
                    job.what, job.src.digest
                ))
            })
    }

    pub(super) fn emit(&mut self, node: &Node, label: &str) -> Result<Descriptor> {
        match node {
            Node::Blob { job } => Ok(self.output(*job)?.desc.clone()),
            Node::Manifest {
                src,
                raw,
                kind,
                image,
                subject,
                config,
                layers,
            } => {
                let _ = config.map(|c| self.output(c)).transpose()?;
                // The planner refuses schema 1, the one kind without a format.
                let own = Format::of(*kind).ok_or_else(|| {
                    Error::Unsupported(format!(
                        "{label}: {} is a Docker schema 1 manifest, which imgsync does not copy",
                        src.digest
                    ))
                })?;
                // Artifacts keep their media types: only images convert.
                let format = if *image {
                    self.format.unwrap_or(own)
                } else {
                    own
                };
                let mut new_layers = Vec::new();
                let mut changed = own != format;
                let new_subject = subject.as_ref().and_then(|d| self.renamed.get(d)).cloned();
                changed |= new_subject.is_some();
                for &id in layers {
                    let out = self.output(id)?;
                    let mut desc = out.desc.clone();
                    let transcoded = desc.digest != self.job(id).src.digest;
                    changed |= transcoded;
                    if format != own && media_type::layer_type(&desc.media_type).is_some() {
                        let mt = convert::layer_media_type_for(&desc, format)?;
                        changed |= mt != desc.media_type;
                        desc.media_type = mt;
                    }
                    new_layers.push((desc, transcoded));
                }
                if !changed {
                    self.sink.put_manifest(&RawManifest {
                        bytes: raw.clone(),
                        media_type: src.media_type.clone(),
                        digest: src.digest.clone(),
                    })?;
                    return Ok(src.clone());
                }
                let m = convert::rewrite_manifest(
                    raw,
                    *kind,
                    &new_layers,
                    format,
                    new_subject.as_ref(),
                )
                .map_err(|e| Error::Format(format!("{label}: {e}")))?;
                self.sink.put_manifest(&m)?;
                self.note(label, "manifest", &src.digest, &m.digest, format, *kind);
                let mut desc = src.clone();
                desc.media_type = m.media_type.clone();
                desc.digest = m.digest.clone();
                desc.size = m.bytes.len() as u64;
                self.renamed.insert(src.digest.clone(), desc.clone());
                Ok(desc)
            }
            Node::Index {
                src,
                raw,
                kind,
                children,
                filtered,
            } => {
                let format = self.format.or(Format::of(*kind)).ok_or_else(|| {
                    Error::Unsupported(format!(
                        "{label}: {} is a Docker schema 1 manifest, which imgsync does not copy",
                        src.digest
                    ))
                })?;
                let mut changed = *filtered || Format::of(*kind) != Some(format);
                let mut out = Vec::new();
                for (i, child) in children {
                    let d = match self.emitted.get(&Arc::as_ptr(child)) {
                        Some(d) => d.clone(),
                        None => {
                            let d = self.emit(child, label)?;
                            self.emitted.insert(Arc::as_ptr(child), d.clone());
                            d
                        }
                    };
                    let old = match &**child {
                        Node::Index { src, .. } | Node::Manifest { src, .. } => &src.digest,
                        Node::Blob { job } => &self.job(*job).src.digest,
                    };
                    changed |= &d.digest != old;
                    out.push((*i, d));
                }
                if !changed {
                    self.sink.put_manifest(&RawManifest {
                        bytes: raw.clone(),
                        media_type: src.media_type.clone(),
                        digest: src.digest.clone(),
                    })?;
                    return Ok(src.clone());
                }
                let m = convert::rewrite_index(raw, &out, format, &self.renamed)
                    .map_err(|e| Error::Format(format!("{label}: {e}")))?;
                self.sink.put_manifest(&m)?;
                let why = if *filtered {
                    "platforms selected"
                } else {
                    "children changed"
                };
                self.conversions.push(Conversion {
                    what: format!("{label}: index"),
                    old: src.digest.clone(),
                    new: m.digest.clone(),
                    why: why.into(),
                });
                self.progress
                    .converted(&format!("{label}: index"), &src.digest, &m.digest, why);
                let mut desc = src.clone();
                desc.media_type = m.media_type.clone();
                desc.digest = m.digest.clone();
                desc.size = m.bytes.len() as u64;
                self.renamed.insert(src.digest.clone(), desc.clone());
                Ok(desc)
            }
        }
    }

    fn note(
        &mut self,
        label: &str,
        what: &str,
        old: &Digest,
        new: &Digest,
        format: Format,
        kind: ManifestKind,
    ) {
        let why = if Format::of(kind) != Some(format) {
            format!(
                "converted to {} media types",
                if format == Format::Docker {
                    "Docker"
                } else {
                    "OCI"
                }
            )
        } else {
            "layers recompressed".to_string()
        };
        let what = format!("{label}: {what}");
        self.progress.converted(&what, old, new, &why);
        self.conversions.push(Conversion {
            what,
            old: old.clone(),
            new: new.clone(),
            why,
        });
    }
}
