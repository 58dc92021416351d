//! Moving file contents: pipelined single-file upload and download, and many files at once
//! over one connection.
//!
//! A [`Transfer`] holds what concurrent file tasks share: the [`DirLocks`] that create
//! remote parents once, a [`Semaphore`] bounding open remote handles, and another bounding
//! bytes in flight, so memory stays flat however many files or how large they are.

mod download;
mod links;
pub mod pace;
mod remove;
mod resume;
mod spread;
mod stream;
mod stripe;
mod tree;
mod upload;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::client::{MIN_CHUNK, Sftp};
use crate::error::Error;
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use futures_util::stream::FuturesUnordered;

use crate::task::{DirLocks, Permit, Semaphore};
use pace::{Ask, Pacer};

pub use links::LinkSlot;
pub(crate) use links::{link_times, set_local_link_mtime};
pub use remove::Removal;
pub use resume::resumable_temp_name;
pub use stream::StreamFd;
pub(crate) use tree::{DIRS_IN_FLIGHT, list_local_dir, local_entry};
pub use tree::{
    LocalEntry, LocalKind, LocalTree, safe_remote_name, staging_dir, walk_local, walk_local_with,
};
pub use upload::temp_name;
pub(crate) use upload::to_u32_time;

/// Requests in flight per file by default (as OpenSSH's sftp).
pub const DEFAULT_REQUESTS: usize = 64;
/// Bytes in flight over all files by default: enough to keep an ssh channel (which holds
/// about 2 MiB) full many times over, small enough to keep memory flat.
pub const DEFAULT_BYTES_IN_FLIGHT: usize = 24 << 20;
/// Open handles when the server does not state its limit.
pub const DEFAULT_MAX_OPEN: usize = 64;
/// The most handles sftpipe opens at once, whatever the server allows.
pub const MAX_OPEN_CAP: usize = 1024;

/// How to transfer.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// READ/WRITE requests in flight per file.
    pub requests: usize,
    /// Bytes per request; `None` takes the server's limits (else 32 KiB).
    pub chunk: Option<usize>,
    /// Copy modification and access times.
    pub preserve_times: bool,
    /// Copy permission bits exactly (without, new files get the source's mode under the
    /// destination's umask).
    pub preserve_mode: bool,
    /// Send `fsync@openssh.com` before closing an uploaded file.
    pub fsync: bool,
    /// Continue partial files that are a prefix of their source (by size, time and the
    /// bytes where writing resumes): downloads the local file, uploads a temporary file
    /// left by an interrupted upload or, in place, the remote file. Leftover temporary
    /// files of an uploaded target are removed. A copy that may be an older version is
    /// refused (an error); one that is not a prefix is transferred whole.
    pub resume: bool,
    /// Write uploads straight to the final name instead of a temporary name + rename.
    pub inplace: bool,
    /// Open remote handles at most; `None` derives it from `limits@openssh.com`.
    pub max_open: Option<usize>,
    /// Bytes in flight over all files.
    pub max_bytes_in_flight: usize,
    /// Follow local symlinks (upload what they point to) instead of recreating them.
    pub follow_links: bool,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            requests: DEFAULT_REQUESTS,
            chunk: None,
            preserve_times: false,
            preserve_mode: false,
            fsync: false,
            resume: false,
            inplace: false,
            max_open: None,
            max_bytes_in_flight: DEFAULT_BYTES_IN_FLIGHT,
            follow_links: false,
        }
    }
}

/// Receives progress from a transfer (all methods default to doing nothing).
pub trait Progress {
    /// More work was discovered: files and bytes to move.
    fn add_total(&self, _files: u64, _bytes: u64) {}
    /// Bytes were acknowledged by the server (upload) or written locally (download).
    fn transferred(&self, _bytes: u64) {}
    /// Bytes of the local file `local` were moved (by default counted by
    /// [`Progress::transferred`]).
    fn file_transferred(&self, _local: &std::path::Path, bytes: u64) {
        self.transferred(bytes)
    }
    /// A file finished, successfully or not.
    fn file_done(&self, _path: &str, _bytes: u64, _error: Option<&Error>) {}
}

