//! The operations of [`Client`]: each copies its arguments, runs the matching
//! [`Sftp`](crate::Sftp) or [`Transfer`] call on the loop thread and returns a [`Reply`].

use std::path::Path;
use std::rc::Rc;

use super::event_loop::LoopCtx;
use super::{Client, Reply, SharedProgress};
use crate::client::Sftp;
use crate::error::{Error, Result};
use crate::mirror::{MirrorOptions, MirrorReport};
use crate::proto::{FileAttributes, NameEntry, OpenFlags, Statvfs};
use crate::transfer::{Progress, Report, Transfer, TransferOptions};

fn bytes(path: impl AsRef<[u8]>) -> Vec<u8> {
    path.as_ref().to_vec()
}

/// Forwards progress from the loop thread to the caller's `Send` sink.
struct Forward(SharedProgress);

impl Progress for Forward {
    fn add_total(&self, files: u64, bytes: u64) {
        self.0.add_total(files, bytes)
    }
    fn transferred(&self, bytes: u64) {
        self.0.transferred(bytes)
    }
    fn file_transferred(&self, local: &Path, bytes: u64) {
        self.0.file_transferred(local, bytes)
    }
    fn file_done(&self, path: &str, bytes: u64, error: Option<&Error>) {
        self.0.file_done(path, bytes, error)
    }
}

/// A transfer context for one call: it shares the handle's open-file and byte limits
/// unless `opts` sets its own.
fn transfer(ctx: &LoopCtx, opts: TransferOptions, progress: Option<SharedProgress>) -> Transfer {
    let base = ctx.base.options();
    let own_limits =
        opts.max_open.is_some() || opts.max_bytes_in_flight != base.max_bytes_in_flight;
    let mut t = if own_limits {
        Transfer::new(&ctx.sftp, opts)
    } else {
        ctx.base.fork(opts)
    };
    if let Some(p) = progress {
        t.progress = Rc::new(Forward(p));
    }
    t
}

impl Client {
    /// Attributes, following symlinks.
    ///
    /// ```no_run
    /// # async fn f(client: sftpipe::Client) -> sftpipe::Result<()> {
    /// let attrs = client.stat("/etc/hostname").await?;
    /// println!("{} bytes", attrs.size.unwrap_or(0));
    /// # Ok(()) }
    /// ```
    pub fn stat(&self, path: impl AsRef<[u8]>) -> Reply<FileAttributes> {
        self.on_path(path, |sftp, p| async move { sftp.stat(&p).await })
    }

    /// Attributes of a link itself.
    pub fn lstat(&self, path: impl AsRef<[u8]>) -> Reply<FileAttributes> {
        self.on_path(path, |sftp, p| async move { sftp.lstat(&p).await })
    }

    /// Every entry of a directory (without `.` and `..`) with attributes.
    pub fn read_dir(&self, path: impl AsRef<[u8]>) -> Reply<Vec<NameEntry>> {
        self.on_path(path, |sftp, p| async move { sftp.read_dir(&p).await })
    }

    /// Removes a file or symlink.
    pub fn remove(&self, path: impl AsRef<[u8]>) -> Reply<()> {
        self.on_path(path, |sftp, p| async move { sftp.remove(&p).await })
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, path: impl AsRef<[u8]>) -> Reply<()> {
        self.on_path(path, |sftp, p| async move { sftp.rmdir(&p).await })
    }

    /// The canonical absolute path.
    pub fn realpath(&self, path: impl AsRef<[u8]>) -> Reply<Vec<u8>> {
        self.on_path(path, |sftp, p| async move { sftp.realpath(&p).await })
    }

    /// Realpath that also expands `~` (`expand-path@openssh.com`).
    pub fn expand_path(&self, path: impl AsRef<[u8]>) -> Reply<Vec<u8>> {
        self.on_path(path, |sftp, p| async move { sftp.expand_path(&p).await })
    }

    /// A symlink's target.
    pub fn readlink(&self, path: impl AsRef<[u8]>) -> Reply<Vec<u8>> {
        self.on_path(path, |sftp, p| async move { sftp.readlink(&p).await })
    }

    /// File system statistics (`statvfs@openssh.com`).
    pub fn statvfs(&self, path: impl AsRef<[u8]>) -> Reply<Statvfs> {
        self.on_path(path, |sftp, p| async move { sftp.statvfs(&p).await })
    }

