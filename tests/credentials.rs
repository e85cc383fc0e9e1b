//! Integration tests of credentials: Docker's credential helpers (`credsStore`,
//! `credHelpers`) for pull, push, login and logout, `--password-stdin` and `-u USER`
//! without a terminal, against the real registry in TLS + htpasswd mode.
//!
//! Two helpers speak the protocol: `docker-credential-teststore`, a small shell script
//! written by each test into its own directory (put first on PATH) that keeps entries as
//! files beside it and logs every call, and Debian's real `docker-credential-pass`
//! (package golang-docker-credential-helpers) over `pass` and a throw-away GnuPG key,
//! which runs headless here. `docker-credential-secretservice` is not used: it needs a
//! D-Bus session and an unlocked keyring daemon.

mod common;

use common::fixtures::{self, Layout};
use common::registry::{Mode, Registry};
use common::token::{PASS, USER};
use common::tree::{self, snapshot, Tree};
use common::{
    assert_clean_failure, assert_no_secret, assert_success, base64, require_tool, TempDir,
};
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use tinyjson::JsonValue;

// ------------------------------------------------------------------ set-up

/// The TLS + htpasswd registry with busybox as `private/busybox:1`, and the tree
/// `umoci unpack` makes of it.
struct Shared {
    registry: Registry,
    expected: Tree,
    _dir: TempDir,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let dir = TempDir::new("creds-layout");
        let layout = Layout::init(&dir.join("layout"));
        fixtures::build_busybox(&layout, "busybox");
        let registry = Registry::start(Mode::TlsBasic);
        fixtures::push(&registry, &layout, "busybox", "private/busybox:1", false);
        let expected = layout.unpack_tree("busybox");
        Shared {
            registry,
            expected,
            _dir: dir,
        }
    })
}

fn host() -> String {
    shared().registry.host()
}

fn image() -> String {
    shared().registry.image("private/busybox:1")
}

fn ca() -> String {
    let ca = shared().registry.ca_file.as_ref().expect("TLS registry CA");
    ca.display().to_string()
}

/// A protocol-speaking helper: entries are files named by the hex of the server URL in
/// `teststore/` beside the script; every call is logged as `ACTION SERVER-URL`.
const TESTSTORE: &str = r#"#!/bin/sh
d=$(dirname "$0")/teststore
mkdir -p "$d"
input=$(cat)
case "$1" in
  store) url=$(printf '%s' "$input" | sed -n 's/.*"ServerURL":"\([^"]*\)".*/\1/p') ;;
  *) url=$input ;;
esac
echo "$1 $url" >> "$d/log"
f="$d/$(printf '%s' "$url" | od -An -tx1 | tr -d ' \n')"
case "$1" in
  get) if [ -f "$f" ]; then cat "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  store) printf '%s' "$input" > "$f" ;;
  erase) if [ -f "$f" ]; then rm "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  *) echo "unknown action $1"; exit 1 ;;
esac
"#;

/// A helper that always fails the way a locked keychain does.
const BROKEN: &str =
    "#!/bin/sh\ncat >/dev/null\necho 'error getting credentials: keychain is locked'\nexit 1\n";

/// One test's world: a DOCKER_CONFIG directory and a bin directory first on PATH.
struct World {
    dir: TempDir,
    extra_env: Vec<(String, OsString)>,
}

impl World {
    fn new(label: &str) -> World {
        let dir = TempDir::new(label);
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::create_dir_all(dir.join("config")).unwrap();
        let w = World {
            dir,
            extra_env: Vec::new(),
        };
        w.install("teststore", TESTSTORE);
        w.install("broken", BROKEN);
        w
    }

    fn install(&self, name: &str, script: &str) {
        let p = self
            .dir
            .join("bin")
            .join(format!("docker-credential-{name}"));
        fs::write(&p, script).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config").join("config.json")
    }

    fn write_config(&self, json: &str) {
        fs::write(self.config_path(), json).unwrap();
    }

    fn config(&self) -> JsonValue {
        fixtures::parse_json(&fs::read(self.config_path()).unwrap())
    }

    fn path_var(&self) -> OsString {
        let mut paths = vec![self.dir.join("bin")];
        paths.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(paths).unwrap()
    }

    /// Runs barge with this world's PATH and DOCKER_CONFIG, `input` on stdin (else none).
    fn barge(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut cmd = Command::new(common::barge_path());
        let cfg = self.dir.join("config");
        cmd.env_clear()
            .env("PATH", self.path_var())
            .env("DOCKER_CONFIG", &cfg)
            .env("HOME", &cfg)
            .env("XDG_RUNTIME_DIR", &cfg)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn barge");
        if let Some(text) = input {
            let mut stdin = child.stdin.take().unwrap();
            // barge may refuse the command line before it reads stdin.
            match stdin.write_all(text.as_bytes()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                r => r.unwrap(),
            }
        }
        child.wait_with_output().expect("wait for barge")
    }

