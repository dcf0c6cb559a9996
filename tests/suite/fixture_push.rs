//! Pushes fixtures to a registry with plain HTTP from the test itself, the
//! way a signing or SBOM tool does against a registry without the
//! referrers API: monolithic blob uploads (`POST`, then `PUT ?digest=`),
//! manifests `PUT` by tag or digest, and the referrers fallback tag
//! (`sha256-<hex>`, an index of each subject's referrers) read, extended
//! and put back for every referrer pushed.
//!
//! `signed_app` builds the repository the referrer tests copy: an image
//! with cosign signatures (digest tag and OCI 1.1 referrer), an SBOM and
//! its own signature, an in-toto attestation, a multi-platform index whose
//! children are signed, and a standalone Helm chart.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use serde_json::{Value, json};

use super::fixture_archives::{gzip, image_config, layer_of};
use super::harness::sha256_hex;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const COSIGN_SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SPDX: &str = "application/spdx+json";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
const HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// An answer read off the wire.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`).
pub fn http(
    host: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut s = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {target}: no status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let mut body = Vec::new();
    if method == "HEAD" {
    } else if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    Answer {
        status,
        headers,
        body,
    }
}

/// A descriptor of `bytes` as `media_type`.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": format!("sha256:{}", sha256_hex(bytes)), "size": bytes.len()})
}

/// The digest a descriptor names.
pub fn digest_of(desc: &Value) -> String {
    desc["digest"].as_str().unwrap().to_string()
}

/// The referrers fallback tag of a digest: `sha256-<hex>`.
pub fn fallback_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// A registry repository pushed to with plain HTTP.
pub struct Repo {
    pub host: String,
    pub name: String,
}

impl Repo {
    pub fn new(host: &str, name: &str) -> Repo {
        Repo {
            host: host.to_string(),
            name: name.to_string(),
        }
    }

    /// Uploads a blob in one piece; returns its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let d = descriptor(media_type, bytes);
        let start = http(
            &self.host,
            "POST",
            &format!("/v2/{}/blobs/uploads/", self.name),
            &[],
            b"",
        );
        assert_eq!(start.status, 202, "start upload to {}", self.name);
        let location = start
            .header("Location")
            .expect("upload Location")
            .to_string();
        // Distribution answers with an absolute URL; keep its path and query.
        let path = match location.split_once("://") {
            Some((_, rest)) => rest[rest.find('/').unwrap_or(rest.len())..].to_string(),
            None => location,
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let put = http(
            &self.host,
            "PUT",
            &format!("{path}{sep}digest={}", digest_of(&d)),
            &[("Content-Type", "application/octet-stream")],
            bytes,
        );
        assert_eq!(put.status, 201, "finish upload of {}", digest_of(&d));
        d
    }

    /// Puts a manifest under `reference` (a tag, or its digest when
    /// `None`); returns its descriptor.
    pub fn manifest(&self, reference: Option<&str>, doc: &Value) -> Value {
        let media_type = doc["mediaType"]
            .as_str()
            .unwrap_or(OCI_MANIFEST)
            .to_string();
        let bytes = serde_json::to_vec(doc).unwrap();
        self.manifest_bytes(reference, &media_type, &bytes)
    }

    pub fn manifest_bytes(&self, reference: Option<&str>, media_type: &str, bytes: &[u8]) -> Value {
        let d = descriptor(media_type, bytes);
        let reference = reference.map_or_else(|| digest_of(&d), str::to_string);
        let put = http(
            &self.host,
            "PUT",
            &format!("/v2/{}/manifests/{reference}", self.name),
            &[("Content-Type", media_type)],
            bytes,
        );
        assert_eq!(
            put.status,
            201,
            "PUT {}:{reference}: {}",
            self.name,
            String::from_utf8_lossy(&put.body)
        );
        d
    }

    /// A manifest by tag or digest: its bytes, or `None` when absent.
    pub fn get_manifest(&self, reference: &str) -> Option<Vec<u8>> {
        let a = http(
            &self.host,
            "GET",
            &format!("/v2/{}/manifests/{reference}", self.name),
            &[(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json",
            )],
            b"",
        );
        match a.status {
            200 => Some(a.body),
            404 => None,
            s => panic!("GET {}:{reference}: {s}", self.name),
        }
    }

