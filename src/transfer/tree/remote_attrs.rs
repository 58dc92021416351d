//! `-p` for an uploaded tree: its directories' modes and times, set last.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::proto::FileAttributes;
use crate::transfer::{Transfer, lossy};

impl Transfer {
    /// The attributes `-p` gives a remote directory from its local mode and time; `None`
    /// without `-p`.
    pub(super) fn dir_attrs(&self, mtime: i64, mode: u32) -> Option<FileAttributes> {
        let (times, mode_bits) = (self.opts.preserve_times, self.opts.preserve_mode);
        (times || mode_bits).then(|| FileAttributes {
            permissions: mode_bits.then_some(mode),
            atime_mtime: times.then(|| {
                let t = crate::transfer::to_u32_time(mtime);
                (t, t)
            }),
            ..Default::default()
        })
    }

    /// [`Transfer::dir_attrs`] of the local directory `dir` itself.
    pub(super) fn local_dir_attrs(&self, dir: &Path) -> Option<FileAttributes> {
        if !self.opts.preserve_times && !self.opts.preserve_mode {
            return None;
        }
        match std::fs::metadata(dir) {
            Ok(m) => self.dir_attrs(m.mtime(), m.mode() & 0o7777),
            Err(e) => {
                log::warn!("cannot stat {}: {e}", dir.display());
                None
            }
        }
    }

    /// Sets directory attributes once everything below them has landed: an entry created
    /// later would move the time, and a read-only mode would refuse the entries. Deepest
    /// first, so that a parent's mode cannot lock out its children; all are sent at once
    /// (the server applies a connection's requests in order). A directory that does not
    /// exist failed already, with its own error.
    pub(super) async fn set_remote_dir_attrs(&self, dirs: Vec<(Vec<u8>, FileAttributes)>) {
        let mut pending = Vec::with_capacity(dirs.len());
        for (path, attrs) in dirs {
            let req = crate::proto::Request::Setstat {
                path: path.clone(),
                attrs,
            };
            match self.sftp.submit(&req).await {
                Ok(reply) => pending.push((path, reply)),
                Err(e) => {
                    self.record_failure(lossy(&path), e);
                    return;
                }
            }
        }
        for (path, reply) in pending {
            let r = reply
                .await
                .and_then(|r| crate::client::expect_ok_reply("setstat", &path, r));
            match r {
                Err(e) if e.is_not_found() => {}
                Err(e) => self.record_failure(lossy(&path), e),
                Ok(()) => {}
            }
        }
    }
}
