//! One SFTP connection's state without any I/O, in the manner of quinn-proto's
//! `Connection` and rustls's `read_tls`/`process_new_packets`.
//!
//! [`Core`] owns request ids, the reply slots and the wakers of the tasks waiting in them,
//! the framing of what the server sends (every length checked against the negotiated
//! maximum before anything is allocated for it), the VERSION handshake, the size limit of
//! requests, the round-trip probe and the stall clock. It holds no file descriptor, no
//! process and no poll, and never reads the clock: every method that needs the time is
//! given it.
//!
//! The boundary with the driver ([`Channel`](super::Channel)):
//! * In: the driver reads the server's bytes straight into [`Core::read_buf`] and hands the
//!   count to [`Core::handle_read`] ([`Core::recv`] copies a slice, for tests). The end of
//!   the stream, I/O errors and the child's exit are the driver's: it ends the connection
//!   with [`Core::fail`], which wakes every task waiting here.
//! * Out: requests are encoded straight into a [`Transmit`], the driver's outgoing queue,
//!   whole or not at all. The queue, with its regions of local files read only when the
//!   socket takes them, stays in the driver: file data never passes through the core,
//!   which only hears of a region that ran short ([`Core::spoil`]).
//! * Time: the driver calls [`Core::check_stall`] on each turn of its loop, and must turn
//!   again by [`Core::poll_timeout`] even if no event comes.
//! * Wakers: tasks waiting for a reply or for the VERSION are woken here; tasks waiting
//!   for room in the outgoing queue are the driver's.
//!
//! Ordering: a server handles one connection's requests in the order they were sent
//! (replies may come in any order; they are matched by id). sftpipe relies on that only
//! within one channel: it sends a request without waiting for the replies to earlier
//! ones on the same channel (WRITEs then the CLOSE of their handle, requests queued
//! before the VERSION came), never assuming any order between two channels.

use std::collections::HashMap;
use std::io;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{ConnectionError, Error, Result};
use crate::proto::{self, ClientPacket, DecodeError, Framer, Response, ServerPacket};

/// Where the core puts encoded packets: the driver's outgoing queue (a `Vec<u8>` in tests).
pub trait Transmit {
    /// True when nothing waits to be written: a request timed now measures the server,
    /// not our own queue.
    fn is_idle(&self) -> bool;
    /// Appends what `encode` writes, unless it returns `Ok(false)` or an error: then its
    /// bytes are taken back.
    fn try_push<E>(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>) -> std::result::Result<bool, E>,
    ) -> std::result::Result<bool, E>;
}

impl Transmit for Vec<u8> {
    fn is_idle(&self) -> bool {
        self.is_empty()
    }

    fn try_push<E>(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>) -> std::result::Result<bool, E>,
    ) -> std::result::Result<bool, E> {
        let before = self.len();
        let r = encode(self);
        if !matches!(r, Ok(true)) {
            self.truncate(before);
        }
        r
    }
}

/// What the server did wrong; the connection cannot go on after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A packet that does not decode, or a length of zero or above the maximum.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A VERSION after the first.
    #[error("second SSH_FXP_VERSION")]
    SecondVersion,
    /// A reply to a request already answered.
    #[error("second reply to request {0}")]
    SecondReply(u32),
    /// A reply to no request in flight.
    #[error("reply to unknown request id {0}")]
    UnknownId(u32),
}

/// The reply slot of a request in flight.
enum Slot {
    /// Sent; the task waits (its waker, once polled).
    Waiting(Option<Waker>),
    /// Answered; the task has not looked yet.
    Ready(Response),
    /// The task went away; the reply will be dropped when it comes.
    Abandoned,
    /// Like `Abandoned`, and the session need not wait for the reply before it ends: the
    /// server may drop the request unhandled (the CLOSE of a handle only read from).
    Dispensed,
}

/// One SFTP connection's protocol state (see the module doc).
pub struct Core {
    framer: Framer,
    /// The largest packet sent, length field included (the server's limit).
    max_request: usize,
    slots: HashMap<u32, Slot>,
    next_id: u32,
    /// Replies the server still owes: slots other than `Ready`.
    replies_due: usize,
    /// Requests whose data went out as zeros (their file region ran short): their replies
    /// are turned into this error.
    spoiled: HashMap<u32, io::Error>,
    /// The server's VERSION, until [`Core::poll_version`] takes it.
    version: Option<(u32, proto::ExtensionPairs)>,
    version_seen: bool,
    version_waker: Option<Waker>,
    /// A request sent with nothing queued before it, timed to measure the round trip.
    rtt_probe: Option<(u32, Instant)>,
    /// The smallest round trip measured.
    rtt_min: Option<Duration>,
    /// How long the server may owe replies without sending a byte.
    stall_timeout: Option<Duration>,
    /// Since when replies are due and nothing was received (`None`: none due, or bytes
    /// just came; the next [`Core::check_stall`] starts the clock).
    quiet_since: Option<Instant>,
    /// Why the connection ended.
    dead: Option<ConnectionError>,
}

