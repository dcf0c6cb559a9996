//! Copies between docker archives, OCI layouts and OCI archives: exact
//! bytes, sharing, selection, standard input and output, conversions,
//! platform selection, concurrent writers, and interruption.

use serde_json::Value;

use super::harness::*;

const HELLO_1: &str = "imgsync-fixture/hello:1.0";

/// Every blob digest a layout holds.
fn blob_set(layout: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn oci_to_archive_and_back_keeps_every_digest() {
    let t = TestDir::new();
    let hello = fixture("hello.tar");
    t.imgsync(&[
        "copy",
        &format!("docker-archive:{}", hello.display()),
        "oci:a",
    ])
    .ok();
    t.imgsync(&["copy", "oci:a", "oci-archive:b.tar"]).ok();
    t.imgsync(&["copy", "oci-archive:b.tar", "oci:c"]).ok();
    assert_eq!(layout_refs(&t.path("a")), layout_refs(&t.path("c")));
    assert_eq!(blob_set(&t.path("a")), blob_set(&t.path("c")));
    for hex in blob_set(&t.path("a")) {
        let a = std::fs::read(t.path("a/blobs/sha256").join(&hex)).unwrap();
        assert_eq!(sha256_hex(&a), hex, "blob named by its digest");
        assert_eq!(
            a,
            std::fs::read(t.path("c/blobs/sha256").join(&hex)).unwrap()
        );
    }
    t.imgsync(&["verify", "oci:c"]).ok();
}

#[test]
fn multi_image_archive_shares_layers_once() {
    let t = TestDir::new();
    let hello = fixture("hello.tar");
    let run = t
        .imgsync(&[
            "copy",
            "--json",
            &format!("docker-archive:{}", hello.display()),
            "oci-archive:all.tar",
        ])
        .ok();
    let report = run.json();
    assert_eq!(report["images"].as_array().unwrap().len(), 2);
    // Two images sharing three layers: 4 layers + 2 configs + 2 manifests.
    let blobs: Vec<String> = tar_names(&t.path("all.tar"))
        .into_iter()
        .filter(|n| n.starts_with("blobs/sha256/") && !n.ends_with('/'))
        .collect();
    let mut unique = blobs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(blobs.len(), unique.len(), "no blob stored twice");
    assert_eq!(unique.len(), 8);
    let index: Value =
        serde_json::from_slice(&tar_entry(&t.path("all.tar"), "index.json").unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["annotations"]["io.containerd.image.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            "docker.io/imgsync-fixture/hello:1.0",
            "docker.io/imgsync-fixture/hello:2.0"
        ]
    );
}

#[test]
fn selects_images_by_normalised_name_and_index() {
    let t = TestDir::new();
    let hello = fixture("hello.tar").display().to_string();
    let a = t
        .imgsync(&[
            "inspect",
            "--json",
            &format!("docker-archive:{hello}:{HELLO_1}"),
        ])
        .ok()
        .json();
    let b = t
        .imgsync(&[
            "inspect",
            "--json",
            &format!("docker-archive:{hello}:docker.io/imgsync-fixture/hello:1.0"),
        ])
        .ok()
        .json();
    let c = t
        .imgsync(&["inspect", "--json", &format!("docker-archive:{hello}:@0")])
        .ok()
        .json();
    let d = t
        .imgsync(&["inspect", "--json", &format!("docker-archive:{hello}:@1")])
        .ok()
        .json();
    assert_eq!(a[0]["digest"], b[0]["digest"]);
    assert_eq!(a[0]["digest"], c[0]["digest"]);
    assert_ne!(a[0]["digest"], d[0]["digest"]);
    assert_eq!(d[0]["names"][0], "docker.io/imgsync-fixture/hello:2.0");
    // The same names resolve in a layout written from it.
    t.imgsync(&["copy", &format!("docker-archive:{hello}"), "oci:l"])
        .ok();
    for sel in [HELLO_1, "docker.io/imgsync-fixture/hello:1.0", "1.0"] {
        let e = t
            .imgsync(&["inspect", "--json", &format!("oci:l:{sel}")])
            .ok()
            .json();
        assert_eq!(e[0]["digest"], a[0]["digest"], "oci:l:{sel}");
    }
}

#[test]
fn reads_standard_input_and_compressed_archives() {
    let t = TestDir::new();
    let bytes = std::fs::read(fixture("hello.tar")).unwrap();
    t.imgsync_stdin(&["copy", "docker-archive:-", "oci:from-stdin"], &bytes)
        .ok();
    t.imgsync(&[
        "copy",
        &format!("docker-archive:{}", fixture("hello.tar").display()),
        "oci:direct",
    ])
    .ok();
    assert_eq!(
        layout_refs(&t.path("from-stdin")),
        layout_refs(&t.path("direct"))
    );

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &bytes).unwrap();
    std::fs::write(t.path("hello.tar.gz"), gz.finish().unwrap()).unwrap();
    t.imgsync(&["copy", "docker-archive:hello.tar.gz", "oci:from-gz"])
        .ok();
    assert_eq!(
        layout_refs(&t.path("from-gz")),
        layout_refs(&t.path("direct"))
    );
    let zst = zstd::encode_all(&bytes[..], 3).unwrap();
    t.imgsync_stdin(&["copy", "docker-archive:-", "oci:from-zst"], &zst)
        .ok();
    assert_eq!(
        layout_refs(&t.path("from-zst")),
        layout_refs(&t.path("direct"))
    );
    // Nothing spooled is left behind.
    assert!(
        t.entries().iter().all(|e| !e.starts_with(".imgsync")),
        "{:?}",
        t.entries()
    );
}

