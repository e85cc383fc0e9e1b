//! Integration tests of `pull -g` against images that aim at barge's own git
//! repository: executable hooks and a planted `.git/config` (fsmonitor, hooksPath,
//! pager, filters, diff drivers) at the image's root, spelled every way (`./.git`,
//! `.git` as a symlink or hardlink, through a symlink `x -> .`, `a/../.git`), and
//! layers that white `.git` out, make the root opaque or replace `.git` later.
//!
//! After each pull -g, and after `barge commit` and `barge push` of a change, barge's
//! repository must be intact (`git fsck --strict`, one branch per layer, no planted
//! hook or config), and nothing the image brought may have run, neither for barge's
//! git nor for the user's plain `git status`, `git log -p`, `git diff` in DIR. The
//! image's root `.git` is reported, kept in the record, and pushed back unchanged.

mod common;

use common::fixtures::{push_crafted, RawEntry, TarBuilder};
use common::registry::{Mode, Registry};
use common::tree::{assert_same_tree, snapshot};
use common::{assert_clean_failure, assert_success, barge, list_dir, require_tool, TempDir};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Hooks the image plants (each appends its name to the marker file when run).
const HOOKS: &[&str] = &[
    "reference-transaction",
    "post-checkout",
    "post-index-change",
    "pre-commit",
    "post-commit",
    "pre-auto-gc",
    "fsmonitor-watchman",
    "pre-push",
];

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry::start(Mode::Plain))
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A test's temp tree: the pull target `rootfs`, the marker file any planted program
/// would write, an `outside` directory a symlink may aim at, and an empty HOME for
/// the user's git.
struct Scene {
    name: &'static str,
    tmp: TempDir,
    dir: PathBuf,
    marker: PathBuf,
    outside: PathBuf,
    home: PathBuf,
    /// DIR exists (empty) before the pull, as a mount point does.
    existing: bool,
    /// The layers write through a symlink (`.git -> etc`, then `.git/config`): the
    /// record names those entries as the layers do, disk has them elsewhere, so the
    /// tree shows changes right after the pull (true of any such symlink, not only
    /// `.git`), and pushing needs a commit first.
    writes_through_symlink: bool,
    /// A layer writes through a symlink to a directory (`x -> .`, then `x/.git/...`):
    /// the unpacker then restores directory mtimes in no fixed order (it notes the
    /// symlink's target under the symlink's name), in plain pulls too, so directory
    /// mtimes are not compared.
    through_dir_symlink: bool,
}

