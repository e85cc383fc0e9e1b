//! Test images: built with `umoci` into OCI layouts (some layers crafted byte by byte
//! as tar files and added with `umoci raw add-layer`), edited by hand where a broken
//! image is needed, and pushed with `skopeo copy`. Also the expected trees: `umoci
//! unpack` of the same image.

use super::registry::{Mode, Registry};
use super::tree::{snapshot, Tree};
use super::{require_tool, run, sha256_hex, TempDir};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use tinyjson::JsonValue;

/// Base mtime of fixture entries (2023-11-14).
pub const EPOCH: i64 = 1_700_000_000;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

// ------------------------------------------------------------------ tar crafting

/// Writes tar archives header by header (ustar, with PAX records when asked), so that
/// tests control every byte: names with `..`, absolute names, missing padding, etc.
#[derive(Default)]
pub struct TarBuilder {
    buf: Vec<u8>,
}

/// One raw tar entry.
#[derive(Clone, Debug)]
pub struct RawEntry {
    pub name: Vec<u8>,
    /// `b'0'` file, `b'1'` hardlink, `b'2'` symlink, `b'3'` char, `b'4'` block,
    /// `b'5'` dir, `b'6'` fifo.
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub link: Vec<u8>,
    pub data: Vec<u8>,
    pub dev: (u32, u32),
    /// PAX records written in an `x` header before this entry.
    pub pax: Vec<(String, Vec<u8>)>,
}

impl RawEntry {
    pub fn new(name: &str, typeflag: u8, mode: u32) -> RawEntry {
        RawEntry {
            name: name.as_bytes().to_vec(),
            typeflag,
            mode,
            uid: 0,
            gid: 0,
            mtime: EPOCH,
            link: Vec::new(),
            data: Vec::new(),
            dev: (0, 0),
            pax: Vec::new(),
        }
    }
}

impl TarBuilder {
    pub fn new() -> TarBuilder {
        TarBuilder::default()
    }

    /// Appends an entry, data padded to 512 bytes.
    pub fn entry(&mut self, e: RawEntry) -> &mut Self {
        self.entry_padded(e, true)
    }

    /// Appends an entry; `pad = false` leaves the data unpadded (a broken tar).
    pub fn entry_padded(&mut self, e: RawEntry, pad: bool) -> &mut Self {
        if !e.pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &e.pax {
                let rest = [b" ", k.as_bytes(), b"=", v, b"\n"].concat();
                let mut len = rest.len() + 1;
                while format!("{len}").len() + rest.len() != len {
                    len += 1;
                }
                body.extend_from_slice(format!("{len}").as_bytes());
                body.extend_from_slice(&rest);
            }
            let mut x = RawEntry::new("PaxHeaders/x", b'x', 0o644);
            x.data = body;
            self.entry_padded(x, true);
        }
        let mut h = [0u8; 512];
        let name = &e.name;
        if name.len() <= 100 {
            h[..name.len()].copy_from_slice(name);
        } else {
            let split = name[..name.len().min(156)]
                .iter()
                .rposition(|&b| b == b'/')
                .expect("long tar name needs a '/' to split");
            let (prefix, rest) = (&name[..split], &name[split + 1..]);
            assert!(
                prefix.len() <= 155 && rest.len() <= 100,
                "name too long for ustar"
            );
            h[..rest.len()].copy_from_slice(rest);
            h[345..345 + prefix.len()].copy_from_slice(prefix);
        }
        octal(&mut h[100..108], u64::from(e.mode));
        octal(&mut h[108..116], u64::from(e.uid));
        octal(&mut h[116..124], u64::from(e.gid));
        octal(&mut h[124..136], e.data.len() as u64);
        octal(&mut h[136..148], e.mtime.max(0) as u64);
        h[156] = e.typeflag;
        assert!(e.link.len() <= 100, "link name too long");
        h[157..157 + e.link.len()].copy_from_slice(&e.link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        octal(&mut h[329..337], u64::from(e.dev.0));
        octal(&mut h[337..345], u64::from(e.dev.1));
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.buf.extend_from_slice(&h);
        self.buf.extend_from_slice(&e.data);
        if pad {
            let rem = e.data.len() % 512;
            if rem != 0 {
                self.buf.resize(self.buf.len() + 512 - rem, 0);
            }
        }
        self
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.entry(RawEntry::new(name, b'5', mode))
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        let mut e = RawEntry::new(name, b'0', mode);
        e.data = data.to_vec();
        self.entry(e)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut e = RawEntry::new(name, b'2', 0o777);
        e.link = target.as_bytes().to_vec();
        self.entry(e)
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut e = RawEntry::new(name, b'1', 0o644);
        e.link = target.as_bytes().to_vec();
        self.entry(e)
    }

