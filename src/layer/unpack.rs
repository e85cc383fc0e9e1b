//! Apply one layer's tar stream to a root directory following the OCI changeset rules (whiteouts, opaque dirs, hardlinks, devices, xattrs).
//!
//! Every path goes through [`Root`], so nothing outside the root is ever touched,
//! whatever the layer holds. Names are read as Go's `archive/tar` reads them and
//! cleaned as if rooted ([`names`]): `..` stops at the root, as containerd (and
//! `RESOLVE_IN_ROOT`) do, so `dir/sub/..` is `dir` and `../x` is `x`. An entry that
//! then names the root applies its metadata when it is a directory and is skipped
//! otherwise (as peers skip it). Whiteouts are recognised after cleaning
//! (`dne/../.wh.etc` removes `etc`). Hardlink targets are cleaned the same way and
//! must be an earlier non-directory entry. Whiteouts (`.wh.NAME`) are applied at
//! once; opaque markers (`.wh..wh..opq`) at the end of the layer, so that the
//! marker may come before or after the same layer's entries. Directory mtimes,
//! which change whenever a child is created or removed, are put back at the end of
//! the layer.

use crate::bail;
use crate::digest::Digest;
use crate::error::{Context, Error, Kind, Result};
use crate::layer::entry::{Change, Entry, EntryKind, ImagePath};
use crate::layer::fsroot::{self, split_last, NodeKind, Root};
use crate::layer::names::{self, clean_name};
use sha2::{Digest as _, Sha256};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::rc::Rc;

/// Buffer size for copying file contents.
const COPY_BUF: usize = 128 * 1024;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// How to apply layers.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// Running as root (`geteuid() == 0`): set owners and make device nodes.
    pub as_root: bool,
    /// Record each regular file's sha256 in its entry (barge's record needs them;
    /// a plain pull keeps no record and saves a third hash pass over the content).
    pub content_digests: bool,
}

impl UnpackOptions {
    /// Options for the current process: `as_root` when the effective uid is 0.
    pub fn for_current_user() -> UnpackOptions {
        UnpackOptions {
            as_root: unsafe { libc::geteuid() } == 0,
            content_digests: true,
        }
    }
}

/// What applying a layer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries processed (including whiteouts).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Device nodes not created (not root, or mknod refused).
    pub skipped_devices: u64,
    /// Entries whose owner could not be set (not root, or chown refused).
    pub skipped_owners: u64,
    /// Extended attributes that could not be set.
    pub skipped_xattrs: u64,
}

