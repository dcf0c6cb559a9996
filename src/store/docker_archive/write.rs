//! Docker-specific parts of writing a docker archive: which manifest of a
//! multi-platform image `manifest.json` lists.

use std::collections::HashMap;

use crate::content::{Descriptor, Digest, ManifestView, Platform, RawManifest};
use crate::error::{Error, Result};

/// The single-platform image manifest that `manifest.json` should list for
/// `root`: the root itself, or the index entry for `platform` (default: the
/// host's), searched through nested indexes among the manifests written.
pub fn pick_platform_manifest(
    root: &Descriptor,
    manifests: &HashMap<Digest, RawManifest>,
    platform: Option<&Platform>,
    label: &str,
) -> Result<ManifestView> {
    let host = Platform::host();
    let wanted = platform.unwrap_or(&host);
    let mut seen = Vec::new();
    let found = find(root, manifests, wanted, &mut seen, 0)?;
    match found {
        Some(view) => Ok(view),
        None => Err(Error::NotFound(format!(
            "{label}: image {} has no manifest for platform {wanted} (it has: {}); choose one with --platform",
            root.digest,
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        ))),
    }
}

fn find(
    desc: &Descriptor,
    manifests: &HashMap<Digest, RawManifest>,
    wanted: &Platform,
    seen: &mut Vec<String>,
    depth: usize,
) -> Result<Option<ManifestView>> {
    if depth > 8 {
        return Ok(None);
    }
    let Some(raw) = manifests.get(&desc.digest) else {
        return Ok(None);
    };
    let view = ManifestView::parse(&raw.bytes, Some(&raw.media_type))?;
    if !view.kind.is_index() {
        if !view.is_image() {
            return Err(Error::Unsupported(format!(
                "{} is not a container image (artifact); docker archives hold images only",
                desc.digest
            )));
        }
        return Ok(Some(view));
    }
    for child in &view.manifests {
        match &child.platform {
            Some(p) if p.is_unknown() => continue,
            Some(p) => {
                seen.push(p.to_string());
                if !p.matches(wanted) {
                    continue;
                }
            }
            None => {}
        }
        if let Some(v) = find(child, manifests, wanted, seen, depth + 1)? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}
