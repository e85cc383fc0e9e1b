//! A fault-injecting TCP proxy for the integration tests: listens on 127.0.0.1 (a free
//! port), forwards to a real registry, and misbehaves on the requests its rules match
//! (by method and path): trickles or stalls the response after N bytes, resets the
//! connection after N bytes of the request body, or lets the request through and
//! resets the connection instead of passing the answer on. Requests are parsed just enough to
//! find their bodies (barge always sends `Content-Length`); everything else is passed
//! through untouched. Threads only, bounded in time: after its lifetime (or when
//! dropped) the proxy closes every connection and its threads end by themselves.
//! It also counts connections and flights (round trips: client bytes that arrive
//! after answer bytes went back on that connection, or first on it), and records
//! every request it saw (connection, method, target, `Range` header) and the most
//! connections open at once. For ranged downloads it can strip the `Range` header,
//! answer a status or a redirect itself, cut an answer short, or make a 206 lie (a
//! shifted `Content-Range`, or another range's bytes under the right label).

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
    /// Forward the answer's first `after` bytes, then close the client's connection
    /// (FIN): a body cut short.
    CloseMidAnswer { after: usize },
    /// Forward the request without its `Range` header: a registry that ignores Range.
    StripRange,
    /// Answer this status (with a small JSON error body) without forwarding; only
    /// requests without a body match.
    Status(u16),
    /// Answer `307` to the same target at `127.0.0.1:port` (another origin);
    /// only requests without a body match.
    RedirectTo { port: u16 },
    /// Forward; rewrite the answer's `Content-Range` to claim the bytes one further
    /// on (the body unchanged).
    ShiftContentRange,
    /// Forward `Range: bytes=A-B` (A > 0 only) as `bytes=0-(B-A)` and label the
    /// answer `Content-Range: bytes A-B/…`: a right-looking 206 with wrong bytes.
    OtherBytes,
    /// Forward; drop the answer's `Content-Length` (its body then ends with the
    /// connection) and close after `body` bytes of the body: a short body that
    /// looks complete.
    ShortUnsized { body: usize },
}

/// Which requests a fault applies to, and how many times.
#[derive(Debug)]
pub struct Rule {
    pub method: &'static str,
    /// A substring of the request target.
    pub path: String,
    pub action: Action,
    /// How many matching requests get the fault (rules are tried in order).
    pub times: usize,
    /// Only requests that carry a `Range` header match.
    pub ranged: bool,
}

impl Rule {
    pub fn new(method: &'static str, path: &str, action: Action, times: usize) -> Rule {
        Rule {
            method,
            path: path.to_string(),
            action,
            times,
            ranged: false,
        }
    }

    /// Like [`Rule::new`], for requests with a `Range` header only.
    pub fn ranged(method: &'static str, path: &str, action: Action, times: usize) -> Rule {
        Rule {
            ranged: true,
            ..Rule::new(method, path, action, times)
        }
    }
}

/// A request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The client connection it came on (numbered from 1 in accept order).
    pub conn: usize,
    pub method: String,
    pub target: String,
    /// Its `Range` header, as the client sent it.
    pub range: Option<String>,
}

