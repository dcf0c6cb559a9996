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
//! [`copy_and_commit`] then commits the sink, or aborts it on any failure.
//!
//! The steps live in [`plan`], [`transfer`] and [`emit`]; every parallel
//! step runs on [`pool`].

mod convert;
mod emit;
#[cfg(test)]
mod fanout_tests;
mod pieces;
mod plan;
pub mod pool;
pub mod progress;
pub mod referrers;
#[cfg(test)]
mod referrers_tests;
mod stream;
#[cfg(test)]
mod tests;
mod transfer;
mod zstd_frames;

use std::collections::HashMap;
use std::path::PathBuf;

pub use convert::Format;
// The codecs as the engine uses them, for benchmarks.
pub use stream::{FinishWrite, decoder, encoder};

use crate::content::media_type::Compression;
use crate::content::{Digest, Platform};
use crate::engine::progress::Progress;
use crate::error::{Error, Result};
use crate::store::location::Location;
use crate::store::open::{
    Context, DestinationOptions, Placement, check_destination_digest, open_destination, open_source,
};
use crate::store::registry::ClientPool;
use crate::store::{ImageName, ImageSink, ImageSource, SourceImage};
use emit::Emitter;
use plan::Node;
use plan::{Planner, single_manifest_config};
pub use referrers::{NotCarried, ReferrerFailure, ReferrerOptions, ReferrerResult};
use transfer::run_jobs;

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
    /// What travels with the images: referrers, digest tags.
    pub referrers: ReferrerOptions,
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
            referrers: ReferrerOptions::default(),
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
    /// The destination held it already under these names: nothing written.
    #[serde(skip)]
    pub up_to_date: bool,
    /// The blobs (configs, layers) the destination holds for it now, as
    /// far as this copy saw them (none when it was up to date).
    #[serde(skip)]
    pub blobs: Vec<Digest>,
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
    /// Referrers and digest-tagged manifests carried with the images.
    pub referrers: Vec<ReferrerResult>,
    /// Referrers left behind on purpose, by reason.
    pub referrers_not_carried: Vec<NotCarried>,
    /// Referrers that could not be carried.
    pub referrers_failed: Vec<ReferrerFailure>,
    #[serde(skip)]
    pub errors: Vec<Error>,
    /// The errors of `referrers_failed`, for the exit code.
    #[serde(skip)]
    pub referrer_errors: Vec<Error>,
}

/// The same report for another destination of one copy (a fan-out).
impl Clone for CopyReport {
    fn clone(&self) -> Self {
        CopyReport {
            images: self.images.clone(),
            images_up_to_date: self.images_up_to_date,
            blobs_copied: self.blobs_copied,
            blobs_skipped: self.blobs_skipped,
            blobs_mounted: self.blobs_mounted,
            requests: self.requests,
            bytes_copied: self.bytes_copied,
            conversions: self.conversions.clone(),
            referrers: self.referrers.clone(),
            referrers_not_carried: self.referrers_not_carried.clone(),
            referrers_failed: self.referrers_failed.clone(),
            errors: self.errors.iter().map(Error::duplicate).collect(),
            referrer_errors: self.referrer_errors.iter().map(Error::duplicate).collect(),
        }
    }
}

