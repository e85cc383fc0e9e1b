//! Connections: TCP connect with timeouts, optional proxy tunnel and TLS, and the idle pool.
//!
//! A [`Conn`] is a buffered byte stream to one origin (or to the proxy that
//! forwards to it). The [`Pool`] keeps at most one idle connection per key;
//! responses hand their connection back when their body has been read fully.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};

use super::proxy::{connect_tunnel, Proxy};
use super::url::Url;
use crate::error::{Error, Kind, Result};

/// Size of the read buffer of a connection.
const READ_BUFFER: usize = 64 * 1024;

/// The byte stream under a connection: plain TCP or TLS over TCP.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
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
    /// Whether an idle connection still looks usable: no EOF and no unexpected bytes waiting.
    fn is_alive(&self) -> bool {
        if !self.io.buffer().is_empty() {
            return false;
        }
        let tcp = self.io.get_ref().tcp();
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
    pub io_timeout: Duration,
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
        Stream::Plain(tcp)
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
    for addr in &addrs {
        match connect_addr(addr, dial) {
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
            format!("timed out after {}s", dial.connect_timeout.as_secs())
        }
        Some(e) => e.to_string(),
        None => "no addresses found".to_string(),
    };
    Err(Error::with_kind(
        Kind::Transient,
        format!("cannot connect to {name}: {why}"),
    ))
}

/// One connection attempt with the configured timeouts applied.
fn connect_addr(addr: &SocketAddr, dial: &Dial<'_>) -> io::Result<TcpStream> {
    let tcp = if dial.connect_timeout.is_zero() {
        TcpStream::connect(addr)?
    } else {
        TcpStream::connect_timeout(addr, dial.connect_timeout)?
    };
    let io_timeout = (!dial.io_timeout.is_zero()).then_some(dial.io_timeout);
    tcp.set_read_timeout(io_timeout)?;
    tcp.set_write_timeout(io_timeout)?;
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
