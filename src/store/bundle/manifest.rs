//! The bundle manifest (`imgsync-bundle.json`) and the volume listing
//! (`imgsync-volume.json`): what a bundle holds, where, and what it needs
//! from earlier bundles. Both carry a checksum over their own listing.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::content::Digest;
use crate::error::{Error, Result};
use crate::store::tar::index::TarIndex;

pub const BUNDLE_FILE: &str = "imgsync-bundle.json";
pub const VOLUME_FILE: &str = "imgsync-volume.json";
/// Where the parts of a blob larger than a volume are stored.
pub const PARTS_DIR: &str = "imgsync-parts";
pub const FORMAT_VERSION: u32 = 1;
/// The format of a bundle manifest that lists referrers: an imgsync that
/// reads only format 1 would drop the lists and take the bundle for corrupt
/// (its checksum covers them), so it is told the bundle is newer instead.
pub const FORMAT_WITH_REFERRERS: u32 = 2;
const MANIFEST_CAP: u64 = 256 * 1024 * 1024;

/// One image of a bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BundleImage {
    /// The full source reference (`docker.io/library/redis:7`).
    pub reference: String,
    pub digest: Digest,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub size: u64,
    /// What travels with the image: referrers (recursively) and digest
    /// tags of it and of the manifests its index lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<BundleReferrer>,
}

/// A referrer (a manifest whose `subject` names a manifest of the image,
/// or another referrer of it) or a digest-tagged manifest
/// (`sha256-<hex>.sig`) a bundle holds for an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BundleReferrer {
    /// The manifest it is attached to (for a digest tag, the one the tag
    /// names).
    pub subject: Digest,
    pub digest: Digest,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub size: u64,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    /// The digest tag it goes by; `None` for a referrer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl BundleReferrer {
    /// Its descriptor, as a referrers list gives it.
    pub fn descriptor(&self) -> crate::content::Descriptor {
        let mut d = crate::content::Descriptor::new(
            self.media_type.clone(),
            self.digest.clone(),
            self.size,
        );
        d.artifact_type = self.artifact_type.clone();
        d
    }
}

/// Where a blob (or one part of it) is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlobPlace {
    pub volume: u32,
    /// Bytes of this part (the whole blob when it is not split).
    pub size: u64,
}

/// One blob a bundle carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BundleBlob {
    pub digest: Digest,
    pub size: u64,
    /// The volume holding it, or the volumes holding its parts in order.
    pub parts: Vec<BlobPlace>,
}

/// A blob the bundle relies on from an earlier bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequiredBlob {
    pub digest: Digest,
    pub size: u64,
    /// The id of the bundle that carried it.
    pub bundle: String,
}

/// An earlier bundle of the chain, so messages can name its file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BundleRef {
    pub id: String,
    pub file: String,
    pub created: String,
}

/// One volume of a bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeRef {
    pub number: u32,
    pub file: String,
    /// The checksum of the volume's own listing.
    pub checksum: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BundleManifest {
    #[serde(rename = "imgsyncBundle")]
    pub version: u32,
    pub id: String,
    pub created: String,
    /// The bundle this one was made `--since`, and the ones before it.
    #[serde(default)]
    pub since: Vec<BundleRef>,
    pub images: Vec<BundleImage>,
    pub blobs: Vec<BundleBlob>,
    #[serde(default)]
    pub required: Vec<RequiredBlob>,
    pub volumes: Vec<VolumeRef>,
    #[serde(default)]
    pub checksum: String,
}

/// One entry of a volume: its size and the digest of its bytes (for a
/// part of a blob, of that part alone), so a volume can be checked alone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeEntry {
    pub size: u64,
    pub digest: Digest,
}

/// The listing of one volume of a split bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeListing {
    #[serde(rename = "imgsyncVolume")]
    pub version: u32,
    pub bundle: String,
    pub number: u32,
    /// Archive entries of the blobs (and blob parts) it holds.
    pub entries: BTreeMap<String, VolumeEntry>,
    #[serde(default)]
    pub checksum: String,
}

#[allow(
    clippy::expect_used,
    reason = "listings are strings, numbers and string-keyed maps, which always serialise"
)]
fn listing_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(value).expect("listings serialise");
    b.push(b'\n');
    b
}

#[allow(
    clippy::expect_used,
    reason = "listings are strings, numbers and string-keyed maps, which always serialise"
)]
fn checksum_of<T: Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).expect("listings serialise");
    Digest::sha256_of(&bytes).to_string()
}

impl BundleManifest {
    /// Sets the format (the oldest that holds what the bundle lists) and
    /// the checksum over everything else.
    pub fn seal(&mut self) {
        self.version = if self.images.iter().any(|i| !i.referrers.is_empty()) {
            FORMAT_WITH_REFERRERS
        } else {
            FORMAT_VERSION
        };
        self.checksum.clear();
        self.checksum = checksum_of(self);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        listing_bytes(self)
    }

