//! Proxy selection from `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`, and the `CONNECT` tunnel.
//!
//! The environment is read once into a [`ProxyEnv`]; choosing a proxy for a
//! URL is a pure function of that value so it can be tested without touching
//! the process environment. Proxy credentials never appear in error messages.

use std::io::{BufReader, Write};
use std::net::IpAddr;

use super::base64::base64_encode;
use super::conn::{io_error, Wire};
use super::response::read_head;
use super::url::Url;
use crate::error::{Error, Kind, Result};

/// The proxy-related environment variables, as read at client creation.
#[derive(Debug, Clone, Default)]
pub struct ProxyEnv {
    /// `HTTPS_PROXY` (or `https_proxy`): used for https targets.
    pub https_proxy: Option<String>,
    /// `HTTP_PROXY` (or `http_proxy`): used for plain-http targets.
    pub http_proxy: Option<String>,
    /// `NO_PROXY` (or `no_proxy`): comma-separated hosts that bypass the proxy.
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    /// Reads the variables; the upper-case name wins, empty values count as unset.
    pub fn from_env() -> ProxyEnv {
        ProxyEnv {
            https_proxy: env_either("HTTPS_PROXY", "https_proxy"),
            http_proxy: env_either("HTTP_PROXY", "http_proxy"),
            no_proxy: env_either("NO_PROXY", "no_proxy"),
        }
    }
}

/// The first non-empty value of two environment variables.
fn env_either(upper: &str, lower: &str) -> Option<String> {
    [upper, lower]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
}

/// A plain-http proxy to send requests through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proxy {
    /// Proxy host (IPv6 without brackets).
    pub host: String,
    /// Proxy port.
    pub port: u16,
    /// Complete `Proxy-Authorization` value (`Basic ...`), if the URL had credentials.
    pub authorization: Option<String>,
}

impl Proxy {
    /// `host:port` of the proxy, for messages and connection keys.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The proxy to use for `url`, if any.
pub(crate) fn proxy_for(env: &ProxyEnv, url: &Url) -> Result<Option<Proxy>> {
    let setting = if url.https {
        &env.https_proxy
    } else {
        &env.http_proxy
    };
    let Some(setting) = setting.as_deref() else {
        return Ok(None);
    };
    if is_loopback(&url.host) || no_proxy_matches(env.no_proxy.as_deref(), &url.host, url.port) {
        return Ok(None);
    }
    let var = if url.https {
        "HTTPS_PROXY"
    } else {
        "HTTP_PROXY"
    };
    parse_proxy_url(setting)
        .map(Some)
        .map_err(|e| e.context(format!("invalid {var}")))
}

/// True for hosts that are never proxied: 127.0.0.0/8, `::1` and `localhost`.
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a `NO_PROXY` list says `host:port` should bypass the proxy.
///
/// Entries are comma-separated: `*` (everything), a domain (matches itself
/// and its subdomains, with or without a leading dot), an IP address or a
/// CIDR network; names and addresses may carry `:port` (IPv6 in brackets for
/// that) to restrict the match.
pub(crate) fn no_proxy_matches(no_proxy: Option<&str>, host: &str, port: u16) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    no_proxy
        .unwrap_or("")
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .any(|entry| entry_matches(&entry, &host, port))
}

/// One `NO_PROXY` entry against a lower-cased host.
fn entry_matches(entry: &str, host: &str, port: u16) -> bool {
    if entry == "*" {
        return true;
    }
    if let Some((net, bits)) = entry.split_once('/') {
        return cidr_contains(net, bits, host);
    }
    let (name, entry_port) = split_entry_port(entry);
    if entry_port.is_some_and(|p| p != port) {
        return false;
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return host.parse::<IpAddr>().is_ok_and(|h| h == ip);
    }
    let name = name.trim_start_matches('.').trim_end_matches('.');
    !name.is_empty() && (host == name || host.ends_with(&format!(".{name}")))
}

