//! Media types (image-spec media-types.md; distribution manifest-v2-2.md)
//! and the layer compression they imply (formats reference §5).

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_FOREIGN_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_FOREIGN_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_FOREIGN_ZSTD: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
pub const DOCKER_FOREIGN_TAR: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";
pub const DOCKER_FOREIGN_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// Detects compression from the first bytes of a blob; never from a
    /// file name. `None` for anything not gzip or zstd.
    pub fn sniff(head: &[u8]) -> Sniffed {
        if head.starts_with(&[0x1f, 0x8b, 0x08]) {
            Sniffed::Known(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            || matches!(head, [m, 0x2a, 0x4d, 0x18, ..] if m & 0xf0 == 0x50)
        {
            Sniffed::Known(Compression::Zstd)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Sniffed::Other("xz")
        } else if head.starts_with(b"BZh") {
            Sniffed::Other("bzip2")
        } else {
            Sniffed::Known(Compression::None)
        }
    }
}

/// Result of looking at a blob's magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Known(Compression),
    /// A compression imgsync recognises but cannot decode.
    Other(&'static str),
}

/// What a layer media type says about its blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerType {
    pub compression: Compression,
    pub foreign: bool,
    pub docker: bool,
}

/// Classifies a layer media type; `None` for types imgsync must treat as
/// opaque (encrypted, unknown, artifact layers).
pub fn layer_type(media_type: &str) -> Option<LayerType> {
    let (compression, foreign, docker) = match media_type {
        OCI_LAYER_TAR => (Compression::None, false, false),
        OCI_LAYER_GZIP => (Compression::Gzip, false, false),
        OCI_LAYER_ZSTD => (Compression::Zstd, false, false),
        OCI_FOREIGN_TAR => (Compression::None, true, false),
        OCI_FOREIGN_GZIP => (Compression::Gzip, true, false),
        OCI_FOREIGN_ZSTD => (Compression::Zstd, true, false),
        DOCKER_LAYER_TAR => (Compression::None, false, true),
        DOCKER_LAYER_GZIP => (Compression::Gzip, false, true),
        DOCKER_LAYER_ZSTD => (Compression::Zstd, false, true),
        DOCKER_FOREIGN_TAR => (Compression::None, true, true),
        DOCKER_FOREIGN_GZIP => (Compression::Gzip, true, true),
        _ => return None,
    };
    Some(LayerType {
        compression,
        foreign,
        docker,
    })
}

/// The layer media type for a compression in the OCI or Docker family.
pub fn layer_media_type(compression: Compression, foreign: bool, docker: bool) -> &'static str {
    match (docker, foreign, compression) {
        (false, false, Compression::None) => OCI_LAYER_TAR,
        (false, false, Compression::Gzip) => OCI_LAYER_GZIP,
        (false, false, Compression::Zstd) => OCI_LAYER_ZSTD,
        (false, true, Compression::None) => OCI_FOREIGN_TAR,
        (false, true, Compression::Gzip) => OCI_FOREIGN_GZIP,
        (false, true, Compression::Zstd) => OCI_FOREIGN_ZSTD,
        (true, false, Compression::None) => DOCKER_LAYER_TAR,
        (true, false, Compression::Gzip) => DOCKER_LAYER_GZIP,
        (true, false, Compression::Zstd) => DOCKER_LAYER_ZSTD,
        (true, true, Compression::None) => DOCKER_FOREIGN_TAR,
        (true, true, _) => DOCKER_FOREIGN_GZIP,
    }
}

/// Is this the media type of an image config (as opposed to an artifact's)?
pub fn is_image_config(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_CONFIG | DOCKER_CONFIG | "application/octet-stream"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_peer_compression_samples() {
        assert_eq!(
            Compression::sniff(&[0x1f, 0x8b, 0x08, 0]),
            Sniffed::Known(Compression::Gzip)
        );
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Sniffed::Known(Compression::Zstd)
        );
        assert_eq!(Compression::sniff(b"\xfd7zXZ\0"), Sniffed::Other("xz"));
        assert_eq!(Compression::sniff(b"BZh9"), Sniffed::Other("bzip2"));
        assert_eq!(
            Compression::sniff(b"Hello"),
            Sniffed::Known(Compression::None)
        );
    }

    #[test]
    fn layer_types_round_trip() {
        for mt in [
            OCI_LAYER_TAR,
            OCI_LAYER_GZIP,
            OCI_LAYER_ZSTD,
            DOCKER_LAYER_TAR,
            DOCKER_LAYER_GZIP,
            OCI_FOREIGN_GZIP,
        ] {
            let t = layer_type(mt).unwrap();
            assert_eq!(layer_media_type(t.compression, t.foreign, t.docker), mt);
        }
        assert!(layer_type("application/vnd.oci.image.layer.v1.tar+gzip+encrypted").is_none());
    }
}
