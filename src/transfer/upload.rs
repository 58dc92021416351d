//! Pipelined upload of one file, atomic by default.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::pace::Ask;
use super::resume::{
    Judgement, TEMP_BASE_MAX, beside, is_temp_of, judge, mtime_ns, resumable_temp_name,
    temp_name_with_id,
};
use super::{Transfer, lossy, remote_basename};
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
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    temp_name_with_id(remote, &format!("{:x}{:x}{n:x}", process_id(), nanos))
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

/// A refusal concerning the temporary file of an upload to `remote`, told against
/// `remote`, the name the user gave: the temporary name is only logged (`-v`).
fn name_the_target(e: Error, remote: &[u8]) -> Error {
    let Error::Status {
        op,
        path,
        code,
        message,
    } = e
    else {
        return e;
    };
    let temp = path.as_bytes();
    let temp_base = remote_basename(temp);
    if is_temp_of(remote_basename(remote), temp_base) && beside(remote, temp_base) == temp {
        log::info!(
            "{}: {op} of the temporary file {path} failed",
            lossy(remote)
        );
        return Error::Status {
            op,
            path: lossy(remote),
            code,
            message,
        };
    }
    Error::Status {
        op,
        path,
        code,
        message,
    }
}

impl Transfer {
    /// Uploads one local file to `remote`, creating missing remote parents. Returns the
    /// bytes sent. Unless `inplace`, the data goes to a temporary name that is renamed onto
    /// `remote` only after every WRITE and the CLOSE succeeded, so `remote` is never seen
    /// half-written; on failure the temporary file is removed. A temporary file an
    /// interrupted upload of the same file left is continued (see `resume`).
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
        self.upload_steps(local, remote, committed, fresh)
            .await
            .map_err(|e| name_the_target(e, remote))
    }

    async fn upload_steps(
        &self,
        local: &Path,
        remote: &[u8],
        committed: Option<&Token>,
        fresh: bool,
    ) -> Result<u64> {
        self.ready().await;
        // Asked before taking a permit: no handle is held meanwhile.
        let around = match self.opts.resume {
            true => Some(self.look_around(remote).await?),
            false => None,
        };
        let ctx = |e| Error::local(format!("cannot read {}", local.display()), e);
        // The permit is taken before the local file is opened, so the limit also bounds
        // local descriptors however many uploads are queued.
        let permit = self.file_permit().await;
        let file = Rc::new(fs::File::open(local).map_err(ctx)?);
        let meta = file.metadata().map_err(ctx)?;
        if !meta.is_file() {
            return Err(Error::InvalidInput(format!(
                "{} is not a regular file",
                local.display()
            )));
        }
        let mode = meta.permissions().mode() & 0o7777;

        // Written in place only for this upload's sake: removed again if it fails.
        // (Never with resume: a failed resumed upload keeps what it had.)
        let direct = fresh
            && !self.opts.inplace
            && !self.opts.resume
            && meta.len() <= self.upload_chunk() as u64;
        let source = Source {
            path: local,
            file: &file,
            meta: &meta,
        };
        let Some(mut dest) = self
            .choose_dest(remote, &source, direct, around.as_ref())
            .await?
        else {
            drop(permit);
            log::info!("{}: already complete", lossy(remote));
            self.remove_leftovers(remote, around, None).await;
            return Ok(0);
        };
        // Here, once the destination's STAT may have measured the round trip: a striped
        // file's other channels then open while its OPEN is on the way.
        self.foresee(meta.len().saturating_sub(dest.start));
        let handle = match dest.handle.take() {
            Some(h) => h,
            None => self.open_dest(remote, &mut dest, mode).await?,
        };
        if !dest.temp
            && let Some(c) = committed
        {
            c.release();
        }

        let result = self
            .send_contents(&file, &handle, dest.start, local, &meta, mode)
            .await;
        drop(permit);
        let sent = match result {
            Ok(n) => n,
            Err(e) => {
                if dest.temp || direct {
                    self.discard_temp(&dest.path).await;
                }
                return Err(e);
            }
        };
        if dest.temp
            && let Err(e) = self.commit_rename(&dest.path, remote, committed).await
        {
            self.discard_temp(&dest.path).await;
            return Err(e);
        }
        self.remove_leftovers(remote, around, Some(&dest.path))
            .await;
        Ok(sent)
    }

    /// Where to write: a partial copy to continue (checked), the target itself, or a
    /// new temporary file; `None` when the target is complete already (`resume`).
    async fn choose_dest(
        &self,
        remote: &[u8],
        source: &Source<'_>,
        direct: bool,
        around: Option<&Around>,
    ) -> Result<Option<Dest>> {
        let chunk = self.upload_chunk();
        let in_place = |start, handle| Dest {
            path: remote.to_vec(),
            temp: false,
            start,
            handle,
            exclusive: false,
        };
        let target = around
            .and_then(|a| a.target.as_ref())
            .filter(|a| a.is_file());
        if target.is_some_and(|a| source.judge(a) == Judgement::Complete) {
            return Ok(None);
        }
        if direct {
            return Ok(Some(in_place(0, None)));
        }
        let mut own = None;
        if !self.opts.inplace {
            // Files too small to keep part of are not resumed: their temporary names are
            // unique, and no STAT looks for them.
            own = (source.meta.len() > self.rewind(chunk, source.meta.len()))
                .then(|| resumable_temp_name(remote, source.meta.len(), mtime_ns(source.meta)));
            let left = match (around, &own) {
                (Some(a), _) => a.temps.clone(),
                (None, Some(own)) => self.stat_own_temp(own).await?,
                (None, None) => Vec::new(),
            };
            if let Some((path, attrs)) = self.best_partial(&left, own.as_deref(), source, chunk)
                && let Some((handle, start)) = self
                    .reopen_partial(path, attrs, source.file, source.path, source.meta, chunk)
                    .await?
            {
                return Ok(Some(Dest {
                    path: path.clone(),
                    temp: true,
                    start,
                    handle: Some(handle),
                    exclusive: false,
                }));
            }
            // Found but not resumable: not ours to overwrite (it may be another run's).
            if left.iter().any(|(p, _)| Some(p) == own.as_ref()) {
                own = None;
            }
        }
        if let Some(attrs) = target
            && let Some((handle, start)) =
                self.continue_target(remote, attrs, source, chunk).await?
        {
            return Ok(Some(in_place(start, Some(handle))));
        }
        Ok(Some(match (self.opts.inplace, own) {
            (true, _) => in_place(0, None),
            (false, Some(own)) => Dest {
                path: own,
                temp: true,
                start: 0,
                handle: None,
                exclusive: true,
            },
            (false, None) => Dest {
                path: temp_name(remote),
                temp: true,
                start: 0,
                handle: None,
                exclusive: false,
            },
        }))
    }

    /// The temporary file an interrupted upload of this version of the file left, if
    /// any (not looked for in a directory this batch created).
    async fn stat_own_temp(&self, own: &[u8]) -> Result<Vec<(Vec<u8>, FileAttributes)>> {
        if self.dirlocks.is_new(parent_dir(own).unwrap_or(b".")) {
            return Ok(Vec::new());
        }
        match self.sftp.stat(own).await {
            Ok(a) => Ok(vec![(own.to_vec(), a)]),
            Err(e) if e.is_connection() => Err(e),
            Err(_) => Ok(Vec::new()),
        }
    }

    /// Of the temporary files `left`, the one worth checking (a READ each): this
    /// version's own, else the largest that can be a prefix.
    fn best_partial<'a>(
        &self,
        left: &'a [(Vec<u8>, FileAttributes)],
        own: Option<&[u8]>,
        source: &Source<'_>,
        chunk: usize,
    ) -> Option<&'a (Vec<u8>, FileAttributes)> {
        let usable = left.iter().filter(|(_, a)| {
            a.is_file()
                && matches!(source.judge(a), Judgement::Prefix | Judgement::Complete)
                && self
                    .resume_point(a.size.unwrap_or(0), chunk, source.meta.len())
                    .is_some()
        });
        let mut best: Option<&(Vec<u8>, FileAttributes)> = None;
        for c in usable {
            if Some(c.0.as_slice()) == own {
                return Some(c);
            }
            if best.is_none_or(|b| b.1.size < c.1.size) {
                best = Some(c);
            }
        }
        best
    }

    /// `resume` on the target itself: continues it in place when it is a prefix of the
    /// source; `None` to upload the file whole; refuses a copy that may be an older
    /// version (its last bytes agree, but it predates the source's last change).
    async fn continue_target(
        &self,
        remote: &[u8],
        attrs: &FileAttributes,
        source: &Source<'_>,
        chunk: usize,
    ) -> Result<Option<(Handle, u64)>> {
        let size = attrs.size.unwrap_or(u64::MAX);
        let verdict = source.judge(attrs);
        let start = match (verdict, self.resume_point(size, chunk, source.meta.len())) {
            (Judgement::Prefix | Judgement::Older, Some(start)) => start,
            _ => {
                log::info!("{}: cannot be continued; uploading it whole", lossy(remote));
                return Ok(None);
            }
        };
        let flags = OpenFlags::READ | OpenFlags::WRITE;
        let handle = match self.sftp.open(remote, flags, &Default::default()).await {
            Ok(h) => h,
            Err(e) if e.is_connection() => return Err(e),
            Err(e) => {
                log::info!("cannot reopen {}: {e}; uploading it whole", lossy(remote));
                return Ok(None);
            }
        };
        if !self
            .agrees_below(&handle, source.file, source.path, start)
            .await?
        {
            log::info!(
                "{} is not a copy of the start of {}; uploading it whole",
                lossy(remote),
                source.path.display()
            );
            return Ok(None);
        }
        if verdict == Judgement::Older {
            return Err(Error::InvalidInput(format!(
                "refusing to resume {}: it was last modified before {} was, so it may be an \
                 older version that differs before its end; upload it whole with plain put \
                 (without -a)",
                lossy(remote),
                source.path.display()
            )));
        }
        log::info!(
            "resuming {} in place: keeping {start} of its {size} bytes",
            lossy(remote)
        );
        Ok(Some((handle, start)))
    }

    /// Opens a new destination file. A temporary name shared by reruns is created
    /// exclusively: if another upload took it meanwhile, a unique name is used instead.
    async fn open_dest(&self, remote: &[u8], dest: &mut Dest, mode: u32) -> Result<Handle> {
        let dir = parent_dir(&dest.path).unwrap_or(b".").to_vec();
        let create_attrs = FileAttributes::with_permissions(mode & 0o777);
        let open = |path: Vec<u8>, flags| {
            let create_attrs = &create_attrs;
            self.dirlocks.within(&dir, move || {
                self.sftp.open(path.clone(), flags, create_attrs)
            })
        };
        let write = OpenFlags::WRITE | OpenFlags::CREAT;
        if dest.exclusive {
            match open(dest.path.clone(), write | OpenFlags::EXCL).await {
                Err(e) if !e.is_connection() && !e.is_not_found() => {
                    log::debug!("{}: {e}; using another name", lossy(&dest.path));
                    dest.path = temp_name(remote);
                }
                r => return r,
            }
        }
        open(dest.path.clone(), write | OpenFlags::TRUNC).await
    }

    /// What `resume` needs to know about `remote`'s directory: the file at `remote`, and
    /// the temporary files of uploads to it (a listing: one round trip per directory and
    /// batch, worth it for the leftovers it finds).
    async fn look_around(&self, remote: &[u8]) -> Result<Around> {
        let dir = parent_dir(remote).unwrap_or(b".");
        let base = remote_basename(remote);
        let (target, listing) = futures_util::join!(self.sftp.stat(remote), self.listing(dir));
        let target = match target {
            Ok(a) => Some(a),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let temps = listing
            .iter()
            .flat_map(|l| l.iter())
            .filter(|e| e.attrs.is_file() && is_temp_of(base, &e.filename))
            .map(|e| (beside(remote, &e.filename), e.attrs.clone()))
            .collect();
        Ok(Around { target, temps })
    }

    /// After a successful upload with `resume`, removes the temporary files earlier
    /// uploads to `remote` left (but `used`, renamed away). Not for a name cut short in
    /// temporary names: those may belong to another target.
    async fn remove_leftovers(&self, remote: &[u8], around: Option<Around>, used: Option<&[u8]>) {
        let Some(around) = around else { return };
        if remote_basename(remote).len() > TEMP_BASE_MAX {
            return;
        }
        let removals = around
            .temps
            .iter()
            .filter(|(p, _)| Some(p.as_slice()) != used)
            .map(|(p, _)| async move { (p, self.sftp.remove(p).await) });
        for (path, r) in futures_util::future::join_all(removals).await {
            match r {
                Ok(()) => log::info!("removed {}, left by an earlier upload", lossy(path)),
                Err(e) if e.is_not_found() => {}
                Err(e) => log::warn!("could not remove {}: {e}", lossy(path)),
            }
        }
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
        let mut acked = 0u64;
        // A big file goes over several channels; what follows then only confirms its end.
        if self.stripes_for(meta.len().saturating_sub(start)) {
            self.upload_striped(handle, file, start, meta.len(), local)
                .await
                .map_err(|e| relabel_local(e, local))?;
            acked = meta.len() - start;
            offset = meta.len();
        }
        let mut eof = false;
        // WRITEs are sized by the file's length, so a small file takes only its own size
        // of the byte budget (a full chunk each would cap concurrency at budget/chunk
        // files). Past that length a small probe finds a file that grew; then reading
        // goes on in full chunks until a short read.
        let mut known_size = Some(meta.len());
        // A file sent in one WRITE may take a smaller share of the budget's floor than a
        // stream of chunks (see `pace`).
        let one_write = meta.len().saturating_sub(start) <= chunk as u64;
        let collect = |acked: &mut u64, (n, r): (usize, Result<crate::proto::Response>)| {
            // A WRITE whose data came from the file fails here if reading it did.
            write_reply(handle.path(), r.map_err(|e| relabel_local(e, local))?)?;
            *acked += n as u64;
            self.progress.file_transferred(local, n as u64);
            Ok(())
        };
        loop {
            while !eof && inflight.len() < max_requests {
                // The file's last piece, when read (not sent from the file by the
                // reactor), is asked for with one byte more: a read that stops at the
                // known end is the end, and no growth probe follows.
                let (want, end) = match known_size {
                    Some(size) if offset < size => {
                        let left = usize::try_from(size - offset).unwrap_or(usize::MAX);
                        if left < chunk && left + 1 < ZERO_COPY_MIN {
                            (left + 1, Some(left))
                        } else {
                            (chunk.min(left), None)
                        }
                    }
                    Some(_) => (chunk.min(super::GROWTH_PROBE), None),
                    None => (chunk, None),
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
                        .submit_write_from_file_to(handle, offset, file, offset, want, end)
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

/// The local side of an upload.
struct Source<'a> {
    path: &'a Path,
    file: &'a fs::File,
    meta: &'a fs::Metadata,
}

impl Source<'_> {
    /// What a remote copy with `attrs` can be of this file.
    fn judge(&self, attrs: &FileAttributes) -> Judgement {
        judge(
            attrs.size.unwrap_or(u64::MAX),
            attrs.mtime().map(i64::from),
            self.meta.len(),
            Some(self.meta.mtime()),
        )
    }
}

/// Where an upload writes.
struct Dest {
    /// `remote` itself, or a temporary name renamed onto it at the end.
    path: Vec<u8>,
    temp: bool,
    /// Bytes of a partial copy kept: writing starts there.
    start: u64,
    /// The partial copy, opened to check its bytes.
    handle: Option<Handle>,
    /// A temporary name shared by reruns, to create exclusively.
    exclusive: bool,
}

/// What `resume` found at an upload's target.
struct Around {
    /// The file at the target.
    target: Option<FileAttributes>,
    /// Temporary files of uploads to the target.
    temps: Vec<(Vec<u8>, FileAttributes)>,
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
