//! Integration tests of `barge pull` against a real docker-registry (plain HTTP, TLS +
//! Basic auth, token auth), with images built by umoci and pushed by skopeo. The tree
//! barge writes must equal `umoci unpack`'s rootfs of the same image; every failure
//! must be one clean line and leave the target directory as it was.

mod common;

use common::fixtures::{self, push, push_crafted, Fixtures, RawEntry, TarBuilder};
use common::registry::{Mode, Registry};
use common::token::{PASS, USER};
use common::tree::{self, snapshot, Tree};
use common::{
    assert_clean_failure, assert_no_secret, assert_success, barge, barge_env, barge_in, base64,
    list_dir, require_tool, run, DirState, TempDir,
};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

// ------------------------------------------------------------------ helpers

/// A fresh temp dir and a target `rootfs` inside it that does not exist yet.
fn target() -> (TempDir, PathBuf) {
    let tmp = TempDir::new("pull");
    let dir = tmp.join("rootfs");
    (tmp, dir)
}

fn pull_args<'a>(image: &'a str, dir: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["pull", image, "-r", dir.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    args
}

/// Pulls `image` into a new directory, asserting success and no leftovers beside it.
fn pull_ok(image: &str, extra: &[&str], env: &[(&str, &OsStr)]) -> (TempDir, PathBuf, Output) {
    let (tmp, dir) = target();
    let out = barge_env(&pull_args(image, &dir, extra), env);
    assert_success(&out);
    assert_eq!(
        list_dir(tmp.path()),
        ["rootfs"],
        "leftovers beside the target dir"
    );
    (tmp, dir, out)
}

/// Pulls and compares the tree with `umoci unpack` of the fixture tag.
fn pull_matches(image: &str, expected_tag: &str, extra: &[&str]) {
    let expected = Fixtures::get().expected(expected_tag);
    let (_tmp, dir, _) = pull_ok(image, extra, &[]);
    tree::assert_same_tree(&expected, &snapshot(&dir));
}

/// Runs a pull that must fail cleanly and leave the target untouched; returns the error
/// line. `secrets` must not appear in any output.
fn pull_fails(image: &str, extra: &[&str], env: &[(&str, &OsStr)], secrets: &[&str]) -> String {
    let (_tmp, dir) = target();
    pull_fails_into(&dir, image, extra, env, secrets)
}

fn pull_fails_into(
    dir: &Path,
    image: &str,
    extra: &[&str],
    env: &[(&str, &OsStr)],
    secrets: &[&str],
) -> String {
    let state = DirState::capture(dir);
    let out = barge_env(&pull_args(image, dir, extra), env);
    let line = assert_clean_failure(&out, secrets);
    state.assert_unchanged();
    line
}

fn f() -> &'static Fixtures {
    Fixtures::get()
}

fn img(repo_tag: &str) -> String {
    f().image(repo_tag)
}

// ------------------------------------------------------------------ trees equal umoci's

#[test]
fn rich_oci_matches_umoci() {
    pull_matches(&img("test/rich:oci"), "rich", &[]);
}

#[test]
fn rich_v2s2_matches_umoci() {
    pull_matches(&img("test/rich:v2s2"), "rich", &[]);
}

#[test]
fn busybox_oci_matches_umoci() {
    pull_matches(&img("test/busybox:oci"), "busybox", &[]);
}

#[test]
fn busybox_v2s2_matches_umoci() {
    pull_matches(&img("test/busybox:v2s2"), "busybox", &[]);
}

#[test]
fn busybox_by_digest_matches_umoci() {
    let image = format!("{}@{}", img("test/busybox"), f().layout.digest("busybox"));
    pull_matches(&image, "busybox", &[]);
}

#[test]
fn umoci_insert_quirk_layer_matches_umoci() {
    pull_matches(&img("test/quirk:1"), "quirk", &[]);
}

