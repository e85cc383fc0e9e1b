//! `barge checkout LAYER`: puts a barge tree exactly at one of its layers. Git
//! brings the content it holds (through the git wall, [`History::switch_to`]); then
//! the record's merged view at that layer puts right what git cannot hold: owners,
//! modes, hardlinks, xattrs, devices, fifos, empty directories and mtimes, and
//! removes what git left behind (untracked entries of other layers).
//!
//! It refuses a tree with uncommitted changes unless `--force`, and checks its own
//! work: afterwards the diff commit uses must find nothing.

use crate::bail;
use crate::commit::{changes_at, head_layer, lock};
use crate::digest::Digest;
use crate::error::{Context, Error, Result};
use crate::git::{branch_index, branch_name, git_visible, History};
use crate::layer::diff::{diff, is_root_git, read_xattrs};
use crate::layer::entry::{Entry, EntryKind, ImagePath};
use crate::layer::fsroot::timespec;
use crate::status::change_line;
use crate::store::{esc, Record, Tree, TreeEntry};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What `barge checkout` was asked to do.
#[derive(Debug, Clone)]
pub struct CheckoutOptions {
    pub root: PathBuf,
    /// Branch name, layer number, or ChainID (`sha256:…` or a unique hex prefix).
    pub layer: String,
    /// Drop uncommitted changes instead of refusing.
    pub force: bool,
    pub quiet: bool,
}

/// Runs `barge checkout`.
pub fn run(opts: &CheckoutOptions) -> Result<()> {
    let root = &opts.root;
    let _lock = lock(root)?;
    let mut record = Record::load(root)?;
    let history = History::open(root)?;
    let chains = record.chain_ids();
    let n = resolve(&opts.layer, &chains)?;
    let branch = branch_name(n, &chains[n]);
    if !opts.force {
        refuse_if_changed(root, &mut record, &history)?;
    }
    let target = record.tree_at(n);
    let current = match head_layer(root, &record, &history) {
        Ok((at, _)) => record.tree_at(at),
        Err(_) => record.tree.clone(),
    };
    check_reachable(&current, &target)?;
    history.switch_to(&branch)?;
    restore(root, &target)?;
    let found = diff(root, &target)?;
    if !found.changes.is_empty() {
        let lines: Vec<String> = found
            .changes
            .iter()
            .take(5)
            .map(|c| change_line(c, &target))
            .collect();
        bail!(
            "{} paths still differ from the record: {}",
            found.changes.len(),
            lines.join("; ")
        );
    }
    if n + 1 == chains.len() {
        record.tree = found.tree;
        record.save_tree()?;
    }
    if !opts.quiet {
        println!("Tree at {branch} (layer {n} of 0..{})", chains.len() - 1);
    }
    Ok(())
}

/// The layer `spec` names: a number, a branch name, or a ChainID (full or a
/// unique hex prefix). A number wins over a hex prefix made of digits.
pub fn resolve(spec: &str, chains: &[Digest]) -> Result<usize> {
    let top = chains.len().saturating_sub(1);
    let range = || format!("layers are 0..{top}; run `git branch --list 'layer_*'` to list them");
    if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        return match spec.parse::<usize>() {
            Ok(n) if n < chains.len() => Ok(n),
            _ => Err(Error::new(format!("no layer {spec}")).hint(range())),
        };
    }
    if let Some(n) = branch_index(spec) {
        if chains.get(n).is_some_and(|c| branch_name(n, c) == spec) {
            return Ok(n);
        }
        return Err(Error::new(format!("no layer branch {spec} in this tree")).hint(range()));
    }
    let hex = spec
        .strip_prefix("sha256:")
        .unwrap_or(spec)
        .to_ascii_lowercase();
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::new(format!("{spec:?} is not a layer"))
            .hint("give a branch name, a layer number or a ChainID (sha256:… or a hex prefix)"));
    }
    let found: Vec<usize> = (0..chains.len())
        .filter(|&i| chains[i].hex().starts_with(&hex))
        .collect();
    match found.as_slice() {
        [n] => Ok(*n),
        [] => Err(Error::new(format!("no layer's ChainID starts with {hex}")).hint(range())),
        _ => Err(
            Error::new(format!("ChainID prefix {hex} names {} layers", found.len()))
                .hint("give more hex digits"),
        ),
    }
}

/// Errors when the tree differs from the layer HEAD is on.
fn refuse_if_changed(root: &Path, record: &mut Record, history: &History) -> Result<()> {
    let (at, head) = head_layer(root, record, history)?;
    let found = changes_at(root, record, at)?;
    if found.changes.is_empty() {
        return Ok(());
    }
    Err(Error::new(format!(
        "the tree has {} uncommitted changes on {head}",
        found.changes.len()
    ))
    .hint(format!(
        "run `barge status -r {}` to see them; commit them, or add --force to drop them",
        root.display()
    )))
}

