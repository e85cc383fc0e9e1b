//! The `oci-archive:FILE[:REF]` transport: an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/…`) inside one tar file, as `skopeo copy … oci-archive:`
//! writes it.
//!
//! Reading indexes the tar once and reads blobs by offset, never unpacking it. REF selects
//! the `index.json` entry whose `org.opencontainers.image.ref.name` is REF (or `@N`, the
//! N-th entry); without REF the archive must hold exactly one image.
//!
//! Writing builds a new tar beside FILE and renames it over FILE at `finish`. Writing into
//! an existing oci-archive adds the image and keeps the others (an entry with the same ref
//! name is replaced), as for an OCI layout directory; skopeo instead replaces the file.

use crate::digest::{verify, Digest, HashReader};
use crate::error::{Context, Error, Result};
use crate::image::tar_file::{copy, TarIndex, TarWriter};
use crate::image::{ImageDest, ImageSource, ManifestRole, RawManifest};
use crate::json::{self, JsonValue};
use crate::manifest::{parse_manifest, Descriptor, Fetched, MAX_MANIFEST, OCI_INDEX};
use crate::registry::source::BlobSource;
use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

/// The annotation naming an image in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_JSON: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";

/// How messages name this archive: its transport string, as `Transport` writes it.
fn transport_name(path: &Path, reference: Option<&str>) -> String {
    crate::image::transport::Transport::OciArchive {
        path: path.to_path_buf(),
        reference: reference.map(str::to_string),
    }
    .to_string()
}

fn blob_member(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// An oci-archive read in place.
pub struct OciArchiveSource {
    tar: TarIndex,
    name: String,
    top: Descriptor,
}

impl OciArchiveSource {
    /// Opens the archive at `path` and finds the image `reference` names in it.
    pub fn open(path: &Path, reference: Option<&str>) -> Result<Self> {
        let name = transport_name(path, reference);
        let tar = TarIndex::open(path, &name)?;
        let entries = read_index(&tar, &name)?;
        let top = select(&entries, reference, &name)?.clone();
        Ok(OciArchiveSource { tar, name, top })
    }

    fn small_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        self.tar
            .read_small(&blob_member(d), MAX_MANIFEST)?
            .ok_or_else(|| missing_blob(&self.name, d))
    }
}

fn missing_blob(name: &str, d: &Digest) -> Error {
    Error::new(format!("{name}: blob {d} is not in the archive"))
        .hint("the archive is incomplete; write it again")
}

/// The entries of an oci-archive's `index.json` (after checking it is an OCI layout).
fn read_index(tar: &TarIndex, name: &str) -> Result<Vec<Descriptor>> {
    let not_oci = |what: &str| {
        Error::new(format!("{name} is not an oci-archive: it has no {what}"))
            .hint("for a `docker save` file use docker-archive:FILE; for a directory use oci:DIR")
    };
    let layout = tar
        .read_small(LAYOUT_FILE, 4096)?
        .ok_or_else(|| not_oci("oci-layout file"))?;
    let layout = json::parse(&layout, "oci-layout").context(name)?;
    let version = json::get_str(&layout, "imageLayoutVersion").context(name)?;
    if !version.starts_with("1.") {
        return Err(Error::new(format!(
            "{name}: unsupported OCI layout version {version:?}"
        )));
    }
    let index = tar
        .read_small("index.json", MAX_MANIFEST)?
        .ok_or_else(|| not_oci("index.json"))?;
    match parse_manifest(&index, Some(OCI_INDEX)).with_context(|| format!("{name}: index.json"))? {
        Fetched::Index(i) => Ok(i.manifests),
        Fetched::Manifest(_) => Err(Error::new(format!(
            "{name}: index.json is an image manifest, not an index"
        ))),
    }
}

