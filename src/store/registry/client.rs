//! One registry host: authentication (its endpoint is found by
//! [`super::endpoint`]), retries (see [`super::retry`]) and a cap on requests in
//! flight. Every request of the registry protocol goes through
//! [`RegistryClient::send`]; a failure becomes a typed error
//! ([`Error::Registry`] for an error answer, [`Error::Transport`] for no
//! answer) whose message names the host and what was being done.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use reqwest::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Client, RequestBuilder, StatusCode};

use super::auth::{Challenge, Token, accepted_scope, parse_challenge};
use super::concurrency::Slots;
use super::credentials::{self, Credential};
use super::endpoint::{Endpoint, same_origin};
use super::failure::{ErrorBody, error_chain, transport_failure};
use super::pacing::Pacer;
use super::quota::{Quota, QuotaReading, counts_against_quota, held_back};
use super::quota_gate::QuotaGate;
use super::retry::{Retry, is_transient_status, retry_after, sleep_backoff};
use super::scopes::request_scopes;
use super::tls::{TlsSetup, install_crypto_provider};
use super::transport::{Response, execute};
use crate::error::{Error, ErrorClass, Result, TransportFailure};

/// How to reach one registry.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Explicit credentials (`--src-creds`); else looked up in auth files.
    pub creds: Option<Credential>,
    /// `--authfile`.
    pub authfile: Option<PathBuf>,
    /// Verify TLS certificates (default true); false also allows plain
    /// HTTP unless `plain_http` says otherwise.
    pub tls_verify: Option<bool>,
    /// Whether the registry may be reached over plain HTTP when HTTPS
    /// fails; unset, it follows `tls_verify` (as skopeo does). Loopback
    /// registries always may.
    pub plain_http: Option<bool>,
    /// A docker `certs.d`-style directory: `*.crt` CAs, `*.cert`/`*.key`
    /// client certificate.
    pub cert_dir: Option<PathBuf>,
    /// Retries of a transient failure (default 3).
    pub retry_times: Option<u32>,
    /// The most requests in flight to this host (16 unless set): the
    /// ceiling of the adaptive limit ([`super::concurrency`]).
    pub max_requests: Option<usize>,
    /// Requests of the quota the registry announces that are kept: at or
    /// below it, manifest and blob `GET`s fail without being sent.
    pub rate_limit_reserve: Option<u64>,
    /// The most requests a second sent to this host.
    pub requests_per_second: Option<f64>,
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
            "{host}|{:?}|{:?}|{:?}|{:?}|{:?}",
            settings.creds,
            settings.authfile,
            settings.tls_verify,
            settings.plain_http,
            settings.cert_dir
        );
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        install_crypto_provider();
        let tls = TlsSetup::load(host, settings)?;
        let http = {
            let mut shared = self.http.lock().unwrap_or_else(|e| e.into_inner());
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

    /// The latest quota each registry announced, by host.
    pub fn quotas(&self) -> BTreeMap<String, QuotaReading> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let mut latest: BTreeMap<String, Quota> = BTreeMap::new();
        for c in clients.values() {
            if let Some(q) = c.quota()
                && latest.get(&c.host).is_none_or(|l| l.seen <= q.seen)
            {
                latest.insert(c.host.clone(), q);
            }
        }
        latest.into_iter().map(|(h, q)| (h, q.reading)).collect()
    }

    /// Requests sent to every registry so far.
    pub fn requests(&self) -> u64 {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|c| c.requests())
            .sum()
    }
}

pub struct RegistryClient {
    pub(super) host: String,
    pub(super) api_host: String,
    pub(super) http: Client,
    pub(super) tls_verify: bool,
    creds: OnceLock<Result<Option<Credential>, String>>,
    pub(super) settings: RegistrySettings,
    /// Found once; a failure is kept too, so every request of the run
    /// reports it rather than trying again.
    pub(super) endpoint: OnceLock<Result<Endpoint>>,
    /// Scopes (`repository:team/app:pull`) that tokens must carry.
    pub(super) scopes: Mutex<BTreeSet<String>>,
    /// Bearer tokens by their space-separated scopes.
    pub(super) tokens: Mutex<HashMap<String, Token>>,
    /// A lock per set of scopes whose token is being fetched.
    pub(super) token_fetches: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    slots: Slots,
    /// The token bucket and any pause the registry asked for.
    pacer: Mutex<Pacer>,
    /// The quota the registry's latest answer announced.
    quota: Mutex<Option<Quota>>,
    /// Counted requests in flight, held to what the quota has left.
    gate: QuotaGate,
    /// The registry refused a request that is not a pull with 429: it
    /// counts every request against its quota, not only pulls (as Docker
    /// Hub does), and every request goes through the gate from then on.
    counts_all: std::sync::atomic::AtomicBool,
    pub(super) retry_times: u32,
    pub(super) requests: AtomicU64,
    /// Whether the registry serves the referrers API, once learned.
    pub(super) referrers_api: Mutex<Option<bool>>,
    /// Held by the request that finds out.
    pub(super) referrers_probe: Mutex<()>,
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
            token_fetches: Mutex::new(HashMap::new()),
            slots: Slots::new(max),
            pacer: Mutex::new(Pacer::new(settings.requests_per_second, Instant::now())),
            quota: Mutex::new(None),
            gate: QuotaGate::new(settings.rate_limit_reserve.unwrap_or(0)),
            counts_all: Default::default(),
            retry_times: settings.retry_times.unwrap_or(3),
            requests: AtomicU64::new(0),
            referrers_api: Mutex::new(None),
            referrers_probe: Mutex::new(()),
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

