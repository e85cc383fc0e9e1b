//! The registry conversation as explicit states: the first real request (or a
//! `/v2/` ping, when that request's body cannot be sent twice) brings the 401
//! challenge (Basic, or Bearer via a token from the realm), then requests carry
//! that authorization; redirects followed by hand (credentials never leave the
//! registry's origin), transient failures retried with backoff within the
//! logical transfer's [`Budget`]. Loopback and `--insecure` registries are
//! spoken to in plain HTTP from the first byte (HTTPS only when the server
//! answers plain HTTP with 400, as TLS servers do); small requests that may be
//! sent twice go out pipelined in one flight ([`Registry::request_many`]).

use crate::error::{Context, Error, Kind, Result};
use crate::http::{Body, Client, FlowConfig, IdleConn, LowSpeed, Options, Request, Response, Url};
use crate::reference::Reference;
use crate::registry::auth::{self, Challenge};
use crate::registry::budget::Budget;
use crate::registry::credentials::Credentials;
use std::path::PathBuf;
use std::time::Duration;

/// Transport options every registry command takes.
#[derive(Default, Clone, Debug)]
pub struct TransportOptions {
    /// Extra CA certificate files (`--ca-cert`).
    pub ca_files: Vec<PathBuf>,
    /// Registries to talk to over plain HTTP (`--insecure HOST[:PORT]`).
    pub insecure: Vec<String>,
    /// `--low-speed-limit` / `--low-speed-time`.
    pub low_speed: LowSpeed,
    /// `--mirror`: tried first when reading an image (pull, copy's source, inspect);
    /// never used to push (see `registry::mirrors`).
    pub mirrors: Vec<String>,
    /// `--connections`: how many connections blobs are downloaded ahead on.
    pub connections: Connections,
}

/// `--connections`: how many connections blobs are downloaded ahead on (see
/// `registry::prefetch` and `registry::ramp`).
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connections {
    /// [`Connections::Auto`] for a registry on another machine; none ahead (one
    /// request per blob) for one on this machine, which has no latency to hide.
    #[default]
    Default,
    /// One at first, one more while the last one raised the rate (`auto`).
    Auto,
    /// Exactly this many (1: none ahead, one request per blob).
    Fixed(usize),
}

/// One request of a pipelined flight ([`Registry::request_many`]).
pub struct Call<'a> {
    pub method: &'a str,
    /// Path (and query) on the registry, e.g. `/v2/REPO/blobs/DIGEST`.
    pub path: String,
    pub headers: Vec<(&'a str, &'a str)>,
    /// A small body sent with the head (empty: none).
    pub body: &'a [u8],
}

/// Where the authorization conversation stands.
enum AuthState {
    /// Not pinged yet.
    Unknown,
    /// `/v2/` answered without a challenge.
    Anonymous,
    /// Basic credentials on every request.
    Basic { header: String },
    /// Bearer tokens from `realm`, for the scopes granted so far.
    Bearer {
        realm: String,
        service: Option<String>,
        scopes: Vec<String>,
        token: Option<String>,
    },
}

/// One registry, spoken to on behalf of one set of repository scopes.
pub struct Registry {
    http: Client,
    base: Url,
    name: String,
    creds: Option<Credentials>,
    scopes: Vec<String>,
    state: AuthState,
    low_speed: LowSpeed,
    /// `--connections`.
    connections: Connections,
    /// Loopback and `--insecure` registries, until the scheme is settled: plain
    /// HTTP is used first, HTTPS when the server answers plain HTTP with 400.
    may_fall_back: bool,
}

const MAX_REDIRECTS: usize = 5;
/// How many times one request is sent when it fails transiently (within its budget).
pub const MAX_ATTEMPTS: u32 = 4;
const MAX_ERROR_BODY: u64 = 64 << 10;
const MAX_TOKEN_BODY: u64 = 1 << 20;

