//! Carrying out a mirror: list and compare both trees, then apply the plan in phases (see
//! the module documentation of [`crate::mirror`] for their order and why).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::rc::Rc;
use std::time::Instant;

use super::dirtimes::{DirTimes, publish_after_dir_times, stale_dir_times};
use super::plan::{Action, Compare, EntryKind, Plan, Snapshot, TreeEntry, plan};
use super::sides::{Direction, Sides};
use super::snapshot::LocalSnapshot;
use super::staging::stage;
use super::trees::{Trees, list_trees, match_resolved_links};
use super::{MirrorOptions, MirrorReport};
use crate::error::{Error, Result};
use crate::proto::ext;
use crate::task::{TaskGroup, Token};
use crate::transfer::{LinkSlot, Transfer};

/// What the phases did besides copying files (which the transfer context counts).
#[derive(Default)]
pub(super) struct Counters {
    pub(super) dirs_created: u64,
    pub(super) symlinks: u64,
    pub(super) chmods: u64,
    pub(super) deleted: u64,
}

/// Deletes to make at the end: relative path and kind.
pub(super) type DeleteList = Vec<(Vec<u8>, EntryKind)>;

/// Tasks a mirror runs at most at once. Each holds a few KiB until its file landed;
/// [`Transfer::task_limit`] leaves room for every channel the session may open (16,400
/// with 8), which costs a mirror of 50,000 files 250 MiB and most of its CPU.
pub(super) const MAX_TASKS: usize = 2048;

/// The mirror's limit of tasks at once: the transfer's, at most [`MAX_TASKS`].
pub(super) fn task_slots(t: &Transfer) -> usize {
    t.task_limit().min(MAX_TASKS)
}

/// Failures recorded so far.
pub(super) fn failure_count(t: &Transfer) -> usize {
    t.report.borrow().failures.len()
}

/// The trees and the plan comparing them, ready to apply.
struct Planned {
    sides: Sides,
    trees: Trees,
    plan: Plan,
}

/// Mirrors in the direction `sides` says; `local` is the local tree as listed.
pub(super) async fn run(
    sides: Sides,
    local: Result<Option<LocalSnapshot>>,
    opts: &MirrorOptions,
) -> MirrorReport {
    let started = Instant::now();
    let t = sides.t.clone();
    let mut report = MirrorReport::default();
    if let Some(planned) = compare(sides, local, opts).await {
        report.unchanged = planned.plan.unchanged;
        if opts.dry_run {
            report.plan = planned.plan;
        } else {
            apply(planned, opts, &mut report).await;
        }
    }
    report.elapsed = started.elapsed();
    finish(report, &t)
}

/// Lists both trees (resuming a staged one) and plans; `None` when nothing can be done
/// (the recorded failures say why).
async fn compare(
    sides: Sides,
    local: Result<Option<LocalSnapshot>>,
    opts: &MirrorOptions,
) -> Option<Planned> {
    let trees = list_trees(&sides, local, opts).await?;
    let (sides, mut trees) = stage(sides, trees, opts).await?;
    let t = &sides.t;
    if sides.dir == Direction::Up {
        match_resolved_links(&sides, &trees.source, &mut trees.dest).await;
    }
    // Prefetched answers the listings did not take: guessed directories that are excluded
    // or not directories there, the staging directory of a root that exists.
    t.sftp.discard_prefetched().await;
    // Links' own times count only where they can be set (else every run would redo them).
    let compare = Compare {
        link_times: sides.dir == Direction::Down || t.sftp.has_extension(ext::LSETSTAT),
        ..opts.compare.clone()
    };
    let plan = plan(&trees.source, &trees.dest, &compare);
    t.ready().await;
    Some(Planned { sides, trees, plan })
}

/// Applies the plan, phase by phase, into `report`.
async fn apply(planned: Planned, opts: &MirrorOptions, report: &mut MirrorReport) {
    let Planned { sides, trees, plan } = planned;
    let t = &sides.t;
    if !prepare_dest(&sides, &trees, &plan) {
        return;
    }
    let (files, bytes) = plan.copy_totals();
    t.progress.add_total(files, bytes);
    let counters = Rc::new(RefCell::new(Counters::default()));

    clear_replaced(&sides, &plan).await;
    let stale_dirs = stale_dir_times(&trees.source, &trees.dest, &plan);
    let (times, tokens) = DirTimes::start(&sides, &plan, stale_dirs);
    write_all(
        &sides,
        &trees.source,
        &plan,
        opts,
        tokens,
        &counters,
        report,
    )
    .await;
    let deletes = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete { path, kind } => Some((path.clone(), *kind)),
            _ => None,
        })
        .collect();
    let incomplete = trees.incomplete_listing;
    delete_extras(&sides, deletes, incomplete, opts, &counters, report).await;
    let pending = times.submit(&sides).await;
    publish_after_dir_times(&sides, pending, sides.staged).await;
    let c = counters.borrow();
    report.dirs_created = c.dirs_created;
    report.symlinks = c.symlinks;
    report.chmods = c.chmods;
    report.deleted = c.deleted;
    drop(c);
    report.plan = plan;
}

