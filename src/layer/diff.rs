//! What changed in a barge tree since its record: walks the working tree with
//! lstat (skipping only `ROOT/.git`) and compares every entry with the merged view.
//! `ROOT/.git` is barge's repository on disk; the merged view's entries there are an
//! image's own root `.git`, kept only in the record: they are carried over as they
//! are, never compared, changed or deleted.
//!
//! Stat data avoids re-reading files: an entry whose (ino, size, mtime, ctime,
//! st_mode, uid, gid) all match the stat cache is unchanged (any chmod, chown,
//! xattr or content change moves ctime). Otherwise its metadata is compared, and a
//! regular file is hashed only if its size/mtime/inode moved. A change of mtime
//! alone is not a change; the new mtime still goes into the returned tree.
//!
//! Owner and mode are compared with what disk showed at record time, so a tree
//! pulled without root (where chown failed) does not look changed everywhere: an
//! unchanged disk owner keeps the image's owner.
//!
//! The result is a sorted list of `Put` and `Delete`. Choices:
//! - a deleted path gives one `Delete` only if its parent is still a directory (no
//!   whiteouts below a deleted directory or one replaced by a non-directory: the
//!   new entry replaces it wholesale on extraction);
//! - a directory emptied and refilled is expressed as per-entry deletions, never
//!   as an opaque directory;
//! - a type change is a plain `Put` (extractors replace what was there);
//! - hardlinks: if any member of a group of paths sharing an inode is new or
//!   changed, or the group is not a subset of one recorded group, the whole group is
//!   emitted (first path as a file, the others linking to it), so that the layer
//!   never links to a file in a lower layer (which overlay-style extractors cannot do).

use crate::error::{Context, Result};
use crate::layer::entry::{Change, Entry, EntryKind, ImagePath};
use crate::store::{hash_file, Stat, Tree, TreeEntry};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// What [`diff`] found.
#[derive(Debug)]
pub struct Diff {
    /// Sorted by path; parents before children.
    pub changes: Vec<Change>,
    /// The working tree as it is now, with a fresh stat cache.
    pub tree: Tree,
    /// Whether the stat cache moved (even if nothing changed).
    pub stat_moved: bool,
}

/// Compares the tree at `root` with the recorded merged view `old`.
pub fn diff(root: &Path, old: &Tree) -> Result<Diff> {
    let disk = walk(root)?;
    let mut tree = Tree::default();
    let mut changed: BTreeSet<ImagePath> = BTreeSet::new();
    let mut stat_moved = false;
    for (path, m) in &disk {
        let prev = old.entries.get(path);
        let (entry, same) = current_entry(root, path, m, prev)?;
        let stat = Stat::of(m);
        stat_moved |= prev.and_then(|p| p.stat) != Some(stat);
        if !same {
            changed.insert(path.clone());
        }
        tree.entries.insert(
            path.clone(),
            TreeEntry {
                entry,
                stat: Some(stat),
            },
        );
    }
    tree.regroup_hardlinks();
    let kept: Vec<(ImagePath, TreeEntry)> = old
        .root_git_entries()
        .map(|(p, t)| (p.clone(), t.clone()))
        .collect();
    stat_moved |= tree.entries.len() + kept.len() != old.entries.len();
    add_hardlink_groups(&tree, old, &mut changed);

    let mut changes = Vec::new();
    for (p, _) in old
        .entries
        .iter()
        .filter(|(p, _)| !tree.entries.contains_key(*p) && !is_root_git(p))
    {
        let parent_is_dir = tree
            .entries
            .get(parent(p))
            .is_some_and(|t| t.entry.kind == EntryKind::Dir);
        if parent_is_dir && !p.is_empty() {
            changes.push(Change::Delete(p.clone()));
        }
    }
    let deleted: Vec<ImagePath> = changes.iter().map(|c| change_path(c).to_vec()).collect();
    add_touched_parents(&tree, old, deleted, &mut changed);
    for p in &changed {
        if let Some(t) = tree.entries.get(p) {
            changes.push(Change::Put(t.entry.clone()));
        }
    }
    changes.sort_by(|a, b| change_path(a).cmp(change_path(b)));
    tree.entries.extend(kept);
    Ok(Diff {
        changes,
        tree,
        stat_moved,
    })
}

