//! Bootable initramfs archives: `barge pull IMAGE --initramfs FILE` and `barge
//! initramfs -r DIR -o FILE`. The entry list comes from barge's merged view of the
//! layers (types, owners, modes, devices, link targets, mtimes as the image says),
//! never from what an unprivileged user's tree on disk could hold; only file
//! contents are read from the tree, through the root's resolver (no symlink leads
//! out). Written as a deterministic newc cpio ([`cpio`]): sorted by path (parents
//! first), inode numbers given in that order, hardlinks as newc hardlinks (same
//! inode and link count, the data on the group's last entry, as GNU cpio writes and
//! the kernel's init/initramfs.c and `cpio -i` read), mtimes clamped to
//! `SOURCE_DATE_EPOCH`. An `/init` ([`init`]), `/dev/console` and the mount points
//! are added when the image lacks them.

pub mod cpio;
mod init;

use crate::commit;
use crate::error::{Context, Error, Result};
use crate::git::History;
use crate::layer::diff::is_root_git;
use crate::layer::entry::{Entry, EntryKind, ImagePath};
use crate::layer::fsroot::Root;
use crate::layer::pack::GzipWriter;
use crate::manifest::ImageConfig;
use crate::progress::{count, human_bytes, Output, Progress};
use crate::store::{Record, Tree};
use init::RunConfig;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What `--initramfs FILE [--init CMD...]` asks of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitramfsOptions {
    pub file: PathBuf,
    /// `--init CMD [ARG...]`: the command the generated /init execs.
    pub init: Option<Vec<String>>,
    /// `-r DIR` was given too: the tree stays there (else it is removed).
    pub keep_tree: bool,
}

/// What `barge initramfs` was asked to do.
#[derive(Debug, Clone)]
pub struct PackOptions {
    pub root: PathBuf,
    pub file: PathBuf,
    pub init: Option<Vec<String>>,
    pub progress: Progress,
}

/// Links followed while resolving `/bin/sh` in the image (as Linux does).
const MAX_HOPS: usize = 40;

/// `barge initramfs -r DIR -o FILE`: packs a committed barge tree at its top layer.
pub fn run(opts: &PackOptions) -> Result<()> {
    let out = Output::new(opts.progress);
    let root = &opts.root;
    let shown = root.display();
    let _lock = commit::lock(root)?;
    let mut record = Record::load(root)?;
    let history = History::open(root)?;
    let (at, head) = commit::head_layer(root, &record, &history)?;
    let top = record.layers.len() - 1;
    if at != top {
        return Err(Error::new(format!(
            "HEAD is on {head} (layer {at}), not on the top layer {top}"
        ))
        .hint(format!(
            "the image config is the top layer's: run `barge checkout {top} -r {shown}` first"
        )));
    }
    let found = commit::changes_at(root, &mut record, at)?;
    if !found.changes.is_empty() {
        return Err(Error::new(format!(
            "{shown} has {} not committed (see `barge status -r {shown}`)",
            count(found.changes.len(), "change")
        ))
        .hint(format!(
            "commit them first (`barge commit -r {shown} -m MESSAGE`): the archive is made from the record"
        )));
    }
    let config = ImageConfig::parse(&record.config, record.layers.len())?;
    // The layers merged as a pull merges them, not the record's regrouped view: in a
    // hardlink group, the entry the layers wrote as a file holds the group's owner.
    let mut merged = Tree::default();
    for l in &record.layers {
        merged.apply(&l.changes);
    }
    let init = opts.init.as_deref();
    let summary = write(
        root,
        &merged,
        &config,
        &record.source,
        &opts.file,
        init,
        true,
    )?;
    report(&out, &summary, &opts.file);
    Ok(())
}

/// The archive of a freshly pulled tree at `root` whose layers merged into `tree`.
/// `own_git`: `root/.git` is barge's repository (`-g`), not the image's.
pub fn write_pulled(
    root: &Path,
    tree: &Tree,
    config: &ImageConfig,
    image: &str,
    opts: &InitramfsOptions,
    own_git: bool,
    out: &Output,
) -> Result<()> {
    let summary = write(
        root,
        tree,
        config,
        image,
        &opts.file,
        opts.init.as_deref(),
        own_git,
    )?;
    report(out, &summary, &opts.file);
    Ok(())
}

/// What was written, for the summary line.
#[derive(Debug, Default)]
pub struct Summary {
    pub entries: usize,
    pub bytes: u64,
    pub init: InitKind,
    pub dropped_xattrs: usize,
    pub skipped_git: usize,
}

