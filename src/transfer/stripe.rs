//! One big file over several channels: its byte range is handed out in chunks, in
//! ascending order, to one "lane" per channel. Each lane has its own handle on the same
//! remote file (the upload's temporary file, or the download's source) and keeps its own
//! requests in flight, so every channel's window fills.
//!
//! Ordering (rule 2 of [`crate::pool`]): the first channel's handle is opened (and, for an
//! upload, the file created) before any other lane opens its own; the other lanes' CLOSEs
//! are answered before the first channel sends the file's attributes, CLOSE and RENAME.
//! A lane whose channel dies gives its unanswered chunks back; the others, or the first
//! channel after them, send them again. Bytes in flight over all lanes stay within the
//! transfer's byte budget, which is also how far below its end a striped partial file is
//! resumed (see `resume`).

use std::cell::{Cell, RefCell};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;

use futures_util::StreamExt;
use futures_util::future::{Either, select};
use futures_util::stream::FuturesUnordered;

use super::Transfer;
use super::pace::Ask;
use crate::client::{Handle, read_reply, write_reply};
use crate::error::{Error, Result};
use crate::pool::{STRIPE_MIN, Want};
use crate::proto::{FileAttributes, OpenFlags, Request};

/// A lane is started on another channel only while this much is left: less is done
/// sooner by the lanes already running than by opening another handle.
const LANE_MIN: u64 = 4 << 20;

/// The chunks of one file still to move, shared by its lanes.
pub(crate) struct Stripes {
    next: Cell<u64>,
    end: u64,
    chunk: u64,
    /// Chunks given back by a lane whose channel died.
    returned: RefCell<Vec<(u64, u64)>>,
    /// Set by a download that met the end of the file before `end` (it shrank).
    eof: Cell<Option<u64>>,
}

impl Stripes {
    pub(crate) fn new(start: u64, end: u64, chunk: usize) -> Self {
        Stripes {
            next: Cell::new(start),
            end,
            chunk: chunk.max(1) as u64,
            returned: RefCell::new(Vec::new()),
            eof: Cell::new(None),
        }
    }

    /// The next chunk to move: one given back first, then the lowest not yet handed out.
    pub(crate) fn take(&self) -> Option<(u64, u64)> {
        if let Some(r) = self.returned.borrow_mut().pop() {
            return Some(r);
        }
        let end = self.eof.get().map_or(self.end, |e| e.min(self.end));
        let next = self.next.get();
        if next >= end {
            return None;
        }
        let len = self.chunk.min(end - next);
        self.next.set(next + len);
        Some((next, len))
    }

    /// Bytes not yet handed out.
    pub(crate) fn left(&self) -> u64 {
        self.end.saturating_sub(self.next.get())
    }

    fn give_back(&self, range: (u64, u64)) {
        self.returned.borrow_mut().push(range);
    }
}

/// What a lane does with each answered request.
pub(crate) enum Lane<'a> {
    Up {
        file: &'a Rc<fs::File>,
    },
    Down {
        file: &'a fs::File,
        received: &'a RefCell<super::download::Received>,
    },
}

type Answer = (u64, u64, Result<crate::proto::Response>);

impl Transfer {
    /// Whether a file with `left` bytes to move is spread over channels.
    pub(crate) fn stripes_for(&self, left: u64) -> bool {
        let Some(pool) = self.pool.as_ref().filter(|_| left >= STRIPE_MIN) else {
            return false;
        };
        self.want(Want::Stream(left));
        // With one channel for good, the plain single-channel path.
        !pool.extras().is_empty() || pool.opening() > 0
    }

    /// Tells the pool early (before the file's OPEN, a round trip sooner) that a file of
    /// `len` bytes is coming, so that channels it may be striped over open meanwhile.
    pub(crate) fn foresee(&self, len: u64) {
        if self.pool.is_some() && len >= STRIPE_MIN {
            self.want(Want::Stream(len));
        }
    }

