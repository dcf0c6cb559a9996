//! Writing images into one tar: an OCI archive, or a docker archive in the
//! Docker 25+ shape (OCI layout plus `manifest.json` and `repositories`) or
//! the legacy shape (`<id>/layer.tar`, `<config>.json`).
//!
//! Entries are appended as blobs arrive, one at a time, with deterministic
//! headers; the metadata files come last. The archive is written to a
//! temporary file beside the destination and renamed over it on commit, so a
//! failed or interrupted copy leaves the destination as it was. Standard
//! output (`-`) is streamed directly.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::layout::{OCI_LAYOUT_CONTENT, index_bytes, merge_index_entries};
use super::spool::{register_cleanup, unregister_cleanup};
use super::{ImageName, ImageSink, SinkCaps};
use crate::content::media_type::{OCI_INDEX, is_image_config};
use crate::content::{Descriptor, Digest, MAX_MANIFEST_BYTES, Platform, RawManifest};
use crate::error::{Error, Result};

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

struct State {
    builder: Option<tar::Builder<BufWriter<Box<dyn Write + Send>>>>,
    written: HashSet<String>,
}

pub struct ArchiveSink {
    label: String,
    flavor: Flavor,
    platform: Option<Platform>,
    target: Mutex<Option<Target>>,
    state: Mutex<State>,
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
        let (target, out): (Target, Box<dyn Write + Send>) = if path == "-" {
            (Target::Stdout, Box::new(io::stdout()))
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
            let tmp = super::spool::destination_tempfile(&dir, &format!(".{file_name}.imgsync-"))
                .map_err(|e| {
                Error::path("cannot write destination; create a file in", &dir, e)
            })?;
            register_cleanup(tmp.path());
            let f = tmp
                .reopen()
                .map_err(|e| Error::path("write", tmp.path(), e))?;
            (Target::File { tmp, dest }, Box::new(f))
        };
        let mut builder = tar::Builder::new(BufWriter::with_capacity(1024 * 1024, out));
        builder.mode(tar::HeaderMode::Deterministic);
        Ok(ArchiveSink {
            label,
            flavor,
            platform,
            target: Mutex::new(Some(target)),
            state: Mutex::new(State {
                builder: Some(builder),
                written: HashSet::new(),
            }),
            manifests: Mutex::new(HashMap::new()),
            configs: Mutex::new(HashMap::new()),
            images: Mutex::new(Vec::new()),
        })
    }

    fn append(&self, state: &mut State, path: &str, size: u64, data: &mut dyn Read) -> Result<()> {
        let builder = state
            .builder
            .as_mut()
            .ok_or_else(|| Error::Usage(format!("{}: archive already finished", self.label)))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, data)
            .map_err(|e| Error::io(format!("write {path} into {}", self.label), e))?;
        state.written.insert(path.to_string());
        Ok(())
    }

    fn append_bytes(&self, state: &mut State, path: &str, bytes: &[u8]) -> Result<()> {
        self.append(state, path, bytes.len() as u64, &mut &bytes[..])
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
        let mut state = self.state.lock().unwrap();
        let images = self.images.lock().unwrap().clone();
        if self.flavor != Flavor::DockerLegacy {
            let entries = merge_index_entries(Vec::new(), &images);
            let doc = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
            self.append_bytes(&mut state, "index.json", &index_bytes(&doc))?;
            self.append_bytes(&mut state, "oci-layout", OCI_LAYOUT_CONTENT)?;
        }
        if self.flavor != Flavor::Oci {
            let (manifest_json, repositories) = self.docker_metadata(&images)?;
            self.append_bytes(&mut state, "manifest.json", &manifest_json)?;
            if let Some(r) = repositories {
                self.append_bytes(&mut state, "repositories", &r)?;
            }
        }
        let builder = state.builder.take().expect("finish runs once");
        let mut w = builder
            .into_inner()
            .map_err(|e| Error::io(format!("write {}", self.label), e))?;
        w.flush()
            .map_err(|e| Error::io(format!("write {}", self.label), e))?;
        Ok(())
    }

    /// `manifest.json` and `repositories` for the images written.
    fn docker_metadata(
        &self,
        images: &[(Descriptor, Vec<ImageName>)],
    ) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
        let manifests = self.manifests.lock().unwrap();
        let configs = self.configs.lock().unwrap();
        let mut entries: Vec<Value> = Vec::new();
        let mut repositories: serde_json::Map<String, Value> = serde_json::Map::new();
        for (root, names) in images {
            let image = super::docker_archive::write::pick_platform_manifest(
                root,
                &manifests,
                self.platform.as_ref(),
                &self.label,
            )?;
            let config = image.config.as_ref().expect("picked manifests are images");
            let config_bytes = configs.get(&config.digest).ok_or_else(|| {
                Error::NotFound(format!(
                    "{}: config {} was not written",
                    self.label, config.digest
                ))
            })?;
            let diff_ids = crate::content::config::ConfigView::parse(config_bytes)?.diff_ids;
            let layers: Vec<String> = match self.flavor {
                Flavor::DockerLegacy => diff_ids
                    .iter()
                    .map(|d| format!("{}/layer.tar", d.encoded()))
                    .collect(),
                _ => image.layers.iter().map(|l| self.blob_entry(l)).collect(),
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
                "Config": self.blob_entry(config),
                "RepoTags": repo_tags,
                "Layers": layers,
            }));
        }
        let mut mj = serde_json::to_vec(&Value::Array(entries)).expect("JSON values serialise");
        mj.push(b'\n');
        let repos = (!repositories.is_empty()).then(|| {
            let mut r =
                serde_json::to_vec(&Value::Object(repositories)).expect("JSON values serialise");
            r.push(b'\n');
            r
        });
        Ok((mj, repos))
    }
}

