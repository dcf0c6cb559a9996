//! Docker archives in the shapes other tools write, built by
//! `fixture_archives`: each test is the twin of a corpus test in
//! `peer_fixtures` (named in its comment) and asserts the same behaviour, so
//! a clone without the corpus still covers every shape.

use serde_json::Value;

use super::fixture_archives::*;
use super::fixture_checks::*;
use super::harness::*;

/// Twin of `almostempty_is_read`.
#[test]
fn legacy_archive_with_v1_directories_is_read() {
    let t = TestDir::new();
    let built = almost_empty(&t.path("almostempty.tar"), "emptyimage:latest");
    let images = read_docker_archive(
        &t,
        &t.path("almostempty.tar"),
        &[&["docker.io/library/emptyimage:latest"]],
    );
    assert_eq!(images[0]["config"], built.config.as_str());
    assert_eq!(images[0]["layers"].as_array().unwrap().len(), 1);
}

/// Twin of `test_link_two_images_share_a_symlinked_layer`.
#[test]
fn symlinked_layer_is_shared_by_two_images() {
    let t = TestDir::new();
    let path = t.path("linked.tar");
    let [_, second] = linked_layers(&path, "bazel/v1/tarball");
    // The shape under test: the second image's base layer is a link.
    let listing = tool("tar", &["tvf", &t.p("linked.tar")]);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('l') && l.contains("-> ../")),
        "no symlinked layer in:\n{listing}"
    );
    let images = read_docker_archive(
        &t,
        &path,
        &[
            &["docker.io/bazel/v1/tarball:one"],
            &["docker.io/bazel/v1/tarball:three"],
        ],
    );
    assert_eq!(
        images[0]["layers"][0]["digest"],
        images[1]["layers"][0]["digest"]
    );
    assert_eq!(images[1]["layers"].as_array().unwrap().len(), 2);
    assert_eq!(images[1]["config"], second.config.as_str());
}

/// Twin of `test_bundle_two_images_without_tags`.
#[test]
fn bundle_of_tagless_names_is_read_as_latest() {
    let t = TestDir::new();
    let path = t.path("bundle.tar");
    tagless_bundle(&path, ["test_image_2", "test_image_1"]);
    read_docker_archive(
        &t,
        &path,
        &[
            &["docker.io/library/test_image_2:latest"],
            &["docker.io/library/test_image_1:latest"],
        ],
    );
}

/// Twin of `single_image_tarballs_are_read`: a name with a multi-component
/// repository and no registry host, and a whiteout in the upper layer.
#[test]
fn single_image_archives_are_read() {
    let t = TestDir::new();
    let image = t.path("image.tar");
    let mut a = LegacyArchive::default();
    a.image(
        serde_json::json!(["bazel/v1/tarball:test_image_1"]),
        &[&layer_of(&[("hello.txt", "one\n")])],
        None,
    );
    a.write(&image);
    read_docker_archive(&t, &image, &[&["docker.io/bazel/v1/tarball:test_image_1"]]);

    let t = TestDir::new();
    let whiteout = t.path("whiteout.tar");
    whiteout_image(&whiteout, "bazel/pkg/v1/mutate:whiteout_image");
    let images = read_docker_archive(
        &t,
        &whiteout,
        &[&["docker.io/bazel/pkg/v1/mutate:whiteout_image"]],
    );
    assert_eq!(images[0]["layers"].as_array().unwrap().len(), 3);
}

