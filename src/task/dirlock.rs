//! Directory locks: make sure a remote directory exists, creating it (and its parents)
//! at most once however many tasks need it, and without a STAT per file.
//!
//! The first task to need a directory of unknown existence probes it with its own
//! operation (the OPEN of its file, say) while later tasks wait. Success proves the
//! directory exists; NO_SUCH_FILE makes the prober create it — MKDIR, recursing upward on
//! NO_SUCH_FILE like `mkdir -p` — and then retry. A failure is remembered and handed to
//! every waiter, so a directory that cannot be created costs one attempt, not one per file.
//!
//! Below a directory this batch created (or one known to be missing, such as the root of
//! an upload a STAT found absent), nothing can exist yet. There the MKDIRs of the missing
//! chain are sent top-down without waiting for their replies, and the files' OPENs go out
//! right behind them: the server handles one connection's requests in order, so a fresh
//! tree costs no round trip per directory level. Should an OPEN still meet NO_SUCH_FILE
//! (a server that reorders), the task waits for the MKDIR's verdict and reports its error
//! or tries once more.
//!
//! A task that fails or is cancelled while holding a lock releases it (the lock is a
//! guard), so it never stalls its siblings.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures_util::FutureExt;
use futures_util::future::{LocalBoxFuture, Shared};

use crate::client::Sftp;
use crate::error::{Error, Result};
use crate::proto::{FileAttributes, Request, StatusCode};

/// The verdict of a MKDIR sent without waiting, awaitable by every task that needs it.
type MkdirOutcome = Shared<LocalBoxFuture<'static, std::result::Result<(), Rc<Error>>>>;

enum DirState {
    /// A task is probing or creating it; these wait.
    Busy(Vec<Waker>),
    /// Known to exist; `new` when this batch created it, so its children cannot exist yet
    /// and need no probe.
    Exists { new: bool },
    /// Known not to exist (e.g. the root of an upload whose STAT said so).
    Missing,
    /// Its MKDIR is on the way over the channel with this slot: requests sent on that
    /// channel from now on reach the server after it; on another channel they must wait
    /// for its verdict (ordering rule 2 of [`crate::pool`]).
    Submitted(MkdirOutcome, usize),
    /// Could not be created: every later task gets this error.
    Failed(Error),
}

/// The directory locks of one batch of work. Clones share state.
#[derive(Clone)]
pub struct DirLocks {
    sftp: Sftp,
    states: Rc<RefCell<HashMap<Vec<u8>, DirState>>>,
    dir_mode: Option<u32>,
}

/// Releases a Busy lock that was not settled (the holder failed or was dropped).
struct Holding<'a> {
    locks: &'a DirLocks,
    dir: Vec<u8>,
    settled: bool,
}

impl Holding<'_> {
    fn settle(&mut self, state: Option<DirState>) {
        self.settled = true;
        self.locks.set(&self.dir, state);
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.locks.set(&self.dir, None);
        }
    }
}

/// What [`DirLocks::acquire`] found.
enum Acquired<'a> {
    /// The directory exists.
    Exists,
    /// Its MKDIR is on the way over the channel with this slot.
    Submitted(MkdirOutcome, usize),
    /// Unknown: this task now holds it.
    Held(Holding<'a>),
}

/// The parent of a remote path, or `None` for a root (`/`, `.`, ``).
pub fn parent_dir(path: &[u8]) -> Option<&[u8]> {
    let trimmed = trim_trailing_slashes(path);
    if is_root(trimmed) {
        return None;
    }
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(0) => Some(b"/"),
        Some(i) => Some(trim_trailing_slashes(&trimmed[..i])),
        None => Some(b"."),
    }
}

fn trim_trailing_slashes(p: &[u8]) -> &[u8] {
    let mut end = p.len();
    while end > 1 && p[end - 1] == b'/' {
        end -= 1;
    }
    &p[..end]
}

fn is_root(p: &[u8]) -> bool {
    p.is_empty() || p == b"/" || p == b"." || p == b"~"
}

