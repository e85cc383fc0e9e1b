//! Mirrors for pulls, read from where hosts already configure them, so a machine set
//! up for podman or Docker works as is:
//! - containers' `registries.conf` (v2 format, and v1's `[registries.insecure]` /
//!   `[registries.block]`): `$CONTAINERS_REGISTRIES_CONF`, else
//!   `~/.config/containers/registries.conf` if it exists, else
//!   `/etc/containers/registries.conf`; then the drop-ins `*.conf` of
//!   `/etc/containers/registries.conf.d` and `~/.config/containers/registries.conf.d`
//!   (in name order; an entry replaces an earlier one with the same prefix), as
//!   containers/image reads them. The `[[registry]]` whose `prefix` is the longest
//!   match of the reference (`*.example.com` matches subdomains) gives its mirrors,
//!   its `location` (the prefix is rewritten to it), `insecure` and `blocked`.
//! - Docker's `daemon.json` (`$BARGE_DOCKER_DAEMON_JSON`, else `/etc/docker/daemon.json`):
//!   `registry-mirrors` (Docker Hub only) and `insecure-registries`.
//! - `--mirror [http://]HOST[:PORT][/NAMESPACE]`, tried first.
//!
//! [`open_for_pull`] tries the mirrors in order, then the registry itself, and returns
//! a [`Registry`] on the first endpoint that served the manifest (its digest checked as
//! for any pull). Mirrors are never used to push.

use crate::error::{Context, Error, Kind, Result};
use crate::json;
use crate::progress::Output;
use crate::reference::{Reference, DOCKER_HUB};
use crate::registry::auth;
use crate::registry::client::{Registry, TransportOptions};
use crate::registry::credentials::Credentials;
use crate::registry::fetch::{self, RawManifest};
use crate::registry::toml::{self, Table, Value};
use std::path::{Path, PathBuf};

/// Configuration files larger than this are not registries.conf or daemon.json files.
const MAX_CONFIG_FILE: u64 = 1 << 20;
/// Drop-in files read from one directory, at most.
const MAX_DROP_INS: usize = 256;

/// When a mirror is used (`pull-from-mirror`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PullFrom {
    All,
    DigestOnly,
    TagOnly,
}

/// A `[[registry.mirror]]`.
#[derive(Debug, Clone, PartialEq)]
struct Mirror {
    location: String,
    insecure: bool,
    pull_from: PullFrom,
}

/// A `[[registry]]`, with the file it came from.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    prefix: String,
    /// `None` only for a wildcard prefix without a location (the reference as written).
    location: Option<String>,
    insecure: bool,
    blocked: bool,
    mirrors: Vec<Mirror>,
    file: PathBuf,
}

/// A daemon.json `registry-mirrors` entry: host[:port], and whether plain HTTP is allowed.
type HubMirror = (String, bool);

/// Everything read from the configuration files.
#[derive(Debug, Clone, Default)]
pub struct Config {
    entries: Vec<Entry>,
    /// daemon.json `registry-mirrors`.
    hub_mirrors: Vec<HubMirror>,
    /// daemon.json `insecure-registries`: host[:port] or CIDR.
    docker_insecure: Vec<String>,
}

/// One place to try: the image's name there, and how to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct PullSource {
    pub reference: Reference,
    pub insecure: bool,
    /// `Some(name)` for a mirror (as configured), `None` for the registry itself.
    pub mirror: Option<String>,
}

/// The endpoint that served the manifest.
pub struct Served {
    /// Pointed at that endpoint, authorized for the image's repository there.
    pub registry: Registry,
    /// The image's name on that endpoint (a mirror's, or the rewritten location's):
    /// blobs and child manifests are fetched under its repository.
    pub reference: Reference,
    /// The manifest (or index) it served, its digest checked (the source hands it out
    /// as its first manifest: no second request).
    pub manifest: RawManifest,
    /// ` from mirror 10.0.0.2:5000`, ` from HOST/NAME:TAG` after a location rewrite,
    /// or empty for the registry itself as named.
    pub via: String,
}

