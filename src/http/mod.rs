//! A small blocking HTTP/1.1 client over TCP and rustls: exactly what the registry conversation needs, with streaming bodies both ways.
//!
//! Transport only: the registry layer above decides schemes, authentication
//! headers and redirects. This module connects (directly or through an
//! `HTTP(S)_PROXY`), speaks TLS with bundled + system + user-supplied roots,
//! writes requests (streaming upload bodies in bounded buffers), parses
//! responses with size limits, decodes bodies and keeps one idle connection
//! per origin for reuse. It never prints and never puts header values into
//! error messages.
//!
//! We do not use an off-the-shelf client (minreq): its TLS configuration is a
//! fixed static that cannot trust a private CA (`--ca-cert`, `SSL_CERT_FILE`)
//! together with the bundled roots, it forces aws-lc-rs to be compiled, and it
//! only takes request bodies as a whole `Vec`.

mod base64;
mod body;
mod conn;
mod flow;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod pace;
mod pipeline;
mod proxy;
mod request;
mod response;
mod tls;
mod url;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

// Used by the registry layer (Basic credentials, tokens).
#[allow(unused_imports)]
pub use self::base64::{base64_decode, base64_encode};
pub use self::flow::{poll_flows, FileRange, Flow, FlowConfig, FlowState, IdleConn};
pub use self::pace::LowSpeed;
pub use self::proxy::ProxyEnv;
pub use self::url::Url;

use self::body::BodyReader;
use self::conn::{io_error, Conn, ConnKey, Dial, Pool};
use self::proxy::{proxy_for, Proxy};
use self::request::{content_length, head_bytes, stream_body, HeadSpec, StreamError};
use self::response::{find_header, first_header, framing, read_head, Head, HeadError};
use crate::error::{Error, Result};

/// The `User-Agent` sent with every request.
pub const USER_AGENT: &str = concat!("barge/", env!("CARGO_PKG_VERSION"));

/// Bodies up to this size are sent in the same write as the head.
const COALESCE_LIMIT: usize = 64 * 1024;

/// How much of an unwanted body [`Response::discard`] reads to keep the connection.
const DISCARD_LIMIT: u64 = 1024 * 1024;

/// How many interim (1xx) responses are skipped before giving up.
const MAX_INTERIM: usize = 16;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Extra PEM files with CA certificates to trust (in addition to the usual roots).
    pub extra_ca_files: Vec<PathBuf>,
    /// Time allowed for each TCP connect attempt (zero: the system default).
    pub connect_timeout: Duration,
    /// A connection that moves no byte at all for this long is dropped (zero: never).
    pub io_timeout: Duration,
    /// The low-speed rule applied to each request: head, body, both ways.
    pub low_speed: LowSpeed,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            extra_ca_files: Vec::new(),
            connect_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(120),
            low_speed: LowSpeed::DEFAULT,
        }
    }
}

/// One HTTP request.
pub struct Request<'a> {
    /// `GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE`, ...
    pub method: &'a str,
    pub url: &'a Url,
    /// Extra header fields. `Host`, `Content-Length` and `Transfer-Encoding` are always set
    /// by the client; `User-Agent` and `Connection` are defaults that these override.
    pub headers: Vec<(String, String)>,
    pub body: Body<'a>,
    /// When the logical transfer this request belongs to runs out of time: an
    /// attempt that has not moved a low-speed window's worth of bytes by then is
    /// stopped (`None`: no deadline).
    pub deadline: Option<Instant>,
}

/// A request body.
pub enum Body<'a> {
    /// No body (`Content-Length: 0` for POST/PUT/PATCH, nothing otherwise).
    Empty,
    /// A body held in memory.
    Bytes(&'a [u8]),
    /// A body of exactly `len` bytes read from `reader` while sending.
    Stream { reader: &'a mut dyn Read, len: u64 },
}

impl Body<'_> {
    /// The body length, `None` for [`Body::Empty`].
    fn len(&self) -> Option<u64> {
        match self {
            Body::Empty => None,
            Body::Bytes(b) => Some(b.len() as u64),
            Body::Stream { len, .. } => Some(*len),
        }
    }
}

/// A blocking HTTP/1.1 client with one idle keep-alive connection per origin.
pub struct Client {
    opts: Options,
    proxies: ProxyEnv,
    tls: Option<Arc<rustls::ClientConfig>>,
    pool: Pool,
}

