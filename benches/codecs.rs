//! Throughput of the layer codecs and of hashing, as the copy engine uses
//! them, on deterministic data shaped like a layer of ordinary files.
//!
//! `cargo bench --bench codecs [FILTER...]` runs the operations whose names
//! contain a filter (all without one) and prints MiB/s of uncompressed
//! bytes, CPU seconds and output sizes. `stream-zstd` and `stream-gzip`
//! (run only when named exactly) compress a generated layer without holding
//! it in memory, to measure the encoder's peak resident memory with
//! `/usr/bin/time -v`.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use imgsync::content::DigestHasher;
use imgsync::content::media_type::Compression;
use imgsync::engine::{decoder, encoder};

/// Size of the in-memory sample.
const SAMPLE: usize = 128 << 20;
/// Size of the streamed layer of the memory measurement.
const STREAMED: u64 = 120 << 20;
/// Runs per operation; the best is reported (the machine is shared).
const ROUNDS: usize = 5;

/// A xorshift generator: the same bytes on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Generates a layer-like stream: source-like text, skewed binary (as in
/// executables), incompressible runs (as in compressed files) and copies of
/// earlier content (as duplicate files), in segments of 1 KiB to 256 KiB.
struct LayerLike {
    rng: Rng,
    /// Byte patterns of the machine-code-like segments.
    patterns: Vec<Vec<u8>>,
    left: u64,
    /// The last [`HISTORY`] bytes generated (up to twice as many), for
    /// repeats.
    history: Vec<u8>,
    segment: Vec<u8>,
    pos: usize,
}

/// How far back repeats reach.
const HISTORY: usize = 8 << 20;
/// Distinct machine-code-like patterns.
const PATTERNS: usize = 512;

const WORDS: [&str; 24] = [
    "fn ", "let ", "return ", "struct ", "impl ", "self", "(", ")", "{\n", "}\n", "    ", "if ",
    "else ", "0x", "error", "value", "buffer", "layer", "digest", "=", ";\n", ", ", "::", "// ",
];

impl LayerLike {
    fn new(len: u64) -> Self {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let patterns = (0..PATTERNS)
            .map(|_| {
                let len = 2 + rng.below(6) as usize;
                rng.next().to_le_bytes()[..len].to_vec()
            })
            .collect();
        LayerLike {
            rng,
            patterns,
            left: len,
            history: Vec::new(),
            segment: Vec::new(),
            pos: 0,
        }
    }

    fn next_segment(&mut self) {
        let len = 1024 + self.rng.below(255 << 10) as usize;
        let mut s = Vec::with_capacity(len);
        match self.rng.below(20) {
            0..=10 => {
                while s.len() < len {
                    let r = self.rng.next();
                    if r.is_multiple_of(7) {
                        s.extend_from_slice(format!("{}", r >> 44).as_bytes());
                    } else {
                        s.extend_from_slice(WORDS[(r >> 8) as usize % WORDS.len()].as_bytes());
                    }
                }
            }
            11..=16 => {
                // Machine-code-like: common instruction patterns, some
                // followed by a small immediate.
                while s.len() < len {
                    let r = self.rng.next();
                    // Skewed towards the first patterns.
                    let pick = (((r & 0xff) * ((r >> 8) & 0xff)) >> 7) as usize % PATTERNS;
                    s.extend_from_slice(&self.patterns[pick]);
                    if (r >> 16).is_multiple_of(4) {
                        s.extend_from_slice(&((r >> 32) as u32 & 0xfff).to_le_bytes());
                    }
                }
            }
            17 => {
                while s.len() < len {
                    s.extend_from_slice(&self.rng.next().to_le_bytes());
                }
            }
            _ if self.history.len() > len => {
                let from = self.rng.below((self.history.len() - len) as u64) as usize;
                s.extend_from_slice(&self.history[from..from + len]);
            }
            _ => s.resize(len, 0),
        }
        s.truncate(len);
        self.history.extend_from_slice(&s);
        // Trimmed now and then, not at every segment: moving the history
        // would cost more than generating.
        if self.history.len() > 2 * HISTORY {
            let drop = self.history.len() - HISTORY;
            self.history.drain(..drop);
        }
        self.segment = s;
        self.pos = 0;
    }
}

impl Read for LayerLike {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        if self.pos == self.segment.len() {
            self.next_segment();
        }
        let n = buf
            .len()
            .min(self.segment.len() - self.pos)
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.segment[self.pos..self.pos + n]);
        self.pos += n;
        self.left -= n as u64;
        Ok(n)
    }
}