/// Looks credentials up for an endpoint: `(its reference, whether it is a mirror)`.
pub type CredentialLookup<'a> = dyn FnMut(&Reference, bool) -> Result<Option<Credentials>> + 'a;

/// Finds the endpoint that serves `reference` (mirrors first, then the registry) and
/// returns a connection to it with the manifest it served. Each mirror that fails
/// (unreachable, 404, 5xx, refused credentials, a manifest whose digest is not the
/// pinned one) is reported in one line and the next one is tried.
pub fn open_for_pull(
    reference: &Reference,
    creds: &mut CredentialLookup<'_>,
    transport: &TransportOptions,
    actions: &[&str],
    out: &Output,
) -> Result<Served> {
    let config = Config::load()?;
    let sources = config.sources(reference, &transport.mirrors)?;
    let mut failed = 0;
    for (i, src) in sources.iter().enumerate() {
        let last = i + 1 == sources.len();
        match try_source(src, creds, transport, actions) {
            Ok((registry, manifest)) => {
                return Ok(Served {
                    registry,
                    reference: src.reference.clone(),
                    manifest,
                    via: via(reference, src),
                })
            }
            Err(e) if e.kind() == Kind::Interrupted || last => {
                return Err(match failed {
                    0 => e,
                    n => e.context(format_args!(
                        "{} failed, then {}",
                        crate::progress::count(n, "mirror"),
                        src.reference.api_host()
                    )),
                })
            }
            Err(e) => {
                failed += 1;
                let name = src.mirror.as_deref().unwrap_or(src.reference.api_host());
                out.line(format!("Mirror {name} failed: {e}; trying the next"));
            }
        }
    }
    Err(Error::new(format!(
        "internal error: no source for {reference}"
    )))
}

/// `transport` plus plain HTTP for `reference`'s registry if the configuration allows
/// it there: for reading blobs later from where an image was served (push streams
/// base layers from the mirror a tree was pulled from).
pub fn transport_for_source(
    reference: &Reference,
    transport: &TransportOptions,
) -> Result<TransportOptions> {
    let mut t = transport.clone();
    if Config::load()?.allows_plain_http(&reference.registry) {
        t.insecure.push(reference.registry.clone());
    }
    Ok(t)
}

/// Connects to one source and fetches its manifest (digest-checked by `fetch`).
fn try_source(
    src: &PullSource,
    creds: &mut CredentialLookup<'_>,
    transport: &TransportOptions,
    actions: &[&str],
) -> Result<(Registry, RawManifest)> {
    let creds = creds(&src.reference, src.mirror.is_some())?;
    let mut transport = transport.clone();
    if src.insecure {
        transport.insecure.push(src.reference.registry.clone());
    }
    let scopes = vec![auth::scope(&src.reference.repository, actions)];
    let mut reg = Registry::new(&src.reference, creds, &transport, scopes)?;
    let m = fetch::manifest(
        &mut reg,
        &src.reference.repository,
        &src.reference.reference_str(),
    )?;
    Ok((reg, m))
}

/// How the pull line names the endpoint that served.
fn via(reference: &Reference, src: &PullSource) -> String {
    match &src.mirror {
        Some(m) => format!(" from mirror {m}"),
        None if src.reference == *reference => String::new(),
        None => format!(" from {}", src.reference),
    }
}

