//! `http://` and `https://` URLs: parsing, resolving a `Location`/link against a base, origins.
//!
//! Only what a registry conversation needs: scheme, host (DNS name, IPv4 or
//! bracketed IPv6), port and a request target (path plus optional query).
//! Fragments are dropped; bytes that may not appear in a request line are
//! percent-encoded so a hostile `Location` cannot inject into the request.

use std::fmt;

use crate::error::{Error, Result};

/// An absolute http(s) URL split into the parts a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `true` for `https://`.
    pub https: bool,
    /// Host name (lower-cased) or IP address; IPv6 without brackets.
    pub host: String,
    /// Explicit port or the scheme default (80 / 443).
    pub port: u16,
    /// Path plus optional `?query`; always starts with `/`.
    pub path: String,
}

impl Url {
    /// Parses an absolute `http://` or `https://` URL.
    pub fn parse(s: &str) -> Result<Url> {
        let bad = |why: &str| Error::new(format!("invalid URL {s:?}: {why}"));
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("missing scheme"))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return Err(bad("only http:// and https:// are supported")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        let (host, port) = parse_authority(authority, https).map_err(|why| bad(&why))?;
        Ok(Url {
            https,
            host,
            port,
            path: normalize_target(target),
        })
    }

    /// Resolves `location` (absolute, scheme-relative, absolute-path or relative) against `self`.
    pub fn join(&self, location: &str) -> Result<Url> {
        let location = location.trim();
        if has_scheme(location) {
            return Url::parse(location);
        }
        if let Some(rest) = location.strip_prefix("//") {
            let scheme = if self.https { "https" } else { "http" };
            return Url::parse(&format!("{scheme}://{rest}"));
        }
        let location = location.split('#').next().unwrap_or("");
        let target = if location.is_empty() {
            self.path.clone()
        } else if location.starts_with('/') {
            location.to_string()
        } else if location.starts_with('?') {
            format!("{}{location}", self.path_only())
        } else {
            let base = self.path_only();
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        Ok(Url {
            https: self.https,
            host: self.host.clone(),
            port: self.port,
            path: normalize_target(&target),
        })
    }

    /// `scheme://host[:port]` with the port omitted when it is the scheme default.
    pub fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.host_port_header())
    }

    /// The value of a `Host` header: host, bracketed if IPv6, plus `:port` unless default.
    pub fn host_port_header(&self) -> String {
        if self.port == default_port(self.https) {
            self.host_bracketed()
        } else {
            self.authority()
        }
    }

    /// `host:port` with the port always present (CONNECT target, error messages).
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host_bracketed(), self.port)
    }

    /// The host, in brackets when it is an IPv6 literal.
    pub fn host_bracketed(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The URL without its query, for messages (queries may carry signed tokens).
    pub fn without_query(&self) -> String {
        format!("{}{}", self.origin(), self.path_only())
    }

    /// The path without the query.
    fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("/")
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.path)
    }
}

/// The default port of a scheme.
pub fn default_port(https: bool) -> u16 {
    if https {
        443
    } else {
        80
    }
}

