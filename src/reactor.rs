//! The one event loop: a `mio::Poll` that owns the server's three pipes.
//!
//! [`Reactor`] is generic: sources register and get called on readiness. [`Channel`] is the
//! SFTP connection's I/O half: an outgoing byte queue (write interest only while it holds
//! bytes; tasks wait when it is over its high-water mark), packet framing of stdout with
//! the negotiated maximum, the table of in-flight request ids, and stderr drained into
//! `log` with a bounded tail kept for error messages.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::process::Child;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::UnixStream;
use mio::unix::pipe;
use mio::{Events, Interest, Registry, Token};
use nix::sys::signal::Signal;

use crate::error::{ConnectionError, Error, Result, plain_io};
use crate::proto::{self, ClientPacket, Framer, Request, Response, ServerPacket};

/// Something registered with the reactor.
pub trait Source {
    /// Called before the reactor may block: flush buffers, adjust interest. Returns true
    /// when the source expects an event (a reply is awaited, bytes are queued, ...).
    fn prepare(&self, registry: &Registry) -> bool;
    /// Called for each readiness event on one of the source's tokens.
    fn ready(&self, registry: &Registry, event: &Event);
    /// When the source wants to be prepared again even if no event comes (a timeout),
    /// asked after [`Source::prepare`]; the loop never blocks past it.
    fn deadline(&self) -> Option<Instant> {
        None
    }
}

/// A `mio::Poll` and the sources registered with it.
pub struct Reactor {
    poll: RefCell<mio::Poll>,
    events: RefCell<Events>,
    /// Held weakly: a source lives as long as its owner (a session's channel, a served
    /// stdin) and drops out of the loop with it.
    sources: RefCell<Vec<Option<std::rc::Weak<dyn Source>>>>,
    /// The signal wake-up pipe of [`crate::interrupt`] is registered.
    watching_signals: Cell<bool>,
}

/// The token of [`crate::interrupt`]'s wake-up pipe: belongs to no source, it only ends
/// the poll so that the channels see the signal.
const SIGNAL_TOKEN: Token = Token(usize::MAX);

impl Reactor {
    /// A reactor with no sources.
    pub fn new() -> io::Result<Self> {
        Ok(Reactor {
            poll: RefCell::new(mio::Poll::new()?),
            events: RefCell::new(Events::with_capacity(64)),
            sources: RefCell::new(Vec::new()),
            watching_signals: Cell::new(false),
        })
    }

    /// Reserves a slot; the source's tokens are `Token(slot * 4 + n)` for n in 0..4.
    pub fn reserve(&self) -> usize {
        let mut s = self.sources.borrow_mut();
        s.push(None);
        s.len() - 1
    }

    /// Installs the source for a reserved slot.
    pub fn install(&self, slot: usize, source: &Rc<dyn Source>) {
        self.sources.borrow_mut()[slot] = Some(Rc::downgrade(source));
    }

    /// Removes a source (its fds must be deregistered by itself).
    pub fn remove(&self, slot: usize) {
        if let Some(s) = self.sources.borrow_mut().get_mut(slot) {
            *s = None;
        }
    }

    /// The registry, to register file descriptors.
    pub fn with_registry<T>(&self, f: impl FnOnce(&Registry) -> T) -> T {
        f(self.poll.borrow().registry())
    }

    /// Registers the signal wake-up pipe, once [`crate::interrupt::catch_signals`] made it.
    fn watch_signals(&self) {
        if self.watching_signals.get() {
            return;
        }
        if let Some(fd) = crate::interrupt::wake_fd() {
            let poll = self.poll.borrow();
            let mut src = mio::unix::SourceFd(&fd);
            if let Err(e) = poll
                .registry()
                .register(&mut src, SIGNAL_TOKEN, Interest::READABLE)
            {
                log::debug!("cannot watch for signals: {e}");
            }
            self.watching_signals.set(true);
        }
    }

    /// One round: prepare every source, poll (blocking only if `block`, and then at most
    /// until the sources' nearest deadline), dispatch events. Returns `Ok(false)` when
    /// asked to block but no source expects any event.
    pub fn turn(&self, block: bool) -> io::Result<bool> {
        self.turn_if(|| block)
    }