#[test]
fn uncompressed_layers_match_umoci() {
    pull_matches(&img("test/rich-tar:1"), "rich-tar", &[]);
}

// ------------------------------------------------------------------ multi-platform index

#[test]
fn index_default_platform_is_amd64() {
    // The attestation entry (unknown/unknown) is listed first in the index.
    pull_matches(&img("test/multi:1"), "busybox", &[]);
}

#[test]
fn index_platform_flag_picks_arm64() {
    pull_matches(
        &img("test/multi:1"),
        "arm64",
        &["--platform", "linux/arm64"],
    );
}

#[test]
fn index_unknown_platform_lists_available_ones() {
    let line = pull_fails(
        &img("test/multi:1"),
        &["--platform", "linux/s390x"],
        &[],
        &[],
    );
    for p in ["linux/amd64", "linux/arm64"] {
        assert!(line.contains(p), "error should list {p}: {line}");
    }
}

#[test]
fn index_never_picks_the_attestation_manifest() {
    pull_fails(
        &img("test/multi:1"),
        &["--platform", "unknown/unknown"],
        &[],
        &[],
    );
}

// ------------------------------------------------------------------ TLS + Basic auth

fn tls_registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        let r = Registry::start(Mode::TlsBasic);
        push(&r, &f().layout, "busybox", "private/busybox:1", false);
        r
    })
}

fn tls_image() -> String {
    tls_registry().image("private/busybox:1")
}

fn ca_path() -> &'static str {
    tls_registry().ca_file.as_ref().unwrap().to_str().unwrap()
}

#[test]
fn tls_with_ca_cert_and_user() {
    let expected = f().expected("busybox");
    let creds = format!("{USER}:{PASS}");
    let (_t, dir, out) = pull_ok(&tls_image(), &["--ca-cert", ca_path(), "-u", &creds], &[]);
    assert_no_secret(&out, &[PASS, &base64(creds.as_bytes())]);
    tree::assert_same_tree(&expected, &snapshot(&dir));
}

#[test]
fn tls_ca_from_ssl_cert_file() {
    let creds = format!("{USER}:{PASS}");
    let env = [("SSL_CERT_FILE", OsStr::new(ca_path()))];
    let (_t, dir, _) = pull_ok(&tls_image(), &["--user", &creds], &env);
    tree::assert_same_tree(&f().expected("busybox"), &snapshot(&dir));
}

#[test]
fn tls_wrong_password_is_a_clean_error() {
    let pw = "Wr0ngPassw0rd";
    let creds = format!("{USER}:{pw}");
    pull_fails(
        &tls_image(),
        &["--ca-cert", ca_path(), "-u", &creds],
        &[],
        &[pw, &base64(creds.as_bytes())],
    );
}

#[test]
fn tls_without_ca_cert_mentions_the_option() {
    let creds = format!("{USER}:{PASS}");
    let line = pull_fails(&tls_image(), &["-u", &creds], &[], &[PASS]);
    assert!(
        line.contains("--ca-cert"),
        "error should point at --ca-cert: {line}"
    );
}

#[test]
fn tls_without_credentials_is_a_clean_error() {
    pull_fails(&tls_image(), &["--ca-cert", ca_path()], &[], &[]);
}

// ------------------------------------------------------------------ token auth

fn token_registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        let r = Registry::start(Mode::Token);
        push(&r, &f().layout, "busybox", "test/busybox:1", false);
        push(&r, &f().layout, "busybox", "private/busybox:1", false);
        r
    })
}

