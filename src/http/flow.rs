//! Flows: HTTP/1.1 GETs on non-blocking sockets, each an explicit state machine
//! (connect → TLS → request → head → body) moved on by [`poll_flows`] in one
//! thread, so that several downloads run at once without threads.
//!
//! A flow stops after the response head ([`FlowState::Head`]) until its owner
//! decides: [`Flow::accept`] sends the body into a range of a file, anything
//! else drops the flow (and its connection). Each flow has its own connection,
//! kept open for its next request ([`Flow::again`]): parallel flows are parallel
//! TCP flows, which is the point on a lossy link. Flows go direct only (a proxied
//! target is read the ordinary way) and never retry: their owner decides that.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConnection;

use super::pace::LowSpeed;
use super::request::{head_bytes, HeadSpec};
use super::response::{first_header, framing, read_head, Framing, Head, MAX_HEAD};
use super::url::Url;
use crate::error::{Error, Kind, Result};

/// Bytes read from a socket per call.
const READ_CHUNK: usize = 32 * 1024;
/// Reads per [`Flow::advance`] at most: a fast flow does not starve the others
/// (or the reader of the spool) of turns.
const ROUNDS_PER_ADVANCE: usize = 32;

/// What a flow needs besides its request: TLS roots and time limits.
#[derive(Clone)]
pub struct FlowConfig {
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// A flow that moves no byte for this long fails (transient).
    pub idle_limit: Duration,
    /// A flow that moves fewer bytes than this rule asks fails ([`Flow::too_slow`]).
    pub low_speed: LowSpeed,
}

/// Where a flow stands.
#[derive(Debug)]
pub enum FlowState {
    /// Connecting, handshaking, sending, or waiting for the head.
    Asking,
    /// The head arrived; the owner decides ([`Flow::accept`] or drop).
    Head,
    /// Receiving the body.
    Body,
    /// The whole body is in its file range.
    Done,
    /// It failed; the flow is finished.
    Failed(Error),
}

/// An open connection the blocking client no longer uses (see
/// [`super::Client::take_idle`]), with its TLS session.
pub struct IdleConn {
    pub(crate) origin: String,
    pub(crate) tcp: TcpStream,
    pub(crate) tls: Option<Box<ClientConnection>>,
}

/// Where a body goes: `len` bytes of `file` from `at`.
pub struct FileRange {
    pub file: Rc<File>,
    pub at: u64,
    pub len: u64,
}

/// One request in flight on its own non-blocking connection.
pub struct Flow {
    url: Url,
    sock: TcpStream,
    tls: Option<Box<ClientConnection>>,
    connected: bool,
    /// Request bytes not yet handed to the socket (or to TLS).
    out: Vec<u8>,
    /// Head bytes so far, then body bytes that came with the head.
    inbuf: Vec<u8>,
    head: Option<Head>,
    body: Option<Body>,
    state: FlowState,
    last_progress: Instant,
    /// The low-speed window: when it began and the bytes received since.
    window: (Instant, u64),
    /// It failed for moving too slowly.
    slow: bool,
    /// The URL of a request sent behind the current one ([`Flow::pipeline`]).
    queued: Option<Url>,
    /// The current request is timed (not pipelined): when its last byte went out.
    timing: Timing,
    /// From the request's last byte to its answer's head, if timed.
    latency: Option<Duration>,
    config: FlowConfig,
}

/// Whether a request's round trip is measured ([`Flow::latency`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Timing {
    /// Its last byte has not gone yet.
    Waiting,
    Sent(Instant),
    /// Pipelined, or answered already.
    Untimed,
}

/// The body's framing state and where its bytes go.
struct Body {
    sink: FileRange,
    written: u64,
    framing: BodyFraming,
}

enum BodyFraming {
    Length(u64),
    Close,
    Chunked(Chunked),
}

impl Flow {
    /// Starts `GET url` with `headers` (Host and User-Agent are added) on a new connection.
    pub fn get(url: &Url, headers: &[(String, String)], config: &FlowConfig) -> Result<Flow> {
        let sock = connect_nonblocking(url)?;
        let tls = match url.https {
            false => None,
            true => Some(Box::new(client_tls(url, config)?)),
        };
        Flow::on(sock, tls, false, url, headers, config)
    }

