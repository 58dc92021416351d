//! From parsed logs to the work to do.
//!
//! Several logs (older pending ones plus the current one) are merged into one plan:
//! reprepro's local files only hold the newest state, so an older log cannot be replayed
//! on its own. For every path the newest line wins (later log, later line); the entries
//! it overrides are recorded `DONE obsoleted` in their logs. Entries already recorded
//! done are skipped, and distribution files recorded `asdotnew` only need their rename.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::outlog::{DoneState, Outlog, Record};

/// Where local files are.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext<'a> {
    /// The out dir: pool files are `outdir/<filekey>`.
    pub outdir: &'a Path,
    /// The local `dists/` directory: a relative DISTFILE name that does not exist from
    /// the current directory (reprepro's, when it called us) is looked up here.
    pub distdir: &'a Path,
}

/// What happens to one log.
#[derive(Debug, Clone, Default)]
pub struct LogPlan {
    /// The log.
    pub path: PathBuf,
    /// Paths still to record done before the log becomes `.done`.
    pub pending: BTreeSet<String>,
    /// Paths overridden by newer entries: recorded `obsoleted` when the run starts.
    pub obsoleted: Vec<String>,
}

/// A new pool file to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUpload {
    /// Index of its log in [`Plan::logs`].
    pub log: usize,
    /// The filekey (also the remote path below the target directory).
    pub key: String,
    /// The local file.
    pub local: PathBuf,
    /// An older, unapplied POOLDELETE of the same path precedes it: a remote file with
    /// other contents is the deleted one and may be replaced (otherwise that is an error).
    pub replace: bool,
}

/// A distribution file: uploaded as `<name>.new`, renamed when its distribution is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistFile {
    /// Index of its log.
    pub log: usize,
    /// `<reldir>/<name>`.
    pub key: String,
    /// Relative to the distribution directory.
    pub name: String,
    /// The file reprepro generated.
    pub local: PathBuf,
    /// Already uploaded as `.new` by an earlier run (recorded `asdotnew`).
    pub uploaded: bool,
}

/// A symlink to create (or replace) in a distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistSymlink {
    /// Index of its log.
    pub log: usize,
    /// `<reldir>/<name>`.
    pub key: String,
    /// Relative to the distribution directory.
    pub name: String,
    /// The link's text.
    pub target: String,
}

/// A distribution file to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistDelete {
    /// Index of its log.
    pub log: usize,
    /// `<reldir>/<name>`.
    pub key: String,
    /// Relative to the distribution directory.
    pub name: String,
}

/// The changes of one distribution (or snapshot) directory, made visible together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DistGroup {
    /// `dists/<codename>` (or `dists/<codename>/snapshots/<name>`).
    pub reldir: String,
    /// Files, by name.
    pub files: Vec<DistFile>,
    /// Symlinks, by name.
    pub symlinks: Vec<DistSymlink>,
    /// Deletions, by name.
    pub deletes: Vec<DistDelete>,
}

/// A pool file to delete (only when everything else succeeded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDelete {
    /// Index of its log.
    pub log: usize,
    /// The filekey.
    pub key: String,
}

/// Everything one run does.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The logs, oldest first.
    pub logs: Vec<LogPlan>,
    /// New pool files, by filekey.
    pub pool_uploads: Vec<PoolUpload>,
    /// Distribution changes, by directory.
    pub dists: Vec<DistGroup>,
    /// Pool deletions, by filekey.
    pub pool_deletes: Vec<PoolDelete>,
    /// Entries skipped because they are recorded done.
    pub already_done: usize,
}

