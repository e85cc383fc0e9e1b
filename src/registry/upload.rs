//! Writing to a repository: blob existence checks, cross-repository mounts,
//! uploads, manifests.
//!
//! Existence checks ([`blob_sizes`]) and session starts or mounts ([`begin_all`])
//! for many blobs go out pipelined, one flight each.
//!
//! An upload is a small state machine ([`SessionState`], in `session.rs`), driven
//! by [`Upload::send`]:
//! `Closed` opens a session (POST) → `Open { location, offset }` sends a blob of
//! up to 8 MiB with the committing `PUT ?digest=` (one request), a larger one as
//! one streamed PATCH of all the rest (the source read as it goes out, no
//! stop-and-wait) and then the committing `PUT ?digest=` → `Committed`.
//! A request that fails midway leaves the state `Unsure`: the session is asked where
//! it stands (GET location → `Range`) and the upload goes on from there. A registry
//! that dropped the session (distribution does after a connection reset during a
//! PATCH: 404 `BLOB_UPLOAD_INVALID`/`BLOB_UPLOAD_UNKNOWN`) sends it back to `Closed`,
//! and a new session starts over from byte 0 (a few times). Failures without
//! progress are retried within the upload's [`Budget`].

use crate::bail;
use crate::digest::Digest;
use crate::error::{Error, Kind, Result};
use crate::http::Response;
use crate::registry::budget::Budget;
use crate::registry::client::{sleep_interruptible, Call, Registry, MAX_ATTEMPTS};
use crate::registry::session::{Answer, SessionState};
use crate::registry::source::BlobSource;
use std::io::Read;
use std::time::{Duration, Instant};

/// Chunks are read into memory one at a time; this bounds push memory.
pub const CHUNK: usize = 8 << 20;
/// The largest chunk a registry's `OCI-Chunk-Min-Length` may ask for.
const MAX_CHUNK: usize = 64 << 20;
/// Failed steps in a row (without progress) before the upload gives up.
const MAX_FAILURES: u32 = 5;
/// Steps in a row, failed or not, without progress before the upload gives up.
const MAX_IDLE_STEPS: u32 = 16;
/// Sessions one blob may open (the first and the restarts after a lost one).
const MAX_SESSIONS: u32 = 4;

/// What a mount attempt gave.
pub enum Mount {
    /// The registry linked the blob from the other repository: nothing to upload.
    Mounted,
    /// It could not; here is an ordinary upload session instead.
    Session(Upload),
}

/// The blob being sent: where its bytes come from, and the chunk of it held in
/// memory (`[start, start + len)`, one chunk at most).
struct Blob<'d> {
    data: &'d mut dyn BlobSource,
    digest: &'d Digest,
    size: u64,
    buf: Vec<u8>,
    start: u64,
    len: usize,
    /// Offset of the next byte the source gives.
    source_at: u64,
}

impl<'d> Blob<'d> {
    fn new(data: &'d mut dyn BlobSource, digest: &'d Digest, size: u64) -> Blob<'d> {
        Blob {
            data,
            digest,
            size,
            buf: Vec::new(),
            start: 0,
            len: 0,
            source_at: 0,
        }
    }

    /// Makes room for chunks of `len` bytes (dropping what is held if the size changes).
    fn resize(&mut self, len: usize) {
        if self.buf.len() != len {
            self.buf = vec![0; len];
            self.len = 0;
        }
    }

    /// `want` bytes from `offset` (held already, or read from the source, rewound if needed).
    fn get(&mut self, offset: u64, want: usize) -> Result<&[u8]> {
        let held = self.start + self.len as u64;
        if offset < self.start || offset + want as u64 > held {
            if self.source_at != offset {
                self.data.rewind(offset).map_err(source_error)?;
            }
            read_full(self.data, &mut self.buf[..want]).map_err(source_error)?;
            (self.start, self.len, self.source_at) = (offset, want, offset + want as u64);
        }
        let from = (offset - self.start) as usize;
        Ok(&self.buf[from..from + want])
    }

    /// Everything from `offset` to the end: what is held, then the source from there.
    /// What is held is forgotten (the source will have moved on).
    fn rest_from(&mut self, offset: u64) -> Result<Box<dyn Read + '_>> {
        let held = self.start + self.len as u64;
        let from = usize::try_from(offset.saturating_sub(self.start)).unwrap_or(usize::MAX);
        let kept = (self.start <= offset && offset < held).then_some(from..self.len);
        (self.len, self.source_at) = (0, u64::MAX);
        match kept {
            Some(range) => Ok(Box::new((&self.buf[range]).chain(&mut *self.data))),
            None => {
                self.data.rewind(offset).map_err(source_error)?;
                Ok(Box::new(&mut *self.data))
            }
        }
    }
}