    pub fn get_blob(&self, digest: &str) -> Option<Vec<u8>> {
        let a = http(
            &self.host,
            "GET",
            &format!("/v2/{}/blobs/{digest}", self.name),
            &[],
            b"",
        );
        (a.status == 200).then_some(a.body)
    }

    /// The repository's tags, sorted.
    pub fn tags(&self) -> Vec<String> {
        let a = http(
            &self.host,
            "GET",
            &format!("/v2/{}/tags/list", self.name),
            &[],
            b"",
        );
        if a.status == 404 {
            return Vec::new();
        }
        let mut tags: Vec<String> = a.json()["tags"]
            .as_array()
            .map(|t| t.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        tags.sort();
        tags
    }

    /// Lists `referrer` (a descriptor with its artifactType) as a referrer
    /// of `subject`, as a client of a registry without the referrers API
    /// does: read the fallback tag, add the entry, put it back.
    pub fn list_referrer(&self, subject: &str, referrer: &Value) {
        let tag = fallback_tag(subject);
        let mut entries: Vec<Value> = match self.get_manifest(&tag) {
            Some(b) => serde_json::from_slice::<Value>(&b).unwrap()["manifests"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            None => Vec::new(),
        };
        if !entries.iter().any(|e| e["digest"] == referrer["digest"]) {
            entries.push(referrer.clone());
        }
        self.manifest(
            Some(&tag),
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
        );
    }

    /// A small OCI image (config and one gzip layer) for `arch`, pushed by
    /// digest (or under `tag`); returns its descriptor with the platform.
    pub fn image(&self, tag: Option<&str>, arch: &str, text: &str) -> Value {
        let layer = layer_of(&[("file.txt", text)]);
        let config = image_config(arch, "linux", "2024-01-01T00:00:00Z", &[&layer]);
        let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": self.blob(OCI_CONFIG, &config),
            "layers": [self.blob(OCI_LAYER_GZIP, &gzip(&layer))]});
        let mut d = self.manifest(tag, &m);
        d["platform"] = json!({"architecture": arch, "os": "linux"});
        d
    }

    /// An OCI 1.1 artifact of `artifact_type` whose one layer is `body`
    /// typed `layer_type` (with `annotations`), referring to `subject`:
    /// pushed by digest and listed under the subject's fallback tag.
    /// Returns its descriptor as a referrers list gives it.
    pub fn referrer(
        &self,
        subject: &Value,
        artifact_type: &str,
        layer_type: &str,
        body: &[u8],
        annotations: Value,
    ) -> Value {
        let d = self.unlisted_referrer(subject, artifact_type, layer_type, body, annotations);
        self.list_referrer(&digest_of(subject), &d);
        d
    }

    /// A referrer pushed by digest only: no fallback tag lists it (a
    /// registry with the referrers API lists it by itself).
    pub fn unlisted_referrer(
        &self,
        subject: &Value,
        artifact_type: &str,
        layer_type: &str,
        body: &[u8],
        annotations: Value,
    ) -> Value {
        let mut layer = self.blob(layer_type, body);
        if !annotations.is_null() {
            layer["annotations"] = annotations;
        }
        let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": self.blob(EMPTY, b"{}"),
            "layers": [layer],
            "subject": {"mediaType": subject["mediaType"], "digest": subject["digest"],
                "size": subject["size"]}});
        let mut d = self.manifest(None, &m);
        d["artifactType"] = json!(artifact_type);
        d
    }

    /// A cosign signature of `subject` as an OCI 1.1 referrer.
    pub fn cosign_referrer(&self, subject: &Value, note: &str) -> Value {
        let d = self.unlisted_cosign_referrer(subject, note);
        self.list_referrer(&digest_of(subject), &d);
        d
    }

    pub fn unlisted_cosign_referrer(&self, subject: &Value, note: &str) -> Value {
        let (payload, sig) = simple_signing(subject, note);
        self.unlisted_referrer(
            subject,
            COSIGN_SIG,
            SIMPLESIGNING,
            &payload,
            json!({"dev.cosignproject.cosign/signature": sig}),
        )
    }
}

