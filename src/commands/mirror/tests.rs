//! Sync planning without a registry: configs read from a temporary file,
//! tag and repository filters, source → target names, shards, and the
//! up-to-date decision with the registry's answers given in code.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use super::check::{decide, layout_refs};
use super::config::load;
use super::config::{Config, RepoFilter, TagFilter, Target};
use super::plan::{Item, TargetRef, expand, filter_repos, filter_tags, target_for, version_of};
use super::{SyncOptions, shard_of};
use crate::content::{Digest, Platform, Reference};
use crate::engine::CopyOptions;
use crate::store::registry::{ClientPool, RegistrySettings};

pub(super) fn config(dir: &Path, yaml: &str) -> crate::Result<Config> {
    let p = dir.join("sync.yaml");
    std::fs::write(&p, yaml).unwrap();
    load(&p)
}

pub(super) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub(super) fn regexes(v: &[&str]) -> Vec<regex::Regex> {
    v.iter().map(|r| regex::Regex::new(r).unwrap()).collect()
}

pub(super) fn opts(shard: Option<(usize, usize)>) -> SyncOptions {
    SyncOptions {
        only: None,
        jobs: 2,
        shard,
        copy: CopyOptions::default(),
        registry: RegistrySettings::default(),
    }
}

pub(super) fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

#[test]
fn reads_tags_as_versions() {
    let v = |t: &str| version_of(t).map(|v| v.to_string());
    assert_eq!(v("v1.2.3").as_deref(), Some("1.2.3"));
    assert_eq!(v("1.2").as_deref(), Some("1.2.0"));
    assert_eq!(v("3").as_deref(), Some("3.0.0"));
    assert_eq!(v("3.19-rc1").as_deref(), Some("3.19.0-rc1"));
    for not in ["latest", "1.2.3.4", "1..2", "v", "1.x", ""] {
        assert_eq!(v(not), None, "{not}");
    }
}

#[test]
fn latest_keeps_the_newest_versions_only() {
    let tags = strings(&["1.9", "1.10", "2.0-beta", "2.0", "edge", "v1.11.1"]);
    let f = TagFilter {
        latest: Some(4),
        ..TagFilter::default()
    };
    // By version, not by text: 1.10 is newer than 1.9; `edge` has none. A
    // pre-release is a version too (deny it, or use a range, to drop it).
    assert_eq!(
        filter_tags(&tags, &f),
        ["1.10", "2.0", "2.0-beta", "v1.11.1"]
    );
    // A range leaves pre-releases out unless it names one.
    let f = TagFilter {
        semver: Some(semver::VersionReq::parse(">=1.10").unwrap()),
        ..TagFilter::default()
    };
    assert_eq!(filter_tags(&tags, &f), ["1.10", "2.0", "v1.11.1"]);
}

#[test]
fn filters_repositories() {
    let repos = strings(&["svc-a", "svc-b-old", "tools", "svc-c"]);
    let f = RepoFilter {
        allow: regexes(&["^svc-"]),
        deny: regexes(&["-old$"]),
    };
    assert_eq!(filter_repos(repos.clone(), &f), ["svc-a", "svc-c"]);
    assert_eq!(filter_repos(repos.clone(), &RepoFilter::default()), repos);
}

#[test]
fn maps_source_names_to_targets() {
    let registry = Target::Registry {
        host: "mirror.example".into(),
        path: "team".into(),
    };
    let src = reference("ghcr.io/team/svc/api:1.2");
    // A prefix source keeps the path below the prefix, and the tag.
    match target_for(&registry, &src, Some("svc/api")) {
        TargetRef::Registry(r) => assert_eq!(r.to_string(), "mirror.example/team/svc/api:1.2"),
        t => panic!("{t}"),
    }
    // A repository source goes to the target repository itself.
    match target_for(&registry, &src, None) {
        TargetRef::Registry(r) => assert_eq!(r.to_string(), "mirror.example/team:1.2"),
        t => panic!("{t}"),
    }
    // A layout names the image by its full source reference.
    let layout = Target::Layout(PathBuf::from("/srv/mirror"));
    let t = target_for(&layout, &src, None);
    assert_eq!(t.to_string(), "oci:/srv/mirror:ghcr.io/team/svc/api:1.2");
}

