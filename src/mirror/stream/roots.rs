//! Where a streaming mirror starts: both roots examined, a new remote tree staged, the
//! guessed directories listed at once.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::rc::Rc;

use super::{Walk, compare_level};
use crate::error::{Error, Result};
use crate::mirror::MirrorOptions;
use crate::mirror::apply::task_slots;
use crate::mirror::plan::{Compare, Snapshot, TreeEntry};
use crate::mirror::sides::{Direction, Sides};
use crate::mirror::snapshot::entry_from_attrs;
use crate::proto::ext;
use crate::task::{Countdown, Semaphore, spawn};
use crate::transfer::{lossy, staging_dir};

/// Examines both roots, stages a new tree; `None` when nothing can be done (the recorded
/// failure says why).
pub(super) async fn start(sides: Sides, opts: &MirrorOptions) -> Option<Rc<Walk>> {
    let t = sides.t.clone();
    let up = sides.dir == Direction::Up;
    let (src_root, dest_root) = roots(&sides, opts).await?;
    let (sides, dest_root) = match dest_root {
        None if up => stage(sides).await?,
        d => (sides, d),
    };
    if up && dest_root.is_some() {
        t.dirlocks.mark_exists(&sides.remote_root);
    } else if up {
        t.dirlocks.mark_missing(&sides.remote_root);
    } else if dest_root.is_none()
        && let Err(e) = fs::create_dir_all(&*sides.local_root)
    {
        let root = sides.local_root.display();
        t.record_failure(
            root.to_string(),
            Error::local(format!("cannot create {root}"), e),
        );
        return None;
    }
    // Links' own times count only where they can be set (else every run would redo them).
    let compare = Compare {
        link_times: !up || t.sftp.has_extension(ext::LSETSTAT),
        ..opts.compare.clone()
    };
    t.ready().await;
    let walk = Rc::new(Walk {
        sides,
        opts: opts.clone(),
        compare,
        stack: RefCell::new(Vec::new()),
        writes: Semaphore::new(task_slots(&t)),
        writers: Countdown::new(),
        counters: Rc::default(),
        unchanged: Cell::new(0),
        copies: Cell::new(0),
        last: RefCell::default(),
        deletes: RefCell::default(),
        dir_times: RefCell::default(),
        incomplete: Cell::new(false),
        stop: Cell::new(false),
        guessed: RefCell::new(HashMap::new()),
        may_grow: Cell::new(false),
    });
    if !up || dest_root.is_some() {
        start_guesses(&walk);
    } else {
        // Nothing to list: guesses (of a missing root) go before files stream.
        t.sftp.discard_prefetched().await;
    }
    // The root is the one entry of a level above it: made, replaced or chmodded there.
    let src = Snapshot::from([(Vec::new(), src_root)]);
    let dest: Snapshot = dest_root.map(|e| (Vec::new(), e)).into_iter().collect();
    compare_level(&walk, None, src, dest).await;
    Some(walk)
}

/// Both roots' entries: the source's, and the destination's if it exists; `None` when
/// nothing can be done (the recorded failure says why).
async fn roots(sides: &Sides, opts: &MirrorOptions) -> Option<(TreeEntry, Option<TreeEntry>)> {
    let t = &sides.t;
    let up = sides.dir == Direction::Up;
    let remote = remote_root_entry(sides, if up { "put" } else { "get" }).await;
    let (local, remote) = sides.both_roots(local_root_entry(&sides.local_root, opts), remote)?;
    let (src, dest, missing) = if up {
        let root = sides.local_root.display();
        let e = Error::local(
            format!("cannot read {root}"),
            std::io::ErrorKind::NotFound.into(),
        );
        (local, remote, (root.to_string(), e))
    } else {
        let e = Error::Status {
            op: "mirror",
            path: lossy(&sides.remote_root),
            code: crate::StatusCode::NoSuchFile,
            message: "no such directory".into(),
        };
        (remote, local, (lossy(&sides.remote_root), e))
    };
    match src {
        Some(src) => Some((src, dest)),
        None => {
            t.record_failure(missing.0, missing.1);
            None
        }
    }
}

/// A new remote tree is built in a staging directory, resumed if an earlier run left
/// one (see [`super::staging`]): the sides writing there and its root, if it exists.
async fn stage(sides: Sides) -> Option<(Sides, Option<TreeEntry>)> {
    let Some(staging) = staging_dir(&sides.remote_root) else {
        return Some((sides, None));
    };
    let staged = Sides {
        remote_root: Rc::new(staging),
        staged: true,
        ..sides
    };
    match remote_root_entry(&staged, "put").await {
        Ok(e) => {
            if e.is_some() {
                log::info!("resuming the staged tree {}", lossy(&staged.remote_root));
            }
            Some((staged, e))
        }
        Err(e) => {
            staged.t.record_failure(lossy(&staged.remote_root), e);
            None
        }
    }
}

/// Lists the guessed directories the handshake prefetched, all at once.
fn start_guesses(walk: &Walk) {
    let sftp = &walk.sides.t.sftp;
    let mut guessed = walk.guessed.borrow_mut();
    for dir in sftp.guessed_dirs() {
        let sftp = sftp.clone();
        let path = dir.clone();
        guessed.insert(dir, spawn(async move { sftp.read_dir(&path).await }));
    }
}

/// The local root's entry, `None` when missing; an error for one that is no directory.
fn local_root_entry(root: &Path, opts: &MirrorOptions) -> Result<Option<TreeEntry>> {
    let cannot = |e| Error::local(format!("cannot read {}", root.display()), e);
    let m = match fs::symlink_metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        m => m.map_err(cannot)?,
    };
    if !(m.is_dir() || (opts.copy_links && root.is_dir())) {
        return Err(Error::InvalidInput(format!(
            "mirror takes directories: {} is not one (use put to copy a file)",
            root.display()
        )));
    }
    let m = fs::metadata(root).map_err(cannot)?;
    Ok(Some(TreeEntry::dir(
        m.mtime(),
        m.permissions().mode() & 0o7777,
    )))
}

/// The remote root's entry (the staging directory's, when staged); `None` when missing.
/// `instead` is the command that copies a file, for a root that is one.
async fn remote_root_entry(sides: &Sides, instead: &str) -> Result<Option<TreeEntry>> {
    let root = sides.remote_root.as_slice();
    match sides.t.sftp.stat(root).await {
        Ok(a) if a.is_dir() => {
            let (_, _, mtime, mode) = entry_from_attrs(&a);
            Ok(Some(TreeEntry::dir(mtime, mode)))
        }
        Ok(_) => Err(Error::InvalidInput(format!(
            "mirror takes directories: remote {} is not one (use {instead} to copy a file)",
            lossy(root)
        ))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}
