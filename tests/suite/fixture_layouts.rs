//! OCI image layouts built at test time in the shapes other tools write:
//! several names on shared and nested manifests, duplicate and missing
//! names, `index.json` files without blobs, descriptors whose media type
//! disagrees with their blob, a Helm chart, and a referrers-heavy
//! repository in the way buildx and OCI 1.1 tools lay it out. Each builder
//! returns the names and digests a correct reader must report.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::fixture_archives::{digest, gzip, image_config, layer_of};
use super::fixture_checks::REF_NAME;
use super::harness::put_blob;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The media type of a descriptor itself: wrong for a manifest, yet some
/// writers put it on `index.json` entries.
pub const DESCRIPTOR: &str = "application/vnd.oci.descriptor.v1+json";

/// A layout directory being built.
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    /// A new layout with its `oci-layout` file written as `marker`.
    pub fn new(root: &Path, marker: &str) -> Layout {
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        std::fs::write(root.join("oci-layout"), marker).unwrap();
        Layout {
            root: root.to_path_buf(),
        }
    }

    /// Stores a blob; returns its descriptor with `media_type`.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        put_blob(&self.root, media_type, bytes)
    }

    /// Stores a JSON document; returns its descriptor.
    pub fn json(&self, media_type: &str, doc: &Value) -> Value {
        self.blob(media_type, &serde_json::to_vec(doc).unwrap())
    }

    /// Stores a one-layer image; returns its manifest's descriptor. The
    /// manifest's own `mediaType` field is `manifest_type`, absent when
    /// `None`; `docker` gives the config and gzip layer Docker media types
    /// instead of OCI ones.
    pub fn image(&self, text: &str, manifest_type: Option<&str>, docker: bool) -> Value {
        let layer = layer_of(&[("file.txt", text)]);
        let config = image_config("amd64", "linux", "1970-01-01T00:00:00Z", &[&layer]);
        let (config_type, layer_type) = if docker {
            (
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        } else {
            (OCI_CONFIG, "application/vnd.oci.image.layer.v1.tar+gzip")
        };
        let mut manifest = json!({"schemaVersion": 2,
            "config": self.blob(config_type, &config),
            "layers": [self.blob(layer_type, &gzip(&layer))]});
        if let Some(t) = manifest_type {
            manifest["mediaType"] = json!(t);
        }
        self.json(manifest_type.unwrap_or(OCI_MANIFEST), &manifest)
    }

    /// Writes `index.json` listing `entries`, with a top-level `mediaType`
    /// only when `with_media_type`.
    pub fn index(&self, entries: &[Value], with_media_type: bool) {
        write_index(&self.root, entries, with_media_type);
    }
}

