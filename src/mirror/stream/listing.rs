//! One directory's entries on either side, as a streaming mirror lists them.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{Dir, Walk};
use crate::error::Error;
use crate::mirror::plan::{self, EntryKind, Snapshot, TreeEntry};
use crate::mirror::snapshot::{entry_from_attrs, mark_unreadable};
use crate::transfer::{
    LocalKind, list_local_dir, local_entry, lossy, remote_join, safe_remote_name,
};

/// The local entries of `dir`; `None` (recorded) when it cannot be listed.
pub(super) fn list_local(walk: &Walk, dir: &Dir) -> Option<Snapshot> {
    let (sides, opts) = (&walk.sides, &walk.opts);
    let root = sides.local_root.as_path();
    let rel_dir = Path::new(std::ffi::OsStr::from_bytes(&dir.rel));
    let names = match list_local_dir(&root.join(rel_dir)) {
        Ok(names) => names,
        Err(e) => {
            sides.t.record_failure(sides.dest_name(&dir.rel), e);
            return None;
        }
    };
    let classify = |rel: &Path, is_dir: bool| {
        let excluded =
            dir.excluded || plan::filter_path(&opts.filter, rel.as_os_str().as_bytes(), is_dir);
        (excluded, !excluded || opts.compare.delete_excluded)
    };
    let mut snap = Snapshot::new();
    for name in names {
        let rel = rel_dir.join(&name);
        let key = rel.as_os_str().as_bytes().to_vec();
        match local_entry(root, &rel, opts.copy_links, &classify) {
            // A directory that cannot be listed is unreadable here already, so nothing
            // is made of it, as the whole-tree walk has it.
            Ok(Some((e, _)))
                if e.kind == LocalKind::Dir
                    && let Err(err) = fs::read_dir(root.join(&rel)) =>
            {
                let err = Error::local(format!("cannot list {}", root.join(&rel).display()), err);
                sides.t.record_failure(sides.dest_name(&key), err);
                mark_unreadable(&mut snap, &key);
            }
            Ok(Some((e, _))) => {
                let (kind, size, target) = match e.kind {
                    LocalKind::File { size } => (EntryKind::File, size, None),
                    LocalKind::Dir => (EntryKind::Dir, 0, None),
                    LocalKind::Symlink { target } => (
                        EntryKind::Symlink,
                        0,
                        Some(target.as_os_str().as_bytes().to_vec()),
                    ),
                };
                let entry = TreeEntry::listed(kind, size, e.mtime, e.mode, target, e.excluded);
                snap.insert(key, entry);
            }
            Ok(None) => {}
            Err(e) => {
                sides.t.record_failure(sides.dest_name(&key), e);
                mark_unreadable(&mut snap, &key);
            }
        }
    }
    Some(snap)
}

/// The remote entries of `dir`, link targets read; `None` (recorded) when it cannot be
/// listed: nothing at or below it is then touched, and deletes are off.
pub(super) async fn list_remote(walk: &Walk, dir: &Dir, is_dest: bool) -> Option<Snapshot> {
    let sides = &walk.sides;
    let t = &sides.t;
    let path = sides.remote(&dir.rel);
    let guessed = walk.guessed.borrow_mut().remove(&path);
    let listing = match guessed {
        Some(listing) => listing.await,
        None => {
            let _permit = t.open_files.acquire(1).await;
            t.sftp.read_dir(&path).await
        }
    };
    let entries = match listing {
        Ok(e) => e,
        Err(e) => {
            walk.incomplete.set(true);
            walk.stop.set(walk.stop.get() || e.is_connection());
            t.record_failure(lossy(&path), e);
            return None;
        }
    };
    let mut snap = Snapshot::new();
    let mut links = Vec::new();
    for entry in entries {
        let refused = match safe_remote_name(&entry.filename) {
            Err(e) => Some(e),
            Ok(_) if entry.filename == b"." || entry.filename == b".." => continue,
            Ok(_) => None,
        };
        let child = if dir.rel.is_empty() {
            entry.filename.clone()
        } else {
            remote_join(&dir.rel, &entry.filename)
        };
        // A name listed twice keeps its first entry (see the snapshot walk).
        let refused = refused.or_else(|| {
            snap.contains_key(&child).then(|| {
                Error::Protocol(format!("server listed {:?} twice", lossy(&entry.filename)))
            })
        });
        if let Some(e) = refused {
            t.record_failure(lossy(&remote_join(&path, &entry.filename)), e);
            continue;
        }
        let (kind, size, mtime, mode) = entry_from_attrs(&entry.attrs);
        let excluded =
            dir.excluded || plan::filter_path(&walk.opts.filter, &child, kind == EntryKind::Dir);
        if kind == EntryKind::Symlink && !excluded {
            links.push(child.clone());
        }
        let e = TreeEntry::listed(kind, size, mtime, mode, None, excluded);
        snap.insert(child, e);
    }
    read_link_targets(walk, &mut snap, links, is_dest).await;
    Some(snap)
}

/// Reads the links' targets, concurrently. A destination link whose target cannot be
/// read is left without (the plan then replaces it: some servers refuse READLINK of
/// relative links); a source link's is a failure, and the link is left alone.
async fn read_link_targets(walk: &Walk, snap: &mut Snapshot, links: Vec<Vec<u8>>, is_dest: bool) {
    let sides = &walk.sides;
    let reads = links.into_iter().map(|child| {
        let path = sides.remote(&child);
        async move { (child, sides.t.sftp.readlink(&path).await) }
    });
    for (child, r) in futures_util::future::join_all(reads).await {
        match r {
            Ok(target) => {
                if let Some(e) = snap.get_mut(&child) {
                    e.target = Some(target);
                }
            }
            Err(e) if is_dest && !e.is_connection() => log::info!("{e}; replacing the link"),
            Err(e) => {
                walk.stop.set(walk.stop.get() || e.is_connection());
                walk.incomplete.set(true);
                sides.t.record_failure(lossy(&sides.remote(&child)), e);
                mark_unreadable(snap, &child);
            }
        }
    }
}
