//! Carrying what is attached to the copied manifests: OCI 1.1 referrers
//! (signatures, SBOMs, attestations whose `subject` names a copied
//! manifest, and theirs in turn) and digest tags (`sha256-<hex>.sig`).
//!
//! After the images are written, every manifest that went through
//! unchanged is a subject: its referrers are listed by the source,
//! checked (size, digest, `subject`, artifact type), copied byte for byte
//! in one batch, and recorded at the sink against their subject. Each
//! round's referrers are the next round's subjects; a digest is followed
//! once, so a list that names itself or loops ends (and fails its check). A manifest a
//! conversion rewrote has a new digest that its signatures do not sign:
//! its referrers are counted as not carried, with the reason. A referrer
//! that fails is reported and counted; the images stay copied.

use std::collections::HashSet;

use super::{CopyOptions, CopyReport, ImagePlan, copy_images};
use crate::content::referrers::{TypeFilter, artifact_type, referrer_descriptor};
use crate::content::{Descriptor, Digest, MAX_GRAPH_NODES, MAX_MANIFEST_BYTES, ManifestView};
use crate::engine::progress::Progress;
use crate::error::{Error, Result};
use crate::store::{ImageName, ImageSink, ImageSource, SourceImage};

/// What travels with an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerOptions {
    /// Carry referrers at all.
    pub enabled: bool,
    /// Which artifact types.
    pub types: TypeFilter,
    /// Carry digest tags (`sha256-<hex>.sig`, `.att`, `.sbom`).
    pub digest_tags: bool,
}

impl Default for ReferrerOptions {
    fn default() -> Self {
        ReferrerOptions {
            enabled: true,
            types: TypeFilter::default(),
            digest_tags: true,
        }
    }
}

impl ReferrerOptions {
    /// Nothing travels but the images.
    pub fn none() -> ReferrerOptions {
        ReferrerOptions {
            enabled: false,
            types: TypeFilter::default(),
            digest_tags: false,
        }
    }
}

/// A referrer or digest-tagged manifest that was carried.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReferrerResult {
    /// The manifest it is attached to.
    pub subject: Digest,
    pub digest: Digest,
    pub media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The digest tag it was found under (a cosign-style tag), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The destination held it already (under that tag, if any): nothing
    /// was written but its entry in the subject's referrers list.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub up_to_date: bool,
}

/// A referrer that could not be carried.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReferrerFailure {
    pub subject: Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    pub error: String,
}

/// Referrers left behind on purpose, with why.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct NotCarried {
    pub count: usize,
    pub why: String,
}

/// A manifest whose attachments are looked for.
#[derive(Debug, Clone)]
pub(super) struct Subject {
    /// As the source has it.
    pub(super) desc: Descriptor,
    /// It reached the destination unchanged (its referrers apply there).
    pub(super) carried: bool,
    /// Look only when the source can tell cheaply that something is
    /// attached (the root of an image the destination already had): its
    /// tag list shows a fallback or digest tag of it.
    pub(super) cheap_only: bool,
    pub(super) label: String,
}

struct Wanted {
    desc: Descriptor,
    subject: Descriptor,
    label: String,
    tag: Option<String>,
    /// Its own attachments are looked for next round.
    follow: bool,
}

