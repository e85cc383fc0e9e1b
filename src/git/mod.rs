//! Layer history in git: one branch `layer_<N>_<chainid>` per layer, each a commit
//! whose tree is the root as it stands after that layer.
//!
//! barge drives the `git` binary. Commits are written with one long-running
//! `git fast-import` (one pack, no loose objects: several times faster than
//! `git add -A` on a 10k-file tree), fed only the paths a layer touched. While a
//! layer unpacks, History is its [`ContentSink`]: each regular file's bytes go
//! into a pack of barge's own ([`pack`]) as they are written, so git never hashes
//! them (its collision-detecting SHA-1 made fast-import three times slower than
//! the pull); the commit then names those blobs by id. Anything else (and a file
//! whose blob cannot be proven to be what is on disk) is read from the tree on
//! disk. The index is rebuilt from the top commit at [`History::finish`].
//! barge never writes the user's global config; settings it needs live in the
//! repository's own `.git/config` or on the command line.
//!
//! Every git is told its repository and work tree ([`Repo`]: `--git-dir`,
//! `--work-tree`), so that `pull -g` can keep the repository outside the root the
//! layers are applied to, and runs behind [`WALL`]: no hook, fsmonitor, pager,
//! editor, helper or remote, and no `GIT_*` variable of the caller.
//!
//! What git cannot hold is left out of git's view (barge's record in `.git/barge`
//! keeps it): any path with a `.git` component (an image's own repository, e.g.
//! `usr/src/app/.git`), and symlinks named `.gitmodules`. Empty directories,
//! owners, modes beyond +x, devices, fifos and xattrs are invisible to git anyway.

mod exclude;
mod pack;

use crate::bail;
use crate::digest::Digest;
use crate::error::{Context, Error, Result};
use crate::layer::entry::{Change, EntryKind, ImagePath};
use crate::layer::unpack::ContentSink;
use pack::{Oid, PackWriter};
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io::{BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// zlib level of the pack fast-import writes: now only trees, commits and symlink
/// targets, stored uncompressed like the blobs barge packs ([`pack`]). Both stay
/// as big as their content until the user runs `git repack -a -d -F` (`git gc`
/// reuses the stored data as it is; gc.auto is off).
const IMPORT_COMPRESSION: u32 = 0;

/// Prefix of every layer branch.
pub const BRANCH_PREFIX: &str = "layer_";

/// A commit message: the layer's history line and its facts as git trailers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerMessage {
    /// The history entry's `created_by` or comment, else `layer N`.
    pub title: String,
    /// `Layer-Digest`, `Diff-ID`, `Media-Type`, `Size`, `Chain-ID`, ...
    pub trailers: Vec<(String, String)>,
}

impl LayerMessage {
    /// The full message text: title, blank line, trailers.
    pub fn render(&self) -> String {
        let mut title = self.title.trim().to_string();
        if title.is_empty() {
            title = "layer".to_string();
        }
        let mut out = title;
        out.push_str("\n\n");
        for (k, v) in &self.trailers {
            let v = v.replace('\n', " ");
            out.push_str(&format!("{k}: {v}\n"));
        }
        out
    }
}

/// The branch name of layer `index` with chain id `chain`.
pub fn branch_name(index: usize, chain: &Digest) -> String {
    format!("{BRANCH_PREFIX}{index}_{}", chain.hex())
}

/// Parses `layer_<N>_<hex>` into N.
pub fn branch_index(name: &str) -> Option<usize> {
    let rest = name.strip_prefix(BRANCH_PREFIX)?;
    let (n, hex) = rest.split_once('_')?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    n.parse().ok()
}

/// Whether git can hold this path (see the module comment).
pub fn git_visible(path: &[u8], is_symlink: bool) -> bool {
    let mut last: &[u8] = b"";
    for comp in path.split(|&b| b == b'/') {
        if comp.eq_ignore_ascii_case(b".git") {
            return false;
        }
        last = comp;
    }
    !(is_symlink && last.eq_ignore_ascii_case(b".gitmodules"))
}

/// A repository barge drives: its git directory and its work tree, always named
/// to git explicitly (`--git-dir`, `--work-tree`), never found by discovery and never
/// written into the repository's config (no `core.worktree`).
#[derive(Debug, Clone)]
pub struct Repo {
    pub git_dir: PathBuf,
    pub work: PathBuf,
}

impl Repo {
    /// The repository of a barge tree: `root/.git` with `root` as work tree.
    pub fn of_root(root: &Path) -> Repo {
        Repo {
            git_dir: root.join(".git"),
            work: root.to_path_buf(),
        }
    }

    /// A `git` command for this repository, behind the walls of [`harden`].
    fn command(&self) -> Command {
        let mut c = Command::new("git");
        harden(&mut c);
        c.arg("--git-dir")
            .arg(&self.git_dir)
            .arg("--work-tree")
            .arg(&self.work);
        c
    }

    /// Runs git and returns its stdout; its stderr becomes the error message.
    fn output(&self, args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>> {
        run_output(self.command(), args, input)
    }
}

/// The git repository of a barge tree, with its layer branches.
pub struct History {
    repo: Repo,
    /// `Name <email>` used for author and committer.
    ident: String,
    /// HEAD's commit when the repository was opened (None for a new one).
    base: Option<String>,
    /// Branch and fast-import mark of the last commit written this session.
    tip: Option<(String, u64)>,
    /// Paths (non-directories) in git's view of the tip, loaded lazily.
    tracked: Option<BTreeSet<ImagePath>>,
    /// Directories holding an image's own repository (see [`exclude`]).
    nested: BTreeSet<ImagePath>,
    importer: Option<Importer>,
    next_mark: u64,
    /// The pack receiving this layer's file contents, once the first one comes.
    pack: Option<PackWriter>,
    /// Blobs sent by [`ContentSink`] since the last commit, in order.
    fed: Vec<Fed>,
}

/// A file's content written to the pack while its layer unpacked.
struct Fed {
    path: ImagePath,
    /// The blob's id and (st_dev, st_ino) of the file written; None until it is complete.
    written: Option<(Oid, (u64, u64))>,
}

/// A running `git fast-import`.
struct Importer {
    child: Child,
    input: BufWriter<ChildStdin>,
}

impl History {
    /// Creates the repository at `root/.git` (which must not exist yet).
    #[cfg(test)]
    pub fn init(root: &Path) -> Result<History> {
        History::init_at(Repo::of_root(root))
    }

