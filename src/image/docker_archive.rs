//! The `docker-archive:FILE[:REPO:TAG]` transport: what `docker save` writes and
//! `docker load`, `podman load` and `skopeo copy docker-archive:` read. `manifest.json`
//! lists each image's config member, `RepoTags` and layer members (uncompressed tars);
//! members may be the old `<id>/layer.tar` layout (`VERSION`, `json`), skopeo's
//! `<hex>.tar`, or Docker 25+'s OCI layout (`blobs/sha256/…` + `index.json`) beside it.
//!
//! As a source it presents an OCI image manifest (`application/vnd.oci.image.manifest.v1+json`,
//! config `…config.v1+json`, layers `…layer.v1.tar`) whose layer digests are the config's
//! diff_ids, so the caller's digest check verifies each layer tar; member names are never
//! trusted. An archive that also carries an OCI layout whose manifest has the same config
//! is read with that manifest's bytes, keeping its digest.
//!
//! As a destination it writes one image, layers uncompressed: each layer blob is checked
//! against its (compressed) digest while it is inflated into the tar, and the inflated
//! digests are checked against the config's diff_ids when the manifest comes.
//! `manifest.json` names the image REPO:TAG; no `repositories` file is written (only
//! Docker before 1.10 needed it). An existing FILE is replaced at `finish`.

use crate::digest::{verify, Digest, HashReader, HashWriter};
use crate::error::{Context, Error, Result};
use crate::image::oci_archive::descriptor_json;
use crate::image::tar_file::{copy, Member, TarIndex, TarWriter};
use crate::image::{ImageDest, ImageSource, ManifestRole, RawManifest};
use crate::json::{self, JsonValue};
use crate::layer::gzip::GzipReader;
use crate::manifest::{
    layer_compression, parse_manifest, Compression, Descriptor, Fetched, ImageConfig,
    DOCKER_CONFIG, MAX_MANIFEST, OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST,
};
use crate::progress::Counted;
use crate::registry::source::BlobSource;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// Largest image config accepted (as pull's).
const MAX_CONFIG: u64 = 8 << 20;

/// How messages name this archive: its transport string, as `Transport` writes it.
fn transport_name(path: &Path, reference: Option<&str>) -> String {
    crate::image::transport::Transport::DockerArchive {
        path: path.to_path_buf(),
        reference: reference.map(str::to_string),
    }
    .to_string()
}

/// The short form Docker writes in `RepoTags`: no `docker.io/`, no `library/`, a tag.
fn familiar(tag: &str) -> String {
    let t = tag.strip_prefix("docker.io/").unwrap_or(tag);
    let t = t.strip_prefix("library/").unwrap_or(t);
    let name_part = t.rsplit('/').next().unwrap_or(t);
    if name_part.contains(':') || name_part.contains('@') {
        t.to_string()
    } else {
        format!("{t}:latest")
    }
}

/// One image listed in `manifest.json`.
struct Entry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

fn read_entries(tar: &TarIndex, name: &str) -> Result<Vec<Entry>> {
    let bytes = tar.read_small("manifest.json", MAX_MANIFEST)?.ok_or_else(|| {
        Error::new(format!("{name} is not a docker-archive: it has no manifest.json"))
            .hint("for a tar of an OCI layout use oci-archive:FILE; `docker save` writes docker-archives")
    })?;
    let v = json::parse(&bytes, "manifest.json").context(name)?;
    let JsonValue::Array(items) = v else {
        return Err(Error::new(format!(
            "{name}: manifest.json is not a JSON array"
        )));
    };
    items
        .iter()
        .map(|e| {
            Ok(Entry {
                config: json::get_str(e, "Config")?.to_string(),
                repo_tags: json::opt_str_array(e, "RepoTags")?,
                layers: json::opt_str_array(e, "Layers")?,
            })
        })
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("{name}: manifest.json"))
}

/// The entry `reference` names: one of its RepoTags, or `@N` (0-based); without a
/// reference, the only entry.
fn select<'a>(entries: &'a [Entry], reference: Option<&str>, name: &str) -> Result<&'a Entry> {
    let tags = || {
        let all: Vec<&str> = entries
            .iter()
            .flat_map(|e| e.repo_tags.iter().map(String::as_str))
            .collect();
        if all.is_empty() {
            "its images have no tags".to_string()
        } else {
            format!("its tags are: {}", all.join(", "))
        }
    };
    let Some(r) = reference else {
        return match entries {
            [only] => Ok(only),
            [] => Err(Error::new(format!("{name}: the archive holds no image"))),
            _ => Err(Error::new(format!(
                "{name}: the archive holds {} images",
                entries.len()
            ))
            .hint(format!("{}; name one: FILE:REPO:TAG (or FILE:@N)", tags()))),
        };
    };
    if let Some(n) = r.strip_prefix('@').and_then(|n| n.parse::<usize>().ok()) {
        return entries.get(n).ok_or_else(|| {
            Error::new(format!("{name}: no image @{n}: it holds {}", entries.len()))
        });
    }
    let want = familiar(r);
    entries
        .iter()
        .find(|e| e.repo_tags.iter().any(|t| familiar(t) == want))
        .ok_or_else(|| {
            Error::new(format!("{name}: no image tagged {r:?}"))
                .hint(format!("{}; name one of them after the file", tags()))
        })
}

