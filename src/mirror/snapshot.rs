//! Listing both trees into [`Snapshot`]s: the local one walked, the remote one with every
//! directory listed by its own task (no STAT per file), and the guesses that let the
//! remote listing start with the handshake.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use super::MirrorOptions;
use super::filter::Filter;
use super::plan::{self, EntryKind, Snapshot, TreeEntry};
use crate::client::Sftp;
use crate::error::{Error, Result};
use crate::proto::{FileAttributes, FileType};
use crate::task::{JoinHandle, Semaphore, spawn};
use crate::transfer::{LocalKind, Transfer, remote_join, safe_remote_name, walk_local_with};

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
            TreeEntry::dir(meta.mtime(), meta.permissions().mode() & 0o7777),
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
            TreeEntry::listed(
                kind,
                size,
                e.mtime,
                e.mode,
                target,
                e.excluded || below_excluded,
            ),
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
pub(super) fn mark_unreadable(snap: &mut Snapshot, rel: &[u8]) {
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

pub(super) fn entry_from_attrs(a: &FileAttributes) -> (EntryKind, u64, i64, u32) {
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
                TreeEntry::listed(kind, size, mtime, mode, None, excluded),
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
pub(super) async fn snapshot_remote_as(
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
    walk.snap
        .borrow_mut()
        .insert(Vec::new(), TreeEntry::dir(mtime, mode));
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
    crate::task::join_growing(&walk.tasks).await;
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