    /// Creates the repository `repo.git_dir` (which must not exist yet) for the work
    /// tree `repo.work`; the git directory may lie outside the work tree (`pull -g`
    /// keeps it out of the extraction root until the last layer is in).
    pub fn init_at(repo: Repo) -> Result<History> {
        if repo.git_dir.symlink_metadata().is_ok() {
            bail!("git init {}: it already exists", repo.git_dir.display());
        }
        // `--bare` so that git writes no `core.worktree`: the repository becomes the
        // work tree's `.git` later, where git finds the work tree by itself.
        let mut init = Command::new("git");
        harden(&mut init);
        init.arg("--git-dir").arg(&repo.git_dir);
        run_output(init, &["init", "-q", "--bare"], None).context("git init")?;
        repo.output(&["config", "core.bare", "false"], None)
            .context("git config")?;
        configure(&repo.git_dir)?;
        Ok(History {
            ident: identity(&repo)?,
            repo,
            base: None,
            tip: None,
            tracked: Some(BTreeSet::new()),
            nested: BTreeSet::new(),
            importer: None,
            next_mark: 1,
            pack: None,
            fed: Vec::new(),
        })
    }

    /// Opens the repository at `root/.git` created by [`History::init`].
    pub fn open(root: &Path) -> Result<History> {
        let repo = Repo::of_root(root);
        if !std::fs::symlink_metadata(&repo.git_dir).is_ok_and(|m| m.is_dir()) {
            return Err(
                Error::new(format!("{}: not a git repository", root.display()))
                    .hint("pull it with -g first"),
            );
        }
        let head = repo
            .output(&["rev-parse", "--verify", "-q", "HEAD"], None)
            .context("git rev-parse HEAD")?;
        let head = String::from_utf8_lossy(&head).trim().to_string();
        Ok(History {
            ident: identity(&repo)?,
            nested: exclude::read(&repo.git_dir),
            repo,
            base: Some(head),
            tip: None,
            tracked: None,
            importer: None,
            next_mark: 1,
            pack: None,
            fed: Vec::new(),
        })
    }

    /// The checked-out branch (`git symbolic-ref --short HEAD`).
    pub fn current_branch(&self) -> Result<String> {
        let out = self
            .repo
            .output(&["symbolic-ref", "-q", "--short", "HEAD"], None)
            .map_err(|e| e.context("HEAD is not on a branch"))?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// Switches the work tree and HEAD to `branch` (`git checkout -f`): files git
    /// holds are rewritten; what it cannot hold is left for the caller to put right.
    pub fn switch_to(&self, branch: &str) -> Result<()> {
        self.repo
            .output(&["checkout", "-q", "-f", branch, "--"], None)
            .with_context(|| format!("git checkout {branch}"))?;
        Ok(())
    }

    /// Deletes the layer branches beyond the record's `layers` layers (left by a
    /// commit killed after git moved and before its record was written). If one is
    /// checked out, HEAD goes back to `top` and the index to its tree; the working
    /// tree keeps its changes, which the next commit takes. Returns the branches.
    pub fn roll_back_beyond(&self, top: &str, layers: usize) -> Result<Vec<String>> {
        let beyond: Vec<String> = self
            .branches()?
            .into_iter()
            .filter(|b| branch_index(b) == Some(layers))
            .collect();
        if beyond.is_empty() {
            return Ok(beyond);
        }
        if beyond.contains(&self.current_branch().unwrap_or_default()) {
            let head = format!("refs/heads/{top}");
            self.repo.output(&["symbolic-ref", "HEAD", &head], None)?;
            self.repo.output(&["read-tree", top], None)?;
        }
        for b in &beyond {
            self.repo
                .output(&["update-ref", "-d", &format!("refs/heads/{b}")], None)?;
        }
        Ok(beyond)
    }

    /// The layer branches, in numeric order of N.
    pub fn branches(&self) -> Result<Vec<String>> {
        let out = self
            .repo
            .output(
                &[
                    "for-each-ref",
                    "--format=%(refname:short)",
                    "refs/heads/layer_*",
                ],
                None,
            )
            .context("git for-each-ref")?;
        let mut names: Vec<(usize, String)> = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| branch_index(l).map(|n| (n, l.to_string())))
            .collect();
        names.sort();
        Ok(names.into_iter().map(|(_, n)| n).collect())
    }

