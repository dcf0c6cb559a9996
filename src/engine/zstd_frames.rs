//! zstd output as independent frames of fixed-size pieces.
//!
//! A layer is cut into [`ZSTD_PIECE`]-byte pieces at fixed input offsets;
//! each is compressed whole, from one contiguous slice, by zstd's one-shot
//! API into its own frame (see [`super::pieces`]). The frames are
//! concatenated, which zstd decodes as one stream.
//!
//! Why this shape:
//! - Reproducible digests: a frame's bytes depend on its piece and the
//!   level alone (zstd's single-threaded one-shot output does not depend on
//!   the machine), so a layer compresses to the same bytes whatever the
//!   sizes in which it arrives, the number of cores, or the worker that took
//!   each piece.
//! - Speed: one-shot compression over contiguous input avoids the ring
//!   buffer of zstd's streaming API, where every block after the first
//!   window is matched across two segments (a slower loop); and the pieces
//!   of one layer are compressed on every core.
//! - Ratio: each frame starts with no history, which costs a little at
//!   every piece boundary; at 8 MiB pieces the output is within about half
//!   a percent of the whole layer compressed as one frame (`cargo bench
//!   --bench codecs zstd` prints both).
//! - Memory: a few pieces per stream (see [`super::pieces`]), whatever the
//!   layer's size.

use std::cell::RefCell;
use std::io::{self, Write};

use super::pieces::{PieceCodec, Pieces};

/// Input bytes per zstd frame.
pub const ZSTD_PIECE: usize = 8 << 20;

/// zstd level used when none is given (zstd's own default).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// zstd at one level, one frame per piece.
#[derive(Clone, Copy, Debug)]
pub struct Zstd {
    level: i32,
}

/// A zstd encoder writing frames of [`ZSTD_PIECE`] input bytes.
pub type ParallelZstd<W> = Pieces<W, Zstd>;

impl<W: Write> Pieces<W, Zstd> {
    pub fn new(inner: W, level: i32) -> Self {
        Pieces::with_codec(inner, Zstd { level })
    }
}

impl PieceCodec for Zstd {
    const PIECE: usize = ZSTD_PIECE;

    fn compress(self, piece: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        thread_local! {
            /// This thread's compressor for each level used: zstd reuses a
            /// context's tables instead of allocating them per frame.
            static COMPRESSORS: RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
                const { RefCell::new(Vec::new()) };
        }
        COMPRESSORS.with(|cell| {
            let mut compressors = cell.borrow_mut();
            let at = match compressors.iter().position(|(l, _)| *l == self.level) {
                Some(at) => at,
                None => {
                    compressors.push((self.level, zstd::bulk::Compressor::new(self.level)?));
                    compressors.len() - 1
                }
            };
            out.reserve_exact(zstd::zstd_safe::compress_bound(piece.len()));
            #[allow(
                clippy::indexing_slicing,
                reason = "`at` is the entry just found or just pushed"
            )]
            let compressor = &mut compressors[at].1;
            compressor.compress_to_buffer(piece, out)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::stream::FinishWrite;
    use std::io::Read;

    /// Deterministic data that compresses, with some incompressible bytes.
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

    /// Compresses `data` with writes of `write` bytes, or through
    /// `copy_from` with reads of at most `write` bytes when `by_read`.
    fn compress(data: &[u8], write: usize, by_read: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e: Box<dyn FinishWrite + '_> = Box::new(ParallelZstd::new(&mut out, 3));
        if by_read {
            let mut r = Trickle { data, most: write };
            assert_eq!(e.copy_from(&mut r).unwrap(), data.len() as u64);
        } else {
            for c in data.chunks(write.max(1)) {
                e.write_all(c).unwrap();
            }
        }
        e.finish_box().unwrap();
        out
    }

    /// Hands out at most `most` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        most: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.most).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
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
    fn round_trips_through_a_standard_decoder_in_one_frame_per_piece() {
        let data = sample(2 * ZSTD_PIECE + 12345);
        let z = compress(&data, 64 << 10, true);
        assert_eq!(frames(&z), 3);
        assert!(zstd::stream::decode_all(&z[..]).unwrap() == data);
        // The streaming reader used for layers reads across frames too.
        let mut back = Vec::new();
        crate::engine::stream::decoder(&z[..], crate::content::media_type::Compression::Zstd)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data);
    }

    #[test]
    fn output_depends_on_the_input_alone() {
        // Digests of recompressed layers must not change between runs:
        // whatever the sizes of the reads or writes, with the input a whole
        // number of pieces or not.
        for len in [ZSTD_PIECE, ZSTD_PIECE + 777] {
            let data = sample(len);
            let reference = compress(&data, 256 << 10, true);
            assert!(compress(&data, 1 << 20, false) == reference);
            assert!(compress(&data, 8191, false) == reference);
            assert!(compress(&data, 100_003, true) == reference);
            assert!(compress(&data, usize::MAX, false) == reference);
            // Exactly one frame per piece: no empty frame at the end.
            assert_eq!(frames(&reference), len.div_ceil(ZSTD_PIECE));
        }
    }

