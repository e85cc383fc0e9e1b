//! End-to-end tests of the client against scripted servers on 127.0.0.1 (plain, proxy and TLS).
//!
//! Nothing here touches the internet; TLS certificates are made with the `openssl` CLI.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::*;
use crate::error::Kind;

/// A client that ignores the environment's proxies and fails fast.
fn client(extra_ca_files: Vec<PathBuf>) -> Client {
    let opts = Options {
        extra_ca_files,
        connect_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(10),
        low_speed: LowSpeed::DEFAULT,
    };
    Client::with_proxy_env(opts, ProxyEnv::default())
}

/// Sends a request without body.
fn send(c: &mut Client, method: &str, url: &str) -> Result<Response> {
    let url = Url::parse(url).unwrap();
    c.send(Request {
        method,
        url: &url,
        headers: vec![],
        body: Body::Empty,
        deadline: None,
    })
}

/// Runs `server` on a fresh listener in a thread; returns the base URL and the thread.
fn serve<T: Send + 'static>(
    server: impl FnOnce(TcpListener) -> T + Send + 'static,
) -> (String, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (
        format!("http://127.0.0.1:{port}"),
        thread::spawn(move || server(listener)),
    )
}

/// Reads one request (head and Content-Length body) from the client side of a connection.
///
/// Returns `None` if the client closed the connection first.
fn read_request<R: BufRead>(r: &mut R) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// Accepts one connection and answers each request on it with the next canned response.
fn answer_all(listener: &TcpListener, responses: &[&[u8]]) -> Vec<String> {
    let (stream, _) = listener.accept().unwrap();
    let mut r = BufReader::new(stream);
    let mut heads = Vec::new();
    for resp in responses {
        let Some((head, _)) = read_request(&mut r) else {
            break;
        };
        heads.push(head);
        r.get_mut().write_all(resp).unwrap();
    }
    heads
}

/// Whether another connection is waiting on the listener (after giving it a moment).
fn has_pending(listener: &TcpListener) -> bool {
    thread::sleep(Duration::from_millis(50));
    listener.set_nonblocking(true).unwrap();
    listener.accept().is_ok()
}