/// Twin of `gzipped_archive_is_read_like_the_plain_one`, for gzip and zstd.
#[test]
fn compressed_archives_are_read_like_the_plain_one() {
    for (name, zstd) in [("image.tar.gz", false), ("image.tar.zst", true)] {
        let t = TestDir::new();
        let mut a = LegacyArchive::default();
        a.image(
            serde_json::json!(["fixture/compressed:1"]),
            &[
                &layer_of(&[("a.txt", "a\n")]),
                &layer_of(&[("b.txt", "b\n")]),
            ],
            None,
        );
        a.write(&t.path("plain.tar"));
        let plain = inspect(&t, &da(&t.path("plain.tar")));
        compress_file(&t.path("plain.tar"), &t.path(name), zstd);
        let packed = t.path(name);
        let before = t.entries();
        assert_eq!(inspect(&t, &da(&packed)), plain, "{name}");
        copy_verify(&t, &da(&packed), "out");
        let digests: Vec<String> = index_entries(&t.path("out"))
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        assert_eq!(
            digests,
            vec![plain[0]["digest"].as_str().unwrap()],
            "{name}"
        );
        // The decompressed spool file is gone.
        let mut after = t.entries();
        after.retain(|e| e != "out");
        assert_eq!(after, before, "{name}");
    }
}

/// Twin of `foreign_layers_are_read`.
#[test]
fn crane_archive_with_foreign_layer_is_read() {
    let t = TestDir::new();
    let (built, gz) = crane_foreign(&t.path("foreign.tar"), "gcr.io/foo/bar:latest", false);
    let images = inspect(&t, &da(&t.path("foreign.tar")));
    assert_eq!(images.len(), 1);
    assert_eq!(names(&images[0]), ["gcr.io/foo/bar:latest"]);
    assert_eq!(images[0]["config"], built.config.as_str());
    // Layers are stored compressed, under their compressed digest.
    let layers = images[0]["layers"].as_array().unwrap();
    assert_eq!(layers[0]["digest"], digest(&gz[0]).as_str());
    assert_eq!(layers[1]["digest"], digest(&gz[1]).as_str());
    let media_type = layers[1]["media_type"].as_str().unwrap();
    assert!(
        media_type.contains("nondistributable") || media_type.contains("foreign"),
        "{media_type}"
    );
    copy_verify(&t, &da(&t.path("foreign.tar")), "out");

    crane_foreign(&t.path("sparse.tar"), "gcr.io/foo/bar:latest", true);
    let sparse = inspect(&t, &da(&t.path("sparse.tar")));
    assert_eq!(names(&sparse[0]), ["gcr.io/foo/bar:latest"]);
    assert_eq!(sparse[0]["layers"].as_array().unwrap().len(), 2);
    assert_eq!(sparse[0]["layers"][1]["digest"], layers[1]["digest"]);
    copy_verify(&t, &da(&t.path("sparse.tar")), "sparse-out");
}

/// Twin of `sparse_foreign_describes_the_same_image_as_foreign`.
#[test]
fn sparse_crane_archive_describes_the_same_image() {
    let t = TestDir::new();
    crane_foreign(&t.path("full.tar"), "gcr.io/foo/bar:latest", false);
    crane_foreign(&t.path("sparse.tar"), "gcr.io/foo/bar:latest", true);
    let full = inspect(&t, &da(&t.path("full.tar")));
    let sparse = inspect(&t, &da(&t.path("sparse.tar")));
    assert_eq!(
        sparse[0]["layers"], full[0]["layers"],
        "layer descriptors differ"
    );
    assert_eq!(
        sparse[0]["digest"], full[0]["digest"],
        "manifest digests differ"
    );
}

/// Twin of `regressions::docker_archive_refuses_foreign_layers_it_cannot_carry`.
#[test]
fn docker_archive_refuses_an_absent_foreign_layer() {
    let t = TestDir::new();
    crane_foreign(&t.path("sparse.tar"), "gcr.io/foo/bar:latest", true);
    t.imgsync(&["copy", &da(&t.path("sparse.tar")), "docker-archive:out.tar"])
        .fails(EXIT_NOT_FOUND, &["foreign layer"]);
    assert!(!t.path("out.tar").exists());
    // A foreign layer whose bytes are present is stored as a plain tar in
    // the legacy shape, under its DiffID like the others.
    crane_foreign(&t.path("foreign.tar"), "gcr.io/foo/bar:latest", false);
    t.imgsync(&[
        "copy",
        "--docker-format",
        "legacy",
        &da(&t.path("foreign.tar")),
        "docker-archive:legacy.tar",
    ])
    .ok();
    t.imgsync(&["verify", "docker-archive:legacy.tar"]).ok();
}

