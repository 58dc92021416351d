//! Many files at once: whole trees up and down, one task per file, over one connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::FuturesUnordered;

use super::links::LinkSlot;
use super::{Report, Transfer, lossy, remote_basename, remote_join};
use crate::error::{Error, Result};
use crate::proto::{FileAttributes, FileType, NameEntry};
use crate::task::{JoinHandle, Semaphore, TaskGroup, spawn};

/// What a local tree entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalKind {
    /// A regular file of this size.
    File {
        /// Bytes.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symlink with this target (recreated as a link, not followed).
    Symlink {
        /// The link's text.
        target: PathBuf,
    },
}

/// One entry of a local tree, relative to its root.
#[derive(Debug, Clone)]
pub struct LocalEntry {
    /// Path relative to the root (never empty, never `..`).
    pub rel: PathBuf,
    /// Its kind.
    pub kind: LocalKind,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Permission bits.
    pub mode: u32,
    /// Matched an exclude pattern.
    pub excluded: bool,
}

/// A listed local tree.
#[derive(Debug, Default)]
pub struct LocalTree {
    /// The entries, parents before children.
    pub entries: Vec<LocalEntry>,
    /// What could not be read, relative to the root, with why: a directory that could not
    /// be listed (its own entry is in `entries`, its contents are unknown), or an entry
    /// that could not be examined (it is not in `entries`). The rest of the tree is listed.
    pub unreadable: Vec<(PathBuf, Error)>,
}

/// Lists a local tree depth-first (parents before children), without following symlinks
/// unless `follow_links`. Sockets, FIFOs and devices are skipped with a warning. Only an
/// unreadable root is an error; anything below it that cannot be read is listed in
/// [`LocalTree::unreadable`].
pub fn walk_local(root: &Path, follow_links: bool) -> Result<LocalTree> {
    walk_local_with(root, follow_links, &|_, _| (false, true))
}

/// The names in a local directory, sorted.
pub(crate) fn list_local_dir(dir: &Path) -> Result<Vec<OsString>> {
    let err = |e| Error::local(format!("cannot list {}", dir.display()), e);
    let mut names = fs::read_dir(dir)
        .map_err(err)?
        .map(|ent| ent.map(|e| e.file_name()).map_err(err))
        .collect::<Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// [`walk_local`] with a classifier: `classify(rel, is_dir)` returns whether the entry is
/// excluded (it is then reported with `excluded` set) and whether to descend into it.
pub fn walk_local_with(
    root: &Path,
    follow_links: bool,
    classify: &dyn Fn(&Path, bool) -> (bool, bool),
) -> Result<LocalTree> {
    let mut tree = LocalTree::default();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let names = match list_local_dir(&dir) {
            Ok(names) => names,
            Err(e) if rel.as_os_str().is_empty() => return Err(e),
            Err(e) => {
                tree.unreadable.push((rel, e));
                continue;
            }
        };
        let mut subdirs = Vec::new();
        for name in names {
            let rel_path = rel.join(&name);
            match local_entry(root, &rel_path, follow_links, classify) {
                Ok(Some((entry, descend))) => {
                    if descend {
                        subdirs.push(rel_path);
                    }
                    tree.entries.push(entry);
                }
                Ok(None) => {}
                Err(e) => tree.unreadable.push((rel_path, e)),
            }
        }
        // Reverse so the stack pops them in sorted order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(tree)
}

/// One entry of a local walk, and whether to descend into it; `None` for what is skipped.
pub(crate) fn local_entry(
    root: &Path,
    rel: &Path,
    follow_links: bool,
    classify: &dyn Fn(&Path, bool) -> (bool, bool),
) -> Result<Option<(LocalEntry, bool)>> {
    use std::os::unix::fs::MetadataExt;
    let path = root.join(rel);
    let lmeta = fs::symlink_metadata(&path)
        .map_err(|e| Error::local(format!("cannot stat {}", path.display()), e))?;
    let meta = if lmeta.file_type().is_symlink() && follow_links {
        match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("skipping dangling symlink {}: {e}", path.display());
                return Ok(None);
            }
        }
    } else {
        lmeta
    };
    let ft = meta.file_type();
    let (excluded, descend) = classify(rel, ft.is_dir());
    let kind = if ft.is_file() {
        LocalKind::File { size: meta.len() }
    } else if ft.is_dir() {
        LocalKind::Dir
    } else if ft.is_symlink() {
        let target = fs::read_link(&path)
            .map_err(|e| Error::local(format!("cannot read link {}", path.display()), e))?;
        LocalKind::Symlink { target }
    } else {
        log::warn!(
            "skipping {}: not a file, directory or symlink",
            path.display()
        );
        return Ok(None);
    };
    let descend = descend && kind == LocalKind::Dir;
    let entry = LocalEntry {
        rel: rel.to_path_buf(),
        kind,
        mtime: meta.mtime(),
        mode: meta.permissions().mode() & 0o7777,
        excluded,
    };
    Ok(Some((entry, descend)))
}

