//! The engine driven between two in-memory stores: what arrives, how often
//! each blob moves, what conversions produce, and what a failure leaves.

use super::*;
use crate::ErrorClass;
use crate::content::media_type;
use crate::content::media_type::{
    DOCKER_LAYER_GZIP, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use crate::engine::progress::Hidden;
use crate::store::SinkCaps;
use crate::store::memory::MemoryStore;
use crate::store::test_images::{
    Family, Layer, check, field, first_image, image, index, name, publish,
};

pub(super) fn opts(tmp: &tempfile::TempDir) -> CopyOptions {
    CopyOptions {
        jobs: 4,
        tmpdir: tmp.path().to_path_buf(),
        retry_times: 0,
        ..CopyOptions::default()
    }
}

/// Every image of `source`, under its own names.
fn plans_of(source: &MemoryStore) -> Vec<ImagePlan> {
    source
        .images()
        .unwrap()
        .into_iter()
        .map(|image| ImagePlan {
            names: image.names.clone(),
            image,
        })
        .collect()
}

pub(super) fn copy_all(
    source: &MemoryStore,
    sink: &MemoryStore,
    o: &CopyOptions,
) -> Result<CopyReport> {
    copy_and_commit(source, sink, &plans_of(source), o, &Hidden)
}

fn platform(s: &str) -> Platform {
    Platform::parse(s).unwrap()
}

#[test]
fn copies_an_image_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let (a, b) = (Layer::new("a", b"alpha"), Layer::new("b", b"beta"));
    let img = image(&source, &[&a, &b], "linux/amd64", Family::Oci);
    let root = publish(&source, &img.root, &["reg.example/app:1"]);

    let report = copy_all(&source, &sink, &opts(&tmp)).unwrap();

    assert_eq!(report.blobs_copied, 3, "config and two layers");
    assert_eq!(report.images[0].digest, root.digest);
    // What the destination now holds for the image, each blob once.
    let mut blobs = report.images[0].blobs.clone();
    blobs.sort();
    let mut want: Vec<Digest> = source
        .digests()
        .into_iter()
        .filter(|d| *d != root.digest)
        .collect();
    want.sort();
    assert_eq!(blobs, want);
    assert!(report.conversions.is_empty());
    assert_eq!(sink.resolve(&name("reg.example/app:1")), Some(root.clone()));
    // The destination holds exactly the source's content.
    assert_eq!(sink.digests(), source.digests());
    for d in source.digests() {
        assert_eq!(sink.get(&d), source.get(&d));
    }
    assert_eq!(check(&sink, &root)[0].diff_ids, [a.diff_id, b.diff_id]);
}

#[test]
fn copies_a_multi_arch_index_and_moves_a_shared_layer_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let base = Layer::new("base", b"shared by both platforms");
    let (x, y) = (
        Layer::new("x", b"amd64 only"),
        Layer::new("y", b"arm64 only"),
    );
    let amd = image(&source, &[&base, &x], "linux/amd64", Family::Oci);
    let arm = image(&source, &[&base, &y], "linux/arm64", Family::Oci);
    let idx = index(&source, &[&amd, &arm], Family::Oci);
    let root = publish(&source, &idx, &["reg.example/multi:1"]);

    let report = copy_all(&source, &sink, &opts(&tmp)).unwrap();

    assert_eq!(
        report.images[0].digest, root.digest,
        "an index copied as is"
    );
    let found = check(&sink, &root);
    assert_eq!(found.len(), 2);
    assert_eq!(found[1].diff_ids, [base.diff_id.clone(), y.diff_id]);
    let shared = base.gzip_digest();
    assert_eq!(source.blob_reads(&shared), 1);
    assert_eq!(sink.writes(&shared), 1);
    // Two configs and three distinct layers.
    assert_eq!(report.blobs_copied, 5);
}

