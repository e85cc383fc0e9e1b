//! Integration tests of blobs fetched ahead in `Range` chunks (src/registry/prefetch.rs,
//! src/http/flow.rs): an image with one 34 MiB layer of noise (chunks of 1, 2, then
//! 4 MiB, shrinking at its end) and a small one, on a real docker-registry, pulled (and copied and pushed,
//! which stream instead) straight or through the fault proxy of `common/faultproxy.rs`.
//! The chunks must go on several connections and add up to the blob; a registry that
//! ignores `Range`, answers ranged requests with an error, stalls, cuts an answer short
//! or lies in a 206 must still end in the tree `umoci unpack` makes of a `skopeo copy`
//! of the image, or in one clean error line with nothing written, within the low-speed
//! budget.

mod common;

use common::faultproxy::{Action, FaultProxy, Rule, Seen};
use common::fixtures::{
    noise, push, set_all_mtimes, umoci, Layout, TarBuilder, EPOCH, OCI_CONFIG, OCI_LAYER_TAR,
    OCI_MANIFEST,
};
use common::oci::manifest_layers;
use common::registry::{Mode, Registry};
use common::tree::{assert_same_tree, snapshot, Tree};
use common::{
    assert_clean_failure, assert_success, barge, require_tool, run, sha256_hex, DirState, TempDir,
};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The big image in the fixture registry: the big layer, then a small one.
const BIG: &str = "prefetch/big:1";
/// The big image plus a second big layer.
const TWO: &str = "prefetch/two:1";
/// Noise files in the big layer, and the size of each: 4 × 8.5 MiB.
const NOISE_FILES: u64 = 4;
const NOISE_LEN: usize = 17 << 19;
/// The largest chunk of a pull's prefetch (src/registry/prefetch.rs CHUNK); the
/// first is FIRST_CHUNK and each next one twice the last, up to CHUNK, and none
/// more than a quarter of what is left of a blob of 16 MiB or more (but at least
/// 256 KiB).
const CHUNK: u64 = 4 << 20;
const FIRST_CHUNK: u64 = 1 << 20;
/// The most connections prefetch opens with `--connections 4` (what these tests
/// ask: on loopback it is off by default), plus one for the blob being read.
const MAX_FLOWS: usize = 4 + 1;

/// Low-speed window of 2 s: the budget is 4 × 2 s = 8 s.
const WINDOW_2S: &[&str] = &["--low-speed-limit", "1024", "--low-speed-time", "2"];
/// Time allowed beyond a budget: process start, ping, manifest, 34 MiB unpacked.
const SLACK: Duration = Duration::from_secs(10);
/// How long a proxy lives at most.
const PROXY_LIFE: Duration = Duration::from_secs(120);

// ------------------------------------------------------------------ the fixture

/// The big image, built once per test process and pushed to a plain registry.
struct Big {
    registry: Registry,
    /// The digest of the manifest in the registry.
    manifest: String,
    /// The big layer's digest and size.
    blob: String,
    size: u64,
    /// `umoci unpack` of a `skopeo copy` of the image from the registry.
    expected: Tree,
    /// The same for [`TWO`].
    expected_two: Tree,
    _dir: TempDir,
}

fn big() -> &'static Big {
    static B: OnceLock<Big> = OnceLock::new();
    B.get_or_init(build_big)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn build_big() -> Big {
    require_tool("skopeo");
    let dir = TempDir::new("prefetch-fixture");
    let layout = Layout::init(&dir.join("layout"));
    umoci(&["new", "--image", &layout.image("big")]);
    let bundle = dir.join("bundle");
    layout.unpack_to("big", &bundle);
    let root = bundle.join("rootfs");
    fs::create_dir_all(root.join("data")).unwrap();
    for i in 0..NOISE_FILES {
        let path = root.join(format!("data/noise-{i}"));
        fs::write(path, noise(NOISE_LEN, 7919 + i)).unwrap();
    }
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/motd"), b"one big layer\n").unwrap();
    set_all_mtimes(&root, EPOCH);
    umoci(&["repack", "--image", &layout.image("big"), p(&bundle)]);
    let mut small = TarBuilder::new();
    small
        .dir("etc/", 0o755)
        .file("etc/small", 0o644, b"the small layer\n");
    layout.add_layer("big", None, &small.finish());
    let mut second = TarBuilder::new();
    let more = noise(NOISE_FILES as usize * NOISE_LEN, 104_729);
    second.dir("more/", 0o755).file("more/noise", 0o600, &more);
    layout.add_layer("big", Some("two"), &second.finish());

    let manifest = layout.read_blob(&layout.digest("big"));
    let layers = manifest_layers(&manifest);
    let (blob, size) = (layers[0].digest.clone(), layers[0].size);
    assert!(size >= 8 * CHUNK, "the big layer is only {size} bytes");
    let registry = Registry::start(Mode::Plain);
    push(&registry, &layout, "big", BIG, false);
    push(&registry, &layout, "two", TWO, false);
    let manifest = registry_digest(&registry, BIG);
    let expected = skopeo_tree(&registry, BIG, &dir.join("skopeo"));
    let expected_two = skopeo_tree(&registry, TWO, &dir.join("skopeo"));
    Big {
        registry,
        manifest,
        blob,
        size,
        expected,
        expected_two,
        _dir: dir,
    }
}

