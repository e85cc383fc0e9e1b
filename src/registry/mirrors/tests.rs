//! Unit tests of the registries.conf / daemon.json readers and of the matching, on
//! the files Debian and Fedora ship and on an air-gapped site's configuration.

use super::*;

const DEBIAN: &str = include_str!("testdata/debian-registries.conf");
const DEBIAN_SHORTNAMES: &str = include_str!("testdata/debian-shortnames.conf");
/// Upstream's registries.conf with the two settings Fedora's containers-common enables.
const FEDORA: &str = include_str!("testdata/fedora-registries.conf");
const AIR_GAPPED: &str = include_str!("testdata/air-gapped.conf");
const V1: &str = include_str!("testdata/v1.conf");

fn conf(text: &str) -> Config {
    Config {
        entries: parse_registries_conf(text, Path::new("test.conf"), false).unwrap(),
        ..Config::default()
    }
}

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

/// The sources of `image` as `name (mirror?) insecure?` strings.
fn tried(c: &Config, image: &str, cli: &[&str]) -> Vec<String> {
    let cli: Vec<String> = cli.iter().map(|s| s.to_string()).collect();
    c.sources(&r(image), &cli)
        .unwrap()
        .into_iter()
        .map(|s| {
            let mut line = s.reference.to_string();
            if s.mirror.is_some() {
                line.push_str(" mirror");
            }
            if s.insecure {
                line.push_str(" insecure");
            }
            line
        })
        .collect()
}

#[test]
fn shipped_files_parse_and_configure_no_registry() {
    for text in [DEBIAN, FEDORA] {
        assert!(conf(text).entries.is_empty());
    }
    let doc = toml::parse(FEDORA).unwrap();
    assert_eq!(
        doc.get("short-name-mode"),
        Some(&Value::String("enforcing".into()))
    );
    let aliases = parse_registries_conf(DEBIAN_SHORTNAMES, Path::new("shortnames.conf"), true);
    assert_eq!(aliases.unwrap(), Vec::new());
    let doc = toml::parse(DEBIAN_SHORTNAMES).unwrap();
    let Some(Value::Table(a)) = doc.get("aliases") else {
        panic!("no [aliases]")
    };
    assert_eq!(
        a.get("opensuse/leap"),
        Some(&Value::String("registry.opensuse.org/opensuse/leap".into()))
    );
    assert!(a.keys().count() > 40);
    // Without configuration, the registry itself is the only source.
    assert_eq!(
        tried(&conf(FEDORA), "busybox", &[]),
        ["docker.io/library/busybox:latest"]
    );
}

#[test]
fn docker_hub_goes_through_its_mirrors_in_order() {
    let c = conf(AIR_GAPPED);
    assert_eq!(
        tried(&c, "busybox:1.36", &[]),
        [
            "10.0.0.2:5000/library/busybox:1.36 mirror insecure",
            "mirror.corp.example/dockerhub/library/busybox:1.36 mirror",
            "docker.io/library/busybox:1.36",
        ]
    );
    // `--mirror` first; a mirror named twice is tried once.
    assert_eq!(
        tried(
            &c,
            "docker.io/user/app",
            &["10.0.0.7:5000", "http://10.0.0.2:5000"]
        ),
        [
            "10.0.0.7:5000/user/app:latest mirror",
            "10.0.0.2:5000/user/app:latest mirror insecure",
            "mirror.corp.example/dockerhub/user/app:latest mirror",
            "docker.io/user/app:latest",
        ]
    );
}

#[test]
fn longest_prefix_wins_and_digest_only_mirrors_skip_tags() {
    let c = conf(AIR_GAPPED);
    assert_eq!(tried(&c, "debian:12", &[]), ["docker.io/library/debian:12"]);
    let pinned = format!("debian@sha256:{}", "a".repeat(64));
    assert_eq!(
        tried(&c, &pinned, &[]),
        [
            // The prefix (the whole repository) is replaced by the mirror's location.
            format!("10.0.0.3:5000/debian-only@sha256:{} mirror", "a".repeat(64)),
            format!("docker.io/library/debian@sha256:{}", "a".repeat(64)),
        ]
    );
    // "docker.io/library/debian" does not match "docker.io/library/debianutils".
    assert_eq!(tried(&c, "debianutils", &[]).len(), 3);
}

#[test]
fn location_rewrites_the_registry_and_tag_only_mirrors_skip_digests() {
    let c = conf(AIR_GAPPED);
    assert_eq!(
        tried(&c, "quay.io/team/tool:v1", &[]),
        [
            "10.0.0.2:5000/quay/tool:v1 mirror",
            "registry.corp.example:5000/quay-team/tool:v1",
        ]
    );
    let pinned = format!("quay.io/team/tool@sha256:{}", "b".repeat(64));
    assert_eq!(
        tried(&c, &pinned, &[]),
        [format!(
            "registry.corp.example:5000/quay-team/tool@sha256:{}",
            "b".repeat(64)
        )]
    );
    // quay.io outside the prefix is untouched.
    assert_eq!(
        tried(&c, "quay.io/other/x", &[]),
        ["quay.io/other/x:latest"]
    );
}