#[derive(Debug, Clone)]
enum Item {
    PoolNew {
        local: PathBuf,
    },
    PoolDelete,
    File {
        reldir: String,
        name: String,
        local: PathBuf,
    },
    Symlink {
        reldir: String,
        name: String,
        target: String,
    },
    Delete {
        reldir: String,
        name: String,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    log: usize,
    item: Item,
    /// This entry, or one it overrides, deletes the pool file.
    follows_delete: bool,
}

/// Where `local` (a DISTFILE name) is: absolute names as they are; a relative one from
/// the current directory if it exists there, else below `distdir`.
fn dist_local(local: &str, reldir: &str, name: &str, ctx: &PlanContext<'_>) -> PathBuf {
    let p = PathBuf::from(local);
    if p.is_absolute() || p.exists() {
        return p;
    }
    if let Some(rest) = reldir.strip_prefix("dists/") {
        let alt = ctx.distdir.join(rest).join(name);
        if alt.exists() {
            return alt;
        }
    }
    p
}

/// Rank of a distribution file in the rename order: everything else first (together),
/// then the top-level `Release`, `Release.gpg` and `InRelease`, one after the other, so
/// every file the new Release files describe is in place before they are.
pub fn rename_rank(name: &str) -> u8 {
    match name {
        "Release" => 1,
        "Release.gpg" => 2,
        "InRelease" => 3,
        _ => 0,
    }
}

/// The files of a distribution in rename batches: one batch of everything else (renamed
/// concurrently), then one batch per Release file present, in the order `Release`,
/// `Release.gpg`, `InRelease`.
pub fn rename_batches<T>(files: &[T], name: impl Fn(&T) -> &str) -> Vec<Vec<&T>> {
    let mut batches: Vec<Vec<&T>> = Vec::new();
    for rank in 0..=3u8 {
        let batch: Vec<&T> = files
            .iter()
            .filter(|f| rename_rank(name(f)) == rank)
            .collect();
        if !batch.is_empty() {
            batches.push(batch);
        }
    }
    batches
}

impl Plan {
    /// Merges `logs` (oldest first) into one plan.
    pub fn build(logs: &[Outlog], ctx: &PlanContext<'_>) -> Plan {
        let mut plan = Plan {
            logs: logs
                .iter()
                .map(|l| LogPlan {
                    path: l.path.clone(),
                    ..LogPlan::default()
                })
                .collect(),
            ..Plan::default()
        };
        let mut winners: BTreeMap<String, Entry> = BTreeMap::new();
        for (li, log) in logs.iter().enumerate() {
            for (_, record) in &log.records {
                let Some(key) = record.key() else { continue };
                let item = match record {
                    Record::PoolNew { filekey } => Item::PoolNew {
                        local: ctx.outdir.join(filekey),
                    },
                    Record::PoolDelete { .. } => Item::PoolDelete,
                    Record::DistFile {
                        reldir,
                        name,
                        local,
                    } => Item::File {
                        reldir: reldir.clone(),
                        name: name.clone(),
                        local: dist_local(local, reldir, name, ctx),
                    },
                    Record::DistSymlink {
                        reldir,
                        name,
                        target,
                    } => Item::Symlink {
                        reldir: reldir.clone(),
                        name: name.clone(),
                        target: target.clone(),
                    },
                    Record::DistDelete { reldir, name } => Item::Delete {
                        reldir: reldir.clone(),
                        name: name.clone(),
                    },
                    // Announced as "ignore to be future-proof"; it changes nothing.
                    Record::DistKeep { .. } | Record::Marker { .. } | Record::Done { .. } => {
                        continue;
                    }
                };
                let mut follows_delete = matches!(item, Item::PoolDelete);
                if let Some(prev) = winners.get(&key) {
                    follows_delete |= prev.follows_delete;
                    if prev.log != li && logs[prev.log].state(&key) != DoneState::Done {
                        plan.logs[prev.log].obsoleted.push(key.clone());
                        plan.logs[prev.log].pending.insert(key.clone());
                    }
                }
                winners.insert(
                    key,
                    Entry {
                        log: li,
                        item,
                        follows_delete,
                    },
                );
            }
        }

        let mut groups: BTreeMap<String, DistGroup> = BTreeMap::new();
        for (key, e) in winners {
            let state = logs[e.log].state(&key);
            if state == DoneState::Done {
                plan.already_done += 1;
                continue;
            }
            plan.logs[e.log].pending.insert(key.clone());
            let log = e.log;
            match e.item {
                Item::PoolNew { local } => plan.pool_uploads.push(PoolUpload {
                    log,
                    key,
                    local,
                    replace: e.follows_delete,
                }),
                Item::PoolDelete => plan.pool_deletes.push(PoolDelete { log, key }),
                Item::File {
                    reldir,
                    name,
                    local,
                } => group(&mut groups, &reldir).files.push(DistFile {
                    log,
                    key,
                    name,
                    local,
                    uploaded: state == DoneState::AsDotNew,
                }),
                Item::Symlink {
                    reldir,
                    name,
                    target,
                } => group(&mut groups, &reldir).symlinks.push(DistSymlink {
                    log,
                    key,
                    name,
                    target,
                }),
                Item::Delete { reldir, name } => group(&mut groups, &reldir)
                    .deletes
                    .push(DistDelete { log, key, name }),
            }
        }
        plan.dists = groups.into_values().collect();
        for g in &mut plan.dists {
            g.files.sort_by(|a, b| a.name.cmp(&b.name));
            g.symlinks.sort_by(|a, b| a.name.cmp(&b.name));
            g.deletes.sort_by(|a, b| a.name.cmp(&b.name));
        }
        plan
    }

