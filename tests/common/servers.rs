//! The SFTP servers of the interoperability matrix (`tests/interop.rs`): OpenSSH's sshd and
//! its `sftp-server` run by `-D`, paramiko, gesftpserver (`-D`), ProFTPD's mod_sftp and
//! asyncssh. Each is started on 127.0.0.1 (a free port, throwaway keys) with a private
//! directory on a tmpfs to serve, its log kept for failure messages, and killed on drop.
//!
//! A server whose software is missing is skipped with a NOTICE, except under `CI=true`
//! where that fails the test: `contrib/test.sh` installs everything.

use std::ffi::OsStr;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{
    START_ATTEMPTS, START_TIMEOUT, Sshd, free_port, keygen, kill_tree, sftp_client_args,
    sftp_server_path, sftpipe_bin, sshd_available, tmpfs_tempdir,
};

/// The environment variable naming a Python with paramiko and asyncssh (contrib/test.sh
/// sets it); without it, the venv contrib/test.sh makes under `~/.cache` is used.
pub const PYTHON_ENV: &str = "SFTPIPE_TEST_PYTHON";

/// gesftpserver, Debian's path.
pub const GESFTPSERVER: &str = "/usr/libexec/gesftpserver";

/// ProFTPD.
pub const PROFTPD: &str = "/usr/sbin/proftpd";

/// What a server offers where servers differ; the scenario expects success where a
/// capability is present and sftpipe's clear message or fallback where it is not.
#[derive(Clone, Copy, Debug)]
pub struct Capabilities {
    /// `posix-rename@openssh.com`: `mv` onto a file is atomic (else remove + rename, warned).
    pub posix_rename: bool,
    /// `statvfs@openssh.com`: `df` works (else exit 6 naming the extension).
    pub statvfs: bool,
    /// `hardlink@openssh.com`: `ln` without `-s` works (else exit 6 naming the extension).
    pub hardlink: bool,
    /// `limits@openssh.com`: the server says how large a READ or WRITE may be.
    pub limits: bool,
    /// A newline is accepted inside a file name.
    pub newline_names: bool,
    /// What READLINK answers for a relative symlink.
    pub readlink: Readlink,
    /// LSTAT follows a final symlink, so `stat` describes the link's target.
    pub lstat_follows: bool,
}

/// What a server's READLINK answers for a symlink holding a relative target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readlink {
    /// The target as stored (OpenSSH and most servers).
    Stored,
    /// The absolute path the target resolves to on the server (ProFTPD).
    Resolved,
    /// An error (asyncssh chrooted: it resolves the target against its own working
    /// directory, which lies outside the chroot).
    Refused,
}

/// A running server, the directory it serves, and how `sftpipe` reaches it.
pub struct Server {
    /// Its name in messages and in the README's matrix.
    pub name: &'static str,
    /// What it offers.
    pub caps: Capabilities,
    /// The `sftpipe` options before the command.
    args: Vec<String>,
    /// What precedes a remote path in an operand (`127.0.0.1:`, or `:` with `-D`).
    prefix: String,
    /// The served directory, as this machine names it.
    root: tempfile::TempDir,
    /// The served directory, as the server names it.
    remote_root: String,
    sshd: Option<Sshd>,
    daemon: Option<Daemon>,
}

impl Server {
    /// OpenSSH's sshd (the harness's [`Sshd`]), logged in as root.
    pub fn openssh_sshd() -> Option<Server> {
        if !sshd_available() {
            return unavailable("OpenSSH sshd", "openssh-server");
        }
        let sshd = Sshd::start();
        let mut args = vec!["-F".to_string(), "/dev/null".to_string()];
        args.extend(sshd.sftp_args());
        let root = tmpfs_tempdir("sftpipe-interop-sshd-");
        Some(Server {
            name: "OpenSSH sshd",
            caps: OPENSSH,
            args,
            prefix: format!("{}:", sshd.destination()),
            remote_root: canonical(root.path()),
            root,
            sshd: Some(sshd),
            daemon: None,
        })
    }

    /// OpenSSH's `sftp-server`, run by `sftpipe -D`.
    pub fn openssh_sftp_server() -> Option<Server> {
        Some(Server::local_command(
            "OpenSSH sftp-server (-D)",
            OPENSSH,
            &sftp_server_path(),
        ))
    }

