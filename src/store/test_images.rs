//! Small images built in code for unit tests: layer tars, gzip, configs
//! with DiffIDs, manifests and indexes, put into a [`MemoryStore`]; and a
//! checker that walks what a copy wrote and verifies every digest and
//! DiffID.

use std::io::{Read, Write};

use serde_json::{Value, json};

use super::memory::MemoryStore;
use super::{ImageName, ImageSource};
use crate::content::media_type::{self, Compression};
use crate::content::{Descriptor, Digest, ManifestView, RawManifest, Reference};

/// A layer: its tar, the gzip of it, and its DiffID.
#[derive(Clone)]
pub(crate) struct Layer {
    pub tar: Vec<u8>,
    pub gzip: Vec<u8>,
    pub diff_id: Digest,
}

impl Layer {
    /// A layer holding one file `name` with `content`.
    pub fn new(name: &str, content: &[u8]) -> Layer {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, content).expect("tar in memory");
        let tar = b.into_inner().expect("tar in memory");
        // Stored, not squeezed: sizes stay predictable (volume cutting)
        // and large test layers cost no compression time.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        gz.write_all(&tar).expect("gzip in memory");
        let gzip = gz.finish().expect("gzip in memory");
        Layer {
            diff_id: Digest::sha256_of(&tar),
            tar,
            gzip,
        }
    }

    /// A layer of `size` bytes that do not compress, from `seed`.
    pub fn noise(seed: u64, size: usize) -> Layer {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                // xorshift64: cheap bytes with no structure to compress.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Layer::new(&format!("noise-{seed}"), &bytes)
    }

    pub fn gzip_digest(&self) -> Digest {
        Digest::sha256_of(&self.gzip)
    }
}

/// The media-type family of a built image.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Oci,
    Docker,
}

/// An image put into a store.
#[derive(Clone)]
pub(crate) struct Built {
    pub root: Descriptor,
    pub config: Digest,
}

/// Puts a single-platform image of gzip layers into `store`.
pub(crate) fn image(store: &MemoryStore, layers: &[&Layer], platform: &str, f: Family) -> Built {
    let (os, arch) = platform.split_once('/').expect("os/arch");
    let config = json!({
        "architecture": arch,
        "os": os,
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
    });
    let config = serde_json::to_vec(&config).expect("JSON");
    let config_size = config.len() as u64;
    let config_digest = store.insert(config);
    let (manifest_mt, config_mt) = match f {
        Family::Oci => (media_type::OCI_MANIFEST, media_type::OCI_CONFIG),
        Family::Docker => (media_type::DOCKER_MANIFEST, media_type::DOCKER_CONFIG),
    };
    let layer_mt = media_type::layer_media_type(Compression::Gzip, false, f == Family::Docker);
    let mut descs = Vec::new();
    for l in layers {
        let size = l.gzip.len() as u64;
        let d = store.insert(l.gzip.clone());
        descs.push(Descriptor::new(layer_mt, d, size));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_mt,
        "config": Descriptor::new(config_mt, config_digest.clone(), config_size),
        "layers": descs,
    });
    let m = RawManifest::new(serde_json::to_vec(&manifest).expect("JSON"), manifest_mt);
    store.insert(m.bytes.clone());
    let mut root = m.descriptor();
    root.platform = Some(crate::content::Platform::parse(platform).expect("platform"));
    Built {
        root,
        config: config_digest,
    }
}

/// Puts an index of `children` (each carrying its platform) into `store`.
pub(crate) fn index(store: &MemoryStore, children: &[&Built], f: Family) -> Descriptor {
    let mt = match f {
        Family::Oci => media_type::OCI_INDEX,
        Family::Docker => media_type::DOCKER_LIST,
    };
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "manifests": children.iter().map(|c| c.root.clone()).collect::<Vec<_>>(),
    });
    let m = RawManifest::new(serde_json::to_vec(&doc).expect("JSON"), mt);
    store.insert(m.bytes.clone());
    m.descriptor()
}

/// A full reference, as image names are given.
pub(crate) fn name(s: &str) -> ImageName {
    ImageName::Reference(Reference::parse(s).expect("reference").with_default_tag())
}

/// Names `root` in `store` (a source image) and returns it without its
/// platform (as a root is described).
pub(crate) fn publish(store: &MemoryStore, root: &Descriptor, names: &[&str]) -> Descriptor {
    let mut root = root.clone();
    root.platform = None;
    store.name(root.clone(), names.iter().map(|n| name(n)).collect());
    root
}

