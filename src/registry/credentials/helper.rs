//! Docker's credential-helper protocol: `docker-credential-NAME get|store|erase`, found on
//! PATH, the server URL or a `{"ServerURL","Username","Secret"}` JSON on stdin, JSON or
//! an error text on stdout. Each run is bounded in time and output size.

use crate::error::{Error, Kind, Result};
use crate::json::{self, JsonValue};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long one helper run may take (a helper may ask for a GPG passphrase).
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Most a helper may print on stdout or stderr (real answers are a few hundred bytes).
const MAX_OUTPUT: usize = 64 << 10;
/// What helpers print (on stdout) when they hold nothing for the server.
const NOT_FOUND: &str = "credentials not found in native keychain";
/// The user name helpers store with an identity (refresh) token.
const TOKEN_USER: &str = "<token>";

/// A configured helper: `docker-credential-NAME` and where the config named it.
#[derive(Debug, Clone)]
pub struct Helper {
    pub name: String,
    /// What to remove from the config to stop using it (`credsStore`, `credHelpers."HOST"`).
    pub setting: String,
    pub config: PathBuf,
    pub timeout: Duration,
    /// The program's path when already known; else it is looked up on PATH at each run.
    pub path: Option<PathBuf>,
}

/// What `get` answered: a user name and a password or token.
pub struct Answer {
    pub user: String,
    pub secret: String,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The outcome of one run.
struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Helper {
    /// `docker-credential-NAME`.
    pub fn program(&self) -> String {
        format!("docker-credential-{}", self.name)
    }

    /// The credentials stored for `server_url`, `None` when the helper has none.
    pub fn get(&self, server_url: &str) -> Result<Option<Answer>> {
        let run = self.run("get", server_url.as_bytes())?;
        if !run.status.success() {
            if self.is_not_found(&run) {
                return Ok(None);
            }
            return Err(self.failed("get", server_url, &run));
        }
        let answer = parse_get(&run.stdout).map_err(|e| {
            Error::new(format!("{} get: {}", self.program(), e.message()))
                .hint("the helper's answer is not Docker's credential JSON; check the helper")
        })?;
        if answer.as_ref().is_some_and(|a| a.user == TOKEN_USER) {
            return Err(Error::with_kind(
                Kind::Auth,
                format!(
                    "{} holds an identity token for {server_url}, which barge cannot use",
                    self.program()
                ),
            )
            .hint(format!(
                "run `barge login {server_url}` with a password or access token, or pass -u USER"
            )));
        }
        Ok(answer)
    }

    /// Stores `user`/`secret` for `server_url`.
    pub fn store(&self, server_url: &str, user: &str, secret: &str) -> Result<()> {
        let input = store_input(server_url, user, secret);
        let run = self.run("store", input.as_bytes())?;
        match run.status.success() {
            true => Ok(()),
            false => Err(self.failed("store", server_url, &run)),
        }
    }

    /// Erases what the helper holds for `server_url`; `false` if it held nothing.
    pub fn erase(&self, server_url: &str) -> Result<bool> {
        let run = self.run("erase", server_url.as_bytes())?;
        if run.status.success() {
            return Ok(true);
        }
        match self.is_not_found(&run) {
            true => Ok(false),
            false => Err(self.failed("erase", server_url, &run)),
        }
    }

    fn is_not_found(&self, run: &Run) -> bool {
        message(run).contains(NOT_FOUND)
    }

    fn failed(&self, action: &str, server_url: &str, run: &Run) -> Error {
        let how = match run.status.code() {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_string(),
        };
        let text = message(run);
        let said = if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        };
        Error::with_kind(
            Kind::Auth,
            format!("{} {action} failed ({how}){said}", self.program()),
        )
        .hint(format!(
            "check that the helper works (`echo {server_url} | {} get`), or remove {} from {}",
            self.program(),
            self.setting,
            self.config.display()
        ))
    }

