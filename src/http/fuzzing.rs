//! The fuzz entry point for response heads and bodies (feature `fuzzing`): the bytes
//! come from a connection exactly as the client reads them.
//!
//! The "connection" is one end of a Unix socket pair holding the input, wrapped as the
//! `TcpStream` that [`Conn`] expects (reads are plain `recv`s, which a Unix socket
//! answers the same way), so the head and body parsers run unchanged.

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;

use super::body::BodyReader;
use super::conn::{Conn, ConnKey, Pool, Stream};
use super::read_final_head;
use super::response::{framing, Framing};

/// Stop reading a body after this much (a close-delimited body can be any length).
const BODY_LIMIT: u64 = 1 << 20;

/// Reads a response from `data`. The first byte picks what to read: 0 a response to
/// GET, 1 a response to HEAD, 2 (and the rest) a chunked body without a head.
pub fn response(data: &[u8]) {
    let Some((&pick, wire)) = data.split_first() else {
        return;
    };
    let Some(mut conn) = connection(wire) else {
        return;
    };
    let (framing, keep_alive) = match pick % 3 {
        2 => (Framing::Chunked, true),
        method => {
            let Ok(head) = read_final_head(&mut conn) else {
                return;
            };
            let method = if method == 0 { "GET" } else { "HEAD" };
            let Ok(framing) = framing(&head, method) else {
                return;
            };
            (framing, head.keep_alive())
        }
    };
    let mut body = BodyReader::new(framing, conn, Pool::default(), keep_alive);
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    while total < BODY_LIMIT {
        match body.read(&mut buf) {
            Ok(0) => {
                assert!(body.is_done(), "end of body reported before its end");
                return;
            }
            Ok(n) => total += n as u64,
            Err(_) => return,
        }
    }
}

/// A connection whose peer sent `wire` and then closed its side.
fn connection(wire: &[u8]) -> Option<Conn> {
    let (ours, mut theirs) = UnixStream::pair().ok()?;
    // Inputs are small (libFuzzer's -max_len): the socket buffer holds them whole.
    theirs.write_all(wire).ok()?;
    theirs.shutdown(Shutdown::Write).ok()?;
    let tcp = unsafe { TcpStream::from_raw_fd(ours.into_raw_fd()) };
    Some(Conn {
        io: BufReader::new(Stream::Plain(tcp)),
        key: ConnKey {
            https: false,
            host: "fuzz".to_string(),
            port: 80,
            proxy: None,
        },
        reused: false,
    })
}
