//! Integration tests of `barge pull IMAGE --bundle DIR`: the bundles run under real
//! runc (as root and rootless as `nobody`) and crun, their config.json agrees with
//! `umoci unpack`'s on the same image, names are looked up in the image's own
//! /etc/passwd (never outside the tree), and a failed pull leaves DIR as it was.
//!
//! Images: busybox-static fixtures (tests/common/fixtures.rs) with a config giving
//! Entrypoint/Cmd/Env/WorkingDir/User; the "debian-like" one adds a Debian
//! `/etc/os-release` layer to busybox (not the 60 MiB debian image).

mod common;

use common::fixtures::{self, jstr, obj, push, Fixtures, TarBuilder};
use common::{assert_success, barge, list_dir, require_tool, TempDir};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use tinyjson::JsonValue;

const OS_RELEASE: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n";
const ECHO_OUT: &str = "hello from barge in /home/app as 0:0\n";
const NOBODY: u32 = 65534;

/// The derived images, built once per test binary and pushed to the shared registry.
struct Images {
    /// Where the hostile image's passwd symlink points (outside every tree).
    _outside: TempDir,
}

fn f() -> &'static Fixtures {
    Fixtures::get()
}

fn img(repo_tag: &str) -> String {
    f().image(repo_tag)
}

/// `config.KEY = VALUE` for each pair.
fn set_config(config: &mut JsonValue, fields: &[(&str, JsonValue)]) {
    let top: &mut HashMap<String, JsonValue> = config.get_mut().expect("config object");
    let c = top.entry("config".into()).or_insert_with(|| obj(&[]));
    if !c.is_object() {
        *c = obj(&[]);
    }
    let m: &mut HashMap<String, JsonValue> = c.get_mut().expect("config.config object");
    for (k, v) in fields {
        m.insert(k.to_string(), v.clone());
    }
}

fn strs(items: &[&str]) -> JsonValue {
    JsonValue::Array(items.iter().map(|s| jstr(s)).collect())
}

/// `busybox` (+ a layer) with config `fields`, as tag `tag`, pushed as `bundle/TAG:1`.
fn derive(tag: &str, layer: Option<Vec<u8>>, fields: &[(&str, JsonValue)]) {
    let l = &f().layout;
    let base = match layer {
        Some(tar) => {
            let base = format!("{tag}-base");
            l.add_layer("busybox", Some(&base), &tar);
            base
        }
        None => "busybox".to_string(),
    };
    l.derive(&base, tag, |_, _, config| set_config(config, fields));
    push(&f().registry, l, tag, &format!("bundle/{tag}:1"), false);
}

fn images() -> &'static Images {
    static I: OnceLock<Images> = OnceLock::new();
    I.get_or_init(|| {
        derive(
            "echo",
            None,
            &[
                ("Entrypoint", strs(&["/bin/sh", "-c"])),
                (
                    "Cmd",
                    strs(&["echo \"hello from $GREETING in $(pwd) as $(id -u):$(id -g)\""]),
                ),
                ("Env", strs(&["GREETING=barge", "PATH=/bin:/usr/bin"])),
                ("WorkingDir", jstr("/home/app")),
            ],
        );
        let mut t = TarBuilder::new();
        t.dir("etc/", 0o755)
            .file("etc/os-release", 0o644, OS_RELEASE.as_bytes());
        derive(
            "os",
            Some(t.finish()),
            &[("Cmd", strs(&["cat", "/etc/os-release"])), ("User", jstr("app"))],
        );
        let mut t = TarBuilder::new();
        t.dir("etc/", 0o755)
            .file(
                "etc/passwd",
                0o644,
                b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\nsvc:x:4321:4322:svc:/srv:/bin/sh\n",
            )
            .file(
                "etc/group",
                0o644,
                b"root:x:0:\nnogroup:x:65534:\nsvc:x:4322:\nextra:x:777:svc,other\nmore:x:778:svc\n",
            );
        let users = t.finish();
        let cmd = strs(&["/bin/sh", "-c", "id -u; id -g; id -G; echo $HOME"]);
        derive(
            "svc",
            Some(users.clone()),
            &[("Cmd", cmd.clone()), ("User", jstr("svc"))],
        );
        derive(
            "nobody",
            Some(users),
            &[("Cmd", cmd), ("User", jstr("nobody"))],
        );
        // Hostile: /etc/passwd points out of the tree.
        let outside = TempDir::new("outside");
        let evil = outside.join("passwd");
        fs::write(&evil, b"evil:x:4242:4242::/:/bin/sh\n").unwrap();
        let mut t = TarBuilder::new();
        t.dir("etc/", 0o755)
            .symlink("etc/passwd", evil.to_str().unwrap());
        derive(
            "evil",
            Some(t.finish()),
            &[("Cmd", strs(&["id"])), ("User", jstr("evil"))],
        );
        let mut t = TarBuilder::new();
        t.dir("etc/", 0o755).symlink("etc/passwd", "/etc/shadow");
        derive(
            "shadow",
            Some(t.finish()),
            &[("Cmd", strs(&["id"])), ("User", jstr("root"))],
        );
        Images { _outside: outside }
    })
}

