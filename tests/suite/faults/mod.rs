//! Network faults between imgsync and a real registry, through the
//! fault-injecting proxy of [`proxy`]: the tests assert which retries and
//! resumes happened from what the proxy recorded, without measuring time.

mod pages;
mod pipeline;
mod proxy;
mod rate_limits;

use std::sync::atomic::Ordering;

use super::harness::*;
use super::registry_harness::{Kind, Registry};
use proxy::{Fault, Path, Proxy, Seen};

const HELLO: &str = "imgsync-fixture/hello";
const MIB: u64 = 1 << 20;

fn hello(tag: &str) -> String {
    format!(
        "docker-archive:{}:{HELLO}:{tag}",
        fixture("hello.tar").display()
    )
}

/// A docker archive of one image with an incompressible layer of 2 MiB.
fn big_image(t: &TestDir) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..2 * MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    legacy_archive(
        &t.path("big.tar"),
        "big/app:1",
        &[&layer_tar("random.bin", &data)],
    );
    format!("docker-archive:{}", t.p("big.tar"))
}

/// The digest of the (gzip-compressed) layer of the big image at `reference`.
fn big_layer(t: &TestDir, reference: &str) -> String {
    let info = t.imgsync(&["inspect", "--json", reference]).ok().json();
    let layers = info[0]["layers"].as_array().unwrap();
    assert!(
        layers[0]["size"].as_u64().unwrap() > 2 * MIB - 4096,
        "{info}"
    );
    layers[0]["digest"].as_str().unwrap().to_string()
}

/// Copies `src` to `dst` and returns the digest of the (first) image.
fn copy(t: &TestDir, src: &str, dst: &str) -> String {
    let out = t.imgsync(&["copy", "--json", src, dst]).ok().json();
    out["images"][0]["digest"].as_str().unwrap().to_string()
}

/// The digest a registry tag points to, asked without the proxy.
fn tag_digest(t: &TestDir, reference: &str) -> String {
    let info = t.imgsync(&["inspect", "--json", reference]).ok().json();
    info[0]["digest"].as_str().unwrap().to_string()
}

/// Asserts a network failure (exit 6) reported on one line naming `host`.
fn network_failure(run: Run, host: &str) -> String {
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{}", run.stderr);
    run.fails(EXIT_NETWORK, &[host])
}

/// The `digest` query parameter of an upload target, decoded.
fn upload_digest(target: &str) -> String {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let d = query.split('&').find_map(|kv| kv.strip_prefix("digest="));
    d.unwrap_or("").replace("%3A", ":").replace("%3a", ":")
}

#[test]
fn download_cut_mid_blob_resumes_with_range() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let digest = copy(&t, &big_image(&t), &format!("{}/big/app:1", reg.host));
    let layer = big_layer(&t, &format!("{}/big/app:1", reg.host));
    let proxy = Proxy::start(&reg.host);
    let cut = proxy.rule("GET", &[Path::Blob], 1, Fault::CutResponse(MIB));
    let pulled = copy(&t, &format!("{}/big/app:1", proxy.host), "oci:pulled:app");
    assert_eq!(pulled, digest);
    t.imgsync(&["verify", "oci:pulled"]).ok();
    assert_eq!(
        layout_refs(&t.path("pulled")),
        [("app".to_string(), digest)]
    );
    let hits = proxy.hits(cut);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].ends_with(&layer), "{hits:?}");
    // The layer was asked for twice: whole, then from where it broke.
    let gets: Vec<Seen> = proxy
        .seen("GET", Path::Blob)
        .into_iter()
        .filter(|s| s.target.ends_with(&layer))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(gets[1].range.as_deref(), Some(&*format!("bytes={MIB}-")));
}

#[test]
fn download_that_keeps_breaking_resumes_then_restarts_whole() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let digest = copy(&t, &big_image(&t), &format!("{}/big/app:1", reg.host));
    let layer = big_layer(&t, &format!("{}/big/app:1", reg.host));
    let proxy = Proxy::start(&reg.host);
    // Every response breaks after 512 KiB, four times: the first download
    // and its three resumes; the engine then fetches the blob again.
    let cut = proxy.rule("GET", &[Path::Blob], 4, Fault::CutResponse(MIB / 2));
    let pulled = copy(&t, &format!("{}/big/app:1", proxy.host), "oci:pulled:app");
    assert_eq!(pulled, digest);
    t.imgsync(&["verify", "oci:pulled"]).ok();
    assert_eq!(proxy.hits(cut).len(), 4);
    let ranges: Vec<Option<String>> = proxy
        .seen("GET", Path::Blob)
        .into_iter()
        .filter(|s| s.target.ends_with(&layer))
        .map(|s| s.range)
        .collect();
    let from = |n: u64| Some(format!("bytes={}-", n * MIB / 2));
    assert_eq!(ranges, [None, from(1), from(2), from(3), None]);
}

