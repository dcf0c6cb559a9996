//! One registry host: endpoint discovery (HTTPS, or HTTP where allowed),
//! authentication, retries with backoff, and a cap on requests in flight.
//!
//! Retry policy: connection failures, timeouts, 408, 429 and 5xx are retried
//! with exponential backoff and jitter, waiting at least what `Retry-After`
//! says; other failures return at once with the registry's error code and
//! message. Requests with a streamed body are not retried here (their body
//! cannot be replayed); the engine retries the whole blob instead.
//!
//! The HTTP client is `reqwest`'s asynchronous one, driven by one small
//! process-wide tokio runtime: the calling thread blocks on each request
//! (and on each chunk of a response body) while the runtime's workers do
//! the socket I/O. Streamed request bodies are fed from a bounded channel
//! of large chunks ([`body_channel`]), so an upload costs a few system
//! calls per 256 KiB rather than per 8 KiB.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::{Buf, Bytes};
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Client, RequestBuilder, StatusCode};

use super::auth::{Challenge, Token, parse_challenge, parse_token};
use super::credentials::{self, Credential};
use crate::error::{Error, Result};

/// How to reach one registry.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Explicit credentials (`--src-creds`); else looked up in auth files.
    pub creds: Option<Credential>,
    /// `--authfile`.
    pub authfile: Option<PathBuf>,
    /// Verify TLS certificates (default true); false also allows plain HTTP.
    pub tls_verify: Option<bool>,
    /// A docker `certs.d`-style directory: `*.crt` CAs, `*.cert`/`*.key`
    /// client certificate.
    pub cert_dir: Option<PathBuf>,
    /// Retries of a transient failure (default 3).
    pub retry_times: Option<u32>,
    /// Requests in flight to this host.
    pub max_requests: Option<usize>,
}

/// The registries of one run, one client per host and settings. Clients
/// with the same TLS setup share one HTTP client (one connection pool, and
/// the system's trust store loaded once).
#[derive(Default)]
pub struct ClientPool {
    clients: Mutex<HashMap<String, Arc<RegistryClient>>>,
    http: Mutex<HashMap<TlsSetup, Client>>,
}

impl ClientPool {
    pub fn get(&self, host: &str, settings: &RegistrySettings) -> Result<Arc<RegistryClient>> {
        let key = format!(
            "{host}|{:?}|{:?}|{:?}|{:?}",
            settings.creds, settings.authfile, settings.tls_verify, settings.cert_dir
        );
        let mut clients = self.clients.lock().unwrap();
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        install_crypto_provider();
        let tls = TlsSetup::load(host, settings)?;
        let http = {
            let mut shared = self.http.lock().unwrap();
            match shared.get(&tls) {
                Some(h) => h.clone(),
                None => {
                    let h = tls.build(host)?;
                    shared.insert(tls.clone(), h.clone());
                    h
                }
            }
        };
        let c = Arc::new(RegistryClient::with_http(host, settings, http));
        clients.insert(key, c.clone());
        Ok(c)
    }

    /// Requests sent to every registry so far.
    pub fn requests(&self) -> u64 {
        self.clients
            .lock()
            .unwrap()
            .values()
            .map(|c| c.requests())
            .sum()
    }
}

struct Endpoint {
    base: String,
    challenge: Challenge,
}

/// A counting semaphore for requests in flight.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    fn acquire(&self) -> SlotGuard<'_> {
        let mut n = self.free.lock().unwrap();
        while *n == 0 {
            n = self.cv.wait(n).unwrap();
        }
        *n -= 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap() += 1;
        self.0.cv.notify_one();
    }
}

pub struct RegistryClient {
    host: String,
    api_host: String,
    http: Client,
    tls_verify: bool,
    creds: OnceLock<Result<Option<Credential>, String>>,
    settings: RegistrySettings,
    endpoint: OnceLock<std::result::Result<Endpoint, String>>,
    scopes: Mutex<BTreeSet<String>>,
    tokens: Mutex<HashMap<String, Token>>,
    slots: Slots,
    retry_times: u32,
    requests: AtomicU64,
}

/// How a request may be repeated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Transient failures are retried.
    Yes,
    /// The body is a stream: never repeated here.
    No,
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    matches!(h, "localhost" | "127.0.0.1" | "[::1]" | "::1") || h.starts_with("127.")
}

