//! Atomic placement: extract into a staging directory and rename it into place only on success; remove it on failure.
//!
//! If the target does not exist, the staging directory is made beside it
//! (`.<name>.barge-XXXXXX`, same filesystem) and renamed onto it at the end. If
//! the target is an empty directory (often a freshly mounted filesystem), the
//! staging directory is made inside it and its children are moved up at the end.
//! Until `commit`, dropping the `Stage` removes everything it created, so the
//! target is left exactly as it was.
//!
//! Inside the staging directory S, the tree is built in `S/rootfs` (the root layers
//! are applied to) and `pull -g` keeps its git repository in `S/git`, a sibling the
//! root can never reach (every path is resolved inside the root, see `fsroot`),
//! whatever an image names. [`Stage::install_git`] makes it the tree's `.git` once
//! the last layer is in, replacing whatever the image put there.

use crate::error::{Context, Error, Result};
use crate::layer::fsroot::{self, remove_tree_at};
use crate::layer::leftovers::{self, Lock};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the staging directory while layers are extracted into it.
const STAGING_MODE: u32 = 0o700;
/// Mode given to the target if no layer set the root directory's mode.
const DEFAULT_ROOT_MODE: u32 = 0o755;
/// The tree's directory inside the staging directory.
const ROOT_NAME: &str = "rootfs";
/// The git directory's place inside the staging directory, beside the tree.
const GIT_NAME: &str = "git";

/// The mode [`Stage::commit`] gives the target, given the staging root's `st_mode`
/// after extraction (the staging mode itself means no layer set one).
pub fn final_root_mode(staging_mode: u32) -> u32 {
    match staging_mode & 0o7777 {
        STAGING_MODE => DEFAULT_ROOT_MODE,
        m => m,
    }
}

/// Name prefix of the staging directory made inside an empty target.
pub const INSIDE_PREFIX: &str = ".barge-staging";

/// Name prefix of the staging directory made beside `target`: `.<name>.barge`.
pub fn beside_prefix(target: &Path) -> Option<String> {
    let name = target.file_name()?;
    Some(format!(".{}.barge", name.to_string_lossy()))
}

