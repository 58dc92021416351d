//! `.outlog` files: reprepro's account of what one run changed in its out dir, plus the
//! `DONE` records the hook appends as work completes.
//!
//! reprepro writes one line per change, fields separated by tabs, each line ending in
//! `\n` (see "Scripts to be run after changing the visible files" in reprepro's
//! `manual.html`, and `outhook.c` / `release.c` for what it really emits):
//!
//! ```text
//! POOLNEW       <filekey>
//! POOLDELETE    <filekey>
//! BEGIN-DISTRIBUTION  <codename> <reldir> [<suite>]      (START- in the manual)
//! END-DISTRIBUTION    <codename> <reldir> [<suite>]
//! BEGIN-SNAPSHOT      <codename> <reldir> <snapshot name>
//! END-SNAPSHOT        <codename> <reldir> <snapshot name>
//! DISTFILE      <reldir> <name> <generated local file>
//! DISTSYMLINK   <reldir> <name> <link target, relative to reldir>
//! DISTDELETE    <reldir> <name>
//! DISTKEEP      <reldir> <name>                          (announced, ignored)
//! DONE          <message> <path>                         (written by the hook)
//! ```
//!
//! `DONE` records use the format of reprepro's example `outsftphook.py`, so logs can be
//! resumed by either: `<path>` is the filekey for pool entries and `<reldir>/<name>` for
//! distribution entries; the message `asdotnew` means "uploaded as `<name>.new`, not yet
//! renamed", any other message means the entry is complete.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};

/// The `DONE` message meaning "uploaded under `<name>.new`, rename still to do".
pub const AS_DOT_NEW: &str = "asdotnew";

/// The suffix of logs still to process.
pub const OUTLOG_SUFFIX: &str = ".outlog";
/// The suffix a processed log is renamed to.
pub const DONE_SUFFIX: &str = ".done";

/// Which kind of block a `BEGIN-…`/`END-…` marker delimits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// `…-DISTRIBUTION`: an exported distribution (`dists/<codename>`).
    Distribution,
    /// `…-SNAPSHOT`: a snapshot (`dists/<codename>/snapshots/<name>`).
    Snapshot,
}

/// One line of an outlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A file new in the pool.
    PoolNew {
        /// Its path relative to the out dir, e.g. `pool/main/h/hello/hello_1.0_all.deb`.
        filekey: String,
    },
    /// A file removed from the pool.
    PoolDelete {
        /// Its path relative to the out dir.
        filekey: String,
    },
    /// `BEGIN-`/`END-` `DISTRIBUTION`/`SNAPSHOT`: delimits the lines of one distribution.
    Marker {
        /// `BEGIN-` (or `START-`) rather than `END-`.
        begin: bool,
        /// Distribution or snapshot.
        kind: BlockKind,
        /// The codename.
        codename: String,
        /// The distribution's directory relative to the out dir, e.g. `dists/bookworm`.
        reldir: String,
        /// The suite (distributions, optional) or the snapshot name.
        extra: Option<String>,
    },
    /// A new or changed file of a distribution.
    DistFile {
        /// The distribution's directory relative to the out dir.
        reldir: String,
        /// The file relative to `reldir`, e.g. `main/binary-amd64/Packages.gz`.
        name: String,
        /// The file reprepro generated (absolute, or relative to reprepro's working
        /// directory).
        local: String,
    },
    /// A symlink in a distribution.
    DistSymlink {
        /// The distribution's directory relative to the out dir.
        reldir: String,
        /// The link relative to `reldir`.
        name: String,
        /// The link's target, relative to the directory holding the link.
        target: String,
    },
    /// A distribution file no longer there.
    DistDelete {
        /// The distribution's directory relative to the out dir.
        reldir: String,
        /// The file relative to `reldir`.
        name: String,
    },
    /// An unchanged distribution file (announced by the manual, not yet generated).
    DistKeep {
        /// The distribution's directory relative to the out dir.
        reldir: String,
        /// The file relative to `reldir`.
        name: String,
    },
    /// The hook's own progress record.
    Done {
        /// `asdotnew`, or what completed it (`done`, `deleted`, `obsoleted`, ...).
        message: String,
        /// The filekey, or `<reldir>/<name>`.
        key: String,
    },
}