/// The manifest a docker-archive image is presented with: OCI, uncompressed layers whose
/// digests are the diff_ids. The same bytes for the same config and layers, every time.
fn synthesize(config: &Digest, config_size: u64, layers: &[(Digest, u64)]) -> RawManifest {
    let desc = |media_type: &str, digest: &Digest, size: u64| Descriptor {
        media_type: media_type.to_string(),
        digest: digest.clone(),
        size,
        platform: None,
        annotations: Vec::new(),
        urls: Vec::new(),
    };
    let layers = layers
        .iter()
        .map(|(d, size)| descriptor_json(&desc(OCI_LAYER_TAR, d, *size)))
        .collect();
    let doc = json::object([
        ("schemaVersion", JsonValue::Number(2.0)),
        ("mediaType", json::string(OCI_MANIFEST)),
        (
            "config",
            descriptor_json(&desc(OCI_CONFIG, config, config_size)),
        ),
        ("layers", JsonValue::Array(layers)),
    ]);
    let bytes = json::to_string_sorted(&doc).into_bytes();
    RawManifest {
        digest: Digest::of_bytes(&bytes),
        bytes,
        media_type: Some(OCI_MANIFEST.to_string()),
    }
}

/// A docker-archive read in place.
pub struct DockerArchiveSource {
    tar: TarIndex,
    name: String,
    manifest: RawManifest,
    /// Blob digest → member holding it.
    blobs: HashMap<Digest, Member>,
}

impl DockerArchiveSource {
    /// Opens the archive at `path` and finds the image `reference` (REPO:TAG or `@N`) names.
    pub fn open(path: &Path, reference: Option<&str>) -> Result<Self> {
        let name = transport_name(path, reference);
        let tar = TarIndex::open(path, &name)?;
        let entries = read_entries(&tar, &name)?;
        let entry = select(&entries, reference, &name)?;
        let member = |m: &str| {
            tar.get(m).ok_or_else(|| {
                Error::new(format!(
                    "{name}: manifest.json names {m:?}, which is not in the archive"
                ))
                .hint("the archive is incomplete or damaged; save it again")
            })
        };
        let config_member = member(&entry.config)?;
        let config = tar
            .read_small(&entry.config, MAX_CONFIG)?
            .ok_or_else(|| Error::new("internal: config member vanished"))?;
        let config_digest = Digest::of_bytes(&config);
        let parsed = ImageConfig::parse(&config, entry.layers.len())
            .with_context(|| format!("{name}: {}", entry.config))?;
        let mut blobs = HashMap::from([(config_digest.clone(), config_member)]);
        let mut layers = Vec::new();
        for (diff_id, layer) in parsed.diff_ids.iter().zip(&entry.layers) {
            let m = member(layer)?;
            blobs.insert(diff_id.clone(), m);
            layers.push((diff_id.clone(), m.size));
        }
        let manifest = match oci_manifest(&tar, &config_digest) {
            Some((raw, found)) => {
                blobs.extend(found);
                raw
            }
            None => synthesize(&config_digest, config_member.size, &layers),
        };
        Ok(DockerArchiveSource {
            tar,
            name,
            manifest,
            blobs,
        })
    }
}

/// Docker 25+ archives also hold an OCI layout: the manifest there whose config is
/// `config` (looked for in `index.json` and one index below it), with its layer members.
fn oci_manifest(tar: &TarIndex, config: &Digest) -> Option<(RawManifest, Vec<(Digest, Member)>)> {
    let blob = |d: &Digest| tar.read_small(&format!("blobs/sha256/{}", d.hex()), MAX_MANIFEST);
    let index = tar.read_small("index.json", MAX_MANIFEST).ok()??;
    let mut queue = match parse_manifest(&index, None).ok()? {
        Fetched::Index(i) => i.manifests,
        Fetched::Manifest(_) => return None,
    };
    let mut looked = 0;
    while let Some(desc) = queue.pop() {
        looked += 1;
        if looked > 64 {
            return None;
        }
        let Ok(Some(bytes)) = blob(&desc.digest) else {
            continue;
        };
        if Digest::of_bytes(&bytes) != desc.digest {
            continue;
        }
        match parse_manifest(
            &bytes,
            Some(&desc.media_type)
                .filter(|m| !m.is_empty())
                .map(|m| m.as_str()),
        ) {
            Ok(Fetched::Index(i)) if looked <= 8 => queue.extend(i.manifests),
            Ok(Fetched::Manifest(m)) if &m.config.digest == config => {
                let members = m
                    .layers
                    .iter()
                    .map(|l| {
                        Some((
                            l.digest.clone(),
                            tar.get(&format!("blobs/sha256/{}", l.digest.hex()))?,
                        ))
                    })
                    .collect::<Option<Vec<_>>>()?;
                let raw = RawManifest {
                    digest: desc.digest,
                    bytes,
                    media_type: Some(m.media_type),
                };
                return Some((raw, members));
            }
            _ => {}
        }
    }
    None
}

