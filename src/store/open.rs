//! The one way to open a [`Location`]: as a source, as a local sink, or as
//! a destination that places each image of a source in its sink (one per
//! registry repository when a destination spans several).
//!
//! Destination names: a destination with a name (`oci:dir:NAME`,
//! `docker-archive:f.tar:REF`, `registry/repo:TAG`) names the one image
//! copied. Otherwise every image keeps its own names; into a registry
//! without a tag, a registry source keeps its tag in the given repository,
//! and images from an archive or layout go each under its own repository
//! path below the given prefix (`docker.io/library/redis:7` into
//! `host/mirror` is `host/mirror/library/redis:7`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::content::{Digest, Platform, Reference};
use crate::error::{Error, Result};
use crate::store::docker_archive::DockerArchiveSource;
use crate::store::files::DirTree;
use crate::store::layout::{LayoutSink, LayoutSource, Selector};
use crate::store::location::Location;
use crate::store::oci_archive::OciArchiveSource;
use crate::store::registry::{
    ClientPool, MountIndex, RegistrySettings, RegistrySink, RegistrySource,
};
use crate::store::tar::writer::{ArchiveSink, Flavor};
use crate::store::{ImageName, ImageSink, ImageSource, SourceImage};

/// Which docker archive shape to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DockerFormat {
    /// Docker 25+ shape: OCI layout plus `manifest.json`, layers as they are.
    #[default]
    Oci,
    /// Pre-25 shape: `<id>/layer.tar`, uncompressed layers.
    Legacy,
}

/// What opening a location needs besides the location: where to spool, the
/// registry clients of the run, and the settings for this side's registry.
pub struct Context<'a> {
    pub tmpdir: &'a Path,
    pub pool: &'a ClientPool,
    pub registry: &'a RegistrySettings,
}

/// Opens a location for reading.
pub fn open_source(loc: &Location, ctx: &Context) -> Result<Box<dyn ImageSource>> {
    let label = loc.label();
    let tmpdir = ctx.tmpdir;
    Ok(match loc {
        Location::DockerArchive { path, selector } => Box::new(DockerArchiveSource::open(
            path,
            selector.clone(),
            tmpdir,
            label,
        )?),
        Location::OciArchive { path, selector } => Box::new(OciArchiveSource::open(
            path,
            selector.clone(),
            tmpdir,
            label,
        )?),
        Location::Oci { path, selector } => {
            let root = PathBuf::from(path);
            match std::fs::metadata(&root) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::Format(format!(
                        "{label}: {path} is not a directory; for a tar use oci-archive:{path}"
                    )));
                }
                Err(_) => {
                    return Err(Error::NotFound(format!(
                        "{label}: no such directory {path}"
                    )));
                }
            }
            Box::new(LayoutSource::open(
                DirTree { root },
                selector.clone(),
                label,
            )?)
        }
        Location::Registry(r) => {
            let client = ctx.pool.get(&r.domain, ctx.registry)?;
            Box::new(RegistrySource::open(client, r.clone())?)
        }
    })
}

/// Opens a location for writing.
pub fn open_sink(
    loc: &Location,
    docker_format: DockerFormat,
    platform: Option<Platform>,
) -> Result<Box<dyn ImageSink>> {
    let label = loc.label();
    Ok(match loc {
        Location::DockerArchive { path, .. } => {
            let flavor = match docker_format {
                DockerFormat::Oci => Flavor::Docker,
                DockerFormat::Legacy => Flavor::DockerLegacy,
            };
            Box::new(ArchiveSink::create(path, flavor, platform, label)?)
        }
        Location::OciArchive { path, .. } => {
            Box::new(ArchiveSink::create(path, Flavor::Oci, platform, label)?)
        }
        Location::Oci { path, .. } => Box::new(LayoutSink::open(Path::new(path), label)?),
        Location::Registry(_) => {
            return Err(Error::Usage(format!(
                "{}: registry destinations are opened per repository",
                loc.label()
            )));
        }
    })
}

/// How a destination takes a source's images.
pub struct DestinationOptions<'a> {
    pub docker_format: DockerFormat,
    /// The one platform a docker archive lists, when a copy keeps one.
    pub platform: Option<Platform>,
    pub registry: &'a RegistrySettings,
    /// Registry sources keep their tag in a destination repository; other
    /// sources' images go each under its own path below it.
    pub source_is_registry: bool,
    /// What this run knows about which repository holds which blob.
    pub mounts: Arc<MountIndex>,
}

/// One sink and the images that go into it, each with its names there.
pub struct Placement {
    pub sink: Box<dyn ImageSink>,
    pub images: Vec<(SourceImage, Vec<ImageName>)>,
}

/// Opens a destination for `images` of the source described by
/// `source_label`: one placement for a local destination, one per
/// repository (in the order images name them) for a registry.
pub fn open_destination(
    dest: &Location,
    images: Vec<SourceImage>,
    source_label: &str,
    opts: &DestinationOptions,
    pool: &ClientPool,
) -> Result<Vec<Placement>> {
    let name = local_dest_name(dest)?;
    if let Location::Registry(r) = dest {
        let targets = registry_targets(r, &images, opts.source_is_registry, source_label)?;
        let mut groups: BTreeMap<String, Vec<(SourceImage, Vec<ImageName>)>> = BTreeMap::new();
        let mut order = Vec::new();
        for (image, (repo, names)) in images.into_iter().zip(targets) {
            if !groups.contains_key(&repo) {
                order.push(repo.clone());
            }
            groups.entry(repo).or_default().push((image, names));
        }
        let client = pool.get(&r.domain, opts.registry)?;
        return Ok(order
            .into_iter()
            .map(|repo| {
                let images = groups.remove(&repo).unwrap_or_default();
                Placement {
                    sink: Box::new(RegistrySink::new(client.clone(), repo, opts.mounts.clone())),
                    images,
                }
            })
            .collect());
    }
    if name.is_some() && images.len() > 1 {
        return Err(Error::Usage(format!(
            "{source_label} holds {} images but {} names one; select one with :NAME or :@N on the source",
            images.len(),
            dest.label()
        )));
    }
    let images = images
        .into_iter()
        .map(|image| {
            let names = match &name {
                Some(n) => vec![n.clone()],
                None => image.names.clone(),
            };
            (image, names)
        })
        .collect();
    let sink = open_sink(dest, opts.docker_format, opts.platform.clone())?;
    Ok(vec![Placement { sink, images }])
}

/// A registry destination that names a digest must receive that image.
pub fn check_destination_digest(dest: &Location, copied: Option<&Digest>) -> Result<()> {
    if let Location::Registry(r) = dest
        && let Some(d) = &r.digest
        && let Some(got) = copied
        && got != d
    {
        return Err(Error::Integrity(format!(
            "docker://{r}: the copied image is {got}, not the digest the destination names"
        )));
    }
    Ok(())
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
pub fn registry_targets(
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
