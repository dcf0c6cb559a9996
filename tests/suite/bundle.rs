//! Bundles for air-gapped transfer: `save` from a real registry, `docker
//! load` of the bundle, `load` into a second real registry and a layout,
//! incremental chains, volumes, and the failures around them.

use std::path::Path;

use serde_json::Value;

use super::harness::*;
use super::registry_harness::{Kind, Registry};

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Pushes an image of `layers` (plain tars, kept as they are) to `dest`.
fn push(t: &TestDir, name: &str, dest: &str, layers: &[&[u8]]) {
    let archive = t.path(&format!("src-{name}.tar"));
    legacy_archive(&archive, "x/y:1", layers);
    t.imgsync(&[
        "copy",
        "-q",
        "--dest-compress",
        "none",
        &format!("docker-archive:{}", archive.display()),
        dest,
    ])
    .ok();
}

/// Four images sharing two base layers, each with a layer of its own:
/// `REG/team/imgK:1`. Returns the references.
fn four_images(t: &TestDir, reg: &Registry) -> Vec<String> {
    let base1 = layer_tar("base1", &noise(300 * 1024, 1));
    let base2 = layer_tar("base2", &noise(200 * 1024, 2));
    (0..4)
        .map(|k| {
            let own = layer_tar(&format!("app{k}"), &noise(40 * 1024 + k, 10 + k as u64));
            let r = format!("{}/team/img{k}:1", reg.host);
            push(t, &format!("img{k}"), &r, &[&base1, &base2, &own]);
            r
        })
        .collect()
}

fn raw_manifest(reference: &str) -> Value {
    serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    ))
    .unwrap()
}

fn digest_of(reference: &str) -> String {
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    format!("sha256:{}", sha256_hex(raw.as_bytes()))
}

fn bundle_manifest(tar: &Path) -> Value {
    serde_json::from_slice(&tar_entry(tar, "imgsync-bundle.json").expect("a bundle manifest"))
        .unwrap()
}

/// Has the registry stored any repository?
fn registry_is_empty(reg: &Registry) -> bool {
    !reg.dir
        .path()
        .join("data/docker/registry/v2/repositories")
        .exists()
}

#[test]
fn save_from_a_registry_and_load_into_another_keeps_every_digest() {
    let src = Registry::start(Kind::Plain);
    let far = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let refs = four_images(&t, &src);
    let mut args = vec!["save", "-q", "-o", "week48.tar"];
    args.extend(refs.iter().map(String::as_str));
    t.imgsync(&args).ok();
    let bundle = t.path("week48.tar");

    // The bundle is no larger than its unique blobs plus metadata: the
    // shared base layers are stored once.
    let mut unique = std::collections::BTreeMap::new();
    for r in &refs {
        let m = raw_manifest(r);
        let raw = tool(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{r}"),
            ],
        );
        unique.insert(digest_of(r), raw.len() as u64);
        unique.insert(
            m["config"]["digest"].as_str().unwrap().to_string(),
            m["config"]["size"].as_u64().unwrap(),
        );
        for l in m["layers"].as_array().unwrap() {
            unique.insert(
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            );
        }
    }
    let unique_bytes: u64 = unique.values().sum();
    let size = std::fs::metadata(&bundle).unwrap().len();
    // Tar headers and padding (1 KiB per blob at most) and a few small
    // metadata files.
    let bound = unique_bytes + 1024 * unique.len() as u64 + 32 * 1024;
    assert!(
        size <= bound,
        "bundle is {size} bytes; unique blobs are {unique_bytes}"
    );
    let m = bundle_manifest(&bundle);
    assert_eq!(m["images"].as_array().unwrap().len(), 4);
    assert_eq!(m["blobs"].as_array().unwrap().len(), unique.len());

    // Also an OCI layout that other tools read, named by full references.
    let index: Value = serde_json::from_slice(&tar_entry(&bundle, "index.json").unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    for r in &refs {
        assert!(names.contains(&r.as_str()), "{r} not in {names:?}");
        tool(
            "skopeo",
            &["inspect", &format!("oci-archive:{}:{r}", bundle.display())],
        );
    }
    t.imgsync(&["verify", "week48.tar"]).ok();

    let out = t
        .imgsync(&[
            "load",
            "--json",
            "week48.tar",
            "--to",
            &format!("{}/mirror", far.host),
        ])
        .ok()
        .json();
    assert_eq!(out["images"].as_array().unwrap().len(), 4);
    for (k, r) in refs.iter().enumerate() {
        let loaded = format!("{}/mirror/team/img{k}:1", far.host);
        assert_eq!(digest_of(&loaded), digest_of(r), "{loaded}");
    }
    // Loading again uploads nothing.
    let again = t
        .imgsync(&[
            "load",
            "--json",
            "week48.tar",
            "--to",
            &format!("{}/mirror", far.host),
        ])
        .ok()
        .json();
    assert_eq!(again["blobs_copied"], 0);
    assert_eq!(again["images_up_to_date"], 4);

    // --keep-registry keeps the source host as a path component.
    t.imgsync(&[
        "load",
        "-q",
        "--keep-registry",
        "week48.tar",
        "--to",
        &format!("{}/kept", far.host),
    ])
    .ok();
    let host_part = src.host.replace(':', "_");
    assert_eq!(
        digest_of(&format!("{}/kept/{host_part}/team/img0:1", far.host)),
        digest_of(&refs[0])
    );
}