impl Default for Core {
    fn default() -> Self {
        Core::new()
    }
}

impl Core {
    /// A connection before INIT, with the protocol's default limits.
    pub fn new() -> Core {
        Core {
            framer: Framer::new(proto::DEFAULT_MAX_PACKET),
            max_request: proto::DEFAULT_MAX_REQUEST,
            slots: HashMap::new(),
            next_id: 1,
            replies_due: 0,
            spoiled: HashMap::new(),
            version: None,
            version_seen: false,
            version_waker: None,
            rtt_probe: None,
            rtt_min: None,
            stall_timeout: None,
            quiet_since: None,
            dead: None,
        }
    }

    /// Sets the largest packet accepted from the server (length field excluded).
    pub fn set_max_packet(&mut self, max: usize) {
        self.framer.set_max_packet(max);
    }

    /// Sets the largest packet sent, length field included: the server's limit.
    pub fn set_max_request(&mut self, max: usize) {
        self.max_request = max;
    }

    /// The largest packet sent, length field included.
    pub fn max_request(&self) -> usize {
        self.max_request
    }

    /// How long replies may be due with nothing received (`None` or zero: forever).
    pub fn set_stall_timeout(&mut self, timeout: Option<Duration>) {
        self.stall_timeout = timeout.filter(|t| !t.is_zero());
        self.quiet_since = None;
    }

    /// True once the server's VERSION came: the connection was made.
    pub fn version_seen(&self) -> bool {
        self.version_seen
    }

    /// Requests with a slot: awaiting a reply, or answered and not yet looked at.
    pub fn in_flight(&self) -> usize {
        self.slots.len()
    }

    /// The smallest request round trip measured so far (server time included).
    pub fn rtt_min(&self) -> Option<Duration> {
        self.rtt_min
    }

    /// True once [`Core::fail`] or [`Core::mark_closed`] ended the connection.
    pub fn is_dead(&self) -> bool {
        self.dead.is_some()
    }

    /// The error every request gets once the connection ended.
    pub fn error(&self) -> Option<Error> {
        self.dead.clone().map(Error::Connection)
    }

    /// True while a task waits for something only the server can bring (a reply, the
    /// VERSION): the driver must keep reading.
    pub fn expects_input(&self) -> bool {
        !self.slots.is_empty() || self.version_waker.is_some()
    }

    /// True while a reply is due that the end of the session must wait for: any but the
    /// dispensed ones.
    pub fn awaits_replies(&self) -> bool {
        self.slots
            .values()
            .any(|slot| matches!(slot, Slot::Waiting(_) | Slot::Abandoned))
    }

    /// Bytes received that are not a whole packet yet: at the end of the stream, a
    /// truncated packet.
    pub fn buffered(&self) -> usize {
        self.framer.buffered()
    }
}

/// Sending.
impl Core {
    /// Queues SSH_FXP_INIT.
    pub fn send_init(&mut self, out: &mut impl Transmit) -> Result<()> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        let init = ClientPacket::Init {
            version: proto::SFTP_VERSION,
            extensions: Vec::new(),
        };
        out.try_push(|v| {
            init.encode(v);
            Ok::<bool, Error>(true)
        })?;
        Ok(())
    }

    /// Queues a request built by `encode(id, out)` at `now`; returns its id. `encode` may
    /// decline (`Ok(false)`: nothing is queued, `Ok(None)` returned) or fail (its error is
    /// returned); either way its bytes are taken back and no id is used. A request larger
    /// than [`Core::max_request`] is not sent: [`Error::RequestTooLarge`].
    pub fn try_send_with(
        &mut self,
        out: &mut impl Transmit,
        now: Instant,
        encode: impl FnOnce(u32, &mut Vec<u8>) -> Result<bool>,
    ) -> Result<Option<u32>> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        if self.slots.len() >= u32::MAX as usize / 2 {
            return Err(Error::Protocol("too many requests in flight".into()));
        }
        let mut id = self.next_id;
        while self.slots.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        let idle = out.is_idle();
        let max = self.max_request;
        let sent = out.try_push(|v| {
            let start = v.len();
            let queued = encode(id, v)?;
            if queued {
                check_size(&v[start..], max)?;
                trace_sent(id, &v[start..]);
            }
            Ok::<bool, Error>(queued)
        })?;
        if !sent {
            return Ok(None);
        }
        self.next_id = id.wrapping_add(1);
        // Requests sent before the VERSION wait for the connection to be set up: not timed.
        if idle && self.rtt_probe.is_none() && self.version_seen {
            self.rtt_probe = Some((id, now));
        }
        self.slots.insert(id, Slot::Waiting(None));
        self.replies_due += 1;
        Ok(Some(id))
    }

    /// Request `id` went out padded with zeros (its file region ran short or could not be
    /// read): its reply becomes `e`.
    pub fn spoil(&mut self, id: u32, e: io::Error) {
        log::debug!("request #{id} sent padded: {e}");
        self.spoiled.insert(id, e);
    }
}

