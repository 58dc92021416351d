//! Snapshots of both trees and the pure comparison that turns them into actions.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use super::filter::{Filter, PatternSet};

/// What kind of entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (devices, sockets); never transferred.
    Other,
}

/// One entry of a tree snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Its kind.
    pub kind: EntryKind,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Permission bits.
    pub mode: u32,
    /// The link's text (symlinks, when read).
    pub target: Option<Vec<u8>>,
    /// Matched an exclude pattern (kept so `--delete-excluded` can act on it).
    pub excluded: bool,
    /// Could not be read (a directory that could not be listed, an entry that could not
    /// be examined): nothing at or below it is planned, on either side.
    pub unreadable: bool,
}

impl TreeEntry {
    /// A readable entry as a listing or a walk found it.
    pub fn listed(
        kind: EntryKind,
        size: u64,
        mtime: i64,
        mode: u32,
        target: Option<Vec<u8>>,
        excluded: bool,
    ) -> TreeEntry {
        TreeEntry {
            kind,
            size,
            mtime,
            mode,
            target,
            excluded,
            unreadable: false,
        }
    }

    /// A readable directory (a tree's root).
    pub fn dir(mtime: i64, mode: u32) -> TreeEntry {
        Self::listed(EntryKind::Dir, 0, mtime, mode, None, false)
    }
}

/// A tree: relative `/`-separated paths (parents sort before children) to entries.
pub type Snapshot = BTreeMap<Vec<u8>, TreeEntry>;

/// One step of a mirror, relative to the roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Copy a file's contents (new or changed).
    Copy {
        /// Relative path.
        path: Vec<u8>,
        /// Bytes to move.
        size: u64,
        /// What stands in the way at the destination and must go first.
        replaces: Option<EntryKind>,
        /// Held back by `--last`.
        last: bool,
    },
    /// Create a directory.
    Mkdir {
        /// Relative path.
        path: Vec<u8>,
        /// What stands in the way and must go first.
        replaces: Option<EntryKind>,
    },
    /// Create or replace a symlink.
    Symlink {
        /// Relative path.
        path: Vec<u8>,
        /// The link's text.
        target: Vec<u8>,
        /// What stands in the way and must go first.
        replaces: Option<EntryKind>,
    },
    /// Set a symlink's own modification time only (its target is right).
    LinkTime {
        /// Relative path.
        path: Vec<u8>,
        /// Seconds since the epoch.
        mtime: i64,
    },
    /// Change permission bits only.
    Chmod {
        /// Relative path.
        path: Vec<u8>,
        /// New mode.
        mode: u32,
    },
    /// Remove an entry that the source does not have.
    Delete {
        /// Relative path.
        path: Vec<u8>,
        /// Its kind.
        kind: EntryKind,
    },
}

impl Action {
    /// The relative path acted on.
    pub fn path(&self) -> &[u8] {
        match self {
            Action::Copy { path, .. }
            | Action::Mkdir { path, .. }
            | Action::Symlink { path, .. }
            | Action::LinkTime { path, .. }
            | Action::Chmod { path, .. }
            | Action::Delete { path, .. } => path,
        }
    }

