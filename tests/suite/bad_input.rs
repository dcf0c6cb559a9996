//! Bad input: every way a source (or a destination) can be wrong. Each test
//! runs `imgsync copy BAD DEST` and checks what a user sees: the exit code
//! (2 for usage errors, 1 for everything else), exactly one `imgsync: error:`
//! line naming the problem and the file, entry or digest at fault, and a
//! destination left exactly as it was. A new destination path must not exist
//! afterwards and no temporary file may remain beside it; an existing layout
//! must be byte-for-byte unchanged.
//!
//! The bad archives are built here from small text layers; no binary
//! fixture is stored for them.

use std::path::Path;

use super::harness::*;

/// The docker archive every test may read in place (two images).
fn hello() -> String {
    format!("docker-archive:{}", fixture("hello.tar").display())
}

/// Asserts a failed run: exit `code`, exactly one error line, and that line
/// holds every needle. Returns the line.
fn fails_once(run: Run, code: i32, needles: &[&str]) -> String {
    let errors = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("imgsync: error:"))
        .count();
    let what = run.what.clone();
    let stderr = run.stderr.clone();
    let line = run.fails(code, needles);
    assert_eq!(
        errors, 1,
        "{what}: expected one error line, got {errors}:\n{stderr}"
    );
    line
}

/// Compares two snapshots by name and content, printing only the names
/// that differ (the contents are binary).
fn assert_same(what: &str, before: &[(String, Vec<u8>)], after: &[(String, Vec<u8>)]) {
    if before == after {
        return;
    }
    let names = |s: &[(String, Vec<u8>)]| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let changed: Vec<&String> = before
        .iter()
        .filter(|(n, b)| after.iter().any(|(m, a)| m == n && a != b))
        .map(|(n, _)| n)
        .collect();
    panic!(
        "{what}: the destination changed\nbefore: {:?}\nafter:  {:?}\nchanged content: {changed:?}",
        names(before),
        names(after)
    );
}

/// Creates `layout` in the temp dir by copying the hello fixture into it.
fn existing_layout(t: &TestDir) {
    if !t.path("layout").exists() {
        t.imgsync(&["copy", &hello(), &format!("oci:{}", t.p("layout"))])
            .ok();
    }
}

/// Copies `src` into a new OCI layout, a new docker archive and an existing
/// OCI layout. Each copy must fail the same way and leave every destination
/// as it was. Returns the error line of the first copy.
fn rejected(t: &TestDir, src: &str, code: i32, needles: &[&str]) -> String {
    existing_layout(t);
    let entries = t.entries();
    let layout = t.snapshot("layout");

    let line = fails_once(
        t.imgsync(&["copy", src, &format!("oci:{}", t.p("out"))]),
        code,
        needles,
    );
    assert!(
        !t.path("out").exists(),
        "a failed copy left the new layout {}",
        t.p("out")
    );
    assert_eq!(
        t.entries(),
        entries,
        "a failed copy into a new layout left files behind"
    );

    fails_once(
        t.imgsync(&["copy", src, &format!("docker-archive:{}", t.p("out.tar"))]),
        code,
        needles,
    );
    assert!(
        !t.path("out.tar").exists(),
        "a failed copy left the new archive {}",
        t.p("out.tar")
    );
    assert_eq!(
        t.entries(),
        entries,
        "a failed copy into a new archive left files behind"
    );

    fails_once(
        t.imgsync(&["copy", src, &format!("oci:{}", t.p("layout"))]),
        code,
        needles,
    );
    assert_same(
        "copy into an existing layout",
        &layout,
        &t.snapshot("layout"),
    );
    assert_eq!(
        t.entries(),
        entries,
        "a failed copy into an existing layout left files behind"
    );
    line
}

/// Tar entries as (name, bytes).
type Entries = Vec<(String, Vec<u8>)>;

