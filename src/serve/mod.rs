//! `sftpipe serve`: a JSON command protocol over a pair of file descriptors (stdin and
//! stdout), compatible with sftper's, for programs in other languages.
//!
//! # Protocol
//!
//! Each command is a JSON object `{"command": NAME, "args": {...}, "id": ANY}` (`id`
//! optional); each answer is `{"status": "ok"|"error"|"fail", "message": str, "data":
//! any}`, plus `"code"` for `error` (see [`error_code`]) and the command's `"id"`.
//! `error` means the operation failed; `fail` that the request itself was bad (invalid
//! JSON, unknown command, missing or mistyped argument). A bad message never ends the
//! server.
//!
//! Framing is decided per message (see [`framing`]): text (one object per line) when
//! its first byte is `{` or white space, else binary (a `u32` big-endian length, then
//! the JSON). Each answer uses its command's framing; [`ServeOptions::framing`] forces
//! one for everything.
//!
//! # Concurrency and order
//!
//! A command with an `id` runs as its own task, concurrently with all others over the
//! one connection; its answer goes out when it completes. Commands without an `id` run
//! one after another, each starting when the previous id-less one has been answered;
//! they do not wait for commands with an id (nor do those wait for them). Answers are
//! written whole, one at a time, each in a single write when the pipe has room. At most
//! [`ServeOptions::max_in_flight`] commands are pending at once; beyond that the input
//! is not read (back-pressure), and a command's slot is freed only once its answer is
//! written, so a client that does not read answers cannot make the server buffer
//! without bound.
//!
//! End of input ends the server once every pending command is answered. A binary length
//! over the maximum cannot be skipped (where would the next message start?), nor can
//! input in neither framing (`hello world`: not `{`, and an absurd length), so after
//! answering it the server stops reading, ends likewise, and says why in
//! [`ServeSummary::input_abandoned`].
//!
//! ```no_run
//! use sftpipe::{ConnectOptions, Session, serve};
//! # fn main() -> sftpipe::Result<()> {
//! let session = Session::connect(&ConnectOptions::host("files.example.org"))?;
//! let summary = serve::serve_stdio(&session, &serve::ServeOptions::default())?;
//! let code = if summary.connection_lost { 5 } else if summary.input_abandoned.is_some() { 1 } else { 0 };
//! std::process::exit(code);
//! # }
//! ```

pub mod exec;
pub mod framing;
pub mod request;

use std::cell::Cell;
use std::io;
use std::rc::Rc;

use serde_json::Value;

pub use exec::{Executor, Reply, error_code};
pub use framing::{Decoder, Frame, Framing};
pub use request::{BadRequest, Command, Request, parse_request};

use crate::client::Sftp;
use crate::error::{Error, Result};
use crate::reactor::AsyncFd;
use crate::session::Session;
use crate::task::{JoinHandle, Semaphore, spawn, yield_now};

/// The largest message accepted (either framing), by default.
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;
/// Commands pending at once, by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Bytes read from the input per call.
const READ_SIZE: usize = 64 * 1024;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// One framing for all input and output; `None` detects it per message.
    pub framing: Option<Framing>,
    /// The largest message (bytes of JSON) accepted.
    pub max_message: usize,
    /// Commands pending at once (running, waiting their turn, or being answered).
    pub max_in_flight: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            framing: None,
            max_message: DEFAULT_MAX_MESSAGE,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// How serving ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeSummary {
    /// Messages answered (or, with a closed output, that would have been).
    pub messages: u64,
    /// The connection to the server died (ssh exited, or the pipes broke).
    pub connection_lost: bool,
    /// The output could not be written (the client went away); answers were dropped.
    pub output_closed: bool,
    /// Reading stopped before the end of input, and why: a binary length over the
    /// maximum, input in neither framing, or a read error. The rest of the input was not
    /// read, so commands in it were neither run nor answered.
    pub input_abandoned: Option<String>,
}

/// Where answers go: written whole, one at a time.
struct Output {
    fd: Rc<AsyncFd>,
    turn: Semaphore,
    closed: Cell<bool>,
}

impl Output {
    async fn send(&self, framing: Framing, answer: &Value) {
        let bytes = framing::encode(framing, answer);
        let _turn = self.turn.acquire(1).await;
        if self.closed.get() {
            return;
        }
        if let Err(e) = self.fd.write_all(&bytes).await {
            if e.kind() == io::ErrorKind::BrokenPipe {
                log::warn!("serve: the output was closed; dropping further answers");
            } else if crate::interrupt::caught().is_some() {
                log::debug!("serve: {e}; dropping further answers");
            } else {
                log::error!("serve: cannot write an answer: {e}");
            }
            self.closed.set(true);
        }
    }
}

/// What a message asks for.
enum Work {
    Run(Command),
    Fail(String),
}

