//! `barge pull`: resolve the image (index → platform → manifest → config),
//! stream each layer into a staging root while checking every digest, then move
//! the finished tree into place. On any failure the target is left as it was.
//! With `-g`, the git repository stays beside the root the layers are applied to
//! (out of any entry's reach) and becomes `DIR/.git` only after the last layer.

use crate::bail;
use crate::bundle::{self, BundleOptions};
use crate::digest::{self, Digest, HashReader};
use crate::error::{Context, Error, Result};
use crate::git::{History, LayerMessage, Repo};
use crate::image::transport::Transport;
use crate::image::{self, ImageSource, OpenOptions};
use crate::layer::entry::Change;
use crate::layer::fsroot::Root;
use crate::layer::gzip::GzipReader;
use crate::layer::leftovers;
use crate::layer::stage::{self, Stage};
use crate::layer::unpack::{apply_layer_with, ContentSink, UnpackOptions, UnpackStats};
use crate::layer::zstd::ZstdReader;
use crate::manifest::{self, Compression, Descriptor, Fetched, ImageConfig, Manifest, Platform};
use crate::progress::{count, human_bytes, MeterReader, Output, Progress};
use crate::reference::Reference;
use crate::registry::client::TransportOptions;
use crate::registry::credentials::{self, Credentials};
use crate::signal::Interruptible;
use crate::store::{self, LayerRecord, Record};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// What `barge pull` was asked to do.
pub struct PullOptions {
    pub image: String,
    pub dir: PathBuf,
    pub user: Option<String>,
    pub password_stdin: bool,
    pub platform: Option<String>,
    pub progress: Progress,
    pub git: bool,
    /// Skip the syncs that make the tree survive a power cut once "Done" is printed.
    pub no_sync: bool,
    pub transport: TransportOptions,
    /// `--bundle`: `dir` is an OCI runtime bundle, the tree in its `rootfs/`.
    pub bundle: Option<BundleOptions>,
    /// `--initramfs FILE`: also (or only, without `-r`) write a bootable archive.
    pub initramfs: Option<crate::initramfs::InitramfsOptions>,
}

/// The resolved image: what the registry says it is made of.
pub struct ResolvedImage {
    pub manifest_bytes: Vec<u8>,
    pub manifest: Manifest,
    pub config_bytes: Vec<u8>,
    pub config: ImageConfig,
}

/// Configs are small; anything past this is not an image config.
const MAX_CONFIG: u64 = 8 << 20;

pub fn run(opts: &PullOptions) -> Result<()> {
    let out = Output::new(opts.progress);
    let transport = Transport::parse(&opts.image)?;
    let platform = opts.platform.as_deref().map(Platform::parse).transpose()?;
    let removed = stage::remove_dead_staging(&opts.dir)?;
    if let Some(line) = leftovers::report(&removed) {
        out.line(line);
    }
    check_target_is_free(&opts.dir)?;
    let open = OpenOptions {
        user: opts.user.as_deref(),
        password_stdin: opts.password_stdin,
        transport: opts.transport.clone(),
        mirrors: Some(opts.progress),
    };
    let mut src = image::open_source(&transport, &open)?;
    let name = src.name();
    out.line(format!("Pulling image {name} ..."));
    let image = resolve(&mut *src, platform.as_ref(), &out)?;
    let bundle = start_bundle(opts)?;
    let tree = bundle
        .as_ref()
        .map_or_else(|| opts.dir.clone(), |b| b.rootfs());
    let mut stage = Stage::create(&tree)?;
    if opts.no_sync || bundle.is_some() {
        stage.no_sync();
    }
    // Where it was served (a mirror, a rewritten location): push reads base layers there.
    let source = src
        .served_as()
        .unwrap_or_else(|| transport.absolute().to_string());
    let (stats, image_git, merged) = unpack_all(&mut *src, &source, &image, &stage, &out, opts)?;
    if let Some(ir) = &opts.initramfs {
        let root = stage.root_path();
        crate::initramfs::write_pulled(&root, &merged, &image.config, &name, ir, opts.git, &out)?;
        if !ir.keep_tree {
            return Ok(()); // dropping the stage removes the tree
        }
    }
    stage.commit()?;
    if let Some(b) = bundle {
        b.finish(&image.manifest_bytes, &image.config_bytes, &image.config)?;
        report_bundle(&out, &image, opts);
    }
    report_skipped(&out, &stats);
    report_image_git(&out, image_git, opts);
    let what = if opts.bundle.is_some() {
        "Bundle"
    } else {
        "Rootfs"
    };
    out.line(format!("Done. {what} of {name} in {}", opts.dir.display()));
    Ok(())
}

