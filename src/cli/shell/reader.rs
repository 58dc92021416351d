//! The line reader: rustyline on a thread of its own, because it blocks, so that the
//! session's runtime keeps running background transfers while the prompt waits.
//!
//! The main thread asks for a line ([`Reader::request`]) and awaits it
//! ([`Reader::next`]) inside the runtime; the thread sends it over a channel and writes
//! a byte to a pipe the runtime polls. Completion of remote paths asks the main thread
//! for listings the same way (the session lives there), cached until the next line.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use super::command::NAMES;
use super::words;

/// A directory's entries: name, and whether it is a directory.
pub type Listing = Vec<(String, bool)>;

/// What the reader thread sends.
pub enum Event {
    /// A line typed.
    Line(String),
    /// Ctrl-C at the prompt.
    Interrupted,
    /// Ctrl-D, or the input ended.
    Eof,
    /// The terminal failed.
    Failed(String),
    /// Completion wants the remote directory `dir` (as typed, relative to the cwd).
    List(String, Sender<Listing>),
}

enum Request {
    Read(String),
    Quit,
}

/// The main thread's end.
pub struct Reader {
    requests: Sender<Request>,
    events: Receiver<Event>,
    wake: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The thread's way back: the channel, then a byte on the pipe.
#[derive(Clone)]
struct Back {
    events: Sender<Event>,
    wake: Arc<OwnedFd>,
}

impl Back {
    fn send(&self, e: Event) -> bool {
        if self.events.send(e).is_err() {
            return false;
        }
        // A full pipe already wakes the loop: losing this byte loses nothing.
        let _ = nix::unistd::write(&*self.wake, b"x");
        true
    }
}

impl Reader {
    /// Starts the thread, with history in `history`.
    pub fn start(history: Option<PathBuf>) -> std::io::Result<Reader> {
        let (read_end, write_end) = nix::unistd::pipe()?;
        for fd in [&read_end, &write_end] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )?;
        }
        let (req_tx, req_rx) = mpsc::channel();
        let (ev_tx, ev_rx) = mpsc::channel();
        let back = Back {
            events: ev_tx,
            wake: Arc::new(write_end),
        };
        let thread = std::thread::Builder::new()
            .name("sftpipe-readline".into())
            .spawn(move || read_lines(req_rx, back, history))?;
        Ok(Reader {
            requests: req_tx,
            events: ev_rx,
            wake: read_end,
            thread: Some(thread),
        })
    }

    /// The pipe to await (readable when an event may be waiting).
    pub fn wake_fd(&self) -> std::os::fd::RawFd {
        self.wake.as_raw_fd()
    }

    /// Asks for a line with `prompt`.
    pub fn request(&self, prompt: String) {
        let _ = self.requests.send(Request::Read(prompt));
    }

    /// The next event, if one is waiting (the wake byte is drained by the caller).
    pub fn try_next(&self) -> Option<Event> {
        match self.events.try_recv() {
            Ok(e) => Some(e),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Event::Eof),
        }
    }
}

impl Drop for Reader {
    /// Saves the history (the thread does when told to quit) if the thread is idle.
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Quit);
        if let Some(t) = self.thread.take() {
            // Idle, it ends at once; blocked in readline (leaving on a signal), it is
            // left behind and the process exits around it.
            let deadline = std::time::Instant::now() + Duration::from_millis(200);
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn read_lines(requests: Receiver<Request>, back: Back, history: Option<PathBuf>) {
    let mut rl: Editor<Completion, rustyline::history::DefaultHistory> = match Editor::new() {
        Ok(rl) => rl,
        Err(e) => {
            back.send(Event::Failed(format!("cannot set up the terminal: {e}")));
            return;
        }
    };
    rl.set_helper(Some(Completion {
        back: back.clone(),
        cache: RefCell::new(HashMap::new()),
    }));
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    while let Ok(Request::Read(prompt)) = requests.recv() {
        if let Some(c) = rl.helper() {
            c.cache.borrow_mut().clear();
        }
        let event = match rl.readline(&prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = rl.add_history_entry(line.as_str());
                }
                Event::Line(line)
            }
            Err(ReadlineError::Interrupted) => Event::Interrupted,
            Err(ReadlineError::Eof) => Event::Eof,
            Err(e) => Event::Failed(format!("cannot read the terminal: {e}")),
        };
        if !back.send(event) {
            break;
        }
    }
    if let Some(p) = &history {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = rl.save_history(p) {
            log::warn!("cannot save the history to {}: {e}", p.display());
        }
    }
}

/// Completion: the first word from [`NAMES`], later ones remote or local paths by the
/// command (`lcd`, `lls`, `lmkdir`, `put`'s first operand and `get`'s second are local).
struct Completion {
    back: Back,
    cache: RefCell<HashMap<String, Listing>>,
}

impl Completion {
    fn remote(&self, dir: &str) -> Listing {
        if let Some(v) = self.cache.borrow().get(dir) {
            return v.clone();
        }
        let (tx, rx) = mpsc::channel();
        if !self.back.send(Event::List(dir.to_string(), tx)) {
            return Vec::new();
        }
        let v = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        self.cache.borrow_mut().insert(dir.to_string(), v.clone());
        v
    }

    fn local(dir: &str) -> Listing {
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
        let start = head.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &head[start..];
        let before: Vec<&str> = head[..start].split_whitespace().collect();
        let Some(cmd) = before.first().copied() else {
            let names = NAMES
                .iter()
                .filter(|n| n.starts_with(word))
                .map(|n| Pair {
                    display: n.to_string(),
                    replacement: format!("{n} "),
                })
                .collect();
            return Ok((start, names));
        };
        let operand = before[1..].iter().filter(|w| !w.starts_with('-')).count();
        let (dir, prefix) = match word.rfind('/') {
            Some(i) => (&word[..=i], &word[i + 1..]),
            None => ("", word),
        };
        let entries = if is_local(cmd, operand) {
            Self::local(dir)
        } else {
            self.remote(dir)
        };
        let mut out: Vec<Pair> = entries
            .into_iter()
            .filter(|(n, _)| {
                n.starts_with(prefix) && (prefix.starts_with('.') || !n.starts_with('.'))
            })
            .map(|(n, is_dir)| {
                let full = words::quote(&format!("{dir}{n}"));
                Pair {
                    replacement: if is_dir {
                        format!("{full}/")
                    } else {
                        format!("{full} ")
                    },
                    display: if is_dir { format!("{n}/") } else { n },
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
