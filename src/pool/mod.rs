//! Several SFTP channels per session, and the ordering rules that come with them.
//!
//! One ssh channel never has more than its window (2 MiB in OpenSSH) in flight, so it
//! carries at most window / round trip: 20 MB/s at 100 ms, whatever the link. A session
//! therefore holds up to [`ConnectOptions::connections`] channels, each with its own
//! window and its own server process. By default they share one ssh connection (one
//! login, see [`sharing`]); `-D` starts one server process per channel.
//!
//! A session starts with one channel. [`Pool::grow`] adds the others when the work gains
//! from them: the smallest round trip measured is long enough that one channel's window
//! caps the rate ([`GROW_RTT`]), and there is a big file ([`STRIPE_MIN`]) or many files
//! ([`FILES_MIN`]) to move. On loopback, where the client, ssh and the server share the
//! CPU, more channels would only add processes, so none are added. With
//! [`ConnectOptions::eager_connections`] every channel opens at the start. The server may
//! refuse channels (OpenSSH's `MaxSessions`, 10 by default, counts the first one too):
//! the session goes on with those that opened, and says so with `-v`.
//!
//! # Ordering rules
//!
//! This is the one place they are written down; code that relies on one names it.
//!
//! 1. **Within one channel, requests are handled in order.** Every server sftpipe knows
//!    of handles one connection's requests in the order sent (OpenSSH's sftp-server
//!    reads and answers them one at a time). sftpipe relies on it to pipeline dependent
//!    requests without waiting for replies: MKDIRs of a new tree with the OPENs beneath
//!    them; one handle's WRITEs, FSETSTAT, FSYNC and CLOSE; a SYMLINK with the READLINK
//!    and LSTAT that check it; a REMOVE with the SYMLINK that replaces it; a file's
//!    RENAME into a directory with that directory's SETSTAT of its times.
//! 2. **Across channels, nothing is ordered.** Each channel has its own server process;
//!    a request sent on channel B after one on channel A may be handled first. So a
//!    request on B that depends on one on A is sent only once A's reply arrived:
//!    - every request of one file (OPEN, WRITEs, attributes, CLOSE, RENAME) stays on one
//!      channel ([`crate::Transfer`] picks it per file);
//!    - a striped file is the exception: its further handles are opened only after the
//!      first channel's OPEN created it, and its FSETSTAT, CLOSE and RENAME go out on the
//!      first channel only after every other channel's WRITEs and CLOSE were answered;
//!    - the directory locks ([`crate::task::DirLocks`]) remember the channel each MKDIR
//!      went out on; a task on another channel waits for that MKDIR's reply before it
//!      sends anything beneath the directory;
//!    - a directory's times are set on the first channel after the files that land in it
//!      were answered (not merely sent) when they went over another channel.
//!
//! `tests/channels.rs` checks rule 2 with a server that delays every reply of one
//! channel.

pub mod sharing;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::client::Sftp;
use crate::error::Result;
use crate::reactor::{Channel, Reactor};
use crate::transport::{ConnectOptions, Resolved};
pub use sharing::{ControlDir, Sharing};

/// Channels are added only when the smallest round trip is at least this: 2 MiB of
/// window per round trip is then at most 400 MiB/s, about what ssh moves on one core.
pub const GROW_RTT: Duration = Duration::from_millis(5);
/// A file this large is worth spreading over channels.
pub const STRIPE_MIN: u64 = 16 << 20;
/// This many files are worth spreading over channels.
pub const FILES_MIN: usize = 64;

/// What a transfer has to move, for [`Pool::grow`].
#[derive(Debug, Clone, Copy)]
pub enum Want {
    /// A file with this many bytes still to go.
    Stream(u64),
    /// This many files.
    Files(usize),
}

/// The extra channels of a session (the first one is the session's own [`Sftp`]). Clones
/// share the pool.
#[derive(Clone)]
pub struct Pool {
    inner: Rc<Inner>,
}