    /// A line for `--dry-run`, with `verb` naming the copy direction ("upload"/"download").
    pub fn describe(&self, verb: &str) -> String {
        let p = String::from_utf8_lossy(self.path());
        let replacing = |r: &Option<EntryKind>| match r {
            Some(EntryKind::Dir) => " (replacing a directory)",
            Some(EntryKind::File) => " (replacing a file)",
            Some(EntryKind::Symlink) => " (replacing a symlink)",
            _ => "",
        };
        match self {
            Action::Copy {
                size,
                replaces,
                last,
                ..
            } => format!(
                "{verb} {p} ({size} bytes){}{}",
                replacing(replaces),
                if *last { " [last]" } else { "" }
            ),
            Action::Mkdir { replaces, .. } => format!("mkdir {p}/{}", replacing(replaces)),
            Action::Symlink {
                target, replaces, ..
            } => format!(
                "symlink {p} -> {}{}",
                String::from_utf8_lossy(target),
                replacing(replaces)
            ),
            Action::LinkTime { .. } => format!("touch -h {p}"),
            Action::Chmod { mode, .. } => format!("chmod {mode:04o} {p}"),
            Action::Delete {
                kind: EntryKind::Dir,
                ..
            } => format!("delete {p}/"),
            Action::Delete { .. } => format!("delete {p}"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe("copy"))
    }
}

/// How to compare.
#[derive(Debug, Clone, Default)]
pub struct Compare {
    /// Only sizes decide whether a file changed.
    pub size_only: bool,
    /// Every file counts as changed.
    pub all: bool,
    /// Permission bits are mirrored too.
    pub preserve_mode: bool,
    /// Symlinks' own modification times are compared (and mirrored) too, not only their
    /// targets. A mirror sets it itself, for a destination that can set them (locally;
    /// remotely with `lsetstat@openssh.com`): elsewhere a link whose time cannot be set
    /// would be found changed on every run.
    pub link_times: bool,
    /// Remove destination entries the source lacks.
    pub delete: bool,
    /// With `delete`, also remove excluded destination entries.
    pub delete_excluded: bool,
    /// Files to hold back until everything else landed.
    pub last: PatternSet,
}

/// The plan: everything to do, plus the count of entries already up to date.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Actions in path order (parents first); deletes follow all others.
    pub actions: Vec<Action>,
    /// Files (and links) already identical.
    pub unchanged: u64,
}

impl Plan {
    /// The files to copy and their bytes, for progress. Remote sizes are the server's
    /// word: they saturate rather than overflow.
    pub fn copy_totals(&self) -> (u64, u64) {
        self.actions.iter().fold((0, 0), |(f, b), a| match a {
            Action::Copy { size, .. } => (f + 1, b.saturating_add(*size)),
            _ => (f, b),
        })
    }
}

