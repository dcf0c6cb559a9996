//! OCI archives: a tar of an OCI layout (formats reference §4.4). Read in
//! place through the tar index; written by [`super::tar::writer`].

use std::path::Path;
use std::sync::Arc;

use super::layout::{LayoutSource, Selector};
use super::spool::{OpenedArchive, open_archive};
use super::tar::index::TarIndex;
use super::{BlobReader, ImageSource, SourceImage};
use crate::content::{Descriptor, Digest};
use crate::error::{Error, Result};

pub struct OciArchiveSource {
    layout: LayoutSource<Arc<TarIndex>>,
    _spool: OpenedArchive,
}

impl OciArchiveSource {
    pub fn open(
        path: &str,
        selector: Option<Selector>,
        tmpdir: &Path,
        label: String,
    ) -> Result<OciArchiveSource> {
        let opened = open_archive(path, tmpdir)?;
        let file = opened
            .file
            .try_clone()
            .map_err(|e| Error::io(format!("read {label}"), e))?;
        let tar = Arc::new(TarIndex::new(file, &label)?);
        let layout = LayoutSource::open(tar, selector, label)?;
        Ok(OciArchiveSource {
            layout,
            _spool: opened,
        })
    }
}

impl ImageSource for OciArchiveSource {
    fn describe(&self) -> String {
        self.layout.describe()
    }
    fn images(&self) -> Result<Vec<SourceImage>> {
        self.layout.images()
    }
    fn read_manifest(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        self.layout.read_manifest(desc)
    }
    fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader> {
        self.layout.open_blob(desc)
    }
    fn referrers(&self, subject: &Descriptor) -> Result<Vec<Descriptor>> {
        self.layout.referrers(subject)
    }
    fn digest_tags(&self, subject: &Digest) -> Result<Vec<(String, Descriptor)>> {
        self.layout.digest_tags(subject)
    }
    fn may_have_attached(&self, subject: &Digest) -> Option<bool> {
        self.layout.may_have_attached(subject)
    }
}