impl Registry {
    /// Prepares a conversation with `reference`'s registry; nothing is sent yet.
    pub fn new(
        reference: &Reference,
        creds: Option<Credentials>,
        transport: &TransportOptions,
        scopes: Vec<String>,
    ) -> Result<Registry> {
        Registry::for_host(reference.api_host(), creds, transport, scopes)
    }

    /// Like `new`, for a registry host (`registry-1.docker.io`, `127.0.0.1:5000`).
    pub fn for_host(
        host: &str,
        creds: Option<Credentials>,
        transport: &TransportOptions,
        scopes: Vec<String>,
    ) -> Result<Registry> {
        let may_fall_back = plain_http(host, &transport.insecure);
        let scheme = if may_fall_back { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{host}/"))?;
        let opts = Options {
            extra_ca_files: transport.ca_files.clone(),
            connect_timeout: Duration::from_secs(30),
            io_timeout: transport.low_speed.idle_limit(),
            low_speed: transport.low_speed,
        };
        Ok(Registry {
            http: Client::new(opts)?,
            base,
            name: host.to_string(),
            creds,
            scopes,
            state: AuthState::Unknown,
            low_speed: transport.low_speed,
            connections: transport.connections,
            may_fall_back,
        })
    }

    /// The registry's host as the user should see it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A fresh retry budget for one logical transfer with this registry.
    pub fn budget(&self) -> Budget {
        Budget::new(&self.low_speed)
    }

    /// Pings `/v2/` and settles how to authenticate.
    fn ping(&mut self, budget: &mut Budget) -> Result<()> {
        let url = self.base.join("/v2/")?;
        let resp = self
            .send_retrying(budget, MAX_ATTEMPTS, "GET", &url, &[], &[], true)
            .with_context(|| format!("contact registry {}", self.name))?;
        if self.tls_instead(&resp) {
            resp.discard()?;
            self.use_tls()?;
            return self.ping(budget);
        }
        self.may_fall_back = false;
        match resp.status {
            200..=299 => {
                resp.discard()?;
                self.state = AuthState::Anonymous;
                Ok(())
            }
            401 => self.answer_challenge(budget, resp),
            404 => Err(Error::new(format!(
                "{} does not speak the registry API v2 (GET /v2/ answered 404)",
                self.name
            ))
            .hint("check the registry host name")),
            s => Err(self.status_error(resp, &format!("ping {}", self.name), s)),
        }
    }

    /// A 400 to the first plain-HTTP request of a loopback or `--insecure`
    /// registry: the server speaks TLS (Go's and nginx's TLS servers answer so).
    fn tls_instead(&self, resp: &Response) -> bool {
        self.may_fall_back && resp.status == 400
    }

    /// From now on HTTPS (a server that answered plain HTTP with 400).
    fn use_tls(&mut self) -> Result<()> {
        self.base = Url::parse(&format!("https://{}/", self.name))?;
        self.may_fall_back = false;
        Ok(())
    }

    /// The first request to the registry, sent without authorization: its 401
    /// carries the challenge (no `/v2/` ping first); any other answer means the
    /// registry lets us in anonymously, for now.
    fn first_request(
        &mut self,
        budget: &mut Budget,
        tries: u32,
        call: &Call<'_>,
    ) -> Result<Response> {
        let url = self.base.join(&call.path)?;
        let resp = self
            .send_authorized(budget, tries, call.method, &url, &call.headers, call.body)
            .with_context(|| format!("contact registry {}", self.name))?;
        if self.tls_instead(&resp) {
            resp.discard()?;
            self.use_tls()?;
            return self.request_in(
                budget,
                tries,
                call.method,
                &call.path,
                &call.headers,
                call.body,
            );
        }
        self.may_fall_back = false;
        if resp.status != 401 {
            self.state = AuthState::Anonymous;
            return Ok(resp);
        }
        self.answer_challenge(budget, resp)?;
        self.request_in(
            budget,
            tries,
            call.method,
            &call.path,
            &call.headers,
            call.body,
        )
    }

    /// Sends small requests that may be sent twice (HEAD, GET, POST without a
    /// body) pipelined on one connection and returns the answers in order, bodies
    /// in memory. Answers that need more (a challenge, a redirect, a retry) are
    /// settled and those requests sent once more in one flight; what is still
    /// unsettled then goes one at a time the ordinary way ([`Registry::request_in`]).
    pub fn request_many(
        &mut self,
        budget: &mut Budget,
        calls: &[Call<'_>],
    ) -> Result<Vec<Response>> {
        let mut out: Vec<Option<Response>> = calls.iter().map(|_| None).collect();
        let mut todo: Vec<usize> = (0..calls.len()).collect();
        for _round in 0..2 {
            if todo.is_empty() {
                break;
            }
            let batch: Vec<&Call<'_>> = todo.iter().map(|&i| &calls[i]).collect();
            let answers = match self.pipelined(budget, &batch) {
                Ok(a) => a,
                Err(e) if e.kind() == Kind::Interrupted => return Err(e),
                Err(_) => break, // one at a time below, each retried within the budget
            };
            todo = self.sort_answers(budget, &todo, answers, &mut out)?;
        }
        for i in todo {
            let c = &calls[i];
            out[i] = Some(self.request_in(
                budget,
                MAX_ATTEMPTS,
                c.method,
                &c.path,
                &c.headers,
                c.body,
            )?);
        }
        out.into_iter()
            .map(|r| {
                r.ok_or_else(|| Error::new("internal error: a pipelined request got no answer"))
            })
            .collect()
    }

    /// One flight of `calls` with the authorization held now.
    fn pipelined(&mut self, budget: &mut Budget, calls: &[&Call<'_>]) -> Result<Vec<Response>> {
        crate::signal::check()?;
        budget.attempt();
        let urls = calls
            .iter()
            .map(|c| self.base.join(&c.path))
            .collect::<Result<Vec<Url>>>()?;
        let reqs: Vec<Request<'_>> = calls
            .iter()
            .zip(&urls)
            .map(|(c, url)| Request {
                method: c.method,
                url,
                headers: self.with_authorization(url, &c.headers),
                body: if c.body.is_empty() {
                    Body::Empty
                } else {
                    Body::Bytes(c.body)
                },
                deadline: Some(budget.deadline()),
            })
            .collect();
        self.http.send_all(&reqs)
    }

    /// Keeps the final answers of a flight in `out`; settles a challenge or the
    /// scheme from the others and returns which requests go again.
    fn sort_answers(
        &mut self,
        budget: &mut Budget,
        todo: &[usize],
        answers: Vec<Response>,
        out: &mut [Option<Response>],
    ) -> Result<Vec<usize>> {
        let mut again = Vec::new();
        let (mut challenged, mut to_tls) = (false, false);
        for (&i, resp) in todo.iter().zip(answers) {
            match resp.status {
                400 if self.tls_instead(&resp) => {
                    to_tls = true;
                    resp.discard()?;
                    again.push(i);
                }
                401 if !challenged => {
                    challenged = true;
                    self.settle_challenge(budget, resp)?;
                    again.push(i);
                }
                301..=308 | 401 | 429 | 500..=504 => {
                    resp.discard()?;
                    again.push(i);
                }
                _ => out[i] = Some(resp),
            }
        }
        if to_tls {
            self.use_tls()?;
        } else {
            self.may_fall_back = false;
            if matches!(self.state, AuthState::Unknown) && !challenged {
                self.state = AuthState::Anonymous;
            }
        }
        Ok(again)
    }

    /// A 401 from a flight: the challenge answered, or a token for the scopes it names.
    fn settle_challenge(&mut self, budget: &mut Budget, resp: Response) -> Result<()> {
        self.may_fall_back = false;
        match self.state {
            AuthState::Unknown => self.answer_challenge(budget, resp),
            AuthState::Bearer { .. } => {
                let extra = challenged_scopes(&resp);
                resp.discard()?;
                self.refresh_token(budget, &extra)
            }
            AuthState::Anonymous => {
                resp.discard()?;
                self.state = AuthState::Unknown;
                Ok(())
            }
            AuthState::Basic { .. } => resp.discard(),
        }
    }

    /// Checks that the credentials are accepted: ping, token or Basic, then an
    /// authorized `GET /v2/`.
    pub fn check_login(&mut self) -> Result<()> {
        if self.creds.is_none() {
            return Err(self.needs_credentials());
        }
        self.ping(&mut self.budget())?;
        if matches!(self.state, AuthState::Anonymous) {
            return Ok(());
        }
        let resp = self.request("GET", "/v2/", &[], &[])?;
        match resp.status {
            200..=299 => resp.discard(),
            s => Err(self.status_error(resp, "check credentials", s)),
        }
    }

    /// Sets the auth state from a 401's `WWW-Authenticate`.
    fn answer_challenge(&mut self, budget: &mut Budget, resp: Response) -> Result<()> {
        let challenges: Vec<Challenge> = resp
            .header_all("www-authenticate")
            .filter_map(|h| auth::parse_www_authenticate(h).ok())
            .flatten()
            .collect();
        resp.discard()?;
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer { realm, service, .. } => Some((realm.clone(), service.clone())),
            _ => None,
        });
        if let Some((realm, service)) = bearer {
            self.state = AuthState::Bearer {
                realm,
                service,
                scopes: Vec::new(),
                token: None,
            };
            return self.refresh_token(budget, &[]);
        }
        if challenges
            .iter()
            .any(|c| matches!(c, Challenge::Basic { .. }))
        {
            let Some(c) = &self.creds else {
                return Err(self.needs_credentials());
            };
            self.state = AuthState::Basic {
                header: auth::basic_header(&c.user, &c.secret),
            };
            return Ok(());
        }
        Err(Error::with_kind(
            Kind::Auth,
            format!(
                "{} asks for an authentication scheme barge does not support",
                self.name
            ),
        ))
    }

    fn needs_credentials(&self) -> Error {
        Error::with_kind(Kind::Auth, format!("{} requires credentials", self.name))
            .hint("pass -u USER:PASS, or run `barge login` first")
    }

    /// Fetches a Bearer token covering our scopes plus `extra`.
    fn refresh_token(&mut self, budget: &mut Budget, extra: &[String]) -> Result<()> {
        let AuthState::Bearer {
            realm,
            service,
            scopes,
            ..
        } = &self.state
        else {
            return Ok(());
        };
        let mut want: Vec<String> = self
            .scopes
            .iter()
            .chain(scopes.iter())
            .chain(extra.iter())
            .cloned()
            .collect();
        want.sort();
        want.dedup();
        let url = Url::parse(&auth::token_url(realm, service.as_deref(), &want))
            .with_context(|| format!("token realm of {}", self.name))?;
        let mut headers = Vec::new();
        if let Some(c) = &self.creds {
            headers.push((
                "Authorization".to_string(),
                auth::basic_header(&c.user, &c.secret),
            ));
        }
        let mut resp = self
            .send_retrying(budget, MAX_ATTEMPTS, "GET", &url, &headers, &[], false)
            .with_context(|| format!("get a token from {}", url.origin()))?;
        match resp.status {
            200 => {}
            401 | 403 if self.creds.is_some() => {
                resp.discard()?;
                return Err(Error::with_kind(
                    Kind::Auth,
                    format!("{} refused the credentials", self.name),
                )
                .hint("check the user name and password (or run `barge login` again)"));
            }
            401 | 403 => {
                resp.discard()?;
                return Err(self.needs_credentials());
            }
            s => return Err(self.status_error(resp, "token request", s)),
        }
        let body = resp
            .read_limited(MAX_TOKEN_BODY)
            .context("read token response")?;
        let token = auth::parse_token_response(&body).context("token response")?;
        if let AuthState::Bearer {
            scopes,
            token: slot,
            ..
        } = &mut self.state
        {
            *scopes = want;
            *slot = Some(token.value);
        }
        Ok(())
    }

    /// `headers` as owned pairs, plus Authorization when `url` is the registry's.
    fn with_authorization(&self, url: &Url, headers: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(a) = self.authorization(url) {
            all.push(("Authorization".into(), a));
        }
        all
    }

    /// The Authorization header for a request to `url`, if it goes to the registry itself.
    fn authorization(&self, url: &Url) -> Option<String> {
        if url.origin() != self.base.origin() {
            return None;
        }
        match &self.state {
            AuthState::Basic { header } => Some(header.clone()),
            AuthState::Bearer { token: Some(t), .. } => Some(format!("Bearer {t}")),
            _ => None,
        }
    }

    /// The idle keep-alive connection to the registry, for a [`crate::http::Flow`].
    pub fn take_idle(&mut self) -> Option<IdleConn> {
        let base = self.base.clone();
        self.http.take_idle(&base)
    }

    /// How many connections blobs may be downloaded ahead on (`--connections`).
    pub fn connections(&self) -> Connections {
        self.connections
    }

    /// Whether the registry runs on this machine (`localhost`, 127.x, `::1`).
    pub fn is_local(&self) -> bool {
        is_loopback(&self.name)
    }

    /// What a [`crate::http::Flow`] for `path` needs: its URL, the flow settings and
    /// the Authorization to send (a `HEAD` of `path` settles it if nothing was sent
    /// yet). `None` when a proxy stands in the way.
    pub fn flow_setup(&mut self, path: &str) -> Result<Option<(Url, FlowConfig, Option<String>)>> {
        if matches!(self.state, AuthState::Unknown) {
            // Settle the scheme and the authorization first: one HEAD, answered or not.
            self.request("HEAD", path, &[], &[])?.discard()?;
        }
        if matches!(self.state, AuthState::Unknown) || self.may_fall_back {
            return Ok(None);
        }
        let url = self.base.join(path)?;
        let Some(config) = self.http.flow_config(&url)? else {
            return Ok(None);
        };
        let auth = self.authorization(&url);
        Ok(Some((url, config, auth)))
    }

    /// Sends a request to the registry with authorization, retried within a budget of its own.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        let mut budget = self.budget();
        self.request_in(&mut budget, MAX_ATTEMPTS, method, path, headers, body)
    }