    /// Parses and checks the checksum; `what` names the file in messages.
    pub fn parse(bytes: &[u8], what: &str) -> Result<BundleManifest> {
        let version: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::Format(format!("{what}: invalid bundle manifest: {e}")))?;
        match version.get("imgsyncBundle").and_then(|v| v.as_u64()) {
            Some(v) if v == FORMAT_VERSION as u64 || v == FORMAT_WITH_REFERRERS as u64 => {}
            Some(v) => {
                return Err(Error::Unsupported(format!(
                    "{what}: bundle format {v} is newer than this imgsync reads ({FORMAT_WITH_REFERRERS})"
                )));
            }
            None => {
                return Err(Error::Format(format!(
                    "{what}: not an imgsync bundle manifest"
                )));
            }
        }
        let mut m: BundleManifest = serde_json::from_value(version)
            .map_err(|e| Error::Format(format!("{what}: invalid bundle manifest: {e}")))?;
        let stated = std::mem::take(&mut m.checksum);
        if checksum_of(&m) != stated {
            return Err(Error::Integrity(format!(
                "{what}: the bundle manifest does not match its checksum (the file is corrupt)"
            )));
        }
        m.checksum = stated;
        Ok(m)
    }

    /// Every blob this bundle carries or relies on, with the id of the
    /// bundle that carried it.
    pub fn covered(&self) -> HashMap<Digest, (u64, String)> {
        let mut out: HashMap<Digest, (u64, String)> = self
            .required
            .iter()
            .map(|r| (r.digest.clone(), (r.size, r.bundle.clone())))
            .collect();
        for b in &self.blobs {
            out.insert(b.digest.clone(), (b.size, self.id.clone()));
        }
        out
    }

    /// Every referrer and digest-tagged manifest the bundle lists, once
    /// each (an image with several names lists them under each).
    pub fn referrers(&self) -> Vec<&BundleReferrer> {
        let mut seen = std::collections::HashSet::new();
        self.images
            .iter()
            .flat_map(|i| &i.referrers)
            .filter(|r| seen.insert((&r.subject, &r.digest, &r.tag)))
            .collect()
    }

    /// The name the bundle was written as (`week48.tar`; volumes are that
    /// name with `.001`, `.002`, ...).
    pub fn name(&self) -> String {
        match self.volumes.first() {
            Some(v) if !v.checksum.is_empty() => v
                .file
                .rsplit_once('.')
                .map(|(b, _)| b.to_string())
                .unwrap_or_else(|| v.file.clone()),
            Some(v) => v.file.clone(),
            None => self.id.clone(),
        }
    }

    /// The file of a bundle of the chain, by id, for messages.
    pub fn bundle_file(&self, id: &str) -> Option<String> {
        if id == self.id {
            return Some(self.name());
        }
        self.since
            .iter()
            .find(|b| b.id == id)
            .map(|b| b.file.clone())
    }
}

impl VolumeListing {
    pub fn seal(&mut self) {
        self.checksum.clear();
        self.checksum = checksum_of(self);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        listing_bytes(self)
    }

    pub fn parse(bytes: &[u8], what: &str) -> Result<VolumeListing> {
        let corrupt = |why: String| Error::Integrity(format!("{what}: volume listing {why}"));
        let mut v: VolumeListing = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("is not valid (the volume is corrupt): {e}")))?;
        if v.version != FORMAT_VERSION {
            return Err(Error::Unsupported(format!(
                "{what}: volume format {} is not one this imgsync reads ({FORMAT_VERSION})",
                v.version
            )));
        }
        let stated = std::mem::take(&mut v.checksum);
        if checksum_of(&v) != stated {
            return Err(corrupt(
                "does not match its checksum (the volume is corrupt)".into(),
            ));
        }
        v.checksum = stated;
        Ok(v)
    }
}

/// A fresh bundle id: hex of a hash over the time, the process and the
/// output path.
pub fn new_id(out: &Path) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!(
        "{}:{}:{}:{}",
        now.as_nanos(),
        std::process::id(),
        out.display(),
        std::thread::current().name().unwrap_or("")
    );
    Digest::sha256_of(seed.as_bytes()).encoded()[..32].to_string()
}

/// The name of volume `n` of a bundle written to `out`.
pub fn volume_path(out: &Path, n: u32) -> PathBuf {
    let mut s = out.as_os_str().to_os_string();
    s.push(format!(".{n:03}"));
    PathBuf::from(s)
}

