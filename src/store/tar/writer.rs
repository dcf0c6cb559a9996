//! Writing images into one tar: an OCI archive, or a docker archive in the
//! Docker 25+ shape (OCI layout plus `manifest.json` and `repositories`) or
//! the legacy shape (`<id>/layer.tar`, `<config>.json`).
//!
//! Entries are added as blobs arrive, in parallel into a file (see
//! [`super::out`]); the metadata files come last. The archive is written
//! to a temporary file beside the destination and renamed over it on
//! commit, so a failed or interrupted copy leaves the destination as it was.
//! Standard output (`-`) is streamed directly.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::out::TarOut;
use crate::content::media_type::{OCI_INDEX, is_image_config};
use crate::content::{Descriptor, Digest, MAX_MANIFEST_BYTES, Platform, RawManifest};
use crate::error::{Error, Result};
use crate::store::cleanup::{register_cleanup, unregister_cleanup};
use crate::store::layout::{OCI_LAYOUT_CONTENT, index_bytes, merge_index_entries};
use crate::store::{ImageName, ImageSink, SinkCaps};

/// Which kind of archive to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Oci,
    Docker,
    DockerLegacy,
}

enum Target {
    File {
        tmp: tempfile::NamedTempFile,
        dest: PathBuf,
    },
    Stdout,
}

pub struct ArchiveSink {
    label: String,
    flavor: Flavor,
    platform: Option<Platform>,
    target: Mutex<Option<Target>>,
    out: TarOut,
    manifests: Mutex<HashMap<Digest, RawManifest>>,
    configs: Mutex<HashMap<Digest, Vec<u8>>>,
    images: Mutex<Vec<(Descriptor, Vec<ImageName>)>>,
}

impl ArchiveSink {
    /// Prepares to write an archive at `path` (`-` for standard output).
    /// `platform` picks the manifest docker loads from a multi-platform
    /// image (default: the host's).
    pub fn create(
        path: &str,
        flavor: Flavor,
        platform: Option<Platform>,
        label: String,
    ) -> Result<ArchiveSink> {
        let (target, out) = if path == "-" {
            (
                Target::Stdout,
                TarOut::stream(Box::new(io::stdout()), label.clone()),
            )
        } else {
            let dest = PathBuf::from(path);
            if dest.is_dir() {
                return Err(Error::Usage(format!("{label}: {path} is a directory")));
            }
            let dir = match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let file_name = dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = crate::store::atomic_file::locked_destination_tempfile(
                &dir,
                &format!(".{file_name}.imgsync-partial-"),
            )
            .map_err(|e| Error::path("cannot write destination; create a file in", &dir, e))?;
            register_cleanup(tmp.path());
            let f = tmp
                .reopen()
                .map_err(|e| Error::path("write", tmp.path(), e))?;
            (Target::File { tmp, dest }, TarOut::file(f, label.clone()))
        };
        if flavor != Flavor::DockerLegacy {
            // Layout readers that walk directories expect these.
            out.dir("blobs/")?;
            out.dir("blobs/sha256/")?;
        }
        Ok(ArchiveSink {
            label,
            flavor,
            platform,
            target: Mutex::new(Some(target)),
            out,
            manifests: Mutex::new(HashMap::new()),
            configs: Mutex::new(HashMap::new()),
            images: Mutex::new(Vec::new()),
        })
    }

    fn blob_entry(&self, desc: &Descriptor) -> String {
        match self.flavor {
            Flavor::DockerLegacy if is_image_config(&desc.media_type) => {
                format!("{}.json", desc.digest.encoded())
            }
            Flavor::DockerLegacy => format!("{}/layer.tar", desc.digest.encoded()),
            _ => format!(
                "blobs/{}/{}",
                desc.digest.algorithm(),
                desc.digest.encoded()
            ),
        }
    }

    fn finish(&self) -> Result<()> {
        let images = self
            .images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if self.flavor != Flavor::DockerLegacy {
            let entries = merge_index_entries(Vec::new(), &images);
            let doc = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
            self.out.entry_bytes("index.json", &index_bytes(&doc))?;
            self.out.entry_bytes("oci-layout", OCI_LAYOUT_CONTENT)?;
        }
        if self.flavor != Flavor::Oci {
            let (manifest_json, repositories) = self.docker_metadata(&images)?;
            self.out.entry_bytes("manifest.json", &manifest_json)?;
            if let Some(r) = repositories {
                self.out.entry_bytes("repositories", &r)?;
            }
        }
        self.out.finish()
    }

