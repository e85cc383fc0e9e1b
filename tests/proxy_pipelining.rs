//! Tests of the test fault proxy itself (`common/faultproxy.rs`) under HTTP/1.1
//! pipelining: a raw client writes several requests in one go; the proxy must pass
//! each one on only after the answer before it went back whole, so each fault hits
//! the answer to its own request and the answers come back whole and in order. Once
//! in front of a real docker-registry, once in front of a small upstream written here
//! that answers with framings the registry does not use (chunked with a trailer, an
//! interim 1xx head, 204) and notes whether a request came before its time. And the
//! throttle: a rate per connection, kept across the pipelined answers on it.

mod common;

use common::faultproxy::{Action, FaultProxy, Rule};
use common::fixtures::noise;
use common::registry::{Mode, Registry};
use common::sha256_hex;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const PROXY_LIFE: Duration = Duration::from_secs(60);
/// How long a read from a socket may block in these tests.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer as the raw client read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
    /// Interim (1xx) heads before it.
    interim: usize,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }
}

/// Reads one head (up to its blank line).
fn read_head(r: &mut impl BufRead) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).expect("read a head line");
        assert!(n > 0, "the connection ended inside a head: {head:?}");
        head.push_str(&line);
        if line == "\r\n" {
            return head;
        }
    }
}

/// Reads the answer to a request (`head_request`: a HEAD, no body follows).
fn read_answer(r: &mut impl BufRead, head_request: bool) -> Answer {
    let mut interim = 0;
    loop {
        let head = read_head(r);
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        if (100..200).contains(&status) {
            interim += 1;
            continue;
        }
        let mut a = Answer {
            status,
            head,
            body: Vec::new(),
            interim,
        };
        if head_request || status == 204 || status == 304 {
            return a;
        }
        if a.header("transfer-encoding") == Some("chunked") {
            a.body = read_chunked(r);
        } else {
            let len: usize = a.header("content-length").unwrap().parse().unwrap();
            a.body = vec![0; len];
            r.read_exact(&mut a.body).expect("read a body");
        }
        return a;
    }
}

/// A chunked body, decoded (its trailer read and dropped).
fn read_chunked(r: &mut impl BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("read a chunk size");
        let hex = line.trim_end().split(';').next().unwrap();
        let size = usize::from_str_radix(hex, 16).expect("a chunk size");
        if size == 0 {
            read_head(r); // the trailer, up to its blank line
            return body;
        }
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk).expect("read a chunk");
        body.extend_from_slice(&chunk[..size]);
    }
}

/// Sends `requests` (method, target, extra header lines) in one write on one
/// connection to `host` and reads their answers in order.
fn pipeline(host: &str, requests: &[(&str, &str, &str)]) -> Vec<Answer> {
    let stream = TcpStream::connect(host).expect("connect to the proxy");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut flight = String::new();
    for (method, target, extra) in requests {
        flight.push_str(&format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"
        ));
    }
    (&stream).write_all(flight.as_bytes()).unwrap();
    let mut r = BufReader::new(stream);
    requests
        .iter()
        .map(|(method, _, _)| read_answer(&mut r, *method == "HEAD"))
        .collect()
}

/// One request on its own connection to the registry, with a body.
fn exchange(host: &str, method: &str, target: &str, body: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(host).expect("connect to the registry");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    read_answer(&mut BufReader::new(stream), false)
}

/// Uploads `blob` to `repo` in the registry (a session, then one PUT); its digest.
fn upload(reg: &Registry, repo: &str, blob: &[u8]) -> String {
    let digest = format!("sha256:{}", sha256_hex(blob));
    let host = reg.host();
    let started = exchange(&host, "POST", &format!("/v2/{repo}/blobs/uploads/"), b"");
    assert_eq!(started.status, 202, "{started:?}");
    let location = started.header("location").expect("a Location").to_string();
    let path = location.trim_start_matches(&format!("http://{host}"));
    let sep = if path.contains('?') { '&' } else { '?' };
    let put = exchange(&host, "PUT", &format!("{path}{sep}digest={digest}"), blob);
    assert_eq!(put.status, 201, "{put:?}");
    digest
}