/// With `--bundle`: the bundle's staging, which the tree is committed into (the
/// bundle is synced as a whole when it is put in place).
fn start_bundle(opts: &PullOptions) -> Result<Option<bundle::Staging>> {
    opts.bundle
        .map(|b| bundle::Staging::create(&opts.dir, b, !opts.no_sync))
        .transpose()
}

/// Where the bundle's config is, and a note when the image has no command to run.
fn report_bundle(out: &Output, image: &ResolvedImage, opts: &PullOptions) {
    let dir = opts.dir.display();
    out.line(format!(
        "Bundle: {dir}/{} ({dir}/{})",
        bundle::CONFIG,
        bundle::ROOTFS
    ));
    if !bundle::has_command(&image.config) {
        let note = format!(
            "Note: the image has no Entrypoint or Cmd: set process.args in {dir}/{} before running it",
            bundle::CONFIG
        );
        match opts.progress {
            Progress::Quiet => eprintln!("barge: {note}"),
            _ => out.line(note),
        }
    }
}

/// `-u USER[:PASS]` (with `--password-stdin` or a prompt) wins; else the auth files
/// Docker and podman write, and Docker's credential helpers.
pub fn resolve_credentials(
    user: Option<&str>,
    password_stdin: bool,
    reference: &Reference,
) -> Result<Option<Credentials>> {
    credentials::resolve(user, password_stdin, &reference.credential_keys())
}

/// Refuses a target that exists and is not an empty directory, before any request.
fn check_target_is_free(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::from(e).context(format!("inspect {}", dir.display()))),
        Ok(m) if !m.is_dir() => Err(Error::new(format!(
            "{} exists and is not a directory",
            dir.display()
        ))
        .hint("choose another directory with -r DIR")),
        Ok(_) => {
            let mut entries =
                std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))?;
            match entries.next() {
                None => Ok(()),
                Some(_) => Err(
                    Error::new(format!("{} exists and is not empty", dir.display()))
                        .hint("pull into a new or empty directory (-r DIR)"),
                ),
            }
        }
    }
}

/// Manifest (through an index if need be) and config, all digest-checked.
pub fn resolve(
    src: &mut dyn ImageSource,
    platform: Option<&Platform>,
    out: &Output,
) -> Result<ResolvedImage> {
    let raw = src.manifest()?;
    let parsed = manifest::parse_manifest(&raw.bytes, raw.media_type.as_deref())?;
    let via_index = matches!(parsed, Fetched::Index(_));
    let (raw, manifest) = match parsed {
        Fetched::Manifest(m) => (raw, m),
        Fetched::Index(index) => {
            let want = platform.cloned().unwrap_or_else(Platform::host);
            let chosen = index.select(&want)?.clone();
            out.line(format!("Index: {} → {want}", raw.digest));
            let child = src.child_manifest(&chosen.digest)?;
            digest::verify("manifest", &chosen.digest, &Digest::of_bytes(&child.bytes))?;
            let media_type = child.media_type.as_deref().or(Some(&chosen.media_type));
            match manifest::parse_manifest(&child.bytes, media_type.filter(|m| !m.is_empty()))? {
                Fetched::Manifest(m) => (child, m),
                Fetched::Index(_) => bail!(
                    "index {} points at another index for {want}: nested indexes are not supported",
                    raw.digest
                ),
            }
        }
    };
    out.line(format!("Manifest: {}", raw.digest));
    let config_bytes =
        image::read_small_blob(src, &manifest.config, MAX_CONFIG).context("image config")?;
    let config = ImageConfig::parse(&config_bytes, manifest.layers.len())?;
    if let (Some(want), false) = (platform, via_index) {
        check_platform(want, &config)?;
    }
    Ok(ResolvedImage {
        manifest_bytes: raw.bytes,
        manifest,
        config_bytes,
        config,
    })
}