#[test]
fn moves_a_blob_shared_by_images_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let base = Layer::new("base", b"common base");
    let one = image(
        &source,
        &[&base, &Layer::new("1", b"one")],
        "linux/amd64",
        Family::Oci,
    );
    // The second image lists the shared layer twice.
    let two = image(&source, &[&base, &base], "linux/amd64", Family::Docker);
    publish(&source, &one.root, &["reg.example/one:1"]);
    publish(&source, &two.root, &["reg.example/two:1"]);

    copy_all(&source, &sink, &opts(&tmp)).unwrap();

    let shared = base.gzip_digest();
    assert_eq!(source.blob_reads(&shared), 1);
    assert_eq!(sink.writes(&shared), 1);
    assert!(
        sink.all_writes().values().all(|&n| n == 1),
        "{:?}",
        sink.all_writes()
    );
    assert!(sink.resolve(&name("reg.example/two:1")).is_some());
}

#[test]
fn skips_blobs_the_sink_has_and_images_it_names() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let (a, b) = (Layer::new("a", b"alpha"), Layer::new("b", b"beta"));
    let img = image(&source, &[&a, &b], "linux/amd64", Family::Oci);
    let root = publish(&source, &img.root, &["reg.example/app:1"]);
    sink.declare_present(&a.gzip_digest());

    let report = copy_all(&source, &sink, &opts(&tmp)).unwrap();
    assert_eq!((report.blobs_copied, report.blobs_skipped), (2, 1));
    assert_eq!(
        source.blob_reads(&a.gzip_digest()),
        0,
        "a skipped blob is not read"
    );
    assert_eq!(sink.writes(&a.gzip_digest()), 0);

    // Once named there, the image is up to date: no blob is even asked for.
    let again = copy_all(&source, &sink, &opts(&tmp)).unwrap();
    assert_eq!(again.images_up_to_date, 1);
    assert_eq!(again.blobs_copied + again.blobs_skipped, 0);
    assert_eq!(source.blob_reads(&b.gzip_digest()), 1);
    assert_eq!(sink.resolve(&name("reg.example/app:1")), Some(root));
}

/// Recompressing gzip layers to zstd, through a spool file or straight
/// into a sink that takes produced blobs as streams.
#[test]
fn recompresses_layers_keeping_diff_ids() {
    for streams in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let source = MemoryStore::new("src");
        let sink = MemoryStore::new("dst").with_caps(SinkCaps {
            streams_produced_blobs: streams,
            ..SinkCaps::ANY
        });
        let (a, b) = (Layer::new("a", &[7u8; 5000]), Layer::new("b", b"beta"));
        let img = image(&source, &[&a, &b], "linux/amd64", Family::Oci);
        let src_root = publish(&source, &img.root, &["reg.example/app:1"]);
        let o = CopyOptions {
            compress: Some(Compression::Zstd),
            ..opts(&tmp)
        };

        let report = copy_all(&source, &sink, &o).unwrap();

        let out = sink.resolve(&name("reg.example/app:1")).unwrap();
        assert_ne!(out.digest, src_root.digest, "streams={streams}");
        assert_eq!(report.images[0].digest, out.digest);
        assert_eq!(report.conversions.len(), 1);
        let found = check(&sink, &out);
        assert_eq!(found[0].layer_types, [OCI_LAYER_ZSTD, OCI_LAYER_ZSTD]);
        assert_eq!(found[0].diff_ids, [a.diff_id.clone(), b.diff_id.clone()]);
        assert_eq!(found[0].config, img.config, "the config is never rewritten");
        // The gzip bytes were not stored: only their zstd form.
        assert_eq!(sink.get(&a.gzip_digest()), None);
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "no spool left"
        );
    }
}

