//! Shared harness for the integration tests: a throwaway OpenSSH server per test, plus small
//! file helpers. Every `tests/*.rs` does `mod common;` and uses the subset it needs.
//!
//! Only std and `tempfile`: signals go through `kill(1)`, hashes through `sha256sum(1)`.
#![allow(dead_code)]

pub mod askpass;
pub mod control_dir;
pub mod delayed_server;
pub mod dropbear;
pub mod fake_server;
pub mod servers;
pub mod ssh_recorder;
pub mod tree;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The OpenSSH server binary. `sshd` insists on being started by absolute path.
pub const SSHD: &str = "/usr/sbin/sshd";

/// The unprivileged account used by tests that need file modes to be enforced.
pub const TEST_USER: &str = "sftpipetest";

/// How long a server gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times start is tried with a fresh port before giving up.
const START_ATTEMPTS: usize = 5;

/// True when an sshd is installed. Prints a notice when it is not, so a test that returns
/// early because of it shows why in `--nocapture` output.
pub fn sshd_available() -> bool {
    if Path::new(SSHD).exists() {
        true
    } else {
        eprintln!(
            "NOTICE: {SSHD} not found; skipping a test that needs an OpenSSH server \
             (apt-get install openssh-server openssh-sftp-server)"
        );
        false
    }
}

/// A throwaway OpenSSH server on 127.0.0.1, alive until dropped (or [`Sshd::kill`]ed).
///
/// Everything it needs (host key, client key, `authorized_keys`, config, log) lives in a
/// private temporary directory removed on drop.
pub struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    /// Lines written before the defaults of `sshd_config` (sshd keeps a keyword's first value).
    extra: Vec<String>,
    child: Option<Child>,
    /// Rewrites the generated `sshd_config` before sshd starts.
    config_hook: Option<fn(String) -> String>,
}

impl Sshd {
    /// Starts a server for `root` whose `sshd_config` is `edit`ed first (e.g. the
    /// `Subsystem sftp` line removed: see [`without_sftp_subsystem`]).
    pub fn start_with_config(edit: fn(String) -> String) -> Sshd {
        Sshd::launch_with("root", &[], Some(edit))
    }

    /// Starts a server that lets `root` (the user running the tests) log in with
    /// [`Sshd::key_path`].
    pub fn start() -> Sshd {
        Sshd::launch("root", &[])
    }

    /// Like [`Sshd::start`], with `extra` lines of `sshd_config` (e.g. `"MaxSessions 2"`).
    /// They come before the defaults, and sshd keeps the first value of a keyword, so they
    /// override them. No `Match` blocks: those would swallow the defaults after them.
    pub fn start_with(extra: &[&str]) -> Sshd {
        Sshd::launch("root", extra)
    }

    /// [`Sshd::start_as`] with `extra` config lines as in [`Sshd::start_with`].
    pub fn start_as_with(user: &str, extra: &[&str]) -> Sshd {
        if user != "root" {
            ensure_user(user);
        }
        Sshd::launch(user, extra)
    }

    /// Starts a server for the local user `user`, creating it first if needed (race-safe
    /// across threads and processes). Use [`TEST_USER`] for permission tests: root ignores
    /// file modes, an ordinary user does not.
    pub fn start_as(user: &str) -> Sshd {
        Sshd::start_as_with(user, &[])
    }

    fn launch(user: &str, extra: &[&str]) -> Sshd {
        Sshd::launch_with(user, extra, None)
    }