/// The tar entries of a legacy `docker save` archive holding one text layer
/// and its config (as `legacy_archive` writes them), without
/// `manifest.json`: the config first, then the layer. Returns (config file
/// name, entries).
fn legacy_parts(layer_text: &str) -> (String, Entries) {
    let layer = layer_tar("hello.txt", layer_text.as_bytes());
    let config = config_for(&[&layer]);
    let config_name = format!("{}.json", sha256_hex(&config));
    let entries = vec![
        (config_name.clone(), config),
        (layer_path(&layer), layer.clone()),
    ];
    (config_name, entries)
}

/// Where a legacy archive keeps a layer.
fn layer_path(layer: &[u8]) -> String {
    format!("{}/layer.tar", sha256_hex(layer))
}

fn manifest_json(config: &str, layers: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!([
        {"Config": config, "RepoTags": ["bad/image:1"], "Layers": layers}
    ]))
    .unwrap()
}

fn write_entries(path: &Path, entries: &Entries) {
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    write_tar(path, &refs);
}

/// One entry of a hand-made tar: a regular file or a symbolic link. Names
/// and link targets are written as given, so `..` and absolute paths can be
/// produced (the `tar` crate's builder refuses them).
enum Raw<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

fn write_raw_tar(path: &Path, entries: &[Raw]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, data): (&str, &[u8]) = match e {
            Raw::File(n, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                (n, d)
            }
            Raw::Symlink(n, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                let t = target.as_bytes();
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
                (n, &[])
            }
        };
        assert!(
            name.len() < 100,
            "name too long for a plain tar header: {name}"
        );
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.finish().unwrap();
}

/// A valid single-image archive in the temp dir; returns its location.
fn valid_archive(t: &TestDir, name: &str, layers: &[&[u8]]) -> String {
    legacy_archive(&t.path(name), "bad/image:1", layers);
    format!("docker-archive:{}", t.p(name))
}

#[test]
fn missing_source_file() {
    let t = TestDir::new();
    let tar = t.p("nope.tar");
    rejected(
        &t,
        &format!("docker-archive:{tar}"),
        EXIT_NOT_FOUND,
        &[&tar, "no such file"],
    );
    let dir = t.p("nodir");
    rejected(
        &t,
        &format!("oci:{dir}"),
        EXIT_NOT_FOUND,
        &[&dir, "no such"],
    );
    let oci_tar = t.p("nope.oci.tar");
    rejected(
        &t,
        &format!("oci-archive:{oci_tar}"),
        EXIT_NOT_FOUND,
        &[&oci_tar, "no such file"],
    );
}

#[test]
fn unknown_transport() {
    let t = TestDir::new();
    rejected(&t, "ftp:/x", 2, &["unknown transport", "ftp"]);
    // As a destination too: nothing is read or written.
    let entries = t.entries();
    fails_once(
        t.imgsync(&["copy", &hello(), "ftp:/x"]),
        2,
        &["unknown transport", "ftp"],
    );
    assert_eq!(t.entries(), entries);
}

#[test]
fn truncated_archive() {
    let t = TestDir::new();
    // A layer big enough that the cut falls well inside its data.
    let big: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    let layer = layer_tar("big.bin", &big);
    let full = t.path("full.tar");
    legacy_archive(&full, "bad/image:1", &[&layer]);
    let entry = layer_path(&layer);
    let (offset, size) = {
        let mut a = tar::Archive::new(std::fs::File::open(&full).unwrap());
        let e = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().to_string_lossy() == entry)
            .expect("layer entry");
        (e.raw_file_position(), e.size())
    };
    let bytes = std::fs::read(&full).unwrap();
    std::fs::remove_file(&full).unwrap();
    std::fs::write(t.path("cut.tar"), &bytes[..(offset + size / 2) as usize]).unwrap();
    rejected(
        &t,
        &format!("docker-archive:{}", t.p("cut.tar")),
        1,
        &["cut.tar", "truncated", &entry],
    );

    // An OCI archive cut inside its first blob.
    t.imgsync(&[
        "copy",
        &hello(),
        &format!("oci-archive:{}", t.p("full.oci.tar")),
    ])
    .ok();
    let (name, offset, size) = {
        let mut a = tar::Archive::new(std::fs::File::open(t.path("full.oci.tar")).unwrap());
        let e = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.size() > 1000)
            .expect("a blob");
        (
            e.path().unwrap().to_string_lossy().into_owned(),
            e.raw_file_position(),
            e.size(),
        )
    };
    let bytes = std::fs::read(t.path("full.oci.tar")).unwrap();
    std::fs::remove_file(t.path("full.oci.tar")).unwrap();
    std::fs::write(
        t.path("cut.oci.tar"),
        &bytes[..(offset + size / 2) as usize],
    )
    .unwrap();
    rejected(
        &t,
        &format!("oci-archive:{}", t.p("cut.oci.tar")),
        1,
        &["cut.oci.tar", "truncated", &name],
    );
}

