//! Table tests for the reference and digest grammars (formats reference
//! §1.1 and §8), row by row, so a failure names the input.

use super::digest::{Digest, DigestHasher};
use super::reference::Reference;
use crate::ErrorClass;

const HEX64: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[test]
fn references_normalise() {
    let tag128 = format!("t{}", "a".repeat(127));
    let rows: Vec<(String, String)> = [
        ("busybox", "docker.io/library/busybox"),
        ("library/busybox:1", "docker.io/library/busybox:1"),
        ("docker.io/busybox", "docker.io/library/busybox"),
        ("registry-1.docker.io/x/y", "docker.io/x/y"),
        ("example.com", "docker.io/library/example.com"),
        ("localhost/app", "localhost/app"),
        ("localhost:5000/a/b/c:tag", "localhost:5000/a/b/c:tag"),
        ("192.168.0.1:5000/app", "192.168.0.1:5000/app"),
        ("[::1]:5000/app:1", "[::1]:5000/app:1"),
        ("[fe80::1]/app", "[fe80::1]/app"),
        (
            "my-registry.example/a__b/c-d.e_f:T_a.g-1",
            "my-registry.example/a__b/c-d.e_f:T_a.g-1",
        ),
        ("r.example/a---b", "r.example/a---b"),
        ("team/app:_x", "docker.io/team/app:_x"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .chain([
        (
            format!("app:{tag128}"),
            format!("docker.io/library/app:{tag128}"),
        ),
        (
            format!("r.example/app:1@sha256:{HEX64}"),
            format!("r.example/app:1@sha256:{HEX64}"),
        ),
        (
            format!("app@sha256:{HEX64}"),
            format!("docker.io/library/app@sha256:{HEX64}"),
        ),
    ])
    .collect();
    for (input, want) in rows {
        match Reference::parse(&input) {
            Ok(r) => assert_eq!(r.to_string(), want, "{input}"),
            Err(e) => panic!("{input}: {e}"),
        }
    }
}

#[test]
fn references_reject_what_the_grammar_forbids() {
    let long_path = format!("r.example/{}", "a".repeat(250));
    let rows: Vec<String> = [
        "",
        "app:",
        "app:-x",
        "app:.x",
        "UPPER",
        "r.example/App",
        "a b",
        "a..b",
        "a/",
        "/a",
        "a//b",
        "a.-b",
        "host:abc/app",
        "[::1/app",
        "[::1]x/app",
        "[::1]:/app",
        "-host.example/app",
        "app@sha256:abc",
        "app@",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("app:t{}", "a".repeat(128)),
        long_path,
        // A 64-hex string alone is an image ID.
        HEX64.to_string(),
    ])
    .collect();
    for input in rows {
        match Reference::parse(&input) {
            Ok(r) => panic!("{input:?} parsed as {r}"),
            Err(e) => assert_eq!(e.class(), ErrorClass::Usage, "{input:?}: {e}"),
        }
    }
}

#[test]
fn references_keep_their_parts() {
    let r = Reference::parse(&format!("r.example:443/a/b:v1@sha256:{HEX64}")).unwrap();
    assert_eq!(r.domain, "r.example:443");
    assert_eq!(r.path, "a/b");
    assert_eq!(r.tag.as_deref(), Some("v1"));
    assert_eq!(r.digest.unwrap().encoded(), HEX64);
    // `latest` only when there is neither tag nor digest.
    let pinned = Reference::parse(&format!("app@sha256:{HEX64}")).unwrap();
    assert_eq!(pinned.with_default_tag().tag, None);
    assert_eq!(
        Reference::parse("app")
            .unwrap()
            .with_default_tag()
            .tag
            .as_deref(),
        Some("latest")
    );
    assert_eq!(
        Reference::parse("r.example/a/b").unwrap().familiar_name(),
        "r.example/a/b"
    );
    assert_eq!(
        Reference::parse("team/app").unwrap().familiar_name(),
        "team/app"
    );
}

#[test]
fn digests_follow_the_oci_grammar() {
    let sha512 = format!("sha512:{}", "ab".repeat(64));
    let ok = [
        format!("sha256:{HEX64}"),
        sha512.clone(),
        "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564".to_string(),
        "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8".to_string(),
        "sha384:abc=".to_string(),
        "a.b_c-d:x".to_string(),
    ];
    for d in &ok {
        let parsed = Digest::parse(d).unwrap_or_else(|e| panic!("{d}: {e}"));
        assert_eq!(parsed.to_string(), *d);
        assert_eq!(format!("{}:{}", parsed.algorithm(), parsed.encoded()), *d);
    }
    let bad = [
        format!("sha256:{}", HEX64.to_uppercase()),
        format!("sha256:{}", &HEX64[1..]),
        format!("sha256:{HEX64}0"),
        format!("sha512:{HEX64}"),
        format!("SHA256:{HEX64}"),
        format!(":{HEX64}"),
        "sha256+:abc".to_string(),
        "+sha256:abc".to_string(),
        "sha256".to_string(),
        "sha256:".to_string(),
        "alg:a/b".to_string(),
        "alg:a b".to_string(),
        "alg:ab:cd".to_string(),
    ];
    for d in &bad {
        match Digest::parse(d) {
            Ok(p) => panic!("{d:?} parsed as {p}"),
            Err(e) => assert_eq!(e.class(), ErrorClass::Format, "{d:?}"),
        }
    }
}

#[test]
fn only_sha256_and_sha512_are_computed() {
    let data = b"some bytes";
    for alg in ["sha256", "sha512"] {
        let mut h = DigestHasher::for_algorithm(alg).unwrap();
        h.update(&data[..4]);
        h.update(&data[4..]);
        let d = h.finish();
        assert_eq!(d.algorithm(), alg);
        // What it computes parses back, and the digest's own hasher agrees.
        let mut again = Digest::parse(d.as_str()).unwrap().hasher().unwrap();
        again.update(data);
        assert_eq!(again.finish(), d);
    }
    assert_eq!(Digest::sha256_of(data).as_str().len(), "sha256:".len() + 64);
    let Err(e) = Digest::parse("sha384:abc").unwrap().hasher() else {
        panic!("sha384 has a hasher");
    };
    assert_eq!(e.class(), ErrorClass::Unsupported);
    assert!(e.to_string().contains("sha384"), "{e}");
}
