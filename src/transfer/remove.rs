//! Removing a remote tree (`rm -r`): every directory listed and emptied concurrently,
//! children before their parent.

use std::cell::RefCell;

use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use futures_util::stream;

use super::{Transfer, remote_join};
use crate::error::Error;

/// Removals in flight per directory (the connection pipelines them).
const REMOVES_PER_DIR: usize = 64;
/// Subdirectories of one directory worked on at once (each holds a handle while listed).
const SUBDIRS_AT_ONCE: usize = 8;

/// What [`Transfer::remove_tree`] removed, and what it could not.
#[derive(Debug, Default)]
pub struct Removal {
    /// Files and symlinks removed.
    pub files: u64,
    /// Directories removed.
    pub dirs: u64,
    /// Paths that could not be removed or listed, with why (a directory above one of
    /// them is left in place, and not listed here).
    pub failures: Vec<(Vec<u8>, Error)>,
}

impl Transfer {
    /// Removes the remote directory `dir` and everything below it. Symlinks are removed,
    /// never followed; each directory is removed once its entries are gone. Failures do
    /// not stop the rest: they are collected in the result.
    pub async fn remove_tree(&self, dir: &[u8]) -> Removal {
        self.ready().await;
        let state = RefCell::new(Removal::default());
        self.remove_below(dir.to_vec(), &state).await;
        state.into_inner()
    }

    /// Empties and removes `dir`; `true` when it is gone.
    fn remove_below<'a>(
        &'a self,
        dir: Vec<u8>,
        state: &'a RefCell<Removal>,
    ) -> LocalBoxFuture<'a, bool> {
        Box::pin(async move {
            let listed = {
                let _permit = self.open_files.acquire(1).await;
                self.sftp.read_dir(&dir).await
            };
            let entries = match listed {
                Ok(e) => e,
                Err(e) => {
                    state.borrow_mut().failures.push((dir, e));
                    return false;
                }
            };
            let (subdirs, files): (Vec<_>, Vec<_>) = entries
                .into_iter()
                .map(|e| (remote_join(&dir, &e.filename), e.attrs.is_dir()))
                .partition(|(_, is_dir)| *is_dir);
            let files_gone = stream::iter(files)
                .map(|(path, _)| async move {
                    match self.sftp.remove(&path).await {
                        Ok(()) => state.borrow_mut().files += 1,
                        Err(e) if e.is_not_found() => {}
                        Err(e) => {
                            state.borrow_mut().failures.push((path, e));
                            return false;
                        }
                    }
                    true
                })
                .buffer_unordered(REMOVES_PER_DIR)
                .fold(true, |all, ok| async move { all && ok });
            let dirs_gone = stream::iter(subdirs)
                .map(|(path, _)| self.remove_below(path, state))
                .buffer_unordered(SUBDIRS_AT_ONCE)
                .fold(true, |all, ok| async move { all && ok });
            let (f, d) = futures_util::future::join(files_gone, dirs_gone).await;
            if !(f && d) {
                return false;
            }
            match self.sftp.rmdir(&dir).await {
                Ok(()) => {
                    state.borrow_mut().dirs += 1;
                    true
                }
                Err(e) => {
                    state.borrow_mut().failures.push((dir, e));
                    false
                }
            }
        })
    }
}
