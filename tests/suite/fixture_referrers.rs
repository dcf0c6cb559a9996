//! A layout rich in referrers, in the way buildx, OCI 1.1 tools and
//! registries without the referrers API lay them out (the shapes of
//! regclient's `testrepo` and `external`): multi-platform indexes, buildx
//! "builder" attestation descriptors (`unknown/unknown`), artifacts with
//! `artifactType` and `subject`, referrers fallback tags `sha256-<hex>`, a
//! tag that only looks like one, an index naming its own child as subject,
//! an artifact tagged with its own digest, a config carried in `data`, and
//! referrers reachable only through their subject.

use std::path::Path;

use base64::Engine;
use serde_json::{Value, json};

use super::fixture_archives::{gzip, image_config, layer_of};
use super::fixture_layouts::{Layout, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, hex, named};

const EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// What `referrers_repo` built.
pub struct ReferrersRepo {
    /// The multi-platform image whose index lists attestations.
    pub v1: String,
    /// The buildx attestation manifests `v1` lists.
    pub attestations: Vec<String>,
    /// The image the artifacts refer to, for `external_referrers`.
    pub v2: Value,
}

fn empty_config(l: &Layout) -> Value {
    l.blob(EMPTY, b"{}")
}

/// A platform image; returns its manifest descriptor with the platform.
fn platform_image(l: &Layout, arch: &str, text: &str) -> Value {
    let layer = layer_of(&[("arch.txt", text)]);
    let mut config: Value = serde_json::from_slice(&image_config(
        arch,
        "linux",
        "2024-01-01T00:00:00Z",
        &[&layer],
    ))
    .unwrap();
    config["architecture"] = json!(arch);
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": l.json(OCI_CONFIG, &config),
        "layers": [l.blob("application/vnd.oci.image.layer.v1.tar+gzip", &gzip(&layer))]});
    let mut d = l.json(OCI_MANIFEST, &manifest);
    d["platform"] = json!({"architecture": arch, "os": "linux"});
    d
}

/// An artifact manifest of `artifact_type` with one layer, referring to
/// `subject` when given.
fn artifact(l: &Layout, artifact_type: &str, body: &str, subject: Option<&Value>) -> Value {
    let mut m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type, "config": empty_config(l),
        "layers": [l.blob("application/example.data", body.as_bytes())]});
    if let Some(s) = subject {
        m["subject"] = subject_of(s);
    }
    let mut d = l.json(OCI_MANIFEST, &m);
    d["artifactType"] = json!(artifact_type);
    d
}

fn subject_of(d: &Value) -> Value {
    json!({"mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"]})
}

/// An index of `entries`; `extra` fields are merged into it.
fn index(l: &Layout, entries: Vec<Value>, extra: Value) -> Value {
    let mut doc = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    l.json(OCI_INDEX, &doc)
}