impl Record {
    /// The path this record is about, as used in `DONE` records: the filekey for pool
    /// lines, `<reldir>/<name>` for distribution lines; `None` for markers and `DONE`.
    pub fn key(&self) -> Option<String> {
        match self {
            Record::PoolNew { filekey } | Record::PoolDelete { filekey } => Some(filekey.clone()),
            Record::DistFile { reldir, name, .. }
            | Record::DistSymlink { reldir, name, .. }
            | Record::DistDelete { reldir, name }
            | Record::DistKeep { reldir, name } => Some(dist_key(reldir, name)),
            Record::Marker { .. } | Record::Done { .. } => None,
        }
    }
}

/// The `DONE` key of a distribution entry.
pub fn dist_key(reldir: &str, name: &str) -> String {
    format!("{reldir}/{name}")
}

/// Checks a relative path from the log: not empty, not absolute, no empty, `.` or `..`
/// component, no control characters.
fn check_relative(what: &str, s: &str) -> std::result::Result<(), String> {
    if s.is_empty() {
        return Err(format!("empty {what}"));
    }
    if s.starts_with('/') {
        return Err(format!("{what} '{s}' is absolute"));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{what} '{}' contains control characters",
            s.escape_default()
        ));
    }
    if s.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!("{what} '{s}' has an empty, '.' or '..' component"));
    }
    Ok(())
}

fn check_field(what: &str, s: &str) -> std::result::Result<(), String> {
    if s.is_empty() {
        return Err(format!("empty {what}"));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{what} '{}' contains control characters",
            s.escape_default()
        ));
    }
    Ok(())
}

fn arity(keyword: &str, args: &[&str], allowed: &[usize]) -> std::result::Result<(), String> {
    if allowed.contains(&args.len()) {
        return Ok(());
    }
    let want = match allowed {
        [n] => format!("{n}"),
        [a, b] => format!("{a} or {b}"),
        _ => format!("{allowed:?}"),
    };
    Err(format!(
        "{keyword} takes {want} argument(s), found {}",
        args.len()
    ))
}

/// Parses one line (without its `\n`). The error is the reason, without file and line.
pub fn parse_line(line: &str) -> std::result::Result<Record, String> {
    let mut fields = line.split('\t');
    let keyword = fields.next().unwrap_or_default();
    let args: Vec<&str> = fields.collect();
    if keyword.is_empty() {
        return Err(if line.is_empty() {
            "empty line".to_string()
        } else {
            "line starts with a tab".to_string()
        });
    }
    match keyword {
        "POOLNEW" | "POOLDELETE" => {
            arity(keyword, &args, &[1])?;
            check_relative("filekey", args[0])?;
            let filekey = args[0].to_string();
            Ok(if keyword == "POOLNEW" {
                Record::PoolNew { filekey }
            } else {
                Record::PoolDelete { filekey }
            })
        }
        "DISTFILE" | "DISTSYMLINK" | "DISTDELETE" | "DISTKEEP" => {
            let n = if matches!(keyword, "DISTFILE" | "DISTSYMLINK") {
                3
            } else {
                2
            };
            arity(keyword, &args, &[n])?;
            check_relative("distribution directory", args[0])?;
            check_relative("file name", args[1])?;
            let (reldir, name) = (args[0].to_string(), args[1].to_string());
            match keyword {
                "DISTFILE" => {
                    check_field("local file name", args[2])?;
                    Ok(Record::DistFile {
                        reldir,
                        name,
                        local: args[2].to_string(),
                    })
                }
                "DISTSYMLINK" => {
                    check_field("symlink target", args[2])?;
                    Ok(Record::DistSymlink {
                        reldir,
                        name,
                        target: args[2].to_string(),
                    })
                }
                "DISTDELETE" => Ok(Record::DistDelete { reldir, name }),
                _ => Ok(Record::DistKeep { reldir, name }),
            }
        }
        "DONE" => {
            arity(keyword, &args, &[2])?;
            check_field("DONE message", args[0])?;
            check_field("DONE path", args[1])?;
            Ok(Record::Done {
                message: args[0].to_string(),
                key: args[1].to_string(),
            })
        }
        _ => {
            let (begin, what) = if let Some(w) = keyword
                .strip_prefix("BEGIN-")
                .or_else(|| keyword.strip_prefix("START-"))
            {
                (true, w)
            } else if let Some(w) = keyword.strip_prefix("END-") {
                (false, w)
            } else {
                return Err(format!("unknown keyword '{}'", keyword.escape_default()));
            };
            let kind = match what {
                "DISTRIBUTION" => BlockKind::Distribution,
                "SNAPSHOT" => BlockKind::Snapshot,
                _ => return Err(format!("unknown keyword '{}'", keyword.escape_default())),
            };
            match kind {
                BlockKind::Distribution => arity(keyword, &args, &[2, 3])?,
                BlockKind::Snapshot => arity(keyword, &args, &[3])?,
            }
            check_field("codename", args[0])?;
            check_relative("distribution directory", args[1])?;
            if let Some(e) = args.get(2) {
                check_field("suite or snapshot name", e)?;
            }
            Ok(Record::Marker {
                begin,
                kind,
                codename: args[0].to_string(),
                reldir: args[1].to_string(),
                extra: args.get(2).map(|s| s.to_string()),
            })
        }
    }
}

