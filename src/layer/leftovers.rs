//! What a barge run killed by SIGKILL or a power cut leaves behind, how a live run
//! is told from a dead one, and removing what the dead ones left.
//!
//! Liveness is an `flock(2)` (LOCK_EX), never a guessed pid: every pull holds one
//! on its staging directory, every commit on the `.git/barge` directory, from the moment
//! they exist until the process is gone. The lock's descriptor is inherited by the
//! `git` children (FD_CLOEXEC cleared), so a run counts as live until the last git
//! it started has exited too. A leftover is removed only after `LOCK_EX|LOCK_NB` on
//! it succeeded, and while that lock is held; a locked one belongs to a live run
//! and is left alone. Only barge's own names are ever candidates (see
//! [`is_staging_name`] and [`dead_commit_files`]).

use crate::error::{Error, Result};
use crate::layer::fsroot::remove_tree_at;
use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Random suffix length of a staging directory (`PREFIX-XXXXXX`).
const SUFFIX_LEN: usize = 6;

/// An exclusive `flock` held until dropped (or until the process and every child
/// that inherited it are gone).
pub struct Lock {
    _fd: OwnedFd,
}

/// Whether `name` is `<prefix>-XXXXXX` (six of `[a-z0-9]`), the name barge gives
/// its staging directories.
pub fn is_staging_name(name: &[u8], prefix: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix.as_bytes()) else {
        return false;
    };
    let Some(suffix) = rest.strip_prefix(b"-") else {
        return false;
    };
    suffix.len() == SUFFIX_LEN
        && suffix
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Locks a staging directory barge has just made; fails if another run's cleanup
/// removed it in the instant between its `mkdir` and this lock.
pub fn lock_new_dir(path: &Path) -> Result<Lock> {
    let gone = || {
        Error::new(format!(
            "staging directory {} was removed by another barge run",
            path.display()
        ))
        .hint("run the command again")
    };
    let fd = open_dir_nofollow(libc::AT_FDCWD, path.as_os_str().as_bytes()).map_err(|_| gone())?;
    if !try_flock(fd.as_raw_fd()).map_err(Error::from)? || !same_file(&fd, path) {
        return Err(gone());
    }
    inherit(&fd);
    Ok(Lock { _fd: fd })
}

/// Locks the directory `lock_dir` (`.git/barge`) as the lock of the barge tree
/// `dir` (no lock file: nothing is left behind); another live run holding it gives
/// "another barge is working on DIR (pid N)".
pub fn lock_tree(lock_dir: &Path, dir: &Path) -> Result<Lock> {
    let fd = open_dir_nofollow(libc::AT_FDCWD, lock_dir.as_os_str().as_bytes())
        .map_err(|e| Error::from(e).context(format!("opening {}", lock_dir.display())))?;
    lock_or_wait(&fd, dir)?;
    inherit(&fd);
    Ok(Lock { _fd: fd })
}

/// How long a lock whose barge is dead may still be held by its git children.
const CHILD_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a lock held by a live process is waited for: a moment, for a copy of
/// its descriptor that a process forking beside it holds until its `exec`.
const LIVE_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Takes the lock on `fd`. Held by a live barge (for longer than a moment):
/// "another barge is working on DIR". Held only by the children of a dead one (a
/// `git` finishing after barge was killed): waits for them, a few seconds at most.
fn lock_or_wait(fd: &OwnedFd, dir: &Path) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        if try_flock(fd.as_raw_fd())? {
            return Ok(());
        }
        let pid = holder(fd);
        let dead = pid.is_some_and(|p| !alive(p));
        let waited = start.elapsed();
        if (!dead && waited > LIVE_GRACE) || waited > CHILD_GRACE {
            return Err(busy(dir, pid));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether process `pid` exists (a zombie counts: its parent has not reaped it).
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// "another barge is working on DIR (pid N)".
fn busy(dir: &Path, pid: Option<u32>) -> Error {
    let who = pid.map_or(String::new(), |p| format!(" (pid {p})"));
    Error::new(format!(
        "another barge is working on {}{who}",
        dir.display()
    ))
    .hint("wait for it to finish, then run this again")
}

/// Removes the staging directories of dead runs for `target` (`<beside>-XXXXXX`
/// next to it, `<inside>-XXXXXX` in it when it is a directory). A live run's
/// staging directory for the same target is an error: two pulls cannot share it.
/// Returns what was removed.
pub fn remove_dead_staging(target: &Path, beside: &str, inside: &str) -> Result<Vec<PathBuf>> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut removed = Vec::new();
    if let Ok(dir) = open_dir_nofollow(libc::AT_FDCWD, parent.as_os_str().as_bytes()) {
        remove_dead_in(&dir, parent, beside, target, &mut removed)?;
    }
    // Inside the target only while it holds nothing but staging directories (an
    // empty mount point a pull was killed in): a populated tree's own entries that
    // happen to bear the name (an image can ship one) are never candidates.
    let is_dir = std::fs::symlink_metadata(target).is_ok_and(|m| m.is_dir());
    let only_staging = || {
        std::fs::read_dir(target).is_ok_and(|rd| {
            rd.into_iter()
                .all(|e| e.is_ok_and(|e| is_staging_name(e.file_name().as_bytes(), inside)))
        })
    };
    if is_dir && only_staging() {
        if let Ok(dir) = open_dir_nofollow(libc::AT_FDCWD, target.as_os_str().as_bytes()) {
            remove_dead_in(&dir, target, inside, target, &mut removed)?;
        }
    }
    Ok(removed)
}