/// Pulls `bundle/TAG:1` as a bundle into a new `DIR` (= TMP/b); asserts success.
fn pull_bundle(tag: &str, extra: &[&str]) -> (TempDir, PathBuf) {
    images();
    let tmp = TempDir::new("bundle");
    let dir = tmp.join("b");
    let image = img(&format!("bundle/{tag}:1"));
    let mut args = vec!["pull", "-q", &image, "--bundle", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    assert_success(&barge(&args));
    assert_eq!(list_dir(tmp.path()), ["b"], "leftovers beside the bundle");
    (tmp, dir)
}

fn read_json(p: &Path) -> JsonValue {
    fixtures::parse_json(&fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

/// `runc run` (as root) of a bundle; returns its stdout.
fn runc_run(bundle: &Path) -> String {
    require_tool("runc");
    let id = unique_id("runc");
    let out = Command::new("runc")
        .args(["run", "-b"])
        .arg(bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .output()
        .expect("run runc");
    let _ = Command::new("runc").args(["delete", "-f", &id]).output();
    assert_success(&out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn unique_id(what: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("barge-{what}-{}-{n}", std::process::id())
}

// ------------------------------------------------------------------ runtimes

#[test]
fn runc_runs_the_bundle_and_its_cmd_echoes() {
    let (_t, dir) = pull_bundle("echo", &[]);
    let mut names = list_dir(&dir);
    names.sort();
    assert_eq!(
        names,
        [
            "config.json",
            "image-config.json",
            "image-manifest.json",
            "rootfs"
        ]
    );
    // The kept config and manifest are the image's, byte for byte.
    let manifest = fs::read(dir.join("image-manifest.json")).unwrap();
    assert_eq!(
        format!("sha256:{}", common::sha256_hex(&manifest)),
        f().layout.digest("echo")
    );
    let config = fs::read(dir.join("image-config.json")).unwrap();
    let m = fixtures::parse_json(&manifest);
    assert_eq!(
        format!("sha256:{}", common::sha256_hex(&config)),
        fixtures::str_of(&m["config"]["digest"])
    );
    let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(""), mode("config.json")), (0o755, 0o644));
    assert_eq!(runc_run(&dir), ECHO_OUT);
}

#[test]
fn debian_like_bundle_runs_cat_os_release_as_its_user() {
    let (_t, dir) = pull_bundle("os", &[]);
    let cfg = read_json(&dir.join("config.json"));
    assert_eq!(num(&cfg["process"]["user"]["uid"]), 1000);
    assert_eq!(runc_run(&dir), OS_RELEASE);
}

/// crun refuses this host's hybrid cgroup v1/v2 layout ("cgroups in hybrid mode not
/// supported"), so it runs in a private mount namespace whose /sys/fs/cgroup is the
/// cgroup2 hierarchy alone, without cgroup management (see /work/shared/FACTS.md).
#[test]
fn crun_runs_the_bundle() {
    require_tool("crun");
    require_tool("unshare");
    let (_t, dir) = pull_bundle("echo", &[]);
    let id = unique_id("crun");
    let crun = |args: &str| {
        let script = format!(
            "mount -t cgroup2 none /sys/fs/cgroup && exec crun --cgroup-manager=disabled {args} \"$0\""
        );
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .arg(&id)
            .stdin(Stdio::null())
            .output()
            .expect("run crun")
    };
    let out = crun(&format!("run -b '{}'", dir.display()));
    let _ = crun("delete -f");
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), ECHO_OUT);
}

/// Pull and run as `nobody`, as an unprivileged user does: `--rootless` maps the
/// container's root to nobody, and runc runs it without any privilege.
#[test]
fn rootless_bundle_runs_under_runc_as_nobody() {
    require_tool("setpriv");
    require_tool("runc");
    images();
    let tmp = TempDir::new("rootless");
    std::os::unix::fs::chown(tmp.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // The test binary's directory may not be open to nobody: run a copy.
    let bin = tmp.join("barge");
    fs::copy(common::barge_path(), &bin).unwrap();
    let dir = tmp.join("b");
    let image = img("bundle/echo:1");
    let out = as_nobody(&tmp, &bin)
        .args(["pull", "-q", &image, "--rootless", "--bundle"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_success(&out);
    let cfg = read_json(&dir.join("config.json"));
    let map = &cfg["linux"]["uidMappings"][0];
    assert_eq!(
        (num(&map["hostID"]), num(&map["containerID"])),
        (NOBODY as u64, 0)
    );
    let state = tmp.join("runc-state");
    let run_dir = tmp.join("xdg");
    for d in [&state, &run_dir] {
        fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let id = unique_id("rootless");
    let out = as_nobody(&tmp, Path::new("runc"))
        .env("XDG_RUNTIME_DIR", &run_dir)
        .arg("--root")
        .arg(&state)
        .args(["run", "-b"])
        .arg(&dir)
        .arg(&id)
        .output()
        .unwrap();
    let _ = as_nobody(&tmp, Path::new("runc"))
        .env("XDG_RUNTIME_DIR", &run_dir)
        .arg("--root")
        .arg(&state)
        .args(["delete", "-f", &id])
        .output();
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), ECHO_OUT);
}

/// `setpriv` running `prog` as nobody:nogroup with no supplementary groups.
fn as_nobody(home: &TempDir, prog: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(prog)
        .env("HOME", home.path())
        .env("DOCKER_CONFIG", home.path())
        .stdin(Stdio::null());
    cmd
}

#[test]
fn git_bundle_keeps_the_repository_in_rootfs_and_runs() {
    let (_t, dir) = pull_bundle("echo", &["-g"]);
    assert!(dir.join("rootfs/.git").is_dir());
    assert!(!dir.join(".git").exists());
    let out = barge(&["status", "-q", "-r", dir.join("rootfs").to_str().unwrap()]);
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(runc_run(&dir), ECHO_OUT);
}

/// An image without Entrypoint and Cmd gets empty args (runc says why it cannot run
/// it), and pull says so.
#[test]
fn image_without_a_command_gets_a_note_and_runc_refuses_it() {
    require_tool("runc");
    let tmp = TempDir::new("nocmd");
    let dir = tmp.join("b");
    let image = img("test/busybox:oci");
    let out = barge(&["pull", &image, "--bundle", dir.to_str().unwrap()]);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("no Entrypoint or Cmd"), "{stdout}");
    assert!(stdout.contains("Done. Bundle of"), "{stdout}");
    let cfg = read_json(&dir.join("config.json"));
    assert_eq!(cfg["process"]["args"], JsonValue::Array(Vec::new()));
    let id = unique_id("nocmd");
    let out = Command::new("runc")
        .args(["run", "-b"])
        .arg(&dir)
        .arg(&id)
        .stdin(Stdio::null())
        .output()
        .expect("run runc");
    let _ = Command::new("runc").args(["delete", "-f", &id]).output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("args must not be empty"),
        "{err}"
    );
}

// ------------------------------------------------------------------ users

#[test]
fn user_names_come_from_the_images_passwd_and_group() {
    let (_t, dir) = pull_bundle("svc", &[]);
    let cfg = read_json(&dir.join("config.json"));
    let user = &cfg["process"]["user"];
    assert_eq!((num(&user["uid"]), num(&user["gid"])), (4321, 4322));
    assert_eq!(gids(user), [777, 778]);
    assert_eq!(runc_run(&dir), "4321\n4322\n4322 777 778\n/srv\n");
    let (_t, dir) = pull_bundle("nobody", &[]);
    let cfg = read_json(&dir.join("config.json"));
    let user = &cfg["process"]["user"];
    assert_eq!((num(&user["uid"]), num(&user["gid"])), (65534, 65534));
    assert_eq!(runc_run(&dir), "65534\n65534\n65534\n/nonexistent\n");
}

/// A passwd symlink to a file outside the tree (absolute, or the host's /etc/shadow)
/// is resolved inside the tree, where it names nothing: the user is not found, the
/// pull fails, and DIR is not created.
#[test]
fn passwd_symlinks_out_of_the_tree_are_not_followed() {
    images();
    for (tag, user) in [("evil", "evil"), ("shadow", "root")] {
        let tmp = TempDir::new("hostile");
        let dir = tmp.join("b");
        let image = img(&format!("bundle/{tag}:1"));
        let out = barge(&["pull", "-q", &image, "--bundle", dir.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{tag}: pull succeeded");
        assert!(
            err.contains(&format!("no user \"{user}\" in the image's /etc/passwd")),
            "{tag}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{tag}: {err}");
        assert!(list_dir(tmp.path()).is_empty(), "{tag}: leftovers");
    }
}

#[test]
fn failed_pull_leaves_an_empty_bundle_dir_empty() {
    images();
    let tmp = TempDir::new("hostile");
    let dir = tmp.join("b");
    fs::create_dir(&dir).unwrap();
    let image = img("bundle/evil:1");
    let out = barge(&["pull", "-q", &image, "--bundle", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(list_dir(&dir).is_empty(), "{:?}", list_dir(&dir));
    // And an empty one is filled.
    let image = img("bundle/echo:1");
    assert_success(&barge(&[
        "pull",
        "-q",
        &image,
        "--bundle",
        dir.to_str().unwrap(),
    ]));
    assert_eq!(runc_run(&dir), ECHO_OUT);
}

// ------------------------------------------------------------------ against umoci

/// Process fields (args, env, cwd, user) equal `umoci unpack`'s for the same image
/// (umoci writes `terminal: true`; barge false, as a bundle is run from scripts).
#[test]
fn process_fields_match_umoci_unpack() {
    images();
    for tag in ["echo", "os", "svc", "nobody"] {
        let (_t, dir) = pull_bundle(tag, &[]);
        let ours = read_json(&dir.join("config.json"));
        let tmp = TempDir::new("umoci");
        let theirs_dir = tmp.join("u");
        fixtures::umoci(&[
            "unpack",
            "--image",
            &f().layout.image(tag),
            theirs_dir.to_str().unwrap(),
        ]);
        let theirs = read_json(&theirs_dir.join("config.json"));
        for field in ["args", "env", "cwd"] {
            assert_eq!(
                ours["process"][field], theirs["process"][field],
                "{tag}: process.{field}"
            );
        }
        let (a, b) = (&ours["process"]["user"], &theirs["process"]["user"]);
        assert_eq!(num(&a["uid"]), num(&b["uid"]), "{tag}: uid");
        assert_eq!(num(&a["gid"]), num(&b["gid"]), "{tag}: gid");
        assert_eq!(gids(a), gids(b), "{tag}: additionalGids");
        assert_eq!(ours["root"]["path"], theirs["root"]["path"], "{tag}");
        assert_eq!(
            ours["process"]["terminal"],
            JsonValue::Boolean(false),
            "{tag}"
        );
    }
}

fn num(v: &JsonValue) -> u64 {
    match v {
        JsonValue::Number(n) => *n as u64,
        other => panic!("expected a number, got {other:?}"),
    }
}

/// A user's `additionalGids` (absent: empty, as umoci leaves an empty list out).
fn gids(user: &JsonValue) -> Vec<u64> {
    let m: &HashMap<String, JsonValue> = user.get().expect("user object");
    match m.get("additionalGids") {
        None | Some(JsonValue::Null) => Vec::new(),
        Some(JsonValue::Array(items)) => items.iter().map(num).collect(),
        Some(other) => panic!("expected an array, got {other:?}"),
    }
}
