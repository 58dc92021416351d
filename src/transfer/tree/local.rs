//! Local trees: listing a directory, examining an entry, and walking a whole tree (the
//! mirror's snapshot walk; `put -r` streams with [`list_local_dir`] and [`local_entry`]).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What a local tree entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalKind {
    /// A regular file of this size.
    File {
        /// Bytes.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symlink with this target (recreated as a link, not followed).
    Symlink {
        /// The link's text.
        target: PathBuf,
    },
}

/// One entry of a local tree, relative to its root.
#[derive(Debug, Clone)]
pub struct LocalEntry {
    /// Path relative to the root (never empty, never `..`).
    pub rel: PathBuf,
    /// Its kind.
    pub kind: LocalKind,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Permission bits.
    pub mode: u32,
    /// Matched an exclude pattern.
    pub excluded: bool,
}

/// A listed local tree.
#[derive(Debug, Default)]
pub struct LocalTree {
    /// The entries, parents before children.
    pub entries: Vec<LocalEntry>,
    /// What could not be read, relative to the root, with why: a directory that could not
    /// be listed (its own entry is in `entries`, its contents are unknown), or an entry
    /// that could not be examined (it is not in `entries`). The rest of the tree is listed.
    pub unreadable: Vec<(PathBuf, Error)>,
}

/// Lists a local tree depth-first (parents before children), without following symlinks
/// unless `follow_links`. Sockets, FIFOs and devices are skipped with a warning. Only an
/// unreadable root is an error; anything below it that cannot be read is listed in
/// [`LocalTree::unreadable`].
pub fn walk_local(root: &Path, follow_links: bool) -> Result<LocalTree> {
    walk_local_with(root, follow_links, &|_, _| (false, true))
}

/// The names in a local directory, sorted.
pub(crate) fn list_local_dir(dir: &Path) -> Result<Vec<OsString>> {
    let err = |e| Error::local(format!("cannot list {}", dir.display()), e);
    let mut names = fs::read_dir(dir)
        .map_err(err)?
        .map(|ent| ent.map(|e| e.file_name()).map_err(err))
        .collect::<Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// [`walk_local`] with a classifier: `classify(rel, is_dir)` returns whether the entry is
/// excluded (it is then reported with `excluded` set) and whether to descend into it.
pub fn walk_local_with(
    root: &Path,
    follow_links: bool,
    classify: &dyn Fn(&Path, bool) -> (bool, bool),
) -> Result<LocalTree> {
    let mut tree = LocalTree::default();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let names = match list_local_dir(&dir) {
            Ok(names) => names,
            Err(e) if rel.as_os_str().is_empty() => return Err(e),
            Err(e) => {
                tree.unreadable.push((rel, e));
                continue;
            }
        };
        let mut subdirs = Vec::new();
        for name in names {
            let rel_path = rel.join(&name);
            match local_entry(root, &rel_path, follow_links, classify) {
                Ok(Some((entry, descend))) => {
                    if descend {
                        subdirs.push(rel_path);
                    }
                    tree.entries.push(entry);
                }
                Ok(None) => {}
                Err(e) => tree.unreadable.push((rel_path, e)),
            }
        }
        // Reverse so the stack pops them in sorted order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(tree)
}

/// One entry of a local walk, and whether to descend into it; `None` for what is skipped.
pub(crate) fn local_entry(
    root: &Path,
    rel: &Path,
    follow_links: bool,
    classify: &dyn Fn(&Path, bool) -> (bool, bool),
) -> Result<Option<(LocalEntry, bool)>> {
    use std::os::unix::fs::MetadataExt;
    let path = root.join(rel);
    let lmeta = fs::symlink_metadata(&path)
        .map_err(|e| Error::local(format!("cannot stat {}", path.display()), e))?;
    let meta = if lmeta.file_type().is_symlink() && follow_links {
        match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("skipping dangling symlink {}: {e}", path.display());
                return Ok(None);
            }
        }
    } else {
        lmeta
    };
    let ft = meta.file_type();
    let (excluded, descend) = classify(rel, ft.is_dir());
    let kind = if ft.is_file() {
        LocalKind::File { size: meta.len() }
    } else if ft.is_dir() {
        LocalKind::Dir
    } else if ft.is_symlink() {
        let target = fs::read_link(&path)
            .map_err(|e| Error::local(format!("cannot read link {}", path.display()), e))?;
        LocalKind::Symlink { target }
    } else {
        log::warn!(
            "skipping {}: not a file, directory or symlink",
            path.display()
        );
        return Ok(None);
    };
    let descend = descend && kind == LocalKind::Dir;
    let entry = LocalEntry {
        rel: rel.to_path_buf(),
        kind,
        mtime: meta.mtime(),
        mode: meta.permissions().mode() & 0o7777,
        excluded,
    };
    Ok(Some((entry, descend)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_parents_first_in_sorted_order() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("b/c")).unwrap();
        fs::write(d.path().join("a"), b"1").unwrap();
        fs::write(d.path().join("b/c/f"), b"22").unwrap();
        std::os::unix::fs::symlink("a", d.path().join("l")).unwrap();
        let e = walk_local(d.path(), false).unwrap().entries;
        let rels: Vec<_> = e
            .iter()
            .map(|e| e.rel.to_string_lossy().into_owned())
            .collect();
        assert_eq!(rels, ["a", "b", "l", "b/c", "b/c/f"]);
        assert_eq!(e[4].kind, LocalKind::File { size: 2 });
        assert_eq!(e[2].kind, LocalKind::Symlink { target: "a".into() });
    }
}
