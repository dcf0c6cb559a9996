//! zstd compression of a stream laid out contiguously in virtual memory.
//!
//! zstd's streaming API copies its input into a ring buffer of one window
//! plus one block. Once the ring has wrapped, which is after the first
//! window of every layer, each block is matched across two separate
//! segments (zstd's "extDict" mode), a slower loop than matching over one
//! contiguous history: on layers of ordinary files at level 3 it costs about
//! 16 % more instructions (5.06 G against 4.23 G for 120 MiB) and gives
//! slightly larger output.
//!
//! [`ContiguousZstd`] gives zstd the whole frame as one contiguous input
//! instead. It reserves a range of address space as large as the frame (no
//! memory is committed for it), writes the stream into it in order, and
//! lets zstd read it in place (`ZSTD_c_stableInBuffer`). Memory stays bounded: a chunk that
//! has fallen more than a window (plus a block) behind the compressor can no
//! longer be referenced, and its pages are moved with `mremap` to just past
//! the write position, where they are reused: no copy, no page fault, no
//! zeroing (with Linux 5.7 and later; before, the pages are released and
//! fresh ones taken). Resident memory is about one window plus three
//! chunks, a few MiB more than zstd's own ring buffer.
//!
//! A stream longer than [`FIRST`] goes on in multi-threaded frames (see
//! [`ContiguousZstd`]); the reservation holds exactly the single-threaded
//! frame. A zstd stream of several frames decodes as the
//! concatenation of their contents (RFC 8878 §3.1), which every layer reader
//! handles.
//!
//! This is the one place in the crate with `unsafe` code: the zstd calls
//! (the safe bindings refuse stable input, which cannot be expressed with
//! borrowed slices) and the memory mapping. Linux only; elsewhere, or when
//! the reservation cannot be made, [`encoder`] falls back to zstd's
//! streaming encoder.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_void};
use std::io::{self, Read, Write};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use zstd_sys as z;

use super::stream::read_some;

/// Granularity of commitment and reuse.
const CHUNK: usize = 1 << 20;
/// Input handed to zstd per call.
const STEP: usize = 1 << 20;
/// Largest read into the reservation at once.
const READ: usize = 256 << 10;

/// A zstd encoder over contiguous input, or zstd's streaming encoder when
/// the address space cannot be reserved.
pub fn encoder<'a, W: Write + 'a>(
    w: W,
    level: i32,
) -> io::Result<Box<dyn super::stream::FinishWrite + 'a>> {
    match ContiguousZstd::new(w, level) {
        Ok(e) => Ok(Box::new(e)),
        Err((w, _)) => Ok(Box::new(zstd::stream::write::Encoder::new(w, level)?)),
    }
}

/// A range of address space, committed chunk by chunk.
struct Reservation {
    base: NonNull<u8>,
    len: usize,
    pages: Pages,
    /// A failed page move left the range in an unknown state.
    lost: bool,
}

/// What becomes of the pages of spare chunks.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Pages {
    /// Moved to the write position.
    Move,
    /// Released; the write position takes fresh ones.
    Release,
    /// Moved with a call the kernel refuses, to test the way back.
    #[cfg(test)]
    FailingMove,
}

