//! Integration tests of odd but harmless entry names (`..`, `.`, empty, `dir/sub/..`,
//! `dne/../.wh.etc`, hardlinks to `../../../../etc/passwd`, old GNU headers whose
//! prefix holds a directory): crafted layers pushed to the real registry with skopeo,
//! pulled with `barge pull`. Each test spells out the tree Docker (containerd, Go's
//! archive/tar) gives, compares with `umoci unpack` where umoci takes the layer, and
//! checks that nothing outside DIR changed; `pull -g` must give the same tree.

mod common;

use common::fixtures::{push, umoci, Layout, TarBuilder};
use common::registry::{Mode, Registry};
use common::tree::{self, snapshot, Tree};
use common::{assert_clean_failure, assert_success, barge, list_dir, run, DirState, TempDir};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry::start(Mode::Plain))
}

/// Canaries around DIR (`scene/a/b/rootfs`): `..` from DIR reaches each `etc/passwd`.
const CANARIES: &[&str] = &["canary", "etc/passwd", "a/etc/passwd", "a/b/etc/passwd"];

/// A crafted image in its own OCI layout, and a scene to pull it into.
struct Case {
    tmp: TempDir,
    layout: Layout,
    image: String,
}

impl Case {
    /// Builds an image of `layers` (on an empty base) and pushes it as `odd/NAME:1`.
    fn new(name: &str, layers: &[Vec<u8>]) -> Case {
        let tmp = TempDir::new("odd-names");
        let layout = Layout::init(&tmp.join("layout"));
        umoci(&["new", "--image", &layout.image("x")]);
        for l in layers {
            layout.add_layer("x", None, l);
        }
        let repo = format!("odd/{name}:1");
        push(registry(), &layout, "x", &repo, false);
        for c in CANARIES {
            let p = tmp.join("scene").join(c);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, format!("canary {c}\n")).unwrap();
        }
        Case {
            image: registry().image(&repo),
            tmp,
            layout,
        }
    }

    fn dir(&self) -> PathBuf {
        self.tmp.join("scene/a/b/rootfs")
    }

    /// Everything in the scene but DIR (directory mtimes ignored).
    fn outside(&self) -> Tree {
        let mut t = snapshot(&self.tmp.join("scene"));
        t.retain(|k, _| k != "a/b/rootfs" && !k.starts_with("a/b/rootfs/"));
        for m in t.values_mut() {
            if m.kind == "dir" {
                m.mtime = 0;
            }
        }
        t
    }

    /// Runs `barge pull` and checks that nothing outside DIR changed.
    fn pull(&self) -> std::process::Output {
        let before = self.outside();
        let dir = self.dir();
        let out = barge(&["pull", &self.image, "-r", dir.to_str().unwrap()]);
        tree::assert_same_tree(&before, &self.outside());
        for c in CANARIES {
            let m = fs::metadata(self.tmp.join("scene").join(c)).unwrap();
            assert_eq!(m.nlink(), 1, "{c} got hard-linked");
        }
        out
    }

    /// Pulls, expecting success and no leftovers beside DIR; returns DIR's listing.
    fn pull_ok(&self) -> Vec<String> {
        let out = self.pull();
        assert_success(&out);
        assert_eq!(list_dir(&self.tmp.join("scene/a/b")), ["etc", "rootfs"]);
        listing(&self.dir())
    }

    /// `pull -g` of the image gives the same tree as the plain pull, and a
    /// repository `git fsck --strict` accepts.
    fn same_with_git(&self) {
        let dir = self.tmp.join("git/rootfs");
        fs::create_dir_all(dir.parent().unwrap()).unwrap();
        let out = barge(&["pull", &self.image, "-r", dir.to_str().unwrap(), "-g"]);
        assert_success(&out);
        let fsck = ["fsck", "--strict", "--no-dangling", "--no-progress"];
        run(Command::new("git").arg("-C").arg(&dir).args(fsck));
        tree::assert_same_tree(
            &without_dir_mtimes(snapshot(&self.dir())),
            &without_dir_mtimes(snapshot(&dir)),
        );
        let mode = |d: &Path| fs::metadata(d).unwrap().permissions().mode();
        assert_eq!(mode(&self.dir()), mode(&dir));
    }

    /// `umoci unpack` of the image must give the same tree as barge (directory
    /// mtimes aside: umoci sets implied parents' to the time of the unpack).
    fn same_as_umoci(&self) {
        let bundle = self.tmp.join("bundle");
        umoci(&[
            "unpack",
            "--image",
            &self.layout.image("x"),
            bundle.to_str().unwrap(),
        ]);
        tree::assert_same_tree(
            &without_dir_mtimes(snapshot(&bundle.join("rootfs"))),
            &without_dir_mtimes(snapshot(&self.dir())),
        );
    }
}

