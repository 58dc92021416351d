//! Ending cleanly on SIGINT, SIGTERM and SIGHUP, as OpenSSH's `sftp` does: the server
//! child (ssh, or the `-D` command) is terminated instead of being left behind.
//!
//! [`catch_signals`] installs handlers that only record the signal and write a byte to a
//! pipe that every event loop polls. On its next turn the loop fails each connection with
//! "interrupted by SIGTERM" (sending the child SIGTERM); the errors unwind the program,
//! and [`caught`] tells it to exit with `128 + signal`. The handlers reset themselves
//! (`SA_RESETHAND`), so a second signal kills the process at once if it is stuck
//! elsewhere. Opt-in: a library user who does not call it keeps the default dispositions.

use std::io;
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The first signal caught (0: none).
static CAUGHT: AtomicI32 = AtomicI32::new(0);
/// The write end of the wake-up pipe (-1 until installed).
static WAKE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// The read end, polled by every reactor.
static WAKE_READ: OnceLock<RawFd> = OnceLock::new();

/// The signals that end sftpipe cleanly.
const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work: an atomic store and a write(2), errno preserved.
    let _ = CAUGHT.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    let fd = WAKE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        let errno = nix::errno::Errno::last_raw();
        // SAFETY: writes one byte from a static buffer to a descriptor we own; the pipe is
        // non-blocking, and a full pipe (already signalled) loses nothing.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
        nix::errno::Errno::set_raw(errno);
    }
}

/// Installs the handlers for SIGINT, SIGTERM and SIGHUP (once; later calls do nothing). A
/// signal the process was started with ignored (`nohup`, a background job) stays ignored.
pub fn catch_signals() -> io::Result<()> {
    if WAKE_READ.get().is_some() {
        return Ok(());
    }
    let (sender, receiver) = mio::unix::pipe::new()?;
    let read_fd = receiver.into_raw_fd();
    if WAKE_READ.set(read_fd).is_err() {
        // SAFETY: `read_fd` was just made here and is owned by nothing else.
        unsafe { libc::close(read_fd) };
        return Ok(());
    }
    WAKE_WRITE.store(sender.into_raw_fd(), Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART | SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    for sig in SIGNALS {
        // SAFETY: the handler only touches atomics and calls write(2).
        let old = unsafe { sigaction(sig, &action) }.map_err(io::Error::from)?;
        if matches!(old.handler(), SigHandler::SigIgn) {
            // SAFETY: restores the disposition the process was started with.
            unsafe { sigaction(sig, &old) }.map_err(io::Error::from)?;
        }
    }
    Ok(())
}

/// The signal caught, if any (its number, e.g. 15 for SIGTERM).
pub fn caught() -> Option<i32> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// The descriptor that becomes readable when a signal is caught, once [`catch_signals`]
/// ran: event loops poll it so that a signal wakes them.
pub fn wake_fd() -> Option<RawFd> {
    WAKE_READ.get().copied()
}

/// "SIGTERM" for 15, and so on.
pub fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

/// The message connections fail with once a signal was caught.
pub fn interrupted_message() -> Option<String> {
    caught().map(|sig| format!("interrupted by {}", signal_name(sig)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(2), "SIGINT");
        assert_eq!(signal_name(1), "SIGHUP");
    }
}
