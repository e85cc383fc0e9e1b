//! barge's exact record of a pulled tree, in `ROOT/.git/barge/`: the truth that
//! commit and push work from (git only keeps what it can).
//!
//! Files (saved as one step: each written synced as `NAME.next`, then `record.next`
//! is the commit point, then all are renamed into place, `record` last):
//! - `record`: `barge-record 1`, the source reference, the manifest's and config's
//!   digests, one `layer` line per layer (media type, digest, size, diff_id, chain id);
//! - `manifest.json`, `config.json`: the raw bytes as pulled or made;
//! - `layers/<N>`: the exact changes layer N applied, one per line;
//! - `tree`: the merged view of the root with each entry's stat cache
//!   (ino, size, mtime ns, ctime ns, and the st_mode/uid/gid seen on disk);
//! - `blobs/sha256/<hex>`: blobs barge made (layers and configs), for push.
//!
//! An image's own root `.git` (a path `.git` or `.git/...`, see [`is_root_git`]) has
//! its entries in the record like any other, but never on disk: `ROOT/.git` is
//! barge's repository. They carry no stat cache and are never looked up on disk.
//!
//! Lines are space-separated fields; byte strings are escaped (`%XX` for anything
//! outside printable ASCII and for `%`, `=`, `;`, `,`), paths are written with a
//! leading `/` (the root is `/`), optional fields are `-`.

use crate::bail;
use crate::digest::Digest;
use crate::error::{Context, Error, Result};
use crate::layer::diff::is_root_git;
use crate::layer::entry::{Change, Entry, EntryKind, ImagePath};
use crate::manifest::chain_id;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const RECORD_HEADER: &str = "barge-record 1";
const LAYER_HEADER: &str = "barge-layer 1";
const TREE_HEADER: &str = "barge-tree 1";

/// A blob descriptor as manifests give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// One layer: its blob, its uncompressed digest, and what it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    pub changes: Vec<Change>,
}

/// What lstat said about a path when barge last looked (after pull or commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Full `st_mode` (type and permission bits) as on disk.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Stat {
    pub fn of(m: &std::fs::Metadata) -> Stat {
        Stat {
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
            ctime_ns: m.ctime().saturating_mul(1_000_000_000) + m.ctime_nsec(),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
        }
    }
}

/// One path of the merged view: what the image says, and what disk said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    pub entry: Entry,
    pub stat: Option<Stat>,
}

/// The merged view of all layers. Hardlink groups are normalised: the smallest
/// path is a `File`, the others `Hardlink` to it, all carrying size and content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub entries: BTreeMap<ImagePath, TreeEntry>,
}

/// Everything barge knows about a tree.
#[derive(Debug, Clone)]
pub struct Record {
    root: PathBuf,
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    /// The reference it was pulled from (for cross-repository mounts at push).
    pub source: String,
    pub layers: Vec<LayerRecord>,
    pub tree: Tree,
}

impl Record {
    /// Records a freshly pulled tree: merges the layers, takes the stat cache from
    /// disk (hashing files whose layer gave no content digest) and saves it all.
    pub fn create(
        root: &Path,
        manifest: Vec<u8>,
        config: Vec<u8>,
        source: &str,
        layers: Vec<LayerRecord>,
    ) -> Result<Record> {
        let mut tree = Tree::default();
        for l in &layers {
            tree.apply(&l.changes);
        }
        tree.add_implicit_dirs(root);
        tree.refresh_from_disk(root)?;
        let rec = Record {
            root: root.to_path_buf(),
            manifest,
            config,
            source: source.to_string(),
            layers,
            tree,
        };
        rec.save_all()?;
        Ok(rec)
    }

