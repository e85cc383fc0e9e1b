//! A directory handle that only ever touches paths inside itself: every path resolved in the root (openat2 RESOLVE_IN_ROOT or an O_NOFOLLOW walk).
//!
//! Every operation takes an [`ImagePath`] (relative, normalised bytes). Its parent
//! is resolved *inside* the root: symlinks in the middle of the path are followed
//! as if the root were `/` (absolute targets restart at the root, `..` stops at
//! it), exactly like `openat2(RESOLVE_IN_ROOT)`. The final component is never
//! followed. Nothing outside the root can be reached, whatever the tree holds.
//!
//! Where the kernel lacks openat2 (or a seccomp filter refuses it), or when
//! `BARGE_NO_OPENAT2=1` is set, a component-by-component walk does the same with
//! `openat(O_NOFOLLOW)` and `readlinkat`.
//!
//! Operations return `io::Result` so that callers can act on the errno
//! (`NotFound`, `AlreadyExists`, ...); the unpacker adds the path as context.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// At most this many symlinks are followed while resolving one path (as Linux does).
const MAX_SYMLINK_HOPS: u32 = 40;

/// What `lstat` says about an entry (the parts the unpacker needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Full `st_mode`: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
}

impl Meta {
    fn from_stat(st: &libc::stat) -> Meta {
        Meta {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            // i32 on 32-bit targets built without 64-bit time_t (see `timespec`).
            #[allow(clippy::useless_conversion)]
            mtime: i64::from(st.st_mtime),
            #[allow(clippy::useless_conversion)]
            mtime_nsec: i64::from(st.st_mtime_nsec),
            ino: st.st_ino,
            dev: st.st_dev,
            #[allow(clippy::useless_conversion)]
            nlink: u64::from(st.st_nlink),
        }
    }

    fn kind_bits(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.kind_bits() == libc::S_IFDIR
    }

    pub fn is_symlink(&self) -> bool {
        self.kind_bits() == libc::S_IFLNK
    }

    pub fn is_file(&self) -> bool {
        self.kind_bits() == libc::S_IFREG
    }
}

/// The kind of special file `mknod` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Char,
    Block,
    Fifo,
}

/// A root directory; all paths given to its methods stay inside it.
pub struct Root {
    /// The root, opened `O_RDONLY|O_DIRECTORY` (so it can be fchmod'ed, listed...).
    fd: OwnedFd,
    /// False once openat2 turned out to be missing or refused, or when disabled.
    openat2: bool,
    /// The last resolved parent directory: its path and an `O_PATH` fd.
    cache: Option<(Vec<u8>, OwnedFd)>,
}

/// The directory an operation happens in: the root itself or a resolved parent.
#[derive(Clone, Copy)]
struct At(RawFd);

impl Root {
    /// Opens `dir` (which must be a directory) as a root.
    pub fn open(dir: &Path) -> io::Result<Root> {
        let c = path_cstring(dir)?;
        let fd = cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        let openat2 = std::env::var_os("BARGE_NO_OPENAT2").map_or(true, |v| v != "1");
        Ok(Root {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            openat2,
            cache: None,
        })
    }

    #[cfg(test)]
    /// Forces (or allows again) the component-by-component walk instead of openat2.
    pub fn set_use_openat2(&mut self, on: bool) {
        self.openat2 = on;
        self.cache = None;
    }

