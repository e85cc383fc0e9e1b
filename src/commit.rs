//! `barge commit`: turns what the user changed in a barge tree into a new layer,
//! a new config and manifest, a new git branch, and an updated record.
//!
//! Everything is checked before anything is written: the tree has a record, HEAD
//! is the top layer's branch, a message is given, the manifest and config parse.
//! Nothing changed is an error ("nothing to commit"). Git is written before the
//! record: the record is the truth, and its top layer must match HEAD.

use crate::bail;
use crate::clock::now_or_epoch;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::git::{branch_index, branch_name, History, LayerMessage};
use crate::layer::diff::{diff, Diff};
use crate::layer::entry::{Change, EntryKind};
use crate::layer::leftovers::{self, Lock};
use crate::layer::pack::{check_names, pack_counted, Packed};
use crate::layer::stage::sync_filesystem;
use crate::manifest::chain_id;
use crate::progress::{Output, Progress};
use crate::store::{
    barge_dir, blob_path, put_blob, remove_uncommitted, Descriptor, LayerRecord, Record,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tinyjson::JsonValue;

/// What `barge commit` was asked to do.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    pub root: PathBuf,
    pub message: String,
}

/// What a commit made, for main to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSummary {
    /// The new git branch, `layer_<N>_<chainid>`.
    pub branch: String,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    /// The manifest digest of the image the commit was made on.
    pub parent: Digest,
    /// The new layer's ChainID (its branch names it).
    pub chain_id: Digest,
    pub layer_digest: Digest,
    pub diff_id: Digest,
    /// Compressed layer size in bytes.
    pub size: u64,
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Runs `barge commit` without progress output.
pub fn run(opts: CommitOptions) -> Result<CommitSummary> {
    run_shown(opts, &Output::new(Progress::Quiet))
}

/// Runs `barge commit`, drawing a meter on `out` while the layer is written.
pub fn run_shown(opts: CommitOptions, out: &Output) -> Result<CommitSummary> {
    let message = opts.message.trim().to_string();
    if message.is_empty() {
        return Err(Error::new("commit: a message is required").hint("give one with -m MESSAGE"));
    }
    let root = &opts.root;
    let _lock = lock(root)?;
    let mut removed = remove_dead_files(root)?;
    let mut record = Record::load(root)?;
    let chains = record.chain_ids();
    let Some(top_chain) = chains.last().cloned() else {
        bail!("{}: the record has no layers", root.display());
    };
    let history = History::open(root)?;
    let top = branch_name(chains.len() - 1, &top_chain);
    let undone = roll_back_git(&history, &top, chains.len())?;
    let mut history = if undone.is_empty() {
        history
    } else {
        History::open(root)? // HEAD moved back
    };
    removed.extend(undone);
    if let Some(line) = leftovers::report(&removed) {
        eprintln!("{line}");
    }
    let (at, head) = head_layer(root, &record, &history)?;
    if at + 1 != chains.len() {
        return Err(Error::new(format!(
            "commit: HEAD is on {head} (layer {at}), not on the top layer {top}"
        ))
        .hint(format!(
            "new layers go on the top only: run `barge checkout {top} -r {}` first",
            root.display()
        )));
    }
    let manifest = parse_object(&record.manifest, "manifest")?;
    let config = parse_object(&record.config, "config")?;
    let layer_type = layer_media_type(&manifest);

    let found = changes_at(root, &mut record, at)?;
    if found.changes.is_empty() {
        return Err(nothing_to_commit(root, &top));
    }
    check_names(&found.changes)?;

    let blobs = blob_path(root, &top_chain)
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let packed = pack_shown(root, &found.changes, &blobs, out)?;
    let created = rfc3339(now_or_epoch());
    let new_config = next_config(config, &packed.diff_id, &created, &message)?;
    let config_bytes = crate::json::to_string_sorted(&new_config).into_bytes();
    let config_digest = put_blob(root, &config_bytes)?;
    let layer = Descriptor {
        media_type: layer_type,
        digest: packed.digest.clone(),
        size: packed.size,
    };
    let new_manifest = next_manifest(manifest, &config_digest, config_bytes.len(), &layer)?;
    let manifest_bytes = crate::json::to_string_sorted(&new_manifest).into_bytes();
    let manifest_digest = Digest::of_bytes(&manifest_bytes);
    let parent = Digest::of_bytes(&record.manifest);

    let index = chains.len();
    let chain = chain_id(Some(&top_chain), &packed.diff_id);
    let msg = LayerMessage {
        title: message,
        trailers: vec![
            ("Layer-Digest".into(), packed.digest.to_string()),
            ("Diff-ID".into(), packed.diff_id.to_string()),
            ("Media-Type".into(), layer.media_type.clone()),
            ("Size".into(), packed.size.to_string()),
            ("Chain-ID".into(), chain.to_string()),
        ],
    };
    let branch = history.commit_layer(index, &chain, &msg, &found.changes)?;
    history.finish()?;
    // git's objects and refs reach the disk before the record (the commit point)
    // names them; a power cut before that is undone by `roll_back_git`.
    sync_filesystem(&root.join(".git")).map_err(|e| e.context("writing git's objects to disk"))?;

    record.add_layer(
        LayerRecord {
            descriptor: layer,
            diff_id: packed.diff_id.clone(),
            changes: found.changes,
        },
        manifest_bytes,
        config_bytes,
        found.tree,
    );
    record.save()?;
    Ok(CommitSummary {
        branch,
        manifest_digest,
        config_digest,
        parent,
        chain_id: chain,
        layer_digest: packed.digest,
        diff_id: packed.diff_id,
        size: packed.size,
    })
}