/// How far an entry of a log got, according to its `DONE` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneState {
    /// Nothing recorded.
    Pending,
    /// Uploaded as `<name>.new`; the rename is still to do.
    AsDotNew,
    /// Complete.
    Done,
}

/// A parsed `.outlog` file.
#[derive(Debug, Clone)]
pub struct Outlog {
    /// Where it was read from.
    pub path: PathBuf,
    /// Every line but the `DONE` records, with its line number (from 1).
    pub records: Vec<(usize, Record)>,
    /// The last `DONE` message per path.
    pub done: HashMap<String, String>,
}

impl Outlog {
    /// Reads and parses a log. Any line that does not parse fails the whole file, with
    /// `file:line` in the message.
    pub fn read(path: &Path) -> Result<Outlog> {
        let bytes = fs::read(path)
            .map_err(|e| Error::local(format!("cannot read {}", path.display()), e))?;
        Outlog::parse(path, &bytes)
    }

    /// Parses the contents of a log; `path` is for messages (and [`Outlog::done_path`]).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Outlog> {
        let bad = |line: usize, why: String| {
            Error::InvalidInput(format!("{}:{line}: {why}", path.display()))
        };
        let mut records = Vec::new();
        let mut done = HashMap::new();
        let mut rest = bytes;
        let mut number = 0;
        while !rest.is_empty() {
            number += 1;
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                return Err(bad(number, "last line does not end in a newline".into()));
            };
            let raw = &rest[..end];
            rest = &rest[end + 1..];
            let line = std::str::from_utf8(raw)
                .map_err(|_| bad(number, "line is not valid UTF-8".into()))?;
            match parse_line(line).map_err(|why| bad(number, why))? {
                Record::Done { message, key } => {
                    done.insert(key, message);
                }
                r => records.push((number, r)),
            }
        }
        Ok(Outlog {
            path: path.to_path_buf(),
            records,
            done,
        })
    }

    /// What the `DONE` records say about `key`.
    pub fn state(&self, key: &str) -> DoneState {
        match self.done.get(key).map(String::as_str) {
            None => DoneState::Pending,
            Some(AS_DOT_NEW) => DoneState::AsDotNew,
            Some(_) => DoneState::Done,
        }
    }

    /// The name the log gets once everything in it is done.
    pub fn done_path(&self) -> PathBuf {
        done_path(&self.path)
    }
}