/// `umoci unpack` of what `skopeo copy` makes of `repo_tag` in `reg` (into the
/// layout `dir`, under the tag `repo_tag`).
fn skopeo_tree(reg: &Registry, repo_tag: &str, dir: &Path) -> Tree {
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "-q"])
        .args(reg.skopeo_src_args())
        .arg(format!("docker://{}", reg.image(repo_tag)))
        .arg(format!("oci:{}:{repo_tag}", dir.display()));
    run(&mut cmd);
    Layout {
        dir: dir.to_path_buf(),
    }
    .unpack_tree(repo_tag)
}

/// sha256 of the manifest bytes `repo:tag` names in `reg` (a plain registry).
fn registry_digest(reg: &Registry, repo_tag: &str) -> String {
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json, \
                  application/vnd.docker.distribution.manifest.v2+json";
    let (status, body) = reg.curl(&format!("/v2/{repo}/manifests/{tag}"), &["-H", accept]);
    assert_eq!(status, 200, "no manifest {repo_tag} in the registry");
    format!("sha256:{}", sha256_hex(&body))
}

// ------------------------------------------------------------------ helpers

/// A proxy in front of the fixture registry.
fn proxy(rules: Vec<Rule>) -> FaultProxy {
    FaultProxy::start(big().registry.port, rules, PROXY_LIFE)
}

/// A finished pull: its output, time and target directory.
struct Pulled {
    out: Output,
    took: Duration,
    dir: PathBuf,
    state: DirState,
    _tmp: TempDir,
}

/// `barge pull -q --connections 4 IMAGE -r TMP/rootfs EXTRA...`, timed.
fn pull(image: &str, extra: &[&str]) -> Pulled {
    // The test registries are on loopback, where fetching ahead is off by default.
    pull_on("4", image, extra)
}

/// `barge pull -q --connections CONNECTIONS IMAGE -r TMP/rootfs EXTRA...`, timed.
fn pull_on(connections: &str, image: &str, extra: &[&str]) -> Pulled {
    let tmp = TempDir::new("prefetch-pull");
    let dir = tmp.join("rootfs");
    let state = DirState::capture(&dir);
    let mut args = vec![
        "pull",
        "-q",
        "--connections",
        connections,
        image,
        "-r",
        p(&dir),
    ];
    args.extend_from_slice(extra);
    let t0 = Instant::now();
    let out = barge(&args);
    Pulled {
        out,
        took: t0.elapsed(),
        dir,
        state,
        _tmp: tmp,
    }
}

/// Asserts the pull succeeded with the expected tree.
fn assert_right_tree(pulled: &Pulled) {
    assert_success(&pulled.out);
    assert_same_tree(&big().expected, &snapshot(&pulled.dir));
}

/// The GETs of the big blob the proxy saw.
fn big_gets(proxy: &FaultProxy) -> Vec<Seen> {
    proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.target.ends_with(&big().blob))
        .collect()
}

