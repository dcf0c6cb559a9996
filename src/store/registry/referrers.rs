//! Referrers on a registry (distribution spec, "Listing Referrers"): the
//! referrers API (`GET /v2/<name>/referrers/<digest>`), else the referrers
//! tag schema, a tag `<alg>-<hex>` holding an index of the referrers, kept
//! by clients. Whether a registry serves the API is learned once per run:
//! a registry that serves it never answers 404.

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LINK};

use super::client::RegistryClient;
use super::manifest::{digest_header, get_small, read_capped};
use super::retry::Retry;
use super::sink::RegistrySink;
use super::tags::next_link;
use crate::content::media_type::OCI_INDEX;
use crate::content::referrers::{fallback_tag, lists_all, merge_referrers_index};
use crate::content::{Descriptor, Digest, MAX_MANIFEST_BYTES, ManifestView};
use crate::error::{Error, Result};

/// Pages of one referrers list followed at most.
const MAX_PAGES: usize = 100;

impl RegistryClient {
    /// Whether the registry serves the referrers API, once known.
    pub(super) fn referrers_api(&self) -> Option<bool> {
        *self.referrers_api.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn learn_referrers_api(&self, serves: bool) {
        *self.referrers_api.lock().unwrap_or_else(|e| e.into_inner()) = Some(serves);
    }

    /// The referrers of `subject` in `repo` from the referrers API, every
    /// page; `None` when the registry does not serve the API.
    pub(super) fn list_referrers(
        &self,
        repo: &str,
        subject: &Digest,
    ) -> Result<Option<Vec<Descriptor>>> {
        if self.referrers_api() == Some(false) {
            return Ok(None);
        }
        // Until the registry has answered once, one request asks at a time:
        // the images copied in parallel wait for that answer rather than
        // each probing a registry that keeps no API.
        let _probing = match self.referrers_api() {
            None => Some(
                self.referrers_probe
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            ),
            Some(_) => None,
        };
        if self.referrers_api() == Some(false) {
            return Ok(None);
        }
        let what = format!("GET referrers of {repo}@{subject}");
        let mut out = Vec::new();
        let mut next = Some(format!("/v2/{repo}/referrers/{subject}"));
        let mut pages = 0;
        while let Some(path) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(Error::Format(format!(
                    "{what} on {}: more than {MAX_PAGES} pages",
                    self.host()
                )));
            }
            let r = self.send(&what, Retry::Yes, |http, base| {
                let url = if path.starts_with("http://") || path.starts_with("https://") {
                    path.clone()
                } else {
                    format!("{base}{path}")
                };
                http.get(url).header(ACCEPT, OCI_INDEX)
            })?;
            match r.status() {
                StatusCode::NOT_FOUND if pages == 1 => {
                    self.learn_referrers_api(false);
                    return Ok(None);
                }
                s if s.is_success() => self.learn_referrers_api(true),
                _ => return Err(self.failure(&what, r)),
            }
            next = r
                .headers()
                .get(LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            let bytes = read_capped(r, MAX_MANIFEST_BYTES, &format!("{what} on {}", self.host()))?;
            let view = ManifestView::parse(&bytes, Some(OCI_INDEX)).map_err(|e| {
                Error::Format(format!(
                    "{what} on {}: not a referrers index: {e}",
                    self.host()
                ))
            })?;
            if !view.kind.is_index() {
                return Err(Error::Format(format!(
                    "{what} on {}: the answer is a {}, not an index",
                    self.host(),
                    view.kind.media_type()
                )));
            }
            out.extend(view.manifests);
        }
        Ok(Some(out))
    }

    /// The bytes and digest of a manifest by tag, `None` when the tag does
    /// not exist.
    pub(super) fn get_tagged(&self, repo: &str, tag: &str) -> Result<Option<(Vec<u8>, Digest)>> {
        let what = format!("GET manifest {repo}:{tag}");
        match get_small(self, &what, &format!("/v2/{repo}/manifests/{tag}")) {
            Ok(small) => {
                let digest = Digest::sha256_of(&small.bytes);
                Ok(Some((small.bytes, digest)))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The referrers a fallback tag lists. `None` when there is no such tag.
    pub(super) fn fallback_referrers(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<Vec<Descriptor>>> {
        let Some((bytes, _)) = self.get_tagged(repo, tag)? else {
            return Ok(None);
        };
        let view = ManifestView::parse(&bytes, Some(OCI_INDEX)).map_err(|e| {
            Error::Format(format!("{}/{repo}: referrers tag {tag}: {e}", self.host()))
        })?;
        if !view.kind.is_index() {
            return Err(Error::Format(format!(
                "{}/{repo}: referrers tag {tag} holds a {}, not an index",
                self.host(),
                view.kind.media_type()
            )));
        }
        Ok(Some(view.manifests))
    }

    /// `PUT` an index under a tag; the digest the registry stored.
    pub(super) fn put_index(&self, repo: &str, tag: &str, body: &[u8]) -> Result<Option<Digest>> {
        let what = format!("PUT manifest {repo}:{tag}");
        let body = body.to_vec();
        let r = self.send(&what, Retry::Yes, |http, base| {
            http.put(format!("{base}/v2/{repo}/manifests/{tag}"))
                .header(CONTENT_TYPE, OCI_INDEX)
                .body(body.clone())
        })?;
        if !r.status().is_success() {
            return Err(self.failure(&what, r));
        }
        Ok(digest_header(&r))
    }
}

impl RegistrySink {
    /// Makes the registry list `referrer` under `subject`. A registry that
    /// answered the referrer's push with `OCI-Subject`, or that serves the
    /// referrers API, lists it itself. Otherwise the fallback tag is read
    /// (once per subject), merged (an entry another writer added stays),
    /// put back and read again: if a concurrent writer replaced it in
    /// between, the merge is done again.
    pub(super) fn list_referrer(&self, referrer: &Descriptor, subject: &Digest) -> Result<()> {
        if self
            .subject_acknowledged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&referrer.digest)
        {
            return Ok(());
        }
        let repo = self.repo.clone();
        let serves_api = match self.client.referrers_api() {
            Some(known) => known,
            None => self.client.list_referrers(&repo, subject)?.is_some(),
        };
        if serves_api {
            return Ok(());
        }
        let tag = fallback_tag(subject);
        let at = || format!("{}: referrers tag {tag}", self.label());
        let ours = std::slice::from_ref(referrer);
        let known = self
            .fallback_indexes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(subject)
            .cloned();
        // Listed already, as last seen: nothing to write.
        if let Some(Some(index)) = &known
            && lists_all(index, ours)
        {
            return Ok(());
        }
        // About to write: start from what the registry holds now.
        let mut current = self.client.get_tagged(&repo, &tag)?.map(|(b, _)| b);
        for _ in 0..5 {
            let merged = merge_referrers_index(current.as_deref(), ours)
                .map_err(|e| Error::Format(format!("{}: {e}", at())))?;
            let Some(merged) = merged else {
                self.remember_fallback(subject, current);
                return Ok(());
            };
            self.client.put_index(&repo, &tag, &merged)?;
            current = self.client.get_tagged(&repo, &tag)?.map(|(b, _)| b);
            // Another writer put its own list in between: merge again.
            if current.as_deref().is_some_and(|b| lists_all(b, ours)) {
                self.remember_fallback(subject, current);
                return Ok(());
            }
        }
        Err(Error::Network(format!(
            "{}: other writers kept replacing it; run again",
            at()
        )))
    }

    fn remember_fallback(&self, subject: &Digest, index: Option<Vec<u8>>) {
        self.fallback_indexes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(subject.clone(), index);
    }
}
