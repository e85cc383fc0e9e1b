//! Integration tests of pull mirrors against a real docker-registry: a registries.conf
//! (`CONTAINERS_REGISTRIES_CONF`) or a daemon.json (`BARGE_DOCKER_DAEMON_JSON`) that
//! mirrors Docker Hub to a local registry, `--mirror`, prefix/location rewrites, dead
//! and lying mirrors. Docker Hub is made unreachable in every test (a dead HTTPS
//! proxy; loopback bypasses it), so a pull that succeeds was served by a mirror.

mod common;

use common::fixtures::{push, Fixtures};
use common::registry::{Mode, Registry};
use common::token::{PASS, USER};
use common::tree::{self, snapshot};
use common::{assert_clean_failure, assert_success, barge_env, free_port, DirState, TempDir};
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

fn f() -> &'static Fixtures {
    Fixtures::get()
}

/// The shared registry, also holding busybox as `library/busybox:1` (a Docker Hub name).
fn mirror_host() -> String {
    static HUB_NAMES: OnceLock<()> = OnceLock::new();
    HUB_NAMES.get_or_init(|| {
        push(
            &f().registry,
            &f().layout,
            "busybox",
            "library/busybox:1",
            false,
        )
    });
    f().registry.host()
}

/// A temp dir with `registries.conf` holding `conf` (and no daemon.json).
struct Site {
    tmp: TempDir,
}

impl Site {
    fn new(conf: &str) -> Site {
        let tmp = TempDir::new("mirrors");
        fs::write(tmp.join("registries.conf"), conf).expect("write registries.conf");
        Site { tmp }
    }

    fn daemon_json(&self, text: &str) {
        fs::write(self.tmp.join("daemon.json"), text).expect("write daemon.json");
    }

    fn target(&self) -> PathBuf {
        self.tmp.join("rootfs")
    }

    /// `barge pull IMAGE -r DIR EXTRA` with this site's configuration, Docker Hub unreachable.
    fn pull(&self, image: &str, extra: &[&str]) -> Output {
        self.pull_env(image, extra, &[])
    }

