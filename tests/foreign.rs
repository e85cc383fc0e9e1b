//! The release binaries in `dist/` (`make release`), each run on this machine: x86_64
//! natively, aarch64, armv7 and riscv64 under qemu-user-static. Against the test registry
//! each must pull the fixtures to the same trees `umoci unpack` makes, pick its own
//! platform from a four-platform index, and keep an mtime in 2040 (past the 32-bit
//! `time_t` limit: armv7 is the one this tests).
//!
//! The binaries are found in `$BARGE_DIST` (default: `dist/` of the crate) as
//! `barge-VERSION-ARCH-linux-musl`; `make test` runs `make release` first. A missing
//! binary or qemu fails the test, naming what to run.

mod common;

use common::fixtures::{
    build_busybox, push_args, push_crafted, umoci, Fixtures, Layout, RawEntry, TarBuilder,
};
use common::tree::{assert_same_tree, snapshot, Tree};
use common::{assert_success, require_tool, TempDir};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// One release target: its name in `dist/`, the qemu that runs it (None: natively) and
/// the platform it must pick from an index.
struct Arch {
    name: &'static str,
    qemu: Option<&'static str>,
    platform: (&'static str, Option<&'static str>),
}

const X86_64: Arch = Arch {
    name: "x86_64",
    qemu: None,
    platform: ("amd64", None),
};
const AARCH64: Arch = Arch {
    name: "aarch64",
    qemu: Some("qemu-aarch64-static"),
    platform: ("arm64", Some("v8")),
};
const ARMV7: Arch = Arch {
    name: "armv7",
    qemu: Some("qemu-arm-static"),
    platform: ("arm", Some("v7")),
};
const RISCV64: Arch = Arch {
    name: "riscv64",
    qemu: Some("qemu-riscv64-static"),
    platform: ("riscv64", None),
};
const ALL: [&Arch; 4] = [&X86_64, &AARCH64, &ARMV7, &RISCV64];

/// 2040-01-01T00:00:00Z: past 2038-01-19, the end of a 32-bit `time_t`.
const Y2040: i64 = 2_208_988_800;

// ------------------------------------------------------------------ running a binary

/// `dist/barge-VERSION-ARCH-linux-musl`; fails naming `make release` when it is missing.
fn dist_bin(arch: &Arch) -> PathBuf {
    let dist = std::env::var_os("BARGE_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dist"));
    let bin = dist.join(format!(
        "barge-{}-{}-linux-musl",
        env!("CARGO_PKG_VERSION"),
        arch.name
    ));
    assert!(
        bin.is_file(),
        "{} missing: run `make release` (or scripts/release.sh {}) first",
        bin.display(),
        arch.name
    );
    bin
}

/// Runs the release binary of `arch` with `args` in an empty environment (no proxies,
/// no credentials; HOME and DOCKER_CONFIG an empty directory).
fn run_bin(arch: &Arch, args: &[&str]) -> Output {
    let bin = dist_bin(arch);
    let mut cmd = match arch.qemu {
        Some(qemu) => {
            require_tool(qemu);
            let mut c = Command::new(qemu);
            c.arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let home = TempDir::new("foreign-home");
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", home.path())
        .env("DOCKER_CONFIG", home.path())
        .env("XDG_RUNTIME_DIR", home.path())
        .stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// Pulls `image` with the binary of `arch` into a new directory; returns its snapshot.
fn pull(arch: &Arch, image: &str) -> (TempDir, PathBuf, Tree) {
    let tmp = TempDir::new("foreign");
    let dir = tmp.join("rootfs");
    let out = run_bin(
        arch,
        &["pull", "-q", image, "-r", dir.to_str().expect("utf-8")],
    );
    assert_success(&out);
    let tree = snapshot(&dir);
    (tmp, dir, tree)
}

// ------------------------------------------------------------------ fixtures of this file

/// A four-platform index (linux/amd64, linux/arm64/v8, linux/arm/v7, linux/riscv64) on
/// the shared registry: busybox plus `/etc/platform` naming the platform.
struct Multi {
    image: String,
    trees: HashMap<&'static str, Tree>,
    _dir: TempDir,
}

fn multi() -> &'static Multi {
    static M: OnceLock<Multi> = OnceLock::new();
    M.get_or_init(build_multi4)
}

fn build_multi4() -> Multi {
    let f = Fixtures::get();
    let dir = TempDir::new("multi4");
    let l = Layout::init(&dir.join("layout"));
    build_busybox(&l, "busybox");
    let mut entries = Vec::new();
    let mut trees = HashMap::new();
    for arch in ALL {
        let (goarch, variant) = arch.platform;
        let mut t = TarBuilder::new();
        t.dir("etc/", 0o755)
            .file("etc/platform", 0o644, format!("{goarch}\n").as_bytes());
        l.add_layer("busybox", Some(arch.name), &t.finish());
        umoci(&[
            "config",
            "--image",
            &l.image(arch.name),
            "--architecture",
            goarch,
        ]);
        let d = l.descriptor(arch.name);
        let variant = variant.map_or(String::new(), |v| format!(r#","variant":"{v}""#));
        entries.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"architecture":"{goarch}","os":"linux"{variant}}}}}"#,
            common::fixtures::str_of(&d["digest"]),
            d["size"].stringify().expect("size")
        ));
        trees.insert(arch.name, l.unpack_tree(arch.name));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        entries.join(",")
    );
    let (xd, xs) = l.write_blob(index.as_bytes());
    l.set_tag("multi4", "application/vnd.oci.image.index.v1+json", &xd, xs);
    let dest = "foreign/multi4:1";
    push_args(
        &f.registry,
        &l,
        "multi4",
        dest,
        &["--all", "--preserve-digests"],
    );
    Multi {
        image: f.image(dest),
        trees,
        _dir: dir,
    }
}

