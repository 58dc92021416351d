//! A `-D` server command for the cross-channel ordering tests: every server process it
//! starts is OpenSSH's sftp-server, and ONE of them (the `nth` started) holds every request
//! for a while before passing it on, in order: that server handles each request later than
//! one sent at the same time over another channel, as a slow or congested channel would.

use super::{sftp_server_path, write_file};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The interpreter of the relay (not a pyenv shim: no startup tax, no surprises).
const PYTHON: &str = "/usr/bin/python3";

/// The wrapper script and the directory it keeps its state in.
pub struct DelayedServer {
    script: PathBuf,
    dir: PathBuf,
}

/// The relay. argv: STATE_DIR NTH DELAY_MS SFTP_SERVER. Each start claims the next
/// instance number with an exclusive create (`instance.N` holds its pid), so concurrent
/// starts count right. Other instances become sftp-server itself; the chosen one relays
/// stdin to it, each chunk held DELAY_MS after it was read (its replies go straight out),
/// and on exit writes how many chunks it held to `delayed`.
const RELAY: &str = r#"
import os, sys, subprocess, threading, time
from collections import deque
state, nth, delay, server = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) / 1000.0, sys.argv[4]
n = 1
while True:
    try:
        fd = os.open(os.path.join(state, "instance.%d" % n), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.write(fd, b"%d\n" % os.getpid())
        os.close(fd)
        break
    except FileExistsError:
        n += 1
if n != nth:
    os.execv(server, [server])
child = subprocess.Popen([server], stdin=subprocess.PIPE, stdout=1, bufsize=0)
os.close(1)
queue, cond, done, held = deque(), threading.Condition(), [False], [0]
def reader():
    while True:
        try:
            data = os.read(0, 1 << 16)
        except OSError:
            data = b""
        with cond:
            if data:
                queue.append((time.monotonic() + delay, data))
                held[0] += 1
            else:
                done[0] = True
            cond.notify()
        if not data:
            return
threading.Thread(target=reader, daemon=True).start()
while True:
    with cond:
        while not queue and not done[0]:
            cond.wait()
        if not queue:
            break
        due, data = queue.popleft()
    wait = due - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(child.stdin.fileno(), view):]
    except OSError:
        break
child.stdin.close()
with open(os.path.join(state, "delayed"), "w") as f:
    f.write("%d\n" % held[0])
sys.exit(child.wait())
"#;

impl DelayedServer {
    /// Writes the command into `dir` (a path without single quotes): the `nth` server
    /// started (1-based) delays each request by `delay_ms` milliseconds.
    pub fn new(dir: &Path, nth: usize, delay_ms: u64) -> DelayedServer {
        Self::with_server(dir, nth, delay_ms, &sftp_server_path())
    }

    /// [`DelayedServer::new`] running `server` (a program taking no arguments, e.g. a
    /// [`super::LoggedSftpServer`] script) instead of sftp-server itself.
    pub fn with_server(dir: &Path, nth: usize, delay_ms: u64, server: &Path) -> DelayedServer {
        let state = dir.join("delayed-server");
        fs::create_dir_all(&state).unwrap_or_else(|e| panic!("mkdir {}: {e}", state.display()));
        let relay = state.join("relay.py");
        write_file(&relay, RELAY);
        let script = dir.join("delayed-sftp-server");
        super::write_script(
            &script,
            &format!(
                "exec {PYTHON} '{}' '{}' {nth} {delay_ms} '{}'",
                relay.display(),
                state.display(),
                server.display()
            ),
        );
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", state.display()));
        DelayedServer { script, dir: state }
    }

    /// The command to pass to `-D`.
    pub fn command(&self) -> String {
        self.script.display().to_string()
    }

    /// How many server processes were started so far.
    pub fn started(&self) -> usize {
        (1..)
            .take_while(|n| self.dir.join(format!("instance.{n}")).exists())
            .count()
    }

    /// The pid of the `n`th server started (1-based), once it started.
    pub fn pid(&self, n: usize) -> Option<u32> {
        fs::read_to_string(self.dir.join(format!("instance.{n}")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// How many chunks of requests the chosen instance held back, once it ended; `None`
    /// while it runs or if it never started.
    pub fn delayed_chunks(&self) -> Option<u64> {
        fs::read_to_string(self.dir.join("delayed"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}