    /// Like [`Flow::get`], on an idle connection to the same origin.
    pub fn adopt(
        idle: IdleConn,
        url: &Url,
        headers: &[(String, String)],
        config: &FlowConfig,
    ) -> Result<Flow> {
        if idle.origin != url.origin() {
            return Flow::get(url, headers, config);
        }
        let IdleConn { tcp: sock, tls, .. } = idle;
        sock.set_nonblocking(true)?;
        sock.set_read_timeout(None)?;
        sock.set_write_timeout(None)?;
        Flow::on(sock, tls, true, url, headers, config)
    }

    /// A flow asking `GET url` on `sock` (connected already, or still connecting).
    fn on(
        sock: TcpStream,
        tls: Option<Box<ClientConnection>>,
        connected: bool,
        url: &Url,
        headers: &[(String, String)],
        config: &FlowConfig,
    ) -> Result<Flow> {
        Ok(Flow {
            url: url.clone(),
            sock,
            tls,
            connected,
            out: get_bytes(url, headers)?,
            inbuf: Vec::new(),
            head: None,
            body: None,
            state: FlowState::Asking,
            last_progress: Instant::now(),
            window: (Instant::now(), 0),
            slow: false,
            queued: None,
            timing: Timing::Waiting,
            latency: None,
            config: config.clone(),
        })
    }

    /// Sends the next `GET` on this flow's connection, if the last answer is complete
    /// and left it open, and `url` is on the same origin; `false` leaves it untouched.
    pub fn again(&mut self, url: &Url, headers: &[(String, String)]) -> Result<bool> {
        let reusable =
            matches!(self.state, FlowState::Done) && self.inbuf.is_empty() && self.can_ask(url);
        if !reusable {
            return Ok(false);
        }
        self.out = get_bytes(url, headers)?;
        self.restart(url.clone(), Timing::Waiting);
        Ok(true)
    }

    /// Whether this connection can carry a request for `url` after the current
    /// answer: nothing queued yet, kept alive, a body with a known end (not one
    /// that ends with the connection), the same origin.
    fn can_ask(&self, url: &Url) -> bool {
        self.queued.is_none()
            && self.head.as_ref().is_some_and(Head::keep_alive)
            && self
                .body
                .as_ref()
                .is_some_and(|b| !matches!(b.framing, BodyFraming::Close))
            && url.origin() == self.url.origin()
    }

    /// Sends the next `GET` now, behind the body being received (HTTP/1.1
    /// pipelining), so that its answer follows without a round trip in between:
    /// only on a keep-alive connection whose body has a known end, with nothing
    /// queued yet, to the same origin. `false` leaves it untouched. Once the body
    /// is done, [`Flow::next`] turns the flow to the queued request.
    pub fn pipeline(&mut self, url: &Url, headers: &[(String, String)]) -> Result<bool> {
        if !(matches!(self.state, FlowState::Body) && self.can_ask(url)) {
            return Ok(false);
        }
        self.out.extend_from_slice(&get_bytes(url, headers)?);
        self.queued = Some(url.clone());
        Ok(true)
    }

    /// Turns a finished flow to its queued request (whose head may have arrived
    /// already); `false` if there is none or the current answer is not done.
    pub fn next(&mut self) -> bool {
        if !matches!(self.state, FlowState::Done) {
            return false;
        }
        let Some(url) = self.queued.take() else {
            return false;
        };
        // Pipelined: it waited for the answer before it, so it is not timed.
        self.restart(url, Timing::Untimed);
        let result = self.take_head(&[]);
        self.settle(result);
        true
    }

    /// Waits for the answer to a request on `url` that was sent (or is being sent).
    fn restart(&mut self, url: Url, timing: Timing) {
        self.url = url;
        self.timing = timing;
        self.latency = None;
        self.head = None;
        self.body = None;
        self.state = FlowState::Asking;
        self.last_progress = Instant::now();
        self.window = (Instant::now(), 0);
    }

    /// The round trip of the current request: from its last byte sent to its
    /// answer's head (none for a pipelined request, which waited for the answer
    /// before it). On a new connection it includes the handshakes of TLS.
    pub fn latency(&self) -> Option<Duration> {
        self.latency
    }