/// The entry `reference` names: its ref-name annotation, or `@N` (0-based); without
/// a reference, the only entry.
pub fn select<'a>(
    entries: &'a [Descriptor],
    reference: Option<&str>,
    name: &str,
) -> Result<&'a Descriptor> {
    let refs = || {
        let names: Vec<&str> = entries
            .iter()
            .filter_map(|d| d.annotation(REF_NAME))
            .collect();
        if names.is_empty() {
            "it has no named images".to_string()
        } else {
            format!("its refs are: {}", names.join(", "))
        }
    };
    match reference {
        Some(r) => {
            if let Some(n) = r.strip_prefix('@').and_then(|n| n.parse::<usize>().ok()) {
                return entries.get(n).ok_or_else(|| {
                    Error::new(format!("{name}: no image @{n}: it holds {}", entries.len()))
                });
            }
            entries
                .iter()
                .find(|d| d.annotation(REF_NAME) == Some(r))
                .ok_or_else(|| {
                    Error::new(format!("{name}: no image named {r:?}"))
                        .hint(format!("{}; name one of them after the file", refs()))
                })
        }
        None => match entries {
            [only] => Ok(only),
            [] => Err(Error::new(format!("{name}: the archive holds no image"))),
            _ => Err(Error::new(format!(
                "{name}: the archive holds {} images",
                entries.len()
            ))
            .hint(format!("{}; name one: FILE:REF (or FILE:@N)", refs()))),
        },
    }
}

impl ImageSource for OciArchiveSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn manifest(&mut self) -> Result<RawManifest> {
        let bytes = self.small_blob(&self.top.digest)?;
        let media_type = Some(self.top.media_type.clone()).filter(|m| !m.is_empty());
        Ok(RawManifest {
            digest: Digest::of_bytes(&bytes),
            bytes,
            media_type,
        })
    }

    fn child_manifest(&mut self, digest: &Digest) -> Result<RawManifest> {
        let bytes = self.small_blob(digest)?;
        Ok(RawManifest {
            digest: Digest::of_bytes(&bytes),
            bytes,
            media_type: None,
        })
    }

    fn blob(&mut self, desc: &Descriptor) -> Result<Box<dyn BlobSource + '_>> {
        let m = self
            .tar
            .get(&blob_member(&desc.digest))
            .ok_or_else(|| missing_blob(&self.name, &desc.digest))?;
        if m.size != desc.size {
            return Err(Error::new(format!(
                "{}: blob {} is {} bytes, the manifest says {}",
                self.name, desc.digest, m.size, desc.size
            ))
            .hint("the archive is damaged; write it again"));
        }
        Ok(Box::new(self.tar.section(m)))
    }
}

/// A descriptor as JSON for an index or manifest barge writes.
pub fn descriptor_json(d: &Descriptor) -> JsonValue {
    let mut pairs = vec![
        ("mediaType", json::string(&d.media_type)),
        ("digest", json::string(d.digest.as_str())),
        ("size", JsonValue::Number(d.size as f64)),
    ];
    if !d.annotations.is_empty() {
        let a = d
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), json::string(v)));
        pairs.push(("annotations", json::object(a)));
    }
    if let Some(p) = &d.platform {
        let mut pp = vec![
            ("os", json::string(&p.os)),
            ("architecture", json::string(&p.architecture)),
        ];
        if let Some(v) = &p.variant {
            pp.push(("variant", json::string(v)));
        }
        pairs.push(("platform", json::object(pp)));
    }
    json::object(pairs)
}

/// An oci-archive being written; visible at `finish`.
pub struct OciArchiveDest {
    out: TarWriter,
    name: String,
    reference: Option<String>,
    /// Blobs (and manifests) written to the new tar.
    written: HashSet<Digest>,
    /// The archive this one replaces, whose images are kept.
    old: Option<(TarIndex, Vec<Descriptor>)>,
    top: Option<Descriptor>,
}

