//! Regression tests, each named after the defect it pins down.

use serde_json::Value;

use super::harness::*;

/// Writes a one-image layout from (media type, bytes) layers; the layers
/// are uncompressed tars unless given otherwise. Returns the manifest
/// descriptor.
fn image_layout(dir: &std::path::Path, tag: &str, layers: &[Vec<u8>]) -> Value {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let refs: Vec<&[u8]> = layers.iter().map(|l| l.as_slice()).collect();
    let cfg = put_blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        &config_for(&refs),
    );
    let descs: Vec<Value> = layers
        .iter()
        .map(|l| put_blob(dir, "application/vnd.oci.image.layer.v1.tar", l))
        .collect();
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cfg, "layers": descs});
    let mut m = put_blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    m["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [m.clone()]}))
            .unwrap(),
    )
    .unwrap();
    m
}

#[test]
fn failed_copy_does_not_remove_blobs_another_copy_committed() {
    let t = TestDir::new();
    // The shared layer is the largest blob, so A (one job at a time,
    // largest first) installs it before it reaches the FIFO.
    let shared = layer_tar("shared.txt", &vec![b's'; 64 * 1024]);
    // Image A: the shared layer, then a small layer streamed through a FIFO
    // so that A is held mid-copy; its bytes will turn out wrong.
    let good = layer_tar("a.txt", b"a\n");
    image_layout(&t.path("a"), "a", &[shared.clone(), good.clone()]);
    let fifo = t.path("a/blobs/sha256").join(sha256_hex(&good));
    std::fs::remove_file(&fifo).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    image_layout(
        &t.path("b"),
        "b",
        &[shared.clone(), layer_tar("b.txt", b"b\n")],
    );

    let a = std::process::Command::new(env!("CARGO_BIN_EXE_imgsync"))
        .args(["copy", "-q", "--jobs", "1", "oci:a:a", "oci:dest:a"])
        .current_dir(t.dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A opens the FIFO once it has the small blobs; B commits meanwhile,
    // relying on the shared layer being in the layout.
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    t.imgsync(&["copy", "oci:b:b", "oci:dest:b"]).ok();
    std::io::Write::write_all(&mut w, &vec![b'x'; good.len()]).unwrap();
    drop(w);
    let out = a.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(EXIT_INTEGRITY),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.imgsync(&["verify", "oci:dest"]).ok();
    let refs: Vec<String> = layout_refs(&t.path("dest"))
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(refs, ["b"]);
}

#[test]
fn blob_shared_by_two_images_is_checked_against_each_descriptor() {
    let t = TestDir::new();
    let shared = layer_tar("shared.txt", b"shared\n");
    let m1 = image_layout(&t.path("l"), "ok", std::slice::from_ref(&shared));
    // A second image lists the same layer with a wrong size.
    let cfg = config_for(&[&shared]);
    let cfg_d = put_blob(
        &t.path("l"),
        "application/vnd.oci.image.config.v1+json",
        &cfg,
    );
    let bad_layer = serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{}", sha256_hex(&shared)), "size": shared.len() + 7});
    let bad = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cfg_d, "layers": [bad_layer]});
    let mut m2 = put_blob(
        &t.path("l"),
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&bad).unwrap(),
    );
    m2["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "badsize"});
    std::fs::write(
        t.path("l/index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [m1, m2]}))
            .unwrap(),
    )
    .unwrap();
    t.imgsync(&["verify", "oci:l"]).fails(
        EXIT_INTEGRITY,
        &["badsize", &format!("{}", shared.len() + 7)],
    );
    t.imgsync(&["copy", "oci:l", "oci:out"])
        .fails(EXIT_INTEGRITY, &["badsize"]);
    assert!(!t.path("out").exists());
}

#[test]
fn index_entry_without_media_type_is_copied_as_a_manifest() {
    let t = TestDir::new();
    let m = image_layout(&t.path("src"), "x", &[layer_tar("f.txt", b"f\n")]);
    // Wrap the manifest in an index whose entry has no mediaType.
    let mut entry = m.clone();
    entry.as_object_mut().unwrap().remove("mediaType");
    entry.as_object_mut().unwrap().remove("annotations");
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry]});
    let mut idx = put_blob(
        &t.path("src"),
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    idx["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "x"});
    std::fs::write(
        t.path("src/index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [idx]})).unwrap(),
    )
    .unwrap();
    t.imgsync(&["copy", "oci:src:x", "oci:out"]).ok();
    let mut src_blobs: Vec<_> = std::fs::read_dir(t.path("src/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut out_blobs: Vec<_> = std::fs::read_dir(t.path("out/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    src_blobs.sort();
    out_blobs.sort();
    assert_eq!(out_blobs, src_blobs, "config and layer came along");
    t.imgsync(&["verify", "oci:out"]).ok();
}

#[test]
fn platform_flag_is_checked_on_a_single_manifest() {
    let t = TestDir::new();
    let src = format!(
        "docker-archive:{}:imgsync-fixture/hello:1.0",
        fixture("hello.tar").display()
    );
    t.imgsync(&["copy", "--platform", "linux/s390x", &src, "oci:out"])
        .fails(EXIT_NOT_FOUND, &["linux/amd64", "linux/s390x"]);
    assert!(!t.path("out").exists());
    t.imgsync(&["copy", "--platform", "linux/amd64", &src, "oci:out"])
        .ok();
}

#[test]
fn writing_a_ref_name_takes_it_from_other_entries() {
    let t = TestDir::new();
    let hello = fixture("hello.tar").display().to_string();
    t.imgsync(&["copy", &format!("docker-archive:{hello}:@0"), "oci:n"])
        .ok();
    let second = t
        .imgsync(&[
            "copy",
            "--json",
            &format!("docker-archive:{hello}:@1"),
            "oci:n:1.0",
        ])
        .ok()
        .json();
    let info = t.imgsync(&["inspect", "--json", "oci:n:1.0"]).ok().json();
    assert_eq!(info[0]["digest"], second["images"][0]["digest"]);
    // The first image keeps its full name.
    t.imgsync(&["inspect", "oci:n:imgsync-fixture/hello:1.0"])
        .ok();
}

#[test]
fn docker_archive_refuses_foreign_layers_it_cannot_carry() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let sparse = corpus
        .path("go-containerregistry/tarball/sparse_foreign.tar")
        .display()
        .to_string();
    t.imgsync(&[
        "copy",
        &format!("docker-archive:{sparse}"),
        "docker-archive:out.tar",
    ])
    .fails(EXIT_NOT_FOUND, &["foreign layer"]);
    assert!(!t.path("out.tar").exists());
    // A foreign layer whose bytes are present is stored as a plain tar in
    // the legacy shape, under its DiffID like the others.
    let foreign = corpus
        .path("go-containerregistry/tarball/foreign.tar")
        .display()
        .to_string();
    t.imgsync(&[
        "copy",
        "--docker-format",
        "legacy",
        &format!("docker-archive:{foreign}"),
        "docker-archive:legacy.tar",
    ])
    .ok();
    t.imgsync(&["verify", "docker-archive:legacy.tar"]).ok();
}

#[test]
fn verify_reports_a_missing_blob_once_as_not_found() {
    let t = TestDir::new();
    let m = image_layout(
        &t.path("l"),
        "x",
        &[layer_tar("f.txt", b"f\n"), layer_tar("g.txt", b"g\n")],
    );
    let manifest: Value =
        serde_json::from_slice(&layout_blob(&t.path("l"), m["digest"].as_str().unwrap())).unwrap();
    let gone = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(
        t.path("l/blobs/sha256")
            .join(gone.trim_start_matches("sha256:")),
    )
    .unwrap();
    let run = t.imgsync(&["verify", "oci:l"]);
    assert!(run.stderr.contains("1 problem(s)"), "{}", run.stderr);
    run.fails(EXIT_NOT_FOUND, &[&gone, "missing"]);
}

#[test]
fn docker_format_follows_renamed_manifests_and_leaves_artifacts_alone() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let src = corpus.path("regclient/testrepo");
    let report = t
        .imgsync(&[
            "copy",
            "--json",
            "--format",
            "docker",
            &format!("oci:{}:v1", src.display()),
            "oci:out:v1",
        ])
        .ok()
        .json();
    let renamed: std::collections::HashMap<String, String> = report["conversions"]
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
    let root = report["images"][0]["digest"].as_str().unwrap();
    let list: Value = serde_json::from_slice(&layout_blob(&t.path("out"), root)).unwrap();
    assert_eq!(
        list["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    for e in list["manifests"].as_array().unwrap() {
        if let Some(d) = e["annotations"]["vnd.docker.reference.digest"].as_str() {
            assert!(
                !renamed.contains_key(d),
                "attestation still names the old digest {d}"
            );
            // Attestations are artifacts: not relabelled as Docker images.
            assert_eq!(e["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        }
    }
    t.imgsync(&["verify", "oci:out"]).ok();
}