/// `x.outlog` → `x.done` (other names get `.done` appended).
pub fn done_path(path: &Path) -> PathBuf {
    let bytes = path.as_os_str().as_bytes();
    let stem = bytes
        .strip_suffix(OUTLOG_SUFFIX.as_bytes())
        .unwrap_or(bytes);
    let mut out = stem.to_vec();
    out.extend_from_slice(DONE_SUFFIX.as_bytes());
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

/// The text of a `DONE` record, newline included.
pub fn done_line(message: &str, key: &str) -> String {
    format!("DONE\t{message}\t{key}\n")
}

/// Appends a `DONE` record to a log: one `write` on a file opened for appending, so the
/// line is complete or absent, and on disk before this returns (flushed to the OS; the
/// log itself is reprepro's, on its file system).
pub fn append_done(log: &Path, message: &str, key: &str) -> Result<()> {
    let ctx = |e| Error::local(format!("cannot record progress in {}", log.display()), e);
    let mut f = fs::OpenOptions::new().append(true).open(log).map_err(ctx)?;
    f.write_all(done_line(message, key).as_bytes())
        .map_err(ctx)?;
    f.flush().map_err(ctx)
}

/// Where a log sorts among others: reprepro names them `<10-digit time>-<random>.outlog`,
/// so the time in the name comes first; logs of the same second (the random part says
/// nothing about order) go by creation time (else modification time), then name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogOrder {
    seconds: u64,
    time: Option<SystemTime>,
    name: OsString,
}

impl LogOrder {
    /// The order key of the log at `path`.
    pub fn of(path: &Path) -> Result<LogOrder> {
        let meta = fs::metadata(path)
            .map_err(|e| Error::local(format!("cannot stat {}", path.display()), e))?;
        let time = meta.created().or_else(|_| meta.modified()).ok();
        let name = path.file_name().unwrap_or(path.as_os_str()).to_os_string();
        let seconds = name_seconds(&name).unwrap_or_else(|| {
            meta.modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs())
        });
        Ok(LogOrder {
            seconds,
            time,
            name,
        })
    }
}

/// The time at the start of a reprepro log name (`1700000000-AbCdEf.outlog`).
fn name_seconds(name: &std::ffi::OsStr) -> Option<u64> {
    let b = name.as_bytes();
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || b.get(digits) != Some(&b'-') {
        return None;
    }
    std::str::from_utf8(&b[..digits]).ok()?.parse().ok()
}

/// Every `*.outlog` in `logdir`, oldest first. A missing directory has none.
pub fn pending_outlogs(logdir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match fs::read_dir(logdir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::local(format!("cannot list {}", logdir.display()), e)),
    };
    let mut logs = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::local(format!("cannot list {}", logdir.display()), e))?;
        let name = ent.file_name();
        let b = name.as_bytes();
        if b.len() > OUTLOG_SUFFIX.len() && b.ends_with(OUTLOG_SUFFIX.as_bytes()) {
            let path = logdir.join(&name);
            logs.push((LogOrder::of(&path)?, path));
        }
    }
    logs.sort();
    Ok(logs.into_iter().map(|(_, p)| p).collect())
}

/// How [`select_outlogs`] treats other pending logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelectOptions {
    /// Process every pending log in the log directory (no logs may be given).
    pub pending: bool,
    /// Process older pending logs together with the given ones.
    pub autoretry: bool,
    /// Do not look for pending logs at all.
    pub ignore_pending: bool,
    /// Accept given logs out of order, and go ahead although older logs are pending
    /// (leaving them for later).
    pub force_order: bool,
}

