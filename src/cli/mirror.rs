//! `sftpipe mirror SRC DEST`: make DEST a copy of SRC, one side local, one remote.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;
use sftpipe::Error;
use sftpipe::location::{Operand, parse_operand};
use sftpipe::mirror::{
    Compare, Filter, MirrorOptions, MirrorReport, PatternSet, mirror_down, mirror_down_listed,
    mirror_up, mirror_up_listed, snapshot_local,
};

use super::exit::{self, CliError};
use super::progress::{ProgressMode, Tracker, binary_size, process_start};
use super::{
    GlobalArgs, TransferArgs, UploadArgs, connect_with, expand_tilde, remote_operands, utf8_operand,
};

/// `mirror` arguments.
#[derive(Debug, Args)]
#[command(
    about = "Make DEST an exact copy of SRC (local → remote, or remote → local)",
    long_about = "Make DEST an exact copy of SRC. One side is local, the other remote \
                  ([user@]host:DIR or sftp://...). New and changed files (by size and \
                  modification time) are copied to a temporary name and renamed into \
                  place, so no reader ever sees a half-written file; directories and \
                  symlinks are recreated; modification times are set.\n\n\
                  With -D (a local sftp-server), write the remote side as :DIR; if \
                  neither side is marked, DEST is the remote one.",
    after_help = "Examples:\n  \
        sftpipe mirror ./site www.example.org:/var/www/site\n  \
        sftpipe mirror --delete --last 'dists/*/InRelease' \\\n      \
        --last 'dists/*/Release*' repo/ user@host:/srv/repo\n  \
        sftpipe mirror -n --delete host:backup ./restore\n\n\
        A remote DEST that does not exist yet is built as .DEST.sftpipe-partial beside it \
        and renamed into place when complete; if anything failed, or the mirror was \
        killed, it stays there and the next run resumes it.\n\n\
        Exit status: 0 all done; 1 some entries failed, or deletes / --last files were \
        held back; 2 usage error; 3-7 nothing could be done (3 not found, 4 permission \
        denied, 5 connection, 6 protocol, 7 local error)."
)]
pub struct MirrorArgs {
    /// Source directory (local path or remote [user@]host:DIR)
    pub source: OsString,
    /// Destination directory (the other side), created when missing
    pub dest: OsString,
    /// Compare sizes only, not modification times
    #[arg(long)]
    pub size_only: bool,
    /// Copy every file, changed or not
    #[arg(short = 'A', long = "all")]
    pub all: bool,
    /// Delete destination entries missing from the source (last, and only if everything
    /// else succeeded)
    #[arg(long)]
    pub delete: bool,
    /// With --delete, also delete excluded destination entries
    #[arg(long, requires = "delete")]
    pub delete_excluded: bool,
    /// Refuse to delete more than N entries (then delete none)
    #[arg(long, value_name = "N")]
    pub max_delete: Option<usize>,
    /// Skip paths matching GLOB (relative to the root; no '/' = any depth; trailing '/' =
    /// directories only) (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Don't skip paths matching GLOB, even if excluded (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Read exclude patterns from FILE, one per line ('#' comments)
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,
    /// Copy files matching GLOB only after everything else landed (indexes, e.g.
    /// 'dists/*/InRelease') (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub last: Vec<String>,
    /// Print what would be done, change nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Transfer tuning.
    #[command(flatten)]
    pub transfer: TransferArgs,
    /// Upload options.
    #[command(flatten)]
    pub upload: UploadArgs,
}