#[test]
fn converts_docker_media_types_to_oci() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let a = Layer::new("a", b"alpha");
    let img = image(&source, &[&a], "linux/amd64", Family::Docker);
    publish(&source, &img.root, &["reg.example/app:1"]);
    let o = CopyOptions {
        format: Some(Format::Oci),
        ..opts(&tmp)
    };

    copy_all(&source, &sink, &o).unwrap();

    let out = sink.resolve(&name("reg.example/app:1")).unwrap();
    assert_eq!(out.media_type, OCI_MANIFEST);
    let raw = sink.get(&out.digest).unwrap();
    assert_eq!(field(&raw, "/mediaType").as_deref(), Some(OCI_MANIFEST));
    assert_eq!(
        field(&raw, "/config/mediaType").as_deref(),
        Some(OCI_CONFIG)
    );
    let found = check(&sink, &out);
    assert_eq!(found[0].layer_types, [OCI_LAYER_GZIP]);
    // Same layer bytes: only their descriptions changed.
    assert_eq!(
        field(&raw, "/layers/0/digest"),
        Some(a.gzip_digest().to_string())
    );
    assert_eq!(sink.get(&a.gzip_digest()), Some(a.gzip.clone()));
    assert_eq!(
        field(
            &source.get(&img.root.digest).unwrap(),
            "/layers/0/mediaType"
        )
        .as_deref(),
        Some(DOCKER_LAYER_GZIP)
    );
}

#[test]
fn selects_platforms_from_an_index() {
    let tmp = tempfile::tempdir().unwrap();
    let source = MemoryStore::new("src");
    let layers: Vec<Layer> = ["amd64", "arm64", "s390x"]
        .iter()
        .map(|a| Layer::new(a, a.as_bytes()))
        .collect();
    let imgs: Vec<_> = ["linux/amd64", "linux/arm64", "linux/s390x"]
        .iter()
        .zip(&layers)
        .map(|(p, l)| image(&source, &[l], p, Family::Oci))
        .collect();
    let idx = index(&source, &[&imgs[0], &imgs[1], &imgs[2]], Family::Oci);
    let src_root = publish(&source, &idx, &["reg.example/multi:1"]);

    // Two platforms: a new index listing just those.
    let sink = MemoryStore::new("dst");
    let o = CopyOptions {
        platforms: vec![platform("linux/arm64"), platform("linux/s390x")],
        ..opts(&tmp)
    };
    copy_all(&source, &sink, &o).unwrap();
    let out = sink.resolve(&name("reg.example/multi:1")).unwrap();
    assert_ne!(out.digest, src_root.digest);
    let found = check(&sink, &out);
    let ids: Vec<&Digest> = found.iter().map(|c| &c.diff_ids[0]).collect();
    assert_eq!(ids, [&layers[1].diff_id, &layers[2].diff_id]);
    assert_eq!(sink.writes(&layers[0].gzip_digest()), 0, "amd64 left out");

    // One platform: that platform's manifest itself, unchanged.
    let sink = MemoryStore::new("dst");
    let o = CopyOptions {
        platforms: vec![platform("linux/arm64")],
        ..opts(&tmp)
    };
    copy_all(&source, &sink, &o).unwrap();
    let out = sink.resolve(&name("reg.example/multi:1")).unwrap();
    assert_eq!(out.digest, imgs[1].root.digest);
    assert_eq!(sink.get(&idx.digest), None);

    // A platform the index lacks: nothing found, nothing written.
    let sink = MemoryStore::new("dst");
    let o = CopyOptions {
        platforms: vec![platform("linux/riscv64")],
        ..opts(&tmp)
    };
    let e = copy_all(&source, &sink, &o).unwrap_err();
    assert_eq!(e.class(), ErrorClass::NotFound, "{e}");
    assert!(
        e.to_string().contains("linux/arm64"),
        "names what is there: {e}"
    );
    assert!(sink.digests().is_empty());
}

