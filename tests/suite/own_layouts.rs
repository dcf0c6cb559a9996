//! OCI layouts in the shapes other tools write, built by `fixture_layouts`
//! and `fixture_referrers`: each test is the twin of a corpus test (named
//! in its comment) and asserts the same behaviour, so a clone without the
//! corpus still covers every shape.

use std::collections::HashMap;

use serde_json::Value;

use super::fixture_checks::*;
use super::fixture_layouts::*;
use super::fixture_referrers::*;
use super::harness::*;

/// Twin of `multiple_images_refs_resolve_and_placeholder_layers_are_refused`.
#[test]
fn shared_and_nested_names_resolve_and_placeholder_layers_are_refused() {
    let t = TestDir::new();
    let src = t.path("several");
    let built = several_names(&src);
    for (name, digest) in index_entries(&src) {
        let name = name.expect("every entry has a ref name");
        if name == built.mis_sized_ref {
            continue;
        }
        let images = inspect(&t, &format!("{}:{name}", oci(&src)));
        assert_eq!(images.len(), 1);
        assert_eq!(images[0]["digest"], digest.as_str(), "ref {name}");
    }
    rejected(
        &t,
        &[
            "copy",
            &format!("{}:{}", oci(&src), built.placeholder_ref),
            &oci(&t.path("out")),
        ],
        EXIT_INTEGRITY,
        &[&built.placeholder_layer],
    );
}

/// Twin of `bad_input::blob_size_does_not_match_descriptor`: copy and
/// verify both name the config and the size its descriptor declares.
#[test]
fn config_descriptor_with_the_wrong_size() {
    let t = TestDir::new();
    let src = t.path("several");
    let built = several_names(&src);
    assert_eq!(built.declared_size, built.actual_size + 1);
    let declared = built.declared_size.to_string();
    let manifest = layout_blob(&src, &built.mis_sized_manifest);
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(
        manifest["config"]["digest"],
        built.mis_sized_config.as_str()
    );
    rejected(
        &t,
        &[
            "copy",
            &format!("{}:{}", oci(&src), built.mis_sized_ref),
            &oci(&t.path("out")),
        ],
        EXIT_INTEGRITY,
        &[&built.mis_sized_config, &declared],
    );
    let run = t.imgsync(&["verify", &oci(&src)]);
    assert_eq!(run.code, EXIT_INTEGRITY, "{}", run.stderr);
    assert!(
        run.stderr.lines().any(|l| l.starts_with("imgsync: error:")
            && l.contains(&built.mis_sized_config)
            && l.contains(&declared)),
        "verify does not report the size mismatch:\n{}",
        run.stderr
    );
}

/// Twin of `two_identical_references_are_ambiguous`.
#[test]
fn duplicate_name_is_ambiguous() {
    let t = TestDir::new();
    let src = t.path("dup");
    let digests = duplicate_name(&src, "1.0.0");
    let loc = format!("{}:1.0.0", oci(&src));
    rejected(
        &t,
        &["copy", &loc, &oci(&t.path("out"))],
        1,
        &["1.0.0", "ambiguous"],
    );
    rejected(&t, &["inspect", &loc], 1, &["1.0.0", "ambiguous"]);
    // Each can still be taken by position.
    for (i, digest) in digests.iter().enumerate() {
        let images = inspect(&t, &format!("{}:@{i}", oci(&src)));
        assert_eq!(images[0]["digest"], digest.as_str());
    }
}

/// Twin of `index_only_fixtures`.
#[test]
fn index_json_without_layout_or_blobs() {
    let t = TestDir::new();
    let [lookups, two, plain] = index_only(&t.path("index-only"));
    for dir in [&lookups, &two, &plain] {
        rejected(
            &t,
            &["inspect", &oci(dir)],
            1,
            &[&dir.display().to_string(), "oci-layout"],
        );
    }
    for dir in [&lookups, &two, &plain] {
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    }

    let mut all_names = Vec::new();
    for (name, digest) in index_entries(&lookups) {
        let name = name.unwrap();
        rejected(
            &t,
            &["inspect", &format!("{}:{name}", oci(&lookups))],
            EXIT_NOT_FOUND,
            &[&digest, "missing"],
        );
        all_names.push(name);
    }
    rejected(
        &t,
        &["inspect", &format!("{}:nope", oci(&lookups))],
        EXIT_NOT_FOUND,
        &["nope", &all_names.join("; ")],
    );

    // Two untagged images: a single one must be chosen, by position.
    rejected(
        &t,
        &["inspect", "--raw", &oci(&two)],
        2,
        &["2 images", "@N"],
    );
    rejected(
        &t,
        &["copy", &oci(&two), &format!("{}:x", oci(&t.path("out")))],
        2,
        &["2 images"],
    );
    for (i, (_, digest)) in index_entries(&two).iter().enumerate() {
        rejected(
            &t,
            &["inspect", &format!("{}:@{i}", oci(&two))],
            EXIT_NOT_FOUND,
            &[digest, "missing"],
        );
    }

    let (_, digest) = &index_entries(&plain)[0];
    rejected(
        &t,
        &["inspect", &format!("{}:v0.1.1", oci(&plain))],
        EXIT_NOT_FOUND,
        &[digest, "missing"],
    );
}

