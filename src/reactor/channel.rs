//! [`Channel`]: the driver of one SFTP connection. It owns the child process, the socket
//! that is its stdin and stdout, its stderr, and the outgoing queue; it registers them
//! with the [`Reactor`], feeds what the server sends into the connection's [`Core`] and
//! writes what the core queued. Everything the protocol decides is the core's.

use std::cell::RefCell;
use std::io::{self, Read};
use std::process::Child;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::UnixStream;
use mio::unix::pipe;
use mio::{Interest, Registry, Token};
use nix::sys::signal::Signal;

use super::core::Core;
use super::outqueue::OutQueue;
use super::stderr::StderrTail;
use super::{Reactor, Source};
use crate::error::{ConnectionError, Error, Result, plain_io};
use crate::proto::{self, Request, Response};

/// Bytes queued for the server above which new requests wait.
const OUT_HIGH_WATER: usize = 4 << 20;
/// Bytes read from stdout per read call.
const READ_CHUNK: usize = 256 * 1024;
/// How long a child that closed the connection gets to exit, so that its exit status
/// can be part of the error (ssh exits within milliseconds of closing it).
const EXIT_GRACE: Duration = Duration::from_millis(500);
/// How long after the child's exit its stderr gets to reach end of file (a process it
/// left behind may hold it open).
const STDERR_GRACE: Duration = Duration::from_millis(250);
/// The longest gap between two looks at a closing child's exit (no event announces it).
const MAX_LOOK_GAP: Duration = Duration::from_millis(50);
/// How long the end of a session waits for the server to answer what it was sent.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// How long the end of a session waits for the child to exit before killing it.
const SHUTDOWN_REAP: Duration = Duration::from_secs(2);

/// The child process and its pipes.
pub struct ChildPipes {
    /// The process (ssh, or a local server with `-D`).
    pub child: Child,
    /// Our end of the socketpair that is the child's stdin and stdout. A socket rather
    /// than two pipes, as OpenSSH's sftp does: it wakes the writer only once much of its
    /// buffer is free, so bulk data moves in large writes with few wake-ups.
    pub sock: std::os::unix::net::UnixStream,
    /// What to call it in messages, e.g. "ssh to example.org".
    pub label: String,
    /// The child is an ssh client: the server is a round trip away, so at a clean end
    /// the child is stopped rather than waited for (see [`Channel::shutdown`]). A local
    /// server (`-D`) is given the end of its input and waited for, as it may clean up.
    pub remote: bool,
}

struct State {
    /// The protocol: ids, reply slots, framing, handshake, stall clock.
    core: Core,
    child: Option<Child>,
    label: String,
    /// Our end of the socketpair that is the child's stdin and stdout.
    sock: Option<UnixStream>,
    stderr: Option<pipe::Receiver>,
    write_registered: bool,
    /// False after a write hit EAGAIN, until epoll says the pipe drained: spares a
    /// doomed `writev` per loop turn.
    stdin_writable: bool,
    out: OutQueue,
    space_waiters: Vec<Waker>,
    stderr_tail: StderrTail,
    bytes_out: u64,
    bytes_in: u64,
    /// The server's name in the stall message.
    peer: String,
    /// The child closed the connection; its exit is being collected.
    closing: Option<Closing>,
    /// [`Channel::begin_shutdown`] half-closed the child's stdin: only its end is owed.
    half_closed: bool,
    /// See [`ChildPipes::remote`].
    remote: bool,
}

/// A connection the child closed: its exit status and last stderr lines are collected on
/// later turns of the loop, briefly, never by waiting in it.
struct Closing {
    /// When the connection was found closed.
    since: Instant,
    /// When the child's exit was seen, and its status (`None`: it cannot be known).
    exited: Option<(Instant, Option<std::process::ExitStatus>)>,
    /// When to look at the child again.
    next_look: Instant,
    /// The gap to the look after that (doubling: an exit raises no event).
    gap: Duration,
}

/// The SFTP connection's I/O half, registered with a [`Reactor`].
pub struct Channel {
    state: RefCell<State>,
    slot: usize,
}

const T_SOCK: usize = 0;
const T_STDERR: usize = 2;

