//! Where credentials come from (formats reference §7.3): the command line,
//! `--authfile`, `REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json` (`auths`, `credHelpers`, `credsStore`, with the
//! docker-credential-helper protocol). Secrets never reach `Debug` output
//! or messages.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (docker's `identitytoken`).
    IdentityToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

impl Credential {
    /// Parses `USER:PASS` (as `--src-creds` takes it).
    pub fn parse(s: &str) -> Result<Credential> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credential::Basic {
                username: u.to_string(),
                password: p.to_string(),
            }),
            _ => Err(Error::Usage(
                "credentials must be given as USER:PASSWORD".into(),
            )),
        }
    }
}

/// The key docker uses for a registry host in `config.json`.
pub fn config_key(host: &str) -> String {
    if is_docker_hub(host) {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    }
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// Strips scheme and path from a `config.json` key and maps Docker Hub's
/// names to one.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    if is_docker_hub(k) {
        "docker.io".to_string()
    } else {
        k.to_string()
    }
}

/// The auth files to consult, in order.
pub fn auth_files(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let mut files = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(p));
    }
    files.push(docker_config_path());
    files
}

/// Where docker keeps `config.json`.
pub fn docker_config_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => PathBuf::from(d).join("config.json"),
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"));
            home.join(".docker/config.json")
        }
    }
}

/// Looks up credentials for `host` in the auth files.
pub fn lookup(host: &str, explicit_file: Option<&Path>) -> Result<Option<Credential>> {
    for file in auth_files(explicit_file) {
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::path("read credentials from", &file, e)),
        };
        let doc: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Format(format!("{}: invalid JSON: {e}", file.display())))?;
        if let Some(c) = from_config(&doc, host, &file)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn from_config(doc: &Value, host: &str, file: &Path) -> Result<Option<Credential>> {
    let wanted = normalize_key(host);
    if let Some(helper) = doc["credHelpers"]
        .as_object()
        .and_then(|h| h.iter().find(|(k, _)| normalize_key(k) == wanted))
        .and_then(|(_, v)| v.as_str())
    {
        return helper_get(helper, host);
    }
    // `auths`, or a legacy `.dockercfg` without the wrapper.
    let auths = doc["auths"].as_object().or_else(|| doc.as_object());
    let entry = auths.and_then(|a| {
        a.get(host).or_else(|| {
            a.iter()
                .find(|(k, _)| normalize_key(k) == wanted)
                .map(|(_, v)| v)
        })
    });
    if let Some(entry) = entry.and_then(Value::as_object) {
        if let Some(token) = entry
            .get("identitytoken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(Credential::IdentityToken(token.to_string())));
        }
        if let Some(auth) = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| {
                    Error::Format(format!(
                        "{}: the auth entry for {host} is not base64",
                        file.display()
                    ))
                })?;
            let text = String::from_utf8_lossy(&decoded);
            let text = text.trim_end_matches('\0');
            return match text.split_once(':') {
                Some((u, p)) => Ok(Some(Credential::Basic {
                    username: u.to_string(),
                    password: p.to_string(),
                })),
                None => Err(Error::Format(format!(
                    "{}: the auth entry for {host} is not user:password",
                    file.display()
                ))),
            };
        }
        if let (Some(u), Some(p)) = (
            entry.get("username").and_then(Value::as_str),
            entry.get("password").and_then(Value::as_str),
        ) {
            return Ok(Some(Credential::Basic {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
    }
    if let Some(store) = doc["credsStore"].as_str().filter(|s| !s.is_empty()) {
        return helper_get(store, host);
    }
    Ok(None)
}

/// Runs `docker-credential-<helper> get` for a host.
fn helper_get(helper: &str, host: &str) -> Result<Option<Credential>> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::Auth(format!(
                "cannot run credential helper {program} for {host}: {e}"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(config_key(host).as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Auth(format!("credential helper {program} for {host}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        return Err(Error::Auth(format!(
            "credential helper {program} failed for {host}: {}",
            stdout.trim()
        )));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        Error::Auth(format!(
            "credential helper {program} gave no JSON for {host}"
        ))
    })?;
    let user = v
        .get("Username")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let secret = v
        .get("Secret")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if user == "<token>" {
        return Ok(Some(Credential::IdentityToken(secret)));
    }
    Ok(Some(Credential::Basic {
        username: user.to_string(),
        password: secret,
    }))
}

/// Stores credentials for `host` in docker's `config.json` (or `file`),
/// keeping everything else in it; written atomically with mode 0600.
pub fn store(host: &str, cred: &Credential, file: Option<&Path>) -> Result<PathBuf> {
    let path = file
        .map(Path::to_path_buf)
        .unwrap_or_else(docker_config_path);
    let mut doc: Value = match std::fs::read(&path) {
        Ok(b) => parse_config(&path, &b)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(Error::path("read", &path, e)),
    };
    let Credential::Basic { username, password } = cred else {
        return Err(Error::Usage("only user and password can be stored".into()));
    };
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let Some(obj) = doc.as_object_mut() else {
        return Err(Error::Format(format!(
            "{}: not a docker config: the JSON is not an object",
            path.display()
        )));
    };
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        *auths = serde_json::json!({});
    }
    if let Some(auths) = auths.as_object_mut() {
        auths.insert(config_key(host), serde_json::json!({ "auth": auth }));
    }
    write_private(&path, &config_bytes(&doc))?;
    Ok(path)
}

