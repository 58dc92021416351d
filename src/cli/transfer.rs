//! `get` and `put`: cp-like destinations over the library's [`Transfer`].

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use clap::Args;
use sftpipe::backend::Backend;
use sftpipe::task::TaskGroup;
use sftpipe::transfer::{
    Progress, StreamFd, Transfer, default_max_open, remote_basename, remote_join, safe_remote_name,
    staging_dir,
};
use sftpipe::{Error, Session};

use super::exit::{self, CONNECTION, CliError, FAILED};
use super::progress::{ProgressMode, Tracker};
use super::{
    GlobalArgs, TransferArgs, UploadArgs, connect_prefetching, expand_remote, expand_tilde,
    remote_operands,
};

/// `get`.
#[derive(Debug, Args)]
#[command(
    after_help = "REMOTE is [user@]host:path or sftp://[user@]host[:port]/path (with -D, \
    a plain path). LOCAL defaults to '.'; when it is an existing directory the file or tree \
    goes into it under REMOTE's name, else it is the new name; '-' writes the file to \
    standard output. REMOTE may hold wildcards (*, ?, [...], matched on the server, as \
    sftp does; quote them from the local shell): every match goes into LOCAL.\n\n\
    Progress: a bar on stderr when it is a terminal (--progress=bar elsewhere: a line a \
    second); --progress=json prints on stdout {\"event\":\"progress\",\"bytes\",\"total\",\"file\"} \
    every 250 ms while bytes move, one {\"event\":\"file\",\"path\",\"bytes\",\"ok\"[,\"error\"]} \
    object per file and a final {\"event\":\"summary\",\"files\",\"bytes\",\"failed\",\"elapsed_ms\"} \
    (times count from the start, connecting included).\n\n\
    Examples:\n  sftpipe get host:/var/log/syslog\n  \
    sftpipe get -r -p host:/srv/www ./backup/\n  \
    sftpipe get -a --progress=json sftp://host//data/big.iso /tmp/big.iso\n  \
    sftpipe get host:db.sql.gz - | gunzip | less"
)]
pub struct GetArgs {
    /// Copy a directory and everything below it
    #[arg(short = 'r', long = "recursive")]
    pub recursive: bool,
    /// Resume: continue a partial local file that is a prefix of REMOTE (a file with other
    /// bytes is downloaded whole; one that may be an older version is refused)
    #[arg(short = 'a', long = "resume")]
    pub resume: bool,
    /// Transfer tuning
    #[command(flatten)]
    pub transfer: TransferArgs,
    /// The remote file or directory
    #[arg(value_name = "REMOTE")]
    pub remote: String,
    /// Where to put it (default: the current directory)
    #[arg(value_name = "LOCAL")]
    pub local: Option<PathBuf>,
}

/// `put`.
#[derive(Debug, Args)]
#[command(
    after_help = "REMOTE is [user@]host:path or sftp://[user@]host[:port]/path (with -D, \
    a plain path). If REMOTE is an existing directory or ends with '/' (then it is created), \
    each LOCAL goes into it under its own name; else the single LOCAL gets REMOTE as its \
    name. Missing remote parent directories are created. Each file is written to a \
    temporary name and renamed into place when complete, unless --inplace. With -r, a \
    REMOTE that does not exist yet is built as a hidden .NAME.sftpipe-partial beside it \
    and renamed into place once all of it landed; after a failure or an interruption it \
    stays there, and a rerun resumes it. LOCAL '-' reads standard input into REMOTE \
    (through a temporary name as well).\n\n\
    Examples:\n  sftpipe put report.pdf host:docs/\n  \
    sftpipe put -r -p ./site host:/srv/www\n  \
    sftpipe put --fsync *.tar host:/backup/\n  \
    pg_dump db | gzip | sftpipe put - host:/backup/db.sql.gz"
)]
#[command(override_usage = "sftpipe put [OPTIONS] <LOCAL>... <REMOTE>")]
pub struct PutArgs {
    /// Copy directories and everything below them
    #[arg(short = 'r', long = "recursive")]
    pub recursive: bool,
    /// Resume: continue an interrupted upload's temporary file, or a partial remote file
    /// in place, when it is a prefix of LOCAL (else upload whole; refuse one that may be an
    /// older version), then remove the target's leftover temporary files
    #[arg(short = 'a', long = "resume")]
    pub resume: bool,
    /// Upload-only options
    #[command(flatten)]
    pub upload: UploadArgs,
    /// Transfer tuning
    #[command(flatten)]
    pub transfer: TransferArgs,
    /// Local files or directories, then the remote destination (one list, so that a
    /// missing operand can be named)
    #[arg(value_name = "LOCAL... REMOTE", required = true, num_args = 1..)]
    pub operands: Vec<OsString>,
}

