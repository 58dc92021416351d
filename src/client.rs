//! The asynchronous client: every SFTP operation as a future that runs as a task on the
//! [`Runtime`](crate::task::Runtime). [`Sftp`] is a cheap handle; clone it into as many
//! tasks as you like — they all share one connection and one request table.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::error::{Error, Result};
use crate::proto::{
    self, ExtendedRequest, FileAttributes, Limits, NameEntry, OpenFlags, Request, Response,
    StatusCode, Statvfs, SymlinkOrder, ext,
};
use crate::reactor::Channel;

/// Chunk size when the server does not state limits (OpenSSH's own default).
pub const DEFAULT_CHUNK: usize = 32 * 1024;
/// The largest chunk sftpipe asks for, whatever the server allows.
pub const MAX_CHUNK: usize = 256 * 1024;
/// The smallest chunk, whatever the server claims (so a transfer always moves).
pub const MIN_CHUNK: usize = 512;
/// A WRITE's bytes besides its data, with a handle of the draft's maximum 256 bytes.
const WRITE_OVERHEAD: usize = 4 + 1 + 4 + (4 + 256) + 8 + 4;
/// A DATA reply's bytes besides its data.
const DATA_OVERHEAD: usize = 4 + 1 + 4 + 4;
/// The largest packet sftpipe accepts, whatever the server claims.
const MAX_PACKET_CAP: usize = 16 << 20;

/// The answer to `limits@openssh.com`, shared by everyone who awaits it.
type LimitsReply =
    futures_util::future::Shared<futures_util::future::LocalBoxFuture<'static, Option<Limits>>>;

struct Inner {
    chan: Rc<Channel>,
    version: u32,
    extensions: Vec<(String, String)>,
    /// How SYMLINK's arguments go on the wire (see [`Sftp::symlink_order`]).
    symlink_order: SymlinkOrder,
    /// In flight from the handshake on; `None` when the server does not offer it.
    limits_reply: Option<LimitsReply>,
    /// Set once the reply arrived, for the synchronous accessors.
    limits: Rc<Cell<Option<Limits>>>,
    /// STATs sent with INIT (see [`Sftp::handshake_prefetching`]), each taken by the first
    /// [`Sftp::stat`] of its path.
    prefetched_stats: RefCell<Vec<(Vec<u8>, PendingReply)>>,
    /// OPENDIRs sent with INIT, each taken by the first [`Sftp::opendir`] of its path.
    prefetched_dirs: RefCell<Vec<PrefetchedDir>>,
    /// The session's further channels, on its first channel's handle (see
    /// [`Sftp::pool`]).
    pool: RefCell<Option<crate::pool::Pool>>,
}

/// What to ask for right behind INIT (see [`Sftp::handshake_prefetching`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefetch {
    /// Paths to STAT.
    pub stats: Vec<Vec<u8>>,
    /// Directories to OPENDIR (their listing then starts a round trip earlier).
    pub dirs: Vec<Vec<u8>>,
    /// Directories that probably exist, to OPENDIR on a guess (a mirror's subdirectories,
    /// guessed from the local side): a failure other than NO_SUCH_FILE is no answer, the
    /// directory is opened again when asked for. Their handles stay open until taken or
    /// [`Sftp::discard_prefetched`], so keep the list short.
    pub guessed_dirs: Vec<Vec<u8>>,
}

/// A prefetched OPENDIR; `guess` when its failure is no answer.
struct PrefetchedDir {
    path: Vec<u8>,
    pending: PendingReply,
    guess: bool,
}

/// A connection to an SFTP server, usable from any number of concurrent tasks.
#[derive(Clone)]
pub struct Sftp {
    inner: Rc<Inner>,
}

/// A reply that will arrive; dropping it before it does discards the reply.
pub struct PendingReply {
    chan: Rc<Channel>,
    id: u32,
    done: bool,
}

impl Future for PendingReply {
    type Output = Result<Response>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = self.chan.poll_reply(self.id, cx);
        if r.is_ready() {
            self.done = true;
        }
        r
    }
}

impl PendingReply {
    /// Gives up on the reply, and the session may end without it: for requests whose
    /// loss does not matter (reads past the end of a listing).
    pub fn dispense(mut self) {
        self.done = true;
        self.chan.dispense(self.id);
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        if !self.done {
            self.chan.abandon(self.id);
        }
    }
}

/// An open remote file or directory. Closed with [`Sftp::close`]; if dropped instead (a
/// task failed or was cancelled), a CLOSE is still sent so no server handle leaks.
pub struct Handle {
    chan: Rc<Channel>,
    raw: Vec<u8>,
    path: Vec<u8>,
    closed: Cell<bool>,
    /// Opened only to read (a file, or a directory): its CLOSE's verdict does not matter.
    read_only: bool,
}

impl Handle {
    /// The server's opaque handle bytes.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The path it was opened with.
    pub fn path(&self) -> &[u8] {
        &self.path
    }

    fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handle({})", self.path_lossy())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.closed.get() {
            let req = Request::Close {
                handle: std::mem::take(&mut self.raw),
            };
            if let Ok(id) = self.chan.send(&req) {
                if self.read_only {
                    self.chan.dispense(id);
                } else {
                    self.chan.abandon(id);
                }
            }
        }
    }
}

/// The error for a STATUS reply where the operation needed another answer (or, from
/// [`expect_ok`], a failure). A success there answers nothing: a protocol error, not an
/// error whose message says "Success".
fn status_error(op: &'static str, path: &[u8], code: StatusCode, message: &[u8]) -> Error {
    if code == StatusCode::Ok {
        return Error::Protocol(format!(
            "unexpected {} status in reply to {op} '{}'",
            code.name(),
            String::from_utf8_lossy(path)
        ));
    }
    let message = if message.is_empty() {
        code.description().to_string()
    } else {
        String::from_utf8_lossy(message).into_owned()
    };
    Error::Status {
        op,
        path: String::from_utf8_lossy(path).into_owned(),
        code,
        message,
    }
}

fn unexpected(op: &'static str, r: &Response) -> Error {
    Error::Protocol(format!(
        "unexpected {} in reply to {op}",
        proto::kind::name(r.kind())
    ))
}

/// Interprets a reply that should be STATUS OK.
pub fn expect_ok_reply(op: &'static str, path: &[u8], r: Response) -> Result<()> {
    expect_ok(op, path, r)
}

fn expect_ok(op: &'static str, path: &[u8], r: Response) -> Result<()> {
    match r {
        Response::Status {
            code: StatusCode::Ok,
            ..
        } => Ok(()),
        Response::Status { code, message, .. } => Err(status_error(op, path, code, &message)),
        other => Err(unexpected(op, &other)),
    }
}

