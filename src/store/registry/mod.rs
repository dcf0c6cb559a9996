//! Registries: the whole OCI distribution protocol (formats reference §6)
//! with docker's authentication (§7) lives in this folder, and nothing
//! outside it builds a registry URL.
//!
//! - [`client`]: one registry host: endpoint discovery, the request loop
//!   with authentication and retries, the quota reserve.
//! - [`concurrency`]: requests in flight, an AIMD limit under a ceiling.
//! - [`pacing`]: a token bucket for `requests-per-second`, and the pause a
//!   `Retry-After` asks of every request.
//! - [`quota`]: the rate-limit headers (Docker Hub's and the IETF draft's)
//!   and which requests count against a quota.
//! - [`tls`]: what a registry's connections trust and present.
//! - [`transport`]: the HTTP runtime, responses read synchronously,
//!   streamed request bodies, the debug log of each request.
//! - [`retry`]: which failures are transient, backoff, `Retry-After`.
//! - [`failure`]: typed failures: distribution error codes, TLS failures.
//! - [`auth`]: `WWW-Authenticate` challenges and bearer tokens;
//!   [`scopes`] the token scopes each request needs.
//! - [`credentials`]: where credentials come from and are stored.
//! - [`manifest`]: manifests with one Accept list; the manifest `HEAD`.
//! - [`source`]: a repository as an image source.
//! - [`sink`]: a repository as a sink; [`upload`] its blob uploads and
//!   [`mount`] the blobs it can mount rather than upload.
//! - [`tags`]: tag lists and the catalog, with `Link` pagination.
//! - [`referrers`]: the referrers API and the referrers tag schema.
//!
//! The client is a thin layer over `reqwest`. One [`RegistryClient`] per
//! registry host and set of settings, shared by every source and sink of a
//! run on that host: one connection pool serves every request, and tokens
//! are kept per set of repositories a request works on (pull on a mount
//! source and push on the target in one token), each fetched once.

pub mod auth;
pub mod client;
mod concurrency;
pub mod credentials;
mod endpoint;
mod failure;
mod manifest;
mod mount;
mod pacing;
pub mod quota;
mod quota_gate;
mod referrers;
mod retry;
mod scopes;
mod sink;
mod source;
pub mod tags;
mod tls;
mod transport;
mod upload;

#[cfg(test)]
mod grammar_tests;

pub use client::{ClientPool, RegistryClient, RegistrySettings};
pub use credentials::Credential;
pub use manifest::ManifestHead;
pub use mount::MountIndex;
pub use pacing::MAX_REQUESTS_PER_SECOND;
pub use quota::QuotaReading;
pub use retry::sleep_backoff;
pub use sink::RegistrySink;
pub use source::RegistrySource;
