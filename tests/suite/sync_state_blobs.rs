//! The state remembers which blobs each target repository holds: a tag
//! that moves to an image sharing layers with the one mirrored asks the
//! target about its new blobs only; and a blob gone behind the state's
//! back costs one retry of the image, not a failure.

use super::harness::*;
use super::registry_harness::{Kind, Registry};
use super::sync::{digest_of, write_config};
use super::sync_state::measured_sync;

/// Pushes an image of the shared base layer and a layer of its own to
/// `reference`.
fn push(t: &TestDir, base: &[u8], own: &str, reference: &str) {
    let archive = t.path(&format!("{own}.tar"));
    let own_layer = layer_tar("own.txt", own.as_bytes());
    legacy_archive(&archive, "app:1", &[base, &own_layer]);
    let from = format!("docker-archive:{}", archive.display());
    t.imgsync(&["copy", "-q", &from, reference]).ok();
}

/// The registry's own record that `repo` holds a blob (what a `HEAD`
/// and a manifest's check look at); the blob's bytes stay.
fn unlink_blob(reg: &Registry, repo: &str, digest: &str) {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let link = reg
        .dir
        .path()
        .join("data/docker/registry/v2/repositories")
        .join(repo)
        .join("_layers/sha256")
        .join(hex);
    std::fs::remove_dir_all(&link).unwrap();
}

/// The layer digests of a registry image, base first.
fn layers(t: &TestDir, reference: &str) -> Vec<String> {
    let raw = t
        .imgsync(&["inspect", "--raw", reference])
        .ok()
        .stdout_str();
    let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_moved_tag_asks_about_its_new_blobs_only_and_a_lost_blob_costs_a_retry() {
    let t = TestDir::new();
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let noise: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let base = layer_tar("base.bin", &noise);
    let app = format!("{}/team/app:1", src.host);
    push(&t, &base, "first", &app);
    let cfg = write_config(
        &t,
        &format!(
            "version: 1\nsync:\n  - source: {}/team/app\n    target: {}/mirror/app\n",
            src.host, dst.host
        ),
    );
    let state = t.p("state.json");
    let first = measured_sync(&t, &["--config", &cfg, "--state", &state]);
    assert_eq!(first.report["copied"], 1, "{}", first.report);
    let base_digest = layers(&t, &app)[0].clone();
    let remembered = read_json(&t.path("state.json"));
    let repo = format!("{}/mirror/app", dst.host);
    let blobs = remembered["blobs"][&repo].as_array().unwrap();
    assert!(blobs.iter().any(|b| b == &base_digest), "{remembered}");

    // The tag moves to an image on the same base: the base is not asked
    // about at the target.
    push(&t, &base, "second", &app);
    let moved = measured_sync(&t, &["--config", &cfg, "--state", &state]);
    assert_eq!(moved.report["copied"], 1, "{}", moved.report);
    let asked: Vec<_> = moved
        .to(&dst.host)
        .into_iter()
        .filter(|(m, _, p)| m == "HEAD" && p.contains("/blobs/"))
        .collect();
    assert!(
        !asked.iter().any(|(_, _, p)| p.ends_with(&base_digest)),
        "{asked:?}"
    );
    assert_eq!(digest_of(&format!("{repo}:1")), digest_of(&app));

    // The target loses the base behind the state's back; the tag moves
    // again: the copy trusting the state fails, its retry asks again.
    unlink_blob(&dst, "mirror/app", &base_digest);
    push(&t, &base, "third", &app);
    let healed = measured_sync(&t, &["--config", &cfg, "--state", &state]);
    assert_eq!(healed.report["copied"], 1, "{}", healed.report);
    assert_eq!(
        healed.report["images"][0]["retries"], 1,
        "{}",
        healed.report
    );
    assert_eq!(digest_of(&format!("{repo}:1")), digest_of(&app));
    let pulled = t.imgsync(&[
        "copy",
        "-q",
        &format!("{repo}:1"),
        &format!("oci:{}", t.p("check")),
    ]);
    pulled.ok();
}
