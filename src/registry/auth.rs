//! Registry authentication: WWW-Authenticate challenges, Bearer token fetch, Basic.
//!
//! Pure pieces of the conversation: parsing a 401's `WWW-Authenticate` header (RFC 7235),
//! building the token request URL (Docker's token authentication specification), reading
//! the token response, and the Basic `Authorization` value. No I/O here.

use crate::error::{Context, Error, Result};
use crate::http::base64_encode;
use crate::json;
use std::fmt;

/// One challenge from a `WWW-Authenticate` header that barge can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Send `Authorization: Basic …` to the registry itself.
    Basic { realm: String },
    /// Fetch a token from `realm` and send `Authorization: Bearer …`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// A token from the token service. Debug does not show its value.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    /// Lifetime in seconds, when the service says.
    pub expires_in: Option<u64>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// A scheme with its parameters (names lowercased), before interpretation.
#[derive(Debug, PartialEq)]
struct RawChallenge {
    scheme: String,
    params: Vec<(String, String)>,
}

/// Parses a `WWW-Authenticate` value into the challenges barge supports (Basic, Bearer),
/// in the order given. Unknown schemes are skipped; if nothing usable remains, it is an error.
pub fn parse_www_authenticate(header: &str) -> Result<Vec<Challenge>> {
    let raw = parse_challenges(header)
        .with_context(|| format!("invalid WWW-Authenticate header {header:?}"))?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for c in raw {
        let param = |name: &str| {
            c.params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        match c.scheme.to_ascii_lowercase().as_str() {
            "basic" => out.push(Challenge::Basic {
                realm: param("realm").unwrap_or_default(),
            }),
            "bearer" => {
                let Some(realm) = param("realm").filter(|r| !r.is_empty()) else {
                    return Err(Error::new(format!(
                        "registry asked for a Bearer token but gave no realm: {header:?}"
                    )));
                };
                out.push(Challenge::Bearer {
                    realm,
                    service: param("service"),
                    scope: param("scope"),
                });
            }
            _ => skipped.push(c.scheme),
        }
    }
    if out.is_empty() {
        let what = if skipped.is_empty() {
            "no challenge".to_string()
        } else {
            skipped.join(", ")
        };
        return Err(Error::new(format!(
            "unsupported authentication scheme ({what}): barge supports Basic and Bearer"
        )));
    }
    Ok(out)
}

/// A cursor over the header's characters.
struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.pos..).and_then(|r| r.chars().next())
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    /// Skips whitespace and empty list elements (`, ,`).
    fn skip_ws_commas(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | ',')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or_default()
    }

    /// An unquoted value: a token, read leniently up to the next comma or space (some
    /// servers send unquoted URLs; token68 padding `==` ends up here too, harmlessly).
    fn unquoted(&mut self) -> &'a str {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c != ',' && c != ' ' && c != '\t' && c != '"')
        {
            self.bump();
        }
        self.s.get(start..self.pos).unwrap_or_default()
    }

    fn quoted(&mut self) -> Result<String> {
        self.bump(); // the opening quote
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(Error::new("unterminated quoted string")),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some(c) => out.push(c),
                    None => return Err(Error::new("unterminated quoted string")),
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// After a name: is the next non-space character `=` (a parameter) rather than a new
    /// scheme or token68? Leaves the position after `=` when it is.
    fn eat_equals(&mut self) -> bool {
        let save = self.pos;
        self.skip_ws();
        if self.peek() == Some('=') {
            self.pos += 1;
            true
        } else {
            self.pos = save;
            false
        }
    }
}

/// RFC 7235 `1#challenge`: schemes followed by `name=value` parameters (token or quoted
/// string), where commas separate both parameters and challenges.
fn parse_challenges(header: &str) -> Result<Vec<RawChallenge>> {
    let mut lx = Lexer { s: header, pos: 0 };
    let mut out: Vec<RawChallenge> = Vec::new();
    loop {
        lx.skip_ws_commas();
        if lx.peek().is_none() {
            break;
        }
        let scheme = lx.token();
        if scheme.is_empty() {
            return Err(Error::new(format!(
                "unexpected character {:?}",
                lx.peek().unwrap_or(' ')
            )));
        }
        let mut current = RawChallenge {
            scheme: scheme.to_string(),
            params: Vec::new(),
        };
        lx.skip_ws();
        parse_params(&mut lx, &mut current)?;
        out.push(current);
    }
    Ok(out)
}

