//! Manifests over the wire (formats reference §6.2): one `Accept` list of
//! every manifest type this crate reads, fetched whole under a size cap and
//! read again after a transient failure, and the `HEAD` that tells whether
//! (and as which digest) a repository has a tag or digest.

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use super::client::RegistryClient;
use super::failure::error_chain;
use super::retry::{Retry, sleep_backoff};
use super::transport::{BodyError, Response};
use crate::content::{Digest, MAX_MANIFEST_BYTES};
use crate::error::{Error, Result};

/// Every manifest type, for `Accept`: a registry would otherwise convert
/// an index or OCI manifest to an old docker schema, or refuse.
pub(super) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

fn media_type_of(r: &Response) -> Option<String> {
    let ct = r.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    let mt = ct.split(';').next()?.trim();
    (!mt.is_empty() && mt != "application/json" && mt != "text/plain").then(|| mt.to_string())
}

pub(super) fn read_capped(r: Response, cap: u64, what: &str) -> Result<Vec<u8>> {
    r.read_capped(cap).map_err(|e| match e {
        BodyError::TooLarge(cap) => {
            Error::Format(format!("{what}: manifest is over the {cap}-byte limit"))
        }
        BodyError::Read(e) => Error::Network(format!("{what}: {}", error_chain(&e))),
    })
}

/// A small document (manifest, config) fetched whole: the response and its
/// body are read again after a transient failure, the body too.
pub(super) struct Small {
    pub bytes: Vec<u8>,
    pub digest_header: Option<Digest>,
    pub media_type: Option<String>,
}

pub(super) fn get_small(client: &RegistryClient, what: &str, path: &str) -> Result<Small> {
    let mut attempt = 0;
    loop {
        let result = (|| {
            let r = client.send(what, Retry::Yes, |http, base| {
                http.get(format!("{base}{path}"))
                    .header(ACCEPT, MANIFEST_ACCEPT)
            })?;
            if !r.status().is_success() {
                return Err(client.failure(what, r));
            }
            let digest_header = digest_header(&r);
            let media_type = media_type_of(&r);
            let bytes = read_capped(
                r,
                MAX_MANIFEST_BYTES,
                &format!("{what} on {}", client.host()),
            )?;
            Ok(Small {
                bytes,
                digest_header,
                media_type,
            })
        })();
        match result {
            Err(e) if e.class().is_transient() && attempt < client.retry_times() => {
                sleep_backoff(attempt, None);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The digest a registry gives in `Docker-Content-Digest`, if valid.
pub(super) fn digest_header(r: &Response) -> Option<Digest> {
    r.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v).ok())
}

/// What a manifest `HEAD` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestHead {
    /// The repository has no manifest by that tag or digest.
    Absent,
    /// It has one, with the digest the registry said, if it said one.
    Present(Option<Digest>),
}

impl RegistryClient {
    /// `HEAD` of the manifest `reference` (a tag or a digest) in `repo`.
    pub fn head_manifest(&self, repo: &str, reference: &str) -> Result<ManifestHead> {
        let what = format!("HEAD manifest {repo}:{reference}");
        let r = self.send(&what, Retry::Yes, |http, base| {
            http.head(format!("{base}/v2/{repo}/manifests/{reference}"))
                .header(ACCEPT, MANIFEST_ACCEPT)
        })?;
        match r.status() {
            StatusCode::NOT_FOUND => Ok(ManifestHead::Absent),
            s if s.is_success() => Ok(ManifestHead::Present(digest_header(&r))),
            _ => Err(self.failure(&what, r)),
        }
    }
}
