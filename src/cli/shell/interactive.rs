//! The interactive shell: a prompt showing the remote cwd, lines from [`Reader`] (line
//! editing, history under the XDG state directory, completion), transfers in the
//! foreground (Ctrl-C cancels them) or as background [`Jobs`].
//!
//! The terminal: rustyline has it in raw mode while reading a line. While a command
//! runs, ISIG is off so that Ctrl-C reaches sftpipe as a byte instead of SIGINT (which
//! would also reach ssh, in the same process group); a foreground transfer watches
//! standard input for it. The settings found at the start are put back on every way out.

use std::path::PathBuf;
use std::rc::Rc;

use futures_util::future::{Either, select};
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use sftpipe::lowlevel::AsyncFd;

use super::command::{self, Command, Line};
use super::exec::{Job, Outcome, Shell};
use super::jobs::{Counter, Jobs};
use super::reader::{Event, Listing, Reader};
use crate::cli::exit::{self, CliError};
use crate::cli::progress::{ProgressMode, Tracker};
use std::io::IsTerminal;

/// Nothing to set up before ssh starts: Ctrl-C never becomes SIGINT while the shell
/// runs (see the module documentation).
pub fn prepare_signals() {}

/// The history file: `$XDG_STATE_HOME/sftpipe/history` (default `~/.local/state`).
fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("sftpipe").join("history"))
}

/// Puts the terminal settings back when dropped.
struct Terminal(Option<Termios>);

impl Terminal {
    fn save() -> Terminal {
        Terminal(termios::tcgetattr(std::io::stdin()).ok())
    }

    /// While a command runs: no signals from the keyboard, no line editing, no echo.
    fn commands(&self) -> Terminal {
        let saved = Terminal::save();
        if let Some(mut t) = saved.0.clone() {
            t.local_flags
                .remove(LocalFlags::ISIG | LocalFlags::ICANON | LocalFlags::ECHO);
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &t);
        }
        saved
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, t);
        }
    }
}

/// Runs the shell until `bye` or end of input; returns the exit code.
pub fn run(mut sh: Shell) -> Result<i32, CliError> {
    sh.progress = true;
    let terminal = Terminal::save();
    let reader = Reader::start(history_path())
        .map_err(|e| sftpipe::Error::local("cannot start the line reader", e))?;
    let wake = AsyncFd::new(sh.session.reactor(), reader.wake_fd())
        .map_err(|e| sftpipe::Error::local("cannot poll the line reader", e))?;
    let mut jobs = Jobs::default();
    let code = loop {
        for l in jobs.reap() {
            println!("{l}");
        }
        reader.request(format!("sftp {}> ", String::from_utf8_lossy(&sh.cwd)));
        let event = match sh.session.run(next_event(&sh, &reader, &wake)) {
            Ok(e) => e,
            Err(e) => break Err(e),
        };
        let text = match event {
            Event::Line(t) => t,
            Event::Interrupted => continue,
            Event::Eof => break Ok(0),
            Event::Failed(m) => break Err(CliError::Usage(m)),
            Event::List(..) => continue,
        };
        let line = match command::parse(&text) {
            Ok(l) => l,
            Err(msg) => {
                eprintln!("{msg}");
                continue;
            }
        };
        match one_line(&mut sh, &mut jobs, &terminal, line, &text) {
            Ok(true) => break Ok(0),
            Ok(false) => {}
            Err(e) => {
                exit::report(&e);
                if matches!(&e, CliError::Sftp(err) if err.is_connection()) {
                    break Ok(e.code());
                }
            }
        }
    };
    jobs.kill_all();
    drop(wake);
    drop(reader);
    drop(terminal);
    code
}

/// Awaits the reader's next line, answering its completion listings meanwhile.
async fn next_event(sh: &Shell, reader: &Reader, wake: &AsyncFd) -> Result<Event, CliError> {
    let mut buf = [0u8; 64];
    loop {
        while let Some(event) = reader.try_next() {
            match event {
                Event::List(dir, reply) => {
                    let _ = reply.send(listing(sh, &dir).await);
                }
                e => return Ok(e),
            }
        }
        wake.read(&mut buf)
            .await
            .map_err(|e| sftpipe::Error::local("waiting for the terminal", e))?;
    }
}