#[test]
fn content_length_body_and_request_head() {
    let (base, server) = serve(|l| {
        answer_all(
            &l,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello"],
        )
    });
    let mut c = client(vec![]);
    let mut resp = send(&mut c, "GET", &format!("{base}/v2/?q=1")).unwrap();
    assert_eq!((resp.status, resp.reason.as_str()), (200, "OK"));
    assert_eq!(resp.content_length(), Some(5));
    assert_eq!(resp.header_all("X-a").collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(resp.read_limited(5).unwrap(), b"hello");
    let heads = server.join().unwrap();
    let port = base.rsplit(':').next().unwrap();
    assert!(
        heads[0].starts_with("GET /v2/?q=1 HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(heads[0].contains(&format!("Host: 127.0.0.1:{port}\r\n")));
    assert!(heads[0].contains(&format!(
        "User-Agent: barge/{}\r\n",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(heads[0].contains("Connection: keep-alive\r\n"));
    assert!(!heads[0].contains("Content-Length"));
}

#[test]
fn read_limited_refuses_large_bodies() {
    let (base, _server) =
        serve(|l| answer_all(&l, &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"]));
    let mut resp = send(&mut client(vec![]), "GET", &format!("{base}/")).unwrap();
    assert!(resp.read_limited(4).is_err());
    let (base, _server) =
        serve(|l| answer_all(&l, &[b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello"]));
    let mut resp = send(&mut client(vec![]), "GET", &format!("{base}/")).unwrap();
    let e = resp.read_limited(4).unwrap_err();
    assert!(e.to_string().contains("larger than 4 bytes"), "{e}");
}

#[test]
fn chunked_body_with_trailers_then_reuse() {
    let (base, server) = serve(|l| {
        let heads = answer_all(
            &l,
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\nY: u\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            ],
        );
        (heads.len(), has_pending(&l))
    });
    let mut c = client(vec![]);
    let mut resp = send(&mut c, "GET", &format!("{base}/a")).unwrap();
    assert_eq!(resp.content_length(), None);
    let mut body = String::new();
    resp.read_to_string(&mut body).unwrap();
    assert_eq!(body, "hello world");
    let mut resp = send(&mut c, "GET", &format!("{base}/b")).unwrap();
    assert_eq!(resp.read_limited(10).unwrap(), b"ok");
    assert_eq!(server.join().unwrap(), (2, false));
}

#[test]
fn close_delimited_body() {
    let (base, _server) = serve(|l| {
        answer_all(
            &l,
            &[b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"],
        )
    });
    let mut resp = send(&mut client(vec![]), "GET", &format!("{base}/")).unwrap();
    assert_eq!(resp.read_limited(100).unwrap(), b"until the end");
}

#[test]
fn interim_100_continue_before_201() {
    let (base, server) = serve(|l| {
        let (stream, _) = l.accept().unwrap();
        let mut r = BufReader::new(stream);
        let (head, body) = read_request(&mut r).unwrap();
        r.get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 201 Created\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        (head, body)
    });
    let url = Url::parse(&format!("{base}/up")).unwrap();
    let resp = client(vec![])
        .send(Request {
            method: "POST",
            url: &url,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Body::Bytes(b"{\"a\":1}"),
            deadline: None,
        })
        .unwrap();
    assert_eq!(resp.status, 201);
    assert_eq!(resp.header("location"), Some("/x"));
    let (head, body) = server.join().unwrap();
    assert!(head.contains("Content-Length: 7\r\n"), "{head}");
    assert_eq!(body, b"{\"a\":1}");
}

#[test]
fn empty_post_sends_zero_length() {
    let (base, server) =
        serve(|l| answer_all(&l, &[b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"]));
    let resp = send(
        &mut client(vec![]),
        "POST",
        &format!("{base}/v2/x/blobs/uploads/"),
    )
    .unwrap();
    assert_eq!(resp.status, 202);
    assert!(server.join().unwrap()[0].contains("Content-Length: 0\r\n"));
}

#[test]
fn head_response_has_no_body_and_connection_is_reused() {
    let (base, server) = serve(|l| {
        let n = answer_all(
            &l,
            &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nDocker-Content-Digest: sha256:ab\r\n\r\n",
                b"HTTP/1.1 204 No Content\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            ],
        )
        .len();
        (n, has_pending(&l))
    });
    let mut c = client(vec![]);
    let mut resp = send(&mut c, "HEAD", &format!("{base}/blob")).unwrap();
    assert_eq!(resp.content_length(), Some(1000));
    assert_eq!(resp.read_limited(10).unwrap(), b"");
    drop(resp);
    let resp = send(&mut c, "DELETE", &format!("{base}/x")).unwrap();
    assert_eq!(resp.status, 204);
    resp.discard().unwrap();
    let mut resp = send(&mut c, "GET", &format!("{base}/y")).unwrap();
    assert_eq!(resp.read_limited(10).unwrap(), b"ok");
    assert_eq!(server.join().unwrap(), (3, false));
}

#[test]
fn keep_alive_reuses_one_connection() {
    let (base, server) = serve(|l| {
        let n = answer_all(
            &l,
            &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none",
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo",
            ],
        )
        .len();
        (n, has_pending(&l))
    });
    let mut c = client(vec![]);
    for want in [&b"one"[..], b"two"] {
        let mut resp = send(&mut c, "GET", &format!("{base}/")).unwrap();
        assert_eq!(resp.read_limited(10).unwrap(), want);
    }
    assert_eq!(server.join().unwrap(), (2, false));
}

#[test]
fn unread_body_is_not_reused_but_discard_allows_reuse() {
    let (base, server) = serve(|l| {
        let a = answer_all(
            &l,
            &[b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"],
        )
        .len();
        let b = answer_all(
            &l,
            &[
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope",
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            ],
        )
        .len();
        (a, b)
    });
    let mut c = client(vec![]);
    drop(send(&mut c, "GET", &format!("{base}/1")).unwrap());
    send(&mut c, "GET", &format!("{base}/2"))
        .unwrap()
        .discard()
        .unwrap();
    assert_eq!(
        send(&mut c, "GET", &format!("{base}/3")).unwrap().status,
        200
    );
    assert_eq!(server.join().unwrap(), (1, 2));
}

#[test]
fn reconnects_when_idle_connection_was_closed() {
    let (base, server) = serve(|l| {
        // 1st connection: answer one request, then read the next one and hang up without answering.
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s);
        read_request(&mut r).unwrap();
        r.get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
            .unwrap();
        read_request(&mut r).unwrap();
        drop(r);
        // 2nd connection: answer, then close while idle.
        answer_all(&l, &[b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2"]);
        // 3rd connection: answer.
        answer_all(&l, &[b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n3"]);
        has_pending(&l)
    });
    let mut c = client(vec![]);
    for want in [b"1", b"2"] {
        let mut resp = send(&mut c, "GET", &format!("{base}/")).unwrap();
        assert_eq!(resp.read_limited(1).unwrap(), want);
    }
    thread::sleep(Duration::from_millis(100));
    let mut resp = send(&mut c, "GET", &format!("{base}/")).unwrap();
    assert_eq!(resp.read_limited(1).unwrap(), b"3");
    assert!(!server.join().unwrap());
}

#[test]
fn oversized_response_head_is_rejected() {
    let (base, _server) = serve(|l| {
        let big = format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n",
            "a".repeat(70 * 1024)
        );
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s);
        read_request(&mut r);
        let _ = r.get_mut().write_all(big.as_bytes());
    });
    let e = send(&mut client(vec![]), "GET", &format!("{base}/")).unwrap_err();
    assert!(e.to_string().contains("malformed HTTP response"), "{e}");
    let (base, _server) = serve(|l| {
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "A: b\r\n".repeat(200));
        answer_all(&l, &[many.as_bytes()]);
    });
    let e = send(&mut client(vec![]), "GET", &format!("{base}/")).unwrap_err();
    assert!(e.to_string().contains("more than 128 header fields"), "{e}");
}

#[test]
fn truncated_body_is_transient() {
    let (base, _server) = serve(|l| {
        answer_all(
            &l,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"],
        )
    });
    let mut resp = send(&mut client(vec![]), "GET", &format!("{base}/")).unwrap();
    let e = resp.read_limited(1000).unwrap_err();
    assert_eq!(e.kind(), Kind::Transient);
    assert!(
        e.to_string()
            .contains("connection closed after 10 of 100 bytes"),
        "{e}"
    );
    let (base, _server) = serve(|l| {
        answer_all(
            &l,
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc"],
        )
    });
    let mut resp = send(&mut client(vec![]), "GET", &format!("{base}/")).unwrap();
    let e = resp.read_limited(1000).unwrap_err();
    assert_eq!(e.kind(), Kind::Transient, "{e}");
}

#[test]
fn connection_refused_is_final_and_names_host() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = send(
        &mut client(vec![]),
        "GET",
        &format!("http://127.0.0.1:{port}/v2/"),
    )
    .unwrap_err();
    // Nothing listens: retrying cannot help, and the error says what to check.
    assert_eq!(e.kind(), Kind::Other);
    assert!(
        e.to_string().ends_with(&format!(
            "nothing is listening at 127.0.0.1:{port}: is the registry running, and is the address right?"
        )),
        "{e}"
    );
}

/// A reader producing `len` bytes of a deterministic pattern in odd-sized pieces.
struct Pattern {
    pos: u64,
    len: u64,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len - self.pos).min(40_000) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern_byte(self.pos + i as u64);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(2654435761) >> 13) as u8
}

#[test]
fn streaming_upload_arrives_intact() {
    const LEN: u64 = 5 * 1024 * 1024 + 7;
    let (base, server) = serve(|l| {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s);
        let (head, body) = read_request(&mut r).unwrap();
        r.get_mut()
            .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        (head, body)
    });
    let url = Url::parse(&format!("{base}/v2/x/blobs/uploads/u?digest=sha256:00")).unwrap();
    let mut reader = Pattern { pos: 0, len: LEN };
    let resp = client(vec![])
        .send(Request {
            method: "PUT",
            url: &url,
            headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            body: Body::Stream {
                reader: &mut reader,
                len: LEN,
            },
            deadline: None,
        })
        .unwrap();
    assert_eq!(resp.status, 201);
    let (head, body) = server.join().unwrap();
    assert!(head.contains(&format!("Content-Length: {LEN}\r\n")));
    assert_eq!(body.len() as u64, LEN);
    assert!(body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == pattern_byte(i as u64)));
}

#[test]
fn short_stream_body_is_an_error() {
    // The server keeps reading, so the client sees its own reader end early
    // rather than a broken pipe.
    let (base, _server) = serve(|l| {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = std::io::copy(&mut s, &mut std::io::sink());
        }
    });
    let url = Url::parse(&format!("{base}/")).unwrap();
    let mut reader = Pattern { pos: 0, len: 10 };
    let e = client(vec![])
        .send(Request {
            method: "PUT",
            url: &url,
            headers: vec![],
            body: Body::Stream {
                reader: &mut reader,
                len: 20,
            },
            deadline: None,
        })
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("request body ended after 10 of 20 bytes"),
        "{e}"
    );
}

#[test]
fn early_error_response_during_upload_is_returned() {
    let (base, _server) = serve(|l| {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        while line != "\r\n" {
            line.clear();
            r.read_line(&mut line).unwrap();
        }
        r.get_mut()
            .write_all(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
        thread::sleep(Duration::from_millis(200));
    });
    let url = Url::parse(&format!("{base}/")).unwrap();
    let mut reader = Pattern {
        pos: 0,
        len: 64 << 20,
    };
    let resp = client(vec![]).send(Request {
        method: "PUT",
        url: &url,
        headers: vec![],
        body: Body::Stream {
            reader: &mut reader,
            len: 64 << 20,
        },
        deadline: None,
    });
    // Either the server's answer or a clean send error; never a hang or panic.
    match resp {
        Ok(r) => assert_eq!(r.status, 413),
        Err(e) => assert!(e.to_string().contains("PUT"), "{e}"),
    }
}

#[test]
fn plain_http_through_proxy_uses_absolute_form() {
    let (proxy, server) =
        serve(|l| answer_all(&l, &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]));
    let env = ProxyEnv {
        http_proxy: Some(proxy.replace("http://", "http://user:pw@")),
        ..ProxyEnv::default()
    };
    let mut c = Client::with_proxy_env(Options::default(), env);
    let mut resp = send(&mut c, "GET", "http://registry.example:5000/v2/?x=1").unwrap();
    assert_eq!(resp.read_limited(2).unwrap(), b"ok");
    let heads = server.join().unwrap();
    assert!(
        heads[0].starts_with("GET http://registry.example:5000/v2/?x=1 HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(heads[0].contains("Host: registry.example:5000\r\n"));
    assert!(heads[0].contains(&format!(
        "Proxy-Authorization: Basic {}\r\n",
        base64_encode(b"user:pw")
    )));
}

#[test]
fn proxy_refusing_connect_is_an_auth_error() {
    let (proxy, server) = serve(|l| {
        answer_all(
            &l,
            &[b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"],
        )
    });
    let env = ProxyEnv {
        https_proxy: Some(proxy),
        ..ProxyEnv::default()
    };
    let mut c = Client::with_proxy_env(Options::default(), env);
    let e = send(&mut c, "GET", "https://registry.example/v2/").unwrap_err();
    assert_eq!(e.kind(), Kind::Auth, "{e}");
    assert!(e.to_string().contains("407"), "{e}");
    let heads = server.join().unwrap();
    assert!(
        heads[0].starts_with("CONNECT registry.example:443 HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(heads[0].contains("Host: registry.example:443\r\n"));
}

// ---- TLS ----

/// Paths of a test CA and a server certificate for 127.0.0.1 and registry.example.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

/// Generates the certificates once per test run with the openssl CLI.
fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("barge-http-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:registry.example\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let steps: Vec<Vec<&str>> = vec![
            [
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=barge test CA",
                ],
            ]
            .concat(),
            [
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "srv.key",
                    "-out",
                    "srv.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
            vec![
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "srv.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(&args)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Certs { dir }
    })
}

/// A rustls server configuration using the generated server certificate.
fn server_config() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = &certs().dir;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("srv.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("srv.key")).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Serves TLS connections, answering every request with `200 secure`, until a handshake fails `max_failures` times or `conns` connections were served.
fn tls_server(conns: usize) -> (u16, JoinHandle<Vec<String>>) {
    let config = server_config();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let mut heads = Vec::new();
        for _ in 0..conns {
            let (tcp, _) = listener.accept().unwrap();
            heads.extend(tls_session(config.clone(), tcp));
        }
        heads
    });
    (port, handle)
}

/// Serves one TLS connection until the client closes it; returns the request heads seen.
fn tls_session(config: Arc<rustls::ServerConfig>, tcp: TcpStream) -> Vec<String> {
    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut r = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    let mut heads = Vec::new();
    while let Some((head, _)) = read_request(&mut r) {
        heads.push(head);
        let w = r.get_mut();
        if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")
            .and_then(|()| w.flush())
            .is_err()
        {
            break;
        }
    }
    heads
}

#[test]
fn tls_private_ca_needs_ca_cert() {
    let (port, server) = tls_server(2);
    let url = format!("https://127.0.0.1:{port}/v2/");
    let e = send(&mut client(vec![]), "GET", &url).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!("TLS handshake with 127.0.0.1:{port} failed")),
        "{text}"
    );
    assert!(
        text.contains("UnknownIssuer") && text.contains("--ca-cert"),
        "{text}"
    );
    let mut c = client(vec![certs().ca()]);
    for _ in 0..2 {
        let mut resp = send(&mut c, "GET", &url).unwrap();
        assert_eq!(resp.read_limited(100).unwrap(), b"secure");
    }
    drop(c);
    assert_eq!(server.join().unwrap().len(), 2);
}

#[test]
fn tls_missing_ca_file_is_named() {
    let missing = std::env::temp_dir().join("barge-no-such-ca.pem");
    let e = send(
        &mut client(vec![missing.clone()]),
        "GET",
        "https://127.0.0.1:1/",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
    let empty = certs().dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let e = send(&mut client(vec![empty]), "GET", "https://127.0.0.1:1/").unwrap_err();
    assert!(e.to_string().contains("no PEM certificates"), "{e}");
}

#[test]
fn tls_to_plain_http_server_suggests_insecure() {
    let (base, _server) = serve(|l| {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let url = base.replace("http://", "https://");
    let e = send(&mut client(vec![]), "GET", &url).unwrap_err();
    assert!(e.to_string().contains("--insecure"), "{e}");
}

#[test]
fn https_through_connect_proxy() {
    let (tls_port, tls) = tls_server(1);
    let (proxy, proxy_thread) = serve(move |l| {
        let (client_side, _) = l.accept().unwrap();
        let mut r = BufReader::new(client_side);
        let (head, _) = read_request(&mut r).unwrap();
        r.get_mut()
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .unwrap();
        let client_side = r.into_inner();
        let upstream = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
        let (mut c2, mut u2) = (
            client_side.try_clone().unwrap(),
            upstream.try_clone().unwrap(),
        );
        let pump = thread::spawn(move || {
            let _ = std::io::copy(&mut c2, &mut u2);
            let _ = u2.shutdown(std::net::Shutdown::Write);
        });
        let (mut c1, mut u1) = (client_side, upstream);
        let _ = std::io::copy(&mut u1, &mut c1);
        let _ = c1.shutdown(std::net::Shutdown::Write);
        let _ = pump.join();
        head
    });
    let env = ProxyEnv {
        https_proxy: Some(proxy),
        ..ProxyEnv::default()
    };
    let mut c = Client::with_proxy_env(
        Options {
            extra_ca_files: vec![certs().ca()],
            ..Options::default()
        },
        env,
    );
    // The proxy is told the name; TLS verifies the certificate for that name.
    let mut resp = send(&mut c, "GET", "https://registry.example/v2/").unwrap();
    assert_eq!(resp.read_limited(100).unwrap(), b"secure");
    // The pooled connection lives as long as the client or any response holds the pool.
    drop((resp, c));
    let head = proxy_thread.join().unwrap();
    assert!(
        head.starts_with("CONNECT registry.example:443 HTTP/1.1\r\n"),
        "{head}"
    );
    let heads = tls.join().unwrap();
    assert!(
        heads[0].starts_with("GET /v2/ HTTP/1.1\r\nHost: registry.example\r\n"),
        "{}",
        heads[0]
    );
}

/// A TLS server answering one request with a close-delimited body, with or without close_notify.
fn tls_close_delimited(close_notify: bool) -> (u16, JoinHandle<()>) {
    let config = server_config();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut r = BufReader::new(rustls::StreamOwned::new(conn, tcp));
        read_request(&mut r).unwrap();
        let s = r.get_mut();
        s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil close").unwrap();
        if close_notify {
            s.conn.send_close_notify();
        }
        s.flush().unwrap();
    });
    (port, handle)
}

#[test]
fn tls_close_delimited_body_needs_close_notify() {
    for close_notify in [true, false] {
        let (port, server) = tls_close_delimited(close_notify);
        let mut c = client(vec![certs().ca()]);
        let mut resp = send(&mut c, "GET", &format!("https://127.0.0.1:{port}/")).unwrap();
        let body = resp.read_limited(100);
        server.join().unwrap();
        if close_notify {
            assert_eq!(body.unwrap(), b"until close");
        } else {
            let e = body.unwrap_err();
            assert_eq!(e.kind(), Kind::Transient);
            assert!(e.to_string().contains("close_notify"), "{e}");
        }
    }
}

/// A client whose low-speed window is `secs` seconds (1 KiB/s).
fn slow_link_client(secs: u64) -> Client {
    let opts = Options {
        low_speed: LowSpeed {
            limit: 1024,
            time: Duration::from_secs(secs),
        },
        ..Options::default()
    };
    Client::with_proxy_env(opts, ProxyEnv::default())
}

/// Reads one request, then writes `fast` at once and `slow` one byte every 100 ms
/// (until the client leaves).
fn trickle(listener: TcpListener, fast: &'static [u8], slow: &'static [u8]) {
    let (stream, _) = listener.accept().unwrap();
    let mut r = BufReader::new(stream);
    read_request(&mut r);
    let _ = r.get_mut().write_all(fast);
    for b in slow {
        if r.get_mut().write_all(&[*b]).is_err() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn trickling_head_breaks_the_low_speed_rule() {
    let (base, server) = serve(|l| {
        trickle(l, b"", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Padding: 0123456789012345678901234567890123456789\r\n\r\n")
    });
    let t0 = std::time::Instant::now();
    let e = send(&mut slow_link_client(1), "GET", &format!("{base}/v2/")).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(e.kind(), Kind::Transient);
    assert!(
        e.to_string().contains("registry sent ")
            && e.to_string().contains("in 1 s (below 1.0 KiB/s)"),
        "{e}"
    );
    server.join().unwrap();
}

#[test]
fn trickling_body_breaks_the_low_speed_rule_while_bytes_still_come() {
    let (base, server) = serve(|l| {
        trickle(
            l,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
            b"abcdefghijklmnopqrstuvwxyz",
        )
    });
    let mut resp = send(&mut slow_link_client(1), "GET", &format!("{base}/b")).unwrap();
    let t0 = std::time::Instant::now();
    let e = resp.read_limited(1000).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(e.to_string().contains("(below 1.0 KiB/s)"), "{e}");
    drop(resp);
    server.join().unwrap();
}

#[test]
fn peer_that_stops_reading_an_upload_breaks_the_rule() {
    let (base, server) = serve(|l| {
        let (stream, _) = l.accept().unwrap();
        // Never read: the socket buffers fill and the client's writes block.
        thread::sleep(Duration::from_secs(4));
        drop(stream);
    });
    let url = Url::parse(&format!("{base}/v2/x/blobs/uploads/u")).unwrap();
    let mut reader = Pattern {
        pos: 0,
        len: 256 << 20,
    };
    let t0 = std::time::Instant::now();
    let e = slow_link_client(1)
        .send(Request {
            method: "PUT",
            url: &url,
            headers: vec![],
            body: Body::Stream {
                reader: &mut reader,
                len: 256 << 20,
            },
            deadline: None,
        })
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert!(
        e.to_string().contains("registry took ") && e.to_string().contains("(below 1.0 KiB/s)"),
        "{e}"
    );
    server.join().unwrap();
}

#[test]
fn deadline_stops_a_silent_server_before_the_window() {
    let (base, server) = serve(|l| {
        let (stream, _) = l.accept().unwrap();
        thread::sleep(Duration::from_secs(3));
        drop(stream);
    });
    let url = Url::parse(&format!("{base}/v2/")).unwrap();
    let t0 = std::time::Instant::now();
    let e = slow_link_client(30)
        .send(Request {
            method: "GET",
            url: &url,
            headers: vec![],
            body: Body::Empty,
            deadline: Some(std::time::Instant::now() + Duration::from_secs(1)),
        })
        .unwrap_err();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        e.to_string().contains("time for this transfer ran out"),
        "{e}"
    );
    server.join().unwrap();
}

#[test]
fn slow_answer_on_a_reused_connection_is_not_retried_as_stale() {
    let (base, server) = serve(|l| {
        let (stream, _) = l.accept().unwrap();
        let mut r = BufReader::new(stream);
        read_request(&mut r);
        r.get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        read_request(&mut r);
        thread::sleep(Duration::from_secs(3));
    });
    let mut c = slow_link_client(1);
    send(&mut c, "GET", &format!("{base}/a")).unwrap();
    let t0 = std::time::Instant::now();
    let e = send(&mut c, "GET", &format!("{base}/b")).unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_millis(1800),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        e.to_string().contains("registry sent 0 bytes in 1 s"),
        "{e}"
    );
    server.join().unwrap();
}

// ------------------------------------------------------------------ pipelining

/// GET requests for `urls`, for [`Client::send_all`].
fn gets(urls: &[Url]) -> Vec<Request<'_>> {
    urls.iter()
        .map(|url| Request {
            method: "GET",
            url,
            headers: vec![],
            body: Body::Empty,
            deadline: None,
        })
        .collect()
}

fn urls(base: &str, paths: &[&str]) -> Vec<Url> {
    paths
        .iter()
        .map(|p| Url::parse(&format!("{base}{p}")).unwrap())
        .collect()
}

/// Reads `n` requests from a connection before answering any, then sends `answers`.
fn read_then_answer(stream: TcpStream, n: usize, answers: &[u8]) -> Vec<String> {
    let mut r = BufReader::new(stream);
    let heads: Vec<String> = (0..n)
        .map_while(|_| read_request(&mut r).map(|(h, _)| h))
        .collect();
    r.get_mut().write_all(answers).unwrap();
    heads
}

#[test]
fn pipelined_requests_go_in_one_flight_and_answers_come_back_in_order() {
    let (base, server) = serve(|l| {
        let (stream, _) = l.accept().unwrap();
        // All three requests arrive before the first answer leaves: one flight.
        let heads = read_then_answer(
            stream,
            3,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na\
              HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nbb\r\n0\r\n\r\n\
              HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        );
        (heads, has_pending(&l))
    });
    let mut c = client(vec![]);
    let u = urls(&base, &["/1", "/2", "/3"]);
    let mut answers = c.send_all(&gets(&u)).unwrap();
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 404, 201]);
    assert_eq!(answers[0].read_limited(10).unwrap(), b"a");
    assert_eq!(answers[1].read_limited(10).unwrap(), b"bb");
    let (heads, second_connection) = server.join().unwrap();
    assert_eq!(heads.len(), 3);
    assert!(heads[2].starts_with("GET /3 "), "{}", heads[2]);
    assert!(!second_connection, "a second connection was opened");
}

#[test]
fn pipelined_requests_left_unanswered_by_a_closing_server_go_again() {
    let (base, server) = serve(|l| {
        let (first, _) = l.accept().unwrap();
        // Answers the first request, then closes: the other two are lost.
        let lost = read_then_answer(first, 3, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na");
        let (second, _) = l.accept().unwrap();
        let again = read_then_answer(
            second,
            2,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb\
              HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc",
        );
        (lost.len(), again)
    });
    let mut c = client(vec![]);
    let u = urls(&base, &["/1", "/2", "/3"]);
    let answers = c.send_all(&gets(&u)).unwrap();
    let bodies: Vec<Vec<u8>> = answers
        .into_iter()
        .map(|mut r| r.read_limited(10).unwrap())
        .collect();
    assert_eq!(bodies, [b"a", b"b", b"c"]);
    let (first, again) = server.join().unwrap();
    assert_eq!(first, 3);
    assert_eq!(again.len(), 2);
    assert!(again[0].starts_with("GET /2 ") && again[1].starts_with("GET /3 "));
}
