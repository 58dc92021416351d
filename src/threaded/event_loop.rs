//! The loop thread: owns the [`Session`], turns queued calls into tasks, and at the end
//! fails what is still in flight before the session closes the connection.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::inbox::Inbox;
use super::oneshot;
use crate::client::Sftp;
use crate::error::{Error, Result};
use crate::session::Session;
use crate::transfer::{Transfer, TransferOptions};
use crate::transport::ConnectOptions;

/// What the loop thread hands back once connected; dropping it closes the inbox, so a
/// connect whose caller went away does not leave the thread running.
pub(crate) struct Owner(pub(crate) Arc<Inbox>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// State of the loop shared by its tasks.
pub(crate) struct LoopCtx {
    pub(crate) sftp: Sftp,
    /// The limits (open handles, bytes in flight) that every transfer of the handle
    /// shares, as the CLI's files share them.
    pub(crate) base: Transfer,
    closing: Cell<bool>,
    next_id: Cell<u64>,
    /// Every running call's latest waker, to end them all when the last handle goes.
    running: RefCell<HashMap<u64, Option<Waker>>>,
    /// The serving future, waiting for `running` to empty.
    idle: RefCell<Option<Waker>>,
}

impl LoopCtx {
    /// Runs a call as a task on this loop (its result travels through its own channel).
    pub(crate) fn spawn(self: &Rc<Self>, call: impl Future<Output = ()> + 'static) {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.running.borrow_mut().insert(id, None);
        let task = Cancellable {
            ctx: self.clone(),
            id,
            call: Box::pin(call),
        };
        drop(crate::task::spawn(task));
    }

    /// Ends every running call (each drops its sender: the caller gets an error) and
    /// waits until they have all ended.
    async fn cancel_all(&self) {
        self.closing.set(true);
        let wakers: Vec<Waker> = self
            .running
            .borrow_mut()
            .values_mut()
            .flat_map(Option::take)
            .collect();
        wakers.into_iter().for_each(Waker::wake);
        std::future::poll_fn(|cx| {
            if self.running.borrow().is_empty() {
                Poll::Ready(())
            } else {
                *self.idle.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// A call that ends early, dropping its work, once the loop is closing.
struct Cancellable {
    ctx: Rc<LoopCtx>,
    id: u64,
    call: Pin<Box<dyn Future<Output = ()>>>,
}

impl Future for Cancellable {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.ctx.closing.get() {
            return Poll::Ready(());
        }
        if self.call.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if let Some(slot) = self.ctx.running.borrow_mut().get_mut(&self.id) {
            *slot = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Cancellable {
    fn drop(&mut self) {
        let mut running = self.ctx.running.borrow_mut();
        running.remove(&self.id);
        if running.is_empty() {
            drop(running);
            let idle = self.ctx.idle.borrow_mut().take();
            if let Some(w) = idle {
                w.wake();
            }
        }
    }
}

/// Closes the inbox however the loop ends (a panic included), so that no caller waits
/// for a loop that is gone.
struct CloseOnExit(Arc<Inbox>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The loop thread's body: connect, report, serve until the last handle is gone.
pub(crate) fn run(options: ConnectOptions, ready: oneshot::Sender<Result<Owner>>) {
    let session = match Session::connect(&options) {
        Ok(s) => s,
        Err(e) => return ready.send(Err(e)),
    };
    let (inbox, _source) = match Inbox::register(session.reactor()) {
        Ok(v) => v,
        Err(e) => return ready.send(Err(Error::local("creating the loop's wake-up", e))),
    };
    let _close = CloseOnExit(inbox.clone());
    ready.send(Ok(Owner(inbox.clone())));
    let ctx = Rc::new(LoopCtx {
        sftp: session.sftp().clone(),
        base: Transfer::new(session.sftp(), TransferOptions::default()),
        closing: Cell::new(false),
        next_id: Cell::new(0),
        running: RefCell::new(HashMap::new()),
        idle: RefCell::new(None),
    });
    session.run(serve(&inbox, &ctx));
    log::debug!("last handle of {} dropped: closing", options.label());
    // `session` drops here: the channel is drained and closed, the child reaped.
}

async fn serve(inbox: &Inbox, ctx: &Rc<LoopCtx>) {
    while let Some(jobs) = std::future::poll_fn(|cx| inbox.poll_jobs(cx)).await {
        for job in jobs {
            job(ctx);
        }
    }
    ctx.cancel_all().await;
}
