//! `barge status`: what `barge commit` would take from a barge tree, one line per
//! path (`A` added, `M` changed, with what changed, `D` deleted), and which layer
//! the tree is on. It runs the very diff commit runs ([`crate::commit::changes_at`]),
//! so metadata git cannot see (owners, modes, xattrs, hardlinks, devices) shows too.

use crate::commit::{changes_at, head_layer, lock};
use crate::error::Result;
use crate::git::History;
use crate::layer::entry::{Change, Entry, EntryKind};
use crate::store::{esc, Record, Tree};
use std::path::PathBuf;

/// What `barge status` was asked to do.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub root: PathBuf,
    /// Only the change lines: no header, nothing when clean.
    pub quiet: bool,
}

/// Runs `barge status`, printing to stdout.
pub fn run(opts: &StatusOptions) -> Result<()> {
    let root = &opts.root;
    // It may save the refreshed stat cache: not while a commit writes the record.
    let _lock = lock(root)?;
    let mut record = Record::load(root)?;
    let history = History::open(root)?;
    let (at, branch) = head_layer(root, &record, &history)?;
    let top = record.layers.len() - 1;
    let base = record.tree_at(at);
    let found = changes_at(root, &mut record, at)?;
    if !opts.quiet {
        println!("{}", where_line(at, top, &branch));
        if at != top {
            println!(
                "(an older layer: `barge commit` needs the top one, `barge checkout {top} -r {}`)",
                root.display()
            );
        }
    }
    for c in &found.changes {
        println!("{}", change_line(c, &base));
    }
    if !opts.quiet && found.changes.is_empty() {
        println!("nothing to commit, the tree is exactly {branch}");
    }
    Ok(())
}

fn where_line(at: usize, top: usize, branch: &str) -> String {
    if at == top {
        format!("On {branch} (layer {at}, the top)")
    } else {
        format!("On {branch} (layer {at} of 0..{top})")
    }
}

/// `A  path`, `D  path` or `M  path (what changed)`.
pub fn change_line(c: &Change, base: &Tree) -> String {
    match c {
        Change::Put(e) => match base.entries.get(&e.path) {
            None => format!("A  {}", esc_path(&e.path)),
            Some(old) => format!(
                "M  {} ({})",
                esc_path(&e.path),
                what_changed(&old.entry, e).join(", ")
            ),
        },
        Change::Delete(p) => format!("D  {}", esc_path(p)),
        Change::Opaque(p) => format!("D  {}/* (opaque)", esc_path(p)),
    }
}

/// The root shows as `.`; other paths escaped as the record escapes them.
fn esc_path(p: &[u8]) -> String {
    if p.is_empty() {
        ".".to_string()
    } else {
        esc(p)
    }
}

/// What differs between the recorded entry and the one on disk, in words.
fn what_changed(old: &Entry, new: &Entry) -> Vec<String> {
    let class = |k: EntryKind| match k {
        EntryKind::Hardlink => EntryKind::File,
        k => k,
    };
    if class(old.kind) != class(new.kind) {
        return vec![format!(
            "type {} → {}",
            kind_name(old.kind),
            kind_name(new.kind)
        )];
    }
    let mut out = Vec::new();
    if old.content != new.content || old.size != new.size {
        out.push("content".to_string());
    }
    if old.mode != new.mode {
        out.push(format!("mode {:04o} → {:04o}", old.mode, new.mode));
    }
    if (old.uid, old.gid) != (new.uid, new.gid) {
        out.push(format!(
            "owner {}:{} → {}:{}",
            old.uid, old.gid, new.uid, new.gid
        ));
    }
    if old.xattrs != new.xattrs {
        out.push("xattrs".to_string());
    }
    if old.kind == EntryKind::Symlink && old.link != new.link {
        let l = |x: &Option<Vec<u8>>| esc(x.as_deref().unwrap_or_default());
        out.push(format!("link {} → {}", l(&old.link), l(&new.link)));
    }
    if old.rdev != new.rdev {
        out.push("device numbers".to_string());
    }
    if out.is_empty() && (old.kind != new.kind || old.link != new.link) {
        out.push("hardlinks".to_string());
    }
    if out.is_empty() && old.mtime != new.mtime {
        out.push("mtime".to_string());
    }
    if out.is_empty() {
        out.push("hardlink group".to_string());
    }
    out
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File | EntryKind::Hardlink => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::CharDevice => "char device",
        EntryKind::BlockDevice => "block device",
        EntryKind::Fifo => "fifo",
    }
}
