//! Memory between sync runs (`--state FILE`, `state:` in the config): per
//! target tag, the source digest last mirrored there and when. With it a
//! run asks the source only (one `HEAD` per tag) and leaves the target
//! alone for every tag whose source digest has not changed since; a tag
//! matching `immutable-tags` (or a digest pin) the state says is mirrored
//! costs no request at all.
//!
//! The state is a cache, never the truth: a file that cannot be read,
//! does not parse, is too large or was written for another config is
//! ignored with a warning, and the run works as if it were absent. A full
//! check (`--verify-target`, or the last one older than
//! `state-verify-every`) asks every target again and rewrites the state.
//! It is written after the run only, atomically, with what succeeded.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::report::{Action, RunReport};
use crate::commands::mirror::check::Known;
use crate::commands::mirror::config::Config;
use crate::commands::mirror::plan::{Item, TargetRef};
use crate::commands::mirror::shard_of;
use crate::content::Digest;
use crate::error::Result;

/// A state file larger than this is not read: it is a cache, and a
/// million tags take well under this.
pub const MAX_STATE_BYTES: u64 = 256 << 20;

const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    /// The identity of the config that wrote it ([`Config::identity`]).
    pub config: String,
    /// When the last full check of every target ended (Unix seconds).
    pub verified_at: Option<u64>,
    /// What was mirrored, by target (see [`key`]).
    pub images: BTreeMap<String, Record>,
    /// The blobs (configs, layers) copies saw at each target repository
    /// (`host/path`): a later copy to it skips asking about them, and
    /// another repository of the registry may mount them from it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blobs: BTreeMap<String, BTreeSet<String>>,
}

/// One target tag (or pinned digest) and what was mirrored there.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub source: String,
    /// The source repository (`host/path`), which decides its shard.
    pub repository: String,
    /// The source manifest digest mirrored.
    pub digest: String,
    /// When that digest was first seen mirrored there (Unix seconds).
    pub mirrored_at: u64,
}

/// What reading a state file gave.
#[derive(Debug)]
pub struct Loaded {
    /// The state, when there is one for this config.
    pub state: Option<State>,
    /// Why a file that is there was not used (one line).
    pub warning: Option<String>,
}

/// Reads the state file at `path` for the config of `identity`. A missing
/// file is no state; anything wrong with one that is there is a warning
/// and no state.
pub fn load(path: &Path, identity: &str) -> Loaded {
    let ignored = |why: String| Loaded {
        state: None,
        warning: Some(format!(
            "state file {}: {why}; ignored, a fresh one will be written",
            path.display()
        )),
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Loaded {
                state: None,
                warning: None,
            };
        }
        Err(e) => return ignored(format!("cannot open: {e}")),
    };
    let mut bytes = Vec::new();
    if let Err(e) = file.take(MAX_STATE_BYTES + 1).read_to_end(&mut bytes) {
        return ignored(format!("cannot read: {e}"));
    }
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return ignored(format!("larger than {} MiB", MAX_STATE_BYTES >> 20));
    }
    let state: State = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(e) => return ignored(format!("not a valid state file ({e})")),
    };
    if state.version != FORMAT_VERSION {
        return ignored(format!("unknown state version {}", state.version));
    }
    if state.config != identity {
        return ignored("written for another config (other sources or targets)".into());
    }
    Loaded {
        state: Some(state),
        warning: None,
    }
}

/// Writes the state atomically and durably (temporary file, fsync,
/// rename, directory fsync): a reader sees the old file or the new one.
pub fn save(path: &Path, state: &State) -> Result<()> {
    let bytes = serde_json::to_vec(state)
        .map_err(|e| crate::error::Error::Format(format!("state: {e}")))?;
    crate::store::atomic_file::write_file_atomic(path, &bytes, 0o644)
}

/// Does this run ask every target (a full check)? Yes when asked to, when
/// there is no state to trust, and when the last full check is older than
/// `every`.
pub fn full_check_due(
    state: Option<&State>,
    every: Option<Duration>,
    verify_target: bool,
    now: u64,
) -> bool {
    let Some(state) = state else { return true };
    if verify_target {
        return true;
    }
    match (every, state.verified_at) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(every), Some(at)) => now.saturating_sub(at) >= every.as_secs(),
    }
}

