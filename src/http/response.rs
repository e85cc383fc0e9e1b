//! Response heads: bounded parsing of the status line and header fields, and the body framing they imply.
//!
//! Limits: the whole head is at most 64 KiB with at most 128 header fields.
//! Obsolete line folding is joined onto the previous value.

use std::io::{self, BufRead};

use super::conn::io_error;
use crate::error::{Error, Kind, Result};

/// Maximum size of a response head (status line and header fields).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Maximum number of header fields in a head (or in chunked trailers).
pub(crate) const MAX_HEADERS: usize = 128;

/// A parsed status line and header fields.
#[derive(Debug)]
pub(crate) struct Head {
    /// Minor version of `HTTP/1.x`.
    pub minor: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// First value of a header, by case-insensitive name.
    #[cfg(test)]
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }

    /// Whether the connection may carry another request after this response.
    pub fn keep_alive(&self) -> bool {
        let tokens = || {
            find_header(&self.headers, "connection")
                .flat_map(|v| v.split(','))
                .map(str::trim)
        };
        if tokens().any(|t| t.eq_ignore_ascii_case("close")) {
            return false;
        }
        self.minor >= 1 || tokens().any(|t| t.eq_ignore_ascii_case("keep-alive"))
    }
}

/// First value of a header, by case-insensitive name.
pub(crate) fn first_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// All values of a header, by case-insensitive name, in order.
pub(crate) fn find_header<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Why reading a head failed; `Nothing` means not a single byte arrived.
#[derive(Debug)]
pub(crate) enum HeadError {
    Nothing(Error),
    Partial(Error),
}

impl HeadError {
    /// The error, whichever way it happened.
    pub fn into_error(self) -> Error {
        match self {
            HeadError::Nothing(e) | HeadError::Partial(e) => e,
        }
    }
}

/// Reads and parses one response head.
pub(crate) fn read_head<R: BufRead>(r: &mut R) -> Result<Head, HeadError> {
    let mut budget = MAX_HEAD;
    let mut line = Vec::new();
    match read_line(r, &mut line, budget) {
        Ok(true) => {}
        Ok(false) if line.is_empty() => {
            return Err(HeadError::Nothing(Error::with_kind(
                Kind::Transient,
                "connection closed before a response arrived",
            )))
        }
        Ok(false) => return Err(HeadError::Partial(truncated_head())),
        Err(e) if line.is_empty() => return Err(HeadError::Nothing(e)),
        Err(e) => return Err(HeadError::Partial(e)),
    }
    budget = budget.saturating_sub(line.len());
    let (minor, status, reason) = parse_status_line(&line).map_err(HeadError::Partial)?;
    let headers = read_fields(r, &mut budget).map_err(HeadError::Partial)?;
    Ok(Head {
        minor,
        status,
        reason,
        headers,
    })
}

/// Reads header fields up to the empty line, within `budget` bytes and [`MAX_HEADERS`] fields.
pub(crate) fn read_fields<R: BufRead>(
    r: &mut R,
    budget: &mut usize,
) -> Result<Vec<(String, String)>> {
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let mut line = Vec::new();
        if !read_line(r, &mut line, *budget)? {
            return Err(truncated_head());
        }
        *budget = budget.saturating_sub(line.len());
        if line.is_empty() {
            return Ok(headers);
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            let Some(last) = headers.last_mut() else {
                return Err(malformed("continuation line before any header"));
            };
            last.1.push(' ');
            last.1.push_str(String::from_utf8_lossy(&line).trim());
            continue;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(malformed(&format!("more than {MAX_HEADERS} header fields")));
        }
        headers.push(parse_field(&line)?);
    }
}

/// Reads one line (without CR/LF) into `line`; returns false on EOF before the newline.
///
/// Errors when the line would exceed `max` bytes.
pub(crate) fn read_line<R: BufRead>(r: &mut R, line: &mut Vec<u8>, max: usize) -> Result<bool> {
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !crate::signal::interrupted() => {
                continue
            }
            Err(e) => return Err(io_error(e)),
        };
        if buf.is_empty() {
            return Ok(false);
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max.saturating_add(2) {
            return Err(malformed(&format!("line longer than {max} bytes")));
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(true);
        }
    }
}

/// Parses `HTTP/1.x SSS reason`.
fn parse_status_line(line: &[u8]) -> Result<(u8, u16, String)> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => {
            return Err(malformed(&format!(
                "not an HTTP/1.x status line: {:.40?}",
                text
            )))
        }
    };
    let code = parts.next().unwrap_or("");
    let status = match code.parse::<u16>() {
        Ok(s) if code.len() == 3 && (100..1000).contains(&s) => s,
        _ => return Err(malformed(&format!("bad status code {code:.10?}"))),
    };
    let reason = parts.next().unwrap_or("").trim().to_string();
    Ok((minor, status, reason))
}