/// `bytes=A-B` as (A, B).
fn range_of(s: &Seen) -> Option<(u64, u64)> {
    let (a, b) = s.range.as_ref()?.strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The ranges (first, last byte) a pull fetches a blob of `size` bytes in.
fn plan(size: u64) -> Vec<(u64, u64)> {
    let (mut out, mut start, mut step) = (Vec::new(), 0, FIRST_CHUNK);
    while start < size {
        let tail = match size >= 4 * CHUNK {
            true => ((size - start) / 4).max(256 << 10),
            false => CHUNK,
        };
        let end = (start + step.min(tail)).min(size);
        out.push((start, end - 1));
        start = end;
        step = (step * 2).min(CHUNK);
    }
    out
}

/// Whether a ranged GET starts where no chunk of the plan starts (a resume).
fn starts_inside_a_chunk(s: &Seen) -> bool {
    let starts: Vec<u64> = plan(big().size).iter().map(|r| r.0).collect();
    range_of(s).is_some_and(|(a, _)| !starts.contains(&a))
}

/// A GET of the rest of a blob of `size` bytes from where a cut after 1 MiB of
/// the answer (its head included) left it (`bytes=N-` or `bytes=N-LAST`).
fn assert_resumed_within_the_first_mib(s: &Seen, size: u64) {
    let range = s.range.as_deref().and_then(|r| r.strip_prefix("bytes="));
    let from = range.and_then(|r| r.split('-').next()?.parse::<u64>().ok());
    let to_end = range.is_some_and(|r| r.ends_with('-') || r.ends_with(&format!("-{}", size - 1)));
    assert!(
        from.is_some_and(|a| a > (1 << 20) - 4096 && a <= 1 << 20) && to_end,
        "not resumed where it stopped: {s:?}"
    );
}

/// The distinct connections `gets` came on.
fn connections(gets: &[Seen]) -> Vec<usize> {
    let mut conns: Vec<usize> = gets.iter().map(|s| s.conn).collect();
    conns.sort();
    conns.dedup();
    conns
}

/// A rule for every ranged GET of the big blob.
fn every_ranged(action: Action) -> Rule {
    Rule::ranged("GET", &big().blob, action, usize::MAX)
}

// ------------------------------------------------------------------ pieces

/// With nothing in the way, the big blob comes in contiguous ranged chunks of at
/// most 4 MiB, each connection asking in reading order, over 2 to 4 kept-open
/// connections, and nothing else fetches it; the tree is the one umoci makes of
/// skopeo's copy, and the one a pull straight from the registry makes.
#[test]
fn chunks_on_several_connections_make_the_same_tree() {
    let b = big();
    let proxy = proxy(Vec::new());
    let pulled = pull(&proxy.image(BIG), &[]);
    assert_right_tree(&pulled);
    eprintln!("pull through the proxy: {:?}", pulled.took);
    let gets = big_gets(&proxy);
    let mut ranges: Vec<(u64, u64)> = gets.iter().filter_map(range_of).collect();
    assert_eq!(
        ranges.len(),
        gets.len(),
        "a GET without a closed Range (the fallback?): {gets:?}"
    );
    ranges.sort();
    assert_eq!(ranges, plan(b.size), "not the chunks of the plan");
    let conns = connections(&gets);
    assert!(
        (2..=MAX_FLOWS).contains(&conns.len()),
        "{} connections: {gets:?}",
        conns.len()
    );
    for conn in conns {
        let starts: Vec<u64> = gets
            .iter()
            .filter(|s| s.conn == conn)
            .filter_map(range_of)
            .map(|r| r.0)
            .collect();
        assert!(
            starts.windows(2).all(|w| w[0] < w[1]),
            "connection {conn} not in reading order: {starts:?}"
        );
    }

    let straight = pull(&b.registry.image(BIG), &[]);
    assert_right_tree(&straight);
    eprintln!("pull straight from the registry: {:?}", straight.took);
}

/// A registry that ignores `Range` answers 200 with the whole blob: the first chunk
/// takes it all and the pull ends in the same tree.
#[test]
fn a_registry_that_ignores_range_still_gives_the_tree() {
    let proxy = proxy(vec![every_ranged(Action::StripRange)]);
    let pulled = pull(&proxy.image(BIG), &[]);
    assert_right_tree(&pulled);
    eprintln!(
        "Range ignored: {:?}, {} stripped",
        pulled.took,
        proxy.hits()
    );
    assert!(proxy.hits() >= 2, "only {} ranged GETs", proxy.hits());
    let gets = big_gets(&proxy);
    assert!(
        gets.iter().all(|s| range_of(s).is_some()),
        "the first chunk did not take the whole blob: {gets:?}"
    );
}

/// Every ranged GET answered 500, then 404: the chunks are given up and the blob
/// comes the ordinary way, whole.
#[test]
fn ranged_errors_fall_back_to_the_ordinary_path() {
    for status in [500, 404] {
        let proxy = proxy(vec![every_ranged(Action::Status(status))]);
        let pulled = pull(&proxy.image(BIG), WINDOW_2S);
        assert_right_tree(&pulled);
        eprintln!("ranged GETs answered {status}: {:?}", pulled.took);
        let gets = big_gets(&proxy);
        assert!(proxy.hits() >= 2, "{status}: {gets:?}");
        assert!(
            gets.iter().any(|s| s.range.is_none()),
            "{status}: no plain GET after the errors: {gets:?}"
        );
        assert!(pulled.took < Duration::from_secs(8) + SLACK, "{status}");
    }
}

/// Every GET of the big blob answered 500: one clean line naming the blob, nothing
/// written, within the budget.
#[test]
fn errors_everywhere_end_in_one_clean_line() {
    let b = big();
    let proxy = proxy(vec![Rule::new(
        "GET",
        &b.blob,
        Action::Status(500),
        usize::MAX,
    )]);
    let pulled = pull(&proxy.image(BIG), WINDOW_2S);
    let line = assert_clean_failure(&pulled.out, &[]);
    eprintln!(
        "every GET answered 500: failed after {:?}: {line}",
        pulled.took
    );
    assert!(line.contains(&b.blob), "the blob is not named: {line}");
    assert!(line.contains("500"), "the status is not named: {line}");
    pulled.state.assert_unchanged();
    assert!(
        pulled.took < Duration::from_secs(8) + SLACK,
        "took {:?}",
        pulled.took
    );
}

// ------------------------------------------------------------------ how many connections

/// `--connections auto` with nothing in the way: the blob comes in the plan's
/// chunks, on one connection at first and never more than the most the ramp
/// allows (src/registry/prefetch.rs AUTO_MAX_FLOWS, 8, plus one for the blob being
/// read), and makes the same tree. (Whether one connection fills a link is a
/// question of its round trip, which loopback does not have: src/registry/ramp.rs
/// tests that.)
#[test]
fn auto_fetches_the_plan_and_makes_the_same_tree() {
    let proxy = proxy(Vec::new());
    let pulled = pull_on("auto", &proxy.image(BIG), &[]);
    assert_right_tree(&pulled);
    let gets = big_gets(&proxy);
    eprintln!(
        "auto on loopback: {:?}, {} connections",
        pulled.took,
        connections(&gets).len()
    );
    let mut ranges: Vec<(u64, u64)> = gets.iter().filter_map(range_of).collect();
    ranges.sort();
    assert_eq!(
        ranges,
        plan(big().size),
        "not the chunks of the plan: {gets:?}"
    );
    assert_eq!(
        gets[0].conn, gets[1].conn,
        "not one connection at first: {gets:?}"
    );
    assert!(
        proxy.max_open() <= 8 + 1,
        "{} open at once",
        proxy.max_open()
    );
}

/// `--connections auto` where each connection is held to 2 MiB/s (as one TCP flow
/// on a lossy long link) and more connections get more: connections are added
/// while they raise the rate, and the pull ends far sooner than one connection
/// could (17 s for the 34 MiB layer).
#[test]
fn auto_adds_connections_while_they_pay() {
    let throttle = Action::Throttle {
        per_second: 2 << 20,
    };
    let proxy = proxy(vec![every_ranged(throttle)]);
    let pulled = pull_on("auto", &proxy.image(BIG), &[]);
    assert_right_tree(&pulled);
    let gets = big_gets(&proxy);
    let conns = connections(&gets).len();
    eprintln!(
        "auto, 2 MiB/s per connection: {:?}, {conns} connections",
        pulled.took
    );
    assert!(conns >= 4, "only {conns} connections: {gets:?}");
    assert!(
        proxy.max_open() <= 8 + 2,
        "{} open at once",
        proxy.max_open()
    );
    assert!(
        pulled.took < Duration::from_secs(12),
        "took {:?}",
        pulled.took
    );
}

// ------------------------------------------------------------------ stalls and cuts

/// The first two chunks stall after 1 MiB: they fail the low-speed rule and the
/// rest of the blob comes the ordinary way, within the budget.
#[test]
fn stalled_chunks_end_in_the_tree_within_the_budget() {
    let stall = Rule::ranged("GET", &big().blob, Action::Stall { after: 1 << 20 }, 2);
    let proxy = proxy(vec![stall]);
    let pulled = pull(&proxy.image(BIG), WINDOW_2S);
    assert_right_tree(&pulled);
    eprintln!("two chunks stalled: {:?}", pulled.took);
    let gets = big_gets(&proxy);
    assert_eq!(proxy.hits(), 2, "{gets:?}");
    assert!(
        gets.iter()
            .any(|s| s.range.as_ref().is_some_and(|r| r.ends_with('-'))),
        "the rest did not come the ordinary way (an open range): {gets:?}"
    );
    assert!(
        pulled.took < Duration::from_secs(8) + SLACK,
        "took {:?}",
        pulled.took
    );
}

/// One chunk stalls after 1 MiB and every other GET of the blob is accepted and
/// never answered: the pull gives up within one budget (4 windows of 2 s, the
/// chunks' lost window charged to the ordinary path), not a budget per chunk.
#[test]
fn a_stalled_registry_gives_up_within_one_budget() {
    let b = big();
    let proxy = proxy(vec![
        Rule::ranged("GET", &b.blob, Action::Stall { after: 1 << 20 }, 1),
        Rule::new("GET", &b.blob, Action::Stall { after: 0 }, usize::MAX),
    ]);
    let pulled = pull(&proxy.image(BIG), WINDOW_2S);
    let line = assert_clean_failure(&pulled.out, &[]);
    eprintln!("stalled everywhere: failed after {:?}: {line}", pulled.took);
    assert!(
        line.contains(&b.blob) && line.contains("--low-speed-time"),
        "{line}"
    );
    pulled.state.assert_unchanged();
    assert!(
        pulled.took <= Duration::from_secs(8 + 4),
        "the budget is 4 x 2 s, took {:?}",
        pulled.took
    );
}

/// Every ranged answer is cut after 1 MiB, resumes and the ordinary path's ranged
/// requests too: the pull ends, within bounded time, in the tree or one clean line.
#[test]
fn answers_always_cut_short_end_in_bounded_time() {
    let cut = every_ranged(Action::CloseMidAnswer { after: 1 << 20 });
    let proxy = FaultProxy::start(big().registry.port, vec![cut], Duration::from_secs(60));
    let pulled = pull(&proxy.image(BIG), WINDOW_2S);
    let stderr = String::from_utf8_lossy(&pulled.out.stderr).into_owned();
    eprintln!(
        "every answer cut short: {:?}, {} cuts: {}",
        pulled.took,
        proxy.hits(),
        stderr.trim()
    );
    if pulled.out.status.success() {
        assert_same_tree(&big().expected, &snapshot(&pulled.dir));
    } else {
        let line = assert_clean_failure(&pulled.out, &[]);
        assert!(line.contains(&big().blob), "{line}");
        pulled.state.assert_unchanged();
    }
    assert!(pulled.took < Duration::from_secs(8) + SLACK);
}

/// Two chunks are cut short after 512 KiB: each asks again from where it stopped
/// (a ranged GET that starts inside a chunk) and no plain GET is needed.
#[test]
fn chunks_cut_short_resume_where_they_stopped() {
    let cut = Action::CloseMidAnswer { after: 512 << 10 };
    let proxy = proxy(vec![Rule::ranged("GET", &big().blob, cut, 2)]);
    let pulled = pull(&proxy.image(BIG), WINDOW_2S);
    assert_right_tree(&pulled);
    eprintln!("two chunks cut short: {:?}", pulled.took);
    let gets = big_gets(&proxy);
    assert_eq!(proxy.hits(), 2, "{gets:?}");
    let resumes = gets.iter().filter(|s| starts_inside_a_chunk(s)).count();
    assert_eq!(resumes, 2, "no resume inside a chunk: {gets:?}");
    assert!(
        gets.iter().all(|s| range_of(s).is_some()),
        "the ordinary path: the chunks were given up instead of resumed: {gets:?}"
    );
}

/// Every ranged answer is whole but its connection is closed right after it,
/// though the registry said keep-alive: a chunk asked on a connection kept open
/// gets no answer and is asked again on a new one; the blob still comes in
/// chunks only, and the tree is the same.
#[test]
fn connections_closed_after_each_answer_are_not_fatal() {
    let proxy = proxy(vec![every_ranged(Action::CloseAfterAnswer)]);
    let pulled = pull(&proxy.image(BIG), WINDOW_2S);
    assert_right_tree(&pulled);
    let gets = big_gets(&proxy);
    eprintln!(
        "connections closed after each answer: {:?}, {} GETs on {} connections",
        pulled.took,
        gets.len(),
        connections(&gets).len()
    );
    assert!(proxy.hits() >= plan(big().size).len(), "{gets:?}");
    assert!(
        gets.iter().all(|s| range_of(s).is_some()),
        "the chunks were given up: {gets:?}"
    );
}

/// Every ranged answer loses its `Content-Length` and ends, with the connection,
/// right after its head: each looks like a whole (empty) body. The chunks must not
/// ask again forever: they are given up after their resumes and the blob comes the
/// ordinary way.
#[test]
fn empty_unsized_answers_are_not_asked_again_forever() {
    let short = every_ranged(Action::ShortUnsized { body: 0 });
    let proxy = FaultProxy::start(big().registry.port, vec![short], Duration::from_secs(30));
    let pulled = pull(&proxy.image(BIG), WINDOW_2S);
    eprintln!(
        "empty unsized answers: {:?}, {} of them",
        pulled.took,
        proxy.hits()
    );
    assert_right_tree(&pulled);
    let most = plan(big().size).len() as u64 * 4;
    assert!(proxy.hits() as u64 <= most, "{} ranged GETs", proxy.hits());
    assert!(pulled.took < Duration::from_secs(8) + SLACK);
}

// ------------------------------------------------------------------ lying 206s

/// Every 206 names a range one byte further on than asked: the chunks are given up
/// and the blob comes the ordinary way.
#[test]
fn a_shifted_content_range_is_refused() {
    let proxy = proxy(vec![every_ranged(Action::ShiftContentRange)]);
    let pulled = pull(&proxy.image(BIG), WINDOW_2S);
    assert_right_tree(&pulled);
    eprintln!("shifted Content-Range: {:?}", pulled.took);
    assert!(proxy.hits() >= 2, "{:?}", big_gets(&proxy));
}

/// Every ranged GET not from 0 gets the blob's first bytes under the right label:
/// nothing can tell but the digest. The pull must not write a wrong tree: it fails
/// cleanly with nothing written (or, if it finds a way round, gives the right tree).
#[test]
fn wrong_bytes_under_the_right_label_never_make_a_tree() {
    let proxy = proxy(vec![every_ranged(Action::OtherBytes)]);
    let pulled = pull(&proxy.image(BIG), WINDOW_2S);
    eprintln!(
        "wrong bytes in 206s: {:?}, {} lies, {}",
        pulled.took,
        proxy.hits(),
        String::from_utf8_lossy(&pulled.out.stderr).trim()
    );
    assert!(proxy.hits() >= 1, "{:?}", big_gets(&proxy));
    if pulled.out.status.success() {
        assert_same_tree(&big().expected, &snapshot(&pulled.dir));
    } else {
        let line = assert_clean_failure(&pulled.out, &[]);
        assert!(line.contains(&big().blob), "the blob is not named: {line}");
        pulled.state.assert_unchanged();
    }
    assert!(pulled.took < Duration::from_secs(8) + SLACK);
}

// ------------------------------------------------------------------ copy and push

/// `oci:DIR:REF`.
fn oci(dir: &Path, reference: &str) -> String {
    format!("oci:{}:{reference}", dir.display())
}

/// Asserts every blob file of a layout has the digest it is named by.
fn assert_blobs_verified(dir: &Path) {
    for e in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let data = fs::read(e.path()).unwrap();
        assert_eq!(sha256_hex(&data), name, "blob {name} has other bytes");
    }
}

