//! The interactive shell: rustyline for line editing, history (under the XDG state
//! directory) and completion of command names, local paths and remote paths (listings
//! cached per directory until a command runs).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use super::command::{self, Command, NAMES};
use super::exec::{Outcome, Shell};
use super::words;
use crate::cli::exit::{self, CliError};

/// Signal set-up before ssh starts: nothing yet (Ctrl-C at the prompt is rustyline's).
pub fn prepare_signals() {}

/// The history file: `$XDG_STATE_HOME/sftpipe/history` (default `~/.local/state`).
fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("sftpipe").join("history"))
}

/// A directory's entries: name, and whether it is a directory.
type Listing = Vec<(String, bool)>;

/// Completion: the first word from [`NAMES`], later ones remote or local paths by the
/// command (`lcd`, `lls`, `lmkdir`, `put`'s first operand and `get`'s second are local).
struct Completion {
    shell: Rc<RefCell<Shell>>,
    /// Remote directory listings: name and whether it is a directory.
    cache: RefCell<HashMap<Vec<u8>, Listing>>,
}

impl Completion {
    fn remote(&self, dir: &[u8]) -> Vec<(String, bool)> {
        if let Some(v) = self.cache.borrow().get(dir) {
            return v.clone();
        }
        let listed = match self.shell.try_borrow() {
            Ok(sh) => sh.session.read_dir(dir).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let v: Vec<(String, bool)> = listed
            .into_iter()
            .filter(|e| e.filename != b"." && e.filename != b"..")
            .map(|e| {
                (
                    String::from_utf8_lossy(&e.filename).into_owned(),
                    e.attrs.is_dir(),
                )
            })
            .collect();
        self.cache.borrow_mut().insert(dir.to_vec(), v.clone());
        v
    }

    fn local(dir: &str) -> Vec<(String, bool)> {
        let d = if dir.is_empty() { "." } else { dir };
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        let is_dir = e.path().is_dir();
                        (e.file_name().to_string_lossy().into_owned(), is_dir)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Whether operand `n` (0-based) of command `cmd` is local.
fn is_local(cmd: &str, n: usize) -> bool {
    match cmd {
        "lcd" | "lchdir" | "lls" | "ldir" | "lmkdir" => true,
        "put" | "reput" => n == 0,
        "get" | "reget" => n == 1,
        _ => false,
    }
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        let start = head.rfind(|c: char| c.is_whitespace()).map_or(0, |i| i + 1);
        let word = &head[start..];
        if start == 0 {
            let names = NAMES
                .iter()
                .filter(|n| n.starts_with(word))
                .map(|n| Pair {
                    display: n.to_string(),
                    replacement: format!("{n} "),
                })
                .collect();
            return Ok((0, names));
        }
        let before: Vec<&str> = head[..start].split_whitespace().collect();
        let cmd = before.first().copied().unwrap_or("");
        let operand = before[1..].iter().filter(|w| !w.starts_with('-')).count();
        let (dir, prefix) = match word.rfind('/') {
            Some(i) => (&word[..=i], &word[i + 1..]),
            None => ("", word),
        };
        let entries = if is_local(cmd, operand) {
            Self::local(dir)
        } else {
            let sh = self.shell.borrow();
            let d = if dir.is_empty() {
                sh.cwd.clone()
            } else {
                sh.remote_one(&words::escape(dir))
            };
            drop(sh);
            self.remote(&d)
        };
        let mut out: Vec<Pair> = entries
            .into_iter()
            .filter(|(n, _)| {
                n.starts_with(prefix) && (prefix.starts_with('.') || !n.starts_with('.'))
            })
            .map(|(n, is_dir)| {
                let full = format!("{dir}{n}");
                let replacement = if is_dir {
                    format!("{}/", words::quote(&full))
                } else {
                    format!("{} ", words::quote(&full))
                };
                Pair {
                    display: if is_dir { format!("{n}/") } else { n },
                    replacement,
                }
            })
            .collect();
        out.sort_by(|a, b| a.display.cmp(&b.display));
        Ok((start, out))
    }
}

impl Hinter for Completion {
    type Hint = String;
}
impl Highlighter for Completion {}
impl Validator for Completion {}
impl Helper for Completion {}

/// Runs the shell until `bye` or end of input; returns the exit code.
pub fn run(sh: Shell) -> Result<i32, CliError> {
    let shell = Rc::new(RefCell::new(sh));
    shell.borrow_mut().verbose = true;
    let mut rl: Editor<Completion, rustyline::history::DefaultHistory> =
        Editor::new().map_err(|e| CliError::Usage(format!("cannot set up the terminal: {e}")))?;
    rl.set_helper(Some(Completion {
        shell: shell.clone(),
        cache: RefCell::new(HashMap::new()),
    }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    loop {
        let prompt = format!("sftp {}> ", String::from_utf8_lossy(&shell.borrow().cwd));
        let text = match rl.readline(&prompt) {
            Ok(t) => t,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(CliError::Usage(format!("cannot read the terminal: {e}"))),
        };
        if !text.trim().is_empty() {
            let _ = rl.add_history_entry(text.as_str());
        }
        if let Some(c) = rl.helper() {
            c.cache.borrow_mut().clear();
        }
        let line = match command::parse(&text) {
            Ok(l) => l,
            Err(msg) => {
                eprintln!("{msg}");
                continue;
            }
        };
        if line.background
            || matches!(
                line.command,
                Command::Jobs | Command::Wait(_) | Command::Kill(_)
            )
        {
            eprintln!(
                "background transfers are not available yet: the transfer runs in the foreground"
            );
        }
        let mut sh = shell.borrow_mut();
        let result = match sh.execute(line.command) {
            Ok(Outcome::Quit) => break,
            Ok(Outcome::Transfer(job)) => sh.session.run(job),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            exit::report(&e);
            if matches!(&e, CliError::Sftp(err) if err.is_connection()) {
                save(&mut rl, history.as_ref());
                return Ok(e.code());
            }
        }
    }
    save(&mut rl, history.as_ref());
    Ok(0)
}

fn save(rl: &mut Editor<Completion, rustyline::history::DefaultHistory>, path: Option<&PathBuf>) {
    if let Some(p) = path {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = rl.save_history(p) {
            log::warn!("cannot save the history to {}: {e}", p.display());
        }
    }
}