/// Where `/init` came from.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum InitKind {
    #[default]
    Image,
    Generated,
}

fn report(out: &Output, s: &Summary, file: &Path) {
    if s.dropped_xattrs > 0 {
        out.line(format!(
            "Note: {} not kept (newc cpio cannot hold them)",
            count(s.dropped_xattrs, "extended attribute")
        ));
    }
    if s.skipped_git > 0 {
        out.line(format!(
            "Note: the image's own /.git ({} entries) is not in the archive: it is not on disk",
            s.skipped_git
        ));
    }
    let init = match s.init {
        InitKind::Image => "the image's own /init",
        InitKind::Generated => "/init written by barge",
    };
    out.line(format!(
        "Initramfs {}: {} entries, {} ({} bytes), {init}",
        file.display(),
        s.entries,
        human_bytes(s.bytes),
        s.bytes
    ));
}

/// Plans the archive and writes it to `file` (replaced only once complete).
fn write(
    root: &Path,
    tree: &Tree,
    config: &ImageConfig,
    image: &str,
    file: &Path,
    init: Option<&[String]>,
    own_git: bool,
) -> Result<Summary> {
    let compress = compression(file)?;
    let run = RunConfig::from_config(&config.raw).context("image config")?;
    let mut plan = Plan::from_tree(tree, own_git);
    plan.add_init(image, &run, init)?;
    plan.add_system_entries(&run);
    plan.finish_times(source_date_epoch());
    let mut reader = Contents::new(root)?;
    let groups = plan.link_groups(&mut reader)?;
    let bytes = write_file(file, compress, |w| plan.write(w, &groups, &mut reader))?;
    Ok(Summary {
        entries: plan.nodes.len(),
        bytes,
        init: plan.init,
        dropped_xattrs: plan.dropped_xattrs,
        skipped_git: plan.skipped_git,
    })
}

/// `SOURCE_DATE_EPOCH` as a whole number of seconds, if set.
fn source_date_epoch() -> Option<i64> {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
}

/// Gzip or not, from FILE's name.
fn compression(file: &Path) -> Result<bool> {
    let name = file.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    if name.ends_with(b".gz") {
        Ok(true)
    } else if name.ends_with(b".cpio") {
        Ok(false)
    } else {
        Err(Error::new(format!(
            "{}: an initramfs FILE name ends in .cpio (plain) or .gz (gzip)",
            file.display()
        ))
        .hint("name it e.g. initramfs.cpio.gz (zstd is not written: barge has no zstd encoder)"))
    }
}

/// What an archive entry carries after its header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    /// Directories, devices, fifos.
    None,
    /// A symlink's target or a file barge writes (/init).
    Inline(Vec<u8>),
    /// A regular file of the image: its content is read from the tree.
    Disk,
}

#[derive(Debug, Clone)]
struct Node {
    entry: Entry,
    body: Body,
    /// Added by barge, not from the image (its mtime is the archive's date).
    generated: bool,
}

/// The entries to write, by path (parents sort before their children).
struct Plan {
    nodes: BTreeMap<ImagePath, Node>,
    init: InitKind,
    dropped_xattrs: usize,
    skipped_git: usize,
}

/// Regular files sharing an inode in the tree: path → (group key, size).
type Groups = HashMap<ImagePath, ((u64, u64), u64)>;

impl Plan {
    /// The image's entries, minus what the archive cannot reach (anything below a
    /// path that is not a directory) and, with `own_git`, the image's root `.git`.
    fn from_tree(tree: &Tree, own_git: bool) -> Plan {
        let mut plan = Plan {
            nodes: BTreeMap::new(),
            init: InitKind::Image,
            dropped_xattrs: 0,
            skipped_git: 0,
        };
        for (p, t) in &tree.entries {
            if own_git && is_root_git(p) {
                plan.skipped_git += 1;
                continue;
            }
            if !p.is_empty() && !plan.reachable(tree, p) {
                continue;
            }
            plan.dropped_xattrs += t.entry.xattrs.len();
            let body = match t.entry.kind {
                EntryKind::File | EntryKind::Hardlink => Body::Disk,
                EntryKind::Symlink => Body::Inline(t.entry.link.clone().unwrap_or_default()),
                _ => Body::None,
            };
            let entry = t.entry.clone();
            plan.nodes.insert(
                p.clone(),
                Node {
                    entry,
                    body,
                    generated: false,
                },
            );
        }
        plan
    }