/// The logs to process, oldest first: the given ones, preceded by older pending ones of
/// `logdir` when `autoretry` (or all pending ones with `pending`). Refuses — changing
/// nothing — when older logs are pending and neither `autoretry`, `ignore_pending` nor
/// `force_order` says what to do: applying a newer log first could publish indexes
/// pointing at pool files the older one was to upload.
pub fn select_outlogs(given: &[PathBuf], logdir: &Path, o: SelectOptions) -> Result<Vec<PathBuf>> {
    if o.pending && !given.is_empty() {
        return Err(Error::InvalidInput(
            "--pending processes the pending logs of the log directory; give no .outlog files with it".into(),
        ));
    }
    if o.pending && o.ignore_pending {
        return Err(Error::InvalidInput(
            "--pending and --ignore-pending contradict each other".into(),
        ));
    }
    if o.pending {
        return pending_outlogs(logdir);
    }
    if given.is_empty() {
        return Err(Error::InvalidInput(
            "no .outlog file given (reprepro passes one; use --pending to process the pending ones)".into(),
        ));
    }
    let mut keyed = Vec::new();
    for g in given {
        if !g.as_os_str().as_bytes().ends_with(OUTLOG_SUFFIX.as_bytes()) {
            return Err(Error::InvalidInput(format!(
                "'{}' does not look like a .outlog file",
                g.display()
            )));
        }
        keyed.push((LogOrder::of(g)?, g.clone()));
    }
    for w in keyed.windows(2) {
        if w[1].0 <= w[0].0 && !o.force_order {
            return Err(Error::InvalidInput(format!(
                "the logs given are not in order ('{}' is not newer than '{}'); applying them \
                 in this order might not be safe (--force-order to do it anyway)",
                w[1].1.display(),
                w[0].1.display()
            )));
        }
    }
    if o.ignore_pending {
        return Ok(given.to_vec());
    }
    let newest = keyed.iter().map(|(k, _)| k).max().cloned();
    let given_ids: Vec<PathBuf> = given.iter().map(|g| identity(g)).collect();
    let mut older = Vec::new();
    for p in pending_outlogs(logdir)? {
        if given_ids.contains(&identity(&p)) {
            continue;
        }
        if newest
            .as_ref()
            .is_some_and(|n| LogOrder::of(&p).is_ok_and(|k| &k < n))
        {
            older.push(p);
        }
    }
    if older.is_empty() {
        return Ok(given.to_vec());
    }
    let list = older
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if o.autoretry {
        log::info!("processing older pending logs first: {list}");
        let mut all = older;
        all.extend(given.iter().cloned());
        return Ok(all);
    }
    if o.force_order {
        log::warn!("older logs are still pending and left for later: {list}");
        return Ok(given.to_vec());
    }
    Err(Error::InvalidInput(format!(
        "older logs are still pending: {list}\nprocess them first (--pending), or let this run \
         take them along (--autoretry, or 'autoretry yes' in outsftphook.conf)"
    )))
}