/// The state's name for an item's target: the target reference, with the
/// digest for a pin (several pins share one repository and no tag).
pub fn key(item: &Item) -> String {
    match &item.source.digest {
        Some(d) => format!("{}@{d}", item.target),
        None => item.target.to_string(),
    }
}

/// What `state` says of `item`, for the up-to-date check ([`crate::commands::mirror::check::Checker`]).
pub fn known(config: &Config, state: &State, item: &Item) -> Option<Known> {
    let record = state.images.get(&key(item))?;
    // The same target filled from another source says nothing of this one.
    if record.source != item.source.to_string() {
        return None;
    }
    let digest: Digest = record.digest.parse().ok()?;
    let immutable = item.source.digest.is_some()
        || item.source.tag.as_deref().is_some_and(|tag| {
            config
                .entries
                .iter()
                .find(|e| e.index == item.entry)
                .is_some_and(|e| e.immutable_tags.iter().any(|r| r.is_match(tag)))
        });
    Some(Known { digest, immutable })
}

/// What a run covered, which decides what its state may conclude.
#[derive(Debug, Clone, Copy)]
pub struct Coverage {
    /// Only this shard of the plan (`--shard`).
    pub shard: Option<(usize, usize)>,
    /// Every target was asked.
    pub full_check: bool,
    /// Only some images were taken (`--retry-failed`).
    pub partial: bool,
}

