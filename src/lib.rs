//! imgsync: move container images between `docker save` archives, OCI image
//! layouts, OCI archives and (later) registries.
//!
//! An image is a small graph of content-addressed blobs; every place an image
//! lives is a store that hands out or takes in blobs and manifests by digest.
//! Copying is one walk over that graph between two stores (see [`copy`]).
//!
//! Layers, from the bottom up:
//! - [`content`]: the content model (digests, descriptors, manifests,
//!   platforms, references). No I/O.
//! - [`store`]: the store traits and the local transports.
//! - [`copy`]: the engine that walks an image graph from a source to a sink.
//! - [`commands`]: `copy`, `inspect`, `verify` as library calls.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod commands;
pub mod content;
pub mod copy;
pub mod error;
pub mod location;
pub mod progress;
pub mod registry;
pub mod store;
pub mod sync;

pub use error::{Error, ErrorClass, Result};
