//! `imgsync save`, `imgsync load` and bundle `verify`: many images into one
//! deduplicated bundle, and from a bundle into a registry or a layout.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::commands::mirror::{SyncOptions, settings_for};
use crate::content::manifest::is_manifest_media_type;
use crate::content::{Descriptor, Digest, ManifestView, Platform, Reference};
use crate::engine::progress::Progress;
use crate::engine::{
    CopyOptions, CopyReport, ImagePlan, copy_images, copy_location, copy_placed, pool,
};
use crate::error::{Error, Result};
use crate::store::bundle::manifest::{BundleManifest, read_since};
use crate::store::bundle::read::Opened;
use crate::store::bundle::{Bundle, BundleOptions, BundleSink};
use crate::store::location::Location;
use crate::store::null::NullSink;
use crate::store::open::{
    Context, DestinationOptions, DockerFormat, open_destination, open_source, registry_targets,
};
use crate::store::registry::{ClientPool, RegistrySettings};
use crate::store::registry::{MountIndex, RegistrySink};
use crate::store::{ImageName, ImageSink, ImageSource, SourceImage};

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
            jobs: args.options.jobs,
            shard: None,
            copy: args.options.clone(),
            registry: args.registry.clone(),
        };
        for item in crate::commands::mirror::plan::expand(&config, &opts, pool)? {
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
    let manifest = sink.manifest().expect("a committed bundle has a manifest");
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
    let images = source.images()?;
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

#[derive(Debug, Clone)]
pub struct LoadArgs {
    pub files: Vec<PathBuf>,
    pub to: Location,
    /// Keep the source registry host as the first path component below the
    /// destination prefix.
    pub keep_registry: bool,
    pub options: CopyOptions,
    pub registry: RegistrySettings,
}

/// The path component a registry host becomes (`localhost:5000` →
/// `localhost_5000`).
fn host_component(host: &str) -> String {
    host.to_ascii_lowercase().replace(':', "_")
}

/// The blobs (not manifests) an image's graph references, read from the
/// bundle.
fn graph_blobs(
    source: &dyn ImageSource,
    desc: &Descriptor,
    out: &mut Vec<Descriptor>,
    depth: usize,
) -> Result<()> {
    if depth > 8 {
        return Ok(());
    }
    let raw = source.read_manifest(desc)?;
    let view = ManifestView::parse(&raw, Some(&desc.media_type))
        .map_err(|e| Error::Format(format!("manifest {}: {e}", desc.digest)))?;
    if view.kind.is_index() {
        for child in &view.manifests {
            if is_manifest_media_type(&child.media_type) {
                graph_blobs(source, child, out, depth + 1)?;
            } else {
                out.push(child.clone());
            }
        }
    } else {
        out.extend(view.config.iter().cloned());
        // Foreign layers stay where their URLs point.
        out.extend(
            view.layers
                .iter()
                .filter(|l| l.urls.as_ref().is_none_or(|u| u.is_empty()))
                .cloned(),
        );
    }
    Ok(())
}

/// `imgsync load`: every image of a bundle into a registry (each below the
/// destination prefix) or a local layout or archive.
pub fn load(args: &LoadArgs, progress: &dyn Progress) -> Result<CopyReport> {
    let pool = ClientPool::default();
    let bundle = match Bundle::open(&args.files, &args.options.tmpdir)? {
        Opened::Bundle(b) => b,
        Opened::NotABundle => {
            // A plain archive: load it as `copy` would.
            let path = args.files[0].display().to_string();
            let ctx = Context {
                tmpdir: &args.options.tmpdir,
                pool: &pool,
                registry: &RegistrySettings::default(),
            };
            let dest = DestinationOptions {
                docker_format: DockerFormat::Oci,
                platform: None,
                registry: &args.registry,
                source_is_registry: false,
                mounts: Arc::new(MountIndex::default()),
            };
            let mut report = copy_location(
                &plain_archive(&path)?,
                &args.to,
                &ctx,
                &dest,
                &args.options,
                progress,
            )?;
            report.requests = pool.requests();
            return Ok(report);
        }
    };
    bundle.check()?;
    let mut images = bundle.images()?;
    if images.is_empty() {
        return Err(Error::NotFound(format!(
            "{} holds no images",
            bundle.describe()
        )));
    }
    if args.keep_registry {
        for img in &mut images {
            img.names = img
                .names
                .iter()
                .map(|n| match n.reference() {
                    Some(r) => ImageName::Reference(Reference {
                        path: format!("{}/{}", host_component(&r.domain), r.path),
                        ..r
                    }),
                    None => n.clone(),
                })
                .collect();
        }
    }
    if !matches!(args.to, Location::Registry(_)) {
        // A layout or archive holds images of many repositories: each is
        // named by its full reference.
        for img in &mut images {
            img.names = img
                .names
                .iter()
                .map(|n| ImageName::RefName(n.to_string()))
                .collect();
        }
    }
    let mounts = Arc::new(MountIndex::default());
    check_required(&bundle, &images, args, &pool, &mounts)?;
    let dest = DestinationOptions {
        docker_format: DockerFormat::Oci,
        platform: None,
        registry: &args.registry,
        source_is_registry: false,
        mounts,
    };
    let placements = open_destination(&args.to, images, &bundle.describe(), &dest, &pool)?;
    let mut report = copy_placed(bundle.as_ref(), placements, &args.options, progress)
        .map_err(|e| with_location(e, &bundle))?;
    report.requests = pool.requests();
    Ok(report)
}

/// Adds to an integrity error the volume holding the blob it names.
fn with_location(e: Error, bundle: &Bundle) -> Error {
    let Error::Integrity(msg) = &e else {
        return e;
    };
    if bundle.manifest().volumes.len() < 2 {
        return e;
    }
    let found = msg
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter_map(|w| Digest::parse(w).ok())
        .find_map(|d| bundle.location_of(&d));
    match found {
        Some(at) => Error::Integrity(format!("{msg} (in {at}: the volume is corrupt)")),
        None => e,
    }
}

fn plain_archive(path: &str) -> Result<Location> {
    let f = std::fs::File::open(path).map_err(|e| Error::path("open", Path::new(path), e))?;
    let tar = crate::store::tar::index::TarIndex::new(f, path)?;
    let oci = tar.contains("oci-layout")? && !tar.contains("manifest.json")?;
    Ok(if oci {
        Location::OciArchive {
            path: path.to_string(),
            selector: None,
        }
    } else {
        Location::DockerArchive {
            path: path.to_string(),
            selector: None,
        }
    })
}

/// Before anything is written: every blob the images need that the bundle
/// does not carry must be at the destination already (or, in a registry,
/// in another repository this load writes to, to mount from).
fn check_required(
    bundle: &Bundle,
    images: &[SourceImage],
    args: &LoadArgs,
    pool: &ClientPool,
    mounts: &Arc<MountIndex>,
) -> Result<()> {
    // Blobs needed and not carried, per image.
    let mut needs: Vec<Vec<Descriptor>> = Vec::new();
    let mut any = false;
    for img in images {
        let mut blobs = Vec::new();
        graph_blobs(bundle, &img.root, &mut blobs, 0)?;
        blobs.retain(|d| !bundle.carries(&d.digest));
        let mut seen = HashSet::new();
        blobs.retain(|d| seen.insert(d.digest.clone()));
        any |= !blobs.is_empty();
        needs.push(blobs);
    }
    if !any {
        return Ok(());
    }
    let mut missing: BTreeMap<Digest, u64> = BTreeMap::new();
    match &args.to {
        Location::Registry(dest) => {
            let targets = registry_targets(dest, images, false, &bundle.describe())?;
            let client = pool.get(&dest.domain, &args.registry)?;
            let repos: Vec<String> = {
                let mut r: Vec<String> = targets.iter().map(|(r, _)| r.clone()).collect();
                r.sort();
                r.dedup();
                r
            };
            let sinks: HashMap<String, RegistrySink> = repos
                .iter()
                .map(|r| {
                    (
                        r.clone(),
                        RegistrySink::new(client.clone(), r.clone(), mounts.clone()),
                    )
                })
                .collect();
            // (repo, digest) → present; asked in parallel.
            let mut asks: Vec<(String, Descriptor)> = Vec::new();
            for ((repo, _), blobs) in targets.iter().zip(&needs) {
                for d in blobs {
                    asks.push((repo.clone(), d.clone()));
                }
            }
            let answers = head_all(&sinks, &asks)?;
            for ((repo, d), present) in asks.iter().zip(&answers) {
                if *present {
                    mounts.remember(client.host(), &d.digest, repo);
                    continue;
                }
                // Elsewhere in the registry (another repository of this load)?
                let others: Vec<(String, Descriptor)> = repos
                    .iter()
                    .filter(|r| *r != repo)
                    .map(|r| (r.clone(), d.clone()))
                    .collect();
                let found = head_all(&sinks, &others)?;
                match others.iter().zip(found).find(|(_, f)| *f) {
                    Some(((r, _), _)) => mounts.remember(client.host(), &d.digest, r),
                    None => {
                        missing.insert(d.digest.clone(), d.size);
                    }
                }
            }
        }
        Location::Oci { path, .. } => {
            for d in needs.iter().flatten() {
                let p = Path::new(path).join(crate::store::layout::blob_path(&d.digest));
                if !std::fs::metadata(&p).is_ok_and(|m| m.len() == d.size) {
                    missing.insert(d.digest.clone(), d.size);
                }
            }
        }
        _ => {
            for d in needs.iter().flatten() {
                missing.insert(d.digest.clone(), d.size);
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::NotFound(missing_message(
        bundle.manifest(),
        &bundle.describe(),
        &args.to.label(),
        &missing,
    )))
}

/// `HEAD`s of blobs in repositories, in parallel.
fn head_all(
    sinks: &HashMap<String, RegistrySink>,
    asks: &[(String, Descriptor)],
) -> Result<Vec<bool>> {
    pool::run_all(asks, asks.len().clamp(1, 16), |_, (repo, d)| {
        sinks[repo].has_blob(d)
    })
    .into_iter()
    .collect()
}

/// "needs N blobs ... carried by bundle X": grouped by the earlier bundle
/// that should have carried them.
fn missing_message(
    manifest: &BundleManifest,
    label: &str,
    dest: &str,
    missing: &BTreeMap<Digest, u64>,
) -> String {
    let by_digest: HashMap<&Digest, &str> = manifest
        .required
        .iter()
        .map(|r| (&r.digest, r.bundle.as_str()))
        .collect();
    let mut groups: BTreeMap<String, Vec<&Digest>> = BTreeMap::new();
    for d in missing.keys() {
        let who = match by_digest.get(d) {
            Some(id) => match manifest.bundle_file(id) {
                Some(file) => format!("bundle {file} (id {id})"),
                None => format!("bundle id {id}"),
            },
            None => "no bundle of its chain".to_string(),
        };
        groups.entry(who).or_default().push(d);
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(who, ds)| {
            let list: Vec<String> = ds.iter().map(|d| d.to_string()).collect();
            format!("{} from {who}: {}", ds.len(), list.join(", "))
        })
        .collect();
    format!(
        "{label} cannot be loaded into {dest}: {} blob(s) it relies on are neither in it nor at the destination ({}); load the earlier bundle(s) first. Nothing was written",
        missing.len(),
        parts.join("; ")
    )
}

/// What verifying a bundle found.
#[derive(Debug, Default)]
pub struct BundleVerifyReport {
    pub label: String,
    pub copy: CopyReport,
    /// Structural problems (volumes missing, corrupt, foreign).
    pub problems: Vec<String>,
    /// Blobs the bundle relies on from earlier bundles, by bundle file.
    pub relies_on: BTreeMap<String, (usize, u64)>,
    pub volumes: usize,
}

impl BundleVerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.copy.errors.is_empty()
    }
}

/// A sink that checks and keeps nothing, and says it has the blobs a
/// bundle relies on from earlier bundles (they are not in it to check).
struct VerifySink<'a> {
    required: &'a HashSet<Digest>,
}