/// Whether the IP address `host` lies in the network `net`/`bits` (e.g. `10.0.0.0/8`).
fn cidr_contains(net: &str, bits: &str, host: &str) -> bool {
    let (Ok(net), Ok(bits), Ok(host)) = (
        net.parse::<IpAddr>(),
        bits.parse::<u32>(),
        host.parse::<IpAddr>(),
    ) else {
        return false;
    };
    let masked = |a: u128, width: u32| {
        if bits == 0 {
            0
        } else {
            a >> (width - bits.min(width))
        }
    };
    match (net, host) {
        (IpAddr::V4(n), IpAddr::V4(h)) if bits <= 32 => {
            masked(u32::from(n).into(), 32) == masked(u32::from(h).into(), 32)
        }
        (IpAddr::V6(n), IpAddr::V6(h)) if bits <= 128 => {
            masked(u128::from(n), 128) == masked(u128::from(h), 128)
        }
        _ => false,
    }
}

/// Splits `host[:port]`, `[v6][:port]` or a bare IPv6 address.
fn split_entry_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((v6, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (v6, port);
        }
        return (entry, None);
    }
    if entry.parse::<IpAddr>().is_ok() {
        return (entry, None);
    }
    match entry.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(n) => (h, Some(n)),
            Err(_) => (entry, None),
        },
        None => (entry, None),
    }
}

/// Parses `[http://][user[:pass]@]host[:port][/]`; https proxies are refused.
pub(crate) fn parse_proxy_url(s: &str) -> Result<Proxy> {
    let s = s.trim();
    let rest = match s.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(Error::new("https:// proxies are not supported").hint(
                "use an http:// proxy URL (https targets are still tunnelled with CONNECT)",
            ));
        }
        Some((scheme, _)) => {
            return Err(Error::new(format!(
                "proxy scheme {scheme:?} is not supported (only http://)"
            )))
        }
        None => s,
    };
    let authority = rest.split('/').next().unwrap_or("");
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let url = Url::parse(&format!("http://{hostport}/"))
        .map_err(|_| Error::new(format!("cannot parse proxy address {hostport:?}")))?;
    let authorization = userinfo.map(|u| {
        let (user, pass) = u.split_once(':').unwrap_or((u, ""));
        let creds = [percent_decode(user), b":".to_vec(), percent_decode(pass)].concat();
        format!("Basic {}", base64_encode(&creds))
    });
    Ok(Proxy {
        host: url.host,
        port: url.port,
        authorization,
    })
}

