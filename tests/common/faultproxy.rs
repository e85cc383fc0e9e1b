//! A fault-injecting TCP proxy for the integration tests: listens on 127.0.0.1 (a free
//! port), forwards to a real registry, and misbehaves on the requests its rules match
//! (by method and path): trickles or stalls the response after N bytes, resets the
//! connection after N bytes of the request body, or lets the request through and
//! resets the connection instead of passing the answer on. Requests are parsed just
//! enough to find their bodies (barge always sends `Content-Length`), responses just
//! enough to find their ends (status, the method asked, `Content-Length`, chunked
//! framing; without a length a response ends with the connection); everything else is
//! passed through untouched. Pipelining is tolerated the way many HTTP/1.1 servers do:
//! a request sent before the answer to the one before it went back is read (and recorded,
//! in arrival order), but it is neither matched against the rules, nor forwarded, nor
//! answered by the proxy until that answer went back whole, so each fault hits the
//! answer to its own request, and a request dropped before its turn (its connection
//! closed by a fault) uses up no rule's turn. Threads only, bounded in time: after its
//! lifetime (or when dropped) the proxy closes every connection and its threads end by
//! themselves.
//! It also counts connections and flights (round trips: client bytes that arrive
//! after answer bytes went back on that connection, or first on it), and records
//! every request it saw (connection, method, target, `Range` header) in arrival order,
//! and the most connections open at once. For ranged downloads it can strip the `Range`
//! header, answer a status or a redirect itself, cut an answer short, or make a 206 lie
//! (a shifted `Content-Range`, or another range's bytes under the right label).
//! It can also throttle answers to a rate per connection (a token bucket kept across
//! the connection's throttled answers), so N busy connections get N times that rate:
//! a long lossy link where one TCP flow gets a fraction of the line.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How often blocked proxy threads look at the clock and the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// How often a pipelined request looks whether its turn came.
const TURN_POLL: Duration = Duration::from_millis(2);
/// The most request bytes read ahead from a client.
const MAX_PENDING: usize = 1 << 20;
/// The longest response head (or chunk-size or trailer line) the proxy follows.
const MAX_HEAD: usize = 64 << 10;
/// The most bytes a throttled answer sends in one write.
const THROTTLE_SLICE: usize = 16 << 10;
/// A throttled connection may send at most this fraction of a second's bytes at once
/// (what it saved while idle or while the proxy slept too long).
const THROTTLE_BURST: usize = 20;

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
    /// Forward the request and its whole answer, then close the client's connection
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
    /// Forward the answer at most `per_second` bytes a second (head included). The
    /// limit is the connection's: throttled answers on one connection share it (one
    /// busy connection gets `per_second`, N get N times that), with a burst of at
    /// most 1/20 s of bytes after a pause. Reads from the registry are not throttled
    /// (its socket's buffer backs up).
    Throttle { per_second: usize },
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

/// Shared by a connection's two pumps: the fault armed for the response now on its way,
/// and how many responses are due and went back whole (a pipelined request waits for
/// its turn).
#[derive(Default)]
struct Armed {
    action: Option<Action>,
    /// Response bytes forwarded since the fault was armed.
    forwarded: usize,
    /// Answer bytes went back since the client last sent (the next bytes it sends start a flight).
    answered: bool,
    /// The answer's `Content-Range` is to be rewritten.
    rewrite: Option<Rewrite>,
    /// The response on its way answers a HEAD: no body follows its head.
    to_head: bool,
    /// Requests forwarded upstream or answered by the proxy itself, so far.
    sent: usize,
    /// Responses that went back to the client whole, so far.
    complete: usize,
    /// The responses pump ended: no response completes any more.
    ended: bool,
    /// The connection's throttle, once an answer on it was throttled.
    bucket: Option<Bucket>,
}

/// A token bucket: how many bytes a throttled connection may send now.
struct Bucket {
    per_second: usize,
    /// Bytes that may go now (at most [`Bucket::burst`]).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl Bucket {
    fn new(per_second: usize) -> Bucket {
        let mut bucket = Bucket {
            per_second: per_second.max(1),
            tokens: 0.0,
            at: Instant::now(),
        };
        bucket.tokens = bucket.burst();
        bucket
    }

