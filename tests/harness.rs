//! Self-tests of the integration-test harness (registry modes, token issuer, fixtures,
//! tree snapshots) against the real tools only — no barge involved, so these must pass
//! before any barge test can mean anything.

mod common;

use common::fixtures::{self, Fixtures, Layout, TarBuilder, OCI_INDEX};
use common::registry::{Mode, Registry};
use common::token::{PASS, USER};
use common::tree::{self, snapshot};
use common::{assert_success, run, sha256_hex, TempDir};
use std::fs;
use std::process::Command;

fn skopeo_inspect(reg: &Registry, image: &str, creds: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw"]);
    if reg.mode == Mode::TlsBasic {
        cmd.arg(format!(
            "--cert-dir={}",
            reg.cert_dir.as_ref().unwrap().display()
        ));
    } else {
        cmd.arg("--tls-verify=false");
    }
    if let Some(c) = creds {
        cmd.arg(format!("--creds={c}"));
    }
    cmd.arg(format!("docker://{}", reg.image(image)));
    cmd.output().expect("run skopeo")
}

#[test]
fn plain_registry_starts_stops_and_restarts() {
    let mut reg = Registry::start(Mode::Plain);
    assert_eq!(reg.curl("/v2/", &[]).0, 200);
    reg.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", reg.port)).is_err());
    reg.restart();
    assert_eq!(reg.curl("/v2/", &[]).0, 200);
    assert!(reg.log().contains("listening on"), "log:\n{}", reg.log());
}

#[test]
fn registry_access_log_shows_uploads() {
    let reg = Registry::start(Mode::Plain);
    let f = Fixtures::get();
    let mark = reg.log_mark();
    fixtures::push(&reg, &f.layout, "busybox", "test/a:1", false);
    let up = reg.uploaded_blobs_since(mark);
    let m = f.layout.manifest("busybox");
    let layers: &Vec<tinyjson::JsonValue> = m["layers"].get().unwrap();
    let layer = fixtures::str_of(&layers[0]["digest"]);
    let config = fixtures::str_of(&m["config"]["digest"]);
    assert!(
        up.contains(&layer) && up.contains(&config),
        "uploads: {up:?}"
    );
    let mark = reg.log_mark();
    fixtures::push(&reg, &f.layout, "busybox", "test/a:2", false);
    assert!(
        reg.uploaded_blobs_since(mark).is_empty(),
        "second push uploaded again"
    );
    let mark = reg.log_mark();
    fixtures::push(&reg, &f.layout, "busybox", "test/b:1", false);
    let again = reg.uploaded_blobs_since(mark);
    let mounted = reg.mounted_blobs_since(mark);
    assert!(
        !again.contains(&layer) || mounted.is_empty(),
        "{again:?} {mounted:?}"
    );
    assert!(reg
        .access_log()
        .iter()
        .any(|a| a.method == "PUT" && a.path == "/v2/test/b/manifests/1"));
}

#[test]
fn tls_basic_registry_requires_ca_and_password() {
    let reg = Registry::start(Mode::TlsBasic);
    let ca = reg.ca_file.clone().unwrap();
    assert_eq!(reg.curl("/v2/", &[]).0, 200);
    let wrong = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&ca)
        .args(["-u", "tester:wrong"])
        .arg(format!("{}/v2/", reg.url()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&wrong.stdout), "401");
    let nocacert = Command::new("curl")
        .args(["-s", &format!("{}/v2/", reg.url())])
        .output()
        .unwrap();
    assert_eq!(
        nocacert.status.code(),
        Some(60),
        "curl without the CA must fail verification"
    );
    let f = Fixtures::get();
    fixtures::push(&reg, &f.layout, "busybox", "private/busybox:1", false);
    let out = skopeo_inspect(&reg, "private/busybox:1", Some(&format!("{USER}:{PASS}")));
    assert_success(&out);
    assert!(
        !skopeo_inspect(&reg, "private/busybox:1", Some("tester:nope"))
            .status
            .success()
    );
}

