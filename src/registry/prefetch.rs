//! Several blob downloads at once, in one thread: the layers a pull will apply
//! next are fetched ahead into a spool (unlinked files in a directory the caller
//! names) by keep-alive connections ([`Flow`]s), each taking the next chunk of the
//! blobs in reading order (growing from [`FIRST_CHUNK`] to [`CHUNK`]) as a `Range`
//! request, the next one pipelined behind the body it is receiving so that a
//! connection never waits a round trip between chunks. On a lossy long link one
//! TCP flow gets a fraction of the rate and several get the link; on a clean one,
//! one flow fills it and more only compete: how many is `--connections`, or is
//! measured ([`Ramp`]: one, then one more while it raises the rate). Taking chunks
//! in order keeps the reader ([`SpoolReader`]) fed at the link's rate instead of
//! waiting for one slow first piece, so little is left to read when the last byte
//! arrives. The reader moves every flow on while it waits.
//!
//! Nothing here is trusted more than a plain download: the reader's caller checks
//! the digest of every byte, each chunk is bounded by its range, and a chunk that
//! fails for good (a status, a wrong `Content-Range`, a full disk, a flow too slow)
//! hands the rest of its blob to the ordinary one-request path ([`BlobReader`]),
//! which retries, resumes and words its errors as always. A server that ignores
//! `Range` sends the whole blob to the first chunk's request, which then takes it.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::error::{Context, Error, Kind, Result};
use crate::http::{poll_flows, FileRange, Flow, FlowConfig, FlowState, IdleConn, Url};
use crate::registry::client::{Connections, Registry};
use crate::registry::fetch::BlobReader;
use crate::registry::ramp::{Ramp, Step};

/// Blobs are fetched in ranges of at most this size (a smaller blob in one request).
pub const CHUNK: u64 = 4 << 20;
/// A blob's first range: its reader can start soon.
const FIRST_CHUNK: u64 = 1 << 20;
/// Towards the end of a blob of 4 [`CHUNK`]s or more, ranges shrink to a quarter of
/// what is left, down to this: the flows finish one after the other, so little is
/// left to apply when the last byte arrives.
const LAST_CHUNK: u64 = 256 << 10;
/// At most this many connections when their count is measured ([`Ramp`]).
pub const AUTO_MAX_FLOWS: usize = 8;
/// Chunks start, and flows are read, at most this far ahead of the reader (in
/// reading order): a reader slower than the link (a slow disk, a fast LAN) paces
/// the downloads through TCP instead of letting the spool grow.
const AHEAD: u64 = 64 << 20;
/// A chunk's request is pipelined behind a connection's body once at most this
/// much of it is left: enough to cover a round trip, and not so early that a
/// slow connection holds work others could do.
const PIPELINE_LEFT: u64 = 1 << 20;
/// Redirects a chunk follows.
const MAX_HOPS: u32 = 5;
/// Times a chunk starts again from where it stopped after a transient failure.
const MAX_RESUMES: u32 = 3;
/// A read waits for this much (or the end of its chunk) to have arrived.
const MIN_READ: usize = 64 << 10;
/// How long a waiting reader sleeps in `poll` at most before looking again.
const TICK: Duration = Duration::from_millis(200);

/// Blob downloads running ahead of their reader.
pub struct Prefetch {
    repo: String,
    /// The registry's origin: only requests there carry the Authorization.
    origin: String,
    auth: Option<String>,
    config: FlowConfig,
    blobs: Vec<Spooled>,
    /// Every blob's chunks, in reading order.
    chunks: Vec<Chunk>,
    /// Open connections and what each is doing.
    flows: Vec<Lane>,
    /// The blob a reader is reading now.
    reading: Option<usize>,
    /// How many connections, and their measuring.
    ramp: Ramp,
    /// The reader held flows back since the ramp last looked.
    paced: bool,
    /// The registry's idle connection, for the first flow.
    spare: Option<IdleConn>,
}

/// A connection, the chunk it fetches, and the chunk asked for behind it.
struct Lane {
    flow: Flow,
    job: Job,
    /// A chunk whose request is pipelined behind the current one ([`Flow::pipeline`]).
    next: Option<usize>,
}

