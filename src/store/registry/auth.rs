//! `WWW-Authenticate` challenges (RFC 7235) and bearer tokens
//! (distribution's token.md and oauth.md).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;

use super::client::RegistryClient;
use super::credentials::Credential;
use super::endpoint::is_loopback;
use super::failure::{error_chain, transport_failure};
use super::retry::{is_transient_status, retry_after, sleep_backoff};
use super::transport::{BodyError, Response, block_on};
use crate::error::{Error, ErrorClass, Result};

/// What a registry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `GET /v2/` answered 200: no authentication.
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// A parsed challenge with its parameters (`scope`, `error`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedChallenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses a `WWW-Authenticate` value: `Scheme k=v, k="quoted, value"`.
/// Returns the first challenge.
pub fn parse_challenge(value: &str) -> Option<ParsedChallenge> {
    let value = value.trim();
    let (scheme, rest) = match value.find(' ') {
        Some(i) => (&value[..i], value[i + 1..].trim()),
        None => (value, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    let b = rest.as_bytes();
    // The byte at a position, `None` past the end.
    let at = |i: usize| b.get(i).copied();
    let mut i = 0;
    while i < b.len() {
        while matches!(at(i), Some(b' ' | b',')) {
            i += 1;
        }
        let start = i;
        while at(i).is_some_and(|c| c != b'=' && c != b',') {
            i += 1;
        }
        let key = rest[start..i].trim().to_ascii_lowercase();
        if at(i) != Some(b'=') {
            // A token68 or a new challenge: stop at what we have.
            break;
        }
        i += 1;
        let mut val = String::new();
        if at(i) == Some(b'"') {
            i += 1;
            while let Some(c) = at(i).filter(|&c| c != b'"') {
                let c = match at(i + 1) {
                    Some(escaped) if c == b'\\' => {
                        i += 1;
                        escaped
                    }
                    _ => c,
                };
                val.push(c as char);
                i += 1;
            }
            i += 1;
        } else {
            let s = i;
            while at(i).is_some_and(|c| c != b',') {
                i += 1;
            }
            val = rest[s..i].trim().to_string();
        }
        if !key.is_empty() {
            params.insert(key, val);
        }
    }
    Some(ParsedChallenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

impl ParsedChallenge {
    pub fn to_challenge(&self) -> Challenge {
        match self.scheme.as_str() {
            "basic" => Challenge::Basic,
            "bearer" => match self.params.get("realm") {
                Some(realm) => Challenge::Bearer {
                    realm: realm.clone(),
                    service: self.params.get("service").cloned(),
                },
                None => Challenge::Basic,
            },
            _ => Challenge::None,
        }
    }
}

/// Whether a scope named by a registry's 401 challenge may join the
/// scopes of later token requests: `repository:<name>:<actions>` for a
/// repository the run already asks about (in `asked`), with actions among
/// `pull` and `push`, or `registry:catalog:*` when the run lists the
/// catalog. Anything else (another repository, `*` rights, a malformed
/// scope) would have the run ask for rights on the registry's say-so.
pub fn accepted_scope(scope: &str, asked: &BTreeSet<String>) -> bool {
    if scope == "registry:catalog:*" {
        return asked.contains(scope);
    }
    let Some(rest) = scope.strip_prefix("repository:") else {
        return false;
    };
    let Some((name, actions)) = rest.rsplit_once(':') else {
        return false;
    };
    let valid_name = !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    let valid_actions =
        !actions.is_empty() && actions.split(',').all(|a| a == "pull" || a == "push");
    let asked_repo = asked.iter().any(|s| {
        s.strip_prefix("repository:")
            .and_then(|r| r.rsplit_once(':'))
            .is_some_and(|(n, _)| n == name)
    });
    valid_name && valid_actions && asked_repo
}

/// The largest token answer read: a token is a few KiB at most.
const MAX_TOKEN_ANSWER_BYTES: u64 = 1 << 20;

/// A bearer token and when to stop using it.
#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub expires: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// The longest a token is used before a new one is asked for, whatever
/// lifetime the endpoint claims.
const MAX_TOKEN_SECS: u64 = 24 * 60 * 60;

/// Reads a token endpoint's answer: `token` or `access_token`; a lifetime
/// under 60 s (or none) counts as 60 s, one over a day as a day, and the
/// token is renewed 10 s early.
pub fn parse_token(body: &[u8]) -> Option<Token> {
    let r: TokenResponse = serde_json::from_slice(body).ok()?;
    let value = r.token.filter(|t| !t.is_empty()).or(r.access_token)?;
    let secs = r.expires_in.unwrap_or(60).clamp(60, MAX_TOKEN_SECS);
    let now = Instant::now();
    Some(Token {
        value,
        // A clock that cannot count that far ahead renews at once.
        expires: now
            .checked_add(Duration::from_secs(secs - 10))
            .unwrap_or(now),
    })
}

/// Is `realm` a plain-HTTP token endpoint of a registry reached over TLS?
/// A realm on this machine's loopback counts as safe: what is sent to it
/// never leaves the machine.
pub(super) fn insecure_realm(realm: &str, base: &str) -> bool {
    if !base.starts_with("https://") {
        return false;
    }
    match reqwest::Url::parse(realm) {
        Ok(u) if u.scheme() == "https" => false,
        Ok(u) => !u.host_str().is_some_and(is_loopback),
        Err(_) => true,
    }
}

/// Tokens and the `Authorization` header of a client: credentials are
/// sent to the token endpoint (or, for `Basic`, with each request), never
/// logged; a token is kept per set of scopes until it expires.
impl RegistryClient {
    /// The `Authorization` header value for a request that needs
    /// `scopes`, if any.
    pub(super) fn authorization(&self, refresh: bool, scopes: &[String]) -> Result<Option<String>> {
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
                let key = scopes.join(" ");
                let cached = || {
                    self.tokens
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&key)
                        .filter(|t| t.expires > Instant::now())
                        .map(|t| format!("Bearer {}", t.value))
                };
                if !refresh && let Some(v) = cached() {
                    return Ok(Some(v));
                }
                // One fetch per set of scopes at a time: the requests in
                // flight that need the same token wait for it rather than
                // each asking the token endpoint.
                let gate = self
                    .token_fetches
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key.clone())
                    .or_default()
                    .clone();
                let _fetching = gate.lock().unwrap_or_else(|e| e.into_inner());
                if !refresh && let Some(v) = cached() {
                    return Ok(Some(v));
                }
                let token = self.fetch_token(realm, service.as_deref(), scopes)?;
                let value = format!("Bearer {}", token.value);
                self.tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, token);
                Ok(Some(value))
            }
        }
    }

    fn fetch_token(&self, realm: &str, service: Option<&str>, scopes: &[String]) -> Result<Token> {
        let creds = self.creds()?;
        // A TLS registry's credentials never travel in clear text, not even
        // to a token endpoint it names.
        if creds.is_some() && insecure_realm(realm, &self.base()?) {
            return Err(Error::Auth(format!(
                "{}: the registry sends credentials to a plain-HTTP token endpoint ({realm}); refused",
                self.host
            )));
        }
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
                    let body = r.read_capped(MAX_TOKEN_ANSWER_BYTES).map_err(|e| match e {
                        BodyError::TooLarge(cap) => Error::Format(format!(
                            "{}: the token endpoint {realm} answered over {cap} bytes",
                            self.host
                        )),
                        BodyError::Read(e) => Error::Network(format!(
                            "{}: token endpoint {realm}: {}",
                            self.host,
                            error_chain(&e)
                        )),
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
                Ok(r) => {
                    let status = r.status();
                    let message =
                        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                            format!(
                                "{}: credentials refused by the token endpoint ({status}){}",
                                self.host,
                                if creds.is_none() {
                                    "; log in with `imgsync login` or pass credentials"
                                } else {
                                    ""
                                }
                            )
                        } else {
                            format!("{}: token endpoint {realm} answered {status}", self.host)
                        };
                    return Err(Error::Registry {
                        registry: self.host.clone(),
                        status: status.as_u16(),
                        code: None,
                        message,
                        class: ErrorClass::Auth,
                    });
                }
                Err(_) if attempt < self.retry_times => sleep_backoff(attempt, None),
                Err(e) => {
                    return Err(self.transport_error(
                        transport_failure(&e),
                        format!(
                            "{}: cannot reach token endpoint {realm}: {}",
                            self.host,
                            error_chain(&e)
                        ),
                    ));
                }
            }
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push",error="insufficient_scope""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["scope"], "repository:samalba/my-app:pull,push");
        assert_eq!(c.params["error"], "insufficient_scope");
        assert_eq!(
            c.to_challenge(),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            }
        );
        let b = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(b.to_challenge(), Challenge::Basic);
    }

    #[test]
    fn reads_token_or_access_token() {
        assert_eq!(
            parse_token(br#"{"token":"abc","expires_in":300}"#)
                .unwrap()
                .value,
            "abc"
        );
        assert_eq!(
            parse_token(br#"{"access_token":"xyz"}"#).unwrap().value,
            "xyz"
        );
        assert!(parse_token(br#"{"nothing":1}"#).is_none());
    }
}
