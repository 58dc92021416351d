//! Pipelined upload of one file, atomic by default.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::pace::Ask;
use super::{Transfer, lossy, remote_basename, remote_join};
use crate::client::{Handle, write_reply};
use crate::error::{Error, Result};
use crate::proto::{FileAttributes, OpenFlags, Request};
use crate::task::Token;
use crate::task::dirlock::parent_dir;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// WRITEs at least this large take their data straight from the file (see
/// [`crate::client::Sftp::submit_write_file_region`]); smaller ones are copied into the
/// outgoing queue, where many of them share one `writev`.
const ZERO_COPY_MIN: usize = 64 * 1024;

/// A temporary name beside `remote`: hidden, unique per process and call, and within
/// NAME_MAX however long the final name is.
pub fn temp_name(remote: &[u8]) -> Vec<u8> {
    let base = remote_basename(remote);
    let base = &base[..base.len().min(180)];
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut name = b".".to_vec();
    name.extend_from_slice(base);
    name.extend_from_slice(format!(".{:x}{:x}{n:x}.sftpipe-tmp", process_id(), nanos).as_bytes());
    match parent_dir(remote) {
        Some(dir) if remote.contains(&b'/') => remote_join(dir, &name),
        _ => name,
    }
}

/// This process's id, asked once (a temporary name is made per file).
fn process_id() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Seconds since the epoch as SFTP v3's u32 (clamped: times before 1970 or after 2106 do
/// not fit).
pub(crate) fn to_u32_time(secs: i64) -> u32 {
    secs.clamp(0, u32::MAX as i64) as u32
}

impl Transfer {
    /// Uploads one local file to `remote`, creating missing remote parents. Returns the
    /// bytes sent. Unless `inplace`, the data goes to a temporary name that is renamed onto
    /// `remote` only after every WRITE and the CLOSE succeeded, so `remote` is never seen
    /// half-written; on failure the temporary file is removed.
    pub async fn upload(&self, local: &Path, remote: &[u8]) -> Result<u64> {
        self.upload_committing(local, remote, None).await
    }

    /// [`Transfer::upload`], releasing `committed` as soon as the last request that changes
    /// `remote`'s directory is queued (the rename onto the final name; for `inplace`, the
    /// OPEN): a server that handles requests in order, as OpenSSH's does, applies whatever
    /// is sent after that point later, e.g. the directory's modification time.
    pub async fn upload_committing(
        &self,
        local: &Path,
        remote: &[u8],
        committed: Option<&Token>,
    ) -> Result<u64> {
        self.upload_with(local, remote, committed, false).await
    }

    /// [`Transfer::upload_committing`] into a tree nobody sees before it is complete (a
    /// staging directory renamed into place at the end): a file sent in one WRITE is
    /// written straight to `remote`, saving the rename, since a partial one is told by its
    /// size or time (its times are set after its data, the server handling one handle's
    /// requests in order) and is removed if its upload fails; a larger file, which could
    /// fail between two WRITEs, still goes through a temporary name.
    pub async fn upload_fresh(
        &self,
        local: &Path,
        remote: &[u8],
        committed: Option<&Token>,
    ) -> Result<u64> {
        self.upload_with(local, remote, committed, true).await
    }