/// Whether an image path is the root's `.git` or below it: where barge's repository
/// is on disk, so the image's own entries there live only in the record.
pub fn is_root_git(p: &[u8]) -> bool {
    p.strip_prefix(b".git")
        .is_some_and(|rest| rest.is_empty() || rest.first() == Some(&b'/'))
}

/// The path a change is about.
pub fn change_path(c: &Change) -> &[u8] {
    match c {
        Change::Put(e) => &e.path,
        Change::Delete(p) | Change::Opaque(p) => p,
    }
}

fn parent(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => &p[..i],
        None => b"",
    }
}

/// Every entry under `root` (the root itself as the empty path), except `ROOT/.git`.
fn walk(root: &Path) -> Result<BTreeMap<ImagePath, std::fs::Metadata>> {
    let mut out = BTreeMap::new();
    let m = std::fs::symlink_metadata(root).with_context(|| root.display().to_string())?;
    out.insert(Vec::new(), m);
    let mut stack: Vec<ImagePath> = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        let full = root.join(OsStr::from_bytes(&dir));
        let rd = std::fs::read_dir(&full).with_context(|| format!("read {}", full.display()))?;
        for ent in rd {
            let ent = ent.with_context(|| format!("read {}", full.display()))?;
            let name = ent.file_name();
            let name = name.as_bytes();
            if dir.is_empty() && name == b".git" {
                continue;
            }
            let mut p = dir.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            let m = ent
                .metadata()
                .with_context(|| format!("lstat {}", ent.path().display()))?;
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p, m);
        }
    }
    Ok(out)
}

