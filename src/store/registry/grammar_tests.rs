//! Table tests for what registries send in headers: `WWW-Authenticate`
//! challenges, token answers (formats reference §7.1) and `Link`
//! pagination (§6.4).

use std::time::{Duration, Instant};

use super::auth::{Challenge, accepted_scope, insecure_realm, parse_challenge, parse_token};
use super::endpoint::{is_loopback, same_origin};
use crate::store::registry::tags::next_link;

/// A header, what it asks for, and parameters it must carry.
type ChallengeRow = (
    &'static str,
    Challenge,
    &'static [(&'static str, &'static str)],
);

fn bearer(realm: &str, service: Option<&str>) -> Challenge {
    Challenge::Bearer {
        realm: realm.into(),
        service: service.map(str::to_string),
    }
}

#[test]
fn challenges_parse_per_rfc_7235() {
    let rows: Vec<ChallengeRow> = vec![
        (
            r#"Bearer realm="https://auth.example/token",service="reg.example""#,
            bearer("https://auth.example/token", Some("reg.example")),
            &[
                ("realm", "https://auth.example/token"),
                ("service", "reg.example"),
            ],
        ),
        // Spaces after commas, a comma inside quotes.
        (
            r#"Bearer realm="https://a/t", service="s", scope="repository:x/y:pull,push""#,
            bearer("https://a/t", Some("s")),
            &[("scope", "repository:x/y:pull,push")],
        ),
        // Unquoted values; scheme and keys in any case.
        (
            "BEARER Realm=https://a/t,Service=s",
            bearer("https://a/t", Some("s")),
            &[("realm", "https://a/t"), ("service", "s")],
        ),
        // An escaped quote inside a quoted value.
        (
            r#"Bearer realm="https://a/t",error="say \"hi\"""#,
            bearer("https://a/t", None),
            &[("error", r#"say "hi""#)],
        ),
        (
            r#"Basic realm="Registry Realm""#,
            Challenge::Basic,
            &[("realm", "Registry Realm")],
        ),
        ("Basic", Challenge::Basic, &[]),
        // Bearer without a realm cannot fetch a token: credentials go as
        // Basic.
        (
            r#"Bearer service="s""#,
            Challenge::Basic,
            &[("service", "s")],
        ),
        ("Negotiate abc", Challenge::None, &[]),
        // Several challenges: the first is taken.
        (
            r#"Basic realm="first", Bearer realm="second""#,
            Challenge::Basic,
            &[("realm", "first")],
        ),
    ];
    for (header, challenge, params) in rows {
        let c = parse_challenge(header).unwrap_or_else(|| panic!("{header}: not parsed"));
        assert_eq!(c.to_challenge(), challenge, "{header}");
        for (k, v) in params {
            assert_eq!(
                c.params.get(*k).map(String::as_str),
                Some(*v),
                "{header}: {k}"
            );
        }
    }
    for empty in ["", "   "] {
        assert_eq!(parse_challenge(empty), None, "{empty:?}");
    }
}

#[test]
fn tokens_live_at_least_a_minute_and_are_renewed_early() {
    let lifetime = |body: &str| {
        let before = Instant::now();
        let t = parse_token(body.as_bytes()).unwrap_or_else(|| panic!("{body}"));
        (t.value, t.expires.saturating_duration_since(before))
    };
    // Measured from just before parsing: at least the lifetime, barely more.
    let near = |got: Duration, secs: u64| {
        got >= Duration::from_secs(secs) && got <= Duration::from_secs(secs + 2)
    };
    let rows = [
        (r#"{"token":"a","expires_in":300}"#, "a", 290),
        (r#"{"token":"a","expires_in":10}"#, "a", 50),
        (r#"{"access_token":"b"}"#, "b", 50),
        // `token` is preferred; an empty one gives way to `access_token`.
        (r#"{"token":"a","access_token":"b"}"#, "a", 50),
        (r#"{"token":"","access_token":"b"}"#, "b", 50),
        // Claimed lifetimes past a day, up to the largest number, are a day.
        (r#"{"token":"a","expires_in":86400}"#, "a", 86390),
        (r#"{"token":"a","expires_in":31536000}"#, "a", 86390),
        (
            r#"{"token":"a","expires_in":18446744073709551615}"#,
            "a",
            86390,
        ),
        (
            r#"{"token":"a","expires_in":18446744073709551606}"#,
            "a",
            86390,
        ),
    ];
    for (body, value, secs) in rows {
        let (v, life) = lifetime(body);
        assert_eq!(v, value, "{body}");
        assert!(near(life, secs), "{body}: {life:?}, wanted about {secs}s");
    }
    for bad in [r#"{"nothing":1}"#, "not json", r#"{"token":""}"#] {
        assert!(parse_token(bad.as_bytes()).is_none(), "{bad}");
    }
}

#[test]
fn link_headers_give_the_next_page() {
    let rows: [(&str, Option<&str>); 8] = [
        (
            r#"</v2/foo/tags/list?last=b&n=2>; rel="next""#,
            Some("/v2/foo/tags/list?last=b&n=2"),
        ),
        (
            r#"<https://r.example/v2/_catalog?last=x&n=100>; rel="next""#,
            Some("https://r.example/v2/_catalog?last=x&n=100"),
        ),
        ("</p2>; rel=next", Some("/p2")),
        (r#"</p1>; rel="prev", </p3>; rel="next""#, Some("/p3")),
        (r#"</p3>; title="more"; rel="next""#, Some("/p3")),
        (r#"</p1>; rel="prev""#, None),
        ("", None),
        ("garbage", None),
    ];
    for (header, want) in rows {
        assert_eq!(next_link(header).as_deref(), want, "{header}");
    }
}

#[test]
fn credentials_go_to_the_registry_origin_only() {
    let base = "https://r.example:5000";
    let rows = [
        ("https://r.example:5000/v2/a/blobs/uploads/1", true),
        ("https://R.example:5000/v2/", true),
        ("https://r.example:5001/v2/a/blobs/uploads/1", false),
        ("http://r.example:5000/v2/", false),
        ("https://evil.example:5000/v2/", false),
        ("https://r.example.evil.example:5000/v2/", false),
        ("https://r.example/v2/", false),
    ];
    for (url, same) in rows {
        let u = reqwest::Url::parse(url).unwrap();
        assert_eq!(same_origin(&u, base), same, "{url}");
    }
    // The default port counts as given.
    let u = reqwest::Url::parse("https://r.example:443/v2/").unwrap();
    assert!(same_origin(&u, "https://r.example"));
    // Basic credentials never go to a clear-text realm of a TLS registry.
    assert!(insecure_realm(
        "http://auth.example/token",
        "https://r.example"
    ));
    assert!(!insecure_realm(
        "https://auth.example/token",
        "https://r.example"
    ));
    assert!(!insecure_realm(
        "http://127.0.0.1:5001/token",
        "http://127.0.0.1:5000"
    ));
}

#[test]
fn only_loopback_addresses_and_localhost_are_loopback() {
    let rows = [
        ("localhost", true),
        ("localhost:5000", true),
        ("LOCALHOST:5000", true),
        ("127.0.0.1", true),
        ("127.0.0.1:5000", true),
        ("127.5.6.7:443", true),
        ("[::1]", true),
        ("[::1]:5000", true),
        ("::1", true),
        ("127.corp.example", false),
        ("127.corp.example:5000", false),
        ("127.0.0.1.nip.io", false),
        ("localhost.evil.example", false),
        ("128.0.0.1", false),
        ("[::2]:5000", false),
        ("registry.example", false),
    ];
    for (host, loopback) in rows {
        assert_eq!(is_loopback(host), loopback, "{host}");
    }
}

#[test]
fn challenge_scopes_are_taken_only_for_repositories_the_run_asks_about() {
    let asked: std::collections::BTreeSet<String> =
        ["repository:team/app:pull", "repository:lib/base:pull"]
            .into_iter()
            .map(String::from)
            .collect();
    let rows = [
        ("repository:team/app:pull", true),
        ("repository:team/app:pull,push", true),
        ("repository:lib/base:pull", true),
        // Another repository, more rights, or not the grammar at all.
        ("repository:team/other:pull", false),
        ("repository:team/app:*", false),
        ("repository:team/app:pull,delete", false),
        ("repository:team/app:", false),
        ("repository:Team/App:pull", false),
        ("repository:team//app:pull", false),
        ("repository:team/app", false),
        ("registry:catalog:*", false),
        ("registry:*:*", false),
        ("anything", false),
        ("", false),
    ];
    for (scope, ok) in rows {
        assert_eq!(accepted_scope(scope, &asked), ok, "{scope}");
    }
    // The catalog scope joins a run that lists the catalog.
    let mut listing = asked.clone();
    listing.insert("registry:catalog:*".into());
    assert!(accepted_scope("registry:catalog:*", &listing));
}
