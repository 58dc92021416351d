//! Directory modification times: set last, once nothing changes inside the directories.

use std::collections::HashSet;

use super::apply::failure_count;
use super::plan::{self, Action, EntryKind, Plan, Snapshot};
use super::sides::{Direction, Sides};
use crate::client::PendingReply;
use crate::error::Error;
use crate::proto::FileAttributes;
use crate::task::{Countdown, JoinHandle, Token, spawn};
use crate::transfer::Transfer;

/// Replies still to come for directory times, by relative path.
type Pending = Vec<(Vec<u8>, PendingReply)>;

/// The directory times of one mirror, from the plan to their replies.
///
/// Remote ones can go out as soon as every action of phases 2 and 3 has queued its last
/// request that changes a directory (the server applies requests in order), saving the
/// round trip of waiting for those replies; with deletes to come, or locally, they wait
/// for the end.
pub(super) struct DirTimes {
    stale: Vec<(Vec<u8>, i64)>,
    /// Sends them early, once every writer's token is released.
    early: Option<JoinHandle<Pending>>,
}

impl DirTimes {
    /// Starts on the `stale` directories (see [`stale_dir_times`]); returns a token per
    /// action of `plan` (none for those that add nothing to a directory), to be released
    /// once the action has queued its last request that changes a directory.
    pub(super) fn start(
        sides: &Sides,
        plan: &Plan,
        stale: Vec<(Vec<u8>, i64)>,
    ) -> (DirTimes, Vec<Option<Token>>) {
        let has_deletes = plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::Delete { .. }));
        if sides.dir != Direction::Up || has_deletes || stale.is_empty() {
            return (DirTimes { stale, early: None }, Vec::new());
        }
        let writers = Countdown::new();
        // Only actions that add entries to a directory move its time.
        let tokens = plan
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
        let (s, dirs) = (sides.clone(), stale.clone());
        let early = spawn(async move {
            writers.wait().await;
            submit_remote_dir_times(&s, &dirs).await
        });
        let early = Some(early);
        (DirTimes { stale, early }, tokens)
    }

    /// Phase 5: sets them (unless sent early) without waiting for the replies, which
    /// [`collect_dir_times`] takes after a staged tree's rename was queued behind them
    /// (see [`publish_after_dir_times`]); sent early, they come in with the last files'
    /// replies.
    pub(super) async fn submit(self, sides: &Sides) -> Pending {
        match self.early {
            Some(job) => job.await,
            None => set_dir_times(sides, &self.stale).await,
        }
    }
}

/// The end of a mirror: the directories' times are in flight (`pending`); a staged tree
/// (`publish`) is renamed into place in the same flight, queued behind them on the same
/// channel, which the server handles in order: one round trip for both instead of two.
/// A time that fails is still reported (exit 1), but no longer keeps a tree whose every
/// entry landed out of place.
pub(super) async fn publish_after_dir_times(sides: &Sides, pending: Pending, publish: bool) {
    if publish {
        sides
            .t
            .move_staged_tree(
                &sides.remote_root,
                &sides.remote_name,
                &sides.dest_name(b""),
            )
            .await;
    }
    collect_dir_times(sides, pending).await;
}

/// Source directories whose destination time must be set: new, of another kind, with
/// another time, or changed inside by the plan (which moves their time). Excluded ones,
/// and what either side could not read, are left alone.
pub(super) fn stale_dir_times(
    source: &Snapshot,
    dest: &Snapshot,
    the_plan: &Plan,
) -> Vec<(Vec<u8>, i64)> {
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
pub(super) async fn set_dir_times(sides: &Sides, dirs: &[(Vec<u8>, i64)]) -> Pending {
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
async fn submit_remote_dir_times(sides: &Sides, dirs: &[(Vec<u8>, i64)]) -> Pending {
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
pub(super) async fn collect_dir_times(sides: &Sides, pending: Pending) {
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
