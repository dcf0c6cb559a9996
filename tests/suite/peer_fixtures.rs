//! Archives and layouts written by other tools (`shared/peer-fixtures/`,
//! each folder's README.md says what every file exercises). Each one is
//! either read correctly — `inspect` reports the names and digests the file
//! holds, a copy into an OCI layout verifies, and manifests that existed in
//! a source layout keep their digests — or rejected with the error its
//! README predicts, leaving no destination behind.
//!
//! Fixtures are read in place (they are read-only); anything that must be
//! changed or written beside is first copied into the test's temp dir.

use super::fixture_checks::*;
use super::harness::*;

// ---- containers-image -------------------------------------------------

#[test]
fn almostempty_is_read() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let images = read_docker_archive(
        &t,
        &corpus.path("containers-image/docker-archive/almostempty.tar"),
        &[&["docker.io/library/emptyimage:latest"]],
    );
    // The config is stored under its own digest.
    assert_eq!(
        images[0]["config"],
        "sha256:9d7f147c0d0c4d4538a04c7ef385809e56eb1aac7bf800fbe976612188025b68"
    );
    assert_eq!(images[0]["layers"].as_array().unwrap().len(), 1);
}

/// Every blob of `multiple_images` hashes to its name, but the layers are
/// placeholder text under a gzip media type, so their DiffIDs cannot be
/// checked: copies are refused, naming the layer. `inspect` (which reads
/// no layers) still resolves every ref to the digest `index.json` gives.
#[test]
fn multiple_images_refs_resolve_and_placeholder_layers_are_refused() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let src = corpus.path("containers-image/oci-layout/multiple_images");
    for (name, digest) in index_entries(&src) {
        let name = name.expect("every entry has a ref name");
        if name == "1.0.0" {
            // Its config descriptor has the wrong size (see bad_input).
            continue;
        }
        let images = inspect(&t, &format!("{}:{name}", oci(&src)));
        assert_eq!(images.len(), 1);
        assert_eq!(images[0]["digest"], digest.as_str(), "ref {name}");
    }
    // `3.17.5` is a single manifest with one layer.
    let layer = "sha256:986315a0e599fac2b80eb31db2124dab8d3de04d7ca98b254999bd913c1f73fe";
    rejected(
        &t,
        &[
            "copy",
            &format!("{}:3.17.5", oci(&src)),
            &oci(&t.path("out")),
        ],
        EXIT_INTEGRITY,
        &[layer],
    );
}

#[test]
fn two_identical_references_are_ambiguous() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let src = corpus.path("containers-image/oci-layout/two_identical_references");
    let loc = format!("{}:1.0.0", oci(&src));
    rejected(
        &t,
        &["copy", &loc, &oci(&t.path("out"))],
        1,
        &["1.0.0", "ambiguous"],
    );
    rejected(&t, &["inspect", &loc], 1, &["1.0.0", "ambiguous"]);
    // Each can still be taken by position.
    for (i, digest) in [
        "sha256:49d1584496c6e196f512c4a9f52b17b187642269d84c044538523c5b69a660b3",
        "sha256:ecfa463536cb5472e238aadc4df81d4785d5d6373027c488a2db8a6e76fe88ed",
    ]
    .iter()
    .enumerate()
    {
        let images = inspect(&t, &format!("{}:@{i}", oci(&src)));
        assert_eq!(images[0]["digest"], *digest);
    }
}