/// `barge copy` into a layout keeps the manifest digest and the blobs, with or
/// without a download cut short whose resume is answered 500. A copy does not
/// fetch ahead: each blob streams from source to destination in one request (an
/// upload shares the link; README "Across a wide-area link" has the measurements),
/// resumed from where it stopped.
#[test]
fn copy_to_a_layout_keeps_the_digest_through_faults() {
    let b = big();
    let proxy = proxy(vec![
        Rule::new("GET", &b.blob, Action::CloseMidAnswer { after: 1 << 20 }, 1),
        Rule::new("GET", &b.blob, Action::Status(500), 1),
    ]);
    let tmp = TempDir::new("prefetch-copy");
    for (source, reference) in [
        (b.registry.image(BIG), "straight"),
        (proxy.image(BIG), "faulty"),
    ] {
        let dir = tmp.join(reference);
        let t0 = Instant::now();
        let out = barge(&["copy", "-q", &source, &oci(&dir, reference)]);
        assert_success(&out);
        eprintln!("copy to a layout ({reference}): {:?}", t0.elapsed());
        let layout = Layout { dir: dir.clone() };
        assert_eq!(layout.digest(reference), b.manifest, "{reference}");
        assert_blobs_verified(&dir);
        assert_same_tree(&b.expected, &layout.unpack_tree(reference));
    }
    assert_eq!(proxy.hits(), 2, "{:?}", big_gets(&proxy));
    let gets = big_gets(&proxy);
    assert_eq!(gets[0].range, None, "fetched in chunks: {gets:?}");
    assert_resumed_within_the_first_mib(&gets[1], b.size);
}