/// A cosign "simple signing" payload naming `subject`, and a stand-in
/// signature (the tests check bytes travel, not that they verify).
fn simple_signing(subject: &Value, note: &str) -> (Vec<u8>, String) {
    let payload = json!({"critical": {"identity": {"docker-reference": "signed/app"},
        "image": {"docker-manifest-digest": subject["digest"]},
        "type": "cosign container image signature"}, "optional": {"note": note}});
    let payload = serde_json::to_vec(&payload).unwrap();
    let sig = format!("MEUCIQ{}", &sha256_hex(note.as_bytes())[..40]);
    (payload, sig)
}

/// What `signed_app` pushed (descriptors as JSON, with artifactType for
/// referrers).
pub struct SignedApp {
    pub image: Value,
    /// The manifest under `sha256-<hex>.sig`.
    pub sig_tag: String,
    pub sig_tagged: Value,
    pub sig_referrer: Value,
    pub sbom: Value,
    pub sbom_sig: Value,
    pub attestation: Value,
    pub multi: Value,
    /// The children of `multi` (amd64, arm64) and a referrer of each.
    pub children: [Value; 2],
    pub child_referrers: [Value; 2],
    /// A signature of the index `multi` itself.
    pub multi_sig: Value,
    pub chart: Value,
}

impl SignedApp {
    /// Every referrer of `image` (recursively), in push order.
    pub fn image_referrers(&self) -> Vec<&Value> {
        vec![
            &self.sig_referrer,
            &self.sbom,
            &self.sbom_sig,
            &self.attestation,
        ]
    }
}

/// Builds the `signed/app` repository (or `name`) at `host`.
pub fn signed_app(host: &str, name: &str) -> SignedApp {
    let r = Repo::new(host, name);
    let image = r.image(Some("v1"), "amd64", "signed app\n");
    // cosign's tag schema: `sha256-<hex>.sig`, layers holding the payload
    // with the signature in an annotation.
    let (payload, sig) = simple_signing(&image, "tagged");
    let mut sig_layer = r.blob(SIMPLESIGNING, &payload);
    sig_layer["annotations"] = json!({"dev.cosignproject.cosign/signature": sig});
    let sig_tag = format!("{}.sig", fallback_tag(&digest_of(&image)));
    let sig_tagged = r.manifest(
        Some(&sig_tag),
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": r.blob(OCI_CONFIG, br#"{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]}}"#),
            "layers": [sig_layer]}),
    );
    let sig_referrer = r.cosign_referrer(&image, "referrer");
    let spdx = json!({"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT",
        "name": "signed-app", "packages": [{"name": "hello", "SPDXID": "SPDXRef-hello"}]});
    let sbom = r.referrer(
        &image,
        SPDX,
        SPDX,
        &serde_json::to_vec(&spdx).unwrap(),
        Value::Null,
    );
    let sbom_sig = r.cosign_referrer(&sbom, "sbom");
    let statement = json!({"_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "signed/app", "digest": {"sha256": &digest_of(&image)[7..]}}],
        "predicateType": "https://slsa.dev/provenance/v1", "predicate": {}});
    let attestation = r.referrer(
        &image,
        IN_TOTO,
        IN_TOTO,
        &serde_json::to_vec(&statement).unwrap(),
        Value::Null,
    );
    let children = [
        r.image(None, "amd64", "multi amd64\n"),
        r.image(None, "arm64", "multi arm64\n"),
    ];
    let multi = r.manifest(
        Some("multi"),
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}),
    );
    let child_referrers = [
        r.cosign_referrer(&children[0], "amd64"),
        r.cosign_referrer(&children[1], "arm64"),
    ];
    let multi_sig = r.cosign_referrer(&multi, "index");
    let chart = r.manifest(
        Some("chart"),
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": r.blob(HELM_CONFIG, br#"{"name":"app","version":"0.1.0","apiVersion":"v2"}"#),
            "layers": [r.blob(HELM_CHART, &gzip(&layer_of(&[("app/Chart.yaml", "name: app\nversion: 0.1.0\n")])))]}),
    );
    SignedApp {
        image,
        sig_tag,
        sig_tagged,
        sig_referrer,
        sbom,
        sbom_sig,
        attestation,
        multi,
        children,
        child_referrers,
        multi_sig,
        chart,
    }
}
