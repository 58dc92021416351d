//! [`Client`]: a `Send + Sync + Clone` handle to one connection, usable from any thread
//! and any executor.
//!
//! The connection's event loop (the single-threaded [`Session`](crate::Session) and its
//! runtime) runs on a thread of its own. Each call is queued to it, runs there as a task
//! next to every other call in flight (so calls from many threads share the connection's
//! round trips), and its result comes back through a [`Reply`]: a `Send` future completed
//! by the caller's waker, or [`Reply::wait`] to block.

mod event_loop;
mod inbox;
mod oneshot;
mod ops;
mod wait;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::{JoinHandle, ThreadId};

use crate::error::{ConnectionError, Error, Result};
use crate::transfer::Progress;
use crate::transport::ConnectOptions;
use event_loop::{LoopCtx, Owner};

pub use wait::block_on;

/// A progress sink that may be called from the connection's thread.
pub type SharedProgress = Arc<dyn Progress + Send + Sync>;

/// A handle to one SFTP connection: `Send + Sync + Clone`, every method callable from any
/// thread at once.
///
/// Every operation returns a [`Reply`]: `.await` it under any executor (tokio, smol,
/// `futures::executor`, ...) or `.wait()` for it. Calls in flight from all threads and
/// tasks are pipelined over the one connection. The connection closes when the last
/// clone is dropped: calls still in flight then fail, and the drop waits (briefly) for
/// ssh to exit.
///
/// ```no_run
/// use sftpipe::{Client, ConnectOptions};
/// # fn main() -> sftpipe::Result<()> {
/// let client = Client::connect(&ConnectOptions::host("backup.example.org").port(2222))?;
/// let threads: Vec<_> = (0..8)
///     .map(|i| {
///         let client = client.clone();
///         std::thread::spawn(move || client.stat(format!("/srv/data/{i}")).wait())
///     })
///     .collect();
/// for t in threads {
///     match t.join().expect("thread panicked") {
///         Ok(attrs) => println!("{} bytes", attrs.size.unwrap_or(0)),
///         Err(e) => eprintln!("{e}"),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    progress: Option<SharedProgress>,
}

struct Inner {
    owner: Owner,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
    options: ConnectOptions,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.owner.0.close();
        // A handle dropped by a call on the loop thread itself cannot wait for it.
        if std::thread::current().id() == self.thread_id {
            return;
        }
        let thread = self
            .thread
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            log::error!("the connection thread of {} panicked", self.options.label());
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.inner.options.label())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts ssh (or the `-D` server command) on a new thread, runs the SFTP handshake
    /// there and returns the handle. Blocks until connected; see
    /// [`Client::connect_async`] for a future.
    ///
    /// ```no_run
    /// use sftpipe::{Client, ConnectOptions};
    /// # fn main() -> sftpipe::Result<()> {
    /// let options = ConnectOptions::host("backup.example.org")
    ///     .user("mirror")
    ///     .identity("/home/me/.ssh/id_backup");
    /// let client = Client::connect(&options)?;
    /// client.mkdir_all("/srv/backup/2026").wait()?;
    /// # Ok(()) }
    /// ```
    pub fn connect(options: &ConnectOptions) -> Result<Client> {
        block_on(Self::connect_async(options))
    }

    /// [`Client::connect`] as a `Send` future (ssh's own handshake takes a while).
    pub fn connect_async(
        options: &ConnectOptions,
    ) -> impl Future<Output = Result<Client>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let opts = options.clone();
        let spawned = std::thread::Builder::new()
            .name("sftpipe-connection".into())
            .spawn(move || event_loop::run(opts, tx));
        let options = options.clone();
        async move {
            let thread = spawned.map_err(|e| Error::local("starting the connection thread", e))?;
            let owner = rx.await.map_err(|_| gone())??;
            Ok(Client {
                inner: Arc::new(Inner {
                    owner,
                    thread_id: thread.thread().id(),
                    thread: Mutex::new(Some(thread)),
                    options,
                }),
                progress: None,
            })
        }
    }

    /// How this client was connected.
    pub fn options(&self) -> &ConnectOptions {
        &self.inner.options
    }

    /// A clone whose transfers ([`Client::put`], trees, mirrors) report to `progress`;
    /// it is called on the connection's thread, so keep it quick and never wait there for
    /// another call of this client (such a [`Reply::wait`] fails instead of hanging).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use sftpipe::{Client, ConnectOptions, Progress, TransferOptions};
    ///
    /// #[derive(Default)]
    /// struct Bytes(AtomicU64);
    /// impl Progress for Bytes {
    ///     fn transferred(&self, n: u64) {
    ///         self.0.fetch_add(n, Ordering::Relaxed);
    ///     }
    /// }
    /// # fn main() -> sftpipe::Result<()> {
    /// let client = Client::connect(&ConnectOptions::host("h"))?;
    /// let bytes = Arc::new(Bytes::default());
    /// client
    ///     .with_progress(bytes.clone())
    ///     .put_tree("photos", "/srv/photos", &TransferOptions::default())
    ///     .wait()?;
    /// println!("{} bytes sent", bytes.0.load(Ordering::Relaxed));
    /// # Ok(()) }
    /// ```
    pub fn with_progress(&self, progress: SharedProgress) -> Client {
        Client {
            inner: self.inner.clone(),
            progress: Some(progress),
        }
    }

    /// Queues `call` to the loop thread; its result comes back through the [`Reply`].
    fn call<T, F, Fut>(&self, call: F) -> Reply<T>
    where
        T: Send + 'static,
        F: FnOnce(&Rc<LoopCtx>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.inner.owner.0.push(Box::new(move |ctx| {
            let work = call(ctx);
            ctx.spawn(async move { tx.send(work.await) });
        }));
        Reply {
            rx,
            loop_thread: self.inner.thread_id,
        }
    }
}

