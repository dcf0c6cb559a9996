//! The content model: digests, descriptors, media types, manifests,
//! platforms and references. Nothing here does I/O.
//!
//! Manifests, indexes and configs are always kept as the exact bytes that
//! were read ([`RawManifest`]); the parsed views here exist to walk the graph
//! and are never serialised back in place of those bytes (image-spec
//! descriptor.md, "Digests"; distribution-spec "Pushing Manifests").

pub mod config;
pub mod descriptor;
pub mod digest;
pub mod manifest;
pub mod media_type;
pub mod platform;
pub mod reference;
pub mod referrers;

#[cfg(test)]
mod grammar_tests;

pub use descriptor::Descriptor;
pub use digest::{Digest, DigestHasher};
pub use manifest::{ManifestKind, ManifestView, RawManifest};
pub use platform::Platform;
pub use reference::Reference;

/// Largest manifest, index or config accepted or produced (registries use
/// the same limit).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Most descriptors one image's graph may list, counting an index entry or
/// a layer each time a distinct manifest lists it. Indexes that repeat
/// their children level after level describe an exponential tree in a few
/// kilobytes; walkers visit each distinct manifest once and stop here.
pub const MAX_GRAPH_NODES: usize = 100_000;