#[test]
fn shards_split_the_plan_without_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let d = |i: usize| format!("sha256:{:064x}", i);
    let mut yaml = "version: 1\nsync:\n".to_string();
    for i in 0..12 {
        yaml.push_str(&format!(
            "  - source: reg.example/team/svc-{i}@{}\n    target: mirror.example/svc-{i}\n",
            d(i)
        ));
    }
    let c = config(dir.path(), &yaml).unwrap();
    let pool = ClientPool::default();
    let all = expand(&c, &opts(None), &pool).unwrap();
    assert_eq!(all.len(), 12);
    // A pinned source keeps its digest and gets no tag at the target.
    assert!(
        matches!(&all[0].target, TargetRef::Registry(r) if r.tag.is_none() && r.path == "svc-0")
    );
    let mut seen: Vec<String> = Vec::new();
    for i in 0..3 {
        for item in expand(&c, &opts(Some((i, 3))), &pool).unwrap() {
            let repo = format!("{}/{}", item.source.domain, item.source.path);
            assert_eq!(shard_of(&repo, 3), i);
            seen.push(item.source.to_string());
        }
    }
    seen.sort();
    let mut every: Vec<String> = all.iter().map(|it| it.source.to_string()).collect();
    every.sort();
    assert_eq!(seen, every, "every item in exactly one shard");
    assert_eq!(pool.requests(), 0, "pinned sources need no registry");
}

fn item(target: TargetRef, platforms: Vec<Platform>) -> Item {
    Item {
        entry: 0,
        source: reference("reg.example/app:1"),
        target,
        platforms,
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

/// Runs the decision against a registry that resolves `tags` (reference
/// text → digest); returns the item and the references asked about.
fn decide_with(mut it: Item, src: &Digest, tags: &[(&str, &Digest)]) -> (Item, Vec<String>) {
    let asked = RefCell::new(Vec::new());
    decide(
        &mut it,
        src.clone(),
        |r| {
            asked.borrow_mut().push(r.to_string());
            tags.iter()
                .find(|(t, _)| *t == r.to_string())
                .map(|(_, d)| (*d).clone())
        },
        |_, _, _| panic!("not a layout"),
    );
    (it, asked.into_inner())
}

#[test]
fn decides_what_is_up_to_date() {
    let src = Digest::sha256_of(b"source manifest");
    let old = Digest::sha256_of(b"older manifest");
    let tagged = TargetRef::Registry(reference("mirror.example/app:1"));
    let by_digest = format!("mirror.example/app@{src}");

    // The tag already names the source's manifest.
    let (it, asked) = decide_with(
        item(tagged.clone(), vec![]),
        &src,
        &[("mirror.example/app:1", &src)],
    );
    assert!(it.up_to_date && !it.retag);
    assert_eq!(it.source_digest.as_ref(), Some(&src));
    assert_eq!(asked, ["mirror.example/app:1"]);

    // The tag names something else, but the manifest is there: retag.
    let (it, asked) = decide_with(
        item(tagged.clone(), vec![]),
        &src,
        &[("mirror.example/app:1", &old), (&by_digest, &src)],
    );
    assert!(!it.up_to_date && it.retag);
    assert_eq!(asked, ["mirror.example/app:1", by_digest.as_str()]);

    // Nothing there: copy.
    let (it, _) = decide_with(item(tagged.clone(), vec![]), &src, &[]);
    assert!(!it.up_to_date && !it.retag);

    // A digest-pinned target is looked up by the source digest.
    let pinned = TargetRef::Registry(reference("mirror.example/app"));
    let (it, asked) = decide_with(item(pinned, vec![]), &src, &[(&by_digest, &src)]);
    assert!(it.up_to_date);
    assert_eq!(asked, [by_digest.as_str()]);

    // A platform subset is always copied, without asking.
    let subset = vec![Platform::parse("linux/arm64").unwrap()];
    let (it, asked) = decide_with(
        item(tagged, subset),
        &src,
        &[("mirror.example/app:1", &src)],
    );
    assert!(!it.up_to_date && asked.is_empty());
    assert_eq!(it.source_digest, Some(src));
}

#[test]
fn a_layout_is_up_to_date_when_it_names_the_source_digest() {
    let dir = tempfile::tempdir().unwrap();
    let src = Digest::sha256_of(b"m");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": src, "size": 1,
             "annotations": {"org.opencontainers.image.ref.name": "reg.example/app:1"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": Digest::sha256_of(b"n"), "size": 1},
        ]
    });
    std::fs::write(dir.path().join("index.json"), index.to_string()).unwrap();
    let refs = layout_refs(dir.path());
    assert_eq!(refs, [("reg.example/app:1".to_string(), src.to_string())]);
    assert!(layout_refs(&dir.path().join("absent")).is_empty());

    let decide_layout = |name: &str, digest: &Digest| {
        let mut it = item(
            TargetRef::Layout {
                path: dir.path().to_path_buf(),
                name: name.to_string(),
            },
            vec![],
        );
        decide(
            &mut it,
            digest.clone(),
            |_| panic!("a layout needs no registry"),
            |p, n, d| {
                layout_refs(p)
                    .iter()
                    .any(|(rn, rd)| rn == n && rd == d.as_str())
            },
        );
        it.up_to_date
    };
    assert!(decide_layout("reg.example/app:1", &src));
    assert!(!decide_layout("reg.example/app:2", &src));
    assert!(!decide_layout(
        "reg.example/app:1",
        &Digest::sha256_of(b"other")
    ));
}

