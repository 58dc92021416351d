//! Pipelined download of one file.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::Transfer;
use super::pace::Ask;
use super::resume::{Judgement, judge};
use crate::client::read_reply;
use crate::error::{Error, Result};
use crate::proto::{FileAttributes, OpenFlags, Request};

/// Tracks which byte ranges arrived, to know the highest offset below which everything
/// is on disk (what a failed download keeps, and where `--resume` continues).
pub(crate) struct Received {
    contiguous: u64,
    beyond: BTreeMap<u64, u64>,
}

impl Received {
    pub(crate) fn new(start: u64) -> Self {
        Received {
            contiguous: start,
            beyond: BTreeMap::new(),
        }
    }

    /// `end`, if every byte below it arrived.
    fn complete_to(&self, end: u64, path: &[u8]) -> Result<u64> {
        if self.contiguous < end {
            return Err(Error::Protocol(format!(
                "{}: server ended the file at {end} but sent only {} contiguous bytes",
                String::from_utf8_lossy(path),
                self.contiguous
            )));
        }
        Ok(end)
    }

    pub(crate) fn add(&mut self, offset: u64, len: u64) {
        if offset <= self.contiguous {
            self.contiguous = self.contiguous.max(offset + len);
        } else {
            let e = self.beyond.entry(offset).or_insert(0);
            *e = (*e).max(len);
        }
        while let Some((&o, &l)) = self.beyond.first_key_value() {
            if o > self.contiguous {
                break;
            }
            self.beyond.remove(&o);
            self.contiguous = self.contiguous.max(o + l);
        }
    }
}

/// Budget taken by a READ expected to meet the end of the file (a STATUS reply).
const END_REPLY_BUDGET: u64 = 64;

impl Transfer {
    /// Downloads `remote` to `local` with up to `requests` READs in flight; replies may
    /// come in any order and are written at their offsets. `attrs` (from a listing) spares
    /// a round trip for the size. On failure the local file is cut to the highest offset
    /// below which every byte arrived, so `resume` can continue it.
    pub async fn download(
        &self,
        remote: &[u8],
        local: &Path,
        attrs: Option<&FileAttributes>,
    ) -> Result<u64> {
        self.download_file(remote, local, attrs, false).await
    }

    /// [`Transfer::download`]; with `nofollow` a symlink at `local` is refused instead of
    /// written through (tree downloads, where the server chose the names).
    pub(crate) async fn download_file(
        &self,
        remote: &[u8],
        local: &Path,
        attrs: Option<&FileAttributes>,
        nofollow: bool,
    ) -> Result<u64> {
        self.ready().await;
        let permit = self.file_permit().await;
        if let Some(len) = attrs.and_then(|a| a.size) {
            self.foresee(len);
        }
        let handle = self
            .sftp
            .open(remote, OpenFlags::READ, &FileAttributes::default())
            .await?;
        let attrs = match attrs {
            Some(a) if a.size.is_some() => a.clone(),
            _ => self.sftp.fstat(&handle).await?,
        };
        let lctx = |e| Error::local(format!("cannot write {}", local.display()), e);
        let mode = attrs.permissions.unwrap_or(0o644) & 0o777;
        let start = match self.opts.resume {
            true => {
                self.local_resume_point(remote, &handle, local, &attrs)
                    .await?
            }
            false => 0,
        };
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(start == 0)
            .mode(mode)
            .custom_flags(if nofollow { libc::O_NOFOLLOW } else { 0 })
            .open(local)
            .map_err(lctx)?;

        let mut received = Received::new(start);
        let result = self
            .fetch_all(&handle, &file, start, attrs.size, &mut received, local)
            .await;
        // Reads need no CLOSE verdict: send it without waiting, the slot is free at once
        // because the server handles this connection's requests in order.
        drop(handle);
        drop(permit);
        match result {
            Ok(end) => {
                file.set_len(end).map_err(lctx)?;
                self.apply_local_attrs(local, &file, &attrs)?;
                Ok(end - start)
            }
            Err(e) => {
                if let Err(te) = file.set_len(received.contiguous) {
                    log::warn!("could not truncate {}: {te}", local.display());
                }
                Err(e)
            }
        }
    }

