//! Integration tests of `barge push`, `barge login` and `barge logout` against real
//! docker-registry instances (plain HTTP, TLS + htpasswd, token auth) and real peers:
//! the pushed images are read back with `skopeo` + `umoci` and with `barge pull`, and
//! must equal the committed directory entry by entry. The registries' access logs
//! show what was uploaded, mounted, or not requested at all.

mod common;

use common::fixtures::{noise, parse_json, str_of, Fixtures, Layout};
use common::registry::{Access, Mode, Registry};
use common::token::{percent_decode, PASS, USER};
use common::tree::{self, snapshot, Tree};
use common::{
    assert_clean_failure, assert_no_secret, assert_success, barge, barge_env, base64, list_dir,
    require_tool, run, DirState, TempDir,
};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tinyjson::JsonValue;

// ------------------------------------------------------------------ helpers

fn f() -> &'static Fixtures {
    Fixtures::get()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// `barge pull -g IMAGE -r TMP/rootfs`; returns the temp dir and DIR.
fn pull_git(image: &str, extra: &[&str]) -> (TempDir, PathBuf) {
    let tmp = TempDir::new("push-src");
    let dir = tmp.join("rootfs");
    let mut args = vec!["pull", "-q", "-g", image, "-r", p(&dir)];
    args.extend_from_slice(extra);
    assert_success(&barge(&args));
    (tmp, dir)
}

/// `barge commit -r DIR -m MESSAGE`, asserting success.
fn commit(dir: &Path, message: &str) {
    assert_success(&barge(&["commit", "-q", "-r", p(dir), "-m", message]));
}

/// `barge push IMAGE -r DIR EXTRA...` with extra environment variables.
fn push_env(image: &str, dir: &Path, extra: &[&str], env: &[(&str, &OsStr)]) -> Output {
    let mut args = vec!["push", image, "-r", p(dir)];
    args.extend_from_slice(extra);
    barge_env(&args, env)
}

fn push(image: &str, dir: &Path, extra: &[&str]) -> Output {
    push_env(image, dir, extra, &[])
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The digest in barge's `Done: REF@sha256:…` line (asserting the reference too).
fn done_digest(out: &Output, image: &str) -> String {
    let text = stdout(out);
    let line = text
        .lines()
        .find(|l| l.starts_with("Done: "))
        .unwrap_or_else(|| panic!("no `Done: ` line in:\n{text}"));
    let (reference, digest) = line["Done: ".len()..]
        .rsplit_once('@')
        .unwrap_or_else(|| panic!("no @DIGEST in {line:?}"));
    assert_eq!(reference, image, "Done line names another reference");
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "bad digest in {line:?}"
    );
    digest.to_string()
}

/// Asserts the seed's output shape: `Pushing N layers:` and one `... done` line per
/// layer naming its digest, with `suffix` (e.g. `(already pushed)`) when given.
fn assert_push_output(out: &Output, layers: &[String], suffix: Option<&str>) {
    let text = stdout(out);
    let n = layers.len();
    let want = format!("Pushing {n} layer{}:", if n == 1 { "" } else { "s" });
    assert!(text.contains(&want), "no `{want}` in:\n{text}");
    for layer in layers {
        let line = text
            .lines()
            .find(|l| l.contains(layer.as_str()) && l.contains("done"))
            .unwrap_or_else(|| panic!("no `... done` line for {layer} in:\n{text}"));
        if let Some(s) = suffix {
            assert!(line.contains(s), "layer line without {s:?}: {line:?}");
        }
    }
    assert!(
        !text.contains('\r'),
        "progress bar on a non-terminal:\n{text:?}"
    );
}

/// Arguments for `skopeo inspect` / `skopeo copy` (source side) of `reg`.
fn skopeo_args(reg: &Registry) -> Vec<String> {
    reg.skopeo_src_args()
        .into_iter()
        .map(|a| a.replace("--src-", "--"))
        .collect()
}

