//! Turning a config into a list of images to copy, and finding the ones
//! that are already up to date.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::config::{Config, Entry, RepoFilter, Source, TagFilter, Target};
use super::{SyncOptions, settings_for, shard_of};
use crate::content::descriptor::ANNOTATION_REF_NAME;
use crate::content::referrers::{digest_tag_subject, fallback_tag, is_attached_tag};
use crate::content::{Digest, Platform, Reference};
use crate::engine::{ReferrerOptions, pool};
use crate::error::{Error, ErrorClass, Result};
use crate::store::registry::tags::{list_repositories, list_tags};
use crate::store::registry::{ClientPool, ManifestHead};

#[derive(Debug, Clone)]
pub enum TargetRef {
    /// A registry repository, with the tag to write (none for a digest pin).
    Registry(Reference),
    /// A local layout and the ref name to write (the full source name).
    Layout { path: PathBuf, name: String },
}

impl std::fmt::Display for TargetRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetRef::Registry(r) => write!(f, "{r}"),
            TargetRef::Layout { path, name } => write!(f, "oci:{}:{name}", path.display()),
        }
    }
}

/// One image of the plan.
#[derive(Debug, Clone)]
pub struct Item {
    pub entry: usize,
    pub source: Reference,
    pub target: TargetRef,
    pub platforms: Vec<Platform>,
    /// The source manifest digest found while planning.
    pub source_digest: Option<Digest>,
    pub up_to_date: bool,
    /// The target repository holds the source's manifest already (under
    /// another tag, or none): only the tag needs writing.
    pub retag: bool,
    /// The source registry listed a name for this item that is not a valid
    /// tag or repository name (`..`, control characters): why, with the
    /// name escaped. Such an item is never copied, only reported as failed;
    /// its `source` is the repository (or prefix) that listed it.
    pub rejected: Option<String>,
    /// The source repository's tag list as planning read it, handed to the
    /// copy so that finding referrers and digest tags costs no request.
    pub source_tags: Option<Arc<Vec<String>>>,
    /// Up to date (or to retag), yet the source's tag list shows a fallback
    /// tag or digest tag of its digest: the copy runs to carry what is
    /// attached.
    pub attached: bool,
    /// The source's tag list (or a prefix's catalog) could not be read: the
    /// registry is down, refuses, or the repository does not exist. Such an
    /// item stands for the repository (or prefix) whose images are unknown;
    /// its `source` is that repository, it is never copied, only reported
    /// as failed, and the rest of the run goes on.
    pub failed: Option<ListingFailure>,
    /// Up to date on the word of the state file: the target was not asked.
    pub state_skipped: bool,
}

/// Why a repository's tag list or a prefix's catalog could not be read.
#[derive(Debug)]
pub struct ListingFailure {
    pub error: Error,
    /// It was the catalog: every shard of a run needs it to know its own
    /// repositories, so every shard reports it.
    pub catalog: bool,
}

impl Clone for ListingFailure {
    fn clone(&self) -> Self {
        ListingFailure {
            error: self.error.duplicate(),
            catalog: self.catalog,
        }
    }
}

impl Item {
    /// An image an entry selects, not yet checked against its target.
    fn new(entry: &Entry, source: Reference, relative: Option<&str>) -> Item {
        let target = target_for(entry, &source, relative);
        Item {
            entry: entry.index,
            source,
            target,
            platforms: entry.platforms.clone(),
            source_digest: None,
            up_to_date: false,
            retag: false,
            rejected: None,
            source_tags: None,
            attached: false,
            failed: None,
            state_skipped: false,
        }
    }

    fn with_tags(mut self, tags: &Arc<Vec<String>>) -> Item {
        self.source_tags = Some(tags.clone());
        self
    }

    /// An item standing for a name the source listed that is not valid.
    fn rejected(entry: &Entry, source: Reference, why: String) -> Item {
        Item {
            rejected: Some(why),
            ..Item::new(entry, source, None)
        }
    }

