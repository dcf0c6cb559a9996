//! Sync planning without a registry: configs read from a temporary file,
//! tag and repository filters, source → target names, shards, and the
//! up-to-date decision with the registry's answers given in code.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use super::config::load;
use super::config::{Config, Entry, RepoFilter, Source, TagFilter, Target};
use super::plan::{
    Item, TargetRef, decide, expand, filter_repos, filter_tags, layout_refs, target_for, version_of,
};
use super::{SyncOptions, settings_for, shard_of};
use crate::ErrorClass;
use crate::content::{Digest, Platform, Reference};
use crate::engine::CopyOptions;
use crate::store::registry::{ClientPool, RegistrySettings};

fn config(dir: &Path, yaml: &str) -> crate::Result<Config> {
    let p = dir.join("sync.yaml");
    std::fs::write(&p, yaml).unwrap();
    load(&p)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn regexes(v: &[&str]) -> Vec<regex::Regex> {
    v.iter().map(|r| regex::Regex::new(r).unwrap()).collect()
}

fn opts(shard: Option<(usize, usize)>) -> SyncOptions {
    SyncOptions {
        only: None,
        jobs: 2,
        shard,
        copy: CopyOptions::default(),
        registry: RegistrySettings::default(),
    }
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

#[test]
fn reads_a_config_with_every_kind_of_entry() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
    let c = config(
        dir.path(),
        r#"
version: 1
defaults:
  platforms: [linux/amd64]
registries:
  - host: mirror.example:5000
    tls: insecure
    username: bot
    password: ${file:pw}
sync:
  - source: docker.io/library/alpine
    target: mirror.example:5000/lib/alpine
    tags: {allow: ['^3\.'], deny: ['-rc'], semver: '>=3.18', latest: 2}
  - source: ghcr.io/team/
    target: mirror.example:5000/team/
    repos: {allow: ['^svc-'], deny: ['-old$']}
    platforms: all
  - source: quay.io/x/y@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
    target: oci:out/layout
"#,
    )
    .unwrap();
    assert_eq!(c.entries.len(), 3);
    let e = &c.entries[0];
    assert!(matches!(&e.source, Source::Repository(r) if r.path == "library/alpine"));
    assert!(
        matches!(&e.target, Target::Registry { host, path } if host == "mirror.example:5000" && path == "lib/alpine")
    );
    assert_eq!(e.tags.latest, Some(2));
    assert_eq!(e.platforms, [Platform::parse("linux/amd64").unwrap()]);
    assert!(
        matches!(&c.entries[1].source, Source::Prefix { host, prefix } if host == "ghcr.io" && prefix == "team")
    );
    assert!(
        c.entries[1].platforms.is_empty(),
        "`all` keeps every platform"
    );
    assert!(matches!(&c.entries[2].source, Source::Digest(_)));
    assert!(
        matches!(&c.entries[2].target, Target::Layout(p) if p == &dir.path().join("out/layout"))
    );
    // Secrets come from the file named, beside the config.
    let s = settings_for(&c, "mirror.example:5000", &RegistrySettings::default());
    assert_eq!(s.tls_verify, Some(false));
    // `insecure` skips certificate checks; it does not allow plain HTTP.
    assert_eq!(s.plain_http, Some(false));
    assert!(
        matches!(&s.creds, Some(crate::store::registry::Credential::Basic { username, password }) if username == "bot" && password == "s3cret")
    );
}

#[test]
fn refuses_wrong_configs_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let entry = |source: &str, target: &str, extra: &str| {
        format!("version: 1\nsync:\n  - source: {source}\n    target: {target}\n{extra}")
    };
    let cases = [
        ("version: 2\nsync: []\n".to_string(), "version 2", 1),
        (
            entry("a.example/x", "b.example/y", "    colour: red\n"),
            "colour",
            0,
        ),
        (
            entry("a.example/x:1", "b.example/y", ""),
            "tags are chosen",
            3,
        ),
        (entry("a.example/x/", "b.example/y", ""), "prefix target", 4),
        (
            entry("a.example/x", "b.example/y:1", ""),
            "without a tag",
            4,
        ),
        (
            entry("a.example/x", "b.example/y", "    repos: {allow: [a]}\n"),
            "prefix sources",
            3,
        ),
        (
            entry("a.example/x", "b.example/y", "    tags: {allow: ['(']}\n"),
            "invalid tag allow",
            5,
        ),
        (
            entry(
                "a.example/x",
                "b.example/y",
                "    tags: {semver: 'not a range'}\n",
            ),
            "invalid semver range",
            5,
        ),
        (
            entry("a.example/x", "b.example/y", "    platforms: some\n"),
            "`all` or a list",
            5,
        ),
    ];
    for (yaml, needle, line) in cases {
        let e = config(dir.path(), &yaml).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Usage, "{e}");
        let msg = e.to_string();
        assert!(msg.contains(needle), "{yaml}\n→ {msg}");
        if line > 0 {
            assert!(
                msg.contains(&format!("sync.yaml:{line}:")),
                "{yaml}\n→ {msg}"
            );
        }
    }
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

fn entry(target: Target) -> Entry {
    Entry {
        index: 0,
        source: Source::Repository(reference("ghcr.io/team/app")),
        target,
        tags: TagFilter::default(),
        repos: RepoFilter::default(),
        platforms: vec![],
        referrers: Default::default(),
        immutable_tags: vec![],
    }
}

