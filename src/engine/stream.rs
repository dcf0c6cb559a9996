//! The byte pipeline of one blob: verify size and digest while reading,
//! check the DiffID of compressed layers on a second thread, and transcode
//! (decompress, recompress) when asked. Buffers are bounded: memory does not
//! depend on blob size.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

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
            let hasher = self.hasher.take().expect("checked above");
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
            let got = hasher.finish();
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
        hasher.update(&buf[..n]);
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
            self.hasher.update(&buf[..n]);
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
        self.hasher.update(&buf[..n]);
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
                    Ok(n) => h.update(&buf[..n]),
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
            && tx.send(buf[..n].to_vec()).is_err()
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

/// A compressing writer.
pub fn encoder<'a, W: Write + 'a>(
    w: W,
    c: Compression,
    level: Option<i32>,
) -> io::Result<Box<dyn FinishWrite + 'a>> {
    Ok(match c {
        Compression::None => Box::new(Plain(w)),
        Compression::Gzip => Box::new(ParallelGzip::new(w, level.unwrap_or(DEFAULT_GZIP_LEVEL))),
        // Reproducible output, threads only for large layers: see the module.
        #[cfg(target_os = "linux")]
        Compression::Zstd => super::zstd_contiguous::encoder(w, level.unwrap_or(3))?,
        #[cfg(not(target_os = "linux"))]
        Compression::Zstd => Box::new(zstd::stream::write::Encoder::new(w, level.unwrap_or(3))?),
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
            self.write_all(&buf[..n])?;
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

impl<W: Write> FinishWrite for zstd::stream::write::Encoder<'_, W> {
    fn finish_box(self: Box<Self>) -> io::Result<()> {
        let mut w = (*self).finish()?;
        w.flush()
    }
}

/// gzip level used when none is given (libdeflate's scale, 1-12): output
/// about as small as `gzip -6`, several times faster.
pub const DEFAULT_GZIP_LEVEL: i32 = 2;
const GZIP_CHUNK: usize = 1024 * 1024;

/// Compresses to gzip in independent 1 MiB members, several at once.
///
/// A gzip file may hold several members one after another (RFC 1952 §2.2);
/// every gzip reader used for layers (Go's `compress/gzip`, zlib, flate2's
/// multi-member decoder) reads them as one stream. Independent members let
/// one layer use every core, and each member is compressed whole by
/// libdeflate, which is much faster than streaming deflate at the same
/// ratio. Members are compressed by one process-wide pool of workers, one
/// per core, each keeping its compressors; a stream has at most two members
/// in flight, so memory stays bounded whatever the number of streams.
pub struct ParallelGzip<W: Write> {
    inner: W,
    level: i32,
    buf: Vec<u8>,
    in_flight: std::collections::VecDeque<Receiver<io::Result<Vec<u8>>>>,
}

type GzipJob = (Vec<u8>, i32, SyncSender<io::Result<Vec<u8>>>);

/// The process-wide gzip worker pool.
fn gzip_pool() -> &'static std::sync::Mutex<SyncSender<GzipJob>> {
    static POOL: std::sync::OnceLock<std::sync::Mutex<SyncSender<GzipJob>>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .max(1);
        let (tx, rx) = sync_channel::<GzipJob>(cores);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for _ in 0..cores {
            let rx = rx.clone();
            std::thread::spawn(move || {
                let mut compressors: std::collections::HashMap<i32, libdeflater::Compressor> =
                    Default::default();
                loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((chunk, level, reply)) = job else {
                        break;
                    };
                    let c = compressors.entry(level).or_insert_with(|| {
                        libdeflater::Compressor::new(
                            libdeflater::CompressionLvl::new(level).unwrap_or_default(),
                        )
                    });
                    let _ = reply.send(compress_member(c, &chunk));
                }
            });
        }
        std::sync::Mutex::new(tx)
    })
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(inner: W, level: i32) -> ParallelGzip<W> {
        ParallelGzip {
            inner,
            level: level.clamp(1, 12),
            buf: Vec::with_capacity(GZIP_CHUNK),
            in_flight: Default::default(),
        }
    }

    fn submit(&mut self) -> io::Result<()> {
        while self.in_flight.len() >= 2 {
            self.write_oldest()?;
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(GZIP_CHUNK));
        let (reply, result) = sync_channel(1);
        let pool = gzip_pool()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        pool.send((chunk, self.level, reply))
            .map_err(|_| io::Error::other("gzip workers stopped"))?;
        self.in_flight.push_back(result);
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(r) = self.in_flight.pop_front() {
            let out = r
                .recv()
                .map_err(|_| io::Error::other("gzip worker stopped"))??;
            self.inner.write_all(&out)?;
        }
        Ok(())
    }
}

fn compress_member(c: &mut libdeflater::Compressor, chunk: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; c.gzip_compress_bound(chunk.len())];
    let n = c
        .gzip_compress(chunk, &mut out)
        .map_err(|e| io::Error::other(format!("gzip compression failed: {e:?}")))?;
    out.truncate(n);
    Ok(out)
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = GZIP_CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == GZIP_CHUNK {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> FinishWrite for ParallelGzip<W> {
    fn finish_box(mut self: Box<Self>) -> io::Result<()> {
        // An empty layer still gets one (empty) member: a valid gzip file.
        if !self.buf.is_empty() || self.in_flight.is_empty() {
            self.submit()?;
        }
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        self.inner.flush()
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