/// Receives the content of every regular file as it is written to disk, e.g. to
/// hash it in another process while the layer unpacks.
///
/// For each `File` entry that is created, in the order of their `Change::Put`s:
/// one `begin`, then `data` calls that add up to exactly `size` bytes, then `end`.
/// If applying the layer fails, the sequence may stop anywhere (the layer is lost).
pub trait ContentSink {
    /// A regular file at `path` with `size` bytes of content starts.
    fn begin(&mut self, path: &[u8], size: u64) -> io::Result<()>;
    /// The next bytes of the current file.
    fn data(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// The current file is complete on disk, its metadata set; `file_id` is its
    /// (st_dev, st_ino).
    fn end(&mut self, file_id: (u64, u64)) -> io::Result<()>;
}

/// Applies the uncompressed layer `tar` to `root`, recording what it did in `changes`.
///
/// The stream is read to its very end (also past the end-of-archive blocks), so a
/// hashing reader wrapped around it sees every byte.
#[cfg(test)]
pub fn apply_layer<R: Read>(
    root: &mut Root,
    tar: R,
    opts: &UnpackOptions,
    changes: &mut Vec<Change>,
) -> Result<UnpackStats> {
    apply_layer_with(root, tar, opts, changes, None)
}

/// [`apply_layer`], also handing each regular file's content to `sink`.
pub fn apply_layer_with<R: Read>(
    root: &mut Root,
    tar: R,
    opts: &UnpackOptions,
    changes: &mut Vec<Change>,
    sink: Option<&mut dyn ContentSink>,
) -> Result<UnpackStats> {
    let pad_at = Rc::new(Cell::new(u64::MAX));
    let reader = LayerReader {
        inner: tar,
        pos: 0,
        pad_at: pad_at.clone(),
        pad_left: 0,
    };
    let mut archive = tar::Archive::new(reader);
    let mut un = Unpacker {
        root,
        opts: *opts,
        stats: UnpackStats::default(),
        upper: HashSet::new(),
        opaque: Vec::new(),
        dir_times: HashMap::new(),
        opened: HashMap::new(),
        buf: vec![0u8; COPY_BUF],
        sink,
    };
    {
        let entries = archive.entries().map_err(tar_error)?;
        for entry in entries {
            let mut entry = entry.map_err(tar_error)?;
            if !entry.header().entry_type().is_gnu_sparse() {
                pad_at.set(entry.raw_file_position().saturating_add(entry.size()));
            }
            un.stats.entries += 1;
            un.entry(&mut entry, changes)?;
        }
    }
    un.finish()?;
    let stats = un.stats;
    drain(archive.into_inner()).map_err(tar_error)?;
    Ok(stats)
}

/// Reads the rest of the stream (trailing blocks, padding) without retrying on
/// `Interrupted` the way `io::copy` would.
fn drain<R: Read>(mut r: R) -> io::Result<()> {
    let mut buf = [0u8; 8192];
    while r.read(&mut buf)? > 0 {}
    Ok(())
}

/// Turns an error from reading the tar stream into ours.
fn tar_error(e: io::Error) -> Error {
    let e = Error::from(e);
    if e.kind() == Kind::Interrupted {
        return e;
    }
    e.context("reading layer tar")
}

/// The tar stream as the tar crate sees it: counts the position, turns
/// `Interrupted` into a hard error (so nothing retries it), and supplies the
/// missing padding when a stream ends right after an entry's data (umoci 0.4.7).
struct LayerReader<R> {
    inner: R,
    pos: u64,
    /// Where the current entry's data ends; EOF there (or inside its padding) is a normal end.
    pad_at: Rc<Cell<u64>>,
    pad_left: usize,
}

impl<R: Read> Read for LayerReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pad_left > 0 {
            let n = self.pad_left.min(buf.len());
            buf.get_mut(..n).unwrap_or_default().fill(0);
            self.pad_left -= n;
            self.pos += n as u64;
            return Ok(n);
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                return Err(Error::with_kind(Kind::Interrupted, "interrupted").into())
            }
            Err(e) => return Err(e),
        };
        let data_end = self.pad_at.get();
        let in_padding = self.pos >= data_end && self.pos - data_end < 512;
        if n == 0 && in_padding && self.pos % 512 != 0 && !buf.is_empty() {
            self.pad_left = (512 - self.pos % 512) as usize;
            return self.read(buf);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// The state of applying one layer.
struct Unpacker<'r, 's> {
    root: &'r mut Root,
    opts: UnpackOptions,
    stats: UnpackStats,
    /// Paths this layer put in place, and all their ancestors.
    upper: HashSet<ImagePath>,
    /// Directories marked opaque by this layer.
    opaque: Vec<ImagePath>,
    /// Directories whose mtime must be set at the end: from their header, or as they were.
    dir_times: HashMap<ImagePath, (i64, i64)>,
    /// Not root: read-only directories given u+rwx for this layer, and their modes.
    opened: HashMap<ImagePath, u32>,
    buf: Vec<u8>,
    /// Where regular files' content is also sent.
    sink: Option<&'s mut dyn ContentSink>,
}

/// What one tar entry is, after parsing.
enum Action {
    Put(Entry),
    Whiteout(ImagePath),
    Opaque(ImagePath),
    Skip,
}

impl Unpacker<'_, '_> {
    /// Applies one tar entry.
    fn entry<R: Read>(&mut self, e: &mut tar::Entry<R>, changes: &mut Vec<Change>) -> Result<()> {
        let raw_name = names::entry_name(e).map_err(tar_error)?;
        let shown = String::from_utf8_lossy(&raw_name).into_owned();
        let action = parse_entry(e, &raw_name).with_context(|| format!("layer entry {shown}"))?;
        match action {
            Action::Skip => Ok(()),
            Action::Whiteout(path) => {
                self.whiteout(&path)
                    .with_context(|| format!("applying whiteout {shown}"))?;
                changes.push(Change::Delete(path));
                Ok(())
            }
            Action::Opaque(dir) => {
                changes.push(Change::Opaque(dir.clone()));
                if !self.opaque.contains(&dir) {
                    self.opaque.push(dir);
                }
                Ok(())
            }
            Action::Put(mut entry) => {
                self.put(&mut entry, e)
                    .with_context(|| format!("extracting {shown}"))?;
                self.mark_upper(&entry.path);
                changes.push(Change::Put(entry));
                Ok(())
            }
        }
    }

    /// Records `path` and its ancestors as put by this layer.
    fn mark_upper(&mut self, path: &[u8]) {
        let mut p = path;
        loop {
            if !self.upper.insert(p.to_vec()) {
                return;
            }
            if p.is_empty() {
                return;
            }
            p = split_last(p).0;
        }
    }

    /// Remembers directory `dir`'s mtime before this layer changes it (once per layer).
    fn note_dir(&mut self, dir: &[u8]) {
        if self.dir_times.contains_key(dir) {
            return;
        }
        if let Ok(m) = self.root.dir_meta(dir) {
            if m.is_dir() {
                self.dir_times.insert(dir.to_vec(), (m.mtime, m.mtime_nsec));
            }
        }
    }

    /// `.wh.NAME`: removes NAME, keeping whatever this same layer already put there.
    fn whiteout(&mut self, path: &[u8]) -> Result<()> {
        self.note_dir(split_last(path).0);
        self.prune(path, true)?;
        Ok(())
    }

    /// Removes `path` unless this layer put it there; in directories this layer
    /// touched, removes the children it did not put there. `remove_self` false keeps
    /// `path` itself (opaque directories).
    fn prune(&mut self, path: &[u8], remove_self: bool) -> io::Result<()> {
        if remove_self && !self.upper.contains(path) {
            return self.remove(path);
        }
        match self.root.lstat(path)? {
            Some(m) if m.is_dir() => {}
            _ => return Ok(()),
        }
        let children = self.root.list_dir(path)?;
        if children.is_empty() {
            return Ok(());
        }
        self.note_dir(path);
        let mut child = path.to_vec();
        for name in children {
            child.truncate(path.len());
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(&name);
            let c = child.clone();
            self.prune(&c, true)?;
        }
        Ok(())
    }

    /// Puts one entry in place, replacing what was there if the types differ.
    fn put<R: Read>(&mut self, entry: &mut Entry, data: &mut tar::Entry<R>) -> Result<()> {
        if entry.path.is_empty() {
            return self.put_root(entry);
        }
        let parent = split_last(&entry.path).0.to_vec();
        self.note_dir(&parent);
        match self.create(entry, data) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.make_parents(&parent)?;
                self.create(entry, data)?;
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                if !self.open_up(&parent)? {
                    return Err(e.into());
                }
                self.create(entry, data)?;
            }
            r => r?,
        }
        Ok(())
    }

    /// Not root, a read-only directory `dir` (e.g. 0555) cannot take new entries:
    /// gives its owner rwx until the end of the layer, when [`Unpacker::finish`]
    /// puts the mode back. False if that cannot help (root, not a directory, or
    /// already open), so the caller keeps its error.
    fn open_up(&mut self, dir: &[u8]) -> io::Result<bool> {
        if self.opts.as_root {
            return Ok(false);
        }
        let Some(m) = self.root.lstat(dir)? else {
            return Ok(false);
        };
        if !m.is_dir() || m.mode & 0o700 == 0o700 {
            return Ok(false);
        }
        self.root.chmod(dir, (m.mode | 0o700) & 0o7777)?;
        self.opened.insert(dir.to_vec(), m.mode & 0o7777);
        Ok(true)
    }

    /// Removes `path`, opening up its read-only parent if that is what stops it.
    fn remove(&mut self, path: &[u8]) -> io::Result<()> {
        match self.root.remove(path) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                if !self.open_up(split_last(path).0)? {
                    return Err(e);
                }
                self.root.remove(path)?;
            }
            r => {
                r?;
            }
        }
        Ok(())
    }

    /// The root directory's own entry: only its metadata is applied.
    fn put_root(&mut self, entry: &Entry) -> Result<()> {
        if entry.kind != EntryKind::Dir {
            bail!("refusing to change the type of the root directory");
        }
        self.meta_by_path(entry)?;
        self.dir_times.insert(Vec::new(), (entry.mtime, 0));
        Ok(())
    }

    /// Creates the missing directories of `dir` (mode 0755, like Docker).
    fn make_parents(&mut self, dir: &[u8]) -> Result<()> {
        let mut end = 0;
        while end < dir.len() {
            end = dir
                .iter()
                .skip(end + 1)
                .position(|&b| b == b'/')
                .map_or(dir.len(), |i| end + 1 + i);
            let prefix = dir.get(..end).unwrap_or(dir);
            match self.root.lstat(prefix)? {
                Some(m) if m.is_dir() || m.is_symlink() => continue,
                Some(_) => bail!("{} is not a directory", String::from_utf8_lossy(prefix)),
                None => {
                    self.note_dir(split_last(prefix).0);
                    self.root.mkdir(prefix, 0o755).with_context(|| {
                        format!("creating directory {}", String::from_utf8_lossy(prefix))
                    })?;
                    self.note_dir(prefix);
                }
            }
        }
        Ok(())
    }

    /// Creates the entry, replacing an existing one of another type (or any
    /// non-directory). Errors keep their io kind so a missing parent can be handled.
    fn create<R: Read>(&mut self, entry: &mut Entry, data: &mut tar::Entry<R>) -> io::Result<()> {
        let path = entry.path.clone();
        match entry.kind {
            EntryKind::File => {
                // With its final permission bits (less the umask), so that
                // write_file rarely needs an fchmod. The whole pull happens in a
                // directory nobody else is given until it is complete.
                let mode = entry.mode & 0o777;
                let f = self.retry_replace(&path, |r| r.create_file(&path, mode))?;
                self.write_file(f, entry, data)
            }
            EntryKind::Dir => {
                match self.root.mkdir(&path, 0o700) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let is_dir = self.root.lstat(&path)?.is_some_and(|m| m.is_dir());
                        if !is_dir {
                            self.root.remove(&path)?;
                            self.root.mkdir(&path, 0o700)?;
                        }
                    }
                    Err(e) => return Err(e),
                }
                self.meta_by_path(entry).map_err(io::Error::from)?;
                self.dir_times.insert(path, (entry.mtime, 0));
                Ok(())
            }
            EntryKind::Symlink => {
                let target = entry.link.clone().unwrap_or_default();
                self.retry_replace(&path, |r| r.symlink(&target, &path))?;
                self.meta_by_path(entry).map_err(io::Error::from)
            }
            EntryKind::Hardlink => self.hardlink(entry),
            EntryKind::Fifo => {
                self.retry_replace(&path, |r| r.mknod(&path, NodeKind::Fifo, 0o600, 0, 0))?;
                self.meta_by_path(entry).map_err(io::Error::from)
            }
            EntryKind::CharDevice | EntryKind::BlockDevice => self.device(entry),
        }
    }

    /// Runs `make`; if something is in the way, removes it and runs `make` again.
    fn retry_replace<T>(
        &mut self,
        path: &[u8],
        mut make: impl FnMut(&mut Root) -> io::Result<T>,
    ) -> io::Result<T> {
        match make(self.root) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.root.remove(path)?;
                make(self.root)
            }
            r => r,
        }
    }

    /// A hard link to an earlier entry (which must exist and not be a directory).
    fn hardlink(&mut self, entry: &Entry) -> io::Result<()> {
        let target = entry.link.clone().unwrap_or_default();
        if target == entry.path {
            return Ok(());
        }
        let shown = String::from_utf8_lossy(&target);
        match self.root.lstat(&target)? {
            None => {
                return Err(invalid(&format!(
                    "hardlink target /{shown} does not exist in the image"
                )))
            }
            Some(m) if m.is_dir() => {
                return Err(invalid(&format!(
                    "hardlink target /{shown} is a directory: directories cannot be hard-linked"
                )))
            }
            Some(_) => {}
        }
        let path = entry.path.clone();
        self.retry_replace(&path, |r| r.hardlink(&target, &path))
    }

    /// A char or block device: made when root (and allowed), else counted as skipped.
    fn device(&mut self, entry: &Entry) -> io::Result<()> {
        if !self.opts.as_root {
            self.stats.skipped_devices += 1;
            return Ok(());
        }
        let kind = if entry.kind == EntryKind::CharDevice {
            NodeKind::Char
        } else {
            NodeKind::Block
        };
        let (major, minor) = entry.rdev.unwrap_or((0, 0));
        let path = entry.path.clone();
        match self.retry_replace(&path, |r| r.mknod(&path, kind, 0o600, major, minor)) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                self.stats.skipped_devices += 1;
                Ok(())
            }
            Err(e) => Err(e),
            Ok(()) => self.meta_by_path(entry).map_err(io::Error::from),
        }
    }

    /// Streams a regular file's content to disk, hashing it, then sets its metadata.
    fn write_file<R: Read>(
        &mut self,
        mut f: std::fs::File,
        entry: &mut Entry,
        data: &mut tar::Entry<R>,
    ) -> io::Result<()> {
        let mut hasher = self.opts.content_digests.then(Sha256::new);
        let mut total = 0u64;
        let mut sink = self.sink.as_deref_mut();
        if let Some(s) = sink.as_deref_mut() {
            s.begin(&entry.path, entry.size)?;
        }
        loop {
            let n = data.read(&mut self.buf)?;
            if n == 0 {
                break;
            }
            let chunk = self.buf.get(..n).unwrap_or_default();
            if let Some(h) = hasher.as_mut() {
                h.update(chunk);
            }
            f.write_all(chunk)?;
            if let Some(s) = sink.as_deref_mut() {
                s.data(chunk)?;
            }
            total += n as u64;
        }
        if total != entry.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "layer ended inside the file's data",
            ));
        }
        self.stats.bytes += total;
        entry.content = hasher.map(Digest::from_hasher);
        // Most files are created with the owner and mode they need; on a journalled
        // filesystem every fchown/fchmod is a transaction, so skip those that would
        // change nothing (the file was created without setuid/setgid/sticky bits).
        let st = f.metadata()?;
        if self.opts.as_root {
            if (st.uid(), st.gid()) != (entry.uid, entry.gid) {
                match fsroot::fchown(&f, entry.uid, entry.gid) {
                    Err(e) if owner_refused(&e) => self.stats.skipped_owners += 1,
                    r => r?,
                }
            }
        } else {
            self.stats.skipped_owners += u64::from(entry.uid != 0 || entry.gid != 0);
        }
        if st.mode() & 0o7777 != entry.mode & 0o7777 {
            fsroot::fchmod(&f, entry.mode)?;
        }
        for (name, value) in &entry.xattrs {
            match fsroot::fsetxattr(std::os::fd::AsRawFd::as_raw_fd(&f), name, value) {
                Err(e) if xattr_refused(&e) => self.stats.skipped_xattrs += 1,
                r => r?,
            }
        }
        let t = (entry.mtime, 0);
        fsroot::futimes(&f, t, t)?;
        match sink {
            Some(s) => s.end((st.dev(), st.ino())),
            None => Ok(()),
        }
    }

    /// Owner, mode, xattrs and times of a non-file entry, by path (owner before mode,
    /// which chown would clear the setuid bits of).
    fn meta_by_path(&mut self, entry: &Entry) -> Result<()> {
        let path = &entry.path;
        if self.opts.as_root {
            match self.root.chown(path, entry.uid, entry.gid) {
                Err(e) if owner_refused(&e) => self.stats.skipped_owners += 1,
                r => r.context("setting owner")?,
            }
        } else {
            self.stats.skipped_owners += u64::from(entry.uid != 0 || entry.gid != 0);
        }
        if entry.kind != EntryKind::Symlink {
            self.root.chmod(path, entry.mode).context("setting mode")?;
            // The layer's own word on this directory's mode wins over an open_up's.
            self.opened.remove(path);
        }
        for (name, value) in &entry.xattrs {
            match self.root.set_xattr(path, name, value) {
                Ok(true) => {}
                Ok(false) => self.stats.skipped_xattrs += 1,
                Err(e) if xattr_refused(&e) => self.stats.skipped_xattrs += 1,
                Err(e) => return Err(Error::from(e).context(format!("setting xattr {name}"))),
            }
        }
        let t = (entry.mtime, 0);
        self.root.set_times(path, t, t).context("setting times")?;
        Ok(())
    }

    /// End of the layer: empty the opaque directories of lower-layer entries, then
    /// put back every touched directory's mtime.
    fn finish(&mut self) -> Result<()> {
        for dir in std::mem::take(&mut self.opaque) {
            self.prune(&dir, false).with_context(|| {
                format!(
                    "emptying opaque directory {}",
                    String::from_utf8_lossy(&dir)
                )
            })?;
        }
        for (dir, mode) in std::mem::take(&mut self.opened) {
            match self.root.chmod(&dir, mode) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {}
                r => {
                    r.with_context(|| format!("setting mode of {}", String::from_utf8_lossy(&dir)))?
                }
            }
        }
        for (dir, t) in std::mem::take(&mut self.dir_times) {
            match self.root.set_dir_mtime(&dir, t) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {}
                r => r.with_context(|| {
                    format!("setting mtime of {}", String::from_utf8_lossy(&dir))
                })?,
            }
        }
        Ok(())
    }
}