/// Copies images from `source` to `sink`. The sink is neither committed nor
/// aborted here (see [`copy_and_commit`]).
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
    for (plan, fresh) in plans.iter().zip(up_to_date.iter_mut()) {
        if converting || opts.keep_going {
            break;
        }
        // The sink may recompress (registries gzip plain layers): an image
        // with the same config there is the same image.
        let config = single_manifest_config(source, &plan.image.root);
        if sink.has_image(&plan.image.root, config.as_ref(), &plan.names)? {
            *fresh = true;
        }
    }
    for (plan, fresh) in plans.iter().zip(&up_to_date) {
        if *fresh {
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
                up_to_date: true,
                blobs: Vec::new(),
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
        emitted: HashMap::new(),
    };
    let mut emitted_nodes = Vec::new();
    for (plan, node) in plans.iter().zip(nodes) {
        let Some(node) = node else {
            emitted_nodes.push(None);
            continue;
        };
        if opts.keep_going && !emitter.complete(&node) {
            // Its failed blobs are reported already.
            emitted_nodes.push(None);
            continue;
        }
        let out = match emitter.emit(&node, &plan.image.label()) {
            Ok(d) => d,
            Err(e) if opts.keep_going => {
                report.errors.push(e);
                emitted_nodes.push(None);
                continue;
            }
            Err(e) => return Err(e),
        };
        let blobs = emitter.blobs(&node);
        emitted_nodes.push(Some(node.clone()));
        sink.add_image(&out, &plan.names)?;
        progress.image_done(&plan.image.label(), &out.digest);
        report.images.push(ImageResult {
            label: plan.image.label(),
            source_digest: plan.image.root.digest.clone(),
            digest: out.digest.clone(),
            media_type: out.media_type.clone(),
            names: plan.names.iter().map(|n| n.to_string()).collect(),
            up_to_date: false,
            blobs,
        });
    }
    let mut subjects = Vec::new();
    if opts.referrers.enabled || opts.referrers.digest_tags {
        for (plan, fresh) in plans.iter().zip(&up_to_date) {
            if *fresh {
                subjects.push(referrers::Subject {
                    desc: plan.image.root.clone(),
                    carried: true,
                    cheap_only: true,
                    label: plan.image.label(),
                });
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (plan, node) in plans.iter().zip(&emitted_nodes) {
            if let Some(node) = node {
                // A pick of one platform emits that child of the index
                // alone: the index did not travel, and what refers to it
                // is left behind as a rewritten manifest's is.
                let emitted_root = match &**node {
                    Node::Manifest { src, .. } | Node::Index { src, .. } => Some(&src.digest),
                    Node::Blob { .. } => None,
                };
                if emitted_root.is_some_and(|d| d != &plan.image.root.digest)
                    && seen.insert(plan.image.root.digest.clone())
                {
                    subjects.push(referrers::Subject {
                        desc: plan.image.root.clone(),
                        carried: false,
                        cheap_only: false,
                        label: plan.image.label(),
                    });
                }
                collect_subjects(
                    node,
                    &emitter.renamed,
                    &plan.image.label(),
                    &mut seen,
                    &mut subjects,
                );
            }
        }
    }
    report.conversions = emitter.conversions;
    referrers::carry(source, sink, subjects, opts, progress, &mut report)?;
    Ok(report)
}

/// Every manifest and index of an emitted image, once, as a subject whose
/// attachments are looked for: carried when the emitter did not rewrite it.
fn collect_subjects(
    node: &Node,
    renamed: &HashMap<Digest, crate::content::Descriptor>,
    label: &str,
    seen: &mut std::collections::HashSet<Digest>,
    out: &mut Vec<referrers::Subject>,
) {
    let (src, children) = match node {
        Node::Blob { .. } => return,
        Node::Manifest { src, .. } => (src, None),
        Node::Index { src, children, .. } => (src, Some(children)),
    };
    if !seen.insert(src.digest.clone()) {
        return;
    }
    out.push(referrers::Subject {
        desc: src.clone(),
        carried: !renamed.contains_key(&src.digest),
        cheap_only: false,
        label: label.to_string(),
    });
    for (_, child) in children.into_iter().flatten() {
        collect_subjects(child, renamed, label, seen, out);
    }
}

impl CopyReport {
    /// Adds another report's images and counts to this one.
    pub fn merge(&mut self, from: CopyReport) {
        self.images.extend(from.images);
        self.images_up_to_date += from.images_up_to_date;
        self.referrers.extend(from.referrers);
        for n in from.referrers_not_carried {
            match self
                .referrers_not_carried
                .iter_mut()
                .find(|m| m.why == n.why)
            {
                Some(m) => m.count += n.count,
                None => self.referrers_not_carried.push(n),
            }
        }
        self.referrers_failed.extend(from.referrers_failed);
        self.referrer_errors.extend(from.referrer_errors);
        self.blobs_copied += from.blobs_copied;
        self.blobs_skipped += from.blobs_skipped;
        self.blobs_mounted += from.blobs_mounted;
        self.bytes_copied += from.bytes_copied;
        self.conversions.extend(from.conversions);
        self.errors.extend(from.errors);
    }

    /// Adds the blob counts of a copy of referrers (not its images).
    pub(crate) fn merge_counts(&mut self, from: CopyReport) {
        self.blobs_copied += from.blobs_copied;
        self.blobs_skipped += from.blobs_skipped;
        self.blobs_mounted += from.blobs_mounted;
        self.bytes_copied += from.bytes_copied;
    }
}

/// Copies into a sink and commits it, or aborts it on any failure.
pub fn copy_and_commit(
    source: &dyn ImageSource,
    sink: &dyn ImageSink,
    plans: &[ImagePlan],
    options: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let result = copy_images(source, sink, plans, options, progress).and_then(|report| {
        sink.commit()?;
        Ok(report)
    });
    if result.is_err() {
        sink.abort();
    }
    result
}

/// Copies a source's images into the sinks a destination placed them in,
/// one sink after the other (blobs a sink of this run received can be
/// mounted into the next).
pub fn copy_placed(
    source: &dyn ImageSource,
    placements: Vec<Placement>,
    options: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let mut total = CopyReport::default();
    for p in placements {
        let plans: Vec<ImagePlan> = p
            .images
            .into_iter()
            .map(|(image, names)| ImagePlan { image, names })
            .collect();
        total.merge(copy_and_commit(
            source,
            p.sink.as_ref(),
            &plans,
            options,
            progress,
        )?);
    }
    Ok(total)
}

/// Copies every image a source location selects to a destination location
/// (named there as [`crate::store::open`] says).
pub fn copy_location(
    source: &Location,
    dest: &Location,
    ctx: &Context,
    dest_opts: &DestinationOptions,
    options: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let opened = open_source(source, ctx)?;
    let mut images = opened.images()?;
    if options.referrers.enabled {
        referrers::leave_to_subjects(opened.as_ref(), &mut images);
    }
    if images.is_empty() {
        return Err(Error::NotFound(format!(
            "{} holds no images",
            opened.describe()
        )));
    }
    let pool: &ClientPool = ctx.pool;
    let placements = open_destination(dest, images, &opened.describe(), dest_opts, pool)?;
    let report = copy_placed(opened.as_ref(), placements, options, progress)?;
    check_destination_digest(dest, report.images.first().map(|i| &i.digest))?;
    Ok(report)
}