    fn burst(&self) -> f64 {
        (self.per_second / THROTTLE_BURST).max(1) as f64
    }

    /// How many of `want` bytes may go now (their tokens are spent), or how long to
    /// wait before some may.
    fn take(&mut self, want: usize) -> Result<usize, Duration> {
        let now = Instant::now();
        let earned = self.per_second as f64 * (now - self.at).as_secs_f64();
        self.tokens = (self.tokens + earned).min(self.burst());
        self.at = now;
        let slice = want.min(THROTTLE_SLICE).min(self.burst() as usize).max(1);
        if self.tokens >= slice as f64 {
            self.tokens -= slice as f64;
            return Ok(slice);
        }
        let missing = slice as f64 - self.tokens;
        Err(Duration::from_secs_f64(missing / self.per_second as f64))
    }
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

/// Client → upstream, one request at a time (a pipelined one waits until the answer
/// before it went back whole); arms response faults, performs resets.
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
        let range = header(&head, "range");
        shared.seen.lock().unwrap().push(Seen {
            conn,
            method: method.to_string(),
            target: target.to_string(),
            range: range.clone(),
        });
        if !wait_turn(client, &mut pending, armed, shared) {
            return false;
        }
        // Matched only now: a request dropped before its turn uses up no rule's turn.
        let action = shared.action_for(method, target, body_len, range.as_deref());
        arm(armed, action, range.as_deref(), method == "HEAD");
        if let Some(answer) = own_answer(action, target) {
            pending.drain(..head_len);
            if client.write_all(answer.as_bytes()).is_err() {
                return false;
            }
            let mut a = armed.lock().unwrap();
            a.answered = true;
            a.complete += 1;
            continue;
        }
        let reset_after = match action {
            Some(Action::ResetBody { after }) => Some(after),
            _ => None,
        };
        let body_budget = reset_after.unwrap_or(body_len);
        if !forward_head(upstream, &mut pending, head_len, action, range.as_deref())
            || !copy_body(client, upstream, &mut pending, body_budget, done, shared)
        {
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
            // The whole answer goes back; requests pipelined behind it are dropped.
            wait_turn(client, &mut pending, armed, shared);
            return false;
        }
    }
}

/// Waits until every answer due on the connection went back whole: a pipelined
/// request's turn (what the client sends meanwhile is kept in `pending`, counting
/// flights as [`read_head`] does). False when the connection or the proxy ended first.
fn wait_turn(
    client: &TcpStream,
    pending: &mut Vec<u8>,
    armed: &Mutex<Armed>,
    shared: &Shared,
) -> bool {
    loop {
        {
            let a = armed.lock().unwrap();
            if a.complete >= a.sent {
                return true;
            }
            if a.ended {
                return false;
            }
        }
        if shared.stopping() {
            return false;
        }
        if pending.len() > MAX_PENDING {
            thread::sleep(TURN_POLL);
        } else if readable(client, TURN_POLL) && !read_client(client, pending, armed, shared) {
            return false;
        }
    }
}

/// Arms (or disarms) the fault for the answer to the request now going upstream (or
/// answered by the proxy), and counts that request as sent.
fn arm(armed: &Mutex<Armed>, action: Option<Action>, range: Option<&str>, to_head: bool) {
    let mut armed = armed.lock().unwrap();
    armed.forwarded = 0;
    armed.to_head = to_head;
    armed.sent += 1;
    armed.action = match action {
        Some(
            a @ (Action::Trickle { .. }
            | Action::Stall { .. }
            | Action::DropAnswer
            | Action::CloseAfterAnswer
            | Action::CloseMidAnswer { .. }
            | Action::Throttle { .. }),
        ) => Some(a),
        _ => None,
    };
    if let Some(Action::Throttle { per_second }) = action {
        if armed.bucket.as_ref().map(|b| b.per_second) != Some(per_second.max(1)) {
            armed.bucket = Some(Bucket::new(per_second));
        }
    }
    armed.rewrite = match (action, range.and_then(parse_range)) {
        (Some(Action::ShiftContentRange), _) => Some(Rewrite::Shift),
        (Some(Action::OtherBytes), Some((a, b))) => Some(Rewrite::Claim(a, b)),
        (Some(Action::ShortUnsized { body }), _) => Some(Rewrite::Unsized(body)),
        _ => None,
    };
}

