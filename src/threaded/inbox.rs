//! Calls queued from any thread to the loop thread, and the `mio::Waker` that ends the
//! loop's poll when one arrives. It is one more [`Source`] of the reactor: the reactor
//! and the runtime stay single-threaded and unaware of other threads.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use mio::event::Event;
use mio::{Registry, Token};

use super::event_loop::LoopCtx;
use crate::reactor::{Reactor, Source};

/// One call: run on the loop thread, where it spawns its task.
pub(crate) type Job = Box<dyn FnOnce(&Rc<LoopCtx>) + Send>;

struct State {
    jobs: VecDeque<Job>,
    /// No more jobs: the last handle is gone or the loop ended.
    closed: bool,
    /// The mio waker was woken since the loop last took the jobs (one wake-up per batch).
    notified: bool,
    /// The loop's serving future, waiting for jobs.
    serve: Option<Waker>,
}

/// The queue of calls to one connection's loop thread.
pub(crate) struct Inbox {
    state: Mutex<State>,
    waker: mio::Waker,
}

impl Inbox {
    /// An inbox whose wake-ups reach `reactor`, and the source that must stay alive (the
    /// reactor holds it weakly) for as long as the loop serves it.
    pub(crate) fn register(reactor: &Reactor) -> std::io::Result<(Arc<Inbox>, Rc<dyn Source>)> {
        let slot = reactor.reserve();
        // The reactor routes `Token(slot * 4 + n)` to the slot's source.
        let waker = reactor.with_registry(|reg| mio::Waker::new(reg, Token(slot * 4)))?;
        let inbox = Arc::new(Inbox {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                closed: false,
                notified: false,
                serve: None,
            }),
            waker,
        });
        let source: Rc<dyn Source> = Rc::new(InboxSource(inbox.clone()));
        reactor.install(slot, &source);
        Ok((inbox, source))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a call; once closed the job is dropped, which fails its caller.
    pub(crate) fn push(&self, job: Job) {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            drop(job);
            return;
        }
        st.jobs.push_back(job);
        if !std::mem::replace(&mut st.notified, true) {
            drop(st);
            self.wake_loop();
        }
    }

    /// Takes no more jobs and fails the queued ones.
    pub(crate) fn close(&self) {
        let (jobs, serve) = {
            let mut st = self.lock();
            st.closed = true;
            (std::mem::take(&mut st.jobs), st.serve.take())
        };
        drop(jobs);
        // Directly too: a loop with no I/O pending does not poll for the mio event.
        if let Some(w) = serve {
            w.wake();
        }
        self.wake_loop();
    }

    fn wake_loop(&self) {
        if let Err(e) = self.waker.wake() {
            log::error!("cannot wake the connection's loop thread: {e}");
        }
    }

    /// The jobs queued so far, or `None` once closed and empty.
    pub(crate) fn poll_jobs(&self, cx: &mut Context<'_>) -> Poll<Option<VecDeque<Job>>> {
        let mut st = self.lock();
        if !st.jobs.is_empty() {
            st.notified = false;
            return Poll::Ready(Some(std::mem::take(&mut st.jobs)));
        }
        if st.closed {
            return Poll::Ready(None);
        }
        st.serve = Some(cx.waker().clone());
        Poll::Pending
    }
}

struct InboxSource(Arc<Inbox>);

impl Source for InboxSource {
    /// While open, a call may come at any time: the loop may block for it.
    fn prepare(&self, _: &Registry) -> bool {
        let st = self.0.lock();
        !st.closed || st.serve.is_some()
    }

    fn ready(&self, _: &Registry, _: &Event) {
        let serve = self.0.lock().serve.take();
        if let Some(w) = serve {
            w.wake();
        }
    }
}
