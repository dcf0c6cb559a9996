//! `imgsync sync`: mirror sets of repositories from a config file.
//!
//! Plan: list tags (and the catalog, for prefix sources), filter, map names,
//! then drop every image whose target already has the source's manifest
//! digest, checked with `HEAD` requests in parallel. Execute: the remaining
//! copies through the copy engine, images in parallel, sharing one client
//! per registry (one token, one connection pool) and one record of which
//! repository holds which blob, so a blob shared by many images is uploaded
//! once per target registry and mounted after that. Failed images are tried
//! once more at the end; one failure never stops the others.

pub mod config;
pub mod plan;
pub mod report;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use config::{Config, load};
pub use plan::{Item, TargetRef};
pub use report::{Action, ImageReport, RunReport};

use crate::engine::progress::Progress;
use crate::engine::{CopyOptions, ImagePlan};
use crate::error::{Error, ErrorClass, Result};
use crate::store::layout::LayoutSink;
use crate::store::registry::{ClientPool, RegistrySettings};
use crate::store::registry::{MountIndex, RegistrySink, RegistrySource};
use crate::store::{ImageName, ImageSink, ImageSource};

/// How a sync run goes.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Images copied at once.
    pub jobs: usize,
    /// `(index, count)`: take only this shard of the plan.
    pub shard: Option<(usize, usize)>,
    pub copy: CopyOptions,
    /// Settings for registries the config does not list.
    pub registry: RegistrySettings,
}

/// The settings for a host: the config's entry, else the defaults.
pub fn settings_for(config: &Config, host: &str, defaults: &RegistrySettings) -> RegistrySettings {
    match config.registries.iter().find(|(h, _)| h == host) {
        Some((_, s)) => {
            let mut s = s.clone();
            if s.authfile.is_none() {
                s.authfile = defaults.authfile.clone();
            }
            if s.retry_times.is_none() {
                s.retry_times = defaults.retry_times;
            }
            if s.max_requests.is_none() {
                s.max_requests = defaults.max_requests;
            }
            s
        }
        None => defaults.clone(),
    }
}

/// A stable shard of a source repository (FNV-1a), so every pod of an
/// indexed job agrees on the split.
pub fn shard_of(repository: &str, count: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in repository.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % count as u64) as usize
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
    let results: Mutex<Vec<Option<ImageReport>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let copy = |item: &Item, retries: u32| -> ImageReport {
        let t0 = Instant::now();
        let r = copy_one(config, item, opts, pool, &mounts, progress);
        report::image_report(item, r, retries, t0.elapsed())
    };
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1).min(items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(k) else { break };
                    let rep = if item.up_to_date {
                        report::up_to_date(item)
                    } else {
                        copy(item, 0)
                    };
                    results.lock().unwrap()[k] = Some(rep);
                }
            });
        }
    });
    let mut images: Vec<ImageReport> = results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect();
    // One more try for what failed for a reason that may pass.
    for (k, item) in items.iter().enumerate() {
        let failed_transient = images[k].action == Action::Failed
            && !matches!(
                images[k].error_class,
                Some(ErrorClass::Auth | ErrorClass::Usage)
            );
        if failed_transient {
            images[k] = copy(item, 1);
        }
    }
    RunReport::new(images, started.elapsed(), pool.requests())
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
    let images = source.images()?;
    let image = images
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotFound(format!("{}: no image", item.source)))?;
    if let Some(d) = &item.source_digest
        && d != &image.root.digest
    {
        // The tag moved between planning and copying: copy what it is now.
        progress.converted(
            &item.source.to_string(),
            d,
            &image.root.digest,
            "tag moved during the run",
        );
    }
    // The target holds this manifest already: write the tag only.
    if item.retag
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
            });
            return Ok(report);
        }
    }
    let mut copy_opts = opts.copy.clone();
    copy_opts.platforms = item.platforms.clone();
    let (sink, names): (Box<dyn ImageSink>, Vec<ImageName>) = match &item.target {
        TargetRef::Registry(r) => {
            let s = settings_for(config, &r.domain, &opts.registry);
            let client = pool.get(&r.domain, &s)?;
            let names = if r.tag.is_some() {
                vec![ImageName::Reference(r.clone())]
            } else {
                vec![]
            };
            (
                Box::new(RegistrySink::new(client, r.path.clone(), mounts.clone())),
                names,
            )
        }
        TargetRef::Layout { path, name } => (
            Box::new(LayoutSink::open(path, format!("oci:{}", path.display()))?),
            vec![ImageName::RefName(name.clone())],
        ),
    };
    let plan = [ImagePlan { image, names }];
    crate::engine::copy_and_commit(&source, sink.as_ref(), &plan, &copy_opts, progress)
}
