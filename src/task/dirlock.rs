//! Directory locks: make sure a remote directory exists, creating it (and its parents)
//! at most once however many tasks need it, and without a STAT per file.
//!
//! The first task to need an unknown directory probes it with its own operation (the OPEN
//! of its file, say) while later tasks wait. Success proves the directory exists;
//! NO_SUCH_FILE makes the prober create it — MKDIR, recursing upward on NO_SUCH_FILE like
//! `mkdir -p` — and then retry. A failure is remembered and handed to every waiter, so a
//! directory that cannot be created costs one attempt, not one per file. Below a directory
//! this batch created (or one known to be missing), nothing can exist yet, so directories
//! there are created top-down straight away, without probes. A task that fails
//! or is cancelled while holding a lock releases it (the lock is a guard), so it never
//! stalls its siblings.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::client::Sftp;
use crate::error::{Error, Result};
use crate::proto::{FileAttributes, StatusCode};

enum DirState {
    /// A task is probing or creating it; these wait.
    Busy(Vec<Waker>),
    /// Known to exist; `new` when this batch created it, so its children cannot exist yet
    /// and need no probe.
    Exists { new: bool },
    /// Known not to exist (e.g. the root of an upload whose STAT said so).
    Missing,
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

    /// True when `dir` cannot exist: it is marked missing, or lies below a directory that
    /// is missing or was created by this batch.
    fn known_missing(&self, dir: &[u8]) -> bool {
        let states = self.states.borrow();
        if matches!(states.get(dir), Some(DirState::Missing)) {
            return true;
        }
        let mut cur = dir;
        while let Some(parent) = parent_dir(cur) {
            match states.get(parent) {
                Some(DirState::Missing) | Some(DirState::Exists { new: true }) => return true,
                Some(DirState::Busy(_)) | None => cur = parent,
                Some(_) => return false,
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

    /// Waits while another task holds `dir`; then takes it if unknown. Returns the settled
    /// state (`Ok(true)` exists), or a guard when this task now holds the lock.
    async fn acquire(&self, dir: &[u8]) -> Result<Option<Holding<'_>>> {
        std::future::poll_fn(|cx| {
            let mut states = self.states.borrow_mut();
            match states.get_mut(dir) {
                Some(DirState::Exists { .. }) => Poll::Ready(Ok(None)),
                Some(DirState::Failed(e)) => Poll::Ready(Err(e.duplicate())),
                Some(DirState::Busy(wakers)) => {
                    wakers.push(cx.waker().clone());
                    Poll::Pending
                }
                None | Some(DirState::Missing) => {
                    states.insert(dir.to_vec(), DirState::Busy(Vec::new()));
                    Poll::Ready(Ok(Some(Holding {
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
    /// repeated once.
    pub async fn within<T, F, Fut>(&self, dir: &[u8], mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let dir = trim_trailing_slashes(dir);
        if is_root(dir) {
            return attempt().await;
        }
        let known_missing = self.known_missing(dir);
        let Some(mut held) = self.acquire(dir).await? else {
            return attempt().await;
        };
        if !known_missing {
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
        }
        self.create_held(held).await?;
        attempt().await
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
        match self.acquire(dir).await? {
            Some(held) => self.create_held(held).await,
            None => Ok(()),
        }
    }

    /// MKDIR `dir`, creating parents on NO_SUCH_FILE. The caller holds `dir`'s lock.
    fn create<'a>(&'a self, dir: &'a [u8]) -> Pin<Box<dyn Future<Output = Result<()>> + 'a>> {
        Box::pin(async move {
            let attrs = match self.dir_mode {
                Some(m) => FileAttributes::with_permissions(m),
                None => FileAttributes::default(),
            };
            if let Some(parent) = parent_dir(dir)
                && self.known_missing(parent)
            {
                self.ensure_dir(parent).await?;
            }
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