    /// `manifest.json` and `repositories` for the images written.
    fn docker_metadata(
        &self,
        images: &[(Descriptor, Vec<ImageName>)],
    ) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
        docker_metadata(
            images,
            &self.manifests.lock().unwrap_or_else(|e| e.into_inner()),
            &self.configs.lock().unwrap_or_else(|e| e.into_inner()),
            self.platform.as_ref(),
            &self.label,
            self.flavor == Flavor::DockerLegacy,
            None,
        )
    }
}

/// The directory a destination file is in.
fn parent_dir(dest: &std::path::Path) -> &std::path::Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    }
}

/// The archive entry of a blob in an OCI layout.
fn layout_entry(desc: &Descriptor) -> String {
    format!(
        "blobs/{}/{}",
        desc.digest.algorithm(),
        desc.digest.encoded()
    )
}

/// `manifest.json` and `repositories` for `images`, from the manifests and
/// configs written. Layers are named `<DiffID>/layer.tar` when `legacy`,
/// else by their blob path. With `carried`, an image that has no manifest
/// for the platform, or a blob `carried` says is absent, is left out (a
/// bundle that relies on earlier ones); without, that is an error.
pub(crate) fn docker_metadata(
    images: &[(Descriptor, Vec<ImageName>)],
    manifests: &HashMap<Digest, RawManifest>,
    configs: &HashMap<Digest, Vec<u8>>,
    platform: Option<&Platform>,
    label: &str,
    legacy: bool,
    carried: Option<&dyn Fn(&Digest) -> bool>,
) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    let mut entries: Vec<Value> = Vec::new();
    let mut repositories: serde_json::Map<String, Value> = serde_json::Map::new();
    for (root, names) in images {
        let image = match crate::store::docker_archive::write::pick_platform_manifest(
            root, manifests, platform, label,
        ) {
            Ok(m) => m,
            Err(_) if carried.is_some() => continue,
            Err(e) => return Err(e),
        };
        let Some(config) = image.config.as_ref() else {
            return Err(Error::Format(format!(
                "{label}: image {} has no config",
                root.digest
            )));
        };
        if let Some(has) = carried
            && !(has(&config.digest) && image.layers.iter().all(|l| has(&l.digest)))
        {
            continue;
        }
        let config_bytes = configs.get(&config.digest).ok_or_else(|| {
            Error::NotFound(format!("{label}: config {} was not written", config.digest))
        })?;
        let diff_ids = crate::content::config::ConfigView::parse(config_bytes)?.diff_ids;
        let layers: Vec<String> = if legacy {
            diff_ids
                .iter()
                .map(|d| format!("{}/layer.tar", d.encoded()))
                .collect()
        } else {
            image.layers.iter().map(layout_entry).collect()
        };
        let config_entry = if legacy {
            format!("{}.json", config.digest.encoded())
        } else {
            layout_entry(config)
        };
        let repo_tags: Vec<String> = names
            .iter()
            .filter_map(ImageName::reference)
            .filter_map(|r| r.familiar_tagged())
            .collect();
        if let Some(top) = diff_ids.last() {
            for r in names.iter().filter_map(ImageName::reference) {
                if let Some(tag) = &r.tag {
                    let repo = repositories
                        .entry(r.familiar_name())
                        .or_insert_with(|| json!({}));
                    repo[tag] = Value::String(top.encoded().to_string());
                }
            }
        }
        entries.push(json!({
            "Config": config_entry,
            "RepoTags": repo_tags,
            "Layers": layers,
        }));
    }
    #[allow(
        clippy::expect_used,
        reason = "a serde_json::Value (string keys only) always serialises"
    )]
    let mut mj = serde_json::to_vec(&Value::Array(entries)).expect("JSON values serialise");
    mj.push(b'\n');
    let repos = (!repositories.is_empty()).then(|| {
        #[allow(
            clippy::expect_used,
            reason = "a serde_json::Value (string keys only) always serialises"
        )]
        let mut r =
            serde_json::to_vec(&Value::Object(repositories)).expect("JSON values serialise");
        r.push(b'\n');
        r
    });
    Ok((mj, repos))
}