/// `barge copy` registry → another registry through a proxy that answers the
/// first download 500 and cuts the next short: the same manifest digest, the same tree.
#[test]
fn copy_to_another_registry_keeps_the_digest_through_faults() {
    let b = big();
    let dest = Registry::start(Mode::Plain);
    let proxy = proxy(vec![
        Rule::new("GET", &b.blob, Action::Status(500), 1),
        Rule::new("GET", &b.blob, Action::CloseMidAnswer { after: 3 << 20 }, 1),
    ]);
    let t0 = Instant::now();
    let out = barge(&["copy", "-q", &proxy.image(BIG), &dest.image("copied/big:1")]);
    assert_success(&out);
    eprintln!("copy to another registry: {:?}", t0.elapsed());
    assert_eq!(proxy.hits(), 2, "{:?}", big_gets(&proxy));
    assert_eq!(registry_digest(&dest, "copied/big:1"), b.manifest);
    let pulled = pull(&dest.image("copied/big:1"), &[]);
    assert_right_tree(&pulled);
}

/// `barge push` of a committed tree whose base layers live in another registry
/// (behind the proxy): the big base layer streams from there (no chunks: the
/// pull made it in chunks), its download cut short and the push recovering, and
/// the pushed image pulls back to the committed tree.
#[test]
fn push_reads_base_layers_from_their_registry_through_a_cut() {
    let b = big();
    let dest = Registry::start(Mode::Plain);
    let proxy = proxy(Vec::new());
    let tmp = TempDir::new("prefetch-push");
    let dir = tmp.join("rootfs");
    let source = proxy.image(BIG);
    let ahead = ["pull", "-q", "-g", "--connections", "4", &source, "-r"];
    assert_success(&barge(&[&ahead[..], &[p(&dir)]].concat()));
    fs::write(dir.join("etc/motd"), b"changed on top of the big layer\n").unwrap();
    assert_success(&barge(&["commit", "-q", "-r", p(&dir), "-m", "motd"]));
    let mark = big_gets(&proxy).len();
    let cut = Action::CloseMidAnswer { after: 1 << 20 };
    proxy.add_rule(Rule::new("GET", &b.blob, cut, 1));
    let t0 = Instant::now();
    let image = dest.image("pushed/big:1");
    assert_success(&barge(&["push", "-q", &image, "-r", p(&dir)]));
    eprintln!("push with a remote base: {:?}", t0.elapsed());
    let gets = big_gets(&proxy).split_off(mark);
    assert_eq!(proxy.hits(), 1, "the download was not cut: {gets:?}");
    assert!(gets.len() >= 2, "{gets:?}");
    assert_eq!(gets[0].range, None, "fetched in chunks: {gets:?}");
    let back = pull(&image, &[]);
    assert_success(&back.out);
    assert_same_tree(&snapshot(&dir), &snapshot(&back.dir));
}