    /// Loads the record of a barge tree.
    pub fn load(root: &Path) -> Result<Record> {
        let dir = barge_dir(root);
        if dir.join(format!("record{NEXT}")).exists() {
            apply_next(&dir)?;
        }
        let text = match std::fs::read(dir.join("record")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::new(format!(
                    "{} is not a barge tree (no .git/barge)",
                    root.display()
                ))
                .hint("pull it with -g first"));
            }
            Err(e) => return Err(Error::from(e).context(dir.join("record").display())),
        };
        let bad = |what: &str| Error::new(format!("{}: corrupt record: {what}", dir.display()));
        let mut lines = text.split(|&b| b == b'\n');
        if lines.next() != Some(RECORD_HEADER.as_bytes()) {
            return Err(bad("unknown format (expected barge-record 1)"));
        }
        let manifest = std::fs::read(dir.join("manifest.json")).context("read record")?;
        let config = std::fs::read(dir.join("config.json")).context("read record")?;
        let mut source = String::new();
        let mut layers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            match f.as_slice() {
                [b"source", s] => source = String::from_utf8_lossy(&unescape(s)?).into_owned(),
                [b"manifest", d] => check_digest(&manifest, d).map_err(|_| bad("manifest.json"))?,
                [b"config", d] => check_digest(&config, d).map_err(|_| bad("config.json"))?,
                [b"layer", n, mt, d, size, diff] => {
                    let idx: usize = num(n)?;
                    if idx != layers.len() {
                        return Err(bad("layers out of order"));
                    }
                    let changes = read_layer(&dir.join(format!("layers/{idx}")))?;
                    layers.push(LayerRecord {
                        descriptor: Descriptor {
                            media_type: String::from_utf8_lossy(&unescape(mt)?).into_owned(),
                            digest: digest(d)?,
                            size: num(size)?,
                        },
                        diff_id: digest(diff)?,
                        changes,
                    });
                }
                _ => return Err(bad("unknown line")),
            }
        }
        let tree = read_tree(&dir.join("tree"))?;
        Ok(Record {
            root: root.to_path_buf(),
            manifest,
            config,
            source,
            layers,
            tree,
        })
    }

    /// The merged view with its stat cache.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The merged view at layer `n` (bottom is 0): the top's tree with its stat
    /// cache, or layers 0..=n merged (no stat cache) with the directories no layer
    /// listed (the root, parents) as the top's tree has them.
    pub fn tree_at(&self, n: usize) -> Tree {
        if n + 1 >= self.layers.len() {
            return self.tree.clone();
        }
        let mut tree = Tree::default();
        for l in &self.layers[..=n] {
            tree.apply(&l.changes);
        }
        let mut missing: BTreeSet<ImagePath> = BTreeSet::new();
        missing.insert(Vec::new());
        for p in tree.entries.keys() {
            let mut q = p.as_slice();
            while let Some(i) = q.iter().rposition(|&b| b == b'/') {
                q = &q[..i];
                missing.insert(q.to_vec());
            }
        }
        for p in missing {
            if tree.entries.contains_key(&p) {
                continue;
            }
            if let Some(t) = self.tree.entries.get(&p) {
                let entry = t.entry.clone();
                tree.entries.insert(p, TreeEntry { entry, stat: None });
            }
        }
        // Paths of a hardlink group share one inode: extraction leaves the metadata of
        // the file they link to, whatever the links' own headers say.
        let links: Vec<(ImagePath, Entry)> = tree
            .entries
            .iter()
            .filter(|(_, t)| t.entry.kind == EntryKind::Hardlink)
            .filter_map(|(p, t)| {
                let l = tree.entries.get(t.entry.link.as_ref()?)?;
                Some((p.clone(), l.entry.clone()))
            })
            .collect();
        for (p, l) in links {
            if let Some(t) = tree.entries.get_mut(&p) {
                let e = &mut t.entry;
                (e.mode, e.uid, e.gid, e.mtime) = (l.mode, l.uid, l.gid, l.mtime);
                e.xattrs = l.xattrs;
            }
        }
        tree
    }

    /// ChainIDs of every layer, bottom first.
    pub fn chain_ids(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let c = chain_id(out.last(), &l.diff_id);
            out.push(c);
        }
        out
    }

    /// Appends a layer barge made, with the new manifest, config and tree; call
    /// [`Record::save`] to write it.
    pub fn add_layer(
        &mut self,
        layer: LayerRecord,
        manifest: Vec<u8>,
        config: Vec<u8>,
        tree: Tree,
    ) {
        self.layers.push(layer);
        self.manifest = manifest;
        self.config = config;
        self.tree = tree;
    }

    /// Writes the new top layer's changes, manifest, config, tree and record, as
    /// one step even across a crash or power cut (see [`commit_files`]).
    pub fn save(&self) -> Result<()> {
        let mut files = Vec::new();
        if let Some(last) = self.layers.len().checked_sub(1) {
            files.push((
                format!("layers/{last}"),
                layer_text(&self.layers[last].changes),
            ));
        }
        self.save_meta(files)
    }

    /// Writes only the tree (a refreshed stat cache).
    pub fn save_tree(&self) -> Result<()> {
        write_atomic(&barge_dir(&self.root).join("tree"), &tree_text(&self.tree))
    }

    fn save_all(&self) -> Result<()> {
        let files = (self.layers.iter().enumerate())
            .map(|(i, l)| (format!("layers/{i}"), layer_text(&l.changes)))
            .collect();
        self.save_meta(files)
    }

    fn save_meta(&self, mut files: Vec<(String, Vec<u8>)>) -> Result<()> {
        let dir = barge_dir(&self.root);
        std::fs::create_dir_all(dir.join("layers")).context("create .git/barge")?;
        files.push(("manifest.json".into(), self.manifest.clone()));
        files.push(("config.json".into(), self.config.clone()));
        files.push(("tree".into(), tree_text(&self.tree)));
        let mut t = format!("{RECORD_HEADER}\nsource {}\n", esc(self.source.as_bytes()));
        t.push_str(&format!("manifest {}\n", Digest::of_bytes(&self.manifest)));
        t.push_str(&format!("config {}\n", Digest::of_bytes(&self.config)));
        for (i, l) in self.layers.iter().enumerate() {
            let d = &l.descriptor;
            t.push_str(&format!(
                "layer {i} {} {} {} {}\n",
                esc(d.media_type.as_bytes()),
                d.digest,
                d.size,
                l.diff_id
            ));
        }
        commit_files(&dir, &files, t.as_bytes())
    }
}

