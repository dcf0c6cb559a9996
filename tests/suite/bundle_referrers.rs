//! Bundles with what is attached to their images: referrers (and theirs in
//! turn) and cosign-style digest tags are saved with the images, listed in
//! the bundle manifest, loaded into a real registry (distribution 2.8: the
//! fallback tag schema), checked by `verify`, left to earlier bundles by
//! `--since`, and kept out of what `docker load` reads. A Helm chart goes
//! through layouts, oci-archives and bundles byte for byte.

use std::path::Path;

use serde_json::{Value, json};

use super::fixture_archives::digest as sha256_digest;
use super::fixture_layouts::{Layout, OCI_MANIFEST, helm_chart, hex, named};
use super::harness::*;
use super::registry_harness::{Kind, Registry};

const EMPTY: &str = "application/vnd.oci.empty.v1+json";
const APP: &str = "example.com/team/app:1";

/// What `signed_app` built: digests of the image and of what is attached.
struct Signed {
    layout: Layout,
    /// The `index.json` entries, to add to.
    entries: Vec<Value>,
    image: Value,
    signature: String,
    sbom: String,
    /// A signature of the SBOM: a referrer of a referrer.
    sbom_signature: String,
    /// The manifest under the digest tag `sha256-<hex of image>.sig`.
    cosign: String,
}

/// An artifact of `artifact_type` with one layer `body`, referring to
/// `subject`; returns its descriptor.
fn artifact(l: &Layout, artifact_type: &str, body: &str, subject: Option<&Value>) -> Value {
    let mut m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type, "config": l.blob(EMPTY, b"{}"),
        "layers": [l.blob("application/example.data", body.as_bytes())],
        "annotations": {"org.example.made-by": "bundle test"}});
    if let Some(s) = subject {
        m["subject"] =
            json!({"mediaType": s["mediaType"], "digest": s["digest"], "size": s["size"]});
    }
    l.json(OCI_MANIFEST, &m)
}

fn digest(d: &Value) -> String {
    d["digest"].as_str().unwrap().to_string()
}

/// A layout holding one image named `APP`, two referrers of it (unnamed
/// entries, as OCI tools store them), a signature of one of them, and a
/// cosign-style signature under the digest tag of the image.
fn signed_app(root: &Path) -> Signed {
    let layout = Layout::new(root, r#"{"imageLayoutVersion":"1.0.0"}"#);
    let image = layout.image("signed app\n", Some(OCI_MANIFEST), false);
    let signature = artifact(
        &layout,
        "application/example.signature",
        "sig\n",
        Some(&image),
    );
    let sbom = artifact(&layout, "application/example.sbom", "sbom\n", Some(&image));
    let sbom_signature = artifact(
        &layout,
        "application/example.signature",
        "sbom sig\n",
        Some(&sbom),
    );
    let cosign = artifact(
        &layout,
        "application/vnd.dev.cosign.simplesigning.v1+json",
        "cosign\n",
        None,
    );
    let entries = vec![
        named(image.clone(), APP),
        signature.clone(),
        sbom.clone(),
        sbom_signature.clone(),
        named(cosign.clone(), &format!("sha256-{}.sig", hex(&image))),
    ];
    layout.index(&entries, true);
    Signed {
        signature: digest(&signature),
        sbom: digest(&sbom),
        sbom_signature: digest(&sbom_signature),
        cosign: digest(&cosign),
        layout,
        entries,
        image,
    }
}

fn raw_at(reference: &str) -> Vec<u8> {
    tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    )
    .into_bytes()
}

fn bundle_manifest(tar: &Path) -> Value {
    serde_json::from_slice(&tar_entry(tar, "imgsync-bundle.json").expect("a bundle manifest"))
        .unwrap()
}