    /// Sends a request within `budget`, at most `tries` times when it fails
    /// transiently; on a 401 with a Bearer challenge (e.g. a scope not yet
    /// granted), gets a new token once.
    pub fn request_in(
        &mut self,
        budget: &mut Budget,
        tries: u32,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        if matches!(self.state, AuthState::Unknown) {
            let call = Call {
                method,
                path: path.to_string(),
                headers: headers.to_vec(),
                body,
            };
            return self.first_request(budget, tries, &call);
        }
        let url = self.base.join(path)?;
        let resp = self.send_authorized(budget, tries, method, &url, headers, body)?;
        if resp.status != 401 {
            return Ok(resp);
        }
        let extra = challenged_scopes(&resp);
        resp.discard()?;
        match self.state {
            AuthState::Bearer { .. } => self.refresh_token(budget, &extra)?,
            AuthState::Anonymous => {
                self.state = AuthState::Unknown;
                self.ping(budget)?;
            }
            _ if self.creds.is_some() => {
                return Err(Error::with_kind(
                    Kind::Auth,
                    format!("{} refused the credentials", self.name),
                )
                .hint("check the user name and password"))
            }
            _ => return Err(self.needs_credentials()),
        }
        let resp = self.send_authorized(budget, tries, method, &url, headers, body)?;
        if resp.status == 401 {
            resp.discard()?;
            return Err(match self.creds {
                Some(_) => Error::with_kind(
                    Kind::Auth,
                    format!("{} denied access with these credentials", self.name),
                )
                .hint("check the user name, password and your rights on the repository"),
                None => self.needs_credentials(),
            });
        }
        Ok(resp)
    }

