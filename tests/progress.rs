//! Integration tests of what `barge pull` prints while it works, per `--progress`
//! style, against a real docker-registry: plain lines with no escape codes (and, behind
//! a throttling TCP proxy written here, at a steady pace while a slow layer is still
//! arriving), live redraws with `tty` even to a pipe, and silence with `-q`/`quiet`.

mod common;

use common::fixtures::{noise, push_crafted, TarBuilder};
use common::registry::{Mode, Registry};
use common::{assert_success, barge_env, barge_path, TempDir};
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The slow layer: incompressible, so gzip keeps it at ~3 MiB on the wire.
const SLOW_LAYER: usize = 3 << 20;
/// What the proxy lets through from the registry to barge, per connection.
const THROTTLE: u64 = 256 << 10;
/// The plain-mode pace asked of barge in the slow test.
const INTERVAL_MS: u64 = 1000;
/// The pushed layer is larger than a loopback socket's send buffer (up to 4 MiB
/// with Linux's default autotuning), so most of it is written at the proxy's pace.
const PUSH_LAYER: usize = 7 << 20;
const PUSH_THROTTLE: u64 = 512 << 10;

/// One registry for this test binary, with a two-layer image and a slow one.
struct Images {
    registry: Registry,
}

fn images() -> &'static Images {
    static I: OnceLock<Images> = OnceLock::new();
    I.get_or_init(|| {
        let registry = Registry::start(Mode::Plain);
        let a = TarBuilder::new()
            .dir("etc/", 0o755)
            .file("etc/a", 0o644, &noise(64 << 10, 1))
            .finish();
        let b = TarBuilder::new()
            .file("b", 0o644, &noise(32 << 10, 2))
            .finish();
        push_crafted(&registry, "progress/two:1", &[a, b]);
        let slow = TarBuilder::new()
            .file("big", 0o644, &noise(SLOW_LAYER, 3))
            .finish();
        push_crafted(&registry, "progress/slow:1", &[slow]);
        Images { registry }
    })
}

/// `barge pull IMAGE -r TMP/rootfs EXTRA…`, asserting success.
fn pull(image: &str, extra: &[&str], env: &[(&str, &OsStr)]) -> (TempDir, Output) {
    let tmp = TempDir::new("progress");
    let dir = tmp.join("rootfs");
    let mut args = vec!["pull", image, "-r", dir.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    let out = barge_env(&args, env);
    assert_success(&out);
    assert!(dir.join("b").is_file() || dir.join("big").is_file());
    (tmp, out)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `\tsha256:… (SIZE) ... done[ (mounted)]` lines.
fn done_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.contains(") ... done"))
        .collect()
}

#[test]
fn plain_prints_one_line_per_layer_and_no_escape_codes() {
    let image = images().registry.image("progress/two:1");
    let (_t, out) = pull(&image, &["--progress=plain"], &[]);
    let stdout = text(&out.stdout);
    assert!(
        !out.stdout.contains(&0x1b),
        "escape code in plain output:\n{stdout:?}"
    );
    assert!(!stdout.contains('\r'), "carriage return:\n{stdout:?}");
    assert!(stdout.contains("Pulling 2 layers:"), "{stdout}");
    let done = done_lines(&stdout);
    assert_eq!(done.len(), 2, "one done line per layer:\n{stdout}");
    for line in done {
        assert!(
            line.starts_with("\tsha256:") && line.contains(" KiB) ... done"),
            "size not in KiB: {line:?}"
        );
    }
    // auto on a pipe is plain.
    let (_t, auto) = pull(&image, &[], &[]);
    assert!(!auto.stdout.contains(&0x1b), "{:?}", text(&auto.stdout));
}

#[test]
fn tty_redraws_even_to_a_pipe_and_clears_before_each_done_line() {
    let image = images().registry.image("progress/two:1");
    let (_t, out) = pull(&image, &["--progress=tty"], &[]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("\x1b[2K\tsha256:"),
        "no live line:\n{stdout:?}"
    );
    assert!(
        stdout.contains("\x1b[2Ktotal: 0/2 layers,")
            && stdout.contains("\x1b[2Ktotal: 1/2 layers,"),
        "no total line per layer:\n{stdout:?}"
    );
    assert!(stdout.contains("% "), "no percent:\n{stdout:?}");
    // Each layer's live lines are erased and replaced by its clean final line.
    let clear = "\r\x1b[2K\x1b[1A\x1b[2K";
    let done = done_lines(&stdout);
    assert_eq!(done.len(), 2, "{stdout:?}");
    for line in done {
        let last = line.rfind("\tsha256:").expect("digest in done line");
        let before = format!("{clear}{}", &line[last..]);
        assert!(
            stdout.contains(&before),
            "{line:?} not after a clear:\n{stdout:?}"
        );
    }
    assert_eq!(stdout.matches(clear).count(), 2, "{stdout:?}");
}