/// Packs the new layer under a meter whose size is the changed regular files' content.
fn pack_shown(root: &Path, changes: &[Change], blobs: &Path, out: &Output) -> Result<Packed> {
    let size = content_size(changes);
    out.start(1, size);
    let mut meter = out.meter("new layer", Some(size));
    let packed = pack_counted(root, changes, blobs, &mut |n| meter.add(n))?;
    meter.finish();
    Ok(packed)
}

/// Bytes of file content in `changes` (what packing reads).
fn content_size(changes: &[Change]) -> u64 {
    changes
        .iter()
        .map(|c| match c {
            Change::Put(e) if e.kind == EntryKind::File => e.size,
            _ => 0,
        })
        .sum()
}

/// The layer HEAD's branch is (0 is the bottom), and that branch; an error naming
/// the command that puts HEAD back when it is on no layer branch of the record.
pub fn head_layer(root: &Path, record: &Record, history: &History) -> Result<(usize, String)> {
    let chains = record.chain_ids();
    let head = history.current_branch()?;
    let at =
        branch_index(&head).filter(|&n| chains.get(n).is_some_and(|c| branch_name(n, c) == head));
    match (at, chains.last()) {
        (Some(n), _) => Ok((n, head)),
        (None, Some(top)) => Err(Error::new(format!(
            "HEAD is on {head}, not on a layer branch of {}",
            root.display()
        ))
        .hint(format!(
            "run `barge checkout {} -r {}`",
            branch_name(chains.len() - 1, top),
            root.display()
        ))),
        (None, None) => bail!("{}: the record has no layers", root.display()),
    }
}

/// What `barge commit` would take if the tree were on layer `at`: the diff against
/// the merged view there. On the top layer a clean tree's moved stat cache is saved,
/// so the next look is fast again.
pub fn changes_at(root: &Path, record: &mut Record, at: usize) -> Result<Diff> {
    let top = at + 1 >= record.layers.len();
    let found = diff(root, &record.tree_at(at))?;
    if top && found.changes.is_empty() && found.stat_moved {
        record.tree = found.tree.clone();
        record.save_tree()?;
    }
    Ok(found)
}

/// Locks `.git/barge` for the whole commit, status or checkout (not a barge tree: no lock, and
/// `Record::load` says why).
pub fn lock(root: &Path) -> Result<Option<Lock>> {
    let dir = barge_dir(root);
    if !dir.is_dir() {
        return Ok(None);
    }
    leftovers::lock_tree(&dir, root).map(Some)
}

