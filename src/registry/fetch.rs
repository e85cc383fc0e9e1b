//! Reading from a repository: manifests (bounded, digest-checked) and blobs
//! (streamed, resumed with `Range` after a dropped or too slow connection, a few
//! times and within the download's time budget).

use crate::bail;
use crate::digest::Digest;
use crate::error::{Context, Error, Kind, Result};
use crate::http::Response;
use crate::manifest::{ACCEPT, MAX_MANIFEST};
use crate::registry::budget::Budget;
use crate::registry::client::{Registry, MAX_ATTEMPTS};
use std::io::{self, Read};
use std::time::{Duration, Instant};

/// A manifest or index as the registry sent it.
pub struct RawManifest {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub digest: Digest,
}

/// Fetches `/v2/<repo>/manifests/<reference>` and checks its digest: against the
/// reference when it is a digest, else against `Docker-Content-Digest` if sent.
pub fn manifest(reg: &mut Registry, repo: &str, reference: &str) -> Result<RawManifest> {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let mut resp = reg.request("GET", &path, &[("Accept", ACCEPT)], &[])?;
    match resp.status {
        200 => {}
        404 => {
            return Err(reg.status_error(resp, &format!("manifest {repo}:{reference}"), 404).hint(
                "check the image name and tag (the repository or tag does not exist, or you lack access)",
            ))
        }
        s => return Err(reg.status_error(resp, &format!("manifest {repo}:{reference}"), s)),
    }
    if resp.content_length().is_some_and(|n| n > MAX_MANIFEST) {
        bail!("manifest {repo}:{reference} is larger than {MAX_MANIFEST} bytes: refusing it");
    }
    let content_type = resp
        .header("content-type")
        .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
    let header_digest = resp.header("docker-content-digest").map(str::to_string);
    let bytes = resp
        .read_limited(MAX_MANIFEST)
        .with_context(|| format!("read manifest {repo}:{reference}"))?;
    let digest = Digest::of_bytes(&bytes);
    let expected = match reference.contains(':') {
        true => Some(Digest::parse(reference)?),
        false => header_digest
            .as_deref()
            .map(Digest::parse)
            .transpose()
            .context("Docker-Content-Digest header")?,
    };
    if let Some(expected) = expected {
        crate::digest::verify(&format!("manifest {repo}:{reference}"), &expected, &digest)?;
    }
    Ok(RawManifest {
        bytes,
        content_type,
        digest,
    })
}

/// A blob's bytes, exactly `size` of them: more or fewer is an error. A
/// connection dropped midway is resumed with a `Range` request (a few times, and
/// only while the download's [`Budget`] allows).
pub struct BlobReader<'r> {
    reg: &'r mut Registry,
    path: String,
    digest: Digest,
    size: u64,
    offset: u64,
    resp: Option<Response>,
    resumes: u32,
    budget: Budget,
    /// When and where the last window's worth of bytes was complete: the time
    /// from there to the next one was spent making progress.
    mark: (Instant, u64),
}

const MAX_RESUMES: u32 = 3;

impl<'r> BlobReader<'r> {
    pub fn open(
        reg: &'r mut Registry,
        repo: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<BlobReader<'r>> {
        BlobReader::open_at(reg, repo, digest, size, 0, Duration::ZERO)
    }