#[test]
fn token_registry_issues_working_tokens() {
    let reg = Registry::start(Mode::Token);
    let issuer = reg.token.as_ref().unwrap();
    let (code, _) = reg.curl("/v2/", &[]);
    assert_eq!(code, 401);
    let hdrs = run(Command::new("curl").args([
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("{}/v2/", reg.url()),
    ]));
    let hdrs = String::from_utf8_lossy(&hdrs).to_lowercase();
    assert!(hdrs.contains("www-authenticate: bearer realm=\""), "{hdrs}");
    let f = Fixtures::get();
    fixtures::push(&reg, &f.layout, "busybox", "test/busybox:1", false);
    fixtures::push(&reg, &f.layout, "busybox", "private/busybox:1", false);
    let pushed = issuer.requests();
    assert!(
        pushed.iter().any(|r| r.account.as_deref() == Some(USER)),
        "{pushed:?}"
    );
    // Anonymous pull works, but not on private/.
    let out = skopeo_inspect(&reg, "test/busybox:1", None);
    assert_success(&out);
    assert!(!skopeo_inspect(&reg, "private/busybox:1", None)
        .status
        .success());
    let out = skopeo_inspect(&reg, "private/busybox:1", Some(&format!("{USER}:{PASS}")));
    assert_success(&out);
    // Wrong password: the issuer says 401.
    assert!(
        !skopeo_inspect(&reg, "test/busybox:1", Some("tester:wrong"))
            .status
            .success()
    );
    assert!(issuer.requests().iter().any(|r| r.status == 401));
    // A token for push is refused to anonymous users: the anonymous token has pull only.
    let tok = run(Command::new("curl").args([
        "-s",
        &format!(
            "{}?service={}&scope=repository:test/busybox:pull,push",
            issuer.realm(),
            common::registry::SERVICE
        ),
    ]));
    let tok = fixtures::parse_json(&tok);
    let jwt = fixtures::str_of(&tok["token"]);
    let claims = jwt.split('.').nth(1).unwrap();
    assert!(!claims.is_empty());
    let n = issuer.request_count();
    assert!(n >= 4, "issuer saw {n} requests");
}

