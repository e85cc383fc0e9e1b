//! What the user sees while work happens: plain lines, and a meter per blob
//! transfer (pull, push, commit; a `copy` uses the same calls) in one of three
//! styles chosen by `--progress=auto|tty|plain|quiet`:
//!
//! - tty: a live layer line (bar, percent, bytes, speed, ETA) and a total line
//!   (layers and bytes done of all), redrawn at most ten times a second;
//! - plain: no escape codes; a line every few seconds while bytes arrive;
//! - quiet: nothing but errors.
//!
//! The caller's own end-of-layer line (`Output::layer_done`) is the clean final
//! line in every style. While a transfer waits (a slow registry, a retry's
//! back-off), the network code calls [`idle`]: the meter keeps its pace, its
//! speed falls and it says how long nothing has arrived. The formatting and pacing below are pure functions of
//! byte counts and a clock value (time since the meter started), so unit tests
//! check exact lines without sleeping.

use crate::error::{Error, Result};
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

thread_local! {
    /// The meter of the transfer under way, if any (barge is single-threaded).
    static ACTIVE: RefCell<Weak<RefCell<Live>>> = const { RefCell::new(Weak::new()) };
}

/// Called while a transfer waits for bytes: the meter under way redraws (tty) or
/// prints its line (plain) at its usual pace, saying how long it has waited.
pub fn idle() {
    let Some(live) = ACTIVE.with(|a| a.borrow().upgrade()) else {
        return;
    };
    let Ok(mut live) = live.try_borrow_mut() else {
        return;
    };
    let now = live.start.elapsed();
    let width = live.width;
    if let Some(text) = live.state.tick(now, width) {
        write_out(&text);
    }
}

/// What `--progress` asked for.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Progress {
    /// tty when stdout is a terminal, else plain.
    #[default]
    Auto,
    Tty,
    Plain,
    Quiet,
}

impl Progress {
    /// `auto`, `tty`, `plain` or `quiet`, as docker spells them.
    pub fn parse(s: &str) -> Result<Progress> {
        match s {
            "auto" => Ok(Progress::Auto),
            "tty" => Ok(Progress::Tty),
            "plain" => Ok(Progress::Plain),
            "quiet" => Ok(Progress::Quiet),
            _ => Err(Error::new(format!("invalid --progress value {s:?}"))
                .hint("use --progress=auto, tty, plain or quiet")),
        }
    }

    /// Auto made concrete: tty or plain depending on what stdout is.
    fn style(self, stdout_is_tty: bool) -> Style {
        match self {
            Progress::Auto if stdout_is_tty => Style::Tty,
            Progress::Auto | Progress::Plain => Style::Plain,
            Progress::Tty => Style::Tty,
            Progress::Quiet => Style::Quiet,
        }
    }
}

/// How output is drawn, once `auto` is resolved.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Style {
    Tty,
    Plain,
    Quiet,
}

/// Redraws of the live lines: at most ten a second.
const TTY_EVERY: Duration = Duration::from_millis(100);
/// Plain lines of a transfer still going: one every five seconds.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// A meter says how long nothing has arrived once it is this long.
const WAITING_AFTER: Duration = Duration::from_secs(2);
/// Speed (and ETA) is shown only after this long: before, it is noise.
const SPEED_AFTER: Duration = Duration::from_millis(250);
/// Width of the bar between its brackets.
const BAR_WIDTH: usize = 20;

/// Layers and bytes of a whole transfer, and how many are done.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Totals {
    pub layers: usize,
    pub layers_done: usize,
    pub bytes: u64,
    pub bytes_done: u64,
}

/// The output channel of a command.
pub struct Output {
    style: Style,
    plain_every: Duration,
    width: Option<usize>,
    totals: Cell<Totals>,
}

impl Output {
    pub fn new(progress: Progress) -> Output {
        // SAFETY: isatty only inspects the descriptor.
        let tty = unsafe { libc::isatty(1) } == 1;
        Output {
            style: progress.style(tty),
            plain_every: plain_interval(),
            width: terminal_width(),
            totals: Cell::new(Totals::default()),
        }
    }

