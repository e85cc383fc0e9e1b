//! Integration tests of `barge status` and `barge checkout` on trees pulled with
//! `-g` from the real test registry: status lists each kind of change commit would
//! take (metadata included); checkout of an older layer and back gives exactly the
//! pulled tree (owners, modes, hardlinks, devices, xattrs, mtimes), by number,
//! branch name and ChainID; it refuses uncommitted changes; commit refuses on an
//! older layer naming the checkout to run; git stays clean and `fsck --strict` passes.

mod common;

use common::fixtures::Fixtures;
use common::oci::{chain_ids, config_diff_ids, record_config};
use common::tree::{assert_same_tree, snapshot};
use common::{assert_clean_failure, assert_success, barge, run, TempDir};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `test/rich:oci` (three layers: owners, hardlinks, devices, xattrs, whiteouts)
/// pulled with -g into a fresh directory.
fn pull_rich(tmp: &TempDir) -> PathBuf {
    let dir = tmp.join("rootfs");
    let image = Fixtures::get().image("test/rich:oci");
    assert_success(&barge(&["pull", &image, "-r", s(&dir), "-g", "-q"]));
    dir
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = run(Command::new("git").arg("-C").arg(dir).args(args));
    String::from_utf8_lossy(&out).into_owned()
}

fn branches(dir: &Path) -> Vec<String> {
    let chains = chain_ids(&config_diff_ids(&record_config(dir)));
    chains
        .iter()
        .enumerate()
        .map(|(n, c)| format!("layer_{n}_{}", c.trim_start_matches("sha256:")))
        .collect()
}

