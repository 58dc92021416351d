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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count::default());
        (c.clone(), Waker::from(c))
    }

    fn woken(c: &Count) -> usize {
        c.0.load(Ordering::SeqCst)
    }

    fn version_packet() -> Vec<u8> {
        let mut v = Vec::new();
        ServerPacket::Version {
            version: 3,
            extensions: vec![(b"limits@openssh.com".to_vec(), b"1".to_vec())],
        }
        .encode(&mut v);
        v
    }

    fn data_reply(id: u32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        ServerPacket::Response {
            id,
            response: Response::Data(data.to_vec()),
        }
        .encode(&mut v);
        v
    }

    /// A request of `len` bytes, length field included.
    fn request(id: u32, len: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&(len as u32 - 4).to_be_bytes());
        out.push(proto::kind::STAT);
        out.extend_from_slice(&id.to_be_bytes());
        out.resize(out.len() + len - 9, b'x');
    }

    fn send(core: &mut Core, out: &mut Vec<u8>, now: Instant) -> u32 {
        let id = core.try_send_with(out, now, |id, v| {
            request(id, 20, v);
            Ok(true)
        });
        match id {
            Ok(Some(id)) => id,
            other => panic!("not sent: {other:?}"),
        }
    }

    /// A core past the handshake, as a driver would have it.
    fn connected() -> Core {
        let mut core = Core::new();
        core.send_init(&mut Vec::new()).unwrap();
        core.recv(&version_packet(), Instant::now()).unwrap();
        assert!(core.version_seen());
        core
    }

    fn feed_in_chunks(core: &mut Core, bytes: &[u8], sizes: &[usize]) -> Result<(), Violation> {
        let now = Instant::now();
        let mut rest = bytes;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.clamp(1, rest.len()));
            core.recv(chunk, now)?;
            rest = tail;
        }
        Ok(())
    }

    /// Sends `n` requests, feeds their replies in `order` cut at `sizes`, and checks that
    /// each task is woken once and gets its own reply.
    fn replies_in_any_order_and_split(n: usize, order: &[usize], sizes: &[usize]) {
        let mut core = connected();
        let mut out = Vec::new();
        let now = Instant::now();
        let ids: Vec<u32> = (0..n).map(|_| send(&mut core, &mut out, now)).collect();
        let wakers: Vec<_> = ids
            .iter()
            .map(|&id| {
                let (count, waker) = counting();
                assert!(core.poll_reply(id, &waker).is_pending());
                count
            })
            .collect();
        let stream: Vec<u8> = order
            .iter()
            .flat_map(|&i| data_reply(ids[i], format!("reply {i}").as_bytes()))
            .collect();
        feed_in_chunks(&mut core, &stream, sizes).unwrap();
        assert_eq!(core.buffered(), 0);
        let (_, waker) = counting();
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(woken(&wakers[i]), 1, "request {i}");
            match core.poll_reply(id, &waker) {
                Poll::Ready(Ok(Response::Data(d))) => {
                    assert_eq!(d, format!("reply {i}").as_bytes())
                }
                other => panic!("request {i}: {other:?}"),
            }
        }
        assert_eq!(core.in_flight(), 0);
        assert!(!core.expects_input());
    }

    proptest! {
        #[test]
        fn replies_come_through_whatever_the_order_and_cuts(
            order in (1usize..8).prop_flat_map(|n| Just((0..n).collect::<Vec<_>>()).prop_shuffle()),
            sizes in prop::collection::vec(1usize..40, 1..10),
        ) {
            replies_in_any_order_and_split(order.len(), &order, &sizes);
        }

        /// Whatever a server sends, the core answers with packets or a violation, never a
        /// panic, and holds less than one packet of the largest size allowed.
        #[test]
        fn any_bytes_give_packets_or_a_violation(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            sizes in prop::collection::vec(1usize..40, 1..10),
        ) {
            let mut core = Core::new();
            core.set_max_packet(64);
            if feed_in_chunks(&mut core, &bytes, &sizes).is_ok() {
                prop_assert!(core.buffered() < 4 + 64, "{} bytes held", core.buffered());
            }
        }
    }

    #[test]
    fn replies_fed_one_byte_at_a_time() {
        replies_in_any_order_and_split(3, &[2, 0, 1], &[1]);
    }

    #[test]
    fn the_version_wakes_its_waiter_once_and_is_taken() {
        let mut core = Core::new();
        let mut out = Vec::new();
        core.send_init(&mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 5, proto::kind::INIT, 0, 0, 0, 3]);
        let (count, waker) = counting();
        assert!(core.poll_version(&waker).is_pending());
        assert!(core.expects_input());
        feed_in_chunks(&mut core, &version_packet(), &[1]).unwrap();
        assert_eq!(woken(&count), 1);
        match core.poll_version(&waker) {
            Poll::Ready(Ok((3, ext))) => assert_eq!(ext[0].0, b"limits@openssh.com"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            core.recv(&version_packet(), Instant::now()),
            Err(Violation::SecondVersion)
        );
    }

    /// The server's last reply and the end of its stream come in one read: the reply is
    /// given, and only the requests still waiting get the connection's error.
    #[test]
    fn the_last_bytes_with_the_end_of_the_stream() {
        let mut core = connected();
        let mut out = Vec::new();
        let now = Instant::now();
        let answered = send(&mut core, &mut out, now);
        let unanswered = send(&mut core, &mut out, now);
        let (count, waker) = counting();
        assert!(core.poll_reply(unanswered, &waker).is_pending());
        core.recv(&data_reply(answered, b"last"), now).unwrap();
        // The driver read 0 bytes next: the end of the stream.
        core.fail(ConnectionError {
            reason: "server exited".into(),
            stderr_tail: Vec::new(),
            unreached: None,
        });
        assert_eq!(woken(&count), 1);
        assert!(matches!(
            core.poll_reply(answered, &waker),
            Poll::Ready(Ok(Response::Data(d))) if d == b"last"
        ));
        assert!(matches!(
            core.poll_reply(unanswered, &waker),
            Poll::Ready(Err(Error::Connection(e))) if e.reason == "server exited"
        ));
        assert!(core.send_init(&mut out).is_err());
        assert_eq!(core.poll_timeout(), None);
    }

    #[test]
    fn a_truncated_stream_leaves_the_request_waiting() {
        let mut core = connected();
        let mut out = Vec::new();
        let id = send(&mut core, &mut out, Instant::now());
        let (count, waker) = counting();
        assert!(core.poll_reply(id, &waker).is_pending());
        let reply = data_reply(id, b"cut short");
        core.recv(&reply[..reply.len() - 1], Instant::now())
            .unwrap();
        assert_eq!(core.buffered(), reply.len() - 1);
        assert_eq!(woken(&count), 0);
        assert!(core.poll_reply(id, &waker).is_pending());
    }

    #[test]
    fn replies_to_unknown_or_answered_ids_are_violations() {
        let mut core = connected();
        let mut out = Vec::new();
        let now = Instant::now();
        assert_eq!(
            core.recv(&data_reply(99, b""), now),
            Err(Violation::UnknownId(99))
        );
        let mut core = connected();
        let id = send(&mut core, &mut out, now);
        core.recv(&data_reply(id, b"one"), now).unwrap();
        assert_eq!(
            core.recv(&data_reply(id, b"two"), now),
            Err(Violation::SecondReply(id))
        );
        let (_, waker) = counting();
        assert!(matches!(
            core.poll_reply(id, &waker),
            Poll::Ready(Ok(Response::Data(d))) if d == b"one"
        ));
    }

    /// The length field alone condemns a packet: nothing of its body is awaited.
    #[test]
    fn an_oversized_length_is_refused_from_its_four_bytes() {
        let mut core = connected();
        core.set_max_packet(1000);
        let e = core.recv(&[0, 0, 0x10, 0], Instant::now());
        assert_eq!(
            e,
            Err(Violation::Decode(DecodeError::BadLength {
                len: 4096,
                max: 1000
            }))
        );
        assert_eq!(
            core.recv(&[0, 0, 0, 0], Instant::now())
                .map_err(|e| e.to_string()),
            Err("packet length 4096 outside 1..=1000".to_string())
        );
    }

    #[test]
    fn abandoned_and_dispensed_slots() {
        let mut core = connected();
        let mut out = Vec::new();
        let now = Instant::now();
        let (a, d, r) = (
            send(&mut core, &mut out, now),
            send(&mut core, &mut out, now),
            send(&mut core, &mut out, now),
        );
        core.abandon(a);
        core.dispense(d);
        assert!(
            core.awaits_replies(),
            "abandoned and waiting requests are owed"
        );
        core.recv(&data_reply(r, b""), now).unwrap();
        core.recv(&data_reply(a, b""), now).unwrap();
        assert!(!core.awaits_replies(), "a dispensed one is not");
        assert_eq!(core.in_flight(), 2);
        // Ids stay reserved until their reply came and was taken.
        core.next_id = d;
        assert_eq!(send(&mut core, &mut out, now), r + 1);
        core.recv(&data_reply(d, b""), now).unwrap();
        // A reply that came and was never looked at is freed by abandoning it.
        core.abandon(r);
        assert_eq!(core.in_flight(), 1);
        assert_eq!(core.replies_due, 1);
    }

    #[test]
    fn abandoning_after_the_end_frees_the_slot() {
        let mut core = connected();
        let mut out = Vec::new();
        let id = send(&mut core, &mut out, Instant::now());
        core.fail(ConnectionError {
            reason: "gone".into(),
            stderr_tail: Vec::new(),
            unreached: None,
        });
        core.abandon(id);
        assert_eq!(core.in_flight(), 0);
        assert!(!core.expects_input());
    }

    #[test]
    fn a_request_too_large_is_not_sent_and_uses_no_id() {
        let mut core = connected();
        core.set_max_request(100);
        let mut out = b"queued".to_vec();
        let now = Instant::now();
        let next = core.next_id;
        let r = core.try_send_with(&mut out, now, |id, v| {
            request(id, 101, v);
            Ok(true)
        });
        assert!(matches!(
            r,
            Err(Error::RequestTooLarge {
                op: "SSH_FXP_STAT",
                size: 101,
                max: 100,
                ..
            })
        ));
        // A header whose length counts file data queued behind it is judged by the length.
        let r = core.try_send_with(&mut out, now, |id, v| {
            request(id, 20, v);
            let at = v.len() - 20;
            v[at..at + 4].copy_from_slice(&200u32.to_be_bytes());
            Ok(true)
        });
        assert!(matches!(r, Err(Error::RequestTooLarge { size: 204, .. })));
        assert_eq!(out, b"queued");
        assert_eq!(core.in_flight(), 0);
        let declined = core.try_send_with(&mut out, now, |id, v| {
            request(id, 20, v);
            Ok(false)
        });
        assert!(matches!(declined, Ok(None)));
        assert_eq!(out, b"queued");
        assert_eq!(send(&mut core, &mut out, now), next);
        assert_eq!(out.len(), 6 + 20);
    }

    #[test]
    fn the_stall_deadline_follows_the_given_instants() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let limit = Duration::from_secs(10);
        let mut core = Core::new();
        core.set_stall_timeout(Some(limit));
        let mut out = Vec::new();
        // Before the VERSION (ssh may be asking for a password), no clock.
        let early = send(&mut core, &mut out, t0);
        assert_eq!(core.check_stall(at(100)), None);
        assert_eq!(core.poll_timeout(), None);
        core.recv(&version_packet(), at(100)).unwrap();
        let id = send(&mut core, &mut out, at(100));
        assert_eq!(core.check_stall(at(101)), None);
        assert_eq!(core.poll_timeout(), Some(at(111)));
        assert_eq!(core.check_stall(at(110)), None);
        // Bytes stop the clock (here the first of a reply); the next look starts it again.
        let reply = data_reply(id, b"");
        core.recv(&reply[..1], at(110)).unwrap();
        assert!(!core.is_quiet());
        assert_eq!(core.poll_timeout(), None);
        assert_eq!(core.check_stall(at(112)), None);
        assert_eq!(core.poll_timeout(), Some(at(122)));
        assert_eq!(core.check_stall(at(121)), None);
        assert_eq!(core.check_stall(at(122)), Some(limit));
        assert!(core.is_quiet());
        // Once nothing is due the clock stops, whatever the time.
        core.recv(&reply[1..], at(123)).unwrap();
        core.recv(&data_reply(early, b""), at(123)).unwrap();
        assert_eq!(core.check_stall(at(1000)), None);
        assert_eq!(core.poll_timeout(), None);
        // A zero timeout is none.
        core.set_stall_timeout(Some(Duration::ZERO));
        send(&mut core, &mut out, at(1000));
        assert_eq!(core.check_stall(at(5000)), None);
    }

    #[test]
    fn the_round_trip_is_timed_on_a_request_sent_with_nothing_queued() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut core = Core::new();
        let mut out = Vec::new();
        // Sent before the VERSION: waits for the connection, not timed.
        let early = send(&mut core, &mut out, t0);
        core.recv(&version_packet(), ms(500)).unwrap();
        core.recv(&data_reply(early, b""), ms(500)).unwrap();
        assert_eq!(core.rtt_min(), None);
        out.clear();
        let probe = send(&mut core, &mut out, ms(1000));
        // Queued behind the probe: not timed.
        let queued = send(&mut core, &mut out, ms(1000));
        core.recv(&data_reply(probe, b""), ms(1030)).unwrap();
        core.recv(&data_reply(queued, b""), ms(1100)).unwrap();
        assert_eq!(core.rtt_min(), Some(Duration::from_millis(30)));
        out.clear();
        let faster = send(&mut core, &mut out, ms(2000));
        core.recv(&data_reply(faster, b""), ms(2010)).unwrap();
        assert_eq!(core.rtt_min(), Some(Duration::from_millis(10)));
    }

    #[test]
    fn a_spoiled_request_fails_with_the_local_error() {
        let mut core = connected();
        let mut out = Vec::new();
        let id = send(&mut core, &mut out, Instant::now());
        core.spoil(
            id,
            io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank"),
        );
        core.recv(&data_reply(id, b""), Instant::now()).unwrap();
        let (_, waker) = counting();
        assert!(matches!(
            core.poll_reply(id, &waker),
            Poll::Ready(Err(Error::Local { .. }))
        ));
    }
}
