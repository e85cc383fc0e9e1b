//! A real `docker-registry` (distribution 2.x) on 127.0.0.1 for one test or one test
//! binary: plain HTTP, TLS with a generated CA plus htpasswd Basic auth, or token auth
//! with the issuer from `token.rs`. Storage, config, certificates and the log live in a
//! temporary directory; dropping the `Registry` kills the process.

use super::token::{TokenIssuer, PASS, USER};
use super::{free_port, openssl_req, require_tool, sh, spawn_owned, TempDir};
use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the registry authenticates and whether it speaks TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Plain HTTP, no auth.
    Plain,
    /// HTTPS with a test CA (`ca_file`), htpasswd Basic auth `tester`/`s3cret`.
    TlsBasic,
    /// Plain HTTP, `auth: token` backed by a [`TokenIssuer`].
    Token,
}

/// The service name the registry and the token issuer agree on.
pub const SERVICE: &str = "barge-test-registry";

/// A running registry.
pub struct Registry {
    pub mode: Mode,
    pub port: u16,
    /// The CA certificate (PEM) that signed the server certificate (TlsBasic only).
    pub ca_file: Option<PathBuf>,
    /// A directory holding only `ca.crt`, for skopeo's `--dest-cert-dir`.
    pub cert_dir: Option<PathBuf>,
    /// The token issuer (Token only).
    pub token: Option<TokenIssuer>,
    dir: TempDir,
    child: Option<Child>,
}

impl Registry {
    /// Starts a registry on a free port and waits until `/v2/` answers.
    pub fn start(mode: Mode) -> Registry {
        require_tool("docker-registry");
        require_tool("curl");
        let dir = TempDir::new(match mode {
            Mode::Plain => "registry-plain",
            Mode::TlsBasic => "registry-tls",
            Mode::Token => "registry-token",
        });
        fs::create_dir_all(dir.join("storage")).expect("mkdir storage");
        let mut reg = Registry {
            mode,
            port: 0,
            ca_file: None,
            cert_dir: None,
            token: None,
            dir,
            child: None,
        };
        match mode {
            Mode::Plain => {}
            Mode::TlsBasic => reg.make_tls_and_htpasswd(),
            Mode::Token => reg.token = Some(TokenIssuer::start(SERVICE)),
        }
        let mut last_err = String::new();
        for _ in 0..5 {
            reg.port = free_port();
            reg.write_config();
            match reg.spawn_and_wait() {
                Ok(()) => return reg,
                Err(e) => last_err = e,
            }
        }
        panic!("docker-registry did not start: {last_err}");
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http(s)://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.mode == Mode::TlsBasic {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.host())
    }

    /// `127.0.0.1:PORT/NAME` (an image reference without tag).
    pub fn image(&self, name_tag: &str) -> String {
        format!("{}/{name_tag}", self.host())
    }

    /// `user:pass` needed to push, if any.
    pub fn creds(&self) -> Option<String> {
        (self.mode != Mode::Plain).then(|| format!("{USER}:{PASS}"))
    }

    /// The registry's storage root (`docker/registry/v2/...` lives below it).
    pub fn storage_path(&self) -> PathBuf {
        self.dir.join("storage")
    }