fn owner_refused(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EINVAL))
}

fn xattr_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::EACCES | libc::ENOTSUP | libc::EINVAL)
    )
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one tar header into an action (the content is not read here).
fn parse_entry<R: Read>(e: &mut tar::Entry<R>, raw_name: &[u8]) -> Result<Action> {
    use tar::EntryType as T;
    let path = clean_name(raw_name);
    let kind = match e.header().entry_type() {
        // Go's archive/tar: an old-style file (type NUL) named `.../` is a directory.
        T::Regular if e.header().as_bytes()[156] == 0 && raw_name.ends_with(b"/") => EntryKind::Dir,
        T::Regular | T::Continuous | T::GNUSparse => EntryKind::File,
        T::Directory => EntryKind::Dir,
        T::Symlink => EntryKind::Symlink,
        T::Link => EntryKind::Hardlink,
        T::Char => EntryKind::CharDevice,
        T::Block => EntryKind::BlockDevice,
        T::Fifo => EntryKind::Fifo,
        T::XGlobalHeader | T::GNULongName | T::GNULongLink | T::XHeader => return Ok(Action::Skip),
        other => bail!("unsupported tar entry type {:?}", other.as_byte() as char),
    };
    if path.is_empty() && kind != EntryKind::Dir {
        // Names the root (`.`, `..`, `/`, empty...): containerd and Docker skip it.
        return Ok(Action::Skip);
    }
    let (dir, name) = split_last(&path);
    if let Some(rest) = name.strip_prefix(WHITEOUT_PREFIX) {
        if name == OPAQUE_MARKER {
            return Ok(Action::Opaque(dir.to_vec()));
        }
        if rest.starts_with(WHITEOUT_PREFIX) {
            return Ok(Action::Skip); // other AUFS metadata (.wh..wh.plnk, ...)
        }
        if rest.is_empty() || rest == b"." || rest == b".." {
            bail!("invalid whiteout name: it would remove its own directory or its parent");
        }
        let mut target = dir.to_vec();
        if !target.is_empty() {
            target.push(b'/');
        }
        target.extend_from_slice(rest);
        return Ok(Action::Whiteout(target));
    }
    let h = e.header();
    let link = match kind {
        EntryKind::Symlink => Some(
            e.link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default(),
        ),
        EntryKind::Hardlink => {
            let target = clean_name(&e.link_name_bytes().unwrap_or_default());
            if target.is_empty() {
                bail!("hardlink target is the root directory: directories cannot be hard-linked");
            }
            Some(target)
        }
        _ => None,
    };
    let rdev = match kind {
        EntryKind::CharDevice | EntryKind::BlockDevice => Some((
            h.device_major().ok().flatten().unwrap_or(0),
            h.device_minor().ok().flatten().unwrap_or(0),
        )),
        _ => None,
    };
    let mut entry = Entry {
        path,
        kind,
        mode: h.mode().map_err(tar_error)? & 0o7777,
        // Like Go's archive/tar, an empty numeric field means 0.
        uid: u32::try_from(h.uid().unwrap_or(0)).map_err(|_| Error::new("uid out of range"))?,
        gid: u32::try_from(h.gid().unwrap_or(0)).map_err(|_| Error::new("gid out of range"))?,
        size: if kind == EntryKind::File { e.size() } else { 0 },
        mtime: h
            .mtime()
            .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)),
        link,
        rdev,
        xattrs: Vec::new(),
        content: None,
    };
    if let Some(pax) = e.pax_extensions().map_err(tar_error)? {
        for ext in pax {
            let ext = ext.map_err(tar_error)?;
            let key = ext.key_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                if let Ok(name) = std::str::from_utf8(name) {
                    entry
                        .xattrs
                        .push((name.to_string(), ext.value_bytes().to_vec()));
                }
            } else if key == b"mtime" {
                if let Some(t) = parse_pax_time(ext.value_bytes()) {
                    entry.mtime = t;
                }
            }
        }
    }
    entry.xattrs.sort();
    Ok(Action::Put(entry))
}

