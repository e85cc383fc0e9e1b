//! The time one logical transfer (a request with its retries, a blob download with
//! its resumes, a blob upload with its retries and new sessions) may spend without
//! progress: 4 low-speed windows, 2 minutes by default. The deadline moves on by
//! the time spent making progress (a window's worth of bytes at a time), so only
//! slow, stalled and failed time counts. Every attempt is told the deadline, so a
//! dead or hostile registry ends the command within that bound.

use crate::error::Error;
use crate::http::LowSpeed;
use std::time::{Duration, Instant};

/// How many low-speed windows a transfer may go without progress.
const WINDOWS: u32 = 4;

/// Retry accounting for one logical transfer.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Bytes an attempt must move to count as progress.
    good: u64,
    started: Instant,
    deadline: Instant,
    attempts: u32,
}

impl Budget {
    /// A budget starting now, for transfers under `rule`.
    pub fn new(rule: &LowSpeed) -> Budget {
        let span = Budget::span(rule);
        let now = Instant::now();
        Budget {
            good: rule.window_bytes(),
            started: now,
            deadline: now + span,
            attempts: 0,
        }
    }

    /// How long a transfer under `rule` may go without progress.
    pub fn span(rule: &LowSpeed) -> Duration {
        let window = if rule.enabled() {
            rule.time
        } else {
            rule.idle_limit()
        };
        window.saturating_mul(WINDOWS)
    }

    /// When the transfer runs out of time unless it makes progress.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Counts one attempt (for the final message).
    pub fn attempt(&mut self) {
        self.attempts += 1;
    }

    /// Whether moving `bytes` is progress: a low-speed window's worth.
    pub fn is_progress(&self, bytes: u64) -> bool {
        bytes >= self.good
    }

    /// Time spent making progress does not count: the deadline moves on by it.
    pub fn credit(&mut self, productive: Duration) {
        self.deadline += productive;
    }

    /// Time already spent without progress elsewhere (another connection's failed
    /// attempts at the same bytes) counts against this budget too.
    pub fn charge(&mut self, wasted: Duration) {
        self.deadline = self.deadline.checked_sub(wasted).unwrap_or(self.started);
        self.started = self.started.checked_sub(wasted).unwrap_or(self.started);
    }

    /// Whether another attempt may start after waiting `wait`.
    pub fn allows_retry(&self, wait: Duration) -> bool {
        Instant::now() + wait < self.deadline
    }

    /// The last attempt's error, saying that barge gave up and after how much.
    pub fn give_up(&self, e: Error) -> Error {
        let secs = self.started.elapsed().as_secs_f64().round();
        let tries = match self.attempts {
            1 => "1 attempt".to_string(),
            n => format!("{n} attempts"),
        };
        e.context(format!("gave up after {tries} in {secs} s"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_budget_is_two_minutes() {
        assert_eq!(Budget::span(&LowSpeed::DEFAULT), Duration::from_secs(120));
        let off = LowSpeed {
            limit: 0,
            time: Duration::from_secs(30),
        };
        assert_eq!(Budget::span(&off), Duration::from_secs(480));
        let slow = LowSpeed {
            limit: 0,
            time: Duration::from_secs(300),
        };
        assert_eq!(Budget::span(&slow), Duration::from_secs(1200));
    }

    #[test]
    fn productive_time_moves_the_deadline() {
        let rule = LowSpeed {
            limit: 1024,
            time: Duration::from_millis(50),
        };
        let mut b = Budget::new(&rule);
        assert!(b.allows_retry(Duration::ZERO));
        assert!(!b.allows_retry(Duration::from_millis(250)));
        std::thread::sleep(Duration::from_millis(210));
        assert!(!b.allows_retry(Duration::ZERO));
        assert!(!b.is_progress(rule.window_bytes() - 1));
        assert!(b.is_progress(rule.window_bytes()));
        b.credit(Duration::from_millis(300));
        assert!(b.allows_retry(Duration::from_millis(50)));
        b.attempt();
        b.attempt();
        let e = b.give_up(Error::new("x"));
        assert!(
            e.message().starts_with("gave up after 2 attempts in "),
            "{e}"
        );
    }
}