/// The answer the proxy gives itself instead of forwarding, if the action is one.
fn own_answer(action: Option<Action>, target: &str) -> Option<String> {
    match action {
        Some(Action::Status(code)) => Some(status_answer(code)),
        Some(Action::RedirectTo { port }) => Some(format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{port}{target}\r\n\
             Content-Length: 0\r\n\r\n"
        )),
        _ => None,
    }
}

/// Sends the request head at the start of `pending` upstream (without its `Range`, or
/// with another one, as the action says) and takes it out of `pending`; false when the
/// registry is gone.
fn forward_head(
    mut upstream: &TcpStream,
    pending: &mut Vec<u8>,
    head_len: usize,
    action: Option<Action>,
    range: Option<&str>,
) -> bool {
    let head: Vec<u8> = pending.drain(..head_len).collect();
    let text = || String::from_utf8_lossy(&head).into_owned();
    let edited = match (action, range.and_then(parse_range)) {
        (Some(Action::StripRange), _) => Some(edit_head(&text(), "range", None)),
        (Some(Action::OtherBytes), Some((a, b))) => {
            let other = format!("bytes=0-{}", b.saturating_sub(a));
            Some(edit_head(&text(), "range", Some(&other)))
        }
        _ => None,
    };
    let bytes = edited.as_ref().map_or(&head[..], |h| h.as_bytes());
    upstream.write_all(bytes).is_ok()
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
    client: &TcpStream,
    pending: &mut Vec<u8>,
    armed: &Mutex<Armed>,
    done: &AtomicBool,
    shared: &Shared,
) -> Option<usize> {
    loop {
        if pending.first().is_some_and(|b| !b.is_ascii_uppercase()) {
            return Some(0);
        }
        if let Some(end) = head_end(pending) {
            return Some(end);
        }
        if shared.stopping() || done.load(Ordering::SeqCst) || pending.len() > MAX_PENDING {
            return None;
        }
        if !read_client(client, pending, armed, shared) {
            return None;
        }
    }
}

/// One read from the client into `pending` (bytes after answer bytes went back start
/// a flight); false at its end or on an error, true otherwise (also after a timeout).
fn read_client(
    mut client: &TcpStream,
    pending: &mut Vec<u8>,
    armed: &Mutex<Armed>,
    shared: &Shared,
) -> bool {
    let mut buf = [0u8; 16 * 1024];
    match client.read(&mut buf) {
        Ok(0) => false,
        Ok(n) => {
            if std::mem::take(&mut armed.lock().unwrap().answered) {
                shared.flights.fetch_add(1, Ordering::SeqCst);
            }
            pending.extend_from_slice(&buf[..n]);
            true
        }
        Err(e) => is_timeout(&e),
    }
}

/// Whether the client has bytes (or its end) to read within `wait`.
fn readable(client: &TcpStream, wait: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: client.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, for a descriptor we own, and its count.
    let ready = unsafe { libc::poll(&mut fd, 1, wait.as_millis() as libc::c_int) };
    ready > 0
}

/// The length of the head at the start of `bytes` (up to its blank line), once whole.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
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