    /// Whether `p`'s nearest ancestor that the image lists is a directory kept in the
    /// archive (else the kernel would write `p` through a symlink, or nowhere).
    fn reachable(&self, tree: &Tree, p: &[u8]) -> bool {
        let mut a = parent_of(p);
        loop {
            if let Some(n) = self.nodes.get(a) {
                return n.entry.kind == EntryKind::Dir;
            }
            if tree.entries.contains_key(a) || a.is_empty() {
                return a.is_empty() && !tree.entries.contains_key(a);
            }
            a = parent_of(a);
        }
    }

    /// Keeps the image's `/init` unless `--init` was given; else writes the script,
    /// which needs a `/bin/sh` in the image.
    fn add_init(&mut self, image: &str, run: &RunConfig, command: Option<&[String]>) -> Result<()> {
        let own = self.nodes.get(&b"init"[..]).map(|n| n.entry.kind);
        match own {
            Some(EntryKind::File | EntryKind::Hardlink | EntryKind::Symlink)
                if command.is_none() =>
            {
                return Ok(())
            }
            Some(EntryKind::Dir) if command.is_none() => {
                return Err(
                    Error::new(format!("the image {image} has a directory at /init"))
                        .hint("give the command for a generated /init with --init CMD [ARG...]"),
                )
            }
            _ => {}
        }
        let script = init::script(image, run, command)?;
        if !self.is_regular(b"bin/sh") {
            return Err(Error::new(format!(
                "the image {image} has no /bin/sh to run the /init barge writes"
            ))
            .hint("add a shell (e.g. a static busybox) or an /init of its own to the image (pull -g, change, commit, then `barge initramfs`)"));
        }
        self.nodes.remove(&b"init"[..]);
        let mut node = self.generated(b"init", EntryKind::File, 0o755);
        node.entry.size = script.len() as u64;
        node.body = Body::Inline(script);
        self.put(node);
        self.init = InitKind::Generated;
        Ok(())
    }

    /// `/dev/console` (char 5:1, which the kernel opens for /init's stdin, stdout and
    /// stderr), the mount points /dev, /proc, /sys, /root and the WorkingDir, and
    /// any missing parent directory, each only where the image has nothing.
    fn add_system_entries(&mut self, run: &RunConfig) {
        let mut dirs: Vec<(Vec<u8>, u32)> = vec![
            (Vec::new(), 0o755),
            (b"dev".to_vec(), 0o755),
            (b"proc".to_vec(), 0o555),
            (b"sys".to_vec(), 0o555),
            (b"root".to_vec(), 0o700),
        ];
        if let Some(w) = run.work_path() {
            dirs.push((w, 0o755));
        }
        for (p, mode) in dirs {
            self.add_dir_with_parents(&p, mode);
        }
        let dev_is_dir = self
            .nodes
            .get(&b"dev"[..])
            .is_some_and(|n| n.entry.kind == EntryKind::Dir);
        if dev_is_dir && !self.nodes.contains_key(&b"dev/console"[..]) {
            let mut node = self.generated(b"dev/console", EntryKind::CharDevice, 0o600);
            node.entry.rdev = Some((5, 1));
            self.put(node);
        }
        let missing: Vec<ImagePath> = (self.nodes.keys())
            .filter(|p| !p.is_empty() && !self.nodes.contains_key(parent_of(p)))
            .map(|p| parent_of(p).to_vec())
            .collect();
        for p in missing {
            self.add_dir_with_parents(&p, 0o755);
        }
    }

    /// A directory at `p` and at each missing ancestor, unless something is there.
    fn add_dir_with_parents(&mut self, p: &[u8], mode: u32) {
        let mut at = p;
        let mut todo = Vec::new();
        loop {
            if !self.nodes.contains_key(at) {
                todo.push(at.to_vec());
            }
            if at.is_empty() {
                break;
            }
            at = parent_of(at);
        }
        for (i, d) in todo.into_iter().enumerate() {
            let m = if i == 0 { mode } else { 0o755 };
            let node = self.generated(&d, EntryKind::Dir, m);
            self.put(node);
        }
    }

    fn generated(&self, path: &[u8], kind: EntryKind, mode: u32) -> Node {
        let entry = Entry {
            path: path.to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link: None,
            rdev: None,
            xattrs: Vec::new(),
            content: None,
        };
        Node {
            entry,
            body: Body::None,
            generated: true,
        }
    }

