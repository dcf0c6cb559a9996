//! Referrer lists an attacker (or a careless client) wrote: fallback tags
//! holding the wrong thing, referrers whose `subject` names another
//! manifest, lists that name their own subject or loop, descriptors past
//! the manifest size limit, and a referrers API that fails. The fallback
//! tag is written by clients, so any client with push rights can craft it:
//! those lists are pushed to the real registry. The referrers API, which
//! distribution 2.8 does not serve, is answered by a hostile server in
//! front of it (tests/suite/hostile.rs).
//!
//! Each time the image itself is copied, the bad referrer is reported on
//! one error line naming where it came from and counted in `--json`
//! `referrers_failed`, and the run exits non-zero with the class of the
//! failure (1 for a malformed list, 5 for a list that lies about its
//! entries, 6 for a registry that keeps failing).

use serde_json::{Value, json};

use super::fixture_push::{OCI_INDEX, OCI_MANIFEST, Repo, digest_of, fallback_tag};
use super::harness::*;
use super::hostile::{Canned, Hostile};
use super::registry_harness::{Kind, Registry};

const EXIT_FORMAT: i32 = 1;

/// A registry holding `bad/app:v1`.
fn with_image() -> (Registry, Repo, Value) {
    let reg = Registry::start(Kind::Plain);
    let src = Repo::new(&reg.host, "bad/app");
    let image = src.image(Some("v1"), "amd64", "victim image\n");
    (reg, src, image)
}

/// Copies `bad/app:v1` from `from` (a host) to `mirror/app:v1` at `reg`,
/// asserting that the run fails with `code` after copying the image, with
/// exactly one error line holding every one of `needles`, and one failure
/// in `--json`. Returns the report.
fn copy_fails(t: &TestDir, from: &str, reg: &Registry, code: i32, needles: &[&str]) -> Value {
    let run = t.imgsync(&[
        "copy",
        "--json",
        "--retry-times",
        "2",
        &format!("docker://{from}/bad/app:v1"),
        &format!("docker://{}/mirror/app:v1", reg.host),
    ]);
    let errors = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("imgsync: error:"))
        .count();
    assert_eq!(errors, 1, "one error line:\n{}", run.stderr);
    let json = run.json();
    run.fails(code, needles);
    assert_eq!(
        json["referrers_failed"].as_array().unwrap().len(),
        1,
        "{json}"
    );
    let src = Repo::new(&reg.host, "bad/app");
    let dst = Repo::new(&reg.host, "mirror/app");
    assert_eq!(
        dst.get_manifest("v1"),
        src.get_manifest("v1"),
        "the image itself is copied"
    );
    json
}

fn hex(desc: &Value) -> String {
    digest_of(desc)[7..].to_string()
}

#[test]
fn a_fallback_tag_holding_a_manifest_fails_that_list_only() {
    let (reg, src, image) = with_image();
    let other = src.image(None, "arm64", "not an index\n");
    let bytes = src.get_manifest(&digest_of(&other)).unwrap();
    src.manifest_bytes(
        Some(&fallback_tag(&digest_of(&image))),
        OCI_MANIFEST,
        &bytes,
    );
    let t = TestDir::new();
    let needles = [reg.host.as_str(), "bad/app", &hex(&image), "not an index"];
    copy_fails(&t, &reg.host, &reg, EXIT_FORMAT, &needles);
}

#[test]
fn a_referrer_whose_subject_is_another_manifest_is_not_carried() {
    let (reg, src, image) = with_image();
    let other = src.image(None, "arm64", "another image\n");
    let stray = src.cosign_referrer(&other, "signs another image");
    src.list_referrer(&digest_of(&image), &stray);
    let t = TestDir::new();
    let needles = [
        reg.host.as_str(),
        "bad/app",
        &digest_of(&stray),
        &digest_of(&image),
        "its subject is",
    ];
    copy_fails(&t, &reg.host, &reg, EXIT_INTEGRITY, &needles);
    let dst = Repo::new(&reg.host, "mirror/app");
    assert_eq!(dst.get_manifest(&digest_of(&stray)), None);
    assert_eq!(dst.get_manifest(&fallback_tag(&digest_of(&image))), None);
}

#[test]
fn a_list_naming_its_own_subject_ends_and_is_reported() {
    let (reg, src, image) = with_image();
    src.list_referrer(&digest_of(&image), &image);
    let t = TestDir::new();
    let needles = [
        reg.host.as_str(),
        "bad/app",
        &digest_of(&image),
        "no subject",
    ];
    copy_fails(&t, &reg.host, &reg, EXIT_INTEGRITY, &needles);
}

#[test]
fn two_referrers_listing_each_other_end_and_the_honest_ones_travel() {
    let (reg, src, image) = with_image();
    let first = src.cosign_referrer(&image, "first");
    let second = src.cosign_referrer(&first, "second");
    // The second's list names the first, whose subject is the image.
    src.list_referrer(&digest_of(&second), &first);
    let t = TestDir::new();
    let needles = [
        reg.host.as_str(),
        "bad/app",
        &digest_of(&first),
        &digest_of(&second),
    ];
    copy_fails(&t, &reg.host, &reg, EXIT_INTEGRITY, &needles);
    let dst = Repo::new(&reg.host, "mirror/app");
    for r in [&first, &second] {
        assert_eq!(
            dst.get_manifest(&digest_of(r)),
            src.get_manifest(&digest_of(r))
        );
    }
    assert!(
        dst.get_manifest(&fallback_tag(&digest_of(&second)))
            .is_none(),
        "nothing honest refers to the second signature"
    );
}