/// Suffix of a file written for the next record before that record is committed.
const NEXT: &str = ".next";

/// Writes a record's files so that a crash or power cut at any point leaves either
/// the old record or the new one: each file goes to `NAME.next` (synced), then
/// `record.next` (synced, with the directories) is the commit point, then every
/// `.next` is renamed over its file, `record` last. [`Record::load`] finishes the
/// renames of a committed `record.next`; [`remove_uncommitted`] drops the rest.
fn commit_files(dir: &Path, files: &[(String, Vec<u8>)], record: &[u8]) -> Result<()> {
    for (name, data) in files {
        write_atomic(&dir.join(format!("{name}{NEXT}")), data)?;
    }
    sync_dirs(dir)?;
    write_atomic(&dir.join(format!("record{NEXT}")), record)?;
    sync_dirs(dir)?;
    apply_next(dir)
}

/// Renames every `NAME.next` over `NAME`, `record.next` last (idempotent: a
/// concurrent or repeated run finds the files already moved).
fn apply_next(dir: &Path) -> Result<()> {
    for sub in [dir.join("layers"), dir.to_path_buf()] {
        for (from, to) in next_files(&sub) {
            if to.file_name() == Some(OsStr::new("record")) {
                continue;
            }
            rename_if_there(&from, &to)?;
        }
    }
    rename_if_there(&dir.join(format!("record{NEXT}")), &dir.join("record"))?;
    sync_dirs(dir)
}

fn rename_if_there(from: &Path, to: &Path) -> Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::from(e).context(format!("write {}", to.display())))
        }
        _ => Ok(()),
    }
}

/// `(NAME.next, NAME)` pairs in `dir`.
fn next_files(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let base = name.as_bytes().strip_suffix(NEXT.as_bytes())?;
            (!base.is_empty()).then(|| (e.path(), dir.join(OsStr::from_bytes(base))))
        })
        .collect()
}

/// Removes the `.next` files of a save that a dead run did not commit (no
/// `record.next`); call it only while holding the tree's lock. Returns them.
pub fn remove_uncommitted(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = barge_dir(root);
    if dir.join(format!("record{NEXT}")).exists() {
        apply_next(&dir)?;
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    for sub in [dir.join("layers"), dir.clone()] {
        for (from, _) in next_files(&sub) {
            std::fs::remove_file(&from).with_context(|| format!("remove {}", from.display()))?;
            removed.push(from);
        }
    }
    Ok(removed)
}

/// fsync of the record's directories, so that renames in them survive a power cut.
fn sync_dirs(dir: &Path) -> Result<()> {
    for d in [
        dir.join("layers"),
        dir.join("blobs/sha256"),
        dir.to_path_buf(),
    ] {
        match std::fs::File::open(&d) {
            Ok(f) => f
                .sync_all()
                .with_context(|| format!("sync {}", d.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::from(e).context(format!("sync {}", d.display()))),
        }
    }
    Ok(())
}

/// `ROOT/.git/barge`.
pub fn barge_dir(root: &Path) -> PathBuf {
    root.join(".git").join("barge")
}

/// Where a blob barge made is kept.
pub fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    barge_dir(root).join("blobs/sha256").join(digest.hex())
}

/// Stores a small blob (a config) by its digest.
pub fn put_blob(root: &Path, data: &[u8]) -> Result<Digest> {
    let d = Digest::of_bytes(data);
    let p = blob_path(root, &d);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    write_atomic(&p, data)?;
    Ok(d)
}

/// Writes `data` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.with_context(|| format!("write {}", path.display()))
}

