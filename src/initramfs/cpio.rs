//! The newc ("new ASCII", magic `070701`) cpio format the Linux kernel unpacks into
//! its initial root filesystem (init/initramfs.c): a 110-byte header of thirteen
//! 8-digit hex fields, the NUL-terminated name, the body, each padded to 4 bytes,
//! and a last entry named `TRAILER!!!`. Writing only; sizes are checked by the caller.

use std::io::{self, Read, Write};

/// One entry's header fields (the device the entry lives on is always 0:0, the
/// checksum field 0, as newc without CRC has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub ino: u32,
    /// Full `st_mode`: file type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub filesize: u32,
    /// Device numbers of a character or block device.
    pub rdev: (u32, u32),
}

/// Writes entries one after the other, counting bytes for the padding.
pub struct Writer<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(inner: W) -> Self {
        Writer { inner, written: 0 }
    }

    /// Writes one entry: header, `name` (without NUL), then exactly `h.filesize`
    /// bytes from `body` (an error if it has fewer).
    pub fn entry(&mut self, h: &Header, name: &[u8], body: &mut dyn Read) -> io::Result<()> {
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?;
        let fields = [
            h.ino, h.mode, h.uid, h.gid, h.nlink, h.mtime, h.filesize, 0, 0, h.rdev.0, h.rdev.1,
            namesize, 0,
        ];
        let mut head = String::with_capacity(110);
        head.push_str("070701");
        for f in fields {
            head.push_str(&format!("{f:08x}"));
        }
        self.put(head.as_bytes())?;
        self.put(name)?;
        self.put(&[0])?;
        self.pad()?;
        let want = u64::from(h.filesize);
        let copied = io::copy(&mut body.take(want), &mut self.inner)?;
        self.written += copied;
        if copied != want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{copied} bytes where {want} were expected (did it change meanwhile?)"),
            ));
        }
        self.pad()
    }

    /// Writes the `TRAILER!!!` entry and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let h = Header {
            nlink: 1,
            ..Header::default()
        };
        self.entry(&h, b"TRAILER!!!", &mut io::empty())?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.inner.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_name_and_body_are_padded_to_four_bytes() {
        let mut w = Writer::new(Vec::new());
        let h = Header {
            ino: 1,
            mode: 0o100644,
            uid: 1000,
            gid: 42,
            nlink: 1,
            mtime: 0x6553f100,
            filesize: 5,
            rdev: (0, 0),
        };
        w.entry(&h, b"etc/x", &mut &b"hello"[..]).unwrap();
        let out = w.finish().unwrap();
        let head = std::str::from_utf8(&out[..110]).unwrap();
        let want = [
            "070701", "00000001", "000081a4", "000003e8", "0000002a", "00000001", "6553f100",
            "00000005", "00000000", "00000000", "00000000", "00000000", "00000006", "00000000",
        ];
        assert_eq!(head, want.concat());
        // 110 + 6 (name + NUL) = 116, already aligned; body 5 → 3 bytes of padding.
        assert_eq!(&out[110..116], b"etc/x\0");
        assert_eq!(&out[116..121], b"hello");
        assert_eq!(&out[121..124], &[0, 0, 0]);
        assert_eq!(&out[124..130], b"070701");
        assert!(out.ends_with(b"TRAILER!!!\0\0\0\0"));
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn a_short_body_is_an_error() {
        let mut w = Writer::new(Vec::new());
        let h = Header {
            filesize: 10,
            ..Header::default()
        };
        assert!(w.entry(&h, b"f", &mut &b"abc"[..]).is_err());
    }
}
