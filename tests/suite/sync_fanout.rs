//! `targets: [a, b, ...]`: one entry mirrored to several targets at once
//! (two repositories of one registry and a second registry here). Each
//! source blob is read once whatever the number of targets; every target
//! ends with every tag at the source's digest; a target that lost a tag
//! gets it back alone; bad `targets` lists are refused.

use std::collections::HashMap;

use super::harness::*;
use super::registry_harness::{Kind, Registry};
use super::sync::{digest_of, write_config};
use super::sync_state::measured_sync;

/// Runs `sync --debug --json` and returns the report with the registry
/// requests it logged, as `(method, host, path)`.
fn sync_logged(t: &TestDir, cfg: &str) -> (serde_json::Value, Vec<(String, String, String)>) {
    let m = measured_sync(t, &["--config", cfg]);
    (m.report, m.requests)
}

#[test]
fn fan_out_reads_each_source_blob_once_and_fills_every_target() {
    let t = TestDir::new();
    let src = Registry::start(Kind::Plain);
    let one = Registry::start(Kind::Plain);
    let two = Registry::start(Kind::Plain);
    let tags = ["1", "2", "3"];
    // Three images of their own, each a shared layer and one of its own.
    let shared = layer_tar("base.txt", b"shared by every tag");
    for tag in tags {
        let own = layer_tar("own.txt", format!("tag {tag}").as_bytes());
        let archive = t.path(&format!("app-{tag}.tar"));
        legacy_archive(&archive, &format!("app:{tag}"), &[&shared, &own]);
        let dest = format!("{}/team/app:{tag}", src.host);
        t.imgsync(&[
            "copy",
            "-q",
            &format!("docker-archive:{}", archive.display()),
            &dest,
        ])
        .ok();
    }
    let cfg = write_config(
        &t,
        &format!(
            "version: 1\nsync:\n  - source: {s}/team/app\n    targets:\n      - {a}/mirror/app\n      - {a}/again/app\n      - {b}/app\n",
            s = src.host,
            a = one.host,
            b = two.host
        ),
    );
    let (report, requests) = sync_logged(&t, &cfg);
    assert_eq!(report["copied"], 9, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    // Each blob the source holds was read from it once.
    let mut reads: HashMap<&str, usize> = HashMap::new();
    for (m, host, path) in &requests {
        if m == "GET" && host == &src.host && path.contains("/blobs/sha256:") {
            *reads.entry(path.as_str()).or_default() += 1;
        }
    }
    assert!(!reads.is_empty(), "no blob was read from the source");
    assert!(
        reads.values().all(|&n| n == 1),
        "blobs read more than once: {reads:?}"
    );
    for tag in tags {
        let want = digest_of(&format!("{}/team/app:{tag}", src.host)).unwrap();
        for target in [
            format!("{}/mirror/app:{tag}", one.host),
            format!("{}/again/app:{tag}", one.host),
            format!("{}/app:{tag}", two.host),
        ] {
            assert_eq!(digest_of(&target).as_ref(), Some(&want), "{target}");
        }
    }

    // Nothing changed: nothing is written anywhere.
    let (again, requests) = sync_logged(&t, &cfg);
    assert_eq!(again["up_to_date"], 9, "{again}");
    assert!(
        !requests.iter().any(|(m, _, _)| m == "PUT" || m == "POST"),
        "{requests:?}"
    );

    // One target lost a tag: it alone gets it back.
    let gone = two
        .dir
        .path()
        .join("data/docker/registry/v2/repositories/app/_manifests/tags/2");
    std::fs::remove_dir_all(gone).unwrap();
    let (healed, _) = sync_logged(&t, &cfg);
    assert_eq!(healed["copied"], 1, "{healed}");
    assert_eq!(healed["up_to_date"], 8, "{healed}");
    assert_eq!(
        digest_of(&format!("{}/app:2", two.host)),
        digest_of(&format!("{}/team/app:2", src.host))
    );
}

#[test]
fn bad_target_lists_are_refused_with_the_line_at_fault() {
    let t = TestDir::new();
    let cases = [
        (
            "    target: b.example/x\n    targets: [b.example/y]\n",
            "give `target` or `targets`, not both",
        ),
        ("    targets: []\n", "`targets` is empty"),
        (
            "    targets: [b.example/x, b.example/x]\n",
            "target \"b.example/x\" is listed twice",
        ),
        ("    tags: {allow: ['.*']}\n", "the entry has no `target`"),
    ];
    for (body, want) in cases {
        let cfg = write_config(
            &t,
            &format!("version: 1\nsync:\n  - source: a.example/app\n{body}"),
        );
        let run = t.imgsync(&["sync", "--config", &cfg]);
        assert_eq!(run.code, 2, "{body}: {}", run.stderr);
        assert!(run.stderr.contains(want), "{body}: {}", run.stderr);
        assert!(run.stderr.contains("mirror.yaml:"), "{}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    }
}
