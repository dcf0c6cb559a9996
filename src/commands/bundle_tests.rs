//! Bundle planning: what `--since` leaves out and lists as required, where
//! `--split` cuts volumes, and what `load` refuses; images come from an
//! in-memory store, bundles and layouts go to a temporary directory.

use std::path::{Path, PathBuf};

use crate::ErrorClass;
use crate::commands::load::{LoadArgs, load};
use crate::content::Digest;
use crate::engine::progress::Hidden;
use crate::engine::{CopyOptions, ImagePlan, copy_images};
use crate::store::bundle::manifest::{BundleManifest, read_since, volume_path};
use crate::store::bundle::read::Opened;
use crate::store::bundle::{Bundle, BundleOptions, BundleSink};
use crate::store::location::Location;
use crate::store::memory::MemoryStore;
use crate::store::registry::RegistrySettings;
use crate::store::test_images::{Built, Family, Layer, check, image, name, publish};
use crate::store::{ImageSink, ImageSource};

fn copy_opts(tmp: &Path, jobs: usize) -> CopyOptions {
    CopyOptions {
        jobs,
        tmpdir: tmp.to_path_buf(),
        retry_times: 0,
        ..CopyOptions::default()
    }
}

/// Saves every image of `source` into a bundle at `out`, as `imgsync save`
/// does for each source.
fn save(source: &MemoryStore, out: &Path, opts: BundleOptions, jobs: usize) -> BundleManifest {
    let sink = BundleSink::create(out, opts).unwrap();
    let plans: Vec<ImagePlan> = source
        .images()
        .unwrap()
        .into_iter()
        .map(|image| ImagePlan {
            names: image.names.clone(),
            image,
        })
        .collect();
    let dir = out.parent().unwrap();
    copy_images(source, &sink, &plans, &copy_opts(dir, jobs), &Hidden).unwrap();
    sink.commit().unwrap();
    sink.manifest().unwrap()
}

fn since(m: &BundleManifest, file: &str) -> BundleOptions {
    BundleOptions {
        since: Some((m.clone(), file.to_string())),
        ..BundleOptions::default()
    }
}

fn carried(m: &BundleManifest) -> Vec<&Digest> {
    m.blobs.iter().map(|b| &b.digest).collect()
}

fn required(m: &BundleManifest) -> Vec<(&Digest, &str)> {
    m.required
        .iter()
        .map(|r| (&r.digest, r.bundle.as_str()))
        .collect()
}

fn put(store: &MemoryStore, layers: &[&Layer], reference: &str) -> Built {
    let img = image(store, layers, "linux/amd64", Family::Oci);
    publish(store, &img.root, &[reference]);
    img
}

fn open(files: &[PathBuf], tmp: &Path) -> Box<Bundle> {
    match Bundle::open(files, tmp).unwrap() {
        Opened::Bundle(b) => b,
        Opened::NotABundle => panic!("{files:?} is not read as a bundle"),
    }
}

#[test]
fn since_leaves_out_what_earlier_bundles_carried_and_lists_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, a, b, c) = (
        Layer::new("base", b"base"),
        Layer::new("a", b"a"),
        Layer::new("b", b"b"),
        Layer::new("c", b"c"),
    );
    let first = MemoryStore::new("first");
    let img_a = put(&first, &[&base, &a], "reg.example/a:1");
    let m1 = save(
        &first,
        &tmp.path().join("w1.tar"),
        BundleOptions::default(),
        4,
    );
    assert!(m1.required.is_empty());
    assert!(carried(&m1).contains(&&base.gzip_digest()));

    // The same image again, and one sharing its base.
    let second = MemoryStore::new("second");
    put(&second, &[&base, &a], "reg.example/a:1");
    let img_b = put(&second, &[&base, &b], "reg.example/b:1");
    let m2 = save(&second, &tmp.path().join("w2.tar"), since(&m1, "w1.tar"), 4);
    let mut expected = [
        img_a.root.digest.clone(),
        img_a.config.clone(),
        img_b.root.digest.clone(),
        img_b.config.clone(),
        b.gzip_digest(),
    ];
    expected.sort();
    // Manifests and configs are always carried; layers only when new.
    assert_eq!(carried(&m2), expected.iter().collect::<Vec<_>>());
    let mut want_required = vec![
        (base.gzip_digest(), m1.id.as_str()),
        (a.gzip_digest(), m1.id.as_str()),
    ];
    want_required.sort();
    let got: Vec<(Digest, &str)> = required(&m2)
        .into_iter()
        .map(|(d, id)| (d.clone(), id))
        .collect();
    assert_eq!(got, want_required);
    assert_eq!(m2.since[0].id, m1.id);
    assert_eq!(m2.since[0].file, "w1.tar");

    // A third bundle still credits the first with the base it relied on.
    let third = MemoryStore::new("third");
    put(&third, &[&base, &b, &c], "reg.example/c:1");
    let m3 = save(&third, &tmp.path().join("w3.tar"), since(&m2, "w2.tar"), 4);
    let req3 = required(&m3);
    assert!(
        req3.contains(&(&base.gzip_digest(), m1.id.as_str())),
        "{req3:?}"
    );
    assert!(
        req3.contains(&(&b.gzip_digest(), m2.id.as_str())),
        "{req3:?}"
    );
    assert!(carried(&m3).contains(&&c.gzip_digest()));
    let chain: Vec<&str> = m3.since.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(chain, [m2.id.as_str(), m1.id.as_str()]);
    assert_eq!(m3.bundle_file(&m1.id).as_deref(), Some("w1.tar"));
}