#[test]
fn resume_from_a_registry_that_ignores_range() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let digest = copy(&t, &big_image(&t), &format!("{}/big/app:1", reg.host));
    let proxy = Proxy::start(&reg.host);
    let cut = proxy.rule("GET", &[Path::Blob], 1, Fault::CutResponse(MIB));
    let ignore = proxy.rule("GET", &[Path::Blob], 1, Fault::IgnoreRange);
    let pulled = copy(&t, &format!("{}/big/app:1", proxy.host), "oci:pulled:app");
    assert_eq!(pulled, digest);
    t.imgsync(&["verify", "oci:pulled"]).ok();
    assert_eq!(proxy.hits(cut).len(), 1);
    // The resume asked for a range and got the whole blob.
    assert_eq!(proxy.hits(ignore), proxy.hits(cut));
}

#[test]
fn interrupted_manifest_and_config_downloads_are_retried() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let digest = copy(&t, &hello("1.0"), &format!("{}/hello/app:1", reg.host));
    let info = t.imgsync(&["inspect", "--json", &format!("{}/hello/app:1", reg.host)]);
    let config = info.ok().json()[0]["config"].as_str().unwrap().to_string();
    let proxy = Proxy::start(&reg.host);
    // The manifest and the config are a few hundred bytes: each breaks once
    // after 50.
    let manifest_cut = proxy.rule("GET", &[Path::Manifest], 1, Fault::CutResponse(50));
    let config_cut = proxy.rule("GET", &[Path::Blob], 1, Fault::CutResponse(50));
    let from = format!("{}/hello/app:1", proxy.host);
    let run = t.imgsync(&["copy", &from, "oci:pulled:app"]);
    assert_eq!(proxy.hits(manifest_cut).len(), 1);
    run.ok();
    assert!(proxy.hits(config_cut)[0].ends_with(&config));
    assert_eq!(layout_refs(&t.path("pulled")), [("app".into(), digest)]);
    t.imgsync(&["verify", "oci:pulled"]).ok();
}

#[test]
fn broken_config_download_names_the_registry() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    copy(&t, &hello("1.0"), &format!("{}/hello/app:1", reg.host));
    let proxy = Proxy::start(&reg.host);
    let cut = proxy.rule("GET", &[Path::Blob], 1, Fault::CutResponse(50));
    let from = format!("{}/hello/app:1", proxy.host);
    let run = t.imgsync(&["copy", "--retry-times", "0", &from, "oci:pulled:app"]);
    let line = network_failure(run, &proxy.host);
    let hits = proxy.hits(cut);
    let config = hits[0].rsplit('/').next().unwrap();
    assert!(line.contains(config), "{line}");
    assert!(!t.path("pulled").exists());
}

#[test]
fn upload_cut_mid_put_is_retried() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let big = big_image(&t);
    let proxy = Proxy::start(&reg.host);
    let cut = proxy.rule("PUT", &[Path::Upload], 1, Fault::CutRequest(MIB));
    // Layers kept as they are: known digest and size, one monolithic PUT.
    let out = t
        .imgsync(&[
            "copy",
            "--json",
            "--dest-compress",
            "none",
            &big,
            &format!("{}/big/app:1", proxy.host),
        ])
        .ok()
        .json();
    let digest = out["images"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(out["blobs_copied"], 2, "{out}");
    assert_eq!(proxy.hits(cut).len(), 1);
    // One more POST and PUT than blobs: the broken upload was redone.
    let layer = big_layer(&t, &format!("{}/big/app:1", reg.host));
    let puts = proxy.seen("PUT", Path::Upload);
    assert_eq!(puts.len(), 3, "{puts:?}");
    assert_eq!(
        puts.iter()
            .filter(|s| upload_digest(&s.target) == layer)
            .count(),
        2
    );
    assert_eq!(proxy.seen("POST", Path::Upload).len(), 3);
    // The registry holds the image, byte for byte.
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/big/app:1", reg.host),
        ],
    );
    assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), digest);
    copy(&t, &format!("{}/big/app:1", reg.host), "oci:back:app");
    t.imgsync(&["verify", "oci:back"]).ok();
}

