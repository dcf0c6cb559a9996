//! Registries as stores (distribution-spec; formats reference §6): a
//! repository as an image source, and as a sink.
//!
//! Pull: the root manifest is fetched once with an `Accept` list of every
//! manifest type and checked against `Docker-Content-Digest`; configs and
//! layers stream from `GET /blobs/<digest>` (redirects followed without
//! credentials to another host), and an interrupted download resumes with
//! `Range` from where it stopped. Push: `HEAD` first; a blob another
//! repository of the same registry holds is mounted; otherwise one `POST`
//! (sent while the source blob is being opened) and a streamed monolithic
//! `PUT`. Manifests go by digest, children first;
//! tags are written last, on commit, so a failed copy moves no tag.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE};

use super::RegistryClient;
use super::client::{BodySender, Response, Retry, body_channel, error_chain};
use crate::content::manifest::is_manifest_media_type;
use crate::content::{
    Descriptor, Digest, MAX_MANIFEST_BYTES, ManifestView, RawManifest, Reference,
};
use crate::error::{Error, Result};
use crate::store::{BlobReader, ImageName, ImageSink, ImageSource, SinkCaps, SourceImage};

/// Bytes of a streamed upload handed over at once: large enough that the
/// upload costs few system calls and wake-ups, small enough that a few in
/// flight per blob keep memory low.
const UPLOAD_CHUNK: usize = 256 * 1024;

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

fn media_type_of(r: &Response) -> Option<String> {
    let ct = r.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    let mt = ct.split(';').next()?.trim();
    (!mt.is_empty() && mt != "application/json" && mt != "text/plain").then(|| mt.to_string())
}

fn read_capped(r: Response, cap: u64, what: &str) -> Result<Vec<u8>> {
    if r.content_length().is_some_and(|n| n > cap) {
        return Err(Error::Format(format!(
            "{what}: manifest is over the {cap}-byte limit"
        )));
    }
    let mut buf = Vec::new();
    r.take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::Network(format!("{what}: {}", error_chain(&e))))?;
    if buf.len() as u64 > cap {
        return Err(Error::Format(format!(
            "{what}: manifest is over the {cap}-byte limit"
        )));
    }
    Ok(buf)
}

/// A small document (manifest, config) fetched whole: the response and its
/// body are read again after a transient failure, the body too.
struct Small {
    bytes: Vec<u8>,
    digest_header: Option<Digest>,
    media_type: Option<String>,
}

fn get_small(client: &RegistryClient, what: &str, path: &str) -> Result<Small> {
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
            let digest_header = r
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| Digest::parse(v).ok());
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
                crate::store::registry::client::sleep_backoff(attempt, None);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A repository as a source: one image, by tag or digest.
