//! `barge push`: upload the image whose top layer is DIR's checked-out branch.
//! Blobs the target already has are skipped; on the same registry they are
//! mounted from the repository the image was pulled from; else they come from
//! barge's own blob store (layers it made) or are streamed from the source
//! registry, digest-checked on the way. The manifest goes last, so a push that
//! fails anywhere leaves the tag where it was.

use crate::bail;
use crate::digest::Digest;
use crate::error::{Context, Error, Result};
use crate::manifest::{self, Descriptor, Fetched, Manifest};
use crate::progress::{count, human_bytes, Output, Progress};
use crate::pull::{meter_label, resolve_credentials};
use crate::reference::Reference;
use crate::registry::auth;
use crate::registry::client::{Registry, TransportOptions};
use crate::registry::fetch::BlobReader;
use crate::registry::source::Checked;
use crate::registry::upload::{self, Mount};
use crate::signal::Interruptible;
use crate::store::{self, Record};
use std::path::PathBuf;

pub struct PushOptions {
    pub name: String,
    pub dir: PathBuf,
    pub user: Option<String>,
    pub password_stdin: bool,
    pub progress: Progress,
    pub transport: TransportOptions,
}

/// Where a blob's bytes come from when the target lacks it.
enum Source {
    /// barge made it at commit: `.git/barge/blobs/…`.
    Local(PathBuf),
    /// It came from another repository: mount it (same registry) or stream it.
    Remote,
}

/// The repository the image was pulled from, and a connection to it when needed.
struct Origin {
    reference: Option<Reference>,
    registry: Option<Registry>,
}

pub fn run(opts: &PushOptions) -> Result<()> {
    let out = Output::new(opts.progress);
    let target = Reference::parse(&opts.name)?;
    if target.digest.is_some() {
        bail!("push takes NAME[:TAG], not a digest");
    }
    let record = Record::load(&opts.dir)?;
    check_clean(&opts.dir, &record)?;
    let manifest = parse_record_manifest(&record.manifest)?;
    let mut origin = Origin {
        reference: Reference::parse(&record.source).ok(),
        registry: None,
    };
    let mut reg = target_registry(&target, &origin, opts)?;
    out.line(format!("Pushing image {target} ..."));
    let layers = &manifest.layers;
    out.line(format!("Pushing {}:", count(layers.len(), "layer")));
    out.start(layers.len(), manifest::total_size(layers));
    let mut starts = start_blobs(&mut reg, &target, &manifest, &origin, &opts.dir)?;
    let sent = put_small_blobs(&mut reg, &manifest, &mut starts, &record.config, &opts.dir)?;
    let mut starts = starts.into_iter();
    for (i, desc) in manifest.layers.iter().enumerate() {
        let start = starts.next().flatten();
        let how = match sent[i] {
            true => "",
            false => push_blob(&mut reg, desc, start, &mut origin, opts, &out)?,
        };
        out.layer_done(
            desc.size,
            format!(
                "\t{} ({}) ... done{how}",
                desc.digest,
                human_bytes(desc.size)
            ),
        );
    }
    let config_start = starts.next().flatten();
    if !sent[manifest.layers.len()] {
        push_config(&mut reg, &manifest.config, config_start, &record.config)?;
    }
    let tag = target.tag.clone().unwrap_or_else(|| "latest".to_string());
    let digest = upload::put_manifest(
        &mut reg,
        &target.repository,
        &tag,
        &manifest.media_type,
        &record.manifest,
    )?;
    out.line(format!("Done: {target}@{digest}"));
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

/// The target registry, with push scope (and pull on the origin, for mounts).
fn target_registry(target: &Reference, origin: &Origin, opts: &PushOptions) -> Result<Registry> {
    let creds = resolve_credentials(opts.user.as_deref(), opts.password_stdin, target)?;
    let mut scopes = vec![auth::scope(&target.repository, &["pull", "push"])];
    if let Some(src) = origin
        .reference
        .as_ref()
        .filter(|s| same_registry(s, target) && s.repository != target.repository)
    {
        scopes.push(auth::scope(&src.repository, &["pull"]));
    }
    Registry::new(target, creds, &opts.transport, scopes)
}

fn same_registry(a: &Reference, b: &Reference) -> bool {
    a.api_host() == b.api_host()
}

/// How each blob (the layers, then the config) starts: `None` when the target has
/// it, else a mount or a new session. Two pipelined flights for all blobs: the
/// HEADs, then the mounts and session POSTs.
fn start_blobs(
    reg: &mut Registry,
    target: &Reference,
    manifest: &Manifest,
    origin: &Origin,
    dir: &std::path::Path,
) -> Result<Vec<Option<Mount>>> {
    let repo = &target.repository;
    let all: Vec<&Descriptor> = manifest.layers.iter().chain([&manifest.config]).collect();
    let digests: Vec<Digest> = all.iter().map(|d| d.digest.clone()).collect();
    let have = upload::blob_sizes(reg, repo, &digests)?;
    let mount_from = origin
        .reference
        .as_ref()
        .filter(|src| same_registry(src, target) && src.repository != *repo)
        .map(|src| src.repository.as_str());
    let config = &manifest.config.digest;
    let wants: Vec<(&Digest, Option<&str>)> = all
        .iter()
        .zip(&have)
        .filter(|(_, have)| have.is_none())
        .map(|(d, _)| {
            let local = &d.digest == config || store::blob_path(dir, &d.digest).is_file();
            (&d.digest, if local { None } else { mount_from })
        })
        .collect();
    let mut begun = upload::begin_all(reg, repo, &wants)?.into_iter();
    Ok(have
        .iter()
        .map(|h| if h.is_some() { None } else { begun.next() })
        .collect())
}

/// Blobs up to this size go up together in one flight, without a meter of their own
/// (larger ones get one while they upload).
const BATCHED: u64 = 64 << 10;

/// Sends the small blobs barge holds (its own layers up to 64 KiB, the config) in
/// one pipelined flight; says which went. The sessions of those the registry did
/// not take stay in `starts`, to go the ordinary way.
fn put_small_blobs(
    reg: &mut Registry,
    manifest: &Manifest,
    starts: &mut [Option<Mount>],
    config: &[u8],
    dir: &std::path::Path,
) -> Result<Vec<bool>> {
    let all: Vec<&Descriptor> = manifest.layers.iter().chain([&manifest.config]).collect();
    let mut held: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, d) in all.iter().enumerate() {
        if !matches!(starts[i], Some(Mount::Session(_))) || d.size > BATCHED {
            continue;
        }
        let bytes = if i + 1 == all.len() {
            config.to_vec()
        } else {
            let path = store::blob_path(dir, &d.digest);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() && m.len() == d.size => {
                    std::fs::read(&path).with_context(|| format!("read {}", path.display()))?
                }
                _ => continue,
            }
        };
        crate::digest::verify("local blob", &d.digest, &Digest::of_bytes(&bytes))?;
        held.push((i, bytes));
    }
    let mut sent = vec![false; all.len()];
    let mut smalls = Vec::new();
    for (i, bytes) in &held {
        if let Some(Mount::Session(upload)) = starts[*i].take() {
            sent[*i] = true;
            smalls.push(upload::Small {
                upload,
                digest: &all[*i].digest,
                bytes,
            });
        }
    }
    for back in upload::put_all(reg, smalls)? {
        if let Some(i) = (0..all.len()).find(|&i| sent[i] && all[i].digest == *back.digest) {
            sent[i] = false;
            starts[i] = Some(Mount::Session(back.upload));
        }
    }
    Ok(sent)
}