/// Refuses a checkout that would need or drop content git does not hold (files
/// below a `.git` directory inside the image): barge keeps no copy of it, so it
/// could neither be put there nor brought back.
fn check_reachable(current: &Tree, target: &Tree) -> Result<()> {
    let hidden = |t: &Tree| -> BTreeMap<ImagePath, Option<Digest>> {
        t.entries
            .iter()
            .filter(|(p, te)| {
                matches!(te.entry.kind, EntryKind::File | EntryKind::Hardlink)
                    && !is_root_git(p)
                    && !git_visible(p, false)
            })
            .map(|(p, te)| (p.clone(), te.entry.content.clone()))
            .collect()
    };
    let (a, b) = (hidden(current), hidden(target));
    if let Some(p) = a.keys().chain(b.keys()).find(|p| a.get(*p) != b.get(*p)) {
        return Err(Error::new(format!(
            "{} differs between the two layers and git cannot hold it (it is below a .git directory)",
            esc(p)
        ))
        .hint("barge keeps no copy of its content: stay on this layer, or pull the image again"));
    }
    Ok(())
}

/// Makes the disk under `root` (but its `.git`) hold exactly `target`.
fn restore(root: &Path, target: &Tree) -> Result<()> {
    remove_extra(root, target)?;
    let wanted = target
        .entries
        .iter()
        .filter(|(p, _)| !is_root_git(p))
        .map(|(_, t)| t);
    // Files sharing an inode with paths of another layer are copied apart first,
    // so that relinking this layer's groups touches only this layer's paths.
    for e in wanted
        .clone()
        .map(|t| &t.entry)
        .filter(|e| e.kind == EntryKind::File)
    {
        let path = full(root, &e.path);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.nlink() > 1) {
            split(&path).with_context(|| format!("checkout {}", esc(&e.path)))?;
        }
    }
    for t in wanted.clone() {
        let e = &t.entry;
        put_entry(root, t).with_context(|| format!("checkout {}", esc(&e.path)))?;
    }
    // Children before parents: setting a child's times moves no parent's mtime.
    for t in wanted.rev().filter(|t| t.entry.kind != EntryKind::Hardlink) {
        let mtime = t.stat.map_or((t.entry.mtime, 0), |s| {
            (
                s.mtime_ns.div_euclid(1_000_000_000),
                s.mtime_ns.rem_euclid(1_000_000_000),
            )
        });
        set_mtime(&full(root, &t.entry.path), mtime)
            .with_context(|| format!("checkout {}: set mtime", esc(&t.entry.path)))?;
    }
    Ok(())
}

fn full(root: &Path, p: &[u8]) -> PathBuf {
    if p.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(p))
    }
}

/// Removes what is on disk but not in `target` (never `root/.git`).
fn remove_extra(root: &Path, target: &Tree) -> Result<()> {
    let mut stack: Vec<ImagePath> = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        let path = full(root, &dir);
        let rd = std::fs::read_dir(&path).with_context(|| format!("read {}", path.display()))?;
        for ent in rd {
            let ent = ent.with_context(|| format!("read {}", path.display()))?;
            let mut p = dir.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(ent.file_name().as_bytes());
            if is_root_git(&p) {
                continue;
            }
            let is_dir = ent.file_type().is_ok_and(|t| t.is_dir());
            if target.entries.contains_key(&p) {
                if is_dir {
                    stack.push(p);
                }
                continue;
            }
            let res = if is_dir {
                std::fs::remove_dir_all(ent.path())
            } else {
                std::fs::remove_file(ent.path())
            };
            res.with_context(|| format!("remove {}", ent.path().display()))?;
        }
    }
    Ok(())
}

/// Puts one entry in place with its kind, content links and metadata (not mtime).
/// The metadata of a hardlink group is its file's: links keep what it has.
fn put_entry(root: &Path, t: &TreeEntry) -> Result<()> {
    let e = &t.entry;
    let path = full(root, &e.path);
    let now = std::fs::symlink_metadata(&path).ok();
    let fits = now.as_ref().is_some_and(|m| fits(root, e, m));
    if !fits {
        if let Some(m) = &now {
            let res = if m.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            res.with_context(|| format!("remove {}", path.display()))?;
        }
        create(root, e, &path)?;
    }
    if e.kind == EntryKind::Hardlink {
        return Ok(());
    }
    // What disk showed when the record was made is what pull left: take it when known.
    let (mode, uid, gid) = t
        .stat
        .map_or((e.mode, e.uid, e.gid), |s| (s.mode & 0o7777, s.uid, s.gid));
    set_meta(&path, e, mode, uid, gid)
}