/// A DOCKER_CONFIG directory with credentials for `host`.
fn docker_config(host: &str, user: &str, pass: &str) -> TempDir {
    let d = TempDir::new("docker-config");
    let auth = base64(format!("{user}:{pass}").as_bytes());
    fs::write(
        d.join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    d
}

#[test]
fn token_anonymous_pull_uses_the_issuer() {
    let reg = token_registry();
    let issuer = reg.token.as_ref().unwrap();
    let before = issuer.requests().len();
    let (_t, dir, _) = pull_ok(&reg.image("test/busybox:1"), &[], &[]);
    tree::assert_same_tree(&f().expected("busybox"), &snapshot(&dir));
    let new: Vec<_> = issuer.requests().split_off(before);
    assert!(
        new.iter()
            .any(|r| r.status == 200 && r.scopes.iter().any(|s| s.contains("test/busybox"))),
        "barge did not ask the token issuer for test/busybox (requests: {new:?})"
    );
}

#[test]
fn token_private_repo_needs_credentials() {
    let reg = token_registry();
    pull_fails(&reg.image("private/busybox:1"), &[], &[], &[]);
}

#[test]
fn token_credentials_from_docker_config() {
    let reg = token_registry();
    let cfg = docker_config(&reg.host(), USER, PASS);
    let env = [("DOCKER_CONFIG", cfg.path().as_os_str())];
    let (_t, dir, out) = pull_ok(&reg.image("private/busybox:1"), &[], &env);
    assert_no_secret(&out, &[PASS]);
    tree::assert_same_tree(&f().expected("busybox"), &snapshot(&dir));
    let reqs = reg.token.as_ref().unwrap().requests();
    assert!(
        reqs.iter().any(|r| r.account.as_deref() == Some(USER)
            && r.scopes.iter().any(|s| s.contains("private/busybox"))),
        "no authenticated token request for private/busybox: {reqs:?}"
    );
}

#[test]
fn token_credentials_from_user_flag() {
    let reg = token_registry();
    let creds = format!("{USER}:{PASS}");
    let (_t, dir, out) = pull_ok(&reg.image("private/busybox:1"), &["-u", &creds], &[]);
    assert_no_secret(&out, &[PASS]);
    tree::assert_same_tree(&f().expected("busybox"), &snapshot(&dir));
}

#[test]
fn token_wrong_password_in_docker_config_is_a_clean_error() {
    let reg = token_registry();
    let pw = "N0tTheP4ss";
    let cfg = docker_config(&reg.host(), USER, pw);
    let env = [("DOCKER_CONFIG", cfg.path().as_os_str())];
    pull_fails(&reg.image("private/busybox:1"), &[], &env, &[pw]);
}

// ------------------------------------------------------------------ errors leave DIR untouched

#[test]
fn missing_tag_is_a_clean_error() {
    pull_fails(&img("test/busybox:no-such-tag"), &[], &[], &[]);
}

#[test]
fn missing_repository_is_a_clean_error() {
    pull_fails(&img("test/no-such-repo:1"), &[], &[], &[]);
}

#[test]
fn invalid_reference_is_a_clean_error() {
    pull_fails("127.0.0.1:5000/UPPER//bad::ref", &[], &[], &[]);
}

#[test]
fn unreachable_registry_is_a_clean_error() {
    let port = common::free_port();
    pull_fails(&format!("127.0.0.1:{port}/test/busybox:1"), &[], &[], &[]);
}

#[test]
fn corrupted_blob_is_detected() {
    let reg = Registry::start(Mode::Plain);
    let l = &f().layout;
    push(&reg, l, "busybox", "test/busybox:1", false);
    let m = l.manifest("busybox");
    let layers: &Vec<tinyjson::JsonValue> = m["layers"].get().unwrap();
    let layer = fixtures::str_of(&layers[0]["digest"]);
    let data_path = reg.blob_data_path(&layer);
    let mut data = fs::read(&data_path).expect("layer data in registry storage");
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 64] {
        *b ^= 0x5a;
    }
    fs::write(&data_path, &data).unwrap();
    pull_fails(&reg.image("test/busybox:1"), &[], &[], &[]);
}

#[test]
fn wrong_diff_id_is_detected() {
    pull_fails(&img("test/bad-diffid:1"), &[], &[], &[]);
}