/// Two big layers and a small one: both big ones come in chunks, over at most 4
/// connections at once plus one for the layer being read (the first of them is
/// the one manifest and config came on; one more allowed for a closing connection
/// the proxy has not noticed yet).
#[test]
fn two_big_layers_share_at_most_five_connections() {
    let proxy = proxy(Vec::new());
    let pulled = pull(&proxy.image(TWO), &[]);
    assert_success(&pulled.out);
    assert_same_tree(&big().expected_two, &snapshot(&pulled.dir));
    eprintln!(
        "two big layers: {:?}, {} connections at most",
        pulled.took,
        proxy.max_open()
    );
    let chunks: Vec<Seen> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && range_of(s).is_some())
        .collect();
    let mut blobs: Vec<&str> = chunks.iter().map(|s| s.target.as_str()).collect();
    blobs.sort();
    blobs.dedup();
    assert!(
        chunks.len() >= 16 && blobs.len() == 2,
        "not both big layers in chunks: {chunks:?}"
    );
    assert!(
        (3..=MAX_FLOWS + 2).contains(&proxy.max_open()),
        "{} connections at once",
        proxy.max_open()
    );
}

/// Every ranged GET is redirected to another origin (a second proxy in front of
/// the registry, as registries send blobs to a storage service): the chunks follow
/// the redirect, all of the blob is asked there in ranges, none is given up.
#[test]
fn chunks_follow_redirects() {
    let storage = proxy(Vec::new());
    let redirect = Action::RedirectTo { port: storage.port };
    let proxy = proxy(vec![every_ranged(redirect)]);
    let pulled = pull(&proxy.image(BIG), &[]);
    assert_right_tree(&pulled);
    eprintln!("redirected chunks: {:?}", pulled.took);
    let asked = big_gets(&proxy);
    assert!(proxy.hits() >= 1, "{asked:?}");
    assert_eq!(proxy.hits(), asked.len(), "not redirected: {asked:?}");
    let there = big_gets(&storage);
    let mut ranges: Vec<(u64, u64)> = there.iter().filter_map(range_of).collect();
    ranges.sort();
    assert_eq!(
        ranges.len(),
        there.len(),
        "a GET without a closed Range: {there:?}"
    );
    assert!(ranges.first().is_some_and(|r| r.0 == 0), "{there:?}");
    assert!(
        ranges.last().is_some_and(|r| r.1 == big().size - 1),
        "{there:?}"
    );
}

