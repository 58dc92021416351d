//! A one-value channel from the loop thread to any caller: the receiving future is `Send`
//! and completes through the waker of whatever executor polls it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// The sender is gone: no value will come after `value`.
    closed: bool,
}

struct Shared<T>(Mutex<State<T>>);

impl<T> Shared<T> {
    /// Never poisoned in practice (no user code runs under it); a poisoned lock still
    /// holds consistent state.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending half; dropping it unsent ends the receiver with [`Closed`].
pub(crate) struct Sender<T>(Arc<Shared<T>>);

/// The receiving half: a future of the value, or [`Closed`] when the sender went away.
pub(crate) struct Receiver<T>(Arc<Shared<T>>);

/// The sender was dropped without sending.
#[derive(Debug)]
pub(crate) struct Closed;

pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared(Mutex::new(State {
        value: None,
        waker: None,
        closed: false,
    })));
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    pub(crate) fn send(self, value: T) {
        let waker = {
            let mut st = self.0.lock();
            st.value = Some(value);
            st.closed = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.0.lock();
            st.closed = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Closed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.0.lock();
        if let Some(v) = st.value.take() {
            return Poll::Ready(Ok(v));
        }
        if st.closed {
            return Poll::Ready(Err(Closed));
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sent_value_arrives_and_a_dropped_sender_closes() {
        let (tx, rx) = channel();
        tx.send(7);
        assert_eq!(super::super::wait::block_on(rx).ok(), Some(7));
        let (tx, rx) = channel::<u8>();
        let t = std::thread::spawn(move || drop(tx));
        assert!(super::super::wait::block_on(rx).is_err());
        t.join().ok();
    }
}
