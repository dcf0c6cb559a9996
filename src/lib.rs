//! imgsync: move container images between `docker save` archives, OCI image
//! layouts, OCI archives and registries.
//!
//! An image is a small graph of content-addressed blobs; every place an image
//! lives is a store that hands out or takes in blobs and manifests by digest.
//! Copying is one walk over that graph between two stores (see [`engine`]).
//!
//! Layers, from the bottom up; a layer uses only those below it:
//! - [`content`]: the content model (digests, descriptors, manifests,
//!   platforms, references). No I/O.
//! - [`store`]: the store traits and every transport behind them (layouts,
//!   archives, bundles, registries), and the one place that opens a
//!   [`store::location::Location`].
//! - [`engine`]: the walk of an image graph from a source to a sink:
//!   planning, transfer, verification, conversion, codecs, the worker pool
//!   and progress events.
//! - [`commands`]: one module per verb, plain functions over options and a
//!   progress sink. A verb calls the engine and the stores, never another
//!   verb.
//!
//! - [`fuzz`]: every parser of outside input, as fuzz entry points (on top
//!   of the library, beside `commands`).
//!
//! The binary adds `cli` on top: argument parsing and the only printer.
//! [`error`] is shared by every layer.
#![forbid(unsafe_code)]
// No panic reachable from input: outside data is read with checks, and
// what stays unchecked says why it is safe (`#[allow(..., reason)]`).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod commands;
pub mod content;
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod store;

pub use error::{Error, ErrorClass, Result};