    /// Resolves the parent of `path`, returning the directory fd and the final name.
    /// `path` must not be empty.
    fn parent<'p>(&mut self, path: &'p [u8]) -> io::Result<(At, &'p [u8])> {
        let (dir, name) = split_last(path);
        if name.is_empty() || name == b"." || name == b".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid final path component",
            ));
        }
        Ok((At(self.dir_fd(dir)?), name))
    }

    /// An fd for directory `dir` (the root for the empty path), following symlinks
    /// inside the root; cached until the next `invalidate`.
    fn dir_fd(&mut self, dir: &[u8]) -> io::Result<RawFd> {
        if dir.is_empty() {
            return Ok(self.fd.as_raw_fd());
        }
        if let Some((cached, fd)) = &self.cache {
            if cached.as_slice() == dir {
                return Ok(fd.as_raw_fd());
            }
        }
        let fd = self.resolve_dir(dir)?;
        let raw = fd.as_raw_fd();
        self.cache = Some((dir.to_vec(), fd));
        Ok(raw)
    }

    /// Metadata of directory `dir` itself, reached by following symlinks inside the root.
    pub fn dir_meta(&mut self, dir: &[u8]) -> io::Result<Meta> {
        let fd = self.dir_fd(dir)?;
        fstat(fd)
    }

    /// Sets the mtime of directory `dir` (symlinks followed inside the root),
    /// leaving its atime alone.
    pub fn set_dir_mtime(&mut self, dir: &[u8], mtime: (i64, i64)) -> io::Result<()> {
        let at = self.dir_fd(dir)?;
        let fd = open_dir_at(at, c".")?;
        let mut omit = timespec((0, 0))?;
        omit.tv_nsec = libc::UTIME_OMIT;
        let ts = [omit, timespec(mtime)?];
        cvt(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) })?;
        Ok(())
    }

    /// Opens directory `dir` (relative; every component followed inside the root) as O_PATH.
    pub fn resolve_dir(&mut self, dir: &[u8]) -> io::Result<OwnedFd> {
        if self.openat2 {
            match self.resolve_openat2(dir) {
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOSYS | libc::EPERM | libc::E2BIG | libc::EINVAL)
                    ) =>
                {
                    self.openat2 = false;
                }
                other => return other,
            }
        }
        self.resolve_walk(dir)
    }

    fn resolve_openat2(&self, dir: &[u8]) -> io::Result<OwnedFd> {
        let c = cstring(dir)?;
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        let mut tries = 0;
        loop {
            let r = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if r >= 0 {
                return Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
            }
            let e = io::Error::last_os_error();
            // EAGAIN: a concurrent rename somewhere in the tree; try again a few times.
            if e.raw_os_error() == Some(libc::EAGAIN) && tries < 8 {
                tries += 1;
                continue;
            }
            return Err(e);
        }
    }

    /// The fallback: walk component by component, following symlinks inside the root.
    fn resolve_walk(&self, dir: &[u8]) -> io::Result<OwnedFd> {
        // Components still to resolve, last one first.
        let mut pending: Vec<Vec<u8>> = components_rev(dir);
        // Directories entered below the root; the current one is the last.
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut hops = 0u32;
        while let Some(comp) = pending.pop() {
            if comp.is_empty() || comp == b"." {
                continue;
            }
            if comp == b".." {
                stack.pop(); // at the root, `..` stays at the root
                continue;
            }
            let cur = stack.last().map_or(self.fd.as_raw_fd(), |f| f.as_raw_fd());
            let c = cstring(&comp)?;
            let r = unsafe {
                libc::openat(
                    cur,
                    c.as_ptr(),
                    libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            if r >= 0 {
                stack.push(unsafe { OwnedFd::from_raw_fd(r) });
                continue;
            }
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) {
                return Err(e);
            }
            let target = match readlink_at(cur, &c) {
                Ok(t) => t,
                Err(le) if le.raw_os_error() == Some(libc::EINVAL) => return Err(e),
                Err(le) => return Err(le),
            };
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            if target.first() == Some(&b'/') {
                stack.clear();
            }
            pending.extend(components_rev(&target));
        }
        match stack.pop() {
            Some(fd) => Ok(fd),
            None => dup_path(self.fd.as_raw_fd()),
        }
    }

    /// `lstat` of `path` (the root itself for the empty path); `None` if it does not exist
    /// (including when a parent is missing or not a directory).
    pub fn lstat(&mut self, path: &[u8]) -> io::Result<Option<Meta>> {
        let r = if path.is_empty() {
            fstatat(self.fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
        } else {
            match self.parent(path) {
                Ok((at, name)) => fstatat(at.0, &cstring(name)?, libc::AT_SYMLINK_NOFOLLOW),
                Err(e) => Err(e),
            }
        };
        match r {
            Ok(m) => Ok(Some(m)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a new regular file (never following or replacing anything) open for writing.
    pub fn create_file(&mut self, path: &[u8], mode: u32) -> io::Result<File> {
        let (at, name) = self.parent(path)?;
        let c = cstring(name)?;
        let fd = cvt(unsafe {
            libc::openat(
                at.0,
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_WRONLY | libc::O_CLOEXEC,
                (mode & 0o777) as libc::c_uint,
            )
        })?;
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Creates a directory.
    pub fn mkdir(&mut self, path: &[u8], mode: u32) -> io::Result<()> {
        let (at, name) = self.parent(path)?;
        let c = cstring(name)?;
        cvt(unsafe { libc::mkdirat(at.0, c.as_ptr(), (mode & 0o7777) as libc::mode_t) })?;
        Ok(())
    }

    /// Creates a symlink at `path` whose target is `target`, verbatim.
    pub fn symlink(&mut self, target: &[u8], path: &[u8]) -> io::Result<()> {
        let t = cstring(target)?;
        let (at, name) = self.parent(path)?;
        let c = cstring(name)?;
        cvt(unsafe { libc::symlinkat(t.as_ptr(), at.0, c.as_ptr()) })?;
        Ok(())
    }

    /// Makes `path` a hard link to `target` (both inside the root; the final
    /// component of `target` is not followed, so a symlink is linked as itself).
    pub fn hardlink(&mut self, target: &[u8], path: &[u8]) -> io::Result<()> {
        let (tdir, tname) = split_last(target);
        if tname.is_empty() || tname == b"." || tname == b".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid hardlink target",
            ));
        }
        let tfd = if tdir.is_empty() {
            dup_path(self.fd.as_raw_fd())?
        } else {
            self.resolve_dir(tdir)?
        };
        let tc = cstring(tname)?;
        let (at, name) = self.parent(path)?;
        let c = cstring(name)?;
        cvt(unsafe { libc::linkat(tfd.as_raw_fd(), tc.as_ptr(), at.0, c.as_ptr(), 0) })?;
        Ok(())
    }

    /// Makes a device node or fifo.
    pub fn mknod(
        &mut self,
        path: &[u8],
        kind: NodeKind,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        let (at, name) = self.parent(path)?;
        let c = cstring(name)?;
        let (ty, dev) = match kind {
            NodeKind::Char => (libc::S_IFCHR, libc::makedev(major, minor)),
            NodeKind::Block => (libc::S_IFBLK, libc::makedev(major, minor)),
            NodeKind::Fifo => (libc::S_IFIFO, 0),
        };
        cvt(unsafe { libc::mknodat(at.0, c.as_ptr(), ty | (mode & 0o7777), dev) })?;
        Ok(())
    }

    /// Removes `path` (a whole tree if it is a directory), never following symlinks.
    /// Returns false if there was nothing to remove. The root itself cannot be removed.
    pub fn remove(&mut self, path: &[u8]) -> io::Result<bool> {
        let Some(meta) = self.lstat(path)? else {
            return Ok(false);
        };
        let (at, name) = self.parent(path)?;
        let c = cstring(name)?;
        if meta.is_dir() {
            // Keep the parent alive independently of the cache we are about to drop.
            let parent = dup_path(at.0)?;
            self.cache = None;
            remove_tree_at(parent.as_raw_fd(), &c)?;
        } else {
            // `at` may be the cached parent: unlink first, then drop the cache.
            cvt(unsafe { libc::unlinkat(at.0, c.as_ptr(), 0) })?;
            if meta.is_symlink() {
                self.cache = None;
            }
        }
        Ok(true)
    }

    /// Sets owner and group of `path` (the root for the empty path), not following symlinks.
    pub fn chown(&mut self, path: &[u8], uid: u32, gid: u32) -> io::Result<()> {
        if path.is_empty() {
            cvt(unsafe { libc::fchown(self.fd.as_raw_fd(), uid, gid) })?;
            return Ok(());
        }
        let (at, name) = self.parent(path)?;
        let c = cstring(name)?;
        cvt(unsafe { libc::fchownat(at.0, c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
        Ok(())
    }

    /// Sets the permission bits (incl. setuid/setgid/sticky) of a non-symlink.
    /// Symlinks are left alone (their mode means nothing on Linux).
    pub fn chmod(&mut self, path: &[u8], mode: u32) -> io::Result<()> {
        let mode = (mode & 0o7777) as libc::mode_t;
        if path.is_empty() {
            cvt(unsafe { libc::fchmod(self.fd.as_raw_fd(), mode) })?;
            return Ok(());
        }
        let (at, name) = self.parent(path)?;
        let c = cstring(name)?;
        let m = fstatat(at.0, &c, libc::AT_SYMLINK_NOFOLLOW)?;
        if m.is_symlink() {
            return Ok(());
        }
        cvt(unsafe { libc::fchmodat(at.0, c.as_ptr(), mode, 0) })?;
        Ok(())
    }

    /// Sets access and modification times (seconds, nanoseconds), not following symlinks.
    pub fn set_times(
        &mut self,
        path: &[u8],
        mtime: (i64, i64),
        atime: (i64, i64),
    ) -> io::Result<()> {
        let ts = [timespec(atime)?, timespec(mtime)?];
        if path.is_empty() {
            cvt(unsafe { libc::futimens(self.fd.as_raw_fd(), ts.as_ptr()) })?;
            return Ok(());
        }
        let (at, name) = self.parent(path)?;
        let c = cstring(name)?;
        cvt(unsafe { libc::utimensat(at.0, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })?;
        Ok(())
    }

    /// Sets an extended attribute on a regular file or directory. Returns false (and
    /// does nothing) for symlinks, devices and fifos, which are not opened.
    pub fn set_xattr(&mut self, path: &[u8], name: &str, value: &[u8]) -> io::Result<bool> {
        let fd = if path.is_empty() {
            dup_fd(self.fd.as_raw_fd())?
        } else {
            let (at, fname) = self.parent(path)?;
            let c = cstring(fname)?;
            let m = fstatat(at.0, &c, libc::AT_SYMLINK_NOFOLLOW)?;
            if !m.is_dir() && !m.is_file() {
                return Ok(false);
            }
            let fd = cvt(unsafe {
                libc::openat(
                    at.0,
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
                )
            })?;
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        fsetxattr(fd.as_raw_fd(), name, value)?;
        Ok(true)
    }

    /// The names of the children of directory `path` (the root for the empty path).
    pub fn list_dir(&mut self, path: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let fd = self.open_dir_read(path)?;
        Ok(read_dir_fd(fd)?.into_iter().map(|(n, _)| n).collect())
    }

    /// Opens directory `path` for reading, never following its final component.
    fn open_dir_read(&mut self, path: &[u8]) -> io::Result<OwnedFd> {
        if path.is_empty() {
            return dup_fd(self.fd.as_raw_fd());
        }
        let (at, name) = self.parent(path)?;
        let c = cstring(name)?;
        open_dir_at(at.0, &c)
    }
}

/// Sets owner and group of an open file.
pub fn fchown(f: &File, uid: u32, gid: u32) -> io::Result<()> {
    cvt(unsafe { libc::fchown(f.as_raw_fd(), uid, gid) })?;
    Ok(())
}

/// Sets the permission bits (incl. setuid/setgid/sticky) of an open file.
pub fn fchmod(f: &File, mode: u32) -> io::Result<()> {
    cvt(unsafe { libc::fchmod(f.as_raw_fd(), (mode & 0o7777) as libc::mode_t) })?;
    Ok(())
}

/// Sets access and modification times of an open file.
pub fn futimes(f: &File, mtime: (i64, i64), atime: (i64, i64)) -> io::Result<()> {
    let ts = [timespec(atime)?, timespec(mtime)?];
    cvt(unsafe { libc::futimens(f.as_raw_fd(), ts.as_ptr()) })?;
    Ok(())
}

/// Sets an extended attribute on an open file.
pub fn fsetxattr(fd: RawFd, name: &str, value: &[u8]) -> io::Result<()> {
    let n = cstring(name.as_bytes())?;
    cvt(unsafe { libc::fsetxattr(fd, n.as_ptr(), value.as_ptr().cast(), value.len(), 0) })?;
    Ok(())
}

/// Removes the tree `name` in directory `dir`, never following symlinks.
/// Directories without write/search permission (possible for non-root) are opened up first.
pub fn remove_tree_at(dir: RawFd, name: &CStr) -> io::Result<()> {
    let fd = match open_dir_at(dir, name) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            cvt(unsafe { libc::fchmodat(dir, name.as_ptr(), 0o700, 0) })?;
            open_dir_at(dir, name)?
        }
        Err(e) => return Err(e),
    };
    clear_dir_fd(&fd)?;
    drop(fd);
    cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR) })?;
    Ok(())
}

/// Removes every child of the open directory `fd`.
pub fn clear_dir_fd(fd: &OwnedFd) -> io::Result<()> {
    let children = read_dir_fd(dup_fd(fd.as_raw_fd())?)?;
    let mut opened_up = false;
    for (name, dtype) in children {
        let c = cstring(&name)?;
        let is_dir = match dtype {
            libc::DT_DIR => true,
            libc::DT_UNKNOWN => fstatat(fd.as_raw_fd(), &c, libc::AT_SYMLINK_NOFOLLOW)?.is_dir(),
            _ => false,
        };
        let r = if is_dir {
            remove_tree_at(fd.as_raw_fd(), &c)
        } else {
            cvt(unsafe { libc::unlinkat(fd.as_raw_fd(), c.as_ptr(), 0) }).map(drop)
        };
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) && !opened_up => {
                // A read-only directory (non-root): make it writable and retry once.
                cvt(unsafe { libc::fchmod(fd.as_raw_fd(), 0o700) })?;
                opened_up = true;
                if is_dir {
                    remove_tree_at(fd.as_raw_fd(), &c)?;
                } else {
                    cvt(unsafe { libc::unlinkat(fd.as_raw_fd(), c.as_ptr(), 0) })?;
                }
            }
            other => other?,
        }
    }
    Ok(())
}