impl Config {
    /// Reads every configuration file that exists (see the module comment).
    pub fn load() -> Result<Config> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let user_conf = home
            .as_ref()
            .map(|h| h.join(".config/containers/registries.conf"));
        let user_dir = home.map(|h| h.join(".config/containers/registries.conf.d"));
        let (main, must_exist, dirs) = match std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
            Some(p) if !p.is_empty() => {
                let dirs = vec![
                    Some(PathBuf::from("/etc/containers/registries.conf.d")),
                    user_dir,
                ];
                (PathBuf::from(p), true, dirs)
            }
            _ => match user_conf.filter(|p| p.exists()) {
                Some(p) => (p, false, vec![user_dir]),
                None => (
                    PathBuf::from("/etc/containers/registries.conf"),
                    false,
                    vec![
                        Some(PathBuf::from("/etc/containers/registries.conf.d")),
                        user_dir,
                    ],
                ),
            },
        };
        let mut entries = match read_bounded(&main)? {
            Some(text) => parse_registries_conf(&text, &main, false)?,
            None if must_exist => {
                return Err(Error::new(format!(
                    "CONTAINERS_REGISTRIES_CONF names {}, which does not exist",
                    main.display()
                ))
                .hint("point it at a registries.conf file, or unset it"))
            }
            None => Vec::new(),
        };
        for dir in dirs.into_iter().flatten() {
            for file in drop_ins(&dir)? {
                if let Some(text) = read_bounded(&file)? {
                    merge(&mut entries, parse_registries_conf(&text, &file, true)?);
                }
            }
        }
        let daemon = match std::env::var_os("BARGE_DOCKER_DAEMON_JSON") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from("/etc/docker/daemon.json"),
        };
        let (hub_mirrors, docker_insecure) = match read_bounded(&daemon)? {
            Some(text) => parse_daemon_json(&text, &daemon)?,
            None => (Vec::new(), Vec::new()),
        };
        Ok(Config {
            entries,
            hub_mirrors,
            docker_insecure,
        })
    }

    /// Where to try `reference`, in order: `cli` mirrors, the matching entry's
    /// mirrors, daemon.json's for Docker Hub, then the registry (at its location).
    pub fn sources(&self, reference: &Reference, cli: &[String]) -> Result<Vec<PullSource>> {
        let name = reference.to_string();
        let entry = self.find(&name);
        if let Some(e) = entry.filter(|e| e.blocked) {
            return Err(Error::new(format!(
                "pulling {name} is blocked by {} (prefix {:?})",
                e.file.display(),
                e.prefix
            ))
            .hint("pull it from an allowed registry, or remove `blocked = true` there"));
        }
        let digested = reference.digest.is_some();
        let mut out = Vec::new();
        for m in cli {
            let (location, insecure) = parse_cli_mirror(m)?;
            let rewritten = rewrite(&name, reference.registry.len(), &location)
                .with_context(|| format!("--mirror {m}"))?;
            out.push(PullSource {
                reference: rewritten,
                insecure,
                mirror: Some(location),
            });
        }
        if let Some(e) = entry {
            let at = match_len(&name, &e.prefix).unwrap_or(0);
            for m in e.mirrors.iter().filter(|m| m.applies(digested)) {
                let rewritten = rewrite(&name, at, &m.location)
                    .with_context(|| format!("mirror {:?} in {}", m.location, e.file.display()))?;
                out.push(PullSource {
                    reference: rewritten,
                    insecure: m.insecure,
                    mirror: Some(m.location.clone()),
                });
            }
        }
        if reference.registry == DOCKER_HUB {
            for (host, insecure) in &self.hub_mirrors {
                out.push(PullSource {
                    reference: rewrite(&name, DOCKER_HUB.len(), host)?,
                    insecure: *insecure,
                    mirror: Some(host.clone()),
                });
            }
        }
        out.push(self.primary(reference, &name, entry)?);
        for s in &mut out {
            s.insecure |= self.docker_insecure(&s.reference.registry);
        }
        let mut seen = Vec::new();
        out.retain(|s| {
            let key = s.reference.to_string();
            let new = !seen.contains(&key);
            seen.push(key);
            new
        });
        Ok(out)
    }

    /// The registry itself, at the entry's location if it has one.
    fn primary(
        &self,
        reference: &Reference,
        name: &str,
        entry: Option<&Entry>,
    ) -> Result<PullSource> {
        let Some(e) = entry else {
            return Ok(PullSource {
                reference: reference.clone(),
                insecure: false,
                mirror: None,
            });
        };
        let reference = match &e.location {
            Some(loc) => rewrite(name, match_len(name, &e.prefix).unwrap_or(0), loc)
                .with_context(|| format!("location {loc:?} in {}", e.file.display()))?,
            None => reference.clone(),
        };
        Ok(PullSource {
            reference,
            insecure: e.insecure,
            mirror: None,
        })
    }

    /// Whether the configuration lets `registry` (`host[:port]`) be spoken to in plain
    /// HTTP: an `insecure` entry or mirror located there, or daemon.json's list.
    pub fn allows_plain_http(&self, registry: &str) -> bool {
        let at = |location: &str| location.split('/').next() == Some(registry);
        self.docker_insecure(registry)
            || self
                .hub_mirrors
                .iter()
                .any(|(h, insecure)| *insecure && h == registry)
            || self.entries.iter().any(|e| {
                e.insecure && e.location.as_deref().is_some_and(at)
                    || e.mirrors.iter().any(|m| m.insecure && at(&m.location))
            })
    }

    /// The entry with the longest prefix matching `name`.
    fn find(&self, name: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .filter(|e| match_len(name, &e.prefix).is_some())
            .max_by_key(|e| e.prefix.len())
    }

    /// Whether daemon.json's `insecure-registries` names `registry` (or its IP's network).
    fn docker_insecure(&self, registry: &str) -> bool {
        self.docker_insecure.iter().any(|i| {
            i == registry
                || host_part(registry) == i.as_str()
                || cidr_contains(i, host_part(registry))
        })
    }
}

