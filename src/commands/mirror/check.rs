//! The up-to-date check of a sync plan: which images a target holds
//! already, from `HEAD` requests (or from what the state of earlier runs
//! says was mirrored).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use super::config::Config;
use super::plan::{Group, Item, TargetRef, shows_attached};
use super::{SyncOptions, settings_for};
use crate::content::descriptor::ANNOTATION_REF_NAME;
use crate::content::{Digest, Reference};
use crate::error::{Error, Result};
use crate::store::registry::{ClientPool, ManifestHead};

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

/// The up-to-date check of the plan's groups, one group at a time on any
/// thread: the source's manifest `HEAD` once per group, then each target's.
/// An item whose check fails stays to copy (its copy reports the failure).
/// What `known` says was mirrored (the state of earlier runs) is trusted:
/// an item mirrored from the digest its source still has (or from an
/// immutable tag) is up to date without asking its target.
pub struct Checker<'a> {
    config: &'a Config,
    opts: &'a SyncOptions,
    clients: &'a ClientPool,
    known: &'a (dyn Fn(&Item) -> Option<Known> + Sync),
    /// The ref names of every layout target, read once.
    layouts: Mutex<HashMap<PathBuf, Vec<(String, String)>>>,
}

impl<'a> Checker<'a> {
    pub fn new(
        config: &'a Config,
        opts: &'a SyncOptions,
        clients: &'a ClientPool,
        known: &'a (dyn Fn(&Item) -> Option<Known> + Sync),
    ) -> Self {
        Checker {
            config,
            opts,
            clients,
            known,
            layouts: Mutex::new(HashMap::new()),
        }
    }

    /// Decides every item of a group (one source image, an item per
    /// target). The source's digest is asked once for the group, and at
    /// the same time each target's tag for the items that will need it (no
    /// state to trust): one round trip per image, not two.
    pub fn group(&self, group: Group) -> Group {
        let knowns: Vec<Option<Known>> = group.iter().map(|item| self.known_of(item)).collect();
        let asks_source = group
            .iter()
            .zip(&knowns)
            .any(|(item, k)| item.is_copyable() && !k.as_ref().is_some_and(|k| k.immutable));
        let Some(first) = group.first() else {
            return group;
        };
        let source_ref = first.source.clone();
        // The targets whose tag will be asked whatever the source says.
        let tagged: Vec<Option<&Reference>> = group
            .iter()
            .zip(&knowns)
            .map(|(item, k)| match &item.target {
                TargetRef::Registry(t)
                    if item.is_copyable()
                        && k.is_none()
                        && item.platforms.is_empty()
                        && t.tag.is_some() =>
                {
                    Some(t)
                }
                _ => None,
            })
            .collect();
        let ask = |r: &Reference| head(self.config, self.opts, self.clients, r).ok().flatten();
        let ask_targets =
            || -> Vec<Option<Option<Digest>>> { tagged.iter().map(|t| t.map(&ask)).collect() };
        let (source, targets) = match (asks_source, tagged.iter().any(Option::is_some)) {
            // Both: at the same time, one round trip for the image.
            (true, true) => std::thread::scope(|s| {
                let source = s.spawn(|| ask(&source_ref));
                let targets = ask_targets();
                (source.join().ok().flatten(), targets)
            }),
            (true, false) => (ask(&source_ref), ask_targets()),
            (false, _) => (None, ask_targets()),
        };
        group
            .into_iter()
            .zip(knowns)
            .zip(targets)
            .map(|((item, known), target)| self.item(item, known, source.clone(), target))
            .collect()
    }

    /// What the state says of an item; a platform subset is always copied
    /// (see `decide`): nothing to trust.
    fn known_of(&self, item: &Item) -> Option<Known> {
        item.platforms
            .is_empty()
            .then(|| (self.known)(item))
            .flatten()
    }

    /// Decides one item from its source's digest (`None`: unknown) and,
    /// when asked already, what its target's tag points at.
    fn item(
        &self,
        mut item: Item,
        known: Option<Known>,
        source: Option<Digest>,
        target: Option<Option<Digest>>,
    ) -> Item {
        let config = self.config;
        if !item.is_copyable() {
            return item;
        }
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
        if let Some(src) = source {
            if known.as_ref().is_some_and(|k| k.digest == src) {
                return trusted(item, src);
            }
            let mut target = target;
            decide(
                &mut item,
                src,
                |t| match target.take() {
                    // The tag's answer, asked beside the source.
                    Some(answer) if t.digest.is_none() => answer,
                    _ => head(config, self.opts, self.clients, t).ok().flatten(),
                },
                |path, name, digest| {
                    let mut cache = self.layouts.lock().unwrap_or_else(|e| e.into_inner());
                    let refs = cache
                        .entry(path.to_path_buf())
                        .or_insert_with(|| layout_refs(path));
                    refs.iter().any(|(n, d)| n == name && d == digest.as_str())
                },
            );
            item.attached = (item.up_to_date || item.retag) && attached(config, &item)
        }
        item
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