/// Removes stored credentials for `host`; `Ok(false)` if there were none.
pub fn remove(host: &str, file: Option<&Path>) -> Result<bool> {
    let path = file
        .map(Path::to_path_buf)
        .unwrap_or_else(docker_config_path);
    let mut doc: Value = match std::fs::read(&path) {
        Ok(b) => parse_config(&path, &b)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::path("read", &path, e)),
    };
    let wanted = normalize_key(host);
    let Some(auths) = doc.get_mut("auths").and_then(Value::as_object_mut) else {
        return Ok(false);
    };
    let before = auths.len();
    auths.retain(|k, _| normalize_key(k) != wanted);
    if auths.len() == before {
        return Ok(false);
    }
    write_private(&path, &config_bytes(&doc))?;
    Ok(true)
}

/// A docker config to be changed: a JSON object whose `auths`, if there,
/// is an object too. Anything else is an error naming the file (indexing
/// into it to write would panic, and rewriting it would lose what it held).
fn parse_config(path: &Path, bytes: &[u8]) -> Result<Value> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::Format(format!("{}: invalid JSON: {e}", path.display())))?;
    let Some(obj) = doc.as_object() else {
        return Err(Error::Format(format!(
            "{}: not a docker config: the JSON is not an object",
            path.display()
        )));
    };
    if obj
        .get("auths")
        .is_some_and(|a| !a.is_object() && !a.is_null())
    {
        return Err(Error::Format(format!(
            "{}: not a docker config: \"auths\" is not an object",
            path.display()
        )));
    }
    Ok(doc)
}

/// A docker config as written back to its file.
#[allow(
    clippy::expect_used,
    reason = "a serde_json::Value (string keys only) always serialises"
)]
fn config_bytes(doc: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(doc).expect("JSON values serialise")
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::store::atomic_file::write_file_atomic(path, bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str) -> Option<Value> {
        let b = std::fs::read(format!(
            "../shared/peer-fixtures/containers-image/docker-config/{name}"
        ))
        .ok()?;
        serde_json::from_slice(&b).ok()
    }

    #[test]
    fn reads_peer_config_variants() {
        let Some(full) = peer("full.json") else {
            return;
        };
        let f = Path::new("full.json");
        for host in [
            "example.org",
            "localhost:5000",
            "docker.io",
            "normalize.example.org",
        ] {
            assert!(from_config(&full, host, f).unwrap().is_some(), "{host}");
        }
        let abnormal = peer("abnormal.json").unwrap();
        assert!(from_config(&abnormal, "docker.io", f).unwrap().is_some());
        assert!(
            from_config(&abnormal, "127.0.0.1:5000", f)
                .unwrap()
                .is_some()
        );
        let legacy = peer("legacy.json").unwrap();
        assert!(from_config(&legacy, "docker.io", f).unwrap().is_some());
        let token = peer("example_identitytoken.json").unwrap();
        let host = token["auths"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        assert!(matches!(
            from_config(&token, &normalize_key(&host), f).unwrap(),
            Some(Credential::IdentityToken(_))
        ));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credential::parse("me:s3cret").unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