pub fn write_index(root: &Path, entries: &[Value], with_media_type: bool) {
    let mut index = json!({"schemaVersion": 2, "manifests": entries});
    if with_media_type {
        index["mediaType"] = json!(OCI_INDEX);
    }
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(
        root.join("index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
}

/// `desc` with a ref name (and any other annotations already on it).
pub fn named(mut desc: Value, name: &str) -> Value {
    desc["annotations"][REF_NAME] = json!(name);
    desc
}

/// `desc` with its media type replaced.
pub fn typed(mut desc: Value, media_type: &str) -> Value {
    desc["mediaType"] = json!(media_type);
    desc
}

pub fn hex(desc: &Value) -> String {
    desc["digest"].as_str().unwrap()[7..].to_string()
}

/// What `several_names` built.
pub struct SeveralNames {
    /// The one-manifest name whose layer is placeholder text.
    pub placeholder_ref: &'static str,
    pub placeholder_layer: String,
    /// The name whose config descriptor claims one byte more than the blob.
    pub mis_sized_ref: &'static str,
    pub mis_sized_manifest: String,
    pub mis_sized_config: String,
    pub declared_size: usize,
    pub actual_size: usize,
}

/// Seven names (containers/image `multiple_images`): two on one nested
/// index (linux/amd64 and linux/386), two on one manifest, configs shared
/// between manifests, `index.json` without a top-level `mediaType`. Every
/// blob hashes to its name, but the layers are placeholder text under a
/// gzip media type, and one manifest declares its config one byte larger
/// than it is.
pub fn several_names(root: &Path) -> SeveralNames {
    let l = Layout::new(root, r#"{"imageLayoutVersion": "1.0.0"}"#);
    let config_a = l.blob(OCI_CONFIG, br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]}}"#);
    let config_b = l.blob(OCI_CONFIG, br#"{"architecture":"386","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"]}}"#);
    let manifest = |config: &Value, n: u32| {
        let layer = l.blob(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            format!("placeholder layer #{n}\n").as_bytes(),
        );
        let doc = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": config, "layers": [layer.clone()]});
        (l.json(OCI_MANIFEST, &doc), layer)
    };
    let (current, _) = manifest(&config_a, 1);
    let (other_arch, _) = manifest(&config_b, 2);
    let (older, older_layer) = manifest(&config_b, 3);
    let (oldest_amd64, _) = manifest(&config_a, 4);
    let mut wrong = config_a.clone();
    let actual = config_a["size"].as_u64().unwrap() as usize;
    wrong["size"] = json!(actual + 1);
    let (mis_sized, _) = manifest(&wrong, 5);
    let platform = |d: &Value, arch: &str| {
        let mut d = d.clone();
        d["platform"] = json!({"architecture": arch, "os": "linux"});
        d
    };
    let nested = l.json(
        OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [platform(&current, "amd64"), platform(&other_arch, "386")]}),
    );
    let old_nested = l.json(
        OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [platform(&oldest_amd64, "amd64"), platform(&other_arch, "386")]}),
    );
    l.index(
        &[
            named(nested.clone(), "latest"),
            named(nested, "3.18.3"),
            named(current.clone(), "3"),
            named(current, "3.18"),
            named(older, "3.17.5"),
            named(old_nested, "3.16.7"),
            named(mis_sized.clone(), "1.0.0"),
        ],
        false,
    );
    SeveralNames {
        placeholder_ref: "3.17.5",
        placeholder_layer: older_layer["digest"].as_str().unwrap().to_string(),
        mis_sized_ref: "1.0.0",
        mis_sized_manifest: mis_sized["digest"].as_str().unwrap().to_string(),
        mis_sized_config: config_a["digest"].as_str().unwrap().to_string(),
        declared_size: actual + 1,
        actual_size: actual,
    }
}