/// Reports the outcome of a file done outside the library's batch functions.
fn file_outcome(tracker: &Tracker, remote: &[u8], r: sftpipe::Result<u64>) {
    let path = String::from_utf8_lossy(remote);
    match r {
        Ok(n) => tracker.file_done(&path, n, None),
        Err(e) => tracker.file_done(&path, 0, Some(&e)),
    }
}

/// The local name for a downloaded directory: REMOTE's last component, taken from the
/// canonical path for `.`, `..` or `~`; `None` for the root (its contents go straight
/// into LOCAL).
fn remote_dir_name(session: &Session, remote: &[u8]) -> Result<Option<OsString>, CliError> {
    let base = remote_basename(remote);
    let base = if matches!(base, b"" | b"." | b".." | b"~") {
        let canonical = session.realpath(remote)?;
        remote_basename(&canonical).to_vec()
    } else {
        base.to_vec()
    };
    if base.is_empty() || base == b"/" {
        return Ok(None);
    }
    Ok(Some(safe_remote_name(&base)?.to_os_string()))
}

/// `get REMOTE [LOCAL]`.
pub fn get(g: &GlobalArgs, a: &GetArgs) -> Result<i32, CliError> {
    let (ep, paths) = remote_operands(g, std::slice::from_ref(&a.remote), false)?;
    // Its STAT (and with -r its OPENDIR, the first step of a tree download) is answered
    // with the handshake.
    let pattern = sftpipe::glob::has_magic(&paths[0]);
    let target: &[&[u8]] = if pattern { &[] } else { &[&paths[0]] };
    let dirs = if a.recursive { target } else { &[] };
    let session = match super::scp::connect_for_transfer(g, ep.as_ref(), target, dirs)? {
        Backend::Sftp(s) => s,
        Backend::Scp(scp) => return super::scp::get(g, a, &scp, &paths[0]),
    };
    let remote = expand_tilde(&session, &paths[0])?;
    let mut remotes = expand_remote(&session, &a.remote, &remote)?;
    if remotes.len() > 1 {
        return get_many(g, a, &session, &remotes);
    }
    let remote = remotes.pop().unwrap_or(remote);
    let attrs = session.stat(&remote)?;
    if a.local.as_deref() == Some(Path::new("-")) {
        return get_to_stdout(g, a, &session, &remote, &attrs);
    }
    let local = a.local.clone().unwrap_or_else(|| PathBuf::from("."));
    let local_is_dir = fs::metadata(&local).is_ok_and(|m| m.is_dir());

    let mut opts = a.transfer.options();
    opts.resume = a.resume;
    let tracker = Tracker::new(a.transfer.progress, g.quiet);
    let t = session.transfer(opts, tracker.clone());

    if attrs.is_dir() {
        if !a.recursive {
            return Err(CliError::Usage(format!(
                "'{}' is a directory (use get -r)",
                a.remote
            )));
        }
        let dest = match (local_is_dir, remote_dir_name(&session, &remote)?) {
            (true, Some(name)) => local.join(name),
            _ => local,
        };
        log::info!(
            "downloading tree {} to {}",
            String::from_utf8_lossy(&remote),
            dest.display()
        );
        session.run(t.download_tree(&remote, &dest));
        Ok(tracker.finish(false))
    } else {
        let dest = if local_is_dir {
            local.join(safe_remote_name(remote_basename(&remote))?)
        } else {
            local
        };
        tracker.add_total(1, attrs.size.unwrap_or(0));
        let r = session.run(t.download(&remote, &dest, Some(&attrs)));
        file_outcome(&tracker, &remote, r);
        Ok(tracker.finish(true))
    }
}

