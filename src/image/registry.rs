//! A registry repository as an [`ImageSource`] and an [`ImageDest`], over barge's
//! registry client: manifests digest-checked by `fetch`, blobs streamed with resume,
//! uploads in bounded chunks, cross-repository mounts on the same registry.

use crate::digest::Digest;
use crate::error::{Context, Result};
use crate::image::{
    ImageDest, ImageSource, ManifestRole, OpenOptions, RawManifest, RegistryOrigin,
};
use crate::manifest::{self, Descriptor};
use crate::progress::{Output, Progress};
use crate::reference::Reference;
use crate::registry::auth;
use crate::registry::client::{Registry, TransportOptions};
use crate::registry::credentials;
use crate::registry::credentials::Credentials;
use crate::registry::fetch::{self, BlobReader};
use crate::registry::mirrors;
use crate::registry::prefetch::{Prefetch, SpoolReader};
use crate::registry::source::{BlobSource, Checked};
use crate::registry::upload::{self, Mount, Upload};
use std::path::Path;

/// Bound on a tag list response.
const MAX_TAG_LIST: u64 = 4 << 20;

/// Reads one image (or index) from a repository.
pub struct RegistrySource {
    reg: Registry,
    /// The image's name where it is read (a mirror's name when one served it).
    reference: Reference,
    /// The name asked for, when a mirror or a location rewrite served it.
    asked: Option<Reference>,
    /// How messages say where it came from (` from mirror HOST`), or empty.
    via: String,
    /// The top manifest, when finding the endpoint already fetched it.
    first: Option<RawManifest>,
    /// Blobs being fetched ahead (see [`ImageSource::prefetch`]).
    ahead: Option<Prefetch>,
}

impl RegistrySource {
    /// Prepares to read `reference` (nothing is sent yet).
    pub fn open(
        reference: &Reference,
        creds: Option<Credentials>,
        transport: &TransportOptions,
    ) -> Result<RegistrySource> {
        let scopes = vec![auth::scope(&reference.repository, &["pull"])];
        // Plain HTTP where registries.conf or daemon.json say so (a mirror a tree was pulled from).
        let transport = mirrors::transport_for_source(reference, transport)?;
        Ok(RegistrySource {
            reg: Registry::new(reference, creds, &transport, scopes)?,
            reference: reference.clone(),
            asked: None,
            via: String::new(),
            first: None,
            ahead: None,
        })
    }

    /// Finds the endpoint that serves `reference`: `--mirror`s, registries.conf's and
    /// daemon.json's mirrors in order, then the registry (see registry/mirrors.rs).
    /// `-u` goes to the registry only; a mirror gets the credentials stored for it.
    pub fn open_mirrored(
        reference: &Reference,
        opts: &OpenOptions,
        progress: Progress,
    ) -> Result<RegistrySource> {
        let mut creds = |at: &Reference, mirror: bool| match mirror {
            false => opts.credentials(at),
            true => credentials::resolve(None, false, &at.credential_keys()),
        };
        let out = Output::new(progress);
        let served =
            mirrors::open_for_pull(reference, &mut creds, &opts.transport, &["pull"], &out)?;
        let asked = (served.reference != *reference).then(|| reference.clone());
        Ok(RegistrySource {
            reg: served.registry,
            reference: served.reference,
            asked,
            via: served.via,
            first: Some(RawManifest {
                bytes: served.manifest.bytes,
                media_type: served.manifest.content_type,
                digest: served.manifest.digest,
            }),
            ahead: None,
        })
    }

    /// The repository's tags (the registry's first page), or none when it does not
    /// list them: `inspect` shows them as skopeo does, and never fails for them.
    pub fn tags(&mut self) -> Vec<String> {
        let path = format!("/v2/{}/tags/list", self.reference.repository);
        let Ok(mut resp) = self.reg.request("GET", &path, &[], &[]) else {
            return Vec::new();
        };
        if resp.status != 200 {
            let _ = resp.discard();
            return Vec::new();
        }
        let Ok(body) = resp.read_limited(MAX_TAG_LIST) else {
            return Vec::new();
        };
        crate::json::parse(&body, "tag list")
            .and_then(|v| crate::json::opt_str_array(&v, "tags"))
            .unwrap_or_default()
    }