/// Opens a directory for reading, refusing symlinks.
fn open_dir_at(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    let fd = cvt(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads all entries (name, d_type) of a directory, consuming the fd.
pub fn read_dir_fd(fd: OwnedFd) -> io::Result<Vec<(Vec<u8>, u8)>> {
    let raw = fd.as_raw_fd();
    let dirp = unsafe { libc::fdopendir(raw) };
    if dirp.is_null() {
        return Err(io::Error::last_os_error());
    }
    // fdopendir owns the fd now; closedir will close it.
    std::mem::forget(fd);
    let mut out = Vec::new();
    let result = loop {
        unsafe { *libc::__errno_location() = 0 };
        let ent = unsafe { libc::readdir(dirp) };
        if ent.is_null() {
            let errno = unsafe { *libc::__errno_location() };
            break if errno == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(errno))
            };
        }
        let (name, dtype) = unsafe {
            (
                CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes(),
                (*ent).d_type,
            )
        };
        if name != b"." && name != b".." {
            out.push((name.to_vec(), dtype));
        }
    };
    unsafe { libc::closedir(dirp) };
    result.map(|()| out)
}

/// Splits `a/b/c` into (`a/b`, `c`); a single component has an empty parent.
pub fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (
            path.get(..i).unwrap_or_default(),
            path.get(i + 1..).unwrap_or_default(),
        ),
        None => (&[], path),
    }
}

