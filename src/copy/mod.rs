//! The copy engine: one walk over an image graph from a source to a sink.
//!
//! 1. Plan (sequential, small): read and verify every manifest, index and
//!    config; select platforms; decide per layer whether it is copied as is
//!    or transcoded; collect one job per distinct blob of the whole run.
//! 2. Move blobs (parallel, `jobs` workers): skip what the sink has, else
//!    stream source → verify → (transcode) → sink.
//! 3. Emit (sequential): write manifests children first, rewritten only
//!    where a conversion changed a child; then name the images.
//!
//! The caller commits or aborts the sink.

mod convert;
mod pieces;
mod stream;
mod zstd_frames;

use std::collections::HashMap;
use std::io::{self, BufWriter, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub use convert::Format;
use stream::{DiffIdTee, HashReader, HashWriter, VerifyReader};
// The codecs as the engine uses them, for benchmarks.
pub use stream::{FinishWrite, decoder, encoder};

use crate::content::config::ConfigView;
use crate::content::manifest::is_manifest_media_type;
use crate::content::media_type::{self, Compression};
use crate::content::{
    Descriptor, Digest, DigestHasher, MAX_MANIFEST_BYTES, ManifestKind, ManifestView, Platform,
    RawManifest,
};
use crate::error::{Error, Result};
use crate::progress::{BlobOutcome, Progress};
use crate::store::{ImageName, ImageSink, ImageSource, SourceImage};

#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Blobs moved at once.
    pub jobs: usize,
    /// Platforms to keep from an index (empty: all).
    pub platforms: Vec<Platform>,
    /// Manifest media-type family to write (None: as read).
    pub format: Option<Format>,
    /// Layer compression to write (None: as read).
    pub compress: Option<Compression>,
    pub compress_level: Option<i32>,
    /// Where transcoded blobs are spooled when the sink has no place.
    pub tmpdir: PathBuf,
    /// Collect every error instead of stopping at the first (verify).
    pub keep_going: bool,
    /// Whole-blob retries after a transient (network) failure.
    pub retry_times: u32,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            jobs: default_jobs(),
            platforms: Vec::new(),
            format: None,
            compress: None,
            compress_level: None,
            tmpdir: std::env::temp_dir(),
            keep_going: false,
            retry_times: 3,
        }
    }
}

/// Two blobs in flight per core, at least 4: local copies wait on disk as
/// much as on CPU.
pub fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    (cores * 2).clamp(4, 16)
}

/// One image to copy and the names it gets at the destination.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    pub image: SourceImage,
    pub names: Vec<ImageName>,
}

/// A digest that a conversion changed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Conversion {
    pub what: String,
    pub old: Digest,
    pub new: Digest,
    pub why: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageResult {
    pub label: String,
    pub source_digest: Digest,
    pub digest: Digest,
    pub media_type: String,
    pub names: Vec<String>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct CopyReport {
    pub images: Vec<ImageResult>,
    /// Images the destination already held under the same names.
    pub images_up_to_date: usize,
    pub blobs_copied: usize,
    pub blobs_skipped: usize,
    pub blobs_mounted: usize,
    /// Requests sent to registries (set by the command).
    pub requests: u64,
    pub bytes_copied: u64,
    pub conversions: Vec<Conversion>,
    #[serde(skip)]
    pub errors: Vec<Error>,
}

type JobId = usize;
type JobResult = Result<(JobOutput, BlobOutcome)>;

struct Job {
    src: Descriptor,
    /// Expected DiffID of a layer (from the config).
    diff_id: Option<Digest>,
    /// Compression of the source layer, when it is a known layer type.
    compression: Option<Compression>,
    /// Recompress to this.
    transcode: Option<Compression>,
    /// Bytes already in memory (configs).
    inline: Option<Arc<Vec<u8>>>,
    /// A foreign layer: its bytes may be absent.
    foreign: bool,
    what: String,
}

#[derive(Debug, Clone)]
struct JobOutput {
    desc: Descriptor,
}

enum Node {
    Index {
        src: Descriptor,
        raw: Vec<u8>,
        kind: ManifestKind,
        /// (position in the original list, child)
        children: Vec<(usize, Node)>,
        filtered: bool,
    },
    Manifest {
        src: Descriptor,
        raw: Vec<u8>,
        kind: ManifestKind,
        /// A container image (not an artifact): media types may be converted.
        image: bool,
        subject: Option<Digest>,
        config: Option<JobId>,
        layers: Vec<JobId>,
    },
    /// Anything else an index lists: copied as an opaque blob.
    Blob { job: JobId },
}

struct Planner<'a> {
    source: &'a dyn ImageSource,
    sink: &'a dyn ImageSink,
    opts: &'a CopyOptions,
    jobs: Vec<Job>,
    by_key: HashMap<(Digest, Option<Compression>), JobId>,
    manifests_read: HashMap<Digest, Vec<u8>>,
    /// The image being planned was built by its source (no digest to keep).
    synthesized: bool,
}

