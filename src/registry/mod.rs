//! The registry client: a thin layer over `reqwest` speaking the OCI
//! distribution API (formats reference §6) with docker's authentication
//! (§7). One [`RegistryClient`] per registry host and set of settings,
//! shared by every source and sink of a run on that host, so one token
//! carries every scope the run needs (pull on a mount source, push on the
//! target) and one connection pool serves every request.

pub mod auth;
pub mod client;
pub mod credentials;

#[cfg(test)]
mod grammar_tests;

pub use client::{ClientPool, RegistryClient, RegistrySettings};
pub use credentials::Credential;