/// `skopeo inspect --raw` of `reg`'s `repo_tag`: (manifest digest, manifest JSON).
fn skopeo_manifest(reg: &Registry, repo_tag: &str) -> (String, JsonValue) {
    require_tool("skopeo");
    let raw = run(Command::new("skopeo")
        .arg("inspect")
        .args(skopeo_args(reg))
        .arg("--raw")
        .arg(format!("docker://{}", reg.image(repo_tag))));
    (
        format!("sha256:{}", common::sha256_hex(&raw)),
        parse_json(&raw),
    )
}

/// Layer digests of a manifest.
fn layer_digests(manifest: &JsonValue) -> Vec<String> {
    let layers: &Vec<JsonValue> = manifest["layers"].get().expect("layers array");
    layers.iter().map(|l| str_of(&l["digest"])).collect()
}

fn config_digest(manifest: &JsonValue) -> String {
    str_of(&manifest["config"]["digest"])
}

/// `skopeo copy` of `reg`'s `repo_tag` into an OCI layout, then `umoci unpack`.
fn skopeo_umoci_tree(reg: &Registry, repo_tag: &str) -> Tree {
    let tmp = TempDir::new("skopeo-copy");
    let layout = Layout {
        dir: tmp.join("layout"),
    };
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q"])
        .args(reg.skopeo_src_args())
        .arg(format!("docker://{}", reg.image(repo_tag)))
        .arg(format!("oci:{}", layout.image("x"))));
    layout.unpack_tree("x")
}

/// `barge pull` of `image` into a fresh directory; returns its snapshot.
fn barge_pull_tree(image: &str, extra: &[&str]) -> Tree {
    let tmp = TempDir::new("pull-back");
    let dir = tmp.join("rootfs");
    let mut args = vec!["pull", "-q", image, "-r", p(&dir)];
    args.extend_from_slice(extra);
    assert_success(&barge(&args));
    snapshot(&dir)
}

/// Registry requests after `mark` whose path is in repository `repo`.
fn repo_requests(reg: &Registry, mark: usize, repo: &str) -> Vec<Access> {
    let prefix = format!("/v2/{repo}/");
    reg.access_log_since(mark)
        .into_iter()
        .filter(|a| a.path.starts_with(&prefix))
        .collect()
}

fn query(path: &str, key: &str) -> Option<String> {
    let q = path.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

/// Blobs whose upload into `repo` completed after `mark`.
fn uploaded_to(reg: &Registry, mark: usize, repo: &str) -> BTreeSet<String> {
    let got: BTreeSet<String> = repo_requests(reg, mark, repo)
        .iter()
        .filter(|a| a.method == "PUT" && a.status == 201 && a.path.contains("/blobs/uploads/"))
        .filter_map(|a| query(&a.path, "digest"))
        .collect();
    // Cross-check with the harness's registry-wide view.
    let all: BTreeSet<String> = reg.uploaded_blobs_since(mark).into_iter().collect();
    assert!(
        got.is_subset(&all),
        "log parsers disagree: {got:?} vs {all:?}"
    );
    got
}

/// Blobs mounted into `repo` after `mark`.
fn mounted_into(reg: &Registry, mark: usize, repo: &str) -> BTreeSet<String> {
    repo_requests(reg, mark, repo)
        .iter()
        .filter(|a| a.method == "POST" && a.status == 201)
        .filter_map(|a| query(&a.path, "mount"))
        .collect()
}

/// Asserts the registry accepted no write (upload, mount, manifest) into `repo` after
/// `mark` (refused attempts, e.g. 401, are fine).
fn assert_nothing_written(reg: &Registry, mark: usize, repo: &str) {
    let writes: Vec<Access> = repo_requests(reg, mark, repo)
        .into_iter()
        .filter(|a| a.method != "HEAD" && a.method != "GET" && a.status < 400)
        .collect();
    assert!(writes.is_empty(), "unexpected writes: {writes:?}");
}

fn set<'a>(items: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    items.into_iter().cloned().collect()
}