/// One directory's staging candidates named `<prefix>-XXXXXX`. The candidates
/// are locked under the directory's [`guard`], so that a run between its `mkdir`
/// and its lock is never taken for a dead one; they are removed after it.
fn remove_dead_in(
    dir: &OwnedFd,
    shown: &Path,
    prefix: &str,
    target: &Path,
    removed: &mut Vec<PathBuf>,
) -> Result<()> {
    let guard = flock_bounded(dir.try_clone()?, target)?;
    let names = crate::layer::fsroot::read_dir_fd(dir.try_clone()?)?;
    let mut dead = Vec::new();
    for (name, _) in names {
        if !is_staging_name(&name, prefix) {
            continue;
        }
        let Ok(fd) = open_dir_nofollow(dir.as_raw_fd(), &name) else {
            continue; // not a directory (or gone): not ours
        };
        lock_or_wait(&fd, target)?;
        let c = cstring(&name)?;
        if same_file_at(&fd, dir.as_raw_fd(), &c) {
            dead.push((fd, c, shown.join(OsStr::from_bytes(&name))));
        }
    }
    drop(guard);
    for (fd, c, path) in dead {
        remove_tree_at(dir.as_raw_fd(), &c).map_err(|e| {
            Error::from(e)
                .context(format!("removing {}", path.display()))
                .hint("remove it by hand")
        })?;
        removed.push(path);
        drop(fd); // the lock is released only now that the tree is gone
    }
    Ok(())
}

/// A short exclusive lock on the directory `dir` in which staging directories are
/// made: held from `mkdir` to [`lock_new_dir`] by a new run, and while a cleanup
/// picks its candidates. None when the directory cannot be opened for it; an error
/// when another run keeps it longer than [`GUARD_WAIT`] (e.g. stopped with Ctrl-Z).
pub fn guard(dir: &Path, target: &Path) -> Result<Option<Lock>> {
    match open_dir_nofollow(libc::AT_FDCWD, dir.as_os_str().as_bytes()) {
        Ok(fd) => flock_bounded(fd, target).map(Some),
        Err(_) => Ok(None),
    }
}