fn is_below(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// True when `path` or one of its parents (the root, `""`, included) is in `set`.
pub(crate) fn covered<T>(set: &HashSet<T>, path: &[u8]) -> bool
where
    T: std::borrow::Borrow<[u8]> + Eq + std::hash::Hash,
{
    if set.is_empty() {
        return false;
    }
    set.contains(path)
        || set.contains(&path[..0])
        || (path.iter().enumerate()).any(|(i, &b)| b == b'/' && set.contains(&path[..i]))
}

/// The paths either side could not read: what is at or below them is unknown.
pub(crate) fn unreadable_paths<'a>(source: &'a Snapshot, dest: &'a Snapshot) -> HashSet<&'a [u8]> {
    (source.iter().chain(dest.iter()))
        .filter(|(_, e)| e.unreadable)
        .map(|(p, _)| p.as_slice())
        .collect()
}

/// Compares a source and a destination snapshot. Nothing is planned at or below an
/// unreadable entry of either side: what is there is not known.
pub fn plan(source: &Snapshot, dest: &Snapshot, cmp: &Compare) -> Plan {
    let unreadable = unreadable_paths(source, dest);
    let mut out = Plan::default();
    let mut deletes = Vec::new();
    // Destination directories that will be removed whole because the source has a
    // non-directory there: nothing below them needs its own delete.
    let mut removed_dirs: Vec<&[u8]> = Vec::new();
    for (path, src) in source.iter().filter(|(_, e)| !e.excluded) {
        if covered(&unreadable, path) {
            continue;
        }
        // A link whose target could not be read (that failure is reported) is left as the
        // destination has it: there is nothing to make it from, and whatever is in its
        // way must not be removed for it.
        if src.kind == EntryKind::Symlink && src.target.is_none() {
            continue;
        }
        let dst = dest
            .get(path)
            .filter(|d| !d.excluded || cmp.delete_excluded);
        let dst_kind = dst.map(|d| d.kind);
        let replaces = match (src.kind, dst_kind) {
            (EntryKind::Dir, Some(k)) if k != EntryKind::Dir => Some(k),
            (k, Some(EntryKind::Dir)) if k != EntryKind::Dir => {
                removed_dirs.push(path);
                Some(EntryKind::Dir)
            }
            _ => None,
        };
        match src.kind {
            EntryKind::Dir => match dst {
                Some(d) if d.kind == EntryKind::Dir => {
                    if cmp.preserve_mode && d.mode != src.mode {
                        out.actions.push(Action::Chmod {
                            path: path.clone(),
                            mode: src.mode,
                        });
                    }
                }
                _ => out.actions.push(Action::Mkdir {
                    path: path.clone(),
                    replaces,
                }),
            },
            EntryKind::File => {
                let changed = match dst {
                    Some(d) if d.kind == EntryKind::File => {
                        cmp.all || d.size != src.size || (!cmp.size_only && d.mtime != src.mtime)
                    }
                    _ => true,
                };
                if changed {
                    let name = String::from_utf8_lossy(path);
                    out.actions.push(Action::Copy {
                        path: path.clone(),
                        size: src.size,
                        replaces: replaces.or(dst_kind.filter(|k| *k == EntryKind::Symlink)),
                        last: cmp.last.matches(&name, false),
                    });
                } else {
                    out.unchanged += 1;
                    if cmp.preserve_mode && dst.is_some_and(|d| d.mode != src.mode) {
                        out.actions.push(Action::Chmod {
                            path: path.clone(),
                            mode: src.mode,
                        });
                    }
                }
            }
            EntryKind::Symlink => {
                let same =
                    dst.is_some_and(|d| d.kind == EntryKind::Symlink && d.target == src.target);
                if same {
                    out.unchanged += 1;
                    let times = cmp.link_times && !cmp.size_only;
                    if times && dst.is_some_and(|d| d.mtime != src.mtime) {
                        out.actions.push(Action::LinkTime {
                            path: path.clone(),
                            mtime: src.mtime,
                        });
                    }
                } else {
                    out.actions.push(Action::Symlink {
                        path: path.clone(),
                        target: src.target.clone().unwrap_or_default(),
                        replaces: replaces.or(dst_kind.filter(|k| *k != EntryKind::Dir)),
                    });
                }
            }
            EntryKind::Other => {}
        }
    }
    if cmp.delete {
        for (path, d) in dest {
            if source.get(path).is_some_and(|s| !s.excluded) {
                continue;
            }
            if d.excluded && !cmp.delete_excluded {
                continue;
            }
            if removed_dirs.iter().any(|r| is_below(path, r)) || covered(&unreadable, path) {
                continue;
            }
            // An excluded source entry is not mirrored: the destination's copy is an
            // excluded entry too, removed only with delete_excluded.
            if source.get(path).is_some_and(|s| s.excluded) && !cmp.delete_excluded {
                continue;
            }
            deletes.push(Action::Delete {
                path: path.clone(),
                kind: d.kind,
            });
        }
    }
    out.actions.extend(deletes);
    out
}

/// True when a path or one of its parents is excluded by `filter` (for snapshot walks
/// that prune whole directories).
pub fn filter_path(filter: &Filter, rel: &[u8], is_dir: bool) -> bool {
    filter.excluded(&String::from_utf8_lossy(rel), is_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64, mtime: i64) -> TreeEntry {
        TreeEntry {
            kind: EntryKind::File,
            size,
            mtime,
            mode: 0o644,
            target: None,
            excluded: false,
            unreadable: false,
        }
    }
    fn dir() -> TreeEntry {
        TreeEntry {
            kind: EntryKind::Dir,
            size: 0,
            mtime: 0,
            mode: 0o755,
            target: None,
            excluded: false,
            unreadable: false,
        }
    }
    fn link(t: &str) -> TreeEntry {
        TreeEntry {
            kind: EntryKind::Symlink,
            size: 0,
            mtime: 0,
            mode: 0o777,
            target: Some(t.as_bytes().to_vec()),
            excluded: false,
            unreadable: false,
        }
    }
    fn snap(items: &[(&str, TreeEntry)]) -> Snapshot {
        items
            .iter()
            .map(|(p, e)| (p.as_bytes().to_vec(), e.clone()))
            .collect()
    }
    fn lines(p: &Plan) -> Vec<String> {
        p.actions.iter().map(|a| a.describe("upload")).collect()
    }

    #[test]
    fn copy_totals_saturate_at_absurd_sizes() {
        let src = snap(&[("a", file(u64::MAX, 1)), ("b", file(u64::MAX, 1))]);
        let p = plan(&src, &Snapshot::new(), &Compare::default());
        assert_eq!(p.copy_totals(), (2, u64::MAX));
    }

    #[test]
    fn a_link_whose_target_could_not_be_read_is_left_alone() {
        let unreadable = TreeEntry {
            target: None,
            ..link("")
        };
        let src = snap(&[("l", unreadable.clone()), ("m", unreadable)]);
        let dst = snap(&[("l", file(3, 1)), ("m", link("x"))]);
        let cmp = Compare {
            delete: true,
            ..Default::default()
        };
        let p = plan(&src, &dst, &cmp);
        assert!(p.actions.is_empty(), "{:?}", lines(&p));
    }

    #[test]
    fn new_changed_unchanged_and_deleted() {
        let src = snap(&[
            ("a", file(1, 10)),
            ("d", dir()),
            ("d/b", file(2, 20)),
            ("l", link("a")),
        ]);
        let dst = snap(&[
            ("a", file(1, 10)),
            ("d", dir()),
            ("d/b", file(2, 21)),
            ("old", file(5, 1)),
        ]);
        let cmp = Compare {
            delete: true,
            ..Default::default()
        };
        let p = plan(&src, &dst, &cmp);
        assert_eq!(
            lines(&p),
            ["upload d/b (2 bytes)", "symlink l -> a", "delete old"]
        );
        assert_eq!(p.unchanged, 1);
        let size_only = plan(
            &src,
            &dst,
            &Compare {
                size_only: true,
                ..Default::default()
            },
        );
        assert_eq!(lines(&size_only), ["symlink l -> a"]);
        let all = plan(
            &src,
            &dst,
            &Compare {
                all: true,
                ..Default::default()
            },
        );
        assert_eq!(all.actions.len(), 3);
    }

    #[test]
    fn type_changes_replace_and_skip_deletes_below_removed_dirs() {
        let src = snap(&[("x", file(1, 1)), ("y", dir()), ("z", link("t"))]);
        let dst = snap(&[
            ("x", dir()),
            ("x/inner", file(1, 1)),
            ("y", file(1, 1)),
            ("z", file(3, 3)),
        ]);
        let p = plan(
            &src,
            &dst,
            &Compare {
                delete: true,
                ..Default::default()
            },
        );
        assert_eq!(
            lines(&p),
            [
                "upload x (1 bytes) (replacing a directory)",
                "mkdir y/ (replacing a file)",
                "symlink z -> t (replacing a file)"
            ]
        );
    }

    #[test]
    fn links_compare_by_target_and_by_time_only_where_times_can_be_set() {
        let at = |t: &str, mtime| TreeEntry { mtime, ..link(t) };
        let src = snap(&[
            ("same", at("a", 5)),
            ("moved", at("b", 5)),
            ("old", at("a", 5)),
        ]);
        let dst = snap(&[
            ("same", at("a", 5)),
            ("moved", at("a", 5)),
            ("old", at("a", 9)),
        ]);
        let by_target = plan(&src, &dst, &Compare::default());
        assert_eq!(
            lines(&by_target),
            ["symlink moved -> b (replacing a symlink)"]
        );
        assert_eq!(by_target.unchanged, 2);
        let timed = Compare {
            link_times: true,
            ..Default::default()
        };
        let p = plan(&src, &dst, &timed);
        assert_eq!(
            lines(&p),
            ["symlink moved -> b (replacing a symlink)", "touch -h old"]
        );
        assert_eq!(p.unchanged, 2);
        let size_only = Compare {
            size_only: true,
            ..timed
        };
        assert_eq!(plan(&src, &dst, &size_only).actions.len(), 1);
    }

    #[test]
    fn excluded_entries_are_kept_unless_delete_excluded() {
        let mut ex = file(1, 1);
        ex.excluded = true;
        let src = snap(&[("keep", file(1, 1))]);
        let dst = snap(&[("keep", file(1, 1)), ("cache.tmp", ex)]);
        let p = plan(
            &src,
            &dst,
            &Compare {
                delete: true,
                ..Default::default()
            },
        );
        assert!(p.actions.is_empty());
        let p = plan(
            &src,
            &dst,
            &Compare {
                delete: true,
                delete_excluded: true,
                ..Default::default()
            },
        );
        assert_eq!(lines(&p), ["delete cache.tmp"]);
    }

    #[test]
    fn nothing_is_planned_at_or_below_what_either_side_could_not_read() {
        let unread = |mut e: TreeEntry| {
            e.unreadable = true;
            e
        };
        let src = snap(&[
            ("bad", unread(dir())),
            ("badfile", unread(file(0, 0))),
            ("d", dir()),
            ("d/new", file(1, 1)),
            ("gone", unread(dir())),
            ("gone/f", file(1, 1)),
            ("ok", file(1, 1)),
        ]);
        let dst = snap(&[
            ("bad", dir()),
            ("bad/x", file(5, 5)),
            ("bad/y", dir()),
            ("bad/y/z", file(5, 5)),
            ("badfile", file(9, 9)),
            ("d", unread(dir())),
            ("gone", dir()),
            ("stale", file(1, 1)),
        ]);
        let cmp = Compare {
            delete: true,
            ..Default::default()
        };
        let p = plan(&src, &dst, &cmp);
        assert_eq!(lines(&p), ["upload ok (1 bytes)", "delete stale"]);

        let mut root = dir();
        root.unreadable = true;
        let mut dst = dst;
        dst.insert(Vec::new(), root);
        assert!(plan(&src, &dst, &cmp).actions.is_empty());
    }

    #[test]
    fn last_patterns_mark_copies_and_modes_are_compared_with_preserve() {
        let mut m = file(1, 1);
        m.mode = 0o600;
        let src = snap(&[("dists/x/InRelease", file(1, 2)), ("f", m)]);
        let dst = snap(&[("f", file(1, 1))]);
        let cmp = Compare {
            preserve_mode: true,
            last: PatternSet::new(&["dists/*/InRelease"]).unwrap(),
            ..Default::default()
        };
        let p = plan(&src, &dst, &cmp);
        assert_eq!(
            lines(&p),
            ["upload dists/x/InRelease (1 bytes) [last]", "chmod 0600 f"]
        );
    }

    #[test]
    fn links_without_a_known_target() {
        let unread = TreeEntry {
            target: None,
            ..link("")
        };
        let delete = Compare {
            delete: true,
            ..Default::default()
        };
        // A source link that could not be read creates nothing and deletes nothing.
        let src = snap(&[("l", unread.clone()), ("m", unread.clone())]);
        let dst = snap(&[("l", link("a")), ("m", file(1, 1))]);
        let p = plan(&src, &dst, &delete);
        assert_eq!(lines(&p), Vec::<String>::new());
        assert_eq!(p.unchanged, 0);
        // A destination link that could not be read is replaced.
        let src = snap(&[("l", link("a"))]);
        let dst = snap(&[("l", unread)]);
        assert_eq!(
            lines(&plan(&src, &dst, &delete)),
            ["symlink l -> a (replacing a symlink)"]
        );
    }
}