/// Checks a name the server sent before it becomes part of a local path: no `.`, `..`,
/// empty name, `/` or NUL.
pub fn safe_remote_name(name: &[u8]) -> Result<&OsStr> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Error::Protocol(format!(
            "server sent an unsafe file name {:?}; refusing to use it as a local path",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(OsStr::from_bytes(name))
}

fn rel_to_remote(root: &[u8], rel: &Path) -> Vec<u8> {
    remote_join(root, rel.as_os_str().as_bytes())
}

/// The hidden directory beside a missing remote root where a new tree is built before it
/// is renamed onto the root, so that it appears whole (`.NAME.sftpipe-partial`); a killed
/// upload or mirror leaves it, and the next one resumes it. `None` for a root without a
/// name of its own (`/`, `.`, `..`, `~`).
pub fn staging_dir(remote_root: &[u8]) -> Option<Vec<u8>> {
    let mut root = remote_root;
    while root.len() > 1 && root.ends_with(b"/") {
        root = &root[..root.len() - 1];
    }
    let name = remote_basename(root);
    if matches!(name, b"" | b"/" | b"." | b".." | b"~") || name.starts_with(b"~") {
        return None;
    }
    let mut staged = b".".to_vec();
    staged.extend_from_slice(&name[..name.len().min(200)]);
    staged.extend_from_slice(b".sftpipe-partial");
    Some(match root.len() - name.len() {
        0 => staged,
        dir_len => remote_join(&root[..dir_len], &staged),
    })
}

/// Where the entries of a tree upload are written, and the names they are reported by.
struct TreeDest<'a> {
    write_root: &'a [u8],
    shown_root: &'a [u8],
    /// Writing into a staging directory: small files need no temporary name.
    staged: bool,
}

/// What a staged tree may keep of a path, by the local tree's kind there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StagedKind {
    File,
    Dir,
    Symlink,
    /// Could not be read locally this time: whatever is staged there is left alone.
    Unread,
}

/// The local tree's kinds by remote-style relative path.
fn staged_kinds(tree: &LocalTree) -> HashMap<Vec<u8>, StagedKind> {
    let rel = |p: &Path| p.as_os_str().as_bytes().to_vec();
    let unread = tree
        .unreadable
        .iter()
        .map(|(p, _)| (rel(p), StagedKind::Unread));
    tree.entries
        .iter()
        .filter(|e| !e.excluded)
        .map(|e| {
            let kind = match e.kind {
                LocalKind::File { .. } => StagedKind::File,
                LocalKind::Dir => StagedKind::Dir,
                LocalKind::Symlink { .. } => StagedKind::Symlink,
            };
            (rel(&e.rel), kind)
        })
        // Last, so an unreadable directory's own entry does not count.
        .chain(unread)
        .collect()
}

impl Transfer {
    pub(crate) fn task_limit(&self) -> usize {
        // Room for the open-file limit of every channel the session may open.
        let channels = self.pool.as_ref().map_or(1, |p| p.max());
        self.open_files.capacity() / (1 + self.pool.as_ref().map_or(0, |p| p.extras().len()))
            * channels
            * 2
            + 16
    }

