//! Mirroring a tree: local → remote (`mirror_up`) and remote → local (`mirror_down`).
//!
//! Both sides are snapshotted (the remote one with every directory listed by its own task,
//! no STAT per file), compared by size and modification time ([`plan`]), and the
//! differences applied in phases:
//!
//! 1. entries in the way of a type change (file ↔ directory ↔ symlink) are removed;
//! 2. directories, changed files (atomic: temporary name + rename), symlinks and modes,
//!    all concurrently;
//! 3. files matching `--last` (indexes that name other files), only if all of 2 landed;
//! 4. deletes of what the source lacks, only if everything before succeeded, children
//!    before parents, refused whole above `--max-delete`;
//! 5. directory modification times, once nothing changes inside them any more.

mod filter;
mod plan;

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Where a new remote tree is built before it is renamed into place.
pub use crate::transfer::staging_dir;
pub use filter::{Filter, PatternSet};
pub use plan::{Action, Compare, EntryKind, Plan, Snapshot, TreeEntry, plan};

use crate::client::PendingReply;
use crate::client::Sftp;
use crate::error::{Error, Result};
use crate::proto::{FileAttributes, FileType, ext};
use crate::task::{Countdown, JoinHandle, Semaphore, TaskGroup, Token, spawn};
use crate::transfer::{
    LinkSlot, LocalKind, Transfer, link_times, lossy, remote_join, remote_normalize,
    safe_remote_name, set_local_link_mtime, walk_local_with,
};

/// What to mirror and how.
#[derive(Debug, Clone, Default)]
pub struct MirrorOptions {
    /// Comparison and deletion rules.
    pub compare: Compare,
    /// Which paths take part.
    pub filter: Filter,
    /// Refuse to delete more than this many entries.
    pub max_delete: Option<usize>,
    /// Only compute the plan.
    pub dry_run: bool,
    /// Follow local symlinks (upload what they point to).
    pub copy_links: bool,
    /// Do not copy modification times, whatever the transfer's options say. By default a
    /// mirror keeps them (as the CLI's does): without them the next run would see every
    /// file as changed and copy it again.
    pub no_times: bool,
}

/// What a mirror did.
#[derive(Debug, Default)]
pub struct MirrorReport {
    /// The plan that was (or, with `dry_run`, would be) carried out.
    pub plan: Plan,
    /// Files copied.
    pub copied: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Directories created.
    pub dirs_created: u64,
    /// Symlinks created or replaced.
    pub symlinks: u64,
    /// Modes changed.
    pub chmods: u64,
    /// Entries deleted.
    pub deleted: u64,
    /// Files already up to date.
    pub unchanged: u64,
    /// Failures, each with its path.
    pub failures: Vec<(String, Error)>,
    /// Why deletes were skipped, if they were.
    pub deletes_skipped: Option<String>,
    /// Why `--last` files were held back, if they were.
    pub last_skipped: Option<String>,
    /// Why a new tree was left half made in its staging directory, if it was (something
    /// in it failed: a rerun resumes it).
    pub tree_kept: Option<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl MirrorReport {
    /// True when nothing failed and nothing was skipped.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
            && self.deletes_skipped.is_none()
            && self.last_skipped.is_none()
            && self.tree_kept.is_none()
    }

    /// True when nothing at all could be done (every planned action failed).
    pub fn nothing_done(&self) -> bool {
        !self.failures.is_empty()
            && self.copied + self.dirs_created + self.symlinks + self.chmods + self.deleted == 0
    }
}

fn rel_str(rel: &Path) -> Vec<u8> {
    rel.as_os_str().as_bytes().to_vec()
}

/// A local tree as [`snapshot_local`] lists it.
#[derive(Debug, Default)]
pub struct LocalSnapshot {
    /// The entries; what could not be read is in it marked [`TreeEntry::unreadable`].
    pub tree: Snapshot,
    /// Each path that could not be read (relative to the root), with why.
    pub unreadable: Vec<(Vec<u8>, Error)>,
}