/// Twin of `null_manifest_is_rejected`.
#[test]
fn null_manifest_json_is_rejected() {
    let t = TestDir::new();
    null_manifest(&t.path("null_manifest.tar"));
    rejected(
        &t,
        &[
            "copy",
            &da(&t.path("null_manifest.tar")),
            &oci(&t.path("out")),
        ],
        1,
        &["null_manifest.tar", "manifest.json", "null"],
    );
}

/// Twin of `archives_without_manifest_json_are_pre_1_10`.
#[test]
fn archives_without_manifest_json_are_named_pre_1_10() {
    let t = TestDir::new();
    for (file, zero_byte_layer) in [("no_manifest.tar", false), ("emptyLayer.tar", true)] {
        pre_1_10(&t.path(file), zero_byte_layer);
        let src = da(&t.path(file));
        rejected(
            &t,
            &["copy", &src, &oci(&t.path("out"))],
            1,
            &[file, "no manifest.json", "pre-1.10"],
        );
        rejected(&t, &["inspect", &src], 1, &[file, "pre-1.10"]);
    }
}

/// Twin of `hello_world_v25_without_its_layer`: a Docker 25 archive whose
/// `manifest.json` names a layer that is not there.
#[test]
fn docker25_archive_without_its_layer() {
    let t = TestDir::new();
    let built = docker25(&t.path("hello-world-v25.tar"), None, false);
    let src = da(&t.path("hello-world-v25.tar"));
    rejected(
        &t,
        &["copy", &src, &oci(&t.path("out"))],
        EXIT_NOT_FOUND,
        &[
            "hello-world-v25.tar",
            &built.layer_path,
            "not in the archive",
        ],
    );
    rejected(&t, &["inspect", &src], EXIT_NOT_FOUND, &[&built.layer_path]);
}

/// The complete Docker 25 archives the metadata above comes from, untagged
/// (`RepoTags` and `index.json`'s `manifests` both `null`) and tagged: read,
/// copied and verified, with the config and plain layer the archive holds.
#[test]
fn docker25_archives_are_read() {
    for tag in [None, Some("hello-world:latest")] {
        let t = TestDir::new();
        let built = docker25(&t.path("v25.tar"), tag, true);
        let images = inspect(&t, &da(&t.path("v25.tar")));
        assert_eq!(images.len(), 1, "{tag:?}");
        let want: Vec<String> = tag
            .map(|t| format!("docker.io/library/{t}"))
            .into_iter()
            .collect();
        assert_eq!(names(&images[0]), want);
        assert_eq!(images[0]["config"], built.config.as_str());
        let layer = format!("sha256:{}", &built.layer_path["blobs/sha256/".len()..]);
        assert_eq!(images[0]["layers"][0]["digest"], layer.as_str());
        copy_verify(&t, &da(&t.path("v25.tar")), "out");
        let copied: Vec<String> = index_entries(&t.path("out"))
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        assert_eq!(copied, vec![images[0]["digest"].as_str().unwrap()]);
    }
}

/// Twin of `regclient_layer_tar_is_not_an_image_archive`.
#[test]
fn bare_layer_tar_is_not_an_image_archive() {
    let t = TestDir::new();
    bare_layers(&t.path("layer.tar"), &t.path("layer-wh.tar"));
    for file in ["layer.tar", "layer-wh.tar"] {
        rejected(
            &t,
            &["copy", &da(&t.path(file)), &oci(&t.path("out"))],
            1,
            &[file, "no manifest.json"],
        );
    }
}

/// When `index.json` lists the image (Docker 25.0.3+), its manifest is
/// used as is: the digest a reader reports is the archive's own.
#[test]
fn docker25_listed_image_keeps_its_manifest() {
    let t = TestDir::new();
    let built = docker25(&t.path("v25.tar"), Some("hello-world:latest"), true);
    let images: Vec<Value> = inspect(&t, &da(&t.path("v25.tar")));
    assert_eq!(images[0]["digest"], built.manifest.as_str());
}