fn expect_attrs(op: &'static str, path: &[u8], r: Response) -> Result<FileAttributes> {
    match r {
        Response::Attrs(a) => Ok(a),
        Response::Status { code, message, .. } => Err(status_error(op, path, code, &message)),
        other => Err(unexpected(op, &other)),
    }
}

fn expect_name(op: &'static str, path: &[u8], r: Response) -> Result<Vec<NameEntry>> {
    match r {
        Response::Name(n) => Ok(n),
        Response::Status { code, message, .. } => Err(status_error(op, path, code, &message)),
        other => Err(unexpected(op, &other)),
    }
}

fn expect_one_name(op: &'static str, path: &[u8], r: Response) -> Result<Vec<u8>> {
    let mut names = expect_name(op, path, r)?;
    if names.len() != 1 {
        return Err(Error::Protocol(format!(
            "{op} returned {} names instead of one",
            names.len()
        )));
    }
    Ok(names.remove(0).filename)
}

fn expect_extended(op: &'static str, path: &[u8], r: Response) -> Result<Vec<u8>> {
    match r {
        Response::ExtendedReply(d) => Ok(d),
        Response::Status { code, message, .. } => Err(status_error(op, path, code, &message)),
        other => Err(unexpected(op, &other)),
    }
}

/// Interprets the reply to a READ: data, or `None` at end of file.
pub fn read_reply(path: &[u8], r: Response) -> Result<Option<Vec<u8>>> {
    match r {
        Response::Data(d) => Ok(Some(d)),
        Response::Status {
            code: StatusCode::Eof,
            ..
        } => Ok(None),
        Response::Status { code, message, .. } => Err(status_error("read", path, code, &message)),
        other => Err(unexpected("read", &other)),
    }
}