    async fn upload_with(
        &self,
        local: &Path,
        remote: &[u8],
        committed: Option<&Token>,
        fresh: bool,
    ) -> Result<u64> {
        self.ready().await;
        let ctx = |e| Error::local(format!("cannot read {}", local.display()), e);
        // The permit is taken before the local file is opened, so the limit also bounds
        // local descriptors however many uploads are queued.
        let permit = self.open_files.acquire(1).await;
        let file = Rc::new(fs::File::open(local).map_err(ctx)?);
        let meta = file.metadata().map_err(ctx)?;
        if !meta.is_file() {
            return Err(Error::InvalidInput(format!(
                "{} is not a regular file",
                local.display()
            )));
        }
        let size = meta.len();
        let mode = meta.permissions().mode() & 0o7777;

        let mut start = 0u64;
        // Written in place only for this upload's sake: removed again if it fails.
        // (Never with resume: a failed resumed upload keeps what it had.)
        let direct =
            fresh && !self.opts.inplace && !self.opts.resume && size <= self.upload_chunk() as u64;
        let mut inplace = self.opts.inplace || direct;
        if self.opts.resume {
            match self.sftp.stat(remote).await {
                Ok(a) if a.is_file() => {
                    let remote_size = a.size.unwrap_or(0);
                    if remote_size == size && a.mtime() == Some(to_u32_time(meta.mtime())) {
                        log::info!("{}: already complete", lossy(remote));
                        return Ok(0);
                    }
                    if remote_size <= size {
                        start = remote_size;
                        inplace = true;
                    }
                }
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }

        let target = if inplace {
            remote.to_vec()
        } else {
            temp_name(remote)
        };
        let dir = parent_dir(&target).unwrap_or(b".").to_vec();
        let mut flags = OpenFlags::WRITE | OpenFlags::CREAT;
        if start == 0 {
            flags |= OpenFlags::TRUNC;
        }
        let create_attrs = FileAttributes::with_permissions(mode & 0o777);

        let handle = self
            .dirlocks
            .within(&dir, || self.sftp.open(&target, flags, &create_attrs))
            .await?;
        if inplace && let Some(c) = committed {
            c.release();
        }

        let result = self
            .send_contents(&file, &handle, start, local, &meta, mode)
            .await;
        drop(permit);
        let sent = match result {
            Ok(n) => n,
            Err(e) => {
                if !inplace || direct {
                    self.discard_temp(&target).await;
                }
                return Err(e);
            }
        };
        if !inplace && let Err(e) = self.commit_rename(&target, remote, committed).await {
            self.discard_temp(&target).await;
            return Err(e);
        }
        Ok(sent)
    }

    /// Renames the temporary file onto `remote`, releasing `committed` once the rename is
    /// queued (with posix-rename; the fallbacks need replies first).
    async fn commit_rename(
        &self,
        temp: &[u8],
        remote: &[u8],
        committed: Option<&Token>,
    ) -> Result<()> {
        if !self.sftp.has_extension(crate::proto::ext::POSIX_RENAME) {
            return self.sftp.rename_replace(temp, remote).await;
        }
        let pending = self
            .sftp
            .submit(&Request::Extended(
                crate::proto::ExtendedRequest::PosixRename {
                    old: temp.to_vec(),
                    new: remote.to_vec(),
                },
            ))
            .await?;
        if let Some(c) = committed {
            c.release();
        }
        crate::client::expect_ok_reply("posix-rename", temp, pending.await?)
    }

    async fn discard_temp(&self, temp: &[u8]) {
        if self.sftp.channel().is_dead() {
            return;
        }
        if let Err(e) = self.sftp.remove(temp).await
            && !e.is_not_found()
        {
            log::warn!("could not remove temporary file {}: {e}", lossy(temp));
        }
    }

    /// Streams the file with up to `requests` WRITEs in flight, then (pipelined behind
    /// them) FSETSTAT, FSYNC and CLOSE. Every reply is checked: nothing counts as done
    /// unless all WRITEs and the CLOSE succeeded.
    async fn send_contents(
        &self,
        file: &Rc<fs::File>,
        handle: &Handle,
        start: u64,
        local: &Path,
        meta: &fs::Metadata,
        mode: u32,
    ) -> Result<u64> {
        let chunk = self.upload_chunk();
        let max_requests = self.opts.requests.max(1);
        let mut inflight = FuturesUnordered::new();
        let mut offset = start;
        let mut eof = false;
        // WRITEs are sized by the file's length, so a small file takes only its own size
        // of the byte budget (a full chunk each would cap concurrency at budget/chunk
        // files). Past that length a small probe finds a file that grew; then reading
        // goes on in full chunks until a short read.
        let mut known_size = Some(meta.len());
        // A file sent in one WRITE may take a smaller share of the budget's floor than a
        // stream of chunks (see `pace`).
        let one_write = meta.len().saturating_sub(start) <= chunk as u64;
        let mut acked = 0u64;
        let collect = |acked: &mut u64, (n, r): (usize, Result<crate::proto::Response>)| {
            // A WRITE whose data came from the file fails here if reading it did.
            write_reply(handle.path(), r.map_err(|e| relabel_local(e, local))?)?;
            *acked += n as u64;
            self.progress.transferred(n as u64);
            Ok(())
        };
        loop {
            while !eof && inflight.len() < max_requests {
                let want = match known_size {
                    Some(size) if offset < size => chunk.min((size - offset) as usize),
                    Some(_) => chunk.min(super::GROWTH_PROBE),
                    None => chunk,
                };
                let permit = self
                    .budget_while_draining(
                        want,
                        if one_write {
                            Ask::SmallFile(want)
                        } else {
                            Ask::Stream
                        },
                        &mut inflight,
                        |item| collect(&mut acked, item),
                    )
                    .await?;
                let within_size = known_size.is_some_and(|size| offset < size);
                let (pending, n) = if within_size && want >= ZERO_COPY_MIN {
                    let len = u32::try_from(want).map_err(|_| {
                        Error::InvalidInput(format!("write request of {want} bytes"))
                    })?;
                    let pending = self
                        .sftp
                        .submit_write_file_region(handle, offset, file, offset, len)
                        .await?;
                    (pending, want)
                } else {
                    let Some(sent) = self
                        .sftp
                        .submit_write_from_file(handle, offset, file, offset, want)
                        .await
                        .map_err(|e| relabel_local(e, local))?
                    else {
                        eof = true;
                        break;
                    };
                    sent
                };
                if known_size.is_some_and(|size| offset >= size) {
                    known_size = None;
                }
                eof = n < want;
                inflight.push(async move {
                    let r = pending.await;
                    drop(permit);
                    (n, r)
                });
                offset += n as u64;
            }
            if eof {
                break;
            }
            match inflight.next().await {
                Some(item) => collect(&mut acked, item)?,
                None => break,
            }
        }

        // The tail: attribute, sync and close requests go out right behind the last WRITE
        // (the server handles one handle's requests in order), saving round trips.
        let mut attrs = FileAttributes::default();
        if self.opts.preserve_times {
            attrs.atime_mtime = Some((to_u32_time(meta.atime()), to_u32_time(meta.mtime())));
        }
        if self.opts.preserve_mode {
            attrs.permissions = Some(mode);
        }
        let setstat = if attrs.flags().is_empty() {
            None
        } else {
            Some(
                self.sftp
                    .submit(&Request::Fsetstat {
                        handle: handle.raw().to_vec(),
                        attrs,
                    })
                    .await?,
            )
        };
        let fsync = if self.opts.fsync && self.sftp.has_extension(crate::proto::ext::FSYNC) {
            Some(
                self.sftp
                    .submit(&Request::Extended(crate::proto::ExtendedRequest::Fsync {
                        handle: handle.raw().to_vec(),
                    }))
                    .await?,
            )
        } else {
            if self.opts.fsync {
                log::warn!(
                    "server lacks fsync@openssh.com; {} not synced",
                    local.display()
                );
            }
            None
        };
        let close = self.sftp.submit_close(handle).await?;
        while let Some(item) = inflight.next().await {
            collect(&mut acked, item)?;
        }
        if let Some(p) = setstat {
            crate::client::expect_ok_reply("fsetstat", handle.path(), p.await?)?;
        }
        if let Some(p) = fsync {
            crate::client::expect_ok_reply("fsync", handle.path(), p.await?)?;
        }
        crate::client::expect_ok_reply("close", handle.path(), close.await?)?;
        Ok(acked)
    }
}

/// Names the local file in a read error from the upload path.
fn relabel_local(e: Error, local: &Path) -> Error {
    match e {
        Error::Local { source, .. } => {
            Error::local(format!("cannot read {}", local.display()), source)
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_stay_beside_the_target_and_short() {
        let t = temp_name(b"/srv/repo/dists/InRelease");
        assert!(t.starts_with(b"/srv/repo/dists/.InRelease."));
        let long = vec![b'x'; 255];
        let t = temp_name(&long);
        assert!(t.len() < 255);
        assert_ne!(temp_name(b"a"), temp_name(b"a"));
        assert!(!temp_name(b"a").contains(&b'/'));
    }
}
