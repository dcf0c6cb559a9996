//! Manifests and indexes: exact bytes plus a parsed view for walking.
//!
//! Kinds are told by `mediaType`, or when it is absent, guessed the way
//! containers/image does (formats reference §5.2). Reading is lenient (`null`
//! arrays are empty, capitalisation of Go-written keys is tolerated only where
//! producers differ); ambiguous documents (both `manifests` and `layers`) are
//! refused.

use serde::Deserialize;

use super::descriptor::Descriptor;
use super::digest::Digest;
use super::media_type::*;
use crate::error::Error;

/// What a manifest document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    OciManifest,
    DockerManifest,
    OciIndex,
    DockerList,
    Schema1,
}

impl ManifestKind {
    pub fn from_media_type(mt: &str) -> Option<ManifestKind> {
        Some(match mt {
            OCI_MANIFEST => ManifestKind::OciManifest,
            DOCKER_MANIFEST => ManifestKind::DockerManifest,
            OCI_INDEX => ManifestKind::OciIndex,
            DOCKER_LIST => ManifestKind::DockerList,
            DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => ManifestKind::Schema1,
            _ => return None,
        })
    }

    pub fn is_index(self) -> bool {
        matches!(self, ManifestKind::OciIndex | ManifestKind::DockerList)
    }

    pub fn media_type(self) -> &'static str {
        match self {
            ManifestKind::OciManifest => OCI_MANIFEST,
            ManifestKind::DockerManifest => DOCKER_MANIFEST,
            ManifestKind::OciIndex => OCI_INDEX,
            ManifestKind::DockerList => DOCKER_LIST,
            ManifestKind::Schema1 => DOCKER_SCHEMA1,
        }
    }
}

/// Is a descriptor's media type one of the manifest kinds?
pub fn is_manifest_media_type(mt: &str) -> bool {
    ManifestKind::from_media_type(mt).is_some()
}

/// The parsed view of a manifest or index. Never serialised back.
#[derive(Debug, Clone)]
pub struct ManifestView {
    pub kind: ManifestKind,
    pub media_type: Option<String>,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    artifact_type: Option<String>,
}

impl ManifestView {
    /// Parses manifest bytes. `hint` is the media type from the descriptor
    /// that pointed here, used when the document does not say.
    pub fn parse(bytes: &[u8], hint: Option<&str>) -> Result<ManifestView, Error> {
        let wire: Wire = serde_json::from_slice(bytes)
            .map_err(|e| Error::Format(format!("invalid manifest JSON: {e}")))?;
        if wire.manifests.is_some() && (wire.layers.is_some() || wire.config.is_some()) {
            return Err(Error::Format(
                "ambiguous manifest: it has both \"manifests\" and \"layers\"/\"config\"".into(),
            ));
        }
        let declared = wire.media_type.as_deref().filter(|m| !m.is_empty());
        let kind = match wire.schema_version {
            Some(1) => ManifestKind::Schema1,
            Some(2) => {
                if let Some(k) = declared.and_then(ManifestKind::from_media_type) {
                    k
                } else if let Some(mt) = declared {
                    return Err(Error::Unsupported(format!(
                        "unsupported manifest media type {mt}"
                    )));
                } else if let Some(k) = hint.and_then(ManifestKind::from_media_type) {
                    k
                } else if wire.manifests.is_some() {
                    ManifestKind::OciIndex
                } else if wire
                    .config
                    .as_ref()
                    .is_some_and(|c| c.media_type == DOCKER_CONFIG)
                {
                    ManifestKind::DockerManifest
                } else {
                    ManifestKind::OciManifest
                }
            }
            Some(v) => {
                return Err(Error::Unsupported(format!(
                    "unsupported manifest schemaVersion {v}"
                )));
            }
            None => return Err(Error::Format("manifest has no schemaVersion".into())),
        };
        if kind.is_index() && wire.manifests.is_none() && wire.layers.is_some() {
            return Err(Error::Format(
                "index has \"layers\" instead of \"manifests\"".into(),
            ));
        }
        Ok(ManifestView {
            kind,
            media_type: wire.media_type,
            config: wire.config,
            layers: wire.layers.unwrap_or_default(),
            manifests: wire.manifests.unwrap_or_default(),
            subject: wire.subject,
            artifact_type: wire.artifact_type,
        })
    }

    /// Is this an image (runnable: image config, image layers), not an
    /// artifact? Buildkit attestations carry an image config type but
    /// in-toto layers, so the layers decide too.
    pub fn is_image(&self) -> bool {
        matches!(
            self.kind,
            ManifestKind::OciManifest | ManifestKind::DockerManifest
        ) && self
            .config
            .as_ref()
            .is_some_and(|c| is_image_config(&c.media_type))
            && self
                .layers
                .iter()
                .all(|l| layer_type(&l.media_type).is_some())
    }
}

/// A manifest or index with its exact bytes. The bytes are the content; the
/// digest is always computed from them.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

impl RawManifest {
    pub fn new(bytes: Vec<u8>, media_type: impl Into<String>) -> RawManifest {
        let digest = Digest::sha256_of(&bytes);
        RawManifest {
            bytes,
            media_type: media_type.into(),
            digest,
        }
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type.clone(),
            self.digest.clone(),
            self.bytes.len() as u64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "../shared/peer-fixtures/containers-image/manifests";

    fn peer(name: &str) -> Option<Vec<u8>> {
        std::fs::read(format!("{PEER}/{name}")).ok()
    }

    #[test]
    fn guesses_kinds_without_media_type() {
        let Some(b) = peer("v2s2nomime.manifest.json") else {
            return;
        };
        assert_eq!(
            ManifestView::parse(&b, None).unwrap().kind,
            ManifestKind::DockerManifest
        );
        let b = peer("ociv1nomime.manifest.json").unwrap();
        assert_eq!(
            ManifestView::parse(&b, None).unwrap().kind,
            ManifestKind::OciManifest
        );
        let b = peer("ociv1nomime.image.index.json").unwrap();
        assert_eq!(
            ManifestView::parse(&b, None).unwrap().kind,
            ManifestKind::OciIndex
        );
    }

    #[test]
    fn rejects_garbage_and_unknown_versions() {
        let Some(b) = peer("non-json.manifest.json") else {
            return;
        };
        assert!(matches!(
            ManifestView::parse(&b, None),
            Err(Error::Format(_))
        ));
        let b = peer("unknown-version.manifest.json").unwrap();
        assert!(matches!(
            ManifestView::parse(&b, None),
            Err(Error::Unsupported(_))
        ));
    }

    #[test]
    fn reads_every_peer_manifest_kind() {
        let Some(_) = peer("v2s2.manifest.json") else {
            return;
        };
        for (name, kind) in [
            ("v2s2.manifest.json", ManifestKind::DockerManifest),
            ("v2list.manifest.json", ManifestKind::DockerList),
            ("ociv1.manifest.json", ManifestKind::OciManifest),
            ("oci1.index.everything.json", ManifestKind::OciIndex),
            ("ociv1.everything.json", ManifestKind::OciManifest),
            ("v2s1.manifest.json", ManifestKind::Schema1),
        ] {
            let b = peer(name).unwrap();
            let v = ManifestView::parse(&b, None).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(v.kind, kind, "{name}");
        }
        // `"digest": ""` is not a digest: refused with a message, not a panic.
        let b = peer("ociv1.artifact.json").unwrap();
        assert!(matches!(
            ManifestView::parse(&b, None),
            Err(Error::Format(_))
        ));
    }
}
