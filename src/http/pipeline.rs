//! HTTP/1.1 pipelining: several small requests to one origin written in one
//! flight on one keep-alive connection, their answers read back in order, each
//! body read into memory (bounded). A connection that the server closes after
//! some of the answers (or that answers `Connection: close`) costs no request:
//! the ones left unanswered go out again on a new connection. Only requests
//! that may be sent twice belong here (HEAD, GET, mount POSTs, session POSTs);
//! streamed bodies never do.

use std::io::{Read, Write};
use std::time::Instant;

use super::body::BodyReader;
use super::conn::{io_error, Conn};
use super::proxy::{proxy_for, Proxy};
use super::request::{content_length, head_bytes, HeadSpec};
use super::response::{framing, HeadError};
use super::{read_final_head, Body, Client, Request, Response};
use crate::error::{Error, Result};

/// The largest body of a pipelined answer kept in memory (registry error texts, tokens).
const MAX_PIPELINED_BODY: u64 = 1 << 20;

/// Most requests in one flight (a server's pipelining queue is not endless).
pub const MAX_FLIGHT: usize = 64;

impl Client {
    /// Sends `reqs` (all to the same origin, none streamed) pipelined on one
    /// connection and returns their responses in order, bodies read into memory.
    pub fn send_all(&mut self, reqs: &[Request<'_>]) -> Result<Vec<Response>> {
        let mut out = Vec::with_capacity(reqs.len());
        let Some(first) = reqs.first() else {
            return Ok(out);
        };
        if reqs.iter().any(|r| matches!(r.body, Body::Stream { .. })) {
            return Err(Error::new(
                "internal error: a streamed body cannot be pipelined",
            ));
        }
        let proxy = proxy_for(&self.proxies, first.url)?;
        if first.url.https && self.tls.is_none() {
            self.tls = Some(super::tls::build_config(&self.opts.extra_ca_files)?);
        }
        let mut stale_retried = false;
        while out.len() < reqs.len() {
            let rest = &reqs[out.len()..];
            let n = rest.len().min(MAX_FLIGHT);
            let conn = self.connection(rest[0].url, proxy.as_ref(), rest[0].deadline)?;
            let reused = conn.reused;
            let before = out.len();
            let ended = self.flight(conn, &rest[..n], proxy.as_ref(), &mut out);
            match ended {
                Ok(()) => {}
                // Some answers came: the rest go out again on a new connection.
                Err(_) if out.len() > before => {}
                // A pooled connection the server had closed meanwhile: once more.
                Err(_) if reused && !stale_retried => stale_retried = true,
                Err(e) => {
                    let what = format!("{} {}", rest[0].method, rest[0].url.without_query());
                    return Err(e.context(what));
                }
            }
        }
        Ok(out)
    }

    /// One flight on `conn`: all heads written, then answers read until all came,
    /// the server says it closes, or the connection ends (`Err`).
    fn flight(
        &self,
        mut conn: Conn,
        reqs: &[Request<'_>],
        proxy: Option<&Proxy>,
        out: &mut Vec<Response>,
    ) -> Result<()> {
        let mut bytes = Vec::new();
        for req in reqs {
            bytes.extend(wire_bytes(req, proxy)?);
        }
        conn.pace().restart(earliest(reqs));
        let wrote = conn
            .io
            .get_mut()
            .write_all(&bytes)
            .and_then(|()| conn.io.get_mut().flush());
        for req in reqs {
            let head = match read_final_head(&mut conn) {
                Ok(h) => h,
                Err(HeadError::Nothing(e)) => {
                    return Err(wrote
                        .err()
                        .map_or(e, |w| io_error(w).context("sending requests")))
                }
                Err(HeadError::Partial(e)) => return Err(e.context("reading response")),
            };
            let framing = framing(&head, req.method)?;
            let keep_alive = head.keep_alive();
            let mut body = BodyReader::held(framing, conn, keep_alive);
            let mut kept = Vec::new();
            (&mut body)
                .take(MAX_PIPELINED_BODY + 1)
                .read_to_end(&mut kept)?;
            if kept.len() as u64 > MAX_PIPELINED_BODY {
                return Err(Error::new(format!(
                    "a pipelined response body is larger than {MAX_PIPELINED_BODY} bytes"
                )));
            }
            out.push(Response {
                status: head.status,
                reason: head.reason,
                headers: head.headers,
                body: BodyReader::memory(kept),
            });
            conn = match body.into_conn() {
                Some(c) => c,
                None => return Ok(()),
            };
        }
        if conn.io.buffer().is_empty() {
            self.pool.put(conn);
        }
        Ok(())
    }
}

/// The request as it goes on the wire: head, and the small body right after it.
fn wire_bytes(req: &Request<'_>, proxy: Option<&Proxy>) -> Result<Vec<u8>> {
    let spec = HeadSpec {
        method: req.method,
        url: req.url,
        headers: &req.headers,
        content_length: content_length(req.method, req.body.len()),
        http_proxy: proxy.filter(|_| !req.url.https),
    };
    let mut bytes = head_bytes(&spec)?;
    if let Body::Bytes(b) = req.body {
        bytes.extend_from_slice(b);
    }
    Ok(bytes)
}

/// The earliest deadline of a flight's requests.
fn earliest(reqs: &[Request<'_>]) -> Option<Instant> {
    reqs.iter().filter_map(|r| r.deadline).min()
}
