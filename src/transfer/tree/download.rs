//! `get -r`: a remote tree down, [`DIRS_IN_FLIGHT`] directories listed at once, each
//! listing's files started as tasks as soon as it arrives. A directory stays in flight
//! until its last file has a transfer slot, so listings run only so far ahead of the
//! downloads and the queued tasks stay bounded, however large the tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::{DIRS_IN_FLIGHT, TreeWalk, safe_remote_name, spawn_in_slot};
use crate::error::{Error, Result};
use crate::proto::{FileAttributes, FileType, NameEntry};
use crate::task::{spawn, walk_stack};
use crate::transfer::{Report, Transfer, lossy, remote_join};

/// A remote directory still to list, and the local directory it fills.
struct Down {
    remote: Vec<u8>,
    local: PathBuf,
}

/// What the tasks of one tree download share (`stop` is never set: a download goes on
/// past failures).
type DownloadWalk = TreeWalk<Down, (PathBuf, FileAttributes)>;

impl Transfer {
    /// Downloads the contents of `remote_root` into `local_root` (created if missing),
    /// streaming (see the module documentation). Names from the server are checked
    /// before use, and remote symlinks become local symlinks (never followed).
    pub async fn download_tree(&self, remote_root: &[u8], local_root: &Path) -> Report {
        self.ready().await;
        if let Err(e) = make_local_dir(local_root) {
            self.record_failure(local_root.display().to_string(), e);
            return self.take_report();
        }
        let preserve = self.opts.preserve_times || self.opts.preserve_mode;
        // The root's attributes come from its own STAT, asked alongside the listing.
        let root_attrs = preserve.then(|| {
            let sftp = self.sftp.clone();
            let path = remote_root.to_vec();
            spawn(async move { sftp.stat(&path).await })
        });
        let root = Down {
            remote: remote_root.to_vec(),
            local: local_root.to_path_buf(),
        };
        let walk = Rc::new(DownloadWalk::new(self, root));
        walk_stack(&walk.stack, DIRS_IN_FLIGHT, &walk.stop, |dir| {
            list_and_fetch(walk.clone(), dir)
        })
        .await;
        walk.files.wait().await;
        if let Some(root) = root_attrs {
            match root.await {
                Ok(attrs) => walk
                    .dir_attrs
                    .borrow_mut()
                    .push((local_root.to_path_buf(), attrs)),
                Err(e) => self.record_failure(lossy(remote_root), e),
            }
        }
        self.set_local_dir_attrs(walk.dir_attrs.take());
        self.take_report()
    }

    /// Sets the `-p` attributes of downloaded directories once everything inside them is
    /// written (writing moves a directory's time; a read-only mode would refuse the
    /// entries), deepest first so a parent's mode cannot lock out its children.
    fn set_local_dir_attrs(&self, mut dirs: Vec<(PathBuf, FileAttributes)>) {
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (dir, attrs) in dirs {
            let r = fs::File::open(&dir)
                .map_err(|e| Error::local(format!("cannot open {}", dir.display()), e))
                .and_then(|f| self.apply_local_attrs(&dir, &f, &attrs));
            if let Err(e) = r {
                self.record_failure(dir.display().to_string(), e);
            }
        }
    }
}

/// Lists one remote directory and starts its entries: files and links as tasks (each
/// once a transfer slot is free), subdirectories made and queued.
async fn list_and_fetch(walk: Rc<DownloadWalk>, dir: Down) {
    let t = &walk.t;
    let entries = {
        let _permit = t.open_files.acquire(1).await;
        t.sftp.read_dir(&dir.remote).await
    };
    let entries: Vec<NameEntry> = match entries {
        Ok(e) => e,
        Err(e) => return t.record_failure(lossy(&dir.remote), e),
    };
    let (files, bytes) = file_totals(&entries);
    t.progress.add_total(files, bytes);
    let seen = walk.files_seen.get() + files as usize;
    walk.files_seen.set(seen);
    t.want(crate::pool::Want::Files(seen));
    for entry in entries {
        fetch_entry(&walk, &dir, entry).await;
    }
}

/// Starts one entry of a listed directory.
async fn fetch_entry(walk: &DownloadWalk, dir: &Down, entry: NameEntry) {
    let t = walk.t.clone();
    let remote = remote_join(&dir.remote, &entry.filename);
    let local = match safe_remote_name(&entry.filename) {
        Ok(name) => dir.local.join(name),
        Err(e) => return t.record_failure(lossy(&remote), e),
    };
    match entry.attrs.file_type() {
        FileType::Dir => {
            if let Err(e) = make_local_dir(&local) {
                return t.record_failure(local.display().to_string(), e);
            }
            t.report.borrow_mut().dirs += 1;
            if t.opts.preserve_times || t.opts.preserve_mode {
                walk.dir_attrs
                    .borrow_mut()
                    .push((local.clone(), entry.attrs));
            }
            walk.stack.borrow_mut().push(Down { remote, local });
        }
        FileType::Symlink => {
            let mtime = entry.attrs.mtime().filter(|_| t.opts.preserve_times);
            let link = async move {
                let mtime = mtime.map(i64::from);
                match t.download_symlink(&remote, &local, mtime).await {
                    Ok(()) => t.report.borrow_mut().symlinks += 1,
                    Err(e) => t.record_failure(lossy(&remote), e),
                }
            };
            spawn_in_slot(&walk.slots, &walk.files, link).await
        }
        FileType::File | FileType::Unknown => {
            let attrs = entry.attrs;
            let file = async move {
                let r = t
                    .on_some_channel(|t| {
                        let (remote, local, attrs) = (&remote, &local, &attrs);
                        async move { t.download_file(remote, local, Some(attrs), true).await }
                    })
                    .await;
                t.finish_file(&remote, r);
            };
            spawn_in_slot(&walk.slots, &walk.files, file).await
        }
        FileType::Other => {
            log::warn!(
                "skipping {}: not a file, directory or symlink",
                lossy(&remote)
            );
        }
    }
}

/// The files of a listing and their bytes, for progress. The sizes are the server's
/// word: they saturate rather than overflow.
fn file_totals(entries: &[NameEntry]) -> (u64, u64) {
    entries.iter().fold((0, 0), |(f, b), e| {
        if e.attrs.file_type() == FileType::File {
            (f + 1, b.saturating_add(e.attrs.size.unwrap_or(0)))
        } else {
            (f, b)
        }
    })
}

/// Creates a local directory for a download; refuses to descend through a symlink.
fn make_local_dir(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::local(
            format!("{} exists and is not a directory", dir.display()),
            std::io::ErrorKind::AlreadyExists.into(),
        )),
        Err(_) => fs::create_dir_all(dir)
            .map_err(|e| Error::local(format!("cannot create directory {}", dir.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_sizes_add_up_without_overflow() {
        let file = |size| NameEntry {
            filename: b"f".to_vec(),
            longname: Vec::new(),
            attrs: FileAttributes {
                size: Some(size),
                ..FileAttributes::with_permissions(0o100644)
            },
        };
        let listing = [file(u64::MAX), file(u64::MAX), file(1)];
        assert_eq!(file_totals(&listing), (3, u64::MAX));
    }
}
