//! The parts of an image config imgsync reads (image-spec config.md): the
//! platform and `rootfs.diff_ids`. Config bytes are never rewritten.

use serde::Deserialize;

use super::digest::Digest;
use super::platform::Platform;
use crate::error::Error;

#[derive(Debug, Clone)]
pub struct ConfigView {
    pub platform: Platform,
    pub diff_ids: Vec<Digest>,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(rename = "os.version", default)]
    os_version: Option<String>,
    rootfs: Option<RootFs>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Option<Vec<Digest>>,
}

impl ConfigView {
    pub fn parse(bytes: &[u8]) -> Result<ConfigView, Error> {
        let wire: Wire = serde_json::from_slice(bytes)
            .map_err(|e| Error::Format(format!("invalid image config JSON: {e}")))?;
        let rootfs = wire
            .rootfs
            .ok_or_else(|| Error::Format("image config has no rootfs".into()))?;
        Ok(ConfigView {
            platform: Platform {
                architecture: wire.architecture.unwrap_or_default(),
                os: wire.os.unwrap_or_default(),
                variant: wire.variant.filter(|v| !v.is_empty()),
                os_version: wire.os_version.filter(|v| !v.is_empty()),
                os_features: None,
                features: None,
            },
            diff_ids: rootfs.diff_ids.unwrap_or_default(),
        })
    }
}
