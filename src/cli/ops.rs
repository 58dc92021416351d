//! The one-shot commands: ls, stat, rm, mkdir, rmdir, mv, ln, chmod, df, realpath.

use std::fmt::Display;
use std::io::{self, BufWriter, IsTerminal, StdoutLock, Write};

use clap::Args;
use futures_util::future::join_all;
use sftpipe::task::DirLocks;
use sftpipe::transfer::{remote_basename, remote_join};
use sftpipe::{FileAttributes, NameEntry, Session};

use super::exit::{self, CliError, FAILED, SUCCESS, stdout_error};
use super::format::{self, DfMode};
use super::{GlobalArgs, connect, expand_remote, expand_tilde, parse_mode, remote_operands};

const REMOTE_HELP: &str = "Remote paths: [user@]host:path or sftp://[user@]host[:port]/path; \
after the first, the host may be left out (with -D, plain paths).";

/// `ls`.
#[derive(Debug, Args)]
#[command(after_help = format!("{REMOTE_HELP}\n\nExamples:\n  \
    sftpipe ls host:/var/log\n  \
    sftpipe ls -la sftp://alice@host:2222/\n  \
    sftpipe ls -lhS host:/var/log\n  \
    sftpipe -D /usr/lib/openssh/sftp-server ls -l /tmp"))]
pub struct LsArgs {
    /// Long format: mode, owner, group, size, modification time (UTC), name
    #[arg(short = 'l')]
    pub long: bool,
    /// Also show names starting with '.'
    #[arg(short = 'a')]
    pub all: bool,
    /// One name per line (the default unless stdout is a terminal)
    #[arg(short = '1')]
    pub one_per_line: bool,
    /// Human-readable sizes with -l (powers of 1024)
    #[arg(short = 'h', long = "human-readable")]
    pub human: bool,
    /// Sort by size, largest first
    #[arg(short = 'S')]
    pub by_size: bool,
    /// Sort by modification time, newest first
    #[arg(short = 't')]
    pub by_time: bool,
    /// Reverse the order
    #[arg(short = 'r', long = "reverse")]
    pub reverse: bool,
    /// Remote directories or files
    #[arg(value_name = "REMOTE", required = true)]
    pub remotes: Vec<String>,
}

/// `stat`.
#[derive(Debug, Args)]
#[command(after_help = format!("{REMOTE_HELP}\n\nShows type, size, mode (octal and symbolic), \
    uid, gid and times (ISO-8601 UTC) of each path itself; a symlink's target is shown \
    after '->'.\n\nExample:\n  sftpipe stat host:/etc/passwd host:/etc/localtime"))]
pub struct StatArgs {
    /// Remote paths
    #[arg(value_name = "REMOTE", required = true)]
    pub remotes: Vec<String>,
}

/// `rm`.
#[derive(Debug, Args)]
#[command(after_help = format!("{REMOTE_HELP}\n\nRemoves files and symlinks; with -r, \
    directories and everything below them (symlinks are removed, never followed), \
    concurrently, and the counts are printed on stderr.\n\nExamples:\n  \
    sftpipe rm -f host:/tmp/a host:/tmp/b\n  sftpipe rm -r host:/tmp/build\n  \
    sftpipe rm 'host:tmp/*.tmp'   # wildcards are matched on the server"))]
pub struct RmArgs {
    /// Ignore paths that do not exist
    #[arg(short = 'f', long = "force")]
    pub force: bool,
    /// Remove directories and their contents
    #[arg(short = 'r', short_alias = 'R', long = "recursive")]
    pub recursive: bool,
    /// Remote files or symlinks
    #[arg(value_name = "REMOTE", required = true)]
    pub remotes: Vec<String>,
}

/// `mkdir`.
#[derive(Debug, Args)]
#[command(after_help = format!("{REMOTE_HELP}\n\nExamples:\n  \
    sftpipe mkdir -p host:/srv/backup/2026/03\n  \
    sftpipe mkdir -m 700 host:private"))]
pub struct MkdirArgs {
    /// Create missing parents; no error if the directory exists
    #[arg(short = 'p', long = "parents")]
    pub parents: bool,
    /// Permission bits of the new directory, in octal (applied exactly, not under the umask)
    #[arg(short = 'm', long = "mode", value_name = "MODE", value_parser = parse_mode)]
    pub mode: Option<u32>,
    /// Remote directories
    #[arg(value_name = "REMOTE", required = true)]
    pub remotes: Vec<String>,
}

