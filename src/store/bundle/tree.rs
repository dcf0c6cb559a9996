//! A bundle's files as one layout tree: the metadata volume's entries, and
//! each blob from the volume (or the parts across volumes) that holds it.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::sync::Arc;

use crate::content::Digest;
use crate::error::{Error, Result};
use crate::store::BlobReader;
use crate::store::files::FileTree;
use crate::store::tar::index::TarIndex;

/// Where a blob's bytes are: entries of volumes, in order.
pub(super) type Place = Vec<(u32, String, u64)>;

/// The files of a bundle as a layout tree.
pub struct BundleTree {
    pub(super) label: String,
    pub(super) meta: Arc<TarIndex>,
    pub(super) volumes: BTreeMap<u32, Arc<TarIndex>>,
    pub(super) places: HashMap<Digest, Place>,
}

impl FileTree for BundleTree {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn open(&self, rel: &str) -> Result<Option<(BlobReader, u64)>> {
        let Some(hex) = rel.strip_prefix("blobs/") else {
            return FileTree::open(&self.meta, rel);
        };
        let Some(digest) = hex
            .split_once('/')
            .and_then(|(alg, h)| Digest::parse(&format!("{alg}:{h}")).ok())
        else {
            return Ok(None);
        };
        let Some(place) = self.places.get(&digest) else {
            return Ok(None);
        };
        let total = place.iter().map(|(_, _, s)| s).sum();
        let mut parts = Vec::new();
        for (volume, entry, _) in place {
            let tar = self.volumes.get(volume).ok_or_else(|| {
                Error::NotFound(format!(
                    "{}: blob {digest} is in volume {volume}, which was not given",
                    self.label
                ))
            })?;
            let (r, _) = TarIndex::open(tar, entry)?.ok_or_else(|| {
                Error::Integrity(format!(
                    "{}: blob {digest} is not in it (the volume is corrupt)",
                    tar.describe()
                ))
            })?;
            parts.push(r);
        }
        if parts.len() == 1
            && let Some(r) = parts.pop()
        {
            return Ok(Some((Box::new(r), total)));
        }
        Ok(Some((
            Box::new(Chain {
                parts: parts.into(),
            }),
            total,
        )))
    }

    fn read_small(&self, rel: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let Some((r, size)) = FileTree::open(self, rel)? else {
            return Ok(None);
        };
        if size > cap {
            return Err(Error::Format(format!(
                "{}: {rel} is {size} bytes, over the {cap}-byte limit",
                self.label
            )));
        }
        let mut buf = Vec::with_capacity(size as usize);
        r.take(cap.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(format!("read {rel} in {}", self.label), e))?;
        Ok(Some(buf))
    }
}

/// Parts of a blob read one after another.
struct Chain<R> {
    parts: std::collections::VecDeque<R>,
}

impl<R: Read> Read for Chain<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(p) = self.parts.front_mut() {
            let n = p.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.parts.pop_front();
        }
        Ok(0)
    }
}
