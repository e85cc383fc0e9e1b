//! Several blob downloads at once, in one thread: the blobs an operation will read
//! next are fetched ahead into a spool (unlinked files in a directory the caller
//! names) by [`Flow`]s, a large blob in up to [`MAX_PIECES`] `Range` pieces on
//! connections of their own. On a lossy long link one TCP flow gets a fraction of
//! the rate; parallel flows get the link. The reader of a blob ([`SpoolReader`])
//! reads what has arrived, in order, and moves every flow on while it waits.
//!
//! Nothing here is trusted more than a plain download: the reader's caller checks
//! the digest of every byte, each piece is bounded by its range, and a piece that
//! fails for good (a status, a server that ignores `Range`, a full disk) hands the
//! rest of its blob to the ordinary one-request path ([`BlobReader`]), which
//! retries, resumes and words its errors as always.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use crate::digest::Digest;
use crate::error::{Context, Error, Kind, Result};
use crate::http::{poll_flows, FileRange, Flow, FlowConfig, FlowState, Url};
use crate::registry::client::Registry;
use crate::registry::fetch::BlobReader;

/// A blob is cut into pieces of at least this size.
const MIN_PIECE: u64 = 8 << 20;
/// At most this many pieces per blob.
pub const MAX_PIECES: u64 = 4;
/// At most this many flows at once.
pub const MAX_FLOWS: usize = 6;
/// Blobs are started while what is spooled and not yet read stays under this.
const SPOOL_LIMIT: u64 = 512 << 20;
/// Redirects a piece follows.
const MAX_HOPS: u32 = 5;
/// Times a piece starts again from where it stopped after a transient failure.
const MAX_RESUMES: u32 = 3;
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
}

/// One blob being spooled.
struct Spooled {
    digest: Digest,
    size: u64,
    /// Unlinked: the space goes when the last handle does.
    file: Option<Rc<File>>,
    pieces: Vec<Piece>,
    /// Read to its end (or abandoned): its flows and file are gone.
    released: bool,
}

/// A byte range of a blob and the flow filling it.
struct Piece {
    start: u64,
    end: u64,
    /// Bytes from `start` on that are in the file.
    filled: u64,
    url: Url,
    flow: Option<Flow>,
    /// Where the current flow's body starts.
    flow_at: u64,
    hops: u32,
    resumes: u32,
    /// Time its failed flows spent without progress (the fallback's budget is charged).
    wasted: Duration,
    state: PieceState,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PieceState {
    Waiting,
    Running,
    Done,
    /// Given up: its reader takes the ordinary path from here.
    Broken,
}

/// What [`Prefetch::read_at`] found.
enum Ready {
    Data(usize),
    Wait,
    /// Given up, after this long without progress.
    Broken(Duration),
}

impl Prefetch {
    /// Prepares to fetch `blobs` (digest, size) of `repo` into unlinked files in `dir`.
    /// `None` when the registry cannot be read this way (not talked to yet, or a proxy).
    pub fn start(
        reg: &mut Registry,
        repo: &str,
        blobs: &[(Digest, u64)],
        dir: &Path,
    ) -> Result<Option<Prefetch>> {
        let Some((first, _)) = blobs.first() else {
            return Ok(None);
        };
        let Some((url, config, auth)) = reg.flow_setup(&format!("/v2/{repo}/blobs/{first}"))?
        else {
            return Ok(None);
        };
        let mut spooled = Vec::with_capacity(blobs.len());
        for (digest, size) in blobs {
            let file = spool_file(dir, digest)?;
            let url = url.join(&format!("/v2/{repo}/blobs/{digest}"))?;
            spooled.push(Spooled {
                digest: digest.clone(),
                size: *size,
                file: Some(Rc::new(file)),
                pieces: pieces(*size, &url),
                released: false,
            });
        }
        let mut p = Prefetch {
            repo: repo.to_string(),
            origin: url.origin(),
            auth,
            config,
            blobs: spooled,
        };
        p.pump(Duration::ZERO)?;
        Ok(Some(p))
    }

    /// The index of `digest` among the blobs being fetched, if it is one.
    pub fn find(&self, digest: &Digest) -> Option<usize> {
        self.blobs
            .iter()
            .position(|b| &b.digest == digest && !b.released)
    }