/// The index-only fixtures have no `oci-layout` file and no blobs. As they
/// are they are not layouts; with an `oci-layout` file added, their
/// `index.json` is parsed and each ref resolves to its (absent) digest.
#[test]
fn index_only_fixtures() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    for name in [
        "name_lookups",
        "two_images_manifest",
        "index_without_mediatype",
    ] {
        let src = corpus.path(&format!("containers-image/oci-layout/{name}"));
        rejected(
            &t,
            &["inspect", &oci(&src)],
            1,
            &[&src.display().to_string(), "oci-layout"],
        );
    }
    let add_layout_file = |name: &str| {
        let dir = t.copy_in(
            &corpus.path(&format!("containers-image/oci-layout/{name}")),
            name,
        );
        tool("chmod", &["-R", "u+w", &dir.display().to_string()]);
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        dir
    };

    let lookups = add_layout_file("name_lookups");
    for (name, digest) in index_entries(&lookups) {
        let name = name.unwrap();
        rejected(
            &t,
            &["inspect", &format!("{}:{name}", oci(&lookups))],
            EXIT_NOT_FOUND,
            &[&digest, "missing"],
        );
    }
    rejected(
        &t,
        &["inspect", &format!("{}:nope", oci(&lookups))],
        EXIT_NOT_FOUND,
        &["nope", "a; b; c; d; invalid-mime"],
    );

    // Two untagged images: a single one must be chosen, by position.
    let two = add_layout_file("two_images_manifest");
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

    let plain = add_layout_file("index_without_mediatype");
    rejected(
        &t,
        &["inspect", &format!("{}:v0.1.1", oci(&plain))],
        EXIT_NOT_FOUND,
        &[
            "sha256:84afb6189c4d69f2d040c5f1dc4e0a16fed9b539ce9cfb4ac2526ae4e0576cc0",
            "missing",
        ],
    );
}

// ---- go-containerregistry: tarball/ -----------------------------------

#[test]
fn test_link_two_images_share_a_symlinked_layer() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let images = read_docker_archive(
        &t,
        &corpus.path("go-containerregistry/tarball/test_link.tar"),
        &[
            &["docker.io/bazel/v1/tarball:test_image_1"],
            &["docker.io/bazel/v1/tarball:test_image_3"],
        ],
    );
    // test_image_3's first layer is a link to test_image_1's layer.
    assert_eq!(
        images[0]["layers"][0]["digest"],
        images[1]["layers"][0]["digest"]
    );
    assert_eq!(images[1]["layers"].as_array().unwrap().len(), 2);
}

#[test]
fn test_bundle_two_images_without_tags() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    read_docker_archive(
        &t,
        &corpus.path("go-containerregistry/tarball/test_bundle.tar"),
        &[
            &["docker.io/library/test_image_2:latest"],
            &["docker.io/library/test_image_1:latest"],
        ],
    );
}

#[test]
fn single_image_tarballs_are_read() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    for (file, name) in [
        (
            "test_image_1.tar",
            "docker.io/bazel/v1/tarball:test_image_1",
        ),
        (
            "test_image_2.tar",
            "docker.io/bazel/v1/tarball:test_image_2",
        ),
        (
            "test_load_manifest.tar",
            "docker.io/bazel/v1/tarball:test_image_1",
        ),
        (
            "whiteout_image.tar",
            "docker.io/bazel/pkg/v1/mutate:whiteout_image",
        ),
    ] {
        let t = TestDir::new();
        read_docker_archive(
            &t,
            &corpus.path(&format!("go-containerregistry/tarball/{file}")),
            &[&[name]],
        );
    }
}

#[test]
fn gzipped_archive_is_read_like_the_plain_one() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let plain = inspect(
        &t,
        &da(&corpus.path("go-containerregistry/tarball/test_image_1.tar")),
    );
    let gz = corpus.path("go-containerregistry/tarball/test_image_1.tar.gz");
    let before = t.entries();
    let images = inspect(&t, &da(&gz));
    assert_eq!(images, plain);
    copy_verify(&t, &da(&gz), "out");
    let digests: Vec<String> = index_entries(&t.path("out"))
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        digests,
        vec![plain[0]["digest"].as_str().unwrap().to_string()]
    );
    // The decompressed spool file is gone.
    let mut after = t.entries();
    after.retain(|e| e != "out");
    assert_eq!(after, before);
}