// ------------------------------------------------------------------ TLS

/// The big pull from a TLS registry with Basic auth: the flows do TLS and send the
/// credentials themselves (206s in the registry's log), and the tree is the same.
#[test]
fn chunks_over_tls_with_basic_auth() {
    let b = big();
    let reg = Registry::start(Mode::TlsBasic);
    copy_to(&reg);
    let ca = reg.ca_file.clone().unwrap();
    let creds = reg.creds().unwrap();
    let mark = reg.log_mark();
    let pulled = pull(&reg.image(BIG), &["--ca-cert", p(&ca), "-u", &creds]);
    assert_right_tree(&pulled);
    eprintln!("pull over TLS: {:?}", pulled.took);
    let partial = partial_answers(&reg, mark, &b.blob);
    assert!(partial >= 3, "{partial} ranged answers over TLS");
}

/// The big pull from a token-auth registry, anonymously: the flows carry the bearer
/// token the ordinary client got (206s in the registry's log), and the tree is the same.
#[test]
fn chunks_with_a_bearer_token() {
    let b = big();
    let reg = Registry::start(Mode::Token);
    copy_to(&reg);
    let mark = reg.log_mark();
    let pulled = pull(&reg.image(BIG), &[]);
    assert_right_tree(&pulled);
    eprintln!("pull with a token: {:?}", pulled.took);
    let partial = partial_answers(&reg, mark, &b.blob);
    assert!(partial >= 3, "{partial} ranged answers with a token");
}