#[test]
fn docker_loads_a_bundle_and_pulls_what_load_pushed() {
    require_docker();
    let src = Registry::start(Kind::Plain);
    let far = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let refs = four_images(&t, &src);
    // A multi-platform image too: docker loads this machine's platform.
    multiarch_layout(&t.path("multi"), "multi");
    let multi = format!("{}/team/multi:1", src.host);
    t.imgsync(&["copy", "-q", "oci:multi:multi", &multi]).ok();
    let mut args = vec!["save", "-q", "-o", "b.tar"];
    args.extend(refs.iter().map(String::as_str));
    args.push(&multi);
    t.imgsync(&args).ok();
    let bundle = t.path("b.tar");
    let mj: Value = serde_json::from_slice(&tar_entry(&bundle, "manifest.json").unwrap()).unwrap();
    assert_eq!(mj.as_array().unwrap().len(), 5, "{mj}");

    let loaded = tool("docker", &["load", "-i", &bundle.display().to_string()]);
    for r in refs.iter().chain([&multi]) {
        assert!(
            loaded.contains(r.as_str()),
            "docker load did not name {r}: {loaded}"
        );
        let id = tool("docker", &["image", "inspect", "--format", "{{.Id}}", r]);
        let info = t.imgsync(&["inspect", "--json", r]).ok().json();
        // For the index, the platform docker loaded.
        let config = info
            .as_array()
            .unwrap()
            .iter()
            .find_map(|i| i["config"].as_str().map(str::to_string))
            .unwrap_or_default();
        if r != &multi {
            assert_eq!(id.trim(), config, "{r}");
        }
        tool("docker", &["rmi", "-f", r]);
    }

    // Loaded into a registry, docker pulls the same image.
    t.imgsync(&["load", "-q", "b.tar", "--to", &format!("{}/m", far.host)])
        .ok();
    let pulled = format!("{}/m/team/img2:1", far.host);
    tool("docker", &["pull", "-q", &pulled]);
    let id = tool(
        "docker",
        &["image", "inspect", "--format", "{{.Id}}", &pulled],
    );
    let m = raw_manifest(&refs[2]);
    assert_eq!(id.trim(), m["config"]["digest"].as_str().unwrap());
    tool("docker", &["rmi", "-f", &pulled]);
}