/// How one attempt at a request failed.
enum Failure {
    /// A reused connection died before any response byte: safe to try again on a new one.
    Stale(Error),
    /// Anything else.
    Fatal(Error),
}

impl Client {
    /// A client using the proxy settings from the environment.
    pub fn new(opts: Options) -> Result<Client> {
        Ok(Client::with_proxy_env(opts, ProxyEnv::from_env()))
    }

    /// A client with explicit proxy settings (the environment is not read).
    pub fn with_proxy_env(opts: Options, proxies: ProxyEnv) -> Client {
        Client {
            opts,
            proxies,
            tls: None,
            pool: Pool::default(),
        }
    }

    /// What [`Flow`]s to `url` need, or `None` when a proxy stands in the way
    /// (flows go direct only).
    pub fn flow_config(&mut self, url: &Url) -> Result<Option<FlowConfig>> {
        if proxy_for(&self.proxies, url)?.is_some() {
            return Ok(None);
        }
        if url.https && self.tls.is_none() {
            self.tls = Some(tls::build_config(&self.opts.extra_ca_files)?);
        }
        Ok(Some(FlowConfig {
            tls: self.tls.clone(),
            connect_timeout: self.opts.connect_timeout,
            idle_limit: self.opts.io_timeout,
            low_speed: self.opts.low_speed,
        }))
    }

    /// The idle keep-alive connection to `url`'s origin, for a [`Flow`] to carry on
    /// with ([`Flow::adopt`]: no new connection's round trips), if there is one.
    pub fn take_idle(&mut self, url: &Url) -> Option<IdleConn> {
        let conn = self.pool.take(&ConnKey::new(url, None))?;
        let (tcp, tls) = conn.into_parts()?;
        Some(IdleConn {
            origin: url.origin(),
            tcp,
            tls,
        })
    }

    /// Sends a request and returns the response once its head has arrived.
    ///
    /// Any status is a successful response; errors are transport failures.
    pub fn send(&mut self, mut req: Request<'_>) -> Result<Response> {
        let what = format!("{} {}", req.method, req.url.without_query());
        let proxy = proxy_for(&self.proxies, req.url).map_err(|e| e.context(&what))?;
        if req.url.https && self.tls.is_none() {
            self.tls = Some(tls::build_config(&self.opts.extra_ca_files)?);
        }
        let may_retry = !matches!(req.body, Body::Stream { .. });
        let mut retried = false;
        loop {
            let conn = self
                .connection(req.url, proxy.as_ref(), req.deadline)
                .map_err(|e| e.context(&what))?;
            match self.exchange(conn, &mut req, proxy.as_ref()) {
                Ok(resp) => return Ok(resp),
                Err(Failure::Stale(_)) if may_retry && !retried => retried = true,
                Err(Failure::Stale(e) | Failure::Fatal(e)) => return Err(e.context(&what)),
            }
        }
    }

    /// The pooled connection for this target if still alive, else a new one.
    fn connection(
        &self,
        url: &Url,
        proxy: Option<&Proxy>,
        deadline: Option<Instant>,
    ) -> Result<Conn> {
        if let Some(conn) = self.pool.take(&ConnKey::new(url, proxy)) {
            return Ok(conn);
        }
        let dial = Dial {
            connect_timeout: self.opts.connect_timeout,
            io_timeout: self.opts.io_timeout,
            low_speed: self.opts.low_speed,
            deadline,
            proxy,
            tls: self.tls.clone(),
        };
        conn::open(url, &dial)
    }