    /// The URL asked last.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Where the flow stands.
    pub fn state(&self) -> &FlowState {
        &self.state
    }

    /// The response status, once the head arrived.
    pub fn status(&self) -> Option<u16> {
        self.head.as_ref().map(|h| h.status)
    }

    /// A response header, once the head arrived.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head
            .as_ref()
            .and_then(|h| first_header(&h.headers, name))
    }

    /// The body's announced length (`None`: chunked or until close).
    pub fn content_length(&self) -> Option<u64> {
        let head = self.head.as_ref()?;
        match framing(head, "GET").ok()? {
            Framing::Length(n) => Some(n),
            Framing::Empty => Some(0),
            _ => None,
        }
    }

    /// Not read for now, on purpose: the time does not count against its
    /// low-speed rule or idle limit.
    pub fn rest(&mut self) {
        let now = Instant::now();
        self.last_progress = now;
        self.window = (now, 0);
    }

    /// Whether it failed by the low-speed rule (not by silence or an error).
    pub fn too_slow(&self) -> bool {
        self.slow
    }

    /// How long it went without progress before it failed: the low-speed window
    /// it failed in, or the silence before its end.
    pub fn unproductive(&self) -> Duration {
        match self.slow {
            true => self.config.low_speed.time,
            false => self.last_progress.elapsed(),
        }
    }

    /// Body bytes written to the sink so far.
    pub fn written(&self) -> u64 {
        self.body.as_ref().map_or(0, |b| b.written)
    }

    /// Sends the body into `sink`; more bytes than `sink.len` is an error, fewer
    /// (a connection closed early) a transient one.
    pub fn accept(&mut self, sink: FileRange) {
        let result = self.start_body(sink);
        self.settle(result);
    }

    fn start_body(&mut self, sink: FileRange) -> Result<()> {
        let Some(head) = &self.head else {
            return Err(Error::new("internal error: body accepted before its head"));
        };
        let framing = match framing(head, "GET")? {
            Framing::Empty => BodyFraming::Length(0),
            Framing::Length(n) if n > sink.len => {
                return Err(Error::new(format!(
                    "{} announced {n} bytes where {} were asked",
                    self.url.without_query(),
                    sink.len
                )))
            }
            Framing::Length(n) => BodyFraming::Length(n),
            Framing::Close => BodyFraming::Close,
            Framing::Chunked => BodyFraming::Chunked(Chunked::default()),
        };
        self.body = Some(Body {
            sink,
            written: 0,
            framing,
        });
        self.state = FlowState::Body;
        let early = std::mem::take(&mut self.inbuf);
        self.take_body(&early)?;
        self.finish_if_complete();
        Ok(())
    }

    /// The poll events this flow waits for (0: none, it is finished or paused).
    fn interest(&self) -> i16 {
        match self.state {
            FlowState::Asking | FlowState::Body => {}
            _ => return 0,
        }
        if !self.connected {
            return libc::POLLOUT;
        }
        let wants_write =
            !self.out.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write());
        libc::POLLIN | if wants_write { libc::POLLOUT } else { 0 }
    }

    /// Moves the flow on as far as the socket allows, without blocking.
    fn advance(&mut self) {
        let result = self.step();
        self.settle(result);
    }

    fn settle(&mut self, result: Result<()>) {
        if let Err(e) = result {
            let what = format!("GET {}", self.url.without_query());
            self.state = FlowState::Failed(e.context(what));
        }
    }

    fn step(&mut self) -> Result<()> {
        if !self.connected {
            if let Some(e) = self.sock.take_error()? {
                return Err(connect_error(&self.url, e));
            }
            match self.sock.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(connect_error(&self.url, e)),
            }
        }
        let mut buf = [0u8; READ_CHUNK];
        for _ in 0..ROUNDS_PER_ADVANCE {
            let sent = self.send()?;
            if !matches!(self.state, FlowState::Asking | FlowState::Body) {
                return Ok(());
            }
            let got = match self.recv(&mut buf)? {
                None => 0,
                Some(0) => return self.at_eof(),
                Some(n) => {
                    self.window.1 += n as u64;
                    self.take(&buf[..n])?;
                    n
                }
            };
            if sent + got == 0 {
                return Ok(());
            }
            self.last_progress = Instant::now();
        }
        Ok(())
    }

    /// Hands pending request bytes to the socket; returns how many went. Notes
    /// when a timed request's last byte left.
    fn send(&mut self) -> Result<usize> {
        let sent = self.send_out()?;
        let idle = self.out.is_empty()
            && !self
                .tls
                .as_ref()
                .is_some_and(|t| t.wants_write() || t.is_handshaking());
        if self.timing == Timing::Waiting && idle {
            self.timing = Timing::Sent(Instant::now());
        }
        Ok(sent)
    }

    fn send_out(&mut self) -> Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            let n = match self.sock.write(&self.out) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(super::conn::io_error(e)),
            };
            self.out.drain(..n);
            return Ok(n);
        };
        if !self.out.is_empty() {
            let n = tls.writer().write(&self.out)?;
            self.out.drain(..n);
        }
        let mut sent = 0;
        while tls.wants_write() {
            match tls.write_tls(&mut self.sock) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(super::conn::io_error(e)),
            }
        }
        Ok(sent)
    }

    /// Reads what has arrived: `None` when nothing has, `Some(0)` at the end.
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        let Some(tls) = self.tls.as_mut() else {
            return match self.sock.read(buf) {
                Ok(n) => Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(super::conn::io_error(e)),
            };
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Some(0)),
                Err(e) => return Err(super::conn::io_error(e)),
            }
            match tls.read_tls(&mut self.sock) {
                Ok(0) => return Ok(Some(0)),
                Ok(_) => {
                    tls.process_new_packets()
                        .map_err(|e| Error::new(format!("TLS: {e}")))?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(super::conn::io_error(e)),
            }
        }
    }

    /// Bytes from the server: head bytes until the head is whole, then body bytes.
    fn take(&mut self, bytes: &[u8]) -> Result<()> {
        match self.state {
            FlowState::Asking => self.take_head(bytes),
            FlowState::Body => {
                self.take_body(bytes)?;
                self.finish_if_complete();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn take_head(&mut self, bytes: &[u8]) -> Result<()> {
        self.inbuf.extend_from_slice(bytes);
        while let Some(end) = head_end(&self.inbuf) {
            let head = read_head(&mut &self.inbuf[..end]).map_err(|e| e.into_error())?;
            self.inbuf.drain(..end);
            if (100..200).contains(&head.status) {
                continue; // interim answers (100 Continue) carry nothing
            }
            self.head = Some(head);
            self.state = FlowState::Head;
            if let Timing::Sent(at) = self.timing {
                self.latency = Some(at.elapsed());
            }
            self.timing = Timing::Untimed;
            return Ok(());
        }
        if self.inbuf.len() > MAX_HEAD {
            return Err(Error::new(format!(
                "response head larger than {MAX_HEAD} bytes"
            )));
        }
        Ok(())
    }

    fn take_body(&mut self, mut bytes: &[u8]) -> Result<()> {
        let Some(body) = self.body.as_mut() else {
            return Ok(());
        };
        while !bytes.is_empty() {
            if body.complete() {
                // The next answer's first bytes, if a request was pipelined.
                if self.queued.is_none() {
                    return Err(Error::new(
                        "the server sent more than the body it announced",
                    ));
                }
                self.inbuf.extend_from_slice(bytes);
                return Ok(());
            }
            let (data, used) = match &mut body.framing {
                BodyFraming::Length(n) => {
                    let k = (*n - body.written).min(bytes.len() as u64) as usize;
                    (&bytes[..k], k)
                }
                BodyFraming::Close => (bytes, bytes.len()),
                BodyFraming::Chunked(c) => c.feed(bytes)?,
            };
            body.write(data)?;
            bytes = &bytes[used..];
        }
        Ok(())
    }

    fn finish_if_complete(&mut self) {
        if self.body.as_ref().is_some_and(Body::complete) {
            self.state = FlowState::Done;
        }
    }

    /// The server closed the connection.
    fn at_eof(&mut self) -> Result<()> {
        let early = |what: String| Err(Error::with_kind(Kind::Transient, what));
        match (&self.state, &self.body) {
            (FlowState::Body, Some(b)) if matches!(b.framing, BodyFraming::Close) => {
                self.state = FlowState::Done;
                Ok(())
            }
            (FlowState::Body, Some(b)) => early(format!(
                "connection closed after {} bytes of the body",
                b.written
            )),
            _ => early("connection closed before a response arrived".into()),
        }
    }

    /// Fails a flow that moved no byte for too long.
    fn check_idle(&mut self, now: Instant) {
        if !matches!(self.state, FlowState::Asking | FlowState::Body) {
            return;
        }
        let limit = match self.connected {
            true => self.config.idle_limit,
            false => self.config.connect_timeout,
        };
        let rule = self.config.low_speed;
        let (began, got) = self.window;
        if self.connected && rule.enabled() && now.duration_since(began) >= rule.time {
            if got < rule.window_bytes() {
                self.slow = true;
                let what = format!(
                    "registry sent {got} bytes in {} s (below {}/s)",
                    rule.time.as_secs(),
                    crate::progress::human_bytes(rule.limit)
                );
                return self.settle(Err(Error::with_kind(Kind::Transient, what)));
            }
            self.window = (now, 0);
        }
        if !limit.is_zero() && now.duration_since(self.last_progress) > limit {
            let what = match self.connected {
                true => format!("no data for {} s", limit.as_secs()),
                false => format!("cannot connect to {}: timed out", self.url.authority()),
            };
            self.settle(Err(Error::with_kind(Kind::Transient, what)));
        }
    }
}

impl Body {
    /// Whether the whole body has arrived (a body that ends with the connection
    /// never is, before then).
    fn complete(&self) -> bool {
        match &self.framing {
            BodyFraming::Length(n) => self.written == *n,
            BodyFraming::Chunked(c) => c.finished(),
            BodyFraming::Close => false,
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.written + data.len() as u64 > self.sink.len {
            return Err(Error::new("the server sent more than was asked"));
        }
        self.sink
            .file
            .write_all_at(data, self.sink.at + self.written)
            .map_err(|e| Error::from(e).context("write the download spool"))?;
        self.written += data.len() as u64;
        Ok(())
    }
}

/// The bytes of `GET url` with `headers`.
fn get_bytes(url: &Url, headers: &[(String, String)]) -> Result<Vec<u8>> {
    head_bytes(&HeadSpec {
        method: "GET",
        url,
        headers,
        content_length: None,
        http_proxy: None,
    })
}

/// Where the head ends (just past its empty line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        match &buf[nl + 1..] {
            [b'\n', ..] => return Some(nl + 2),
            [b'\r', b'\n', ..] => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// Waits up to `timeout` for any of `flows` to be ready and moves the ready ones on;
/// flows that moved nothing for too long fail.
pub fn poll_flows(flows: &mut [&mut Flow], timeout: Duration) -> Result<()> {
    let mut fds: Vec<libc::pollfd> = flows
        .iter()
        .map(|f| libc::pollfd {
            fd: f.sock.as_raw_fd(),
            events: f.interest(),
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd structs.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return crate::signal::check();
        }
        return Err(Error::from(e).context("poll"));
    }
    let now = Instant::now();
    for (flow, fd) in flows.iter_mut().zip(&fds) {
        if fd.revents != 0 {
            flow.advance();
        }
        flow.check_idle(now);
    }
    Ok(())
}

/// A TLS client session for `url`'s host; the handshake goes with the first bytes sent.
fn client_tls(url: &Url, config: &FlowConfig) -> Result<ClientConnection> {
    let Some(tls) = config.tls.clone() else {
        return Err(Error::new(
            "internal error: https flow without TLS configuration",
        ));
    };
    let name = ServerName::try_from(url.host.clone())
        .map_err(|_| Error::new(format!("invalid TLS server name {:?}", url.host)))?;
    ClientConnection::new(tls, name).map_err(|e| Error::new(format!("TLS: {e}")))
}

/// A socket connecting to `url`'s host (its first address) without waiting for it.
fn connect_nonblocking(url: &Url) -> Result<TcpStream> {
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            Error::with_kind(
                Kind::Transient,
                format!("cannot resolve {}", url.authority()),
            )
        })?;
    start_connect(&addr).map_err(|e| connect_error(url, e))
}

fn start_connect(addr: &SocketAddr) -> io::Result<TcpStream> {
    let (family, storage, len) = sockaddr(addr);
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain socket(2) call; the descriptor is owned by the TcpStream below.
    let fd = unsafe { libc::socket(family, flags, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket we own; TcpStream closes it when dropped.
    let sock = unsafe { TcpStream::from_raw_fd(fd) };
    // SAFETY: `storage` holds a sockaddr of `len` bytes for `family`.
    let r = unsafe { libc::connect(fd, &storage as *const _ as *const libc::sockaddr, len) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    sock.set_nodelay(true)?;
    Ok(sock)
}

/// `addr` as a C socket address.
fn sockaddr(addr: &SocketAddr) -> (i32, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            (
                libc::AF_INET,
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as _,
            )
        }
        SocketAddr::V6(a) => {
            // SAFETY: all-zero sockaddr_in6 is valid; the fields are set below.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            (
                libc::AF_INET6,
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as _,
            )
        }
    }
}

fn connect_error(url: &Url, e: io::Error) -> Error {
    let name = url.authority();
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Error::new(format!("nothing is listening at {name}")),
        _ => Error::with_kind(Kind::Transient, format!("cannot connect to {name}: {e}")),
    }
}

