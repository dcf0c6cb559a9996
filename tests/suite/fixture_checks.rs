//! Checks shared by the tests of archives and layouts written by other
//! tools: the third-party corpus (`peer_fixtures`) and the fixtures this
//! suite builds in the same shapes (`own_archives`, `own_layouts`). Both
//! assert the same user-visible behaviour through these.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::harness::*;

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub fn da(path: &Path) -> String {
    format!("docker-archive:{}", path.display())
}

pub fn oci(path: &Path) -> String {
    format!("oci:{}", path.display())
}

pub fn inspect(t: &TestDir, loc: &str) -> Vec<Value> {
    let v = t.imgsync(&["inspect", "--json", loc]).ok().json();
    v.as_array()
        .unwrap_or_else(|| panic!("inspect --json {loc} is not a list: {v}"))
        .clone()
}

pub fn names(image: &Value) -> Vec<String> {
    image["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

/// (ref name, digest) of every entry of a layout's `index.json`.
pub fn index_entries(layout: &Path) -> Vec<(Option<String>, String)> {
    let index = read_json(&layout.join("index.json"));
    index["manifests"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m["annotations"][REF_NAME].as_str().map(str::to_string),
                        m["digest"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts a failed run with one error line holding every needle, and that
/// the temp dir is as it was (no destination, no temporary file).
pub fn rejected(t: &TestDir, args: &[&str], code: i32, needles: &[&str]) -> String {
    let before = t.entries();
    let run = t.imgsync(args);
    let errors = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("imgsync: error:"))
        .count();
    let stderr = run.stderr.clone();
    let line = run.fails(code, needles);
    assert_eq!(
        errors,
        1,
        "imgsync {}: expected one error line:\n{stderr}",
        args.join(" ")
    );
    assert_eq!(
        t.entries(),
        before,
        "imgsync {} left files behind",
        args.join(" ")
    );
    line
}

/// Copies `src` into a new OCI layout `dest` of the temp dir and verifies it.
pub fn copy_verify(t: &TestDir, src: &str, dest: &str) {
    t.imgsync(&["copy", src, &oci(&t.path(dest))]).ok();
    t.imgsync(&["verify", &oci(&t.path(dest))]).ok();
}

/// Reads a `docker save` archive and checks what imgsync reports against
/// the archive's own `manifest.json`: the images' names (in order), each
/// config digest (the hash of the config entry), the layer count, and for
/// uncompressed layers a digest equal to the config's DiffID. Then copies
/// it into an OCI layout, verifies that, and checks the layout names the
/// same manifests. Returns the `inspect --json` images.
pub fn read_docker_archive(t: &TestDir, path: &Path, expected_names: &[&[&str]]) -> Vec<Value> {
    let images = inspect(t, &da(path));
    let got: Vec<Vec<String>> = images.iter().map(names).collect();
    assert_eq!(got, expected_names, "names of {}", path.display());

    let manifest: Value =
        serde_json::from_slice(&tar_entry(path, "manifest.json").expect("manifest.json")).unwrap();
    for entry in manifest.as_array().unwrap() {
        let config_name = entry["Config"].as_str().unwrap();
        let config_bytes = tar_entry(path, config_name)
            .unwrap_or_else(|| panic!("{config_name} is in the archive"));
        let config_digest = format!("sha256:{}", sha256_hex(&config_bytes));
        let image = images
            .iter()
            .find(|i| i["config"] == config_digest.as_str())
            .unwrap_or_else(|| panic!("{}: no image has config {config_digest}", path.display()));
        let config: Value = serde_json::from_slice(&config_bytes).unwrap();
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        let layers = image["layers"].as_array().unwrap();
        assert_eq!(
            layers.len(),
            entry["Layers"].as_array().unwrap().len(),
            "{}: layers of {config_digest}",
            path.display()
        );
        assert_eq!(layers.len(), diff_ids.len());
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            if layer["media_type"].as_str().unwrap().ends_with(".tar") {
                assert_eq!(
                    &layer["digest"],
                    diff_id,
                    "{}: an uncompressed layer's digest is its DiffID",
                    path.display()
                );
            }
        }
    }

    copy_verify(t, &da(path), "out");
    let want: BTreeSet<String> = images
        .iter()
        .map(|i| i["digest"].as_str().unwrap().to_string())
        .collect();
    let have: BTreeSet<String> = index_entries(&t.path("out"))
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(have, want, "{}: manifests in the copy", path.display());
    images
}

/// Copies every entry of a layout's `index.json` one by one (by ref name,
/// or `@N` when it has none) into one OCI layout, verifies it, and checks
/// each copied entry kept its ref name and digest. Entries that fail to
/// copy are collected and reported together.
pub fn copy_layout_entries(t: &TestDir, src: &Path) {
    let entries = index_entries(src);
    assert!(!entries.is_empty(), "{} lists no images", src.display());
    let dest = t.path("out");
    let mut failed = Vec::new();
    let mut copied = Vec::new();
    for (i, (name, digest)) in entries.iter().enumerate() {
        let selector = name.clone().unwrap_or_else(|| format!("@{i}"));
        let run = t.imgsync(&["copy", &format!("{}:{selector}", oci(src)), &oci(&dest)]);
        if run.code == 0 {
            copied.push((name.clone(), digest.clone()));
        } else {
            failed.push(format!(
                "{selector} (exit {}): {}",
                run.code,
                run.stderr.trim()
            ));
        }
    }
    if !copied.is_empty() {
        t.imgsync(&["verify", &oci(&dest)]).ok();
        let have = index_entries(&dest);
        for e in &copied {
            assert!(
                have.contains(e),
                "{}: {e:?} is not in the copy's index.json: {have:?}",
                src.display()
            );
        }
    }
    assert!(
        failed.is_empty(),
        "{}: entries that could not be copied:\n{}",
        src.display(),
        failed.join("\n")
    );
}

/// Copying a whole layout in one run gives the same `index.json` entries.
pub fn whole_layout_keeps_its_entries(t: &TestDir, src: &std::path::Path) {
    copy_verify(t, &oci(src), "all");
    let want: BTreeSet<_> = index_entries(src).into_iter().collect();
    let have: BTreeSet<_> = index_entries(&t.path("all")).into_iter().collect();
    assert_eq!(have, want);
}

/// The subject digest of a manifest in a layout, if it has one.
pub fn manifest_subject(layout: &Path, digest: &str) -> Option<String> {
    let bytes = std::fs::read(layout.join("blobs/sha256").join(&digest["sha256:".len()..])).ok()?;
    let m: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    m["subject"]["digest"].as_str().map(str::to_string)
}

/// A layout holds `digest` under `name` and, beside it, only what is
/// attached to it: digest tags (`sha256-…`) and referrers (entries without
/// a name whose manifest has a subject).
pub fn assert_named_with_attachments(layout: &Path, name: &str, digest: &str) {
    let entries = index_entries(layout);
    assert!(entries.contains(&(Some(name.to_string()), digest.to_string())));
    for (n, d) in &entries {
        match n {
            Some(n) if n == name => {}
            Some(n) => assert!(
                n.starts_with("sha256-"),
                "{n} {d} is not attached to {name}"
            ),
            None => assert!(manifest_subject(layout, d).is_some(), "{d} has no subject"),
        }
    }
}
