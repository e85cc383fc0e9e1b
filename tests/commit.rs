//! Integration tests of `barge pull -g` and `barge commit` against real git and real
//! umoci: for each kind of change, the committed layer applied on top of its parent
//! by `umoci unpack` (from an OCI layout built out of barge's record) must give back
//! the working tree entry by entry, mtimes included. Also the refusals, determinism,
//! branch order and names (ChainIDs computed here), git's view, and an image's own
//! nested `.git` directory.

mod common;

use common::fixtures::{
    chmod, mknod, push, set_xattr, umoci, Fixtures, Layout, RawEntry, TarBuilder, EPOCH,
};
use common::oci::{
    chain_ids, config_diff_ids, layer_items, made_blob, manifest_layers, record_config, record_dir,
    record_manifest, umoci_tree_of_record, TarItem,
};
use common::tree::{self, snapshot, Tree};
use common::{
    assert_clean_failure, assert_success, barge, barge_env, run, sha256_hex, DirState, TempDir,
};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

// ------------------------------------------------------------------ fixtures

fn f() -> &'static Fixtures {
    Fixtures::get()
}

/// Images of this binary only, pushed to the shared registry: `test/gitapp:1` (an
/// image with its own `.git` directory), `test/only-git:1` (a directory with only a
/// repository in it), `test/twelve:1` (12 layers) and `test/implicit:1` (no entries
/// for the root and for parent directories).
struct Extra {
    layout: Layout,
    _dir: TempDir,
}

fn extra() -> &'static Extra {
    static E: OnceLock<Extra> = OnceLock::new();
    E.get_or_init(|| {
        let reg = &f().registry;
        let dir = TempDir::new("commit-fixtures");
        let layout = Layout::init(&dir.join("layout"));
        build_gitapp(&layout, "gitapp");
        push(reg, &layout, "gitapp", "test/gitapp:1", false);
        build_twelve(&layout, "twelve");
        push(reg, &layout, "twelve", "test/twelve:1", false);
        build_only_git(&layout, "only-git");
        push(reg, &layout, "only-git", "test/only-git:1", false);
        build_implicit(&layout, "implicit");
        push(reg, &layout, "implicit", "test/implicit:1", false);
        Extra { layout, _dir: dir }
    })
}

/// A source checkout with its repository, `usr/src/app/.git`; layer 2 changes the
/// nested HEAD and whites out a file inside the nested `.git`.
fn build_gitapp(l: &Layout, tag: &str) {
    umoci(&["new", "--image", &l.image(tag)]);
    let mut t = TarBuilder::new();
    t.dir("usr/", 0o755)
        .dir("usr/src/", 0o755)
        .dir("usr/src/app/", 0o755)
        .file(
            "usr/src/app/main.c",
            0o644,
            b"int main(void) { return 0; }\n",
        );
    nested_repo(&mut t, "usr/src/app/.git");
    l.add_layer(tag, None, &t.finish());
    let mut t = TarBuilder::new();
    let mut e = RawEntry::new("usr/src/app/.git/HEAD", b'0', 0o644);
    e.data = b"ref: refs/heads/dev\n".to_vec();
    e.mtime = EPOCH + 60;
    t.entry(e);
    t.whiteout("usr/src/app/.git/.wh.description");
    l.add_layer(tag, None, &t.finish());
}

/// A directory that holds nothing but a repository: `usr/src/only-git/.git`.
fn build_only_git(l: &Layout, tag: &str) {
    umoci(&["new", "--image", &l.image(tag)]);
    let mut t = TarBuilder::new();
    t.dir("usr/", 0o755)
        .dir("usr/src/", 0o755)
        .dir("usr/src/only-git/", 0o755);
    nested_repo(&mut t, "usr/src/only-git/.git");
    l.add_layer(tag, None, &t.finish());
}

/// The files of a small valid git repository at `at` (a directory path).
fn nested_repo(t: &mut TarBuilder, at: &str) {
    t.dir(&format!("{at}/"), 0o755)
        .file(&format!("{at}/HEAD"), 0o644, b"ref: refs/heads/main\n")
        .file(
            &format!("{at}/config"),
            0o644,
            b"[core]\n\trepositoryformatversion = 0\n\tbare = false\n",
        )
        .file(&format!("{at}/description"), 0o644, b"nested\n")
        .dir(&format!("{at}/objects/"), 0o755)
        .dir(&format!("{at}/objects/info/"), 0o755)
        .dir(&format!("{at}/objects/pack/"), 0o755)
        .dir(&format!("{at}/refs/"), 0o755)
        .dir(&format!("{at}/refs/heads/"), 0o755)
        .dir(&format!("{at}/refs/tags/"), 0o755);
}

