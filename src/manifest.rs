//! Image manifests, indexes and configs (OCI and Docker schema2): parse, validate, and pick a platform.
//!
//! [`parse_manifest`] decides what a fetched body is (from its `mediaType`, else the
//! Content-Type, else its shape) and validates it; [`Index::select`] picks the entry for a
//! platform the way containerd does; [`ImageConfig::parse`] reads what pull needs from the
//! config blob and keeps the rest (`raw`) for commit.

use crate::digest::Digest;
use crate::error::{Context, Error, Result};
use crate::json::{self, JsonValue};
use std::fmt;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER_ND_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_LAYER_ND_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_LAYER_ND_ZSTD: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Uncompressed Docker layers: not in the schema2 spec, but written by some tools.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The `Accept` header for manifest requests: the four types barge understands.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest body accepted; the caller must refuse bigger ones before reading them whole.
pub const MAX_MANIFEST: u64 = 4 << 20;

/// Annotation buildkit puts on attestation entries of an index.
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// What a manifest request returned.
#[allow(clippy::large_enum_variant)] // made once per pull; boxing would only add noise
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// A list of per-platform manifests (OCI index or Docker manifest list).
    Index(Index),
    /// One image (OCI manifest or Docker schema2).
    Manifest(Manifest),
}

/// A content descriptor: what a blob or manifest is, where to find it, how big it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub platform: Option<Platform>,
    /// Sorted by key.
    pub annotations: Vec<(String, String)>,
    pub urls: Vec<String>,
}

/// The sum of the descriptors' sizes, saturating (sizes come from the registry).
pub fn total_size(descriptors: &[Descriptor]) -> u64 {
    descriptors
        .iter()
        .fold(0u64, |sum, d| sum.saturating_add(d.size))
}

/// One image: its config blob and its layers, bottom first.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// Sorted by key.
    pub annotations: Vec<(String, String)>,
}

/// A list of manifests, usually one per platform.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
    /// Sorted by key.
    pub annotations: Vec<(String, String)>,
}

/// An OS/architecture pair (with variant) as written in an index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub os_version: Option<String>,
    pub os_features: Vec<String>,
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    /// `tar+zstd`, zstd:chunked included (same media type, annotations added).
    Zstd,
    None,
}

/// The parts of an image config that pull and commit need; `raw` keeps the whole document.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageConfig {
    /// Digest of each layer's uncompressed tar, bottom first.
    pub diff_ids: Vec<Digest>,
    pub history: Vec<History>,
    pub os: String,
    pub architecture: String,
    pub raw: JsonValue,
}

/// One entry of the config's `history`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct History {
    pub created: Option<String>,
    pub created_by: Option<String>,
    pub comment: Option<String>,
    pub author: Option<String>,
    /// True when the step made no layer (ENV, CMD...).
    pub empty_layer: bool,
}

/// Parses a manifest response body. `content_type` is the response's Content-Type, used when
/// the body does not say what it is. The caller has refused bodies over [`MAX_MANIFEST`].
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<Fetched> {
    let v = json::parse(bytes, "manifest")?;
    json::as_object(&v, "manifest")?;
    check_schema_version(&v)?;
    let declared = json::opt_str(&v, "mediaType").context("manifest")?;
    let header = content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    match kind_of(declared, header.as_deref(), &v)? {
        Kind::Index(mt) => Ok(Fetched::Index(Index::from_json(&v, mt).context("index")?)),
        Kind::Manifest(mt) => Ok(Fetched::Manifest(
            Manifest::from_json(&v, mt).context("manifest")?,
        )),
    }
}

enum Kind {
    Index(String),
    Manifest(String),
}

fn schema1_error() -> Error {
    Error::new("legacy Docker schema 1 manifest: unsupported").hint(
        "this image was pushed by a very old Docker; re-push it with a current tool (e.g. `skopeo copy`) to convert it",
    )
}

fn check_schema_version(v: &JsonValue) -> Result<()> {
    match json::opt_u64(v, "schemaVersion").context("manifest")? {
        None | Some(2) => Ok(()),
        Some(1) => Err(schema1_error()),
        Some(n) => Err(Error::new(format!(
            "manifest: unsupported schemaVersion {n}"
        ))),
    }
}

fn is_index_type(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_LIST
}

fn is_manifest_type(mt: &str) -> bool {
    mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
}

fn is_schema1_type(mt: &str) -> bool {
    mt == DOCKER_SCHEMA1 || mt == DOCKER_SCHEMA1_SIGNED
}

/// The body's `mediaType` wins; then the Content-Type header; then the shape of the body.
fn kind_of(declared: Option<&str>, header: Option<&str>, v: &JsonValue) -> Result<Kind> {
    for (mt, from_body) in [(declared, true), (header, false)] {
        let Some(mt) = mt else { continue };
        if is_index_type(mt) {
            return Ok(Kind::Index(mt.to_string()));
        }
        if is_manifest_type(mt) {
            return Ok(Kind::Manifest(mt.to_string()));
        }
        if is_schema1_type(mt) {
            return Err(schema1_error());
        }
        if from_body {
            return Err(
                Error::new(format!("unsupported manifest media type {mt:?}"))
                    .hint("this is not a container image (it may be another kind of OCI artifact)"),
            );
        }
    }
    if json::get(v, "manifests").is_some() {
        Ok(Kind::Index(OCI_INDEX.to_string()))
    } else if json::get(v, "layers").is_some() || json::get(v, "config").is_some() {
        Ok(Kind::Manifest(OCI_MANIFEST.to_string()))
    } else if json::get(v, "fsLayers").is_some() {
        Err(schema1_error())
    } else {
        Err(Error::new(
            "manifest: neither an image manifest nor an index (no \"layers\" or \"manifests\")",
        ))
    }
}

