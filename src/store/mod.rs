//! Stores: the places images live, seen through two traits.
//!
//! An [`ImageSource`] lists the images it holds and hands out manifests and
//! blobs by descriptor; an [`ImageSink`] answers whether it has a blob, takes
//! blobs and manifests, records names, and commits. Sources do not verify
//! what they hand out: the copy engine does, for every source alike.
//! Capabilities ([`SinkCaps`]) tell the engine what conversions a sink needs.
//!
//! No store knows about another store.

use std::io::Read;
use std::path::Path;

use crate::content::{Descriptor, Digest, RawManifest, Reference};
use crate::error::Result;

pub mod atomic_file;
pub mod bundle;
pub mod cleanup;
pub mod docker_archive;
pub mod fanout;
pub mod files;
pub mod io;
pub mod layout;
pub mod location;
pub mod memory;
pub mod null;
pub mod oci_archive;
pub mod open;
pub mod registry;
pub mod spool;
pub mod tar;
#[cfg(test)]
pub(crate) mod test_images;

pub type BlobReader = Box<dyn Read + Send>;

/// A name an image is known by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageName {
    /// A full, tagged reference (`docker.io/library/busybox:latest`).
    Reference(Reference),
    /// An OCI layout ref name that is not a reference (`latest`, `v1.0`).
    RefName(String),
}

impl ImageName {
    /// The full reference, when the name has one. A ref name counts when it
    /// reads as one (`busybox:1`, `localhost:5000/a:b`), not a bare tag.
    pub fn reference(&self) -> Option<Reference> {
        match self {
            ImageName::Reference(r) => Some(r.clone()),
            ImageName::RefName(s) if s.contains(['/', ':']) => {
                Reference::parse(s).ok().map(Reference::with_default_tag)
            }
            ImageName::RefName(_) => None,
        }
    }

    /// Is it a digest tag (`sha256-<hex>.sig`), bare or in a full
    /// reference? Such a name travels with the manifest the tag names.
    pub fn is_digest_tag(&self) -> bool {
        let tag = match self.reference() {
            Some(r) => r.tag,
            None => Some(self.to_string()),
        };
        tag.is_some_and(|t| crate::content::referrers::digest_tag_subject(&t).is_some())
    }
}

impl std::fmt::Display for ImageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageName::Reference(r) => write!(f, "{r}"),
            ImageName::RefName(s) => f.write_str(s),
        }
    }
}

/// One image of a source: its root (manifest or index) and its names.
#[derive(Debug, Clone)]
pub struct SourceImage {
    pub root: Descriptor,
    pub names: Vec<ImageName>,
    /// The root manifest was built by the source (a docker archive without
    /// an OCI manifest for it), not read.
    pub synthesized: bool,
}

impl SourceImage {
    /// A label for messages: the first name, else the digest.
    pub fn label(&self) -> String {
        match self.names.first() {
            Some(n) => n.to_string(),
            None => self.root.digest.to_string(),
        }
    }
}

pub trait ImageSource: Send + Sync {
    /// What this source is, for messages (`docker-archive:app.tar`).
    fn describe(&self) -> String;
    /// The images selected by the location, in a stable order.
    fn images(&self) -> Result<Vec<SourceImage>>;
    /// The bytes of a manifest, index or config, as stored (unverified).
    fn read_manifest(&self, desc: &Descriptor) -> Result<Vec<u8>>;
    /// A stream of a blob's bytes, as stored (unverified).
    fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader>;
    /// `(registry host, repository)` when the source is a registry
    /// repository, so a sink on the same registry can mount its blobs.
    fn registry_repo(&self) -> Option<(String, String)> {
        None
    }
    /// Manifests whose `subject` names `subject` (OCI 1.1 referrers), as
    /// the source lists them (unverified).
    fn referrers(&self, _subject: &Descriptor) -> Result<Vec<Descriptor>> {
        Ok(Vec::new())
    }
    /// The digest tags of `subject` (`sha256-<hex>.sig`, `.att`, `.sbom`,
    /// any `<alg>-<hex>.<suffix>`), each with the manifest it names.
    fn digest_tags(&self, _subject: &Digest) -> Result<Vec<(String, Descriptor)>> {
        Ok(Vec::new())
    }
    /// Whether something may be attached to `subject`, when the source can
    /// tell cheaply (a tag list, listed once, shows a fallback or digest
    /// tag of it); `None` when it cannot tell. The engine asks only about
    /// images the destination already holds, and looks further only on
    /// `Some(true)`: the referrers API is asked about copied manifests.
    fn may_have_attached(&self, _subject: &Digest) -> Option<bool> {
        None
    }
    /// The listing the source keeps of `subject`'s referrers (a registry's
    /// fallback tag index): its digest and entries, when it has one.
    fn referrers_listing(&self, _subject: &Digest) -> Result<Option<(Digest, Vec<Descriptor>)>> {
        Ok(None)
    }
}

