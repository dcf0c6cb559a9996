//! Committing a bundle: what it says about itself, written once every blob
//! is in (the OCI `index.json` of every image, docker's `manifest.json` and
//! `repositories` for the images it carries whole, the bundle manifest and
//! each volume's listing), then its volumes published under their names.
//! Blobs, written as they arrive, are [`super::write`]'s part.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;

use super::manifest::{
    BUNDLE_FILE, BundleImage, BundleManifest, BundleRef, BundleReferrer, FORMAT_VERSION,
    VOLUME_FILE, VolumeListing, VolumeRef, volume_path,
};
use super::write::{BundleSink, file_name};
use crate::content::media_type::{OCI_INDEX, is_image_config};
use crate::content::referrers::referrer_descriptor;
use crate::content::{Descriptor, Digest, ManifestView, Reference};
use crate::error::Result;
use crate::store::ImageName;
use crate::store::atomic_file::{publish, sync_dir};
use crate::store::cleanup::unregister_cleanup;
use crate::store::layout::{OCI_LAYOUT_CONTENT, index_bytes, merge_index_entries};
use crate::store::tar::out::{BLOCK, padded};
use crate::store::tar::writer::docker_metadata;

impl BundleSink {
    pub(super) fn finish(&self) -> Result<BundleManifest> {
        // Images in a stable order (they arrive as their copies end).
        let mut images = self
            .images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        images.sort_by_key(|(d, names)| {
            let first = names.first().map(ImageName::to_string);
            (first, d.digest.to_string())
        });
        let attached = self.attached_listing();
        // A referrer has no name of its own: it is listed with its subject.
        let referrer_digests: HashSet<&Digest> = attached
            .iter()
            .filter(|r| r.tag.is_none())
            .map(|r| &r.digest)
            .collect();
        images.retain(|(d, names)| !(names.is_empty() && referrer_digests.contains(&d.digest)));
        let blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let split = self.opts.split.is_some();
        let mut meta: Vec<(String, Vec<u8>)> = Vec::new();
        // The index names each image by its full reference, so any OCI
        // tool reading the bundle sees where it came from.
        let index_images: Vec<(Descriptor, Vec<ImageName>)> = images
            .iter()
            .map(|(d, names)| {
                let names = names
                    .iter()
                    .map(|n| ImageName::RefName(n.to_string()))
                    .collect();
                (d.clone(), names)
            })
            .collect();
        let per_image: Vec<Vec<BundleReferrer>> = images
            .iter()
            .map(|(root, _)| self.attached_to(root, &attached))
            .collect();
        let entries = merge_index_entries(
            Vec::new(),
            &attached_index_entries(index_images, &images, &per_image),
        );
        let doc = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        meta.push(("oci-layout".into(), OCI_LAYOUT_CONTENT.to_vec()));
        meta.push(("index.json".into(), index_bytes(&doc)));
        if !split {
            // docker load reads the images this bundle carries whole.
            let carried = |d: &Digest| blobs.contains_key(d);
            // Artifacts (a Helm chart) are no images docker could load.
            let docker_images = self.container_images(&images);
            let (mj, repos) = docker_metadata(
                &docker_images,
                &self.manifests.lock().unwrap_or_else(|e| e.into_inner()),
                &self.configs.lock().unwrap_or_else(|e| e.into_inner()),
                self.opts.docker_platform.as_ref(),
                &self.label,
                false,
                Some(&carried),
            )?;
            meta.push(("manifest.json".into(), mj));
            if let Some(r) = repos {
                meta.push(("repositories".into(), r));
            }
        }
        let mut since = Vec::new();
        if let Some((m, file)) = &self.opts.since {
            since.push(BundleRef {
                id: m.id.clone(),
                file: file.clone(),
                created: m.created.clone(),
            });
            since.extend(m.since.iter().cloned());
        }
        let mut bundle_images = Vec::new();
        for ((root, names), referrers) in images.iter().zip(&per_image) {
            let refs: Vec<String> = names.iter().map(ImageName::to_string).collect();
            let refs = if refs.is_empty() {
                vec![String::new()]
            } else {
                refs
            };
            for reference in refs {
                bundle_images.push(BundleImage {
                    reference,
                    digest: root.digest.clone(),
                    media_type: root.media_type.clone(),
                    size: root.size,
                    referrers: referrers.clone(),
                });
            }
        }
        let meta_size: u64 = meta
            .iter()
            .map(|(_, b)| BLOCK + padded(b.len() as u64))
            .sum();
        let mut manifest = BundleManifest {
            version: FORMAT_VERSION,
            id: self.id.clone(),
            created: self.created.clone(),
            since,
            images: bundle_images,
            blobs: blobs.into_values().collect(),
            required: self
                .required
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect(),
            volumes: Vec::new(),
            checksum: String::new(),
        };
        // The metadata goes into the last volume if it fits, else into one
        // of its own. Its size is estimated with room for the manifest.
        let mut volumes = self.volumes.lock().unwrap_or_else(|e| e.into_inner());
        let estimate = meta_size + 2 * BLOCK + padded(manifest.to_bytes().len() as u64 + 4096);
        let fits = match volumes.last() {
            Some(v) => {
                v.lock().unwrap_or_else(|e| e.into_inner()).used + estimate
                    <= self.opts.split.unwrap_or(u64::MAX)
            }
            None => false,
        };
        let last = match volumes.last() {
            Some(v) if fits => v.clone(),
            _ => self.new_volume(&mut volumes)?,
        };
        for v in volumes.iter() {
            let v = v.lock().unwrap_or_else(|e| e.into_inner());
            let file = if split {
                file_name(&volume_path(&self.out, v.number))
            } else {
                file_name(&self.out)
            };
            let checksum = if split {
                let mut listing = VolumeListing {
                    version: FORMAT_VERSION,
                    bundle: self.id.clone(),
                    number: v.number,
                    entries: v.entries.clone(),
                    checksum: String::new(),
                };
                listing.seal();
                v.out.entry_bytes(VOLUME_FILE, &listing.to_bytes())?;
                listing.checksum
            } else {
                String::new()
            };
            manifest.volumes.push(VolumeRef {
                number: v.number,
                file,
                checksum,
            });
        }
        manifest.seal();
        let last = last.lock().unwrap_or_else(|e| e.into_inner());
        for (name, bytes) in &meta {
            last.out.entry_bytes(name, bytes)?;
        }
        last.out.entry_bytes(BUNDLE_FILE, &manifest.to_bytes())?;
        drop(last);
        for v in volumes.iter() {
            v.lock().unwrap_or_else(|e| e.into_inner()).out.finish()?;
        }
        Ok(manifest)
    }