impl ImageSource for DockerArchiveSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn manifest(&mut self) -> Result<RawManifest> {
        Ok(self.manifest.clone())
    }

    fn child_manifest(&mut self, digest: &Digest) -> Result<RawManifest> {
        Err(Error::new(format!(
            "{}: holds single images, not manifest {digest}",
            self.name
        )))
    }

    fn blob(&mut self, desc: &Descriptor) -> Result<Box<dyn BlobSource + '_>> {
        let m = *self.blobs.get(&desc.digest).ok_or_else(|| {
            Error::new(format!(
                "{}: blob {} is not in this image",
                self.name, desc.digest
            ))
        })?;
        if m.size != desc.size {
            return Err(Error::new(format!(
                "{}: blob {} is {} bytes, the manifest says {}",
                self.name, desc.digest, m.size, desc.size
            )));
        }
        Ok(Box::new(self.tar.section(m)))
    }
}

/// The uncompressed bytes of a layer blob: the one place that knows the codecs.
fn uncompressed<'a>(media_type: &str, blob: Box<dyn Read + 'a>) -> Result<Box<dyn Read + 'a>> {
    Ok(match layer_compression(media_type)? {
        Compression::Gzip => Box::new(GzipReader::trusting_crc(blob)),
        Compression::Zstd => {
            Box::new(crate::layer::zstd::ZstdReader::new(blob).context("start the zstd decoder")?)
        }
        Compression::None => blob,
    })
}

/// A layer written into the archive.
#[derive(Clone)]
struct Stored {
    member: String,
    diff_id: Digest,
    size: u64,
}

/// The image `finish` names in manifest.json.
struct Image {
    config: Digest,
    layers: Vec<Stored>,
}

/// A docker-archive being written; visible at `finish`.
pub struct DockerArchiveDest {
    out: TarWriter,
    name: String,
    repo_tag: Option<String>,
    configs: HashMap<Digest, Vec<u8>>,
    /// By the blob digest the layer came with.
    layers: HashMap<Digest, Stored>,
    image: Option<Image>,
}

impl DockerArchiveDest {
    /// `barge copy --all` of an index into a docker-archive (one image per file here).
    fn not_an_index(&self) -> Error {
        Error::new(format!(
            "{}: a docker-archive holds one image, not a multi-platform index",
            self.name
        ))
        .hint("copy one platform (without --all, or with --platform)")
    }

    /// Prepares to write the archive at `path`, tagging the image `reference` (REPO:TAG;
    /// `:latest` is added when there is no tag).
    pub fn create(path: &Path, reference: Option<&str>) -> Result<Self> {
        let name = transport_name(path, reference);
        let repo_tag = match reference {
            Some(r) => Some(check_repo_tag(r).context(&name)?),
            None => None,
        };
        Ok(DockerArchiveDest {
            out: TarWriter::create(path, &name)?,
            name,
            repo_tag,
            configs: HashMap::new(),
            layers: HashMap::new(),
            image: None,
        })
    }

