//! Integration tests of the habits docker and skopeo users bring (issue 11): `barge
//! version` and `barge help COMMAND`, `docker://` names, `--platform` refused on a
//! single-platform image for another platform, Ctrl-C / SIGTERM exit codes and their one
//! line, a quick and clear "nothing is listening" error, the "nothing to commit" hint, and
//! the committed config's `created`. Against the real test registry (tests/common).

mod common;

use common::fixtures::{parse_json, str_of, Fixtures};
use common::tree::{self, snapshot};
use common::{
    assert_clean_failure, assert_success, barge, barge_path, free_port, list_dir, run, DirState,
    TempDir,
};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn f() -> &'static Fixtures {
    Fixtures::get()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// barge with a clean environment and without `SOURCE_DATE_EPOCH` unless given.
fn barge_clean(args: &[&str], env: &[(&str, &str)], home: &Path) -> Output {
    let mut cmd = Command::new(barge_path());
    cmd.args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("BARGE_TEST_BIN")
        .env("DOCKER_CONFIG", home)
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run barge")
}

// ------------------------------------------------------------------ version and help

#[test]
fn version_as_a_command_and_an_option() {
    for args in [["version"], ["--version"], ["-V"]] {
        let out = barge(&args);
        assert_success(&out);
        let text = stdout(&out);
        assert_eq!(
            text.trim(),
            format!("barge {}", env!("CARGO_PKG_VERSION")),
            "{args:?}"
        );
    }
}

#[test]
fn help_command_prints_each_commands_own_help() {
    for cmd in ["pull", "commit", "push", "login", "logout"] {
        let via_help = barge(&["help", cmd]);
        assert_success(&via_help);
        let via_flag = barge(&[cmd, "--help"]);
        assert_success(&via_flag);
        let text = stdout(&via_help);
        assert_eq!(text, stdout(&via_flag), "help {cmd} vs {cmd} --help");
        assert!(
            text.contains(&format!("Usage: barge {cmd}")),
            "help {cmd}:\n{text}"
        );
    }
    let overview = stdout(&barge(&["help"]));
    assert!(overview.contains("Commands:") && overview.contains("version"));
    let line = assert_clean_failure(&barge(&["help", "frobnicate"]), &[]);
    assert!(line.contains("barge help"), "{line}");
}

#[test]
fn logout_help_is_logouts() {
    let out = barge(&["logout", "--help"]);
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.contains("Usage: barge logout"), "{text}");
    assert!(!text.contains("Usage: barge login"), "{text}");
    assert!(!text.contains("--password-stdin"), "{text}");
}

// ------------------------------------------------------------------ image names

#[test]
fn docker_transport_prefix_is_accepted() {
    let tmp = TempDir::new("habits");
    let dir = tmp.join("rootfs");
    let image = format!("docker://{}", f().image("test/busybox:oci"));
    let out = barge(&["pull", &image, "-r", s(&dir), "-q"]);
    assert_success(&out);
    tree::assert_same_tree(&f().expected("busybox"), &snapshot(&dir));
}

// ------------------------------------------------------------------ --platform

#[test]
fn platform_mismatch_on_single_platform_image_is_an_error() {
    let tmp = TempDir::new("habits");
    let dir = tmp.join("rootfs");
    let image = f().image("test/busybox:oci");
    let state = DirState::capture(&dir);
    let out = barge(&[
        "pull",
        &image,
        "-r",
        s(&dir),
        "-q",
        "--platform",
        "linux/arm64",
    ]);
    let line = assert_clean_failure(&out, &[]);
    assert!(
        line.contains("image's platform linux/amd64 does not match the requested linux/arm64"),
        "{line}"
    );
    assert!(out.stdout.is_empty(), "stdout with -q: {}", stdout(&out));
    state.assert_unchanged();

    // The image's own platform (and an alias of it) is accepted.
    for want in ["linux/amd64", "linux/x86_64"] {
        let d = tmp.join(want.replace('/', "-"));
        let out = barge(&["pull", &image, "-r", s(&d), "-q", "--platform", want]);
        assert_success(&out);
        assert!(out.stdout.is_empty(), "{want}: {}", stdout(&out));
    }
}