/// `get 'host:PATTERN' [DIR]`: every match into the local directory, concurrently.
fn get_many(
    g: &GlobalArgs,
    a: &GetArgs,
    session: &Session,
    remotes: &[Vec<u8>],
) -> Result<i32, CliError> {
    let local = a.local.clone().unwrap_or_else(|| PathBuf::from("."));
    if !fs::metadata(&local).is_ok_and(|m| m.is_dir()) {
        return Err(CliError::Usage(format!(
            "'{}' matches {} files: the target '{}' must be an existing directory",
            a.remote,
            remotes.len(),
            local.display()
        )));
    }
    let mut opts = a.transfer.options();
    opts.resume = a.resume;
    let tracker = Tracker::new(a.transfer.progress, g.quiet);
    let t = session.transfer(opts, tracker.clone());
    let mut jobs = Vec::new();
    let mut early = 0;
    for r in remotes {
        let attrs = match session.stat(r) {
            Ok(s) => s,
            Err(e) if e.is_connection() => return Err(e.into()),
            Err(e) => {
                tracker.file_done(&String::from_utf8_lossy(r), 0, Some(&e));
                continue;
            }
        };
        let dest = local.join(safe_remote_name(remote_basename(r))?);
        if attrs.is_dir() && !a.recursive {
            let shown = String::from_utf8_lossy(r);
            exit::report(CliError::Usage(format!(
                "'{shown}' is a directory (use get -r)"
            )));
            early += 1;
            continue;
        }
        if !attrs.is_dir() {
            tracker.add_total(1, attrs.size.unwrap_or(0));
        }
        jobs.push((r.clone(), dest, attrs));
    }
    let task_limit = default_max_open(session.sftp()) * 2 + 16;
    session.run(async {
        let mut group = TaskGroup::new(task_limit);
        for (remote, dest, attrs) in jobs {
            let (t, tracker) = (t.clone(), tracker.clone());
            group
                .spawn(async move {
                    if attrs.is_dir() {
                        t.download_tree(&remote, &dest).await;
                    } else {
                        let r = t.download(&remote, &dest, Some(&attrs)).await;
                        file_outcome(&tracker, &remote, r);
                    }
                })
                .await;
        }
        group.join().await;
    });
    let code = tracker.finish(false);
    Ok(if early > 0 && code == exit::SUCCESS {
        FAILED
    } else {
        code
    })
}