impl<'a> Planner<'a> {
    fn fetch(&mut self, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
        if let Some(b) = self.manifests_read.get(&desc.digest) {
            // The same bytes can be described wrongly by another descriptor.
            verify_bytes(b, desc, what)?;
            return Ok(b.clone());
        }
        if desc.size > MAX_MANIFEST_BYTES {
            return Err(Error::Format(format!(
                "{what}: {} is {} bytes, over the {MAX_MANIFEST_BYTES}-byte manifest limit",
                desc.digest, desc.size
            )));
        }
        let bytes = self.source.read_manifest(desc)?;
        verify_bytes(&bytes, desc, what)?;
        self.manifests_read
            .insert(desc.digest.clone(), bytes.clone());
        Ok(bytes)
    }

    fn job(&mut self, job: Job) -> Result<JobId> {
        let key = (job.src.digest.clone(), job.transcode);
        if let Some(&id) = self.by_key.get(&key) {
            // The same blob described again: every description must agree.
            let first = &self.jobs[id];
            if first.src.size != job.src.size {
                return Err(Error::Integrity(format!(
                    "{}: descriptor says {} bytes, but {} says {}",
                    job.what, job.src.size, first.what, first.src.size
                )));
            }
            if let (Some(a), Some(b)) = (&first.diff_id, &job.diff_id)
                && a != b
            {
                return Err(Error::Integrity(format!(
                    "{}: its config gives DiffID {b}, but {} gives {a}",
                    job.what, first.what
                )));
            }
            if first.diff_id.is_none() && job.diff_id.is_some() {
                self.jobs[id].diff_id = job.diff_id;
            }
            return Ok(id);
        }
        let id = self.jobs.len();
        self.jobs.push(job);
        self.by_key.insert(key, id);
        Ok(id)
    }

    fn plan_image(&mut self, image: &SourceImage) -> Result<Node> {
        self.synthesized = image.synthesized;
        let label = image.label();
        let platforms: Vec<Platform> =
            if self.opts.platforms.is_empty() && self.sink.caps().single_platform {
                vec![Platform::host()]
            } else {
                self.opts.platforms.clone()
            };
        self.plan_node(&image.root, &label, &platforms, 0, true)
    }

