//! Running parsed commands on a [`Session`]: remote and local path resolution (cwd,
//! `~`, wildcards on both sides) and each command, over the library's operations.
//! Transfers are returned as futures ([`Job`]) so that the batch runner can run several
//! at once and the shell can run them in the background.

use std::ffi::OsStr;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;

use sftpipe::transfer::{
    NoProgress, Progress, Transfer, TransferOptions, remote_basename, remote_join, safe_remote_name,
};
use sftpipe::{Error, Session};

use super::command::{Command, HELP, LsFlags, XferFlags};
use super::words;
use crate::cli::exit::CliError;
use crate::cli::ops::{self, Out};
use crate::cli::{GlobalArgs, expand_remote, format};

/// A transfer to run on the session's runtime.
pub type Job = Pin<Box<dyn Future<Output = Result<(), CliError>>>>;

/// What a command left to do.
pub enum Outcome {
    /// Done.
    Done,
    /// The user asked to leave.
    Quit,
    /// A transfer, to be awaited (or run in the background).
    Transfer(Job),
    /// A shell-only command (`jobs`, `wait`, `kill`), for the caller.
    JobControl,
}

/// The session and the state commands change.
pub struct Shell {
    /// The connection.
    pub session: Session,
    /// Options from the command line (for `mirror`).
    pub global: GlobalArgs,
    /// The remote working directory, absolute.
    pub cwd: Vec<u8>,
    /// The login directory.
    pub home: Vec<u8>,
    /// "Uploading..." lines (sftp shows them only interactively).
    pub verbose: bool,
    /// Print sftp's `Entering DIR` lines of `put -R` (not for a background job).
    pub announce_dirs: bool,
    /// sftp's progress meter (`progress` toggles it): the shell shows a bar for
    /// foreground transfers when set.
    pub progress: bool,
    /// Where the next transfer planned reports its progress (a shell job's counter).
    pub sink: Option<Rc<dyn Progress>>,
}

impl Shell {
    /// Wraps `session`, starting in `dir` (relative to the login directory).
    pub fn new(session: Session, global: GlobalArgs, dir: &[u8]) -> Result<Shell, CliError> {
        let home = session.realpath(".")?;
        let mut sh = Shell {
            session,
            global,
            cwd: home.clone(),
            home,
            verbose: false,
            announce_dirs: true,
            progress: false,
            sink: None,
        };
        if !dir.is_empty() {
            let d = words::escape(&String::from_utf8_lossy(dir));
            sh.cd(Some(&d))?;
        }
        Ok(sh)
    }

    /// A remote operand, absolute, in glob form.
    pub fn pattern(&self, word: &str) -> Vec<u8> {
        let w = word.as_bytes();
        if w.starts_with(b"/") {
            return w.to_vec();
        }
        let (base, rest) = if w == b"~" || w.starts_with(b"~/") {
            (&self.home, w.get(2..).unwrap_or_default())
        } else {
            (&self.cwd, w)
        };
        let base = words::escape(&String::from_utf8_lossy(base)).into_bytes();
        if rest.is_empty() {
            base
        } else {
            remote_join(&base, rest)
        }
    }

    /// A remote operand naming one path (no wildcards), absolute.
    pub fn remote_one(&self, word: &str) -> Vec<u8> {
        words::unescape(&String::from_utf8_lossy(&self.pattern(word))).into_bytes()
    }

    /// The remote paths an operand names (wildcards expanded on the server).
    pub fn remote_many(&self, word: &str) -> Result<Vec<Vec<u8>>, CliError> {
        let pat = self.pattern(word);
        if sftpipe::glob::has_magic(&pat) {
            expand_remote(&self.session, &words::unescape(word), &pat)
        } else {
            Ok(vec![self.remote_one(word)])
        }
    }

    /// The local paths an operand names (`~` is `$HOME`; wildcards expanded).
    pub fn local_many(&self, word: &str) -> Result<Vec<PathBuf>, CliError> {
        let word = local_tilde(word);
        if !sftpipe::glob::has_magic(word.as_bytes()) {
            return Ok(vec![PathBuf::from(words::unescape(&word))]);
        }
        let found = sftpipe::glob::expand_local(Path::new(&word))?;
        if found.is_empty() {
            return Err(CliError::NoMatch {
                pattern: words::unescape(&word),
                remote: false,
            });
        }
        Ok(found)
    }