// ------------------------------------------------------------------ signals

/// A TCP proxy to `upstream` that passes responses at `rate` bytes/s (requests at full
/// speed) and counts the response bytes it passed, so a test can act mid-layer.
struct SlowProxy {
    port: u16,
    passed: Arc<AtomicU64>,
}

impl SlowProxy {
    fn start(upstream: String, rate: u64) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let passed = Arc::new(AtomicU64::new(0));
        let counter = passed.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let counter = counter.clone();
                std::thread::spawn(move || relay(client, server, rate, &counter));
            }
        });
        SlowProxy { port, passed }
    }

    fn passed(&self) -> u64 {
        self.passed.load(Ordering::SeqCst)
    }
}

fn relay(client: TcpStream, server: TcpStream, rate: u64, passed: &AtomicU64) {
    let (Ok(mut c_in), Ok(mut s_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_in, &mut s_out);
        let _ = s_out.shutdown(Shutdown::Write);
    });
    let (mut s_in, mut c_out) = (server, client);
    let chunk = 8192usize;
    let pause = Duration::from_secs_f64(chunk as f64 / rate as f64);
    let mut buf = vec![0u8; chunk];
    loop {
        match s_in.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if c_out.write_all(&buf[..n]).is_err() {
                    break;
                }
                passed.fetch_add(n as u64, Ordering::SeqCst);
                std::thread::sleep(pause);
            }
        }
    }
    let _ = c_out.shutdown(Shutdown::Both);
}

