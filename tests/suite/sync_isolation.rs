//! `imgsync sync` with one source (or target) down: a registry where
//! nothing listens, a repository that does not exist, a server that
//! answers 500 to everything, a target where nothing listens. Each fails
//! its own entry only; every other entry is mirrored, the report and
//! stderr name each failure, and the run exits 1.

use serde_json::Value;

use super::harness::*;
use super::hostile_registry::{Server, answer};
use super::registry_harness::{Kind, Registry};
use super::sync::{digest_of, seed, write_config};

/// A loopback port where nothing listens (it was free a moment ago).
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A registry that answers 500 to every request.
fn failing_registry() -> Server {
    Server::start(|_| answer(500, &[], b"{\"errors\":[{\"code\":\"UNKNOWN\"}]}"))
}

/// The report rows of failed items whose source is `source`.
fn failed_rows<'a>(report: &'a Value, source: &str) -> Vec<&'a Value> {
    report["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["source"] == source && i["action"] == "failed")
        .collect()
}

/// The stderr lines of failed items naming `source`.
fn failure_lines<'a>(stderr: &'a str, source: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.contains("failed") && l.contains(&format!("{source} ->")))
        .collect()
}

#[test]
fn one_source_down_fails_its_own_entry_and_the_rest_is_mirrored() {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    seed(&src, &t, &[("library/alpine", "3.20")]);
    let failing = failing_registry();
    let down = format!("127.0.0.1:{}/team/gone", dead_port());
    let missing = format!("{}/team/missing", src.host);
    let broken = format!("127.0.0.1:{}/team/broken", failing.port);
    let dead_target = format!("127.0.0.1:{}/mirror/busybox", dead_port());
    // The failing entries come first: the healthy one must not depend on
    // their order.
    let cfg = write_config(
        &t,
        &format!(
            r#"version: 1
sync:
  - source: {down}
    target: {d}/mirror/gone
  - source: {missing}
    target: {d}/mirror/missing
  - source: {broken}
    target: {d}/mirror/broken
  - source: {s}/library/alpine
    target: {dead_target}
  - source: {s}/library/alpine
    target: {d}/mirror/alpine
"#,
            s = src.host,
            d = dst.host
        ),
    );
    let run = t.imgsync(&[
        "sync",
        "--config",
        &cfg,
        "--json",
        "--retry-times",
        "1",
        "--metrics",
        "sync.prom",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();

    // The healthy entry is mirrored, digest for digest.
    let source_digest = digest_of(&format!("{}/library/alpine:3.20", src.host));
    assert!(source_digest.is_some());
    assert_eq!(
        digest_of(&format!("{}/mirror/alpine:3.20", dst.host)),
        source_digest
    );
    assert_eq!(report["copied"], 1, "{report}");

    // Each failed source is a row naming it and why, and a line on stderr.
    for (source, why) in [
        (down.as_str(), "127.0.0.1"),
        (missing.as_str(), "404"),
        (broken.as_str(), "500"),
    ] {
        let rows = failed_rows(&report, source);
        assert_eq!(rows.len(), 1, "{source}: {report}");
        assert_eq!(rows[0]["listing_failed"], true, "{}", rows[0]);
        let error = rows[0]["error"].as_str().unwrap();
        assert!(error.contains(why), "{source}: {error}");
        assert_eq!(
            failure_lines(&run.stderr, source).len(),
            1,
            "{source}:\n{}",
            run.stderr
        );
    }
    assert!(
        failed_rows(&report, &down)[0]["error"]
            .as_str()
            .unwrap()
            .contains(down.split('/').next().unwrap()),
        "the dead registry is named"
    );
    assert!(
        failed_rows(&report, &missing)[0]["error"]
            .as_str()
            .unwrap()
            .contains("team/missing")
    );

    // The image bound for the dead target fails alone, naming the target.
    let alpine = format!("{}/library/alpine:3.20", src.host);
    let to_dead: Vec<&Value> = failed_rows(&report, &alpine)
        .into_iter()
        .filter(|i| i["target"] == format!("{dead_target}:3.20"))
        .collect();
    assert_eq!(to_dead.len(), 1, "{report}");
    let dead_host = dead_target.split('/').next().unwrap();
    assert!(
        to_dead[0]["error"].as_str().unwrap().contains(dead_host),
        "{}",
        to_dead[0]
    );
    // Its registry stays unreachable for the run: no second try.
    assert_eq!(to_dead[0]["retries"], 0, "{}", to_dead[0]);
    assert_eq!(report["failed"], 4, "{report}");
    assert_eq!(report["listings_failed"], 3, "{report}");
    let metrics = std::fs::read_to_string(t.path("sync.prom")).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("imgsync_sync_listings_failed{") && l.ends_with(" 3")),
        "{metrics}"
    );

    // With only the healthy entry, the next run has nothing to do.
    let healthy = write_config(
        &t,
        &format!(
            "version: 1\nsync:\n  - source: {}/library/alpine\n    target: {}/mirror/alpine\n",
            src.host, dst.host
        ),
    );
    let again = t
        .imgsync(&["sync", "--config", &healthy, "--json"])
        .ok()
        .json();
    assert_eq!(again["copied"], 0, "{again}");
    assert_eq!(again["up_to_date"], 1, "{again}");
    assert_eq!(again["failed"], 0, "{again}");
}

