//! [`Sides`]: one side's operations (the destination's writes, paths and names on both
//! sides), so the phases are written once for both directions.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use super::MirrorOptions;
use super::plan::{EntryKind, TreeEntry};
use crate::error::{Error, Result};
use crate::proto::FileAttributes;
use crate::task::Token;
use crate::transfer::{LinkSlot, Transfer, link_times, remote_join, set_local_link_mtime};

/// Which way a mirror runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Up,
    Down,
}

/// One side's operations, so the phases are written once for both directions.
#[derive(Clone)]
pub(super) struct Sides {
    pub(super) t: Transfer,
    pub(super) dir: Direction,
    pub(super) local_root: Rc<PathBuf>,
    /// Where remote entries are written: the remote root, or its staging directory.
    pub(super) remote_root: Rc<Vec<u8>>,
    /// The remote root as the user named it, for messages.
    pub(super) remote_name: Rc<Vec<u8>>,
    /// Writing into a staging directory (see [`staging_dir`]).
    pub(super) staged: bool,
}

impl Sides {
    /// Both roots' answers, or `None` with the failure of the first that failed recorded
    /// under its root's name.
    pub(super) fn both_roots<L, R>(&self, local: Result<L>, remote: Result<R>) -> Option<(L, R)> {
        match (local, remote) {
            (Ok(l), Ok(r)) => Some((l, r)),
            (Err(e), _) => {
                self.t
                    .record_failure(self.local_root.display().to_string(), e);
                None
            }
            (_, Err(e)) => {
                self.t
                    .record_failure(crate::transfer::lossy(&self.remote_root), e);
                None
            }
        }
    }

    /// The sides of a mirror between `local_root` and `remote_root`, keeping times (see
    /// [`keeping_times`]).
    pub(super) fn new(
        t: &Transfer,
        dir: Direction,
        local_root: &Path,
        remote_root: &[u8],
        opts: &MirrorOptions,
    ) -> Sides {
        Sides {
            t: keeping_times(t, opts),
            dir,
            local_root: Rc::new(local_root.to_path_buf()),
            remote_root: Rc::new(remote_root.to_vec()),
            remote_name: Rc::new(remote_root.to_vec()),
            staged: false,
        }
    }

