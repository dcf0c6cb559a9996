//! Turning a config into a list of images to copy, and finding the ones
//! that are already up to date.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::config::{Config, Entry, RepoFilter, Source, TagFilter, Target};
use super::{SyncOptions, settings_for, shard_of};
use crate::content::referrers::{digest_tag_subject, fallback_tag, is_attached_tag};
use crate::content::{Digest, Platform, Reference};
use crate::engine::{ReferrerOptions, pool};
use crate::error::{Error, ErrorClass, Result};
use crate::store::registry::ClientPool;
use crate::store::registry::tags::{list_repositories, list_tags};

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
    /// An image an entry selects for one of its targets, not yet checked
    /// against it.
    fn new(entry: &Entry, target: &Target, source: Reference, relative: Option<&str>) -> Item {
        let target = target_for(target, &source, relative);
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
            ..Item::reported(entry, source, None)
        }
    }

    /// An item that is only reported, never copied: named after the
    /// entry's first target.
    fn reported(entry: &Entry, source: Reference, relative: Option<&str>) -> Item {
        match entry.targets.first() {
            Some(t) => Item::new(entry, t, source, relative),
            None => Item::new(entry, &Target::Layout(PathBuf::new()), source, relative),
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
            ..Item::reported(entry, source, relative)
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

pub(crate) fn target_for(target: &Target, source: &Reference, relative: Option<&str>) -> TargetRef {
    match target {
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

/// Where a batch of the plan sits in it: the entry, then its images (0)
/// before what is only reported (1), then the repository in catalog order.
/// Listings arrive in any order; sorting by this key gives the plan's.
pub type BatchKey = (usize, u8, usize);

/// One source image, with an item per target of its entry (one, or
/// several for a fan-out entry); or one item that is only reported.
pub type Group = Vec<Item>;

/// Lists what every entry selects (tags, repositories), sharded, handing
/// each repository's images to `emit` as soon as its tag list arrives, so
/// that checking and copying them need not wait for the rest of the plan.
/// A source whose listing fails becomes a failed item of its own (see
/// [`Item::failed`]); only a configuration error ends the plan.
pub fn expand_streaming(
    config: &Config,
    opts: &SyncOptions,
    clients: &ClientPool,
    emit: &(dyn Fn(BatchKey, Vec<Group>) + Sync),
) -> Result<()> {
    let keep = |it: &Item| {
        opts.only.as_ref().is_none_or(|only| only.covers(it))
            && opts.shard.is_none_or(|(i, n)| {
                it.failed.as_ref().is_some_and(|f| f.catalog)
                    || shard_of(&format!("{}/{}", it.source.domain, it.source.path), n) == i
            })
    };
    let filtered = |key: BatchKey, groups: Vec<Group>| {
        let groups: Vec<Group> = groups
            .into_iter()
            .map(|g| g.into_iter().filter(|it| keep(it)).collect::<Group>())
            .filter(|g| !g.is_empty())
            .collect();
        if !groups.is_empty() {
            emit(key, groups);
        }
    };
    // Entries are listed in parallel: each listing is round trips to its
    // registry.
    let listed = pool::run_all(
        &config.entries,
        config.entries.len().clamp(1, 16),
        |_, entry| expand_entry(config, opts, clients, entry, &filtered),
    );
    listed.into_iter().collect()
}

/// The whole plan at once, in order, one item per image and target.
pub fn expand(config: &Config, opts: &SyncOptions, clients: &ClientPool) -> Result<Vec<Item>> {
    let batches: Mutex<Vec<(BatchKey, Vec<Group>)>> = Mutex::new(Vec::new());
    expand_streaming(config, opts, clients, &|key, groups| {
        batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key, groups))
    })?;
    let mut batches = batches.into_inner().unwrap_or_else(|e| e.into_inner());
    batches.sort_by_key(|(key, _)| *key);
    Ok(batches.into_iter().flat_map(|(_, g)| g).flatten().collect())
}

/// The images one entry selects, a repository at a time, to `emit`; names
/// the source lists that are not valid, and listings that failed, as
/// items that are only reported.
fn expand_entry(
    config: &Config,
    opts: &SyncOptions,
    clients: &ClientPool,
    entry: &Entry,
    emit: &(dyn Fn(BatchKey, Vec<Group>) + Sync),
) -> Result<()> {
    let images = |repo: usize| (entry.index, 0u8, repo);
    let reported = |repo: usize| (entry.index, 1u8, repo);
    let alone = |item: Item| vec![item];
    // One group per source image: an item per target.
    let group = |source: Reference, relative: Option<&str>, tags: Option<&Arc<Vec<String>>>| {
        entry
            .targets
            .iter()
            .map(|t| {
                let item = Item::new(entry, t, source.clone(), relative);
                match tags {
                    Some(tags) => item.with_tags(tags),
                    None => item,
                }
            })
            .collect::<Group>()
    };
    match &entry.source {
        Source::Digest(r) => emit(images(0), vec![group(r.clone(), None, None)]),
        Source::Repository(r) => {
            let client =
                clients.get(&r.domain, &settings_for(config, &r.domain, &opts.registry))?;
            let tags = match list_tags(&client, &r.path) {
                Ok(tags) => tags,
                Err(e) if ends_the_run(&e) => return Err(e),
                // One source down fails its own entry only.
                Err(e) => {
                    emit(
                        reported(0),
                        vec![alone(Item::unlisted(entry, r.clone(), None, e, false))],
                    );
                    return Ok(());
                }
            };
            let listed = Arc::new(tags.valid.clone());
            let own = filter_tags(&image_tags(&tags.valid, &entry.referrers), &entry.tags);
            let groups = own
                .into_iter()
                .map(|tag| {
                    let mut s = r.clone();
                    s.tag = Some(tag);
                    group(s, None, Some(&listed))
                })
                .collect();
            emit(images(0), groups);
            // A bad name the filters would have chosen is reported.
            let bad: Vec<Group> = filter_tags(&tags.rejected, &entry.tags)
                .into_iter()
                .map(|tag| alone(Item::rejected(entry, r.clone(), bad_tag(r, &tag))))
                .collect();
            emit(reported(0), bad);
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
                    let failed = Item::unlisted(entry, prefix_ref, None, e, true);
                    emit(reported(0), vec![alone(failed)]);
                    return Ok(());
                }
            };
            let under = |names: Vec<String>| -> Vec<String> {
                names
                    .into_iter()
                    .filter_map(|r| r.strip_prefix(&format!("{prefix}/")).map(str::to_string))
                    .collect()
            };
            let bad: Vec<Group> = filter_repos(under(listed.rejected), &entry.repos)
                .into_iter()
                .map(|rel| {
                    let why = bad_repository(host, &format!("{prefix}/{rel}"));
                    alone(Item::rejected(entry, prefix_ref.clone(), why))
                })
                .collect();
            emit(reported(0), bad);
            // Tag lists of every repository, fetched in parallel; each
            // repository's images go on as soon as its list is read.
            let repos = filter_repos(under(listed.valid), &entry.repos);
            let ended = pool::run_all(&repos, repos.len().clamp(1, 32), |k, rel| {
                let path = format!("{prefix}/{rel}");
                let repo = Reference {
                    domain: host.clone(),
                    path: path.clone(),
                    tag: None,
                    digest: None,
                };
                // A repository whose tags cannot be read fails alone.
                let tags = match list_tags(&client, &path) {
                    Ok(tags) => tags,
                    Err(e) if ends_the_run(&e) => return Err(e),
                    Err(e) => {
                        let failed = Item::unlisted(entry, repo, Some(rel), e, false);
                        emit(reported(k + 1), vec![alone(failed)]);
                        return Ok(());
                    }
                };
                let listed = Arc::new(tags.valid.clone());
                let own = image_tags(&tags.valid, &entry.referrers);
                let groups = filter_tags(&own, &entry.tags)
                    .into_iter()
                    .map(|tag| {
                        let mut source = repo.clone();
                        source.tag = Some(tag);
                        group(source, Some(rel), Some(&listed))
                    })
                    .collect();
                emit(images(k), groups);
                let bad: Vec<Group> = filter_tags(&tags.rejected, &entry.tags)
                    .into_iter()
                    .map(|tag| alone(Item::rejected(entry, repo.clone(), bad_tag(&repo, &tag))))
                    .collect();
                emit(reported(k + 1), bad);
                Ok(())
            });
            ended.into_iter().collect::<Result<()>>()?;
        }
    }
    Ok(())
}