/// A source with one image already copied to `sink`, and a second image
/// whose layer `bad` is then damaged by `damage`.
fn failing_copy(damage: impl FnOnce(&MemoryStore, &Digest)) -> (MemoryStore, Result<CopyReport>) {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let ok = image(
        &source,
        &[&Layer::new("ok", b"fine")],
        "linux/amd64",
        Family::Oci,
    );
    publish(&source, &ok.root, &["reg.example/ok:1"]);
    copy_all(&source, &sink, &opts(&tmp)).unwrap();

    let source = MemoryStore::new("src2");
    let (good, bad) = (Layer::new("g", &[1u8; 3000]), Layer::new("b", &[2u8; 3000]));
    let img = image(&source, &[&good, &bad], "linux/amd64", Family::Oci);
    publish(&source, &img.root, &["reg.example/new:1"]);
    damage(&source, &bad.gzip_digest());
    let r = copy_all(&source, &sink, &opts(&tmp));
    (sink, r)
}

/// After a failed copy the destination is as it was: the earlier image
/// only, nothing staged, no name for the failed one.
fn assert_untouched(sink: &MemoryStore) {
    assert_eq!(sink.staged(), (0, 0));
    assert!(sink.resolve(&name("reg.example/new:1")).is_none());
    assert_eq!(sink.named().len(), 1);
    let root = sink.resolve(&name("reg.example/ok:1")).unwrap();
    assert_eq!(check(sink, &root).len(), 1);
    assert_eq!(
        sink.digests().len(),
        3,
        "the earlier image's three blobs only"
    );
}

#[test]
fn a_corrupt_blob_fails_as_integrity_and_leaves_nothing() {
    let (sink, r) = failing_copy(|src, d| src.corrupt(d));
    let e = r.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Integrity, "{e}");
    assert_untouched(&sink);
}

#[test]
fn a_layer_not_matching_its_diff_id_fails_as_integrity() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let (a, b) = (Layer::new("a", b"alpha"), Layer::new("b", b"beta"));
    // The config promises a's DiffID, the manifest carries b's bytes.
    let liar = Layer {
        diff_id: a.diff_id.clone(),
        ..b.clone()
    };
    let img = image(&source, &[&liar], "linux/amd64", Family::Oci);
    publish(&source, &img.root, &["reg.example/app:1"]);
    for compress in [None, Some(Compression::Zstd)] {
        let o = CopyOptions {
            compress,
            ..opts(&tmp)
        };
        let e = copy_all(&source, &sink, &o).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Integrity, "{e}");
        assert!(e.to_string().contains(a.diff_id.as_str()), "{e}");
        assert!(sink.digests().is_empty());
    }
}

#[test]
fn a_failed_read_fails_with_its_class_and_leaves_nothing() {
    for class in [ErrorClass::Io, ErrorClass::NotFound, ErrorClass::Network] {
        let (sink, r) = failing_copy(|src, d| src.fail_reads(d, 1, class));
        let e = r.unwrap_err();
        assert_eq!(e.class(), class, "{e}");
        assert!(e.to_string().contains("injected read failure"), "{e}");
        assert_untouched(&sink);
    }
}

#[test]
fn a_failed_write_fails_with_its_class_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let a = Layer::new("a", b"alpha");
    let img = image(&source, &[&a], "linux/amd64", Family::Oci);
    publish(&source, &img.root, &["reg.example/app:1"]);
    sink.fail_writes(&a.gzip_digest(), 1, ErrorClass::Io);

    let e = copy_all(&source, &sink, &opts(&tmp)).unwrap_err();

    assert_eq!(e.class(), ErrorClass::Io, "{e}");
    assert!(sink.digests().is_empty());
    assert_eq!(sink.staged(), (0, 0));
    assert!(sink.named().is_empty());
}