/// One blob going up: the session state, the budget and what has been reported.
pub struct Upload {
    repo: String,
    state: SessionState,
    min_chunk: usize,
    /// The registry refused PATCH: the blob goes in one streamed PUT.
    no_patch: bool,
    sessions: u32,
    failures: u32,
    idle_steps: u32,
    budget: Budget,
    /// Bytes reported to the progress callback (never goes back).
    reported: u64,
    /// The most this session has been confirmed to hold: only bytes beyond it are
    /// progress, so a registry that keeps taking the offset back cannot keep the
    /// upload going forever.
    high: u64,
    /// Why the last request failed (said when the upload gives up on new sessions).
    last_failure: Option<String>,
}

/// [`blob_size`] within a transfer's budget.
fn blob_size_in(
    reg: &mut Registry,
    budget: &mut Budget,
    repo: &str,
    digest: &Digest,
) -> Result<Option<u64>> {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let resp = reg.request_in(budget, MAX_ATTEMPTS, "HEAD", &path, &[], &[])?;
    match resp.status {
        200 => {
            let size = resp.content_length();
            resp.discard()?;
            Ok(size.or(Some(0)))
        }
        404 => {
            resp.discard()?;
            Ok(None)
        }
        s => Err(reg.status_error(resp, &format!("check blob {digest}"), s)),
    }
}

/// HEADs for all `digests` in one pipelined flight: `Some(size)` for each blob
/// the repository `repo` has, `None` for the others (in the order given).
pub fn blob_sizes(reg: &mut Registry, repo: &str, digests: &[Digest]) -> Result<Vec<Option<u64>>> {
    let calls: Vec<Call<'_>> = digests
        .iter()
        .map(|d| Call {
            method: "HEAD",
            path: format!("/v2/{repo}/blobs/{d}"),
            headers: Vec::new(),
            body: &[],
        })
        .collect();
    let answers = reg.request_many(&mut reg.budget(), &calls)?;
    digests
        .iter()
        .zip(answers)
        .map(|(d, resp)| head_answer(reg, resp, d))
        .collect()
}

/// What a HEAD of a blob says: its size when it is there.
fn head_answer(reg: &Registry, resp: Response, digest: &Digest) -> Result<Option<u64>> {
    match resp.status {
        200 => {
            let size = resp.content_length();
            resp.discard()?;
            Ok(size.or(Some(0)))
        }
        404 => {
            resp.discard()?;
            Ok(None)
        }
        s => Err(reg.status_error(resp, &format!("check blob {digest}"), s)),
    }
}

/// Starts the uploads of several blobs to `repo` in one pipelined flight: for
/// each `(digest, Some(from))` a mount from repository `from` of the same
/// registry, for each `(digest, None)` a new session. In the order given.
pub fn begin_all(
    reg: &mut Registry,
    repo: &str,
    wants: &[(&Digest, Option<&str>)],
) -> Result<Vec<Mount>> {
    let calls: Vec<Call<'_>> = wants
        .iter()
        .map(|(d, from)| Call {
            method: "POST",
            path: match from {
                Some(from) => format!("/v2/{repo}/blobs/uploads/?mount={d}&from={from}"),
                None => format!("/v2/{repo}/blobs/uploads/"),
            },
            headers: vec![("Content-Length", "0")],
            body: &[],
        })
        .collect();
    let answers = reg.request_many(&mut reg.budget(), &calls)?;
    wants
        .iter()
        .zip(answers)
        .map(|((d, from), resp)| began(reg, repo, resp, d, *from))
        .collect()
}