/// `rmdir`.
#[derive(Debug, Args)]
#[command(after_help = format!("{REMOTE_HELP}\n\nExample:\n  sftpipe rmdir host:/tmp/empty"))]
pub struct RmdirArgs {
    /// Empty remote directories
    #[arg(value_name = "REMOTE", required = true)]
    pub remotes: Vec<String>,
}

/// `mv`.
#[derive(Debug, Args)]
#[command(after_help = format!("{REMOTE_HELP}\n\nAn existing file NEW is replaced \
    (atomically with posix-rename@openssh.com); if NEW is an existing directory, OLD moves \
    into it.\n\nExample:\n  sftpipe mv host:/srv/site.new host:/srv/site.conf"))]
pub struct MvArgs {
    /// The remote path to rename
    #[arg(value_name = "OLD")]
    pub old: String,
    /// The new remote path (the host may be left out)
    #[arg(value_name = "NEW")]
    pub new: String,
}

/// `ln`.
#[derive(Debug, Args)]
#[command(after_help = format!("{REMOTE_HELP}\n\nA hard link needs hardlink@openssh.com. With \
    -s, TARGET is stored in the link as given (it is not an operand: no host).\n\n\
    Examples:\n  sftpipe ln host:/data/a host:/data/a.bak\n  \
    sftpipe ln -s releases/42 host:/srv/current"))]
pub struct LnArgs {
    /// Make a symbolic link
    #[arg(short = 's', long = "symbolic")]
    pub symbolic: bool,
    /// What the link points to
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// The link to create (a remote operand)
    #[arg(value_name = "LINK")]
    pub link: String,
}

/// `chmod`.
#[derive(Debug, Args)]
#[command(after_help = format!("{REMOTE_HELP}\n\nExample:\n  sftpipe chmod 0640 host:/etc/app.conf"))]
pub struct ChmodArgs {
    /// Octal permission bits, e.g. 644 or 0755
    #[arg(value_name = "MODE", value_parser = parse_mode)]
    pub mode: u32,
    /// Remote paths
    #[arg(value_name = "REMOTE", required = true)]
    pub remotes: Vec<String>,
}

/// `df`.
#[derive(Debug, Args)]
#[command(after_help = format!("{REMOTE_HELP}\n\nNeeds \
    statvfs@openssh.com. Without REMOTE (only with -D), the server's current directory.\n\n\
    Examples:\n  sftpipe df -h host:\n  sftpipe df -i host:/srv"))]
pub struct DfArgs {
    /// Human-readable sizes (powers of 1024)
    #[arg(short = 'h', long = "human-readable")]
    pub human: bool,
    /// Inodes instead of blocks
    #[arg(short = 'i', long = "inodes")]
    pub inodes: bool,
    /// A path on the file system to show (host: for the home directory)
    #[arg(value_name = "REMOTE")]
    pub remote: Option<String>,
}

/// `realpath`.
#[derive(Debug, Args)]
#[command(after_help = format!("{REMOTE_HELP}\n\nA leading ~ is expanded \
    (expand-path@openssh.com).\n\nExample:\n  sftpipe realpath host: host:~/../tmp"))]
pub struct RealpathArgs {
    /// Remote paths
    #[arg(value_name = "REMOTE", required = true)]
    pub remotes: Vec<String>,
}

/// Buffered standard output that maps a closed pipe to [`CliError::StdoutClosed`].
pub struct Out {
    w: BufWriter<StdoutLock<'static>>,
}

impl Out {
    /// Locks stdout.
    pub fn new() -> Self {
        Out {
            w: BufWriter::new(io::stdout().lock()),
        }
    }

    /// Writes a line of text.
    pub fn line(&mut self, s: impl Display) -> Result<(), CliError> {
        writeln!(self.w, "{s}").map_err(stdout_error)
    }

    /// Writes raw bytes and a newline.
    pub fn bytes_line(&mut self, b: &[u8]) -> Result<(), CliError> {
        self.w
            .write_all(b)
            .and_then(|()| self.w.write_all(b"\n"))
            .map_err(stdout_error)
    }