/// What a sink can hold; the engine plans conversions from it.
#[derive(Debug, Clone, Copy)]
pub struct SinkCaps {
    /// Layers must be uncompressed tars (legacy docker archives).
    pub wants_uncompressed: bool,
    /// Only one platform per image (legacy docker archives).
    pub single_platform: bool,
    /// zstd layers can be stored as they are.
    pub accepts_zstd: bool,
    /// Only container images, no artifacts (docker archives).
    pub images_only: bool,
    /// Every layer's bytes must be stored, foreign layers too (docker
    /// archives: `docker load` reads them).
    pub needs_layer_bytes: bool,
    /// Uncompressed layers of images their source built (a docker archive
    /// without OCI manifests: no digest to keep) are gzip-compressed on the
    /// way in (registries: fewer bytes over the network), unless the user
    /// chose otherwise.
    pub compress_layers: bool,
    /// A registry: blobs are checked there by digest, and every client that
    /// pulls them checks DiffIDs as it unpacks.
    pub remote: bool,
    /// Takes blobs whose digest is known only once they are written
    /// (recompressed layers) as a stream, with
    /// [`ImageSink::put_blob_produced`], instead of from a spool file.
    pub streams_produced_blobs: bool,
    /// A blob whose transfer failed may be put again (not so in a tar,
    /// whose space for it is already taken).
    pub retry_blobs: bool,
    /// Holds referrers and digest tags (not so a docker archive).
    pub holds_referrers: bool,
}

impl SinkCaps {
    /// A sink that holds anything as it is (a layout): every conversion
    /// flag off, zstd accepted, failed blobs retried.
    pub const ANY: SinkCaps = SinkCaps {
        wants_uncompressed: false,
        single_platform: false,
        accepts_zstd: true,
        images_only: false,
        needs_layer_bytes: false,
        streams_produced_blobs: false,
        remote: false,
        compress_layers: false,
        retry_blobs: true,
        holds_referrers: true,
    };
}

pub trait ImageSink: Send + Sync {
    fn describe(&self) -> String;
    fn caps(&self) -> SinkCaps;
    /// Does the sink already hold this blob (or has this run written it)?
    fn has_blob(&self, desc: &Descriptor) -> Result<bool>;
    /// Does the sink hold this config? The engine reads every config up
    /// to the manifest size limit to plan a copy, so a sink whose content
    /// must be planned on its own (a bundle that leaves other blobs to
    /// earlier bundles) answers for configs apart.
    fn has_config(&self, desc: &Descriptor) -> Result<bool> {
        self.has_blob(desc)
    }
    /// Does the destination already hold this image under all these names
    /// (a registry whose tags point at this digest, or at a manifest of the
    /// same `config`, which pins every layer's DiffID)? Lets a repeated copy
    /// skip the image without looking at its blobs.
    fn has_image(
        &self,
        _root: &Descriptor,
        _config: Option<&Digest>,
        _names: &[ImageName],
    ) -> Result<bool> {
        Ok(false)
    }
    /// Makes a blob available without moving its bytes (a cross-repository
    /// mount on a registry), from the source's repository or one this run
    /// already wrote to. `Ok(false)` when it cannot.
    fn mount_blob(&self, _desc: &Descriptor, _from: Option<&(String, String)>) -> Result<bool> {
        Ok(false)
    }
    /// The engine will not store a blob it asked to mount (its source could
    /// not be read): whatever the sink set aside for it is let go.
    fn blob_abandoned(&self, _desc: &Descriptor) {}
    /// Stores a blob. `reader` yields exactly the descriptor's bytes or fails
    /// with an error; on error nothing of the blob may remain visible.
    fn put_blob(&self, desc: &Descriptor, reader: &mut dyn Read) -> Result<()>;
    /// A directory on the sink's file system where the engine may spool a
    /// transcoded blob, so that [`ImageSink::put_blob_file`] can rename it.
    fn spool_dir(&self) -> Option<&Path> {
        None
    }
    /// Stores a blob that the engine has already written and verified to a
    /// temporary file.
    fn put_blob_file(&self, desc: &Descriptor, file: tempfile::NamedTempFile) -> Result<()> {
        let mut f = file
            .reopen()
            .map_err(|e| crate::Error::path("read", file.path(), e))?;
        self.put_blob(desc, &mut f)
    }
    /// Stores a blob while `produce` writes it, computing its digest and
    /// size on the way (sinks with `streams_produced_blobs`).
    fn put_blob_produced(
        &self,
        what: &str,
        _produce: &mut dyn FnMut(&mut dyn std::io::Write) -> Result<()>,
    ) -> Result<(Digest, u64)> {
        Err(crate::Error::Unsupported(format!(
            "{what}: {} takes no streamed blobs",
            self.describe()
        )))
    }
    /// Stores a manifest or index, exact bytes.
    fn put_manifest(&self, manifest: &RawManifest) -> Result<()>;
    /// Names an image whose root was put before.
    fn add_image(&self, root: &Descriptor, names: &[ImageName]) -> Result<()>;
    /// Records that `referrer` (put before; its descriptor carries its
    /// artifact type and annotations) refers to `subject`, so that a reader
    /// of the sink finds it again from its subject.
    fn add_referrer(&self, referrer: &Descriptor, _subject: &Descriptor) -> Result<()> {
        Err(crate::Error::Unsupported(format!(
            "{}: cannot hold referrer {}",
            self.describe(),
            referrer.digest
        )))
    }
    /// The digest of the listing the sink keeps of `subject`'s referrers
    /// (a registry's fallback tag), when it keeps one. Equal to the
    /// source's, the destination lists exactly what the source lists.
    fn referrers_listing_digest(&self, _subject: &Digest) -> Result<Option<Digest>> {
        Ok(None)
    }
    /// Makes everything visible at the destination, atomically where the
    /// destination is one file or one index.
    fn commit(&self) -> Result<()>;
    /// Drops everything not committed (temporary files).
    fn abort(&self) {}
}
