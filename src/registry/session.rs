//! Where an upload session stands, as an explicit state machine: one function per
//! transition, each refusing the states it does not apply to (an internal error).
//!
//! `Closed` → (POST) `Open { location, offset }` → (PATCH accepted) `Open` … →
//! (PUT `?digest=` accepted) `Committed`. A request that fails midway makes the
//! session `Unsure` until it answers a GET (→ `Open` at its `Range`). A 404 from
//! the session (distribution's `BLOB_UPLOAD_INVALID`/`BLOB_UPLOAD_UNKNOWN`) makes
//! it `Closed` again; so does nothing else.

use crate::error::{Error, Result};
use crate::http::Response;

/// Where an upload session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionState {
    /// No session: the next step opens one.
    Closed,
    /// The registry holds the first `offset` bytes; the next request goes to `location`.
    Open { location: String, offset: u64 },
    /// A request failed midway: what the registry holds is unknown until asked.
    Unsure { location: String },
    /// The blob is in the repository.
    Committed,
}

/// What an upload response says about the session: its new Location and `Range` end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Answer {
    pub location: Option<String>,
    /// The last byte held (`Range: 0-N`); `None` without a Range header.
    pub range_end: Option<u64>,
}

impl Answer {
    pub fn of(resp: &Response) -> Answer {
        Answer {
            location: resp.header("location").map(str::to_string),
            range_end: parse_range_end(resp.header("range")),
        }
    }
}

/// The `N` of `Range: 0-N` (some registries send `bytes=0-N`).
fn parse_range_end(range: Option<&str>) -> Option<u64> {
    let range = range?.trim();
    let range = range.strip_prefix("bytes=").unwrap_or(range);
    let (start, end) = range.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    end.trim().parse().ok()
}

impl SessionState {
    /// Closed → Open: a POST gave a session.
    pub fn opened(self, location: String) -> Result<SessionState> {
        match self {
            SessionState::Closed => Ok(SessionState::Open {
                location,
                offset: 0,
            }),
            s => Err(s.invalid("opened")),
        }
    }

    /// Closed → Committed: the registry already has the blob (mounted, or found by HEAD).
    pub fn found(self) -> Result<SessionState> {
        match self {
            SessionState::Closed => Ok(SessionState::Committed),
            s => Err(s.invalid("found")),
        }
    }

    /// Open → Open: a chunk of `sent` bytes was accepted.
    pub fn accepted(self, answer: Answer, sent: u64) -> Result<SessionState> {
        match self {
            SessionState::Open { location, offset } => Ok(SessionState::Open {
                location: answer.location.unwrap_or(location),
                offset: answer.range_end.map_or(offset + sent, |end| end + 1),
            }),
            s => Err(s.invalid("accepted")),
        }
    }

    /// Open → Unsure: a request failed before its answer arrived.
    pub fn failed(self) -> Result<SessionState> {
        match self {
            SessionState::Open { location, .. } => Ok(SessionState::Unsure { location }),
            s @ SessionState::Unsure { .. } => Ok(s),
            s => Err(s.invalid("failed")),
        }
    }

    /// Unsure → Open: the session said how much it holds (`0-0`: nothing yet).
    pub fn answered(self, answer: Answer) -> Result<SessionState> {
        match self {
            SessionState::Unsure { location } => Ok(SessionState::Open {
                location: answer.location.unwrap_or(location),
                offset: answer.range_end.filter(|e| *e > 0).map_or(0, |e| e + 1),
            }),
            s => Err(s.invalid("answered")),
        }
    }

    /// Open or Unsure → Closed: the registry no longer knows the session.
    pub fn lost(self) -> Result<SessionState> {
        match self {
            SessionState::Open { .. } | SessionState::Unsure { .. } => Ok(SessionState::Closed),
            s => Err(s.invalid("lost")),
        }
    }

    /// Open → Committed: the PUT `?digest=` was accepted.
    pub fn committed(self) -> Result<SessionState> {
        match self {
            SessionState::Open { .. } => Ok(SessionState::Committed),
            s => Err(s.invalid("committed")),
        }
    }

    fn invalid(&self, event: &str) -> Error {
        Error::new(format!(
            "internal error: upload event {event:?} in state {self:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(offset: u64) -> SessionState {
        SessionState::Open {
            location: "/up/1".into(),
            offset,
        }
    }

    fn answer(location: Option<&str>, range: Option<&str>) -> Answer {
        Answer {
            location: location.map(str::to_string),
            range_end: parse_range_end(range),
        }
    }

    #[test]
    fn closed_opens_or_finds_the_blob() {
        let s = SessionState::Closed.opened("/up/1".into()).unwrap();
        assert_eq!(s, open(0));
        assert_eq!(
            SessionState::Closed.found().unwrap(),
            SessionState::Committed
        );
        assert!(open(0).opened("/x".into()).is_err());
    }

    #[test]
    fn accepted_chunk_moves_the_offset_by_range_or_by_size() {
        let s = open(0).accepted(answer(Some("/up/2"), Some("0-99")), 100);
        assert_eq!(
            s.unwrap(),
            SessionState::Open {
                location: "/up/2".into(),
                offset: 100
            }
        );
        // No Range: the whole chunk counts; no Location: the old one stays.
        assert_eq!(
            open(100).accepted(answer(None, None), 50).unwrap(),
            open(150)
        );
        // A registry that took part of it says so.
        assert_eq!(
            open(100).accepted(answer(None, Some("0-119")), 50).unwrap(),
            open(120)
        );
        assert!(SessionState::Closed.accepted(Answer::default(), 1).is_err());
    }

    #[test]
    fn failure_makes_the_session_unsure_until_it_answers() {
        let unsure = open(100).failed().unwrap();
        assert_eq!(
            unsure,
            SessionState::Unsure {
                location: "/up/1".into()
            }
        );
        assert_eq!(unsure.clone().failed().unwrap(), unsure);
        assert_eq!(
            unsure.clone().answered(answer(None, Some("0-49"))).unwrap(),
            open(50)
        );
        // `0-0` and no Range: nothing held yet.
        assert_eq!(
            unsure.clone().answered(answer(None, Some("0-0"))).unwrap(),
            open(0)
        );
        assert_eq!(unsure.answered(answer(None, None)).unwrap(), open(0));
        assert!(open(0).answered(Answer::default()).is_err());
        assert!(SessionState::Committed.failed().is_err());
    }

    #[test]
    fn a_lost_session_closes_from_open_or_unsure() {
        assert_eq!(open(5).lost().unwrap(), SessionState::Closed);
        let unsure = open(5).failed().unwrap();
        assert_eq!(unsure.lost().unwrap(), SessionState::Closed);
        assert!(SessionState::Closed.lost().is_err());
    }

    #[test]
    fn commit_ends_an_open_session_only() {
        assert_eq!(open(9).committed().unwrap(), SessionState::Committed);
        assert!(SessionState::Closed.committed().is_err());
        assert!(open(9).failed().unwrap().committed().is_err());
    }

    #[test]
    fn range_headers() {
        assert_eq!(parse_range_end(Some("0-1023")), Some(1023));
        assert_eq!(parse_range_end(Some("bytes=0-7")), Some(7));
        assert_eq!(parse_range_end(Some("5-7")), None);
        assert_eq!(parse_range_end(Some("0-x")), None);
        assert_eq!(parse_range_end(None), None);
    }
}
