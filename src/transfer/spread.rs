//! Spreading files over the session's channels ([`crate::pool`]): each file goes to one
//! channel and stays there (ordering rule 2), a file whose channel died is tried once
//! more on another, and the limits shared by all files (open handles, bytes in flight)
//! follow the number of channels.

use std::cell::Cell;
use std::time::Duration;

use super::Transfer;
use crate::client::Sftp;
use crate::error::{Error, Result};
use crate::pool::Want;
use crate::task::Permit;

/// The open-file limit is per channel (each server process has its own handles); the
/// shared semaphore holds that many per open channel, unless the user set it.
#[derive(Debug)]
pub(crate) struct OpenScale {
    per_channel: Cell<usize>,
    counted: Cell<usize>,
    fixed: bool,
}

impl OpenScale {
    pub(crate) fn new(per_channel: usize, fixed: bool) -> Self {
        OpenScale {
            per_channel: Cell::new(per_channel),
            counted: Cell::new(1),
            fixed,
        }
    }

    pub(crate) fn set_per_channel(&self, n: usize) {
        self.per_channel.set(n);
    }
}

impl Transfer {
    /// This context working over `sftp` (another channel of the same session): it shares
    /// everything else, the directory locks included.
    pub fn on(&self, sftp: &Sftp) -> Transfer {
        let mut t = self.clone();
        t.dirlocks = self.dirlocks.for_channel(sftp);
        t.sftp = sftp.clone();
        t.reserved = Default::default();
        t
    }

    /// The context for one file: over the channel with the least work waiting.
    pub fn for_file(&self) -> Transfer {
        match &self.pool {
            Some(pool) => {
                self.scale_open_files();
                self.on(&pool.pick(&self.base))
            }
            None => self.clone(),
        }
    }

    /// [`Transfer::for_file`] once an open-file permit is free: the channel is picked
    /// when the file can start, not when it was queued (channels opened meanwhile get
    /// their share).
    async fn for_file_when_free(&self) -> Transfer {
        let permit = self.open_files.acquire(1).await;
        let t = self.for_file();
        *t.reserved.borrow_mut() = Some(permit);
        t
    }

    /// The open-file permit for one file: the one taken when its channel was picked, or a
    /// new one.
    pub(crate) async fn file_permit(&self) -> Permit {
        let reserved = self.reserved.borrow_mut().take();
        match reserved {
            Some(p) => p,
            None => self.open_files.acquire(1).await,
        }
    }

    /// Tells the pool what is about to be moved, so it can add channels (see
    /// [`crate::pool::Pool::grow`]).
    pub fn want(&self, want: Want) {
        let Some(pool) = &self.pool else { return };
        // Files that one channel's open-file limit admits all at once gain nothing.
        if let Want::Files(n) = want
            && n <= self.open_scale.per_channel.get()
            && !pool.eager()
        {
            return;
        }
        pool.grow(&self.base, want);
    }

    /// Whether this context works over the session's first channel.
    pub fn on_base(&self) -> bool {
        self.sftp.same_channel(&self.base)
    }

    /// Runs `op` for one file over the channel [`Transfer::for_file`] picks; if that
    /// channel dies under it while others live, `op` runs once more over another.
    ///
    /// `op`'s future is boxed once the file may start: a task queued for an open-file
    /// permit then holds a few words instead of a whole transfer's state (kilobytes),
    /// and the thousands of queued tasks of a large tree neither take memory nor cost
    /// page faults.
    pub async fn on_some_channel<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut(Transfer) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let t = self.for_file_when_free().await;
        match Box::pin(op(t.clone())).await {
            Err(e) if self.lost_channel(&t, &e) => {
                let other = self.for_file_when_free().await;
                if other.sftp.channel().is_dead() || other.sftp.same_channel(&t.sftp) {
                    return Err(e);
                }
                log::info!("{e}; trying again over another channel");
                Box::pin(op(other)).await
            }
            r => r,
        }
    }

    /// True when `e` came from `t`'s channel dying while the session has others.
    fn lost_channel(&self, t: &Transfer, e: &Error) -> bool {
        e.is_connection() && t.sftp.channel().is_dead() && self.pool.is_some()
    }

    /// Sizes the open-file semaphore to the channels open now.
    pub(crate) fn scale_open_files(&self) {
        let scale = &self.open_scale;
        if scale.fixed {
            return;
        }
        let n = 1 + self.pool.as_ref().map_or(0, |p| p.extras().len());
        let want = scale.per_channel.get().saturating_mul(n);
        if want != self.open_files.capacity() {
            scale.counted.set(n);
            self.open_files.set_capacity(want);
        }
    }

    /// Bytes moved so far over all channels, the smallest round trip, and how many
    /// channels there are: what the byte budget is sized from.
    pub(crate) fn path_counts(&self) -> (u64, Option<Duration>, usize) {
        let (out, inn) = self.base.channel().byte_counts();
        let mut bytes = out + inn;
        let mut rtt = self.base.channel().rtt_min();
        let mut channels = 1;
        if let Some(pool) = &self.pool {
            pool.for_each_ready(|s| {
                let (o, i) = s.channel().byte_counts();
                bytes += o + i;
                channels += 1;
                rtt = match (rtt, s.channel().rtt_min()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            });
        }
        (bytes, rtt, channels)
    }
}