#[test]
fn truncated_gzip_is_detected() {
    pull_fails(&img("test/truncated:1"), &[], &[], &[]);
}

#[test]
fn gzip_bytes_declared_zstd_fail_naming_zstd() {
    // zstd layers pull (tests/zstd.rs); gzip bytes under the zstd media type do not.
    let line = pull_fails(&img("test/zstd:1"), &[], &[], &[]);
    assert!(
        line.to_lowercase().contains("zstd"),
        "error should name zstd: {line}"
    );
}

#[test]
fn non_empty_dir_is_refused() {
    let (_tmp, dir) = target();
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("precious"), b"do not touch\n").unwrap();
    pull_fails_into(&dir, &img("test/busybox:oci"), &[], &[], &[]);
    assert_eq!(fs::read(dir.join("precious")).unwrap(), b"do not touch\n");
}

#[test]
fn empty_existing_dir_is_used() {
    let (_tmp, dir) = target();
    fs::create_dir(&dir).unwrap();
    let out = barge(&pull_args(&img("test/busybox:oci"), &dir, &[]));
    assert_success(&out);
    tree::assert_same_tree(&f().expected("busybox"), &snapshot(&dir));
}

#[test]
fn empty_existing_dir_stays_empty_on_failure() {
    let (_tmp, dir) = target();
    fs::create_dir(&dir).unwrap();
    pull_fails_into(&dir, &img("test/truncated:1"), &[], &[], &[]);
    assert!(dir.is_dir() && list_dir(&dir).is_empty());
}

// ------------------------------------------------------------------ escape attempts

/// A temp tree with canaries around a target dir at `a/b/c/rootfs`:
/// `canary`, `outside/canary`, `a/b/etc/passwd`.
struct Scene {
    tmp: TempDir,
    dir: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let tmp = TempDir::new("escape");
        fs::write(tmp.join("canary"), b"canary\n").unwrap();
        fs::create_dir_all(tmp.join("outside")).unwrap();
        fs::write(tmp.join("outside/canary"), b"outside canary\n").unwrap();
        fs::create_dir_all(tmp.join("a/b/etc")).unwrap();
        fs::write(tmp.join("a/b/etc/passwd"), b"canary passwd\n").unwrap();
        fs::create_dir_all(tmp.join("a/b/c")).unwrap();
        let dir = tmp.join("a/b/c/rootfs");
        Scene { tmp, dir }
    }

    fn abs(&self, rel: &str) -> String {
        self.tmp.join(rel).to_str().unwrap().to_string()
    }

    /// Everything outside `a/b/c/` (directory mtimes ignored).
    fn outside(&self) -> Tree {
        snapshot(self.tmp.path())
            .into_iter()
            .filter(|(k, _)| !k.starts_with("a/b/c/"))
            .map(|(k, mut m)| {
                if m.kind == "dir" {
                    m.mtime = 0;
                }
                (k, m)
            })
            .collect()
    }

    fn nlinks(&self) -> Vec<u64> {
        ["canary", "outside/canary", "a/b/etc/passwd"]
            .iter()
            .map(|p| fs::metadata(self.tmp.join(p)).unwrap().nlink())
            .collect()
    }
}

#[derive(PartialEq)]
enum Expect {
    /// The layer is legal (everything lands inside DIR): the pull must succeed.
    Success,
    /// Refusing (clean error, DIR untouched) or confining inside DIR are both fine.
    RefuseOrConfine,
}