/// Twins of `test_index_keeps_every_digest` and
/// `test_gc_index_keeps_every_digest`.
#[test]
fn entries_with_mismatched_media_types_keep_their_digests() {
    let t = TestDir::new();
    let src = t.path("mixed");
    mixed_media_types(&src, true);
    copy_layout_entries(&t, &src);
    whole_layout_keeps_its_entries(&t, &src);

    let t = TestDir::new();
    let src = t.path("mixed-gc");
    mixed_media_types(&src, false);
    copy_layout_entries(&t, &src);
}

/// Twin of `test_index_one_image_keeps_its_digest`.
#[test]
fn one_untagged_manifest_without_media_type_keeps_its_digest() {
    let t = TestDir::new();
    let src = t.path("one");
    let digest = one_untagged(&src);
    let images = inspect(&t, &oci(&src));
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["digest"], digest.as_str());
    copy_layout_entries(&t, &src);
}

/// Twin of `helm_artifact_copies_to_oci_but_not_to_docker`.
#[test]
fn helm_chart_copies_to_oci_but_not_to_docker() {
    let t = TestDir::new();
    let src = t.path("helm");
    let digest = helm_chart(&src);
    copy_layout_entries(&t, &src);
    rejected(
        &t,
        &["copy", &oci(&src), &da(&t.path("helm.tar"))],
        1,
        &[&digest, "artifact"],
    );
}

/// Twin of `unknown_mediatype_without_blobs_is_a_missing_blob`.
#[test]
fn descriptor_typed_entry_without_blob_is_missing() {
    let t = TestDir::new();
    let src = t.path("unknown");
    let digest = descriptor_without_blob(&src);
    rejected(
        &t,
        &["copy", &oci(&src), &oci(&t.path("out"))],
        EXIT_NOT_FOUND,
        &[&digest, "missing"],
    );
    rejected(
        &t,
        &["copy", &oci(&src), &da(&t.path("out.tar"))],
        EXIT_NOT_FOUND,
        &[&digest, "missing"],
    );
}

/// Twin of `regclient_testrepo_keeps_every_digest`.
#[test]
fn referrers_repository_keeps_every_digest() {
    let t = TestDir::new();
    let src = t.path("repo");
    referrers_repo(&src);
    copy_layout_entries(&t, &src);
}

/// Twin of `regclient_buildx_attestations_are_copied`.
#[test]
fn buildx_attestations_are_copied() {
    let t = TestDir::new();
    let src = t.path("repo");
    let built = referrers_repo(&src);
    let images = inspect(&t, &format!("{}:v1", oci(&src)));
    assert_eq!(images[0]["digest"], built.v1.as_str());
    copy_verify(&t, &format!("{}:v1", oci(&src)), "out");
    assert_named_with_attachments(&t.path("out"), "v1", &built.v1);
    for attestation in &built.attestations {
        assert!(
            t.path("out/blobs/sha256")
                .join(&attestation["sha256:".len()..])
                .exists(),
            "the attestation manifest {attestation} was not copied"
        );
    }
    inspect(&t, &format!("{}:a-docker", oci(&src)));
}

/// Twin of `regclient_external_copies_without_its_subject`.
#[test]
fn referrers_copy_without_their_subject() {
    let t = TestDir::new();
    let built = referrers_repo(&t.path("repo"));
    let src = t.path("external");
    external_referrers(&src, &built.v2);
    copy_layout_entries(&t, &src);
    whole_layout_keeps_its_entries(&t, &src);
}

/// Twin of
/// `regressions::docker_format_follows_renamed_manifests_and_leaves_artifacts_alone`.
#[test]
fn docker_format_renames_attestation_targets_and_keeps_them_oci() {
    let t = TestDir::new();
    let src = t.path("repo");
    referrers_repo(&src);
    let report = t
        .imgsync(&[
            "copy",
            "--json",
            "--format",
            "docker",
            &format!("{}:v1", oci(&src)),
            "oci:out:v1",
        ])
        .ok()
        .json();
    let renamed: HashMap<String, String> = report["conversions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["old"].as_str().unwrap().to_string(),
                c["new"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(!renamed.is_empty(), "nothing was converted");
    let root = report["images"][0]["digest"].as_str().unwrap();
    let list: Value = serde_json::from_slice(&layout_blob(&t.path("out"), root)).unwrap();
    assert_eq!(list["mediaType"], DOCKER_LIST);
    let mut attestations = 0;
    for e in list["manifests"].as_array().unwrap() {
        if let Some(d) = e["annotations"]["vnd.docker.reference.digest"].as_str() {
            attestations += 1;
            assert!(
                !renamed.contains_key(d),
                "attestation still names the old digest {d}"
            );
            // Attestations are artifacts: not relabelled as Docker images.
            assert_eq!(e["mediaType"], OCI_MANIFEST);
        }
    }
    assert_eq!(attestations, 2);
    t.imgsync(&["verify", "oci:out"]).ok();
}
