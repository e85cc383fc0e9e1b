//! Entry points for the cargo-fuzz targets in fuzz/ (built only with the `fuzzing` feature).
//!
//! One function per parser family of outside input. Each feeds the bytes to the
//! same functions the commands call, then checks what must hold for any input
//! (a parsed value survives a round trip, a layer changes nothing outside its
//! root); a broken rule panics, which is how a fuzzer reports it. Parse errors
//! are fine: only panics, hangs and runaway memory are findings.

use crate::image::docker_archive::DockerArchiveSource;
use crate::image::oci_archive::OciArchiveSource;
use crate::image::ImageSource;
use crate::json::{self, JsonValue};
use crate::layer::fsroot::{self, Root};
use crate::layer::gzip::{Crc32, GzipReader};
use crate::layer::unpack::{apply_layer_with, UnpackOptions};
use crate::layer::zstd::ZstdReader;
use crate::manifest::{self, Fetched, ImageConfig, Platform};
use crate::reference::{self, Reference};
use crate::registry::{auth, credentials, mirrors};
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use crate::http::fuzzing::response as http_response;

/// Image references (`barge pull REF`) and registry names (`barge login HOST`).
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Reference::parse(s) {
        let _ = (r.api_host(), r.reference_str(), r.credential_keys());
        let again = Reference::parse(&r.to_string())
            .unwrap_or_else(|e| panic!("{r} (from {s:?}) does not parse again: {e}"));
        let tag_written = r.tag.clone().or_else(|| {
            r.digest
                .is_none()
                .then(|| reference::DEFAULT_TAG.to_string())
        });
        assert_eq!(
            (
                &again.registry,
                &again.repository,
                &again.digest,
                &again.tag
            ),
            (&r.registry, &r.repository, &r.digest, &tag_written),
            "{s:?} and its normal form {r} differ"
        );
    }
    if let Ok(host) = reference::normalize_registry(s) {
        let again = reference::normalize_registry(&host)
            .unwrap_or_else(|e| panic!("normalised registry {host:?} is refused: {e}"));
        assert_eq!(again, host, "normalize_registry is not idempotent on {s:?}");
    }
}

/// Content types a manifest response may declare (the first input byte picks one).
const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some(manifest::OCI_INDEX),
    Some(manifest::OCI_MANIFEST),
    Some(manifest::DOCKER_LIST),
    Some(manifest::DOCKER_MANIFEST),
    Some(manifest::DOCKER_SCHEMA1_SIGNED),
];

/// Manifests, indexes and image configs, and the JSON reader and writer under them.
pub fn manifest(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()];
    match manifest::parse_manifest(body, content_type) {
        Ok(Fetched::Index(index)) => {
            for want in [
                "linux/amd64",
                "linux/arm64/v8",
                "linux/arm/v5",
                "windows/386",
            ] {
                if let Ok(p) = Platform::parse(want) {
                    let _ = index.select(&p);
                }
            }
            for d in &index.manifests {
                let _ = (
                    d.is_attestation(),
                    d.platform.as_ref().map(|p| p.to_string()),
                );
            }
        }
        Ok(Fetched::Manifest(m)) => {
            for layer in &m.layers {
                let _ = manifest::layer_compression(&layer.media_type);
            }
        }
        Err(_) => {}
    }
    let Ok(doc) = json::parse(body, "document") else {
        return;
    };
    json_round_trip(&doc);
    let layers = json::get(&doc, "rootfs.diff_ids").map_or(0, |v| match v {
        JsonValue::Array(a) => a.len(),
        _ => 0,
    });
    if let Ok(config) = ImageConfig::parse(body, layers) {
        for i in 0..=layers {
            let _ = config.history_for_layer(i);
        }
    }
    if let Ok(s) = std::str::from_utf8(body) {
        let _ = Platform::parse(s);
    }
}

/// What barge writes from a parsed document (commit rewrites configs, login auth files)
/// must read back as the same document.
fn json_round_trip(doc: &JsonValue) {
    for text in [
        json::to_string_sorted(doc),
        json::to_string_pretty_sorted(doc),
    ] {
        let again = json::parse(text.as_bytes(), "written document")
            .unwrap_or_else(|e| panic!("barge wrote JSON it cannot read ({e}): {text:?}"));
        assert!(again == *doc, "JSON changed when written: {text:?}");
    }
}

