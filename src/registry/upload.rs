//! Writing to a repository: blob existence checks, cross-repository mounts,
//! upload sessions (monolithic PUT, or chunked PATCH with resume), manifests.
//!
//! An upload session is a small state machine: `start` (POST) gives a Location;
//! each chunk is PATCHed to the latest Location (the registry may change it);
//! a failed chunk asks the session's status (GET Location → Range) and goes on
//! from there; the final PUT `?digest=` commits the blob.

use crate::bail;
use crate::digest::Digest;
use crate::error::{Context, Error, Kind, Result};
use crate::registry::client::Registry;
use std::io::Read;

/// Chunks are read into memory one at a time; this bounds push memory.
pub const CHUNK: usize = 8 << 20;
const MAX_CHUNK_RETRIES: u32 = 3;

/// What a mount attempt gave.
pub enum Mount {
    /// The registry linked the blob from the other repository: nothing to upload.
    Mounted,
    /// It could not; here is an ordinary upload session instead.
    Session(Session),
}

/// An open upload session.
pub struct Session {
    location: String,
    offset: u64,
    min_chunk: usize,
}

/// HEAD the blob: `Some(size)` when the repository already has it.
pub fn blob_size(reg: &mut Registry, repo: &str, digest: &Digest) -> Result<Option<u64>> {
    let resp = reg.request("HEAD", &format!("/v2/{repo}/blobs/{digest}"), &[], &[])?;
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

/// Asks the registry to link `digest` from repository `from` (same registry).
pub fn mount(reg: &mut Registry, repo: &str, digest: &Digest, from: &str) -> Result<Mount> {
    let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
    let resp = reg.request("POST", &path, &[("Content-Length", "0")], &[])?;
    match resp.status {
        201 => {
            resp.discard()?;
            Ok(Mount::Mounted)
        }
        202 => Ok(Mount::Session(session_from(reg, resp)?)),
        s => Err(reg.status_error(resp, &format!("mount blob {digest} from {from}"), s)),
    }
}

/// Opens an upload session (POST).
pub fn start(reg: &mut Registry, repo: &str) -> Result<Session> {
    let resp = reg.request(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[("Content-Length", "0")],
        &[],
    )?;
    match resp.status {
        202 => session_from(reg, resp),
        s => Err(reg.status_error(resp, &format!("start upload to {repo}"), s)),
    }
}

fn session_from(reg: &Registry, resp: crate::http::Response) -> Result<Session> {
    let Some(location) = resp.header("location").map(str::to_string) else {
        bail!("{} opened an upload without a Location header", reg.name());
    };
    let min_chunk = resp
        .header("oci-chunk-min-length")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    resp.discard()?;
    Ok(Session {
        location,
        offset: 0,
        min_chunk,
    })
}

impl Session {
    /// Sends `size` bytes from `data` and commits them as `digest`. Small blobs
    /// go in one PUT; larger ones in bounded PATCH chunks, resumed after errors.
    pub fn upload(
        mut self,
        reg: &mut Registry,
        data: &mut dyn Read,
        digest: &Digest,
        size: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let chunk = CHUNK.max(self.min_chunk);
        if size <= chunk as u64 {
            let mut buf = Vec::with_capacity(size as usize);
            data.take(size).read_to_end(&mut buf).context("read blob")?;
            check_len(&buf, size)?;
            progress(size);
            return self.finish(reg, digest, &buf);
        }
        let mut buf = vec![0u8; chunk];
        while self.offset < size {
            let want = chunk.min((size - self.offset) as usize);
            read_full(data, &mut buf[..want])?;
            if !self.send_chunk(reg, &buf[..want])? {
                // No PATCH here: the whole blob in one streamed PUT instead.
                let mut rest = (&buf[..want]).chain(data);
                return self.finish_streamed(reg, digest, &mut rest, size);
            }
            progress(want as u64);
        }
        self.finish(reg, digest, &[])
    }

    /// PATCHes one chunk; on failure asks the session where it stands and resends the rest.
    /// `Ok(false)`: the registry refuses PATCH altogether (only asked on the first chunk).
    fn send_chunk(&mut self, reg: &mut Registry, chunk: &[u8]) -> Result<bool> {
        let start = self.offset;
        let mut tries = 0;
        loop {
            let sent = (self.offset - start) as usize;
            match self.patch(reg, &chunk[sent..]) {
                Ok(false) => return Ok(false),
                Ok(true) if self.offset == start + chunk.len() as u64 => return Ok(true),
                Ok(true) => {}
                Err(e) if e.kind() == Kind::Transient && tries < MAX_CHUNK_RETRIES => {}
                Err(e) => return Err(e),
            }
            tries += 1;
            if tries > MAX_CHUNK_RETRIES {
                bail!("upload stalled at byte {} of a chunk", self.offset);
            }
            self.refresh_status(reg)?;
            if self.offset < start || self.offset > start + chunk.len() as u64 {
                bail!(
                    "registry reports upload offset {} outside the chunk sent from {start}",
                    self.offset
                );
            }
        }
    }

    /// PATCHes bytes at the current offset; `Ok(false)` when PATCH is not supported.
    fn patch(&mut self, reg: &mut Registry, bytes: &[u8]) -> Result<bool> {
        let range = format!("{}-{}", self.offset, self.offset + bytes.len() as u64 - 1);
        let headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", range.as_str()),
        ];
        let resp = reg.request("PATCH", &self.location, &headers, bytes)?;
        match resp.status {
            202 | 204 => {
                self.update_from(&resp);
                if resp.header("range").is_none() {
                    self.offset += bytes.len() as u64;
                }
                resp.discard()?;
                Ok(true)
            }
            405 | 501 if self.offset == 0 => {
                resp.discard()?;
                Ok(false)
            }
            416 => {
                resp.discard()?;
                Err(Error::with_kind(
                    Kind::Transient,
                    "registry rejected the chunk's range",
                ))
            }
            s => Err(reg.status_error(resp, "upload chunk", s)),
        }
    }

    /// GET the session: where does the registry think we are?
    fn refresh_status(&mut self, reg: &mut Registry) -> Result<()> {
        let resp = reg.request("GET", &self.location, &[], &[])?;
        match resp.status {
            204 | 200 => {
                self.update_from(&resp);
                resp.discard()
            }
            s => Err(reg.status_error(resp, "ask upload status", s)),
        }
    }

    /// Takes the newest Location and the Range (`0-N` means N+1 bytes received).
    fn update_from(&mut self, resp: &crate::http::Response) {
        if let Some(l) = resp.header("location") {
            self.location = l.to_string();
        }
        if let Some(end) = resp
            .header("range")
            .and_then(|r| r.trim().rsplit('-').next())
            .and_then(|n| n.parse::<u64>().ok())
        {
            self.offset = end + 1;
        }
    }

    /// PUT `?digest=` with the last bytes (possibly none): the blob is committed.
    fn finish(self, reg: &mut Registry, digest: &Digest, last: &[u8]) -> Result<()> {
        let url = self.commit_url(digest);
        let resp = reg.request("PUT", &url, &OCTETS, last)?;
        committed(reg, resp, digest)
    }

    /// The session's Location with `digest=` added: PUT there commits the blob.
    fn commit_url(&self, digest: &Digest) -> String {
        let sep = if self.location.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}digest={digest}", self.location)
    }

    /// One PUT carrying the whole blob, streamed (for registries without PATCH).
    fn finish_streamed(
        self,
        reg: &mut Registry,
        digest: &Digest,
        body: &mut dyn Read,
        len: u64,
    ) -> Result<()> {
        let url = self.commit_url(digest);
        let resp = reg.request_stream("PUT", &url, &OCTETS, body, len)?;
        committed(reg, resp, digest)
    }
}

/// The answer to the PUT that commits a blob.
fn committed(reg: &Registry, resp: crate::http::Response, digest: &Digest) -> Result<()> {
    match resp.status {
        201 | 204 => resp.discard(),
        s => Err(reg.status_error(resp, &format!("commit blob {digest}"), s)),
    }
}

const OCTETS: [(&str, &str); 1] = [("Content-Type", "application/octet-stream")];

fn read_full(data: &mut dyn Read, buf: &mut [u8]) -> Result<()> {
    data.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::new("blob source ended early"),
        _ => Error::from(e),
    })
}

fn check_len(buf: &[u8], size: u64) -> Result<()> {
    if buf.len() as u64 != size {
        bail!("blob source gave {} bytes, expected {size}", buf.len());
    }
    Ok(())
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