    /// The options of a transfer with these flags.
    fn options(&self, f: XferFlags) -> TransferOptions {
        TransferOptions {
            resume: f.resume,
            fsync: f.fsync,
            preserve_times: f.preserve,
            preserve_mode: f.preserve,
            ..TransferOptions::default()
        }
    }

    /// Runs one command: everything but transfers happens here; a transfer comes back as
    /// a [`Job`].
    pub fn execute(&mut self, cmd: Command) -> Result<Outcome, CliError> {
        use Command as C;
        match cmd {
            C::Empty => {}
            C::Quit => return Ok(Outcome::Quit),
            C::Get(f, src, dst) => {
                return Ok(Outcome::Transfer(self.get(f, &src, dst.as_deref())?));
            }
            C::Put(f, src, dst) => {
                return Ok(Outcome::Transfer(self.put(f, &src, dst.as_deref())?));
            }
            C::Jobs | C::Wait(_) | C::Kill(_) => return Ok(Outcome::JobControl),
            C::Ls(f, path) => self.ls(f, path.as_deref())?,
            C::Cd(path) => self.cd(path.as_deref())?,
            C::Lcd(path) => {
                let dir = match path {
                    Some(p) => PathBuf::from(words::unescape(&local_tilde(&p))),
                    None => std::env::var_os("HOME")
                        .map(PathBuf::from)
                        .unwrap_or_default(),
                };
                std::env::set_current_dir(&dir).map_err(|e| {
                    Error::local(
                        format!("Couldn't change local directory to \"{}\"", dir.display()),
                        e,
                    )
                })?;
            }
            C::Pwd => println!(
                "Remote working directory: {}",
                String::from_utf8_lossy(&self.cwd)
            ),
            C::Lpwd => {
                let d = std::env::current_dir().map_err(|e| Error::local("getcwd", e))?;
                println!("Local working directory: {}", d.display());
            }
            C::Lls(args) => local_command("ls", &args)?,
            C::Lmkdir(p) => {
                let p = PathBuf::from(words::unescape(&local_tilde(&p)));
                std::fs::create_dir(&p).map_err(|e| {
                    Error::local(
                        format!("Couldn't create local directory \"{}\"", p.display()),
                        e,
                    )
                })?;
            }
            C::Local(cmd) if cmd.is_empty() => {
                let sh = std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into());
                run_local(std::process::Command::new(sh))?;
            }
            C::Local(cmd) => {
                let mut c = std::process::Command::new("/bin/sh");
                c.arg("-c").arg(cmd);
                run_local(c)?;
            }
            C::Mkdir(p) => self.session.mkdir(self.remote_one(&p))?,
            C::Rmdir(p) => self.session.rmdir(self.remote_one(&p))?,
            C::Rm(p) => {
                for path in self.remote_many(&p)? {
                    if self.verbose {
                        println!("Removing {}", String::from_utf8_lossy(&path));
                    }
                    self.session.remove(&path)?;
                }
            }
            C::Rename(a, b) => {
                // As sftp: posix-rename (replacing the target) when the server has it.
                let (a, b) = (self.remote_one(&a), self.remote_one(&b));
                if self
                    .session
                    .sftp()
                    .has_extension(sftpipe::proto::ext::POSIX_RENAME)
                {
                    self.session.posix_rename(a, b)?
                } else {
                    self.session.rename(a, b)?
                }
            }
            C::Ln(true, a, b) => {
                // sftp keeps a relative target as given: it is relative to the link.
                let target = words::unescape(&a);
                self.session.symlink(target, self.remote_one(&b))?
            }
            C::Ln(false, a, b) => self
                .session
                .hardlink(self.remote_one(&a), self.remote_one(&b))?,
            C::Chmod(mode, p) => {
                for path in self.remote_many(&p)? {
                    self.session.chmod(&path, mode)?;
                }
            }
            C::Chown(uid, p) => self.owner(&p, Some(uid), None)?,
            C::Chgrp(gid, p) => self.owner(&p, None, Some(gid))?,
            C::Df {
                human,
                inodes,
                path,
            } => {
                let p = match path {
                    Some(p) => self.remote_one(&p),
                    None => self.cwd.clone(),
                };
                let s = self.session.statvfs(&p)?;
                let mode = match (inodes, human) {
                    (true, _) => format::DfMode::Inodes,
                    (false, true) => format::DfMode::Human,
                    _ => format::DfMode::Blocks,
                };
                for l in format::df_lines(&String::from_utf8_lossy(&p), &s, mode) {
                    println!("{l}");
                }
            }
            C::Help => print!("{HELP}"),
            C::Version => println!(
                "SFTP protocol version {}",
                self.session.sftp().server_version()
            ),
            C::Progress => {
                self.progress = !self.progress;
                println!(
                    "Progress meter {}abled",
                    if self.progress { "en" } else { "dis" }
                );
            }
            C::Mirror(args) => self.mirror(&args)?,
        }
        Ok(Outcome::Done)
    }

    /// `cd`: the server's canonical path, which must be a directory.
    fn cd(&mut self, path: Option<&str>) -> Result<(), CliError> {
        let target = match path {
            Some(p) => self.remote_one(p),
            None => self.home.clone(),
        };
        let canonical = self.session.realpath(&target)?;
        let attrs = self.session.stat(&canonical)?;
        if !attrs.is_dir() {
            return Err(CliError::Usage(format!(
                "Can't change directory: \"{}\" is not a directory",
                String::from_utf8_lossy(&canonical)
            )));
        }
        self.cwd = canonical;
        Ok(())
    }

    /// `chown`/`chgrp`: the other id is kept (sftp reads it first too).
    fn owner(&self, word: &str, uid: Option<u32>, gid: Option<u32>) -> Result<(), CliError> {
        for path in self.remote_many(word)? {
            let a = self.session.stat(&path)?;
            let Some((old_uid, old_gid)) = a.uid_gid else {
                return Err(CliError::Usage(format!(
                    "{}: the server sent no owner",
                    String::from_utf8_lossy(&path)
                )));
            };
            self.session
                .chown(&path, uid.unwrap_or(old_uid), gid.unwrap_or(old_gid))?;
        }
        Ok(())
    }

    /// `ls`: the `sftpipe ls` code, on the path resolved against the cwd.
    fn ls(&self, f: LsFlags, path: Option<&str>) -> Result<(), CliError> {
        let targets = match path {
            Some(p) => self.remote_many(p)?,
            None => vec![self.cwd.clone()],
        };
        let mut out = Out::new();
        ops::list_paths(&self.session, &targets, &ls_args(f), &mut out)?;
        out.flush()
    }

    /// `get`: resolves the sources now (wildcards on the server), transfers in the job.
    fn get(&self, f: XferFlags, src: &str, dst: Option<&str>) -> Result<Job, CliError> {
        let remotes = self.remote_many(src)?;
        let dst = dst.map(|d| PathBuf::from(words::unescape(&local_tilde(d))));
        let dst_is_dir = dst.as_ref().is_none_or(|d| d.is_dir());
        if remotes.len() > 1 && !dst_is_dir {
            return Err(multiple(dst.as_deref().map(|d| d.display().to_string())));
        }
        let t = self.transfer(f);
        let sink = self.sink.clone();
        let verbose = self.verbose;
        Ok(Box::pin(async move {
            let mut first_error = None;
            for remote in remotes {
                let local = match &dst {
                    Some(d) if !dst_is_dir => d.clone(),
                    d => {
                        let name = safe_remote_name(remote_basename(&remote))?;
                        d.clone().unwrap_or_default().join(name)
                    }
                };
                if verbose {
                    println!(
                        "Fetching {} to {}",
                        String::from_utf8_lossy(&remote),
                        local.display()
                    );
                }
                let r = get_one(&t, sink.as_ref(), f, &remote, &local).await;
                if let Err(e) = r {
                    report_or_keep(&mut first_error, e);
                }
            }
            first_error.map_or(Ok(()), Err)
        }))
    }

    /// `put`: local wildcards now, the destination's STAT and the uploads in the job.
    fn put(&self, f: XferFlags, src: &str, dst: Option<&str>) -> Result<Job, CliError> {
        let locals = self.local_many(src)?;
        for l in &locals {
            if std::fs::symlink_metadata(l).is_err() {
                return Err(CliError::Usage(format!(
                    "stat {}: No such file or directory",
                    l.display()
                )));
            }
        }
        let dst = dst.map(|d| self.remote_one(d));
        let cwd = self.cwd.clone();
        let t = self.transfer(f);
        let sink = self.sink.clone();
        let verbose = self.verbose;
        let announce = self.announce_dirs;
        Ok(Box::pin(async move {
            let dst_is_dir = match &dst {
                None => true,
                Some(d) => t.sftp().stat(d).await.is_ok_and(|a| a.is_dir()),
            };
            if locals.len() > 1 && !dst_is_dir {
                return Err(multiple(
                    dst.map(|d| String::from_utf8_lossy(&d).into_owned()),
                ));
            }
            let mut first_error = None;
            for local in locals {
                let remote = match &dst {
                    Some(d) if !dst_is_dir => d.clone(),
                    d => {
                        let name = local.file_name().unwrap_or(local.as_os_str());
                        remote_join(d.as_ref().unwrap_or(&cwd), name.as_bytes())
                    }
                };
                if verbose {
                    println!(
                        "Uploading {} to {}",
                        local.display(),
                        String::from_utf8_lossy(&remote)
                    );
                }
                let r = put_one(&t, sink.as_ref(), f, announce, &local, &remote).await;
                if let Err(e) = r {
                    report_or_keep(&mut first_error, e);
                }
            }
            first_error.map_or(Ok(()), Err)
        }))
    }

    fn transfer(&self, f: XferFlags) -> Transfer {
        let sink = self.sink.clone().unwrap_or_else(|| Rc::new(NoProgress));
        self.session.transfer(self.options(f), sink)
    }

    /// `mirror`: the CLI command, with remote operands (`:path`, or any with a host)
    /// resolved against the cwd. It opens its own connection.
    fn mirror(&self, args: &[String]) -> Result<(), CliError> {
        use clap::FromArgMatches;
        let mut cmd = <crate::cli::mirror::MirrorArgs as clap::Args>::augment_args(
            clap::Command::new("mirror").no_binary_name(true),
        );
        let m = cmd
            .try_get_matches_from_mut(args.iter().map(|a| self.mirror_operand(a)))
            .map_err(|e| CliError::Usage(e.to_string().trim_end().to_string()))?;
        let a = crate::cli::mirror::MirrorArgs::from_arg_matches(&m)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        match crate::cli::mirror::mirror(&self.global, &a)? {
            0 => Ok(()),
            code => Err(CliError::Usage(format!("mirror failed (exit {code})"))),
        }
    }

    /// `:path` (remote, relative to the cwd) to what the CLI's mirror expects.
    fn mirror_operand(&self, a: &str) -> String {
        let Some(rest) = a.strip_prefix(':') else {
            return a.to_string();
        };
        let path = String::from_utf8_lossy(&self.remote_one(&words::escape(rest))).into_owned();
        match (
            &self.global.server_command,
            self.session.options().host.as_deref(),
        ) {
            (None, Some(host)) => {
                let user = self
                    .session
                    .options()
                    .user
                    .as_deref()
                    .map(|u| format!("{u}@"))
                    .unwrap_or_default();
                let port = self
                    .session
                    .options()
                    .port
                    .map(|p| format!(":{p}"))
                    .unwrap_or_default();
                format!("sftp://{user}{host}{port}/{path}")
            }
            _ => path,
        }
    }
}