/// Twelve layers; layer N adds `layers/N`.
fn build_twelve(l: &Layout, tag: &str) {
    umoci(&["new", "--image", &l.image(tag)]);
    for n in 0..12 {
        let mut t = TarBuilder::new();
        t.dir("layers/", 0o755).file(
            &format!("layers/{n}"),
            0o644,
            format!("layer {n}\n").as_bytes(),
        );
        l.add_layer(tag, None, &t.finish());
    }
}

/// One layer with files only: the root and the parent directories are made by
/// the extractor, not listed.
fn build_implicit(l: &Layout, tag: &str) {
    umoci(&["new", "--image", &l.image(tag)]);
    let mut t = TarBuilder::new();
    t.file("a/b/c", 0o644, b"c\n").file("a/d", 0o600, b"d\n");
    l.add_layer(tag, None, &t.finish());
}

// ------------------------------------------------------------------ helpers

/// A tree pulled with `-g`, and the repository it came from.
struct Pulled {
    _tmp: TempDir,
    dir: PathBuf,
    repo: &'static str,
    /// The fixture layout and tag it was built from.
    layout: &'static Layout,
    tag: &'static str,
}

/// `barge pull REG/REPO:TAG -r DIR -g`, asserting success.
fn pull_g(repo: &'static str, tag: &str, layout: &'static Layout, fixture: &'static str) -> Pulled {
    let tmp = TempDir::new("commit");
    let dir = tmp.join("rootfs");
    let image = f().image(&format!("{repo}:{tag}"));
    let out = barge(&["pull", &image, "-r", s(&dir), "-g"]);
    assert_success(&out);
    // barge writes the blobs' packs itself: git must find them whole and correct.
    git(
        &dir,
        &["fsck", "--strict", "--no-dangling", "--no-progress"],
    );
    Pulled {
        _tmp: tmp,
        dir,
        repo,
        layout,
        tag: fixture,
    }
}

fn pull_rich() -> Pulled {
    pull_g("test/rich", "oci", &f().layout, "rich")
}

fn pull_gitapp() -> Pulled {
    pull_g("test/gitapp", "1", &extra().layout, "gitapp")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `barge commit -r DIR -m MSG` with extra environment variables.
fn commit_env(dir: &Path, msg: &str, env: &[(&str, &OsStr)]) -> Output {
    barge_env(&["commit", "-r", s(dir), "-m", msg], env)
}

/// The seed's commit summary, as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Summary {
    branch: String,
    manifest: String,
    config: String,
    parent: String,
    layer: String,
    diff_id: String,
    size: u64,
}

fn commit_ok(dir: &Path, msg: &str, env: &[(&str, &OsStr)]) -> Summary {
    let out = commit_env(dir, msg, env);
    assert_success(&out);
    git(dir, &["fsck", "--strict", "--no-dangling", "--no-progress"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in commit output:\n{text}"))
            .trim()
            .to_string()
    };
    Summary {
        branch: field("Changes committed in "),
        manifest: field("Manifest: "),
        config: field("Config: "),
        parent: field("Parent: "),
        layer: field("Layer: "),
        diff_id: field("DiffID: "),
        // `Layer size: 1.2 KiB (1234 bytes)`, or `12 B (12 bytes)`.
        size: field("Layer size: ")
            .rsplit_once(" (")
            .and_then(|(_, b)| b.strip_suffix(" bytes)"))
            .and_then(|b| b.parse().ok())
            .expect("`HUMAN (N bytes)` layer size"),
    }
}

/// `git -C DIR ARGS`, panicking on failure; stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = run(Command::new("git").arg("-C").arg(dir).args(args));
    String::from_utf8_lossy(&out).into_owned()
}