impl Mirror {
    fn applies(&self, digested: bool) -> bool {
        match self.pull_from {
            PullFrom::All => true,
            PullFrom::DigestOnly => digested,
            PullFrom::TagOnly => !digested,
        }
    }
}

/// How far `prefix` matches `name` (`registry/repo:tag@digest`), as containers/image
/// matches: whole components only; `*.example.com` matches any subdomain's host.
fn match_len(name: &str, prefix: &str) -> Option<usize> {
    let end = if let Some(domain) = prefix.strip_prefix('*') {
        let at = name.find(domain)?;
        if name[..at].contains('/') {
            return None;
        }
        at + domain.len()
    } else {
        name.starts_with(prefix).then_some(prefix.len())?
    };
    match name.as_bytes().get(end) {
        None | Some(b':' | b'/' | b'@') => Some(end),
        _ => None,
    }
}

/// `location` followed by what `name` has past its first `at` bytes, parsed; the
/// location must name a registry host (`host.tld`, `host:port`, `localhost`).
fn rewrite(name: &str, at: usize, location: &str) -> Result<Reference> {
    let rest = name.get(at..).unwrap_or("");
    let written = format!("{location}{rest}");
    let r = Reference::parse(&written)?;
    let host = location.split('/').next().unwrap_or(location);
    let same = crate::reference::normalize_registry(host).is_ok_and(|h| h == r.registry);
    if !same {
        return Err(Error::new(format!(
            "{location:?} does not start with a registry host (HOST.DOMAIN, HOST:PORT or localhost)"
        )));
    }
    Ok(r)
}

/// `--mirror [http://|https://]HOST[:PORT][/NAMESPACE]`: the location, and whether
/// plain HTTP is allowed (`http://`).
fn parse_cli_mirror(m: &str) -> Result<(String, bool)> {
    let (rest, insecure) = match (m.strip_prefix("http://"), m.strip_prefix("https://")) {
        (Some(r), _) => (r, true),
        (_, Some(r)) => (r, false),
        _ => (m, false),
    };
    let location = rest.trim_end_matches('/');
    if location.is_empty() || location.contains(['@', '?', '#', ' ']) {
        return Err(
            Error::new(format!("--mirror {m:?} is not HOST[:PORT][/NAMESPACE]"))
                .hint("e.g. --mirror 10.0.0.2:5000"),
        );
    }
    let host = location.split('/').next().unwrap_or(location);
    let host = if host.contains(['.', ':']) || host == "localhost" {
        host.to_string()
    } else {
        // A bare name (`--mirror mirror`) is a host too, not a Docker Hub namespace.
        return Err(Error::new(format!(
            "--mirror {m:?}: {host:?} is not a registry host (HOST.DOMAIN, HOST:PORT or localhost)"
        ))
        .hint(format!("write it with its port, e.g. --mirror {host}:5000")));
    };
    let tail = &location[host.len()..];
    Ok((format!("{}{tail}", host.to_ascii_lowercase()), insecure))
}

