//! Committing a bundle: what it says about itself, written once every blob
//! is in (the OCI `index.json` of every image, docker's `manifest.json` and
//! `repositories` for the images it carries whole, the bundle manifest and
//! each volume's listing), then its volumes published under their names.
//! Blobs, written as they arrive, are [`super::write`]'s part.

use std::sync::Arc;

use serde_json::json;

use super::manifest::{
    BUNDLE_FILE, BundleImage, BundleManifest, BundleRef, FORMAT_VERSION, VOLUME_FILE,
    VolumeListing, VolumeRef, volume_path,
};
use super::write::{BundleSink, file_name};
use crate::content::media_type::OCI_INDEX;
use crate::content::{Descriptor, Digest};
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
        let entries = merge_index_entries(Vec::new(), &index_images);
        let doc = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        meta.push(("oci-layout".into(), OCI_LAYOUT_CONTENT.to_vec()));
        meta.push(("index.json".into(), index_bytes(&doc)));
        if !split {
            // docker load reads the images this bundle carries whole.
            let carried = |d: &Digest| blobs.contains_key(d);
            let (mj, repos) = docker_metadata(
                &images,
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
        for (root, names) in &images {
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