impl Channel {
    /// Takes the child's pipes, makes them non-blocking and registers them.
    pub fn new(reactor: &Reactor, mut pipes: ChildPipes) -> Result<Rc<Channel>> {
        let io_err =
            |what: &str, e: io::Error| Error::local(format!("{what} of {}", pipes.label), e);
        let stderr = pipes.child.stderr.take();
        pipes
            .sock
            .set_nonblocking(true)
            .map_err(|e| io_err("socket", e))?;
        let mut sock = UnixStream::from_std(pipes.sock);
        let slot = reactor.reserve();
        let mut stderr = match stderr {
            Some(e) => {
                let r = pipe::Receiver::from(e);
                r.set_nonblocking(true).map_err(|e| io_err("stderr", e))?;
                Some(r)
            }
            None => None,
        };
        reactor
            .with_registry(|reg| -> io::Result<()> {
                reg.register(&mut sock, Token(slot * 4 + T_SOCK), Interest::READABLE)?;
                if let Some(e) = stderr.as_mut() {
                    reg.register(e, Token(slot * 4 + T_STDERR), Interest::READABLE)?;
                }
                Ok(())
            })
            .map_err(|e| io_err("registering pipes", e))?;
        let chan = Rc::new(Channel {
            slot,
            state: RefCell::new(State {
                core: Core::new(),
                child: Some(pipes.child),
                label: pipes.label,
                sock: Some(sock),
                stderr,
                write_registered: false,
                stdin_writable: true,
                out: OutQueue::default(),
                space_waiters: Vec::new(),
                stderr_tail: StderrTail::default(),
                bytes_out: 0,
                bytes_in: 0,
                peer: String::new(),
                closing: None,
                half_closed: false,
                remote: pipes.remote,
            }),
        });
        let as_source: Rc<dyn Source> = chan.clone();
        reactor.install(slot, &as_source);
        Ok(chan)
    }

    /// The reactor slot (to remove the channel when the session ends).
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// What the connection is called in messages.
    pub fn label(&self) -> String {
        self.state.borrow().label.clone()
    }

    /// Bytes written to and read from the server so far.
    pub fn byte_counts(&self) -> (u64, u64) {
        let st = self.state.borrow();
        (st.bytes_out, st.bytes_in)
    }

    /// True once the server's VERSION came: the connection was made.
    pub fn version_seen(&self) -> bool {
        self.state.borrow().core.version_seen()
    }

    /// Requests awaiting a reply.
    pub fn in_flight(&self) -> usize {
        self.state.borrow().core.in_flight()
    }

    /// Fails the connection when replies are due and the server sends nothing for
    /// `timeout` (`None`: never): every waiting request gets "no answer from PEER for 30 s;
    /// giving up" and the child is killed. The clock runs only once the server's VERSION
    /// came (ssh may be waiting for a password until then) and only while replies are due,
    /// so an idle session never times out.
    pub fn set_stall_timeout(&self, timeout: Option<Duration>, peer: impl Into<String>) {
        let mut st = self.state.borrow_mut();
        st.core.set_stall_timeout(timeout);
        st.peer = peer.into();
    }

    /// Sets the largest packet accepted from the server.
    pub fn set_max_packet(&self, max: usize) {
        self.state.borrow_mut().core.set_max_packet(max);
    }

    /// Sets the largest packet sent (length field included): the server's
    /// `max-packet-length`. Larger requests fail with [`Error::RequestTooLarge`].
    pub fn set_max_request(&self, max: usize) {
        self.state.borrow_mut().core.set_max_request(max);
    }

    /// The largest packet sent, length field included.
    pub fn max_request(&self) -> usize {
        self.state.borrow().core.max_request()
    }

    /// Queues SSH_FXP_INIT.
    pub fn send_init(&self) -> Result<()> {
        let st = &mut *self.state.borrow_mut();
        st.core.send_init(&mut st.out)
    }

    /// Waits for SSH_FXP_VERSION.
    pub fn poll_version(&self, cx: &mut Context<'_>) -> Poll<Result<(u32, proto::ExtensionPairs)>> {
        self.state.borrow_mut().core.poll_version(cx.waker())
    }

