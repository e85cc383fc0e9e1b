//! `barge copy SRC DST`: an image (or with `--all` a whole index) from any transport
//! to any other, without a tree on disk. Blobs stream source → destination (the
//! destination checks digest and size on the way; memory stays bounded by the
//! upload chunk), blobs the destination has are skipped, blobs on the same registry
//! are mounted, and manifests keep their bytes, so digests stay the same.
//! [`copy`] is the one transfer loop; `barge push` uses it too.

use crate::bail;
use crate::digest::Digest;
use crate::error::{Context, Result};
use crate::image::transport::Transport;
use crate::image::{
    open_dest, open_source, ImageDest, ImageSource, ManifestRole, OpenOptions, RawManifest,
};
use crate::json;
use crate::manifest::{self, Descriptor, Fetched, Platform};
use crate::progress::{count, human_bytes, Output, Progress};
use crate::pull::meter_label;
use crate::registry::client::TransportOptions;

/// What `barge copy` was asked to do.
pub struct CopyOptions {
    pub src: String,
    pub dst: String,
    pub all: bool,
    pub platform: Option<String>,
    pub progress: Progress,
    pub transport: TransportOptions,
}

/// Which images of an index to copy.
pub enum Select {
    /// Every entry, and the index itself (its digest is kept).
    All,
    /// The one entry for this platform (it becomes the destination's image).
    Platform(Platform),
}

/// How the transfer is told in the output.
pub struct Words {
    /// `Copying` / `Pushing`, before `N layers:`.
    pub verb: &'static str,
    /// After a layer the destination already has.
    pub present: &'static str,
}

pub const COPY_WORDS: Words = Words {
    verb: "Copying",
    present: " (already there)",
};

pub fn run(opts: &CopyOptions) -> Result<()> {
    let out = Output::new(opts.progress);
    let src_t = Transport::parse(&opts.src).context("source")?;
    let dst_t = Transport::parse(&opts.dst).context("destination")?;
    if opts.all && opts.platform.is_some() {
        bail!("--all copies every platform; drop --platform or --all");
    }
    let select = match (&opts.platform, opts.all) {
        (_, true) => Select::All,
        (Some(p), false) => Select::Platform(Platform::parse(p)?),
        (None, false) => Select::Platform(Platform::host()),
    };
    let open = OpenOptions {
        transport: opts.transport.clone(),
        mirrors: Some(opts.progress),
        ..OpenOptions::default()
    };
    let mut src = open_source(&src_t, &open)?;
    let origin = src.registry_origin();
    let dst = open_dest(&dst_t, &open, origin.as_ref())?;
    out.line(format!("Copying {} to {} ...", src.name(), dst.name()));
    let name = dst.name();
    let digest = copy(&mut *src, dst, &select, &COPY_WORDS, &out)?;
    out.line(format!("Done: {name}@{digest}"));
    Ok(())
}

/// Copies the source's image (or index) to `dst` and finishes it; returns the digest
/// of what the destination's reference now names.
pub fn copy(
    src: &mut dyn ImageSource,
    mut dst: Box<dyn ImageDest>,
    select: &Select,
    words: &Words,
    out: &Output,
) -> Result<Digest> {
    let top = src.manifest()?;
    let parsed = manifest::parse_manifest(&top.bytes, top.media_type.as_deref())
        .with_context(|| src.name())?;
    let digest = match (parsed, select) {
        (Fetched::Manifest(_), _) => {
            copy_image(src, &mut *dst, &top, ManifestRole::Top, words, out)?
        }
        (Fetched::Index(index), Select::All) => {
            dst.accepts_index()?;
            out.line(format!(
                "Index: {} ({})",
                top.digest,
                count(index.manifests.len(), "image")
            ));
            for d in &index.manifests {
                let child = child(src, d)?;
                copy_image(src, &mut *dst, &child, ManifestRole::Child, words, out)?;
            }
            dst.put_manifest(&top, ManifestRole::Top)?
        }
        (Fetched::Index(index), Select::Platform(want)) => {
            let d = index.select(want)?.clone();
            out.line(format!("Index: {} → {want}", top.digest));
            let child = child(src, &d)?;
            copy_image(src, &mut *dst, &child, ManifestRole::Top, words, out)?
        }
    };
    dst.finish()?;
    Ok(digest)
}

/// An index entry's manifest, checked against its descriptor.
fn child(src: &mut dyn ImageSource, d: &Descriptor) -> Result<RawManifest> {
    let raw = src.child_manifest(&d.digest)?;
    crate::digest::verify(
        &format!("manifest {}", d.digest),
        &d.digest,
        &Digest::of_bytes(&raw.bytes),
    )?;
    if raw.bytes.len() as u64 != d.size {
        bail!(
            "manifest {} has {} bytes, the index says {}",
            d.digest,
            raw.bytes.len(),
            d.size
        );
    }
    Ok(RawManifest {
        media_type: raw
            .media_type
            .or_else(|| Some(d.media_type.clone()).filter(|m| !m.is_empty())),
        ..raw
    })
}

