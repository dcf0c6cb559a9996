//! `imgsync sync` carrying referrers and digest tags between two real
//! registries (distribution 2.8: no referrers API, so the referrers tag
//! schema): what travels, what is not synced as an image of its own, what
//! a no-op run costs, the config switches, and a referrer that fails.
//!
//! Images with referrers are pushed with plain HTTP requests from here
//! (monolithic blob uploads, manifest PUTs, the fallback tag index kept by
//! hand), so the source is set up without imgsync.

use serde_json::{Value, json};

use super::fixture_archives::gzip;
use super::fixture_push::{Repo, fallback_tag, http};
use super::harness::*;
use super::registry_harness::{Kind, Registry};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";
const SIG_TYPE: &str = "application/example.signature";
const SBOM_TYPE: &str = "application/example.sbom";

/// A descriptor of `bytes` stored as a blob of `repo`.
fn push_blob(host: &str, repo: &str, media_type: &str, bytes: &[u8]) -> Value {
    Repo::new(host, repo).blob(media_type, bytes)
}

/// PUTs a manifest under a tag or its digest; returns its descriptor.
fn push_manifest(host: &str, repo: &str, reference: Option<&str>, doc: &Value) -> Value {
    Repo::new(host, repo).manifest(reference, doc)
}

/// What `push_signed_image` pushed.
struct Signed {
    /// The image manifest's digest.
    digest: String,
    /// The referrers (signature, SBOM) by digest.
    referrers: Vec<String>,
    /// The manifest under the digest tag `sha256-<hex>.sig`.
    sig_tag_digest: String,
}

/// Pushes `repo:tag` (one layer saying `text`), then attaches the given
/// referrer types (each an artifact whose `subject` is the image, listed in
/// the fallback tag index) and, when `sig_tag`, a cosign-style signature
/// under `sha256-<hex>.sig`.
fn push_signed_image(
    host: &str,
    repo: &str,
    tag: &str,
    text: &str,
    types: &[&str],
    sig_tag: bool,
) -> Signed {
    let layer = layer_tar("hello.txt", text.as_bytes());
    let config = config_for(&[&layer]);
    let image = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": push_blob(host, repo, "application/vnd.oci.image.config.v1+json", &config),
        "layers": [push_blob(host, repo, "application/vnd.oci.image.layer.v1.tar+gzip", &gzip(&layer))]});
    let subject = push_manifest(host, repo, Some(tag), &image);
    let digest = subject["digest"].as_str().unwrap().to_string();
    let mut listed = Vec::new();
    for t in types {
        let artifact = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "artifactType": t,
            "config": push_blob(host, repo, EMPTY, b"{}"),
            "layers": [push_blob(host, repo, "application/example.data",
                format!("{t} of {digest}").as_bytes())],
            "subject": subject});
        let mut d = push_manifest(host, repo, None, &artifact);
        d["artifactType"] = json!(t);
        listed.push(d);
    }
    if !listed.is_empty() {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed});
        push_manifest(host, repo, Some(&fallback_tag(&digest)), &index);
    }
    let sig_tag_digest = if sig_tag {
        let sig = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": push_blob(host, repo, "application/vnd.oci.image.config.v1+json", b"{\"cosign\":1}"),
            "layers": [push_blob(host, repo, "application/vnd.dev.cosign.simplesigning.v1+json",
                format!("{{\"critical\":{{\"image\":{{\"docker-manifest-digest\":\"{digest}\"}}}}}}").as_bytes())]});
        let tag = format!("{}.sig", fallback_tag(&digest));
        push_manifest(host, repo, Some(&tag), &sig)["digest"]
            .as_str()
            .unwrap()
            .to_string()
    } else {
        String::new()
    };
    Signed {
        digest,
        referrers: listed
            .iter()
            .map(|d| d["digest"].as_str().unwrap().to_string())
            .collect(),
        sig_tag_digest,
    }
}

/// The manifest bytes a tag or digest names, if it exists.
fn manifest_of(host: &str, repo: &str, reference: &str) -> Option<Value> {
    let accept = format!("{OCI_MANIFEST}, {OCI_INDEX}");
    let got = http(
        host,
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Accept", &accept)],
        b"",
    );
    (got.status == 200).then(|| got.json())
}

