//! Reading sync configs: every kind of entry, the settings of registries,
//! referrers and state, and wrong configs refused naming the line.

use super::config::{Entry, Source, Target};
use super::settings_for;
use super::tests::config;
use crate::ErrorClass;
use crate::content::Platform;
use crate::store::registry::RegistrySettings;

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
        matches!(e.targets.as_slice(), [Target::Registry { host, path }] if host == "mirror.example:5000" && path == "lib/alpine")
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
        matches!(c.entries[2].targets.as_slice(), [Target::Layout(p)] if p == &dir.path().join("out/layout"))
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