/// Snapshots a local tree. A missing root is an empty snapshot (`Ok(None)`); only an
/// unreadable root is an error, what cannot be read below it is listed as such.
pub fn snapshot_local(root: &Path, opts: &MirrorOptions) -> Result<Option<LocalSnapshot>> {
    match fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() || (opts.copy_links && root.is_dir()) => {}
        Ok(_) => {
            return Err(Error::InvalidInput(format!(
                "mirror takes directories: {} is not one (use put to copy a file)",
                root.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::local(format!("cannot read {}", root.display()), e)),
    }
    let descend_excluded = opts.compare.delete_excluded;
    let filter = &opts.filter;
    let classify = |rel: &Path, is_dir: bool| {
        let excluded = plan::filter_path(filter, rel.as_os_str().as_bytes(), is_dir);
        (excluded, !excluded || descend_excluded)
    };
    let walked = walk_local_with(root, opts.copy_links, &classify)?;
    let mut snap = Snapshot::new();
    let meta = fs::metadata(root)
        .map_err(|e| Error::local(format!("cannot read {}", root.display()), e))?;
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        snap.insert(
            Vec::new(),
            TreeEntry {
                kind: EntryKind::Dir,
                size: 0,
                mtime: meta.mtime(),
                mode: meta.permissions().mode() & 0o7777,
                target: None,
                excluded: false,
                unreadable: false,
            },
        );
    }
    let mut excluded_dirs: Vec<Vec<u8>> = Vec::new();
    for e in walked.entries {
        let rel = rel_str(&e.rel);
        let below_excluded = excluded_dirs
            .iter()
            .any(|d| rel.len() > d.len() && rel.starts_with(d) && rel[d.len()] == b'/');
        let (kind, size, target) = match e.kind {
            LocalKind::File { size } => (EntryKind::File, size, None),
            LocalKind::Dir => (EntryKind::Dir, 0, None),
            LocalKind::Symlink { target } => (EntryKind::Symlink, 0, Some(rel_str(&target))),
        };
        if e.excluded && kind == EntryKind::Dir {
            excluded_dirs.push(rel.clone());
        }
        snap.insert(
            rel,
            TreeEntry {
                kind,
                size,
                mtime: e.mtime,
                mode: e.mode,
                target,
                excluded: e.excluded || below_excluded,
                unreadable: false,
            },
        );
    }
    let unreadable: Vec<(Vec<u8>, Error)> = walked
        .unreadable
        .into_iter()
        .map(|(rel, e)| (rel_str(&rel), e))
        .collect();
    for (rel, _) in &unreadable {
        mark_unreadable(&mut snap, rel);
    }
    Ok(Some(LocalSnapshot {
        tree: snap,
        unreadable,
    }))
}

/// Marks a path of a snapshot unreadable; one that could not even be examined is added as
/// an entry of unknown kind.
fn mark_unreadable(snap: &mut Snapshot, rel: &[u8]) {
    snap.entry(rel.to_vec())
        .or_insert_with(|| TreeEntry {
            kind: EntryKind::Other,
            size: 0,
            mtime: 0,
            mode: 0,
            target: None,
            excluded: false,
            unreadable: true,
        })
        .unreadable = true;
}

fn entry_from_attrs(a: &FileAttributes) -> (EntryKind, u64, i64, u32) {
    let kind = match a.file_type() {
        FileType::File | FileType::Unknown => EntryKind::File,
        FileType::Dir => EntryKind::Dir,
        FileType::Symlink => EntryKind::Symlink,
        FileType::Other => EntryKind::Other,
    };
    (
        kind,
        a.size.unwrap_or(0),
        a.mtime().map(i64::from).unwrap_or(0),
        a.permissions.unwrap_or(0) & 0o7777,
    )
}

/// A directory's listing, from [`Sftp::read_dir`].
type Listing = Result<Vec<crate::proto::NameEntry>>;

struct RemoteWalk {
    snap: RefCell<Snapshot>,
    tasks: RefCell<Vec<JoinHandle<()>>>,
    /// Listings of guessed directories (see [`guess_remote_dirs`]), started before their
    /// parents' listings said what they are; used only for entries those call directories.
    guessed: RefCell<std::collections::HashMap<Vec<u8>, JoinHandle<Listing>>>,
    failures: RefCell<Vec<(String, Error)>>,
    /// Relative paths that could not be listed (directories) or read (links).
    unreadable: RefCell<Vec<Vec<u8>>>,
    filter: Filter,
    descend_excluded: bool,
    read_links: bool,
    /// The tree is a mirror's destination: a link whose target cannot be read is left
    /// without one (the plan then replaces it), not a failure that holds back deletes.
    /// Some servers refuse READLINK of relative links (asyncssh chrooted).
    is_dest: bool,
}

fn list_remote_dir(
    sftp: Sftp,
    open_files: Semaphore,
    walk: Rc<RemoteWalk>,
    root: Rc<Vec<u8>>,
    rel: Vec<u8>,
    excluded_parent: bool,
    prefetched: Option<Listing>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    Box::pin(async move {
        let dir = if rel.is_empty() {
            root.to_vec()
        } else {
            remote_join(&root, &rel)
        };
        let listing = match prefetched {
            Some(l) => l,
            None => {
                let guessed = walk.guessed.borrow_mut().remove(&dir);
                match guessed {
                    Some(listing) => listing.await,
                    None => {
                        let _permit = open_files.acquire(1).await;
                        sftp.read_dir(&dir).await
                    }
                }
            }
        };
        let entries = match listing {
            Ok(e) => e,
            Err(e) => {
                walk.failures
                    .borrow_mut()
                    .push((String::from_utf8_lossy(&dir).into_owned(), e));
                walk.unreadable.borrow_mut().push(rel);
                return;
            }
        };
        let mut links = Vec::new();
        let mut names = HashSet::new();
        for entry in entries {
            let refused = match safe_remote_name(&entry.filename) {
                Err(e) => Some(e),
                // A name listed twice (with another type, say) keeps its first entry: with
                // the second, the first one's children (a directory's, already being
                // listed) would sit in the snapshot under something that is no directory,
                // and be written through whatever is there locally, a link out of the tree.
                Ok(_) if !names.insert(entry.filename.clone()) => Some(Error::Protocol(format!(
                    "server listed {:?} twice",
                    String::from_utf8_lossy(&entry.filename)
                ))),
                Ok(_) => None,
            };
            if let Some(e) = refused {
                walk.failures.borrow_mut().push((
                    String::from_utf8_lossy(&remote_join(&dir, &entry.filename)).into_owned(),
                    e,
                ));
                continue;
            }
            let child = if rel.is_empty() {
                entry.filename.clone()
            } else {
                remote_join(&rel, &entry.filename)
            };
            let (kind, size, mtime, mode) = entry_from_attrs(&entry.attrs);
            let excluded =
                excluded_parent || plan::filter_path(&walk.filter, &child, kind == EntryKind::Dir);
            if kind == EntryKind::Dir && (!excluded || walk.descend_excluded) {
                let h = spawn(list_remote_dir(
                    sftp.clone(),
                    open_files.clone(),
                    walk.clone(),
                    root.clone(),
                    child.clone(),
                    excluded,
                    None,
                ));
                walk.tasks.borrow_mut().push(h);
            }
            if kind == EntryKind::Symlink && walk.read_links && !excluded {
                links.push(child.clone());
            }
            walk.snap.borrow_mut().insert(
                child,
                TreeEntry {
                    kind,
                    size,
                    mtime,
                    mode,
                    target: None,
                    excluded,
                    unreadable: false,
                },
            );
        }
        // Link targets are needed to compare links; read them concurrently.
        let reads = links.into_iter().map(|child| {
            let sftp = sftp.clone();
            let path = remote_join(&root, &child);
            async move { (child, sftp.readlink(&path).await) }
        });
        for (child, r) in futures_util::future::join_all(reads).await {
            match r {
                Ok(t) => {
                    if let Some(e) = walk.snap.borrow_mut().get_mut(&child) {
                        e.target = Some(t);
                    }
                }
                Err(e) if walk.is_dest && !e.is_connection() => {
                    log::info!("{e}; replacing the link");
                }
                Err(e) => {
                    let path = remote_join(&root, &child);
                    walk.failures
                        .borrow_mut()
                        .push((String::from_utf8_lossy(&path).into_owned(), e));
                    walk.unreadable.borrow_mut().push(child);
                }
            }
        }
    })
}

/// Snapshots a remote tree, every directory listed by its own task. `Ok(None)` when the
/// root does not exist. Directories that could not be listed, and source links whose
/// target could not be read, are returned as failures and marked
/// [`TreeEntry::unreadable`] in the snapshot.
pub async fn snapshot_remote(
    t: &Transfer,
    root: &[u8],
    opts: &MirrorOptions,
) -> Result<(Option<Snapshot>, Vec<(String, Error)>)> {
    snapshot_remote_as(t, root, opts, false).await
}

/// [`snapshot_remote`] of a source tree, or of a destination (`is_dest`), where a link
/// whose target cannot be read is listed without a target instead of failing.
async fn snapshot_remote_as(
    t: &Transfer,
    root: &[u8],
    opts: &MirrorOptions,
    is_dest: bool,
) -> Result<(Option<Snapshot>, Vec<(String, Error)>)> {
    let root = Rc::new(root.to_vec());
    // The root's attributes and its listing in one round trip, or none when they came
    // with the handshake. With only the STAT prefetched, a missing root (a first mirror)
    // is known without waiting for an OPENDIR.
    let (attrs, listing) = {
        let _permit = t.open_files.acquire(1).await;
        if t.sftp.has_prefetched_stat(&root) && !t.sftp.has_prefetched_dir(&root) {
            let attrs = t.sftp.stat(root.as_slice()).await;
            let listing = match &attrs {
                Ok(a) if a.is_dir() => t.sftp.read_dir(root.as_slice()).await,
                // Not used: the root's attributes decide.
                _ => Ok(Vec::new()),
            };
            (attrs, listing)
        } else {
            futures_util::join!(
                t.sftp.stat(root.as_slice()),
                t.sftp.read_dir(root.as_slice())
            )
        }
    };
    let attrs = match attrs {
        Ok(a) if a.is_dir() => a,
        Ok(_) => {
            return Err(Error::InvalidInput(format!(
                "mirror takes directories: remote {} is not one (use {} to copy a file)",
                String::from_utf8_lossy(&root),
                if is_dest { "put" } else { "get" }
            )));
        }
        Err(e) if e.is_not_found() => return Ok((None, Vec::new())),
        Err(e) => return Err(e),
    };
    // Guessed directories are listed at once, alongside the root: on a tree that looks
    // like the local one, every level's listing then overlaps the first. Only once the
    // root exists: under a missing one they are not looked at (and are discarded).
    let guessed = t
        .sftp
        .guessed_dirs()
        .into_iter()
        .map(|dir| {
            let sftp = t.sftp.clone();
            let listing = spawn({
                let dir = dir.clone();
                async move { sftp.read_dir(&dir).await }
            });
            (dir, listing)
        })
        .collect();
    let walk = Rc::new(RemoteWalk {
        snap: RefCell::new(Snapshot::new()),
        tasks: RefCell::new(Vec::new()),
        guessed: RefCell::new(guessed),
        failures: RefCell::new(Vec::new()),
        unreadable: RefCell::new(Vec::new()),
        filter: opts.filter.clone(),
        descend_excluded: opts.compare.delete_excluded,
        read_links: true,
        is_dest,
    });
    let (_, _, mtime, mode) = entry_from_attrs(&attrs);
    walk.snap.borrow_mut().insert(
        Vec::new(),
        TreeEntry {
            kind: EntryKind::Dir,
            size: 0,
            mtime,
            mode,
            target: None,
            excluded: false,
            unreadable: false,
        },
    );
    list_remote_dir(
        t.sftp.clone(),
        t.open_files.clone(),
        walk.clone(),
        root,
        Vec::new(),
        false,
        Some(listing),
    )
    .await;
    loop {
        let pending: Vec<JoinHandle<()>> = walk.tasks.borrow_mut().drain(..).collect();
        if pending.is_empty() {
            break;
        }
        for h in pending {
            h.await;
        }
    }
    // Guesses the tree did not confirm: let them finish, so their handles are closed
    // before transfers count open files.
    let unused: Vec<_> = walk.guessed.borrow_mut().drain().collect();
    for (_, listing) in unused {
        let _ = listing.await;
    }
    let failures = std::mem::take(&mut *walk.failures.borrow_mut());
    let mut snap = std::mem::take(&mut *walk.snap.borrow_mut());
    for rel in walk.unreadable.take() {
        mark_unreadable(&mut snap, &rel);
    }
    Ok((Some(snap), failures))
}

#[derive(Default)]
struct Counters {
    dirs_created: u64,
    symlinks: u64,
    chmods: u64,
    deleted: u64,
}

fn failure_count(t: &Transfer) -> usize {
    t.report.borrow().failures.len()
}

/// Which way a mirror runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// One side's operations, so the phases are written once for both directions.
#[derive(Clone)]
struct Sides {
    t: Transfer,
    dir: Direction,
    local_root: Rc<PathBuf>,
    /// Where remote entries are written: the remote root, or its staging directory.
    remote_root: Rc<Vec<u8>>,
    /// The remote root as the user named it, for messages.
    remote_name: Rc<Vec<u8>>,
    /// Writing into a staging directory (see [`staging_dir`]).
    staged: bool,
}

impl Sides {
    fn local(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.local_root.to_path_buf()
        } else {
            self.local_root.join(OsStr::from_bytes(rel))
        }
    }

    fn remote(&self, rel: &[u8]) -> Vec<u8> {
        if rel.is_empty() {
            self.remote_root.to_vec()
        } else {
            remote_join(&self.remote_root, rel)
        }
    }

    fn dest_name(&self, rel: &[u8]) -> String {
        match self.dir {
            Direction::Up if rel.is_empty() => {
                String::from_utf8_lossy(&self.remote_name).into_owned()
            }
            Direction::Up => {
                String::from_utf8_lossy(&remote_join(&self.remote_name, rel)).into_owned()
            }
            Direction::Down => self.local(rel).display().to_string(),
        }
    }

    /// Removes whatever is at the destination path (a tree for a directory).
    async fn remove_dest(&self, rel: &[u8], kind: EntryKind) -> Result<()> {
        match self.dir {
            Direction::Up => {
                let p = self.remote(rel);
                if kind == EntryKind::Dir {
                    self.t.remove_remote_tree(&p).await
                } else {
                    self.t.sftp.remove(&p).await
                }
            }
            Direction::Down => {
                let p = self.local(rel);
                let r = if kind == EntryKind::Dir {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                r.map_err(|e| Error::local(format!("cannot remove {}", p.display()), e))
            }
        }
    }

    async fn mkdir(&self, rel: &[u8], mode: Option<u32>) -> Result<()> {
        match self.dir {
            Direction::Up => {
                let p = self.remote(rel);
                self.t.dirlocks.ensure_dir(&p).await?;
                if let Some(m) = mode {
                    self.t.sftp.chmod(&p, m).await?;
                }
                Ok(())
            }
            Direction::Down => {
                let p = self.local(rel);
                let r = match fs::create_dir(&p) {
                    // A real directory, not a link to one: the tree is never written
                    // through a link (it could lead outside the target).
                    Err(e)
                        if e.kind() == std::io::ErrorKind::AlreadyExists
                            && fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) =>
                    {
                        Ok(())
                    }
                    r => r,
                };
                r.map_err(|e| Error::local(format!("cannot create directory {}", p.display()), e))?;
                if let Some(m) = mode {
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&p, fs::Permissions::from_mode(m))
                        .map_err(|e| Error::local(format!("cannot chmod {}", p.display()), e))?;
                }
                Ok(())
            }
        }
    }

    /// Copies one file; `committed` is released once nothing more of this copy changes
    /// the destination directory (see [`Transfer::upload_committing`]).
    async fn copy(
        &self,
        rel: &[u8],
        src: Option<&TreeEntry>,
        committed: Option<&Token>,
    ) -> Result<u64> {
        let (local, remote) = (self.local(rel), self.remote(rel));
        match self.dir {
            Direction::Up => {
                let staged = self.staged;
                self.t
                    .on_some_channel(|t| {
                        // The token stands for "queued before the directory's times" on
                        // the first channel only; elsewhere it goes when the task ends,
                        // after the reply (ordering rule 2 of crate::pool).
                        let committed = committed.filter(|_| t.on_base());
                        let (local, remote) = (&local, &remote);
                        async move {
                            if staged {
                                t.upload_fresh(local, remote, committed).await
                            } else {
                                t.upload_committing(local, remote, committed).await
                            }
                        }
                    })
                    .await
            }
            Direction::Down => {
                let dest = self.local(rel);
                let temp = local_temp(&dest);
                let attrs = src.map(|e| FileAttributes {
                    size: Some(e.size),
                    permissions: Some(e.mode | crate::proto::mode::S_IFREG),
                    atime_mtime: Some((e.mtime as u32, e.mtime as u32)),
                    ..Default::default()
                });
                let (temp_ref, attrs_ref) = (&temp, attrs.as_ref());
                let r = self
                    .t
                    .on_some_channel(|t| {
                        let remote = &remote;
                        async move { t.download_file(remote, temp_ref, attrs_ref, true).await }
                    })
                    .await;
                match r {
                    Ok(n) => fs::rename(&temp, &dest).map(|_| n).map_err(|e| {
                        Error::local(format!("cannot rename onto {}", dest.display()), e)
                    }),
                    Err(e) => {
                        let _ = fs::remove_file(&temp);
                        Err(e)
                    }
                }
            }
        }
    }

    /// Makes the link `rel` → `target` with its own time `mtime`; `slot` says whether the
    /// listing found a file or link to replace there.
    async fn symlink(&self, rel: &[u8], target: &[u8], mtime: i64, slot: LinkSlot) -> Result<()> {
        match self.dir {
            Direction::Up => {
                let remote = self.remote(rel);
                self.t
                    .upload_symlink(target, &remote, Some(mtime), slot)
                    .await
            }
            Direction::Down => {
                let dest = self.local(rel);
                let temp = local_temp(&dest);
                let err = |e| Error::local(format!("cannot create symlink {}", dest.display()), e);
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &temp).map_err(err)?;
                let placed = set_local_link_mtime(&temp, mtime)
                    .and_then(|()| fs::rename(&temp, &dest).map_err(err));
                if placed.is_err() {
                    let _ = fs::remove_file(&temp);
                }
                placed
            }
        }
    }

    /// Sets the own modification time of the link `rel`, whose target is right already.
    async fn link_time(&self, rel: &[u8], mtime: i64) -> Result<()> {
        match self.dir {
            Direction::Up => {
                let t = crate::transfer::to_u32_time(mtime);
                self.t.sftp.lsetstat(self.remote(rel), &link_times(t)).await
            }
            Direction::Down => set_local_link_mtime(&self.local(rel), mtime),
        }
    }

    async fn chmod(&self, rel: &[u8], mode: u32) -> Result<()> {
        match self.dir {
            Direction::Up => self.t.sftp.chmod(self.remote(rel), mode).await,
            Direction::Down => {
                use std::os::unix::fs::PermissionsExt;
                let p = self.local(rel);
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::local(format!("cannot chmod {}", p.display()), e))
            }
        }
    }

    async fn delete(&self, rel: &[u8], kind: EntryKind) -> Result<()> {
        match (self.dir, kind) {
            (Direction::Up, EntryKind::Dir) => self.t.sftp.rmdir(self.remote(rel)).await,
            (Direction::Up, _) => match self.t.sftp.remove(self.remote(rel)).await {
                Err(e) if e.is_not_found() => Ok(()),
                r => r,
            },
            (Direction::Down, EntryKind::Dir) => {
                let p = self.local(rel);
                fs::remove_dir(&p)
                    .map_err(|e| Error::local(format!("cannot remove {}", p.display()), e))
            }
            (Direction::Down, _) => {
                let p = self.local(rel);
                match fs::remove_file(&p) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    r => r.map_err(|e| Error::local(format!("cannot remove {}", p.display()), e)),
                }
            }
        }
    }

    async fn set_dir_mtime(&self, rel: &[u8], mtime: i64) -> Result<()> {
        let t = mtime.clamp(0, u32::MAX as i64) as u32;
        match self.dir {
            Direction::Up => self.t.sftp.set_times(self.remote(rel), t, t).await,
            Direction::Down => {
                let p = self.local(rel);
                let when = std::time::UNIX_EPOCH + Duration::from_secs(t as u64);
                fs::File::open(&p)
                    .and_then(|f| {
                        f.set_times(fs::FileTimes::new().set_accessed(when).set_modified(when))
                    })
                    .map_err(|e| Error::local(format!("cannot set times of {}", p.display()), e))
            }
        }
    }
}