/// `WWW-Authenticate` challenges and token service responses.
pub fn auth(data: &[u8]) {
    if let Ok(header) = std::str::from_utf8(data) {
        for c in auth::parse_www_authenticate(header).unwrap_or_default() {
            if let auth::Challenge::Bearer {
                realm,
                service,
                scope,
            } = c
            {
                let url = auth::token_url(&realm, service.as_deref(), &Vec::from_iter(scope));
                let _ = crate::http::Url::parse(&url);
            }
        }
    }
    if let Ok(token) = auth::parse_token_response(data) {
        assert!(
            !token.value.is_empty()
                && !token
                    .value
                    .bytes()
                    .any(|b| b.is_ascii_control() || b == b' '),
            "a token that breaks the Authorization header was accepted"
        );
    }
}

/// Docker/podman auth files (`~/.docker/config.json`, `auth.json`).
pub fn credentials(data: &[u8]) {
    for registry in ["docker.io", "quay.io", "127.0.0.1:5000"] {
        let keys = reference::registry_credential_keys(registry);
        let _ = credentials::lookup_in_bytes(data, &keys);
    }
}

/// Stop decompressing after this much output (a gzip bomb is not a finding).
const GZIP_OUTPUT_LIMIT: u64 = 16 << 20;

/// The gzip reader, with and without CRC checks: they must agree on every stream the
/// checking one accepts.
pub fn gzip(data: &[u8]) {
    let checked = inflate(GzipReader::new(data));
    if let Ok(out) = checked {
        let trusting = inflate(GzipReader::trusting_crc(data));
        assert!(
            matches!(trusting, Ok(t) if t == out),
            "trusting_crc disagrees on a stream new() accepts"
        );
    }
}

/// Reads `r` to its end (or the output limit): (bytes, CRC32 of them).
fn inflate<R: Read>(mut r: R) -> io::Result<(u64, u32)> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut total, mut crc) = (0u64, Crc32::new());
    while total < GZIP_OUTPUT_LIMIT {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, crc.finish()))
}

/// A scratch directory for the tar unpacker: `root/` (wiped before each input) with a
/// canary file and directory beside it, and symlinks in the root that point at them the
/// way an earlier layer could have left them.
pub struct UnpackScratch {
    base: PathBuf,
    root: PathBuf,
    /// The canaries' state and the base's listing, as made.
    outside: String,
}

impl UnpackScratch {
    /// Makes the scratch directory `$BARGE_FUZZ_SCRATCH` (default
    /// `$TMPDIR/barge-fuzz-unpack`), wiping what an earlier run left there. One
    /// process per directory.
    pub fn new() -> io::Result<UnpackScratch> {
        let base = std::env::var_os("BARGE_FUZZ_SCRATCH").map_or_else(
            || std::env::temp_dir().join("barge-fuzz-unpack"),
            PathBuf::from,
        );
        UnpackScratch::at(base)
    }

    /// [`UnpackScratch::new`] in the directory `base`.
    pub fn at(base: PathBuf) -> io::Result<UnpackScratch> {
        if base.exists() {
            clear_dir(&base)?;
        }
        fs::create_dir_all(base.join("root"))?;
        fs::write(base.join("canary"), b"canary\n")?;
        fs::create_dir(base.join("canary-dir"))?;
        fs::write(base.join("canary-dir/inside"), b"inside\n")?;
        let base = base.canonicalize()?;
        let outside = describe_outside(&base)?;
        Ok(UnpackScratch {
            root: base.join("root"),
            base,
            outside,
        })
    }

    /// The directory a layer is applied to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Applies `data` as a layer to a freshly wiped root, then checks that nothing
    /// outside the root changed (panics if something did).
    pub fn apply(&mut self, data: &[u8]) {
        self.reset().expect("resetting the scratch root");
        let mut root = Root::open(&self.root).expect("opening the scratch root");
        let opts = UnpackOptions {
            as_root: false,
            content_digests: data.len() % 2 == 0,
        };
        let mut changes = Vec::new();
        let _ = apply_layer_with(&mut root, data, &opts, &mut changes, None);
        drop(root);
        let now = describe_outside(&self.base).expect("listing the scratch directory");
        assert!(
            now == self.outside,
            "the layer changed something outside its root:\nbefore:\n{}\nafter:\n{now}",
            self.outside
        );
    }

    /// Empties the root and puts back what an earlier layer might have left: a
    /// directory, a file, and symlinks out of the root (relative and absolute).
    fn reset(&self) -> io::Result<()> {
        clear_dir(&self.root)?;
        let r = &self.root;
        fs::create_dir(r.join("d"))?;
        fs::write(r.join("d/f"), b"f\n")?;
        fs::write(r.join("f"), b"f\n")?;
        std::os::unix::fs::symlink("..", r.join("up"))?;
        std::os::unix::fs::symlink("../canary", r.join("canary-link"))?;
        std::os::unix::fs::symlink(self.base.join("canary-dir"), r.join("abs-dir"))?;
        std::os::unix::fs::symlink(self.base.join("canary"), r.join("abs-canary"))
    }
}