/// A buildx "builder" attestation for `image`: its config is the OCI
/// image config type holding `{}`, its layer a custom type; listed with
/// platform `unknown/unknown` and `vnd.docker.reference.*` annotations.
fn builder_attestation(l: &Layout, image: &Value, with_subject: bool) -> Value {
    let mut m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": l.blob(OCI_CONFIG, b"{}"),
        "layers": [l.blob("application/vnd.example.build-type+json", br#"{"builder":1}"#)]});
    if with_subject {
        m["subject"] = subject_of(image);
    }
    let mut d = l.json(OCI_MANIFEST, &m);
    d["platform"] = json!({"architecture": "unknown", "os": "unknown"});
    d["annotations"] = json!({"vnd.docker.reference.digest": image["digest"],
        "vnd.docker.reference.type": "builder"});
    d
}

/// Builds the referrers-rich layout at `root`.
pub fn referrers_repo(root: &Path) -> ReferrersRepo {
    let l = Layout::new(root, r#"{"imageLayoutVersion":"1.0.0"}"#);
    let base = [
        platform_image(&l, "amd64", "base amd64\n"),
        platform_image(&l, "arm64", "base arm64\n"),
    ];
    let b1 = index(
        &l,
        base.to_vec(),
        json!({"annotations": {"org.example.version": "b1"}}),
    );
    let images = [
        platform_image(&l, "amd64", "app amd64\n"),
        platform_image(&l, "arm64", "app arm64\n"),
    ];
    let attestations = [
        builder_attestation(&l, &images[0], false),
        builder_attestation(&l, &images[1], true),
    ];
    let mut v1_entries = images.to_vec();
    v1_entries.extend(attestations.iter().cloned());
    let v1 = index(
        &l,
        v1_entries,
        json!({"annotations": {"org.example.version": "v1"}}),
    );
    let v2 = index(
        &l,
        vec![
            platform_image(&l, "amd64", "v2 amd64\n"),
            platform_image(&l, "arm64", "v2 arm64\n"),
        ],
        json!({"annotations": {"org.opencontainers.image.base.name": "b1",
            "org.opencontainers.image.base.digest": b1["digest"]}}),
    );
    let a1 = artifact(&l, "application/example.sbom", "sbom\n", Some(&v2));
    let a2 = artifact(&l, "application/example.signature", "sig\n", Some(&v2));
    let untagged = [
        artifact(&l, "application/example.sbom", "by digest 1\n", Some(&v2)),
        artifact(&l, "application/example.sbom", "by digest 2\n", Some(&v2)),
    ];
    let fallback_v2 = index(&l, vec![a1.clone(), a2.clone()], json!({}));
    let titled: Vec<Value> = ["one", "two", "three"]
        .iter()
        .map(|t| {
            let mut d = l.blob(
                &format!("application/example.{t}"),
                format!("{t}\n").as_bytes(),
            );
            d["annotations"] = json!({"org.opencontainers.image.title": format!("{t}.txt")});
            d
        })
        .collect();
    let a3 = l.json(
        OCI_MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "artifactType": "application/example.files", "config": empty_config(&l),
            "layers": titled}),
    );
    let ai = index(
        &l,
        vec![a1.clone(), a2.clone()],
        json!({"artifactType": "application/example.bundle"}),
    );
    let mut embedded = l.blob("application/example.config", b"inline\n");
    embedded["data"] = json!(base64::engine::general_purpose::STANDARD.encode(b"inline\n"));
    let a_example = l.json(
        OCI_MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": embedded, "layers": [l.blob("application/example.data", b"x\n")]}),
    );
    let child = artifact(&l, "application/example.child", "child\n", None);
    let looped = index(
        &l,
        vec![child.clone()],
        json!({"artifactType": "application/example.loop", "subject": subject_of(&child)}),
    );
    let fallback_child = index(&l, vec![looped.clone()], json!({}));
    let mirror = artifact(&l, "application/example.mirror", "mirror\n", None);
    let self_tag = format!("sha256-{}", hex(&mirror));
    let meta_tag = format!("sha256-{}.{}.meta", hex(&v1), &hex(&v2)[..16]);
    let mut entries = vec![
        named(b1, "b1"),
        named(v1.clone(), "v1"),
        named(v2.clone(), "v2"),
        named(attestations[0].clone(), "a-docker"),
        named(attestations[1].clone(), "a-docker-oci"),
        named(a1, "a1"),
        named(a2, "a2"),
        named(fallback_v2, &format!("sha256-{}", hex(&v2))),
        named(a3, "a3"),
        named(ai, "ai"),
        named(a_example, "a-example"),
        named(v2.clone(), &meta_tag),
        named(child.clone(), "child"),
        named(looped, "loop"),
        named(fallback_child, &format!("sha256-{}", hex(&child))),
        named(mirror.clone(), "mirror"),
        named(mirror, &self_tag),
    ];
    // Pushed by digest with their fallback tag deleted: no name.
    entries.extend(untagged);
    for e in &mut entries {
        // `index.json` entries carry no platform or artifactType here.
        if let Some(o) = e.as_object_mut() {
            o.remove("platform");
            o.remove("artifactType");
        }
    }
    l.index(&entries, true);
    ReferrersRepo {
        v1: v1["digest"].as_str().unwrap().to_string(),
        attestations: attestations
            .iter()
            .map(|a| a["digest"].as_str().unwrap().to_string())
            .collect(),
        v2,
    }
}

/// A second layout holding two more referrers of `subject` and their
/// fallback-tag index, without the subject itself (regclient `external`).
pub fn external_referrers(root: &Path, subject: &Value) {
    let l = Layout::new(root, r#"{"imageLayoutVersion":"1.0.0"}"#);
    let a3 = artifact(
        &l,
        "application/example.sbom",
        "external 3\n",
        Some(subject),
    );
    let a4 = artifact(
        &l,
        "application/example.sbom",
        "external 4\n",
        Some(subject),
    );
    let fallback = index(&l, vec![a3.clone(), a4.clone()], json!({}));
    let strip = |mut d: Value| {
        d.as_object_mut().unwrap().remove("artifactType");
        d
    };
    l.index(
        &[
            named(strip(a3), "a3"),
            named(fallback, &format!("sha256-{}", hex(subject))),
            named(strip(a4), "a4"),
        ],
        true,
    );
}