    fn put(&mut self, node: Node) {
        self.nodes.insert(node.entry.path.clone(), node);
    }

    /// Whether `path` leads to a regular file, following symlinks as the guest would.
    fn is_regular(&self, path: &[u8]) -> bool {
        let mut hops = 0;
        let mut todo: Vec<Vec<u8>> = path
            .split(|&b| b == b'/')
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut at: Vec<u8> = Vec::new();
        while let Some(c) = todo.pop() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    at = parent_of(&at).to_vec();
                    continue;
                }
                _ => {}
            }
            let next = join(&at, &c);
            let Some(node) = self.nodes.get(&next) else {
                return false;
            };
            match node.entry.kind {
                EntryKind::Symlink => {
                    hops += 1;
                    let target = node.entry.link.clone().unwrap_or_default();
                    if hops > MAX_HOPS {
                        return false;
                    }
                    if target.starts_with(b"/") {
                        at.clear();
                    }
                    todo.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
                }
                EntryKind::File | EntryKind::Hardlink
                    if todo.iter().all(|c| c.is_empty() || c == b".") =>
                {
                    return true
                }
                EntryKind::Dir => at = next,
                _ => return false,
            }
        }
        false
    }

    /// Clamps mtimes to what newc holds (0 ..= 2^32-1) and to `SOURCE_DATE_EPOCH`;
    /// barge's own entries get `SOURCE_DATE_EPOCH`, else the image's newest mtime.
    fn finish_times(&mut self, epoch: Option<i64>) {
        let clamp = |t: i64| {
            let t = epoch.map_or(t, |e| t.min(e));
            t.clamp(0, i64::from(u32::MAX))
        };
        let newest = (self.nodes.values())
            .filter(|n| !n.generated)
            .map(|n| clamp(n.entry.mtime))
            .max()
            .unwrap_or(0);
        let stamp = epoch.map_or(newest, clamp);
        for n in self.nodes.values_mut() {
            n.entry.mtime = if n.generated {
                stamp
            } else {
                clamp(n.entry.mtime)
            };
        }
    }

    /// Looks each image file up in the tree: its size now, and which share an inode.
    fn link_groups(&self, reader: &mut Contents) -> Result<Groups> {
        let mut groups = Groups::new();
        for (p, n) in &self.nodes {
            if n.body != Body::Disk {
                continue;
            }
            let m = reader.regular_meta(p)?;
            if m.size > u64::from(u32::MAX) {
                return Err(Error::new(format!(
                    "/{} is {} ({} bytes): a newc cpio entry holds less than 4 GiB",
                    show(p),
                    human_bytes(m.size),
                    m.size
                ))
                .hint("remove or split the file (commit that), then pack again"));
            }
            groups.insert(p.clone(), ((m.dev, m.ino), m.size));
        }
        Ok(groups)
    }

    /// Writes every entry, then the trailer.
    fn write(&self, w: &mut dyn Write, groups: &Groups, reader: &mut Contents) -> Result<()> {
        let mut by_key: HashMap<(u64, u64), Vec<&ImagePath>> = HashMap::new();
        for (p, (key, _)) in groups {
            by_key.entry(*key).or_default().push(p);
        }
        for members in by_key.values_mut() {
            members.sort();
        }
        let mut subdirs: HashMap<&[u8], u32> = HashMap::new();
        for (p, n) in &self.nodes {
            if n.entry.kind == EntryKind::Dir && !p.is_empty() {
                *subdirs.entry(parent_of(p)).or_default() += 1;
            }
        }
        let mut inos: HashMap<(u64, u64), u32> = HashMap::new();
        let mut next_ino: u32 = 0;
        let mut out = cpio::Writer::new(w);
        for (p, n) in &self.nodes {
            let group = groups.get(p).map(|(k, size)| (k, *size, &by_key[k]));
            let ino = match group {
                Some((k, _, _)) => *inos.entry(*k).or_insert_with(|| {
                    next_ino += 1;
                    next_ino
                }),
                None => {
                    next_ino += 1;
                    next_ino
                }
            };
            let leader = group.map_or(n, |(_, _, members)| self.leader(members));
            let mut h = header(&leader.entry, n, ino);
            if let Some(d) = subdirs.get(p.as_slice()) {
                h.nlink = 2 + d;
            }
            let name = if p.is_empty() {
                b".".to_vec()
            } else {
                p.clone()
            };
            let written = match (&n.body, group) {
                (Body::Disk, Some((_, size, members))) => {
                    h.nlink = u32::try_from(members.len()).unwrap_or(u32::MAX);
                    let last = members.last().is_some_and(|l| *l == p);
                    h.filesize = if last { size as u32 } else { 0 };
                    if last {
                        let mut f = reader.open(p, size)?;
                        out.entry(&h, &name, &mut f)
                    } else {
                        out.entry(&h, &name, &mut io::empty())
                    }
                }
                (Body::Inline(data), _) => {
                    h.filesize = u32::try_from(data.len()).unwrap_or(u32::MAX);
                    out.entry(&h, &name, &mut data.as_slice())
                }
                _ => out.entry(&h, &name, &mut io::empty()),
            };
            written.with_context(|| format!("write /{} to the archive", show(p)))?;
        }
        out.finish().context("write the archive")?;
        Ok(())
    }

    /// The entry whose metadata a hardlink group gets (extraction leaves the linked
    /// file's owner, mode and mtime): its first regular file, else its first path.
    fn leader(&self, members: &[&ImagePath]) -> &Node {
        let nodes = members.iter().filter_map(|m| self.nodes.get(*m));
        let mut first = None;
        for n in nodes {
            if n.entry.kind == EntryKind::File {
                return n;
            }
            first.get_or_insert(n);
        }
        first.expect("a group has members")
    }
}