impl Scene {
    fn new(name: &'static str) -> Scene {
        require_tool("git");
        let tmp = TempDir::new("hostile-git");
        let outside = tmp.join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("canary"), b"canary\n").unwrap();
        let home = tmp.join("home");
        fs::create_dir_all(&home).unwrap();
        Scene {
            name,
            dir: tmp.join("rootfs"),
            marker: tmp.join("marker"),
            outside,
            home,
            tmp,
            existing: false,
            writes_through_symlink: false,
            through_dir_symlink: false,
        }
    }

    fn script(&self, tag: &str) -> Vec<u8> {
        format!("#!/bin/sh\necho {tag} \"$0\" >> {}\n", p(&self.marker)).into_bytes()
    }

    /// A config that would run a program for almost any git command.
    fn config(&self) -> Vec<u8> {
        let m = p(&self.marker);
        format!(
            "[core]\n\trepositoryformatversion = 0\n\tbare = false\n\
             \tfsmonitor = \"echo fsmonitor >> {m}; false\"\n\
             \thooksPath = {dir}/evilhooks\n\
             \tpager = \"echo pager >> {m}; cat\"\n\
             \teditor = \"echo editor >> {m}\"\n\
             [diff]\n\texternal = \"echo extdiff >> {m}; true\"\n\
             [diff \"evil\"]\n\ttextconv = \"echo textconv >> {m}; cat\"\n\
             \tcommand = \"echo diffcmd >> {m}; true\"\n\
             [filter \"evil\"]\n\tclean = \"echo clean >> {m}; cat\"\n\
             \tsmudge = \"echo smudge >> {m}; cat\"\n\trequired = true\n",
            dir = p(&self.dir)
        )
        .into_bytes()
    }

    /// A whole hostile repository at `base` (`.git`, `./.git`, `x/.git`, ...).
    fn evil_git(&self, t: &mut TarBuilder, base: &str) {
        t.dir(&format!("{base}/"), 0o755);
        self.evil_git_inside(t, base);
    }

    /// The repository's content without an entry for `base` itself (which stays
    /// what an earlier entry made it, e.g. a symlink the content is written through).
    fn evil_git_inside(&self, t: &mut TarBuilder, base: &str) {
        t.dir(&format!("{base}/hooks/"), 0o555)
            .file(&format!("{base}/config"), 0o644, &self.config())
            .file(&format!("{base}/HEAD"), 0o644, b"ref: refs/heads/evil\n");
        for h in HOOKS {
            t.file(&format!("{base}/hooks/{h}"), 0o755, &self.script(h));
        }
    }

    /// Ordinary content, plus what the planted config would use: attributes that
    /// name its filter and diff driver, and the hooks its hooksPath names.
    fn base(&self, t: &mut TarBuilder) {
        t.dir("./", 0o750)
            .dir("etc/", 0o755)
            .file("etc/hostname", 0o644, b"image\n")
            .file(".gitattributes", 0o644, b"* filter=evil diff=evil\n")
            .dir("evilhooks/", 0o755);
        for h in HOOKS {
            t.file(&format!("evilhooks/{h}"), 0o755, &self.script(h));
        }
    }

    fn assert_nothing_ran(&self, when: &str) {
        assert!(
            !self.marker.exists(),
            "{}: {when}: the image ran a program: {:?}",
            self.name,
            fs::read_to_string(&self.marker)
        );
        assert_eq!(list_dir(&self.outside), ["canary"], "{}: {when}", self.name);
    }

    /// The user's own git in `dir`: plain, with an empty HOME and no GIT_* variables.
    fn user_git(&self, dir: &Path, args: &[&str]) -> Output {
        let mut c = Command::new("git");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("GIT_") {
                c.env_remove(k);
            }
        }
        c.env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run git")
    }

    fn git_ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.user_git(dir, args);
        assert_success(&out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// barge's repository at `dir/.git`: a real directory, fsck-clean, `layers`
    /// layer branches with the top one checked out, no planted hook or setting.
    fn assert_repo_intact(&self, dir: &Path, layers: usize) {
        let meta = fs::symlink_metadata(dir.join(".git")).unwrap();
        assert!(meta.is_dir(), "{}: .git is not a directory", self.name);
        self.git_ok(dir, &["fsck", "--strict", "--no-progress"]);
        let branches = self.git_ok(
            dir,
            &["for-each-ref", "--format=%(refname:short)", "refs/heads"],
        );
        let mut branches: Vec<&str> = branches.lines().collect();
        branches.sort_by_key(|b| b.split('_').nth(1).and_then(|n| n.parse::<usize>().ok()));
        assert_eq!(branches.len(), layers, "{}: {branches:?}", self.name);
        for (i, b) in branches.iter().enumerate() {
            assert!(b.starts_with(&format!("layer_{i}_")), "{}: {b}", self.name);
        }
        let head = self.git_ok(dir, &["symbolic-ref", "--short", "HEAD"]);
        assert_eq!(head.trim(), branches[layers - 1], "{}", self.name);
        let config = fs::read_to_string(dir.join(".git/config")).unwrap();
        for bad in ["fsmonitor", "hooksPath", "evil", "pager", "worktree"] {
            assert!(!config.contains(bad), "{}: {bad} in\n{config}", self.name);
        }
        for h in list_dir(&dir.join(".git/hooks")) {
            assert!(h.ends_with(".sample"), "{}: hook {h}", self.name);
        }
    }

    /// What the user runs in DIR; none of it may start anything the image brought.
    fn run_user_git(&self, dir: &Path) {
        for args in [
            &["status"][..],
            &["status", "--porcelain", "--untracked-files=all"],
            &["log", "-p", "--all"],
            &["diff"],
            &["diff", "HEAD", "--"],
            &["show", "--ext-diff", "--textconv", "HEAD", "--"],
        ] {
            let out = self.user_git(dir, args);
            assert_success(&out);
        }
        self.assert_nothing_ran("the user's git status/log/diff");
    }
}