    /// Starts what may start, then waits up to `timeout` for the flows and settles
    /// what they did.
    fn pump(&mut self, timeout: Duration) -> Result<()> {
        self.start_pieces();
        let mut running: Vec<&mut Flow> = self
            .blobs
            .iter_mut()
            .flat_map(|b| b.pieces.iter_mut())
            .filter_map(|p| p.flow.as_mut())
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        poll_flows(&mut running, timeout)?;
        for i in 0..self.blobs.len() {
            for k in 0..self.blobs[i].pieces.len() {
                self.settle(i, k);
            }
        }
        Ok(())
    }

    /// Starts waiting pieces, in blob order, while flows and spool allow.
    fn start_pieces(&mut self) {
        let mut running = self.running();
        let mut ahead = 0;
        for b in self.blobs.iter_mut().filter(|b| !b.released) {
            if ahead > 0 && ahead + b.size > SPOOL_LIMIT {
                break;
            }
            ahead += b.size;
            if b.file.is_none() {
                continue;
            }
            for p in b.pieces.iter_mut() {
                if running >= MAX_FLOWS {
                    return;
                }
                if p.state == PieceState::Waiting {
                    p.launch(b.size, &self.origin, self.auth.as_deref(), &self.config);
                    running += usize::from(p.state == PieceState::Running);
                }
            }
        }
    }

    fn running(&self) -> usize {
        self.blobs
            .iter()
            .flat_map(|b| &b.pieces)
            .filter(|p| p.state == PieceState::Running)
            .count()
    }

    /// Looks at piece `k` of blob `i` after a poll: its head, its end, its failure.
    fn settle(&mut self, i: usize, k: usize) {
        let b = &mut self.blobs[i];
        let size = b.size;
        let Some(file) = b.file.clone() else { return };
        let p = &mut b.pieces[k];
        let Some(flow) = p.flow.as_mut() else { return };
        match flow.state() {
            FlowState::Asking => {}
            FlowState::Body => p.filled = p.flow_at + flow.written() - p.start,
            FlowState::Done => {
                p.filled = p.flow_at + flow.written() - p.start;
                p.flow = None;
                p.state = match p.filled == p.end - p.start {
                    true => PieceState::Done,
                    false => PieceState::Waiting, // a short body: ask for the rest
                };
            }
            FlowState::Failed(e) => {
                // A slow registry is left to the ordinary path, which words it and keeps the budget.
                let transient = e.kind() == Kind::Transient && !flow.too_slow();
                p.filled = p.flow_at + flow.written() - p.start;
                p.wasted += flow.unproductive();
                p.flow = None;
                p.resumes += 1;
                p.state = match transient && p.resumes <= MAX_RESUMES {
                    true => PieceState::Waiting,
                    false => PieceState::Broken,
                };
            }
            FlowState::Head => {
                let answer = p.answer(size);
                let whole = matches!(answer, Answer::Whole);
                p.take(answer, file, size);
                if whole {
                    // The server ignores Range: the first piece takes the whole blob.
                    b.pieces.truncate(1);
                }
            }
        }
    }

    /// Copies spooled bytes of blob `i` at `pos` into `buf`, if they have arrived.
    fn read_at(&mut self, i: usize, pos: u64, buf: &mut [u8]) -> Result<Ready> {
        let b = &self.blobs[i];
        let Some(p) = b.pieces.iter().find(|p| p.start <= pos && pos < p.end) else {
            return Ok(Ready::Broken(Duration::ZERO));
        };
        let have = p.start + p.filled;
        if have > pos {
            let n = buf.len().min((have - pos).min(usize::MAX as u64) as usize);
            let Some(file) = &b.file else {
                return Ok(Ready::Broken(Duration::ZERO));
            };
            file.read_exact_at(&mut buf[..n], pos)
                .context("read the download spool")?;
            return Ok(Ready::Data(n));
        }
        Ok(match p.state {
            PieceState::Broken => Ready::Broken(p.wasted),
            _ => Ready::Wait,
        })
    }