pub struct RegistrySource {
    client: Arc<RegistryClient>,
    reference: Reference,
    root: Descriptor,
    cache: Mutex<HashMap<Digest, Vec<u8>>>,
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
        })
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
        if let Some(b) = self.cache.lock().unwrap().get(&desc.digest) {
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
            .unwrap()
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
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if self.offset < self.size && self.resumes < self.client.retry_times() => {
                    self.resumes += 1;
                    self.body = None;
                    crate::store::registry::client::sleep_backoff(self.resumes - 1, None);
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

/// Blobs this run knows a repository holds, per registry: where to mount
/// them from.
#[derive(Default)]
pub struct MountIndex {
    known: Mutex<HashMap<(String, Digest), Vec<String>>>,
    /// Blobs being uploaded right now, per registry: a second image that
    /// needs one waits and mounts it rather than uploading it again.
    uploading: Mutex<std::collections::HashSet<(String, Digest)>>,
    done: std::sync::Condvar,
}

impl MountIndex {
    /// Claims the upload of a blob to a registry. `true`: the caller
    /// uploads and must call [`MountIndex::release`]; `false`: another
    /// upload of it ended meanwhile (look it up with `find`).
    fn claim(&self, host: &str, digest: &Digest) -> bool {
        let key = (host.to_string(), digest.clone());
        let mut up = self.uploading.lock().unwrap();
        if !up.contains(&key) {
            up.insert(key);
            return true;
        }
        while up.contains(&key) {
            up = self.done.wait(up).unwrap();
        }
        false
    }

    fn release(&self, host: &str, digest: &Digest) {
        self.uploading
            .lock()
            .unwrap()
            .remove(&(host.to_string(), digest.clone()));
        self.done.notify_all();
    }

    fn note(&self, host: &str, digest: &Digest, repo: &str) {
        let mut known = self.known.lock().unwrap();
        let repos = known.entry((host.to_string(), digest.clone())).or_default();
        if !repos.iter().any(|r| r == repo) {
            repos.push(repo.to_string());
        }
    }

    /// Records that `repo` on `host` holds a blob (found by a `HEAD`), so
    /// other repositories of the run can mount it from there.
    pub fn remember(&self, host: &str, digest: &Digest, repo: &str) {
        self.note(host, digest, repo);
    }

    /// Does this run know `repo` holds the blob?
    fn holds(&self, host: &str, digest: &Digest, repo: &str) -> bool {
        self.known
            .lock()
            .unwrap()
            .get(&(host.to_string(), digest.clone()))
            .is_some_and(|repos| repos.iter().any(|r| r == repo))
    }

    /// A repository other than `not` that holds the blob.
    fn find_other(&self, host: &str, digest: &Digest, not: &str) -> Option<String> {
        self.known
            .lock()
            .unwrap()
            .get(&(host.to_string(), digest.clone()))
            .and_then(|repos| repos.iter().find(|r| *r != not).cloned())
    }
}

/// Blobs from this size on are looked for (`HEAD`) even in a repository
/// without tags, where an interrupted push may have left them.
const NEW_REPO_HEAD_MIN: u64 = 1024 * 1024;

/// Starts an upload session in `repo`, or mounts the blob from `from`:
/// `Ok(None)` when mounted, else the session's `Location`.
fn start_upload(
    client: &RegistryClient,
    repo: &str,
    digest: &Digest,
    from: Option<&str>,
) -> Result<Option<String>> {
    let repo = repo.to_string();
    let (query, what) = match from {
        Some(f) => (
            format!("?mount={}&from={f}", digest),
            format!("mount {} from {f} into {repo}", digest),
        ),
        None => (
            String::new(),
            format!("start upload of {} to {repo}", digest),
        ),
    };
    let r = client.send(&what, Retry::Yes, |http, base| {
        http.post(format!("{base}/v2/{repo}/blobs/uploads/{query}"))
            .header(CONTENT_LENGTH, "0")
    })?;
    match r.status() {
        StatusCode::CREATED if from.is_some() => Ok(None),
        StatusCode::ACCEPTED => {
            let loc = r
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    Error::Format(format!(
                        "{what} on {}: no Location in the answer",
                        client.host()
                    ))
                })?;
            Ok(Some(loc.to_string()))
        }
        _ => Err(client.failure(&what, r)),
    }
}

/// A repository as a sink.
pub struct RegistrySink {
    client: Arc<RegistryClient>,
    repo: String,
    mounts: Arc<MountIndex>,
    manifests: Mutex<HashMap<Digest, RawManifest>>,
    tags: Mutex<Vec<(Digest, String)>>,
    /// Uploads this sink has claimed and not yet released.
    claimed: Mutex<Vec<Digest>>,
    /// Upload sessions being opened ahead, by blob: the `POST` runs while
    /// the engine opens the source blob, and `put_blob` takes it over.
    sessions: Mutex<HashMap<Digest, std::thread::JoinHandle<Result<Option<String>>>>>,
    /// The last manifest put, not yet pushed (see `put_manifest`).
    pending: Mutex<Option<RawManifest>>,
    /// The registry said the repository does not exist: no blob needs a
    /// `HEAD` to know it is absent.
    new_repo: std::sync::atomic::AtomicBool,
}

impl Drop for RegistrySink {
    fn drop(&mut self) {
        for d in self.claimed.lock().unwrap().drain(..) {
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
        }
    }

    fn label(&self) -> String {
        format!("docker://{}/{}", self.client.host(), self.repo)
    }

