//! What is attached to a manifest: OCI 1.1 referrers (manifests whose
//! `subject` names it), the referrers tag schema registries without the
//! referrers API use (a tag `<alg>-<hex>` holding an index of them), and
//! cosign-style digest tags (`sha256-<hex>.sig`, `.att`, `.sbom`).

use std::collections::BTreeMap;

use super::media_type::OCI_INDEX;
use super::{Descriptor, Digest, ManifestView};

/// The tag under which the referrers tag schema lists the referrers of
/// `digest`: `<alg>-<encoded>`, the algorithm cut to 32 characters and the
/// encoded part to 64, as the distribution spec says.
pub fn fallback_tag(digest: &Digest) -> String {
    let alg: String = digest.algorithm().chars().take(32).collect();
    let enc: String = digest.encoded().chars().take(64).collect();
    format!("{alg}-{enc}")
}

/// The subject and suffix of a digest tag (`sha256-<hex>.sig` names
/// `sha256:<hex>` with suffix `sig`). A fallback tag (no suffix) is not a
/// digest tag.
pub fn digest_tag_subject(tag: &str) -> Option<(Digest, &str)> {
    let (alg, rest) = tag.split_once('-')?;
    let (enc, suffix) = rest.split_once('.')?;
    if suffix.is_empty() {
        return None;
    }
    Some((tagged_digest(alg, enc)?, suffix))
}

/// The digest `<alg>-<hex>` names in a tag: sha256 or sha512 with its
/// full lowercase hex (a tag `v1-2` is not one).
fn tagged_digest(alg: &str, enc: &str) -> Option<Digest> {
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return None,
    };
    if enc.len() != len
        || !enc
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Digest::parse(&format!("{alg}:{enc}")).ok()
}

/// Is `tag` a digest tag of `subject`?
pub fn is_digest_tag_of(tag: &str, subject: &Digest) -> bool {
    digest_tag_subject(tag).is_some_and(|(d, _)| &d == subject)
}

/// Is `tag` a fallback tag or a digest tag (of any digest)? Such tags travel
/// with their subject, not as images of their own.
pub fn is_attached_tag(tag: &str) -> bool {
    digest_tag_subject(tag).is_some()
        || tag
            .split_once('-')
            .is_some_and(|(alg, enc)| tagged_digest(alg, enc).is_some())
}

/// The artifact type of a manifest: its `artifactType`, else (an artifact
/// made before OCI 1.1) its config's media type.
pub fn artifact_type(view: &ManifestView) -> Option<String> {
    view.artifact_type
        .clone()
        .or_else(|| view.config.as_ref().map(|c| c.media_type.clone()))
}

/// The descriptor a referrers list gives a referrer: media type, digest,
/// size, its artifact type and its annotations.
pub fn referrer_descriptor(desc: &Descriptor, bytes: &[u8]) -> Descriptor {
    let mut d = Descriptor::new(desc.media_type.clone(), desc.digest.clone(), desc.size);
    if let Ok(view) = ManifestView::parse(bytes, Some(&desc.media_type)) {
        if let Some(mt) = &view.media_type {
            d.media_type = mt.clone();
        }
        d.artifact_type = artifact_type(&view);
    }
    d.annotations = manifest_annotations(bytes);
    d
}

/// A manifest's own `annotations`, if it has any.
pub fn manifest_annotations(bytes: &[u8]) -> Option<BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Wire {
        annotations: Option<BTreeMap<String, String>>,
    }
    serde_json::from_slice::<Wire>(bytes)
        .ok()
        .and_then(|w| w.annotations)
        .filter(|a| !a.is_empty())
}