    /// Prints one line (nothing when quiet).
    pub fn line(&self, text: impl std::fmt::Display) {
        if self.style != Style::Quiet {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
        }
    }

    /// Starts the total line: `layers` blobs of `bytes` in all are to move.
    pub fn start(&self, layers: usize, bytes: u64) {
        self.totals.set(Totals {
            layers,
            bytes,
            ..Totals::default()
        });
    }

    /// A meter for one blob of `size` bytes (when known), labelled `label`.
    pub fn meter(&self, label: &str, size: Option<u64>) -> Meter {
        let state = MeterState::new(self.style, label, size, self.totals.get(), self.plain_every);
        let quiet = self.style == Style::Quiet;
        let live = Rc::new(RefCell::new(Live {
            state,
            width: self.width,
            start: Instant::now(),
        }));
        if !quiet {
            ACTIVE.with(|a| *a.borrow_mut() = Rc::downgrade(&live));
        }
        Meter { live, quiet }
    }

    /// One blob of `bytes` is done (moved, skipped or mounted): counts it in the
    /// total and prints its final `line`.
    pub fn layer_done(&self, bytes: u64, line: impl std::fmt::Display) {
        let mut t = self.totals.get();
        t.layers_done += 1;
        t.bytes_done = t.bytes_done.saturating_add(bytes);
        self.totals.set(t);
        self.line(line);
    }
}

/// `BARGE_PROGRESS_INTERVAL_MS` (for tests) or five seconds.
fn plain_interval() -> Duration {
    std::env::var("BARGE_PROGRESS_INTERVAL_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(PLAIN_EVERY)
}

/// Columns of the terminal on stdout, if it is one.
fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a winsize we own; nothing else is touched.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

/// Counts the bytes of one blob and draws them in the output's style.
pub struct Meter {
    live: Rc<RefCell<Live>>,
    quiet: bool,
}

/// A meter's state with its clock and the terminal's width ([`idle`] reaches it too).
struct Live {
    state: MeterState,
    width: Option<usize>,
    start: Instant,
}

impl Meter {
    pub fn add(&mut self, n: u64) {
        if self.quiet {
            return;
        }
        let mut live = self.live.borrow_mut();
        let now = live.start.elapsed();
        let width = live.width;
        if let Some(text) = live.state.add(n, now, width) {
            write_out(&text);
        }
    }

    /// Clears the live lines so the final line can take their place.
    pub fn finish(&mut self) {
        if let Some(text) = self.live.borrow_mut().state.clear() {
            write_out(&text);
        }
    }
}

impl Drop for Meter {
    /// A transfer that failed leaves no half-drawn lines under the error.
    fn drop(&mut self) {
        self.finish();
    }
}

fn write_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// A meter without a clock or a terminal: bytes and times in, text out.
#[derive(Debug)]
struct MeterState {
    style: Style,
    label: String,
    size: Option<u64>,
    done: u64,
    totals: Totals,
    pace: Pace,
    drawn: bool,
    /// When bytes last arrived (since the start).
    last_bytes: Duration,
}

impl MeterState {
    fn new(
        style: Style,
        label: &str,
        size: Option<u64>,
        totals: Totals,
        plain_every: Duration,
    ) -> MeterState {
        let pace = match style {
            Style::Tty => Pace::new(TTY_EVERY, Duration::ZERO),
            _ => Pace::new(plain_every, plain_every),
        };
        MeterState {
            style,
            label: label.to_string(),
            size,
            done: 0,
            totals,
            pace,
            drawn: false,
            last_bytes: Duration::ZERO,
        }
    }

    /// `n` more bytes at `now` (since the start): the text to write, if due.
    fn add(&mut self, n: u64, now: Duration, width: Option<usize>) -> Option<String> {
        self.done += n;
        if n > 0 {
            self.last_bytes = now;
        }
        self.tick(now, width)
    }

    /// The text to write at `now`, if due (also while nothing arrives).
    fn tick(&mut self, now: Duration, width: Option<usize>) -> Option<String> {
        if self.style == Style::Quiet || !self.pace.due(now) {
            return None;
        }
        let waited = waiting(now.saturating_sub(self.last_bytes));
        match self.style {
            Style::Tty => {
                let frame = self.frame(now, &waited, width);
                self.drawn = true;
                Some(frame)
            }
            _ => Some(format!(
                "{}{waited}\n",
                plain_line(&self.label, self.done, self.size, now)
            )),
        }
    }

    /// The live layer line and total line, replacing the previous ones.
    fn frame(&self, now: Duration, waited: &str, width: Option<usize>) -> String {
        let layer = tty_line(&self.label, self.done, self.size, now) + waited;
        let layer = fit(layer, width);
        let total = fit(total_line(&self.totals, self.done), width);
        let up = if self.drawn { "\r\x1b[1A" } else { "" };
        format!("{up}\x1b[2K{layer}\n\x1b[2K{total}")
    }

    /// Erases the live lines (tty, once drawn), leaving the cursor where they began.
    fn clear(&mut self) -> Option<String> {
        if !std::mem::take(&mut self.drawn) {
            return None;
        }
        Some("\r\x1b[2K\x1b[1A\x1b[2K".to_string())
    }
}

/// When the next line is due: never before `next`, then every `every`.
#[derive(Debug)]
struct Pace {
    every: Duration,
    next: Duration,
}

impl Pace {
    fn new(every: Duration, first: Duration) -> Pace {
        Pace { every, next: first }
    }

    fn due(&mut self, now: Duration) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.every;
        true
    }
}