/// What a mount or session POST gave.
fn began(
    reg: &Registry,
    repo: &str,
    resp: Response,
    digest: &Digest,
    from: Option<&str>,
) -> Result<Mount> {
    match (resp.status, from) {
        (201, Some(_)) => {
            resp.discard()?;
            Ok(Mount::Mounted)
        }
        (202, _) => {
            let mut up = Upload::new(reg, repo);
            up.sessions = 1;
            let location = up.session_from(reg, resp)?;
            up.state = up.state.opened(location)?;
            Ok(Mount::Session(up))
        }
        (s, Some(from)) => {
            Err(reg.status_error(resp, &format!("mount blob {digest} from {from}"), s))
        }
        (s, None) => Err(reg.status_error(resp, &format!("start upload to {repo}"), s)),
    }
}

/// A small blob ready to go up whole: its open session, digest and bytes.
pub struct Small<'a> {
    pub upload: Upload,
    pub digest: &'a Digest,
    pub bytes: &'a [u8],
}

/// Commits small blobs in one pipelined flight: a `PUT ?digest=` with the whole
/// blob into each one's open session. Those the registry did not take (or that
/// could not go) come back, to be sent the ordinary way ([`Upload::send`], with
/// its recovery: a session that did commit answers 404 there, and the blob is
/// then found by HEAD).
pub fn put_all<'a>(reg: &mut Registry, smalls: Vec<Small<'a>>) -> Result<Vec<Small<'a>>> {
    let (ready, mut left): (Vec<Small<'a>>, Vec<Small<'a>>) = smalls.into_iter().partition(|s| {
        matches!(&s.upload.state, SessionState::Open { offset: 0, .. }) && s.bytes.len() <= CHUNK
    });
    let calls: Vec<Call<'_>> = ready
        .iter()
        .filter_map(|s| match &s.upload.state {
            SessionState::Open { location, .. } => Some(Call {
                method: "PUT",
                path: commit_url(location, s.digest),
                headers: OCTETS.to_vec(),
                body: s.bytes,
            }),
            _ => None,
        })
        .collect();
    let answers = match reg.request_many(&mut reg.budget(), &calls) {
        Ok(a) => a,
        Err(e) if e.kind() == Kind::Interrupted => return Err(e),
        Err(_) => {
            left.extend(ready);
            return Ok(left);
        }
    };
    for (small, resp) in ready.into_iter().zip(answers) {
        let committed = matches!(resp.status, 201 | 204);
        resp.discard()?;
        if !committed {
            left.push(small);
        }
    }
    Ok(left)
}

impl Upload {
    /// An upload to `repo` with no session yet (the first step opens one).
    pub fn new(reg: &Registry, repo: &str) -> Upload {
        Upload {
            repo: repo.to_string(),
            state: SessionState::Closed,
            min_chunk: 0,
            no_patch: false,
            sessions: 0,
            failures: 0,
            idle_steps: 0,
            budget: reg.budget(),
            reported: 0,
            high: 0,
            last_failure: None,
        }
    }

    /// Sends `size` bytes from `data` and commits them as `digest`; `progress`
    /// gets the bytes as they are written to the connection, once each (a resend
    /// of bytes already counted adds nothing).
    pub fn send(
        mut self,
        reg: &mut Registry,
        data: &mut dyn BlobSource,
        digest: &Digest,
        size: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let mut blob = Blob::new(data, digest, size);
        loop {
            crate::signal::check()?;
            let (before, began) = (self.held(), Instant::now());
            let step = match self.state.clone() {
                SessionState::Closed => self.open(reg, digest),
                SessionState::Open { location, offset } => {
                    self.send_from(reg, &mut blob, &location, offset, progress)
                }
                SessionState::Unsure { location } => self.ask(reg, &location, size),
                SessionState::Committed => {
                    progress(size.saturating_sub(self.reported));
                    return Ok(());
                }
            };
            if self.note_progress(before, progress) {
                self.budget.credit(began.elapsed());
                (self.failures, self.idle_steps) = (0, 0);
            } else {
                self.idle_steps += 1;
            }
            match step {
                Err(e) => self.recover(e, digest)?,
                Ok(()) => self.check_moving(reg, digest)?,
            }
        }
    }