/// A layer compressed on the way in streams through one PATCH (its digest
/// is known only at the end); cut mid-body, the whole blob is redone.
#[test]
fn upload_cut_mid_patch_is_retried() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let big = big_image(&t);
    let proxy = Proxy::start(&reg.host);
    let cut = proxy.rule("PATCH", &[Path::Upload], 1, Fault::CutRequest(MIB));
    let out = t
        .imgsync(&["copy", "--json", &big, &format!("{}/big/app:1", proxy.host)])
        .ok()
        .json();
    assert_eq!(proxy.hits(cut).len(), 1);
    assert_eq!(
        proxy.seen("PATCH", Path::Upload).len(),
        2,
        "the layer's PATCH was redone"
    );
    let digest = out["images"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(tag_digest(&t, &format!("{}/big/app:1", reg.host)), digest);
    copy(&t, &format!("{}/big/app:1", reg.host), "oci:back:app");
    t.imgsync(&["verify", "oci:back"]).ok();
}

#[test]
fn too_many_requests_are_retried_after_waiting() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let digest = copy(&t, &hello("1.0"), &format!("{}/hello/app:1", reg.host));
    let proxy = Proxy::start(&reg.host);
    let busy = Fault::Status(429, Some(1));
    let manifests = proxy.rule("GET", &[Path::Manifest], 1, busy);
    let blobs = proxy.rule("GET", &[Path::Blob], 2, busy);
    let pulled = copy(&t, &format!("{}/hello/app:1", proxy.host), "oci:pulled:app");
    assert_eq!(pulled, digest);
    t.imgsync(&["verify", "oci:pulled"]).ok();
    assert_eq!(proxy.hits(manifests).len(), 1);
    assert_eq!(proxy.hits(blobs).len(), 2);
    // Each refused request was made again, once per refusal.
    assert_eq!(proxy.seen("GET", Path::Manifest).len(), 2);
    let (gets, refused) = (proxy.seen("GET", Path::Blob), proxy.hits(blobs));
    for target in &refused {
        let made = gets.iter().filter(|s| &s.target == target).count();
        let refusals = refused.iter().filter(|r| r == &target).count();
        assert_eq!(made, refusals + 1, "{target}: {gets:?}");
    }
}

#[test]
fn dropped_connections_are_retried() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let digest = copy(&t, &hello("1.0"), &format!("{}/hello/app:1", reg.host));
    let proxy = Proxy::start(&reg.host);
    let manifests = proxy.rule("GET", &[Path::Manifest], 1, Fault::Drop);
    let blobs = proxy.rule("GET", &[Path::Blob], 2, Fault::Drop);
    let pulled = copy(&t, &format!("{}/hello/app:1", proxy.host), "oci:pulled:app");
    assert_eq!(pulled, digest);
    t.imgsync(&["verify", "oci:pulled"]).ok();
    assert_eq!(proxy.hits(manifests).len(), 1);
    assert_eq!(proxy.hits(blobs).len(), 2);
    assert_eq!(proxy.seen("GET", Path::Manifest).len(), 2);
}

#[test]
fn a_burst_of_server_errors_is_retried() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let dest = format!("{}/keep/app:1", reg.host);
    let old = copy(&t, &hello("1.0"), &dest);
    let proxy = Proxy::start(&reg.host);
    let paths = &[Path::Blob, Path::Upload, Path::Manifest];
    let burst = proxy.rule("", paths, 3, Fault::Status(503, None));
    let new = copy(&t, &hello("2.0"), &format!("{}/keep/app:1", proxy.host));
    assert_ne!(new, old);
    assert_eq!(proxy.hits(burst).len(), 3);
    assert_eq!(tag_digest(&t, &dest), new);
}

#[test]
fn server_errors_that_last_fail_as_network_errors_and_move_no_tag() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let dest = format!("{}/keep/app:1", reg.host);
    let old = copy(&t, &hello("1.0"), &dest);

    // Every upload refused: each attempt of a blob is a POST and a PUT;
    // a blob is tried once and retried three times.
    let proxy = Proxy::start(&reg.host);
    let refuse = proxy.rule("PUT", &[Path::Upload], usize::MAX, Fault::Status(503, None));
    let via = format!("{}/keep/app:1", proxy.host);
    let line = network_failure(t.imgsync(&["copy", &hello("2.0"), &via]), &proxy.host);
    assert!(line.contains("503"), "{line}");
    let hits = proxy.hits(refuse);
    let most = hits
        .iter()
        .map(|h| {
            hits.iter()
                .filter(|o| upload_digest(o) == upload_digest(h))
                .count()
        })
        .max();
    assert_eq!(most, Some(4), "{hits:?}");
    assert_eq!(tag_digest(&t, &dest), old);
    assert!(proxy.seen("PUT", Path::Manifest).is_empty());

    // With --retry-times 0, one 503 on the manifest fails the copy at once.
    let proxy = Proxy::start(&reg.host);
    let once = proxy.rule("PUT", &[Path::Manifest], 1, Fault::Status(503, None));
    let via = format!("{}/keep/app:1", proxy.host);
    let run = t.imgsync(&["copy", "--retry-times", "0", &hello("2.0"), &via]);
    network_failure(run, &proxy.host);
    assert_eq!(proxy.hits(once).len(), 1);
    assert_eq!(proxy.seen("PUT", Path::Manifest).len(), 1);
    assert_eq!(tag_digest(&t, &dest), old);
}

