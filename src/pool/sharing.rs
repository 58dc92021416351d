//! One ssh connection for many channels: OpenSSH's connection multiplexing.
//!
//! The first channel's `ssh` becomes the master (`ControlMaster=yes`) with its socket in a
//! private 0700 directory that sftpipe makes and removes; every further channel's `ssh`
//! attaches to it (`ControlMaster=no`), so the user authenticates once. An attaching `ssh`
//! whose master is gone, or whose session the server refused (`MaxSessions`), would quietly
//! open a connection of its own: `ProxyCommand=false` makes that fail instead (the
//! multiplexed path never runs a proxy command), and `BatchMode=yes` makes sure nothing
//! asks for a password a second time.
//!
//! When the user's own configuration already shares connections (`ssh -G` shows a
//! `ControlPath` and a `ControlMaster` other than `no`), it is used as it is: every
//! channel's `ssh` then finds (or becomes) the user's master.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::transport::{ConnectOptions, Resolved};

/// How a session's channels reach the server.
#[derive(Debug)]
pub enum Sharing {
    /// Each channel its own process: `-D` server commands, `-S` programs that are not
    /// OpenSSH's ssh (`-V` tells), or `--separate-connections`.
    Separate,
    /// The user's configuration shares connections already.
    UserConfigured,
    /// Our own master socket in a private directory.
    Own(ControlDir),
}

impl Sharing {
    /// Decides how channels of `options` (resolved as `resolved`) share a connection.
    pub fn choose(options: &ConnectOptions, resolved: &Resolved) -> Result<Sharing> {
        if !resolved.openssh {
            return Ok(Sharing::Separate);
        }
        if options.separate_connections || options.max_connections() == 1 {
            return Ok(Sharing::Separate);
        }
        let master = resolved.config_value("controlmaster");
        let path = resolved.config_value("controlpath");
        if path.is_some_and(|p| p != "none") && master.is_some_and(|m| m != "false" && m != "no") {
            log::debug!("ssh's configuration shares connections: using it");
            return Ok(Sharing::UserConfigured);
        }
        Ok(Sharing::Own(ControlDir::create()?))
    }

    /// ssh options for the first channel's ssh.
    pub fn master_options(&self) -> Vec<String> {
        match self {
            Sharing::Own(dir) => vec![
                "-oControlMaster=yes".into(),
                format!("-oControlPath={}", dir.socket().display()),
                "-oControlPersist=no".into(),
            ],
            _ => Vec::new(),
        }
    }

    /// ssh options for every further channel's ssh.
    pub fn attach_options(&self) -> Vec<String> {
        match self {
            Sharing::Own(dir) => vec![
                "-oControlMaster=no".into(),
                format!("-oControlPath={}", dir.socket().display()),
                "-oBatchMode=yes".into(),
                "-oProxyCommand=false".into(),
            ],
            Sharing::UserConfigured => {
                vec!["-oBatchMode=yes".into(), "-oProxyCommand=false".into()]
            }
            Sharing::Separate => Vec::new(),
        }
    }

    /// A word for logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Sharing::Separate => "separate connections",
            Sharing::UserConfigured => "the connection sharing of ssh's configuration",
            Sharing::Own(_) => "one shared ssh connection",
        }
    }
}

/// The name of a control directory starts with this.
const PREFIX: &str = "sftpipe-cm.";

/// A control directory without a socket is taken as abandoned after this long (its run
/// may still be asking for a password before then).
const ABANDONED: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Removes the control directories a killed run (SIGKILL, a crash) left in `base`: ours
/// (same owner) whose socket no longer answers, or that never got one.
fn sweep(base: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let uid = nix::unistd::Uid::effective().as_raw();
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid {
            continue;
        }
        let socket = path.join("s");
        let stale = match std::os::unix::net::UnixStream::connect(&socket) {
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => true,
            Err(_) => meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > ABANDONED),
        };
        if stale && std::fs::remove_dir_all(&path).is_ok() {
            log::debug!("removed a stale control directory {}", path.display());
        }
    }
}

/// A private directory (mode 0700) holding the master's control socket, removed with
/// everything in it on drop.
#[derive(Debug)]
pub struct ControlDir {
    path: PathBuf,
}

impl ControlDir {
    /// Makes `sftpipe-cm.XXXXXX` under `$XDG_RUNTIME_DIR`, else `$TMPDIR`, else `/tmp`
    /// (a socket path must stay under about 100 bytes), after removing stale ones a
    /// killed run left there.
    pub fn create() -> Result<ControlDir> {
        let base = ["XDG_RUNTIME_DIR", "TMPDIR"]
            .iter()
            .filter_map(std::env::var_os)
            .map(PathBuf::from)
            .find(|p| p.is_absolute() && p.is_dir() && p.as_os_str().len() < 80)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        sweep(&base);
        let template = base.join(format!("{PREFIX}XXXXXX"));
        // mkdtemp makes it 0700.
        let path = nix::unistd::mkdtemp(&template).map_err(|e| {
            Error::local(
                format!("cannot create a directory under {}", base.display()),
                std::io::Error::from(e),
            )
        })?;
        log::debug!("control socket directory {}", path.display());
        Ok(ControlDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The master's socket.
    pub fn socket(&self) -> PathBuf {
        self.path.join("s")
    }
}

impl Drop for ControlDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::warn!(
                "could not remove {}: {}",
                self.path.display(),
                crate::error::plain_io(&e)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeping_removes_dead_sockets_only() {
        let base = std::env::temp_dir().join(format!("sweep-test-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let dead = base.join(format!("{PREFIX}dead"));
        let live = base.join(format!("{PREFIX}live"));
        let young = base.join(format!("{PREFIX}young"));
        for d in [&dead, &live, &young] {
            std::fs::create_dir(d).unwrap();
        }
        drop(std::os::unix::net::UnixListener::bind(dead.join("s")).unwrap());
        let _listener = std::os::unix::net::UnixListener::bind(live.join("s")).unwrap();
        sweep(&base);
        assert!(!dead.exists());
        assert!(live.exists());
        // No socket yet: its run may be asking for a password.
        assert!(young.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn control_dir_is_private_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = ControlDir::create().unwrap();
        let path = dir.path().to_path_buf();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::write(dir.socket(), b"x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }
}
