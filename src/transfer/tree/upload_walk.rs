//! `put -r`, streaming: the local tree is read [`DIRS_IN_FLIGHT`] directories at a time,
//! and a directory's files start uploading as soon as it is read, so uploads run while
//! deeper directories are still being read. A directory stays in flight until its last
//! file has a transfer slot: memory follows the directories in flight and the slots, not
//! the tree. Directory attributes (`-p`) wait for the end, deepest first.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::local::{LocalEntry, LocalKind, list_local_dir, local_entry};
use super::staging::StagedKind;
use super::{DIRS_IN_FLIGHT, TreeWalk, rel_to_remote, spawn_in_slot};
use crate::proto::FileAttributes;
use crate::task::walk_stack;
use crate::transfer::LinkSlot;
use crate::transfer::{Transfer, lossy};

/// Where the entries of a tree upload are written, and the names they are reported by.
pub(super) struct TreeDest {
    pub(super) write_root: Vec<u8>,
    pub(super) shown_root: Vec<u8>,
    /// Writing into a staging directory: small files need no temporary name.
    pub(super) staged: bool,
    /// The staging directory was left by an earlier run: each directory is cleared of
    /// what the local tree lacks before its files go.
    pub(super) resume: bool,
}

impl TreeDest {
    /// Writing straight into `root`.
    pub(super) fn in_place(root: &[u8]) -> Self {
        TreeDest {
            write_root: root.to_vec(),
            shown_root: root.to_vec(),
            staged: false,
            resume: false,
        }
    }
}

/// A local directory still to read: relative to the root, with its names when they are
/// read already (the root's).
struct UpDir {
    rel: PathBuf,
    names: Option<Vec<OsString>>,
}

/// What the directories of one tree upload share: the walk (its `stop` is set when a
/// staged tree could not be cleared: nothing more starts, nothing moves into place; its
/// directory attributes carry each remote directory's depth), and where it writes.
struct UploadWalk {
    walk: TreeWalk<UpDir, (usize, Vec<u8>, FileAttributes)>,
    local_root: PathBuf,
    dest: TreeDest,
}

impl std::ops::Deref for UploadWalk {
    type Target = TreeWalk<UpDir, (usize, Vec<u8>, FileAttributes)>;

    fn deref(&self) -> &Self::Target {
        &self.walk
    }
}

impl UploadWalk {
    fn remote(&self, rel: &Path) -> Vec<u8> {
        rel_to_remote(&self.dest.write_root, rel)
    }

    fn shown(&self, rel: &Path) -> String {
        lossy(&rel_to_remote(&self.dest.shown_root, rel))
    }
}

impl Transfer {
    /// Streams the tree `local_root`, whose root holds `root_names`, to `dest`. False
    /// when a staged tree could not be cleared (recorded): it must not move into place.
    pub(super) async fn upload_streamed(
        &self,
        local_root: &Path,
        dest: TreeDest,
        root_names: Vec<OsString>,
    ) -> bool {
        self.ready().await;
        let root = UpDir {
            rel: PathBuf::new(),
            names: Some(root_names),
        };
        let walk = Rc::new(UploadWalk {
            walk: TreeWalk::new(self, root),
            local_root: local_root.to_path_buf(),
            dest,
        });
        keep_root_attrs(&walk);
        walk_stack(&walk.stack, DIRS_IN_FLIGHT, &walk.stop, |dir| {
            visit(walk.clone(), dir)
        })
        .await;
        walk.files.wait().await;
        if walk.stop.get() {
            return false;
        }
        let mut dirs = walk.dir_attrs.take();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
        let dirs = dirs.into_iter().map(|(_, p, a)| (p, a)).collect();
        self.set_remote_dir_attrs(dirs).await;
        true
    }
}

/// With `-p`: keeps the root's attributes for the end.
fn keep_root_attrs(walk: &UploadWalk) {
    if let Some(a) = walk.t.local_dir_attrs(&walk.local_root) {
        let root = walk.dest.write_root.clone();
        walk.dir_attrs.borrow_mut().push((0, root, a));
    }
}

/// Reads one local directory and starts its entries: files and links as tasks (each once
/// a transfer slot is free), subdirectories queued; an empty directory is made.
async fn visit(walk: Rc<UploadWalk>, mut dir: UpDir) {
    let Some(names) = read_names(&walk, &mut dir) else {
        // Nothing is made for it, but its parent is, even with nothing else in it.
        let parent = dir.rel.parent().unwrap_or(Path::new(""));
        return make_dir(&walk, parent, false).await;
    };
    let (entries, unread) = examine(&walk, &dir.rel, names);
    // Below a directory the staged tree lacked, nothing was left to remove.
    let staged_before = walk.dest.resume && !walk.t.dirlocks.is_new(&walk.remote(&dir.rel));
    if staged_before && !prune_level(&walk, &dir.rel, &entries, unread).await {
        return;
    }
    count_files(&walk, &entries);
    if entries.is_empty() {
        let counted = !dir.rel.as_os_str().is_empty();
        return make_dir(&walk, &dir.rel, counted).await;
    }
    for entry in entries {
        start_entry(&walk, entry).await;
    }
}

/// The names in `dir`; `None` (recorded) when it cannot be read.
fn read_names(walk: &UploadWalk, dir: &mut UpDir) -> Option<Vec<OsString>> {
    if let Some(names) = dir.names.take() {
        return Some(names);
    }
    match list_local_dir(&walk.local_root.join(&dir.rel)) {
        Ok(names) => Some(names),
        Err(e) => {
            walk.t.record_failure(walk.shown(&dir.rel), e);
            None
        }
    }
}

