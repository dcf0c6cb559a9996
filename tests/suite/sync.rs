//! `imgsync sync` against two real registries: filters of every kind, a
//! digest pin, a catalog prefix, a layout target, repeated runs, a moved
//! tag, the lock, shards, and bad configs.

use serde_json::Value;

use super::harness::*;
use super::registry_harness::{Kind, Registry};

/// Pushes small images sharing base layers: `repo:tag` for each given,
/// each a variant of the hello fixture with one extra layer.
pub(super) fn seed(reg: &Registry, t: &TestDir, images: &[(&str, &str)]) {
    let hello = fixture("hello.tar").display().to_string();
    for (i, (repo, tag)) in images.iter().enumerate() {
        // Two distinct images alternate so tags have different digests.
        let src = format!("docker-archive:{hello}:@{}", i % 2);
        t.imgsync(&["copy", "-q", &src, &format!("{}/{repo}:{tag}", reg.host)])
            .ok();
    }
}

pub(super) fn digest_of(reference: &str) -> Option<String> {
    let (ok, out) = tool_status(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    ok.then(|| format!("sha256:{}", sha256_hex(out.as_bytes())))
}

pub(super) fn tags_of(t: &TestDir, repo: &str) -> Vec<String> {
    let run = t.imgsync(&["tags", repo]);
    if run.code != 0 {
        return vec![];
    }
    run.stdout_str().lines().map(str::to_string).collect()
}

pub(super) fn write_config(t: &TestDir, text: &str) -> String {
    std::fs::write(t.path("mirror.yaml"), text).unwrap();
    t.p("mirror.yaml")
}

#[test]
fn mirrors_exactly_what_the_config_selects_then_costs_almost_nothing() {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    seed(
        &src,
        &t,
        &[
            ("library/alpine", "3.17"),
            ("library/alpine", "3.18"),
            ("library/alpine", "3.19"),
            ("library/alpine", "3.19-rc1"),
            ("library/alpine", "3.20"),
            ("library/alpine", "edge"),
            ("team/svc-a", "1"),
            ("team/svc-b", "1"),
            ("team/svc-b-test", "1"),
            ("team/other", "1"),
            ("library/busybox", "1.36"),
        ],
    );
    let pinned = digest_of(&format!("{}/team/svc-a:1", src.host)).unwrap();
    let cfg = write_config(
        &t,
        &format!(
            r#"version: 1
sync:
  - source: {s}/library/alpine
    target: {d}/mirror/alpine
    tags:
      allow: ['^3\.']
      deny: ['-rc']
      semver: '>=3.18'
      latest: 2
  - source: {s}/team/svc-a@{pinned}
    target: {d}/pinned/svc-a
  - source: {s}/team/
    target: {d}/mirror/team/
    repos: {{allow: ['^svc-'], deny: ['-test$']}}
  - source: {s}/library/busybox
    target: oci:layout
"#,
            s = src.host,
            d = dst.host
        ),
    );
    let first = t.imgsync(&["sync", "--config", &cfg, "--json"]).ok().json();
    assert_eq!(first["failed"], 0, "{first}");
    assert_eq!(
        tags_of(&t, &format!("{}/mirror/alpine", dst.host)),
        ["3.19", "3.20"]
    );
    for tag in ["3.19", "3.20"] {
        assert_eq!(
            digest_of(&format!("{}/mirror/alpine:{tag}", dst.host)),
            digest_of(&format!("{}/library/alpine:{tag}", src.host))
        );
    }
    assert!(
        tags_of(&t, &format!("{}/pinned/svc-a", dst.host)).is_empty(),
        "a pin pushes by digest only"
    );
    assert!(digest_of(&format!("{}/pinned/svc-a@{pinned}", dst.host)).is_some());
    assert_eq!(
        tags_of(&t, &format!("{}/mirror/team/svc-a", dst.host)),
        ["1"]
    );
    assert_eq!(
        tags_of(&t, &format!("{}/mirror/team/svc-b", dst.host)),
        ["1"]
    );
    assert!(tags_of(&t, &format!("{}/mirror/team/svc-b-test", dst.host)).is_empty());
    assert!(tags_of(&t, &format!("{}/mirror/team/other", dst.host)).is_empty());
    let busybox = format!("{}/library/busybox:1.36", src.host);
    let refs = layout_refs(&t.path("layout"));
    assert_eq!(
        refs,
        [(
            format!("docker.io/{busybox}").replace("docker.io/", ""),
            digest_of(&busybox).unwrap()
        )]
    );
    assert_eq!(first["copied"], 6);

    // Nothing changed: nothing copied, two requests per image at most
    // (source HEAD, target HEAD) plus listing and endpoint checks.
    let second = t.imgsync(&["sync", "--config", &cfg, "--json"]).ok().json();
    assert_eq!(second["copied"], 0, "{second}");
    assert_eq!(second["up_to_date"], 6);
    assert_eq!(second["bytes"], 0);
    // 6 images x 2 HEADs - the layout target needs none; tag lists (3
    // repositories), catalog, and the endpoint checks of two registries.
    let budget = 6 * 2 + 3 + 1 + 2 * 2;
    assert!(second["requests"].as_u64().unwrap() <= budget, "{second}");

    // A tag moved upstream: only that image is copied again.
    let hello = fixture("hello.tar").display().to_string();
    // (3.20 was seeded from image @0; @1 is the other one.)
    t.imgsync(&[
        "copy",
        "-q",
        &format!("docker-archive:{hello}:@1"),
        &format!("{}/library/alpine:3.20", src.host),
    ])
    .ok();
    let third = t.imgsync(&["sync", "--config", &cfg, "--json"]).ok().json();
    assert_eq!(third["copied"], 1, "{third}");
    let moved: Vec<&Value> = third["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["action"] == "copied")
        .collect();
    assert!(
        moved[0]["source"]
            .as_str()
            .unwrap()
            .ends_with("library/alpine:3.20")
    );
    assert_eq!(
        digest_of(&format!("{}/mirror/alpine:3.20", dst.host)),
        digest_of(&format!("{}/library/alpine:3.20", src.host))
    );
    t.imgsync(&["verify", "oci:layout"]).ok();
}

#[test]
fn dry_run_report_and_metrics() {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    seed(&src, &t, &[("app", "1"), ("app", "2")]);
    let cfg = write_config(
        &t,
        &format!(
            "version: 1\nsync:\n  - source: {}/app\n    target: {}/app\n",
            src.host, dst.host
        ),
    );
    let plan = t
        .imgsync(&["sync", "--config", &cfg, "--dry-run"])
        .ok()
        .stdout_str();
    assert_eq!(plan.lines().count(), 2, "{plan}");
    assert!(plan.lines().all(|l| l.ends_with(" copy")), "{plan}");
    assert!(
        tags_of(&t, &format!("{}/app", dst.host)).is_empty(),
        "a dry run copies nothing"
    );
    t.imgsync(&[
        "sync",
        "--config",
        &cfg,
        "--report",
        &t.p("report.json"),
        "--metrics",
        &t.p("sync.prom"),
    ])
    .ok();
    let report = read_json(&t.path("report.json"));
    assert_eq!(report["copied"], 2);
    let img = &report["images"][0];
    for key in [
        "source",
        "source_digest",
        "target",
        "action",
        "bytes",
        "blobs_copied",
        "retries",
        "seconds",
    ] {
        assert!(!img[key].is_null(), "report lacks {key}: {img}");
    }
    let metrics = std::fs::read_to_string(t.path("sync.prom")).unwrap();
    assert!(
        metrics.contains("imgsync_sync_last_success_timestamp_seconds{"),
        "{metrics}"
    );
    assert!(metrics.contains("outcome=\"copied\"} 2"), "{metrics}");
    let plan = t
        .imgsync(&["sync", "--config", &cfg, "--dry-run"])
        .ok()
        .stdout_str();
    assert!(plan.lines().all(|l| l.ends_with(" up-to-date")), "{plan}");
}

#[test]
fn overlapping_runs_and_shards() {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let repos: Vec<String> = (0..6).map(|i| format!("team/svc-{i}")).collect();
    let images: Vec<(&str, &str)> = repos.iter().map(|r| (r.as_str(), "1")).collect();
    seed(&src, &t, &images);
    let cfg = write_config(
        &t,
        &format!(
            "version: 1\nsync:\n  - source: {}/team/\n    target: {}/m/\n",
            src.host, dst.host
        ),
    );
    // Another run holds the lock: exit 75, nothing done.
    let lock = t.path("sync.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .unwrap();
    f.lock().unwrap();
    let run = t.imgsync(&["sync", "--config", &cfg, "--lock", &t.p("sync.lock")]);
    assert_eq!(run.code, 75, "{}", run.stderr);
    assert!(run.stderr.contains("lock"), "{}", run.stderr);
    drop(f);
    assert!(tags_of(&t, &format!("{}/m/svc-0", dst.host)).is_empty());
    // Three shards at once: together they are the whole plan, and no
    // image is copied by two of them.
    let children: Vec<_> = (0..3)
        .map(|i| {
            std::process::Command::new(env!("CARGO_BIN_EXE_imgsync"))
                .args([
                    "sync",
                    "--config",
                    &cfg,
                    "--json",
                    "--shard",
                    &format!("{i}/3"),
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut copied = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        for img in v["images"].as_array().unwrap() {
            copied.push(img["source"].as_str().unwrap().to_string());
        }
    }
    copied.sort();
    let mut expected: Vec<String> = repos
        .iter()
        .map(|r| format!("{}/{r}:1", src.host))
        .collect();
    expected.sort();
    assert_eq!(copied, expected);
    for r in &repos {
        let name = r.trim_start_matches("team/");
        assert_eq!(
            digest_of(&format!("{}/m/{name}:1", dst.host)),
            digest_of(&format!("{}/{r}:1", src.host))
        );
    }
}

#[test]
fn bad_configs_name_the_file_line_and_problem() {
    let t = TestDir::new();
    let cases = [
        (
            "version: 1\nsync:\n  - source: localhost:5000/a\n    target: localhost:5001/a\n    colour: blue\n",
            "colour",
        ),
        (
            "version: 1\nsync:\n  - source: localhost:5000/a\n    target: localhost:5001/a\n    tags:\n      allow: ['(unclosed']\n",
            ":6:",
        ),
        (
            "version: 1\nsync:\n  - source: localhost:5000/a\n    target: localhost:5001/a\n    tags:\n      semver: '>>1'\n",
            ":6:",
        ),
        (
            "version: 1\nsync:\n  - target: localhost:5001/a\n",
            "source",
        ),
        (
            "version: 1\nregistries:\n  - host: localhost:5000\n    username: u\n    password: ${file:missing-secret}\nsync:\n  - source: localhost:5000/a\n    target: localhost:5001/a\n",
            "missing-secret",
        ),
        (
            "version: 2\nsync:\n  - source: localhost:5000/a\n    target: localhost:5001/a\n",
            "version",
        ),
    ];
    for (text, needle) in cases {
        let cfg = write_config(&t, text);
        let line = t
            .imgsync(&["sync", "--config", &cfg])
            .fails(2, &["mirror.yaml"]);
        assert!(line.contains(needle), "{text}\n{line}");
    }
    t.imgsync(&["sync", "--config", &t.p("nope.yaml")])
        .fails(2, &["nope.yaml"]);
}

#[test]
fn every_runs_until_terminated() {
    run_forever_until_terminated(&["--every", "1h"]);
}

#[test]
fn schedule_runs_until_terminated_and_bad_schedules_are_refused() {
    run_forever_until_terminated(&["--schedule", "0 0 1 1 *"]);
    let t = TestDir::new();
    let cfg = write_config(
        &t,
        "version: 1\nsync:\n  - source: localhost:1/a\n    target: localhost:2/a\n",
    );
    t.imgsync(&["sync", "--config", &cfg, "--schedule", "every tuesday"])
        .fails(2, &["--schedule"]);
}

fn run_forever_until_terminated(mode: &[&str]) {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    seed(&src, &t, &[("app", "1")]);
    let cfg = write_config(
        &t,
        &format!(
            "version: 1\nsync:\n  - source: {}/app\n    target: {}/app\n",
            src.host, dst.host
        ),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_imgsync"))
        .args(["sync", "--config", &cfg, "--report", &t.p("report.json")])
        .args(mode)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first run ends; the process says when the next one is and waits.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "the first run ended without waiting: {seen}");
        seen.push_str(&line);
        if line.starts_with("imgsync: next run in ") {
            break;
        }
    }
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    // Stopped between runs, nothing half done: a clean stop.
    assert_eq!(status.code(), Some(0), "{seen}");
    assert_eq!(read_json(&t.path("report.json"))["copied"], 1);
    assert_eq!(
        digest_of(&format!("{}/app:1", dst.host)),
        digest_of(&format!("{}/app:1", src.host))
    );
}

#[test]
fn a_tag_moved_to_a_manifest_the_target_has_is_only_retagged() {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    // app:1 and app:2 are different images.
    seed(&src, &t, &[("app", "1"), ("app", "2")]);
    let cfg = write_config(
        &t,
        &format!(
            "version: 1\nsync:\n  - source: {}/app\n    target: {}/app\n",
            src.host, dst.host
        ),
    );
    t.imgsync(&["sync", "--config", &cfg]).ok();
    // Upstream, app:1 now points at app:2's image, which the target has.
    let hello = fixture("hello.tar").display().to_string();
    t.imgsync(&[
        "copy",
        "-q",
        &format!("docker-archive:{hello}:@1"),
        &format!("{}/app:1", src.host),
    ])
    .ok();
    let run = t.imgsync(&["sync", "--config", &cfg, "--json"]).ok().json();
    assert_eq!(run["copied"], 1, "{run}");
    assert_eq!(run["blobs_copied"], 0, "{run}");
    assert_eq!(run["blobs_skipped"], 0, "no blob was even looked at: {run}");
    assert_eq!(
        digest_of(&format!("{}/app:1", dst.host)),
        digest_of(&format!("{}/app:1", src.host))
    );
}