/// Whether what is on disk is already the right kind of thing (content aside).
fn fits(root: &Path, e: &Entry, m: &std::fs::Metadata) -> bool {
    let ft = m.file_type();
    use std::os::unix::fs::FileTypeExt;
    match e.kind {
        EntryKind::Dir => ft.is_dir(),
        EntryKind::File => ft.is_file(),
        EntryKind::Hardlink => {
            let leader = e.link.as_deref().map(|l| full(root, l));
            let lm = leader.and_then(|l| std::fs::symlink_metadata(l).ok());
            lm.is_some_and(|l| (l.dev(), l.ino()) == (m.dev(), m.ino()))
        }
        EntryKind::Symlink => {
            ft.is_symlink()
                && std::fs::read_link(full(root, &e.path))
                    .is_ok_and(|t| Some(t.as_os_str().as_bytes()) == e.link.as_deref())
        }
        EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
            let kind_ok = match e.kind {
                EntryKind::CharDevice => ft.is_char_device(),
                EntryKind::BlockDevice => ft.is_block_device(),
                _ => ft.is_fifo(),
            };
            kind_ok && (e.kind == EntryKind::Fifo || Some(dev_of(m.rdev())) == e.rdev)
        }
    }
}

fn dev_of(rdev: u64) -> (u32, u32) {
    crate::layer::diff::dev_numbers(rdev)
}

/// Creates `e` at `path`, where nothing is.
fn create(root: &Path, e: &Entry, path: &Path) -> Result<()> {
    match e.kind {
        EntryKind::Dir => std::fs::create_dir(path).context("mkdir")?,
        EntryKind::File => bail!("git has no content for it (a file git cannot hold?)"),
        EntryKind::Hardlink => {
            let Some(l) = e.link.as_deref() else {
                bail!("hardlink without a target in the record")
            };
            std::fs::hard_link(full(root, l), path).context("link")?
        }
        EntryKind::Symlink => {
            let t = e.link.as_deref().unwrap_or_default();
            std::os::unix::fs::symlink(OsStr::from_bytes(t), path).context("symlink")?
        }
        EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
            let ty = match e.kind {
                EntryKind::CharDevice => libc::S_IFCHR,
                EntryKind::BlockDevice => libc::S_IFBLK,
                _ => libc::S_IFIFO,
            };
            let (maj, min) = e.rdev.unwrap_or((0, 0));
            let c = cpath(path)?;
            // SAFETY: c is a valid C string.
            let r = unsafe { libc::mknod(c.as_ptr(), ty | 0o600, libc::makedev(maj, min)) };
            if r != 0 {
                return Err(Error::from(std::io::Error::last_os_error()).context("mknod"));
            }
        }
    }
    Ok(())
}

/// Gives a file an inode of its own (a copy renamed over it). The copy is made
/// with `O_EXCL` under a name nothing has: a symlink of the image's by that name
/// is never followed out of the tree.
fn split(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = std::fs::File::open(path).context("open")?;
    let mode = src.metadata().context("stat")?.permissions().mode();
    let mut n = 0u32;
    let (tmp, mut dst) = loop {
        let tmp = path.with_file_name(format!(".barge-checkout-split{n}"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(Error::from(e).context("create copy")),
        }
    };
    let copied = std::io::copy(&mut src, &mut dst)
        .and_then(|_| dst.set_permissions(std::fs::Permissions::from_mode(mode)))
        .context("copy")
        .and_then(|()| std::fs::rename(&tmp, path).context("rename"));
    if copied.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    copied
}

/// Owner, mode and xattrs of `e` on `path` (never following a symlink).
fn set_meta(path: &Path, e: &Entry, mode: u32, uid: u32, gid: u32) -> Result<()> {
    match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
        Ok(()) => {}
        // Without root, owners stay the caller's (as pull leaves them).
        Err(err) if err.raw_os_error() == Some(libc::EPERM) && !is_root() => {}
        Err(err) => return Err(Error::from(err).context("chown")),
    }
    if e.kind != EntryKind::Symlink {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).context("chmod")?;
    }
    set_xattrs(path, &e.xattrs)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::new(format!("{}: NUL in path", path.display())))
}

