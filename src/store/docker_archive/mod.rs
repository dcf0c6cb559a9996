//! `docker save` archives (formats reference §2, §3): the legacy v1.2 shape,
//! the Docker 25+ shape (OCI layout plus `manifest.json`), and the
//! crane/ggcr flavour. Reading is in [`read`]; the archive itself is written
//! by [`crate::store::tar::writer`], with the Docker metadata from [`write`].

pub mod read;
pub mod write;

pub use read::DockerArchiveSource;