/// What a registry's TLS connections trust and present: the files of its
/// certificate directory, read once. Equal setups share one HTTP client.
#[derive(Clone, PartialEq, Eq, Hash)]
struct TlsSetup {
    verify: bool,
    /// PEM bundles of extra CAs (`*.crt`), each with its file name.
    cas: Vec<(PathBuf, Vec<u8>)>,
    /// Client certificates and keys (`*.cert` + `*.key`, concatenated).
    identities: Vec<(PathBuf, Vec<u8>)>,
}

impl TlsSetup {
    fn load(host: &str, settings: &RegistrySettings) -> Result<TlsSetup> {
        let mut setup = TlsSetup {
            verify: settings.tls_verify.unwrap_or(true),
            cas: Vec::new(),
            identities: Vec::new(),
        };
        let bare = host.split(':').next().unwrap_or(host);
        match &settings.cert_dir {
            Some(d) => setup.read_dir(d)?,
            None => {
                for root in ["/etc/containers/certs.d", "/etc/docker/certs.d"] {
                    setup.read_dir(&Path::new(root).join(host))?;
                    if bare != host {
                        setup.read_dir(&Path::new(root).join(bare))?;
                    }
                }
            }
        }
        Ok(setup)
    }

    fn read_dir(&mut self, dir: &Path) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::path("read certificate directory", dir, e)),
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for f in &files {
            let name = f
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".crt") {
                let pem = std::fs::read(f).map_err(|e| Error::path("read", f, e))?;
                self.cas.push((f.clone(), pem));
            } else if let Some(stem) = name.strip_suffix(".cert") {
                let key = dir.join(format!("{stem}.key"));
                let mut pem = std::fs::read(f).map_err(|e| Error::path("read", f, e))?;
                pem.extend(
                    std::fs::read(&key).map_err(|e| Error::path("read client key", &key, e))?,
                );
                self.identities.push((f.clone(), pem));
            }
        }
        Ok(())
    }

    fn build(&self, host: &str) -> Result<Client> {
        let mut b = Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(32)
            // Over HTTP/2 (offered by TLS registries through ALPN), flow
            // control windows follow the measured bandwidth-delay product:
            // the fixed 64 KiB default would cap a download at 64 KiB per
            // round trip.
            .http2_adaptive_window(true)
            .user_agent(concat!("imgsync/", env!("CARGO_PKG_VERSION")));
        if !self.verify {
            b = b.tls_danger_accept_invalid_certs(true);
        } else if self.identities.is_empty() {
            // The system's trust store is read when a certificate is first
            // checked, not before: a registry that speaks plain HTTP (tried
            // over HTTPS first) never needs it.
            let tls = lazy_tls_config(&self.cas)?;
            b = b.tls_backend_preconfigured(tls);
            let _guard = runtime().enter();
            return b
                .build()
                .map_err(|e| Error::Usage(format!("{host}: cannot set up the HTTP client: {e}")));
        }
        let mut cas = Vec::new();
        for (f, pem) in &self.cas {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                Error::Usage(format!("{}: not a PEM certificate: {e}", f.display()))
            })?;
            cas.extend(certs);
        }
        for (f, pem) in &self.identities {
            let id = reqwest::Identity::from_pem(pem).map_err(|e| {
                Error::Usage(format!(
                    "{}: not a PEM certificate and key: {e}",
                    f.display()
                ))
            })?;
            b = b.identity(id);
        }
        if !cas.is_empty() {
            b = b.tls_certs_merge(cas);
        }
        // Built in the context of the runtime that will drive it.
        let _guard = runtime().enter();
        b.build()
            .map_err(|e| Error::Usage(format!("{host}: cannot set up the HTTP client: {e}")))
    }
}