/// Cuts a line to the terminal's width (a leading tab takes 8 columns), so the
/// cursor moves stay right.
fn fit(line: String, width: Option<usize>) -> String {
    let Some(w) = width else { return line };
    let (indent, rest, tab) = match line.strip_prefix('\t') {
        Some(rest) => ("\t", rest, 8),
        None => ("", line.as_str(), 0),
    };
    let room = w.saturating_sub(1 + tab);
    if rest.chars().count() <= room {
        return line;
    }
    format!("{indent}{}", rest.chars().take(room).collect::<String>())
}

/// `sha256:abcd1234 12.0 MiB / 60.1 MiB (20%) 4.1 MiB/s`.
pub fn plain_line(label: &str, done: u64, size: Option<u64>, elapsed: Duration) -> String {
    let mut line = format!("\t{label} {}", human_bytes(done));
    if let Some(size) = size {
        line.push_str(&format!(
            " / {} ({}%)",
            human_bytes(size),
            percent(done, size)
        ));
    }
    if let Some(s) = speed(done, elapsed) {
        line.push_str(&format!(" {}/s", human_bytes(s)));
    }
    line
}

/// `sha256:abcd1234 [====>               ]  20% 12.0 MiB / 60.1 MiB 4.1 MiB/s ETA 12s`.
pub fn tty_line(label: &str, done: u64, size: Option<u64>, elapsed: Duration) -> String {
    let s = speed(done, elapsed);
    let mut line = format!("\t{label}");
    match size {
        Some(size) => line.push_str(&format!(
            " {} {:>3}% {} / {}",
            bar(done, size, BAR_WIDTH),
            percent(done, size),
            human_bytes(done),
            human_bytes(size)
        )),
        None => line.push_str(&format!(" {}", human_bytes(done))),
    }
    if let Some(s) = s {
        line.push_str(&format!(" {}/s", human_bytes(s)));
    }
    if let Some(size) = size {
        let left = size.saturating_sub(done);
        let eta = match left {
            0 => Some(Duration::ZERO),
            _ => s.and_then(|s| eta(left, s)),
        };
        line.push_str(&format!(" ETA {}", eta.map_or("--".into(), human_duration)));
    }
    line
}