/// The layer branches `git branch` lists, in its (text) order.
fn git_branches(dir: &Path) -> Vec<String> {
    git(dir, &["branch", "--list", "--no-color"])
        .lines()
        .map(|l| l.trim_start_matches('*').trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn head_branch(dir: &Path) -> String {
    git(dir, &["symbolic-ref", "--short", "HEAD"])
        .trim()
        .to_string()
}

fn branch_name(n: usize, chain: &str) -> String {
    format!("layer_{n}_{}", chain.trim_start_matches("sha256:"))
}

/// sha256 of the uncompressed tar of a gzipped blob (an independent diff_id).
fn diff_id_of(blob: &Path) -> String {
    let tar = run(Command::new("gzip").arg("-dc").arg(blob));
    format!("sha256:{}", sha256_hex(&tar))
}

/// Makes a change with `change`, then puts back the mtime of every directory whose
/// only difference is its mtime (a child was added or removed): an mtime-only change
/// is not a change (issue 3), so the layer does not carry it and an extractor keeps
/// the parent's old mtime. The tree then holds exactly the change under test.
fn change(dir: &Path, change: impl FnOnce(&Path)) {
    let before = snapshot(dir);
    change(dir);
    let after = snapshot(dir);
    for (p, b) in &before {
        let Some(a) = after.get(p) else { continue };
        if a.kind == "dir" && b.kind == "dir" && a.mtime != b.mtime {
            let mut same = a.clone();
            same.mtime = b.mtime;
            if &same == b {
                common::fixtures::set_mtime(&dir.join(p), b.mtime);
            }
        }
    }
}

/// What the record looked like: its files (except the stat cache) and the refs.
fn record_state(dir: &Path) -> (BTreeMap<String, Vec<u8>>, String) {
    let mut files = BTreeMap::new();
    collect_files(&record_dir(dir), "", &mut files);
    files.remove("tree");
    let refs = git(dir, &["for-each-ref", "--format=%(refname) %(objectname)"]);
    let head = fs::read_to_string(dir.join(".git/HEAD")).expect("read .git/HEAD");
    (files, format!("{refs}HEAD {head}"))
}

fn collect_files(d: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
    for e in fs::read_dir(d).expect("read_dir").flatten() {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.file_type().expect("file type").is_dir() {
            collect_files(&e.path(), &format!("{name}/"), out);
        } else {
            out.insert(name, fs::read(e.path()).expect("read record file"));
        }
    }
}

/// The config's history entries.
fn config_history(config: &[u8]) -> Vec<tinyjson::JsonValue> {
    let c = common::fixtures::parse_json(config);
    let h: &Vec<tinyjson::JsonValue> = c["history"].get().expect("history array");
    h.clone()
}

// ------------------------------------------------------------------ one change, one check

/// Pulls, makes `make` change, commits, and checks everything about the new layer:
/// its entries (`expected`: name and tar type flag, in order), `umoci unpack` of the
/// recorded image equals DIR, manifest and config extend the parent's, the branch is
/// named by an independently computed ChainID, git is clean, and a second commit
/// finds nothing.
fn change_case(p: &Pulled, make: impl FnOnce(&Path), expected: &[(&str, char)]) -> Summary {
    let parent_manifest = record_manifest(&p.dir);
    let parent_config = record_config(&p.dir);
    change(&p.dir, make);
    let sum = commit_ok(&p.dir, "the change", &[]);
    check_layer(p, &sum, expected);
    let man = record_manifest(&p.dir);
    let cfg = record_config(&p.dir);
    assert_eq!(
        sum.parent,
        format!("sha256:{}", sha256_hex(&parent_manifest))
    );
    assert_eq!(sum.manifest, format!("sha256:{}", sha256_hex(&man)));
    assert_eq!(sum.config, format!("sha256:{}", sha256_hex(&cfg)));
    assert!(made_blob(&p.dir, &sum.config).is_file(), "config blob kept");

    // Manifest: the parent's layers plus the new one.
    let old_layers = manifest_layers(&parent_manifest);
    let layers = manifest_layers(&man);
    assert_eq!(&layers[..old_layers.len()], &old_layers[..]);
    assert_eq!(layers.len(), old_layers.len() + 1);
    let top = &layers[old_layers.len()];
    assert_eq!(top.digest, sum.layer);
    assert_eq!(top.size, sum.size);
    assert_eq!(
        top.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    // Config: the parent's diff_ids plus the new one, a history entry with the message.
    let mut ids = config_diff_ids(&parent_config);
    ids.push(diff_id_of(&made_blob(&p.dir, &sum.layer)));
    assert_eq!(config_diff_ids(&cfg), ids);
    assert_eq!(sum.diff_id, ids[ids.len() - 1]);
    let old_hist = config_history(&parent_config);
    let hist = config_history(&cfg);
    assert_eq!(&hist[..old_hist.len()], &old_hist[..]);
    assert_eq!(hist.len(), old_hist.len() + 1);
    let last = &hist[old_hist.len()];
    assert_eq!(common::fixtures::str_of(&last["comment"]), "the change");
    assert!(
        common::fixtures::str_of(&last["created_by"]).contains("barge commit"),
        "created_by: {:?}",
        last["created_by"]
    );

    // Git: a new branch named by the ChainID, checked out, clean.
    let chains = chain_ids(&ids);
    let n = chains.len() - 1;
    assert_eq!(sum.branch, branch_name(n, &chains[n]));
    assert_eq!(head_branch(&p.dir), sum.branch);
    assert_eq!(git_branches(&p.dir).len(), n + 1);
    assert_eq!(git(&p.dir, &["status", "--porcelain"]), "", "git status");

    // Nothing left to commit.
    let out = commit_env(&p.dir, "again", &[]);
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains("nothing to commit"), "{line}");
    sum
}

/// The new layer's entries, and umoci's unpack of the recorded image against DIR.
fn check_layer(p: &Pulled, sum: &Summary, expected: &[(&str, char)]) {
    let blob = made_blob(&p.dir, &sum.layer);
    assert!(blob.is_file(), "layer blob {} not in .git/barge", sum.layer);
    let items = layer_items(&blob);
    let got: Vec<(&str, char)> = items.iter().map(|i| (i.name.as_str(), i.kind)).collect();
    assert_eq!(got, expected, "entries of the new layer: {items:#?}");
    let theirs = umoci_tree_of_record(&p.dir, &f().registry, p.repo);
    tree::assert_same_tree(&theirs, &snapshot(&p.dir));
}

// ------------------------------------------------------------------ each kind of change

#[test]
fn new_file() {
    let p = pull_rich();
    change_case(
        &p,
        |d| fs::write(d.join("etc/motd"), b"hello from commit\n").unwrap(),
        &[("etc/motd", '0')],
    );
}

#[test]
fn changed_content_keeps_the_xattr() {
    // etc/hostname carries user.barge.test from layer 1; the new layer must repeat it.
    let p = pull_rich();
    change_case(
        &p,
        |d| fs::write(d.join("etc/hostname"), b"changed by commit\n").unwrap(),
        // layer2/lower-link is a hardlink to it (layer 2): the group is written again.
        &[("etc/hostname", '0'), ("layer2/lower-link", '1')],
    );
}

#[test]
fn chmod_only() {
    let p = pull_rich();
    change_case(
        &p,
        |d| chmod(&d.join("data/big"), 0o640),
        &[("data/big", '0')],
    );
}

#[test]
fn chmod_of_a_directory() {
    let p = pull_rich();
    change_case(
        &p,
        |d| chmod(&d.join("home/app/.config"), 0o750),
        &[("home/app/.config", '5')],
    );
}

#[test]
fn chown_only() {
    let p = pull_rich();
    change_case(
        &p,
        |d| std::os::unix::fs::lchown(d.join("etc/empty"), Some(123), Some(456)).unwrap(),
        &[("etc/empty", '0')],
    );
}

#[test]
fn new_empty_dir() {
    let p = pull_rich();
    change_case(
        &p,
        |d| {
            fs::create_dir(d.join("srv/newdir")).unwrap();
            chmod(&d.join("srv/newdir"), 0o750);
        },
        &[("srv/newdir", '5')],
    );
}

#[test]
fn deleted_file() {
    let p = pull_rich();
    change_case(
        &p,
        |d| fs::remove_file(d.join("wh/kept")).unwrap(),
        &[("wh/.wh.kept", '0')],
    );
}

#[test]
fn deleted_tree() {
    // opq/ holds files and a subdirectory: one whiteout, none for its children.
    let p = pull_rich();
    change_case(
        &p,
        |d| fs::remove_dir_all(d.join("opq")).unwrap(),
        &[(".wh.opq", '0')],
    );
}

#[test]
fn dir_replaced_by_file() {
    let p = pull_rich();
    change_case(
        &p,
        |d| {
            fs::remove_dir_all(d.join("srv/shared")).unwrap();
            fs::write(d.join("srv/shared"), b"now a file\n").unwrap();
        },
        &[("srv/shared", '0')],
    );
}

#[test]
fn file_replaced_by_symlink() {
    let p = pull_rich();
    change_case(
        &p,
        |d| {
            fs::remove_file(d.join("etc/empty")).unwrap();
            symlink("hostname", d.join("etc/empty")).unwrap();
        },
        &[("etc/empty", '2')],
    );
}

#[test]
fn symlink_retargeted() {
    let p = pull_rich();
    change_case(
        &p,
        |d| {
            fs::remove_file(d.join("usr/bin/abs-link")).unwrap();
            symlink("/usr/bin/sgid", d.join("usr/bin/abs-link")).unwrap();
        },
        &[("usr/bin/abs-link", '2')],
    );
}

#[test]
fn new_hardlink_pair() {
    let p = pull_rich();
    change_case(
        &p,
        |d| {
            fs::write(d.join("data/new1"), b"linked twice\n").unwrap();
            fs::hard_link(d.join("data/new1"), d.join("data/new2")).unwrap();
        },
        &[("data/new1", '0'), ("data/new2", '1')],
    );
}

#[test]
fn new_hardlink_to_a_lower_file() {
    // The layer cannot link to a file of a lower layer: the whole group is in it.
    let p = pull_rich();
    change_case(
        &p,
        |d| fs::hard_link(d.join("etc/group-owned"), d.join("etc/group-owned2")).unwrap(),
        &[("etc/group-owned", '0'), ("etc/group-owned2", '1')],
    );
}

#[test]
fn new_fifo() {
    let p = pull_rich();
    change_case(
        &p,
        |d| mknod(&d.join("run/newfifo"), libc::S_IFIFO, 0o600, 0),
        &[("run/newfifo", '6')],
    );
}

#[test]
fn new_char_device() {
    let p = pull_rich();
    change_case(
        &p,
        |d| {
            mknod(
                &d.join("dev/zero-ish"),
                libc::S_IFCHR,
                0o666,
                libc::makedev(1, 5),
            )
        },
        &[("dev/zero-ish", '3')],
    );
}

#[test]
fn xattr_added() {
    let p = pull_rich();
    change_case(
        &p,
        |d| set_xattr(&d.join("data/big"), "user.added", b"by commit"),
        &[("data/big", '0')],
    );
}

#[test]
fn change_inside_the_images_own_git_dir() {
    let p = pull_gitapp();
    change_case(
        &p,
        |d| {
            let g = d.join("usr/src/app/.git");
            fs::write(g.join("HEAD"), b"ref: refs/heads/feature\n").unwrap();
            fs::write(g.join("refs/heads/feature"), b"0123456789abcdef\n").unwrap();
        },
        &[
            ("usr/src/app/.git/HEAD", '0'),
            ("usr/src/app/.git/refs/heads/feature", '0'),
        ],
    );
}

#[test]
fn several_changes_in_one_commit() {
    let p = pull_rich();
    change_case(
        &p,
        |d| {
            fs::write(d.join("etc/motd"), b"motd\n").unwrap();
            fs::remove_file(d.join("data/a")).unwrap();
            fs::remove_dir_all(d.join("names")).unwrap();
            chmod(&d.join("usr/bin/tool"), 0o755);
        },
        // data/b, alone now, is the same file as before: nothing to write for it.
        &[
            (".wh.names", '0'),
            ("data/.wh.a", '0'),
            ("etc/motd", '0'),
            ("usr/bin/tool", '0'),
            ("usr/bin/tool-hardlink", '1'),
        ],
    );
}

#[test]
fn implicit_directories_are_not_changes() {
    let p = pull_g("test/implicit", "1", &extra().layout, "implicit");
    let out = commit_env(&p.dir, "nothing", &[]);
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains("nothing to commit"), "{line}");
    change(&p.dir, |d| {
        fs::write(d.join("a/b/c"), b"changed\n").unwrap()
    });
    let sum = commit_ok(&p.dir, "the change", &[]);
    let items = layer_items(&made_blob(&p.dir, &sum.layer));
    let got: Vec<(&str, char)> = items.iter().map(|i| (i.name.as_str(), i.kind)).collect();
    assert_eq!(got, [("a/b/c", '0')], "entries of the new layer");
    // `a` and `a/b` have no tar entry: each unpacker creates them "now", so their
    // mtimes are whenever umoci and barge ran; everything else must match.
    let mut theirs = umoci_tree_of_record(&p.dir, &f().registry, p.repo);
    let ours = snapshot(&p.dir);
    for implicit in ["a", "a/b"] {
        if let (Some(t), Some(o)) = (theirs.get_mut(implicit), ours.get(implicit)) {
            t.mtime = o.mtime;
        }
    }
    tree::assert_same_tree(&theirs, &ours);
}

#[test]
fn docker_schema2_image_gets_a_docker_layer() {
    let p = pull_g("test/rich", "v2s2", &f().layout, "rich");
    change(&p.dir, |d| {
        fs::write(d.join("etc/motd"), b"v2s2\n").unwrap()
    });
    let parent = record_manifest(&p.dir);
    let sum = commit_ok(&p.dir, "on a docker image", &[]);
    let man = record_manifest(&p.dir);
    assert_eq!(sum.parent, format!("sha256:{}", sha256_hex(&parent)));
    let m = common::fixtures::parse_json(&man);
    assert_eq!(
        common::fixtures::str_of(&m["mediaType"]),
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        common::fixtures::str_of(&m["config"]["mediaType"]),
        "application/vnd.docker.container.image.v1+json"
    );
    let layers = manifest_layers(&man);
    let top = layers.last().unwrap();
    assert_eq!(top.digest, sum.layer);
    assert_eq!(
        top.media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(&layers[..layers.len() - 1], &manifest_layers(&parent)[..]);
    let items = layer_items(&made_blob(&p.dir, &sum.layer));
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].name, "etc/motd");
}

