//! OCI image layouts (a directory with `oci-layout`, `index.json` and
//! `blobs/sha256/…`) as an [`ImageSource`] and an [`ImageDest`], read and written the
//! way skopeo and umoci do. An image is named by the `org.opencontainers.image.ref.name`
//! annotation of its `index.json` entry. Paths inside the layout come from validated
//! digests only. Blobs are written under a temporary name, checked, then renamed;
//! `index.json` is replaced in one rename at `finish`, keeping the other images.

use crate::bail;
use crate::digest::{Digest, HashWriter};
use crate::error::{Context, Error, Result};
use crate::image::{ImageDest, ImageSource, ManifestRole, RawManifest};
use crate::json::{self, JsonValue};
use crate::manifest::{self, Descriptor, Fetched, MAX_MANIFEST};
use crate::registry::source::BlobSource;
use crate::signal::Interruptible;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The annotation naming an image in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Bound on `index.json` (a layout holding many images stays far below it).
const MAX_INDEX: u64 = 16 << 20;

/// `name` as messages say it: `oci:PATH[:REF]`.
fn display(path: &Path, reference: Option<&str>) -> String {
    match reference {
        Some(r) => format!("oci:{}:{r}", path.display()),
        None => format!("oci:{}", path.display()),
    }
}

/// `DIR/blobs/sha256/<hex>`: the only way a path inside the layout is made.
fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(digest.hex())
}

/// Reads `index.json` (bounded); `None` when the layout has none yet.
fn read_index(dir: &Path) -> Result<Option<JsonValue>> {
    let path = dir.join("index.json");
    let file = match File::open(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        r => r.with_context(|| format!("open {}", path.display()))?,
    };
    let mut bytes = Vec::new();
    file.take(MAX_INDEX + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("read {}", path.display()))?;
    if bytes.len() as u64 > MAX_INDEX {
        bail!("{} is larger than {MAX_INDEX} bytes", path.display());
    }
    Ok(Some(json::parse(&bytes, "index.json")?))
}

/// Refuses a directory that is not an OCI image layout, saying what is missing.
fn check_layout(dir: &Path, name: &str) -> Result<()> {
    let marker = dir.join(LAYOUT_FILE);
    match fs::metadata(&marker) {
        Ok(m) if m.is_file() => Ok(()),
        _ if !dir.is_dir() => Err(Error::new(format!(
            "{name}: {} is not a directory",
            dir.display()
        ))
        .hint(
            "give the path of an OCI image layout (written by skopeo copy, umoci or barge copy)",
        )),
        _ => Err(Error::new(format!(
            "{name}: {} is not an OCI image layout (no oci-layout file)",
            dir.display()
        ))
        .hint("give the directory that holds oci-layout, index.json and blobs/")),
    }
}

/// The index entries and the ref names they carry.
fn entries(index: &JsonValue) -> Result<Vec<Descriptor>> {
    match manifest::parse_manifest(
        &json::to_string_sorted(index).into_bytes(),
        Some(manifest::OCI_INDEX),
    )? {
        Fetched::Index(i) => Ok(i.manifests),
        Fetched::Manifest(_) => bail!("index.json is an image manifest, not an index"),
    }
}

/// The entry `reference` names, or the only one; else an error listing the refs.
fn select(all: &[Descriptor], reference: Option<&str>, name: &str) -> Result<Descriptor> {
    let refs: Vec<&str> = all.iter().filter_map(|d| d.annotation(REF_NAME)).collect();
    let listed = match refs.is_empty() {
        true => "no named images".to_string(),
        false => format!("refs: {}", refs.join(", ")),
    };
    match reference {
        Some(r) => all
            .iter()
            .find(|d| d.annotation(REF_NAME) == Some(r))
            .cloned()
            .ok_or_else(|| {
                Error::new(format!(
                    "{name}: no image with ref {r:?} in the layout ({listed})"
                ))
                .hint("name one of the layout's refs after the path: oci:PATH:REF")
            }),
        None => match all {
            [one] => Ok(one.clone()),
            [] => Err(Error::new(format!("{name}: the layout holds no image"))
                .hint("copy an image into it first, e.g. barge copy IMAGE oci:PATH:REF")),
            _ => Err(Error::new(format!(
                "{name}: the layout holds {} images ({listed})",
                all.len()
            ))
            .hint("say which one: oci:PATH:REF")),
        },
    }
}