    /// Uploads the contents of `local_root` into `remote_root`: files, empty directories
    /// and symlinks, all concurrently. Failures are collected per path in the returned
    /// report; the run goes on. A `remote_root` that does not exist is built as a new tree
    /// (see [`Transfer::upload_new_tree`]); one that does gets the files added or replaced.
    pub async fn upload_tree(&self, local_root: &Path, remote_root: &[u8]) -> Report {
        let tree = match walk_local(local_root, self.opts.follow_links) {
            Ok(e) => e,
            Err(e) => {
                self.record_failure(local_root.display().to_string(), e);
                return self.take_report();
            }
        };
        self.ready().await;
        // Where a missing root would be staged is asked alongside: one round trip.
        let staging = self.staging_for(remote_root, &tree);
        let (root, staged) = match &staging {
            Some(dir) => {
                let (root, staged) =
                    futures_util::future::join(self.sftp.stat(remote_root), self.sftp.stat(dir))
                        .await;
                (root, Some(staged))
            }
            None => (self.sftp.stat(remote_root).await, None),
        };
        match (root, staging.zip(staged)) {
            (Err(e), Some((dir, found))) if e.is_not_found() => {
                self.upload_staged(local_root, remote_root, tree, dir, found)
                    .await
            }
            (Err(e), None) if e.is_not_found() => {
                self.dirlocks.mark_missing(remote_root);
                self.upload_entries(local_root, remote_root, tree).await
            }
            // Whatever else is wrong with it, the uploads into it say.
            _ => self.upload_entries(local_root, remote_root, tree).await,
        }
        self.take_report()
    }

    /// Where a new tree `remote_root` is staged: `None` with `inplace`, for an empty tree
    /// (one MKDIR is atomic already) and for a root without a name of its own.
    fn staging_for(&self, remote_root: &[u8], tree: &LocalTree) -> Option<Vec<u8>> {
        staging_dir(remote_root).filter(|_| !self.opts.inplace && !tree.entries.is_empty())
    }

    /// Uploads the listed tree of `local_root` under `remote_root`; results accumulate in
    /// this context's report, where each unreadable path of the tree is a failure.
    pub async fn upload_entries(&self, local_root: &Path, remote_root: &[u8], tree: LocalTree) {
        let dest = TreeDest {
            write_root: remote_root,
            shown_root: remote_root,
            staged: false,
        };
        self.upload_entries_to(local_root, &dest, tree).await
    }

    /// Uploads the listed tree of `local_root` as the tree `remote_root`, which a STAT found
    /// missing. The tree is built in a hidden staging directory beside it
    /// ([`staging_dir`]) and renamed into place at the end, so nobody sees it half made;
    /// inside, a small file is written under its final name, saving the rename per file
    /// that an upload into a visible directory needs. A staging directory left by a
    /// killed run is reused, after removing what the local tree does not have there
    /// (temporary files, entries of another kind). Failed files are reported and the rest
    /// still lands in the staging directory, which is then kept, not renamed (see
    /// [`Report::kept_staged`]): a rerun resumes it. With `inplace`, or a root without a
    /// name of its own, the tree is written in place.
    pub async fn upload_new_tree(&self, local_root: &Path, remote_root: &[u8], tree: LocalTree) {
        let Some(staging) = self.staging_for(remote_root, &tree) else {
            self.dirlocks.mark_missing(remote_root);
            return self.upload_entries(local_root, remote_root, tree).await;
        };
        self.ready().await;
        let found = self.sftp.stat(&staging).await;
        self.upload_staged(local_root, remote_root, tree, staging, found)
            .await
    }