    /// Starts an upload session, or mounts: `Ok(None)` when mounted.
    fn start_upload(&self, desc: &Descriptor, from: Option<&str>) -> Result<Option<String>> {
        start_upload(&self.client, &self.repo, &desc.digest, from)
    }

    /// Opens the upload session of a blob this sink is about to upload, on
    /// another thread: one round trip less on the way of each blob.
    fn open_session_ahead(&self, digest: &Digest) {
        let client = self.client.clone();
        let repo = self.repo.clone();
        let d = digest.clone();
        let session = std::thread::spawn(move || start_upload(&client, &repo, &d, None));
        // A session opened earlier for the same blob and not used (its
        // source could not be read) lapses on the registry.
        self.sessions
            .lock()
            .unwrap()
            .insert(digest.clone(), session);
    }

    /// The upload session for a blob: the one opened ahead, or a new one.
    fn upload_session(&self, desc: &Descriptor) -> Result<String> {
        let ahead = self.sessions.lock().unwrap().remove(&desc.digest);
        let location = match ahead {
            Some(session) => session.join().map_err(|_| {
                Error::Network(format!(
                    "{}: the thread opening an upload session panicked",
                    self.label()
                ))
            })??,
            None => self.start_upload(desc, None)?,
        };
        location
            .ok_or_else(|| Error::Format(format!("{}: upload session not opened", self.label())))
    }

    /// Resolves an upload `Location` (maybe relative) and adds the digest
    /// to its query, keeping the parameters already there.
    fn finish_url(&self, location: &str, digest: &Digest) -> Result<String> {
        let base = self.client.base()?;
        let abs = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{base}{location}")
        };
        let sep = if abs.contains('?') { '&' } else { '?' };
        Ok(format!(
            "{abs}{sep}digest={}",
            digest.as_str().replace(':', "%3A")
        ))
    }
}

