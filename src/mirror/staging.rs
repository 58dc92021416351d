//! Staged fresh trees: a new remote tree is built beside its destination and renamed into
//! place at the end; a killed run's staged tree is resumed.

use std::collections::HashSet;
use std::rc::Rc;

use super::MirrorOptions;
use super::plan::{self, Action, Compare, EntryKind, Snapshot, plan};
use super::sides::{Direction, Sides};
use super::snapshot::snapshot_remote_as;
use super::trees::Trees;
use crate::error::Result;
use crate::transfer::{lossy, staging_dir};

/// A new remote tree is built in a staging directory (resuming one a killed mirror left)
/// and renamed into place at the end: one rename for the tree instead of one per file,
/// and nobody sees it half made. Returns the sides writing into it and what it holds;
/// `None` when the staged tree cannot be used (the recorded failure says why).
pub(super) async fn stage(
    sides: Sides,
    trees: Trees,
    opts: &MirrorOptions,
) -> Option<(Sides, Trees)> {
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
pub(super) async fn prune_staged(
    sides: &Sides,
    source: &Snapshot,
    partial: &mut Snapshot,
) -> Result<()> {
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
