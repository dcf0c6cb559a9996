//! `imgsync copy SRC DST`.
//!
//! Destination names: a destination with a name (`oci:dir:NAME`,
//! `docker-archive:f.tar:REF`, `registry/repo:TAG`) names the one image
//! copied. Otherwise every image keeps its own names; into a registry
//! without a tag, a registry source keeps its tag in the given repository,
//! and images from an archive or layout go each under its own repository
//! path below the given prefix (`docker.io/library/redis:7` into
//! `host/mirror` is `host/mirror/library/redis:7`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Context, DockerFormat, open_sink, open_source};
use crate::content::Reference;
use crate::engine::progress::Progress;
use crate::engine::{CopyOptions, CopyReport, ImagePlan, copy_images};
use crate::error::{Error, Result};
use crate::store::layout::Selector;
use crate::store::location::Location;
use crate::store::registry::{ClientPool, RegistrySettings};
use crate::store::registry::{MountIndex, RegistrySink};
use crate::store::{ImageName, ImageSink, ImageSource, SourceImage};

#[derive(Debug, Clone)]
pub struct CopyArgs {
    pub source: Location,
    pub dest: Location,
    pub options: CopyOptions,
    pub docker_format: DockerFormat,
    pub src_registry: RegistrySettings,
    pub dest_registry: RegistrySettings,
}

/// The name a local destination location gives the (single) image.
fn local_dest_name(dest: &Location) -> Result<Option<ImageName>> {
    let sel = match dest {
        Location::DockerArchive { selector, .. }
        | Location::Oci { selector, .. }
        | Location::OciArchive { selector, .. } => selector,
        Location::Registry(_) => return Ok(None),
    };
    match sel {
        None => Ok(None),
        Some(Selector::Index(_)) => Err(Error::Usage(format!(
            "{}: a destination cannot select an image by index; give a name or nothing",
            dest.label()
        ))),
        Some(Selector::Name(n)) => match dest {
            Location::DockerArchive { .. } => {
                let r = Reference::parse(n)?.with_default_tag();
                Ok(Some(ImageName::Reference(r)))
            }
            _ => Ok(Some(ImageName::RefName(n.clone()))),
        },
    }
}

/// Where each image goes in a registry: (repository, names there).
pub(crate) fn registry_targets(
    dest: &Reference,
    images: &[SourceImage],
    source_is_registry: bool,
    source_label: &str,
) -> Result<Vec<(String, Vec<ImageName>)>> {
    let named = dest.tag.is_some() || dest.digest.is_some();
    if named && images.len() > 1 {
        return Err(Error::Usage(format!(
            "{source_label} holds {} images but docker://{dest} names one; select one with :NAME or :@N on the source, or give a repository prefix without a tag",
            images.len()
        )));
    }
    images
        .iter()
        .map(|img| {
            if named {
                let names = match &dest.tag {
                    Some(_) => {
                        let mut r = dest.clone();
                        r.digest = None;
                        vec![ImageName::Reference(r)]
                    }
                    None => vec![],
                };
                return Ok((dest.path.clone(), names));
            }
            if source_is_registry {
                // Same tag, in the given repository.
                let names = img
                    .names
                    .iter()
                    .filter_map(ImageName::reference)
                    .map(|r| {
                        ImageName::Reference(Reference {
                            domain: dest.domain.clone(),
                            path: dest.path.clone(),
                            tag: r.tag,
                            digest: None,
                        })
                    })
                    .collect();
                return Ok((dest.path.clone(), names));
            }
            // Each image under its own path below the prefix.
            let refs: Vec<Reference> = img.names.iter().filter_map(ImageName::reference).collect();
            let Some(first) = refs.first() else {
                return Err(Error::Usage(format!(
                    "{source_label}: image {} has no name to put below docker://{dest}; give the destination a tag",
                    img.root.digest
                )));
            };
            let repo = format!("{}/{}", dest.path, first.path);
            let names = refs
                .iter()
                .filter(|r| r.path == first.path)
                .map(|r| {
                    ImageName::Reference(Reference {
                        domain: dest.domain.clone(),
                        path: repo.clone(),
                        tag: r.tag.clone(),
                        digest: None,
                    })
                })
                .collect();
            Ok((repo, names))
        })
        .collect()
}

/// Adds one report's counts to another's.
pub(crate) fn merge(into: &mut CopyReport, from: CopyReport) {
    into.images.extend(from.images);
    into.images_up_to_date += from.images_up_to_date;
    into.blobs_copied += from.blobs_copied;
    into.blobs_skipped += from.blobs_skipped;
    into.blobs_mounted += from.blobs_mounted;
    into.bytes_copied += from.bytes_copied;
    into.conversions.extend(from.conversions);
}