    /// Sends a request whose body streams from `body` (`len` bytes). A stream
    /// cannot be replayed: one attempt, and a 401 is final (callers have already
    /// talked to this registry, so the token is fresh).
    pub fn request_stream(
        &mut self,
        budget: &mut Budget,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &mut dyn std::io::Read,
        len: u64,
    ) -> Result<Response> {
        if matches!(self.state, AuthState::Unknown) {
            self.ping(budget)?;
        }
        let url = self.base.join(path)?;
        let all = self.with_authorization(&url, headers);
        budget.attempt();
        let req = Request {
            method,
            url: &url,
            headers: all,
            body: Body::Stream { reader: body, len },
            deadline: Some(budget.deadline()),
        };
        let resp = self.http.send(req)?;
        if resp.status == 401 {
            resp.discard()?;
            return Err(
                Error::with_kind(Kind::Auth, format!("{} refused the upload", self.name))
                    .hint("check your rights on the repository"),
            );
        }
        Ok(resp)
    }

    fn send_authorized(
        &mut self,
        budget: &mut Budget,
        tries: u32,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        let all = self.with_authorization(url, headers);
        let follow = method == "GET" || method == "HEAD";
        self.send_retrying(budget, tries, method, url, &all, body, follow)
    }

    /// One logical request: retries transient failures, follows redirects by hand
    /// (Authorization dropped when the redirect leaves the registry's origin).
    #[allow(clippy::too_many_arguments)]
    fn send_retrying(
        &mut self,
        budget: &mut Budget,
        tries: u32,
        method: &str,
        url: &Url,
        headers: &[(String, String)],
        body: &[u8],
        follow: bool,
    ) -> Result<Response> {
        let home = url.origin();
        let mut url = url.clone();
        let mut hops = 0;
        loop {
            let headers = headers_for(&url, &home, headers);
            let resp = self.send_with_backoff(budget, tries, method, &url, headers, body)?;
            if !follow || !matches!(resp.status, 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(Error::new(format!("too many redirects from {}", self.name)));
            }
            let Some(location) = resp.header("location").map(str::to_string) else {
                return Err(Error::new(format!(
                    "{} sent a redirect without a Location",
                    self.name
                )));
            };
            resp.discard()?;
            url = url.join(&location).context("redirect location")?;
        }
    }

