//! Both trees listed for a mirror: the source and the destination, whichever side each is.

use super::MirrorOptions;
use super::plan::{EntryKind, Snapshot};
use super::sides::{Direction, Sides};
use super::snapshot::{LocalSnapshot, snapshot_remote_as};
use crate::error::{Error, Result};
use crate::transfer::{lossy, remote_join, remote_normalize};

/// Both trees, as the plan compares them.
pub(super) struct Trees {
    pub(super) source: Snapshot,
    pub(super) dest: Snapshot,
    pub(super) dest_root_exists: bool,
    /// Some remote directory could not be listed: deletes are not safe.
    pub(super) incomplete_listing: bool,
}

/// Lists the remote tree and takes the local one, recording what could not be read; `None`
/// when nothing can be done (the recorded failures say why).
pub(super) async fn list_trees(
    sides: &Sides,
    local: Result<Option<LocalSnapshot>>,
    opts: &MirrorOptions,
) -> Option<Trees> {
    let t = &sides.t;
    let remote_is_dest = sides.dir == Direction::Up;
    let remote = snapshot_remote_as(t, &sides.remote_root, opts, remote_is_dest).await;
    let (local, (remote, listing_failures)) = sides.both_roots(local, remote)?;
    let incomplete_listing = !listing_failures.is_empty();
    let connection_lost = listing_failures.iter().any(|(_, e)| e.is_connection());
    for (path, e) in listing_failures {
        t.record_failure(path, e);
    }
    if connection_lost {
        // Nothing more can be done; the listing's errors already say why.
        return None;
    }
    // What could not be read locally is one failure each; the plan leaves it alone.
    let local = local.map(|l| {
        for (rel, e) in l.unreadable {
            t.record_failure(sides.dest_name(&rel), e);
        }
        l.tree
    });
    let (source, dest, dest_root_exists) = match sides.dir {
        Direction::Up => {
            let Some(src) = local else {
                t.record_failure(
                    sides.local_root.display().to_string(),
                    Error::local(
                        format!("cannot read {}", sides.local_root.display()),
                        std::io::ErrorKind::NotFound.into(),
                    ),
                );
                return None;
            };
            let exists = remote.is_some();
            (src, remote.unwrap_or_default(), exists)
        }
        Direction::Down => {
            let Some(src) = remote else {
                t.record_failure(
                    lossy(&sides.remote_root),
                    Error::Status {
                        op: "mirror",
                        path: lossy(&sides.remote_root),
                        code: crate::StatusCode::NoSuchFile,
                        message: "no such directory".into(),
                    },
                );
                return None;
            };
            let exists = local.is_some();
            (src, local.unwrap_or_default(), exists)
        }
    };
    Some(Trees {
        source,
        dest,
        dest_root_exists,
        incomplete_listing,
    })
}

/// ProFTPD answers READLINK with the absolute path a link resolves to, not its text: a
/// destination link whose answer is where the source link's relative target leads (from
/// the remote root's real path) is taken as that same link, so an unchanged tree is not
/// re-linked on every run. Costs one REALPATH, only when such an answer is seen.
pub(super) async fn match_resolved_links(sides: &Sides, source: &Snapshot, dest: &mut Snapshot) {
    let candidates: Vec<(&Vec<u8>, &Vec<u8>)> = source
        .iter()
        .filter_map(|(path, src)| {
            let want = src.target.as_ref()?;
            let got = dest.get(path)?.target.as_ref()?;
            (src.kind == EntryKind::Symlink
                && !want.starts_with(b"/")
                && got.starts_with(b"/")
                && want != got)
                .then_some((path, want))
        })
        .collect();
    if candidates.is_empty() {
        return;
    }
    let root = match sides.t.sftp.realpath(sides.remote_root.as_slice()).await {
        Ok(root) => root,
        Err(e) => {
            log::debug!("{e}; links are compared by their text");
            return;
        }
    };
    for (path, want) in candidates {
        let parent = path
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(&b""[..], |i| &path[..i]);
        let resolved = remote_normalize(&remote_join(&remote_join(&root, parent), want));
        if let Some(entry) = dest.get_mut(path)
            && entry.target.as_deref() == Some(resolved.as_slice())
        {
            entry.target = Some(want.clone());
        }
    }
}