/// Carries the referrers and digest tags of `subjects`, round after round.
pub(super) fn carry(
    source: &dyn ImageSource,
    sink: &dyn ImageSink,
    subjects: Vec<Subject>,
    opts: &CopyOptions,
    progress: &dyn Progress,
    report: &mut CopyReport,
) -> Result<()> {
    let ro = &opts.referrers;
    if !ro.enabled && !ro.digest_tags {
        return Ok(());
    }
    let caps = sink.caps();
    let mut seen: HashSet<Digest> = subjects.iter().map(|s| s.desc.digest.clone()).collect();
    // (subject, referrer) pairs already taken up: a list naming an entry
    // twice yields it once.
    let mut listed: HashSet<(Digest, Digest)> = HashSet::new();
    let mut frontier = subjects;
    while !frontier.is_empty() {
        let mut wanted = Vec::new();
        let mut next_cheap = Vec::new();
        for s in &frontier {
            if s.cheap_only && source.may_have_attached(&s.desc.digest) != Some(true) {
                continue;
            }
            let mut found = Vec::new();
            // Already mirrored, with a destination listing identical to the
            // source's: its referrers are there; only theirs are looked at.
            let listed_alike = s.cheap_only && ro.enabled && ro.types == TypeFilter::default();
            if listed_alike && let Some(entries) = same_listing(source, sink, &s.desc.digest) {
                for e in entries {
                    if seen.insert(e.digest.clone()) {
                        report.referrers.push(ReferrerResult {
                            subject: s.desc.digest.clone(),
                            digest: e.digest.clone(),
                            media_type: e.media_type.clone(),
                            artifact_type: e.artifact_type.clone(),
                            tag: None,
                            up_to_date: true,
                        });
                        next_cheap.push(Subject {
                            desc: e,
                            carried: true,
                            cheap_only: true,
                            label: s.label.clone(),
                        });
                    }
                }
            } else if ro.enabled {
                match source.referrers(&s.desc) {
                    Ok(list) => found.extend(list.into_iter().map(|d| (d, None))),
                    Err(e) => {
                        fail(report, progress, &s.desc.digest, None, e);
                        continue;
                    }
                }
            }
            if ro.digest_tags {
                match source.digest_tags(&s.desc.digest) {
                    Ok(tags) => found.extend(tags.into_iter().map(|(t, d)| (d, Some(t)))),
                    Err(e) => fail(report, progress, &s.desc.digest, None, e),
                }
            }
            for (desc, tag) in found {
                // A digest seen before (a list naming its own subject, a
                // loop, a manifest both copied and listed) is checked and
                // recorded for this subject but not followed again, so
                // every loop ends; a check catches a list that names a
                // manifest whose `subject` is another.
                let new = seen.insert(desc.digest.clone());
                if tag.is_none() && !listed.insert((s.desc.digest.clone(), desc.digest.clone())) {
                    continue;
                }
                if !s.carried {
                    not_carried(report, "their subject was rewritten by a conversion");
                    continue;
                }
                if !caps.holds_referrers {
                    not_carried(
                        report,
                        &format!("{} cannot hold them", sink_kind(&sink.describe())),
                    );
                    continue;
                }
                wanted.push(Wanted {
                    desc,
                    subject: s.desc.clone(),
                    label: s.label.clone(),
                    tag,
                    follow: new,
                });
            }
        }
        if seen.len() > MAX_GRAPH_NODES {
            return Err(Error::Format(format!(
                "{}: more than {MAX_GRAPH_NODES} referrers",
                source.describe()
            )));
        }
        let mut batch = Vec::new();
        for w in wanted {
            match check(source, &w, &ro.types) {
                Ok(Some(desc)) => batch.push((w, desc)),
                Ok(None) => {}
                Err(e) => {
                    // Listed wrongly here, it may still be listed rightly
                    // under its own subject.
                    seen.remove(&w.desc.digest);
                    fail(report, progress, &w.subject.digest, Some(&w.desc.digest), e)
                }
            }
        }
        frontier = copy_batch(source, sink, batch, opts, progress, report);
        frontier.extend(next_cheap);
    }
    Ok(())
}

/// The entries of the source's referrers listing of `subject`, when the
/// destination's listing is the same document (same digest): then every
/// referrer it lists was carried before. `None` when they differ, either
/// keeps none, or asking fails (the full path then decides).
fn same_listing(
    source: &dyn ImageSource,
    sink: &dyn ImageSink,
    subject: &Digest,
) -> Option<Vec<Descriptor>> {
    let (digest, entries) = source.referrers_listing(subject).ok()??;
    let at_destination = sink.referrers_listing_digest(subject).ok()??;
    (digest == at_destination).then_some(entries)
}