impl Tree {
    /// Applies one layer's changes in order, as an extractor does: whiteouts and
    /// opaque markers remove only what lower layers put (an entry of this same layer
    /// survives them, whatever their order in the tar), and opaque markers take
    /// effect at the end of the layer.
    pub fn apply(&mut self, changes: &[Change]) {
        // Paths this layer put, with their ancestors.
        let mut upper: HashSet<ImagePath> = HashSet::new();
        let mut opaque: Vec<&ImagePath> = Vec::new();
        for c in changes {
            match c {
                Change::Put(e) => {
                    let keep_children = e.kind == EntryKind::Dir
                        && self
                            .entries
                            .get(&e.path)
                            .is_some_and(|t| t.entry.kind == EntryKind::Dir);
                    if !keep_children {
                        self.remove_below(&e.path);
                    }
                    let mut e = e.clone();
                    if e.kind == EntryKind::Hardlink {
                        if let Some(t) = e.link.as_ref().and_then(|l| self.entries.get(l)) {
                            e.size = t.entry.size;
                            e.content = t.entry.content.clone();
                        }
                    }
                    mark_upper(&mut upper, &e.path);
                    self.entries.insert(
                        e.path.clone(),
                        TreeEntry {
                            entry: e,
                            stat: None,
                        },
                    );
                }
                Change::Delete(p) => self.prune(p, true, &upper),
                Change::Opaque(p) => opaque.push(p),
            }
        }
        for p in opaque {
            self.prune(p, false, &upper);
        }
    }

    /// Removes `p` (if `remove_self`) and everything below it, except what is in
    /// `upper`.
    fn prune(&mut self, p: &[u8], remove_self: bool, upper: &HashSet<ImagePath>) {
        if remove_self && !upper.contains(p) {
            self.entries.remove(p);
            self.remove_below(p);
            return;
        }
        let lower: Vec<ImagePath> = self
            .below(p)
            .filter(|(k, _)| !upper.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in lower {
            self.entries.remove(&k);
        }
    }

    /// Adds the directories that no layer listed but extraction made (the root,
    /// parents of listed entries) as disk shows them, so that commit does not take
    /// them for new ones.
    pub fn add_implicit_dirs(&mut self, root: &Path) {
        let mut missing: BTreeSet<ImagePath> = BTreeSet::new();
        // The root, even when no entry is left (an opaque root with nothing beside it).
        if !self.entries.contains_key(&b""[..]) {
            missing.insert(Vec::new());
        }
        for p in self.entries.keys().filter(|p| !is_root_git(p)) {
            let mut q = p.as_slice();
            while !q.is_empty() {
                q = match q.iter().rposition(|&b| b == b'/') {
                    Some(i) => &q[..i],
                    None => b"",
                };
                if self.entries.contains_key(q) || !missing.insert(q.to_vec()) {
                    break;
                }
            }
        }
        for p in missing {
            let Ok(m) = std::fs::symlink_metadata(root.join(OsStr::from_bytes(&p))) else {
                continue;
            };
            if !m.is_dir() {
                continue;
            }
            // A root no layer listed gets its final mode when the staging dir is
            // put in place, after this record is made.
            let mode = if p.is_empty() {
                crate::layer::stage::final_root_mode(m.mode())
            } else {
                m.mode() & 0o7777
            };
            let mut entry = Entry::from_stat(&p, EntryKind::Dir, &m);
            entry.mode = mode;
            self.entries.insert(p, TreeEntry { entry, stat: None });
        }
    }

    /// Removes everything strictly below `p`.
    pub fn remove_below(&mut self, p: &[u8]) {
        let below: Vec<ImagePath> = self.below(p).map(|(k, _)| k.clone()).collect();
        for k in below {
            self.entries.remove(&k);
        }
    }

    /// The entries strictly below `p`, in order.
    pub fn below<'a>(&'a self, p: &[u8]) -> impl Iterator<Item = (&'a ImagePath, &'a TreeEntry)> {
        let mut prefix = p.to_vec();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        let start = prefix.clone();
        // Below the root: everything but the root itself (the first key, if listed).
        self.entries
            .range(start..)
            .skip_while(|(k, _)| k.is_empty())
            .take_while(move |(k, _)| k.starts_with(&prefix))
    }

    /// The entries of an image's own root `.git` (see [`is_root_git`]).
    pub fn root_git_entries(&self) -> impl Iterator<Item = (&ImagePath, &TreeEntry)> {
        self.entries
            .range(b".git".to_vec()..)
            .take_while(|(k, _)| k.starts_with(b".git"))
            .filter(|(k, _)| is_root_git(k))
    }

