//! Connections: TCP connect with timeouts, optional proxy tunnel and TLS, and the idle pool.
//!
//! A [`Conn`] is a buffered byte stream to one origin (or to the proxy that
//! forwards to it). The [`Pool`] keeps at most one idle connection per key;
//! responses hand their connection back when their body has been read fully.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};

use super::pace::{tick, Direction, LowSpeed, Pace};
use super::proxy::{connect_tunnel, Proxy};
use super::url::Url;
use crate::error::{Error, Kind, Result};

/// Size of the read buffer of a connection.
const READ_BUFFER: usize = 64 * 1024;

/// A TCP socket whose every read and write is paced: the socket wakes up each tick,
/// and the [`Pace`] rules decide whether to keep waiting.
pub(crate) struct Wire {
    tcp: TcpStream,
    pub pace: Pace,
}

impl Wire {
    /// `tcp`, paced by `pace`.
    pub(crate) fn new(tcp: TcpStream, pace: Pace) -> Wire {
        Wire { tcp, pace }
    }

    /// Runs one socket call until it moves bytes, fails, or a pace rule breaks.
    fn paced<T>(
        &mut self,
        dir: Direction,
        mut call: impl FnMut(&mut TcpStream) -> io::Result<T>,
        moved: impl Fn(&T) -> usize,
    ) -> io::Result<T> {
        loop {
            let began = Instant::now();
            let result = call(&mut self.tcp);
            let waited = began.elapsed();
            match result {
                Ok(v) => {
                    self.pace.account(waited, moved(&v), dir)?;
                    return Ok(v);
                }
                Err(e) if is_tick(&e) => {
                    self.pace.account(waited, 0, dir)?;
                    crate::progress::idle();
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether an error is only the socket timeout waking a blocked call.
fn is_tick(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.paced(Direction::Receiving, |t| t.read(buf), |n| *n)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.paced(Direction::Sending, |t| t.write(buf), |n| *n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// The byte stream under a connection: plain TCP or TLS over TCP.
pub(crate) enum Stream {
    Plain(Box<Wire>),
    Tls(Box<StreamOwned<ClientConnection, Wire>>),
}

impl Stream {
    /// The paced socket underneath.
    fn wire(&self) -> &Wire {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    /// The paced socket underneath, mutably.
    fn wire_mut(&mut self) -> &mut Wire {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &mut s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// What a pooled connection is good for: the target origin and the proxy used, if any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub proxy: Option<String>,
}

impl ConnKey {
    /// The key for requests to `url` through `proxy`.
    pub fn new(url: &Url, proxy: Option<&Proxy>) -> ConnKey {
        ConnKey {
            https: url.https,
            host: url.host.clone(),
            port: url.port,
            proxy: proxy.map(Proxy::authority),
        }
    }
}

/// An open, buffered connection.
pub(crate) struct Conn {
    /// Buffered stream; writes go to `io.get_mut()`.
    pub io: BufReader<Stream>,
    /// What this connection is connected to.
    pub key: ConnKey,
    /// True if it came from the pool (it may have been closed by the server meanwhile).
    pub reused: bool,
}

impl Conn {
    /// The pace of this connection's socket.
    pub fn pace(&mut self) -> &mut Pace {
        &mut self.io.get_mut().wire_mut().pace
    }

    /// The socket (and TLS session) under an idle connection with nothing buffered,
    /// for a [`super::Flow`] to carry on with; `None` if bytes are waiting in it.
    pub fn into_parts(self) -> Option<(TcpStream, Option<Box<ClientConnection>>)> {
        if !self.io.buffer().is_empty() {
            return None;
        }
        match self.io.into_inner() {
            Stream::Plain(wire) => Some((wire.tcp, None)),
            Stream::Tls(s) => {
                let StreamOwned { conn, sock, .. } = *s;
                Some((sock.tcp, Some(Box::new(conn))))
            }
        }
    }

    /// Whether an idle connection still looks usable: no EOF and no unexpected bytes waiting.
    fn is_alive(&self) -> bool {
        if !self.io.buffer().is_empty() {
            return false;
        }
        let tcp = &self.io.get_ref().wire().tcp;
        if tcp.set_nonblocking(true).is_err() {
            return false;
        }
        let mut probe = [0u8; 1];
        let alive = matches!(tcp.peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        tcp.set_nonblocking(false).is_ok() && alive
    }
}

/// Idle connections shared between the client and its responses (one per key).
#[derive(Clone, Default)]
pub(crate) struct Pool(Arc<Mutex<HashMap<ConnKey, Conn>>>);

impl Pool {
    /// Takes the idle connection for `key` if it is still alive.
    pub fn take(&self, key: &ConnKey) -> Option<Conn> {
        let mut map = self.0.lock().ok()?;
        let mut conn = map.remove(key)?;
        conn.reused = true;
        conn.is_alive().then_some(conn)
    }

    /// Keeps `conn` for the next request to the same key (replacing an older one).
    pub fn put(&self, conn: Conn) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(conn.key.clone(), conn);
        }
    }
}

/// Settings needed to open a connection.
pub(crate) struct Dial<'a> {
    pub connect_timeout: Duration,
    /// No byte at all for this long aborts (zero: no limit).
    pub io_timeout: Duration,
    pub low_speed: LowSpeed,
    /// When the whole transfer must be over (bounds the connect too).
    pub deadline: Option<Instant>,
    pub proxy: Option<&'a Proxy>,
    /// TLS configuration; required when the target is https.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Opens a new connection to `url`, through the proxy and TLS as configured.
pub(crate) fn open(url: &Url, dial: &Dial<'_>) -> Result<Conn> {
    let key = ConnKey::new(url, dial.proxy);
    let tcp = match dial.proxy {
        Some(p) => tcp_connect(&p.host, p.port, dial)
            .map_err(|e| e.context(format!("connecting to proxy {}", p.authority())))?,
        None => tcp_connect(&url.host, url.port, dial)?,
    };
    let tcp = Wire::new(
        tcp,
        Pace::new(dial.low_speed, dial.io_timeout, dial.deadline),
    );
    let stream = if url.https {
        let tcp = match dial.proxy {
            Some(p) => connect_tunnel(tcp, p, url)?,
            None => tcp,
        };
        let Some(config) = dial.tls.clone() else {
            return Err(Error::new(
                "internal error: https connection without TLS configuration",
            ));
        };
        Stream::Tls(Box::new(super::tls::handshake(config, tcp, url)?))
    } else {
        Stream::Plain(Box::new(tcp))
    };
    Ok(Conn {
        io: BufReader::with_capacity(READ_BUFFER, stream),
        key,
        reused: false,
    })
}

/// Resolves `host` and tries each address in turn; sets timeouts and no-delay.
fn tcp_connect(host: &str, port: u16, dial: &Dial<'_>) -> Result<TcpStream> {
    let name = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| {
            Error::with_kind(Kind::Transient, format!("cannot resolve {name}: {e}"))
                .hint("check the registry host name and your DNS settings")
        })?
        .collect();
    let mut last = None;
    let mut timeout = dial.connect_timeout;
    for addr in &addrs {
        timeout = connect_timeout(dial);
        match connect_addr(addr, timeout, dial) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    let why = match last {
        // Refused: the host answered that no one listens there; trying again will not help.
        Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(Error::new(format!("nothing is listening at {name}"))
                .hint("is the registry running, and is the address right?"));
        }
        Some(e) if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => {
            format!("timed out after {}s", timeout.as_secs_f64().round())
        }
        Some(e) => e.to_string(),
        None => "no addresses found".to_string(),
    };
    Err(Error::with_kind(
        Kind::Transient,
        format!("cannot connect to {name}: {why}"),
    ))
}

/// The connect timeout, shortened to what is left before the deadline (at least 1 s).
fn connect_timeout(dial: &Dial<'_>) -> Duration {
    let Some(deadline) = dial.deadline else {
        return dial.connect_timeout;
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    if dial.connect_timeout.is_zero() {
        left
    } else {
        dial.connect_timeout.min(left)
    }
}

/// One connection attempt; blocked reads and writes then wake up every pace tick.
fn connect_addr(addr: &SocketAddr, timeout: Duration, dial: &Dial<'_>) -> io::Result<TcpStream> {
    let tcp = if timeout.is_zero() {
        TcpStream::connect(addr)?
    } else {
        TcpStream::connect_timeout(addr, timeout)?
    };
    let tick = tick(&dial.low_speed, dial.io_timeout);
    tcp.set_read_timeout(tick)?;
    tcp.set_write_timeout(tick)?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Converts an I/O error on an open connection, classing network failures as transient.
pub(crate) fn io_error(e: io::Error) -> Error {
    use io::ErrorKind as K;
    match e.kind() {
        K::WouldBlock | K::TimedOut => Error::with_kind(Kind::Transient, "timed out"),
        K::ConnectionRefused | K::NotConnected => Error::with_kind(Kind::Transient, e.to_string()),
        K::UnexpectedEof => Error::with_kind(Kind::Transient, "connection closed unexpectedly"),
        _ => Error::from(e),
    }
}
