//! A sync run is one pipeline: an image is copied as soon as it is
//! planned, not after every source has been listed. The proxy holds one
//! repository's tag list back until another repository's blobs are being
//! read: a run that planned everything before copying anything would
//! wait for the gate's time limit instead.

use std::time::Duration;

use super::super::harness::*;
use super::super::registry_harness::{Kind, Registry};
use super::proxy::Proxy;
use super::{copy, hello};

#[test]
fn a_copy_starts_while_another_repository_is_still_being_listed() {
    let t = TestDir::new();
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    copy(&t, &hello("1.0"), &format!("{}/team/app:1", src.host));
    copy(&t, &hello("2.0"), &format!("{}/team/slow:1", src.host));
    let proxy = Proxy::start(&src.host);
    // Generous: only a run that waits for the whole plan reaches it.
    proxy.hold_until(
        "/v2/team/slow/tags/list",
        "/v2/team/app/blobs/",
        Duration::from_secs(20),
    );
    let cfg = t.path("mirror.yaml");
    std::fs::write(
        &cfg,
        format!(
            "version: 1\nregistries:\n  - host: {p}\n    tls: http\nsync:\n  - source: {p}/team/slow\n    target: {d}/mirror/slow\n  - source: {p}/team/app\n    target: {d}/mirror/app\n",
            p = proxy.host,
            d = dst.host
        ),
    )
    .unwrap();
    let run = t.imgsync(&["sync", "--json", "--config", cfg.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["copied"], 2, "{}", run.json());
    assert!(
        !proxy.gate_timed_out(),
        "no blob of team/app was read while team/slow's tag list was held"
    );
    // The report keeps the config's order, whatever finished first.
    let images = run.json()["images"].as_array().unwrap().clone();
    let sources: Vec<&str> = images
        .iter()
        .map(|i| i["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        [
            format!("{}/team/slow:1", proxy.host),
            format!("{}/team/app:1", proxy.host)
        ]
    );
}
