//! A registry repository as an image sink (formats reference §6): a blob
//! is looked for (`HEAD`) first, mounted from another repository of the
//! registry that holds it, or uploaded ([`super::upload`]). Manifests go by
//! digest, children first; tags are written last, on commit, so a failed
//! copy moves no tag.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use super::client::RegistryClient;
use super::failure::ErrorBody;
use super::manifest::{MANIFEST_ACCEPT, ManifestHead, digest_header, read_capped};
use super::mount::{Claim, MountIndex};
use super::retry::Retry;
use crate::content::{Descriptor, Digest, MAX_MANIFEST_BYTES, ManifestView, RawManifest};
use crate::error::{Error, Result};
use crate::store::{ImageName, ImageSink, SinkCaps};

/// Blobs from this size on are looked for (`HEAD`) even in a repository
/// without tags, where an interrupted push may have left them.
const NEW_REPO_HEAD_MIN: u64 = 1024 * 1024;

/// A repository as a sink.
pub struct RegistrySink {
    pub(super) client: Arc<RegistryClient>,
    pub(super) repo: String,
    pub(super) mounts: Arc<MountIndex>,
    manifests: Mutex<HashMap<Digest, RawManifest>>,
    tags: Mutex<Vec<(Digest, String)>>,
    /// Uploads this sink has claimed and not yet released.
    claimed: Mutex<Vec<Digest>>,
    /// Upload sessions being opened ahead, by blob: the `POST` runs while
    /// the engine opens the source blob, and `put_blob` takes it over.
    pub(super) sessions: Mutex<HashMap<Digest, std::thread::JoinHandle<Result<Option<String>>>>>,
    /// The last manifest put, not yet pushed (see `put_manifest`).
    pending: Mutex<Option<RawManifest>>,
    /// The registry said the repository does not exist: no blob needs a
    /// `HEAD` to know it is absent.
    new_repo: AtomicBool,
    /// Manifests whose `PUT` the registry answered with `OCI-Subject`: it
    /// lists them as referrers itself.
    pub(super) subject_acknowledged: Mutex<std::collections::HashSet<Digest>>,
    /// The referrers index under each subject's fallback tag, as last read
    /// or written (`None`: no such tag).
    pub(super) fallback_indexes: Mutex<HashMap<Digest, Option<Vec<u8>>>>,
    /// Manifests pushed by digest or tag so far.
    pushed: Mutex<std::collections::HashSet<Digest>>,
}

impl Drop for RegistrySink {
    fn drop(&mut self) {
        for d in self
            .claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            self.mounts.release(self.client.host(), &d);
        }
    }
}

impl RegistrySink {
    pub fn new(client: Arc<RegistryClient>, repo: String, mounts: Arc<MountIndex>) -> RegistrySink {
        client.add_scope(format!("repository:{repo}:pull,push"));
        RegistrySink {
            client,
            repo,
            mounts,
            manifests: Mutex::new(HashMap::new()),
            tags: Mutex::new(Vec::new()),
            claimed: Mutex::new(Vec::new()),
            sessions: Mutex::new(HashMap::new()),
            pending: Mutex::new(None),
            new_repo: Default::default(),
            subject_acknowledged: Default::default(),
            fallback_indexes: Default::default(),
            pushed: Default::default(),
        }
    }

    pub(super) fn label(&self) -> String {
        format!("docker://{}/{}", self.client.host(), self.repo)
    }
}

impl ImageSink for RegistrySink {
    fn describe(&self) -> String {
        self.label()
    }

