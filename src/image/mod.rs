//! One interface for every place an image lives (a registry, an OCI image layout, an
//! oci-archive or docker-archive file, a tree barge committed): pull, push, copy and
//! inspect speak to [`ImageSource`] and [`ImageDest`] and never learn a transport, as
//! go-containerregistry's `remote`, `layout` and `tarball` share `v1.Image`.
//!
//! Contract, for every implementation:
//! - A source returns bytes exactly as stored; it need not check digests, the caller
//!   does (manifests with [`crate::digest::verify`], blobs through
//!   [`crate::registry::source::Checked`]). It must bound what it reads into memory.
//! - A destination checks what it stores: `put_blob` verifies digest and size before
//!   the blob becomes visible, and nothing a reader could see (a layout's `index.json`,
//!   an archive file, a registry tag) changes before `finish`.
//! - A failed or dropped destination leaves what it writes to as it was before (a
//!   layout keeps its old `index.json`; an archive file is not created or replaced).

use crate::digest::Digest;
use crate::error::Result;
use crate::manifest::Descriptor;
use crate::registry::source::BlobSource;

/// A manifest or index exactly as stored, with the media type its store gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawManifest {
    pub bytes: Vec<u8>,
    /// The media type the store named (HTTP Content-Type, a descriptor's mediaType), if any.
    pub media_type: Option<String>,
    /// sha256 of `bytes`.
    pub digest: Digest,
}

/// Where a registry source's blobs live, so that a destination on the same registry
/// can mount them instead of copying their bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOrigin {
    /// Host (and port) the registry API answers on.
    pub api_host: String,
    pub repository: String,
}

/// A place images are read from.
pub trait ImageSource {
    /// How messages name this source, e.g. `oci:/media/usb:debian`.
    fn name(&self) -> String;
    /// The manifest or index the source's reference names.
    fn manifest(&mut self) -> Result<RawManifest>;
    /// A manifest an index points at, by digest.
    fn child_manifest(&mut self, digest: &Digest) -> Result<RawManifest>;
    /// A blob's bytes (`desc.size` of them), readable again from an offset.
    fn blob(&mut self, desc: &Descriptor) -> Result<Box<dyn BlobSource + '_>>;
    /// Says which blobs will be read next, in order, by a reader faster than the
    /// link (a pull's), so that a source that can may fetch them ahead, several
    /// `Range` chunks at once, into unlinked files in `spool`. (A copy's reader
    /// uploads: it shares the link and streams best socket to socket, measured in
    /// README "Across a wide-area link".)
    fn prefetch(&mut self, _blobs: &[Descriptor], _spool: &Path) -> Result<()> {
        Ok(())
    }
    /// The registry repository behind this source, if it is one.
    fn registry_origin(&self) -> Option<RegistryOrigin> {
        None
    }
    /// The name the image was actually read under when that differs from what was
    /// asked (a mirror, a registries.conf location): what a pull records as its source.
    fn served_as(&self) -> Option<String> {
        None
    }
}

/// What a manifest written to a destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestRole {
    /// One platform's manifest of an index that is written after it.
    Child,
    /// The image or index the destination's reference names (gets its tag or ref name).
    Top,
}

/// A place images are written to.
pub trait ImageDest {
    /// How messages name this destination.
    fn name(&self) -> String;
    /// Refuses a multi-platform index before any of it is copied, when this destination
    /// holds single images only (a docker-archive).
    fn accepts_index(&self) -> Result<()> {
        Ok(())
    }
    /// For each blob, whether the destination lacks it (one flight where it can).
    fn missing(&mut self, blobs: &[Descriptor]) -> Result<Vec<bool>>;
    /// Gets a blob without its bytes, e.g. a cross-repository mount on the same
    /// registry; `Ok(false)` when that is not possible here.
    fn mount(&mut self, _desc: &Descriptor, _origin: &RegistryOrigin) -> Result<bool> {
        Ok(false)
    }
    /// Prepares to receive blobs it lacks, in one flight where it can: mounts those
    /// `origin` has (`true`: nothing more to send), and readies the others' uploads.
    fn begin(
        &mut self,
        blobs: &[Descriptor],
        origin: Option<&RegistryOrigin>,
    ) -> Result<Vec<bool>> {
        blobs
            .iter()
            .map(|d| origin.map_or(Ok(false), |o| self.mount(d, o)))
            .collect()
    }
    /// Stores small blobs already in memory and digest-checked, in one flight where it can.
    fn put_small(&mut self, blobs: &[(Descriptor, Vec<u8>)]) -> Result<()> {
        for (desc, bytes) in blobs {
            self.put_blob(desc, &mut std::io::Cursor::new(&bytes[..]), &mut |_| {})?;
        }
        Ok(())
    }
    /// Stores a blob read from `src`, verifying digest and size on the way;
    /// `progress` is told each number of bytes written.
    fn put_blob(
        &mut self,
        desc: &Descriptor,
        src: &mut dyn BlobSource,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()>;
    /// Stores a manifest (its blobs were put first); returns the digest it is known by.
    fn put_manifest(&mut self, raw: &RawManifest, role: ManifestRole) -> Result<Digest>;
    /// Makes what was written visible (an index.json, an archive file); called last.
    fn finish(self: Box<Self>) -> Result<()>;
}

pub mod docker_archive;
pub mod oci_archive;
mod tar_file;

pub mod layout;
pub mod registry;
pub mod transport;
pub mod tree;

use crate::bail;
use crate::error::Context;
use crate::registry::client::TransportOptions;
use crate::registry::credentials::{self, Credentials};
use std::io::Read;
use std::path::Path;
use transport::Transport;

impl<T: BlobSource + ?Sized> BlobSource for &mut T {
    fn rewind(&mut self, offset: u64) -> Result<()> {
        (**self).rewind(offset)
    }
}

impl<T: BlobSource + ?Sized> BlobSource for Box<T> {
    fn rewind(&mut self, offset: u64) -> Result<()> {
        (**self).rewind(offset)
    }
}

/// How sources and destinations on registries are reached.
#[derive(Default)]
pub struct OpenOptions<'a> {
    /// `-u USER[:PASS]`, else the stored credentials.
    pub user: Option<&'a str>,
    pub password_stdin: bool,
    pub transport: TransportOptions,
    /// Read registries through their mirrors (pull, copy, inspect), naming failed
    /// mirrors in this output style; `None` reads the registry as named (a pushed
    /// tree's origin, which may itself be the mirror it was pulled from).
    pub mirrors: Option<crate::progress::Progress>,
}