/// Decodes `%XX` escapes; malformed escapes are kept literally.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Asks the proxy on `tcp` to open a tunnel to `target`; returns the stream once it is open.
pub(crate) fn connect_tunnel(tcp: Wire, proxy: &Proxy, target: &Url) -> Result<Wire> {
    let what = || {
        format!(
            "proxy {} tunnel to {}",
            proxy.authority(),
            target.authority()
        )
    };
    let mut head = format!(
        "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\nUser-Agent: {1}\r\n",
        target.authority(),
        super::USER_AGENT
    );
    if let Some(auth) = &proxy.authorization {
        head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    let mut tcp = tcp;
    tcp.write_all(head.as_bytes())
        .and_then(|()| tcp.flush())
        .map_err(|e| io_error(e).context(what()))?;
    let mut reader = BufReader::new(tcp);
    let resp = read_head(&mut reader).map_err(|e| e.into_error().context(what()))?;
    if !(200..300).contains(&resp.status) {
        return Err(tunnel_refused(resp.status, &resp.reason).context(what()));
    }
    if !reader.buffer().is_empty() {
        return Err(Error::new("proxy sent data before the tunnel was used").context(what()));
    }
    Ok(reader.into_inner())
}

/// The error for a non-2xx answer to CONNECT.
fn tunnel_refused(status: u16, reason: &str) -> Error {
    let msg = format!("proxy answered {status} {reason}");
    match status {
        407 => Error::with_kind(Kind::Auth, msg)
            .hint("put the proxy credentials in the proxy URL: http://user:password@host:port"),
        502..=504 => Error::with_kind(Kind::Transient, msg),
        _ => Error::new(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_table() {
        let cases: &[(&str, &str, u16, bool)] = &[
            ("*", "anything.example", 443, true),
            ("example.com", "example.com", 443, true),
            ("example.com", "reg.example.com", 443, true),
            (".example.com", "reg.example.com", 443, true),
            (".example.com", "example.com", 443, true),
            ("example.com", "badexample.com", 443, false),
            ("example.com", "example.org", 443, false),
            ("a.com, b.com ,c.com", "x.b.com", 80, true),
            ("EXAMPLE.com", "reg.example.com", 80, true),
            ("example.com:5000", "reg.example.com", 5000, true),
            ("example.com:5000", "reg.example.com", 443, false),
            ("10.1.2.3", "10.1.2.3", 80, true),
            ("10.1.2.3", "10.1.2.4", 80, false),
            ("10.1.2.3:8080", "10.1.2.3", 8080, true),
            ("10.1.2.3:8080", "10.1.2.3", 80, false),
            ("fd00::1", "fd00::1", 80, true),
            ("[fd00::1]:5000", "fd00::1", 5000, true),
            ("[fd00::1]:5000", "fd00::1", 5001, false),
            ("", "example.com", 80, false),
            (",,", "example.com", 80, false),
            ("10.0.0.0/8", "10.200.3.4", 80, true),
            ("10.0.0.0/8", "11.0.0.1", 80, false),
            ("192.168.1.0/24", "192.168.1.77", 80, true),
            ("192.168.1.0/24", "192.168.2.1", 80, false),
            ("0.0.0.0/0", "8.8.8.8", 80, true),
            ("fd00::/8", "fd12::1", 80, true),
            ("fd00::/8", "fe80::1", 80, false),
            ("10.0.0.0/8", "example.com", 80, false),
            ("10.0.0.0/33", "10.0.0.1", 80, false),
            (".", "example.com", 80, false),
        ];
        for (list, host, port, want) in cases {
            assert_eq!(
                no_proxy_matches(Some(list), host, *port),
                *want,
                "{list:?} {host}:{port}"
            );
        }
        assert!(!no_proxy_matches(None, "example.com", 80));
    }

    #[test]
    fn loopback_never_proxied() {
        let env = ProxyEnv {
            https_proxy: Some("http://proxy:3128".into()),
            http_proxy: Some("http://proxy:3128".into()),
            no_proxy: None,
        };
        for u in [
            "http://127.0.0.1:5000/",
            "http://127.8.9.1/",
            "https://localhost:5000/",
            "http://[::1]:5000/",
        ] {
            assert_eq!(
                proxy_for(&env, &Url::parse(u).unwrap()).unwrap(),
                None,
                "{u}"
            );
        }
        let p = proxy_for(&env, &Url::parse("https://reg.example/").unwrap()).unwrap();
        assert_eq!(p.unwrap().authority(), "proxy:3128");
    }

    #[test]
    fn proxy_chosen_by_scheme() {
        let env = ProxyEnv {
            https_proxy: Some("http://sp:1".into()),
            http_proxy: None,
            no_proxy: Some("internal".into()),
        };
        let https = Url::parse("https://r.example/").unwrap();
        let http = Url::parse("http://r.example/").unwrap();
        let internal = Url::parse("https://r.internal/").unwrap();
        assert_eq!(proxy_for(&env, &https).unwrap().unwrap().host, "sp");
        assert_eq!(proxy_for(&env, &http).unwrap(), None);
        assert_eq!(proxy_for(&env, &internal).unwrap(), None);
    }

    #[test]
    fn proxy_url_parsing() {
        let p = parse_proxy_url("http://us%40er:p%3Ass@proxy.corp:8080/").unwrap();
        assert_eq!(p.host, "proxy.corp");
        assert_eq!(p.port, 8080);
        assert_eq!(
            p.authorization.as_deref(),
            Some(format!("Basic {}", base64_encode(b"us@er:p:ss")).as_str())
        );
        let bare = parse_proxy_url("proxy.corp:3128").unwrap();
        assert_eq!(
            (bare.host.as_str(), bare.port, bare.authorization),
            ("proxy.corp", 3128, None)
        );
        let e = parse_proxy_url("https://user:secret@proxy:443").unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
        assert!(!e.to_string().contains("secret"));
        let e = parse_proxy_url("socks5://user:secret@proxy:1080").unwrap_err();
        assert!(!e.to_string().contains("secret"));
        let e = parse_proxy_url("http://user:secret@pro xy:1080").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