/// The directory the staging directory of `target` is made in.
fn staging_parent(target: &Path, inside: bool) -> &Path {
    match target.parent() {
        _ if inside => target,
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Removes the staging directories that dead barge runs left for `target` (see
/// [`leftovers`]); a live run's is an error. Returns what was removed.
pub fn remove_dead_staging(target: &Path) -> Result<Vec<PathBuf>> {
    match beside_prefix(target) {
        Some(beside) => leftovers::remove_dead_staging(target, &beside, INSIDE_PREFIX),
        None => Ok(Vec::new()),
    }
}

/// A staging directory that becomes `target` on `commit` and vanishes otherwise.
pub struct Stage {
    target: PathBuf,
    staging: PathBuf,
    /// The staging directory is inside an existing empty target.
    inside: bool,
    committed: bool,
    /// Held while this run lives: tells other runs the staging dir is not debris.
    _lock: Lock,
    /// Whether `commit` makes the tree durable before and after placing it.
    sync: bool,
}

impl Stage {
    /// Prepares staging for `target`, which must not exist or be an empty directory.
    pub fn create(target: &Path) -> Result<Stage> {
        let shown = target.display();
        let inside = match std::fs::metadata(target) {
            Ok(m) if !m.is_dir() => {
                return Err(Error::new(format!("{shown} exists and is not a directory"))
                    .hint("choose another directory with --rootfs"))
            }
            Ok(_) => {
                let mut entries =
                    std::fs::read_dir(target).with_context(|| format!("reading {shown}"))?;
                if entries.next().is_some() {
                    return Err(Error::new(format!("{shown} exists and is not empty")).hint(
                        "choose another directory with --rootfs, or remove or empty this one",
                    ));
                }
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::from(e).context(format!("checking {shown}"))),
        };
        // No cleanup by another run may see the new directory before it is locked.
        let guard = leftovers::guard(staging_parent(target, inside), target)?;
        let staging = if inside {
            make_unique_dir(target, INSIDE_PREFIX)?
        } else {
            target
                .file_name()
                .ok_or_else(|| Error::new(format!("invalid target directory {shown}")))?;
            let parent = match target.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            make_unique_dir(parent, &beside_prefix(target).unwrap_or_default()).map_err(|e| {
                e.hint(format!(
                    "make sure the parent directory of {shown} exists and is writable"
                ))
            })?
        };
        let lock = match leftovers::lock_new_dir(&staging) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir(&staging);
                return Err(e);
            }
        };
        drop(guard);
        let stage = Stage {
            target: target.to_path_buf(),
            staging,
            inside,
            committed: false,
            _lock: lock,
            sync: true,
        };
        make_dir(&stage.root_path())?;
        Ok(stage)
    }

    /// `commit` skips the syncs (`--no-sync`): faster, but a power cut soon after
    /// may lose part of the tree.
    pub fn no_sync(&mut self) {
        self.sync = false;
    }

    /// The staging directory itself (it holds [`Self::root_path`] and
    /// [`Self::git_path`]; a pull's download spool goes there too).
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Where the layers are to be extracted: the directory that becomes the target.
    pub fn root_path(&self) -> PathBuf {
        self.staging.join(ROOT_NAME)
    }

    /// Where `pull -g` creates its git directory: beside the root, out of its reach.
    pub fn git_path(&self) -> PathBuf {
        self.staging.join(GIT_NAME)
    }

    /// Makes [`Self::git_path`] (if it exists) the root's `.git`: whatever the layers
    /// left at `.git` (a directory, file, symlink, hardlink, ...) is removed first,
    /// never following a link; returns whether there was something. [`Self::commit`]
    /// does it if it was not done.
    pub fn install_git(&self) -> Result<bool> {
        let staging = open_dir(&self.staging)?;
        let git = CString::new(GIT_NAME).map_err(|_| Error::new("NUL byte in a name"))?;
        if lstat_is_dir(staging.as_raw_fd(), &git)
            .context("checking the git directory")?
            .is_none()
        {
            return Ok(false);
        }
        let root_path = self.root_path();
        let root = open_dir(&root_path)?;
        // The layers set the root's mode and mtime: the swap changes neither (a root
        // without write permission is opened for the owner meanwhile).
        let before = std::fs::symlink_metadata(&root_path)
            .with_context(|| format!("reading {}", root_path.display()))?;
        let mode = before.permissions().mode() & 0o7777;
        if mode & 0o300 != 0o300 && unsafe { libc::fchmod(root.as_raw_fd(), mode | 0o700) } < 0 {
            return Err(Error::from(std::io::Error::last_os_error())
                .context(format!("opening {} for the owner", root_path.display())));
        }
        let swapped = swap_git(&staging, &git, &root);
        let restored = apply_root_meta(&root_path, &before, mode);
        let had = swapped?;
        restored.with_context(|| format!("restoring the metadata of {}", root_path.display()))?;
        Ok(had)
    }

    /// Puts the extracted tree in place as the target, with the root directory's
    /// mode, owner and mtime as the layers set them.
    pub fn commit(mut self) -> Result<()> {
        self.install_git()?;
        let root = self.root_path();
        let meta = std::fs::symlink_metadata(&root)
            .with_context(|| format!("reading {}", root.display()))?;
        let mode = final_root_mode(meta.permissions().mode());
        let shown = self.target.display().to_string();
        if self.sync {
            sync_filesystem(&self.staging)
                .with_context(|| format!("writing the extracted tree to disk for {shown}"))?;
        }
        if self.inside {
            self.move_children_up()
                .with_context(|| format!("moving the extracted tree into {shown}"))?;
        } else {
            std::fs::rename(&root, &self.target)
                .with_context(|| format!("renaming the extracted tree to {shown}"))?;
            std::fs::remove_dir(&self.staging)
                .with_context(|| format!("removing {}", self.staging.display()))?;
        }
        self.committed = true;
        apply_root_meta(&self.target, &meta, mode)
            .with_context(|| format!("setting the metadata of {shown}"))?;
        if self.sync {
            self.sync_placement()
                .with_context(|| format!("writing {shown} to disk"))?;
        }
        Ok(())
    }

    /// After the rename: the target itself (its new children and metadata) and the
    /// directory that holds its name.
    fn sync_placement(&self) -> Result<()> {
        sync_dir(&self.target)?;
        match self.target.parent() {
            Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
            _ => sync_dir(Path::new(".")),
        }
    }

    /// Inside-target case: renames each child of the staging dir into the target.
    fn move_children_up(&self) -> Result<()> {
        let staging = open_dir(&self.root_path())?;
        let target = open_dir(&self.target)?;
        let children = fsroot::read_dir_fd(dup(&staging)?)?;
        for (name, _) in children {
            let c = CString::new(name).map_err(|_| Error::new("NUL byte in a file name"))?;
            let r = unsafe {
                libc::renameat(
                    staging.as_raw_fd(),
                    c.as_ptr(),
                    target.as_raw_fd(),
                    c.as_ptr(),
                )
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
        std::fs::remove_dir(self.root_path())?;
        std::fs::remove_dir(&self.staging)?;
        Ok(())
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Remove the staging tree by fd, never following symlinks inside it.
        let (Some(parent), Some(name)) = (self.staging.parent(), self.staging.file_name()) else {
            return;
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let (Ok(dir), Ok(name)) = (open_dir(parent), CString::new(name.as_bytes())) {
            let _ = remove_tree_at(dir.as_raw_fd(), &name);
        }
    }
}

/// `syncfs(2)` of the filesystem holding `path`: every file written there is on disk.
pub fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = open_dir(path)?;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// `fsync(2)` of a directory: its entries (renames, new names) are on disk.
pub fn sync_dir(path: &Path) -> Result<()> {
    let dir = open_dir(path)?;
    // SAFETY: fsync on a descriptor we own.
    if unsafe { libc::fsync(dir.as_raw_fd()) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Removes whatever is at `root/.git` (not following links), then renames
/// `staging/git` to it; returns whether there was something.
fn swap_git(staging: &OwnedFd, git: &std::ffi::CStr, root: &OwnedFd) -> Result<bool> {
    let dot_git = CString::new(".git").map_err(|_| Error::new("NUL byte in a name"))?;
    let had = remove_any_at(root.as_raw_fd(), &dot_git)
        .context("removing the image's own /.git from the extracted tree")?;
    let r = unsafe {
        libc::renameat(
            staging.as_raw_fd(),
            git.as_ptr(),
            root.as_raw_fd(),
            dot_git.as_ptr(),
        )
    };
    if r < 0 {
        return Err(Error::from(std::io::Error::last_os_error())
            .context("moving the git repository into the extracted tree"));
    }
    Ok(had)
}

/// Owner (where permitted), mode and mtime of the committed root.
fn apply_root_meta(target: &Path, meta: &std::fs::Metadata, mode: u32) -> Result<()> {
    let dir = open_dir(target)?;
    let fd = dir.as_raw_fd();
    let now = std::fs::metadata(target)?;
    if now.uid() != meta.uid() || now.gid() != meta.gid() {
        // Not root: the owner cannot be changed; that is expected and not an error.
        let _ = unsafe { libc::fchown(fd, meta.uid(), meta.gid()) };
    }
    if unsafe { libc::fchmod(fd, mode as libc::mode_t) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let mut atime: libc::timespec = unsafe { std::mem::zeroed() };
    atime.tv_nsec = libc::UTIME_OMIT;
    let mtime = super::fsroot::timespec((meta.mtime(), meta.mtime_nsec()))?;
    let ts = [atime, mtime];
    if unsafe { libc::futimens(fd, ts.as_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Removes `name` in `dir` whatever it is, never following a symlink; returns
/// whether it existed.
fn remove_any_at(dir: std::os::fd::RawFd, name: &std::ffi::CStr) -> Result<bool> {
    match lstat_is_dir(dir, name)? {
        None => return Ok(false),
        Some(true) => remove_tree_at(dir, name)?,
        Some(false) => {
            if unsafe { libc::unlinkat(dir, name.as_ptr(), 0) } < 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
    }
    Ok(true)
}

/// Whether `name` in `dir` is a directory (None: it does not exist), not following links.
fn lstat_is_dir(dir: std::os::fd::RawFd, name: &std::ffi::CStr) -> std::io::Result<Option<bool>> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(st.st_mode & libc::S_IFMT == libc::S_IFDIR))
}

/// Creates directory `p` with exactly the staging mode.
fn make_dir(p: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(STAGING_MODE)
        .create(p)
        .and_then(|()| std::fs::set_permissions(p, std::fs::Permissions::from_mode(STAGING_MODE)))
        .with_context(|| format!("creating {}", p.display()))
}

/// Creates `dir/<prefix>-XXXXXX` (mode 0700) with a fresh random-ish suffix.
fn make_unique_dir(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut seed = seed();
    for _ in 0..100 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let suffix: String = (0..6)
            .map(|i| {
                const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
                let k = ((seed >> (10 + i * 6)) % CHARS.len() as u64) as usize;
                CHARS.get(k).copied().unwrap_or(b'x') as char
            })
            .collect();
        let path = dir.join(format!("{prefix}-{suffix}"));
        match std::fs::DirBuilder::new().mode(STAGING_MODE).create(&path) {
            Ok(()) => {
                // The umask may have narrowed the mode; make it exactly 0700.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(STAGING_MODE))?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::from(e)
                    .context(format!("creating a staging directory in {}", dir.display())))
            }
        }
    }
    Err(Error::new(format!(
        "creating a staging directory in {}: too many name collisions",
        dir.display()
    )))
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}

fn open_dir(p: &Path) -> Result<OwnedFd> {
    let c = CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::new("NUL byte in a path"))?;
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::from(std::io::Error::last_os_error()).context(p.display()));
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd> {
    Ok(fd.try_clone()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::fsroot::tests::TempDir;

    fn names(p: &Path) -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn fill(p: &Path) {
        std::fs::create_dir(p.join("etc")).unwrap();
        std::fs::write(p.join("etc/hostname"), b"h").unwrap();
        std::os::unix::fs::symlink("/", p.join("loop")).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o751)).unwrap();
    }

    #[test]
    fn commit_into_new_directory() {
        let t = TempDir::new("stage");
        let target = t.path().join("rootfs");
        let s = Stage::create(&target).unwrap();
        assert!(s.path().starts_with(t.path()));
        assert!(s
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".rootfs.barge-"));
        assert_eq!(
            std::fs::metadata(s.root_path())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        fill(&s.root_path());
        s.commit().unwrap();
        assert_eq!(names(t.path()), ["rootfs"]);
        assert_eq!(names(&target), ["etc", "loop"]);
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
            0o751
        );
    }

    #[test]
    fn commit_into_empty_existing_directory() {
        let t = TempDir::new("stage");
        let target = t.path().join("mnt");
        std::fs::create_dir(&target).unwrap();
        let s = Stage::create(&target).unwrap();
        assert!(s.path().starts_with(&target));
        fill(&s.root_path());
        s.commit().unwrap();
        assert_eq!(names(&target), ["etc", "loop"]);
        assert_eq!(names(t.path()), ["mnt"]);
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
            0o751
        );
    }

    #[test]
    fn refuses_non_empty_directory_and_files() {
        let t = TempDir::new("stage");
        let target = t.path().join("full");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"").unwrap();
        let e = Stage::create(&target).err().unwrap();
        assert!(e.message().ends_with("exists and is not empty"), "{e}");
        assert!(e.hint_text().is_some());
        std::fs::write(t.path().join("file"), b"").unwrap();
        assert!(Stage::create(&t.path().join("file")).is_err());
        assert!(Stage::create(&t.path().join("no/such/parent")).is_err());
        assert_eq!(names(t.path()), ["file", "full"]);
    }

    #[test]
    fn drop_cleans_up_without_following_symlinks() {
        let t = TempDir::new("stage");
        std::fs::write(t.path().join("canary"), b"alive").unwrap();
        let target = t.path().join("new");
        let s = Stage::create(&target).unwrap();
        fill(&s.root_path());
        std::os::unix::fs::symlink(t.path(), s.root_path().join("up")).unwrap();
        std::fs::create_dir(s.root_path().join("ro")).unwrap();
        std::fs::write(s.root_path().join("ro/f"), b"").unwrap();
        std::fs::set_permissions(
            s.root_path().join("ro"),
            std::fs::Permissions::from_mode(0o555),
        )
        .unwrap();
        drop(s);
        assert_eq!(names(t.path()), ["canary"]);
        // Inside an empty target: the target stays, empty.
        let target = t.path().join("mnt");
        std::fs::create_dir(&target).unwrap();
        let s = Stage::create(&target).unwrap();
        fill(&s.root_path());
        drop(s);
        assert!(names(&target).is_empty());
        assert_eq!(std::fs::read(t.path().join("canary")).unwrap(), b"alive");
    }

    #[test]
    fn install_git_replaces_any_dot_git_without_following_links() {
        let t = TempDir::new("stage");
        std::fs::create_dir(t.path().join("outside")).unwrap();
        std::fs::write(t.path().join("outside/keep"), b"k").unwrap();
        type Make = fn(&Path, &Path);
        let kinds: [(&str, Make); 6] = [
            ("dir", |r, _| {
                std::fs::create_dir_all(r.join(".git/hooks")).unwrap();
                std::fs::write(r.join(".git/hooks/post-checkout"), b"x").unwrap();
                std::fs::set_permissions(r.join(".git/hooks"), PermissionsExt::from_mode(0o500))
                    .unwrap();
            }),
            ("file", |r, _| {
                std::fs::write(r.join(".git"), b"gitdir: /tmp\n").unwrap()
            }),
            ("symlink", |r, out| {
                std::os::unix::fs::symlink(out, r.join(".git")).unwrap()
            }),
            ("hardlink", |r, _| {
                std::fs::write(r.join("f"), b"f").unwrap();
                std::fs::hard_link(r.join("f"), r.join(".git")).unwrap();
            }),
            ("fifo", |r, _| {
                let c = CString::new(r.join(".git").as_os_str().as_bytes()).unwrap();
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
            }),
            ("none", |_, _| {}),
        ];
        for (name, make) in kinds {
            let target = t.path().join(name);
            let s = Stage::create(&target).unwrap();
            let root = s.root_path();
            make(&root, &t.path().join("outside"));
            std::fs::create_dir(s.git_path()).unwrap();
            std::fs::write(s.git_path().join("HEAD"), b"barge").unwrap();
            // A read-only root with the image's mtime keeps both.
            std::fs::set_permissions(&root, PermissionsExt::from_mode(0o555)).unwrap();
            let c = CString::new(root.as_os_str().as_bytes()).unwrap();
            let mut ts: [libc::timespec; 2] = unsafe { std::mem::zeroed() };
            ts[0].tv_nsec = libc::UTIME_OMIT;
            ts[1].tv_sec = 1000;
            assert_eq!(
                unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) },
                0
            );
            assert_eq!(s.install_git().unwrap(), name != "none", "{name}");
            let m = std::fs::metadata(&root).unwrap();
            assert_eq!((m.mode() & 0o7777, m.mtime()), (0o555, 1000), "{name}");
            assert!(!s.git_path().exists(), "{name}");
            assert_eq!(std::fs::read(root.join(".git/HEAD")).unwrap(), b"barge");
            assert_eq!(names(&root.join(".git")), ["HEAD"], "{name}");
            s.commit().unwrap();
            assert_eq!(std::fs::read(target.join(".git/HEAD")).unwrap(), b"barge");
        }
        assert_eq!(names(&t.path().join("outside")), ["keep"]);
        assert_eq!(
            names(t.path()),
            ["dir", "fifo", "file", "hardlink", "none", "outside", "symlink"]
        );
        assert_eq!(std::fs::read(t.path().join("hardlink/f")).unwrap(), b"f");
    }
}
