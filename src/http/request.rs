//! Request writing: the request head and the body, streamed in bounded buffers.

use std::io::{self, Read, Write};

use super::proxy::Proxy;
use super::url::Url;
use super::USER_AGENT;
use crate::error::{Error, Result};

/// Size of the buffer a streamed body is copied through.
const STREAM_BUFFER: usize = 64 * 1024;

/// Headers the client always writes itself; caller-supplied copies are ignored.
const OWN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "proxy-authorization",
];

/// Everything needed to write the request head.
pub(crate) struct HeadSpec<'a> {
    pub method: &'a str,
    pub url: &'a Url,
    pub headers: &'a [(String, String)],
    /// Length of the body, or `None` to send no Content-Length.
    pub content_length: Option<u64>,
    /// Set when talking to a plain-http proxy: absolute-form target and its credentials.
    pub http_proxy: Option<&'a Proxy>,
}

/// The Content-Length to send for a body of `len` bytes (`None` for no body at all).
pub(crate) fn content_length(method: &str, len: Option<u64>) -> Option<u64> {
    match len {
        Some(n) => Some(n),
        None if ["POST", "PUT", "PATCH"]
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method)) =>
        {
            Some(0)
        }
        None => None,
    }
}

/// Serialises the request line and header fields, validating everything that goes on the wire.
pub(crate) fn head_bytes(spec: &HeadSpec<'_>) -> Result<Vec<u8>> {
    if !is_token(spec.method) {
        return Err(Error::new(format!("invalid HTTP method {:?}", spec.method)));
    }
    let target = match spec.http_proxy {
        Some(_) => spec.url.to_string(),
        None => spec.url.path.clone(),
    };
    let mut out = format!("{} {target} HTTP/1.1\r\n", spec.method);
    push_field(&mut out, "Host", &spec.url.host_port_header());
    let has = |name: &str| {
        spec.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    if !has("user-agent") {
        push_field(&mut out, "User-Agent", USER_AGENT);
    }
    if !has("connection") {
        push_field(&mut out, "Connection", "keep-alive");
    }
    if let Some(auth) = spec.http_proxy.and_then(|p| p.authorization.as_deref()) {
        push_field(&mut out, "Proxy-Authorization", auth);
    }
    for (name, value) in spec.headers {
        if OWN_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            continue;
        }
        if !is_token(name) || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            // The value is not echoed: it may be a credential.
            return Err(Error::new(format!("invalid HTTP header {name:.40?}")));
        }
        push_field(&mut out, name, value);
    }
    if let Some(len) = spec.content_length {
        push_field(&mut out, "Content-Length", &len.to_string());
    }
    out.push_str("\r\n");
    Ok(out.into_bytes())
}

/// Appends `Name: value\r\n`.
fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("\r\n");
}

/// RFC 9110 token characters (method and header names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Why streaming a body stopped early.
pub(crate) enum StreamError {
    /// The caller's reader failed or ended before the announced length.
    Source(Error),
    /// Writing to the connection failed (the server may have answered already).
    Sink(io::Error),
}

/// Copies exactly `len` bytes from `reader` to `w` through a bounded buffer.
pub(crate) fn stream_body(
    w: &mut dyn Write,
    reader: &mut dyn Read,
    len: u64,
) -> Result<(), StreamError> {
    let mut buf = vec![
        0u8;
        STREAM_BUFFER
            .min(usize::try_from(len).unwrap_or(STREAM_BUFFER))
            .max(1)
    ];
    let mut sent = 0u64;
    while sent < len {
        let want = usize::try_from(len - sent)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(StreamError::Source(Error::new(format!(
                    "request body ended after {sent} of {len} bytes"
                ))))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !crate::signal::interrupted() => {
                continue
            }
            Err(e) => {
                return Err(StreamError::Source(
                    Error::from(e).context("reading request body"),
                ))
            }
        };
        w.write_all(&buf[..n]).map_err(StreamError::Sink)?;
        sent += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, url: &str, headers: &[(&str, &str)], len: Option<u64>) -> Result<String> {
        let url = Url::parse(url).unwrap();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let spec = HeadSpec {
            method,
            url: &url,
            headers: &headers,
            content_length: content_length(method, len),
            http_proxy: None,
        };
        head_bytes(&spec).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn writes_head() {
        let h = head("GET", "http://h:5000/v2/?a=b", &[("Accept", "x/y")], None).unwrap();
        assert_eq!(
            h,
            format!(
                "GET /v2/?a=b HTTP/1.1\r\nHost: h:5000\r\nUser-Agent: {USER_AGENT}\r\n\
                 Connection: keep-alive\r\nAccept: x/y\r\n\r\n"
            )
        );
        let h = head(
            "POST",
            "https://h/",
            &[("Host", "evil"), ("Content-Length", "9")],
            None,
        )
        .unwrap();
        assert!(
            h.contains("Host: h\r\n") && h.ends_with("Content-Length: 0\r\n\r\n"),
            "{h}"
        );
        assert!(!h.contains("evil") && !h.contains(": 9"));
        let h = head("PUT", "https://h/", &[], Some(12)).unwrap();
        assert!(h.contains("Content-Length: 12\r\n"));
        let h = head("HEAD", "https://h/", &[], None).unwrap();
        assert!(!h.contains("Content-Length"));
    }

    #[test]
    fn rejects_injection_without_echoing_values() {
        let e = head(
            "GET",
            "http://h/",
            &[("Authorization", "Bearer s3cret\r\nX: y")],
            None,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("s3cret"));
        assert!(head("GET", "http://h/", &[("Bad Name", "v")], None).is_err());
        assert!(head("GE T", "http://h/", &[], None).is_err());
    }

    #[test]
    fn stream_body_checks_length() {
        let data = vec![7u8; 200_000];
        let mut out = Vec::new();
        assert!(stream_body(&mut out, &mut &data[..], 200_000).is_ok());
        assert_eq!(out, data);
        let mut out = Vec::new();
        let short = stream_body(&mut out, &mut &data[..10], 20);
        assert!(matches!(short, Err(StreamError::Source(e)) if e.to_string().contains("10 of 20")));
        let mut out = Vec::new();
        assert!(stream_body(&mut out, &mut &data[..], 5).is_ok());
        assert_eq!(out.len(), 5);
    }
}
