//! `imgsync verify LOCATION` and `imgsync verify BUNDLE...`: re-read every
//! manifest, config and layer of every image and check sizes, digests and
//! DiffIDs. Reports every problem, not just the first.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use crate::content::{Descriptor, Digest, ManifestView};
use crate::engine::progress::Progress;
use crate::engine::{CopyOptions, CopyReport, ImagePlan, copy_images};
use crate::error::{Error, Result};
use crate::store::bundle::Bundle;
use crate::store::bundle::read::Opened;
use crate::store::location::Location;
use crate::store::null::NullSink;
use crate::store::open::{Context, open_source};
use crate::store::{ImageName, ImageSink, ImageSource, SourceImage};

pub fn run(
    loc: &Location,
    options: &CopyOptions,
    registry: &crate::store::registry::RegistrySettings,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let pool = crate::store::registry::ClientPool::default();
    let ctx = Context {
        tmpdir: &options.tmpdir,
        pool: &pool,
        registry,
    };
    let source = open_source(loc, &ctx)?;
    let (plans, opts) = plans_and_options(source.images()?, options);
    copy_images(source.as_ref(), &NullSink, &plans, &opts, progress)
}

/// Every image as it is, and options that read everything, convert
/// nothing and collect every problem.
pub(crate) fn plans_and_options(
    images: Vec<crate::store::SourceImage>,
    options: &CopyOptions,
) -> (Vec<ImagePlan>, CopyOptions) {
    let plans = images
        .into_iter()
        .map(|image| ImagePlan {
            names: image.names.clone(),
            image,
        })
        .collect();
    let mut opts = options.clone();
    opts.keep_going = true;
    opts.referrers = crate::engine::ReferrerOptions::none();
    opts.platforms.clear();
    opts.format = None;
    opts.compress = None;
    (plans, opts)
}

/// What verifying a bundle found.
#[derive(Debug, Default)]
pub struct BundleVerifyReport {
    pub label: String,
    pub copy: CopyReport,
    /// Structural problems (volumes missing, corrupt, foreign).
    pub problems: Vec<String>,
    /// Blobs the bundle relies on from earlier bundles, by bundle file.
    pub relies_on: BTreeMap<String, (usize, u64)>,
    pub volumes: usize,
    /// Referrers and digest-tagged manifests verified with the images.
    pub referrers: usize,
}

impl BundleVerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.copy.errors.is_empty()
    }
}

/// A sink that checks and keeps nothing, and says it has the blobs a
/// bundle relies on from earlier bundles (they are not in it to check).
struct VerifySink<'a> {
    required: &'a HashSet<Digest>,
}

impl ImageSink for VerifySink<'_> {
    fn describe(&self) -> String {
        NullSink.describe()
    }
    fn caps(&self) -> crate::store::SinkCaps {
        NullSink.caps()
    }
    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.required.contains(&desc.digest))
    }
    fn put_blob(&self, desc: &Descriptor, reader: &mut dyn std::io::Read) -> Result<()> {
        NullSink.put_blob(desc, reader)
    }
    fn put_manifest(&self, m: &crate::content::RawManifest) -> Result<()> {
        NullSink.put_manifest(m)
    }
    fn add_image(&self, root: &Descriptor, names: &[ImageName]) -> Result<()> {
        NullSink.add_image(root, names)
    }
    fn commit(&self) -> Result<()> {
        Ok(())
    }
}