    fn plan_node(
        &mut self,
        desc: &Descriptor,
        label: &str,
        platforms: &[Platform],
        depth: usize,
        root: bool,
    ) -> Result<Node> {
        if depth > 8 {
            return Err(Error::Format(format!(
                "{label}: indexes nested more than 8 deep (a loop?)"
            )));
        }
        let raw = self.fetch(desc, label)?;
        let view = ManifestView::parse(&raw, Some(&desc.media_type))
            .map_err(|e| Error::Format(format!("{label}: manifest {}: {e}", desc.digest)))?;
        let mut src = desc.clone();
        src.media_type = view
            .media_type
            .clone()
            .unwrap_or_else(|| view.kind.media_type().to_string());
        if view.kind == ManifestKind::Schema1 {
            return Err(Error::Unsupported(format!(
                "{label}: {} is a Docker schema 1 manifest, which imgsync does not copy",
                desc.digest
            )));
        }
        if !view.kind.is_index() {
            return self.plan_manifest(src, raw, view, label, root);
        }
        // An index: keep every child, or the ones for the wanted platforms.
        let single = root && platforms.len() == 1;
        let mut children = Vec::new();
        let mut filtered = false;
        for (i, child) in view.manifests.iter().enumerate() {
            // An entry without a media type is a manifest if its bytes
            // read as one (media types were optional before OCI 1.0.2).
            let is_manifest = is_manifest_media_type(&child.media_type)
                || (child.media_type.is_empty()
                    && child.size <= MAX_MANIFEST_BYTES
                    && ManifestView::parse(&self.fetch(child, label)?, None).is_ok());
            if !platforms.is_empty() {
                let keep = match &child.platform {
                    Some(p) => !p.is_unknown() && platforms.iter().any(|w| p.matches(w)),
                    // Nested indexes without a platform are searched.
                    None => ManifestKind::from_media_type(&child.media_type)
                        .is_some_and(ManifestKind::is_index),
                };
                if !keep {
                    filtered = true;
                    continue;
                }
            }
            if !is_manifest {
                if single {
                    continue;
                }
                let job = self.job(Job {
                    src: child.clone(),
                    diff_id: None,
                    compression: None,
                    transcode: None,
                    inline: None,
                    foreign: false,
                    what: format!("{label}: index entry {}", child.digest),
                })?;
                children.push((i, Node::Blob { job }));
                continue;
            }
            let node = self.plan_node(child, label, platforms, depth + 1, false)?;
            if matches!(&node, Node::Index { children, .. } if children.is_empty()) {
                filtered = true;
                continue;
            }
            if single {
                return Ok(first_manifest(node));
            }
            children.push((i, node));
        }
        if root && !platforms.is_empty() && children.is_empty() {
            let available: Vec<String> = view
                .manifests
                .iter()
                .filter_map(|c| c.platform.as_ref())
                .filter(|p| !p.is_unknown())
                .map(|p| p.to_string())
                .collect();
            return Err(Error::NotFound(format!(
                "{label}: no manifest for platform {} (available: {})",
                platforms
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                }
            )));
        }
        Ok(Node::Index {
            src,
            raw,
            kind: view.kind,
            children,
            filtered,
        })
    }

    fn plan_manifest(
        &mut self,
        src: Descriptor,
        raw: Vec<u8>,
        view: ManifestView,
        label: &str,
        root: bool,
    ) -> Result<Node> {
        let caps = self.sink.caps();
        let mut diff_ids: Option<Vec<Digest>> = None;
        let config = match &view.config {
            Some(c) => {
                let inline =
                    if media_type::is_image_config(&c.media_type) || c.size <= MAX_MANIFEST_BYTES {
                        let bytes = self.fetch(c, label)?;
                        // Attestation manifests carry `{}` as an image config
                        // and in-toto layers: no DiffIDs to check against.
                        let image_layers = view
                            .layers
                            .iter()
                            .any(|l| media_type::layer_type(&l.media_type).is_some());
                        if media_type::is_image_config(&c.media_type) && image_layers {
                            let cfg = ConfigView::parse(&bytes).map_err(|e| {
                                Error::Format(format!("{label}: config {}: {e}", c.digest))
                            })?;
                            let wanted = &self.opts.platforms;
                            if root
                                && !wanted.is_empty()
                                && !cfg.platform.os.is_empty()
                                && !wanted.iter().any(|w| cfg.platform.matches(w))
                            {
                                return Err(Error::NotFound(format!(
                                    "{label}: the image is for {}, not {}",
                                    cfg.platform,
                                    wanted
                                        .iter()
                                        .map(|p| p.to_string())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )));
                            }
                            diff_ids = Some(cfg.diff_ids);
                        }
                        Some(Arc::new(bytes))
                    } else {
                        None
                    };
                Some(self.job(Job {
                    src: c.clone(),
                    diff_id: None,
                    compression: None,
                    transcode: None,
                    inline,
                    foreign: false,
                    what: format!("{label}: config {}", c.digest),
                })?)
            }
            None => None,
        };
        if caps.images_only && root && !view.is_image() {
            return Err(Error::Unsupported(format!(
                "{label}: {} is not a container image (artifact); this destination holds images only",
                src.digest
            )));
        }
        if let Some(ids) = &diff_ids
            && ids.len() != view.layers.len()
        {
            return Err(Error::Format(format!(
                "{label}: manifest {} has {} layers but its config lists {} diff_ids",
                src.digest,
                view.layers.len(),
                ids.len()
            )));
        }
        let is_image = view.is_image();
        let mut layers = Vec::new();
        for (i, layer) in view.layers.iter().enumerate() {
            let lt = media_type::layer_type(&layer.media_type);
            let diff_id = diff_ids.as_ref().map(|ids| ids[i].clone());
            let current = lt.map(|t| t.compression);
            // Artifacts (attestations, charts) are copied as they are.
            let wanted = match (current, lt.is_some_and(|t| t.foreign)) {
                _ if !is_image => None,
                // Foreign layers keep their bytes, unless the sink needs
                // plain tars.
                (Some(c), true) => {
                    (caps.wants_uncompressed && c != Compression::None).then_some(Compression::None)
                }
                (None, true) => None,
                (Some(c), false) => {
                    let target = self.opts.compress.or(if caps.wants_uncompressed {
                        Some(Compression::None)
                    } else if (!caps.accepts_zstd && c == Compression::Zstd)
                        || (caps.compress_layers && self.synthesized && c == Compression::None)
                    {
                        Some(Compression::Gzip)
                    } else {
                        None
                    });
                    target.filter(|t| *t != c)
                }
                (None, false) => {
                    if self.opts.compress.is_some() || caps.wants_uncompressed {
                        return Err(Error::Unsupported(format!(
                            "{label}: cannot recompress layer {} of media type {:?}",
                            layer.digest, layer.media_type
                        )));
                    }
                    None
                }
            };
            if current == Some(Compression::None)
                && let Some(d) = &diff_id
                && d != &layer.digest
            {
                return Err(Error::Integrity(format!(
                    "{label}: uncompressed layer {} does not match its DiffID {d}",
                    layer.digest
                )));
            }
            layers.push(self.job(Job {
                src: layer.clone(),
                diff_id: if lt.is_some() { diff_id } else { None },
                compression: current,
                transcode: wanted,
                inline: None,
                foreign: lt.is_some_and(|t| t.foreign),
                what: format!("{label}: layer {} ({})", i + 1, layer.digest),
            })?);
        }
        Ok(Node::Manifest {
            src,
            raw,
            kind: view.kind,
            image: view.is_image(),
            subject: view.subject.as_ref().map(|d| d.digest.clone()),
            config,
            layers,
        })
    }
}