    /// A `.wh.` whiteout (an empty regular file).
    pub fn whiteout(&mut self, name: &str) -> &mut Self {
        self.file(name, 0o644, b"")
    }

    /// The bytes so far plus the 1024-byte end-of-archive marker.
    pub fn finish(&self) -> Vec<u8> {
        let mut b = self.buf.clone();
        b.resize(b.len() + 1024, 0);
        b
    }

    /// The bytes so far, without end-of-archive marker.
    pub fn unterminated(&self) -> Vec<u8> {
        self.buf.clone()
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0width$o}\0", width = field.len() - 1);
    assert!(s.len() == field.len(), "value {v} does not fit a tar field");
    field.copy_from_slice(s.as_bytes());
}

// ------------------------------------------------------------------ OCI layouts

/// An OCI image layout directory, driven through umoci and edited by hand.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// `umoci init --layout DIR`.
    pub fn init(dir: &Path) -> Layout {
        require_tool("umoci");
        umoci(&["init", "--layout", &s(dir)]);
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    /// `DIR:TAG`, the form umoci and skopeo's `oci:` take.
    pub fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.dir.display())
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    pub fn read_blob(&self, digest: &str) -> Vec<u8> {
        fs::read(self.blob_path(digest)).unwrap_or_else(|e| panic!("read blob {digest}: {e}"))
    }

    pub fn read_json(&self, digest: &str) -> JsonValue {
        parse_json(&self.read_blob(digest))
    }

    /// Stores `data` as a blob; returns (digest, size).
    pub fn write_blob(&self, data: &[u8]) -> (String, u64) {
        let d = format!("sha256:{}", sha256_hex(data));
        fs::write(self.blob_path(&d), data).expect("write blob");
        (d, data.len() as u64)
    }

    /// Stores a JSON value as a blob; returns (digest, size).
    pub fn write_json(&self, v: &JsonValue) -> (String, u64) {
        self.write_blob(v.stringify().expect("stringify").as_bytes())
    }

    pub fn index(&self) -> JsonValue {
        parse_json(&fs::read(self.dir.join("index.json")).expect("read index.json"))
    }

    /// The descriptor that `index.json` gives `tag`.
    pub fn descriptor(&self, tag: &str) -> JsonValue {
        let idx = self.index();
        let list: &Vec<JsonValue> = idx["manifests"].get().expect("manifests array");
        list.iter()
            .find(|d| ref_name(d) == Some(tag))
            .cloned()
            .unwrap_or_else(|| panic!("no tag {tag} in {}", self.dir.display()))
    }

    /// Digest of `tag`'s manifest (or index).
    pub fn digest(&self, tag: &str) -> String {
        str_of(&self.descriptor(tag)["digest"])
    }

    pub fn manifest(&self, tag: &str) -> JsonValue {
        self.read_json(&self.digest(tag))
    }

    /// Points `tag` at a new descriptor (media type, digest, size).
    pub fn set_tag(&self, tag: &str, media_type: &str, digest: &str, size: u64) {
        let mut idx = self.index();
        let desc = obj(&[
            ("mediaType", jstr(media_type)),
            ("digest", jstr(digest)),
            ("size", JsonValue::Number(size as f64)),
            (
                "annotations",
                obj(&[("org.opencontainers.image.ref.name", jstr(tag))]),
            ),
        ]);
        let list: &mut Vec<JsonValue> = idx["manifests"].get_mut().expect("manifests array");
        list.retain(|d| ref_name(d) != Some(tag));
        list.push(desc);
        fs::write(
            self.dir.join("index.json"),
            idx.stringify().expect("stringify"),
        )
        .expect("write index.json");
    }

    /// Copies `from` to a new tag `to`, letting `edit` change the manifest and config
    /// (parsed); writes the new blobs. Returns the new manifest digest.
    pub fn derive(
        &self,
        from: &str,
        to: &str,
        edit: impl FnOnce(&Layout, &mut JsonValue, &mut JsonValue),
    ) -> String {
        let mut manifest = self.manifest(from);
        let mut config = self.read_json(&str_of(&manifest["config"]["digest"]));
        edit(self, &mut manifest, &mut config);
        let (cd, cs) = self.write_json(&config);
        set_desc(&mut manifest["config"], &cd, cs);
        let (md, ms) = self.write_json(&manifest);
        self.set_tag(to, OCI_MANIFEST, &md, ms);
        md
    }

    /// `umoci unpack` of `tag` (as root: owners kept); returns the rootfs snapshot.
    pub fn unpack_tree(&self, tag: &str) -> Tree {
        let bundle = TempDir::new("umoci-unpack");
        let b = bundle.join("bundle");
        umoci(&["unpack", "--image", &self.image(tag), &s(&b)]);
        snapshot(&b.join("rootfs"))
    }

    /// `umoci unpack` of `tag` into `bundle` (kept by the caller).
    pub fn unpack_to(&self, tag: &str, bundle: &Path) {
        umoci(&["unpack", "--image", &self.image(tag), &s(bundle)]);
    }

    /// `umoci raw add-layer --image SRC [--tag DST] TAR`.
    pub fn add_layer(&self, src: &str, dst: Option<&str>, tar: &[u8]) {
        let tmp = TempDir::new("layer");
        let f = tmp.join("layer.tar");
        fs::write(&f, tar).expect("write layer tar");
        let img = self.image(src);
        let mut args = vec!["raw", "add-layer", "--image", &img];
        if let Some(d) = dst {
            args.extend(["--tag", d]);
        }
        let fs_ = s(&f);
        args.push(&fs_);
        umoci(&args);
    }
}