    fn launch_with(user: &str, extra: &[&str], config_hook: Option<fn(String) -> String>) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: apt-get install openssh-server openssh-sftp-server"
        );
        let sftp_server = sftp_server_path();
        // Privilege separation chroots into this directory; it must exist and be root's.
        fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");

        let dir = tempfile::Builder::new()
            .prefix("sftpipe-sshd-")
            .tempdir()
            .expect("create sshd tempdir");
        // The session of a non-root user must read authorized_keys: open the directory up.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod sshd dir");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("id_ed25519"));
        let pubkey = fs::read(d.join("id_ed25519.pub")).expect("read user public key");
        let authorized = d.join("authorized_keys");
        fs::write(&authorized, pubkey).expect("write authorized_keys");
        fs::set_permissions(&authorized, fs::Permissions::from_mode(0o644))
            .expect("chmod authorized_keys");

        let mut sshd = Sshd {
            dir,
            port: 0,
            user: user.to_string(),
            extra: extra.iter().map(|l| l.to_string()).collect(),
            child: None,
            config_hook,
        };
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            match sshd.try_spawn(port, &sftp_server) {
                Ok(child) => {
                    sshd.port = port;
                    sshd.child = Some(child);
                    return sshd;
                }
                Err(why) => {
                    failures.push_str(&format!("attempt {attempt} on port {port}: {why}\n"))
                }
            }
        }
        panic!(
            "sshd did not start after {START_ATTEMPTS} attempts:\n{failures}--- sshd log ---\n{}",
            sshd.log()
        );
    }

    /// Writes the config for `port`, starts sshd and waits until it listens. On failure
    /// the process is reaped and the reason returned, so the caller can try another port.
    fn try_spawn(&self, port: u16, sftp_server: &Path) -> Result<Child, String> {
        let d = self.dir.path();
        let config = d.join("sshd_config");
        let mut text: String = self.extra.iter().map(|l| format!("{l}\n")).collect();
        text += &format!(
            "ListenAddress 127.0.0.1\n\
             Port {port}\n\
             HostKey {host_key}\n\
             AuthorizedKeysFile {authorized}\n\
             StrictModes no\n\
             UsePAM no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PidFile {pid}\n\
             Subsystem sftp {sftp}\n\
             LogLevel VERBOSE\n\
             PermitRootLogin yes\n\
             AcceptEnv none\n\
             MaxStartups 100\n\
             MaxSessions 100\n",
            host_key = d.join("host_key").display(),
            authorized = d.join("authorized_keys").display(),
            pid = d.join("sshd.pid").display(),
            sftp = sftp_server.display(),
        );
        let text = match self.config_hook {
            Some(edit) => edit(text),
            None => text,
        };
        fs::write(&config, text).map_err(|e| format!("write sshd_config: {e}"))?;

        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .arg("-E")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {SSHD}: {e}"))?;

        let listening = format!("Server listening on 127.0.0.1 port {port}.");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("sshd exited early with {status}"));
            }
            // The log line proves it is *our* sshd on the port, the connect that it accepts.
            if self.log().contains(&listening)
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "sshd not accepting connections on {addr} after {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server listens on.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The user that may log in.
    pub fn user(&self) -> String {
        self.user.clone()
    }

    /// `user@127.0.0.1`, the destination for `ssh`, `sftp` or `sftpipe`.
    pub fn destination(&self) -> String {
        format!("{}@{}", self.user, self.host())
    }

    /// The client's private key (authorized for [`Sshd::user`]).
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// The server's private directory (keys, config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Options an `ssh` client needs to reach this server non-interactively, one argv
    /// element each. The destination is not included.
    pub fn ssh_args(&self) -> Vec<String> {
        let mut v = vec![
            "-p".to_string(),
            self.port.to_string(),
            "-i".to_string(),
            self.key_path().display().to_string(),
        ];
        v.extend(common_ssh_options());
        v
    }

    /// The same options spelled for OpenSSH's `sftp` (which takes `-P` for the port).
    pub fn sftp_args(&self) -> Vec<String> {
        sftp_client_args(self.port, &self.key_path())
    }

    /// Runs a command on the server with the real `ssh` client and returns its output.
    pub fn ssh(&self, command: &str) -> Output {
        Command::new("ssh")
            .args(self.ssh_args())
            .arg("--")
            .arg(self.destination())
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    /// Hands `path` (recursively) to [`Sshd::user`], so an unprivileged session may use a
    /// directory the test created. Also opens the mode of `path` itself to 0755 so that
    /// a root-owned temporary parent does not block it.
    pub fn chown_to_user(&self, path: &Path) {
        chown_to(&self.user, path);
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(no sshd log: {e})"))
    }

    /// True until [`Sshd::kill`] (or the server died by itself).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server now, together with every session it forked, so open connections
    /// drop as if the host went away. Idempotent; also done on drop.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            kill_tree(child);
        }
    }
}