/// Runs `mirror`.
pub fn mirror(g: &GlobalArgs, a: &MirrorArgs) -> Result<i32, CliError> {
    let src = utf8_operand(&a.source)?;
    let dst = utf8_operand(&a.dest)?;
    let upload = match (parse_operand(src)?, parse_operand(dst)?) {
        (Operand::Local(_), Operand::Remote(_)) => true,
        (Operand::Remote(_), Operand::Local(_)) => false,
        (Operand::Remote(_), Operand::Remote(_)) => {
            return Err(CliError::Usage(
                "both SRC and DEST are remote; one side must be local".into(),
            ));
        }
        (Operand::Local(_), Operand::Local(_)) if g.server_command.is_some() => true,
        (Operand::Local(_), Operand::Local(_)) => {
            return Err(CliError::Usage(format!(
                "neither '{src}' nor '{dst}' is remote: write host:DIR or sftp://host/DIR"
            )));
        }
    };
    let (local_op, remote_op) = if upload {
        (&a.source, dst)
    } else {
        (&a.dest, src)
    };
    let local = match parse_operand(&local_op.to_string_lossy())? {
        Operand::Local(p) => p,
        Operand::Remote(_) => PathBuf::from(local_op),
    };

    let mut exclude = a.exclude.clone();
    for f in &a.exclude_from {
        exclude.extend(Filter::read_pattern_file(f)?);
    }
    let opts = MirrorOptions {
        compare: Compare {
            size_only: a.size_only,
            all: a.all,
            preserve_mode: a.transfer.preserve,
            delete: a.delete,
            delete_excluded: a.delete_excluded,
            last: PatternSet::new(&a.last)?,
            // Set by the mirror, from what the destination can do.
            link_times: false,
        },
        filter: Filter::new(&exclude, &a.include)?,
        max_delete: a.max_delete,
        dry_run: a.dry_run,
        copy_links: a.upload.copy_links,
        no_times: false,
    };

    let (ep, paths) = remote_operands(g, &[remote_op], false)?;
    // The remote root is the first thing the mirror looks at: its STAT and OPENDIR are
    // answered with the handshake, and so are OPENDIRs of the subdirectories the local
    // side has (a re-mirror then lists the whole remote tree in one round trip).
    let root = paths[0].clone();
    let guessed_dirs =
        sftpipe::mirror::guess_remote_dirs(&local, &root, sftpipe::mirror::MAX_GUESSED_DIRS);
    let mut prefetch = sftpipe::Prefetch {
        stats: vec![root.clone()],
        dirs: vec![root.clone()],
        guessed_dirs,
    };
    // Where a missing remote root is staged (and a killed mirror's staged tree resumed).
    if upload && let Some(staging) = sftpipe::mirror::staging_dir(&root) {
        prefetch.stats.push(staging.clone());
        prefetch.dirs.push(staging);
    }
    // A mirror streams: both trees are listed a directory at a time as it goes. A dry run
    // plans on both trees whole: the local one is listed while ssh connects (the
    // connection is mostly waiting).
    let streamed = !a.dry_run;
    let (session, local_snapshot) = std::thread::scope(|scope| {
        let walker = (!streamed).then(|| scope.spawn(|| snapshot_local(&local, &opts)));
        let session = connect_with(g, ep.as_ref(), prefetch);
        let snapshot = walker.map(|w| {
            w.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        (session, snapshot)
    });
    let session = session?;
    let remote = expand_tilde(&session, &paths[0])?;
    let mut topts = a.transfer.options();
    a.upload.apply(&mut topts);
    topts.preserve_times = true;
    let mode = if a.dry_run {
        ProgressMode::None
    } else {
        a.transfer.progress
    };
    let tracker = Tracker::new(mode, g.quiet);
    // The mirror's own summary line is the only one.
    tracker.without_summary();
    let t = session.transfer(topts, tracker.clone());
    let report = match local_snapshot {
        None if upload => session.run(mirror_up(&t, &local, &remote, &opts)),
        None => session.run(mirror_down(&t, &remote, &local, &opts)),
        Some(listed) if upload => session.run(mirror_up_listed(&t, &local, listed, &remote, &opts)),
        Some(listed) => session.run(mirror_down_listed(&t, &remote, &local, listed, &opts)),
    };

    if a.dry_run {
        let verb = if upload { "upload" } else { "download" };
        let mut out = std::io::stdout().lock();
        for action in &report.plan.actions {
            use std::io::Write;
            writeln!(out, "{}", exit::sanitize(&action.describe(verb)))
                .map_err(exit::stdout_error)?;
        }
    }
    // A root that is a file (`mirror f host:f`) is a usage slip: one line says so.
    if let Some(e) = refused_root(&report) {
        tracker.finish_silently();
        exit::report(e);
        return Ok(exit::code_of(e));
    }
    let code = tracker.finish(false);
    for skipped in [
        &report.deletes_skipped,
        &report.last_skipped,
        &report.tree_kept,
    ]
    .into_iter()
    .flatten()
    {
        exit::report(skipped);
    }
    if !g.quiet && mode != ProgressMode::Json {
        eprintln!("sftpipe: {}", summary(&report, upload, a.dry_run));
    }
    if mode == ProgressMode::Json {
        use std::io::Write;
        let line = serde_json::json!({
            "event": "mirror",
            "direction": if upload { "up" } else { "down" },
            "copied": report.copied,
            "bytes": report.bytes,
            "dirs_created": report.dirs_created,
            "symlinks": report.symlinks,
            "chmods": report.chmods,
            "deleted": report.deleted,
            "unchanged": report.unchanged,
            "failed": report.failures.len(),
            "deletes_skipped": report.deletes_skipped,
            "last_skipped": report.last_skipped,
            "tree_kept": report.tree_kept,
            "elapsed_ms": report.elapsed.as_millis() as u64,
        });
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").map_err(exit::stdout_error)?;
    }
    Ok(exit_code(&report, code))
}

/// The error of a mirror that did nothing because its root is not one it takes.
fn refused_root(report: &MirrorReport) -> Option<&Error> {
    match report.failures.as_slice() {
        [(_, e @ Error::InvalidInput(_))] if report.nothing_done() => Some(e),
        _ => None,
    }
}

/// 0 all done; 1 partial; a specific code (3-7) when nothing at all could be done.
fn exit_code(report: &MirrorReport, batch: i32) -> i32 {
    if report.nothing_done() {
        return report
            .failures
            .first()
            .map(|(_, e): &(String, Error)| exit::code_of(e))
            .unwrap_or(exit::FAILED);
    }
    if !report.failures.is_empty() || !report.is_ok() {
        return if batch == exit::CONNECTION {
            batch
        } else {
            exit::FAILED
        };
    }
    exit::SUCCESS
}

fn summary(r: &MirrorReport, upload: bool, dry_run: bool) -> String {
    let verb = if upload { "uploaded" } else { "downloaded" };
    if dry_run {
        return format!(
            "mirror (dry run): {} action(s) planned, {} unchanged",
            r.plan.actions.len(),
            r.unchanged
        );
    }
    let mut parts = vec![format!("{} {verb} ({})", r.copied, binary_size(r.bytes))];
    if r.dirs_created > 0 {
        parts.push(format!("{} dirs created", r.dirs_created));
    }
    if r.symlinks > 0 {
        parts.push(format!("{} symlinks", r.symlinks));
    }
    if r.chmods > 0 {
        parts.push(format!("{} modes changed", r.chmods));
    }
    if r.deleted > 0 {
        parts.push(format!("{} deleted", r.deleted));
    }
    parts.push(format!("{} unchanged", r.unchanged));
    parts.push(format!("{} failed", r.failures.len()));
    // From the process's start: connecting included.
    format!(
        "mirror: {} in {:.2}s",
        parts.join(", "),
        process_start().elapsed().as_secs_f64()
    )
}
