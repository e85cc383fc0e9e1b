//! Integration tests of skopeo's transports in barge (`oci:` layouts and `docker://`
//! registries), `barge copy` and `barge inspect`, against a real docker-registry and
//! real skopeo and umoci: layouts skopeo and umoci write are pulled to the tree
//! `umoci unpack` makes; what barge writes is read by skopeo and umoci; copies keep
//! manifest and index digests; same-registry copies mount; a pull from a layout
//! works with no network at all (`unshare -n`).

mod common;

use common::fixtures::{parse_json, str_of, Fixtures, Layout};
use common::tree::{self, snapshot};
use common::{assert_clean_failure, assert_success, barge, barge_path, require_tool, run, TempDir};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use tinyjson::JsonValue;

fn f() -> &'static Fixtures {
    Fixtures::get()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `barge ARGS`, asserting success; stdout.
fn ok(args: &[&str]) -> String {
    let out = barge(args);
    assert_success(&out);
    stdout(&out)
}

/// `oci:DIR:REF`.
fn oci(dir: &Path, reference: &str) -> String {
    format!("oci:{}:{reference}", dir.display())
}

/// `skopeo ARGS` (with the registry's source options first when `reg`), stdout.
fn skopeo(args: &[&str], reg_args: bool) -> Vec<u8> {
    require_tool("skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy").arg(args[0]);
    if reg_args {
        cmd.args(
            f().registry
                .skopeo_src_args()
                .iter()
                .map(|a| a.replace("--src-", "--")),
        );
    }
    cmd.args(&args[1..]);
    run(&mut cmd)
}

/// The digest `skopeo inspect --raw` bytes of a registry image have.
fn registry_digest(repo_tag: &str) -> String {
    let raw = skopeo(
        &[
            "inspect",
            "--raw",
            &format!("docker://{}", f().image(repo_tag)),
        ],
        true,
    );
    sha256(&raw)
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The digest of `reference`'s entry in a layout's index.json.
fn layout_digest(dir: &Path, reference: &str) -> String {
    Layout {
        dir: dir.to_path_buf(),
    }
    .digest(reference)
}

/// `barge pull IMAGE -r TMP/rootfs`, compared with `umoci unpack` of fixture `tag`.
fn pull_matches(image: &str, tag: &str) {
    let tmp = TempDir::new("transports-pull");
    let dir = tmp.join("rootfs");
    ok(&["pull", "-q", image, "-r", p(&dir)]);
    tree::assert_same_tree(&f().expected(tag), &snapshot(&dir));
}

#[test]
fn layouts_written_by_umoci_pull_to_umoci_unpack_trees() {
    for tag in ["rich", "busybox"] {
        pull_matches(&oci(&f().layout.dir, tag), tag);
    }
}

#[test]
fn layouts_written_by_skopeo_pull_to_umoci_unpack_trees() {
    let tmp = TempDir::new("skopeo-layout");
    let dir = tmp.join("layout");
    for (repo_tag, tag) in [("test/rich:v2s2", "rich"), ("test/busybox:oci", "busybox")] {
        let src = format!("docker://{}", f().image(repo_tag));
        skopeo(&["copy", "-q", &src, &oci(&dir, tag)], true);
    }
    for tag in ["rich", "busybox"] {
        pull_matches(&oci(&dir, tag), tag);
    }
}

#[test]
fn registry_to_layout_to_registry_keeps_the_manifest_digest() {
    let tmp = TempDir::new("round-trip");
    let dir = tmp.join("usb");
    for (repo_tag, reference) in [("test/rich:v2s2", "v2s2"), ("test/rich:oci", "oci")] {
        let want = registry_digest(repo_tag);
        let out = ok(&["copy", &f().image(repo_tag), &oci(&dir, reference)]);
        assert!(out.contains(&format!("@{want}")), "{out}");
        assert_eq!(layout_digest(&dir, reference), want, "{repo_tag}");
        // Back into another repository: the same digest, and the same tree pulled.
        let back = f().image(&format!("roundtrip/rich:{reference}"));
        ok(&["copy", "-q", &oci(&dir, reference), &back]);
        assert_eq!(
            registry_digest(&format!("roundtrip/rich:{reference}")),
            want
        );
        pull_matches(&oci(&dir, reference), "rich");
    }
    // skopeo and umoci read what barge wrote (they read OCI manifests only: a Docker
    // schema2 image keeps its bytes and digest in barge's layout, which they skip).
    let want = registry_digest("test/rich:oci");
    let inspected = parse_json(&skopeo(&["inspect", &oci(&dir, "oci")], false));
    assert_eq!(str_of(&inspected["Digest"]), want);
    let written = Layout { dir: dir.clone() };
    tree::assert_same_tree(&f().expected("rich"), &written.unpack_tree("oci"));
    let again = tmp.join("again");
    skopeo(&["copy", "-q", &oci(&dir, "oci"), &oci(&again, "x")], false);
    assert_eq!(layout_digest(&again, "x"), want);
}

#[test]
fn copy_into_a_layout_adds_images_and_replaces_the_same_ref() {
    let tmp = TempDir::new("layout-add");
    let dir = tmp.join("layout");
    ok(&[
        "copy",
        "-q",
        &f().image("test/busybox:oci"),
        &oci(&dir, "a"),
    ]);
    ok(&["copy", "-q", &f().image("test/rich:oci"), &oci(&dir, "b")]);
    ok(&[
        "copy",
        "-q",
        &f().image("test/busybox:v2s2"),
        &oci(&dir, "a"),
    ]);
    let index = parse_json(&fs::read(dir.join("index.json")).unwrap());
    let entries: &Vec<JsonValue> = index["manifests"].get().unwrap();
    assert_eq!(entries.len(), 2, "{index:?}");
    assert_eq!(
        layout_digest(&dir, "a"),
        registry_digest("test/busybox:v2s2")
    );
    assert_eq!(layout_digest(&dir, "b"), registry_digest("test/rich:oci"));
    // No temporary files are left behind.
    for e in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert_eq!(name.len(), 64, "stray file {name}");
    }
    // The second copy of an image found every blob there.
    let out = ok(&["copy", &f().image("test/rich:oci"), &oci(&dir, "c")]);
    assert!(
        out.contains("(already there)") && !out.contains(" ... done\n"),
        "{out}"
    );
}

