//! `imgsync save`: many images into one deduplicated bundle (an OCI layout
//! and a docker archive at once), incremental against an earlier bundle.

use std::path::PathBuf;

use crate::commands::mirror::{SyncOptions, settings_for};
use crate::content::{Digest, Platform, Reference};
use crate::engine::progress::Progress;
use crate::engine::{CopyOptions, CopyReport, ImagePlan, copy_images, pool};
use crate::error::{Error, Result};
use crate::store::bundle::manifest::{BundleManifest, read_since};
use crate::store::bundle::{BundleOptions, BundleSink};
use crate::store::location::Location;
use crate::store::open::{Context, open_source};
use crate::store::registry::{ClientPool, RegistrySettings};
use crate::store::{ImageName, ImageSink};

#[derive(Debug, Clone)]
pub struct SaveArgs {
    pub out: PathBuf,
    /// Images given on the command line.
    pub sources: Vec<Location>,
    /// A sync config whose selected images are saved too.
    pub config: Option<PathBuf>,
    pub since: Option<PathBuf>,
    pub split: Option<u64>,
    pub manifest_out: Option<PathBuf>,
    pub docker_platform: Option<Platform>,
    pub options: CopyOptions,
    pub registry: RegistrySettings,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct SaveReport {
    pub copy: CopyReport,
    pub bundle: Option<BundleManifest>,
    /// Bytes of the bundle's files.
    pub bundle_bytes: u64,
    pub files: Vec<PathBuf>,
}

/// One image to save: where it is read from, and with which platforms.
struct Wanted {
    source: Location,
    platforms: Vec<Platform>,
    /// Registry settings for its host (a config's, else the defaults).
    settings: RegistrySettings,
}

/// The name an image from a registry gets in a bundle: its tag, or its
/// digest when pinned by digest alone.
fn registry_name(r: &Reference, root: &Digest) -> ImageName {
    let mut r = r.clone();
    if r.tag.is_some() {
        r.digest = None;
    } else {
        r.digest = Some(root.clone());
    }
    ImageName::Reference(r)
}

/// Parses a size: `4GiB`, `700MB`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| Error::Usage(format!("{s:?} is not a size (try 4GiB or 700MB)")))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        "t" | "tb" => 1000 * 1000 * 1000 * 1000,
        "tib" => 1 << 40,
        _ => {
            return Err(Error::Usage(format!(
                "{s:?}: unknown size unit (use B, KB, KiB, MB, MiB, GB, GiB, TB or TiB)"
            )));
        }
    };
    Ok((n * mult as f64) as u64)
}

fn wanted_images(args: &SaveArgs, pool: &ClientPool) -> Result<Vec<Wanted>> {
    let mut out: Vec<Wanted> = args
        .sources
        .iter()
        .map(|s| Wanted {
            source: s.clone(),
            platforms: args.options.platforms.clone(),
            settings: args.registry.clone(),
        })
        .collect();
    if let Some(path) = &args.config {
        let config = crate::commands::mirror::config::load(path)?;
        let opts = SyncOptions {
            only: None,
            jobs: args.options.jobs,
            shard: None,
            copy: args.options.clone(),
            registry: args.registry.clone(),
        };
        for item in crate::commands::mirror::plan::expand(&config, &opts, pool)? {
            // A bundle has no per-image report to carry a skipped name.
            if let Some(why) = item.rejected {
                return Err(Error::Format(why));
            }
            // A bundle is all of its sources or nothing.
            if let Some(failed) = item.failed {
                return Err(failed.error);
            }
            let platforms = if args.options.platforms.is_empty() {
                item.platforms.clone()
            } else {
                args.options.platforms.clone()
            };
            out.push(Wanted {
                settings: settings_for(&config, &item.source.domain, &args.registry),
                source: Location::Registry(item.source),
                platforms,
            });
        }
    }
    if out.is_empty() {
        return Err(Error::Usage(
            "nothing to save: give images, or --config with a sync config".into(),
        ));
    }
    Ok(out)
}

/// `imgsync save`: every wanted image into one bundle.
pub fn save(args: &SaveArgs, progress: &dyn Progress) -> Result<SaveReport> {
    let clients = ClientPool::default();
    let wanted = wanted_images(args, &clients)?;
    let since = match &args.since {
        Some(p) => {
            let m = read_since(p)?;
            let file = m.name();
            Some((m, file))
        }
        None => None,
    };
    let sink = BundleSink::create(
        &args.out,
        BundleOptions {
            split: args.split,
            since,
            docker_platform: args.docker_platform.clone(),
        },
    )?;
    // A few images at once; each moves its blobs in parallel too.
    let results = pool::run_until(
        &wanted,
        wanted.len().clamp(1, 4),
        |_, w| save_one(w, &sink, &args.options, &clients, progress),
        |r| r.is_err(),
    );
    let mut report = CopyReport::default();
    for r in results.into_iter().flatten() {
        match r {
            Ok(r) => report.merge(r),
            Err(e) => {
                sink.abort();
                return Err(e);
            }
        }
    }
    if let Err(e) = sink.commit() {
        sink.abort();
        return Err(e);
    }
    let manifest = sink.manifest().ok_or_else(|| {
        Error::Integrity(format!(
            "{}: the bundle was committed without its manifest",
            args.out.display()
        ))
    })?;
    if let Some(p) = &args.manifest_out {
        crate::store::atomic_file::write_file_atomic(p, &manifest.to_bytes(), 0o644)?;
    }
    let files: Vec<PathBuf> = if args.split.is_some() {
        crate::store::bundle::read::existing_volumes(&args.out)
    } else {
        vec![args.out.clone()]
    };
    let bundle_bytes = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let mut copy = report;
    copy.requests = clients.requests();
    Ok(SaveReport {
        copy,
        bundle: Some(manifest),
        bundle_bytes,
        files,
    })
}

fn save_one(
    w: &Wanted,
    sink: &BundleSink,
    options: &CopyOptions,
    pool: &ClientPool,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let ctx = Context {
        tmpdir: &options.tmpdir,
        pool,
        registry: &w.settings,
    };
    let source = open_source(&w.source, &ctx)?;
    let mut images = source.images()?;
    // What is attached to the images travels with them (or, when the
    // options say so, stays behind): unnamed referrers and manifests named
    // only by digest tags are no images of their own.
    if images.len() > 1 {
        if options.referrers.enabled {
            crate::engine::referrers::leave_to_subjects(source.as_ref(), &mut images);
        }
        images
            .retain(|img| img.names.is_empty() || !img.names.iter().all(ImageName::is_digest_tag));
    }
    if images.is_empty() {
        return Err(Error::NotFound(format!(
            "{} holds no images",
            source.describe()
        )));
    }
    let plans: Vec<ImagePlan> = images
        .into_iter()
        .map(|image| {
            let names = match &w.source {
                Location::Registry(r) => vec![registry_name(r, &image.root.digest)],
                _ => image.names.clone(),
            };
            ImagePlan { image, names }
        })
        .collect();
    let mut opts = options.clone();
    opts.platforms = w.platforms.clone();
    copy_images(source.as_ref(), sink, &plans, &opts, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("700MB").unwrap(), 700_000_000);
        assert_eq!(parse_size("1.5MiB").unwrap(), 3 << 19);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
    }
}