    fn caps(&self) -> SinkCaps {
        SinkCaps {
            streams_produced_blobs: true,
            remote: true,
            compress_layers: true,
            ..SinkCaps::ANY
        }
    }

    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        // This run put it there, found it there, or an earlier run did
        // (the sync state): not asked again.
        if self
            .mounts
            .holds(self.client.host(), &desc.digest, &self.repo)
        {
            return Ok(true);
        }
        // A repository the registry did not know at the start (no tag)
        // holds only what this run put there (known above), and what an
        // interrupted earlier push left: small blobs are sent again rather
        // than asked about, large ones are worth a `HEAD`.
        if self.new_repo.load(Ordering::Relaxed) && desc.size < NEW_REPO_HEAD_MIN {
            return Ok(false);
        }
        let repo = self.repo.clone();
        let what = format!("HEAD blob {} in {repo}", desc.digest);
        let digest = desc.digest.clone();
        let r = self.client.send(&what, Retry::Yes, |http, base| {
            http.head(format!("{base}/v2/{repo}/blobs/{digest}"))
        })?;
        match r.status() {
            s if s.is_success() => {
                self.mounts
                    .note(self.client.host(), &desc.digest, &self.repo);
                Ok(true)
            }
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.client.failure(&what, r)),
        }
    }

    fn has_image(
        &self,
        root: &Descriptor,
        config: Option<&Digest>,
        names: &[ImageName],
    ) -> Result<bool> {
        let mut refs: Vec<String> = names.iter().filter_map(tag_of).collect();
        if refs.is_empty() {
            refs.push(root.digest.to_string());
        }
        for (k, reference) in refs.into_iter().enumerate() {
            let repo = self.repo.clone();
            let digest = match self.client.head_manifest(&repo, &reference)? {
                ManifestHead::Absent => {
                    if k == 0 {
                        self.learn_if_new()?;
                    }
                    return Ok(false);
                }
                ManifestHead::Present(digest) => digest,
            };
            if digest.as_ref() == Some(&root.digest) {
                continue;
            }
            // Another manifest of the same image (its layers compressed on
            // the way in): same config, same DiffIDs.
            let Some(config) = config else {
                return Ok(false);
            };
            let what = format!("GET manifest {repo}:{reference}");
            let r = self.client.send(&what, Retry::Yes, |http, base| {
                http.get(format!("{base}/v2/{repo}/manifests/{reference}"))
                    .header(ACCEPT, MANIFEST_ACCEPT)
            })?;
            if !r.status().is_success() {
                return Ok(false);
            }
            let bytes = read_capped(r, MAX_MANIFEST_BYTES, &what)?;
            let same = ManifestView::parse(&bytes, None)
                .ok()
                .and_then(|v| v.config)
                .is_some_and(|c| &c.digest == config);
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn mount_blob(&self, desc: &Descriptor, from: Option<&(String, String)>) -> Result<bool> {
        // This sink claimed the upload already (a retry of a blob whose
        // source failed before its bytes went up): it uploads again.
        if self
            .claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&desc.digest)
        {
            return Ok(false);
        }
        let host = self.client.host().to_string();
        // Another copy of this run put it here since this one looked.
        if self.mounts.holds(&host, &desc.digest, &self.repo) {
            return Ok(true);
        }
        let known_elsewhere = || self.mounts.find_other(&host, &desc.digest, &self.repo);
        // Unless it can be mounted already, one image uploads each blob;
        // the others wait for it and then have it (same repository) or
        // mount it (another one).
        if known_elsewhere().is_none() && from.is_none_or(|(h, r)| h != &host || r == &self.repo) {
            match self.mounts.claim(&host, &desc.digest) {
                Claim::Owned => {
                    self.claimed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(desc.digest.clone());
                    self.open_session_ahead(&desc.digest);
                    return Ok(false);
                }
                // The other upload did not end in time: upload it here.
                Claim::GaveUp => return Ok(false),
                Claim::Ended => {}
            }
            if self.mounts.holds(&host, &desc.digest, &self.repo) {
                return Ok(true);
            }
            if known_elsewhere().is_none() {
                return Ok(false);
            }
        }
        let source_repo = from
            .filter(|(host, repo)| host == self.client.host() && repo != &self.repo)
            .map(|(_, repo)| repo.clone())
            .or_else(known_elsewhere);
        let Some(source_repo) = source_repo else {
            return Ok(false);
        };
        self.client
            .add_scope(format!("repository:{source_repo}:pull"));
        match self.start_upload(desc, Some(&source_repo))? {
            None => {
                self.mounts
                    .note(self.client.host(), &desc.digest, &self.repo);
                Ok(true)
            }
            // Not mounted: the registry opened an upload session instead;
            // let it lapse and upload normally.
            Some(_) => Ok(false),
        }
    }

    fn blob_abandoned(&self, desc: &Descriptor) {
        // Another image waiting for this upload stops waiting now.
        let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = claimed.iter().position(|d| d == &desc.digest) {
            claimed.remove(i);
            self.mounts.release(self.client.host(), &desc.digest);
        }
    }

    fn put_blob(&self, desc: &Descriptor, reader: &mut dyn Read) -> Result<()> {
        let result = self.upload(desc, reader);
        let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = claimed.iter().position(|d| d == &desc.digest) {
            claimed.remove(i);
            self.mounts.release(self.client.host(), &desc.digest);
        }
        result
    }

    fn put_blob_produced(
        &self,
        what: &str,
        produce: &mut dyn FnMut(&mut dyn std::io::Write) -> Result<()>,
    ) -> Result<(Digest, u64)> {
        self.upload_produced(what, produce)
    }

    fn put_manifest(&self, manifest: &RawManifest) -> Result<()> {
        self.manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(manifest.digest.clone(), manifest.clone());
        // A referrer goes after its subject: a subject held back for its
        // tag is pushed by digest now.
        self.push_subject_of(manifest)?;
        // Held back one step: if it turns out to be a root that gets a tag,
        // the tag's PUT stores it and a PUT by digest would be one request
        // too many. Children are pushed before anything that lists them.
        let previous = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(manifest.clone());
        match previous {
            Some(m) => self.push_manifest(&m, m.digest.as_str()),
            None => Ok(()),
        }
    }

    fn add_image(&self, root: &Descriptor, names: &[ImageName]) -> Result<()> {
        let mut tags = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        let before = tags.len();
        for t in names.iter().filter_map(tag_of) {
            tags.push((root.digest.clone(), t));
        }
        let tagged = tags.len() > before;
        drop(tags);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.take() {
            Some(m) if m.digest == root.digest && tagged => Ok(()),
            Some(m) => self.push_manifest(&m, m.digest.as_str()),
            None => Ok(()),
        }
    }

    fn add_referrer(&self, referrer: &Descriptor, subject: &Descriptor) -> Result<()> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(m) = pending {
            self.push_manifest(&m, m.digest.as_str())?;
        }
        self.list_referrer(referrer, &subject.digest)
    }

    fn referrers_listing_digest(&self, subject: &Digest) -> Result<Option<Digest>> {
        if self.client.referrers_api() == Some(true) {
            return Ok(None);
        }
        let tag = crate::content::referrers::fallback_tag(subject);
        Ok(match self.client.head_manifest(&self.repo, &tag)? {
            ManifestHead::Present(d) => d,
            ManifestHead::Absent => None,
        })
    }

    fn commit(&self) -> Result<()> {
        if let Some(m) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            self.push_manifest(&m, m.digest.as_str())?;
        }
        let tags = self.tags.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (digest, tag) in tags {
            let m = self
                .manifests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&digest)
                .cloned()
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "{}: manifest {digest} was not pushed",
                        self.label()
                    ))
                })?;
            self.push_manifest(&m, &tag)?;
        }
        Ok(())
    }
}