fn ref_name(d: &JsonValue) -> Option<&str> {
    match &d["annotations"] {
        JsonValue::Object(m) => match m.get("org.opencontainers.image.ref.name") {
            Some(JsonValue::String(s)) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// Sets `digest` and `size` of a descriptor object.
pub fn set_desc(desc: &mut JsonValue, digest: &str, size: u64) {
    let m: &mut HashMap<String, JsonValue> = desc.get_mut().expect("descriptor object");
    m.insert("digest".into(), jstr(digest));
    m.insert("size".into(), JsonValue::Number(size as f64));
}

pub fn parse_json(b: &[u8]) -> JsonValue {
    std::str::from_utf8(b)
        .expect("utf-8 json")
        .parse()
        .expect("valid json")
}

pub fn str_of(v: &JsonValue) -> String {
    match v {
        JsonValue::String(s) => s.clone(),
        other => panic!("expected a JSON string, got {other:?}"),
    }
}

pub fn jstr(s: &str) -> JsonValue {
    JsonValue::String(s.to_string())
}

pub fn obj(kv: &[(&str, JsonValue)]) -> JsonValue {
    JsonValue::Object(kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// Runs umoci, panicking on failure.
pub fn umoci(args: &[&str]) -> String {
    require_tool("umoci");
    String::from_utf8_lossy(&run(Command::new("umoci").args(args))).into_owned()
}

/// `skopeo copy [--format v2s2] [--all] oci:LAYOUT:TAG docker://REG/REPO`.
pub fn push(reg: &Registry, layout: &Layout, tag: &str, dest: &str, v2s2: bool) {
    push_args(
        reg,
        layout,
        tag,
        dest,
        if v2s2 { &["--format", "v2s2"] } else { &[] },
    );
}

/// `skopeo copy EXTRA oci:LAYOUT:TAG docker://REG/DEST` with the registry's TLS and
/// credential options.
pub fn push_args(reg: &Registry, layout: &Layout, tag: &str, dest: &str, extra: &[&str]) {
    require_tool("skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "-q"])
        .args(reg.skopeo_dest_args())
        .args(extra)
        .arg(format!("oci:{}", layout.image(tag)))
        .arg(format!("docker://{}", reg.image(dest)));
    run(&mut cmd);
}

// ------------------------------------------------------------------ filesystem helpers

/// Sets mtime and atime of `p` without following a symlink.
pub fn set_mtime(p: &Path, secs: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path without NUL");
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: valid C string and a two-element timespec array.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        r,
        0,
        "utimensat {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// Sets all mtimes below `root` (children first) to distinct values from `base`.
pub fn set_all_mtimes(root: &Path, base: i64) {
    let mut paths = Vec::new();
    collect(root, &mut paths);
    paths.sort();
    for (i, p) in paths.iter().enumerate().rev() {
        set_mtime(p, base + 7 * i as i64);
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        out.push(p.clone());
        if is_dir {
            collect(&p, out);
        }
    }
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).expect("lchown");
}

/// chmod, failing the test on error.
pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn write(p: &Path, data: &[u8], mode: u32) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).expect("mkdir -p");
    }
    fs::write(p, data).expect("write file");
    chmod(p, mode);
}

fn mkdir(p: &Path, mode: u32) {
    fs::create_dir_all(p).expect("mkdir -p");
    chmod(p, mode);
}

/// mknod (device or fifo) with `mode`, failing the test on error.
pub fn mknod(p: &Path, kind: libc::mode_t, mode: u32, dev: libc::dev_t) {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: valid C string.
    let r = unsafe { libc::mknod(c.as_ptr(), kind | mode as libc::mode_t, dev) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    chmod(p, mode);
}

/// lsetxattr, failing the test on error.
pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path without NUL");
    let n = CString::new(name).expect("name without NUL");
    // SAFETY: valid C strings and a live buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// Deterministic pseudo-random bytes (xorshift), for content that does not compress.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ------------------------------------------------------------------ the fixtures

/// (a) "rich": three layers exercising every entry type and the whiteout rules.
pub fn build_rich(l: &Layout, tag: &str) {
    let work = TempDir::new("rich");
    umoci(&["new", "--image", &l.image(tag)]);
    // Layer 1: real files, repacked by umoci.
    let b = work.join("b1");
    l.unpack_to(tag, &b);
    let r = b.join("rootfs");
    mkdir(&r.join("etc"), 0o755);
    write(&r.join("etc/hostname"), b"rich\n", 0o644);
    set_xattr(&r.join("etc/hostname"), "user.barge.test", b"hello xattr");
    write(&r.join("etc/group-owned"), b"group 42\n", 0o640);
    chown(&r.join("etc/group-owned"), 0, 42);
    write(&r.join("etc/empty"), b"", 0o644);
    symlink("../nowhere", r.join("etc/dangling")).unwrap();
    mkdir(&r.join("usr/bin"), 0o755);
    write(&r.join("usr/bin/tool"), &noise(70_000, 1), 0o4755);
    write(&r.join("usr/bin/sgid"), b"#!/bin/sh\necho sgid\n", 0o2755);
    fs::hard_link(r.join("usr/bin/tool"), r.join("usr/bin/tool-hardlink")).unwrap();
    symlink("/usr/bin/tool", r.join("usr/bin/abs-link")).unwrap();
    symlink("tool", r.join("usr/bin/rel-link")).unwrap();
    symlink("usr/bin", r.join("bin")).unwrap();
    mkdir(&r.join("data"), 0o755);
    write(&r.join("data/a"), &noise(5000, 2), 0o644);
    fs::hard_link(r.join("data/a"), r.join("data/b")).unwrap();
    write(&r.join("data/big"), &noise(300_000, 3), 0o600);
    mkdir(&r.join("home/app/.config"), 0o700);
    write(&r.join("home/app/notes.txt"), b"owned by 1000\n", 0o600);
    for p in ["home/app", "home/app/.config", "home/app/notes.txt"] {
        chown(&r.join(p), 1000, 1000);
    }
    mkdir(&r.join("srv/shared"), 0o2775);
    chown(&r.join("srv/shared"), 0, 42);
    mkdir(&r.join("tmp"), 0o1777);
    mkdir(&r.join("empty-dir"), 0o755);
    mkdir(&r.join("run"), 0o755);
    mknod(&r.join("run/fifo"), libc::S_IFIFO, 0o640, 0);
    mkdir(&r.join("dev"), 0o755);
    mknod(
        &r.join("dev/null-ish"),
        libc::S_IFCHR,
        0o666,
        libc::makedev(1, 3),
    );
    write(&r.join("wh/file-gone"), b"to be whited out\n", 0o644);
    write(&r.join("wh/kept"), b"kept\n", 0o644);
    write(&r.join("wh/dir-gone/a"), b"a\n", 0o644);
    write(&r.join("wh/dir-gone/sub/b"), b"b\n", 0o644);
    write(&r.join("opq/old1"), b"old1\n", 0o644);
    write(&r.join("opq/old2"), b"old2\n", 0o644);
    write(&r.join("opq/sub/old3"), b"old3\n", 0o644);
    write(
        &r.join("replace/file-becomes-dir"),
        b"i was a file\n",
        0o644,
    );
    write(&r.join("replace/dir-becomes-link/x"), b"x\n", 0o644);
    write(&r.join("replace/link-becomes-file-target"), b"t\n", 0o644);
    symlink(
        "link-becomes-file-target",
        r.join("replace/link-becomes-file"),
    )
    .unwrap();
    write(
        &r.join("names/héllo wörld 日本語.txt"),
        "unicode\n".as_bytes(),
        0o644,
    );
    write(
        &r.join("names").join("n".repeat(150)),
        b"long name\n",
        0o644,
    );
    write(&r.join("names/big-ids"), b"uid and gid above 2^21\n", 0o644);
    chown(&r.join("names/big-ids"), 3_000_000, 3_000_001);
    set_all_mtimes(&r, EPOCH);
    umoci(&["repack", "--image", &l.image(tag), &s(&b)]);

    // Layer 2: crafted, with whiteouts, an opaque dir and type changes.
    let mut t = TarBuilder::new();
    let mut e = RawEntry::new("wh/", b'5', 0o755);
    e.mtime = EPOCH + 3600;
    t.entry(e);
    t.whiteout("wh/.wh.file-gone").whiteout("wh/.wh.dir-gone");
    let mut e = RawEntry::new("opq/", b'5', 0o750);
    e.mtime = EPOCH + 3601;
    t.entry(e);
    t.file(
        "opq/new1",
        0o644,
        b"new in layer 2, before the opaque marker\n",
    );
    t.whiteout("opq/.wh..wh..opq");
    t.dir("opq/newdir/", 0o755)
        .file("opq/newdir/new2", 0o600, b"new2\n");
    t.dir("replace/file-becomes-dir/", 0o755).file(
        "replace/file-becomes-dir/inner",
        0o644,
        b"inner\n",
    );
    t.symlink("replace/dir-becomes-link", "../etc");
    t.file("replace/link-becomes-file", 0o644, b"now a file\n");
    let mut e = RawEntry::new("layer2/", b'5', 0o755);
    e.uid = 1000;
    e.gid = 1000;
    t.entry(e);
    t.file("layer2/h1", 0o640, b"hardlinked in layer 2\n");
    t.hardlink("layer2/h2", "layer2/h1");
    t.hardlink("layer2/lower-link", "etc/hostname");
    let mut e = RawEntry::new("layer2/pax-xattr", b'0', 0o644);
    e.data = b"with a PAX xattr\n".to_vec();
    e.pax = vec![("SCHILY.xattr.user.origin".into(), b"layer2".to_vec())];
    t.entry(e);
    let prefixed = format!("layer2/{}/{}", "p".repeat(90), "q".repeat(60));
    t.dir(&format!("layer2/{}/", "p".repeat(90)), 0o755);
    t.file(&prefixed, 0o644, b"ustar prefix field\n");
    let long = format!("layer2/{}", "x".repeat(200));
    let mut e = RawEntry::new("layer2/pax-path-placeholder", b'0', 0o644);
    e.data = b"name from a PAX path record\n".to_vec();
    e.pax = vec![("path".into(), long.into_bytes())];
    t.entry(e);
    l.add_layer(tag, None, &t.finish());

    // Layer 3: small changes, repacked by umoci.
    let b3 = work.join("b3");
    l.unpack_to(tag, &b3);
    let r = b3.join("rootfs");
    write(
        &r.join("etc/hostname"),
        b"rich, changed in layer 3\n",
        0o644,
    );
    set_mtime(&r.join("etc/hostname"), EPOCH + 7200);
    chmod(&r.join("data/big"), 0o644);
    chown(&r.join("wh/kept"), 1000, 42);
    fs::remove_file(r.join("usr/bin/rel-link")).unwrap();
    write(&r.join("srv/shared/added"), b"added in layer 3\n", 0o664);
    set_mtime(&r.join("srv/shared/added"), EPOCH + 7201);
    set_mtime(&r.join("srv/shared"), EPOCH + 7202);
    set_mtime(&r.join("usr/bin"), EPOCH + 7203);
    umoci(&["repack", "--image", &l.image(tag), &s(&b3)]);
}

/// (b) busybox: `/bin/busybox` of busybox-static plus its applet symlinks.
pub fn build_busybox(l: &Layout, tag: &str) {
    require_tool("busybox");
    let work = TempDir::new("busybox");
    umoci(&["new", "--image", &l.image(tag)]);
    let b = work.join("b");
    l.unpack_to(tag, &b);
    let r = b.join("rootfs");
    let bb = which("busybox");
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home/app",
    ] {
        mkdir(&r.join(d), 0o755);
    }
    fs::copy(&bb, r.join("bin/busybox")).expect("copy busybox");
    chmod(&r.join("bin/busybox"), 0o755);
    let list = String::from_utf8_lossy(&run(Command::new(&bb).arg("--list-full"))).into_owned();
    for applet in list.lines().map(str::trim).filter(|a| !a.is_empty()) {
        let p = r.join(applet);
        if applet == "bin/busybox" || p.symlink_metadata().is_ok() {
            continue;
        }
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink("/bin/busybox", &p).unwrap();
    }
    write(
        &r.join("etc/passwd"),
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        0o644,
    );
    write(&r.join("etc/group"), b"root:x:0:\napp:x:1000:\n", 0o644);
    chmod(&r.join("root"), 0o700);
    chown(&r.join("home/app"), 1000, 1000);
    mkdir(&r.join("tmp"), 0o1777);
    set_all_mtimes(&r, EPOCH);
    umoci(&["repack", "--image", &l.image(tag), &s(&b)]);
}

/// (c) a multi-platform OCI index `index_tag`: linux/amd64 = `amd64_tag`, linux/arm64 =
/// `amd64_tag` plus a layer with `/etc/platform` (tag `arm64`), and an attestation
/// manifest (unknown/unknown) listed first.
pub fn build_multi(l: &Layout, amd64_tag: &str, index_tag: &str) {
    let mut t = TarBuilder::new();
    t.dir("etc/", 0o755).file("etc/platform", 0o644, b"arm64\n");
    l.add_layer(amd64_tag, Some("arm64"), &t.finish());
    umoci(&[
        "config",
        "--image",
        &l.image("arm64"),
        "--architecture",
        "arm64",
    ]);
    let amd = l.descriptor(amd64_tag);
    let arm = l.descriptor("arm64");
    let stmt = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document","subject":[{{"name":"barge-test","digest":{{"sha256":"{}"}}}}],"predicate":{{"spdxVersion":"SPDX-2.3","name":"barge-test"}}}}"#,
        str_of(&amd["digest"]).trim_start_matches("sha256:")
    );
    let (sd, ss) = l.write_blob(stmt.as_bytes());
    let cfg = format!(
        r#"{{"architecture":"unknown","os":"unknown","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{sd}"]}}}}"#
    );
    let (cd, cs) = l.write_blob(cfg.as_bytes());
    let att = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{cd}","size":{cs}}},"layers":[{{"mediaType":"application/vnd.in-toto+json","digest":"{sd}","size":{ss},"annotations":{{"in-toto.io/predicate-type":"https://spdx.dev/Document"}}}}]}}"#
    );
    let (ad, asz) = l.write_blob(att.as_bytes());
    let entry = |d: &JsonValue, arch: &str| {
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
            str_of(&d["digest"]),
            d["size"].stringify().unwrap()
        )
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{ad}","size":{asz},"platform":{{"architecture":"unknown","os":"unknown"}},"annotations":{{"vnd.docker.reference.digest":"{}","vnd.docker.reference.type":"attestation-manifest"}}}},{},{}]}}"#,
        str_of(&amd["digest"]),
        entry(&amd, "amd64"),
        entry(&arm, "arm64")
    );
    let (xd, xs) = l.write_blob(index.as_bytes());
    l.set_tag(index_tag, OCI_INDEX, &xd, xs);
}