    /// Where the registry stores the blob `sha256:<hex>`.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage_path()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Path of the registry's log (stdout and stderr, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("registry.log")
    }

    /// Everything the registry logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A mark in the log (its current length), for [`Registry::access_log_since`].
    pub fn log_mark(&self) -> usize {
        self.log().len()
    }

    /// The HTTP requests the registry answered (from its access log), oldest first.
    pub fn access_log(&self) -> Vec<Access> {
        self.access_log_since(0)
    }

    /// The HTTP requests answered after `mark` (from [`Registry::log_mark`]).
    pub fn access_log_since(&self, mark: usize) -> Vec<Access> {
        let log = self.log();
        log.get(mark..)
            .unwrap_or("")
            .lines()
            .filter_map(parse_access)
            .collect()
    }

    /// Digests of blobs whose upload completed (`PUT .../blobs/uploads/...?digest=`
    /// answered 201) after `mark`.
    pub fn uploaded_blobs_since(&self, mark: usize) -> Vec<String> {
        self.access_log_since(mark)
            .into_iter()
            .filter(|a| a.method == "PUT" && a.status == 201 && a.path.contains("/blobs/uploads/"))
            .filter_map(|a| query_param(&a.path, "digest"))
            .collect()
    }

    /// Digests of blobs mounted from another repository (`POST ?mount=` answered 201)
    /// after `mark`.
    pub fn mounted_blobs_since(&self, mark: usize) -> Vec<String> {
        self.access_log_since(mark)
            .into_iter()
            .filter(|a| a.method == "POST" && a.status == 201)
            .filter_map(|a| query_param(&a.path, "mount"))
            .collect()
    }

    /// Kills the registry process (the storage is kept).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("registry restart failed: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Whether the registry process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Arguments for `skopeo copy` to push to this registry.
    pub fn skopeo_dest_args(&self) -> Vec<String> {
        let mut a = vec!["--dest-tls-verify=false".to_string()];
        if let Some(d) = &self.cert_dir {
            a = vec![format!("--dest-cert-dir={}", d.display())];
        }
        if let Some(c) = self.creds() {
            a.push(format!("--dest-creds={c}"));
        }
        a
    }

    /// Arguments for `skopeo` when reading from this registry.
    pub fn skopeo_src_args(&self) -> Vec<String> {
        self.skopeo_dest_args()
            .into_iter()
            .map(|s| s.replace("--dest-", "--src-"))
            .collect()
    }

    /// `curl` against the registry (with CA and credentials as needed, Basic auth only,
    /// so not for Token mode's protected endpoints). Returns (status, body).
    pub fn curl(&self, path: &str, extra: &[&str]) -> (u16, Vec<u8>) {
        // One file per call: parallel tests fetch the same paths.
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = self
            .dir
            .join(format!("curl-{}-{n}.out", std::process::id()));
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o"])
            .arg(&body)
            .args(["-w", "%{http_code}", "--max-time", "10"]);
        if let Some(ca) = &self.ca_file {
            cmd.arg("--cacert").arg(ca);
        }
        if self.mode == Mode::TlsBasic {
            cmd.args(["-u", &format!("{USER}:{PASS}")]);
        }
        cmd.args(extra).arg(format!("{}{path}", self.url()));
        let out = cmd.stdin(Stdio::null()).output().expect("run curl");
        let code = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let data = fs::read(&body).unwrap_or_default();
        let _ = fs::remove_file(&body);
        (code, data)
    }

    fn make_tls_and_htpasswd(&mut self) {
        require_tool("openssl");
        require_tool("htpasswd");
        let d = self.dir.path().to_path_buf();
        let p = |n: &str| d.join(n).to_str().expect("utf-8 path").to_string();
        let ec = ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        openssl_req(
            &ec,
            Some("3650"),
            "/CN=barge test CA",
            &d.join("ca.key"),
            &d.join("ca.crt"),
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl_req(
            &ec,
            None,
            "/CN=127.0.0.1",
            &d.join("server.key"),
            &d.join("server.csr"),
            &[],
        );
        fs::write(
            d.join("server.ext"),
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write server.ext");
        sh(
            "openssl",
            &[
                "x509",
                "-req",
                "-sha256",
                "-days",
                "825",
                "-in",
                &p("server.csr"),
                "-CA",
                &p("ca.crt"),
                "-CAkey",
                &p("ca.key"),
                "-CAcreateserial",
                "-extfile",
                &p("server.ext"),
                "-out",
                &p("server.crt"),
            ],
        );
        sh("htpasswd", &["-Bbc", &p("htpasswd"), USER, PASS]);
        let certs = d.join("certs.d");
        fs::create_dir_all(&certs).expect("mkdir certs.d");
        fs::copy(d.join("ca.crt"), certs.join("ca.crt")).expect("copy ca.crt");
        self.ca_file = Some(d.join("ca.crt"));
        self.cert_dir = Some(certs);
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let mut cfg = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: barge-test-not-a-secret\n",
            storage = self.storage_path().display(),
            port = self.port
        );
        match self.mode {
            Mode::Plain => {}
            Mode::TlsBasic => cfg.push_str(&format!(
                "  tls:\n    certificate: {crt}\n    key: {key}\n\
                 auth:\n  htpasswd:\n    realm: barge-test\n    path: {htp}\n",
                crt = d.join("server.crt").display(),
                key = d.join("server.key").display(),
                htp = d.join("htpasswd").display()
            )),
            Mode::Token => {
                let t = self.token.as_ref().expect("token issuer");
                cfg.push_str(&format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    \
                     issuer: {iss}\n    rootcertbundle: {bundle}\n",
                    realm = t.realm(),
                    iss = super::token::ISSUER,
                    bundle = t.cert_file.display()
                ));
            }
        }
        fs::write(d.join("config.yml"), cfg).expect("write config.yml");
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .env("OTEL_TRACES_EXPORTER", "none");
        let child = spawn_owned(cmd).map_err(|e| format!("spawn docker-registry: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if !self.is_running() {
                self.child = None;
                return Err(format!("registry exited; log:\n{}", tail(&self.log())));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                let (code, _) = self.curl("/v2/", &[]);
                if code == 200 || code == 401 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "/v2/ did not answer in 15 s; log:\n{}",
                    tail(&self.log())
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One line of the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    pub status: u16,
}

/// Parses `127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "" "agent"`.
fn parse_access(line: &str) -> Option<Access> {
    let start = line.find("] \"")? + 3;
    let rest = &line[start..];
    let (request, after) = rest.split_once('"')?;
    let mut parts = request.split(' ');
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let status = after.split_whitespace().next()?.parse().ok()?;
    Some(Access {
        method,
        path,
        status,
    })
}

/// The percent-decoded value of `key` in a path's query string.
fn query_param(path: &str, key: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| super::token::percent_decode(v))
    })
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