/// Upstream → client, response by response, with the armed fault applied to the bytes
/// of the current response; counts the responses that went back whole.
fn responses(
    mut upstream: TcpStream,
    mut client: TcpStream,
    armed: &Mutex<Armed>,
    done: &AtomicBool,
    shared: &Shared,
) {
    let mut buf = [0u8; 64 * 1024];
    let mut pump = Pump::default();
    while !shared.stopping() && !done.load(Ordering::SeqCst) {
        let n = match upstream.read(&mut buf) {
            Ok(0) => {
                // A head cut short by the registry's close goes back as it is.
                if !pump.held.is_empty() {
                    deliver(&mut client, &pump.held, armed, done, shared);
                }
                break;
            }
            Ok(n) => n,
            Err(e) if is_timeout(&e) => continue,
            Err(_) => break,
        };
        pump.held.extend_from_slice(&buf[..n]);
        if !pump.forward(&mut client, armed, done, shared) {
            break;
        }
    }
    armed.lock().unwrap().ended = true;
    if !done.load(Ordering::SeqCst) {
        // The registry closed: so does the proxy, towards the client.
        let _ = client.shutdown(Shutdown::Write);
    }
}

/// The responses coming back on one connection, followed through their framing.
#[derive(Default)]
struct Pump {
    /// Bytes from the registry not forwarded yet.
    held: Vec<u8>,
    /// The body now coming; `None` while a head is awaited.
    body: Option<Body>,
}

impl Pump {
    /// Forwards what `held` makes whole (a head, body bytes) as the armed fault allows,
    /// and counts each response that went back whole; false once the client is gone.
    fn forward(
        &mut self,
        client: &mut TcpStream,
        armed: &Mutex<Armed>,
        done: &AtomicBool,
        shared: &Shared,
    ) -> bool {
        loop {
            let (out, ends) = match self.body.as_mut() {
                None => match self.take_head(armed) {
                    Some(taken) => taken,
                    None => return true,
                },
                Some(_) if self.held.is_empty() => return true,
                Some(body) => {
                    let (n, ends) = body.take(&self.held);
                    (self.held.drain(..n).collect(), ends)
                }
            };
            if ends {
                self.body = None;
            }
            if !out.is_empty() && !deliver(client, &out, armed, done, shared) {
                return false;
            }
            if ends {
                armed.lock().unwrap().complete += 1;
            }
        }
    }

    /// The next response head once whole in `held` (rewritten as armed), and whether
    /// the response ends with it. Bytes that cannot start a head go through as a body
    /// that ends with the connection.
    fn take_head(&mut self, armed: &Mutex<Armed>) -> Option<(Vec<u8>, bool)> {
        let Some(end) = head_end(&self.held) else {
            if self.held.is_empty() || could_be_head(&self.held) {
                return None;
            }
            self.body = Some(Body::UntilClose);
            return Some((std::mem::take(&mut self.held), false));
        };
        let raw: Vec<u8> = self.held.drain(..end).collect();
        let head = String::from_utf8_lossy(&raw).into_owned();
        let to_head = armed.lock().unwrap().to_head;
        let Some(body) = body_after(&head, to_head) else {
            return Some((raw, false)); // interim: the final head follows
        };
        let out = rewrite_head(&head, armed).map_or(raw, String::into_bytes);
        match body {
            Body::Sized(0) => Some((out, true)),
            body => {
                self.body = Some(body);
                Some((out, false))
            }
        }
    }
}

/// Whether `bytes` may be the start of a response head still arriving.
fn could_be_head(bytes: &[u8]) -> bool {
    let start = &bytes[..bytes.len().min(5)];
    bytes.len() <= MAX_HEAD && b"HTTP/".starts_with(start)
}

/// The head as the armed rewrite has it, if one is armed (it is used up).
fn rewrite_head(head: &str, armed: &Mutex<Armed>) -> Option<String> {
    let mut a = armed.lock().unwrap();
    let how = a.rewrite.take()?;
    let Rewrite::Unsized(body) = how else {
        return Some(rewrite_content_range(head, how));
    };
    let head = edit_head(head, "content-length", None);
    a.action = Some(Action::CloseMidAnswer {
        after: head.len() + body,
    });
    a.forwarded = 0;
    Some(head)
}

/// How a response body ends.
#[derive(Debug)]
enum Body {
    /// After this many more bytes.
    Sized(u64),
    /// With its last chunk and trailer.
    Chunked(Chunk),
    /// With the connection: no length, or framing the proxy cannot follow.
    UntilClose,
}