impl Descriptor {
    /// Reads a descriptor object; `require_media_type` is false for index entries, where a
    /// missing type is tolerated (it reads as "").
    fn from_json(v: &JsonValue, require_media_type: bool) -> Result<Descriptor> {
        let media_type = if require_media_type {
            json::get_str(v, "mediaType")?
        } else {
            json::opt_str(v, "mediaType")?.unwrap_or_default()
        };
        let digest = Digest::parse(json::get_str(v, "digest")?)?;
        let platform = match json::get(v, "platform").filter(|p| !p.is_null()) {
            Some(p) => Some(Platform::from_json(p).context("platform")?),
            None => None,
        };
        Ok(Descriptor {
            media_type: media_type.to_string(),
            digest,
            size: json::get_u64(v, "size")?,
            platform,
            annotations: json::opt_str_map(v, "annotations")?,
            urls: json::opt_str_array(v, "urls")?,
        })
    }

    #[cfg(test)]
    /// The descriptor as JSON (for writing manifests); empty optional parts are left out.
    pub fn to_json(&self) -> JsonValue {
        let mut pairs = vec![
            ("mediaType", json::string(&self.media_type)),
            ("digest", json::string(self.digest.as_str())),
            ("size", json::number(self.size)),
        ];
        if let Some(p) = &self.platform {
            pairs.push(("platform", p.to_json()));
        }
        if !self.annotations.is_empty() {
            pairs.push(("annotations", annotations_json(&self.annotations)));
        }
        if !self.urls.is_empty() {
            let urls = self.urls.iter().map(json::string).collect();
            pairs.push(("urls", JsonValue::Array(urls)));
        }
        json::object(pairs)
    }

    /// Annotation value by key.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True for buildkit's attestation entries (`unknown/unknown` or the reference-type
    /// annotation); they are never images to run.
    pub fn is_attestation(&self) -> bool {
        self.annotation(REFERENCE_TYPE) == Some("attestation-manifest")
            || self
                .platform
                .as_ref()
                .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
    }
}

#[cfg(test)]
fn annotations_json(a: &[(String, String)]) -> JsonValue {
    json::object(a.iter().map(|(k, v)| (k.clone(), json::string(v))))
}

/// Each descriptor of an array, with `field[i]` naming the one that failed.
fn descriptors(v: &JsonValue, field: &str, require_media_type: bool) -> Result<Vec<Descriptor>> {
    json::opt_array(v, field)?
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Descriptor::from_json(d, require_media_type).with_context(|| format!("{field}[{i}]"))
        })
        .collect()
}

impl Manifest {
    fn from_json(v: &JsonValue, media_type: String) -> Result<Manifest> {
        let config_json = json::get(v, "config")
            .filter(|c| !c.is_null())
            .ok_or_else(|| Error::new("missing field \"config\""))?;
        let config = Descriptor::from_json(config_json, true).context("config")?;
        if config.media_type != OCI_CONFIG && config.media_type != DOCKER_CONFIG {
            return Err(Error::new(format!(
                "not a container image: config media type {:?}",
                config.media_type
            ))
            .hint("barge pulls container images; this looks like another kind of OCI artifact"));
        }
        let layers = descriptors(v, "layers", true)?;
        for (i, layer) in layers.iter().enumerate() {
            check_layer(layer).with_context(|| format!("layer {i} ({})", layer.digest.short()))?;
        }
        Ok(Manifest {
            media_type,
            config,
            layers,
            annotations: json::opt_str_map(v, "annotations")?,
        })
    }

    #[cfg(test)]
    /// The manifest as JSON (schemaVersion 2), ready for [`json::to_string_sorted`].
    pub fn to_json(&self) -> JsonValue {
        let mut pairs = vec![
            ("schemaVersion", json::number(2)),
            ("mediaType", json::string(&self.media_type)),
            ("config", self.config.to_json()),
            (
                "layers",
                JsonValue::Array(self.layers.iter().map(Descriptor::to_json).collect()),
            ),
        ];
        if !self.annotations.is_empty() {
            pairs.push(("annotations", annotations_json(&self.annotations)));
        }
        json::object(pairs)
    }
}

fn is_foreign(media_type: &str) -> bool {
    media_type == DOCKER_FOREIGN_LAYER_GZIP || media_type.contains(".nondistributable.")
}

fn check_layer(layer: &Descriptor) -> Result<()> {
    layer_compression(&layer.media_type)?;
    if is_foreign(&layer.media_type) && !layer.urls.is_empty() {
        return Err(Error::new(
            "foreign (non-distributable) layers stored outside the registry are not supported",
        ));
    }
    Ok(())
}