    /// Flushes.
    pub fn flush(&mut self) -> Result<(), CliError> {
        self.w.flush().map_err(stdout_error)
    }
}

/// Runs `f` for each item, reporting each failure and going on. A lost connection or a
/// closed stdout stops at once. Returns 0, the failure's code for a single item, or 1.
pub fn each<T>(
    items: &[T],
    mut f: impl FnMut(&T) -> Result<(), CliError>,
) -> Result<i32, CliError> {
    let mut codes = Vec::new();
    for item in items {
        match f(item) {
            Ok(()) => {}
            Err(e @ CliError::StdoutClosed) => return Err(e),
            Err(e) if e.is_connection() => return Err(e),
            Err(e) => {
                exit::report(&e);
                codes.push(e.code());
            }
        }
    }
    Ok(match codes.as_slice() {
        [] => SUCCESS,
        [c] if items.len() == 1 => *c,
        _ => FAILED,
    })
}

/// Each operand as written, with its remote path.
type Operands = Vec<(String, Vec<u8>)>;

/// Parses the operands, connects, and pairs each operand with its path.
fn open(g: &GlobalArgs, operands: &[String]) -> Result<(Session, Operands), CliError> {
    let (ep, paths) = remote_operands(g, operands, true)?;
    let session = connect(g, ep.as_ref())?;
    let items = operands.iter().cloned().zip(paths).collect();
    Ok((session, items))
}

