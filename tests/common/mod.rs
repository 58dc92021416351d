//! Shared harness for the integration tests: a throwaway OpenSSH server per test, plus small
//! file helpers. Every `tests/*.rs` does `mod common;` and uses the subset it needs.
//!
//! Only std and `tempfile`: signals go through `kill(1)`, hashes through `sha256sum(1)`.
#![allow(dead_code)]

pub mod fake_server;

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
    child: Option<Child>,
}

impl Sshd {
    /// Starts a server that lets `root` (the user running the tests) log in with
    /// [`Sshd::key_path`].
    pub fn start() -> Sshd {
        Sshd::launch("root")
    }

    /// Starts a server for the local user `user`, creating it first if needed (race-safe
    /// across threads and processes). Use [`TEST_USER`] for permission tests: root ignores
    /// file modes, an ordinary user does not.
    pub fn start_as(user: &str) -> Sshd {
        if user != "root" {
            ensure_user(user);
        }
        Sshd::launch(user)
    }

    fn launch(user: &str) -> Sshd {
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
            child: None,
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
        let text = format!(
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
        let mut v = vec![
            "-P".to_string(),
            self.port.to_string(),
            "-i".to_string(),
            self.key_path().display().to_string(),
        ];
        v.extend(common_ssh_options());
        v
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
        run_ok(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{}:", self.user))
                .arg(path),
        );
        let mode = fs::metadata(path).expect("stat").permissions().mode();
        fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o755)).expect("chmod");
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
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        // Freeze the listener so it forks no new session while its descendants are listed:
        // per-connection sshd processes call setsid(), so a process group would miss them.
        signal(&[pid], "STOP");
        let sessions = descendants(pid);
        let _ = child.kill();
        let _ = child.wait();
        signal(&sessions, "KILL");
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn common_ssh_options() -> Vec<String> {
    [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "LogLevel=ERROR",
        "IdentitiesOnly=yes",
    ]
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