/// The remote directory `dir` (as typed) for completion.
async fn listing(sh: &Shell, dir: &str) -> Listing {
    let path = if dir.is_empty() {
        sh.cwd.clone()
    } else {
        sh.remote_one(&super::words::escape(dir))
    };
    match sh.session.sftp().read_dir(&path).await {
        Ok(entries) => entries
            .into_iter()
            .filter(|e| e.filename != b"." && e.filename != b"..")
            .map(|e| {
                let is_dir = e.attrs.is_dir();
                (String::from_utf8_lossy(&e.filename).into_owned(), is_dir)
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Runs one line; true to leave.
fn one_line(
    sh: &mut Shell,
    jobs: &mut Jobs,
    terminal: &Terminal,
    line: Line,
    text: &str,
) -> Result<bool, CliError> {
    match &line.command {
        Command::Jobs => {
            jobs.print();
            return Ok(false);
        }
        Command::Kill(n) => {
            if !jobs.kill(*n) {
                eprintln!("kill: no job {n}");
            }
            return Ok(false);
        }
        Command::Wait(n) => {
            if !jobs.has(*n) {
                return Ok(false);
            }
            let _raw = terminal_raw(terminal);
            let done = sh.session.run(until_ctrl_c(sh, jobs.ended(*n)));
            if done.is_none() {
                println!("Interrupted (the jobs go on)");
            }
            for l in jobs.reap() {
                println!("{l}");
            }
            return Ok(false);
        }
        Command::Local(_) | Command::Lls(_) => {
            // The local program gets the terminal as it was.
            return Ok(matches!(sh.execute(line.command)?, Outcome::Quit));
        }
        _ => {}
    }
    let background = line.background
        || matches!(&line.command, Command::Get(f, src, _) | Command::Put(f, src, _)
            if f.recursive || sftpipe::glob::has_magic(src.as_bytes()));
    let _raw = terminal_raw(terminal);
    let counter = Rc::new(Counter::default());
    let transfer = matches!(&line.command, Command::Get(..) | Command::Put(..));
    let bar = (transfer && !background && sh.progress && std::io::stderr().is_terminal())
        .then(|| Rc::new(LazyBar::default()));
    sh.sink = Some(match &bar {
        Some(b) => b.clone(),
        None => counter.clone(),
    });
    sh.verbose = !background;
    sh.announce_dirs = !background;
    let outcome = sh.execute(line.command);
    sh.sink = None;
    sh.verbose = true;
    sh.announce_dirs = true;
    let r = match outcome {
        Ok(Outcome::Quit) => Ok(true),
        Ok(Outcome::Transfer(job)) if background => {
            let text = text.trim().trim_end_matches('&').trim_end().to_string();
            let id = sh.session.run(async { jobs.spawn(&text, job, counter) });
            println!("[{id}] {text}");
            Ok(false)
        }
        Ok(Outcome::Transfer(job)) => foreground(sh, job),
        Ok(_) => Ok(false),
        Err(e) => Err(e),
    };
    if let Some(b) = bar
        && let Some(t) = b.0.borrow().as_ref()
    {
        t.finish_silently();
    }
    r
}

/// The progress bar of a foreground transfer, drawn from its first file on (after the
/// `Fetching`/`Uploading` line).
#[derive(Default)]
struct LazyBar(std::cell::RefCell<Option<Rc<Tracker>>>);

impl LazyBar {
    fn bar(&self) -> Rc<Tracker> {
        self.0
            .borrow_mut()
            .get_or_insert_with(|| Tracker::new(ProgressMode::Bar, false))
            .clone()
    }
}

impl sftpipe::Progress for LazyBar {
    fn add_total(&self, files: u64, bytes: u64) {
        self.bar().add_total(files, bytes);
    }
    fn transferred(&self, bytes: u64) {
        self.bar().transferred(bytes);
    }
    fn file_transferred(&self, local: &std::path::Path, bytes: u64) {
        self.bar().file_transferred(local, bytes);
    }
    fn file_done(&self, path: &str, bytes: u64, error: Option<&sftpipe::Error>) {
        self.bar().file_done(path, bytes, error);
    }
}

fn terminal_raw(t: &Terminal) -> Terminal {
    t.commands()
}

/// Runs a transfer until it ends or Ctrl-C cancels it.
fn foreground(sh: &mut Shell, job: Job) -> Result<bool, CliError> {
    match sh.session.run(until_ctrl_c(sh, job)) {
        Some(r) => r.map(|()| false),
        None => {
            println!("Interrupted");
            Ok(false)
        }
    }
}

/// `work`, or `None` once Ctrl-C is typed (standard input is watched for the byte).
async fn until_ctrl_c<T>(sh: &Shell, work: impl std::future::Future<Output = T>) -> Option<T> {
    // Only a terminal: from a pipe, the bytes are the lines still to come.
    let stdin = std::io::stdin()
        .is_terminal()
        .then(|| AsyncFd::new(sh.session.reactor(), 0).ok())
        .flatten();
    let watch = async {
        let Some(fd) = &stdin else {
            return std::future::pending::<()>().await;
        };
        let mut buf = [0u8; 64];
        loop {
            match fd.read(&mut buf).await {
                Ok(n) if n > 0 && buf[..n].contains(&3) => return,
                Ok(n) if n > 0 => {}
                // End of input or a failure: nothing more will come from there.
                _ => std::future::pending::<()>().await,
            }
        }
    };
    let (work, watch) = (std::pin::pin!(work), std::pin::pin!(watch));
    match select(work, watch).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}