    #[test]
    fn same_bytes_as_each_piece_compressed_in_turn_on_one_thread() {
        // However many workers the pool has, and whichever takes a piece,
        // the output is each piece's frame in order.
        let data = sample(2 * ZSTD_PIECE + 4321);
        let one_thread: Vec<u8> = data
            .chunks(ZSTD_PIECE)
            .flat_map(|piece| zstd::bulk::compress(piece, 3).unwrap())
            .collect();
        assert!(compress(&data, 300_000, true) == one_thread);
    }

    #[test]
    fn concurrent_streams_give_the_same_bytes_as_one_alone() {
        // Pieces of several streams share the pool's workers, and so their
        // compressors: what one frame holds must not depend on that.
        let data = std::sync::Arc::new(sample(ZSTD_PIECE * 2 + 99));
        let alone = compress(&data, 1 << 20, true);
        let streams: Vec<_> = (0..4)
            .map(|i| {
                let data = data.clone();
                std::thread::spawn(move || compress(&data, 4096 + i * 1000, i % 2 == 0))
            })
            .collect();
        for s in streams {
            assert!(s.join().unwrap() == alone);
        }
    }

    #[test]
    fn frames_are_as_small_as_one_frame_within_a_percent() {
        let data = sample(3 * ZSTD_PIECE);
        let ours = compress(&data, 1 << 20, false);
        let whole = zstd::bulk::compress(&data, 3).unwrap();
        assert!(
            (ours.len() as f64) <= whole.len() as f64 * 1.01,
            "{} > {} + 1 %",
            ours.len(),
            whole.len()
        );
    }

    #[test]
    fn empty_and_tiny_streams_are_valid_zstd() {
        for len in [0, 1, 100, 200 << 10] {
            let data = sample(len);
            let z = compress(&data, 4096, len.is_multiple_of(2));
            assert_eq!(frames(&z), 1, "{len}");
            assert!(zstd::stream::decode_all(&z[..]).unwrap() == data);
        }
    }

    #[test]
    fn levels_are_kept_apart() {
        // Workers keep a compressor per level: a stream at one level must
        // not get frames made at another.
        let data = sample(1 << 20);
        let mut fast = Vec::new();
        let mut e = ParallelZstd::new(&mut fast, 1);
        e.write_all(&data).unwrap();
        e.finish().unwrap();
        let mut small = Vec::new();
        let mut e = ParallelZstd::new(&mut small, 19);
        e.write_all(&data).unwrap();
        e.finish().unwrap();
        assert!(
            small.len() < fast.len(),
            "{} >= {}",
            small.len(),
            fast.len()
        );
        assert!(fast == zstd::bulk::compress(&data, 1).unwrap());
        assert!(small == zstd::bulk::compress(&data, 19).unwrap());
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
        let mut e = ParallelZstd::new(io::sink(), 3);
        let err = e.copy_from(&mut Liar).unwrap_err();
        assert!(err.to_string().contains("more bytes"), "{err}");
        let again = e.write_all(b"more").unwrap_err();
        assert!(again.to_string().contains("broken"), "{again}");
    }

    #[test]
    fn a_failing_reader_breaks_the_stream() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt input"))
            }
        }
        let mut e = ParallelZstd::new(Vec::new(), 3);
        let err = e.copy_from(&mut Broken).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "kind kept: {err}");
        assert!(
            e.finish().is_err(),
            "an incomplete stream is never finished"
        );
    }

    #[test]
    fn after_a_write_error_the_stream_refuses_everything() {
        // Enough input for several pieces: the writer fails on the first.
        let data = sample(3 * ZSTD_PIECE);
        let mut e = ParallelZstd::new(Failing { left: 1000 }, 3);
        let err = e.write_all(&data).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        let again = e.write(b"x").unwrap_err();
        assert!(again.to_string().contains("broken"), "{again}");
        assert!(e.flush().is_err());
        assert!(e.finish().is_err());
    }

    #[test]
    fn a_write_error_at_the_end_is_reported_by_finish() {
        let data = sample(100 << 10);
        let mut e = ParallelZstd::new(Failing { left: 10 }, 3);
        e.write_all(&data).unwrap();
        let Err(err) = e.finish() else {
            panic!("finish hid the write error");
        };
        assert!(err.to_string().contains("disk full"), "{err}");
    }

    /// Many layers compressed at once share one budget of slots: every
    /// stream completes (a stream short of slots writes out its own pieces
    /// rather than waiting on the others), each round-trips, and no more
    /// slots than the budget allows are ever made.
    #[test]
    fn many_streams_share_the_budget_and_all_complete() {
        let data = sample(3 * ZSTD_PIECE + 12345);
        let outputs: Vec<Vec<u8>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|k| {
                    let data = &data;
                    s.spawn(move || compress(data, 100_000 + k * 4096, k % 2 == 0))
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        for out in &outputs {
            assert_eq!(out, &outputs[0], "the same layer gave other bytes");
            let mut back = Vec::new();
            crate::engine::stream::decoder(&out[..], crate::content::media_type::Compression::Zstd)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "a stream did not round-trip");
        }
        let budget = super::super::pieces::Budget::for_piece(ZSTD_PIECE);
        assert!(
            budget.made() <= budget.limit(),
            "more slots than the budget"
        );
    }
}