impl RegistrySink {
    /// Asks whether the repository exists at all (a tag list of an unknown
    /// repository is `NAME_UNKNOWN`): if not, no blob needs a `HEAD`.
    fn learn_if_new(&self) -> Result<()> {
        let repo = self.repo.clone();
        let what = format!("list tags of {repo}");
        let r = self.client.send(&what, Retry::Yes, |http, base| {
            http.get(format!("{base}/v2/{repo}/tags/list?n=1"))
        })?;
        if r.status() == StatusCode::NOT_FOUND
            && ErrorBody::read(r).code.as_deref() == Some("NAME_UNKNOWN")
        {
            self.new_repo.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Points `tag` at a manifest the repository already holds: one PUT.
    pub fn retag(&self, m: &RawManifest, tag: &str) -> Result<()> {
        self.push_manifest(m, tag)
    }

    /// Pushes by digest the subject of `m`, if this sink holds it back.
    fn push_subject_of(&self, m: &RawManifest) -> Result<()> {
        let Some(subject) = ManifestView::parse(&m.bytes, Some(&m.media_type))
            .ok()
            .and_then(|v| v.subject)
        else {
            return Ok(());
        };
        if self
            .pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&subject.digest)
        {
            return Ok(());
        }
        let held = self
            .manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&subject.digest)
            .cloned();
        match held {
            Some(s) => self.push_manifest(&s, s.digest.as_str()),
            // Not this run's: the subject is at the registry already.
            None => Ok(()),
        }
    }

    pub(super) fn push_manifest(&self, m: &RawManifest, reference: &str) -> Result<()> {
        let repo = self.repo.clone();
        let what = format!("PUT manifest {repo}:{reference}");
        let body = m.bytes.clone();
        let mt = m.media_type.clone();
        let r = self.client.send(&what, Retry::Yes, |http, base| {
            http.put(format!("{base}/v2/{repo}/manifests/{reference}"))
                .header(CONTENT_TYPE, mt.as_str())
                .body(body.clone())
        })?;
        if !r.status().is_success() {
            return Err(self.client.failure(&what, r));
        }
        if let Some(d) = digest_header(&r)
            && d.algorithm() == "sha256"
            && d != m.digest
        {
            return Err(Error::Integrity(format!(
                "{what} on {}: the registry stored {d}, not {}",
                self.client.host(),
                m.digest
            )));
        }
        self.pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(m.digest.clone());
        if r.headers().contains_key("oci-subject") {
            self.subject_acknowledged
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(m.digest.clone());
        }
        Ok(())
    }
}

/// The tag a name gives a manifest in a repository.
fn tag_of(name: &ImageName) -> Option<String> {
    match name {
        ImageName::Reference(r) => r.tag.clone(),
        // A digest tag the engine names an attached manifest with.
        ImageName::RefName(t) if crate::content::reference::valid_tag(t) => Some(t.clone()),
        ImageName::RefName(_) => None,
    }
}