#[test]
fn corrupt_download_fails_integrity_and_writes_nothing() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    copy(&t, &big_image(&t), &format!("{}/big/app:1", reg.host));
    let layer = big_layer(&t, &format!("{}/big/app:1", reg.host));
    let proxy = Proxy::start(&reg.host);
    let corrupt = proxy.rule("GET", &[Path::Blob], 1, Fault::Corrupt(MIB + 7));
    t.imgsync(&["copy", &format!("{}/big/app:1", proxy.host), "oci:out:app"])
        .fails(EXIT_INTEGRITY, &[&layer]);
    assert_eq!(proxy.hits(corrupt).len(), 1);
    assert!(!t.path("out").exists());
}

#[test]
fn slow_link_still_copies_exactly() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let digest = copy(&t, &big_image(&t), &format!("{}/big/app:1", reg.host));
    let layer = big_layer(&t, &format!("{}/big/app:1", reg.host));
    let proxy = Proxy::start(&reg.host);
    let slow = proxy.rule(
        "GET",
        &[Path::Blob],
        usize::MAX,
        Fault::Throttle(768 * 1024),
    );
    let pulled = copy(&t, &format!("{}/big/app:1", proxy.host), "oci:pulled:app");
    assert_eq!(pulled, digest);
    t.imgsync(&["verify", "oci:pulled"]).ok();
    assert!(proxy.hits(slow).iter().any(|h| h.ends_with(&layer)));
}

/// A sync run whose source keeps failing for a while (503 bursts, 429,
/// dropped connections, a download cut): everything ends up copied, and
/// every target tag points at a complete image.
#[test]
fn sync_through_a_flaky_source_ends_complete() {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    for (i, tag) in ["1", "2", "3"].iter().enumerate() {
        copy(
            &t,
            &hello(if i % 2 == 0 { "1.0" } else { "2.0" }),
            &format!("{}/flaky/app:{tag}", src.host),
        );
    }
    let proxy = Proxy::start(&src.host);
    proxy.rule("", &[Path::Manifest], 2, Fault::Status(503, None));
    proxy.rule("GET", &[Path::Blob], 1, Fault::Status(429, Some(1)));
    proxy.rule("GET", &[Path::Blob], 1, Fault::Drop);
    proxy.rule("GET", &[Path::Blob], 1, Fault::CutResponse(100));
    let cfg = t.path("mirror.yaml");
    std::fs::write(
        &cfg,
        format!(
            "version: 1\nsync:\n  - source: {}/flaky/app\n    target: {}/mirror/app\n",
            proxy.host, dst.host
        ),
    )
    .unwrap();
    let report = t
        .imgsync(&["sync", "--config", cfg.to_str().unwrap(), "--json"])
        .ok()
        .json();
    assert_eq!(report["copied"], 3, "{report}");
    for tag in ["1", "2", "3"] {
        let target = format!("{}/mirror/app:{tag}", dst.host);
        assert_eq!(
            tag_digest(&t, &target),
            tag_digest(&t, &format!("{}/flaky/app:{tag}", src.host))
        );
        t.imgsync(&["verify", &target]).ok();
    }
}