#[test]
fn incremental_chain_loads_in_order_and_names_what_is_missing() {
    let src = Registry::start(Kind::Plain);
    let far = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let base = layer_tar("base", &noise(200 * 1024, 7));
    let a1 = layer_tar("a1", &noise(30 * 1024, 8));
    push(&t, "a1", &format!("{}/app/a:1", src.host), &[&base, &a1]);
    let a = format!("{}/app/a:1", src.host);
    t.imgsync(&["save", "-q", "-o", "b1.tar", &a]).ok();

    // A second image on the same base, and a third on top of the second.
    let b1 = layer_tar("b1", &noise(30 * 1024, 9));
    let b = format!("{}/app/b:1", src.host);
    push(&t, "b1", &b, &[&base, &b1]);
    t.imgsync(&[
        "save",
        "-q",
        "-o",
        "b2.tar",
        "--since",
        "b1.tar",
        "--manifest-out",
        "b2.json",
        &a,
        &b,
    ])
    .ok();
    let c1 = layer_tar("c1", &noise(30 * 1024, 10));
    let c = format!("{}/app/c:1", src.host);
    push(&t, "c1", &c, &[&base, &b1, &c1]);
    // The big b2.tar is not needed: its manifest is enough.
    std::fs::rename(t.path("b2.tar"), t.path("b2-carried.tar")).unwrap();
    t.imgsync(&[
        "save", "-q", "-o", "b3.tar", "--since", "b2.json", &a, &b, &c,
    ])
    .ok();
    std::fs::rename(t.path("b2-carried.tar"), t.path("b2.tar")).unwrap();

    // b2 carries b's own layer, not the base; b3 only c's own layer.
    let base_digest = format!("sha256:{}", sha256_hex(&base));
    let b1_digest = format!("sha256:{}", sha256_hex(&b1));
    let c1_digest = format!("sha256:{}", sha256_hex(&c1));
    let has =
        |tar: &str, d: &str| tar_names(&t.path(tar)).contains(&format!("blobs/sha256/{}", &d[7..]));
    assert!(has("b1.tar", &base_digest));
    assert!(!has("b2.tar", &base_digest) && has("b2.tar", &b1_digest));
    assert!(
        !has("b3.tar", &base_digest) && !has("b3.tar", &b1_digest) && has("b3.tar", &c1_digest)
    );
    let m3 = bundle_manifest(&t.path("b3.tar"));
    let required: Vec<&str> = m3["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap())
        .collect();
    assert!(required.contains(&base_digest.as_str()) && required.contains(&b1_digest.as_str()));
    // Two bundles at once are refused, for verify and load alike.
    t.imgsync(&["verify", "b1.tar", "b2.tar"])
        .fails(2, &["b1.tar", "b2.tar", "two different bundles"]);
    t.imgsync(&[
        "load",
        "b1.tar",
        "b2.tar",
        "--to",
        &format!("{}/x", far.host),
    ])
    .fails(2, &["two different bundles"]);
    assert!(registry_is_empty(&far));
    // verify of an incremental bundle alone: sound, and says what it needs.
    let v = t.imgsync(&["verify", "b3.tar"]).ok();
    assert!(
        v.stderr.contains("relies on") && v.stderr.contains("b1.tar"),
        "{}",
        v.stderr
    );

    // The third alone into an empty registry: refused before any write,
    // naming the missing blobs and the bundles that carried them.
    let prefix = format!("{}/mirror", far.host);
    let line = t
        .imgsync(&["load", "b3.tar", "--to", &prefix])
        .fails(4, &[&base_digest, &b1_digest, "b1.tar", "b2.tar"]);
    assert!(line.contains("Nothing was written"), "{line}");
    assert!(
        registry_is_empty(&far),
        "the failed load wrote into the registry"
    );

    for b in ["b1.tar", "b2.tar", "b3.tar"] {
        t.imgsync(&["load", "-q", b, "--to", &prefix]).ok();
    }
    for (r, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        assert_eq!(digest_of(&format!("{prefix}/app/{name}:1")), digest_of(r));
    }
    for bundle in ["b1.tar", "b2.tar", "b3.tar"] {
        let again = t
            .imgsync(&["load", "--json", bundle, "--to", &prefix])
            .ok()
            .json();
        assert_eq!(again["blobs_copied"], 0, "{bundle}: {again}");
        assert_eq!(again["blobs_mounted"], 0, "{bundle}: {again}");
    }
}

#[test]
fn volumes_load_in_any_order_and_bad_volumes_are_named() {
    let src = Registry::start(Kind::Plain);
    let far = Registry::start(Kind::Plain);
    let t = TestDir::new();
    // A 2.5 MiB layer: larger than a volume, so it is cut into parts.
    let big = layer_tar("big", &noise(2560 * 1024, 21));
    let small: Vec<Vec<u8>> = (0..6)
        .map(|k| layer_tar(&format!("s{k}"), &noise(300 * 1024, 30 + k)))
        .collect();
    let img = format!("{}/vol/app:1", src.host);
    let mut layers: Vec<&[u8]> = vec![&big];
    layers.extend(small.iter().map(Vec::as_slice));
    push(&t, "app", &img, &layers);
    t.imgsync(&["save", "-q", "-o", "v.tar", "--split", "1MiB", &img])
        .ok();
    let mut volumes: Vec<String> = (1..100)
        .map(|n| t.p(&format!("v.tar.{n:03}")))
        .take_while(|p| Path::new(p).exists())
        .collect();
    assert!(volumes.len() >= 4, "{volumes:?}");
    assert!(!t.path("v.tar").exists());
    for v in &volumes {
        let len = std::fs::metadata(v).unwrap().len();
        assert!(len <= 1024 * 1024, "{v} is {len} bytes, over --split");
    }
    // Any order.
    volumes.reverse();
    volumes.swap(0, 1);
    let mut verify = vec!["verify"];
    verify.extend(volumes.iter().map(String::as_str));
    t.imgsync(&verify).ok();
    let mut load = vec!["load", "-q"];
    load.extend(volumes.iter().map(String::as_str));
    let prefix = format!("{}/far", far.host);
    load.extend(["--to", &prefix]);
    t.imgsync(&load).ok();
    assert_eq!(digest_of(&format!("{prefix}/vol/app:1")), digest_of(&img));

    // One volume missing: named, with its file.
    let missing = t.p("v.tar.002");
    let without: Vec<&str> = volumes
        .iter()
        .map(String::as_str)
        .filter(|v| *v != missing)
        .collect();
    let mut args = vec!["verify"];
    args.extend(&without);
    let r = t.imgsync(&args);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("volume 2 of") && r.stderr.contains("v.tar.002"),
        "{}",
        r.stderr
    );
    let other = Registry::start(Kind::Plain);
    let mut args = vec!["load"];
    args.extend(&without);
    let to = format!("{}/x", other.host);
    args.extend(["--to", &to]);
    t.imgsync(&args)
        .fails(5, &["volume 2 of", "v.tar.002", "missing"]);
    assert!(registry_is_empty(&other));

    // One byte flipped in the middle of a volume: that volume is named.
    let victim = t.path("v.tar.003");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&victim, &bytes).unwrap();
    let r = t.imgsync(&verify);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .lines()
            .any(|l| l.contains("v.tar.003") && l.contains("corrupt")),
        "{}",
        r.stderr
    );
    let mut args = vec!["load"];
    args.extend(volumes.iter().map(String::as_str));
    args.extend(["--to", &to]);
    let r = t.imgsync(&args);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(
        r.stderr.contains("v.tar.003") && r.stderr.contains("corrupt"),
        "the load names the corrupt volume: {}",
        r.stderr
    );
    let tags = t.imgsync(&["tags", &format!("{to}/vol/app")]);
    assert_ne!(tags.code, 0, "a tag was written from a corrupt bundle");

    // A volume of another bundle.
    t.imgsync(&["save", "-q", "-o", "w.tar", "--split", "1MiB", &img])
        .ok();
    bytes[mid] ^= 0x55;
    std::fs::write(&victim, &bytes).unwrap();
    let mut args = vec!["verify"];
    let foreign = t.p("w.tar.002");
    args.extend(volumes.iter().map(String::as_str).filter(|v| *v != missing));
    args.push(&foreign);
    let r = t.imgsync(&args);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("another bundle"), "{}", r.stderr);
}