    /// Runs the helper with `action` and `input` on stdin, within the timeout.
    fn run(&self, action: &str, input: &[u8]) -> Result<Run> {
        let found = self.path.clone().or_else(|| find_on_path(&self.program()));
        let path = found.ok_or_else(|| {
            Error::new(format!("{} not found on PATH", self.program())).hint(format!(
                "install it or remove {} from {}",
                self.setting,
                self.config.display()
            ))
        })?;
        let child = Command::new(&path)
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::new(format!("run {}: {e}", path.display())).hint(format!(
                    "check the helper named by {} in {}",
                    self.setting,
                    self.config.display()
                ))
            })?;
        run_child(child, input, self.timeout).map_err(|e| {
            let what = format!("{} {action}", self.program());
            match e.kind() {
                Kind::Interrupted => e,
                _ => e.context(what),
            }
        })
    }
}

/// The first executable file called `name` in a directory of `$PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| match dir.as_os_str().is_empty() {
            true => PathBuf::from(".").join(name),
            false => dir.join(name),
        })
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The JSON `store` reads.
fn store_input(server_url: &str, user: &str, secret: &str) -> String {
    json::to_string_sorted(&json::object([
        ("ServerURL", json::string(server_url)),
        ("Username", json::string(user)),
        ("Secret", json::string(secret)),
    ]))
}

/// `get`'s answer; empty user and secret (old helpers' "nothing") is `None`.
fn parse_get(stdout: &[u8]) -> Result<Option<Answer>> {
    let doc: JsonValue = json::parse(stdout, "answer")?;
    json::as_object(&doc, "answer")?;
    let user = json::opt_str(&doc, "Username")?.unwrap_or_default();
    let secret = json::opt_str(&doc, "Secret")?.unwrap_or_default();
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Answer {
        user: user.to_string(),
        secret: secret.to_string(),
    }))
}

/// What the helper said about a failure: the last line of stdout (where helpers print
/// errors), else of stderr; control characters dropped, at most 300 characters.
fn message(run: &Run) -> String {
    let last = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(str::to_string)
    };
    let text = last(&run.stdout)
        .or_else(|| last(&run.stderr))
        .unwrap_or_default();
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// Feeds `input`, collects stdout and stderr (each bounded), and waits for the exit,
/// all before `timeout`; the child is killed on any failure.
fn run_child(mut child: Child, input: &[u8], timeout: Duration) -> Result<Run> {
    let deadline = Deadline {
        at: Instant::now() + timeout,
        timeout,
    };
    let result = pump(&mut child, input, deadline).and_then(|(stdout, stderr)| {
        let status = wait_until(&mut child, deadline)?;
        Ok(Run {
            status,
            stdout,
            stderr,
        })
    });
    if result.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

/// When a run must be over, and the limit it came from (for the error).
#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    fn left(&self) -> Result<Duration> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::new(format!(
                "no answer within {:.1} s",
                self.timeout.as_secs_f64()
            ))
            .hint("check that the helper works on its own and does not wait for input"));
        }
        Ok(left)
    }
}

/// One end of a pipe to the child, polled without blocking.
enum End {
    In(std::process::ChildStdin, usize),
    Out(Box<dyn ReadFd>, Vec<u8>),
}

trait ReadFd: Read + AsRawFd {}
impl<T: Read + AsRawFd> ReadFd for T {}

fn set_nonblocking(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; only O_NONBLOCK is added.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Writes `input` to the child's stdin and reads its stdout and stderr until both close.
fn pump(child: &mut Child, input: &[u8], deadline: Deadline) -> Result<(Vec<u8>, Vec<u8>)> {
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(Error::new("helper pipes missing"));
    };
    let mut ends: Vec<Option<End>> = vec![
        Some(End::In(stdin, 0)),
        Some(End::Out(Box::new(stdout), Vec::new())),
        Some(End::Out(Box::new(stderr), Vec::new())),
    ];
    for end in ends.iter().flatten() {
        set_nonblocking(fd_of(end))?;
    }
    let mut outputs: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    while ends.iter().any(Option::is_some) {
        let ready = poll_ends(&ends, deadline)?;
        for (i, revents) in ready {
            let slot = &mut ends[i];
            let done = match slot.as_mut() {
                Some(End::In(w, off)) => feed(w, input, off, revents)?,
                Some(End::Out(r, buf)) => drain(r.as_mut(), buf)?,
                None => false,
            };
            if done {
                if let Some(End::Out(_, buf)) = slot.take() {
                    outputs[i - 1] = buf;
                }
            }
        }
    }
    let [stdout, stderr] = outputs;
    Ok((stdout, stderr))
}