/// Reads one image of a layout.
pub struct LayoutSource {
    dir: PathBuf,
    name: String,
    top: Descriptor,
}

impl LayoutSource {
    pub fn open(dir: &Path, reference: Option<&str>) -> Result<LayoutSource> {
        let name = display(dir, reference);
        check_layout(dir, &name)?;
        let Some(index) = read_index(dir).with_context(|| name.clone())? else {
            bail!("{name}: the layout has no index.json");
        };
        let all = entries(&index).with_context(|| format!("{name}: index.json"))?;
        let top = select(&all, reference, &name)?;
        Ok(LayoutSource {
            dir: dir.to_path_buf(),
            name,
            top,
        })
    }

    /// A manifest blob, bounded and checked against `digest` (and `size` when known).
    fn read_manifest(
        &self,
        digest: &Digest,
        size: Option<u64>,
        media_type: Option<&str>,
    ) -> Result<RawManifest> {
        if size.is_some_and(|s| s > MAX_MANIFEST) {
            bail!(
                "{}: manifest {digest} is larger than {MAX_MANIFEST} bytes",
                self.name
            );
        }
        let bytes = self.read_bounded(digest, MAX_MANIFEST)?;
        if let Some(s) = size.filter(|s| *s != bytes.len() as u64) {
            bail!(
                "{}: manifest {digest} has {} bytes, its descriptor says {s}",
                self.name,
                bytes.len()
            );
        }
        let got = Digest::of_bytes(&bytes);
        crate::digest::verify(&format!("{}: manifest", self.name), digest, &got)?;
        Ok(RawManifest {
            bytes,
            media_type: media_type.filter(|m| !m.is_empty()).map(str::to_string),
            digest: got,
        })
    }

    fn read_bounded(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let path = blob_path(&self.dir, digest);
        let file = File::open(&path).map_err(|e| self.missing_blob(digest, e))?;
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("read {}", path.display()))?;
        if bytes.len() as u64 > limit {
            bail!("{}: blob {digest} is larger than {limit} bytes", self.name);
        }
        Ok(bytes)
    }

    fn missing_blob(&self, digest: &Digest, e: io::Error) -> Error {
        let e = Error::from(e).context(format!("{}: blob {digest}", self.name));
        e.hint("the layout is incomplete; copy the image into it again")
    }
}

impl ImageSource for LayoutSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn manifest(&mut self) -> Result<RawManifest> {
        let top = self.top.clone();
        self.read_manifest(&top.digest, Some(top.size), Some(&top.media_type))
    }

    fn child_manifest(&mut self, digest: &Digest) -> Result<RawManifest> {
        self.read_manifest(digest, None, None)
    }

    fn blob(&mut self, desc: &Descriptor) -> Result<Box<dyn BlobSource + '_>> {
        let path = blob_path(&self.dir, &desc.digest);
        let file = File::open(&path).map_err(|e| self.missing_blob(&desc.digest, e))?;
        let len = file
            .metadata()
            .with_context(|| path.display().to_string())?
            .len();
        if len != desc.size {
            bail!(
                "{}: blob {} has {len} bytes, its descriptor says {}",
                self.name,
                desc.digest,
                desc.size
            );
        }
        Ok(Box::new(Interruptible(file)))
    }
}

/// Writes images into a layout (created if need be), keeping the images it has.
pub struct LayoutDest {
    dir: PathBuf,
    name: String,
    reference: Option<String>,
    /// The old `index.json`, kept whole (unknown fields survive).
    old_index: Option<JsonValue>,
    top: Option<JsonValue>,
}

impl LayoutDest {
    pub fn create(dir: &Path, reference: Option<&str>) -> Result<LayoutDest> {
        let name = display(dir, reference);
        fs::create_dir_all(dir.join("blobs").join("sha256"))
            .with_context(|| format!("{name}: create {}", dir.display()))?;
        let marker = dir.join(LAYOUT_FILE);
        if !marker.exists() {
            if dir.join("index.json").exists() {
                bail!("{name}: {} has an index.json but no oci-layout: not a layout barge will write into", dir.display());
            }
            crate::store::write_atomic(&marker, LAYOUT_CONTENT)?;
        }
        let old_index = read_index(dir).with_context(|| name.clone())?;
        if let Some(i) = &old_index {
            entries(i).with_context(|| format!("{name}: index.json"))?;
        }
        Ok(LayoutDest {
            dir: dir.to_path_buf(),
            name,
            reference: reference.map(str::to_string),
            old_index,
            top: None,
        })
    }