#[test]
fn foreign_layers_are_read() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let foreign = corpus.path("go-containerregistry/tarball/foreign.tar");
    let images = inspect(&t, &da(&foreign));
    assert_eq!(images.len(), 1);
    assert_eq!(names(&images[0]), ["gcr.io/foo/bar:latest"]);
    assert_eq!(
        images[0]["config"],
        "sha256:53029f61be64b4c3d4e30d4c15ea49cdbd9514e4fbaa7e8d7c0cff91756b40e7"
    );
    // Layers are stored compressed, under their compressed digest.
    let layers = images[0]["layers"].as_array().unwrap();
    assert_eq!(
        layers[0]["digest"],
        "sha256:3d83ee5500c36466cd6df226a81512912dfdec4537e7fa7e6eab36f00f4548b6"
    );
    assert_eq!(
        layers[1]["digest"],
        "sha256:015b6ec6d1bc15e26c868d36ef75577c7a0405609ea9abc028b69204b56e7325"
    );
    assert!(
        layers[1]["media_type"]
            .as_str()
            .unwrap()
            .contains("nondistributable")
            || layers[1]["media_type"]
                .as_str()
                .unwrap()
                .contains("foreign")
    );
    copy_verify(&t, &da(&foreign), "out");

    let sparse = corpus.path("go-containerregistry/tarball/sparse_foreign.tar");
    let sparse_images = inspect(&t, &da(&sparse));
    assert_eq!(names(&sparse_images[0]), ["gcr.io/foo/bar:latest"]);
    assert_eq!(sparse_images[0]["layers"].as_array().unwrap().len(), 2);
    assert_eq!(sparse_images[0]["layers"][1]["digest"], layers[1]["digest"]);
    copy_verify(&t, &da(&sparse), "sparse-out");
}

/// `sparse_foreign.tar` is `foreign.tar` without the foreign layer's file:
/// the image is the same, so the manifest built for it must be too.
#[test]
fn sparse_foreign_describes_the_same_image_as_foreign() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let full = inspect(
        &t,
        &da(&corpus.path("go-containerregistry/tarball/foreign.tar")),
    );
    let sparse = inspect(
        &t,
        &da(&corpus.path("go-containerregistry/tarball/sparse_foreign.tar")),
    );
    assert_eq!(
        sparse[0]["layers"], full[0]["layers"],
        "layer descriptors differ"
    );
    assert_eq!(
        sparse[0]["digest"], full[0]["digest"],
        "manifest digests differ"
    );
}

#[test]
fn null_manifest_is_rejected() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let src = corpus.path("go-containerregistry/tarball/null_manifest.tar");
    rejected(
        &t,
        &["copy", &da(&src), &oci(&t.path("out"))],
        1,
        &["null_manifest.tar", "manifest.json", "null"],
    );
}

#[test]
fn archives_without_manifest_json_are_pre_1_10() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    for rel in [
        "go-containerregistry/tarball/no_manifest.tar",
        "moby/emptyLayer.tar",
    ] {
        let src = corpus.path(rel);
        let file = src.file_name().unwrap().to_string_lossy().into_owned();
        rejected(
            &t,
            &["copy", &da(&src), &oci(&t.path("out"))],
            1,
            &[&file, "no manifest.json", "pre-1.10"],
        );
        rejected(&t, &["inspect", &da(&src)], 1, &[&file, "pre-1.10"]);
    }
}

/// The Docker 25 `docker save` metadata without its layer blob, tarred up
/// as the archive it came from (minus the layer): its `manifest.json`
/// names a layer that is not there.
#[test]
fn hello_world_v25_without_its_layer() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let dir = corpus.path("go-containerregistry/tarball/hello-world-v25-metadata");
    let files = [
        "blobs/sha256/411caf340c828657e915a83ed561a79d2b8150dabad4dc079d881cbfe6f86afe",
        "blobs/sha256/ac09ed77c1b58dc3f93528f17515cb1c5487fa8f304ba2ed54d0f14686f1136e",
        "blobs/sha256/ee301c921b8aadc002973b2e0c3da17d701dcd994b606769a7e6eaa100b81d44",
        "index.json",
        "manifest.json",
        "oci-layout",
    ];
    let contents: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    let entries: Vec<(&str, &[u8])> = files
        .iter()
        .zip(&contents)
        .map(|(f, c)| (*f, c.as_slice()))
        .collect();
    write_tar(&t.path("hello-world-v25.tar"), &entries);
    let src = da(&t.path("hello-world-v25.tar"));
    let layer = "blobs/sha256/12660636fe55438cc3ae7424da7ac56e845cdb52493ff9cf949c47a7f57f8b43";
    rejected(
        &t,
        &["copy", &src, &oci(&t.path("out"))],
        EXIT_NOT_FOUND,
        &["hello-world-v25.tar", layer, "not in the archive"],
    );
    rejected(&t, &["inspect", &src], EXIT_NOT_FOUND, &[layer]);
}

// ---- go-containerregistry: layout/ ------------------------------------