    /// Fails an upload whose requests succeed without moving it forward.
    fn check_moving(&self, reg: &Registry, digest: &Digest) -> Result<()> {
        if self.idle_steps <= MAX_IDLE_STEPS {
            return Ok(());
        }
        Err(Error::new(format!(
            "upload blob {digest}: {} answered {} requests without the upload moving past byte {}",
            reg.name(),
            self.idle_steps,
            self.held()
        )))
    }

    /// What the registry holds now, as far as barge knows.
    fn held(&self) -> u64 {
        match &self.state {
            SessionState::Open { offset, .. } => *offset,
            _ => 0,
        }
    }

    /// Reports newly confirmed bytes; true when they are progress (a low-speed
    /// window's worth, or the blob committed).
    fn note_progress(&mut self, before: u64, progress: &mut dyn FnMut(u64)) -> bool {
        let now = self.held();
        if now > self.reported {
            progress(now - self.reported);
            self.reported = now;
        }
        let from = before.max(self.high);
        self.high = self.high.max(now);
        self.state == SessionState::Committed || now > from && self.budget.is_progress(now - from)
    }

    /// After a failed step: wait and go on while the budget allows, else the final error.
    fn recover(&mut self, e: Error, digest: &Digest) -> Result<()> {
        let what = format!("upload blob {digest}");
        if e.kind() != Kind::Transient {
            return Err(e.context(what));
        }
        self.failures += 1;
        let wait = Duration::from_millis(250 << self.failures.min(6));
        if self.failures >= MAX_FAILURES || !self.budget.allows_retry(wait) {
            return Err(self.budget.give_up(e).context(what));
        }
        sleep_interruptible(wait)
    }

    /// Closed: a new session (POST), unless a lost session had committed the blob after all.
    fn open(&mut self, reg: &mut Registry, digest: &Digest) -> Result<()> {
        if self.sessions > 0 && blob_size_in(reg, &mut self.budget, &self.repo, digest)?.is_some() {
            self.state = self.state.clone().found()?;
            return Ok(());
        }
        if self.sessions >= MAX_SESSIONS {
            let last = self.last_failure.as_deref().unwrap_or("none");
            return Err(Error::new(format!(
                "{} dropped the upload session {} times (last failure: {last})",
                reg.name(),
                self.sessions
            ))
            .hint("the connection keeps breaking during uploads; run the push again (blobs that arrived are kept)"));
        }
        let path = format!("/v2/{}/blobs/uploads/", self.repo);
        let resp = reg.request_in(
            &mut self.budget,
            1,
            "POST",
            &path,
            &[("Content-Length", "0")],
            &[],
        )?;
        match resp.status {
            202 => {
                self.sessions += 1;
                self.high = 0; // a new session starts empty
                let location = self.session_from(reg, resp)?;
                self.state = self.state.clone().opened(location)?;
                Ok(())
            }
            s => Err(reg.status_error(resp, &format!("start upload to {}", self.repo), s)),
        }
    }

