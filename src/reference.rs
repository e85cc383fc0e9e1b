//! Image references: parse and normalise `[host[:port]/]path[:tag][@digest]` the way Docker does (docker.io, library/, latest).
//!
//! Grammar (Docker's distribution/reference):
//! - the first `/`-separated component is a registry if it contains `.` or `:` or is
//!   `localhost`; otherwise the registry is `docker.io`;
//! - registry: DNS labels (`[A-Za-z0-9]` with inner `-`) joined by `.`, or `[IPv6]`, then
//!   an optional `:port`; `index.docker.io` and `registry.hub.docker.com` mean `docker.io`;
//! - repository components: `[a-z0-9]+` joined by `.`, `_`, `__` or one or more `-`;
//!   single names on docker.io get `library/`;
//! - tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; digest: `sha256:<64 hex>`;
//! - `registry/repository` is at most 255 characters.

use crate::digest::Digest;
use crate::error::{Error, Result};
use std::fmt;

/// The registry Docker Hub images are named under.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually answers.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key Docker writes Docker Hub credentials under in config.json.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";
/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// Longest `registry/repository` accepted.
pub const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Normalised registry: `docker.io`, `quay.io`, `127.0.0.1:5000`, `[::1]:5000` (lowercase).
    pub registry: String,
    /// Repository path inside the registry: `library/debian`.
    pub repository: String,
    /// The tag, if one was written.
    pub tag: Option<String>,
    /// The digest, if one was written (it wins over the tag when fetching).
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a reference as written by a user (`debian`, `user/repo:tag`,
    /// `host:5000/a/b:t@sha256:…`). Transport prefixes (`docker://`) are
    /// [`crate::image::transport`]'s business.
    pub fn parse(s: &str) -> Result<Reference> {
        parse_reference(s).map_err(|e| e.context(format_args!("invalid image reference {s:?}")))
    }

    /// The host (and port) to send API requests to.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What goes in `/v2/<repository>/manifests/<here>`: the digest if any, else the tag,
    /// else `latest`.
    pub fn reference_str(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// Keys to look credentials up under in Docker/podman auth files, most specific first.
    /// The first one is the key to store new credentials under.
    pub fn credential_keys(&self) -> Vec<String> {
        registry_credential_keys(&self.registry)
    }
}

/// Credential keys for a registry named as in a reference (`docker.io`, `host:port`).
pub fn registry_credential_keys(registry: &str) -> Vec<String> {
    if registry == DOCKER_HUB {
        [
            DOCKER_HUB_AUTH_KEY,
            "index.docker.io",
            DOCKER_HUB,
            DOCKER_HUB_API,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    } else {
        vec![
            registry.to_string(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ]
    }
}

/// Normalises a registry name given on its own (`barge login quay.io`): validates it and maps
/// Docker Hub's aliases to `docker.io`.
pub fn normalize_registry(s: &str) -> Result<String> {
    check_domain(s).map_err(|e| e.context(format_args!("invalid registry {s:?}")))?;
    Ok(normalize_domain(s))
}

impl fmt::Display for Reference {
    /// The full normalised form: `docker.io/library/debian:latest`,
    /// `127.0.0.1:5000/x/y:t@sha256:…`, `quay.io/a/b@sha256:…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        match (&self.tag, &self.digest) {
            (None, None) => write!(f, ":{DEFAULT_TAG}"),
            (tag, digest) => {
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                if let Some(d) = digest {
                    write!(f, "@{d}")?;
                }
                Ok(())
            }
        }
    }
}

fn parse_reference(s: &str) -> Result<Reference> {
    if s.is_empty() {
        return Err(Error::new("empty name").hint("name an image, e.g. debian:bookworm"));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((rest, d)) => (rest, Some(Digest::parse(d)?)),
        None => (s, None),
    };
    let (name, tag) = split_tag(rest);
    if let Some(t) = tag {
        check_tag(t)?;
    }
    if name.len() == 64 && name.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::new(
            "a repository name cannot be a 64-character hexadecimal string",
        ));
    }
    let (registry, written, repository) = split_registry(name)?;
    if written.bytes().any(|c| c.is_ascii_uppercase()) {
        // Suggest the same input with only the repository lowercased.
        let head = &name[..name.len() - written.len()];
        let tail = &s[name.len()..];
        let fixed = format!("{head}{}{tail}", written.to_ascii_lowercase());
        return Err(
            Error::new("repository name must be lowercase").hint(format!("write it as {fixed:?}"))
        );
    }
    check_repository(&repository)?;
    let full = registry.len() + 1 + repository.len();
    if full > NAME_MAX {
        return Err(Error::new(format!(
            "name is {full} characters long; at most {NAME_MAX} are allowed"
        )));
    }
    Ok(Reference {
        registry,
        repository,
        tag: tag.map(str::to_string),
        digest,
    })
}