impl DirLocks {
    /// Locks for work over `sftp`; directories are created with the server's default mode.
    pub fn new(sftp: Sftp) -> Self {
        DirLocks {
            sftp,
            states: Rc::new(RefCell::new(HashMap::new())),
            dir_mode: None,
        }
    }

    /// The same locks (shared state) for work over another channel of the session: MKDIRs
    /// go out over `sftp`, and MKDIRs sent over other channels are waited for (ordering
    /// rule 2 of [`crate::pool`]).
    pub fn for_channel(&self, sftp: &Sftp) -> DirLocks {
        DirLocks {
            sftp: sftp.clone(),
            states: self.states.clone(),
            dir_mode: self.dir_mode,
        }
    }

    fn channel_slot(&self) -> usize {
        self.sftp.channel().slot()
    }

    /// Creates directories with this mode (subject to the server's umask).
    pub fn with_dir_mode(mut self, mode: u32) -> Self {
        self.dir_mode = Some(mode);
        self
    }

    /// Records that `dir` exists (e.g. it was just listed), sparing a probe.
    pub fn mark_exists(&self, dir: &[u8]) {
        self.states.borrow_mut().insert(
            trim_trailing_slashes(dir).to_vec(),
            DirState::Exists { new: false },
        );
    }

    /// Records that `dir` does not exist (e.g. a STAT said so), so that everything below
    /// it is created without probing.
    pub fn mark_missing(&self, dir: &[u8]) {
        let dir = trim_trailing_slashes(dir);
        if !is_root(dir) {
            self.states
                .borrow_mut()
                .entry(dir.to_vec())
                .or_insert(DirState::Missing);
        }
    }

    /// True when this batch created `dir` (or is creating it, or knows it missing): nothing
    /// an earlier run left can be inside.
    pub fn is_new(&self, dir: &[u8]) -> bool {
        let dir = trim_trailing_slashes(dir);
        let created = matches!(
            self.states.borrow().get(dir),
            Some(DirState::Exists { new: true }) | Some(DirState::Submitted(..))
        );
        created || self.known_missing(dir)
    }

    /// True when `dir` cannot exist yet and nobody has started creating it: it is marked
    /// missing, or lies below a directory that is missing, new, or being created.
    fn known_missing(&self, dir: &[u8]) -> bool {
        let states = self.states.borrow();
        match states.get(dir) {
            Some(DirState::Missing) => return true,
            Some(_) => return false,
            None => {}
        }
        let mut cur = dir;
        while let Some(parent) = parent_dir(cur) {
            match states.get(parent) {
                Some(DirState::Missing)
                | Some(DirState::Exists { new: true })
                | Some(DirState::Submitted(..)) => return true,
                Some(DirState::Busy(_)) | None => cur = parent,
                Some(DirState::Exists { new: false }) | Some(DirState::Failed(_)) => return false,
            }
        }
        false
    }

    fn set(&self, dir: &[u8], state: Option<DirState>) {
        let mut states = self.states.borrow_mut();
        let old = match state {
            Some(s) => states.insert(dir.to_vec(), s),
            None => states.remove(dir),
        };
        if let Some(DirState::Busy(wakers)) = old {
            for w in wakers {
                w.wake();
            }
        }
    }