/// The writing end of a streamed upload: hashes, counts, and hands full
/// chunks to the request.
struct ChannelWriter {
    tx: BodySender,
    buf: BytesMut,
    hasher: crate::content::DigestHasher,
    written: u64,
    /// The request ended before the body was complete.
    stopped: bool,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, BytesMut::with_capacity(UPLOAD_CHUNK));
        let sent = self.tx.send(chunk.freeze());
        self.stopped |= sent.is_err();
        sent
    }

    /// Makes the request fail rather than complete with what was sent.
    fn fail(&mut self, why: String) {
        self.tx.fail(why);
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.hasher.update(data);
        self.written += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= UPLOAD_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
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
        // A repository the registry did not know at the start (no tag)
        // holds what this run put there, and what an interrupted earlier
        // push left: small blobs are sent again rather than asked about,
        // large ones are worth a `HEAD`.
        if self.new_repo.load(std::sync::atomic::Ordering::Relaxed)
            && (desc.size < NEW_REPO_HEAD_MIN
                || self
                    .mounts
                    .holds(self.client.host(), &desc.digest, &self.repo))
        {
            return Ok(self
                .mounts
                .holds(self.client.host(), &desc.digest, &self.repo));
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
        let mut refs: Vec<String> = names
            .iter()
            .filter_map(|n| match n {
                ImageName::Reference(r) => r.tag.clone(),
                ImageName::RefName(_) => None,
            })
            .collect();
        if refs.is_empty() {
            refs.push(root.digest.to_string());
        }
        for (k, reference) in refs.into_iter().enumerate() {
            let repo = self.repo.clone();
            let what = format!("HEAD manifest {repo}:{reference}");
            let r = self.client.send(&what, Retry::Yes, |http, base| {
                http.head(format!("{base}/v2/{repo}/manifests/{reference}"))
                    .header(ACCEPT, MANIFEST_ACCEPT)
            })?;
            if r.status() == StatusCode::NOT_FOUND {
                if k == 0 {
                    self.learn_if_new()?;
                }
                return Ok(false);
            }
            if !r.status().is_success() {
                return Err(self.client.failure(&what, r));
            }
            let digest = r
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| Digest::parse(v).ok());
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
        if self.claimed.lock().unwrap().contains(&desc.digest) {
            return Ok(false);
        }
        let host = self.client.host().to_string();
        let known_elsewhere = || self.mounts.find_other(&host, &desc.digest, &self.repo);
        // Unless it can be mounted already, one image uploads each blob;
        // the others wait for it and then have it (same repository) or
        // mount it (another one).
        if known_elsewhere().is_none() && from.is_none_or(|(h, r)| h != &host || r == &self.repo) {
            if self.mounts.claim(&host, &desc.digest) {
                self.claimed.lock().unwrap().push(desc.digest.clone());
                self.open_session_ahead(&desc.digest);
                return Ok(false);
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

    fn put_blob(&self, desc: &Descriptor, reader: &mut dyn Read) -> Result<()> {
        let result = self.upload(desc, reader);
        let mut claimed = self.claimed.lock().unwrap();
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
        // POST, one streamed PATCH (chunked: the size is not known yet),
        // then PUT with the digest computed on the way.
        let location = self
            .start_upload(&Descriptor::new("", Digest::sha256_of(b""), 0), None)?
            .ok_or_else(|| Error::Format(format!("{}: upload session not opened", self.label())))?;
        let base = self.client.base()?;
        let patch_url = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            format!("{base}{location}")
        };
        let what = format!("{what}: upload to {}", self.repo);
        let (tx, body) = body_channel(None);
        let body = Mutex::new(Some(body));
        let (digest, size, next) = std::thread::scope(|s| {
            let upload = s.spawn(|| {
                self.client.send(&what, Retry::No, |http, _| {
                    let req = http
                        .patch(patch_url.as_str())
                        .header(CONTENT_TYPE, "application/octet-stream");
                    match body.lock().unwrap().take() {
                        Some(b) => req.body(b),
                        None => req.body(Vec::new()),
                    }
                })
            });
            let mut w = ChannelWriter {
                tx,
                buf: BytesMut::with_capacity(UPLOAD_CHUNK),
                hasher: crate::content::DigestHasher::sha256(),
                written: 0,
                stopped: false,
            };
            let produced = produce(&mut w).and_then(|()| {
                use std::io::Write;
                w.flush().map_err(|e| Error::io(what.clone(), e))
            });
            if let Err(e) = &produced {
                w.fail(e.to_string());
            }
            let (hasher, written, stopped) = (w.hasher.clone(), w.written, w.stopped);
            drop(w);
            let response = upload
                .join()
                .map_err(|_| Error::Network(format!("{what}: upload thread panicked")))?;
            // When the request ended before the body did (connection lost,
            // the registry refused it), its outcome is the cause, not the
            // write that found it gone.
            if stopped {
                match response {
                    Err(e) => return Err(e),
                    Ok(r) if !r.status().is_success() => {
                        return Err(self.client.failure(&what, r));
                    }
                    Ok(_) => {}
                }
                produced?;
                return Err(Error::Network(format!(
                    "{what}: the registry ended the upload early"
                )));
            }
            produced?;
            let r = response?;
            if !r.status().is_success() {
                return Err(self.client.failure(&what, r));
            }
            let next = r
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .unwrap_or_else(|| patch_url.clone());
            Ok((hasher.finish(), written, next))
        })?;
        // Not retried here: a failed upload is redone whole by the engine.
        let url = self.finish_url(&next, &digest)?;
        let r = self.client.send(&what, Retry::No, |http, _| {
            http.put(url.as_str()).header(CONTENT_LENGTH, "0")
        })?;
        if !r.status().is_success() {
            return Err(self.client.failure(&what, r));
        }
        self.mounts.note(self.client.host(), &digest, &self.repo);
        Ok((digest, size))
    }

    fn put_manifest(&self, manifest: &RawManifest) -> Result<()> {
        self.manifests
            .lock()
            .unwrap()
            .insert(manifest.digest.clone(), manifest.clone());
        // Held back one step: if it turns out to be a root that gets a tag,
        // the tag's PUT stores it and a PUT by digest would be one request
        // too many. Children are pushed before anything that lists them.
        let previous = self.pending.lock().unwrap().replace(manifest.clone());
        match previous {
            Some(m) => self.push_manifest(&m, m.digest.as_str()),
            None => Ok(()),
        }
    }

    fn add_image(&self, root: &Descriptor, names: &[ImageName]) -> Result<()> {
        let mut tags = self.tags.lock().unwrap();
        let before = tags.len();
        for n in names {
            if let ImageName::Reference(r) = n
                && let Some(t) = &r.tag
            {
                tags.push((root.digest.clone(), t.clone()));
            }
        }
        let tagged = tags.len() > before;
        drop(tags);
        let mut pending = self.pending.lock().unwrap();
        match pending.take() {
            Some(m) if m.digest == root.digest && tagged => Ok(()),
            Some(m) => self.push_manifest(&m, m.digest.as_str()),
            None => Ok(()),
        }
    }

    fn commit(&self) -> Result<()> {
        if let Some(m) = self.pending.lock().unwrap().take() {
            self.push_manifest(&m, m.digest.as_str())?;
        }
        let tags = self.tags.lock().unwrap().clone();
        for (digest, tag) in tags {
            let m = self
                .manifests
                .lock()
                .unwrap()
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
            && crate::store::registry::client::registry_error(r).contains("NAME_UNKNOWN")
        {
            self.new_repo
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// One `POST` and one streamed monolithic `PUT`.
    fn upload(&self, desc: &Descriptor, reader: &mut dyn Read) -> Result<()> {
        let location = self.upload_session(desc)?;
        let url = self.finish_url(&location, &desc.digest)?;
        let what = format!("upload {} to {}", desc.digest, self.repo);
        let size = desc.size;
        let (mut tx, body) = body_channel(Some(size));
        let body = Mutex::new(Some(body));
        std::thread::scope(|s| {
            // The request runs on its own thread; this one reads (and
            // verifies) the source and feeds it in large chunks.
            let upload = s.spawn(|| {
                self.client.send(&what, Retry::No, |http, _| {
                    let req = http
                        .put(url.as_str())
                        .header(CONTENT_TYPE, "application/octet-stream");
                    match body.lock().unwrap().take() {
                        Some(b) => req.header(CONTENT_LENGTH, size).body(b),
                        None => req.body(Vec::new()),
                    }
                })
            });
            let mut failed = None;
            let mut done = false;
            while !done {
                let mut buf = BytesMut::zeroed(UPLOAD_CHUNK);
                let mut filled = 0;
                // Fill the chunk: a network source returns what one packet
                // or frame held.
                while filled < buf.len() {
                    match reader.read(&mut buf[filled..]) {
                        Ok(0) => {
                            done = true;
                            break;
                        }
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            tx.fail("the source stream failed".to_string());
                            failed = Some(e);
                            done = true;
                            break;
                        }
                    }
                }
                if failed.is_some() {
                    break;
                }
                if filled > 0 {
                    buf.truncate(filled);
                    if tx.send(buf.freeze()).is_err() {
                        break;
                    }
                }
            }
            drop(tx);
            let response = upload
                .join()
                .map_err(|_| Error::Network(format!("{what}: upload thread panicked")))?;
            if let Some(e) = failed {
                return Err(Error::io(what.clone(), e));
            }
            let r = response?;
            if r.status() != StatusCode::CREATED && !r.status().is_success() {
                return Err(self.client.failure(&what, r));
            }
            self.mounts
                .note(self.client.host(), &desc.digest, &self.repo);
            Ok(())
        })
    }

    /// Points `tag` at a manifest the repository already holds: one PUT.
    pub fn retag(&self, m: &RawManifest, tag: &str) -> Result<()> {
        self.push_manifest(m, tag)
    }

    fn push_manifest(&self, m: &RawManifest, reference: &str) -> Result<()> {
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
        if let Some(d) = r
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok())
            && d.algorithm() == "sha256"
            && d != m.digest
        {
            return Err(Error::Integrity(format!(
                "{what} on {}: the registry stored {d}, not {}",
                self.client.host(),
                m.digest
            )));
        }
        Ok(())
    }
}
