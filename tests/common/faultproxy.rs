//! A fault-injecting TCP proxy for the integration tests: listens on 127.0.0.1 (a free
//! port), forwards to a real registry, and misbehaves on the requests its rules match
//! (by method and path): trickles or stalls the response after N bytes, resets the
//! connection after N bytes of the request body, or lets the request through and
//! resets the connection instead of passing the answer on. Requests are parsed just enough to
//! find their bodies (barge always sends `Content-Length`); everything else is passed
//! through untouched. Threads only, bounded in time: after its lifetime (or when
//! dropped) the proxy closes every connection and its threads end by themselves.
//! It also counts connections and flights (round trips: client bytes that arrive
//! after answer bytes went back on that connection, or first on it).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How often blocked proxy threads look at the clock and the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// What to do to a matched request.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    /// Forward the response's first `after` bytes, then one byte every `every`.
    Trickle { after: usize, every: Duration },
    /// Forward the response's first `after` bytes, then nothing (the connection stays
    /// open: with `after: 0` the request is accepted and never answered).
    Stall { after: usize },
    /// Forward `after` bytes of the request body, then reset both connections (RST);
    /// only requests with a longer body match.
    ResetBody { after: usize },
    /// Forward the whole request; once the registry answers, drop the answer and
    /// reset the client's connection (the request took effect, the client cannot know).
    DropAnswer,
    /// Forward the request and its answer, then close the client's connection
    /// (FIN), dropping requests pipelined behind it: a keep-alive close mid-flight.
    CloseAfterAnswer,
}

/// Which requests a fault applies to, and how many times.
#[derive(Debug)]
pub struct Rule {
    pub method: &'static str,
    /// A substring of the request target.
    pub path: &'static str,
    pub action: Action,
    /// How many matching requests get the fault (rules are tried in order).
    pub times: usize,
}

impl Rule {
    pub fn new(method: &'static str, path: &'static str, action: Action, times: usize) -> Rule {
        Rule {
            method,
            path,
            action,
            times,
        }
    }
}

/// Shared by the proxy's threads.
struct Shared {
    upstream: u16,
    rules: Mutex<Vec<Rule>>,
    hits: AtomicUsize,
    connections: AtomicUsize,
    flights: AtomicUsize,
    stop: AtomicBool,
    until: Instant,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || Instant::now() >= self.until
    }

    /// The action for a request, if a rule with turns left matches (and uses one turn).
    /// A reset only matches a body longer than the bytes it lets through.
    fn action_for(&self, method: &str, target: &str, body_len: usize) -> Option<Action> {
        let mut rules = self.rules.lock().unwrap();
        let rule = rules.iter_mut().find(|r| {
            let long_enough = match r.action {
                Action::ResetBody { after } => body_len > after,
                _ => true,
            };
            r.times > 0 && r.method == method && target.contains(r.path) && long_enough
        })?;
        rule.times -= 1;
        self.hits.fetch_add(1, Ordering::SeqCst);
        Some(rule.action)
    }
}

