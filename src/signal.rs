//! Ctrl-C and SIGTERM: set a flag that long loops check, so work stops cleanly
//! and staging directories are removed before the process exits. The signal
//! that came is kept, so the process exits 128 + its number (130, 143) as shells expect.

use crate::error::{Error, Kind, Result};
use std::sync::atomic::{AtomicI32, Ordering};

/// The number of the first signal that arrived, 0 if none.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    let _ = SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
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
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// The exit status for the signal that arrived (128 + its number), if one did.
pub fn exit_status() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(128 + sig),
    }
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