/// The newc header of `node` with `meta`'s owner, mode and mtime (sizes set by the caller).
fn header(meta: &Entry, node: &Node, ino: u32) -> cpio::Header {
    let kind = match node.entry.kind {
        EntryKind::File | EntryKind::Hardlink => libc::S_IFREG,
        EntryKind::Dir => libc::S_IFDIR,
        EntryKind::Symlink => libc::S_IFLNK,
        EntryKind::CharDevice => libc::S_IFCHR,
        EntryKind::BlockDevice => libc::S_IFBLK,
        EntryKind::Fifo => libc::S_IFIFO,
    };
    cpio::Header {
        ino,
        mode: kind | (meta.mode & 0o7777),
        uid: meta.uid,
        gid: meta.gid,
        nlink: 1,
        mtime: meta.mtime.clamp(0, i64::from(u32::MAX)) as u32,
        filesize: 0,
        rdev: node.entry.rdev.unwrap_or((0, 0)),
    }
}

/// Reads file contents from the tree, every path resolved inside it.
struct Contents {
    root: Root,
    top: OwnedFd,
}

/// What `lstat` says of one image file on disk.
struct FileMeta {
    dev: u64,
    ino: u64,
    size: u64,
}

impl Contents {
    fn new(dir: &Path) -> Result<Contents> {
        let root = Root::open(dir).with_context(|| format!("open {}", dir.display()))?;
        let top = File::open(dir).with_context(|| format!("open {}", dir.display()))?;
        Ok(Contents {
            root,
            top: top.into(),
        })
    }

    fn regular_meta(&mut self, p: &[u8]) -> Result<FileMeta> {
        let m = self
            .root
            .lstat(p)
            .with_context(|| format!("inspect /{}", show(p)))?;
        match m {
            Some(m) if m.is_file() => Ok(FileMeta {
                dev: m.dev,
                ino: m.ino,
                size: m.size,
            }),
            _ => Err(out_of_step(p)),
        }
    }