/// The config digest of a root that is a single image manifest.
fn single_manifest_config(source: &dyn ImageSource, root: &Descriptor) -> Option<Digest> {
    let bytes = source.read_manifest(root).ok()?;
    if verify_bytes(&bytes, root, "").is_err() {
        return None;
    }
    let view = ManifestView::parse(&bytes, Some(&root.media_type)).ok()?;
    view.is_image()
        .then(|| view.config.map(|c| c.digest))
        .flatten()
}

fn first_manifest(node: Node) -> Node {
    match node {
        Node::Index { mut children, .. } if !children.is_empty() => {
            first_manifest(children.remove(0).1)
        }
        other => other,
    }
}

fn verify_bytes(bytes: &[u8], desc: &Descriptor, what: &str) -> Result<()> {
    if bytes.len() as u64 != desc.size {
        return Err(Error::Integrity(format!(
            "{what}: {} has {} bytes but its descriptor says {}",
            desc.digest,
            bytes.len(),
            desc.size
        )));
    }
    let mut h = desc.digest.hasher()?;
    h.update(bytes);
    let got = h.finish();
    if got != desc.digest {
        return Err(Error::Integrity(format!(
            "{what}: content of {} hashes to {got}",
            desc.digest
        )));
    }
    Ok(())
}

/// Copies images from `source` to `sink`. The sink is neither committed nor
/// aborted here.
pub fn copy_images(
    source: &dyn ImageSource,
    sink: &dyn ImageSink,
    plans: &[ImagePlan],
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let mut planner = Planner {
        source,
        sink,
        opts,
        jobs: Vec::new(),
        by_key: HashMap::new(),
        manifests_read: HashMap::new(),
        synthesized: false,
    };
    let mut report = CopyReport::default();
    let mut nodes = Vec::new();
    // Without conversions the destination digest is the source's: an image
    // the destination already names is up to date.
    let caps = sink.caps();
    let converting = opts.format.is_some()
        || opts.compress.is_some()
        || !opts.platforms.is_empty()
        || caps.wants_uncompressed
        || caps.single_platform;
    let mut up_to_date = vec![false; plans.len()];
    for (k, plan) in plans.iter().enumerate() {
        if converting || opts.keep_going {
            break;
        }
        // The sink may recompress (registries gzip plain layers): an image
        // with the same config there is the same image.
        let config = single_manifest_config(source, &plan.image.root);
        if sink.has_image(&plan.image.root, config.as_ref(), &plan.names)? {
            up_to_date[k] = true;
        }
    }
    for (k, plan) in plans.iter().enumerate() {
        if up_to_date[k] {
            nodes.push(None);
            progress.image_done(
                &format!("{} (up to date)", plan.image.label()),
                &plan.image.root.digest,
            );
            report.images_up_to_date += 1;
            report.images.push(ImageResult {
                label: plan.image.label(),
                source_digest: plan.image.root.digest.clone(),
                digest: plan.image.root.digest.clone(),
                media_type: plan.image.root.media_type.clone(),
                names: plan.names.iter().map(|n| n.to_string()).collect(),
            });
            continue;
        }
        progress.image_started(&plan.image.label(), &plan.image.root.digest);
        match planner.plan_image(&plan.image) {
            Ok(n) => nodes.push(Some(n)),
            Err(e) if opts.keep_going => {
                report.errors.push(e);
                nodes.push(None);
            }
            Err(e) => return Err(e),
        }
    }
    let outputs = run_jobs(&planner.jobs, source, sink, opts, progress, &mut report)?;
    let mut emitter = Emitter {
        sink,
        jobs: &planner.jobs,
        outputs: &outputs,
        format: opts.format,
        progress,
        conversions: Vec::new(),
        renamed: HashMap::new(),
    };
    for (plan, node) in plans.iter().zip(nodes) {
        let Some(node) = node else { continue };
        if opts.keep_going && !emitter.complete(&node) {
            // Its failed blobs are reported already.
            continue;
        }
        let out = match emitter.emit(&node, &plan.image.label()) {
            Ok(d) => d,
            Err(e) if opts.keep_going => {
                report.errors.push(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        sink.add_image(&out, &plan.names)?;
        progress.image_done(&plan.image.label(), &out.digest);
        report.images.push(ImageResult {
            label: plan.image.label(),
            source_digest: plan.image.root.digest.clone(),
            digest: out.digest.clone(),
            media_type: out.media_type.clone(),
            names: plan.names.iter().map(|n| n.to_string()).collect(),
        });
    }
    report.conversions = emitter.conversions;
    Ok(report)
}

fn run_jobs(
    jobs: &[Job],
    source: &dyn ImageSource,
    sink: &dyn ImageSink,
    opts: &CopyOptions,
    progress: &dyn Progress,
    report: &mut CopyReport,
) -> Result<Vec<Option<JobOutput>>> {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(jobs[i].src.size));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<Option<JobResult>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    let workers = opts.jobs.max(1).min(jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&id) = order.get(k) else { break };
                    let mut attempt = 0;
                    let r = loop {
                        let r = move_blob(&jobs[id], source, sink, opts, progress);
                        match &r {
                            Err(e)
                                if e.class().is_transient()
                                    && attempt < opts.retry_times
                                    && sink.caps().retry_blobs =>
                            {
                                crate::registry::client::sleep_backoff(attempt, None);
                                attempt += 1;
                            }
                            _ => break r,
                        }
                    };
                    if r.is_err() && !opts.keep_going {
                        stop.store(true, Ordering::Relaxed);
                    }
                    results.lock().unwrap()[id] = Some(r);
                }
            });
        }
    });
    let mut outputs = Vec::with_capacity(jobs.len());
    let mut first_error = None;
    for (id, r) in results.into_inner().unwrap().into_iter().enumerate() {
        match r {
            Some(Ok((out, outcome))) => {
                match outcome {
                    BlobOutcome::Copied => {
                        report.blobs_copied += 1;
                        report.bytes_copied += out.desc.size;
                    }
                    BlobOutcome::Skipped => report.blobs_skipped += 1,
                    BlobOutcome::Mounted => report.blobs_mounted += 1,
                    BlobOutcome::Absent => {}
                }
                progress.blob_done(&jobs[id].src.digest, out.desc.size, outcome);
                outputs.push(Some(out));
            }
            Some(Err(e)) => {
                outputs.push(None);
                if opts.keep_going {
                    report.errors.push(e);
                } else if first_error.is_none() {
                    first_error = Some(e);
                }
            }
            None => outputs.push(None),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(outputs),
    }
}

