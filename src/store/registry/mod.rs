//! Registries: the whole OCI distribution protocol (formats reference §6)
//! with docker's authentication (§7) lives in this folder, and nothing
//! outside it builds a registry URL.
//!
//! - [`client`]: one registry host: endpoints, TLS, auth, retries, backoff.
//! - [`auth`]: `WWW-Authenticate` challenges and bearer tokens.
//! - [`credentials`]: where credentials come from and are stored.
//! - [`store`]: a repository as an image source and as a sink (manifests
//!   with one Accept list, blobs, uploads, mounts).
//! - [`tags`]: tag lists and the catalog, with `Link` pagination.
//!
//! The client is a thin layer over `reqwest`. One [`RegistryClient`] per registry host and set of settings,
//! shared by every source and sink of a run on that host, so one token
//! carries every scope the run needs (pull on a mount source, push on the
//! target) and one connection pool serves every request.

pub mod auth;
pub mod client;
pub mod credentials;
pub mod store;
pub mod tags;

#[cfg(test)]
mod grammar_tests;

pub use client::{ClientPool, RegistryClient, RegistrySettings};
pub use credentials::Credential;
pub use store::{MountIndex, RegistrySink, RegistrySource};