#[test]
fn fixtures_have_the_intended_content() {
    let f = Fixtures::get();
    let rich = f.expected("rich");
    let get = |p: &str| {
        rich.get(p)
            .unwrap_or_else(|| panic!("rich lacks {p}"))
            .clone()
    };
    assert!(!rich.contains_key("wh/file-gone") && !rich.contains_key("wh/dir-gone"));
    assert!(rich.contains_key("wh/kept"));
    let opq: Vec<&String> = rich.keys().filter(|k| k.starts_with("opq/")).collect();
    assert_eq!(opq, ["opq/new1", "opq/newdir", "opq/newdir/new2"]);
    assert_eq!(get("opq").mode, 0o750);
    assert_eq!(get("replace/file-becomes-dir").kind, "dir");
    assert_eq!(get("replace/dir-becomes-link").kind, "symlink");
    assert_eq!(get("replace/link-becomes-file").kind, "file");
    assert_eq!(get("usr/bin/tool").mode, 0o4755);
    assert_eq!(get("usr/bin/sgid").mode, 0o2755);
    assert_eq!(get("tmp").mode, 0o1777);
    assert_eq!(
        get("usr/bin/tool").hardlink_group.as_deref(),
        Some("usr/bin/tool")
    );
    assert_eq!(
        get("usr/bin/tool-hardlink").hardlink_group.as_deref(),
        Some("usr/bin/tool")
    );
    assert_eq!(
        get("layer2/h2").hardlink_group.as_deref(),
        Some("layer2/h1")
    );
    assert_eq!(
        get("usr/bin/abs-link").link.as_deref(),
        Some("/usr/bin/tool")
    );
    assert!(!rich.contains_key("usr/bin/rel-link"));
    assert_eq!(get("run/fifo").kind, "fifo");
    assert_eq!(get("dev/null-ish").kind, "char");
    assert_eq!(
        (get("home/app/notes.txt").uid, get("home/app/notes.txt").gid),
        (1000, 1000)
    );
    assert_eq!(
        (get("etc/group-owned").uid, get("etc/group-owned").gid),
        (0, 42)
    );
    assert_eq!((get("wh/kept").uid, get("wh/kept").gid), (1000, 42));
    assert!(
        get("etc/hostname").xattrs.contains_key("user.barge.test"),
        "umoci kept no xattr"
    );
    assert!(get("layer2/pax-xattr").xattrs.contains_key("user.origin"));
    assert_eq!(get("srv/shared/added").mtime, fixtures::EPOCH + 7201);
    assert_eq!(get("opq").mtime, fixtures::EPOCH + 3601);
    assert_eq!(
        (get("names/big-ids").uid, get("names/big-ids").gid),
        (3_000_000, 3_000_001)
    );
    assert!(rich.contains_key("names/héllo wörld 日本語.txt"));
    assert!(rich.contains_key(&format!("layer2/{}", "x".repeat(200))));
    assert!(!rich.contains_key("layer2/pax-path-placeholder"));
    assert!(rich.contains_key(&format!("layer2/{}/{}", "p".repeat(90), "q".repeat(60))));
    // umoci restores a directory's mtime after changing its content.
    assert_eq!(
        get("replace").mtime,
        get("replace/link-becomes-file-target").mtime - 35
    );

    let bb = f.expected("busybox");
    assert_eq!(bb["bin/busybox"].kind, "file");
    assert_eq!(bb["bin/sh"].link.as_deref(), Some("/bin/busybox"));
    assert!(bb.len() > 200, "busybox has {} paths", bb.len());

    let quirk = f.expected("quirk");
    let etc: Vec<&String> = quirk.keys().filter(|k| k.starts_with("etc/")).collect();
    assert_eq!(etc, ["etc/group", "etc/passwd"]);

    tree::assert_same_tree(&rich, &f.expected("rich-tar"));
    let arm = f.expected("arm64");
    assert_eq!(arm["etc/platform"].size, 6);

    // What the registry serves: the index, and the v2s2 form.
    let (code, body) = f.registry.curl(
        "/v2/test/multi/manifests/1",
        &["-H", &format!("Accept: {OCI_INDEX}")],
    );
    assert_eq!(code, 200);
    assert_eq!(
        format!("sha256:{}", sha256_hex(&body)),
        f.layout.digest("multi")
    );
    let (code, body) = f.registry.curl(
        "/v2/test/rich/manifests/v2s2",
        &[
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
        ],
    );
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body)
        .contains("application/vnd.docker.image.rootfs.diff.tar.gzip"));
    // Broken images are served as made.
    let m = f.layout.manifest("truncated");
    let layers: &Vec<tinyjson::JsonValue> = m["layers"].get().unwrap();
    let last = fixtures::str_of(&layers.last().unwrap()["digest"]);
    assert!(f.registry.blob_data_path(&last).is_file());
    let (code, body) = f
        .registry
        .curl(&format!("/v2/test/truncated/blobs/{last}"), &[]);
    assert_eq!(code, 200);
    assert_eq!(format!("sha256:{}", sha256_hex(&body)), last);
    let (code, _) = f.registry.curl(
        "/v2/test/zstd/manifests/1",
        &["-H", &format!("Accept: {}", fixtures::OCI_MANIFEST)],
    );
    assert_eq!(code, 200);
}

#[test]
fn tar_builder_writes_tars_gnu_tar_reads() {
    let dir = TempDir::new("tarbuilder");
    let mut t = TarBuilder::new();
    t.dir("a/", 0o755)
        .file("a/f", 0o644, b"hello")
        .symlink("a/l", "f")
        .hardlink("a/h", "a/f");
    let long = format!("{}/{}", "d".repeat(120), "x".repeat(90));
    t.file(&long, 0o600, b"long");
    fs::write(dir.join("t.tar"), t.finish()).unwrap();
    fs::create_dir(dir.join("out")).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(dir.join("t.tar"))
        .arg("-C")
        .arg(dir.join("out")));
    let tr = snapshot(&dir.join("out"));
    assert_eq!(tr["a/l"].link.as_deref(), Some("f"));
    assert_eq!(tr["a/h"].hardlink_group.as_deref(), Some("a/f"));
    assert_eq!(tr[&long].size, 4);
    assert_eq!(tr["a/f"].mtime, fixtures::EPOCH);
}

#[test]
fn tree_diff_reports_differences() {
    let dir = TempDir::new("treediff");
    fs::create_dir(dir.join("x")).unwrap();
    fs::write(dir.join("x/f"), b"1").unwrap();
    let a = snapshot(dir.path());
    fs::write(dir.join("x/f"), b"2").unwrap();
    fs::write(dir.join("x/g"), b"").unwrap();
    let b = snapshot(dir.path());
    let d = tree::diff(&a, &b);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(
        d[0].starts_with("different x/f") && d[1].starts_with("extra     x/g"),
        "{d:?}"
    );
    let _ = Layout::init; // keep the import used in this binary
}