/// How a layer of this media type is compressed; unsupported types are errors.
pub fn layer_compression(media_type: &str) -> Result<Compression> {
    match media_type {
        OCI_LAYER_GZIP | OCI_LAYER_ND_GZIP | DOCKER_LAYER_GZIP | DOCKER_FOREIGN_LAYER_GZIP => {
            Ok(Compression::Gzip)
        }
        OCI_LAYER_TAR | OCI_LAYER_ND_TAR | DOCKER_LAYER_TAR => Ok(Compression::None),
        OCI_LAYER_ZSTD | OCI_LAYER_ND_ZSTD => Ok(Compression::Zstd),
        other => Err(Error::new(format!(
            "layer media type {other:?} is not supported"
        ))),
    }
}

impl Index {
    fn from_json(v: &JsonValue, media_type: String) -> Result<Index> {
        json::get_array(v, "manifests")?;
        Ok(Index {
            media_type,
            manifests: descriptors(v, "manifests", false)?,
            annotations: json::opt_str_map(v, "annotations")?,
        })
    }

    /// The entry to pull for `want`: an exact match first, then compatible ones in
    /// containerd's order (arm64 → arm/v8…v5, arm/vN → lower vN, amd64 → 386). Attestation
    /// entries are never chosen; an entry without a platform is a last resort.
    pub fn select(&self, want: &Platform) -> Result<&Descriptor> {
        let candidates: Vec<&Descriptor> = self
            .manifests
            .iter()
            .filter(|d| !d.is_attestation())
            .filter(|d| {
                d.media_type.is_empty()
                    || is_manifest_type(&d.media_type)
                    || is_index_type(&d.media_type)
            })
            .collect();
        let want_os = normalize_os(&want.os);
        for (arch, variant) in compatible(want) {
            let found = candidates.iter().find(|d| {
                d.platform.as_ref().is_some_and(|p| {
                    let (a, v) = normalize_arch(&p.architecture, p.variant.as_deref());
                    normalize_os(&p.os) == want_os && a == arch && v == variant
                })
            });
            if let Some(d) = found {
                return Ok(d);
            }
        }
        if let Some(d) = candidates.iter().find(|d| d.platform.is_none()) {
            return Ok(d);
        }
        Err(self.no_match(want, &candidates))
    }

    fn no_match(&self, want: &Platform, candidates: &[&Descriptor]) -> Error {
        let mut available: Vec<String> = candidates
            .iter()
            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
            .collect();
        available.dedup();
        let list = if available.is_empty() {
            "none".to_string()
        } else {
            available.join(", ")
        };
        Error::new(format!("no {want} image in the index; available: {list}"))
            .hint("choose one with --platform OS/ARCH[/VARIANT]")
    }
}

fn normalize_os(os: &str) -> String {
    let os = os.to_ascii_lowercase();
    if os == "macos" {
        "darwin".to_string()
    } else {
        os
    }
}

/// containerd's normalisation: GOARCH names, and the variant that is implied made explicit
/// (arm → v7) or dropped when it is the only one (arm64 v8, amd64 v1).
fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.unwrap_or("").to_ascii_lowercase();
    let numbered = |v: &str| {
        if !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()) {
            format!("v{v}")
        } else {
            v.to_string()
        }
    };
    match arch.as_str() {
        "i386" | "x86" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let v = numbered(&variant);
            ("amd64".into(), if v == "v1" { String::new() } else { v })
        }
        "aarch64" | "arm64" => {
            let v = numbered(&variant);
            ("arm64".into(), if v == "v8" { String::new() } else { v })
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let v = numbered(&variant);
            ("arm".into(), if v.is_empty() { "v7".into() } else { v })
        }
        _ => (arch, variant),
    }
}

/// Normalised (arch, variant) pairs that can run on `want`, best first.
fn compatible(want: &Platform) -> Vec<(String, String)> {
    let (arch, variant) = normalize_arch(&want.architecture, want.variant.as_deref());
    let level = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
    let mut out = vec![(arch.clone(), variant.clone())];
    match arch.as_str() {
        "arm64" if variant.is_empty() => {
            out.extend((5..=8).rev().map(|n| ("arm".to_string(), format!("v{n}"))));
        }
        "arm" => {
            if let Some(n) = level(&variant) {
                out.extend((5..n).rev().map(|k| ("arm".to_string(), format!("v{k}"))));
            }
        }
        "amd64" => {
            if let Some(n) = level(&variant) {
                out.extend((2..n).rev().map(|k| ("amd64".to_string(), format!("v{k}"))));
                out.push(("amd64".to_string(), String::new()));
            }
            out.push(("386".to_string(), String::new()));
        }
        _ => {}
    }
    out
}

