//! A tree barge pulled and committed, as an [`ImageSource`]: the manifest and config
//! from barge's record, layers from its blob store (`.git/barge/blobs`, the layers
//! `commit` made), the others from the image's origin (the transport the record's
//! `source` names), opened only when a blob is needed from it.

use crate::bail;
use crate::digest::Digest;
use crate::error::{Context, Result};
use crate::image::transport::Transport;
use crate::image::{open_source, ImageSource, OpenOptions, RawManifest, RegistryOrigin};
use crate::manifest::Descriptor;
use crate::registry::source::BlobSource;
use crate::signal::Interruptible;
use crate::store::{self, Record};
use std::path::{Path, PathBuf};

/// The image whose top layer is a committed tree's record.
pub struct TreeSource {
    dir: PathBuf,
    manifest: Vec<u8>,
    config: Vec<u8>,
    origin_name: Option<Transport>,
    origin: Option<Box<dyn ImageSource>>,
    opts: OpenOptions<'static>,
}

impl TreeSource {
    /// The image of `record` (loaded from `dir`); `opts` reach its origin registry.
    pub fn new(dir: &Path, record: &Record, opts: OpenOptions<'static>) -> TreeSource {
        TreeSource {
            dir: dir.to_path_buf(),
            manifest: record.manifest.clone(),
            config: record.config.clone(),
            origin_name: Transport::parse(&record.source).ok(),
            origin: None,
            opts,
        }
    }

    fn origin(&mut self) -> Result<&mut Box<dyn ImageSource>> {
        if self.origin.is_none() {
            let Some(t) = &self.origin_name else {
                bail!("a layer is neither in barge's blob store nor in a known source image");
            };
            self.origin = Some(open_source(t, &self.opts)?);
        }
        match self.origin.as_mut() {
            Some(o) => Ok(o),
            None => bail!("no source image to read layers from"),
        }
    }
}

impl ImageSource for TreeSource {
    fn name(&self) -> String {
        self.dir.display().to_string()
    }

    fn manifest(&mut self) -> Result<RawManifest> {
        Ok(RawManifest {
            digest: Digest::of_bytes(&self.manifest),
            bytes: self.manifest.clone(),
            media_type: None,
        })
    }

    fn child_manifest(&mut self, digest: &Digest) -> Result<RawManifest> {
        bail!(
            "{}: a committed tree holds one image, not manifest {digest}",
            self.dir.display()
        )
    }

    fn blob(&mut self, desc: &Descriptor) -> Result<Box<dyn BlobSource + '_>> {
        if Digest::of_bytes(&self.config) == desc.digest {
            return Ok(Box::new(std::io::Cursor::new(&self.config[..])));
        }
        let local = store::blob_path(&self.dir, &desc.digest);
        if local.is_file() {
            let file =
                std::fs::File::open(&local).with_context(|| format!("open {}", local.display()))?;
            return Ok(Box::new(Interruptible(file)));
        }
        self.origin()?
            .blob(desc)
            .context("a layer of the image the tree was pulled from")
    }

    fn registry_origin(&self) -> Option<RegistryOrigin> {
        let r = self.origin_name.as_ref()?.registry()?;
        Some(super::registry::origin_of(r))
    }
}