    fn pull_env(&self, image: &str, extra: &[&str], env: &[(&str, &OsStr)]) -> Output {
        let dir = self.target();
        let mut args = vec!["pull", image, "-r", dir.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        self.barge(&args, env)
    }

    /// Any barge command with this site's configuration, Docker Hub unreachable.
    fn barge(&self, args: &[&str], env: &[(&str, &OsStr)]) -> Output {
        let conf = self.tmp.join("registries.conf");
        let daemon = self.tmp.join("daemon.json");
        let mut all = vec![
            ("CONTAINERS_REGISTRIES_CONF", conf.as_os_str()),
            ("BARGE_DOCKER_DAEMON_JSON", daemon.as_os_str()),
            ("HTTPS_PROXY", OsStr::new("http://127.0.0.1:1")),
            ("HTTP_PROXY", OsStr::new("http://127.0.0.1:1")),
        ];
        all.extend_from_slice(env);
        barge_env(args, &all)
    }

    /// Pulls, expecting success and the busybox tree; returns stdout.
    fn pull_busybox(&self, image: &str, extra: &[&str]) -> String {
        self.pull_busybox_env(image, extra, &[])
    }

    fn pull_busybox_env(&self, image: &str, extra: &[&str], env: &[(&str, &OsStr)]) -> String {
        let out = self.pull_env(image, extra, env);
        assert_success(&out);
        tree::assert_same_tree(&f().expected("busybox"), &snapshot(&self.target()));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn docker_hub_mirrored_to(mirrors: &[String]) -> String {
    let mut conf = String::from("[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n");
    for m in mirrors {
        conf.push_str(&format!("[[registry.mirror]]\nlocation = \"{m}\"\n"));
    }
    conf
}

/// A port nothing listens on (connection refused).
fn dead_host() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[test]
fn registries_conf_mirror_serves_docker_hub_names() {
    let host = mirror_host();
    let site = Site::new(&docker_hub_mirrored_to(std::slice::from_ref(&host)));
    let stdout = site.pull_busybox("busybox:1", &[]);
    assert!(
        stdout.contains(&format!(
            "Pulling image docker.io/library/busybox:1 from mirror {host} ..."
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("failed"), "{stdout}");
}

#[test]
fn docker_hub_is_tried_last_and_its_failure_names_the_mirrors() {
    let site = Site::new(&docker_hub_mirrored_to(&[dead_host()]));
    let state = DirState::capture(&site.target());
    let out = site.pull("busybox:1", &[]);
    let line = assert_clean_failure(&out, &[]);
    state.assert_unchanged();
    assert!(
        line.contains("1 mirror failed, then registry-1.docker.io"),
        "{line}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("Mirror 127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("nothing is listening"), "{stdout}");
}

#[test]
fn a_dead_mirror_and_one_without_the_image_fall_through_to_the_next() {
    let host = mirror_host();
    let dead = dead_host();
    let empty_ns = format!("{host}/nothing-here");
    let site = Site::new(&docker_hub_mirrored_to(&[
        dead.clone(),
        empty_ns.clone(),
        host.clone(),
    ]));
    let stdout = site.pull_busybox("docker.io/library/busybox:1", &[]);
    let fail_lines: Vec<&str> = stdout.lines().filter(|l| l.contains("failed")).collect();
    assert_eq!(fail_lines.len(), 2, "{stdout}");
    assert!(
        fail_lines[0].starts_with(&format!("Mirror {dead} failed: ")),
        "{stdout}"
    );
    assert!(fail_lines[0].ends_with("; trying the next"), "{stdout}");
    assert!(
        fail_lines[1].starts_with(&format!("Mirror {empty_ns} failed: ")),
        "{stdout}"
    );
    assert!(fail_lines[1].contains("404"), "{stdout}");
    assert!(
        stdout.contains(&format!("from mirror {host} ...")),
        "{stdout}"
    );
}

#[test]
fn prefix_is_rewritten_to_location() {
    let host = mirror_host();
    let site = Site::new(&format!(
        "[[registry]]\nprefix = \"registry.example/team\"\nlocation = \"{host}/test\"\n"
    ));
    let stdout = site.pull_busybox("registry.example/team/busybox:oci", &[]);
    assert!(
        stdout.contains(&format!(
            "Pulling image registry.example/team/busybox:oci from {host}/test/busybox:oci ..."
        )),
        "{stdout}"
    );
    // Blocked prefixes are refused before any request.
    let blocked = Site::new(&format!(
        "[[registry]]\nlocation = \"{host}\"\nblocked = true\n"
    ));
    let out = blocked.pull(&f().image("test/busybox:oci"), &[]);
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains("is blocked by"), "{line}");
    assert!(line.contains("registries.conf"), "{line}");
}

#[test]
fn daemon_json_registry_mirrors_serve_docker_hub() {
    let host = mirror_host();
    let site = Site::new("");
    site.daemon_json(&format!(
        r#"{{"registry-mirrors": ["{}", "http://{host}"], "debug": true}}"#,
        format_args!("http://{}", dead_host())
    ));
    let stdout = site.pull_busybox("busybox:1", &[]);
    assert!(
        stdout.contains(&format!("from mirror {host} ...")),
        "{stdout}"
    );
    assert_eq!(stdout.matches("; trying the next").count(), 1, "{stdout}");
    // A broken daemon.json is one clear error naming the file.
    let broken = Site::new("");
    broken.daemon_json(r#"{"registry-mirrors": ["https://m.example/path"]}"#);
    let line = assert_clean_failure(&broken.pull("busybox:1", &[]), &[]);
    assert!(line.contains("daemon.json"), "{line}");
    assert!(line.contains("without a path"), "{line}");
}

#[test]
fn command_line_mirrors_are_tried_first() {
    let host = mirror_host();
    let dead = dead_host();
    let site = Site::new(&docker_hub_mirrored_to(&[dead_host()]));
    let stdout = site.pull_busybox("busybox:1", &["--mirror", &dead, "--mirror", &host]);
    let first_fail = stdout.lines().find(|l| l.contains("failed")).unwrap_or("");
    assert!(
        first_fail.starts_with(&format!("Mirror {dead} failed")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("from mirror {host} ...")),
        "{stdout}"
    );
    // Any registry: the mirror gets the same repository path.
    let other = Site::new("");
    let stdout = other.pull_busybox("quay.io/test/busybox:oci", &["--mirror", &host]);
    assert!(
        stdout.contains(&format!("from mirror {host} ...")),
        "{stdout}"
    );
    let bad = Site::new("").pull("busybox:1", &["--mirror", "nohost"]);
    let line = assert_clean_failure(&bad, &[]);
    assert!(line.contains("--mirror"), "{line}");
}

#[test]
fn a_mirror_serving_another_manifest_for_a_pinned_digest_is_refused() {
    let host = mirror_host();
    let liar = LyingMirror::start(manifest_bytes(&host, "test/rich", "oci"));
    let pinned = format!("pinned.example/busybox@{}", f().layout.digest("busybox"));
    let site = Site::new(&format!(
        "[[registry]]\nprefix = \"pinned.example\"\nlocation = \"{host}/test\"\n\
         [[registry.mirror]]\nlocation = \"{}\"\n",
        liar.host
    ));
    let stdout = site.pull_busybox(&pinned, &[]);
    let refused = stdout.lines().find(|l| l.contains("failed")).unwrap_or("");
    assert!(
        refused.starts_with(&format!("Mirror {} failed", liar.host)),
        "{stdout}"
    );
    assert!(refused.contains("digest"), "{stdout}");
    assert!(
        stdout.contains(&format!("from {host}/test/busybox@")),
        "{stdout}"
    );
    // With the registry itself unreachable, the pull fails and the target stays as it was.
    let alone = Site::new(&format!(
        "[[registry]]\nprefix = \"pinned.example\"\nlocation = \"{}\"\n\
         [[registry.mirror]]\nlocation = \"{}\"\n",
        dead_host(),
        liar.host
    ));
    let state = DirState::capture(&alone.target());
    let out = alone.pull(&pinned, &[]);
    assert_clean_failure(&out, &[]);
    state.assert_unchanged();
    assert!(String::from_utf8_lossy(&out.stdout).contains("digest"));
}

#[test]
fn a_mirror_gets_the_credentials_stored_for_its_host_never_those_of_u() {
    let host = mirror_host();
    // The token issuer lets anonymous pulls in everywhere but under private/.
    let locked = Registry::start(Mode::Token);
    push(
        &locked,
        &f().layout,
        "busybox",
        "private/library/busybox:1",
        false,
    );
    let private = format!("{}/private", locked.host());
    let site = Site::new(&docker_hub_mirrored_to(&[private.clone(), host.clone()]));
    // No credentials for the locked mirror: it fails, the next one serves.
    let stdout = site.pull_busybox("busybox:1", &[]);
    let refused = stdout.lines().find(|l| l.contains("failed")).unwrap_or("");
    assert!(
        refused.starts_with(&format!("Mirror {private} failed")),
        "{stdout}"
    );
    assert!(refused.contains("credentials"), "{stdout}");
    assert!(
        stdout.contains(&format!("from mirror {host} ...")),
        "{stdout}"
    );
    // Stored for the mirror's host: it serves, though -u names other credentials
    // (those go to Docker Hub only).
    let config = TempDir::new("mirror-auth");
    let auth = common::base64(format!("{USER}:{PASS}").as_bytes());
    let json = format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, locked.host());
    fs::write(config.join("config.json"), json).expect("write config.json");
    let with_creds = Site::new(&docker_hub_mirrored_to(&[private.clone(), host]));
    let env = [("DOCKER_CONFIG", config.path().as_os_str())];
    let stdout = with_creds.pull_busybox_env("busybox:1", &["-u", "hub-user:hub-pass"], &env);
    assert!(
        stdout.contains(&format!("from mirror {private} ...")),
        "{stdout}"
    );
    assert!(!stdout.contains("failed"), "{stdout}");
}

#[test]
fn a_tree_pulled_from_a_mirror_pushes_with_mounts_from_it() {
    let host = mirror_host();
    let site = Site::new(&docker_hub_mirrored_to(std::slice::from_ref(&host)));
    site.pull_busybox("busybox:1", &["-g"]);
    let dir = site.target();
    let dir = dir.to_str().expect("utf-8 path");
    fs::write(site.target().join("added.txt"), "new layer\n").expect("write");
    assert_success(&site.barge(&["commit", "-r", dir, "-m", "add a file"], &[]));
    let target = format!("{host}/site/app:1");
    let out = site.barge(&["push", &target, "-r", dir], &[]);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The base layer is mounted from library/busybox on the mirror, not fetched from
    // Docker Hub (unreachable here).
    assert_eq!(stdout.matches("(mounted)").count(), 1, "{stdout}");
}

/// `GET /v2/REPO/manifests/TAG` from the registry, as stored (an OCI manifest).
fn manifest_bytes(host: &str, repo: &str, tag: &str) -> Vec<u8> {
    common::require_tool("curl");
    common::run(std::process::Command::new("curl").args([
        "-sf",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("http://{host}/v2/{repo}/manifests/{tag}"),
    ]))
}

/// A registry that answers every manifest request with the same bytes (and without
/// `Docker-Content-Digest`), whatever was asked for: a mirror that is out of sync
/// or hostile. Plain HTTP; each connection is served on its own thread, and the
/// listener stops when the process ends.
struct LyingMirror {
    host: String,
}

impl LyingMirror {
    fn start(manifest: Vec<u8>) -> LyingMirror {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let host = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let body = manifest.clone();
                std::thread::spawn(move || serve(conn, &body));
            }
        });
        LyingMirror { host }
    }
}

fn serve(conn: TcpStream, manifest: &[u8]) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut conn = conn;
    // barge tries TLS first on loopback: answer a handshake as a plain-HTTP server does.
    if reader.fill_buf().is_ok_and(|b| b.first() == Some(&0x16)) {
        let _ = conn.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
        return;
    }
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        // Headers up to the blank line; requests to this mirror carry no body.
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        let (status, ctype, body): (&str, &str, &[u8]) = if request.contains("/manifests/") {
            (
                "200 OK",
                "application/vnd.oci.image.manifest.v1+json",
                manifest,
            )
        } else if request.starts_with("GET /v2/ ") {
            ("200 OK", "application/json", b"{}")
        } else {
            ("404 Not Found", "application/json", b"{}")
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if conn.write_all(head.as_bytes()).is_err() || conn.write_all(body).is_err() {
            return;
        }
    }
}