/// `skopeo copy` of the big image from the fixture registry to `reg`.
fn copy_to(reg: &Registry) {
    let b = big();
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "-q"])
        .args(b.registry.skopeo_src_args())
        .args(reg.skopeo_dest_args())
        .arg(format!("docker://{}", b.registry.image(BIG)))
        .arg(format!("docker://{}", reg.image(BIG)));
    run(&mut cmd);
}

/// How many GETs of `blob` `reg` answered 206 after `mark`.
fn partial_answers(reg: &Registry, mark: usize, blob: &str) -> usize {
    reg.access_log_since(mark)
        .into_iter()
        .filter(|a| a.method == "GET" && a.path.ends_with(blob) && a.status == 206)
        .count()
}

// ------------------------------------------------------------------ spool limit

/// The wide image: an uncompressed 260 MiB layer (more than the 256 MiB prefetch
/// spools ahead), then a small one.
const WIDE: &str = "prefetch/wide:1";
const WIDE_LEN: u64 = 260 << 20;

/// A plain registry holding [`WIDE`] (pushed by `barge copy` from a layout written
/// here: no compression, so the blob keeps its size), and the manifest's digest.
fn wide() -> &'static (Registry, String, TempDir) {
    static W: OnceLock<(Registry, String, TempDir)> = OnceLock::new();
    W.get_or_init(|| {
        let dir = TempDir::new("prefetch-wide");
        let layout = Layout::init(&dir.join("layout"));
        let big = zeros_layer(&layout, WIDE_LEN);
        let mut t = TarBuilder::new();
        t.dir("etc/", 0o755).file("etc/last", 0o644, b"the small layer\n");
        let small = layout.write_blob(&t.finish());
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
            big.0, small.0
        );
        let (cd, cs) = layout.write_blob(config.as_bytes());
        let layer = |(d, s): &(String, u64)| {
            format!(r#"{{"mediaType":"{OCI_LAYER_TAR}","digest":"{d}","size":{s}}}"#)
        };
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{cd}","size":{cs}}},"layers":[{},{}]}}"#,
            layer(&big),
            layer(&small)
        );
        let (md, ms) = layout.write_blob(manifest.as_bytes());
        fs::write(
            layout.dir.join("index.json"),
            r#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .unwrap();
        layout.set_tag("wide", OCI_MANIFEST, &md, ms);
        let registry = Registry::start(Mode::Plain);
        let source = format!("oci:{}:wide", layout.dir.display());
        assert_success(&barge(&["copy", "-q", &source, &registry.image(WIDE)]));
        fs::remove_dir_all(&layout.dir).unwrap();
        (registry, md, dir)
    })
}

/// Writes a layer blob into `layout`: a tar of one file of `len` zero bytes,
/// streamed; returns (digest, size).
fn zeros_layer(layout: &Layout, len: u64) -> (String, u64) {
    let tmp = layout.dir.join("blobs/sha256/zeros.tmp");
    let file = fs::File::create(&tmp).unwrap();
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let mut header = tar::Header::new_ustar();
    header.set_size(len);
    header.set_mode(0o644);
    header.set_mtime(EPOCH as u64);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "zeros", std::io::repeat(0).take(len))
        .unwrap();
    tar.into_inner().unwrap().flush().unwrap();
    let digest = format!("sha256:{}", file_sha256(&tmp));
    let size = fs::metadata(&tmp).unwrap().len();
    fs::rename(&tmp, layout.blob_path(&digest)).unwrap();
    (digest, size)
}

/// Lowercase hex sha256 of a file, read in pieces.
fn file_sha256(path: &Path) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut f = fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    common::hex(&h.finalize())
}

/// Runs `barge ARGS` (in a clean environment, as [`barge`] does), killed after
/// `limit`: `None` then.
fn barge_within(args: &[&str], limit: Duration) -> Option<Output> {
    let home = TempDir::new("prefetch-home");
    let mut child = common::barge_command(args, home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run barge");
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if child.try_wait().expect("wait for barge").is_some() {
            return Some(child.wait_with_output().expect("barge output"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// `barge copy` reads small blobs first: the small layer behind a layer larger than
/// the spool limit must still be fetched (it waited forever, spinning, for a blob
/// the limit kept from starting).
#[test]
fn a_small_layer_behind_a_huge_one_is_not_waited_for_forever() {
    let (reg, digest, _) = wide();
    let tmp = TempDir::new("prefetch-wide-copy");
    let dest = oci(&tmp.join("layout"), "x");
    let t0 = Instant::now();
    let out = barge_within(
        &["copy", "-q", &reg.image(WIDE), &dest],
        Duration::from_secs(60),
    );
    let out = out.unwrap_or_else(|| panic!("barge copy still running after 60 s"));
    assert_success(&out);
    eprintln!(
        "copy of a 260 MiB layer and a small one: {:?}",
        t0.elapsed()
    );
    let layout = Layout {
        dir: tmp.join("layout"),
    };
    assert_eq!(&layout.digest("x"), digest);
    assert_blobs_verified(&layout.dir);
}
