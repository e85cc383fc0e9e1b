//! Where an upload's bytes come from, readable again from an earlier offset: an
//! upload session the registry dropped is started over, and needs the bytes again.
//! Local files seek, bytes in memory reposition, a blob streamed from another
//! registry is fetched again with `Range`. [`Checked`] hashes each byte once.

use crate::digest::Digest;
use crate::error::{Context, Result};
use crate::registry::fetch::BlobReader;
use crate::registry::prefetch::SpoolReader;
use crate::signal::Interruptible;
use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Seek, SeekFrom};

/// A blob's bytes that can be read again from `offset`.
pub trait BlobSource: Read {
    /// Continues reading at `offset` (at most the blob's size).
    fn rewind(&mut self, offset: u64) -> Result<()>;
}

impl BlobSource for io::Cursor<&[u8]> {
    fn rewind(&mut self, offset: u64) -> Result<()> {
        self.set_position(offset);
        Ok(())
    }
}

impl<R: Read + Seek> BlobSource for Interruptible<R> {
    fn rewind(&mut self, offset: u64) -> Result<()> {
        self.0
            .seek(SeekFrom::Start(offset))
            .map(drop)
            .context("rewind blob source")
    }
}

impl BlobSource for SpoolReader<'_> {
    fn rewind(&mut self, offset: u64) -> Result<()> {
        SpoolReader::rewind(self, offset)
    }
}

impl BlobSource for BlobReader<'_> {
    fn rewind(&mut self, offset: u64) -> Result<()> {
        self.reopen_at(offset)
    }
}

/// Hashes a source's bytes in blob order, each byte once, however often it is rewound.
pub struct Checked<S> {
    inner: S,
    hasher: Sha256,
    /// Offset of the next byte `inner` gives.
    pos: u64,
    /// Bytes hashed so far (always a prefix of the blob).
    hashed: u64,
}

impl<S: BlobSource> Checked<S> {
    pub fn new(inner: S) -> Checked<S> {
        Checked {
            inner,
            hasher: Sha256::new(),
            pos: 0,
            hashed: 0,
        }
    }

    /// The digest of the bytes seen and how many there were.
    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_hasher(self.hasher), self.hashed)
    }
}

impl<S: BlobSource> Read for Checked<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let end = self.pos + n as u64;
        if end > self.hashed && self.pos <= self.hashed {
            let new = (self.hashed - self.pos) as usize;
            self.hasher.update(&buf[new..n]);
            self.hashed = end;
        }
        self.pos = end;
        Ok(n)
    }
}

impl<S: BlobSource> BlobSource for Checked<S> {
    fn rewind(&mut self, offset: u64) -> Result<()> {
        self.inner.rewind(offset)?;
        self.pos = offset;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_hashes_each_byte_once_across_rewinds() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut c = Checked::new(io::Cursor::new(&data[..]));
        let mut buf = [0u8; 30];
        c.read_exact(&mut buf).unwrap();
        c.rewind(10).unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(buf[0], 10);
        c.rewind(0).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, data);
        assert_eq!(c.finish(), (Digest::of_bytes(&data), 100));
    }
}