    pub(super) fn creds(&self) -> Result<Option<Credential>> {
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
        self.scopes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(scope);
    }

    /// `GET /v2/` with the credentials (a token for no scope, on token
    /// registries): proves them.
    pub fn check_login(&self) -> Result<()> {
        let r = self.send("log in", Retry::Yes, |http, base| {
            http.get(format!("{base}/v2/"))
        })?;
        if !r.status().is_success() {
            return Err(self.failure("log in", r));
        }
        Ok(())
    }

    /// Sends a request built by `build` (given the base URL), with
    /// authentication, retries (unless `retry` is `No`) and the in-flight
    /// cap. Returns the response whatever its status, except that 401 and
    /// 403 become authentication errors naming `what`.
    pub(super) fn send(
        &self,
        what: &str,
        retry: Retry,
        build: impl Fn(&Client, &str) -> RequestBuilder,
    ) -> Result<Response> {
        let base = self.base()?;
        let mut pass = None;
        let mut slot = self.slots.acquire(retry == Retry::No);
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            let req = build(&self.http, &base);
            let (req_client, built) = req.build_split();
            let mut built =
                built.map_err(|e| Error::Usage(format!("{what} on {}: {e}", self.host)))?;
            let counted = counts_against_quota(built.method().as_str(), built.url().path());
            if counted {
                self.check_reserve(what)?;
            }
            // A request the quota counts (a pull: a GET of a manifest or
            // blob; any request, once the registry has refused one that is
            // not a pull) waits until the quota has room for it among those
            // in flight. The gate only holds requests for a window of two
            // minutes at most, so the slot held meanwhile is freed in time.
            if pass.is_none() && (counted || self.counts_all.load(Ordering::Relaxed)) {
                pass = Some(self.gate.enter());
            }
            self.pace();
            self.requests.fetch_add(1, Ordering::Relaxed);
            // Credentials go to the registry's own origin only: an upload
            // `Location` or a `Link` may name any host, and what it names
            // gets the request but not the registry's credentials.
            let scopes = {
                let registered = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
                request_scopes(built.method().as_str(), built.url(), &registered)
            };
            if same_origin(built.url(), &base)
                && let Some(a) = self.authorization(false, &scopes)?
            {
                let value = HeaderValue::from_str(&a).map_err(|_| {
                    Error::Auth(format!(
                        "{}: the credentials cannot be sent in a header",
                        self.host
                    ))
                })?;
                built.headers_mut().insert(AUTHORIZATION, value);
            }
            let (method, url) = (built.method().as_str().to_string(), built.url().clone());
            slot.sending();
            let sent = Instant::now();
            let answer = execute(&req_client, built);
            if let Ok(r) = &answer {
                slot.answered(r.status().as_u16(), sent.elapsed());
                self.observe_quota(r, pass.is_some());
                if r.status().as_u16() == 429 && !counts_against_quota(&method, url.path()) {
                    self.counts_all.store(true, Ordering::Relaxed);
                }
                if matches!(r.status().as_u16(), 429 | 503)
                    && let Some(pause) = retry_after(r)
                {
                    // Every request waits out the pause, not only this one.
                    self.pacer_lock().hold(Instant::now(), pause);
                }
            }
            match answer {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
                    let challenge = r
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge);
                    if let Some(scope) = challenge.as_ref().and_then(|c| c.params.get("scope")) {
                        let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
                        let accepted: Vec<&str> = scope
                            .split(' ')
                            .filter(|s| accepted_scope(s, &scopes))
                            .collect();
                        for s in accepted {
                            scopes.insert(s.to_string());
                        }
                    }
                    let bearer = matches!(self.endpoint()?.challenge, Challenge::Bearer { .. });
                    if bearer && !refreshed && retry == Retry::Yes {
                        refreshed = true;
                        // The refreshed token carries what the challenge
                        // added too.
                        let scopes = {
                            let registered = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
                            request_scopes(&method, &url, &registered)
                        };
                        self.authorization(true, &scopes)?;
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
                    // Refused for the quota: the place at the gate is
                    // given up while waiting, and taken again when the
                    // request is built anew, so that what was refused does
                    // not all come back at once.
                    if r.status() == StatusCode::TOO_MANY_REQUESTS {
                        drop(pass.take());
                    }
                    sleep_backoff(attempt, retry_after(&r));
                }
                Ok(r) => return Ok(r),
                Err(e) => {
                    let failure = transport_failure(&e);
                    // A TLS failure happens again on every attempt.
                    let tls = matches!(
                        failure,
                        TransportFailure::Certificate | TransportFailure::Tls
                    );
                    if retry == Retry::No || attempt >= self.retry_times || tls {
                        return Err(self.transport_error(
                            failure,
                            format!("{what} on {}: {}", self.host, error_chain(&e)),
                        ));
                    }
                    sleep_backoff(attempt, None);
                }
            }
            attempt += 1;
        }
    }

    fn pacer_lock(&self) -> std::sync::MutexGuard<'_, Pacer> {
        self.pacer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the next request may go: the configured rate and any
    /// pause the registry asked for. Sleeps without holding the lock.
    fn pace(&self) {
        let wait = self.pacer_lock().reserve(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Keeps what an answer says about the quota.
    pub(super) fn observe_quota(&self, r: &Response, holds_pass: bool) {
        if let Some(reading) = QuotaReading::from_headers(r.headers()) {
            let mut q = self.quota.lock().unwrap_or_else(|e| e.into_inner());
            let updated = Quota::update(*q, reading, Instant::now());
            *q = Some(updated);
            drop(q);
            self.gate.observe(&updated, holds_pass);
        }
    }

    /// The quota the registry's latest answer announced, if any did.
    pub fn quota(&self) -> Option<Quota> {
        *self.quota.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests allowed in flight now (the adaptive limit).
    pub fn concurrency_limit(&self) -> usize {
        self.slots.limit()
    }

    /// Fails a request that counts against the quota when what is left of
    /// it is down to the configured reserve.
    fn check_reserve(&self, what: &str) -> Result<()> {
        let Some(reserve) = self.settings.rate_limit_reserve else {
            return Ok(());
        };
        let Some(q) = self.quota() else {
            return Ok(());
        };
        let now = Instant::now();
        match q.holds_back(reserve, now) {
            true => Err(held_back(&self.host, what, &q, reserve, now)),
            false => Ok(()),
        }
    }

    pub(super) fn transport_error(&self, failure: TransportFailure, message: String) -> Error {
        Error::Transport {
            registry: self.host.clone(),
            failure,
            message,
        }
    }

    /// An error answer as an error of `class`: `message` is followed by
    /// the registry's code and message, and `hint` if any.
    pub(super) fn answer_error(
        &self,
        class: ErrorClass,
        message: String,
        r: Response,
        hint: Option<&str>,
    ) -> Error {
        let status = r.status().as_u16();
        let body = ErrorBody::read(r);
        let message = match hint {
            Some(h) => format!("{message}{}; {h}", body.shown),
            None => format!("{message}{}", body.shown),
        };
        Error::Registry {
            registry: self.host.clone(),
            status,
            code: body.code,
            message,
            class,
        }
    }

    fn auth_error(&self, what: &str, r: Response) -> Error {
        let hint = match self.creds() {
            Ok(Some(_)) => "check the credentials and their permissions",
            _ => "log in with `imgsync login` or pass credentials",
        };
        let message = format!("{what} on {}: {}", self.host, r.status());
        self.answer_error(ErrorClass::Auth, message, r, Some(hint))
    }

    /// A failure that is not about authentication: names the host, what was
    /// being done, the status and the registry's error code and message.
    pub(super) fn failure(&self, what: &str, r: Response) -> Error {
        let class = match r.status() {
            StatusCode::NOT_FOUND => ErrorClass::NotFound,
            s if is_transient_status(s) => ErrorClass::Network,
            _ => ErrorClass::Format,
        };
        let message = format!("{what} on {}: {}", self.host, r.status());
        self.answer_error(class, message, r, None)
    }
}
