//! The copy of one source image of a sync plan to its targets: one target
//! through the engine as `copy` does; several (a fan-out entry) through
//! one [`FanOut`] sink, so each source blob is read once.

use std::sync::Arc;

use super::{Config, Item, SyncOptions, TargetRef, settings_for};
use crate::engine::progress::{Notice, Progress};
use crate::engine::{CopyOptions, CopyReport, ImagePlan, ImageResult};
use crate::error::{Error, Result};
use crate::store::fanout::{self, FanOut};
use crate::store::layout::Selector;
use crate::store::location::Location;
use crate::store::open::{DestinationOptions, DockerFormat, Placement, open_destination};
use crate::store::registry::ClientPool;
use crate::store::registry::{MountIndex, RegistrySink, RegistrySource};
use crate::store::{ImageSource, SourceImage};

/// What every copy of a run shares: the config, the options, one client
/// per registry, and one record of which repository holds which blob.
pub(super) struct Copier<'a> {
    pub config: &'a Config,
    pub opts: &'a SyncOptions,
    pub pool: &'a ClientPool,
    pub mounts: Arc<MountIndex>,
}

impl Copier<'_> {
    /// Copies a group (one source image, an item per target); one result per
    /// item, in order.
    pub(super) fn group(&self, items: &[Item], progress: &dyn Progress) -> Vec<Result<CopyReport>> {
        let Some(first) = items.first() else {
            return Vec::new();
        };
        let opened = self.open_source(first, progress);
        let (source, image) = match opened {
            Ok(o) => o,
            Err(e) => return items.iter().map(|_| Err(e.duplicate())).collect(),
        };
        let mut results: Vec<Option<Result<CopyReport>>> = items.iter().map(|_| None).collect();
        let mut targets = Vec::new();
        let mut written = Vec::new();
        for (k, item) in items.iter().enumerate() {
            let result = match self.retag(item, &source, &image) {
                Some(r) => Some(r),
                None => match self.placements(item, &source, &image) {
                    Ok(placed) => {
                        // One image: one placement naming it.
                        for p in placed {
                            if let Some((_, names)) = p.images.into_iter().next() {
                                let registry = match &item.target {
                                    TargetRef::Registry(r) => Some(r.domain.clone()),
                                    TargetRef::Layout { .. } => None,
                                };
                                targets.push(fanout::Target {
                                    sink: p.sink,
                                    names,
                                    registry,
                                });
                            }
                        }
                        written.push(k);
                        None
                    }
                    Err(e) => Some(Err(e)),
                },
            };
            if let Some(slot) = results.get_mut(k) {
                *slot = result;
            }
        }
        if !targets.is_empty() {
            let copy_opts = self.copy_options(first);
            // One target: straight into its sink, as `copy` does (a
            // registry sink streams recompressed layers; a fan-out spools
            // them once for all its sinks).
            let copied = match <[fanout::Target; 1]>::try_from(targets) {
                Ok([t]) => {
                    let plan = ImagePlan {
                        image: image.clone(),
                        names: t.names,
                    };
                    crate::engine::copy_and_commit(
                        &source,
                        t.sink.as_ref(),
                        &[plan],
                        &copy_opts,
                        progress,
                    )
                }
                Err(targets) => {
                    let fan = FanOut::new(targets);
                    let plan = ImagePlan {
                        image: image.clone(),
                        names: fan.image_names().to_vec(),
                    };
                    crate::engine::copy_and_commit(&source, &fan, &[plan], &copy_opts, progress)
                }
            };
            for k in written {
                if let Some(slot) = results.get_mut(k) {
                    *slot = Some(match &copied {
                        Ok(r) => Ok(r.clone()),
                        Err(e) => Err(e.duplicate()),
                    });
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::NotFound("no copy was made".into()))))
            .collect()
    }
}