/// What a connection is doing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Job {
    /// Its last answer is complete; it is kept open for the next chunk.
    Idle,
    /// Fetching this chunk.
    Chunk(usize),
    /// To be closed (an unwanted answer, a failure).
    Close,
}

/// One blob being spooled.
struct Spooled {
    digest: Digest,
    size: u64,
    /// Where its chunks are asked for (a redirect's target once one was followed).
    url: Url,
    /// Unlinked: the space goes when the last handle does.
    file: Option<Rc<File>>,
    /// Where its bytes start in reading order (the sizes of the blobs before it).
    offset: u64,
    /// How far its reader has read.
    read: u64,
    /// Read to its end (or handed to the ordinary path): its chunks are dropped.
    released: bool,
}

/// A byte range of a blob.
struct Chunk {
    blob: usize,
    start: u64,
    end: u64,
    /// Bytes from `start` on that are in the file.
    filled: u64,
    /// Where the current request's body starts.
    asked_at: u64,
    hops: u32,
    resumes: u32,
    /// Time its failed requests spent without progress (the fallback's budget is charged).
    wasted: Duration,
    state: ChunkState,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ChunkState {
    Waiting,
    Running,
    Done,
    /// Given up: its reader takes the ordinary path from here.
    Broken,
    /// The first chunk took the whole blob (the server ignores `Range`).
    Covered,
}

/// What [`Prefetch::read_at`] found.
enum Ready {
    Data(usize),
    Wait,
    /// Given up, after this long without progress.
    Broken(Duration),
}

/// What to do with a chunk's response head.
enum Answer {
    /// Take a body of this many bytes.
    Body(u64),
    /// The server sent the whole blob instead of the range (first chunk only).
    Whole,
    Redirect(Url),
    GiveUp,
}

impl Prefetch {
    /// Prepares to fetch `blobs` (digest, size) of `repo` into unlinked files in `dir`.
    /// `None` when the registry cannot be read this way (a proxy stands in the way).
    pub fn start(
        reg: &mut Registry,
        repo: &str,
        blobs: &[(Digest, u64)],
        dir: &Path,
    ) -> Result<Option<Prefetch>> {
        // A registry on this machine has no latency to hide: the spool would only
        // cost copies (measured: 1.43 s against 1.23 s for a loopback pull).
        let ramp = match reg.connections() {
            Connections::Default if reg.is_local() => return Ok(None),
            Connections::Fixed(1) => return Ok(None),
            Connections::Default | Connections::Auto => Ramp::adaptive(AUTO_MAX_FLOWS),
            Connections::Fixed(n) => Ramp::fixed(n),
        };
        let Some((first, _)) = blobs.first() else {
            return Ok(None);
        };
        let Some((url, config, auth)) = reg.flow_setup(&format!("/v2/{repo}/blobs/{first}"))?
        else {
            return Ok(None);
        };
        let mut p = Prefetch {
            repo: repo.to_string(),
            origin: url.origin(),
            auth,
            config,
            blobs: Vec::with_capacity(blobs.len()),
            chunks: Vec::new(),
            flows: Vec::new(),
            reading: None,
            ramp,
            paced: false,
            spare: None,
        };
        let mut offset = 0;
        for (digest, size) in blobs {
            let blob = p.blobs.len();
            p.chunks.extend(chunks(blob, *size));
            p.blobs.push(Spooled {
                digest: digest.clone(),
                size: *size,
                url: url.join(&format!("/v2/{repo}/blobs/{digest}"))?,
                file: Some(Rc::new(spool_file(dir, digest)?)),
                offset,
                read: 0,
                released: false,
            });
            offset += size;
        }
        // The first request goes on the registry's idle keep-alive connection:
        // no new connection's round trips before the first bytes.
        p.spare = reg.take_idle();
        Ok(Some(p))
    }

    /// The index of `digest` among the blobs being fetched, if it is one.
    pub fn find(&self, digest: &Digest) -> Option<usize> {
        self.blobs
            .iter()
            .position(|b| &b.digest == digest && !b.released)
    }

