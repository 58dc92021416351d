//! One `ssh ... -T -- HOST 'scp ...'` child and blocking I/O on its pipes: a stdin the
//! records and data go to, a buffered stdout replies and records come from (waiting at
//! most the stall timeout for a byte), and stderr collected by a thread for messages.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{ConnectionError, Error, Result};
use crate::transport::ConnectOptions;

/// Lines of ssh's stderr kept for messages.
const TAIL_LINES: usize = 20;
/// How long a finished child gets to exit (and ssh to print why) after its stdout ended.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// The read buffer's size.
const READ_BUF: usize = 256 * 1024;

/// A running scp session.
pub struct Conn {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    tail: Arc<Mutex<VecDeque<String>>>,
    reader: Option<JoinHandle<()>>,
    label: String,
    peer: String,
    timeout: Option<Duration>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    /// Runs `command` (already quoted for the remote shell) on the server of `opts`.
    pub fn start(opts: &ConnectOptions, command: &str) -> Result<Conn> {
        let (program, args) = opts.resolved_remote_command_line(command)?;
        log::debug!("running {program} {}", args.join(" "));
        let mut child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                program: program.clone(),
                source,
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Protocol("the child's pipes are missing".into()));
        };
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let reader = {
            let tail = tail.clone();
            std::thread::spawn(move || collect_stderr(stderr, &tail))
        };
        Ok(Conn {
            child,
            stdin: Some(stdin),
            stdout,
            tail,
            reader: Some(reader),
            label: opts.label(),
            peer: opts.peer(),
            timeout: opts.stall_timeout(),
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
        })
    }

    /// Sends `data`; a closed pipe is the connection's end, explained.
    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        if let Some(e) = self.interrupted() {
            return Err(e);
        }
        let r = match &mut self.stdin {
            Some(s) => s.write_all(data),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        r.map_err(|_| self.lost())
    }

    /// The bytes read but not consumed yet, reading more when there are none: empty at
    /// the end of the stream.
    pub fn peek(&mut self) -> Result<&[u8]> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.wait_readable()?;
            let n = loop {
                match self.stdout.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return Err(self.lost()),
                }
            };
            self.end = n;
        }
        Ok(&self.buf[self.start..self.end])
    }

    /// One line (without its newline) of at most `max` bytes, read before the scp
    /// protocol starts (what a wrapping shell command says).
    pub fn read_line(&mut self, max: usize) -> Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            let input = self.peek()?.to_vec();
            if input.is_empty() {
                return Err(self.lost());
            }
            let (take, done) = match input.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (input.len(), false),
            };
            if line.len() + take > max {
                return Err(Error::Protocol(format!(
                    "unexpected output from the remote shell: '{}'",
                    String::from_utf8_lossy(&[&line[..], &input[..take]].concat())
                )));
            }
            line.extend_from_slice(&input[..take]);
            self.consume(take + usize::from(done));
            if done {
                return Ok(line);
            }
        }
    }

    /// Marks `n` peeked bytes consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Waits up to the stall timeout for stdout to have something (or end), or for a
    /// signal that ends sftpipe (see [`crate::interrupt`]).
    fn wait_readable(&mut self) -> Result<()> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let timeout = match self.timeout {
            Some(limit) => {
                let ms = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let wake = crate::interrupt::wake_fd()
            // SAFETY: the wake pipe's read end lives as long as the process.
            .map(|fd| unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) });
        loop {
            if let Some(e) = self.interrupted() {
                return Err(e);
            }
            let mut fds = vec![PollFd::new(self.stdout.as_fd(), PollFlags::POLLIN)];
            fds.extend(wake.map(|w| PollFd::new(w, PollFlags::POLLIN)));
            match poll(&mut fds, timeout) {
                Ok(0) => {
                    let _ = self.child.kill();
                    let secs = self.timeout.map_or(0, |t| t.as_secs());
                    return Err(self.connection_error(format!(
                        "no answer from {} for {secs} s; giving up",
                        self.peer
                    )));
                }
                Ok(_) if fds[0].any().unwrap_or(true) => return Ok(()),
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return Ok(()),
            }
        }
    }

    /// After SIGINT, SIGTERM or SIGHUP: the child is sent SIGTERM and the session fails
    /// with "interrupted by ..." (the caller exits with 128 + signal).
    fn interrupted(&mut self) -> Option<Error> {
        let message = crate::interrupt::interrupted_message()?;
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        self.stdin = None;
        Some(self.connection_error(message))
    }

    /// Closes stdin (the end of the records) and waits for the child; an exit status
    /// other than 0 is an error naming it.
    pub fn finish(mut self) -> Result<()> {
        self.stdin = None;
        let status = self
            .child
            .wait()
            .map_err(|e| Error::local("cannot wait for ssh", e))?;
        self.join_reader();
        if status.success() {
            return Ok(());
        }
        Err(self.exit_error(Some(status)))
    }

    /// Ends the child at once (after a refused record: nothing more is read or written).
    pub fn abort(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_reader();
    }

    /// After the stream ended too early: the connection error when the child failed
    /// (ssh lost the connection, the remote command was missing), `None` when it exited
    /// fine (then what it sent is to blame).
    pub fn failure(&mut self) -> Option<Error> {
        let status = self.wait_exit();
        if status.is_some_and(|s| s.success()) {
            return None;
        }
        Some(self.exit_error(status))
    }

    /// The error for a connection that broke: why the child ended, with its last words.
    pub fn lost(&mut self) -> Error {
        let status = self.wait_exit();
        self.exit_error(status)
    }

    /// Closes stdin and gives the child a moment to exit; its status if it did.
    fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.stdin = None;
        let deadline = std::time::Instant::now() + EXIT_GRACE;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break None,
            }
        };
        if status.is_some() {
            self.join_reader();
        }
        status
    }

    fn exit_error(&self, status: Option<std::process::ExitStatus>) -> Error {
        let reason = match status.map(|s| (s, s.code())) {
            Some((_, Some(c))) => format!("{} exited with status {c}", self.label),
            Some((s, None)) => format!("{} was killed ({s})", self.label),
            None => format!("{} closed its output", self.label),
        };
        self.connection_error(reason)
    }

    fn connection_error(&self, reason: String) -> Error {
        let stderr_tail = self
            .tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        Error::Connection(ConnectionError {
            reason,
            stderr_tail,
            unreached: None,
        })
    }

    /// Waits for the stderr thread, which ends when every writer of the pipe has closed.
    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads stderr line by line into `tail`, logging each line.
fn collect_stderr(stderr: std::process::ChildStderr, tail: &Mutex<VecDeque<String>>) {
    use std::io::BufRead;
    let mut r = std::io::BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text.is_empty() {
            continue;
        }
        log::debug!("ssh: {}", crate::error::printable(&text));
        if let Ok(mut t) = tail.lock() {
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(text);
        }
    }
}