/// Refuses a single-platform image made for another platform than `--platform` asks,
/// as docker does (a config that names no platform is taken as it is).
fn check_platform(want: &Platform, config: &ImageConfig) -> Result<()> {
    let have = config.platform();
    if have.os.is_empty() || have.architecture.is_empty() || want.accepts(&have) {
        return Ok(());
    }
    Err(Error::new(format!(
        "image's platform {have} does not match the requested {want}"
    ))
    .hint(format!(
        "pull an image (or a multi-platform index) that has {want}, or drop --platform"
    )))
}

fn unpack_all(
    src: &mut dyn ImageSource,
    source: &str,
    image: &ResolvedImage,
    stage: &Stage,
    out: &Output,
    opts: &PullOptions,
) -> Result<(UnpackStats, Option<usize>, store::Tree)> {
    let layers = &image.manifest.layers;
    out.line(format!("Pulling {}:", count(layers.len(), "layer")));
    out.start(layers.len(), manifest::total_size(layers));
    let dir = stage.root_path();
    let mut root = Root::open(&dir)?;
    // Every layer is fetched ahead, several at once, while the ones before it are applied.
    src.prefetch(layers, stage.path())?;
    // The repository lives beside the root, where no layer entry can reach it,
    // until every layer is in (see `Stage::install_git`).
    let mut history = if opts.git {
        Some(History::init_at(Repo {
            git_dir: stage.git_path(),
            work: dir.clone(),
        })?)
    } else {
        None
    };
    let unpack_opts = UnpackOptions {
        content_digests: opts.git,
        ..UnpackOptions::for_current_user()
    };
    let mut total = UnpackStats::default();
    let mut records = Vec::with_capacity(layers.len());
    let mut chain: Option<Digest> = None;
    let mut merged = store::Tree::default(); // for --initramfs only
    for (i, desc) in layers.iter().enumerate() {
        let mut changes = Vec::new();
        let diff_id = &image.config.diff_ids[i];
        let stats = pull_layer(
            src,
            desc,
            diff_id,
            &mut root,
            &unpack_opts,
            &mut changes,
            history.as_mut().map(|h| h as &mut dyn ContentSink),
            out,
        )
        .with_context(|| format!("layer {i} ({})", desc.digest))?;
        add_stats(&mut total, &stats);
        let chain_id = manifest::chain_id(chain.as_ref(), diff_id);
        let mut line = format!("\t{} ({}) ... done", desc.digest, human_bytes(desc.size));
        if let Some(h) = history.as_mut() {
            let branch = h.commit_layer(
                i,
                &chain_id,
                &layer_message(image, i, desc, &chain_id),
                &changes,
            )?;
            line.push_str(&format!(" → {branch}"));
        }
        out.layer_done(desc.size, line);
        chain = Some(chain_id);
        if opts.initramfs.is_some() {
            merged.apply(&changes);
        }
        let descriptor = store::Descriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.clone(),
            size: desc.size,
        };
        records.push(LayerRecord {
            descriptor,
            diff_id: diff_id.clone(),
            changes,
        });
    }
    let mut image_git = None;
    if let Some(mut h) = history {
        h.finish()?;
        drop(h);
        let replaced = stage.install_git()?;
        let record = Record::create(
            &dir,
            image.manifest_bytes.clone(),
            image.config_bytes.clone(),
            source,
            records,
        )?;
        let kept = record.tree().root_git_entries().count();
        image_git = (replaced || kept > 0).then_some(kept);
    }
    Ok((total, image_git, merged))
}

/// Says what became of the image's own root `.git` (`Some(n)`: it had one, with `n`
/// entries under that name; 0 when the layers reached it only through a symlink),
/// which `DIR/.git` (barge's repository) replaced: its entries are in barge's record
/// (commit and push keep them), not on disk. Never silent: with `-q` on stderr.
fn report_image_git(out: &Output, image_git: Option<usize>, opts: &PullOptions) {
    let Some(n) = image_git else {
        return;
    };
    let dir = opts.dir.display();
    let what = match n {
        0 => "made through a symlink; its entries are under the names the layers gave".into(),
        1 => "1 entry".into(),
        n => format!("{n} entries"),
    };
    let note = format!(
        "Note: the image's own /.git ({what}) is kept in barge's record, not in {dir}: {dir}/.git is barge's repository"
    );
    if opts.progress == Progress::Quiet {
        eprintln!("barge: {note}");
    } else {
        out.line(note);
    }
}

