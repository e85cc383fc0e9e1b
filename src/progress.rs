//! What the user sees while work happens: plain lines, a live progress line per
//! layer when stdout is a terminal, nothing but errors with `-q`. While a transfer
//! waits (a slow registry, a retry's back-off), [`idle`] keeps the live line moving:
//! the rate falls and it says how long it has been waiting.

use std::cell::RefCell;
use std::io::Write;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

thread_local! {
    /// The live meter on the terminal, if any (barge is single-threaded).
    static ACTIVE: RefCell<Weak<RefCell<Line>>> = const { RefCell::new(Weak::new()) };
}

/// Redraws the live meter while nothing arrives (at most once a second).
pub fn idle() {
    let Some(line) = ACTIVE.with(|a| a.borrow().upgrade()) else {
        return;
    };
    let mut line = line.borrow_mut();
    let now = Instant::now();
    if line
        .last
        .map_or(true, |t| now - t >= Duration::from_secs(1))
    {
        line.last = Some(now);
        line.draw(now);
    }
}

/// How much to say.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verbosity {
    Quiet,
    Normal,
}

/// The output channel of a command.
pub struct Output {
    verbosity: Verbosity,
    tty: bool,
}

impl Output {
    pub fn new(quiet: bool) -> Output {
        // SAFETY: isatty only inspects the descriptor.
        let tty = unsafe { libc::isatty(1) } == 1;
        let verbosity = if quiet {
            Verbosity::Quiet
        } else {
            Verbosity::Normal
        };
        Output { verbosity, tty }
    }

    /// Prints one line (nothing when quiet).
    pub fn line(&self, text: impl std::fmt::Display) {
        if self.verbosity == Verbosity::Normal {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
        }
    }

    /// A live progress meter for `label`, or a silent one when not on a terminal.
    pub fn meter(&self, label: &str, total: Option<u64>) -> Meter {
        let live = self.tty && self.verbosity == Verbosity::Normal;
        let now = Instant::now();
        let line = Rc::new(RefCell::new(Line {
            label: label.to_string(),
            total,
            done: 0,
            start: now,
            last: None,
            last_bytes: now,
        }));
        if live {
            ACTIVE.with(|a| *a.borrow_mut() = Rc::downgrade(&line));
        }
        Meter { live, line }
    }
}

/// Counts bytes and redraws one terminal line at most ten times a second.
pub struct Meter {
    live: bool,
    line: Rc<RefCell<Line>>,
}

/// What a meter shows.
struct Line {
    label: String,
    total: Option<u64>,
    done: u64,
    start: Instant,
    /// When the line was last drawn.
    last: Option<Instant>,
    /// When bytes last arrived.
    last_bytes: Instant,
}

impl Meter {
    pub fn add(&mut self, n: u64) {
        let mut line = self.line.borrow_mut();
        line.done += n;
        if !self.live {
            return;
        }
        let now = Instant::now();
        if n > 0 {
            line.last_bytes = now;
        }
        if line
            .last
            .is_some_and(|t| now - t < Duration::from_millis(100))
        {
            return;
        }
        line.last = Some(now);
        line.draw(now);
    }

    /// Clears the live line so the final plain line can take its place.
    pub fn finish(&mut self) {
        if self.live && self.line.borrow().last.is_some() {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
        }
    }
}

impl Line {
    fn draw(&self, now: Instant) {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K\t{}", self.render(now));
        let _ = out.flush();
    }

    /// `LABEL DONE / TOTAL RATE/s`, and how long nothing has arrived once that is 2 s or more.
    fn render(&self, now: Instant) -> String {
        let secs = (now - self.start).as_secs_f64().max(0.001);
        let rate = human_bytes((self.done as f64 / secs) as u64);
        let total = self
            .total
            .map(|t| format!(" / {}", human_bytes(t)))
            .unwrap_or_default();
        let waiting = (now - self.last_bytes).as_secs();
        let waiting = if waiting >= 2 {
            format!(", waiting {waiting} s")
        } else {
            String::new()
        };
        format!(
            "{} {}{} {rate}/s{waiting}",
            self.label,
            human_bytes(self.done),
            total
        )
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A reader that reports progress to a meter as bytes pass.
pub struct MeterReader<'m, R> {
    pub inner: R,
    pub meter: &'m mut Meter,
}

impl<R: std::io::Read> std::io::Read for MeterReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.meter.add(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_says_how_long_it_has_been_waiting() {
        let t0 = Instant::now();
        let line = Line {
            label: "abc".into(),
            total: Some(4096),
            done: 2048,
            start: t0,
            last: None,
            last_bytes: t0 + Duration::from_secs(1),
        };
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(line.render(at(2)), "abc 2.0 KiB / 4.0 KiB 1.0 KiB/s");
        assert_eq!(
            line.render(at(8)),
            "abc 2.0 KiB / 4.0 KiB 256 B/s, waiting 7 s"
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