    /// Commits the tree as it now stands on disk after layer `index` was applied
    /// with `changes`, on a new branch `layer_<index>_<chain hex>` made from the
    /// previous layer's (an orphan for layer 0). Only the paths the changes touch
    /// are read. A layer git cannot see (chmod only, empty dir) gives an empty commit.
    pub fn commit_layer(
        &mut self,
        index: usize,
        chain_id: &Digest,
        message: &LayerMessage,
        changes: &[Change],
    ) -> Result<String> {
        let branch = branch_name(index, chain_id);
        let parent = match (&self.tip, &self.base) {
            (Some((_, mark)), _) => Some(format!(":{mark}")),
            (None, Some(base)) => Some(base.clone()),
            (None, None) if index == 0 => None,
            (None, None) => bail!("git: layer {index} has no parent commit"),
        };
        if self.pack.as_ref().is_some_and(PackWriter::blob_open) {
            bail!("git: layer {index}: a file's content was not sent completely");
        }
        self.load_tracked()?;
        let marks = self.take_marks(changes);
        let mut ops = self.plan(changes, &marks)?;
        self.pack_files(&mut ops)
            .context("git: packing the layer's files")?;
        // fast-import looks the blobs up by id: their pack must be complete first.
        if let Some(pack) = self.pack.take() {
            pack.finish().context("git: writing the layer's pack")?;
        }
        let mark = self.next_mark;
        self.next_mark += 1;
        let when = crate::clock::now_or_epoch();
        let msg = message.render();
        let ident = self.ident.clone();
        let imp = self.importer()?;
        let w = &mut imp.input;
        let mut head = format!("commit refs/heads/{branch}\nmark :{mark}\n");
        head.push_str(&format!("author {ident} {when} +0000\n"));
        head.push_str(&format!("committer {ident} {when} +0000\n"));
        head.push_str(&format!("data {}\n{msg}\n", msg.len()));
        if let Some(p) = parent {
            head.push_str(&format!("from {p}\n"));
        }
        let res = (|| -> std::io::Result<()> {
            w.write_all(head.as_bytes())?;
            for op in &ops {
                write_op(w, op)?;
            }
            w.write_all(b"\n")
        })();
        if let Err(e) = res {
            return Err(self.importer_failed(e));
        }
        self.tip = Some((branch.clone(), mark));
        Ok(branch)
    }

