//! Bootable initramfs archives, booted for real: `barge pull --initramfs`, `--init`,
//! and `barge initramfs -r DIR` after a commit. Each archive is booted with Debian's
//! cloud kernel (fetched once by scripts/kernel.sh into target/kernel, never
//! installed) in `qemu-system-x86_64 -accel tcg`, and the guest's console is searched
//! for what the image prints. Archives are also read back (a small newc reader here,
//! and GNU `cpio -t`) for owners, devices, hardlinks and mtimes.

mod common;

use common::fixtures::{
    build_busybox, jstr, obj, push, push_crafted, Layout, RawEntry, TarBuilder, EPOCH,
};
use common::registry::{Mode, Registry};
use common::{assert_success, barge, barge_env, barge_path, require_tool, run, TempDir};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use tinyjson::JsonValue;

/// The test images, pushed to one registry.
struct Images {
    registry: Registry,
    _dir: TempDir,
}

/// What the `boot` image's Cmd prints.
const GREETING: &str = "it's a 'quoted' $HOME";

fn images() -> &'static Images {
    static I: OnceLock<Images> = OnceLock::new();
    I.get_or_init(|| {
        let dir = TempDir::new("initramfs-images");
        let l = Layout::init(&dir.join("layout"));
        build_busybox(&l, "busybox");
        l.add_layer("busybox", Some("boot-base"), &extra_layer());
        l.derive("boot-base", "boot", |_, _, config| set_run_config(config));
        let mut own = TarBuilder::new();
        own.file("init", 0o755, b"#!/bin/sh\necho OWN-INIT-MARKER pid=$$\n");
        l.add_layer("busybox", Some("own-init"), &own.finish());
        let registry = Registry::start(Mode::Plain);
        for (tag, dest) in [
            ("boot", "t/boot:1"),
            ("own-init", "t/own-init:1"),
            ("busybox", "t/busybox:1"),
        ] {
            push(&registry, &l, tag, dest, false);
        }
        let mut t = TarBuilder::new();
        t.file("hello", 0o755, b"not a shell\n");
        push_crafted(&registry, "t/noshell:1", &[t.finish()]);
        Images {
            registry,
            _dir: dir,
        }
    })
}

/// A device node, a file owned by 1000:1000 and a hardlink to it.
fn extra_layer() -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.dir("srv/", 0o755);
    let mut dev = RawEntry::new("srv/null", b'3', 0o666);
    dev.dev = (1, 3);
    t.entry(dev);
    let mut owned = RawEntry::new("home/app/owned", b'0', 0o640);
    (owned.uid, owned.gid) = (1000, 1000);
    owned.data = b"owned by app\n".to_vec();
    t.entry(owned);
    t.hardlink("home/app/hard", "home/app/owned");
    t.finish()
}

/// Env, WorkingDir and a Cmd that prints a marker, the env, the cwd and the owners.
fn set_run_config(config: &mut JsonValue) {
    let arr = |v: &[&str]| JsonValue::Array(v.iter().map(|s| jstr(s)).collect());
    let script = "echo BOOT-MARKER \"$GREETING\" cwd=$(pwd); \
                  stat -c 'STAT %n %u:%g %a %h %t:%T' /srv/null /home/app/owned /home/app/hard; \
                  cat /home/app/hard";
    let run = obj(&[
        (
            "Env",
            arr(&[
                "PATH=/bin:/sbin:/usr/bin:/usr/sbin",
                &format!("GREETING={GREETING}"),
            ]),
        ),
        ("WorkingDir", jstr("/home/app")),
        ("Entrypoint", arr(&["/bin/sh", "-c"])),
        ("Cmd", arr(&[script])),
    ]);
    if let JsonValue::Object(m) = config {
        m.insert("config".into(), run);
    }
}

