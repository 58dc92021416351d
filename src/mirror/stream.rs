//! The streaming mirror: both trees are compared one directory at a time, as the
//! listings arrive, and what differs is acted on at once, so uploads start while deeper
//! directories are still being listed and memory holds the directories in flight, not
//! the trees.
//!
//! The phases keep their order where it matters: a level's entries in the way of a type
//! change go before anything is written there; `--last` files, deletes (children before
//! parents, counted against `--max-delete` first, only when everything else worked) and
//! directory times wait for the end, as in [`super::apply`]. What they need is kept:
//! the paths of `--last` files, of deletes and of directories whose time is to be set.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::apply::{Counters, DeleteList, Write, delete_extras, failure_count, finish, task_slots};
use super::dirtimes::{collect_dir_times, set_dir_times};
use super::plan::{self, Action, Compare, EntryKind, Snapshot, TreeEntry, plan};
use super::sides::{Direction, Sides};
use super::snapshot::{entry_from_attrs, mark_unreadable};
use super::trees::match_resolved_links;
use super::{MirrorOptions, MirrorReport};
use crate::error::{Error, Result};
use crate::proto::ext;
use crate::task::{Countdown, JoinHandle, Semaphore, spawn};
use crate::transfer::{LocalKind, list_local_dir, local_entry, lossy, safe_remote_name};
use crate::transfer::{remote_join, staging_dir};

/// Directories listed and compared at once. Each holds its two listings while it is
/// compared; their files then queue for the transfer slots.
const DIRS_IN_FLIGHT: usize = 8;

/// A directory still to visit, with what its parent's listings said of it.
struct Dir {
    rel: Vec<u8>,
    /// The source has a directory there (else only the destination's is walked, for its
    /// deletes).
    in_source: bool,
    /// The destination has a directory there to list.
    in_dest: bool,
    /// It, or a parent, is excluded.
    excluded: bool,
    /// Its source time, when its destination time is to be set once it is done: `None`
    /// for one excluded or not in the source.
    mtime: Option<i64>,
    /// Its destination time differs (or it is new): its time is set even if nothing
    /// changes inside.
    stale: bool,
}

/// What the walk shares between the directories being visited.
struct Walk {
    sides: Sides,
    opts: MirrorOptions,
    compare: Compare,
    stack: RefCell<Vec<Dir>>,
    writes: Semaphore,
    writers: Countdown,
    counters: Rc<RefCell<Counters>>,
    unchanged: Cell<u64>,
    copies: Cell<usize>,
    /// `--last` files and their source entries.
    last: RefCell<Vec<(Vec<u8>, Option<TreeEntry>)>>,
    deletes: RefCell<DeleteList>,
    dir_times: RefCell<Vec<(Vec<u8>, i64)>>,
    /// A destination directory could not be listed: deletes are not safe.
    incomplete: Cell<bool>,
    /// The connection is gone, or a staged tree cannot be cleared: nothing more starts.
    stop: Cell<bool>,
    /// Listings of guessed directories (see [`super::guess_remote_dirs`]), started at
    /// once as the whole-tree walk does: a re-mirror's listing then takes one round trip.
    guessed: RefCell<HashMap<Vec<u8>, JoinHandle<Listing>>>,
    /// Channels may be added for the files to come: a round trip was measured while only
    /// listings were in flight. One measured while files stream is the client's own
    /// latency too, and would add channels on loopback (see [`crate::pool`]).
    may_grow: Cell<bool>,
}

/// A directory's listing, from [`crate::Sftp::read_dir`].
type Listing = Result<Vec<crate::proto::NameEntry>>;