/// `total: 1/3 layers, 15.0 MiB / 60.1 MiB (25%)`, counting `current` bytes of
/// the layer under way.
pub fn total_line(t: &Totals, current: u64) -> String {
    let done = t.bytes_done.saturating_add(current);
    format!(
        "total: {}/{}, {} / {} ({}%)",
        t.layers_done,
        count(t.layers, "layer"),
        human_bytes(done),
        human_bytes(t.bytes),
        percent(done, t.bytes)
    )
}

/// `, waiting 7 s` once nothing has arrived for a while, else nothing.
pub fn waiting(since_bytes: Duration) -> String {
    if since_bytes < WAITING_AFTER {
        return String::new();
    }
    format!(", waiting {} s", since_bytes.as_secs())
}

/// `[=========>          ]`: `width` cells between the brackets.
pub fn bar(done: u64, size: u64, width: usize) -> String {
    let filled = if size == 0 {
        width
    } else {
        (u128::from(done.min(size)) * width as u128 / u128::from(size)) as usize
    };
    let mut s = String::with_capacity(width + 2);
    s.push('[');
    s.push_str(&"=".repeat(filled));
    if filled < width {
        s.push('>');
        s.push_str(&" ".repeat(width - filled - 1));
    }
    s.push(']');
    s
}

/// Whole percent of `size`, at most 100; an empty blob is 100% done.
pub fn percent(done: u64, size: u64) -> u64 {
    if size == 0 {
        return 100;
    }
    (u128::from(done.min(size)) * 100 / u128::from(size)) as u64
}

/// Bytes per second so far; none before there is enough to say.
pub fn speed(done: u64, elapsed: Duration) -> Option<u64> {
    if elapsed < SPEED_AFTER {
        return None;
    }
    Some((u128::from(done) * 1000 / elapsed.as_millis()) as u64)
}

/// Time left for `remaining` bytes at `speed`; unknown at a standstill.
pub fn eta(remaining: u64, speed: u64) -> Option<Duration> {
    (speed > 0).then(|| Duration::from_secs(remaining.div_ceil(speed)))
}

/// `7s`, `2m05s`, `1h02m`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `1 layer`, `3 layers`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `1536` → `1.5 KiB`: the one size format of barge's output.
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

/// A reader that tells `on_bytes` how many bytes each read gave (for progress that
/// is not a [`Meter`] of this output: a commit's layer, an archive's member).
pub struct Counted<'c, R> {
    pub inner: R,
    pub on_bytes: &'c mut dyn FnMut(u64),
}