fn fd_of(end: &End) -> i32 {
    match end {
        End::In(w, _) => w.as_raw_fd(),
        End::Out(r, _) => r.as_raw_fd(),
    }
}

/// Waits until some open end is ready; returns (index, revents) pairs.
fn poll_ends(ends: &[Option<End>], deadline: Deadline) -> Result<Vec<(usize, i16)>> {
    let mut fds = Vec::new();
    let mut index = Vec::new();
    for (i, end) in ends.iter().enumerate() {
        if let Some(end) = end {
            let events = match end {
                End::In(..) => libc::POLLOUT,
                End::Out(..) => libc::POLLIN,
            };
            fds.push(libc::pollfd {
                fd: fd_of(end),
                events,
                revents: 0,
            });
            index.push(i);
        }
    }
    loop {
        crate::signal::check()?;
        let left = deadline.left()?;
        let ms = left.as_millis().clamp(1, 60_000) as libc::c_int;
        // SAFETY: fds is a valid array of pollfd for the call's duration.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if n > 0 {
            return Ok(fds
                .iter()
                .zip(&index)
                .filter(|(f, _)| f.revents != 0)
                .map(|(f, i)| (*i, f.revents))
                .collect());
        }
    }
}

/// Writes more input; true once all is written or the child closed its stdin.
fn feed(
    w: &mut std::process::ChildStdin,
    input: &[u8],
    off: &mut usize,
    revents: i16,
) -> Result<bool> {
    if revents & (libc::POLLERR | libc::POLLHUP) != 0 && revents & libc::POLLOUT == 0 {
        return Ok(true);
    }
    match w.write(&input[*off..]) {
        Ok(n) => *off += n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(true),
        Err(e) => return Err(e.into()),
    }
    Ok(*off >= input.len())
}

