//! Round trips and requests of a pull and a small push, counted by the fault proxy
//! of `common/faultproxy.rs` in front of a real docker-registry (a flight is client
//! bytes that follow answer bytes on a connection): plain HTTP from the first byte,
//! no `/v2/` ping, the HEADs of a push in one flight and its mounts and session
//! POSTs in another. Also: a registry that closes the keep-alive connection in the
//! middle of a pipelined flight costs no request and no correctness.

mod common;

use common::faultproxy::{Action, FaultProxy, Rule};
use common::fixtures::Fixtures;
use common::registry::{Access, Registry};
use common::tree::{assert_same_tree, snapshot};
use common::{assert_success, barge, TempDir};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PROXY_LIFE: Duration = Duration::from_secs(90);

fn f() -> &'static Fixtures {
    Fixtures::get()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// busybox pulled with -g through `proxy`, one file changed and committed.
fn committed_through(proxy: &FaultProxy, tmp: &TempDir, motd: &str) -> PathBuf {
    let dir = tmp.join("rootfs");
    let image = proxy.image("test/busybox:oci");
    assert_success(&barge(&["pull", "-q", "-g", &image, "-r", p(&dir)]));
    fs::write(dir.join("etc/motd"), motd).unwrap();
    assert_success(&barge(&["commit", "-q", "-r", p(&dir), "-m", "motd"]));
    dir
}

/// The registry's access log since `mark`, for paths under `prefix` only (tests
/// run in parallel against the same registry).
fn requests_to(reg: &Registry, mark: usize, prefix: &str) -> Vec<Access> {
    let mut log = reg.access_log_since(mark);
    log.retain(|a| a.path.starts_with(prefix));
    log
}

/// `barge pull` of `image` into a fresh directory: its snapshot.
fn pulled_tree(image: &str) -> common::tree::Tree {
    let tmp = TempDir::new("roundtrips-pull-back");
    let dir = tmp.join("rootfs");
    assert_success(&barge(&["pull", "-q", image, "-r", p(&dir)]));
    snapshot(&dir)
}

/// A pull is manifest, config, layer: three round trips in a row on one
/// connection (the old way added a TLS probe on its own connection and a `/v2/`
/// ping). Fetching ahead (`--connections 4`; off by default for a registry on
/// loopback): the layer's first chunk goes on that connection, a later chunk at the
/// same time on a connection of its own, one request there.
#[test]
fn pull_of_a_one_layer_image_takes_three_round_trips() {
    let proxy = FaultProxy::start(f().registry.port, Vec::new(), PROXY_LIFE);
    let tmp = TempDir::new("roundtrips-pull");
    let image = proxy.image("test/busybox:oci");
    let ahead = ["pull", "-q", "--connections", "4", &image, "-r"];
    assert_success(&barge(&[&ahead[..], &[p(&tmp.join("r"))]].concat()));
    let (conns, flights) = (proxy.connections(), proxy.flights());
    assert!((1..=2).contains(&conns), "{conns} connections");
    assert_eq!(
        flights - (conns - 1),
        3,
        "round trips on the first connection"
    );
    let proxy = FaultProxy::start(f().registry.port, Vec::new(), PROXY_LIFE);
    let image = proxy.image("test/busybox:oci");
    assert_success(&barge(&["pull", "-q", &image, "-r", p(&tmp.join("r1"))]));
    assert_eq!(proxy.connections(), 1, "connections");
    assert_eq!(proxy.flights(), 3, "round trips of a one-layer pull");
}

/// A push of one small new layer onto a base in another repository of the same
/// registry: HEADs (layers + config) in one flight, the mount and the two session
/// POSTs in one flight, the two committing PUTs in one flight, the manifest: four
/// round trips, one connection, nine requests (the old way: eleven round trips,
/// two connections).
#[test]
fn small_push_onto_a_mounted_base_takes_four_round_trips() {
    let reg = &f().registry;
    let proxy = FaultProxy::start(reg.port, Vec::new(), PROXY_LIFE);
    let tmp = TempDir::new("roundtrips-push");
    let dir = committed_through(&proxy, &tmp, "one small new layer\n");
    let (flights, conns, mark) = (proxy.flights(), proxy.connections(), reg.log_mark());
    let target = proxy.image("roundtrips/small:1");
    assert_success(&barge(&["push", "-q", &target, "-r", p(&dir)]));
    let log = requests_to(reg, mark, "/v2/roundtrips/small/");
    assert_eq!(proxy.connections() - conns, 1, "connections of the push");
    assert_eq!(
        proxy.flights() - flights,
        4,
        "round trips of the push: {log:?}"
    );
    assert_eq!(log.len(), 9, "requests of the push: {log:?}");
    assert_eq!(
        reg.mounted_blobs_since(mark).len(),
        1,
        "the base was not mounted"
    );
    assert_same_tree(
        &snapshot(&dir),
        &pulled_tree(&reg.image("roundtrips/small:1")),
    );
}

/// The registry closes the connection after answering the first HEAD, and again
/// after the first mount/session POST, dropping what was pipelined behind them:
/// those go again on a new connection, each blob is committed once, the image
/// arrives whole.
#[test]
fn pipelined_flights_survive_a_keep_alive_close_mid_flight() {
    let reg = &f().registry;
    let proxy = FaultProxy::start(reg.port, Vec::new(), PROXY_LIFE);
    let tmp = TempDir::new("roundtrips-close");
    let dir = committed_through(&proxy, &tmp, "pushed through closing connections\n");
    let closing = FaultProxy::start(
        reg.port,
        vec![
            Rule::new("HEAD", "/blobs/sha256:", Action::CloseAfterAnswer, 1),
            Rule::new("POST", "/blobs/uploads/", Action::CloseAfterAnswer, 1),
        ],
        PROXY_LIFE,
    );
    // Same registry under another host name: the base is streamed, not mounted,
    // so the POST flight holds three session starts.
    let mark = reg.log_mark();
    let target = closing.image("roundtrips/closed:1");
    assert_success(&barge(&["push", "-q", &target, "-r", p(&dir)]));
    assert_eq!(closing.hits(), 2, "the connection was not closed twice");
    assert!(
        closing.connections() >= 3,
        "{} connections",
        closing.connections()
    );
    let log = requests_to(reg, mark, "/v2/roundtrips/closed/");
    let uploaded: Vec<&str> = log
        .iter()
        .filter(|a| a.method == "PUT" && a.status == 201 && a.path.contains("/blobs/uploads/"))
        .filter_map(|a| a.path.split("digest=").nth(1))
        .collect();
    assert_eq!(uploaded.len(), 3, "blobs committed: {log:?}");
    let unique: std::collections::BTreeSet<_> = uploaded.iter().collect();
    assert_eq!(
        uploaded.len(),
        unique.len(),
        "a blob was committed twice: {uploaded:?}"
    );
    assert_same_tree(
        &snapshot(&dir),
        &pulled_tree(&reg.image("roundtrips/closed:1")),
    );
}