/// Adds, changes, deletes, chmods and chowns files of the "rich" fixture tree.
fn change_rich(dir: &Path) {
    fs::write(dir.join("srv/new-file"), b"added after pull\n").unwrap();
    fs::set_permissions(dir.join("srv/new-file"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(dir.join("wh/kept"), b"kept, and changed\n").unwrap();
    fs::remove_file(dir.join("data/big")).unwrap();
    fs::set_permissions(dir.join("usr/bin/sgid"), fs::Permissions::from_mode(0o750)).unwrap();
    lchown(dir.join("home/app/notes.txt"), Some(2000), Some(2001)).unwrap();
}

/// Adds, changes, deletes, chmods and chowns files of the busybox fixture tree.
fn change_busybox(dir: &Path) {
    fs::write(dir.join("etc/motd"), b"pushed by barge\n").unwrap();
    let mut passwd = fs::read(dir.join("etc/passwd")).unwrap();
    passwd.extend_from_slice(b"web:x:33:33::/srv:/bin/sh\n");
    fs::write(dir.join("etc/passwd"), passwd).unwrap();
    fs::remove_file(dir.join("bin/vi")).unwrap();
    fs::set_permissions(dir.join("root"), fs::Permissions::from_mode(0o750)).unwrap();
    lchown(dir.join("etc/group"), Some(0), Some(1000)).unwrap();
}

/// busybox pulled with -g from the fixture registry, changed and committed (shared by
/// the tests that only read it).
fn busybox_committed() -> &'static Path {
    static D: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    let (_, dir) = D.get_or_init(|| {
        let (tmp, dir) = pull_git(&f().image("test/busybox:oci"), &[]);
        change_busybox(&dir);
        commit(&dir, "motd, a user, no vi");
        (tmp, dir)
    });
    dir
}

// ------------------------------------------------------------------ 1. the seed's round trip

#[test]
fn round_trip_on_the_same_registry_mounts_the_base() {
    let reg = &f().registry;
    let base_manifest = f().layout.manifest("rich");
    let base_layers = layer_digests(&base_manifest);
    let (_tmp, dir) = pull_git(&f().image("test/rich:oci"), &[]);
    change_rich(&dir);
    commit(&dir, "add, change, delete, chmod, chown");
    let expected = snapshot(&dir);

    let repo = "test/rich-changed";
    let image = reg.image(&format!("{repo}:v1"));
    let mark = reg.log_mark();
    let out = push(&image, &dir, &[]);
    assert_success(&out);
    let digest = done_digest(&out, &image);

    // The registry has the manifest barge printed, with the base layers plus one.
    let (seen, manifest) = skopeo_manifest(reg, &format!("{repo}:v1"));
    assert_eq!(
        seen, digest,
        "skopeo sees another manifest than barge printed"
    );
    let layers = layer_digests(&manifest);
    assert_eq!(layers.len(), base_layers.len() + 1);
    assert_eq!(
        layers[..base_layers.len()],
        base_layers[..],
        "base layers changed"
    );
    let new_layer = layers.last().unwrap().clone();
    assert_push_output(&out, &layers, None);
    assert!(
        stdout(&out).contains(&format!("Pushing image {image}")),
        "no `Pushing image` line:\n{}",
        stdout(&out)
    );

    // Only the new layer and the config were uploaded; the base was mounted or found.
    let uploaded = uploaded_to(reg, mark, repo);
    let want = set([&new_layer, &config_digest(&manifest)]);
    assert_eq!(
        uploaded, want,
        "uploads other than the new layer and config"
    );
    let mounted = mounted_into(reg, mark, repo);
    assert!(
        mounted.is_subset(&set(&base_layers)),
        "mounted something else than base layers: {mounted:?}"
    );

    // Peers read it back as DIR.
    tree::assert_same_tree(&expected, &skopeo_umoci_tree(reg, &format!("{repo}:v1")));
    tree::assert_same_tree(&expected, &barge_pull_tree(&image, &[]));
    tree::assert_same_tree(&expected, &snapshot(&dir));

    // Pushing again sends nothing.
    let mark = reg.log_mark();
    let again = push(&image, &dir, &[]);
    assert_success(&again);
    assert_eq!(done_digest(&again, &image), digest);
    assert_push_output(&again, &layers, Some("(already pushed)"));
    assert!(
        uploaded_to(reg, mark, repo).is_empty(),
        "second push uploaded blobs"
    );
    assert!(
        mounted_into(reg, mark, repo).is_empty(),
        "second push mounted blobs"
    );
    let posts: Vec<Access> = repo_requests(reg, mark, repo)
        .into_iter()
        .filter(|a| a.method == "POST" || a.method == "PATCH")
        .collect();
    assert!(posts.is_empty(), "second push opened uploads: {posts:?}");
}

#[test]
fn push_to_another_tag_of_the_source_repository_uploads_only_the_new_layer() {
    let reg = &f().registry;
    let (_tmp, dir) = pull_git(&f().image("test/busybox:v2s2"), &[]);
    change_busybox(&dir);
    commit(&dir, "same repository, new tag");
    let repo = "test/busybox";
    let (source_digest, _) = skopeo_manifest(reg, "test/busybox:v2s2");
    let image = reg.image(&format!("{repo}:changed"));
    let mark = reg.log_mark();
    let out = push(&image, &dir, &[]);
    assert_success(&out);
    let digest = done_digest(&out, &image);
    let (seen, manifest) = skopeo_manifest(reg, &format!("{repo}:changed"));
    assert_eq!(seen, digest);
    let layers = layer_digests(&manifest);
    let text = stdout(&out);
    let base = &layers[..layers.len() - 1];
    for l in base {
        assert!(
            text.lines()
                .any(|x| x.contains(l.as_str()) && x.contains("(already pushed)")),
            "base layer {l} not reported as already pushed:\n{text}"
        );
    }
    let want = set([layers.last().unwrap(), &config_digest(&manifest)]);
    assert_eq!(uploaded_to(reg, mark, repo), want);
    assert!(mounted_into(reg, mark, repo).is_empty());
    tree::assert_same_tree(&snapshot(&dir), &barge_pull_tree(&image, &[]));
    // The source tag is untouched.
    let (after, _) = skopeo_manifest(reg, "test/busybox:v2s2");
    assert_eq!(after, source_digest, "the source tag moved");
}

// ------------------------------------------------------------------ 2. other registries, login

fn tls_registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry::start(Mode::TlsBasic))
}