/// The entries of one read directory, and the names that could not be examined
/// (recorded as failures).
fn examine(
    walk: &UploadWalk,
    rel: &Path,
    names: Vec<OsString>,
) -> (Vec<LocalEntry>, Vec<OsString>) {
    let (mut entries, mut unread) = (Vec::with_capacity(names.len()), Vec::new());
    let follow = walk.t.opts.follow_links;
    for name in names {
        let rel = rel.join(&name);
        match local_entry(&walk.local_root, &rel, follow, &|_, _| (false, true)) {
            Ok(Some((entry, _))) => entries.push(entry),
            Ok(None) => {}
            Err(e) => {
                walk.t.record_failure(walk.shown(&rel), e);
                unread.push(name);
            }
        }
    }
    (entries, unread)
}

/// Removes from the staged counterpart of `rel` what this directory's entries would not
/// overwrite (see [`Transfer::prune_staged_level`]), and tells the directory locks which
/// subdirectories are staged already. False (recorded) when that failed: the walk stops,
/// and the staged tree stays.
async fn prune_level(
    walk: &UploadWalk,
    rel: &Path,
    entries: &[LocalEntry],
    unread: Vec<OsString>,
) -> bool {
    let name = |p: &Path| p.file_name().unwrap_or_default().as_bytes().to_vec();
    let mut keep: HashMap<Vec<u8>, StagedKind> = entries
        .iter()
        .map(|e| {
            let kind = match e.kind {
                LocalKind::File { .. } => StagedKind::File,
                LocalKind::Dir => StagedKind::Dir,
                LocalKind::Symlink { .. } => StagedKind::Symlink,
            };
            (name(&e.rel), kind)
        })
        .collect();
    keep.extend(
        unread
            .into_iter()
            .map(|n| (n.as_bytes().to_vec(), StagedKind::Unread)),
    );
    let t = &walk.t;
    match t.prune_staged_level(&walk.remote(rel), &keep).await {
        Ok(kept) => {
            let kept: HashSet<Vec<u8>> = kept.into_iter().collect();
            for dir in entries.iter().filter(|e| e.kind == LocalKind::Dir) {
                let remote = walk.remote(&dir.rel);
                if kept.contains(&remote) {
                    t.dirlocks.mark_exists(&remote);
                } else {
                    t.dirlocks.mark_missing(&remote);
                }
            }
            true
        }
        Err(e) => {
            let what = format!(
                "{} (could not clear the staged tree {} left by an earlier run)",
                lossy(&walk.dest.shown_root),
                lossy(&walk.dest.write_root)
            );
            t.record_failure(what, e);
            walk.stop.set(true);
            false
        }
    }
}

/// Adds a directory's files to the progress totals, and tells the channel pool.
fn count_files(walk: &UploadWalk, entries: &[LocalEntry]) {
    let (files, bytes) = entries.iter().fold((0, 0), |(f, b), e| match e.kind {
        LocalKind::File { size } => (f + 1, b + size),
        _ => (f, b),
    });
    walk.t.progress.add_total(files, bytes);
    let seen = walk.files_seen.get() + files as usize;
    walk.files_seen.set(seen);
    walk.t.want(crate::pool::Want::Files(seen));
}

/// Makes a directory that has no entries, as a task (the others are made by their
/// entries' uploads, through the directory locks); `counted` in the report's directories.
async fn make_dir(walk: &UploadWalk, rel: &Path, counted: bool) {
    let (t, remote, shown) = (walk.t.clone(), walk.remote(rel), walk.shown(rel));
    let make = async move {
        match t.dirlocks.ensure_dir(&remote).await {
            Ok(()) if counted => t.report.borrow_mut().dirs += 1,
            Ok(()) => {}
            Err(e) => t.record_failure(shown, e),
        }
    };
    spawn_in_slot(&walk.slots, &walk.files, make).await
}

/// Starts one entry: a file's or link's upload as a task, a directory queued.
async fn start_entry(walk: &UploadWalk, entry: LocalEntry) {
    let t = walk.t.clone();
    let (remote, shown) = (walk.remote(&entry.rel), walk.shown(&entry.rel));
    match entry.kind {
        LocalKind::Dir => {
            if let Some(a) = t.dir_attrs(entry.mtime, entry.mode) {
                let depth = entry.rel.components().count();
                walk.dir_attrs.borrow_mut().push((depth, remote, a));
            }
            let dir = UpDir {
                rel: entry.rel,
                names: None,
            };
            walk.stack.borrow_mut().push(dir);
        }
        LocalKind::File { .. } => {
            let (local, staged) = (walk.local_root.join(&entry.rel), walk.dest.staged);
            let upload = async move {
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
                t.finish_file(shown.as_bytes(), r);
            };
            spawn_in_slot(&walk.slots, &walk.files, upload).await
        }
        LocalKind::Symlink { target } => {
            let mtime = t.opts.preserve_times.then_some(entry.mtime);
            let link = async move {
                let target = target.as_os_str().as_bytes();
                let r = t
                    .upload_symlink(target, &remote, mtime, LinkSlot::Free)
                    .await;
                match r {
                    Err(e) => t.record_failure(shown, e),
                    Ok(()) => t.report.borrow_mut().symlinks += 1,
                }
            };
            spawn_in_slot(&walk.slots, &walk.files, link).await
        }
    }
}