    /// Gives waiting chunks to connections, waits up to `timeout` for them, and
    /// settles what they did. A flow more than [`AHEAD`] ahead of the reader is not
    /// read this time (TCP then slows its sender down), unless the reader waits
    /// (`timeout` > 0).
    fn pump(&mut self, timeout: Duration) -> Result<()> {
        self.assign();
        let limit = self.frontier().saturating_add(AHEAD);
        let pace = timeout.is_zero();
        let (chunks, blobs) = (&self.chunks, &self.blobs);
        let ahead = |k: usize| {
            let c = &chunks[k];
            blobs[c.blob].offset + c.start + c.filled > limit
        };
        let mut busy: Vec<&mut Flow> = Vec::new();
        for lane in self.flows.iter_mut() {
            match lane.job {
                Job::Chunk(k) if pace && ahead(k) => {
                    lane.flow.rest();
                    self.paced = true;
                }
                Job::Chunk(_) => busy.push(&mut lane.flow),
                _ => {}
            }
        }
        if busy.is_empty() {
            return Ok(());
        }
        poll_flows(&mut busy, timeout)?;
        for i in 0..self.flows.len() {
            self.settle(i);
        }
        self.close_lanes();
        self.measure();
        self.assign();
        Ok(())
    }

    /// Lets the ramp see the bytes received so far; connections it finds did not
    /// pay are closed. Its measurement is void if the reader held flows back or no
    /// chunk is left for another connection.
    fn measure(&mut self) {
        if !self.ramp.ramping() {
            return;
        }
        let received = self.chunks.iter().map(|c| c.filled).sum();
        let blobs = &self.blobs;
        let starved = !self
            .chunks
            .iter()
            .any(|c| c.state == ChunkState::Waiting && !blobs[c.blob].released);
        let limited = std::mem::take(&mut self.paced) || starved;
        if self.ramp.observe(Instant::now(), received, limited) == Step::Drop {
            while self.open_flows() > self.ramp.target() {
                self.retire_one();
            }
        }
    }

    /// Closes the newest connection now: its chunks wait for another one, which
    /// goes on from the bytes already in the spool.
    fn retire_one(&mut self) {
        let Some(lane) = self.flows.iter_mut().rev().find(|l| l.job != Job::Close) else {
            return;
        };
        if let Job::Chunk(k) = lane.job {
            self.chunks[k].wait_again();
        }
        lane.job = Job::Close;
        self.close_lanes();
    }

    /// Drops the connections marked [`Job::Close`]; chunks asked for behind
    /// their current one wait again (no resume is charged: they were not tried).
    fn close_lanes(&mut self) {
        for lane in &self.flows {
            if let (Job::Close, Some(n)) = (lane.job, lane.next) {
                self.chunks[n].wait_again();
            }
        }
        self.flows.retain(|l| l.job != Job::Close);
    }

    /// Starts the next waiting chunks, in reading order, on idle connections first,
    /// then on new ones, while connections allow and up to [`AHEAD`] of the reader.
    fn assign(&mut self) {
        let limit = self.frontier().saturating_add(AHEAD);
        // The blob being read first: a reader may take a blob out of order.
        let reading = self.reading;
        let first = (0..self.chunks.len()).filter(|&k| Some(self.chunks[k].blob) == reading);
        let order: Vec<usize> = first.chain(0..self.chunks.len()).collect();
        for k in order {
            let c = &self.chunks[k];
            let b = &self.blobs[c.blob];
            if b.released || c.state != ChunkState::Waiting {
                continue;
            }
            if b.offset + c.start >= limit || !self.launch(k) {
                return;
            }
        }
    }

    /// Where reading stands, in reading order: the blob being read (else the first
    /// one not read to its end), at its reader's position.
    fn frontier(&self) -> u64 {
        let current = self.reading.and_then(|i| self.blobs.get(i));
        current
            .or_else(|| self.blobs.iter().find(|b| !b.released))
            .map_or(u64::MAX, |b| b.offset + b.read)
    }