    /// `resume`: where to continue the local partial copy `local` of `remote` (0 to
    /// download it whole). A copy that may be of an older version (its last bytes agree,
    /// but it predates the remote file's last change) is refused.
    async fn local_resume_point(
        &self,
        remote: &[u8],
        handle: &crate::client::Handle,
        local: &Path,
        attrs: &FileAttributes,
    ) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let meta = match fs::metadata(local) {
            Ok(m) if m.is_file() => m,
            _ => return Ok(0),
        };
        let verdict = judge(
            meta.len(),
            Some(meta.mtime()),
            attrs.size.unwrap_or(u64::MAX),
            attrs.mtime().map(i64::from),
        );
        let start = match (
            verdict,
            self.resume_point(
                meta.len(),
                self.download_chunk(),
                attrs.size.unwrap_or(u64::MAX),
            ),
        ) {
            (Judgement::Complete, _) => return Ok(meta.len()),
            (Judgement::Prefix | Judgement::Older, Some(start)) => start,
            _ => {
                log::info!(
                    "{}: cannot be continued; downloading it whole",
                    local.display()
                );
                return Ok(0);
            }
        };
        let file = fs::File::open(local)
            .map_err(|e| Error::local(format!("cannot read {}", local.display()), e))?;
        if !self.agrees_below(handle, &file, local, start).await? {
            log::info!(
                "{} is not a copy of the start of {}; downloading it whole",
                local.display(),
                String::from_utf8_lossy(remote)
            );
            return Ok(0);
        }
        if verdict == Judgement::Older {
            return Err(Error::InvalidInput(format!(
                "refusing to resume {}: it was last modified before {} was, so it may be an \
                 older version that differs before its end; download it whole with plain get \
                 (without -a)",
                local.display(),
                String::from_utf8_lossy(remote)
            )));
        }
        log::info!(
            "resuming {}: keeping {start} of its {} bytes",
            local.display(),
            meta.len()
        );
        Ok(start)
    }

    /// Applies -p (mode and times) to a downloaded file.
    pub(crate) fn apply_local_attrs(
        &self,
        local: &Path,
        file: &fs::File,
        attrs: &FileAttributes,
    ) -> Result<()> {
        let lctx = |e| Error::local(format!("cannot set attributes of {}", local.display()), e);
        if self.opts.preserve_mode
            && let Some(p) = attrs.permissions
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(p & 0o7777))
                .map_err(lctx)?;
        }
        if self.opts.preserve_times
            && let Some((a, m)) = attrs.atime_mtime
        {
            let t = |s: u32| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s as u64);
            let times = fs::FileTimes::new().set_accessed(t(a)).set_modified(t(m));
            file.set_times(times).map_err(lctx)?;
        }
        Ok(())
    }

    /// [`Transfer::fetch`], over several channels for a big file (see `stripe`).
    async fn fetch_all(
        &self,
        handle: &crate::client::Handle,
        file: &fs::File,
        start: u64,
        size_hint: Option<u64>,
        received: &mut Received,
        local: &Path,
    ) -> Result<u64> {
        let Some(size) = size_hint.filter(|&s| self.stripes_for(s.saturating_sub(start))) else {
            return self
                .fetch(handle, file, start, size_hint, received, local)
                .await;
        };
        let cell = std::cell::RefCell::new(std::mem::replace(received, Received::new(start)));
        let striped = self
            .download_striped(handle, file, &cell, start, size, local)
            .await;
        *received = cell.into_inner();
        match striped? {
            Some(end) => received.complete_to(end, handle.path()),
            // Past the size, the last READ confirms the end (or finds that it grew).
            None => {
                self.fetch(handle, file, size, Some(size), received, local)
                    .await
            }
        }
    }

    /// Issues READs from `start`, writes replies at their offsets, re-requests the tail of
    /// short reads, and returns the end of file.
    async fn fetch(
        &self,
        handle: &crate::client::Handle,
        file: &fs::File,
        start: u64,
        size_hint: Option<u64>,
        received: &mut Received,
        local: &Path,
    ) -> Result<u64> {
        let chunk = self.download_chunk() as u64;
        let max_requests = self.opts.requests.max(1);
        let mut st = Fetch {
            handle,
            file,
            local,
            received,
            size_hint,
            end: None,
            retry: Vec::new(),
            progress: &*self.progress,
        };
        let mut next = start;
        let mut inflight = FuturesUnordered::new();
        loop {
            while inflight.len() < max_requests {
                let (offset, len) = if let Some(r) = st.retry.pop() {
                    r
                } else if st.end.is_none() && st.size_hint.is_none_or(|s| next <= s) {
                    // Past the expected size, one more READ confirms the end (or finds
                    // that the file grew, and then reading goes on without a size).
                    let len = match st.size_hint {
                        Some(s) if next < s => chunk.min(s - next),
                        // Small, so that confirming the end does not take a full chunk of
                        // the byte budget per file.
                        Some(_) => chunk.min(super::GROWTH_PROBE as u64),
                        None => chunk,
                    };
                    let o = next;
                    next += len;
                    (o, len)
                } else {
                    break;
                };
                // The READ past the expected size normally meets the end: its reply is a
                // short STATUS, so it takes that much budget, not its length. With many
                // small files the budget otherwise ran out on these probes (4 KiB each for
                // 100 bytes of data) long before the wire or the server was busy. A file
                // that grew meanwhile brings at most GROWTH_PROBE more per file.
                let expect = match st.size_hint {
                    Some(s) if offset >= s => END_REPLY_BUDGET,
                    _ => len,
                };
                let permit = self
                    .budget_while_draining(expect as usize, Ask::Stream, &mut inflight, |item| {
                        st.complete(item)
                    })
                    .await?;
                let pending = self
                    .sftp
                    .submit(&Request::Read {
                        handle: handle.raw().to_vec(),
                        offset,
                        len: len as u32,
                    })
                    .await?;
                inflight.push(async move {
                    let r = pending.await;
                    drop(permit);
                    (offset, len, r)
                });
            }
            match inflight.next().await {
                Some(item) => st.complete(item)?,
                None => break,
            }
        }
        let end = st.end.unwrap_or(next);
        st.received.complete_to(end, handle.path())
    }
}

