//! Response body decoding: Content-Length, chunked (trailers skipped) or until close.
//!
//! The reader never reads past the end of the body, so the connection can be
//! handed back to the pool as soon as the last byte has been delivered.

use std::io::{self, Read};

use super::conn::{io_error, Conn, Pool};
use super::response::{malformed, read_fields, read_line, Framing, MAX_HEAD};
use crate::error::{Error, Kind, Result};

/// Maximum length of a chunk-size line (size plus extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// Where the decoder is within the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `remaining` of `total` bytes left.
    Length { remaining: u64, total: u64 },
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk with this many bytes left.
    ChunkData(u64),
    /// Expecting the CRLF after chunk data.
    ChunkEnd,
    /// Reading until the connection closes.
    Close,
    /// The whole body has been delivered.
    Done,
    /// A previous read failed; the connection is gone.
    Failed,
}

/// Decodes one response body from a connection, returning the connection to the pool at the end.
pub(crate) struct BodyReader {
    state: State,
    conn: Option<Conn>,
    pool: Pool,
    /// Whether the connection may be reused once the body is complete.
    reusable: bool,
    /// Bytes delivered so far (for messages).
    delivered: u64,
    /// Keep the connection at the end instead of pooling it (pipelining: the
    /// next response is already on its way on it).
    hold: bool,
    /// A body read into memory beforehand (a pipelined response); no connection.
    mem: Option<io::Cursor<Vec<u8>>>,
}

impl BodyReader {
    /// A reader for a body framed as `framing` on `conn`.
    pub fn new(framing: Framing, conn: Conn, pool: Pool, keep_alive: bool) -> BodyReader {
        BodyReader::build(framing, conn, pool, keep_alive, false)
    }

    /// Like [`BodyReader::new`], but the connection stays with the reader at the
    /// end ([`BodyReader::into_conn`]) instead of going to the pool.
    pub fn held(framing: Framing, conn: Conn, keep_alive: bool) -> BodyReader {
        BodyReader::build(framing, conn, Pool::default(), keep_alive, true)
    }

    fn build(framing: Framing, conn: Conn, pool: Pool, keep_alive: bool, hold: bool) -> BodyReader {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length {
                remaining: n,
                total: n,
            },
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        let mut reader = BodyReader {
            state,
            conn: Some(conn),
            pool,
            reusable: keep_alive && framing != Framing::Close,
            delivered: 0,
            hold,
            mem: None,
        };
        if reader.state == State::Done {
            reader.finish();
        }
        reader
    }

    /// A body already read into memory.
    pub fn memory(bytes: Vec<u8>) -> BodyReader {
        BodyReader {
            state: State::Done,
            conn: None,
            pool: Pool::default(),
            reusable: false,
            delivered: 0,
            hold: false,
            mem: Some(io::Cursor::new(bytes)),
        }
    }

    /// The connection of a held body read to its end, if it can carry another request.
    pub fn into_conn(mut self) -> Option<Conn> {
        (self.state == State::Done && self.reusable)
            .then(|| self.conn.take())
            .flatten()
    }