/// Captures a small blob's bytes while they are written.
struct Capture<'a> {
    inner: &'a mut dyn Read,
    buf: Option<Vec<u8>>,
}

impl Read for Capture<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        if let Some(b) = &mut self.buf {
            b.extend_from_slice(&out[..n]);
        }
        Ok(n)
    }
}

impl ImageSink for ArchiveSink {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn caps(&self) -> SinkCaps {
        match self.flavor {
            Flavor::Oci | Flavor::Docker => SinkCaps {
                wants_uncompressed: false,
                single_platform: false,
                accepts_zstd: true,
                images_only: self.flavor == Flavor::Docker,
            },
            Flavor::DockerLegacy => SinkCaps {
                wants_uncompressed: true,
                single_platform: true,
                accepts_zstd: false,
                images_only: true,
            },
        }
    }

    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .written
            .contains(&self.blob_entry(desc)))
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
        let mut state = self.state.lock().unwrap();
        if state.written.contains(&path) {
            return Ok(());
        }
        self.append(&mut state, &path, desc.size, &mut r)?;
        if self.flavor == Flavor::DockerLegacy && !is_image_config(&desc.media_type) {
            let dir = desc.digest.encoded();
            self.append_bytes(&mut state, &format!("{dir}/VERSION"), b"1.0")?;
            let json = format!("{{\"id\":\"{dir}\",\"created\":\"1970-01-01T00:00:00Z\"}}");
            self.append_bytes(&mut state, &format!("{dir}/json"), json.as_bytes())?;
        }
        drop(state);
        if let Some(b) = r.buf {
            self.configs.lock().unwrap().insert(desc.digest.clone(), b);
        }
        Ok(())
    }

    fn put_manifest(&self, manifest: &RawManifest) -> Result<()> {
        if self.flavor != Flavor::DockerLegacy {
            let desc = manifest.descriptor();
            let path = self.blob_entry(&desc);
            let mut state = self.state.lock().unwrap();
            if !state.written.contains(&path) {
                self.append_bytes(&mut state, &path, &manifest.bytes)?;
            }
        }
        self.manifests
            .lock()
            .unwrap()
            .insert(manifest.digest.clone(), manifest.clone());
        Ok(())
    }

    fn add_image(&self, root: &Descriptor, names: &[ImageName]) -> Result<()> {
        self.images
            .lock()
            .unwrap()
            .push((root.clone(), names.to_vec()));
        Ok(())
    }

    fn commit(&self) -> Result<()> {
        self.finish()?;
        match self.target.lock().unwrap().take() {
            Some(Target::File { tmp, dest }) => {
                let tmp_path = tmp.path().to_path_buf();
                tmp.persist(&dest)
                    .map_err(|e| Error::path("write", &dest, e.error))?;
                unregister_cleanup(&tmp_path);
            }
            Some(Target::Stdout) | None => {}
        }
        Ok(())
    }

    fn abort(&self) {
        if let Some(Target::File { tmp, .. }) = self.target.lock().unwrap().take() {
            unregister_cleanup(tmp.path());
            drop(tmp);
        }
    }
}