/// Six requests for one blob in one flight; faults on the second, third and fourth
/// only: each answer is whole, in order, and faulted only if its own request matched.
#[test]
fn pipelined_requests_get_their_own_faults_in_order() {
    let reg = Registry::start(Mode::Plain);
    let blob = noise(1 << 20, 4242);
    let digest = upload(&reg, "pipe/blob", &blob);
    let trickle = Action::Trickle {
        after: 64,
        every: Duration::from_millis(1),
    };
    let rules = vec![
        Rule::ranged("GET", "?shift", Action::ShiftContentRange, 1),
        Rule::ranged("GET", "?trickle", trickle, 1),
        Rule::new("GET", "?status", Action::Status(503), 1),
    ];
    let proxy = FaultProxy::start(reg.port, rules, PROXY_LIFE);
    let path = format!("/v2/pipe/blob/blobs/{digest}");
    let targets: Vec<String> = ["", "?shift", "?trickle", "?status", "?head", "?last"]
        .iter()
        .map(|q| format!("{path}{q}"))
        .collect();
    let requests = [
        ("GET", targets[0].as_str(), ""),
        ("GET", targets[1].as_str(), "Range: bytes=10-19\r\n"),
        ("GET", targets[2].as_str(), "Range: bytes=100-199\r\n"),
        ("GET", targets[3].as_str(), ""),
        ("HEAD", targets[4].as_str(), ""),
        ("GET", targets[5].as_str(), ""),
    ];
    let answers = pipeline(&proxy.host(), &requests);
    let size = blob.len();

    let whole = |a: &Answer| a.status == 200 && a.body == blob;
    assert!(
        whole(&answers[0]),
        "the first answer: {:?}",
        answers[0].head
    );
    assert_eq!(answers[1].status, 206, "{:?}", answers[1].head);
    let shifted = format!("bytes 11-20/{size}");
    assert_eq!(answers[1].header("content-range"), Some(shifted.as_str()));
    assert_eq!(answers[1].body, blob[10..20]);
    assert_eq!(answers[2].status, 206, "{:?}", answers[2].head);
    let asked = format!("bytes 100-199/{size}");
    assert_eq!(answers[2].header("content-range"), Some(asked.as_str()));
    assert_eq!(answers[2].body, blob[100..200]);
    assert_eq!(answers[3].status, 503, "{:?}", answers[3].head);
    assert!(String::from_utf8_lossy(&answers[3].body).contains("fault proxy: 503"));
    assert_eq!(answers[4].status, 200, "{:?}", answers[4].head);
    assert_eq!(
        answers[4].header("content-length"),
        Some(&*size.to_string())
    );
    assert!(whole(&answers[5]), "the last answer: {:?}", answers[5].head);

    assert_eq!(proxy.hits(), 3, "faults used");
    let seen: Vec<(usize, String)> = proxy
        .seen()
        .into_iter()
        .map(|s| (s.conn, s.target))
        .collect();
    let sent: Vec<(usize, String)> = targets.iter().map(|t| (1, t.clone())).collect();
    assert_eq!(seen, sent, "the requests seen, in order");
    assert_eq!(proxy.connections(), 1);
    assert_eq!(proxy.flights(), 1, "one flight of six requests");
}

/// What the test upstream noted about one request.
#[derive(Debug, PartialEq)]
struct Noted {
    request: String,
    /// Bytes of a later request had come before this answer was written whole.
    early: bool,
}

/// The test upstream: answers one connection's requests by target, each answer in
/// pieces a little apart, and notes each request and whether the next one came early.
fn upstream() -> (u16, mpsc::Receiver<Noted>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test upstream");
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let request = line.trim_end().to_string();
            read_head(&mut r); // the rest of the head; no body
            let pieces = answer_pieces(&request);
            let (last, first) = pieces.split_last().unwrap();
            let mut out = &stream;
            for piece in first {
                out.write_all(piece.as_bytes()).unwrap();
                thread::sleep(Duration::from_millis(30));
            }
            let early = !r.buffer().is_empty() || more_waiting(&stream);
            out.write_all(last.as_bytes()).unwrap();
            if tx.send(Noted { request, early }).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

/// Whether bytes wait to be read on `stream`, without blocking.
fn more_waiting(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let waiting = stream.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0);
    stream.set_nonblocking(false).unwrap();
    waiting
}

/// The test upstream's answer to a request line, in the pieces it writes.
fn answer_pieces(request: &str) -> Vec<&'static str> {
    match request {
        "GET /chunked HTTP/1.1" => vec![
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            "lo\r\n6;note=x\r\n world\r",
            "\n0\r\nX-Trailer: yes\r\n\r\n",
        ],
        "GET /interim HTTP/1.1" => vec![
            "HTTP/1.1 100 Continue\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            "fives",
        ],
        "GET /empty HTTP/1.1" => vec!["HTTP/1.1 204 No Content\r\n", "\r\n"],
        "HEAD /sized HTTP/1.1" => vec!["HTTP/1.1 200 OK\r\n", "Content-Length: 1000\r\n\r\n"],
        "GET /sized HTTP/1.1" => vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234",
            "56789",
        ],
        _ => vec!["HTTP/1.1 404 Not Found\r\n", "Content-Length: 0\r\n\r\n"],
    }
}