impl Reservation {
    fn new(len: usize, pages: Pages) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping at an address of the kernel's
        // choosing; it touches no existing memory. PROT_NONE commits nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap"))?;
        Ok(Reservation {
            base,
            len,
            pages,
            lost: false,
        })
    }

    fn at(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset <= self.len);
        // SAFETY: within the reservation (or one past its end).
        unsafe { self.base.as_ptr().add(offset) }
    }

    /// Gives the pages of the spare chunk at `from` back to the system and
    /// makes it inaccessible again, as it was before it was committed.
    fn release(&self, from: usize) {
        // SAFETY: a whole chunk of the reservation that nobody reads or
        // writes any more (it is more than a window behind the compressor).
        unsafe {
            libc::madvise(self.at(from).cast::<c_void>(), CHUNK, libc::MADV_DONTNEED);
        }
        self.close(from);
    }

    /// Makes a vacated chunk inaccessible: the process's data size stays
    /// flat, and any read of it would fault rather than see zeros.
    fn close(&self, from: usize) {
        // SAFETY: a whole chunk of the reservation nobody uses any more.
        unsafe {
            libc::mprotect(self.at(from).cast::<c_void>(), CHUNK, libc::PROT_NONE);
        }
    }

    /// Makes the chunk at `offset` usable, with the pages of the spare chunk
    /// at `spare` when there is one. Returns whether pages were reused.
    ///
    /// The reservation never has a hole: another thread's mapping could be
    /// placed in one, and unmapping the reservation would then take it too.
    /// Pages are therefore moved with `MREMAP_DONTUNMAP` (Linux 5.7), which
    /// leaves the old range mapped; without it, the spare chunk's pages are
    /// released and the new chunk gets fresh ones.
    fn commit(&mut self, offset: usize, spare: Option<usize>) -> io::Result<bool> {
        if self.lost {
            return Err(io::Error::other("zstd buffer mapping lost"));
        }
        if let Some(from) = spare.filter(|_| self.pages != Pages::Release) {
            let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED | libc::MREMAP_DONTUNMAP;
            #[cfg(test)]
            let flags = if self.pages == Pages::FailingMove {
                // DONTUNMAP needs MAYMOVE: refused before anything is done.
                libc::MREMAP_FIXED | libc::MREMAP_DONTUNMAP
            } else {
                flags
            };
            // SAFETY: both ranges are whole chunks inside the reservation;
            // `from` is no longer read by anyone (it is more than a window
            // behind the compressor) and `offset` holds nothing yet. The
            // pages move to `offset`, replacing the reserved range there;
            // `from` stays mapped, empty.
            let p = unsafe {
                libc::mremap(
                    self.at(from).cast::<c_void>(),
                    CHUNK,
                    CHUNK,
                    flags,
                    self.at(offset).cast::<c_void>(),
                )
            };
            if p != libc::MAP_FAILED {
                self.close(from);
                return Ok(true);
            }
            let err = io::Error::last_os_error();
            self.pages = Pages::Release;
            self.release(from);
            if err.raw_os_error() != Some(libc::EINVAL) {
                // The kernel may have unmapped the target range before it
                // failed. Fill the hole if it is one; if something is
                // mapped there, it may be another thread's: leave it, and
                // never unmap the whole reservation.
                // SAFETY: MAP_FIXED_NOREPLACE maps only where nothing is.
                let q = unsafe {
                    libc::mmap(
                        self.at(offset).cast::<c_void>(),
                        CHUNK,
                        libc::PROT_NONE,
                        libc::MAP_PRIVATE
                            | libc::MAP_ANONYMOUS
                            | libc::MAP_NORESERVE
                            | libc::MAP_FIXED_NOREPLACE,
                        -1,
                        0,
                    )
                };
                if q == libc::MAP_FAILED || q != self.at(offset).cast::<c_void>() {
                    self.lost = true;
                    return Err(err);
                }
            }
            // EINVAL (no MREMAP_DONTUNMAP before Linux 5.7) is returned
            // before anything is changed: the target is still ours.
        } else if let Some(from) = spare {
            self.release(from);
        }
        // SAFETY: a whole chunk of the reservation that holds nothing.
        let r = unsafe {
            libc::mprotect(
                self.at(offset).cast::<c_void>(),
                CHUNK,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(false)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.lost {
            // Part of the range may belong to someone else now: leaving the
            // rest mapped costs address space, not memory.
            return;
        }
        // SAFETY: the mapping made in `new`: pages were only ever moved
        // within it, so it covers exactly this range and nothing else.
        unsafe {
            libc::munmap(self.base.as_ptr().cast::<c_void>(), self.len);
        }
    }
}

/// An owned `ZSTD_CCtx`.
struct Ctx(NonNull<z::ZSTD_CCtx>);

impl Ctx {
    fn check(code: usize) -> io::Result<usize> {
        // SAFETY: plain functions on an integer.
        if unsafe { z::ZSTD_isError(code) } != 0 {
            // SAFETY: zstd returns a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(z::ZSTD_getErrorName(code)) };
            return Err(io::Error::other(format!(
                "zstd: {}",
                name.to_string_lossy()
            )));
        }
        Ok(code)
    }

    fn set(&mut self, param: z::ZSTD_cParameter, value: i32) -> io::Result<()> {
        // SAFETY: a valid context owned by self.
        Self::check(unsafe { z::ZSTD_CCtx_setParameter(self.0.as_ptr(), param, value) })?;
        Ok(())
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: created by ZSTD_createCCtx and freed once.
        unsafe {
            z::ZSTD_freeCCtx(self.0.as_ptr());
        }
    }
}

/// Compression threads in use by the zstd streams of this process.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Input compressed on one thread, as one frame, before a stream goes on in
/// multi-threaded frames. Most layers end before it.
const FIRST: u64 = 64 << 20;
/// Input per multi-threaded frame: the worker count is chosen again at
/// each, so a large layer left alone at the end takes the idle cores.
const SEGMENT: u64 = 32 << 20;
/// zstd job size in multi-threaded frames (measured: 6 % more work than one
/// thread, output no larger, a few MiB per worker).
const JOB_SIZE: u32 = 2 << 20;
/// Most workers one multi-threaded frame takes.
const MAX_WORKERS: usize = 4;

/// Where frames start, and how many workers they may take.
#[derive(Clone, Copy)]
struct Policy {
    cores: usize,
    first: u64,
    segment: u64,
    /// Workers of every multi-threaded frame, instead of idle cores.
    workers: Option<usize>,
}

impl Policy {
    fn from_machine() -> Self {
        Policy {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            first: FIRST,
            segment: SEGMENT,
            workers: None,
        }
    }
}

/// Threads a stream counts in [`THREADS`].
struct Held(usize);

impl Held {
    fn set(&mut self, n: usize) {
        THREADS.fetch_add(n, Ordering::SeqCst);
        THREADS.fetch_sub(self.0, Ordering::SeqCst);
        self.0 = n;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        THREADS.fetch_sub(self.0, Ordering::SeqCst);
    }
}

/// Compresses everything written to it into the inner writer as zstd. See
/// the module documentation.
///
/// The first [`FIRST`] bytes are one single-threaded frame over contiguous
/// input. A larger stream goes on in frames of [`SEGMENT`] bytes, each
/// compressed by zstd's worker threads, as many as there are idle cores
/// (at least one): typically the last large layer of an image, left alone
/// after the others finished, then uses every core. Frame boundaries and
/// kinds depend on the input's length alone, and a multi-threaded frame's
/// bytes do not depend on its number of workers, so the same layer always
/// compresses to the same bytes, on any machine.
pub struct ContiguousZstd<W: Write> {
    state: State<W>,
    level: i32,
    policy: Policy,
    held: Held,
    /// Input taken so far.
    taken: u64,
    /// Input offset where the current frame ends.
    frame_end: u64,
    buf: Vec<u8>,
}

enum State<W: Write> {
    Single(W, Frame),
    Threaded(zstd::stream::write::Encoder<'static, W>),
    /// After an error between frames.
    Broken,
}

fn broken() -> io::Error {
    io::Error::other("zstd stream broken by an earlier error")
}

/// One single-threaded frame over a reservation.
struct Frame {
    ctx: Ctx,
    region: Reservation,
    /// Bytes written into the reservation.
    filled: usize,
    /// Bytes handed to zstd (it may hold back up to a block of them).
    given: usize,
    /// Chunks before this offset are committed (or were moved away).
    committed: usize,
    /// Chunks before this offset are free (moved away or spare).
    released: usize,
    /// Free chunks whose pages can be moved to the write position.
    spare: Vec<usize>,
    /// What zstd may still read behind the input handed to it.
    history: usize,
    /// Chunks committed with fresh pages (the others reused pages).
    fresh: usize,
    out: Vec<u8>,
}

impl Frame {
    fn new(level: i32, reserve: usize, pages: Pages) -> io::Result<Self> {
        // SAFETY: returns a new context or null.
        let ctx = NonNull::new(unsafe { z::ZSTD_createCCtx() })
            .ok_or_else(|| io::Error::other("zstd: cannot create a context"))?;
        let mut ctx = Ctx(ctx);
        // SAFETY: a pure function of its arguments.
        let params = unsafe { z::ZSTD_getCParams(level, z::ZSTD_CONTENTSIZE_UNKNOWN as u64, 0) };
        ctx.set(z::ZSTD_cParameter::ZSTD_c_compressionLevel, level)?;
        // The window is fixed explicitly so that what zstd may read back is
        // known here, whatever it would infer.
        ctx.set(
            z::ZSTD_cParameter::ZSTD_c_windowLog,
            params.windowLog as i32,
        )?;
        // ZSTD_c_stableInBuffer.
        ctx.set(z::ZSTD_cParameter::ZSTD_c_experimentalParam9, 1)?;
        let window = 1usize << params.windowLog;
        // zstd reads at most a window behind the end of the block it
        // compresses, and holds back less than a block of what it was given.
        let history = window + z::ZSTD_BLOCKSIZE_MAX as usize;
        if reserve < 4 * CHUNK || !reserve.is_multiple_of(CHUNK) || reserve < 2 * history {
            return Err(io::Error::other("zstd: single-threaded frame too short"));
        }
        Ok(Frame {
            ctx,
            region: Reservation::new(reserve, pages)?,
            filled: 0,
            given: 0,
            committed: 0,
            released: 0,
            spare: Vec::new(),
            history,
            fresh: 0,
            // SAFETY: a constant.
            out: vec![0; unsafe { z::ZSTD_CStreamOutSize() }],
        })
    }

    /// Makes room for up to `n` more bytes at the write position (at most
    /// [`READ`], and never past the end of the reservation, which is the
    /// end of the frame) and returns how many.
    fn room(&mut self, n: usize) -> io::Result<usize> {
        let n = n.min(READ).min(self.region.len - self.filled);
        while self.committed < self.filled + n {
            let spare = self.spare.pop();
            if !self.region.commit(self.committed, spare)? {
                self.fresh += 1;
            }
            self.committed += CHUNK;
        }
        Ok(n)
    }

    /// The writable bytes `room` just made.
    fn space(&mut self, n: usize) -> &mut [u8] {
        // SAFETY: `room` committed [filled, filled + n), which nothing else
        // touches; its bytes are initialised (zero or earlier stream
        // content), so a byte slice over them is valid while `self` is
        // borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.region.at(self.filled), n) }
    }

    /// Counts `n` bytes written at the write position; hands zstd every
    /// whole step gathered.
    fn wrote(&mut self, inner: &mut dyn Write, n: usize) -> io::Result<()> {
        self.filled += n;
        if self.filled / STEP * STEP > self.given {
            self.compress(inner, false)?;
        }
        Ok(())
    }

    /// Hands zstd the whole steps written so far (with `end`, everything,
    /// and finishes the frame) and writes out what it gives.
    ///
    /// zstd's output depends on how its input arrives: given a multiple of
    /// a block with `ZSTD_e_continue`, it compresses every block, and the
    /// frame then ends with an empty block instead of marking its last one.
    /// Input is therefore handed over in whole steps only, at the same
    /// offsets whatever the sizes of the writes, so that the same stream
    /// always compresses to the same bytes (and a layer to the same digest).
    fn compress(&mut self, inner: &mut dyn Write, end: bool) -> io::Result<()> {
        let size = if end {
            self.filled
        } else {
            self.filled / STEP * STEP
        };
        let directive = if end {
            z::ZSTD_EndDirective::ZSTD_e_end
        } else {
            z::ZSTD_EndDirective::ZSTD_e_continue
        };
        loop {
            let mut input = z::ZSTD_inBuffer {
                src: self.region.at(0).cast::<c_void>(),
                size,
                pos: self.given,
            };
            let mut output = z::ZSTD_outBuffer {
                dst: self.out.as_mut_ptr().cast::<c_void>(),
                size: self.out.len(),
                pos: 0,
            };
            // SAFETY: the context is ours; `input` covers written, committed
            // memory of the reservation, always from its start (the stable
            // buffer zstd was promised); `output` is our buffer.
            let left = Ctx::check(unsafe {
                z::ZSTD_compressStream2(self.ctx.0.as_ptr(), &mut output, &mut input, directive)
            })?;
            self.given = input.pos;
            inner.write_all(&self.out[..output.pos])?;
            let done = if end {
                left == 0
            } else {
                input.pos == input.size && output.pos < output.size
            };
            if done {
                break;
            }
        }
        // Chunks zstd can no longer read become spare.
        let safe = self.given.saturating_sub(self.history);
        while self.released + CHUNK <= safe {
            self.spare.push(self.released);
            self.released += CHUNK;
        }
        Ok(())
    }
}

impl<W: Write> ContiguousZstd<W> {
    /// On failure the writer is handed back.
    pub fn new(inner: W, level: i32) -> Result<Self, (W, io::Error)> {
        Self::with(inner, level, Pages::Move, Policy::from_machine())
    }

    /// The single-threaded frame's reservation is exactly `policy.first`
    /// bytes (a multiple of [`CHUNK`]): the frame ends where it is full.
    fn with(inner: W, level: i32, pages: Pages, policy: Policy) -> Result<Self, (W, io::Error)> {
        let reserve = usize::try_from(policy.first).unwrap_or(usize::MAX);
        match Frame::new(level, reserve, pages) {
            Ok(frame) => {
                let mut held = Held(0);
                held.set(1);
                Ok(ContiguousZstd {
                    state: State::Single(inner, frame),
                    level,
                    policy,
                    held,
                    taken: 0,
                    frame_end: policy.first,
                    buf: Vec::new(),
                })
            }
            Err(e) => Err((inner, e)),
        }
    }

    /// Ends the current frame and hands back the inner writer, flushed.
    fn end_frame(&mut self) -> io::Result<W> {
        let mut inner = match std::mem::replace(&mut self.state, State::Broken) {
            State::Single(mut inner, mut frame) => {
                frame.compress(&mut inner, true)?;
                inner
            }
            State::Threaded(enc) => enc.finish()?,
            State::Broken => return Err(broken()),
        };
        inner.flush()?;
        Ok(inner)
    }

    /// Ends the current frame and starts a multi-threaded one.
    fn next_frame(&mut self) -> io::Result<()> {
        let inner = self.end_frame()?;
        self.held.set(0);
        let workers = self.policy.workers.unwrap_or_else(|| {
            let busy = THREADS.load(Ordering::SeqCst);
            self.policy.cores.saturating_sub(busy).clamp(1, MAX_WORKERS)
        });
        self.held.set(workers);
        let mut enc = zstd::stream::write::Encoder::new(inner, self.level)?;
        enc.multithread(workers as u32)?;
        enc.set_parameter(zstd::zstd_safe::CParameter::JobSize(JOB_SIZE))?;
        self.state = State::Threaded(enc);
        self.frame_end = self.frame_end.saturating_add(self.policy.segment);
        Ok(())
    }

    /// How much of `n` the current frame takes; starts the next frame when
    /// the current one is full.
    fn frame_room(&mut self, n: usize) -> io::Result<usize> {
        if self.taken == self.frame_end {
            self.next_frame()?;
        }
        Ok((self.frame_end - self.taken).min(n as u64) as usize)
    }

    /// Ends the stream and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.end_frame()
    }

    /// Reads `r` to its end, straight into the reservation while on one
    /// thread.
    pub fn read_all_from(&mut self, r: &mut dyn Read) -> io::Result<u64> {
        let result = self.read_all(r);
        if result.is_err() {
            // zstd's context is undefined after an error, and the input
            // incomplete: nothing more may be done with this stream.
            self.state = State::Broken;
        }
        result
    }

    fn read_all(&mut self, r: &mut dyn Read) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            if self.taken == self.frame_end || !matches!(self.state, State::Single(..)) {
                // Through a buffer: a new frame starts only once there are
                // bytes for it, so the frames do not depend on read sizes.
                if self.buf.is_empty() {
                    self.buf = vec![0; READ];
                }
                let mut buf = std::mem::take(&mut self.buf);
                let got = read_some(r, &mut buf).and_then(|got| checked(got, buf.len()));
                let written = got
                    .as_ref()
                    .map_or(Ok(()), |&got| self.write_all_of(&buf[..got]));
                self.buf = buf;
                let got = got?;
                written?;
                if got == 0 {
                    return Ok(total);
                }
                total += got as u64;
                continue;
            }
            let cap = (self.frame_end - self.taken).min(READ as u64) as usize;
            let State::Single(inner, frame) = &mut self.state else {
                unreachable!("checked above");
            };
            let n = frame.room(cap)?;
            let got = checked(read_some(r, frame.space(n))?, n)?;
            if got == 0 {
                return Ok(total);
            }
            frame.wrote(inner, got)?;
            self.taken += got as u64;
            total += got as u64;
        }
    }

    fn write_all_of(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.write_some(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    fn write_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        let cap = self.frame_room(buf.len())?;
        let n = match &mut self.state {
            State::Single(inner, frame) => {
                let n = frame.room(cap)?;
                frame.space(n).copy_from_slice(&buf[..n]);
                frame.wrote(inner, n)?;
                n
            }
            State::Threaded(enc) => enc.write(&buf[..cap])?,
            State::Broken => return Err(broken()),
        };
        self.taken += n as u64;
        Ok(n)
    }
}