// ------------------------------------------------------------------ no change, refusals

#[test]
fn nothing_to_commit_right_after_the_pull() {
    let p = pull_rich();
    let before = record_state(&p.dir);
    let state = DirState::capture(&p.dir);
    let out = commit_env(&p.dir, "nothing", &[]);
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains("nothing to commit"), "{line}");
    state.assert_unchanged();
    assert_eq!(record_state(&p.dir), before);
}

#[test]
fn mtime_only_change_is_not_a_change() {
    let p = pull_rich();
    let before = record_state(&p.dir);
    for path in [
        "etc/hostname",
        "usr/bin/tool",
        "data/a",
        "srv/shared",
        "etc",
    ] {
        common::fixtures::set_mtime(&p.dir.join(path), EPOCH + 99_999);
    }
    // `touch` with the current time as well.
    run(Command::new("touch").arg(p.dir.join("data/big")));
    let out = commit_env(&p.dir, "touched", &[]);
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains("nothing to commit"), "{line}");
    assert_eq!(record_state(&p.dir), before);
}

#[test]
fn message_is_required() {
    let p = pull_rich();
    fs::write(p.dir.join("etc/motd"), b"x\n").unwrap();
    let before = record_state(&p.dir);
    let state = DirState::capture(&p.dir);
    for args in [
        vec!["commit", "-r", s(&p.dir)],
        vec!["commit", "-r", s(&p.dir), "-m", "  "],
    ] {
        let out = barge(&args);
        let line = assert_clean_failure(&out, &[]);
        assert!(line.contains("message"), "{line}");
    }
    state.assert_unchanged();
    assert_eq!(record_state(&p.dir), before);
}

