//! The blocking API: a [`Session`] owns the runtime and the connection and runs each
//! operation as a task to completion.

use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::client::{Handle, Sftp};
use crate::error::{Error, Result};
use crate::pool::Pool;
use crate::proto::{FileAttributes, Limits, NameEntry, OpenFlags, Statvfs};
use crate::reactor::Channel;
use crate::task::Runtime;
use crate::transfer::{Progress, Report, Transfer, TransferOptions};
use crate::transport::ConnectOptions;
use std::path::Path;
use std::rc::Rc;

/// A connection to one SFTP server with blocking methods.
///
/// ```no_run
/// use sftpipe::{ConnectOptions, Session};
/// # fn main() -> sftpipe::Result<()> {
/// let session = Session::connect(&ConnectOptions::host("backup.example.org"))?;
/// session.mkdir_all("/srv/backup/2026")?;
/// for entry in session.read_dir("/srv/backup")? {
///     println!("{} {:?}", entry.name_lossy(), entry.attrs.size);
/// }
/// # Ok(()) }
/// ```
pub struct Session {
    rt: Runtime,
    sftp: Sftp,
    options: ConnectOptions,
}

impl Session {
    /// Starts ssh (or the `-D` server command), runs the SFTP handshake and returns a
    /// ready session. Fails with [`Error::Connection`] carrying ssh's exit status and last
    /// stderr lines when ssh cannot connect or authenticate (or a signal was caught, see
    /// [`crate::interrupt`]).
    pub fn connect(options: &ConnectOptions) -> Result<Session> {
        if let Some(reason) = crate::interrupt::interrupted_message() {
            return Err(Error::Connection(crate::ConnectionError {
                reason,
                stderr_tail: Vec::new(),
                unreached: None,
            }));
        }
        let resolved = options.resolve()?;
        let sharing = crate::pool::Sharing::choose(options, &resolved)?;
        let master = sharing.master_options();
        let rt = Runtime::new().map_err(|e| Error::local("creating the event loop", e))?;
        let pool = Pool::new(rt.reactor(), options, resolved.clone(), sharing);
        let pipes = resolved.spawn(&master, &options.label())?;
        let chan = Channel::new(rt.reactor(), pipes)?;
        chan.set_stall_timeout(options.stall_timeout(), options.peer());
        let handshake = async {
            let sftp = Sftp::handshake_prefetching(chan.clone(), &options.prefetch).await?;
            sftp.attach_pool(pool.clone());
            if pool.eager() {
                // Eager: every channel is there (or refused) before the first operation.
                pool.open_all();
                while pool.opening() > 0 {
                    pool.changed(pool.generation()).await;
                }
            }
            Ok::<_, Error>(sftp)
        };
        let sftp = match rt.block_on(handshake) {
            Ok(s) => s,
            Err(mut e) => {
                if let Error::Connection(c) = &mut e
                    && !chan.version_seen()
                {
                    c.unreached = Some(options.peer());
                }
                chan.shutdown(rt.reactor());
                pool.remove_control_dir();
                return Err(e);
            }
        };
        Ok(Session {
            rt,
            sftp,
            options: options.clone(),
        })
    }

    /// The asynchronous handle, for running many operations concurrently with
    /// [`Session::run`].
    pub fn sftp(&self) -> &Sftp {
        &self.sftp
    }