/// The state of one download's pipeline, updated as each READ completes.
struct Fetch<'a> {
    handle: &'a crate::client::Handle,
    file: &'a fs::File,
    local: &'a Path,
    received: &'a mut Received,
    size_hint: Option<u64>,
    end: Option<u64>,
    /// Tails of short reads still to request.
    retry: Vec<(u64, u64)>,
    progress: &'a dyn super::Progress,
}

impl Fetch<'_> {
    /// Writes a READ's data at its offset, or notes where the file ends.
    fn complete(
        &mut self,
        (offset, len, r): (u64, u64, Result<crate::proto::Response>),
    ) -> Result<()> {
        match read_reply(self.handle.path(), r?)? {
            Some(data) if !data.is_empty() => {
                let n = (data.len() as u64).min(len);
                self.file
                    .write_all_at(&data[..n as usize], offset)
                    .map_err(|e| {
                        Error::local(format!("cannot write {}", self.local.display()), e)
                    })?;
                self.received.add(offset, n);
                self.progress.file_transferred(self.local, n);
                if self.size_hint.is_some_and(|s| offset + n > s) {
                    self.size_hint = None;
                }
                if n < len && self.end.is_none_or(|e| offset + n < e) {
                    self.retry.push((offset + n, len - n));
                }
            }
            _ => {
                self.end = Some(self.end.map_or(offset, |e| e.min(offset)));
                self.retry.retain(|&(o, _)| o < offset);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Received;

    #[test]
    fn contiguous_offset_follows_out_of_order_ranges() {
        let mut r = Received::new(0);
        r.add(20, 10);
        assert_eq!(r.contiguous, 0);
        r.add(0, 10);
        assert_eq!(r.contiguous, 10);
        r.add(10, 10);
        assert_eq!(r.contiguous, 30);
        r.add(25, 10);
        assert_eq!(r.contiguous, 35);
    }
}