/// The kernel, fetched once (a failure to fetch it fails the test loudly).
fn kernel() -> &'static Path {
    static K: OnceLock<PathBuf> = OnceLock::new();
    K.get_or_init(|| {
        for tool in ["apt-get", "apt-cache", "dpkg-deb", "tar"] {
            require_tool(tool);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(root.join("scripts/kernel.sh"))
            .arg(root.join("target/kernel"))
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/kernel.sh");
        assert!(
            out.status.success(),
            "cannot fetch the kernel with scripts/kernel.sh (needs apt and network): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(p.is_file(), "scripts/kernel.sh printed {p:?}, not a kernel");
        p
    })
}

/// Boots `initrd` and returns what the guest printed on its console.
fn boot(initrd: &Path) -> String {
    require_tool("qemu-system-x86_64");
    require_tool("timeout");
    let kernel = kernel();
    let out = Command::new("timeout")
        .args([
            "120",
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-m",
            "256",
            "-nographic",
        ])
        .args(["-no-reboot", "-nic", "none", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .output()
        .expect("run qemu");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "qemu failed ({}): {text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Asserts the guest printed `line` (not anchored: escape codes may precede it).
fn assert_printed(console: &str, line: &str) {
    assert!(
        console.lines().any(|l| l.trim_end().ends_with(line)),
        "the guest did not print {line:?}; console:\n{console}"
    );
}

/// One newc entry as read back: name → (mode, uid, gid, nlink, mtime, rdev, data).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

/// Reads a newc archive (gunzipped with `gzip -dc` first when it is gzip).
fn read_newc(file: &Path) -> BTreeMap<String, Item> {
    let raw = fs::read(file).unwrap();
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        run(Command::new("gzip").arg("-dc").arg(file))
    } else {
        raw
    };
    let mut out = BTreeMap::new();
    let mut at = 0;
    let field = |b: &[u8], i: usize| {
        u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16).unwrap()
    };
    let align = |n: usize| (n + 3) & !3;
    loop {
        let h = &bytes[at..at + 110];
        assert_eq!(&h[..6], b"070701", "newc magic at {at}");
        let (size, namesize) = (field(h, 6) as usize, field(h, 11) as usize);
        let name = String::from_utf8(bytes[at + 110..at + 110 + namesize - 1].to_vec()).unwrap();
        let data_at = align(at + 110 + namesize);
        let data = bytes[data_at..data_at + size].to_vec();
        at = align(data_at + size);
        if name == "TRAILER!!!" {
            assert_eq!(at, bytes.len(), "nothing after the trailer but padding");
            return out;
        }
        let item = Item {
            ino: field(h, 0),
            mode: field(h, 1),
            uid: field(h, 2),
            gid: field(h, 3),
            nlink: field(h, 4),
            mtime: field(h, 5),
            rdev: (field(h, 9), field(h, 10)),
            data,
        };
        assert!(out.insert(name.clone(), item).is_none(), "{name} twice");
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `barge ARGS` as `nobody`, in `dir` (made writable for it).
fn barge_as_nobody(dir: &Path, args: &[&str]) -> std::process::Output {
    require_tool("setpriv");
    fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(barge_path())
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("DOCKER_CONFIG", dir)
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null())
        .output()
        .expect("run barge as nobody")
}

#[test]
fn pull_initramfs_as_nobody_keeps_owners_devices_hardlinks_and_boots() {
    let im = images();
    let work = TempDir::new("ir-nobody");
    let image = im.registry.image("t/boot:1");
    let out = barge_as_nobody(
        work.path(),
        &["pull", &image, "--initramfs", "boot.cpio.gz", "-q"],
    );
    assert_success(&out);
    assert_eq!(
        common::list_dir(work.path()),
        vec!["boot.cpio.gz"],
        "no tree is left without -r"
    );
    let file = work.join("boot.cpio.gz");
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let items = read_newc(&file);
    let null = &items["srv/null"];
    assert_eq!((null.mode, null.uid, null.rdev), (0o020666, 0, (1, 3)));
    let (owned, hard) = (&items["home/app/owned"], &items["home/app/hard"]);
    assert_eq!(
        (owned.mode, owned.uid, owned.gid, owned.nlink),
        (0o100640, 1000, 1000, 2)
    );
    assert_eq!(
        (hard.mode, hard.uid, hard.gid, hard.nlink),
        (0o100640, 1000, 1000, 2)
    );
    assert_eq!(owned.ino, hard.ino, "one inode");
    // Data on the group's last entry (by path: hard < owned), as GNU cpio writes it.
    assert_eq!(
        (hard.data.len(), owned.data.as_slice()),
        (0, &b"owned by app\n"[..])
    );
    let console = items["dev/console"].clone();
    assert_eq!((console.mode, console.rdev), (0o020600, (5, 1)));
    let init = String::from_utf8(items["init"].data.clone()).unwrap();
    assert!(
        init.starts_with("#!/bin/sh\n") && init.contains("cd '/home/app' || exit 1"),
        "{init}"
    );
    // GNU cpio reads the same owners and device numbers.
    require_tool("cpio");
    let listing = String::from_utf8_lossy(&run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc {} | cpio -t -v --numeric-uid-gid --quiet",
        file.display()
    ))))
    .into_owned();
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("crw-rw-rw-") && l.contains(" 1,") && l.ends_with(" srv/null")),
        "{listing}"
    );
    assert!(
        listing.lines().any(
            |l| l.starts_with("-rw-r-----   2 1000     1000") && l.ends_with(" home/app/owned")
        ),
        "{listing}"
    );

    let shown = boot(&file);
    assert_printed(&shown, &format!("BOOT-MARKER {GREETING} cwd=/home/app"));
    assert_printed(&shown, "STAT /srv/null 0:0 666 1 1:3");
    assert_printed(&shown, "STAT /home/app/owned 1000:1000 640 2 0:0");
    assert_printed(&shown, "STAT /home/app/hard 1000:1000 640 2 0:0");
    assert_printed(&shown, "owned by app");
}

