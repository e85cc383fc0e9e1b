//! Ctrl-C and SIGTERM: set a flag that long loops check, so work stops cleanly
//! and staging directories are removed before the process exits.

use crate::error::{Error, Kind, Result};
use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the handlers for SIGINT and SIGTERM. Blocking reads return EINTR
/// after the signal (no SA_RESTART), so the flag is noticed promptly.
pub fn install() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction with a handler that only stores to an atomic.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = handler as usize;
            libc::sigemptyset(&mut act.sa_mask);
            act.sa_flags = 0;
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}

/// True once Ctrl-C or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails with an "interrupted" error once a signal arrived.
pub fn check() -> Result<()> {
    if interrupted() {
        Err(Error::with_kind(Kind::Interrupted, "interrupted"))
    } else {
        Ok(())
    }
}

/// A reader that stops with an "interrupted" error once a signal arrived.
pub struct Interruptible<R>(pub R);

impl<R: std::io::Read> std::io::Read for Interruptible<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        check()?;
        match self.0.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted && interrupted() => {
                Err(Error::with_kind(Kind::Interrupted, "interrupted").into())
            }
            r => r,
        }
    }
}
