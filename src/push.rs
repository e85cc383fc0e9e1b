//! `barge push`: write the image whose top layer is DIR's checked-out branch to
//! any destination (a registry, an OCI layout, …) through [`crate::copy::copy`]:
//! blobs the target already has are skipped; on the same registry they are
//! mounted from the repository the image was pulled from; else they come from
//! barge's own blob store (layers it made) or are streamed from the image's
//! source, digest-checked on the way. The manifest goes last, so a push that
//! fails anywhere leaves the tag (or the layout's index.json) where it was.

use crate::bail;
use crate::copy::{self, Select, Words};
use crate::error::{Context, Error, Result};
use crate::image::transport::Transport;
use crate::image::tree::TreeSource;
use crate::image::{open_dest, ImageSource, OpenOptions};
use crate::manifest::{self, Fetched, Manifest, Platform};
use crate::progress::{Output, Progress};
use crate::registry::client::TransportOptions;
use crate::store::Record;
use std::path::PathBuf;

pub struct PushOptions {
    pub name: String,
    pub dir: PathBuf,
    pub user: Option<String>,
    pub password_stdin: bool,
    pub progress: Progress,
    pub transport: TransportOptions,
}

const PUSH_WORDS: Words = Words {
    verb: "Pushing",
    present: " (already pushed)",
};

pub fn run(opts: &PushOptions) -> Result<()> {
    let out = Output::new(opts.progress);
    let target = Transport::parse(&opts.name)?;
    if target.registry().is_some_and(|r| r.digest.is_some()) {
        bail!("push takes NAME[:TAG], not a digest");
    }
    let record = Record::load(&opts.dir)?;
    check_clean(&opts.dir, &record)?;
    parse_record_manifest(&record.manifest)?;
    let origin_opts = OpenOptions {
        transport: opts.transport.clone(),
        ..OpenOptions::default()
    };
    let mut src = TreeSource::new(&opts.dir, &record, origin_opts);
    let dest_opts = OpenOptions {
        user: opts.user.as_deref(),
        password_stdin: opts.password_stdin,
        transport: opts.transport.clone(),
        mirrors: None,
    };
    let dst = open_dest(&target, &dest_opts, src.registry_origin().as_ref())?;
    let name = dst.name();
    out.line(format!("Pushing image {name} ..."));
    let select = Select::Platform(Platform::host());
    let digest = copy::copy(&mut src, dst, &select, &PUSH_WORDS, &out)?;
    out.line(format!("Done: {name}@{digest}"));
    Ok(())
}

/// Refuses a tree that is not on its top layer or has uncommitted changes.
fn check_clean(dir: &std::path::Path, record: &Record) -> Result<()> {
    let history = crate::git::History::open(dir)?;
    let branches = history.branches()?;
    let current = history.current_branch()?;
    if branches.last() != Some(&current) {
        bail!(
            "{} has {current} checked out, not the top layer branch",
            dir.display()
        );
    }
    let diff = crate::layer::diff::diff(dir, record.tree())?;
    if !diff.changes.is_empty() {
        return Err(Error::new(format!(
            "{} has {} uncommitted changes",
            dir.display(),
            diff.changes.len()
        ))
        .hint(format!(
            "run `barge commit -r {} -m MESSAGE` first",
            dir.display()
        )));
    }
    Ok(())
}

fn parse_record_manifest(bytes: &[u8]) -> Result<Manifest> {
    match manifest::parse_manifest(bytes, None).context("recorded manifest")? {
        Fetched::Manifest(m) => Ok(m),
        Fetched::Index(_) => bail!("recorded manifest is an index: the record is damaged"),
    }
}