#[test]
fn test_index_keeps_every_digest() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let src = corpus.path("go-containerregistry/layout/test_index");
    copy_layout_entries(&t, &src);
    // The whole layout in one copy gives the same entries.
    whole_layout_keeps_its_entries(&t, &src);
}

#[test]
fn test_gc_index_keeps_every_digest() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    copy_layout_entries(
        &t,
        &corpus.path("go-containerregistry/layout/test_gc_index"),
    );
}

#[test]
fn test_index_one_image_keeps_its_digest() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let src = corpus.path("go-containerregistry/layout/test_index_one_image");
    let images = inspect(&t, &oci(&src));
    assert_eq!(images.len(), 1);
    assert_eq!(
        images[0]["digest"],
        "sha256:98ceaf93e482fe91b9bfd6bba07137c098e49ee2d55e69f09fb6c951e75e0e46"
    );
    copy_layout_entries(&t, &src);
}

/// A Helm chart: an artifact, copyable between OCI layouts, refused by a
/// docker archive.
#[test]
fn helm_artifact_copies_to_oci_but_not_to_docker() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let src = corpus.path("go-containerregistry/layout/test_index_media_type");
    copy_layout_entries(&t, &src);
    let digest = "sha256:b544f71ecd82372bc9a3c0dbef378abfd2734fe437df81ff6e242a0d720d8e3e";
    rejected(
        &t,
        &["copy", &oci(&src), &da(&t.path("helm.tar"))],
        1,
        &[digest, "artifact"],
    );
}

#[test]
fn unknown_mediatype_without_blobs_is_a_missing_blob() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let src = corpus.path("go-containerregistry/layout/test_gc_image_unknown_mediatype");
    let digest = "sha256:32589985702551b6c56033bb3334432a0a513bf9d6aceda0f67c42b003850720";
    rejected(
        &t,
        &["copy", &oci(&src), &oci(&t.path("out"))],
        EXIT_NOT_FOUND,
        &[digest, "missing"],
    );
    rejected(
        &t,
        &["copy", &oci(&src), &da(&t.path("out.tar"))],
        EXIT_NOT_FOUND,
        &[digest, "missing"],
    );
}

// ---- regclient ---------------------------------------------------------

/// Every entry of regclient's test repository: nested indexes, OCI 1.1
/// artifacts with `subject`, referrers fallback tags, buildx attestation
/// descriptors, a loop, a self-referencing digest tag, untagged entries.
#[test]
fn regclient_testrepo_keeps_every_digest() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    copy_layout_entries(&t, &corpus.path("regclient/testrepo"));
}

/// `v1` lists buildx "builder" attestation manifests whose config is `{}`;
/// they are copied as they are, not refused.
#[test]
fn regclient_buildx_attestations_are_copied() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let src = corpus.path("regclient/testrepo");
    let v1 = "sha256:7ceb9b6bcc274697d0c38be6214b50cec79d601bc61708747d3f6cb772f6c6fa";
    let images = inspect(&t, &format!("{}:v1", oci(&src)));
    assert_eq!(images[0]["digest"], v1);
    copy_verify(&t, &format!("{}:v1", oci(&src)), "out");
    assert_named_with_attachments(&t.path("out"), "v1", v1);
    let attestation = "43089316cfeec5c2f7897591f5925167afda21932cf71a1a1264684930e7b40a";
    assert!(
        t.path("out/blobs/sha256").join(attestation).exists(),
        "the attestation manifest was not copied"
    );
    inspect(&t, &format!("{}:a-docker", oci(&src)));
}

/// A layout whose referrers' subject lives in another layout: the missing
/// subject is not needed to copy it.
#[test]
fn regclient_external_copies_without_its_subject() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let src = corpus.path("regclient/external");
    copy_layout_entries(&t, &src);
    whole_layout_keeps_its_entries(&t, &src);
}

/// A bare layer tar is not an image archive.
#[test]
fn regclient_layer_tar_is_not_an_image_archive() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    for rel in [
        "regclient/layers/layer.tar",
        "regclient/layers/layer-wh.tar",
    ] {
        let src = corpus.path(rel);
        let file = src.file_name().unwrap().to_string_lossy().into_owned();
        rejected(
            &t,
            &["copy", &da(&src), &oci(&t.path("out"))],
            1,
            &[&file, "no manifest.json"],
        );
    }
}