/// The tree with every directory's mtime zeroed: directories a layer only implies
/// (e.g. `etc` of `../../etc/passwd`) get the time of the extraction, which differs
/// between two pulls a second apart.
fn without_dir_mtimes(mut t: Tree) -> Tree {
    for m in t.values_mut() {
        if m.kind == "dir" {
            m.mtime = 0;
        }
    }
    t
}

/// One line per path: `dir/ MODE`, `file MODE "content"` (`= first` for a hardlink
/// group's other members), `link -> target`.
fn listing(dir: &Path) -> Vec<String> {
    snapshot(dir)
        .into_iter()
        .map(|(p, m)| match m.kind {
            "dir" => format!("{p}/ {:o}", m.mode),
            "symlink" => format!("{p} -> {}", m.link.unwrap_or_default()),
            "file" => {
                let content =
                    String::from_utf8_lossy(&fs::read(dir.join(&p)).unwrap()).into_owned();
                let group = match m.hardlink_group {
                    Some(g) if g != p => format!(" = {g}"),
                    _ => String::new(),
                };
                format!("{p} {:o} {content:?}{group}", m.mode)
            }
            other => format!("{p} {other}"),
        })
        .collect()
}

fn tar(build: impl FnOnce(&mut TarBuilder)) -> Vec<u8> {
    let mut t = TarBuilder::new();
    build(&mut t);
    t.finish()
}

#[test]
fn dot_dotdot_and_empty_names_are_skipped() {
    let layer = tar(|t| {
        t.dir("etc/", 0o755)
            .file("etc/passwd", 0o644, b"inside")
            .file("..", 0o644, b"evil")
            .file(".", 0o644, b"evil")
            .file("", 0o644, b"evil")
            .symlink("..", "/etc/")
            .symlink("", "/etc/")
            .hardlink(".", "etc/passwd")
            .file("ok", 0o644, b"ok");
    });
    let c = Case::new("skipped", &[layer]);
    let want = ["etc/ 755", "etc/passwd 644 \"inside\"", "ok 644 \"ok\""];
    assert_eq!(c.pull_ok(), want);
    // umoci refuses this layer (a file named `.` would change the root's type).
    assert!(fs::symlink_metadata(c.dir()).unwrap().is_dir());
    c.same_with_git();
}

#[test]
fn root_directory_entries_set_the_root_metadata() {
    let layer = tar(|t| {
        t.dir("./", 0o700)
            .dir("/", 0o710)
            .dir(".", 0o750)
            .file("f", 0o600, b"f");
    });
    let c = Case::new("root-entries", &[layer]);
    assert_eq!(c.pull_ok(), ["f 600 \"f\""]);
    let m = fs::metadata(c.dir()).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o750);
    c.same_as_umoci();
    c.same_with_git();
}

#[test]
fn non_directory_root_entries_are_skipped() {
    // umoci refuses this layer ("refusing to change type of root directory");
    // containerd skips the entries, and so does barge.
    let layer = tar(|t| {
        t.file("./", 0o644, b"skipped")
            .symlink("/", "/etc")
            .file("f", 0o600, b"f");
    });
    let c = Case::new("root-non-dir", &[layer]);
    assert_eq!(c.pull_ok(), ["f 600 \"f\""]);
    assert!(fs::symlink_metadata(c.dir()).unwrap().is_dir());
    c.same_with_git();
}

#[test]
fn cleaned_names_land_inside() {
    let layer = tar(|t| {
        t.dir("dir/sub/..", 0o750)
            .file("dir/sub/../f", 0o644, b"in dir")
            .file("a/../../../b", 0o644, b"b")
            .file("../escape", 0o644, b"clamped")
            .file("../../etc/passwd", 0o644, b"image passwd");
    });
    let c = Case::new("cleaned", &[layer]);
    let want = [
        "b 644 \"b\"",
        "dir/ 750",
        "dir/f 644 \"in dir\"",
        "escape 644 \"clamped\"",
        "etc/ 755",
        "etc/passwd 644 \"image passwd\"",
    ];
    assert_eq!(c.pull_ok(), want);
    assert!(!c.tmp.join("scene/a/b/escape").exists());
    c.same_as_umoci();
    c.same_with_git();
}

#[test]
fn whiteout_is_recognised_after_cleaning() {
    let l1 = tar(|t| {
        t.dir("etc/", 0o755)
            .file("etc/passwd", 0o644, b"lower")
            .dir("keep/", 0o755)
            .file("keep/x", 0o644, b"x");
    });
    let l2 = tar(|t| {
        t.whiteout("dne/../.wh.etc").dir("keep/.wh.x/..", 0o700);
    });
    let c = Case::new("whiteout-cleaned", &[l1, l2]);
    assert_eq!(c.pull_ok(), ["keep/ 700", "keep/x 644 \"x\""]);
    c.same_as_umoci();
    c.same_with_git();
}