fn move_blob(
    job: &Job,
    source: &dyn ImageSource,
    sink: &dyn ImageSink,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<(JobOutput, BlobOutcome)> {
    let same = JobOutput {
        desc: job.src.clone(),
    };
    if job.transcode.is_none() && sink.has_blob(&job.src)? {
        return Ok((same, BlobOutcome::Skipped));
    }
    if job.transcode.is_none() && sink.mount_blob(&job.src, source.registry_repo().as_ref())? {
        return Ok((same, BlobOutcome::Mounted));
    }
    progress.blob_started(&job.src.digest, job.src.size);
    let reader: Box<dyn Read + Send> = match &job.inline {
        Some(bytes) => Box::new(io::Cursor::new(bytes.as_ref().clone())),
        None => match source.open_blob(&job.src) {
            Ok(r) => r,
            Err(Error::NotFound(_)) if job.foreign && !sink.caps().needs_layer_bytes => {
                return Ok((same, BlobOutcome::Absent));
            }
            Err(Error::NotFound(m)) if job.foreign => {
                return Err(Error::NotFound(format!(
                    "{m}: it is a foreign layer the source does not carry, and {} needs its bytes",
                    sink.describe()
                )));
            }
            Err(e) => return Err(e),
        },
    };
    let verified = VerifyReader::new(
        reader,
        &job.src.digest,
        job.src.size,
        job.what.clone(),
        progress,
    )?;
    match job.transcode {
        None => {
            // A compressed layer copied as it is: its digest proves the
            // bytes. Its DiffID is checked too (a second core decompresses a
            // copy) when it comes from an archive or layout into an archive
            // or layout, and always by `verify`. Between registries, or into
            // one, the bytes are the source's exactly and every client that
            // unpacks them checks the DiffID, so the CPU goes to moving bytes.
            let check_diff_id =
                opts.keep_going || (source.registry_repo().is_none() && !sink.caps().remote);
            match (&job.diff_id, job.compression) {
                (Some(diff_id), Some(c)) if c != Compression::None && check_diff_id => {
                    let mut tee = DiffIdTee::new(verified, c, diff_id.clone(), job.what.clone());
                    sink.put_blob(&job.src, &mut tee)?;
                }
                _ => {
                    let mut v = verified;
                    sink.put_blob(&job.src, &mut v)?;
                }
            }
            Ok((same, BlobOutcome::Copied))
        }
        Some(target) => {
            let from = job
                .compression
                .expect("only known layer types are transcoded");
            // Decompress, check the DiffID, recompress: into whatever `out`
            // is (a spool file, or an upload in progress).
            let mut verified = Some(verified);
            let mut produce = |out: &mut dyn io::Write| -> Result<()> {
                let verified = verified.take().expect("a blob is produced once");
                let dec = decoder(verified, from).map_err(|e| Error::io(job.what.clone(), e))?;
                let mut plain = HashReader {
                    inner: dec,
                    hasher: DigestHasher::sha256(),
                    enabled: from != Compression::None,
                };
                let mut enc = encoder(out, target, opts.compress_level)
                    .map_err(|e| Error::io(job.what.clone(), e))?;
                enc.copy_from(&mut plain)
                    .map_err(|e| match Error::io(job.what.clone(), e) {
                        Error::Io { what, source }
                            if source.kind() == io::ErrorKind::InvalidData
                                || source.kind() == io::ErrorKind::InvalidInput =>
                        {
                            Error::Integrity(format!("{what}: cannot decompress layer: {source}"))
                        }
                        other => other,
                    })?;
                enc.finish_box()
                    .map_err(|e| Error::io(job.what.clone(), e))?;
                // An uncompressed source's digest is its DiffID, checked by
                // the verifying reader; no need to hash it twice.
                let got_diff = if from == Compression::None {
                    job.src.digest.clone()
                } else {
                    plain.hasher.finish()
                };
                if let Some(expected) = &job.diff_id
                    && &got_diff != expected
                {
                    return Err(Error::Integrity(format!(
                        "{}: uncompressed content hashes to {got_diff}, but the config's DiffID is {expected}",
                        job.what
                    )));
                }
                Ok(())
            };
            let lt = media_type::layer_type(&job.src.media_type)
                .expect("transcoded layers have a known type");
            let media_type =
                media_type::layer_media_type(target, lt.foreign, lt.docker).to_string();
            if sink.caps().streams_produced_blobs {
                // Straight into the destination as it is produced.
                let (digest, size) = sink.put_blob_produced(&job.what, &mut produce)?;
                let mut desc = job.src.clone();
                desc.digest = digest;
                desc.size = size;
                desc.media_type = media_type;
                return Ok((JobOutput { desc }, BlobOutcome::Copied));
            }
            let dir = sink
                .spool_dir()
                .map(PathBuf::from)
                .unwrap_or_else(|| opts.tmpdir.clone());
            let tmp = crate::store::spool::destination_tempfile(&dir, ".imgsync-blob-")
                .map_err(|e| Error::path("create a temporary file in", &dir, e))?;
            crate::store::spool::register_cleanup(tmp.path());
            let result = (|| {
                let file = tmp
                    .reopen()
                    .map_err(|e| Error::path("write", tmp.path(), e))?;
                let mut out = HashWriter {
                    inner: BufWriter::with_capacity(256 * 1024, file),
                    hasher: DigestHasher::sha256(),
                    written: 0,
                };
                produce(&mut out)?;
                use std::io::Write;
                out.flush()
                    .map_err(|e| Error::path("write", tmp.path(), e))?;
                Ok((out.hasher.finish(), out.written))
            })();
            crate::store::spool::unregister_cleanup(tmp.path());
            let (digest, size) = result?;
            let mut desc = job.src.clone();
            desc.digest = digest;
            desc.size = size;
            desc.media_type = media_type;
            media_type::layer_media_type(target, lt.foreign, lt.docker).to_string();
            let out = JobOutput { desc: desc.clone() };
            if sink.has_blob(&desc)? {
                return Ok((out, BlobOutcome::Skipped));
            }
            if sink.mount_blob(&desc, None)? {
                return Ok((out, BlobOutcome::Mounted));
            }
            sink.put_blob_file(&desc, tmp)?;
            Ok((out, BlobOutcome::Copied))
        }
    }
}

struct Emitter<'a> {
    sink: &'a dyn ImageSink,
    jobs: &'a [Job],
    outputs: &'a [Option<JobOutput>],
    format: Option<Format>,
    progress: &'a dyn Progress,
    conversions: Vec<Conversion>,
    /// Manifests this run rewrote: old digest → new descriptor, so that
    /// references to them (subjects, attestation annotations) follow.
    renamed: HashMap<Digest, Descriptor>,
}

