//! Registries that limit requests, played by the proxy: a quota announced
//! in `ratelimit-*` headers that counts down per pull, a budget of pulls
//! per second over which pulls are refused with 429, and a configured
//! `requests-per-second`. Each test asserts on what the proxy recorded:
//! which requests reached it and when.

use std::time::Duration;

use super::super::harness::*;
use super::super::registry_harness::{Kind, Registry};
use super::proxy::{Path, Proxy};
use super::{big_image, copy, hello};

/// Writes a sync config and returns its path.
fn config(t: &TestDir, yaml: &str) -> String {
    let cfg = t.path("mirror.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    cfg.to_str().unwrap().to_string()
}

/// A source with `app:1`..`app:n`, two different images in turn.
fn source(t: &TestDir, n: usize) -> Registry {
    let src = Registry::start(Kind::Plain);
    for i in 1..=n {
        let image = hello(if i % 2 == 1 { "1.0" } else { "2.0" });
        copy(t, &image, &format!("{}/hub/app:{i}", src.host));
    }
    src
}

/// A source whose announced quota is down to the reserve: pulls from it
/// fail without being sent, naming the registry, what is left and when it
/// returns; an image the target has already (found with HEADs, which do
/// not count) passes, and another registry's entry is copied.
#[test]
fn sync_keeps_the_quota_reserve_and_goes_on_with_other_registries() {
    let t = TestDir::new();
    let src = source(&t, 2);
    let other = source(&t, 1);
    let dst = Registry::start(Kind::Plain);
    copy(
        &t,
        &format!("{}/hub/app:1", src.host),
        &format!("{}/mirror/app:1", dst.host),
    );
    let proxy = Proxy::start(&src.host);
    proxy.announce_quota(100, 5, 21600);
    let cfg = config(
        &t,
        &format!(
            "version: 1\nregistries:\n  - host: {p}\n    rate-limit-reserve: 5\nsync:\n  - source: {p}/hub/app\n    target: {d}/mirror/app\n  - source: {o}/hub/app\n    target: {d}/other/app\n",
            p = proxy.host,
            d = dst.host,
            o = other.host
        ),
    );
    let (report, metrics) = (t.path("report.json"), t.path("metrics.prom"));
    let run = t.imgsync(&[
        "sync",
        "--config",
        &cfg,
        "--report",
        report.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let failed = run
        .stderr
        .lines()
        .find(|l| l.contains("failed") && l.contains("hub/app:2"))
        .unwrap_or_else(|| panic!("no failed line: {}", run.stderr));
    for needle in [
        proxy.host.as_str(),
        "5 of 100 requests left",
        "rate-limit-reserve of 5",
        "returns in",
    ] {
        assert!(failed.contains(needle), "{needle:?} not in {failed}");
    }
    let summary = run.stderr.lines().find(|l| l.contains("quota left:"));
    let summary = summary.unwrap_or_else(|| panic!("no quota in summary: {}", run.stderr));
    assert!(
        summary.contains(&format!("{} 5/100", proxy.host)),
        "{summary}"
    );
    // Not one pull reached the registry.
    assert!(proxy.seen("GET", Path::Manifest).is_empty());
    assert!(proxy.seen("GET", Path::Blob).is_empty());

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let action = |source: String| {
        let images = report["images"].as_array().unwrap();
        let image = images.iter().find(|i| i["source"] == source.as_str());
        image
            .unwrap_or_else(|| panic!("{source}: {report}"))
            .clone()
    };
    assert_eq!(
        action(format!("{}/hub/app:1", proxy.host))["action"],
        "up-to-date"
    );
    let held = action(format!("{}/hub/app:2", proxy.host));
    assert_eq!(held["action"], "failed", "{report}");
    assert_eq!(held["error_class"], "quota", "{report}");
    assert_eq!(held["retries"], 0, "a kept reserve is not tried again");
    assert_eq!(
        action(format!("{}/hub/app:1", other.host))["action"],
        "copied"
    );
    let quota = report["quota"].as_object().unwrap();
    assert_eq!(
        quota.len(),
        1,
        "only the source announces a quota: {report}"
    );
    assert_eq!(
        quota[&proxy.host],
        serde_json::json!({"remaining": 5, "limit": 100, "window_seconds": 21600})
    );
    let metrics = std::fs::read_to_string(&metrics).unwrap();
    let gauge = format!(
        "imgsync_registry_quota_remaining{{registry=\"{}\"",
        proxy.host
    );
    let line = metrics.lines().find(|l| l.starts_with(&gauge));
    assert!(line.is_some_and(|l| l.ends_with(" 5")), "{metrics}");

    // Above the reserve, the same sync pulls, and the quota counts down.
    let fresh = Proxy::start(&src.host);
    fresh.announce_quota(100, 50, 21600);
    let cfg = config(
        &t,
        &format!(
            "version: 1\nregistries:\n  - host: {p}\n    rate-limit-reserve: 5\nsync:\n  - source: {p}/hub/app\n    target: {d}/mirror/app\n",
            p = fresh.host,
            d = dst.host,
        ),
    );
    let out = t.imgsync(&["sync", "--config", &cfg, "--json"]).ok().json();
    assert_eq!(out["copied"], 1, "{out}");
    let pulls = fresh.seen("GET", Path::Manifest).len() + fresh.seen("GET", Path::Blob).len();
    assert!(pulls > 0);
    assert_eq!(
        out["quota"][&fresh.host]["remaining"],
        50 - pulls as u64,
        "{out}"
    );
}

/// A registry that refuses pulls over two a second with 429 and
/// `Retry-After: 1`: the sync completes, and no request is refused twice
/// within one `Retry-After`. The two images share no blob, so each refused
/// target is one request of the run, refused and made again.
#[test]
fn sync_through_a_pull_budget_completes_refused_once_per_retry_after() {
    let t = TestDir::new();
    let src = Registry::start(Kind::Plain);
    copy(&t, &hello("1.0"), &format!("{}/hub/app:1", src.host));
    copy(&t, &big_image(&t), &format!("{}/hub/app:2", src.host));
    let dst = Registry::start(Kind::Plain);
    let proxy = Proxy::start(&src.host);
    proxy.budget_pulls(2);
    let cfg = config(
        &t,
        &format!(
            "version: 1\nsync:\n  - source: {}/hub/app\n    target: {}/mirror/app\n",
            proxy.host, dst.host
        ),
    );
    let out = t
        .imgsync(&["sync", "--config", &cfg, "--retry-times", "8", "--json"])
        .ok()
        .json();
    assert_eq!(out["copied"], 2, "{out}");
    let refused = proxy.refused();
    assert!(!refused.is_empty(), "six pulls within a second or so");
    for (target, _) in &refused {
        let mut times: Vec<_> = refused
            .iter()
            .filter(|(t, _)| t == target)
            .map(|r| r.1)
            .collect();
        times.sort();
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_secs(1),
                "{target} refused again after {gap:?}"
            );
        }
    }
}

/// `requests-per-second: 3`: in no second did the proxy see more than the
/// burst (one second's worth) plus one second's rate, and over the run the
/// rate holds. The bound is on the proxy's own clock and can only be met
/// more easily on a slow machine.
#[test]
fn sync_honours_requests_per_second() {
    let t = TestDir::new();
    let src = source(&t, 3);
    let dst = Registry::start(Kind::Plain);
    let proxy = Proxy::start(&src.host);
    let cfg = config(
        &t,
        &format!(
            "version: 1\nregistries:\n  - host: {p}\n    requests-per-second: 3\nsync:\n  - source: {p}/hub/app\n    target: {d}/mirror/app\n",
            p = proxy.host,
            d = dst.host
        ),
    );
    let out = t.imgsync(&["sync", "--config", &cfg, "--json"]).ok().json();
    assert_eq!(out["copied"], 3, "{out}");
    let mut times: Vec<_> = proxy.all_seen().iter().map(|s| s.at).collect();
    times.sort();
    let rate = 3.0;
    assert!(
        times.len() as f64 > 2.0 * rate + 2.0,
        "too few requests to tell: {}",
        times.len()
    );
    // The burst, a second of the rate, the unpaced `/v2/` check, and one
    // for the proxy reading heads a little late.
    let cap = (2.0 * rate) as usize + 2;
    for (i, start) in times.iter().enumerate() {
        let in_second = times[i..]
            .iter()
            .take_while(|&&t| t - *start < Duration::from_secs(1));
        let n = in_second.count();
        assert!(n <= cap, "{n} requests within a second of request {i}");
    }
    let span = (*times.last().unwrap() - times[0]).as_secs_f64();
    assert!(
        times.len() as f64 <= rate * (span + 1.0) + 2.0,
        "{} requests in {span:.2}s",
        times.len()
    );
}