#[test]
fn wildcard_prefixes_match_subdomains_only() {
    let c = conf(AIR_GAPPED);
    assert_eq!(
        tried(&c, "a.b.internal.example/x/y:1", &[]),
        [
            "cache.internal.example:5000/x/y:1 mirror",
            "a.b.internal.example/x/y:1",
        ]
    );
    assert_eq!(tried(&c, "internal.example/x/y:1", &[]).len(), 1);
    assert_eq!(
        match_len("a.internal.example:5000/x", "*.internal.example"),
        Some(18)
    );
    assert_eq!(
        match_len("a.internal.examples/x", "*.internal.example"),
        None
    );
    assert_eq!(
        match_len("x.io/a.internal.example", "*.internal.example"),
        None
    );
}

#[test]
fn prefixes_match_whole_components() {
    assert_eq!(
        match_len("example.com/foo/bar:1", "example.com/foo"),
        Some(15)
    );
    assert_eq!(match_len("example.com/foo", "example.com/foo"), Some(15));
    assert_eq!(
        match_len("example.com/foo@sha256:x", "example.com/foo"),
        Some(15)
    );
    assert_eq!(match_len("example.com/foobar:1", "example.com/foo"), None);
    assert_eq!(match_len("example.co", "example.com"), None);
}

#[test]
fn blocked_registries_are_refused_naming_the_file() {
    let c = conf(AIR_GAPPED);
    let e = c.sources(&r("ghcr.io/a/b"), &[]).unwrap_err().to_string();
    assert!(e.contains("blocked by test.conf"), "{e}");
    assert!(e.contains("ghcr.io/a/b:latest"), "{e}");
}

#[test]
fn v1_files_are_read_and_refused_where_containers_image_refuses_them() {
    let c = conf(V1);
    let blocked = c.sources(&r("10.0.0.9:5000/a"), &[]).unwrap_err();
    assert!(blocked.to_string().contains("blocked"));
    assert!(c.sources(&r("ghcr.io/a"), &[]).is_err());
    assert_eq!(tried(&c, "quay.io/a/b:1", &[]), ["quay.io/a/b:1"]);
    let v1 = parse_registries_conf(V1, Path::new("d.conf"), true).unwrap_err();
    assert!(
        v1.to_string().contains("drop-in must use the v2 format"),
        "{v1}"
    );
    let mixed = format!("{V1}\n[[registry]]\nlocation = \"x.io\"\n");
    let e = parse_registries_conf(&mixed, Path::new("m.conf"), false).unwrap_err();
    assert!(e.to_string().contains("mixes the v1 format"), "{e}");
}

#[test]
fn invalid_entries_are_one_clear_error_with_the_file() {
    for (text, what) in [
        ("[[registry]]\nlocation = \"https://x.io\"\n", "no URL scheme"),
        ("[[registry]]\nprefix = \"*.x.io/a\"\n", "*.example.com"),
        ("[[registry]]\nprefix = \"x.io\"\n", "has no location"),
        ("[[registry]]\ninsecure = true\n", "neither location nor prefix"),
        (
            "[[registry]]\nlocation = \"x.io\"\npull-from-mirror = \"all\"\n",
            "belongs in [[registry.mirror]]",
        ),
        (
            "[[registry]]\nlocation = \"x.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"all\"\n",
            "both mirror-by-digest-only and pull-from-mirror",
        ),
        (
            "[[registry]]\nlocation = \"x.io\"\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"sometimes\"\n",
            "use all, digest-only or tag-only",
        ),
        ("[[registry]]\nlocation = \"x.io\"\n[[registry.mirror]]\ninsecure = true\n", "has no location"),
        ("[[registry]]\nlocation = \"x.io\"\ninsecure = \"yes\"\n", "not true or false"),
        ("registry = 1\n", "not [[registry]]"),
        ("[[registry]\n", "line 1"),
    ] {
        let e = parse_registries_conf(text, Path::new("/etc/x.conf"), false)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/x.conf: "), "{text:?}: {e}");
        assert!(e.contains(what), "{text:?}: {e}");
        assert!(e.contains("CONTAINERS_REGISTRIES_CONF"), "{e}");
    }
}

#[test]
fn drop_ins_replace_entries_with_the_same_prefix() {
    let mut entries = parse_registries_conf(AIR_GAPPED, Path::new("main"), false).unwrap();
    let drop_in = "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"new.example:5000\"\n";
    merge(
        &mut entries,
        parse_registries_conf(drop_in, Path::new("d"), true).unwrap(),
    );
    let c = Config {
        entries,
        ..Config::default()
    };
    assert_eq!(
        tried(&c, "busybox", &[]),
        [
            "new.example:5000/library/busybox:latest mirror",
            "docker.io/library/busybox:latest"
        ]
    );
    // Within one file, the first entry for a prefix wins.
    let twice =
        "[[registry]]\nlocation = \"a.io\"\n[[registry]]\nlocation = \"a.io\"\nblocked = true\n";
    assert!(!conf(twice).entries[0].blocked);
}

