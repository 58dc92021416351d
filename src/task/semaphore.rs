//! A weighted, FIFO-fair async semaphore for one thread.
//!
//! Used for the open-file limit (weight 1 per handle) and the in-flight byte budget
//! (weight = bytes). Permits release on drop, so a task that fails or is cancelled can
//! never leak one — the flaw of reprepro's `Semaphore` collector.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Waiter {
    id: u64,
    want: usize,
    waker: Option<Waker>,
}

struct State {
    /// Negative after a shrink below what is held, until enough permits come back.
    available: isize,
    capacity: usize,
    waiters: VecDeque<Waiter>,
    next_id: u64,
}

/// A counting semaphore; clones share the same count.
#[derive(Clone)]
pub struct Semaphore {
    state: Rc<RefCell<State>>,
}

impl Semaphore {
    /// A semaphore with `capacity` permits (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Semaphore {
            state: Rc::new(RefCell::new(State {
                available: capacity as isize,
                capacity,
                waiters: VecDeque::new(),
                next_id: 0,
            })),
        }
    }

    /// Permits currently free.
    pub fn available(&self) -> usize {
        self.state.borrow().available.max(0) as usize
    }

    /// Changes the number of permits (at least 1). Shrinking below what is held takes
    /// effect as permits come back; waiters asking for more than the new capacity are
    /// served with the capacity.
    pub fn set_capacity(&self, capacity: usize) {
        let capacity = capacity.max(1);
        let mut st = self.state.borrow_mut();
        st.available += capacity as isize - st.capacity as isize;
        st.capacity = capacity;
        for w in st.waiters.iter_mut() {
            w.want = w.want.min(capacity);
        }
        Self::wake_head(&mut st);
    }

    /// Total permits.
    pub fn capacity(&self) -> usize {
        self.state.borrow().capacity
    }

    /// Waits for `n` permits (clamped to the capacity, so a large request cannot wait
    /// forever). Waiters are served in arrival order.
    pub fn acquire(&self, n: usize) -> Acquire {
        let n = n.clamp(1, self.capacity());
        Acquire {
            sem: self.clone(),
            want: n,
            id: None,
        }
    }

    fn release(&self, n: usize) {
        let mut st = self.state.borrow_mut();
        st.available += n as isize;
        Self::wake_head(&mut st);
    }

    fn wake_head(st: &mut State) {
        if let Some(head) = st.waiters.front_mut()
            && head.want as isize <= st.available
            && let Some(w) = head.waker.take()
        {
            w.wake();
        }
    }
}

/// Future of [`Semaphore::acquire`].
pub struct Acquire {
    sem: Semaphore,
    want: usize,
    id: Option<u64>,
}

impl Future for Acquire {
    type Output = Permit;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        let want = self.want;
        let sem = self.sem.clone();
        let mut st = sem.state.borrow_mut();
        let at_head = match self.id {
            None => st.waiters.is_empty(),
            Some(id) => st.waiters.front().map(|w| w.id) == Some(id),
        };
        let want = want.min(st.capacity);
        if at_head && st.available >= want as isize {
            st.available -= want as isize;
            if self.id.take().is_some() {
                st.waiters.pop_front();
            }
            // The next waiter may fit in what is left.
            Semaphore::wake_head(&mut st);
            return Poll::Ready(Permit {
                sem: Some(sem.clone()),
                n: want,
            });
        }
        match self.id {
            Some(id) => {
                if let Some(w) = st.waiters.iter_mut().find(|w| w.id == id) {
                    w.waker = Some(cx.waker().clone());
                }
            }
            None => {
                let id = st.next_id;
                st.next_id += 1;
                st.waiters.push_back(Waiter {
                    id,
                    want,
                    waker: Some(cx.waker().clone()),
                });
                self.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let mut st = self.sem.state.borrow_mut();
            st.waiters.retain(|w| w.id != id);
            Semaphore::wake_head(&mut st);
        }
    }
}

/// Held permits; released on drop.
pub struct Permit {
    sem: Option<Semaphore>,
    n: usize,
}

impl Permit {
    /// How many permits this holds.
    pub fn count(&self) -> usize {
        self.n
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(s) = self.sem.take() {
            s.release(self.n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Runtime, spawn};
    use std::cell::Cell;

    #[test]
    fn bounds_concurrency_and_releases_on_drop() {
        let rt = Runtime::new().unwrap();
        let sem = Semaphore::new(2);
        let running = Rc::new(Cell::new(0));
        let peak = Rc::new(Cell::new(0));
        rt.block_on(async {
            let mut handles = Vec::new();
            for _ in 0..10 {
                let (sem, running, peak) = (sem.clone(), running.clone(), peak.clone());
                handles.push(spawn(async move {
                    let _p = sem.acquire(1).await;
                    running.set(running.get() + 1);
                    peak.set(peak.get().max(running.get()));
                    crate::task::yield_now().await;
                    running.set(running.get() - 1);
                }));
            }
            for h in handles {
                h.await;
            }
        });
        assert_eq!(peak.get(), 2);
        assert_eq!(sem.available(), 2);
    }

    #[test]
    fn cancelled_waiter_does_not_block_the_queue() {
        let rt = Runtime::new().unwrap();
        let sem = Semaphore::new(1);
        rt.block_on(async {
            let held = sem.acquire(1).await;
            {
                let mut waiting = Box::pin(sem.acquire(1));
                let w = futures_util::task::noop_waker();
                let mut cx = Context::from_waker(&w);
                assert!(waiting.as_mut().poll(&mut cx).is_pending());
            }
            drop(held);
            let again = sem.acquire(1).await;
            assert_eq!(again.count(), 1);
        });
    }

    #[test]
    fn capacity_can_grow_and_shrink_while_permits_are_held() {
        let rt = Runtime::new().unwrap();
        let sem = Semaphore::new(2);
        rt.block_on(async {
            let a = sem.acquire(1).await;
            let b = sem.acquire(1).await;
            sem.set_capacity(4);
            let c = sem.acquire(2).await;
            assert_eq!(sem.available(), 0);
            sem.set_capacity(1);
            drop((a, b, c));
            assert_eq!(sem.available(), 1);
            let d = sem.acquire(5).await;
            assert_eq!(d.count(), 1);
        });
    }

    #[test]
    fn weighted_requests_are_clamped_to_capacity() {
        let rt = Runtime::new().unwrap();
        let sem = Semaphore::new(100);
        rt.block_on(async {
            let p = sem.acquire(1000).await;
            assert_eq!(p.count(), 100);
        });
    }
}