/// What a checked image holds: per platform manifest, its layers' media
/// types and DiffIDs, and its config digest.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Checked {
    pub config: Digest,
    pub layer_types: Vec<String>,
    pub diff_ids: Vec<Digest>,
}

fn verified(store: &MemoryStore, d: &Descriptor) -> Vec<u8> {
    let bytes = store
        .get(&d.digest)
        .unwrap_or_else(|| panic!("{} missing", d.digest));
    assert_eq!(bytes.len() as u64, d.size, "size of {}", d.digest);
    assert_eq!(
        Digest::sha256_of(&bytes),
        d.digest,
        "content of {}",
        d.digest
    );
    bytes
}

/// Walks the committed graph under `root` in `store`: every descriptor's
/// bytes hash to its digest, every layer decompresses to its config's
/// DiffID. Returns the manifests' findings, children in index order.
pub(crate) fn check(store: &MemoryStore, root: &Descriptor) -> Vec<Checked> {
    let raw = verified(store, root);
    let view = ManifestView::parse(&raw, Some(&root.media_type)).expect("a manifest");
    if view.kind.is_index() {
        return view
            .manifests
            .iter()
            .flat_map(|c| check(store, c))
            .collect();
    }
    let config = view.config.expect("an image has a config");
    let cfg = crate::content::config::ConfigView::parse(&verified(store, &config))
        .expect("an image config");
    assert_eq!(cfg.diff_ids.len(), view.layers.len());
    let mut layer_types = Vec::new();
    for (layer, diff_id) in view.layers.iter().zip(&cfg.diff_ids) {
        let bytes = verified(store, layer);
        let lt = media_type::layer_type(&layer.media_type).expect("a layer type");
        let mut plain = Vec::new();
        match lt.compression {
            Compression::None => plain = bytes,
            Compression::Gzip => {
                flate2::read::GzDecoder::new(&bytes[..])
                    .read_to_end(&mut plain)
                    .expect("gzip");
            }
            Compression::Zstd => plain = zstd::decode_all(&bytes[..]).expect("zstd"),
        }
        assert_eq!(
            &Digest::sha256_of(&plain),
            diff_id,
            "DiffID of {}",
            layer.digest
        );
        layer_types.push(layer.media_type.clone());
    }
    vec![Checked {
        config: config.digest,
        layer_types,
        diff_ids: cfg.diff_ids,
    }]
}

/// The first image of a source, for plans.
pub(crate) fn first_image(store: &MemoryStore) -> super::SourceImage {
    store
        .images()
        .expect("images")
        .into_iter()
        .next()
        .expect("an image")
}

/// A JSON value's field as a string, for assertions on written manifests.
pub(crate) fn field(bytes: &[u8], pointer: &str) -> Option<String> {
    serde_json::from_slice::<Value>(bytes)
        .ok()?
        .pointer(pointer)?
        .as_str()
        .map(str::to_string)
}

/// Puts an artifact of `artifact_type` (empty config, one layer of `body`)
/// into `store`, referring to `subject` when given, and records it as a
/// referrer of that subject.
pub(crate) fn artifact(
    store: &MemoryStore,
    artifact_type: &str,
    body: &[u8],
    subject: Option<&Descriptor>,
) -> Descriptor {
    let empty = store.insert(b"{}".to_vec());
    let layer = store.insert(body.to_vec());
    let mut doc = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": Descriptor::new("application/vnd.oci.empty.v1+json", empty, 2),
        "layers": [Descriptor::new("application/octet-stream", layer, body.len() as u64)],
    });
    if let Some(s) = subject {
        doc["subject"] = json!(Descriptor::new(
            s.media_type.clone(),
            s.digest.clone(),
            s.size
        ));
    }
    let m = RawManifest::new(
        serde_json::to_vec(&doc).expect("JSON"),
        media_type::OCI_MANIFEST,
    );
    store.insert(m.bytes.clone());
    let mut d = m.descriptor();
    d.artifact_type = Some(artifact_type.to_string());
    if let Some(s) = subject {
        list_referrer(store, s, &d);
    }
    d
}

/// Lists `referrer` under `subject` in `store` (as a registry's referrers
/// API would), whatever the referrer's own subject says.
pub(crate) fn list_referrer(store: &MemoryStore, subject: &Descriptor, referrer: &Descriptor) {
    use crate::store::ImageSink;
    store.add_referrer(referrer, subject).expect("memory");
    store.commit().expect("memory");
}