/// Adds `ours` to the entries of a referrers index (`existing`, as read,
/// or none), never dropping an entry another writer added. Returns the new
/// index bytes, or `None` when every one of `ours` is listed already.
pub fn merge_referrers_index(
    existing: Option<&[u8]>,
    ours: &[Descriptor],
) -> Result<Option<Vec<u8>>, String> {
    let mut entries: Vec<serde_json::Value> = match existing {
        None => Vec::new(),
        Some(bytes) => {
            let view = ManifestView::parse(bytes, Some(OCI_INDEX)).map_err(|e| e.to_string())?;
            if !view.kind.is_index() {
                return Err(format!(
                    "it holds a {}, not an index",
                    view.kind.media_type()
                ));
            }
            let doc: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            doc.get("manifests")
                .and_then(|m| m.as_array())
                .cloned()
                .unwrap_or_default()
        }
    };
    let listed = |entries: &[serde_json::Value], d: &Digest| {
        entries
            .iter()
            .any(|e| e.get("digest").and_then(|v| v.as_str()) == Some(d.as_str()))
    };
    let mut added = false;
    for d in ours {
        if !listed(&entries, &d.digest) {
            entries.push(serde_json::to_value(d).map_err(|e| e.to_string())?);
            added = true;
        }
    }
    if !added {
        return Ok(None);
    }
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries,
    });
    serde_json::to_vec(&doc)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Does a referrers index list every one of `ours`?
pub fn lists_all(index: &[u8], ours: &[Descriptor]) -> bool {
    ManifestView::parse(index, Some(OCI_INDEX)).is_ok_and(|v| {
        ours.iter()
            .all(|d| v.manifests.iter().any(|m| m.digest == d.digest))
    })
}

/// Which referrers a run carries, by artifact type.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TypeFilter {
    /// Only these types (empty: all).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Never these types.
    #[serde(default)]
    pub deny: Vec<String>,
}

impl TypeFilter {
    /// Does a referrer of this artifact type travel? One without a type
    /// travels unless an allow list is given.
    pub fn admits(&self, artifact_type: Option<&str>) -> bool {
        match artifact_type {
            Some(t) => {
                (self.allow.is_empty() || self.allow.iter().any(|a| a == t))
                    && !self.deny.iter().any(|d| d == t)
            }
            None => self.allow.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn digest() -> Digest {
        Digest::parse(&format!("sha256:{HEX}")).unwrap()
    }

    #[test]
    fn tags_of_a_digest() {
        assert_eq!(fallback_tag(&digest()), format!("sha256-{HEX}"));
        let tag = format!("sha256-{HEX}.sig");
        let (d, suffix) = digest_tag_subject(&tag).unwrap();
        assert_eq!((d, suffix), (digest(), "sig"));
        assert!(is_digest_tag_of(&format!("sha256-{HEX}.att"), &digest()));
        assert!(digest_tag_subject(&format!("sha256-{HEX}")).is_none());
        assert!(digest_tag_subject(&format!("sha256-{HEX}.")).is_none());
        assert!(digest_tag_subject("sha256-abc.sig").is_none());
        assert!(digest_tag_subject("latest").is_none());
        assert!(is_attached_tag(&format!("sha256-{HEX}")));
        assert!(is_attached_tag(&format!("sha256-{HEX}.sbom")));
        assert!(!is_attached_tag("v1-2.3"));
    }

    #[test]
    fn merging_keeps_what_others_listed() {
        let theirs = Descriptor::new(
            "application/vnd.oci.image.manifest.v1+json",
            Digest::sha256_of(b"theirs"),
            6,
        );
        let ours = Descriptor::new(
            "application/vnd.oci.image.manifest.v1+json",
            Digest::sha256_of(b"ours"),
            4,
        );
        let first = merge_referrers_index(None, std::slice::from_ref(&theirs))
            .unwrap()
            .unwrap();
        let merged = merge_referrers_index(Some(&first), std::slice::from_ref(&ours))
            .unwrap()
            .unwrap();
        assert!(lists_all(&merged, &[theirs.clone(), ours.clone()]));
        assert_eq!(merge_referrers_index(Some(&merged), &[ours]).unwrap(), None);
        let image = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a","digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","size":1},"layers":[]}"#;
        let err = merge_referrers_index(Some(image), &[theirs]).unwrap_err();
        assert!(err.contains("not an index"), "{err}");
    }

    #[test]
    fn type_filter() {
        let all = TypeFilter::default();
        assert!(all.admits(None) && all.admits(Some("x")));
        let allow = TypeFilter {
            allow: vec!["a".into()],
            deny: vec![],
        };
        assert!(allow.admits(Some("a")) && !allow.admits(Some("b")) && !allow.admits(None));
        let deny = TypeFilter {
            allow: vec![],
            deny: vec!["b".into()],
        };
        assert!(deny.admits(Some("a")) && !deny.admits(Some("b")) && deny.admits(None));
    }
}
