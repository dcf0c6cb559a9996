//! `imgsync sync --state`: memory between runs, against two real
//! registries. What a no-op run costs with and without the state (each
//! request read from `--debug`), immutable tags, a tag deleted at the
//! target behind the state's back, state files of another config or
//! corrupt, and a failed image tried again.

use serde_json::Value;

use super::harness::*;
use super::registry_harness::{Kind, PASSWORD, Registry, USER};
use super::sync::{digest_of, seed, tags_of, write_config};

/// A sync run's report and the registry requests it logged (`--debug`),
/// as `(method, host, path)`.
pub(super) struct Measured {
    pub(super) report: Value,
    pub(super) stderr: String,
    pub(super) requests: Vec<(String, String, String)>,
}

impl Measured {
    pub(super) fn to(&self, host: &str) -> Vec<&(String, String, String)> {
        self.requests.iter().filter(|r| r.1 == host).collect()
    }

    fn heads_to(&self, host: &str) -> usize {
        self.to(host).iter().filter(|r| r.0 == "HEAD").count()
    }

    fn count(&self) -> u64 {
        self.report["requests"].as_u64().unwrap()
    }
}

pub(super) fn measured_sync(t: &TestDir, args: &[&str]) -> Measured {
    let mut all = vec!["--debug", "sync", "--json"];
    all.extend_from_slice(args);
    let run = t.imgsync(&all);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let requests = run
        .stderr
        .lines()
        .filter_map(|l| {
            let (method, rest) = l.strip_prefix("imgsync: debug: ")?.split_once(' ')?;
            let url = rest.split_whitespace().next()?;
            let after = url.split_once("://")?.1;
            let (host, path) = after.split_once('/')?;
            Some((method.to_string(), host.to_string(), format!("/{path}")))
        })
        .filter(|(m, _, _)| matches!(m.as_str(), "GET" | "HEAD" | "PUT" | "POST" | "PATCH"))
        .collect();
    Measured {
        report: run.json(),
        stderr: run.stderr,
        requests,
    }
}