#[test]
fn quiet_and_q_print_nothing_on_stdout() {
    let image = images().registry.image("progress/two:1");
    for flag in ["-q", "--progress=quiet"] {
        let (_t, out) = pull(&image, &[flag], &[]);
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{flag}: stdout {:?}, stderr {:?}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

#[test]
fn unknown_progress_value_is_one_clean_error() {
    let out = barge_env(&["pull", "x", "--progress=fancy"], &[]);
    let line = common::assert_clean_failure(&out, &[]);
    assert!(
        line.contains("\"fancy\"") && line.contains("plain"),
        "{line}"
    );
}

/// A line of stdout and when it arrived.
struct Timed {
    at: Instant,
    line: String,
}

/// Bytes done in a plain progress line `\tsha256:X 1.2 MiB / 3.0 MiB (40%) …`.
fn bytes_done(line: &str) -> Option<f64> {
    let rest = line.strip_prefix("\tsha256:")?;
    let (_, rest) = rest.split_once(' ')?;
    let (done, rest) = rest.split_once(" / ")?;
    if !rest.contains("%)") {
        return None;
    }
    let (num, unit) = done.split_once(' ')?;
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1048576.0,
        _ => return None,
    };
    Some(num.parse::<f64>().ok()? * scale)
}

#[test]
fn plain_lines_come_at_a_steady_pace_while_a_slow_layer_arrives() {
    let reg = &images().registry;
    let proxy = throttling_proxy(reg.port, (THROTTLE, None), Duration::from_secs(40));
    let image = format!("127.0.0.1:{proxy}/progress/slow:1");
    let tmp = TempDir::new("progress-slow");
    let home = TempDir::new("progress-home");
    let dir = tmp.join("rootfs");
    let start = Instant::now();
    let (lines, status, stderr) = run_timed(&image, &dir, home.path());
    let end = Instant::now();
    let all: String = lines.iter().map(|t| format!("{}\n", t.line)).collect();
    assert!(status.success(), "pull failed: {stderr}\n{all}");
    assert!(
        end - start > Duration::from_secs(8),
        "not throttled: {:?}",
        end - start
    );
    assert!(!all.contains('\x1b'), "escape code:\n{all:?}");
    assert!(all.contains("Pulling 1 layer:"), "{all}");
    let progress: Vec<(&Timed, f64)> = lines
        .iter()
        .filter_map(|t| Some((t, bytes_done(&t.line)?)))
        .collect();
    assert!(
        progress.len() >= 5,
        "expected a line every {INTERVAL_MS} ms of a >8 s layer:\n{all}"
    );
    for pair in progress.windows(2) {
        let ((a, da), (b, db)) = (pair[0], pair[1]);
        assert!(db > da, "byte counts must grow:\n{all}");
        let gap = b.at - a.at;
        assert!(
            gap >= Duration::from_millis(INTERVAL_MS * 8 / 10),
            "lines {gap:?} apart, faster than the pace:\n{all}"
        );
    }
    // They were printed while the layer was arriving, not all at its end.
    let first = progress[0].0.at;
    assert!(
        end - first > Duration::from_secs(4),
        "progress came late:\n{all}"
    );
    assert!(
        first - start < Duration::from_secs(4),
        "first line late:\n{all}"
    );
    let done = done_lines(&all);
    assert_eq!(done.len(), 1, "{all}");
    let label = &done[0].trim()[..19];
    assert!(
        progress
            .iter()
            .all(|(t, _)| t.line.starts_with(&format!("\t{label} "))),
        "lines not labelled {label}:\n{all}"
    );
}

/// Runs the slow pull with stdout on a pipe, timestamping each line as it arrives.
fn run_timed(
    image: &str,
    dir: &Path,
    home: &Path,
) -> (Vec<Timed>, std::process::ExitStatus, String) {
    let dir = dir.to_str().expect("utf-8 path");
    run_timed_args(&["pull", image, "-r", dir], home)
}

/// Runs barge with `--progress=plain` at the test pace, timing each stdout line.
fn run_timed_args(args: &[&str], home: &Path) -> (Vec<Timed>, std::process::ExitStatus, String) {
    let mut cmd = Command::new(barge_path());
    cmd.args(args)
        .arg("--progress=plain")
        .env("BARGE_PROGRESS_INTERVAL_MS", INTERVAL_MS.to_string())
        .env("DOCKER_CONFIG", home)
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().expect("run barge");
    let stdout = child.stdout.take().expect("stdout pipe");
    let mut stderr = child.stderr.take().expect("stderr pipe");
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let lines = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .map(|line| Timed {
            at: Instant::now(),
            line,
        })
        .collect();
    let status = child.wait().expect("wait for barge");
    (lines, status, err.join().unwrap_or_default())
}

/// A TCP proxy on 127.0.0.1 (the returned port) to `upstream`, passing requests as
/// they come and responses at `rate` bytes/s per connection. It accepts for
/// `lifetime`, and every relay ends by then too.
/// A proxy to `upstream` that sends at most `down` bytes a second to the client,
/// and `up` (when given) to the registry.
fn throttling_proxy(upstream: u16, (rate, up): (u64, Option<u64>), lifetime: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    if up.is_some() {
        small_receive_buffer(&listener);
    }
    let port = listener.local_addr().expect("proxy address").port();
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let deadline = Instant::now() + lifetime;
    let to = SocketAddr::from(([127, 0, 0, 1], upstream));
    thread::spawn(move || {
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((client, _)) => {
                    thread::spawn(move || relay(client, to, (rate, up), deadline));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(10))
                }
                Err(_) => return,
            }
        }
    });
    port
}

