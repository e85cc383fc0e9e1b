//! How many connections a pull downloads on when the user did not say. On a
//! lossy long link each TCP flow gets a fraction of the link and every flow
//! added pays; on a clean link one flow fills it, and more only compete for its
//! queue (measured: 4 flows 14.5 s against 1 flow 12.1 s at 100 ms, 50 Mbit/s,
//! bbr). So the count is chosen by measuring, not guessed:
//!
//! 1. One connection. Once it has settled, its rate times the round trip is
//!    the data it keeps in flight. A flow holding [`FILLING`] or more in flight
//!    has grown its window to a long fat link: it stays alone.
//! 2. Otherwise its window is held small (by loss, or by the far end), which
//!    more flows get around: [`JUMP`] connections at once, kept. Comparing them
//!    with the one flow before does not work: a loss-bound flow's rate swings by
//!    half between its losses, and before its first loss it may have had the
//!    whole link for a while (measured at 300 ms, 10 Mbit/s, 0.1 % loss: a
//!    wrong "no" to a second flow, 269 s instead of 78 s; to six, 313 s). On a
//!    link that small the cost of too many flows is a little queueing.
//! 3. Then one more at a time while the last one raised the aggregate rate (by
//!    5 %); one that did not is closed and the count stays.
//!
//! A step lets the flows settle (slow start, a new connection's handshakes),
//! then measures the aggregate rate over a window of a few round trips. A
//! measurement the link did not bound (the reader held the flows back, or there
//! was no chunk left to give a new flow) ends the ramp where it stands.

use std::time::{Duration, Instant};

/// Round trips a window lasts (and a new flow settles for).
const WINDOW_RTTS: u32 = 5;
/// A window lasts at least this (rates over shorter ones are noise), at most the other.
const MIN_WINDOW: Duration = Duration::from_millis(500);
const MAX_WINDOW: Duration = Duration::from_secs(3);
/// The first flow settles this many windows: its slow start is the longest.
const FIRST_SETTLE: u32 = 2;
/// A flow with this much in flight (rate × round trip) fills its link alone: more
/// than a lossy link lets one reno flow keep (at 300 ms, 10 Mbit/s and 0.1 % loss:
/// some 60 kB, and at most the link's 375 kB before its first loss), less than
/// one flow keeps on 50 Mbit/s at 100 ms (600 kB).
pub const FILLING: f64 = 512.0 * 1024.0;
/// Connections tried at once after one whose window stayed small (as many as a
/// browser opens to one server).
pub const JUMP: usize = 6;
/// What each flow after the jump must give against the count before it.
const STEP_GAIN: f64 = 1.05;

/// The connection count and where its measuring stands.
#[derive(Debug)]
pub struct Ramp {
    target: usize,
    max: usize,
    phase: Phase,
    window: Duration,
    /// The shortest round trip seen ([`Ramp::sample_rtt`]), else the first
    /// request's time to its first bytes.
    rtt: Option<Duration>,
    /// The count before this one, and the aggregate rate (bytes/s) measured with it.
    before: Option<(usize, f64)>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No request yet.
    Idle,
    /// Nothing received yet; the first request went out at this time.
    Starting(Instant),
    /// Flows settle until then.
    Settling(Instant),
    /// Measuring since then, from this many bytes received.
    Measuring(Instant, u64),
    /// The count is chosen.
    Done,
}

/// What [`Ramp::observe`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Keep,
    /// One connection more.
    Add,
    /// The last connection added did not pay: one fewer.
    Drop,
}

impl Ramp {
    /// A ramp from one connection up to `max`, starting with [`Ramp::begin`].
    pub fn adaptive(max: usize) -> Ramp {
        Ramp {
            target: 1,
            max: max.max(1),
            phase: Phase::Idle,
            window: MIN_WINDOW,
            rtt: None,
            before: None,
        }
    }

    /// Exactly `n` connections, no measuring.
    pub fn fixed(n: usize) -> Ramp {
        Ramp {
            target: n.max(1),
            max: n.max(1),
            phase: Phase::Done,
            window: MIN_WINDOW,
            rtt: None,
            before: None,
        }
    }

    /// A connection starts: the first one starts the clock for the first bytes.
    pub fn begin(&mut self, now: Instant) {
        if let Phase::Idle = self.phase {
            self.phase = Phase::Starting(now);
        }
    }

    /// A request's round trip (its last byte sent to its answer's head): the
    /// shortest is the link's, the others had a queue or a handshake in them.
    pub fn sample_rtt(&mut self, rtt: Duration) {
        self.rtt = Some(self.rtt.map_or(rtt, |r| r.min(rtt)));
    }

    /// How many connections to use now.
    pub fn target(&self) -> usize {
        self.target
    }

    /// Whether the count is still being chosen.
    pub fn ramping(&self) -> bool {
        !matches!(self.phase, Phase::Done)
    }