#[test]
fn copy_all_keeps_the_index_digest_and_every_platform() {
    let tmp = TempDir::new("copy-all");
    let dir = tmp.join("layout");
    let want = registry_digest("test/multi:1");
    ok(&[
        "copy",
        "-q",
        "--all",
        &f().image("test/multi:1"),
        &oci(&dir, "m"),
    ]);
    assert_eq!(layout_digest(&dir, "m"), want);
    let dst = f().image("copied/multi:1");
    ok(&["copy", "-q", "--all", &oci(&dir, "m"), &dst]);
    assert_eq!(registry_digest("copied/multi:1"), want);
    // skopeo copies the whole index out of barge's layout too.
    let out = tmp.join("out");
    skopeo(
        &["copy", "-q", "--all", &oci(&dir, "m"), &oci(&out, "m")],
        false,
    );
    assert_eq!(layout_digest(&out, "m"), want);
    // Without --all: the host's image, by its own digest.
    let one = tmp.join("one");
    ok(&[
        "copy",
        "-q",
        "--platform",
        "linux/amd64",
        &f().image("test/multi:1"),
        &oci(&one, "x"),
    ]);
    let index = parse_json(&skopeo(
        &[
            "inspect",
            "--raw",
            &format!("docker://{}", f().image("test/multi:1")),
        ],
        true,
    ));
    let entries: &Vec<JsonValue> = index["manifests"].get().unwrap();
    let amd64 = entries
        .iter()
        .find(|e| str_of(&e["platform"]["architecture"]) == "amd64")
        .expect("amd64 entry");
    assert_eq!(layout_digest(&one, "x"), str_of(&amd64["digest"]));
}

#[test]
fn same_registry_copy_mounts_blobs() {
    let reg = &f().registry;
    let mark = reg.log_mark();
    let out = ok(&[
        "copy",
        &f().image("test/busybox:oci"),
        &f().image("mounted/busybox:1"),
    ]);
    assert!(out.contains("(mounted)"), "{out}");
    // Only this repository's requests: other tests write to the registry meanwhile.
    let mine: Vec<_> = reg
        .access_log_since(mark)
        .into_iter()
        .filter(|a| a.path.starts_with("/v2/mounted/busybox/blobs/uploads/"))
        .collect();
    let mounted = mine
        .iter()
        .filter(|a| a.method == "POST" && a.status == 201);
    assert!(mounted.count() >= 2, "no mounts: {mine:?}");
    let uploaded = mine
        .iter()
        .filter(|a| a.method == "PUT" || a.method == "PATCH");
    assert_eq!(uploaded.count(), 0, "blobs were uploaded: {mine:?}");
    assert_eq!(
        registry_digest("mounted/busybox:1"),
        registry_digest("test/busybox:oci")
    );
}

#[test]
fn pull_from_a_layout_needs_no_network() {
    require_tool("unshare");
    let tmp = TempDir::new("offline");
    let dir = tmp.join("rootfs");
    let out = Command::new("unshare")
        .args(["-n", &barge_path(), "pull", "-q", "-g"])
        .arg(oci(&f().layout.dir, "busybox"))
        .arg("-r")
        .arg(&dir)
        .env("DOCKER_CONFIG", tmp.path())
        .output()
        .expect("run unshare");
    assert_success(&out);
    tree::assert_same_tree(&f().expected("busybox"), &snapshot(&dir));
    // The committed tree goes from there into another layout, still offline.
    let dst = tmp.join("out");
    let out = Command::new("unshare")
        .args(["-n", &barge_path(), "push", "-q", &oci(&dst, "b"), "-r"])
        .arg(&dir)
        .env("DOCKER_CONFIG", tmp.path())
        .output()
        .expect("run unshare");
    assert_success(&out);
    assert_eq!(
        layout_digest(&dst, "b"),
        layout_digest(&f().layout.dir, "busybox")
    );
}