/// A read's count, refused when larger than the buffer it was given (a
/// broken reader must not move the write position past committed memory).
fn checked(got: usize, room: usize) -> io::Result<usize> {
    if got > room {
        return Err(io::Error::other(
            "a reader returned more bytes than it was given room for",
        ));
    }
    Ok(got)
}

impl<W: Write> Write for ContiguousZstd<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let result = self.write_some(buf);
        if result.is_err() {
            // zstd's context is undefined after an error.
            self.state = State::Broken;
        }
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        // Input is held until a full step (or the end): flushing a partial
        // block would make the output larger, and nothing downstream needs
        // a compressed prefix early.
        let result = match &mut self.state {
            State::Single(inner, _) => inner.flush(),
            State::Threaded(enc) => enc.get_mut().flush(),
            State::Broken => Err(broken()),
        };
        if result.is_err() {
            self.state = State::Broken;
        }
        result
    }
}

impl<W: Write> super::stream::FinishWrite for ContiguousZstd<W> {
    fn finish_box(self: Box<Self>) -> io::Result<()> {
        (*self).finish().map(drop)
    }

    fn copy_from(&mut self, r: &mut dyn Read) -> io::Result<u64> {
        self.read_all_from(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic data that compresses, with repeats further back than a
    /// window so that long references would be wrong if history were lost.
    fn sample(len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len);
        let mut x: u32 = 0x1234_5678;
        let words = ["layer ", "blob ", "digest ", "sha256 ", "tar ", "\n"];
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if x.is_multiple_of(7) {
                v.push((x >> 8) as u8);
            } else {
                v.extend_from_slice(words[(x % 6) as usize].as_bytes());
            }
        }
        v.truncate(len);
        v
    }