/// Pushes the crafted layers, pulls them, and checks nothing outside DIR changed.
fn escape_case(name: &str, scene: &Scene, layers: &[Vec<u8>], expect: Expect) -> Option<PathBuf> {
    let repo = format!("escape/{name}:1");
    push_crafted(&f().registry, &repo, layers);
    let before = scene.outside();
    let state = DirState::capture(&scene.dir);
    let out = barge(&pull_args(&img(&repo), &scene.dir, &[]));
    let after = scene.outside();
    tree::assert_same_tree(&before, &after);
    assert_eq!(scene.nlinks(), [1, 1, 1], "a canary got hard-linked");
    for stray in [
        "escape",
        "a/escape",
        "a/b/escape",
        "a/b/c/escape",
        "outside/escape",
    ] {
        assert!(
            !scene.tmp.join(stray).exists(),
            "{stray} was created outside DIR"
        );
    }
    if out.status.success() {
        assert_eq!(list_dir(scene.dir.parent().unwrap()), ["rootfs"]);
        Some(scene.dir.clone())
    } else {
        assert!(
            expect == Expect::RefuseOrConfine,
            "a legal layer was refused"
        );
        assert_clean_failure(&out, &[]);
        state.assert_unchanged();
        None
    }
}

fn tar(build: impl FnOnce(&mut TarBuilder)) -> Vec<u8> {
    let mut t = TarBuilder::new();
    build(&mut t);
    t.finish()
}

#[test]
fn escape_dotdot_names() {
    let s = Scene::new();
    let layer = tar(|t| {
        t.dir("etc/", 0o755)
            .file("../escape", 0o644, b"x")
            .file("../../escape", 0o644, b"x")
            .file("etc/../../../../../escape", 0o644, b"x");
    });
    escape_case("dotdot", &s, &[layer], Expect::RefuseOrConfine);
}

#[test]
fn escape_absolute_names() {
    let s = Scene::new();
    let layer = tar(|t| {
        t.file("/abs/../../escape", 0o644, b"x");
    });
    escape_case("absolute", &s, &[layer], Expect::RefuseOrConfine);
}

#[test]
fn escape_through_symlink_in_same_layer() {
    let s = Scene::new();
    let layer = tar(|t| {
        t.symlink("up", "../../..").file("up/escape", 0o644, b"x");
    });
    escape_case("symlink-same-layer", &s, &[layer], Expect::RefuseOrConfine);
}

#[test]
fn escape_through_symlink_from_earlier_layer() {
    let s = Scene::new();
    let l1 = tar(|t| {
        t.symlink("up", "../../..")
            .dir("d/", 0o755)
            .symlink("d/up", "../../../..");
    });
    let l2 = tar(|t| {
        t.file("up/escape", 0o644, b"x")
            .file("d/up/escape", 0o644, b"x");
    });
    escape_case(
        "symlink-earlier-layer",
        &s,
        &[l1, l2],
        Expect::RefuseOrConfine,
    );
}

#[test]
fn absolute_symlink_resolves_inside_the_root() {
    let s = Scene::new();
    let layer = tar(|t| {
        t.dir("etc/", 0o755)
            .symlink("root", "/")
            .file("root/etc/marker", 0o644, b"inside\n");
    });
    let dir = escape_case("symlink-root", &s, &[layer], Expect::Success).unwrap();
    assert_eq!(fs::read(dir.join("etc/marker")).unwrap(), b"inside\n");
    assert_eq!(fs::read_link(dir.join("root")).unwrap(), Path::new("/"));
}

#[test]
fn escape_hardlink_pointing_out() {
    let s = Scene::new();
    let layer = tar(|t| {
        t.dir("etc/", 0o755).hardlink("pw", "../../etc/passwd");
    });
    escape_case("hardlink-out", &s, &[layer], Expect::RefuseOrConfine);
}

#[test]
fn escape_hardlink_through_symlink() {
    let s = Scene::new();
    let abs = s.abs("");
    let layer = tar(|t| {
        t.symlink("lnk", &abs).hardlink("stolen", "lnk/canary");
    });
    escape_case(
        "hardlink-via-symlink",
        &s,
        &[layer],
        Expect::RefuseOrConfine,
    );
}