/// (e) `base` plus a layer like umoci 0.4.7's `insert --opaque` writes: the opaque
/// marker before its directory, the last file unpadded, no end-of-archive blocks.
pub fn build_quirk(l: &Layout, base: &str, tag: &str) {
    let mut t = TarBuilder::new();
    let mut e = RawEntry::new("etc/.wh..wh..opq", b'0', 0);
    e.mtime = 0;
    t.entry(e);
    let mut e = RawEntry::new("etc/", b'5', 0o755);
    e.mtime = EPOCH + 3600;
    t.entry(e);
    let mut e = RawEntry::new("etc/passwd", b'0', 0o644);
    e.data = b"root:x:0:0:root:/root:/bin/sh\n".to_vec();
    e.mtime = EPOCH + 3600;
    t.entry(e);
    let mut e = RawEntry::new("etc/group", b'0', 0o644);
    e.data = b"root:x:0:\n".to_vec();
    e.mtime = EPOCH + 3600;
    t.entry_padded(e, false);
    let bytes = t.unterminated();
    assert!(bytes.len() % 512 != 0);
    l.add_layer(base, Some(tag), &bytes);
}

/// `from` with every layer stored uncompressed (`...layer.v1.tar`).
pub fn build_uncompressed(l: &Layout, from: &str, to: &str) {
    l.derive(from, to, |l, m, _| {
        let layers: &mut Vec<JsonValue> = m["layers"].get_mut().unwrap();
        for layer in layers.iter_mut() {
            let gz = l.blob_path(&str_of(&layer["digest"]));
            let tar = run(Command::new("gzip").arg("-dc").arg(&gz));
            let (d, sz) = l.write_blob(&tar);
            set_desc(layer, &d, sz);
            let o: &mut HashMap<String, JsonValue> = layer.get_mut().unwrap();
            o.insert("mediaType".into(), jstr(OCI_LAYER_TAR));
        }
    });
}