/// Serves commands read from `input`, answering on `output`, until the input ends and
/// every command is answered. Runs on the runtime of `sftp`'s session (inside
/// [`Session::run`]).
pub async fn serve(
    sftp: &Sftp,
    input: &AsyncFd,
    output: Rc<AsyncFd>,
    opts: &ServeOptions,
) -> ServeSummary {
    let exec = Rc::new(Executor::new(sftp));
    let out = Rc::new(Output {
        fd: output,
        turn: Semaphore::new(1),
        closed: Cell::new(false),
    });
    let slots = Semaphore::new(opts.max_in_flight.max(1));
    let mut summary = ServeSummary::default();
    let mut decoder = Decoder::new(opts.framing, opts.max_message);
    // The last id-less command: the next one waits for it.
    let mut lane: Option<JoinHandle<()>> = None;
    let mut buf = vec![0u8; READ_SIZE];

    loop {
        while let Some(frame) = decoder.next_frame() {
            summary.messages += 1;
            let (framing, id, work) = interpret(frame);
            if decoder.is_closed()
                && let Work::Fail(why) = &work
            {
                summary.input_abandoned = Some(why.clone());
            }
            dispatch(framing, id, work, &exec, &out, &slots, &mut lane).await;
        }
        if decoder.is_closed() {
            log::info!("serve: framing lost; no longer reading the input");
            break;
        }
        if out.closed.get() {
            break;
        }
        match input.read(&mut buf).await {
            Ok(0) => {
                if let Some(frame) = decoder.finish() {
                    summary.messages += 1;
                    let (framing, id, work) = interpret(frame);
                    dispatch(framing, id, work, &exec, &out, &slots, &mut lane).await;
                }
                log::debug!("serve: end of input");
                break;
            }
            Ok(n) => decoder.feed(&buf[..n]),
            Err(e) => {
                if crate::interrupt::caught().is_some() {
                    // The signal is what is reported.
                    log::debug!("serve: {e}");
                } else {
                    summary.input_abandoned = Some(format!("cannot read the input: {e}"));
                }
                break;
            }
        }
        // Let the commands just started run before reading on (the input may be a
        // file, always readable).
        yield_now().await;
    }
    // Every slot back means every command answered.
    drop(slots.acquire(opts.max_in_flight.max(1)).await);
    drop(lane);
    summary.connection_lost = sftp.channel().is_dead();
    summary.output_closed = out.closed.get();
    summary
}

/// What a frame asks for, the framing to answer in, and the command's id.
fn interpret(frame: Frame) -> (Framing, Option<Value>, Work) {
    match frame {
        Frame::Message { framing, body } => match parse_request(&body) {
            Ok(r) => (framing, r.id, Work::Run(r.command)),
            Err(bad) => (framing, bad.id, Work::Fail(bad.message)),
        },
        Frame::Oversized {
            framing,
            declared: Some(len),
            max,
        } => (
            framing,
            None,
            Work::Fail(format!(
                "message of {len} bytes exceeds the maximum of {max}; a binary stream \
                 cannot be resynchronised, so no further input is read"
            )),
        ),
        Frame::Oversized { framing, max, .. } => (
            framing,
            None,
            Work::Fail(format!("line exceeds the maximum of {max} bytes; skipped")),
        ),
        Frame::Unrecognised { head, forced } => unrecognised(&head, forced),
        Frame::Truncated { have, want } => (
            Framing::Binary,
            None,
            Work::Fail(match want {
                Some(w) => format!("input ended inside a message ({have} of {w} bytes)"),
                None => format!("input ended inside a length prefix ({have} of 4 bytes)"),
            }),
        ),
    }
}

/// The answer to input in no framing: in text when it looks like text (unless binary is
/// forced), since whoever typed `hello world` reads lines.
fn unrecognised(head: &[u8], forced: bool) -> (Framing, Option<Value>, Work) {
    let what = if forced {
        "input is not length-prefixed JSON (--binary)"
    } else {
        "input is neither JSON lines nor length-prefixed JSON"
    };
    let texty = head.first().is_some_and(|b| b.is_ascii_graphic());
    let mut message = format!("{what}: it starts with \"{}\"", head.escape_ascii());
    if let (false, Some(p)) = (texty, head.first_chunk::<4>()) {
        message.push_str(&format!(
            ", which as a length prefix announces {} bytes",
            u32::from_be_bytes(*p)
        ));
    }
    message.push_str("; no further input is read");
    let framing = if texty && !forced {
        Framing::Text
    } else {
        Framing::Binary
    };
    (framing, None, Work::Fail(message))
}

/// Starts the task for one frame once a slot is free.
async fn dispatch(
    framing: Framing,
    id: Option<Value>,
    work: Work,
    exec: &Rc<Executor>,
    out: &Rc<Output>,
    slots: &Semaphore,
    lane: &mut Option<JoinHandle<()>>,
) {
    let permit = slots.acquire(1).await;
    let concurrent = id.is_some();
    let (exec, out) = (exec.clone(), out.clone());
    let job = async move {
        let reply = match work {
            Work::Run(cmd) => {
                let name = cmd.name();
                log::debug!("serve: {name} (id {id:?})");
                let reply = exec.execute(cmd).await;
                if reply.status != "ok" {
                    log::info!("serve: {name} (id {id:?}): {}", reply.message);
                }
                reply
            }
            Work::Fail(message) => {
                log::info!("serve: bad request (id {id:?}): {message}");
                Reply::fail(message)
            }
        };
        out.send(framing, &reply.to_json(id)).await;
        drop(permit);
    };
    if concurrent {
        drop(spawn(job));
    } else {
        let previous = lane.take();
        *lane = Some(spawn(async move {
            if let Some(p) = previous {
                p.await;
            }
            job.await;
        }));
    }
}

/// Serves on this process's standard input and output (switched to non-blocking mode
/// while serving, and back) until input ends. Blocks.
pub fn serve_stdio(session: &Session, opts: &ServeOptions) -> Result<ServeSummary> {
    let input = AsyncFd::new(session.reactor(), libc::STDIN_FILENO)
        .map_err(|e| Error::local("cannot use standard input", e))?;
    let output = AsyncFd::new(session.reactor(), libc::STDOUT_FILENO)
        .map_err(|e| Error::local("cannot use standard output", e))?;
    Ok(session.run(serve(session.sftp(), &input, output, opts)))
}
