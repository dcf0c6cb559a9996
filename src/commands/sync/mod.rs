//! `imgsync sync`: mirror sets of repositories from a config file.
//!
//! Plan: list tags (and the catalog, for prefix sources), filter, map names,
//! then drop every image whose target already has the source's manifest
//! digest, checked with `HEAD` requests in parallel. Execute: the remaining
//! copies through the copy engine, images in parallel, sharing one client
//! per registry (one token, one connection pool) and one record of which
//! repository holds which blob, so a blob shared by many images is uploaded
//! once per target registry and mounted after that. Failed images are tried
//! once more at the end; one failure never stops the others. Nor does a
//! source whose tag list or catalog cannot be read: it fails its own entry
//! (or repository) only, and a target that cannot be reached fails the
//! images bound for it only.

pub mod report;
pub mod state;

use std::sync::Arc;
use std::time::Instant;

pub use crate::commands::mirror::config::{Config, load};
pub use crate::commands::mirror::plan::{Item, TargetRef};
pub use crate::commands::mirror::{SyncOptions, settings_for, shard_of};
pub use report::{Action, ImageReport, RunReport};

use crate::engine::progress::{Notice, Progress};
use crate::error::{Error, ErrorClass, Result};
use crate::store::ImageSource;
use crate::store::layout::Selector;
use crate::store::location::Location;
use crate::store::open::{DestinationOptions, DockerFormat, open_destination};
use crate::store::registry::ClientPool;
use crate::store::registry::{MountIndex, RegistrySink, RegistrySource};

/// Plans a run: every image the config selects (this shard of it), each
/// marked up to date or to copy.
pub fn plan(config: &Config, opts: &SyncOptions, pool: &ClientPool) -> Result<Vec<Item>> {
    plan_with_state(config, opts, pool, None)
}

/// [`plan`], trusting what `memory` (the state of earlier runs) says was
/// mirrored: such an image's target is not asked (see [`state`]).
pub fn plan_with_state(
    config: &Config,
    opts: &SyncOptions,
    pool: &ClientPool,
    memory: Option<&state::State>,
) -> Result<Vec<Item>> {
    let mut items = crate::commands::mirror::plan::expand(config, opts, pool)?;
    match memory {
        Some(m) => {
            crate::commands::mirror::plan::check_knowing(config, opts, pool, &mut items, &|item| {
                state::known(config, m, item)
            })
        }
        None => crate::commands::mirror::plan::check(config, opts, pool, &mut items),
    }
    Ok(items)
}

/// The exit code of a plan that is only printed (`--dry-run`): as a run's
/// would be for the sources that could not be listed, 0 otherwise.
pub fn plan_exit_code(items: &[Item]) -> u8 {
    let failed = items.iter().filter_map(|i| i.failed.as_ref());
    report::exit_code_of(failed.map(|f| Some(f.error.class())), 0)
}

/// Runs the plan's copies and returns the report; `started` is when the
/// run began (planning included).
pub fn execute(
    config: &Config,
    items: Vec<Item>,
    opts: &SyncOptions,
    pool: &ClientPool,
    progress: &dyn Progress,
    started: Instant,
) -> RunReport {
    let mounts = Arc::new(MountIndex::default());
    // One copy of one image; a retry names the failure it follows.
    let copy = |item: &Item, earlier: Option<&Error>| -> (ImageReport, Option<Error>) {
        let t0 = Instant::now();
        let events = ImageEvents::new(progress, item.source.to_string());
        let retries = match earlier {
            Some(cause) => {
                events.notice(&Notice::Retry {
                    what: &item.source.to_string(),
                    attempt: 1,
                    cause,
                });
                1
            }
            None => 0,
        };
        let r = copy_one(config, item, opts, pool, &mounts, &events);
        let mut rep = report::image_report(item, &r, retries, t0.elapsed());
        rep.notes = events.into_notes();
        (rep, r.err())
    };
    let mut images = crate::engine::pool::run_all(&items, opts.jobs, |_, item| {
        if let Some(why) = &item.rejected {
            let bad = Err(Error::Format(why.clone()));
            (
                report::image_report(item, &bad, 0, Default::default()),
                None,
            )
        } else if let Some(failed) = &item.failed {
            (report::unlisted(item, &failed.error), None)
        } else if item.up_to_date && !item.attached {
            (report::up_to_date(item), None)
        } else {
            copy(item, None)
        }
    });
    // One more try for what failed for a reason that may pass.
    for (item, image) in items.iter().zip(images.iter_mut()) {
        // A listing that failed was retried by the client already, a
        // registry that could not be reached stays so for this run, and a
        // quota down to its reserve returns in hours, not minutes.
        let failed_transient = image.0.action == Action::Failed
            && item.is_copyable()
            && !matches!(
                image.0.error_class,
                Some(ErrorClass::Auth | ErrorClass::Usage | ErrorClass::Quota)
            )
            && !unreachable(config, item, opts, pool);
        if failed_transient {
            let cause = image.1.take();
            *image = copy(item, cause.as_ref());
        }
    }
    let images = images.into_iter().map(|(rep, _)| rep).collect();
    RunReport::new(images, started.elapsed(), pool.requests()).with_quota(pool.quotas())
}

