//! A registry that answers listings 100 names a page, whatever `n` asks
//! for (ACR, Quay), played by the proxy lowering `n`: a sync follows the
//! `Link` of every catalog page and mirrors every repository. (The
//! registry behind it pages its catalog; its tag lists come whole, as a
//! registry that ignores `n` answers.)

use super::super::harness::*;
use super::super::registry_harness::{Kind, Registry};
use super::proxy::{Fault, Path, Proxy};

#[test]
fn a_catalog_listed_100_a_page_is_mirrored_whole() {
    let t = TestDir::new();
    let src = Registry::start(Kind::Plain);
    let dst = Registry::start(Kind::Plain);
    // 250 repositories `team/r000` to `team/r249`, seeded in one run.
    let layout = many_images_layout(&t, 250, |i| format!("reg.example/r{i:03}:1"));
    let many = format!("oci:{}", layout.display());
    t.imgsync(&["copy", "-q", &many, &format!("{}/team", src.host)])
        .ok();

    let proxy = Proxy::start(&src.host);
    let cap = proxy.rule("GET", &[Path::Other], usize::MAX, Fault::CapPage(100));
    let cfg = t.path("mirror.yaml");
    std::fs::write(
        &cfg,
        format!(
            "version: 1\nregistries:\n  - host: {p}\n    tls: http\nsync:\n  - source: {p}/team/\n    target: {d}/mirror/\n",
            p = proxy.host,
            d = dst.host
        ),
    )
    .unwrap();
    let out = t
        .imgsync(&["sync", "--json", "--config", cfg.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(out["copied"], 250, "{out}");
    let pages: Vec<String> = proxy
        .hits(cap)
        .into_iter()
        .filter(|target| target.contains("/_catalog"))
        .collect();
    assert_eq!(pages.len(), 3, "three pages of 100: {pages:?}");
    for i in [0, 99, 100, 249] {
        let tags = t
            .imgsync(&["tags", &format!("{}/mirror/r{i:03}", dst.host)])
            .ok()
            .stdout_str();
        assert_eq!(tags, "1\n", "r{i:03}");
    }
}