    /// Asks for what is left of chunk `k` on an idle connection, a new one, or
    /// behind the chunk a busy one is receiving; `false` when none can take it.
    fn launch(&mut self, k: usize) -> bool {
        let (url, headers, from) = self.request_for(k);
        let c = &self.chunks[k];
        // The blob being read may have one connection more when none works on it:
        // it need not wait for chunks of a later blob to end.
        let target = self.ramp.target();
        let unserved = self.reading == Some(c.blob) && !self.serving(c.blob);
        let most = target + usize::from(unserved);
        let started = if let Some(i) = self.reuse(&url, &headers) {
            self.flows[i].job = Job::Chunk(k);
            true
        } else if self.open_flows() < target {
            self.open_lane(k, &url, &headers)
        } else if self.queue_behind(k, &url, &headers) {
            true
        } else if self.open_flows() < most {
            self.open_lane(k, &url, &headers)
        } else {
            return false;
        };
        let c = &mut self.chunks[k];
        c.asked_at = from;
        c.state = match started {
            true => ChunkState::Running,
            false => ChunkState::Broken,
        };
        true
    }

    /// A connection for chunk `k`; `false` if it cannot even start.
    fn open_lane(&mut self, k: usize, url: &Url, headers: &[(String, String)]) -> bool {
        self.ramp.begin(Instant::now());
        match self.new_flow(url, headers) {
            Ok(flow) => {
                self.flows.push(Lane {
                    flow,
                    job: Job::Chunk(k),
                    next: None,
                });
                true
            }
            Err(_) => false,
        }
    }

    /// A flow asking `GET url`: on the spare connection if there is one, else new.
    fn new_flow(&mut self, url: &Url, headers: &[(String, String)]) -> Result<Flow> {
        match self.spare.take() {
            Some(idle) => Flow::adopt(idle, url, headers, &self.config),
            None => Flow::get(url, headers, &self.config),
        }
    }

    /// The GET for what is left of chunk `k`: its URL, headers, and first byte.
    fn request_for(&self, k: usize) -> (Url, Vec<(String, String)>, u64) {
        let c = &self.chunks[k];
        let b = &self.blobs[c.blob];
        let from = c.start + c.filled;
        let mut headers = Vec::new();
        if from > 0 || c.end < b.size {
            headers.push(("Range".to_string(), format!("bytes={from}-{}", c.end - 1)));
        }
        if let (Some(a), true) = (&self.auth, b.url.origin() == self.origin) {
            headers.push(("Authorization".to_string(), a.clone()));
        }
        (b.url.clone(), headers, from)
    }

    /// Sends the request on an idle connection that can take it; idle ones that
    /// cannot (closed by the server, another origin) are closed.
    fn reuse(&mut self, url: &Url, headers: &[(String, String)]) -> Option<usize> {
        for i in 0..self.flows.len() {
            let lane = &mut self.flows[i];
            if lane.job != Job::Idle {
                continue;
            }
            match lane.flow.again(url, headers) {
                Ok(true) => return Some(i),
                _ => lane.job = Job::Close,
            }
        }
        None
    }

    /// Pipelines chunk `k`'s request behind the body of the connection with the
    /// least left to receive (at most [`PIPELINE_LEFT`]), so that the connection
    /// goes on without a round trip's pause; `false` if none can take it now.
    fn queue_behind(&mut self, k: usize, url: &Url, headers: &[(String, String)]) -> bool {
        let left = |lane: &Lane| match lane.job {
            Job::Chunk(j) => {
                let c = &self.chunks[j];
                c.end - c.start - c.filled
            }
            _ => u64::MAX,
        };
        let mut order: Vec<usize> = (0..self.flows.len())
            .filter(|&i| {
                let lane = &self.flows[i];
                let receiving = matches!(lane.flow.state(), FlowState::Body);
                lane.next.is_none() && receiving && left(lane) <= PIPELINE_LEFT
            })
            .collect();
        order.sort_by_key(|&i| left(&self.flows[i]));
        for i in order {
            if let Ok(true) = self.flows[i].flow.pipeline(url, headers) {
                self.flows[i].next = Some(k);
                return true;
            }
        }
        false
    }