fn kind_of(m: &std::fs::Metadata) -> EntryKind {
    let ft = m.file_type();
    if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_char_device() {
        EntryKind::CharDevice
    } else if ft.is_block_device() {
        EntryKind::BlockDevice
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else {
        EntryKind::File
    }
}

/// Files and hardlinks are the same kind on disk.
fn same_class(a: EntryKind, b: EntryKind) -> bool {
    let norm = |k| match k {
        EntryKind::Hardlink => EntryKind::File,
        k => k,
    };
    norm(a) == norm(b)
}

/// The entry as disk shows it, and whether it is unchanged from `prev`.
fn current_entry(
    root: &Path,
    path: &[u8],
    m: &std::fs::Metadata,
    prev: Option<&TreeEntry>,
) -> Result<(Entry, bool)> {
    let kind = kind_of(m);
    let stat = Stat::of(m);
    let prev_same_kind = prev.filter(|p| same_class(p.entry.kind, kind));
    if let Some(p) = prev_same_kind {
        if p.stat == Some(stat) {
            return Ok((p.entry.clone(), true));
        }
    }
    let full = root.join(OsStr::from_bytes(path));
    let pstat = prev_same_kind.and_then(|p| p.stat);
    let mut e = Entry::from_stat(path, kind, m);
    if cfg!(target_pointer_width = "32") {
        // std's 32-bit time_t there wraps dates past 2038: ask barge's libc.
        e.mtime = super::fsroot::lstat_mtime(&full)
            .with_context(|| format!("lstat {}", full.display()))?;
    }
    if let (Some(p), Some(ps)) = (prev_same_kind, pstat) {
        // What disk showed at record time stands for what the image says.
        if ps.mode == stat.mode {
            e.mode = p.entry.mode;
        }
        if (ps.uid, ps.gid) == (stat.uid, stat.gid) {
            e.uid = p.entry.uid;
            e.gid = p.entry.gid;
        }
    }
    match kind {
        EntryKind::File | EntryKind::Hardlink => {
            e.size = m.size();
            let unchanged_data = pstat.is_some_and(|ps| {
                (ps.ino, ps.size, ps.mtime_ns) == (stat.ino, stat.size, stat.mtime_ns)
            });
            e.content = match prev_same_kind {
                Some(p) if unchanged_data => p.entry.content.clone(),
                _ => {
                    let (d, n) = hash_file(&full)?;
                    e.size = n;
                    Some(d)
                }
            };
        }
        EntryKind::Symlink => {
            let t = std::fs::read_link(&full)
                .with_context(|| format!("readlink {}", full.display()))?;
            e.link = Some(t.into_os_string().as_bytes().to_vec());
        }
        EntryKind::CharDevice | EntryKind::BlockDevice => e.rdev = Some(dev_numbers(m.rdev())),
        EntryKind::Dir | EntryKind::Fifo => {}
    }
    e.xattrs = match prev_same_kind {
        Some(p) if pstat.is_some_and(|ps| ps.ctime_ns == stat.ctime_ns) => p.entry.xattrs.clone(),
        _ => read_xattrs(&full)?,
    };
    let same = prev_same_kind.is_some_and(|p| {
        let o = &p.entry;
        (o.mode, o.uid, o.gid, o.size, &o.content, &o.rdev, &o.xattrs)
            == (e.mode, e.uid, e.gid, e.size, &e.content, &e.rdev, &e.xattrs)
            && (kind != EntryKind::Symlink || o.link == e.link)
    });
    Ok((e, same))
}

/// Marks the directories above a change whose mtime moved (adding or removing a
/// child does that) as changed, so the layer carries their new mtime as Docker and
/// umoci do, and the tree pulled back equals this one.
fn add_touched_parents(
    tree: &Tree,
    old: &Tree,
    deleted: Vec<ImagePath>,
    changed: &mut BTreeSet<ImagePath>,
) {
    let mut todo: Vec<ImagePath> = changed.iter().cloned().chain(deleted).collect();
    while let Some(p) = todo.pop() {
        let dir = parent(&p);
        if dir.is_empty() || changed.contains(dir) {
            continue;
        }
        let (Some(now), Some(before)) = (tree.entries.get(dir), old.entries.get(dir)) else {
            continue;
        };
        let moved = match (now.stat, before.stat) {
            (Some(a), Some(b)) => a.mtime_ns != b.mtime_ns,
            _ => now.entry.mtime != before.entry.mtime,
        };
        if now.entry.kind == EntryKind::Dir && moved {
            changed.insert(dir.to_vec());
            todo.push(dir.to_vec());
        }
    }
}

/// Marks whole hardlink groups as changed when needed (see the module comment).
fn add_hardlink_groups(tree: &Tree, old: &Tree, changed: &mut BTreeSet<ImagePath>) {
    let mut groups: HashMap<&[u8], Vec<&[u8]>> = HashMap::new();
    for (p, t) in &tree.entries {
        if let (EntryKind::Hardlink, Some(l)) = (t.entry.kind, &t.entry.link) {
            groups.entry(l.as_slice()).or_default().push(p);
        }
    }
    let old_leader = |p: &[u8]| -> Option<Vec<u8>> {
        let t = old.entries.get(p)?;
        match t.entry.kind {
            EntryKind::File => Some(p.to_vec()),
            EntryKind::Hardlink => t.entry.link.clone(),
            _ => None,
        }
    };
    for (leader, mut members) in groups {
        members.push(leader);
        let leaders: Vec<Option<Vec<u8>>> = members.iter().map(|m| old_leader(m)).collect();
        let one_old_group = leaders.iter().all(|l| l.is_some() && *l == leaders[0]);
        let any_changed = members.iter().any(|m| changed.contains(*m));
        if !one_old_group || any_changed {
            changed.extend(members.iter().map(|m| m.to_vec()));
        }
    }
}

/// (major, minor) of a Linux dev_t.
pub fn dev_numbers(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// The extended attributes of a path (not following symlinks), sorted by name.
/// `security.selinux` is the host's label, not the image's: it is skipped.
pub fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return Ok(Vec::new());
    };
    let names = xattr_call(|buf, len| unsafe {
        // SAFETY: c is a valid C string; buf/len describe a writable buffer (or null/0).
        libc::llistxattr(c.as_ptr(), buf as *mut libc::c_char, len)
    })
    .with_context(|| format!("list xattrs of {}", path.display()))?;
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name == b"security.selinux" {
            continue;
        }
        let Ok(cn) = CString::new(name) else { continue };
        let v = xattr_call(|buf, len| unsafe {
            // SAFETY: as above; cn is a valid C string.
            libc::lgetxattr(c.as_ptr(), cn.as_ptr(), buf as *mut libc::c_void, len)
        })
        .with_context(|| format!("read xattr of {}", path.display()))?;
        out.push((String::from_utf8_lossy(name).into_owned(), v));
    }
    out.sort();
    Ok(out)
}

