//! The tar stream under an archive sink.
//!
//! Into a file, entries are written in parallel: each entry's size is known
//! when it starts (descriptors say it), so its header and data get a region
//! of the file at once and its bytes go there with positional writes while
//! other entries stream into their own regions. Only the reservation is
//! serialised. Into a pipe (standard output), entries are written one after
//! another. Headers are deterministic (mode 0644, uid/gid 0, mtime 0).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// A tar block: headers and entry data come in whole blocks.
pub const BLOCK: u64 = 512;
const CHUNK: usize = 256 * 1024;

enum Mode {
    Positional {
        file: File,
        end: Mutex<u64>,
    },
    Stream {
        out: Mutex<Option<BufWriter<Box<dyn Write + Send>>>>,
    },
}

pub struct TarOut {
    mode: Mode,
    written: Mutex<HashSet<String>>,
    /// An entry failed after its space was taken: the archive cannot be
    /// completed, and no later entry may pretend otherwise.
    poisoned: std::sync::atomic::AtomicBool,
    /// What made the first entry fail: later entries report it too, so
    /// whichever failure is reported first names the cause.
    cause: Mutex<Option<(crate::error::ErrorClass, String)>>,
    label: String,
}

fn header(path: &str, size: u64) -> Result<[u8; 512]> {
    header_of(path, size, tar::EntryType::Regular, 0o644)
}

fn header_of(path: &str, size: u64, kind: tar::EntryType, mode: u32) -> Result<[u8; 512]> {
    let mut h = tar::Header::new_gnu();
    h.set_path(path)
        .map_err(|e| Error::Format(format!("cannot store {path:?} in a tar header: {e}")))?;
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(kind);
    h.set_cksum();
    Ok(*h.as_bytes())
}

/// Reserves the next `len` bytes of a file written at positions; returns
/// where they start.
fn reserve(end: &Mutex<u64>, len: u64) -> u64 {
    let mut end = end.lock().unwrap_or_else(|e| e.into_inner());
    let at = *end;
    *end = end.saturating_add(len);
    at
}

/// An entry's data padded to whole blocks.
pub fn padded(size: u64) -> u64 {
    // Sizes come from descriptors: never wrap around.
    size.div_ceil(BLOCK).saturating_mul(BLOCK)
}

impl TarOut {
    /// Writes into a file with parallel positional writes.
    pub fn file(file: File, label: String) -> TarOut {
        TarOut {
            mode: Mode::Positional {
                file,
                end: Mutex::new(0),
            },
            written: Mutex::new(HashSet::new()),
            poisoned: Default::default(),
            cause: Mutex::new(None),
            label,
        }
    }

    /// Writes sequentially into a stream.
    pub fn stream(out: Box<dyn Write + Send>, label: String) -> TarOut {
        TarOut {
            mode: Mode::Stream {
                out: Mutex::new(Some(BufWriter::with_capacity(CHUNK, out))),
            },
            written: Mutex::new(HashSet::new()),
            poisoned: Default::default(),
            cause: Mutex::new(None),
            label,
        }
    }

    pub fn contains(&self, path: &str) -> bool {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(path)
    }

    fn io(&self, path: &str, e: io::Error) -> Error {
        Error::io(format!("write {path} into {}", self.label), e)
    }

