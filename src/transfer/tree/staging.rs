//! Where a new remote tree is built before it appears whole, and what a resumed one keeps.

use std::collections::HashMap;

use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::FuturesUnordered;

use super::super::{Transfer, lossy, remote_basename, remote_join};
use crate::error::Result;
use crate::proto::FileType;

/// The hidden directory beside a missing remote root where a new tree is built before it
/// is renamed onto the root, so that it appears whole (`.NAME.sftpipe-partial`); a killed
/// upload or mirror leaves it, and the next one resumes it. `None` for a root without a
/// name of its own (`/`, `.`, `..`, `~`).
pub fn staging_dir(remote_root: &[u8]) -> Option<Vec<u8>> {
    let mut root = remote_root;
    while root.len() > 1 && root.ends_with(b"/") {
        root = &root[..root.len() - 1];
    }
    let name = remote_basename(root);
    if matches!(name, b"" | b"/" | b"." | b".." | b"~") || name.starts_with(b"~") {
        return None;
    }
    let mut staged = b".".to_vec();
    staged.extend_from_slice(&name[..name.len().min(200)]);
    staged.extend_from_slice(b".sftpipe-partial");
    Some(match root.len() - name.len() {
        0 => staged,
        dir_len => remote_join(&root[..dir_len], &staged),
    })
}

/// What a staged tree may keep of a name, by the local tree's kind there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StagedKind {
    File,
    Dir,
    Symlink,
    /// Could not be read locally this time: whatever is staged there is left alone.
    Unread,
}

impl Transfer {
    /// Renames a staged tree onto its root (shown as `shown`) at the end of an upload, if
    /// the whole tree landed. When something in it failed (a failure recorded at or below
    /// `shown` or `staging`) or the connection is lost, the half-made tree stays in the
    /// staging directory for a rerun to resume, and [`Report::kept_staged`](crate::transfer::Report::kept_staged) says so. Never
    /// the remove + rename fallback: the root did not exist, and if it does now, it is not
    /// ours to remove.
    pub(crate) async fn move_staged_tree(&self, staging: &[u8], root: &[u8], shown: &str) {
        let failed = self.failures_within(&[shown, &lossy(staging)]);
        if failed > 0 || self.sftp.channel().is_dead() {
            let why = if self.sftp.channel().is_dead() {
                "the connection was lost".to_string()
            } else if failed == 1 {
                "1 entry failed".to_string()
            } else {
                format!("{failed} entries failed")
            };
            self.report.borrow_mut().kept_staged.push(format!(
                "{shown} was not created because {why}; what did land is in {}, \
                 and running the same command again resumes it",
                lossy(staging)
            ));
            return;
        }
        let moved = if self.sftp.has_extension(crate::proto::ext::POSIX_RENAME) {
            self.sftp.posix_rename(staging, root).await
        } else {
            self.sftp.rename(staging, root).await
        };
        match moved {
            Ok(()) => {}
            Err(e) => self.record_failure(
                format!(
                    "{shown} (could not move the new tree into place; it stays in {})",
                    lossy(staging)
                ),
                e,
            ),
        }
    }

    /// Removes from the directory `dir` of a staged tree what the upload would not
    /// overwrite: names the local directory lacks (temporary files among them) and
    /// entries of another kind; `keep` has the local kind by name. A `dir` not staged yet
    /// has nothing to remove. Returns the subdirectories kept (they exist).
    pub(super) async fn prune_staged_level(
        &self,
        dir: &[u8],
        keep: &HashMap<Vec<u8>, StagedKind>,
    ) -> Result<Vec<Vec<u8>>> {
        let listing = {
            let _permit = self.open_files.acquire(1).await;
            self.sftp.read_dir(dir).await
        };
        let listing = match listing {
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            other => other?,
        };
        let mut kept = Vec::new();
        let mut removals = FuturesUnordered::new();
        for e in listing {
            let path = remote_join(dir, &e.filename);
            match (keep.get(&e.filename), e.attrs.file_type()) {
                (Some(StagedKind::Dir), FileType::Dir) => kept.push(path),
                (Some(StagedKind::Unread), _)
                | (Some(StagedKind::File), FileType::File)
                | (Some(StagedKind::Symlink), FileType::Symlink) => {}
                (_, FileType::Dir) => {
                    removals.push(
                        Box::pin(async move { self.remove_remote_tree(&path).await })
                            as LocalBoxFuture<'_, Result<()>>,
                    )
                }
                _ => removals.push(Box::pin(async move { self.sftp.remove(&path).await })),
            }
        }
        while let Some(r) = removals.next().await {
            match r {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        Ok(kept)
    }

    /// How many recorded failures name one of `roots` or a path below it.
    fn failures_within(&self, roots: &[&str]) -> usize {
        let within = |path: &str| {
            roots.iter().any(|root| {
                let root = root.trim_end_matches('/');
                path.strip_prefix(root)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        };
        let report = self.report.borrow();
        report.failures.iter().filter(|(p, _)| within(p)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_sits_beside_the_root_under_a_hidden_name() {
        let st = |r: &[u8]| staging_dir(r).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(
            st(b"/srv/www").as_deref(),
            Some("/srv/.www.sftpipe-partial")
        );
        assert_eq!(
            st(b"/srv/www//").as_deref(),
            Some("/srv/.www.sftpipe-partial")
        );
        assert_eq!(st(b"site").as_deref(), Some(".site.sftpipe-partial"));
        assert_eq!(st(b"/top").as_deref(), Some("/.top.sftpipe-partial"));
        assert_eq!(st(b"a/b").as_deref(), Some("a/.b.sftpipe-partial"));
        for no_name in [&b"/"[..], b".", b"..", b"x/..", b"~", b"~alice", b""] {
            assert_eq!(st(no_name), None, "{:?}", String::from_utf8_lossy(no_name));
        }
    }
}
