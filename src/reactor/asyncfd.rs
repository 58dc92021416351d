//! [`AsyncFd`]: any descriptor awaited through the reactor.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};

use mio::event::Event;
use mio::{Interest, Registry, Token};

use super::{Reactor, Source};

/// Any file descriptor (stdin, stdout, a pipe) driven by the reactor: tasks await
/// readability or writability instead of blocking the loop. Used by `serve` for its own
/// stdin and stdout. The descriptor is switched to non-blocking mode, and back when this
/// is dropped (stdin and stdout may be shared with the parent).
pub struct AsyncFd {
    fd: std::os::fd::RawFd,
    slot: usize,
    reactor: std::rc::Weak<Reactor>,
    state: RefCell<FdState>,
}

#[derive(Default)]
struct FdState {
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    registered: Option<Interest>,
    original_flags: Option<i32>,
}

impl AsyncFd {
    /// Takes part in `reactor`'s loop; `fd` must stay open as long as this lives.
    pub fn new(reactor: &Rc<Reactor>, fd: std::os::fd::RawFd) -> io::Result<Rc<AsyncFd>> {
        // SAFETY: F_GETFL/F_SETFL on a descriptor the caller keeps open; no memory involved.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let slot = reactor.reserve();
        let afd = Rc::new(AsyncFd {
            fd,
            slot,
            reactor: Rc::downgrade(reactor),
            state: RefCell::new(FdState {
                original_flags: Some(flags),
                ..Default::default()
            }),
        });
        let as_source: Rc<dyn Source> = afd.clone();
        reactor.install(slot, &as_source);
        Ok(afd)
    }

    fn raw_io(&self, read: bool, buf: *mut u8, len: usize) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` points to `len` valid bytes owned by the caller for this call.
            let n = unsafe {
                if read {
                    libc::read(self.fd, buf as *mut libc::c_void, len)
                } else {
                    libc::write(self.fd, buf as *const libc::c_void, len)
                }
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Reads what is available (waiting until something is); `Ok(0)` at end of file.
    /// Fails once a signal was caught ([`crate::interrupt`]), so that serving ends.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            if let Some(e) = interrupted() {
                return Poll::Ready(Err(e));
            }
            match self.raw_io(true, buf.as_mut_ptr(), buf.len()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.state.borrow_mut().read_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                r => Poll::Ready(r),
            }
        })
        .await
    }

    /// Writes all of `data`, waiting whenever the descriptor is full. Fails once a signal
    /// was caught, like [`AsyncFd::read`].
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = std::future::poll_fn(|cx| {
                if let Some(e) = interrupted() {
                    return Poll::Ready(Err(e));
                }
                match self.raw_io(false, data.as_ptr() as *mut u8, data.len()) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.state.borrow_mut().write_waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                    r => Poll::Ready(r),
                }
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[n..];
        }
        Ok(())
    }
}

/// The error of [`AsyncFd`] reads and writes once a signal was caught.
fn interrupted() -> Option<io::Error> {
    crate::interrupt::interrupted_message().map(io::Error::other)
}

impl Source for AsyncFd {
    fn prepare(&self, registry: &Registry) -> bool {
        let mut st = self.state.borrow_mut();
        if crate::interrupt::caught().is_some() {
            // Whoever waits gets the interruption as its error.
            let wakers = [st.read_waker.take(), st.write_waker.take()];
            drop(st);
            for w in wakers.into_iter().flatten() {
                w.wake();
            }
            return false;
        }
        let want = match (st.read_waker.is_some(), st.write_waker.is_some()) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        };
        if want != st.registered {
            let mut src = mio::unix::SourceFd(&self.fd);
            let token = Token(self.slot * 4);
            let r = match (st.registered, want) {
                (None, Some(i)) => registry.register(&mut src, token, i),
                (Some(_), Some(i)) => registry.reregister(&mut src, token, i),
                (Some(_), None) => registry.deregister(&mut src),
                (None, None) => Ok(()),
            };
            match r {
                Ok(()) => st.registered = want,
                Err(e) => {
                    // Regular files and /dev/null cannot be polled: they are always ready.
                    log::debug!("cannot poll fd {}: {e}; treating it as ready", self.fd);
                    let wakers = [st.read_waker.take(), st.write_waker.take()];
                    drop(st);
                    for w in wakers.into_iter().flatten() {
                        w.wake();
                    }
                    return true;
                }
            }
        }
        want.is_some()
    }

    fn ready(&self, _registry: &Registry, event: &Event) {
        let mut st = self.state.borrow_mut();
        let mut wake = Vec::new();
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            wake.extend(st.read_waker.take());
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            wake.extend(st.write_waker.take());
        }
        drop(st);
        for w in wake {
            w.wake();
        }
    }
}

impl Drop for AsyncFd {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        if let Some(reactor) = self.reactor.upgrade() {
            if st.registered.is_some() {
                reactor.with_registry(|reg| {
                    let _ = reg.deregister(&mut mio::unix::SourceFd(&self.fd));
                });
            }
            reactor.remove(self.slot);
        }
        if let Some(flags) = st.original_flags {
            // SAFETY: restores the flags read in `new` on the same descriptor.
            unsafe { libc::fcntl(self.fd, libc::F_SETFL, flags) };
        }
    }
}