/// The terminal's width: `$COLUMNS`, else the tty's, else 80.
fn terminal_width() -> usize {
    if let Some(c) = std::env::var("COLUMNS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&c| c > 0)
    {
        return c;
    }
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize struct it is given, which outlives the call.
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if r == 0 && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

struct LsView {
    long: bool,
    human: bool,
    columns: Option<usize>,
    tty: bool,
}

/// `ls`: directories are listed sorted by name (dotfiles only with -a); a file (or a
/// symlink to one) is listed alone.
pub fn ls(g: &GlobalArgs, a: &LsArgs) -> Result<i32, CliError> {
    let (session, items) = open(g, &a.remotes)?;
    let mut out = Out::new();
    list(&session, &items, a, &mut out)
}

/// `ls` of remote paths on an open session (the shell's `ls`), each shown as given.
pub fn list_paths(
    session: &Session,
    paths: &[Vec<u8>],
    a: &LsArgs,
    out: &mut Out,
) -> Result<i32, CliError> {
    let items: Operands = paths
        .iter()
        .map(|p| (String::from_utf8_lossy(p).into_owned(), p.clone()))
        .collect();
    list(session, &items, a, out)
}

fn list(session: &Session, items: &Operands, a: &LsArgs, out: &mut Out) -> Result<i32, CliError> {
    let tty = io::stdout().is_terminal();
    let view = LsView {
        long: a.long,
        human: a.human,
        columns: (tty && !a.one_per_line && !a.long).then(terminal_width),
        tty,
    };
    let several = items.len() > 1;
    let mut first = true;
    each(items, |(_, given)| {
        let path = expand_tilde(session, given)?;
        let lattrs = session.lstat(&path)?;
        let is_dir = lattrs.is_dir()
            || (lattrs.is_symlink() && session.stat(&path).is_ok_and(|s| s.is_dir()));
        if is_dir {
            let mut entries = session.read_dir(&path)?;
            entries.retain(|e| a.all || !e.filename.starts_with(b"."));
            sort_entries(&mut entries, a);
            if several {
                if !first {
                    out.line("")?;
                }
                out.line(format!("{}:", format::display_name(given, tty)))?;
            }
            print_entries(session, Some(&path), &entries, &view, out)?;
        } else {
            let entry = NameEntry {
                filename: given.clone(),
                longname: if a.long {
                    format::longname_in_parent(session, &path)
                } else {
                    Vec::new()
                },
                attrs: lattrs,
            };
            print_entries_at(session, &[path], &[entry], &view, out)?;
        }
        first = false;
        out.flush()
    })
}

/// Sorts as ls does: by name, or by size (-S, largest first) or time (-t, newest first)
/// with names breaking ties; -r reverses.
fn sort_entries(entries: &mut [NameEntry], a: &LsArgs) {
    entries.sort_by(|x, y| {
        let key = if a.by_size {
            y.attrs.size.cmp(&x.attrs.size)
        } else if a.by_time {
            y.attrs.mtime().cmp(&x.attrs.mtime())
        } else {
            std::cmp::Ordering::Equal
        };
        key.then_with(|| x.filename.cmp(&y.filename))
    });
    if a.reverse {
        entries.reverse();
    }
}

fn print_entries(
    session: &Session,
    dir: Option<&[u8]>,
    entries: &[NameEntry],
    view: &LsView,
    out: &mut Out,
) -> Result<(), CliError> {
    let paths: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| match dir {
            Some(d) => remote_join(d, &e.filename),
            None => e.filename.clone(),
        })
        .collect();
    print_entries_at(session, &paths, entries, view, out)
}

/// Prints entries whose remote paths are `paths` (for reading symlink targets).
fn print_entries_at(
    session: &Session,
    paths: &[Vec<u8>],
    entries: &[NameEntry],
    view: &LsView,
    out: &mut Out,
) -> Result<(), CliError> {
    if view.long {
        let sftp = session.sftp().clone();
        // All readlinks at once, pipelined over the connection.
        let targets: Vec<Option<Vec<u8>>> =
            session.run(join_all(entries.iter().zip(paths).map(|(e, p)| {
                let sftp = sftp.clone();
                let is_link = e.attrs.is_symlink();
                async move {
                    if !is_link {
                        return None;
                    }
                    match sftp.readlink(p).await {
                        Ok(t) => Some(t),
                        Err(err) => {
                            log::warn!("{err}");
                            None
                        }
                    }
                }
            })));
        let rows: Vec<format::LongRow> = entries
            .iter()
            .zip(targets)
            .map(|(e, t)| {
                let name = format::display_name(&e.filename, view.tty).into_owned();
                let target = t.map(|t| format::display_name(&t, view.tty).into_owned());
                let mut row = format::long_row(e, name, target);
                if let (true, Some(size)) = (view.human, e.attrs.size) {
                    row.size = format::human_size(size);
                }
                row
            })
            .collect();
        for l in format::long_lines(&rows) {
            out.line(l)?;
        }
    } else if let Some(width) = view.columns {
        let names: Vec<String> = entries
            .iter()
            .map(|e| format::display_name(&e.filename, true).into_owned())
            .collect();
        for l in format::columns(&names, width) {
            out.line(l)?;
        }
    } else {
        for e in entries {
            if view.tty {
                out.line(format::display_name(&e.filename, true))?;
            } else {
                out.bytes_line(&e.filename)?;
            }
        }
    }
    Ok(())
}

/// `stat`: attributes of each path itself (lstat).
pub fn stat(g: &GlobalArgs, a: &StatArgs) -> Result<i32, CliError> {
    let (session, items) = open(g, &a.remotes)?;
    let tty = io::stdout().is_terminal();
    let mut out = Out::new();
    each(&items, |(_, path)| {
        let full = expand_tilde(&session, path)?;
        let attrs = session.lstat(&full)?;
        let target = if attrs.is_symlink() {
            Some(format::display_name(&session.readlink(&full)?, tty).into_owned())
        } else {
            None
        };
        let shown = format::display_name(path, tty);
        for l in format::stat_lines(&shown, &attrs, target.as_deref()) {
            out.line(l)?;
        }
        out.flush()
    })
}

/// `rm`: files and symlinks; with -r, trees too (counts on stderr).
pub fn rm(g: &GlobalArgs, a: &RmArgs) -> Result<i32, CliError> {
    let (session, items) = open(g, &a.remotes)?;
    let t = sftpipe::transfer::Transfer::new(session.sftp(), Default::default());
    let (mut files, mut dirs) = (0u64, 0u64);
    let code = each(&items, |(op, path)| {
        let path = expand_tilde(&session, path)?;
        let paths = expand_remote(&session, op, &path)?;
        let several = paths.len() > 1 || paths[0] != path;
        each_match(&paths, |path| {
            let shown = if several {
                String::from_utf8_lossy(path).into_owned()
            } else {
                op.clone()
            };
            let attrs = match a.recursive.then(|| session.lstat(path)) {
                Some(Err(e)) if a.force && e.is_not_found() => return Ok(()),
                Some(r) => Some(r?),
                None => None,
            };
            if attrs.is_some_and(|s| s.is_dir()) {
                let mut done = session.run(t.remove_tree(path));
                files += done.files;
                dirs += done.dirs;
                let first = done.failures.pop();
                for (_, e) in done.failures {
                    exit::report(CliError::Sftp(e));
                }
                return first.map_or(Ok(()), |(_, e)| Err(e.into()));
            }
            match session.remove(path) {
                Ok(()) => {
                    files += 1;
                    Ok(())
                }
                Err(e) if a.force && e.is_not_found() => Ok(()),
                // Servers answer a plain failure for a directory: say why.
                Err(e) if !e.is_connection() && session.lstat(path).is_ok_and(|s| s.is_dir()) => {
                    Err(CliError::Usage(format!(
                        "'{shown}' is a directory (use rm -r)"
                    )))
                }
                Err(e) => Err(e.into()),
            }
        })
    })?;
    if a.recursive && !g.quiet && files + dirs > 0 {
        eprintln!(
            "sftpipe: removed {}, {}",
            plural(files, "file"),
            plural(dirs, "directory")
        );
    }
    Ok(code)
}

/// Runs `f` on each path a wildcard operand matched: the first failure is returned (it
/// decides the operand's exit code), later ones are reported; a lost connection or a
/// closed stdout stops at once.
fn each_match(
    paths: &[Vec<u8>],
    mut f: impl FnMut(&[u8]) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let mut first = None;
    for p in paths {
        match f(p) {
            Ok(()) => {}
            Err(e @ CliError::StdoutClosed) => return Err(e),
            Err(e) if e.is_connection() => return Err(e),
            Err(e) if first.is_none() => first = Some(e),
            Err(e) => exit::report(&e),
        }
    }
    first.map_or(Ok(()), Err)
}

/// `1 file`, `2 files`, `3 directories`.
fn plural(n: u64, noun: &str) -> String {
    match (n, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {noun}s"),
    }
}

/// `mkdir`.
pub fn mkdir(g: &GlobalArgs, a: &MkdirArgs) -> Result<i32, CliError> {
    let (session, items) = open(g, &a.remotes)?;
    each(&items, |(_, path)| {
        let path = expand_tilde(&session, path)?;
        if a.parents {
            if a.mode.is_some() && session.stat(&path).is_ok_and(|s| s.is_dir()) {
                // mkdir -p leaves an existing directory alone, mode included.
                return Ok(());
            }
            let locks = DirLocks::new(session.sftp().clone());
            session.run(locks.ensure_dir(&path))?;
        } else {
            let attrs = match a.mode {
                Some(m) => FileAttributes::with_permissions(m),
                None => FileAttributes::default(),
            };
            session.run(session.sftp().mkdir(&path, &attrs))?;
        }
        if let Some(m) = a.mode {
            // The server applies its umask at creation; set the bits exactly.
            session.chmod(&path, m)?;
        }
        Ok(())
    })
}

/// `rmdir`.
pub fn rmdir(g: &GlobalArgs, a: &RmdirArgs) -> Result<i32, CliError> {
    let (session, items) = open(g, &a.remotes)?;
    each(&items, |(_, path)| {
        let path = expand_tilde(&session, path)?;
        match session.rmdir(&path) {
            Err(e) if is_plain_failure(&e) && has_entries(&session, &path) => {
                Err(CliError::Sftp(sftpipe::Error::Status {
                    op: "rmdir",
                    path: String::from_utf8_lossy(&path).into_owned(),
                    code: sftpipe::StatusCode::Failure,
                    message: "directory not empty (use rm -r)".into(),
                }))
            }
            r => Ok(r?),
        }
    })
}

/// Whether `e` is the server's unexplained SSH_FX_FAILURE (OpenSSH's answer to ENOTEMPTY
/// and EISDIR alike).
fn is_plain_failure(e: &sftpipe::Error) -> bool {
    matches!(
        e,
        sftpipe::Error::Status {
            code: sftpipe::StatusCode::Failure,
            ..
        }
    )
}

/// Whether the remote directory `path` lists any entry besides `.` and `..`.
fn has_entries(session: &Session, path: &[u8]) -> bool {
    session
        .read_dir(path)
        .is_ok_and(|v| v.iter().any(|e| !matches!(&e.filename[..], b"." | b"..")))
}

/// `mv`.
pub fn mv(g: &GlobalArgs, a: &MvArgs) -> Result<i32, CliError> {
    let (session, items) = open(g, &[a.old.clone(), a.new.clone()])?;
    let old = expand_tilde(&session, &items[0].1)?;
    let mut new = expand_tilde(&session, &items[1].1)?;
    if session.stat(&new).is_ok_and(|s| s.is_dir()) {
        new = remote_join(&new, remote_basename(&old));
    }
    session.move_entry(&old, &new)?;
    Ok(SUCCESS)
}

/// `ln`.
pub fn ln(g: &GlobalArgs, a: &LnArgs) -> Result<i32, CliError> {
    if a.symbolic {
        let (session, items) = open(g, std::slice::from_ref(&a.link))?;
        let link = expand_tilde(&session, &items[0].1)?;
        session.symlink(a.target.as_bytes(), &link)?;
    } else {
        let (session, items) = open(g, &[a.target.clone(), a.link.clone()])?;
        let target = expand_tilde(&session, &items[0].1)?;
        let link = expand_tilde(&session, &items[1].1)?;
        session.hardlink(&target, &link)?;
    }
    Ok(SUCCESS)
}

/// `chmod`.
pub fn chmod(g: &GlobalArgs, a: &ChmodArgs) -> Result<i32, CliError> {
    let (session, items) = open(g, &a.remotes)?;
    each(&items, |(_, path)| {
        let path = expand_tilde(&session, path)?;
        Ok(session.chmod(&path, a.mode)?)
    })
}

/// `df`.
pub fn df(g: &GlobalArgs, a: &DfArgs) -> Result<i32, CliError> {
    let operand = match (&a.remote, &g.server_command) {
        (Some(r), _) => r.clone(),
        (None, Some(_)) => ".".to_string(),
        (None, None) => {
            return Err(CliError::Usage(
                "df needs REMOTE (e.g. host: for the home directory) unless -D is given".into(),
            ));
        }
    };
    let (session, items) = open(g, &[operand])?;
    let path = expand_tilde(&session, &items[0].1)?;
    let st = session.statvfs(&path)?;
    let mode = if a.inodes {
        DfMode::Inodes
    } else if a.human {
        DfMode::Human
    } else {
        DfMode::Blocks
    };
    let shown = format::display_name(&items[0].1, io::stdout().is_terminal()).into_owned();
    let mut out = Out::new();
    for l in format::df_lines(&shown, &st, mode) {
        out.line(l)?;
    }
    out.flush()?;
    Ok(SUCCESS)
}

/// `realpath`.
pub fn realpath(g: &GlobalArgs, a: &RealpathArgs) -> Result<i32, CliError> {
    let (session, items) = open(g, &a.remotes)?;
    let tty = io::stdout().is_terminal();
    let mut out = Out::new();
    each(&items, |(_, path)| {
        let p = session.realpath(expand_tilde(&session, path)?)?;
        if tty {
            out.line(format::display_name(&p, true))?;
        } else {
            out.bytes_line(&p)?;
        }
        out.flush()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reports_and_picks_the_code() {
        let nf = || {
            CliError::Sftp(sftpipe::Error::Status {
                op: "stat",
                path: "x".into(),
                code: sftpipe::StatusCode::NoSuchFile,
                message: "gone".into(),
            })
        };
        assert_eq!(each(&[1], |_| Err(nf())).ok(), Some(exit::NOT_FOUND));
        assert_eq!(
            each(&[1, 2], |&i| if i == 1 { Err(nf()) } else { Ok(()) }).ok(),
            Some(FAILED)
        );
        assert_eq!(each(&[1, 2], |_| Ok(())).ok(), Some(SUCCESS));
        let mut calls = 0;
        let r = each(&[1, 2], |_| {
            calls += 1;
            Err(CliError::StdoutClosed)
        });
        assert!(matches!(r, Err(CliError::StdoutClosed)));
        assert_eq!(calls, 1);
    }
}