#[test]
fn refuses_a_directory_barge_did_not_pull() {
    let tmp = TempDir::new("commit-plain");
    let dir = tmp.join("plain");
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/motd"), b"x\n").unwrap();
    let state = DirState::capture(&dir);
    let out = commit_env(&dir, "msg", &[]);
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains("not a barge tree"), "{line}");
    state.assert_unchanged();
    assert!(!dir.join(".git").exists(), "commit created .git");

    // A git repository that barge did not make.
    git(&dir, &["init", "-q"]);
    let state = DirState::capture(&dir);
    let out = commit_env(&dir, "msg", &[]);
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains("not a barge tree"), "{line}");
    state.assert_unchanged();
    assert!(
        !dir.join(".git/barge").exists(),
        "commit created .git/barge"
    );

    // A directory that does not exist.
    let missing = tmp.join("missing");
    let out = commit_env(&missing, "msg", &[]);
    assert_clean_failure(&out, &[]);
    assert!(!missing.exists());
}

#[test]
fn refuses_a_checked_out_older_branch() {
    let p = pull_rich();
    fs::write(p.dir.join("etc/motd"), b"a real change\n").unwrap();
    let first = git_branches(&p.dir)
        .into_iter()
        .find(|b| b.starts_with("layer_0_"))
        .expect("a layer_0 branch");
    git(&p.dir, &["checkout", "-q", &first]);
    let before = record_state(&p.dir);
    let state = DirState::capture(&p.dir);
    let out = commit_env(&p.dir, "msg", &[]);
    let line = assert_clean_failure(&out, &[]);
    assert!(
        line.contains(&first),
        "the error should name HEAD's branch: {line}"
    );
    assert!(
        line.contains("layer_2_"),
        "the error should name the top layer: {line}"
    );
    state.assert_unchanged();
    assert_eq!(record_state(&p.dir), before);
    assert_eq!(head_branch(&p.dir), first);
}