/// `from` with the config's first diff_id replaced by a wrong one.
pub fn build_wrong_diff_id(l: &Layout, from: &str, to: &str) {
    l.derive(from, to, |_, _, c| {
        let ids: &mut Vec<JsonValue> = c["rootfs"]["diff_ids"].get_mut().unwrap();
        ids[0] = jstr(&format!("sha256:{}", sha256_hex(b"not the layer")));
    });
}

/// `from` with its last layer's gzip cut in half (the manifest digest matches the cut
/// blob, the diff_id is the real tar's).
pub fn build_truncated_gzip(l: &Layout, from: &str, to: &str) {
    l.derive(from, to, |l, m, _| {
        let layers: &mut Vec<JsonValue> = m["layers"].get_mut().unwrap();
        let last = layers.last_mut().unwrap();
        let gz = l.read_blob(&str_of(&last["digest"]));
        let (d, sz) = l.write_blob(&gz[..gz.len() / 2]);
        set_desc(last, &d, sz);
    });
}

/// `from` with its layers declared zstd while the blobs stay gzip: the zstd decoder
/// must refuse the bytes (real zstd images: tests/zstd.rs).
pub fn build_zstd(l: &Layout, from: &str, to: &str) {
    l.derive(from, to, |_, m, _| {
        let layers: &mut Vec<JsonValue> = m["layers"].get_mut().unwrap();
        for layer in layers.iter_mut() {
            let o: &mut HashMap<String, JsonValue> = layer.get_mut().unwrap();
            o.insert("mediaType".into(), jstr(OCI_LAYER_ZSTD));
        }
    });
}

