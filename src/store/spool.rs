//! Opening archive files: plain, compressed or from standard input.
//!
//! A plain seekable tar is read in place. A compressed archive (`docker save
//! | gzip`) or standard input cannot be read at random offsets, so it is
//! decompressed once into a temporary file under `--tmpdir` and read from
//! there. Temporary files are registered for removal on Ctrl-C.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::content::media_type::{Compression, Sniffed};
use crate::error::{Error, Result};

static CLEANUP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

type Hook = std::sync::Arc<dyn Fn() + Send + Sync>;
static HOOKS: Mutex<Vec<(usize, Hook)>> = Mutex::new(Vec::new());
static NEXT_HOOK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Registers something to undo if the process is interrupted; returns an id
/// for [`unregister_hook`].
pub fn register_hook(hook: Hook) -> usize {
    let id = NEXT_HOOK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    HOOKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((id, hook));
    id
}

pub fn unregister_hook(id: usize) {
    HOOKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(i, _)| *i != id);
}

/// Registers a path to delete if the process is interrupted.
pub fn register_cleanup(path: &Path) {
    CLEANUP
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(path.to_path_buf());
}

/// Forgets a path registered with [`register_cleanup`].
pub fn unregister_cleanup(path: &Path) {
    CLEANUP
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| p != path);
}

/// Runs every registered hook and deletes every registered path (called
/// from the interrupt handler).
pub fn cleanup_all() {
    let hooks = std::mem::take(&mut *HOOKS.lock().unwrap_or_else(|e| e.into_inner()));
    for (_, h) in hooks {
        h();
    }
    let paths = std::mem::take(&mut *CLEANUP.lock().unwrap_or_else(|e| e.into_inner()));
    for p in paths {
        if p.is_dir() {
            let _ = std::fs::remove_dir_all(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// An archive ready for random access.
pub struct OpenedArchive {
    pub file: File,
    /// Present when the archive was spooled; deleting it on drop.
    pub spool: Option<tempfile::TempPath>,
}

/// Opens `path` (or standard input for `-`), decompressing into a spool
/// file under `tmpdir` when needed.
pub fn open_archive(path: &str, tmpdir: &Path) -> Result<OpenedArchive> {
    if path == "-" {
        return spool(Box::new(io::stdin()), "standard input", tmpdir);
    }
    let p = Path::new(path);
    let mut file = File::open(p).map_err(|e| Error::path("open archive", p, e))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(Error::Format(format!(
            "{path} is a directory, not an archive"
        )));
    }
    let mut head = [0u8; 8];
    let n = read_head(&mut file, &mut head).map_err(|e| Error::path("read", p, e))?;
    match Compression::sniff(&head[..n]) {
        Sniffed::Known(Compression::None) => {
            use std::io::Seek;
            file.rewind().map_err(|e| Error::path("read", p, e))?;
            Ok(OpenedArchive { file, spool: None })
        }
        _ => {
            use std::io::Seek;
            file.rewind().map_err(|e| Error::path("read", p, e))?;
            spool(Box::new(file), path, tmpdir)
        }
    }
}

fn read_head(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn spool(input: Box<dyn Read + Send>, what: &str, tmpdir: &Path) -> Result<OpenedArchive> {
    let mut input = BufReader::with_capacity(256 * 1024, input);
    let head = {
        use std::io::BufRead;
        input
            .fill_buf()
            .map_err(|e| Error::io(format!("read {what}"), e))?
            .to_vec()
    };
    let mut decoded: Box<dyn Read> = match Compression::sniff(&head) {
        Sniffed::Known(Compression::None) => Box::new(input),
        Sniffed::Known(Compression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Sniffed::Known(Compression::Zstd) => Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| Error::io(format!("read {what}"), e))?,
        ),
        Sniffed::Other(kind) => {
            return Err(Error::Unsupported(format!(
                "{what} is {kind}-compressed; decompress it first (imgsync reads plain, gzip and zstd archives)"
            )));
        }
    };
    let tmp = tempfile::Builder::new()
        .prefix(".imgsync-spool-")
        .tempfile_in(tmpdir)
        .map_err(|e| Error::path("create a temporary file in", tmpdir, e))?;
    register_cleanup(tmp.path());
    let (mut file, path) = tmp.into_parts();
    io::copy(&mut decoded, &mut file).map_err(|e| {
        let _ = std::fs::remove_file(&path);
        match e.kind() {
            io::ErrorKind::InvalidData
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::UnexpectedEof => {
                Error::Format(format!("{what} is truncated or corrupt: {e}"))
            }
            _ => Error::io(format!("spool {what} to {}", tmpdir.display()), e),
        }
    })?;
    file.flush().map_err(|e| Error::path("write", &path, e))?;
    {
        use std::io::Seek;
        file.rewind().map_err(|e| Error::path("read", &path, e))?;
    }
    Ok(OpenedArchive {
        file,
        spool: Some(path),
    })
}

impl Drop for OpenedArchive {
    fn drop(&mut self) {
        if let Some(p) = &self.spool {
            unregister_cleanup(p);
        }
    }
}

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

/// Replaces `path` with `bytes` atomically (a temporary file beside it,
/// then a rename), with the given permission bits.
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
    tmp.persist(path)
        .map_err(|e| Error::path("write", path, e.error))?;
    Ok(())
}