    /// True when nothing remote is to be done (logs may still need recording/renaming).
    pub fn is_empty(&self) -> bool {
        self.pool_uploads.is_empty() && self.dists.is_empty() && self.pool_deletes.is_empty()
    }

    /// Remote operations planned.
    pub fn operations(&self) -> usize {
        self.pool_uploads.len()
            + self.pool_deletes.len()
            + self
                .dists
                .iter()
                .map(|g| g.files.len() + g.symlinks.len() + g.deletes.len())
                .sum::<usize>()
    }

    /// The plan in execution order, one line per step, paths relative to the target
    /// directory.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for l in &self.logs {
            for k in &l.obsoleted {
                out.push(format!("record {k} obsoleted in {}", l.path.display()));
            }
        }
        for u in &self.pool_uploads {
            let how = if u.replace {
                " (may replace the deleted one)"
            } else {
                ""
            };
            out.push(format!("upload {} from {}{how}", u.key, u.local.display()));
        }
        for g in &self.dists {
            for f in g.files.iter().filter(|f| !f.uploaded) {
                out.push(format!("upload {}.new from {}", f.key, f.local.display()));
            }
        }
        for g in &self.dists {
            for batch in rename_batches(&g.files, |f| f.name.as_str()) {
                for f in batch {
                    out.push(format!("rename {}.new to {}", f.key, f.name));
                }
            }
            for s in &g.symlinks {
                out.push(format!("symlink {} -> {}", s.key, s.target));
            }
            for d in &g.deletes {
                out.push(format!("delete {}", d.key));
            }
        }
        for d in &self.pool_deletes {
            out.push(format!("delete {}", d.key));
        }
        out
    }
}