    /// True once the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
            && self
                .mem
                .as_ref()
                .map_or(true, |m| m.position() >= m.get_ref().len() as u64)
    }

    /// Marks the body complete and gives the connection back if it can carry another request.
    fn finish(&mut self) {
        self.state = State::Done;
        if self.hold {
            if !self.reusable {
                self.conn = None;
            }
            return;
        }
        if let Some(conn) = self.conn.take() {
            if self.reusable && conn.io.buffer().is_empty() {
                self.pool.put(conn);
            }
        }
    }

    /// Reads decoded body bytes; 0 means the body is complete.
    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(m) = &mut self.mem {
            return Ok(m.read(buf)?);
        }
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Failed => {
                    return Err(Error::new(
                        "response body is unreadable after an earlier error",
                    ))
                }
                State::Length { remaining, total } => {
                    return self.read_length(buf, remaining, total)
                }
                State::Close => return self.read_close(buf),
                State::ChunkData(left) => return self.read_chunk_data(buf, left),
                State::ChunkSize => self.read_chunk_size()?,
                State::ChunkEnd => self.read_chunk_end()?,
            }
        }
    }

    /// The connection, which exists in every state that reads.
    fn conn(&mut self) -> Result<&mut Conn> {
        self.conn
            .as_mut()
            .ok_or_else(|| Error::new("response body has no connection"))
    }

    /// Reads raw bytes from the connection into at most `max` bytes of `buf`.
    fn read_raw(&mut self, buf: &mut [u8], max: u64) -> io::Result<usize> {
        let n = usize::try_from(max).unwrap_or(usize::MAX).min(buf.len());
        let conn = self.conn().map_err(io::Error::from)?;
        loop {
            match conn.io.read(&mut buf[..n]) {
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted && !crate::signal::interrupted() =>
                {
                    continue
                }
                other => return other,
            }
        }
    }

    /// Content-Length framing: never reads beyond the declared length.
    fn read_length(&mut self, buf: &mut [u8], remaining: u64, total: u64) -> Result<usize> {
        let n = match self.read_raw(buf, remaining) {
            Ok(0) => return Err(short_body(total - remaining, total)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(short_body(total - remaining, total))
            }
            Err(e) => return Err(io_error(e)),
            Ok(n) => n,
        };
        let remaining = remaining - n as u64;
        self.delivered += n as u64;
        self.state = State::Length { remaining, total };
        if remaining == 0 {
            self.finish();
        }
        Ok(n)
    }

    /// Close-delimited framing: a clean close ends the body; a TLS close without close_notify does not.
    fn read_close(&mut self, buf: &mut [u8]) -> Result<usize> {
        match self.read_raw(buf, u64::MAX) {
            Ok(0) => {
                self.finish();
                Ok(0)
            }
            Ok(n) => {
                self.delivered += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Error::with_kind(
                Kind::Transient,
                format!(
                    "connection closed without TLS close_notify after {} bytes; the body may be truncated",
                    self.delivered
                ),
            )),
            Err(e) => Err(io_error(e)),
        }
    }

    /// Parses a chunk-size line; a zero size skips the trailers and ends the body.
    fn read_chunk_size(&mut self) -> Result<()> {
        let mut line = Vec::new();
        let conn = self.conn()?;
        if !read_line(&mut conn.io, &mut line, MAX_CHUNK_LINE).map_err(eof_is_short)? {
            return Err(short_chunked());
        }
        let size = parse_chunk_size(&line)?;
        if size > 0 {
            self.state = State::ChunkData(size);
            return Ok(());
        }
        let mut budget = MAX_HEAD;
        let conn = self.conn()?;
        read_fields(&mut conn.io, &mut budget).map_err(eof_is_short)?;
        self.finish();
        Ok(())
    }

    /// Delivers bytes of the current chunk.
    fn read_chunk_data(&mut self, buf: &mut [u8], left: u64) -> Result<usize> {
        let n = match self.read_raw(buf, left) {
            Ok(0) => return Err(short_chunked()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(short_chunked()),
            Err(e) => return Err(io_error(e)),
            Ok(n) => n,
        };
        let left = left - n as u64;
        self.delivered += n as u64;
        self.state = if left == 0 {
            State::ChunkEnd
        } else {
            State::ChunkData(left)
        };
        Ok(n)
    }

    /// Consumes the CRLF that ends chunk data.
    fn read_chunk_end(&mut self) -> Result<()> {
        let mut line = Vec::new();
        let conn = self.conn()?;
        if !read_line(&mut conn.io, &mut line, 0).map_err(eof_is_short)? {
            return Err(short_chunked());
        }
        if !line.is_empty() {
            return Err(malformed("chunk data longer than its size"));
        }
        self.state = State::ChunkSize;
        Ok(())
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.read_body(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                self.state = State::Failed;
                self.conn = None;
                Err(e.into())
            }
        }
    }
}

/// Parses the hexadecimal size at the start of a chunk-size line (extensions ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64> {
    let text = String::from_utf8_lossy(line);
    let hex = text.split(';').next().unwrap_or("").trim();
    if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed(&format!("bad chunk size {hex:.20?}")));
    }
    u64::from_str_radix(hex, 16).map_err(|_| malformed("bad chunk size"))
}

/// Error for a Content-Length body cut short.
fn short_body(got: u64, total: u64) -> Error {
    Error::with_kind(
        Kind::Transient,
        format!("connection closed after {got} of {total} bytes"),
    )
}

/// Error for a chunked body cut short.
fn short_chunked() -> Error {
    Error::with_kind(
        Kind::Transient,
        "connection closed in the middle of a chunked body",
    )
}

/// Maps an unexpected-EOF error (e.g. TLS without close_notify) inside a chunked body to [`short_chunked`].
fn eof_is_short(e: Error) -> Error {
    if e.kind() == Kind::Transient && e.message() == "connection closed unexpectedly" {
        short_chunked()
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"0;ext=1").unwrap(), 0);
        assert_eq!(parse_chunk_size(b"FFFFFFFFFFFFFFFF").unwrap(), u64::MAX);
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"x1").is_err());
        assert!(parse_chunk_size(b"10000000000000000").is_err());
        assert!(parse_chunk_size(b"-1").is_err());
    }
}