    /// [`Reactor::turn`], blocking only if `block()` says so once the sources are
    /// prepared: preparing may wake tasks (a connection found dead wakes everyone waiting
    /// on it), and then the poll must not wait for I/O.
    pub fn turn_if(&self, block: impl FnOnce() -> bool) -> io::Result<bool> {
        self.watch_signals();
        let sources: Vec<Rc<dyn Source>> = self
            .sources
            .borrow()
            .iter()
            .flatten()
            .filter_map(std::rc::Weak::upgrade)
            .collect();
        let mut expecting = false;
        let mut deadline: Option<Instant> = None;
        {
            let poll = self.poll.borrow();
            for s in &sources {
                expecting |= s.prepare(poll.registry());
                if let Some(d) = s.deadline() {
                    deadline = Some(deadline.map_or(d, |e| e.min(d)));
                }
            }
        }
        let block = block();
        if block && !expecting {
            return Ok(false);
        }
        let timeout = if block {
            deadline.map(|d| d.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        let fired: Vec<(usize, Event)> = {
            let mut poll = self.poll.borrow_mut();
            let mut events = self.events.borrow_mut();
            loop {
                match poll.poll(&mut events, timeout) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            events
                .iter()
                .map(|e| (e.token().0 / 4, e.clone()))
                .collect()
        };
        let poll = self.poll.borrow();
        for (slot, ev) in fired {
            let src = self
                .sources
                .borrow()
                .get(slot)
                .cloned()
                .flatten()
                .and_then(|w| w.upgrade());
            if let Some(src) = src {
                src.ready(poll.registry(), &ev);
            }
        }
        Ok(true)
    }
}

/// Bytes queued for the server above which new requests wait.
const OUT_HIGH_WATER: usize = 4 << 20;
/// Lines of stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 20;
/// A stderr line longer than this is cut, so a chatty child cannot grow memory.
const STDERR_LINE_MAX: usize = 4096;
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

enum Slot {
    /// Sent; the task waits (its waker, once polled).
    Waiting(Option<Waker>),
    /// Answered; the task has not looked yet.
    Done(Response),
    /// The task went away; the reply will be dropped when it comes.
    Abandoned,
    /// Like `Abandoned`, and the session need not wait for the reply before it ends: the
    /// server may drop the request unhandled (the CLOSE of a handle only read from).
    Dispensable,
}

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
}

struct State {
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
    /// A request sent with nothing queued before it, timed to measure the round trip.
    rtt_probe: Option<(u32, Instant)>,
    /// The smallest round trip measured.
    rtt_min: Option<Duration>,
    framer: Framer,
    /// The largest packet sent, length field included (the server's limit).
    max_request: usize,
    inflight: HashMap<u32, Slot>,
    next_id: u32,
    version: Option<(u32, proto::ExtensionPairs)>,
    version_seen: bool,
    version_waker: Option<Waker>,
    space_waiters: Vec<Waker>,
    dead: Option<ConnectionError>,
    stderr_tail: VecDeque<String>,
    stderr_partial: Vec<u8>,
    bytes_out: u64,
    bytes_in: u64,
    /// Requests whose data went out as zeros (their file region ran short): their replies
    /// are turned into this error.
    spoiled: HashMap<u32, io::Error>,
    /// Replies the server still owes: slots other than `Done`.
    replies_due: usize,
    /// How long the server may owe replies without sending a byte ([`Channel::set_stall_timeout`]).
    stall_timeout: Option<Duration>,
    /// Since when replies are due and nothing was received (`None`: none due, or bytes
    /// just came; the next `prepare` starts the clock).
    quiet_since: Option<Instant>,
    /// The server's name in the stall message.
    peer: String,
    /// The child closed the connection; its exit is being collected.
    closing: Option<Closing>,
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
                child: Some(pipes.child),
                label: pipes.label,
                sock: Some(sock),
                stderr,
                write_registered: false,
                stdin_writable: true,
                out: OutQueue::default(),
                rtt_probe: None,
                rtt_min: None,
                framer: Framer::new(proto::DEFAULT_MAX_PACKET),
                max_request: proto::DEFAULT_MAX_REQUEST,
                inflight: HashMap::new(),
                next_id: 1,
                version: None,
                version_seen: false,
                version_waker: None,
                space_waiters: Vec::new(),
                dead: None,
                stderr_tail: VecDeque::new(),
                stderr_partial: Vec::new(),
                bytes_out: 0,
                bytes_in: 0,
                spoiled: HashMap::new(),
                replies_due: 0,
                stall_timeout: None,
                quiet_since: None,
                peer: String::new(),
                closing: None,
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
        self.state.borrow().version_seen
    }

    /// Requests awaiting a reply.
    pub fn in_flight(&self) -> usize {
        self.state.borrow().inflight.len()
    }

    /// Fails the connection when replies are due and the server sends nothing for
    /// `timeout` (`None`: never): every waiting request gets "no answer from PEER for 30 s;
    /// giving up" and the child is killed. The clock runs only once the server's VERSION
    /// came (ssh may be waiting for a password until then) and only while replies are due,
    /// so an idle session never times out.
    pub fn set_stall_timeout(&self, timeout: Option<Duration>, peer: impl Into<String>) {
        let mut st = self.state.borrow_mut();
        st.stall_timeout = timeout.filter(|t| !t.is_zero());
        st.peer = peer.into();
        st.quiet_since = None;
    }

    /// Sets the largest packet accepted from the server.
    pub fn set_max_packet(&self, max: usize) {
        self.state.borrow_mut().framer.set_max_packet(max);
    }

    /// Sets the largest packet sent (length field included): the server's
    /// `max-packet-length`. Larger requests fail with [`Error::RequestTooLarge`].
    pub fn set_max_request(&self, max: usize) {
        self.state.borrow_mut().max_request = max;
    }

    /// The largest packet sent, length field included.
    pub fn max_request(&self) -> usize {
        self.state.borrow().max_request
    }

    fn dead_error(st: &State) -> Option<Error> {
        st.dead.clone().map(Error::Connection)
    }

    /// Queues SSH_FXP_INIT.
    pub fn send_init(&self) -> Result<()> {
        let mut st = self.state.borrow_mut();
        if let Some(e) = Self::dead_error(&st) {
            return Err(e);
        }
        let init = ClientPacket::Init {
            version: proto::SFTP_VERSION,
            extensions: Vec::new(),
        };
        st.out.push_with(|v| init.encode(v));
        Ok(())
    }

    /// Waits for SSH_FXP_VERSION.
    pub fn poll_version(&self, cx: &mut Context<'_>) -> Poll<Result<(u32, proto::ExtensionPairs)>> {
        let mut st = self.state.borrow_mut();
        if let Some(v) = st.version.take() {
            return Poll::Ready(Ok(v));
        }
        if let Some(e) = Self::dead_error(&st) {
            return Poll::Ready(Err(e));
        }
        st.version_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Ready when the outgoing queue has room for another request.
    pub fn poll_space(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut st = self.state.borrow_mut();
        if let Some(e) = Self::dead_error(&st) {
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
        let mut st = self.state.borrow_mut();
        if let Some(e) = Self::dead_error(&st) {
            return Err(e);
        }
        if st.inflight.len() >= u32::MAX as usize / 2 {
            return Err(Error::Protocol("too many requests in flight".into()));
        }
        let mut id = st.next_id;
        while st.inflight.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        let queue_was_empty = st.out.is_empty();
        let max = st.max_request;
        let sent = st.out.try_push_with(|v| {
            let start = v.len();
            let queued = encode(id, v)?;
            if queued {
                // A server that gets a packet above its limit drops the connection, and
                // every request in flight with it: such a request fails alone, unsent.
                let size = packet_size(&v[start..]);
                if size > max {
                    return Err(Error::RequestTooLarge {
                        op: proto::kind::name(v.get(start + 4).copied().unwrap_or(0)),
                        path: String::new(),
                        size,
                        max,
                    });
                }
                trace_sent(id, &v[start..]);
            }
            Ok::<bool, Error>(queued)
        })?;
        if !sent {
            return Ok(None);
        }
        st.next_id = id.wrapping_add(1);
        Self::maybe_probe(&mut st, id, queue_was_empty);
        st.inflight.insert(id, Slot::Waiting(None));
        st.replies_due += 1;
        Ok(Some(id))
    }

    /// Times request `id` if nothing is queued before it (so local queueing does not
    /// count) and no other probe is out. Requests sent before the server's VERSION wait
    /// for the connection to be set up, so they are not timed.
    fn maybe_probe(st: &mut State, id: u32, queue_was_empty: bool) {
        if queue_was_empty && st.rtt_probe.is_none() && st.version_seen {
            st.rtt_probe = Some((id, Instant::now()));
        }
    }

    /// The smallest request round trip measured so far (server time included).
    pub fn rtt_min(&self) -> Option<Duration> {
        self.state.borrow().rtt_min
    }

    /// Queues a request.
    pub fn send(&self, req: &Request) -> Result<u32> {
        self.send_with(|id, out| req.encode(id, out))
    }

    /// Polls for the reply to `id`.
    pub fn poll_reply(&self, id: u32, cx: &mut Context<'_>) -> Poll<Result<Response>> {
        let mut st = self.state.borrow_mut();
        match st.inflight.remove(&id) {
            Some(Slot::Done(r)) => match st.spoiled.remove(&id) {
                None => Poll::Ready(Ok(r)),
                Some(e) => Poll::Ready(Err(Error::local("cannot read the file being uploaded", e))),
            },
            Some(Slot::Waiting(_) | Slot::Abandoned | Slot::Dispensable) => {
                if let Some(e) = Self::dead_error(&st) {
                    return Poll::Ready(Err(e));
                }
                st.inflight
                    .insert(id, Slot::Waiting(Some(cx.waker().clone())));
                Poll::Pending
            }
            None => Poll::Ready(Err(Self::dead_error(&st).unwrap_or_else(|| {
                Error::Protocol(format!("request {id} has no reply slot"))
            }))),
        }
    }

    /// The waiting task went away: drop the reply when it comes, keeping the id reserved
    /// until then so it cannot be confused with a new request.
    pub fn abandon(&self, id: u32) {
        let mut st = self.state.borrow_mut();
        st.spoiled.remove(&id);
        match st.inflight.get(&id) {
            Some(Slot::Done(_)) => {
                st.inflight.remove(&id);
            }
            Some(_) if st.dead.is_none() => {
                st.inflight.insert(id, Slot::Abandoned);
            }
            _ => {
                Self::remove_slot(&mut st, id);
            }
        }
    }

    /// Like [`Channel::abandon`], and the session may end before the reply comes: for
    /// requests whose loss does not matter (the CLOSE of a handle only read from), so
    /// that the end of a download does not wait a round trip for them.
    pub fn dispense(&self, id: u32) {
        let mut st = self.state.borrow_mut();
        st.spoiled.remove(&id);
        match st.inflight.get(&id) {
            Some(Slot::Waiting(_)) if st.dead.is_none() => {
                st.inflight.insert(id, Slot::Dispensable);
            }
            _ => {
                Self::remove_slot(&mut st, id);
            }
        }
    }

    /// True once the connection is gone (also while the child's exit is being collected
    /// for the error).
    pub fn is_dead(&self) -> bool {
        let st = self.state.borrow();
        st.dead.is_some() || st.closing.is_some()
    }

    /// The last stderr lines of the child.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.state.borrow().stderr_tail.iter().cloned().collect()
    }

    /// Closes stdin and waits (bounded) for the child to exit; kills it if it lingers.
    /// After a caught signal ([`crate::interrupt`]), the child gets SIGTERM instead of
    /// the rest of the session.
    pub fn shutdown(&self, reactor: &Reactor) {
        let mut st = self.state.borrow_mut();
        if st.dead.is_none() && st.closing.is_none() {
            match crate::interrupt::interrupted_message() {
                Some(msg) => self.abort(&mut st, msg, Signal::SIGTERM),
                None => self.drain(&mut st),
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
        if st.dead.is_none() {
            st.closing = None;
            st.dead = Some(ConnectionError {
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

    /// The end of a session: everything queued must reach the server (CLOSEs of dropped
    /// handles, requests sent without waiting) and be answered before the server sees the
    /// end of its input: OpenSSH's sftp-server handles one request per turn of its loop
    /// and exits at end of input, dropping requests it read but had not handled yet. So:
    /// flush and read until every request is answered (bounded), then half-close, and
    /// read until the server closes its side. A signal cuts it short.
    fn drain(&self, st: &mut State) {
        let deadline = Instant::now() + SHUTDOWN_DRAIN;
        let unanswered = |st: &State| {
            st.inflight
                .values()
                .any(|slot| matches!(slot, Slot::Waiting(_) | Slot::Abandoned))
        };
        let open = |st: &State| {
            st.dead.is_none()
                && st.closing.is_none()
                && crate::interrupt::caught().is_none()
                && Instant::now() < deadline
        };
        while open(st) && (!st.out.is_empty() || unanswered(st)) {
            st.stdin_writable = true;
            if Self::flush(st).is_err() {
                break;
            }
            self.read_stdout(st, false);
            if let Some(sock) = st.sock.as_ref()
                && (!st.out.is_empty() || unanswered(st))
            {
                // A server blocked writing its log to a full stderr answers nothing.
                wait_for(sock, st.stderr.as_ref(), !st.out.is_empty(), deadline);
                Self::read_stderr(st);
            }
        }
        if !open(st) {
            return;
        }
        let Some(sock) = st.sock.as_mut() else {
            return;
        };
        let _ = sock.shutdown(std::net::Shutdown::Write);
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
            log::debug!("request #{id} sent padded: {e}");
            st.spoiled.insert(id, e);
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
            let buf = st.framer.spare(READ_CHUNK);
            let asked = buf.len();
            let n = match sock.read(buf) {
                Ok(0) => {
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
            st.framer.commit(n);
            log::trace!(target: "sftpipe::wire", "read {n} bytes");
            st.bytes_in += n as u64;
            st.quiet_since = None;
            if let Err(msg) = Self::dispatch_packets(st) {
                self.fail(st, Some(format!("protocol error from {}: {msg}", st.label)));
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

    fn dispatch_packets(st: &mut State) -> std::result::Result<(), String> {
        loop {
            let packet = match st.framer.next_packet() {
                Ok(Some(body)) => ServerPacket::decode(body).map_err(|e| e.to_string())?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            match packet {
                ServerPacket::Version {
                    version,
                    extensions,
                } => {
                    if st.version_seen {
                        return Err("second SSH_FXP_VERSION".into());
                    }
                    st.version_seen = true;
                    st.version = Some((version, extensions));
                    if let Some(w) = st.version_waker.take() {
                        w.wake();
                    }
                }
                ServerPacket::Response { id, response } => match Self::take_slot(st, id, &response)
                {
                    Some(Slot::Waiting(waker)) => {
                        st.inflight.insert(id, Slot::Done(response));
                        if let Some(w) = waker {
                            w.wake();
                        }
                    }
                    Some(Slot::Abandoned | Slot::Dispensable) => {}
                    Some(done @ Slot::Done(_)) => {
                        st.inflight.insert(id, done);
                        return Err(format!("second reply to request {id}"));
                    }
                    None => return Err(format!("reply to unknown request id {id}")),
                },
            }
        }
    }

    /// Removes the slot a reply is for; times the round-trip probe when it is that one.
    fn take_slot(st: &mut State, id: u32, response: &Response) -> Option<Slot> {
        log::trace!(target: "sftpipe::wire", "<- #{id} {}", proto::kind::name(response.kind()));
        if let Some((probe, sent)) = st.rtt_probe
            && probe == id
        {
            let rtt = sent.elapsed();
            st.rtt_min = Some(st.rtt_min.map_or(rtt, |m| m.min(rtt)));
            st.rtt_probe = None;
        }
        Self::remove_slot(st, id)
    }

    /// Removes a slot, counting the replies still due.
    fn remove_slot(st: &mut State, id: u32) -> Option<Slot> {
        let slot = st.inflight.remove(&id);
        if matches!(
            slot,
            Some(Slot::Waiting(_) | Slot::Abandoned | Slot::Dispensable)
        ) {
            st.replies_due = st.replies_due.saturating_sub(1);
        }
        slot
    }

    fn read_stderr(st: &mut State) {
        let mut buf = [0u8; 8192];
        loop {
            let Some(stderr) = st.stderr.as_mut() else {
                return;
            };
            match stderr.read(&mut buf) {
                Ok(0) => {
                    Self::stderr_bytes(st, b"\n");
                    st.stderr = None;
                    return;
                }
                Ok(n) => Self::stderr_bytes(st, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn stderr_bytes(st: &mut State, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&st.stderr_partial)
                    .trim_end()
                    .to_string();
                st.stderr_partial.clear();
                if line.is_empty() {
                    continue;
                }
                log::info!(target: "sftpipe::ssh", "{line}");
                if st.stderr_tail.len() == STDERR_TAIL_LINES {
                    st.stderr_tail.pop_front();
                }
                st.stderr_tail.push_back(line);
            } else if st.stderr_partial.len() < STDERR_LINE_MAX && b != b'\r' {
                st.stderr_partial.push(b);
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
        if st.dead.is_some() {
            return;
        }
        if let Some(child) = st.child.as_mut() {
            crate::child::signal_child(child, signal);
        }
        // What it said before is in the pipe already.
        Self::read_stderr(st);
        self.finish(st, reason);
    }

    /// The child closed the connection: its exit status and last words make the error.
    /// They are collected on the next turns of the loop ([`Channel::look_at_child`]),
    /// for at most [`EXIT_GRACE`] and [`STDERR_GRACE`]; tasks wait until then.
    fn begin_closing(&self, st: &mut State) {
        if st.dead.is_some() || st.closing.is_some() {
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
        self.finish(st, reason);
    }

    /// Fails the connection when replies are due and nothing came from the server for
    /// the stall timeout. Returns true when it did.
    fn check_stall(&self, st: &mut State) -> bool {
        let Some(limit) = st.stall_timeout else {
            return false;
        };
        if st.replies_due == 0 || !st.version_seen {
            st.quiet_since = None;
            return false;
        }
        let now = Instant::now();
        let since = *st.quiet_since.get_or_insert(now);
        if now.duration_since(since) < limit {
            return false;
        }
        // Replies may be waiting unread (the loop was busy, the process stopped): look.
        self.read_stdout(st, false);
        if st.dead.is_some() || st.closing.is_some() || st.quiet_since.is_none() {
            return st.dead.is_some();
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
    fn finish(&self, st: &mut State, reason: String) {
        log::debug!("connection failed: {reason}");
        st.dead = Some(ConnectionError {
            reason,
            stderr_tail: st.stderr_tail.iter().cloned().collect(),
            unreached: None,
        });
        st.closing = None;
        st.quiet_since = None;
        st.sock = None;
        st.out = OutQueue::default();
        let mut wakers: Vec<Waker> = st.space_waiters.drain(..).collect();
        wakers.extend(st.version_waker.take());
        st.inflight.retain(|_, slot| match slot {
            Slot::Waiting(w) => {
                wakers.extend(w.take());
                true
            }
            Slot::Done(_) => true,
            Slot::Abandoned | Slot::Dispensable => false,
        });
        for w in wakers {
            w.wake();
        }
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

/// Bytes waiting to be written to the server, as a queue of segments written with
/// `writev`: no byte is moved once queued. Small packets share a segment. A segment may
/// also be a region of a local file, which `sendfile(2)` moves to the socket without
/// passing it through our memory: on a fast path the copies in and out of a buffer cost
/// as much CPU as the rest of the client, and that CPU is what ssh needs.
#[derive(Default)]
struct OutQueue {
    segments: VecDeque<Segment>,
    /// Bytes of the front segment already written.
    front_pos: usize,
    len: usize,
    spare: Vec<Vec<u8>>,
    /// File regions that could not be sent whole (the file shrank, or reading it failed):
    /// their requests went out padded with zeros, to keep the stream framed, and must fail.
    spoiled: Vec<(u32, io::Error)>,
}

enum Segment {
    Bytes(Vec<u8>),
    File(FileRegion),
}

/// `len` bytes of `file` from `offset`: the data of request `id`, whose header was queued
/// before it.
struct FileRegion {
    file: Rc<std::fs::File>,
    offset: u64,
    len: usize,
    id: u32,
    /// Set when the file ran short: the rest of the region is sent as zeros.
    padding: bool,
    /// Set when sendfile is not supported for this file (some file systems): the rest is
    /// copied with pread and write.
    copy: bool,
}

impl Segment {
    fn len(&self) -> usize {
        match self {
            Segment::Bytes(v) => v.len(),
            Segment::File(r) => r.len,
        }
    }
}

/// Packets are appended to the last segment until it reaches this size.
const SEGMENT: usize = 64 * 1024;
/// Segments kept for reuse.
const SPARE_SEGMENTS: usize = 16;
/// Bytes moved per `pread`/`write` when a file region cannot be sent with sendfile.
const COPY_CHUNK: usize = 64 * 1024;

impl OutQueue {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends whatever `encode` writes.
    fn push_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        let _ = self.try_push_with(|v| {
            encode(v);
            Ok::<bool, ()>(true)
        });
    }

    /// Appends whatever `encode` writes, unless it returns `Ok(false)` or an error: then
    /// its bytes are taken back.
    fn try_push_with<E>(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<bool, E>,
    ) -> Result<bool, E> {
        let reuse_last = matches!(self.segments.back(), Some(Segment::Bytes(last))
            if last.len() < SEGMENT && !(self.segments.len() == 1 && self.front_pos > 0));
        if !reuse_last {
            let v = self.spare.pop().unwrap_or_default();
            self.segments.push_back(Segment::Bytes(v));
        }
        let Some(Segment::Bytes(last)) = self.segments.back_mut() else {
            return Ok(false);
        };
        let before = last.len();
        let r = encode(last);
        if matches!(r, Ok(true)) {
            self.len += last.len() - before;
        } else {
            last.truncate(before);
        }
        r
    }

    /// Appends a file region (the data of a request whose header was just pushed).
    fn push_file(&mut self, file: Rc<std::fs::File>, offset: u64, len: usize, id: u32) {
        if len == 0 {
            return;
        }
        self.len += len;
        self.segments.push_back(Segment::File(FileRegion {
            file,
            offset,
            len,
            id,
            padding: false,
            copy: false,
        }));
    }

    /// Writes as much as the socket takes; returns the count written.
    fn write_to(&mut self, sock: &mut UnixStream) -> io::Result<usize> {
        let mut total = 0;
        while self.len > 0 {
            let (n, offered) = match self.segments.front_mut() {
                Some(Segment::File(region)) => {
                    let offered = region.len - self.front_pos;
                    match send_region(sock, region, self.front_pos, &mut self.spoiled) {
                        Ok(n) => (n, offered),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
                Some(Segment::Bytes(_)) => {
                    let mut iov = [io::IoSlice::new(&[]); 64];
                    let mut k = 0;
                    let mut offered = 0;
                    for (idx, seg) in self.segments.iter().enumerate().take(iov.len()) {
                        let Segment::Bytes(seg) = seg else { break };
                        let from = if idx == 0 { self.front_pos } else { 0 };
                        iov[k] = io::IoSlice::new(&seg[from..]);
                        offered += seg.len() - from;
                        k += 1;
                    }
                    match sock.write_vectored(&iov[..k]) {
                        Ok(n) => (n, offered),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
                None => break,
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            total += n;
            self.consume(n);
            if n < offered {
                // The socket is full; epoll will say when it drains.
                break;
            }
        }
        Ok(total)
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.segments.front() else {
                break;
            };
            let left = front.len() - self.front_pos;
            if n < left {
                self.front_pos += n;
                return;
            }
            n -= left;
            self.front_pos = 0;
            if let Some(Segment::Bytes(mut seg)) = self.segments.pop_front()
                && self.spare.len() < SPARE_SEGMENTS
                && seg.capacity() <= 2 * crate::client::MAX_CHUNK
            {
                seg.clear();
                self.spare.push(seg);
            }
        }
    }
}

/// Zeros for a file region that ran short.
static ZEROS: [u8; 16 * 1024] = [0; 16 * 1024];

/// Sends the rest of a file region from `done` bytes in: with sendfile, else by copying,
/// else (the file ran short or could not be read) as zeros, recording the request as
/// spoiled. Returns the bytes written, which the socket may have cut short.
fn send_region(
    sock: &mut UnixStream,
    region: &mut FileRegion,
    done: usize,
    spoiled: &mut Vec<(u32, io::Error)>,
) -> io::Result<usize> {
    let left = region.len - done;
    let at = region.offset + done as u64;
    if !region.padding {
        let sent = if region.copy {
            copy_region(sock, &region.file, at, left)
        } else {
            sendfile_region(sock, &region.file, at, left)
        };
        match sent {
            Ok(0) => {
                spoiled.push((
                    region.id,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file shrank to {at} bytes while it was being sent"),
                    ),
                ));
                region.padding = true;
            }
            Ok(n) => return Ok(n),
            Err(e) if is_socket_error(&e) => return Err(e),
            Err(e) if !region.copy && is_unsupported(&e) => {
                log::debug!("sendfile unsupported for this file ({e}); copying");
                region.copy = true;
                return send_region(sock, region, done, spoiled);
            }
            Err(e) => {
                spoiled.push((region.id, e));
                region.padding = true;
            }
        }
    }
    sock.write(&ZEROS[..left.min(ZEROS.len())])
}

/// Sends up to `len` bytes of `file` from `at` with sendfile; elsewhere than Linux, where
/// sendfile differs or is missing, by copying.
fn sendfile_region(
    sock: &UnixStream,
    file: &std::fs::File,
    at: u64,
    len: usize,
) -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut off = libc::off_t::try_from(at).map_err(|_| io::ErrorKind::InvalidInput)?;
        nix::sys::sendfile::sendfile(sock, file, Some(&mut off), len).map_err(io::Error::from)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    copy_region(sock, file, at, len)
}

/// Sends up to `len` bytes of `file` from `at` through a buffer. Bytes read but not
/// taken by the socket are read again next time (pread does not move a file position).
fn copy_region(
    mut sock: &UnixStream,
    file: &std::fs::File,
    at: u64,
    len: usize,
) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; COPY_CHUNK];
    let want = len.min(buf.len());
    let n = loop {
        match file.read_at(&mut buf[..want], at) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r?,
        }
    };
    if n == 0 {
        return Ok(0);
    }
    sock.write(&buf[..n])
}

/// Errors of the socket (the server went away), as opposed to the file.
fn is_socket_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::Interrupted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::NotConnected
    )
}

/// sendfile refused for this file or system: copying will do.
fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::ESPIPE | libc::EOVERFLOW)
    )
}

/// The size of an encoded packet, length field included, by its length field (which also
/// counts data queued behind it from a file).
fn packet_size(packet: &[u8]) -> usize {
    match packet.first_chunk::<4>() {
        Some(len) => u32::from_be_bytes(*len) as usize + 4,
        None => packet.len(),
    }
}

/// Logs a queued request (type and id) at trace level, for latency diagnosis with `-vvv`.
fn trace_sent(id: u32, packet: &[u8]) {
    if log::log_enabled!(target: "sftpipe::wire", log::Level::Trace) {
        let kind = packet.get(4).copied().unwrap_or(0);
        log::trace!(target: "sftpipe::wire", "-> #{id} {} ({} bytes)", proto::kind::name(kind), packet.len());
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
        if st.dead.is_some() {
            return false;
        }
        if let Some(msg) = crate::interrupt::interrupted_message() {
            self.abort(&mut st, msg, Signal::SIGTERM);
            return false;
        }
        if st.closing.is_some() {
            self.look_at_child(&mut st);
            return st.dead.is_none();
        }
        if let Err(e) = Self::flush(&mut st) {
            let msg = if child_went_away(&e) {
                None
            } else {
                Some(format!("writing to {} failed: {}", st.label, plain_io(&e)))
            };
            self.fail(&mut st, msg);
            return false;
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
        want_write || !st.inflight.is_empty() || st.version_waker.is_some()
    }

    fn deadline(&self) -> Option<Instant> {
        let st = self.state.borrow();
        if st.dead.is_some() {
            return None;
        }
        if let Some(c) = &st.closing {
            return Some(c.next_look);
        }
        st.quiet_since?.checked_add(st.stall_timeout?)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `q` to one end of a socket pair, draining the other end, until it is empty.
    fn drain_through_socket(q: &mut OutQueue) -> Vec<u8> {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while !q.is_empty() {
            q.write_to(&mut ours).unwrap();
            loop {
                match theirs.read(&mut buf) {
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        got
    }

    fn file_with(data: &[u8]) -> Rc<std::fs::File> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        Rc::new(f)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn file_regions_go_out_between_queued_bytes_in_order() {
        let data = pattern(600 * 1024);
        let file = file_with(&data);
        for copy in [false, true] {
            let mut q = OutQueue::default();
            q.push_with(|v| v.extend_from_slice(b"head"));
            q.push_file(file.clone(), 1000, 300 * 1024, 7);
            q.push_with(|v| v.extend_from_slice(b"mid"));
            q.push_file(file.clone(), 0, 10, 8);
            q.push_with(|v| v.extend_from_slice(b"tail"));
            if copy {
                for seg in &mut q.segments {
                    if let Segment::File(r) = seg {
                        r.copy = true;
                    }
                }
            }
            assert_eq!(q.len(), 4 + 300 * 1024 + 3 + 10 + 4);
            let got = drain_through_socket(&mut q);
            let mut want = b"head".to_vec();
            want.extend_from_slice(&data[1000..1000 + 300 * 1024]);
            want.extend_from_slice(b"mid");
            want.extend_from_slice(&data[..10]);
            want.extend_from_slice(b"tail");
            assert!(
                got == want,
                "copy={copy}: {} bytes, want {}",
                got.len(),
                want.len()
            );
            assert!(q.spoiled.is_empty());
        }
    }

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

    #[test]
    fn a_region_past_the_end_of_its_file_is_padded_and_its_request_spoiled() {
        let data = pattern(100 * 1024);
        let file = file_with(&data);
        let mut q = OutQueue::default();
        q.push_file(file, 60 * 1024, 80 * 1024, 42);
        q.push_with(|v| v.extend_from_slice(b"next"));
        let got = drain_through_socket(&mut q);
        assert_eq!(got.len(), 80 * 1024 + 4, "the stream keeps its framing");
        assert_eq!(&got[..40 * 1024], &data[60 * 1024..]);
        assert!(got[40 * 1024..80 * 1024].iter().all(|&b| b == 0));
        assert_eq!(&got[80 * 1024..], b"next");
        assert_eq!(q.spoiled.len(), 1);
        assert_eq!(q.spoiled[0].0, 42);
        assert_eq!(q.spoiled[0].1.kind(), io::ErrorKind::UnexpectedEof);
    }
}