#[test]
fn a_dry_run_lists_what_it_could_and_names_what_it_could_not() {
    let src = Registry::start(Kind::Plain);
    let t = TestDir::new();
    seed(&src, &t, &[("library/alpine", "3.20")]);
    let missing = format!("{}/team/missing", src.host);
    let cfg = write_config(
        &t,
        &format!(
            "version: 1\nsync:\n  - source: {missing}\n    target: oci:layout\n  - source: {s}/library/alpine\n    target: oci:layout\n",
            s = src.host
        ),
    );
    let run = t.imgsync(&["sync", "--config", &cfg, "--dry-run"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let plan = String::from_utf8(run.stdout.clone()).unwrap();
    assert!(
        plan.lines().any(
            |l| l.starts_with(&format!("{}/library/alpine:3.20 -> ", src.host))
                && l.ends_with(" copy")
        ),
        "{plan}"
    );
    assert!(
        plan.lines()
            .any(|l| l.starts_with(&format!("{missing} -> ")) && l.contains("failed: ")),
        "{plan}"
    );
    assert!(!t.path("layout").exists(), "a dry run writes nothing");
}

#[test]
fn a_catalog_that_cannot_be_read_fails_in_every_shard() {
    let t = TestDir::new();
    let dead = format!("127.0.0.1:{}", dead_port());
    let cfg = write_config(
        &t,
        &format!("version: 1\nsync:\n  - source: {dead}/team/\n    target: oci:layout\n"),
    );
    for shard in ["0/2", "1/2"] {
        let run = t.imgsync(&[
            "sync",
            "--config",
            &cfg,
            "--json",
            "--shard",
            shard,
            "--retry-times",
            "0",
        ]);
        assert_eq!(run.code, 1, "shard {shard}: {}", run.stderr);
        let report = run.json();
        let rows = failed_rows(&report, &format!("{dead}/team"));
        assert_eq!(rows.len(), 1, "shard {shard}: {report}");
        assert!(
            rows[0]["error"].as_str().unwrap().contains(&dead),
            "{}",
            rows[0]
        );
    }
}

/// `--retry-failed REPORT` takes only what the earlier run's report lists
/// as failed: here an entry whose target could not be written; the other
/// entry is not even looked at.
#[test]
fn retry_failed_takes_only_what_the_report_lists_as_failed() {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    seed(&src, &t, &[("team/good", "1"), ("team/flaky", "1")]);
    // The layout target is a plain file at first: its entry fails.
    let layout = t.path("out");
    std::fs::write(&layout, b"not a directory").unwrap();
    let cfg = write_config(
        &t,
        &format!(
            "version: 1\nsync:\n  - source: {src}/team/good\n    target: {dst}/mirror/good\n  - source: {src}/team/flaky\n    target: oci:{out}\n",
            src = src.host,
            dst = dst.host,
            out = layout.display()
        ),
    );
    let first = t.imgsync(&["sync", "--config", &cfg, "--report", &t.p("first.json")]);
    assert_ne!(first.code, 0);
    let flaky = format!("{}/team/flaky:1", src.host);
    assert_eq!(
        failed_rows(&read_json(&t.path("first.json")), &flaky).len(),
        1
    );
    std::fs::remove_file(&layout).unwrap();
    let second = t
        .imgsync(&[
            "sync",
            "--config",
            &cfg,
            "--retry-failed",
            &t.p("first.json"),
            "--json",
        ])
        .ok()
        .json();
    let rows = second["images"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "only the failed image: {second}");
    assert_eq!(rows[0]["source"], flaky.as_str());
    assert_eq!(rows[0]["action"], "copied");
    t.imgsync(&["verify", &format!("oci:{}", layout.display())])
        .ok();
    // Nothing failed: nothing to do.
    std::fs::write(t.path("second.json"), second.to_string()).unwrap();
    let none = t
        .imgsync(&[
            "sync",
            "--config",
            &cfg,
            "--retry-failed",
            &t.p("second.json"),
        ])
        .ok();
    assert!(
        none.stderr.contains("no failed image to retry"),
        "{}",
        none.stderr
    );
    // A file that is not a report is a usage error naming it.
    t.imgsync(&["sync", "--config", &cfg, "--retry-failed", &cfg])
        .fails(2, &["not a sync report"]);
}