/// Removes a tag from a registry's storage, as a cleanup job or another
/// tool would, leaving the manifest and blobs.
fn delete_tag(reg: &Registry, repo: &str, tag: &str) {
    let dir = reg
        .dir
        .path()
        .join("data/docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/tags")
        .join(tag);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn two_entries(src: &Registry, dst: &Registry, immutable: bool) -> String {
    let lib_extra = if immutable {
        "    immutable-tags: ['^v?\\d+\\.\\d+\\.\\d+$']\n"
    } else {
        ""
    };
    format!(
        "version: 1\nsync:\n  - source: {s}/app\n    target: {d}/mirror/app\n  - source: {s}/lib\n    target: {d}/mirror/lib\n{lib_extra}",
        s = src.host,
        d = dst.host
    )
}

#[test]
fn a_no_op_run_with_state_asks_the_source_only_and_immutable_tags_cost_nothing() {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let images = [
        ("app", "1"),
        ("app", "latest"),
        ("lib", "v1.0.0"),
        ("lib", "1.1.0"),
        ("lib", "edge"),
    ];
    seed(&src, &t, &images);
    let cfg = write_config(&t, &two_entries(&src, &dst, false));
    let state = t.p("state.json");
    let first = measured_sync(&t, &["--config", &cfg, "--state", &state]);
    assert_eq!(first.report["copied"], 5, "{}", first.report);
    assert_eq!(first.report["full_check"], true);

    // Without the state: a HEAD per tag at the source and at the target.
    let without = measured_sync(&t, &["--config", &cfg]);
    assert_eq!(without.report["up_to_date"], 5, "{}", without.report);
    assert_eq!(without.heads_to(&dst.host), 5);
    assert_eq!(without.heads_to(&src.host), 5);

    // With it: the source's HEADs and tag lists, nothing at the target.
    let with = measured_sync(&t, &["--config", &cfg, "--state", &state]);
    assert_eq!(with.report["up_to_date"], 5, "{}", with.report);
    assert_eq!(with.report["state_skipped"], 5, "{}", with.report);
    assert_eq!(with.report["full_check"], false);
    assert!(
        with.stderr.contains("5 up to date by the state file"),
        "{}",
        with.stderr
    );
    assert!(with.to(&dst.host).is_empty(), "{:?}", with.to(&dst.host));
    assert_eq!(with.heads_to(&src.host), 5);
    let listings = with
        .to(&src.host)
        .iter()
        .filter(|r| r.0 == "GET" && r.2.contains("/tags/list"))
        .count();
    assert_eq!(listings, 2);
    assert_eq!(
        with.to(&src.host).len(),
        5 + listings,
        "{:?}",
        with.requests
    );
    // The report's count adds what the log leaves out (the endpoint check
    // of each registry the run spoke to): one registry fewer, and no HEAD
    // at the target.
    let without_pings = without.count() - without.requests.len() as u64;
    let with_pings = with.count() - with.requests.len() as u64;
    assert!(with_pings < without_pings, "{with_pings} {without_pings}");
    assert_eq!(
        with.count(),
        with.heads_to(&src.host) as u64 + listings as u64 + with_pings
    );
    assert!(with.count() < without.count());
    assert_eq!(
        without.count() - with.count(),
        without.heads_to(&dst.host) as u64 + without_pings - with_pings
    );

    // Immutable tags the state says are mirrored: not even the source is
    // asked. The same sources and targets: the state still holds.
    let cfg = write_config(&t, &two_entries(&src, &dst, true));
    let frozen = measured_sync(&t, &["--config", &cfg, "--state", &state]);
    assert_eq!(frozen.report["state_skipped"], 5, "{}", frozen.report);
    assert!(frozen.to(&dst.host).is_empty());
    let lib_heads = frozen
        .to(&src.host)
        .iter()
        .filter(|r| r.0 == "HEAD" && r.2.starts_with("/v2/lib/"))
        .map(|r| r.2.clone())
        .collect::<Vec<_>>();
    assert_eq!(
        lib_heads,
        ["/v2/lib/manifests/edge"],
        "only the mutable tag"
    );
    assert_eq!(frozen.heads_to(&src.host), 3);
    assert_eq!(with.count() - frozen.count(), 2, "two immutable tags");
    eprintln!(
        "no-op requests: without state {}, with state {}, with immutable tags {}",
        without.count(),
        with.count(),
        frozen.count()
    );
}

#[test]
fn a_tag_deleted_at_the_target_is_restored_by_a_full_check_only() {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    seed(&src, &t, &[("app", "1"), ("app", "2")]);
    let entry = format!(
        "sync:\n  - source: {}/app\n    target: {}/app\n",
        src.host, dst.host
    );
    let cfg = write_config(&t, &format!("version: 1\nstate: state.json\n{entry}"));
    t.imgsync(&["sync", "--config", &cfg]).ok();
    assert!(
        t.path("state.json").exists(),
        "state: is relative to the config"
    );
    let restored =
        || digest_of(&format!("{}/app:1", dst.host)) == digest_of(&format!("{}/app:1", src.host));

    delete_tag(&dst, "app", "1");
    assert!(!restored());
    let plain = t.imgsync(&["sync", "--config", &cfg, "--json"]).ok().json();
    assert_eq!(plain["copied"], 0, "the state is trusted: {plain}");
    assert!(!restored());

    let full = t
        .imgsync(&["sync", "--config", &cfg, "--json", "--verify-target"])
        .ok()
        .json();
    assert_eq!(full["copied"], 1, "{full}");
    assert_eq!(full["full_check"], true);
    assert!(restored());

    // A full check a day: just done, so the next run trusts the state.
    let daily = format!("version: 1\nstate: state.json\nstate-verify-every: 24h\n{entry}");
    let cfg = write_config(&t, &daily);
    delete_tag(&dst, "app", "1");
    let run = t.imgsync(&["sync", "--config", &cfg, "--json"]).ok().json();
    assert_eq!(run["full_check"], false, "{run}");
    assert!(!restored());
    // Every run a full check.
    let always = format!("version: 1\nstate: state.json\nstate-verify-every: 0s\n{entry}");
    let cfg = write_config(&t, &always);
    let run = t.imgsync(&["sync", "--config", &cfg, "--json"]).ok().json();
    assert_eq!(run["full_check"], true, "{run}");
    assert_eq!(run["copied"], 1, "{run}");
    assert!(restored());
    // And the flag overrides the config.
    delete_tag(&dst, "app", "1");
    let cfg = write_config(&t, &daily);
    t.imgsync(&["sync", "--config", &cfg, "--state-verify-every", "0s"])
        .ok();
    assert!(restored());
}

#[test]
fn a_state_file_of_another_config_or_corrupt_is_ignored_with_a_warning() {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    seed(&src, &t, &[("app", "1"), ("app", "2")]);
    let state = t.p("state.json");
    let config_to = |target: &str| {
        write_config(
            &t,
            &format!(
                "version: 1\nsync:\n  - source: {}/app\n    target: {}/{target}\n",
                src.host, dst.host
            ),
        )
    };
    let cfg = config_to("a");
    t.imgsync(&["sync", "--config", &cfg, "--state", &state])
        .ok();

    // Another target, the same state file: it says nothing of this one.
    let cfg = config_to("b");
    let run = t.imgsync(&["sync", "--config", &cfg, "--state", &state, "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let warning: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("warning") && l.contains("state.json"))
        .collect();
    assert_eq!(warning.len(), 1, "{}", run.stderr);
    assert!(warning[0].contains("another config"), "{}", warning[0]);
    let report = run.json();
    assert_eq!(report["copied"], 2, "{report}");
    assert_eq!(tags_of(&t, &format!("{}/b", dst.host)), ["1", "2"]);
    // A fresh state was written for this config.
    let metrics = t.p("sync.prom");
    let again = t
        .imgsync(&[
            "sync",
            "--config",
            &cfg,
            "--state",
            &state,
            "--json",
            "--metrics",
            &metrics,
        ])
        .ok();
    assert!(!again.stderr.contains("warning"), "{}", again.stderr);
    assert_eq!(again.json()["state_skipped"], 2);
    let metrics = std::fs::read_to_string(t.path("sync.prom")).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("imgsync_sync_state_skipped{") && l.ends_with("} 2")),
        "{metrics}"
    );

    // A corrupt state: a warning, and a run as without one. A dry run
    // reads it but leaves it as it was.
    std::fs::write(t.path("state.json"), b"{\"version\": 1, \"conf").unwrap();
    let dry = t.imgsync(&["sync", "--config", &cfg, "--state", &state, "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stderr.contains("state.json"), "{}", dry.stderr);
    assert_eq!(
        std::fs::read(t.path("state.json")).unwrap(),
        b"{\"version\": 1, \"conf"
    );
    let run = t.imgsync(&["sync", "--config", &cfg, "--state", &state, "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let warned: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("state.json"))
        .collect();
    assert_eq!(warned.len(), 1, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["up_to_date"], 2, "{report}");
    assert_eq!(report["state_skipped"], 0, "{report}");
    assert_eq!(report["full_check"], true, "{report}");
    let next = t
        .imgsync(&["sync", "--config", &cfg, "--state", &state, "--json"])
        .ok()
        .json();
    assert_eq!(next["state_skipped"], 2, "rewritten whole: {next}");
}

#[test]
fn a_failed_image_is_not_remembered_and_is_tried_again_next_run() {
    let src = Registry::start(Kind::Plain);
    let open = Registry::start(Kind::Plain);
    let guarded = Registry::start(Kind::Basic);
    let t = TestDir::new();
    seed(&src, &t, &[("app", "1")]);
    let cfg = write_config(
        &t,
        &format!(
            "version: 1\nregistries:\n  - host: {g}\n    cert-dir: {certs}\nsync:\n  - source: {s}/app\n    target: {o}/app\n  - source: {s}/app\n    target: {g}/app\n",
            s = src.host,
            o = open.host,
            g = guarded.host,
            certs = guarded.cert_dir(),
        ),
    );
    let state = t.p("state.json");
    // No credentials for the guarded target: its image fails.
    let run = t.imgsync(&["sync", "--config", &cfg, "--state", &state, "--json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let report = run.json();
    assert_eq!(
        (report["copied"].as_u64(), report["failed"].as_u64()),
        (Some(1), Some(1))
    );

    // With credentials the next run asks the guarded target again and
    // copies; the other image is trusted from the state.
    let auth = base64_of(&format!("{USER}:{PASSWORD}"));
    std::fs::write(
        t.path("auth.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}",
            guarded.host
        ),
    )
    .unwrap();
    let run = t
        .imgsync(&[
            "sync",
            "--config",
            &cfg,
            "--state",
            &state,
            "--json",
            "--authfile",
            &t.p("auth.json"),
        ])
        .ok()
        .json();
    assert_eq!(run["copied"], 1, "{run}");
    assert_eq!(run["state_skipped"], 1, "{run}");
    assert_eq!(
        digest_of(&format!("{}/app:1", src.host)),
        guarded_digest(&t, &guarded)
    );
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The digest of `app:1` at a registry that wants credentials.
fn guarded_digest(t: &TestDir, reg: &Registry) -> Option<String> {
    let run = t.imgsync(&[
        "inspect",
        "--json",
        "--creds",
        &format!("{USER}:{PASSWORD}"),
        "--cert-dir",
        &reg.cert_dir(),
        &format!("{}/app:1", reg.host),
    ]);
    (run.code == 0).then(|| run.json()[0]["digest"].as_str().unwrap_or("").to_string())
}