fn stdout_of(args: &[&str]) -> String {
    let out = barge(args);
    assert_success(&out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(dir: &Path) -> String {
    stdout_of(&["status", "-r", s(dir)])
}

fn checkout(dir: &Path, layer: &str) {
    assert_success(&barge(&["checkout", layer, "-r", s(dir), "-q"]));
}

/// barge and git both see a clean tree, and git's objects are sound.
fn assert_clean(dir: &Path) {
    let st = status(dir);
    assert!(st.contains("nothing to commit"), "{st}");
    assert_eq!(git(dir, &["status", "--porcelain"]), "", "git status");
    git(dir, &["fsck", "--strict", "--no-dangling", "--no-progress"]);
}

#[test]
fn status_lists_content_mode_owner_new_and_deleted() {
    let tmp = TempDir::new("history");
    let dir = pull_rich(&tmp);
    let top = branches(&dir).pop().expect("layers");
    let st = status(&dir);
    assert!(
        st.starts_with(&format!("On {top} (layer 2, the top)")),
        "{st}"
    );
    assert_clean(&dir);

    fs::write(dir.join("etc/hostname"), b"changed\n").unwrap();
    fs::set_permissions(dir.join("data/big"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::lchown(dir.join("home/app/notes.txt"), Some(0), Some(0)).unwrap();
    fs::write(dir.join("etc/new-file"), b"new\n").unwrap();
    fs::remove_file(dir.join("etc/empty")).unwrap();

    let st = status(&dir);
    for want in [
        "M  etc/hostname (content)",
        "M  data/big (mode 0644 → 0600)",
        "M  home/app/notes.txt (owner 1000:1000 → 0:0)",
        "A  etc/new-file",
        "D  etc/empty",
    ] {
        assert!(st.lines().any(|l| l == want), "{want:?} missing in:\n{st}");
    }
    assert!(!st.contains("nothing to commit"), "{st}");
    // -q: the change lines only, the same ones.
    let quiet = stdout_of(&["status", "-r", s(&dir), "-q"]);
    let changes: Vec<&str> = st.lines().filter(|l| !l.starts_with("On ")).collect();
    assert_eq!(quiet.lines().collect::<Vec<_>>(), changes);
    // Commit takes exactly that, and the tree is clean after.
    assert_success(&barge(&["commit", "-r", s(&dir), "-m", "edits", "-q"]));
    assert_clean(&dir);
}

#[test]
fn checkout_old_layer_and_back_gives_the_pulled_tree() {
    let tmp = TempDir::new("history");
    let dir = pull_rich(&tmp);
    let pulled = snapshot(&dir);
    let names = branches(&dir);
    assert_eq!(names.len(), 3);

    // By number: layer 0 as the first layer made it.
    checkout(&dir, "0");
    assert_eq!(
        git(&dir, &["symbolic-ref", "--short", "HEAD"]).trim(),
        names[0]
    );
    let st = status(&dir);
    assert!(
        st.starts_with(&format!("On {} (layer 0 of 0..2)", names[0])),
        "{st}"
    );
    assert_clean(&dir);
    let layer0 = snapshot(&dir);
    assert_eq!(fs::read(dir.join("etc/hostname")).unwrap(), b"rich\n");
    assert!(layer0.contains_key("wh/file-gone"), "layer 1 whites it out");
    assert!(!layer0.contains_key("srv/shared/added"), "layer 2 adds it");
    assert_eq!(layer0["data/big"].mode, 0o600, "layer 2 chmods it");
    assert_eq!((layer0["wh/kept"].uid, layer0["wh/kept"].gid), (0, 0));
    let notes = &layer0["home/app/notes.txt"];
    assert_eq!((notes.uid, notes.gid, notes.mode), (1000, 1000, 0o600));
    let (a, b) = (
        fs::metadata(dir.join("data/a")).unwrap(),
        fs::metadata(dir.join("data/b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hardlink kept");
    assert_eq!(layer0["dev/null-ish"].kind, "char");
    assert_eq!(layer0["run/fifo"].kind, "fifo");
    assert!(dir.join("empty-dir").is_dir());

    // By branch name, then back to the top by ChainID prefix: exactly the pulled tree.
    checkout(&dir, &names[1]);
    assert_clean(&dir);
    let prefix = &names[2][names[2].len() - 64..][..12];
    checkout(&dir, prefix);
    assert_eq!(
        git(&dir, &["symbolic-ref", "--short", "HEAD"]).trim(),
        names[2]
    );
    assert_same_tree(&pulled, &snapshot(&dir));
    assert_clean(&dir);
    // A full ChainID works too, and commit on the top still works.
    let full = format!("sha256:{}", &names[0][names[0].len() - 64..]);
    checkout(&dir, &full);
    assert_eq!(snapshot(&dir), layer0);
    checkout(&dir, "2");
    assert_same_tree(&pulled, &snapshot(&dir));
}

#[test]
fn plain_git_checkout_is_repaired_by_barge_checkout() {
    let tmp = TempDir::new("history");
    let dir = pull_rich(&tmp);
    let pulled = snapshot(&dir);
    let names = branches(&dir);
    git(&dir, &["checkout", "-q", &names[0]]);
    git(&dir, &["checkout", "-q", &names[2]]);
    assert_eq!(git(&dir, &["status", "--porcelain"]), "");
    // git said clean; barge sees what git lost.
    let st = status(&dir);
    assert!(!st.contains("nothing to commit"), "{st}");
    // Refused without --force, then put right with it.
    let out = barge(&["checkout", "2", "-r", s(&dir)]);
    let line = assert_clean_failure(&out, &[]);
    assert!(
        line.contains(&format!("barge status -r {}", dir.display())),
        "{line}"
    );
    assert_success(&barge(&["checkout", "2", "-r", s(&dir), "--force"]));
    assert_same_tree(&pulled, &snapshot(&dir));
    assert_clean(&dir);
}

#[test]
fn checkout_refuses_uncommitted_changes() {
    let tmp = TempDir::new("history");
    let dir = pull_rich(&tmp);
    let names = branches(&dir);
    fs::set_permissions(dir.join("etc/hostname"), fs::Permissions::from_mode(0o600)).unwrap();
    let before = snapshot(&dir);
    let out = barge(&["checkout", "0", "-r", s(&dir)]);
    let line = assert_clean_failure(&out, &[]);
    assert!(line.contains("uncommitted changes"), "{line}");
    assert!(
        line.contains(&format!("run `barge status -r {}`", dir.display())),
        "{line}"
    );
    assert_eq!(snapshot(&dir), before, "a refused checkout changes nothing");
    assert_eq!(
        git(&dir, &["symbolic-ref", "--short", "HEAD"]).trim(),
        names[2]
    );
    // Layers that do not exist are named as such.
    for bad in ["3", "layer_9_00", "sha256:zz", "ffffffffffffffffff"] {
        let line = assert_clean_failure(&barge(&["checkout", bad, "-r", s(&dir)]), &[]);
        assert!(line.contains("layer") || line.contains("ChainID"), "{line}");
    }
}

#[test]
fn commit_on_an_older_layer_names_the_checkout_to_run() {
    let tmp = TempDir::new("history");
    let dir = pull_rich(&tmp);
    let names = branches(&dir);
    checkout(&dir, "1");
    fs::write(dir.join("etc/new-file"), b"new\n").unwrap();
    let st = status(&dir);
    assert!(st.lines().any(|l| l == "A  etc/new-file"), "{st}");
    let out = barge(&["commit", "-r", s(&dir), "-m", "on layer 1"]);
    let line = assert_clean_failure(&out, &[]);
    let want = format!(
        "run `barge checkout {} -r {}` first",
        names[2],
        dir.display()
    );
    assert!(line.ends_with(&want), "{line}");
    assert_eq!(branches(&dir).len(), 3, "no layer made");
    assert_eq!(git(&dir, &["branch", "--list"]).lines().count(), 3);
}