    /// `barge pull IMAGE -r DIR --ca-cert CA EXTRA…`; the target dir.
    fn pull(&self, extra: &[&str], input: Option<&str>) -> (Output, PathBuf) {
        let dir = self.dir.join(format!("rootfs-{}", unique()));
        let ca = ca();
        let mut args = vec!["pull", "--ca-cert", &ca, "-r", dir.to_str().unwrap()];
        let img = image();
        args.push(&img);
        args.extend_from_slice(extra);
        (self.barge(&args, input), dir)
    }

    /// Stores an entry in the test helper directly, as another tool would have.
    fn seed(&self, url: &str, user: &str, secret: &str) {
        let mut child = Command::new(self.dir.join("bin/docker-credential-teststore"))
            .arg("store")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let json = format!(r#"{{"ServerURL":"{url}","Username":"{user}","Secret":"{secret}"}}"#);
        child
            .stdin
            .take()
            .unwrap()
            .write_all(json.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        fs::remove_file(self.log_path()).unwrap();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("bin/teststore/log")
    }

    /// The calls the test helper got.
    fn log(&self) -> Vec<String> {
        fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// What the test helper holds for `url`.
    fn stored(&self, url: &str) -> Option<String> {
        let hex: String = url.bytes().map(|b| format!("{b:02x}")).collect();
        fs::read_to_string(self.dir.join("bin/teststore").join(hex)).ok()
    }
}

fn unique() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// `auths` entry in Docker's format for `user:pass`.
fn auth_entry(user: &str, pass: &str) -> String {
    format!(
        r#"{{"auth":"{}"}}"#,
        base64(format!("{user}:{pass}").as_bytes())
    )
}

fn assert_pulled(out: &Output, dir: &Path) {
    assert_success(out);
    assert_no_secret(out, &[PASS]);
    tree::assert_same_tree(&shared().expected, &snapshot(dir));
}

// ------------------------------------------------------------------ reading through helpers

#[test]
fn pull_reads_credentials_through_creds_store() {
    let w = World::new("creds-store");
    let host = host();
    // auths holds a wrong password: with a credsStore, Docker never looks there.
    w.write_config(&format!(
        r#"{{"credsStore":"teststore","auths":{{"{host}":{}}}}}"#,
        auth_entry(USER, "WrongPassw0rd")
    ));
    w.seed(&host, USER, PASS);
    let (out, dir) = w.pull(&[], None);
    assert_pulled(&out, &dir);
    assert_eq!(
        w.log(),
        [format!("get {host}")],
        "the helper gets host:port"
    );
}

#[test]
fn cred_helpers_for_the_host_override_creds_store() {
    let w = World::new("cred-helpers");
    let host = host();
    w.write_config(&format!(
        r#"{{"credsStore":"broken","credHelpers":{{"{host}":"teststore","other.example":"broken"}}}}"#
    ));
    w.seed(&host, USER, PASS);
    let (out, dir) = w.pull(&[], None);
    assert_pulled(&out, &dir);
    assert_eq!(w.log(), [format!("get {host}")]);

    // credHelpers naming "" for the host means the file's auths, whatever credsStore says.
    w.write_config(&format!(
        r#"{{"credsStore":"broken","credHelpers":{{"{host}":""}},"auths":{{"{host}":{}}}}}"#,
        auth_entry(USER, PASS)
    ));
    let (out, dir) = w.pull(&[], None);
    assert_pulled(&out, &dir);
}

#[test]
fn a_failing_helper_is_one_line_naming_it() {
    let w = World::new("broken-helper");
    let host = host();
    // A credHelpers entry for another registry does not apply: credsStore does.
    w.write_config(r#"{"credsStore":"broken","credHelpers":{"other.example":"teststore"}}"#);
    let (out, dir) = w.pull(&[], None);
    let line = assert_clean_failure(&out, &[]);
    assert!(
        line.contains("docker-credential-broken get failed (exit status 1): error getting credentials: keychain is locked"),
        "{line}"
    );
    assert!(
        line.contains("credsStore") && line.contains(&w.config_path().display().to_string()),
        "{line}"
    );
    assert!(!dir.exists(), "a failed pull left {}", dir.display());
    assert!(w.log().is_empty(), "teststore was asked: {:?}", w.log());

    // A helper that has nothing: the registry's own "requires credentials" error.
    w.write_config(r#"{"credsStore":"teststore"}"#);
    let (out, _) = w.pull(&[], None);
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains("requires credentials"), "{line}");
    assert_eq!(w.log(), [format!("get {host}")]);
}

#[test]
fn a_missing_helper_says_to_install_it_or_remove_the_setting() {
    let w = World::new("missing-helper");
    w.write_config(r#"{"credsStore":"nosuchhelper"}"#);
    let (out, _) = w.pull(&[], None);
    let line = assert_clean_failure(&out, &[]);
    let want = format!(
        "docker-credential-nosuchhelper not found on PATH: install it or remove credsStore from {}",
        w.config_path().display()
    );
    assert!(line.ends_with(&want), "{line}");

    let host = host();
    w.write_config(&format!(r#"{{"credHelpers":{{"{host}":"nosuchhelper"}}}}"#));
    let (out, _) = w.pull(&[], None);
    let line = assert_clean_failure(&out, &[]);
    assert!(
        line.contains(&format!("remove credHelpers.\"{host}\" from")),
        "{line}"
    );
}

// ------------------------------------------------------------------ login and logout

#[test]
fn login_stores_through_the_helper_and_logout_erases() {
    let w = World::new("login-helper");
    let host = host();
    w.write_config(r#"{"credsStore":"teststore","HttpHeaders":{"X":"y"}}"#);
    let ca = ca();
    let login = [
        "login",
        &host,
        "-u",
        USER,
        "--password-stdin",
        "--ca-cert",
        &ca,
    ];
    let out = w.barge(&login, Some(&format!("{PASS}\n")));
    assert_success(&out);
    assert_no_secret(&out, &[PASS]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("docker-credential-teststore"), "{stdout}");
    assert_eq!(
        w.stored(&host).as_deref(),
        Some(format!(r#"{{"Secret":"{PASS}","ServerURL":"{host}","Username":"{USER}"}}"#).as_str())
    );
    // config.json keeps its keys and gets the empty entry Docker writes, no secret.
    let cfg = w.config();
    assert_eq!(fixtures::str_of(&cfg["HttpHeaders"]["X"]), "y");
    assert_eq!(cfg["auths"][host.as_str()], fixtures::obj(&[]));
    assert!(!fs::read_to_string(w.config_path()).unwrap().contains(PASS));
    assert_eq!(w.log(), [format!("store {host}")]);

    // A pull without -u now reads them through the helper.
    let (out, dir) = w.pull(&[], None);
    assert_pulled(&out, &dir);

    let out = w.barge(&["logout", &host], None);
    assert_success(&out);
    assert_eq!(w.stored(&host), None, "logout left the helper's entry");
    let cfg = w.config();
    match &cfg["auths"] {
        JsonValue::Object(m) => assert!(!m.contains_key(&host), "{cfg:?}"),
        other => panic!("auths: {other:?}"),
    }
    assert_eq!(fixtures::str_of(&cfg["HttpHeaders"]["X"]), "y");
    assert!(w.log().contains(&format!("erase {host}")), "{:?}", w.log());

    // Nothing left: a second logout says so.
    let out = w.barge(&["logout", &host], None);
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains(&format!("not logged in to {host}")), "{line}");

    // A wrong password stores nothing.
    let out = w.barge(&login, Some("Wr0ngPassw0rd\n"));
    assert_clean_failure(&out, &["Wr0ngPassw0rd"]);
    assert_eq!(w.stored(&host), None);
}

#[test]
fn login_without_a_helper_still_writes_auths() {
    let w = World::new("login-file");
    let host = host();
    w.write_config(
        r#"{"credsStore":"teststore","credHelpers":{"HOST":""}}"#
            .replace("HOST", &host)
            .as_str(),
    );
    let ca = ca();
    let out = w.barge(
        &[
            "login",
            &host,
            "-u",
            USER,
            "--password-stdin",
            "--ca-cert",
            &ca,
        ],
        Some(PASS),
    );
    assert_success(&out);
    assert_eq!(
        fixtures::str_of(&w.config()["auths"][host.as_str()]["auth"]),
        base64(format!("{USER}:{PASS}").as_bytes())
    );
    assert!(w.log().is_empty(), "helper used: {:?}", w.log());
}

// ------------------------------------------------------------------ passwords off the command line

#[test]
fn password_stdin_for_pull_and_push() {
    let w = World::new("password-stdin");
    let (out, dir) = w.pull(
        &["-u", USER, "--password-stdin", "-g"],
        Some(&format!("{PASS}\n")),
    );
    assert_pulled(&out, &dir);

    let ca = ca();
    let target = shared().registry.image("stdin/busybox:1");
    let d = dir.to_str().unwrap();
    let push = [
        "push",
        &target,
        "-r",
        d,
        "--ca-cert",
        &ca,
        "-u",
        USER,
        "--password-stdin",
    ];
    let out = w.barge(&push, Some(PASS));
    assert_success(&out);
    assert_no_secret(&out, &[PASS]);
    let (out, dir2) = {
        let dir2 = w.dir.join("rootfs-pushed");
        let args = [
            "pull",
            &target,
            "-r",
            dir2.to_str().unwrap(),
            "--ca-cert",
            &ca,
            "-u",
            USER,
            "--password-stdin",
        ];
        (w.barge(&args, Some(PASS)), dir2)
    };
    assert_pulled(&out, &dir2);

    // A wrong password from stdin is refused like any other, and never printed.
    let out = w.barge(&push, Some("Wr0ngPassw0rd"));
    assert_clean_failure(&out, &["Wr0ngPassw0rd"]);
    // --password-stdin needs -u USER, and not a second password in -u USER:PASS.
    let (out, _) = w.pull(&["--password-stdin"], Some(PASS));
    let line = assert_clean_failure(&out, &[PASS]);
    assert!(line.contains("-u USER"), "{line}");
    let both = format!("{USER}:{PASS}");
    let (out, _) = w.pull(&["-u", &both, "--password-stdin"], Some(PASS));
    let line = assert_clean_failure(&out, &[PASS]);
    assert!(line.contains("two passwords"), "{line}");
    let (out, _) = w.pull(&["-u", USER, "--password-stdin"], Some(""));
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains("standard input is empty"), "{line}");
}

#[test]
fn user_without_password_and_without_terminal_fails_clearly() {
    let w = World::new("no-tty");
    let (out, dir) = w.pull(&["-u", USER], None);
    let line = assert_clean_failure(&out, &[]);
    assert!(
        line.ends_with(&format!(
            "no password for {USER}: give -u USER:PASS or --password-stdin"
        )),
        "{line}"
    );
    assert!(!dir.exists());
    let ca = ca();
    let out = w.barge(&["login", &host(), "-u", USER, "--ca-cert", &ca], None);
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains(&format!("no password for {USER}")), "{line}");
    let out = w.barge(&["login", &host(), "--ca-cert", &ca], None);
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains("-u USER"), "{line}");
}

// ------------------------------------------------------------------ a real helper: pass

/// A GnuPG home and a password store with a fresh key; the agent is stopped on drop.
struct PassStore {
    gnupg: PathBuf,
}

impl PassStore {
    fn new(w: &mut World) -> PassStore {
        for tool in ["docker-credential-pass", "pass", "gpg", "gpgconf"] {
            require_tool(tool);
        }
        let gnupg = w.dir.join("gnupg");
        fs::create_dir_all(&gnupg).unwrap();
        fs::set_permissions(&gnupg, fs::Permissions::from_mode(0o700)).unwrap();
        let store = PassStore { gnupg };
        w.extra_env = vec![
            ("GNUPGHOME".into(), store.gnupg.clone().into()),
            (
                "PASSWORD_STORE_DIR".into(),
                w.dir.join("password-store").into(),
            ),
        ];
        let env = w.extra_env.clone();
        let run = |prog: &str, args: &[&str]| {
            let mut cmd = Command::new(prog);
            cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
            cmd.env("HOME", w.dir.join("config"));
            common::run(&mut cmd)
        };
        run(
            "gpg",
            &[
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                "barge test <t@example.invalid>",
                "default",
                "default",
                "never",
            ],
        );
        let keys = String::from_utf8(run("gpg", &["--list-keys", "--with-colons"])).unwrap();
        let fpr = keys
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .expect("a key fingerprint");
        run("pass", &["init", &fpr]);
        store
    }
}

impl Drop for PassStore {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", &self.gnupg)
            .status();
    }
}

#[test]
fn real_helper_pass_login_pull_logout() {
    let mut w = World::new("pass");
    let _store = PassStore::new(&mut w);
    let host = host();
    w.write_config(r#"{"credsStore":"pass"}"#);
    let ca = ca();
    let out = w.barge(
        &[
            "login",
            &host,
            "-u",
            USER,
            "--password-stdin",
            "--ca-cert",
            &ca,
        ],
        Some(PASS),
    );
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("docker-credential-pass"));
    assert!(!fs::read_to_string(w.config_path()).unwrap().contains(PASS));
    // The password is in pass's store, encrypted: `docker-credential-pass list` knows it.
    let list = Command::new("docker-credential-pass")
        .arg("list")
        .envs(w.extra_env.iter().map(|(k, v)| (k, v)))
        .env("HOME", w.dir.join("config"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains(&host) && listed.contains(USER), "{listed}");

    let (out, dir) = w.pull(&[], None);
    assert_pulled(&out, &dir);

    let out = w.barge(&["logout", &host], None);
    assert_success(&out);
    let (out, _) = w.pull(&[], None);
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains("requires credentials"), "{line}");
}