    pub(super) fn local(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.local_root.to_path_buf()
        } else {
            self.local_root.join(OsStr::from_bytes(rel))
        }
    }

    pub(super) fn remote(&self, rel: &[u8]) -> Vec<u8> {
        if rel.is_empty() {
            self.remote_root.to_vec()
        } else {
            remote_join(&self.remote_root, rel)
        }
    }

    pub(super) fn dest_name(&self, rel: &[u8]) -> String {
        match self.dir {
            Direction::Up if rel.is_empty() => {
                String::from_utf8_lossy(&self.remote_name).into_owned()
            }
            Direction::Up => {
                String::from_utf8_lossy(&remote_join(&self.remote_name, rel)).into_owned()
            }
            Direction::Down => self.local(rel).display().to_string(),
        }
    }

    /// Removes whatever is at the destination path (a tree for a directory).
    pub(super) async fn remove_dest(&self, rel: &[u8], kind: EntryKind) -> Result<()> {
        match self.dir {
            Direction::Up => {
                let p = self.remote(rel);
                if kind == EntryKind::Dir {
                    self.t.remove_remote_tree(&p).await
                } else {
                    self.t.sftp.remove(&p).await
                }
            }
            Direction::Down => {
                let p = self.local(rel);
                let r = if kind == EntryKind::Dir {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                r.map_err(|e| Error::local(format!("cannot remove {}", p.display()), e))
            }
        }
    }

    pub(super) async fn mkdir(&self, rel: &[u8], mode: Option<u32>) -> Result<()> {
        match self.dir {
            Direction::Up => {
                let p = self.remote(rel);
                self.t.dirlocks.ensure_dir(&p).await?;
                if let Some(m) = mode {
                    self.t.sftp.chmod(&p, m).await?;
                }
                Ok(())
            }
            Direction::Down => {
                let p = self.local(rel);
                let r = match fs::create_dir(&p) {
                    // A real directory, not a link to one: the tree is never written
                    // through a link (it could lead outside the target).
                    Err(e)
                        if e.kind() == std::io::ErrorKind::AlreadyExists
                            && fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) =>
                    {
                        Ok(())
                    }
                    r => r,
                };
                r.map_err(|e| Error::local(format!("cannot create directory {}", p.display()), e))?;
                if let Some(m) = mode {
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&p, fs::Permissions::from_mode(m))
                        .map_err(|e| Error::local(format!("cannot chmod {}", p.display()), e))?;
                }
                Ok(())
            }
        }
    }

    /// Copies one file; `committed` is released once nothing more of this copy changes
    /// the destination directory (see [`Transfer::upload_committing`]).
    pub(super) async fn copy(
        &self,
        rel: &[u8],
        src: Option<&TreeEntry>,
        committed: Option<&Token>,
    ) -> Result<u64> {
        let (local, remote) = (self.local(rel), self.remote(rel));
        match self.dir {
            Direction::Up => {
                let staged = self.staged;
                self.t
                    .on_some_channel(|t| {
                        // The token stands for "queued before the directory's times" on
                        // the first channel only; elsewhere it goes when the task ends,
                        // after the reply (ordering rule 2 of crate::pool).
                        let committed = committed.filter(|_| t.on_base());
                        let (local, remote) = (&local, &remote);
                        async move {
                            if staged {
                                t.upload_fresh(local, remote, committed).await
                            } else {
                                t.upload_committing(local, remote, committed).await
                            }
                        }
                    })
                    .await
            }
            Direction::Down => {
                let dest = self.local(rel);
                let temp = local_temp(&dest);
                let attrs = src.map(|e| FileAttributes {
                    size: Some(e.size),
                    permissions: Some(e.mode | crate::proto::mode::S_IFREG),
                    atime_mtime: Some((e.mtime as u32, e.mtime as u32)),
                    ..Default::default()
                });
                let (temp_ref, attrs_ref) = (&temp, attrs.as_ref());
                let r = self
                    .t
                    .on_some_channel(|t| {
                        let remote = &remote;
                        async move { t.download_file(remote, temp_ref, attrs_ref, true).await }
                    })
                    .await;
                match r {
                    Ok(n) => fs::rename(&temp, &dest).map(|_| n).map_err(|e| {
                        Error::local(format!("cannot rename onto {}", dest.display()), e)
                    }),
                    Err(e) => {
                        let _ = fs::remove_file(&temp);
                        Err(e)
                    }
                }
            }
        }
    }

    /// Makes the link `rel` → `target` with its own time `mtime`; `slot` says whether the
    /// listing found a file or link to replace there.
    pub(super) async fn symlink(
        &self,
        rel: &[u8],
        target: &[u8],
        mtime: i64,
        slot: LinkSlot,
    ) -> Result<()> {
        match self.dir {
            Direction::Up => {
                let remote = self.remote(rel);
                self.t
                    .upload_symlink(target, &remote, Some(mtime), slot)
                    .await
            }
            Direction::Down => {
                let dest = self.local(rel);
                let temp = local_temp(&dest);
                let err = |e| Error::local(format!("cannot create symlink {}", dest.display()), e);
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &temp).map_err(err)?;
                let placed = set_local_link_mtime(&temp, mtime)
                    .and_then(|()| fs::rename(&temp, &dest).map_err(err));
                if placed.is_err() {
                    let _ = fs::remove_file(&temp);
                }
                placed
            }
        }
    }

    /// Sets the own modification time of the link `rel`, whose target is right already.
    pub(super) async fn link_time(&self, rel: &[u8], mtime: i64) -> Result<()> {
        match self.dir {
            Direction::Up => {
                let t = crate::transfer::to_u32_time(mtime);
                self.t.sftp.lsetstat(self.remote(rel), &link_times(t)).await
            }
            Direction::Down => set_local_link_mtime(&self.local(rel), mtime),
        }
    }

    pub(super) async fn chmod(&self, rel: &[u8], mode: u32) -> Result<()> {
        match self.dir {
            Direction::Up => self.t.sftp.chmod(self.remote(rel), mode).await,
            Direction::Down => {
                use std::os::unix::fs::PermissionsExt;
                let p = self.local(rel);
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::local(format!("cannot chmod {}", p.display()), e))
            }
        }
    }

    pub(super) async fn delete(&self, rel: &[u8], kind: EntryKind) -> Result<()> {
        match (self.dir, kind) {
            (Direction::Up, EntryKind::Dir) => self.t.sftp.rmdir(self.remote(rel)).await,
            (Direction::Up, _) => match self.t.sftp.remove(self.remote(rel)).await {
                Err(e) if e.is_not_found() => Ok(()),
                r => r,
            },
            (Direction::Down, EntryKind::Dir) => {
                let p = self.local(rel);
                fs::remove_dir(&p)
                    .map_err(|e| Error::local(format!("cannot remove {}", p.display()), e))
            }
            (Direction::Down, _) => {
                let p = self.local(rel);
                match fs::remove_file(&p) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    r => r.map_err(|e| Error::local(format!("cannot remove {}", p.display()), e)),
                }
            }
        }
    }

    pub(super) async fn set_dir_mtime(&self, rel: &[u8], mtime: i64) -> Result<()> {
        let t = mtime.clamp(0, u32::MAX as i64) as u32;
        match self.dir {
            Direction::Up => self.t.sftp.set_times(self.remote(rel), t, t).await,
            Direction::Down => {
                let p = self.local(rel);
                let when = std::time::UNIX_EPOCH + Duration::from_secs(t as u64);
                fs::File::open(&p)
                    .and_then(|f| {
                        f.set_times(fs::FileTimes::new().set_accessed(when).set_modified(when))
                    })
                    .map_err(|e| Error::local(format!("cannot set times of {}", p.display()), e))
            }
        }
    }
}

/// A hidden temporary name beside a local file.
fn local_temp(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.as_bytes()).unwrap_or(b"file");
    let temp = crate::transfer::temp_name(name);
    dest.with_file_name(OsStr::from_bytes(&temp))
}

/// `t` with `preserve_times` on unless [`MirrorOptions::no_times`]; the context is
/// otherwise the same (its report, limits and progress).
fn keeping_times(t: &Transfer, opts: &MirrorOptions) -> Transfer {
    let mut t = t.clone();
    if !opts.no_times && !t.opts.preserve_times {
        t.opts = Rc::new(crate::transfer::TransferOptions {
            preserve_times: true,
            ..(*t.opts).clone()
        });
    }
    t
}