/// Makes a one-off image from crafted layers (on an empty base) and pushes it to `reg`
/// as `dest` (OCI form).
pub fn push_crafted(reg: &Registry, dest: &str, layers: &[Vec<u8>]) {
    let work = TempDir::new("crafted");
    let l = Layout::init(&work.join("layout"));
    umoci(&["new", "--image", &l.image("x")]);
    for layer in layers {
        l.add_layer("x", None, layer);
    }
    push(reg, &l, "x", dest, false);
}

fn which(tool: &str) -> PathBuf {
    require_tool(tool);
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .expect("tool on PATH")
}

// ------------------------------------------------------------------ shared set

/// Every fixture in one layout, pushed to one plain registry per test binary.
pub struct Fixtures {
    pub layout: Layout,
    pub registry: Registry,
    trees: Mutex<HashMap<String, Tree>>,
    _dir: TempDir,
}

/// Tags in the shared layout, and where each is pushed (repository:tag, v2s2?).
pub const PUSHES: &[(&str, &str, bool)] = &[
    ("rich", "test/rich:oci", false),
    ("rich", "test/rich:v2s2", true),
    ("busybox", "test/busybox:oci", false),
    ("busybox", "test/busybox:v2s2", true),
    ("quirk", "test/quirk:1", false),
    ("rich-tar", "test/rich-tar:1", false),
    ("bad-diffid", "test/bad-diffid:1", false),
    ("truncated", "test/truncated:1", false),
    ("zstd", "test/zstd:1", false),
];