/// Makes the xattrs of `path` exactly `want` (`security.selinux` left alone).
fn set_xattrs(path: &Path, want: &[(String, Vec<u8>)]) -> Result<()> {
    let have = read_xattrs(path)?;
    if have == want {
        return Ok(());
    }
    let c = cpath(path)?;
    let keep: BTreeSet<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    for (name, _) in have.iter().filter(|(n, _)| !keep.contains(n.as_str())) {
        let n = CString::new(name.as_bytes()).map_err(|_| Error::new("NUL in xattr name"))?;
        // SAFETY: both are valid C strings.
        if unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) } != 0 {
            let err = std::io::Error::last_os_error();
            return Err(Error::from(err).context(format!("remove xattr {name}")));
        }
    }
    for (name, value) in want {
        let n = CString::new(name.as_bytes()).map_err(|_| Error::new("NUL in xattr name"))?;
        // SAFETY: valid C strings; value's pointer and length describe its bytes.
        let r = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr() as *const libc::c_void,
                value.len(),
                0,
            )
        };
        if r != 0 {
            let err = std::io::Error::last_os_error();
            return Err(Error::from(err).context(format!("set xattr {name}")));
        }
    }
    Ok(())
}

fn set_mtime(path: &Path, (secs, nanos): (i64, i64)) -> Result<()> {
    let c = cpath(path)?;
    let t = timespec((secs, nanos)).with_context(|| format!("set mtime of {}", path.display()))?;
    let ts = [t, t];
    // SAFETY: c is a valid C string and ts two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[u8]) -> (ImagePath, TreeEntry) {
        let mut entry = Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: data.len() as u64,
            mtime: 0,
            link: None,
            rdev: None,
            xattrs: Vec::new(),
            content: None,
        };
        entry.content = Some(Digest::of_bytes(data));
        (entry.path.clone(), TreeEntry { entry, stat: None })
    }

    #[test]
    fn content_git_cannot_hold_must_match() {
        let tree = |files: &[(&str, &[u8])]| Tree {
            entries: files.iter().map(|(p, d)| file(p, d)).collect(),
        };
        let a = tree(&[("etc/x", b"1"), ("app/.git/HEAD", b"main")]);
        let b = tree(&[("etc/x", b"2"), ("app/.git/HEAD", b"main")]);
        assert!(check_reachable(&a, &b).is_ok(), "git holds etc/x");
        let c = tree(&[("etc/x", b"1"), ("app/.git/HEAD", b"other")]);
        assert!(check_reachable(&a, &c).is_err());
        let d = tree(&[("etc/x", b"1")]);
        assert!(check_reachable(&a, &d).is_err(), "it could not come back");
        assert!(check_reachable(&d, &a).is_err(), "it cannot be made");
        let e = tree(&[("etc/x", b"1"), (".git/HEAD", b"image's own")]);
        assert!(
            check_reachable(&d, &e).is_ok(),
            "the root .git is record-only"
        );
    }

    /// An image's symlink named like split's copy is not followed out of the tree.
    #[test]
    fn split_never_follows_a_symlink_out_of_the_tree() {
        let base = crate::commit::testutil::tmpdir("checkout-split");
        let root = base.join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/a"), b"content").unwrap();
        std::fs::hard_link(root.join("d/a"), root.join("d/b")).unwrap();
        let victim = base.join("victim");
        std::os::unix::fs::symlink(&victim, root.join("d/.barge-checkout-split")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("d/.barge-checkout-split0")).unwrap();
        split(&root.join("d/a")).unwrap();
        assert!(std::fs::symlink_metadata(&victim).is_err(), "wrote outside");
        let m = std::fs::symlink_metadata(root.join("d/a")).unwrap();
        assert!(m.is_file() && m.nlink() == 1);
        assert_eq!(std::fs::read(root.join("d/a")).unwrap(), b"content");
        assert_eq!(std::fs::read_dir(root.join("d")).unwrap().count(), 4);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn layer_specs() {
        let chains = vec![
            Digest::of_bytes(b"zero"),
            Digest::of_bytes(b"one"),
            Digest::of_bytes(b"two"),
        ];
        assert_eq!(resolve("1", &chains).unwrap(), 1);
        assert!(resolve("3", &chains).is_err());
        let b2 = branch_name(2, &chains[2]);
        assert_eq!(resolve(&b2, &chains).unwrap(), 2);
        assert_eq!(resolve(chains[0].as_str(), &chains).unwrap(), 0);
        let prefix = &chains[1].hex()[..12];
        assert_eq!(resolve(&prefix.to_uppercase(), &chains).unwrap(), 1);
        assert!(resolve("layer_9_00", &chains).is_err());
        assert!(resolve("zz", &chains).is_err());
        assert!(resolve("", &chains).is_err());
    }
}