    /// Waits while another task holds `dir`; then reports what is known, taking the lock
    /// when nothing is.
    async fn acquire(&self, dir: &[u8]) -> Result<Acquired<'_>> {
        std::future::poll_fn(|cx| {
            let mut states = self.states.borrow_mut();
            match states.get_mut(dir) {
                Some(DirState::Exists { .. }) => Poll::Ready(Ok(Acquired::Exists)),
                Some(DirState::Submitted(outcome, chan)) => {
                    Poll::Ready(Ok(Acquired::Submitted(outcome.clone(), *chan)))
                }
                Some(DirState::Failed(e)) => Poll::Ready(Err(e.duplicate())),
                Some(DirState::Busy(wakers)) => {
                    wakers.push(cx.waker().clone());
                    Poll::Pending
                }
                None | Some(DirState::Missing) => {
                    states.insert(dir.to_vec(), DirState::Busy(Vec::new()));
                    Poll::Ready(Ok(Acquired::Held(Holding {
                        locks: self,
                        dir: dir.to_vec(),
                        settled: false,
                    })))
                }
            }
        })
        .await
    }

    /// Runs `attempt`, an operation that needs directory `dir` to exist (such as opening a
    /// new file inside it). If the directory's existence is unknown, this task's own
    /// attempt is the probe; on NO_SUCH_FILE the directory is created and the attempt
    /// repeated once. Below a new or missing directory, the MKDIRs go out first without
    /// waiting and the attempt right behind them.
    pub async fn within<T, F, Fut>(&self, dir: &[u8], mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let dir = trim_trailing_slashes(dir);
        if is_root(dir) {
            return attempt().await;
        }
        let acquired = if self.known_missing(dir) {
            self.submit_chain(dir).await?
        } else {
            self.acquire(dir).await?
        };
        match acquired {
            Acquired::Exists => attempt().await,
            // MKDIR sent on another channel: only its reply makes the attempt safe.
            Acquired::Submitted(outcome, chan) if chan != self.channel_slot() => {
                outcome.await.map_err(|mkdir| mkdir.duplicate())?;
                attempt().await
            }
            Acquired::Submitted(outcome, _) => match attempt().await {
                Err(e) if e.is_not_found() => {
                    outcome.await.map_err(|mkdir| mkdir.duplicate())?;
                    attempt().await
                }
                r => r,
            },
            Acquired::Held(mut held) => {
                match attempt().await {
                    Ok(v) => {
                        held.settle(Some(DirState::Exists { new: false }));
                        return Ok(v);
                    }
                    Err(e) if e.is_not_found() => {}
                    // Not about the directory (permission on the file, say): the next task
                    // probes again.
                    Err(e) => return Err(e),
                }
                self.create_held(held).await?;
                attempt().await
            }
        }
    }

    /// Creates `held`'s directory and settles its lock with the outcome.
    async fn create_held(&self, mut held: Holding<'_>) -> Result<()> {
        let dir = held.dir.clone();
        match self.create(&dir).await {
            Ok(()) => {
                held.settle(Some(DirState::Exists { new: true }));
                Ok(())
            }
            Err(e) => {
                held.settle(Some(DirState::Failed(e.duplicate())));
                Err(e)
            }
        }
    }

    /// Makes sure `dir` exists, creating missing parents (`mkdir -p`).
    pub async fn ensure_dir(&self, dir: &[u8]) -> Result<()> {
        let dir = trim_trailing_slashes(dir);
        if is_root(dir) {
            return Ok(());
        }
        let acquired = if self.known_missing(dir) {
            self.submit_chain(dir).await?
        } else {
            self.acquire(dir).await?
        };
        match acquired {
            Acquired::Exists => Ok(()),
            Acquired::Submitted(outcome, _) => outcome.await.map_err(|e| e.duplicate()),
            Acquired::Held(held) => self.create_held(held).await,
        }
    }

    /// Sends the MKDIRs of `dir` and of its ancestors that are known missing, top-down,
    /// without waiting for replies; returns `dir`'s verdict (as `Submitted`).
    async fn submit_chain(&self, dir: &[u8]) -> Result<Acquired<'_>> {
        // The missing chain, from `dir` up to the first ancestor that exists, is on its
        // way, or is being created by someone else.
        let mut chain = vec![dir.to_vec()];
        let mut cur = dir;
        while let Some(parent) = parent_dir(cur) {
            if is_root(parent) || !self.known_missing(parent) {
                break;
            }
            chain.push(parent.to_vec());
            cur = parent;
        }
        let mut last = None;
        for d in chain.iter().rev() {
            match self.acquire(d).await? {
                Acquired::Exists => last = None,
                // Below a MKDIR on another channel only once it is answered.
                Acquired::Submitted(o, chan) if chan != self.channel_slot() => {
                    o.await.map_err(|e| e.duplicate())?;
                    last = None;
                }
                Acquired::Submitted(o, _) => last = Some(o),
                Acquired::Held(mut held) => {
                    let attrs = match self.dir_mode {
                        Some(m) => FileAttributes::with_permissions(m),
                        None => FileAttributes::default(),
                    };
                    let pending = self
                        .sftp
                        .submit(&Request::Mkdir {
                            path: d.clone(),
                            attrs,
                        })
                        .await?;
                    let (locks, path) = (self.clone(), d.clone());
                    let outcome: MkdirOutcome = async move {
                        let r = match pending.await {
                            Ok(reply) => crate::client::expect_ok_reply("mkdir", &path, reply),
                            Err(e) => Err(e),
                        };
                        let r = match r {
                            Ok(()) => Ok(()),
                            // The top of the chain had a missing parent after all: create
                            // upward the slow way (requests queued behind will retry).
                            Err(e) if e.is_not_found() => locks.create(&path).await,
                            Err(e) => locks.exists_anyway(&path, e).await,
                        };
                        if r.is_ok() {
                            log::debug!("created directory {}", String::from_utf8_lossy(&path));
                        }
                        r.map_err(Rc::new)
                    }
                    .boxed_local()
                    .shared();
                    held.settle(Some(DirState::Submitted(
                        outcome.clone(),
                        self.channel_slot(),
                    )));
                    last = Some(outcome);
                }
            }
        }
        let outcome = match last {
            Some(o) => o,
            // `dir` turned out to exist meanwhile: an outcome that is already done.
            None => async { Ok(()) }.boxed_local().shared(),
        };
        Ok(Acquired::Submitted(outcome, self.channel_slot()))
    }

    /// MKDIR `dir`, creating parents on NO_SUCH_FILE. The caller holds `dir`'s lock.
    fn create<'a>(&'a self, dir: &'a [u8]) -> Pin<Box<dyn Future<Output = Result<()>> + 'a>> {
        Box::pin(async move {
            let attrs = match self.dir_mode {
                Some(m) => FileAttributes::with_permissions(m),
                None => FileAttributes::default(),
            };
            match self.sftp.mkdir(dir, &attrs).await {
                Ok(()) => {
                    log::debug!("created directory {}", String::from_utf8_lossy(dir));
                    Ok(())
                }
                Err(e) if e.is_not_found() => {
                    if let Some(parent) = parent_dir(dir) {
                        self.ensure_dir(parent).await?;
                    }
                    match self.sftp.mkdir(dir, &attrs).await {
                        Ok(()) => Ok(()),
                        Err(e) => self.exists_anyway(dir, e).await,
                    }
                }
                Err(e) => self.exists_anyway(dir, e).await,
            }
        })
    }

    /// MKDIR failed: fine if a directory is there (SFTP v3 has no "already exists" code;
    /// OpenSSH answers FAILURE), otherwise the original error.
    async fn exists_anyway(&self, dir: &[u8], err: Error) -> Result<()> {
        if err.is_connection() {
            return Err(err);
        }
        match self.sftp.stat(dir).await {
            Ok(a) if a.is_dir() => Ok(()),
            Ok(_) => Err(Error::Status {
                op: "mkdir",
                path: String::from_utf8_lossy(dir).into_owned(),
                code: StatusCode::Failure,
                message: "exists and is not a directory".into(),
            }),
            Err(_) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parent_dir;

    #[test]
    fn parents() {
        assert_eq!(parent_dir(b"/a/b/c"), Some(&b"/a/b"[..]));
        assert_eq!(parent_dir(b"/a/b//"), Some(&b"/a"[..]));
        assert_eq!(parent_dir(b"/a"), Some(&b"/"[..]));
        assert_eq!(parent_dir(b"a"), Some(&b"."[..]));
        assert_eq!(parent_dir(b"a/b"), Some(&b"a"[..]));
        assert_eq!(parent_dir(b"/"), None);
        assert_eq!(parent_dir(b"."), None);
    }
}