/// The host of `host[:port]` (brackets kept off IPv6 literals).
fn host_part(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    }
}

/// Whether IP `host` is inside `cidr` (`10.0.0.0/8`, `fd00::/8`); names never are.
fn cidr_contains(cidr: &str, host: &str) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u32>() else {
        return false;
    };
    let (Ok(net), Ok(ip)) = (
        net.parse::<std::net::IpAddr>(),
        host.parse::<std::net::IpAddr>(),
    ) else {
        return false;
    };
    let (net, ip, width) = match (net, ip) {
        (std::net::IpAddr::V4(n), std::net::IpAddr::V4(i)) => {
            (u32::from(n) as u128, u32::from(i) as u128, 32)
        }
        (std::net::IpAddr::V6(n), std::net::IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
        _ => return false,
    };
    if bits > width {
        return false;
    }
    let shift = width - bits;
    bits == 0 || net >> shift == ip >> shift
}

// ------------------------------------------------------------------ files

/// A file's text, `None` if it does not exist; bounded.
fn read_bounded(path: &Path) -> Result<Option<String>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::from(e).context(format_args!("read {}", path.display()))),
    };
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("read {}", path.display()))?;
    if bytes.len() as u64 > MAX_CONFIG_FILE {
        return Err(Error::new(format!(
            "{} is larger than {MAX_CONFIG_FILE} bytes: not a configuration file",
            path.display()
        )));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| Error::new(format!("{} is not UTF-8 text", path.display())))
}

/// `DIR/*.conf` in name order (subdirectories skipped); none if `dir` does not exist.
fn drop_ins(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::from(e).context(format_args!("read {}", dir.display()))),
    };
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.with_context(|| format!("read {}", dir.display()))?;
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "conf") && !path.is_dir() {
            files.push(path);
        }
        if files.len() > MAX_DROP_INS {
            return Err(Error::new(format!(
                "{} holds more than {MAX_DROP_INS} .conf files",
                dir.display()
            )));
        }
    }
    files.sort();
    Ok(files)
}

/// Drop-in entries replace earlier ones with the same prefix.
fn merge(entries: &mut Vec<Entry>, more: Vec<Entry>) {
    for e in more {
        entries.retain(|old| old.prefix != e.prefix);
        entries.push(e);
    }
}

/// For the fuzz target: a registries.conf (as main file and as drop-in) and a
/// daemon.json, parsed as barge reads them; errors are fine, panics are findings.
#[cfg(feature = "fuzzing")]
pub fn fuzz_parse(text: &str) {
    let file = Path::new("fuzz.conf");
    let _ = parse_registries_conf(text, file, false);
    let _ = parse_registries_conf(text, file, true);
    let _ = parse_daemon_json(text, file);
}

/// Parses one registries.conf (a drop-in must be in the v2 format). Errors name the file.
fn parse_registries_conf(text: &str, file: &Path, drop_in: bool) -> Result<Vec<Entry>> {
    let fail = |e: Error| {
        e.context(format_args!("{}", file.display())).hint(
            "fix the file (see containers-registries.conf(5)), or point CONTAINERS_REGISTRIES_CONF at another one",
        )
    };
    let doc = toml::parse(text).map_err(fail)?;
    let v2 = entries_v2(&doc, file).map_err(fail)?;
    let Some(v1) = entries_v1(&doc, file).map_err(fail)? else {
        return Ok(v2);
    };
    if drop_in {
        return Err(fail(Error::new(
            "a drop-in must use the v2 format ([[registry]]), not [registries.*]",
        )));
    }
    if doc.keys().any(|k| k != "registries") {
        return Err(fail(Error::new(
            "mixes the v1 format ([registries.*]) with v2 settings",
        )));
    }
    Ok(v1)
}