#[test]
fn not_a_tar() {
    let t = TestDir::new();
    std::fs::write(
        t.path("text.tar"),
        "this is not a tar archive, only text\n".repeat(40),
    )
    .unwrap();
    rejected(
        &t,
        &format!("docker-archive:{}", t.p("text.tar")),
        1,
        &["text.tar", "not a"],
    );
    // Shorter than one tar block.
    std::fs::write(t.path("short.tar"), "hello\n").unwrap();
    rejected(
        &t,
        &format!("docker-archive:{}", t.p("short.tar")),
        1,
        &["short.tar", "not a"],
    );
    // An empty file.
    std::fs::write(t.path("empty.tar"), b"").unwrap();
    rejected(
        &t,
        &format!("docker-archive:{}", t.p("empty.tar")),
        1,
        &["empty.tar", "not a tar"],
    );
    // The same text read as an OCI archive.
    rejected(
        &t,
        &format!("oci-archive:{}", t.p("text.tar")),
        1,
        &["text.tar", "not a"],
    );
}

#[test]
fn no_manifest_json() {
    let t = TestDir::new();
    let (_, entries) = legacy_parts("no manifest\n");
    write_entries(&t.path("bad.tar"), &entries);
    rejected(
        &t,
        &format!("docker-archive:{}", t.p("bad.tar")),
        1,
        &["bad.tar", "no manifest.json"],
    );
}

#[test]
fn null_manifest_json() {
    let t = TestDir::new();
    let (_, mut entries) = legacy_parts("null manifest\n");
    entries.push(("manifest.json".into(), b"null".to_vec()));
    write_entries(&t.path("bad.tar"), &entries);
    rejected(
        &t,
        &format!("docker-archive:{}", t.p("bad.tar")),
        1,
        &["bad.tar", "manifest.json", "null"],
    );
}

#[test]
fn manifest_json_references_missing_layer() {
    let t = TestDir::new();
    let layer = layer_tar("a.txt", b"present\n");
    let absent = layer_tar("b.txt", b"absent\n");
    let config = config_for(&[&layer, &absent]);
    let config_name = format!("{}.json", sha256_hex(&config));
    let missing = layer_path(&absent);
    let entries = vec![
        (config_name.clone(), config),
        (layer_path(&layer), layer.clone()),
        (
            "manifest.json".to_string(),
            manifest_json(&config_name, &[&layer_path(&layer), &missing]),
        ),
    ];
    write_entries(&t.path("bad.tar"), &entries);
    rejected(
        &t,
        &format!("docker-archive:{}", t.p("bad.tar")),
        EXIT_NOT_FOUND,
        &["bad.tar", &missing, "not in the archive"],
    );
}

#[test]
fn more_layers_than_diff_ids() {
    let t = TestDir::new();
    let (config_name, mut entries) = legacy_parts("first\n");
    let extra = layer_tar("extra.txt", b"not in the config\n");
    let first = entries[1].0.clone();
    entries.push((layer_path(&extra), extra.clone()));
    entries.push((
        "manifest.json".into(),
        manifest_json(&config_name, &[&first, &layer_path(&extra)]),
    ));
    write_entries(&t.path("bad.tar"), &entries);
    rejected(
        &t,
        &format!("docker-archive:{}", t.p("bad.tar")),
        1,
        &["bad.tar", "2 layers", "1 diff_ids"],
    );
}