    /// Moves `[start, end)` of the file behind `handle` (on this context's channel) over
    /// it and every other channel the session has or opens meanwhile; returns once every
    /// chunk was answered and every other lane's handle closed.
    pub(crate) async fn striped(
        &self,
        handle: &Handle,
        lane: &Lane<'_>,
        stripes: &Stripes,
        local: &Path,
    ) -> Result<()> {
        let first = self.lane(handle, lane, stripes, local);
        let others = self.other_lanes(handle.path(), lane, stripes, local);
        futures_util::future::try_join(first, others).await?;
        // Chunks given back by a channel that died after the first lane ran dry.
        self.lane(handle, lane, stripes, local).await
    }

    pub(crate) async fn upload_striped(
        &self,
        handle: &Handle,
        file: &Rc<fs::File>,
        start: u64,
        end: u64,
        local: &Path,
    ) -> Result<()> {
        let stripes = Stripes::new(start, end, self.upload_chunk());
        self.striped(handle, &Lane::Up { file }, &stripes, local)
            .await
    }

    pub(crate) async fn download_striped(
        &self,
        handle: &Handle,
        file: &fs::File,
        received: &RefCell<super::download::Received>,
        start: u64,
        end: u64,
        local: &Path,
    ) -> Result<Option<u64>> {
        let stripes = Stripes::new(start, end, self.download_chunk());
        let lane = Lane::Down { file, received };
        self.striped(handle, &lane, &stripes, local).await?;
        Ok(stripes.eof.get())
    }