/// `[[registry]]` entries, checked as containers/image checks them.
fn entries_v2(doc: &Table, file: &Path) -> Result<Vec<Entry>> {
    let mut out: Vec<Entry> = Vec::new();
    for t in array_of_tables(doc, "registry")? {
        let e = entry_v2(t, file)?;
        // Within one file, the first entry for a prefix wins.
        if !out.iter().any(|o| o.prefix == e.prefix) {
            out.push(e);
        }
    }
    Ok(out)
}

fn entry_v2(t: &Table, file: &Path) -> Result<Entry> {
    let location = location_of(t, "location")?;
    let prefix = match location_of(t, "prefix")? {
        Some(p) => p,
        None => location
            .clone()
            .ok_or_else(|| Error::new("a [[registry]] has neither location nor prefix"))?,
    };
    let wildcard = prefix.starts_with("*.");
    if wildcard && prefix.contains(['/', '@', ':']) {
        return Err(Error::new(format!(
            "wildcard prefix {prefix:?} must be of the form *.example.com"
        )));
    }
    if location.is_none() && !wildcard {
        return Err(Error::new(format!(
            "[[registry]] with prefix {prefix:?} has no location (only *.example.com prefixes may omit it)"
        )));
    }
    if t.get("pull-from-mirror").is_some() {
        return Err(Error::new(format!(
            "pull-from-mirror belongs in [[registry.mirror]], not in the [[registry]] of {prefix:?}"
        )));
    }
    let by_digest = boolean(t, "mirror-by-digest-only")?;
    let mut mirrors = Vec::new();
    for m in array_of_tables(t, "mirror")? {
        let location = location_of(m, "location")?
            .ok_or_else(|| Error::new(format!("a mirror of {prefix:?} has no location")))?;
        let pull_from = match string(m, "pull-from-mirror")? {
            _ if by_digest && m.get("pull-from-mirror").is_some() => {
                return Err(Error::new(format!(
                    "{prefix:?} sets both mirror-by-digest-only and pull-from-mirror"
                )))
            }
            _ if by_digest => PullFrom::DigestOnly,
            None | Some("" | "all") => PullFrom::All,
            Some("digest-only") => PullFrom::DigestOnly,
            Some("tag-only") => PullFrom::TagOnly,
            Some(other) => {
                return Err(Error::new(format!(
                    "pull-from-mirror {other:?} for mirror {location:?}: use all, digest-only or tag-only"
                )))
            }
        };
        mirrors.push(Mirror {
            location,
            insecure: boolean(m, "insecure")?,
            pull_from,
        });
    }
    Ok(Entry {
        prefix,
        location,
        insecure: boolean(t, "insecure")?,
        blocked: boolean(t, "blocked")?,
        mirrors,
        file: file.to_path_buf(),
    })
}

/// v1: `[registries.insecure]` and `[registries.block]` (`registries = [...]`) become
/// entries; `[registries.search]` only names search registries, which barge does not
/// use. `None` when the file has no v1 section.
fn entries_v1(doc: &Table, file: &Path) -> Result<Option<Vec<Entry>>> {
    let Some(v1) = doc.get("registries") else {
        return Ok(None);
    };
    let Value::Table(v1) = v1 else {
        return Err(Error::new(format!(
            "registries is {}, not a table",
            v1.kind()
        )));
    };
    let mut out: Vec<Entry> = Vec::new();
    let mut any = false;
    for (section, insecure, blocked) in [
        ("search", false, false),
        ("block", false, true),
        ("insecure", true, false),
    ] {
        let Some(v) = v1.get(section) else { continue };
        let Value::Table(t) = v else {
            return Err(Error::new(format!(
                "registries.{section} is {}, not a table",
                v.kind()
            )));
        };
        for host in strings(t, "registries")? {
            any = true;
            let host = host.trim_end_matches('/').to_string();
            check_location(&host)?;
            if section == "search" {
                continue;
            }
            match out.iter_mut().find(|e| e.prefix == host) {
                Some(e) => {
                    e.insecure |= insecure;
                    e.blocked |= blocked;
                }
                None => out.push(Entry {
                    prefix: host.clone(),
                    location: Some(host),
                    insecure,
                    blocked,
                    mirrors: Vec::new(),
                    file: file.to_path_buf(),
                }),
            }
        }
    }
    Ok(any.then_some(out))
}