/// Reads from `file` at `offset` into the spare capacity of `dst` (at most `max` bytes,
/// fewer only at end of file), growing its length by the count read. A read that stops
/// short at exactly `end` bytes (where the caller knows the file ends) is taken as the end
/// without the read that would return 0.
fn pread_full(
    file: &std::fs::File,
    dst: &mut Vec<u8>,
    offset: u64,
    max: usize,
    end: Option<usize>,
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    dst.reserve(max);
    let want = max;
    let mut got = 0;
    while got < want {
        let spare = dst.spare_capacity_mut();
        // SAFETY: `spare` is `want - got` writable bytes owned by `dst`; the kernel writes
        // at most that many, and only the count it reports is marked initialised below.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                want - got,
                (offset + got as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        // SAFETY: the kernel initialised `n` bytes of the spare capacity.
        unsafe { dst.set_len(dst.len() + n as usize) };
        got += n as usize;
        if end == Some(got) {
            break;
        }
    }
    Ok(got)
}

/// Takes the prefetched request for `path` out of `list`.
fn take_prefetched(
    list: &RefCell<Vec<(Vec<u8>, PendingReply)>>,
    path: &[u8],
) -> Option<PendingReply> {
    let mut l = list.borrow_mut();
    let i = l.iter().position(|(q, _)| q == path)?;
    Some(l.swap_remove(i).1)
}

/// Names the operation and path of a request the channel refused to send (too large).
fn refused(e: Error, op: &'static str, path: &[u8]) -> Error {
    match e {
        Error::RequestTooLarge { size, max, .. } => Error::RequestTooLarge {
            op,
            path: String::from_utf8_lossy(path).into_owned(),
            size,
            max,
        },
        e => e,
    }
}

/// `None` for a request refused as too large, which is then not asked ahead.
fn skip_too_large(r: Result<PendingReply>) -> Result<Option<PendingReply>> {
    match r {
        Ok(p) => Ok(Some(p)),
        Err(Error::RequestTooLarge { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The operation a request performs, and its path when it has one (requests on a handle
/// have none; their callers name the handle's path).
fn subject(req: &Request) -> (&'static str, &[u8]) {
    match req {
        Request::Open { path, .. } => ("open", path),
        Request::Close { .. } => ("close", b""),
        Request::Read { .. } => ("read", b""),
        Request::Write { .. } => ("write", b""),
        Request::Lstat { path } => ("lstat", path),
        Request::Fstat { .. } => ("fstat", b""),
        Request::Setstat { path, .. } => ("setstat", path),
        Request::Fsetstat { .. } => ("fsetstat", b""),
        Request::Opendir { path } => ("opendir", path),
        Request::Readdir { .. } => ("readdir", b""),
        Request::Remove { path } => ("remove", path),
        Request::Mkdir { path, .. } => ("mkdir", path),
        Request::Rmdir { path } => ("rmdir", path),
        Request::Realpath { path } => ("realpath", path),
        Request::Stat { path } => ("stat", path),
        Request::Rename { old, .. } => ("rename", old),
        Request::Readlink { path } => ("readlink", path),
        Request::Symlink { link, .. } => ("symlink", link),
        Request::Extended(x) => match x {
            ExtendedRequest::PosixRename { old, .. } => ("posix-rename", old),
            ExtendedRequest::Statvfs { path } => ("statvfs", path),
            ExtendedRequest::Fstatvfs { .. } => ("fstatvfs", b""),
            ExtendedRequest::Hardlink { new, .. } => ("hardlink", new),
            ExtendedRequest::Fsync { .. } => ("fsync", b""),
            ExtendedRequest::Lsetstat { path, .. } => ("lsetstat", path),
            ExtendedRequest::Limits => ("limits", b""),
            ExtendedRequest::ExpandPath { path } => ("expand-path", path),
            ExtendedRequest::CopyData { .. } => ("copy-data", b""),
            ExtendedRequest::HomeDirectory { username } => ("home-directory", username),
            ExtendedRequest::Other { .. } => ("extended", b""),
        },
    }
}

/// Interprets the reply to a WRITE.
pub fn write_reply(path: &[u8], r: Response) -> Result<()> {
    expect_ok("write", path, r)
}

impl Sftp {
    /// Runs the SFTP handshake on a fresh channel: INIT/VERSION, with `limits@openssh.com`
    /// asked right behind INIT (see [`Sftp::limits`]).
    pub async fn handshake(chan: Rc<Channel>) -> Result<Sftp> {
        Self::handshake_prefetching(chan, &Prefetch::default()).await
    }

    /// [`Sftp::handshake`], also sending the STATs and OPENDIRs of `prefetch` right behind
    /// INIT, before the server's VERSION arrives: the answers come with it, saving a round
    /// trip for a caller that knows what it will look at first (a mirror's root, a `put`
    /// target). The first [`Sftp::stat`] / [`Sftp::opendir`] of each path takes its
    /// answer; a directory handle nobody took stays open until
    /// [`Sftp::discard_prefetched`] or the end of the session.
    ///
    /// Requests sent before VERSION are plain version 3 requests (any server speaking
    /// version 3 reads them in order after INIT); `limits@openssh.com` is asked that way
    /// too, and a server that does not know it answers OP_UNSUPPORTED, which is ignored.
    pub async fn handshake_prefetching(chan: Rc<Channel>, prefetch: &Prefetch) -> Result<Sftp> {
        chan.send_init()?;
        let early = |req: &Request| -> Result<PendingReply> {
            Ok(PendingReply {
                chan: chan.clone(),
                id: chan.send(req)?,
                done: false,
            })
        };
        let limits_pending = early(&Request::Extended(ExtendedRequest::Limits))?;
        let mut prefetched = Vec::new();
        for path in &prefetch.stats {
            // One the server would refuse is not asked: the STAT itself says why.
            let Some(pending) = skip_too_large(early(&Request::Stat { path: path.clone() }))?
            else {
                continue;
            };
            prefetched.push((path.clone(), pending));
        }
        let mut dirs = Vec::new();
        let guesses = prefetch.guessed_dirs.iter().map(|p| (p, true));
        for (path, guess) in prefetch.dirs.iter().map(|p| (p, false)).chain(guesses) {
            let Some(pending) = skip_too_large(early(&Request::Opendir { path: path.clone() }))?
            else {
                continue;
            };
            dirs.push(PrefetchedDir {
                path: path.clone(),
                pending,
                guess,
            });
        }
        let (version, raw_ext) = std::future::poll_fn(|cx| chan.poll_version(cx)).await?;
        if version < proto::SFTP_VERSION {
            return Err(Error::Protocol(format!(
                "server speaks SFTP version {version}, sftpipe needs 3"
            )));
        }
        let extensions: Vec<(String, String)> = raw_ext
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        log::debug!("server version {version}, extensions {extensions:?}");
        let symlink_order = symlink_order_of(&extensions);
        let limits = Rc::new(Cell::new(None));
        let mut sftp = Sftp {
            inner: Rc::new(Inner {
                chan: chan.clone(),
                version,
                extensions,
                symlink_order,
                limits_reply: None,
                limits: limits.clone(),
                prefetched_stats: RefCell::new(prefetched),
                prefetched_dirs: RefCell::new(dirs),
                pool: RefCell::new(None),
            }),
        };
        if sftp.has_extension(ext::LIMITS) {
            // Awaited only by whoever needs the answer: the round trip overlaps the
            // handshake's and the first operations' instead of preceding them.
            let pending = limits_pending;
            let reply = async move {
                let decoded = match pending.await {
                    Ok(r) => expect_extended("limits", b"", r)
                        .and_then(|payload| Ok(Limits::decode(&payload)?)),
                    Err(e) => Err(e),
                };
                match decoded {
                    Ok(l) => {
                        log::debug!("server limits {l:?}");
                        if l.max_packet_length > 0 {
                            let stated = usize::try_from(l.max_packet_length).unwrap_or(usize::MAX);
                            chan.set_max_packet(
                                stated.clamp(proto::DEFAULT_MAX_PACKET, MAX_PACKET_CAP),
                            );
                            // What we send, though, is held to exactly what it said.
                            chan.set_max_request(stated);
                        }
                        limits.set(Some(l));
                        Some(l)
                    }
                    Err(e) => {
                        log::warn!("limits@openssh.com failed ({e}); using defaults");
                        None
                    }
                }
            };
            if let Some(inner) = Rc::get_mut(&mut sftp.inner) {
                inner.limits_reply = Some(futures_util::FutureExt::shared(
                    futures_util::FutureExt::boxed_local(reply),
                ));
            }
        }
        Ok(sftp)
    }

    /// Waits for the server's `limits@openssh.com` answer (asked during the handshake) and
    /// returns it; `None` when the server does not offer the extension. The synchronous
    /// accessors below ([`Sftp::read_chunk`], ...) reflect it only once this completed:
    /// transfers await it first.
    pub async fn limits(&self) -> Option<Limits> {
        match &self.inner.limits_reply {
            Some(reply) => reply.clone().await,
            None => None,
        }
    }

    /// The session's further channels ([`crate::pool`]), when this is a session's first
    /// channel; transfers over it spread their files over them.
    pub fn pool(&self) -> Option<crate::pool::Pool> {
        self.inner.pool.borrow().clone()
    }

    /// Makes `pool` this channel's further channels (see [`Sftp::pool`]).
    pub fn attach_pool(&self, pool: crate::pool::Pool) {
        *self.inner.pool.borrow_mut() = Some(pool);
    }

    /// True when both handles use the same channel (requests on one are handled in
    /// order, see [`crate::pool`]).
    pub fn same_channel(&self, other: &Sftp) -> bool {
        Rc::ptr_eq(&self.inner.chan, &other.inner.chan)
    }

    /// Whether a STAT of `path` was sent with the handshake and not yet taken by
    /// [`Sftp::stat`] (whose answer then costs no round trip).
    pub fn has_prefetched_stat(&self, path: &[u8]) -> bool {
        self.inner
            .prefetched_stats
            .borrow()
            .iter()
            .any(|(q, _)| q == path)
    }

    /// The guessed directories ([`Prefetch::guessed_dirs`]) whose OPENDIR nobody took yet.
    pub fn guessed_dirs(&self) -> Vec<Vec<u8>> {
        self.inner
            .prefetched_dirs
            .borrow()
            .iter()
            .filter(|d| d.guess)
            .map(|d| d.path.clone())
            .collect()
    }

    /// Whether an OPENDIR of `path` was sent with the handshake and not yet taken by
    /// [`Sftp::opendir`].
    pub fn has_prefetched_dir(&self, path: &[u8]) -> bool {
        self.inner
            .prefetched_dirs
            .borrow()
            .iter()
            .any(|d| d.path == path)
    }

    /// Drops every prefetched answer nobody took, closing the directory handles among
    /// them.
    pub async fn discard_prefetched(&self) {
        self.inner.prefetched_stats.borrow_mut().clear();
        let dirs = std::mem::take(&mut *self.inner.prefetched_dirs.borrow_mut());
        for d in dirs {
            if let Ok(Response::Handle(raw)) = d.pending.await {
                let _ = self.close(self.handle(raw, &d.path, true)).await;
            }
        }
    }

    /// The protocol version the server announced.
    pub fn server_version(&self) -> u32 {
        self.inner.version
    }

    /// The extensions the server announced, as (name, version) pairs.
    pub fn extensions(&self) -> &[(String, String)] {
        &self.inner.extensions
    }

    /// The order in which this server takes SSH_FXP_SYMLINK's two paths. The rule:
    ///
    /// - a server that announces `symlink-order@rjk.greenend.org.uk` (gesftpserver) is
    ///   taken at its word: `linkpath-targetpath` is the draft's order, `targetpath-linkpath`
    ///   OpenSSH's;
    /// - any other server gets OpenSSH's order (target first): OpenSSH's sftp-server reads
    ///   it so since its beginning and keeps it for compatibility (its PROTOCOL file), and
    ///   servers made to work with OpenSSH's `sftp` follow it (paramiko's SFTPServer says so
    ///   in its source). So does a gesftpserver value sftpipe does not know, with a warning.
    ///
    /// A server that silently reads the draft's order would make the link under the
    /// target's name: [`Sftp::symlink`] checks the result, so that is an error, not a
    /// success.
    pub fn symlink_order(&self) -> SymlinkOrder {
        self.inner.symlink_order
    }

    /// True when the server announced `name` with a version this client understands.
    pub fn has_extension(&self, name: &str) -> bool {
        let Some(want) = ext::understood_version(name) else {
            return false;
        };
        self.inner
            .extensions
            .iter()
            .any(|(k, v)| k == name && v == want)
    }

    /// The server's `limits@openssh.com` answer, if it offered the extension and the
    /// answer has arrived (see [`Sftp::limits`]).
    pub fn server_limits(&self) -> Option<Limits> {
        self.inner.limits.get()
    }

    /// Bytes per READ request by default: the most the server serves, else 32 KiB.
    pub fn read_chunk(&self) -> usize {
        match self.inner.limits.get() {
            Some(l) if l.max_read_length > 0 => self.max_read_chunk(),
            _ => self.max_read_chunk().min(DEFAULT_CHUNK),
        }
    }

    /// Bytes per WRITE request by default: the most the server takes, else 32 KiB.
    pub fn write_chunk(&self) -> usize {
        match self.inner.limits.get() {
            Some(l) if l.max_write_length > 0 => self.max_write_chunk(),
            _ => self.max_write_chunk().min(DEFAULT_CHUNK),
        }
    }

    /// The most data one READ may ask for: the server's `max-read-length`, and what fits
    /// its largest packet (see [`Sftp::max_request`]), at most [`MAX_CHUNK`].
    pub fn max_read_chunk(&self) -> usize {
        let limit = self.inner.limits.get().map_or(0, |l| l.max_read_length);
        self.chunk_within(limit, DATA_OVERHEAD)
    }

    /// The most data one WRITE may carry: the server's `max-write-length`, and what fits
    /// its largest packet with a handle of up to 256 bytes, at most [`MAX_CHUNK`].
    pub fn max_write_chunk(&self) -> usize {
        let limit = self.inner.limits.get().map_or(0, |l| l.max_write_length);
        self.chunk_within(limit, WRITE_OVERHEAD)
    }

    /// `limit` (0: none stated) and the largest packet less `overhead`, within
    /// [`MIN_CHUNK`]..=[`MAX_CHUNK`].
    fn chunk_within(&self, limit: u64, overhead: usize) -> usize {
        let by_packet = self.max_request().saturating_sub(overhead);
        let by_limit = match usize::try_from(limit) {
            Ok(0) | Err(_) => usize::MAX,
            Ok(n) => n,
        };
        by_packet.min(by_limit).clamp(MIN_CHUNK, MAX_CHUNK)
    }

    /// The largest packet sent, its length field included: the server's
    /// `max-packet-length` once known (see [`Sftp::limits`]), else 256 KiB (OpenSSH's).
    /// A larger request fails alone with [`Error::RequestTooLarge`], unsent.
    pub fn max_request(&self) -> usize {
        self.inner.chan.max_request()
    }

    /// How many handles the server allows open at once, if it said.
    pub fn max_open_handles(&self) -> Option<u64> {
        self.inner
            .limits
            .get()
            .and_then(|l| (l.max_open_handles > 0).then_some(l.max_open_handles))
    }

    /// The I/O channel (byte counters, stderr tail).
    #[doc(hidden)] // low level: see crate::lowlevel
    pub fn channel(&self) -> &Rc<Channel> {
        &self.inner.chan
    }

    /// Queues a request as soon as the outgoing queue has room and returns its reply to
    /// await. Requests are sent in the order `submit` is called, so pipelined WRITEs and
    /// READs leave in offset order.
    #[doc(hidden)] // low level: see crate::lowlevel
    pub async fn submit(&self, req: &Request) -> Result<PendingReply> {
        let chan = &self.inner.chan;
        std::future::poll_fn(|cx| chan.poll_space(cx)).await?;
        let id = chan.send(req).map_err(|e| {
            let (op, path) = subject(req);
            refused(e, op, path)
        })?;
        Ok(PendingReply {
            chan: chan.clone(),
            id,
            done: false,
        })
    }

    /// Queues a WRITE from a borrowed buffer (one copy, into the outgoing queue).
    #[doc(hidden)] // low level: see crate::lowlevel
    pub async fn submit_write(&self, h: &Handle, offset: u64, data: &[u8]) -> Result<PendingReply> {
        let chan = &self.inner.chan;
        std::future::poll_fn(|cx| chan.poll_space(cx)).await?;
        let id = chan
            .send_with(|id, out| proto::encode_write(id, &h.raw, offset, data, out))
            .map_err(|e| refused(e, "write", &h.path))?;
        Ok(PendingReply {
            chan: chan.clone(),
            id,
            done: false,
        })
    }

    /// Queues CLOSE for `h` and returns its reply to await; the handle counts as closed
    /// from then on (not before: a handle whose CLOSE was never queued, because this was
    /// dropped while waiting for room or failed, sends it when dropped).
    #[doc(hidden)] // low level: see crate::lowlevel
    pub async fn submit_close(&self, h: &Handle) -> Result<PendingReply> {
        let p = self
            .submit_on(
                h,
                &Request::Close {
                    handle: h.raw.clone(),
                },
            )
            .await?;
        h.closed.set(true);
        Ok(p)
    }

    /// Queues a WRITE whose data is read by `pread` from `file` at `file_offset`, straight
    /// into the outgoing queue (no intermediate buffer): up to `max` bytes, written at
    /// `offset` in the remote file. Returns `None` at end of file, else the reply to await
    /// and the byte count.
    #[doc(hidden)] // low level: see crate::lowlevel
    pub async fn submit_write_from_file(
        &self,
        h: &Handle,
        offset: u64,
        file: &std::fs::File,
        file_offset: u64,
        max: usize,
    ) -> Result<Option<(PendingReply, usize)>> {
        self.submit_write_from_file_to(h, offset, file, file_offset, max, None)
            .await
    }

    /// [`Sftp::submit_write_from_file`] where the file is expected to end `end` bytes past
    /// `file_offset`: asked for more (`max` > `end`), a read stopping there is its end, and
    /// no further read confirms it (one system call less per small file).
    pub(crate) async fn submit_write_from_file_to(
        &self,
        h: &Handle,
        offset: u64,
        file: &std::fs::File,
        file_offset: u64,
        max: usize,
        end: Option<usize>,
    ) -> Result<Option<(PendingReply, usize)>> {
        let chan = &self.inner.chan;
        std::future::poll_fn(|cx| chan.poll_space(cx)).await?;
        let mut count = 0;
        let id = chan.try_send_with(|id, out| {
            let (n, queued) = proto::encode_write_with(id, &h.raw, offset, max, out, |dst, max| {
                pread_full(file, dst, file_offset, max, end)
            })
            .map_err(|e| Error::local("cannot read the file being uploaded", e))?;
            count = n;
            Ok(queued)
        });
        let id = id.map_err(|e| refused(e, "write", &h.path))?;
        Ok(id.map(|id| {
            (
                PendingReply {
                    chan: chan.clone(),
                    id,
                    done: false,
                },
                count,
            )
        }))
    }

    /// Queues a WRITE of `len` bytes of `file` from `file_offset` to `offset` of `h`,
    /// without reading them: the reactor moves them from the file to ssh's socket when it
    /// takes them (by sendfile where the system has it), so they never pass through our
    /// memory. `len` must be known to be in the file (from its size); if the file is
    /// shorter by the time they are sent, the reply is an error.
    #[doc(hidden)] // low level: see crate::lowlevel
    pub async fn submit_write_file_region(
        &self,
        h: &Handle,
        offset: u64,
        file: &std::rc::Rc<std::fs::File>,
        file_offset: u64,
        len: u32,
    ) -> Result<PendingReply> {
        let chan = &self.inner.chan;
        std::future::poll_fn(|cx| chan.poll_space(cx)).await?;
        let id = chan
            .send_with_file(
                |id, out| proto::encode_write_header(id, &h.raw, offset, len, out),
                file,
                file_offset,
                len as usize,
            )
            .map_err(|e| refused(e, "write", &h.path))?;
        Ok(PendingReply {
            chan: chan.clone(),
            id,
            done: false,
        })
    }

    /// Sends a request and waits for its reply.
    #[doc(hidden)] // low level: see crate::lowlevel
    pub async fn call(&self, req: Request) -> Result<Response> {
        self.submit(&req).await?.await
    }

    /// [`Sftp::submit`] of a request on `h`, naming its path if it is refused.
    async fn submit_on(&self, h: &Handle, req: &Request) -> Result<PendingReply> {
        let (op, _) = subject(req);
        self.submit(req).await.map_err(|e| refused(e, op, &h.path))
    }

    fn handle(&self, raw: Vec<u8>, path: &[u8], read_only: bool) -> Handle {
        Handle {
            chan: self.inner.chan.clone(),
            raw,
            path: path.to_vec(),
            closed: Cell::new(false),
            read_only,
        }
    }

    /// Opens a file. `attrs` apply when the file is created (e.g. its permissions).
    pub async fn open(
        &self,
        path: impl AsRef<[u8]>,
        flags: OpenFlags,
        attrs: &FileAttributes,
    ) -> Result<Handle> {
        let path = path.as_ref();
        let r = self
            .call(Request::Open {
                path: path.to_vec(),
                flags,
                attrs: attrs.clone(),
            })
            .await?;
        match r {
            Response::Handle(raw) => Ok(self.handle(raw, path, flags == OpenFlags::READ)),
            Response::Status { code, message, .. } => {
                Err(status_error("open", path, code, &message))
            }
            other => Err(unexpected("open", &other)),
        }
    }

    /// Closes a file or directory handle; the server's verdict matters for writes (a
    /// failed CLOSE can mean lost data).
    pub async fn close(&self, h: Handle) -> Result<()> {
        // Dropped before the CLOSE is queued, `h` still sends it as it drops.
        let r = self.submit_close(&h).await?.await?;
        expect_ok("close", &h.path, r)
    }

    /// Reads up to `len` bytes at `offset`; `None` at end of file. A short read is not an
    /// error: the server may return less than asked.
    pub async fn read(&self, h: &Handle, offset: u64, len: u32) -> Result<Option<Vec<u8>>> {
        let r = self
            .submit_on(
                h,
                &Request::Read {
                    handle: h.raw.clone(),
                    offset,
                    len,
                },
            )
            .await?
            .await?;
        read_reply(&h.path, r)
    }

    /// Writes `data` at `offset`.
    pub async fn write(&self, h: &Handle, offset: u64, data: &[u8]) -> Result<()> {
        let r = self.submit_write(h, offset, data).await?.await?;
        write_reply(&h.path, r)
    }

    /// Attributes, following symlinks.
    pub async fn stat(&self, path: impl AsRef<[u8]>) -> Result<FileAttributes> {
        let path = path.as_ref();
        if let Some(pending) = take_prefetched(&self.inner.prefetched_stats, path) {
            return expect_attrs("stat", path, pending.await?);
        }
        let r = self
            .call(Request::Stat {
                path: path.to_vec(),
            })
            .await?;
        expect_attrs("stat", path, r)
    }

    /// Attributes of the link itself.
    pub async fn lstat(&self, path: impl AsRef<[u8]>) -> Result<FileAttributes> {
        let path = path.as_ref();
        let r = self
            .call(Request::Lstat {
                path: path.to_vec(),
            })
            .await?;
        expect_attrs("lstat", path, r)
    }

    /// Attributes of an open file.
    pub async fn fstat(&self, h: &Handle) -> Result<FileAttributes> {
        let r = self
            .submit_on(
                h,
                &Request::Fstat {
                    handle: h.raw.clone(),
                },
            )
            .await?
            .await?;
        expect_attrs("fstat", &h.path, r)
    }

    /// Changes attributes (mode, owner, times, size) by path.
    pub async fn setstat(&self, path: impl AsRef<[u8]>, attrs: &FileAttributes) -> Result<()> {
        let path = path.as_ref();
        let r = self
            .call(Request::Setstat {
                path: path.to_vec(),
                attrs: attrs.clone(),
            })
            .await?;
        expect_ok("setstat", path, r)
    }

    /// Changes attributes of an open file.
    pub async fn fsetstat(&self, h: &Handle, attrs: &FileAttributes) -> Result<()> {
        let r = self
            .submit_on(
                h,
                &Request::Fsetstat {
                    handle: h.raw.clone(),
                    attrs: attrs.clone(),
                },
            )
            .await?
            .await?;
        expect_ok("fsetstat", &h.path, r)
    }

    /// Changes attributes without following a final symlink (`lsetstat@openssh.com`).
    pub async fn lsetstat(&self, path: impl AsRef<[u8]>, attrs: &FileAttributes) -> Result<()> {
        let path = path.as_ref();
        self.require(ext::LSETSTAT)?;
        let r = self
            .call(Request::Extended(ExtendedRequest::Lsetstat {
                path: path.to_vec(),
                attrs: attrs.clone(),
            }))
            .await?;
        expect_ok("lsetstat", path, r)
    }

    /// Sets permission bits.
    pub async fn chmod(&self, path: impl AsRef<[u8]>, mode: u32) -> Result<()> {
        self.setstat(path, &FileAttributes::with_permissions(mode & 0o7777))
            .await
            .map_err(|e| relabel(e, "chmod"))
    }

    /// Sets owner and group.
    pub async fn chown(&self, path: impl AsRef<[u8]>, uid: u32, gid: u32) -> Result<()> {
        let attrs = FileAttributes {
            uid_gid: Some((uid, gid)),
            ..Default::default()
        };
        self.setstat(path, &attrs)
            .await
            .map_err(|e| relabel(e, "chown"))
    }

    /// Sets access and modification times (seconds since the epoch).
    pub async fn set_times(&self, path: impl AsRef<[u8]>, atime: u32, mtime: u32) -> Result<()> {
        let attrs = FileAttributes {
            atime_mtime: Some((atime, mtime)),
            ..Default::default()
        };
        self.setstat(path, &attrs)
            .await
            .map_err(|e| relabel(e, "utimes"))
    }

    /// Truncates or extends a file to `size` bytes.
    pub async fn truncate(&self, path: impl AsRef<[u8]>, size: u64) -> Result<()> {
        let attrs = FileAttributes {
            size: Some(size),
            ..Default::default()
        };
        self.setstat(path, &attrs)
            .await
            .map_err(|e| relabel(e, "truncate"))
    }

    /// Opens a directory for [`Sftp::readdir`].
    pub async fn opendir(&self, path: impl AsRef<[u8]>) -> Result<Handle> {
        let path = path.as_ref();
        let prefetched = {
            let mut dirs = self.inner.prefetched_dirs.borrow_mut();
            let i = dirs.iter().position(|d| d.path == path);
            i.map(|i| dirs.swap_remove(i))
        };
        let r = match prefetched {
            // A guess that found nothing is an answer; any other failure of a guess (the
            // server's handle limit, say) is not.
            Some(d) => match d.pending.await? {
                r @ (Response::Handle(_)
                | Response::Status {
                    code: StatusCode::NoSuchFile,
                    ..
                }) => r,
                _ if d.guess => {
                    self.call(Request::Opendir {
                        path: path.to_vec(),
                    })
                    .await?
                }
                other => other,
            },
            None => {
                self.call(Request::Opendir {
                    path: path.to_vec(),
                })
                .await?
            }
        };
        match r {
            Response::Handle(raw) => Ok(self.handle(raw, path, true)),
            Response::Status { code, message, .. } => {
                Err(status_error("opendir", path, code, &message))
            }
            other => Err(unexpected("opendir", &other)),
        }
    }

    /// The next batch of entries; `None` when the directory is exhausted.
    pub async fn readdir(&self, h: &Handle) -> Result<Option<Vec<NameEntry>>> {
        let r = self
            .submit_on(
                h,
                &Request::Readdir {
                    handle: h.raw.clone(),
                },
            )
            .await?
            .await?;
        match r {
            Response::Name(n) => Ok(Some(n)),
            Response::Status {
                code: StatusCode::Eof,
                ..
            } => Ok(None),
            Response::Status { code, message, .. } => {
                Err(status_error("readdir", &h.path, code, &message))
            }
            other => Err(unexpected("readdir", &other)),
        }
    }

    /// Every entry of a directory with its attributes, without `.` and `..`.
    ///
    /// Several READDIRs are kept in flight on the handle (the server answers them in
    /// order), and CLOSE is sent without waiting, so a directory costs about two round
    /// trips however many batches it takes.
    pub async fn read_dir(&self, path: impl AsRef<[u8]>) -> Result<Vec<NameEntry>> {
        const READDIRS_IN_FLIGHT: usize = 4;
        let h = self.opendir(path).await?;
        let mut all = Vec::new();
        let mut pending = std::collections::VecDeque::new();
        let readdir = Request::Readdir {
            handle: h.raw.clone(),
        };
        let mut eof = false;
        while !eof {
            while pending.len() < READDIRS_IN_FLIGHT {
                pending.push_back(self.submit_on(&h, &readdir).await?);
            }
            let Some(reply) = pending.pop_front() else {
                break;
            };
            match reply.await? {
                Response::Name(batch) => all.extend(
                    batch
                        .into_iter()
                        .filter(|e| e.filename != b"." && e.filename != b".."),
                ),
                Response::Status {
                    code: StatusCode::Eof,
                    ..
                } => eof = true,
                Response::Status { code, message, .. } => {
                    return Err(status_error("readdir", &h.path, code, &message));
                }
                other => return Err(unexpected("readdir", &other)),
            }
        }
        // The READDIRs still in flight answer EOF: their replies are not needed, not even
        // before the session ends; dropping the handle sends its CLOSE without waiting.
        for p in pending {
            p.dispense();
        }
        drop(h);
        Ok(all)
    }

    /// Removes a file (or symlink).
    pub async fn remove(&self, path: impl AsRef<[u8]>) -> Result<()> {
        let path = path.as_ref();
        let r = self
            .call(Request::Remove {
                path: path.to_vec(),
            })
            .await?;
        expect_ok("remove", path, r)
    }

    /// Creates a directory.
    pub async fn mkdir(&self, path: impl AsRef<[u8]>, attrs: &FileAttributes) -> Result<()> {
        let path = path.as_ref();
        let r = self
            .call(Request::Mkdir {
                path: path.to_vec(),
                attrs: attrs.clone(),
            })
            .await?;
        expect_ok("mkdir", path, r)
    }

    /// Removes an empty directory.
    pub async fn rmdir(&self, path: impl AsRef<[u8]>) -> Result<()> {
        let path = path.as_ref();
        let r = self
            .call(Request::Rmdir {
                path: path.to_vec(),
            })
            .await?;
        expect_ok("rmdir", path, r)
    }

    /// The canonical absolute form of a path.
    pub async fn realpath(&self, path: impl AsRef<[u8]>) -> Result<Vec<u8>> {
        let path = path.as_ref();
        let r = self
            .call(Request::Realpath {
                path: path.to_vec(),
            })
            .await?;
        expect_one_name("realpath", path, r)
    }

    /// Like realpath, also expanding `~` and `~user` (`expand-path@openssh.com`); falls
    /// back to realpath when the server lacks the extension.
    pub async fn expand_path(&self, path: impl AsRef<[u8]>) -> Result<Vec<u8>> {
        let path = path.as_ref();
        if !self.has_extension(ext::EXPAND_PATH) {
            return self.realpath(path).await;
        }
        let r = self
            .call(Request::Extended(ExtendedRequest::ExpandPath {
                path: path.to_vec(),
            }))
            .await?;
        expect_one_name("expand-path", path, r)
    }

    /// The home directory of `user` (`home-directory` extension).
    pub async fn home_directory(&self, user: &str) -> Result<Vec<u8>> {
        self.require(ext::HOME_DIRECTORY)?;
        let r = self
            .call(Request::Extended(ExtendedRequest::HomeDirectory {
                username: user.as_bytes().to_vec(),
            }))
            .await?;
        expect_one_name("home-directory", user.as_bytes(), r)
    }

    /// Renames with the plain SFTP v3 RENAME, which fails when `new` exists.
    pub async fn rename(&self, old: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Result<()> {
        let (old, new) = (old.as_ref(), new.as_ref());
        let r = self
            .call(Request::Rename {
                old: old.to_vec(),
                new: new.to_vec(),
            })
            .await?;
        expect_ok("rename", old, r)
    }

    /// Renames replacing `new` atomically (`posix-rename@openssh.com`).
    pub async fn posix_rename(&self, old: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Result<()> {
        let (old, new) = (old.as_ref(), new.as_ref());
        self.require(ext::POSIX_RENAME)?;
        let r = self
            .call(Request::Extended(ExtendedRequest::PosixRename {
                old: old.to_vec(),
                new: new.to_vec(),
            }))
            .await?;
        expect_ok("posix-rename", old, r)
    }

    /// Renames `old` onto `new`, replacing it: posix-rename when offered (atomic), else a
    /// plain rename, else (when `new` exists) remove then rename, with a warning that the
    /// target was briefly missing.
    pub async fn rename_replace(&self, old: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Result<()> {
        let (old, new) = (old.as_ref(), new.as_ref());
        if self.has_extension(ext::POSIX_RENAME) {
            return self.posix_rename(old, new).await;
        }
        match self.rename(old, new).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.status(), Some(StatusCode::Failure)) => {
                log::warn!(
                    "server lacks posix-rename: replacing {} by remove + rename (not atomic)",
                    String::from_utf8_lossy(new)
                );
                match self.remove(new).await {
                    Ok(()) => {}
                    Err(r) if r.is_not_found() => return Err(e),
                    Err(r) => return Err(r),
                }
                self.rename(old, new).await
            }
            Err(e) => Err(e),
        }
    }

    /// Moves `old` onto `new` as [`Sftp::rename_replace`] does, for an entry of unknown
    /// kind: first an LSTAT and a READLINK of `old` (one round trip) make sure a symlink is
    /// not moved on a server whose LSTAT follows links (ProFTPD): its RENAME follows them
    /// too, and would move the file the link points to. That is refused
    /// ([`Error::Unsupported`]), never done.
    pub async fn move_entry(&self, old: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Result<()> {
        let (old, new) = (old.as_ref(), new.as_ref());
        let attrs = self.submit(&Request::Lstat { path: old.to_vec() }).await?;
        let link = self
            .submit(&Request::Readlink { path: old.to_vec() })
            .await?;
        let attrs = expect_attrs("lstat", old, attrs.await?)?;
        let is_link = expect_one_name("readlink", old, link.await?).is_ok();
        if is_link && !attrs.is_symlink() {
            return Err(Error::Unsupported(format!(
                "{} is a symlink, but the server's LSTAT follows symlinks (as ProFTPD's \
                 does), and so does its RENAME: moving it would move the file it points to \
                 instead; not moved",
                String::from_utf8_lossy(old)
            )));
        }
        self.rename_replace(old, new).await
    }

    /// Reads a symlink's target.
    pub async fn readlink(&self, path: impl AsRef<[u8]>) -> Result<Vec<u8>> {
        let path = path.as_ref();
        let r = self
            .call(Request::Readlink {
                path: path.to_vec(),
            })
            .await?;
        expect_one_name("readlink", path, r)
    }

    /// Creates a symlink at `link` pointing to `target`, with the arguments in the order the
    /// server takes ([`Sftp::symlink_order`]), and checks that `link` is a symlink now: a
    /// READLINK and an LSTAT go right behind the SYMLINK, in the same round trip, and the
    /// READLINK must succeed (its text is not compared: ProFTPD answers with an absolute
    /// path) or the LSTAT see a symlink (ProFTPD's LSTAT follows links; a chrooted
    /// asyncssh refuses READLINK of a relative link). A server that takes the arguments the other way
    /// round answers OK and makes a link named after the target; that is an error here,
    /// never a success.
    pub async fn symlink(&self, target: impl AsRef<[u8]>, link: impl AsRef<[u8]>) -> Result<()> {
        self.symlink_with_mtime(target, link, None).await
    }

    /// [`Sftp::symlink`], also setting the link's own access and modification times to
    /// `mtime` with `lsetstat@openssh.com` when the server offers it (nothing is set when it
    /// does not), sent between the SYMLINK and the READLINK: still one round trip. Meant for a
    /// `link` that does not exist: if it does, the SYMLINK fails, and the time of what is
    /// there has been set.
    pub async fn symlink_with_mtime(
        &self,
        target: impl AsRef<[u8]>,
        link: impl AsRef<[u8]>,
        mtime: Option<u32>,
    ) -> Result<()> {
        let (target, link) = (target.as_ref(), link.as_ref());
        let made = self
            .submit(&Request::Symlink {
                target: target.to_vec(),
                link: link.to_vec(),
                order: self.inner.symlink_order,
            })
            .await?;
        let timed = match mtime.filter(|_| self.has_extension(ext::LSETSTAT)) {
            Some(t) => Some(
                self.submit(&Request::Extended(ExtendedRequest::Lsetstat {
                    path: link.to_vec(),
                    attrs: FileAttributes {
                        atime_mtime: Some((t, t)),
                        ..Default::default()
                    },
                }))
                .await?,
            ),
            None => None,
        };
        let check = self
            .submit(&Request::Readlink {
                path: link.to_vec(),
            })
            .await?;
        // Asked too because a chrooted asyncssh refuses READLINK of a relative link it
        // made: there, an LSTAT that sees a symlink is the proof.
        let kind = self
            .submit(&Request::Lstat {
                path: link.to_vec(),
            })
            .await?;
        expect_ok("symlink", link, made.await?)?;
        if let Some(timed) = timed {
            expect_ok("lsetstat", link, timed.await?)?;
        }
        let read = expect_one_name("readlink", link, check.await?);
        let is_link = expect_attrs("lstat", link, kind.await?).is_ok_and(|a| a.is_symlink());
        match read {
            Ok(_) => Ok(()),
            Err(_) if is_link => Ok(()),
            Err(e) => Err(Error::Protocol(format!(
                "the server said it made the symlink {}, but there is none ({e}): it may \
                 take SYMLINK's paths the other way round (they went in {} order) and have \
                 made a link named {} instead",
                String::from_utf8_lossy(link),
                match self.inner.symlink_order {
                    SymlinkOrder::TargetFirst => "OpenSSH's",
                    SymlinkOrder::LinkFirst => "the draft's",
                },
                String::from_utf8_lossy(target),
            ))),
        }
    }

    /// Creates a hard link `new` to `old` (`hardlink@openssh.com`).
    pub async fn hardlink(&self, old: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Result<()> {
        let (old, new) = (old.as_ref(), new.as_ref());
        self.require(ext::HARDLINK)?;
        let r = self
            .call(Request::Extended(ExtendedRequest::Hardlink {
                old: old.to_vec(),
                new: new.to_vec(),
            }))
            .await?;
        expect_ok("hardlink", new, r)
    }

    /// File system statistics (`statvfs@openssh.com`).
    pub async fn statvfs(&self, path: impl AsRef<[u8]>) -> Result<Statvfs> {
        let path = path.as_ref();
        self.require(ext::STATVFS)?;
        let r = self
            .call(Request::Extended(ExtendedRequest::Statvfs {
                path: path.to_vec(),
            }))
            .await?;
        Ok(Statvfs::decode(&expect_extended("statvfs", path, r)?)?)
    }

    /// File system statistics of an open file (`fstatvfs@openssh.com`).
    pub async fn fstatvfs(&self, h: &Handle) -> Result<Statvfs> {
        self.require(ext::FSTATVFS)?;
        let r = self
            .submit_on(
                h,
                &Request::Extended(ExtendedRequest::Fstatvfs {
                    handle: h.raw.clone(),
                }),
            )
            .await?
            .await?;
        Ok(Statvfs::decode(&expect_extended("fstatvfs", &h.path, r)?)?)
    }

    /// Flushes an open file to stable storage (`fsync@openssh.com`).
    pub async fn fsync(&self, h: &Handle) -> Result<()> {
        self.require(ext::FSYNC)?;
        let r = self
            .submit_on(
                h,
                &Request::Extended(ExtendedRequest::Fsync {
                    handle: h.raw.clone(),
                }),
            )
            .await?
            .await?;
        expect_ok("fsync", &h.path, r)
    }

    /// Server-side copy of `length` bytes (0 = to end of file) between two open handles
    /// (`copy-data` extension).
    pub async fn copy_data(
        &self,
        from: &Handle,
        from_offset: u64,
        length: u64,
        to: &Handle,
        to_offset: u64,
    ) -> Result<()> {
        self.require(ext::COPY_DATA)?;
        let req = Request::Extended(ExtendedRequest::CopyData {
            read_handle: from.raw.clone(),
            read_offset: from_offset,
            length,
            write_handle: to.raw.clone(),
            write_offset: to_offset,
        });
        let r = self.submit_on(to, &req).await?.await?;
        expect_ok("copy-data", &to.path, r)
    }

    fn require(&self, name: &str) -> Result<()> {
        if self.has_extension(name) {
            Ok(())
        } else {
            Err(Error::Unsupported(format!(
                "the server does not offer the {name} extension"
            )))
        }
    }
}

/// The rule of [`Sftp::symlink_order`], applied to a server's VERSION extensions.
fn symlink_order_of(extensions: &[(String, String)]) -> SymlinkOrder {
    let Some((_, value)) = extensions
        .iter()
        .find(|(name, _)| name == SymlinkOrder::EXTENSION)
    else {
        return SymlinkOrder::TargetFirst;
    };
    SymlinkOrder::from_announced(value.as_bytes()).unwrap_or_else(|| {
        log::warn!(
            "the server announces {} {value:?}, which sftpipe does not know; \
             sending symlinks in OpenSSH's order",
            SymlinkOrder::EXTENSION
        );
        SymlinkOrder::TargetFirst
    })
}

fn relabel(e: Error, op: &'static str) -> Error {
    match e {
        Error::RequestTooLarge {
            path, size, max, ..
        } => Error::RequestTooLarge {
            op,
            path,
            size,
            max,
        },
        Error::Status {
            path,
            code,
            message,
            ..
        } => Error::Status {
            op,
            path,
            code,
            message,
        },
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_status_where_an_answer_was_due_is_a_protocol_error() {
        let ok = || Response::Status {
            code: StatusCode::Ok,
            message: b"Success".to_vec(),
            language: Vec::new(),
        };
        let errors = [
            expect_attrs("stat", b"/x", ok()).unwrap_err(),
            expect_name("readdir", b"/x", ok()).unwrap_err(),
            read_reply(b"/x", ok()).unwrap_err(),
        ];
        for e in errors {
            assert!(matches!(e, Error::Protocol(_)), "{e:?}");
            let text = e.to_string();
            assert!(
                text.contains("SSH_FX_OK") && text.contains("'/x'"),
                "{text}"
            );
        }
        assert!(expect_ok("write", b"/x", ok()).is_ok());
    }
}
