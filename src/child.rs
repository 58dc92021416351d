//! The server's child process: signalling it safely and waiting for its exit, bounded,
//! outside the event loop (at the end of a session).

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// Sends `signal` to the child unless it was reaped already (its pid may belong to
/// another process by now); a stopped child is continued, so that it acts on it.
pub(crate) fn signal_child(child: &mut Child, signal: Signal) {
    if signal == Signal::SIGKILL {
        let _ = child.kill();
        return;
    }
    if let Ok(None) = child.try_wait()
        && let Ok(pid) = i32::try_from(child.id())
    {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, signal);
        let _ = nix::sys::signal::kill(pid, Signal::SIGCONT);
    }
}

/// Waits up to `limit` for the child to exit, then kills it.
pub(crate) fn reap(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    match wait_exit(child, limit) {
        Some(status) => Some(status),
        None => {
            let _ = child.kill();
            child.wait().ok()
        }
    }
}

/// Waits up to `limit` for the child to exit: on Linux by polling its pidfd, elsewhere
/// (or on kernels before 5.3) by looking every few milliseconds.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    // Asked first: a child reaped already has a status, and its pid may be reused.
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let pidfd = pidfd_of(child);
    let mut nap = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        match &pidfd {
            Some(fd) => {
                use nix::poll::{PollFd, PollFlags, poll};
                use std::os::fd::AsFd;
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, poll_timeout(deadline));
            }
            None => {
                std::thread::sleep(nap.min(deadline.saturating_duration_since(Instant::now())));
                nap = (nap * 2).min(Duration::from_millis(20));
            }
        }
    }
}

/// A descriptor that becomes readable when the (unreaped) child exits.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn pidfd_of(child: &Child) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let pid = libc::pid_t::try_from(child.id()).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = std::os::fd::RawFd::try_from(fd)
        .ok()
        .filter(|&fd| fd >= 0)?;
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn pidfd_of(_: &Child) -> Option<std::os::fd::OwnedFd> {
    None
}

/// The time left until `deadline` for poll(2), rounded up to whole milliseconds.
pub(crate) fn poll_timeout(deadline: Instant) -> nix::poll::PollTimeout {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = left.as_micros().div_ceil(1000);
    nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    #[test]
    fn a_stopped_child_still_acts_on_sigterm() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, Signal::SIGSTOP).unwrap();
        signal_child(&mut child, Signal::SIGTERM);
        let status = wait_exit(&mut child, Duration::from_secs(10));
        assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGTERM));
    }

    #[test]
    fn a_lingering_child_is_killed_once_the_wait_is_over() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let started = Instant::now();
        let status = reap(&mut child, Duration::from_millis(100));
        assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGKILL));
        assert!(started.elapsed() < Duration::from_secs(5));
        // Reaped: signalling it again is a no-op, not a signal to a recycled pid.
        signal_child(&mut child, Signal::SIGTERM);
    }
}
