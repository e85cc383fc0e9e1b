//! Transfer pace: the low-speed rule (like curl's `--speed-limit`/`--speed-time`), the idle
//! limit and the attempt's deadline, checked around every socket read and write.
//!
//! Only time spent blocked on the socket counts, and the window restarts with each
//! request: time barge spends elsewhere (disk, another registry) or between requests
//! never makes a connection look slow. Sockets wake up every [`tick`] so a silent
//! peer is noticed without threads.

use std::time::{Duration, Instant};

use crate::error::{Error, Kind};
use crate::progress::human_bytes;

/// Aborts a transfer that moves fewer than `limit` bytes per second, averaged over `time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowSpeed {
    /// Bytes per second; 0 turns the rule off.
    pub limit: u64,
    /// The averaging window; zero turns the rule off.
    pub time: Duration,
}

impl LowSpeed {
    /// Fewer than 1 KiB/s over 30 s aborts the attempt.
    pub const DEFAULT: LowSpeed = LowSpeed {
        limit: 1024,
        time: Duration::from_secs(30),
    };

    /// Whether the rule applies at all.
    pub fn enabled(&self) -> bool {
        self.limit > 0 && !self.time.is_zero()
    }

    /// How long a connection may move no byte at all: 120 s, or the window if longer.
    pub fn idle_limit(&self) -> Duration {
        self.time.max(Duration::from_secs(120))
    }

    /// Bytes a full window must move (1 when the rule is off: any byte is progress).
    pub fn window_bytes(&self) -> u64 {
        if !self.enabled() {
            return 1;
        }
        let bytes = self.limit as u128 * self.time.as_millis() / 1000;
        u64::try_from(bytes).unwrap_or(u64::MAX).max(1)
    }
}

impl Default for LowSpeed {
    fn default() -> LowSpeed {
        LowSpeed::DEFAULT
    }
}

/// How long a blocked read or write sleeps before the rules are checked again
/// (`None`: block for ever, when no rule applies).
pub(crate) fn tick(rule: &LowSpeed, idle_limit: Duration) -> Option<Duration> {
    let base = if rule.enabled() {
        rule.time
    } else {
        idle_limit
    };
    (!base.is_zero()).then(|| (base / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)))
}

/// Which way bytes were going when a rule broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Receiving,
    Sending,
}

/// Why an attempt was stopped; kept so every later read or write fails the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// A full window moved too few bytes (`moved` in the direction that was waiting).
    Slow { moved: u64, dir: Direction },
    /// Not a byte for the idle limit.
    Idle,
    /// The transfer's deadline passed before this attempt moved a window's worth
    /// (`received` bytes came in).
    Deadline { received: u64 },
}

/// How many slices the averaging window is cut into: it slides by an eighth.
const SLICES: usize = 8;

/// Bytes (in, out) moved during the last `SLICES` slices of blocked time.
#[derive(Debug, Clone, Default)]
struct Sliding {
    slices: [(u64, u64); SLICES],
    /// The slice being filled.
    next: usize,
    /// Completed slices (at most `SLICES`).
    filled: usize,
    /// Blocked time in the slice being filled.
    waited: Duration,
}

impl Sliding {
    /// Adds one socket call; each time a slice completes with a whole window behind
    /// it, the window's bytes (in, out) when they are fewer than `least`. When
    /// `strict`, a slice alone must move its share of `least`, or it is `(0, 0)`.
    fn add(
        &mut self,
        slice: Duration,
        least: u64,
        strict: bool,
        waited: Duration,
        moved: u64,
        dir: Direction,
    ) -> Option<(u64, u64)> {
        let cur = &mut self.slices[self.next];
        match dir {
            Direction::Receiving => cur.0 = cur.0.saturating_add(moved),
            Direction::Sending => cur.1 = cur.1.saturating_add(moved),
        }
        self.waited += waited;
        while self.waited >= slice {
            self.waited -= slice;
            self.filled = (self.filled + 1).min(SLICES);
            let (si, so) = self.slices[self.next];
            if strict && si.saturating_add(so) < least / SLICES as u64 {
                return Some((0, 0));
            }
            let (i, o) = self.slices.iter().fold((0u64, 0u64), |(i, o), s| {
                (i.saturating_add(s.0), o.saturating_add(s.1))
            });
            if self.filled == SLICES && i.saturating_add(o) < least {
                return Some((i, o));
            }
            self.next = (self.next + 1) % SLICES;
            self.slices[self.next] = (0, 0);
        }
        None
    }
}

/// Byte and time accounting for one connection, restarted at each request.
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    rule: LowSpeed,
    idle_limit: Duration,
    deadline: Option<Instant>,
    /// Bytes moved in the last window of blocked time.
    window: Sliding,
    /// Blocked time since the last byte.
    idle: Duration,
    /// Bytes moved since the request began, and of those received.
    attempt_moved: u64,
    attempt_in: u64,
    tripped: Option<Stall>,
}