    /// gesftpserver (Green End SFTP Server), run by `sftpipe -D`.
    pub fn gesftpserver() -> Option<Server> {
        if !Path::new(GESFTPSERVER).exists() {
            return unavailable(GESFTPSERVER, "gesftpserver");
        }
        let caps = Capabilities {
            limits: false,
            ..OPENSSH
        };
        Some(Server::local_command(
            "gesftpserver (-D)",
            caps,
            Path::new(GESFTPSERVER),
        ))
    }

    fn local_command(name: &'static str, caps: Capabilities, program: &Path) -> Server {
        let root = tmpfs_tempdir("sftpipe-interop-");
        Server {
            name,
            caps,
            args: vec!["-D".to_string(), program.display().to_string()],
            prefix: ":".to_string(),
            remote_root: canonical(root.path()),
            root,
            sshd: None,
            daemon: None,
        }
    }

    /// A paramiko `SFTPServerInterface` over a directory (`tests/servers/paramiko_server.py`).
    pub fn paramiko() -> Option<Server> {
        let python = interop_python("paramiko")?;
        let caps = Capabilities {
            posix_rename: false,
            statvfs: false,
            hardlink: false,
            limits: false,
            ..OPENSSH
        };
        Some(Server::python(
            "paramiko",
            caps,
            &python,
            "paramiko_server.py",
            "--authorized-key",
        ))
    }

    /// asyncssh's `SFTPServer`, chrooted to a directory (`tests/servers/asyncssh_server.py`).
    pub fn asyncssh() -> Option<Server> {
        let python = interop_python("asyncssh")?;
        let caps = Capabilities {
            readlink: Readlink::Refused,
            ..OPENSSH
        };
        Some(Server::python(
            "asyncssh",
            caps,
            &python,
            "asyncssh_server.py",
            "--authorized-keys",
        ))
    }

