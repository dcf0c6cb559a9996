//! Referrers and digest tags carried by the engine between two in-memory
//! stores: what travels, what is left behind and why, what fails alone.

use super::tests::opts;
use super::*;
use crate::content::Descriptor;
use crate::content::referrers::{TypeFilter, fallback_tag};
use crate::engine::progress::Hidden;
use crate::store::SinkCaps;
use crate::store::memory::MemoryStore;
use crate::store::test_images::{
    Family, Layer, artifact, image, index, list_referrer, name, publish,
};

const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM: &str = "application/spdx+json";

fn copy_all(source: &MemoryStore, sink: &MemoryStore, o: &CopyOptions) -> CopyReport {
    super::tests::copy_all(source, sink, o).unwrap()
}

/// An image with a signature and an SBOM, and a signature of the SBOM.
struct Signed {
    root: Descriptor,
    sig: Descriptor,
    sbom: Descriptor,
    sbom_sig: Descriptor,
}

fn signed(source: &MemoryStore) -> Signed {
    let img = image(
        source,
        &[&Layer::new("a", b"alpha")],
        "linux/amd64",
        Family::Oci,
    );
    let root = publish(source, &img.root, &["reg.example/app:1"]);
    let sig = artifact(source, SIG, b"signature", Some(&root));
    let sbom = artifact(source, SBOM, b"sbom", Some(&root));
    let sbom_sig = artifact(source, SIG, b"sbom signature", Some(&sbom));
    Signed {
        root,
        sig,
        sbom,
        sbom_sig,
    }
}

fn digests(list: &[Descriptor]) -> Vec<Digest> {
    let mut d: Vec<Digest> = list.iter().map(|d| d.digest.clone()).collect();
    d.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    d
}

#[test]
fn referrers_travel_recursively_byte_for_byte_and_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let s = signed(&source);

    let report = copy_all(&source, &sink, &opts(&tmp));

    assert_eq!(report.referrers.len(), 3, "{:?}", report.referrers);
    assert!(report.referrers_failed.is_empty());
    assert_eq!(
        digests(&sink.referrers_of(&s.root.digest)),
        digests(&[s.sig.clone(), s.sbom.clone()])
    );
    assert_eq!(
        digests(&sink.referrers_of(&s.sbom.digest)),
        digests(std::slice::from_ref(&s.sbom_sig))
    );
    for d in [&s.sig, &s.sbom, &s.sbom_sig] {
        assert_eq!(sink.get(&d.digest), source.get(&d.digest), "{}", d.digest);
    }
    let sbom = report
        .referrers
        .iter()
        .find(|r| r.digest == s.sbom.digest)
        .unwrap();
    assert_eq!(sbom.artifact_type.as_deref(), Some(SBOM));
    assert_eq!(sbom.subject, s.root.digest);
    // Nothing is moved twice.
    let again = copy_all(&source, &sink, &opts(&tmp));
    assert_eq!(again.blobs_copied, 0);
    assert_eq!(again.referrers.len(), 3);
}

#[test]
fn referrers_none_copies_the_image_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let s = signed(&source);
    let o = CopyOptions {
        referrers: ReferrerOptions::none(),
        ..opts(&tmp)
    };
    let report = copy_all(&source, &sink, &o);
    assert!(report.referrers.is_empty());
    assert!(sink.referrers_of(&s.root.digest).is_empty());
    assert!(sink.get(&s.sig.digest).is_none());
}

#[test]
fn a_type_filter_picks_referrers_and_stops_at_other_types() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let s = signed(&source);
    let o = CopyOptions {
        referrers: ReferrerOptions {
            types: TypeFilter {
                allow: vec![SBOM.into()],
                deny: vec![],
            },
            ..ReferrerOptions::default()
        },
        ..opts(&tmp)
    };
    let report = copy_all(&source, &sink, &o);
    assert_eq!(
        digests(&sink.referrers_of(&s.root.digest)),
        vec![s.sbom.digest.clone()]
    );
    assert!(sink.referrers_of(&s.sbom.digest).is_empty());
    assert_eq!(report.referrers.len(), 1);
}

#[test]
fn a_referrer_whose_subject_is_another_manifest_fails_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let s = signed(&source);
    // Listed under the image, but it refers to the SBOM.
    list_referrer(&source, &s.root, &s.sbom_sig);

    let report = copy_all(&source, &sink, &opts(&tmp));

    assert_eq!(report.images.len(), 1, "the image is copied");
    assert_eq!(
        report.referrers_failed.len(),
        1,
        "{:?}",
        report.referrers_failed
    );
    let failure = &report.referrers_failed[0];
    assert_eq!(failure.digest.as_ref(), Some(&s.sbom_sig.digest));
    assert!(failure.error.contains("subject"), "{}", failure.error);
    assert_eq!(
        report.referrer_errors[0].class(),
        crate::ErrorClass::Integrity
    );
    // The others still travel, and so does the wrongly listed one under
    // the subject it names.
    assert_eq!(
        digests(&sink.referrers_of(&s.root.digest)),
        digests(&[s.sig.clone(), s.sbom.clone()])
    );
    assert_eq!(
        digests(&sink.referrers_of(&s.sbom.digest)),
        vec![s.sbom_sig.digest.clone()]
    );
    assert_eq!(report.referrers.len(), 3);
}