impl Platform {
    /// Parses `OS/ARCH[/VARIANT]` (as given to `--platform`), normalising common aliases
    /// (`x86_64` → `amd64`, `aarch64` → `arm64`).
    pub fn parse(s: &str) -> Result<Platform> {
        let bad = || {
            Error::new(format!("invalid platform {s:?}"))
                .hint("--platform expects OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8")
        };
        let parts: Vec<&str> = s.split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => return Err(bad()),
        };
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.')
        };
        if !ok(os) || !ok(arch) || variant.is_some_and(|v| !ok(v)) {
            return Err(bad());
        }
        let architecture = match arch.to_ascii_lowercase().as_str() {
            "x86_64" | "x86-64" => "amd64".to_string(),
            "aarch64" => "arm64".to_string(),
            "i386" => "386".to_string(),
            a => a.to_string(),
        };
        Ok(Platform {
            os: os.to_ascii_lowercase(),
            architecture,
            variant: variant.map(str::to_ascii_lowercase),
            os_version: None,
            os_features: Vec::new(),
        })
    }

    /// True when an image built for `image` runs where `self` is wanted: the same
    /// matching (aliases, implied variants, older compatible variants) as an index's.
    pub fn accepts(&self, image: &Platform) -> bool {
        let (arch, variant) = normalize_arch(&image.architecture, image.variant.as_deref());
        normalize_os(&image.os) == normalize_os(&self.os)
            && compatible(self).contains(&(arch, variant))
    }

    /// The platform this binary runs on, in Go's names (`linux/amd64`, `linux/arm64/v8`).
    pub fn host() -> Platform {
        let (arch, variant) = host_arch(std::env::consts::ARCH);
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: arch.to_string(),
            variant: variant.map(str::to_string),
            os_version: None,
            os_features: Vec::new(),
        }
    }

    fn from_json(v: &JsonValue) -> Result<Platform> {
        Ok(Platform {
            os: json::opt_str(v, "os")?.unwrap_or_default().to_string(),
            architecture: json::opt_str(v, "architecture")?
                .unwrap_or_default()
                .to_string(),
            variant: json::opt_str(v, "variant")?
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            os_version: platform_field(v, "os.version")?,
            os_features: platform_list(v, "os.features")?,
        })
    }

    #[cfg(test)]
    /// The platform as JSON.
    pub fn to_json(&self) -> JsonValue {
        let mut pairs = vec![
            ("os", json::string(&self.os)),
            ("architecture", json::string(&self.architecture)),
        ];
        if let Some(v) = &self.variant {
            pairs.push(("variant", json::string(v)));
        }
        if let Some(v) = &self.os_version {
            pairs.push(("os.version", json::string(v)));
        }
        if !self.os_features.is_empty() {
            let f = self.os_features.iter().map(json::string).collect();
            pairs.push(("os.features", JsonValue::Array(f)));
        }
        json::object(pairs)
    }
}

/// A string member whose key contains a dot (`os.version`), which dotted paths cannot name.
fn platform_field(v: &JsonValue, key: &str) -> Result<Option<String>> {
    let JsonValue::Object(m) = v else {
        return Err(Error::new("expected an object"));
    };
    match m.get(key) {
        None | Some(JsonValue::Null) => Ok(None),
        Some(JsonValue::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::new(format!("field \"{key}\" must be a string"))),
    }
}

/// A string-array member whose key contains a dot (`os.features`).
fn platform_list(v: &JsonValue, key: &str) -> Result<Vec<String>> {
    let JsonValue::Object(m) = v else {
        return Err(Error::new("expected an object"));
    };
    match m.get(key) {
        None | Some(JsonValue::Null) => Ok(Vec::new()),
        Some(JsonValue::Array(items)) => items
            .iter()
            .map(|i| match i {
                JsonValue::String(s) => Ok(s.clone()),
                _ => Err(Error::new(format!("field \"{key}\" must hold strings"))),
            })
            .collect(),
        Some(_) => Err(Error::new(format!("field \"{key}\" must be an array"))),
    }
}

/// Rust's target architecture names → Go's (GOARCH) and the implied variant.
fn host_arch(rust_arch: &str) -> (&str, Option<&str>) {
    let little = cfg!(target_endian = "little");
    match rust_arch {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" if little => ("ppc64le", None),
        "powerpc64" => ("ppc64", None),
        "mips64" if little => ("mips64le", None),
        "loongarch64" => ("loong64", None),
        other => (other, None), // s390x, riscv64 have the same names
    }
}