impl ImageSink for VerifySink<'_> {
    fn describe(&self) -> String {
        NullSink.describe()
    }
    fn caps(&self) -> crate::store::SinkCaps {
        NullSink.caps()
    }
    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.required.contains(&desc.digest))
    }
    fn put_blob(&self, desc: &Descriptor, reader: &mut dyn std::io::Read) -> Result<()> {
        NullSink.put_blob(desc, reader)
    }
    fn put_manifest(&self, m: &crate::content::RawManifest) -> Result<()> {
        NullSink.put_manifest(m)
    }
    fn add_image(&self, root: &Descriptor, names: &[ImageName]) -> Result<()> {
        NullSink.add_image(root, names)
    }
    fn commit(&self) -> Result<()> {
        Ok(())
    }
}

/// `imgsync verify BUNDLE...`: re-hash every blob of the bundle, check every
/// manifest's references, and name what is missing or corrupt.
pub fn verify(
    files: &[PathBuf],
    options: &CopyOptions,
    progress: &dyn Progress,
) -> Result<BundleVerifyReport> {
    let bundle = match Bundle::open(files, &options.tmpdir)? {
        Opened::Bundle(b) => b,
        Opened::NotABundle => {
            return Err(Error::Format(format!(
                "{} is not an imgsync bundle; to verify a plain archive give docker-archive:{0} or oci-archive:{0}",
                files[0].display()
            )));
        }
    };
    let m = bundle.manifest();
    let mut problems = bundle.problems().to_vec();
    let (volume_problems, mut reported) = bundle.check_parts(options.jobs);
    problems.extend(volume_problems);
    // Blobs in missing volumes, or found corrupt already, are not read again.
    reported.extend(bundle.unavailable());
    let mut report = BundleVerifyReport {
        label: bundle.describe(),
        problems,
        volumes: m.volumes.len(),
        ..Default::default()
    };
    let mut required: HashSet<Digest> = m
        .required
        .iter()
        .filter(|r| !bundle.carries(&r.digest))
        .map(|r| r.digest.clone())
        .collect();
    required.extend(reported);
    for r in &m.required {
        let file = m.bundle_file(&r.bundle).unwrap_or(r.bundle.clone());
        let e = report.relies_on.entry(file).or_default();
        e.0 += 1;
        e.1 += r.size;
    }
    let images = match bundle.images() {
        Ok(i) => i,
        Err(e) => {
            report.copy.errors.push(e);
            return Ok(report);
        }
    };
    let (plans, opts) = super::verify::plans_and_options(images, options);
    let sink = VerifySink {
        required: &required,
    };
    match copy_images(bundle.as_ref(), &sink, &plans, &opts, progress) {
        Ok(r) => report.copy = r,
        Err(e) => report.copy.errors.push(e),
    }
    // A blob that does not match its digest is named with its volume.
    report.copy.errors = std::mem::take(&mut report.copy.errors)
        .into_iter()
        .map(|e| with_location(e, &bundle))
        .collect();
    // Every image the manifest lists must be in the index.
    let listed: HashSet<&Digest> = plans.iter().map(|p| &p.image.root.digest).collect();
    for img in &m.images {
        if !listed.contains(&img.digest) {
            report.problems.push(format!(
                "image {} ({}) is in the bundle manifest but not in its index",
                img.reference, img.digest
            ));
        }
    }
    Ok(report)
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

    #[test]
    fn host_components() {
        assert_eq!(host_component("localhost:5000"), "localhost_5000");
        assert_eq!(host_component("docker.io"), "docker.io");
    }
}
