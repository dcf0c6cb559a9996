//! Platforms (image-spec image-index.md "platform") and matching.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
}

impl Platform {
    /// Parses `os/arch[/variant]`, as `--platform` takes it.
    pub fn parse(s: &str) -> Result<Platform, Error> {
        let parts: Vec<&str> = s.split('/').collect();
        let (os, architecture, variant) = match *parts.as_slice() {
            [os, arch] => (os, arch, None),
            [os, arch, variant] => (os, arch, Some(variant)),
            _ => ("", "", None),
        };
        if os.is_empty() || architecture.is_empty() || variant.is_some_and(str::is_empty) {
            return Err(Error::Usage(format!(
                "invalid platform {s:?}: expected os/arch[/variant], e.g. linux/arm64"
            )));
        }
        Ok(Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
            os_version: None,
            os_features: None,
            features: None,
        })
    }

    /// The platform of the machine imgsync runs on.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "arm" => "arm",
            other => other,
        };
        let os = match std::env::consts::OS {
            "macos" => "linux", // images for a Mac host run in a Linux VM
            other => other,
        };
        Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: None,
            os_version: None,
            os_features: None,
            features: None,
        }
    }

    /// Buildkit attestation entries carry `unknown/unknown`: never an image
    /// to run or to select.
    pub fn is_unknown(&self) -> bool {
        self.os == "unknown" && self.architecture == "unknown"
    }

    /// Does `self` (an index entry) satisfy the `wanted` platform? A wanted
    /// platform without a variant matches any variant; arm64 without a
    /// variant is the same as arm64/v8.
    pub fn matches(&self, wanted: &Platform) -> bool {
        if self.os != wanted.os || self.architecture != wanted.architecture {
            return false;
        }
        match &wanted.variant {
            None => true,
            Some(v) => {
                normalized_variant(&self.architecture, self.variant.as_deref())
                    == normalized_variant(&wanted.architecture, Some(v))
            }
        }
    }
}

fn normalized_variant<'a>(arch: &str, variant: Option<&'a str>) -> Option<&'a str> {
    match (arch, variant) {
        ("arm64", None) => Some("v8"),
        ("arm", None) => Some("v7"),
        (_, v) => v,
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let want = Platform::parse("linux/arm64").unwrap();
        let mut entry = Platform::parse("linux/arm64/v8").unwrap();
        assert!(entry.matches(&want));
        assert!(entry.matches(&Platform::parse("linux/arm64/v8").unwrap()));
        entry.variant = None;
        assert!(entry.matches(&Platform::parse("linux/arm64/v8").unwrap()));
        assert!(!entry.matches(&Platform::parse("linux/amd64").unwrap()));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v7").is_err());
    }

    #[test]
    fn reads_os_version() {
        let p: Platform = serde_json::from_str(
            r#"{"architecture":"amd64","os":"windows","os.version":"10.0.17763.1"}"#,
        )
        .unwrap();
        assert_eq!(p.os_version.as_deref(), Some("10.0.17763.1"));
    }
}
