//! Shared helpers for barge's integration tests: running the barge binary, checking
//! that external tools exist, temporary directories, free ports and small encoders.
//!
//! Every test binary includes this with `mod common;`; not every binary uses every
//! helper, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod faultproxy;
pub mod fixtures;
pub mod oci;
pub mod registry;
pub mod token;
pub mod tree;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};

/// Path of the barge binary cargo built for these tests. `BARGE_TEST_BIN` overrides it
/// (to check the harness against a stand-in implementation).
pub fn barge_path() -> String {
    std::env::var("BARGE_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_barge").to_string())
}

/// Runs `barge ARGS` in a clean environment (no proxies, no credential files) and
/// returns its output.
pub fn barge(args: &[&str]) -> Output {
    barge_env(args, &[])
}

/// Like [`barge`], with extra environment variables (they override the clean defaults,
/// e.g. `DOCKER_CONFIG`).
pub fn barge_env(args: &[&str], env: &[(&str, &OsStr)]) -> Output {
    barge_in(None, args, env)
}

/// `barge ARGS` with no proxy, credential file or backtrace settings of the
/// machine, `home` as `HOME`, `DOCKER_CONFIG` and `XDG_RUNTIME_DIR`, no stdin.
pub fn barge_command(args: &[&str], home: &Path) -> Command {
    let mut cmd = Command::new(barge_path());
    cmd.args(args).stdin(Stdio::null());
    for var in [
        "BARGE_TEST_BIN",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "REGISTRY_AUTH_FILE",
        "RUST_BACKTRACE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("DOCKER_CONFIG", home)
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home);
    cmd
}

/// Runs barge with an optional working directory and extra environment variables.
/// By default `DOCKER_CONFIG`, `HOME` and `XDG_RUNTIME_DIR` point at an empty
/// directory, so no credentials of the machine leak into a test.
pub fn barge_in(cwd: Option<&Path>, args: &[&str], env: &[(&str, &OsStr)]) -> Output {
    let mut cmd = barge_command(args, empty_home());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", barge_path()))
}

/// An empty directory used as HOME / DOCKER_CONFIG for barge runs.
fn empty_home() -> &'static Path {
    static HOME: OnceLock<TempDir> = OnceLock::new();
    HOME.get_or_init(|| TempDir::new("home")).path()
}

/// Panics (the test fails loudly, it is never skipped) when `name` is not on PATH.
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| is_executable(&d.join(name))))
        .unwrap_or(false);
    if !found {
        panic!(
            "required tool `{name}` is not installed (not on PATH). Install the Debian packages \
             listed in the Makefile's DEB_PACKAGES (`make deps` installs them); these tests never skip."
        );
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs a command, panicking with its stderr when it fails; returns stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "command failed ({}): {cmd:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout
}

/// Shorthand: run `prog args...`, panic on failure, return stdout as a String.
pub fn sh(prog: &str, args: &[&str]) -> String {
    require_tool(prog);
    String::from_utf8_lossy(&run(Command::new(prog).args(args))).into_owned()
}

/// `openssl req -new -nodes -sha256`: a new private key (`newkey`, e.g. `["rsa:2048"]`
/// or `["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]`) written to `key`, and
/// to `out` a self-signed certificate valid `days` days (Some) or a signing request
/// (None), for subject `subj`; `extra` goes on the end (e.g. `-addext` pairs).
pub fn openssl_req(
    newkey: &[&str],
    days: Option<&str>,
    subj: &str,
    key: &Path,
    out: &Path,
    extra: &[&str],
) {
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let (key, out) = (path(key), path(out));
    let mut args = vec!["req"];
    if days.is_some() {
        args.push("-x509");
    }
    args.extend(["-new", "-nodes", "-newkey"]);
    args.extend(newkey);
    args.push("-sha256");
    if let Some(d) = days {
        args.extend(["-days", d]);
    }
    args.extend(["-keyout", &key, "-out", &out, "-subj", subj]);
    args.extend(extra);
    sh("openssl", &args);
}