#[test]
fn refuses_a_detached_head() {
    let p = pull_rich();
    fs::write(p.dir.join("etc/motd"), b"a real change\n").unwrap();
    git(&p.dir, &["checkout", "-q", "--detach"]);
    let before = record_state(&p.dir);
    let state = DirState::capture(&p.dir);
    let out = commit_env(&p.dir, "msg", &[]);
    assert_clean_failure(&out, &[]);
    state.assert_unchanged();
    assert_eq!(record_state(&p.dir), before);
}

// ------------------------------------------------------------------ determinism

#[test]
fn same_tree_and_source_date_epoch_give_the_same_digests() {
    let epoch = (EPOCH + 100_000_000).to_string();
    let env = [("SOURCE_DATE_EPOCH", OsStr::new(&epoch))];
    let mut sums = Vec::new();
    let mut blobs = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..2 {
        let p = pull_rich();
        change(&p.dir, |d| {
            fs::write(d.join("etc/det"), b"same bytes\n").unwrap();
            common::fixtures::set_mtime(&d.join("etc/det"), EPOCH + 5);
            fs::create_dir(d.join("srv/detdir")).unwrap();
            common::fixtures::set_mtime(&d.join("srv/detdir"), EPOCH + 6);
            chmod(&d.join("data/big"), 0o600);
            fs::remove_file(d.join("wh/kept")).unwrap();
        });
        let sum = commit_ok(&p.dir, "deterministic", &env);
        blobs.push(fs::read(made_blob(&p.dir, &sum.layer)).unwrap());
        sums.push(sum);
        keep.push(p);
    }
    assert_eq!(sums[0], sums[1], "two identical commits differ");
    assert_eq!(blobs[0], blobs[1]);
    // And the result is right (no mtime was clamped: all are before the epoch).
    check_layer(
        &keep[0],
        &sums[0],
        &[
            ("data/big", '0'),
            ("etc/det", '0'),
            ("srv/detdir", '5'),
            ("wh/.wh.kept", '0'),
        ],
    );
    let created = config_history(&record_config(&keep[0].dir));
    let created = common::fixtures::str_of(&created[created.len() - 1]["created"]);
    assert_eq!(created, rfc3339(EPOCH + 100_000_000));
}