    /// Takes the stat cache of every entry from disk, drops entries that are not
    /// there (or only through a symlink: lstat never follows one, in any component),
    /// hashes regular files without a content digest, and regroups hardlinks by
    /// inode. Entries of the root's `.git` are kept as they are, never looked up.
    pub fn refresh_from_disk(&mut self, root: &Path) -> Result<()> {
        let mut gone = Vec::new();
        let mut dirs = RealDirs::default();
        for (p, t) in self.entries.iter_mut() {
            if is_root_git(p) {
                continue;
            }
            let m = match p.iter().rposition(|&b| b == b'/') {
                Some(i) if !dirs.is_real(root, &p[..i]) => None,
                _ => std::fs::symlink_metadata(root.join(OsStr::from_bytes(p))).ok(),
            };
            match m {
                Some(m) => t.stat = Some(Stat::of(&m)),
                None => gone.push(p.clone()),
            }
        }
        for p in gone {
            self.entries.remove(&p);
        }
        for (p, t) in self.entries.iter_mut() {
            let regular = matches!(t.entry.kind, EntryKind::File | EntryKind::Hardlink)
                && t.stat
                    .is_some_and(|s| s.mode & libc::S_IFMT == libc::S_IFREG);
            if regular && t.entry.content.is_none() {
                let (d, n) = hash_file(&root.join(OsStr::from_bytes(p)))?;
                t.entry.content = Some(d);
                t.entry.size = n;
            }
        }
        self.regroup_hardlinks();
        Ok(())
    }

    /// Normalises hardlink groups from the inodes in the stat cache.
    pub fn regroup_hardlinks(&mut self) {
        let mut leader: HashMap<u64, ImagePath> = HashMap::new();
        for (p, t) in self.entries.iter_mut() {
            let Some(st) = t.stat else { continue };
            let regular = matches!(t.entry.kind, EntryKind::File | EntryKind::Hardlink);
            if !regular {
                continue;
            }
            match leader.get(&st.ino) {
                Some(l) => {
                    t.entry.kind = EntryKind::Hardlink;
                    t.entry.link = Some(l.clone());
                }
                None => {
                    leader.insert(st.ino, p.clone());
                    t.entry.kind = EntryKind::File;
                    t.entry.link = None;
                }
            }
        }
    }
}

/// Which directories (relative to a root) are real directories, reached without a
/// symlink in any component; cached.
#[derive(Default)]
struct RealDirs(HashMap<ImagePath, bool>);

impl RealDirs {
    fn is_real(&mut self, root: &Path, dir: &[u8]) -> bool {
        if dir.is_empty() {
            return true;
        }
        if let Some(&d) = self.0.get(dir) {
            return d;
        }
        let parent_ok = match dir.iter().rposition(|&b| b == b'/') {
            Some(i) => self.is_real(root, &dir[..i]),
            None => true,
        };
        let d = parent_ok
            && std::fs::symlink_metadata(root.join(OsStr::from_bytes(dir)))
                .is_ok_and(|m| m.is_dir());
        self.0.insert(dir.to_vec(), d);
        d
    }
}

/// Adds `path` and its ancestors to `upper`.
fn mark_upper(upper: &mut HashSet<ImagePath>, path: &[u8]) {
    let mut p = path;
    while upper.insert(p.to_vec()) && !p.is_empty() {
        p = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => &p[..i],
            None => b"",
        };
    }
}

/// sha256 and size of a file's content.
pub fn hash_file(path: &Path) -> Result<(Digest, u64)> {
    let f = std::fs::File::open(path).with_context(|| format!("read {}", path.display()))?;
    let mut r = crate::digest::HashReader::new(f);
    std::io::copy(&mut r, &mut std::io::sink())
        .with_context(|| format!("read {}", path.display()))?;
    Ok(r.finish())
}

// ---- text format ----

/// Escapes a byte string so it holds no space, newline or separator.
pub fn esc(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if (0x21..=0x7e).contains(&b) && !b"%=;,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`esc`].
pub fn unescape(s: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(v) = hex else {
                bail!(
                    "corrupt record: bad escape in {:?}",
                    String::from_utf8_lossy(s)
                );
            };
            out.push(v);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

fn esc_path(p: &[u8]) -> String {
    format!("/{}", esc(p))
}

fn unesc_path(s: &[u8]) -> Result<ImagePath> {
    match s.strip_prefix(b"/") {
        Some(rest) => unescape(rest),
        None => bail!("corrupt record: path without leading /"),
    }
}

fn num<T: std::str::FromStr>(s: &[u8]) -> Result<T> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Error::new(format!(
                "corrupt record: bad number {:?}",
                String::from_utf8_lossy(s)
            ))
        })
}