impl OciArchiveDest {
    /// Prepares to write the archive at `path`, naming the image `reference` in it.
    pub fn create(path: &Path, reference: Option<&str>) -> Result<Self> {
        let name = transport_name(path, reference);
        if let Some(r) = reference {
            check_ref_name(r).context(&name)?;
        }
        let old = if path.exists() {
            let tar = TarIndex::open(path, &name).map_err(|e| exists_hint(e, path))?;
            let entries = read_index(&tar, &name).map_err(|e| exists_hint(e, path))?;
            Some((tar, entries))
        } else {
            None
        };
        let mut out = TarWriter::create(path, &name)?;
        out.add_dir("blobs")?;
        out.add_dir("blobs/sha256")?;
        Ok(OciArchiveDest {
            out,
            name,
            reference: reference.map(str::to_string),
            written: HashSet::new(),
            old,
            top: None,
        })
    }

    fn old_has(&self, d: &Descriptor) -> bool {
        self.old.as_ref().is_some_and(|(tar, _)| {
            tar.get(&blob_member(&d.digest))
                .is_some_and(|m| m.size == d.size)
        })
    }

    /// Streams `src` into a new member for `desc`, checking size and digest.
    fn write_blob(
        &mut self,
        desc: &Descriptor,
        src: &mut dyn Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        self.out.start_member()?;
        let mut hashed = HashReader::new(src.take(desc.size.saturating_add(1)));
        let copied = copy(&mut hashed, &mut self.out, progress);
        let (got, n) = hashed.finish();
        let checked = copied.and_then(|_| {
            if n != desc.size {
                return Err(Error::new(format!(
                    "blob {} is {n} bytes or more, expected {}",
                    desc.digest, desc.size
                )));
            }
            verify(&format!("blob {}", desc.digest), &desc.digest, &got)
        });
        match checked {
            Ok(()) => {
                self.out.end_member(&blob_member(&desc.digest))?;
                self.written.insert(desc.digest.clone());
                Ok(())
            }
            Err(e) => {
                self.out.abort_member()?;
                Err(e.context(&self.name))
            }
        }
    }

    /// Copies the old archive's blobs this one did not write.
    fn keep_old_blobs(&mut self) -> Result<()> {
        let Some((tar, _)) = &self.old else {
            return Ok(());
        };
        let mut names: Vec<(String, Digest)> = tar
            .file_names()
            .filter_map(|n| {
                let hex = n.strip_prefix("blobs/sha256/")?;
                let d = Digest::parse(&format!("sha256:{hex}")).ok()?;
                (!self.written.contains(&d)).then(|| (n.to_string(), d))
            })
            .collect();
        names.sort();
        for (member, _) in names {
            let m = tar
                .get(&member)
                .ok_or_else(|| Error::new("internal: member vanished"))?;
            self.out.start_member()?;
            copy(&mut tar.section(m), &mut self.out, &mut |_| {})?;
            self.out.end_member(&member)?;
        }
        Ok(())
    }

    fn index_json(&self, top: &Descriptor) -> String {
        let old = self.old.as_ref().map(|(_, e)| e.as_slice()).unwrap_or(&[]);
        let replaced = |d: &Descriptor| match &self.reference {
            Some(r) => d.annotation(REF_NAME) == Some(r.as_str()),
            None => d.digest == top.digest && d.annotation(REF_NAME).is_none(),
        };
        let mut entries: Vec<JsonValue> = old
            .iter()
            .filter(|d| !replaced(d))
            .map(descriptor_json)
            .collect();
        entries.push(descriptor_json(top));
        json::to_string_sorted(&json::object([
            ("schemaVersion", JsonValue::Number(2.0)),
            ("mediaType", json::string(OCI_INDEX)),
            ("manifests", JsonValue::Array(entries)),
        ]))
    }
}

fn exists_hint(e: Error, path: &Path) -> Error {
    e.hint(format!(
        "{} exists and is not an oci-archive barge can add to; remove it or write elsewhere",
        path.display()
    ))
}