fn ca_path() -> &'static str {
    p(tls_registry().ca_file.as_ref().unwrap())
}

fn creds() -> String {
    format!("{USER}:{PASS}")
}

#[test]
fn cross_registry_push_streams_the_base_layers() {
    let reg = tls_registry();
    let dir = busybox_committed();
    let repo = "streamed/busybox";
    let image = reg.image(&format!("{repo}:1"));
    let mark = reg.log_mark();
    let c = creds();
    let out = push(&image, dir, &["--ca-cert", ca_path(), "-u", &c]);
    assert_success(&out);
    assert_no_secret(&out, &[PASS, &base64(c.as_bytes())]);
    let digest = done_digest(&out, &image);
    let (seen, manifest) = skopeo_manifest(reg, &format!("{repo}:1"));
    assert_eq!(seen, digest);
    let layers = layer_digests(&manifest);
    assert_push_output(&out, &layers, None);
    let mut want = set(&layers);
    want.insert(config_digest(&manifest));
    assert_eq!(
        uploaded_to(reg, mark, repo),
        want,
        "every blob streams across"
    );
    let expected = snapshot(dir);
    tree::assert_same_tree(&expected, &skopeo_umoci_tree(reg, &format!("{repo}:1")));
    tree::assert_same_tree(
        &expected,
        &barge_pull_tree(&image, &["--ca-cert", ca_path(), "-u", &c]),
    );
}

