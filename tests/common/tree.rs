//! Snapshots of a directory tree (type, mode, owner, size, content hash, link target,
//! mtime, xattrs, hardlink groups) and a readable comparison of two snapshots.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fmt;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// A snapshot: relative path (`/`-separated, no leading `./`) → metadata.
pub type Tree = BTreeMap<String, Meta>;

/// Metadata of one path, as compared between trees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// `file`, `dir`, `symlink`, `fifo`, `char`, `block` or `socket`.
    pub kind: &'static str,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size in bytes for regular files, 0 otherwise.
    pub size: u64,
    /// sha256 of a regular file's content.
    pub sha256: Option<String>,
    /// Target of a symlink.
    pub link: Option<String>,
    /// Device number of char/block devices.
    pub rdev: Option<u64>,
    /// Modification time, whole seconds.
    pub mtime: i64,
    /// For files with several links: the smallest path of the group (same inode).
    pub hardlink_group: Option<String>,
    /// Extended attributes (`security.selinux` excluded).
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl fmt::Display for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04o} {}:{} size={} mtime={}",
            self.kind, self.mode, self.uid, self.gid, self.size, self.mtime
        )?;
        if let Some(h) = &self.sha256 {
            write!(f, " sha256={}", &h[..12])?;
        }
        if let Some(l) = &self.link {
            write!(f, " -> {l:?}")?;
        }
        if let Some(r) = self.rdev {
            write!(f, " rdev={r:#x}")?;
        }
        if let Some(g) = &self.hardlink_group {
            write!(f, " hardlink-group={g}")?;
        }
        if !self.xattrs.is_empty() {
            write!(f, " xattrs={:?}", self.xattrs.keys().collect::<Vec<_>>())?;
        }
        Ok(())
    }
}

/// Snapshots everything under `root` (not `root` itself). `.git` at the top level is
/// left out (`pull -g` adds it).
pub fn snapshot(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    walk(root, "", &mut tree, &mut inodes);
    for paths in inodes.values() {
        if paths.len() > 1 {
            let first = paths.iter().min().cloned();
            for p in paths {
                if let Some(m) = tree.get_mut(p) {
                    m.hardlink_group = first.clone();
                }
            }
        }
    }
    tree
}

fn walk(dir: &Path, prefix: &str, tree: &mut Tree, inodes: &mut HashMap<(u64, u64), Vec<String>>) {
    let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for entry in rd {
        let entry = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        let name = entry.file_name().to_string_lossy().into_owned();
        if prefix.is_empty() && name == ".git" {
            continue;
        }
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        let md =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let ft = md.file_type();
        let kind = if ft.is_file() {
            "file"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else {
            "socket"
        };
        let sha256 = ft.is_file().then(|| {
            let data = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            super::sha256_hex(&data)
        });
        let link = ft.is_symlink().then(|| {
            let t =
                fs::read_link(&path).unwrap_or_else(|e| panic!("readlink {}: {e}", path.display()));
            t.to_string_lossy().into_owned()
        });
        if ft.is_file() && md.nlink() > 1 {
            inodes
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
        let meta = Meta {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: if ft.is_file() { md.size() } else { 0 },
            sha256,
            link,
            rdev: (ft.is_char_device() || ft.is_block_device()).then(|| md.rdev()),
            mtime: md.mtime(),
            hardlink_group: None,
            xattrs: xattrs(&path),
        };
        tree.insert(rel.clone(), meta);
        if ft.is_dir() {
            walk(&path, &rel, tree, inodes);
        }
    }
}

/// Extended attributes of `path` (not following symlinks).
pub fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return out;
    };
    let mut names = vec![0u8; 4096];
    // SAFETY: buffer pointer and length describe a live, writable Vec.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return out;
    }
    names.truncate(n as usize);
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let key = String::from_utf8_lossy(name).into_owned();
        if key == "security.selinux" {
            continue;
        }
        let cname = CString::new(name).expect("xattr name has no NUL");
        let mut val = vec![0u8; 65536];
        // SAFETY: as above.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        if len >= 0 {
            val.truncate(len as usize);
            out.insert(key, val);
        }
    }
    out
}

/// The differences between two trees, one human-readable line each.
pub fn diff(expected: &Tree, actual: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (p, e) in expected {
        match actual.get(p) {
            None => out.push(format!("missing   {p}: expected {e}")),
            Some(a) if a != e => out.push(format!(
                "different {p}:\n    expected {e}\n    actual   {a}"
            )),
            Some(_) => {}
        }
    }
    for (p, a) in actual {
        if !expected.contains_key(p) {
            out.push(format!("extra     {p}: {a}"));
        }
    }
    out
}

/// Panics with the first 30 differences when the trees differ.
pub fn assert_same_tree(expected: &Tree, actual: &Tree) {
    let d = diff(expected, actual);
    if !d.is_empty() {
        let shown: Vec<&str> = d.iter().take(30).map(String::as_str).collect();
        panic!(
            "trees differ in {} of {} expected paths ({} actual); first differences:\n{}",
            d.len(),
            expected.len(),
            actual.len(),
            shown.join("\n")
        );
    }
}
