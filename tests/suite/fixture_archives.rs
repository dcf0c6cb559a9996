//! Docker archives built at test time in the shapes other tools write:
//! legacy `docker save` (Docker ≤ 24) with v1 layer directories, symlinked
//! layers and several images; crane/ggcr tarballs with compressed and
//! foreign layers; Docker 25+ archives that are also an OCI layout; the
//! pre-1.10 shape without `manifest.json`; whole-archive compression; bare
//! layer tars. Each builder returns what a correct reader must report, so
//! the tests compare against facts of the file, not remembered digests.
//!
//! Everything is made from small text layers: no binary is stored.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use super::harness::sha256_hex;

/// A tar assembled entry by entry. Names are written into the header as
/// given (the `tar` crate's path handling would drop a leading `./`, which
/// some writers put in front of every name).
#[derive(Default)]
pub struct TarBuild {
    entries: Vec<(String, TarKind)>,
}

enum TarKind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
}

impl TarBuild {
    pub fn file(&mut self, name: &str, bytes: &[u8]) -> &mut TarBuild {
        self.entries
            .push((name.to_string(), TarKind::File(bytes.to_vec())));
        self
    }

    pub fn dir(&mut self, name: &str) -> &mut TarBuild {
        self.entries.push((name.to_string(), TarKind::Dir));
        self
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut TarBuild {
        self.entries
            .push((name.to_string(), TarKind::Symlink(target.to_string())));
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind) in &self.entries {
            let mut h = tar::Header::new_gnu();
            let data: &[u8] = match kind {
                TarKind::File(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    d
                }
                TarKind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    &[]
                }
                TarKind::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
                    &[]
                }
            };
            assert!(name.len() < 100, "name too long for a plain header: {name}");
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }
}

/// A layer tar holding the given text files.
pub fn layer_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut t = TarBuild::default();
    for (name, text) in files {
        t.file(name, text.as_bytes());
    }
    t.bytes()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// An image config naming `layers` (uncompressed) as its DiffIDs.