    /// Starts a Python server script that binds a free port and writes it to a file.
    fn python(
        name: &'static str,
        caps: Capabilities,
        python: &Path,
        script: &str,
        authorized_flag: &str,
    ) -> Server {
        let root = tmpfs_tempdir("sftpipe-interop-");
        let dir = private_dir(name);
        let d = dir.path().to_path_buf();
        keygen(&d.join("host_key"));
        keygen(&d.join("id_ed25519"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/servers")
            .join(script);
        let port_file = d.join("port");
        let log = d.join("server.log");
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .arg("--host-key")
            .arg(d.join("host_key"))
            .arg(authorized_flag)
            .arg(d.join("id_ed25519.pub"))
            .arg("--root")
            .arg(root.path())
            .arg("--port-file")
            .arg(&port_file);
        let child = spawn_logged(&mut cmd, &log);
        let mut daemon = Daemon {
            dir,
            log,
            child: Some(child),
            port: 0,
        };
        daemon.port = daemon.wait_for_port_file(name, &port_file);
        Server {
            name,
            caps,
            args: ssh_args(daemon.port, &d.join("id_ed25519")),
            prefix: "127.0.0.1:".to_string(),
            remote_root: "/".to_string(),
            root,
            sshd: None,
            daemon: Some(daemon),
        }
    }

    /// ProFTPD with mod_sftp, in the foreground, logged in as root with a key converted to
    /// RFC 4716 for `SFTPAuthorizedUserKeys`.
    pub fn proftpd() -> Option<Server> {
        if !Path::new(PROFTPD).exists() || !Path::new(PROFTPD_SFTP_MODULE).exists() {
            return unavailable("ProFTPD with mod_sftp", "proftpd-core proftpd-mod-crypto");
        }
        let root = tmpfs_tempdir("sftpipe-interop-proftpd-");
        let dir = private_dir("proftpd");
        let d = dir.path().to_path_buf();
        keygen(&d.join("host_key"));
        keygen(&d.join("id_ed25519"));
        let rfc4716 = super::run_ok(
            Command::new("ssh-keygen")
                .arg("-e")
                .arg("-f")
                .arg(d.join("id_ed25519.pub")),
        );
        fs::write(d.join("authorized_keys.rfc4716"), &rfc4716.stdout)
            .unwrap_or_else(|e| panic!("write the ProFTPD user key: {e}"));
        let log = d.join("proftpd.out");
        let mut daemon = Daemon {
            dir,
            log,
            child: None,
            port: 0,
        };
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            match daemon.try_proftpd(port) {
                Ok(()) => {
                    return Some(Server {
                        name: "ProFTPD mod_sftp",
                        caps: Capabilities {
                            limits: false,
                            readlink: Readlink::Resolved,
                            lstat_follows: true,
                            ..OPENSSH
                        },
                        args: ssh_args(port, &d.join("id_ed25519")),
                        prefix: "127.0.0.1:".to_string(),
                        remote_root: canonical(root.path()),
                        root,
                        sshd: None,
                        daemon: Some(daemon),
                    });
                }
                Err(why) => {
                    failures.push_str(&format!("attempt {attempt} on port {port}: {why}\n"))
                }
            }
        }
        panic!(
            "ProFTPD did not start after {START_ATTEMPTS} attempts:\n{failures}--- its log ---\n{}",
            daemon.log()
        );
    }

    /// The served directory on this machine.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// `rel` under the served directory, on this machine.
    pub fn local(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// `rel` under the served directory, as the server names it.
    pub fn remote_path(&self, rel: &str) -> String {
        let base = self.remote_root.trim_end_matches('/');
        if rel.is_empty() {
            return if base.is_empty() {
                "/".into()
            } else {
                base.into()
            };
        }
        format!("{base}/{rel}")
    }

    /// The remote operand for `rel` under the served directory.
    pub fn remote(&self, rel: &str) -> String {
        format!("{}{}", self.prefix, self.remote_path(rel))
    }

    /// Runs `sftpipe OPTIONS ARGS` against this server, in the served directory (the
    /// working directory of a `-D` server: what it makes of a relative path lands there).
    pub fn sftpipe<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        Command::new(sftpipe_bin())
            .args(&self.args)
            .args(args)
            .current_dir(self.root.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", sftpipe_bin().display()))
    }

    /// The server's log so far (empty for `-D` servers, whose stderr sftpipe logs).
    pub fn log(&self) -> String {
        match (&self.sshd, &self.daemon) {
            (Some(s), _) => s.log(),
            (_, Some(d)) => d.log(),
            _ => String::new(),
        }
    }

    /// A command's outcome and the tail of the server's log, for a failure message.
    ///
    /// `--progress=json` lines of files that went well are left out of stdout.
    pub fn explain(&self, out: &Output) -> String {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stdout: Vec<&str> = stdout
            .lines()
            .filter(|l| !l.contains(r#""ok":true"#))
            .collect();
        format!(
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- {} log (tail) ---\n{}",
            out.status,
            last_lines(&stdout.join("\n"), 30),
            last_lines(&String::from_utf8_lossy(&out.stderr), 30),
            self.name,
            last_lines(&self.log(), 15),
        )
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// OpenSSH 9's sftp-server: every extension sftpipe uses.
const OPENSSH: Capabilities = Capabilities {
    posix_rename: true,
    statvfs: true,
    hardlink: true,
    limits: true,
    newline_names: true,
    readlink: Readlink::Stored,
    lstat_follows: false,
};

const PROFTPD_SFTP_MODULE: &str = "/usr/lib/proftpd/mod_sftp.so";

/// A skipped server: a NOTICE locally, a failure under CI (where everything must run).
fn unavailable<T>(what: &str, packages: &str) -> Option<T> {
    let msg = format!(
        "{what} is not installed (contrib/test.sh installs it: {packages}); \
         skipping its interoperability test"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: {msg}");
    }
    eprintln!("NOTICE: {msg}");
    None
}

/// The Python that can import `module`: `$SFTPIPE_TEST_PYTHON`, else the venv
/// contrib/test.sh creates in `~/.cache/sftpipe/interop-venv`.
fn interop_python(module: &str) -> Option<PathBuf> {
    let python = match std::env::var_os(PYTHON_ENV) {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/sftpipe/interop-venv/bin/python3")
        }
    };
    let imports = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if imports {
        return Some(python);
    }
    unavailable(
        &format!("{module} (for {})", python.display()),
        &format!("a venv with pip install {module}; set {PYTHON_ENV}"),
    )
}

/// How a server that serves the whole file system names `path` (its realpath answer).
fn canonical(path: &Path) -> String {
    fs::canonicalize(path)
        .unwrap_or_else(|e| panic!("realpath {}: {e}", path.display()))
        .display()
        .to_string()
}

fn ssh_args(port: u16, key: &Path) -> Vec<String> {
    let mut v = vec!["-F".to_string(), "/dev/null".to_string()];
    v.extend(sftp_client_args(port, key));
    v
}

fn private_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("sftpipe-{name}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("create a directory for {name}: {e}"))
}

/// Spawns `cmd` with stdout and stderr appended to `log`.
fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let open = || {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()))
    };
    cmd.stdin(Stdio::null())
        .stdout(open())
        .stderr(open())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// A server process of ours, killed (with the sessions it forked) on drop.
struct Daemon {
    /// Keys, configuration, pid and log files.
    dir: tempfile::TempDir,
    log: PathBuf,
    child: Option<Child>,
    port: u16,
}

impl Daemon {
    fn log(&self) -> String {
        let mut text = fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(no log: {e})"));
        // ProFTPD's own logs, when it ran.
        for extra in ["proftpd.log", "sftp.log"] {
            if let Ok(b) = fs::read(self.dir.path().join(extra)) {
                text.push_str(&format!("--- {extra} ---\n{}", String::from_utf8_lossy(&b)));
            }
        }
        text
    }

    /// Waits until the script wrote its port and accepts connections there.
    fn wait_for_port_file(&mut self, name: &str, port_file: &Path) -> u16 {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(port)) = fs::read_to_string(port_file)
                .ok()
                .map(|s| s.trim().parse::<u16>())
                && accepts(port)
            {
                return port;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "{name} server did not start ({}):\n{}",
                    exited.map_or_else(
                        || format!("no port after {START_TIMEOUT:?}"),
                        |s| s.to_string()
                    ),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes ProFTPD's configuration for `port`, starts it and waits until it listens.
    fn try_proftpd(&mut self, port: u16) -> Result<(), String> {
        let d = self.dir.path();
        let config = d.join("proftpd.conf");
        fs::write(&config, proftpd_config(d, port)).map_err(|e| format!("write config: {e}"))?;
        let mut child = spawn_logged(
            Command::new(PROFTPD).arg("-n").arg("-c").arg(&config),
            &self.log,
        );
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("proftpd exited early with {status}"));
            }
            // The pid file proves it is *our* ProFTPD on the port, the connect that it accepts.
            if d.join("proftpd.pid").exists() && accepts(port) {
                self.child = Some(child);
                self.port = port;
                return Ok(());
            }
            if Instant::now() > deadline {
                kill_tree(child);
                return Err(format!("not accepting connections after {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_tree(child);
        }
    }
}

fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A standalone ProFTPD serving only SFTP on 127.0.0.1:`port`, every file in `d`.
fn proftpd_config(d: &Path, port: u16) -> String {
    let p = |name: &str| d.join(name).display().to_string();
    format!(
        "ServerType standalone\n\
         DefaultServer on\n\
         Port 0\n\
         ModulePath /usr/lib/proftpd\n\
         LoadModule mod_sftp.c\n\
         PidFile {pid}\n\
         ScoreboardFile {scoreboard}\n\
         DelayTable none\n\
         WtmpLog off\n\
         TransferLog none\n\
         SystemLog {syslog}\n\
         UseIPv6 off\n\
         SocketBindTight on\n\
         User root\n\
         Group root\n\
         AuthOrder mod_auth_unix.c\n\
         <IfModule mod_auth_pam.c>\n  AuthPAM off\n</IfModule>\n\
         <VirtualHost 127.0.0.1>\n\
         \x20 Port {port}\n\
         \x20 SFTPEngine on\n\
         \x20 SFTPLog {sftplog}\n\
         \x20 SFTPHostKey {host_key}\n\
         \x20 SFTPAuthorizedUserKeys file:{user_keys}\n\
         \x20 SFTPAuthMethods publickey\n\
         \x20 RootLogin on\n\
         \x20 UseFtpUsers off\n\
         \x20 RequireValidShell off\n\
         \x20 AllowOverwrite on\n\
         </VirtualHost>\n",
        pid = p("proftpd.pid"),
        scoreboard = p("proftpd.scoreboard"),
        syslog = p("proftpd.log"),
        sftplog = p("sftp.log"),
        host_key = p("host_key"),
        user_keys = p("authorized_keys.rfc4716"),
    )
}