/// Reads a listed referrer and checks it: its size, its bytes against its
/// digest, that its `subject` names the manifest it was listed for, and
/// that its artifact type is wanted (`None`: filtered out).
fn check(source: &dyn ImageSource, w: &Wanted, types: &TypeFilter) -> Result<Option<Descriptor>> {
    let at = || {
        format!(
            "{}: referrer {} of {}",
            source.describe(),
            w.desc.digest,
            w.subject.digest
        )
    };
    if w.desc.size > MAX_MANIFEST_BYTES {
        return Err(Error::Format(format!(
            "{}: {} bytes, over the {MAX_MANIFEST_BYTES}-byte manifest limit",
            at(),
            w.desc.size
        )));
    }
    let bytes = source.read_manifest(&w.desc)?;
    if bytes.len() as u64 != w.desc.size || !w.desc.digest.matches(&bytes)? {
        return Err(Error::Integrity(format!(
            "{}: the bytes read do not match the listed digest and size",
            at()
        )));
    }
    let view = ManifestView::parse(&bytes, Some(&w.desc.media_type))
        .map_err(|e| Error::Format(format!("{}: {e}", at())))?;
    if w.tag.is_none() {
        match &view.subject {
            Some(s) if s.digest == w.subject.digest => {}
            Some(s) => {
                return Err(Error::Integrity(format!(
                    "{}: its subject is {}, not the manifest it was listed for",
                    at(),
                    s.digest
                )));
            }
            None => {
                return Err(Error::Integrity(format!(
                    "{}: it has no subject, yet it was listed as a referrer",
                    at()
                )));
            }
        }
    }
    if w.tag.is_none() && !types.admits(artifact_type(&view).as_deref()) {
        return Ok(None);
    }
    Ok(Some(referrer_descriptor(&w.desc, &bytes)))
}

/// Copies one round's referrers, all at once, or one by one when the batch
/// fails, so that one bad referrer does not hold back the others. Returns
/// the carried referrers, the subjects of the next round.
fn copy_batch(
    source: &dyn ImageSource,
    sink: &dyn ImageSink,
    batch: Vec<(Wanted, Descriptor)>,
    opts: &CopyOptions,
    progress: &dyn Progress,
    report: &mut CopyReport,
) -> Vec<Subject> {
    if batch.is_empty() {
        return Vec::new();
    }
    // Byte for byte: no conversion applies to what is attached.
    let plain = CopyOptions {
        platforms: Vec::new(),
        format: None,
        compress: None,
        referrers: ReferrerOptions::none(),
        ..opts.clone()
    };
    let plan = |w: &Wanted, desc: &Descriptor| {
        let names: Vec<ImageName> = w
            .tag
            .iter()
            .map(|t| ImageName::RefName(t.clone()))
            .collect();
        ImagePlan {
            image: SourceImage {
                root: desc.clone(),
                names: names.clone(),
                synthesized: false,
            },
            names,
        }
    };
    let plans: Vec<ImagePlan> = batch.iter().map(|(w, d)| plan(w, d)).collect();
    let outcomes: Vec<Result<CopyReport>> =
        match copy_images(source, sink, &plans, &plain, progress) {
            Ok(r) => {
                let mut all = vec![Ok(r)];
                all.extend((1..batch.len()).map(|_| Ok(CopyReport::default())));
                all
            }
            Err(_) => plans
                .iter()
                .map(|p| copy_images(source, sink, std::slice::from_ref(p), &plain, progress))
                .collect(),
        };
    // What the destination held already, by digest, whichever outcome
    // reports it.
    let held: HashSet<Digest> = outcomes
        .iter()
        .flatten()
        .flat_map(|r| r.images.iter())
        .filter(|i| i.up_to_date)
        .map(|i| i.source_digest.clone())
        .collect();
    let mut next = Vec::new();
    for ((w, desc), outcome) in batch.into_iter().zip(outcomes) {
        let copied = outcome.and_then(|r| {
            report.merge_counts(r);
            if w.tag.is_none() {
                sink.add_referrer(&desc, &w.subject)?;
            }
            Ok(())
        });
        match copied {
            Ok(()) => {
                report.referrers.push(ReferrerResult {
                    subject: w.subject.digest.clone(),
                    digest: desc.digest.clone(),
                    media_type: desc.media_type.clone(),
                    artifact_type: desc.artifact_type.clone(),
                    tag: w.tag.clone(),
                    up_to_date: held.contains(&desc.digest),
                });
                if w.follow {
                    // One the destination held already is looked at as an
                    // image already mirrored is.
                    let cheap_only = held.contains(&desc.digest);
                    next.push(Subject {
                        desc,
                        carried: true,
                        cheap_only,
                        label: w.label,
                    });
                }
            }
            Err(e) => fail(report, progress, &w.subject.digest, Some(&desc.digest), e),
        }
    }
    next
}