fn group<'a>(groups: &'a mut BTreeMap<String, DistGroup>, reldir: &str) -> &'a mut DistGroup {
    groups
        .entry(reldir.to_string())
        .or_insert_with(|| DistGroup {
            reldir: reldir.to_string(),
            ..DistGroup::default()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(name: &str, text: &str) -> Outlog {
        Outlog::parse(Path::new(name), text.as_bytes()).unwrap()
    }

    fn ctx() -> PlanContext<'static> {
        PlanContext {
            outdir: Path::new("/out"),
            distdir: Path::new("/out/dists"),
        }
    }

    #[test]
    fn release_files_are_renamed_last_in_order() {
        let names = [
            "InRelease",
            "main/binary-amd64/Release",
            "Release.gpg",
            "main/binary-amd64/Packages.gz",
            "Release",
            "Contents-amd64",
        ];
        let batches = rename_batches(&names, |n| n);
        let b: Vec<Vec<&str>> = batches
            .iter()
            .map(|b| b.iter().map(|n| **n).collect())
            .collect();
        assert_eq!(
            b,
            vec![
                vec![
                    "main/binary-amd64/Release",
                    "main/binary-amd64/Packages.gz",
                    "Contents-amd64"
                ],
                vec!["Release"],
                vec!["Release.gpg"],
                vec!["InRelease"],
            ]
        );
        // Only the ones present get a batch.
        let b = rename_batches(&["InRelease", "Packages"], |n| n);
        assert_eq!(b.len(), 2);
        assert_eq!(*b[1][0], "InRelease");
        assert_eq!(rename_batches::<&str>(&[], |n| n).len(), 0);
    }

    #[test]
    fn one_log_becomes_phases() {
        let l = log(
            "a.outlog",
            "POOLNEW\tpool/main/a/a/a_1_all.deb\n\
             BEGIN-DISTRIBUTION\tt\tdists/t\ttesting\n\
             DISTFILE\tdists/t\tRelease\t/out/dists/t/Release\n\
             DISTFILE\tdists/t\tmain/binary-amd64/Packages\t/out/dists/t/main/binary-amd64/Packages\n\
             DISTSYMLINK\tdists/t\tlink\tmain\n\
             DISTDELETE\tdists/t\tmain/binary-amd64/Packages.bz2\n\
             DISTKEEP\tdists/t\tmain/binary-amd64/Release\n\
             END-DISTRIBUTION\tt\tdists/t\ttesting\n\
             POOLDELETE\tpool/main/a/a/a_0_all.deb\n",
        );
        let p = Plan::build(&[l], &ctx());
        assert_eq!(
            p.pool_uploads,
            [PoolUpload {
                log: 0,
                key: "pool/main/a/a/a_1_all.deb".into(),
                local: "/out/pool/main/a/a/a_1_all.deb".into(),
                replace: false,
            }]
        );
        assert_eq!(p.dists.len(), 1);
        let g = &p.dists[0];
        assert_eq!(g.reldir, "dists/t");
        let names: Vec<&str> = g.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["Release", "main/binary-amd64/Packages"]);
        assert_eq!(g.files[0].key, "dists/t/Release");
        assert_eq!(g.symlinks[0].target, "main");
        assert_eq!(g.deletes[0].key, "dists/t/main/binary-amd64/Packages.bz2");
        assert_eq!(p.pool_deletes[0].key, "pool/main/a/a/a_0_all.deb");
        assert_eq!(p.logs[0].pending.len(), 6);
        assert_eq!(p.operations(), 6);
        let d = p.describe();
        let pos = |s: &str| {
            d.iter()
                .position(|l| l.starts_with(s))
                .unwrap_or_else(|| panic!("{s} in {d:?}"))
        };
        assert!(pos("upload pool/") < pos("upload dists/t/Release.new"));
        assert!(
            pos("rename dists/t/main/binary-amd64/Packages.new")
                < pos("rename dists/t/Release.new")
        );
        assert!(pos("rename dists/t/Release.new") < pos("symlink dists/t/link"));
        assert!(pos("delete dists/t/main") < pos("delete pool/"));
    }

    #[test]
    fn done_entries_are_skipped_and_asdotnew_only_renamed() {
        let l = log(
            "a.outlog",
            "POOLNEW\tpool/a\nPOOLNEW\tpool/b\n\
             DISTFILE\tdists/t\tRelease\t/r\nDISTFILE\tdists/t\tPackages\t/p\n\
             DONE\tdone\tpool/a\nDONE\tasdotnew\tdists/t/Release\n",
        );
        let p = Plan::build(&[l], &ctx());
        assert_eq!(p.already_done, 1);
        assert_eq!(p.pool_uploads.len(), 1);
        assert_eq!(p.pool_uploads[0].key, "pool/b");
        let f = &p.dists[0].files;
        assert!(f.iter().find(|f| f.name == "Release").unwrap().uploaded);
        assert!(!f.iter().find(|f| f.name == "Packages").unwrap().uploaded);
        assert_eq!(
            p.logs[0].pending.iter().collect::<Vec<_>>(),
            ["dists/t/Packages", "dists/t/Release", "pool/b"]
        );
    }

    #[test]
    fn newest_wins_and_older_entries_are_obsoleted() {
        let old = log(
            "1-old.outlog",
            "POOLNEW\tpool/x\nPOOLNEW\tpool/y\nDISTFILE\tdists/t\tRelease\t/r\n\
             DISTFILE\tdists/t\tPackages\t/p\nPOOLDELETE\tpool/z\nDONE\tasdotnew\tdists/t/Release\n\
             DONE\tdone\tpool/y\n",
        );
        let new = log(
            "2-new.outlog",
            "POOLNEW\tpool/z\nDISTFILE\tdists/t\tRelease\t/r\nDISTDELETE\tdists/t\tPackages\n\
             POOLDELETE\tpool/x\nPOOLDELETE\tpool/y\n",
        );
        let p = Plan::build(&[old, new], &ctx());
        // pool/x: added then deleted: the deletion wins, the upload is obsolete.
        assert!(p.pool_uploads.iter().all(|u| u.key != "pool/x"));
        let deletes: Vec<_> = p
            .pool_deletes
            .iter()
            .map(|d| (d.log, d.key.as_str()))
            .collect();
        assert_eq!(deletes, [(1, "pool/x"), (1, "pool/y")]);
        // pool/z: deleted, then added again: the new file may replace the old one.
        assert_eq!(p.pool_uploads.len(), 1);
        assert_eq!(p.pool_uploads[0].key, "pool/z");
        assert!(p.pool_uploads[0].replace);
        assert_eq!(p.pool_uploads[0].log, 1);
        // The newer Release is uploaded again (the older .new is stale).
        let f = &p.dists[0].files;
        assert_eq!(f.len(), 1);
        assert!(!f[0].uploaded);
        assert_eq!(f[0].log, 1);
        assert_eq!(p.dists[0].deletes[0].key, "dists/t/Packages");
        // Obsoleted in the older log: everything the newer one overrides that was not done.
        let mut obs = p.logs[0].obsoleted.clone();
        obs.sort();
        assert_eq!(
            obs,
            ["dists/t/Packages", "dists/t/Release", "pool/x", "pool/z"]
        );
        assert_eq!(p.logs[0].pending.len(), 4);
        assert_eq!(p.logs[1].pending.len(), 5);
    }

    #[test]
    fn within_one_log_the_later_line_wins() {
        let l = log("a.outlog", "POOLNEW\tpool/x\nPOOLDELETE\tpool/x\n");
        let p = Plan::build(&[l], &ctx());
        assert!(p.pool_uploads.is_empty());
        assert_eq!(p.pool_deletes.len(), 1);
        assert!(p.logs[0].obsoleted.is_empty());
        assert_eq!(p.logs[0].pending.len(), 1);
    }

    #[test]
    fn relative_dist_files_fall_back_to_distdir() {
        let t = tempfile::tempdir().unwrap();
        let dists = t.path().join("dists");
        std::fs::create_dir_all(dists.join("t/main")).unwrap();
        std::fs::write(dists.join("t/main/Packages"), "").unwrap();
        let l = log(
            "a.outlog",
            "DISTFILE\tdists/t\tmain/Packages\tnowhere/dists/t/main/Packages\n\
             DISTFILE\tdists/t\tmain/Sources\tnowhere/dists/t/main/Sources\n",
        );
        let c = PlanContext {
            outdir: t.path(),
            distdir: &dists,
        };
        let p = Plan::build(&[l], &c);
        assert_eq!(p.dists[0].files[0].local, dists.join("t/main/Packages"));
        // Found nowhere: kept as given, the upload will say it is missing.
        assert_eq!(
            p.dists[0].files[1].local,
            PathBuf::from("nowhere/dists/t/main/Sources")
        );
    }
}
