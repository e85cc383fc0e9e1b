//! What the user sees while work happens: plain lines, a live progress line per
//! layer when stdout is a terminal, nothing but errors with `-q`.

use std::io::Write;
use std::time::{Duration, Instant};

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
        Meter {
            live,
            label: label.to_string(),
            total,
            done: 0,
            start: Instant::now(),
            last: None,
        }
    }
}

/// Counts bytes and redraws one terminal line at most ten times a second.
pub struct Meter {
    live: bool,
    label: String,
    total: Option<u64>,
    done: u64,
    start: Instant,
    last: Option<Instant>,
}

impl Meter {
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if !self.live {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now - t < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(now);
        self.draw();
    }

    fn draw(&self) {
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let rate = human_bytes((self.done as f64 / secs) as u64);
        let total = self
            .total
            .map(|t| format!(" / {}", human_bytes(t)))
            .unwrap_or_default();
        let mut out = std::io::stdout().lock();
        let _ = write!(
            out,
            "\r\x1b[2K\t{} {}{} {}/s",
            self.label,
            human_bytes(self.done),
            total,
            rate
        );
        let _ = out.flush();
    }

    /// Clears the live line so the final plain line can take its place.
    pub fn finish(&mut self) {
        if self.live && self.last.is_some() {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
        }
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
    use super::human_bytes;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