    fn put_config(&mut self, desc: &Descriptor, src: &mut dyn Read) -> Result<()> {
        if desc.size > MAX_CONFIG {
            return Err(Error::new(format!(
                "image config is {} bytes, more than the {MAX_CONFIG} accepted",
                desc.size
            )));
        }
        let mut bytes = Vec::new();
        src.take(desc.size + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 != desc.size {
            return Err(Error::new(format!(
                "image config is {} bytes, expected {}",
                bytes.len(),
                desc.size
            )));
        }
        verify("image config", &desc.digest, &Digest::of_bytes(&bytes))?;
        self.out
            .add_bytes(&format!("{}.json", desc.digest.hex()), &bytes)?;
        self.configs.insert(desc.digest.clone(), bytes);
        Ok(())
    }

    fn put_layer(
        &mut self,
        desc: &Descriptor,
        src: &mut dyn Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        self.out.start_member()?;
        let mut hashed = HashReader::new(Counted {
            inner: src.take(desc.size.saturating_add(1)),
            on_bytes: progress,
        });
        let inflated = inflate_into(&desc.media_type, &mut hashed, &mut self.out);
        let (got, n) = hashed.finish();
        let checked = inflated.and_then(|plain| {
            if n != desc.size {
                return Err(Error::new(format!(
                    "layer {} is {n} bytes or more, expected {}",
                    desc.digest, desc.size
                )));
            }
            verify(&format!("layer {}", desc.digest), &desc.digest, &got)?;
            Ok(plain)
        });
        let (diff_id, size) = match checked {
            Ok(plain) => plain,
            Err(e) => {
                self.out.abort_member()?;
                return Err(e);
            }
        };
        let member = format!("{}.tar", diff_id.hex());
        if self.layers.values().any(|s| s.diff_id == diff_id) {
            self.out.abort_member()?; // the same tar came compressed another way
        } else {
            self.out.end_member(&member)?;
        }
        let stored = Stored {
            member,
            diff_id,
            size,
        };
        self.layers.insert(desc.digest.clone(), stored);
        Ok(())
    }

    /// The manifest's config and layers, checked against each other and what was stored.
    fn image_of(&self, m: &crate::manifest::Manifest) -> Result<Image> {
        let config = self.configs.get(&m.config.digest).ok_or_else(|| {
            Error::new(format!(
                "its config {} was not written first",
                m.config.digest
            ))
        })?;
        let parsed = ImageConfig::parse(config, m.layers.len())?;
        let mut layers = Vec::new();
        for (i, (l, want)) in m.layers.iter().zip(&parsed.diff_ids).enumerate() {
            let stored = self.layers.get(&l.digest).ok_or_else(|| {
                Error::new(format!("its layer {} was not written first", l.digest))
            })?;
            if &stored.diff_id != want {
                return Err(Error::new(format!(
                    "layer {i} uncompresses to {}, but the config's diff_id is {want}",
                    stored.diff_id
                ))
                .hint("the image is inconsistent; it cannot be saved as a docker-archive"));
            }
            layers.push(stored.clone());
        }
        Ok(Image {
            config: m.config.digest.clone(),
            layers,
        })
    }

    fn manifest_json(&self, image: &Image) -> String {
        let tags = self.repo_tag.iter().map(json::string).collect();
        let layers = image
            .layers
            .iter()
            .map(|l| json::string(&l.member))
            .collect();
        let entry = json::object([
            (
                "Config",
                json::string(format!("{}.json", image.config.hex())),
            ),
            ("RepoTags", JsonValue::Array(tags)),
            ("Layers", JsonValue::Array(layers)),
        ]);
        json::to_string_sorted(&JsonValue::Array(vec![entry]))
    }
}

/// Inflates a layer blob into the open member; returns the diff_id and the tar's size.
fn inflate_into(
    media_type: &str,
    blob: &mut dyn Read,
    out: &mut TarWriter,
) -> Result<(Digest, u64)> {
    let mut plain = uncompressed(media_type, Box::new(blob))?;
    let mut w = HashWriter::new(out);
    copy(&mut plain, &mut w, &mut |_| {})?;
    // A gzip reader stops at its stream's end: reading on checks nothing trails it.
    let mut rest = [0u8; 1];
    if plain.read(&mut rest)? != 0 {
        return Err(Error::new("data follows the end of the compressed layer"));
    }
    let (diff_id, size, _) = w.finish();
    Ok((diff_id, size))
}

/// REPO:TAG as written in RepoTags (`:latest` added when there is no tag).
fn check_repo_tag(r: &str) -> Result<String> {
    let ok = !r.is_empty()
        && r.len() <= 512
        && !r.contains('@')
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:/".contains(&b));
    if !ok {
        return Err(Error::new(format!("invalid image name {r:?}"))
            .hint("name the image REPO:TAG, e.g. docker-archive:img.tar:example/app:1.0"));
    }
    let last = r.rsplit('/').next().unwrap_or(r);
    Ok(if last.contains(':') {
        r.to_string()
    } else {
        format!("{r}:latest")
    })
}

impl ImageDest for DockerArchiveDest {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn accepts_index(&self) -> Result<()> {
        Err(self.not_an_index())
    }

    fn missing(&mut self, blobs: &[Descriptor]) -> Result<Vec<bool>> {
        Ok(blobs
            .iter()
            .map(|d| !self.configs.contains_key(&d.digest) && !self.layers.contains_key(&d.digest))
            .collect())
    }

    fn put_blob(
        &mut self,
        desc: &Descriptor,
        src: &mut dyn BlobSource,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        if !self.missing(std::slice::from_ref(desc))?[0] {
            return Ok(());
        }
        let stored = if desc.media_type == OCI_CONFIG || desc.media_type == DOCKER_CONFIG {
            self.put_config(desc, src)
        } else {
            self.put_layer(desc, src, progress)
        };
        stored.with_context(|| format!("{}: blob {}", self.name, desc.digest.short()))
    }