/// Is the item's source or target a registry found unreachable this run?
/// Another try would only repeat that failure.
fn unreachable(config: &Config, item: &Item, opts: &SyncOptions, pool: &ClientPool) -> bool {
    let down = |host: &str| {
        pool.get(host, &settings_for(config, host, &opts.registry))
            .is_ok_and(|c| c.is_unreachable())
    };
    down(&item.source.domain) || matches!(&item.target, TargetRef::Registry(r) if down(&r.domain))
}

fn copy_one(
    config: &Config,
    item: &Item,
    opts: &SyncOptions,
    pool: &ClientPool,
    mounts: &Arc<MountIndex>,
    progress: &dyn Progress,
) -> Result<crate::engine::CopyReport> {
    let src_settings = settings_for(config, &item.source.domain, &opts.registry);
    let client = pool.get(&item.source.domain, &src_settings)?;
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
    // The target holds this manifest already: write the tag only (unless
    // something attached to it may need carrying: the engine does that).
    if item.retag
        && !item.attached
        && let TargetRef::Registry(r) = &item.target
        && let Some(tag) = &r.tag
        && item.source_digest.as_ref() == Some(&image.root.digest)
    {
        let s = settings_for(config, &r.domain, &opts.registry);
        let client = pool.get(&r.domain, &s)?;
        let sink = RegistrySink::new(client, r.path.clone(), mounts.clone());
        let bytes = source.read_manifest(&image.root)?;
        let m = crate::content::RawManifest {
            bytes,
            media_type: image.root.media_type.clone(),
            digest: image.root.digest.clone(),
        };
        if m.digest == crate::content::Digest::sha256_of(&m.bytes) {
            sink.retag(&m, tag)?;
            let mut report = crate::engine::CopyReport::default();
            report.images.push(crate::engine::ImageResult {
                label: item.source.to_string(),
                source_digest: image.root.digest.clone(),
                digest: image.root.digest.clone(),
                media_type: image.root.media_type.clone(),
                names: vec![r.to_string()],
                up_to_date: false,
            });
            return Ok(report);
        }
    }
    let mut copy_opts = opts.copy.clone();
    copy_opts.platforms = item.platforms.clone();
    if let Some(entry) = config.entries.iter().find(|e| e.index == item.entry) {
        copy_opts.referrers = entry.referrers.clone();
    }
    // The target as a location, opened by the one factory.
    let (dest, registry) = match &item.target {
        TargetRef::Registry(r) => (
            Location::Registry(r.clone()),
            settings_for(config, &r.domain, &opts.registry),
        ),
        TargetRef::Layout { path, name } => (
            Location::Oci {
                path: path.display().to_string(),
                selector: Some(Selector::Name(name.clone())),
            },
            opts.registry.clone(),
        ),
    };
    let dest_opts = DestinationOptions {
        docker_format: DockerFormat::Oci,
        platform: None,
        registry: &registry,
        source_is_registry: true,
        mounts: mounts.clone(),
    };
    let placements = open_destination(&dest, vec![image], &source.describe(), &dest_opts, pool)?;
    crate::engine::copy_placed(&source, placements, &copy_opts, progress)
}

/// The events of one image's copy: passed on to the run's progress, and
/// notices kept for the image's report.
struct ImageEvents<'a> {
    inner: &'a dyn Progress,
    /// The source image, named in referrer failures.
    label: String,
    notes: std::sync::Mutex<Vec<String>>,
}

impl<'a> ImageEvents<'a> {
    fn new(inner: &'a dyn Progress, label: String) -> Self {
        ImageEvents {
            inner,
            label,
            notes: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn into_notes(self) -> Vec<String> {
        self.notes.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl Progress for ImageEvents<'_> {
    fn image_started(&self, label: &str, digest: &crate::content::Digest) {
        self.inner.image_started(label, digest)
    }
    fn blob_started(&self, digest: &crate::content::Digest, size: u64) {
        self.inner.blob_started(digest, size)
    }
    fn blob_bytes(&self, digest: &crate::content::Digest, bytes: u64) {
        self.inner.blob_bytes(digest, bytes)
    }
    fn blob_done(
        &self,
        digest: &crate::content::Digest,
        size: u64,
        outcome: crate::engine::progress::BlobOutcome,
    ) {
        self.inner.blob_done(digest, size, outcome)
    }
    fn image_done(&self, label: &str, digest: &crate::content::Digest) {
        self.inner.image_done(label, digest)
    }
    fn converted(
        &self,
        what: &str,
        old: &crate::content::Digest,
        new: &crate::content::Digest,
        why: &str,
    ) {
        self.inner.converted(what, old, new, why)
    }
    fn notice(&self, notice: &Notice) {
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(notice.to_string());
        self.inner.notice(notice)
    }
    fn referrer_failed(&self, failure: &crate::engine::ReferrerFailure) {
        // Many images run at once: say which one the failure belongs to.
        let mut named = failure.clone();
        if !named.error.contains(&self.label) {
            named.error = format!("{}: {}", self.label, named.error);
        }
        self.inner.referrer_failed(&named)
    }
}