/// A hidden temporary name beside a local file.
fn local_temp(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.as_bytes()).unwrap_or(b"file");
    let temp = crate::transfer::temp_name(name);
    dest.with_file_name(OsStr::from_bytes(&temp))
}

/// How many subdirectories [`guess_remote_dirs`] names at most: each guess holds a server
/// handle until the listing takes it.
pub const MAX_GUESSED_DIRS: usize = 128;

/// The remote directories a mirror between `local_root` and `remote_root` will most likely
/// list: the local tree's subdirectories (shallowest first, at most `max`), under
/// `remote_root`. Sent as [`Prefetch::guessed_dirs`](crate::Prefetch::guessed_dirs) with
/// the handshake, they let the whole remote listing take one round trip instead of two per
/// level when both sides already look alike (a re-mirror). Reads only directory entries:
/// no STAT per file, symlinks not followed, unreadable directories skipped.
pub fn guess_remote_dirs(local_root: &Path, remote_root: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut guesses = Vec::new();
    let mut queue = std::collections::VecDeque::from([(local_root.to_path_buf(), Vec::new())]);
    while let Some((dir, rel)) = queue.pop_front() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if guesses.len() >= max {
                return guesses;
            }
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name();
            let child_rel = if rel.is_empty() {
                name.as_bytes().to_vec()
            } else {
                remote_join(&rel, name.as_bytes())
            };
            guesses.push(remote_join(remote_root, &child_rel));
            queue.push_back((entry.path(), child_rel));
        }
    }
    guesses
}