    /// The Location of a new session (and its minimum chunk size).
    fn session_from(&mut self, reg: &Registry, resp: Response) -> Result<String> {
        let Some(location) = resp.header("location").map(str::to_string) else {
            bail!("{} opened an upload without a Location header", reg.name());
        };
        if let Some(min) = resp
            .header("oci-chunk-min-length")
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            self.min_chunk = min;
        }
        resp.discard()?;
        Ok(location)
    }

    /// Open: the next chunk (PATCH), or the rest with the commit (PUT).
    fn send_from(
        &mut self,
        reg: &mut Registry,
        blob: &mut Blob<'_>,
        location: &str,
        offset: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let (digest, size) = (blob.digest, blob.size);
        if offset > size {
            bail!(
                "{} reports {offset} bytes of a {size}-byte blob",
                reg.name()
            );
        }
        let rest = size - offset;
        if self.no_patch {
            return self.put_streamed(reg, blob, location, offset, progress);
        }
        let chunk = CHUNK.max(self.min_chunk.min(MAX_CHUNK)) as u64;
        if rest > chunk {
            return self.patch_streamed(reg, blob, location, offset, progress);
        }
        let url = commit_url(location, digest);
        let bytes = match rest {
            0 => &[][..],
            _ => {
                blob.resize(chunk.min(size) as usize);
                blob.get(offset, rest as usize)?
            }
        };
        let resp = self.send_body(reg, ("PUT", &url, &OCTETS), bytes, offset, progress);
        self.on_commit(reg, resp, digest)
    }

    /// Open with more than a chunk to go: all the rest in one PATCH, streamed
    /// from the source as it is read (the commit follows as its own PUT).
    fn patch_streamed(
        &mut self,
        reg: &mut Registry,
        blob: &mut Blob<'_>,
        location: &str,
        offset: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let rest = blob.size - offset;
        let range = format!("{offset}-{}", blob.size - 1);
        let headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", range.as_str()),
        ];
        let rest_of_blob = blob.rest_from(offset)?;
        let mut body = Sent::new(rest_of_blob, offset, &mut self.reported, progress);
        let resp = reg.request_stream(
            &mut self.budget,
            "PATCH",
            location,
            &headers,
            &mut body,
            rest,
        );
        drop(body);
        self.on_patch(reg, resp, rest, offset)
    }

    /// A request whose body (the blob's bytes from `offset`) is counted into
    /// `progress` as it goes out. A 401 (a token to renew) or a failure before
    /// any byte went out is sent once more the ordinary way, which handles both.
    fn send_body(
        &mut self,
        reg: &mut Registry,
        (method, path, headers): (&str, &str, &[(&str, &str)]),
        body: &[u8],
        offset: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Response> {
        let mut sent = Sent::new(body, offset, &mut self.reported, progress);
        let len = body.len() as u64;
        let resp = reg.request_stream(&mut self.budget, method, path, headers, &mut sent, len);
        let went = sent.at > offset;
        match resp {
            Err(e) if e.kind() == Kind::Auth || (!went && e.kind() == Kind::Transient) => {
                self.exchange(reg, method, path, headers, body)
            }
            r => r,
        }
    }

    /// One request of the upload: a single attempt within the upload's budget.
    fn exchange(
        &mut self,
        reg: &mut Registry,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        reg.request_in(&mut self.budget, 1, method, path, headers, body)
    }

    /// The answer to a PATCH.
    fn on_patch(
        &mut self,
        reg: &mut Registry,
        resp: Result<Response>,
        sent: u64,
        offset: u64,
    ) -> Result<()> {
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return self.fail(e),
        };
        match resp.status {
            202 | 204 => {
                self.state = self.state.clone().accepted(Answer::of(&resp), sent)?;
                resp.discard()
            }
            405 | 501 if offset == 0 => {
                resp.discard()?;
                self.no_patch = true;
                Ok(())
            }
            404 => self.lose(reg, resp),
            416 | 429 | 500..=599 => {
                let s = resp.status;
                let e = reg.status_error(resp, "upload chunk", s);
                self.fail(Error::with_kind(Kind::Transient, e.message()))
            }
            s => Err(reg.status_error(resp, "upload chunk", s)),
        }
    }

    /// The answer to the PUT that commits the blob.
    fn on_commit(
        &mut self,
        reg: &mut Registry,
        resp: Result<Response>,
        digest: &Digest,
    ) -> Result<()> {
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return self.fail(e),
        };
        match resp.status {
            201 | 204 => {
                self.state = self.state.clone().committed()?;
                resp.discard()
            }
            404 => self.lose(reg, resp),
            416 | 429 | 500..=599 => {
                let s = resp.status;
                let e = reg.status_error(resp, &format!("commit blob {digest}"), s);
                self.fail(Error::with_kind(Kind::Transient, e.message()))
            }
            s => Err(reg.status_error(resp, &format!("commit blob {digest}"), s)),
        }
    }

    /// For registries without PATCH: the rest of the blob in one streamed PUT.
    fn put_streamed(
        &mut self,
        reg: &mut Registry,
        blob: &mut Blob<'_>,
        location: &str,
        offset: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let (digest, rest) = (blob.digest, blob.size - offset);
        let url = commit_url(location, digest);
        let rest_of_blob = blob.rest_from(offset)?;
        let mut body = Sent::new(rest_of_blob, offset, &mut self.reported, progress);
        let resp = reg.request_stream(&mut self.budget, "PUT", &url, &OCTETS, &mut body, rest);
        drop(body);
        self.on_commit(reg, resp, digest)
    }

    /// Unsure: asks the session where it stands.
    fn ask(&mut self, reg: &mut Registry, location: &str, size: u64) -> Result<()> {
        let resp = match self.exchange(reg, "GET", location, &[], &[]) {
            Ok(r) => r,
            Err(e) => return self.fail(e),
        };
        match resp.status {
            200 | 204 => {
                self.state = self.state.clone().answered(Answer::of(&resp))?;
                resp.discard()?;
                if self.held() > size {
                    bail!(
                        "{} reports {} bytes of a {size}-byte blob",
                        reg.name(),
                        self.held()
                    );
                }
                Ok(())
            }
            404 => self.lose(reg, resp),
            429 | 500..=599 => {
                let s = resp.status;
                let e = reg.status_error(resp, "ask upload status", s);
                self.fail(Error::with_kind(Kind::Transient, e.message()))
            }
            s => Err(reg.status_error(resp, "ask upload status", s)),
        }
    }

    /// A request failed: the session is in doubt; transient errors are retried.
    fn fail(&mut self, e: Error) -> Result<()> {
        self.state = self.state.clone().failed()?;
        self.last_failure = Some(e.message().to_string());
        Err(e)
    }

    /// The registry no longer knows the session (404): start over with a new one.
    fn lose(&mut self, reg: &Registry, resp: Response) -> Result<()> {
        let e = reg.status_error(resp, "upload session", 404);
        self.last_failure = Some(e.message().to_string());
        self.state = self.state.clone().lost()?;
        Ok(())
    }
}

