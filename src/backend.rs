//! The protocol under `get` and `put`: SFTP ([`Session`]) or the legacy scp protocol
//! ([`Scp`]), chosen by [`ConnectOptions::transport`]. A third backend is one more
//! variant here, one more arm in [`Backend::connect`], and its own transfer module.

use crate::error::{ConnectionError, Error, Result};
use crate::scp::Scp;
use crate::session::Session;
use crate::transport::{ConnectOptions, Transport};

/// A connected server, through whichever protocol it speaks.
pub enum Backend {
    /// SFTP: every operation.
    Sftp(Session),
    /// scp: file and tree transfers only.
    Scp(Scp),
}

impl Backend {
    /// Connects as `opts.transport` says. With [`Transport::Auto`], a server without
    /// SFTP (see [`no_sftp`]) is used through scp, and that is said once on stderr:
    /// `no SFTP on HOST; using scp protocol`.
    pub fn connect(opts: &ConnectOptions) -> Result<Backend> {
        match opts.transport {
            Transport::Scp => Ok(Backend::Scp(Scp::new(opts.clone()))),
            Transport::Sftp => Ok(Backend::Sftp(Session::connect(opts)?)),
            Transport::Auto => match Session::connect(opts) {
                Ok(s) => Ok(Backend::Sftp(s)),
                Err(Error::Connection(c)) if opts.server_command.is_none() && no_sftp(&c) => {
                    log::debug!("SFTP refused: {c}");
                    eprintln!("no SFTP on {}; using scp protocol", opts.peer());
                    Ok(Backend::Scp(Scp::new(opts.clone())))
                }
                Err(e) => Err(e),
            },
        }
    }
}

/// The error for an operation that needs SFTP on a server reached through scp.
pub fn needs_sftp(what: &str, opts: &ConnectOptions) -> Error {
    Error::Unsupported(format!(
        "{what} needs SFTP, and {} is reached through the scp protocol (only get and put of \
         files and trees work over scp{})",
        opts.peer(),
        if opts.transport == Transport::Scp {
            "; drop --scp"
        } else {
            ": the server has no SFTP subsystem"
        }
    ))
}

/// True when a connection that ended before the server's VERSION ended because the
/// server has no SFTP: OpenSSH's sshd refuses the subsystem ("subsystem request failed
/// on channel 0" from OpenSSH's ssh, which exits 255); Dropbear's server accepts it and
/// its shell cannot find the sftp-server program (ssh exits 127, the shell saying
/// "sftp-server: not found" or "No such file or directory"). Dropbear's client
/// (`-S dbclient`) does not end when the subsystem is refused: use `--scp` with it.
pub fn no_sftp(c: &ConnectionError) -> bool {
    if c.unreached.is_none() {
        return false;
    }
    let said = |needle: &str| c.stderr_tail.iter().any(|l| l.contains(needle));
    said("subsystem request failed")
        || c.reason.ends_with("exited with status 127")
        || (said("sftp-server") && (said("not found") || said("No such file")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(reason: &str, stderr: &[&str], reached: bool) -> ConnectionError {
        ConnectionError {
            reason: reason.into(),
            stderr_tail: stderr.iter().map(|s| s.to_string()).collect(),
            unreached: (!reached).then(|| "h".to_string()),
        }
    }

    #[test]
    fn only_a_missing_subsystem_counts() {
        let refused = ["subsystem request failed on channel 0"];
        assert!(no_sftp(&ended(
            "ssh to h exited with status 255",
            &refused,
            false
        )));
        assert!(no_sftp(&ended(
            "ssh to h exited with status 127",
            &[],
            false
        )));
        let dropbear = ["sh: /usr/libexec/sftp-server: not found"];
        assert!(no_sftp(&ended(
            "ssh to h exited with status 1",
            &dropbear,
            false
        )));
        let auth = ["root@h: Permission denied (publickey)."];
        assert!(!no_sftp(&ended(
            "ssh to h exited with status 255",
            &auth,
            false
        )));
        assert!(!no_sftp(&ended(
            "ssh to h exited with status 127",
            &[],
            true
        )));
    }
}