/// `t` with `preserve_times` on unless [`MirrorOptions::no_times`]; the context is
/// otherwise the same (its report, limits and progress).
fn keeping_times(t: &Transfer, opts: &MirrorOptions) -> Transfer {
    let mut t = t.clone();
    if !opts.no_times && !t.opts.preserve_times {
        t.opts = Rc::new(crate::transfer::TransferOptions {
            preserve_times: true,
            ..(*t.opts).clone()
        });
    }
    t
}

/// Mirrors the local tree `local_root` into the remote directory `remote_root`.
///
/// Modification times are kept (unless [`MirrorOptions::no_times`]) whatever `t`'s
/// options say, as the CLI does. Run it on a [`crate::Session`]'s runtime, or use
/// [`crate::Client::mirror_up`] from any thread or executor.
///
/// ```no_run
/// use std::rc::Rc;
/// use sftpipe::mirror::{MirrorOptions, mirror_up};
/// use sftpipe::transfer::{NoProgress, TransferOptions};
/// use sftpipe::{ConnectOptions, Session};
/// # fn main() -> sftpipe::Result<()> {
/// let session = Session::connect(&ConnectOptions::host("www.example.org"))?;
/// let t = session.transfer(TransferOptions::default(), Rc::new(NoProgress));
/// let opts = MirrorOptions::default();
/// let report = session.run(mirror_up(&t, "site".as_ref(), b"/var/www/site", &opts));
/// println!("{} copied, {} unchanged", report.copied, report.unchanged);
/// # Ok(()) }
/// ```
pub async fn mirror_up(
    t: &Transfer,
    local_root: &Path,
    remote_root: &[u8],
    opts: &MirrorOptions,
) -> MirrorReport {
    let local = snapshot_local(local_root, opts);
    mirror_up_listed(t, local_root, local, remote_root, opts).await
}