/// Tells the directory locks what the listing proved, so no upload probes; makes a local
/// root that is missing. False when that failed (and is recorded).
fn prepare_dest(sides: &Sides, trees: &Trees, plan: &Plan) -> bool {
    let t = &sides.t;
    if sides.dir == Direction::Up {
        if trees.dest_root_exists {
            t.dirlocks.mark_exists(&sides.remote_root);
        } else {
            t.dirlocks.mark_missing(&sides.remote_root);
        }
        let replaced: HashSet<&[u8]> = plan
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Mkdir { .. }))
            .map(|a| a.path())
            .collect();
        for (rel, e) in &trees.dest {
            if e.kind == EntryKind::Dir && !replaced.contains(rel.as_slice()) {
                t.dirlocks.mark_exists(&sides.remote(rel));
            }
        }
        for a in &plan.actions {
            if let Action::Mkdir { path, .. } = a {
                t.dirlocks.mark_missing(&sides.remote(path));
            }
        }
    } else if !trees.dest_root_exists
        && let Err(e) = fs::create_dir_all(&*sides.local_root)
    {
        let root = sides.local_root.display();
        let e = Error::local(format!("cannot create {root}"), e);
        t.record_failure(root.to_string(), e);
        return false;
    }
    true
}

/// What must be removed before `a` (of that kind), if anything. Renames replace files
/// atomically, and links replace what is in their way themselves. Directories (and a
/// file where a directory must go) need removing first, and so does a link where a file
/// goes: a rename onto a link may follow it (ProFTPD's does, and overwrites the file it
/// points to).
pub(super) fn must_clear(a: &Action) -> Option<EntryKind> {
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
        _ => return None,
    };
    let link_under_file = replaces == EntryKind::Symlink && matches!(a, Action::Copy { .. });
    (replaces == EntryKind::Dir || matches!(a, Action::Mkdir { .. }) || link_under_file)
        .then_some(replaces)
}

/// Phase 1: clears what stands in the way of a type change.
async fn clear_replaced(sides: &Sides, plan: &Plan) {
    let mut phase = TaskGroup::new(task_slots(&sides.t));
    for a in &plan.actions {
        let Some(replaces) = must_clear(a) else {
            continue;
        };
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
}

/// Phases 2 and 3: everything but deletes, `--last` files after the rest and only if
/// nothing failed. `tokens` (per action, see [`DirTimes`]) go with their actions.
async fn write_all(
    sides: &Sides,
    source: &Snapshot,
    plan: &Plan,
    opts: &MirrorOptions,
    mut tokens: Vec<Option<Token>>,
    counters: &Rc<RefCell<Counters>>,
    report: &mut MirrorReport,
) {
    let t = &sides.t;
    let copies = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Copy { .. }))
        .count();
    t.want(crate::pool::Want::Files(copies));
    for last_round in [false, true] {
        if last_round && failure_count(t) > 0 {
            let held = plan
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
        let mut phase = TaskGroup::new(task_slots(t));
        for (i, a) in plan.actions.iter().enumerate() {
            // Held by the action's task; released early by uploads, else when it ends.
            let token = || tokens.get_mut(i).and_then(Option::take);
            let preserve_mode = opts.compare.preserve_mode;
            if let Some(w) = Write::of(a, source.get(a.path()), last_round, preserve_mode, token) {
                let (s, rel) = (sides.clone(), a.path().to_vec());
                phase.spawn(w.run(s, rel, counters.clone())).await;
            }
        }
        phase.join().await;
    }
    // Actions that did not run (a skipped `--last` round, deletes) hold up nothing: the
    // tokens left are dropped here.
}

/// One action of phase 2 or 3, with what its task needs.
pub(super) enum Write {
    Copy(Option<TreeEntry>, Option<Token>),
    Mkdir(Option<u32>, Option<Token>),
    Symlink(Vec<u8>, i64, LinkSlot, Option<Token>),
    LinkTime(i64),
    Chmod(u32),
}

