//! Many files at once: whole trees up and down, one task per file, over one connection.
//! Both directions stream: directories are read [`DIRS_IN_FLIGHT`] at a time and their
//! files start as soon as a directory is read, so memory follows the directories in
//! flight and the transfer slots, not the tree.

use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{Transfer, lossy, remote_join};
use crate::error::{Error, Result};
use crate::proto::FileAttributes;
use crate::task::{Countdown, Semaphore, spawn_detached};

mod download;
mod local;
mod remote_attrs;
mod staging;
mod upload;
mod upload_walk;

pub use local::{LocalEntry, LocalKind, LocalTree, walk_local, walk_local_with};
pub(crate) use local::{list_local_dir, local_entry};
pub use staging::staging_dir;

/// Directories read and acted on at once by a streaming tree walk (`put -r`, `get -r`,
/// the mirror). Each holds its listing while its files queue for the transfer slots.
pub(crate) const DIRS_IN_FLIGHT: usize = 8;

/// What the directory visits and file tasks of one streaming tree walk share: `D` is a
/// directory still to visit, `A` what a directory gets at the end (`-p`).
pub(super) struct TreeWalk<D, A> {
    pub(super) t: Transfer,
    /// Directories visited by none yet.
    pub(super) stack: RefCell<Vec<D>>,
    /// Bounds the file tasks alive at once.
    pub(super) slots: Semaphore,
    /// Every file task holds a token until it ends.
    pub(super) files: Countdown,
    /// With `-p`: each directory and the attributes it gets once its files are in.
    pub(super) dir_attrs: RefCell<Vec<A>>,
    /// Files seen so far (more channels pay off for many).
    pub(super) files_seen: Cell<usize>,
    /// Set when nothing more may start.
    pub(super) stop: Cell<bool>,
}

impl<D, A> TreeWalk<D, A> {
    /// A walk of `t` starting at `root`.
    pub(super) fn new(t: &Transfer, root: D) -> Self {
        TreeWalk {
            t: t.clone(),
            stack: RefCell::new(vec![root]),
            slots: Semaphore::new(t.task_limit()),
            files: Countdown::new(),
            dir_attrs: RefCell::new(Vec::new()),
            files_seen: Cell::new(0),
            stop: Cell::new(false),
        }
    }
}

/// Checks a name the server sent before it becomes part of a local path: no `.`, `..`,
/// empty name, `/` or NUL.
pub fn safe_remote_name(name: &[u8]) -> Result<&OsStr> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Error::Protocol(format!(
            "server sent an unsafe file name {:?}; refusing to use it as a local path",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(OsStr::from_bytes(name))
}

/// `rel` below the remote `root`; the root itself for an empty `rel`.
fn rel_to_remote(root: &[u8], rel: &Path) -> Vec<u8> {
    match rel.as_os_str().as_bytes() {
        b"" => root.to_vec(),
        rel => remote_join(root, rel),
    }
}

/// Runs `f` as its own task once one of `slots` is free; it holds a token of `done` until
/// it ends, so a walk awaits its files without keeping a handle per file.
async fn spawn_in_slot(slots: &Semaphore, done: &Countdown, f: impl Future<Output = ()> + 'static) {
    let slot = slots.acquire(1).await;
    let token = done.token();
    spawn_detached(async move {
        f.await;
        drop((slot, token));
    });
}

impl Transfer {
    /// File tasks a tree transfer keeps alive at once.
    pub(crate) fn task_limit(&self) -> usize {
        // Room for the open-file limit of every channel the session may open.
        let channels = self.pool.as_ref().map_or(1, |p| p.max());
        self.open_files.capacity() / (1 + self.pool.as_ref().map_or(0, |p| p.extras().len()))
            * channels
            * 2
            + 16
    }

    /// Records a finished file in the report and tells the progress sink; for callers
    /// running single-file [`Transfer::upload`]/[`Transfer::download`] tasks themselves.
    pub fn finish_file(&self, remote: &[u8], r: Result<u64>) {
        match r {
            Ok(n) => {
                let mut rep = self.report.borrow_mut();
                rep.files += 1;
                rep.bytes += n;
                drop(rep);
                self.progress.file_done(&lossy(remote), n, None);
            }
            Err(e) => self.record_failure(lossy(remote), e),
        }
    }

    /// Removes a remote directory and everything below it (`rm -r`), children
    /// concurrently. Symlinks are removed, never followed.
    pub fn remove_remote_tree<'a>(
        &'a self,
        dir: &'a [u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>> {
        Box::pin(async move {
            let entries = {
                let _permit = self.open_files.acquire(1).await;
                self.sftp.read_dir(dir).await?
            };
            let mut subdirs = Vec::new();
            let mut removals = futures_util::stream::FuturesUnordered::new();
            for e in entries {
                let path = remote_join(dir, &e.filename);
                if e.attrs.is_dir() {
                    subdirs.push(path);
                } else {
                    removals.push(async move {
                        let r = self.sftp.remove(&path).await;
                        (path, r)
                    });
                }
            }
            use futures_util::StreamExt;
            let mut first_error = None;
            while let Some((_, r)) = removals.next().await {
                if let Err(e) = r
                    && !e.is_not_found()
                {
                    first_error.get_or_insert(e);
                }
            }
            for sub in subdirs {
                if let Err(e) = self.remove_remote_tree(&sub).await {
                    first_error.get_or_insert(e);
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            self.sftp.rmdir(dir).await
        })
    }

    /// Applies attributes (mode, times) to a remote path, e.g. after a mirror upload.
    pub async fn set_remote_attrs(&self, remote: &[u8], attrs: &FileAttributes) -> Result<()> {
        self.sftp.setstat(remote, attrs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc", b"a\0b"] {
            assert!(safe_remote_name(bad).is_err(), "{bad:?}");
        }
        assert!(safe_remote_name(b"ok name \xe2\x9c\x93\n").is_ok());
    }
}