/// [`mirror_up`] with the local tree already listed by [`snapshot_local`] (with the same
/// options), e.g. on another thread while the connection was being set up.
pub async fn mirror_up_listed(
    t: &Transfer,
    local_root: &Path,
    local: Result<Option<LocalSnapshot>>,
    remote_root: &[u8],
    opts: &MirrorOptions,
) -> MirrorReport {
    let sides = Sides {
        t: keeping_times(t, opts),
        dir: Direction::Up,
        local_root: Rc::new(local_root.to_path_buf()),
        remote_root: Rc::new(remote_root.to_vec()),
        remote_name: Rc::new(remote_root.to_vec()),
        staged: false,
    };
    run(sides, local, opts).await
}

/// Mirrors the remote directory `remote_root` into the local directory `local_root`.
pub async fn mirror_down(
    t: &Transfer,
    remote_root: &[u8],
    local_root: &Path,
    opts: &MirrorOptions,
) -> MirrorReport {
    let local = snapshot_local(local_root, opts);
    mirror_down_listed(t, remote_root, local_root, local, opts).await
}

/// [`mirror_down`] with the local tree already listed by [`snapshot_local`] (with the
/// same options).
pub async fn mirror_down_listed(
    t: &Transfer,
    remote_root: &[u8],
    local_root: &Path,
    local: Result<Option<LocalSnapshot>>,
    opts: &MirrorOptions,
) -> MirrorReport {
    let sides = Sides {
        t: keeping_times(t, opts),
        dir: Direction::Down,
        local_root: Rc::new(local_root.to_path_buf()),
        remote_root: Rc::new(remote_root.to_vec()),
        remote_name: Rc::new(remote_root.to_vec()),
        staged: false,
    };
    run(sides, local, opts).await
}

/// Both trees, as the plan compares them.
struct Trees {
    source: Snapshot,
    dest: Snapshot,
    dest_root_exists: bool,
    /// Some remote directory could not be listed: deletes are not safe.
    incomplete_listing: bool,
}

/// Lists the remote tree and takes the local one, recording what could not be read; `None`
/// when nothing can be done (the recorded failures say why).
async fn list_trees(
    sides: &Sides,
    local: Result<Option<LocalSnapshot>>,
    opts: &MirrorOptions,
) -> Option<Trees> {
    let t = &sides.t;
    let remote_is_dest = sides.dir == Direction::Up;
    let remote = snapshot_remote_as(t, &sides.remote_root, opts, remote_is_dest).await;
    let (local, (remote, listing_failures)) = match (local, remote) {
        (Ok(l), Ok(r)) => (l, r),
        (Err(e), _) => {
            t.record_failure(sides.local_root.display().to_string(), e);
            return None;
        }
        (_, Err(e)) => {
            t.record_failure(lossy(&sides.remote_root), e);
            return None;
        }
    };
    let incomplete_listing = !listing_failures.is_empty();
    let connection_lost = listing_failures.iter().any(|(_, e)| e.is_connection());
    for (path, e) in listing_failures {
        t.record_failure(path, e);
    }
    if connection_lost {
        // Nothing more can be done; the listing's errors already say why.
        return None;
    }
    // What could not be read locally is one failure each; the plan leaves it alone.
    let local = local.map(|l| {
        for (rel, e) in l.unreadable {
            t.record_failure(sides.dest_name(&rel), e);
        }
        l.tree
    });
    let (source, dest, dest_root_exists) = match sides.dir {
        Direction::Up => {
            let Some(src) = local else {
                t.record_failure(
                    sides.local_root.display().to_string(),
                    Error::local(
                        format!("cannot read {}", sides.local_root.display()),
                        std::io::ErrorKind::NotFound.into(),
                    ),
                );
                return None;
            };
            let exists = remote.is_some();
            (src, remote.unwrap_or_default(), exists)
        }
        Direction::Down => {
            let Some(src) = remote else {
                t.record_failure(
                    lossy(&sides.remote_root),
                    Error::Status {
                        op: "mirror",
                        path: lossy(&sides.remote_root),
                        code: crate::StatusCode::NoSuchFile,
                        message: "no such directory".into(),
                    },
                );
                return None;
            };
            let exists = local.is_some();
            (src, local.unwrap_or_default(), exists)
        }
    };
    Some(Trees {
        source,
        dest,
        dest_root_exists,
        incomplete_listing,
    })
}

/// A new remote tree is built in a staging directory (resuming one a killed mirror left)
/// and renamed into place at the end: one rename for the tree instead of one per file,
/// and nobody sees it half made. Returns the sides writing into it and what it holds;
/// `None` when the staged tree cannot be used (the recorded failure says why).
async fn stage(sides: Sides, trees: Trees, opts: &MirrorOptions) -> Option<(Sides, Trees)> {
    let staging = match sides.dir {
        Direction::Up if !trees.dest_root_exists => staging_dir(&sides.remote_root),
        _ => None,
    };
    let Some(staging) = staging else {
        return Some((sides, trees));
    };
    let t = sides.t.clone();
    let (partial, listing_failures) = match snapshot_remote_as(&t, &staging, opts, true).await {
        Ok(r) => r,
        Err(e) => {
            t.record_failure(lossy(&staging), e);
            return None;
        }
    };
    if !listing_failures.is_empty() {
        for (path, e) in listing_failures {
            t.record_failure(path, e);
        }
        return None;
    }
    let sides = Sides {
        remote_root: Rc::new(staging),
        staged: true,
        ..sides
    };
    let exists = partial.is_some();
    let mut partial = partial.unwrap_or_default();
    // A dry run changes nothing, not even the staged tree.
    if exists && !opts.dry_run {
        log::info!("resuming the staged tree {}", lossy(&sides.remote_root));
        if let Err(e) = prune_staged(&sides, &trees.source, &mut partial).await {
            t.record_failure(
                format!(
                    "{} (could not clear the staged tree {} left by an earlier run)",
                    sides.dest_name(b""),
                    lossy(&sides.remote_root)
                ),
                e,
            );
            return None;
        }
    }
    let trees = Trees {
        dest: partial,
        dest_root_exists: exists,
        ..trees
    };
    Some((sides, trees))
}