impl Write {
    /// What `a` does in this round, if it belongs to it; `token` is taken only for an
    /// action that runs.
    pub(super) fn of(
        a: &Action,
        src: Option<&TreeEntry>,
        last_round: bool,
        preserve_mode: bool,
        token: impl FnOnce() -> Option<Token>,
    ) -> Option<Write> {
        Some(match a {
            Action::Copy { last, .. } if *last == last_round => Write::Copy(src.cloned(), token()),
            _ if last_round => return None,
            Action::Mkdir { .. } => {
                let mode = preserve_mode.then(|| src.map(|e| e.mode));
                Write::Mkdir(mode.flatten(), token())
            }
            Action::Symlink {
                target, replaces, ..
            } => {
                let mtime = src.map_or(0, |e| e.mtime);
                let slot = match replaces {
                    Some(EntryKind::File | EntryKind::Symlink) => LinkSlot::Taken,
                    _ => LinkSlot::Free,
                };
                Write::Symlink(target.clone(), mtime, slot, token())
            }
            Action::LinkTime { mtime, .. } => Write::LinkTime(*mtime),
            Action::Chmod { mode, .. } => Write::Chmod(*mode),
            _ => return None,
        })
    }

    /// Carries it out on `rel`, recording the outcome.
    pub(super) async fn run(self, s: Sides, rel: Vec<u8>, counters: Rc<RefCell<Counters>>) {
        // A token goes once the outcome is recorded, as the action's task ends.
        let (r, count, _token) = match self {
            Write::Copy(src, token) => {
                let r = s.copy(&rel, src.as_ref(), token.as_ref()).await;
                s.t.finish_file(s.dest_name(&rel).as_bytes(), r);
                return;
            }
            Write::Mkdir(mode, token) => (s.mkdir(&rel, mode).await, Some(Count::Dir), token),
            Write::Symlink(target, mtime, slot, token) => (
                s.symlink(&rel, &target, mtime, slot).await,
                Some(Count::Link),
                token,
            ),
            Write::LinkTime(mtime) => (s.link_time(&rel, mtime).await, None, None),
            Write::Chmod(mode) => (s.chmod(&rel, mode).await, Some(Count::Chmod), None),
        };
        match r {
            Ok(()) => {
                let mut c = counters.borrow_mut();
                match count {
                    Some(Count::Dir) => c.dirs_created += 1,
                    Some(Count::Link) => c.symlinks += 1,
                    Some(Count::Chmod) => c.chmods += 1,
                    None => {}
                }
            }
            Err(e) => s.t.record_failure(s.dest_name(&rel), e),
        }
    }
}

/// Which counter a successful [`Write`] moves.
enum Count {
    Dir,
    Link,
    Chmod,
}

/// Phase 4: deletes, only when everything else worked and the listing was complete, and
/// none above `--max-delete`.
pub(super) async fn delete_extras(
    sides: &Sides,
    deletes: DeleteList,
    incomplete_listing: bool,
    opts: &MirrorOptions,
    counters: &Rc<RefCell<Counters>>,
    report: &mut MirrorReport,
) {
    if deletes.is_empty() {
        return;
    }
    if failure_count(&sides.t) > 0 || incomplete_listing {
        report.deletes_skipped = Some(format!(
            "{} delete(s) skipped because other operations failed",
            deletes.len()
        ));
    } else if let Some(max) = opts.max_delete.filter(|&m| deletes.len() > m) {
        report.deletes_skipped = Some(format!(
            "refusing to delete {} entries: more than --max-delete {max}",
            deletes.len(),
        ));
    } else {
        delete_all(sides, deletes, counters).await;
    }
}

/// Deletes files and links first, then directories deepest first, a level at a time.
async fn delete_all(
    sides: &Sides,
    deletes: Vec<(Vec<u8>, EntryKind)>,
    counters: &Rc<RefCell<Counters>>,
) {
    let limit = task_slots(&sides.t);
    let mut by_depth: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
    let mut phase = TaskGroup::new(limit);
    for (rel, kind) in deletes {
        if kind == EntryKind::Dir {
            let depth = rel.iter().filter(|&&b| b == b'/').count();
            by_depth.entry(depth).or_default().push(rel);
            continue;
        }
        phase
            .spawn(delete_one(sides.clone(), rel, kind, counters.clone()))
            .await;
    }
    phase.join().await;
    for (_, dirs) in by_depth.into_iter().rev() {
        let mut phase = TaskGroup::new(limit);
        for rel in dirs {
            phase
                .spawn(delete_one(
                    sides.clone(),
                    rel,
                    EntryKind::Dir,
                    counters.clone(),
                ))
                .await;
        }
        phase.join().await;
    }
}

async fn delete_one(s: Sides, rel: Vec<u8>, kind: EntryKind, counters: Rc<RefCell<Counters>>) {
    match s.delete(&rel, kind).await {
        Ok(()) => counters.borrow_mut().deleted += 1,
        Err(e) => s.t.record_failure(s.dest_name(&rel), e),
    }
}
/// Moves the transfer context's counts and failures into the report.
pub(super) fn finish(mut report: MirrorReport, t: &Transfer) -> MirrorReport {
    let tr = t.take_report();
    report.copied = tr.files;
    report.bytes = tr.bytes;
    report.failures.extend(tr.failures);
    report.tree_kept = tr.kept_staged.into_iter().next();
    report
}
