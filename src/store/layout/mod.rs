//! OCI image layouts (image-spec image-layout.md): reading from any
//! [`FileTree`](super::files::FileTree), writing to a directory.

mod read;
mod write;

pub use read::{LayoutIndex, LayoutSource, Selector};
pub use write::{LayoutSink, OCI_LAYOUT_CONTENT, index_bytes, merge_index_entries};

pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_FILE: &str = "index.json";

/// Path of a blob inside a layout.
pub fn blob_path(digest: &crate::content::Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.encoded())
}