/// Removes from a resumed staging tree what a fresh mirror would not make there: entries
/// the source lacks or excludes, the killed run's temporary files among them (with or
/// without `--delete`: the staging tree is the mirror's own). Entries of another kind are
/// left to the plan, which replaces them; what either side could not read is left alone.
async fn prune_staged(sides: &Sides, source: &Snapshot, partial: &mut Snapshot) -> Result<()> {
    let everything = Compare {
        delete: true,
        delete_excluded: true,
        ..Compare::default()
    };
    let mut extras: Vec<(Vec<u8>, EntryKind)> = Vec::new();
    let mut removed: HashSet<Vec<u8>> = HashSet::new();
    for a in plan(source, partial, &everything).actions {
        // Parents come first; a directory goes with everything below it.
        if let Action::Delete { path, kind } = a
            && !plan::covered(&removed, &path)
        {
            removed.insert(path.clone());
            extras.push((path, kind));
        }
    }
    let removals = extras
        .iter()
        .map(|(rel, kind)| sides.remove_dest(rel, *kind));
    for r in futures_util::future::join_all(removals).await {
        match r {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
    }
    partial.retain(|p, _| !plan::covered(&removed, p));
    Ok(())
}

/// ProFTPD answers READLINK with the absolute path a link resolves to, not its text: a
/// destination link whose answer is where the source link's relative target leads (from
/// the remote root's real path) is taken as that same link, so an unchanged tree is not
/// re-linked on every run. Costs one REALPATH, only when such an answer is seen.
async fn match_resolved_links(sides: &Sides, source: &Snapshot, dest: &mut Snapshot) {
    let candidates: Vec<(&Vec<u8>, &Vec<u8>)> = source
        .iter()
        .filter_map(|(path, src)| {
            let want = src.target.as_ref()?;
            let got = dest.get(path)?.target.as_ref()?;
            (src.kind == EntryKind::Symlink
                && !want.starts_with(b"/")
                && got.starts_with(b"/")
                && want != got)
                .then_some((path, want))
        })
        .collect();
    if candidates.is_empty() {
        return;
    }
    let root = match sides.t.sftp.realpath(sides.remote_root.as_slice()).await {
        Ok(root) => root,
        Err(e) => {
            log::debug!("{e}; links are compared by their text");
            return;
        }
    };
    for (path, want) in candidates {
        let parent = path
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(&b""[..], |i| &path[..i]);
        let resolved = remote_normalize(&remote_join(&remote_join(&root, parent), want));
        if let Some(entry) = dest.get_mut(path)
            && entry.target.as_deref() == Some(resolved.as_slice())
        {
            entry.target = Some(want.clone());
        }
    }
}

async fn run(
    sides: Sides,
    local: Result<Option<LocalSnapshot>>,
    opts: &MirrorOptions,
) -> MirrorReport {
    let started = Instant::now();
    let mut report = MirrorReport::default();
    let t = sides.t.clone();
    // Every failure goes through the transfer context, so progress sinks see them all.
    let fail = |report: &mut MirrorReport, path: String, e: Error| {
        t.record_failure(path, e);
        report.elapsed = started.elapsed();
    };

    let listed = match list_trees(&sides, local, opts).await {
        Some(trees) => stage(sides, trees, opts).await,
        None => None,
    };
    let Some((sides, trees)) = listed else {
        report.elapsed = started.elapsed();
        return finish(report, &t);
    };
    let Trees {
        source,
        mut dest,
        dest_root_exists,
        incomplete_listing,
    } = trees;
    if sides.dir == Direction::Up {
        match_resolved_links(&sides, &source, &mut dest).await;
    }
    // Prefetched answers the listings did not take: guessed directories that are excluded
    // or not directories there, the staging directory of a root that exists.
    t.sftp.discard_prefetched().await;
    // Links' own times count only where they can be set (else every run would redo them).
    let compare = Compare {
        link_times: sides.dir == Direction::Down || t.sftp.has_extension(ext::LSETSTAT),
        ..opts.compare.clone()
    };
    let the_plan = plan(&source, &dest, &compare);
    t.ready().await;
    report.unchanged = the_plan.unchanged;
    if opts.dry_run {
        report.plan = the_plan;
        report.elapsed = started.elapsed();
        return finish(report, &t);
    }

    // Tell the directory locks what the listing proved, so no upload probes.
    if sides.dir == Direction::Up {
        if dest_root_exists {
            t.dirlocks.mark_exists(&sides.remote_root);
        } else {
            t.dirlocks.mark_missing(&sides.remote_root);
        }
        let replaced: HashSet<&[u8]> = the_plan
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Mkdir { .. }))
            .map(|a| a.path())
            .collect();
        for (rel, e) in &dest {
            if e.kind == EntryKind::Dir && !replaced.contains(rel.as_slice()) {
                t.dirlocks.mark_exists(&sides.remote(rel));
            }
        }
        for a in &the_plan.actions {
            if let Action::Mkdir { path, .. } = a {
                t.dirlocks.mark_missing(&sides.remote(path));
            }
        }
    } else if !dest_root_exists && let Err(e) = fs::create_dir_all(&*sides.local_root) {
        fail(
            &mut report,
            sides.local_root.display().to_string(),
            Error::local(format!("cannot create {}", sides.local_root.display()), e),
        );
        return finish(report, &t);
    }

    let (files, bytes) = the_plan.copy_totals();
    t.progress.add_total(files, bytes);
    let counters = Rc::new(RefCell::new(Counters::default()));
    let limit = t.task_limit();
    let source = Rc::new(source);

    // Phase 1: clear what stands in the way of a type change.
    let mut phase = TaskGroup::new(limit);
    for a in &the_plan.actions {
        let replaces = match a {
            Action::Copy {
                replaces: Some(k), ..
            }
            | Action::Mkdir {
                replaces: Some(k), ..
            }
            | Action::Symlink {
                replaces: Some(k), ..
            } => *k,
            _ => continue,
        };
        // Renames replace files atomically, and links replace what is in their way
        // themselves. Directories (and a file where a directory must go) need removing
        // first, and so does a link where a file goes: a rename onto a link may follow it
        // (ProFTPD's does, and overwrites the file it points to).
        let link_under_file = replaces == EntryKind::Symlink && matches!(a, Action::Copy { .. });
        if replaces != EntryKind::Dir && !matches!(a, Action::Mkdir { .. }) && !link_under_file {
            continue;
        }
        let (s, rel) = (sides.clone(), a.path().to_vec());
        phase
            .spawn(async move {
                if let Err(e) = s.remove_dest(&rel, replaces).await {
                    s.t.record_failure(s.dest_name(&rel), e);
                }
            })
            .await;
    }
    phase.join().await;

    // Directory times go last. Remote ones can go out as soon as every action of phases 2
    // and 3 has queued its last request that changes a directory (the server applies
    // requests in order), saving the round trip of waiting for those replies; with deletes
    // to come, or locally, they wait for the end.
    let stale_dirs = stale_dir_times(&source, &dest, &the_plan);
    let has_deletes = the_plan
        .actions
        .iter()
        .any(|a| matches!(a, Action::Delete { .. }));
    let writers = Countdown::new();
    let mut tokens: Vec<Option<Token>> = Vec::new();
    let early_times =
        (sides.dir == Direction::Up && !has_deletes && !stale_dirs.is_empty()).then(|| {
            // Only actions that add entries to a directory move its time.
            tokens = the_plan
                .actions
                .iter()
                .map(|a| {
                    matches!(
                        a,
                        Action::Copy { .. } | Action::Mkdir { .. } | Action::Symlink { .. }
                    )
                    .then(|| writers.token())
                })
                .collect();
            let (s, writers, dirs) = (sides.clone(), writers.clone(), stale_dirs.clone());
            spawn(async move {
                writers.wait().await;
                submit_remote_dir_times(&s, &dirs).await
            })
        });

    // Phase 2 and 3: everything but deletes, `--last` files after the rest.
    let copies = the_plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Copy { .. }))
        .count();
    t.want(crate::pool::Want::Files(copies));
    let preserve_mode = opts.compare.preserve_mode;
    for last_round in [false, true] {
        if last_round && failure_count(&t) > 0 {
            let held = the_plan
                .actions
                .iter()
                .filter(|a| matches!(a, Action::Copy { last: true, .. }))
                .count();
            if held > 0 {
                report.last_skipped = Some(format!(
                    "{held} file(s) matching --last held back because other transfers failed"
                ));
            }
            break;
        }
        let mut phase = TaskGroup::new(limit);
        for (i, a) in the_plan.actions.iter().enumerate() {
            let s = sides.clone();
            let counters = counters.clone();
            let rel = a.path().to_vec();
            // Held by the action's task; released early by uploads, else when it ends.
            let mut token = || tokens.get_mut(i).and_then(Option::take);
            match a {
                Action::Copy { last, .. } if *last == last_round => {
                    let src = source.clone();
                    let token = token();
                    phase
                        .spawn(async move {
                            let r = s.copy(&rel, src.get(&rel), token.as_ref()).await;
                            s.t.finish_file(s.dest_name(&rel).as_bytes(), r);
                        })
                        .await
                }
                Action::Mkdir { .. } if !last_round => {
                    let mode = preserve_mode
                        .then(|| source.get(&rel).map(|e| e.mode))
                        .flatten();
                    let token = token();
                    phase
                        .spawn(async move {
                            let _token = token;
                            match s.mkdir(&rel, mode).await {
                                Ok(()) => counters.borrow_mut().dirs_created += 1,
                                Err(e) => s.t.record_failure(s.dest_name(&rel), e),
                            }
                        })
                        .await
                }
                Action::Symlink {
                    target, replaces, ..
                } if !last_round => {
                    let target = target.clone();
                    let mtime = source.get(&rel).map_or(0, |e| e.mtime);
                    let slot = match replaces {
                        Some(EntryKind::File | EntryKind::Symlink) => LinkSlot::Taken,
                        _ => LinkSlot::Free,
                    };
                    let token = token();
                    phase
                        .spawn(async move {
                            let _token = token;
                            match s.symlink(&rel, &target, mtime, slot).await {
                                Ok(()) => counters.borrow_mut().symlinks += 1,
                                Err(e) => s.t.record_failure(s.dest_name(&rel), e),
                            }
                        })
                        .await
                }
                Action::LinkTime { mtime, .. } if !last_round => {
                    let mtime = *mtime;
                    phase
                        .spawn(async move {
                            if let Err(e) = s.link_time(&rel, mtime).await {
                                s.t.record_failure(s.dest_name(&rel), e);
                            }
                        })
                        .await
                }
                Action::Chmod { mode, .. } if !last_round => {
                    let mode = *mode;
                    phase
                        .spawn(async move {
                            match s.chmod(&rel, mode).await {
                                Ok(()) => counters.borrow_mut().chmods += 1,
                                Err(e) => s.t.record_failure(s.dest_name(&rel), e),
                            }
                        })
                        .await
                }
                _ => {}
            }
        }
        phase.join().await;
    }
    // Actions that did not run (a skipped `--last` round, deletes) hold up nothing.
    drop(tokens);

    // Phase 4: deletes, only when everything else worked and the listing was complete.
    let deletes: Vec<(Vec<u8>, EntryKind)> = the_plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete { path, kind } => Some((path.clone(), *kind)),
            _ => None,
        })
        .collect();
    if !deletes.is_empty() {
        if failure_count(&t) > 0 || incomplete_listing {
            report.deletes_skipped = Some(format!(
                "{} delete(s) skipped because other operations failed",
                deletes.len()
            ));
        } else if opts.max_delete.is_some_and(|m| deletes.len() > m) {
            report.deletes_skipped = Some(format!(
                "refusing to delete {} entries: more than --max-delete {}",
                deletes.len(),
                opts.max_delete.unwrap_or(0)
            ));
        } else {
            // Files and links first, then directories deepest first, a level at a time.
            let mut by_depth: std::collections::BTreeMap<usize, Vec<Vec<u8>>> = Default::default();
            let mut phase = TaskGroup::new(limit);
            for (rel, kind) in deletes {
                if kind == EntryKind::Dir {
                    let depth = rel.iter().filter(|&&b| b == b'/').count();
                    by_depth.entry(depth).or_default().push(rel);
                    continue;
                }
                let (s, counters) = (sides.clone(), counters.clone());
                phase
                    .spawn(async move {
                        match s.delete(&rel, kind).await {
                            Ok(()) => counters.borrow_mut().deleted += 1,
                            Err(e) => s.t.record_failure(s.dest_name(&rel), e),
                        }
                    })
                    .await;
            }
            phase.join().await;
            for (_, dirs) in by_depth.into_iter().rev() {
                let mut phase = TaskGroup::new(limit);
                for rel in dirs {
                    let (s, counters) = (sides.clone(), counters.clone());
                    phase
                        .spawn(async move {
                            match s.delete(&rel, EntryKind::Dir).await {
                                Ok(()) => counters.borrow_mut().deleted += 1,
                                Err(e) => s.t.record_failure(s.dest_name(&rel), e),
                            }
                        })
                        .await;
                }
                phase.join().await;
            }
        }
    }

    // Phase 5: directory times, now that nothing changes inside them. Their replies are
    // in before the staged tree moves (it is published only if nothing failed); sent
    // early, they come in with the last files' replies.
    let pending_times = match early_times {
        Some(job) => job.await,
        None => set_dir_times(&sides, &stale_dirs).await,
    };
    collect_dir_times(&sides, pending_times).await;

    if sides.staged {
        t.move_staged_tree(
            &sides.remote_root,
            &sides.remote_name,
            &sides.dest_name(b""),
        )
        .await;
    }

    {
        let c = counters.borrow();
        report.dirs_created = c.dirs_created;
        report.symlinks = c.symlinks;
        report.chmods = c.chmods;
        report.deleted = c.deleted;
    }
    report.plan = the_plan;
    report.elapsed = started.elapsed();
    finish(report, &t)
}