/// A ref name as the OCI layout spec allows (`A-Za-z0-9` and `-._:@/+`, not empty).
fn check_ref_name(r: &str) -> Result<()> {
    let ok = !r.is_empty()
        && r.len() <= 256
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:@/+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new(format!("invalid image ref name {r:?}"))
            .hint("use letters, digits and - . _ : @ / +"))
    }
}

impl ImageDest for OciArchiveDest {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn missing(&mut self, blobs: &[Descriptor]) -> Result<Vec<bool>> {
        Ok(blobs
            .iter()
            .map(|d| !self.written.contains(&d.digest) && !self.old_has(d))
            .collect())
    }

    fn put_blob(
        &mut self,
        desc: &Descriptor,
        src: &mut dyn BlobSource,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        if self.written.contains(&desc.digest) {
            return Ok(());
        }
        self.write_blob(desc, src, progress)
    }

    fn put_manifest(&mut self, raw: &RawManifest, role: ManifestRole) -> Result<Digest> {
        let digest = Digest::of_bytes(&raw.bytes);
        verify(&format!("{}: manifest", self.name), &raw.digest, &digest)?;
        // As for an `oci:` directory: the declared type, blobs unchecked (an index
        // copied with --all carries attestations whose layers are not tars).
        let media_type = super::registry::media_type_of(raw)
            .with_context(|| format!("{}: manifest", self.name))?;
        let desc = Descriptor {
            media_type,
            digest: digest.clone(),
            size: raw.bytes.len() as u64,
            platform: None,
            annotations: match (&self.reference, role) {
                (Some(r), ManifestRole::Top) => vec![(REF_NAME.to_string(), r.clone())],
                _ => Vec::new(),
            },
            urls: Vec::new(),
        };
        if !self.written.contains(&digest) {
            self.write_blob(&desc, &mut &raw.bytes[..], &mut |_| {})?;
        }
        if role == ManifestRole::Top {
            self.top = Some(desc);
        }
        Ok(digest)
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        let top = self
            .top
            .take()
            .ok_or_else(|| Error::new(format!("{}: no image was written", self.name)))?;
        self.keep_old_blobs()
            .with_context(|| format!("{}: keep the images already in it", self.name))?;
        let index = self.index_json(&top);
        self.out.add_bytes(LAYOUT_FILE, LAYOUT_JSON.as_bytes())?;
        self.out.add_bytes("index.json", index.as_bytes())?;
        let me = *self;
        me.out
            .finish()
            .with_context(|| format!("write {}", me.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tar_file::testing::*;
    use std::fs;
    use std::path::PathBuf;

    fn skopeo_archive(s: &Scratch, tag: &str) -> PathBuf {
        let layout = s.join("layout");
        umoci_layout(&layout, tag, "oci");
        let archive = s.join("img.tar");
        run(
            "skopeo",
            &[
                "copy",
                "--quiet",
                &format!("oci:{}:{tag}", layout.display()),
                &format!("oci-archive:{}:{tag}", archive.display()),
            ],
        );
        archive
    }

    #[test]
    fn reads_what_skopeo_writes() {
        let s = Scratch::new("ociread");
        let archive = skopeo_archive(&s, "v1");
        let (want_bytes, want) = layout_manifest(&s.join("layout"));
        for reference in [Some("v1"), None, Some("@0")] {
            let mut src = OciArchiveSource::open(&archive, reference).unwrap();
            let raw = src.manifest().unwrap();
            assert_eq!(raw.bytes, want_bytes, "manifest bytes kept");
            for desc in std::iter::once(&want.config).chain(&want.layers) {
                let got = read_blob(&mut src, desc).unwrap();
                assert_eq!(got, layout_blob(&s.join("layout"), &desc.digest));
            }
        }
        let e = OciArchiveSource::open(&archive, Some("v2"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("no image named \"v2\"") && e.contains("v1"),
            "{e}"
        );
    }

    #[test]
    fn writes_what_skopeo_reads_and_adds_images() {
        let s = Scratch::new("ociwrite");
        let archive = skopeo_archive(&s, "v1");
        let (want_bytes, want) = layout_manifest(&s.join("layout"));
        let out = s.join("out.tar");
        for r in ["first", "second"] {
            let mut src = OciArchiveSource::open(&archive, None).unwrap();
            let dst = OciArchiveDest::create(&out, Some(r)).unwrap();
            let d = copy_image(&mut src, Box::new(dst)).unwrap();
            assert_eq!(d, Digest::of_bytes(&want_bytes), "manifest digest kept");
        }
        let inspect = run(
            "skopeo",
            &[
                "inspect",
                "--raw",
                &format!("oci-archive:{}:second", out.display()),
            ],
        );
        assert_eq!(inspect.as_bytes(), &want_bytes[..]);
        let back = s.join("back");
        run(
            "skopeo",
            &[
                "copy",
                "--quiet",
                &format!("oci-archive:{}:first", out.display()),
                &format!("oci:{}:x", back.display()),
            ],
        );
        let (got_bytes, _) = layout_manifest(&back);
        assert_eq!(got_bytes, want_bytes);
        for desc in std::iter::once(&want.config).chain(&want.layers) {
            assert_eq!(
                layout_blob(&back, &desc.digest),
                layout_blob(&s.join("layout"), &desc.digest)
            );
        }
        // umoci reads it too, unpacked by tar or by way of skopeo.
        let bundle = s.join("bundle");
        let image = format!("{}:x", back.display());
        run(
            "umoci",
            &["unpack", "--image", &image, bundle.to_str().unwrap()],
        );
        assert!(bundle.join("rootfs/etc/file1").is_file());
        let untarred = s.join("untarred");
        fs::create_dir(&untarred).unwrap();
        run(
            "tar",
            &[
                "-xf",
                out.to_str().unwrap(),
                "-C",
                untarred.to_str().unwrap(),
            ],
        );
        let refs = run("umoci", &["ls", "--layout", untarred.to_str().unwrap()]);
        assert_eq!(
            refs.split_whitespace().collect::<Vec<_>>(),
            ["first", "second"]
        );
        for dir in [&bundle, &untarred] {
            fs::remove_dir_all(dir).unwrap();
        }
        let src = OciArchiveSource::open(&out, None);
        let e = src.err().unwrap().to_string();
        assert!(
            e.contains("holds 2 images") && e.contains("first, second"),
            "{e}"
        );
        assert_eq!(fs::read_dir(&s.0).unwrap().count(), 4, "no temp files left");
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let s = Scratch::new("ocifail");
        let archive = skopeo_archive(&s, "v1");
        let before = fs::read(&archive).unwrap();
        let mut src = OciArchiveSource::open(&archive, None).unwrap();
        let raw = src.manifest().unwrap();
        let Fetched::Manifest(m) = parse_manifest(&raw.bytes, None).unwrap() else {
            panic!()
        };
        let mut dst = OciArchiveDest::create(&archive, Some("v2")).unwrap();
        let mut wrong = m.layers[0].clone();
        wrong.digest = m.layers[1].digest.clone();
        wrong.size = m.layers[0].size;
        let mut blob = src.blob(&m.layers[0]).unwrap();
        let e = dst
            .put_blob(&wrong, &mut *blob, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("digest mismatch"), "{e}");
        drop(blob);
        drop(dst);
        assert_eq!(fs::read(&archive).unwrap(), before);
        assert_eq!(fs::read_dir(&s.0).unwrap().count(), 2, "no temp file left");
    }

    #[test]
    fn not_an_oci_archive_says_so() {
        let s = Scratch::new("ocinot");
        let p = s.join("x.tar");
        let mut w = TarWriter::create(&p, "t").unwrap();
        w.add_bytes("manifest.json", b"[]").unwrap();
        w.finish().unwrap();
        let e = OciArchiveSource::open(&p, None).err().unwrap().to_string();
        assert!(
            e.contains("not an oci-archive") && e.contains("docker-archive"),
            "{e}"
        );
    }
}