impl Pace {
    pub fn new(rule: LowSpeed, idle_limit: Duration, deadline: Option<Instant>) -> Pace {
        Pace {
            rule,
            idle_limit,
            deadline,
            window: Sliding::default(),
            idle: Duration::ZERO,
            attempt_moved: 0,
            attempt_in: 0,
            tripped: None,
        }
    }

    /// A fresh window for a new request that must be over by `deadline`.
    pub fn restart(&mut self, deadline: Option<Instant>) {
        *self = Pace::new(self.rule, self.idle_limit, deadline);
    }

    /// Whether a rule broke since the request began.
    pub fn tripped(&self) -> bool {
        self.tripped.is_some()
    }

    /// Accounts one socket call that blocked for `waited` and moved `moved` bytes.
    pub fn account(&mut self, waited: Duration, moved: usize, dir: Direction) -> Result<(), Error> {
        self.account_at(Instant::now(), waited, moved as u64, dir)
    }

    /// [`Pace::account`] with the clock given (for tests).
    fn account_at(
        &mut self,
        now: Instant,
        waited: Duration,
        moved: u64,
        dir: Direction,
    ) -> Result<(), Error> {
        if let Some(stall) = self.tripped {
            return Err(self.error(stall));
        }
        let stall = self.step(now, waited, moved, dir);
        self.tripped = stall;
        stall.map_or(Ok(()), |s| Err(self.error(s)))
    }

    /// Updates the counters; the rule that broke, if any.
    fn step(
        &mut self,
        now: Instant,
        waited: Duration,
        moved: u64,
        dir: Direction,
    ) -> Option<Stall> {
        self.attempt_moved = self.attempt_moved.saturating_add(moved);
        if dir == Direction::Receiving {
            self.attempt_in = self.attempt_in.saturating_add(moved);
        }
        self.idle = if moved > 0 {
            Duration::ZERO
        } else {
            self.idle + waited
        };
        if !self.idle_limit.is_zero() && self.idle >= self.idle_limit {
            return Some(Stall::Idle);
        }
        // Past the deadline only an attempt that keeps moving may go on.
        let late = self.deadline.is_some_and(|d| now >= d);
        let deadline = Stall::Deadline {
            received: self.attempt_in,
        };
        if late && self.attempt_moved < self.rule.window_bytes() {
            return Some(deadline);
        }
        if self.rule.enabled() {
            let slice = self.rule.time / SLICES as u32;
            let least = self.rule.window_bytes();
            let slow = self.window.add(slice, least, late, waited, moved, dir);
            return match slow {
                Some(_) if late => Some(deadline),
                Some((i, o)) => Some(Stall::Slow {
                    moved: if dir == Direction::Receiving { i } else { o },
                    dir,
                }),
                None => None,
            };
        }
        None
    }

    /// The one-line error for a broken rule, with what to do on a slow link.
    fn error(&self, stall: Stall) -> Error {
        let secs = self.rule.time.as_secs_f64();
        let limit = human_bytes(self.rule.limit);
        let msg = match stall {
            Stall::Slow {
                moved,
                dir: Direction::Receiving,
            } => format!("registry sent {moved} bytes in {secs:.0} s (below {limit}/s)"),
            Stall::Slow {
                moved,
                dir: Direction::Sending,
            } => format!("registry took {moved} bytes in {secs:.0} s (below {limit}/s)"),
            Stall::Idle => format!(
                "timed out: no data for {} s",
                self.idle_limit.as_secs_f64().round()
            ),
            Stall::Deadline { received } => {
                format!("registry sent {received} bytes before the time for this transfer ran out (below {limit}/s)")
            }
        };
        Error::with_kind(Kind::Transient, msg).hint(SLOW_LINK_HINT)
    }
}