/// Waiting for the server.
impl Core {
    /// The server's VERSION, once it came; until then `waker` is woken when it does.
    pub fn poll_version(&mut self, waker: &Waker) -> Poll<Result<(u32, proto::ExtensionPairs)>> {
        if let Some(v) = self.version.take() {
            return Poll::Ready(Ok(v));
        }
        if let Some(e) = self.error() {
            return Poll::Ready(Err(e));
        }
        self.version_waker = Some(waker.clone());
        Poll::Pending
    }

    /// The reply to `id` once it came (the slot is then freed); until then `waker` is
    /// woken when it does.
    pub fn poll_reply(&mut self, id: u32, waker: &Waker) -> Poll<Result<Response>> {
        match self.slots.remove(&id) {
            Some(Slot::Ready(r)) => match self.spoiled.remove(&id) {
                None => Poll::Ready(Ok(r)),
                Some(e) => Poll::Ready(Err(Error::local("cannot read the file being uploaded", e))),
            },
            Some(Slot::Waiting(_) | Slot::Abandoned | Slot::Dispensed) => {
                if let Some(e) = self.error() {
                    return Poll::Ready(Err(e));
                }
                self.slots.insert(id, Slot::Waiting(Some(waker.clone())));
                Poll::Pending
            }
            None => Poll::Ready(Err(self.error().unwrap_or_else(|| {
                Error::Protocol(format!("request {id} has no reply slot"))
            }))),
        }
    }

    /// The waiting task went away: drop the reply when it comes, keeping the id reserved
    /// until then so it cannot be confused with a new request.
    pub fn abandon(&mut self, id: u32) {
        self.spoiled.remove(&id);
        match self.slots.get(&id) {
            Some(Slot::Ready(_)) => {
                self.slots.remove(&id);
            }
            Some(_) if self.dead.is_none() => {
                self.slots.insert(id, Slot::Abandoned);
            }
            _ => {
                self.remove_slot(id);
            }
        }
    }

    /// Like [`Core::abandon`], and the session may end before the reply comes: for
    /// requests whose loss does not matter (the CLOSE of a handle only read from).
    pub fn dispense(&mut self, id: u32) {
        self.spoiled.remove(&id);
        match self.slots.get(&id) {
            Some(Slot::Waiting(_)) if self.dead.is_none() => {
                self.slots.insert(id, Slot::Dispensed);
            }
            _ => {
                self.remove_slot(id);
            }
        }
    }

    /// Removes a slot, counting the replies still due.
    fn remove_slot(&mut self, id: u32) -> Option<Slot> {
        let slot = self.slots.remove(&id);
        if matches!(
            slot,
            Some(Slot::Waiting(_) | Slot::Abandoned | Slot::Dispensed)
        ) {
            self.replies_due = self.replies_due.saturating_sub(1);
        }
        slot
    }
}

/// Receiving.
impl Core {
    /// A region of at least `want` bytes to read the server's bytes into; then
    /// [`Core::handle_read`] with the count read.
    pub fn read_buf(&mut self, want: usize) -> &mut [u8] {
        self.framer.spare(want)
    }

    /// Takes `n` bytes read into [`Core::read_buf`] at `now`, and dispatches every whole
    /// packet among them, waking the tasks they answer.
    pub fn handle_read(&mut self, n: usize, now: Instant) -> std::result::Result<(), Violation> {
        self.framer.commit(n);
        self.quiet_since = None;
        self.process_packets(now)
    }

    /// [`Core::handle_read`] for bytes already in memory.
    pub fn recv(&mut self, data: &[u8], now: Instant) -> std::result::Result<(), Violation> {
        let buf = self.read_buf(data.len());
        buf[..data.len()].copy_from_slice(data);
        self.handle_read(data.len(), now)
    }

