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

/// A private directory (mode 0700) holding the master's control socket, removed with
/// everything in it on drop.
#[derive(Debug)]
pub struct ControlDir {
    path: PathBuf,
}

impl ControlDir {
    /// Makes `sftpipe-cm.XXXXXX` under `$XDG_RUNTIME_DIR`, else `$TMPDIR`, else `/tmp`
    /// (a socket path must stay under about 100 bytes).
    pub fn create() -> Result<ControlDir> {
        let base = ["XDG_RUNTIME_DIR", "TMPDIR"]
            .iter()
            .filter_map(std::env::var_os)
            .map(PathBuf::from)
            .find(|p| p.is_absolute() && p.is_dir() && p.as_os_str().len() < 80)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let template = base.join("sftpipe-cm.XXXXXX");
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