struct Inner {
    reactor: Rc<Reactor>,
    resolved: Resolved,
    /// Replaced by `Separate` at shutdown, removing our control directory.
    sharing: RefCell<Sharing>,
    label: String,
    peer: String,
    timeout: Option<Duration>,
    max: usize,
    eager: bool,
    /// Extra channels that completed their handshake, in the order they opened.
    ready: RefCell<Vec<Sftp>>,
    /// Every channel started, to shut down with the session.
    started: RefCell<Vec<Rc<Channel>>>,
    opening: Cell<usize>,
    /// A channel was refused: open no more.
    refused: Cell<bool>,
    /// Bumped whenever a channel opens or fails to.
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Pool {
    /// A pool for a session connected with `options` (its command line `resolved`),
    /// sharing the first channel's connection as `sharing` says.
    pub fn new(
        reactor: &Rc<Reactor>,
        options: &ConnectOptions,
        resolved: Resolved,
        sharing: Sharing,
    ) -> Pool {
        Pool {
            inner: Rc::new(Inner {
                reactor: reactor.clone(),
                resolved,
                sharing: RefCell::new(sharing),
                label: options.label(),
                peer: options.peer(),
                timeout: options.stall_timeout(),
                max: options.max_connections(),
                eager: options.eager_connections,
                ready: RefCell::new(Vec::new()),
                started: RefCell::new(Vec::new()),
                opening: Cell::new(0),
                refused: Cell::new(false),
                generation: Cell::new(0),
                waiters: RefCell::new(Vec::new()),
            }),
        }
    }

    /// The most channels, the first included.
    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// Extra channels that are open and alive.
    pub fn extras(&self) -> Vec<Sftp> {
        let ready = self.inner.ready.borrow();
        ready
            .iter()
            .filter(|s| !s.channel().is_dead())
            .cloned()
            .collect()
    }

    /// Every extra channel that opened, dead ones too (for byte counts).
    pub fn every(&self) -> Vec<Sftp> {
        self.inner.ready.borrow().clone()
    }

    /// Calls `f` with each live extra channel, in order (no copy of the list: the byte
    /// budget asks this for every request).
    pub(crate) fn for_each_ready(&self, mut f: impl FnMut(&Sftp)) {
        for s in self.inner.ready.borrow().iter() {
            f(s);
        }
    }

    /// Channels being opened.
    pub fn opening(&self) -> usize {
        self.inner.opening.get()
    }

    /// The channel for the next file: of `first` and the live extra channels, the one
    /// with the fewest requests awaiting replies (`first` when it is tied).
    pub fn pick(&self, first: &Sftp) -> Sftp {
        let ready = self.inner.ready.borrow();
        let live = std::iter::once(first)
            .chain(ready.iter())
            .filter(|s| !s.channel().is_dead());
        live.min_by_key(|s| s.channel().in_flight())
            .unwrap_or(first)
            .clone()
    }

    /// Adds channels if the work gains from them (see the module doc); returns at once,
    /// the channels open in the background and show up in [`Pool::extras`].
    pub fn grow(&self, first: &Sftp, want: Want) {
        if self.room() == 0 {
            return;
        }
        if !self.inner.eager {
            let Some(rtt) = first.channel().rtt_min() else {
                return;
            };
            let worth = match want {
                Want::Stream(left) => left >= STRIPE_MIN,
                Want::Files(n) => n >= FILES_MIN,
            };
            if rtt < GROW_RTT || !worth {
                return;
            }
            log::debug!("round trip {rtt:?}: adding channels for {want:?}");
        }
        self.open(self.room());
    }

    /// Opens every channel there is room for (`--eager-connections`; the session waits for
    /// their handshakes before its first operation).
    pub fn open_all(&self) {
        self.open(self.room());
    }

    /// Whether channels open at the start.
    pub fn eager(&self) -> bool {
        self.inner.eager
    }

    fn room(&self) -> usize {
        if self.inner.refused.get() {
            return 0;
        }
        let have = 1 + self.inner.ready.borrow().len() + self.inner.opening.get();
        self.inner.max.saturating_sub(have)
    }

    fn open(&self, n: usize) {
        for _ in 0..n {
            if let Err(e) = self.open_one() {
                log::info!("no further channel: {e}");
                self.inner.refused.set(true);
                return;
            }
        }
    }

    /// Starts one channel; its handshake runs as a task.
    fn open_one(&self) -> Result<()> {
        let inner = &self.inner;
        let number = 2 + inner.ready.borrow().len() + inner.opening.get();
        let label = format!("{} (channel {number})", inner.label);
        let pipes = inner
            .resolved
            .spawn(&inner.sharing.borrow().attach_options(), &label)?;
        let chan = Channel::new(&inner.reactor, pipes)?;
        inner.started.borrow_mut().push(chan.clone());
        chan.set_stall_timeout(inner.timeout, inner.peer.clone());
        inner.opening.set(inner.opening.get() + 1);
        let pool = self.clone();
        crate::task::spawn(async move {
            let opened = match Sftp::handshake(chan.clone()).await {
                Ok(sftp) => {
                    // Chunk sizes follow the server's limits: known before the first use.
                    sftp.limits().await;
                    Ok(sftp)
                }
                Err(e) => Err(e),
            };
            pool.opened(number, opened);
        });
        Ok(())
    }

    fn opened(&self, number: usize, r: Result<Sftp>) {
        let inner = &self.inner;
        inner.opening.set(inner.opening.get() - 1);
        match r {
            Ok(sftp) => {
                log::info!(
                    "channel {number} open ({})",
                    inner.sharing.borrow().describe()
                );
                inner.ready.borrow_mut().push(sftp);
            }
            Err(e) => {
                // Typically the server's MaxSessions: "administratively prohibited".
                log::info!("channel {number} not opened, going on with the others: {e}");
                inner.refused.set(true);
            }
        }
        inner.generation.set(inner.generation.get() + 1);
        for w in inner.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// A number that changes whenever a channel opens or fails to (see
    /// [`Pool::changed`]).
    pub fn generation(&self) -> u64 {
        self.inner.generation.get()
    }

    /// Waits until [`Pool::generation`] differs from `seen`; at once if nothing is
    /// opening (nothing will change).
    pub async fn changed(&self, seen: u64) {
        std::future::poll_fn(|cx| {
            if self.inner.generation.get() != seen || self.inner.opening.get() == 0 {
                return Poll::Ready(());
            }
            self.inner.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Begins ending every extra channel: each answers what it owes and has its stdin
    /// half-closed, so that their ends (a round trip each) overlap; [`Pool::shutdown`]
    /// then waits for them.
    pub(crate) fn begin_shutdown(&self) {
        self.inner.refused.set(true);
        for (i, s) in self.inner.ready.borrow_mut().drain(..).enumerate() {
            let (out, inn) = s.channel().byte_counts();
            log::info!("channel {}: {out} bytes sent, {inn} received", i + 2);
        }
        for chan in self.inner.started.borrow().iter() {
            chan.begin_shutdown();
        }
    }

    /// Ends every extra channel (the session's own goes after them: with shared
    /// connections it is the master).
    pub fn shutdown(&self) {
        self.begin_shutdown();
        let started = std::mem::take(&mut *self.inner.started.borrow_mut());
        for chan in started {
            chan.shutdown(&self.inner.reactor);
        }
    }

    /// Removes the control socket's directory (after the master, the session's own
    /// channel, has ended).
    pub fn remove_control_dir(&self) {
        *self.inner.sharing.borrow_mut() = Sharing::Separate;
    }

    /// ssh options for the session's own (first) channel.
    pub fn master_options(&self) -> Vec<String> {
        self.inner.sharing.borrow().master_options()
    }
}