/// An `sshd_config` hook for [`Sshd::start_with_config`]: no SFTP subsystem, as on
/// hosts that disable it.
pub fn without_sftp_subsystem(config: String) -> String {
    config
        .lines()
        .filter(|l| !l.starts_with("Subsystem sftp"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Kills a listening server and every session process it forked.
fn kill_tree(mut child: Child) {
    let pid = child.id();
    // Freeze the listener so it forks no new session while its descendants are listed:
    // per-connection server processes may call setsid(), so a process group would miss them.
    signal(&[pid], "STOP");
    let sessions = descendants(pid);
    let _ = child.kill();
    let _ = child.wait();
    signal(&sessions, "KILL");
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `-P PORT -i KEY` and the options that make `sftp`/`sftpipe` reach a test server on
/// 127.0.0.1 non-interactively, one argv element each.
fn sftp_client_args(port: u16, key: &Path) -> Vec<String> {
    let mut v = vec![
        "-P".to_string(),
        port.to_string(),
        "-i".to_string(),
        key.display().to_string(),
    ];
    v.extend(common_ssh_options());
    v
}

/// Runs `sftpipe ARGS` with its standard output on a terminal (util-linux `script`
/// gives it a pty) and returns what it printed, line ends as `\n`.
pub fn sftpipe_on_a_tty(args: &[&str]) -> String {
    let quote = |a: &str| format!("'{}'", a.replace('\'', "'\\''"));
    let mut line = quote(&sftpipe_bin().display().to_string());
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    assert!(out.status.success(), "{line}: {out:?}");
    String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n")
}

/// sftpipe options (`-P port -o ...`) for 127.0.0.1 on a port nothing listens on: ssh's
/// connection is refused before any SFTP is spoken.
pub fn refused_ssh_args() -> Vec<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut v = vec!["-P".to_string(), port.to_string()];
    v.extend(common_ssh_options());
    v
}

/// Hands `path` (recursively) to `user` and opens the mode of `path` itself to 0755.
fn chown_to(user: &str, path: &Path) {
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{user}:"))
            .arg(path),
    );
    let mode = fs::metadata(path).expect("stat").permissions().mode();
    fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o755)).expect("chmod");
}

/// The uid and gid of [`TEST_USER`], creating the account first if needed.
pub fn test_user_ids() -> (u32, u32) {
    ensure_user(TEST_USER);
    let id = |flag: &str| -> u32 {
        let out = run_ok(Command::new("id").arg(flag).arg(TEST_USER));
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("id {flag} {TEST_USER} printed {text:?}: {e}"))
    };
    (id("-u"), id("-g"))
}

/// Hands `path` (recursively) to [`TEST_USER`], for a command run [`as_test_user`].
pub fn give_to_test_user(path: &Path) {
    ensure_user(TEST_USER);
    chown_to(TEST_USER, path);
}

/// Makes `cmd` run as [`TEST_USER`] (without root's groups), so that local file modes are
/// enforced: root reads everything. With `-D`, the server it starts runs as that user too.
pub fn as_test_user(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    let (uid, gid) = test_user_ids();
    cmd.uid(uid).gid(gid)
}

/// `sftpipe -D sftp-server ARGS`, run [`as_test_user`] with `RUST_LOG` unset.
pub fn sftpipe_as_test_user(args: &[&str]) -> Output {
    let mut cmd = Command::new(sftpipe_bin());
    cmd.arg("-D")
        .arg(sftp_server_path())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    as_test_user(&mut cmd).output().expect("run sftpipe")
}

/// A `-D` server command whose sftp-server a watcher thread kills (SIGKILL) as soon as
/// more than `threshold` bytes of files lie under `watch`: a transfer is cut off by how
/// far it got, as if the host went away. The watcher polls without starting processes,
/// so it keeps up on a loaded machine.
pub struct ServerKiller {
    command: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    watcher: Option<std::thread::JoinHandle<bool>>,
}