/// A request body that reports the blob's bytes to a progress callback as they
/// are read (that is, written to the connection), each byte once across resends.
struct Sent<'a, R> {
    inner: R,
    /// Blob offset of the next byte.
    at: u64,
    /// Bytes reported so far (the upload's count).
    reported: &'a mut u64,
    progress: &'a mut dyn FnMut(u64),
}

impl<'a, R: Read> Sent<'a, R> {
    fn new(
        inner: R,
        at: u64,
        reported: &'a mut u64,
        progress: &'a mut dyn FnMut(u64),
    ) -> Sent<'a, R> {
        Sent {
            inner,
            at,
            reported,
            progress,
        }
    }
}

impl<R: Read> Read for Sent<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.at += n as u64;
        if self.at > *self.reported {
            (self.progress)(self.at - *self.reported);
            *self.reported = self.at;
        }
        Ok(n)
    }
}

/// The session's Location with `digest=` added: PUT there commits the blob.
fn commit_url(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

const OCTETS: [(&str, &str); 1] = [("Content-Type", "application/octet-stream")];

/// A failure of the blob's source: final for the upload (the source had its own retries).
fn source_error(e: Error) -> Error {
    let mut out = Error::new(e.message()).context("read the blob to upload");
    if let Some(h) = e.hint_text() {
        out = out.hint(h);
    }
    out
}

fn read_full(data: &mut dyn Read, buf: &mut [u8]) -> Result<()> {
    data.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::new("blob source ended early"),
        _ => Error::from(e),
    })
}