    /// Ends the import, checks out the top branch and rebuilds the index from it
    /// (keeping stat data of entries that did not change, when a HEAD existed).
    pub fn finish(&mut self) -> Result<()> {
        if let Some(mut imp) = self.importer.take() {
            let r = imp
                .input
                .write_all(b"done\n")
                .and_then(|_| imp.input.flush());
            drop(imp.input);
            let out = imp.child.wait_with_output();
            let out = out.context("git fast-import")?;
            if r.is_err() || !out.status.success() {
                bail!(
                    "git fast-import failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let Some((branch, _)) = self.tip.clone() else {
            return Ok(());
        };
        let full = format!("refs/heads/{branch}");
        self.repo
            .output(&["symbolic-ref", "HEAD", &full], None)
            .context("git symbolic-ref HEAD")?;
        let merged = match &self.base {
            Some(base) => self
                .repo
                .output(&["read-tree", "-m", base, &full], None)
                .is_ok(),
            None => false,
        };
        if !merged {
            self.repo
                .output(&["read-tree", &full], None)
                .context("git read-tree")?;
        }
        self.base = self
            .repo
            .output(&["rev-parse", "--verify", "-q", &full], None)
            .ok()
            .map(|o| String::from_utf8_lossy(&o).trim().to_string());
        self.tip = None;
        self.exclude_nested_repos()
            .context("git: writing .git/info/exclude")
    }

    /// Excludes each directory that still holds an image's own repository and
    /// nothing git tracks, so that `git status` does not list it.
    fn exclude_nested_repos(&mut self) -> std::io::Result<()> {
        let Some(tracked) = &self.tracked else {
            return Ok(());
        };
        let work = &self.repo.work;
        self.nested.retain(|d| {
            let dir = work.join(OsStr::from_bytes(d));
            exclude::holds_git_entry(&dir) && !tracked.contains(d) && !has_under(tracked, d)
        });
        exclude::write(&self.repo.git_dir, &self.nested)
    }

    fn importer(&mut self) -> Result<&mut Importer> {
        if self.importer.is_none() {
            let mut child = self
                .repo
                .command()
                .args([
                    "-c",
                    &format!("pack.compression={IMPORT_COMPRESSION}"),
                    "-c",
                    &format!("core.compression={IMPORT_COMPRESSION}"),
                    // Keep the pack even for a small import: below the default limit
                    // (100 objects, i.e. every `commit`) fast-import re-reads it with
                    // `git unpack-objects` into loose objects, one file each.
                    "-c",
                    "fastimport.unpackLimit=0",
                    // fast-import looks up every blob barge packed; small pack windows
                    // keep the pages it touches from piling up in its memory.
                    "-c",
                    "core.packedGitWindowSize=1m",
                    "-c",
                    "core.packedGitLimit=16m",
                    "fast-import",
                    "--quiet",
                    "--done",
                    "--depth=0",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(spawn_error)?;
            let Some(stdin) = child.stdin.take() else {
                bail!("git fast-import: no input pipe");
            };
            // A bigger pipe means fewer context switches while a layer's file lines
            // (one per path: ~1 MiB for a 10k-file layer) go through.
            // SAFETY: fcntl on a pipe fd we own; failure only leaves the default size.
            unsafe { libc::fcntl(stdin.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
            self.importer = Some(Importer {
                child,
                input: BufWriter::with_capacity(1 << 20, stdin),
            });
        }
        match self.importer.as_mut() {
            Some(i) => Ok(i),
            None => bail!("git fast-import did not start"),
        }
    }

    fn importer_failed(&mut self, e: std::io::Error) -> Error {
        let Some(imp) = self.importer.take() else {
            return Error::from(e).context("git fast-import");
        };
        drop(imp.input);
        let mut child = imp.child;
        let mut err = String::new();
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        let _ = child.wait();
        if err.trim().is_empty() {
            Error::from(e).context("git fast-import")
        } else {
            Error::new(format!("git fast-import failed: {}", err.trim()))
        }
    }

    fn load_tracked(&mut self) -> Result<()> {
        if self.tracked.is_some() {
            return Ok(());
        }
        let mut set = BTreeSet::new();
        if let Some(base) = &self.base {
            let out = self
                .repo
                .output(
                    &["ls-tree", "-r", "-z", "--name-only", "--full-tree", base],
                    None,
                )
                .context("git ls-tree")?;
            for p in out.split(|&b| b == 0).filter(|p| !p.is_empty()) {
                set.insert(p.to_vec());
            }
        }
        self.tracked = Some(set);
        Ok(())
    }

    /// Which paths' blobs, sent while the layer unpacked, may stand for the file:
    /// path → (blob id, file id). Only a path whose last `Put` is the `File` entry that
    /// sent the blob qualifies, and only while no later file of this layer got the
    /// same inode (a reused inode number says nothing about content). If the blobs do
    /// not line up with the `File` puts, none is used.
    fn take_marks(&mut self, changes: &[Change]) -> HashMap<ImagePath, (Oid, (u64, u64))> {
        let fed = std::mem::take(&mut self.fed);
        let mut last_of_id: HashMap<(u64, u64), usize> = HashMap::new();
        for (i, f) in fed.iter().enumerate() {
            if let Some((_, id)) = f.written {
                last_of_id.insert(id, i);
            }
        }
        let mut sent = fed.into_iter().enumerate();
        let mut marks = HashMap::new();
        for c in changes {
            let Change::Put(e) = c else { continue };
            if e.kind != EntryKind::File {
                marks.remove(&e.path);
                continue;
            }
            match sent.next() {
                Some((i, f)) if f.path == e.path => match f.written {
                    Some((oid, id)) if last_of_id.get(&id) == Some(&i) => {
                        marks.insert(f.path, (oid, id));
                    }
                    _ => {
                        marks.remove(&e.path);
                    }
                },
                _ => return HashMap::new(),
            }
        }
        if sent.next().is_some() {
            return HashMap::new();
        }
        marks
    }

    /// Turns a layer's changes into fast-import file commands, updating `tracked`.
    /// A file whose blob was sent (`marks`) and is still that inode names the mark.
    fn plan(
        &mut self,
        changes: &[Change],
        marks: &HashMap<ImagePath, (Oid, (u64, u64))>,
    ) -> Result<Vec<Op>> {
        let mut dels: BTreeSet<&[u8]> = BTreeSet::new();
        let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
        for c in changes {
            match c {
                Change::Put(e) => puts.insert(&e.path),
                Change::Delete(p) => dels.insert(p),
                Change::Opaque(p) => dels.insert(p),
            };
        }
        let tracked = self.tracked.get_or_insert_with(BTreeSet::new);
        let mut ops = Vec::new();
        for p in dels {
            if remove_under(tracked, p, true) {
                ops.push(Op::Delete(p.to_vec()));
            }
        }
        let mut probe = Probe::new(&self.repo.work);
        for p in puts {
            if p.is_empty() {
                continue;
            }
            let disk = probe.get(p);
            let visible = git_visible(p, matches!(disk, Disk::Symlink(_)));
            let is_dir = matches!(disk, Disk::Dir);
            let had_self = tracked.contains(p);
            let had_below = has_under(tracked, p);
            let is_blob = matches!(disk, Disk::File(..) | Disk::Symlink(_));
            if (had_below && !is_dir) || (had_self && !is_blob) {
                remove_under(tracked, p, true);
                ops.push(Op::Delete(p.to_vec()));
            }
            if !visible {
                if let Some(d) = exclude::nested_repo_dir(p) {
                    self.nested.insert(d.to_vec());
                }
                continue;
            }
            match disk {
                Disk::File(exec, id) => {
                    tracked.insert(p.to_vec());
                    match marks.get(p) {
                        Some(&(oid, sent)) if sent == id => {
                            ops.push(Op::Blob(p.to_vec(), exec, oid))
                        }
                        _ => ops.push(Op::File(p.to_vec(), exec)),
                    }
                }
                Disk::Symlink(t) => {
                    tracked.insert(p.to_vec());
                    ops.push(Op::Symlink(p.to_vec(), t));
                }
                Disk::Dir | Disk::Other => {}
            }
        }
        Ok(ops)
    }
}

impl History {
    /// Puts the content of each file read from disk (`Op::File`) into the pack,
    /// turning the op into an `Op::Blob`.
    fn pack_files(&mut self, ops: &mut [Op]) -> std::io::Result<()> {
        for op in ops.iter_mut() {
            if let Op::File(p, exec) = op {
                let oid = self.pack_file(p)?;
                *op = Op::Blob(std::mem::take(p), *exec, oid);
            }
        }
        Ok(())
    }

    /// Packs the file at `p` (relative to the root) as it is on disk now.
    fn pack_file(&mut self, p: &[u8]) -> std::io::Result<Oid> {
        let full = self.repo.work.join(OsStr::from_bytes(p));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&full)?;
        let len = f.metadata()?.len();
        let pack = self.pack()?;
        pack.begin_blob(len)?;
        let mut content = std::io::BufReader::with_capacity(128 * 1024, f.take(len));
        if std::io::copy(&mut content, pack)? != len {
            return Err(std::io::Error::other(format!(
                "{}: file changed while it was being read",
                full.display()
            )));
        }
        pack.end_blob()
    }

    /// The pack of the layer being unpacked, started on first use.
    /// A full pack (4 GiB) is completed and another one started.
    fn pack(&mut self) -> std::io::Result<&mut PackWriter> {
        let pack = match self.pack.take() {
            Some(p) if p.is_full() && !p.blob_open() => {
                p.finish()?;
                PackWriter::create(&self.repo.git_dir.join("objects/pack"))?
            }
            Some(p) => p,
            None => PackWriter::create(&self.repo.git_dir.join("objects/pack"))?,
        };
        Ok(self.pack.insert(pack))
    }
}

/// Writes each regular file of the layer being unpacked into the layer's pack.
impl ContentSink for History {
    /// The pack checks the sequence: one blob at a time, exactly `size` bytes.
    fn begin(&mut self, path: &[u8], size: u64) -> std::io::Result<()> {
        self.pack()?.begin_blob(size)?;
        self.fed.push(Fed {
            path: path.to_vec(),
            written: None,
        });
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.pack()?.blob_data(bytes)
    }

    fn end(&mut self, file_id: (u64, u64)) -> std::io::Result<()> {
        let oid = self.pack()?.end_blob()?;
        if let Some(f) = self.fed.last_mut() {
            f.written = Some((oid, file_id));
        }
        Ok(())
    }
}

impl Drop for History {
    fn drop(&mut self) {
        // An unfinished import is abandoned: no refs are updated.
        if let Some(imp) = self.importer.take() {
            let mut child = imp.child;
            let _ = child.kill();
            drop(imp.input);
            let _ = child.wait();
        }
    }
}

/// Whether `set` holds anything strictly below directory `p`.
fn has_under(set: &BTreeSet<ImagePath>, p: &[u8]) -> bool {
    let mut prefix = p.to_vec();
    prefix.push(b'/');
    set.range(prefix.clone()..)
        .next()
        .is_some_and(|q| q.starts_with(&prefix))
}

/// Removes `p` (if `with_self`) and everything below it from `set`; true if any was there.
fn remove_under(set: &mut BTreeSet<ImagePath>, p: &[u8], with_self: bool) -> bool {
    let mut found = with_self && set.remove(p);
    if p.is_empty() {
        found |= !set.is_empty();
        set.clear();
        return found;
    }
    let mut prefix = p.to_vec();
    prefix.push(b'/');
    let below: Vec<ImagePath> = set
        .range(prefix.clone()..)
        .take_while(|q| q.starts_with(&prefix))
        .cloned()
        .collect();
    found |= !below.is_empty();
    for q in below {
        set.remove(&q);
    }
    found
}

/// One fast-import file command.
enum Op {
    Delete(ImagePath),
    /// Path, executable: content to be read from disk (packed before it is written).
    File(ImagePath, bool),
    /// Path, executable, id of the blob already in a pack.
    Blob(ImagePath, bool, Oid),
    Symlink(ImagePath, Vec<u8>),
}

fn write_op(w: &mut impl Write, op: &Op) -> std::io::Result<()> {
    match op {
        Op::Delete(p) if p.is_empty() => w.write_all(b"deleteall\n"),
        Op::Delete(p) => {
            w.write_all(b"D ")?;
            w.write_all(&quote(p))?;
            w.write_all(b"\n")
        }
        Op::Symlink(p, t) => {
            w.write_all(b"M 120000 inline ")?;
            w.write_all(&quote(p))?;
            write!(w, "\ndata {}\n", t.len())?;
            w.write_all(t)?;
            w.write_all(b"\n")
        }
        Op::Blob(p, exec, oid) => {
            let mode = if *exec { "100755" } else { "100644" };
            write!(w, "M {mode} {} ", pack::hex(oid))?;
            w.write_all(&quote(p))?;
            w.write_all(b"\n")
        }
        Op::File(p, _) => Err(std::io::Error::other(format!(
            "git: {} was not packed",
            String::from_utf8_lossy(p)
        ))),
    }
}

/// A path quoted the way fast-import reads it: `"..."` with C escapes.
fn quote(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len() + 2);
    out.push(b'"');
    for &b in p {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
        }
    }
    out.push(b'"');
    out
}

/// What a path is on disk, as git would see it.
enum Disk {
    /// Regular file; executable by anyone; (st_dev, st_ino).
    File(bool, (u64, u64)),
    Symlink(Vec<u8>),
    Dir,
    /// Missing, below a symlink, or a kind git does not store.
    Other,
}

/// lstat with a cache of which parent directories are real directories.
struct Probe<'a> {
    root: &'a Path,
    dirs: std::collections::HashMap<ImagePath, bool>,
}

impl<'a> Probe<'a> {
    fn new(root: &'a Path) -> Self {
        Probe {
            root,
            dirs: Default::default(),
        }
    }

    fn is_real_dir(&mut self, p: &[u8]) -> bool {
        if p.is_empty() {
            return true;
        }
        if let Some(&d) = self.dirs.get(p) {
            return d;
        }
        let parent_ok = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => self.is_real_dir(&p[..i]),
            None => true,
        };
        let d = parent_ok
            && std::fs::symlink_metadata(self.root.join(OsStr::from_bytes(p)))
                .map(|m| m.is_dir())
                .unwrap_or(false);
        self.dirs.insert(p.to_vec(), d);
        d
    }

    fn get(&mut self, p: &[u8]) -> Disk {
        let parent = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => &p[..i],
            None => b"",
        };
        if !self.is_real_dir(parent) {
            return Disk::Other;
        }
        let full = self.root.join(OsStr::from_bytes(p));
        let Ok(m) = std::fs::symlink_metadata(&full) else {
            return Disk::Other;
        };
        let ft = m.file_type();
        if ft.is_file() {
            Disk::File(m.permissions().mode() & 0o111 != 0, (m.dev(), m.ino()))
        } else if ft.is_symlink() {
            match std::fs::read_link(&full) {
                Ok(t) => Disk::Symlink(t.into_os_string().as_bytes().to_vec()),
                Err(_) => Disk::Other,
            }
        } else if ft.is_dir() {
            Disk::Dir
        } else {
            Disk::Other
        }
    }
}

/// Settings in the repository's own config so that users' global settings cannot
/// change what git stores, plus attributes that turn off content filters and the
/// image's own diff and merge drivers for every git run in the tree (barge's and the
/// user's: `$GIT_DIR/info/attributes` beats the tree's `.gitattributes`).
fn configure(git_dir: &Path) -> Result<()> {
    let mut cfg = std::fs::OpenOptions::new()
        .append(true)
        .open(git_dir.join("config"))
        .context("configure git repository")?;
    cfg.write_all(
        b"[core]\n\tfileMode = true\n\tsymlinks = true\n\tignoreCase = false\n\
          \tautocrlf = false\n\tsafecrlf = false\n\tprecomposeUnicode = false\n\
          \tprotectNTFS = false\n\tprotectHFS = false\n\tlogAllRefUpdates = true\n\
          [gc]\n\tauto = 0\n",
    )
    .context("configure git repository")?;
    std::fs::create_dir_all(git_dir.join("info")).context("configure git repository")?;
    std::fs::write(
        git_dir.join("info/attributes"),
        "* -text -filter -ident -eol -working-tree-encoding !diff !merge\n",
    )
    .context("configure git repository")?;
    Ok(())
}

/// `Name <email>` for commits: the user's own, else barge's.
fn identity(repo: &Repo) -> Result<String> {
    let get = |key: &str| -> Result<Option<String>> {
        let out = repo
            .command()
            .args(["config", "--get", key])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(spawn_error)?;
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok((out.status.success() && !v.is_empty()).then_some(v))
    };
    let clean = |s: String| s.replace(['<', '>', '\n'], "");
    match (get("user.name")?, get("user.email")?) {
        (Some(n), Some(e)) => Ok(format!("{} <{}>", clean(n), clean(e))),
        _ => Ok("barge <barge@localhost>".to_string()),
    }
}

/// The second wall (the first: an image cannot reach barge's repository, see
/// `pull`): `-c` settings on every git barge runs. The command line beats every
/// config file, so even a config an image managed to plant could not turn these
/// back on; barge's own commands (init, config, fast-import, read-tree,
/// symbolic-ref, rev-parse, for-each-ref, ls-tree) need none of what they switch off.
const WALL: &[&str] = &[
    // Hooks are programs git runs by itself: `reference-transaction` on every ref
    // fast-import and symbolic-ref update, `post-checkout`, `post-index-change`, ...
    // No hook directory, no hook.
    "core.hooksPath=/dev/null",
    // fsmonitor is a program (or a hook) git starts to learn what changed in the tree.
    "core.fsmonitor=false",
    // The untracked cache keeps directory listings in the index and trusts them on
    // later runs: nothing barge needs, and index state it did not ask for.
    "core.untrackedCache=false",
    // A pager is a program; `--no-pager` too, and `pager.<command>` needs a terminal.
    "core.pager=cat",
    // Editors, ssh, askpass and credential helpers are programs; barge runs no
    // command that edits or talks to a remote, and these make sure none would start.
    "core.editor=false",
    "core.sshCommand=false",
    "core.askPass=false",
    "credential.helper=",
    // Remote helpers (`ext::` runs any command): no transport at all.
    "protocol.allow=never",
    // Automatic gc and maintenance start more git processes (and their hooks).
    "gc.auto=0",
    "maintenance.auto=false",
];

/// Puts `c` (a `git` command with no arguments yet) behind the second wall: the
/// [`WALL`] settings, no pager, and an environment that cannot redirect git.
fn harden(c: &mut Command) {
    // Every `GIT_*` variable can redirect git or make it run something:
    // GIT_DIR/GIT_WORK_TREE/GIT_INDEX_FILE/GIT_OBJECT_DIRECTORY and
    // GIT_ALTERNATE_OBJECT_DIRECTORIES (another repository), GIT_CONFIG_PARAMETERS,
    // GIT_CONFIG_COUNT/_KEY_n/_VALUE_n and GIT_CONFIG_GLOBAL/SYSTEM (config beside
    // the command line), GIT_PAGER, GIT_EXTERNAL_DIFF, GIT_EDITOR, GIT_SSH(_COMMAND),
    // GIT_ASKPASS, GIT_EXEC_PATH (other git programs). An enclosing git (barge run
    // from a hook) sets some of them. None is passed on.
    for (k, _) in std::env::vars_os() {
        if k.as_bytes().starts_with(b"GIT_") {
            c.env_remove(k);
        }
    }
    c.env_remove("SSH_ASKPASS");
    c.env("GIT_TERMINAL_PROMPT", "0");
    c.arg("--no-pager");
    for s in WALL {
        c.arg("-c").arg(s);
    }
}

fn spawn_error(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::new("git not found: install git to use -g")
    } else {
        Error::from(e).context("run git")
    }
}