#[test]
fn a_referrer_listed_over_the_manifest_size_limit_is_not_read() {
    let (reg, src, image) = with_image();
    let mut big = src.unlisted_cosign_referrer(&image, "claims 5 MiB");
    big["size"] = json!(5 << 20);
    src.manifest(
        Some(&fallback_tag(&digest_of(&image))),
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [big]}),
    );
    let t = TestDir::new();
    let needles = [reg.host.as_str(), "bad/app", &digest_of(&big), "limit"];
    copy_fails(&t, &reg.host, &reg, EXIT_FORMAT, &needles);
}

/// The referrers API path of `digest` in `bad/app`.
fn api(digest: &str) -> String {
    format!("/v2/bad/app/referrers/{digest}")
}

#[test]
fn a_referrers_api_answering_400_fails_the_list() {
    let (reg, _src, image) = with_image();
    let hostile = Hostile::start(
        &reg.host,
        vec![Canned {
            path: api(&digest_of(&image)),
            status: 400,
            body: r#"{"errors":[{"code":"UNSUPPORTED","message":"no"}]}"#.into(),
        }],
    );
    let t = TestDir::new();
    let needles = [hostile.host.as_str(), "bad/app", &digest_of(&image), "400"];
    copy_fails(&t, &hostile.host, &reg, EXIT_FORMAT, &needles);
}

#[test]
fn a_referrers_api_answering_500_fails_after_retries() {
    let (reg, _src, image) = with_image();
    let path = api(&digest_of(&image));
    let hostile = Hostile::start(
        &reg.host,
        vec![Canned {
            path: path.clone(),
            status: 500,
            body: "{}".into(),
        }],
    );
    let t = TestDir::new();
    let needles = [hostile.host.as_str(), "bad/app", &digest_of(&image), "500"];
    copy_fails(&t, &hostile.host, &reg, EXIT_NETWORK, &needles);
    // --debug shows each request: the first and two retries.
    let run = t.imgsync(&[
        "--debug",
        "copy",
        "--retry-times",
        "2",
        &format!("docker://{}/bad/app:v1", hostile.host),
        &format!("docker://{}/again/app:v1", reg.host),
    ]);
    assert_eq!(run.code, EXIT_NETWORK, "{}", run.stderr);
    let asked = run
        .stderr
        .lines()
        .filter(|l| l.contains(&path) && !l.contains("error"))
        .count();
    assert_eq!(asked, 3, "{}", run.stderr);
}

#[test]
fn a_referrers_api_listing_referrers_is_used() {
    let (reg, src, image) = with_image();
    // Pushed by digest only: no fallback tag lists it.
    let sig = src.unlisted_cosign_referrer(&image, "listed by the API");
    let index = |entries: Vec<&Value>| {
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).to_string()
    };
    let hostile = Hostile::start(
        &reg.host,
        vec![
            Canned {
                path: api(&digest_of(&image)),
                status: 200,
                body: index(vec![&sig]),
            },
            Canned {
                path: api(&digest_of(&sig)),
                status: 200,
                body: index(vec![]),
            },
        ],
    );
    let t = TestDir::new();
    let json = t
        .imgsync(&[
            "copy",
            "--json",
            &format!("docker://{}/bad/app:v1", hostile.host),
            &format!("docker://{}/mirror/app:v1", reg.host),
        ])
        .ok()
        .json();
    let dst = Repo::new(&reg.host, "mirror/app");
    assert_eq!(
        dst.get_manifest(&digest_of(&sig)),
        src.get_manifest(&digest_of(&sig))
    );
    let listed: Value =
        serde_json::from_slice(&dst.get_manifest(&fallback_tag(&digest_of(&image))).unwrap())
            .unwrap();
    assert_eq!(listed["manifests"][0]["digest"], sig["digest"]);
    assert_eq!(listed["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(json["referrers"][0]["digest"], sig["digest"]);
}

/// The destination's own fallback tag, filled by another client with a
/// manifest: the listing fails, named, and the image still gets its tag.
#[test]
fn a_destination_fallback_tag_holding_a_manifest_still_lets_the_image_arrive() {
    let (reg, src, image) = with_image();
    let sig = src.cosign_referrer(&image, "good");
    let dst = Repo::new(&reg.host, "mirror/app");
    let junk = dst.image(None, "arm64", "junk\n");
    let bytes = dst.get_manifest(&digest_of(&junk)).unwrap();
    dst.manifest_bytes(
        Some(&fallback_tag(&digest_of(&image))),
        OCI_MANIFEST,
        &bytes,
    );
    let t = TestDir::new();
    let needles = [
        reg.host.as_str(),
        "mirror/app",
        &hex(&image),
        "not an index",
    ];
    copy_fails(&t, &reg.host, &reg, EXIT_FORMAT, &needles);
    assert_eq!(
        dst.get_manifest(&digest_of(&sig)),
        src.get_manifest(&digest_of(&sig)),
        "the signature itself is there"
    );
    assert_eq!(
        dst.get_manifest(&fallback_tag(&digest_of(&image))),
        Some(bytes),
        "another client's tag is left as it was"
    );
}
