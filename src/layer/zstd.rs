//! Streaming zstd decompression on libzstd: a Read adapter for `tar+zstd` layers that never holds a whole blob.
//!
//! libzstd's streaming decoder (through `zstd-safe`) decodes every frame of the stream
//! in turn, steps over skippable frames (zstd:chunked keeps its table of contents in
//! them) and verifies each frame's XXH64 content checksum when the frame has one. A
//! frame that asks for a window over [`MAX_WINDOW_LOG`] (128 MiB, libzstd's own default
//! limit) is refused before anything is allocated for it. Anything after the last frame
//! that is not another frame is an error; so is a stream that ends inside a frame.
//! Pull checks the layer's diff_id over every decompressed byte anyway, so the checksum
//! is a second guard, not the one that keeps a corrupt layer out.

use std::io::{self, Read};
use zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer};

/// Size of the compressed-input buffer (libzstd's `ZSTD_DStreamInSize` is 128 KiB + 3).
const INPUT_BUF: usize = 128 * 1024;

/// The largest window accepted: 2^27 = 128 MiB, as libzstd's `ZSTD_WINDOWLOG_LIMIT_DEFAULT`.
/// The window is the memory a frame needs; common encoders use 8 MiB (level 3) to 32 MiB.
pub const MAX_WINDOW_LOG: u32 = 27;

/// Decompresses a zstd stream (one or more frames, skippable frames allowed) read from `R`.
pub struct ZstdReader<R: Read> {
    inner: R,
    dctx: DCtx<'static>,
    input: Box<[u8]>,
    pos: usize,
    len: usize,
    eof: bool,
    /// Whether any compressed byte was read (an empty blob is not a zstd stream).
    started: bool,
    /// Whether the decoder is inside a frame (it has not reported a frame's end yet).
    in_frame: bool,
}

impl<R: Read> ZstdReader<R> {
    /// Wraps a reader of zstd-compressed bytes.
    pub fn new(inner: R) -> io::Result<ZstdReader<R>> {
        let mut dctx = DCtx::try_create().ok_or_else(|| {
            io::Error::new(io::ErrorKind::OutOfMemory, "cannot allocate a zstd decoder")
        })?;
        dctx.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG))
            .map_err(zstd_error)?;
        Ok(ZstdReader {
            inner,
            dctx,
            input: vec![0u8; INPUT_BUF].into_boxed_slice(),
            pos: 0,
            len: 0,
            eof: false,
            started: false,
            in_frame: false,
        })
    }

    /// Refills the input buffer once it is used up, noting the end of the input.
    fn fill(&mut self) -> io::Result<()> {
        if self.pos < self.len || self.eof {
            return Ok(());
        }
        self.pos = 0;
        self.len = self.inner.read(&mut self.input)?;
        if self.len == 0 {
            self.eof = true;
        } else {
            self.started = true;
        }
        Ok(())
    }

    /// One decoder step: feeds what input there is, returns the bytes written to `buf`.
    fn step(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let src = self.input.get(self.pos..self.len).unwrap_or_default();
        let mut input = InBuffer::around(src);
        let mut output = OutBuffer::around(buf);
        let hint = self
            .dctx
            .decompress_stream(&mut output, &mut input)
            .map_err(zstd_error)?;
        self.pos += input.pos();
        // 0: a frame ended and everything it holds has been written out.
        self.in_frame = hint != 0;
        Ok(output.pos())
    }
}

impl<R: Read> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            self.fill()?;
            let at_end = self.eof && self.pos >= self.len;
            if at_end && !self.in_frame {
                return if self.started {
                    Ok(0)
                } else {
                    Err(corrupt("empty stream, not zstd"))
                };
            }
            let n = self.step(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if at_end {
                // Inside a frame, no more input, and nothing left to flush.
                return Err(truncated());
            }
        }
    }
}

/// A libzstd error code as an I/O error; a too-large window gets its own message.
fn zstd_error(code: usize) -> io::Error {
    use zstd_safe::zstd_sys::{ZSTD_ErrorCode, ZSTD_getErrorCode};
    // SAFETY: ZSTD_getErrorCode only classifies the number it is given.
    let kind = unsafe { ZSTD_getErrorCode(code) };
    if kind == ZSTD_ErrorCode::ZSTD_error_frameParameter_windowTooLarge {
        return corrupt(&format!(
            "a frame asks for a window over {} MiB, more than barge allows",
            (1u64 << MAX_WINDOW_LOG) >> 20
        ));
    }
    corrupt(zstd_safe::get_error_name(code))
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "truncated zstd stream")
}

