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
//! Memory is bounded for the whole process, not per stream: every piece
//! (its input and its output buffer) is a [`Slot`] taken from one budget
//! per piece size, one piece more than there are workers, and handed
//! back, buffers kept, when its output is written. Many layers compressed
//! at once share the budget instead of each holding pieces of its own; a
//! stream that finds the budget spent writes out its own oldest piece, and
//! waits only when it holds none (every other slot is then held by a
//! stream that gives it back without waiting on this one).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use super::stream::{FinishWrite, read_some};

/// A codec that compresses one whole piece on its own.
pub trait PieceCodec: Copy + Send + 'static {
    /// Input bytes per piece (the last piece may be shorter).
    const PIECE: usize;
    /// Compresses `piece` into `out` (empty, perhaps with capacity left by
    /// an earlier piece) as
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
/// cores busy, a few more on larger machines.
fn in_flight_limit() -> usize {
    pool_size().clamp(2, 4)
}

/// Slots of one piece size in the whole process: a piece for each worker
/// to compress and one being filled, counted in 8 MiB (smaller pieces get
/// proportionally more slots, the same bytes).
fn slot_limit(piece: usize) -> usize {
    (pool_size() + 1) * ((8 << 20) / piece.max(1)).max(1)
}

/// The input and output buffers of one piece.
pub struct Slot {
    input: Vec<u8>,
    output: Vec<u8>,
    budget: Arc<Budget>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let input = std::mem::take(&mut self.input);
        let output = std::mem::take(&mut self.output);
        self.budget.give(input, output);
    }
}

/// The slots of one piece size: the buffers not in use, and how many exist.
pub struct Budget {
    piece: usize,
    limit: usize,
    state: Mutex<BudgetState>,
    freed: Condvar,
}

struct BudgetState {
    free: Vec<(Vec<u8>, Vec<u8>)>,
    made: usize,
}

impl Budget {
    fn new(piece: usize, limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            piece,
            limit,
            state: Mutex::new(BudgetState {
                free: Vec::new(),
                made: 0,
            }),
            freed: Condvar::new(),
        })
    }

    /// The process-wide budget for pieces of `piece` bytes.
    pub(super) fn for_piece(piece: usize) -> Arc<Budget> {
        static BUDGETS: OnceLock<Mutex<Vec<Arc<Budget>>>> = OnceLock::new();
        let mut all = BUDGETS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(b) = all.iter().find(|b| b.piece == piece) {
            return b.clone();
        }
        let b = Budget::new(piece, slot_limit(piece));
        all.push(b.clone());
        b
    }

    /// Slots made so far (in use or free).
    #[cfg(test)]
    pub(super) fn made(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).made
    }

    /// The most slots there may be.
    #[cfg(test)]
    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// A slot, if one is free or may still be made.
    fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.take_locked(&mut state)
    }

    /// A slot, waiting for one to be given back when none is left.
    fn take(self: &Arc<Self>) -> Slot {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(slot) = self.take_locked(&mut state) {
                return slot;
            }
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn take_locked(self: &Arc<Self>, state: &mut BudgetState) -> Option<Slot> {
        let (input, output) = match state.free.pop() {
            Some(buffers) => buffers,
            None if state.made < self.limit => {
                state.made += 1;
                // Pages are only touched as a piece fills: a small layer
                // costs what it holds, not a whole piece.
                (vec![0; self.piece], Vec::new())
            }
            None => return None,
        };
        Some(Slot {
            input,
            output,
            budget: self.clone(),
        })
    }

    fn give(&self, input: Vec<u8>, mut output: Vec<u8>) {
        output.clear();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if input.len() == self.piece {
            state.free.push((input, output));
        } else {
            // A buffer that did not come back whole is not reused.
            state.made -= 1;
        }
        drop(state);
        self.freed.notify_one();
    }
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

/// Compresses everything written to it in pieces; see the module.
pub struct Pieces<W: Write, C: PieceCodec> {
    inner: W,
    codec: C,
    budget: Arc<Budget>,
    /// The piece being filled (taken when the first byte comes), of which
    /// `filled` bytes are input.
    piece: Option<Slot>,
    filled: usize,
    in_flight: VecDeque<Receiver<io::Result<Slot>>>,
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
            budget: Budget::for_piece(C::PIECE),
            piece: None,
            filled: 0,
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

    /// The piece being filled, taking a slot for it first if needed: one
    /// from the budget, else this stream's own oldest piece once written,
    /// else the next slot any stream gives back.
    fn piece(&mut self) -> io::Result<&mut Vec<u8>> {
        let slot = match self.piece.take() {
            Some(slot) => slot,
            None => self.new_slot()?,
        };
        Ok(&mut self.piece.insert(slot).input)
    }

    /// A slot for the next piece: from the budget, else this stream's own
    /// oldest piece once written, else the next slot any stream gives back.
    fn new_slot(&mut self) -> io::Result<Slot> {
        loop {
            if let Some(slot) = self.budget.try_take() {
                return Ok(slot);
            }
            match self.in_flight.is_empty() {
                false => self.write_oldest()?,
                true => return Ok(self.budget.take()),
            }
        }
    }

    /// Hands the filled piece to the pool.
    fn submit(&mut self) -> io::Result<()> {
        while self.in_flight.len() >= in_flight_limit() {
            self.write_oldest()?;
        }
        let mut slot = match self.piece.take() {
            Some(slot) => slot,
            None => self.new_slot()?,
        };
        let len = std::mem::take(&mut self.filled);
        let codec = self.codec;
        let (reply, result) = sync_channel(1);
        let task: Task = Box::new(move || {
            let mut output = std::mem::take(&mut slot.output);
            #[allow(
                clippy::indexing_slicing,
                reason = "the fill mark never passes the piece size, every input's length"
            )]
            let done = codec.compress(&slot.input[..len], &mut output).map(|()| {
                slot.output = output;
                slot
            });
            let _ = reply.send(done);
        });
        let pool = pool().lock().unwrap_or_else(|e| e.into_inner()).clone();
        pool.send(task)
            .map_err(|_| io::Error::other("compression workers stopped"))?;
        self.in_flight.push_back(result);
        self.submitted += 1;
        Ok(())
    }

    /// Waits for the oldest piece in flight and writes it out; its slot goes
    /// back to the budget.
    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(result) = self.in_flight.pop_front() {
            let done = result
                .recv()
                .map_err(|_| io::Error::other("a compression worker failed"))??;
            self.inner.write_all(&done.output)?;
        }
        Ok(())
    }

    /// Takes as much of `data` as the current piece holds.
    fn take(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (C::PIECE - self.filled).min(data.len());
        let filled = self.filled;
        #[allow(
            clippy::indexing_slicing,
            reason = "`n` fits `data` and the room left in the piece"
        )]
        self.piece()?[filled..filled + n].copy_from_slice(&data[..n]);
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
            let filled = self.filled;
            #[allow(
                clippy::indexing_slicing,
                reason = "the fill mark never passes the piece size, every input's length"
            )]
            let got = read_some(r, &mut self.piece()?[filled..])?;
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