#[test]
fn a_list_naming_its_own_subject_or_looping_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let s = signed(&source);
    // The SBOM lists itself and the image among its referrers.
    list_referrer(&source, &s.sbom, &s.sbom);
    list_referrer(&source, &s.sbom, &s.root);

    let report = copy_all(&source, &sink, &opts(&tmp));

    // The run ends; the good referrers travel; the two false listings are
    // reported, each naming the SBOM and the listed digest.
    assert_eq!(report.referrers.len(), 3, "{:?}", report.referrers);
    let mut failed: Vec<_> = report
        .referrers_failed
        .iter()
        .map(|f| (f.subject.clone(), f.digest.clone()))
        .collect();
    failed.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    let mut expected = vec![
        (s.sbom.digest.clone(), Some(s.sbom.digest.clone())),
        (s.sbom.digest.clone(), Some(s.root.digest.clone())),
    ];
    expected.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    assert_eq!(failed, expected);
}

#[test]
fn a_failing_referrer_does_not_hold_back_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let s = signed(&source);
    let layer = source.get(&s.sig.digest).unwrap();
    let view = ManifestViewForTest::layer_of(&layer);
    source.fail_reads(&view, 10, crate::ErrorClass::Format);

    let report = copy_all(&source, &sink, &opts(&tmp));

    assert_eq!(report.images.len(), 1);
    assert_eq!(
        report.referrers_failed.len(),
        1,
        "{:?}",
        report.referrers_failed
    );
    assert_eq!(report.referrers.len(), 2, "the SBOM and its signature");
    assert_eq!(
        digests(&sink.referrers_of(&s.root.digest)),
        vec![s.sbom.digest.clone()]
    );
}

/// The first layer digest of a manifest's bytes.
struct ManifestViewForTest;

impl ManifestViewForTest {
    fn layer_of(bytes: &[u8]) -> Digest {
        crate::content::ManifestView::parse(bytes, None)
            .unwrap()
            .layers[0]
            .digest
            .clone()
    }
}

#[test]
fn a_rewritten_manifest_leaves_its_referrers_behind_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let s = signed(&source);
    let o = CopyOptions {
        format: Some(Format::Docker),
        ..opts(&tmp)
    };
    let report = copy_all(&source, &sink, &o);
    assert_ne!(report.images[0].digest, s.root.digest);
    assert!(report.referrers.is_empty());
    assert_eq!(report.referrers_not_carried.len(), 1);
    assert_eq!(report.referrers_not_carried[0].count, 2);
    assert!(report.referrers_not_carried[0].why.contains("rewritten"));
}

#[test]
fn kept_children_of_a_filtered_index_keep_their_referrers() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let amd = image(
        &source,
        &[&Layer::new("a", b"amd")],
        "linux/amd64",
        Family::Oci,
    );
    let arm = image(
        &source,
        &[&Layer::new("b", b"arm")],
        "linux/arm64",
        Family::Oci,
    );
    let idx = index(&source, &[&amd, &arm], Family::Oci);
    let root = publish(&source, &idx, &["reg.example/multi:1"]);
    let mut amd_root = amd.root.clone();
    amd_root.platform = None;
    let amd_sig = artifact(&source, SIG, b"amd sig", Some(&amd_root));
    artifact(&source, SIG, b"index sig", Some(&root));
    let o = CopyOptions {
        platforms: vec![crate::content::Platform::parse("linux/amd64").unwrap()],
        ..opts(&tmp)
    };
    let report = copy_all(&source, &sink, &o);
    // A single platform copies the child manifest itself.
    assert_eq!(report.images[0].digest, amd.root.digest);
    assert_eq!(
        digests(&sink.referrers_of(&amd.root.digest)),
        vec![amd_sig.digest.clone()]
    );
    assert_eq!(report.referrers.len(), 1);
}

#[test]
fn a_sink_that_cannot_hold_referrers_counts_them() {
    let tmp = tempfile::tempdir().unwrap();
    let source = MemoryStore::new("src");
    let sink = MemoryStore::new("docker-archive:x.tar").with_caps(SinkCaps {
        holds_referrers: false,
        ..SinkCaps::ANY
    });
    signed(&source);
    let report = copy_all(&source, &sink, &opts(&tmp));
    assert_eq!(report.images.len(), 1);
    assert_eq!(
        report.referrers_not_carried,
        vec![NotCarried {
            count: 2,
            why: "docker-archive cannot hold them".into()
        }]
    );
}

#[test]
fn digest_tags_travel_as_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let img = image(
        &source,
        &[&Layer::new("a", b"alpha")],
        "linux/amd64",
        Family::Oci,
    );
    let root = publish(&source, &img.root, &["reg.example/app:1"]);
    let sig = artifact(&source, SIG, b"cosign", None);
    let tag = format!("{}.sig", fallback_tag(&root.digest));
    source.name(sig.clone(), vec![ImageName::RefName(tag.clone())]);
    // Only the image is asked for; its digest tag comes with it.
    let plans = vec![ImagePlan {
        image: SourceImage {
            root: root.clone(),
            names: vec![name("reg.example/app:1")],
            synthesized: false,
        },
        names: vec![name("reg.example/app:1")],
    }];
    let report = copy_and_commit(&source, &sink, &plans, &opts(&tmp), &Hidden).unwrap();
    assert_eq!(report.referrers.len(), 1);
    assert_eq!(report.referrers[0].tag.as_deref(), Some(tag.as_str()));
    assert_eq!(
        sink.resolve(&ImageName::RefName(tag)).map(|d| d.digest),
        Some(sig.digest)
    );
    let o = CopyOptions {
        referrers: ReferrerOptions {
            digest_tags: false,
            ..ReferrerOptions::default()
        },
        ..opts(&tmp)
    };
    let other = MemoryStore::new("other");
    let report = copy_and_commit(&source, &other, &plans, &o, &Hidden).unwrap();
    assert!(report.referrers.is_empty());
}
