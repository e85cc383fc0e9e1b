//! zstd layers against a real registry and real skopeo: the rich fixture pushed as gzip,
//! as zstd and as zstd:chunked (recompressed by `skopeo copy --dest-compress-format`
//! through OCI layouts, then layout → registry with `--preserve-digests`) pulls to the
//! same tree; a corrupt zstd blob is a digest error that leaves the target as it was;
//! a tree pulled from a zstd image pushes back with the same manifest digest, and a
//! commit on it keeps the zstd layers.

mod common;

use common::fixtures::{self, build_rich, parse_json, str_of, Layout};
use common::registry::{Mode, Registry};
use common::tree::{assert_same_tree, snapshot, Tree};
use common::{
    assert_clean_failure, assert_success, barge, require_tool, run, sha256_hex, DirState, TempDir,
};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;
use tinyjson::JsonValue;

const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const CHUNKED_TOC: &str = "io.containers.zstd-chunked.manifest-position";

/// The rich fixture in three compressions, each pushed to its own registry.
struct Images {
    /// umoci's unpack of the gzip original.
    expected: Tree,
    layout: Layout,
    registry: Registry,
    _dir: TempDir,
}

/// Tags in `Images::layout` and the repositories they are pushed to.
const TAGS: &[(&str, &str)] = &[
    ("gzip", "z/rich:gzip"),
    ("zstd", "z/rich:zstd"),
    ("chunked", "z/rich:chunked"),
];

fn images() -> &'static Images {
    static I: OnceLock<Images> = OnceLock::new();
    I.get_or_init(|| {
        require_tool("skopeo");
        let dir = TempDir::new("zstd-fixtures");
        let gzip = Layout::init(&dir.join("gzip"));
        build_rich(&gzip, "gzip");
        // Recompress into a separate empty layout: skopeo only recompresses blobs it writes.
        let layout = Layout::init(&dir.join("layout"));
        skopeo_copy(&[], &gzip.image("gzip"), &layout.image("gzip"));
        for (tag, format) in [("zstd", "zstd"), ("chunked", "zstd:chunked")] {
            let fresh = Layout::init(&dir.join(tag));
            let args = ["--dest-compress-format", format];
            skopeo_copy(&args, &gzip.image("gzip"), &fresh.image(tag));
            skopeo_copy(&[], &fresh.image(tag), &layout.image(tag));
        }
        let expected = gzip.unpack_tree("gzip");
        let registry = Registry::start(Mode::Plain);
        for (tag, dest) in TAGS {
            fixtures::push_args(&registry, &layout, tag, dest, &["--preserve-digests"]);
        }
        Images {
            expected,
            layout,
            registry,
            _dir: dir,
        }
    })
}

/// `skopeo copy EXTRA oci:SRC oci:DST` (layouts only: no registry options).
fn skopeo_copy(extra: &[&str], src: &str, dst: &str) {
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q"])
        .args(extra)
        .arg(format!("oci:{src}"))
        .arg(format!("oci:{dst}")));
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The manifest `reg` serves for `repo_tag`: (digest of its bytes, parsed).
fn served_manifest(reg: &Registry, repo_tag: &str) -> (String, JsonValue) {
    let (repo, tag) = repo_tag.split_once(':').expect("repo:tag");
    let (code, body) = reg.curl(
        &format!("/v2/{repo}/manifests/{tag}"),
        &["-H", &format!("Accept: {}", fixtures::OCI_MANIFEST)],
    );
    assert_eq!(code, 200, "manifest of {repo_tag}");
    (format!("sha256:{}", sha256_hex(&body)), parse_json(&body))
}

fn layers(manifest: &JsonValue) -> &Vec<JsonValue> {
    manifest["layers"].get().expect("layers array")
}

fn media_types(manifest: &JsonValue) -> Vec<String> {
    layers(manifest)
        .iter()
        .map(|l| str_of(&l["mediaType"]))
        .collect()
}

/// `barge pull [-g] IMAGE -r TMP/rootfs`, asserting success.
fn pull(image: &str, git: bool) -> (TempDir, std::path::PathBuf) {
    let tmp = TempDir::new("zstd-pull");
    let dir = tmp.join("rootfs");
    let mut args = vec!["pull", "-q", image, "-r", p(&dir)];
    if git {
        args.push("-g");
    }
    assert_success(&barge(&args));
    (tmp, dir)
}

/// The digest in barge push's `Done: REF@sha256:…` line.
fn done_digest(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Done: "))
        .unwrap_or_else(|| panic!("no `Done: ` line in:\n{text}"));
    let (_, digest) = line.rsplit_once('@').expect("REF@DIGEST");
    digest.to_string()
}