/// Runs barge with `input` on stdin and only the given environment (plus PATH).
fn barge_stdin(args: &[&str], input: &str, docker_config: &Path) -> Output {
    let mut cmd = Command::new(common::barge_path());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DOCKER_CONFIG", docker_config)
        .env("HOME", docker_config)
        .env("XDG_RUNTIME_DIR", docker_config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn barge");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().expect("wait for barge")
}

fn read_json_file(path: &Path) -> JsonValue {
    parse_json(&fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

fn auths_keys(cfg: &JsonValue) -> Vec<String> {
    match &cfg["auths"] {
        JsonValue::Object(m) => m.keys().cloned().collect(),
        other => panic!("auths is not an object: {other:?}"),
    }
}

/// The other keys of the pre-existing config.json are all still there.
fn assert_other_keys_kept(cfg: &JsonValue) {
    assert_eq!(cfg["credsStore"], JsonValue::String(String::new()));
    assert_eq!(str_of(&cfg["HttpHeaders"]["X"]), "y");
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o777
}

#[test]
fn login_stores_credentials_that_push_and_skopeo_use_and_logout_removes_them() {
    let reg = tls_registry();
    let host = reg.host();
    let dir = busybox_committed();
    let cfg_dir = TempDir::new("docker-config");
    let cfg = cfg_dir.join("config.json");
    let original = r#"{"credsStore":"","auths":{},"HttpHeaders":{"X":"y"}}"#;
    fs::write(&cfg, original).unwrap();
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644)).unwrap();

    // A wrong password: one clean line, no secret, the file unchanged.
    let bad = "Wr0ngPassw0rd";
    let login_args = [
        "login",
        host.as_str(),
        "-u",
        USER,
        "--password-stdin",
        "--ca-cert",
        ca_path(),
    ];
    let out = barge_stdin(&login_args, &format!("{bad}\n"), cfg_dir.path());
    let line = assert_clean_failure(&out, &[bad, &base64(format!("{USER}:{bad}").as_bytes())]);
    eprintln!("wrong password: {line}");
    assert_eq!(
        fs::read_to_string(&cfg).unwrap(),
        original,
        "failed login wrote"
    );

    // The right one.
    let out = barge_stdin(&login_args, &format!("{PASS}\n"), cfg_dir.path());
    assert_success(&out);
    assert_no_secret(&out, &[PASS, &base64(creds().as_bytes())]);
    assert_eq!(mode_of(&cfg), 0o600, "config.json must be private");
    let stored = read_json_file(&cfg);
    assert_other_keys_kept(&stored);
    assert_eq!(
        str_of(&stored["auths"][host.as_str()]["auth"]),
        base64(creds().as_bytes())
    );

    // Push with no -u, from the stored file.
    let repo = "login/busybox";
    let image = reg.image(&format!("{repo}:1"));
    let env = [("DOCKER_CONFIG", cfg_dir.path().as_os_str())];
    let out = push_env(&image, dir, &["--ca-cert", ca_path()], &env);
    assert_success(&out);
    assert_no_secret(&out, &[PASS]);
    let digest = done_digest(&out, &image);

    // skopeo accepts the file barge wrote.
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--authfile", p(&cfg)])
        .arg(format!(
            "--cert-dir={}",
            reg.cert_dir.as_ref().unwrap().display()
        ))
        .arg(format!("docker://{image}")));
    assert_eq!(format!("sha256:{}", common::sha256_hex(&raw)), digest);

    // Logout removes the entry and keeps the rest.
    let out = barge_env(&["logout", &host], &env);
    assert_success(&out);
    let after = read_json_file(&cfg);
    assert_other_keys_kept(&after);
    assert!(
        !auths_keys(&after).contains(&host),
        "logout left the entry: {after:?}"
    );
    assert_eq!(mode_of(&cfg), 0o600);
    // And a push without credentials now fails cleanly.
    let out = push_env(
        &reg.image(&format!("{repo}:2")),
        dir,
        &["--ca-cert", ca_path()],
        &env,
    );
    assert_clean_failure(&out, &[PASS]);
}

