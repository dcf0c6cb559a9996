//! The planner over in-memory stores: images whose indexes repeat their
//! children are walked once, and graphs past the node cap are refused.

use serde_json::json;

use crate::content::RawManifest;
use crate::content::media_type::OCI_INDEX;
use crate::engine::progress::Hidden;
use crate::engine::{CopyOptions, ImagePlan, copy_and_commit};
use crate::error::Error;
use crate::store::ImageSource;
use crate::store::memory::MemoryStore;
use crate::store::test_images::{Family, Layer, image, publish};

use crate::content::Descriptor;

/// Puts an index listing `child` `times` times (`salt` tells apart
/// indexes of the same entries).
fn repeating_index(
    store: &MemoryStore,
    child: &Descriptor,
    times: usize,
    salt: usize,
) -> Descriptor {
    let doc = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": vec![child; times], "annotations": {"salt": salt.to_string()}});
    let m = RawManifest::new(serde_json::to_vec(&doc).unwrap(), OCI_INDEX);
    store.insert(m.bytes.clone());
    m.descriptor()
}

fn copy(
    source: &MemoryStore,
    sink: &MemoryStore,
) -> crate::error::Result<crate::engine::CopyReport> {
    let tmp = tempfile::tempdir().unwrap();
    let plans: Vec<ImagePlan> = source
        .images()
        .unwrap()
        .into_iter()
        .map(|image| ImagePlan {
            names: image.names.clone(),
            image,
        })
        .collect();
    let opts = CopyOptions {
        jobs: 2,
        tmpdir: tmp.path().to_path_buf(),
        ..CopyOptions::default()
    };
    copy_and_commit(source, sink, &plans, &opts, &Hidden)
}

#[test]
fn a_manifest_listed_at_every_level_is_planned_and_written_once() {
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let leaf = image(
        &source,
        &[&Layer::new("a", b"alpha")],
        "linux/amd64",
        Family::Oci,
    )
    .root;
    // 16^6 (16 million) paths down to one manifest.
    let mut levels = vec![leaf.clone()];
    for level in 0..6 {
        let below = levels.last().unwrap().clone();
        levels.push(repeating_index(&source, &below, 16, level));
    }
    let root = publish(&source, levels.last().unwrap(), &["reg.example/deep:1"]);

    let report = copy(&source, &sink).unwrap();

    assert_eq!(report.images[0].digest, root.digest, "copied as it is");
    assert_eq!(sink.digests(), source.digests());
    // Below the root (which is read once more to see whether the
    // destination is up to date), every manifest is read once.
    for d in &levels[..levels.len() - 1] {
        assert_eq!(source.manifest_reads(&d.digest), 1, "{} read", d.digest);
    }
    for d in &levels {
        assert_eq!(sink.writes(&d.digest), 1, "{} written", d.digest);
    }
}

#[test]
fn an_image_listing_too_many_descriptors_is_refused() {
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let leaf = image(
        &source,
        &[&Layer::new("a", b"alpha")],
        "linux/amd64",
        Family::Oci,
    )
    .root;
    // Seven distinct indexes of 15,000 entries each: 105,000 in all.
    let wide: Vec<Descriptor> = (0..7)
        .map(|salt| repeating_index(&source, &leaf, 15_000, salt))
        .collect();
    let doc = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": wide});
    let m = RawManifest::new(serde_json::to_vec(&doc).unwrap(), OCI_INDEX);
    source.insert(m.bytes.clone());
    publish(&source, &m.descriptor(), &["reg.example/wide:1"]);

    let err = copy(&source, &sink).unwrap_err();

    assert!(matches!(err, Error::Format(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("reg.example/wide:1") && msg.contains("more than 100000"),
        "{msg}"
    );
    assert!(sink.digests().is_empty(), "nothing written");
}
