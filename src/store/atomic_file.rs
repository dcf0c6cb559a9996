//! Files that become part of a destination: created under a temporary name
//! beside their final place and renamed into it, so a reader never sees a
//! half-written file.

use std::io::{self, Write};
use std::path::Path;

use crate::error::Error;

/// A temporary file that becomes part of a destination (a layout blob, an
/// archive): readable by others once renamed into place, as a file written
/// by `cp` would be.
pub fn destination_tempfile(dir: &Path, prefix: &str) -> io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
}

/// A temporary file for a whole destination (an archive, a bundle volume)
/// beside it, locked while it lives so that a later run reclaims it if this
/// one is killed (see [`crate::store::cleanup::locked_tempfile`]).
pub fn locked_destination_tempfile(
    dir: &Path,
    prefix: &str,
) -> io::Result<tempfile::NamedTempFile> {
    crate::store::cleanup::locked_tempfile(dir, prefix, || destination_tempfile(dir, prefix))
}

/// Makes the names in `dir` durable: after a rename into it, the renamed
/// file survives a power loss under its new name.
pub fn sync_dir(dir: &Path) -> crate::error::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::path("sync directory", dir, e))
}

/// Publishes a complete temporary file as `dest`: its data reaches the
/// disk before the rename, so after a power loss `dest` is either the old
/// file or the whole new one. The caller syncs `dest`'s directory after
/// (once for several files, see [`sync_dir`]).
pub fn publish(tmp: tempfile::NamedTempFile, dest: &Path) -> crate::error::Result<()> {
    tmp.as_file()
        .sync_data()
        .map_err(|e| Error::path("write", tmp.path(), e))?;
    tmp.persist(dest)
        .map_err(|e| Error::path("write", dest, e.error))?;
    Ok(())
}

/// Replaces `path` with `bytes` atomically (a temporary file beside it,
/// then a rename), with the given permission bits, durably (see
/// [`publish`]).
pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> crate::error::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::path("create directory", dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".imgsync-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|e| Error::path("write into", dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| Error::path("write", path, e))?;
    publish(tmp, path)?;
    sync_dir(dir)
}