/// An image that fails once for a reason that may pass is tried again at
/// the end of the run; the user sees the retry and its cause on the console
/// and in the report, not only a count.
#[test]
fn sync_retry_reaches_the_console_and_the_report() {
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    let t = TestDir::new();
    copy(&t, &hello("1.0"), &format!("{}/flaky/app:1", src.host));
    let proxy = Proxy::start(&src.host);
    let refused = proxy.rule("GET", &[Path::Blob], 1, Fault::Status(503, None));
    let cfg = t.path("mirror.yaml");
    std::fs::write(
        &cfg,
        format!(
            "version: 1\nsync:\n  - source: {}/flaky/app\n    target: {}/mirror/app\n",
            proxy.host, dst.host
        ),
    )
    .unwrap();
    let report = t.path("report.json");
    let run = t
        .imgsync(&[
            "sync",
            "--config",
            cfg.to_str().unwrap(),
            "--retry-times",
            "0",
            "--report",
            report.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(proxy.hits(refused).len(), 1);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("retry 1 after"))
        .unwrap_or_else(|| panic!("no retry on the console: {}", run.stderr));
    assert!(
        line.contains("flaky/app:1") && line.contains("503"),
        "{line}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let image = &report["images"][0];
    assert_eq!(image["action"], "copied", "{report}");
    assert_eq!(image["retries"], 1, "{report}");
    let note = image["notes"][0].as_str().unwrap_or_default();
    assert!(
        note.contains("retry 1 after") && note.contains("503"),
        "{report}"
    );

    // With --quiet the console keeps to errors and the summary.
    let again = Proxy::start(&src.host);
    again.rule("GET", &[Path::Blob], 1, Fault::Status(503, None));
    std::fs::write(
        &cfg,
        format!(
            "version: 1\nsync:\n  - source: {}/flaky/app\n    target: {}/quiet/app\n",
            again.host, dst.host
        ),
    )
    .unwrap();
    let quiet = t
        .imgsync(&[
            "sync",
            "--config",
            cfg.to_str().unwrap(),
            "--retry-times",
            "0",
            "--quiet",
        ])
        .ok();
    assert!(!quiet.stderr.contains("retry 1 after"), "{}", quiet.stderr);
}

/// A bundle load the registry keeps failing at the end (every manifest PUT
/// answered 503): no tag is written, and the re-run moves only what is
/// missing (the blobs are there: no blob bytes again).
#[test]
fn interrupted_bundle_load_resumes_with_what_is_missing() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let big = big_image(&t);
    t.imgsync(&["save", "-q", "-o", "bundle.tar", &big, &hello("1.0")])
        .ok();
    let proxy = Proxy::start(&reg.host);
    let refuse = proxy.rule("PUT", &[Path::Manifest], 100, Fault::Status(503, None));
    let run = t.imgsync(&[
        "load",
        "--retry-times",
        "1",
        "bundle.tar",
        "--to",
        &format!("{}/m", proxy.host),
    ]);
    network_failure(run, &proxy.host);
    assert!(!proxy.hits(refuse).is_empty());
    proxy.heal();
    let uploaded = proxy.seen("PUT", Path::Upload).len();
    assert!(uploaded >= 2, "blobs were uploaded before the failure");
    assert_ne!(
        t.imgsync(&["tags", &format!("{}/m/big/app", reg.host)])
            .code,
        0,
        "no tag is written by a failed load"
    );
    let again = t
        .imgsync(&[
            "load",
            "--json",
            "bundle.tar",
            "--to",
            &format!("{}/m", proxy.host),
        ])
        .ok()
        .json();
    assert_eq!(
        proxy.seen("PUT", Path::Upload).len(),
        uploaded + again["blobs_copied"].as_u64().unwrap() as usize
    );
    // The big layer went up in the first run and is not sent again.
    let layer = big_layer(&t, &format!("{}/m/big/app:1", reg.host));
    let puts = proxy.seen("PUT", Path::Upload);
    assert_eq!(
        puts.iter()
            .filter(|s| upload_digest(&s.target) == layer)
            .count(),
        1,
        "{puts:?}"
    );
    assert!(again["blobs_skipped"].as_u64().unwrap() >= 1, "{again}");
    assert!(again["bytes_copied"].as_u64().unwrap() < MIB, "{again}");
}

/// A registry configured `tls: http` is spoken to in plain HTTP from the
/// first request: no TLS handshake is tried first (over a WAN that is a
/// round trip per registry and run, and a long stall against a server that
/// stays silent on TLS).
#[test]
fn a_registry_configured_for_plain_http_gets_no_tls_attempt() {
    let (src, dst) = (Registry::start(Kind::Plain), Registry::start(Kind::Plain));
    let t = TestDir::new();
    copy(&t, &hello("1.0"), &format!("{}/plain/app:1", src.host));
    let proxy = Proxy::start(&src.host);
    let cfg = t.path("mirror.yaml");
    std::fs::write(
        &cfg,
        format!(
            "version: 1\nregistries:\n  - host: {}\n    tls: http\nsync:\n  - source: {}/plain/app\n    target: {}/mirror/app\n",
            proxy.host, proxy.host, dst.host
        ),
    )
    .unwrap();
    let report = t
        .imgsync(&["sync", "--config", cfg.to_str().unwrap(), "--json"])
        .ok()
        .json();
    assert_eq!(report["copied"], 1, "{report}");
    assert_eq!(proxy.state.tls_hellos.load(Ordering::SeqCst), 0);
}