    /// [`Transfer::upload_new_tree`], given what a STAT of the staging directory found.
    async fn upload_staged(
        &self,
        local_root: &Path,
        remote_root: &[u8],
        tree: LocalTree,
        staging: Vec<u8>,
        found: Result<FileAttributes>,
    ) {
        match found {
            Err(e) if e.is_not_found() => self.dirlocks.mark_missing(&staging),
            Ok(a) if a.is_dir() => {
                log::info!("resuming the staged tree {}", lossy(&staging));
                let keep = staged_kinds(&tree);
                if let Err(e) = self.prune_staged(staging.clone(), Vec::new(), &keep).await {
                    self.record_failure(
                        format!(
                            "{} (could not clear the staged tree {} left by an earlier run)",
                            lossy(remote_root),
                            lossy(&staging)
                        ),
                        e,
                    );
                    return;
                }
                self.dirlocks.mark_exists(&staging);
            }
            other => {
                // Not ours to touch: write in place, as without staging.
                if let Ok(a) = other {
                    log::warn!(
                        "{} is in the way ({:?}); uploading {} in place",
                        lossy(&staging),
                        a.file_type(),
                        lossy(remote_root)
                    );
                }
                self.dirlocks.mark_missing(remote_root);
                return self.upload_entries(local_root, remote_root, tree).await;
            }
        }
        let dest = TreeDest {
            write_root: &staging,
            shown_root: remote_root,
            staged: true,
        };
        self.upload_entries_to(local_root, &dest, tree).await;
        self.move_staged_tree(&staging, remote_root, &lossy(remote_root))
            .await;
    }

    /// Renames a staged tree onto its root (shown as `shown`) at the end of an upload, if
    /// the whole tree landed. When something in it failed (a failure recorded at or below
    /// `shown` or `staging`) or the connection is lost, the half-made tree stays in the
    /// staging directory for a rerun to resume, and [`Report::kept_staged`] says so. Never
    /// the remove + rename fallback: the root did not exist, and if it does now, it is not
    /// ours to remove.
    pub(crate) async fn move_staged_tree(&self, staging: &[u8], root: &[u8], shown: &str) {
        let failed = self.failures_within(&[shown, &lossy(staging)]);
        if failed > 0 || self.sftp.channel().is_dead() {
            let why = if self.sftp.channel().is_dead() {
                "the connection was lost".to_string()
            } else if failed == 1 {
                "1 entry failed".to_string()
            } else {
                format!("{failed} entries failed")
            };
            self.report.borrow_mut().kept_staged.push(format!(
                "{shown} was not created because {why}; what did land is in {}, \
                 and running the same command again resumes it",
                lossy(staging)
            ));
            return;
        }
        let moved = if self.sftp.has_extension(crate::proto::ext::POSIX_RENAME) {
            self.sftp.posix_rename(staging, root).await
        } else {
            self.sftp.rename(staging, root).await
        };
        match moved {
            Ok(()) => {}
            Err(e) => self.record_failure(
                format!(
                    "{shown} (could not move the new tree into place; it stays in {})",
                    lossy(staging)
                ),
                e,
            ),
        }
    }