#[test]
fn load_refuses_a_bundle_whose_earlier_bundle_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let base = Layer::new("base", b"base");
    let first = MemoryStore::new("first");
    put(&first, &[&base], "reg.example/a:1");
    let w1 = tmp.path().join("w1.tar");
    let m1 = save(&first, &w1, BundleOptions::default(), 4);
    let second = MemoryStore::new("second");
    put(&second, &[&base, &Layer::new("b", b"b")], "reg.example/b:1");
    let w2 = tmp.path().join("w2.tar");
    save(&second, &w2, since(&m1, "w1.tar"), 4);

    let layout = tmp.path().join("layout");
    let args = |file: &Path| LoadArgs {
        files: vec![file.to_path_buf()],
        to: Location::Oci {
            path: layout.display().to_string(),
            selector: None,
        },
        keep_registry: false,
        options: copy_opts(tmp.path(), 4),
        registry: RegistrySettings::default(),
    };
    let e = load(&args(&w2), &Hidden).unwrap_err();
    assert_eq!(e.class(), ErrorClass::NotFound, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("1 from bundle w1.tar"), "{msg}");
    assert!(msg.contains(base.gzip_digest().as_str()), "{msg}");
    assert!(!layout.join("index.json").exists(), "nothing was written");

    // In order, the chain loads.
    load(&args(&w1), &Hidden).unwrap();
    let report = load(&args(&w2), &Hidden).unwrap();
    assert_eq!(report.images.len(), 1);
}

#[test]
fn split_cuts_volumes_and_parts_where_they_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let split = crate::store::bundle::write::MIN_VOLUME;
    let source = MemoryStore::new("src");
    let big = Layer::noise(1, 2_600_000);
    let (l1, l2) = (Layer::noise(2, 700_000), Layer::noise(3, 600_000));
    let img = put(&source, &[&big, &l1, &l2], "reg.example/big:1");
    let out = tmp.path().join("cut.tar");
    let opts = BundleOptions {
        split: Some(split),
        ..BundleOptions::default()
    };
    // One blob at a time, largest first: placement is deterministic.
    let m = save(&source, &out, opts, 1);

    let blob = |d: &Digest| m.blobs.iter().find(|b| &b.digest == d).unwrap();
    let big_parts = &blob(&big.gzip_digest()).parts;
    // Larger than a volume: full parts in volumes of their own, the rest
    // in a third.
    let volumes: Vec<u32> = big_parts.iter().map(|p| p.volume).collect();
    assert_eq!(volumes, [1, 2, 3]);
    assert_eq!(
        big_parts.iter().map(|p| p.size).sum::<u64>(),
        big.gzip.len() as u64
    );
    assert!(big_parts[0].size == big_parts[1].size && big_parts[2].size < big_parts[0].size);
    // The next layers do not fit beside the last part, nor beside each
    // other: one volume each.
    let (p1, p2) = (
        &blob(&l1.gzip_digest()).parts,
        &blob(&l2.gzip_digest()).parts,
    );
    assert_eq!((p1.len(), p2.len()), (1, 1));
    assert_eq!((p1[0].volume, p2[0].volume), (4, 5));
    assert_eq!(m.volumes.len(), 5);
    for v in &m.volumes {
        let len = std::fs::metadata(volume_path(&out, v.number))
            .unwrap()
            .len();
        assert!(len <= split, "volume {} is {len} bytes", v.number);
        assert!(!v.checksum.is_empty());
    }
    assert!(!out.exists(), "a split bundle is its volumes only");

    // The bundle's name stands for its volumes when read back, and the
    // parts join into the blob they were cut from.
    assert_eq!(read_since(&out).unwrap().id, m.id);
    let bundle = open(&[out], tmp.path());
    bundle.check().unwrap();
    let sink = MemoryStore::new("back");
    let plans: Vec<ImagePlan> = bundle
        .images()
        .unwrap()
        .into_iter()
        .map(|image| ImagePlan {
            names: image.names.clone(),
            image,
        })
        .collect();
    copy_images(
        bundle.as_ref(),
        &sink,
        &plans,
        &copy_opts(tmp.path(), 2),
        &Hidden,
    )
    .unwrap();
    sink.commit().unwrap();
    let (root, _) = &sink.named()[0];
    assert_eq!(root.digest, img.root.digest);
    assert_eq!(check(&sink, root)[0].diff_ids[0], big.diff_id);
    assert_eq!(sink.get(&big.gzip_digest()), Some(big.gzip.clone()));
}

#[test]
fn a_failed_save_leaves_no_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let source = MemoryStore::new("src");
    let a = Layer::new("a", &[5u8; 2000]);
    put(&source, &[&a], "reg.example/a:1");
    source.corrupt(&a.gzip_digest());
    let out = tmp.path().join("bad.tar");
    let sink = BundleSink::create(&out, BundleOptions::default()).unwrap();
    let plans: Vec<ImagePlan> = source
        .images()
        .unwrap()
        .into_iter()
        .map(|image| ImagePlan {
            names: vec![name("reg.example/a:1")],
            image,
        })
        .collect();
    let e = copy_images(&source, &sink, &plans, &copy_opts(tmp.path(), 2), &Hidden).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Integrity, "{e}");
    sink.abort();
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