/// Splits `host[:port]` / `[v6][:port]`, validating both parts.
fn parse_authority(authority: &str, https: bool) -> std::result::Result<(String, u16), String> {
    if authority.contains('@') {
        return Err("credentials in URLs are not supported".into());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or("unclosed '[' in host")?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 address {v6:?}"));
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("garbage after IPv6 address")?),
        };
        (v6.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    let is_v6 = authority.starts_with('[');
    if !is_v6
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(format!("invalid host {host:?}"));
    }
    let port = match port {
        None | Some("") => default_port(https),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("invalid port {p:?}")),
        },
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// True if `s` starts with `scheme:` (RFC 3986 scheme characters).
fn has_scheme(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once(':') else {
        return false;
    };
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

/// Drops the fragment, removes dot segments, ensures a leading `/`, percent-encodes unsafe bytes.
fn normalize_target(target: &str) -> String {
    let target = target.split('#').next().unwrap_or("");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut out = remove_dot_segments(path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    escape_unsafe(&out)
}

/// RFC 3986 section 5.2.4, on a path that is made absolute first.
fn remove_dot_segments(path: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                stack.pop();
                trailing_slash = i == last;
            }
            s => {
                stack.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::from("/");
    out.push_str(&stack.join("/"));
    if trailing_slash && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// Percent-encodes spaces, control characters and non-ASCII bytes.
fn escape_unsafe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b <= b' ' || b >= 0x7f {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(https: bool, host: &str, port: u16, path: &str) -> Url {
        Url {
            https,
            host: host.into(),
            port,
            path: path.into(),
        }
    }

    #[test]
    fn parse_table() {
        let cases = [
            (
                "https://registry-1.docker.io",
                u(true, "registry-1.docker.io", 443, "/"),
            ),
            (
                "http://localhost:5000/v2/",
                u(false, "localhost", 5000, "/v2/"),
            ),
            (
                "HTTPS://Example.COM:8443/a?b=c#frag",
                u(true, "example.com", 8443, "/a?b=c"),
            ),
            ("http://[::1]:5000/v2/x", u(false, "::1", 5000, "/v2/x")),
            ("https://[fe80::1]/", u(true, "fe80::1", 443, "/")),
            ("http://10.0.0.1?q=1", u(false, "10.0.0.1", 80, "/?q=1")),
            ("http://h/a b", u(false, "h", 80, "/a%20b")),
            ("http://h:/x", u(false, "h", 80, "/x")),
        ];
        for (s, want) in cases {
            assert_eq!(Url::parse(s).unwrap(), want, "{s}");
        }
    }

    #[test]
    fn parse_rejects() {
        for s in [
            "ftp://x/",
            "registry.example.com/v2",
            "http:///x",
            "http://h:99999/",
            "http://h:0/",
            "http://h:-1/",
            "http://[::1/",
            "http://[zz]/",
            "http://user:pw@h/",
            "http://h\r\nX: y/",
        ] {
            assert!(Url::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn display_and_origin() {
        let a = Url::parse("https://h:443/v2/?n=1").unwrap();
        assert_eq!(a.to_string(), "https://h/v2/?n=1");
        assert_eq!(a.origin(), "https://h");
        let b = Url::parse("http://[::1]:5000/v2/").unwrap();
        assert_eq!(b.to_string(), "http://[::1]:5000/v2/");
        assert_eq!(b.origin(), "http://[::1]:5000");
        assert_eq!(b.authority(), "[::1]:5000");
        assert_eq!(Url::parse("http://h:80").unwrap().origin(), "http://h");
    }

    #[test]
    fn join_table() {
        let base = Url::parse("https://reg.io:5000/v2/lib/app/blobs/uploads/?x=1").unwrap();
        let cases = [
            (
                "https://cdn.example/blob?sig=abc",
                "https://cdn.example/blob?sig=abc",
            ),
            ("http://other:8080/p", "http://other:8080/p"),
            ("//cdn.example/b", "https://cdn.example/b"),
            (
                "/v2/lib/app/blobs/uploads/uuid?_state=s",
                "https://reg.io:5000/v2/lib/app/blobs/uploads/uuid?_state=s",
            ),
            (
                "uuid?st=1",
                "https://reg.io:5000/v2/lib/app/blobs/uploads/uuid?st=1",
            ),
            (
                "../manifests/latest",
                "https://reg.io:5000/v2/lib/app/blobs/manifests/latest",
            ),
            (
                "./a/./b/../c",
                "https://reg.io:5000/v2/lib/app/blobs/uploads/a/c",
            ),
            ("?y=2", "https://reg.io:5000/v2/lib/app/blobs/uploads/?y=2"),
            ("", "https://reg.io:5000/v2/lib/app/blobs/uploads/?x=1"),
            ("/a#frag", "https://reg.io:5000/a"),
            ("/../../x", "https://reg.io:5000/x"),
            ("..", "https://reg.io:5000/v2/lib/app/blobs/"),
        ];
        for (loc, want) in cases {
            assert_eq!(base.join(loc).unwrap().to_string(), want, "{loc}");
        }
        assert!(base.join("ftp://x/").is_err());
    }
}
