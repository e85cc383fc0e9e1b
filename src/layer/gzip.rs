//! Streaming gunzip on miniz_oxide: a Read adapter that never holds a whole blob, with CRC32 and multi-member support.
//!
//! The gzip framing (RFC 1952) is parsed here; miniz_oxide only inflates the raw
//! deflate data. Every member's CRC32 and ISIZE are checked. Members may be
//! concatenated (pigz, `cat a.gz b.gz`); after the last one, zero bytes are
//! tolerated (some tools pad blobs) but anything else is an error.

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};
use std::io::{self, Read};

/// Size of the compressed-input buffer.
const INPUT_BUF: usize = 128 * 1024;

const FTEXT_RESERVED: u8 = 0xe0;
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;

/// Where the reader is in the gzip stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a member header (or the end of the stream, if at least one member was read).
    Header,
    /// Inside a member's deflate data.
    Body,
    /// The 8-byte CRC32/ISIZE trailer of a member is next.
    Trailer,
    /// Only zero padding (or nothing) follows the last member.
    Padding,
    /// Everything has been read and checked.
    Done,
}

/// Decompresses a gzip stream read from `R`, checking every member's CRC32 and size.
pub struct GzipReader<R: Read> {
    inner: R,
    inflater: Box<InflateState>,
    input: Box<[u8]>,
    pos: usize,
    len: usize,
    eof: bool,
    state: State,
    members: u64,
    crc: Crc32,
    /// Whether member CRC32s are computed and checked (see [`GzipReader::trusting_crc`]).
    check_crc: bool,
    isize: u32,
}

impl<R: Read> GzipReader<R> {
    /// Wraps a reader of gzip-compressed bytes.
    pub fn new(inner: R) -> GzipReader<R> {
        GzipReader {
            inner,
            inflater: InflateState::new_boxed(DataFormat::Raw),
            input: vec![0u8; INPUT_BUF].into_boxed_slice(),
            pos: 0,
            len: 0,
            eof: false,
            state: State::Header,
            members: 0,
            crc: Crc32::new(),
            check_crc: true,
            isize: 0,
        }
    }

    /// Like [`GzipReader::new`], but without computing the members' CRC32s, for a
    /// caller that verifies a SHA-256 of the whole decompressed stream anyway (a
    /// layer's diff_id): that covers every byte the CRCs would, and the CRC costs
    /// about 6% of a pull. The framing and each member's length are still checked.
    pub fn trusting_crc(inner: R) -> GzipReader<R> {
        GzipReader {
            check_crc: false,
            ..GzipReader::new(inner)
        }
    }

