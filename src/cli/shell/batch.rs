//! Batch mode (`-b FILE`, `-b -`): OpenSSH sftp's batch files.
//!
//! Each line is echoed as `sftp> LINE` (not with a leading `@`), then run; a failure
//! stops the batch with exit 1 unless the line starts with `-`. Consecutive `put` lines
//! (or consecutive `get` lines) that do not touch the same target run concurrently: they
//! are planned (wildcards expanded, echo printed) as they are read, and run together when
//! a line comes that is not part of the run: anything else could observe their effects.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::Path;

use futures_util::StreamExt;

use super::command::{self, Command, Line};
use super::exec::{Job, Outcome, Shell};
use super::words;
use crate::cli::exit::{self, CliError};
use sftpipe::transfer::remote_join;

/// Transfers of one run in flight at once (each holds a file open on the server).
const RUN_WIDTH: usize = 64;

/// Which side a run of transfers writes to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Put,
    Get,
}

/// Planned transfers not yet run.
#[derive(Default)]
struct Run {
    kind: Option<Kind>,
    targets: HashSet<Vec<u8>>,
    /// Which remote destinations are directories (looked up once per run).
    dirs: HashMap<Vec<u8>, bool>,
    jobs: Vec<(Job, bool)>,
}

/// Runs the batch read from `input`; returns the exit code (0, or 1 after a failure).
pub fn run(sh: &mut Shell, input: &mut dyn BufRead) -> i32 {
    let mut run = Run::default();
    let mut text = String::new();
    loop {
        text.clear();
        match input.read_line(&mut text) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!(
                    "sftpipe: cannot read the batch file: {}",
                    sftpipe::error::plain_io(&e)
                );
                return flush(sh, &mut run).max(1);
            }
        }
        let raw = text.trim_end_matches(['\n', '\r']);
        let line = match command::parse(raw) {
            Ok(l) => l,
            Err(msg) => {
                let code = flush(sh, &mut run);
                if code != 0 {
                    return code;
                }
                echo(raw, raw.trim_start().starts_with('@'));
                eprintln!("{msg}");
                if raw.trim_start().starts_with('-') {
                    continue;
                }
                return 1;
            }
        };
        // A run only grows with transfers of its kind into targets it does not write yet.
        let keys = run_keys(sh, &line, &mut run.dirs);
        let joins = keys.as_ref().is_some_and(|(kind, targets)| {
            run.kind.is_none_or(|k| k == *kind) && !targets.iter().any(|t| run.targets.contains(t))
        });
        if !joins && !run.jobs.is_empty() {
            let code = flush(sh, &mut run);
            if code != 0 {
                return code;
            }
        }
        echo(raw, line.no_echo);
        let quit = match sh.execute(line.command.clone()) {
            Ok(Outcome::Transfer(job)) => {
                match keys {
                    Some((kind, targets)) => {
                        run.kind = Some(kind);
                        run.targets.extend(targets);
                        run.jobs.push((job, line.ignore_errors));
                    }
                    None => {
                        run.jobs.push((job, line.ignore_errors));
                        let code = flush(sh, &mut run);
                        if code != 0 {
                            return code;
                        }
                    }
                }
                false
            }
            Ok(Outcome::Quit) => true,
            Ok(Outcome::Done) => false,
            Ok(Outcome::JobControl) => {
                // Batches wait for every transfer in order: nothing runs in the background.
                flush(sh, &mut run) != 0
            }
            Err(e) => {
                let code = flush(sh, &mut run);
                if code != 0 {
                    return code;
                }
                exit::report(&e);
                if !line.ignore_errors {
                    return 1;
                }
                false
            }
        };
        if quit {
            break;
        }
    }
    flush(sh, &mut run)
}

/// Echoes a line as sftp does in batch mode.
fn echo(raw: &str, suppressed: bool) {
    if !suppressed {
        println!("sftp> {raw}");
        let _ = std::io::stdout().flush();
    }
}

/// Runs the planned jobs together; their failures are reported in line order, and the
/// first one without `-` makes the exit code 1.
fn flush(sh: &mut Shell, run: &mut Run) -> i32 {
    let jobs = std::mem::take(&mut run.jobs);
    run.kind = None;
    run.targets.clear();
    run.dirs.clear();
    if jobs.is_empty() {
        return 0;
    }
    let (futures, ignore): (Vec<Job>, Vec<bool>) = jobs.into_iter().unzip();
    let results: Vec<Result<(), CliError>> = sh.session.run(
        futures_util::stream::iter(futures)
            .buffered(RUN_WIDTH)
            .collect(),
    );
    let mut code = 0;
    for (r, ignore) in results.into_iter().zip(ignore) {
        if let Err(e) = r {
            exit::report(&e);
            if !ignore && code == 0 {
                code = 1;
            }
        }
    }
    code
}

/// For a `put`/`get` that may join a run: its kind and the paths it writes (each
/// source's name inside the destination directory, or the destination file itself).
/// `None` for anything else, and for recursive or resumed transfers and remote
/// wildcards, which run alone. `dirs` caches which remote destinations are directories.
fn run_keys(
    sh: &Shell,
    line: &Line,
    dirs: &mut HashMap<Vec<u8>, bool>,
) -> Option<(Kind, Vec<Vec<u8>>)> {
    let (kind, base, is_dir, names) = match &line.command {
        Command::Put(f, src, dst) if !f.recursive && !f.resume => {
            let base = dst
                .as_deref()
                .map_or_else(|| sh.cwd.clone(), |d| sh.remote_one(d));
            let is_dir = dst.is_none()
                || *dirs
                    .entry(base.clone())
                    .or_insert_with(|| sh.session.stat(&base).is_ok_and(|a| a.is_dir()));
            let names: Option<Vec<Vec<u8>>> = sh
                .local_many(src)
                .ok()?
                .iter()
                .map(|n| n.file_name().map(|n| n.as_encoded_bytes().to_vec()))
                .collect();
            (Kind::Put, base, is_dir, names?)
        }
        Command::Get(f, src, dst) if !f.recursive && !f.resume => {
            if sftpipe::glob::has_magic(src.as_bytes()) {
                return None;
            }
            let base = dst
                .as_deref()
                .map(words::unescape)
                .unwrap_or_else(|| ".".into());
            let is_dir = Path::new(&base).is_dir();
            let name = words::unescape(src);
            let name = Path::new(&name).file_name()?.as_encoded_bytes().to_vec();
            (Kind::Get, base.into_bytes(), is_dir, vec![name])
        }
        _ => return None,
    };
    let keys = if is_dir {
        names.iter().map(|n| remote_join(&base, n)).collect()
    } else {
        vec![base]
    };
    Some((kind, keys))
}