/// Source directories whose destination time must be set: new, of another kind, with
/// another time, or changed inside by the plan (which moves their time). Excluded ones,
/// and what either side could not read, are left alone.
fn stale_dir_times(source: &Snapshot, dest: &Snapshot, the_plan: &Plan) -> Vec<(Vec<u8>, i64)> {
    let touched: HashSet<&[u8]> = the_plan
        .actions
        .iter()
        .map(|a| {
            let p = a.path();
            match p.iter().rposition(|&b| b == b'/') {
                Some(i) => &p[..i],
                None => &p[..0],
            }
        })
        .collect();
    let unreadable = plan::unreadable_paths(source, dest);
    source
        .iter()
        .filter(|(_, e)| e.kind == EntryKind::Dir && !e.excluded)
        .filter(|(rel, _)| !plan::covered(&unreadable, rel))
        .filter(|(rel, e)| {
            dest.get(*rel)
                .is_none_or(|d| d.kind != EntryKind::Dir || d.mtime != e.mtime)
                || touched.contains(rel.as_slice())
        })
        .map(|(rel, e)| (rel.clone(), e.mtime))
        .collect()
}

/// Sets the destination directories' times: local ones at once, remote ones queued (see
/// [`submit_remote_dir_times`]).
async fn set_dir_times(sides: &Sides, dirs: &[(Vec<u8>, i64)]) -> Vec<(Vec<u8>, PendingReply)> {
    if sides.dir == Direction::Up {
        return submit_remote_dir_times(sides, dirs).await;
    }
    for (rel, mtime) in dirs {
        match sides.set_dir_mtime(rel, *mtime).await {
            Err(e) if !missing_after_failure(&sides.t, &e) => {
                sides.t.record_failure(sides.dest_name(rel), e)
            }
            _ => {}
        }
    }
    Vec::new()
}

