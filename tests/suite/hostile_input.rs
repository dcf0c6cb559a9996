//! Hostile local input: sources crafted to make imgsync print unverified
//! bytes, panic, or spend unbounded time, memory or disk. Each test checks
//! what a user sees: the exit code, one error line naming the thing at
//! fault, and nothing printed or written that was not verified.

use std::path::Path;

use serde_json::{Value, json};
use sha2::Digest as _;

use super::harness::*;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// Starts an OCI layout holding one small image's config and layer;
/// returns the image manifest's bytes (not yet stored).
fn start_layout(layout: &Path) -> Vec<u8> {
    std::fs::create_dir_all(layout).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let layer = layer_tar("hello.txt", b"hello\n");
    let config = put_blob(layout, CONFIG, &config_for(&[&layer]));
    let layer = put_blob(layout, LAYER, &layer);
    serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": [layer]}),
    )
    .unwrap()
}

/// Writes `index.json` naming one root descriptor as `name`.
fn name_root(layout: &Path, mut root: Value, name: &str) {
    root["annotations"] = json!({"org.opencontainers.image.ref.name": name});
    let top = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [root]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
}

#[test]
fn inspect_raw_refuses_a_tampered_sha512_manifest() {
    let t = TestDir::new();
    let layout = t.path("layout");
    let manifest = start_layout(&layout);
    let hex = hex::encode(sha2::Sha512::digest(&manifest));
    // Same length, other bytes: only the hash can tell.
    let tampered = String::from_utf8(manifest.clone())
        .unwrap()
        .replacen("\"schemaVersion\":2", "\"schemaVersion\":3", 1)
        .into_bytes();
    assert_eq!(tampered.len(), manifest.len());
    std::fs::create_dir_all(layout.join("blobs/sha512")).unwrap();
    std::fs::write(layout.join("blobs/sha512").join(&hex), &tampered).unwrap();
    let digest = format!("sha512:{hex}");
    name_root(
        &layout,
        json!({"mediaType": MANIFEST, "digest": digest, "size": manifest.len()}),
        "v1",
    );
    let src = format!("oci:{}:v1", layout.display());
    for flag in ["--raw", "--config"] {
        let run = t.imgsync(&["inspect", flag, &src]);
        assert!(
            run.stdout.is_empty(),
            "inspect {flag} printed unverified bytes: {}",
            run.stdout_str()
        );
        run.fails(EXIT_INTEGRITY, &[&digest]);
    }

    // The untampered bytes under the same digest are printed as they are.
    std::fs::write(layout.join("blobs/sha512").join(&hex), &manifest).unwrap();
    let run = t.imgsync(&["inspect", "--raw", &src]).ok();
    assert_eq!(run.stdout, manifest);
}

#[test]
fn inspect_raw_refuses_a_digest_it_cannot_compute() {
    let t = TestDir::new();
    let layout = t.path("layout");
    let manifest = start_layout(&layout);
    let digest = "blake9:0123456789abcdef";
    std::fs::create_dir_all(layout.join("blobs/blake9")).unwrap();
    std::fs::write(layout.join("blobs/blake9/0123456789abcdef"), &manifest).unwrap();
    name_root(
        &layout,
        json!({"mediaType": MANIFEST, "digest": digest, "size": manifest.len()}),
        "v1",
    );
    let src = format!("oci:{}:v1", layout.display());
    for flag in ["--raw", "--config"] {
        let run = t.imgsync(&["inspect", flag, &src]);
        assert!(
            run.stdout.is_empty(),
            "inspect {flag} printed unverifiable bytes: {}",
            run.stdout_str()
        );
        run.fails(1, &[digest]);
    }
}

#[test]
fn an_archive_index_past_usize_is_a_usage_error() {
    let t = TestDir::new();
    let archive = fixture("hello.tar").display().to_string();
    let huge = "184467440737095516160000";
    for src in [
        format!("docker-archive:{archive}@{huge}"),
        format!("docker-archive:{archive}:@{huge}"),
    ] {
        t.imgsync(&["inspect", &src]).fails(2, &[huge]);
        t.imgsync(&["copy", &src, &format!("oci:{}", t.p("out"))])
            .fails(2, &[huge]);
        assert!(!t.path("out").exists());
    }
}

/// Builds a layout whose image is `levels` indexes deep, each listing the
/// index below it `fan_out` times, over one image manifest: a few
/// kilobytes describing `fan_out^levels` paths. Returns the root digest.
fn repeating_layout(layout: &Path, fan_out: usize, levels: usize) -> String {
    let manifest = start_layout(layout);
    let mut child = put_blob(layout, MANIFEST, &manifest);
    child["platform"] = json!({"architecture": "amd64", "os": "linux"});
    for _ in 0..levels {
        let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": vec![child.clone(); fan_out]});
        child = put_blob(layout, INDEX, &serde_json::to_vec(&index).unwrap());
    }
    let root = child["digest"].as_str().unwrap().to_string();
    name_root(layout, child, "deep");
    root
}