/// Splits `name[:tag]`: the tag is after the last `:` that follows the last `/`.
fn split_tag(s: &str) -> (&str, Option<&str>) {
    let slash = s.rfind('/');
    match s.rfind(':') {
        Some(colon) if slash.map_or(true, |sl| colon > sl) => (&s[..colon], Some(&s[colon + 1..])),
        _ => (s, None),
    }
}

/// Splits off and normalises the registry; adds `library/` to single Docker Hub names.
/// Returns the registry, the path as written, and the normalised repository.
fn split_registry(name: &str) -> Result<(String, &str, String)> {
    let (registry, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            check_domain(first)?;
            (normalize_domain(first), rest)
        }
        _ => (DOCKER_HUB.to_string(), name),
    };
    if registry == DOCKER_HUB && !path.is_empty() && !path.contains('/') {
        return Ok((registry, path, format!("library/{path}")));
    }
    Ok((registry, path, path.to_string()))
}

fn normalize_domain(d: &str) -> String {
    let d = d.to_ascii_lowercase();
    match d.as_str() {
        "index.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.to_string(),
        _ => d,
    }
}

fn check_tag(t: &str) -> Result<()> {
    let ok_first = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let ok_rest = |c: u8| ok_first(c) || c == b'.' || c == b'-';
    let valid = match t.as_bytes() {
        [] => false,
        [first, rest @ ..] => ok_first(*first) && rest.iter().all(|&c| ok_rest(c)),
    };
    if t.is_empty() {
        return Err(Error::new("empty tag after ':'"));
    }
    if !valid || t.len() > TAG_MAX {
        return Err(Error::new(format!(
            "invalid tag {t:?}: a tag is up to {TAG_MAX} letters, digits, '_', '.', '-', not starting with '.' or '-'"
        )));
    }
    Ok(())
}

/// `host[:port]` or `[ipv6][:port]`.
fn check_domain(d: &str) -> Result<()> {
    let bad = || Error::new(format!("invalid registry host {d:?}"));
    let (host, port) = if let Some(v6) = d.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(bad)?;
        if addr.is_empty() || !addr.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return Err(bad());
        }
        match after {
            "" => (addr, None),
            _ => (addr, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        let (host, port) = match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        };
        if !host.split('.').all(is_domain_label) {
            return Err(bad());
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(bad());
    }
    if let Some(p) = port {
        let digits_ok = !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit());
        if !digits_ok || p.parse::<u32>().map_or(true, |n| n > 65535) {
            return Err(Error::new(format!("invalid port in registry {d:?}")));
        }
    }
    Ok(())
}

/// `[A-Za-z0-9]` or `[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]`.
fn is_domain_label(l: &str) -> bool {
    let b = l.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(z)) => {
            f.is_ascii_alphanumeric()
                && z.is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        }
        _ => false,
    }
}