impl fmt::Display for Platform {
    /// `os/arch[/variant]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl ImageConfig {
    /// The platform the config says the image is for (`os`, `architecture`, `variant`).
    pub fn platform(&self) -> Platform {
        let variant = json::opt_str(&self.raw, "variant").ok().flatten();
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
            os_version: None,
            os_features: Vec::new(),
        }
    }

    /// Parses a config blob and checks it against the manifest's number of layers.
    pub fn parse(bytes: &[u8], layer_count: usize) -> Result<ImageConfig> {
        let raw = json::parse(bytes, "image config")?;
        Self::from_json(raw, layer_count).context("image config")
    }

    fn from_json(raw: JsonValue, layer_count: usize) -> Result<ImageConfig> {
        json::as_object(&raw, "config")?;
        let rootfs_type = json::get_str(&raw, "rootfs.type")?;
        if rootfs_type != "layers" {
            return Err(Error::new(format!(
                "rootfs.type is {rootfs_type:?}, expected \"layers\""
            )));
        }
        let diff_ids = json::get_array(&raw, "rootfs.diff_ids")?
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                JsonValue::String(s) => {
                    Digest::parse(s).with_context(|| format!("rootfs.diff_ids[{i}]"))
                }
                _ => Err(Error::new(format!(
                    "field \"rootfs.diff_ids[{i}]\" must be a string"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        if diff_ids.len() != layer_count {
            return Err(Error::new(format!(
                "it lists {} layer diff_ids but the manifest has {layer_count} layers",
                diff_ids.len()
            )));
        }
        let history = json::opt_array(&raw, "history")?
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, h)| History::from_json(h).with_context(|| format!("history[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        Ok(ImageConfig {
            diff_ids,
            history,
            os: json::opt_str(&raw, "os")?.unwrap_or_default().to_string(),
            architecture: json::opt_str(&raw, "architecture")?
                .unwrap_or_default()
                .to_string(),
            raw,
        })
    }

    /// The history entry that made layer `i` (counting only entries that made a layer), if
    /// the history has exactly one such entry per layer.
    pub fn history_for_layer(&self, i: usize) -> Option<&History> {
        let mut made_layers = self.history.iter().filter(|h| !h.empty_layer);
        if made_layers.clone().count() != self.diff_ids.len() {
            return None;
        }
        made_layers.nth(i)
    }
}

impl History {
    fn from_json(v: &JsonValue) -> Result<History> {
        let s = |k| json::opt_str(v, k).map(|o| o.map(str::to_string));
        Ok(History {
            created: s("created")?,
            created_by: s("created_by")?,
            comment: s("comment")?,
            author: s("author")?,
            empty_layer: json::opt_bool(v, "empty_layer")?.unwrap_or(false),
        })
    }

    #[cfg(test)]
    /// The entry as JSON (for writing a new config); absent parts are left out.
    pub fn to_json(&self) -> JsonValue {
        let mut pairs = Vec::new();
        for (k, v) in [
            ("created", &self.created),
            ("created_by", &self.created_by),
            ("comment", &self.comment),
            ("author", &self.author),
        ] {
            if let Some(v) = v {
                pairs.push((k, json::string(v)));
            }
        }
        if self.empty_layer {
            pairs.push(("empty_layer", JsonValue::Boolean(true)));
        }
        json::object(pairs)
    }
}

/// The OCI ChainID of a layer: its diff_id for the first layer, else
/// `sha256(parent_chain_id + " " + diff_id)`.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::of_bytes(format!("{p} {diff_id}").as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dg(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn total_size_saturates() {
        let d = |size| Descriptor {
            media_type: String::new(),
            digest: Digest::parse(&dg('a')).unwrap(),
            size,
            platform: None,
            annotations: Vec::new(),
            urls: Vec::new(),
        };
        assert_eq!(total_size(&[d(1), d(2)]), 3);
        assert_eq!(total_size(&[d(u64::MAX - 1), d(10)]), u64::MAX);
    }

    fn manifest_json(media_type: Option<&str>, layer_types: &[&str]) -> String {
        let layers: Vec<String> = layer_types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    r#"{{"mediaType":"{t}","digest":"{}","size":{}}}"#,
                    dg(char::from(b'a' + i as u8)),
                    100 + i
                )
            })
            .collect();
        let mt = media_type
            .map(|m| format!(r#""mediaType":"{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":7}},"layers":[{}]}}"#,
            dg('f'),
            layers.join(",")
        )
    }

    fn as_manifest(f: Fetched) -> Manifest {
        match f {
            Fetched::Manifest(m) => m,
            Fetched::Index(_) => panic!("expected a manifest"),
        }
    }

    fn as_index(f: Fetched) -> Index {
        match f {
            Fetched::Index(i) => i,
            Fetched::Manifest(_) => panic!("expected an index"),
        }
    }

    #[test]
    fn zstd_manifests_parse() {
        let body = manifest_json(None, &[OCI_LAYER_ZSTD, OCI_LAYER_GZIP]);
        let m = as_manifest(parse_manifest(body.as_bytes(), None).unwrap());
        assert_eq!(
            layer_compression(&m.layers[0].media_type).unwrap(),
            Compression::Zstd
        );
    }

    #[test]
    fn parses_an_oci_manifest() {
        let body = manifest_json(Some(OCI_MANIFEST), &[OCI_LAYER_GZIP, OCI_LAYER_TAR]);
        let m = as_manifest(parse_manifest(body.as_bytes(), None).unwrap());
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(m.config.digest.as_str(), dg('f'));
        assert_eq!(m.config.size, 7);
        assert_eq!(m.layers.len(), 2);
        assert_eq!(m.layers[1].size, 101);
        assert_eq!(
            layer_compression(&m.layers[0].media_type).unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            layer_compression(&m.layers[1].media_type).unwrap(),
            Compression::None
        );
    }

    #[test]
    fn kind_from_body_then_header_then_shape() {
        // No mediaType in the body: the header decides.
        let body = manifest_json(None, &[DOCKER_LAYER_GZIP]);
        let m = as_manifest(
            parse_manifest(
                body.as_bytes(),
                Some(&format!("{DOCKER_MANIFEST}; charset=utf-8")),
            )
            .unwrap(),
        );
        assert_eq!(m.media_type, DOCKER_MANIFEST);
        // Neither: the shape decides (and a useless header is ignored).
        let m = as_manifest(parse_manifest(body.as_bytes(), Some("application/json")).unwrap());
        assert_eq!(m.media_type, OCI_MANIFEST);
        let idx = r#"{"schemaVersion":2,"manifests":[]}"#;
        let i = as_index(parse_manifest(idx.as_bytes(), Some("text/plain")).unwrap());
        assert!(i.manifests.is_empty());
        // The body wins over the header.
        let body = manifest_json(Some(DOCKER_MANIFEST), &[DOCKER_LAYER_GZIP]);
        let m = as_manifest(parse_manifest(body.as_bytes(), Some(OCI_INDEX)).unwrap());
        assert_eq!(m.media_type, DOCKER_MANIFEST);
    }

    #[test]
    fn schema1_is_refused_clearly() {
        let s1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        for ct in [None, Some(DOCKER_SCHEMA1_SIGNED)] {
            let e = parse_manifest(s1.as_bytes(), ct).unwrap_err();
            assert!(e
                .to_string()
                .contains("legacy Docker schema 1 manifest: unsupported"));
            assert!(e.hint_text().is_some());
        }
        let no_version = r#"{"name":"x","fsLayers":[]}"#;
        let e = parse_manifest(no_version.as_bytes(), Some(DOCKER_SCHEMA1)).unwrap_err();
        assert!(e.to_string().contains("schema 1"));
        let e = parse_manifest(no_version.as_bytes(), None).unwrap_err();
        assert!(e.to_string().contains("schema 1"));
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let cases: Vec<(String, &str)> = vec![
            ("[]".into(), "manifest: expected a JSON object"),
            ("{".into(), "manifest: invalid JSON"),
            (
                r#"{"schemaVersion":3,"layers":[]}"#.into(),
                "unsupported schemaVersion 3",
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.config.v1+json"}"#
                    .into(),
                "unsupported manifest media type",
            ),
            (
                r#"{"schemaVersion":2}"#.into(),
                "neither an image manifest nor an index",
            ),
            (
                r#"{"schemaVersion":2,"layers":[]}"#.into(),
                "manifest: missing field \"config\"",
            ),
            (
                manifest_json(None, &[OCI_LAYER_GZIP]).replace(&dg('f'), "sha256:abc"),
                "manifest: config: invalid digest",
            ),
            (
                manifest_json(None, &[OCI_LAYER_GZIP]).replace(r#","size":100"#, ""),
                "manifest: layers[0]: missing field \"size\"",
            ),
            (
                manifest_json(None, &[OCI_LAYER_GZIP]).replace(r#""size":100"#, r#""size":-1"#),
                "layers[0]: field \"size\" must be a non-negative integer",
            ),
            (
                manifest_json(None, &[OCI_LAYER_GZIP])
                    .replace(OCI_CONFIG, "application/vnd.cncf.helm.config.v1+json"),
                "not a container image",
            ),
            (
                manifest_json(None, &["application/x-foo"]),
                "layer media type \"application/x-foo\" is not supported",
            ),
            (
                r#"{"schemaVersion":2,"manifests":{}}"#.into(),
                "index: field \"manifests\" must be an array",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"manifests":[{{"digest":"{}"}}]}}"#,
                    dg('a')
                ),
                "index: manifests[0]: missing field \"size\"",
            ),
        ];
        for (body, want) in cases {
            let e = parse_manifest(body.as_bytes(), None)
                .expect_err(&body)
                .to_string();
            assert!(e.contains(want), "{body}\n got: {e}\nwant: {want}");
        }
    }

    #[test]
    fn foreign_layers_with_urls_are_refused() {
        let body = manifest_json(Some(DOCKER_MANIFEST), &[DOCKER_FOREIGN_LAYER_GZIP]);
        // Without urls the registry holds it: fine.
        assert!(parse_manifest(body.as_bytes(), None).is_ok());
        let with_urls = body.replace(
            r#""size":100"#,
            r#""size":100,"urls":["https://mcr.microsoft.com/x"]"#,
        );
        let e = parse_manifest(with_urls.as_bytes(), None).unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
        let nd = manifest_json(None, &[OCI_LAYER_ND_GZIP])
            .replace(r#""size":100"#, r#""size":100,"urls":["https://x"]"#);
        assert!(parse_manifest(nd.as_bytes(), None).is_err());
    }

    #[test]
    fn layer_compression_table() {
        for t in [
            OCI_LAYER_GZIP,
            OCI_LAYER_ND_GZIP,
            DOCKER_LAYER_GZIP,
            DOCKER_FOREIGN_LAYER_GZIP,
        ] {
            assert_eq!(layer_compression(t).unwrap(), Compression::Gzip, "{t}");
        }
        for t in [OCI_LAYER_TAR, OCI_LAYER_ND_TAR, DOCKER_LAYER_TAR] {
            assert_eq!(layer_compression(t).unwrap(), Compression::None, "{t}");
        }
        for t in [OCI_LAYER_ZSTD, OCI_LAYER_ND_ZSTD] {
            assert_eq!(layer_compression(t).unwrap(), Compression::Zstd, "{t}");
        }
        assert!(layer_compression(OCI_CONFIG).is_err());
    }

    fn entry(os: &str, arch: &str, variant: Option<&str>, c: char) -> String {
        let v = variant
            .map(|v| format!(r#","variant":"{v}""#))
            .unwrap_or_default();
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":500,"platform":{{"architecture":"{arch}","os":"{os}"{v}}}}}"#,
            dg(c)
        )
    }

    fn index(entries: &[String]) -> Index {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
            entries.join(",")
        );
        as_index(parse_manifest(body.as_bytes(), None).unwrap())
    }

    fn pick(idx: &Index, want: &str) -> Result<String> {
        idx.select(&Platform::parse(want)?)
            .map(|d| d.digest.as_str()[7..8].to_string())
    }

    #[test]
    fn platform_accepts_what_select_would() {
        let p = |s: &str| Platform::parse(s).unwrap();
        let yes = [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/arm64", "linux/arm64/v8"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/arm/v7", "linux/arm"),
            ("linux/arm/v7", "linux/arm/v6"),
            ("linux/amd64", "linux/386"),
        ];
        for (want, image) in yes {
            assert!(p(want).accepts(&p(image)), "{want} should take {image}");
        }
        let no = [
            ("linux/arm64", "linux/amd64"),
            ("linux/amd64", "linux/arm64"),
            ("windows/amd64", "linux/amd64"),
            ("linux/arm/v6", "linux/arm/v7"),
        ];
        for (want, image) in no {
            assert!(!p(want).accepts(&p(image)), "{want} should refuse {image}");
        }
    }

    #[test]
    fn select_platforms() {
        let attestation = format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"annotations":{{"vnd.docker.reference.type":"attestation-manifest","vnd.docker.reference.digest":"{}"}},"platform":{{"architecture":"unknown","os":"unknown"}}}}"#,
            dg('9'),
            dg('a')
        );
        let idx = index(&[
            attestation,
            entry("linux", "amd64", None, 'a'),
            entry("linux", "arm64", Some("v8"), 'b'),
            entry("linux", "arm", Some("v7"), 'c'),
            entry("linux", "arm", Some("v6"), 'd'),
            entry("linux", "386", None, 'e'),
            entry("windows", "amd64", None, 'f'),
        ]);
        assert!(idx.manifests[0].is_attestation());
        let cases = [
            ("linux/amd64", "a"),
            ("linux/x86_64", "a"),
            ("linux/arm64", "b"),
            ("linux/arm64/v8", "b"),
            ("linux/aarch64", "b"),
            ("linux/arm", "c"),
            ("linux/arm/v7", "c"),
            ("linux/arm/v6", "d"),
            ("linux/386", "e"),
            ("windows/amd64", "f"),
        ];
        for (want, got) in cases {
            assert_eq!(pick(&idx, want).unwrap(), got, "{want}");
        }
        let e = pick(&idx, "linux/s390x").unwrap_err();
        assert_eq!(
            e.message(),
            "no linux/s390x image in the index; available: linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6, linux/386, windows/amd64"
        );
        assert!(e.hint_text().unwrap().contains("--platform"));
        // arm/v5 has nothing at or below it.
        assert!(pick(&idx, "linux/arm/v5").is_err());
    }

    #[test]
    fn select_falls_back_to_compatible_platforms() {
        let idx = index(&[
            entry("linux", "arm", Some("v6"), 'a'),
            entry("linux", "386", None, 'b'),
        ]);
        assert_eq!(pick(&idx, "linux/arm64").unwrap(), "a");
        assert_eq!(pick(&idx, "linux/arm/v7").unwrap(), "a");
        assert_eq!(pick(&idx, "linux/amd64").unwrap(), "b");
        // arm64 without variant in the index matches a v8 request, and the reverse.
        let idx = index(&[entry("linux", "arm64", None, 'a')]);
        assert_eq!(pick(&idx, "linux/arm64/v8").unwrap(), "a");
        // amd64/v3 images do not run on a plain amd64 request.
        let idx = index(&[entry("linux", "amd64", Some("v3"), 'a')]);
        assert!(pick(&idx, "linux/amd64").is_err());
        assert_eq!(pick(&idx, "linux/amd64/v3").unwrap(), "a");
        let idx = index(&[entry("linux", "amd64", None, 'a')]);
        assert_eq!(pick(&idx, "linux/amd64/v3").unwrap(), "a");
        // The OS must match.
        let idx = index(&[entry("windows", "amd64", None, 'a')]);
        let e = pick(&idx, "linux/amd64").unwrap_err();
        assert!(e.message().contains("available: windows/amd64"), "{e}");
    }

    #[test]
    fn attestations_only_means_no_image() {
        let idx = index(&[format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"unknown","os":"unknown"}}}}"#,
            dg('a')
        )]);
        let e = pick(&idx, "linux/amd64").unwrap_err();
        assert!(e.message().ends_with("available: none"), "{e}");
        // An entry without any platform is the last resort.
        let idx = index(&[format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1}}"#,
            dg('b')
        )]);
        assert_eq!(pick(&idx, "linux/amd64").unwrap(), "b");
    }

    #[test]
    fn platform_parse_and_display() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str()), ("linux", "arm64"));
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(
            Platform::parse("Linux/X86_64").unwrap().to_string(),
            "linux/amd64"
        );
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            let e = Platform::parse(bad).unwrap_err();
            assert!(e.hint_text().unwrap().contains("--platform"), "{bad}");
        }
    }

    #[test]
    fn host_platform_uses_go_names() {
        assert_eq!(host_arch("x86_64"), ("amd64", None));
        assert_eq!(host_arch("aarch64"), ("arm64", Some("v8")));
        assert_eq!(host_arch("arm"), ("arm", Some("v7")));
        assert_eq!(host_arch("x86"), ("386", None));
        assert_eq!(host_arch("s390x"), ("s390x", None));
        assert_eq!(host_arch("riscv64"), ("riscv64", None));
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(h.to_string(), "linux/amd64");
        }
    }

    #[test]
    fn platform_extra_fields() {
        let idx = index(&[format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"windows","os.version":"10.0.17763.1","os.features":["win32k"]}}}}"#,
            dg('a')
        )]);
        let p = idx.manifests[0].platform.as_ref().unwrap();
        assert_eq!(p.os_version.as_deref(), Some("10.0.17763.1"));
        assert_eq!(p.os_features, vec!["win32k"]);
        assert_eq!(
            json::to_string_sorted(&p.to_json()),
            r#"{"architecture":"amd64","os":"windows","os.features":["win32k"],"os.version":"10.0.17763.1"}"#
        );
    }

    fn config_json(diff_ids: &[char], history: &str) -> String {
        let ids: Vec<String> = diff_ids.iter().map(|c| format!("\"{}\"", dg(*c))).collect();
        format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}},"history":{history}}}"#,
            ids.join(",")
        )
    }

    #[test]
    fn parses_config_and_maps_history() {
        let history = r#"[{"created":"2024-01-01T00:00:00Z","created_by":"ADD file","comment":"base"},
            {"created_by":"ENV X=1","empty_layer":true},
            {"created_by":"RUN apt-get install"}]"#;
        let c = ImageConfig::parse(config_json(&['a', 'b'], history).as_bytes(), 2).unwrap();
        assert_eq!(c.diff_ids.len(), 2);
        assert_eq!((c.os.as_str(), c.architecture.as_str()), ("linux", "amd64"));
        assert_eq!(c.history.len(), 3);
        assert_eq!(
            c.history_for_layer(0).unwrap().comment.as_deref(),
            Some("base")
        );
        assert_eq!(
            c.history_for_layer(1).unwrap().created_by.as_deref(),
            Some("RUN apt-get install")
        );
        assert!(c.history_for_layer(2).is_none());
        assert!(json::get(&c.raw, "config.Env").is_some());
        // A history that does not line up with the layers maps nothing.
        let c = ImageConfig::parse(config_json(&['a', 'b'], "[]").as_bytes(), 2).unwrap();
        assert!(c.history_for_layer(0).is_none());
        let h = &ImageConfig::parse(config_json(&['a'], history).as_bytes(), 1);
        assert!(h.as_ref().unwrap().history_for_layer(0).is_none());
    }

    #[test]
    fn bad_configs() {
        let e = ImageConfig::parse(config_json(&['a'], "[]").as_bytes(), 2).unwrap_err();
        assert_eq!(
            e.message(),
            "image config: it lists 1 layer diff_ids but the manifest has 2 layers"
        );
        let bad_type = config_json(&['a'], "[]").replace("\"layers\"", "\"other\"");
        let e = ImageConfig::parse(bad_type.as_bytes(), 1).unwrap_err();
        assert!(e.message().contains("rootfs.type"), "{e}");
        let bad_id = config_json(&['a'], "[]").replace(&dg('a'), "sha256:zz");
        let e = ImageConfig::parse(bad_id.as_bytes(), 1).unwrap_err();
        assert!(e.message().contains("rootfs.diff_ids[0]"), "{e}");
        let e = ImageConfig::parse(br#"{"os":"linux"}"#, 0).unwrap_err();
        assert_eq!(e.message(), "image config: missing field \"rootfs.type\"");
        let e = ImageConfig::parse(b"{}{", 0).unwrap_err();
        assert!(e.message().starts_with("image config: invalid JSON"));
        let bad_hist = config_json(&['a'], r#"[{"empty_layer":"yes"}]"#);
        let e = ImageConfig::parse(bad_hist.as_bytes(), 1).unwrap_err();
        assert!(e.message().contains("history[0]"), "{e}");
    }

    #[test]
    fn manifest_round_trips_through_json() {
        let body = manifest_json(
            Some(DOCKER_MANIFEST),
            &[DOCKER_LAYER_GZIP, DOCKER_LAYER_GZIP],
        );
        let m = as_manifest(parse_manifest(body.as_bytes(), None).unwrap());
        let written = json::to_string_sorted(&m.to_json());
        let again = as_manifest(parse_manifest(written.as_bytes(), None).unwrap());
        assert_eq!(again, m);
        assert!(
            written.starts_with(r#"{"config":{"digest":"sha256:ffff"#),
            "{written}"
        );
        let h = History {
            created_by: Some("barge commit".into()),
            ..Default::default()
        };
        assert_eq!(
            json::to_string_sorted(&h.to_json()),
            r#"{"created_by":"barge commit"}"#
        );
    }

    #[test]
    fn accept_lists_the_four_types() {
        for t in [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST] {
            assert!(ACCEPT.contains(t), "{t}");
        }
        assert_eq!(ACCEPT.matches(", ").count(), 3);
    }

    #[test]
    fn chain_id_matches_hand_computed_value() {
        let empty = Digest::of_bytes(b"");
        let a = Digest::of_bytes(b"a");
        assert_eq!(chain_id(None, &a), a);
        // printf 'sha256:e3b0… sha256:ca97…' | sha256sum
        assert_eq!(
            chain_id(Some(&empty), &a).as_str(),
            "sha256:54310b28337ccdbb5477f2808753d5b0e7c87d84187cee28a330a3e71f6c16fc"
        );
    }
}
