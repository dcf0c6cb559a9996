//! Signatures, SBOMs, attestations and artifacts travel with the images
//! `imgsync copy` carries, on the real registry (distribution 2.8, which
//! has no referrers API: the referrers fallback tags are what a user's
//! cosign or oras reads there). What arrives is read back with plain HTTP
//! and with `skopeo inspect --raw`.

use std::collections::BTreeSet;

use serde_json::Value;

use super::fixture_push::{Repo, SPDX, SignedApp, digest_of, fallback_tag, signed_app};
use super::harness::*;
use super::registry_harness::{Kind, Registry};

const REWRITTEN: &str = "their subject was rewritten by a conversion";

/// (digest, artifactType) of each entry of a fallback tag's index at
/// `repo`: what a client without the referrers API lists.
fn listed(repo: &Repo, subject: &Value) -> BTreeSet<(String, String)> {
    let Some(bytes) = repo.get_manifest(&fallback_tag(&digest_of(subject))) else {
        return BTreeSet::new();
    };
    let index: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json",
        "the fallback tag of {} holds an index",
        digest_of(subject)
    );
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_string(),
                d["artifactType"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn entries(descs: &[&Value]) -> BTreeSet<(String, String)> {
    descs
        .iter()
        .map(|d| {
            (
                digest_of(d),
                d["artifactType"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// `skopeo inspect --raw` of a plain-HTTP reference: the manifest bytes.
fn skopeo_raw(reference: &str) -> Vec<u8> {
    tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    )
    .into_bytes()
}

/// Asserts that the manifest `desc` names, and every blob it names, are at
/// `dst` byte for byte as at `src`.
fn same_bytes(src: &Repo, dst: &Repo, desc: &Value) {
    let d = digest_of(desc);
    let bytes = src.get_manifest(&d).unwrap();
    assert_eq!(
        dst.get_manifest(&d).as_deref(),
        Some(bytes.as_slice()),
        "manifest {d} at {}",
        dst.name
    );
    assert_eq!(
        skopeo_raw(&format!("{}/{}@{d}", dst.host, dst.name)),
        bytes,
        "skopeo reads {d}"
    );
    let m: Value = serde_json::from_slice(&bytes).unwrap();
    let blobs = m["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(m.get("config"));
    for b in blobs {
        let bd = digest_of(b);
        assert_eq!(dst.get_blob(&bd), src.get_blob(&bd), "blob {bd} of {d}");
    }
}

/// Pairs of strings: (digest, artifactType) or (tag, digest).
type Pairs = BTreeSet<(String, String)>;

/// The (digest, artifactType) of each referrer a `--json` report lists
/// without a tag, and the (tag, digest) of each it lists with one.
fn reported(json: &Value) -> (Pairs, Pairs) {
    let mut untagged = BTreeSet::new();
    let mut tagged = BTreeSet::new();
    for r in json["referrers"].as_array().unwrap() {
        let digest = r["digest"].as_str().unwrap().to_string();
        match r["tag"].as_str() {
            Some(tag) => tagged.insert((tag.to_string(), digest)),
            None => untagged.insert((
                digest,
                r["artifact_type"].as_str().unwrap_or("").to_string(),
            )),
        };
    }
    (untagged, tagged)
}

fn not_carried(json: &Value) -> Vec<(u64, String)> {
    json["referrers_not_carried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["count"].as_u64().unwrap(),
                n["why"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Pushes `signed/app` to a fresh registry.
fn source() -> (Registry, SignedApp) {
    let reg = Registry::start(Kind::Plain);
    let app = signed_app(&reg.host, "signed/app");
    (reg, app)
}

#[test]
fn copy_carries_signatures_sboms_and_attestations_byte_for_byte() {
    let (src_reg, app) = source();
    let dst_reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let src = Repo::new(&src_reg.host, "signed/app");
    let dst = Repo::new(&dst_reg.host, "mirror/app");
    let args = [
        "copy",
        "--json",
        &format!("docker://{}/signed/app:v1", src_reg.host),
        &format!("docker://{}/mirror/app:v1", dst_reg.host),
    ];
    let json = t.imgsync(&args).ok().json();

    same_bytes(&src, &dst, &app.image);
    for r in app.image_referrers() {
        same_bytes(&src, &dst, r);
    }
    same_bytes(&src, &dst, &app.sig_tagged);
    // Each subject's fallback tag lists exactly its own referrers.
    assert_eq!(
        listed(&dst, &app.image),
        entries(&[&app.sig_referrer, &app.sbom, &app.attestation])
    );
    assert_eq!(listed(&dst, &app.sbom), entries(&[&app.sbom_sig]));
    assert_eq!(listed(&dst, &app.sig_referrer), BTreeSet::new());
    // The digest tag names the same manifest as at the source.
    assert_eq!(
        dst.get_manifest(&app.sig_tag),
        src.get_manifest(&app.sig_tag)
    );
    assert_eq!(
        dst.tags(),
        [
            "v1".to_string(),
            fallback_tag(&digest_of(&app.image)),
            app.sig_tag.clone(),
            fallback_tag(&digest_of(&app.sbom)),
        ]
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>(),
        "nothing else is tagged at the destination"
    );
    let (untagged, tagged) = reported(&json);
    assert_eq!(untagged, entries(&app.image_referrers()));
    assert_eq!(
        tagged,
        BTreeSet::from([(app.sig_tag.clone(), digest_of(&app.sig_tagged))])
    );
    assert!(json["referrers_failed"].as_array().unwrap().is_empty());

    // A second run finds everything there and rewrites no fallback tag.
    let before = dst.get_manifest(&fallback_tag(&digest_of(&app.image)));
    let again = t.imgsync(&args).ok().json();
    assert_eq!(again["blobs_copied"], 0, "{again}");
    assert_eq!(
        dst.get_manifest(&fallback_tag(&digest_of(&app.image))),
        before
    );
    assert!(again["referrers_failed"].as_array().unwrap().is_empty());
}

#[test]
fn a_referrer_the_destination_has_of_its_own_stays_listed() {
    let (reg, app) = source();
    let t = TestDir::new();
    // The mirror has the image and a signature of its own for it.
    let dst = Repo::new(&reg.host, "mirror/app");
    let image = dst.image(Some("v1"), "amd64", "signed app\n");
    assert_eq!(digest_of(&image), digest_of(&app.image), "same image");
    let own = dst.cosign_referrer(&image, "the mirror's own");
    t.imgsync(&[
        "copy",
        &format!("docker://{}/signed/app:v1", reg.host),
        &format!("docker://{}/mirror/app:v1", reg.host),
    ])
    .ok();
    assert_eq!(
        listed(&dst, &app.image),
        entries(&[&own, &app.sig_referrer, &app.sbom, &app.attestation])
    );
    assert_eq!(listed(&dst, &app.sbom), entries(&[&app.sbom_sig]));
}

#[test]
fn each_child_of_an_index_keeps_its_referrers_and_a_platform_pick_counts_the_rewritten_ones() {
    let (reg, app) = source();
    let t = TestDir::new();
    let src = Repo::new(&reg.host, "signed/app");
    let all = Repo::new(&reg.host, "mirror/multi");
    t.imgsync(&[
        "copy",
        &format!("docker://{}/signed/app:multi", reg.host),
        &format!("docker://{}/mirror/multi:multi", reg.host),
    ])
    .ok();
    for (child, referrer) in app.children.iter().zip(&app.child_referrers) {
        assert_eq!(listed(&all, child), entries(&[referrer]));
        same_bytes(&src, &all, referrer);
    }
    assert_eq!(listed(&all, &app.multi), entries(&[&app.multi_sig]));

    let one = Repo::new(&reg.host, "mirror/amd64");
    let run = t
        .imgsync(&[
            "copy",
            "--json",
            "--platform",
            "linux/amd64",
            &format!("docker://{}/signed/app:multi", reg.host),
            &format!("docker://{}/mirror/amd64:multi", reg.host),
        ])
        .ok();
    let json = run.json();
    assert_eq!(
        listed(&one, &app.children[0]),
        entries(&[&app.child_referrers[0]])
    );
    same_bytes(&src, &one, &app.child_referrers[0]);
    assert_eq!(listed(&one, &app.children[1]), BTreeSet::new());
    assert_eq!(one.get_manifest(&digest_of(&app.child_referrers[1])), None);
    // The index was rewritten to one child: its signature would not match.
    assert_eq!(one.get_manifest(&digest_of(&app.multi_sig)), None);
    assert_eq!(not_carried(&json), [(1, REWRITTEN.to_string())]);
    assert!(
        run.stderr
            .contains(&format!("1 referrer(s) not carried: {REWRITTEN}")),
        "{}",
        run.stderr
    );
}

#[test]
fn a_format_conversion_leaves_the_referrers_behind_and_says_why() {
    let (reg, app) = source();
    let t = TestDir::new();
    let run = t
        .imgsync(&[
            "copy",
            "--json",
            "--format",
            "docker",
            &format!("docker://{}/signed/app:v1", reg.host),
            &format!("docker://{}/mirror/app:v1", reg.host),
        ])
        .ok();
    let json = run.json();
    let dst = Repo::new(&reg.host, "mirror/app");
    assert_eq!(dst.tags(), ["v1"], "no referrer or digest tag was written");
    // The three referrers of the image and its digest-tagged signature.
    assert_eq!(not_carried(&json), [(4, REWRITTEN.to_string())]);
    assert!(json["referrers"].as_array().unwrap().is_empty());
    assert!(
        run.stderr
            .contains(&format!("4 referrer(s) not carried: {REWRITTEN}")),
        "{}",
        run.stderr
    );
    assert_eq!(dst.get_manifest(&digest_of(&app.sbom)), None);
}

#[test]
fn referrer_filters_choose_what_travels() {
    let (reg, app) = source();
    let t = TestDir::new();
    let from = format!("docker://{}/signed/app:v1", reg.host);
    let to = |repo: &str| format!("docker://{}/{repo}:v1", reg.host);

    t.imgsync(&["copy", "--referrers", "none", &from, &to("none/app")])
        .ok();
    let none = Repo::new(&reg.host, "none/app");
    assert_eq!(none.tags(), ["v1"]);
    for r in app.image_referrers() {
        assert_eq!(none.get_manifest(&digest_of(r)), None);
    }

    // The SBOM, not its signature (another type); digest tags are not
    // artifact-typed and go by `--no-digest-tags` alone.
    let json = t
        .imgsync(&[
            "copy",
            "--json",
            "--referrers-type",
            SPDX,
            &from,
            &to("sbom/app"),
        ])
        .ok()
        .json();
    let sbom = Repo::new(&reg.host, "sbom/app");
    assert_eq!(listed(&sbom, &app.image), entries(&[&app.sbom]));
    assert_eq!(listed(&sbom, &app.sbom), BTreeSet::new());
    for r in [&app.sig_referrer, &app.sbom_sig, &app.attestation] {
        assert_eq!(sbom.get_manifest(&digest_of(r)), None);
    }
    assert_eq!(reported(&json).0, entries(&[&app.sbom]));

    t.imgsync(&["copy", "--no-digest-tags", &from, &to("nosig/app")])
        .ok();
    let nosig = Repo::new(&reg.host, "nosig/app");
    assert!(!nosig.tags().contains(&app.sig_tag), "{:?}", nosig.tags());
    assert_eq!(nosig.get_manifest(&digest_of(&app.sig_tagged)), None);
    assert_eq!(
        listed(&nosig, &app.image),
        entries(&[&app.sig_referrer, &app.sbom, &app.attestation])
    );
}

#[test]
fn referrers_travel_through_a_layout_to_another_registry() {
    let (reg, app) = source();
    let t = TestDir::new();
    t.imgsync(&[
        "copy",
        &format!("docker://{}/signed/app:v1", reg.host),
        "oci:lay:v1",
    ])
    .ok();
    let refs = layout_refs(&t.path("lay"));
    for r in app.image_referrers() {
        assert!(
            refs.contains(&(String::new(), digest_of(r))),
            "{} is an unnamed index.json entry: {refs:?}",
            digest_of(r)
        );
    }
    assert!(refs.contains(&(app.sig_tag.clone(), digest_of(&app.sig_tagged))));
    let index = read_json(&t.path("lay/index.json"));
    let sbom_entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["digest"] == app.sbom["digest"])
        .unwrap();
    assert_eq!(sbom_entry["artifactType"], SPDX);

    t.imgsync(&[
        "copy",
        "oci:lay:v1",
        &format!("docker://{}/again/app:v1", reg.host),
    ])
    .ok();
    let src = Repo::new(&reg.host, "signed/app");
    let again = Repo::new(&reg.host, "again/app");
    for r in app.image_referrers() {
        same_bytes(&src, &again, r);
    }
    assert_eq!(
        listed(&again, &app.image),
        entries(&[&app.sig_referrer, &app.sbom, &app.attestation])
    );
    assert_eq!(listed(&again, &app.sbom), entries(&[&app.sbom_sig]));
    assert_eq!(
        again.get_manifest(&app.sig_tag),
        src.get_manifest(&app.sig_tag)
    );
}

#[test]
fn a_helm_chart_copies_byte_for_byte() {
    let (reg, app) = source();
    let t = TestDir::new();
    let from = format!("docker://{}/signed/app:chart", reg.host);
    t.imgsync(&[
        "copy",
        &from,
        &format!("docker://{}/charts/app:chart", reg.host),
    ])
    .ok();
    let src = Repo::new(&reg.host, "signed/app");
    let charts = Repo::new(&reg.host, "charts/app");
    same_bytes(&src, &charts, &app.chart);
    assert_eq!(charts.get_manifest("chart"), src.get_manifest("chart"));

    t.imgsync(&["copy", &from, "oci:charts:chart"]).ok();
    let chart = src.get_manifest("chart").unwrap();
    assert_eq!(
        layout_refs(&t.path("charts")),
        [("chart".to_string(), digest_of(&app.chart))]
    );
    assert_eq!(
        layout_blob(&t.path("charts"), &digest_of(&app.chart)),
        chart
    );
    let m: Value = serde_json::from_slice(&chart).unwrap();
    for b in m["layers"].as_array().unwrap().iter().chain([&m["config"]]) {
        assert_eq!(
            Some(layout_blob(&t.path("charts"), &digest_of(b))),
            src.get_blob(&digest_of(b))
        );
    }
}

#[test]
fn a_docker_archive_takes_the_image_and_says_the_referrers_stay_behind() {
    let (reg, _app) = source();
    let t = TestDir::new();
    let run = t
        .imgsync(&[
            "copy",
            &format!("docker://{}/signed/app:v1", reg.host),
            "docker-archive:app.tar:signed/app:v1",
        ])
        .ok();
    assert!(t.path("app.tar").is_file());
    t.imgsync(&["verify", "docker-archive:app.tar"]).ok();
    // Three referrers and the digest-tagged signature of the image.
    assert!(
        run.stderr
            .contains("4 referrer(s) not carried: docker-archive cannot hold them"),
        "{}",
        run.stderr
    );
}