/// The digests a referrers fallback tag lists at a registry.
fn listed_referrers(host: &str, repo: &str, subject: &str) -> Vec<String> {
    let mut out: Vec<String> = manifest_of(host, repo, &fallback_tag(subject))
        .map(|i| {
            i["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["digest"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn tags_at(t: &TestDir, repo: &str) -> Vec<String> {
    let run = t.imgsync(&["tags", repo]);
    if run.code != 0 {
        return vec![];
    }
    let mut tags: Vec<String> = run.stdout_str().lines().map(str::to_string).collect();
    tags.sort();
    tags
}

/// `sync --json` with a config; the exit code and the report.
fn sync_json(t: &TestDir, name: &str, yaml: &str) -> (i32, Value, String) {
    std::fs::write(t.path(name), yaml).unwrap();
    let run = t.imgsync(&["sync", "-q", "--json", "--config", &t.p(name)]);
    let stderr = run.stderr.clone();
    let report = if run.code == 2 {
        Value::Null
    } else {
        run.json()
    };
    (run.code, report, stderr)
}

fn image<'a>(report: &'a Value, source_suffix: &str) -> &'a Value {
    report["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["source"].as_str().unwrap().ends_with(source_suffix))
        .unwrap_or_else(|| panic!("no image {source_suffix} in {report}"))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn referrers_and_digest_tags_travel_with_their_images_and_a_noop_costs_almost_nothing() {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let (s, d) = (&src.host, &dst.host);
    let one = push_signed_image(s, "app", "1", "one", &[SIG_TYPE, SBOM_TYPE], true);
    let two = push_signed_image(s, "app", "2", "two", &[SIG_TYPE], true);
    // Excluded by the tag filter: its signature must not be mirrored.
    let old = push_signed_image(s, "app", "old", "old", &[SIG_TYPE], true);
    // The same number of images without anything attached, for the cost.
    for (tag, text) in [("1", "one"), ("2", "two")] {
        push_signed_image(s, "plain", tag, text, &[], false);
    }
    let yaml = format!(
        "version: 1\nsync:\n  - source: {s}/app\n    target: {d}/mirror/app\n    tags: {{deny: ['^old$']}}\n  - source: {s}/plain\n    target: {d}/mirror/plain\n"
    );
    let (code, cold, stderr) = sync_json(&t, "cold.yaml", &yaml);
    assert_eq!(code, 0, "{stderr}");
    // The attached tags were not synced as images of their own.
    let sources: Vec<&str> = cold["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources.len(), 4, "{sources:?}");
    assert!(
        sources.iter().all(|s| !s.contains("sha256-")),
        "{sources:?}"
    );
    // Each image, its referrers in the fallback tag, its digest tag.
    let mut expected = vec!["1".to_string(), "2".to_string()];
    for signed in [&one, &two] {
        expected.push(fallback_tag(&signed.digest));
        expected.push(format!("{}.sig", fallback_tag(&signed.digest)));
        assert_eq!(
            listed_referrers(d, "mirror/app", &signed.digest),
            sorted(signed.referrers.clone())
        );
        for r in &signed.referrers {
            assert!(manifest_of(d, "mirror/app", r).is_some());
        }
    }
    assert_eq!(tags_at(&t, &format!("{d}/mirror/app")), sorted(expected));
    assert!(manifest_of(d, "mirror/app", &old.digest).is_none());
    assert!(manifest_of(d, "mirror/app", &old.sig_tag_digest).is_none());
    let sig_at_target = manifest_of(
        d,
        "mirror/app",
        &format!("{}.sig", fallback_tag(&one.digest)),
    );
    let sig_bytes = serde_json::to_vec(&sig_at_target.unwrap()).unwrap();
    assert_eq!(
        format!("sha256:{}", sha256_hex(&sig_bytes)),
        one.sig_tag_digest
    );
    // The report lists what travelled with each image.
    let r1 = image(&cold, "/app:1");
    let mut copied: Vec<String> = r1["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap().to_string())
        .collect();
    copied.sort();
    let mut want = one.referrers.clone();
    want.push(one.sig_tag_digest.clone());
    assert_eq!(copied, sorted(want));
    assert!(
        r1["referrers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["artifact_type"] == SBOM_TYPE)
    );
    assert_eq!(r1["referrers_failed"], 0);
    assert_eq!(cold["referrers_copied"], 5);

    // Nothing changed: nothing is copied, and each signed image costs a
    // few requests more than an image without anything attached.
    let (code, noop, stderr) = sync_json(&t, "cold.yaml", &yaml);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(noop["copied"], 0, "{noop}");
    assert_eq!(noop["up_to_date"], 4);
    assert_eq!(noop["referrers_copied"], 0);
    assert_eq!(noop["blobs_copied"], 0);
    let only_plain =
        format!("version: 1\nsync:\n  - source: {s}/plain\n    target: {d}/mirror/plain\n");
    let only_app = format!(
        "version: 1\nsync:\n  - source: {s}/app\n    target: {d}/mirror/app\n    tags: {{deny: ['^old$']}}\n"
    );
    let (_, plain, _) = sync_json(&t, "plain.yaml", &only_plain);
    let (_, app, _) = sync_json(&t, "app.yaml", &only_app);
    let (plain, app) = (
        plain["requests"].as_u64().unwrap(),
        app["requests"].as_u64().unwrap(),
    );
    // Per signed image: the source manifest, its fallback tag, each
    // referrer and digest-tagged manifest, their checks at the target,
    // the target's fallback tag; once per run: the referrers API probes.
    let per_image = 12;
    assert!(
        app >= plain && app <= plain + 2 * per_image + 2,
        "no-op with referrers: {app} requests; without: {plain}"
    );
    // Without anything attached, carrying referrers costs no request.
    let plain_off =
        format!("{only_plain}    referrers: {{enabled: false}}\n    digest-tags: false\n");
    let (_, off, _) = sync_json(&t, "plain-off.yaml", &plain_off);
    assert_eq!(off["requests"].as_u64().unwrap(), plain);
    eprintln!(
        "requests: cold {} (both repos), no-op with referrers {app}, without {plain}",
        cold["requests"]
    );
}

#[test]
fn the_config_chooses_what_travels() {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let (s, d) = (&src.host, &dst.host);
    let one = push_signed_image(s, "app", "1", "one", &[SIG_TYPE, SBOM_TYPE], true);
    let (sig, sbom) = (one.referrers[0].clone(), one.referrers[1].clone());
    let fallback = fallback_tag(&one.digest);
    let sig_tag = format!("{fallback}.sig");
    let entry = |target: &str, extra: &str| {
        format!("  - source: {s}/app\n    target: {d}/{target}\n{extra}")
    };
    let yaml = format!(
        "version: 1\ndefaults:\n  digest-tags: false\nsync:\n{}{}{}{}{}",
        // Nothing attached; the attached tags filtered out by name.
        entry(
            "off",
            "    referrers: {enabled: false}\n    tags: {deny: ['^sha256-']}\n"
        ),
        // Nothing attached and no filter: the attached tags are ordinary
        // tags again, synced as images, as before referrers were carried.
        entry("off-all", "    referrers: {enabled: false}\n"),
        entry(
            "only-sig",
            &format!("    referrers: {{types: {{allow: [{SIG_TYPE}]}}}}\n")
        ),
        entry(
            "no-sig",
            &format!("    referrers: {{types: {{deny: [{SIG_TYPE}]}}}}\n    digest-tags: true\n")
        ),
        entry("defaults", ""),
    );
    let (code, report, stderr) = sync_json(&t, "mirror.yaml", &yaml);
    assert_eq!(code, 0, "{stderr}\n{report}");
    let tags = |repo: &str| tags_at(&t, &format!("{d}/{repo}"));
    assert_eq!(tags("off"), ["1"]);
    assert!(listed_referrers(d, "off", &one.digest).is_empty());
    assert_eq!(
        tags("off-all"),
        sorted(vec!["1".into(), fallback.clone(), sig_tag.clone()])
    );
    // digest-tags is off (from the defaults): the digest tag is an ordinary
    // tag that the (absent) tag filters select.
    assert_eq!(
        tags("only-sig"),
        sorted(vec!["1".into(), fallback.clone(), sig_tag.clone()])
    );
    assert_eq!(
        listed_referrers(d, "only-sig", &one.digest),
        std::slice::from_ref(&sig)
    );
    assert!(manifest_of(d, "only-sig", &sbom).is_none());
    assert_eq!(
        tags("no-sig"),
        sorted(vec!["1".into(), fallback.clone(), sig_tag.clone()])
    );
    assert_eq!(
        listed_referrers(d, "no-sig", &one.digest),
        std::slice::from_ref(&sbom)
    );
    assert!(manifest_of(d, "no-sig", &sig).is_none());
    // `defaults: digest-tags: false` holds where the entry says nothing:
    // the digest tag is an ordinary tag there (not carried, but selected).
    assert_eq!(
        tags("defaults"),
        sorted(vec!["1".into(), fallback.clone(), sig_tag.clone()])
    );
    assert_eq!(
        listed_referrers(d, "defaults", &one.digest),
        sorted(one.referrers.clone())
    );
    let sig_as_image = |target: &str| {
        report["images"].as_array().unwrap().iter().any(|i| {
            i["source"].as_str().unwrap().ends_with(&sig_tag)
                && i["target"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("/{target}:"))
        })
    };
    assert!(sig_as_image("defaults") && sig_as_image("off-all"));
    assert!(!sig_as_image("no-sig") && !sig_as_image("off"));
}

#[test]
fn a_bad_referrers_key_is_a_one_line_usage_error() {
    let t = TestDir::new();
    for extra in [
        "    referrers: {enabeld: true}\n",
        "    referrers: {types: {allow: [a], block: [b]}}\n",
        "    digest_tags: false\n",
    ] {
        let yaml =
            format!("version: 1\nsync:\n  - source: a.example/x\n    target: b.example/y\n{extra}");
        std::fs::write(t.path("bad.yaml"), &yaml).unwrap();
        let run = t.imgsync(&["sync", "--config", &t.p("bad.yaml")]);
        let stderr = run.stderr.clone();
        let line = run.fails(2, &["bad.yaml", "unknown field"]);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(line.contains("line 5"), "{line}");
    }
}

#[test]
fn a_referrer_that_fails_fails_the_run_and_is_named() {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let (s, d) = (&src.host, &dst.host);
    let good = push_signed_image(s, "app", "1", "one", &[SIG_TYPE], false);
    // The fallback tag of `2` lists a referrer of `1` (a writer's mistake
    // the registry cannot see): it is not carried, and says so.
    let two = push_signed_image(s, "app", "2", "two", &[], false);
    let misfiled = good.referrers[0].clone();
    let listed = manifest_of(s, "app", &fallback_tag(&good.digest)).unwrap();
    push_manifest(s, "app", Some(&fallback_tag(&two.digest)), &listed);
    let yaml = format!("version: 1\nsync:\n  - source: {s}/app\n    target: {d}/app\n");
    std::fs::write(t.path("m.yaml"), &yaml).unwrap();
    let report_path = t.p("report.json");
    let run = t.imgsync(&[
        "sync",
        "-q",
        "--config",
        &t.p("m.yaml"),
        "--report",
        &report_path,
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("imgsync: error:"))
        .unwrap_or_else(|| panic!("no error line: {}", run.stderr));
    assert!(
        line.contains(&format!("{s}/app:2")) && line.contains(&misfiled),
        "{line}"
    );
    let report = read_json(&t.path("report.json"));
    assert_eq!(report["referrers_failed"], 1);
    let two_rep = image(&report, "/app:2");
    assert_eq!(two_rep["action"], "copied", "the image itself is copied");
    assert_eq!(two_rep["referrers_failed"], 1);
    assert!(
        two_rep["referrer_errors"][0]
            .as_str()
            .unwrap()
            .contains(&misfiled)
    );
    // The other image and its referrer are unaffected.
    assert_eq!(image(&report, "/app:1")["referrers_failed"], 0);
    assert_eq!(listed_referrers(d, "app", &good.digest), good.referrers);
}
