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

mod copy;
pub mod pipeline;
pub mod report;
pub mod state;

use std::sync::Arc;
use std::time::Instant;

pub use crate::commands::mirror::config::{Config, load};
pub use crate::commands::mirror::plan::{Item, TargetRef};
pub use crate::commands::mirror::{SyncOptions, settings_for, shard_of};
pub use report::{Action, ImageReport, RunReport};

use crate::commands::mirror::check::Known;
use crate::engine::progress::{Notice, Progress};
use crate::error::{Error, ErrorClass, Result};
use crate::store::registry::ClientPool;
use crate::store::registry::MountIndex;

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
    let known = knowing(config, memory);
    let settled = pipeline::run::<()>(config, opts, pool, &known, None)?;
    Ok(settled.into_iter().map(|s| s.item).collect())
}

/// What the state says was mirrored, for the up-to-date check.
fn knowing<'a>(
    config: &'a Config,
    memory: Option<&'a state::State>,
) -> impl Fn(&Item) -> Option<Known> + Sync + 'a {
    move |item| memory.and_then(|m| state::known(config, m, item))
}

/// The exit code of a plan that is only printed (`--dry-run`): as a run's
/// would be for the sources that could not be listed, 0 otherwise.
pub fn plan_exit_code(items: &[Item]) -> u8 {
    let failed = items.iter().filter_map(|i| i.failed.as_ref());
    report::exit_code_of(failed.map(|f| Some(f.error.class())), 0)
}

/// A run: plans and copies as one pipeline (see [`pipeline`]), then tries
/// once more what failed for a reason that may pass. Returns the plan as
/// decided (for the state) and the report; `started` is when the run
/// began.
pub fn run(
    config: &Config,
    opts: &SyncOptions,
    pool: &ClientPool,
    memory: Option<&state::State>,
    progress: &dyn Progress,
    started: Instant,
) -> Result<(Vec<Item>, RunReport)> {
    let copier = copy::Copier {
        config,
        opts,
        pool,
        mounts: Arc::new(remembered_blobs(memory)),
    };
    // The copy of a group (one source image, one or more targets); a
    // retry names the failure it follows.
    let copy = |items: &[Item], earlier: Option<&Error>| -> Vec<(ImageReport, Option<Error>)> {
        let t0 = Instant::now();
        let label = items
            .first()
            .map(|i| i.source.to_string())
            .unwrap_or_default();
        let events = ImageEvents::new(progress, label.clone());
        let retries = match earlier {
            Some(cause) => {
                events.notice(&Notice::Retry {
                    what: &label,
                    attempt: 1,
                    cause,
                });
                1
            }
            None => 0,
        };
        let results = copier.group(items, &events);
        let notes = events.into_notes();
        items
            .iter()
            .zip(results)
            .map(|(item, r)| {
                let mut rep = report::image_report(item, &r, retries, t0.elapsed());
                rep.notes = notes.clone();
                (rep, r.err())
            })
            .collect()
    };
    let known = knowing(config, memory);
    let first = |group: &[Item]| copy(group, None);
    let settled = pipeline::run(config, opts, pool, &known, Some(&first))?;
    let mut planned = Vec::with_capacity(settled.len());
    let mut images = Vec::with_capacity(settled.len());
    for s in settled {
        let outcome = match s.outcome {
            Some(o) => o,
            None => (settled_report(&s.item), None),
        };
        images.push(outcome);
        planned.push(s.item);
    }
    // One more try for what failed for a reason that may pass: each target
    // on its own, so that one target failing again keeps no other back.
    for (item, image) in planned.iter().zip(images.iter_mut()) {
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
            // What an earlier run remembered of its target may be gone.
            if let TargetRef::Registry(r) = &item.target {
                copier.mounts.forget_repo(&r.domain, &r.path);
            }
            let cause = image.1.take();
            if let Some(again) = copy(std::slice::from_ref(item), cause.as_ref())
                .into_iter()
                .next()
            {
                *image = again;
            }
        }
    }
    let images = images.into_iter().map(|(rep, _)| rep).collect();
    let report =
        RunReport::new(images, started.elapsed(), pool.requests()).with_quota(pool.quotas());
    Ok((planned, report))
}

/// What the state says target repositories hold, as a run's record of
/// blobs: copies to them skip asking, and other repositories of the
/// registry mount from them.
fn remembered_blobs(memory: Option<&state::State>) -> MountIndex {
    let mounts = MountIndex::default();
    for (repository, digests) in memory.map(|m| &m.blobs).into_iter().flatten() {
        let Some((host, repo)) = repository.split_once('/') else {
            continue;
        };
        for digest in digests.iter().filter_map(|d| d.parse().ok()) {
            mounts.remember(host, &digest, repo);
        }
    }
    mounts
}

/// The report of an item the copiers never had: rejected, unlisted or up
/// to date.
fn settled_report(item: &Item) -> ImageReport {
    if let Some(why) = &item.rejected {
        let bad = Err(Error::Format(why.clone()));
        report::image_report(item, &bad, 0, Default::default())
    } else if let Some(failed) = &item.failed {
        report::unlisted(item, &failed.error)
    } else {
        report::up_to_date(item)
    }
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