    /// One request, sent again after a transient failure or a 429/5xx while
    /// `budget` allows it, at most `tries` times.
    fn send_with_backoff(
        &mut self,
        budget: &mut Budget,
        tries: u32,
        method: &str,
        url: &Url,
        headers: Vec<(String, String)>,
        body: &[u8],
    ) -> Result<Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            crate::signal::check()?;
            budget.attempt();
            let req = Request {
                method,
                url,
                headers: headers.clone(),
                body: if body.is_empty() {
                    Body::Empty
                } else {
                    Body::Bytes(body)
                },
                deadline: Some(budget.deadline()),
            };
            let last = attempt >= tries;
            let wait = match self.http.send(req) {
                Ok(resp) if !last && retryable_status(resp.status) => {
                    let wait = retry_after(&resp).unwrap_or_else(|| backoff(attempt));
                    if !budget.allows_retry(wait) {
                        return Ok(resp);
                    }
                    resp.discard()?;
                    wait
                }
                Ok(resp) => return Ok(resp),
                Err(e) if e.kind() == Kind::Transient && tries > 1 => {
                    let wait = backoff(attempt);
                    if last || !budget.allows_retry(wait) {
                        return Err(budget.give_up(e));
                    }
                    wait
                }
                Err(e) => return Err(e),
            };
            sleep_interruptible(wait)?;
        }
    }

    /// An error for an unexpected status, with the registry's own error text if it sent one.
    pub fn status_error(&self, mut resp: Response, what: &str, status: u16) -> Error {
        let body = resp.read_limited(MAX_ERROR_BODY).unwrap_or_default();
        let detail = registry_error_text(&body).unwrap_or_else(|| resp.reason.clone());
        let kind = match status {
            404 => Kind::NotFound,
            401 | 403 => Kind::Auth,
            500..=599 | 429 => Kind::Transient,
            _ => Kind::Other,
        };
        Error::with_kind(
            kind,
            format!("{what}: {} answered {status} {detail}", self.name),
        )
    }
}

