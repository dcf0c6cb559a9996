//! Opening archive files: plain, compressed or from standard input.
//!
//! A plain seekable tar is read in place. A compressed archive (`docker save
//! | gzip`) or standard input cannot be read at random offsets, so it is
//! decompressed once into a temporary file under `--tmpdir` and read from
//! there. Temporary files are registered for removal on Ctrl-C.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use super::cleanup::{register_cleanup, unregister_cleanup};
use crate::content::media_type::{Compression, Sniffed};
use crate::error::{Error, Result};

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
    let n =
        crate::store::io::read_full(&mut file, &mut head).map_err(|e| Error::path("read", p, e))?;
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