/// Under the lock: what dead runs left in `.git` (temporary files, an uncommitted
/// record save).
fn remove_dead_files(root: &Path) -> Result<Vec<PathBuf>> {
    if !barge_dir(root).is_dir() {
        return Ok(Vec::new());
    }
    let mut removed = remove_uncommitted(root)?;
    removed.extend(leftovers::remove_files(leftovers::dead_commit_files(root))?);
    Ok(removed)
}

/// Under the lock: a commit killed after git moved and before its record was
/// written leaves a branch one beyond the record's top (see
/// [`History::roll_back_beyond`]); the record is the truth.
fn roll_back_git(history: &History, top: &str, layers: usize) -> Result<Vec<PathBuf>> {
    let undone = history
        .roll_back_beyond(top, layers)
        .map_err(|e| e.context("undoing an interrupted commit"))?;
    Ok(undone
        .into_iter()
        .map(|b| PathBuf::from(format!("branch {b}")))
        .collect())
}

fn parse_object(bytes: &[u8], what: &str) -> Result<HashMap<String, JsonValue>> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::new(format!("{what}: not UTF-8")))?;
    match text.parse::<JsonValue>() {
        Ok(JsonValue::Object(o)) => Ok(o),
        Ok(_) => bail!("{what}: not a JSON object"),
        Err(e) => bail!("{what}: invalid JSON: {e}"),
    }
}

/// Docker schema2 images get Docker layers; everything else OCI ones.
fn layer_media_type(manifest: &HashMap<String, JsonValue>) -> String {
    match manifest.get("mediaType") {
        Some(JsonValue::String(s)) if s == DOCKER_MANIFEST => DOCKER_LAYER.into(),
        _ => OCI_LAYER.into(),
    }
}