/// Accepted connections get a 64 KiB receive buffer, so an upload cannot hide in
/// the kernel's buffers: the client's writes follow the throttled pace.
fn small_receive_buffer(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 64 << 10;
    // SAFETY: setsockopt reads an int we own, on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF: {}", io::Error::last_os_error());
}

fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    (rate, up): (u64, Option<u64>),
    deadline: Instant,
) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let _ = client.set_nonblocking(false);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    thread::spawn(move || pump(c2, s2, up, deadline));
    pump(server, client, Some(rate), deadline);
}

/// Copies `from` to `to` until EOF, an error or `deadline`; with `rate`, in 4 KiB
/// pieces at that many bytes/s (no credit is saved up while idle).
fn pump(mut from: TcpStream, mut to: TcpStream, rate: Option<u64>, deadline: Instant) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 16 << 10];
    let mut next = Instant::now();
    while Instant::now() < deadline {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        let Some(rate) = rate else {
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            continue;
        };
        for piece in buf[..n].chunks(4096) {
            let now = Instant::now();
            next = next.max(now);
            thread::sleep(next - now);
            next += Duration::from_secs_f64(piece.len() as f64 / rate as f64);
            if to.write_all(piece).is_err() {
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[test]
fn push_draws_a_meter_for_an_uploaded_layer_and_plain_has_no_escapes() {
    let reg = &images().registry;
    let (tmp, _) = pull(&reg.image("progress/two:1"), &["-g", "-q"], &[]);
    let dir = tmp.join("rootfs");
    std::fs::write(dir.join("new"), noise(200 << 10, 4)).expect("write a new file");
    let d = dir.to_str().expect("utf-8 path");
    assert_success(&barge_env(&["commit", "-r", d, "-m", "add new", "-q"], &[]));
    let tty = barge_env(
        &[
            "push",
            &reg.image("progress/pushed:tty"),
            "-r",
            d,
            "--progress=tty",
        ],
        &[],
    );
    assert_success(&tty);
    let stdout = text(&tty.stdout);
    assert!(stdout.contains("Pushing 3 layers:"), "{stdout:?}");
    // Two layers are already there; only the committed one is uploaded, with a meter.
    assert!(
        stdout.contains("\x1b[2Ktotal: 2/3 layers,"),
        "no meter for the upload:\n{stdout:?}"
    );
    assert_eq!(done_lines(&stdout).len(), 3, "{stdout:?}");
    let plain = barge_env(
        &[
            "push",
            &reg.image("progress/pushed:plain"),
            "-r",
            d,
            "--progress=plain",
        ],
        &[],
    );
    assert_success(&plain);
    assert!(!plain.stdout.contains(&0x1b), "{:?}", text(&plain.stdout));
    assert_eq!(done_lines(&text(&plain.stdout)).len(), 3);
}

/// A tree pulled with `-g` from `progress/two:1`, ready for commits.
fn committable_tree() -> (TempDir, String) {
    let reg = &images().registry;
    let (tmp, _) = pull(&reg.image("progress/two:1"), &["-g", "-q"], &[]);
    let dir = tmp.join("rootfs").to_str().expect("utf-8 path").to_string();
    (tmp, dir)
}

fn commit(dir: &str, file: &str, seed: u64, flag: &str) -> Output {
    let path = Path::new(dir).join(file);
    std::fs::write(path, noise(4 << 20, seed)).expect("write a new file");
    let pace = OsStr::new("1");
    let out = barge_env(
        &["commit", "-r", dir, "-m", file, flag],
        &[("BARGE_PROGRESS_INTERVAL_MS", pace)],
    );
    assert_success(&out);
    out
}

#[test]
fn commit_draws_a_meter_while_it_writes_the_layer() {
    let (_tmp, dir) = committable_tree();
    let plain = commit(&dir, "one", 5, "--progress=plain");
    let stdout = text(&plain.stdout);
    assert!(!plain.stdout.contains(&0x1b), "escape code:\n{stdout:?}");
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("\tnew layer ") && l.contains(" / 4.0 MiB ("))
        .collect();
    assert!(!lines.is_empty(), "no meter line:\n{stdout}");
    assert!(stdout.contains("Changes committed in layer_2_"), "{stdout}");

    let tty = commit(&dir, "two", 6, "--progress=tty");
    let stdout = text(&tty.stdout);
    assert!(
        stdout.contains("\x1b[2K\tnew layer [") && stdout.contains("\x1b[2Ktotal: 0/1 layer,"),
        "no live meter:\n{stdout:?}"
    );
    assert!(
        stdout.contains("\r\x1b[2K\x1b[1A\x1b[2KChanges committed in layer_3_"),
        "meter not cleared before the summary:\n{stdout:?}"
    );

    let quiet = commit(&dir, "three", 7, "-q");
    assert!(
        quiet.stdout.is_empty() && quiet.stderr.is_empty(),
        "-q: stdout {:?}, stderr {:?}",
        text(&quiet.stdout),
        text(&quiet.stderr)
    );
}

#[test]
fn plain_lines_grow_while_a_slow_push_uploads() {
    let reg = &images().registry;
    let (_tmp, dir) = committable_tree();
    let big = Path::new(&dir).join("big");
    std::fs::write(big, noise(PUSH_LAYER, 8)).expect("write a new file");
    assert_success(&barge_env(&["commit", "-r", &dir, "-m", "big", "-q"], &[]));
    let proxy = throttling_proxy(
        reg.port,
        (u64::MAX, Some(PUSH_THROTTLE)),
        Duration::from_secs(40),
    );
    let image = format!("127.0.0.1:{proxy}/progress/two:slowpush");
    let home = TempDir::new("progress-home");
    let start = Instant::now();
    let (lines, status, stderr) = run_timed_args(&["push", &image, "-r", &dir], home.path());
    let all: String = lines.iter().map(|t| format!("{}\n", t.line)).collect();
    assert!(status.success(), "push failed: {stderr}\n{all}");
    assert!(
        start.elapsed() > Duration::from_secs(8),
        "not throttled:\n{all}"
    );
    assert!(!all.contains('\x1b'), "escape code:\n{all:?}");
    let counts: Vec<f64> = lines.iter().filter_map(|t| bytes_done(&t.line)).collect();
    assert!(
        counts.len() >= 4,
        "expected a line every {INTERVAL_MS} ms during the upload:\n{all}"
    );
    assert!(
        counts.windows(2).all(|w| w[1] >= w[0]),
        "byte counts never go back:\n{all}"
    );
    let growing = counts.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(
        growing >= 3,
        "byte counts must grow while uploading:\n{all}"
    );
}