    /// Refills the input buffer when it is empty. Returns false at the end of the input.
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos < self.len {
            return Ok(true);
        }
        if self.eof {
            return Ok(false);
        }
        self.pos = 0;
        self.len = 0;
        let n = self.inner.read(&mut self.input)?;
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.len = n;
        Ok(true)
    }

    /// Appends more input after what is left unconsumed (moving it to the front).
    /// Returns false at the end of the input.
    fn fill_more(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.input.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        let Some(space) = self.input.get_mut(self.len..).filter(|s| !s.is_empty()) else {
            return Err(corrupt("inflate made no progress"));
        };
        let n = self.inner.read(space)?;
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.len += n;
        Ok(true)
    }

    /// One byte of framing, or `None` at the end of the input.
    fn byte_or_eof(&mut self) -> io::Result<Option<u8>> {
        if !self.fill()? {
            return Ok(None);
        }
        let b = self.input.get(self.pos).copied();
        self.pos += 1;
        Ok(b)
    }

    /// One byte of framing; the end of the input here is a truncation.
    fn byte(&mut self) -> io::Result<u8> {
        self.byte_or_eof()?.ok_or_else(truncated)
    }

    fn u16_le(&mut self) -> io::Result<u16> {
        Ok(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }

    fn u32_le(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes([
            self.byte()?,
            self.byte()?,
            self.byte()?,
            self.byte()?,
        ]))
    }

    /// Parses a member header whose first byte (0x1f) was already read.
    fn header(&mut self) -> io::Result<()> {
        let mut hcrc = Crc32::new();
        let mut fixed = [0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        for b in fixed.iter_mut().skip(1) {
            *b = self.byte()?;
        }
        hcrc.update(&fixed);
        let [_, id2, cm, flags, ..] = fixed;
        if id2 != 0x8b {
            return Err(corrupt("not a gzip stream"));
        }
        if cm != 8 {
            return Err(corrupt("unknown compression method"));
        }
        if flags & FTEXT_RESERVED != 0 {
            return Err(corrupt("reserved header flags set"));
        }
        if flags & FEXTRA != 0 {
            let xlen = self.u16_le()?;
            hcrc.update(&xlen.to_le_bytes());
            for _ in 0..xlen {
                hcrc.update(&[self.byte()?]);
            }
        }
        for flag in [FNAME, FCOMMENT] {
            if flags & flag != 0 {
                loop {
                    let b = self.byte()?;
                    hcrc.update(&[b]);
                    if b == 0 {
                        break;
                    }
                }
            }
        }
        if flags & FHCRC != 0 {
            let want = self.u16_le()?;
            if want != (hcrc.finish() & 0xffff) as u16 {
                return Err(corrupt("header checksum mismatch"));
            }
        }
        self.inflater.reset(DataFormat::Raw);
        self.crc = Crc32::new();
        self.isize = 0;
        self.state = State::Body;
        Ok(())
    }

    /// Checks a member's CRC32 and ISIZE.
    fn trailer(&mut self) -> io::Result<()> {
        let crc = self.u32_le()?;
        let size = self.u32_le()?;
        if self.check_crc && crc != self.crc.finish() {
            return Err(corrupt("CRC32 mismatch"));
        }
        if size != self.isize {
            return Err(corrupt("length mismatch"));
        }
        self.members += 1;
        self.state = State::Header;
        Ok(())
    }

    /// At a member boundary: another member, zero padding, or the end.
    fn next_member(&mut self) -> io::Result<()> {
        match self.byte_or_eof()? {
            Some(0x1f) => self.header(),
            None if self.members > 0 => {
                self.state = State::Done;
                Ok(())
            }
            None => Err(truncated()),
            Some(0) if self.members > 0 => {
                self.state = State::Padding;
                Ok(())
            }
            Some(_) if self.members > 0 => Err(corrupt("trailing garbage after the last member")),
            Some(_) => Err(corrupt("not a gzip stream")),
        }
    }

    /// Consumes the rest of the input, which must be zero bytes.
    fn padding(&mut self) -> io::Result<()> {
        while self.fill()? {
            let rest = self.input.get(self.pos..self.len).unwrap_or_default();
            if rest.iter().any(|&b| b != 0) {
                return Err(corrupt("trailing garbage after the last member"));
            }
            self.pos = self.len;
        }
        self.state = State::Done;
        Ok(())
    }

    /// Inflates into `buf`; returns bytes written (0 only when the member ended).
    fn body(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let input = self.input.get(self.pos..self.len).unwrap_or_default();
            let res = inflate(&mut self.inflater, input, buf, MZFlush::None);
            self.pos += res.bytes_consumed;
            let out = buf.get(..res.bytes_written).unwrap_or_default();
            if self.check_crc {
                self.crc.update(out);
            }
            self.isize = self.isize.wrapping_add(res.bytes_written as u32);
            match res.status {
                Ok(MZStatus::StreamEnd) => {
                    self.state = State::Trailer;
                    return Ok(res.bytes_written);
                }
                Ok(_) | Err(MZError::Buf) => {
                    if res.bytes_written > 0 {
                        return Ok(res.bytes_written);
                    }
                    if res.bytes_consumed == 0 && !self.fill_more()? {
                        return Err(truncated());
                    }
                }
                Err(_) => return Err(corrupt("invalid deflate data")),
            }
        }
    }
}

