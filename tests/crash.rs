//! kill -9 at any moment of `pull`, `pull -g`, `commit` and `push`, then the same
//! command again: it succeeds, says when it removed what the killed run left, and
//! afterwards nothing is there but the result (no staging directory, no temporary
//! file, `git fsck --strict` clean, the tree equal to a clean pull's). Also: a live
//! run's staging directory and lock are never taken by a second run, and a user's
//! files that merely look like barge's are never removed.
//!
//! The kill moments are spread over the measured length of a clean run, with
//! jitter from a seed printed by each test (`CRASH_SEED=N` repeats a run).

mod common;

use common::fixtures::{noise, push, umoci, Layout, TarBuilder};
use common::registry::{Mode, Registry};
use common::tree::{assert_same_tree, snapshot, Tree};
use common::{assert_success, barge, barge_path, list_dir, TempDir};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const REMOVED: &str = "Removed leftovers of an interrupted barge run";

/// A registry of this binary with `test/crash:1`: three layers, ~10 MiB of files
/// that do not compress and a few hundred small ones, so a kill lands mid-write.
struct Env {
    registry: Registry,
    /// The tree a clean pull makes.
    clean: Tree,
    _dir: TempDir,
}

fn env() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        let dir = TempDir::new("crash-fixtures");
        let layout = Layout::init(&dir.join("layout"));
        umoci(&["new", "--image", &layout.image("crash")]);
        for layer in 0..3u64 {
            let mut t = TarBuilder::new();
            t.dir(&format!("l{layer}/"), 0o755);
            for i in 0..150 {
                let data = format!("layer {layer} file {i}\n").repeat(20);
                t.file(&format!("l{layer}/small{i}"), 0o644, data.as_bytes());
            }
            for i in 0..2 {
                let big = noise(1_700_000, layer * 10 + i + 1);
                t.file(&format!("l{layer}/big{i}"), 0o644, &big);
            }
            if layer == 2 {
                t.whiteout("l0/small0");
            }
            layout.add_layer("crash", None, &t.finish());
        }
        let registry = Registry::start(Mode::Plain);
        push(&registry, &layout, "crash", "test/crash:1", false);
        let out = TempDir::new("crash-clean");
        let root = out.join("rootfs");
        assert_success(&barge(&[
            "pull",
            &registry.image("test/crash:1"),
            "-r",
            s(&root),
        ]));
        let clean = snapshot(&root);
        Env {
            registry,
            clean,
            _dir: dir,
        }
    })
}

fn image() -> String {
    env().registry.image("test/crash:1")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test path")
}

// ------------------------------------------------------------------ running and killing

/// Starts barge in its own process group, with the clean environment of `barge()`.
fn spawn(args: &[&str], home: &Path) -> Child {
    let mut cmd = Command::new(barge_path());
    cmd.args(args)
        .env("DOCKER_CONFIG", home)
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for v in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(v);
    }
    cmd.spawn().expect("spawn barge")
}

