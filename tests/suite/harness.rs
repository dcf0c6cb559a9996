//! Shared test setup: a temp dir per test, a command builder for the
//! binary, helpers for reading what imgsync wrote, and the external tools.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("imgsync-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn p(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    /// Runs `imgsync` with `args` in the temp dir.
    pub fn imgsync(&self, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_imgsync"))
            .args(args)
            .current_dir(self.dir.path())
            .env("IMGSYNC_TMPDIR", self.dir.path())
            .output()
            .expect("run imgsync");
        Run::from(out, format!("imgsync {}", args.join(" ")))
    }

    /// Copies a file or directory into the temp dir (peer fixtures are
    /// read-only and must not be written beside).
    pub fn copy_in(&self, from: &Path, name: &str) -> PathBuf {
        let to = self.path(name);
        let status = Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(&to)
            .status()
            .expect("cp");
        assert!(status.success());
        to
    }

    /// Lists every file under `rel` with its size, for "unchanged" checks.
    pub fn snapshot(&self, rel: &str) -> Vec<(String, Vec<u8>)> {
        let root = self.path(rel);
        let mut out = Vec::new();
        if root.is_file() {
            out.push((rel.to_string(), std::fs::read(&root).unwrap()));
            return out;
        }
        fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, Vec<u8>)>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            let mut entries: Vec<_> = rd.map(|e| e.unwrap().path()).collect();
            entries.sort();
            for p in entries {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                if p.is_dir() {
                    out.push((rel + "/", Vec::new()));
                    walk(&p, base, out);
                } else {
                    out.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
        walk(&root, &root, &mut out);
        out
    }

    /// Names in the temp dir, to check nothing was left behind.
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub what: String,
}

impl Run {
    fn from(out: Output, what: String) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            what,
        }
    }

    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{} failed:\n{}", self.what, self.stderr);
        self
    }

    /// Asserts a failure with exit code `code` and an error line containing
    /// every one of `needles`; returns the error line.
    pub fn fails(self, code: i32, needles: &[&str]) -> String {
        assert_eq!(
            self.code, code,
            "{}: expected exit {code}, got {}:\n{}",
            self.what, self.code, self.stderr
        );
        let line = self
            .stderr
            .lines()
            .find(|l| l.starts_with("imgsync: error:"))
            .unwrap_or_else(|| panic!("{}: no error line in:\n{}", self.what, self.stderr))
            .to_string();
        for n in needles {
            assert!(
                line.contains(n),
                "{}: error line lacks {n:?}: {line}",
                self.what
            );
        }
        line
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: stdout is not JSON ({e}): {}",
                self.what,
                self.stdout_str()
            )
        })
    }
}