    fn fetch(&mut self, reference: &str) -> Result<RawManifest> {
        let raw = fetch::manifest(&mut self.reg, &self.reference.repository, reference)?;
        Ok(RawManifest {
            bytes: raw.bytes,
            media_type: raw.content_type,
            digest: raw.digest,
        })
    }
}

impl ImageSource for RegistrySource {
    fn name(&self) -> String {
        let asked = self.asked.as_ref().unwrap_or(&self.reference);
        format!("{asked}{}", self.via)
    }

    fn manifest(&mut self) -> Result<RawManifest> {
        if let Some(m) = self.first.take() {
            return Ok(m);
        }
        let r = self.reference.reference_str();
        self.fetch(&r)
    }

    fn child_manifest(&mut self, digest: &Digest) -> Result<RawManifest> {
        self.fetch(digest.as_str())
    }

    fn prefetch(&mut self, blobs: &[Descriptor], spool: &Path) -> Result<()> {
        let mut wanted: Vec<(Digest, u64)> = Vec::new();
        for d in blobs {
            if !wanted.iter().any(|(w, _)| *w == d.digest) {
                wanted.push((d.digest.clone(), d.size));
            }
        }
        let repo = &self.reference.repository;
        self.ahead = Prefetch::start(&mut self.reg, repo, &wanted, spool)?;
        Ok(())
    }

    fn blob(&mut self, desc: &Descriptor) -> Result<Box<dyn BlobSource + '_>> {
        if let Some(ahead) = self.ahead.as_mut() {
            if let Some(i) = ahead.find(&desc.digest) {
                return Ok(Box::new(SpoolReader::new(ahead, &mut self.reg, i)));
            }
        }
        let repo = &self.reference.repository;
        let reader = BlobReader::open(&mut self.reg, repo, &desc.digest, desc.size)?;
        Ok(Box::new(reader))
    }

    fn registry_origin(&self) -> Option<RegistryOrigin> {
        Some(origin_of(&self.reference))
    }

    fn served_as(&self) -> Option<String> {
        self.asked.as_ref().map(|_| self.reference.to_string())
    }
}

/// Where `reference`'s blobs live, for mounts.
pub fn origin_of(reference: &Reference) -> RegistryOrigin {
    RegistryOrigin {
        api_host: reference.api_host().to_string(),
        repository: reference.repository.clone(),
    }
}

/// Writes one image (or index) to a repository; the tag moves with the top manifest.
pub struct RegistryDest {
    reg: Registry,
    reference: Reference,
    /// Upload sessions `begin` opened (or a refused mount did), by blob.
    pending: Vec<(Digest, Upload)>,
}

impl RegistryDest {
    /// Prepares to write `reference`, with pull rights on `mount_from` (a repository of
    /// the same registry blobs may be mounted from).
    pub fn open(
        reference: &Reference,
        creds: Option<Credentials>,
        transport: &TransportOptions,
        mount_from: Option<&RegistryOrigin>,
    ) -> Result<RegistryDest> {
        let mut scopes = vec![auth::scope(&reference.repository, &["pull", "push"])];
        if let Some(o) = mount_from.filter(|o| can_mount(reference, o)) {
            scopes.push(auth::scope(&o.repository, &["pull"]));
        }
        Ok(RegistryDest {
            reg: Registry::new(reference, creds, transport, scopes)?,
            reference: reference.clone(),
            pending: Vec::new(),
        })
    }
}

impl RegistryDest {
    /// The session `begin` opened for this blob, if any.
    fn take_pending(&mut self, digest: &Digest) -> Option<Upload> {
        let i = self.pending.iter().position(|(d, _)| d == digest)?;
        Some(self.pending.swap_remove(i).1)
    }
}

/// A blob of `origin` can be mounted into `target`: same registry, another repository.
fn can_mount(target: &Reference, origin: &RegistryOrigin) -> bool {
    origin.api_host == target.api_host() && origin.repository != target.repository
}

impl ImageDest for RegistryDest {
    fn name(&self) -> String {
        self.reference.to_string()
    }

    /// All HEADs in one pipelined flight.
    fn missing(&mut self, blobs: &[Descriptor]) -> Result<Vec<bool>> {
        let digests: Vec<Digest> = blobs.iter().map(|d| d.digest.clone()).collect();
        let sizes = upload::blob_sizes(&mut self.reg, &self.reference.repository, &digests)?;
        Ok(sizes.iter().map(Option::is_none).collect())
    }