/// Incremental `Transfer-Encoding: chunked` decoding.
#[derive(Default)]
struct Chunked {
    /// The size line (or trailer line) read so far.
    line: Vec<u8>,
    /// Data bytes left in the current chunk.
    left: u64,
    phase: ChunkPhase,
}

#[derive(Default, PartialEq)]
enum ChunkPhase {
    #[default]
    Size,
    Data,
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
    Finished,
}

impl Chunked {
    fn finished(&self) -> bool {
        self.phase == ChunkPhase::Finished
    }

    /// Consumes a prefix of `bytes`: returns the data in it and how many bytes were used.
    fn feed<'b>(&mut self, bytes: &'b [u8]) -> Result<(&'b [u8], usize)> {
        match self.phase {
            ChunkPhase::Data => {
                let k = self.left.min(bytes.len() as u64) as usize;
                self.left -= k as u64;
                if self.left == 0 {
                    self.phase = ChunkPhase::DataEnd;
                }
                Ok((&bytes[..k], k))
            }
            ChunkPhase::Finished => Err(Error::new("bytes after the chunked body's end")),
            _ => {
                let used = self.feed_line(bytes)?;
                Ok((&[], used))
            }
        }
    }

    /// Line-oriented phases: size lines, the CRLF after data, trailers.
    fn feed_line(&mut self, bytes: &[u8]) -> Result<usize> {
        let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
            self.line.extend_from_slice(bytes);
            if self.line.len() > 4096 {
                return Err(Error::new("malformed chunked body: line too long"));
            }
            return Ok(bytes.len());
        };
        self.line.extend_from_slice(&bytes[..nl]);
        let line = std::mem::take(&mut self.line);
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        match self.phase {
            ChunkPhase::Size => {
                let text = std::str::from_utf8(line).unwrap_or("");
                let hex = text.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(hex, 16)
                    .map_err(|_| Error::new("malformed chunked body: bad chunk size"))?;
                self.left = size;
                self.phase = match size {
                    0 => ChunkPhase::Trailers,
                    _ => ChunkPhase::Data,
                };
            }
            ChunkPhase::DataEnd if line.is_empty() => self.phase = ChunkPhase::Size,
            ChunkPhase::DataEnd => {
                return Err(Error::new("malformed chunked body: no CRLF after a chunk"))
            }
            _ if line.is_empty() => self.phase = ChunkPhase::Finished,
            _ => {} // a trailer field: ignored
        }
        Ok(nl + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dechunk(parts: &[&[u8]]) -> Result<(Vec<u8>, bool)> {
        let mut c = Chunked::default();
        let mut out = Vec::new();
        for part in parts {
            let mut rest: &[u8] = part;
            while !rest.is_empty() {
                let (data, used) = c.feed(rest)?;
                out.extend_from_slice(data);
                rest = &rest[used..];
            }
        }
        Ok((out, c.finished()))
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: y\r\n\r\n";
        assert_eq!(dechunk(&[wire]).unwrap(), (b"Wikipedia".to_vec(), true));
        for cut in 1..wire.len() {
            let (a, b) = wire.split_at(cut);
            assert_eq!(
                dechunk(&[a, b]).unwrap(),
                (b"Wikipedia".to_vec(), true),
                "{cut}"
            );
        }
        assert!(dechunk(&[b"zz\r\n"]).is_err());
        assert!(dechunk(&[b"2\r\nabX\r\n"]).is_err());
        assert_eq!(dechunk(&[b"3\r\nab"]).unwrap(), (b"ab".to_vec(), false));
    }

    /// A one-connection server on loopback answering each request with the next of
    /// `answers` (raw bytes), then closing.
    fn serve(answers: Vec<&'static [u8]>) -> Url {
        scripted(answers.into_iter().flat_map(|a| [None, Some(a)]).collect())
    }

    fn config() -> FlowConfig {
        FlowConfig {
            tls: None,
            connect_timeout: Duration::from_secs(5),
            idle_limit: Duration::from_secs(5),
            low_speed: LowSpeed::DEFAULT,
        }
    }

    /// Polls `flow` until it leaves `Asking`/`Body` (at most 5 s).
    fn run(flow: &mut Flow) {
        let t0 = Instant::now();
        while matches!(flow.state(), FlowState::Asking | FlowState::Body) {
            assert!(t0.elapsed() < Duration::from_secs(5), "flow stuck");
            poll_flows(&mut [&mut *flow], Duration::from_millis(50)).unwrap();
        }
    }

    fn spool(len: u64) -> FileRange {
        let file = unlinked_temp_file();
        FileRange {
            file: Rc::new(file),
            at: 0,
            len,
        }
    }

    fn unlinked_temp_file() -> File {
        let path = std::env::temp_dir().join(format!(
            "barge-flow-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    /// Accepts the body of `flow` (at most `len` bytes) into a new file and runs
    /// the flow to its end, which must be `Done`.
    fn take_body(flow: &mut Flow, len: u64) -> FileRange {
        let range = spool(len);
        flow.accept(FileRange {
            file: range.file.clone(),
            at: 0,
            len,
        });
        run(flow);
        assert!(
            matches!(flow.state(), FlowState::Done),
            "{:?}",
            flow.state()
        );
        range
    }

    fn body_of(range: &FileRange, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        range.file.read_exact_at(&mut buf, range.at).unwrap();
        buf
    }

    #[test]
    fn flows_take_bodies_and_keep_their_connection() {
        let url = serve(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 206 Partial\r\nContent-Length: 5\r\nContent-Range: bytes 0-4/9\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n",
        ]);
        let mut flow = Flow::get(&url, &[], &config()).unwrap();
        run(&mut flow);
        assert!(matches!(flow.state(), FlowState::Head));
        assert_eq!(flow.status(), Some(206));
        assert_eq!(flow.header("content-range"), Some("bytes 0-4/9"));
        assert_eq!(flow.content_length(), Some(5));
        let first = take_body(&mut flow, 9);
        assert_eq!(body_of(&first, 5), b"hello");
        assert!(
            flow.again(&url, &[]).unwrap(),
            "keep-alive connection not reused"
        );
        run(&mut flow);
        let second = take_body(&mut flow, 4);
        assert_eq!(flow.written(), 4);
        assert_eq!(body_of(&second, 4), b"abcd");
        let other = Url::parse("http://127.0.0.2:1/x").unwrap();
        assert!(
            !flow.again(&other, &[]).unwrap(),
            "another origin on this connection"
        );
    }

    #[test]
    fn flows_fail_cleanly() {
        // Closed before the whole body: a transient failure, the bytes so far kept.
        let url = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]);
        let mut flow = Flow::get(&url, &[], &config()).unwrap();
        run(&mut flow);
        flow.accept(spool(10));
        run(&mut flow);
        let FlowState::Failed(e) = flow.state() else {
            panic!("{:?}", flow.state())
        };
        assert_eq!(e.kind(), Kind::Transient);
        assert_eq!(flow.written(), 3);
        // More than the range asked: refused before a byte is written.
        let url = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
        ]);
        let mut flow = Flow::get(&url, &[], &config()).unwrap();
        run(&mut flow);
        flow.accept(spool(4));
        assert!(
            matches!(flow.state(), FlowState::Failed(_)),
            "{:?}",
            flow.state()
        );
        // Nobody listening.
        let dead = Url::parse("http://127.0.0.1:1/x").unwrap();
        let refused = Flow::get(&dead, &[], &config()).map(|mut f| {
            run(&mut f);
            matches!(f.state(), FlowState::Failed(_))
        });
        assert!(refused.unwrap_or(true));
    }

    /// A one-connection server on loopback that follows `script`: `None` reads one
    /// request head, `Some(bytes)` writes them; then it closes.
    fn scripted(script: Vec<Option<&'static [u8]>>) -> Url {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let mut r = io::BufReader::new(sock.try_clone().unwrap());
            let mut w = sock;
            for step in script {
                match step {
                    Some(bytes) => {
                        let _ = w.write_all(bytes);
                    }
                    None => {
                        let mut line = String::new();
                        while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                            line.clear();
                        }
                    }
                }
            }
        });
        Url::parse(&format!("http://127.0.0.1:{port}/blob")).unwrap()
    }

    #[test]
    fn pipelined_answers_follow_each_other() {
        // The second answer's head comes in the same packet as the first body's end.
        let url = scripted(vec![
            None,
            Some(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc"),
            None,
            Some(b"defHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\ng"),
            None,
            Some(b"h\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nij"),
        ]);
        let mut flow = Flow::get(&url, &[], &config()).unwrap();
        run(&mut flow);
        let first = spool(6);
        flow.accept(FileRange {
            file: first.file.clone(),
            at: 0,
            len: 6,
        });
        assert!(flow.latency().is_some(), "the first request is timed");
        assert!(flow.pipeline(&url, &[]).unwrap());
        assert!(!flow.pipeline(&url, &[]).unwrap(), "two queued");
        run(&mut flow);
        assert!(
            matches!(flow.state(), FlowState::Done),
            "{:?}",
            flow.state()
        );
        assert_eq!(body_of(&first, 6), b"abcdef");
        assert!(flow.next());
        assert!(
            matches!(flow.state(), FlowState::Head),
            "{:?}",
            flow.state()
        );
        assert_eq!(
            flow.latency(),
            None,
            "a pipelined request waited for another"
        );
        let second = spool(2);
        flow.accept(FileRange {
            file: second.file.clone(),
            at: 0,
            len: 2,
        });
        // Behind a chunked body too.
        assert!(flow.pipeline(&url, &[]).unwrap());
        run(&mut flow);
        assert_eq!(body_of(&second, 2), b"gh");
        assert!(flow.next());
        run(&mut flow);
        let third = take_body(&mut flow, 2);
        assert_eq!(body_of(&third, 2), b"ij");
        assert!(!flow.next(), "nothing was queued");
    }

    #[test]
    fn bytes_past_a_body_fail_unless_a_request_was_pipelined() {
        let url = scripted(vec![
            None,
            Some(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\n"),
        ]);
        let mut flow = Flow::get(&url, &[], &config()).unwrap();
        run(&mut flow);
        flow.accept(spool(3));
        run(&mut flow);
        assert!(
            matches!(flow.state(), FlowState::Failed(_)),
            "{:?}",
            flow.state()
        );
        // A body that ends with the connection cannot have a request behind it.
        let url = scripted(vec![None, Some(b"HTTP/1.1 200 OK\r\n\r\nab")]);
        let mut flow = Flow::get(&url, &[], &config()).unwrap();
        run(&mut flow);
        flow.accept(spool(3));
        assert!(!flow.pipeline(&url, &[]).unwrap());
    }

    #[test]
    fn head_end_finds_the_empty_line() {
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody"), Some(25));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\n\nbody"), Some(17));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n"), None);
    }
}