/// `ls` flags as `sftpipe ls`'s.
fn ls_args(f: LsFlags) -> ops::LsArgs {
    ops::LsArgs {
        long: f.long,
        human: f.human,
        all: f.all,
        one_per_line: f.one || f.long,
        by_size: f.by_size,
        by_time: f.by_time,
        reverse: f.reverse,
        remotes: Vec::new(),
    }
}

fn multiple(dst: Option<String>) -> CliError {
    CliError::Usage(format!(
        "Multiple source paths, but destination \"{}\" is not a directory",
        dst.unwrap_or_default()
    ))
}

/// Keeps the first error, reports the others at once.
fn report_or_keep(first: &mut Option<CliError>, e: CliError) {
    if first.is_none() {
        *first = Some(e);
    } else {
        crate::cli::exit::report(&e);
    }
}

async fn put_one(
    t: &Transfer,
    sink: Option<&Rc<dyn Progress>>,
    f: XferFlags,
    announce: bool,
    local: &Path,
    remote: &[u8],
) -> Result<(), CliError> {
    let meta = std::fs::metadata(local)
        .map_err(|e| Error::local(format!("cannot read {}", local.display()), e))?;
    if meta.is_dir() {
        if !f.recursive {
            eprintln!("Skipping non-regular file {}", local.display());
            return Ok(());
        }
        if announce {
            print_entering(local);
        }
        t.upload_tree(local, remote).await.into_result()?;
        return Ok(());
    }
    if let Some(s) = sink {
        s.add_total(1, meta.len());
    }
    let r = t.upload(local, remote).await;
    file_done(sink, remote, &r);
    r?;
    Ok(())
}