/// PUTs a manifest under `reference` (a tag or digest) and returns its digest.
pub fn put_manifest(
    reg: &mut Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Result<Digest> {
    let resp = reg.request(
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        bytes,
    )?;
    match resp.status {
        200..=202 => {
            resp.discard()?;
            Ok(Digest::of_bytes(bytes))
        }
        s => Err(reg.status_error(resp, &format!("put manifest {repo}:{reference}"), s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keeps_a_chunk_and_rewinds_the_source_when_needed() {
        let data: Vec<u8> = (0..=255u8).collect();
        let digest = Digest::of_bytes(&data);
        let mut src = std::io::Cursor::new(&data[..]);
        let mut b = Blob::new(&mut src, &digest, 256);
        b.resize(100);
        assert_eq!(b.get(0, 100).unwrap()[99], 99);
        // Inside what is held: no read.
        assert_eq!(b.get(40, 60).unwrap()[0], 40);
        assert_eq!(b.source_at, 100);
        assert_eq!(b.get(100, 100).unwrap()[0], 100);
        // Back to the start: the source is rewound.
        assert_eq!(b.get(0, 10).unwrap(), &data[..10]);
        assert_eq!(b.get(250, 6).unwrap(), &data[250..]);
        // The rest from inside what is held, then from elsewhere (rewound).
        b.get(100, 50).unwrap();
        let mut rest = Vec::new();
        b.rest_from(120).unwrap().read_to_end(&mut rest).unwrap();
        assert_eq!(rest, &data[120..]);
        let mut rest = Vec::new();
        b.rest_from(7).unwrap().read_to_end(&mut rest).unwrap();
        assert_eq!(rest, &data[7..]);
    }

    #[test]
    fn sent_counts_each_byte_once_as_it_is_read() {
        let data = [7u8; 100];
        let (mut reported, mut seen) = (0u64, Vec::new());
        let mut note = |n: u64| seen.push(n);
        let mut buf = [0u8; 40];
        let first = Sent::new(&data[..], 0, &mut reported, &mut note).read(&mut buf);
        assert_eq!(first.unwrap(), 40);
        // A resend from byte 20 reports only what goes past byte 40.
        let mut resend = Sent::new(&data[20..], 20, &mut reported, &mut note);
        std::io::copy(&mut resend, &mut std::io::sink()).unwrap();
        assert_eq!(reported, 100);
        assert_eq!(seen.iter().sum::<u64>(), 100);
        assert_eq!(seen[0], 40);
    }

    /// A registry that takes the offset back and then lets it move up again makes no
    /// progress until the upload goes beyond the most it ever held.
    #[test]
    fn only_bytes_beyond_the_most_held_are_progress() {
        let mut up = Upload {
            repo: "r".into(),
            state: SessionState::Closed,
            min_chunk: 0,
            no_patch: false,
            sessions: 1,
            failures: 0,
            idle_steps: 0,
            budget: Budget::new(&crate::http::LowSpeed::DEFAULT),
            reported: 0,
            high: 0,
            last_failure: None,
        };
        let window = crate::http::LowSpeed::DEFAULT.window_bytes();
        let at = |up: &mut Upload, offset: u64| {
            let before = up.held();
            up.state = SessionState::Open {
                location: "/u".into(),
                offset,
            };
            up.note_progress(before, &mut |_| {})
        };
        assert!(at(&mut up, 4 * window), "forward");
        assert!(!at(&mut up, 1), "taken back");
        assert!(!at(&mut up, 4 * window), "the same bytes again");
        assert!(!at(&mut up, 1), "taken back");
        assert!(at(&mut up, 6 * window), "beyond the most held");
    }

    #[test]
    fn commit_url_adds_the_digest() {
        let d = Digest::of_bytes(b"");
        assert_eq!(
            commit_url("/u?_state=x", &d),
            format!("/u?_state=x&digest={d}")
        );
        assert_eq!(commit_url("/u", &d), format!("/u?digest={d}"));
    }
}