fn digest(s: &[u8]) -> Result<Digest> {
    Digest::parse(&String::from_utf8_lossy(s)).context("corrupt record")
}

fn check_digest(data: &[u8], want: &[u8]) -> Result<()> {
    if Digest::of_bytes(data).as_str().as_bytes() == want {
        Ok(())
    } else {
        bail!("digest mismatch")
    }
}

fn kind_char(k: EntryKind) -> char {
    match k {
        EntryKind::File => 'f',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Hardlink => 'h',
        EntryKind::CharDevice => 'c',
        EntryKind::BlockDevice => 'b',
        EntryKind::Fifo => 'p',
    }
}

fn char_kind(s: &[u8]) -> Result<EntryKind> {
    Ok(match s {
        b"f" => EntryKind::File,
        b"d" => EntryKind::Dir,
        b"l" => EntryKind::Symlink,
        b"h" => EntryKind::Hardlink,
        b"c" => EntryKind::CharDevice,
        b"b" => EntryKind::BlockDevice,
        b"p" => EntryKind::Fifo,
        _ => bail!("corrupt record: unknown entry kind"),
    })
}

/// The entry's fields (all but the path), space-separated.
fn entry_fields(e: &Entry) -> String {
    let content = e
        .content
        .as_ref()
        .map_or("-".to_string(), |d| d.hex().to_string());
    let link = e
        .link
        .as_ref()
        .map_or("-".to_string(), |l| format!("={}", esc(l)));
    let rdev = e.rdev.map_or("-".to_string(), |(a, b)| format!("{a},{b}"));
    let xattrs = if e.xattrs.is_empty() {
        "-".to_string()
    } else {
        let parts: Vec<String> = e
            .xattrs
            .iter()
            .map(|(k, v)| format!("{}={}", esc(k.as_bytes()), esc(v)))
            .collect();
        parts.join(";")
    };
    format!(
        "{} {:o} {} {} {} {} {content} {link} {rdev} {xattrs}",
        kind_char(e.kind),
        e.mode,
        e.uid,
        e.gid,
        e.size,
        e.mtime
    )
}

/// Parses the ten fields written by [`entry_fields`].
fn parse_entry(f: &[&[u8]], path: ImagePath) -> Result<Entry> {
    let [kind, mode, uid, gid, size, mtime, content, link, rdev, xattrs] = f else {
        bail!("corrupt record: wrong number of fields");
    };
    let mode = u32::from_str_radix(&String::from_utf8_lossy(mode), 8)
        .map_err(|_| Error::new("corrupt record: bad mode"))?;
    let content = match *content {
        b"-" => None,
        h => Some(digest(&[b"sha256:", h].concat())?),
    };
    let link = match link.strip_prefix(b"=") {
        Some(l) => Some(unescape(l)?),
        None => None,
    };
    let rdev = match *rdev {
        b"-" => None,
        r => {
            let mut it = r.split(|&b| b == b',');
            match (it.next(), it.next()) {
                (Some(a), Some(b)) => Some((num(a)?, num(b)?)),
                _ => bail!("corrupt record: bad rdev"),
            }
        }
    };
    let mut xs = Vec::new();
    if *xattrs != b"-" {
        for kv in xattrs.split(|&b| b == b';') {
            let mut it = kv.splitn(2, |&b| b == b'=');
            let (Some(k), Some(v)) = (it.next(), it.next()) else {
                bail!("corrupt record: bad xattr");
            };
            xs.push((
                String::from_utf8_lossy(&unescape(k)?).into_owned(),
                unescape(v)?,
            ));
        }
    }
    Ok(Entry {
        path,
        kind: char_kind(kind)?,
        mode,
        uid: num(uid)?,
        gid: num(gid)?,
        size: num(size)?,
        mtime: num(mtime)?,
        link,
        rdev,
        xattrs: xs,
        content,
    })
}

fn layer_text(changes: &[Change]) -> Vec<u8> {
    let mut t = String::from(LAYER_HEADER);
    t.push('\n');
    for c in changes {
        match c {
            Change::Put(e) => t.push_str(&format!("P {} {}\n", entry_fields(e), esc_path(&e.path))),
            Change::Delete(p) => t.push_str(&format!("D {}\n", esc_path(p))),
            Change::Opaque(p) => t.push_str(&format!("O {}\n", esc_path(p))),
        }
    }
    t.into_bytes()
}