/// The referrers the bundle manifest lists for its only image.
fn listed(m: &Value) -> Vec<Value> {
    let images = m["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{m:#}");
    images[0]["referrers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn blob_digests(m: &Value, key: &str) -> Vec<String> {
    m[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap().to_string())
        .collect()
}

/// The digest of the one data layer of a manifest in the layout.
fn layer_of_manifest(l: &Layout, manifest: &str) -> String {
    let m: Value = serde_json::from_slice(&layout_blob(&l.root, manifest)).unwrap();
    m["layers"][0]["digest"].as_str().unwrap().to_string()
}

#[test]
fn save_then_load_puts_every_referrer_and_digest_tag_in_the_registry() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let s = signed_app(&t.path("src"));
    let out = t
        .imgsync(&["save", "--json", "-o", "b.tar", "oci:src"])
        .ok()
        .json();
    assert_eq!(out["referrers"].as_array().unwrap().len(), 4, "{out:#}");
    let bundle = t.path("b.tar");
    let m = bundle_manifest(&bundle);
    assert_eq!(m["imgsyncBundle"], 2, "a bundle with referrers is format 2");
    let image = digest(&s.image);
    let mut got: Vec<(String, String, Option<String>, Option<String>)> = listed(&m)
        .iter()
        .map(|r| {
            (
                r["digest"].as_str().unwrap().to_string(),
                r["subject"].as_str().unwrap().to_string(),
                r["artifactType"].as_str().map(str::to_string),
                r["tag"].as_str().map(str::to_string),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (
            s.signature.clone(),
            image.clone(),
            Some("application/example.signature".to_string()),
            None,
        ),
        (
            s.sbom.clone(),
            image.clone(),
            Some("application/example.sbom".to_string()),
            None,
        ),
        (
            s.sbom_signature.clone(),
            s.sbom.clone(),
            Some("application/example.signature".to_string()),
            None,
        ),
        (
            s.cosign.clone(),
            image.clone(),
            Some("application/vnd.dev.cosign.simplesigning.v1+json".to_string()),
            Some(format!("sha256-{}.sig", hex(&s.image))),
        ),
    ];
    want.sort();
    assert_eq!(got, want);
    // The bundle is one image; what is attached is not an image of its own.
    let mj: Value = serde_json::from_slice(&tar_entry(&bundle, "manifest.json").unwrap()).unwrap();
    assert_eq!(mj.as_array().unwrap().len(), 1, "{mj}");

    t.imgsync(&["verify", "b.tar"]).ok();
    t.imgsync(&["load", "-q", "b.tar", "--to", &format!("{}/m", reg.host)])
        .ok();
    let repo = format!("{}/m/team/app", reg.host);
    assert_eq!(
        raw_at(&format!("{repo}:1")),
        layout_blob(&s.layout.root, &image)
    );
    for d in [&s.signature, &s.sbom, &s.sbom_signature, &s.cosign] {
        assert_eq!(
            raw_at(&format!("{repo}@{d}")),
            layout_blob(&s.layout.root, d),
            "{d} is not at the registry byte for byte"
        );
    }
    // distribution 2.8 has no referrers API: the fallback tag index lists them.
    let listing = |subject: &Value| -> Vec<String> {
        let idx: Value =
            serde_json::from_slice(&raw_at(&format!("{repo}:sha256-{}", hex(subject)))).unwrap();
        let mut v: Vec<String> = idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["digest"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let mut of_image = vec![s.signature.clone(), s.sbom.clone()];
    of_image.sort();
    assert_eq!(listing(&s.image), of_image);
    assert_eq!(
        listing(&json!({"digest": s.sbom})),
        vec![s.sbom_signature.clone()]
    );
    // The digest tag is a tag of the same manifest.
    let tagged = raw_at(&format!("{repo}:sha256-{}.sig", hex(&s.image)));
    assert_eq!(sha256_digest(&tagged), s.cosign);
}

#[test]
fn since_bundles_carry_only_new_referrers_and_rely_on_the_rest() {
    let reg = Registry::start(Kind::Plain);
    let t = TestDir::new();
    let mut s = signed_app(&t.path("src"));
    t.imgsync(&["save", "-q", "-o", "b1.tar", "oci:src"]).ok();
    // A new attestation appears on the same image.
    let att = artifact(
        &s.layout,
        "application/example.attestation",
        "provenance\n",
        Some(&s.image),
    );
    s.entries.push(att.clone());
    s.layout.index(&s.entries, true);
    t.imgsync(&["save", "-q", "--since", "b1.tar", "-o", "b2.tar", "oci:src"])
        .ok();
    let m2 = bundle_manifest(&t.path("b2.tar"));
    let carried = blob_digests(&m2, "blobs");
    let required = blob_digests(&m2, "required");
    let new_layer = layer_of_manifest(&s.layout, &digest(&att));
    assert!(carried.contains(&new_layer), "{m2:#}");
    for old in [&s.signature, &s.sbom, &s.sbom_signature, &s.cosign] {
        let layer = layer_of_manifest(&s.layout, old);
        assert!(
            !carried.contains(&layer) && required.contains(&layer),
            "{old}: its layer should be left to b1.tar: {m2:#}"
        );
    }
    // Every referrer is listed; the new one among them.
    let listed2 = listed(&m2);
    assert_eq!(listed2.len(), 5, "{m2:#}");
    assert!(listed2.iter().any(|r| r["digest"] == att["digest"]));

    // b2 alone cannot be loaded: what it relies on is not there yet.
    let to = format!("{}/m", reg.host);
    t.imgsync(&["load", "-q", "b2.tar", "--to", &to])
        .fails(EXIT_NOT_FOUND, &["b1.tar", "load the earlier bundle"]);
    t.imgsync(&["load", "-q", "b1.tar", "--to", &to]).ok();
    t.imgsync(&["load", "-q", "b2.tar", "--to", &to]).ok();
    let repo = format!("{}/m/team/app", reg.host);
    assert_eq!(
        raw_at(&format!("{repo}@{}", digest(&att))),
        layout_blob(&s.layout.root, &digest(&att))
    );
    let idx: Value =
        serde_json::from_slice(&raw_at(&format!("{repo}:sha256-{}", hex(&s.image)))).unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 3, "{idx:#}");
}

/// Rewrites the bundle manifest of a one-file bundle with `edit`, and seals
/// it again as imgsync does (a checksum over the listing without it).
fn rewrite_manifest(tar: &Path, edit: impl Fn(&mut Value)) {
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(tar).unwrap());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_dir() {
            continue;
        }
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        entries.push((name, bytes));
    }
    for (name, bytes) in &mut entries {
        if name == "imgsync-bundle.json" {
            let mut m: Value = serde_json::from_slice(bytes).unwrap();
            edit(&mut m);
            m["checksum"] = json!("");
            let sum = sha256_digest(&serde_json::to_vec(&m).unwrap());
            m["checksum"] = json!(sum);
            *bytes = serde_json::to_vec_pretty(&m).unwrap();
        }
    }
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    write_tar(tar, &refs);
}

#[test]
fn verify_names_a_referrer_whose_subject_is_not_in_the_bundle() {
    let t = TestDir::new();
    let s = signed_app(&t.path("src"));
    t.imgsync(&["save", "-q", "-o", "b.tar", "oci:src"]).ok();
    let out = t.imgsync(&["verify", "b.tar"]).ok();
    assert!(out.stderr.contains("4 referrer(s)"), "{}", out.stderr);
    // A listing whose SBOM signature refers to a manifest nobody carried.
    let gone = sha256_digest(b"a manifest that is in no bundle");
    rewrite_manifest(&t.path("b.tar"), |m| {
        for r in m["images"][0]["referrers"].as_array_mut().unwrap() {
            if r["digest"] == json!(s.sbom_signature) {
                r["subject"] = json!(gone);
            }
        }
    });
    let run = t.imgsync(&["verify", "b.tar"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let err = run.stderr;
    let line = err
        .lines()
        .find(|l| l.contains("is neither in the bundle"))
        .unwrap_or_else(|| panic!("no line names the missing subject: {err}"));
    assert!(
        line.contains(&s.sbom_signature) && line.contains(&gone),
        "{line}"
    );
}

#[test]
fn docker_loads_a_bundle_that_holds_referrers() {
    require_docker();
    let t = TestDir::new();
    let s = signed_app(&t.path("src"));
    t.imgsync(&["save", "-q", "-o", "b.tar", "oci:src"]).ok();
    let bundle = t.path("b.tar");
    // index.json lists the referrers (unnamed) and the digest tag; docker
    // reads manifest.json, which lists the image alone.
    let idx: Value = serde_json::from_slice(&tar_entry(&bundle, "index.json").unwrap()).unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 5, "{idx:#}");
    let loaded = tool("docker", &["load", "-i", &bundle.display().to_string()]);
    assert!(
        loaded.contains(APP),
        "docker load did not name {APP}: {loaded}"
    );
    let id = tool("docker", &["image", "inspect", "--format", "{{.Id}}", APP]);
    let m: Value = serde_json::from_slice(&layout_blob(&s.layout.root, &digest(&s.image))).unwrap();
    assert_eq!(id.trim(), m["config"]["digest"].as_str().unwrap());
    tool("docker", &["rmi", "-f", APP]);
}

#[test]
fn a_helm_chart_goes_through_archives_and_bundles_byte_for_byte() {
    let t = TestDir::new();
    let chart = helm_chart(&t.path("helm"));
    t.imgsync(&["copy", "-q", "oci:helm", "oci-archive:h.tar"])
        .ok();
    t.imgsync(&["save", "-q", "-o", "b.tar", "oci-archive:h.tar"])
        .ok();
    t.imgsync(&["verify", "b.tar"]).ok();
    let info = t
        .imgsync(&["inspect", "--json", "oci-archive:b.tar"])
        .ok()
        .json();
    assert_eq!(
        info[0]["artifact_type"], "application/vnd.cncf.helm.config.v1+json",
        "{info:#}"
    );
    let text = t
        .imgsync(&["inspect", "oci-archive:b.tar"])
        .ok()
        .stdout_str();
    assert!(
        text.contains("ArtifactType: application/vnd.cncf.helm.config.v1+json"),
        "{text}"
    );
    t.imgsync(&["load", "-q", "b.tar", "--to", "oci:out"]).ok();
    let m = layout_blob(&t.path("helm"), &chart);
    assert_eq!(layout_blob(&t.path("out"), &chart), m);
    let view: Value = serde_json::from_slice(&m).unwrap();
    for d in [&view["config"], &view["layers"][0]] {
        let d = d["digest"].as_str().unwrap();
        assert_eq!(
            layout_blob(&t.path("out"), d),
            layout_blob(&t.path("helm"), d)
        );
    }
}

#[test]
fn inspect_shows_the_subject_and_annotations_of_a_referrer() {
    let t = TestDir::new();
    let s = signed_app(&t.path("src"));
    // The signature is the second entry of index.json.
    let at = "oci:src:@1".to_string();
    let info = t.imgsync(&["inspect", "--json", &at]).ok().json();
    assert_eq!(info[0]["artifact_type"], "application/example.signature");
    assert_eq!(info[0]["subject"]["digest"], s.image["digest"]);
    assert_eq!(info[0]["annotations"]["org.example.made-by"], "bundle test");
    let text = t.imgsync(&["inspect", &at]).ok().stdout_str();
    assert!(
        text.contains(&format!("Subject:    {}", digest(&s.image)))
            && text.contains("org.example.made-by=bundle test"),
        "{text}"
    );
}
