//! One error type for the whole tool: what failed, and what the user can do about it.
//!
//! Errors are values carrying a message and an optional hint; they are printed
//! once, on one line, by `main`. No module prints errors itself.

use std::fmt;

/// A failure with a human message (`what failed: why`) and an optional hint (`what to do`).
#[derive(Debug)]
pub struct Error {
    msg: String,
    hint: Option<String>,
    kind: Kind,
}

/// Coarse classes that callers may act on (retry, fall back, map to an exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anything else.
    Other,
    /// A network failure that may succeed when tried again.
    Transient,
    /// The registry said the thing does not exist (404 / *_UNKNOWN).
    NotFound,
    /// Credentials missing or refused.
    Auth,
    /// The user pressed Ctrl-C (or the process got SIGTERM).
    Interrupted,
    /// A TLS handshake got an answer that is not TLS (a plain-HTTP server).
    NotTls,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error {
            msg: msg.into(),
            hint: None,
            kind: Kind::Other,
        }
    }

    pub fn with_kind(kind: Kind, msg: impl Into<String>) -> Error {
        Error {
            msg: msg.into(),
            hint: None,
            kind,
        }
    }

    /// Adds (or replaces) the "what to do" part.
    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// Prefixes the message with what was being done: `context: message`.
    pub fn context(mut self, what: impl fmt::Display) -> Error {
        self.msg = format!("{what}: {}", self.msg);
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.msg
    }

    pub fn hint_text(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)?;
        if let Some(h) = &self.hint {
            write!(f, ": {h}")?;
        }
        Ok(())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        let kind = match e.kind() {
            std::io::ErrorKind::Interrupted => Kind::Interrupted,
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::UnexpectedEof => Kind::Transient,
            _ => Kind::Other,
        };
        // An io::Error that wraps one of ours (from a Read adapter) gives it back intact.
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            if let Some(Ok(inner)) = e.into_inner().map(|b| b.downcast::<Error>()) {
                return *inner;
            }
            return Error::new("i/o error");
        }
        Error::with_kind(kind, e.to_string())
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        std::io::Error::other(e)
    }
}

/// `.context(...)` on any result whose error converts into ours.
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

/// Returns early with an `Error` built from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::error::Error::new(format!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_joins_context_message_and_hint() {
        let e = Error::new("connection refused")
            .context("ping 127.0.0.1:5000")
            .hint("is the registry running?");
        assert_eq!(
            e.to_string(),
            "ping 127.0.0.1:5000: connection refused: is the registry running?"
        );
    }

    #[test]
    fn io_roundtrip_keeps_our_error() {
        let io: std::io::Error = Error::with_kind(Kind::Interrupted, "interrupted").into();
        let back: Error = io.into();
        assert_eq!(back.kind(), Kind::Interrupted);
        assert_eq!(back.message(), "interrupted");
    }
}