    /// Opens `p` for reading (never following a final symlink), checking it is
    /// still the regular file of `size` bytes it was.
    fn open(&mut self, p: &[u8], size: u64) -> Result<File> {
        let (dir, name) = crate::layer::fsroot::split_last(p);
        let dir_fd = if dir.is_empty() {
            None
        } else {
            Some(
                self.root
                    .resolve_dir(dir)
                    .with_context(|| format!("open /{}", show(dir)))?,
            )
        };
        let at = dir_fd
            .as_ref()
            .map_or(self.top.as_raw_fd(), |d| d.as_raw_fd());
        let c = std::ffi::CString::new(name).map_err(|_| Error::new("NUL byte in a name"))?;
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
        // SAFETY: openat on descriptors we own, with a NUL-terminated name.
        let fd = unsafe { libc::openat(at, c.as_ptr(), flags) };
        if fd < 0 {
            return Err(Error::from(io::Error::last_os_error())
                .context(format!("read /{}", show(p)))
                .hint("make the file readable by the user running barge"));
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let f = unsafe { File::from_raw_fd(fd) };
        let m = f
            .metadata()
            .with_context(|| format!("inspect /{}", show(p)))?;
        if !m.is_file() || m.len() != size {
            return Err(out_of_step(p));
        }
        Ok(f)
    }
}

fn out_of_step(p: &[u8]) -> Error {
    Error::new(format!(
        "/{} is a regular file in the image but not on disk (or it changed meanwhile)",
        show(p)
    ))
    .hint("run `barge status` on the tree and commit or check out before packing")
}

/// Writes through a temporary file beside `file` (mode 0600: the archive holds
/// files only root may read), renamed over `file` once complete and synced.
fn write_file(
    file: &Path,
    gzip: bool,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<u64> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = file
        .file_name()
        .ok_or_else(|| Error::new(format!("{}: not a file name", file.display())))?;
    let tmp = dir.join(format!(
        ".{}.barge-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<u64> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        let mut buf = BufWriter::with_capacity(1 << 20, f);
        if gzip {
            let mut gz = GzipWriter::new(&mut buf);
            fill(&mut gz)?;
            gz.finish().context("compress the archive")?;
        } else {
            fill(&mut buf)?;
        }
        let f = buf.into_inner().map_err(|e| Error::from(e.into_error()))?;
        f.sync_all().context("write the archive to disk")?;
        let len = f.metadata().context("inspect the archive")?.len();
        std::fs::rename(&tmp, file).with_context(|| format!("rename to {}", file.display()))?;
        Ok(len)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("write {}", file.display()))
}

fn parent_of(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => &p[..i],
        None => b"",
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut p = dir.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

fn show(p: &[u8]) -> String {
    crate::store::esc(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TreeEntry;

    fn tree(entries: &[(&str, EntryKind, Option<&str>)]) -> Tree {
        let mut t = Tree::default();
        for (p, kind, link) in entries {
            let entry = Entry {
                path: p.as_bytes().to_vec(),
                kind: *kind,
                mode: 0o755,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: 100,
                link: link.map(|l| l.as_bytes().to_vec()),
                rdev: None,
                xattrs: Vec::new(),
                content: None,
            };
            t.entries
                .insert(entry.path.clone(), TreeEntry { entry, stat: None });
        }
        t
    }

    #[test]
    fn bin_sh_is_found_through_merged_usr_and_busybox_links() {
        use EntryKind::*;
        let t = tree(&[
            ("", Dir, None),
            ("bin", Symlink, Some("usr/bin")),
            ("usr", Dir, None),
            ("usr/bin", Dir, None),
            ("usr/bin/sh", Symlink, Some("../../bin/busybox")),
            ("usr/bin/busybox", File, None),
            ("loop", Symlink, Some("/loop")),
        ]);
        let plan = Plan::from_tree(&t, false);
        assert!(plan.is_regular(b"bin/sh"));
        assert!(!plan.is_regular(b"loop"));
        assert!(!plan.is_regular(b"usr/bin"));
    }

    #[test]
    fn entries_below_a_non_directory_and_own_git_are_left_out() {
        use EntryKind::*;
        let t = tree(&[
            ("", Dir, None),
            (".git", Dir, None),
            (".git/config", File, None),
            ("etc", Symlink, Some("/")),
            ("etc/passwd", File, None),
            ("etc/x/y", File, None),
        ]);
        let plan = Plan::from_tree(&t, true);
        let names: Vec<&[u8]> = plan.nodes.keys().map(|k| k.as_slice()).collect();
        assert_eq!(names, vec![&b""[..], b"etc"]);
        assert_eq!(plan.skipped_git, 2);
    }

    #[test]
    fn mtimes_are_clamped_and_generated_entries_dated() {
        use EntryKind::*;
        let mut plan = Plan::from_tree(&tree(&[("", Dir, None), ("old", File, None)]), false);
        plan.add_system_entries(&RunConfig::default());
        plan.finish_times(None);
        assert_eq!(
            plan.nodes[&b"dev/console"[..]].entry.mtime,
            100,
            "the image's newest"
        );
        plan.nodes.get_mut(&b"old"[..]).unwrap().entry.mtime = -5;
        plan.finish_times(Some(50));
        assert!(plan
            .nodes
            .values()
            .all(|n| n.entry.mtime == 50 || n.entry.mtime == 0));
        assert_eq!(plan.nodes[&b"old"[..]].entry.mtime, 0);
    }
}