#[test]
fn skopeo_wrote_zstd_and_zstd_chunked_layers() {
    let i = images();
    let (_, gz) = served_manifest(&i.registry, "z/rich:gzip");
    let (_, zst) = served_manifest(&i.registry, "z/rich:zstd");
    let (_, chunked) = served_manifest(&i.registry, "z/rich:chunked");
    assert!(
        media_types(&gz).iter().all(|t| t.ends_with("+gzip")),
        "{gz:?}"
    );
    assert!(media_types(&zst).iter().all(|t| t == ZSTD), "{zst:?}");
    assert!(media_types(&chunked).iter().all(|t| t == ZSTD));
    for layer in layers(&chunked) {
        let ann: &std::collections::HashMap<String, JsonValue> = layer["annotations"]
            .get()
            .expect("zstd:chunked annotations");
        assert!(ann.contains_key(CHUNKED_TOC), "{ann:?}");
    }
    assert_eq!(
        str_of(&zst["config"]["digest"]),
        str_of(&gz["config"]["digest"]),
        "same diff_ids"
    );
}

#[test]
fn zstd_and_zstd_chunked_pull_to_the_gzip_tree() {
    let i = images();
    let (_t0, gz) = pull(&i.registry.image("z/rich:gzip"), false);
    assert_same_tree(&i.expected, &snapshot(&gz));
    for repo_tag in ["z/rich:zstd", "z/rich:chunked"] {
        let (_t, dir) = pull(&i.registry.image(repo_tag), false);
        assert_same_tree(&i.expected, &snapshot(&dir));
    }
}

#[test]
fn zstd_chunked_pull_with_git_history_matches_too() {
    let i = images();
    let (_t, dir) = pull(&i.registry.image("z/rich:chunked"), true);
    assert_same_tree(&i.expected, &snapshot(&dir));
}

#[test]
fn corrupt_zstd_blob_is_a_digest_error_and_the_target_is_untouched() {
    let i = images();
    // A registry of its own: the blob is corrupted in its storage.
    let reg = Registry::start(Mode::Plain);
    fixtures::push_args(&reg, &i.layout, "zstd", "z/bad:1", &["--preserve-digests"]);
    let (_, m) = served_manifest(&reg, "z/bad:1");
    let first = str_of(&layers(&m)[0]["digest"]);
    let path = reg.blob_data_path(&first);
    let mut blob = fs::read(&path).expect("registry blob");
    let mid = blob.len() / 2;
    blob[mid] ^= 0x40;
    fs::write(&path, &blob).expect("corrupt the blob");

    let tmp = TempDir::new("zstd-corrupt");
    let dir = tmp.join("rootfs");
    fs::create_dir(&dir).unwrap(); // an empty mount point, say
    let state = DirState::capture(&dir);
    let out = barge(&["pull", &reg.image("z/bad:1"), "-r", p(&dir)]);
    let line = assert_clean_failure(&out, &[]);
    state.assert_unchanged();
    assert!(line.contains("digest"), "not a digest error: {line}");
    assert!(
        line.contains(&first[7..19]),
        "does not name the blob: {line}"
    );
}

#[test]
fn pushed_back_unchanged_keeps_the_manifest_digest() {
    let i = images();
    for (from, to) in [
        ("z/rich:zstd", "z/copy:zstd"),
        ("z/rich:chunked", "z/copy:chunked"),
    ] {
        let (source_digest, _) = served_manifest(&i.registry, from);
        let (_t, dir) = pull(&i.registry.image(from), true);
        let out = barge(&["push", &i.registry.image(to), "-r", p(&dir)]);
        assert_success(&out);
        assert_eq!(done_digest(&out), source_digest, "{from} → {to}");
        assert_eq!(served_manifest(&i.registry, to).0, source_digest);
    }
}

#[test]
fn commit_on_a_zstd_image_keeps_its_zstd_layers() {
    let i = images();
    let (_, source) = served_manifest(&i.registry, "z/rich:chunked");
    let (_t, dir) = pull(&i.registry.image("z/rich:chunked"), true);
    fs::write(dir.join("added-on-top"), b"a change on zstd layers\n").unwrap();
    assert_success(&barge(&["commit", "-q", "-r", p(&dir), "-m", "on zstd"]));
    let out = barge(&["push", &i.registry.image("z/committed:1"), "-r", p(&dir)]);
    assert_success(&out);
    let (digest, pushed) = served_manifest(&i.registry, "z/committed:1");
    assert_eq!(done_digest(&out), digest);
    let (old, new) = (layers(&source), layers(&pushed));
    assert_eq!(new.len(), old.len() + 1);
    for (a, b) in old.iter().zip(new) {
        assert_eq!(str_of(&a["digest"]), str_of(&b["digest"]));
        assert_eq!(str_of(&b["mediaType"]), ZSTD);
    }
    // The image as pushed pulls back to the committed tree.
    let (_t2, back) = pull(&i.registry.image("z/committed:1"), false);
    assert_same_tree(&snapshot(&dir), &snapshot(&back));
}