/// Runs imgsync, killed after a minute and held to 2 GiB of address
/// space: a walk that never ends must fail this test, not the machine.
fn bounded(t: &TestDir, args: &[&str]) -> Run {
    let out = std::process::Command::new("timeout")
        .args(["-s", "KILL", "60", "prlimit", "--as=2147483648", "--"])
        .arg(env!("CARGO_BIN_EXE_imgsync"))
        .args(args)
        .current_dir(t.dir.path())
        .env("IMGSYNC_TMPDIR", t.dir.path())
        .output()
        .expect("run imgsync");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        what: format!("imgsync {}", args.join(" ")),
    };
    assert!(
        run.code != 137 && run.code != -1,
        "{}: killed after 60 s or out of memory:\n{}",
        run.what,
        run.stderr
    );
    run
}

#[test]
fn indexes_repeating_their_children_are_walked_once() {
    let t = TestDir::new();
    let layout = t.path("layout");
    // 32^6 paths (10^9) to one manifest, in seven small files.
    let root = repeating_layout(&layout, 32, 6);
    let src = format!("oci:{}:deep", layout.display());

    bounded(&t, &["verify", &src]).ok();
    let info = bounded(&t, &["inspect", "--json", &src]).ok().json();
    assert_eq!(info[0]["digest"], json!(root), "{info}");

    // Copied as it is: the same root, and every level's index present.
    let out = t.path("out");
    bounded(&t, &["copy", &src, &format!("oci:{}:deep", out.display())]).ok();
    assert_eq!(layout_refs(&out), vec![("deep".to_string(), root.clone())]);
    assert_eq!(t.snapshot("out/blobs"), t.snapshot("layout/blobs"));

    // One platform selected: the single manifest below all the levels.
    let archive = t.p("one.tar");
    bounded(
        &t,
        &["copy", &src, &format!("docker-archive:{archive}:app:1")],
    )
    .ok();
    bounded(&t, &["verify", &format!("docker-archive:{archive}")]).ok();
}

#[test]
fn indexes_nested_past_the_limit_are_refused_promptly() {
    let t = TestDir::new();
    let layout = t.path("layout");
    repeating_layout(&layout, 2, 30);
    let src = format!("oci:{}:deep", layout.display());
    bounded(&t, &["verify", &src]).fails(1, &["nested more than 8 deep"]);
    bounded(&t, &["copy", &src, &format!("oci:{}", t.p("out"))])
        .fails(1, &["nested more than 8 deep"]);
    assert!(!t.path("out").exists());
}

fn gzip(parts: &[&[u8]]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for p in parts {
        z.write_all(p).unwrap();
    }
    z.finish().unwrap()
}

#[test]
fn a_compressed_archive_is_spooled_up_to_its_tar_end_marker() {
    let t = TestDir::new();
    let tar = std::fs::read(fixture("hello.tar")).unwrap();
    // After the archive: 32 MiB of junk, then bytes that are not gzip at
    // all. Reading past the end marker means spooling the junk and failing.
    let junk = vec![0xabu8; 32 << 20];
    let mut bytes = gzip(&[&tar]);
    bytes.extend(gzip(&[&junk]));
    bytes.extend(b"not gzip, not anything");
    std::fs::write(t.path("hello.tar.gz"), &bytes).unwrap();
    std::fs::create_dir(t.path("spool")).unwrap();

    let src = format!("docker-archive:{}:@0", t.p("hello.tar.gz"));
    let out = format!("oci:{}", t.p("out"));
    t.imgsync(&["copy", "--tmpdir", &t.p("spool"), &src, &out])
        .ok();
    assert!(t.path("out/index.json").exists());
    assert_eq!(std::fs::read_dir(t.path("spool")).unwrap().count(), 0);
}

#[test]
fn an_entry_past_the_spool_limit_is_refused_before_it_is_spooled() {
    let t = TestDir::new();
    let mut header = tar::Header::new_ustar();
    header.set_path("layer.tar").unwrap();
    header.set_mode(0o644);
    header.set_size(7 << 30);
    header.set_cksum();
    // The claim is 7 GiB; 4 MiB of zeros follow (a bomb, cut short).
    let zeros = vec![0u8; 4 << 20];
    let bomb = gzip(&[header.as_bytes(), &zeros]);
    std::fs::write(t.path("bomb.tar.gz"), &bomb).unwrap();
    let src = format!("docker-archive:{}", t.p("bomb.tar.gz"));
    let run = t.imgsync_env(
        &["copy", &src, &format!("oci:{}", t.p("out"))],
        &[("IMGSYNC_MAX_SPOOL", "1M")],
    );
    run.fails(1, &["bomb.tar.gz", "IMGSYNC_MAX_SPOOL"]);
    assert!(!t.path("out").exists());
    assert!(
        !t.entries().iter().any(|e| e.starts_with(".imgsync-spool")),
        "{:?}",
        t.entries()
    );
}

/// A name with control characters (a layout's ref name here; a tag a
/// registry lists alike) reaches the terminal escaped on stdout too, so it
/// cannot move the cursor or clear the screen.
#[test]
fn control_characters_in_names_are_escaped_on_stdout() {
    let t = TestDir::new();
    let archive = fixture("hello.tar").display().to_string();
    t.imgsync(&["copy", &format!("docker-archive:{archive}:@0"), "oci:l:app"])
        .ok();
    let index_path = t.path("l/index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] =
        json!("app\u{1b}[2J");
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let run = t.imgsync(&["inspect", "oci:l"]).ok();
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert!(
        !stdout.contains('\u{1b}'),
        "a raw ESC on stdout: {stdout:?}"
    );
    assert!(stdout.contains("app\\x1b[2J"), "{stdout}");
}
