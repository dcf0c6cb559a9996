//! The byte pipeline of one blob: verify size and digest while reading,
//! check the DiffID of compressed layers on a second thread, and transcode
//! (decompress, recompress) when asked. Buffers are bounded: memory does not
//! depend on blob size.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::pieces::{PieceCodec, Pieces};
use super::zstd_frames::{DEFAULT_ZSTD_LEVEL, ParallelZstd};

use crate::content::media_type::Compression;
use crate::content::{Digest, DigestHasher};
use crate::engine::progress::Progress;
use crate::error::Error;

/// Verifies that a stream has exactly the expected size and digest. The
/// verdict is given on the read that reaches the end: an error there makes
/// every consumer (file, tar entry) discard what it wrote.
pub struct VerifyReader<'p, R> {
    inner: R,
    hasher: Option<DigestHasher>,
    expected: Digest,
    size: u64,
    read: u64,
    what: String,
    progress: &'p dyn Progress,
}

impl<'p, R: Read> VerifyReader<'p, R> {
    pub fn new(
        inner: R,
        expected: &Digest,
        size: u64,
        what: String,
        progress: &'p dyn Progress,
    ) -> Result<Self, Error> {
        Ok(VerifyReader {
            inner,
            hasher: Some(expected.hasher()?),
            expected: expected.clone(),
            size,
            read: 0,
            what,
            progress,
        })
    }
}

impl<R: Read> Read for VerifyReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(0);
        };
        let n = self.inner.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                mismatch(
                    &self.expected,
                    format!("{}: the blob is truncated", self.what),
                )
                .into_io()
            } else {
                e
            }
        })?;
        if n == 0 {
            // `hasher` is this one, taken to finish it.
            let Some(finished) = self.hasher.take() else {
                return Ok(0);
            };
            if self.read != self.size {
                return Err(mismatch(
                    &self.expected,
                    format!(
                        "{}: the blob has {} bytes but its descriptor says {}",
                        self.what, self.read, self.size
                    ),
                )
                .into_io());
            }
            let got = finished.finish();
            if got != self.expected {
                return Err(mismatch(
                    &self.expected,
                    format!("{}: content hashes to {got}", self.what),
                )
                .into_io());
            }
            return Ok(0);
        }
        self.read += n as u64;
        if self.read > self.size {
            self.hasher = None;
            return Err(mismatch(
                &self.expected,
                format!(
                    "{}: the blob is larger than the {} bytes its descriptor says",
                    self.what, self.size
                ),
            )
            .into_io());
        }
        hasher.update(filled(buf, n)?);
        self.progress.blob_bytes(&self.expected, n as u64);
        Ok(n)
    }
}

/// A decoder for a layer's compression.
pub fn decoder<'a, R: Read + 'a>(r: R, c: Compression) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(128 * 1024, r),
        )),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
    })
}

/// Hashes what passes through.
pub struct HashReader<R> {
    pub inner: R,
    pub hasher: DigestHasher,
    pub enabled: bool,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.enabled {
            self.hasher.update(filled(buf, n)?);
        }
        Ok(n)
    }
}

/// Hashes and counts what is written through it.
pub struct HashWriter<W> {
    pub inner: W,
    pub hasher: DigestHasher,
    pub written: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(
            buf.get(..n)
                .ok_or_else(|| io::Error::other("a writer took more bytes than it was given"))?,
        );
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Passes bytes through unchanged while a second thread decompresses a copy
/// and checks it against the expected DiffID. The verdict is given on the
/// read that reaches the end.
pub struct DiffIdTee<R> {
    inner: R,
    tx: Option<SyncSender<Vec<u8>>>,
    worker: Option<JoinHandle<io::Result<Digest>>>,
    /// The compressed blob's digest (what a failure is about).
    blob: Digest,
    expected: Digest,
    what: String,
}

struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        #[allow(
            clippy::indexing_slicing,
            reason = "`n` fits both `out` and what is left of `buf` after `pos`"
        )]
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl<R: Read> DiffIdTee<R> {
    /// `blob` is the compressed layer's digest, `expected` its DiffID.
    pub fn new(
        inner: R,
        compression: Compression,
        blob: Digest,
        expected: Digest,
        what: String,
    ) -> DiffIdTee<R> {
        let (tx, rx) = sync_channel::<Vec<u8>>(16);
        let worker = std::thread::spawn(move || -> io::Result<Digest> {
            let channel = ChannelReader {
                rx,
                buf: Vec::new(),
                pos: 0,
            };
            let mut dec = decoder(channel, compression)?;
            let mut h = DigestHasher::sha256();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match dec.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => h.update(filled(&buf, n)?),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(h.finish())
        });
        DiffIdTee {
            inner,
            tx: Some(tx),
            worker: Some(worker),
            blob,
            expected,
            what,
        }
    }

    fn verdict(&mut self) -> io::Result<()> {
        self.tx = None;
        let Some(worker) = self.worker.take() else {
            return Ok(());
        };
        match worker.join() {
            Ok(Ok(got)) if got == self.expected => Ok(()),
            Ok(Ok(got)) => Err(Error::Blob {
                digest: self.blob.clone(),
                message: format!(
                    "{}: uncompressed content hashes to {got}, but the config's DiffID is {}",
                    self.what, self.expected
                ),
            }
            .into_io()),
            Ok(Err(e)) => Err(Error::Blob {
                digest: self.blob.clone(),
                message: format!("{}: cannot decompress layer: {e}", self.what),
            }
            .into_io()),
            Err(_) => Err(io::Error::other("DiffID worker panicked")),
        }
    }
}