fn next_config(
    mut config: HashMap<String, JsonValue>,
    diff_id: &Digest,
    created: &str,
    message: &str,
) -> Result<JsonValue> {
    let rootfs = config
        .entry("rootfs".into())
        .or_insert_with(|| JsonValue::Object(HashMap::new()));
    let JsonValue::Object(rootfs) = rootfs else {
        bail!("config: rootfs is not an object");
    };
    rootfs
        .entry("type".into())
        .or_insert_with(|| JsonValue::String("layers".into()));
    let ids = rootfs
        .entry("diff_ids".into())
        .or_insert_with(|| JsonValue::Array(Vec::new()));
    let JsonValue::Array(ids) = ids else {
        bail!("config: rootfs.diff_ids is not an array");
    };
    ids.push(JsonValue::String(diff_id.to_string()));
    // The image is as old as this commit, not as its base (skopeo and podman show this date).
    config.insert("created".to_string(), JsonValue::String(created.into()));
    let hist = config
        .entry("history".into())
        .or_insert_with(|| JsonValue::Array(Vec::new()));
    let JsonValue::Array(hist) = hist else {
        bail!("config: history is not an array");
    };
    let mut h = HashMap::new();
    h.insert("created".to_string(), JsonValue::String(created.into()));
    h.insert(
        "created_by".to_string(),
        JsonValue::String("barge commit".into()),
    );
    h.insert("comment".to_string(), JsonValue::String(message.into()));
    hist.push(JsonValue::Object(h));
    Ok(JsonValue::Object(config))
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> JsonValue {
    let mut d = HashMap::new();
    d.insert(
        "mediaType".to_string(),
        JsonValue::String(media_type.into()),
    );
    d.insert("digest".to_string(), JsonValue::String(digest.to_string()));
    d.insert("size".to_string(), JsonValue::Number(size as f64));
    JsonValue::Object(d)
}

fn next_manifest(
    mut manifest: HashMap<String, JsonValue>,
    config: &Digest,
    config_size: usize,
    layer: &Descriptor,
) -> Result<JsonValue> {
    let config_type = match manifest.get("config") {
        Some(JsonValue::Object(c)) => match c.get("mediaType") {
            Some(JsonValue::String(s)) => s.clone(),
            _ => bail!("manifest: config has no mediaType"),
        },
        _ => bail!("manifest: no config descriptor"),
    };
    if !manifest.contains_key("mediaType") {
        manifest.insert("mediaType".into(), JsonValue::String(OCI_MANIFEST.into()));
    }
    manifest.insert(
        "config".into(),
        descriptor(&config_type, config, config_size as u64),
    );
    let Some(JsonValue::Array(layers)) = manifest.get_mut("layers") else {
        bail!("manifest: no layers array");
    };
    layers.push(descriptor(&layer.media_type, &layer.digest, layer.size));
    Ok(JsonValue::Object(manifest))
}

/// "nothing to commit", with how to look at the tree's state.
fn nothing_to_commit(root: &std::path::Path, top: &str) -> Error {
    let dir = root.display();
    Error::new(format!("nothing to commit: {dir} is the same as {top}"))
        .hint(format!("run `barge status -r {dir}` to see it"))
}

/// RFC 3339 UTC time (`2024-01-02T03:04:05Z`) of seconds since the epoch.
pub fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil date from day count (proleptic Gregorian; Howard Hinnant's method).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}

/// Shared test fixture: a "pulled" barge tree made from a directory on disk.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    pub use crate::layer::pack::pack;
    use crate::store::Tree;
    use std::path::Path;

    pub fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("barge-t-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub fn write(root: &Path, p: &str, data: &str) {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    }

    /// A small image tree with a nested `.git`, a symlink and a hardlink pair.
    pub fn base_tree(root: &Path) {
        write(root, "etc/passwd", "root:x:0:0\n");
        write(root, "etc/hosts", "127.0.0.1 localhost\n");
        write(root, "usr/bin/tool", "#!/bin/sh\necho hi\n");
        std::fs::set_permissions(
            root.join("usr/bin/tool"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        write(root, "usr/share/doc/a/readme", "doc a\n");
        write(root, "usr/share/doc/b/readme", "doc b\n");
        write(root, "usr/src/app/main.c", "int main(){}\n");
        write(root, "usr/src/app/.git/HEAD", "ref: refs/heads/main\n");
        write(root, "usr/src/app/.git/config", "[core]\n");
        std::fs::create_dir_all(root.join("usr/src/app/.git/objects")).unwrap();
        std::fs::create_dir_all(root.join("usr/src/app/.git/refs")).unwrap();
        write(root, "var/lib/x/one", "shared\n");
        std::fs::hard_link(root.join("var/lib/x/one"), root.join("var/lib/x/two")).unwrap();
        std::os::unix::fs::symlink("passwd", root.join("etc/link")).unwrap();
        std::fs::create_dir_all(root.join("tmp/empty")).unwrap();
    }

    /// Pulls `root` as it stands as a one-layer image: packs it, commits it to
    /// git and creates the record, as `pull -g` does.
    pub fn pull_like(root: &Path, oci: bool) -> LayerRecord {
        let d = crate::layer::diff::diff(root, &Tree::default()).unwrap();
        let changes: Vec<Change> = d.changes;
        let blobs = root.join(".git/barge/blobs/sha256");
        let mut history = History::init(root).unwrap();
        let packed = pack(root, &changes, &blobs).unwrap();
        let (mt, lt, ct) = if oci {
            (
                OCI_MANIFEST,
                OCI_LAYER,
                "application/vnd.oci.image.config.v1+json",
            )
        } else {
            (
                DOCKER_MANIFEST,
                DOCKER_LAYER,
                "application/vnd.docker.container.image.v1+json",
            )
        };
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"]}},"rootfs":{{"type":"layers","diff_ids":["{}"]}},"history":[{{"created_by":"ADD base"}}]}}"#,
            packed.diff_id
        );
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{mt}","config":{{"mediaType":"{ct}","digest":"{}","size":{}}},"layers":[{{"mediaType":"{lt}","digest":"{}","size":{}}}]}}"#,
            Digest::of_bytes(config.as_bytes()),
            config.len(),
            packed.digest,
            packed.size
        );
        let chain = chain_id(None, &packed.diff_id);
        let msg = LayerMessage {
            title: "ADD base".into(),
            trailers: vec![("Diff-ID".into(), packed.diff_id.to_string())],
        };
        history.commit_layer(0, &chain, &msg, &changes).unwrap();
        history.finish().unwrap();
        let layer = LayerRecord {
            descriptor: Descriptor {
                media_type: lt.into(),
                digest: packed.digest,
                size: packed.size,
            },
            diff_id: packed.diff_id,
            changes,
        };
        Record::create(
            root,
            manifest.into_bytes(),
            config.into_bytes(),
            "localhost:5000/base:1",
            vec![layer.clone()],
        )
        .unwrap();
        layer
    }

    pub fn git(root: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[cfg(test)]
mod flow_tests {
    use super::testutil::*;
    use super::*;

    fn opts(root: &std::path::Path, m: &str) -> CommitOptions {
        CommitOptions {
            root: root.to_path_buf(),
            message: m.into(),
        }
    }

    #[test]
    fn seed_flow_pull_change_commit_twice() {
        let root = tmpdir("flow");
        base_tree(&root);
        pull_like(&root, false);
        // Clean git view right after the pull; the nested .git is not in it.
        assert_eq!(git(&root, &["status", "--porcelain"]), "");
        let files = git(&root, &["ls-files"]);
        assert!(files.contains("usr/src/app/main.c"), "{files}");
        assert!(!files.contains(".git/"), "{files}");

        let e = run(opts(&root, "noop")).unwrap_err();
        assert!(
            e.to_string().starts_with("nothing to commit: ")
                && e.to_string().contains("barge status -r "),
            "{e}"
        );
        assert!(run(opts(&root, "  ")).is_err());

        write(&root, "etc/motd", "hello\n");
        write(&root, "usr/src/app/.git/HEAD", "ref: refs/heads/other\n");
        let s1 = run(opts(&root, "add motd")).unwrap();
        assert!(s1.branch.starts_with("layer_1_"), "{}", s1.branch);
        std::fs::remove_dir_all(root.join("usr/share/doc/b")).unwrap();
        let s2 = run(opts(&root, "drop doc b")).unwrap();
        assert!(s2.branch.starts_with("layer_2_"));
        assert_eq!(s2.parent, s1.manifest_digest);
        let branches = History::open(&root).unwrap().branches().unwrap();
        assert_eq!(branches.len(), 3);
        assert_eq!(branches[2], s2.branch);
        assert_eq!(
            git(&root, &["symbolic-ref", "--short", "HEAD"]).trim(),
            s2.branch
        );
        assert_eq!(git(&root, &["status", "--porcelain"]), "");
        let log = git(&root, &["log", "--format=%B"]);
        assert!(
            log.contains("drop doc b") && log.contains("Layer-Digest: sha256:"),
            "{log}"
        );
        // The record follows: the new config has three diff_ids and the history.
        let rec = Record::load(&root).unwrap();
        assert_eq!(rec.layers.len(), 3);
        let cfg = String::from_utf8(rec.config.clone()).unwrap();
        assert!(cfg.contains("\"comment\":\"drop doc b\""), "{cfg}");
        assert!(cfg.contains(s2.diff_id.as_str()));
        let man = String::from_utf8(rec.manifest.clone()).unwrap();
        assert!(man.contains(DOCKER_LAYER) && man.contains(s2.layer_digest.as_str()));
        assert_eq!(Digest::of_bytes(&rec.manifest), s2.manifest_digest);
        assert!(blob_path(&root, &s2.layer_digest).is_file());
        assert!(blob_path(&root, &s2.config_digest).is_file());
        // The deletion, and usr/share/doc whose mtime it moved.
        assert_eq!(rec.layers[2].changes.len(), 2);

        // HEAD elsewhere: refused before anything changes.
        git(&root, &["checkout", "-q", &branches[1]]);
        write(&root, "etc/motd2", "x\n");
        let e = run(opts(&root, "x")).unwrap_err();
        assert!(
            e.to_string().contains("not on the top layer")
                && e.to_string().contains("run `barge checkout layer_2_"),
            "{e}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn same_tree_and_epoch_give_same_digests() {
        let mut digests = Vec::new();
        for i in 0..2 {
            let root = tmpdir(&format!("det{i}"));
            base_tree(&root);
            pull_like(&root, true);
            write(&root, "etc/new", "n\n");
            // SAFETY of the env var: only this test reads SOURCE_DATE_EPOCH concurrently
            // with itself; other tests do not depend on its value.
            std::env::set_var("SOURCE_DATE_EPOCH", "1700000000");
            let s = run(opts(&root, "det")).unwrap();
            digests.push((s.layer_digest, s.diff_id, s.config_digest));
            std::fs::remove_dir_all(&root).unwrap();
        }
        // Layer 0 mtimes differ between the two trees only if the clock ticked;
        // the new layer holds one file whose mtime is clamped.
        assert_eq!(digests[0].0, digests[1].0);
        assert_eq!(digests[0].1, digests[1].1);
    }
}

#[cfg(test)]
mod bench {
    use super::testutil::*;
    use super::*;
    use crate::store::Tree;
    use std::time::Instant;

    /// `BARGE_BENCH_TREE=/some/tree cargo test bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_git_and_commit() {
        let Ok(src) = std::env::var("BARGE_BENCH_TREE") else {
            return;
        };
        let root = tmpdir("bench");
        let st = std::process::Command::new("cp")
            .args(["-a", &format!("{src}/."), root.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success());
        let t = Instant::now();
        let changes = crate::layer::diff::diff(&root, &Tree::default())
            .unwrap()
            .changes;
        eprintln!(
            "walk+hash all ({} entries): {:?}",
            changes.len(),
            t.elapsed()
        );
        let t = Instant::now();
        let blobs = root.join(".git/barge/blobs/sha256");
        let mut h = History::init(&root).unwrap();
        let packed = pack(&root, &changes, &blobs).unwrap();
        eprintln!("pack (tar+gzip): {:?}, {} bytes", t.elapsed(), packed.size);
        let t = Instant::now();
        let chain = chain_id(None, &packed.diff_id);
        let msg = LayerMessage {
            title: "base".into(),
            trailers: vec![],
        };
        h.commit_layer(0, &chain, &msg, &changes).unwrap();
        h.finish().unwrap();
        eprintln!("git commit_layer+finish: {:?}", t.elapsed());
        let t = Instant::now();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":2}},"layers":[]}}"#,
            "0".repeat(64)
        );
        let layer = LayerRecord {
            descriptor: Descriptor {
                media_type: OCI_LAYER.into(),
                digest: packed.digest.clone(),
                size: packed.size,
            },
            diff_id: packed.diff_id.clone(),
            changes,
        };
        let config = format!(
            r#"{{"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            packed.diff_id
        );
        Record::create(
            &root,
            manifest.into_bytes(),
            config.into_bytes(),
            "x",
            vec![layer],
        )
        .unwrap();
        eprintln!("record create: {:?}", t.elapsed());
        let t = Instant::now();
        let rec = Record::load(&root).unwrap();
        eprintln!("record load: {:?}", t.elapsed());
        let t = Instant::now();
        let d = crate::layer::diff::diff(&root, rec.tree()).unwrap();
        eprintln!(
            "no-op diff: {:?} ({} changes)",
            t.elapsed(),
            d.changes.len()
        );
        let t = Instant::now();
        let e = run(CommitOptions {
            root: root.clone(),
            message: "x".into(),
        })
        .unwrap_err();
        eprintln!("no-op commit: {:?} ({e})", t.elapsed());
        write(&root, "etc/new-file", "hello\n");
        let t = Instant::now();
        let s = run(CommitOptions {
            root: root.clone(),
            message: "small".into(),
        })
        .unwrap();
        eprintln!("small commit: {:?} ({})", t.elapsed(), s.branch);
        let t = Instant::now();
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["status", "--porcelain"])
            .output()
            .unwrap();
        eprintln!(
            "first git status: {:?} ({} bytes of output)",
            t.elapsed(),
            out.stdout.len()
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
