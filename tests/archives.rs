//! Integration tests of the archive transports (`oci-archive:FILE[:REF]` and
//! `docker-archive:FILE[:REPO:TAG]`) through the barge binary, against a real
//! docker-registry and real skopeo, umoci and podman: registry → archive → registry
//! keeps the manifest digest; what barge writes is read by skopeo, umoci (through
//! skopeo) and `podman load`; archives skopeo writes pull to the tree `umoci unpack`
//! makes; a pull from an archive needs no network (`unshare -n`); a committed tree
//! pushes into a docker-archive; `copy --all` keeps an index in an oci-archive and is
//! refused by a docker-archive; archive errors are one clear line.

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

/// `barge ARGS`, asserting success; stdout.
fn ok(args: &[&str]) -> String {
    let out = barge(args);
    assert_success(&out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn oci_archive(file: &Path, reference: &str) -> String {
    format!("oci-archive:{}:{reference}", file.display())
}

fn docker_archive(file: &Path, repo_tag: &str) -> String {
    format!("docker-archive:{}:{repo_tag}", file.display())
}

/// `skopeo --insecure-policy ARGS`, with `--src-tls-verify=false` when `registry_src`;
/// stdout.
fn skopeo(args: &[&str], registry_src: bool) -> Vec<u8> {
    require_tool("skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy").arg(args[0]);
    if registry_src {
        let flag = if args[0] == "copy" {
            "--src-tls-verify=false"
        } else {
            "--tls-verify=false"
        };
        cmd.arg(flag);
    }
    cmd.args(&args[1..]);
    run(&mut cmd)
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The digest of the manifest `barge inspect --raw IMAGE` prints.
fn raw_digest(image: &str) -> String {
    let out = barge(&["inspect", "--raw", image]);
    assert_success(&out);
    sha256(&out.stdout)
}

/// `barge pull -q IMAGE -r TMP/rootfs` compared with `umoci unpack` of fixture `tag`.
fn pull_matches(image: &str, tag: &str) {
    let tmp = TempDir::new("archives-pull");
    let dir = tmp.join("rootfs");
    ok(&["pull", "-q", image, "-r", p(&dir)]);
    tree::assert_same_tree(&f().expected(tag), &snapshot(&dir));
}

/// `unshare -n barge ARGS`: barge with no network interface at all.
fn offline(args: &[&str], home: &Path) -> Output {
    require_tool("unshare");
    Command::new("unshare")
        .arg("-n")
        .arg(barge_path())
        .args(args)
        .env("DOCKER_CONFIG", home)
        .env("HOME", home)
        .output()
        .expect("run unshare")
}

/// `podman ARGS` with its storage (vfs) under `dir` (a short path: podman refuses a
/// runroot longer than 50 characters); stdout.
fn podman(dir: &Path, args: &[&str]) -> String {
    require_tool("podman");
    let (root, runroot) = (dir.join("root"), dir.join("rr"));
    let mut cmd = Command::new("podman");
    cmd.arg("--root")
        .arg(&root)
        .arg("--runroot")
        .arg(&runroot)
        .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
        .args(["--events-backend", "none"])
        .args(args);
    String::from_utf8_lossy(&run(&mut cmd)).into_owned()
}

#[test]
fn registry_to_oci_archive_to_registry_keeps_the_manifest_digest() {
    let tmp = TempDir::new("oci-archive-trip");
    let file = tmp.join("usb.tar");
    for (repo_tag, reference) in [("test/rich:oci", "oci"), ("test/rich:v2s2", "v2s2")] {
        let src = f().image(repo_tag);
        let want = raw_digest(&src);
        let out = ok(&["copy", &src, &oci_archive(&file, reference)]);
        assert!(out.contains(&format!("@{want}")), "{out}");
        assert_eq!(raw_digest(&oci_archive(&file, reference)), want);
        let back = f().image(&format!("archived/rich:{reference}"));
        ok(&["copy", "-q", &oci_archive(&file, reference), &back]);
        assert_eq!(raw_digest(&back), want, "{repo_tag}");
        let theirs = skopeo(&["inspect", "--raw", &format!("docker://{back}")], true);
        assert_eq!(sha256(&theirs), want, "{repo_tag}: skopeo");
    }
    // The archive holds both images; skopeo reads the OCI one (it skips Docker schema2
    // manifests in OCI layouts).
    let want = raw_digest(&f().image("test/rich:oci"));
    let inspected = parse_json(&skopeo(&["inspect", &oci_archive(&file, "oci")], false));
    assert_eq!(str_of(&inspected["Digest"]), want);
    let raw = skopeo(&["inspect", "--raw", &oci_archive(&file, "oci")], false);
    assert_eq!(sha256(&raw), want);
}

#[test]
fn docker_archive_is_read_by_skopeo_umoci_and_podman() {
    let tmp = TempDir::new("docker-archive-out");
    let file = tmp.join("saved.tar");
    ok(&[
        "copy",
        "-q",
        &f().image("test/rich:v2s2"),
        &docker_archive(&file, "example/rich:1"),
    ]);
    // skopeo → OCI layout → umoci unpack: the tree barge pulls from the registry.
    let layout = tmp.join("layout");
    let dst = format!("oci:{}:x", layout.display());
    let plain = format!("docker-archive:{}", file.display());
    skopeo(&["copy", "-q", &plain, &dst], false);
    let unpacked = Layout { dir: layout }.unpack_tree("x");
    let pulled = tmp.join("pulled");
    ok(&["pull", "-q", &f().image("test/rich:v2s2"), "-r", p(&pulled)]);
    tree::assert_same_tree(&unpacked, &snapshot(&pulled));
    // podman load lists it under its repo:tag.
    let store = TempDir::new("pm");
    let loaded = podman(store.path(), &["load", "-i", p(&file)]);
    assert!(loaded.contains("example/rich:1"), "{loaded}");
    let images = podman(
        store.path(),
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    );
    assert!(images.contains("localhost/example/rich:1"), "{images}");
}

#[test]
fn pulls_from_archives_need_no_network() {
    let tmp = TempDir::new("archives-offline");
    let (oa, da) = (tmp.join("image.oci.tar"), tmp.join("image.docker.tar"));
    let src = f().image("test/busybox:oci");
    ok(&["copy", "-q", &src, &oci_archive(&oa, "bb")]);
    ok(&["copy", "-q", &src, &docker_archive(&da, "test/busybox:oci")]);
    let docker = format!("docker-archive:{}", da.display());
    for (n, image) in [oci_archive(&oa, "bb"), docker].iter().enumerate() {
        let dir = tmp.join(format!("rootfs{n}"));
        let out = offline(&["pull", "-q", image, "-r", p(&dir)], tmp.path());
        assert_success(&out);
        tree::assert_same_tree(&f().expected("busybox"), &snapshot(&dir));
    }
}

#[test]
fn archives_written_by_skopeo_pull_to_umoci_unpack_trees() {
    let tmp = TempDir::new("skopeo-archives");
    for (repo_tag, tag) in [("test/rich:v2s2", "rich"), ("test/busybox:oci", "busybox")] {
        let src = format!("docker://{}", f().image(repo_tag));
        let da = tmp.join(format!("{tag}.docker.tar"));
        skopeo(
            &["copy", "-q", &src, &docker_archive(&da, "made/by:skopeo")],
            true,
        );
        pull_matches(&format!("docker-archive:{}", da.display()), tag);
        pull_matches(&docker_archive(&da, "made/by:skopeo"), tag);
        let oa = tmp.join(format!("{tag}.oci.tar"));
        skopeo(&["copy", "-q", &src, &oci_archive(&oa, "ref")], true);
        pull_matches(&oci_archive(&oa, "ref"), tag);
    }
}

#[test]
fn push_of_a_committed_tree_into_a_docker_archive() {
    let tmp = TempDir::new("push-docker-archive");
    let dir = tmp.join("rootfs");
    ok(&[
        "pull",
        "-q",
        "-g",
        &f().image("test/busybox:oci"),
        "-r",
        p(&dir),
    ]);
    fs::write(dir.join("etc/motd"), b"into an archive\n").unwrap();
    ok(&["commit", "-q", "-r", p(&dir), "-m", "motd"]);
    let file = tmp.join("pushed.tar");
    ok(&[
        "push",
        "-q",
        &docker_archive(&file, "pushed/busybox:2"),
        "-r",
        p(&dir),
    ]);
    let plain = format!("docker-archive:{}", file.display());
    let inspected = parse_json(&skopeo(&["inspect", &plain], false));
    let layers: &Vec<JsonValue> = inspected["Layers"].get().unwrap();
    let original = parse_json(&ok(&["inspect", &f().image("test/busybox:oci")]).into_bytes());
    let base: &Vec<JsonValue> = original["Layers"].get().unwrap();
    assert_eq!(layers.len(), base.len() + 1, "{inspected:?}");
    let back = tmp.join("back");
    ok(&["pull", "-q", &plain, "-r", p(&back)]);
    let want = snapshot(&dir);
    tree::assert_same_tree(&want, &snapshot(&back));
    assert_eq!(
        fs::read(back.join("etc/motd")).unwrap(),
        b"into an archive\n"
    );
}

#[test]
fn archive_errors_are_one_line_and_inspect_reads_archives() {
    let tmp = TempDir::new("archive-errors");
    let target = tmp.join("rootfs");
    let not_tar = tmp.join("notes.txt");
    fs::write(&not_tar, "just some notes, not a tar file\n".repeat(40)).unwrap();
    for transport in ["oci-archive", "docker-archive"] {
        let image = format!("{transport}:{}", not_tar.display());
        let line = assert_clean_failure(&barge(&["pull", &image, "-r", p(&target)]), &[]);
        assert!(line.contains("not a tar archive"), "{line}");
        assert!(line.contains(p(&not_tar)), "{line}");
        assert!(!target.exists());
    }
    // A compressed archive (`docker save | gzip`) and a missing file say what to do.
    let da = tmp.join("docker.tar");
    ok(&[
        "copy",
        "-q",
        &f().image("test/rich:oci"),
        &docker_archive(&da, "some/rich:1"),
    ]);
    require_tool("gzip");
    let gz = tmp.join("docker.tar.gz");
    let zipped = run(Command::new("gzip").arg("-c").arg(&da));
    fs::write(&gz, zipped).unwrap();
    let image = format!("docker-archive:{}", gz.display());
    let line = assert_clean_failure(&barge(&["pull", &image, "-r", p(&target)]), &[]);
    assert!(
        line.contains("it is gzip-compressed") && line.contains("gunzip"),
        "{line}"
    );
    let gone = oci_archive(&tmp.join("not-there.tar"), "x");
    let line = assert_clean_failure(&barge(&["inspect", &gone]), &[]);
    assert!(
        line.contains(&gone) && line.contains("check the file's path"),
        "{line}"
    );
    let line = assert_clean_failure(
        &barge(&["inspect", &format!("oci-archive:{}", tmp.path().display())]),
        &[],
    );
    assert!(
        line.contains("is a directory") && line.contains("oci:DIR"),
        "{line}"
    );
    let nowhere = docker_archive(&tmp.join("no-such-dir/saved.tar"), "a/b:1");
    let src = f().image("test/busybox:oci");
    let line = assert_clean_failure(&barge(&["copy", "-q", &src, &nowhere]), &[]);
    assert!(line.contains("create the directory"), "{line}");
    // A missing ref lists the refs the archive has.
    let oa = tmp.join("two.tar");
    for reference in ["first", "second"] {
        let src = f().image("test/busybox:oci");
        ok(&["copy", "-q", &src, &oci_archive(&oa, reference)]);
    }
    let line = assert_clean_failure(
        &barge(&["pull", &oci_archive(&oa, "third"), "-r", p(&target)]),
        &[],
    );
    assert!(
        line.contains("third") && line.contains("first") && line.contains("second"),
        "{line}"
    );
    let line = assert_clean_failure(
        &barge(&[
            "pull",
            &docker_archive(&da, "other/rich:2"),
            "-r",
            p(&target),
        ]),
        &[],
    );
    assert!(
        line.contains("other/rich:2") && line.contains("some/rich:1"),
        "{line}"
    );
    assert!(!target.exists());
    // inspect of a docker-archive: the fields skopeo prints, the same.
    let plain = format!("docker-archive:{}", da.display());
    let ours = parse_json(&ok(&["inspect", &plain]).into_bytes());
    let theirs = parse_json(&skopeo(&["inspect", &plain], false));
    let JsonValue::Object(fields) = &theirs else {
        panic!("skopeo inspect printed no object");
    };
    for key in ["Layers", "Digest", "Created", "Architecture", "Os"] {
        assert!(fields.contains_key(key), "skopeo has no {key}: {theirs:?}");
    }
    // Both make up the manifest of a docker-archive (which has none): skopeo a Docker
    // schema2 one, barge an OCI one, so the digests differ; each is its own --raw's.
    for (key, value) in fields {
        if key != "Digest" {
            assert_eq!(&ours[key.as_str()], value, "docker-archive: {key}");
        }
    }
    assert_eq!(str_of(&ours["Digest"]), raw_digest(&plain));
    let config = barge(&["inspect", "--config", &plain]);
    assert_success(&config);
    let their_config = skopeo(&["inspect", "--config", "--raw", &plain], false);
    assert_eq!(config.stdout, their_config, "config");
}

#[test]
fn copy_all_into_an_oci_archive_keeps_the_index_and_a_docker_archive_refuses_it() {
    let tmp = TempDir::new("archives-all");
    let multi = f().image("test/multi:1");
    let want = raw_digest(&multi);
    // The index carries an in-toto attestation: its layer is no tar, and is kept.
    let file = tmp.join("multi.tar");
    ok(&["copy", "-q", "--all", &multi, &oci_archive(&file, "m")]);
    assert_eq!(raw_digest(&oci_archive(&file, "m")), want);
    let theirs = skopeo(&["inspect", "--raw", &oci_archive(&file, "m")], false);
    assert_eq!(sha256(&theirs), want, "skopeo");
    let back = f().image("archived/multi:1");
    ok(&["copy", "-q", "--all", &oci_archive(&file, "m"), &back]);
    assert_eq!(raw_digest(&back), want);
    // A docker-archive holds one image: refused before anything is written.
    let saved = tmp.join("saved.tar");
    let out = barge(&["copy", "--all", &multi, &docker_archive(&saved, "a/m:1")]);
    let line = assert_clean_failure(&out, &[]);
    assert!(
        line.contains("holds one image") && line.contains("--platform"),
        "{line}"
    );
    assert!(!saved.exists());
    ok(&[
        "copy",
        "-q",
        "--platform",
        "linux/arm64",
        &multi,
        &docker_archive(&saved, "a/m:1"),
    ]);
    let inspected =
        parse_json(&ok(&["inspect", &format!("docker-archive:{}", saved.display())]).into_bytes());
    assert_eq!(str_of(&inspected["Architecture"]), "arm64");
}
