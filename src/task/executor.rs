//! A small single-threaded executor driven by the [`Reactor`](crate::reactor::Reactor).
//!
//! Tasks are `!Send` futures kept in a slab; a waker pushes its task's index onto the ready
//! queue. When nothing is ready the runtime blocks in `mio::Poll` until a reply, a
//! writable pipe or stderr output wakes someone.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::reactor::Reactor;

type LocalTask = Pin<Box<dyn Future<Output = ()>>>;

/// Task polls between two looks at the I/O.
const MAX_BURST_POLLS: usize = 1024;
/// Time spent polling tasks between two looks at the I/O.
const MAX_BURST_TIME: Duration = Duration::from_millis(1);

/// Indices of tasks whose wakers fired. Wakers must be `Send + Sync`, hence the mutex; it is
/// never contended because everything runs on one thread.
#[derive(Default)]
struct ReadyQueue {
    queue: Mutex<VecDeque<usize>>,
}

impl ReadyQueue {
    fn push(&self, id: usize) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(id);
        }
    }
    fn pop(&self) -> Option<usize> {
        self.queue.lock().ok().and_then(|mut q| q.pop_front())
    }
    fn is_empty(&self) -> bool {
        self.queue.lock().map(|q| q.is_empty()).unwrap_or(true)
    }
}

struct TaskWaker {
    id: usize,
    queued: AtomicBool,
    ready: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready.push(self.id);
        }
    }
}

struct MainWaker(AtomicBool);

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release)
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release)
    }
}

struct Slot {
    future: Option<LocalTask>,
    waker: Arc<TaskWaker>,
}

#[derive(Default)]
struct Shared {
    slots: RefCell<Vec<Option<Slot>>>,
    free: RefCell<Vec<usize>>,
    ready: Arc<ReadyQueue>,
    live: Cell<usize>,
}

impl Shared {
    fn spawn(&self, future: LocalTask) {
        let id = match self.free.borrow_mut().pop() {
            Some(id) => id,
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(None);
                slots.len() - 1
            }
        };
        let waker = Arc::new(TaskWaker {
            id,
            queued: AtomicBool::new(true),
            ready: self.ready.clone(),
        });
        self.slots.borrow_mut()[id] = Some(Slot {
            future: Some(future),
            waker,
        });
        self.live.set(self.live.get() + 1);
        self.ready.push(id);
    }

    /// Polls one ready task. The future is taken out of its slot while it runs so that it
    /// may spawn (which borrows the slab) without a double borrow.
    fn run_one(&self, id: usize) {
        let taken = {
            let mut slots = self.slots.borrow_mut();
            match slots.get_mut(id).and_then(|s| s.as_mut()) {
                Some(slot) => {
                    slot.waker.queued.store(false, Ordering::Release);
                    slot.future.take().map(|f| (f, slot.waker.clone()))
                }
                // A stale wake-up of a finished task.
                None => None,
            }
        };
        let Some((mut future, waker)) = taken else {
            return;
        };
        let waker = Waker::from(waker);
        let mut cx = Context::from_waker(&waker);
        let done = future.as_mut().poll(&mut cx).is_ready();
        let mut slots = self.slots.borrow_mut();
        if done {
            slots[id] = None;
            self.free.borrow_mut().push(id);
            self.live.set(self.live.get() - 1);
        } else if let Some(Some(slot)) = slots.get_mut(id) {
            slot.future = Some(future);
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Shared>>> = const { RefCell::new(None) };
}

/// Runs futures to completion on this thread, interleaving them with the reactor's I/O.
pub struct Runtime {
    shared: Rc<Shared>,
    reactor: Rc<Reactor>,
    running: Cell<bool>,
}

impl Runtime {
    /// A runtime with its own reactor.
    pub fn new() -> std::io::Result<Self> {
        Ok(Runtime {
            shared: Rc::new(Shared::default()),
            reactor: Rc::new(Reactor::new()?),
            running: Cell::new(false),
        })
    }

    /// The reactor that I/O sources register with.
    pub fn reactor(&self) -> &Rc<Reactor> {
        &self.reactor
    }

    /// Runs `future` and every task it spawns until `future` completes; spawned tasks that
    /// are still pending then stay suspended until the next `block_on`.
    ///
    /// # Panics
    /// When called from inside a future it is running (a programming error), or when every
    /// task waits and no I/O can wake any of them, which would otherwise hang forever.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        assert!(
            !self.running.replace(true),
            "Runtime::block_on called re-entrantly"
        );
        let _reset = ResetOnDrop(&self.running);
        let previous = CURRENT.with(|c| c.replace(Some(self.shared.clone())));
        let _restore = RestoreCurrent(Some(previous));

        let mut future = std::pin::pin!(future);
        let main = Arc::new(MainWaker(AtomicBool::new(true)));
        let main_waker = Waker::from(main.clone());
        let mut cx = Context::from_waker(&main_waker);
        loop {
            if main.0.swap(false, Ordering::AcqRel)
                && let Poll::Ready(v) = future.as_mut().poll(&mut cx)
            {
                return v;
            }
            // Bound a burst of task polls, in number and in time, so replies keep being read
            // and requests written while thousands of tasks are runnable. Replies left
            // unread would also inflate the round trips the byte budget is sized from.
            let burst = Instant::now();
            for n in 1..=MAX_BURST_POLLS {
                match self.shared.ready.pop() {
                    Some(id) => self.shared.run_one(id),
                    None => break,
                }
                if n % 16 == 0 && burst.elapsed() >= MAX_BURST_TIME {
                    break;
                }
            }
            let idle = || !main.0.load(Ordering::Acquire) && self.shared.ready.is_empty();
            match self.reactor.turn_if(idle) {
                Ok(true) => {}
                // Preparing the sources may itself have woken tasks (a connection found
                // dead wakes everyone waiting on it): only a loop with nothing runnable
                // and no I/O to wait for is stuck.
                Ok(false) if main.0.load(Ordering::Acquire) || !self.shared.ready.is_empty() => {}
                Ok(false) => panic!(
                    "sftpipe: all {} tasks are waiting and no I/O is pending (internal deadlock)",
                    self.shared.live.get()
                ),
                Err(e) => panic!("sftpipe: poll failed: {e}"),
            }
        }
    }
}

