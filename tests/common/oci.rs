//! Checking a committed barge tree from outside: an OCI layout built from barge's
//! record (`DIR/.git/barge/`: manifest, config, the layers barge made) plus the base
//! layers fetched from the registry, unpacked by `umoci`; the entries of a layer
//! blob; and OCI ChainIDs computed independently of barge.

use super::fixtures::{parse_json, str_of, umoci};
use super::registry::Registry;
use super::tree::{snapshot, Tree};
use super::{run, sha256_hex, TempDir};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use tinyjson::JsonValue;

/// `DIR/.git/barge`.
pub fn record_dir(dir: &Path) -> PathBuf {
    dir.join(".git/barge")
}

/// The raw manifest barge recorded for `dir`.
pub fn record_manifest(dir: &Path) -> Vec<u8> {
    fs::read(record_dir(dir).join("manifest.json")).expect("read .git/barge/manifest.json")
}

/// The raw config barge recorded for `dir`.
pub fn record_config(dir: &Path) -> Vec<u8> {
    fs::read(record_dir(dir).join("config.json")).expect("read .git/barge/config.json")
}

/// A layer descriptor of a manifest: (media type, digest, size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDesc {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// The layers of a manifest, bottom first.
pub fn manifest_layers(manifest: &[u8]) -> Vec<LayerDesc> {
    let m = parse_json(manifest);
    let list: &Vec<JsonValue> = m["layers"].get().expect("manifest has a layers array");
    list.iter()
        .map(|l| LayerDesc {
            media_type: str_of(&l["mediaType"]),
            digest: str_of(&l["digest"]),
            size: match &l["size"] {
                JsonValue::Number(n) => *n as u64,
                other => panic!("layer size is not a number: {other:?}"),
            },
        })
        .collect()
}

/// The config's `rootfs.diff_ids`.
pub fn config_diff_ids(config: &[u8]) -> Vec<String> {
    let c = parse_json(config);
    let ids: &Vec<JsonValue> = c["rootfs"]["diff_ids"].get().expect("diff_ids array");
    ids.iter().map(str_of).collect()
}

/// OCI ChainIDs: ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1) + " " +
/// DiffID(Ln)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(p) => format!("sha256:{}", sha256_hex(format!("{p} {d}").as_bytes())),
        };
        out.push(next);
    }
    out
}

/// Where barge keeps a blob it made.
pub fn made_blob(dir: &Path, digest: &str) -> PathBuf {
    record_dir(dir)
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Writes an OCI layout at `out` for the image barge recorded in `dir`, tagged `t`:
/// manifest and config from the record, layers from barge's blobs when it made them,
/// else fetched from `reg`'s repository `repo` (the image was pulled from there).
/// Every blob is checked against its digest.
pub fn layout_from_record(dir: &Path, reg: &Registry, repo: &str, out: &Path) {
    let blobs = out.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("mkdir layout");
    fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    let manifest = record_manifest(dir);
    let config = record_config(dir);
    let put = |data: &[u8]| {
        let hex = sha256_hex(data);
        fs::write(blobs.join(&hex), data).expect("write blob");
        format!("sha256:{hex}")
    };
    let m = parse_json(&manifest);
    let config_digest = str_of(&m["config"]["digest"]);
    assert_eq!(
        put(&config),
        config_digest,
        "the recorded manifest names another config than .git/barge/config.json"
    );
    for l in manifest_layers(&manifest) {
        let made = made_blob(dir, &l.digest);
        let data = if made.is_file() {
            fs::read(&made).expect("read made blob")
        } else {
            let (code, body) = reg.curl(&format!("/v2/{repo}/blobs/{}", l.digest), &[]);
            assert_eq!(code, 200, "fetch base layer {} from {repo}", l.digest);
            body
        };
        assert_eq!(data.len() as u64, l.size, "size of layer {}", l.digest);
        assert_eq!(put(&data), l.digest, "content of layer blob {}", l.digest);
    }
    let media_type = match &m["mediaType"] {
        JsonValue::String(s) => s.clone(),
        _ => "application/vnd.oci.image.manifest.v1+json".to_string(),
    };
    let md = put(&manifest);
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{media_type}","digest":"{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"t"}}}}]}}"#,
        manifest.len()
    );
    fs::write(out.join("index.json"), index).expect("write index.json");
}

/// Builds the layout of `dir`'s recorded image, `umoci unpack`s it (as root, owners
/// kept) and returns the rootfs snapshot.
pub fn umoci_tree_of_record(dir: &Path, reg: &Registry, repo: &str) -> Tree {
    let tmp = TempDir::new("umoci-record");
    let layout = tmp.join("layout");
    layout_from_record(dir, reg, repo, &layout);
    let bundle = tmp.join("bundle");
    umoci(&[
        "unpack",
        "--image",
        &format!("{}:t", layout.display()),
        bundle.to_str().expect("utf-8 path"),
    ]);
    snapshot(&bundle.join("rootfs"))
}

/// One tar entry of a layer: its name (without `./` or a trailing `/`), its type
/// flag and, for hardlinks and symlinks, its link name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarItem {
    pub name: String,
    pub kind: char,
    pub link: Option<String>,
}

/// The entries of a gzipped layer blob, in archive order.
pub fn layer_items(blob: &Path) -> Vec<TarItem> {
    let tar = run(Command::new("gzip").arg("-dc").arg(blob));
    let mut a = tar::Archive::new(&tar[..]);
    let mut out = Vec::new();
    for e in a.entries().expect("read layer tar") {
        let e = e.expect("read layer tar entry");
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let name = raw
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        out.push(TarItem {
            name,
            kind: e.header().entry_type().as_byte() as char,
            link,
        });
    }
    out
}