impl Copier<'_> {
    /// The item's source repository, its image and what the copy needs to
    /// know of it (the tag list planning read).
    fn open_source(
        &self,
        item: &Item,
        progress: &dyn Progress,
    ) -> Result<(RegistrySource, SourceImage)> {
        let src_settings = settings_for(self.config, &item.source.domain, &self.opts.registry);
        let client = self.pool.get(&item.source.domain, &src_settings)?;
        let source = RegistrySource::open(client, item.source.clone())?;
        // The tag list planning read: referrers fallback tags and digest tags
        // are found in it without another request.
        let source = match &item.source_tags {
            Some(tags) => source.with_tags(tags.clone()),
            None => source,
        };
        let images = source.images()?;
        let image = images
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound(format!("{}: no image", item.source)))?;
        if let Some(d) = &item.source_digest
            && d != &image.root.digest
        {
            // The tag moved between planning and copying: copy what it is now.
            progress.notice(&Notice::TagMoved {
                source: &item.source.to_string(),
                planned: d,
                now: &image.root.digest,
            });
        }
        Ok((source, image))
    }

    /// The target holds this manifest already: write the tag only (unless
    /// something attached to it may need carrying: the engine does that).
    /// `None` when that does not apply.
    fn retag(
        &self,
        item: &Item,
        source: &RegistrySource,
        image: &SourceImage,
    ) -> Option<Result<CopyReport>> {
        let TargetRef::Registry(r) = &item.target else {
            return None;
        };
        let tag = r.tag.as_ref()?;
        if !item.retag || item.attached || item.source_digest.as_ref() != Some(&image.root.digest) {
            return None;
        }
        let write = || -> Result<Option<CopyReport>> {
            let s = settings_for(self.config, &r.domain, &self.opts.registry);
            let client = self.pool.get(&r.domain, &s)?;
            let sink = RegistrySink::new(client, r.path.clone(), self.mounts.clone());
            let bytes = source.read_manifest(&image.root)?;
            let m = crate::content::RawManifest {
                bytes,
                media_type: image.root.media_type.clone(),
                digest: image.root.digest.clone(),
            };
            if m.digest != crate::content::Digest::sha256_of(&m.bytes) {
                return Ok(None);
            }
            sink.retag(&m, tag)?;
            let mut report = CopyReport::default();
            report.images.push(ImageResult {
                label: item.source.to_string(),
                source_digest: image.root.digest.clone(),
                digest: image.root.digest.clone(),
                media_type: image.root.media_type.clone(),
                names: vec![r.to_string()],
                up_to_date: false,
                blobs: Vec::new(),
            });
            Ok(Some(report))
        };
        write().transpose()
    }

    /// The copy's options for an item: its entry's platforms and referrers.
    fn copy_options(&self, item: &Item) -> CopyOptions {
        let mut copy_opts = self.opts.copy.clone();
        copy_opts.platforms = item.platforms.clone();
        if let Some(entry) = self.config.entries.iter().find(|e| e.index == item.entry) {
            copy_opts.referrers = entry.referrers.clone();
        }
        copy_opts
    }

    /// The item's target opened by the one factory, for its image.
    fn placements(
        &self,
        item: &Item,
        source: &RegistrySource,
        image: &SourceImage,
    ) -> Result<Vec<Placement>> {
        let (dest, registry) = match &item.target {
            TargetRef::Registry(r) => (
                Location::Registry(r.clone()),
                settings_for(self.config, &r.domain, &self.opts.registry),
            ),
            TargetRef::Layout { path, name } => (
                Location::Oci {
                    path: path.display().to_string(),
                    selector: Some(Selector::Name(name.clone())),
                },
                self.opts.registry.clone(),
            ),
        };
        let dest_opts = DestinationOptions {
            docker_format: DockerFormat::Oci,
            platform: None,
            registry: &registry,
            source_is_registry: true,
            mounts: self.mounts.clone(),
        };
        open_destination(
            &dest,
            vec![image.clone()],
            &source.describe(),
            &dest_opts,
            self.pool,
        )
    }
}
