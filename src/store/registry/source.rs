//! A registry repository as an image source (formats reference §6): the
//! root manifest is fetched once and checked against its digest and
//! `Docker-Content-Digest`; configs and layers stream from
//! `GET /blobs/<digest>` (redirects followed without credentials to another
//! host), and an interrupted download resumes with `Range` from where it
//! stopped.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex, OnceLock};

use reqwest::StatusCode;
use reqwest::header::RANGE;

use super::client::RegistryClient;
use super::failure::error_chain;
use super::manifest::{Small, get_small};
use super::retry::{Retry, sleep_backoff};
use super::transport::Response;
use crate::content::manifest::is_manifest_media_type;
use crate::content::referrers::{fallback_tag, is_digest_tag_of};
use crate::content::{Descriptor, Digest, ManifestView, Reference};
use crate::error::{Error, Result};
use crate::store::{BlobReader, ImageName, ImageSource, SourceImage};

/// A repository as a source: one image, by tag or digest.
pub struct RegistrySource {
    client: Arc<RegistryClient>,
    reference: Reference,
    root: Descriptor,
    cache: Mutex<HashMap<Digest, Vec<u8>>>,
    /// The repository's tags, once listed (or given by the caller).
    tags: OnceLock<std::result::Result<Arc<Vec<String>>, String>>,
}

impl RegistrySource {
    pub fn open(client: Arc<RegistryClient>, reference: Reference) -> Result<RegistrySource> {
        client.add_scope(format!("repository:{}:pull", reference.path));
        let reference = if reference.digest.is_none() {
            reference.with_default_tag()
        } else {
            reference
        };
        let tag_or_digest = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => unreachable!("a default tag was set"),
        };
        let what = format!("GET manifest {}:{tag_or_digest}", reference.path);
        let path = format!("/v2/{}/manifests/{tag_or_digest}", reference.path);
        let Small {
            bytes,
            digest_header: header_digest,
            media_type,
        } = get_small(&client, &what, &path)?;
        let digest = match &reference.digest {
            Some(d) => {
                let mut h = d.hasher()?;
                h.update(&bytes);
                if &h.finish() != d {
                    return Err(Error::Integrity(format!(
                        "{reference}: the registry sent a manifest that does not match {d}"
                    )));
                }
                d.clone()
            }
            None => Digest::sha256_of(&bytes),
        };
        if let Some(h) = header_digest
            && h.algorithm() == "sha256"
            && h != digest
        {
            return Err(Error::Integrity(format!(
                "{reference}: the registry says the manifest is {h}, but its bytes hash to {digest}"
            )));
        }
        let media_type = match media_type.filter(|m| is_manifest_media_type(m)) {
            Some(m) => m,
            None => {
                let view = ManifestView::parse(&bytes, None)
                    .map_err(|e| Error::Format(format!("{reference}: {e}")))?;
                view.media_type
                    .unwrap_or_else(|| view.kind.media_type().to_string())
            }
        };
        let root = Descriptor::new(media_type, digest.clone(), bytes.len() as u64);
        let mut cache = HashMap::new();
        cache.insert(digest, bytes);
        Ok(RegistrySource {
            client,
            reference,
            root,
            cache: Mutex::new(cache),
            tags: OnceLock::new(),
        })
    }

    /// Gives the source the repository's tag list the caller already has,
    /// so that finding fallback and digest tags costs no request.
    pub fn with_tags(self, tags: Arc<Vec<String>>) -> RegistrySource {
        let _ = self.tags.set(Ok(tags));
        self
    }

    /// The repository's tags, listed once.
    fn tags(&self) -> Result<Arc<Vec<String>>> {
        self.tags
            .get_or_init(|| {
                super::tags::list_tags(&self.client, &self.reference.path)
                    .map(|t| Arc::new(t.valid))
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::Network)
    }

    /// Remembers a manifest read by tag, so the copy reads it only once.
    fn remember(&self, digest: &Digest, bytes: Vec<u8>) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.clone(), bytes);
    }

    fn blob_url_path(&self, desc: &Descriptor) -> String {
        format!("/v2/{}/blobs/{}", self.reference.path, desc.digest)
    }
}

impl ImageSource for RegistrySource {
    fn describe(&self) -> String {
        format!("docker://{}", self.reference)
    }

    fn images(&self) -> Result<Vec<SourceImage>> {
        let names = if self.reference.tag.is_some() {
            let mut r = self.reference.clone();
            r.digest = None;
            vec![ImageName::Reference(r)]
        } else {
            vec![]
        };
        Ok(vec![SourceImage {
            root: self.root.clone(),
            names,
            synthesized: false,
        }])
    }

    fn read_manifest(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        if let Some(b) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&desc.digest)
        {
            return Ok(b.clone());
        }
        let is_manifest = is_manifest_media_type(&desc.media_type) || desc.media_type.is_empty();
        let path = if is_manifest {
            format!("/v2/{}/manifests/{}", self.reference.path, desc.digest)
        } else {
            self.blob_url_path(desc)
        };
        let what = format!("GET {}", path.trim_start_matches("/v2/"));
        let bytes = get_small(&self.client, &what, &path)?.bytes;
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(desc.digest.clone(), bytes.clone());
        Ok(bytes)
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader> {
        let reader = ResumingBlob {
            client: self.client.clone(),
            path: self.blob_url_path(desc),
            size: desc.size,
            offset: 0,
            body: None,
            resumes: 0,
        };
        let mut reader = reader;
        reader.connect()?;
        Ok(Box::new(reader))
    }