/// A progress sink that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// The outcome of a batch.
#[derive(Debug, Default)]
pub struct Report {
    /// Files moved.
    pub files: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Every failed path with its error.
    pub failures: Vec<(String, Error)>,
    /// New trees left in their staging directory because something in them failed, each
    /// as a message naming the tree, the staging directory and what to do.
    pub kept_staged: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl Report {
    /// True when nothing failed.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// Turns failures into [`Error::Partial`].
    pub fn into_result(self) -> crate::Result<Report> {
        if self.failures.is_empty() {
            Ok(self)
        } else {
            let total = (self.files + self.symlinks + self.dirs) as usize + self.failures.len();
            Err(Error::Partial {
                total,
                failures: self.failures,
            })
        }
    }
}

/// Shared state of concurrent file tasks on one connection: clone it into each task
/// (clones share the limits, the progress sink and the report).
///
/// ```no_run
/// use std::rc::Rc;
/// use sftpipe::transfer::NoProgress;
/// use sftpipe::{ConnectOptions, Session, TransferOptions, task};
/// # fn main() -> sftpipe::Result<()> {
/// let session = Session::connect(&ConnectOptions::host("h"))?;
/// let t = session.transfer(TransferOptions::default(), Rc::new(NoProgress));
/// let sent = session.run(async move {
///     let uploads: Vec<_> = (0..1000)
///         .map(|i| {
///             let t = t.clone();
///             task::spawn(async move {
///                 let local = format!("out/{i}.json");
///                 t.upload(local.as_ref(), format!("/srv/in/{i}.json").as_bytes()).await
///             })
///         })
///         .collect();
///     let mut sent = 0;
///     for upload in uploads {
///         sent += upload.await?;
///     }
///     Ok::<_, sftpipe::Error>(sent)
/// })?;
/// println!("{sent} bytes");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Transfer {
    /// The channel this task works over (see [`Transfer::for_file`]).
    pub(crate) sftp: Sftp,
    /// The session's first channel: directory work and the attributes of directories.
    pub(crate) base: Sftp,
    /// The session's further channels, when it has any.
    pub(crate) pool: Option<crate::pool::Pool>,
    /// Open-file limit per channel, and how many channels it was scaled to.
    open_scale: Rc<spread::OpenScale>,
    /// An open-file permit taken before this file's channel was picked (see
    /// [`Transfer::on_some_channel`]); each file's context has its own.
    reserved: Rc<RefCell<Option<Permit>>>,
    pub(crate) opts: Rc<TransferOptions>,
    pub(crate) dirlocks: DirLocks,
    pub(crate) open_files: Semaphore,
    pub(crate) budget: Semaphore,
    /// Sizes `budget` to the path (shared by forks, like the budget).
    pacer: Rc<RefCell<Pacer>>,
    pub(crate) progress: Rc<dyn Progress>,
    pub(crate) report: Rc<RefCell<Report>>,
    /// Whether [`Transfer::ready`] applied the server's limits (shared by forks).
    limits_applied: Rc<std::cell::Cell<bool>>,
    /// Directories listed for `resume` (valid within a batch, like `dirlocks`).
    listings: resume::Listings,
    started: Instant,
}

impl Transfer {
    /// A transfer context over `sftp`.
    pub fn new(sftp: &Sftp, opts: TransferOptions) -> Self {
        Self::with_progress(sftp, opts, Rc::new(NoProgress))
    }

    /// A transfer context reporting to `progress`.
    pub fn with_progress(sftp: &Sftp, opts: TransferOptions, progress: Rc<dyn Progress>) -> Self {
        // Until the server's limits are known (see `ready`), listings run under the
        // conservative default.
        let max_open = match opts.max_open {
            Some(n) if n > local_fd_room() => {
                log::warn!(
                    "{n} open files (--max-open) need more descriptors than the open-file \
                     limit (ulimit -n) leaves; using {}",
                    local_fd_room()
                );
                local_fd_room()
            }
            Some(n) => n,
            None => default_max_open(sftp),
        };
        let pacer = Pacer::new(opts.max_bytes_in_flight.max(MIN_BUDGET));
        Transfer {
            sftp: sftp.clone(),
            base: sftp.clone(),
            pool: sftp.pool(),
            open_scale: Rc::new(spread::OpenScale::new(max_open, opts.max_open.is_some())),
            reserved: Default::default(),
            dirlocks: DirLocks::new(sftp.clone()),
            open_files: Semaphore::new(max_open),
            budget: Semaphore::new(pacer.initial()),
            pacer: Rc::new(RefCell::new(pacer)),
            limits_applied: Rc::new(std::cell::Cell::new(false)),
            opts: Rc::new(opts),
            progress,
            report: Rc::new(RefCell::new(Report::default())),
            listings: Default::default(),
            started: Instant::now(),
        }
    }