/// Parses a PAX time (`1700000000`, `1700000000.123`, `-1.5`) to whole seconds,
/// rounding toward negative infinity like a `struct timespec` does.
fn parse_pax_time(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = int.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let has_frac = frac.bytes().any(|b| b != b'0');
    Some(if int.starts_with('-') && has_frac {
        secs - 1
    } else {
        secs
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::fsroot::tests::TempDir;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    /// A scratch area: `root/` to extract into and a canary file beside it.
    struct Scene {
        t: TempDir,
        root: PathBuf,
        r: Root,
        changes: Vec<Change>,
    }

    impl Scene {
        fn new(use_openat2: bool) -> Scene {
            let t = TempDir::new("unpack");
            let root = t.path().join("root");
            std::fs::create_dir(&root).unwrap();
            std::fs::write(t.path().join("canary"), b"alive").unwrap();
            std::fs::create_dir(t.path().join("outside")).unwrap();
            std::fs::write(t.path().join("outside/foo"), b"alive").unwrap();
            let mut r = Root::open(&root).unwrap();
            r.set_use_openat2(use_openat2);
            Scene {
                t,
                root,
                r,
                changes: Vec::new(),
            }
        }

        fn apply(&mut self, tar: &[u8]) -> Result<UnpackStats> {
            let opts = UnpackOptions::for_current_user();
            apply_layer(&mut self.r, tar, &opts, &mut self.changes)
        }

        fn p(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }

        /// Nothing outside the root was touched.
        fn check_outside(&self) {
            assert_eq!(
                std::fs::read(self.t.path().join("canary")).unwrap(),
                b"alive"
            );
            assert_eq!(
                std::fs::read(self.t.path().join("outside/foo")).unwrap(),
                b"alive"
            );
            let mut names: Vec<_> = std::fs::read_dir(self.t.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            assert_eq!(names, ["canary", "outside", "root"]);
            assert_eq!(
                std::fs::read_dir(self.t.path().join("outside"))
                    .unwrap()
                    .count(),
                1
            );
        }
    }

    fn each_mode(f: impl Fn(&mut Scene)) {
        for mode in [true, false] {
            let mut s = Scene::new(mode);
            f(&mut s);
            s.check_outside();
        }
    }

    /// Builds tars in memory.
    #[derive(Default)]
    struct TarBuf(Vec<u8>);

    impl TarBuf {
        fn header(&mut self, name: &[u8], ty: tar::EntryType, size: u64, mode: u32) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(ty);
            h.set_size(size);
            h.set_mode(mode);
            h.set_mtime(1_600_000_000);
            h.set_uid(0);
            h.set_gid(0);
            // Set raw name bytes directly so hostile names pass through unchanged.
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name = [0; 100];
            gnu.name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            h
        }
        fn raw(&mut self, h: &tar::Header, data: &[u8]) {
            self.0.extend_from_slice(h.as_bytes());
            self.0.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            self.0.extend(std::iter::repeat(0).take(pad));
        }
        fn file(mut self, name: &str, data: &[u8]) -> Self {
            let h = self.header(
                name.as_bytes(),
                tar::EntryType::Regular,
                data.len() as u64,
                0o644,
            );
            self.raw(&h, data);
            self
        }
        fn file_mode(mut self, name: &str, data: &[u8], mode: u32) -> Self {
            let h = self.header(
                name.as_bytes(),
                tar::EntryType::Regular,
                data.len() as u64,
                mode,
            );
            self.raw(&h, data);
            self
        }
        fn dir(mut self, name: &str) -> Self {
            let h = self.header(name.as_bytes(), tar::EntryType::Directory, 0, 0o755);
            self.raw(&h, b"");
            self
        }
        fn link(mut self, ty: tar::EntryType, name: &str, target: &str) -> Self {
            let mut h = self.header(name.as_bytes(), ty, 0, 0o777);
            let gnu = h.as_gnu_mut().unwrap();
            gnu.linkname = [0; 100];
            gnu.linkname[..target.len()].copy_from_slice(target.as_bytes());
            h.set_cksum();
            self.raw(&h, b"");
            self
        }
        fn symlink(self, name: &str, target: &str) -> Self {
            self.link(tar::EntryType::Symlink, name, target)
        }
        fn hardlink(self, name: &str, target: &str) -> Self {
            self.link(tar::EntryType::Link, name, target)
        }
        fn node(mut self, name: &str, ty: tar::EntryType, mode: u32) -> Self {
            let mut h = self.header(name.as_bytes(), ty, 0, mode);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
            h.set_cksum();
            self.raw(&h, b"");
            self
        }
        fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
            let mut body = Vec::new();
            for (k, v) in records {
                let rest = k.len() + v.len() + 3;
                let mut len = rest + 1;
                while len.to_string().len() + rest != len {
                    len += 1;
                }
                body.extend_from_slice(format!("{len} {k}=").as_bytes());
                body.extend_from_slice(v);
                body.push(b'\n');
            }
            let mut h = tar::Header::new_ustar();
            h.set_path("PaxHeaders/x").unwrap();
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            self.raw(&h, &body);
            self
        }
        fn end(mut self) -> Vec<u8> {
            self.0.extend_from_slice(&[0; 1024]);
            self.0
        }
    }

    fn tb() -> TarBuf {
        TarBuf::default()
    }

    fn is_root() -> bool {
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000.5"), Some(1_700_000_000));
        assert_eq!(parse_pax_time(b"-1.5"), Some(-2));
        assert_eq!(parse_pax_time(b"12x"), None);
    }

    /// Names directly under the root, sorted.
    fn root_names(s: &Scene) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&s.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The root is still a directory and every change recorded for it is a directory.
    fn root_still_a_dir(s: &Scene) {
        assert!(std::fs::symlink_metadata(&s.root).unwrap().is_dir());
        for c in &s.changes {
            if let Change::Put(e) = c {
                assert!(!e.path.is_empty() || e.kind == EntryKind::Dir, "{e:?}");
            }
        }
    }

    /// Non-directory entries named `name` (file, symlink, hardlink, fifo) are skipped.
    fn skips_non_dirs_named(name: &str) {
        each_mode(|s| {
            let t = tb()
                .file("ok", b"ok")
                .file(name, b"evil")
                .symlink(name, "/etc")
                .hardlink(name, "ok")
                .node(name, tar::EntryType::Fifo, 0o600)
                .end();
            let stats = s.apply(&t).unwrap();
            assert_eq!(stats.entries, 5);
            assert_eq!(root_names(s), ["ok"]);
            root_still_a_dir(s);
        });
    }

    #[test]
    fn entry_named_dotdot_is_skipped() {
        skips_non_dirs_named("..");
    }

    #[test]
    fn entry_named_dot_is_skipped() {
        skips_non_dirs_named(".");
    }

    #[test]
    fn entry_with_empty_name_is_skipped() {
        skips_non_dirs_named("");
    }

    #[test]
    fn entry_named_slash_or_dot_slash_is_skipped() {
        skips_non_dirs_named("/");
        skips_non_dirs_named("./");
        skips_non_dirs_named("../..");
    }

    #[test]
    fn root_directory_entries_set_the_root_metadata() {
        for (i, name) in ["./", "/", ".", "", "..", "a/..", "/../."]
            .iter()
            .enumerate()
        {
            each_mode(|s| {
                let mode = 0o700 + i as u32;
                let h = tb().header(name.as_bytes(), tar::EntryType::Directory, 0, mode);
                let mut t = tb();
                t.raw(&h, b"");
                s.apply(&t.end()).unwrap();
                let m = std::fs::metadata(&s.root).unwrap();
                assert_eq!(m.permissions().mode() & 0o7777, mode, "{name:?}");
                assert_eq!(m.mtime(), 1_600_000_000, "{name:?}");
                assert!(
                    matches!(&s.changes[..], [Change::Put(e)] if e.path.is_empty()),
                    "{name:?}: {:?}",
                    s.changes
                );
                assert!(root_names(s).is_empty(), "{name:?}");
            });
        }
    }

    #[test]
    fn dir_sub_dotdot_is_dir() {
        each_mode(|s| {
            let t = tb()
                .dir("dir/sub/..")
                .file("dir/sub/../f", b"in dir")
                .file("g/sub/..", b"g is a file")
                .end();
            s.apply(&t).unwrap();
            assert_eq!(root_names(s), ["dir", "g"]);
            assert_eq!(std::fs::read(s.p("dir/f")).unwrap(), b"in dir");
            assert!(!s.p("dir/sub").exists());
            assert_eq!(std::fs::read(s.p("g")).unwrap(), b"g is a file");
        });
    }

    #[test]
    fn dotdot_beyond_the_root_is_clamped() {
        each_mode(|s| {
            let t = tb()
                .file("a/../../../b", b"b")
                .file("../x", b"x")
                .file("/abs/../../y", b"y")
                .dir("../../d/")
                .file("./../canary", b"inside")
                .file("../outside/foo", b"inside too")
                .end();
            s.apply(&t).unwrap();
            assert_eq!(root_names(s), ["b", "canary", "d", "outside", "x", "y"]);
            assert_eq!(std::fs::read(s.p("canary")).unwrap(), b"inside");
            assert_eq!(std::fs::read(s.p("outside/foo")).unwrap(), b"inside too");
            assert!(!s.p("a").exists());
        });
    }

    #[test]
    fn whiteout_is_recognised_after_cleaning() {
        each_mode(|s| {
            let t1 = tb()
                .dir("etc")
                .file("etc/passwd", b"")
                .dir("keep")
                .file("keep/x", b"")
                .end();
            s.apply(&t1).unwrap();
            s.changes.clear();
            let t2 = tb().file("dne/../.wh.etc", b"").dir("keep/.wh.x/..").end();
            s.apply(&t2).unwrap();
            assert_eq!(root_names(s), ["keep"]);
            assert!(
                s.p("keep/x").exists(),
                "`keep/.wh.x/..` is `keep`, no whiteout"
            );
            assert!(matches!(&s.changes[0], Change::Delete(p) if p == b"etc"));
            assert!(matches!(&s.changes[1], Change::Put(e) if e.path == b"keep"));
        });
    }

    #[test]
    fn opaque_marker_cleaned_to_the_root() {
        each_mode(|s| {
            s.apply(&tb().file("a", b"").dir("d").file("d/x", b"").end())
                .unwrap();
            s.changes.clear();
            s.apply(&tb().file("new", b"n").file("../.wh..wh..opq", b"").end())
                .unwrap();
            assert_eq!(root_names(s), ["new"]);
            assert!(matches!(&s.changes[1], Change::Opaque(p) if p.is_empty()));
        });
    }

    #[test]
    fn whiteouts_of_a_directory_itself_are_refused() {
        each_mode(|s| {
            s.apply(&tb().dir("etc").file("etc/passwd", b"").end())
                .unwrap();
            for name in [
                ".wh..",
                ".wh...",
                "etc/.wh..",
                "etc/.wh...",
                "../.wh..",
                ".wh.",
            ] {
                let e = s.apply(&tb().file(name, b"").end()).unwrap_err();
                let e = e.to_string();
                assert!(e.contains("invalid whiteout name"), "{name}: {e}");
                assert!(!e.contains("escapes"), "{e}");
                assert!(s.p("etc/passwd").exists(), "{name}");
            }
        });
    }

    #[test]
    fn hardlink_target_is_clamped_at_the_root() {
        each_mode(|s| {
            let t = tb()
                .dir("etc")
                .file("etc/passwd", b"inside")
                .hardlink("pw", "../../../../etc/passwd")
                .hardlink("pw2", "/../etc/./passwd")
                .end();
            s.apply(&t).unwrap();
            let ino = std::fs::metadata(s.p("etc/passwd")).unwrap().ino();
            assert_eq!(std::fs::metadata(s.p("pw")).unwrap().ino(), ino);
            assert_eq!(std::fs::metadata(s.p("pw2")).unwrap().ino(), ino);
            // The clamped target must exist in the image.
            let t = tb().hardlink("sh", "../../../../etc/shadow").end();
            let e = s.apply(&t).unwrap_err().to_string();
            assert!(e.contains("/etc/shadow does not exist in the image"), "{e}");
            assert!(!e.contains("escapes"), "{e}");
        });
    }

    #[test]
    fn hardlink_to_dotdot_is_refused() {
        each_mode(|s| {
            s.apply(&tb().dir("etc").end()).unwrap();
            for target in ["..", ".", "/", "", "a/..", "../..", "etc/.."] {
                let e = s
                    .apply(&tb().hardlink("h", target).end())
                    .unwrap_err()
                    .to_string();
                assert!(e.contains("root directory"), "{target:?}: {e}");
            }
            let e = s
                .apply(&tb().hardlink("h", "../etc").end())
                .unwrap_err()
                .to_string();
            assert!(e.contains("/etc is a directory"), "{e}");
            assert_eq!(root_names(s), ["etc"]);
        });
    }

    /// An old GNU header (`ustar  \0`) for a regular file `name`, with `area`
    /// written where GNU keeps atime and ctime and USTAR its prefix.
    fn gnu_with_prefix_area(name: &str, area: &[u8], data: &[u8]) -> Vec<u8> {
        let mut h = tb().header(
            name.as_bytes(),
            tar::EntryType::Regular,
            data.len() as u64,
            0o644,
        );
        h.as_mut_bytes()[345..345 + area.len()].copy_from_slice(area);
        h.set_cksum();
        assert!(h.as_gnu().is_some());
        let mut t = tb();
        t.raw(&h, data);
        t.end()
    }

    #[test]
    fn gnu_prefix_with_junk_times_is_read_as_go_does() {
        each_mode(|s| {
            s.apply(&gnu_with_prefix_area("f", b"usr/lib", b"go"))
                .unwrap();
            assert_eq!(std::fs::read(s.p("usr/lib/f")).unwrap(), b"go");
            assert_eq!(root_names(s), ["usr"]);
            // Cleaned like any other name.
            s.apply(&gnu_with_prefix_area("g", b"../../etc", b"x"))
                .unwrap();
            assert!(s.p("etc/g").is_file());
        });
    }

    #[test]
    fn gnu_prefix_with_valid_times_is_not_used() {
        each_mode(|s| {
            let t = gnu_with_prefix_area("f", b"14712345670\x0014712345671\x00", b"gnu");
            s.apply(&t).unwrap();
            assert_eq!(std::fs::read(s.p("f")).unwrap(), b"gnu");
            assert_eq!(root_names(s), ["f"]);
        });
    }

    #[test]
    fn pax_path_wins_over_a_gnu_prefix() {
        each_mode(|s| {
            let mut t = tb().pax(&[("path", b"p/x")]);
            let g = gnu_with_prefix_area("f", b"usr/lib", b"pax");
            t.0.extend_from_slice(&g[..g.len() - 1024]);
            s.apply(&t.end()).unwrap();
            assert_eq!(std::fs::read(s.p("p/x")).unwrap(), b"pax");
            assert!(!s.p("usr").exists());
        });
    }

    #[test]
    fn gnu_prefix_like_moby_prefix_header_readable() {
        // The shape of moby's TestPrefixHeaderReadable: an old GNU header of type
        // NUL with a base-256 uid, 97 `a`s in the prefix field, the name `foo`.
        each_mode(|s| {
            let mut h = tb().header(b"foo", tar::EntryType::Regular, 0, 0);
            let b = h.as_mut_bytes();
            b[156] = 0;
            b[108..116].copy_from_slice(&[0x80, 0, 0, 0, 0, 0x20, 0, 0]);
            b[345..345 + 97].fill(b'a');
            h.set_cksum();
            let mut t = tb();
            t.raw(&h, b"");
            s.apply(&t.end()).unwrap();
            let path = format!("{}/foo", "a".repeat(97));
            assert!(std::fs::symlink_metadata(s.p(&path)).unwrap().is_file());
            assert_eq!(root_names(s), ["a".repeat(97)]);
        });
    }

    #[test]
    fn gnu_long_name_wins_over_a_gnu_prefix() {
        each_mode(|s| {
            let long = b"long/name/x\0junk after the NUL\0";
            let h = tb().header(
                b"././@LongLink",
                tar::EntryType::GNULongName,
                long.len() as u64,
                0o644,
            );
            let mut t = tb();
            t.raw(&h, long);
            let g = gnu_with_prefix_area("f", b"usr/lib", b"long");
            t.0.extend_from_slice(&g[..g.len() - 1024]);
            s.apply(&t.end()).unwrap();
            assert_eq!(std::fs::read(s.p("long/name/x")).unwrap(), b"long");
            assert_eq!(root_names(s), ["long"]);
        });
    }

    #[test]
    fn old_style_file_with_trailing_slash_is_a_directory() {
        each_mode(|s| {
            let mut h = tb().header(b"olddir/", tar::EntryType::Regular, 0, 0o750);
            h.as_mut_bytes()[156] = 0;
            h.set_cksum();
            let mut t = tb();
            t.raw(&h, b"");
            let t = t.file("olddir/f", b"").end();
            s.apply(&t).unwrap();
            let m = std::fs::symlink_metadata(s.p("olddir")).unwrap();
            assert!(m.is_dir());
            assert_eq!(m.permissions().mode() & 0o7777, 0o750);
        });
    }

    #[test]
    fn symlinks_made_by_the_image_still_confine() {
        each_mode(|s| {
            let outside = s.t.path().join("outside");
            let t = tb()
                .dir("outside")
                .dir("d")
                .symlink("d/l", "../../../outside")
                .file("d/l/foo", b"inside")
                .symlink("up", "../../..")
                .file("up/escape", b"x")
                .hardlink("h", "up/outside/foo")
                .file("d/l/../../escape2", b"y")
                .symlink("abs", outside.to_str().unwrap())
                .file("abs/../escape3", b"z")
                .end();
            s.apply(&t).unwrap();
            assert_eq!(std::fs::read(s.p("outside/foo")).unwrap(), b"inside");
            assert_eq!(std::fs::read(s.p("escape")).unwrap(), b"x");
            // Names are cleaned before any symlink is looked at (as Docker does).
            assert_eq!(std::fs::read(s.p("escape2")).unwrap(), b"y");
            assert_eq!(std::fs::read(s.p("escape3")).unwrap(), b"z");
            let ino = std::fs::metadata(s.p("outside/foo")).unwrap().ino();
            assert_eq!(std::fs::metadata(s.p("h")).unwrap().ino(), ino);
            // Through the absolute symlink: its target exists only outside.
            let e = s.apply(&tb().file("abs/foo", b"evil").end()).unwrap_err();
            assert!(!e.to_string().contains("escapes"), "{e}");
        });
    }

    /// (st_dev, st_ino) of `rel` inside the root, not following a final symlink.
    fn ino(s: &Scene, rel: &str) -> u64 {
        std::fs::symlink_metadata(s.p(rel)).unwrap().ino()
    }

    /// containerd's archive breakout cases (pkg/archive TestBreakouts), each applied
    /// in both resolution modes: every one lands inside the root or is refused.
    #[test]
    fn containerd_breakout_cases() {
        type Check = fn(&Scene);
        let unbroken: Check =
            |s| assert_eq!(std::fs::read(s.p("etc/unbroken")).unwrap(), b"unbroken");
        let passwd = || tb().dir("etc").file("etc/passwd", b"inside");
        let cases: Vec<(&str, TarBuf, Check)> = vec![
            (
                "SymlinkAbsolute",
                tb().dir("etc")
                    .symlink("localetc", "/etc")
                    .file("/localetc/unbroken", b"unbroken"),
                unbroken,
            ),
            (
                "SymlinkUpAndOut",
                tb().dir("etc")
                    .dir("dummy")
                    .symlink("localetc", "/dummy/../etc")
                    .file("/localetc/unbroken", b"unbroken"),
                unbroken,
            ),
            (
                "SymlinkMultipleRelative",
                tb().dir("etc")
                    .dir("dummy")
                    .symlink("/dummy/etc", "/etc")
                    .symlink("localetc", "./dummy/etc")
                    .file("/dummy/etc/unbroken", b"unbroken"),
                unbroken,
            ),
            (
                "HardlinkDownAndOut",
                passwd()
                    .dir("breakouts")
                    .dir("downandout")
                    .symlink("breakouts/d1", "../downandout/../../etc")
                    .hardlink("breakouts/mypasswd", "/breakouts/d1/passwd"),
                |s| assert_eq!(ino(s, "breakouts/mypasswd"), ino(s, "etc/passwd")),
            ),
            (
                "HardlinkRelativeLong",
                passwd()
                    .symlink("localetc", "../../../../../../../etc")
                    .hardlink("localpasswd", "/localetc/passwd"),
                |s| assert_eq!(ino(s, "localpasswd"), ino(s, "etc/passwd")),
            ),
            (
                "HardlinkDirectRelative",
                passwd().hardlink("localpasswd", "../../../../../etc/passwd"),
                |s| assert_eq!(ino(s, "localpasswd"), ino(s, "etc/passwd")),
            ),
            (
                "SymlinkParentDirectory",
                passwd()
                    .symlink("..", "/etc/")
                    .hardlink("localpasswd", "/etc/passwd"),
                |s| assert_eq!(ino(s, "localpasswd"), ino(s, "etc/passwd")),
            ),
            (
                "SymlinkEmptyFilename",
                passwd()
                    .symlink("", "/etc/")
                    .hardlink("localpasswd", "/etc/passwd"),
                |s| assert_eq!(ino(s, "localpasswd"), ino(s, "etc/passwd")),
            ),
            (
                "SymlinkParentRelative",
                passwd()
                    .symlink("localetc/sub/..", "/etc/")
                    .hardlink("/localetc/localpasswd", "/etc/passwd"),
                |s| assert_eq!(ino(s, "etc/localpasswd"), ino(s, "etc/passwd")),
            ),
            (
                "WhiteoutDirectoryName",
                passwd().file(".wh.etc/somefile", b"non-empty"),
                |s| {
                    assert_eq!(
                        std::fs::read(s.p(".wh.etc/somefile")).unwrap(),
                        b"non-empty"
                    );
                    assert!(s.p("etc/passwd").exists());
                },
            ),
            (
                "WhiteoutDeadSymlinkParent",
                passwd()
                    .symlink("localetc", "/dne")
                    .file("localetc/.wh.etc", b""),
                |s| assert!(s.p("etc/passwd").exists()),
            ),
            (
                "HardlinkSymlinkBeforeCreateTarget",
                tb().dir("etc")
                    .symlink("localpasswd", "/etc/passwd")
                    .hardlink("localpasswd-dup", "localpasswd")
                    .file("/etc/passwd", b"after"),
                |s| assert_eq!(ino(s, "localpasswd-dup"), ino(s, "localpasswd")),
            ),
            (
                "HardlinkSymlinkRelative",
                passwd()
                    .symlink("passwdlink", "../../../../../etc/passwd")
                    .hardlink("localpasswd", "/passwdlink"),
                |s| assert_eq!(ino(s, "localpasswd"), ino(s, "passwdlink")),
            ),
        ];
        for (name, layer, check) in cases {
            let t = layer.end();
            each_mode(|s| {
                s.apply(&t).unwrap_or_else(|e| panic!("{name}: {e}"));
                check(s);
            });
        }
        // HardlinkRelativeUpAndOut: containerd cleans symlink targets lexically
        // (`upandout/..` is gone even though `upandout` does not exist); the kernel,
        // and so barge, does not: the target is missing and the layer is refused.
        let t = passwd()
            .symlink("localetc", "upandout/../../../etc")
            .hardlink("localpasswd", "/localetc/passwd")
            .end();
        each_mode(|s| {
            let e = s.apply(&t).unwrap_err().to_string();
            assert!(e.contains("/localetc/passwd does not exist"), "{e}");
        });
        // Applied over an earlier layer.
        each_mode(|s| {
            s.apply(&passwd().symlink("localetc", "/etc").end())
                .unwrap();
            // DirectoryOverrideSymlink
            s.apply(
                &tb()
                    .dir("/localetc/")
                    .hardlink("/localetc/localpasswd", "/etc/passwd")
                    .end(),
            )
            .unwrap();
            assert!(std::fs::symlink_metadata(s.p("localetc")).unwrap().is_dir());
            assert_eq!(ino(s, "localetc/localpasswd"), ino(s, "etc/passwd"));
            // SymlinkOverrideDirectoryRelative
            s.apply(
                &tb()
                    .symlink("localetc", "../../etc")
                    .hardlink("/localetc/l2", "/etc/passwd")
                    .end(),
            )
            .unwrap();
            assert_eq!(ino(s, "etc/l2"), ino(s, "etc/passwd"));
            // WhiteoutSymlink, WhiteoutSymlinkPath
            s.apply(&tb().file("etc/whitedout", b"").end()).unwrap();
            s.apply(
                &tb()
                    .file("localetc/.wh.whitedout", b"")
                    .file(".wh.localetc", b"")
                    .end(),
            )
            .unwrap();
            assert!(!s.p("etc/whitedout").exists() && !s.p("localetc").exists());
            assert!(s.p("etc/passwd").exists());
            // WhiteoutRelativePath
            s.apply(
                &tb()
                    .symlink("localetc", "/dne")
                    .file("dne/../.wh.etc", b"")
                    .end(),
            )
            .unwrap();
            assert!(!s.p("etc").exists());
        });
    }

    #[test]
    fn symlinks_cannot_lead_outside() {
        each_mode(|s| {
            let outside = s.t.path().join("outside");
            let t = tb()
                .symlink("evil", "/")
                .dir("evil/etc")
                .file("evil/etc/passwd", b"root")
                .symlink("up", "../../..")
                .file("up/x", b"x")
                .symlink("c1", "c2")
                .symlink("c2", "/c3/../../..")
                .symlink("c3", "up")
                .file("c1/chained", b"y")
                .symlink("link", outside.to_str().unwrap())
                .file("link/.wh.foo", b"")
                .dir("d")
                .file("d/f", b"hl")
                .symlink("dl", &format!("../../{}", outside.display()))
                .end();
            s.apply(&t).unwrap();
            assert_eq!(std::fs::read(s.p("etc/passwd")).unwrap(), b"root");
            assert_eq!(std::fs::read(s.p("x")).unwrap(), b"x");
            assert_eq!(std::fs::read(s.p("chained")).unwrap(), b"y");
            // `link` points at an absolute path that exists outside only: inside the
            // root it does not exist, so `link/foo2` fails (and nothing lands outside).
            assert!(s.apply(&tb().file("link/foo2", b"z").end()).is_err());
            assert!(!outside.join("foo2").exists());
            assert_eq!(
                std::fs::read_link(s.p("evil")).unwrap(),
                Path::new("/"),
                "symlink targets are kept verbatim"
            );
        });
    }

    #[test]
    fn whiteout_of_symlinks_in_a_cached_parent() {
        // The parent directory fd is cached between entries: removing a symlink
        // must not close it under the caller (seen as EBADF on `bin/.wh.vi`).
        each_mode(|s| {
            let t1 = tb()
                .dir("bin")
                .file("bin/busybox", b"bb")
                .symlink("bin/vi", "busybox")
                .symlink("bin/ls", "busybox")
                .end();
            s.apply(&t1).unwrap();
            let t2 = tb()
                .file("bin/new", b"n")
                .file("bin/.wh.vi", b"")
                .file("bin/.wh.ls", b"")
                .file("bin/after", b"a")
                .end();
            s.apply(&t2).unwrap();
            assert!(std::fs::symlink_metadata(s.p("bin/vi")).is_err());
            assert!(std::fs::symlink_metadata(s.p("bin/ls")).is_err());
            assert_eq!(std::fs::read(s.p("bin/after")).unwrap(), b"a");
        });
    }

    #[test]
    fn earlier_layer_symlink_is_followed_inside() {
        each_mode(|s| {
            let outside = s.t.path().join("outside");
            // Layer 1: a symlink into the host's temp dir (by absolute path) and usrmerge.
            let t1 = tb()
                .symlink("t", outside.to_str().unwrap())
                .dir("usr")
                .dir("usr/lib")
                .symlink("lib", "usr/lib")
                .end();
            s.apply(&t1).unwrap();
            // Create the same absolute path inside the root, so the link resolves there.
            let inside = s.root.join(outside.strip_prefix("/").unwrap());
            std::fs::create_dir_all(&inside).unwrap();
            std::fs::write(inside.join("foo"), b"inner").unwrap();
            let t2 = tb()
                .file("t/.wh.foo", b"")
                .file("t/new", b"n")
                .dir("lib/x")
                .file("lib/x/y", b"deep")
                .hardlink("hl", "lib/x/y")
                .end();
            s.apply(&t2).unwrap();
            assert!(!inside.join("foo").exists());
            assert_eq!(std::fs::read(inside.join("new")).unwrap(), b"n");
            assert_eq!(std::fs::read(s.p("usr/lib/x/y")).unwrap(), b"deep");
            let a = std::fs::metadata(s.p("usr/lib/x/y")).unwrap();
            let b = std::fs::metadata(s.p("hl")).unwrap();
            assert_eq!(a.ino(), b.ino());
        });
    }

    #[test]
    fn whiteout_through_symlink_to_outside_is_harmless() {
        each_mode(|s| {
            let outside = s.t.path().join("outside");
            let t = tb()
                .symlink("link", outside.to_str().unwrap())
                .file("link/.wh.foo", b"")
                .symlink("rel", "../outside")
                .file("rel/.wh.foo", b"")
                .file(".wh.canary", b"")
                .end();
            s.apply(&t).unwrap();
            // `link/../.wh.canary` is `.wh.canary` at the root: nothing there to remove.
            s.apply(&tb().file("link/../.wh.canary", b"").end())
                .unwrap();
        });
    }

    #[test]
    fn hardlinks_stay_inside() {
        each_mode(|s| {
            let outside = s.t.path().join("outside");
            let t = tb()
                .symlink("sd", outside.to_str().unwrap())
                .hardlink("h1", "sd/foo")
                .end();
            let e = s.apply(&t).unwrap_err().to_string();
            assert!(e.contains("does not exist"), "{e}");
            // Through a symlinked directory that does exist inside: lands inside.
            let t = tb()
                .dir("real")
                .file("real/f", b"content")
                .symlink("via", "/real")
                .hardlink("h2", "via/f")
                .hardlink("h3", "h2")
                .end();
            s.apply(&t).unwrap();
            let ino = std::fs::metadata(s.p("real/f")).unwrap().ino();
            assert_eq!(std::fs::metadata(s.p("h2")).unwrap().ino(), ino);
            assert_eq!(std::fs::metadata(s.p("h3")).unwrap().ino(), ino);
            assert_eq!(std::fs::metadata(s.p("h3")).unwrap().nlink(), 3);
            // Hardlink to a symlink links the symlink itself.
            let t = tb().symlink("sl", "/etc/shadow").hardlink("h4", "sl").end();
            s.apply(&t).unwrap();
            assert_eq!(
                std::fs::read_link(s.p("h4")).unwrap(),
                Path::new("/etc/shadow")
            );
            let t = tb().dir("dd").hardlink("h5", "dd").end();
            assert!(s.apply(&t).is_err());
        });
    }

    #[test]
    fn types_replace_each_other() {
        each_mode(|s| {
            s.apply(
                &tb()
                    .dir("a")
                    .file("a/inner", b"1")
                    .file("b", b"file")
                    .symlink("c", "b")
                    .dir("d")
                    .end(),
            )
            .unwrap();
            s.apply(
                &tb()
                    .file("a", b"now a file")
                    .dir("b")
                    .file("b/x", b"")
                    .dir("c")
                    .symlink("d", "/a")
                    .file("e", b"")
                    .end(),
            )
            .unwrap();
            assert_eq!(std::fs::read(s.p("a")).unwrap(), b"now a file");
            assert!(s.p("b/x").is_file());
            assert!(std::fs::symlink_metadata(s.p("c")).unwrap().is_dir());
            assert!(std::fs::symlink_metadata(s.p("d"))
                .unwrap()
                .file_type()
                .is_symlink());
            // Existing directory kept with its content, metadata updated.
            s.apply(&tb().dir("b").end()).unwrap();
            assert!(s.p("b/x").is_file());
            // File overwrites file.
            s.apply(&tb().file("e", b"second").end()).unwrap();
            assert_eq!(std::fs::read(s.p("e")).unwrap(), b"second");
        });
    }

    #[test]
    fn whiteouts_and_opaque_dirs() {
        each_mode(|s| {
            s.apply(
                &tb()
                    .dir("etc")
                    .file("etc/old", b"")
                    .dir("etc/sub")
                    .file("etc/sub/old", b"")
                    .file("etc/sub/keep?", b"")
                    .dir("gone")
                    .file("gone/x", b"")
                    .file("f", b"")
                    .dir("o2")
                    .file("o2/old", b"")
                    .end(),
            )
            .unwrap();
            // umoci quirk: the opaque marker comes before the directory's own entry.
            s.changes.clear();
            let stats = s
                .apply(
                    &tb()
                        .file("etc/.wh..wh..opq", b"")
                        .dir("etc")
                        .file("etc/new", b"n")
                        .file("etc/sub/new", b"")
                        .file(".wh.gone", b"")
                        .file(".wh.f", b"")
                        .file(".wh.missing", b"")
                        .file("o2/new", b"")
                        .file("o2/.wh..wh..opq", b"")
                        .end(),
                )
                .unwrap();
            assert_eq!(stats.entries, 9);
            let mut etc: Vec<_> = std::fs::read_dir(s.p("etc"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            etc.sort();
            assert_eq!(etc, ["new", "sub"]);
            let sub: Vec<_> = std::fs::read_dir(s.p("etc/sub"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(sub, ["new"]);
            assert!(!s.p("gone").exists() && !s.p("f").exists());
            let o2: Vec<_> = std::fs::read_dir(s.p("o2"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(o2, ["new"]);
            // No whiteout file is ever created.
            assert!(!s.p("etc/.wh..wh..opq").exists() && !s.p(".wh.gone").exists());
            assert!(matches!(&s.changes[0], Change::Opaque(p) if p == b"etc"));
            assert!(matches!(&s.changes[4], Change::Delete(p) if p == b"gone"));
            // Whiteout after the same layer's entry keeps that entry.
            s.apply(&tb().file("w", b"").file(".wh.w", b"").end())
                .unwrap();
            assert!(s.p("w").exists());
        });
    }

    #[test]
    fn metadata_fifo_xattr_and_pax() {
        each_mode(|s| {
            let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
            let t = tb()
                .file_mode("suid", b"#!", 0o4755)
                .file_mode("sticky", b"", 0o1777)
                .node("fifo", tar::EntryType::Fifo, 0o640)
                .node("null", tar::EntryType::Char, 0o666)
                .pax(&[
                    ("SCHILY.xattr.user.foo", b"bar\0baz"),
                    ("mtime", b"1234567890.75"),
                    ("uid", b"4242"),
                    ("gid", b"4343"),
                    ("path", long.as_bytes()),
                ])
                .file("ignored-name", b"long")
                .end();
            let stats = s.apply(&t).unwrap();
            let m = std::fs::symlink_metadata(s.p("suid")).unwrap();
            assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
            assert_eq!(m.mtime(), 1_600_000_000);
            assert_eq!(
                std::fs::symlink_metadata(s.p("sticky"))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o7777,
                0o1777
            );
            let f = std::fs::symlink_metadata(s.p("fifo")).unwrap();
            assert!(f.file_type().is_fifo());
            assert_eq!(f.permissions().mode() & 0o7777, 0o640);
            let lp = s.p(&long);
            let m = std::fs::symlink_metadata(&lp).unwrap();
            assert_eq!(m.mtime(), 1_234_567_890);
            assert_eq!(std::fs::read(&lp).unwrap(), b"long");
            let Some(Change::Put(e)) = s.changes.last() else {
                panic!()
            };
            assert_eq!(
                e.xattrs,
                vec![("user.foo".to_string(), b"bar\0baz".to_vec())]
            );
            assert_eq!(e.content, Some(Digest::of_bytes(b"long")));
            assert_eq!((e.uid, e.gid), (4242, 4343));
            if is_root() {
                assert_eq!((m.uid(), m.gid()), (4242, 4343));
                let n = std::fs::symlink_metadata(s.p("null")).unwrap();
                assert!(n.file_type().is_char_device());
                assert_eq!(n.rdev(), libc::makedev(1, 3));
            } else {
                assert_eq!(stats.skipped_devices, 1);
            }
            let mut v = [0u8; 16];
            let c = std::ffi::CString::new(lp.to_str().unwrap()).unwrap();
            let n = unsafe {
                libc::getxattr(c.as_ptr(), c"user.foo".as_ptr(), v.as_mut_ptr().cast(), 16)
            };
            if n >= 0 {
                assert_eq!(&v[..n as usize], b"bar\0baz");
            } else {
                assert_eq!(stats.skipped_xattrs, 1);
            }
        });
    }

    #[test]
    fn directory_mtimes_are_restored() {
        each_mode(|s| {
            s.apply(
                &tb()
                    .dir("a")
                    .dir("a/b")
                    .file("a/b/c", b"")
                    .file("a/x", b"")
                    .end(),
            )
            .unwrap();
            for d in ["a", "a/b", ""] {
                let m = std::fs::metadata(s.p(d)).unwrap();
                if d.is_empty() {
                    assert_ne!(m.mtime(), 1_600_000_000);
                } else {
                    assert_eq!(m.mtime(), 1_600_000_000, "{d}");
                }
            }
            // A later layer without a header for `a` leaves its mtime as it was.
            s.apply(&tb().file("a/new", b"").file("a/.wh.x", b"").end())
                .unwrap();
            assert_eq!(std::fs::metadata(s.p("a")).unwrap().mtime(), 1_600_000_000);
            // The root's own entry sets the root's metadata.
            s.apply(&tb().dir("./").end()).unwrap();
            let m = std::fs::metadata(&s.root).unwrap();
            assert_eq!(m.mtime(), 1_600_000_000);
            assert_eq!(m.permissions().mode() & 0o7777, 0o755);
            // A non-directory named `./` is skipped, as containerd does.
            s.apply(&tb().file("./", b"").end()).unwrap();
            assert!(std::fs::symlink_metadata(&s.root).unwrap().is_dir());
        });
    }

    #[test]
    fn quirky_tars_are_accepted() {
        each_mode(|s| {
            // umoci 0.4.7: last entry without padding, no end-of-archive blocks.
            let mut t = tb().dir("d").file("d/a", b"12345").0;
            t.truncate(t.len() - (512 - 5));
            let stats = s.apply(&t).unwrap();
            assert_eq!(stats.entries, 2);
            assert_eq!(std::fs::read(s.p("d/a")).unwrap(), b"12345");
            // No end-of-archive blocks after a padded entry; garbage after the end.
            let t = tb().file("b", b"x").0;
            s.apply(&t).unwrap();
            let mut t = tb().file("c", b"y").end();
            t.extend_from_slice(b"trailing junk after the end");
            s.apply(&t).unwrap();
            assert!(s.p("c").exists());
        });
    }

    #[test]
    fn modes_the_umask_would_strip_are_exact_and_digests_are_optional() {
        let mut s = Scene::new(true);
        let t = tb()
            .file_mode("rw-all", b"a", 0o666)
            .file_mode("rwx-all", b"b", 0o777)
            .file_mode("none", b"c", 0o000)
            .file_mode("sgid", b"d", 0o2711)
            .end();
        let opts = UnpackOptions {
            content_digests: false,
            ..UnpackOptions::for_current_user()
        };
        apply_layer(&mut s.r, &t[..], &opts, &mut s.changes).unwrap();
        for (name, mode) in [
            ("rw-all", 0o666),
            ("rwx-all", 0o777),
            ("none", 0),
            ("sgid", 0o2711),
        ] {
            let m = std::fs::symlink_metadata(s.p(name)).unwrap();
            assert_eq!(m.permissions().mode() & 0o7777, mode, "{name}");
        }
        assert_eq!(std::fs::read(s.p("none")).unwrap(), b"c");
        for c in &s.changes {
            if let Change::Put(e) = c {
                assert_eq!(e.content, None, "no content digest asked for");
            }
        }
    }

    #[test]
    fn not_root_skips_devices_and_owners() {
        let mut s = Scene::new(false);
        let mut h = tb().header(b"owned", tar::EntryType::Regular, 1, 0o4755);
        h.set_uid(1000);
        h.set_cksum();
        let mut t = tb();
        t.raw(&h, b"x");
        let t = t
            .node("dev", tar::EntryType::Block, 0o600)
            .node("fifo", tar::EntryType::Fifo, 0o600)
            .end();
        let opts = UnpackOptions {
            as_root: false,
            content_digests: true,
        };
        let stats = apply_layer(&mut s.r, &t[..], &opts, &mut s.changes).unwrap();
        assert_eq!((stats.skipped_devices, stats.skipped_owners), (1, 1));
        assert!(!s.p("dev").exists());
        assert!(std::fs::symlink_metadata(s.p("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(s.changes.len(), 3);
        // Partial padding after the last entry's data is a normal end too.
        let mut t = tb().file("p", b"abc").0;
        t.truncate(t.len() - 100);
        apply_layer(&mut s.r, &t[..], &opts, &mut s.changes).unwrap();
        assert_eq!(std::fs::read(s.p("p")).unwrap(), b"abc");
        s.check_outside();
    }

    #[test]
    fn truncated_and_interrupted_streams_fail() {
        let mut s = Scene::new(true);
        let t = tb().file("a", &[7u8; 3000]).end();
        assert!(s.apply(&t[..512 + 1000]).is_err());
        assert!(s.apply(&t[..300]).is_err());
        struct Intr;
        impl Read for Intr {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::Interrupted.into())
            }
        }
        let e = apply_layer(
            &mut s.r,
            Intr,
            &UnpackOptions {
                as_root: false,
                content_digests: true,
            },
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), Kind::Interrupted);
    }

    #[test]
    fn stream_is_read_to_the_end() {
        let mut s = Scene::new(true);
        let mut t = tb().file("a", b"1").end();
        t.extend_from_slice(&[0u8; 5000]);
        let mut h = crate::digest::HashReader::new(&t[..]);
        apply_layer(
            &mut s.r,
            &mut h,
            &UnpackOptions {
                as_root: false,
                content_digests: true,
            },
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(h.count(), t.len() as u64);
    }

    #[test]
    fn builder_made_tar_round_trips() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o600);
        h.set_mtime(1);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "x/y/z", &b"data"[..]).unwrap();
        let t = b.into_inner().unwrap();
        let mut s = Scene::new(false);
        s.apply(&t).unwrap();
        assert_eq!(std::fs::read(s.p("x/y/z")).unwrap(), b"data");
        assert_eq!(
            std::fs::metadata(s.p("x/y")).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }

    /// Applies gzip layers to a directory, for comparing with `umoci unpack`:
    /// `BARGE_LAYERS=l1.tar.gz,l2.tar.gz BARGE_OUT=/empty/dir`, run with `--ignored`.
    #[test]
    #[ignore]
    fn manual_apply_layers() {
        let (Some(layers), Some(out)) = (
            std::env::var("BARGE_LAYERS").ok(),
            std::env::var_os("BARGE_OUT"),
        ) else {
            return;
        };
        let mut r = Root::open(Path::new(&out)).unwrap();
        for l in layers.split(',') {
            let gz = crate::layer::gzip::GzipReader::new(std::fs::File::open(l).unwrap());
            let mut h = crate::digest::HashReader::new(gz);
            let stats = apply_layer(
                &mut r,
                &mut h,
                &UnpackOptions::for_current_user(),
                &mut Vec::new(),
            )
            .unwrap();
            println!("{l}: {stats:?} diff_id {}", h.finish().0);
        }
    }

    /// Extraction speed on many small files (run with `--ignored --nocapture`;
    /// compare with `tar -xf` of the same archive).
    #[test]
    #[ignore]
    fn bench_many_files() {
        let n = 10_000;
        let mut t = tb();
        for d in 0..100 {
            t = t.dir(&format!("d{d}"));
            for f in 0..n / 100 {
                t = t.file(&format!("d{d}/f{f}"), &[b'x'; 700]);
            }
        }
        let t = t.end();
        let tarfile = std::env::temp_dir().join("barge-bench-files.tar");
        std::fs::write(&tarfile, &t).unwrap();
        for mode in [true, false] {
            let s = Scene::new(mode);
            let mut r = Root::open(&s.root).unwrap();
            r.set_use_openat2(mode);
            let start = std::time::Instant::now();
            apply_layer(
                &mut r,
                &t[..],
                &UnpackOptions::for_current_user(),
                &mut Vec::new(),
            )
            .unwrap();
            println!(
                "openat2={mode}: {n} files in {:.3}s",
                start.elapsed().as_secs_f64()
            );
        }
        println!("tar file for comparison: {}", tarfile.display());
        // A real tar (e.g. a debootstrap rootfs): BARGE_TAR_BENCH=/path/to.tar
        if let Some(path) = std::env::var_os("BARGE_TAR_BENCH") {
            let s = Scene::new(true);
            // BARGE_TAR_BENCH_OUT=/empty/dir keeps the tree there for comparisons.
            let out = std::env::var_os("BARGE_TAR_BENCH_OUT").map_or(s.root.clone(), PathBuf::from);
            let f =
                std::io::BufReader::with_capacity(128 * 1024, std::fs::File::open(path).unwrap());
            let start = std::time::Instant::now();
            let stats = apply_layer(
                &mut Root::open(&out).unwrap(),
                f,
                &UnpackOptions::for_current_user(),
                &mut Vec::new(),
            )
            .unwrap();
            println!(
                "real tar: {stats:?} in {:.3}s",
                start.elapsed().as_secs_f64()
            );
        }
    }
}