#[test]
fn an_image_s_own_init_is_kept_and_plain_cpio_boots() {
    let work = TempDir::new("ir-own");
    let file = work.join("own.cpio");
    let image = images().registry.image("t/own-init:1");
    assert_success(&barge(&[
        "pull",
        &image,
        "--initramfs",
        file.to_str().unwrap(),
        "-q",
    ]));
    let items = read_newc(&file);
    assert_eq!(
        items["init"].data,
        b"#!/bin/sh\necho OWN-INIT-MARKER pid=$$\n"
    );
    assert_printed(&boot(&file), "OWN-INIT-MARKER pid=1");
}

#[test]
fn init_option_replaces_the_command_and_r_keeps_the_tree() {
    let work = TempDir::new("ir-init");
    let file = work.join("init.cpio.gz");
    let tree = work.join("tree");
    let image = images().registry.image("t/boot:1");
    let out = barge(&[
        "pull",
        &image,
        "-r",
        tree.to_str().unwrap(),
        "--initramfs",
        file.to_str().unwrap(),
        "--init",
        "/bin/sh",
        "-c",
        "echo INIT-OPT-MARKER \"$GREETING\" $(pwd) $0",
        "arg0",
    ]);
    assert_success(&out);
    assert!(tree.join("bin/busybox").is_file(), "-r keeps the tree");
    assert!(
        stdout(&out).contains("/init written by barge"),
        "{}",
        stdout(&out)
    );
    assert_printed(
        &boot(&file),
        &format!("INIT-OPT-MARKER {GREETING} /home/app arg0"),
    );
}