    /// Waits for the server's limits (asked during the handshake) and sizes the open-file
    /// limit from them. Every transfer calls it before choosing chunk sizes.
    pub async fn ready(&self) {
        // Cheap once answered; awaited even with --max-open, for the chunk sizes.
        self.sftp.limits().await;
        if self.limits_applied.replace(true) {
            return;
        }
        if self.opts.max_open.is_none() {
            self.open_scale
                .set_per_channel(default_max_open(&self.sftp));
            self.scale_open_files();
        }
        if let Some(asked) = self.opts.chunk {
            let (up, down) = (self.upload_chunk(), self.download_chunk());
            if up < asked || down < asked {
                log::info!(
                    "buffer of {asked} bytes lowered to what the server accepts: {up} bytes \
                     per write, {down} per read"
                );
            }
        }
        log::debug!(
            "transfer: {} requests/file, chunk {}, {} open files, {} bytes in flight",
            self.opts.requests,
            self.upload_chunk(),
            self.open_files.capacity(),
            self.opts.max_bytes_in_flight
        );
    }

    /// A sibling context for an independent batch: it shares this one's limits (open
    /// handles, bytes in flight) and progress sink, but has its own report, options and
    /// directory locks (whose knowledge of what exists is only valid within a batch).
    pub fn fork(&self, opts: TransferOptions) -> Transfer {
        Transfer {
            sftp: self.sftp.clone(),
            base: self.base.clone(),
            pool: self.pool.clone(),
            open_scale: self.open_scale.clone(),
            reserved: Default::default(),
            opts: Rc::new(opts),
            dirlocks: DirLocks::new(self.sftp.clone()),
            open_files: self.open_files.clone(),
            budget: self.budget.clone(),
            pacer: self.pacer.clone(),
            progress: self.progress.clone(),
            report: Rc::new(RefCell::new(Report::default())),
            limits_applied: self.limits_applied.clone(),
            listings: Default::default(),
            started: Instant::now(),
        }
    }

    /// The connection.
    pub fn sftp(&self) -> &Sftp {
        &self.sftp
    }

    /// The directory locks (shared with other work on the same tree).
    pub fn dirlocks(&self) -> &DirLocks {
        &self.dirlocks
    }

    /// The options.
    pub fn options(&self) -> &TransferOptions {
        &self.opts
    }

    /// Takes the accumulated report: everything recorded since the last take, by all the
    /// tasks sharing this context (tree calls take it when they finish, so concurrent tree
    /// calls on one context should use separate contexts to keep separate counts).
    pub fn take_report(&self) -> Report {
        let mut r = std::mem::take(&mut *self.report.borrow_mut());
        r.elapsed = self.started.elapsed();
        r
    }

    /// Records a failure in the report and tells the progress sink.
    pub fn record_failure(&self, path: String, e: Error) {
        self.progress.file_done(&path, 0, Some(&e));
        self.report.borrow_mut().failures.push((path, e));
    }

    /// Resizes the byte budget to the path (see [`pace`](self::pace)) once per measuring
    /// interval.
    fn pace(&self, request: Ask) {
        let (bytes, rtt, channels) = self.path_counts();
        let update = {
            let mut pacer = self.pacer.borrow_mut();
            pacer.channels(channels);
            pacer.update(Instant::now(), bytes, rtt, request)
        };
        if let Some(window) = update
            && window != self.budget.capacity()
        {
            log::trace!("in-flight budget {window} bytes");
            self.budget.set_capacity(window);
        }
    }

    /// Waits for `bytes` of the in-flight budget for `ask` while still collecting completions of
    /// `inflight`, each handed to `done`. Budget held by this file's own requests comes back
    /// only as their replies are collected, so waiting without collecting could wait
    /// forever once the budget is spent.
    pub(crate) async fn budget_while_draining<F, T>(
        &self,
        bytes: usize,
        ask: Ask,
        inflight: &mut FuturesUnordered<F>,
        mut done: impl FnMut(T) -> crate::Result<()>,
    ) -> crate::Result<Permit>
    where
        F: std::future::Future<Output = T>,
    {
        self.pace(ask);
        let mut acquire = self.budget.acquire(bytes);
        loop {
            if inflight.is_empty() {
                return Ok(acquire.await);
            }
            match select(&mut acquire, inflight.next()).await {
                Either::Left((permit, _)) => return Ok(permit),
                Either::Right((Some(item), _)) => done(item)?,
                Either::Right((None, _)) => {}
            }
        }
    }

