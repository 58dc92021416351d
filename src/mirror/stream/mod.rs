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
use std::rc::Rc;
use std::time::Instant;

mod listing;
mod roots;

use listing::{list_local, list_remote};
use roots::start;

use super::apply::{Counters, DeleteList, Write, delete_extras, failure_count, finish};
use super::dirtimes::{publish_after_dir_times, set_dir_times};
use super::plan::{Action, Compare, EntryKind, Snapshot, TreeEntry, plan};
use super::sides::{Direction, Sides};
use super::trees::match_resolved_links;
use super::{MirrorOptions, MirrorReport};
use crate::error::Result;
use crate::task::{Countdown, JoinHandle, Semaphore, spawn, walk_stack};
use crate::transfer::{DIRS_IN_FLIGHT, lossy};

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

/// Visits directories, [`DIRS_IN_FLIGHT`] at once, deepest first, until none is left.
async fn walk_all(walk: &Rc<Walk>) {
    walk_stack(&walk.stack, DIRS_IN_FLIGHT, &walk.stop, |dir| {
        visit(walk.clone(), dir)
    })
    .await
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
    publish_after_dir_times(sides, pending, sides.staged && !walk.stop.get()).await;
    let c = walk.counters.borrow();
    report.dirs_created = c.dirs_created;
    report.symlinks = c.symlinks;
    report.chmods = c.chmods;
    report.deleted = c.deleted;
    report.unchanged = walk.unchanged.get();
    report.plan.unchanged = report.unchanged;
}