/// Copies into a sink and commits it, or aborts it on any failure.
pub fn run_into(
    source: &dyn ImageSource,
    sink: &dyn ImageSink,
    plans: &[ImagePlan],
    options: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    match copy_images(source, sink, plans, options, progress) {
        Ok(report) => match sink.commit() {
            Ok(()) => Ok(report),
            Err(e) => {
                sink.abort();
                Err(e)
            }
        },
        Err(e) => {
            sink.abort();
            Err(e)
        }
    }
}

pub fn run(args: &CopyArgs, progress: &dyn Progress) -> Result<CopyReport> {
    let pool = ClientPool::default();
    let mut report = run_with_pool(args, progress, &pool);
    if let Ok(r) = &mut report {
        r.requests = pool.requests();
    }
    report
}

fn run_with_pool(
    args: &CopyArgs,
    progress: &dyn Progress,
    pool: &ClientPool,
) -> Result<CopyReport> {
    let ctx = Context {
        tmpdir: &args.options.tmpdir,
        pool,
        registry: &args.src_registry,
    };
    let source = open_source(&args.source, &ctx)?;
    let images = source.images()?;
    if images.is_empty() {
        return Err(Error::NotFound(format!(
            "{} holds no images",
            source.describe()
        )));
    }
    let into = Into {
        dest: &args.dest,
        options: &args.options,
        docker_format: args.docker_format,
        dest_registry: &args.dest_registry,
        source_is_registry: matches!(args.source, Location::Registry(_)),
        mounts: Arc::new(MountIndex::default()),
    };
    copy_opened(source.as_ref(), images, &into, pool, progress)
}

/// Where an opened source's images go, and how.
pub(crate) struct Into<'a> {
    pub dest: &'a Location,
    pub options: &'a CopyOptions,
    pub docker_format: DockerFormat,
    pub dest_registry: &'a RegistrySettings,
    /// Registry sources keep their tag in a destination repository; other
    /// sources' images go each under its own path below it.
    pub source_is_registry: bool,
    /// What this run knows about which repository holds which blob.
    pub mounts: Arc<MountIndex>,
}

/// Copies `images` of an opened source to a destination (see the module
/// documentation for how they are named there).
pub(crate) fn copy_opened(
    source: &dyn ImageSource,
    images: Vec<SourceImage>,
    into: &Into,
    pool: &ClientPool,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let name = local_dest_name(into.dest)?;
    if let Location::Registry(dest) = into.dest {
        let targets = registry_targets(dest, &images, into.source_is_registry, &source.describe())?;
        // One sink per repository; blobs a repository of this run received
        // are mounted into the next.
        let mut groups: BTreeMap<String, Vec<ImagePlan>> = BTreeMap::new();
        let mut order = Vec::new();
        for (image, (repo, names)) in images.into_iter().zip(targets) {
            if !groups.contains_key(&repo) {
                order.push(repo.clone());
            }
            groups
                .entry(repo)
                .or_default()
                .push(ImagePlan { image, names });
        }
        let client = pool.get(&dest.domain, into.dest_registry)?;
        let mut total = CopyReport::default();
        for repo in order {
            let plans = &groups[&repo];
            let sink = RegistrySink::new(client.clone(), repo.clone(), into.mounts.clone());
            let r = run_into(source, &sink, plans, into.options, progress)?;
            merge(&mut total, r);
        }
        if let Some(d) = &dest.digest
            && let Some(img) = total.images.first()
            && &img.digest != d
        {
            return Err(Error::Integrity(format!(
                "docker://{dest}: the copied image is {}, not the digest the destination names",
                img.digest
            )));
        }
        return Ok(total);
    }
    if name.is_some() && images.len() > 1 {
        return Err(Error::Usage(format!(
            "{} holds {} images but {} names one; select one with :NAME or :@N on the source",
            source.describe(),
            images.len(),
            into.dest.label()
        )));
    }
    let plans: Vec<ImagePlan> = images
        .into_iter()
        .map(|image| {
            let names = match &name {
                Some(n) => vec![n.clone()],
                None => image.names.clone(),
            };
            ImagePlan { image, names }
        })
        .collect();
    let single_platform = match into.options.platforms.as_slice() {
        [p] => Some(p.clone()),
        _ => None,
    };
    let sink = open_sink(into.dest, into.docker_format, single_platform)?;
    run_into(source, sink.as_ref(), &plans, into.options, progress)
}