/// How long a run waits for another one's [`guard`].
const GUARD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn flock_bounded(fd: OwnedFd, target: &Path) -> Result<Lock> {
    let start = std::time::Instant::now();
    while !try_flock(fd.as_raw_fd())? {
        if start.elapsed() > GUARD_WAIT {
            return Err(busy(target, holder(&fd)));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(Lock { _fd: fd })
}

/// Files of dead runs in the barge tree `root`, to be removed while holding the
/// tree's lock ([`lock_tree`]): barge's temporary files in `.git/barge` and
/// `.git/objects/pack`, and what a `git` it started can leave when it is killed
/// (temporary packs, `*.lock` of the files barge makes git write, fast-import's
/// crash report of a barge import). git's files that any live process still has
/// open are left alone (a user's own git may be working there).
pub fn dead_commit_files(root: &Path) -> Vec<PathBuf> {
    let git = root.join(".git");
    let barge = git.join("barge");
    let mut found = Vec::new();
    for dir in [
        barge.clone(),
        barge.join("layers"),
        barge.join("blobs/sha256"),
    ] {
        found.extend(names_in(&dir, is_barge_temp));
    }
    found.extend(names_in(&git.join("objects/pack"), |n| {
        n.starts_with(b"tmp_barge_")
    }));
    let mut gits = names_in(&git.join("objects/pack"), |n| {
        n.starts_with(b"tmp_pack_") || n.starts_with(b"tmp_idx_") || n.starts_with(b"tmp_rev_")
    });
    for n in ["HEAD.lock", "index.lock", "packed-refs.lock", "config.lock"] {
        gits.extend(names_in(&git, |x| x == n.as_bytes()));
    }
    gits.extend(names_in(&git.join("refs/heads"), |n| {
        n.starts_with(b"layer_") && n.ends_with(b".lock")
    }));
    gits.extend(names_in(&git.join("info"), |n| n == b"exclude.barge-tmp"));
    found.extend(not_open_anywhere(gits));
    found.extend(
        names_in(&git, |n| n.starts_with(b"fast_import_crash_"))
            .into_iter()
            .filter(|p| is_barge_import_report(p)),
    );
    found
}

/// Removes `files` (plain files only), returning those removed.
pub fn remove_files(files: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for f in files {
        match std::fs::remove_file(&f) {
            Ok(()) => removed.push(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::from(e)
                    .context(format!("removing {}", f.display()))
                    .hint("remove it by hand"))
            }
        }
    }
    Ok(removed)
}

/// The one line that says what was removed.
pub fn report(removed: &[PathBuf]) -> Option<String> {
    if removed.is_empty() {
        return None;
    }
    let list: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
    Some(format!(
        "Removed leftovers of an interrupted barge run: {}",
        list.join(", ")
    ))
}

/// `NAME.tmp<digits>` (store's atomic writes) or `.layer.tmp<digits>` (layer blobs).
fn is_barge_temp(name: &[u8]) -> bool {
    let Some(at) = name.windows(4).rposition(|w| w == b".tmp") else {
        return false;
    };
    let digits = &name[at + 4..];
    at > 0 && !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// A fast-import crash report of a barge import (its commands name layer branches).
fn is_barge_import_report(p: &Path) -> bool {
    std::fs::read(p).is_ok_and(|t| {
        t.starts_with(b"fast-import crash report:")
            && t.windows(22).any(|w| w == b"commit refs/heads/laye")
    })
}

/// Regular files in `dir` whose name passes `pick`.
fn names_in(dir: &Path, pick: impl Fn(&[u8]) -> bool) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| pick(e.file_name().as_bytes()))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect()
}

/// The files of `files` that no process has open (by /proc/*/fd).
fn not_open_anywhere(files: Vec<PathBuf>) -> Vec<PathBuf> {
    if files.is_empty() {
        return files;
    }
    let open = open_files();
    files
        .into_iter()
        .filter(|f| std::fs::symlink_metadata(f).is_ok_and(|m| !open.contains(&(m.dev(), m.ino()))))
        .collect()
}

/// (dev, ino) of every file some process has open, as far as /proc shows them.
fn open_files() -> HashSet<(u64, u64)> {
    let mut set = HashSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return set;
    };
    for p in procs.flatten() {
        if !p.file_name().as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(m) = std::fs::metadata(fd.path()) {
                set.insert((m.dev(), m.ino()));
            }
        }
    }
    set
}

/// The pid holding an flock on `fd`'s file, from /proc/locks.
fn holder(fd: &OwnedFd) -> Option<u32> {
    let m = crate::layer::fsroot::fstat(fd.as_raw_fd()).ok()?;
    let (dev, ino) = (m.dev, m.ino);
    let want = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let at = f.iter().position(|x| *x == want)?;
        if f.contains(&"->") || !f.contains(&"FLOCK") {
            return None;
        }
        f.get(at.checked_sub(1)?)?.parse().ok()
    })
}