/// Mirrors in the direction of `sides`, streaming (see the module documentation).
pub(super) async fn run_streamed(sides: Sides, opts: &MirrorOptions) -> MirrorReport {
    let started = Instant::now();
    let t = sides.t.clone();
    let mut report = MirrorReport::default();
    if let Some(walk) = start(sides, opts).await {
        walk_all(&walk).await;
        // Guessed directories the walk did not reach (excluded, or no directories there):
        // their handles are closed before the last files count open ones.
        let unused: Vec<_> = walk.guessed.borrow_mut().drain().collect();
        for (_, listing) in unused {
            let _ = listing.await;
        }
        walk.sides.t.sftp.discard_prefetched().await;
        walk.writers.wait().await;
        land_the_rest(&walk, &mut report).await;
    }
    report.elapsed = started.elapsed();
    finish(report, &t)
}

/// Examines both roots, stages a new tree; `None` when nothing can be done (the recorded
/// failure says why).
async fn start(sides: Sides, opts: &MirrorOptions) -> Option<Rc<Walk>> {
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
    let (local, remote) = match (local_root_entry(&sides.local_root, opts), remote) {
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
    Ok(Some(dir_entry(m.mtime(), m.permissions().mode() & 0o7777)))
}

/// The remote root's entry (the staging directory's, when staged); `None` when missing.
/// `instead` is the command that copies a file, for a root that is one.
async fn remote_root_entry(sides: &Sides, instead: &str) -> Result<Option<TreeEntry>> {
    let root = sides.remote_root.as_slice();
    match sides.t.sftp.stat(root).await {
        Ok(a) if a.is_dir() => {
            let (_, _, mtime, mode) = entry_from_attrs(&a);
            Ok(Some(dir_entry(mtime, mode)))
        }
        Ok(_) => Err(Error::InvalidInput(format!(
            "mirror takes directories: remote {} is not one (use {instead} to copy a file)",
            lossy(root)
        ))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn dir_entry(mtime: i64, mode: u32) -> TreeEntry {
    TreeEntry {
        kind: EntryKind::Dir,
        size: 0,
        mtime,
        mode,
        target: None,
        excluded: false,
        unreadable: false,
    }
}

/// Visits directories, [`DIRS_IN_FLIGHT`] at once, deepest first (so the stack of those
/// waiting stays short) until none is left.
async fn walk_all(walk: &Rc<Walk>) {
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < DIRS_IN_FLIGHT && !walk.stop.get() {
            let Some(dir) = walk.stack.borrow_mut().pop() else {
                break;
            };
            running.push(spawn(visit(walk.clone(), dir)));
        }
        if running.next().await.is_none() {
            break;
        }
    }
}

/// Lists one directory on both sides and acts on what differs in it.
async fn visit(walk: Rc<Walk>, dir: Dir) {
    let up = walk.sides.dir == Direction::Up;
    let src = match dir.in_source {
        false => Some(Snapshot::new()),
        true if up => list_local(&walk, &dir),
        true => list_remote(&walk, &dir, false).await,
    };
    let Some(src) = src else { return };
    let dest = match dir.in_dest {
        false => Some(Snapshot::new()),
        true if up => list_remote(&walk, &dir, true).await,
        true => list_local(&walk, &dir),
    };
    let Some(dest) = dest else { return };
    compare_level(&walk, Some(&dir), src, dest).await;
}

/// The local entries of `dir`; `None` (recorded) when it cannot be listed.
fn list_local(walk: &Walk, dir: &Dir) -> Option<Snapshot> {
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
                let entry = TreeEntry {
                    kind,
                    size,
                    mtime: e.mtime,
                    mode: e.mode,
                    target,
                    excluded: e.excluded,
                    unreadable: false,
                };
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
async fn list_remote(walk: &Walk, dir: &Dir, is_dest: bool) -> Option<Snapshot> {
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
        let e = TreeEntry {
            kind,
            size,
            mtime,
            mode,
            target: None,
            excluded,
            unreadable: false,
        };
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

/// Compares the entries of one level (`dir`'s, or the root alone when `None`) and acts:
/// what is in the way goes, writes start, `--last` files, deletes and the directory's
/// time are kept for the end, and its subdirectories are queued.
async fn compare_level(walk: &Rc<Walk>, dir: Option<&Dir>, src: Snapshot, mut dest: Snapshot) {
    let sides = &walk.sides;
    if sides.staged && !dest.is_empty() && !prune_level(walk, &src, &mut dest).await {
        return;
    }
    let up = sides.dir == Direction::Up;
    if up {
        match_resolved_links(sides, &src, &mut dest).await;
    }
    let level = plan(&src, &dest, &walk.compare);
    walk.unchanged.set(walk.unchanged.get() + level.unchanged);
    let (files, bytes) = level.copy_totals();
    sides.t.progress.add_total(files, bytes);
    walk.copies.set(walk.copies.get() + files as usize);
    if dir.is_some_and(|d| d.rel.is_empty()) {
        walk.may_grow
            .set(sides.t.sftp.channel().rtt_min().is_some());
    }
    if walk.may_grow.get() {
        sides.t.want(crate::pool::Want::Files(walk.copies.get()));
    }
    if up {
        mark_dirlocks(sides, &dest, &level.actions);
    }
    clear_replaced_level(sides, &level.actions).await;
    if let Some(dir) = dir
        && let Some(mtime) = dir.mtime
        && (dir.stale || !level.actions.is_empty())
    {
        walk.dir_times.borrow_mut().push((dir.rel.clone(), mtime));
    }
    queue_subdirs(walk, &src, &dest, &level.actions);
    for a in level.actions {
        let entry = src.get(a.path());
        start_action(walk, a, entry).await;
    }
}

/// Tells the directory locks what this level's listing proved.
fn mark_dirlocks(sides: &Sides, dest: &Snapshot, actions: &[Action]) {
    let t = &sides.t;
    let made: HashSet<&[u8]> = actions
        .iter()
        .filter(|a| matches!(a, Action::Mkdir { .. }))
        .map(|a| a.path())
        .collect();
    for (rel, e) in dest {
        if e.kind == EntryKind::Dir && !made.contains(rel.as_slice()) {
            t.dirlocks.mark_exists(&sides.remote(rel));
        }
    }
    for rel in made {
        t.dirlocks.mark_missing(&sides.remote(rel));
    }
}

/// Phase 1 for one level: removes what stands in the way of a type change (see
/// [`super::apply`]'s `clear_replaced`), before anything is written there.
async fn clear_replaced_level(sides: &Sides, actions: &[Action]) {
    let removals = actions.iter().filter_map(|a| {
        let k = super::apply::must_clear(a)?;
        Some(async move {
            if let Err(e) = sides.remove_dest(a.path(), k).await {
                sides.t.record_failure(sides.dest_name(a.path()), e);
            }
        })
    });
    futures_util::future::join_all(removals).await;
}

/// Queues the level's subdirectories: those of the source (where nothing on either side
/// is unreadable), and the destination's that go, for their deletes.
fn queue_subdirs(walk: &Walk, src: &Snapshot, dest: &Snapshot, actions: &[Action]) {
    let delete_excluded = walk.opts.compare.delete_excluded;
    let made: HashSet<&[u8]> = actions
        .iter()
        .filter(|a| matches!(a, Action::Mkdir { .. }))
        .map(|a| a.path())
        .collect();
    let mut stack = walk.stack.borrow_mut();
    for (rel, e) in src {
        if e.kind != EntryKind::Dir || e.unreadable || (e.excluded && !delete_excluded) {
            continue;
        }
        let d = dest.get(rel);
        if d.is_some_and(|d| d.unreadable) {
            continue;
        }
        let in_dest = d.is_some_and(|d| d.kind == EntryKind::Dir);
        stack.push(Dir {
            rel: rel.clone(),
            in_source: true,
            in_dest,
            excluded: e.excluded,
            mtime: (!e.excluded).then_some(e.mtime),
            // The root's own Chmod counts as a change inside it, as in the whole plan.
            stale: made.contains(rel.as_slice())
                || d.is_none_or(|d| d.mtime != e.mtime)
                || (rel.is_empty() && !actions.is_empty()),
        });
    }
    for a in actions {
        if let Action::Delete {
            path,
            kind: EntryKind::Dir,
        } = a
        {
            stack.push(Dir {
                rel: path.clone(),
                in_source: false,
                in_dest: true,
                excluded: dest.get(path).is_some_and(|d| d.excluded),
                mtime: None,
                stale: false,
            });
        }
    }
}

/// Starts one action of the level: writes at once (in a transfer slot), `--last` files
/// and deletes kept for the end.
async fn start_action(walk: &Rc<Walk>, a: Action, src: Option<&TreeEntry>) {
    let write = match &a {
        Action::Delete { path, kind } => {
            walk.deletes.borrow_mut().push((path.clone(), *kind));
            return;
        }
        Action::Copy { last: true, .. } => {
            walk.last
                .borrow_mut()
                .push((a.path().to_vec(), src.cloned()));
            return;
        }
        a => {
            let preserve = walk.opts.compare.preserve_mode;
            match Write::of(a, src, false, preserve, || None) {
                Some(w) => w,
                None => return,
            }
        }
    };
    spawn_write(walk, write, a.path().to_vec()).await;
}

/// Runs a write as its own task, once a transfer slot is free.
async fn spawn_write(walk: &Rc<Walk>, w: Write, rel: Vec<u8>) {
    let slot = walk.writes.acquire(1).await;
    let token = walk.writers.token();
    let (s, counters) = (walk.sides.clone(), walk.counters.clone());
    spawn(async move {
        w.run(s, rel, counters).await;
        drop((slot, token));
    });
}

/// Removes from one level of a resumed staging tree what a fresh mirror would not make
/// there (see [`super::staging`]). False (recorded) when that failed: the walk stops.
async fn prune_level(walk: &Walk, src: &Snapshot, dest: &mut Snapshot) -> bool {
    let sides = &walk.sides;
    match super::staging::prune_staged(sides, src, dest).await {
        Ok(()) => true,
        Err(e) => {
            let what = format!(
                "{} (could not clear the staged tree {} left by an earlier run)",
                sides.dest_name(b""),
                lossy(&sides.remote_root)
            );
            sides.t.record_failure(what, e);
            walk.stop.set(true);
            false
        }
    }
}

/// Phases 3 to 5 once the walk is done and every write landed: `--last` files, deletes,
/// directory times; then a staged tree moves into place.
async fn land_the_rest(walk: &Walk, report: &mut MirrorReport) {
    let sides = &walk.sides;
    let t = &sides.t;
    let last = walk.last.take();
    if !last.is_empty() {
        if failure_count(t) > 0 || walk.stop.get() {
            report.last_skipped = Some(format!(
                "{} file(s) matching --last held back because other transfers failed",
                last.len()
            ));
        } else {
            let done = Countdown::new();
            for (rel, src) in last {
                let (s, token) = (sides.clone(), done.token());
                let slot = walk.writes.acquire(1).await;
                spawn(async move {
                    let r = s.copy(&rel, src.as_ref(), None).await;
                    s.t.finish_file(s.dest_name(&rel).as_bytes(), r);
                    drop((slot, token));
                });
            }
            done.wait().await;
        }
    }
    let deletes = walk.deletes.take();
    let incomplete = walk.incomplete.get() || walk.stop.get();
    delete_extras(
        sides,
        deletes,
        incomplete,
        &walk.opts,
        &walk.counters,
        report,
    )
    .await;
    let dirs = walk.dir_times.take();
    let pending = set_dir_times(sides, &dirs).await;
    collect_dir_times(sides, pending).await;
    if sides.staged && !walk.stop.get() {
        t.move_staged_tree(
            &sides.remote_root,
            &sides.remote_name,
            &sides.dest_name(b""),
        )
        .await;
    }
    let c = walk.counters.borrow();
    report.dirs_created = c.dirs_created;
    report.symlinks = c.symlinks;
    report.chmods = c.chmods;
    report.deleted = c.deleted;
    report.unchanged = walk.unchanged.get();
    report.plan.unchanged = report.unchanged;
}