#[test]
fn failed_login_creates_no_file() {
    let reg = tls_registry();
    let cfg_dir = TempDir::new("docker-config-empty");
    let bad = "An0therBadOne";
    let out = barge_stdin(
        &[
            "login",
            &reg.host(),
            "-u",
            USER,
            "--password-stdin",
            "--ca-cert",
            ca_path(),
        ],
        &format!("{bad}\n"),
        cfg_dir.path(),
    );
    assert_clean_failure(&out, &[bad]);
    assert_eq!(list_dir(cfg_dir.path()), Vec::<String>::new());
}

fn token_registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry::start(Mode::Token))
}

#[test]
fn token_registry_push_with_user_asks_pull_push_scope() {
    let reg = token_registry();
    let dir = busybox_committed();
    let repo = "test/pushed";
    let image = reg.image(&format!("{repo}:1"));
    let issuer = reg.token.as_ref().unwrap();
    let before = issuer.requests().len();
    let c = creds();
    let out = push(&image, dir, &["-u", &c]);
    assert_success(&out);
    assert_no_secret(&out, &[PASS, &base64(c.as_bytes())]);
    let digest = done_digest(&out, &image);
    let reqs = issuer.requests().split_off(before);
    let want = format!("repository:{repo}:pull,push");
    assert!(
        reqs.iter().any(|r| r.status == 200
            && r.account.as_deref() == Some(USER)
            && r.scopes.iter().any(|s| s == &want)),
        "no token request with scope {want}: {reqs:?}"
    );
    let (seen, _) = skopeo_manifest(reg, &format!("{repo}:1"));
    assert_eq!(seen, digest);
    tree::assert_same_tree(
        &snapshot(dir),
        &skopeo_umoci_tree(reg, &format!("{repo}:1")),
    );
}

#[test]
fn token_registry_anonymous_push_fails_with_a_hint() {
    let reg = token_registry();
    let dir = busybox_committed();
    let repo = "test/anonymous";
    let mark = reg.log_mark();
    let out = push(&reg.image(&format!("{repo}:1")), dir, &[]);
    let line = assert_clean_failure(&out, &[]);
    eprintln!("anonymous push: {line}");
    assert!(
        line.contains("login") || line.contains("-u"),
        "no hint about credentials: {line}"
    );
    assert_nothing_written(reg, mark, repo);
}

// ------------------------------------------------------------------ 3. refusals, before any request

/// A registry that only these tests talk to, so that "no request" is visible.
fn quiet_registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry::start(Mode::Plain))
}

/// Runs a push that must be refused before any request; returns the error line.
fn refused(image: &str, dir: &Path) -> String {
    let reg = quiet_registry();
    let mark = reg.log_mark();
    let state = DirState::capture(dir);
    let out = push(image, dir, &[]);
    let line = assert_clean_failure(&out, &[]);
    state.assert_unchanged();
    let seen = reg.access_log_since(mark);
    assert!(seen.is_empty(), "requests before the refusal: {seen:?}");
    line
}

#[test]
fn uncommitted_changes_are_refused_before_any_request() {
    let (_tmp, dir) = pull_git(&f().image("test/busybox:oci"), &[]);
    fs::write(dir.join("etc/motd"), b"not committed\n").unwrap();
    let line = refused(&quiet_registry().image("refused/dirty:1"), &dir);
    assert!(
        line.contains("barge commit"),
        "no `barge commit` hint: {line}"
    );
}

#[test]
fn uncommitted_changes_after_a_commit_are_refused() {
    let (_tmp, dir) = pull_git(&f().image("test/busybox:oci"), &[]);
    fs::write(dir.join("etc/motd"), b"committed\n").unwrap();
    commit(&dir, "motd");
    fs::remove_file(dir.join("etc/motd")).unwrap();
    let line = refused(&quiet_registry().image("refused/dirty2:1"), &dir);
    assert!(
        line.contains("barge commit"),
        "no `barge commit` hint: {line}"
    );
}