/// Reads what is there; true at end of file. Too much output is an error.
fn drain(r: &mut dyn ReadFd, buf: &mut Vec<u8>) -> Result<bool> {
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                if buf.len() + n > MAX_OUTPUT {
                    return Err(
                        Error::new(format!("printed more than {} KiB", MAX_OUTPUT >> 10))
                            .hint("this is not a credential helper's answer; check the helper"),
                    );
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => crate::signal::check()?,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits for the child's exit until `deadline`.
fn wait_until(child: &mut Child, deadline: Deadline) -> Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        crate::signal::check()?;
        deadline.left()?;
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tmpdir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("barge-helper-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// A helper at `dir/docker-credential-t` running `body` (sh) with `$1` the action.
    fn helper(dir: &Path, body: &str, timeout: Duration) -> Helper {
        let path = dir.join("docker-credential-t");
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        Helper {
            name: "t".into(),
            setting: "credsStore".into(),
            config: dir.join("config.json"),
            timeout,
            path: Some(path),
        }
    }

    /// A protocol-speaking helper keeping one entry in `dir/store`: what it got on stdin.
    const STORE: &str = r#"d=$(dirname "$0")
case "$1" in
get) url=$(cat); if [ -f "$d/store" ] && grep -qF "\"ServerURL\":\"$url\"" "$d/store"; then cat "$d/store"; else echo "credentials not found in native keychain"; exit 1; fi;;
store) cat > "$d/store";;
erase) url=$(cat); if [ -f "$d/store" ] && grep -qF "\"ServerURL\":\"$url\"" "$d/store"; then rm "$d/store"; else echo "credentials not found in native keychain"; exit 1; fi;;
*) echo "unknown action $1"; exit 1;;
esac"#;

    #[test]
    fn json_exchange_store_get_erase() {
        let d = tmpdir("exchange");
        let h = helper(&d, STORE, TIMEOUT);
        assert!(h.get("h:1").unwrap().is_none());
        h.store("h:1", "bob", "pa\"ss\\word").unwrap();
        let stored = fs::read_to_string(d.join("store")).unwrap();
        assert_eq!(
            stored,
            r#"{"Secret":"pa\"ss\\word","ServerURL":"h:1","Username":"bob"}"#
        );
        let a = h.get("h:1").unwrap().unwrap();
        assert_eq!(
            (a.user.as_str(), a.secret.as_str()),
            ("bob", "pa\"ss\\word")
        );
        assert!(h.get("other:2").unwrap().is_none());
        assert!(h.erase("h:1").unwrap());
        assert!(!h.erase("h:1").unwrap());
        assert!(h.get("h:1").unwrap().is_none());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn answers_that_mean_nothing_or_a_token() {
        // Old helpers (pass 0.6) answer "nothing" with empty fields and exit 0.
        let empty = parse_get(br#"{"ServerURL":"h","Username":"","Secret":""}"#).unwrap();
        assert!(empty.is_none());
        let a = parse_get(b" {\"Username\":\"u\",\"Secret\":\"s\"}\n")
            .unwrap()
            .unwrap();
        assert_eq!((a.user.as_str(), a.secret.as_str()), ("u", "s"));
        assert!(parse_get(b"not json").is_err());
        assert!(parse_get(b"[1]").is_err());
        assert!(parse_get(br#"{"Username":1,"Secret":"s"}"#).is_err());

        let d = tmpdir("token");
        let h = helper(
            &d,
            r#"echo '{"Username":"<token>","Secret":"refresh-xyz"}'"#,
            TIMEOUT,
        );
        let e = h.get("h:1").unwrap_err().to_string();
        assert!(
            e.contains("identity token") && e.contains("barge login h:1"),
            "{e}"
        );
        assert!(!e.contains("refresh-xyz"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn failures_are_one_line_naming_the_helper() {
        let d = tmpdir("fail");
        let h = helper(
            &d,
            "echo 'first line' >&2; echo 'keychain locked' >&2; exit 3",
            TIMEOUT,
        );
        let e = h.get("h:1").unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.contains("docker-credential-t get failed (exit status 3): keychain locked"),
            "{e}"
        );
        assert!(e.contains("credsStore"), "{e}");
        let h = helper(&d, "echo '{broken'", TIMEOUT);
        let e = h.get("h:1").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-t get") && e.contains("JSON"),
            "{e}"
        );
        let h = helper(&d, "kill -9 $$", TIMEOUT);
        let e = h.store("h:1", "u", "secretpw").unwrap_err().to_string();
        assert!(
            e.contains("killed by a signal") && !e.contains("secretpw"),
            "{e}"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn runs_are_bounded_in_time_and_output() {
        let d = tmpdir("bounds");
        let h = helper(&d, "sleep 5", Duration::from_millis(300));
        let t = Instant::now();
        let e = h.get("h:1").unwrap_err().to_string();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(e.contains("no answer within 0.3 s"), "{e}");
        // A child that keeps the pipes open past the helper's exit is cut off too.
        let h = helper(&d, "sleep 5 & echo '{}'", Duration::from_millis(300));
        assert!(h.get("h:1").is_err());
        let h = helper(&d, "yes", TIMEOUT);
        let e = h.get("h:1").unwrap_err().to_string();
        assert!(e.contains("printed more than 64 KiB"), "{e}");
        // A helper that ignores its stdin still works.
        let h = helper(&d, r#"echo '{"Username":"u","Secret":"s"}'"#, TIMEOUT);
        assert!(h.get(&"x".repeat(200_000)).unwrap().is_some());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_helper_names_what_to_do() {
        let d = tmpdir("missing");
        let mut h = helper(&d, "", TIMEOUT);
        h.path = None;
        h.name = "barge-surely-absent".into();
        let e = h.get("h:1").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "docker-credential-barge-surely-absent not found on PATH: install it or remove credsStore from {}",
                d.join("config.json").display()
            )
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn path_lookup_takes_executable_files_only() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("barge-surely-absent-program").is_none());
    }
}