#[test]
fn rewrites_must_land_on_a_registry_host() {
    let c = conf("[[registry]]\nprefix = \"x.io\"\nlocation = \"notahost\"\n");
    let e = c.sources(&r("x.io/a/b"), &[]).unwrap_err().to_string();
    assert!(e.contains("does not start with a registry host"), "{e}");
}

#[test]
fn daemon_json_mirrors_serve_docker_hub_only() {
    let text = r#"{"registry-mirrors": ["https://mirror.gcr.io", "http://10.0.0.2:5000/"],
                  "insecure-registries": ["reg.lan:5000", "172.16.0.0/12"], "debug": true}"#;
    let (hub_mirrors, docker_insecure) = parse_daemon_json(text, Path::new("daemon.json")).unwrap();
    let c = Config {
        hub_mirrors,
        docker_insecure,
        ..conf(AIR_GAPPED)
    };
    assert_eq!(
        tried(&c, "alpine", &[]),
        [
            "10.0.0.2:5000/library/alpine:latest mirror insecure",
            "mirror.corp.example/dockerhub/library/alpine:latest mirror",
            "mirror.gcr.io/library/alpine:latest mirror",
            "docker.io/library/alpine:latest",
        ]
    );
    assert_eq!(
        tried(&c, "reg.lan:5000/a", &[]),
        ["reg.lan:5000/a:latest insecure"]
    );
    assert_eq!(
        tried(&c, "172.20.1.1:5000/a", &[]),
        ["172.20.1.1:5000/a:latest insecure"]
    );
    assert_eq!(
        tried(&c, "172.32.1.1:5000/a", &[]),
        ["172.32.1.1:5000/a:latest"]
    );
    assert_eq!(tried(&c, "quay.io/x/y", &[]), ["quay.io/x/y:latest"]);
    for (bad, what) in [
        (
            r#"{"registry-mirrors": ["https://m.io/path"]}"#,
            "without a path",
        ),
        (
            r#"{"registry-mirrors": ["m.io"]}"#,
            "not an http:// or https:// URL",
        ),
        (r#"{"registry-mirrors": "m.io"}"#, "registry-mirrors"),
        ("{not json", "daemon.json"),
    ] {
        let e = parse_daemon_json(bad, Path::new("daemon.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(what), "{bad}: {e}");
        assert!(e.contains("BARGE_DOCKER_DAEMON_JSON"), "{e}");
    }
    assert_eq!(
        parse_daemon_json(" \n", Path::new("d")).unwrap(),
        (vec![], vec![])
    );
}

#[test]
fn cli_mirrors_take_a_host_and_an_optional_namespace() {
    assert_eq!(
        parse_cli_mirror("10.0.0.2:5000").unwrap(),
        ("10.0.0.2:5000".into(), false)
    );
    assert_eq!(
        parse_cli_mirror("http://Mirror.LAN/hub/").unwrap(),
        ("mirror.lan/hub".into(), true)
    );
    assert_eq!(
        parse_cli_mirror("localhost").unwrap(),
        ("localhost".into(), false)
    );
    let e = parse_cli_mirror("mirror").unwrap_err().to_string();
    assert!(e.contains("mirror:5000"), "{e}");
    assert!(parse_cli_mirror("").is_err());
    assert!(parse_cli_mirror("h.io/a?b").is_err());
    let c = Config::default();
    assert_eq!(
        tried(&c, "quay.io/a/b:1", &["m.lan:5000/quay"]),
        ["m.lan:5000/quay/a/b:1 mirror", "quay.io/a/b:1"]
    );
}

#[test]
fn cidrs() {
    assert!(cidr_contains("10.0.0.0/8", "10.1.2.3"));
    assert!(!cidr_contains("10.0.0.0/8", "11.1.2.3"));
    assert!(cidr_contains("0.0.0.0/0", "1.2.3.4"));
    assert!(cidr_contains("fd00::/8", "fd12::1"));
    assert!(!cidr_contains("fd00::/8", "10.0.0.1"));
    assert!(!cidr_contains("10.0.0.0/33", "10.0.0.1"));
    assert!(!cidr_contains("10.0.0.0/8", "ten.example"));
    assert_eq!(host_part("[::1]:5000"), "::1");
    assert_eq!(host_part("reg.lan:5000"), "reg.lan");
}

#[test]
fn plain_http_follows_insecure_entries_mirrors_and_daemon_json() {
    let c = Config {
        hub_mirrors: vec![("hub.lan:5000".into(), true), ("tls.lan".into(), false)],
        docker_insecure: vec!["10.9.0.0/16".into()],
        ..conf(AIR_GAPPED)
    };
    assert!(c.allows_plain_http("10.0.0.2:5000"));
    assert!(c.allows_plain_http("hub.lan:5000"));
    assert!(c.allows_plain_http("10.9.1.1:5000"));
    assert!(!c.allows_plain_http("tls.lan"));
    assert!(!c.allows_plain_http("10.0.0.3:5000"));
    assert!(!c.allows_plain_http("registry.corp.example:5000"));
}
