//! `imgsync inspect LOCATION`: what an image is, without copying it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::content::config::ConfigView;
use crate::content::media_type::is_image_config;
use crate::content::referrers::manifest_annotations;
use crate::content::{Descriptor, Digest, ManifestView, Platform};
use crate::error::{Error, Result};
use crate::store::ImageSource;
use crate::store::location::Location;
use crate::store::open::{Context, open_source};

#[derive(Debug, Serialize)]
pub struct LayerInfo {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct PlatformInfo {
    pub platform: String,
    pub digest: Digest,
    pub media_type: String,
}

#[derive(Debug, Serialize)]
pub struct ImageInfo {
    pub names: Vec<String>,
    pub digest: Digest,
    pub media_type: String,
    /// Entries of an index (empty for a single manifest).
    pub platforms: Vec<PlatformInfo>,
    /// The manifest described below: the root, or the index entry for the
    /// host platform (else the first).
    pub manifest_digest: Digest,
    pub platform: Option<String>,
    pub config: Option<Digest>,
    pub layers: Vec<LayerInfo>,
    pub size: u64,
    /// The root's `artifactType`, else (an artifact older than OCI 1.1)
    /// its config's media type when that is not an image config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifest the root refers to (a signature's image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// The root's own annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn verified(source: &dyn ImageSource, desc: &Descriptor) -> Result<Vec<u8>> {
    let bytes = source.read_manifest(desc)?;
    // Every algorithm is checked (not only sha256): these bytes may be
    // printed as they are by `--raw`/`--config`; a digest imgsync cannot
    // compute is an error naming it.
    if bytes.len() as u64 != desc.size || !desc.digest.matches(&bytes)? {
        return Err(Error::Integrity(format!(
            "{}: manifest {} does not match its descriptor",
            source.describe(),
            desc.digest
        )));
    }
    Ok(bytes)
}

/// Exact bytes of the selected image's root manifest (`--raw`), or of its
/// config (`--config`).
pub fn raw(loc: &Location, ctx: &Context, config: bool) -> Result<Vec<u8>> {
    let source = open_source(loc, ctx)?;
    let images = source.images()?;
    let image = match images.as_slice() {
        [one] => one,
        [] => {
            return Err(Error::NotFound(format!(
                "{} holds no images",
                source.describe()
            )));
        }
        many => {
            return Err(Error::Usage(format!(
                "{} holds {} images; select one with :NAME or :@N",
                source.describe(),
                many.len()
            )));
        }
    };
    let bytes = verified(source.as_ref(), &image.root)?;
    if !config {
        return Ok(bytes);
    }
    let (_, view) = descend(source.as_ref(), &image.root, bytes)?;
    let c = view.config.ok_or_else(|| {
        Error::NotFound(format!("{}: the image has no config", source.describe()))
    })?;
    verified(source.as_ref(), &c)
}

/// Goes from a root to the manifest for the host platform (or the first).
fn descend(
    source: &dyn ImageSource,
    root: &Descriptor,
    bytes: Vec<u8>,
) -> Result<(Descriptor, ManifestView)> {
    let mut desc = root.clone();
    let mut view = ManifestView::parse(&bytes, Some(&root.media_type))?;
    let host = Platform::host();
    for _ in 0..8 {
        if !view.kind.is_index() {
            return Ok((desc, view));
        }
        let candidates: Vec<&Descriptor> = view
            .manifests
            .iter()
            .filter(|d| d.platform.as_ref().is_none_or(|p| !p.is_unknown()))
            .collect();
        let pick = candidates
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(&host)))
            .or(candidates.first())
            .map(|d| (*d).clone())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{}: index {} lists no manifests",
                    source.describe(),
                    desc.digest
                ))
            })?;
        let b = verified(source, &pick)?;
        view = ManifestView::parse(&b, Some(&pick.media_type))?;
        desc = pick;
    }
    Err(Error::Format(format!(
        "{}: indexes nested too deep",
        source.describe()
    )))
}

pub fn run(loc: &Location, ctx: &Context) -> Result<Vec<ImageInfo>> {
    let source = open_source(loc, ctx)?;
    let mut out = Vec::new();
    for image in source.images()? {
        let bytes = verified(source.as_ref(), &image.root)?;
        let root_view = ManifestView::parse(&bytes, Some(&image.root.media_type))?;
        let platforms = root_view
            .manifests
            .iter()
            .map(|d| PlatformInfo {
                platform: d
                    .platform
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
                digest: d.digest.clone(),
                media_type: d.media_type.clone(),
            })
            .collect();
        let media_type = root_view
            .media_type
            .clone()
            .unwrap_or_else(|| root_view.kind.media_type().to_string());
        let artifact_type = root_view.artifact_type.clone().or_else(|| {
            root_view
                .config
                .as_ref()
                .filter(|c| !is_image_config(&c.media_type))
                .map(|c| c.media_type.clone())
        });
        let subject = root_view.subject.clone();
        let annotations = manifest_annotations(&bytes).unwrap_or_default();
        let (mdesc, view) = descend(source.as_ref(), &image.root, bytes)?;
        let platform = match &view.config {
            Some(c) if is_image_config(&c.media_type) => {
                let cfg = verified(source.as_ref(), c)?;
                ConfigView::parse(&cfg)
                    .ok()
                    .filter(|v| !v.platform.os.is_empty())
                    .map(|v| v.platform.to_string())
            }
            _ => None,
        };
        let layers: Vec<LayerInfo> = view
            .layers
            .iter()
            .map(|l| LayerInfo {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect();
        out.push(ImageInfo {
            names: image.names.iter().map(|n| n.to_string()).collect(),
            digest: image.root.digest.clone(),
            media_type,
            platforms,
            manifest_digest: mdesc.digest,
            platform,
            config: view.config.as_ref().map(|c| c.digest.clone()),
            size: layers.iter().map(|l| l.size).sum::<u64>()
                + view.config.as_ref().map_or(0, |c| c.size),
            layers,
            artifact_type,
            subject,
            annotations,
        });
    }
    Ok(out)
}