/// Runs an external tool, asserting success, returning stdout.
pub fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e}; the README's test command installs it")
        });
    assert!(
        out.status.success(),
        "{program} {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs an external tool, returning (success, stdout+stderr).
pub fn tool_status(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().expect("run tool");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    project_root().join("fixtures").join(name)
}

/// Where the third-party corpus is looked for: beside the project, as CI
/// checks it out. A fresh clone has no such directory.
const PEER_CORPUS: &str = "../shared/peer-fixtures";

/// The third-party corpus (read-only), when it is checked out beside the
/// project.
pub struct PeerCorpus {
    root: PathBuf,
}

impl PeerCorpus {
    /// A file or directory of the corpus. Once the corpus is present, a
    /// missing entry is a failure: the corpus and these tests drifted apart.
    pub fn path(&self, rel: &str) -> PathBuf {
        let p = self.root.join(rel);
        assert!(p.exists(), "peer fixture {} is missing", p.display());
        p
    }
}

/// The corpus, or `None` when it is absent; each test that reads it starts
/// with `let Some(corpus) = peer_corpus() else { return };`. The shapes it
/// exercises are also built by `fixture_archives` and `fixture_layouts`, so
/// a fresh clone still tests them; the first skip says so on the terminal,
/// once per run.
pub fn peer_corpus() -> Option<PeerCorpus> {
    let root = project_root().join(PEER_CORPUS);
    if root.is_dir() {
        return Some(PeerCorpus { root });
    }
    static SKIP_NOTICE: std::sync::Once = std::sync::Once::new();
    SKIP_NOTICE.call_once(|| {
        // Written to the process's stderr handle, not with `eprintln!`,
        // which the test harness captures and shows only for failures.
        let line = format!(
            "peer corpus {PEER_CORPUS} absent: {} corpus tests skipped; own fixtures cover the same shapes\n",
            corpus_test_count()
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    });
    None
}

/// How many tests read the corpus: each begins with the one
/// `peer_corpus()` guard, counted in the files that hold them so the
/// notice cannot fall out of step with the suite.
fn corpus_test_count() -> usize {
    let guard = concat!("= peer_corpus", "() else");
    [
        include_str!("peer_fixtures.rs"),
        include_str!("regressions.rs"),
        include_str!("bad_input.rs"),
    ]
    .iter()
    .map(|source| source.matches(guard).count())
    .sum()
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
    )
    .unwrap()
}

/// Reads one entry of a tar file.
pub fn tar_entry(tar: &Path, name: &str) -> Option<Vec<u8>> {
    let f = std::fs::File::open(tar).unwrap();
    let mut a = tar::Archive::new(f);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if p == name {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            return Some(v);
        }
    }
    None
}

/// Names of the entries of a tar file.
pub fn tar_names(tar: &Path) -> Vec<String> {
    let f = std::fs::File::open(tar).unwrap();
    let mut a = tar::Archive::new(f);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Writes a tar with the given (name, bytes) regular entries.
pub fn write_tar(path: &Path, entries: &[(&str, &[u8])]) {
    let f = std::fs::File::create(path).unwrap();
    let mut b = tar::Builder::new(f);
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.finish().unwrap();
}

/// A small valid layer tar holding one text file.
pub fn layer_tar(file: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, file, content).unwrap();
    b.into_inner().unwrap()
}

/// A docker image config for the given layers.
pub fn config_for(layers: &[&[u8]]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(l)))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "test"})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// Builds a legacy `docker save` archive from layers; returns the config
/// digest hex (the image ID).
pub fn legacy_archive(path: &Path, tag: &str, layers: &[&[u8]]) -> String {
    let config = config_for(layers);
    let id = sha256_hex(&config);
    let mut entries: Vec<(String, Vec<u8>)> = vec![(format!("{id}.json"), config)];
    let mut layer_paths = Vec::new();
    for l in layers {
        let p = format!("{}/layer.tar", sha256_hex(l));
        entries.push((p.clone(), l.to_vec()));
        layer_paths.push(p);
    }
    let manifest = serde_json::json!([{"Config": format!("{id}.json"), "RepoTags": [tag], "Layers": layer_paths}]);
    entries.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    write_tar(path, &refs);
    id
}

/// Is a docker daemon answering? Tests that need one fail without it: the
/// README's test command starts it.
pub fn require_docker() {
    let (ok, out) = tool_status("docker", &["version", "--format", "{{.Server.Version}}"]);
    assert!(
        ok,
        "no docker daemon answers ({out}); run the README's test command, which starts one"
    );
}

/// A tag unique to this test process and name.
pub fn unique(name: &str) -> String {
    format!("imgsync-test/{name}-{}", std::process::id())
}

impl TestDir {
    /// Runs `imgsync` with `input` on standard input.
    pub fn imgsync_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_imgsync"))
            .args(args)
            .current_dir(self.dir.path())
            .env("IMGSYNC_TMPDIR", self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run imgsync");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        Run::from(out, format!("imgsync {} < input", args.join(" ")))
    }
}

/// Writes a blob into a layout directory; returns its descriptor as JSON.
pub fn put_blob(layout: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let hex = sha256_hex(bytes);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&hex), bytes).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
}