impl Emitter<'_> {
    /// Did every blob of this image arrive?
    fn complete(&self, node: &Node) -> bool {
        match node {
            Node::Blob { job } => self.outputs[*job].is_some(),
            Node::Manifest { config, layers, .. } => config
                .iter()
                .chain(layers)
                .all(|id| self.outputs[*id].is_some()),
            Node::Index { children, .. } => children.iter().all(|(_, c)| self.complete(c)),
        }
    }

    fn output(&self, id: JobId) -> Result<&JobOutput> {
        self.outputs[id].as_ref().ok_or_else(|| {
            Error::Integrity(format!(
                "{}: blob {} was not copied",
                self.jobs[id].what, self.jobs[id].src.digest
            ))
        })
    }

    fn emit(&mut self, node: &Node, label: &str) -> Result<Descriptor> {
        match node {
            Node::Blob { job } => Ok(self.output(*job)?.desc.clone()),
            Node::Manifest {
                src,
                raw,
                kind,
                image,
                subject,
                config,
                layers,
            } => {
                let _ = config.map(|c| self.output(c)).transpose()?;
                let own = Format::of(*kind).expect("schema1 is refused when planning");
                // Artifacts keep their media types: only images convert.
                let format = if *image {
                    self.format.unwrap_or(own)
                } else {
                    own
                };
                let mut new_layers = Vec::new();
                let mut changed = own != format;
                let new_subject = subject.as_ref().and_then(|d| self.renamed.get(d)).cloned();
                changed |= new_subject.is_some();
                for &id in layers {
                    let out = self.output(id)?;
                    let mut desc = out.desc.clone();
                    let transcoded = desc.digest != self.jobs[id].src.digest;
                    changed |= transcoded;
                    if format != own && media_type::layer_type(&desc.media_type).is_some() {
                        let mt = convert::layer_media_type_for(&desc, format)?;
                        changed |= mt != desc.media_type;
                        desc.media_type = mt;
                    }
                    new_layers.push((desc, transcoded));
                }
                if !changed {
                    self.sink.put_manifest(&RawManifest {
                        bytes: raw.clone(),
                        media_type: src.media_type.clone(),
                        digest: src.digest.clone(),
                    })?;
                    return Ok(src.clone());
                }
                let m = convert::rewrite_manifest(
                    raw,
                    *kind,
                    &new_layers,
                    format,
                    new_subject.as_ref(),
                )
                .map_err(|e| Error::Format(format!("{label}: {e}")))?;
                self.sink.put_manifest(&m)?;
                self.note(label, "manifest", &src.digest, &m.digest, format, *kind);
                let mut desc = src.clone();
                desc.media_type = m.media_type.clone();
                desc.digest = m.digest.clone();
                desc.size = m.bytes.len() as u64;
                self.renamed.insert(src.digest.clone(), desc.clone());
                Ok(desc)
            }
            Node::Index {
                src,
                raw,
                kind,
                children,
                filtered,
            } => {
                let format = self
                    .format
                    .or(Format::of(*kind))
                    .expect("indexes have a format");
                let mut changed = *filtered || Format::of(*kind) != Some(format);
                let mut out = Vec::new();
                for (i, child) in children {
                    let d = self.emit(child, label)?;
                    let old = match child {
                        Node::Index { src, .. } | Node::Manifest { src, .. } => &src.digest,
                        Node::Blob { job } => &self.jobs[*job].src.digest,
                    };
                    changed |= &d.digest != old;
                    out.push((*i, d));
                }
                if !changed {
                    self.sink.put_manifest(&RawManifest {
                        bytes: raw.clone(),
                        media_type: src.media_type.clone(),
                        digest: src.digest.clone(),
                    })?;
                    return Ok(src.clone());
                }
                let m = convert::rewrite_index(raw, &out, format, &self.renamed)
                    .map_err(|e| Error::Format(format!("{label}: {e}")))?;
                self.sink.put_manifest(&m)?;
                let why = if *filtered {
                    "platforms selected"
                } else {
                    "children changed"
                };
                self.conversions.push(Conversion {
                    what: format!("{label}: index"),
                    old: src.digest.clone(),
                    new: m.digest.clone(),
                    why: why.into(),
                });
                self.progress
                    .converted(&format!("{label}: index"), &src.digest, &m.digest, why);
                let mut desc = src.clone();
                desc.media_type = m.media_type.clone();
                desc.digest = m.digest.clone();
                desc.size = m.bytes.len() as u64;
                self.renamed.insert(src.digest.clone(), desc.clone());
                Ok(desc)
            }
        }
    }

    fn note(
        &mut self,
        label: &str,
        what: &str,
        old: &Digest,
        new: &Digest,
        format: Format,
        kind: ManifestKind,
    ) {
        let why = if Format::of(kind) != Some(format) {
            format!(
                "converted to {} media types",
                if format == Format::Docker {
                    "Docker"
                } else {
                    "OCI"
                }
            )
        } else {
            "layers recompressed".to_string()
        };
        let what = format!("{label}: {what}");
        self.progress.converted(&what, old, new, &why);
        self.conversions.push(Conversion {
            what,
            old: old.clone(),
            new: new.clone(),
            why,
        });
    }
}