    /// Writes a blob under a temporary name, checks its digest and size, renames it.
    fn write_blob(
        &self,
        digest: &Digest,
        size: u64,
        src: &mut dyn Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let path = blob_path(&self.dir, digest);
        let tmp = path.with_file_name(format!(".tmp-{}-{}", digest.hex(), std::process::id()));
        let res = copy_checked(&tmp, digest, size, src, progress).and_then(|()| {
            fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))
        });
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.with_context(|| self.name.clone())
    }

    /// The new index: the old entries minus the one this image replaces, plus it.
    fn new_index(&self, top: JsonValue) -> Result<JsonValue> {
        let mut manifests = Vec::new();
        let mut pairs: Vec<(String, JsonValue)> = Vec::new();
        if let Some(JsonValue::Object(old)) = &self.old_index {
            for (k, v) in old {
                if k != "manifests" {
                    pairs.push((k.clone(), v.clone()));
                }
            }
            let kept = json::opt_array(
                self.old_index.as_ref().unwrap_or(&JsonValue::Null),
                "manifests",
            )?
            .unwrap_or_default();
            manifests.extend(kept.iter().filter(|e| !self.replaces(e, &top)).cloned());
        }
        manifests.push(top);
        pairs.retain(|(k, _)| k != "schemaVersion" && k != "mediaType");
        pairs.push(("schemaVersion".into(), json::number(2)));
        pairs.push(("mediaType".into(), json::string(manifest::OCI_INDEX)));
        pairs.push(("manifests".into(), JsonValue::Array(manifests)));
        Ok(json::object(pairs))
    }

    /// An old entry the new one replaces: the same ref name, or (unnamed) the same digest.
    fn replaces(&self, old: &JsonValue, new: &JsonValue) -> bool {
        let name = |v: &JsonValue| ref_name(v).map(str::to_string);
        match &self.reference {
            Some(r) => name(old).as_deref() == Some(r),
            None => name(old).is_none() && json::get(old, "digest") == json::get(new, "digest"),
        }
    }
}

/// Streams `size` bytes into a new file `tmp`, hashing them, and syncs it.
fn copy_checked(
    tmp: &Path,
    digest: &Digest,
    size: u64,
    src: &mut dyn Read,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    let mut out = HashWriter::new(file);
    let mut buf = vec![0u8; 256 << 10];
    let mut limited = src.take(size + 1);
    loop {
        let n = match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !crate::signal::interrupted() => {
                continue
            }
            Err(e) => return Err(Error::from(e).context(format!("read blob {digest}"))),
        };
        out.write_all(&buf[..n])
            .with_context(|| format!("write {}", tmp.display()))?;
        progress(n as u64);
    }
    let (got, count, file) = out.finish();
    if count != size {
        bail!("blob {digest}: got {count} bytes, its descriptor says {size}");
    }
    crate::digest::verify(&format!("blob {}", digest.short()), digest, &got)?;
    file.sync_all()
        .with_context(|| format!("sync {}", tmp.display()))
}

impl ImageDest for LayoutDest {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn missing(&mut self, blobs: &[Descriptor]) -> Result<Vec<bool>> {
        Ok(blobs
            .iter()
            .map(|d| {
                fs::metadata(blob_path(&self.dir, &d.digest)).map_or(true, |m| m.len() != d.size)
            })
            .collect())
    }

    fn put_blob(
        &mut self,
        desc: &Descriptor,
        src: &mut dyn BlobSource,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        self.write_blob(&desc.digest, desc.size, src, progress)
    }