/// Drops Authorization when a redirect leaves the origin the request was meant for.
fn headers_for(url: &Url, home: &str, headers: &[(String, String)]) -> Vec<(String, String)> {
    let same = url.origin() == home;
    headers
        .iter()
        .filter(|(k, _)| same || !k.eq_ignore_ascii_case("authorization"))
        .cloned()
        .collect()
}

/// Scopes named by a Bearer challenge in a 401 (e.g. `insufficient_scope`).
fn challenged_scopes(resp: &Response) -> Vec<String> {
    resp.header_all("www-authenticate")
        .filter_map(|h| auth::parse_www_authenticate(h).ok())
        .flatten()
        .filter_map(|c| match c {
            Challenge::Bearer { scope: Some(s), .. } => {
                Some(s.split(' ').map(str::to_string).collect::<Vec<_>>())
            }
            _ => None,
        })
        .flatten()
        .collect()
}

/// The `message` fields of a registry's `{"errors":[…]}` body.
pub fn registry_error_text(body: &[u8]) -> Option<String> {
    let v = crate::json::parse(body, "error body").ok()?;
    let errors: &Vec<tinyjson::JsonValue> = v
        .get::<std::collections::HashMap<String, tinyjson::JsonValue>>()?
        .get("errors")?
        .get()?;
    let texts: Vec<String> = errors
        .iter()
        .filter_map(|e| {
            let obj: &std::collections::HashMap<String, tinyjson::JsonValue> = e.get()?;
            let code: Option<&String> = obj.get("code").and_then(|c| c.get());
            let msg: Option<&String> = obj.get("message").and_then(|m| m.get());
            match (code, msg) {
                (Some(c), Some(m)) => Some(format!("{c}: {m}")),
                (Some(c), None) => Some(c.clone()),
                (None, Some(m)) => Some(m.clone()),
                _ => None,
            }
        })
        .collect();
    (!texts.is_empty()).then(|| texts.join("; "))
}

fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let secs: u64 = resp.header("retry-after")?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(30)))
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.min(6))
}

/// Waits `d` (a back-off), stopping early on Ctrl-C; the progress line keeps moving.
pub(crate) fn sleep_interruptible(d: Duration) -> Result<()> {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        crate::signal::check()?;
        crate::progress::idle();
        std::thread::sleep(Duration::from_millis(50).min(end - std::time::Instant::now()));
    }
    Ok(())
}

/// Whether `host` (with or without a port) is this machine.
fn is_loopback(host: &str) -> bool {
    let bare = host_without_port(host);
    bare == "localhost"
        || bare == "::1"
        || bare.starts_with("127.") && bare.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Plain HTTP for loopback registries and those named with `--insecure`.
pub fn plain_http(host: &str, insecure: &[String]) -> bool {
    let bare = host_without_port(host);
    if is_loopback(host) {
        return true;
    }
    insecure.iter().any(|i| {
        i == host
            || (!i.contains(':') || i.starts_with('[') && i.ends_with(']'))
                && i.trim_matches(['[', ']']) == bare
    })
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_insecure_hosts_use_plain_http() {
        assert!(plain_http("127.0.0.1:5000", &[]));
        assert!(plain_http("localhost:5000", &[]));
        assert!(plain_http("[::1]:5000", &[]));
        assert!(!plain_http("registry-1.docker.io", &[]));
        assert!(!plain_http("127.example.com", &[]));
        assert!(plain_http("reg.lan:5000", &["reg.lan:5000".into()]));
        assert!(plain_http("reg.lan:5000", &["reg.lan".into()]));
        assert!(!plain_http("reg.lan:5001", &["reg.lan:5000".into()]));
    }

    #[test]
    fn registry_errors_are_summarised() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            registry_error_text(body).as_deref(),
            Some("MANIFEST_UNKNOWN: manifest unknown")
        );
        assert_eq!(registry_error_text(b"not json"), None);
    }
}
