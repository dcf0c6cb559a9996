//! Rewriting manifests and indexes when a copy converts something (layer
//! compression, media-type family, platform subset). Only the fields that
//! change are touched; everything else, including fields imgsync does not
//! know, stays as it was. Config bytes are never rewritten, so the image ID
//! survives every conversion.

use serde_json::Value;

use crate::content::media_type::{self, DOCKER_CONFIG, OCI_CONFIG};
use crate::content::{Descriptor, ManifestKind, RawManifest};
use crate::error::{Error, Result};

/// The media-type family a copy writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
}

impl Format {
    pub fn manifest_kind(self, index: bool) -> ManifestKind {
        match (self, index) {
            (Format::Oci, false) => ManifestKind::OciManifest,
            (Format::Oci, true) => ManifestKind::OciIndex,
            (Format::Docker, false) => ManifestKind::DockerManifest,
            (Format::Docker, true) => ManifestKind::DockerList,
        }
    }

    pub fn of(kind: ManifestKind) -> Option<Format> {
        match kind {
            ManifestKind::OciManifest | ManifestKind::OciIndex => Some(Format::Oci),
            ManifestKind::DockerManifest | ManifestKind::DockerList => Some(Format::Docker),
            ManifestKind::Schema1 => None,
        }
    }
}

fn parse(raw: &[u8]) -> Result<serde_json::Map<String, Value>> {
    match serde_json::from_slice(raw) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Error::Format("manifest is not a JSON object".into())),
    }
}

fn finish(doc: serde_json::Map<String, Value>, kind: ManifestKind) -> RawManifest {
    // Writing to a Vec fails only on a map key that is not a string, which
    // a `Value` cannot hold.
    #[allow(clippy::expect_used, reason = "a serde_json Value always serialises")]
    let bytes = serde_json::to_vec(&Value::Object(doc)).expect("JSON values serialise");
    RawManifest::new(bytes, kind.media_type())
}

fn set_descriptor(slot: &mut Value, desc: &Descriptor) {
    slot["mediaType"] = Value::String(desc.media_type.clone());
    slot["digest"] = Value::String(desc.digest.to_string());
    slot["size"] = Value::from(desc.size);
}

/// Rewrites an image manifest with new layer descriptors and, if asked, a
/// new media-type family. Annotations describing the old layer bytes
/// (estargz, zstd:chunked) are dropped from transcoded layers.
pub fn rewrite_manifest(
    raw: &[u8],
    kind: ManifestKind,
    layers: &[(Descriptor, bool)],
    format: Format,
    subject: Option<&Descriptor>,
) -> Result<RawManifest> {
    let mut doc = parse(raw)?;
    let new_kind = format.manifest_kind(false);
    if doc.contains_key("mediaType") || new_kind != kind || format == Format::Docker {
        doc.insert(
            "mediaType".into(),
            Value::String(new_kind.media_type().into()),
        );
    }
    if let Some(config) = doc.get_mut("config")
        && let Some(mt) = config.get("mediaType").and_then(Value::as_str)
    {
        let new = match (format, mt) {
            (Format::Docker, OCI_CONFIG) => Some(DOCKER_CONFIG),
            (Format::Oci, DOCKER_CONFIG) => Some(OCI_CONFIG),
            _ => None,
        };
        if let Some(new) = new {
            config["mediaType"] = Value::String(new.into());
        }
    }
    if let (Some(new), Some(slot)) = (subject, doc.get_mut("subject")) {
        set_descriptor(slot, new);
    }
    let slots = doc
        .get_mut("layers")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| Error::Format("manifest has no layers to rewrite".into()))?;
    for (slot, (desc, transcoded)) in slots.iter_mut().zip(layers) {
        set_descriptor(slot, desc);
        if *transcoded && let Some(Value::Object(a)) = slot.get_mut("annotations") {
            a.retain(|k, _| !k.contains("stargz") && !k.contains("zstd-chunked"));
        }
    }
    Ok(finish(doc, new_kind))
}

/// Rewrites an index to list exactly `children` (updated descriptors,
/// paired with their position in the original list).
pub fn rewrite_index(
    raw: &[u8],
    children: &[(usize, Descriptor)],
    format: Format,
    renamed: &std::collections::HashMap<crate::content::Digest, Descriptor>,
) -> Result<RawManifest> {
    let mut doc = parse(raw)?;
    let new_kind = format.manifest_kind(true);
    doc.insert(
        "mediaType".into(),
        Value::String(new_kind.media_type().into()),
    );
    let old = match doc.remove("manifests") {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    let mut entries = Vec::new();
    for (i, desc) in children {
        let mut slot = old
            .get(*i)
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        set_descriptor(&mut slot, desc);
        // Buildkit attestations name the manifest they describe.
        if let Some(Value::String(d)) = slot.pointer_mut("/annotations/vnd.docker.reference.digest")
            && let Some(new) = crate::content::Digest::parse(d)
                .ok()
                .and_then(|old| renamed.get(&old))
        {
            *d = new.digest.to_string();
        }
        entries.push(slot);
    }
    doc.insert("manifests".into(), Value::Array(entries));
    Ok(finish(doc, new_kind))
}

/// The layer media type in the target family; refuses what has no
/// equivalent.
pub fn layer_media_type_for(desc: &Descriptor, format: Format) -> Result<String> {
    match media_type::layer_type(&desc.media_type) {
        Some(t) => {
            Ok(
                media_type::layer_media_type(t.compression, t.foreign, format == Format::Docker)
                    .to_string(),
            )
        }
        None => Err(Error::Unsupported(format!(
            "layer {} has media type {:?}, which has no {} equivalent",
            desc.digest,
            desc.media_type,
            if format == Format::Docker {
                "Docker"
            } else {
                "OCI"
            }
        ))),
    }
}