impl<R: Read> Read for DiffIdTee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.verdict()?;
            return Ok(0);
        }
        if let Some(tx) = &self.tx
            && tx.send(filled(buf, n)?.to_vec()).is_err()
        {
            // The decoder stopped early (corrupt data): report it now.
            self.verdict()?;
        }
        Ok(n)
    }
}

impl<R> Drop for DiffIdTee<R> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// A blob that does not match its descriptor.
fn mismatch(digest: &Digest, message: String) -> Error {
    Error::Blob {
        digest: digest.clone(),
        message,
    }
}

/// A compressing writer. gzip and zstd output depends on the input bytes
/// and the level alone (see [`super::pieces`]), so a layer always
/// recompresses to the same digest.
pub fn encoder<'a, W: Write + 'a>(
    w: W,
    c: Compression,
    level: Option<i32>,
) -> io::Result<Box<dyn FinishWrite + 'a>> {
    Ok(match c {
        Compression::None => Box::new(Plain(w)),
        Compression::Gzip => Box::new(ParallelGzip::new(w, level.unwrap_or(DEFAULT_GZIP_LEVEL))),
        Compression::Zstd => Box::new(ParallelZstd::new(w, level.unwrap_or(DEFAULT_ZSTD_LEVEL))),
    })
}

/// A writer that must be finished (compressors write trailers).
pub trait FinishWrite: Write {
    fn finish_box(self: Box<Self>) -> io::Result<()>;

    /// Writes everything `r` holds, in reads of a few hundred KiB.
    fn copy_from(&mut self, r: &mut dyn Read) -> io::Result<u64> {
        let mut buf = vec![0u8; COPY_BUF];
        let mut total = 0u64;
        loop {
            let n = read_some(r, &mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            self.write_all(filled(&buf, n)?)?;
            total += n as u64;
        }
    }
}

/// One read, retried when interrupted.
pub(super) fn read_some(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The bytes one read put into `buf`: a reader claiming more than the room
/// it was given is broken, which is an error rather than a panic.
pub(super) fn filled(buf: &[u8], n: usize) -> io::Result<&[u8]> {
    buf.get(..n)
        .ok_or_else(|| io::Error::other("a reader returned more bytes than it was given room for"))
}

/// Read size when feeding a compressor.
const COPY_BUF: usize = 256 * 1024;

struct Plain<W>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> FinishWrite for Plain<W> {
    fn finish_box(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

/// gzip level used when none is given (libdeflate's scale, 1-12): output
/// about as small as `gzip -6`, several times faster.
pub const DEFAULT_GZIP_LEVEL: i32 = 2;
const GZIP_CHUNK: usize = 1024 * 1024;

/// gzip at one level, one member per 1 MiB piece.
///
/// Every gzip reader used for layers (Go's `compress/gzip`, zlib, flate2's
/// multi-member decoder) reads consecutive members as one stream. Each
/// member is compressed whole by libdeflate, which is much faster than
/// streaming deflate at the same ratio.
#[derive(Clone, Copy, Debug)]
pub struct Gzip {
    /// libdeflate's scale, 1-12.
    level: i32,
}

/// A gzip encoder writing members of 1 MiB input bytes.
pub type ParallelGzip<W> = Pieces<W, Gzip>;

impl<W: Write> Pieces<W, Gzip> {
    pub fn new(inner: W, level: i32) -> Self {
        Pieces::with_codec(
            inner,
            Gzip {
                level: level.clamp(1, 12),
            },
        )
    }
}

impl PieceCodec for Gzip {
    const PIECE: usize = GZIP_CHUNK;

    fn compress(self, piece: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        thread_local! {
            /// This thread's compressor for each level used.
            static COMPRESSORS: RefCell<Vec<(i32, libdeflater::Compressor)>> =
                const { RefCell::new(Vec::new()) };
        }
        COMPRESSORS.with(|cell| {
            let mut compressors = cell.borrow_mut();
            let at = match compressors.iter().position(|(l, _)| *l == self.level) {
                Some(at) => at,
                None => {
                    let level = libdeflater::CompressionLvl::new(self.level).unwrap_or_default();
                    compressors.push((self.level, libdeflater::Compressor::new(level)));
                    compressors.len() - 1
                }
            };
            #[allow(
                clippy::indexing_slicing,
                reason = "`at` is the entry just found or just pushed"
            )]
            let c = &mut compressors[at].1;
            out.resize(c.gzip_compress_bound(piece.len()), 0);
            let n = c
                .gzip_compress(piece, out)
                .map_err(|e| io::Error::other(format!("gzip compression failed: {e:?}")))?;
            out.truncate(n);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_gzip_round_trips_through_a_multi_member_reader() {
        let data: Vec<u8> = (0..3 * GZIP_CHUNK + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        for input in [&data[..], &[][..], &data[..GZIP_CHUNK]] {
            let mut out = Vec::new();
            let mut enc: Box<dyn FinishWrite> = Box::new(ParallelGzip::new(&mut out, 6));
            // Uneven writes cross chunk boundaries.
            for piece in input.chunks(70_001) {
                enc.write_all(piece).unwrap();
            }
            enc.finish_box().unwrap();
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, input);
        }
    }
}