fn array_of_tables<'t>(t: &'t Table, key: &str) -> Result<Vec<&'t Table>> {
    match t.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::Table(t) => Ok(t),
                v => Err(Error::new(format!("{key} holds {}, not tables", v.kind()))),
            })
            .collect(),
        Some(Value::Table(one)) => Ok(vec![one]),
        Some(v) => Err(Error::new(format!("{key} is {}, not [[{key}]]", v.kind()))),
    }
}

fn string<'t>(t: &'t Table, key: &str) -> Result<Option<&'t str>> {
    match t.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(Error::new(format!("{key} is {}, not a string", v.kind()))),
    }
}

fn strings(t: &Table, key: &str) -> Result<Vec<String>> {
    match t.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                v => Err(Error::new(format!("{key} holds {}, not strings", v.kind()))),
            })
            .collect(),
        Some(v) => Err(Error::new(format!("{key} is {}, not an array", v.kind()))),
    }
}

fn boolean(t: &Table, key: &str) -> Result<bool> {
    match t.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(Error::new(format!(
            "{key} is {}, not true or false",
            v.kind()
        ))),
    }
}

/// A `location` or `prefix`: trailing `/` dropped, empty is unset, no URL scheme.
fn location_of(t: &Table, key: &str) -> Result<Option<String>> {
    let Some(s) = string(t, key)? else {
        return Ok(None);
    };
    let s = s.trim_end_matches('/');
    check_location(s)?;
    Ok((!s.is_empty()).then(|| s.to_string()))
}

fn check_location(s: &str) -> Result<()> {
    if s.starts_with("http://") || s.starts_with("https://") {
        return Err(Error::new(format!(
            "{s:?}: registries.conf locations take no URL scheme"
        ))
        .hint("write HOST[:PORT][/PATH], and insecure = true for plain HTTP"));
    }
    Ok(())
}

/// daemon.json: `registry-mirrors` as (host[:port], plain HTTP allowed), and
/// `insecure-registries`. Mirror URLs carry no path, as dockerd requires.
fn parse_daemon_json(text: &str, file: &Path) -> Result<(Vec<HubMirror>, Vec<String>)> {
    let what = file.display().to_string();
    if text.trim().is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let fail = |e: Error| {
        e.context(&what)
            .hint("fix the file, or set BARGE_DOCKER_DAEMON_JSON to another one")
    };
    let doc = json::parse(text.as_bytes(), &what).map_err(fail)?;
    let mirrors = json::opt_str_array(&doc, "registry-mirrors").map_err(fail)?;
    let insecure = json::opt_str_array(&doc, "insecure-registries").map_err(fail)?;
    let mut out = Vec::new();
    for url in &mirrors {
        out.push(docker_mirror(url).map_err(fail)?);
    }
    let insecure = insecure
        .into_iter()
        .map(|i| {
            let i = i.trim_end_matches('/');
            let i = i
                .strip_prefix("http://")
                .or_else(|| i.strip_prefix("https://"))
                .unwrap_or(i);
            i.to_ascii_lowercase()
        })
        .collect();
    Ok((out, insecure))
}

/// `https://mirror.gcr.io`, `http://10.0.0.2:5000/` → (host[:port], plain HTTP allowed).
fn docker_mirror(url: &str) -> Result<(String, bool)> {
    let (rest, insecure) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (r, true),
        (_, Some(r)) => (r, false),
        _ => {
            return Err(Error::new(format!(
                "registry-mirrors entry {url:?} is not an http:// or https:// URL"
            )))
        }
    };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() || host.contains(['/', '?', '#', '@']) {
        return Err(Error::new(format!(
            "registry-mirrors entry {url:?} must be scheme://HOST[:PORT], without a path"
        )));
    }
    Ok((host.to_ascii_lowercase(), insecure))
}

#[cfg(test)]
mod tests;
