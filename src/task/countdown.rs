//! A countdown latch for one thread: tasks hold tokens, and a waiter wakes once every
//! token has been released (explicitly, or by being dropped when its task ends or fails).
//!
//! The mirror uses it to send directory times as soon as every file has *queued* its last
//! request that changes a directory, instead of waiting for all of their replies.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

#[derive(Default)]
struct State {
    outstanding: Cell<usize>,
    waker: RefCell<Option<Waker>>,
}

/// Counts tokens still held; [`Countdown::wait`] completes when none is left.
#[derive(Clone, Default)]
pub struct Countdown {
    state: Rc<State>,
}

/// One unit of a [`Countdown`]; released at most once, at the latest when dropped.
pub struct Token {
    state: Rc<State>,
    released: Cell<bool>,
}

impl Countdown {
    /// A countdown with no tokens (waiting on it completes at once).
    pub fn new() -> Self {
        Self::default()
    }

    /// Issues a token the waiter will wait for.
    pub fn token(&self) -> Token {
        self.state.outstanding.set(self.state.outstanding.get() + 1);
        Token {
            state: self.state.clone(),
            released: Cell::new(false),
        }
    }

    /// Tokens not yet released.
    pub fn outstanding(&self) -> usize {
        self.state.outstanding.get()
    }

    /// Completes when every token issued so far has been released.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.state.outstanding.get() == 0 {
                Poll::Ready(())
            } else {
                *self.state.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl Token {
    /// Releases the token; later calls (and the drop) do nothing.
    pub fn release(&self) {
        if self.released.replace(true) {
            return;
        }
        let left = self.state.outstanding.get().saturating_sub(1);
        self.state.outstanding.set(left);
        if left == 0
            && let Some(w) = self.state.waker.borrow_mut().take()
        {
            w.wake();
        }
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Runtime, spawn, yield_now};

    #[test]
    fn completes_at_once_without_tokens() {
        let rt = Runtime::new().unwrap();
        rt.block_on(Countdown::new().wait());
    }

    #[test]
    fn waits_for_explicit_releases_and_drops() {
        let rt = Runtime::new().unwrap();
        let done = rt.block_on(async {
            let c = Countdown::new();
            let (a, b) = (c.token(), c.token());
            let waiter = {
                let c = c.clone();
                spawn(async move {
                    c.wait().await;
                    true
                })
            };
            yield_now().await;
            a.release();
            a.release(); // idempotent: must not count twice
            assert_eq!(c.outstanding(), 1);
            yield_now().await;
            drop(b);
            assert_eq!(c.outstanding(), 0);
            waiter.await
        });
        assert!(done);
    }
}
