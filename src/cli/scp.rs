//! `get` and `put` over the legacy scp protocol ([`sftpipe::scp`]), for servers without
//! SFTP (found out when connecting) or with `--scp`.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sftpipe::Error;
use sftpipe::backend::Backend;
use sftpipe::location::RemoteSpec;
use sftpipe::scp::{ProgressFn, Report, Scp, ScpEvent, ScpOptions};

use super::GlobalArgs;
use super::exit::CliError;
use super::progress::Tracker;
use super::transfer::{GetArgs, PutArgs};
use sftpipe::transfer::Progress;

/// Connects for a transfer: SFTP (with `stats` and `dirs` prefetched), or scp when the
/// server has none or `--scp` says so.
pub fn connect_for_transfer(
    g: &GlobalArgs,
    spec: Option<&RemoteSpec>,
    stats: &[&[u8]],
    dirs: &[&[u8]],
) -> Result<Backend, CliError> {
    let prefetch = sftpipe::Prefetch {
        stats: stats.iter().map(|p| p.to_vec()).collect(),
        dirs: dirs.iter().map(|p| p.to_vec()).collect(),
        guessed_dirs: Vec::new(),
    };
    let o = super::sftp_options(g, spec, prefetch)?;
    log::info!("connecting: {}", o.label());
    Ok(Backend::connect(&o)?)
}

/// What scp cannot do, refused before anything moves (exit 6).
fn unsupported(what: &str) -> CliError {
    CliError::Sftp(Error::Unsupported(format!(
        "{what} needs SFTP: the scp protocol cannot do it"
    )))
}

/// `get` over scp.
pub fn get(g: &GlobalArgs, a: &GetArgs, scp: &Scp, remote: &[u8]) -> Result<i32, CliError> {
    if sftpipe::glob::has_magic(remote) {
        return Err(unsupported("a remote wildcard"));
    }
    if a.resume {
        return Err(unsupported("resuming (-a)"));
    }
    if a.local.as_deref() == Some(Path::new("-")) {
        return Err(unsupported("get to standard output"));
    }
    let local = a.local.clone().unwrap_or_else(|| PathBuf::from("."));
    let name = sftpipe::transfer::remote_basename(remote);
    let dest = if std::fs::metadata(&local).is_ok_and(|m| m.is_dir()) {
        local.join(std::ffi::OsStr::from_bytes(name))
    } else {
        local
    };
    let o = ScpOptions {
        recursive: a.recursive,
        preserve: a.transfer.preserve,
        follow_links: false,
        sessions: 1,
        progress: None,
    };
    let tracker = Tracker::new(a.transfer.progress, g.quiet);
    let report = with_progress(&tracker, |p| {
        scp.get(
            remote,
            &dest,
            ScpOptions {
                progress: Some(p),
                ..o
            },
        )
    })?;
    Ok(finish(&tracker, report, !a.recursive))
}

/// `put` over scp: `locals` (checked to exist) into or as `remote`, in place.
pub fn put(
    g: &GlobalArgs,
    a: &PutArgs,
    scp: &Scp,
    locals: &[&PathBuf],
    remote: &[u8],
) -> Result<i32, CliError> {
    if a.resume {
        return Err(unsupported("resuming (-a)"));
    }
    log::warn!(
        "the scp protocol writes uploads in place: an interrupted upload leaves a partial \
         file under its final name"
    );
    let mut named = Vec::with_capacity(locals.len());
    for l in locals {
        let Some(name) = super::transfer::local_name(l) else {
            return Err(CliError::Usage(format!(
                "cannot upload '{}' over scp: it has no name",
                l.display()
            )));
        };
        named.push(((*l).clone(), name.as_bytes().to_vec()));
    }
    let o = ScpOptions {
        recursive: a.recursive,
        preserve: a.transfer.preserve,
        follow_links: a.upload.copy_links,
        // One file open at a time per session: --max-open is the number of sessions.
        sessions: a.transfer.max_open.unwrap_or(0),
        progress: None,
    };
    let tracker = Tracker::new(a.transfer.progress, g.quiet);
    let report = with_progress(&tracker, |p| {
        scp.put(
            &named,
            remote,
            ScpOptions {
                progress: Some(p),
                ..o
            },
        )
    })?;
    let single = locals.len() == 1 && locals[0].is_file();
    Ok(finish(&tracker, report, single))
}

/// Runs `transfer` on a thread of its own (its sessions may start more), feeding
/// `tracker` the progress it tells as it comes.
fn with_progress<F>(tracker: &Tracker, transfer: F) -> sftpipe::Result<Report>
where
    F: FnOnce(ProgressFn<'_>) -> sftpipe::Result<Report> + Send,
{
    enum Told {
        File(PathBuf, u64),
        Bytes(u64),
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            let tell = move |e: ScpEvent<'_>| {
                let told = match e {
                    ScpEvent::File(path, size) => Told::File(path.into(), size),
                    ScpEvent::Bytes(n) => Told::Bytes(n),
                };
                let _ = tx.send(told);
            };
            transfer(&tell)
        });
        let mut current = PathBuf::new();
        for told in rx {
            match told {
                Told::File(path, size) => {
                    tracker.add_total(1, size);
                    current = path;
                }
                Told::Bytes(n) => tracker.file_transferred(&current, n),
            }
        }
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Shows the outcome as an SFTP transfer's (the failures, the summary line, with
/// `--progress=json` an object per file) and returns the exit code; `single` when one
/// file was asked for.
fn finish(tracker: &Tracker, report: Report, single: bool) -> i32 {
    for (path, bytes) in &report.done {
        tracker.file_done(path, *bytes, None);
    }
    for (path, e) in &report.failures {
        tracker.file_done(path, 0, Some(e));
    }
    tracker.finish(single)
}