    /// Removes from a staged tree what the upload would not overwrite: entries the local
    /// tree lacks (temporary files among them) and entries of another kind.
    fn prune_staged<'a>(
        &'a self,
        dir: Vec<u8>,
        rel: Vec<u8>,
        keep: &'a HashMap<Vec<u8>, StagedKind>,
    ) -> LocalBoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let listing = {
                let _permit = self.open_files.acquire(1).await;
                self.sftp.read_dir(&dir).await?
            };
            let mut subdirs = Vec::new();
            let mut removals = FuturesUnordered::new();
            for e in listing {
                let path = remote_join(&dir, &e.filename);
                let rel = remote_join(&rel, &e.filename);
                let kind = e.attrs.file_type();
                match (keep.get(&rel), kind) {
                    (Some(StagedKind::Dir), FileType::Dir) => subdirs.push((path, rel)),
                    (Some(StagedKind::Unread), _)
                    | (Some(StagedKind::File), FileType::File)
                    | (Some(StagedKind::Symlink), FileType::Symlink) => {}
                    (_, FileType::Dir) => {
                        removals.push(
                            Box::pin(async move { self.remove_remote_tree(&path).await })
                                as LocalBoxFuture<'_, Result<()>>,
                        )
                    }
                    _ => removals.push(Box::pin(async move { self.sftp.remove(&path).await })),
                }
            }
            while let Some(r) = removals.next().await {
                match r {
                    Err(e) if !e.is_not_found() => return Err(e),
                    _ => {}
                }
            }
            let subdirs = subdirs
                .into_iter()
                .map(|(path, rel)| self.prune_staged(path, rel, keep));
            for r in futures_util::future::join_all(subdirs).await {
                r?;
            }
            Ok(())
        })
    }

    /// How many recorded failures name one of `roots` or a path below it.
    fn failures_within(&self, roots: &[&str]) -> usize {
        let within = |path: &str| {
            roots.iter().any(|root| {
                let root = root.trim_end_matches('/');
                path.strip_prefix(root)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        };
        let report = self.report.borrow();
        report.failures.iter().filter(|(p, _)| within(p)).count()
    }

    async fn upload_entries_to(&self, local_root: &Path, dest: &TreeDest<'_>, tree: LocalTree) {
        self.ready().await;
        // An unreadable directory is one failure; nothing is made for it, not even empty.
        let LocalTree {
            mut entries,
            unreadable,
        } = tree;
        if !unreadable.is_empty() {
            let skip: std::collections::HashSet<&Path> =
                unreadable.iter().map(|(p, _)| p.as_path()).collect();
            entries.retain(|e| !skip.contains(e.rel.as_path()));
        }
        for (rel, e) in unreadable {
            self.record_failure(lossy(&rel_to_remote(dest.shown_root, &rel)), e);
        }
        let (files, bytes) = entries.iter().fold((0, 0), |(f, b), e| match e.kind {
            LocalKind::File { size } => (f + 1, b + size),
            _ => (f, b),
        });
        self.progress.add_total(files, bytes);
        self.want(crate::pool::Want::Files(files as usize));
        let has_children: std::collections::HashSet<PathBuf> = entries
            .iter()
            .filter_map(|e| e.rel.parent().map(Path::to_path_buf))
            .collect();
        let mut spawner = TaskGroup::new(self.task_limit());
        let dir_attrs = self.upload_dir_attrs(local_root, dest.write_root, &entries);
        if entries.is_empty() {
            match self.dirlocks.ensure_dir(dest.write_root).await {
                Ok(()) => self.set_remote_dir_attrs(dir_attrs).await,
                Err(e) => self.record_failure(lossy(dest.shown_root), e),
            }
            return;
        }
        for entry in entries.into_iter().filter(|e| !e.excluded) {
            let remote = rel_to_remote(dest.write_root, &entry.rel);
            let shown = rel_to_remote(dest.shown_root, &entry.rel);
            let local = local_root.join(&entry.rel);
            let t = self.clone();
            let staged = dest.staged;
            match entry.kind {
                LocalKind::File { .. } => {
                    spawner
                        .spawn(async move {
                            let r = t
                                .on_some_channel(|t| {
                                    let (local, remote) = (&local, &remote);
                                    async move {
                                        if staged {
                                            t.upload_fresh(local, remote, None).await
                                        } else {
                                            t.upload(local, remote).await
                                        }
                                    }
                                })
                                .await;
                            t.finish_file(&shown, r);
                        })
                        .await
                }
                // Directories with entries are created on demand by their children's locks.
                LocalKind::Dir if has_children.contains(&entry.rel) => {}
                LocalKind::Dir => {
                    spawner
                        .spawn(async move {
                            match t.dirlocks.ensure_dir(&remote).await {
                                Ok(()) => t.report.borrow_mut().dirs += 1,
                                Err(e) => t.record_failure(lossy(&shown), e),
                            }
                        })
                        .await
                }
                LocalKind::Symlink { target } => {
                    let mtime = t.opts.preserve_times.then_some(entry.mtime);
                    spawner
                        .spawn(async move {
                            let target = target.as_os_str().as_bytes();
                            let r = t
                                .upload_symlink(target, &remote, mtime, LinkSlot::Free)
                                .await;
                            match r {
                                Ok(()) => t.report.borrow_mut().symlinks += 1,
                                Err(e) => t.record_failure(lossy(&shown), e),
                            }
                        })
                        .await
                }
            }
        }
        spawner.join().await;
        self.set_remote_dir_attrs(dir_attrs).await;
    }

    /// With `-p`: the mode and time each remote directory of an upload gets (the root's
    /// too), deepest first.
    fn upload_dir_attrs(
        &self,
        local_root: &Path,
        remote_root: &[u8],
        entries: &[LocalEntry],
    ) -> Vec<(Vec<u8>, FileAttributes)> {
        if !self.opts.preserve_times && !self.opts.preserve_mode {
            return Vec::new();
        }
        let attrs = |mtime: i64, mode: u32| FileAttributes {
            permissions: self.opts.preserve_mode.then_some(mode),
            atime_mtime: self.opts.preserve_times.then(|| {
                let t = super::upload::to_u32_time(mtime);
                (t, t)
            }),
            ..Default::default()
        };
        let mut dirs: Vec<(usize, Vec<u8>, FileAttributes)> = entries
            .iter()
            .filter(|e| e.kind == LocalKind::Dir && !e.excluded)
            .map(|e| {
                let depth = e.rel.components().count();
                (
                    depth,
                    rel_to_remote(remote_root, &e.rel),
                    attrs(e.mtime, e.mode),
                )
            })
            .collect();
        match fs::metadata(local_root) {
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                dirs.push((0, remote_root.to_vec(), attrs(m.mtime(), m.mode() & 0o7777)));
            }
            Err(e) => log::warn!("cannot stat {}: {e}", local_root.display()),
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
        dirs.into_iter().map(|(_, p, a)| (p, a)).collect()
    }

    /// Sets directory attributes once everything below them has landed: an entry created
    /// later would move the time, and a read-only mode would refuse the entries. Deepest
    /// first, so that a parent's mode cannot lock out its children; all are sent at once
    /// (the server applies a connection's requests in order). A directory that does not
    /// exist failed already, with its own error.
    async fn set_remote_dir_attrs(&self, dirs: Vec<(Vec<u8>, FileAttributes)>) {
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

    /// Records a finished file in the report and tells the progress sink; for callers
    /// running single-file [`Transfer::upload`]/[`Transfer::download`] tasks themselves.
    pub fn finish_file(&self, remote: &[u8], r: Result<u64>) {
        match r {
            Ok(n) => {
                let mut rep = self.report.borrow_mut();
                rep.files += 1;
                rep.bytes += n;
                drop(rep);
                self.progress.file_done(&lossy(remote), n, None);
            }
            Err(e) => self.record_failure(lossy(remote), e),
        }
    }

    /// Downloads the contents of `remote_root` into `local_root` (created if missing).
    /// Directories are listed concurrently, each as its own task; names from the server
    /// are checked before use, and remote symlinks become local symlinks (never followed).
    pub async fn download_tree(&self, remote_root: &[u8], local_root: &Path) -> Report {
        self.ready().await;
        if let Err(e) = make_local_dir(local_root) {
            self.record_failure(local_root.display().to_string(), e);
            return self.take_report();
        }
        let preserve = self.opts.preserve_times || self.opts.preserve_mode;
        // The root's attributes come from its own STAT, asked alongside the listing.
        let root_attrs = preserve.then(|| {
            let sftp = self.sftp.clone();
            let path = remote_root.to_vec();
            spawn(async move { sftp.stat(&path).await })
        });
        let walk = Rc::new(DownloadWalk {
            tasks: RefCell::new(Vec::new()),
            slots: Semaphore::new(self.task_limit()),
            dir_attrs: RefCell::new(Vec::new()),
            files_seen: Default::default(),
        });
        self.clone()
            .list_and_fetch(remote_root.to_vec(), local_root.to_path_buf(), walk.clone())
            .await;
        crate::task::join_growing(&walk.tasks).await;
        if let Some(root) = root_attrs {
            match root.await {
                Ok(attrs) => walk
                    .dir_attrs
                    .borrow_mut()
                    .push((local_root.to_path_buf(), attrs)),
                Err(e) => self.record_failure(lossy(remote_root), e),
            }
        }
        self.set_local_dir_attrs(walk.dir_attrs.take());
        self.take_report()
    }

    /// Sets the `-p` attributes of downloaded directories once everything inside them is
    /// written (writing moves a directory's time; a read-only mode would refuse the
    /// entries), deepest first so a parent's mode cannot lock out its children.
    fn set_local_dir_attrs(&self, mut dirs: Vec<(PathBuf, FileAttributes)>) {
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (dir, attrs) in dirs {
            let r = fs::File::open(&dir)
                .map_err(|e| Error::local(format!("cannot open {}", dir.display()), e))
                .and_then(|f| self.apply_local_attrs(&dir, &f, &attrs));
            if let Err(e) = r {
                self.record_failure(dir.display().to_string(), e);
            }
        }
    }

    fn list_and_fetch(
        self,
        remote_dir: Vec<u8>,
        local_dir: PathBuf,
        walk: Rc<DownloadWalk>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        Box::pin(async move {
            let entries = {
                let _permit = self.open_files.acquire(1).await;
                self.sftp.read_dir(&remote_dir).await
            };
            let entries: Vec<NameEntry> = match entries {
                Ok(e) => e,
                Err(e) => {
                    self.record_failure(lossy(&remote_dir), e);
                    return;
                }
            };
            let (files, bytes) = file_totals(&entries);
            self.progress.add_total(files, bytes);
            let seen = walk.files_seen.get() + files as usize;
            walk.files_seen.set(seen);
            self.want(crate::pool::Want::Files(seen));
            let preserve = self.opts.preserve_times || self.opts.preserve_mode;
            for entry in entries {
                let remote = remote_join(&remote_dir, &entry.filename);
                let name = match safe_remote_name(&entry.filename) {
                    Ok(n) => n,
                    Err(e) => {
                        self.record_failure(lossy(&remote), e);
                        continue;
                    }
                };
                let local = local_dir.join(name);
                let t = self.clone();
                match entry.attrs.file_type() {
                    FileType::Dir => {
                        if let Err(e) = make_local_dir(&local) {
                            self.record_failure(local.display().to_string(), e);
                            continue;
                        }
                        self.report.borrow_mut().dirs += 1;
                        if preserve {
                            walk.dir_attrs
                                .borrow_mut()
                                .push((local.clone(), entry.attrs.clone()));
                        }
                        let h = spawn(t.list_and_fetch(remote, local, walk.clone()));
                        walk.tasks.borrow_mut().push(h);
                    }
                    FileType::Symlink => {
                        let slot = walk.slots.acquire(1).await;
                        let mtime = entry.attrs.mtime().filter(|_| self.opts.preserve_times);
                        let h = spawn(async move {
                            let _slot = slot;
                            let mtime = mtime.map(i64::from);
                            match t.download_symlink(&remote, &local, mtime).await {
                                Ok(()) => t.report.borrow_mut().symlinks += 1,
                                Err(e) => t.record_failure(lossy(&remote), e),
                            }
                        });
                        walk.tasks.borrow_mut().push(h);
                    }
                    FileType::File | FileType::Unknown => {
                        let slot = walk.slots.acquire(1).await;
                        let attrs = entry.attrs.clone();
                        let h = spawn(async move {
                            let _slot = slot;
                            let r = t
                                .on_some_channel(|t| {
                                    let (remote, local, attrs) = (&remote, &local, &attrs);
                                    async move {
                                        t.download_file(remote, local, Some(attrs), true).await
                                    }
                                })
                                .await;
                            t.finish_file(&remote, r);
                        });
                        walk.tasks.borrow_mut().push(h);
                    }
                    FileType::Other => {
                        log::warn!(
                            "skipping {}: not a file, directory or symlink",
                            lossy(&remote)
                        );
                    }
                }
            }
        })
    }

    /// Removes a remote directory and everything below it (`rm -r`), children
    /// concurrently. Symlinks are removed, never followed.
    pub fn remove_remote_tree<'a>(
        &'a self,
        dir: &'a [u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>> {
        Box::pin(async move {
            let entries = {
                let _permit = self.open_files.acquire(1).await;
                self.sftp.read_dir(dir).await?
            };
            let mut subdirs = Vec::new();
            let mut removals = futures_util::stream::FuturesUnordered::new();
            for e in entries {
                let path = remote_join(dir, &e.filename);
                if e.attrs.is_dir() {
                    subdirs.push(path);
                } else {
                    removals.push(async move {
                        let r = self.sftp.remove(&path).await;
                        (path, r)
                    });
                }
            }
            use futures_util::StreamExt;
            let mut first_error = None;
            while let Some((_, r)) = removals.next().await {
                if let Err(e) = r
                    && !e.is_not_found()
                {
                    first_error.get_or_insert(e);
                }
            }
            for sub in subdirs {
                if let Err(e) = self.remove_remote_tree(&sub).await {
                    first_error.get_or_insert(e);
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            self.sftp.rmdir(dir).await
        })
    }

    /// Applies attributes (mode, times) to a remote path, e.g. after a mirror upload.
    pub async fn set_remote_attrs(&self, remote: &[u8], attrs: &FileAttributes) -> Result<()> {
        self.sftp.setstat(remote, attrs).await
    }
}

/// What the tasks of one tree download share.
struct DownloadWalk {
    /// Every spawned listing and file task, awaited before the download ends.
    tasks: RefCell<Vec<JoinHandle<()>>>,
    /// Bounds the file tasks alive at once.
    slots: Semaphore,
    /// With `-p`: each local directory and the remote attributes it gets at the end.
    dir_attrs: RefCell<Vec<(PathBuf, FileAttributes)>>,
    /// Files listed so far (more channels pay off for many).
    files_seen: std::cell::Cell<usize>,
}

/// The files of a listing and their bytes, for progress. The sizes are the server's
/// word: they saturate rather than overflow.
fn file_totals(entries: &[NameEntry]) -> (u64, u64) {
    entries.iter().fold((0, 0), |(f, b), e| {
        if e.attrs.file_type() == FileType::File {
            (f + 1, b.saturating_add(e.attrs.size.unwrap_or(0)))
        } else {
            (f, b)
        }
    })
}

/// Creates a local directory for a download; refuses to descend through a symlink.
fn make_local_dir(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::local(
            format!("{} exists and is not a directory", dir.display()),
            std::io::ErrorKind::AlreadyExists.into(),
        )),
        Err(_) => fs::create_dir_all(dir)
            .map_err(|e| Error::local(format!("cannot create directory {}", dir.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_sizes_add_up_without_overflow() {
        let file = |size| NameEntry {
            filename: b"f".to_vec(),
            longname: Vec::new(),
            attrs: FileAttributes {
                size: Some(size),
                ..FileAttributes::with_permissions(0o100644)
            },
        };
        let listing = [file(u64::MAX), file(u64::MAX), file(1)];
        assert_eq!(file_totals(&listing), (3, u64::MAX));
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc", b"a\0b"] {
            assert!(safe_remote_name(bad).is_err(), "{bad:?}");
        }
        assert!(safe_remote_name(b"ok name \xe2\x9c\x93\n").is_ok());
    }

    #[test]
    fn walks_parents_first_in_sorted_order() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("b/c")).unwrap();
        fs::write(d.path().join("a"), b"1").unwrap();
        fs::write(d.path().join("b/c/f"), b"22").unwrap();
        std::os::unix::fs::symlink("a", d.path().join("l")).unwrap();
        let e = walk_local(d.path(), false).unwrap().entries;
        let rels: Vec<_> = e
            .iter()
            .map(|e| e.rel.to_string_lossy().into_owned())
            .collect();
        assert_eq!(rels, ["a", "b", "l", "b/c", "b/c/f"]);
        assert_eq!(e[4].kind, LocalKind::File { size: 2 });
        assert_eq!(e[2].kind, LocalKind::Symlink { target: "a".into() });
    }

    #[test]
    fn staging_sits_beside_the_root_under_a_hidden_name() {
        let st = |r: &[u8]| staging_dir(r).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(
            st(b"/srv/www").as_deref(),
            Some("/srv/.www.sftpipe-partial")
        );
        assert_eq!(
            st(b"/srv/www//").as_deref(),
            Some("/srv/.www.sftpipe-partial")
        );
        assert_eq!(st(b"site").as_deref(), Some(".site.sftpipe-partial"));
        assert_eq!(st(b"/top").as_deref(), Some("/.top.sftpipe-partial"));
        assert_eq!(st(b"a/b").as_deref(), Some("a/.b.sftpipe-partial"));
        for no_name in [&b"/"[..], b".", b"..", b"x/..", b"~", b"~alice", b""] {
            assert_eq!(st(no_name), None, "{:?}", String::from_utf8_lossy(no_name));
        }
    }
}
