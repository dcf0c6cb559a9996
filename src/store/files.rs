//! Read access to the files of an OCI layout, wherever they are: a
//! directory (`oci:`), or entries of a tar (`oci-archive:`, the OCI half of
//! a Docker 25+ `docker save`).

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use super::BlobReader;
use super::tar::index::TarIndex;
use crate::error::{Error, Result};

pub trait FileTree: Send + Sync {
    fn describe(&self) -> String;
    /// Opens a file by its path relative to the layout root.
    fn open(&self, rel: &str) -> Result<Option<(BlobReader, u64)>>;
    /// Reads a small file whole, refusing anything over `cap` bytes.
    fn read_small(&self, rel: &str, cap: u64) -> Result<Option<Vec<u8>>>;
}

pub struct DirTree {
    pub root: PathBuf,
}

impl FileTree for DirTree {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn open(&self, rel: &str) -> Result<Option<(BlobReader, u64)>> {
        let path = self.root.join(rel);
        match File::open(&path) {
            Ok(f) => {
                let len = f
                    .metadata()
                    .map_err(|e| Error::path("read", &path, e))?
                    .len();
                Ok(Some((Box::new(f), len)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::path("open", &path, e)),
        }
    }

    fn read_small(&self, rel: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let Some((r, len)) = self.open(rel)? else {
            return Ok(None);
        };
        if len > cap {
            return Err(Error::Format(format!(
                "{}/{rel} is {len} bytes, over the {cap}-byte limit",
                self.root.display()
            )));
        }
        let mut buf = Vec::with_capacity(len as usize);
        r.take(cap.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| Error::path("read", &self.root.join(rel), e))?;
        Ok(Some(buf))
    }
}

impl FileTree for TarIndex {
    fn describe(&self) -> String {
        TarIndex::describe(self).to_string()
    }

    fn open(&self, rel: &str) -> Result<Option<(BlobReader, u64)>> {
        Ok(TarIndex::open(self, rel)?.map(|(r, len)| (Box::new(r) as BlobReader, len)))
    }

    fn read_small(&self, rel: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        TarIndex::read_small(self, rel, cap)
    }
}

impl<T: FileTree + ?Sized> FileTree for std::sync::Arc<T> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn open(&self, rel: &str) -> Result<Option<(BlobReader, u64)>> {
        (**self).open(rel)
    }
    fn read_small(&self, rel: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        (**self).read_small(rel, cap)
    }
}