impl ServerKiller {
    /// Writes the server script into `dir` and starts watching.
    pub fn start(dir: &Path, watch: &Path, threshold: u64) -> ServerKiller {
        use std::sync::atomic::Ordering;
        let pid_file = dir.join("killable-server.pid");
        let command = pid_recording_server(dir, &pid_file);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (stop, watch) = (stop.clone(), watch.to_path_buf());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if bytes_under(&watch) > threshold
                        && let Ok(pid) = fs::read_to_string(&pid_file)
                    {
                        signal(&[pid.trim().parse().expect("pid")], "KILL");
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                false
            })
        };
        ServerKiller {
            command,
            stop,
            watcher: Some(watcher),
        }
    }

    /// The command for `-D`.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Stops watching; true when the server was killed.
    pub fn finish(mut self) -> bool {
        self.stop_watching()
    }

    fn stop_watching(&mut self) -> bool {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.watcher
            .take()
            .is_some_and(|w| w.join().expect("watcher thread"))
    }
}

impl Drop for ServerKiller {
    fn drop(&mut self) {
        self.stop_watching();
    }
}

/// The sizes of the files below `dir` added up (what vanishes meanwhile counts nothing).
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// The `-o` options every test client gets: no prompts, no known-hosts file, quiet.
pub const SSH_CLIENT_OPTIONS: [&str; 5] = [
    "StrictHostKeyChecking=no",
    "UserKnownHostsFile=/dev/null",
    "BatchMode=yes",
    "LogLevel=ERROR",
    "IdentitiesOnly=yes",
];

fn common_ssh_options() -> Vec<String> {
    SSH_CLIENT_OPTIONS
        .iter()
        .flat_map(|o| ["-o".to_string(), o.to_string()])
        .collect()
}

fn keygen(path: &Path) {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "sftpipe-test", "-f"])
            .arg(path)
            .stdin(Stdio::null()),
    );
}

/// A port that was free a moment ago (another process may still take it: callers retry).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Runs `cmd`, panicking with its stderr unless it succeeds.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(|p| p.to_string()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Every process below `root` in the process tree, from `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parens, so cut at the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|&&(_, pp)| pp == p)
                .map(|&(c, _)| c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Creates the local account `name` unless it exists, and makes sure sshd will let it in.
///
/// Serialized by a mutex inside this process and by a lock file across the parallel test
/// binaries; `useradd` failing because another creator won the race is tolerated.
fn ensure_user(name: &str) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/.sftpipe-test-useradd.lock")
        .expect("open useradd lock file");
    lock_file.lock().expect("lock useradd lock file");

    let mut last_err = String::new();
    for _ in 0..50 {
        if user_exists(name) {
            break;
        }
        // `-p '*'`: an account whose password field starts with '!' (useradd's default) is
        // "locked", and sshd without PAM refuses even key logins for it.
        let out = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", "-p", "*", name])
            .stdin(Stdio::null())
            .output()
            .expect("run useradd");
        if out.status.success() || user_exists(name) {
            break;
        }
        // "cannot lock /etc/passwd" from a concurrent useradd/usermod elsewhere: try again.
        last_err = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        user_exists(name),
        "could not create user {name}: {last_err}"
    );
    unlock_account(name);
    drop(lock_file);
}

/// Replaces a locked password field ("!..."), e.g. of an account made by plain `useradd`.
fn unlock_account(name: &str) {
    let shadow = fs::read_to_string("/etc/shadow").unwrap_or_default();
    let locked = shadow.lines().any(|l| {
        let mut f = l.split(':');
        f.next() == Some(name) && f.next().is_some_and(|p| p.starts_with('!'))
    });
    if locked {
        run_ok(Command::new("usermod").args(["-p", "*", name]));
    }
}

/// OpenSSH's SFTP server binary.
pub fn sftp_server_path() -> PathBuf {
    for p in [
        "/usr/lib/openssh/sftp-server",
        "/usr/libexec/openssh/sftp-server",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "no sftp-server in /usr/lib/openssh or /usr/libexec/openssh: \
         install openssh-sftp-server (apt-get install openssh-sftp-server)"
    );
}