/// `.git` of a plain pull, as a comparable text.
fn dot_git_view(dir: &Path) -> String {
    let g = dir.join(".git");
    match fs::symlink_metadata(&g) {
        Err(_) => "none".into(),
        Ok(m) if m.is_dir() => format!("dir {:?}", snapshot(&g)),
        Ok(m) if m.file_type().is_symlink() => {
            format!("symlink {:?}", fs::read_link(&g).unwrap())
        }
        Ok(m) => format!("file {} {:o}", m.size(), m.mode()),
    }
}

/// What a case expects of the pull.
#[derive(PartialEq, Clone, Copy)]
enum Expect {
    /// The pull succeeds and says the image's /.git is kept in the record.
    Note,
    /// The pull succeeds and the image has no /.git at the end.
    NoNote,
    /// Refusing cleanly or succeeding (then as `Note`) are both fine.
    NoteOrRefuse,
}

/// Pushes `layers`, pulls with -g, commits a change, pushes it, pulls it back;
/// checks the walls after each step.
fn case(s: &Scene, layers: &[Vec<u8>], expect: Expect) {
    let reg = registry();
    let src = format!("hostile-git/{}:1", s.name);
    push_crafted(reg, &src, layers);
    if s.existing {
        fs::create_dir(&s.dir).unwrap();
    }
    let out = barge(&["pull", &reg.image(&src), "-r", p(&s.dir), "-g"]);
    s.assert_nothing_ran("pull -g");
    if !out.status.success() && expect == Expect::NoteOrRefuse {
        assert_clean_failure(&out, &[]);
        let mut left = vec!["home", "outside"];
        if s.existing {
            assert_eq!(list_dir(&s.dir), Vec::<String>::new(), "{}", s.name);
            left.push("rootfs");
        }
        assert_eq!(list_dir(s.tmp.path()), left, "{}", s.name);
        return;
    }
    assert_success(&out);
    s.run_user_git(&s.dir);
    s.assert_repo_intact(&s.dir, layers.len());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let noted = stdout.contains("Note: the image's own /.git (");
    assert_eq!(noted, expect != Expect::NoNote, "{}: {stdout}", s.name);
    if noted {
        eprintln!(
            "{}: {}",
            s.name,
            stdout.lines().find(|l| l.starts_with("Note:")).unwrap()
        );
        assert_kept_in_record(s, &stdout, layers.len());
    }
    // Outside .git, the very tree a plain pull gives, root mode and mtime included.
    let orig = s.tmp.join("orig");
    assert_success(&barge(&["pull", "-q", &reg.image(&src), "-r", p(&orig)]));
    let view = |d: &Path| {
        let mut t = snapshot(d);
        let m = fs::metadata(d).unwrap();
        let mut root = (m.mode() & 0o7777, m.mtime());
        if s.through_dir_symlink {
            t.values_mut()
                .filter(|m| m.kind == "dir")
                .for_each(|m| m.mtime = 0);
            root.1 = 0;
        }
        (t, root)
    };
    let (want, want_root) = view(&orig);
    let (got, got_root) = view(&s.dir);
    assert_same_tree(&want, &got);
    assert_eq!(got_root, want_root, "{}: root mode and mtime", s.name);
    s.run_user_git(&s.dir);
    if !s.writes_through_symlink {
        // Pushed right after the pull: the very same image (same manifest digest).
        let status = s.git_ok(&s.dir, &["status", "--porcelain", "--untracked-files=all"]);
        assert_eq!(status, "", "{}: git status after pull", s.name);
        let same = format!("hostile-git/{}-same:1", s.name);
        let out = barge(&["push", &reg.image(&same), "-r", p(&s.dir)]);
        assert_success(&out);
        let pushed = String::from_utf8_lossy(&out.stdout);
        let manifest = stdout
            .lines()
            .find_map(|l| l.strip_prefix("Manifest: "))
            .unwrap();
        assert!(
            pushed.contains(&format!("@{manifest}")),
            "{}: pushed another image than pulled: {pushed}",
            s.name
        );
        s.assert_nothing_ran("barge push after pull");
    }

    fs::create_dir_all(s.dir.join("etc")).unwrap();
    fs::write(s.dir.join("etc/hostname"), b"changed\n").unwrap();
    assert_success(&barge(&["commit", "-q", "-r", p(&s.dir), "-m", "change"]));
    s.assert_nothing_ran("barge commit");
    s.assert_repo_intact(&s.dir, layers.len() + 1);
    let status = s.git_ok(&s.dir, &["status", "--porcelain"]);
    assert_eq!(status, "", "{}: git status after commit", s.name);
    s.run_user_git(&s.dir);

    let dest = format!("hostile-git/{}-out:1", s.name);
    assert_success(&barge(&["push", "-q", &reg.image(&dest), "-r", p(&s.dir)]));
    s.assert_nothing_ran("barge push");

    // Pushed back unchanged: a plain pull of the result has the image's own .git as
    // a plain pull of the source has it, and the change.
    let back = s.tmp.join("back");
    assert_success(&barge(&["pull", "-q", &reg.image(&dest), "-r", p(&back)]));
    assert_eq!(dot_git_view(&orig), dot_git_view(&back), "{}", s.name);
    assert_eq!(fs::read(back.join("etc/hostname")).unwrap(), b"changed\n");
    s.assert_nothing_ran("round trip");
}