    /// How this session was connected.
    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }

    /// The event loop, to register further descriptors ([`crate::lowlevel::AsyncFd`]).
    #[doc(hidden)] // low level: see crate::lowlevel
    pub fn reactor(&self) -> &Rc<crate::reactor::Reactor> {
        self.rt.reactor()
    }

    /// Runs a future (and every task it spawns) on this session's runtime, on this
    /// thread. Futures of [`Sftp`] and [`Transfer`] only make progress inside it (or use
    /// [`crate::Client`], whose calls run anywhere).
    ///
    /// ```no_run
    /// use sftpipe::{ConnectOptions, Session, task};
    /// # fn main() -> sftpipe::Result<()> {
    /// let session = Session::connect(&ConnectOptions::host("h"))?;
    /// let sftp = session.sftp().clone();
    /// let total = session.run(async move {
    ///     // 100 STATs in flight at once over the one connection.
    ///     let stats: Vec<_> = (0..100)
    ///         .map(|i| {
    ///             let sftp = sftp.clone(); // each task owns its handle ('static)
    ///             task::spawn(async move { sftp.stat(format!("/data/{i}")).await })
    ///         })
    ///         .collect();
    ///     let mut total = 0;
    ///     for stat in stats {
    ///         total += stat.await?.size.unwrap_or(0);
    ///     }
    ///     Ok::<_, sftpipe::Error>(total)
    /// })?;
    /// println!("{total} bytes");
    /// # Ok(()) }
    /// ```
    pub fn run<F: Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    /// The server's limits, when it offers `limits@openssh.com`.
    pub fn limits(&self) -> Option<Limits> {
        self.run(self.sftp.limits())
    }

    /// Attributes, following symlinks.
    pub fn stat(&self, path: impl AsRef<[u8]>) -> Result<FileAttributes> {
        self.run(self.sftp.stat(path))
    }

    /// Attributes of a link itself.
    pub fn lstat(&self, path: impl AsRef<[u8]>) -> Result<FileAttributes> {
        self.run(self.sftp.lstat(path))
    }

    /// Changes attributes by path.
    pub fn setstat(&self, path: impl AsRef<[u8]>, attrs: &FileAttributes) -> Result<()> {
        self.run(self.sftp.setstat(path, attrs))
    }

    /// Changes attributes without following a final symlink.
    pub fn lsetstat(&self, path: impl AsRef<[u8]>, attrs: &FileAttributes) -> Result<()> {
        self.run(self.sftp.lsetstat(path, attrs))
    }

    /// Sets permission bits.
    pub fn chmod(&self, path: impl AsRef<[u8]>, mode: u32) -> Result<()> {
        self.run(self.sftp.chmod(path, mode))
    }

    /// Sets owner and group ids.
    pub fn chown(&self, path: impl AsRef<[u8]>, uid: u32, gid: u32) -> Result<()> {
        self.run(self.sftp.chown(path, uid, gid))
    }

    /// Sets access and modification times.
    pub fn set_times(&self, path: impl AsRef<[u8]>, atime: u32, mtime: u32) -> Result<()> {
        self.run(self.sftp.set_times(path, atime, mtime))
    }

    /// Truncates or extends a file.
    pub fn truncate(&self, path: impl AsRef<[u8]>, size: u64) -> Result<()> {
        self.run(self.sftp.truncate(path, size))
    }

    /// Every entry of a directory (without `.` and `..`) with attributes.
    pub fn read_dir(&self, path: impl AsRef<[u8]>) -> Result<Vec<NameEntry>> {
        self.run(self.sftp.read_dir(path))
    }

    /// Removes a file or symlink.
    pub fn remove(&self, path: impl AsRef<[u8]>) -> Result<()> {
        self.run(self.sftp.remove(path))
    }

    /// Creates a directory with default permissions.
    pub fn mkdir(&self, path: impl AsRef<[u8]>) -> Result<()> {
        self.run(self.sftp.mkdir(path, &FileAttributes::default()))
    }

    /// Creates a directory and any missing parents (`mkdir -p`).
    pub fn mkdir_all(&self, path: impl AsRef<[u8]>) -> Result<()> {
        let locks = crate::task::DirLocks::new(self.sftp.clone());
        let path = path.as_ref().to_vec();
        self.run(async move { locks.ensure_dir(&path).await })
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, path: impl AsRef<[u8]>) -> Result<()> {
        self.run(self.sftp.rmdir(path))
    }

    /// The canonical absolute path.
    pub fn realpath(&self, path: impl AsRef<[u8]>) -> Result<Vec<u8>> {
        self.run(self.sftp.realpath(path))
    }

    /// Realpath that also expands `~`.
    pub fn expand_path(&self, path: impl AsRef<[u8]>) -> Result<Vec<u8>> {
        self.run(self.sftp.expand_path(path))
    }

    /// Plain rename (fails if `new` exists).
    pub fn rename(&self, old: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Result<()> {
        self.run(self.sftp.rename(old, new))
    }

    /// Atomic replacing rename (`posix-rename@openssh.com`).
    pub fn posix_rename(&self, old: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Result<()> {
        self.run(self.sftp.posix_rename(old, new))
    }

    /// Rename replacing the target, with fallbacks for servers lacking posix-rename.
    pub fn rename_replace(&self, old: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Result<()> {
        self.run(self.sftp.rename_replace(old, new))
    }

    /// Moves an entry of unknown kind onto `new` ([`crate::Sftp::move_entry`]): never a
    /// symlink on a server whose RENAME would move what it points to.
    pub fn move_entry(&self, old: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Result<()> {
        self.run(self.sftp.move_entry(old, new))
    }

    /// A symlink's target.
    pub fn readlink(&self, path: impl AsRef<[u8]>) -> Result<Vec<u8>> {
        self.run(self.sftp.readlink(path))
    }

    /// Creates `link` pointing to `target`.
    pub fn symlink(&self, target: impl AsRef<[u8]>, link: impl AsRef<[u8]>) -> Result<()> {
        self.run(self.sftp.symlink(target, link))
    }

    /// Creates hard link `new` to `old`.
    pub fn hardlink(&self, old: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Result<()> {
        self.run(self.sftp.hardlink(old, new))
    }

    /// File system statistics.
    pub fn statvfs(&self, path: impl AsRef<[u8]>) -> Result<Statvfs> {
        self.run(self.sftp.statvfs(path))
    }

    /// A transfer context for concurrent work on this session (run its futures with
    /// [`Session::run`]).
    pub fn transfer(&self, opts: TransferOptions, progress: Rc<dyn Progress>) -> Transfer {
        Transfer::with_progress(&self.sftp, opts, progress)
    }

    /// Uploads one file (pipelined; atomic unless `opts.inplace`). Returns bytes sent.
    pub fn put(
        &self,
        local: &Path,
        remote: impl AsRef<[u8]>,
        opts: &TransferOptions,
    ) -> Result<u64> {
        let t = Transfer::new(&self.sftp, opts.clone());
        self.run(t.upload(local, remote.as_ref()))
    }

    /// Downloads one file (pipelined). Returns bytes received.
    pub fn get(
        &self,
        remote: impl AsRef<[u8]>,
        local: &Path,
        opts: &TransferOptions,
    ) -> Result<u64> {
        let t = Transfer::new(&self.sftp, opts.clone());
        self.run(t.download(remote.as_ref(), local, None))
    }

    /// Uploads the contents of a local directory into a remote one, all files concurrently.
    pub fn put_tree(
        &self,
        local_dir: &Path,
        remote_dir: impl AsRef<[u8]>,
        opts: &TransferOptions,
    ) -> Report {
        let t = Transfer::new(&self.sftp, opts.clone());
        self.run(t.upload_tree(local_dir, remote_dir.as_ref()))
    }

    /// Downloads the contents of a remote directory into a local one, all files
    /// concurrently.
    pub fn get_tree(
        &self,
        remote_dir: impl AsRef<[u8]>,
        local_dir: &Path,
        opts: &TransferOptions,
    ) -> Report {
        let t = Transfer::new(&self.sftp, opts.clone());
        self.run(t.download_tree(remote_dir.as_ref(), local_dir))
    }

    /// Opens a remote file with explicit flags and creation attributes.
    pub fn open_with(
        &self,
        path: impl AsRef<[u8]>,
        flags: OpenFlags,
        attrs: &FileAttributes,
    ) -> Result<File<'_>> {
        let handle = self.run(async {
            // File reads and writes size themselves by the server's limits.
            self.sftp.limits().await;
            self.sftp.open(path, flags, attrs).await
        })?;
        Ok(File {
            session: self,
            handle: Some(handle),
            pos: 0,
        })
    }

    /// Opens a remote file for reading.
    pub fn open(&self, path: impl AsRef<[u8]>) -> Result<File<'_>> {
        self.open_with(path, OpenFlags::READ, &FileAttributes::default())
    }

    /// Creates (or truncates) a remote file for writing.
    pub fn create(&self, path: impl AsRef<[u8]>) -> Result<File<'_>> {
        self.open_with(
            path,
            OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC,
            &FileAttributes::default(),
        )
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The extra channels first: with a shared connection the first one is the master.
        // Every channel is half-closed before any end is awaited, so that the ends (a
        // round trip each) overlap; the master outlives its mux clients' sessions.
        let pool = self.sftp.pool();
        if let Some(p) = &pool {
            p.begin_shutdown();
        }
        self.sftp.channel().begin_shutdown();
        if let Some(p) = &pool {
            p.shutdown();
        }
        self.sftp.channel().shutdown(self.rt.reactor());
        if let Some(p) = &pool {
            p.remove_control_dir();
        }
    }
}

/// A remote file with `std::io` traits. Each call is one round trip; for bulk transfer use
/// the pipelined functions in [`crate::transfer`].
pub struct File<'a> {
    session: &'a Session,
    handle: Option<Handle>,
    pos: u64,
}