/// True for a directory that is missing because making it failed (and said so).
fn missing_after_failure(t: &Transfer, e: &Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound && failure_count(t) > 0
}

/// Queues a SETSTAT of each remote directory's time, without waiting for the replies
/// (see [`collect_dir_times`]). On a connection already lost (and reported), none.
async fn submit_remote_dir_times(
    sides: &Sides,
    dirs: &[(Vec<u8>, i64)],
) -> Vec<(Vec<u8>, PendingReply)> {
    let mut pending = Vec::new();
    if sides.t.sftp.channel().is_dead() && failure_count(&sides.t) > 0 {
        return pending;
    }
    for (rel, mtime) in dirs {
        let t32 = (*mtime).clamp(0, u32::MAX as i64) as u32;
        let req = crate::proto::Request::Setstat {
            path: sides.remote(rel),
            attrs: FileAttributes {
                atime_mtime: Some((t32, t32)),
                ..Default::default()
            },
        };
        match sides.t.sftp.submit(&req).await {
            Ok(reply) => pending.push((rel.clone(), reply)),
            Err(e) => {
                // The connection is gone: the rest would fail the same way.
                sides.t.record_failure(sides.dest_name(rel), e);
                break;
            }
        }
    }
    pending
}

/// Waits for the replies to directory times and records what failed: a lost connection
/// once, a directory that is missing because making it failed not again.
async fn collect_dir_times(sides: &Sides, pending: Vec<(Vec<u8>, PendingReply)>) {
    let mut lost = false;
    for (rel, reply) in pending {
        let path = sides.remote(&rel);
        let r = reply
            .await
            .and_then(|r| crate::client::expect_ok_reply("setstat", &path, r));
        match r {
            Ok(()) => {}
            Err(e) if sides.t.sftp.channel().is_dead() => {
                if !std::mem::replace(&mut lost, true) {
                    sides.t.record_failure(sides.dest_name(&rel), e);
                }
            }
            Err(e) if missing_after_failure(&sides.t, &e) => {}
            Err(e) => sides.t.record_failure(sides.dest_name(&rel), e),
        }
    }
}

/// Moves the transfer context's counts and failures into the report.
fn finish(mut report: MirrorReport, t: &Transfer) -> MirrorReport {
    let tr = t.take_report();
    report.copied = tr.files;
    report.bytes = tr.bytes;
    report.failures.extend(tr.failures);
    report.tree_kept = tr.kept_staged.into_iter().next();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_are_local_subdirectories_shallowest_first_and_capped() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for p in ["a/x/deep", "b", "c"] {
            fs::create_dir_all(root.join(p)).unwrap();
        }
        fs::write(root.join("file"), b"").unwrap();
        fs::write(root.join("a/file"), b"").unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();

        let mut all = guess_remote_dirs(root, b"/srv/r/", 100);
        let depth = |p: &Vec<u8>| p.iter().filter(|&&b| b == b'/').count();
        assert!(
            all.windows(2).all(|w| depth(&w[0]) <= depth(&w[1])),
            "{all:?}"
        );
        all.sort();
        let want: Vec<&[u8]> = vec![
            b"/srv/r/a",
            b"/srv/r/a/x",
            b"/srv/r/a/x/deep",
            b"/srv/r/b",
            b"/srv/r/c",
        ];
        assert_eq!(all, want);

        let few = guess_remote_dirs(root, b"r", 3);
        assert_eq!(few.len(), 3);
        assert!(
            few.iter().all(|p| depth(p) == 1),
            "the top level first: {few:?}"
        );
        assert!(guess_remote_dirs(&root.join("missing"), b"r", 10).is_empty());
    }
}
