//! Entry points for fuzzing: every parser of input from outside (a
//! registry, an archive, a bundle, a config file, the command line) fed
//! arbitrary bytes. Each function must return, whatever the bytes: an
//! error is fine, a panic, a hang or unbounded memory is a defect.
//!
//! The fuzz targets in `fuzz/` call these under libFuzzer (nightly; see
//! `scripts/fuzz.sh`), and the test suite replays the corpus in
//! `fuzz/corpus/` through them on the stable toolchain, so every input
//! that once crashed stays a regression test.

use std::io::Write;

use crate::content::config::ConfigView;
use crate::content::manifest::ManifestView;
use crate::content::{Digest, Platform, Reference, media_type};

/// A fuzz entry point.
pub type Target = fn(&[u8]);

/// The targets, by name (the name of the corpus folder and the fuzz
/// target).
pub const TARGETS: &[(&str, Target)] = &[
    ("reference", reference),
    ("digest", digest),
    ("platform", platform),
    ("location", location),
    ("manifest", manifest),
    ("image_config", image_config),
    ("docker_manifest_json", docker_manifest_json),
    ("tar_index", tar_index),
    ("bundle_manifest", bundle_manifest),
    ("volume_listing", volume_listing),
    ("www_authenticate", www_authenticate),
    ("token", token),
    ("link_header", link_header),
    ("sync_config", sync_config),
    ("referrers_index", referrers_index),
];

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Image references (`host/repo:tag@digest`), normalised.
pub fn reference(data: &[u8]) {
    if let Some(s) = text(data)
        && let Ok(r) = Reference::parse(s)
    {
        // What parses prints and parses again to the same reference.
        #[allow(
            clippy::expect_used,
            reason = "a fuzz oracle: a printed reference that fails to parse is the defect to find"
        )]
        let again = Reference::parse(&r.to_string()).expect("a printed reference parses");
        assert_eq!(again, r, "{s:?} does not round-trip");
    }
}

/// Digests (`alg:hex`).
pub fn digest(data: &[u8]) {
    if let Some(s) = text(data)
        && let Ok(d) = Digest::parse(s)
    {
        assert_eq!(d.as_str(), s);
        let _ = d.hasher();
    }
}

/// Platforms (`os/arch[/variant]`).
pub fn platform(data: &[u8]) {
    if let Some(s) = text(data) {
        let _ = Platform::parse(s);
    }
}

/// Location strings as the command line takes them.
pub fn location(data: &[u8]) {
    if let Some(s) = text(data) {
        let _ = crate::store::location::Location::parse(s);
    }
}

/// Manifests and indexes, under every media type a descriptor may claim.
pub fn manifest(data: &[u8]) {
    let _ = ManifestView::parse(data, None);
    for hint in [
        media_type::OCI_MANIFEST,
        media_type::OCI_INDEX,
        media_type::DOCKER_MANIFEST,
        media_type::DOCKER_LIST,
    ] {
        let _ = ManifestView::parse(data, Some(hint));
    }
}

/// Image configs (platform and DiffIDs).
pub fn image_config(data: &[u8]) {
    let _ = ConfigView::parse(data);
}

/// A docker archive's `manifest.json`.
pub fn docker_manifest_json(data: &[u8]) {
    let _ = crate::store::docker_archive::read::parse_manifest_json(data, "fuzz");
}

/// A tar archive indexed for reading in place, and every entry read back.
pub fn tar_index(data: &[u8]) {
    let Ok(mut file) = tempfile::tempfile() else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    if let Ok(tar) = crate::store::tar::index::TarIndex::new(file, "fuzz.tar") {
        for name in tar.names().to_vec() {
            let _ = tar.read_small(&name, 1 << 20);
        }
    }
}

/// A bundle's manifest (`imgsync-bundle.json`).
pub fn bundle_manifest(data: &[u8]) {
    let _ = crate::store::bundle::manifest::BundleManifest::parse(data, "fuzz");
}

/// A bundle volume's listing (`imgsync-volume.json`).
pub fn volume_listing(data: &[u8]) {
    let _ = crate::store::bundle::manifest::VolumeListing::parse(data, "fuzz");
}

/// `WWW-Authenticate` challenges.
pub fn www_authenticate(data: &[u8]) {
    if let Some(s) = text(data)
        && let Some(c) = crate::store::registry::auth::parse_challenge(s)
    {
        let _ = c.to_challenge();
    }
}

/// Token responses.
pub fn token(data: &[u8]) {
    let _ = crate::store::registry::auth::parse_token(data);
}

/// `Link` headers of paginated listings.
pub fn link_header(data: &[u8]) {
    if let Some(s) = text(data) {
        let _ = crate::store::registry::tags::next_link(s);
    }
}

/// Sync configuration files.
pub fn sync_config(data: &[u8]) {
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    let _ = crate::commands::mirror::config::load(file.path());
}

/// A referrers index (the referrers API's answer, or a fallback tag's
/// index) merged with a referrer of ours: the merge keeps every entry the
/// index had and lists ours, or refuses the index.
pub fn referrers_index(data: &[u8]) {
    use crate::content::Descriptor;
    use crate::content::referrers::{lists_all, merge_referrers_index};
    let ours = Descriptor::new(
        media_type::OCI_MANIFEST,
        Digest::sha256_of(b"a referrer of ours"),
        18,
    );
    let ours = std::slice::from_ref(&ours);
    match merge_referrers_index(Some(data), ours) {
        Ok(Some(merged)) => {
            assert!(lists_all(&merged, ours), "the merge lost our referrer");
            let before = ManifestView::parse(data, Some(media_type::OCI_INDEX))
                .map(|v| v.manifests.len())
                .unwrap_or(0);
            let after = ManifestView::parse(&merged, Some(media_type::OCI_INDEX))
                .map(|v| v.manifests.len())
                .unwrap_or(0);
            assert!(after > before, "the merge dropped an entry");
        }
        Ok(None) => assert!(
            lists_all(data, ours),
            "nothing added, yet ours is not listed"
        ),
        Err(_) => {}
    }
}