#[test]
fn layer_does_not_match_diff_id() {
    let t = TestDir::new();
    // The config names the DiffID of the original layer; the file at its
    // path holds an altered layer of the same size.
    let original = layer_tar("hello.txt", b"original content\n");
    let altered = layer_tar("hello.txt", b"altered  content\n");
    assert_eq!(original.len(), altered.len());
    let config = config_for(&[&original]);
    let config_name = format!("{}.json", sha256_hex(&config));
    let path = layer_path(&original);
    let entries = vec![
        (config_name.clone(), config),
        (path.clone(), altered.clone()),
        (
            "manifest.json".to_string(),
            manifest_json(&config_name, &[&path]),
        ),
    ];
    write_entries(&t.path("bad.tar"), &entries);
    let diff_id = format!("sha256:{}", sha256_hex(&original));
    rejected(
        &t,
        &format!("docker-archive:{}", t.p("bad.tar")),
        EXIT_INTEGRITY,
        &[&diff_id],
    );
}

/// `containers-image/oci-layout/multiple_images`: manifest
/// `sha256:0dc27f36…` (ref `1.0.0`) declares its config
/// `sha256:913cf3a3…` as 585 bytes; the blob has 584.
#[test]
fn blob_size_does_not_match_descriptor() {
    let Some(corpus) = peer_corpus() else {
        return;
    };
    let t = TestDir::new();
    let copy = t.copy_in(
        &corpus.path("containers-image/oci-layout/multiple_images"),
        "mi",
    );
    tool("chmod", &["-R", "u+w", &copy.display().to_string()]);
    let config = "sha256:913cf3a39d377faf89ed388ad913a318a390488c9f34c46e43424795cdabffe8";
    let manifest = read_json(
        &copy.join("blobs/sha256/0dc27f36a618c110ae851662c13283e9fbc1b5a5de003befc4bcefa5a05d2eef"),
    );
    assert_eq!(manifest["config"]["digest"], config);
    assert_eq!(manifest["config"]["size"], 585);
    assert_eq!(
        std::fs::metadata(copy.join(format!("blobs/sha256/{}", &config[7..])))
            .unwrap()
            .len(),
        584
    );

    rejected(
        &t,
        &format!("oci:{}:1.0.0", copy.display()),
        EXIT_INTEGRITY,
        &[config, "585"],
    );

    // verify reports it too, among whatever else it finds.
    let run = t.imgsync(&["verify", &format!("oci:{}", copy.display())]);
    assert_eq!(
        run.code, EXIT_INTEGRITY,
        "verify of a layout with a size mismatch:\n{}",
        run.stderr
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("imgsync: error:") && l.contains(config) && l.contains("585")),
        "verify does not report the size mismatch of {config}:\n{}",
        run.stderr
    );
}

#[test]
fn invalid_json_in_manifest_json() {
    let t = TestDir::new();
    let (config_name, mut entries) = legacy_parts("bad json\n");
    let text = format!("[{{\"Config\": \"{config_name}\", \"Layers\": [");
    entries.push(("manifest.json".into(), text.into_bytes()));
    write_entries(&t.path("bad.tar"), &entries);
    rejected(
        &t,
        &format!("docker-archive:{}", t.p("bad.tar")),
        1,
        &["bad.tar", "manifest.json", "not valid JSON"],
    );
}