/// `get REMOTE -`: the file's bytes on standard output.
fn get_to_stdout(
    g: &GlobalArgs,
    a: &GetArgs,
    session: &Session,
    remote: &[u8],
    attrs: &sftpipe::FileAttributes,
) -> Result<i32, CliError> {
    if attrs.is_dir() {
        return Err(CliError::Usage(format!(
            "'{}' is a directory: only a file can go to standard output",
            a.remote
        )));
    }
    if a.transfer.progress == ProgressMode::Json || a.resume {
        return Err(CliError::Usage(
            "get to standard output ('-') takes neither --progress=json nor -a".into(),
        ));
    }
    let out = StreamFd::new(session.reactor(), libc::STDOUT_FILENO)
        .map_err(|e| Error::local("cannot use standard output", e))?;
    let tracker = Tracker::new(a.transfer.progress, g.quiet);
    let t = session.transfer(a.transfer.options(), tracker.clone());
    tracker.add_total(1, attrs.size.unwrap_or(0));
    match session.run(t.download_stream(remote, &out)) {
        Err(Error::Local { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Err(CliError::StdoutClosed)
        }
        r => {
            file_outcome(&tracker, remote, r);
            Ok(tracker.finish(true))
        }
    }
}

/// `put - REMOTE`: standard input to one remote file, through a temporary name.
fn put_from_stdin(g: &GlobalArgs, a: &PutArgs, remote_op: &str) -> Result<i32, CliError> {
    if a.recursive || a.resume || remote_op.ends_with('/') {
        return Err(CliError::Usage(
            "put from standard input ('-') needs a remote file name, and takes neither -r \
             nor -a"
                .into(),
        ));
    }
    let (ep, paths) = remote_operands(g, &[remote_op], false)?;
    let session = connect_prefetching(g, ep.as_ref(), &[&paths[0]], &[])?;
    let remote = expand_tilde(&session, &paths[0])?;
    if session.stat(&remote).is_ok_and(|s| s.is_dir()) {
        return Err(CliError::Usage(format!(
            "'{remote_op}' is a directory: name the file to write standard input to"
        )));
    }
    let input = StreamFd::new(session.reactor(), libc::STDIN_FILENO)
        .map_err(|e| Error::local("cannot use standard input", e))?;
    let mut opts = a.transfer.options();
    a.upload.apply(&mut opts);
    let tracker = Tracker::new(a.transfer.progress, g.quiet);
    let t = session.transfer(opts, tracker.clone());
    tracker.add_total(1, 0);
    let r = session.run(t.upload_stream(&input, &remote));
    file_outcome(&tracker, &remote, r);
    Ok(tracker.finish(true))
}

enum Job {
    File {
        local: PathBuf,
        dest: Vec<u8>,
    },
    /// `new`: `dest` does not exist, so the tree is staged and renamed into place.
    Tree {
        local: PathBuf,
        dest: Vec<u8>,
        new: bool,
    },
}

/// The name a local operand gets inside a remote directory; `None` for `/`.
pub(super) fn local_name(local: &Path) -> Option<OsString> {
    match local.file_name() {
        Some(n) => Some(n.to_os_string()),
        None => fs::canonicalize(local)
            .ok()
            .and_then(|c| c.file_name().map(|n| n.to_os_string())),
    }
}

/// The LOCAL operands and the REMOTE one, or a message naming what is missing when only
/// one operand was given.
fn put_operands(a: &PutArgs) -> Result<(Vec<PathBuf>, &OsString), CliError> {
    if let [locals @ .., remote] = a.operands.as_slice()
        && !locals.is_empty()
    {
        return Ok((locals.iter().map(PathBuf::from).collect(), remote));
    }
    let only = a
        .operands
        .first()
        .map(|l| l.to_string_lossy())
        .unwrap_or_default();
    let looks_remote = matches!(
        sftpipe::location::parse_operand(&only),
        Ok(sftpipe::location::Operand::Remote(_))
    );
    Err(CliError::Usage(if looks_remote {
        format!(
            "put: missing the LOCAL file to upload before '{only}' (sftpipe put LOCAL... REMOTE)"
        )
    } else {
        format!(
            "put: missing the REMOTE destination after '{only}' (e.g. sftpipe put {only} host:dir/)"
        )
    }))
}

/// Expands quoted local wildcards (`put 'dist/*' host:`) that name no file as written;
/// a pattern matching nothing is reported. Returns the paths and the reported codes.
fn expand_locals(locals: Vec<PathBuf>) -> (Vec<PathBuf>, Vec<i32>) {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::with_capacity(locals.len());
    let mut codes = Vec::new();
    for l in locals {
        if !sftpipe::glob::has_magic(l.as_os_str().as_bytes()) || fs::symlink_metadata(&l).is_ok() {
            out.push(l);
            continue;
        }
        let e = match sftpipe::glob::expand_local(&l) {
            Ok(found) if !found.is_empty() => {
                out.extend(found);
                continue;
            }
            Ok(_) => CliError::NoMatch {
                pattern: l.display().to_string(),
                remote: false,
            },
            Err(e) => e.into(),
        };
        exit::report(&e);
        codes.push(e.code());
    }
    (out, codes)
}

/// `put LOCAL... REMOTE`: every file and tree concurrently over one connection.
pub fn put(g: &GlobalArgs, a: &PutArgs) -> Result<i32, CliError> {
    let (locals, remote_op) = put_operands(a)?;
    let remote_op = super::utf8_operand(remote_op)?;
    if locals.iter().any(|l| l.as_os_str() == "-") {
        if locals.len() > 1 {
            return Err(CliError::Usage(
                "put: '-' (standard input) must be the only LOCAL".into(),
            ));
        }
        return put_from_stdin(g, a, remote_op);
    }
    let (ep, paths) = remote_operands(g, &[remote_op], false)?;

    // Check the local side before connecting: what is missing fails here.
    let (locals, mut early_codes) = expand_locals(locals);
    let mut found: Vec<(&PathBuf, Option<u64>)> = Vec::new();
    for l in &locals {
        let e = match fs::metadata(l) {
            Ok(m) if m.is_file() => {
                found.push((l, Some(m.len())));
                continue;
            }
            Ok(m) if m.is_dir() && a.recursive => {
                found.push((l, None));
                continue;
            }
            Ok(m) if m.is_dir() => {
                CliError::Usage(format!("'{}' is a directory (use put -r)", l.display()))
            }
            Ok(_) => CliError::Sftp(Error::InvalidInput(format!(
                "'{}' is not a regular file or directory",
                l.display()
            ))),
            Err(e) => CliError::Sftp(Error::local(format!("cannot stat {}", l.display()), e)),
        };
        exit::report(&e);
        early_codes.push(e.code());
    }
    let combine = |code: i32| match early_codes.as_slice() {
        [] => code,
        _ if code == CONNECTION => CONNECTION,
        [only] if locals.len() <= 1 => *only,
        _ => FAILED,
    };
    if found.is_empty() {
        return Ok(combine(exit::SUCCESS));
    }

    // Whether the target is a directory is answered with the handshake; with -r, so is
    // whether a new tree's staging directory is left from an earlier run.
    let staging = a
        .recursive
        .then(|| staging_dir(&paths[0]))
        .flatten()
        .filter(|_| !paths[0].ends_with(b"/"));
    let mut stat_targets: Vec<&[u8]> = Vec::new();
    if !paths[0].ends_with(b"/") {
        stat_targets.push(&paths[0]);
    }
    if let Some(s) = &staging {
        stat_targets.push(s);
    }
    let session = super::scp::connect_for_transfer(g, ep.as_ref(), &stat_targets, &[]);
    let session = match session? {
        Backend::Sftp(s) => s,
        Backend::Scp(scp) => {
            let locals: Vec<&PathBuf> = found.iter().map(|(l, _)| *l).collect();
            return Ok(combine(super::scp::put(g, a, &scp, &locals, &paths[0])?));
        }
    };
    let remote = expand_tilde(&session, &paths[0])?;
    let mut opts = a.transfer.options();
    opts.resume = a.resume;
    a.upload.apply(&mut opts);
    let max_open = opts.max_open;
    let tracker = Tracker::new(a.transfer.progress, g.quiet);
    let t = session.transfer(opts, tracker.clone());

    let mut target_missing = false;
    let into_dir = if remote.ends_with(b"/") {
        session.run(t.dirlocks().ensure_dir(&remote))?;
        true
    } else {
        match session.stat(&remote) {
            Ok(s) => s.is_dir(),
            Err(e) if e.is_not_found() => {
                // Everything below a missing target is new: no probing needed.
                t.dirlocks().mark_missing(&remote);
                target_missing = true;
                false
            }
            Err(e) => return Err(e.into()),
        }
    };
    // After the STAT, whose round trip overlapped the LIMITS reply's.
    session.limits();
    let task_limit = max_open.unwrap_or_else(|| default_max_open(session.sftp())) * 2 + 16;
    if locals.len() > 1 && !into_dir {
        return Err(CliError::Usage(format!(
            "target '{remote_op}' is not a directory (end it with '/' to create it)"
        )));
    }

    let mut jobs = Vec::new();
    let single = found.len() == 1 && locals.len() == 1 && found[0].1.is_some();
    for (local, size) in found {
        let dest = match (into_dir, local_name(local)) {
            (true, Some(name)) => {
                use std::os::unix::ffi::OsStrExt;
                remote_join(&remote, name.as_bytes())
            }
            _ => remote.clone(),
        };
        let local = local.clone();
        match size {
            Some(size) => {
                tracker.add_total(1, size);
                jobs.push(Job::File { local, dest });
            }
            None => jobs.push(Job::Tree {
                local,
                dest,
                new: target_missing,
            }),
        }
    }
    session.run(run_jobs(t.clone(), tracker.clone(), jobs, task_limit));
    let code = tracker.finish(single);
    // Said last, after the failures that held the trees back.
    for kept in t.take_report().kept_staged {
        exit::report(kept);
    }
    Ok(combine(code))
}

/// Runs the upload jobs as tasks, at most `limit` at once (each file task holds a local
/// file open while it waits for a remote handle).
async fn run_jobs(t: Transfer, tracker: Rc<Tracker>, jobs: Vec<Job>, limit: usize) {
    let mut group = TaskGroup::new(limit);
    for job in jobs {
        let t = t.clone();
        let tracker = tracker.clone();
        group
            .spawn(async move {
                match job {
                    Job::File { local, dest } => {
                        let r = t.upload(&local, &dest).await;
                        file_outcome(&tracker, &dest, r);
                    }
                    Job::Tree { local, dest, new } if new => t.upload_new_tree(&local, &dest).await,
                    Job::Tree { local, dest, .. } => t.upload_into(&local, &dest).await,
                }
            })
            .await;
    }
    group.join().await;
}
