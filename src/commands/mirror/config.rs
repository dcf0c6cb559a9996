//! The sync configuration file (YAML, versioned). Unknown keys are errors
//! that name the key and line; secrets can stay out of the file with
//! `${env:NAME}` and `${file:PATH}`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::content::referrers::TypeFilter;
use crate::content::{Platform, Reference};
use crate::engine::ReferrerOptions;
use crate::error::{Error, Result};
use crate::store::registry::{Credential, MAX_REQUESTS_PER_SECOND, RegistrySettings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub version: u32,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub registries: Vec<RegistryConfig>,
    /// The state file remembering what earlier runs mirrored (relative to
    /// the config file).
    #[serde(default)]
    pub state: Option<PathBuf>,
    /// A run is a full check of every target when the last one is older
    /// than this (`24h`; `0s`: every run).
    #[serde(default)]
    pub state_verify_every: Option<String>,
    pub sync: Vec<SyncEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Defaults {
    #[serde(default)]
    pub platforms: Option<Platforms>,
    #[serde(default)]
    pub referrers: Option<ReferrersConfig>,
    #[serde(default)]
    pub digest_tags: Option<bool>,
    #[serde(default)]
    pub immutable_tags: Option<Vec<String>>,
}

/// `referrers:` in `defaults` or an entry: whether the referrers of the
/// synced images (signatures, SBOMs, attestations) travel with them, and
/// which artifact types. A key an entry leaves out comes from `defaults`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReferrersConfig {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub types: Option<TypeFilter>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Platforms {
    /// `all`
    Keyword(String),
    List(Vec<String>),
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Verify,
    Insecure,
    Http,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegistryConfig {
    pub host: String,
    #[serde(default)]
    pub tls: Option<TlsMode>,
    #[serde(default)]
    pub cert_dir: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub max_requests: Option<usize>,
    /// Requests of the registry's announced quota to keep: at or below it,
    /// manifest and blob pulls fail rather than spend it.
    #[serde(default)]
    pub rate_limit_reserve: Option<u64>,
    #[serde(default)]
    pub requests_per_second: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Filters {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub semver: Option<String>,
    #[serde(default)]
    pub latest: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RepoFilters {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SyncEntry {
    pub source: String,
    #[serde(default)]
    pub target: Option<String>,
    /// Several targets (fan-out): each source blob is read once.
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    #[serde(default)]
    pub tags: Option<Filters>,
    #[serde(default)]
    pub repos: Option<RepoFilters>,
    #[serde(default)]
    pub platforms: Option<Platforms>,
    #[serde(default)]
    pub referrers: Option<ReferrersConfig>,
    #[serde(default)]
    pub digest_tags: Option<bool>,
    #[serde(default)]
    pub immutable_tags: Option<Vec<String>>,
}

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub registries: Vec<(String, RegistrySettings)>,
    pub entries: Vec<Entry>,
    /// `state:`, resolved against the config file's directory.
    pub state: Option<PathBuf>,
    /// `state-verify-every:`.
    pub state_verify_every: Option<std::time::Duration>,
    /// What the config mirrors from where to where, as a hash: a state
    /// file written for other entries is not trusted.
    pub identity: String,
}

/// Where an entry reads from.
#[derive(Debug, Clone)]
pub enum Source {
    /// One repository, its tags filtered.
    Repository(Reference),
    /// One pinned manifest.
    Digest(Reference),
    /// Every repository below a prefix (`host/team/`), from the catalog.
    Prefix { host: String, prefix: String },
}

#[derive(Debug, Clone)]
pub enum Target {
    /// A registry repository, or a prefix for prefix sources.
    Registry { host: String, path: String },
    /// A local OCI layout.
    Layout(PathBuf),
}

#[derive(Debug)]
pub struct Entry {
    pub index: usize,
    pub source: Source,
    /// Where the images go: one target, or several (fan-out), in order.
    pub targets: Vec<Target>,
    pub tags: TagFilter,
    pub repos: RepoFilter,
    pub platforms: Vec<Platform>,
    /// What travels with the entry's images.
    pub referrers: ReferrerOptions,
    /// Tags that never move once pushed (`immutable-tags:`): mirrored
    /// once, as the state file says, they are not looked at again.
    pub immutable_tags: Vec<regex::Regex>,
}

/// An entry's referrer options: each key from the entry, else from
/// `defaults`, else on (every type).
fn referrer_options(
    defaults: &Defaults,
    referrers: Option<&ReferrersConfig>,
    digest_tags: Option<bool>,
) -> ReferrerOptions {
    let d = defaults.referrers.as_ref();
    let on = ReferrerOptions::default();
    ReferrerOptions {
        enabled: referrers
            .and_then(|r| r.enabled)
            .or(d.and_then(|d| d.enabled))
            .unwrap_or(on.enabled),
        types: referrers
            .and_then(|r| r.types.clone())
            .or(d.and_then(|d| d.types.clone()))
            .unwrap_or(on.types),
        digest_tags: digest_tags
            .or(defaults.digest_tags)
            .unwrap_or(on.digest_tags),
    }
}

#[derive(Debug, Default)]
pub struct TagFilter {
    pub allow: Vec<regex::Regex>,
    pub deny: Vec<regex::Regex>,
    pub semver: Option<semver::VersionReq>,
    pub latest: Option<usize>,
}

#[derive(Debug, Default)]
pub struct RepoFilter {
    pub allow: Vec<regex::Regex>,
    pub deny: Vec<regex::Regex>,
}

/// The 1-based line of the first occurrence of `needle` in the file, for
/// messages about values that parsed but are wrong.
fn line_of(text: &str, needle: &str) -> usize {
    text.find(needle)
        .map(|i| text[..i].lines().count().max(1))
        .unwrap_or(1)
}

pub(super) struct Ctx<'a> {
    pub(super) path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    pub(super) fn err(&self, needle: &str, msg: String) -> Error {
        Error::Usage(format!(
            "{}:{}: {msg}",
            self.path.display(),
            line_of(self.text, needle)
        ))
    }

    fn regexes(&self, list: &[String], what: &str) -> Result<Vec<regex::Regex>> {
        list.iter()
            .map(|r| {
                regex::Regex::new(r).map_err(|e| {
                    self.err(
                        r,
                        format!(
                            "invalid {what} regular expression {r:?}: {}",
                            e.to_string().lines().last().unwrap_or("")
                        ),
                    )
                })
            })
            .collect()
    }

    fn platforms(&self, p: &Option<Platforms>) -> Result<Option<Vec<Platform>>> {
        match p {
            None => Ok(None),
            Some(Platforms::Keyword(k)) if k == "all" => Ok(Some(vec![])),
            Some(Platforms::Keyword(k)) => {
                Err(self.err(k, format!("platforms must be `all` or a list, not {k:?}")))
            }
            Some(Platforms::List(l)) => l
                .iter()
                .map(|s| Platform::parse(s).map_err(|e| self.err(s, e.to_string())))
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    }

    /// Expands `${env:NAME}` and `${file:PATH}` in a secret.
    fn secret(&self, value: &str) -> Result<String> {
        if let Some(name) = value
            .strip_prefix("${env:")
            .and_then(|v| v.strip_suffix('}'))
        {
            return std::env::var(name)
                .map_err(|_| self.err(value, format!("environment variable {name} is not set")));
        }
        if let Some(file) = value
            .strip_prefix("${file:")
            .and_then(|v| v.strip_suffix('}'))
        {
            let p = self.path.parent().unwrap_or(Path::new(".")).join(file);
            return std::fs::read_to_string(&p)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| {
                    self.err(
                        value,
                        format!("cannot read secret file {}: {e}", p.display()),
                    )
                });
        }
        Ok(value.to_string())
    }
}

/// Reads and validates a sync configuration.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::Usage(format!("{}: no such config file", path.display()))
        }
        _ => Error::Usage(format!("{}: cannot read: {e}", path.display())),
    })?;
    let file: ConfigFile = serde_saphyr::from_str(&text).map_err(|e| {
        let msg = e.to_string();
        let first = msg
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid YAML")
            .trim()
            .to_string();
        // The parser reports where; keep it on one line.
        let location = msg
            .lines()
            .find_map(|l| l.trim().strip_prefix("--> ").map(str::to_string))
            .or_else(|| {
                msg.find("line ").map(|i| {
                    msg[i..]
                        .split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
            });
        match location {
            Some(loc) => Error::Usage(format!("{}: {first} ({loc})", path.display())),
            None => Error::Usage(format!("{}: {first}", path.display())),
        }
    })?;
    let cx = Ctx { path, text: &text };
    if file.version != 1 {
        return Err(cx.err(
            "version",
            format!(
                "unsupported config version {} (this imgsync reads version 1)",
                file.version
            ),
        ));
    }
    let default_platforms = cx.platforms(&file.defaults.platforms)?.unwrap_or_default();
    let mut registries = Vec::new();
    for r in &file.registries {
        let mut s = RegistrySettings {
            cert_dir: r
                .cert_dir
                .as_ref()
                .map(|d| path.parent().unwrap_or(Path::new(".")).join(d)),
            max_requests: r.max_requests,
            rate_limit_reserve: r.rate_limit_reserve,
            requests_per_second: r.requests_per_second,
            ..Default::default()
        };
        if let Some(rps) = r.requests_per_second
            && !(rps > 0.0 && rps <= MAX_REQUESTS_PER_SECOND)
        {
            return Err(cx.err(
                "requests-per-second",
                format!(
                    "registry {}: requests-per-second must be above 0 and at most {MAX_REQUESTS_PER_SECOND}, not {rps}",
                    r.host
                ),
            ));
        }
        // `insecure` skips certificate checks but keeps TLS; only `http`
        // allows plain HTTP.
        match r.tls {
            Some(TlsMode::Insecure) => {
                s.tls_verify = Some(false);
                s.plain_http = Some(false);
            }
            Some(TlsMode::Http) => {
                s.tls_verify = Some(false);
                s.plain_http = Some(true);
            }
            _ => {}
        }
        match (&r.username, &r.password) {
            (Some(u), Some(p)) => {
                s.creds = Some(Credential::Basic {
                    username: cx.secret(u)?,
                    password: cx.secret(p)?,
                })
            }
            (None, None) => {}
            _ => {
                return Err(cx.err(
                    &r.host,
                    format!("registry {}: give both username and password", r.host),
                ));
            }
        }
        registries.push((r.host.clone(), s));
    }
    if file.sync.is_empty() {
        return Err(cx.err("sync", "the sync list is empty".into()));
    }
    let mut entries = Vec::new();
    for (index, e) in file.sync.iter().enumerate() {
        let source = super::endpoints::parse_source(&cx, &e.source)?;
        let targets = super::endpoints::parse_targets(&cx, e, &source)?;
        let f = e.tags.as_ref();
        let tags = TagFilter {
            allow: cx.regexes(
                f.map(|f| f.allow.as_slice()).unwrap_or_default(),
                "tag allow",
            )?,
            deny: cx.regexes(f.map(|f| f.deny.as_slice()).unwrap_or_default(), "tag deny")?,
            semver: match f.and_then(|f| f.semver.as_ref()) {
                Some(r) => Some(
                    semver::VersionReq::parse(r)
                        .map_err(|err| cx.err(r, format!("invalid semver range {r:?}: {err}")))?,
                ),
                None => None,
            },
            latest: f.and_then(|f| f.latest),
        };
        let r = e.repos.as_ref();
        let repos = RepoFilter {
            allow: cx.regexes(
                r.map(|r| r.allow.as_slice()).unwrap_or_default(),
                "repository allow",
            )?,
            deny: cx.regexes(
                r.map(|r| r.deny.as_slice()).unwrap_or_default(),
                "repository deny",
            )?,
        };
        if e.repos.is_some() && !matches!(source, Source::Prefix { .. }) {
            return Err(cx.err(
                &e.source,
                format!(
                    "{}: `repos` filters apply to prefix sources (ending in /) only",
                    e.source
                ),
            ));
        }
        let platforms = cx
            .platforms(&e.platforms)?
            .unwrap_or_else(|| default_platforms.clone());
        let referrers = referrer_options(&file.defaults, e.referrers.as_ref(), e.digest_tags);
        // An entry's list replaces the default one, as for `referrers`.
        let immutable = e
            .immutable_tags
            .as_ref()
            .or(file.defaults.immutable_tags.as_ref());
        let immutable_tags = cx.regexes(
            immutable.map(Vec::as_slice).unwrap_or_default(),
            "immutable-tags",
        )?;
        entries.push(Entry {
            index,
            source,
            targets,
            tags,
            repos,
            platforms,
            referrers,
            immutable_tags,
        });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let state_verify_every = match &file.state_verify_every {
        Some(s) => Some(parse_period(s).ok_or_else(|| {
            cx.err(
                "state-verify-every",
                format!("state-verify-every {s:?}: expected a duration such as 0s, 30m, 24h"),
            )
        })?),
        None => None,
    };
    Ok(Config {
        path: path.to_path_buf(),
        registries,
        identity: identity_of(&entries),
        entries,
        state: file.state.as_ref().map(|p| dir.join(p)),
        state_verify_every,
    })
}

/// A duration such as `90s`, `15m`, `24h`, `7d` (a bare number is seconds);
/// zero is allowed.
pub fn parse_period(s: &str) -> Option<std::time::Duration> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let scale = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(n.checked_mul(scale)?))
}

/// A hash of where each entry reads and writes: a state file remembers
/// targets, and one written for other sources or targets says nothing
/// about these. Filters are left out: changing them keeps what the state
/// knows of the tags still selected.
fn identity_of(entries: &[Entry]) -> String {
    let mut text = String::from("imgsync-sync-state-1\n");
    for e in entries {
        let source = match &e.source {
            Source::Repository(r) | Source::Digest(r) => r.to_string(),
            Source::Prefix { host, prefix } => format!("{host}/{prefix}/"),
        };
        // One target reads as it always did: states written before
        // fan-out stay valid.
        let target = e
            .targets
            .iter()
            .map(|t| match t {
                Target::Registry { host, path } => format!("{host}/{path}"),
                Target::Layout(p) => format!("oci:{}", p.display()),
            })
            .collect::<Vec<_>>()
            .join(",");
        text.push_str(&format!("{source}\t{target}\n"));
    }
    crate::content::Digest::sha256_of(text.as_bytes()).to_string()
}