/// Starts a pull through a slow proxy, sends `sig` once part of the layer has passed,
/// and checks the exit status, the one line and that the target is as before.
fn signal_mid_pull(sig: libc::c_int, want_status: i32) {
    let proxy = SlowProxy::start(f().registry.host(), 256 << 10);
    let image = format!("127.0.0.1:{}/test/busybox:oci", proxy.port);
    let tmp = TempDir::new("habits");
    let dir = tmp.join("rootfs");
    let state = DirState::capture(&dir);
    let mut child = Command::new(barge_path())
        .args(["pull", &image, "-r", s(&dir), "-g"])
        .env("DOCKER_CONFIG", tmp.path())
        .env("HOME", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn barge pull");
    // Manifest and config are a few KiB; past 96 KiB, the layer is streaming.
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.passed() < 96 << 10 {
        let ended = child.try_wait().expect("try_wait").is_some();
        assert!(
            !ended && Instant::now() < deadline,
            "the pull ended (or stalled) before the layer streamed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill");
    let sent = Instant::now();
    let out = wait_with_deadline(child, Duration::from_secs(10));
    let took = sent.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(want_status),
        "status {:?}, stderr:\n{stderr}",
        out.status
    );
    assert_eq!(stderr, format!("barge: pull {image}: interrupted\n"));
    assert!(
        proxy.passed() < 1 << 20 || took < Duration::from_secs(2),
        "barge took {took:?} to stop"
    );
    state.assert_unchanged();
    assert!(list_dir(tmp.path()).iter().all(|n| !n.contains("rootfs")));
}

fn wait_with_deadline(mut child: std::process::Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "barge did not stop after the signal:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("wait")
}

#[test]
fn sigint_mid_pull_exits_130_with_one_line() {
    signal_mid_pull(libc::SIGINT, 130);
}

#[test]
fn sigterm_mid_pull_exits_143_with_one_line() {
    signal_mid_pull(libc::SIGTERM, 143);
}

// ------------------------------------------------------------------ errors that say what to do

#[test]
fn connection_refused_is_clear_and_quick() {
    let tmp = TempDir::new("habits");
    let dir = tmp.join("rootfs");
    let port = free_port();
    let image = format!("127.0.0.1:{port}/x/y:1");
    let start = Instant::now();
    let out = barge(&["pull", &image, "-r", s(&dir)]);
    let took = start.elapsed();
    let line = assert_clean_failure(&out, &[]);
    assert!(
        line.contains(&format!(
            "nothing is listening at 127.0.0.1:{port}: is the registry running, and is the address right?"
        )),
        "{line}"
    );
    assert!(took < Duration::from_millis(500), "took {took:?}: {line}");
}

/// `barge pull IMAGE -r DIR -g` of the busybox fixture.
fn pull_git(tmp: &TempDir) -> std::path::PathBuf {
    let dir = tmp.join("rootfs");
    let out = barge(&[
        "pull",
        &f().image("test/busybox:oci"),
        "-r",
        s(&dir),
        "-g",
        "-q",
    ]);
    assert_success(&out);
    dir
}

#[test]
fn nothing_to_commit_says_how_to_see_the_tree() {
    let tmp = TempDir::new("habits");
    let dir = pull_git(&tmp);
    let out = barge(&["commit", "-r", s(&dir), "-m", "noop"]);
    let line = assert_clean_failure(&out, &[]);
    let hint = format!("run `barge status -r {}` to see it", dir.display());
    assert!(line.contains("nothing to commit: "), "{line}");
    assert!(line.contains("is the same as layer_0_"), "{line}");
    assert!(line.ends_with(&hint), "{line}");
    // The command named works and shows a clean tree.
    let status = run(Command::new("git").args(["-C", s(&dir), "status", "--porcelain"]));
    assert!(status.is_empty(), "{}", String::from_utf8_lossy(&status));
}

/// Commits a new file; returns the new config and the base image's.
fn commit_config(env: &[(&str, &str)]) -> (tinyjson::JsonValue, tinyjson::JsonValue) {
    let tmp = TempDir::new("habits");
    let dir = pull_git(&tmp);
    std::fs::write(dir.join("new-file"), b"hello\n").expect("write");
    let out = barge_clean(&["commit", "-r", s(&dir), "-m", "add"], env, tmp.path());
    assert_success(&out);
    let text = stdout(&out);
    let digest = text
        .lines()
        .find_map(|l| l.strip_prefix("Config: sha256:"))
        .unwrap_or_else(|| panic!("no Config line:\n{text}"));
    let blob = dir.join(".git/barge/blobs/sha256").join(digest.trim());
    let new = parse_json(&std::fs::read(&blob).expect("read committed config"));
    let base_digest = str_of(&f().layout.manifest("busybox")["config"]["digest"]);
    (new, f().layout.read_json(&base_digest))
}

fn rfc3339(t: i64) -> String {
    let out = run(Command::new("date")
        .args(["-u", "-d"])
        .arg(format!("@{t}"))
        .arg("+%Y-%m-%dT%H:%M:%SZ"));
    String::from_utf8_lossy(&out).trim().to_string()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn last_history_created(config: &tinyjson::JsonValue) -> String {
    let h: &Vec<tinyjson::JsonValue> = config["history"].get().expect("history array");
    str_of(&h[h.len() - 1]["created"])
}

#[test]
fn commit_created_is_source_date_epoch() {
    let (new, base) = commit_config(&[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert_eq!(str_of(&new["created"]), "2023-11-14T22:13:20Z");
    assert_eq!(last_history_created(&new), "2023-11-14T22:13:20Z");
    assert_ne!(str_of(&base["created"]), "2023-11-14T22:13:20Z");
}

#[test]
fn commit_created_is_now_without_source_date_epoch() {
    let before = rfc3339(now());
    let (new, base) = commit_config(&[]);
    let after = rfc3339(now());
    let created = str_of(&new["created"]);
    assert!(
        before <= created && created <= after,
        "{before} <= {created} <= {after}"
    );
    assert_eq!(last_history_created(&new), created);
    assert_ne!(str_of(&base["created"]), created);
}