    /// Blob `i` is read (or taken over): its flows close and its spool goes.
    fn release(&mut self, i: usize) {
        let b = &mut self.blobs[i];
        b.released = true;
        b.file = None;
        b.pieces.clear();
    }
}

/// What to do with a piece's response head.
enum Answer {
    /// Take a body of this many bytes.
    Body(u64),
    /// The server sent the whole blob instead of the range (from the first piece only).
    Whole,
    Redirect(Url),
    GiveUp,
}

impl Piece {
    /// A range of `size` bytes of the blob at `url`.
    fn new(start: u64, end: u64, url: &Url) -> Piece {
        Piece {
            start,
            end,
            filled: 0,
            url: url.clone(),
            flow: None,
            flow_at: start,
            hops: 0,
            resumes: 0,
            wasted: Duration::ZERO,
            state: PieceState::Waiting,
        }
    }

    /// Whether this request asks for a range (not the whole blob from its start).
    fn ranged(&self, size: u64) -> bool {
        self.start + self.filled > 0 || self.end < size
    }

    /// Opens the flow for what is left of the piece.
    fn launch(&mut self, size: u64, origin: &str, auth: Option<&str>, config: &FlowConfig) {
        let from = self.start + self.filled;
        if from >= self.end {
            self.state = PieceState::Done;
            return;
        }
        let mut headers = Vec::new();
        if self.ranged(size) {
            headers.push((
                "Range".to_string(),
                format!("bytes={from}-{}", self.end - 1),
            ));
        }
        if let (Some(a), true) = (auth, self.url.origin() == origin) {
            headers.push(("Authorization".to_string(), a.to_string()));
        }
        match Flow::get(&self.url, &headers, config) {
            Ok(flow) => {
                self.flow = Some(flow);
                self.flow_at = from;
                self.state = PieceState::Running;
            }
            Err(_) => self.state = PieceState::Broken,
        }
    }

    /// Acts on what [`Piece::answer`] said.
    fn take(&mut self, answer: Answer, file: Rc<File>, size: u64) {
        let Some(flow) = self.flow.as_mut() else {
            return;
        };
        match answer {
            Answer::Body(len) => flow.accept(FileRange {
                file,
                at: self.flow_at,
                len,
            }),
            Answer::Whole => {
                flow.accept(FileRange {
                    file,
                    at: 0,
                    len: size,
                });
                self.end = size;
            }
            Answer::Redirect(url) => {
                self.url = url;
                self.flow = None;
                self.hops += 1;
                self.state = PieceState::Waiting;
            }
            Answer::GiveUp => {
                self.flow = None;
                self.state = PieceState::Broken;
            }
        }
    }

    /// Checks a response head against what was asked.
    fn answer(&self, size: u64) -> Answer {
        let Some(flow) = &self.flow else {
            return Answer::GiveUp;
        };
        let from = self.flow_at;
        let want = self.end - from;
        match flow.status() {
            Some(301 | 302 | 303 | 307 | 308) if self.hops < MAX_HOPS => {
                match flow.header("location").map(|l| self.url.join(l)) {
                    Some(Ok(url)) => Answer::Redirect(url),
                    _ => Answer::GiveUp,
                }
            }
            Some(200) if !self.ranged(size) => match flow.content_length() {
                Some(n) if n != size => Answer::GiveUp,
                _ => Answer::Body(size),
            },
            Some(200) if from == 0 && flow.content_length().map_or(true, |n| n == size) => {
                Answer::Whole
            }
            Some(206) if content_range_ok(flow.header("content-range"), from, self.end, size) => {
                match flow.content_length() {
                    Some(n) if n != want => Answer::GiveUp,
                    _ => Answer::Body(want),
                }
            }
            _ => Answer::GiveUp,
        }
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

/// The pieces a blob of `size` bytes is fetched in.
fn pieces(size: u64, url: &Url) -> Vec<Piece> {
    let n = (size / MIN_PIECE).clamp(1, MAX_PIECES);
    let step = size.div_ceil(n).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < size || out.is_empty() {
        let end = (start + step).min(size);
        out.push(Piece::new(start, end, url));
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
            self.prefetch.pump(Duration::ZERO)?;
            match self.prefetch.read_at(self.index, self.pos, buf)? {
                Ready::Data(n) => {
                    self.pos += n as u64;
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