/// Reads a bundle manifest from what `--since` names: a bundle file, the
/// volumes of a split bundle (`PATH` when `PATH.001`... exist), or a
/// manifest written with `--manifest-out`.
pub fn read_since(path: &Path) -> Result<BundleManifest> {
    let what = path.display().to_string();
    let file = if path.exists() {
        path.to_path_buf()
    } else {
        // A split bundle: the manifest is in the last volume.
        let mut last = None;
        for n in 1..10_000 {
            let p = volume_path(path, n);
            if !p.exists() {
                break;
            }
            last = Some(p);
        }
        last.ok_or_else(|| {
            Error::NotFound(format!(
                "--since {what}: no such bundle, bundle volumes or bundle manifest"
            ))
        })?
    };
    let what = file.display().to_string();
    let mut f = std::fs::File::open(&file).map_err(|e| Error::path("open", &file, e))?;
    let mut head = [0u8; 1];
    let n = f
        .read(&mut head)
        .map_err(|e| Error::path("read", &file, e))?;
    if n == 1 && (head[0] == b'{' || head[0].is_ascii_whitespace()) {
        let bytes = std::fs::read(&file).map_err(|e| Error::path("read", &file, e))?;
        return BundleManifest::parse(&bytes, &what);
    }
    let f = std::fs::File::open(&file).map_err(|e| Error::path("open", &file, e))?;
    let tar = TarIndex::new(f, &what)?;
    match tar.read_small(BUNDLE_FILE, MANIFEST_CAP)? {
        Some(b) => BundleManifest::parse(&b, &what),
        None if tar.contains(VOLUME_FILE)? => Err(Error::NotFound(format!(
            "--since {what}: this volume does not hold the bundle manifest; give the last volume, or the bundle name without the .NNN suffix"
        ))),
        None => Err(Error::Format(format!(
            "--since {what}: not an imgsync bundle (no {BUNDLE_FILE})"
        ))),
    }
}

/// Reads the bundle manifest of a tar, if it has one.
pub fn manifest_in(tar: &TarIndex) -> Result<Option<BundleManifest>> {
    tar.read_small(BUNDLE_FILE, MANIFEST_CAP)?
        .map(|b| BundleManifest::parse(&b, tar.describe()))
        .transpose()
}

/// Reads the volume listing of a tar, if it has one.
pub fn listing_in(tar: &TarIndex) -> Result<Option<VolumeListing>> {
    tar.read_small(VOLUME_FILE, MANIFEST_CAP)?
        .map(|b| VolumeListing::parse(&b, tar.describe()))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_detects_changes() {
        let mut m = BundleManifest {
            version: FORMAT_VERSION,
            id: "abc".into(),
            created: "2026-01-01T00:00:00Z".into(),
            since: vec![],
            images: vec![],
            blobs: vec![BundleBlob {
                digest: Digest::sha256_of(b"x"),
                size: 1,
                parts: vec![BlobPlace { volume: 1, size: 1 }],
            }],
            required: vec![],
            volumes: vec![],
            checksum: String::new(),
        };
        m.seal();
        let bytes = m.to_bytes();
        assert_eq!(BundleManifest::parse(&bytes, "t").unwrap(), m);
        let tampered = String::from_utf8(bytes)
            .unwrap()
            .replace("\"size\": 1", "\"size\": 2");
        let e = BundleManifest::parse(tampered.as_bytes(), "t").unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
    }

    #[test]
    fn a_bundle_with_referrers_is_format_2_and_older_readers_are_told_so() {
        let d = Digest::sha256_of(b"image");
        let mut m = BundleManifest {
            version: FORMAT_VERSION,
            id: "abc".into(),
            created: "2026-01-01T00:00:00Z".into(),
            since: vec![],
            images: vec![BundleImage {
                reference: "example.com/a:1".into(),
                digest: d.clone(),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 5,
                referrers: vec![],
            }],
            blobs: vec![],
            required: vec![],
            volumes: vec![],
            checksum: String::new(),
        };
        m.seal();
        assert_eq!(m.version, FORMAT_VERSION);
        assert!(
            !String::from_utf8(m.to_bytes())
                .unwrap()
                .contains("referrers")
        );
        m.images[0].referrers.push(BundleReferrer {
            subject: d,
            digest: Digest::sha256_of(b"signature"),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 9,
            artifact_type: Some("application/example.signature".into()),
            tag: None,
        });
        m.seal();
        assert_eq!(m.version, FORMAT_WITH_REFERRERS);
        assert_eq!(BundleManifest::parse(&m.to_bytes(), "t").unwrap(), m);
        let newer = String::from_utf8(m.to_bytes())
            .unwrap()
            .replace("\"imgsyncBundle\": 2", "\"imgsyncBundle\": 3");
        let e = BundleManifest::parse(newer.as_bytes(), "t").unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
    }
}