/// CPU time of this process so far (user + system), where Linux tells it.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Clock ticks are 1/100 s on every Linux configuration in use.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Compresses `data` as the engine does: fed by `copy_from`.
fn compress(data: &[u8], c: Compression) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2);
    let mut enc = encoder(&mut out, c, None).expect("encoder");
    enc.copy_from(&mut &data[..]).expect("compress");
    enc.finish_box().expect("finish");
    out
}

fn decompress(z: &[u8], c: Compression) -> u64 {
    let mut dec = decoder(z, c).expect("decoder");
    io::copy(&mut dec, &mut io::sink()).expect("decompress")
}

fn hash(data: &[u8]) -> String {
    let mut h = DigestHasher::sha256();
    for piece in data.chunks(256 << 10) {
        h.update(piece);
    }
    h.finish().to_string()
}

/// Runs `op` [`ROUNDS`] times and prints the best throughput over `bytes`.
fn measure<T>(name: &str, bytes: usize, mut op: impl FnMut() -> T) -> T {
    let mut best: Option<(Duration, Option<Duration>)> = None;
    let mut last = None;
    for _ in 0..ROUNDS {
        let cpu0 = cpu_time();
        let t0 = Instant::now();
        let out = op();
        let wall = t0.elapsed();
        let cpu = cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
        if best.is_none_or(|(w, _)| wall < w) {
            best = Some((wall, cpu));
        }
        last = Some(out);
    }
    let (wall, cpu) = best.expect("at least one round");
    let mib = bytes as f64 / (1 << 20) as f64;
    let cpu = cpu.map_or("?".to_string(), |c| format!("{:.2}", c.as_secs_f64()));
    println!(
        "{name:<14} {:>8.1} MiB/s  wall {:>6.3} s  cpu {cpu:>6} s",
        mib / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
    last.expect("at least one round")
}

/// Compresses a generated layer without holding it, for memory measurement.
fn stream(c: Compression) {
    struct Counter(u64);
    impl Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut out = Counter(0);
    let t0 = Instant::now();
    let mut enc = encoder(&mut out, c, None).expect("encoder");
    let n = enc
        .copy_from(&mut LayerLike::new(STREAMED))
        .expect("compress");
    enc.finish_box().expect("finish");
    println!(
        "streamed {n} bytes to {} bytes ({c:?}) in {:.3} s",
        out.0,
        t0.elapsed().as_secs_f64()
    );
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if filters.iter().any(|f| f == "stream-zstd") {
        return stream(Compression::Zstd);
    }
    if filters.iter().any(|f| f == "stream-gzip") {
        return stream(Compression::Gzip);
    }
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));

    let mut data = Vec::with_capacity(SAMPLE);
    LayerLike::new(SAMPLE as u64)
        .read_to_end(&mut data)
        .expect("generate");
    println!("sample: {} MiB, sha256 {}", SAMPLE >> 20, hash(&data));

    if wanted("sha256") {
        measure("sha256", data.len(), || hash(&data));
    }
    if wanted("zstd") {
        let z = measure("zstd-encode", data.len(), || {
            compress(&data, Compression::Zstd)
        });
        println!(
            "  zstd output: {} bytes ({:.2} %), sha256 {}",
            z.len(),
            z.len() as f64 * 100.0 / data.len() as f64,
            hash(&z)
        );
        let n = measure("zstd-decode", data.len(), || {
            decompress(&z, Compression::Zstd)
        });
        assert_eq!(n, data.len() as u64, "zstd round trip");
        // For reference: the whole sample as one frame, on one core.
        let one = measure("zstd-one-frame", data.len(), || {
            zstd::bulk::compress(&data, 3).expect("compress")
        });
        println!(
            "  one frame: {} bytes; the encoder's output is {:+.2} % of it",
            one.len(),
            (z.len() as f64 / one.len() as f64 - 1.0) * 100.0
        );
    }
    if wanted("gzip") {
        let z = measure("gzip-encode", data.len(), || {
            compress(&data, Compression::Gzip)
        });
        println!(
            "  gzip output: {} bytes ({:.2} %), sha256 {}",
            z.len(),
            z.len() as f64 * 100.0 / data.len() as f64,
            hash(&z)
        );
        let n = measure("gzip-decode", data.len(), || {
            decompress(&z, Compression::Gzip)
        });
        assert_eq!(n, data.len() as u64, "gzip round trip");
    }
}
