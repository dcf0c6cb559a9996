//! Bundles for air-gapped transfer: many images in one deduplicated tar
//! (or volumes of it) that is an OCI layout, a docker archive and an
//! imgsync bundle at once; incremental against earlier bundles.
//!
//! - [`write`]: the sink `imgsync save` writes into.
//! - [`read`]: the source `imgsync load` and `imgsync verify` read from:
//!   volumes in any order, indexed once and read in place.
//! - [`manifest`]: the bundle manifest and the volume listings.

pub mod manifest;
pub mod read;
pub mod write;

#[cfg(test)]
mod tests;

pub use manifest::BundleManifest;
pub use read::Bundle;
pub use write::{BundleOptions, BundleSink};