/// Shared by the proxy's threads.
struct Shared {
    upstream: u16,
    rules: Mutex<Vec<Rule>>,
    hits: AtomicUsize,
    connections: AtomicUsize,
    /// Client connections open now, and the most open at once.
    open: AtomicUsize,
    max_open: AtomicUsize,
    flights: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
    until: Instant,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || Instant::now() >= self.until
    }

    /// The action for a request, if a rule with turns left matches (and uses one turn).
    /// A reset only matches a body longer than the bytes it lets through, a status
    /// only a request without a body, other bytes only a range not from 0.
    fn action_for(
        &self,
        method: &str,
        target: &str,
        body_len: usize,
        range: Option<&str>,
    ) -> Option<Action> {
        let mut rules = self.rules.lock().unwrap();
        let rule = rules.iter_mut().find(|r| {
            let fits = match r.action {
                Action::ResetBody { after } => body_len > after,
                Action::Status(_) | Action::RedirectTo { .. } => body_len == 0,
                Action::OtherBytes => range.and_then(parse_range).is_some_and(|(a, _)| a > 0),
                _ => true,
            };
            let range_ok = !r.ranged || range.is_some();
            r.times > 0 && r.method == method && target.contains(&r.path) && fits && range_ok
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
            open: AtomicUsize::new(0),
            max_open: AtomicUsize::new(0),
            flights: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
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

    /// Adds a rule after the ones given at the start.
    pub fn add_rule(&self, rule: Rule) {
        self.shared.rules.lock().unwrap().push(rule);
    }

    /// The most client connections that were open at once.
    pub fn max_open(&self) -> usize {
        self.shared.max_open.load(Ordering::SeqCst)
    }

    /// Every request seen so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
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
    /// The answer's `Content-Range` is to be rewritten.
    rewrite: Option<Rewrite>,
}

/// How an answer's `Content-Range: bytes X-Y/TOTAL` is rewritten.
#[derive(Clone, Copy, Debug)]
enum Rewrite {
    /// To `bytes X+1-Y+1/TOTAL`.
    Shift,
    /// To `bytes A-B/TOTAL`.
    Claim(u64, u64),
    /// No `Content-Length`, and the connection closed after this many body bytes.
    Unsized(usize),
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
    let conn = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_open.fetch_max(open, Ordering::SeqCst);
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
    let was_reset = requests(conn, &client, &upstream, &armed, &done, &shared);
    shared.open.fetch_sub(1, Ordering::SeqCst);
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
    conn: usize,
    mut client: &TcpStream,
    mut upstream: &TcpStream,
    armed: &Mutex<Armed>,
    done: &AtomicBool,
    shared: &Shared,
) -> bool {
    let mut pending = Vec::new();
    loop {
        let Some(mut head_len) = read_head(client, &mut pending, armed, done, shared) else {
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
        let range = header(&head, "range");
        shared.seen.lock().unwrap().push(Seen {
            conn,
            method: method.to_string(),
            target: target.to_string(),
            range: range.clone(),
        });
        let action = shared.action_for(method, target, body_len, range.as_deref());
        arm(armed, action, range.as_deref());
        let answer = match action {
            Some(Action::Status(code)) => Some(status_answer(code)),
            Some(Action::RedirectTo { port }) => Some(format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{port}{target}\r\n\
                 Content-Length: 0\r\n\r\n"
            )),
            _ => None,
        };
        if let Some(answer) = answer {
            pending.drain(..head_len);
            if client.write_all(answer.as_bytes()).is_err() {
                return false;
            }
            armed.lock().unwrap().answered = true;
            continue;
        }
        let new_head = match (action, range.as_deref().and_then(parse_range)) {
            (Some(Action::StripRange), _) => Some(edit_head(&head, "range", None)),
            (Some(Action::OtherBytes), Some((a, b))) => {
                let other = format!("bytes=0-{}", b.saturating_sub(a));
                Some(edit_head(&head, "range", Some(&other)))
            }
            _ => None,
        };
        if let Some(h) = new_head {
            pending.splice(..head_len, h.into_bytes());
            head_len = pending
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or(0)
                + 4;
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

/// Arms (or disarms) the fault for the answer to the request now going upstream.
fn arm(armed: &Mutex<Armed>, action: Option<Action>, range: Option<&str>) {
    let mut armed = armed.lock().unwrap();
    armed.forwarded = 0;
    armed.action = match action {
        Some(
            a @ (Action::Trickle { .. }
            | Action::Stall { .. }
            | Action::DropAnswer
            | Action::CloseAfterAnswer
            | Action::CloseMidAnswer { .. }),
        ) => Some(a),
        _ => None,
    };
    armed.rewrite = match (action, range.and_then(parse_range)) {
        (Some(Action::ShiftContentRange), _) => Some(Rewrite::Shift),
        (Some(Action::OtherBytes), Some((a, b))) => Some(Rewrite::Claim(a, b)),
        (Some(Action::ShortUnsized { body }), _) => Some(Rewrite::Unsized(body)),
        _ => None,
    };
}

/// A whole answer with `code` and a registry-style JSON error body.
fn status_answer(code: u16) -> String {
    let body = format!(r#"{{"errors":[{{"code":"UNKNOWN","message":"fault proxy: {code}"}}]}}"#);
    format!(
        "HTTP/1.1 {code} Fault\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The first value of header `name` (case-insensitive) in a head.
fn header(head: &str, name: &str) -> Option<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
}

/// `head` with header `name` removed, or replaced by `name: value`.
fn edit_head(head: &str, name: &str, value: Option<&str>) -> String {
    let mut out = String::new();
    for line in head.split("\r\n") {
        let named = line
            .split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(name));
        match (named, value) {
            (false, _) if !line.is_empty() => out.push_str(&format!("{line}\r\n")),
            (true, Some(v)) => out.push_str(&format!("{name}: {v}\r\n")),
            _ => {}
        }
    }
    out.push_str("\r\n");
    out
}

/// `bytes=A-B` as (A, B).
fn parse_range(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A response head with its `Content-Range` rewritten.
fn rewrite_content_range(head: &str, how: Rewrite) -> String {
    let Some(old) = header(head, "content-range") else {
        return head.to_string();
    };
    let parsed = old
        .strip_prefix("bytes ")
        .and_then(|v| v.split_once('/'))
        .and_then(|(r, total)| {
            let (x, y) = r.split_once('-')?;
            Some((x.parse::<u64>().ok()?, y.parse::<u64>().ok()?, total))
        });
    let Some((x, y, total)) = parsed else {
        return head.to_string();
    };
    let (a, b) = match how {
        Rewrite::Shift => (x + 1, y + 1),
        Rewrite::Claim(a, b) => (a, b),
        Rewrite::Unsized(_) => return head.to_string(),
    };
    edit_head(
        head.trim_end_matches("\r\n"),
        "Content-Range",
        Some(&format!("bytes {a}-{b}/{total}")),
    )
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
    let mut held = Vec::new();
    while !shared.stopping() && !done.load(Ordering::SeqCst) {
        let n = match upstream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if is_timeout(&e) => continue,
            Err(_) => break,
        };
        let rewrite = armed.lock().unwrap().rewrite;
        let data = match rewrite {
            None => buf[..n].to_vec(),
            Some(how) => {
                held.extend_from_slice(&buf[..n]);
                let Some(end) = held.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&held[..end + 4]).into_owned();
                let head = match how {
                    Rewrite::Unsized(_) => edit_head(&head, "content-length", None),
                    _ => rewrite_content_range(&head, how),
                };
                let mut a = armed.lock().unwrap();
                a.rewrite = None;
                if let Rewrite::Unsized(body) = how {
                    a.action = Some(Action::CloseMidAnswer {
                        after: head.len() + body,
                    });
                    a.forwarded = 0;
                }
                drop(a);
                let mut data = head.into_bytes();
                data.extend_from_slice(&held[end + 4..]);
                held.clear();
                data
            }
        };
        if !deliver(&mut client, &data, armed, done, shared) {
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
            Some(Action::CloseMidAnswer { after }) => {
                let n = after.saturating_sub(forwarded).min(data.len());
                if n == 0 || client.write_all(&data[..n]).is_err() {
                    return false;
                }
                armed.lock().unwrap().forwarded += n;
                data = &data[n..];
                continue;
            }
            Some(Action::Trickle { after, every }) => (after, Some(every)),
            Some(Action::Stall { after }) => (after, None),
            Some(Action::DropAnswer) => {
                armed.lock().unwrap().forwarded += data.len();
                return true;
            }
            Some(
                Action::ResetBody { .. }
                | Action::StripRange
                | Action::Status(_)
                | Action::RedirectTo { .. }
                | Action::ShiftContentRange
                | Action::OtherBytes
                | Action::ShortUnsized { .. },
            ) => unreachable!("never armed"),
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