/// Tells `sink` a single file ended (trees report their files themselves).
fn file_done(sink: Option<&Rc<dyn Progress>>, remote: &[u8], r: &sftpipe::Result<u64>) {
    if let Some(s) = sink {
        let shown = String::from_utf8_lossy(remote);
        match r {
            Ok(n) => s.file_done(&shown, *n, None),
            Err(e) => s.file_done(&shown, 0, Some(e)),
        }
    }
}

/// `Entering DIR` for each local directory of a recursive upload, as sftp prints them
/// (the top one with a `/`, then in directory order), before the upload.
fn print_entering(top: &Path) {
    let mut name = top.as_os_str().to_os_string();
    if !name.as_bytes().ends_with(b"/") {
        name.push("/");
    }
    let mut stack = vec![PathBuf::from(name)];
    while let Some(dir) = stack.pop() {
        println!("Entering {}", dir.display());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut subdirs: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| {
                let mut p = dir.as_os_str().to_os_string();
                if !p.as_bytes().ends_with(b"/") {
                    p.push("/");
                }
                p.push(e.file_name());
                PathBuf::from(p)
            })
            .collect();
        // sftp descends as it meets them: depth first, in directory order.
        subdirs.reverse();
        stack.extend(subdirs);
    }
}

/// Downloads into a temporary name beside `local`, renamed into place when complete, so
/// that a failed or cancelled download leaves no partial file under the final name (a
/// resumed one writes in place, as `get -a` continues what is there).
async fn get_one(
    t: &Transfer,
    sink: Option<&Rc<dyn Progress>>,
    f: XferFlags,
    remote: &[u8],
    local: &Path,
) -> Result<(), CliError> {
    let attrs = t.sftp().stat(remote).await?;
    if attrs.is_dir() {
        if !f.recursive {
            eprintln!(
                "Cannot download non-regular file: {}",
                String::from_utf8_lossy(remote)
            );
            return Ok(());
        }
        t.download_tree(remote, local).await.into_result()?;
        return Ok(());
    }
    if let Some(s) = sink {
        s.add_total(1, attrs.size.unwrap_or(0));
    }
    if f.resume {
        let r = t.download(remote, local, Some(&attrs)).await;
        file_done(sink, remote, &r);
        r?;
        return Ok(());
    }
    let temp = Partial(partial_name(local));
    let r = t.download(remote, &temp.0, Some(&attrs)).await;
    file_done(sink, remote, &r);
    r?;
    std::fs::rename(&temp.0, local)
        .map_err(|e| Error::local(format!("cannot rename into {}", local.display()), e))?;
    std::mem::forget(temp);
    Ok(())
}

/// A local temporary file removed when dropped (a failure, or the job cancelled).
struct Partial(PathBuf);
impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn partial_name(local: &Path) -> PathBuf {
    let name = local.file_name().unwrap_or(OsStr::new("download"));
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(".sftpipe-part");
    local.with_file_name(tmp)
}

/// `~` and `~/x` in a local operand: `$HOME`.
fn local_tilde(word: &str) -> String {
    let home = || std::env::var("HOME").unwrap_or_default();
    if word == "~" {
        words::escape(&home())
    } else if let Some(rest) = word.strip_prefix("~/") {
        format!("{}/{rest}", words::escape(&home()))
    } else {
        word.to_string()
    }
}

/// `lls`: the local `ls` with the arguments given.
fn local_command(program: &str, args: &[String]) -> Result<(), CliError> {
    let mut c = std::process::Command::new(program);
    c.args(args);
    run_local(c)
}

fn run_local(mut c: std::process::Command) -> Result<(), CliError> {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let status = c
        .status()
        .map_err(|e| Error::local(format!("cannot run {:?}", c.get_program()), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "Shell exited with status {}",
            status.code().unwrap_or(-1)
        )))
    }
}