#[test]
fn non_barge_directory_is_refused_before_any_request() {
    let tmp = TempDir::new("not-barge");
    let dir = tmp.join("rootfs");
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/hostname"), b"plain\n").unwrap();
    refused(&quiet_registry().image("refused/plain:1"), &dir);
}

#[test]
fn missing_directory_is_refused_before_any_request() {
    let tmp = TempDir::new("missing");
    refused(
        &quiet_registry().image("refused/missing:1"),
        &tmp.join("nope"),
    );
}

#[test]
fn digest_reference_is_refused_before_any_request() {
    let dir = busybox_committed();
    let image = format!(
        "{}@sha256:{}",
        quiet_registry().image("refused/digest"),
        "ab".repeat(32)
    );
    let line = refused(&image, dir);
    assert!(
        line.contains("digest"),
        "error should name the digest: {line}"
    );
}

// ------------------------------------------------------------------ 4. interrupted push

/// Writes `len` bytes of noise to `path` in 1 MiB pieces.
fn write_noise(path: &Path, len: usize, seed: u64) {
    let mut file = fs::File::create(path).unwrap();
    let piece = 1 << 20;
    for i in 0..len.div_ceil(piece) {
        let n = piece.min(len - i * piece);
        file.write_all(&noise(n, seed.wrapping_add(i as u64 * 7919)))
            .unwrap();
    }
}

/// busybox pulled with -g, plus a committed file of `mib` MiB of noise.
fn big_layer_dir(mib: usize, seed: u64) -> (TempDir, PathBuf) {
    let (tmp, dir) = pull_git(&f().image("test/busybox:oci"), &[]);
    write_noise(&dir.join("big.bin"), mib << 20, seed);
    commit(&dir, "a big file");
    (tmp, dir)
}

