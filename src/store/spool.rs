//! Opening archive files: plain, compressed or from standard input.
//!
//! A plain seekable tar is read in place. A compressed archive (`docker save
//! | gzip`) or standard input cannot be read at random offsets, so it is
//! decompressed once into a temporary file under `--tmpdir` and read from
//! there. Temporary files are registered for removal on Ctrl-C.
//!
//! Spooling follows the tar's own headers and stops at its end marker (two
//! zero blocks), so whatever a compressed stream holds after the archive is
//! never decompressed; and an entry that would take the spool past
//! [`max_spool`] is refused before any of it is written.

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
    let head =
        crate::store::io::read_head(&mut file, &mut head).map_err(|e| Error::path("read", p, e))?;
    match Compression::sniff(head) {
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
    let tmp = crate::store::cleanup::claimed_tempfile(tmpdir, SPOOL_PREFIX)
        .map_err(|e| Error::path("create a temporary file in", tmpdir, e))?;
    register_cleanup(tmp.path());
    let (mut file, path) = tmp.into_parts();
    let limit = max_spool()?;
    let copied = copy_tar(&mut decoded, &mut file, limit, what);
    let copied = match copied {
        Err(Spool::Io(e)) => Err(e),
        Err(Spool::Refused(e)) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(()) => Ok(()),
    };
    copied.map_err(|e| {
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

/// Spool files in `--tmpdir` (leftovers of killed runs are reclaimed).
const SPOOL_PREFIX: &str = ".imgsync-spooling-";

/// The environment variable bounding what one archive may spool.
pub const MAX_SPOOL_VAR: &str = "IMGSYNC_MAX_SPOOL";

/// Default bound of one spool file: room for the largest images people
/// ship, far below what a gzip or zstd bomb expands to.
const DEFAULT_MAX_SPOOL: u64 = 64 << 30;

/// Bytes one archive may spool: `IMGSYNC_MAX_SPOOL` (bytes, or with a K, M,
/// G or T binary suffix), else 64 GiB.
pub fn max_spool() -> Result<u64> {
    let Ok(v) = std::env::var(MAX_SPOOL_VAR) else {
        return Ok(DEFAULT_MAX_SPOOL);
    };
    parse_size(&v).ok_or_else(|| {
        Error::Usage(format!(
            "{MAX_SPOOL_VAR}={v:?} is not a size (bytes, or a number with K, M, G or T)"
        ))
    })
}

fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let (digits, shift) = match v.char_indices().last()? {
        (i, 'K' | 'k') => (&v[..i], 10),
        (i, 'M' | 'm') => (&v[..i], 20),
        (i, 'G' | 'g') => (&v[..i], 30),
        (i, 'T' | 't') => (&v[..i], 40),
        _ => (v, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

use crate::store::tar::out::BLOCK;
/// Largest pax extended header read (they hold a few paths and numbers).
const MAX_PAX_HEADER: u64 = 1 << 20;

enum Spool {
    /// Reading or writing failed (a corrupt stream, a full disk).
    Io(io::Error),
    /// The archive itself is refused.
    Refused(Error),
}

impl From<io::Error> for Spool {
    fn from(e: io::Error) -> Spool {
        Spool::Io(e)
    }
}

/// Copies the tar in `input` to `out`, header by header, up to and with its
/// end marker. A stream that ends early is copied as it is (the tar reader
/// then names what is missing).
fn copy_tar(input: &mut dyn Read, out: &mut File, limit: u64, what: &str) -> Result<(), Spool> {
    let mut written = 0u64;
    let mut zero_blocks = 0;
    let mut pax_size: Option<u64> = None;
    let refused = |m: String| Spool::Refused(Error::Format(m));
    loop {
        let mut block = [0u8; BLOCK as usize];
        let filled = crate::store::io::read_head(input, &mut block)?;
        out.write_all(filled)?;
        let n = filled.len();
        written = written.saturating_add(n as u64);
        if n < block.len() {
            return Ok(());
        }
        if block.iter().all(|&b| b == 0) {
            zero_blocks += 1;
            if zero_blocks == 2 {
                return Ok(());
            }
            continue;
        }
        zero_blocks = 0;
        let header_size = entry_size(&block).ok_or_else(|| {
            refused(format!(
                "{what}: not a tar archive (bad header at byte {})",
                written.saturating_sub(BLOCK)
            ))
        })?;
        let size = pax_size.take().unwrap_or(header_size);
        let padded = size
            .checked_next_multiple_of(BLOCK)
            .filter(|p| written.checked_add(*p).is_some_and(|total| total <= limit))
            .ok_or_else(|| {
                refused(format!(
                    "{what}: an entry of {size} bytes would take the spool past {limit} bytes \
                     (set {MAX_SPOOL_VAR} to allow more)"
                ))
            })?;
        if block[156] == b'x' {
            if size > MAX_PAX_HEADER {
                return Err(refused(format!(
                    "{what}: a pax header of {size} bytes (over {MAX_PAX_HEADER})"
                )));
            }
            let mut data = Vec::new();
            input.take(padded).read_to_end(&mut data)?;
            out.write_all(&data)?;
            written = written.saturating_add(data.len() as u64);
            pax_size = pax_record_size(data.get(..size as usize).unwrap_or(&data));
            continue;
        }
        let copied = io::copy(&mut input.take(padded), out)?;
        written = written.saturating_add(copied);
        if copied < padded {
            return Ok(());
        }
    }
}

/// The size field of a tar header: octal digits, or GNU base-256.
fn entry_size(header: &[u8; BLOCK as usize]) -> Option<u64> {
    let field = &header[124..136];
    let (&first, rest) = field.split_first()?;
    if first & 0x80 != 0 {
        let mut n = u64::from(first & 0x7f);
        for &b in rest {
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(n);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// The `size` record of a pax extended header (`LEN size=N\n`), which
/// overrides the next entry's header for entries past 8 GiB.
fn pax_record_size(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data).ok()?;
    text.lines()
        .filter_map(|l| l.split_once(' ').map(|(_, kv)| kv))
        .filter_map(|kv| kv.strip_prefix("size="))
        .next_back()
        .and_then(|n| n.parse().ok())
}

impl Drop for OpenedArchive {
    fn drop(&mut self) {
        if let Some(p) = &self.spool {
            unregister_cleanup(p);
        }
    }
}
