//! The registry transport against real registries (see registry_harness):
//! push, pull, registry to registry, mounts, repeated copies, docker
//! interop, TLS, basic and token auth, and the failures around them.

use serde_json::Value;

use super::harness::*;
use super::registry_harness::{Kind, PASSWORD, READER, Registry, USER};

const HELLO: &str = "imgsync-fixture/hello";

fn hello() -> String {
    format!("docker-archive:{}", fixture("hello.tar").display())
}

fn skopeo_digest(reference: &str, extra: &[&str]) -> String {
    let mut args = vec!["inspect", "--raw"];
    args.extend(extra);
    let r = format!("docker://{reference}");
    args.push(&r);
    format!("sha256:{}", sha256_hex(tool("skopeo", &args).as_bytes()))
}

#[test]
fn push_then_pull_keeps_every_digest() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    t.imgsync(&["copy", &hello(), "oci:local"]).ok();
    // Layers as they are (plain tars), so digests match the local copy.
    let pushed = t
        .imgsync(&[
            "copy",
            "--dest-compress",
            "none",
            "--json",
            &hello(),
            &format!("{}/imported", reg.host),
        ])
        .ok()
        .json();
    assert_eq!(pushed["images"].as_array().unwrap().len(), 2);
    for (tag, digest) in layout_refs(&t.path("local")) {
        let remote = format!("{}/imported/{HELLO}:{tag}", reg.host);
        assert_eq!(
            skopeo_digest(&remote, &["--tls-verify=false"]),
            digest,
            "{remote}"
        );
        t.imgsync(&["copy", &remote, &format!("oci:pulled:{tag}")])
            .ok();
    }
    let mut a = layout_refs(&t.path("local"));
    let mut b = layout_refs(&t.path("pulled"));
    a.sort();
    b.sort();
    assert_eq!(a, b);
    t.imgsync(&["verify", "oci:pulled"]).ok();
    let tags = t
        .imgsync(&["tags", &format!("{}/imported/{HELLO}", reg.host)])
        .ok()
        .stdout_str();
    assert_eq!(tags, "1.0\n2.0\n");
}

#[test]
fn second_copy_uploads_nothing() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let dest = format!("{}/team/app:1", reg.host);
    let src = format!("{}:{HELLO}:2.0", hello());
    let first = t.imgsync(&["copy", "--json", &src, &dest]).ok().json();
    assert_eq!(first["blobs_copied"], 5);
    // Plain layers are gzip-compressed on the way into a registry.
    let m: Value = serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{dest}"),
        ],
    ))
    .unwrap();
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }
    let second = t.imgsync(&["copy", "--json", &src, &dest]);
    assert!(second.stderr.contains("up to date"), "{}", second.stderr);
    let second = second.ok().json();
    assert_eq!(second["images_up_to_date"], 1);
    assert_eq!(second["blobs_copied"], 0);
    assert_eq!(second["bytes_copied"], 0);
    // Endpoint check (HTTPS then HTTP on loopback), a HEAD of the tag and,
    // as the pushed layers were compressed, a GET of its manifest to see
    // that it has the same config.
    assert!(second["requests"].as_u64().unwrap() <= 4, "{second}");
}

#[test]
fn requests_per_pushed_blob_and_mounts_between_repositories() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let first = t
        .imgsync(&[
            "copy",
            "--json",
            &format!("{}:{HELLO}:2.0", hello()),
            &format!("{}/a/app:1", reg.host),
        ])
        .ok()
        .json();
    let blobs = first["blobs_copied"].as_u64().unwrap();
    assert_eq!(blobs, 5);
    // 2 to find the endpoint, a HEAD of the tag and a look at the tag list
    // (the repository is new, so no blob needs a HEAD); POST + PUT for the
    // config; POST + streamed PATCH + PUT for each layer compressed on the
    // way in (4); the manifest, once, under its tag.
    assert_eq!(
        first["requests"].as_u64().unwrap(),
        2 + 2 + 2 + 3 * (blobs - 1) + 1,
        "{first}"
    );
    // Registry to registry on the same host: every blob is mounted.
    let second = t
        .imgsync(&[
            "copy",
            "--json",
            &format!("{}/a/app:1", reg.host),
            &format!("{}/b/app:1", reg.host),
        ])
        .ok()
        .json();
    assert_eq!(second["blobs_mounted"], 5, "{second}");
    assert_eq!(second["bytes_copied"], 0);
    assert_eq!(
        skopeo_digest(&format!("{}/b/app:1", reg.host), &["--tls-verify=false"]),
        first["images"][0]["digest"].as_str().unwrap()
    );
}