    /// Like [`BlobReader::open`], reading from byte `offset` on, after `wasted` time
    /// was already spent on these bytes without progress (it counts against the budget).
    pub fn open_at(
        reg: &'r mut Registry,
        repo: &str,
        digest: &Digest,
        size: u64,
        offset: u64,
        wasted: Duration,
    ) -> Result<BlobReader<'r>> {
        let mut budget = reg.budget();
        budget.charge(wasted);
        let mut r = BlobReader {
            reg,
            path: format!("/v2/{repo}/blobs/{digest}"),
            digest: digest.clone(),
            size,
            offset: 0,
            resp: None,
            resumes: 0,
            budget,
            mark: (Instant::now(), 0),
        };
        r.mark = (Instant::now(), offset);
        r.offset = offset;
        r.resp = Some(r.get((offset > 0).then_some(offset))?);
        Ok(r)
    }

    fn get(&mut self, from: Option<u64>) -> Result<Response> {
        let range = from.map(|n| format!("bytes={n}-"));
        let headers: Vec<(&str, &str)> = range.iter().map(|r| ("Range", r.as_str())).collect();
        let resp = self.reg.request_in(
            &mut self.budget,
            MAX_ATTEMPTS,
            "GET",
            &self.path,
            &headers,
            &[],
        )?;
        let what = format!("blob {}", self.digest);
        match (resp.status, from) {
            (200, None) | (206, Some(_)) => {}
            (404, _) => {
                return Err(self
                    .reg
                    .status_error(resp, &what, 404)
                    .hint("the registry lost this blob or the image is incomplete"))
            }
            (s, _) => return Err(self.reg.status_error(resp, &what, s)),
        }
        if let Some(len) = resp.content_length() {
            let expect = self.size - from.unwrap_or(0);
            if len != expect {
                return Err(Error::new(format!(
                    "{what}: registry sent {len} bytes, the manifest says {expect}"
                )));
            }
        }
        Ok(resp)
    }

    /// Starts reading again at `offset` (at most the size) with a fresh budget:
    /// an upload that lost its session sends the blob again.
    pub fn reopen_at(&mut self, offset: u64) -> Result<()> {
        if offset > self.size {
            bail!("cannot read blob {} from byte {offset}", self.digest);
        }
        self.resp = None;
        self.budget = self.reg.budget();
        self.offset = offset;
        self.mark = (Instant::now(), offset);
        self.resp = Some(self.get((offset > 0).then_some(offset))?);
        Ok(())
    }

    /// Credits the budget with the time the last window's worth of bytes took.
    fn note_progress(&mut self) {
        let (at, from) = self.mark;
        if self.budget.is_progress(self.offset - from) {
            let now = Instant::now();
            self.budget.credit(now - at);
            self.mark = (now, self.offset);
        }
    }

    fn resume(&mut self, cause: Error) -> Result<()> {
        let what = format!("download blob {}", self.digest);
        if cause.kind() != Kind::Transient {
            return Err(cause.context(what));
        }
        if self.resumes >= MAX_RESUMES || !self.budget.allows_retry(std::time::Duration::ZERO) {
            return Err(self.budget.give_up(cause).context(what));
        }
        self.resumes += 1;
        self.resp = None;
        self.mark = (Instant::now(), self.offset);
        let resp = self.get(Some(self.offset)).map_err(|e| e.context(what))?;
        self.resp = Some(resp);
        Ok(())
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(resp) = self.resp.as_mut() else {
                return Ok(0);
            };
            let cap = buf
                .len()
                .min((self.size - self.offset).min(usize::MAX as u64) as usize)
                .max(1);
            match resp.read(&mut buf[..cap]) {
                Ok(0) if self.offset < self.size => {
                    let e = Error::with_kind(
                        Kind::Transient,
                        format!(
                            "connection closed after {} of {} bytes",
                            self.offset, self.size
                        ),
                    );
                    self.resume(e)?;
                }
                Ok(0) => return Ok(0),
                Ok(n) if self.offset + n as u64 > self.size => {
                    return Err(Error::new(format!(
                        "blob {} is larger than the {} bytes its descriptor says",
                        self.digest, self.size
                    ))
                    .into())
                }
                Ok(n) => {
                    self.offset += n as u64;
                    self.note_progress();
                    return Ok(n);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted && crate::signal::interrupted() =>
                {
                    return Err(e)
                }
                Err(e) => {
                    let err: Error = e.into();
                    self.resume(err)?;
                }
            }
        }
    }
}