/// Builds an OCI layout of `n` images from one (the fixture image
/// `hello.tar:@0`, each manifest told apart by an annotation), image `i`
/// named `name(i)`: a registry is seeded with many repositories or tags
/// by one `imgsync copy` of it.
pub fn many_images_layout(t: &TestDir, n: usize, name: impl Fn(usize) -> String) -> PathBuf {
    let layout = t.path("many-images");
    let hello = format!("docker-archive:{}:@0", fixture("hello.tar").display());
    t.imgsync(&[
        "copy",
        "-q",
        &hello,
        &format!("oci:{}:first", layout.display()),
    ])
    .ok();
    let index_path = layout.join("index.json");
    let mut index = read_json(&index_path);
    let first = index["manifests"][0].clone();
    let digest = first["digest"].as_str().unwrap().to_string();
    let manifest: Value = serde_json::from_slice(&layout_blob(&layout, &digest)).unwrap();
    let media_type = first["mediaType"].as_str().unwrap().to_string();
    let named: Vec<Value> = (0..n)
        .map(|i| {
            let mut m = manifest.clone();
            m["annotations"] = serde_json::json!({ "n": i.to_string() });
            let mut d = put_blob(&layout, &media_type, &serde_json::to_vec(&m).unwrap());
            d["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": name(i) });
            d
        })
        .collect();
    index["manifests"] = Value::Array(named);
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    layout
}

/// Builds an OCI layout holding one multi-platform image (an index of
/// linux/amd64, linux/arm64 and a buildkit-style attestation), named `tag`.
/// Returns the index digest.
pub fn multiarch_layout(layout: &Path, tag: &str) -> String {
    std::fs::create_dir_all(layout).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut entries = Vec::new();
    for (arch, text) in [("amd64", "x86 build\n"), ("arm64", "arm build\n")] {
        let layer = layer_tar("arch.txt", text.as_bytes());
        let mut cfg: Value = serde_json::from_slice(&config_for(&[&layer])).unwrap();
        cfg["architecture"] = Value::String(arch.into());
        let cfg = serde_json::to_vec(&cfg).unwrap();
        let config = put_blob(layout, "application/vnd.oci.image.config.v1+json", &cfg);
        let layer = put_blob(layout, "application/vnd.oci.image.layer.v1.tar", &layer);
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config, "layers": [layer]});
        let mut d = put_blob(
            layout,
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        );
        d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        entries.push(d);
    }
    let att = put_blob(layout, "application/vnd.oci.image.manifest.v1+json", br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}]}"#);
    put_blob(layout, "application/vnd.oci.empty.v1+json", b"{}");
    let mut att = att;
    att["platform"] = serde_json::json!({"architecture": "unknown", "os": "unknown"});
    att["annotations"] = serde_json::json!({"vnd.docker.reference.type": "attestation-manifest"});
    entries.push(att);
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
    let mut idx = put_blob(
        layout,
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    let digest = idx["digest"].as_str().unwrap().to_string();
    idx["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [idx]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    digest
}

/// `index.json` entries of a layout directory as (ref name, digest).
pub fn layout_refs(layout: &Path) -> Vec<(String, String)> {
    let idx = read_json(&layout.join("index.json"));
    idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                d["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Reads a blob of a layout directory by digest.
pub fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

/// Exit codes (README, "Exit codes").
pub const EXIT_NOT_FOUND: i32 = 4;
pub const EXIT_INTEGRITY: i32 = 5;

impl TestDir {
    /// Runs `imgsync` with extra environment variables.
    pub fn imgsync_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgsync"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("IMGSYNC_TMPDIR", self.dir.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run imgsync");
        Run::from(out, format!("imgsync {}", args.join(" ")))
    }
}

pub const EXIT_AUTH: i32 = 3;
pub const EXIT_NETWORK: i32 = 6;
