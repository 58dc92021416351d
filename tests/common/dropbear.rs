//! A throwaway Dropbear server on 127.0.0.1 without SFTP, as on embedded hosts.
//!
//! Dropbear takes the client key from `~/.ssh/authorized_keys` of the user and runs
//! `/usr/lib/sftp-server` (its build-time `SFTPSERVER_PATH`) for the SFTP subsystem,
//! whatever is there. So it runs in a private mount namespace (`unshare -m`, as root)
//! where a temporary directory with the key hides root's home, and an empty directory
//! hides the one holding the sftp-server program: the shell then cannot find it, as on
//! a host that has none. Nothing changes outside that namespace.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{keygen, kill_tree, run_ok, sftp_client_args};

/// The Dropbear server binary (Debian's dropbear-bin).
pub const DROPBEAR: &str = "/usr/sbin/dropbear";
/// Where Dropbear looks for the SFTP server program.
const DROPBEAR_SFTP_SERVER: &str = "/usr/lib/sftp-server";

/// A Dropbear server for root, alive until dropped.
pub struct Dropbear {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

/// True when Dropbear and `unshare` are there (else the notice says why a test skipped).
pub fn dropbear_available() -> bool {
    let ok = Path::new(DROPBEAR).exists() && Path::new("/usr/bin/unshare").exists();
    if !ok {
        eprintln!("NOTICE: {DROPBEAR} or unshare missing; skipping (apt-get install dropbear-bin)");
    }
    ok
}

impl Dropbear {
    /// Starts the server (retrying on another port if one was taken meanwhile).
    pub fn start() -> Dropbear {
        let dir = tempfile::Builder::new()
            .prefix("sftpipe-dropbear-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        run_ok(
            Command::new("dropbearkey")
                .args(["-t", "ed25519", "-f"])
                .arg(d.join("host_key"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        keygen(&d.join("id_ed25519"));
        let home = d.join("home");
        fs::create_dir_all(home.join(".ssh")).expect("mkdir home");
        fs::copy(d.join("id_ed25519.pub"), home.join(".ssh/authorized_keys"))
            .expect("authorized_keys");
        for (p, mode) in [(&home, 0o700), (&home.join(".ssh"), 0o700)] {
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
        }
        fs::create_dir_all(d.join("empty")).expect("mkdir empty");
        let mut db = Dropbear {
            dir,
            port: 0,
            child: None,
        };
        let mut failures = String::new();
        for attempt in 1..=5 {
            let port = super::free_port();
            match db.try_spawn(port) {
                Ok(child) => {
                    db.port = port;
                    db.child = Some(child);
                    return db;
                }
                Err(why) => {
                    failures.push_str(&format!("attempt {attempt} on port {port}: {why}\n"))
                }
            }
        }
        panic!(
            "dropbear did not start:\n{failures}--- log ---\n{}",
            db.log()
        );
    }

    /// The mounts that hide root's home and the sftp-server, then Dropbear in the
    /// foreground, logging to stderr.
    fn try_spawn(&self, port: u16) -> Result<Child, String> {
        let d = self.dir.path();
        let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
        let root_home = root_home();
        let mut script = format!(
            "mount --bind {} {} && ",
            quote(&d.join("home")),
            quote(&root_home)
        );
        // Its directory (usually /usr/lib/openssh, through a link) vanishes; a program
        // directly in /usr/lib is replaced by an empty file instead.
        let server = fs::canonicalize(DROPBEAR_SFTP_SERVER).ok();
        match server.as_ref().and_then(|s| s.parent()) {
            Some(parent) if parent != Path::new("/usr/lib") && parent != Path::new("/") => {
                script.push_str(&format!(
                    "mount --bind {} {} && ",
                    quote(&d.join("empty")),
                    quote(parent)
                ));
            }
            Some(_) => {
                let blank = d.join("blank");
                fs::write(&blank, "").map_err(|e| e.to_string())?;
                script.push_str(&format!(
                    "mount --bind {} {} && ",
                    quote(&blank),
                    quote(Path::new(DROPBEAR_SFTP_SERVER))
                ));
            }
            None => {}
        }
        script.push_str(&format!(
            "exec {DROPBEAR} -F -E -s -p 127.0.0.1:{port} -r {} -P {}",
            quote(&d.join("host_key")),
            quote(&d.join("dropbear.pid"))
        ));
        let log = fs::File::create(self.log_path()).map_err(|e| e.to_string())?;
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn unshare: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("dropbear exited early with {status}"));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("not listening after 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// sftpipe's options to reach it: `-P PORT -i KEY -o ...`.
    pub fn sftpipe_args(&self) -> Vec<String> {
        sftp_client_args(self.port, &self.key_path())
    }

    /// The client's private key.
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("dropbear.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Dropbear {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_tree(child);
        }
    }
}

/// root's home directory from the password database.
fn root_home() -> PathBuf {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"root"))
                .then(|| PathBuf::from(f.get(5).copied().unwrap_or("/root")))
        })
        .unwrap_or_else(|| PathBuf::from("/root"))
}