/// One image: its blobs the destination lacks, then its manifest.
fn copy_image(
    src: &mut dyn ImageSource,
    dst: &mut dyn ImageDest,
    raw: &RawManifest,
    role: ManifestRole,
    words: &Words,
    out: &Output,
) -> Result<Digest> {
    let (config, layers) =
        blobs_of(&raw.bytes).with_context(|| format!("manifest {}", raw.digest))?;
    let mut all = vec![config];
    all.extend(layers.iter().cloned());
    let missing = dst.missing(&all)?;
    if missing.len() != all.len() {
        bail!(
            "{}: answered {} of {} blob checks",
            dst.name(),
            missing.len(),
            all.len()
        );
    }
    let how = start_blobs(src, dst, &all, &missing, words)?;
    out.line(format!("{} {}:", words.verb, count(layers.len(), "layer")));
    out.start(layers.len(), manifest::total_size(&layers));
    for (desc, how) in layers.iter().zip(&how[1..]) {
        let how = match how {
            Some(how) => how,
            None => {
                copy_blob(src, dst, desc, out).with_context(|| format!("blob {}", desc.digest))?
            }
        };
        let size = human_bytes(desc.size);
        out.layer_done(
            desc.size,
            format!("\t{} ({size}) ... done{how}", desc.digest),
        );
    }
    if how[0].is_none() {
        let quiet = Output::new(Progress::Quiet);
        copy_blob(src, dst, &all[0], &quiet).context("image config")?;
    }
    dst.put_manifest(raw, role)
}

/// Blobs up to this size go to the destination together, in one flight where it can,
/// without a meter of their own (larger ones get one while they stream).
const BATCHED: u64 = 64 << 10;

/// What can be settled for all blobs at once, in a few flights rather than a round trip
/// each: mounts and upload sessions for those the destination lacks, then the small ones
/// sent together. Says, per blob, how it got there (`None`: still to stream).
fn start_blobs(
    src: &mut dyn ImageSource,
    dst: &mut dyn ImageDest,
    all: &[Descriptor],
    missing: &[bool],
    words: &Words,
) -> Result<Vec<Option<&'static str>>> {
    let lacking: Vec<Descriptor> = all
        .iter()
        .zip(missing)
        .filter(|(_, m)| **m)
        .map(|(d, _)| d.clone())
        .collect();
    let origin = src.registry_origin();
    let mut mounted = dst.begin(&lacking, origin.as_ref())?.into_iter();
    let mut how: Vec<Option<&'static str>> = missing
        .iter()
        .map(|m| match m {
            false => Some(words.present),
            true => mounted.next().unwrap_or(false).then_some(" (mounted)"),
        })
        .collect();
    let mut small = Vec::new();
    for (i, desc) in all.iter().enumerate() {
        if how[i].is_none() && desc.size <= BATCHED {
            let bytes = crate::image::read_small_blob(src, desc, BATCHED)
                .with_context(|| format!("blob {}", desc.digest))?;
            small.push((desc.clone(), bytes));
            how[i] = Some("");
        }
    }
    if !small.is_empty() {
        dst.put_small(&small)?;
    }
    Ok(how)
}

/// One blob, streamed source → destination (its upload was readied by `start_blobs`).
fn copy_blob(
    src: &mut dyn ImageSource,
    dst: &mut dyn ImageDest,
    desc: &Descriptor,
    out: &Output,
) -> Result<&'static str> {
    let mut meter = out.meter(&meter_label(&desc.digest), Some(desc.size));
    let mut blob = src.blob(desc)?;
    dst.put_blob(desc, &mut *blob, &mut |n| meter.add(n))?;
    meter.finish();
    Ok("")
}

/// A manifest's config and layer descriptors, whatever their media types (an
/// attestation's layers are copied like any other blob).
fn blobs_of(bytes: &[u8]) -> Result<(Descriptor, Vec<Descriptor>)> {
    let v = json::parse(bytes, "manifest")?;
    let Some(config) = json::get(&v, "config") else {
        bail!("not an image manifest: no config");
    };
    let config = plain_descriptor(config).context("config")?;
    let layers = json::opt_array(&v, "layers")?
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, l)| plain_descriptor(l).with_context(|| format!("layers[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    Ok((config, layers))
}

fn plain_descriptor(v: &json::JsonValue) -> Result<Descriptor> {
    Ok(Descriptor {
        media_type: json::opt_str(v, "mediaType")?
            .unwrap_or_default()
            .to_string(),
        digest: Digest::parse(json::get_str(v, "digest")?)?,
        size: json::get_u64(v, "size")?,
        platform: None,
        annotations: Vec::new(),
        urls: Vec::new(),
    })
}