/// Runs `cmd` with `args` and returns its stdout; its stderr becomes the error message.
fn run_output(mut cmd: Command, args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>> {
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(spawn_error)?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(data).context("write to git")?;
    }
    let out = child.wait_with_output().context("run git")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        bail!(
            "git {} failed{}",
            args.first().copied().unwrap_or(""),
            if err.is_empty() {
                String::new()
            } else {
                format!(": {err}")
            }
        );
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::testutil::{git, tmpdir, write};
    use crate::layer::entry::{Entry, EntryKind};
    use crate::manifest::chain_id;

    fn put(path: &[u8]) -> Change {
        Change::Put(Entry {
            path: path.to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link: None,
            rdev: None,
            xattrs: vec![],
            content: None,
        })
    }

    fn msg(t: &str) -> LayerMessage {
        LayerMessage {
            title: t.into(),
            trailers: vec![("Size".into(), "1".into())],
        }
    }

    /// Writes `path` and sends its content through the sink, as unpacking does.
    fn feed(h: &mut History, root: &Path, path: &str, data: &str) {
        let f = root.join(path);
        std::fs::write(&f, data).unwrap();
        h.begin(path.as_bytes(), data.len() as u64).unwrap();
        h.data(data.as_bytes()).unwrap();
        let m = std::fs::metadata(&f).unwrap();
        h.end((m.dev(), m.ino())).unwrap();
    }

    #[test]
    fn blobs_sent_while_unpacking_are_used_only_while_on_disk() {
        let root = tmpdir("git-sink");
        let mut h = History::init(&root).unwrap();
        std::os::unix::fs::symlink(".", root.join("lnk")).unwrap();
        let mut link = put(b"d");
        if let Change::Put(e) = &mut link {
            e.kind = EntryKind::Symlink;
        }
        // "a" is kept. "b" is replaced through a symlinked parent (its inode number
        // may be reused): the disk wins. "c" is sent twice: the second counts. "d"
        // becomes a symlink. "e" is rewritten in place, which unpacking never does:
        // git gets what was sent, proving the sent blob is used. "f" is replaced like
        // "b" while a hardlink keeps its inode alive, so the new one gets another.
        feed(&mut h, &root, "a", "sent a");
        feed(&mut h, &root, "e", "sent e");
        std::fs::write(root.join("e"), "disk e").unwrap();
        feed(&mut h, &root, "f", "sent f");
        std::fs::hard_link(root.join("f"), root.join("g")).unwrap();
        std::fs::remove_file(root.join("f")).unwrap();
        feed(&mut h, &root, "lnk/f", "disk f");
        feed(&mut h, &root, "b", "sent b");
        std::fs::remove_file(root.join("b")).unwrap();
        feed(&mut h, &root, "lnk/b", "disk b");
        feed(&mut h, &root, "c", "first c");
        std::fs::remove_file(root.join("c")).unwrap();
        feed(&mut h, &root, "c", "second c");
        feed(&mut h, &root, "d", "sent d");
        std::fs::remove_file(root.join("d")).unwrap();
        std::os::unix::fs::symlink("a", root.join("d")).unwrap();
        let mut hardlink = put(b"g");
        if let Change::Put(e) = &mut hardlink {
            e.kind = EntryKind::Hardlink;
        }
        let changes = vec![
            put(b"a"),
            put(b"e"),
            put(b"f"),
            hardlink,
            put(b"lnk/f"),
            put(b"b"),
            put(b"lnk/b"),
            put(b"c"),
            put(b"c"),
            put(b"d"),
            link,
            Change::Put(Entry {
                kind: EntryKind::Symlink,
                ..match put(b"lnk") {
                    Change::Put(e) => e,
                    _ => unreachable!(),
                }
            }),
        ];
        let c = chain_id(None, &Digest::of_bytes(b"l"));
        h.commit_layer(0, &c, &msg("l"), &changes).unwrap();
        std::fs::write(root.join("e"), "sent e").unwrap();
        // Nothing sent for this layer: files are read from disk.
        std::fs::write(root.join("a"), "disk a").unwrap();
        let c = chain_id(Some(&c), &Digest::of_bytes(b"m"));
        h.commit_layer(1, &c, &msg("m"), &[put(b"a")]).unwrap();
        h.finish().unwrap();
        for (p, want) in [
            ("a", "disk a"),
            ("b", "disk b"),
            ("c", "second c"),
            ("e", "sent e"),
            ("f", "disk f"),
            ("g", "sent f"),
            ("d", "a"),
        ] {
            assert_eq!(git(&root, &["show", &format!("HEAD:{p}")]), want, "{p}");
        }
        assert_eq!(git(&root, &["show", "HEAD~1:a"]), "sent a");
        assert_eq!(git(&root, &["status", "--porcelain"]), "");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn branch_names_round_trip() {
        let a = Digest::of_bytes(b"a");
        let b = branch_name(11, &a);
        assert_eq!(branch_index(&b), Some(11));
        assert_eq!(branch_index("layer_1_abc"), None);
        assert_eq!(branch_index("main"), None);
    }

    #[test]
    fn visibility_rules() {
        assert!(git_visible(b"usr/src/app/main.c", false));
        assert!(!git_visible(b"usr/src/app/.git/HEAD", false));
        assert!(!git_visible(b"a/.GIT", false));
        assert!(git_visible(b"a/.gitignore", false));
        assert!(git_visible(b"a/.gitmodules", false));
        assert!(!git_visible(b"a/.gitmodules", true));
    }

    #[test]
    fn layers_with_hostile_names_deletions_and_empty_commits() {
        let root = tmpdir("git");
        let names: Vec<&[u8]> = vec![
            b"plain",
            b"with space",
            b"new\nline",
            b"quote\"back\\slash",
            b"\xff\xfe latin",
            b"git~1",
            b".gitignore",
            b"d/x",
            b"d/y",
        ];
        std::fs::create_dir_all(root.join("d")).unwrap();
        for n in &names {
            std::fs::write(root.join(OsStr::from_bytes(n)), n).unwrap();
        }
        // An ignore file in the image must not hide files from git's view.
        std::fs::write(root.join(".gitignore"), "*\n").unwrap();
        write(&root, "app/.git/HEAD", "ref: refs/heads/main\n");
        write(&root, "app/.git/config", "");
        std::fs::create_dir_all(root.join("app/.git/objects")).unwrap();
        std::fs::create_dir_all(root.join("app/.git/refs")).unwrap();
        write(&root, "app/src.c", "int x;\n");
        let mut changes: Vec<Change> = names.iter().map(|n| put(n)).collect();
        changes.push(put(b"app/.git/HEAD"));
        changes.push(put(b"app/src.c"));
        let mut h = History::init(&root).unwrap();
        let mut chain = None;
        let mut branches = Vec::new();
        for i in 0..12 {
            let diff = Digest::of_bytes(format!("layer{i}").as_bytes());
            let c = chain_id(chain.as_ref(), &diff);
            let ch: Vec<Change> = match i {
                0 => changes.clone(),
                1 => {
                    std::fs::remove_dir_all(root.join("d")).unwrap();
                    write(&root, "d", "now a file");
                    vec![put(b"d")]
                }
                2 => {
                    std::fs::remove_file(root.join("plain")).unwrap();
                    vec![Change::Delete(b"plain".to_vec())]
                }
                _ => vec![], // chmod-only or empty-dir layers: nothing for git
            };
            branches.push(
                h.commit_layer(i, &c, &msg(&format!("layer {i}")), &ch)
                    .unwrap(),
            );
            chain = Some(c);
        }
        h.finish().unwrap();
        let h = History::open(&root).unwrap();
        assert_eq!(h.branches().unwrap(), branches);
        assert_eq!(h.current_branch().unwrap(), branches[11]);
        let files = git(&root, &["ls-files", "-z"]);
        let mut files: Vec<&str> = files.split('\0').filter(|s| !s.is_empty()).collect();
        files.sort();
        assert_eq!(files.len(), 8, "{files:?}");
        assert!(files.contains(&"d") && files.contains(&"app/src.c") && !files.contains(&"plain"));
        assert_eq!(git(&root, &["status", "--porcelain"]), "");
        let log = git(
            &root,
            &[
                "log",
                "--format=%s|%(trailers:key=Size,valueonly)",
                &branches[2],
            ],
        );
        assert!(log.starts_with("layer 2|1"), "{log}");
        assert_eq!(git(&root, &["rev-list", "--count", "HEAD"]).trim(), "12");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn every_git_command_carries_the_wall() {
        let repo = Repo::of_root(Path::new("/nonexistent/root"));
        let c = repo.command();
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args.first().map(String::as_str), Some("--no-pager"));
        for w in WALL {
            let i = args.iter().position(|a| a == w).expect(w);
            assert_eq!(args[i - 1], "-c", "{w}");
        }
        for w in ["core.hooksPath=/dev/null", "core.fsmonitor=false"] {
            assert!(WALL.contains(&w), "{w}");
        }
        let n = args.len();
        assert_eq!(
            args[n - 4..],
            [
                "--git-dir",
                "/nonexistent/root/.git",
                "--work-tree",
                "/nonexistent/root"
            ]
        );
        let envs: HashMap<_, _> = c.get_envs().collect();
        assert_eq!(
            envs.get(OsStr::new("GIT_TERMINAL_PROMPT")),
            Some(&Some(OsStr::new("0")))
        );
        for (k, _) in std::env::vars_os() {
            if k.as_bytes().starts_with(b"GIT_") && k != "GIT_TERMINAL_PROMPT" {
                assert_eq!(envs.get(k.as_os_str()), Some(&None), "{k:?}");
            }
        }
    }

    /// Hooks and fsmonitor planted in the repository run for a plain `git`, and
    /// for none of barge's.
    #[test]
    fn planted_hooks_and_fsmonitor_never_run_for_barge() {
        let root = tmpdir("git-wall");
        let marker = root.with_extension("marker");
        let _ = std::fs::remove_file(&marker);
        let mut h = History::init(&root).unwrap();
        write(&root, "a", "a");
        let c = chain_id(None, &Digest::of_bytes(b"a"));
        h.commit_layer(0, &c, &msg("a"), &[put(b"a")]).unwrap();
        h.finish().unwrap();
        drop(h);
        let script = format!("#!/bin/sh\necho \"$0\" >> {}\n", marker.display());
        for hook in [
            "reference-transaction",
            "post-checkout",
            "post-index-change",
        ] {
            write(&root, &format!(".git/hooks/{hook}"), &script);
            std::fs::set_permissions(
                root.join(format!(".git/hooks/{hook}")),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
        }
        let cfg = root.join(".git/config");
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push_str(&format!(
            "[core]\n\tfsmonitor = \"echo fsmonitor >> {}; false\"\n\tpager = \"echo pager >> {}; cat\"\n",
            marker.display(),
            marker.display()
        ));
        std::fs::write(&cfg, text).unwrap();
        // barge's git: a new layer (fast-import updates a ref), HEAD moved, index
        // rebuilt, and a status for the fsmonitor.
        let mut h = History::open(&root).unwrap();
        write(&root, "b", "b");
        let c = chain_id(Some(&c), &Digest::of_bytes(b"b"));
        h.commit_layer(1, &c, &msg("b"), &[put(b"b")]).unwrap();
        h.finish().unwrap();
        h.repo.output(&["status", "--porcelain"], None).unwrap();
        h.repo
            .output(&["update-ref", "refs/heads/x", "HEAD"], None)
            .unwrap();
        assert!(!marker.exists(), "{:?}", std::fs::read_to_string(&marker));
        // The same repository with a plain git does run them: the test can fail.
        git(&root, &["update-ref", "refs/heads/y", "HEAD"]);
        git(&root, &["status", "--porcelain"]);
        let ran = std::fs::read_to_string(&marker).unwrap();
        assert!(ran.contains("reference-transaction"), "{ran}");
        assert!(ran.contains("fsmonitor"), "{ran}");
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_file(&marker).unwrap();
    }
}