#[test]
fn a_transient_read_failure_is_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let a = Layer::new("a", &[3u8; 4000]);
    let img = image(&source, &[&a], "linux/amd64", Family::Oci);
    let root = publish(&source, &img.root, &["reg.example/app:1"]);
    source.fail_reads(&a.gzip_digest(), 1, ErrorClass::Network);
    let o = CopyOptions {
        retry_times: 1,
        ..opts(&tmp)
    };

    copy_all(&source, &sink, &o).unwrap();

    assert_eq!(source.blob_reads(&a.gzip_digest()), 2);
    assert_eq!(
        check(&sink, &root)[0].diff_ids,
        std::slice::from_ref(&a.diff_id)
    );

    // A sink that cannot take a blob again (a tar) does not retry.
    let sink = MemoryStore::new("tar").with_caps(SinkCaps {
        retry_blobs: false,
        ..SinkCaps::ANY
    });
    source.fail_reads(&a.gzip_digest(), 1, ErrorClass::Network);
    let e = copy_all(&source, &sink, &o).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Network);
}

#[test]
fn copies_many_images_at_once_writing_each_blob_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, sink) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let base = Layer::new("base", &[9u8; 20_000]);
    let mid = Layer::new("mid", &[8u8; 10_000]);
    let mut roots = Vec::new();
    for i in 0..8 {
        let own = Layer::new("own", format!("image {i}").as_bytes());
        let layers: Vec<&Layer> = if i % 2 == 0 {
            vec![&base, &mid, &own]
        } else {
            vec![&base, &own]
        };
        let img = image(&source, &layers, "linux/amd64", Family::Oci);
        roots.push(publish(
            &source,
            &img.root,
            &[&format!("reg.example/app{i}:1")],
        ));
    }
    let o = CopyOptions {
        jobs: 8,
        ..opts(&tmp)
    };

    let report = copy_all(&source, &sink, &o).unwrap();

    assert_eq!(report.images.len(), 8);
    let writes = sink.all_writes();
    assert!(writes.values().all(|&n| n == 1), "{writes:?}");
    assert_eq!(source.blob_reads(&base.gzip_digest()), 1);
    assert_eq!(source.blob_reads(&mid.gzip_digest()), 1);
    // 8 configs, 8 own layers, base and mid.
    assert_eq!(report.blobs_copied, 18);
    for r in &roots {
        assert_eq!(check(&sink, r)[0].diff_ids[0], base.diff_id);
    }
}

#[test]
fn the_first_image_of_a_store_is_its_first_named() {
    let source = MemoryStore::new("src");
    let a = image(
        &source,
        &[&Layer::new("a", b"a")],
        "linux/amd64",
        Family::Oci,
    );
    let b = image(
        &source,
        &[&Layer::new("b", b"b")],
        "linux/amd64",
        Family::Oci,
    );
    publish(&source, &a.root, &["reg.example/a:1"]);
    publish(&source, &b.root, &["reg.example/b:1"]);
    // Renaming moves the name: the image left without a name is gone.
    publish(&source, &b.root, &["reg.example/a:1"]);
    assert_eq!(first_image(&source).root.digest, b.root.digest);
    assert_eq!(source.images().unwrap().len(), 1);
}

#[test]
fn decompresses_layers_for_a_sink_that_wants_plain_tars() {
    let tmp = tempfile::tempdir().unwrap();
    let source = MemoryStore::new("src");
    let sink = MemoryStore::new("archive").with_caps(SinkCaps {
        wants_uncompressed: true,
        ..SinkCaps::ANY
    });
    let a = Layer::new("a", b"alpha");
    let img = image(&source, &[&a], "linux/amd64", Family::Docker);
    publish(&source, &img.root, &["reg.example/app:1"]);

    copy_all(&source, &sink, &opts(&tmp)).unwrap();

    let out = sink.resolve(&name("reg.example/app:1")).unwrap();
    let raw = sink.get(&out.digest).unwrap();
    // A plain layer is its own DiffID.
    assert_eq!(field(&raw, "/layers/0/digest"), Some(a.diff_id.to_string()));
    assert_eq!(sink.get(&a.diff_id), Some(a.tar.clone()));
    assert_eq!(
        check(&sink, &out)[0].layer_types,
        [media_type::DOCKER_LAYER_TAR]
    );
}