    /// Takes the bytes received so far by all flows, and whether anything other
    /// than the link bounded them since the last call (`limited`: the reader held
    /// flows back, or no chunk was left for another flow).
    pub fn observe(&mut self, now: Instant, received: u64, limited: bool) -> Step {
        match self.phase {
            Phase::Done | Phase::Idle => Step::Keep,
            Phase::Starting(_) if received == 0 => Step::Keep,
            Phase::Starting(asked) => {
                // The first bytes came a round trip (or a connection's few) after
                // the request: the window is a few of those.
                let rtt = *self.rtt.get_or_insert(now.duration_since(asked));
                self.window = (rtt * WINDOW_RTTS).clamp(MIN_WINDOW, MAX_WINDOW);
                self.phase = Phase::Settling(now + self.window * FIRST_SETTLE);
                Step::Keep
            }
            _ if limited => {
                self.phase = Phase::Done;
                Step::Keep
            }
            Phase::Settling(until) if now < until => Step::Keep,
            Phase::Settling(_) => {
                self.phase = Phase::Measuring(now, received);
                Step::Keep
            }
            Phase::Measuring(since, _) if now.duration_since(since) < self.window => Step::Keep,
            Phase::Measuring(since, from) => {
                let secs = now.duration_since(since).as_secs_f64();
                self.decide((received - from.min(received)) as f64 / secs, now)
            }
        }
    }

    /// A window ended with `rate` on the current count: the next count, or done.
    fn decide(&mut self, rate: f64, now: Instant) -> Step {
        let next = match self.before {
            None if rate * self.rtt.unwrap_or_default().as_secs_f64() >= FILLING => None,
            None => Some(JUMP.min(self.max)),
            // The jump from one is kept (see the module's comment); later steps must pay.
            Some((from, before)) if from > 1 && rate < before * STEP_GAIN => {
                return self.settle(self.target - 1)
            }
            Some(_) => Some(self.target + 1).filter(|&n| n <= self.max),
        };
        self.before = Some((self.target, rate));
        match next {
            Some(n) if n > self.target => {
                self.target = n;
                self.phase = Phase::Settling(now + self.window);
                Step::Add
            }
            _ => {
                self.phase = Phase::Done;
                Step::Keep
            }
        }
    }

    /// The last change did not pay: back to `n` connections, for good.
    fn settle(&mut self, n: usize) -> Step {
        self.target = n.max(1);
        self.phase = Phase::Done;
        Step::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a ramp on a link where `n` flows get `rate(n)` bytes/s, in 10 ms
    /// steps, for at most `secs`; returns the count it ends with and when.
    fn run(max: usize, rtt: Duration, secs: u64, rate: impl Fn(usize) -> f64) -> (usize, f64) {
        let t0 = Instant::now();
        let mut ramp = Ramp::adaptive(max);
        ramp.begin(t0);
        let mut received = 0.0;
        let step = Duration::from_millis(10);
        let mut now = t0;
        while now.duration_since(t0) < Duration::from_secs(secs) {
            now += step;
            if now.duration_since(t0) >= rtt {
                received += rate(ramp.target()) * step.as_secs_f64();
            }
            ramp.observe(now, received as u64, false);
            if !ramp.ramping() {
                return (ramp.target(), now.duration_since(t0).as_secs_f64());
            }
        }
        (ramp.target(), secs as f64)
    }

    #[test]
    fn a_link_one_flow_fills_keeps_one() {
        // 50 Mbit/s at 100 ms: 600 kB in flight.
        let (n, when) = run(8, Duration::from_millis(100), 60, |_| 6e6);
        assert_eq!(n, 1);
        assert!(when < 3.0, "{when}");
    }

    #[test]
    fn a_small_window_jumps_and_stays() {
        // 10 Mbit/s at 20 ms: 25 kB in flight. More flows get no more, but one
        // flow's first seconds cannot tell that from a loss-bound flow's.
        let (n, when) = run(8, Duration::from_millis(20), 60, |_| 1.25e6);
        assert_eq!(n, JUMP);
        assert!(when < 5.0, "{when}");
    }

    #[test]
    fn loss_bound_flows_are_added_while_they_pay() {
        // Each flow gets 150 kB/s up to a 1.25 MB/s link: 8 flows fill it.
        let (n, _) = run(8, Duration::from_millis(300), 120, |n| {
            (n as f64 * 1.5e5).min(1.25e6)
        });
        assert_eq!(n, 8);
        // 200 kB/s each: 6 fill it, a seventh does not pay.
        let (n, _) = run(8, Duration::from_millis(300), 120, |n| {
            (n as f64 * 2e5).min(1.25e6)
        });
        assert_eq!(n, 6);
        // Without a ceiling, up to the most allowed.
        let (n, when) = run(8, Duration::from_millis(300), 120, |n| n as f64 * 2e5);
        assert_eq!(n, 8);
        assert!(when < 30.0, "{when}");
    }

    #[test]
    fn flows_that_do_not_pay_are_dropped() {
        // Six pay, a seventh does not.
        let (n, _) = run(8, Duration::from_millis(300), 60, |n| match n {
            ..=6 => n as f64 * 1e5,
            _ => 5.9e5,
        });
        assert_eq!(n, 6);
        // With at most two.
        let (n, _) = run(2, Duration::from_millis(300), 60, |n| n as f64 * 1e5);
        assert_eq!(n, 2);
    }

    #[test]
    fn a_reader_that_holds_flows_back_ends_the_ramp() {
        let t0 = Instant::now();
        let mut ramp = Ramp::adaptive(8);
        ramp.begin(t0);
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(ramp.observe(ms(100), 1000, false), Step::Keep);
        assert!(ramp.ramping());
        assert_eq!(ramp.observe(ms(200), 2000, true), Step::Keep);
        assert!(!ramp.ramping());
        assert_eq!(ramp.target(), 1);
        assert_eq!(ramp.observe(ms(9000), 1 << 30, false), Step::Keep);
        assert_eq!(Ramp::fixed(3).target(), 3);
        assert!(!Ramp::fixed(3).ramping());
    }
}
