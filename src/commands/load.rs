//! `imgsync load`: every image of a bundle into a registry (below a
//! prefix) or a local layout; blobs stream from the bundle, nothing is
//! extracted, and what the bundle relies on must already be there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::content::manifest::is_manifest_media_type;
use crate::content::{Descriptor, Digest, MAX_GRAPH_NODES, ManifestView, Reference};
use crate::engine::progress::Progress;
use crate::engine::{CopyOptions, CopyReport, copy_location, copy_placed, pool};
use crate::error::{Error, Result};
use crate::store::bundle::Bundle;
use crate::store::bundle::manifest::BundleManifest;
use crate::store::bundle::read::Opened;
use crate::store::location::Location;
use crate::store::open::{
    Context, DestinationOptions, DockerFormat, open_destination, registry_targets,
};
use crate::store::registry::{ClientPool, RegistrySettings};
use crate::store::registry::{MountIndex, RegistrySink};
use crate::store::{ImageName, ImageSink, ImageSource, SourceImage};

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
///
/// Each distinct manifest is read once (`seen`): indexes that list a child
/// many times, level after level, would otherwise be walked exponentially.
fn graph_blobs(
    source: &dyn ImageSource,
    desc: &Descriptor,
    out: &mut Vec<Descriptor>,
    depth: usize,
    seen: &mut HashSet<Digest>,
) -> Result<()> {
    if depth > 8 || !seen.insert(desc.digest.clone()) {
        return Ok(());
    }
    if seen.len() + out.len() > MAX_GRAPH_NODES {
        return Err(Error::Format(format!(
            "{}: the image lists more than {MAX_GRAPH_NODES} manifests and blobs (at {})",
            source.describe(),
            desc.digest
        )));
    }
    let raw = source.read_manifest(desc)?;
    let view = ManifestView::parse(&raw, Some(&desc.media_type))
        .map_err(|e| Error::Format(format!("manifest {}: {e}", desc.digest)))?;
    if view.kind.is_index() {
        for child in &view.manifests {
            if is_manifest_media_type(&child.media_type) {
                graph_blobs(source, child, out, depth + 1, seen)?;
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
            let [first, ..] = args.files.as_slice() else {
                return Err(Error::Usage("give the bundle file or its volumes".into()));
            };
            let path = first.display().to_string();
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
        .map_err(|e| bundle.locate_error(e))?;
    report.requests = pool.requests();
    Ok(report)
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
        let mut seen = HashSet::new();
        graph_blobs(bundle, &img.root, &mut blobs, 0, &mut seen)?;
        // What travels with the image goes to its repository too.
        let ro = &args.options.referrers;
        for r in bundle
            .manifest()
            .images
            .iter()
            .filter(|i| i.digest == img.root.digest)
            .flat_map(|i| &i.referrers)
        {
            let wanted = if r.tag.is_some() {
                ro.digest_tags
            } else {
                ro.enabled && ro.types.admits(r.artifact_type.as_deref())
            };
            if wanted {
                graph_blobs(bundle, &r.descriptor(), &mut blobs, 0, &mut seen)?;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_components() {
        assert_eq!(host_component("localhost:5000"), "localhost_5000");
        assert_eq!(host_component("docker.io"), "docker.io");
    }
}
