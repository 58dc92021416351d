//! Symlinks, both ways. A remote link is made by SYMLINK under its own name, never under a
//! temporary name renamed into place: SYMLINK is atomic by itself, and renaming a link is
//! where servers differ (ProFTPD's RENAME follows the link and moves the file it points to
//! onto the link's name).

use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::upload::to_u32_time;
use super::{Transfer, lossy};
use crate::client::expect_ok_reply;
use crate::error::{Error, Result};
use crate::proto::{FileAttributes, Request, StatusCode, ext};
use crate::task::dirlock::parent_dir;

/// What the name of a remote symlink to be made holds, as far as the caller knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkSlot {
    /// Nothing (a new tree; a mirror whose listing has nothing there).
    Free,
    /// A file or another symlink, to be replaced (a mirror's listing says so).
    Taken,
}

/// Whether a failed SYMLINK may have found its name taken (v3 servers say FAILURE for
/// EEXIST; later versions' FILE_ALREADY_EXISTS is 11).
fn may_be_taken(e: &Error) -> bool {
    matches!(
        e.status(),
        Some(StatusCode::Failure | StatusCode::Other(11))
    )
}

impl Transfer {
    /// Makes the remote symlink `remote` → `target`. With `mtime`, and when the server
    /// offers `lsetstat@openssh.com`, the link's own times are set too, in the same round
    /// trip. The result is checked (see [`Sftp::symlink`](crate::Sftp::symlink)).
    ///
    /// A [`LinkSlot::Taken`] name is removed first (if it is there), the REMOVE sent right
    /// before the SYMLINK: one round trip, and readers see no entry for that moment. A `Free` one
    /// that turns out taken (`put -r` onto an existing tree) is looked at: the same link
    /// stays (its time set), a file or another link is replaced so, a directory refused.
    pub async fn upload_symlink(
        &self,
        target: &[u8],
        remote: &[u8],
        mtime: Option<i64>,
        slot: LinkSlot,
    ) -> Result<()> {
        let mtime = mtime.map(to_u32_time);
        let dir = parent_dir(remote).unwrap_or(b".").to_vec();
        if slot == LinkSlot::Taken {
            return self
                .dirlocks
                .within(&dir, || self.replace_symlink(target, remote, mtime))
                .await;
        }
        let made = self
            .dirlocks
            .within(&dir, || self.sftp.symlink_with_mtime(target, remote, mtime))
            .await;
        let refused = match made {
            Err(e) if may_be_taken(&e) => e,
            other => return other,
        };
        // READLINK fails unless it is a link; LSTAT, for a non-link, tells a directory (on
        // a link ProFTPD's follows it). One round trip.
        let (link, attrs) =
            futures_util::join!(self.sftp.readlink(remote), self.sftp.lstat(remote));
        match (link, attrs) {
            (Ok(l), _) if l == target => match mtime {
                Some(t) if self.sftp.has_extension(ext::LSETSTAT) => {
                    self.sftp.lsetstat(remote, &link_times(t)).await
                }
                _ => Ok(()),
            },
            (Ok(_), _) => self.replace_symlink(target, remote, mtime).await,
            (Err(_), Ok(a)) if a.is_dir() => Err(Error::Status {
                op: "symlink",
                path: lossy(remote),
                code: StatusCode::Failure,
                message: "a directory is in the way".into(),
            }),
            (Err(_), Ok(_)) => self.replace_symlink(target, remote, mtime).await,
            // Nothing there: the SYMLINK failed for its own reasons.
            (Err(_), Err(_)) => Err(refused),
        }
    }

    /// Removes the file or link `remote` and makes the link in its place; the REMOVE goes
    /// right before the SYMLINK, in the same round trip.
    async fn replace_symlink(
        &self,
        target: &[u8],
        remote: &[u8],
        mtime: Option<u32>,
    ) -> Result<()> {
        let removed = self
            .sftp
            .submit(&Request::Remove {
                path: remote.to_vec(),
            })
            .await?;
        let made = self.sftp.symlink_with_mtime(target, remote, mtime).await;
        match removed
            .await
            .and_then(|r| expect_ok_reply("remove", remote, r))
        {
            Err(e) if !e.is_not_found() => Err(e),
            _ => made,
        }
    }

    /// Recreates the remote symlink `remote` as the local `local` (never followed), with
    /// `mtime` as its own modification time when given. Whatever is at `local` goes first,
    /// except a directory.
    pub(super) async fn download_symlink(
        &self,
        remote: &[u8],
        local: &Path,
        mtime: Option<i64>,
    ) -> Result<()> {
        let target = self.sftp.readlink(remote).await?;
        if target.contains(&0) {
            return Err(Error::Protocol(format!(
                "symlink {} has a NUL in its target",
                lossy(remote)
            )));
        }
        let target = PathBuf::from(OsString::from_vec(target));
        let lctx = |e| Error::local(format!("cannot create symlink {}", local.display()), e);
        match std::fs::symlink_metadata(local) {
            Ok(m) if m.is_dir() => {
                return Err(Error::local(
                    format!("cannot replace directory {} by a symlink", local.display()),
                    std::io::ErrorKind::AlreadyExists.into(),
                ));
            }
            Ok(_) => std::fs::remove_file(local).map_err(lctx)?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target, local).map_err(lctx)?;
        match mtime {
            Some(t) => set_local_link_mtime(local, t),
            None => Ok(()),
        }
    }
}

/// Attributes that set a link's access and modification times to `t`, and nothing else
/// (Linux cannot change a link's mode: OpenSSH's lsetstat would fail).
pub(crate) fn link_times(t: u32) -> FileAttributes {
    FileAttributes {
        atime_mtime: Some((t, t)),
        ..Default::default()
    }
}

/// Sets the access and modification times of the local symlink `path` itself to `mtime`
/// (`utimensat` with `AT_SYMLINK_NOFOLLOW`: std has no call that does not follow links).
pub(crate) fn set_local_link_mtime(path: &Path, mtime: i64) -> Result<()> {
    let err = |e| Error::local(format!("cannot set the time of {}", path.display()), e);
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| err(std::io::ErrorKind::InvalidInput.into()))?;
    let when = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [when, when];
    // SAFETY: `c_path` is a NUL-terminated string and `times` two timespecs, both alive
    // for the call; the kernel only reads them.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(err(std::io::Error::last_os_error()))
    }
}
