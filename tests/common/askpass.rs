//! Password logins for the tests: a throwaway account with a password, an sshd that accepts
//! only passwords for it, and a counting `SSH_ASKPASS` program, so a test can prove how many
//! times a client asked (one prompt for all the channels of a session).

use super::{Sshd, ensure_user, write_script};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The account that logs in with a password (not [`super::TEST_USER`]: its password field
/// stays as it is for the key-only tests).
pub const PASSWORD_USER: &str = "sftpipepw";

/// Where the account's random password is kept (root only) so that every test binary, run
/// in parallel, sets and uses the same one.
const PASSWORD_FILE: &str = "/tmp/.sftpipe-test-password";

/// Creates [`PASSWORD_USER`] if needed, gives it its password and returns that password.
/// Race-safe across threads and test binaries (a lock file), like [`Sshd::start_as`].
pub fn password_user() -> String {
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/.sftpipe-test-password.lock")
        .expect("open password lock file");
    lock.lock().expect("lock password lock file");
    ensure_user(PASSWORD_USER);
    let password = match fs::read_to_string(PASSWORD_FILE) {
        Ok(p) if p.trim().len() >= 16 => p.trim().to_string(),
        _ => {
            let p = super::random_bytes(16, std::process::id() as u64 ^ now_nanos())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>();
            let mut f = fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(PASSWORD_FILE)
                .expect("create the password file");
            f.write_all(p.as_bytes()).expect("write the password file");
            p
        }
    };
    set_password(PASSWORD_USER, &password);
    password
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `chpasswd`, retried while another process holds /etc/shadow's lock.
fn set_password(user: &str, password: &str) {
    let mut last = String::new();
    for _ in 0..50 {
        let mut child = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run chpasswd");
        if let Some(mut stdin) = child.stdin.take() {
            writeln!(stdin, "{user}:{password}").expect("write to chpasswd");
        }
        let out = child.wait_with_output().expect("wait for chpasswd");
        if out.status.success() {
            return;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("chpasswd for {user} failed: {last}");
}

/// A test sshd on which [`PASSWORD_USER`] logs in with its password only (keys are not
/// accepted), plus `extra` config lines as in [`Sshd::start_with`]. Returns the password.
pub fn password_sshd(extra: &[&str]) -> (Sshd, String) {
    let password = password_user();
    let mut lines = vec![
        "PasswordAuthentication yes",
        "AuthenticationMethods password",
    ];
    lines.extend_from_slice(extra);
    (Sshd::start_as_with(PASSWORD_USER, &lines), password)
}

/// Client options for a password login to `sshd` (`-p PORT` for `ssh`): like
/// [`Sshd::ssh_args`] but interactive authentication allowed, password only, one try.
pub fn password_ssh_args(sshd: &Sshd) -> Vec<String> {
    let mut v = vec!["-p".to_string(), sshd.port().to_string()];
    v.extend(password_options());
    v
}

/// The same with `-P PORT`, for `sftp` and `sftpipe`.
pub fn password_client_args(sshd: &Sshd) -> Vec<String> {
    let mut v = vec!["-P".to_string(), sshd.port().to_string()];
    v.extend(password_options());
    v
}

fn password_options() -> Vec<String> {
    [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "LogLevel=ERROR",
        "BatchMode=no",
        "PubkeyAuthentication=no",
        "PreferredAuthentications=password",
        "NumberOfPasswordPrompts=1",
    ]
    .iter()
    .flat_map(|o| ["-o".to_string(), o.to_string()])
    .collect()
}

/// An `SSH_ASKPASS` program that answers every prompt with a password and appends the
/// prompt to a log, one line each: [`Askpass::count`] is how many times it was asked.
pub struct Askpass {
    script: PathBuf,
    log: PathBuf,
}

impl Askpass {
    /// Writes the program into `dir` (a path without single quotes); `password` must be
    /// printable without quoting (the one of [`password_user`] is hex).
    pub fn new(dir: &Path, password: &str) -> Askpass {
        assert!(
            password.chars().all(|c| c.is_ascii_alphanumeric()),
            "askpass password must be alphanumeric"
        );
        let script = dir.join("counting-askpass");
        let log = dir.join("askpass.log");
        super::write_file(&log, b"");
        write_script(
            &script,
            &format!(
                "printf '%s\\n' \"$*\" | tr -d '\\r' >> '{}'\nprintf '%s\\n' '{password}'",
                log.display()
            ),
        );
        fs::set_permissions(&script, fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", script.display()));
        Askpass { script, log }
    }

    /// The program, for `SSH_ASKPASS`.
    pub fn program(&self) -> &Path {
        &self.script
    }

    /// `program ARGS...` set up to ask this program only: run through `setsid -w` (no
    /// controlling terminal), stdin from /dev/null, `SSH_ASKPASS` and
    /// `SSH_ASKPASS_REQUIRE=force` set, no agent. The caller adds the arguments.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("setsid");
        cmd.arg("-w")
            .arg(program)
            .env("SSH_ASKPASS", &self.script)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// The prompts answered so far, oldest first.
    pub fn prompts(&self) -> Vec<String> {
        String::from_utf8_lossy(&super::read_file(&self.log))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// How many times the program was asked.
    pub fn count(&self) -> usize {
        self.prompts().len()
    }
}
