//! Content digests (`sha256:<64 hex>`): parsing, validation, and hashing adapters
//! that let bytes be checked as they stream past, never held whole.

use crate::error::{Error, Result};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read, Write};

/// A validated `sha256:` digest. Other algorithms are refused: they are rare and
/// an unverifiable digest is worse than none.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest> {
        let Some(hex) = s.strip_prefix("sha256:") else {
            return Err(if s.contains(':') {
                Error::new(format!("unsupported digest algorithm in {s:?}"))
                    .hint("only sha256 digests are supported")
            } else {
                Error::new(format!(
                    "invalid digest {s:?}: expected sha256:<64 hex digits>"
                ))
            });
        };
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::new(format!(
                "invalid digest {s:?}: expected sha256:<64 lowercase hex digits>"
            )));
        }
        Ok(Digest(s.to_string()))
    }

    pub fn of_bytes(data: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(data))
    }

    pub fn from_hasher(h: Sha256) -> Digest {
        Digest(format!("sha256:{}", to_hex(&h.finalize())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits without the algorithm.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The first 12 hex digits, for humans.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// A reader that hashes and counts every byte read through it.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.count
    }
    /// Consumes the adapter: the digest and the number of bytes seen.
    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_hasher(self.hasher), self.count)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts every byte written through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub fn finish(self) -> (Digest, u64, W) {
        (Digest::from_hasher(self.hasher), self.count, self.inner)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Checks that what was received is what was asked for.
pub fn verify(what: &str, expected: &Digest, got: &Digest) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::new(format!("{what}: digest mismatch: expected {expected}, got {got}"))
            .hint("the data was corrupted in the registry or in transit; try again, and report it to the registry's owner if it persists"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_and_rejects_invalid() {
        let d = Digest::of_bytes(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert!(Digest::parse("sha256:E3B0").is_err());
        assert!(Digest::parse("sha512:abcd").is_err());
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
    }

    #[test]
    fn hash_reader_counts_and_hashes() {
        let mut r = HashReader::new(&b"hello"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        let (d, n) = r.finish();
        assert_eq!(n, 5);
        assert_eq!(d, Digest::of_bytes(b"hello"));
    }
}
