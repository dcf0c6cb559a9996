//! The commands, as library calls: each opens stores from locations and
//! hands a plan to the engine. Nothing here prints; results are returned.

pub mod bundle;
pub mod copy;
pub mod inspect;
pub mod login;
pub mod sync;
pub mod tags;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::content::Platform;
use crate::error::{Error, Result};
use crate::store::docker_archive::DockerArchiveSource;
use crate::store::files::DirTree;
use crate::store::layout::{LayoutSink, LayoutSource};
use crate::store::location::Location;
use crate::store::oci_archive::OciArchiveSource;
use crate::store::registry::RegistrySource;
use crate::store::registry::{ClientPool, RegistrySettings};
use crate::store::tar::writer::{ArchiveSink, Flavor};
use crate::store::{ImageSink, ImageSource};

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
