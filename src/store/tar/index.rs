//! A tar archive indexed once (entry name → offset and size) and read in
//! place at those offsets, so any number of blobs can stream from it at once
//! without extracting anything.
//!
//! Entry names are normalised (`./` prefixes and `.` components dropped).
//! Names that are absolute or contain `..` make the whole archive invalid.
//! Symbolic and hard links are resolved inside the archive only: a link that
//! leaves the archive or loops is an error naming the entry.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
enum Kind {
    File { offset: u64, size: u64 },
    Symlink(String),
    Hardlink(String),
    Dir,
    Other,
}

pub struct TarIndex {
    file: Arc<File>,
    entries: HashMap<String, Kind>,
    /// Names in archive order, without duplicates.
    names: Vec<String>,
    what: String,
}

impl TarIndex {
    /// Indexes a seekable tar. `what` names the archive in messages.
    pub fn new(file: File, what: &str) -> Result<TarIndex> {
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("read {what}"), e))?
            .len();
        if len == 0 {
            return Err(Error::Format(format!(
                "{what} is not a tar archive (it is empty)"
            )));
        }
        let mut archive = tar::Archive::new(&file);
        let mut entries = HashMap::new();
        let mut names = Vec::new();
        let iter = archive.entries_with_seek().map_err(|e| not_tar(what, &e))?;
        for entry in iter {
            let entry = entry.map_err(|e| not_tar(what, &e))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(name) = normalize(&raw)
                .map_err(|why| Error::Format(format!("{what}: archive entry {raw:?} {why}")))?
            else {
                continue;
            };
            let header = entry.header();
            let link = || -> Result<String> {
                let l = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::Format(format!("{what}: link {raw:?} has no target")))?;
                Ok(String::from_utf8_lossy(&l).into_owned())
            };
            let kind = match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let offset = entry.raw_file_position();
                    let size = entry.size();
                    if offset.saturating_add(size) > len {
                        return Err(Error::Format(format!(
                            "{what} is truncated: entry {name:?} ends past the end of the file"
                        )));
                    }
                    Kind::File { offset, size }
                }
                tar::EntryType::Symlink => Kind::Symlink(link()?),
                tar::EntryType::Link => Kind::Hardlink(link()?),
                tar::EntryType::Directory => Kind::Dir,
                _ => Kind::Other,
            };
            if entries.insert(name.clone(), kind).is_none() {
                names.push(name);
            }
        }
        if entries.is_empty() {
            return Err(Error::Format(format!(
                "{what} is not a tar archive (no entries)"
            )));
        }
        Ok(TarIndex {
            file: Arc::new(file),
            entries,
            names,
            what: what.to_string(),
        })
    }

    pub fn describe(&self) -> &str {
        &self.what
    }

    /// Entry names in archive order (regular files, links and directories).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Resolves `name` through links to a regular file: `(offset, size)`.
    /// `Ok(None)` if there is no such entry.
    pub fn resolve(&self, name: &str) -> Result<Option<(u64, u64)>> {
        let mut current = match normalize(name) {
            Ok(Some(n)) => n,
            _ => return Ok(None),
        };
        for _ in 0..32 {
            let Some(kind) = self.entries.get(&current) else {
                return Ok(None);
            };
            current = match kind {
                Kind::File { offset, size } => return Ok(Some((*offset, *size))),
                Kind::Symlink(target) => {
                    let joined = if target.starts_with('/') {
                        return Err(self.escapes(&current, target));
                    } else {
                        match current.rsplit_once('/') {
                            Some((dir, _)) => format!("{dir}/{target}"),
                            None => target.clone(),
                        }
                    };
                    match normalize_relative(&joined) {
                        Some(n) => n,
                        None => return Err(self.escapes(&current, target)),
                    }
                }
                Kind::Hardlink(target) => match normalize_relative(target) {
                    Some(n) => n,
                    None => return Err(self.escapes(&current, target)),
                },
                Kind::Dir | Kind::Other => {
                    return Err(Error::Format(format!(
                        "{}: archive entry {current:?} is not a regular file",
                        self.what
                    )));
                }
            };
        }
        Err(Error::Format(format!(
            "{}: link loop at archive entry {name:?}",
            self.what
        )))
    }

    fn escapes(&self, entry: &str, target: &str) -> Error {
        Error::Format(format!(
            "{}: link {entry:?} -> {target:?} points outside the archive",
            self.what
        ))
    }

    /// Does a regular file (possibly through links) exist at `name`?
    pub fn contains(&self, name: &str) -> Result<bool> {
        Ok(self.resolve(name)?.is_some())
    }

    /// Opens an entry for reading; `Ok(None)` if it does not exist.
    pub fn open(&self, name: &str) -> Result<Option<(EntryReader, u64)>> {
        Ok(self.resolve(name)?.map(|(offset, size)| {
            (
                EntryReader {
                    file: self.file.clone(),
                    pos: offset,
                    end: offset.saturating_add(size),
                },
                size,
            )
        }))
    }

    /// Reads a whole small entry, refusing entries larger than `cap`.
    pub fn read_small(&self, name: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let Some((mut r, size)) = self.open(name)? else {
            return Ok(None);
        };
        if size > cap {
            return Err(Error::Format(format!(
                "{}: {name} is {size} bytes, over the {cap}-byte limit",
                self.what
            )));
        }
        let mut buf = Vec::with_capacity(size as usize);
        r.read_to_end(&mut buf)
            .map_err(|e| Error::io(format!("read {name} in {}", self.what), e))?;
        Ok(Some(buf))
    }
}

fn not_tar(what: &str, e: &io::Error) -> Error {
    Error::Format(format!(
        "{what} is not a valid tar archive or is truncated: {e}"
    ))
}

/// Normalises an entry name: `Ok(None)` for the root itself, an error for
/// absolute names and names with `..`.
fn normalize(raw: &str) -> std::result::Result<Option<String>, &'static str> {
    if raw.starts_with('/') {
        return Err("has an absolute path");
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("has a '..' path component"),
            c => parts.push(c),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// Normalises a link target relative to the archive root, resolving `..`;
/// `None` if it climbs above the root.
fn normalize_relative(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// Reads one entry's bytes at its offset (positional reads: many readers can
/// share the file).
pub struct EntryReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for EntryReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(left as usize);
        #[allow(clippy::indexing_slicing, reason = "want is at most buf.len()")]
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive ended inside an entry",
            ));
        }
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize("./a//b/./c").unwrap().as_deref(), Some("a/b/c"));
        assert_eq!(normalize("./").unwrap(), None);
        assert!(normalize("/etc/passwd").is_err());
        assert!(normalize("a/../../x").is_err());
        assert_eq!(normalize_relative("a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(normalize_relative("a/../../c"), None);
    }
}