    fn process_packets(&mut self, now: Instant) -> std::result::Result<(), Violation> {
        loop {
            let packet = match self.framer.next_packet()? {
                Some(body) => ServerPacket::decode(body)?,
                None => return Ok(()),
            };
            match packet {
                ServerPacket::Version {
                    version,
                    extensions,
                } => {
                    if self.version_seen {
                        return Err(Violation::SecondVersion);
                    }
                    self.version_seen = true;
                    self.version = Some((version, extensions));
                    if let Some(w) = self.version_waker.take() {
                        w.wake();
                    }
                }
                ServerPacket::Response { id, response } => self.answer(id, response, now)?,
            }
        }
    }

    /// Puts a reply in its slot and wakes the task waiting there; times the round-trip
    /// probe when it is that one.
    fn answer(
        &mut self,
        id: u32,
        response: Response,
        now: Instant,
    ) -> std::result::Result<(), Violation> {
        log::trace!(target: "sftpipe::wire", "<- #{id} {}", proto::kind::name(response.kind()));
        if let Some((probe, sent)) = self.rtt_probe
            && probe == id
        {
            let rtt = now.saturating_duration_since(sent);
            self.rtt_min = Some(self.rtt_min.map_or(rtt, |m| m.min(rtt)));
            self.rtt_probe = None;
        }
        match self.remove_slot(id) {
            Some(Slot::Waiting(waker)) => {
                self.slots.insert(id, Slot::Ready(response));
                if let Some(w) = waker {
                    w.wake();
                }
                Ok(())
            }
            Some(Slot::Abandoned | Slot::Dispensed) => Ok(()),
            Some(ready @ Slot::Ready(_)) => {
                self.slots.insert(id, ready);
                Err(Violation::SecondReply(id))
            }
            None => Err(Violation::UnknownId(id)),
        }
    }
}

/// The stall clock and the end.
impl Core {
    /// Runs the stall clock at `now`: it runs only once the VERSION came (ssh may be
    /// waiting for a password until then) and while replies are due, from the first call
    /// after the last bytes came. Returns the timeout once it expired.
    pub fn check_stall(&mut self, now: Instant) -> Option<Duration> {
        let limit = self.stall_timeout?;
        if self.replies_due == 0 || !self.version_seen {
            self.quiet_since = None;
            return None;
        }
        let since = *self.quiet_since.get_or_insert(now);
        (now.saturating_duration_since(since) >= limit).then_some(limit)
    }

    /// True while the stall clock runs: no byte came since it started.
    pub fn is_quiet(&self) -> bool {
        self.quiet_since.is_some()
    }

    /// When the stall clock expires, if it runs: the driver must call
    /// [`Core::check_stall`] then even if nothing happens.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.dead.is_some() {
            return None;
        }
        self.quiet_since?.checked_add(self.stall_timeout?)
    }

    /// Ends the connection with `err` and wakes every waiting task with it. Replies that
    /// came and were not looked at yet are still given.
    pub fn fail(&mut self, err: ConnectionError) {
        log::debug!("connection failed: {}", err.reason);
        self.dead = Some(err);
        self.quiet_since = None;
        let mut wakers: Vec<Waker> = self.version_waker.take().into_iter().collect();
        self.slots.retain(|_, slot| match slot {
            Slot::Waiting(w) => {
                wakers.extend(w.take());
                true
            }
            Slot::Ready(_) => true,
            Slot::Abandoned | Slot::Dispensed => false,
        });
        for w in wakers {
            w.wake();
        }
    }

    /// The session ended: later calls get `err`. Wakes no one (nothing waits any more),
    /// and keeps a first error.
    pub fn mark_closed(&mut self, err: ConnectionError) {
        if self.dead.is_none() {
            self.dead = Some(err);
        }
    }
}

/// Refuses a packet above the server's limit: a server that gets one drops the connection,
/// and every request in flight with it, so such a request fails alone, unsent. The size is
/// read from the length field, which also counts data queued behind it from a file.
fn check_size(packet: &[u8], max: usize) -> Result<()> {
    let size = match packet.first_chunk::<4>() {
        Some(len) => u32::from_be_bytes(*len) as usize + 4,
        None => packet.len(),
    };
    if size > max {
        return Err(Error::RequestTooLarge {
            op: proto::kind::name(packet.get(4).copied().unwrap_or(0)),
            path: String::new(),
            size,
            max,
        });
    }
    Ok(())
}

/// Logs a queued request (type and id) at trace level, for latency diagnosis with `-vvv`.
fn trace_sent(id: u32, packet: &[u8]) {
    if log::log_enabled!(target: "sftpipe::wire", log::Level::Trace) {
        let kind = packet.get(4).copied().unwrap_or(0);
        log::trace!(target: "sftpipe::wire", "-> #{id} {} ({} bytes)", proto::kind::name(kind), packet.len());
    }
}
