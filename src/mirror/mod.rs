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
//!
//! [`mirror_up`] and [`mirror_down`] stream instead (`stream.rs`): they compare one
//! directory at a time as both listings arrive and start their writes at once, phase 1
//! per directory before anything is written there, phases 3 to 5 at the end as above;
//! memory then holds the directories in flight, not the trees. The `*_listed` variants
//! and dry runs list both trees whole first.

mod apply;
mod dirtimes;
mod filter;
mod plan;
mod sides;
mod snapshot;
mod staging;
mod stream;
mod trees;

use std::path::Path;
use std::time::Duration;

/// Where a new remote tree is built before it is renamed into place.
pub use crate::transfer::staging_dir;
pub use filter::{Filter, PatternSet};
pub use plan::{Action, Compare, EntryKind, Plan, Snapshot, TreeEntry, plan};
pub use snapshot::{
    LocalSnapshot, MAX_GUESSED_DIRS, guess_remote_dirs, snapshot_local, snapshot_remote,
};

use crate::error::{Error, Result};
use crate::transfer::Transfer;
use apply::run;
use sides::{Direction, Sides};

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
    /// The plan that was (or, with `dry_run`, would be) carried out. A streamed mirror
    /// ([`mirror_up`], [`mirror_down`] without `dry_run`) never holds the whole plan: its actions are
    /// empty, only `unchanged` is counted.
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

/// Mirrors the local tree `local_root` into the remote directory `remote_root`, comparing
/// and copying one directory at a time as the listings arrive (see the module
/// documentation); with [`MirrorOptions::dry_run`], both trees are listed whole to plan.
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
    if opts.dry_run {
        let local = snapshot_local(local_root, opts);
        return mirror_up_listed(t, local_root, local, remote_root, opts).await;
    }
    let sides = Sides::new(t, Direction::Up, local_root, remote_root, opts);
    stream::run_streamed(sides, opts).await
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
    let sides = Sides::new(t, Direction::Up, local_root, remote_root, opts);
    run(sides, local, opts).await
}

/// Mirrors the remote directory `remote_root` into the local directory `local_root`,
/// streaming as [`mirror_up`] does.
pub async fn mirror_down(
    t: &Transfer,
    remote_root: &[u8],
    local_root: &Path,
    opts: &MirrorOptions,
) -> MirrorReport {
    if opts.dry_run {
        let local = snapshot_local(local_root, opts);
        return mirror_down_listed(t, remote_root, local_root, local, opts).await;
    }
    let sides = Sides::new(t, Direction::Down, local_root, remote_root, opts);
    stream::run_streamed(sides, opts).await
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
    let sides = Sides::new(t, Direction::Down, local_root, remote_root, opts);
    run(sides, local, opts).await
}