pub fn image_config(arch: &str, os: &str, created: &str, layers: &[&[u8]]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    serde_json::to_vec(&json!({
        "architecture": arch, "os": os, "created": created,
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layers.iter().map(|_| json!({"created_by": "fixture"})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// What a reader must report for one image of a built archive.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    /// `sha256:` digest of the config file.
    pub config: String,
}

/// A `docker save` archive of Docker ≤ 24: `<config hex>.json`, one
/// `<v1 id>/{VERSION,json,layer.tar}` directory per layer and image,
/// `repositories` and `manifest.json`. A layer an earlier image already
/// stored is written, as Docker does, as a symbolic link
/// `../<earlier v1 id>/layer.tar` under the new image's own v1 id.
#[derive(Default)]
pub struct LegacyArchive {
    tar: TarBuild,
    manifest: Vec<Value>,
    repositories: serde_json::Map<String, Value>,
    stored: HashMap<String, String>,
}

impl LegacyArchive {
    /// Adds an image with the `RepoTags` value given as is (a list, a list
    /// of tagless names, or `null`) and an optional `Parent`.
    pub fn image(
        &mut self,
        repo_tags: Value,
        layers: &[&[u8]],
        parent: Option<&str>,
    ) -> BuiltImage {
        let config = image_config("amd64", "linux", "1970-01-01T00:00:00Z", layers);
        let config_hex = sha256_hex(&config);
        self.tar.file(&format!("{config_hex}.json"), &config);
        let mut paths = Vec::new();
        let mut v1_parent: Option<String> = None;
        for (i, layer) in layers.iter().enumerate() {
            // A v1 id belongs to one image's chain, so a shared layer gets
            // a new directory in each image.
            let v1 = sha256_hex(format!("{config_hex}/{i}").as_bytes());
            self.tar.dir(&format!("{v1}/"));
            self.tar.file(&format!("{v1}/VERSION"), b"1.0");
            let mut v1_json = json!({"id": v1, "created": "1970-01-01T00:00:00Z"});
            if let Some(p) = &v1_parent {
                v1_json["parent"] = json!(p);
            }
            self.tar.file(
                &format!("{v1}/json"),
                &serde_json::to_vec(&v1_json).unwrap(),
            );
            let path = format!("{v1}/layer.tar");
            match self.stored.get(&digest(layer)) {
                Some(first) => {
                    self.tar.symlink(&path, &format!("../{first}"));
                }
                None => {
                    self.tar.file(&path, layer);
                    self.stored.insert(digest(layer), path.clone());
                }
            }
            paths.push(path);
            v1_parent = Some(v1);
        }
        let mut entry =
            json!({"Config": format!("{config_hex}.json"), "RepoTags": repo_tags, "Layers": paths});
        if let Some(p) = parent {
            entry["Parent"] = json!(p);
        }
        for tag in repo_tags.as_array().into_iter().flatten() {
            let tag = tag.as_str().unwrap();
            let (repo, name) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
            let repo = self
                .repositories
                .entry(repo.to_string())
                .or_insert_with(|| json!({}));
            repo[name] = json!(v1_parent.clone().unwrap_or_default());
        }
        self.manifest.push(entry);
        BuiltImage {
            config: format!("sha256:{config_hex}"),
        }
    }

    /// Adds `LayerSources` to the last image added.
    pub fn layer_sources(&mut self, sources: Value) {
        self.manifest.last_mut().unwrap()["LayerSources"] = sources;
    }

    /// The archive's bytes, `manifest.json` written by `render`.
    pub fn bytes_with(&mut self, render: impl Fn(&Value) -> String) -> Vec<u8> {
        let repositories = serde_json::to_vec(&self.repositories).unwrap();
        self.tar.file("repositories", &repositories);
        self.tar
            .file("manifest.json", render(&json!(self.manifest)).as_bytes());
        self.tar.bytes()
    }

    pub fn write(mut self, path: &Path) {
        std::fs::write(path, self.bytes_with(|m| m.to_string())).unwrap();
    }
}

/// One tagged image of one small layer (containers/image `almostempty`).
pub fn almost_empty(path: &Path, tag: &str) -> BuiltImage {
    let mut a = LegacyArchive::default();
    let image = a.image(json!([tag]), &[&layer_of(&[("etc/empty", "")])], None);
    a.write(path);
    image
}

/// Three layers, the top one deleting a file of a lower one with a `.wh.`
/// whiteout (ggcr `whiteout_image`).
pub fn whiteout_image(path: &Path, tag: &str) -> BuiltImage {
    let base = layer_of(&[("foo.txt", "foo\n"), ("bar.txt", "bar\n")]);
    let middle = layer_of(&[("baz.txt", "baz\n")]);
    let upper = layer_of(&[(".wh.foo.txt", "")]);
    let mut a = LegacyArchive::default();
    let image = a.image(json!([tag]), &[&base, &middle, &upper], None);
    a.write(path);
    image
}

/// Two images, the second built on the first: its base layer is a link to
/// the first image's `layer.tar`, it names the first as `Parent`, both are
/// tags of one repository, and the layers' own entries start with `./`
/// (ggcr `test_link`). Returns the two images in `manifest.json` order.
pub fn linked_layers(path: &Path, repo: &str) -> [BuiltImage; 2] {
    let base = TarBuild::default()
        .dir("./")
        .file("./base.txt", b"base\n")
        .bytes();
    let top = layer_of(&[("./top.txt", "top\n")]);
    let mut a = LegacyArchive::default();
    let first = a.image(json!([format!("{repo}:one")]), &[&base], None);
    let second = a.image(
        json!([format!("{repo}:three")]),
        &[&base, &top],
        Some(&first.config),
    );
    a.write(path);
    [first, second]
}

/// Two images whose `RepoTags` hold names without a tag, the first with a
/// `LayerSources` entry describing its layer as the gzip blob a registry
/// served (while the file in the archive is the uncompressed layer), and
/// `manifest.json` written with irregular whitespace (ggcr `test_bundle`).
pub fn tagless_bundle(path: &Path, names: [&str; 2]) -> [BuiltImage; 2] {
    let one = layer_of(&[("one.txt", "first image\n")]);
    let two = layer_of(&[("two.txt", "second image\n")]);
    let mut a = LegacyArchive::default();
    let first = a.image(json!([names[0]]), &[&one], None);
    let gz = gzip(&one);
    a.layer_sources(json!({ digest(&one): {
        "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "size": gz.len(), "digest": digest(&gz)}}));
    let second = a.image(json!([names[1]]), &[&two], None);
    let bytes = a.bytes_with(|m| {
        serde_json::to_string_pretty(m)
            .unwrap()
            .replace(": ", ":    ")
            .replace("\n  ", "\n \t ")
    });
    std::fs::write(path, bytes).unwrap();
    [first, second]
}

/// The whole archive compressed with gzip or zstd, as `docker save | gzip`
/// writes it.
pub fn compress_file(plain: &Path, out: &Path, zstd: bool) {
    let bytes = std::fs::read(plain).unwrap();
    let packed = if zstd {
        zstd::encode_all(&bytes[..], 3).unwrap()
    } else {
        gzip(&bytes)
    };
    std::fs::write(out, packed).unwrap();
}

/// A crane/ggcr tarball: the config under the name `sha256:<hex>`, layers
/// stored gzip-compressed as `<compressed hex>.tar.gz`, no `repositories`,
/// and the second layer marked foreign in `LayerSources` (with `urls`). The
/// config has empty platform fields and the zero time. With `sparse`, the
/// foreign layer's file is left out (ggcr `foreign`, `sparse_foreign`).
/// Returns the image and the two compressed layers.
pub fn crane_foreign(path: &Path, tag: &str, sparse: bool) -> (BuiltImage, [Vec<u8>; 2]) {
    let plain = [
        layer_of(&[("app.txt", "distributable\n")]),
        layer_of(&[("windows/base.txt", "foreign base layer\n")]),
    ];
    let config = image_config("", "", "0001-01-01T00:00:00Z", &[&plain[0], &plain[1]]);
    let config_name = digest(&config);
    let gz = [gzip(&plain[0]), gzip(&plain[1])];
    let names: Vec<String> = gz
        .iter()
        .map(|g| format!("{}.tar.gz", sha256_hex(g)))
        .collect();
    let manifest = json!([{
        "Config": config_name, "RepoTags": [tag], "Layers": names,
        "LayerSources": { digest(&plain[1]): {
            "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "size": gz[1].len(), "digest": digest(&gz[1]),
            "urls": ["https://foreign.example/layer"]}}}]);
    let mut t = TarBuild::default();
    t.file(&config_name, &config);
    t.file(&names[0], &gz[0]);
    if !sparse {
        t.file(&names[1], &gz[1]);
    }
    t.file("manifest.json", manifest.to_string().as_bytes());
    t.write(path);
    let image = BuiltImage {
        config: config_name,
    };
    (image, gz)
}

/// What a Docker 25+ archive holds besides the layer.
pub struct Docker25 {
    pub config: String,
    pub manifest: String,
    /// The layer's path in the archive (`blobs/sha256/<hex>`).
    pub layer_path: String,
}

/// A Docker 25+ `docker save`: an OCI layout (`oci-layout`, `index.json`,
/// `blobs/sha256/`) that also carries the legacy `manifest.json` with
/// `LayerSources` for a plain layer, a config descriptor with a `platform`
/// field and an unreferenced v1 layer-JSON blob. `tag: None` is an untagged
/// image as Docker 25.0.0–25.0.2 saved it: `"RepoTags": null` and
/// `"manifests": null` in `index.json`. `with_layer: false` leaves the layer
/// blob out, as the ggcr hello-world metadata does.
pub fn docker25(path: &Path, tag: Option<&str>, with_layer: bool) -> Docker25 {
    let layer = layer_of(&[("hello", "Hello from a Docker 25 archive\n")]);
    let config = image_config("arm64", "linux", "2024-01-01T00:00:00Z", &[&layer]);
    let layer_desc = json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": digest(&layer), "size": layer.len()});
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(&config), "size": config.len(),
            "platform": {"architecture": "arm64", "os": "linux"}},
        "layers": [layer_desc]}))
    .unwrap();
    let legacy_json = br#"{"id":"0","created":"2024-01-01T00:00:00Z"}"#;
    let blob = |b: &[u8]| format!("blobs/sha256/{}", sha256_hex(b));
    let manifests = match tag {
        Some(tag) => json!([{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest), "size": manifest.len(),
            "annotations": {"io.containerd.image.name": format!("docker.io/library/{tag}"),
                "org.opencontainers.image.ref.name": tag.rsplit_once(':').map_or("latest", |(_, t)| t)}}]),
        None => Value::Null,
    };
    let index = json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    let docker_manifest = json!([{"Config": blob(&config),
        "RepoTags": tag.map(|t| json!([t])).unwrap_or(Value::Null),
        "Layers": [blob(&layer)],
        "LayerSources": {digest(&layer): layer_desc}}]);
    let mut t = TarBuild::default();
    t.dir("blobs/").dir("blobs/sha256/");
    if with_layer {
        t.file(&blob(&layer), &layer);
    }
    t.file(&blob(&manifest), &manifest)
        .file(&blob(legacy_json), legacy_json)
        .file(&blob(&config), &config)
        .file("index.json", index.to_string().as_bytes())
        .file("manifest.json", docker_manifest.to_string().as_bytes())
        .file("oci-layout", br#"{"imageLayoutVersion": "1.0.0"}"#);
    t.write(path);
    Docker25 {
        config: digest(&config),
        manifest: digest(&manifest),
        layer_path: blob(&layer),
    }
}

/// `manifest.json` holding `null` (ggcr `null_manifest`).
pub fn null_manifest(path: &Path) {
    TarBuild::default()
        .file("manifest.json", b"null")
        .write(path);
}

/// The pre-1.10 shape: `repositories` and `<v1 id>/{VERSION,json,layer.tar}`
/// directories chained by `parent`, no `manifest.json`. With
/// `zero_byte_layer`, one `layer.tar` is empty (not even a tar end marker),
/// as in moby's `emptyLayer`; otherwise a config file sits beside them, as
/// in ggcr's `no_manifest`.
pub fn pre_1_10(path: &Path, zero_byte_layer: bool) {
    let layers = [layer_of(&[("etc/os-release", "ID=fixture\n")]), Vec::new()];
    let count = if zero_byte_layer { 2 } else { 1 };
    let mut t = TarBuild::default();
    let mut parent: Option<String> = None;
    for (i, layer) in layers.iter().take(count).enumerate() {
        let id = sha256_hex(format!("v1 layer {i}").as_bytes());
        let mut v1 = json!({"id": id, "architecture": "x86_64", "os": "linux"});
        if let Some(p) = &parent {
            v1["parent"] = json!(p);
        }
        t.file(&format!("{id}/VERSION"), b"1.0")
            .file(&format!("{id}/json"), v1.to_string().as_bytes())
            .file(&format!("{id}/layer.tar"), layer);
        parent = Some(id);
    }
    if !zero_byte_layer {
        let config = image_config("amd64", "linux", "1970-01-01T00:00:00Z", &[&layers[0]]);
        t.file(&format!("{}.json", sha256_hex(&config)), &config);
    }
    let top = parent.unwrap();
    t.file(
        "repositories",
        json!({"fixture/old": {"v1": top}}).to_string().as_bytes(),
    );
    t.write(path);
}

/// Bare layer tars, not image archives: a plain one, and one with a file
/// whiteout and an opaque-directory whiteout (regclient `layers/`).
pub fn bare_layers(plain: &Path, whiteouts: &Path) {
    std::fs::write(
        plain,
        layer_of(&[
            ("layer1.txt", "1\n"),
            ("layer2.txt", "2\n"),
            ("dir/layer3.txt", "3\n"),
        ]),
    )
    .unwrap();
    std::fs::write(
        whiteouts,
        layer_of(&[
            (".wh.layer2.txt", ""),
            ("exdir/.wh..wh..opq", ""),
            ("exdir/new.txt", "new\n"),
        ]),
    )
    .unwrap();
}
