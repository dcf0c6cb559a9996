//! Compression in fixed-size pieces, several at once.
//!
//! A stream is cut into pieces of a size fixed by the codec, at fixed input
//! offsets; each piece is compressed whole, independently, into one member
//! (gzip) or frame (zstd) by a process-wide pool of workers, and the results
//! are written in input order. Both formats define a stream of several
//! members or frames as the concatenation of their contents (RFC 1952 §2.2,
//! RFC 8878 §3.1), which every layer reader handles.
//!
//! This shape gives three things at once: one layer uses every core; each
//! piece is compressed from one contiguous slice, the fastest path of both
//! libraries; and the output depends on the input bytes alone, never on the
//! sizes of the reads or writes that fed it, the number of cores or which
//! worker took which piece, so a layer always gets the same digest.
//!
//! Memory is bounded per stream: the piece being filled plus at most
//! [`in_flight_limit`] pieces being compressed, whose input buffers are
//! reused once their output is written.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};

use super::stream::{FinishWrite, read_some};

/// A codec that compresses one whole piece on its own.
pub trait PieceCodec: Copy + Send + 'static {
    /// Input bytes per piece (the last piece may be shorter).
    const PIECE: usize;
    /// Compresses `piece` into `out` (empty, with no capacity reserved) as
    /// one self-contained member or frame. Called on pool workers, which may
    /// keep per-thread compressor state between calls.
    fn compress(self, piece: &[u8], out: &mut Vec<u8>) -> io::Result<()>;
}

type Task = Box<dyn FnOnce() + Send>;

/// Workers of the process-wide compression pool: one per core.
fn pool_size() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pieces one stream may have being compressed at once: enough to keep two
/// cores busy, a few more on larger machines while memory stays bounded.
fn in_flight_limit() -> usize {
    pool_size().clamp(2, 4)
}

/// The process-wide pool that compresses pieces of every stream. One queue,
/// no larger than the pool, so a stream that submits faster than the
/// workers compress waits instead of piling up memory.
fn pool() -> &'static Mutex<SyncSender<Task>> {
    static POOL: OnceLock<Mutex<SyncSender<Task>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let workers = pool_size();
        let (tx, rx) = sync_channel::<Task>(workers);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..workers {
            let rx = rx.clone();
            std::thread::spawn(move || {
                loop {
                    let task = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(task) = task else {
                        break;
                    };
                    // A panicking task drops its reply channel, which its
                    // stream reports as an error; the worker stays.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
                }
            });
        }
        Mutex::new(tx)
    })
}

/// A compressed piece, with its input buffer handed back for reuse.
struct Compressed {
    input: Vec<u8>,
    output: Vec<u8>,
}

/// Compresses everything written to it in pieces; see the module.
pub struct Pieces<W: Write, C: PieceCodec> {
    inner: W,
    codec: C,
    /// The piece being filled: always `C::PIECE` bytes long, of which
    /// `filled` are input.
    piece: Vec<u8>,
    filled: usize,
    /// Input buffers of written pieces, for the next ones.
    spare: Vec<Vec<u8>>,
    in_flight: VecDeque<Receiver<io::Result<Compressed>>>,
    /// Pieces submitted so far.
    submitted: u64,
    /// An error happened: what was written is incomplete for good.
    broken: bool,
}

fn broken() -> io::Error {
    io::Error::other("compressed stream broken by an earlier error")
}

impl<W: Write, C: PieceCodec> Pieces<W, C> {
    pub fn with_codec(inner: W, codec: C) -> Self {
        Pieces {
            inner,
            codec,
            // Pages are only touched as the piece fills: a small layer costs
            // what it holds, not a whole piece.
            piece: vec![0; C::PIECE],
            filled: 0,
            spare: Vec::new(),
            in_flight: VecDeque::new(),
            submitted: 0,
            broken: false,
        }
    }

    /// Runs `step`; any error breaks the stream for good, since the pieces
    /// written so far no longer match the input taken.
    fn guarded<T>(&mut self, step: impl FnOnce(&mut Self) -> io::Result<T>) -> io::Result<T> {
        if self.broken {
            return Err(broken());
        }
        let result = step(self);
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// Hands the filled piece to the pool.
    fn submit(&mut self) -> io::Result<()> {
        while self.in_flight.len() >= in_flight_limit() {
            self.write_oldest()?;
        }
        let next = self.spare.pop().unwrap_or_else(|| vec![0; C::PIECE]);
        let input = std::mem::replace(&mut self.piece, next);
        let len = std::mem::take(&mut self.filled);
        let codec = self.codec;
        let (reply, result) = sync_channel(1);
        let task: Task = Box::new(move || {
            let mut output = Vec::new();
            let done = codec
                .compress(&input[..len], &mut output)
                .map(|()| Compressed { input, output });
            let _ = reply.send(done);
        });
        let pool = pool().lock().unwrap_or_else(|e| e.into_inner()).clone();
        pool.send(task)
            .map_err(|_| io::Error::other("compression workers stopped"))?;
        self.in_flight.push_back(result);
        self.submitted += 1;
        Ok(())
    }

    /// Waits for the oldest piece in flight and writes it out.
    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(result) = self.in_flight.pop_front() {
            let done = result
                .recv()
                .map_err(|_| io::Error::other("a compression worker failed"))??;
            self.inner.write_all(&done.output)?;
            self.spare.push(done.input);
        }
        Ok(())
    }

    /// Takes as much of `data` as the current piece holds.
    fn take(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (C::PIECE - self.filled).min(data.len());
        self.piece[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        if self.filled == C::PIECE {
            self.submit()?;
        }
        Ok(n)
    }

    /// Reads `r` to its end straight into the pieces.
    fn read_all(&mut self, r: &mut dyn Read) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            let room = C::PIECE - self.filled;
            let got = read_some(r, &mut self.piece[self.filled..])?;
            if got > room {
                // A broken reader must not move the fill mark past the piece.
                return Err(io::Error::other(
                    "a reader returned more bytes than it was given room for",
                ));
            }
            if got == 0 {
                return Ok(total);
            }
            self.filled += got;
            total += got as u64;
            if self.filled == C::PIECE {
                self.submit()?;
            }
        }
    }

    /// Compresses what is left, writes every piece and returns the inner
    /// writer, flushed. An empty stream still gets one (empty) piece: a
    /// valid gzip or zstd file.
    pub fn finish(mut self) -> io::Result<W> {
        self.guarded(|s| {
            if s.filled > 0 || s.submitted == 0 {
                s.submit()?;
            }
            while !s.in_flight.is_empty() {
                s.write_oldest()?;
            }
            s.inner.flush()
        })?;
        Ok(self.inner)
    }
}

impl<W: Write, C: PieceCodec> Write for Pieces<W, C> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        self.guarded(|s| s.take(data))
    }

    /// Flushes the inner writer only: a partial piece stays until it is full
    /// or the stream ends, since cutting it early would change the output.
    fn flush(&mut self) -> io::Result<()> {
        self.guarded(|s| s.inner.flush())
    }
}

impl<W: Write, C: PieceCodec> FinishWrite for Pieces<W, C> {
    fn finish_box(self: Box<Self>) -> io::Result<()> {
        (*self).finish().map(drop)
    }

    fn copy_from(&mut self, r: &mut dyn Read) -> io::Result<u64> {
        self.guarded(|s| s.read_all(r))
    }
}
