//! `WWW-Authenticate` challenges (RFC 7235) and bearer tokens
//! (distribution's token.md and oauth.md).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = rest[start..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] != b'=' {
            // A token68 or a new challenge: stop at what we have.
            break;
        }
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                val.push(b[i] as char);
                i += 1;
            }
            i += 1;
        } else {
            let s = i;
            while i < b.len() && b[i] != b',' {
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

/// Reads a token endpoint's answer: `token` or `access_token`; a lifetime
/// under 60 s (or none) counts as 60 s, and the token is renewed 10 s early.
pub fn parse_token(body: &[u8]) -> Option<Token> {
    let r: TokenResponse = serde_json::from_slice(body).ok()?;
    let value = r.token.filter(|t| !t.is_empty()).or(r.access_token)?;
    let secs = r.expires_in.unwrap_or(60).max(60);
    Some(Token {
        value,
        expires: Instant::now() + Duration::from_secs(secs - 10),
    })
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