    /// Whether a connection fetches (or has asked for) a chunk of blob `blob`.
    fn serving(&self, blob: usize) -> bool {
        let of_blob = |k: Option<usize>| k.is_some_and(|k| self.chunks[k].blob == blob);
        self.flows.iter().any(|l| match l.job {
            Job::Chunk(k) => of_blob(Some(k)) || of_blob(l.next),
            _ => false,
        })
    }

    /// Connections that are not being closed.
    fn open_flows(&self) -> usize {
        self.flows.iter().filter(|l| l.job != Job::Close).count()
    }

    /// Looks at connection `i` after a poll: its head, its end, its failure.
    fn settle(&mut self, i: usize) {
        let Job::Chunk(k) = self.flows[i].job else {
            return;
        };
        let Lane { flow, job, .. } = &mut self.flows[i];
        let c = &mut self.chunks[k];
        let b = &mut self.blobs[c.blob];
        let Some(file) = b.file.clone().filter(|_| c.state == ChunkState::Running) else {
            // Released or covered meanwhile: the answer is not wanted.
            *job = Job::Close;
            return;
        };
        if let (FlowState::Head, Some(rtt)) = (flow.state(), flow.latency()) {
            self.ramp.sample_rtt(rtt);
        }
        match flow.state() {
            FlowState::Asking => {}
            FlowState::Body => c.filled = c.asked_at + flow.written() - c.start,
            FlowState::Done => {
                c.filled = c.asked_at + flow.written() - c.start;
                *job = Job::Idle;
                c.state = match c.filled == c.end - c.start {
                    true => ChunkState::Done,
                    // A short body (ended by the connection): ask for the rest, as
                    // many times as after a transient failure, not forever.
                    false => {
                        c.resumes += 1;
                        match c.resumes <= MAX_RESUMES {
                            true => ChunkState::Waiting,
                            false => ChunkState::Broken,
                        }
                    }
                };
                self.turn_to_next(i);
            }
            FlowState::Failed(e) => {
                // A slow registry is left to the ordinary path, which words it and
                // keeps the budget.
                let transient = e.kind() == Kind::Transient && !flow.too_slow();
                c.filled = c.asked_at + flow.written() - c.start;
                c.wasted += flow.unproductive();
                c.resumes += 1;
                *job = Job::Close;
                c.state = match transient && c.resumes <= MAX_RESUMES {
                    true => ChunkState::Waiting,
                    false => ChunkState::Broken,
                };
            }
            FlowState::Head => match answer(flow, c, b.size) {
                Answer::Body(len) => flow.accept(FileRange {
                    file,
                    at: c.asked_at,
                    len,
                }),
                Answer::Whole => {
                    flow.accept(FileRange {
                        file,
                        at: 0,
                        len: b.size,
                    });
                    c.end = b.size;
                    self.cover(k);
                }
                Answer::Redirect(url) => {
                    b.url = url;
                    c.hops += 1;
                    c.state = ChunkState::Waiting;
                    *job = Job::Close;
                }
                Answer::GiveUp => {
                    c.state = ChunkState::Broken;
                    *job = Job::Close;
                }
            },
        }
    }

    /// Connection `i` finished its chunk: it goes on with the one pipelined behind it.
    fn turn_to_next(&mut self, i: usize) {
        let lane = &mut self.flows[i];
        let Some(n) = lane.next.take() else {
            return;
        };
        match lane.flow.next() {
            true => {
                lane.job = Job::Chunk(n);
                self.settle(i);
            }
            false => {
                lane.job = Job::Close;
                self.chunks[n].wait_again();
            }
        }
    }

    /// Chunk `k` (a blob's first) takes the whole blob: the blob's other chunks
    /// are covered by it, and connections working on them are closed.
    fn cover(&mut self, k: usize) {
        let blob = self.chunks[k].blob;
        for (j, c) in self.chunks.iter_mut().enumerate() {
            if c.blob == blob && j != k {
                c.state = ChunkState::Covered;
            }
        }
        for lane in self.flows.iter_mut() {
            if matches!(lane.job, Job::Chunk(j) if j != k && self.chunks[j].blob == blob) {
                lane.job = Job::Close;
            }
        }
    }

