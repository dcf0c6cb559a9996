//! One copy into several sinks through [`FanOut`]: each source blob is
//! read once, each sink gets the bytes it lacks and its own names, and a
//! sink that fails a write gets the blob again without the others being
//! written twice.

use std::sync::Arc;

use super::tests::opts;
use super::*;
use crate::ErrorClass;
use crate::content::{Descriptor, RawManifest};
use crate::engine::progress::Hidden;
use crate::store::fanout::{FanOut, Target};
use crate::store::memory::MemoryStore;
use crate::store::test_images::{Family, Layer, check, image, name, publish};

/// A memory store the test keeps a hand on while the fan-out owns it.
struct Shared(Arc<MemoryStore>);

impl ImageSink for Shared {
    fn describe(&self) -> String {
        ImageSink::describe(self.0.as_ref())
    }
    fn caps(&self) -> crate::store::SinkCaps {
        self.0.caps()
    }
    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        self.0.has_blob(desc)
    }
    fn has_image(
        &self,
        root: &Descriptor,
        config: Option<&Digest>,
        names: &[ImageName],
    ) -> Result<bool> {
        self.0.has_image(root, config, names)
    }
    fn put_blob(&self, desc: &Descriptor, reader: &mut dyn std::io::Read) -> Result<()> {
        self.0.put_blob(desc, reader)
    }
    fn put_manifest(&self, manifest: &RawManifest) -> Result<()> {
        self.0.put_manifest(manifest)
    }
    fn add_image(&self, root: &Descriptor, names: &[ImageName]) -> Result<()> {
        self.0.add_image(root, names)
    }
    fn commit(&self) -> Result<()> {
        self.0.commit()
    }
    fn abort(&self) {
        self.0.abort()
    }
}

/// Two sinks, each naming the image its own way, behind one fan-out.
fn two_sinks() -> (Arc<MemoryStore>, Arc<MemoryStore>, FanOut) {
    let (a, b) = (
        Arc::new(MemoryStore::new("a")),
        Arc::new(MemoryStore::new("b")),
    );
    let fan = FanOut::new(vec![
        Target {
            sink: Box::new(Shared(a.clone())),
            names: vec![name("a.example/app:1")],
            registry: None,
        },
        Target {
            sink: Box::new(Shared(b.clone())),
            names: vec![name("b.example/mirror/app:1")],
            registry: None,
        },
    ]);
    (a, b, fan)
}

fn copy_through(source: &MemoryStore, fan: &FanOut, o: &CopyOptions) -> Result<CopyReport> {
    let image = source.images().unwrap().remove(0);
    let plan = ImagePlan {
        image,
        names: fan.image_names().to_vec(),
    };
    copy_and_commit(source, fan, &[plan], o, &Hidden)
}

#[test]
fn each_source_blob_is_read_once_and_every_sink_names_the_image_its_way() {
    let tmp = tempfile::tempdir().unwrap();
    let source = MemoryStore::new("src");
    let (x, y) = (Layer::noise(1, 600_000), Layer::noise(2, 300_000));
    let img = image(&source, &[&x, &y], "linux/amd64", Family::Oci);
    let root = publish(&source, &img.root, &["src.example/app:1"]);
    let (a, b, fan) = two_sinks();

    copy_through(&source, &fan, &opts(&tmp)).unwrap();

    for d in source.digests() {
        assert!(source.blob_reads(&d) <= 1, "{d} read more than once");
        assert_eq!(a.get(&d), source.get(&d), "{d} in a");
        assert_eq!(b.get(&d), source.get(&d), "{d} in b");
    }
    assert_eq!(a.resolve(&name("a.example/app:1")), Some(root.clone()));
    assert_eq!(
        b.resolve(&name("b.example/mirror/app:1")),
        Some(root.clone())
    );
    assert_eq!(a.resolve(&name("b.example/mirror/app:1")), None);
    assert_eq!(check(&b, &root)[0].diff_ids, [x.diff_id, y.diff_id]);
}

#[test]
fn a_sink_holding_a_blob_gets_no_bytes_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let source = MemoryStore::new("src");
    let (x, y) = (Layer::new("x", b"held by a"), Layer::new("y", b"new"));
    let img = image(&source, &[&x, &y], "linux/amd64", Family::Oci);
    publish(&source, &img.root, &["src.example/app:1"]);
    let (a, b, fan) = two_sinks();
    let held = x.gzip_digest();
    a.declare_present(&held);

    copy_through(&source, &fan, &opts(&tmp)).unwrap();

    assert_eq!(a.writes(&held), 0);
    assert_eq!(b.writes(&held), 1);
    assert_eq!(b.writes(&y.gzip_digest()), 1);
    assert_eq!(a.writes(&y.gzip_digest()), 1);
}

#[test]
fn a_failed_write_is_retried_for_its_sink_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let source = MemoryStore::new("src");
    let x = Layer::noise(3, 400_000);
    let img = image(&source, &[&x], "linux/amd64", Family::Oci);
    let root = publish(&source, &img.root, &["src.example/app:1"]);
    let (a, b, fan) = two_sinks();
    let layer = x.gzip_digest();
    b.fail_writes(&layer, 1, ErrorClass::Network);
    let o = CopyOptions {
        retry_times: 2,
        ..opts(&tmp)
    };

    copy_through(&source, &fan, &o).unwrap();

    assert_eq!(a.writes(&layer), 1, "a had it after the first try");
    assert_eq!(b.writes(&layer), 2, "b failed once, then got it");
    assert_eq!(
        check(&a, &root)[0].diff_ids,
        std::slice::from_ref(&x.diff_id)
    );
    assert_eq!(
        check(&b, &root)[0].diff_ids,
        std::slice::from_ref(&x.diff_id)
    );
}