#[test]
fn registry_to_registry_and_multi_platform_index() {
    let a = Registry::start(Kind::Plain);
    let b = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let index = multiarch_layout(&t.path("multi"), "app");
    // Layers of an existing manifest are pushed as they are: the index
    // digest is kept.
    t.imgsync(&["copy", "oci:multi:app", &format!("{}/m/app:1", a.host)])
        .ok();
    t.imgsync(&[
        "copy",
        &format!("{}/m/app:1", a.host),
        &format!("{}/mirror/app:1", b.host),
    ])
    .ok();
    assert_eq!(
        skopeo_digest(&format!("{}/mirror/app:1", b.host), &["--tls-verify=false"]),
        index
    );
    // Without a tag, a registry source keeps its tag.
    t.imgsync(&[
        "copy",
        &format!("{}/m/app:1", a.host),
        &format!("{}/other", b.host),
    ])
    .ok();
    assert_eq!(
        skopeo_digest(&format!("{}/other:1", b.host), &["--tls-verify=false"]),
        index
    );
    let one = t
        .imgsync(&[
            "copy",
            "--json",
            "--platform",
            "linux/arm64",
            &format!("{}/m/app:1", a.host),
            "oci:arm:x",
        ])
        .ok()
        .json();
    assert_ne!(one["images"][0]["digest"], index.as_str());
    t.imgsync(&["verify", "oci:arm"]).ok();
}

#[test]
fn docker_pulls_what_imgsync_pushed_and_imgsync_pulls_what_docker_pushed() {
    require_docker();
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let remote = format!("{}/interop/hello:1", reg.host);
    t.imgsync(&[
        "copy",
        "--dest-compress",
        "gzip",
        &format!("{}:{HELLO}:1.0", hello()),
        &remote,
    ])
    .ok();
    tool("docker", &["pull", "-q", &remote]);
    let id = tool(
        "docker",
        &["image", "inspect", "--format", "{{.Id}}", &remote],
    )
    .trim()
    .to_string();
    let info = t.imgsync(&["inspect", "--json", &remote]).ok().json();
    assert_eq!(info[0]["config"], id.as_str());
    // docker push, then imgsync copies it back out.
    let pushed = format!("{}/interop/pushed:2", reg.host);
    tool("docker", &["tag", &remote, &pushed]);
    tool("docker", &["push", "-q", &pushed]);
    t.imgsync(&["copy", &pushed, "docker-archive:back.tar"])
        .ok();
    let _ = tool_status("docker", &["rmi", "-f", &remote, &pushed]);
    let loaded = tool("docker", &["load", "-i", &t.p("back.tar")]);
    assert!(loaded.contains(&pushed), "{loaded}");
    assert_eq!(
        tool(
            "docker",
            &["image", "inspect", "--format", "{{.Id}}", &pushed]
        )
        .trim(),
        id
    );
    let _ = tool_status("docker", &["rmi", "-f", &pushed]);
}

#[test]
fn tls_registry_needs_its_ca() {
    let reg = Registry::start(Kind::Tls);
    let t = TestDir::new();
    let dest = format!("{}/tls/app:1", reg.host);
    let src = format!("{}:{HELLO}:1.0", hello());
    t.imgsync(&["copy", &src, &dest])
        .fails(EXIT_NETWORK, &[&reg.host, "certificate"]);
    // The registry offers HTTP/2 over TLS (ALPN), and every request of the
    // push and the pull uses it.
    let push = t
        .imgsync(&[
            "copy",
            "--debug",
            "--dest-cert-dir",
            &reg.cert_dir(),
            &src,
            &dest,
        ])
        .ok();
    let pull = t
        .imgsync(&["copy", "--debug", "--src-tls-verify=false", &dest, "oci:l"])
        .ok();
    for run in [&push, &pull] {
        let requests: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("imgsync: debug: ") && l.contains(" -> "))
            .collect();
        assert!(requests.len() >= 3, "{}", run.stderr);
        for l in requests {
            assert!(l.ends_with("(HTTP/2.0)"), "not HTTP/2: {l}");
        }
    }
    let ca = format!("{}/ca.crt", reg.cert_dir());
    assert_eq!(
        skopeo_digest(&dest, &["--cert-dir", &reg.cert_dir()]),
        layout_refs(&t.path("l"))[0].1
    );
    let _ = ca;
}