impl<R: Read> Read for GzipReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                State::Header => self.next_member()?,
                State::Body => {
                    let n = self.body(buf)?;
                    if n > 0 {
                        return Ok(n);
                    }
                }
                State::Trailer => self.trailer()?,
                State::Padding => self.padding()?,
                State::Done => return Ok(0),
            }
        }
    }
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "truncated gzip stream")
}

fn corrupt(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt gzip data: {why}"),
    )
}

/// CRC-32 (IEEE 802.3, reflected, as gzip uses it), slicing-by-8.
#[derive(Debug, Clone, Copy)]
pub struct Crc32(u32);

/// Eight 256-entry tables: `TABLES[0]` is the classic byte table; `TABLES[k][b]`
/// is the CRC of byte `b` followed by `k` zero bytes.
static TABLES: [[u32; 256]; 8] = make_tables();

const fn make_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut k = 1;
        while k < 8 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            k += 1;
        }
        i += 1;
    }
    t
}

impl Crc32 {
    /// A fresh checksum.
    pub fn new() -> Crc32 {
        Crc32(!0)
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        let t = &TABLES;
        let mut c = self.0;
        let mut chunks = data.chunks_exact(8);
        for ch in &mut chunks {
            let lo = u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]) ^ c;
            let hi = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
            c = t[7][(lo & 0xff) as usize]
                ^ t[6][((lo >> 8) & 0xff) as usize]
                ^ t[5][((lo >> 16) & 0xff) as usize]
                ^ t[4][(lo >> 24) as usize]
                ^ t[3][(hi & 0xff) as usize]
                ^ t[2][((hi >> 8) & 0xff) as usize]
                ^ t[1][((hi >> 16) & 0xff) as usize]
                ^ t[0][(hi >> 24) as usize];
        }
        for &b in chunks.remainder() {
            c = (c >> 8) ^ t[0][((c ^ b as u32) & 0xff) as usize];
        }
        self.0 = c;
    }

    /// The checksum of everything fed so far.
    pub fn finish(&self) -> u32 {
        !self.0
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Crc32::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miniz_oxide::deflate::compress_to_vec;

    /// A gzip member built by hand around miniz's raw deflate.
    fn member(data: &[u8], flags: u8) -> Vec<u8> {
        let mut out = vec![0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 3];
        if flags & FEXTRA != 0 {
            out.extend_from_slice(&[4, 0, b'a', b'b', 0, 0]);
        }
        if flags & FNAME != 0 {
            out.extend_from_slice(b"name.tar\0");
        }
        if flags & FCOMMENT != 0 {
            out.extend_from_slice(b"a comment\0");
        }
        if flags & FHCRC != 0 {
            let mut c = Crc32::new();
            c.update(&out);
            out.extend_from_slice(&((c.finish() & 0xffff) as u16).to_le_bytes());
        }
        out.extend_from_slice(&compress_to_vec(data, 6));
        let mut c = Crc32::new();
        c.update(data);
        out.extend_from_slice(&c.finish().to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    fn gunzip(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        GzipReader::new(data).read_to_end(&mut out)?;
        Ok(out)
    }

    /// Reads one byte per call from the inner slice, to exercise refills.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((&b, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            if buf.is_empty() {
                return Ok(0);
            }
            buf[0] = b;
            self.0 = rest;
            Ok(1)
        }
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| ((i * 7919) % 251) as u8 ^ (i >> 10) as u8)
            .collect()
    }

    #[test]
    fn crc32_known_value() {
        let mut c = Crc32::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xcbf4_3926);
        let mut c = Crc32::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xcbf4_3926);
    }

    #[test]
    fn all_header_flags() {
        let data = sample(100_000);
        for flags in [
            0,
            FEXTRA,
            FNAME,
            FCOMMENT,
            FHCRC,
            FEXTRA | FNAME | FCOMMENT | FHCRC,
        ] {
            assert_eq!(
                gunzip(&member(&data, flags)).unwrap(),
                data,
                "flags {flags}"
            );
        }
    }

    #[test]
    fn concatenated_members_and_trickle_input() {
        let a = sample(70_000);
        let b = b"second member".to_vec();
        let mut gz = member(&a, FNAME);
        gz.extend(member(&b, FHCRC | FEXTRA));
        gz.extend(member(b"", 0));
        let mut want = a.clone();
        want.extend_from_slice(&b);
        assert_eq!(gunzip(&gz).unwrap(), want);
        let mut out = Vec::new();
        GzipReader::new(Trickle(&gz)).read_to_end(&mut out).unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn trailing_zeros_ok_garbage_not() {
        let mut gz = member(b"hello", 0);
        gz.extend_from_slice(&[0; 1000]);
        assert_eq!(gunzip(&gz).unwrap(), b"hello");
        gz.push(1);
        let e = gunzip(&gz).unwrap_err();
        assert!(e.to_string().starts_with("corrupt gzip data"), "{e}");
        let mut gz = member(b"hello", 0);
        gz.extend_from_slice(b"garbage");
        assert!(gunzip(&gz).is_err());
    }

    #[test]
    fn truncation_anywhere_is_reported() {
        let gz = member(&sample(50_000), FNAME);
        for cut in [0, 1, 5, 12, 100, gz.len() / 2, gz.len() - 8, gz.len() - 1] {
            let e = gunzip(&gz[..cut]).unwrap_err();
            assert_eq!(e.to_string(), "truncated gzip stream", "cut at {cut}");
        }
    }

    #[test]
    fn corruption_is_reported() {
        let data = sample(50_000);
        let mut gz = member(&data, 0);
        let n = gz.len();
        gz[n - 6] ^= 1; // CRC
        assert!(gunzip(&gz).unwrap_err().to_string().contains("CRC32"));
        let mut skipped = Vec::new();
        let read = GzipReader::trusting_crc(&gz[..]).read_to_end(&mut skipped);
        assert_eq!(
            read.unwrap(),
            data.len(),
            "trusting_crc skips the CRC check"
        );
        assert_eq!(skipped, data);
        let mut gz = member(&data, 0);
        gz[n - 2] ^= 1; // ISIZE
        assert!(GzipReader::trusting_crc(&gz[..])
            .read_to_end(&mut Vec::new())
            .unwrap_err()
            .to_string()
            .contains("length"));
        assert!(gunzip(&gz).unwrap_err().to_string().contains("length"));
        let mut gz = member(&data, 0);
        gz[2] = 7;
        assert!(gunzip(&gz).is_err());
        let mut gz = member(&data, FHCRC);
        gz[4] ^= 1; // mtime byte, covered by the header CRC
        assert!(gunzip(&gz).unwrap_err().to_string().contains("header"));
        assert!(gunzip(b"PK\x03\x04 not gzip").is_err());
        // Flipping bits inside the deflate data must never panic and must fail somewhere.
        for i in (12..n - 8).step_by(97) {
            let mut gz = member(&data, 0);
            gz[i] ^= 0x55;
            assert!(gunzip(&gz).is_err(), "flip at {i}");
        }
    }

    /// Throughput check against `gzip -dc` (run with `--ignored --nocapture` in release).
    #[test]
    #[ignore]
    fn bench_gunzip_100mb() {
        use std::time::Instant;
        let path = std::env::var("BARGE_GZ_BENCH").unwrap_or("/tmp/barge-bench.gz".into());
        let gz = std::fs::read(&path).expect("set BARGE_GZ_BENCH to a .gz file");
        let t = Instant::now();
        let mut r = GzipReader::new(&gz[..]);
        let mut buf = vec![0u8; 128 * 1024];
        let mut total = 0u64;
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "gunzip {total} bytes in {s:.3}s: {:.0} MB/s",
            total as f64 / s / 1e6
        );
    }
}