/// Runs barge to its end.
fn run(args: &[&str]) -> Output {
    let home = TempDir::new("crash-home");
    spawn(args, home.path())
        .wait_with_output()
        .expect("wait barge")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// How a run was killed: barge alone (its git children see their input end), or
/// its whole process group (as a power cut or an OOM kill of the session would).
#[derive(Clone, Copy, Debug)]
enum Kill {
    Barge,
    Group,
}

/// Starts `args`, SIGKILLs it after `delay` unless it ended before. Returns the
/// output of a run that ended on its own, None for a killed one.
fn run_killed(args: &[&str], delay: Duration, how: Kill) -> Option<Output> {
    let home = TempDir::new("crash-home");
    let mut child = spawn(args, home.path());
    let end = Instant::now() + delay;
    while Instant::now() < end {
        if child.try_wait().expect("try_wait").is_some() {
            return Some(child.wait_with_output().expect("wait"));
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    let pid = child.id() as libc::pid_t;
    let target = match how {
        Kill::Barge => pid,
        Kill::Group => -pid,
    };
    // SAFETY: kill(2) of our own child (or its process group).
    unsafe { libc::kill(target, libc::SIGKILL) };
    let out = child.wait_with_output().expect("wait");
    wait_group_gone(pid);
    // A run that ended just before the signal counts as finished.
    out.status.success().then_some(out)
}

/// Waits until no process of group `pgid` is left: the git children of a killed
/// barge end on their own once their input is gone.
fn wait_group_gone(pgid: libc::pid_t) {
    let end = Instant::now() + Duration::from_secs(20);
    // SAFETY: signal 0 to a process group only checks that it exists.
    while unsafe { libc::kill(-pgid, 0) } == 0 {
        assert!(
            Instant::now() < end,
            "children of barge {pgid} still running"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kill moments spread over `0..span`, jittered, in shuffled order.
fn moments(n: u32, span: Duration, seed: &mut u64) -> Vec<Duration> {
    let mut v: Vec<Duration> = (0..n)
        .map(|i| {
            let jitter = (next(seed) % 1000) as f64 / 1000.0;
            span.mul_f64((f64::from(i) + jitter) / f64::from(n))
        })
        .collect();
    for i in (1..v.len()).rev() {
        v.swap(i, (next(seed) % (i as u64 + 1)) as usize);
    }
    v
}

fn seed(test: &str) -> u64 {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: CRASH_SEED={seed}");
    seed
}

fn next(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *x >> 33
}

fn timed(args: &[&str]) -> (Output, Duration) {
    let t = Instant::now();
    let o = run(args);
    (o, t.elapsed())
}

// ------------------------------------------------------------------ what is left

/// Staging directories (`.NAME.barge-XXXXXX`, `.barge-staging-XXXXXX`) in `dir`.
fn staging_dirs(dir: &Path) -> Vec<String> {
    list_dir(dir)
        .into_iter()
        .filter(|n| {
            let suffix = n
                .strip_prefix(".barge-staging-")
                .or_else(|| n.split_once(".barge-").map(|(_, s)| s));
            suffix.is_some_and(|s| {
                s.len() == 6
                    && s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            }) && dir.join(n).is_dir()
        })
        .collect()
}

/// barge's and git's temporary files in a barge tree's `.git`.
fn git_debris(root: &Path) -> Vec<String> {
    let git = root.join(".git");
    let mut found = Vec::new();
    for (dir, names) in [
        (git.clone(), list_dir(&git)),
        (git.join("barge"), list_dir(&git.join("barge"))),
        (
            git.join("barge/layers"),
            list_dir(&git.join("barge/layers")),
        ),
        (
            git.join("barge/blobs/sha256"),
            list_dir(&git.join("barge/blobs/sha256")),
        ),
        (
            git.join("objects/pack"),
            list_dir(&git.join("objects/pack")),
        ),
        (git.join("refs/heads"), list_dir(&git.join("refs/heads"))),
    ] {
        for n in names {
            if n.contains(".tmp")
                || n.starts_with("tmp_")
                || n.ends_with(".lock")
                || n.ends_with(".next")
                || n.starts_with("fast_import_crash_")
            {
                found.push(dir.join(n).display().to_string());
            }
        }
    }
    found
}

fn git(root: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A barge tree after a run: git sound and clean, no debris, HEAD on the top layer.
fn assert_sound_barge_tree(root: &Path) {
    git(root, &["fsck", "--strict", "--no-progress"]);
    assert_eq!(git(root, &["status", "--porcelain"]), "", "git status");
    assert_eq!(git_debris(root), Vec::<String>::new(), "debris in .git");
    let record = fs::read_to_string(root.join(".git/barge/record")).expect("record");
    let layers = record.lines().filter(|l| l.starts_with("layer ")).count();
    let branches = git(
        root,
        &["for-each-ref", "--format=%(refname:short)", "refs/heads/"],
    );
    assert_eq!(branches.lines().count(), layers, "branches: {branches}");
    let head = git(root, &["symbolic-ref", "--short", "HEAD"]);
    assert!(
        head.starts_with(&format!("layer_{}_", layers - 1)),
        "HEAD {head} with {layers} layers"
    );
}

// ------------------------------------------------------------------ pull

/// Files that look like barge's but are the user's.
fn lookalikes(parent: &Path) -> Vec<String> {
    fs::create_dir(parent.join(".rootfs.barge-notes")).unwrap();
    fs::write(parent.join(".rootfs.barge-notes/keep"), b"mine").unwrap();
    fs::write(parent.join(".rootfs.barge-a1b2c3.txt"), b"mine").unwrap();
    fs::create_dir(parent.join(".rootfs.barge-abcdefg")).unwrap();
    fs::write(parent.join(".rootfs.barge-zzzzzz"), b"a file, not a dir").unwrap();
    list_dir(parent)
}

fn pull_killed_then_again(git_mode: bool) {
    let name = if git_mode { "pull -g" } else { "pull" };
    let mut seed = seed(name);
    let img = image();
    let work = TempDir::new("crash-pull");
    let user = lookalikes(work.path());
    let root = work.join("rootfs");
    let mut args = vec!["pull", img.as_str(), "-r", s(&root)];
    if git_mode {
        args.push("-g");
    }
    let (o, span) = timed(&args);
    assert_success(&o);
    fs::remove_dir_all(&root).unwrap();
    let mut removals = 0;
    for (i, at) in moments(8, span, &mut seed).into_iter().enumerate() {
        let how = if i % 2 == 0 { Kill::Barge } else { Kill::Group };
        let finished = run_killed(&args, at, how);
        let left = staging_dirs(work.path());
        let populated = root.exists();
        let again = run(&args);
        match (
            finished.is_some() || (populated && left.is_empty()),
            again.status.success(),
        ) {
            (false, true) => {}
            // The killed run got past its final rename: the target is complete.
            (true, false) => assert!(text(&again).contains("exists and is not empty")),
            (f, _) => panic!("{name} killed at {at:?} (finished: {f}): {}", text(&again)),
        }
        if !left.is_empty() {
            removals += 1;
            assert!(text(&again).contains(REMOVED), "{left:?}: {}", text(&again));
        }
        let mut want = user.clone();
        want.push("rootfs".into());
        want.sort();
        assert_eq!(list_dir(work.path()), want, "killed at {at:?} ({how:?})");
        assert_same_tree(&env().clean, &snapshot(&root));
        if git_mode {
            assert_sound_barge_tree(&root);
        }
        fs::remove_dir_all(&root).unwrap();
    }
    assert_eq!(
        fs::read(work.join(".rootfs.barge-notes/keep")).unwrap(),
        b"mine"
    );
    eprintln!("{name}: {removals} of 8 kills left a staging directory");
}

#[test]
fn pull_killed_at_any_moment_then_pulled_again() {
    pull_killed_then_again(false);
}

#[test]
fn pull_git_killed_at_any_moment_then_pulled_again() {
    pull_killed_then_again(true);
}

/// Waits until `dir` holds a staging directory that is being filled (so its run
/// holds its lock); returns its name.
fn wait_for_staging(dir: &Path, child: &mut Child) -> String {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(n) = staging_dirs(dir).pop() {
            if fs::read_dir(dir.join(&n)).is_ok_and(|mut d| d.next().is_some()) {
                return n;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "barge ended early");
        assert!(
            Instant::now() < end,
            "no staging directory in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn empty_mount_point_killed_then_pulled_again() {
    let work = TempDir::new("crash-mnt");
    let mnt = work.join("mnt");
    let home = TempDir::new("crash-home");
    for how in [Kill::Barge, Kill::Group] {
        fs::create_dir(&mnt).unwrap();
        let args = ["pull", &image(), "-r", s(&mnt), "-g"];
        let mut child = spawn(&args, home.path());
        let staging = wait_for_staging(&mnt, &mut child);
        assert!(staging.starts_with(".barge-staging-"), "{staging}");
        std::thread::sleep(Duration::from_millis(30));
        let pid = child.id() as libc::pid_t;
        let target = if matches!(how, Kill::Group) {
            -pid
        } else {
            pid
        };
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(target, libc::SIGKILL) };
        let killed = child.wait_with_output().unwrap();
        wait_group_gone(pid);
        assert!(!killed.status.success(), "the pull ended before the kill");
        assert_eq!(list_dir(&mnt), std::slice::from_ref(&staging));
        let again = run(&args);
        assert_success(&again);
        assert!(text(&again).contains(REMOVED), "{}", text(&again));
        assert!(text(&again).contains(&staging), "{}", text(&again));
        assert_eq!(list_dir(work.path()), ["mnt"]);
        assert_same_tree(&env().clean, &snapshot(&mnt));
        assert_sound_barge_tree(&mnt);
        fs::remove_dir_all(&mnt).unwrap();
    }
}

#[test]
fn live_pull_is_left_alone() {
    let work = TempDir::new("crash-live");
    let home = TempDir::new("crash-home");
    fs::create_dir(work.join("mnt")).unwrap();
    for target in [work.join("rootfs"), work.join("mnt")] {
        let args = ["pull", &image(), "-r", s(&target)];
        let mut first = spawn(&args, home.path());
        let where_ = if target.ends_with("mnt") {
            target.clone()
        } else {
            work.path().to_path_buf()
        };
        let staging = wait_for_staging(&where_, &mut first);
        let pid = first.id();
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        let second = run(&args);
        let msg = text(&second);
        assert!(!second.status.success(), "{msg}");
        assert!(
            msg.contains(&format!("another barge is working on {}", target.display()))
                && msg.contains(&format!("(pid {pid})")),
            "{msg}"
        );
        assert!(
            where_.join(&staging).is_dir(),
            "the live staging dir was removed"
        );
        // SAFETY: as above.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
        let out = first.wait_with_output().unwrap();
        assert_success(&out);
        assert!(staging_dirs(&where_).is_empty());
        assert_same_tree(&env().clean, &snapshot(&target));
    }
}

// ------------------------------------------------------------------ commit

/// A fresh `pull -g` of the crash image.
fn pulled(label: &str) -> (TempDir, PathBuf) {
    let work = TempDir::new(label);
    let root = work.join("rootfs");
    assert_success(&run(&["pull", &image(), "-r", s(&root), "-g"]));
    (work, root)
}

fn change(root: &Path, i: u64) {
    fs::write(root.join(format!("l1/new{i}")), noise(3_000_000, 100 + i)).unwrap();
    fs::write(root.join("l2/small3"), format!("edited {i}\n")).unwrap();
    let _ = fs::remove_file(root.join(format!("l0/small{}", i + 10)));
}

fn layers_in_record(root: &Path) -> usize {
    let record = fs::read_to_string(root.join(".git/barge/record")).unwrap();
    record.lines().filter(|l| l.starts_with("layer ")).count()
}

#[test]
fn commit_killed_at_any_moment_then_committed_again() {
    let mut seed = seed("commit");
    let (_work, root) = pulled("crash-commit");
    change(&root, 99);
    let (o, span) = timed(&["commit", "-r", s(&root), "-m", "first"]);
    assert_success(&o);
    let mut layers = layers_in_record(&root);
    for (i, at) in moments(8, span, &mut seed).into_iter().enumerate() {
        change(&root, i as u64);
        let msg = format!("change {i}");
        let args = ["commit", "-r", s(&root), "-m", &msg];
        let how = if i % 2 == 0 { Kill::Barge } else { Kill::Group };
        let finished = run_killed(&args, at, how);
        if let Some(o) = &finished {
            assert_success(o);
        }
        let debris = git_debris(&root);
        let again = run(&args);
        let t = text(&again);
        if again.status.success() {
            layers += 1;
        } else {
            // Only when the killed run got past its commit point.
            assert!(
                t.contains("nothing to commit"),
                "killed at {at:?} ({how:?}): {t}"
            );
            layers += 1;
        }
        // A committed save (`record.next`) is finished, not removed: no note then.
        let committed = debris.iter().any(|d| d.ends_with("/record.next"));
        if !debris.is_empty() && !committed {
            assert!(t.contains(REMOVED), "{debris:?}: {t}");
        }
        for l in t.lines().filter(|l| l.contains(REMOVED)) {
            eprintln!("commit killed at {at:?} ({how:?}), then: {l}");
        }
        assert_eq!(
            layers_in_record(&root),
            layers,
            "killed at {at:?} ({how:?}): {t}"
        );
        assert_sound_barge_tree(&root);
    }
}

#[test]
fn live_commit_is_left_alone() {
    let (_work, root) = pulled("crash-live-commit");
    change(&root, 1);
    let home = TempDir::new("crash-home");
    let args = ["commit", "-r", s(&root), "-m", "live"];
    let mut first = spawn(&args, home.path());
    let blobs = root.join(".git/barge/blobs/sha256");
    let end = Instant::now() + Duration::from_secs(20);
    while !list_dir(&blobs).iter().any(|n| n.starts_with(".layer.tmp")) {
        assert!(first.try_wait().unwrap().is_none(), "commit ended early");
        assert!(Instant::now() < end, "no layer being written");
        std::thread::sleep(Duration::from_micros(200));
    }
    let pid = first.id();
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    let second = run(&args);
    let msg = text(&second);
    assert!(
        !second.status.success()
            && msg.contains(&format!("another barge is working on {}", root.display()))
            && msg.contains(&format!("(pid {pid})")),
        "{msg}"
    );
    assert!(list_dir(&blobs).iter().any(|n| n.starts_with(".layer.tmp")));
    // SAFETY: as above.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
    assert_success(&first.wait_with_output().unwrap());
    assert_sound_barge_tree(&root);
}

// ------------------------------------------------------------------ push

#[test]
fn push_killed_at_any_moment_then_pushed_again() {
    let mut seed = seed("push");
    let (_work, root) = pulled("crash-push");
    change(&root, 7);
    fs::write(root.join("l1/more"), noise(4_000_000, 77)).unwrap();
    assert_success(&run(&["commit", "-r", s(&root), "-m", "for push"]));
    let before = snapshot(&root);
    let git_before = list_dir(&root.join(".git"));
    let reg = &env().registry;
    let (o, span) = timed(&["push", &reg.image("test/crash-push:warm"), "-r", s(&root)]);
    assert_success(&o);
    for (i, at) in moments(4, span, &mut seed).into_iter().enumerate() {
        // A repository of its own each time: nothing is there yet but mounts.
        let dest = reg.image(&format!("test/crash-push{i}:1"));
        let args = ["push", &dest, "-r", s(&root)];
        let how = if i % 2 == 0 { Kill::Barge } else { Kill::Group };
        if let Some(o) = run_killed(&args, at, how) {
            assert_success(&o);
        }
        assert_success(&run(&args));
        let check = TempDir::new("crash-push-check");
        let pulled = check.join("rootfs");
        assert_success(&barge(&["pull", &dest, "-r", s(&pulled)]));
        assert_same_tree(&before, &snapshot(&pulled));
    }
    assert_same_tree(&before, &snapshot(&root));
    assert_eq!(list_dir(&root.join(".git")), git_before);
    assert_sound_barge_tree(&root);
}