/// Pipelined requests reach the upstream one at a time, each after the answer before
/// it went back whole, whatever that answer's framing: chunked with extensions and a
/// trailer, an interim head first, 204, HEAD with a length, a plain length.
#[test]
fn pipelined_requests_go_upstream_only_after_the_answer_before() {
    let (port, noted) = upstream();
    let proxy = FaultProxy::start(port, Vec::new(), PROXY_LIFE);
    let requests = [
        ("GET", "/chunked", ""),
        ("GET", "/interim", ""),
        ("GET", "/empty", ""),
        ("HEAD", "/sized", ""),
        ("GET", "/sized", ""),
        ("GET", "/chunked", ""),
    ];
    let answers = pipeline(&proxy.host(), &requests);
    let got: Vec<(u16, &[u8], usize)> = answers
        .iter()
        .map(|a| (a.status, &a.body[..], a.interim))
        .collect();
    let expected: Vec<(u16, &[u8], usize)> = vec![
        (200, b"hello world", 0),
        (200, b"fives", 1),
        (204, b"", 0),
        (200, b"", 0),
        (200, b"0123456789", 0),
        (200, b"hello world", 0),
    ];
    assert_eq!(got, expected, "the answers, in order");
    let noted: Vec<Noted> = noted.iter().take(requests.len()).collect();
    let expected: Vec<Noted> = requests
        .iter()
        .map(|(method, target, _)| Noted {
            request: format!("{method} {target} HTTP/1.1"),
            early: false,
        })
        .collect();
    assert_eq!(noted, expected, "what the upstream saw");
    assert_eq!(proxy.flights(), 1, "one flight of six requests");
}

/// What `f` gives, and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// A throttle limits each connection, not the proxy: a 2 MiB blob through a proxy
/// throttled at 1 MiB/s takes about 2 s on one connection (as two pipelined halves:
/// the limit holds across answers), two connections fetching a half each take about
/// 1 s, and a request the rule does not match goes at loopback speed.
#[test]
fn throttle_limits_each_connection_to_its_rate() {
    let reg = Registry::start(Mode::Plain);
    let blob = noise(2 << 20, 2027);
    let digest = upload(&reg, "throttle/blob", &blob);
    let throttle = Action::Throttle {
        per_second: 1 << 20,
    };
    let rules = vec![Rule::new("GET", "?slow", throttle, usize::MAX)];
    let proxy = FaultProxy::start(reg.port, rules, PROXY_LIFE);
    let host = proxy.host();
    let target = format!("/v2/throttle/blob/blobs/{digest}");
    let slow = format!("{target}?slow");
    let half = blob.len() / 2;
    let first = format!("Range: bytes=0-{}\r\n", half - 1);
    let second = format!("Range: bytes={half}-{}\r\n", blob.len() - 1);
    let halves = |answers: &[Answer]| {
        let bodies: Vec<&[u8]> = answers.iter().map(|a| &a.body[..]).collect();
        bodies == [&blob[..half], &blob[half..]]
    };

    let (answers, fast) = timed(|| pipeline(&host, &[("GET", &target, "")]));
    assert_eq!(answers[0].body, blob, "the unthrottled answer");
    let (answers, one) = timed(|| {
        pipeline(
            &host,
            &[
                ("GET", slow.as_str(), first.as_str()),
                ("GET", &slow, &second),
            ],
        )
    });
    assert!(halves(&answers), "the halves on one connection");
    let (answers, two) = timed(|| {
        thread::scope(|s| {
            let a = s.spawn(|| pipeline(&host, &[("GET", &slow, &first)]));
            let b = s.spawn(|| pipeline(&host, &[("GET", &slow, &second)]));
            let mut answers = a.join().unwrap();
            answers.extend(b.join().unwrap());
            answers
        })
    });
    assert!(halves(&answers), "the halves on two connections");
    eprintln!("2 MiB: unthrottled {fast:?}, one connection {one:?}, two {two:?}");

    assert!(fast < Duration::from_secs(1), "unthrottled took {fast:?}");
    let (low, high) = (Duration::from_millis(1800), Duration::from_secs(4));
    assert!(one >= low && one < high, "one connection took {one:?}");
    let halved = one.mul_f64(0.7);
    assert!(
        two >= Duration::from_millis(900) && two < halved,
        "two connections took {two:?} (one took {one:?})"
    );
    assert_eq!(proxy.hits(), 4, "throttled requests");
    assert_eq!(proxy.connections(), 4);
}