    /// Adds an entry of exactly `size` bytes read from `data`; `Ok(false)`
    /// if an entry with that path was already added. A reader that yields
    /// another number of bytes is an error.
    pub fn entry(&self, path: &str, size: u64, data: &mut dyn Read) -> Result<bool> {
        self.check_poisoned()?;
        if !self
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_string())
        {
            return Ok(false);
        }
        let result = self.write_entry(path, size, data);
        if let Err(e) = &result {
            self.cause
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(|| (e.class(), e.to_string()));
            self.poisoned
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        result.map(|()| true)
    }

    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned.load(std::sync::atomic::Ordering::SeqCst) {
            use crate::error::ErrorClass;
            if let Some((class, msg)) = self.cause.lock().unwrap_or_else(|e| e.into_inner()).clone()
            {
                let msg = format!("{msg} (so {} cannot be completed)", self.label);
                return Err(match class {
                    ErrorClass::Integrity => Error::Integrity(msg),
                    ErrorClass::NotFound => Error::NotFound(msg),
                    ErrorClass::Format => Error::Format(msg),
                    ErrorClass::Network => Error::Network(msg),
                    ErrorClass::Auth => Error::Auth(msg),
                    _ => Error::Io {
                        what: format!("write {}", self.label),
                        source: io::Error::other(msg),
                    },
                });
            }
            return Err(Error::Io {
                what: format!("write {}", self.label),
                source: io::Error::other(
                    "an earlier entry failed; the archive cannot be completed",
                ),
            });
        }
        Ok(())
    }

    fn write_entry(&self, path: &str, size: u64, data: &mut dyn Read) -> Result<()> {
        let head = header(path, size)?;
        match &self.mode {
            Mode::Positional { file, end } => {
                let offset = reserve(end, padded(size).saturating_add(BLOCK));
                file.write_all_at(&head, offset)
                    .map_err(|e| self.io(path, e))?;
                let mut pos = offset.saturating_add(BLOCK);
                let mut buf = vec![0u8; CHUNK.min(size.max(1) as usize)];
                let mut left = size;
                loop {
                    let n = data.read(&mut buf).map_err(|e| self.io(path, e))?;
                    if n == 0 {
                        break;
                    }
                    if n as u64 > left {
                        return Err(Error::Integrity(format!("{path}: more than {size} bytes")));
                    }
                    let chunk = buf.get(..n).ok_or_else(|| {
                        Error::Integrity(format!("{path}: the reader overran its buffer"))
                    })?;
                    file.write_all_at(chunk, pos)
                        .map_err(|e| self.io(path, e))?;
                    pos += n as u64;
                    left -= n as u64;
                }
                if left != 0 {
                    return Err(Error::Integrity(format!(
                        "{path}: {left} bytes short of {size}"
                    )));
                }
                // Padding is left as a hole: it reads as zeros.
            }
            Mode::Stream { out } => {
                let mut guard = out.lock().unwrap_or_else(|e| e.into_inner());
                let w = guard.as_mut().ok_or_else(|| {
                    Error::Usage(format!("{}: archive already finished", self.label))
                })?;
                w.write_all(&head).map_err(|e| self.io(path, e))?;
                let copied = io::copy(&mut data.take(size.saturating_add(1)), w)
                    .map_err(|e| self.io(path, e))?;
                if copied != size {
                    return Err(Error::Integrity(format!(
                        "{path}: {copied} bytes, expected {size}"
                    )));
                }
                // Read to the end so a verifying reader gives its verdict.
                let mut rest = [0u8; 1];
                if data.read(&mut rest).map_err(|e| self.io(path, e))? != 0 {
                    return Err(Error::Integrity(format!("{path}: more than {size} bytes")));
                }
                let pad = (padded(size) - size) as usize;
                #[allow(
                    clippy::indexing_slicing,
                    reason = "padding to a block boundary is less than a block"
                )]
                let zeros = &[0u8; BLOCK as usize][..pad];
                w.write_all(zeros).map_err(|e| self.io(path, e))?;
            }
        }
        Ok(())
    }

    /// Adds a directory entry (`blobs/`), which some layout readers need.
    pub fn dir(&self, path: &str) -> Result<()> {
        self.check_poisoned()?;
        if !self
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_string())
        {
            return Ok(());
        }
        let head = header_of(path, 0, tar::EntryType::Directory, 0o755)?;
        match &self.mode {
            Mode::Positional { file, end } => {
                let offset = reserve(end, BLOCK);
                file.write_all_at(&head, offset)
                    .map_err(|e| self.io(path, e))?;
            }
            Mode::Stream { out } => {
                let mut guard = out.lock().unwrap_or_else(|e| e.into_inner());
                let w = guard.as_mut().ok_or_else(|| {
                    Error::Usage(format!("{}: archive already finished", self.label))
                })?;
                w.write_all(&head).map_err(|e| self.io(path, e))?;
            }
        }
        Ok(())
    }

    pub fn entry_bytes(&self, path: &str, bytes: &[u8]) -> Result<bool> {
        self.entry(path, bytes.len() as u64, &mut &bytes[..])
    }

    /// Writes the end-of-archive blocks and flushes.
    pub fn finish(&self) -> Result<()> {
        self.check_poisoned()?;
        let eof = [0u8; 2 * BLOCK as usize];
        match &self.mode {
            Mode::Positional { file, end } => {
                let end = *end.lock().unwrap_or_else(|e| e.into_inner());
                file.write_all_at(&eof, end)
                    .map_err(|e| self.io("end of archive", e))?;
                file.set_len(end + eof.len() as u64)
                    .map_err(|e| self.io("end of archive", e))?;
            }
            Mode::Stream { out } => {
                let mut w = out
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or_else(|| {
                        Error::Usage(format!("{}: archive already finished", self.label))
                    })?;
                w.write_all(&eof)
                    .map_err(|e| self.io("end of archive", e))?;
                w.flush().map_err(|e| self.io("end of archive", e))?;
            }
        }
        Ok(())
    }
}