fn identity(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Record {
        parse_line(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    #[test]
    fn every_line_kind() {
        assert_eq!(
            ok("POOLNEW\tpool/main/h/hello/hello_1.0_all.deb"),
            Record::PoolNew {
                filekey: "pool/main/h/hello/hello_1.0_all.deb".into()
            }
        );
        assert_eq!(
            ok("POOLDELETE\tpool/main/h/hello/hello_0.9_all.deb"),
            Record::PoolDelete {
                filekey: "pool/main/h/hello/hello_0.9_all.deb".into()
            }
        );
        assert_eq!(
            ok("BEGIN-DISTRIBUTION\ttest\tdists/test\ttesting"),
            Record::Marker {
                begin: true,
                kind: BlockKind::Distribution,
                codename: "test".into(),
                reldir: "dists/test".into(),
                extra: Some("testing".into()),
            }
        );
        assert_eq!(
            ok("END-DISTRIBUTION\ttest\tdists/test"),
            Record::Marker {
                begin: false,
                kind: BlockKind::Distribution,
                codename: "test".into(),
                reldir: "dists/test".into(),
                extra: None,
            }
        );
        assert!(matches!(
            ok("START-DISTRIBUTION\ttest\tdists/test"),
            Record::Marker { begin: true, .. }
        ));
        assert_eq!(
            ok("BEGIN-SNAPSHOT\ttest\tdists/test/snapshots/s1\ts1"),
            Record::Marker {
                begin: true,
                kind: BlockKind::Snapshot,
                codename: "test".into(),
                reldir: "dists/test/snapshots/s1".into(),
                extra: Some("s1".into()),
            }
        );
        assert!(matches!(
            ok("END-SNAPSHOT\ttest\tdists/test/snapshots/s1\ts1"),
            Record::Marker {
                begin: false,
                kind: BlockKind::Snapshot,
                ..
            }
        ));
        assert_eq!(
            ok(
                "DISTFILE\tdists/test\tmain/binary-amd64/Packages.gz\trepo/dists/test/main/binary-amd64/Packages.gz"
            ),
            Record::DistFile {
                reldir: "dists/test".into(),
                name: "main/binary-amd64/Packages.gz".into(),
                local: "repo/dists/test/main/binary-amd64/Packages.gz".into(),
            }
        );
        assert_eq!(
            ok("DISTSYMLINK\tdists/test\tcurrent\t../other"),
            Record::DistSymlink {
                reldir: "dists/test".into(),
                name: "current".into(),
                target: "../other".into(),
            }
        );
        assert_eq!(
            ok("DISTDELETE\tdists/test\tmain/binary-amd64/Packages.bz2"),
            Record::DistDelete {
                reldir: "dists/test".into(),
                name: "main/binary-amd64/Packages.bz2".into(),
            }
        );
        assert_eq!(
            ok("DISTKEEP\tdists/test\tRelease"),
            Record::DistKeep {
                reldir: "dists/test".into(),
                name: "Release".into(),
            }
        );
        assert_eq!(
            ok("DONE\tasdotnew\tdists/test/Release"),
            Record::Done {
                message: "asdotnew".into(),
                key: "dists/test/Release".into(),
            }
        );
    }

    #[test]
    fn keys() {
        assert_eq!(ok("POOLNEW\tpool/a").key().as_deref(), Some("pool/a"));
        assert_eq!(
            ok("DISTFILE\tdists/t\tmain/Release\t/x").key().as_deref(),
            Some("dists/t/main/Release")
        );
        assert_eq!(ok("END-DISTRIBUTION\tt\tdists/t").key(), None);
    }

    #[test]
    fn bad_lines() {
        for bad in [
            "",
            "\tpool/a",
            "POOLNEW",
            "POOLNEW\t",
            "POOLNEW\ta\tb",
            "POOLNEW\t/etc/passwd",
            "POOLNEW\tpool/../../etc/passwd",
            "POOLNEW\tpool//a",
            "POOLNEW\tpool/a/",
            "POOLNEW\tpool/a\r",
            "DISTFILE\tdists/t\tRelease",
            "DISTFILE\tdists/t\tRelease\t",
            "DISTSYMLINK\tdists/t\tx",
            "DISTDELETE\tdists/t",
            "DISTDELETE\t../t\tx",
            "DISTNEW\tdists/t\tx",
            "BEGIN-DISTRIBUTION\tt",
            "BEGIN-DISTRIBUTION\tt\tdists/t\ts\textra",
            "BEGIN-SNAPSHOT\tt\tdists/t/snapshots/s",
            "BEGIN-RELEASE\tt\tdists/t",
            "DONE\tdone",
            "DONE\t\tpool/a",
            "poolnew\tpool/a",
            "SOMETHING",
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn files_parse_with_done_records_and_report_file_and_line() {
        let p = Path::new("/logs/1700000000-abc.outlog");
        let text = "POOLNEW\tpool/a\nBEGIN-DISTRIBUTION\tt\tdists/t\n\
                    DISTFILE\tdists/t\tRelease\t/o/dists/t/Release\nEND-DISTRIBUTION\tt\tdists/t\n\
                    DONE\tdone\tpool/a\nDONE\tasdotnew\tdists/t/Release\n";
        let log = Outlog::parse(p, text.as_bytes()).unwrap();
        assert_eq!(log.records.len(), 4);
        assert_eq!(log.records[2].0, 3);
        assert_eq!(log.state("pool/a"), DoneState::Done);
        assert_eq!(log.state("dists/t/Release"), DoneState::AsDotNew);
        assert_eq!(log.state("pool/b"), DoneState::Pending);
        assert_eq!(log.done_path(), Path::new("/logs/1700000000-abc.done"));

        // A later record wins: asdotnew, then done.
        let more = format!("{text}DONE\tdone\tdists/t/Release\n");
        let log = Outlog::parse(p, more.as_bytes()).unwrap();
        assert_eq!(log.state("dists/t/Release"), DoneState::Done);

        let e = Outlog::parse(p, b"POOLNEW\tpool/a\nPOOLNEW\tpool/b\nBOGUS\tx\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("/logs/1700000000-abc.outlog:3: unknown keyword 'BOGUS'"),
            "{e}"
        );
        let e = Outlog::parse(p, b"POOLNEW\tpool/a\nPOOLNEW\tpool/b").unwrap_err();
        assert!(e.to_string().contains(".outlog:2: "), "{e}");
        let e = Outlog::parse(p, b"POOLNEW\tpool/\xff\n").unwrap_err();
        assert!(e.to_string().contains(".outlog:1: "), "{e}");
        assert!(matches!(e, Error::InvalidInput(_)));
    }

    #[test]
    fn done_records_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("1700000000-x.outlog");
        fs::write(&p, "POOLNEW\tpool/a\n").unwrap();
        append_done(&p, "done", "pool/a").unwrap();
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "POOLNEW\tpool/a\nDONE\tdone\tpool/a\n"
        );
        assert_eq!(Outlog::read(&p).unwrap().state("pool/a"), DoneState::Done);
    }

    #[test]
    fn log_order_uses_the_time_in_the_name_first() {
        let d = tempfile::tempdir().unwrap();
        // Created in this order, named against it within the same second.
        let a = d.path().join("1700000001-zzz.outlog");
        let b = d.path().join("1700000001-aaa.outlog");
        let c = d.path().join("1700000000-mmm.outlog");
        fs::write(&a, "").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&b, "").unwrap();
        fs::write(&c, "").unwrap();
        fs::write(d.path().join("1700000000-mmm.done"), "").unwrap();
        let got = pending_outlogs(d.path()).unwrap();
        assert_eq!(got, [c.clone(), a.clone(), b.clone()]);
        assert_eq!(
            name_seconds("1700000001-zzz.outlog".as_ref()),
            Some(1700000001)
        );
        assert_eq!(name_seconds("x.outlog".as_ref()), None);

        let sel = |given: &[&PathBuf], o| {
            select_outlogs(
                &given.iter().map(|p| (*p).clone()).collect::<Vec<_>>(),
                d.path(),
                o,
            )
        };
        let o = SelectOptions::default();
        assert!(sel(&[&b], o).is_err(), "older pending logs refuse");
        assert_eq!(
            sel(&[&c], o).unwrap(),
            std::slice::from_ref(&c),
            "newer pending logs do not matter"
        );
        let auto = SelectOptions {
            autoretry: true,
            ..o
        };
        assert_eq!(sel(&[&b], auto).unwrap(), [c.clone(), a.clone(), b.clone()]);
        let force = SelectOptions {
            force_order: true,
            ..o
        };
        assert_eq!(sel(&[&b], force).unwrap(), std::slice::from_ref(&b));
        let ignore = SelectOptions {
            ignore_pending: true,
            ..o
        };
        assert_eq!(sel(&[&b], ignore).unwrap(), std::slice::from_ref(&b));
        assert!(sel(&[&b, &a], ignore).is_err(), "out of order");
        assert_eq!(sel(&[&b, &a], force).unwrap(), [b.clone(), a.clone()]);
        let pending = SelectOptions { pending: true, ..o };
        assert_eq!(
            sel(&[], pending).unwrap(),
            [c.clone(), a.clone(), b.clone()]
        );
        assert!(sel(&[&a], pending).is_err());
        assert!(sel(&[], o).is_err());
        let not_a_log = d.path().join("x.done");
        assert!(sel(&[&not_a_log], o).is_err());
    }
}