#[test]
fn escape_whiteouts_through_symlinks() {
    let s = Scene::new();
    let outside = s.abs("outside");
    let layer1 = tar(|t| {
        t.symlink("l", &outside)
            .symlink("l2", "../../../../outside")
            .symlink("l3", &outside);
    });
    let layer2 = tar(|t| {
        t.whiteout("l/.wh.canary")
            .whiteout("l2/.wh.canary")
            .whiteout("l3/.wh..wh..opq");
    });
    escape_case(
        "whiteout-via-symlink",
        &s,
        &[layer1, layer2],
        Expect::RefuseOrConfine,
    );
    assert!(s.tmp.join("outside/canary").is_file());
}

#[test]
fn file_replacing_a_symlink_does_not_write_through_it() {
    let s = Scene::new();
    let canary = s.abs("canary");
    let l1 = tar(|t| {
        t.dir("etc/", 0o755).symlink("etc/passwd", &canary);
    });
    let l2 = tar(|t| {
        t.file("etc/passwd", 0o644, b"replaced\n");
    });
    let dir = escape_case("replace-symlink", &s, &[l1, l2], Expect::Success).unwrap();
    let p = dir.join("etc/passwd");
    assert!(p.symlink_metadata().unwrap().is_file());
    assert_eq!(fs::read(p).unwrap(), b"replaced\n");
}

#[test]
fn escape_dir_replaced_by_symlink_then_written() {
    let s = Scene::new();
    let outside = s.abs("outside");
    let l1 = tar(|t| {
        t.dir("etc/", 0o755);
    });
    let l2 = tar(|t| {
        t.symlink("etc", &outside).file("etc/escape", 0o644, b"x");
    });
    escape_case("dir-to-symlink", &s, &[l1, l2], Expect::RefuseOrConfine);
}

#[test]
fn escape_symlink_chain_with_dotdot_entries() {
    let s = Scene::new();
    let mut deep = RawEntry::new("a/b/../../../escape", b'0', 0o644);
    deep.data = b"x".to_vec();
    let layer = tar(|t| {
        t.dir("a/", 0o755).dir("a/b/", 0o755).entry(deep);
    });
    escape_case("dotdot-inside-path", &s, &[layer], Expect::RefuseOrConfine);
}

// ------------------------------------------------------------------ output and defaults

#[test]
fn quiet_prints_nothing_on_success() {
    let (_t, _dir, out) = pull_ok(&img("test/busybox:oci"), &["-q"], &[]);
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn normal_output_names_the_manifest_and_finishes_with_done() {
    let (_t, dir, out) = pull_ok(&img("test/busybox:oci"), &[], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&f().layout.digest("busybox")),
        "no manifest digest in:\n{stdout}"
    );
    assert!(stdout.contains("Done"), "no Done line in:\n{stdout}");
    assert!(
        stdout.contains(dir.to_str().unwrap()),
        "DIR not named in:\n{stdout}"
    );
    assert!(
        !stdout.contains('\r'),
        "progress line on a non-terminal:\n{stdout:?}"
    );
}

#[test]
fn insecure_flag_is_accepted_for_a_plain_registry() {
    let host = f().registry.host();
    let (_t, dir, _) = pull_ok(&img("test/busybox:oci"), &["--insecure", &host], &[]);
    tree::assert_same_tree(&f().expected("busybox"), &snapshot(&dir));
}

#[test]
fn default_dir_is_rootfs_in_the_working_directory() {
    let tmp = TempDir::new("cwd");
    let out = barge_in(
        Some(tmp.path()),
        &["pull", "-q", &img("test/busybox:oci")],
        &[],
    );
    assert_success(&out);
    tree::assert_same_tree(&f().expected("busybox"), &snapshot(&tmp.join("rootfs")));
}

// ------------------------------------------------------------------ the tree runs