/// Runs `sftpipe -D sftp-server ARGS` under a hard address-space ceiling of `bytes`
/// (`prlimit --as`, inherited by the server it starts): a memory guard. A walk whose
/// memory grows with the tree fails to allocate under it and the run dies.
pub fn sftpipe_under_memory_ceiling(bytes: u64, args: &[&str]) -> Output {
    Command::new("prlimit")
        .arg(format!("--as={bytes}"))
        .arg(env!("CARGO_BIN_EXE_sftpipe"))
        .arg("-D")
        .arg(sftp_server_path())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run prlimit")
}

/// A private temporary directory on a tmpfs (`/dev/shm`) when there is one, so that big
/// test files cost no disk I/O; else in the usual temporary directory.
pub fn tmpfs_tempdir(prefix: &str) -> tempfile::TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix);
    b.tempdir_in("/dev/shm")
        .or_else(|_| b.tempdir())
        .unwrap_or_else(|e| panic!("create a temporary directory: {e}"))
}

/// Green End's SFTP server (Debian's `gesftpserver`): it takes SSH_FXP_SYMLINK's paths in
/// the draft's order, link first, and says so with `symlink-order@rjk.greenend.org.uk`.
pub fn gesftpserver_path() -> PathBuf {
    let p = PathBuf::from("/usr/libexec/gesftpserver");
    assert!(
        p.exists(),
        "no {}: install gesftpserver (apt-get install gesftpserver)",
        p.display()
    );
    p
}

/// OpenSSH's sftp-server behind a wrapper script that logs every request it serves
/// (`-l INFO`, one line each: `symlink old "t" new "/p"`, `posix-rename old ...`,
/// `remove name ...`) to a file, for tests about what was sent. The script is the `-D`
/// command; it and the log live in `dir`.
pub struct LoggedSftpServer {
    script: PathBuf,
    log: PathBuf,
}

impl LoggedSftpServer {
    /// Writes the wrapper into `dir` (a path without single quotes).
    pub fn new(dir: &Path) -> LoggedSftpServer {
        Self::with_level(dir, "INFO")
    }

    /// As [`LoggedSftpServer::new`], logging at `level`: `DEBUG3` adds a line
    /// `request N: KIND` for every request, which [`request_counts`] counts.
    pub fn with_level(dir: &Path, level: &str) -> LoggedSftpServer {
        let script = dir.join("logged-sftp-server");
        let log = dir.join("sftp-server.log");
        write_script(
            &script,
            &format!(
                "exec '{}' -e -l {level} 2>>'{}'",
                sftp_server_path().display(),
                log.display()
            ),
        );
        write_file(&log, b"");
        LoggedSftpServer { script, log }
    }

    /// The command to pass to `-D`.
    pub fn command(&self) -> String {
        self.script.display().to_string()
    }

    /// The requests logged since the last [`LoggedSftpServer::take_log`], one per line.
    pub fn take_log(&self) -> String {
        let text = String::from_utf8_lossy(&read_file(&self.log)).into_owned();
        write_file(&self.log, b"");
        text
    }
}