#[test]
fn load_into_a_layout_and_from_plain_archives() {
    let src = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let refs = four_images(&t, &src);
    t.imgsync(&["save", "-q", "-o", "b.tar", &refs[0], &refs[1]])
        .ok();
    t.imgsync(&["load", "-q", "b.tar", "--to", "oci:layout"])
        .ok();
    let got = layout_refs(&t.path("layout"));
    for r in &refs[..2] {
        let d = digest_of(r);
        assert!(got.iter().any(|(n, g)| n == r && *g == d), "{r} {got:?}");
    }
    for r in &refs[..2] {
        let out = tool(
            "oci-image-tool",
            &[
                "validate",
                "--type",
                "image",
                "--ref",
                &format!("name={r}"),
                &t.p("layout"),
            ],
        );
        assert!(out.contains("Validation succeeded"), "{r}: {out}");
    }

    // A plain docker save archive loads too, each image below the prefix.
    let far = Registry::start(Kind::Plain);
    t.imgsync(&[
        "load",
        "-q",
        &fixture("hello.tar").display().to_string(),
        "--to",
        &format!("{}/plain", far.host),
    ])
    .ok();
    let tags = t
        .imgsync(&["tags", &format!("{}/plain/imgsync-fixture/hello", far.host)])
        .ok()
        .stdout_str();
    assert_eq!(tags, "1.0\n2.0\n");
}