/// The git commit message of layer `i`: its history line and its facts.
fn layer_message(
    image: &ResolvedImage,
    i: usize,
    desc: &Descriptor,
    chain_id: &Digest,
) -> LayerMessage {
    let h = image.config.history_for_layer(i);
    let title = h
        .and_then(|h| h.created_by.clone().or_else(|| h.comment.clone()))
        .unwrap_or_else(|| format!("layer {i}"));
    let trailers = vec![
        ("Layer-Digest".to_string(), desc.digest.to_string()),
        ("Diff-ID".to_string(), image.config.diff_ids[i].to_string()),
        ("Media-Type".to_string(), desc.media_type.clone()),
        ("Size".to_string(), desc.size.to_string()),
        ("Chain-ID".to_string(), chain_id.to_string()),
    ];
    LayerMessage { title, trailers }
}

/// One layer, one pass: socket → digest → gunzip → diff_id → tar → disk (and
/// each file's content to `sink`, i.e. git, when recording history).
#[allow(clippy::too_many_arguments)]
fn pull_layer(
    src: &mut dyn ImageSource,
    desc: &Descriptor,
    diff_id: &Digest,
    root: &mut Root,
    opts: &UnpackOptions,
    changes: &mut Vec<Change>,
    sink: Option<&mut dyn ContentSink>,
    out: &Output,
) -> Result<UnpackStats> {
    let compression = manifest::layer_compression(&desc.media_type)?;
    let blob = src.blob(desc)?;
    let mut meter = out.meter(&meter_label(&desc.digest), Some(desc.size));
    let mut compressed = HashReader::new(MeterReader {
        inner: Interruptible(blob),
        meter: &mut meter,
    });
    let applied = match compression {
        Compression::Gzip => {
            // The diff_id check below covers every decompressed byte.
            let gz = GzipReader::trusting_crc(&mut compressed);
            apply_hashed(root, gz, opts, changes, sink)
        }
        // libzstd checks the frames' checksums; the diff_id check below covers every byte.
        Compression::Zstd => ZstdReader::new(&mut compressed)
            .context("start the zstd decoder")
            .and_then(|zst| apply_hashed(root, zst, opts, changes, sink)),
        Compression::None => apply_hashed(root, &mut compressed, opts, changes, sink),
    };
    // Whatever happened, read the blob to its end: a digest mismatch explains a
    // corrupt stream better than the gunzip or tar error it caused.
    let drained = io::copy(&mut compressed, &mut io::sink());
    let (blob_digest, count) = compressed.finish();
    meter.finish();
    if drained.is_ok() && count == desc.size {
        digest::verify("layer blob", &desc.digest, &blob_digest)?;
    }
    let (stats, tar_digest) = applied?;
    drained.context("read layer blob")?;
    let tar_digest = match compression {
        Compression::None => blob_digest,
        Compression::Gzip | Compression::Zstd => tar_digest,
    };
    digest::verify("uncompressed layer (diff_id)", diff_id, &tar_digest)?;
    Ok(stats)
}

/// Applies a tar stream while hashing it; the stream is read to its end.
fn apply_hashed<R: Read>(
    root: &mut Root,
    tar: R,
    opts: &UnpackOptions,
    changes: &mut Vec<Change>,
    sink: Option<&mut dyn ContentSink>,
) -> Result<(UnpackStats, Digest)> {
    let mut hashed = HashReader::new(tar);
    let stats = apply_layer_with(root, &mut hashed, opts, changes, sink)?;
    io::copy(&mut hashed, &mut io::sink()).context("read layer")?;
    Ok((stats, hashed.finish().0))
}

/// `sha256:abcd12345678`: how meters name a blob.
pub fn meter_label(digest: &Digest) -> String {
    format!("sha256:{}", digest.short())
}

fn add_stats(total: &mut UnpackStats, s: &UnpackStats) {
    total.entries += s.entries;
    total.bytes += s.bytes;
    total.skipped_devices += s.skipped_devices;
    total.skipped_owners += s.skipped_owners;
    total.skipped_xattrs += s.skipped_xattrs;
}

fn report_skipped(out: &Output, s: &UnpackStats) {
    if s.skipped_devices + s.skipped_owners + s.skipped_xattrs > 0 {
        out.line(format!(
            "Not running as root: skipped {} device nodes, {} ownership changes, {} extended attributes",
            s.skipped_devices, s.skipped_owners, s.skipped_xattrs
        ));
    }
}