    /// An item standing for a repository (or prefix, `relative` none) whose
    /// listing failed.
    fn unlisted(
        entry: &Entry,
        source: Reference,
        relative: Option<&str>,
        error: Error,
        catalog: bool,
    ) -> Item {
        Item {
            failed: Some(ListingFailure { error, catalog }),
            ..Item::new(entry, source, relative)
        }
    }

    /// Is this item copied, or does it only report why not?
    pub fn is_copyable(&self) -> bool {
        self.rejected.is_none() && self.failed.is_none()
    }
}

/// Does a listing failure end the whole run rather than its own entry? A
/// usage error is the configuration's fault (a bad certificate directory,
/// say): it stays a configuration error, found before anything is done.
fn ends_the_run(e: &Error) -> bool {
    e.class() == ErrorClass::Usage
}

/// Why a tag a registry listed is not used (the name escaped).
fn bad_tag(repo: &Reference, tag: &str) -> String {
    format!("{repo}: the registry lists tag {tag:?}, which is not a valid tag name; skipped")
}

/// Why a repository a registry's catalog listed is not used (the name
/// escaped).
fn bad_repository(host: &str, name: &str) -> String {
    format!(
        "{host}: the catalog lists repository {name:?}, which is not a valid repository name; skipped"
    )
}

