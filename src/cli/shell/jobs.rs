//! Background transfers: `COMMAND &`, `jobs`, `wait [N]`, `kill N`.
//!
//! A job is a transfer future spawned on the session's runtime, wrapped so that `kill`
//! can drop it: an upload cut short stays under its temporary name on the server, a
//! download's temporary local file is removed (see `exec::get_one`). Jobs run whenever
//! the runtime does, including while the prompt waits for a line.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::{AbortHandle, Abortable, Aborted};
use sftpipe::Error;
use sftpipe::task::{Countdown, JoinHandle};
use sftpipe::transfer::Progress;

use super::exec::Job;
use crate::cli::exit::CliError;
use crate::cli::progress::{binary_size, rate_text};

/// Bytes and files a job has moved.
#[derive(Default)]
pub struct Counter {
    total: Cell<u64>,
    bytes: Cell<u64>,
    files: Cell<u64>,
    failed: Cell<u64>,
}

impl Progress for Counter {
    fn add_total(&self, _files: u64, bytes: u64) {
        self.total.set(self.total.get() + bytes);
    }
    fn transferred(&self, bytes: u64) {
        self.bytes.set(self.bytes.get() + bytes);
    }
    fn file_done(&self, _path: &str, _bytes: u64, error: Option<&Error>) {
        match error {
            None => self.files.set(self.files.get() + 1),
            Some(_) => self.failed.set(self.failed.get() + 1),
        }
    }
}

struct Entry {
    id: usize,
    text: String,
    handle: JoinHandle<Result<Result<(), CliError>, Aborted>>,
    abort: AbortHandle,
    counter: Rc<Counter>,
    started: Instant,
    /// Released when the job ends (for `wait`).
    done: Countdown,
}

/// The shell's jobs, numbered from 1.
#[derive(Default)]
pub struct Jobs {
    next: usize,
    list: Vec<Entry>,
}

impl Jobs {
    /// Starts `job` (to be called inside the session's runtime); returns its number.
    pub fn spawn(&mut self, text: &str, job: Job, counter: Rc<Counter>) -> usize {
        let (abort, reg) = AbortHandle::new_pair();
        let done = Countdown::new();
        let token = done.token();
        let handle = sftpipe::task::spawn(async move {
            let r = Abortable::new(job, reg).await;
            token.release();
            r
        });
        self.next += 1;
        self.list.push(Entry {
            id: self.next,
            text: text.trim().to_string(),
            handle,
            abort,
            counter,
            started: Instant::now(),
            done,
        });
        self.next
    }

    /// Whether job `id` exists (`None`: any job).
    pub fn has(&self, id: Option<usize>) -> bool {
        self.list.iter().any(|e| id.is_none_or(|i| e.id == i))
    }

    /// A future that completes when every job `id` names (`None`: all) has ended.
    pub fn ended(&self, id: Option<usize>) -> impl std::future::Future<Output = ()> + use<> {
        let latches: Vec<Countdown> = self
            .list
            .iter()
            .filter(|e| id.is_none_or(|i| e.id == i))
            .map(|e| e.done.clone())
            .collect();
        async move {
            for l in latches {
                l.wait().await;
            }
        }
    }

    /// `jobs`: one line per job with what it moved so far.
    pub fn print(&self) {
        for e in &self.list {
            let c = &e.counter;
            let state = if e.handle.is_finished() {
                "Done"
            } else {
                "Running"
            };
            println!(
                "[{}] {state:<8} {}  {}, {} of {}, {}",
                e.id,
                e.text,
                files(c.files.get()),
                binary_size(c.bytes.get()),
                binary_size(c.total.get()),
                rate_text(c.bytes.get(), e.started.elapsed())
            );
        }
    }

    /// Cancels job `id`; false if there is none.
    pub fn kill(&mut self, id: usize) -> bool {
        let Some(i) = self.list.iter().position(|e| e.id == id) else {
            return false;
        };
        let e = self.list.remove(i);
        e.abort.abort();
        println!("[{}] Killed   {}", e.id, e.text);
        true
    }

    /// Forgets the jobs that ended, returning a line about each (with its error).
    pub fn reap(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut i = 0;
        while i < self.list.len() {
            if !self.list[i].handle.is_finished() {
                i += 1;
                continue;
            }
            let mut e = self.list.remove(i);
            match (&mut e.handle).now_or_never() {
                Some(Ok(Err(err))) => {
                    lines.push(format!("[{}] Failed   {}: {err}", e.id, e.text));
                }
                _ => lines.push(format!(
                    "[{}] Done     {}  ({}, {})",
                    e.id,
                    e.text,
                    files(e.counter.files.get()),
                    binary_size(e.counter.bytes.get())
                )),
            }
        }
        lines
    }

    /// Cancels every job (leaving the shell).
    pub fn kill_all(&mut self) {
        for e in self.list.drain(..) {
            e.abort.abort();
        }
    }
}

fn files(n: u64) -> String {
    format!("{n} file{}", if n == 1 { "" } else { "s" })
}