    /// Lanes on the other channels, started as channels are (or become) available.
    async fn other_lanes(
        &self,
        path: &[u8],
        lane: &Lane<'_>,
        stripes: &Stripes,
        local: &Path,
    ) -> Result<()> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let mut used = vec![self.sftp.clone()];
        let mut lanes = FuturesUnordered::new();
        loop {
            if stripes.left() >= LANE_MIN {
                for s in pool.extras() {
                    if !used.iter().any(|u| u.same_channel(&s)) {
                        used.push(s.clone());
                        let t = self.on(&s);
                        lanes.push(async move {
                            t.lane_with_own_handle(path, lane, stripes, local).await
                        });
                    }
                }
            }
            let seen = pool.generation();
            let waiting = pool.opening() > 0 && stripes.left() >= LANE_MIN;
            match (lanes.is_empty(), waiting) {
                (true, false) => return Ok(()),
                (true, true) => pool.changed(seen).await,
                (false, false) => {
                    if let Some(r) = lanes.next().await {
                        r?;
                    }
                }
                (false, true) => {
                    let changed = std::pin::pin!(pool.changed(seen));
                    if let Either::Left((Some(r), _)) = select(lanes.next(), changed).await {
                        r?;
                    }
                }
            }
        }
    }

    /// A lane over this context's channel with a handle of its own. Its channel dying is
    /// not an error: its chunks were given back.
    async fn lane_with_own_handle(
        &self,
        path: &[u8],
        lane: &Lane<'_>,
        stripes: &Stripes,
        local: &Path,
    ) -> Result<()> {
        let flags = match lane {
            Lane::Up { .. } => OpenFlags::WRITE,
            Lane::Down { .. } => OpenFlags::READ,
        };
        let dead = |e: Error| {
            if self.sftp.channel().is_dead() {
                Ok(())
            } else {
                Err(e)
            }
        };
        let handle = match self
            .sftp
            .open(path, flags, &FileAttributes::default())
            .await
        {
            Ok(h) => h,
            Err(e) => return dead(e),
        };
        log::debug!(
            "{}: a lane on channel {}",
            String::from_utf8_lossy(path),
            self.sftp.channel().label()
        );
        if let Err(e) = self.lane(&handle, lane, stripes, local).await {
            return dead(e);
        }
        match self.sftp.close(handle).await {
            // Every WRITE was answered: the data is the server's, whatever became of the
            // CLOSE; and a read handle's CLOSE does not matter.
            Err(e) if !self.sftp.channel().is_dead() && matches!(lane, Lane::Up { .. }) => Err(e),
            _ => Ok(()),
        }
    }

    /// Moves chunks over `handle` until none are left. On an error every chunk not
    /// answered is given back.
    async fn lane(
        &self,
        handle: &Handle,
        lane: &Lane<'_>,
        stripes: &Stripes,
        local: &Path,
    ) -> Result<()> {
        let max_requests = self.opts.requests.max(1);
        let mut inflight = FuturesUnordered::new();
        let mut failed: Option<Error> = None;
        let mut done = |a: Answer| match self.answered(handle, lane, stripes, local, a) {
            Ok(()) => Ok(()),
            Err((e, range)) => {
                stripes.give_back(range);
                Err(e)
            }
        };
        'feed: while failed.is_none() {
            while inflight.len() < max_requests {
                let Some((offset, len)) = stripes.take() else {
                    break 'feed;
                };
                let budget = self
                    .budget_while_draining(len as usize, Ask::Stream, &mut inflight, &mut done)
                    .await;
                let sent = match budget {
                    Ok(permit) => self
                        .send_chunk(handle, lane, offset, len)
                        .await
                        .map(|p| (p, permit)),
                    Err(e) => Err(e),
                };
                match sent {
                    Ok((pending, permit)) => inflight.push(async move {
                        let r = pending.await;
                        drop(permit);
                        (offset, len, r)
                    }),
                    Err(e) => {
                        stripes.give_back((offset, len));
                        failed = Some(e);
                        continue 'feed;
                    }
                }
            }
            match inflight.next().await {
                Some(a) => {
                    if let Err(e) = done(a) {
                        failed = Some(e);
                    }
                }
                None => break,
            }
        }
        // Whatever is still in flight: answered ones count, the rest go back.
        while let Some(a) = inflight.next().await {
            if let Err(e) = done(a) {
                failed.get_or_insert(e);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn send_chunk(
        &self,
        handle: &Handle,
        lane: &Lane<'_>,
        offset: u64,
        len: u64,
    ) -> Result<crate::client::PendingReply> {
        let n = u32::try_from(len)
            .map_err(|_| Error::InvalidInput(format!("request of {len} bytes")))?;
        match lane {
            Lane::Up { file } => {
                self.sftp
                    .submit_write_file_region(handle, offset, file, offset, n)
                    .await
            }
            Lane::Down { .. } => {
                self.sftp
                    .submit(&Request::Read {
                        handle: handle.raw().to_vec(),
                        offset,
                        len: n,
                    })
                    .await
            }
        }
    }

    /// Takes one answer; on failure, the error and the range to give back.
    fn answered(
        &self,
        handle: &Handle,
        lane: &Lane<'_>,
        stripes: &Stripes,
        local: &Path,
        (offset, len, r): Answer,
    ) -> std::result::Result<(), (Error, (u64, u64))> {
        let range = (offset, len);
        let r = r.map_err(|e| (e, range))?;
        match lane {
            Lane::Up { .. } => {
                write_reply(handle.path(), r).map_err(|e| (e, range))?;
                self.progress.file_transferred(local, len);
            }
            Lane::Down { file, received } => {
                match read_reply(handle.path(), r).map_err(|e| (e, range))? {
                    Some(data) if !data.is_empty() => {
                        let n = (data.len() as u64).min(len);
                        file.write_all_at(&data[..n as usize], offset)
                            .map_err(|e| {
                                let what = format!("cannot write {}", local.display());
                                (Error::local(what, e), range)
                            })?;
                        received.borrow_mut().add(offset, n);
                        self.progress.file_transferred(local, n);
                        if n < len {
                            // A short read: the rest is asked again.
                            stripes.give_back((offset + n, len - n));
                        }
                    }
                    _ => {
                        // The file ended early (it shrank): nothing past here is asked.
                        let end = stripes.eof.get().map_or(offset, |e| e.min(offset));
                        stripes.eof.set(Some(end));
                        stripes.returned.borrow_mut().retain(|&(o, _)| o < end);
                    }
                }
            }
        }
        Ok(())
    }
}
