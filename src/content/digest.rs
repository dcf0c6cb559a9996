//! Digests (image-spec descriptor.md "Digests") and streaming hashers.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::error::Error;

/// A content digest `algorithm:encoded`, validated.
///
/// Any grammatical algorithm parses; only `sha256` and `sha512` can be
/// computed, and other algorithms are refused when content must be verified.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// The digest of zero bytes.
pub const EMPTY_SHA256: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, Error> {
        let bad = || Error::Format(format!("invalid digest {s:?}"));
        let (alg, enc) = s.split_once(':').ok_or_else(bad)?;
        let alg_ok = !alg.is_empty()
            && alg.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        let enc_ok = !enc.is_empty()
            && enc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-');
        if !alg_ok || !enc_ok {
            return Err(bad());
        }
        let hex_len = match alg {
            "sha256" => Some(64),
            "sha512" => Some(128),
            _ => None,
        };
        if let Some(len) = hex_len
            && (enc.len() != len
                || !enc
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            return Err(bad());
        }
        Ok(Digest(s.to_string()))
    }

    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(bytes))
        ))
    }

    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map(|(a, _)| a).unwrap_or_default()
    }

    pub fn encoded(&self) -> &str {
        self.0.split_once(':').map(|(_, e)| e).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A hasher for this digest's algorithm, or an error naming the digest
    /// when imgsync cannot compute it.
    pub fn hasher(&self) -> Result<DigestHasher, Error> {
        DigestHasher::for_algorithm(self.algorithm()).ok_or_else(|| {
            Error::Unsupported(format!(
                "cannot verify {self}: digest algorithm {} is not supported",
                self.algorithm()
            ))
        })
    }

    /// Whether `bytes` hash to this digest, in this digest's own algorithm;
    /// an error naming the digest when imgsync cannot compute it (content
    /// that cannot be checked is refused, never trusted).
    pub fn matches(&self, bytes: &[u8]) -> Result<bool, Error> {
        let mut h = self.hasher()?;
        h.update(bytes);
        Ok(h.finish() == *self)
    }

    /// `sha256:abc…` shortened to 12 hex digits, for progress lines.
    pub fn short(&self) -> String {
        let enc = self.encoded();
        format!("{}:{}", self.algorithm(), &enc[..enc.len().min(12)])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Incremental hasher producing a [`Digest`].
#[derive(Clone)]
pub enum DigestHasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl DigestHasher {
    pub fn sha256() -> DigestHasher {
        DigestHasher::Sha256(sha2::Sha256::new())
    }

    pub fn for_algorithm(alg: &str) -> Option<DigestHasher> {
        match alg {
            "sha256" => Some(DigestHasher::Sha256(sha2::Sha256::new())),
            "sha512" => Some(DigestHasher::Sha512(sha2::Sha512::new())),
            _ => None,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            DigestHasher::Sha256(h) => h.update(bytes),
            DigestHasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            DigestHasher::Sha256(h) => Digest(format!("sha256:{}", hex::encode(h.finalize()))),
            DigestHasher::Sha512(h) => Digest(format!("sha512:{}", hex::encode(h.finalize()))),
        }
    }
}

impl std::io::Write for DigestHasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d = Digest::parse(EMPTY_SHA256).unwrap();
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(Digest::sha256_of(b""), d);
        assert!(Digest::parse("sha256:E3B0").is_err());
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse("nocolon").is_err());
        assert!(
            Digest::parse("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8")
                .is_ok()
        );
        assert!(Digest::parse("sha256:").is_err());
    }

    #[test]
    fn unknown_algorithm_cannot_be_verified() {
        let d = Digest::parse("blake9:abcd").unwrap();
        assert!(matches!(d.hasher(), Err(Error::Unsupported(_))));
        assert!(matches!(d.matches(b""), Err(Error::Unsupported(_))));
    }

    #[test]
    fn matches_checks_every_supported_algorithm() {
        for alg in ["sha256", "sha512"] {
            let mut h = DigestHasher::for_algorithm(alg).unwrap();
            h.update(b"content");
            let d = h.finish();
            assert_eq!(d.algorithm(), alg);
            assert!(d.matches(b"content").unwrap());
            assert!(!d.matches(b"tampered").unwrap());
        }
    }
}