fn read_lines(path: &Path, header: &str) -> Result<Vec<u8>> {
    let text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
    if first != header.as_bytes() {
        bail!("{}: corrupt record: expected {header:?}", path.display());
    }
    Ok(text)
}

fn read_layer(path: &Path) -> Result<Vec<Change>> {
    let text = read_lines(path, LAYER_HEADER)?;
    let mut out = Vec::new();
    for line in text
        .split(|&b| b == b'\n')
        .skip(1)
        .filter(|l| !l.is_empty())
    {
        let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let c = match f.as_slice() {
            [b"D", p] => Change::Delete(unesc_path(p)?),
            [b"O", p] => Change::Opaque(unesc_path(p)?),
            [b"P", rest @ .., p] => Change::Put(parse_entry(rest, unesc_path(p)?)?),
            _ => bail!("{}: corrupt record line", path.display()),
        };
        out.push(c);
    }
    Ok(out)
}

fn tree_text(tree: &Tree) -> Vec<u8> {
    let mut t = String::with_capacity(tree.entries.len() * 160);
    t.push_str(TREE_HEADER);
    t.push('\n');
    for (p, te) in &tree.entries {
        let st = te.stat.map_or("-".to_string(), |s| {
            format!(
                "{},{},{},{},{:o},{},{}",
                s.ino, s.size, s.mtime_ns, s.ctime_ns, s.mode, s.uid, s.gid
            )
        });
        t.push_str(&format!(
            "{} {st} {}\n",
            entry_fields(&te.entry),
            esc_path(p)
        ));
    }
    t.into_bytes()
}