/// `flock(LOCK_EX | LOCK_NB)`: Ok(false) when another open file holds it.
fn try_flock(fd: RawFd) -> std::io::Result<bool> {
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// Lets child processes (git) inherit the lock, so that it outlives barge as long
/// as they run. Not in unit tests: their threads spawn gits for one another, which
/// would keep each other's locks.
fn inherit(fd: &OwnedFd) {
    if cfg!(test) {
        return;
    }
    // SAFETY: fcntl on a descriptor we own; failure only keeps FD_CLOEXEC.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) };
}

fn open_dir_nofollow(at: RawFd, name: &[u8]) -> std::io::Result<OwnedFd> {
    let c = cstring(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: openat with a NUL-terminated name; the fd is owned right after.
    let fd = unsafe {
        libc::openat(
            at,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `path` still names the directory `fd` is open on.
fn same_file(fd: &OwnedFd, path: &Path) -> bool {
    match (
        crate::layer::fsroot::fstat(fd.as_raw_fd()),
        std::fs::symlink_metadata(path),
    ) {
        (Ok(a), Ok(b)) => a.dev == b.dev() && a.ino == b.ino(),
        _ => false,
    }
}

/// Whether `name` in `dir` still is the directory `fd` is open on.
fn same_file_at(fd: &OwnedFd, dir: RawFd, name: &CString) -> bool {
    let a = crate::layer::fsroot::fstat(fd.as_raw_fd());
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat into a zeroed stat buffer.
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    matches!(a, Ok(a) if r == 0 && a.dev == st.st_dev && a.ino == st.st_ino)
}

fn cstring(b: &[u8]) -> Result<CString> {
    CString::new(b).map_err(|_| Error::new("NUL byte in a path"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::fsroot::tests::TempDir;

    #[test]
    fn staging_names_are_exact() {
        assert!(is_staging_name(b".root.barge-a1b2c3", ".root.barge"));
        for n in [
            &b".root.barge-notes"[..],
            b".root.barge-abcdefg",
            b".root.barge-ABCDEF",
            b".root.barge_abcdef",
            b".root.barge-abc/ef",
            b".root.barge",
            b".other.barge-abcdef",
        ] {
            assert!(!is_staging_name(n, ".root.barge"), "{n:?}");
        }
        assert!(is_barge_temp(b"record.tmp123"));
        assert!(is_barge_temp(b".layer.tmp9"));
        assert!(!is_barge_temp(b".tmp12"));
        assert!(!is_barge_temp(b"notes.tmp"));
        assert!(!is_barge_temp(b"x.tmp12a"));
    }

    #[test]
    fn dead_staging_goes_live_staging_stays() {
        let t = TempDir::new("leftovers");
        let target = t.path().join("rootfs");
        let dead = t.path().join(".rootfs.barge-dead01");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("f"), b"x").unwrap();
        let user = t.path().join(".rootfs.barge-notes");
        std::fs::create_dir(&user).unwrap();
        let removed = remove_dead_staging(&target, ".rootfs.barge", ".barge-staging").unwrap();
        assert_eq!(removed, std::slice::from_ref(&dead));
        assert!(user.is_dir() && !dead.exists());
        let live = t.path().join(".rootfs.barge-live01");
        std::fs::create_dir(&live).unwrap();
        let lock = lock_new_dir(&live).unwrap();
        let e = remove_dead_staging(&target, ".rootfs.barge", ".barge-staging").unwrap_err();
        let pid = std::process::id();
        assert!(
            e.message()
                .contains(&format!("another barge is working on {}", target.display())),
            "{e}"
        );
        assert!(e.message().contains(&format!("pid {pid}")), "{e}");
        assert!(live.is_dir());
        drop(lock);
        let removed = remove_dead_staging(&target, ".rootfs.barge", ".barge-staging").unwrap();
        assert_eq!(removed, [live]);
    }

    /// A populated target (a pulled tree given to pull again by mistake) keeps an
    /// entry of its own that bears the inside staging name; an otherwise empty one
    /// (a mount point a pull was killed in) is cleaned.
    #[test]
    fn inside_a_populated_target_nothing_is_removed() {
        let t = TempDir::new("leftovers-inside");
        let target = t.path().join("rootfs");
        let image_dir = target.join(".barge-staging-abc123");
        std::fs::create_dir_all(&image_dir).unwrap();
        std::fs::write(image_dir.join("data"), b"image").unwrap();
        std::fs::write(target.join("etc"), b"image").unwrap();
        let removed = remove_dead_staging(&target, ".rootfs.barge", ".barge-staging").unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        assert_eq!(std::fs::read(image_dir.join("data")).unwrap(), b"image");
        std::fs::remove_file(target.join("etc")).unwrap();
        let removed = remove_dead_staging(&target, ".rootfs.barge", ".barge-staging").unwrap();
        assert_eq!(removed, [image_dir]);
    }

    #[test]
    fn tree_lock_is_exclusive() {
        let t = TempDir::new("leftovers-lock");
        let held = lock_tree(t.path(), t.path()).unwrap();
        // A second open file description: what a second barge process would get.
        let e = lock_tree(t.path(), t.path()).err().unwrap();
        assert!(e.message().contains("another barge is working on"), "{e}");
        drop(held);
        lock_tree(t.path(), t.path()).unwrap();
        assert!(list(t.path()).is_empty(), "no lock file");
    }

    fn list(p: &Path) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }
}