struct ResetOnDrop<'a>(&'a Cell<bool>);
impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

struct RestoreCurrent(Option<Option<Rc<Shared>>>);
impl Drop for RestoreCurrent {
    fn drop(&mut self) {
        if let Some(prev) = self.0.take() {
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
}

/// Awaits every task in `tasks`, including those the awaited tasks push there meanwhile
/// (a walk whose listings spawn more listings), until none is left.
pub async fn join_growing(tasks: &std::cell::RefCell<Vec<JoinHandle<()>>>) {
    loop {
        let pending: Vec<JoinHandle<()>> = tasks.borrow_mut().drain(..).collect();
        if pending.is_empty() {
            return;
        }
        for h in pending {
            h.await;
        }
    }
}

/// The result of a spawned task, awaitable. Dropping it detaches the task.
pub struct JoinHandle<T> {
    state: Rc<RefCell<JoinState<T>>>,
}

struct JoinState<T> {
    result: Option<T>,
    waker: Option<Waker>,
}

impl<T> JoinHandle<T> {
    /// True once the task has ended (and its result is not yet taken).
    pub fn is_finished(&self) -> bool {
        self.state.borrow().result.is_some()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut st = self.state.borrow_mut();
        match st.result.take() {
            Some(v) => Poll::Ready(v),
            None => {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Starts `future` as a task on the runtime currently inside `block_on`.
///
/// # Panics
/// Outside [`Runtime::block_on`].
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let state = Rc::new(RefCell::new(JoinState {
        result: None,
        waker: None,
    }));
    let st = state.clone();
    let task = async move {
        let v = future.await;
        let waker = {
            let mut s = st.borrow_mut();
            s.result = Some(v);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    };
    CURRENT.with(|c| match &*c.borrow() {
        Some(shared) => shared.spawn(Box::pin(task)),
        None => panic!("sftpipe::task::spawn called outside Runtime::block_on"),
    });
    JoinHandle { state }
}

/// Runs `future` as a task nobody awaits: [`spawn`] without the shared result slot a
/// [`JoinHandle`] needs (one allocation less per task, for callers spawning one per file).
pub(crate) fn spawn_detached(future: impl Future<Output = ()> + 'static) {
    CURRENT.with(|c| match &*c.borrow() {
        Some(shared) => shared.spawn(Box::pin(future)),
        None => panic!("sftpipe::task::spawn_detached called outside Runtime::block_on"),
    });
}

/// Yields once to let other tasks run.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::Source;

    /// A source that, like a connection found dead while flushing, wakes its waiter from
    /// `prepare` and reports that it expects nothing more.
    struct WakesInPrepare(Rc<RefCell<Option<Waker>>>);

    impl Source for WakesInPrepare {
        fn prepare(&self, _: &mio::Registry) -> bool {
            if let Some(w) = self.0.borrow_mut().take() {
                w.wake();
            }
            false
        }
        fn ready(&self, _: &mio::Registry, _: &mio::event::Event) {}
    }

    /// A source waiting for an event that does not come before `0`.
    struct WaitsLong(Instant);

    impl Source for WaitsLong {
        fn prepare(&self, _: &mio::Registry) -> bool {
            true
        }
        fn ready(&self, _: &mio::Registry, _: &mio::event::Event) {}
        fn deadline(&self) -> Option<Instant> {
            Some(self.0)
        }
    }

    #[test]
    fn a_wake_during_prepare_does_not_wait_for_the_other_sources() {
        let rt = Runtime::new().unwrap();
        let parked = Rc::new(RefCell::new(None));
        let sources: [Rc<dyn Source>; 2] = [
            Rc::new(WakesInPrepare(parked.clone())),
            Rc::new(WaitsLong(Instant::now() + Duration::from_secs(10))),
        ];
        for src in &sources {
            let slot = rt.reactor().reserve();
            rt.reactor().install(slot, src);
        }
        let started = Instant::now();
        let mut polls = 0;
        rt.block_on(std::future::poll_fn(|cx| {
            polls += 1;
            if polls == 1 {
                *parked.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the woken task waited {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_wake_during_prepare_is_not_mistaken_for_a_deadlock() {
        let rt = Runtime::new().unwrap();
        let parked = Rc::new(RefCell::new(None));
        let src: Rc<dyn Source> = Rc::new(WakesInPrepare(parked.clone()));
        let slot = rt.reactor().reserve();
        rt.reactor().install(slot, &src);
        let mut polls = 0;
        rt.block_on(std::future::poll_fn(|cx| {
            polls += 1;
            if polls == 1 {
                // Park with the waker where only `prepare` will find it.
                *parked.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }));
        assert_eq!(polls, 2);
    }
}