#[test]
fn manifest_over_4_mib() {
    let t = TestDir::new();
    let limit = 4 * 1024 * 1024;
    // A well-formed manifest padded with whitespace past the limit.
    let layer = layer_tar("hello.txt", b"big manifest\n");
    let config = config_for(&[&layer]);
    let mut manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha256_hex(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{}", sha256_hex(&layer)), "size": layer.len()}],
    }))
    .unwrap();
    manifest.resize(limit + 100, b' ');
    let hex = sha256_hex(&manifest);
    let make_layout = |dir: &str, declared: usize| {
        let root = t.path(dir);
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        std::fs::write(
            root.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        for b in [&manifest, &config, &layer] {
            std::fs::write(root.join("blobs/sha256").join(sha256_hex(b)), b).unwrap();
        }
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{hex}"), "size": declared,
            "annotations": {"org.opencontainers.image.ref.name": "big"}}]});
        std::fs::write(root.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    };
    make_layout("big", manifest.len());
    rejected(&t, &format!("oci:{}", t.p("big")), 1, &[&hex, "limit"]);
    // index.json understates the size: the blob is still not read whole.
    make_layout("liar", 1000);
    rejected(&t, &format!("oci:{}", t.p("liar")), 1, &[&hex]);
}

#[test]
fn entry_with_dotdot_path() {
    let t = TestDir::new();
    let (config_name, entries) = legacy_parts("dotdot\n");
    let manifest = manifest_json(&config_name, &[&entries[1].0]);
    let mut raw: Vec<Raw> = entries.iter().map(|(n, b)| Raw::File(n, b)).collect();
    raw.push(Raw::File("../evil.txt", b"outside\n"));
    raw.push(Raw::File("manifest.json", &manifest));
    write_raw_tar(&t.path("bad.tar"), &raw);
    rejected(
        &t,
        &format!("docker-archive:{}", t.p("bad.tar")),
        1,
        &["bad.tar", "../evil.txt", "'..'"],
    );
}

#[test]
fn entry_with_absolute_path() {
    let t = TestDir::new();
    let (config_name, entries) = legacy_parts("absolute\n");
    let manifest = manifest_json(&config_name, &[&entries[1].0]);
    let mut raw: Vec<Raw> = entries.iter().map(|(n, b)| Raw::File(n, b)).collect();
    raw.push(Raw::File("/etc/evil.txt", b"outside\n"));
    raw.push(Raw::File("manifest.json", &manifest));
    write_raw_tar(&t.path("bad.tar"), &raw);
    rejected(
        &t,
        &format!("docker-archive:{}", t.p("bad.tar")),
        1,
        &["bad.tar", "/etc/evil.txt", "absolute"],
    );
}

#[test]
fn symlink_leaving_the_archive() {
    let t = TestDir::new();
    for (name, target) in [("up.tar", "../../etc/passwd"), ("abs.tar", "/etc/passwd")] {
        let (config_name, entries) = legacy_parts("link\n");
        let layer = entries[1].0.clone();
        let manifest = manifest_json(&config_name, &[&layer]);
        write_raw_tar(
            &t.path(name),
            &[
                Raw::File(&entries[0].0, &entries[0].1),
                Raw::Symlink(&layer, target),
                Raw::File("manifest.json", &manifest),
            ],
        );
        rejected(
            &t,
            &format!("docker-archive:{}", t.p(name)),
            1,
            &[name, &layer, target, "outside"],
        );
    }
}

#[test]
fn symlink_loop() {
    let t = TestDir::new();
    let (config_name, entries) = legacy_parts("loop\n");
    let manifest = manifest_json(&config_name, &["a"]);
    write_raw_tar(
        &t.path("bad.tar"),
        &[
            Raw::File(&entries[0].0, &entries[0].1),
            Raw::Symlink("a", "b"),
            Raw::Symlink("b", "a"),
            Raw::File("manifest.json", &manifest),
        ],
    );
    rejected(
        &t,
        &format!("docker-archive:{}", t.p("bad.tar")),
        1,
        &["bad.tar", "loop", "\"a\""],
    );
}