/// Parses a tag as a version: `v1.2.3`, `1.2`, `3` (missing parts are 0).
pub(crate) fn version_of(tag: &str) -> Option<semver::Version> {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    if let Ok(v) = semver::Version::parse(t) {
        return Some(v);
    }
    let (core, pre) = match t.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (t, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut full = parts.join(".");
    for _ in parts.len()..3 {
        full.push_str(".0");
    }
    if let Some(p) = pre {
        full.push('-');
        full.push_str(p);
    }
    semver::Version::parse(&full).ok()
}

/// Does a tag travel with its subject rather than as an image of its own?
/// A fallback tag (`sha256-<hex>`) does when referrers are carried, a
/// digest tag (`sha256-<hex>.sig`) when digest tags are; otherwise either
/// is an ordinary tag that the tag filters decide on.
pub fn travels_with_subject(tag: &str, opts: &ReferrerOptions) -> bool {
    if !is_attached_tag(tag) {
        return false;
    }
    match digest_tag_subject(tag) {
        Some(_) => opts.digest_tags,
        None => opts.enabled,
    }
}

/// Does a tag list show something attached to `digest` that `opts`
/// carries: its fallback tag or one of its digest tags? Needs no request.
pub fn shows_attached(tags: &[String], digest: &Digest, opts: &ReferrerOptions) -> bool {
    let fallback = fallback_tag(digest);
    tags.iter().any(|t| {
        (opts.enabled && t == &fallback)
            || (opts.digest_tags
                && t.starts_with(&fallback)
                && digest_tag_subject(t).is_some_and(|(d, _)| &d == digest))
    })
}

/// The tags of a listing that are images of their own under `opts`.
fn image_tags(tags: &[String], opts: &ReferrerOptions) -> Vec<String> {
    tags.iter()
        .filter(|t| !travels_with_subject(t, opts))
        .cloned()
        .collect()
}

/// Applies allow/deny, the semver range and `latest` to a tag list.
pub fn filter_tags(tags: &[String], f: &TagFilter) -> Vec<String> {
    let mut kept: Vec<&String> = tags
        .iter()
        .filter(|t| f.allow.is_empty() || f.allow.iter().any(|r| r.is_match(t)))
        .filter(|t| !f.deny.iter().any(|r| r.is_match(t)))
        .collect();
    if let Some(req) = &f.semver {
        kept.retain(|t| version_of(t).is_some_and(|v| req.matches(&v)));
    }
    if let Some(n) = f.latest {
        let mut versioned: Vec<(semver::Version, &String)> = kept
            .iter()
            .filter_map(|t| version_of(t).map(|v| (v, *t)))
            .collect();
        versioned.sort();
        let newest: Vec<&String> = versioned.iter().rev().take(n).map(|(_, t)| *t).collect();
        kept.retain(|t| newest.contains(t));
    }
    let mut out: Vec<String> = kept.into_iter().cloned().collect();
    out.sort();
    out
}

pub(crate) fn filter_repos(repos: Vec<String>, f: &RepoFilter) -> Vec<String> {
    repos
        .into_iter()
        .filter(|r| f.allow.is_empty() || f.allow.iter().any(|x| x.is_match(r)))
        .filter(|r| !f.deny.iter().any(|x| x.is_match(r)))
        .collect()
}

pub(crate) fn target_for(entry: &Entry, source: &Reference, relative: Option<&str>) -> TargetRef {
    match &entry.target {
        Target::Registry { host, path } => TargetRef::Registry(Reference {
            domain: host.clone(),
            path: match relative {
                Some(rel) => format!("{path}/{rel}"),
                None => path.clone(),
            },
            tag: source.tag.clone(),
            digest: None,
        }),
        Target::Layout(p) => TargetRef::Layout {
            path: p.clone(),
            name: source.to_string(),
        },
    }
}

/// Lists what every entry selects (tags, repositories), sharded. A source
/// whose listing fails becomes a failed item of its own (see
/// [`Item::failed`]); only a configuration error ends the plan.
pub fn expand(config: &Config, opts: &SyncOptions, clients: &ClientPool) -> Result<Vec<Item>> {
    // Entries are listed in parallel: each listing is round trips to its
    // registry. Items keep the order of the entries.
    let listed = pool::run_all(
        &config.entries,
        config.entries.len().clamp(1, 16),
        |_, entry| {
            // Items reported but not copied follow the entry's images.
            let (mut items, mut unplanned) = (Vec::new(), Vec::new());
            expand_entry(config, opts, clients, entry, &mut items, &mut unplanned)?;
            items.extend(unplanned);
            Ok::<_, Error>(items)
        },
    );
    let mut items = Vec::new();
    for entry_items in listed {
        items.extend(entry_items?);
    }
    if let Some(only) = &opts.only {
        items.retain(|it| only.covers(it));
    }
    if let Some((i, n)) = opts.shard {
        items.retain(|it| {
            it.failed.as_ref().is_some_and(|f| f.catalog)
                || shard_of(&format!("{}/{}", it.source.domain, it.source.path), n) == i
        });
    }
    Ok(items)
}

/// The images one entry selects into `items`; names the source lists that
/// are not valid, and listings that failed, into `rejected`.
fn expand_entry(
    config: &Config,
    opts: &SyncOptions,
    clients: &ClientPool,
    entry: &Entry,
    items: &mut Vec<Item>,
    rejected: &mut Vec<Item>,
) -> Result<()> {
    let mut add = |source: Reference, relative: Option<&str>, tags: Option<&Arc<Vec<String>>>| {
        let item = Item::new(entry, source, relative);
        items.push(match tags {
            Some(t) => item.with_tags(t),
            None => item,
        });
    };
    match &entry.source {
        Source::Digest(r) => add(r.clone(), None, None),
        Source::Repository(r) => {
            let client =
                clients.get(&r.domain, &settings_for(config, &r.domain, &opts.registry))?;
            let tags = match list_tags(&client, &r.path) {
                Ok(tags) => tags,
                Err(e) if ends_the_run(&e) => return Err(e),
                // One source down fails its own entry only.
                Err(e) => {
                    rejected.push(Item::unlisted(entry, r.clone(), None, e, false));
                    return Ok(());
                }
            };
            let listed = Arc::new(tags.valid.clone());
            for tag in filter_tags(&image_tags(&tags.valid, &entry.referrers), &entry.tags) {
                let mut s = r.clone();
                s.tag = Some(tag);
                add(s, None, Some(&listed));
            }
            // A bad name the filters would have chosen is reported.
            for tag in filter_tags(&tags.rejected, &entry.tags) {
                rejected.push(Item::rejected(entry, r.clone(), bad_tag(r, &tag)));
            }
        }
        Source::Prefix { host, prefix } => {
            let client = clients.get(host, &settings_for(config, host, &opts.registry))?;
            let prefix_ref = Reference {
                domain: host.clone(),
                path: prefix.clone(),
                tag: None,
                digest: None,
            };
            let listed = match list_repositories(&client) {
                Ok(listed) => listed,
                Err(e) if ends_the_run(&e) => return Err(e),
                Err(e) => {
                    rejected.push(Item::unlisted(entry, prefix_ref, None, e, true));
                    return Ok(());
                }
            };
            let under = |names: Vec<String>| -> Vec<String> {
                names
                    .into_iter()
                    .filter_map(|r| r.strip_prefix(&format!("{prefix}/")).map(str::to_string))
                    .collect()
            };
            for rel in filter_repos(under(listed.rejected), &entry.repos) {
                let why = bad_repository(host, &format!("{prefix}/{rel}"));
                rejected.push(Item::rejected(entry, prefix_ref.clone(), why));
            }
            let below = under(listed.valid);
            // Tag lists of every repository, fetched in parallel.
            let repos = filter_repos(below, &entry.repos);
            let lists = pool::run_all(&repos, repos.len().clamp(1, 32), |_, rel| {
                list_tags(&client, &format!("{prefix}/{rel}"))
            });
            for (rel, tags) in repos.iter().zip(lists) {
                let path = format!("{prefix}/{rel}");
                let repo = Reference {
                    domain: host.clone(),
                    path: path.clone(),
                    tag: None,
                    digest: None,
                };
                // A repository whose tags cannot be read fails alone.
                let tags = match tags {
                    Ok(tags) => tags,
                    Err(e) if ends_the_run(&e) => return Err(e),
                    Err(e) => {
                        rejected.push(Item::unlisted(entry, repo, Some(rel), e, false));
                        continue;
                    }
                };
                for tag in filter_tags(&tags.rejected, &entry.tags) {
                    let why = bad_tag(&repo, &tag);
                    rejected.push(Item::rejected(entry, repo.clone(), why));
                }
                let listed = Arc::new(tags.valid.clone());
                let own = image_tags(&tags.valid, &entry.referrers);
                for tag in filter_tags(&own, &entry.tags) {
                    let source = Reference {
                        domain: host.clone(),
                        path: path.clone(),
                        tag: Some(tag),
                        digest: None,
                    };
                    add(source, Some(rel), Some(&listed));
                }
            }
        }
    }
    Ok(())
}

/// `HEAD` of a manifest: its digest, or `None` when absent.
fn head(
    config: &Config,
    opts: &SyncOptions,
    pool: &ClientPool,
    r: &Reference,
) -> Result<Option<Digest>> {
    let client = pool.get(&r.domain, &settings_for(config, &r.domain, &opts.registry))?;
    let reference = match (&r.digest, &r.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => return Err(Error::Usage(format!("{r}: no tag or digest"))),
    };
    Ok(match client.head_manifest(&r.path, &reference)? {
        ManifestHead::Absent => None,
        ManifestHead::Present(digest) => digest.or_else(|| r.digest.clone()),
    })
}

/// What the state file says an earlier run mirrored to an item's target.
#[derive(Debug, Clone)]
pub struct Known {
    /// The source digest mirrored there.
    pub digest: Digest,
    /// The tag never moves (`immutable-tags`, or a digest pin): the
    /// source is not asked either.
    pub immutable: bool,
}

/// Marks the items whose target already has the source's digest, with
/// `HEAD` requests in parallel. An item whose check fails stays to copy
/// (its copy reports the failure).
pub fn check(config: &Config, opts: &SyncOptions, clients: &ClientPool, items: &mut [Item]) {
    check_knowing(config, opts, clients, items, &|_| None)
}

/// [`check`], trusting what `known` says was mirrored: an item mirrored
/// from the digest its source still has (or from an immutable tag) is up
/// to date without asking its target.
pub fn check_knowing(
    config: &Config,
    opts: &SyncOptions,
    clients: &ClientPool,
    items: &mut [Item],
    known: &(dyn Fn(&Item) -> Option<Known> + Sync),
) {
    let layouts: Mutex<std::collections::HashMap<PathBuf, Vec<(String, String)>>> =
        Default::default();
    // HEAD requests are tiny and latency-bound: many at once.
    let workers = (opts.jobs * 4).clamp(8, 32);
    let decided = pool::run_all(items, workers, |_, item| {
        let mut item = item.clone();
        if !item.is_copyable() {
            return item;
        }
        // A platform subset is always copied (see `decide`): nothing to trust.
        let known = item.platforms.is_empty().then(|| known(&item)).flatten();
        let trusted = |mut item: Item, digest: Digest| {
            item.source_digest = Some(digest);
            item.up_to_date = true;
            item.state_skipped = true;
            item.attached = attached(config, &item);
            item
        };
        if let Some(k) = known.as_ref().filter(|k| k.immutable) {
            return trusted(item, k.digest.clone());
        }
        if let Ok(Some(src)) = head(config, opts, clients, &item.source) {
            if known.as_ref().is_some_and(|k| k.digest == src) {
                return trusted(item, src);
            }
            decide(
                &mut item,
                src,
                |t| head(config, opts, clients, t).ok().flatten(),
                |path, name, digest| {
                    let mut cache = layouts.lock().unwrap_or_else(|e| e.into_inner());
                    let refs = cache
                        .entry(path.to_path_buf())
                        .or_insert_with(|| layout_refs(path));
                    refs.iter().any(|(n, d)| n == name && d == digest.as_str())
                },
            );
            item.attached = (item.up_to_date || item.retag) && attached(config, &item)
        }
        item
    });
    for (item, d) in items.iter_mut().zip(decided) {
        *item = d;
    }
}

/// Does the item's tag list show something attached to its source digest
/// that its entry carries?
fn attached(config: &Config, item: &Item) -> bool {
    let (Some(tags), Some(digest)) = (&item.source_tags, &item.source_digest) else {
        return false;
    };
    config
        .entries
        .iter()
        .find(|e| e.index == item.entry)
        .is_some_and(|e| shows_attached(tags, digest, &e.referrers))
}

/// The up-to-date decision for an item whose source manifest is `src`:
/// records it, then marks the item up to date when its target names the
/// same digest, or to be retagged when a registry target holds that
/// manifest under another tag or none. `resolve` answers what a target
/// reference points at (a `HEAD`; `None` when absent or unknown);
/// `layout_names` whether a layout names `name` at a digest.
pub(crate) fn decide(
    item: &mut Item,
    src: Digest,
    mut resolve: impl FnMut(&Reference) -> Option<Digest>,
    layout_names: impl FnOnce(&std::path::Path, &str, &Digest) -> bool,
) {
    item.source_digest = Some(src.clone());
    // A platform subset has its own digest: always copied (blobs already
    // there are skipped).
    if !item.platforms.is_empty() {
        return;
    }
    let up = match &item.target {
        TargetRef::Registry(t) => {
            let mut t = t.clone();
            if t.tag.is_none() {
                t.digest = Some(src.clone());
            }
            let up = resolve(&t).as_ref() == Some(&src);
            if !up && t.tag.is_some() {
                // The manifest may be there already, by digest.
                let mut by_digest = t.clone();
                by_digest.digest = Some(src.clone());
                by_digest.tag = None;
                item.retag = resolve(&by_digest).as_ref() == Some(&src);
            }
            up
        }
        TargetRef::Layout { path, name } => layout_names(path, name, &src),
    };
    item.up_to_date = up;
}

/// The ref names of a layout's `index.json` with their digests; none when
/// it cannot be read.
pub(crate) fn layout_refs(path: &std::path::Path) -> Vec<(String, String)> {
    let Ok(bytes) = std::fs::read(path.join("index.json")) else {
        return vec![];
    };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return vec![];
    };
    doc.get("manifests")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|d| {
                    Some((
                        d.get("annotations")?
                            .get(ANNOTATION_REF_NAME)?
                            .as_str()?
                            .to_string(),
                        d.get("digest")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}
