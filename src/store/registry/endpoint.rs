//! Finding a registry's endpoint, once per run: `GET /v2/` over HTTPS,
//! or over plain HTTP where that is allowed (a loopback registry, or one
//! configured `tls: http`, which gets no TLS attempt at all), and the
//! challenge the answer names. Also which URLs share the registry's origin
//! (and so get its credentials).

use std::sync::atomic::Ordering;

use reqwest::StatusCode;
use reqwest::Url;
use reqwest::header::WWW_AUTHENTICATE;

use super::auth::{Challenge, parse_challenge};
use super::client::RegistryClient;
use super::failure::{error_chain, transport_failure};
use super::retry::{is_transient_status, retry_after, sleep_backoff};
use super::transport::{Response, block_on};
use crate::error::{Error, ErrorClass, Result, TransportFailure};

pub(super) struct Endpoint {
    pub(super) base: String,
    pub(super) challenge: Challenge,
}

/// Does `url` name the same scheme, host and port as the registry's base
/// URL (`https://host[:port]`)?
pub(super) fn same_origin(url: &Url, base: &str) -> bool {
    match Url::parse(base) {
        Ok(b) => {
            url.scheme() == b.scheme()
                && url.host_str() == b.host_str()
                && url.port_or_known_default() == b.port_or_known_default()
        }
        Err(_) => false,
    }
}

/// Is `host` (`name`, `name:port`, `[v6]:port`) this machine's loopback:
/// `localhost` or a loopback IP literal? Such a registry may be reached
/// over plain HTTP: nothing sent to it leaves the machine. A name that
/// merely looks like one (`127.corp.example`) is not.
pub(super) fn is_loopback(host: &str) -> bool {
    let h = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map(|(h, _)| h).unwrap_or(rest),
        None if host.matches(':').count() == 1 => host.split_once(':').map_or(host, |(h, _)| h),
        None => host,
    };
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl RegistryClient {
    /// The base URL (`https://host`), found once by `GET /v2/`.
    pub(super) fn endpoint(&self) -> Result<&Endpoint> {
        match self.endpoint.get_or_init(|| self.discover()) {
            Ok(e) => Ok(e),
            Err(e) => Err(e.duplicate()),
        }
    }

    /// The registry's endpoint check failed this run (nothing listens, no
    /// TLS, no registry there): every later request reports that failure
    /// again without trying, so trying anything again is pointless.
    pub fn is_unreachable(&self) -> bool {
        matches!(self.endpoint.get(), Some(Err(_)))
    }

    pub(super) fn base(&self) -> Result<String> {
        Ok(self.endpoint()?.base.clone())
    }

    fn discover(&self) -> Result<Endpoint> {
        let https = format!("https://{}", self.api_host);
        let allow_http =
            self.settings.plain_http.unwrap_or(!self.tls_verify) || is_loopback(&self.host);
        // A registry configured for plain HTTP is spoken to that way from
        // the first request: no TLS attempt to wait for.
        if self.settings.plain_http == Some(true) && !self.tls_verify {
            let http = format!("http://{}", self.api_host);
            let resp = self.ping(&http, true)?;
            return self.endpoint_from(http, resp);
        }
        // Where plain HTTP is allowed, a failed HTTPS attempt is not retried:
        // HTTP is tried next (as skopeo does).
        let first = self.ping(&https, !allow_http);
        let (base, resp) = match first {
            Ok(r) => (https, r),
            // A registry that speaks TLS with a certificate we cannot verify
            // is reported as such, not retried over HTTP.
            Err(e) if allow_http && !e.is_certificate_failure() => {
                let http = format!("http://{}", self.api_host);
                match self.ping(&http, true) {
                    Ok(r) => (http, r),
                    Err(_) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        self.endpoint_from(base, resp)
    }

    /// The endpoint a `GET /v2/` answer describes: its challenge.
    fn endpoint_from(&self, base: String, resp: Response) -> Result<Endpoint> {
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
                return Err(Error::Registry {
                    registry: self.host.clone(),
                    status: s.as_u16(),
                    code: None,
                    message: format!(
                        "{}: GET /v2/ answered {s}; is this a container registry?",
                        self.host
                    ),
                    class: ErrorClass::Network,
                });
            }
        };
        Ok(Endpoint { base, challenge })
    }

    fn ping(&self, base: &str, retry_errors: bool) -> Result<Response> {
        let mut attempt = 0;
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let answer = block_on(self.http.get(format!("{base}/v2/")).send()).map(Response::new);
            if let Ok(r) = &answer {
                self.observe_quota(r, false);
            }
            match answer {
                Ok(r) if is_transient_status(r.status()) && attempt < self.retry_times => {
                    sleep_backoff(attempt, retry_after(&r));
                }
                Ok(r) => return Ok(r),
                Err(e) => {
                    let failure = transport_failure(&e);
                    if failure == TransportFailure::Certificate {
                        return Err(self.transport_error(
                            failure,
                            format!(
                                "{}: TLS connection failed: {}; give the registry's CA with --cert-dir, or --tls-verify=false for a registry you trust",
                                self.host,
                                error_chain(&e)
                            ),
                        ));
                    }
                    let give_up = !retry_errors
                        || attempt >= self.retry_times
                        || !(e.is_connect() || e.is_timeout() || e.is_request());
                    if give_up {
                        return Err(self.transport_error(
                            failure,
                            format!("cannot reach registry {}: {}", self.host, error_chain(&e)),
                        ));
                    }
                    sleep_backoff(attempt, None);
                }
            }
            attempt += 1;
        }
    }
}