/// Reads parameters until the next scheme (a token not followed by `=`) or the end.
fn parse_params(lx: &mut Lexer, c: &mut RawChallenge) -> Result<()> {
    loop {
        lx.skip_ws_commas();
        let save = lx.pos;
        let name = lx.token();
        if name.is_empty() {
            if lx.peek().is_none() {
                return Ok(());
            }
            // token68 characters that are not tchars ('/', '='): skip the token68.
            let before = lx.pos;
            skip_token68(lx);
            if lx.pos == before {
                let c = lx.peek().unwrap_or(' ');
                return Err(Error::new(format!("unexpected character {c:?}")));
            }
            continue;
        }
        if !lx.eat_equals() {
            // A new challenge begins here (or a bare token68, which we ignore when it
            // directly follows the scheme).
            if c.params.is_empty() && matches!(lx.peek(), Some('/') | None | Some(',')) {
                skip_token68(lx);
                continue;
            }
            lx.pos = save;
            return Ok(());
        }
        lx.skip_ws();
        let value = match lx.peek() {
            Some('"') => lx.quoted()?,
            _ => lx.unquoted().to_string(),
        };
        c.params.push((name.to_ascii_lowercase(), value));
    }
}

fn skip_token68(lx: &mut Lexer) {
    while lx
        .peek()
        .is_some_and(|c| c.is_ascii_alphanumeric() || "-._~+/=".contains(c))
    {
        lx.pos += 1;
    }
}

/// The scope string of Docker's token spec: `repository:library/debian:pull` (actions
/// joined by commas: `pull,push`).
pub fn scope(repository: &str, actions: &[&str]) -> String {
    format!("repository:{repository}:{}", actions.join(","))
}

/// The token request URL: the realm with `service` and one `scope` parameter per scope
/// appended (to the realm's own query, if it has one), percent-encoded.
pub fn token_url(realm: &str, service: Option<&str>, scopes: &[String]) -> String {
    let mut url = realm.to_string();
    let mut sep = if realm.contains('?') { '&' } else { '?' };
    let mut add = |name: &str, value: &str| {
        url.push(sep);
        url.push_str(name);
        url.push('=');
        url.push_str(&query_encode(value));
        sep = '&';
    };
    if let Some(s) = service {
        add("service", s);
    }
    for s in scopes {
        add("scope", s);
    }
    url
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn query_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a token service's JSON answer: `token`, else `access_token` (OAuth2 style).
pub fn parse_token_response(body: &[u8]) -> Result<Token> {
    let v = json::parse(body, "token response")?;
    json::as_object(&v, "token response")?;
    let pick = |k| json::opt_str(&v, k).map(|t| t.filter(|t| !t.is_empty()));
    let token = match pick("token").context("token response")? {
        Some(t) => t,
        None => pick("access_token")
            .context("token response")?
            .ok_or_else(|| {
                Error::new("token response has neither \"token\" nor \"access_token\"")
            })?,
    };
    // A token goes into a header: refuse anything that could break it.
    if token.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(Error::new(
            "token response: the token contains invalid characters",
        ));
    }
    let expires_in = json::opt_u64(&v, "expires_in").unwrap_or(None);
    Ok(Token {
        value: token.to_string(),
        expires_in,
    })
}