    /// Ready when the outgoing queue has room for another request.
    pub fn poll_space(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut st = self.state.borrow_mut();
        if let Some(e) = st.core.error() {
            return Poll::Ready(Err(e));
        }
        if st.out.len() < OUT_HIGH_WATER {
            Poll::Ready(Ok(()))
        } else {
            st.space_waiters.push(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Queues a request built by `encode(id, out)`; returns its id. Does not wait for room:
    /// callers await [`Channel::poll_space`] first. A request larger than
    /// [`Channel::max_request`] is not sent: [`Error::RequestTooLarge`].
    pub fn send_with(&self, encode: impl FnOnce(u32, &mut Vec<u8>)) -> Result<u32> {
        let id = self.try_send_with(|id, v| {
            encode(id, v);
            Ok(true)
        })?;
        id.ok_or_else(|| Error::Protocol("a request was not queued".into()))
    }

    /// Queues a request whose last `len` bytes are `len` bytes of `file` from `offset`:
    /// `encode_header(id, out)` writes the packet up to them, its length counting them.
    /// The data is read when the socket takes it, by sendfile where the system has it. If
    /// the file turns out shorter by then, the request still goes out whole (padded with
    /// zeros, so the stream stays framed) and its reply becomes an error.
    pub fn send_with_file(
        &self,
        encode_header: impl FnOnce(u32, &mut Vec<u8>),
        file: &Rc<std::fs::File>,
        offset: u64,
        len: usize,
    ) -> Result<u32> {
        let id = self.send_with(encode_header)?;
        self.state
            .borrow_mut()
            .out
            .push_file(file.clone(), offset, len, id);
        Ok(id)
    }

    /// Like [`Channel::send_with`], but `encode` may decline (`Ok(false)`: nothing is
    /// queued, `Ok(None)` returned) or fail (its error is returned); either way the bytes
    /// it wrote are taken back and no id is used.
    pub fn try_send_with(
        &self,
        encode: impl FnOnce(u32, &mut Vec<u8>) -> Result<bool>,
    ) -> Result<Option<u32>> {
        let st = &mut *self.state.borrow_mut();
        st.core.try_send_with(&mut st.out, Instant::now(), encode)
    }

    /// The smallest request round trip measured so far (server time included).
    pub fn rtt_min(&self) -> Option<Duration> {
        self.state.borrow().core.rtt_min()
    }

    /// Queues a request.
    pub fn send(&self, req: &Request) -> Result<u32> {
        self.send_with(|id, out| req.encode(id, out))
    }

    /// Polls for the reply to `id`.
    pub fn poll_reply(&self, id: u32, cx: &mut Context<'_>) -> Poll<Result<Response>> {
        self.state.borrow_mut().core.poll_reply(id, cx.waker())
    }

    /// The waiting task went away: drop the reply when it comes, keeping the id reserved
    /// until then so it cannot be confused with a new request.
    pub fn abandon(&self, id: u32) {
        self.state.borrow_mut().core.abandon(id);
    }

    /// Like [`Channel::abandon`], and the session may end before the reply comes: for
    /// requests whose loss does not matter (the CLOSE of a handle only read from), so
    /// that the end of a download does not wait a round trip for them.
    pub fn dispense(&self, id: u32) {
        self.state.borrow_mut().core.dispense(id);
    }

    /// True once the connection is gone (also while the child's exit is being collected
    /// for the error).
    pub fn is_dead(&self) -> bool {
        let st = self.state.borrow();
        st.core.is_dead() || st.closing.is_some()
    }

    /// The last stderr lines of the child.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.state.borrow().stderr_tail.lines()
    }

    /// Closes stdin and waits (bounded) for the child to exit; kills it if it lingers.
    /// After a caught signal ([`crate::interrupt`]), the child gets SIGTERM instead of
    /// the rest of the session.
    pub fn shutdown(&self, reactor: &Reactor) {
        let mut st = self.state.borrow_mut();
        if !st.core.is_dead() && st.closing.is_none() {
            match crate::interrupt::interrupted_message() {
                Some(msg) => self.abort(&mut st, msg, Signal::SIGTERM),
                None => {
                    if !st.half_closed {
                        self.settle(&mut st);
                    }
                    if st.remote {
                        Self::end_child(&mut st);
                    } else {
                        Self::await_end(&mut st);
                    }
                }
            }
        }
        reactor.with_registry(|reg| {
            if let Some(mut s) = st.sock.take() {
                let _ = reg.deregister(&mut s);
            }
            if let Some(mut s) = st.stderr.take() {
                let _ = reg.deregister(&mut s);
            }
        });
        if !st.core.is_dead() {
            st.closing = None;
            st.core.mark_closed(ConnectionError {
                reason: "session closed".into(),
                stderr_tail: Vec::new(),
                unreached: None,
            });
        }
        if let Some(mut child) = st.child.take() {
            crate::child::reap(&mut child, SHUTDOWN_REAP);
        }
        drop(st);
        reactor.remove(self.slot);
    }

    /// The first half of [`Channel::shutdown`]: everything owed is answered and the
    /// child's stdin half-closed, without waiting for its end. Several channels ending
    /// together call this on each first, so that their ends (a round trip each) overlap.
    pub(crate) fn begin_shutdown(&self) {
        let mut st = self.state.borrow_mut();
        if !st.core.is_dead()
            && st.closing.is_none()
            && !st.half_closed
            && crate::interrupt::caught().is_none()
        {
            self.settle(&mut st);
        }
    }

    /// The end of a session: everything queued must reach the server (CLOSEs of dropped
    /// handles, requests sent without waiting) and be answered before the server sees the
    /// end of its input: OpenSSH's sftp-server handles one request per turn of its loop
    /// and exits at end of input, dropping requests it read but had not handled yet. So:
    /// flush and read until every request is answered (bounded), then half-close. A signal
    /// cuts it short. [`Channel::await_end`] then reads until the server closes its side.
    fn settle(&self, st: &mut State) {
        let deadline = Instant::now() + SHUTDOWN_DRAIN;
        let open = |st: &State| {
            !st.core.is_dead()
                && st.closing.is_none()
                && crate::interrupt::caught().is_none()
                && Instant::now() < deadline
        };
        let owed = |st: &State| !st.out.is_empty() || st.core.awaits_replies();
        while open(st) && owed(st) {
            st.stdin_writable = true;
            if Self::flush(st).is_err() {
                break;
            }
            self.read_stdout(st, false);
            if let Some(sock) = st.sock.as_ref()
                && owed(st)
            {
                // A server blocked writing its log to a full stderr answers nothing.
                wait_for(sock, st.stderr.as_ref(), !st.out.is_empty(), deadline);
                Self::read_stderr(st);
            }
        }
        if !open(st) {
            return;
        }
        if let Some(sock) = st.sock.as_mut() {
            let _ = sock.shutdown(std::net::Shutdown::Write);
            st.half_closed = true;
        }
    }

    /// After the half-close, with every request answered: nothing more can come from
    /// the server that matters, so the child is ended now rather than after the server
    /// closed its side (a round trip, 6% of a small tree's time at 100 ms). ssh then
    /// drops the connection; the server's end of it sees that as the end of its input.
    /// A child that did not get that far (a deadline passed) is left to the bounded reap.
    fn end_child(st: &mut State) {
        if !st.half_closed || st.core.is_dead() || st.closing.is_some() {
            return;
        }
        if let Some(child) = st.child.as_mut() {
            crate::child::signal_child(child, Signal::SIGTERM);
        }
    }

    /// After the half-close, for a local server: reads until it closes its side
    /// (bounded), so it ends on its own.
    fn await_end(st: &mut State) {
        if !st.half_closed || st.core.is_dead() || st.closing.is_some() {
            return;
        }
        let deadline = Instant::now() + SHUTDOWN_DRAIN;
        let mut scratch = vec![0u8; 64 * 1024];
        while Instant::now() < deadline && crate::interrupt::caught().is_none() {
            let Some(sock) = st.sock.as_mut() else {
                return;
            };
            match sock.read(&mut scratch) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Nor does it read the end of its input.
                    wait_for(sock, st.stderr.as_ref(), false, deadline);
                    Self::read_stderr(st);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    fn flush(st: &mut State) -> io::Result<()> {
        let Some(sock) = st.sock.as_mut() else {
            return Ok(());
        };
        if !st.stdin_writable || st.out.is_empty() {
            return Ok(());
        }
        let n = st.out.write_to(sock);
        for (id, e) in st.out.spoiled.drain(..) {
            st.core.spoil(id, e);
        }
        let n = n?;
        log::trace!(target: "sftpipe::wire", "wrote {n} bytes, {} queued", st.out.len());
        st.bytes_out += n as u64;
        st.stdin_writable = st.out.is_empty();
        if st.out.len() < OUT_HIGH_WATER / 2 {
            for w in st.space_waiters.drain(..) {
                w.wake();
            }
        }
        Ok(())
    }

    /// Reads what the server sent. `closed`: the readiness event also said the server
    /// closed its end, which raises no later event.
    fn read_stdout(&self, st: &mut State, closed: bool) {
        loop {
            let Some(sock) = st.sock.as_mut() else { return };
            let buf = st.core.read_buf(READ_CHUNK);
            let asked = buf.len();
            let n = match sock.read(buf) {
                Ok(0) => {
                    Self::log_truncated(st);
                    self.fail(st, None);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The child exited with our requests unread in its socket: as good as an
                // end of file, and its exit status says why.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    self.fail(st, None);
                    return;
                }
                Err(e) => {
                    self.fail(
                        st,
                        Some(format!(
                            "reading from {} failed: {}",
                            st.label,
                            plain_io(&e)
                        )),
                    );
                    return;
                }
            };
            log::trace!(target: "sftpipe::wire", "read {n} bytes");
            st.bytes_in += n as u64;
            if let Err(v) = st.core.handle_read(n, Instant::now()) {
                self.fail(st, Some(format!("protocol error from {}: {v}", st.label)));
                return;
            }
            // A short read from a stream socket drained it (epoll(7)): whatever comes next
            // raises a new edge, so the read that would only say EAGAIN is skipped. Not
            // when the end of the stream came with the bytes: that edge was this one.
            if n < asked && !closed {
                return;
            }
        }
    }

    /// The stream ended inside a packet: worth a line in the debug log (the error itself
    /// is the child's exit).
    fn log_truncated(st: &State) {
        let partial = st.core.buffered();
        if partial > 0 {
            log::debug!(
                "{} closed its output {partial} bytes into a packet",
                st.label
            );
        }
    }

    fn read_stderr(st: &mut State) {
        let mut buf = [0u8; 8192];
        loop {
            let Some(stderr) = st.stderr.as_mut() else {
                return;
            };
            match stderr.read(&mut buf) {
                Ok(0) => {
                    st.stderr_tail.push(b"\n");
                    st.stderr = None;
                    return;
                }
                Ok(n) => st.stderr_tail.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    /// Marks the connection dead and wakes every waiting task with the error. With a
    /// `reason`, ending it is our decision: the child is killed and the error given at
    /// once. Without one, the child closed the connection: see [`Channel::begin_closing`].
    /// Never waits: this runs inside the event loop, which serves other work too.
    fn fail(&self, st: &mut State, reason: Option<String>) {
        match reason {
            Some(reason) => self.abort(st, reason, Signal::SIGKILL),
            None => self.begin_closing(st),
        }
    }

    /// Ends the connection with `reason`, sending the child `signal`.
    fn abort(&self, st: &mut State, reason: String, signal: Signal) {
        if st.core.is_dead() {
            return;
        }
        if let Some(child) = st.child.as_mut() {
            crate::child::signal_child(child, signal);
        }
        // What it said before is in the pipe already.
        Self::read_stderr(st);
        Self::finish(st, reason);
    }

    /// The child closed the connection: its exit status and last words make the error.
    /// They are collected on the next turns of the loop ([`Channel::look_at_child`]),
    /// for at most [`EXIT_GRACE`] and [`STDERR_GRACE`]; tasks wait until then.
    fn begin_closing(&self, st: &mut State) {
        if st.core.is_dead() || st.closing.is_some() {
            return;
        }
        st.sock = None;
        st.out = OutQueue::default();
        let now = Instant::now();
        st.closing = Some(Closing {
            since: now,
            exited: None,
            next_look: now,
            gap: Duration::from_millis(1),
        });
        self.look_at_child(st);
    }

    /// While closing: takes the child's exit status and stderr if they are there, and
    /// fails the connection once both are in or waiting longer would not be prompt (a
    /// child lingering after closing the connection is killed then, and reaped later).
    fn look_at_child(&self, st: &mut State) {
        Self::read_stderr(st);
        let now = Instant::now();
        let Some(c) = st.closing.as_mut() else {
            return;
        };
        if c.exited.is_none() {
            match st.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => {}
                Some(Ok(Some(status))) => c.exited = Some((now, Some(status))),
                Some(Err(_)) | None => c.exited = Some((now, None)),
            }
        }
        let done = match c.exited {
            Some((at, _)) => st.stderr.is_none() || now >= at + STDERR_GRACE,
            None => now >= c.since + EXIT_GRACE,
        };
        if !done {
            c.next_look = match c.exited {
                Some((at, _)) => at + STDERR_GRACE,
                None => (now + c.gap).min(c.since + EXIT_GRACE),
            };
            c.gap = (c.gap * 2).min(MAX_LOOK_GAP);
            return;
        }
        let exited = c.exited;
        st.closing = None;
        if exited.is_none()
            && let Some(child) = st.child.as_mut()
        {
            let _ = child.kill();
        }
        let label = &st.label;
        let reason = match exited.and_then(|(_, status)| status) {
            Some(s) if s.success() => format!("{label} exited before answering"),
            Some(s) => match s.code() {
                Some(c) => format!("{label} exited with status {c}"),
                None => format!("{label} was killed ({s})"),
            },
            None => format!("{label} closed its output"),
        };
        Self::finish(st, reason);
    }

    /// Fails the connection when replies are due and nothing came from the server for
    /// the stall timeout. Returns true when it did.
    fn check_stall(&self, st: &mut State) -> bool {
        let Some(limit) = st.core.check_stall(Instant::now()) else {
            return false;
        };
        // Replies may be waiting unread (the loop was busy, the process stopped): look.
        self.read_stdout(st, false);
        if st.core.is_dead() || st.closing.is_some() || !st.core.is_quiet() {
            return st.core.is_dead();
        }
        let reason = format!(
            "no answer from {} for {}; giving up",
            st.peer,
            seconds(limit)
        );
        self.fail(st, Some(reason));
        true
    }

    /// Records the error and wakes every waiting task with it.
    fn finish(st: &mut State, reason: String) {
        st.closing = None;
        st.sock = None;
        st.out = OutQueue::default();
        for w in st.space_waiters.drain(..) {
            w.wake();
        }
        st.core.fail(ConnectionError {
            reason,
            stderr_tail: st.stderr_tail.lines(),
            unreached: None,
        });
    }
}

/// "30 s", "2.5 s".
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A write error that means the child closed its end: its exit status will say why.
fn child_went_away(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Blocks until `sock` is readable (or, with `write`, writable), a signal is caught, or
/// `deadline`. Only for the end of a session, outside the event loop.
fn wait_for(sock: &UnixStream, stderr: Option<&pipe::Receiver>, write: bool, deadline: Instant) {
    use nix::poll::{PollFd, PollFlags, poll};
    use std::os::fd::{AsFd, BorrowedFd};
    let mut flags = PollFlags::POLLIN;
    if write {
        flags |= PollFlags::POLLOUT;
    }
    let mut fds = vec![PollFd::new(sock.as_fd(), flags)];
    if let Some(stderr) = stderr {
        fds.push(PollFd::new(stderr.as_fd(), PollFlags::POLLIN));
    }
    if let Some(fd) = crate::interrupt::wake_fd() {
        // SAFETY: the wake-up pipe is never closed.
        fds.push(PollFd::new(
            unsafe { BorrowedFd::borrow_raw(fd) },
            PollFlags::POLLIN,
        ));
    }
    let _ = poll(&mut fds, crate::child::poll_timeout(deadline));
}

impl Source for Channel {
    fn prepare(&self, registry: &Registry) -> bool {
        let mut st = self.state.borrow_mut();
        if st.core.is_dead() {
            return false;
        }
        if let Some(msg) = crate::interrupt::interrupted_message() {
            self.abort(&mut st, msg, Signal::SIGTERM);
            return false;
        }
        if st.closing.is_some() {
            self.look_at_child(&mut st);
            return !st.core.is_dead();
        }
        if let Err(e) = Self::flush(&mut st) {
            let msg = if child_went_away(&e) {
                None
            } else {
                Some(format!("writing to {} failed: {}", st.label, plain_io(&e)))
            };
            self.fail(&mut st, msg);
            // A closed connection is still awaited while the child's exit is collected.
            return !st.core.is_dead();
        }
        let want_write = !st.out.is_empty();
        if want_write != st.write_registered {
            let token = Token(self.slot * 4 + T_SOCK);
            let State {
                sock,
                write_registered,
                ..
            } = &mut *st;
            if let Some(sock) = sock.as_mut() {
                let interest = if want_write {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                let r = registry.reregister(sock, token, interest);
                if r.is_ok() {
                    *write_registered = want_write;
                }
            }
        }
        if self.check_stall(&mut st) {
            return false;
        }
        want_write || st.core.expects_input()
    }

    fn deadline(&self) -> Option<Instant> {
        let st = self.state.borrow();
        if st.core.is_dead() {
            return None;
        }
        if let Some(c) = &st.closing {
            return Some(c.next_look);
        }
        st.core.poll_timeout()
    }

    fn ready(&self, _registry: &Registry, event: &Event) {
        let mut st = self.state.borrow_mut();
        match event.token().0 % 4 {
            T_SOCK => {
                if event.is_writable() {
                    st.stdin_writable = true;
                    if let Err(e) = Self::flush(&mut st) {
                        let msg = (!child_went_away(&e))
                            .then(|| format!("writing to {} failed: {}", st.label, plain_io(&e)));
                        // A broken pipe means the child died; reading tells why.
                        self.read_stdout(&mut st, true);
                        self.fail(&mut st, msg);
                        return;
                    }
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    let closed = event.is_read_closed() || event.is_error();
                    self.read_stdout(&mut st, closed);
                }
            }
            T_STDERR => Self::read_stderr(&mut st),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A server whose last bytes and end of stream arrive together (it wrote and exited
    /// before the client looked) raises one readiness edge for both: the short read of the
    /// bytes must not be taken for "drained", or the end is never seen and the client
    /// waits forever.
    #[test]
    fn the_end_of_stream_arriving_with_the_last_bytes_is_seen() {
        let reactor = Reactor::new().unwrap();
        // Started first, so that it cannot hold the socket open between fork and exec.
        let child = std::process::Command::new("true")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        // Both are there when the socket is registered: one edge for the two.
        theirs.write_all(&[0, 0]).unwrap();
        drop(theirs);
        let label = "test server".to_string();
        let chan = Channel::new(
            &reactor,
            ChildPipes {
                child,
                sock: ours,
                label,
                remote: false,
            },
        )
        .unwrap();
        for _ in 0..20 {
            reactor.turn(false).unwrap();
        }
        assert!(chan.is_dead(), "the end of the stream went unnoticed");
    }

    /// A server that logs more than a pipe holds as the session ends (a debug-logging
    /// sftp-server) waits, blocked on its stderr, until that is read: the end of the
    /// session must read it, or it waits out its deadline and then kills the server.
    #[test]
    fn shutdown_reads_a_chatty_servers_stderr() {
        use std::os::fd::OwnedFd;
        use std::process::{Command, Stdio};
        let reactor = Reactor::new().unwrap();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let theirs_out = theirs.try_clone().unwrap();
        let child = Command::new("sh")
            .args(["-c", "head -c 1000000 /dev/zero >&2; cat"])
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(OwnedFd::from(theirs_out)))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let label = "chatty server".to_string();
        let pipes = ChildPipes {
            child,
            sock: ours,
            label,
            remote: false,
        };
        let chan = Channel::new(&reactor, pipes).unwrap();
        let started = Instant::now();
        chan.shutdown(&reactor);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "the session took {took:?} to end"
        );
    }

    /// A child that closed the connection but has not exited yet is being waited for: the
    /// loop must not be told that nothing is pending meanwhile, even when the closed
    /// connection was found by a write (the executor would call that a deadlock).
    #[test]
    fn a_write_to_a_closed_connection_keeps_the_loop_waiting_for_the_child() {
        let reactor = Reactor::new().unwrap();
        let child = std::process::Command::new("sleep")
            .arg("10")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(theirs);
        let pipes = ChildPipes {
            child,
            sock: ours,
            label: "test server".into(),
            remote: false,
        };
        let chan = Channel::new(&reactor, pipes).unwrap();
        chan.send_init().unwrap();
        while !chan.state.borrow().core.is_dead() {
            let expecting = reactor.turn(true).unwrap();
            let st = chan.state.borrow();
            assert!(
                expecting || st.core.is_dead(),
                "nothing pending while closing: {}",
                st.closing.is_some()
            );
        }
        let e = chan.state.borrow().core.error().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("test server closed its output")),
            "{e:?}"
        );
    }
}