/// Where a chunked body stands.
#[derive(Debug)]
enum Chunk {
    /// In a chunk-size line (its bytes so far).
    Size(Vec<u8>),
    /// In chunk data: the bytes left, its closing CRLF included.
    Data(u64),
    /// In the trailer after the last chunk (the current line so far): a blank line ends it.
    Trailer(Vec<u8>),
}

/// The body after a response `head` (to a HEAD request if `to_head`); `None` for an
/// interim (1xx) head, which the final head follows.
fn body_after(head: &str, to_head: bool) -> Option<Body> {
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = header(head, "transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let length = header(head, "content-length").and_then(|v| v.parse().ok());
    Some(match status {
        101 => Body::UntilClose,
        100..=199 => return None,
        204 | 304 => Body::Sized(0),
        _ if to_head => Body::Sized(0),
        _ if chunked => Body::Chunked(Chunk::Size(Vec::new())),
        _ => length.map_or(Body::UntilClose, Body::Sized),
    })
}

impl Body {
    /// How many of the first bytes of `data` belong to this body, and whether it
    /// ends with them.
    fn take(&mut self, data: &[u8]) -> (usize, bool) {
        match self {
            Body::Sized(left) => {
                let n = (*left).min(data.len() as u64);
                *left -= n;
                (n as usize, *left == 0)
            }
            Body::UntilClose => (data.len(), false),
            Body::Chunked(chunk) => take_chunked(chunk, data).unwrap_or_else(|| {
                *self = Body::UntilClose;
                (data.len(), false)
            }),
        }
    }
}

/// [`Body::take`] for a chunked body; `None` when its framing makes no sense.
fn take_chunked(chunk: &mut Chunk, data: &[u8]) -> Option<(usize, bool)> {
    let mut at = 0;
    while at < data.len() {
        let line = match chunk {
            Chunk::Data(left) => {
                let n = (*left).min((data.len() - at) as u64);
                *left -= n;
                at += n as usize;
                if *left == 0 {
                    *chunk = Chunk::Size(Vec::new());
                }
                continue;
            }
            Chunk::Size(line) | Chunk::Trailer(line) => line,
        };
        let rest = &data[at..];
        let nl = rest.iter().position(|&b| b == b'\n');
        line.extend_from_slice(&rest[..nl.unwrap_or(rest.len())]);
        if line.len() > MAX_HEAD {
            return None;
        }
        let Some(nl) = nl else {
            return Some((data.len(), false));
        };
        at += nl + 1;
        let text = String::from_utf8_lossy(line)
            .trim_end_matches('\r')
            .to_string();
        *chunk = match chunk {
            Chunk::Size(_) => match chunk_size(&text)? {
                0 => Chunk::Trailer(Vec::new()),
                n => Chunk::Data(n.checked_add(2)?),
            },
            _ if text.is_empty() => return Some((at, true)),
            _ => Chunk::Trailer(Vec::new()),
        };
    }
    Some((at, false))
}

/// The size in a chunk-size line (`HEX[;extensions]`).
fn chunk_size(line: &str) -> Option<u64> {
    let hex = line.split(';').next()?.trim();
    u64::from_str_radix(hex, 16).ok()
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
            Some(Action::Throttle { per_second }) => {
                let Some(n) = throttle(armed, per_second, data.len(), done, shared) else {
                    return false;
                };
                if client.write_all(&data[..n]).is_err() {
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

/// Waits until the connection's throttle lets some of `want` bytes go: how many;
/// `None` if the connection or the proxy ended meanwhile.
fn throttle(
    armed: &Mutex<Armed>,
    per_second: usize,
    want: usize,
    done: &AtomicBool,
    shared: &Shared,
) -> Option<usize> {
    loop {
        let taken = {
            let mut a = armed.lock().unwrap();
            let bucket = a.bucket.get_or_insert_with(|| Bucket::new(per_second));
            bucket.take(want)
        };
        match taken {
            Ok(n) => return Some(n),
            Err(wait) => {
                let wait = wait.max(Duration::from_millis(1));
                if !sleep_unless_done(wait, done, shared) {
                    return None;
                }
            }
        }
    }
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