/// A TLS client setup that verifies servers against the system's trust
/// store plus `cas`, loading the store on the first certificate to check.
fn lazy_tls_config(cas: &[(PathBuf, Vec<u8>)]) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    install_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut extra = Vec::new();
    for (f, pem) in cas {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Usage(format!("{}: not a PEM certificate: {e}", f.display())))?;
        if certs.is_empty() {
            return Err(Error::Usage(format!(
                "{}: not a PEM certificate: no certificate in it",
                f.display()
            )));
        }
        extra.extend(certs);
    }
    let verifier = Arc::new(LazyVerifier {
        extra,
        provider: provider.clone(),
        inner: OnceLock::new(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Usage(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// The platform verifier, built (trust store read) on first use.
#[derive(Debug)]
struct LazyVerifier {
    extra: Vec<rustls::pki_types::CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    inner: OnceLock<std::result::Result<rustls_platform_verifier::Verifier, rustls::Error>>,
}

impl LazyVerifier {
    fn get(&self) -> std::result::Result<&rustls_platform_verifier::Verifier, rustls::Error> {
        self.inner
            .get_or_init(|| {
                rustls_platform_verifier::Verifier::new_with_extra_roots(
                    self.extra.iter().cloned(),
                    self.provider.clone(),
                )
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl rustls::client::danger::ServerCertVerifier for LazyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.get()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Makes ring the process's TLS crypto provider, unless one was chosen
/// already: it seeds its random numbers from the kernel, so the first
/// handshake (every registry is tried over HTTPS first) starts at once.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The runtime that drives every registry connection of the process.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 4);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("imgsync-http")
            .enable_all()
            .build()
            .expect("cannot start the HTTP runtime")
    })
}

/// Runs a future of the HTTP client to completion on the calling thread.
fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// A registry's answer: status and headers at once, the body read
/// synchronously (as `Read`, or whole).
pub struct Response {
    inner: reqwest::Response,
    /// What the last chunk had left over after the last `read`.
    pending: Bytes,
}

impl Response {
    fn new(inner: reqwest::Response) -> Response {
        Response {
            inner,
            pending: Bytes::new(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.inner.status()
    }

    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// The body's length, when the registry said it.
    pub fn content_length(&self) -> Option<u64> {
        self.inner.content_length()
    }

    /// The rest of the body.
    pub fn bytes(self) -> reqwest::Result<Bytes> {
        let rest = block_on(self.inner.bytes())?;
        if self.pending.is_empty() {
            return Ok(rest);
        }
        let mut all = Vec::with_capacity(self.pending.len() + rest.len());
        all.extend_from_slice(&self.pending);
        all.extend_from_slice(&rest);
        Ok(all.into())
    }

    /// The rest of the body as text (invalid UTF-8 replaced).
    pub fn text(self) -> reqwest::Result<String> {
        let b = self.bytes()?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pending.is_empty() {
            match block_on(self.inner.chunk()) {
                Ok(Some(b)) => self.pending = b,
                Ok(None) => return Ok(0),
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.advance(n);
        Ok(n)
    }
}

/// Chunks of a streamed request body, in flight at once per upload.
const BODY_CHUNKS_IN_FLIGHT: usize = 4;

/// A request body streamed from another thread: the [`BodySender`] end
/// hands over chunks (best ≥ 256 KiB each), the body sends them as they
/// come. `size`, when known, is the exact length (sent as
/// `Content-Length`; otherwise the body is chunked).
pub fn body_channel(size: Option<u64>) -> (BodySender, reqwest::Body) {
    let (tx, rx) = tokio::sync::mpsc::channel(BODY_CHUNKS_IN_FLIGHT);
    (
        BodySender { tx: Some(tx) },
        reqwest::Body::wrap(ChannelBody { rx, size }),
    )
}

/// The feeding end of [`body_channel`].
pub struct BodySender {
    tx: Option<tokio::sync::mpsc::Sender<io::Result<Bytes>>>,
}

impl BodySender {
    /// Hands over one chunk; blocks while the request is behind. Fails
    /// when the request has stopped (its error is in its response).
    pub fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        match &self.tx {
            Some(tx) => tx
                .blocking_send(Ok(chunk))
                .map_err(|_| io::Error::other("the upload stopped")),
            None => Err(io::Error::other("the upload stopped")),
        }
    }

    /// Makes the request fail rather than complete with what was sent.
    pub fn fail(&mut self, why: String) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.blocking_send(Err(io::Error::other(why)));
        }
    }
}

struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    size: Option<u64>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.size {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}

impl RegistryClient {
    pub fn new(host: &str, settings: &RegistrySettings) -> Result<RegistryClient> {
        install_crypto_provider();
        let http = TlsSetup::load(host, settings)?.build(host)?;
        Ok(RegistryClient::with_http(host, settings, http))
    }

    fn with_http(host: &str, settings: &RegistrySettings, http: Client) -> RegistryClient {
        let tls_verify = settings.tls_verify.unwrap_or(true);
        let api_host = if host == "docker.io" {
            "registry-1.docker.io".to_string()
        } else {
            host.to_string()
        };
        let max = settings.max_requests.unwrap_or(16).max(1);
        RegistryClient {
            host: host.to_string(),
            api_host,
            http,
            tls_verify,
            creds: OnceLock::new(),
            settings: settings.clone(),
            endpoint: OnceLock::new(),
            scopes: Mutex::new(BTreeSet::new()),
            tokens: Mutex::new(HashMap::new()),
            slots: Slots {
                free: Mutex::new(max),
                cv: Condvar::new(),
            },
            retry_times: settings.retry_times.unwrap_or(3),
            requests: AtomicU64::new(0),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn retry_times(&self) -> u32 {
        self.retry_times
    }

    fn creds(&self) -> Result<Option<Credential>> {
        self.creds
            .get_or_init(|| match &self.settings.creds {
                Some(c) => Ok(Some(c.clone())),
                None => credentials::lookup(&self.host, self.settings.authfile.as_deref())
                    .map_err(|e| e.to_string()),
            })
            .clone()
            .map_err(Error::Auth)
    }

    /// Adds a scope (`repository:team/app:pull,push`) that tokens of this
    /// client must carry.
    pub fn add_scope(&self, scope: String) {
        self.scopes.lock().unwrap().insert(scope);
    }

    /// The base URL (`https://host`), found once by `GET /v2/`.
    fn endpoint(&self) -> Result<&Endpoint> {
        match self
            .endpoint
            .get_or_init(|| self.discover().map_err(|e| e.to_string()))
        {
            Ok(e) => Ok(e),
            Err(msg) => Err(Error::Network(msg.clone())),
        }
    }

    pub fn base(&self) -> Result<String> {
        Ok(self.endpoint()?.base.clone())
    }

    fn discover(&self) -> Result<Endpoint> {
        let https = format!("https://{}", self.api_host);
        let allow_http = !self.tls_verify || is_loopback(&self.host);
        // Where plain HTTP is allowed, a failed HTTPS attempt is not retried:
        // HTTP is tried next (as skopeo does).
        let first = self.ping(&https, !allow_http);
        let (base, resp) = match first {
            Ok(r) => (https, r),
            // A registry that speaks TLS with a certificate we cannot verify
            // is reported as such, not retried over HTTP.
            Err(e) if allow_http && !e.to_string().contains("TLS connection failed") => {
                let http = format!("http://{}", self.api_host);
                match self.ping(&http, true) {
                    Ok(r) => (http, r),
                    Err(_) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let challenge = match resp.status() {
            s if s.is_success() => Challenge::None,
            StatusCode::UNAUTHORIZED => resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge)
                .map(|c| c.to_challenge())
                .unwrap_or(Challenge::Basic),
            s => {
                return Err(Error::Network(format!(
                    "{}: GET /v2/ answered {s}; is this a container registry?",
                    self.host
                )));
            }
        };
        Ok(Endpoint { base, challenge })
    }

    fn ping(&self, base: &str, retry_errors: bool) -> Result<Response> {
        let mut attempt = 0;
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            match block_on(self.http.get(format!("{base}/v2/")).send()).map(Response::new) {
                Ok(r) if is_transient_status(r.status()) && attempt < self.retry_times => {
                    sleep_backoff(attempt, retry_after(&r));
                }
                Ok(r) => return Ok(r),
                Err(e) if is_certificate_error(&e) => {
                    return Err(Error::Network(format!(
                        "{}: TLS connection failed: {}; give the registry's CA with --cert-dir, or --tls-verify=false for a registry you trust",
                        self.host,
                        error_chain(&e)
                    )));
                }
                Err(e) if !retry_errors || (e.is_connect() && attempt >= self.retry_times) => {
                    return Err(Error::Network(format!(
                        "cannot reach registry {}: {}",
                        self.host,
                        error_chain(&e)
                    )));
                }
                Err(e)
                    if attempt >= self.retry_times
                        || !(e.is_connect() || e.is_timeout() || e.is_request()) =>
                {
                    return Err(Error::Network(format!(
                        "cannot reach registry {}: {}",
                        self.host,
                        error_chain(&e)
                    )));
                }
                Err(_) => sleep_backoff(attempt, None),
            }
            attempt += 1;
        }
    }

    /// The `Authorization` header value for the current scopes, if any.
    fn authorization(&self, refresh: bool) -> Result<Option<String>> {
        let endpoint = self.endpoint()?;
        match &endpoint.challenge {
            Challenge::None => Ok(None),
            Challenge::Basic => match self.creds()? {
                Some(Credential::Basic { username, password }) => Ok(Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"))
                ))),
                Some(Credential::IdentityToken(_)) => Err(Error::Auth(format!(
                    "{}: the registry wants a user and password, but only an identity token is configured",
                    self.host
                ))),
                None => Ok(None),
            },
            Challenge::Bearer { realm, service } => {
                let scopes: Vec<String> = self.scopes.lock().unwrap().iter().cloned().collect();
                let key = scopes.join(" ");
                if !refresh
                    && let Some(t) = self.tokens.lock().unwrap().get(&key)
                    && t.expires > Instant::now()
                {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                let token = self.fetch_token(realm, service.as_deref(), &scopes)?;
                let value = format!("Bearer {}", token.value);
                self.tokens.lock().unwrap().insert(key, token);
                Ok(Some(value))
            }
        }
    }

    fn fetch_token(&self, realm: &str, service: Option<&str>, scopes: &[String]) -> Result<Token> {
        let creds = self.creds()?;
        let mut attempt = 0;
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let req = match &creds {
                Some(Credential::IdentityToken(refresh)) => {
                    let mut form: Vec<(&str, String)> = vec![
                        ("grant_type", "refresh_token".into()),
                        ("refresh_token", refresh.clone()),
                        ("client_id", "imgsync".into()),
                        ("scope", scopes.join(" ")),
                    ];
                    if let Some(s) = service {
                        form.push(("service", s.to_string()));
                    }
                    self.http.post(realm).form(&form)
                }
                other => {
                    let mut q: Vec<(&str, &str)> = Vec::new();
                    if let Some(s) = service {
                        q.push(("service", s));
                    }
                    for s in scopes {
                        q.push(("scope", s));
                    }
                    let mut r = self.http.get(realm).query(&q);
                    if let Some(Credential::Basic { username, password }) = other {
                        r = r.basic_auth(username, Some(password));
                    }
                    r
                }
            };
            match block_on(req.send()).map(Response::new) {
                Ok(r) if r.status().is_success() => {
                    let body = r.bytes().map_err(|e| {
                        Error::Network(format!("{}: token endpoint: {e}", self.host))
                    })?;
                    return parse_token(&body).ok_or_else(|| {
                        Error::Auth(format!(
                            "{}: the token endpoint {realm} gave no token",
                            self.host
                        ))
                    });
                }
                Ok(r) if is_transient_status(r.status()) && attempt < self.retry_times => {
                    sleep_backoff(attempt, retry_after(&r));
                }
                Ok(r) if matches!(r.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                    return Err(Error::Auth(format!(
                        "{}: credentials refused by the token endpoint ({}){}",
                        self.host,
                        r.status(),
                        if creds.is_none() {
                            "; log in with `imgsync login` or pass credentials"
                        } else {
                            ""
                        }
                    )));
                }
                Ok(r) => {
                    return Err(Error::Auth(format!(
                        "{}: token endpoint {realm} answered {}",
                        self.host,
                        r.status()
                    )));
                }
                Err(e) if attempt < self.retry_times => {
                    let _ = e;
                    sleep_backoff(attempt, None);
                }
                Err(e) => {
                    return Err(Error::Network(format!(
                        "{}: cannot reach token endpoint {realm}: {}",
                        self.host,
                        error_chain(&e)
                    )));
                }
            }
            attempt += 1;
        }
    }

    /// Sends a request built by `build` (given the base URL), with
    /// authentication, retries (unless `retry` is `No`) and the in-flight
    /// cap. Returns the response whatever its status, except that 401 and
    /// 403 become authentication errors naming `what`.
    pub fn send(
        &self,
        what: &str,
        retry: Retry,
        build: impl Fn(&Client, &str) -> RequestBuilder,
    ) -> Result<Response> {
        let base = self.base()?;
        let _slot = self.slots.acquire();
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            let mut req = build(&self.http, &base);
            if let Some(a) = self.authorization(false)? {
                req = req.header(AUTHORIZATION, a);
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let (req_client, built) = req.build_split();
            let built = built.map_err(|e| Error::Usage(format!("{what} on {}: {e}", self.host)))?;
            let line =
                debug_enabled().then(|| format!("{} {}", built.method(), redact_url(built.url())));
            let result = block_on(req_client.execute(built)).map(Response::new);
            if let Some(line) = line {
                match &result {
                    Ok(r) => eprintln!(
                        "imgsync: debug: {line} -> {} ({:?})",
                        r.status(),
                        r.inner.version()
                    ),
                    Err(e) => eprintln!("imgsync: debug: {line} -> {}", error_chain(e)),
                }
            }
            match result {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
                    let challenge = r
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge);
                    if let Some(scope) = challenge.as_ref().and_then(|c| c.params.get("scope")) {
                        for s in scope.split(' ') {
                            self.add_scope(s.to_string());
                        }
                    }
                    let bearer = matches!(self.endpoint()?.challenge, Challenge::Bearer { .. });
                    if bearer && !refreshed && retry == Retry::Yes {
                        refreshed = true;
                        self.authorization(true)?;
                        continue;
                    }
                    return Err(self.auth_error(what, r));
                }
                Ok(r) if r.status() == StatusCode::FORBIDDEN => {
                    return Err(self.auth_error(what, r));
                }
                Ok(r)
                    if is_transient_status(r.status())
                        && retry == Retry::Yes
                        && attempt < self.retry_times =>
                {
                    sleep_backoff(attempt, retry_after(&r));
                }
                Ok(r) => return Ok(r),
                Err(e)
                    if retry == Retry::Yes && attempt < self.retry_times && !is_tls_error(&e) =>
                {
                    sleep_backoff(attempt, None);
                }
                Err(e) => {
                    return Err(Error::Network(format!(
                        "{what} on {}: {}",
                        self.host,
                        error_chain(&e)
                    )));
                }
            }
            attempt += 1;
        }
    }

    fn auth_error(&self, what: &str, r: Response) -> Error {
        let status = r.status();
        let body = registry_error(r);
        let hint = match self.creds() {
            Ok(Some(_)) => "check the credentials and their permissions",
            _ => "log in with `imgsync login` or pass credentials",
        };
        Error::Auth(format!("{what} on {}: {status}{body}; {hint}", self.host))
    }

    /// A failure that is not about authentication: names the host, what was
    /// being done, the status and the registry's error code and message.
    pub fn failure(&self, what: &str, r: Response) -> Error {
        let status = r.status();
        let body = registry_error(r);
        let msg = format!("{what} on {}: {status}{body}", self.host);
        match status {
            StatusCode::NOT_FOUND => Error::NotFound(msg),
            s if is_transient_status(s) => Error::Network(msg),
            _ => Error::Format(msg),
        }
    }
}

static DEBUG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints every registry request and its status on stderr (`--debug`).
/// Headers, and with them every credential and token, are never printed.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// A URL for the debug log: user info and query values that carry upload
/// state are left out.
fn redact_url(u: &reqwest::Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        let kept: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "digest" || k == "mount" || k == "from" || k == "n" || k == "last" {
                    v.into_owned()
                } else {
                    "…".to_string()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(kept);
    }
    u.to_string()
}

/// `: CODE message` from a registry's JSON error body, or its first line.
pub fn registry_error(r: Response) -> String {
    let text = r.text().unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errs {
        errors: Vec<E>,
    }
    #[derive(serde::Deserialize)]
    struct E {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(errs) = serde_json::from_str::<Errs>(&text)
        && let Some(e) = errs.errors.first()
    {
        return format!(
            " ({}: {})",
            e.code.as_deref().unwrap_or("UNKNOWN"),
            e.message.as_deref().unwrap_or("")
        );
    }
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        String::new()
    } else {
        format!(" ({})", &line[..line.len().min(200)])
    }
}

pub fn is_transient_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// The server spoke TLS, but its certificate did not verify.
fn is_certificate_error(e: &reqwest::Error) -> bool {
    let chain = error_chain(e).to_ascii_lowercase();
    chain.contains("certificate")
        || chain.contains("unknownissuer")
        || chain.contains("invalid peer")
}

fn is_tls_error(e: &reqwest::Error) -> bool {
    let chain = error_chain(e).to_ascii_lowercase();
    chain.contains("certificate")
        || chain.contains("tls")
        || chain.contains("unknownissuer")
        || chain.contains("invalid peer")
}

/// The error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn retry_after(r: &Response) -> Option<Duration> {
    let v = r.headers().get(RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(120)))
}

/// Waits before retry `attempt` (0-based): 250 ms doubling, ±25 % jitter,
/// at least `retry_after`.
pub fn sleep_backoff(attempt: u32, retry_after: Option<Duration>) {
    use std::hash::{BuildHasher, Hasher};
    let base = Duration::from_millis(250) * 2u32.saturating_pow(attempt.min(8));
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let jitter = (h.finish() % 500) as f64 / 1000.0 - 0.25;
    let wait = base.mul_f64(1.0 + jitter);
    std::thread::sleep(retry_after.map_or(wait, |ra| ra.max(wait)));
}