    pub(super) fn persist(&self) -> Result<()> {
        let volumes = std::mem::take(&mut *self.volumes.lock().unwrap_or_else(|e| e.into_inner()));
        let split = self.opts.split.is_some();
        let count = volumes.len() as u32;
        for v in volumes {
            #[allow(
                clippy::expect_used,
                reason = "commit runs after every blob writer has returned its volume handle"
            )]
            let v = Arc::try_unwrap(v)
                .ok()
                .expect("no writer is left at commit")
                .into_inner()
                .unwrap_or_else(|e| e.into_inner());
            let dest = if split {
                volume_path(&self.out, v.number)
            } else {
                self.out.clone()
            };
            let tmp_path = v.tmp.path().to_path_buf();
            publish(v.tmp, &dest)?;
            unregister_cleanup(&tmp_path);
        }
        // One directory sync makes every volume's name durable.
        sync_dir(&self.dir())?;
        if split {
            // Volumes of an earlier bundle written to the same name would be
            // taken for part of this one.
            let mut n = count + 1;
            while volume_path(&self.out, n).exists() {
                let _ = std::fs::remove_file(volume_path(&self.out, n));
                n += 1;
            }
        }
        Ok(())
    }
}

impl BundleSink {
    /// What arrived attached to the images, once each, in a stable order,
    /// with the artifact type its manifest gives.
    fn attached_listing(&self) -> Vec<BundleReferrer> {
        let attached = self
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let manifests = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<BundleReferrer> = attached
            .into_iter()
            .map(|(desc, subject, tag)| {
                let desc = match manifests.get(&desc.digest) {
                    Some(m) => referrer_descriptor(&desc, &m.bytes),
                    None => desc,
                };
                BundleReferrer {
                    subject,
                    digest: desc.digest,
                    media_type: desc.media_type,
                    size: desc.size,
                    artifact_type: desc.artifact_type,
                    tag,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.subject, &a.digest, &a.tag).cmp(&(&b.subject, &b.digest, &b.tag)));
        out.dedup_by(|a, b| a.subject == b.subject && a.digest == b.digest && a.tag == b.tag);
        out
    }

    /// The manifests of an image: its root and, for an index, every
    /// manifest it lists (nested indexes too).
    fn manifests_of(&self, root: &Descriptor) -> HashSet<Digest> {
        let manifests = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = HashSet::new();
        let mut todo = vec![root.digest.clone()];
        while let Some(d) = todo.pop() {
            if !out.insert(d.clone()) {
                continue;
            }
            if let Some(m) = manifests.get(&d)
                && let Ok(view) = ManifestView::parse(&m.bytes, Some(&m.media_type))
            {
                todo.extend(view.manifests.into_iter().map(|c| c.digest));
            }
        }
        out
    }

    /// What is attached to an image: to its manifests, and to what is
    /// attached to them, round after round.
    fn attached_to(&self, root: &Descriptor, attached: &[BundleReferrer]) -> Vec<BundleReferrer> {
        let mut members = self.manifests_of(root);
        let mut taken = vec![false; attached.len()];
        loop {
            let mut grew = false;
            for (r, taken) in attached.iter().zip(taken.iter_mut()) {
                if !*taken && members.contains(&r.subject) {
                    *taken = true;
                    grew = true;
                    members.insert(r.digest.clone());
                }
            }
            if !grew {
                break;
            }
        }
        attached
            .iter()
            .zip(taken)
            .filter(|(_, t)| *t)
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// The images `docker load` can take: those whose manifest has an
    /// image config (an index picks its platform later).
    fn container_images(
        &self,
        images: &[(Descriptor, Vec<ImageName>)],
    ) -> Vec<(Descriptor, Vec<ImageName>)> {
        let manifests = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        images
            .iter()
            .filter(|(root, _)| {
                manifests
                    .get(&root.digest)
                    .and_then(|m| ManifestView::parse(&m.bytes, Some(&m.media_type)).ok())
                    .is_none_or(|v| {
                        v.kind.is_index()
                            || v.config.is_some_and(|c| is_image_config(&c.media_type))
                    })
            })
            .cloned()
            .collect()
    }
}

/// The `index.json` entries of the images, then of what is attached to
/// them: a referrer as an entry without a name (found again by its
/// `subject`, as OCI tools store them), a digest-tagged manifest under its
/// tag in the repository of each name of its image (`<repo>:sha256-<hex>.sig`).
/// `docker load` reads `manifest.json`, which lists only the images.
fn attached_index_entries(
    mut entries: Vec<(Descriptor, Vec<ImageName>)>,
    images: &[(Descriptor, Vec<ImageName>)],
    per_image: &[Vec<BundleReferrer>],
) -> Vec<(Descriptor, Vec<ImageName>)> {
    let mut unnamed: HashSet<Digest> = HashSet::new();
    for ((_, names), attached) in images.iter().zip(per_image) {
        for r in attached {
            let Some(tag) = &r.tag else {
                if unnamed.insert(r.digest.clone()) {
                    entries.push((r.descriptor(), Vec::new()));
                }
                continue;
            };
            let mut tag_names: Vec<ImageName> = names
                .iter()
                .map(|n| match n.reference() {
                    Some(reference) => ImageName::RefName(
                        Reference {
                            tag: Some(tag.clone()),
                            digest: None,
                            ..reference
                        }
                        .to_string(),
                    ),
                    None => ImageName::RefName(tag.clone()),
                })
                .collect();
            if tag_names.is_empty() {
                tag_names.push(ImageName::RefName(tag.clone()));
            }
            tag_names.dedup();
            entries.push((r.descriptor(), tag_names));
        }
    }
    entries
}