impl File<'_> {
    fn handle(&self) -> Result<&Handle> {
        self.handle
            .as_ref()
            .ok_or_else(|| Error::InvalidInput("file already closed".into()))
    }

    /// Attributes of the open file.
    pub fn metadata(&self) -> Result<FileAttributes> {
        let h = self.handle()?;
        self.session.run(self.session.sftp.fstat(h))
    }

    /// Changes attributes of the open file.
    pub fn set_metadata(&self, attrs: &FileAttributes) -> Result<()> {
        let h = self.handle()?;
        self.session.run(self.session.sftp.fsetstat(h, attrs))
    }

    /// Flushes to stable storage on the server (`fsync@openssh.com`).
    pub fn sync_all(&self) -> Result<()> {
        let h = self.handle()?;
        self.session.run(self.session.sftp.fsync(h))
    }

    /// File system statistics of the file's file system.
    pub fn statvfs(&self) -> Result<Statvfs> {
        let h = self.handle()?;
        self.session.run(self.session.sftp.fstatvfs(h))
    }

    /// Closes the file and reports the server's verdict (dropping closes too, silently).
    pub fn close(mut self) -> Result<()> {
        match self.handle.take() {
            Some(h) => self.session.run(self.session.sftp.close(h)),
            None => Ok(()),
        }
    }
}

impl Read for File<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let h = self.handle()?;
        let len = buf.len().min(self.session.sftp.read_chunk()) as u32;
        match self.session.run(self.session.sftp.read(h, self.pos, len))? {
            Some(data) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                self.pos += n as u64;
                Ok(n)
            }
            None => Ok(0),
        }
    }
}

impl Write for File<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let h = self.handle()?;
        let n = buf.len().min(self.session.sftp.write_chunk());
        self.session
            .run(self.session.sftp.write(h, self.pos, &buf[..n]))?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for File<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => {
                let size = self.metadata()?.size.unwrap_or(0);
                size.checked_add_signed(d)
            }
        };
        self.pos = new.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )
        })?;
        Ok(self.pos)
    }
}