    /// Plain rename (fails if `new` exists).
    pub fn rename(&self, old: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Reply<()> {
        self.on_paths(
            old,
            new,
            |sftp, a, b| async move { sftp.rename(&a, &b).await },
        )
    }

    /// Atomic replacing rename (`posix-rename@openssh.com`).
    pub fn posix_rename(&self, old: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Reply<()> {
        self.on_paths(old, new, |sftp, a, b| async move {
            sftp.posix_rename(&a, &b).await
        })
    }

    /// Rename replacing the target, with fallbacks for servers lacking posix-rename.
    pub fn rename_replace(&self, old: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Reply<()> {
        self.on_paths(old, new, |sftp, a, b| async move {
            sftp.rename_replace(&a, &b).await
        })
    }

    /// Creates the symlink `link` pointing to `target`.
    pub fn symlink(&self, target: impl AsRef<[u8]>, link: impl AsRef<[u8]>) -> Reply<()> {
        self.on_paths(target, link, |sftp, a, b| async move {
            sftp.symlink(&a, &b).await
        })
    }

    /// Creates the hard link `new` to `old`.
    pub fn hardlink(&self, old: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Reply<()> {
        self.on_paths(
            old,
            new,
            |sftp, a, b| async move { sftp.hardlink(&a, &b).await },
        )
    }

    /// Creates a directory with default permissions.
    pub fn mkdir(&self, path: impl AsRef<[u8]>) -> Reply<()> {
        let path = bytes(path);
        self.call(move |ctx| {
            let sftp = ctx.sftp.clone();
            async move { sftp.mkdir(&path, &FileAttributes::default()).await }
        })
    }

    /// Creates a directory and any missing parents (`mkdir -p`).
    pub fn mkdir_all(&self, path: impl AsRef<[u8]>) -> Reply<()> {
        let path = bytes(path);
        self.call(move |ctx| {
            let locks = crate::task::DirLocks::new(ctx.sftp.clone());
            async move { locks.ensure_dir(&path).await }
        })
    }

    /// Changes attributes by path.
    pub fn setstat(&self, path: impl AsRef<[u8]>, attrs: &FileAttributes) -> Reply<()> {
        let (path, attrs) = (bytes(path), attrs.clone());
        self.call(move |ctx| {
            let sftp = ctx.sftp.clone();
            async move { sftp.setstat(&path, &attrs).await }
        })
    }

    /// Sets permission bits.
    pub fn chmod(&self, path: impl AsRef<[u8]>, mode: u32) -> Reply<()> {
        let path = bytes(path);
        self.call(move |ctx| {
            let sftp = ctx.sftp.clone();
            async move { sftp.chmod(&path, mode).await }
        })
    }

    /// Sets access and modification times.
    pub fn set_times(&self, path: impl AsRef<[u8]>, atime: u32, mtime: u32) -> Reply<()> {
        let path = bytes(path);
        self.call(move |ctx| {
            let sftp = ctx.sftp.clone();
            async move { sftp.set_times(&path, atime, mtime).await }
        })
    }

    /// Reads a whole remote file into memory (for small files; [`Client::get`] streams
    /// to disk with pipelining).
    pub fn read_file(&self, path: impl AsRef<[u8]>) -> Reply<Vec<u8>> {
        let path = bytes(path);
        self.call(move |ctx| {
            let sftp = ctx.sftp.clone();
            async move {
                sftp.limits().await;
                let h = sftp
                    .open(&path, OpenFlags::READ, &FileAttributes::default())
                    .await?;
                let mut data = Vec::new();
                let chunk = sftp.read_chunk() as u32;
                while let Some(piece) = sftp.read(&h, data.len() as u64, chunk).await? {
                    data.extend_from_slice(&piece);
                }
                sftp.close(h).await?;
                Ok(data)
            }
        })
    }

    /// Creates (or truncates) a remote file holding `data` (for small files:
    /// [`Client::put`] uploads a local file atomically with pipelining).
    pub fn write_file(&self, path: impl AsRef<[u8]>, data: impl Into<Vec<u8>>) -> Reply<()> {
        let (path, data) = (bytes(path), data.into());
        self.call(move |ctx| {
            let sftp = ctx.sftp.clone();
            async move {
                sftp.limits().await;
                let flags = OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC;
                let h = sftp.open(&path, flags, &FileAttributes::default()).await?;
                let mut offset = 0;
                for piece in data.chunks(sftp.write_chunk().max(1)) {
                    sftp.write(&h, offset, piece).await?;
                    offset += piece.len() as u64;
                }
                sftp.close(h).await
            }
        })
    }

    /// A call on one remote path.
    fn on_path<T, F, Fut>(&self, path: impl AsRef<[u8]>, op: F) -> Reply<T>
    where
        T: Send + 'static,
        F: FnOnce(Sftp, Vec<u8>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>> + 'static,
    {
        let path = bytes(path);
        self.call(move |ctx| op(ctx.sftp.clone(), path))
    }

    /// A call on two remote paths.
    fn on_paths<T, F, Fut>(&self, a: impl AsRef<[u8]>, b: impl AsRef<[u8]>, op: F) -> Reply<T>
    where
        T: Send + 'static,
        F: FnOnce(Sftp, Vec<u8>, Vec<u8>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>> + 'static,
    {
        let (a, b) = (bytes(a), bytes(b));
        self.call(move |ctx| op(ctx.sftp.clone(), a, b))
    }
}

/// Transfers: these share the connection's limits on open files and bytes in flight,
/// and report to the handle's [`Client::with_progress`] sink.
impl Client {
    /// Uploads one file (pipelined; atomic unless `opts.inplace`). Returns bytes sent.
    pub fn put(
        &self,
        local: impl AsRef<Path>,
        remote: impl AsRef<[u8]>,
        opts: &TransferOptions,
    ) -> Reply<u64> {
        let (local, remote) = (local.as_ref().to_path_buf(), bytes(remote));
        self.transfer_call(
            opts,
            move |t| async move { t.upload(&local, &remote).await },
        )
    }

    /// Downloads one file (pipelined). Returns bytes received.
    pub fn get(
        &self,
        remote: impl AsRef<[u8]>,
        local: impl AsRef<Path>,
        opts: &TransferOptions,
    ) -> Reply<u64> {
        let (remote, local) = (bytes(remote), local.as_ref().to_path_buf());
        self.transfer_call(opts, move |t| async move {
            t.download(&remote, &local, None).await
        })
    }

    /// Uploads the contents of a local directory into a remote one, all files
    /// concurrently. Failures of single files are in the [`Report`].
    pub fn put_tree(
        &self,
        local_dir: impl AsRef<Path>,
        remote_dir: impl AsRef<[u8]>,
        opts: &TransferOptions,
    ) -> Reply<Report> {
        let (local, remote) = (local_dir.as_ref().to_path_buf(), bytes(remote_dir));
        self.transfer_call(opts, move |t| async move {
            Ok(t.upload_tree(&local, &remote).await)
        })
    }

    /// Downloads the contents of a remote directory into a local one, all files
    /// concurrently. Failures of single files are in the [`Report`].
    pub fn get_tree(
        &self,
        remote_dir: impl AsRef<[u8]>,
        local_dir: impl AsRef<Path>,
        opts: &TransferOptions,
    ) -> Reply<Report> {
        let (remote, local) = (bytes(remote_dir), local_dir.as_ref().to_path_buf());
        self.transfer_call(opts, move |t| async move {
            Ok(t.download_tree(&remote, &local).await)
        })
    }

    /// Makes the remote directory `remote_root` a copy of the local tree `local_root`
    /// (see [`crate::mirror`]). Times are kept, as by the CLI, unless
    /// [`MirrorOptions::no_times`].
    ///
    /// ```no_run
    /// use sftpipe::{Client, ConnectOptions, MirrorOptions, TransferOptions};
    /// # fn main() -> sftpipe::Result<()> {
    /// let client = Client::connect(&ConnectOptions::host("www.example.org"))?;
    /// let report = client
    ///     .mirror_up("site/", "/var/www/site", &MirrorOptions::default(), &TransferOptions::default())
    ///     .wait()?;
    /// println!("{} copied, {} unchanged", report.copied, report.unchanged);
    /// # Ok(()) }
    /// ```
    pub fn mirror_up(
        &self,
        local_root: impl AsRef<Path>,
        remote_root: impl AsRef<[u8]>,
        mirror: &MirrorOptions,
        opts: &TransferOptions,
    ) -> Reply<MirrorReport> {
        let (local, remote) = (local_root.as_ref().to_path_buf(), bytes(remote_root));
        let mirror = mirror.clone();
        self.transfer_call(opts, move |t| async move {
            Ok(crate::mirror::mirror_up(&t, &local, &remote, &mirror).await)
        })
    }

    /// Makes the local directory `local_root` a copy of the remote tree `remote_root`;
    /// like [`Client::mirror_up`] the other way.
    pub fn mirror_down(
        &self,
        remote_root: impl AsRef<[u8]>,
        local_root: impl AsRef<Path>,
        mirror: &MirrorOptions,
        opts: &TransferOptions,
    ) -> Reply<MirrorReport> {
        let (remote, local) = (bytes(remote_root), local_root.as_ref().to_path_buf());
        let mirror = mirror.clone();
        self.transfer_call(opts, move |t| async move {
            Ok(crate::mirror::mirror_down(&t, &remote, &local, &mirror).await)
        })
    }

    fn transfer_call<T, F, Fut>(&self, opts: &TransferOptions, work: F) -> Reply<T>
    where
        T: Send + 'static,
        F: FnOnce(Transfer) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>> + 'static,
    {
        let opts = opts.clone();
        let progress = self.progress.clone();
        self.call(move |ctx| work(transfer(ctx, opts, progress)))
    }
}