impl OpenOptions<'_> {
    pub fn credentials(
        &self,
        reference: &crate::reference::Reference,
    ) -> Result<Option<Credentials>> {
        credentials::resolve(self.user, self.password_stdin, &reference.credential_keys())
    }
}

/// Opens the image `t` names for reading: one arm per transport.
pub fn open_source(t: &Transport, opts: &OpenOptions) -> Result<Box<dyn ImageSource>> {
    Ok(match t {
        Transport::Docker(r) => match opts.mirrors {
            Some(progress) => Box::new(registry::RegistrySource::open_mirrored(r, opts, progress)?),
            None => Box::new(registry::RegistrySource::open(
                r,
                opts.credentials(r)?,
                &opts.transport,
            )?),
        },
        Transport::Oci { path, reference } => {
            Box::new(layout::LayoutSource::open(path, reference.as_deref())?)
        }
        Transport::OciArchive { path, reference } => Box::new(oci_archive::OciArchiveSource::open(
            path,
            reference.as_deref(),
        )?),
        Transport::DockerArchive { path, reference } => Box::new(
            docker_archive::DockerArchiveSource::open(path, reference.as_deref())?,
        ),
    })
}

/// Opens the place `t` names for writing; `mount_from` is the source's registry
/// repository, whose blobs a destination on the same registry may mount.
pub fn open_dest(
    t: &Transport,
    opts: &OpenOptions,
    mount_from: Option<&RegistryOrigin>,
) -> Result<Box<dyn ImageDest>> {
    Ok(match t {
        Transport::Docker(r) => {
            if r.digest.is_some() && r.tag.is_none() {
                bail!("{t}: a destination takes NAME[:TAG], not a digest");
            }
            Box::new(registry::RegistryDest::open(
                r,
                opts.credentials(r)?,
                &opts.transport,
                mount_from,
            )?)
        }
        Transport::Oci { path, reference } => {
            Box::new(layout::LayoutDest::create(path, reference.as_deref())?)
        }
        Transport::OciArchive { path, reference } => Box::new(oci_archive::OciArchiveDest::create(
            path,
            reference.as_deref(),
        )?),
        Transport::DockerArchive { path, reference } => Box::new(
            docker_archive::DockerArchiveDest::create(path, reference.as_deref())?,
        ),
    })
}

/// A small blob (a config) read whole: at most `limit` bytes, digest checked.
pub fn read_small_blob(
    src: &mut dyn ImageSource,
    desc: &Descriptor,
    limit: u64,
) -> Result<Vec<u8>> {
    let digest = &desc.digest;
    if desc.size > limit {
        bail!(
            "blob {digest} claims {} bytes, more than the {limit} allowed for it",
            desc.size
        );
    }
    let mut bytes = Vec::with_capacity(desc.size as usize);
    src.blob(desc)?
        .take(desc.size + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("read blob {digest}"))?;
    if bytes.len() as u64 != desc.size {
        bail!(
            "blob {digest} has {} bytes, its descriptor says {}",
            bytes.len(),
            desc.size
        );
    }
    crate::digest::verify(&format!("blob {digest}"), digest, &Digest::of_bytes(&bytes))?;
    Ok(bytes)
}