#[test]
fn attached_tags_travel_with_their_subject_only_when_carried() {
    use super::plan::{shows_attached, travels_with_subject};
    use crate::engine::ReferrerOptions;
    let hex = "ab".repeat(32);
    let digest = Digest::parse(&format!("sha256:{hex}")).unwrap();
    let fallback = format!("sha256-{hex}");
    let sig = format!("sha256-{hex}.sig");
    let on = ReferrerOptions::default();
    let no_referrers = ReferrerOptions {
        enabled: false,
        ..on.clone()
    };
    let no_digest_tags = ReferrerOptions {
        digest_tags: false,
        ..on.clone()
    };
    assert!(travels_with_subject(&fallback, &on) && travels_with_subject(&sig, &on));
    assert!(!travels_with_subject("v1.0", &on) && !travels_with_subject("sha256-12", &on));
    assert!(!travels_with_subject(&fallback, &no_referrers));
    assert!(travels_with_subject(&sig, &no_referrers));
    assert!(travels_with_subject(&fallback, &no_digest_tags));
    assert!(!travels_with_subject(&sig, &no_digest_tags));
    assert!(!travels_with_subject(&sig, &ReferrerOptions::none()));

    let other = format!("sha256-{}.sig", "cd".repeat(32));
    assert!(shows_attached(&strings(&["1", &fallback]), &digest, &on));
    assert!(shows_attached(
        &strings(&["1", &sig]),
        &digest,
        &no_referrers
    ));
    assert!(!shows_attached(
        &strings(&["1", &sig]),
        &digest,
        &no_digest_tags
    ));
    assert!(!shows_attached(&strings(&["1", &other]), &digest, &on));
    assert!(!shows_attached(
        &strings(&["1", &fallback, &sig]),
        &digest,
        &ReferrerOptions::none()
    ));
}

fn f(allow: &[&str], deny: &[&str], semver: Option<&str>, latest: Option<usize>) -> TagFilter {
    TagFilter {
        allow: allow
            .iter()
            .map(|r| regex::Regex::new(r).unwrap())
            .collect(),
        deny: deny.iter().map(|r| regex::Regex::new(r).unwrap()).collect(),
        semver: semver.map(|s| semver::VersionReq::parse(s).unwrap()),
        latest,
    }
}

#[test]
fn filters_tags_every_way() {
    let tags: Vec<String> = [
        "3.17", "3.18", "3.18.4", "3.19", "3.19-rc1", "3.20", "edge", "latest", "v3.21.0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        filter_tags(&tags, &f(&["^3\\."], &["-rc"], None, None)),
        ["3.17", "3.18", "3.18.4", "3.19", "3.20"]
    );
    assert_eq!(
        filter_tags(&tags, &f(&[], &[], Some(">=3.19"), None)),
        ["3.19", "3.20", "v3.21.0"]
    );
    assert_eq!(
        filter_tags(&tags, &f(&["^3\\."], &["-rc"], Some(">=3.18"), Some(2))),
        ["3.19", "3.20"]
    );
    assert_eq!(
        filter_tags(&tags, &f(&["^edge$"], &[], None, None)),
        ["edge"]
    );
}

#[test]
fn shards_are_stable_and_cover_everything() {
    let repos: Vec<String> = (0..50).map(|i| format!("host/team/svc-{i}")).collect();
    let mut seen = [0; 3];
    for r in &repos {
        let s = shard_of(r, 3);
        assert_eq!(s, shard_of(r, 3));
        seen[s] += 1;
    }
    assert!(seen.iter().all(|&n| n > 0));
    assert_eq!(seen.iter().sum::<usize>(), 50);
}