/// Parses `Name: value`.
fn parse_field(line: &[u8]) -> Result<(String, String)> {
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        return Err(malformed("header line without ':'"));
    };
    let (name, value) = line.split_at(colon);
    let valid_name = !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(b));
    if !valid_name {
        return Err(malformed("invalid header name"));
    }
    let value = String::from_utf8_lossy(value.get(1..).unwrap_or(&[]));
    Ok((
        String::from_utf8_lossy(name).into_owned(),
        value.trim_matches([' ', '\t']).to_string(),
    ))
}

/// Error for a head cut off by the connection closing.
fn truncated_head() -> Error {
    Error::with_kind(
        Kind::Transient,
        "connection closed in the middle of the response head",
    )
}

/// Error for a response that is not valid HTTP.
pub(crate) fn malformed(why: &str) -> Error {
    Error::new(format!("malformed HTTP response: {why}"))
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the server closes the connection.
    Close,
}

/// The body framing of a response to `method` (RFC 9112 section 6.3).
pub(crate) fn framing(head: &Head, method: &str) -> Result<Framing> {
    if method.eq_ignore_ascii_case("HEAD") || matches!(head.status, 100..=199 | 204 | 304) {
        return Ok(Framing::Empty);
    }
    let codings: Vec<&str> = find_header(&head.headers, "transfer-encoding")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if let Some(last) = codings.last() {
        return Ok(if last.eq_ignore_ascii_case("chunked") {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    let mut length = None;
    for value in find_header(&head.headers, "content-length").flat_map(|v| v.split(',')) {
        let value = value.trim();
        let n = value
            .parse::<u64>()
            .ok()
            .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| malformed(&format!("bad Content-Length {value:.30?}")))?;
        if length.is_some_and(|l| l != n) {
            return Err(malformed("conflicting Content-Length values"));
        }
        length = Some(n);
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Head, HeadError> {
        read_head(&mut io::Cursor::new(text.as_bytes().to_vec()))
    }

    #[test]
    fn parses_head() {
        let h =
            parse("HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nX:  y \r\n folded\r\n\r\nbody").unwrap();
        assert_eq!((h.minor, h.status, h.reason.as_str()), (1, 200, "OK"));
        assert_eq!(h.header("content-type"), Some("a/b"));
        assert_eq!(h.header("x"), Some("y folded"));
        assert!(h.keep_alive());
        let h = parse("HTTP/1.0 404\n\n").unwrap();
        assert_eq!((h.status, h.reason.as_str()), (404, ""));
        assert!(!h.keep_alive());
    }

    #[test]
    fn rejects_bad_heads() {
        for t in [
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nA: b\r\n",
        ] {
            assert!(matches!(parse(t), Err(HeadError::Partial(_))), "{t:?}");
        }
        assert!(matches!(parse(""), Err(HeadError::Nothing(_))));
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(parse(&many).is_err());
        let big = format!("HTTP/1.1 200 OK\r\nA: {}\r\n\r\n", "x".repeat(MAX_HEAD));
        assert!(parse(&big).is_err());
    }

    #[test]
    fn framing_rules() {
        let head = |h: &str| parse(&format!("HTTP/1.1 200 OK\r\n{h}\r\n")).unwrap();
        assert_eq!(
            framing(&head("Content-Length: 5\r\n"), "GET").unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            framing(&head("Content-Length: 5\r\n"), "HEAD").unwrap(),
            Framing::Empty
        );
        assert_eq!(
            framing(
                &head("Transfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n"),
                "GET"
            )
            .unwrap(),
            Framing::Chunked
        );
        assert_eq!(
            framing(&head("Transfer-Encoding: gzip\r\n"), "GET").unwrap(),
            Framing::Close
        );
        assert_eq!(framing(&head(""), "GET").unwrap(), Framing::Close);
        assert_eq!(
            framing(&head("Content-Length: 5\r\nContent-Length: 5\r\n"), "GET").unwrap(),
            Framing::Length(5)
        );
        assert!(framing(&head("Content-Length: 5, 6\r\n"), "GET").is_err());
        assert!(framing(&head("Content-Length: -5\r\n"), "GET").is_err());
        assert!(framing(&head("Content-Length: +5\r\n"), "GET").is_err());
    }
}