#[test]
fn save_and_load_refuse_bad_input_and_leave_nothing_behind() {
    let src = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let refs = four_images(&t, &src);
    // Nothing to save.
    t.imgsync(&["save", "-o", "b.tar"])
        .fails(2, &["nothing to save"]);
    // Volumes too small.
    t.imgsync(&["save", "-o", "b.tar", "--split", "10KB", &refs[0]])
        .fails(2, &["--split", "1MiB"]);
    t.imgsync(&["save", "-o", "b.tar", "--split", "4 parsecs", &refs[0]])
        .fails(2, &["4 parsecs", "size"]);
    // An earlier bundle that is not there.
    t.imgsync(&["save", "-o", "b.tar", "--since", "nope.tar", &refs[0]])
        .fails(4, &["nope.tar"]);
    // An image that is not there: no bundle, no temporary file.
    t.imgsync(&[
        "save",
        "-o",
        "b.tar",
        &refs[0],
        &format!("{}/team/absent:1", src.host),
    ])
    .fails(4, &["team/absent"]);
    assert_eq!(
        t.entries().iter().filter(|e| e.contains("b.tar")).count(),
        0,
        "{:?}",
        t.entries()
    );

    // A truncated bundle: refused, the registry untouched.
    t.imgsync(&["save", "-q", "-o", "b.tar", &refs[0]]).ok();
    let bytes = std::fs::read(t.path("b.tar")).unwrap();
    std::fs::write(t.path("cut.tar"), &bytes[..bytes.len() / 2]).unwrap();
    let far = Registry::start(Kind::Plain);
    let r = t.imgsync(&["load", "cut.tar", "--to", &format!("{}/m", far.host)]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("cut.tar"), "{}", r.stderr);
    assert!(registry_is_empty(&far));
    // A bundle with a corrupt blob: verify names it; load writes no tag.
    let m = bundle_manifest(&t.path("b.tar"));
    let layer = m["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|b| b["size"].as_u64().unwrap())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut bad = bytes.clone();
    let at = find_entry_offset(&bad, &format!("blobs/sha256/{}", &layer[7..])) + 100;
    bad[at] ^= 1;
    std::fs::write(t.path("bad.tar"), &bad).unwrap();
    let r = t.imgsync(&["verify", "bad.tar"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(&layer), "{}", r.stderr);
    let r = t.imgsync(&["load", "bad.tar", "--to", &format!("{}/m", far.host)]);
    assert_eq!(r.code, 5, "{}", r.stderr);
    let tags = t.imgsync(&["tags", &format!("{}/m/team/img0", far.host)]);
    assert_ne!(tags.code, 0, "a tag was written from a corrupt bundle");
    // Not a bundle, for verify.
    std::fs::write(t.path("junk.tar"), b"not a tar at all").unwrap();
    let r = t.imgsync(&["verify", "junk.tar"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("junk.tar"), "{}", r.stderr);
}

/// The offset of an entry's data in a tar.
fn find_entry_offset(tar: &[u8], name: &str) -> usize {
    let mut a = tar::Archive::new(tar);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == name {
            return e.raw_file_position() as usize;
        }
    }
    panic!("{name} not in the tar");
}

#[test]
fn save_takes_the_images_a_sync_config_selects() {
    let src = Registry::start(Kind::Plain);
    let far = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let base = layer_tar("base", &noise(100 * 1024, 40));
    for (k, tag) in ["3.18", "3.19", "3.20-rc1", "edge"].iter().enumerate() {
        let own = layer_tar("own", &noise(10 * 1024, 41 + k as u64));
        push(
            &t,
            &format!("a{k}"),
            &format!("{}/library/alpine:{tag}", src.host),
            &[&base, &own],
        );
    }
    let own = layer_tar("svc", &noise(10 * 1024, 50));
    push(
        &t,
        "svc",
        &format!("{}/team/svc:1", src.host),
        &[&base, &own],
    );
    let pinned = digest_of(&format!("{}/team/svc:1", src.host));
    let cfg = t.path("mirror.yaml");
    std::fs::write(
        &cfg,
        format!(
            "version: 1\nsync:\n  - source: {s}/library/alpine\n    targets: [{d}/mirror/alpine, {d}/dr/alpine]\n    tags:\n      allow: ['^3\\.']\n      deny: ['-rc']\n  - source: {s}/team/svc@{pinned}\n    target: {d}/pinned/svc\n",
            s = src.host,
            d = far.host
        ),
    )
    .unwrap();
    let out = t
        .imgsync(&[
            "save",
            "--json",
            "-o",
            "b.tar",
            "--config",
            &cfg.display().to_string(),
        ])
        .ok()
        .json();
    let mut refs: Vec<String> = out["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap().to_string())
        .collect();
    refs.sort();
    assert_eq!(
        refs,
        [
            format!("{}/library/alpine:3.18", src.host),
            format!("{}/library/alpine:3.19", src.host),
            format!("{}/team/svc@{pinned}", src.host),
        ]
    );
    // An image a fan-out entry sends to two targets is carried once; the
    // shared base layer too.
    let base_entry = format!("blobs/sha256/{}", sha256_hex(&base));
    assert_eq!(
        tar_names(&t.path("b.tar"))
            .iter()
            .filter(|n| **n == base_entry)
            .count(),
        1
    );
    // A digest-pinned image loads by digest, untagged.
    t.imgsync(&["load", "-q", "b.tar", "--to", &format!("{}/m", far.host)])
        .ok();
    assert_eq!(
        digest_of(&format!("{}/m/team/svc@{pinned}", far.host)),
        pinned
    );
    assert_eq!(
        digest_of(&format!("{}/m/library/alpine:3.19", far.host)),
        digest_of(&format!("{}/library/alpine:3.19", src.host))
    );
}