/// `imgsync verify BUNDLE...`: re-hash every blob of the bundle, check every
/// manifest's references, and name what is missing or corrupt.
pub fn bundle(
    files: &[PathBuf],
    options: &CopyOptions,
    progress: &dyn Progress,
) -> Result<BundleVerifyReport> {
    let bundle = match Bundle::open(files, &options.tmpdir)? {
        Opened::Bundle(b) => b,
        Opened::NotABundle => {
            let [first, ..] = files else {
                return Err(Error::Usage("give the bundle file or its volumes".into()));
            };
            return Err(Error::Format(format!(
                "{} is not an imgsync bundle; to verify a plain archive give docker-archive:{0} or oci-archive:{0}",
                first.display()
            )));
        }
    };
    let m = bundle.manifest();
    let mut problems = bundle.problems().to_vec();
    // Parts of blobs cut across volumes, re-hashed `jobs` at once.
    let parts = bundle.parts();
    let mut volume_problems = Vec::new();
    let mut reported = HashSet::new();
    for (problem, blob) in
        crate::engine::pool::run_all(&parts, options.jobs.clamp(1, 16), |_, part| {
            bundle.check_part(part)
        })
        .into_iter()
        .flatten()
    {
        volume_problems.push(problem);
        reported.extend(blob);
    }
    volume_problems.sort();
    problems.extend(volume_problems);
    // Blobs in missing volumes, or found corrupt already, are not read again.
    reported.extend(bundle.unavailable());
    let mut report = BundleVerifyReport {
        label: bundle.describe(),
        problems,
        volumes: m.volumes.len(),
        ..Default::default()
    };
    let mut required: HashSet<Digest> = m
        .required
        .iter()
        .filter(|r| !bundle.carries(&r.digest))
        .map(|r| r.digest.clone())
        .collect();
    required.extend(reported);
    for r in &m.required {
        let file = m.bundle_file(&r.bundle).unwrap_or(r.bundle.clone());
        let e = report.relies_on.entry(file).or_default();
        e.0 += 1;
        e.1 += r.size;
    }
    let images = match bundle.images() {
        Ok(i) => i,
        Err(e) => {
            report.copy.errors.push(e);
            return Ok(report);
        }
    };
    let (plans, opts) = super::verify::plans_and_options(images, options);
    let sink = VerifySink {
        required: &required,
    };
    match copy_images(bundle.as_ref(), &sink, &plans, &opts, progress) {
        Ok(r) => report.copy = r,
        Err(e) => report.copy.errors.push(e),
    }
    // A blob that does not match its digest is named with its volume.
    report.copy.errors = std::mem::take(&mut report.copy.errors)
        .into_iter()
        .map(|e| bundle.locate_error(e))
        .collect();
    verify_attached(&bundle, &sink, &opts, progress, &mut report);
    // Every image the manifest lists must be in the index.
    let listed: HashSet<&Digest> = plans.iter().map(|p| &p.image.root.digest).collect();
    for img in &m.images {
        if !listed.contains(&img.digest) {
            report.problems.push(format!(
                "image {} ({}) is in the bundle manifest but not in its index",
                img.reference, img.digest
            ));
        }
    }
    Ok(report)
}

/// What travels with the images: each referrer's subject is in the bundle
/// or in an earlier bundle it relies on, each referrer names the subject
/// it is listed for, and its blobs are re-hashed like an image's.
fn verify_attached(
    bundle: &Bundle,
    sink: &VerifySink,
    opts: &CopyOptions,
    progress: &dyn Progress,
    report: &mut BundleVerifyReport,
) {
    let m = bundle.manifest();
    let relied: HashSet<&Digest> = m.required.iter().map(|r| &r.digest).collect();
    let listed = m.referrers();
    let mut plans: Vec<ImagePlan> = Vec::new();
    for r in &listed {
        let what = match &r.tag {
            Some(tag) => format!("digest tag {tag} ({})", r.digest),
            None => format!(
                "referrer {} ({})",
                r.digest,
                r.artifact_type.as_deref().unwrap_or("no artifact type")
            ),
        };
        if !bundle.carries(&r.subject) && !relied.contains(&r.subject) {
            report.problems.push(format!(
                "{what}: its subject {} is neither in the bundle nor in an earlier bundle it relies on",
                r.subject
            ));
        }
        if r.tag.is_none()
            && let Ok(bytes) = bundle.read_manifest(&r.descriptor())
            && let Ok(view) = ManifestView::parse(&bytes, Some(&r.media_type))
            && view.subject.as_ref().is_none_or(|s| s.digest != r.subject)
        {
            report.problems.push(format!(
                "{what}: the bundle manifest lists it for {}, but its own subject is {}",
                r.subject,
                view.subject
                    .map(|s| s.digest.to_string())
                    .unwrap_or_else(|| "missing".into())
            ));
        }
        if !plans.iter().any(|p| p.image.root.digest == r.digest) {
            plans.push(ImagePlan {
                image: SourceImage {
                    root: r.descriptor(),
                    names: Vec::new(),
                    synthesized: false,
                },
                names: Vec::new(),
            });
        }
    }
    report.referrers = plans.len();
    if plans.is_empty() {
        return;
    }
    match copy_images(bundle, sink, &plans, opts, progress) {
        Ok(r) => {
            report.copy.blobs_copied += r.blobs_copied;
            report.copy.bytes_copied += r.bytes_copied;
            report
                .copy
                .errors
                .extend(r.errors.into_iter().map(|e| bundle.locate_error(e)));
        }
        Err(e) => report.copy.errors.push(bundle.locate_error(e)),
    }
}