impl Fixtures {
    /// Builds everything (once per test binary) and pushes it to a plain registry.
    pub fn get() -> &'static Fixtures {
        static F: OnceLock<Fixtures> = OnceLock::new();
        F.get_or_init(Fixtures::build)
    }

    fn build() -> Fixtures {
        let dir = TempDir::new("fixtures");
        let layout = Layout::init(&dir.join("layout"));
        build_busybox(&layout, "busybox");
        build_rich(&layout, "rich");
        build_multi(&layout, "busybox", "multi");
        build_quirk(&layout, "busybox", "quirk");
        build_uncompressed(&layout, "rich", "rich-tar");
        build_wrong_diff_id(&layout, "busybox", "bad-diffid");
        build_truncated_gzip(&layout, "rich", "truncated");
        build_zstd(&layout, "busybox", "zstd");
        let registry = Registry::start(Mode::Plain);
        for (tag, dest, v2s2) in PUSHES {
            push(&registry, &layout, tag, dest, *v2s2);
        }
        push_args(
            &registry,
            &layout,
            "multi",
            "test/multi:1",
            &["--all", "--preserve-digests"],
        );
        Fixtures {
            layout,
            registry,
            trees: Mutex::new(HashMap::new()),
            _dir: dir,
        }
    }

    /// `127.0.0.1:PORT/REPO:TAG` on the shared registry.
    pub fn image(&self, repo_tag: &str) -> String {
        self.registry.image(repo_tag)
    }

    /// The tree `umoci unpack` makes of `tag` (cached).
    pub fn expected(&self, tag: &str) -> Tree {
        let mut trees = self.trees.lock().unwrap_or_else(|e| e.into_inner());
        trees
            .entry(tag.to_string())
            .or_insert_with(|| self.layout.unpack_tree(tag))
            .clone()
    }
}