impl<R: std::io::Read> std::io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn state(style: Style, size: Option<u64>) -> MeterState {
        let totals = Totals {
            layers: 3,
            layers_done: 1,
            bytes: 100 * MIB,
            bytes_done: 40 * MIB,
        };
        MeterState::new(style, "sha256:abcd1234", size, totals, ms(5000))
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_bytes(62973093), "60.1 MiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn plurals() {
        assert_eq!(count(0, "layer"), "0 layers");
        assert_eq!(count(1, "layer"), "1 layer");
        assert_eq!(count(2, "layer"), "2 layers");
    }

    #[test]
    fn progress_values() {
        assert_eq!(Progress::parse("auto").unwrap(), Progress::Auto);
        assert_eq!(Progress::parse("tty").unwrap(), Progress::Tty);
        assert_eq!(Progress::parse("plain").unwrap(), Progress::Plain);
        assert_eq!(Progress::parse("quiet").unwrap(), Progress::Quiet);
        let e = Progress::parse("fancy").unwrap_err();
        assert!(e.to_string().contains("\"fancy\""), "{e}");
        assert_eq!(Progress::Auto.style(true), Style::Tty);
        assert_eq!(Progress::Auto.style(false), Style::Plain);
        assert_eq!(Progress::Tty.style(false), Style::Tty);
        assert_eq!(Progress::Plain.style(true), Style::Plain);
    }

    #[test]
    fn bars_and_percents() {
        assert_eq!(bar(0, 100, 10), "[>         ]");
        assert_eq!(bar(25, 100, 10), "[==>       ]");
        assert_eq!(bar(99, 100, 10), "[=========>]");
        assert_eq!(bar(100, 100, 10), "[==========]");
        assert_eq!(bar(150, 100, 10), "[==========]");
        assert_eq!(bar(0, 0, 4), "[====]");
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(7, 3), 100);
        assert_eq!(percent(0, 0), 100);
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
    }

    #[test]
    fn speed_and_eta() {
        assert_eq!(speed(MIB, ms(100)), None);
        assert_eq!(speed(4 * MIB, ms(2000)), Some(2 * MIB));
        assert_eq!(speed(0, ms(9000)), Some(0));
        assert_eq!(eta(10 * MIB, 2 * MIB), Some(Duration::from_secs(5)));
        assert_eq!(eta(1, 2 * MIB), Some(Duration::from_secs(1)));
        assert_eq!(eta(10, 0), None);
        assert_eq!(human_duration(Duration::from_secs(7)), "7s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(human_duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn exact_lines() {
        let size = 62973093;
        assert_eq!(
            plain_line("sha256:abcd1234", 12 * MIB, Some(size), ms(3000)),
            "\tsha256:abcd1234 12.0 MiB / 60.1 MiB (19%) 4.0 MiB/s"
        );
        assert_eq!(
            plain_line("sha256:abcd1234", 512, None, ms(100)),
            "\tsha256:abcd1234 512 B"
        );
        assert_eq!(
            tty_line("sha256:abcd1234", 15 * MIB, Some(60 * MIB), ms(5000)),
            "\tsha256:abcd1234 [=====>              ]  25% 15.0 MiB / 60.0 MiB 3.0 MiB/s ETA 15s"
        );
        assert_eq!(
            tty_line("sha256:abcd1234", 0, Some(MIB), ms(50)),
            "\tsha256:abcd1234 [>                   ]   0% 0 B / 1.0 MiB ETA --"
        );
        assert_eq!(
            tty_line("x", MIB, Some(MIB), ms(10)),
            "\tx [====================] 100% 1.0 MiB / 1.0 MiB ETA 0s"
        );
        assert_eq!(
            tty_line("x", 3 * MIB, None, ms(1000)),
            "\tx 3.0 MiB 3.0 MiB/s"
        );
        let t = Totals {
            layers: 3,
            layers_done: 1,
            bytes: 100 * MIB,
            bytes_done: 40 * MIB,
        };
        assert_eq!(
            total_line(&t, 10 * MIB),
            "total: 1/3 layers, 50.0 MiB / 100.0 MiB (50%)"
        );
    }

    #[test]
    fn plain_pace_is_steady_and_has_no_escapes() {
        let mut m = state(Style::Plain, Some(20 * MIB));
        // Nothing before the first interval, however many bytes arrive.
        assert_eq!(m.add(MIB, ms(0), None), None);
        assert_eq!(m.add(MIB, ms(4999), None), None);
        let first = m.add(MIB, ms(5000), None).expect("a line at 5 s");
        assert_eq!(
            first,
            "\tsha256:abcd1234 3.0 MiB / 20.0 MiB (15%) 614.4 KiB/s\n"
        );
        // The next one five seconds after the last, not before.
        assert_eq!(m.add(MIB, ms(9000), None), None);
        let second = m.add(MIB, ms(10_500), None).expect("a line at 10.5 s");
        assert!(second.starts_with("\tsha256:abcd1234 5.0 MiB / 20.0 MiB (25%)"));
        // A slow transfer that sends after a pause gets its line at once.
        assert!(m.add(1, ms(30_000), None).is_some());
        assert!(!first.contains('\x1b') && !second.contains('\x1b'));
        assert_eq!(m.clear(), None, "plain never needs clearing");
    }

    #[test]
    fn tty_redraws_at_most_ten_times_a_second() {
        let mut m = state(Style::Tty, Some(10 * MIB));
        let first = m.add(MIB, ms(0), None).expect("first bytes draw at once");
        assert_eq!(
            first,
            "\x1b[2K\tsha256:abcd1234 [==>                 ]  10% 1.0 MiB / 10.0 MiB ETA --\n\
             \x1b[2Ktotal: 1/3 layers, 41.0 MiB / 100.0 MiB (41%)"
        );
        let frames = (1..=100)
            .filter_map(|i| m.add(1024, ms(i * 10), None))
            .collect::<Vec<_>>();
        assert_eq!(frames.len(), 10, "1 s of reads every 10 ms");
        assert!(frames.iter().all(|f| f.starts_with("\r\x1b[1A\x1b[2K\t")));
        assert_eq!(m.clear().as_deref(), Some("\r\x1b[2K\x1b[1A\x1b[2K"));
        assert_eq!(m.clear(), None, "cleared once");
    }

    #[test]
    fn tty_lines_fit_the_terminal() {
        let mut m = state(Style::Tty, Some(10 * MIB));
        let frame = m.add(MIB, ms(0), Some(30)).unwrap();
        for line in frame.split('\n') {
            let visible = line.trim_start_matches("\r\x1b[1A").replace("\x1b[2K", "");
            let columns = visible.replace('\t', "        ").chars().count();
            assert_eq!(columns, 29, "{visible:?}");
        }
    }

    #[test]
    fn a_wait_keeps_the_pace_and_says_how_long() {
        let mut m = state(Style::Plain, Some(4 * MIB));
        assert_eq!(m.add(MIB, ms(1000), None), None);
        // Retries and back-offs tick without bytes: the line keeps its pace.
        assert_eq!(m.tick(ms(4000), None), None);
        assert_eq!(
            m.tick(ms(5000), None).as_deref(),
            Some("\tsha256:abcd1234 1.0 MiB / 4.0 MiB (25%) 204.8 KiB/s, waiting 4 s\n")
        );
        assert_eq!(m.tick(ms(9000), None), None);
        let later = m.tick(ms(10_000), None).unwrap();
        assert!(later.ends_with("102.4 KiB/s, waiting 9 s\n"), "{later:?}");
        // Bytes again: no more waiting.
        let back = m.add(MIB, ms(15_000), None).unwrap();
        assert!(back.ends_with("(50%) 136.5 KiB/s\n"), "{back:?}");
        let mut t = state(Style::Tty, Some(4 * MIB));
        assert!(t.add(MIB, ms(0), None).is_some());
        let frame = t.tick(ms(3000), None).unwrap();
        assert!(frame.contains("ETA 10s, waiting 3 s\n"), "{frame:?}");
        assert_eq!(waiting(ms(1999)), "");
    }

    #[test]
    fn idle_reaches_the_meter_under_way_only() {
        let out = Output {
            style: Style::Quiet,
            plain_every: ms(1),
            width: None,
            totals: Cell::new(Totals::default()),
        };
        let m = out.meter("q", Some(1));
        assert!(
            ACTIVE.with(|a| a.borrow().upgrade()).is_none(),
            "quiet registers none"
        );
        let loud = Output {
            style: Style::Plain,
            ..out
        };
        let m2 = loud.meter("p", Some(1));
        assert!(ACTIVE.with(|a| a.borrow().upgrade()).is_some());
        drop((m, m2));
        assert!(ACTIVE.with(|a| a.borrow().upgrade()).is_none());
        idle();
    }

    #[test]
    fn quiet_says_nothing() {
        let mut m = state(Style::Quiet, Some(MIB));
        assert_eq!(m.add(MIB, ms(0), None), None);
        assert_eq!(m.add(MIB, ms(60_000), None), None);
        assert_eq!(m.clear(), None);
    }
}