    /// Bytes per WRITE: the chosen chunk, within what the server accepts.
    fn upload_chunk(&self) -> usize {
        match self.opts.chunk {
            Some(c) => c.min(self.sftp.max_write_chunk()).max(MIN_CHUNK),
            None => self.sftp.write_chunk(),
        }
    }

    /// Bytes per READ: the chosen chunk, within what the server serves.
    fn download_chunk(&self) -> usize {
        match self.opts.chunk {
            Some(c) => c.min(self.sftp.max_read_chunk()).max(MIN_CHUNK),
            None => self.sftp.read_chunk(),
        }
    }
}

/// Bytes asked for past a file's expected end, to confirm the end or find that it grew.
const GROWTH_PROBE: usize = 4096;

/// The byte budget must admit at least one full chunk.
const MIN_BUDGET: usize = crate::client::MAX_CHUNK;

/// Open handles by default: most of what the server allows (leaving room for others and
/// for directory handles), capped; 64 when the server does not say.
pub fn default_max_open(sftp: &Sftp) -> usize {
    let n = match sftp.max_open_handles() {
        Some(n) => {
            let n = n.min(MAX_OPEN_CAP as u64 * 2) as usize;
            (n - n / 4).clamp(1, MAX_OPEN_CAP)
        }
        None => DEFAULT_MAX_OPEN,
    };
    n.min(local_fd_room())
}

/// Descriptors left free for what is not a file task (the connection, listings, logs):
/// this many, or a quarter of a smaller limit.
const FD_RESERVE: u64 = 64;

/// How many file tasks this process's open-file limit (`RLIMIT_NOFILE`) admits: each
/// holds one local descriptor while it has a remote handle, so more would fail with
/// EMFILE however many handles the server allows.
pub fn local_fd_room() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => {
            let reserve = FD_RESERVE.min(soft / 4);
            soft.saturating_sub(reserve).clamp(1, usize::MAX as u64) as usize
        }
        Err(_) => usize::MAX,
    }
}

/// Raises this process's soft open-file limit towards its hard limit, as far as
/// [`MAX_OPEN_CAP`] file tasks need; for programs (like sftpipe's CLI) that own their
/// process. Returns the soft limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let want = (MAX_OPEN_CAP as u64 + 4 * FD_RESERVE).min(hard);
    if want > soft && setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_ok() {
        return Some(want);
    }
    Some(soft)
}

/// Joins a remote directory and a name.
pub fn remote_join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() && !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// `path` made absolute (a relative one from `/`), with `.`, `..` and repeated slashes
/// resolved by name, as a server that resolves a link's target lexically does.
pub fn remote_normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    for c in parts {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// The last component of a remote path.
pub fn remote_basename(path: &[u8]) -> &[u8] {
    let mut end = path.len();
    while end > 1 && path[end - 1] == b'/' {
        end -= 1;
    }
    let p = &path[..end];
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) if i + 1 < p.len() => &p[i + 1..],
        Some(_) => p,
        None => p,
    }
}

pub(crate) fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_normalize_resolves_dots_by_name() {
        assert_eq!(remote_normalize(b"/srv/m/a/b/../t"), b"/srv/m/a/t");
        assert_eq!(remote_normalize(b"/srv//./x"), b"/srv/x");
        assert_eq!(remote_normalize(b"/../../x"), b"/x");
        assert_eq!(remote_normalize(b"/a/.."), b"/");
        assert_eq!(remote_normalize(b"rel/x"), b"/rel/x");
    }

    #[test]
    fn joins_and_basenames() {
        assert_eq!(remote_join(b"/a", b"b"), b"/a/b");
        assert_eq!(remote_join(b"/a/", b"b"), b"/a/b");
        assert_eq!(remote_join(b"", b"b"), b"b");
        assert_eq!(remote_basename(b"/a/b/"), b"b");
        assert_eq!(remote_basename(b"b"), b"b");
        assert_eq!(remote_basename(b"/"), b"/");
    }
}