/// The note's count of entries equals the record's entries at `/.git` (or, for a
/// `.git` made only through a symlink, the layers' records name it).
fn assert_kept_in_record(s: &Scene, stdout: &str, layers: usize) {
    let rest = stdout
        .split("Note: the image's own /.git (")
        .nth(1)
        .unwrap();
    let tree = fs::read_to_string(s.dir.join(".git/barge/tree")).unwrap();
    let in_tree = tree
        .lines()
        .filter(|l| l.ends_with(" /.git") || l.contains(" /.git/"))
        .count();
    let counted = rest
        .split_once(" entries)")
        .or_else(|| rest.split_once(" entry)"));
    match counted {
        Some((n, _)) if !n.contains(' ') => {
            assert_eq!(n.parse::<usize>().unwrap(), in_tree, "{}: {stdout}", s.name);
            assert!(in_tree > 0, "{}", s.name);
        }
        _ => {
            assert!(rest.starts_with("made through a symlink"), "{}", s.name);
            let named = (0..layers).any(|i| {
                fs::read_to_string(s.dir.join(format!(".git/barge/layers/{i}")))
                    .unwrap()
                    .contains("/.git/")
            });
            assert!(named, "{}: the layers' records do not name it", s.name);
        }
    }
}

fn tar(build: impl FnOnce(&mut TarBuilder)) -> Vec<u8> {
    let mut t = TarBuilder::new();
    build(&mut t);
    t.finish()
}

#[test]
fn hooks_and_config_at_the_root() {
    let s = Scene::new("root");
    let l = tar(|t| {
        s.base(t);
        s.evil_git(t, ".git");
        // A file of the tree hard-linked to the image's own config keeps its content.
        t.hardlink("etc/gitconfig", ".git/config");
        // A nested repository stays the image's content; the user's git in DIR
        // never uses its config or hooks either.
        t.dir("usr/", 0o755)
            .dir("usr/src/", 0o755)
            .dir("usr/src/app/", 0o755);
        s.evil_git(t, "usr/src/app/.git");
    });
    case(&s, &[l], Expect::Note);
    assert_eq!(fs::read(s.dir.join("etc/gitconfig")).unwrap(), s.config());
    // With -q the note is not dropped: it goes to stderr.
    let quiet = s.tmp.join("quiet");
    let image = registry().image("hostile-git/root:1");
    let out = barge(&["pull", "-q", "-g", &image, "-r", p(&quiet)]);
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("barge: Note: the image's own /.git (") && err.lines().count() == 1,
        "{err}"
    );
    s.assert_nothing_ran("pull -q -g");
}

#[test]
fn hooks_and_config_into_an_existing_empty_directory() {
    let mut s = Scene::new("existing");
    s.existing = true;
    let l = tar(|t| {
        s.base(t);
        s.evil_git(t, ".git");
    });
    case(&s, &[l], Expect::Note);
}

#[test]
fn dot_slash_spelling() {
    let s = Scene::new("dotslash");
    let l = tar(|t| {
        s.base(t);
        s.evil_git(t, "./.git");
    });
    case(&s, &[l], Expect::Note);
}

#[test]
fn dotdot_spelling() {
    let s = Scene::new("dotdot");
    let l = tar(|t| {
        s.base(t);
        t.dir("a/", 0o755);
        s.evil_git(t, "a/../.git");
    });
    case(&s, &[l], Expect::NoteOrRefuse);
}

