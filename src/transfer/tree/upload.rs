//! `put -r`: where a tree goes (into an existing root, or staged beside a missing one and
//! renamed into place at the end), before [`super::upload_walk`] streams it there.

use std::ffi::OsString;
use std::path::Path;

use super::upload_walk::TreeDest;
use super::{list_local_dir, staging_dir};
use crate::error::Result;
use crate::proto::FileAttributes;
use crate::transfer::{Report, Transfer, lossy};

impl Transfer {
    /// Uploads the contents of `local_root` into `remote_root`: files, empty directories
    /// and symlinks, all concurrently, streaming: files start uploading as soon as their
    /// directory is read. Failures are collected per path in the returned report; the
    /// run goes on. A `remote_root` that does not exist is built as a new tree (see
    /// [`Transfer::upload_new_tree`]); one that does gets the files added or replaced.
    pub async fn upload_tree(&self, local_root: &Path, remote_root: &[u8]) -> Report {
        let Some(names) = self.list_tree_root(local_root) else {
            return self.take_report();
        };
        self.ready().await;
        // Where a missing root would be staged is asked alongside: one round trip.
        let staging = self.staging_for(remote_root, &names);
        let (root, staged) = match &staging {
            Some(dir) => {
                let (root, staged) =
                    futures_util::future::join(self.sftp.stat(remote_root), self.sftp.stat(dir))
                        .await;
                (root, Some(staged))
            }
            None => (self.sftp.stat(remote_root).await, None),
        };
        let dest = TreeDest::in_place(remote_root);
        match (root, staging.zip(staged)) {
            (Err(e), Some((dir, found))) if e.is_not_found() => {
                self.upload_staged(local_root, remote_root, names, dir, found)
                    .await
            }
            (Err(e), None) if e.is_not_found() => {
                self.dirlocks.mark_missing(remote_root);
                self.upload_streamed(local_root, dest, names).await;
            }
            // Whatever else is wrong with it, the uploads into it say.
            _ => {
                self.upload_streamed(local_root, dest, names).await;
            }
        }
        self.take_report()
    }

    /// Uploads the tree `local_root` into `remote_root`, in place; results accumulate in
    /// this context's report, where each unreadable path of the tree is a failure.
    pub async fn upload_into(&self, local_root: &Path, remote_root: &[u8]) {
        if let Some(names) = self.list_tree_root(local_root) {
            let dest = TreeDest::in_place(remote_root);
            self.upload_streamed(local_root, dest, names).await;
        }
    }

    /// Uploads the tree `local_root` as the tree `remote_root`, which a STAT found
    /// missing. The tree is built in a hidden staging directory beside it
    /// ([`staging_dir`]) and renamed into place at the end, so nobody sees it half made;
    /// inside, a small file is written under its final name, saving the rename per file
    /// that an upload into a visible directory needs. A staging directory left by a
    /// killed run is reused, after removing what the local tree does not have there
    /// (temporary files, entries of another kind), one directory at a time as the walk
    /// reaches it. Failed files are reported and the rest still lands in the staging
    /// directory, which is then kept, not renamed (see [`Report::kept_staged`]): a rerun
    /// resumes it. With `inplace`, an empty local root, or a root without a name of its
    /// own, the tree is written in place.
    pub async fn upload_new_tree(&self, local_root: &Path, remote_root: &[u8]) {
        let Some(names) = self.list_tree_root(local_root) else {
            return;
        };
        let Some(staging) = self.staging_for(remote_root, &names) else {
            self.dirlocks.mark_missing(remote_root);
            let dest = TreeDest::in_place(remote_root);
            self.upload_streamed(local_root, dest, names).await;
            return;
        };
        self.ready().await;
        let found = self.sftp.stat(&staging).await;
        self.upload_staged(local_root, remote_root, names, staging, found)
            .await
    }

    /// The names in the tree's root, sorted; `None` (recorded) when it cannot be read.
    fn list_tree_root(&self, local_root: &Path) -> Option<Vec<OsString>> {
        match list_local_dir(local_root) {
            Ok(names) => Some(names),
            Err(e) => {
                self.record_failure(local_root.display().to_string(), e);
                None
            }
        }
    }

    /// Where a new tree `remote_root` is staged: `None` with `inplace`, for an empty root
    /// (one MKDIR is atomic already; decided from the root's listing) and for a root
    /// without a name of its own.
    fn staging_for(&self, remote_root: &[u8], root_names: &[OsString]) -> Option<Vec<u8>> {
        staging_dir(remote_root).filter(|_| !self.opts.inplace && !root_names.is_empty())
    }

    /// [`Transfer::upload_new_tree`], given what a STAT of the staging directory found.
    async fn upload_staged(
        &self,
        local_root: &Path,
        remote_root: &[u8],
        names: Vec<OsString>,
        staging: Vec<u8>,
        found: Result<FileAttributes>,
    ) {
        let resume = match found {
            Err(e) if e.is_not_found() => {
                self.dirlocks.mark_missing(&staging);
                false
            }
            Ok(a) if a.is_dir() => {
                log::info!("resuming the staged tree {}", lossy(&staging));
                self.dirlocks.mark_exists(&staging);
                true
            }
            other => {
                // Not ours to touch: write in place, as without staging.
                if let Ok(a) = other {
                    log::warn!(
                        "{} is in the way ({:?}); uploading {} in place",
                        lossy(&staging),
                        a.file_type(),
                        lossy(remote_root)
                    );
                }
                self.dirlocks.mark_missing(remote_root);
                let dest = TreeDest::in_place(remote_root);
                self.upload_streamed(local_root, dest, names).await;
                return;
            }
        };
        let dest = TreeDest {
            write_root: staging.clone(),
            shown_root: remote_root.to_vec(),
            staged: true,
            resume,
        };
        if self.upload_streamed(local_root, dest, names).await {
            self.move_staged_tree(&staging, remote_root, &lossy(remote_root))
                .await;
        }
    }
}