#[test]
fn basic_auth_registry() {
    let reg = Registry::start(Kind::Basic);
    let t = TestDir::new();
    let cfg = t.path("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    let env = [("DOCKER_CONFIG", cfg.to_str().unwrap())];
    let dest = format!("{}/private/app:1", reg.host);
    let src = format!("{}:{HELLO}:1.0", hello());
    let certs = reg.cert_dir();
    let line = t
        .imgsync_env(&["copy", "--dest-cert-dir", &certs, &src, &dest], &env)
        .fails(EXIT_AUTH, &[&reg.host]);
    assert!(
        line.contains("login") || line.contains("credentials"),
        "{line}"
    );
    let wrong = format!("{USER}:wrong");
    let line = t
        .imgsync_env(
            &[
                "copy",
                "--dest-cert-dir",
                &certs,
                "--dest-creds",
                &wrong,
                &src,
                &dest,
            ],
            &env,
        )
        .fails(EXIT_AUTH, &[&reg.host]);
    assert!(
        !line.contains("wrong"),
        "the password must not be shown: {line}"
    );
    let good = format!("{USER}:{PASSWORD}");
    t.imgsync_env(
        &[
            "copy",
            "--dest-cert-dir",
            &certs,
            "--dest-creds",
            &good,
            &src,
            &dest,
        ],
        &env,
    )
    .ok();
    // login stores the credentials where docker does; later commands use them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imgsync"))
        .args([
            "login",
            &reg.host,
            "-u",
            USER,
            "--password-stdin",
            "--cert-dir",
            &certs,
        ])
        .env("DOCKER_CONFIG", &cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            std::io::Write::write_all(
                c.stdin.as_mut().unwrap(),
                format!("{PASSWORD}\n").as_bytes(),
            )?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = read_json(&cfg.join("config.json"));
    assert!(stored["auths"][&reg.host]["auth"].is_string(), "{stored}");
    t.imgsync_env(&["inspect", "--cert-dir", &certs, &dest], &env)
        .ok();
    t.imgsync_env(&["logout", &reg.host], &env).ok();
    t.imgsync_env(&["inspect", "--cert-dir", &certs, &dest], &env)
        .fails(EXIT_AUTH, &[&reg.host]);
}

#[test]
fn token_auth_registry_enforces_scopes() {
    let reg = Registry::start(Kind::Token);
    let t = TestDir::new();
    let certs = reg.cert_dir();
    let dest = format!("{}/tok/app:1", reg.host);
    let src = format!("{}:{HELLO}:1.0", hello());
    let pusher = format!("{USER}:{PASSWORD}");
    let reader = format!("{READER}:{PASSWORD}");
    let cfg = t.path("empty-config");
    std::fs::create_dir_all(&cfg).unwrap();
    let env = [("DOCKER_CONFIG", cfg.to_str().unwrap())];
    t.imgsync_env(
        &[
            "copy",
            "--dest-cert-dir",
            &certs,
            "--dest-creds",
            &pusher,
            &src,
            &dest,
        ],
        &env,
    )
    .ok();
    // A user with pull rights only cannot push: nothing moves.
    let other = format!("{}/tok/app:2", reg.host);
    t.imgsync_env(
        &[
            "copy",
            "--dest-cert-dir",
            &certs,
            "--dest-creds",
            &reader,
            &src,
            &other,
        ],
        &env,
    )
    .fails(EXIT_AUTH, &[&reg.host]);
    t.imgsync_env(&["inspect", "--cert-dir", &certs, &other], &env)
        .fails(EXIT_NOT_FOUND, &["tok/app"]);
    // Anonymous pull works, and a copy between repositories mounts with
    // one token carrying both scopes.
    t.imgsync_env(&["copy", "--src-cert-dir", &certs, &dest, "oci:l"], &env)
        .ok();
    let mounted = t
        .imgsync_env(
            &[
                "copy",
                "--json",
                "--src-cert-dir",
                &certs,
                "--dest-cert-dir",
                &certs,
                "--src-creds",
                &pusher,
                "--dest-creds",
                &pusher,
                &dest,
                &format!("{}/tok2/app:1", reg.host),
            ],
            &env,
        )
        .ok()
        .json();
    assert_eq!(mounted["blobs_mounted"], 4, "{mounted}");
    let tags = t
        .imgsync_env(
            &[
                "tags",
                "--cert-dir",
                &certs,
                &format!("{}/tok/app", reg.host),
            ],
            &env,
        )
        .ok()
        .stdout_str();
    assert_eq!(tags, "1\n");
}

/// A sync of 100 repositories under one prefix asks the token endpoint
/// for tokens scoped to the repositories each request works on (a source
/// and its target, and a mount's source), not for one token naming every
/// repository of the run: that token's URL would grow with the mirror and
/// pass the 8 KB limits of common token servers.
#[test]
fn tokens_of_a_prefix_sync_name_only_the_repositories_used_together() {
    let reg = Registry::start(Kind::Token);
    let t = TestDir::new();
    let certs = reg.cert_dir();
    let pusher = format!("{USER}:{PASSWORD}");
    let cfg = t.path("empty-config");
    std::fs::create_dir_all(&cfg).unwrap();
    let env = [("DOCKER_CONFIG", cfg.to_str().unwrap())];
    let repos: usize = 100;
    // 100 repositories under `fleet/`, pushed in one run.
    let layout = many_images_layout(&t, repos, |i| format!("reg.example/svc{i:03}:1"));
    t.imgsync_env(
        &[
            "copy",
            "-q",
            "--dest-cert-dir",
            &certs,
            "--dest-creds",
            &pusher,
            &format!("oci:{}", layout.display()),
            &format!("{}/fleet", reg.host),
        ],
        &env,
    )
    .ok();
    let before = reg.token_requests().len();
    let config = t.path("mirror.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nregistries:\n  - host: {host}\n    cert-dir: {certs}\n    username: {USER}\n    password: {PASSWORD}\nsync:\n  - source: {host}/fleet/\n    target: {host}/mirror/fleet/\n",
            host = reg.host
        ),
    )
    .unwrap();
    let report = t
        .imgsync_env(
            &["sync", "--json", "--config", config.to_str().unwrap()],
            &env,
        )
        .ok()
        .json();
    assert_eq!(report["copied"], repos, "{report}");
    let asked = &reg.token_requests()[before..];
    let widest = asked
        .iter()
        .map(|target| target.matches("scope=").count())
        .max()
        .unwrap();
    assert!(
        widest <= 3,
        "a token request named {widest} scopes: {asked:?}"
    );
    assert!(asked.iter().all(|target| target.len() < 8192));
    // One token per set of repositories, fetched once (requests in flight
    // wait for it): a source's, a target's before and after it is written
    // to, and a mount's pair.
    let distinct: std::collections::BTreeSet<&String> = asked.iter().collect();
    assert_eq!(
        distinct.len(),
        asked.len(),
        "a token fetched twice: {asked:?}"
    );
    assert!(
        asked.len() <= 4 * repos + 1,
        "{} token requests",
        asked.len()
    );
}

#[test]
fn registry_failures_are_named_and_classed() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    // Nothing listens on port 1.
    t.imgsync(&["copy", "127.0.0.1:1/x/y:1", "oci:out"])
        .fails(EXIT_NETWORK, &["127.0.0.1:1"]);
    t.imgsync(&["copy", &format!("{}/no/such:1", reg.host), "oci:out"])
        .fails(EXIT_NOT_FOUND, &["no/such", &reg.host]);
    t.imgsync(&["copy", "UPPER/case:1", "oci:out"])
        .fails(2, &["UPPER/case"]);
    t.imgsync(&["copy", "a:b:c", "oci:out"])
        .fails(2, &["a:b:c"]);
    assert!(!t.path("out").exists());
    // A failed push moves no tag.
    t.imgsync(&[
        "copy",
        &format!("{}:{HELLO}:1.0", hello()),
        &format!("{}/keep/app:1", reg.host),
    ])
    .ok();
    let before = skopeo_digest(&format!("{}/keep/app:1", reg.host), &["--tls-verify=false"]);
    multiarch_layout(&t.path("bad"), "x");
    let index = read_json(&t.path("bad/index.json"));
    let root = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let doc: Value = serde_json::from_slice(&layout_blob(&t.path("bad"), &root)).unwrap();
    let child = doc["manifests"][1]["digest"].as_str().unwrap().to_string();
    let m: Value = serde_json::from_slice(&layout_blob(&t.path("bad"), &child)).unwrap();
    let layer = m["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let p = t.path("bad/blobs/sha256").join(&layer);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&p, bytes).unwrap();
    t.imgsync(&["copy", "oci:bad:x", &format!("{}/keep/app:1", reg.host)])
        .fails(EXIT_INTEGRITY, &[&layer]);
    assert_eq!(
        skopeo_digest(&format!("{}/keep/app:1", reg.host), &["--tls-verify=false"]),
        before
    );
}

#[test]
fn debug_output_shows_requests_but_never_secrets() {
    let reg = Registry::start(Kind::Basic);
    let t = TestDir::new();
    let certs = reg.cert_dir();
    let good = format!("{USER}:{PASSWORD}");
    let run = t
        .imgsync(&[
            "--debug",
            "copy",
            "--dest-cert-dir",
            &certs,
            "--dest-creds",
            &good,
            &format!("{}:{HELLO}:1.0", hello()),
            &format!("{}/dbg/app:1", reg.host),
        ])
        .ok();
    assert!(run.stderr.contains("imgsync: debug: PUT"), "{}", run.stderr);
    assert!(!run.stderr.contains(PASSWORD), "{}", run.stderr);
    let encoded = base64_of(&good);
    assert!(!run.stderr.contains(&encoded), "{}", run.stderr);
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