#[test]
fn runc_runs_the_pulled_busybox() {
    require_tool("runc");
    let tmp = TempDir::new("runc");
    let bundle = tmp.join("bundle");
    fs::create_dir(&bundle).unwrap();
    let rootfs = bundle.join("rootfs");
    let out = barge(&pull_args(&img("test/busybox:oci"), &rootfs, &["-q"]));
    assert_success(&out);
    run(Command::new("runc").arg("spec").current_dir(&bundle));
    let cfg_path = bundle.join("config.json");
    let mut cfg = fixtures::parse_json(&fs::read(&cfg_path).unwrap());
    {
        let process: &mut std::collections::HashMap<String, tinyjson::JsonValue> =
            cfg["process"].get_mut().unwrap();
        process.insert(
            "args".into(),
            tinyjson::JsonValue::Array(
                ["/bin/busybox", "echo", "hello from barge"]
                    .iter()
                    .map(|s| fixtures::jstr(s))
                    .collect(),
            ),
        );
        process.insert("terminal".into(), tinyjson::JsonValue::Boolean(false));
    }
    fs::write(&cfg_path, cfg.stringify().unwrap()).unwrap();
    let id = format!("barge-test-{}", std::process::id());
    let out = Command::new("runc")
        .args(["run", "-b"])
        .arg(&bundle)
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run runc");
    let _ = Command::new("runc").args(["delete", "-f", &id]).output();
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from barge\n");
}

/// Not root: a layer may add to and delete from directories that are read-only
/// (0555, made by this layer or an earlier one), by new entries, whiteouts and opaque
/// markers; their modes come out as the image says. Runs barge as `nobody` with `setpriv`.
#[test]
fn non_root_pull_writes_into_read_only_directories() {
    require_tool("setpriv");
    let l1 = tar(|t| {
        t.dir("ro/", 0o555)
            .file("ro/a", 0o644, b"a")
            .dir("ro/sub/", 0o555)
            .file("ro/sub/x", 0o644, b"x")
            .dir("ro/o/", 0o555)
            .file("ro/o/old", 0o644, b"old");
    });
    let l2 = tar(|t| {
        t.file("ro/b", 0o644, b"b")
            .whiteout("ro/.wh.a")
            .whiteout("ro/sub/.wh.x")
            .dir("ro/new/", 0o500)
            .file("ro/new/y", 0o400, b"y")
            .file("ro/o/fresh", 0o644, b"fresh")
            .whiteout("ro/o/.wh..wh..opq");
    });
    push_crafted(&f().registry, "nonroot/ro:2", &[l1, l2]);
    let tmp = TempDir::new("nonroot");
    let (nobody, nogroup) = (65534, 65534);
    let own = |p: &Path| std::os::unix::fs::chown(p, Some(nobody), Some(nogroup)).unwrap();
    own(tmp.path());
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // The test binary's directory may not be open to nobody: run a copy.
    let bin = tmp.join("barge");
    fs::copy(common::barge_path(), &bin).unwrap();
    let dir = tmp.join("rootfs");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(pull_args(&img("nonroot/ro:2"), &dir, &[]))
        .env("HOME", tmp.path())
        .env("DOCKER_CONFIG", tmp.path())
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert_success(&out);
    let mode = |p: &str| fs::symlink_metadata(dir.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(
        [
            mode("ro"),
            mode("ro/sub"),
            mode("ro/new"),
            mode("ro/new/y"),
            mode("ro/o")
        ],
        [0o555, 0o555, 0o500, 0o400, 0o555]
    );
    assert_eq!(list_dir(&dir.join("ro")), ["b", "new", "o", "sub"]);
    assert_eq!(list_dir(&dir.join("ro/o")), ["fresh"]);
    assert!(list_dir(&dir.join("ro/sub")).is_empty());
    assert_eq!(fs::read(dir.join("ro/b")).unwrap(), b"b");
    assert_eq!(
        fs::symlink_metadata(dir.join("ro/b")).unwrap().uid(),
        nobody
    );
}