#[test]
fn writes_archive_to_standard_output() {
    let t = TestDir::new();
    t.imgsync(&[
        "copy",
        &format!(
            "docker-archive:{}:{HELLO_1}",
            fixture("hello.tar").display()
        ),
        "oci:l",
    ])
    .ok();
    let run = t.imgsync(&["copy", "-q", "oci:l", "docker-archive:-"]).ok();
    std::fs::write(t.path("out.tar"), &run.stdout).unwrap();
    let mj = read_json_bytes(&tar_entry(&t.path("out.tar"), "manifest.json").unwrap());
    assert_eq!(mj[0]["RepoTags"][0], HELLO_1);
    t.imgsync(&["verify", "docker-archive:out.tar"]).ok();
}

fn read_json_bytes(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

#[test]
fn existing_layout_gains_tags_and_reuses_blobs() {
    let t = TestDir::new();
    let hello = fixture("hello.tar").display().to_string();
    t.imgsync(&["copy", &format!("docker-archive:{hello}:@0"), "oci:l:one"])
        .ok();
    let second = t
        .imgsync(&[
            "copy",
            "--json",
            &format!("docker-archive:{hello}:@1"),
            "oci:l:two",
        ])
        .ok()
        .json();
    // Image 2 shares its config-independent base layers with image 1.
    assert_eq!(second["blobs_skipped"], 3, "{second}");
    let refs: Vec<String> = layout_refs(&t.path("l"))
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(refs, ["one", "two"]);
    // Replacing a tag keeps one entry for it.
    t.imgsync(&["copy", &format!("docker-archive:{hello}:@1"), "oci:l:one"])
        .ok();
    let refs = layout_refs(&t.path("l"));
    assert_eq!(refs.len(), 2);
    assert_eq!(refs[0].1, refs[1].1);
}

#[test]
fn concurrent_copies_into_one_layout_lose_no_entry() {
    let t = TestDir::new();
    let hello = fixture("hello.tar").display().to_string();
    let children: Vec<_> = (0..6)
        .map(|i| {
            std::process::Command::new(env!("CARGO_BIN_EXE_imgsync"))
                .args([
                    "copy",
                    "-q",
                    &format!("docker-archive:{hello}:@{}", i % 2),
                    &format!("oci:l:tag{i}"),
                ])
                .current_dir(t.dir.path())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let mut refs: Vec<String> = layout_refs(&t.path("l"))
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    refs.sort();
    assert_eq!(refs, ["tag0", "tag1", "tag2", "tag3", "tag4", "tag5"]);
    t.imgsync(&["verify", "oci:l"]).ok();
}

fn manifest_of(layout: &std::path::Path, reference: &str) -> Value {
    let digest = layout_refs(layout)
        .into_iter()
        .find(|(r, _)| r == reference)
        .unwrap()
        .1;
    serde_json::from_slice(&layout_blob(layout, &digest)).unwrap()
}

#[test]
fn recompression_keeps_diff_ids_and_reports_new_digests() {
    let t = TestDir::new();
    let src = format!(
        "docker-archive:{}:{HELLO_1}",
        fixture("hello.tar").display()
    );
    t.imgsync(&["copy", &src, "oci:plain:x"]).ok();
    let report = t
        .imgsync(&[
            "copy",
            "--json",
            "--dest-compress",
            "gzip",
            &src,
            "oci:gz:x",
        ])
        .ok()
        .json();
    let plain = manifest_of(&t.path("plain"), "x");
    let gz = manifest_of(&t.path("gz"), "x");
    assert_eq!(plain["config"], gz["config"], "config (image ID) unchanged");
    for l in gz["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let bytes = layout_blob(&t.path("gz"), l["digest"].as_str().unwrap());
        assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
    }
    let conv = &report["conversions"][0];
    assert_eq!(conv["old"], report["images"][0]["source_digest"]);
    assert_eq!(conv["new"], report["images"][0]["digest"]);
    assert_ne!(conv["old"], conv["new"]);
    t.imgsync(&["verify", "oci:gz"]).ok();
    // zstd, then back to uncompressed: the original layer digests return.
    t.imgsync(&["copy", "--dest-compress", "zstd", "oci:gz:x", "oci:zst:x"])
        .ok();
    let zst = manifest_of(&t.path("zst"), "x");
    assert_eq!(
        zst["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    t.imgsync(&["verify", "oci:zst"]).ok();
    t.imgsync(&["copy", "--dest-compress", "none", "oci:zst:x", "oci:back:x"])
        .ok();
    assert_eq!(manifest_of(&t.path("back"), "x"), plain);
}

#[test]
fn format_conversion_changes_media_types_not_config() {
    let t = TestDir::new();
    let src = format!(
        "docker-archive:{}:{HELLO_1}",
        fixture("hello.tar").display()
    );
    t.imgsync(&["copy", &src, "oci:oci:x"]).ok();
    t.imgsync(&["copy", "--format", "docker", &src, "oci:docker:x"])
        .ok();
    let o = manifest_of(&t.path("oci"), "x");
    let d = manifest_of(&t.path("docker"), "x");
    assert_eq!(
        d["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        d["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(d["config"]["digest"], o["config"]["digest"]);
    assert_eq!(
        d["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar"
    );
    assert_eq!(d["layers"][0]["digest"], o["layers"][0]["digest"]);
    t.imgsync(&["verify", "oci:docker"]).ok();
}

#[test]
fn platform_selection_from_an_index() {
    let t = TestDir::new();
    let index_digest = multiarch_layout(&t.path("multi"), "app");
    // Whole index by default: digest preserved.
    t.imgsync(&["copy", "oci:multi:app", "oci:all:app"]).ok();
    assert_eq!(layout_refs(&t.path("all"))[0].1, index_digest);
    // One platform: that manifest.
    t.imgsync(&[
        "copy",
        "--platform",
        "linux/arm64",
        "oci:multi:app",
        "oci:one:app",
    ])
    .ok();
    let one = manifest_of(&t.path("one"), "app");
    let cfg: Value = serde_json::from_slice(&layout_blob(
        &t.path("one"),
        one["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(cfg["architecture"], "arm64");
    // Two platforms: a filtered index with a new digest, attestation dropped.
    let report = t
        .imgsync(&[
            "copy",
            "--json",
            "--platform",
            "linux/arm64",
            "--platform",
            "linux/amd64",
            "oci:multi:app",
            "oci:two:app",
        ])
        .ok()
        .json();
    let two = manifest_of(&t.path("two"), "app");
    assert_eq!(two["manifests"].as_array().unwrap().len(), 2);
    assert_ne!(
        report["images"][0]["digest"].as_str().unwrap(),
        index_digest
    );
    assert_eq!(report["conversions"][0]["old"], index_digest);
    // A platform the image lacks names what it has.
    t.imgsync(&[
        "copy",
        "--platform",
        "linux/s390x",
        "oci:multi:app",
        "oci:none:app",
    ])
    .fails(
        EXIT_NOT_FOUND,
        &["linux/s390x", "linux/amd64", "linux/arm64"],
    );
    assert!(!t.path("none").exists());
}

#[test]
fn docker_archive_from_index_lists_one_platform() {
    let t = TestDir::new();
    multiarch_layout(&t.path("multi"), "app");
    t.imgsync(&[
        "copy",
        "--platform",
        "linux/arm64",
        "oci:multi:app",
        "docker-archive:arm.tar:app:1",
    ])
    .ok();
    let mj = read_json_bytes(&tar_entry(&t.path("arm.tar"), "manifest.json").unwrap());
    let cfg =
        read_json_bytes(&tar_entry(&t.path("arm.tar"), mj[0]["Config"].as_str().unwrap()).unwrap());
    assert_eq!(cfg["architecture"], "arm64");
    assert_eq!(mj[0]["RepoTags"][0], "app:1");
    // Without --platform the whole index is kept in the OCI part and
    // manifest.json lists the host's platform.
    t.imgsync(&["copy", "oci:multi:app", "docker-archive:host.tar:app:1"])
        .ok();
    let index = read_json_bytes(&tar_entry(&t.path("host.tar"), "index.json").unwrap());
    let root = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let root_doc =
        read_json_bytes(&tar_entry(&t.path("host.tar"), &format!("blobs/sha256/{root}")).unwrap());
    assert_eq!(root_doc["manifests"].as_array().unwrap().len(), 3);
    let mj = read_json_bytes(&tar_entry(&t.path("host.tar"), "manifest.json").unwrap());
    let cfg = read_json_bytes(
        &tar_entry(&t.path("host.tar"), mj[0]["Config"].as_str().unwrap()).unwrap(),
    );
    let host = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    assert_eq!(cfg["architecture"], host);
}

#[test]
fn legacy_docker_format_has_uncompressed_layer_dirs() {
    let t = TestDir::new();
    let src = format!(
        "docker-archive:{}:{HELLO_1}",
        fixture("hello.tar").display()
    );
    t.imgsync(&["copy", "--dest-compress", "gzip", &src, "oci:gz"])
        .ok();
    t.imgsync(&[
        "copy",
        "--docker-format",
        "legacy",
        "oci:gz",
        "docker-archive:legacy.tar",
    ])
    .ok();
    let names = tar_names(&t.path("legacy.tar"));
    assert!(!names.iter().any(|n| n.starts_with("blobs/")), "{names:?}");
    let mj = read_json_bytes(&tar_entry(&t.path("legacy.tar"), "manifest.json").unwrap());
    let config = tar_entry(&t.path("legacy.tar"), mj[0]["Config"].as_str().unwrap()).unwrap();
    let diff_ids = read_json_bytes(&config)["rootfs"]["diff_ids"].clone();
    for (i, l) in mj[0]["Layers"].as_array().unwrap().iter().enumerate() {
        let l = l.as_str().unwrap();
        assert!(l.ends_with("/layer.tar"), "{l}");
        let bytes = tar_entry(&t.path("legacy.tar"), l).unwrap();
        assert_eq!(
            format!("sha256:{}", sha256_hex(&bytes)),
            diff_ids[i].as_str().unwrap()
        );
    }
    assert_eq!(mj[0]["RepoTags"][0], HELLO_1);
    t.imgsync(&["verify", "docker-archive:legacy.tar"]).ok();
}

#[test]
fn inspect_raw_prints_exact_manifest_bytes() {
    let t = TestDir::new();
    let index_digest = multiarch_layout(&t.path("multi"), "app");
    let raw = t.imgsync(&["inspect", "--raw", "oci:multi:app"]).ok();
    assert_eq!(format!("sha256:{}", sha256_hex(&raw.stdout)), index_digest);
    let info = t
        .imgsync(&["inspect", "--json", "oci:multi:app"])
        .ok()
        .json();
    let platforms: Vec<&str> = info[0]["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64", "unknown/unknown"]);
    let text = t
        .imgsync(&[
            "inspect",
            &format!("docker-archive:{}", fixture("hello.tar").display()),
        ])
        .ok()
        .stdout_str();
    assert!(
        text.contains("docker.io/imgsync-fixture/hello:2.0"),
        "{text}"
    );
    assert!(text.contains("Layers:     4"), "{text}");
}

#[test]
fn verify_names_a_corrupted_layer() {
    let t = TestDir::new();
    t.imgsync(&[
        "copy",
        &format!(
            "docker-archive:{}:{HELLO_1}",
            fixture("hello.tar").display()
        ),
        "oci:l:x",
    ])
    .ok();
    let m = manifest_of(&t.path("l"), "x");
    let digest = m["layers"][1]["digest"].as_str().unwrap().to_string();
    let path = t
        .path("l/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[600] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    t.imgsync(&["verify", "oci:l"])
        .fails(EXIT_INTEGRITY, &[&digest]);
    // A copy from it fails the same way and writes nothing.
    t.imgsync(&["copy", "oci:l:x", "docker-archive:out.tar"])
        .fails(EXIT_INTEGRITY, &[&digest]);
    assert!(!t.path("out.tar").exists());
}

#[test]
fn interrupted_copy_leaves_no_destination_file() {
    interrupted_copy("INT", 130);
}

/// SIGTERM (a pod or service stopping) is an interruption too, with the
/// shell's code for it.
#[test]
fn terminated_copy_leaves_no_destination_file_and_exits_143() {
    interrupted_copy("TERM", 143);
}

/// Sends `signal` to a copy blocked mid-layer; checks the exit code and
/// that nothing of the destination remains.
fn interrupted_copy(signal: &str, code: i32) {
    let t = TestDir::new();
    // A layout whose one layer is a FIFO: the copy blocks on it mid-stream.
    let layer = layer_tar("big.txt", &vec![b'x'; 64 * 1024]);
    let config = config_for(&[&layer]);
    let l = t.path("src");
    std::fs::create_dir_all(&l).unwrap();
    std::fs::write(l.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let cfg = put_blob(&l, "application/vnd.oci.image.config.v1+json", &config);
    let layer_desc = serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{}", sha256_hex(&layer)), "size": layer.len()});
    let fifo = l.join("blobs/sha256").join(sha256_hex(&layer));
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cfg, "layers": [layer_desc]});
    let mut m = put_blob(
        &l,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    m["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "x"});
    std::fs::write(
        l.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [m]})).unwrap(),
    )
    .unwrap();

    let child = std::process::Command::new(env!("CARGO_BIN_EXE_imgsync"))
        .args(["copy", "-q", "oci:src:x", "docker-archive:out.tar:x:1"])
        .current_dir(t.dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Opening the FIFO for writing waits until imgsync opens it for reading.
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    std::io::Write::write_all(&mut w, &layer[..4096]).unwrap();
    std::io::Write::flush(&mut w).unwrap();
    let partial: Vec<String> = t
        .entries()
        .into_iter()
        .filter(|e| e.starts_with(".out.tar.imgsync-"))
        .collect();
    assert_eq!(
        partial.len(),
        1,
        "the archive is being written to a temporary file: {:?}",
        t.entries()
    );
    assert!(
        std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    drop(w);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!t.path("out.tar").exists());
    assert!(
        t.entries().iter().all(|e| !e.starts_with(".out.tar")),
        "{:?}",
        t.entries()
    );
}

#[test]
fn docker_archives_imgsync_writes_read_back_with_the_same_digests() {
    let t = TestDir::new();
    let src = format!("docker-archive:{}", fixture("hello.tar").display());
    // Docker media types and gzip layers: a manifest that cannot be rebuilt
    // from manifest.json alone, so reading back must use the OCI part.
    t.imgsync(&[
        "copy",
        "--format",
        "docker",
        "--dest-compress",
        "gzip",
        &src,
        "oci:l",
    ])
    .ok();
    t.imgsync(&["copy", "oci:l", "docker-archive:d.tar"]).ok();
    t.imgsync(&["copy", "docker-archive:d.tar", "oci:back"])
        .ok();
    let mut a = layout_refs(&t.path("l"));
    let mut b = layout_refs(&t.path("back"));
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // A selector by tag and by index on the same archive.
    let by_tag = t
        .imgsync(&[
            "inspect",
            "--json",
            "docker-archive:d.tar:imgsync-fixture/hello:2.0",
        ])
        .ok()
        .json();
    let by_index = t
        .imgsync(&["inspect", "--json", "docker-archive:d.tar:@1"])
        .ok()
        .json();
    assert_eq!(by_tag[0]["digest"], by_index[0]["digest"]);
    assert_eq!(
        by_tag[0]["media_type"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
}

#[test]
fn containerd_store_archive_missing_other_platforms_copies_the_listed_one() {
    let t = TestDir::new();
    let dir = t.path("c");
    multiarch_layout(&dir, "1");
    // As containerd exports it: the index names the image, the arm64
    // manifest's blobs are absent, manifest.json lists the amd64 manifest.
    let index = read_json(&dir.join("index.json"));
    let root = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let root_doc: Value = serde_json::from_slice(&layout_blob(&dir, &root)).unwrap();
    let amd64 = root_doc["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let arm64 = root_doc["manifests"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(
        dir.join("blobs/sha256")
            .join(arm64.trim_start_matches("sha256:")),
    )
    .unwrap();
    let m: Value = serde_json::from_slice(&layout_blob(&dir, &amd64)).unwrap();
    let path = |d: &Value| {
        format!(
            "blobs/sha256/{}",
            d["digest"].as_str().unwrap().trim_start_matches("sha256:")
        )
    };
    let mj = serde_json::json!([{"Config": path(&m["config"]), "RepoTags": ["app:1"], "Layers": [path(&m["layers"][0])]}]);
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&mj).unwrap()).unwrap();
    let mut idx = index.clone();
    idx["manifests"][0]["annotations"] = serde_json::json!({"io.containerd.image.name": "docker.io/library/app:1", "org.opencontainers.image.ref.name": "1"});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    let mut b = tar::Builder::new(std::fs::File::create(t.path("c.tar")).unwrap());
    b.append_dir_all(".", &dir).unwrap();
    b.finish().unwrap();

    let report = t
        .imgsync(&["copy", "--json", "docker-archive:c.tar", "oci:out"])
        .ok()
        .json();
    assert_eq!(report["images"][0]["digest"], amd64.as_str());
    assert_eq!(report["images"][0]["names"][0], "docker.io/library/app:1");
    t.imgsync(&["verify", "oci:out"]).ok();
}

/// A layer recompressed to zstd gets the same digest every time, whatever
/// the source's compression (and so the sizes in which its bytes arrive):
/// mirroring it again never uploads a new blob or moves a tag.
#[test]
fn zstd_recompression_is_reproducible() {
    let t = TestDir::new();
    // A few MiB of text that compresses, with a tail that is not a whole
    // number of MiB.
    let mut content = Vec::new();
    let mut x: u64 = 7;
    while content.len() < (5 << 20) + 777 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        content.extend_from_slice(format!("line {} of {}\n", x >> 50, x % 1000).as_bytes());
    }
    let layer = layer_tar("data.txt", &content);
    legacy_archive(&t.path("big.tar"), "big:1", &[&layer]);
    let src = format!("docker-archive:{}", t.p("big.tar"));
    for dest in ["oci:a:x", "oci:b:x"] {
        t.imgsync(&["copy", "--dest-compress", "zstd", &src, dest])
            .ok();
    }
    t.imgsync(&["copy", "--dest-compress", "gzip", &src, "oci:gz:x"])
        .ok();
    t.imgsync(&["copy", "--dest-compress", "zstd", "oci:gz:x", "oci:c:x"])
        .ok();
    let a = manifest_of(&t.path("a"), "x");
    assert_eq!(a, manifest_of(&t.path("b"), "x"));
    assert_eq!(a, manifest_of(&t.path("c"), "x"), "from gzip, same bytes");
    let digest = a["layers"][0]["digest"].as_str().unwrap();
    let zst = layout_blob(&t.path("a"), digest);
    assert!(zstd::decode_all(&zst[..]).unwrap() == layer);
    t.imgsync(&["verify", "oci:a"]).ok();
}

/// A layer larger than the single-threaded first frame (64 MiB) goes on in
/// multi-threaded frames; its digest is still the same on every run.
#[test]
fn large_zstd_layer_is_reproducible() {
    let t = TestDir::new();
    let words: [&[u8]; 8] = [
        b"alpha ",
        b"beta ",
        b"gamma ",
        b"delta\n",
        b"0123 ",
        b"lib/x ",
        b"usr ",
        b"\x00\x01",
    ];
    let mut content = Vec::with_capacity(66 << 20);
    let mut x: u32 = 1;
    while content.len() < (65 << 20) + 4321 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        content.extend_from_slice(words[(x & 7) as usize]);
        content.push((x >> 24) as u8);
    }
    let layer = layer_tar("big.bin", &content);
    drop(content);
    legacy_archive(&t.path("big.tar"), "big:1", &[&layer]);
    let src = format!("docker-archive:{}", t.p("big.tar"));
    for dest in ["oci:a:x", "oci:b:x"] {
        t.imgsync(&["copy", "--dest-compress", "zstd", &src, dest])
            .ok();
    }
    let a = manifest_of(&t.path("a"), "x");
    assert_eq!(a, manifest_of(&t.path("b"), "x"));
    let zst = layout_blob(&t.path("a"), a["layers"][0]["digest"].as_str().unwrap());
    assert!(zstd::decode_all(&zst[..]).unwrap() == layer);
}