/// Two different manifests under the same name (containers/image
/// `two_identical_references`). Returns their digests in `index.json` order.
pub fn duplicate_name(root: &Path, name: &str) -> [String; 2] {
    let l = Layout::new(root, r#"{"imageLayoutVersion": "1.0.0"}"#);
    let a = l.image("first\n", Some(OCI_MANIFEST), false);
    let b = l.image("second\n", Some(OCI_MANIFEST), false);
    l.index(&[named(a.clone(), name), named(b.clone(), name)], false);
    [a, b].map(|d| d["digest"].as_str().unwrap().to_string())
}

fn fake(c: char, media_type: &str, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": format!("sha256:{}", c.to_string().repeat(64)), "size": size})
}

/// `index.json` files alone, no `oci-layout` and no blobs (containers/image
/// `name_lookups`, `two_images_manifest`, and the skopeo-written `manifest`
/// without a top-level `mediaType`). Returns the directories.
pub fn index_only(dir: &Path) -> [PathBuf; 3] {
    let lookups = dir.join("lookups");
    write_index(
        &lookups,
        &[
            named(fake('a', OCI_INDEX, 1), "a"),
            named(fake('b', OCI_MANIFEST, 2), "b"),
            named(fake('c', DOCKER_LIST, 3), "c"),
            named(fake('d', DOCKER_MANIFEST, 4), "d"),
            named(fake('e', "x-completely-unknown", 6), "invalid-mime"),
        ],
        true,
    );
    let two = dir.join("two-untagged");
    let mut ppc = fake('1', OCI_MANIFEST, 7143);
    ppc["platform"] = json!({"architecture": "ppc64le", "os": "linux"});
    let mut amd = fake('2', OCI_MANIFEST, 7682);
    amd["platform"] = json!({"architecture": "amd64", "os": "linux", "features": ["sse4"]});
    write_index(&two, &[ppc, amd], true);
    let plain = dir.join("no-media-type");
    let mut one = named(fake('8', OCI_MANIFEST, 496), "v0.1.1");
    one["platform"] = json!({"architecture": "amd64", "os": "linux"});
    write_index(&plain, &[one], false);
    [lookups, two, plain]
}

/// Names `1`…`4` (ggcr `test_index`): an OCI manifest entry whose blob is a
/// Docker schema2 manifest; an entry typed as a descriptor over another
/// Docker manifest; a nested OCI index; a Docker manifest list entry whose
/// blob is an OCI index without `mediaType`. `index.json` has no top-level
/// `mediaType` and a pretty-printed `oci-layout`. Without
/// `descriptor_entry`, name `2` is left out (ggcr `test_gc_index`).
pub fn mixed_media_types(root: &Path, descriptor_entry: bool) {
    let l = Layout::new(root, "{\n    \"imageLayoutVersion\": \"1.0.0\"\n}\n");
    let docker = l.image("docker one\n", Some(DOCKER_MANIFEST), true);
    let child = named(typed(docker.clone(), OCI_MANIFEST), "1");
    let nested = l.json(
        OCI_INDEX,
        &json!({"schemaVersion": 2, "manifests": [child.clone()]}),
    );
    let list = l.json(
        OCI_INDEX,
        &json!({"schemaVersion": 2, "manifests": [named(typed(docker, OCI_MANIFEST), "4")]}),
    );
    let mut entries = vec![child];
    if descriptor_entry {
        let other = l.image("docker two\n", Some(DOCKER_MANIFEST), true);
        entries.push(named(typed(other, DESCRIPTOR), "2"));
    }
    entries.push(named(nested, "3"));
    entries.push(named(typed(list, DOCKER_LIST), "4"));
    l.index(&entries, false);
}

/// One untagged OCI manifest without a `mediaType` field and a compact
/// `oci-layout` (ggcr `test_index_one_image`). Returns its digest.
pub fn one_untagged(root: &Path) -> String {
    let l = Layout::new(root, r#"{"imageLayoutVersion": "1.0.0"}"#);
    let m = l.image("only image\n", None, false);
    l.index(std::slice::from_ref(&m), false);
    m["digest"].as_str().unwrap().to_string()
}

/// A Helm chart (ggcr `test_index_media_type`): a manifest without
/// `mediaType`, config `application/vnd.cncf.helm.config.v1+json` holding
/// `{}\n`, one `application/tar+gzip` layer. Returns its digest.
pub fn helm_chart(root: &Path) -> String {
    let l = Layout::new(root, r#"{"imageLayoutVersion": "1.0.0"}"#);
    let chart = gzip(&layer_of(&[("chart/Chart.yaml", "name: fixture\n")]));
    let m = l.json(
        OCI_MANIFEST,
        &json!({"schemaVersion": 2,
            "config": l.blob("application/vnd.cncf.helm.config.v1+json", b"{}\n"),
            "layers": [l.blob("application/tar+gzip", &chart)]}),
    );
    l.index(std::slice::from_ref(&m), false);
    m["digest"].as_str().unwrap().to_string()
}

/// An `index.json` entry typed as a descriptor whose blob is not there, in a
/// layout with no blobs at all (ggcr `test_gc_image_unknown_mediatype`).
/// Returns the missing digest.
pub fn descriptor_without_blob(root: &Path) -> String {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(
        root.join("oci-layout"),
        "{\n    \"imageLayoutVersion\": \"1.0.0\"\n}\n",
    )
    .unwrap();
    let absent = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
    let entry = json!({"mediaType": DESCRIPTOR, "size": absent.len(), "digest": digest(absent)});
    write_index(root, std::slice::from_ref(&entry), false);
    entry["digest"].as_str().unwrap().to_string()
}