    /// Copies spooled bytes of blob `i` at `pos` into `buf`, if they have arrived.
    /// Fewer than `want` bytes while more are on their way is [`Ready::Wait`]: the
    /// reader gets whole buffers, not each packet as it came.
    fn read_at(&mut self, i: usize, pos: u64, buf: &mut [u8], want: usize) -> Result<Ready> {
        let b = &self.blobs[i];
        let Some(file) = &b.file else {
            return Ok(Ready::Broken(Duration::ZERO));
        };
        let Some(c) = self.chunks.iter().find(|c| {
            c.blob == i && c.start <= pos && pos < c.end && c.state != ChunkState::Covered
        }) else {
            return Ok(Ready::Broken(Duration::ZERO));
        };
        let have = c.start + c.filled;
        let more = c.state == ChunkState::Running && have < c.end;
        if have > pos && (have - pos >= want as u64 || !more) {
            let n = buf.len().min((have - pos).min(usize::MAX as u64) as usize);
            file.read_exact_at(&mut buf[..n], pos)
                .context("read the download spool")?;
            return Ok(Ready::Data(n));
        }
        Ok(match c.state {
            ChunkState::Broken => Ready::Broken(c.wasted),
            _ => Ready::Wait,
        })
    }

    /// Blob `i` is read (or handed to the ordinary path): its spool goes, and
    /// connections still fetching it are closed.
    fn release(&mut self, i: usize) {
        if self.reading == Some(i) {
            self.reading = None;
        }
        let b = &mut self.blobs[i];
        b.released = true;
        b.file = None;
        for lane in self.flows.iter_mut() {
            if matches!(lane.job, Job::Chunk(k) if self.chunks[k].blob == i) {
                lane.job = Job::Close;
            }
        }
        self.close_lanes();
    }
}

impl Chunk {
    /// A running chunk whose connection went (not its fault: no resume is
    /// charged) waits for another; its bytes so far stay.
    fn wait_again(&mut self) {
        if self.state == ChunkState::Running {
            self.state = ChunkState::Waiting;
        }
    }
}

/// Checks a chunk's response head against what was asked.
fn answer(flow: &Flow, c: &Chunk, size: u64) -> Answer {
    let from = c.asked_at;
    let ranged = from > 0 || c.end < size;
    match flow.status() {
        Some(301 | 302 | 303 | 307 | 308) if c.hops < MAX_HOPS => {
            match flow.header("location").map(|l| flow.url().join(l)) {
                Some(Ok(url)) => Answer::Redirect(url),
                _ => Answer::GiveUp,
            }
        }
        Some(200) if !ranged => match flow.content_length() {
            Some(n) if n != size => Answer::GiveUp,
            _ => Answer::Body(size),
        },
        Some(200) if from == 0 && flow.content_length().map_or(true, |n| n == size) => {
            Answer::Whole
        }
        Some(206) if content_range_ok(flow.header("content-range"), from, c.end, size) => {
            match flow.content_length() {
                Some(n) if n != c.end - from => Answer::GiveUp,
                _ => Answer::Body(c.end - from),
            }
        }
        _ => Answer::GiveUp,
    }
}

/// Whether `Content-Range: bytes FROM-LAST/SIZE` names exactly the range asked.
fn content_range_ok(value: Option<&str>, from: u64, end: u64, size: u64) -> bool {
    let Some(v) = value.and_then(|v| v.trim().strip_prefix("bytes ")) else {
        return false;
    };
    let Some((range, total)) = v.split_once('/') else {
        return false;
    };
    let Some((a, b)) = range.split_once('-') else {
        return false;
    };
    let total_ok = total == "*" || total.parse::<u64>() == Ok(size);
    a.parse::<u64>() == Ok(from) && b.parse::<u64>() == Ok(end - 1) && total_ok
}

/// The chunks blob number `blob` of `size` bytes is fetched in: growing from
/// [`FIRST_CHUNK`] to [`CHUNK`], then shrinking towards [`LAST_CHUNK`] at the end,
/// so that the first bytes come soon and the chunks running at once do not all
/// end together.
fn chunks(blob: usize, size: u64) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut step = FIRST_CHUNK;
    while start < size || out.is_empty() {
        let tail = match size >= 4 * CHUNK {
            true => ((size - start) / 4).max(LAST_CHUNK),
            false => CHUNK,
        };
        let end = (start + step.min(tail)).min(size);
        step = (step * 2).min(CHUNK);
        out.push(Chunk {
            blob,
            start,
            end,
            filled: 0,
            asked_at: start,
            hops: 0,
            resumes: 0,
            wasted: Duration::ZERO,
            state: ChunkState::Waiting,
        });
        start = end;
    }
    out
}