    fn registry_repo(&self) -> Option<(String, String)> {
        Some((self.client.host().to_string(), self.reference.path.clone()))
    }

    fn referrers(&self, subject: &Descriptor) -> Result<Vec<Descriptor>> {
        let repo = &self.reference.path;
        if let Some(list) = self.client.list_referrers(repo, &subject.digest)? {
            return Ok(list);
        }
        // The referrers tag schema. The tag list (listed once, and needed
        // for digest tags anyway) says whether the tag exists: one request
        // for every subject of the repository, not one per subject.
        let tag = fallback_tag(&subject.digest);
        if !self.tags()?.contains(&tag) {
            return Ok(Vec::new());
        }
        Ok(self
            .client
            .fallback_referrers(repo, &tag)?
            .unwrap_or_default())
    }

    fn digest_tags(&self, subject: &Digest) -> Result<Vec<(String, Descriptor)>> {
        let tags = self.tags()?;
        let mut out = Vec::new();
        for tag in tags.iter().filter(|t| is_digest_tag_of(t, subject)) {
            let Some((bytes, digest)) = self.client.get_tagged(&self.reference.path, tag)? else {
                // Deleted since the listing.
                continue;
            };
            let view = ManifestView::parse(&bytes, None)
                .map_err(|e| Error::Format(format!("{}: tag {tag}: {e}", self.describe())))?;
            let media_type = view
                .media_type
                .unwrap_or_else(|| view.kind.media_type().to_string());
            let desc = Descriptor::new(media_type, digest.clone(), bytes.len() as u64);
            self.remember(&digest, bytes);
            out.push((tag.clone(), desc));
        }
        Ok(out)
    }

    fn referrers_listing(&self, subject: &Digest) -> Result<Option<(Digest, Vec<Descriptor>)>> {
        if self.client.referrers_api() != Some(false) {
            return Ok(None);
        }
        let tag = fallback_tag(subject);
        if !self.tags()?.contains(&tag) {
            return Ok(None);
        }
        let Some((bytes, digest)) = self.client.get_tagged(&self.reference.path, &tag)? else {
            return Ok(None);
        };
        let view = ManifestView::parse(&bytes, None)
            .map_err(|e| Error::Format(format!("{}: tag {tag}: {e}", self.describe())))?;
        Ok(view.kind.is_index().then_some((digest, view.manifests)))
    }

    fn may_have_attached(&self, subject: &Digest) -> Option<bool> {
        // One tag list per repository (none when the caller gave it) shows
        // new fallback and digest tags of an image already mirrored.
        let tags = self.tags().ok()?;
        let fallback = fallback_tag(subject);
        Some(
            tags.iter().any(|t| {
                t == &fallback || (t.starts_with(&fallback) && is_digest_tag_of(t, subject))
            }),
        )
    }
}

/// A blob download that picks up where it stopped when the connection
/// breaks, with `Range: bytes=N-`.
struct ResumingBlob {
    client: Arc<RegistryClient>,
    path: String,
    size: u64,
    offset: u64,
    body: Option<Response>,
    resumes: u32,
}

impl ResumingBlob {
    fn connect(&mut self) -> Result<()> {
        let what = format!("GET {}", self.path.trim_start_matches("/v2/"));
        let offset = self.offset;
        let path = self.path.clone();
        let r = self.client.send(&what, Retry::Yes, |http, base| {
            let req = http.get(format!("{base}{path}"));
            if offset > 0 {
                req.header(RANGE, format!("bytes={offset}-"))
            } else {
                req
            }
        })?;
        match r.status() {
            StatusCode::PARTIAL_CONTENT if offset > 0 => {}
            s if s.is_success() => {
                if offset > 0 {
                    // The registry ignored the range: skip what we have.
                    let mut r = r;
                    io::copy(&mut (&mut r).take(offset), &mut io::sink())
                        .map_err(|e| Error::Network(format!("{what}: {e}")))?;
                    self.body = Some(r);
                    return Ok(());
                }
            }
            _ => return Err(self.client.failure(&what, r)),
        }
        self.body = Some(r);
        Ok(())
    }
}

impl Read for ResumingBlob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let body = match self.body.as_mut() {
                Some(b) => b,
                None => return Ok(0),
            };
            match body.read(buf) {
                Ok(n) => {
                    self.offset = self.offset.saturating_add(n as u64);
                    return Ok(n);
                }
                Err(e) if self.offset < self.size && self.resumes < self.client.retry_times() => {
                    self.resumes += 1;
                    self.body = None;
                    sleep_backoff(self.resumes - 1, None);
                    if let Err(err) = self.connect() {
                        let _ = e;
                        return Err(err.into_io());
                    }
                }
                Err(e) => {
                    return Err(Error::Network(format!(
                        "GET {} on {}: download broke at byte {}: {}",
                        self.path.trim_start_matches("/v2/"),
                        self.client.host(),
                        self.offset,
                        error_chain(&e)
                    ))
                    .into_io());
                }
            }
        }
    }
}