#[test]
fn selector_matching_nothing() {
    let t = TestDir::new();
    let line = rejected(
        &t,
        &format!("{}:imgsync-fixture/hello:9.9", hello()),
        EXIT_NOT_FOUND,
        &[
            "imgsync-fixture/hello:9.9",
            "imgsync-fixture/hello:1.0",
            "imgsync-fixture/hello:2.0",
        ],
    );
    assert!(
        line.contains("hello.tar"),
        "the archive is not named: {line}"
    );
    rejected(
        &t,
        &format!("{}:@7", hello()),
        EXIT_NOT_FOUND,
        &["hello.tar", "@7", "2 image"],
    );
    // An OCI layout lists its names the same way.
    let src = format!("oci:{}:nope", t.p("layout"));
    let entries = t.entries();
    let layout = t.snapshot("layout");
    fails_once(
        t.imgsync(&["copy", &src, &format!("oci:{}", t.p("out"))]),
        EXIT_NOT_FOUND,
        &[
            "nope",
            "imgsync-fixture/hello:1.0",
            "imgsync-fixture/hello:2.0",
        ],
    );
    assert_eq!(t.entries(), entries);
    assert_same("the source layout", &layout, &t.snapshot("layout"));
}

#[test]
fn destination_not_writable() {
    // Tests run as root, where mode bits do not stop writes: the parent of
    // each destination is a regular file instead.
    let t = TestDir::new();
    std::fs::write(t.path("afile"), b"a regular file\n").unwrap();
    let entries = t.entries();
    for dest in [
        format!("docker-archive:{}", t.p("afile/out.tar")),
        format!("oci-archive:{}", t.p("afile/out.tar")),
        format!("oci:{}", t.p("afile/out")),
    ] {
        fails_once(t.imgsync(&["copy", &hello(), &dest]), 1, &[&t.p("afile")]);
        assert_eq!(t.entries(), entries, "copy to {dest} left files behind");
        assert_eq!(std::fs::read(t.path("afile")).unwrap(), b"a regular file\n");
    }
}

#[test]
fn truncated_gzip_archive() {
    let t = TestDir::new();
    let layer = layer_tar("hello.txt", &b"compressed archive\n".repeat(2000));
    legacy_archive(&t.path("full.tar"), "bad/image:1", &[&layer]);
    let plain = std::fs::read(t.path("full.tar")).unwrap();
    std::fs::remove_file(t.path("full.tar")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::write(t.path("cut.tar.gz"), &gz[..gz.len() / 2]).unwrap();
    rejected(
        &t,
        &format!("docker-archive:{}", t.p("cut.tar.gz")),
        1,
        &["cut.tar.gz", "truncated"],
    );
}

#[test]
fn multi_image_archive_into_single_name() {
    let t = TestDir::new();
    let entries = t.entries();
    for dest in [
        format!("oci:{}:one", t.p("l")),
        format!("docker-archive:{}:one:1", t.p("one.tar")),
    ] {
        fails_once(
            t.imgsync(&["copy", &hello(), &dest]),
            2,
            &["2 images", &dest],
        );
        assert_eq!(t.entries(), entries, "copy to {dest} left files behind");
    }
    // Selecting one image on the source makes the same copy valid.
    t.imgsync(&[
        "copy",
        &format!("{}:imgsync-fixture/hello:1.0", hello()),
        &format!("oci:{}:one", t.p("l")),
    ])
    .ok();
}

#[test]
fn valid_archive_is_accepted() {
    // The builders above make valid archives when nothing is broken, so the
    // failures are caused by the one defect each test adds.
    let t = TestDir::new();
    let layer = layer_tar("hello.txt", b"fine\n");
    let src = valid_archive(&t, "ok.tar", &[&layer]);
    t.imgsync(&["copy", &src, &format!("oci:{}", t.p("out"))])
        .ok();
    let (config_name, mut entries) = legacy_parts("fine too\n");
    let first = entries[1].0.clone();
    entries.push((
        "manifest.json".into(),
        manifest_json(&config_name, &[&first]),
    ));
    let raw: Vec<Raw> = entries.iter().map(|(n, b)| Raw::File(n, b)).collect();
    write_raw_tar(&t.path("raw.tar"), &raw);
    t.imgsync(&[
        "copy",
        &format!("docker-archive:{}", t.p("raw.tar")),
        &format!("oci:{}", t.p("out")),
    ])
    .ok();
    t.imgsync(&["verify", &format!("oci:{}", t.p("out"))]).ok();
}
