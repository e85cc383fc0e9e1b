//! A small token issuer for the registry's `auth: token` mode: an HTTP server on a std
//! thread answering `GET /token?service=..&scope=..` with RS256 JWTs signed by the
//! `openssl` CLI. Policy: Basic `tester:s3cret` gets every requested action; anonymous
//! requests get `pull` only (and nothing on repositories under `private/`); any other
//! credentials get 401. Requests are counted and logged for the tests to inspect.

use super::{base64, base64url, openssl_req, sh, TempDir};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// User and password the issuer (and the other auth modes) accept.
pub const USER: &str = "tester";
pub const PASS: &str = "s3cret";
/// The `iss` claim and the registry's `issuer` setting.
pub const ISSUER: &str = "barge-test-issuer";

/// One request the issuer answered.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// `Some("tester")` for good Basic credentials, `None` for anonymous or rejected.
    pub account: Option<String>,
    /// Whether an `Authorization` header was sent.
    pub had_auth: bool,
    /// The requested scopes.
    pub scopes: Vec<String>,
    /// The HTTP status answered.
    pub status: u16,
}

struct State {
    requests: AtomicUsize,
    log: Mutex<Vec<TokenRequest>>,
    stop: AtomicBool,
    key_file: PathBuf,
    x5c: String,
    service: String,
}

/// A running token issuer. Dropping it stops the server thread.
pub struct TokenIssuer {
    pub port: u16,
    /// PEM certificate whose key signs the tokens (the registry's `rootcertbundle`).
    pub cert_file: PathBuf,
    state: Arc<State>,
    _dir: TempDir,
}

impl TokenIssuer {
    /// Makes a signing key and self-signed certificate, and starts serving.
    pub fn start(service: &str) -> TokenIssuer {
        let dir = TempDir::new("token");
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        let der = dir.join("cert.der");
        openssl_req(
            &["rsa:2048"],
            Some("3650"),
            "/CN=barge test token signer",
            &key,
            &cert,
            &[],
        );
        sh(
            "openssl",
            &[
                "x509",
                "-in",
                cert.to_str().unwrap(),
                "-outform",
                "DER",
                "-out",
                der.to_str().unwrap(),
            ],
        );
        let x5c = base64(&std::fs::read(&der).expect("read cert.der"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token issuer");
        let port = listener.local_addr().expect("local_addr").port();
        let state = Arc::new(State {
            requests: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            key_file: key,
            x5c,
            service: service.to_string(),
        });
        let st = Arc::clone(&state);
        std::thread::spawn(move || serve(listener, st));
        TokenIssuer {
            port,
            cert_file: cert,
            state,
            _dir: dir,
        }
    }

    /// The realm URL to put in the registry config.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// How many token requests were answered (any status).
    pub fn request_count(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(listener: TcpListener, state: Arc<State>) {
    for conn in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(conn) = conn {
            let _ = handle(conn, &state);
        }
    }
}

fn handle(mut conn: TcpStream, state: &State) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut auth = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, body) = if method != "GET" || path != "/token" {
        (404, r#"{"errors":[{"code":"NOT_FOUND"}]}"#.to_string())
    } else {
        answer(state, query, auth)
    };
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 401 {
        head.push_str("WWW-Authenticate: Basic realm=\"barge-test-token\"\r\n");
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

/// Decides and signs; returns the status and JSON body.
fn answer(state: &State, query: &str, auth: Option<String>) -> (u16, String) {
    let mut scopes = Vec::new();
    let mut service = String::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "scope" => scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(String::from)),
            "service" => service = v,
            _ => {}
        }
    }
    let good = format!("Basic {}", base64(format!("{USER}:{PASS}").as_bytes()));
    let had_auth = auth.is_some();
    let account = match &auth {
        None => None,
        Some(a) if *a == good => Some(USER.to_string()),
        Some(_) => {
            record(state, None, had_auth, scopes, 401);
            return (
                401,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.into(),
            );
        }
    };
    let mut access = Vec::new();
    for scope in &scopes {
        let Some((typ, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|a| account.is_some() || (*a == "pull" && !name.starts_with("private/")))
            .collect();
        if !granted.is_empty() {
            let acts: Vec<String> = granted.iter().map(|a| format!("\"{a}\"")).collect();
            access.push(format!(
                r#"{{"type":"{}","name":"{}","actions":[{}]}}"#,
                json_escape(typ),
                json_escape(name),
                acts.join(",")
            ));
        }
    }
    if service.is_empty() {
        service = state.service.clone();
    }
    let token = sign(
        state,
        account.as_deref().unwrap_or(""),
        &service,
        &access.join(","),
    );
    record(state, account, had_auth, scopes, 200);
    (
        200,
        format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#),
    )
}

fn record(
    state: &State,
    account: Option<String>,
    had_auth: bool,
    scopes: Vec<String>,
    status: u16,
) {
    state.requests.fetch_add(1, Ordering::SeqCst);
    state
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(TokenRequest {
            account,
            had_auth,
            scopes,
            status,
        });
}

/// Builds and signs a JWT with the issuer's key.
fn sign(state: &State, subject: &str, audience: &str, access_json: &str) -> String {
    static JTI: AtomicUsize = AtomicUsize::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = format!(r#"{{"typ":"JWT","alg":"RS256","x5c":["{}"]}}"#, state.x5c);
    let claims = format!(
        r#"{{"iss":"{}","sub":"{}","aud":"{}","exp":{},"nbf":{},"iat":{},"jti":"barge-test-{}-{}","access":[{}]}}"#,
        ISSUER,
        json_escape(subject),
        json_escape(audience),
        now + 300,
        now.saturating_sub(10),
        now,
        now,
        JTI.fetch_add(1, Ordering::SeqCst),
        access_json
    );
    let input = format!(
        "{}.{}",
        base64url(header.as_bytes()),
        base64url(claims.as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&state.key_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl dgst");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to openssl");
    let out = child.wait_with_output().expect("openssl dgst");
    assert!(
        out.status.success(),
        "openssl dgst failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{input}.{}", base64url(&out.stdout))
}

/// Decodes `%XX` and `+` in a query value.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