/// The state after a run: the previous one (if it was this config's) with
/// what this run mirrored or found mirrored, without what failed; records
/// of images this run no longer selects are dropped when it listed every
/// source (of its shard) and took every image, and kept otherwise.
pub fn updated(
    previous: Option<State>,
    identity: &str,
    items: &[Item],
    report: &RunReport,
    coverage: Coverage,
    now: u64,
) -> State {
    let Coverage {
        shard,
        full_check,
        partial,
    } = coverage;
    let mut state = previous.unwrap_or_else(|| State {
        version: FORMAT_VERSION,
        config: identity.to_string(),
        verified_at: None,
        images: BTreeMap::new(),
        blobs: BTreeMap::new(),
    });
    // A full check trusts nothing it did not see this run.
    if full_check {
        state.blobs.clear();
    }
    let mut planned = HashSet::new();
    let mut repositories = HashSet::new();
    for (item, image) in items.iter().zip(&report.images) {
        if !item.is_copyable() || !item.platforms.is_empty() {
            continue;
        }
        let key = key(item);
        planned.insert(key.clone());
        let repository = match &item.target {
            TargetRef::Registry(r) => Some(format!("{}/{}", r.domain, r.path)),
            TargetRef::Layout { .. } => None,
        };
        if let Some(r) = &repository {
            repositories.insert(r.clone());
        }
        let digest = match (&image.action, &image.source_digest) {
            (Action::Copied | Action::UpToDate, Some(d)) => d.clone(),
            // A failure is forgotten: the next run tries it again, and
            // asks about every blob of its repository again.
            _ => {
                state.images.remove(&key);
                if let Some(r) = &repository {
                    state.blobs.remove(r);
                }
                continue;
            }
        };
        if let Some(r) = repository.filter(|_| !image.blobs.is_empty()) {
            state
                .blobs
                .entry(r)
                .or_default()
                .extend(image.blobs.iter().cloned());
        }
        let mirrored_at = match state.images.get(&key) {
            Some(r) if r.digest == digest => r.mirrored_at,
            _ => now,
        };
        let record = Record {
            source: item.source.to_string(),
            repository: format!("{}/{}", item.source.domain, item.source.path),
            digest,
            mirrored_at,
        };
        state.images.insert(key, record);
    }
    // A run that took only some images (`--retry-failed`) says nothing of
    // the others.
    let listed_everything = report.listings_failed == 0 && !partial;
    if listed_everything {
        let ours = |r: &Record| shard.is_none_or(|(i, n)| shard_of(&r.repository, n) == i);
        state
            .images
            .retain(|key, r| planned.contains(key) || !ours(r));
        // Target repositories are not split by shard: only a run over
        // every shard knows which ones the config still fills.
        if shard.is_none() {
            state.blobs.retain(|r, _| repositories.contains(r));
        }
        if full_check {
            state.verified_at = Some(now);
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(verified_at: Option<u64>) -> State {
        State {
            version: FORMAT_VERSION,
            config: "id".into(),
            verified_at,
            images: BTreeMap::new(),
            blobs: BTreeMap::new(),
        }
    }

    #[test]
    fn a_full_check_is_due_without_state_when_asked_and_when_the_last_is_old() {
        let day = Some(Duration::from_secs(86400));
        assert!(full_check_due(None, None, false, 100));
        assert!(full_check_due(Some(&state(Some(100))), None, true, 100));
        assert!(!full_check_due(
            Some(&state(Some(100))),
            None,
            false,
            1 << 40
        ));
        assert!(!full_check_due(Some(&state(Some(100))), day, false, 86499));
        assert!(full_check_due(Some(&state(Some(100))), day, false, 86500));
        assert!(full_check_due(Some(&state(None)), day, false, 100));
        let zero = Some(Duration::ZERO);
        assert!(full_check_due(Some(&state(Some(100))), zero, false, 100));
    }

    #[test]
    fn a_bad_state_file_is_a_warning_naming_it_never_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let none = load(&path, "id");
        assert!(none.state.is_none() && none.warning.is_none());
        for (text, why) in [
            ("{not json", "not a valid state file"),
            ("[]", "not a valid state file"),
            (
                r#"{"version":1,"config":"other","verified_at":null,"images":{}}"#,
                "another config",
            ),
            (
                r#"{"version":9,"config":"id","verified_at":null,"images":{}}"#,
                "version",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let l = load(&path, "id");
            assert!(l.state.is_none(), "{text}");
            let w = l.warning.unwrap();
            assert!(w.contains(why) && w.contains("state.json"), "{w}");
            assert!(!w.contains('\n'), "{w}");
        }
        save(&path, &state(Some(5))).unwrap();
        assert_eq!(load(&path, "id").state.unwrap().verified_at, Some(5));
    }

    fn item(repo: &str, tag: &str) -> Item {
        let source =
            crate::content::Reference::parse(&format!("src.example/{repo}:{tag}")).unwrap();
        let target =
            crate::content::Reference::parse(&format!("dst.example/{repo}:{tag}")).unwrap();
        Item {
            entry: 0,
            source,
            target: crate::commands::mirror::plan::TargetRef::Registry(target),
            platforms: vec![],
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

    fn report(items: &[Item], outcomes: &[(Action, Option<&str>)]) -> RunReport {
        let images = items
            .iter()
            .zip(outcomes)
            .map(|(i, (action, digest))| {
                let mut r = super::super::report::up_to_date(i);
                r.action = *action;
                r.source_digest = digest.map(str::to_string);
                r
            })
            .collect();
        RunReport::new(images, Duration::ZERO, 0)
    }

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn what_failed_is_forgotten_what_moved_is_dated_anew_and_unselected_tags_go() {
        let items = [item("app", "1"), item("app", "2"), item("app", "3")];
        let first = report(
            &items,
            &[
                (Action::Copied, Some(D1)),
                (Action::UpToDate, Some(D1)),
                (Action::Failed, Some(D2)),
            ],
        );
        let s = updated(
            None,
            "id",
            &items,
            &first,
            Coverage {
                shard: None,
                full_check: true,
                partial: false,
            },
            10,
        );
        assert_eq!(s.verified_at, Some(10));
        assert_eq!(s.images.len(), 2, "{:?}", s.images);
        assert!(!s.images.contains_key("dst.example/app:3"));
        // app:1 moved, app:2 failed this time, app:3 is no longer selected.
        let second = report(
            &items[..2],
            &[(Action::Copied, Some(D2)), (Action::Failed, None)],
        );
        let s = updated(
            Some(s),
            "id",
            &items[..2],
            &second,
            Coverage {
                shard: None,
                full_check: false,
                partial: false,
            },
            20,
        );
        assert_eq!(s.verified_at, Some(10), "not a full check");
        let one = &s.images["dst.example/app:1"];
        assert_eq!((one.digest.as_str(), one.mirrored_at), (D2, 20));
        assert_eq!(s.images.len(), 1, "{:?}", s.images);
        // Unchanged: the date it was first mirrored stays.
        let third = report(&items[..1], &[(Action::UpToDate, Some(D2))]);
        let s = updated(
            Some(s),
            "id",
            &items[..1],
            &third,
            Coverage {
                shard: None,
                full_check: false,
                partial: false,
            },
            30,
        );
        assert_eq!(s.images["dst.example/app:1"].mirrored_at, 20);
    }

    #[test]
    fn a_partial_run_keeps_the_records_of_what_it_did_not_take() {
        let items = [item("a", "1"), item("b", "1")];
        let all = report(&items, &[(Action::Copied, Some(D1)); 2]);
        let full = Coverage {
            shard: None,
            full_check: true,
            partial: false,
        };
        let s = updated(None, "id", &items, &all, full, 1);
        // `--retry-failed` took only `b`: `a` is still known, and the run
        // is no full check.
        let only_b = report(&items[1..], &[(Action::Copied, Some(D1))]);
        let partial = Coverage {
            shard: None,
            full_check: false,
            partial: true,
        };
        let s = updated(Some(s), "id", &items[1..], &only_b, partial, 2);
        assert_eq!(s.images.len(), 2);
        assert_eq!(s.verified_at, Some(1));
        // A whole run that no longer selects `a` forgets it.
        let s = updated(Some(s), "id", &items[1..], &only_b, full, 3);
        assert_eq!(s.images.len(), 1);
    }

    #[test]
    fn records_of_other_shards_are_kept() {
        let items = [
            item("a", "1"),
            item("b", "1"),
            item("c", "1"),
            item("d", "1"),
        ];
        let all = report(&items, &[(Action::Copied, Some(D1)); 4]);
        let s = updated(
            None,
            "id",
            &items,
            &all,
            Coverage {
                shard: None,
                full_check: true,
                partial: false,
            },
            1,
        );
        let shard = crate::commands::mirror::shard_of("src.example/a", 2);
        let mine: Vec<Item> = items
            .iter()
            .filter(|i| {
                crate::commands::mirror::shard_of(&format!("src.example/{}", i.source.path), 2)
                    == shard
            })
            .cloned()
            .collect();
        let none = report(&[], &[]);
        let s = updated(
            Some(s),
            "id",
            &[],
            &none,
            Coverage {
                shard: Some((shard, 2)),
                full_check: false,
                partial: false,
            },
            2,
        );
        assert_eq!(s.images.len(), 4 - mine.len());
        assert!(
            s.images
                .values()
                .all(|r| crate::commands::mirror::shard_of(&r.repository, 2) != shard)
        );
    }

    #[test]
    fn blobs_seen_are_remembered_per_repository_and_forgotten_on_failure_or_full_check() {
        let items = [item("app", "1"), item("lib", "1")];
        let seen = |rep: &mut RunReport, k: usize, blobs: &[&str]| {
            rep.images[k].blobs = blobs.iter().map(|b| b.to_string()).collect();
        };
        let run = |prev: Option<State>, rep: &RunReport, full_check: bool| {
            let coverage = Coverage {
                shard: None,
                full_check,
                partial: false,
            };
            updated(prev, "id", &items, rep, coverage, 100)
        };
        let mut ok = report(
            &items,
            &[(Action::Copied, Some(D1)), (Action::Copied, Some(D2))],
        );
        seen(&mut ok, 0, &[D1, D2]);
        seen(&mut ok, 1, &[D2]);
        let s = run(None, &ok, false);
        let app = "dst.example/app";
        assert_eq!(s.blobs[app].len(), 2);
        assert_eq!(s.blobs["dst.example/lib"].len(), 1);
        // An image of `app` fails: nothing is trusted of `app` any more.
        let failed = report(
            &items,
            &[(Action::Failed, None), (Action::UpToDate, Some(D2))],
        );
        let s = run(Some(s), &failed, false);
        assert!(!s.blobs.contains_key(app), "{:?}", s.blobs);
        assert!(s.blobs.contains_key("dst.example/lib"));
        // A full check keeps only what it saw.
        let mut checked = report(
            &items,
            &[(Action::Copied, Some(D1)), (Action::UpToDate, Some(D2))],
        );
        seen(&mut checked, 0, &[D1]);
        let s = run(Some(s), &checked, true);
        assert_eq!(s.blobs.keys().collect::<Vec<_>>(), [app]);
    }
}