fn read_tree(path: &Path) -> Result<Tree> {
    let text = read_lines(path, TREE_HEADER)?;
    let mut tree = Tree::default();
    for line in text
        .split(|&b| b == b'\n')
        .skip(1)
        .filter(|l| !l.is_empty())
    {
        let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let [fields @ .., st, p] = f.as_slice() else {
            bail!("{}: corrupt record line", path.display());
        };
        let p = unesc_path(p)?;
        let stat = if *st == b"-" {
            None
        } else {
            let s: Vec<&[u8]> = st.split(|&b| b == b',').collect();
            let [ino, size, mt, ct, mode, uid, gid] = s.as_slice() else {
                bail!("{}: corrupt stat", path.display());
            };
            Some(Stat {
                ino: num(ino)?,
                size: num(size)?,
                mtime_ns: num(mt)?,
                ctime_ns: num(ct)?,
                mode: u32::from_str_radix(&String::from_utf8_lossy(mode), 8)
                    .map_err(|_| Error::new("corrupt record: bad mode"))?,
                uid: num(uid)?,
                gid: num(gid)?,
            })
        };
        let entry = parse_entry(fields, p.clone())?;
        tree.entries.insert(p, TreeEntry { entry, stat });
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("barge-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn entry(path: &[u8], kind: EntryKind) -> Entry {
        Entry {
            path: path.to_vec(),
            kind,
            mode: 0o4755,
            uid: 1000,
            gid: 4294967295,
            size: 0,
            mtime: -5,
            link: None,
            rdev: None,
            xattrs: vec![],
            content: None,
        }
    }

    #[test]
    fn escape_roundtrip_hostile_bytes() {
        let all: Vec<u8> = (0..=255u8).collect();
        let e = esc(&all);
        assert!(!e.contains(' ') && !e.contains('\n') && !e.contains('='));
        assert_eq!(unescape(e.as_bytes()).unwrap(), all);
        assert!(unescape(b"%G1").is_err());
        assert!(unescape(b"%4").is_err());
    }

    #[test]
    fn record_roundtrip_with_hostile_names() {
        let root = tmpdir("record");
        std::fs::create_dir_all(root.join(".git")).unwrap();
        let names: Vec<&[u8]> = vec![
            b"a b",
            b"tab\there",
            b"new\nline",
            b"pct%20",
            b"\xff\xfe",
            b"-",
            b"=x;y,z",
            b"/",
        ];
        let mut changes = vec![Change::Put(entry(b"", EntryKind::Dir))];
        for n in &names {
            let mut e = entry(n, EntryKind::File);
            e.content = Some(Digest::of_bytes(n));
            e.size = 3;
            e.xattrs = vec![("user.a b=;".into(), vec![0, 1, b' ', b'\n'])];
            changes.push(Change::Put(e));
        }
        let mut l = entry(b"link", EntryKind::Symlink);
        l.link = Some(b"../t a\nrget".to_vec());
        changes.push(Change::Put(l));
        let mut d = entry(b"dev", EntryKind::CharDevice);
        d.rdev = Some((1, 3));
        changes.push(Change::Put(d));
        changes.push(Change::Delete(b"gone dir\n".to_vec()));
        changes.push(Change::Opaque(b"".to_vec()));
        let layer = LayerRecord {
            descriptor: Descriptor {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                digest: Digest::of_bytes(b"blob"),
                size: 42,
            },
            diff_id: Digest::of_bytes(b"tar"),
            changes: changes.clone(),
        };
        let mut rec = Record {
            root: root.clone(),
            manifest: b"{\"m\":1}".to_vec(),
            config: b"{}".to_vec(),
            source: "localhost:5000/x y:latest".into(),
            layers: vec![layer.clone()],
            tree: Tree::default(),
        };
        rec.tree.apply(&changes[..changes.len() - 2]);
        rec.tree.entries.get_mut(&b"-"[..]).unwrap().stat = Some(Stat {
            ino: 7,
            size: 3,
            mtime_ns: -1,
            ctime_ns: 123456789012345,
            mode: 0o104755,
            uid: 0,
            gid: 0,
        });
        rec.save_all().unwrap();
        let back = Record::load(&root).unwrap();
        assert_eq!(back.layers, rec.layers);
        assert_eq!(back.tree, rec.tree);
        assert_eq!(back.source, rec.source);
        assert_eq!(back.manifest, rec.manifest);
        // A damaged manifest is detected.
        std::fs::write(barge_dir(&root).join("manifest.json"), b"x").unwrap();
        assert!(Record::load(&root).is_err());
        let e = Record::load(&root.join("nope")).unwrap_err();
        assert!(e.to_string().contains("is not a barge tree"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn apply_follows_extraction_rules() {
        let mut t = Tree::default();
        t.apply(&[
            Change::Put(entry(b"d", EntryKind::Dir)),
            Change::Put(entry(b"d/f", EntryKind::File)),
            Change::Put(entry(b"e", EntryKind::Dir)),
            Change::Put(entry(b"e/x", EntryKind::File)),
        ]);
        t.apply(&[
            Change::Put(entry(b"d", EntryKind::File)),
            Change::Opaque(b"e".to_vec()),
            Change::Put(entry(b"e/y", EntryKind::File)),
        ]);
        let keys: Vec<&[u8]> = t.entries.keys().map(|k| k.as_slice()).collect();
        assert_eq!(keys, vec![&b"d"[..], b"e", b"e/y"]);
    }

    /// An opaque root empties the record even when a layer listed the root itself
    /// (`./`, the first key), which stays.
    #[test]
    fn opaque_root_with_the_root_listed() {
        let mut t = Tree::default();
        t.apply(&[
            Change::Put(entry(b"", EntryKind::Dir)),
            Change::Put(entry(b".git", EntryKind::Dir)),
            Change::Put(entry(b".git/config", EntryKind::File)),
            Change::Put(entry(b"etc", EntryKind::Dir)),
        ]);
        t.apply(&[Change::Opaque(Vec::new())]);
        let keys: Vec<&[u8]> = t.entries.keys().map(|k| k.as_slice()).collect();
        assert_eq!(keys, vec![&b""[..]]);
        t.apply(&[
            Change::Put(entry(b"a", EntryKind::File)),
            Change::Opaque(Vec::new()),
        ]);
        let keys: Vec<&[u8]> = t.entries.keys().map(|k| k.as_slice()).collect();
        assert_eq!(keys, vec![&b""[..], b"a"]);
        assert_eq!(t.below(b"").count(), 1);
    }

    #[test]
    fn whiteouts_spare_entries_of_the_same_layer() {
        let mut t = Tree::default();
        t.apply(&[
            Change::Put(entry(b"o", EntryKind::Dir)),
            Change::Put(entry(b"o/old", EntryKind::File)),
            Change::Put(entry(b"w", EntryKind::Dir)),
            Change::Put(entry(b"w/old", EntryKind::File)),
        ]);
        // The opaque marker after this layer's o/new, a whiteout after w/new.
        t.apply(&[
            Change::Put(entry(b"o/new", EntryKind::File)),
            Change::Opaque(b"o".to_vec()),
            Change::Put(entry(b"w/new", EntryKind::File)),
            Change::Delete(b"w".to_vec()),
        ]);
        let keys: Vec<&[u8]> = t.entries.keys().map(|k| k.as_slice()).collect();
        assert_eq!(keys, vec![&b"o"[..], b"o/new", b"w", b"w/new"]);
    }
}
