//! Asking the user: a line from the terminal (without echo for passwords), or a password
//! from standard input (`--password-stdin`). Shared by login, pull and push.

use crate::error::{Context, Error, Kind, Result};
use std::io::{Read, Write};

/// Longest answer read from the terminal or from stdin.
const MAX_ANSWER: u64 = 64 << 10;

/// True when standard input is a terminal.
pub fn stdin_is_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(0) == 1 }
}

/// Reads one line from the terminal on stdin after printing `label` on stderr, without
/// echo when `echo` is false. The caller checks [`stdin_is_terminal`] first.
pub fn ask(label: &str, echo: bool) -> Result<String> {
    eprint!("{label}");
    let _ = std::io::stderr().flush();
    let saved = if echo { None } else { disable_echo() };
    let line = read_line();
    if let Some(t) = saved {
        // SAFETY: restores the attributes read by disable_echo.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        eprintln!();
    }
    line
}

/// Reads up to a newline, one byte at a time (nothing past the line is consumed), and
/// stops at Ctrl-C: the handler makes read return EINTR.
fn read_line() -> Result<String> {
    let mut line = Vec::new();
    let mut stdin = std::io::stdin().lock();
    let mut byte = [0u8; 1];
    loop {
        match stdin.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                if crate::signal::interrupted() {
                    return Err(Error::with_kind(Kind::Interrupted, "interrupted"));
                }
            }
            Err(e) => return Err(Error::from(e).context("read from terminal")),
        }
        if line.len() as u64 > MAX_ANSWER {
            return Err(Error::new("answer too long"));
        }
    }
    let text = String::from_utf8(line).map_err(|_| Error::new("answer is not UTF-8"))?;
    Ok(text.trim_end_matches('\r').to_string())
}

/// The whole of stdin, less a trailing newline (`--password-stdin`).
pub fn password_from_stdin() -> Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .lock()
        .take(MAX_ANSWER)
        .read_to_string(&mut s)
        .context("read password from stdin")?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        return Err(Error::new("--password-stdin: standard input is empty")
            .hint("pipe the password in, e.g. `cat FILE | barge … --password-stdin`"));
    }
    Ok(s)
}

fn disable_echo() -> Option<libc::termios> {
    // SAFETY: tcgetattr fills a zeroed termios; tcsetattr applies a copy with ECHO cleared.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            return None;
        }
        let mut quiet = t;
        quiet.c_lflag &= !libc::ECHO;
        libc::tcsetattr(0, libc::TCSANOW, &quiet);
        Some(t)
    }
}
