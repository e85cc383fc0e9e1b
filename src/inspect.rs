//! `barge inspect IMAGE [--raw | --config]`: what an image is, without pulling it,
//! from any transport. JSON on stdout shaped like `skopeo inspect` (Name, Digest,
//! RepoTags, Created, DockerVersion, Labels, Architecture, Os, Layers, LayersData,
//! Env), plus MediaType, Entrypoint, Cmd, WorkingDir, User, History and an index's
//! Platforms. `--raw` prints the manifest bytes exactly, `--config` the config blob.

use crate::bail;
use crate::digest::Digest;
use crate::error::{Context, Result};
use crate::image::registry::RegistrySource;
use crate::image::transport::Transport;
use crate::image::{self, ImageSource, OpenOptions, RawManifest};
use crate::json::{self, JsonValue};
use crate::manifest::{self, Descriptor, Fetched, Index, Manifest, Platform};
use crate::registry::client::TransportOptions;
use std::io::Write;

/// What `barge inspect` was asked to do.
pub struct InspectOptions {
    pub image: String,
    pub show: Show,
    pub platform: Option<String>,
    pub transport: TransportOptions,
}

/// What to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Summary,
    Raw,
    Config,
}

/// Configs are small; anything past this is not an image config.
const MAX_CONFIG: u64 = 8 << 20;

pub fn run(opts: &InspectOptions) -> Result<()> {
    let t = Transport::parse(&opts.image)?;
    // Mirror notes go to stderr's side of things: stdout is the JSON.
    let open = OpenOptions {
        transport: opts.transport.clone(),
        mirrors: Some(crate::progress::Progress::Quiet),
        ..OpenOptions::default()
    };
    let mut tags = Vec::new();
    let mut src: Box<dyn ImageSource> = match t.registry() {
        Some(r) => {
            let mut s = RegistrySource::open_mirrored(r, &open, crate::progress::Progress::Quiet)?;
            if opts.show == Show::Summary {
                tags = s.tags();
            }
            Box::new(s)
        }
        None => image::open_source(&t, &open)?,
    };
    let top = src.manifest()?;
    if opts.show == Show::Raw {
        return print_bytes(&top.bytes);
    }
    let want = match &opts.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let parsed = manifest::parse_manifest(&top.bytes, top.media_type.as_deref())
        .with_context(|| src.name())?;
    let (index, image) = match parsed {
        Fetched::Manifest(m) => (None, m),
        Fetched::Index(i) => {
            let d = i.select(&want)?.clone();
            let child = src.child_manifest(&d.digest)?;
            crate::digest::verify("manifest", &d.digest, &Digest::of_bytes(&child.bytes))?;
            match manifest::parse_manifest(
                &child.bytes,
                Some(&d.media_type)
                    .filter(|m| !m.is_empty())
                    .map(|m| m.as_str()),
            )? {
                Fetched::Manifest(m) => (Some(i), m),
                Fetched::Index(_) => bail!("index {} points at another index", top.digest),
            }
        }
    };
    let config =
        image::read_small_blob(&mut *src, &image.config, MAX_CONFIG).context("image config")?;
    if opts.show == Show::Config {
        return print_bytes(&config);
    }
    let name = t
        .registry()
        .map(|r| format!("{}/{}", r.registry, r.repository));
    let cfg = json::parse(&config, "image config")?;
    let out = summary(name, &top, index.as_ref(), &image, &cfg, tags);
    print_bytes(json::to_string_pretty_sorted(&out).as_bytes())
}

fn print_bytes(b: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(b)
        .and_then(|()| out.flush())
        .context("write to stdout")
}

/// The skopeo-shaped summary.
fn summary(
    name: Option<String>,
    top: &RawManifest,
    index: Option<&Index>,
    image: &Manifest,
    cfg: &JsonValue,
    tags: Vec<String>,
) -> JsonValue {
    let s = |path: &str| json::get(cfg, path).filter(|v| !v.is_null()).cloned();
    let or_null = |v: Option<JsonValue>| v.unwrap_or(JsonValue::Null);
    let mut pairs: Vec<(&str, JsonValue)> = vec![
        ("Digest", json::string(top.digest.as_str())),
        ("MediaType", json::string(media_type(top, index, image))),
        (
            "RepoTags",
            JsonValue::Array(tags.into_iter().map(json::string).collect()),
        ),
        ("Created", or_null(s("created"))),
        (
            "DockerVersion",
            s("docker_version").unwrap_or_else(|| json::string("")),
        ),
        ("Labels", or_null(s("config.Labels"))),
        (
            "Architecture",
            s("architecture").unwrap_or_else(|| json::string("")),
        ),
        ("Os", s("os").unwrap_or_else(|| json::string(""))),
        (
            "Layers",
            JsonValue::Array(
                image
                    .layers
                    .iter()
                    .map(|l| json::string(l.digest.as_str()))
                    .collect(),
            ),
        ),
        (
            "LayersData",
            JsonValue::Array(image.layers.iter().map(layer_data).collect()),
        ),
        ("Env", or_null(s("config.Env"))),
        ("Entrypoint", or_null(s("config.Entrypoint"))),
        ("Cmd", or_null(s("config.Cmd"))),
        (
            "WorkingDir",
            s("config.WorkingDir").unwrap_or_else(|| json::string("")),
        ),
        ("User", s("config.User").unwrap_or_else(|| json::string(""))),
        ("History", or_null(s("history"))),
    ];
    if let Some(n) = name {
        pairs.push(("Name", json::string(n)));
    }
    if let Some(v) = s("variant") {
        pairs.push(("Variant", v));
    }
    if let Some(i) = index {
        pairs.push((
            "Platforms",
            JsonValue::Array(i.manifests.iter().map(platform_entry).collect()),
        ));
    }
    json::object(pairs)
}

fn media_type(top: &RawManifest, index: Option<&Index>, image: &Manifest) -> String {
    match (index, &top.media_type) {
        (Some(i), _) => i.media_type.clone(),
        (None, _) => image.media_type.clone(),
    }
}

fn layer_data(l: &Descriptor) -> JsonValue {
    let annotations = match l.annotations.is_empty() {
        true => JsonValue::Null,
        false => json::object(
            l.annotations
                .iter()
                .map(|(k, v)| (k.clone(), json::string(v))),
        ),
    };
    json::object([
        ("MIMEType", json::string(&l.media_type)),
        ("Digest", json::string(l.digest.as_str())),
        ("Size", json::number(l.size)),
        ("Annotations", annotations),
    ])
}

fn platform_entry(d: &Descriptor) -> JsonValue {
    let mut pairs = vec![
        ("Digest", json::string(d.digest.as_str())),
        ("MediaType", json::string(&d.media_type)),
        ("Size", json::number(d.size)),
    ];
    if let Some(p) = &d.platform {
        pairs.push(("Platform", json::string(p.to_string())));
    }
    json::object(pairs)
}