#[test]
fn opaque_marker_cleaned_to_the_root() {
    let l1 = tar(|t| {
        t.dir("old/", 0o755)
            .file("old/x", 0o644, b"x")
            .file("top", 0o644, b"t");
    });
    let l2 = tar(|t| {
        t.file("new", 0o644, b"n").whiteout("../.wh..wh..opq");
    });
    let c = Case::new("opaque-root", &[l1, l2]);
    assert_eq!(c.pull_ok(), ["new 644 \"n\""]);
    c.same_as_umoci();
    // Not `pull -g`: an opaque marker at the root is issue 8 part 1's to fix there.
}

#[test]
fn hardlink_target_is_clamped_at_the_root() {
    let layer = tar(|t| {
        t.dir("etc/", 0o755)
            .file("etc/passwd", 0o644, b"inside")
            .hardlink("pw", "../../../../etc/passwd")
            .hardlink("pw2", "/../etc/passwd");
    });
    let c = Case::new("hardlink-clamped", &[layer]);
    let want = [
        "etc/ 755",
        "etc/passwd 644 \"inside\"",
        "pw 644 \"inside\" = etc/passwd",
        "pw2 644 \"inside\" = etc/passwd",
    ];
    assert_eq!(c.pull_ok(), want);
    c.same_as_umoci();
    c.same_with_git();
}

#[test]
fn hardlink_to_dotdot_is_refused_cleanly() {
    let layer = tar(|t| {
        t.dir("etc/", 0o755).hardlink("h", "..");
    });
    let c = Case::new("hardlink-dotdot", &[layer]);
    let state = DirState::capture(&c.dir());
    let out = c.pull();
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains("root directory"), "{line}");
    assert!(!line.contains("escapes"), "{line}");
    state.assert_unchanged();
}

/// An old GNU header (`ustar  \0`) for a regular file, with `area` where GNU keeps
/// atime and ctime and USTAR the prefix.
fn gnu_file(name: &str, area: &[u8], data: &[u8]) -> Vec<u8> {
    fn octal(f: &mut [u8], v: u64) {
        let s = format!("{v:0w$o}\0", w = f.len() - 1);
        f.copy_from_slice(s.as_bytes());
    }
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], data.len() as u64);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = b'0';
    h[257..265].copy_from_slice(b"ustar  \0");
    h[345..345 + area.len()].copy_from_slice(area);
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum);
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

#[test]
fn gnu_header_prefix_is_read_like_go() {
    let mut layer = TarBuilder::new();
    layer.dir("usr/", 0o755).dir("usr/lib/", 0o755);
    let mut layer = layer.unterminated();
    // Junk (a directory name) where atime/ctime belong: Go reads it as a prefix.
    layer.extend(gnu_file("f", b"usr/lib", b"prefixed"));
    // Valid octal times: a real GNU header, the prefix field is not used.
    layer.extend(gnu_file("g", b"14712345670\x0014712345671\x00", b"plain"));
    layer.resize(layer.len() + 1024, 0);
    let c = Case::new("gnu-prefix", &[layer]);
    let want = [
        "g 644 \"plain\"",
        "usr/ 755",
        "usr/lib/ 755",
        "usr/lib/f 644 \"prefixed\"",
    ];
    assert_eq!(c.pull_ok(), want);
    c.same_as_umoci();
    c.same_with_git();
}

#[test]
fn escape_through_an_image_symlink_stays_inside() {
    let layer = tar(|t| {
        t.dir("etc/", 0o755)
            .file("etc/passwd", 0o644, b"inside")
            .symlink("up", "../../..")
            .file("up/escape", 0o644, b"x")
            .dir("d/", 0o755)
            .symlink("d/l", "../../../../etc")
            .hardlink("pw", "d/l/passwd")
            .file("up/../../escape2", 0o644, b"y");
    });
    let c = Case::new("symlink-confined", &[layer]);
    let want = [
        "d/ 755",
        "d/l -> ../../../../etc",
        "escape 644 \"x\"",
        "escape2 644 \"y\"",
        "etc/ 755",
        "etc/passwd 644 \"inside\"",
        "pw 644 \"inside\" = etc/passwd",
        "up -> ../../..",
    ];
    assert_eq!(c.pull_ok(), want);
    c.same_as_umoci();
    c.same_with_git();
    for stray in ["scene/escape", "scene/a/escape", "scene/a/b/escape"] {
        assert!(!c.tmp.join(stray).exists(), "{stray}");
    }
}