/// `YYYY-MM-DDTHH:MM:SSZ` of seconds since the epoch, by `date`.
fn rfc3339(t: i64) -> String {
    let out = run(Command::new("date")
        .args(["-u", "-d"])
        .arg(format!("@{t}"))
        .arg("+%Y-%m-%dT%H:%M:%SZ"));
    String::from_utf8_lossy(&out).trim().to_string()
}

// ------------------------------------------------------------------ branches and git log

#[test]
fn twelve_layers_keep_their_numeric_order() {
    let e = extra();
    let p = pull_g("test/twelve", "1", &e.layout, "twelve");
    let cfg = e.layout.read_json(&common::fixtures::str_of(
        &e.layout.manifest("twelve")["config"]["digest"],
    ));
    let ids: Vec<String> = {
        let a: &Vec<tinyjson::JsonValue> = cfg["rootfs"]["diff_ids"].get().unwrap();
        a.iter().map(common::fixtures::str_of).collect()
    };
    assert_eq!(ids.len(), 12);
    let chains = chain_ids(&ids);
    let expected: Vec<String> = (0..12).map(|n| branch_name(n, &chains[n])).collect();
    let mut listed = git_branches(&p.dir);
    listed.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(listed, want, "git branch");
    assert_eq!(head_branch(&p.dir), expected[11]);
    // Branch N holds layers 0..=N: each was made from N-1, in numeric order.
    for (n, b) in expected.iter().enumerate() {
        let files = git(&p.dir, &["ls-tree", "-r", "--name-only", b]);
        let want: Vec<String> = {
            let mut v: Vec<String> = (0..=n).map(|i| format!("layers/{i}")).collect();
            v.sort();
            v
        };
        assert_eq!(files.lines().collect::<Vec<_>>(), want, "files of {b}");
        let commits = git(&p.dir, &["rev-list", "--count", b]);
        assert_eq!(commits.trim(), (n + 1).to_string(), "history of {b}");
    }
    assert_eq!(git(&p.dir, &["status", "--porcelain"]), "");
    // One more layer on top: layer_12.
    change(&p.dir, |d| {
        fs::write(d.join("layers/12"), b"layer 12\n").unwrap()
    });
    let sum = commit_ok(&p.dir, "thirteenth", &[]);
    assert!(sum.branch.starts_with("layer_12_"), "{}", sum.branch);
    assert_eq!(git_branches(&p.dir).len(), 13);
    check_layer(&p, &sum, &[("layers/12", '0')]);
}

#[test]
fn seed_flow_pull_change_commit_twice() {
    let p = pull_g("test/busybox", "oci", &f().layout, "busybox");
    let base = f().layout.manifest("busybox");
    let base_layers: Vec<tinyjson::JsonValue> = {
        let a: &Vec<tinyjson::JsonValue> = base["layers"].get().unwrap();
        a.clone()
    };
    let l = base_layers.len();
    assert_eq!(git(&p.dir, &["status", "--porcelain"]), "");

    change(&p.dir, |d| {
        fs::write(d.join("root/hello"), b"hello\n").unwrap();
    });
    let s1 = commit_ok(&p.dir, "first change", &[]);
    change(&p.dir, |d| {
        fs::remove_file(d.join("etc/group")).unwrap();
        chmod(&d.join("root/hello"), 0o600);
    });
    let s2 = commit_ok(&p.dir, "second change", &[]);
    assert_eq!(s2.parent, s1.manifest);
    check_layer(&p, &s2, &[("etc/.wh.group", '0'), ("root/hello", '0')]);

    // Facts of every layer, computed independently: base layers from the fixture's
    // manifest and config, the new ones from the blobs.
    let base_cfg = f()
        .layout
        .read_json(&common::fixtures::str_of(&base["config"]["digest"]));
    let mut facts: Vec<(String, String, String, u64)> = Vec::new();
    let base_ids: &Vec<tinyjson::JsonValue> = base_cfg["rootfs"]["diff_ids"].get().unwrap();
    for (layer, id) in base_layers.iter().zip(base_ids) {
        let size = match &layer["size"] {
            tinyjson::JsonValue::Number(n) => *n as u64,
            _ => panic!("size"),
        };
        facts.push((
            common::fixtures::str_of(&layer["digest"]),
            common::fixtures::str_of(id),
            common::fixtures::str_of(&layer["mediaType"]),
            size,
        ));
    }
    for sum in [&s1, &s2] {
        facts.push((
            sum.layer.clone(),
            diff_id_of(&made_blob(&p.dir, &sum.layer)),
            "application/vnd.oci.image.layer.v1.tar+gzip".to_string(),
            fs::metadata(made_blob(&p.dir, &sum.layer)).unwrap().len(),
        ));
    }
    let ids: Vec<String> = facts.iter().map(|f| f.1.clone()).collect();
    let chains = chain_ids(&ids);
    let names: Vec<String> = (0..l + 2).map(|n| branch_name(n, &chains[n])).collect();
    let mut listed = git_branches(&p.dir);
    listed.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(listed, want, "branches layer_0 .. layer_{}", l + 1);
    assert_eq!(head_branch(&p.dir), names[l + 1]);
    assert_eq!(s1.branch, names[l]);
    assert_eq!(s2.branch, names[l + 1]);

    let log = git(&p.dir, &["log", "--format=%B"]);
    for (n, (digest, diff_id, mt, size)) in facts.iter().enumerate() {
        let body = git(&p.dir, &["log", "-1", "--format=%B", &names[n]]);
        for line in [
            format!("Layer-Digest: {digest}"),
            format!("Diff-ID: {diff_id}"),
            format!("Media-Type: {mt}"),
            format!("Size: {size}"),
            format!("Chain-ID: {}", chains[n]),
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "{} lacks {line:?}:\n{body}",
                names[n]
            );
            assert!(log.contains(&line), "git log lacks {line:?}");
        }
        let trailers = git(
            &p.dir,
            &["log", "-1", "--format=%(trailers:only,unfold)", &names[n]],
        );
        assert!(
            trailers.contains("Chain-ID: "),
            "git does not parse the facts as trailers:\n{body}"
        );
    }
    assert!(log.contains("first change") && log.contains("second change"));
    assert_eq!(
        git(&p.dir, &["rev-list", "--count", "HEAD"]).trim(),
        (l + 2).to_string()
    );
    assert_eq!(git(&p.dir, &["status", "--porcelain"]), "");
}