fn check_repository(path: &str) -> Result<()> {
    if path.is_empty() {
        return Err(Error::new("missing repository name"));
    }
    for comp in path.split('/') {
        if !is_path_component(comp) {
            return Err(Error::new(if comp.is_empty() {
                "empty path component (\"//\" or a trailing \"/\")".to_string()
            } else {
                format!(
                    "invalid path component {comp:?}: use lowercase letters and digits, separated by '.', '_', '__' or '-'"
                )
            }));
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        // A run of alphanumerics (at least one).
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // A separator: '.', '_', '__', or one or more '-'.
        let sep_start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == sep_start {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// input, registry, repository, tag, has digest, display form.
    type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, bool, &'a str);

    #[test]
    #[rustfmt::skip]
    fn valid_references_normalise() {
        let with_digest = format!("debian@{D}");
        let d_only = format!("docker.io/library/debian@{D}");
        let tag_and_d = format!("127.0.0.1:5000/x/y:t@{D}");
        let cases: &[Case] = &[
            ("debian", "docker.io", "library/debian", None, false, "docker.io/library/debian:latest"),
            ("debian:bookworm", "docker.io", "library/debian", Some("bookworm"), false, "docker.io/library/debian:bookworm"),
            ("user/repo:tag", "docker.io", "user/repo", Some("tag"), false, "docker.io/user/repo:tag"),
            ("docker.io/debian", "docker.io", "library/debian", None, false, "docker.io/library/debian:latest"),
            ("index.docker.io/library/busybox:1.36", "docker.io", "library/busybox", Some("1.36"), false, "docker.io/library/busybox:1.36"),
            ("registry.hub.docker.com/busybox", "docker.io", "library/busybox", None, false, "docker.io/library/busybox:latest"),
            ("localhost/foo", "localhost", "foo", None, false, "localhost/foo:latest"),
            ("localhost:5000/foo/bar:v1", "localhost:5000", "foo/bar", Some("v1"), false, "localhost:5000/foo/bar:v1"),
            ("Quay.IO/org/app", "quay.io", "org/app", None, false, "quay.io/org/app:latest"),
            ("ghcr.io/a/b/c/d:x_y.z-1", "ghcr.io", "a/b/c/d", Some("x_y.z-1"), false, "ghcr.io/a/b/c/d:x_y.z-1"),
            (&with_digest, "docker.io", "library/debian", None, true, &d_only),
            (&tag_and_d, "127.0.0.1:5000", "x/y", Some("t"), true, &tag_and_d),
            ("[::1]:5000/x:y", "[::1]:5000", "x", Some("y"), false, "[::1]:5000/x:y"),
            ("[fe80::1]/x", "[fe80::1]", "x", None, false, "[fe80::1]/x:latest"),
            ("x/a.b__c---d_e", "docker.io", "x/a.b__c---d_e", None, false, "docker.io/x/a.b__c---d_e:latest"),
            ("my-registry.example.com:443/team/img:_t", "my-registry.example.com:443", "team/img", Some("_t"), false, "my-registry.example.com:443/team/img:_t"),
            ("localhost:5000", "docker.io", "library/localhost", Some("5000"), false, "docker.io/library/localhost:5000"),
        ];
        for &(input, reg, repo, tag, has_digest, display) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry, reg, "{input}");
            assert_eq!(r.repository, repo, "{input}");
            assert_eq!(r.tag.as_deref(), tag, "{input}");
            assert_eq!(r.digest.is_some(), has_digest, "{input}");
            assert_eq!(r.to_string(), display, "{input}");
            // The display form parses back to the same name.
            let back = Reference::parse(display).unwrap();
            assert_eq!((back.registry, back.repository), (r.registry, r.repository));
        }
    }

    #[test]
    fn invalid_references_are_refused() {
        let long = format!("a/{}", "b".repeat(300));
        let long_tag = format!("a:{}", "t".repeat(129));
        let hex64 = "0123456789abcdef".repeat(4);
        let cases: &[(&str, &str)] = &[
            ("", "empty name"),
            (":tag", "missing repository name"),
            ("UPPER", "must be lowercase"),
            ("a//b", "empty path component"),
            ("a/", "empty path component"),
            ("/a", "empty path component"),
            ("a/b:", "empty tag"),
            ("-a", "invalid path component"),
            ("a-", "invalid path component"),
            ("a..b", "invalid path component"),
            ("a___b", "invalid path component"),
            ("a b", "invalid path component"),
            ("a:t t", "invalid tag"),
            ("a:.t", "invalid tag"),
            ("a:-t", "invalid tag"),
            (&long, "at most 255"),
            (&long_tag, "invalid tag"),
            ("a@sha256:abc", "invalid digest"),
            ("a@md5:abc", "unsupported digest algorithm"),
            ("a@", "invalid digest"),
            ("host:port/x", "invalid port"),
            ("host:99999/x", "invalid port"),
            ("-bad.host/x", "invalid registry host"),
            ("bad_host.com/x", "invalid registry host"),
            ("[::1/x", "invalid registry host"),
            ("[zz]:1/x", "invalid registry host"),
            ("localhost/", "missing repository name"),
            ("quay.io/Org/app", "must be lowercase"),
            (&hex64, "64-character hexadecimal"),
        ];
        for (input, want) in cases {
            let e = Reference::parse(input).expect_err(input).to_string();
            assert!(e.contains(want), "{input:?}: got {e:?}, want {want:?}");
            assert!(e.starts_with("invalid image reference"), "{e}");
        }
    }

    #[test]
    fn uppercase_error_has_a_hint() {
        let e = Reference::parse("Debian:12").unwrap_err();
        assert_eq!(e.hint_text(), Some("write it as \"debian:12\""));
        let e = Reference::parse("Quay.io/Org/App:V1").unwrap_err();
        assert_eq!(e.hint_text(), Some("write it as \"Quay.io/org/app:V1\""));
    }

    #[test]
    fn name_length_counts_the_registry() {
        // docker.io/library/ + 237 = 255 exactly.
        let ok = "a".repeat(255 - "docker.io/library/".len());
        assert!(Reference::parse(&ok).is_ok());
        assert!(Reference::parse(&format!("{ok}a")).is_err());
    }

    #[test]
    fn api_host_and_reference_str() {
        let r = Reference::parse("debian").unwrap();
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.reference_str(), "latest");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/debian")
        );
        let r = Reference::parse("127.0.0.1:5000/x:t").unwrap();
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        assert_eq!(r.reference_str(), "t");
        let r = Reference::parse(&format!("127.0.0.1:5000/x:t@{D}")).unwrap();
        assert_eq!(r.reference_str(), D);
    }

    #[test]
    fn credential_keys() {
        let r = Reference::parse("debian").unwrap();
        assert_eq!(
            r.credential_keys(),
            vec![
                "https://index.docker.io/v1/",
                "index.docker.io",
                "docker.io",
                "registry-1.docker.io"
            ]
        );
        let r = Reference::parse("localhost:5000/x").unwrap();
        assert_eq!(
            r.credential_keys(),
            vec![
                "localhost:5000",
                "https://localhost:5000",
                "http://localhost:5000"
            ]
        );
    }

    #[test]
    fn registry_names_alone() {
        assert_eq!(normalize_registry("index.docker.io").unwrap(), "docker.io");
        assert_eq!(normalize_registry("Quay.io").unwrap(), "quay.io");
        assert_eq!(normalize_registry("[::1]:5000").unwrap(), "[::1]:5000");
        assert!(normalize_registry("a/b").is_err());
        assert!(normalize_registry("").is_err());
    }

    #[test]
    fn path_components() {
        for ok in [
            "a",
            "a0",
            "a.b",
            "a_b",
            "a__b",
            "a-b",
            "a--b",
            "a-_b".replace('_', "-").as_str(),
        ] {
            assert!(is_path_component(ok), "{ok}");
        }
        for bad in ["", ".a", "a.", "a_", "a___b", "a._b", "_a", "a/b", "aB"] {
            assert!(!is_path_component(bad), "{bad}");
        }
    }

    #[test]
    fn random_references_never_panic() {
        for s in crate::testutil::random_strings("aZ09.-_/:@[]é", 0x9e37_79b9_7f4a_7c15, 30, 20_000)
        {
            if let Ok(r) = Reference::parse(&s) {
                // Whatever parses, its display form parses to the same name.
                let back = Reference::parse(&r.to_string()).unwrap();
                assert_eq!(
                    (&back.registry, &back.repository),
                    (&r.registry, &r.repository),
                    "{s}"
                );
            }
        }
    }
}