    fn mount(&mut self, desc: &Descriptor, origin: &RegistryOrigin) -> Result<bool> {
        Ok(self.begin(std::slice::from_ref(desc), Some(origin))?[0])
    }

    /// All mounts and session POSTs in one pipelined flight.
    fn begin(
        &mut self,
        blobs: &[Descriptor],
        origin: Option<&RegistryOrigin>,
    ) -> Result<Vec<bool>> {
        let from = origin
            .filter(|o| can_mount(&self.reference, o))
            .map(|o| o.repository.as_str());
        let wants: Vec<(&Digest, Option<&str>)> = blobs.iter().map(|d| (&d.digest, from)).collect();
        let begun = upload::begin_all(&mut self.reg, &self.reference.repository, &wants)?;
        let mut mounted = Vec::with_capacity(blobs.len());
        for (desc, start) in blobs.iter().zip(begun) {
            match start {
                Mount::Mounted => mounted.push(true),
                Mount::Session(s) => {
                    self.pending.push((desc.digest.clone(), s));
                    mounted.push(false);
                }
            }
        }
        Ok(mounted)
    }

    /// The PUTs of all small blobs whose sessions are open, in one pipelined flight;
    /// those the registry did not take go the ordinary way.
    fn put_small(&mut self, blobs: &[(Descriptor, Vec<u8>)]) -> Result<()> {
        let mut smalls = Vec::new();
        let mut others = Vec::new();
        for (desc, bytes) in blobs {
            match self.take_pending(&desc.digest) {
                Some(upload) => smalls.push(upload::Small {
                    upload,
                    digest: &desc.digest,
                    bytes,
                }),
                None => others.push((desc, bytes)),
            }
        }
        for back in upload::put_all(&mut self.reg, smalls)? {
            self.pending.push((back.digest.clone(), back.upload));
            if let Some(b) = blobs.iter().find(|(d, _)| d.digest == *back.digest) {
                others.push((&b.0, &b.1));
            }
        }
        for (desc, bytes) in others {
            self.put_blob(desc, &mut std::io::Cursor::new(&bytes[..]), &mut |_| {})?;
        }
        Ok(())
    }

    fn put_blob(
        &mut self,
        desc: &Descriptor,
        src: &mut dyn BlobSource,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let session = match self.take_pending(&desc.digest) {
            Some(s) => s,
            None => Upload::new(&self.reg, &self.reference.repository),
        };
        let mut checked = Checked::new(src);
        session.send(
            &mut self.reg,
            &mut checked,
            &desc.digest,
            desc.size,
            progress,
        )?;
        crate::digest::verify("uploaded blob", &desc.digest, &checked.finish().0)
    }

    fn put_manifest(&mut self, raw: &RawManifest, role: ManifestRole) -> Result<Digest> {
        let media_type = media_type_of(raw)?;
        let target = match role {
            ManifestRole::Child => raw.digest.to_string(),
            ManifestRole::Top => match &self.reference.tag {
                Some(t) => t.clone(),
                None if self.reference.digest.is_some() => raw.digest.to_string(),
                None => crate::reference::DEFAULT_TAG.to_string(),
            },
        };
        let repo = &self.reference.repository;
        upload::put_manifest(&mut self.reg, repo, &target, &media_type, &raw.bytes)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// The media type a manifest is stored under: the one it declares, else the one its
/// store gave, else what its shape says (an index has `manifests`). Its blobs' types
/// are not checked: a copy carries attestations and artifacts too.
pub fn media_type_of(raw: &RawManifest) -> Result<String> {
    let v = crate::json::parse(&raw.bytes, "manifest")
        .with_context(|| format!("manifest {}", raw.digest))?;
    if let Some(mt) = crate::json::opt_str(&v, "mediaType")?.filter(|m| !m.is_empty()) {
        return Ok(mt.to_string());
    }
    if let Some(mt) = raw.media_type.as_deref().filter(|m| !m.is_empty()) {
        return Ok(mt.to_string());
    }
    Ok(match crate::json::get(&v, "manifests") {
        Some(_) => manifest::OCI_INDEX.to_string(),
        None => manifest::OCI_MANIFEST.to_string(),
    })
}