    fn put_manifest(&mut self, raw: &RawManifest, role: ManifestRole) -> Result<Digest> {
        let digest = Digest::of_bytes(&raw.bytes);
        crate::digest::verify("manifest", &raw.digest, &digest)?;
        let size = raw.bytes.len() as u64;
        if self.missing(&[plain_descriptor(&digest, size)])?[0] {
            self.write_blob(&digest, size, &mut &raw.bytes[..], &mut |_| {})?;
        }
        if role == ManifestRole::Top {
            let media_type = super::registry::media_type_of(raw)?;
            let mut pairs = vec![
                ("mediaType", json::string(media_type)),
                ("digest", json::string(digest.as_str())),
                ("size", json::number(size)),
            ];
            if let Some(r) = &self.reference {
                pairs.push(("annotations", json::object([(REF_NAME, json::string(r))])));
            }
            self.top = Some(json::object(pairs));
        }
        Ok(digest)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let Some(top) = self.top.clone() else {
            bail!("{}: no image was written", self.name);
        };
        let index = self.new_index(top)?;
        let bytes = json::to_string_sorted(&index).into_bytes();
        crate::store::write_atomic(&self.dir.join("index.json"), &bytes)?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// An index entry's ref name (the key has dots, so no `json::get` path).
fn ref_name(entry: &JsonValue) -> Option<&str> {
    let annotations = json::get(entry, "annotations")?;
    let JsonValue::Object(map) = annotations else {
        return None;
    };
    map.get(REF_NAME)?.get::<String>().map(String::as_str)
}

fn plain_descriptor(digest: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: String::new(),
        digest: digest.clone(),
        size,
        platform: None,
        annotations: Vec::new(),
        urls: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("barge-layout-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn desc(data: &[u8]) -> Descriptor {
        plain_descriptor(&Digest::of_bytes(data), data.len() as u64)
    }

    /// Writes a one-blob "image" under `reference` (the manifest need only be JSON).
    fn write_image(dir: &Path, reference: &str, blob: &[u8]) -> Digest {
        let mut dest = Box::new(LayoutDest::create(dir, Some(reference)).unwrap());
        let d = desc(blob);
        assert_eq!(dest.missing(std::slice::from_ref(&d)).unwrap(), [true]);
        dest.put_blob(&d, &mut io::Cursor::new(blob), &mut |_| {})
            .unwrap();
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":{}}},"layers":[]}}"#,
            manifest::OCI_MANIFEST,
            manifest::OCI_CONFIG,
            d.digest,
            d.size
        )
        .into_bytes();
        let raw = RawManifest {
            digest: Digest::of_bytes(&bytes),
            bytes,
            media_type: None,
        };
        let digest = dest.put_manifest(&raw, ManifestRole::Top).unwrap();
        dest.finish().unwrap();
        digest
    }

    #[test]
    fn images_are_added_replaced_and_read_back() {
        let dir = temp_dir("rw");
        let a = write_image(&dir, "a", b"config a");
        let b = write_image(&dir, "b", b"config b");
        let a2 = write_image(&dir, "a", b"config a2");
        assert_ne!(a, a2);
        let mut src = LayoutSource::open(&dir, Some("a")).unwrap();
        assert_eq!(src.manifest().unwrap().digest, a2);
        let mut blob = Vec::new();
        src.blob(&desc(b"config a2"))
            .unwrap()
            .read_to_end(&mut blob)
            .unwrap();
        assert_eq!(blob, b"config a2");
        assert_eq!(
            LayoutSource::open(&dir, Some("b"))
                .unwrap()
                .manifest()
                .unwrap()
                .digest,
            b
        );
        let e = LayoutSource::open(&dir, Some("c"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("no image with ref \"c\"") && e.contains("refs: a, b")
                || e.contains("refs: b, a"),
            "{e}"
        );
        let e = LayoutSource::open(&dir, None).err().unwrap().to_string();
        assert!(e.contains("holds 2 images"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_wrong_blob_is_refused_and_leaves_nothing() {
        let dir = temp_dir("bad");
        let mut dest = LayoutDest::create(&dir, Some("x")).unwrap();
        let d = desc(b"right");
        let e = dest.put_blob(&d, &mut io::Cursor::new(&b"wrong"[..]), &mut |_| {});
        assert!(e.is_err());
        let e = dest.put_blob(&d, &mut io::Cursor::new(&b"right!"[..]), &mut |_| {});
        assert!(e.unwrap_err().to_string().contains("6 bytes"));
        let left: Vec<_> = fs::read_dir(dir.join("blobs/sha256")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        // Dropped without finish: no index.json.
        drop(dest);
        assert!(!dir.join("index.json").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_without_oci_layout_is_not_a_layout() {
        let dir = temp_dir("plain");
        fs::create_dir_all(&dir).unwrap();
        let e = LayoutSource::open(&dir, None).err().unwrap().to_string();
        assert!(e.contains("not an OCI image layout"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