/// The error of a call whose connection thread is gone.
fn gone() -> Error {
    Error::Connection(ConnectionError {
        reason: "the connection is closed (its last Client was dropped or its thread ended)".into(),
        stderr_tail: Vec::new(),
        unreached: None,
    })
}

/// The result of a [`Client`] call: a `Send` future, completed from the connection's
/// thread through the waker of whatever polls it.
///
/// The call is already on its way when the `Reply` is made: dropping it does not cancel
/// the operation, only its result is discarded. It fails with a connection error
/// ([`Error::is_connection`]) if the connection closes first; it never hangs waiting for
/// a loop that is gone.
///
/// ```no_run
/// use sftpipe::{Client, ConnectOptions};
/// # async fn from_async(client: Client) -> sftpipe::Result<()> {
/// // In async code (tokio::spawn accepts it: the future is Send + 'static):
/// let size = client.stat("/srv/file").await?.size;
/// # Ok(()) }
/// # fn main() -> sftpipe::Result<()> {
/// # let client = Client::connect(&ConnectOptions::host("h"))?;
/// // On a plain thread:
/// let size = client.stat("/srv/file").wait()?.size;
/// // Many at once, then collect:
/// let replies: Vec<_> = (0..100).map(|i| client.stat(format!("/srv/{i}"))).collect();
/// let found = replies.into_iter().filter_map(|r| r.wait().ok()).count();
/// # Ok(()) }
/// ```
#[must_use = "the result of the call (it runs whether or not it is awaited)"]
pub struct Reply<T> {
    rx: oneshot::Receiver<Result<T>>,
    loop_thread: ThreadId,
}

impl<T> Reply<T> {
    /// Blocks this thread until the result is in. Do not call it on an async executor's
    /// thread (it would block that thread); `.await` instead.
    ///
    /// Fails instead of deadlocking when called on the connection's own thread (from a
    /// progress callback).
    pub fn wait(self) -> Result<T> {
        if std::thread::current().id() == self.loop_thread {
            return Err(Error::InvalidInput(
                "a blocking call on the connection's own thread (inside a progress callback) \
                 would never complete"
                    .into(),
            ));
        }
        block_on(self)
    }
}

impl<T> Future for Reply<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(oneshot::Closed)) => Poll::Ready(Err(gone())),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + Clone>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn the_handle_and_its_futures_cross_threads() {
        assert_send_sync::<Client>();
        assert_send::<Reply<crate::FileAttributes>>();
        assert_send::<Reply<crate::transfer::Report>>();
        assert_send::<Reply<crate::mirror::MirrorReport>>();
    }
}