    /// A single-threaded frame of `first` bytes, then multi-threaded
    /// frames of `segment` bytes with one worker.
    fn frames_of(first: u64, segment: u64) -> Policy {
        Policy {
            cores: 1,
            first,
            segment,
            workers: Some(1),
        }
    }

    /// The machine's policy: one frame up to 64 MiB.
    fn compress(data: &[u8], by_read: bool) -> Vec<u8> {
        compress_policy(data, by_read, Pages::Move, Policy::from_machine())
    }

    fn compress_policy(data: &[u8], by_read: bool, pages: Pages, policy: Policy) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = ContiguousZstd::with(&mut out, 3, pages, policy)
            .map_err(|(_, e)| e)
            .unwrap();
        if by_read {
            assert_eq!(e.read_all_from(&mut &data[..]).unwrap(), data.len() as u64);
        } else {
            for c in data.chunks(8 * 1024 + 3) {
                e.write_all(c).unwrap();
            }
        }
        e.finish().unwrap();
        let back = zstd::stream::decode_all(&out[..]).unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "round trip differs");
        out
    }

    fn frames(mut z: &[u8]) -> usize {
        let mut n = 0;
        while !z.is_empty() {
            z = &z[zstd::zstd_safe::find_frame_compressed_size(z).unwrap()..];
            n += 1;
        }
        n
    }

    #[test]
    fn long_stream_round_trips_in_one_frame_no_larger_than_zstd_streaming() {
        let data = sample(24 << 20);
        let ours = compress(&data, true);
        assert_eq!(frames(&ours), 1);
        let theirs = zstd::stream::encode_all(&data[..], 3).unwrap();
        assert!(
            ours.len() <= theirs.len(),
            "{} > {}",
            ours.len(),
            theirs.len()
        );
    }

    #[test]
    fn memory_is_reused_not_grown() {
        let data = sample(24 << 20);
        let mut e = ContiguousZstd::new(io::sink(), 3)
            .map_err(|(_, e)| e)
            .unwrap();
        e.read_all_from(&mut &data[..]).unwrap();
        // A window (2 MiB at level 3) and a block behind, a step pending, a
        // read in progress, and chunk rounding: a few MiB, not 24.
        let State::Single(_, frame) = &e.state else {
            panic!("single-threaded")
        };
        let fresh = frame.fresh;
        assert!(fresh <= 7, "{fresh} chunks of fresh memory for 24 MiB");
        e.finish().unwrap();
    }

    #[test]
    fn same_input_same_output() {
        // Digests of recompressed layers must not change between runs:
        // whatever the sizes of the reads or writes, with the input a whole
        // number of steps or not, and across a frame boundary.
        for len in [6 << 20, (6 << 20) + 12345] {
            let data = sample(len);
            assert!(compress(&data, true) == compress(&data, false));
            let split = frames_of(5 << 20, 4 << 20);
            let by_read = compress_policy(&data, true, Pages::Move, split);
            assert!(by_read == compress_policy(&data, false, Pages::Move, split));
        }
    }

    #[test]
    fn threaded_frames_depend_on_the_input_alone() {
        // 6 MiB single-threaded, then frames of 4 MiB: 1 + 4 frames.
        let data = sample(21 << 20);
        let policy = |workers| Policy {
            workers: Some(workers),
            ..frames_of(6 << 20, 4 << 20)
        };
        let one = compress_policy(&data, true, Pages::Move, policy(1));
        assert_eq!(frames(&one), 5);
        let three = compress_policy(&data, false, Pages::Move, policy(3));
        assert!(
            one == three,
            "worker count or write sizes changed the output"
        );
        let single = compress(&data, true);
        assert!(one.len() as f64 <= single.len() as f64 * 1.01);
        // Idle cores, whatever they are, give the same bytes.
        let idle = Policy {
            cores: 64,
            workers: None,
            ..policy(1)
        };
        assert!(compress_policy(&data, true, Pages::Move, idle) == one);
    }

    #[test]
    fn streams_ending_exactly_at_a_frame_boundary() {
        let policy = frames_of(6 << 20, 4 << 20);
        for len in [6 << 20, 10 << 20] {
            let data = sample(len);
            let by_read = compress_policy(&data, true, Pages::Move, policy);
            let by_write = compress_policy(&data, false, Pages::Move, policy);
            assert!(by_read == by_write, "{len}: no empty frame at the end");
            assert_eq!(frames(&by_read), 1 + (len - (6 << 20)) / (4 << 20));
        }
    }

    /// Claims to have read more than it was given room for.
    struct Liar;

    impl Read for Liar {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            Ok(buf.len() + 1)
        }
    }

    /// Fails once it has taken `left` bytes.
    struct Failing {
        left: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if buf.len() > self.left {
                return Err(io::Error::other("disk full"));
            }
            self.left -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reader_claiming_too_much_is_refused() {
        let mut e = ContiguousZstd::new(io::sink(), 3)
            .map_err(|(_, e)| e)
            .unwrap();
        let err = e.read_all_from(&mut Liar).unwrap_err();
        assert!(err.to_string().contains("more bytes"), "{err}");
        assert!(e.write_all(b"more").is_err(), "the stream is broken now");
    }

    #[test]
    fn after_an_error_the_stream_refuses_everything() {
        let data = sample(4 << 20);
        let mut e = ContiguousZstd::new(Failing { left: 100_000 }, 3)
            .map_err(|(_, e)| e)
            .unwrap();
        let err = e.write_all(&data).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        let again = e.write(b"x").unwrap_err();
        assert!(again.to_string().contains("broken"), "{again}");
        assert!(e.finish().is_err());
    }

    #[test]
    fn empty_and_tiny_streams() {
        for len in [0, 1, 100, 200 << 10] {
            compress(&sample(len), len.is_multiple_of(2));
        }
    }

    #[test]
    fn parallel_streams_keep_to_their_own_memory() {
        // Reservations are made, have their pages moved, and are unmapped
        // (at the end of each single-threaded frame) while other threads
        // map and unmap memory of their own.
        let data = std::sync::Arc::new(sample(12 << 20));
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let data = data.clone();
                std::thread::spawn(move || {
                    for round in 0..3 {
                        let junk = vec![i as u8 + round; 3 << 20];
                        // Some streams release pages instead of moving them,
                        // as on kernels before 5.7, or find the kernel
                        // refusing the move and fall back.
                        let by_read = (i + round as usize).is_multiple_of(2);
                        let pages = [Pages::Move, Pages::Release, Pages::FailingMove][i % 3];
                        let out =
                            compress_policy(&data, by_read, pages, frames_of(5 << 20, 4 << 20));
                        assert_eq!(frames(&out), 3);
                        assert!(junk.iter().all(|&b| b == i as u8 + round));
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    }

    #[test]
    fn too_short_a_single_threaded_frame_is_refused() {
        let short = frames_of(CHUNK as u64, CHUNK as u64);
        assert!(ContiguousZstd::with(Vec::new(), 3, Pages::Move, short).is_err());
    }
}