#[test]
fn dot_git_symlink_to_the_host_root() {
    let mut s = Scene::new("symroot");
    s.writes_through_symlink = true;
    s.through_dir_symlink = true;
    let l = tar(|t| {
        s.base(t);
        t.symlink(".git", "/");
        s.evil_git_inside(t, ".git");
    });
    case(&s, &[l], Expect::Note);
}

#[test]
fn dot_git_symlink_to_an_absolute_directory_outside() {
    let mut s = Scene::new("symabs");
    s.writes_through_symlink = true;
    s.through_dir_symlink = true;
    let outside = p(&s.outside).to_string();
    let l = tar(|t| {
        s.base(t);
        let mut dirs = String::new();
        for c in outside.trim_start_matches('/').split('/') {
            dirs.push_str(c);
            dirs.push('/');
            t.dir(&dirs, 0o755);
        }
        t.symlink(".git", &outside);
        s.evil_git_inside(t, ".git");
    });
    case(&s, &[l], Expect::Note);
}

#[test]
fn dot_git_symlink_to_etc() {
    let mut s = Scene::new("symetc");
    s.writes_through_symlink = true;
    s.through_dir_symlink = true;
    let l = tar(|t| {
        s.base(t);
        t.symlink(".git", "etc");
        s.evil_git_inside(t, ".git");
    });
    case(&s, &[l], Expect::Note);
}

#[test]
fn dot_git_hardlink_and_git_file() {
    let s = Scene::new("hardlink");
    let l0 = tar(|t| {
        s.base(t);
        t.file("etc/gitdir", 0o644, b"gitdir: /tmp\n")
            .hardlink(".git", "etc/gitdir");
    });
    // A later layer links a file to `.git` (resolved in the root: the image's
    // hardlink, never barge's repository), then replaces `.git` with a git file.
    let l1 = tar(|t| {
        t.hardlink("etc/head", ".git")
            .file(".git", 0o644, b"gitdir: /tmp\n");
    });
    case(&s, &[l0, l1], Expect::Note);
}

#[test]
fn repository_reached_through_a_symlink_to_the_root() {
    let mut s = Scene::new("xdot");
    s.through_dir_symlink = true;
    let l = tar(|t| {
        s.base(t);
        t.symlink("x", ".");
        s.evil_git(t, "x/.git");
        t.symlink("y", ".git");
        s.evil_git_inside(t, "y");
    });
    case(&s, &[l], Expect::Note);
}

#[test]
fn whiteout_of_dot_git() {
    let s = Scene::new("whiteout");
    let l0 = tar(|t| {
        s.base(t);
        s.evil_git(t, ".git");
    });
    let l1 = tar(|t| {
        t.whiteout(".wh..git").file("etc/after", 0o644, b"after\n");
    });
    case(&s, &[l0, l1], Expect::NoNote);
    assert!(s.dir.join("etc/after").is_file());
}

#[test]
fn opaque_root_alone() {
    let s = Scene::new("opaque");
    let l0 = tar(|t| {
        s.base(t);
        s.evil_git(t, ".git");
    });
    let l1 = tar(|t| {
        t.whiteout(".wh..wh..opq");
    });
    case(&s, &[l0, l1], Expect::NoNote);
}

#[test]
fn opaque_root_with_files_beside_it() {
    let s = Scene::new("opaquefiles");
    let l0 = tar(|t| {
        s.base(t);
        t.file("etc/old", 0o644, b"old\n");
    });
    let l1 = tar(|t| {
        t.whiteout(".wh..wh..opq")
            .dir("etc/", 0o755)
            .file("etc/hostname", 0o644, b"new\n");
        s.evil_git(t, ".git");
    });
    case(&s, &[l0, l1], Expect::Note);
    assert!(!s.dir.join("etc/old").exists());
}

#[test]
fn later_layers_replace_dot_git() {
    let mut s = Scene::new("replace");
    s.writes_through_symlink = true;
    s.through_dir_symlink = true;
    let l0 = tar(|t| {
        s.base(t);
        s.evil_git(t, ".git");
    });
    let l1 = tar(|t| {
        t.symlink(".git", "/");
        s.evil_git_inside(t, ".git");
    });
    let mut gitfile = RawEntry::new(".git", b'0', 0o755);
    gitfile.data = s.script("gitfile");
    let l2 = tar(|t| {
        t.entry(gitfile);
    });
    case(&s, &[l0, l1, l2], Expect::Note);
}