// ------------------------------------------------------------------ the image's own .git

#[test]
fn images_own_git_dir_survives_pull() {
    let p = pull_gitapp();
    let expected: Tree = p.layout.unpack_tree(p.tag);
    assert!(expected.contains_key("usr/src/app/.git/HEAD"));
    assert!(!expected.contains_key("usr/src/app/.git/description"));
    tree::assert_same_tree(&expected, &snapshot(&p.dir));
    assert_eq!(
        fs::read(p.dir.join("usr/src/app/.git/HEAD")).unwrap(),
        b"ref: refs/heads/dev\n"
    );
    // In the record ...
    let rec = fs::read(record_dir(&p.dir).join("tree")).expect("record tree");
    let rec = String::from_utf8_lossy(&rec);
    for path in [
        "/usr/src/app/.git/HEAD",
        "/usr/src/app/.git/config",
        "/usr/src/app/.git/objects/pack",
    ] {
        assert!(
            rec.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} is not in the record"
        );
    }
    // ... not in git's view, and git sees a clean tree.
    let files = git(&p.dir, &["ls-files"]);
    assert!(files.contains("usr/src/app/main.c"), "{files}");
    assert!(!files.contains(".git/"), "{files}");
    assert_eq!(git(&p.dir, &["status", "--porcelain"]), "", "git status");
    // Commit finds nothing to do.
    let out = commit_env(&p.dir, "nothing", &[]);
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains("nothing to commit"), "{line}");
}

#[test]
fn git_status_is_clean_with_a_directory_holding_only_a_repository() {
    let p = pull_g("test/only-git", "1", &extra().layout, "only-git");
    tree::assert_same_tree(&p.layout.unpack_tree(p.tag), &snapshot(&p.dir));
    assert_eq!(git(&p.dir, &["status", "--porcelain"]), "", "git status");
    // Once the directory holds a file git tracks, it is no longer excluded: a new
    // file there shows up in git status again.
    fs::write(p.dir.join("usr/src/only-git/README"), "mine\n").unwrap();
    commit_ok(&p.dir, "add a readme", &[]);
    assert_eq!(git(&p.dir, &["status", "--porcelain"]), "", "after commit");
    fs::write(p.dir.join("usr/src/only-git/later"), "x").unwrap();
    assert_eq!(
        git(&p.dir, &["status", "--porcelain"]),
        "?? usr/src/only-git/later\n"
    );
}

#[test]
fn items_helper_strips_prefixes() {
    // Guard for the helper the layer checks rely on.
    let tmp = TempDir::new("items");
    let mut t = TarBuilder::new();
    t.dir("./a/", 0o755).hardlink("a/h", "a/f");
    let tar = tmp.join("l.tar");
    fs::write(&tar, t.finish()).unwrap();
    run(Command::new("gzip").arg("-n").arg(&tar));
    let items = layer_items(&tmp.join("l.tar.gz"));
    assert_eq!(
        items,
        [
            TarItem {
                name: "a".into(),
                kind: '5',
                link: None
            },
            TarItem {
                name: "a/h".into(),
                kind: '1',
                link: Some("a/f".into())
            }
        ]
    );
}