/// What to do when a rule broke on a link that is merely slow.
pub const SLOW_LINK_HINT: &str =
    "on a slow link, raise --low-speed-time SECS or lower --low-speed-limit BYTES (0 turns the check off)";

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn pace(limit: u64, secs: u64) -> Pace {
        let rule = LowSpeed {
            limit,
            time: Duration::from_secs(secs),
        };
        Pace::new(rule, Duration::from_secs(120), None)
    }

    /// Feeds `bytes` per one-second wait, `times` times; the error if a rule broke.
    fn feed(p: &mut Pace, bytes: u64, times: u32, dir: Direction) -> Result<(), Error> {
        for _ in 0..times {
            p.account_at(Instant::now(), S, bytes, dir)?;
        }
        Ok(())
    }

    #[test]
    fn default_rule_is_one_kib_per_second_over_thirty_seconds() {
        assert_eq!(LowSpeed::default().window_bytes(), 30 * 1024);
        assert_eq!(
            tick(&LowSpeed::default(), Duration::from_secs(120)),
            Some(S)
        );
    }

    #[test]
    fn a_trickle_fails_when_the_window_closes() {
        let mut p = pace(1024, 30);
        feed(&mut p, 1, 29, Direction::Receiving).unwrap();
        let e = feed(&mut p, 1, 1, Direction::Receiving).unwrap_err();
        assert_eq!(e.kind(), Kind::Transient);
        assert_eq!(
            e.message(),
            "registry sent 30 bytes in 30 s (below 1.0 KiB/s)"
        );
        assert!(e.hint_text().unwrap().contains("--low-speed-time"));
        // Every later call fails the same way, even with bytes.
        assert!(feed(&mut p, 1 << 20, 1, Direction::Receiving).is_err());
    }

    #[test]
    fn a_stall_fails_and_sending_says_so() {
        let mut p = pace(1024, 10);
        let e = feed(&mut p, 0, 10, Direction::Sending).unwrap_err();
        assert_eq!(
            e.message(),
            "registry took 0 bytes in 10 s (below 1.0 KiB/s)"
        );
    }

    #[test]
    fn a_steady_transfer_at_the_limit_passes_window_after_window() {
        let mut p = pace(1024, 5);
        feed(&mut p, 1024, 100, Direction::Receiving).unwrap();
        // Both directions count: a request body sent, then a slow answer...
        let mut p = pace(1024, 5);
        feed(&mut p, 4096, 1, Direction::Sending).unwrap();
        feed(&mut p, 256, 4, Direction::Receiving).unwrap();
        // ...until the body leaves the window.
        let e = feed(&mut p, 256, 2, Direction::Receiving).unwrap_err();
        assert_eq!(
            e.message(),
            "registry sent 1280 bytes in 5 s (below 1.0 KiB/s)"
        );
    }

    #[test]
    fn the_window_slides_a_burst_does_not_buy_a_second_window() {
        let mut p = pace(1024, 8);
        feed(&mut p, 1 << 20, 1, Direction::Receiving).unwrap();
        // The burst leaves the window 8 s later; the trickle alone then fails.
        feed(&mut p, 1, 7, Direction::Receiving).unwrap();
        let e = feed(&mut p, 1, 2, Direction::Receiving).unwrap_err();
        assert_eq!(
            e.message(),
            "registry sent 8 bytes in 8 s (below 1.0 KiB/s)"
        );
    }

    #[test]
    fn only_blocked_time_counts() {
        let mut p = pace(1024, 2);
        // Many instant reads with few bytes never close a window.
        for _ in 0..10_000 {
            p.account_at(Instant::now(), Duration::ZERO, 1, Direction::Receiving)
                .unwrap();
        }
    }

    #[test]
    fn restart_gives_a_fresh_window() {
        let mut p = pace(1024, 4);
        feed(&mut p, 0, 3, Direction::Receiving).unwrap();
        p.restart(None);
        feed(&mut p, 0, 3, Direction::Receiving).unwrap();
        assert!(feed(&mut p, 0, 1, Direction::Receiving).is_err());
    }

    #[test]
    fn disabled_rule_keeps_the_idle_limit() {
        let mut p = Pace::new(
            LowSpeed {
                limit: 0,
                time: Duration::from_secs(30),
            },
            Duration::from_secs(5),
            None,
        );
        feed(&mut p, 1, 1000, Direction::Receiving).unwrap();
        let e = feed(&mut p, 0, 5, Direction::Receiving).unwrap_err();
        assert_eq!(e.message(), "timed out: no data for 5 s");
        assert_eq!(tick(&LowSpeed { limit: 0, time: S }, Duration::ZERO), None);
    }

    #[test]
    fn deadline_stops_an_attempt_without_progress_only() {
        let rule = LowSpeed {
            limit: 10,
            time: Duration::from_secs(30),
        };
        let past = Instant::now() - S;
        let mut p = Pace::new(rule, Duration::ZERO, Some(past));
        let e = p
            .account_at(Instant::now(), S, 5, Direction::Receiving)
            .unwrap_err();
        assert_eq!(
            e.message(),
            "registry sent 5 bytes before the time for this transfer ran out (below 10 B/s)"
        );
        // An attempt that moved enough goes on past the deadline while it keeps
        // moving; its first slow slice (here 30 s / 8) ends it.
        let mut p = Pace::new(rule, Duration::ZERO, Some(past));
        feed(&mut p, 300, 4, Direction::Receiving).unwrap();
        feed(&mut p, 0, 3, Direction::Receiving).unwrap();
        let e = feed(&mut p, 0, 1, Direction::Receiving).unwrap_err();
        assert!(
            e.message().contains("time for this transfer ran out"),
            "{e}"
        );
    }
}