#[test]
fn initramfs_of_a_committed_tree_as_nobody_boots_with_the_change() {
    // As `nobody`: the tree cannot hold 1000:1000 or the device; barge's record does.
    let work = TempDir::new("ir-commit");
    let w = work.path();
    let image = images().registry.image("t/boot:1");
    assert_success(&barge_as_nobody(
        w,
        &["pull", &image, "-r", "tree", "-g", "-q"],
    ));
    assert_eq!(
        fs::symlink_metadata(w.join("tree/home/app/owned"))
            .unwrap()
            .uid(),
        65534
    );
    fs::write(w.join("tree/etc/added"), "added after pull\n").unwrap();
    let refused = barge_as_nobody(w, &["initramfs", "-r", "tree", "-o", "c.cpio.gz"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(" not committed") && err.contains("barge commit -r"),
        "{err}"
    );
    assert!(
        !w.join("c.cpio.gz").exists(),
        "nothing written when refused"
    );
    // Made by root above: hand it to nobody, as a file nobody wrote would be.
    run(Command::new("chown")
        .arg("nobody")
        .arg(w.join("tree/etc/added")));
    assert_success(&barge_as_nobody(
        w,
        &["commit", "-r", "tree", "-m", "add a file", "-q"],
    ));
    let cmd = "cat /etc/added; stat -c 'STAT %n %u:%g %t:%T' /home/app/owned /srv/null";
    let args = [
        "initramfs",
        "-r",
        "tree",
        "-o",
        "c.cpio.gz",
        "-q",
        "--init",
        "/bin/sh",
        "-c",
        cmd,
    ];
    assert_success(&barge_as_nobody(w, &args));
    let items = read_newc(&w.join("c.cpio.gz"));
    assert!(
        !items.keys().any(|k| k == ".git" || k.starts_with(".git/")),
        "barge's repository stays out"
    );
    assert_eq!(
        (items["etc/added"].uid, items["home/app/owned"].uid),
        (65534, 1000)
    );
    let shown = boot(&w.join("c.cpio.gz"));
    assert_printed(&shown, "added after pull");
    assert_printed(&shown, "STAT /home/app/owned 1000:1000 0:0");
    assert_printed(&shown, "STAT /srv/null 0:0 1:3");
}

#[test]
fn same_image_gives_the_same_bytes_and_source_date_epoch_clamps_mtimes() {
    let work = TempDir::new("ir-same");
    let image = images().registry.image("t/boot:1");
    let make = |name: &str, epoch: Option<&str>| {
        let file = work.join(name);
        let f = file.to_str().unwrap();
        let env: Vec<(&str, &OsStr)> = epoch
            .map(|e| ("SOURCE_DATE_EPOCH", OsStr::new(e)))
            .into_iter()
            .collect();
        assert_success(&barge_env(&["pull", &image, "--initramfs", f, "-q"], &env));
        fs::read(&file).unwrap()
    };
    let (a, b) = (make("a.cpio", None), make("b.cpio", None));
    assert!(a == b, "two pulls, different bytes");
    let epoch = (EPOCH - 1000).to_string();
    let (c, d) = (make("c.cpio", Some(&epoch)), make("d.cpio", Some(&epoch)));
    assert!(
        c == d && c != a,
        "SOURCE_DATE_EPOCH: same bytes, other mtimes"
    );
    let plain = read_newc(&work.join("a.cpio"));
    assert!(
        plain.values().all(|i| i.mtime as i64 >= EPOCH),
        "the image's mtimes (and barge's own entries take the newest)"
    );
    let clamped = read_newc(&work.join("c.cpio"));
    assert!(clamped.values().all(|i| i.mtime as i64 == EPOCH - 1000));
    let names: Vec<&String> = plain.keys().collect();
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| {
        if n.as_str() == "." {
            Vec::new()
        } else {
            n.as_bytes().to_vec()
        }
    });
    assert_eq!(names, sorted);
}

#[test]
fn missing_command_or_shell_is_one_clear_error() {
    let work = TempDir::new("ir-errors");
    let f = work.join("x.cpio.gz");
    let f = f.to_str().unwrap();
    let im = images();
    let out = barge(&[
        "pull",
        &im.registry.image("t/busybox:1"),
        "--initramfs",
        f,
        "-q",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no Entrypoint or Cmd") && err.contains("--init CMD"),
        "{err}"
    );
    let out = barge(&[
        "pull",
        &im.registry.image("t/noshell:1"),
        "--initramfs",
        f,
        "--init",
        "/hello",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no /bin/sh"), "{err}");
    let out = barge(&[
        "pull",
        &im.registry.image("t/noshell:1"),
        "--initramfs",
        &f.replace(".gz", ".zst"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(".cpio (plain) or .gz"),
        "{err}"
    );
    assert_eq!(
        common::list_dir(work.path()),
        Vec::<String>::new(),
        "nothing left behind"
    );
}