pub(super) fn fail(
    report: &mut CopyReport,
    progress: &dyn Progress,
    subject: &Digest,
    digest: Option<&Digest>,
    e: Error,
) {
    let failure = ReferrerFailure {
        subject: subject.clone(),
        digest: digest.cloned(),
        error: e.to_string(),
    };
    progress.referrer_failed(&failure);
    report.referrers_failed.push(failure);
    report.referrer_errors.push(e);
}

fn not_carried(report: &mut CopyReport, why: &str) {
    match report
        .referrers_not_carried
        .iter_mut()
        .find(|n| n.why == why)
    {
        Some(n) => n.count += 1,
        None => report.referrers_not_carried.push(NotCarried {
            count: 1,
            why: why.to_string(),
        }),
    }
}

/// The kind of a sink from its description (`docker-archive:x.tar`).
fn sink_kind(describe: &str) -> &str {
    describe.split(':').next().unwrap_or(describe)
}

/// Takes out of a source's images the unnamed ones that are referrers of
/// another image it copies (or of a manifest that image's index lists):
/// they travel with their subject, and have no name of their own to go by.
pub fn leave_to_subjects(source: &dyn ImageSource, images: &mut Vec<SourceImage>) {
    if images.len() < 2 || images.iter().all(|i| !i.names.is_empty()) {
        return;
    }
    let mut copied: HashSet<Digest> = HashSet::new();
    for img in images.iter().filter(|i| !i.names.is_empty()) {
        copied.insert(img.root.digest.clone());
        if let Ok(bytes) = source.read_manifest(&img.root)
            && let Ok(view) = ManifestView::parse(&bytes, Some(&img.root.media_type))
        {
            copied.extend(view.manifests.into_iter().map(|m| m.digest));
        }
    }
    // A referrer of a referrer travels too: rounds until none is left.
    let subject_of = |img: &SourceImage| {
        source
            .read_manifest(&img.root)
            .ok()
            .and_then(|b| ManifestView::parse(&b, Some(&img.root.media_type)).ok())
            .and_then(|v| v.subject)
            .map(|s| s.digest)
    };
    let subjects: Vec<Option<Digest>> = images
        .iter()
        .map(|img| img.names.is_empty().then(|| subject_of(img)).flatten())
        .collect();
    let mut left = vec![false; images.len()];
    loop {
        let mut grew = false;
        for ((img, subject), left) in images.iter().zip(&subjects).zip(left.iter_mut()) {
            if !*left && subject.as_ref().is_some_and(|s| copied.contains(s)) {
                *left = true;
                grew = true;
                copied.insert(img.root.digest.clone());
            }
        }
        if !grew {
            break;
        }
    }
    let mut left = left.into_iter();
    images.retain(|_| !left.next().unwrap_or(false));
}