#[test]
fn push_of_a_committed_tree_into_a_layout_is_read_by_umoci() {
    let tmp = TempDir::new("push-layout");
    let dir = tmp.join("rootfs");
    ok(&[
        "pull",
        "-q",
        "-g",
        &f().image("test/busybox:oci"),
        "-r",
        p(&dir),
    ]);
    fs::write(dir.join("etc/motd"), b"from a layout\n").unwrap();
    ok(&["commit", "-q", "-r", p(&dir), "-m", "motd"]);
    let layout = tmp.join("layout");
    let out = ok(&["push", &oci(&layout, "changed"), "-r", p(&dir)]);
    assert!(
        out.contains("Pushing 2 layers:") || out.contains("layers:"),
        "{out}"
    );
    let unpacked = Layout {
        dir: layout.clone(),
    }
    .unpack_tree("changed");
    tree::assert_same_tree(&unpacked, &snapshot(&dir));
}

#[test]
fn inspect_agrees_with_skopeo() {
    for repo_tag in ["test/rich:oci", "test/busybox:v2s2", "test/multi:1"] {
        let image = f().image(repo_tag);
        let docker = format!("docker://{image}");
        let raw = barge(&["inspect", "--raw", &image]);
        assert_success(&raw);
        assert_eq!(
            raw.stdout,
            skopeo(&["inspect", "--raw", &docker], true),
            "{repo_tag}"
        );
        let ours = parse_json(&ok(&["inspect", &image]).into_bytes());
        let theirs = parse_json(&skopeo(&["inspect", &docker], true));
        // Every field skopeo prints (this skopeo has no LayersData), the same.
        let JsonValue::Object(fields) = &theirs else {
            panic!("skopeo inspect printed no object");
        };
        assert!(fields.len() >= 10, "{theirs:?}");
        for (key, value) in fields {
            assert_eq!(&ours[key.as_str()], value, "{repo_tag}: {key}");
        }
        let config = barge(&["inspect", "--config", &image]);
        assert_success(&config);
        let cfg = parse_json(&config.stdout);
        assert_eq!(ours["Cmd"], config_field(&cfg, "Cmd"), "{repo_tag}: Cmd");
        assert_eq!(ours["Env"], config_field(&cfg, "Env"), "{repo_tag}: Env");
        assert_eq!(
            sha256(&config.stdout),
            skopeo_config_digest(&docker),
            "{repo_tag}"
        );
    }
    // The same from a layout.
    let ours = parse_json(&ok(&["inspect", &oci(&f().layout.dir, "rich")]).into_bytes());
    let theirs = parse_json(&skopeo(&["inspect", &oci(&f().layout.dir, "rich")], false));
    let JsonValue::Object(fields) = &theirs else {
        panic!("skopeo inspect printed no object");
    };
    for (key, value) in fields {
        assert_eq!(&ours[key.as_str()], value, "layout: {key}");
    }
    let layers: &Vec<JsonValue> = ours["LayersData"].get().unwrap();
    assert_eq!(
        layers.len(),
        fields["Layers"].get::<Vec<JsonValue>>().unwrap().len()
    );
}

/// `config.FIELD` of an image config, null when absent.
fn config_field(cfg: &JsonValue, field: &str) -> JsonValue {
    let JsonValue::Object(top) = cfg else {
        return JsonValue::Null;
    };
    match top.get("config") {
        Some(JsonValue::Object(c)) => c.get(field).cloned().unwrap_or(JsonValue::Null),
        _ => JsonValue::Null,
    }
}

/// The digest of the config blob skopeo picks for this host.
fn skopeo_config_digest(docker: &str) -> String {
    sha256(&skopeo(&["inspect", "--config", "--raw", docker], true))
}

#[test]
fn layout_errors_name_the_layout_and_say_what_to_do() {
    let tmp = TempDir::new("layout-errors");
    let target = tmp.join("rootfs");
    let missing = oci(&f().layout.dir, "nope");
    let out = barge(&["pull", &missing, "-r", p(&target)]);
    let line = assert_clean_failure(&out, &[]);
    assert!(
        line.contains("no image with ref \"nope\"") && line.contains("busybox"),
        "{line}"
    );
    assert!(!target.exists());
    let plain = tmp.join("plain");
    fs::create_dir(&plain).unwrap();
    let out = barge(&["inspect", &format!("oci:{}", plain.display())]);
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains("not an OCI image layout"), "{line}");
    let out = barge(&[
        "pull",
        "oci:/media/usb-that-is-not-there:debian",
        "-r",
        p(&target),
    ]);
    let line = assert_clean_failure(&out, &[]);
    assert!(!line.contains("port"), "{line}");
    assert!(
        line.contains("oci:/media/usb-that-is-not-there:debian"),
        "{line}"
    );
    let many = barge(&["inspect", &format!("oci:{}", f().layout.dir.display())]);
    let line = assert_clean_failure(&many, &[]);
    assert!(line.contains("oci:PATH:REF"), "{line}");
}