    /// Writes the request on `conn` and reads the response head.
    fn exchange(
        &self,
        mut conn: Conn,
        req: &mut Request<'_>,
        proxy: Option<&Proxy>,
    ) -> Result<Response, Failure> {
        let spec = HeadSpec {
            method: req.method,
            url: req.url,
            headers: &req.headers,
            content_length: content_length(req.method, req.body.len()),
            http_proxy: proxy.filter(|_| !req.url.https),
        };
        let head = head_bytes(&spec).map_err(Failure::Fatal)?;
        conn.pace().restart(req.deadline);
        let write_error = match write_request(&mut conn, head, &mut req.body) {
            Ok(()) => None,
            Err(StreamError::Source(e)) => return Err(Failure::Fatal(e)),
            Err(StreamError::Sink(e)) => Some(io_error(e).context("sending request")),
        };
        let head = match read_final_head(&mut conn) {
            Ok(head) => head,
            // A reused connection the server closed meanwhile; not one that was too slow.
            Err(HeadError::Nothing(e)) if conn.reused && !conn.pace().tripped() => {
                return Err(Failure::Stale(e))
            }
            Err(e) => {
                let e = write_error.unwrap_or_else(|| e.into_error().context("reading response"));
                return Err(Failure::Fatal(e));
            }
        };
        let framing = framing(&head, req.method).map_err(Failure::Fatal)?;
        let keep_alive = head.keep_alive() && write_error.is_none();
        Ok(Response {
            status: head.status,
            reason: head.reason,
            headers: head.headers,
            body: BodyReader::new(framing, conn, self.pool.clone(), keep_alive),
        })
    }
}

/// Writes the head and body; small in-memory bodies go out with the head in one write.
fn write_request(
    conn: &mut Conn,
    mut head: Vec<u8>,
    body: &mut Body<'_>,
) -> Result<(), StreamError> {
    let w = conn.io.get_mut();
    match body {
        Body::Empty => w.write_all(&head).map_err(StreamError::Sink)?,
        Body::Bytes(b) if b.len() <= COALESCE_LIMIT => {
            head.extend_from_slice(b);
            w.write_all(&head).map_err(StreamError::Sink)?;
        }
        Body::Bytes(b) => {
            w.write_all(&head).map_err(StreamError::Sink)?;
            w.write_all(b).map_err(StreamError::Sink)?;
        }
        Body::Stream { reader, len } => {
            w.write_all(&head).map_err(StreamError::Sink)?;
            stream_body(w, *reader, *len)?;
        }
    }
    w.flush().map_err(StreamError::Sink)
}

/// Reads response heads until one that is not an interim 1xx response.
fn read_final_head(conn: &mut Conn) -> Result<Head, HeadError> {
    for i in 0..MAX_INTERIM {
        let head = match read_head(&mut conn.io) {
            Ok(h) => h,
            Err(HeadError::Nothing(e)) if i > 0 => return Err(HeadError::Partial(e)),
            Err(e) => return Err(e),
        };
        match head.status {
            101 => {
                return Err(HeadError::Partial(Error::new(
                    "server switched protocols (101), which barge does not request",
                )))
            }
            100..=199 => continue,
            _ => return Ok(head),
        }
    }
    Err(HeadError::Partial(Error::new(format!(
        "more than {MAX_INTERIM} interim (1xx) responses"
    ))))
}

/// A response whose head has been read; the body is read through [`Read`].
pub struct Response {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Reason phrase as sent by the server (may be empty).
    pub reason: String,
    headers: Vec<(String, String)>,
    body: BodyReader,
}

impl Response {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }

    /// All values of a header (case-insensitive name), in order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        find_header(&self.headers, name)
    }

    /// The declared `Content-Length` (also for HEAD responses); `None` if absent, chunked or invalid.
    pub fn content_length(&self) -> Option<u64> {
        if self.header("transfer-encoding").is_some() {
            return None;
        }
        self.header("content-length")?.trim().parse().ok()
    }

    /// Reads the whole body; fails without reading further once it exceeds `max` bytes.
    pub fn read_limited(&mut self, max: u64) -> Result<Vec<u8>> {
        let too_big = || Error::new(format!("response body is larger than {max} bytes"));
        if !self.body.is_done() && self.content_length().is_some_and(|n| n > max) {
            return Err(too_big());
        }
        let mut out = Vec::new();
        (&mut self.body)
            .take(max.saturating_add(1))
            .read_to_end(&mut out)?;
        if out.len() as u64 > max {
            return Err(too_big());
        }
        Ok(out)
    }

    /// Reads and drops up to 1 MiB of remaining body so the connection can be reused.
    ///
    /// Best effort: a larger or broken body just closes the connection; never fails.
    pub fn discard(mut self) -> Result<()> {
        let _ = io::copy(&mut (&mut self.body).take(DISCARD_LIMIT), &mut io::sink());
        Ok(())
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(buf)
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}