/// Calls a size-probing xattr function: first for the size, then for the data.
fn xattr_call(f: impl Fn(*mut u8, usize) -> isize) -> std::io::Result<Vec<u8>> {
    for _ in 0..4 {
        let n = f(std::ptr::null_mut(), 0);
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOTSUP) | Some(libc::ENODATA) => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; n as usize];
        let got = f(buf.as_mut_ptr(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
    Err(std::io::Error::other("xattrs keep changing"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::testutil::*;
    use crate::store::Record;
    use std::os::unix::fs::PermissionsExt;

    /// Pulls the base tree, applies `change`, and returns the diff as short strings
    /// (`+path` for Put, `-path` for Delete).
    fn diff_after(name: &str, change: impl FnOnce(&Path)) -> (Vec<String>, Diff) {
        let root = tmpdir(name);
        base_tree(&root);
        pull_like(&root, true);
        change(&root);
        let rec = Record::load(&root).unwrap();
        let d = diff(&root, rec.tree()).unwrap();
        let short = d
            .changes
            .iter()
            .map(|c| match c {
                Change::Put(e) => format!("+{}", String::from_utf8_lossy(&e.path)),
                Change::Delete(p) => format!("-{}", String::from_utf8_lossy(p)),
                Change::Opaque(p) => format!("O{}", String::from_utf8_lossy(p)),
            })
            .collect();
        std::fs::remove_dir_all(&root).unwrap();
        (short, d)
    }

    fn put<'a>(d: &'a Diff, p: &str) -> &'a Entry {
        d.changes
            .iter()
            .find_map(|c| match c {
                Change::Put(e) if e.path == p.as_bytes() => Some(e),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn no_change_and_mtime_only_are_not_changes() {
        let (c, d) = diff_after("noop", |_| {});
        assert!(c.is_empty(), "{c:?}");
        assert!(!d.stat_moved);
        let (c, d) = diff_after("mtime", |r| {
            let f = std::fs::File::options()
                .write(true)
                .open(r.join("etc/hosts"))
                .unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000))
                .unwrap();
        });
        assert!(c.is_empty(), "{c:?}");
        assert!(d.stat_moved);
        assert_eq!(d.tree.entries[&b"etc/hosts"[..]].entry.mtime, 1000);
    }

    #[test]
    fn content_new_file_chmod_chown() {
        // A new entry moves its directory's mtime: the directory goes in too.
        let (c, _) = diff_after("new", |r| write(r, "etc/new", "x"));
        assert_eq!(c, ["+etc", "+etc/new"]);
        let (c, d) = diff_after("content", |r| write(r, "etc/hosts", "changed!!!!!!!!!!!!!"));
        assert_eq!(c, ["+etc/hosts"]);
        assert_eq!(
            put(&d, "etc/hosts").content,
            Some(crate::digest::Digest::of_bytes(b"changed!!!!!!!!!!!!!"))
        );
        // Same size, same mtime second: still found by the hash.
        let (c, _) = diff_after("samesize", |r| {
            write(r, "etc/hosts", "127.0.0.2 localhost\n")
        });
        assert_eq!(c, ["+etc/hosts"]);
        let (c, d) = diff_after("chmod", |r| {
            std::fs::set_permissions(
                r.join("etc/passwd"),
                std::fs::Permissions::from_mode(0o4600),
            )
            .unwrap()
        });
        assert_eq!(c, ["+etc/passwd"]);
        assert_eq!(put(&d, "etc/passwd").mode, 0o4600);
        let (c, d) = diff_after("chown", |r| {
            std::os::unix::fs::lchown(r.join("etc/passwd"), Some(1234), Some(5678)).unwrap()
        });
        assert_eq!(c, ["+etc/passwd"]);
        assert_eq!(
            (put(&d, "etc/passwd").uid, put(&d, "etc/passwd").gid),
            (1234, 5678)
        );
    }

    #[test]
    fn dirs_deletions_and_type_changes() {
        let (c, d) = diff_after("emptydir", |r| std::fs::create_dir(r.join("srv")).unwrap());
        assert_eq!(c, ["+srv"]);
        assert_eq!(put(&d, "srv").kind, EntryKind::Dir);
        let (c, _) = diff_after("delfile", |r| {
            std::fs::remove_file(r.join("etc/hosts")).unwrap()
        });
        assert_eq!(c, ["+etc", "-etc/hosts"]);
        let (c, _) = diff_after("deltree", |r| {
            std::fs::remove_dir_all(r.join("usr/share")).unwrap()
        });
        assert_eq!(c, ["+usr", "-usr/share"]);
        let (c, d) = diff_after("dir2file", |r| {
            std::fs::remove_dir_all(r.join("usr/share/doc")).unwrap();
            write(r, "usr/share/doc", "now a file");
        });
        assert_eq!(c, ["+usr/share", "+usr/share/doc"]);
        assert_eq!(put(&d, "usr/share/doc").kind, EntryKind::File);
        let (c, d) = diff_after("file2link", |r| {
            std::fs::remove_file(r.join("etc/hosts")).unwrap();
            std::os::unix::fs::symlink("/elsewhere", r.join("etc/hosts")).unwrap();
        });
        assert_eq!(c, ["+etc", "+etc/hosts"]);
        assert_eq!(
            put(&d, "etc/hosts").link.as_deref(),
            Some(&b"/elsewhere"[..])
        );
        let (c, _) = diff_after("relink", |r| {
            std::fs::remove_file(r.join("etc/link")).unwrap();
            std::os::unix::fs::symlink("hosts", r.join("etc/link")).unwrap();
        });
        assert_eq!(c, ["+etc", "+etc/link"]);
        // A directory emptied and refilled: per-entry deletions.
        let (c, _) = diff_after("refill", |r| {
            std::fs::remove_dir_all(r.join("usr/share/doc")).unwrap();
            write(r, "usr/share/doc/c", "c");
        });
        assert_eq!(
            c,
            [
                "+usr/share",
                "+usr/share/doc",
                "-usr/share/doc/a",
                "-usr/share/doc/b",
                "+usr/share/doc/c"
            ]
        );
    }

    #[test]
    fn hardlinks_fifos_xattrs_nested_git() {
        let (c, d) = diff_after("hardlink", |r| {
            write(r, "opt/a", "same");
            std::fs::hard_link(r.join("opt/a"), r.join("opt/b")).unwrap();
        });
        assert_eq!(c, ["+opt", "+opt/a", "+opt/b"]);
        assert_eq!(put(&d, "opt/b").kind, EntryKind::Hardlink);
        assert_eq!(put(&d, "opt/b").link.as_deref(), Some(&b"opt/a"[..]));
        // A new link to a recorded file re-emits the whole group.
        let (c, _) = diff_after("hardlink2", |r| {
            std::fs::hard_link(r.join("var/lib/x/one"), r.join("var/lib/x/three")).unwrap();
        });
        assert_eq!(
            c,
            [
                "+var/lib/x",
                "+var/lib/x/one",
                "+var/lib/x/three",
                "+var/lib/x/two"
            ]
        );
        // Removing one member of a group does not touch the other.
        let (c, _) = diff_after("hardlink3", |r| {
            std::fs::remove_file(r.join("var/lib/x/one")).unwrap()
        });
        assert_eq!(c, ["+var/lib/x", "-var/lib/x/one"]);
        let (c, d) = diff_after("fifo", |r| {
            let p = std::ffi::CString::new(r.join("tmp/fifo").as_os_str().as_bytes()).unwrap();
            // SAFETY: p is a valid C string.
            assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o640) }, 0);
        });
        assert_eq!(c, ["+tmp", "+tmp/fifo"]);
        assert_eq!(put(&d, "tmp/fifo").kind, EntryKind::Fifo);
        let (c, d) = diff_after("xattr", |r| {
            let p = std::ffi::CString::new(r.join("etc/hosts").as_os_str().as_bytes()).unwrap();
            let n = std::ffi::CString::new("user.barge").unwrap();
            // SAFETY: valid C strings and buffer.
            let rc = unsafe {
                libc::lsetxattr(
                    p.as_ptr(),
                    n.as_ptr(),
                    b"v1".as_ptr() as *const libc::c_void,
                    2,
                    0,
                )
            };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        });
        assert_eq!(c, ["+etc/hosts"]);
        assert_eq!(
            put(&d, "etc/hosts").xattrs,
            vec![("user.barge".to_string(), b"v1".to_vec())]
        );
        let (c, _) = diff_after("nestedgit", |r| {
            write(r, "usr/src/app/.git/HEAD", "ref: x\n")
        });
        assert_eq!(c, ["+usr/src/app/.git/HEAD"]);
    }

    /// An image's own root `.git` lives only in the record: never deleted, changed
    /// or grouped with files on disk, and carried into the new tree as it was.
    #[test]
    fn the_images_root_git_stays_in_the_record() {
        let root = tmpdir("rootgit");
        base_tree(&root);
        pull_like(&root, true);
        let rec = Record::load(&root).unwrap();
        let mut old = rec.tree().clone();
        let passwd = old.entries[&b"etc/passwd"[..]].clone();
        let mut add = |p: &str, kind: EntryKind, link: Option<&str>| {
            let mut t = passwd.clone();
            t.entry.path = p.as_bytes().to_vec();
            t.entry.kind = kind;
            t.entry.link = link.map(|l| l.as_bytes().to_vec());
            t.stat = None;
            old.entries.insert(t.entry.path.clone(), t);
        };
        add(".git", EntryKind::Dir, None);
        add(".git/hooks/post-checkout", EntryKind::File, None);
        add(".git/config", EntryKind::Hardlink, Some("etc/passwd"));
        add(".gitx", EntryKind::File, None);
        let d = diff(&root, &old).unwrap();
        let paths: Vec<&[u8]> = d.changes.iter().map(change_path).collect();
        assert_eq!(paths, [&b".gitx"[..]], "only the non-.git entry is gone");
        for p in [".git", ".git/hooks/post-checkout", ".git/config"] {
            assert_eq!(
                d.tree.entries.get(p.as_bytes()),
                old.entries.get(p.as_bytes())
            );
        }
        // After a real change, the root's .git is still carried, nothing of it emitted.
        write(&root, "etc/passwd", "changed\n");
        let d = diff(&root, &old).unwrap();
        assert!(d.changes.iter().all(|c| !is_root_git(change_path(c))));
        assert_eq!(d.tree.root_git_entries().count(), 3);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn root_git_paths() {
        for p in [".git", ".git/config", ".git/hooks/x"] {
            assert!(is_root_git(p.as_bytes()), "{p}");
        }
        for p in [
            ".gitignore",
            ".git2/x",
            "a/.git",
            "a/.git/config",
            ".GIT",
            "",
        ] {
            assert!(!is_root_git(p.as_bytes()), "{p}");
        }
    }
}
