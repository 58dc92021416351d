//! The one event loop: a `mio::Poll` driving the server connections and any other descriptor.
//!
//! [`Reactor`] is generic: sources ([`Source`]) register and get called on readiness.
//! [`Channel`] drives one SFTP connection: the child's socket and stderr, the outgoing
//! queue (`outqueue.rs`), the child's exit; its protocol state is the I/O-free
//! [`Core`]. [`AsyncFd`] lets tasks await any other descriptor.

mod asyncfd;
mod channel;
pub mod core;
mod outqueue;
mod stderr;

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Registry, Token};

pub use self::asyncfd::AsyncFd;
pub use self::channel::{Channel, ChildPipes};
pub use self::core::{Core, Transmit, Violation};

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