fn corrupt(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt zstd data: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// `zstd ARGS` over `data` (the real CLI, as the brief asks: frames made by libzstd's encoder).
    fn zstd_cli(args: &[&str], data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut child = Command::new("zstd")
            .args(args)
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the zstd CLI is needed (apt-get install zstd)");
        let mut stdin = child.stdin.take().unwrap();
        let input = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success(), "zstd {args:?} failed");
        out.stdout
    }

    fn unzstd(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ZstdReader::new(data)?.read_to_end(&mut out)?;
        Ok(out)
    }

    /// A skippable frame (magic 0x184D2A5?) holding `payload`.
    fn skippable(nibble: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x50 | nibble, 0x2a, 0x4d, 0x18];
        f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(payload);
        f
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
    fn one_frame_with_and_without_checksum() {
        let data = sample(300_000);
        assert_eq!(unzstd(&zstd_cli(&["-3"], &data)).unwrap(), data);
        assert_eq!(unzstd(&zstd_cli(&["--no-check"], &data)).unwrap(), data);
    }

    #[test]
    fn multiple_frames_and_skippable_frames() {
        let a = sample(200_000);
        let b = b"second frame".to_vec();
        let mut z = skippable(0, b"leading skippable frame");
        z.extend(zstd_cli(&["--no-check"], &a));
        z.extend(skippable(0xf, &sample(5000)));
        z.extend(zstd_cli(&["-19"], &b));
        z.extend(zstd_cli(&[], b""));
        z.extend(skippable(7, b"")); // a trailing TOC-like frame, as zstd:chunked has
        let mut want = a.clone();
        want.extend_from_slice(&b);
        assert_eq!(unzstd(&z).unwrap(), want);
        let mut out = Vec::new();
        ZstdReader::new(Trickle(&z))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, want);
        // Small reads drain what the decoder holds before it takes more input.
        let mut r = ZstdReader::new(&z[..]).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, want);
    }

    #[test]
    fn truncation_anywhere_is_reported() {
        let z = zstd_cli(&[], &sample(100_000));
        for cut in [1, 4, 6, 100, z.len() / 2, z.len() - 4, z.len() - 1] {
            let e = unzstd(&z[..cut]).unwrap_err();
            assert_eq!(e.to_string(), "truncated zstd stream", "cut at {cut}");
        }
        let e = unzstd(b"").unwrap_err();
        assert!(e.to_string().contains("empty stream"), "{e}");
        let mut skip = skippable(0, b"0123456789");
        skip.truncate(12);
        assert_eq!(
            unzstd(&skip).unwrap_err().to_string(),
            "truncated zstd stream"
        );
    }

    #[test]
    fn corruption_and_garbage_are_reported() {
        let data = sample(100_000);
        let z = zstd_cli(&[], &data);
        let mut bad = z.clone();
        let n = bad.len();
        bad[n - 1] ^= 1; // the content checksum
        let e = unzstd(&bad).unwrap_err();
        assert!(e.to_string().starts_with("corrupt zstd data"), "{e}");
        assert!(e.to_string().contains("checksum"), "{e}");
        let mut trailing = z.clone();
        trailing.extend_from_slice(b"garbage!");
        assert!(unzstd(&trailing).is_err());
        let mut zeros = z.clone();
        zeros.extend_from_slice(&[0; 16]);
        assert!(unzstd(&zeros).is_err());
        assert!(unzstd(b"\x1f\x8b\x08\x00 a gzip header").is_err());
        // Flipping bits inside the frame must never panic and must fail somewhere.
        for i in (4..n).step_by(89) {
            let mut bad = z.clone();
            bad[i] ^= 0x55;
            assert!(unzstd(&bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn oversized_window_is_refused() {
        // Frame header by hand: magic, descriptor 0 (no content size, no checksum, not
        // single-segment), window descriptor 0x88: exponent 17 → 2^(10+17) = 128 MiB, mantissa 0.
        let mut ok = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x88];
        ok.extend_from_slice(&[0x01, 0x00, 0x00]); // last raw block, 0 bytes
        assert_eq!(unzstd(&ok).unwrap(), b"");
        // Exponent 18: 256 MiB, refused before any allocation.
        let mut big = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x90];
        big.extend_from_slice(&[0x01, 0x00, 0x00]);
        let e = unzstd(&big).unwrap_err();
        assert_eq!(
            e.to_string(),
            "corrupt zstd data: a frame asks for a window over 128 MiB, more than barge allows"
        );
        // And the CLI's long mode with a 256 MiB window says so too.
        let z = zstd_cli(&["--long=28", "-1"], &sample(1000));
        assert!(unzstd(&z).unwrap_err().to_string().contains("128 MiB"));
    }

    /// Throughput check against `zstd -dc` (run with `--ignored --nocapture` in release).
    #[test]
    #[ignore]
    fn bench_unzstd() {
        use std::time::Instant;
        let path = std::env::var("BARGE_ZSTD_BENCH").unwrap_or("/tmp/barge-bench.zst".into());
        let z = std::fs::read(&path).expect("set BARGE_ZSTD_BENCH to a .zst file");
        let t = Instant::now();
        let mut r = ZstdReader::new(&z[..]).unwrap();
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
            "unzstd {total} bytes in {s:.3}s: {:.0} MB/s",
            total as f64 / s / 1e6
        );
    }
}