/// The `Authorization` value for Basic auth: `Basic base64(user:pass)`.
pub fn basic_header(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{pass}").as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
        Challenge::Bearer {
            realm: realm.into(),
            service: service.map(Into::into),
            scope: scope.map(Into::into),
        }
    }

    #[test]
    fn docker_hub_challenge() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#;
        assert_eq!(
            parse_www_authenticate(h).unwrap(),
            vec![bearer(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                Some("repository:library/debian:pull")
            )]
        );
    }

    #[test]
    fn real_world_variants() {
        let cases: Vec<(&str, Vec<Challenge>)> = vec![
            // GHCR.
            (
                r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:user/image:pull""#,
                vec![bearer(
                    "https://ghcr.io/token",
                    Some("ghcr.io"),
                    Some("repository:user/image:pull"),
                )],
            ),
            // Quay: no scope on the ping.
            (
                r#"Bearer realm="https://quay.io/v2/auth",service="quay.io""#,
                vec![bearer("https://quay.io/v2/auth", Some("quay.io"), None)],
            ),
            // distribution with htpasswd.
            (
                r#"Basic realm="Registry Realm""#,
                vec![Challenge::Basic {
                    realm: "Registry Realm".into(),
                }],
            ),
            // Scheme and parameter names are case-insensitive; spaces around '=' and ','.
            (
                r#"BEARER Realm = "https://a/t" , Service=reg"#,
                vec![bearer("https://a/t", Some("reg"), None)],
            ),
            // A push scope has a comma inside the quotes; an error parameter is ignored.
            (
                r#"Bearer realm="https://a/t",service="s",scope="repository:x/y:pull,push",error="insufficient_scope""#,
                vec![bearer(
                    "https://a/t",
                    Some("s"),
                    Some("repository:x/y:pull,push"),
                )],
            ),
            // Several challenges in one header, unknown ones skipped.
            (
                r#"Negotiate abc==, Basic realm="r", Bearer realm="https://a/t",service="s""#,
                vec![
                    Challenge::Basic { realm: "r".into() },
                    bearer("https://a/t", Some("s"), None),
                ],
            ),
            (
                r#"Digest realm="x", nonce="y", qop="auth", Basic realm="b""#,
                vec![Challenge::Basic { realm: "b".into() }],
            ),
            // Escapes inside quoted strings.
            (
                r#"Basic realm="a \"quoted\" \\ realm""#,
                vec![Challenge::Basic {
                    realm: r#"a "quoted" \ realm"#.into(),
                }],
            ),
            // Basic without realm.
            (
                "Basic",
                vec![Challenge::Basic {
                    realm: String::new(),
                }],
            ),
            // Unquoted values, even URLs.
            (
                "Bearer realm=https://h:8443/token?a=b,service=reg",
                vec![bearer("https://h:8443/token?a=b", Some("reg"), None)],
            ),
            // Token68 right after a scheme, then another challenge.
            (
                r#"Foo dG9rZW4=, Basic realm="z""#,
                vec![Challenge::Basic { realm: "z".into() }],
            ),
        ];
        for (h, want) in cases {
            assert_eq!(
                parse_www_authenticate(h).unwrap_or_else(|e| panic!("{h}: {e}")),
                want,
                "{h}"
            );
        }
    }

    #[test]
    fn bad_headers() {
        let cases = [
            ("", "unsupported authentication scheme (no challenge)"),
            ("Negotiate", "unsupported authentication scheme (Negotiate)"),
            (r#"Basic realm="open"#, "unterminated quoted string"),
            (r#"Bearer service="s""#, "gave no realm"),
            ("\"x\"", "unexpected character"),
            ("Basic \"x\"", "unexpected character"),
            ("Basic realm=\"a\" @", "unexpected character"),
        ];
        for (h, want) in cases {
            let e = parse_www_authenticate(h).unwrap_err().to_string();
            assert!(e.contains(want), "{h:?}: {e}");
        }
    }

    #[test]
    fn scope_and_token_url() {
        assert_eq!(
            scope("library/debian", &["pull"]),
            "repository:library/debian:pull"
        );
        assert_eq!(scope("x/y", &["pull", "push"]), "repository:x/y:pull,push");
        let scopes = vec![scope("a/b", &["pull", "push"]), scope("c", &["pull"])];
        assert_eq!(
            token_url("https://auth.docker.io/token", Some("registry.docker.io"), &scopes),
            "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Aa%2Fb%3Apull%2Cpush&scope=repository%3Ac%3Apull"
        );
        assert_eq!(
            token_url("https://h/t?x=1", None, &[scope("a", &["pull"])]),
            "https://h/t?x=1&scope=repository%3Aa%3Apull"
        );
        assert_eq!(
            token_url("http://h/t", Some("a b&c"), &[]),
            "http://h/t?service=a%20b%26c"
        );
    }

    #[test]
    fn token_responses() {
        let t = parse_token_response(
            br#"{"token":"abc","expires_in":300,"issued_at":"2024-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!((t.value.as_str(), t.expires_in), ("abc", Some(300)));
        let t = parse_token_response(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!((t.value.as_str(), t.expires_in), ("xyz", None));
        // Both: token wins; an empty token falls back.
        let t = parse_token_response(br#"{"token":"a","access_token":"b"}"#).unwrap();
        assert_eq!(t.value, "a");
        let t = parse_token_response(br#"{"token":"","access_token":"b"}"#).unwrap();
        assert_eq!(t.value, "b");
        let e = parse_token_response(br#"{"expires_in":1}"#).unwrap_err();
        assert_eq!(
            e.message(),
            "token response has neither \"token\" nor \"access_token\""
        );
        assert!(parse_token_response(b"<html>").is_err());
        assert!(parse_token_response(br#"{"token":"a\nb"}"#).is_err());
        assert!(parse_token_response(br#"{"token":5}"#).is_err());
        assert!(!format!("{t:?}").contains("\"b\""));
        assert!(format!("{t:?}").contains("redacted"));
    }

    #[test]
    fn basic_header_encodes() {
        assert_eq!(
            basic_header("aladdin", "opensesame"),
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l"
        );
        assert_eq!(basic_header("u", "p:w"), "Basic dTpwOnc=");
    }

    #[test]
    fn random_headers_never_panic_or_hang() {
        let alphabet = "Basic Bearer realm=\"\\,=/ a:b\té";
        for s in crate::testutil::random_strings(alphabet, 0x2545_f491_4f6c_dd1d, 40, 20_000) {
            let _ = parse_www_authenticate(&s);
        }
    }
}