/// An image whose one layer holds `future/` and `future/file`, both dated 2040.
fn y2040_image() -> &'static str {
    static I: OnceLock<String> = OnceLock::new();
    I.get_or_init(|| {
        let f = Fixtures::get();
        let mut t = TarBuilder::new();
        let mut d = RawEntry::new("future/", b'5', 0o755);
        d.mtime = Y2040;
        t.entry(d);
        let mut e = RawEntry::new("future/file", b'0', 0o644);
        e.mtime = Y2040 + 1;
        e.data = b"from the future\n".to_vec();
        t.entry(e);
        push_crafted(&f.registry, "foreign/y2040:1", &[t.finish()]);
        f.image("foreign/y2040:1")
    })
}

// ------------------------------------------------------------------ the checks

/// The rich fixture (OCI and Docker schema2) and busybox: trees equal umoci's.
fn fixtures_match_umoci(arch: &Arch) {
    let f = Fixtures::get();
    for (image, tag) in [
        ("test/rich:oci", "rich"),
        ("test/rich:v2s2", "rich"),
        ("test/busybox:oci", "busybox"),
    ] {
        let (_tmp, _dir, got) = pull(arch, &f.image(image));
        assert_same_tree(&f.expected(tag), &got);
    }
}

/// From the four-platform index the binary takes its own platform's image.
fn picks_own_platform(arch: &Arch) {
    let m = multi();
    let (_tmp, dir, got) = pull(arch, &m.image);
    let marker = std::fs::read_to_string(dir.join("etc/platform")).expect("etc/platform");
    assert_eq!(
        marker.trim(),
        arch.platform.0,
        "{} took the wrong image",
        arch.name
    );
    assert_same_tree(&m.trees[arch.name], &got);
}

/// A file and a directory dated 2040 keep their mtimes.
fn keeps_2040_mtimes(arch: &Arch) {
    let (_tmp, dir, _) = pull(arch, y2040_image());
    let file = std::fs::symlink_metadata(dir.join("future/file")).expect("future/file");
    let sub = std::fs::symlink_metadata(dir.join("future")).expect("future/");
    assert_eq!(
        (file.mtime(), sub.mtime()),
        (Y2040 + 1, Y2040),
        "{}",
        arch.name
    );
}

macro_rules! arch_tests {
    ($module:ident, $arch:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn fixtures_match_umoci() {
                super::fixtures_match_umoci(&$arch);
            }

            #[test]
            fn picks_own_platform() {
                super::picks_own_platform(&$arch);
            }

            #[test]
            fn keeps_2040_mtimes() {
                super::keeps_2040_mtimes(&$arch);
            }
        }
    };
}

arch_tests!(x86_64, X86_64);
arch_tests!(aarch64, AARCH64);
arch_tests!(armv7, ARMV7);
arch_tests!(riscv64, RISCV64);