/// How many requests of each kind (`open`, `write`, `posix-rename`, ...) a `DEBUG3` log of
/// [`LoggedSftpServer::with_level`] shows.
pub fn request_counts(log: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in log.lines() {
        // `debug3: request 7: open flags 26` (one such line per request), `debug1:
        // request 7: sent handle ...` (its reply, not counted).
        let Some(rest) = line.split_once(": request ").map(|(_, r)| r) else {
            continue;
        };
        let Some((id, said)) = rest.split_once(": ") else {
            continue;
        };
        let kind = said.split(' ').next().unwrap_or_default();
        if id.bytes().all(|b| b.is_ascii_digit()) && !kind.is_empty() && kind != "sent" {
            *counts.entry(kind.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// The SHA-256 of a file as lowercase hex, from `sha256sum`.
pub fn sha256_file(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    let out = run_ok(Command::new("sha256sum").arg("--").arg(path));
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    // sha256sum escapes odd file names with a leading backslash on the digest.
    let hex = hex.trim_start_matches('\\');
    assert_eq!(hex.len(), 64, "unexpected sha256sum output: {text}");
    hex.to_string()
}

/// Writes `bytes` to `path`, creating missing parent directories.
pub fn write_file(path: impl AsRef<Path>, bytes: impl AsRef<[u8]>) {
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(bytes.as_ref())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Reads a whole file, panicking with its name on failure.
pub fn read_file(path: impl AsRef<Path>) -> Vec<u8> {
    let path = path.as_ref();
    let mut v = Vec::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut v))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    v
}

/// `n` pseudo-random bytes, the same for the same `seed` (xorshift64*).
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    // Mix the seed so that small seeds differ quickly; xorshift needs a non-zero state.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    if x == 0 {
        x = 1;
    }
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// The `sftpipe` binary built for this test run.
pub fn sftpipe_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sftpipe"))
}

/// Starts `cmd` in its own process group and kills the group (SIGKILL: the command and
/// the server it runs) as soon as a file in `dir` whose name ends with `suffix` holds more
/// than `bytes` bytes; returns that file. Panics if the command ends first, or if nothing
/// grows that large within a minute.
pub fn kill_once_a_file_grows(cmd: &mut Command, dir: &Path, suffix: &str, bytes: u64) -> PathBuf {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let grown = fs::read_dir(dir).into_iter().flatten().flatten().find(|e| {
            e.file_name().to_string_lossy().ends_with(suffix)
                && e.metadata().is_ok_and(|m| m.len() > bytes)
        });
        if let Some(entry) = grown {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            return entry.path();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{cmd:?} ended ({status}) before a *{suffix} file in {} grew past {bytes} bytes",
                dir.display()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "no *{suffix} file in {} grew past {bytes} bytes",
                dir.display()
            );
        }
        // Polls the file's size: the kill is triggered by bytes written, not by time.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Writes an executable `#!/bin/sh` script with `body`.
pub fn write_script(path: &Path, body: &str) {
    write_file(path, format!("#!/bin/sh\n{body}\n"));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A `-D` server command: a script in `dir` that writes its pid to `pidfile` and then
/// becomes (exec) sftp-server, so the pid is the server's.
pub fn pid_recording_server(dir: &Path, pidfile: &Path) -> String {
    let script = dir.join("server");
    write_script(
        &script,
        &format!(
            "echo $$ > {}\nexec {}",
            pidfile.display(),
            sftp_server_path().display()
        ),
    );
    script.display().to_string()
}

/// Polls `cond` every few milliseconds until it holds; panics naming `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The pid a [`pid_recording_server`] wrote, once it has.
pub fn read_pid(pidfile: &Path) -> u32 {
    let mut pid = None;
    wait_until("the server writes its pid", Duration::from_secs(30), || {
        pid = fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        pid.is_some()
    });
    pid.unwrap_or_default()
}

/// Sends `sig` ("STOP", "TERM", ...) to `pid` with `kill(1)`.
pub fn send_signal(pid: u32, sig: &str) {
    signal(&[pid], sig);
}

/// True while process `pid` exists and is not a zombie (one that exited but was not
/// reaped yet counts as gone).
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// SIGKILLs a process on drop if it is still there: a test that fails must not leave a
/// stopped server behind.
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if process_alive(self.0) {
            signal(&[self.0], "KILL");
        }
    }
}

/// Total bytes of the regular files directly in `dir` (hidden ones included).
pub fn dir_file_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Waits up to `limit` for `child` to exit and collects its output; kills it and panics
/// (with its output) if it does not.
pub fn output_within(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().expect("collect output"),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collect output");
                panic!(
                    "still running after {limit:?}; stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// `sftpipe -D SERVER reprepro-hook --basedir BASE`, with none of reprepro's variables
/// from the environment (they would override the test's directories) and no stdin; the
/// caller adds the outlog or options.
pub fn reprepro_hook_command(server: impl AsRef<std::ffi::OsStr>, base: &Path) -> Command {
    let mut cmd = Command::new(sftpipe_bin());
    cmd.arg("-D")
        .arg(server)
        .arg("reprepro-hook")
        .arg("--basedir")
        .arg(base)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for var in ["BASE", "OUT", "LOG", "CONFIG", "DIST"] {
        cmd.env_remove(format!("REPREPRO_{var}_DIR"));
    }
    cmd
}
