//! The commands, as library calls: each opens stores from locations and
//! hands a plan to the engine. Nothing here prints; results are returned.

pub mod copy;
pub mod inspect;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::content::Platform;
use crate::error::{Error, Result};
use crate::location::Location;
use crate::store::docker_archive::DockerArchiveSource;
use crate::store::files::DirTree;
use crate::store::layout::{LayoutSink, LayoutSource};
use crate::store::oci_archive::OciArchiveSource;
use crate::store::tar_writer::{ArchiveSink, Flavor};
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

fn registry_not_yet(loc: &Location) -> Error {
    Error::Unsupported(format!(
        "{}: the registry transport is not supported yet; use docker-archive:, oci: or oci-archive:",
        loc.label()
    ))
}

/// Opens a location for reading.
pub fn open_source(loc: &Location, tmpdir: &Path) -> Result<Box<dyn ImageSource>> {
    let label = loc.label();
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
        Location::Registry(_) => return Err(registry_not_yet(loc)),
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
        Location::Registry(_) => return Err(registry_not_yet(loc)),
    })
}