/// A new, already unlinked file in `dir` for a blob's spool.
fn spool_file(dir: &Path, digest: &Digest) -> Result<File> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(format!(
        ".barge-spool-{}-{}",
        digest.short(),
        std::process::id()
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
    Ok(file)
}

/// Reads one prefetched blob in order: spooled bytes as they arrive, every flow
/// moved on meanwhile; past a piece given up, the ordinary request path.
pub struct SpoolReader<'a> {
    prefetch: &'a mut Prefetch,
    /// Handed to the fallback when a piece is given up.
    reg: Option<&'a mut Registry>,
    index: usize,
    digest: Digest,
    size: u64,
    pos: u64,
    fallback: Option<BlobReader<'a>>,
}

impl<'a> SpoolReader<'a> {
    /// The reader of blob `index` (see [`Prefetch::find`]).
    pub fn new(prefetch: &'a mut Prefetch, reg: &'a mut Registry, index: usize) -> SpoolReader<'a> {
        prefetch.reading = Some(index);
        let b = &prefetch.blobs[index];
        let (digest, size) = (b.digest.clone(), b.size);
        SpoolReader {
            prefetch,
            reg: Some(reg),
            index,
            digest,
            size,
            pos: 0,
            fallback: None,
        }
    }

    /// Reads again from `offset`.
    pub fn rewind(&mut self, offset: u64) -> Result<()> {
        self.pos = offset;
        match self.fallback.as_mut() {
            Some(f) => f.reopen_at(offset),
            None => Ok(()),
        }
    }

    fn read_spooled(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            if self.pos >= self.size {
                self.prefetch.release(self.index);
                return Ok(0);
            }
            crate::signal::check()?;
            self.prefetch.reading = Some(self.index);
            self.prefetch.pump(Duration::ZERO)?;
            let want = buf.len().min(MIN_READ);
            match self.prefetch.read_at(self.index, self.pos, buf, want)? {
                Ready::Data(n) => {
                    self.pos += n as u64;
                    self.prefetch.blobs[self.index].read = self.pos;
                    return Ok(n);
                }
                Ready::Wait => self.prefetch.pump(TICK)?,
                Ready::Broken(wasted) => return self.take_over(buf, wasted),
            }
        }
    }

    /// A piece was given up: the rest of the blob comes the ordinary way.
    fn take_over(&mut self, buf: &mut [u8], wasted: Duration) -> Result<usize> {
        self.prefetch.release(self.index);
        let Some(reg) = self.reg.take() else {
            return Err(Error::new(
                "internal error: blob read the ordinary way twice",
            ));
        };
        let repo = self.prefetch.repo.clone();
        let mut f = BlobReader::open_at(reg, &repo, &self.digest, self.size, self.pos, wasted)?;
        let n = f.read(buf).map_err(Error::from)?;
        self.pos += n as u64;
        self.fallback = Some(f);
        Ok(n)
    }
}

impl Read for SpoolReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = self.fallback.as_mut() {
            let n = f.read(buf)?;
            self.pos += n as u64;
            return Ok(n);
        }
        Ok(self.read_spooled(buf)?)
    }
}