/// Removes everything inside `dir` (also read-only directories a layer made).
fn clear_dir(dir: &Path) -> io::Result<()> {
    let fd: OwnedFd = fs::File::open(dir)?.into();
    fsroot::clear_dir_fd(&fd)
}

/// The base's listing and the canaries' content and metadata, as text.
fn describe_outside(base: &Path) -> io::Result<String> {
    let mut out = String::new();
    let mut names: Vec<_> = fs::read_dir(base)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    out.push_str(&format!("{names:?}\n"));
    for p in ["canary", "canary-dir", "canary-dir/inside"] {
        let path = base.join(p);
        let m = fs::symlink_metadata(&path)?;
        out.push_str(&format!(
            "{p}: mode {:o} uid {} gid {} size {} mtime {}.{} nlink {}\n",
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.nlink()
        ));
        if m.is_file() {
            out.push_str(&format!("{:?}\n", fs::read(&path)?));
        } else {
            let mut inner: Vec<_> = fs::read_dir(&path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            inner.sort();
            out.push_str(&format!("{inner:?}\n"));
        }
    }
    Ok(out)
}

/// registries.conf (the TOML-subset reader and the v1/v2 rules) and daemon.json.
pub fn registries_conf(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        mirrors::fuzz_parse(text);
    }
}

/// Stop decompressing a zstd stream after this much output (a bomb is not a finding).
const ZSTD_OUTPUT_LIMIT: u64 = 16 << 20;

/// The zstd layer reader (frames in a row, skippable frames, the window cap).
pub fn zstd(data: &[u8]) {
    if let Ok(r) = ZstdReader::new(data) {
        let _ = io::copy(&mut r.take(ZSTD_OUTPUT_LIMIT), &mut io::sink());
    }
}

/// Read at most this much of each blob an archive names.
const ARCHIVE_BLOB_LIMIT: u64 = 1 << 20;

/// oci-archive and docker-archive files: the tar index, index.json / manifest.json, and
/// every blob the manifest names, read through the sources pull and copy use.
pub fn archive(data: &[u8]) {
    let dir = std::env::temp_dir().join(format!("barge-fuzz-archive-{}", std::process::id()));
    let _ = fs::create_dir_all(&dir);
    let file = dir.join("image.tar");
    if fs::write(&file, data).is_err() {
        return;
    }
    if let Ok(mut src) = OciArchiveSource::open(&file, None) {
        read_image(&mut src);
    }
    if let Ok(mut src) = DockerArchiveSource::open(&file, None) {
        read_image(&mut src);
    }
    let _ = fs::remove_file(&file);
}

/// The manifest a source names and a bounded read of each of its blobs.
fn read_image(src: &mut dyn ImageSource) {
    let Ok(raw) = src.manifest() else {
        return;
    };
    let Ok(Fetched::Manifest(m)) = manifest::parse_manifest(&raw.bytes, raw.media_type.as_deref())
    else {
        return;
    };
    for desc in std::iter::once(&m.config).chain(&m.layers) {
        if let Ok(blob) = src.blob(desc) {
            let _ = io::copy(&mut blob.take(ARCHIVE_BLOB_LIMIT), &mut io::sink());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory of its own (tests run in parallel), removed when dropped.
    struct Scratch(UnpackScratch);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = clear_dir(&self.0.base).and_then(|()| fs::remove_dir(&self.0.base));
        }
    }

    fn scratch(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("barge-fuzz-{tag}-{}", std::process::id()));
        Scratch(UnpackScratch::at(dir).unwrap())
    }

    #[test]
    fn unpack_check_passes_a_harmless_layer() {
        let s = &mut scratch("ok").0;
        s.apply(b"not a tar");
        assert!(s.root().join("up").symlink_metadata().is_ok());
    }

    #[test]
    #[should_panic(expected = "outside its root")]
    fn unpack_check_sees_a_changed_canary() {
        let s = &mut scratch("canary").0;
        fs::write(s.base.join("canary"), b"changed").unwrap();
        s.apply(b"");
    }

    #[test]
    #[should_panic(expected = "outside its root")]
    fn unpack_check_sees_a_new_entry_beside_the_root() {
        let s = &mut scratch("beside").0;
        fs::write(s.base.join("new"), b"").unwrap();
        s.apply(b"");
    }
}