/// A running proxy; dropping it stops it.
pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Starts a proxy to `127.0.0.1:upstream` that lives at most `lifetime`.
    pub fn start(upstream: u16, rules: Vec<Rule>, lifetime: Duration) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream,
            rules: Mutex::new(rules),
            hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            flights: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            until: Instant::now() + lifetime,
        });
        let s = shared.clone();
        thread::spawn(move || accept_loop(listener, s));
        FaultProxy { port, shared }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT/REPO:TAG`.
    pub fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host())
    }

    /// How many requests got a fault so far.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Round trips so far: on each connection, client bytes that came first or
    /// after answer bytes had gone back.
    pub fn flights(&self) -> usize {
        self.shared.flights.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stopping() {
        match listener.accept() {
            Ok((client, _)) => {
                let s = shared.clone();
                thread::spawn(move || serve(client, s));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL / 5),
            Err(_) => return,
        }
    }
}

/// The fault armed for the response now on its way, shared by a connection's two pumps.
#[derive(Default)]
struct Armed {
    action: Option<Action>,
    /// Response bytes forwarded since the fault was armed.
    forwarded: usize,
    /// Answer bytes went back since the client last sent (the next bytes it sends start a flight).
    answered: bool,
}

/// One client connection: requests upstream (parsed), responses back (faulted when armed).
fn serve(client: TcpStream, shared: Arc<Shared>) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", shared.upstream)) else {
        return;
    };
    for s in [&client, &upstream] {
        let _ = s.set_read_timeout(Some(POLL));
        let _ = s.set_nodelay(true);
    }
    shared.connections.fetch_add(1, Ordering::SeqCst);
    let armed = Arc::new(Mutex::new(Armed {
        answered: true,
        ..Armed::default()
    }));
    let done = Arc::new(AtomicBool::new(false));
    let back = {
        let (from, to) = (upstream.try_clone().unwrap(), client.try_clone().unwrap());
        let (armed, done, shared) = (armed.clone(), done.clone(), shared.clone());
        thread::spawn(move || responses(from, to, &armed, &done, &shared))
    };
    let was_reset = requests(&client, &upstream, &armed, &done, &shared);
    done.store(true, Ordering::SeqCst);
    let _ = back.join();
    if !was_reset {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
    }
    // Dropping the last handles closes both sockets (with RST after a reset).
}

/// Client → upstream, one request at a time; arms response faults, performs resets.
/// True when it ended with a reset.
fn requests(
    client: &TcpStream,
    mut upstream: &TcpStream,
    armed: &Mutex<Armed>,
    done: &AtomicBool,
    shared: &Shared,
) -> bool {
    let mut pending = Vec::new();
    loop {
        let Some(head_len) = read_head(client, &mut pending, armed, done, shared) else {
            return false;
        };
        if head_len == 0 {
            // Not HTTP (a TLS ClientHello: barge probes loopback registries with TLS
            // first): passed through untouched, so the registry's answer says "not TLS".
            let _ = upstream.write_all(&pending);
            pending.clear();
            copy_body(client, upstream, &mut pending, usize::MAX, done, shared);
            return false;
        }
        let head = String::from_utf8_lossy(&pending[..head_len]).into_owned();
        let mut words = head.split(' ');
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let body_len = content_length(&head);
        let action = shared.action_for(method, target, body_len);
        if let Some(
            a @ (Action::Trickle { .. }
            | Action::Stall { .. }
            | Action::DropAnswer
            | Action::CloseAfterAnswer),
        ) = action
        {
            let mut armed = armed.lock().unwrap();
            (armed.action, armed.forwarded) = (Some(a), 0);
        } else {
            let mut armed = armed.lock().unwrap();
            (armed.action, armed.forwarded) = (None, 0);
        }
        let reset_after = match action {
            Some(Action::ResetBody { after }) => Some(after),
            _ => None,
        };
        let body_budget = reset_after.unwrap_or(body_len);
        if upstream.write_all(&pending[..head_len]).is_err() {
            return false;
        }
        pending.drain(..head_len);
        if !copy_body(client, upstream, &mut pending, body_budget, done, shared) {
            return false;
        }
        if reset_after.is_some() {
            set_reset_on_close(client);
            set_reset_on_close(upstream);
            return true;
        }
        if matches!(action, Some(Action::DropAnswer)) {
            wait_for_answer(armed, shared);
            set_reset_on_close(client);
            return true;
        }
        if matches!(action, Some(Action::CloseAfterAnswer)) {
            wait_for_answer(armed, shared);
            thread::sleep(POLL); // the rest of a small answer
            return false;
        }
    }
}

/// Waits (up to 10 s) until the registry's answer has started and been dropped.
fn wait_for_answer(armed: &Mutex<Armed>, shared: &Shared) {
    let end = Instant::now() + Duration::from_secs(10);
    while armed.lock().unwrap().forwarded == 0 && Instant::now() < end && !shared.stopping() {
        thread::sleep(POLL / 5);
    }
}

/// Reads until `pending` holds a whole request head; its length (0 when the bytes
/// are not HTTP), or `None` at the end.
fn read_head(
    mut client: &TcpStream,
    pending: &mut Vec<u8>,
    armed: &Mutex<Armed>,
    done: &AtomicBool,
    shared: &Shared,
) -> Option<usize> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        if pending.first().is_some_and(|b| !b.is_ascii_uppercase()) {
            return Some(0);
        }
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        if shared.stopping() || done.load(Ordering::SeqCst) || pending.len() > 1 << 20 {
            return None;
        }
        match client.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => {
                if std::mem::take(&mut armed.lock().unwrap().answered) {
                    shared.flights.fetch_add(1, Ordering::SeqCst);
                }
                pending.extend_from_slice(&buf[..n]);
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => return None,
        }
    }
}

/// Forwards `len` body bytes (some may be in `pending` already); false when the connection ended.
fn copy_body(
    mut client: &TcpStream,
    mut upstream: &TcpStream,
    pending: &mut Vec<u8>,
    len: usize,
    done: &AtomicBool,
    shared: &Shared,
) -> bool {
    let mut left = len;
    let first = left.min(pending.len());
    if upstream.write_all(&pending[..first]).is_err() {
        return false;
    }
    pending.drain(..first);
    left -= first;
    let mut buf = [0u8; 64 * 1024];
    while left > 0 {
        if shared.stopping() || done.load(Ordering::SeqCst) {
            return false;
        }
        let want = left.min(buf.len());
        match client.read(&mut buf[..want]) {
            Ok(0) => return false,
            Ok(n) => {
                if upstream.write_all(&buf[..n]).is_err() {
                    return false;
                }
                left -= n;
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Upstream → client, with the armed fault applied to the bytes of the current response.
fn responses(
    mut upstream: TcpStream,
    mut client: TcpStream,
    armed: &Mutex<Armed>,
    done: &AtomicBool,
    shared: &Shared,
) {
    let mut buf = [0u8; 64 * 1024];
    while !shared.stopping() && !done.load(Ordering::SeqCst) {
        let n = match upstream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if is_timeout(&e) => continue,
            Err(_) => break,
        };
        if !deliver(&mut client, &buf[..n], armed, done, shared) {
            break;
        }
    }
    if !done.load(Ordering::SeqCst) {
        // The registry closed: so does the proxy, towards the client.
        let _ = client.shutdown(Shutdown::Write);
    }
}

/// Sends `data` to the client as the armed fault allows; false once the client is gone.
fn deliver(
    client: &mut TcpStream,
    mut data: &[u8],
    armed: &Mutex<Armed>,
    done: &AtomicBool,
    shared: &Shared,
) -> bool {
    armed.lock().unwrap().answered = true;
    while !data.is_empty() {
        let (action, forwarded) = {
            let a = armed.lock().unwrap();
            (a.action, a.forwarded)
        };
        let (after, every) = match action {
            None => return client.write_all(data).is_ok(),
            Some(Action::CloseAfterAnswer) => {
                armed.lock().unwrap().forwarded += data.len();
                return client.write_all(data).is_ok();
            }
            Some(Action::Trickle { after, every }) => (after, Some(every)),
            Some(Action::Stall { after }) => (after, None),
            Some(Action::DropAnswer) => {
                armed.lock().unwrap().forwarded += data.len();
                return true;
            }
            Some(Action::ResetBody { .. }) => unreachable!("never armed"),
        };
        let free = after.saturating_sub(forwarded).min(data.len());
        let n = match (free, every) {
            (0, None) => return hold(done, shared),
            (0, Some(every)) => {
                if !sleep_unless_done(every, done, shared) {
                    return false;
                }
                1
            }
            (free, _) => free,
        };
        if client.write_all(&data[..n]).is_err() {
            return false;
        }
        armed.lock().unwrap().forwarded += n;
        data = &data[n..];
    }
    true
}

/// A stalled response: nothing more is sent until the client leaves or the proxy stops.
fn hold(done: &AtomicBool, shared: &Shared) -> bool {
    while sleep_unless_done(POLL, done, shared) {}
    false
}

/// Sleeps `d` in short steps; false if the connection or the proxy ended meanwhile.
fn sleep_unless_done(d: Duration, done: &AtomicBool, shared: &Shared) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if shared.stopping() || done.load(Ordering::SeqCst) {
            return false;
        }
        thread::sleep(POLL.min(end - Instant::now()));
    }
    true
}

/// Makes the socket's close send RST instead of FIN (SO_LINGER with a zero timeout).
fn set_reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a descriptor we own, with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// The request's `Content-Length` (0 without one).
fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