/// Path components in reverse order (so that `pop` yields them first to last).
fn components_rev(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(<[u8]>::to_vec)
        .collect()
}

fn readlink_at(dir: RawFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn fstatat(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<Meta> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, flags) })?;
    Ok(Meta::from_stat(&st))
}

/// mtime (seconds) of `path`, not following a final symlink, read through barge's own
/// `libc` (64-bit `time_t` in the release builds). On 32-bit targets std's `Metadata`
/// comes from musl's 32-bit-`time_t` entry points, which wrap dates past 2038.
pub fn lstat_mtime(path: &Path) -> io::Result<i64> {
    let c = cstring(path.as_os_str().as_encoded_bytes())?;
    Ok(fstatat(libc::AT_FDCWD, &c, libc::AT_SYMLINK_NOFOLLOW)?.mtime)
}

/// `fstat` of an open file.
pub fn fstat(fd: RawFd) -> io::Result<Meta> {
    fstatat(fd, c"", libc::AT_EMPTY_PATH)
}

fn dup_fd(fd: RawFd) -> io::Result<OwnedFd> {
    let r = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// A new O_PATH handle on the same directory (so it survives cache changes).
fn dup_path(fd: RawFd) -> io::Result<OwnedFd> {
    let r = cvt(unsafe {
        libc::openat(
            fd,
            c".".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// A `timespec` for (seconds, nanoseconds). Fails (InvalidInput) when the seconds do not fit
/// `time_t`: only on a 32-bit target built with a 32-bit `time_t` (the `libc` crate's
/// default there; `make release` builds 32-bit targets with `--cfg libc_unstable_musl_v1_2`,
/// musl's 64-bit `time_t`), for dates outside 1901–2038. Never a silently wrong date.
pub fn timespec((sec, nsec): (i64, i64)) -> io::Result<libc::timespec> {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // time_t is i64 on 64-bit targets (then this cannot fail), i32 or i64 on 32-bit ones;
    // not named: the libc crate marks musl's time_t deprecated.
    #[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
    let secs = sec.try_into().map_err(|_| {
        let what = format!("time {sec} does not fit this build's 32-bit time_t (dates past 2038)");
        io::Error::new(io::ErrorKind::InvalidInput, what)
    })?;
    ts.tv_sec = secs;
    // In 0..1e9: fits every c_long.
    ts.tv_nsec = nsec.clamp(0, 999_999_999) as _;
    Ok(ts)
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
}

fn path_cstring(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    cstring(p.as_os_str().as_bytes())
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    /// A scratch directory removed on drop (tests only).
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("barge-test-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs `f` once with openat2 and once with the fallback walk.
    fn both_modes(f: impl Fn(bool)) {
        f(true);
        f(false);
    }

    fn setup(use2: bool) -> (TempDir, PathBuf, Root) {
        let t = TempDir::new("fsroot");
        let root = t.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(t.path().join("canary"), b"alive").unwrap();
        let mut r = Root::open(&root).unwrap();
        r.set_use_openat2(use2);
        (t, root, r)
    }

    #[test]
    fn symlinks_in_the_middle_resolve_inside_the_root() {
        both_modes(|use2| {
            let (t, root, mut r) = setup(use2);
            r.mkdir(b"usr", 0o755).unwrap();
            r.mkdir(b"usr/lib", 0o755).unwrap();
            r.symlink(b"usr/lib", b"lib").unwrap();
            r.mkdir(b"lib/x", 0o755).unwrap();
            r.create_file(b"lib/x/y", 0o644).unwrap();
            assert!(root.join("usr/lib/x/y").is_file());
            // Absolute and escaping targets stay inside.
            r.symlink(b"/", b"evil").unwrap();
            r.symlink(b"../../../..", b"up").unwrap();
            r.symlink(b"/usr/../../../usr", b"abs").unwrap();
            r.mkdir(b"evil/etc", 0o755).unwrap();
            r.create_file(b"evil/etc/passwd", 0o644).unwrap();
            assert!(root.join("etc/passwd").is_file());
            r.create_file(b"up/canary", 0o644).unwrap();
            assert!(root.join("canary").is_file());
            r.create_file(b"abs/z", 0o644).unwrap();
            assert!(root.join("usr/z").is_file());
            // Removing through a symlinked parent stays inside too.
            assert!(r.remove(b"up/canary").unwrap());
            assert!(!root.join("canary").exists());
            assert_eq!(std::fs::read(t.path().join("canary")).unwrap(), b"alive");
            assert_eq!(r.openat2, use2);
        });
    }

    #[test]
    fn final_component_is_never_followed() {
        both_modes(|use2| {
            let (t, root, mut r) = setup(use2);
            let outside = t.path().join("canary");
            std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
            assert!(r.create_file(b"link", 0o644).is_err());
            assert!(r.lstat(b"link").unwrap().unwrap().is_symlink());
            r.chmod(b"link", 0o777).unwrap();
            assert!(!r.set_xattr(b"link", "user.x", b"1").unwrap());
            assert!(r.remove(b"link").unwrap());
            assert_eq!(std::fs::read(&outside).unwrap(), b"alive");
        });
    }

    #[test]
    fn symlink_loops_fail() {
        both_modes(|use2| {
            let (_t, _root, mut r) = setup(use2);
            r.symlink(b"b", b"a").unwrap();
            r.symlink(b"a", b"b").unwrap();
            let e = r.create_file(b"a/x", 0o644).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        });
    }

    #[test]
    fn hardlink_and_remove_tree() {
        both_modes(|use2| {
            let (t, root, mut r) = setup(use2);
            r.mkdir(b"d", 0o755).unwrap();
            r.mkdir(b"d/e", 0o555).unwrap();
            let mut f = r.create_file(b"d/f", 0o644).unwrap();
            f.write_all(b"data").unwrap();
            r.hardlink(b"d/f", b"g").unwrap();
            assert_eq!(std::fs::read(root.join("g")).unwrap(), b"data");
            std::os::unix::fs::symlink(t.path(), root.join("d/e2")).unwrap();
            assert!(r.remove(b"d").unwrap());
            assert!(!root.join("d").exists());
            assert!(!r.remove(b"d").unwrap());
            assert_eq!(std::fs::read(t.path().join("canary")).unwrap(), b"alive");
            assert_eq!(r.list_dir(b"").unwrap(), vec![b"g".to_vec()]);
        });
    }
}