static TEMP_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A temporary directory that removes itself when dropped. Directories of earlier
/// test processes that died without cleaning up are removed on first use.
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `$TMPDIR/barge-test-<pid>-<n>-<label>`.
    pub fn new(label: &str) -> TempDir {
        static SWEEP: OnceLock<()> = OnceLock::new();
        SWEEP.get_or_init(sweep_stale_temp_dirs);
        let n = TEMP_COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("barge-test-{}-{n}-{label}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir { path, keep: false }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Keeps the directory after drop (for debugging a failing test).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep && std::env::var_os("BARGE_TEST_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Removes `barge-test-<pid>-*` directories whose process no longer exists.
fn sweep_stale_temp_dirs() {
    let Ok(rd) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("barge-test-") else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (callers retry on a bind race).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Spawns `cmd` from a long-lived helper thread with `PR_SET_PDEATHSIG = SIGKILL`, so
/// the child dies with the test process even if it sits in a `static` that is never
/// dropped. (The death signal follows the spawning *thread*, hence the helper thread.)
pub fn spawn_owned(cmd: Command) -> io::Result<std::process::Child> {
    type Req = (Command, mpsc::Sender<io::Result<std::process::Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Req>>> = OnceLock::new();
    let tx = SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Req>();
            std::thread::spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_pdeathsig(&mut cmd));
                }
                // Keep the thread alive so PDEATHSIG is not triggered early.
                loop {
                    std::thread::park();
                }
            });
            Mutex::new(tx)
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (rtx, rrx) = mpsc::channel();
    tx.send((cmd, rtx)).expect("spawner thread is gone");
    rrx.recv().expect("spawner thread is gone")
}

fn spawn_with_pdeathsig(cmd: &mut Command) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    b64(
        data,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        true,
    )
}

/// URL-safe base64 without padding (JWT segments).
pub fn base64url(data: &[u8]) -> String {
    b64(
        data,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        false,
    )
}

fn b64(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Lowercase hex of `sha256(data)`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(data))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts barge failed the way every error must look: exit code 1, exactly one line on
/// stderr starting with `barge: `, no panic or backtrace, and none of `secrets` in
/// stdout or stderr. Returns the error line.
pub fn assert_clean_failure(out: &Output, secrets: &[&str]) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ctx = format!("\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "expected exit code 1{ctx}");
    let line = stderr.strip_suffix('\n').unwrap_or(&stderr);
    assert!(
        !line.is_empty() && !line.contains('\n'),
        "expected exactly one line on stderr{ctx}"
    );
    assert!(
        line.starts_with("barge: "),
        "stderr must start with `barge: `{ctx}"
    );
    for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(
            !stderr.contains(bad) && !stdout.contains(bad),
            "found {bad:?}{ctx}"
        );
    }
    assert_no_secret(out, secrets);
    line.to_string()
}

/// Asserts none of `secrets` (nor their base64 `user:pass` forms) appear in any output.
pub fn assert_no_secret(out: &Output, secrets: &[&str]) {
    let all = [&out.stdout[..], &out.stderr[..]].concat();
    let text = String::from_utf8_lossy(&all);
    for s in secrets {
        assert!(!s.is_empty());
        assert!(
            !text.contains(s),
            "secret {s:?} appears in barge's output:\n{text}"
        );
    }
}

/// Asserts a command (barge, skopeo, runc, ...) succeeded, with its output in the
/// panic message otherwise.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "command failed ({})\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The names in a directory, sorted (empty if it does not exist).
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// What a target directory and its parent looked like before a barge run, to check
/// that a failed run left both as they were (no DIR, no `.DIR.barge-*` staging dir).
pub struct DirState {
    dir: PathBuf,
    parent_listing: Vec<String>,
    dir_listing: Option<Vec<String>>,
    content: Option<tree::Tree>,
}

impl DirState {
    /// Records the state of `dir` (which may not exist) and of its parent.
    pub fn capture(dir: &Path) -> DirState {
        let parent = dir.parent().expect("dir has a parent");
        let exists = dir.symlink_metadata().is_ok();
        DirState {
            dir: dir.to_path_buf(),
            parent_listing: list_dir(parent),
            dir_listing: exists.then(|| list_dir(dir)),
            content: exists.then(|| tree::snapshot(dir)),
        }
    }

    /// Asserts `dir` and its parent look exactly as when captured.
    pub fn assert_unchanged(&self) {
        let parent = self.dir.parent().expect("dir has a parent");
        assert_eq!(
            list_dir(parent),
            self.parent_listing,
            "the parent of {} changed (leftover staging dir?)",
            self.dir.display()
        );
        match (&self.dir_listing, &self.content) {
            (None, _) => assert!(
                self.dir.symlink_metadata().is_err(),
                "{} did not exist before and exists now",
                self.dir.display()
            ),
            (Some(listing), Some(content)) => {
                assert_eq!(
                    &list_dir(&self.dir),
                    listing,
                    "{} changed",
                    self.dir.display()
                );
                tree::assert_same_tree(content, &tree::snapshot(&self.dir));
            }
            _ => unreachable!(),
        }
    }
}