/// Makes sure the target has one layer blob, started as `start` says (`None`:
/// it is there); says how (`""`, ` (already pushed)`, …).
fn push_blob(
    reg: &mut Registry,
    desc: &Descriptor,
    start: Option<Mount>,
    origin: &mut Origin,
    opts: &PushOptions,
    out: &Output,
) -> Result<&'static str> {
    let session = match start {
        None => return Ok(" (already pushed)"),
        Some(Mount::Mounted) => return Ok(" (mounted)"),
        Some(Mount::Session(s)) => s,
    };
    let local = store::blob_path(&opts.dir, &desc.digest);
    let source = if local.is_file() {
        Source::Local(local)
    } else {
        Source::Remote
    };
    let mut meter = out.meter(&meter_label(&desc.digest), Some(desc.size));
    let mut progress = |n: u64| meter.add(n);
    match source {
        Source::Local(path) => {
            let file =
                std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
            let mut checked = Checked::new(Interruptible(file));
            session.send(reg, &mut checked, &desc.digest, desc.size, &mut progress)?;
            crate::digest::verify("local blob", &desc.digest, &checked.finish().0)?;
        }
        Source::Remote => {
            let src = origin.connect(opts)?;
            let (src_reg, src_ref) = src;
            let blob = BlobReader::open(src_reg, &src_ref.repository, &desc.digest, desc.size)?;
            let mut checked = Checked::new(blob);
            session.send(reg, &mut checked, &desc.digest, desc.size, &mut progress)?;
            crate::digest::verify("streamed blob", &desc.digest, &checked.finish().0)?;
        }
    }
    meter.finish();
    Ok("")
}

impl Origin {
    /// A connection to the source repository, to stream blobs from.
    fn connect(&mut self, opts: &PushOptions) -> Result<(&mut Registry, &Reference)> {
        let Some(src) = self.reference.as_ref() else {
            bail!("a layer is neither in the target, nor in barge's blob store, nor in a known source repository");
        };
        if self.registry.is_none() {
            let creds = resolve_credentials(None, false, src)?;
            let scopes = vec![auth::scope(&src.repository, &["pull"])];
            self.registry = Some(Registry::new(src, creds, &opts.transport, scopes)?);
        }
        match self.registry.as_mut() {
            Some(r) => Ok((r, src)),
            None => bail!("no connection to {src}"),
        }
    }
}

/// The config blob, from the record's bytes.
fn push_config(
    reg: &mut Registry,
    desc: &Descriptor,
    start: Option<Mount>,
    config: &[u8],
) -> Result<()> {
    crate::digest::verify("recorded config", &desc.digest, &Digest::of_bytes(config))?;
    let session = match start {
        None | Some(Mount::Mounted) => return Ok(()),
        Some(Mount::Session(s)) => s,
    };
    let mut data = std::io::Cursor::new(config);
    session.send(
        reg,
        &mut data,
        &desc.digest,
        config.len() as u64,
        &mut |_| {},
    )
}