#[test]
fn maps_source_names_to_targets() {
    let registry = entry(Target::Registry {
        host: "mirror.example".into(),
        path: "team".into(),
    });
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
    let layout = entry(Target::Layout(PathBuf::from("/srv/mirror")));
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
fn referrer_settings_come_from_the_entry_then_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        r#"
version: 1
defaults:
  referrers: {types: {deny: [application/example.sbom]}}
  digest-tags: false
sync:
  - source: a.example/plain
    target: b.example/plain
  - source: a.example/off
    target: b.example/off
    referrers: {enabled: false}
    digest-tags: true
  - source: a.example/signed
    target: b.example/signed
    referrers: {types: {allow: [application/example.sig]}}
"#,
    )
    .unwrap();
    let r: Vec<_> = c.entries.iter().map(|e| &e.referrers).collect();
    assert!(r[0].enabled && !r[0].digest_tags);
    assert_eq!(r[0].types.deny, ["application/example.sbom"]);
    assert!(!r[1].enabled && r[1].digest_tags);
    assert_eq!(r[1].types.deny, ["application/example.sbom"]);
    assert!(r[2].enabled && !r[2].digest_tags);
    assert_eq!(r[2].types.allow, ["application/example.sig"]);
    assert!(
        r[2].types.deny.is_empty(),
        "the entry's types replace the defaults'"
    );

    // Without any setting everything travels.
    let c = config(
        dir.path(),
        "version: 1\nsync:\n  - source: a.example/x\n    target: b.example/y\n",
    )
    .unwrap();
    assert_eq!(
        c.entries[0].referrers,
        crate::engine::ReferrerOptions::default()
    );

    for (extra, needle) in [
        ("    referrers: {enable: false}\n", "enable"),
        ("    referrers: {types: {alow: [x]}}\n", "alow"),
        ("    digest-tags: maybe\n", "line 5"),
    ] {
        let yaml =
            format!("version: 1\nsync:\n  - source: a.example/x\n    target: b.example/y\n{extra}");
        let e = config(dir.path(), &yaml).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Usage, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(needle) && !msg.contains('\n'),
            "{yaml}\n→ {msg}"
        );
    }
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

#[test]
fn state_settings_immutable_tags_and_the_identity_of_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let base = "sync:\n  - source: a.example/app\n    target: b.example/app\n";
    let c = config(
        dir.path(),
        &format!(
            "version: 1\nstate: run/state.json\nstate-verify-every: 24h\ndefaults:\n  immutable-tags: ['^v\\d+$']\n{base}  - source: a.example/lib\n    target: b.example/lib\n    immutable-tags: ['^stable$']\n"
        ),
    )
    .unwrap();
    assert_eq!(c.state, Some(dir.path().join("run/state.json")));
    assert_eq!(
        c.state_verify_every,
        Some(std::time::Duration::from_secs(86400))
    );
    let matches = |e: &Entry, tag: &str| e.immutable_tags.iter().any(|r| r.is_match(tag));
    assert!(matches(&c.entries[0], "v2") && !matches(&c.entries[0], "stable"));
    assert!(matches(&c.entries[1], "stable") && !matches(&c.entries[1], "v2"));
    // Filters do not change what the config is; sources and targets do.
    let plain = config(dir.path(), &format!("version: 1\n{base}")).unwrap();
    let filtered = config(
        dir.path(),
        &format!("version: 1\n{base}    tags: {{allow: ['^1']}}\n"),
    )
    .unwrap();
    let elsewhere = config(
        dir.path(),
        "version: 1\nsync:\n  - source: a.example/app\n    target: c.example/app\n",
    )
    .unwrap();
    assert_eq!(plain.identity, filtered.identity);
    assert_ne!(plain.identity, elsewhere.identity);
    for bad in [
        "state-verify-every: soon\n",
        "defaults:\n  immutable-tags: ['(']\n",
    ] {
        let e = config(dir.path(), &format!("version: 1\n{bad}{base}")).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Usage, "{e}");
    }
    assert_eq!(
        super::config::parse_period("0s"),
        Some(std::time::Duration::ZERO)
    );
}

#[test]
fn reads_rate_limit_settings_and_refuses_a_rate_that_is_not_positive() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = |settings: &str| {
        format!(
            "version: 1\nregistries:\n  - host: docker.io\n{settings}sync:\n  - source: docker.io/library/alpine\n    target: m.example/alpine\n"
        )
    };
    let c = config(
        dir.path(),
        &yaml("    rate-limit-reserve: 20\n    requests-per-second: 2.5\n    max-requests: 8\n"),
    )
    .unwrap();
    let s = settings_for(&c, "docker.io", &RegistrySettings::default());
    assert_eq!(s.rate_limit_reserve, Some(20));
    assert_eq!(s.requests_per_second, Some(2.5));
    assert_eq!(s.max_requests, Some(8));
    for bad in ["0", "-1", ".nan", "1e9"] {
        let e = config(
            dir.path(),
            &yaml(&format!("    requests-per-second: {bad}\n")),
        )
        .unwrap_err();
        assert_eq!(e.class(), ErrorClass::Usage, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("sync.yaml:4:") && msg.contains("requests-per-second must be above 0"),
            "{bad}: {msg}"
        );
    }
    let negative = config(dir.path(), &yaml("    rate-limit-reserve: -5\n")).unwrap_err();
    assert_eq!(negative.class(), ErrorClass::Usage, "{negative}");
}