#[test]
fn interrupted_push_leaves_no_tag_and_a_rerun_completes() {
    let mut reg = Registry::start(Mode::Plain);
    let (_tmp, dir) = big_layer_dir(48, 17);
    let repo = "interrupted/big";
    let image = reg.image(&format!("{repo}:1"));

    let mark = reg.log_mark();
    let mut child = Command::new(common::barge_path())
        .args(["push", &image, "-r", p(&dir)])
        .env("DOCKER_CONFIG", dir.join(".no-config"))
        .env("HOME", dir.join(".no-config"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn barge push");
    // Wait until a chunk of the big layer has arrived, then kill the registry.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let started = repo_requests(&reg, mark, repo)
            .iter()
            .any(|a| a.method == "PATCH");
        if started {
            break;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "no PATCH seen before barge ended:\n{}\n{}\n{:?}",
                stdout(&out),
                String::from_utf8_lossy(&out.stderr),
                reg.access_log_since(mark)
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    reg.stop();
    let stopped_at = Instant::now();
    let out = child.wait_with_output().unwrap();
    let failed_after = stopped_at.elapsed();
    let seen = reg.access_log_since(mark);
    assert!(
        !seen.iter().any(|a| a.path.contains("/manifests/")),
        "the push finished before the registry was stopped; make the layer bigger: {seen:?}"
    );
    let line = assert_clean_failure(&out, &[]);
    eprintln!("interrupted push failed after {failed_after:?}: {line}");
    // The base layer (streamed from the fixture registry) arrived before the big one.
    let arrived = uploaded_to(&reg, mark, repo);
    assert!(
        !arrived.is_empty(),
        "nothing arrived before the stop: {seen:?}"
    );

    // The tag does not exist.
    reg.restart();
    let skopeo = Command::new("skopeo")
        .arg("inspect")
        .args(skopeo_args(&reg))
        .arg(format!("docker://{image}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !skopeo.status.success(),
        "the tag exists after a failed push"
    );
    let tmp = TempDir::new("pull-missing");
    let out = barge(&["pull", &image, "-r", p(&tmp.join("rootfs"))]);
    let line = assert_clean_failure(&out, &[]);
    assert!(
        line.to_lowercase().contains("manifest unknown") || line.contains("not found"),
        "pull of the missing tag: {line}"
    );

    // The re-run completes without re-sending what arrived, and pulls back as DIR.
    let mark = reg.log_mark();
    let out = push(&image, &dir, &[]);
    assert_success(&out);
    let resent: Vec<String> = uploaded_to(&reg, mark, repo)
        .intersection(&arrived)
        .cloned()
        .collect();
    assert!(resent.is_empty(), "re-run uploaded again: {resent:?}");
    // Layers have a line each (the config, sent early with the small blobs, has none).
    let config = config_digest(&skopeo_manifest(&reg, &format!("{repo}:1")).1);
    for d in arrived.iter().filter(|d| **d != config) {
        assert!(
            stdout(&out)
                .lines()
                .any(|l| l.contains(d.as_str()) && l.contains("(already pushed)")),
            "{d} not reported as already pushed:\n{}",
            stdout(&out)
        );
    }
    let digest = done_digest(&out, &image);
    let (seen, _) = skopeo_manifest(&reg, &format!("{repo}:1"));
    assert_eq!(seen, digest);
    tree::assert_same_tree(&snapshot(&dir), &barge_pull_tree(&image, &[]));
}

// ------------------------------------------------------------------ 5. memory

/// Peak RSS in KiB of `barge ARGS`, measured by GNU time; asserts success.
fn peak_rss_kib(args: &[&str]) -> (u64, Output) {
    require_tool("time");
    let home = TempDir::new("rss-home");
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(common::barge_path())
        .args(args)
        .env("DOCKER_CONFIG", home.path())
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .expect("run /usr/bin/time");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kib = stderr
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no %M line from GNU time:\n{stderr}"));
    (kib, out)
}

#[test]
#[ignore = "slow: run with --ignored"]
fn push_of_a_200_mib_layer_stays_under_32_mib_rss() {
    let reg = Registry::start(Mode::Plain);
    let other = Registry::start(Mode::Plain);
    let (_tmp, dir) = pull_git(&f().image("test/busybox:oci"), &[]);
    write_noise(&dir.join("big.bin"), 200 << 20, 99);
    let t0 = Instant::now();
    commit(&dir, "200 MiB of noise");
    let committed = t0.elapsed();

    // From barge's blob store.
    let image = reg.image("memory/big:1");
    let t1 = Instant::now();
    let (kib, out) = peak_rss_kib(&["push", "-q", &image, "-r", p(&dir)]);
    let pushed = t1.elapsed();
    assert_success(&out);
    eprintln!(
        "200 MiB layer: commit {committed:?}; push from the blob store {pushed:?}, \
         peak RSS {kib} KiB ({:.1} MiB)",
        kib as f64 / 1024.0
    );
    assert!(kib <= 32 * 1024, "peak RSS {kib} KiB > 32 MiB");

    // Streamed from one registry into another.
    let (_tmp2, dir2) = pull_git(&image, &[]);
    let image2 = other.image("memory/streamed:1");
    let t2 = Instant::now();
    let (kib2, out) = peak_rss_kib(&["push", "-q", &image2, "-r", p(&dir2)]);
    let streamed = t2.elapsed();
    assert_success(&out);
    eprintln!(
        "200 MiB layer streamed across registries: {streamed:?}, peak RSS {kib2} KiB ({:.1} MiB)",
        kib2 as f64 / 1024.0
    );
    assert!(
        kib2 <= 32 * 1024,
        "peak RSS {kib2} KiB > 32 MiB while streaming"
    );
    let (d1, _) = skopeo_manifest(&reg, "memory/big:1");
    let (d2, _) = skopeo_manifest(&other, "memory/streamed:1");
    assert_eq!(d1, d2, "the streamed copy is another image");
}
