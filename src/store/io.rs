//! Reading into a buffer until it is full or the stream ends, the way every
//! store sniffs a header or reads a fixed-size piece.

use std::io::{self, Read};

/// Reads until `buf` is full or the stream ends; returns how many bytes
/// were read. Interrupted reads are retried.
pub fn read_full(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|rest| !rest.is_empty()) {
        match r.read(rest) {
            Ok(0) => break,
            // Never count more than was asked for, whatever the reader says.
            Ok(k) => n += k.min(rest.len()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads as [`read_full`] does; returns the part of `buf` that was filled.
#[allow(
    clippy::indexing_slicing,
    reason = "read_full never counts past buf.len()"
)]
pub fn read_head<'a>(r: &mut (impl Read + ?Sized), buf: &'a mut [u8]) -> io::Result<&'a [u8]> {
    let n = read_full(r, buf)?;
    Ok(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out one byte per call.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(slot)) => {
                    *slot = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn fills_across_short_reads_and_stops_at_the_end() {
        let mut buf = [0u8; 4];
        assert_eq!(read_full(&mut Trickle(b"abcdef"), &mut buf).unwrap(), 4);
        assert_eq!(&buf, b"abcd");
        let mut big = [0u8; 10];
        assert_eq!(read_full(&mut Trickle(b"xyz"), &mut big).unwrap(), 3);
        assert_eq!(&big[..3], b"xyz");
    }
}
