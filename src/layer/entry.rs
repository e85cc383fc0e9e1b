//! One filesystem entry as a layer (tar) describes it: the unit that unpack
//! applies, that the per-layer record keeps, and that commit compares and packs.

use crate::digest::Digest;

/// What an entry is. Hardlinks are a kind of their own in tar; on disk they are
/// files sharing an inode, recorded by naming the first path of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// A path inside the image root, as raw bytes (images may hold non-UTF-8 names),
/// relative, normalised: no leading `/` or `./`, no empty, `.` or `..` components,
/// no trailing `/`. The root itself is the empty path. Tar names become one
/// through [`crate::layer::names::clean_name`], which clamps `..` at the root.
pub type ImagePath = Vec<u8>;

/// Everything barge knows about one entry. Field meanings follow tar/PAX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: ImagePath,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Content size for regular files, 0 otherwise.
    pub size: u64,
    /// Modification time, seconds since the epoch (PAX may give fractions; they are dropped).
    pub mtime: i64,
    /// Symlink target, or for hardlinks the path of the entry it links to.
    pub link: Option<ImagePath>,
    /// Device numbers for char/block devices.
    pub rdev: Option<(u32, u32)>,
    /// Extended attributes from PAX `SCHILY.xattr.*` records, sorted by name.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// sha256 of the content, regular files only.
    pub content: Option<Digest>,
}

/// What a layer does besides adding entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An entry was added or replaced.
    Put(Entry),
    /// `.wh.NAME`: the path (and everything below it) from lower layers is gone.
    Delete(ImagePath),
    /// `.wh..wh..opq` in this directory: lower layers' children are hidden.
    Opaque(ImagePath),
}

impl Entry {
    /// An entry of `kind` at `path` with the owner, permission bits and mtime
    /// that `lstat` gave; size, link, device, xattrs and content left empty.
    pub fn from_stat(path: &[u8], kind: EntryKind, m: &std::fs::Metadata) -> Entry {
        use std::os::unix::fs::MetadataExt;
        Entry {
            path: path.to_vec(),
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: 0,
            mtime: m.mtime(),
            link: None,
            rdev: None,
            xattrs: Vec::new(),
            content: None,
        }
    }
}