/// Captures a small blob's bytes while they are written.
pub(crate) struct Capture<'a> {
    pub(crate) inner: &'a mut dyn Read,
    pub(crate) buf: Option<Vec<u8>>,
}

impl Read for Capture<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        if let Some(b) = &mut self.buf {
            let read = out
                .get(..n)
                .ok_or_else(|| io::Error::other("a reader overran its buffer"))?;
            b.extend_from_slice(read);
        }
        Ok(n)
    }
}

impl ImageSink for ArchiveSink {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn caps(&self) -> SinkCaps {
        // A tar's space for a blob is taken when it starts: no retries.
        match self.flavor {
            Flavor::Oci | Flavor::Docker => SinkCaps {
                images_only: self.flavor == Flavor::Docker,
                needs_layer_bytes: self.flavor == Flavor::Docker,
                retry_blobs: false,
                holds_referrers: self.flavor == Flavor::Oci,
                ..SinkCaps::ANY
            },
            Flavor::DockerLegacy => SinkCaps {
                wants_uncompressed: true,
                single_platform: true,
                accepts_zstd: false,
                images_only: true,
                needs_layer_bytes: true,
                retry_blobs: false,
                holds_referrers: false,
                ..SinkCaps::ANY
            },
        }
    }

    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.out.contains(&self.blob_entry(desc)))
    }

    fn put_blob(&self, desc: &Descriptor, reader: &mut dyn Read) -> Result<()> {
        let capture = self.flavor != Flavor::Oci
            && is_image_config(&desc.media_type)
            && desc.size <= MAX_MANIFEST_BYTES;
        let mut r = Capture {
            inner: reader,
            buf: capture.then(Vec::new),
        };
        let path = self.blob_entry(desc);
        if !self.out.entry(&path, desc.size, &mut r)? {
            return Ok(());
        }
        if self.flavor == Flavor::DockerLegacy && !is_image_config(&desc.media_type) {
            let dir = desc.digest.encoded();
            self.out.entry_bytes(&format!("{dir}/VERSION"), b"1.0")?;
            let json = format!("{{\"id\":\"{dir}\",\"created\":\"1970-01-01T00:00:00Z\"}}");
            self.out
                .entry_bytes(&format!("{dir}/json"), json.as_bytes())?;
        }
        if let Some(b) = r.buf {
            self.configs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(desc.digest.clone(), b);
        }
        Ok(())
    }

    fn put_manifest(&self, manifest: &RawManifest) -> Result<()> {
        if self.flavor != Flavor::DockerLegacy {
            let desc = manifest.descriptor();
            self.out
                .entry_bytes(&self.blob_entry(&desc), &manifest.bytes)?;
        }
        self.manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(manifest.digest.clone(), manifest.clone());
        Ok(())
    }

    fn add_image(&self, root: &Descriptor, names: &[ImageName]) -> Result<()> {
        self.images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((root.clone(), names.to_vec()));
        Ok(())
    }

    fn add_referrer(&self, referrer: &Descriptor, subject: &Descriptor) -> Result<()> {
        if self.flavor != Flavor::Oci {
            return Err(Error::Unsupported(format!(
                "{}: a docker archive cannot hold referrer {} of {}",
                self.label, referrer.digest, subject.digest
            )));
        }
        // An index.json entry without a name, as in a layout.
        self.add_image(referrer, &[])
    }

    fn commit(&self) -> Result<()> {
        self.finish()?;
        match self.target.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(Target::File { tmp, dest }) => {
                let tmp_path = tmp.path().to_path_buf();
                crate::store::atomic_file::publish(tmp, &dest)?;
                unregister_cleanup(&tmp_path);
                crate::store::atomic_file::sync_dir(parent_dir(&dest))?;
            }
            Some(Target::Stdout) | None => {}
        }
        Ok(())
    }

    fn abort(&self) {
        if let Some(Target::File { tmp, .. }) =
            self.target.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            unregister_cleanup(tmp.path());
            drop(tmp);
        }
    }
}