    fn put_manifest(&mut self, raw: &RawManifest, role: ManifestRole) -> Result<Digest> {
        if role == ManifestRole::Child {
            return Err(self.not_an_index());
        }
        verify(
            &format!("{}: manifest", self.name),
            &raw.digest,
            &Digest::of_bytes(&raw.bytes),
        )?;
        let m = match parse_manifest(&raw.bytes, raw.media_type.as_deref())
            .with_context(|| format!("{}: manifest", self.name))?
        {
            Fetched::Manifest(m) => m,
            Fetched::Index(_) => return Err(self.not_an_index()),
        };
        let image = self
            .image_of(&m)
            .with_context(|| format!("{}: manifest", self.name))?;
        if self
            .image
            .as_ref()
            .is_some_and(|i| i.config != image.config)
        {
            return Err(Error::new(format!(
                "{}: a docker-archive written by barge holds one image",
                self.name
            )));
        }
        let config_size = self.configs[&image.config].len() as u64;
        let layers: Vec<(Digest, u64)> = image
            .layers
            .iter()
            .map(|l| (l.diff_id.clone(), l.size))
            .collect();
        let digest = synthesize(&image.config, config_size, &layers).digest;
        self.image = Some(image);
        Ok(digest)
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        let image = self
            .image
            .take()
            .ok_or_else(|| Error::new(format!("{}: no image was written", self.name)))?;
        let manifest = self.manifest_json(&image);
        self.out.add_bytes("manifest.json", manifest.as_bytes())?;
        let me = *self;
        me.out
            .finish()
            .with_context(|| format!("write {}", me.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::oci_archive::OciArchiveSource;
    use crate::image::tar_file::testing::*;
    use std::fs;
    use std::path::PathBuf;

    /// An OCI layout made by umoci, and the docker-archive skopeo makes of it.
    fn skopeo_docker_archive(s: &Scratch) -> (PathBuf, PathBuf) {
        let layout = s.join("layout");
        umoci_layout(&layout, "v1", "docker");
        let archive = s.join("img.tar");
        run(
            "skopeo",
            &[
                "copy",
                "--quiet",
                &format!("oci:{}:v1", layout.display()),
                &format!("docker-archive:{}:example/app:1.0", archive.display()),
            ],
        );
        (layout, archive)
    }

    #[test]
    fn familiar_names() {
        assert_eq!(familiar("docker.io/library/busybox"), "busybox:latest");
        assert_eq!(familiar("example/app:1.0"), "example/app:1.0");
        assert_eq!(familiar("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(check_repo_tag("example/app").unwrap(), "example/app:latest");
        assert!(check_repo_tag("x@sha256:00").is_err());
        assert!(check_repo_tag("a b").is_err());
    }

    #[test]
    fn reads_what_skopeo_writes() {
        let s = Scratch::new("dockread");
        let (layout, archive) = skopeo_docker_archive(&s);
        let (_, want) = layout_manifest(&layout);
        let config = layout_blob(&layout, &want.config.digest);
        let diff_ids = ImageConfig::parse(&config, 2).unwrap().diff_ids;
        for r in [
            Some("example/app:1.0"),
            None,
            Some("@0"),
            Some("docker.io/example/app:1.0"),
        ] {
            let mut src = DockerArchiveSource::open(&archive, r).unwrap();
            let raw = src.manifest().unwrap();
            let Fetched::Manifest(m) = parse_manifest(&raw.bytes, None).unwrap() else {
                panic!()
            };
            assert_eq!(m.media_type, OCI_MANIFEST);
            assert_eq!(m.config.digest, want.config.digest);
            assert_eq!(read_blob(&mut src, &m.config).unwrap(), config);
            for (l, diff_id) in m.layers.iter().zip(&diff_ids) {
                assert_eq!(&l.digest, diff_id);
                assert_eq!(l.media_type, OCI_LAYER_TAR);
                read_blob(&mut src, l).unwrap();
            }
        }
        let e = DockerArchiveSource::open(&archive, Some("other:1"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("no image tagged") && e.contains("example/app:1.0"),
            "{e}"
        );
        let e = OciArchiveSource::open(&archive, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not an oci-archive"), "{e}");
    }

    /// Writes what `src` holds to a docker-archive with barge; returns the manifest digest.
    fn write_archive(src: &mut dyn ImageSource, out: &Path, tag: &str) -> Digest {
        let dst = DockerArchiveDest::create(out, Some(tag)).unwrap();
        copy_image(src, Box::new(dst)).unwrap()
    }

    #[test]
    fn writes_what_skopeo_reads() {
        let s = Scratch::new("dockwrite");
        let layout = s.join("layout");
        umoci_layout(&layout, "v1", "docker-write");
        let oci = s.join("img.oci.tar");
        run(
            "skopeo",
            &[
                "copy",
                "--quiet",
                &format!("oci:{}:v1", layout.display()),
                &format!("oci-archive:{}", oci.display()),
            ],
        );
        let (_, want) = layout_manifest(&layout);
        let out = s.join("out.tar");
        let digest = write_archive(
            &mut OciArchiveSource::open(&oci, None).unwrap(),
            &out,
            "example/w:2",
        );
        let mut back = DockerArchiveSource::open(&out, Some("example/w:2")).unwrap();
        assert_eq!(
            back.manifest().unwrap().digest,
            digest,
            "put_manifest names the digest a reader sees"
        );
        let inspect = run(
            "skopeo",
            &["inspect", &format!("docker-archive:{}", out.display())],
        );
        assert!(
            inspect.contains("example/w:2") || inspect.contains("\"Layers\""),
            "{inspect}"
        );
        let copied = s.join("copied");
        run(
            "skopeo",
            &[
                "copy",
                "--quiet",
                &format!("docker-archive:{}:example/w:2", out.display()),
                &format!("oci:{}:x", copied.display()),
            ],
        );
        // skopeo re-serializes the config (schema2 → OCI) and recompresses the layers:
        // the same document, and layers that inflate to the config's diff_ids.
        let (_, got) = layout_manifest(&copied);
        let config = layout_blob(&copied, &got.config.digest);
        let parse = |b: &[u8]| json::parse(b, "config").unwrap();
        assert_eq!(
            parse(&config),
            parse(&layout_blob(&layout, &want.config.digest))
        );
        let diff_ids = ImageConfig::parse(&config, got.layers.len())
            .unwrap()
            .diff_ids;
        for (l, diff_id) in got.layers.iter().zip(&diff_ids) {
            let blob = layout_blob(&copied, &l.digest);
            let mut plain = HashReader::new(GzipReader::new(&blob[..]));
            std::io::copy(&mut plain, &mut std::io::sink()).unwrap();
            assert_eq!(&plain.finish().0, diff_id);
        }
        // Reading it back through barge and writing again gives the same archive image.
        let again = s.join("again.tar");
        assert_eq!(write_archive(&mut back, &again, "example/w:2"), digest);
        let listing = run("tar", &["-tf", out.to_str().unwrap()]);
        assert!(
            listing.contains("manifest.json")
                && listing.contains(&format!("{}.json", want.config.digest.hex())),
            "{listing}"
        );
    }

    #[test]
    fn podman_loads_what_it_writes() {
        let s = Scratch::new("dockpodman");
        let (_, archive) = skopeo_docker_archive(&s);
        let out = s.join("out.tar");
        write_archive(
            &mut DockerArchiveSource::open(&archive, None).unwrap(),
            &out,
            "example/podman:3",
        );
        let root = s.join("root");
        let runroot = s.join("runroot");
        let podman = |args: &[&str]| {
            let mut all = vec![
                "--root",
                root.to_str().unwrap(),
                "--runroot",
                runroot.to_str().unwrap(),
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ];
            all.extend_from_slice(args);
            run("podman", &all)
        };
        let loaded = podman(&["load", "-i", out.to_str().unwrap()]);
        assert!(loaded.contains("example/podman:3"), "{loaded}");
        let images = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        assert!(images.contains("localhost/example/podman:3"), "{images}");
    }

    #[test]
    fn bad_layers_are_refused_and_leave_no_file() {
        let s = Scratch::new("dockbad");
        let (_, archive) = skopeo_docker_archive(&s);
        let mut src = DockerArchiveSource::open(&archive, None).unwrap();
        let raw = src.manifest().unwrap();
        let Fetched::Manifest(m) = parse_manifest(&raw.bytes, None).unwrap() else {
            panic!()
        };
        let out = s.join("out.tar");
        let mut dst = DockerArchiveDest::create(&out, None).unwrap();
        // A blob that is not what its descriptor says.
        let mut wrong = m.layers[0].clone();
        wrong.digest = m.layers[1].digest.clone();
        let mut b = src.blob(&m.layers[0]).unwrap();
        let e = dst
            .put_blob(&wrong, &mut *b, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("digest mismatch"), "{e}");
        drop(b);
        // Layers swapped against the config's diff_ids.
        let mut c = src.blob(&m.config).unwrap();
        dst.put_blob(&m.config, &mut *c, &mut |_| {}).unwrap();
        drop(c);
        for l in &m.layers {
            let mut b = src.blob(l).unwrap();
            dst.put_blob(l, &mut *b, &mut |_| {}).unwrap();
        }
        let mut swapped = m.clone();
        swapped.layers.reverse();
        let bytes = json::to_string_sorted(&swapped.to_json()).into_bytes();
        let bad = RawManifest {
            digest: Digest::of_bytes(&bytes),
            bytes,
            media_type: None,
        };
        let e = dst
            .put_manifest(&bad, ManifestRole::Top)
            .unwrap_err()
            .to_string();
        assert!(e.contains("diff_id"), "{e}");
        drop(dst);
        assert!(!out.exists());
        assert_eq!(
            fs::read_dir(&s.0).unwrap().count(),
            2,
            "only the layout and the archive"
        );
    }

    #[test]
    fn reads_docker_25_archives_with_their_oci_manifest() {
        let s = Scratch::new("dock25");
        let (_, archive) = skopeo_docker_archive(&s);
        let plain = s.join("plain");
        run(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--dest-oci-accept-uncompressed-layers",
                &format!("docker-archive:{}", archive.display()),
                &format!("oci:{}:1.0", plain.display()),
            ],
        );
        let (want_bytes, want) = layout_manifest(&plain);
        // (skopeo labels these uncompressed layers tar+gzip; Docker 25 labels them tar.)
        // Docker 25's shape: the layout, and manifest.json naming its blobs.
        let p = s.join("docker25.tar");
        let mut w = TarWriter::create(&p, "t").unwrap();
        for f in ["oci-layout", "index.json"] {
            w.add_bytes(f, &fs::read(plain.join(f)).unwrap()).unwrap();
        }
        for e in fs::read_dir(plain.join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            let name = format!("blobs/sha256/{}", e.file_name().to_str().unwrap());
            w.add_bytes(&name, &fs::read(e.path()).unwrap()).unwrap();
        }
        let blob = |d: &Digest| json::string(format!("blobs/sha256/{}", d.hex()));
        let entry = json::object([
            ("Config", blob(&want.config.digest)),
            (
                "RepoTags",
                JsonValue::Array(vec![json::string("example/app:1.0")]),
            ),
            (
                "Layers",
                JsonValue::Array(want.layers.iter().map(|l| blob(&l.digest)).collect()),
            ),
        ]);
        let manifest = json::to_string_sorted(&JsonValue::Array(vec![entry]));
        w.add_bytes("manifest.json", manifest.as_bytes()).unwrap();
        w.finish().unwrap();
        let mut src = DockerArchiveSource::open(&p, Some("example/app:1.0")).unwrap();
        let raw = src.manifest().unwrap();
        assert_eq!(
            raw.bytes, want_bytes,
            "the archive's own manifest, digest kept"
        );
        for d in std::iter::once(&want.config).chain(&want.layers) {
            assert_eq!(
                read_blob(&mut src, d).unwrap(),
                layout_blob(&plain, &d.digest)
            );
        }
    }

    /// A docker-archive with `manifest.json` written by hand around `layers` (name, bytes).
    fn handmade(p: &Path, manifest: &str, members: &[(&str, &[u8])]) {
        let mut w = TarWriter::create(p, "t").unwrap();
        w.add_bytes("manifest.json", manifest.as_bytes()).unwrap();
        for (n, b) in members {
            w.add_bytes(n, b).unwrap();
        }
        w.finish().unwrap();
    }

    /// skopeo's archive unpacked, `manifest.json` edited by `edit`, packed again by GNU tar
    /// (`./` names, real symlinks).
    fn repacked(
        s: &Scratch,
        archive: &Path,
        edit: impl Fn(&Path, JsonValue) -> JsonValue,
    ) -> PathBuf {
        let dir = s.join("unpacked");
        fs::create_dir_all(&dir).unwrap();
        run(
            "tar",
            &[
                "-xf",
                archive.to_str().unwrap(),
                "-C",
                dir.to_str().unwrap(),
            ],
        );
        let m = json::parse(&fs::read(dir.join("manifest.json")).unwrap(), "m").unwrap();
        let m = json::to_string_sorted(&edit(&dir, m));
        fs::write(dir.join("manifest.json"), m).unwrap();
        let out = s.join("repacked.tar");
        run(
            "tar",
            &[
                "-cf",
                out.to_str().unwrap(),
                "-C",
                dir.to_str().unwrap(),
                ".",
            ],
        );
        fs::remove_dir_all(&dir).unwrap();
        out
    }

    #[test]
    fn reads_the_legacy_layout_through_its_symlinks_and_refuses_escapes() {
        let s = Scratch::new("docklegacy");
        let (layout, archive) = skopeo_docker_archive(&s);
        let (_, want) = layout_manifest(&layout);
        // Layers named `<id>/layer.tar`, symlinks to skopeo's `<diff_id>.tar`.
        let legacy = repacked(&s, &archive, |dir, mut m| {
            let mut ids: Vec<String> = fs::read_dir(dir)
                .unwrap()
                .filter_map(|e| {
                    let e = e.unwrap();
                    e.path()
                        .join("layer.tar")
                        .exists()
                        .then(|| e.file_name().into_string().unwrap())
                })
                .collect();
            ids.sort();
            let JsonValue::Array(items) = &mut m else {
                panic!()
            };
            let JsonValue::Object(entry) = &mut items[0] else {
                panic!()
            };
            let JsonValue::Array(layers) = &entry["Layers"] else {
                panic!()
            };
            // Keep the order: map each <diff_id>.tar to the <id> whose symlink points at it.
            let legacy_names = layers
                .iter()
                .map(|l| {
                    let JsonValue::String(l) = l else { panic!() };
                    let id = ids
                        .iter()
                        .find(|id| {
                            fs::read_link(dir.join(id).join("layer.tar"))
                                .unwrap()
                                .ends_with(l)
                        })
                        .unwrap();
                    json::string(format!("{id}/layer.tar"))
                })
                .collect();
            entry.insert("Layers".into(), JsonValue::Array(legacy_names));
            m
        });
        let listing = run("tar", &["-tvf", legacy.to_str().unwrap()]);
        assert!(
            listing.contains("./manifest.json") && listing.contains("/layer.tar -> "),
            "{listing}"
        );
        let mut src = DockerArchiveSource::open(&legacy, Some("example/app:1.0")).unwrap();
        let raw = src.manifest().unwrap();
        let Fetched::Manifest(m) = parse_manifest(&raw.bytes, None).unwrap() else {
            panic!()
        };
        assert_eq!(m.config.digest, want.config.digest);
        assert_eq!(m.layers.len(), 2);
        for l in &m.layers {
            read_blob(&mut src, l).unwrap();
        }
        fs::remove_file(&legacy).unwrap();
        // A layer that is a symlink out of the archive.
        let evil = repacked(&s, &archive, |dir, mut m| {
            std::os::unix::fs::symlink("../../../etc/passwd", dir.join("evil.tar")).unwrap();
            let JsonValue::Array(items) = &mut m else {
                panic!()
            };
            let JsonValue::Object(entry) = &mut items[0] else {
                panic!()
            };
            entry.insert(
                "Layers".into(),
                JsonValue::Array(vec![json::string("evil.tar")]),
            );
            m
        });
        let e = DockerArchiveSource::open(&evil, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("links outside the archive"), "{e}");
    }

    #[test]
    fn multi_image_archives_select_by_tag_or_position() {
        let s = Scratch::new("dockmulti");
        let p = s.join("m.tar");
        let config = |arch: &str| {
            format!(r#"{{"architecture":"{arch}","rootfs":{{"type":"layers","diff_ids":[]}}}}"#)
        };
        let (a, b) = (config("amd64"), config("arm64"));
        handmade(
            &p,
            r#"[{"Config":"a.json","RepoTags":["busybox:latest"]},{"Config":"b.json","RepoTags":["example/b:2"]}]"#,
            &[("a.json", a.as_bytes()), ("b.json", b.as_bytes())],
        );
        let config_of = |r: Option<&str>| {
            let raw = DockerArchiveSource::open(&p, r)
                .unwrap()
                .manifest()
                .unwrap();
            let Fetched::Manifest(m) = parse_manifest(&raw.bytes, None).unwrap() else {
                panic!()
            };
            m.config.digest
        };
        assert_eq!(
            config_of(Some("docker.io/library/busybox")),
            Digest::of_bytes(a.as_bytes())
        );
        assert_eq!(
            config_of(Some("example/b:2")),
            Digest::of_bytes(b.as_bytes())
        );
        assert_eq!(config_of(Some("@1")), Digest::of_bytes(b.as_bytes()));
        let e = DockerArchiveSource::open(&p, None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("holds 2 images") && e.contains("busybox:latest, example/b:2"),
            "{e}"
        );
    }

    #[test]
    fn hostile_archives_give_clear_errors() {
        let s = Scratch::new("dockhostile");
        let p = s.join("h.tar");
        let layer = b"not really a tar, but bytes";
        let config = format!(
            "{{\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{}\"]}}}}",
            Digest::of_bytes(b"something else")
        );
        let open = || {
            DockerArchiveSource::open(&p, None)
                .map(drop)
                .unwrap_err()
                .to_string()
        };
        handmade(
            &p,
            r#"[{"Config":"../c.json","Layers":["l.tar"]}]"#,
            &[("l.tar", layer)],
        );
        let e = open();
        assert!(
            e.contains("\"../c.json\", which is not in the archive"),
            "{e}"
        );
        handmade(&p, r#"[{"Config":"/etc/passwd","Layers":[]}]"#, &[]);
        assert!(open().contains("not in the archive"));
        handmade(&p, r#"{"Config":"c.json"}"#, &[]);
        assert!(open().contains("not a JSON array"));
        handmade(&p, "[]", &[]);
        assert!(open().contains("holds no image"));
        handmade(&p, &format!("[{}]", " ".repeat(5 << 20)), &[]);
        assert!(open().contains("more than the"), "{}", open());
        // A layer whose bytes are not its diff_id: the caller's digest check catches it.
        handmade(
            &p,
            r#"[{"Config":"c.json","RepoTags":["a:b"],"Layers":["l.tar"]}]"#,
            &[("c.json", config.as_bytes()), ("l.tar", layer)],
        );
        let mut src = DockerArchiveSource::open(&p, Some("a:b")).unwrap();
        let raw = src.manifest().unwrap();
        let Fetched::Manifest(m) = parse_manifest(&raw.bytes, None).unwrap() else {
            panic!()
        };
        let e = read_blob(&mut src, &m.layers[0]).unwrap_err().to_string();
        assert!(e.contains("digest mismatch"), "{e}");
        let mut big = m.layers[0].clone();
        big.size += 1;
        assert!(src.blob(&big).is_err());
    }
}
