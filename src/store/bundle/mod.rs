//! Bundles for air-gapped transfer: many images in one deduplicated tar
//! (or volumes of it) that is an OCI layout, a docker archive and an
//! imgsync bundle at once; incremental against earlier bundles.
//!
//! - [`write`]: the sink `imgsync save` writes into.
//! - [`read`]: the source `imgsync load` and `imgsync verify` read from:
//!   volumes in any order, indexed once and read in place.
//! - `commit`: what the bundle says about itself, written at commit, and
//!   its volumes published.
//! - [`manifest`]: the bundle manifest and the volume listings.
//! - `tree`: a bundle's files (volumes, split blobs) as one layout tree.

mod commit;
pub mod manifest;
pub mod read;
mod tree;
pub mod write;

pub use manifest::BundleManifest;
pub use read::Bundle;
pub use write::{BundleOptions, BundleSink};
