//! Starting the server end: `ssh [options] -s -- HOST sftp`, or a local server command
//! (`-D`, e.g. `/usr/lib/openssh/sftp-server`) speaking SFTP on its stdio.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::reactor::ChildPipes;

/// Options that ride along to `ssh` hardening every connection; they come after the
/// user's options because ssh keeps the first value it sees, so the user can override.
pub const HARDENING_OPTIONS: [&str; 4] = [
    "-oForwardX11=no",
    "-oForwardAgent=no",
    "-oClearAllForwardings=yes",
    "-oPermitLocalCommand=no",
];

/// How to reach the server. Field names follow OpenSSH `sftp`'s letters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The host (`-` prefixed names are refused). Not needed with `server_command`.
    pub host: Option<String>,
    /// `-l`: remote user (also given as `user@host`).
    pub user: Option<String>,
    /// `-P`: port.
    pub port: Option<u16>,
    /// `-F`: ssh configuration file.
    pub config_file: Option<PathBuf>,
    /// `-i`: identity files.
    pub identities: Vec<PathBuf>,
    /// `-o`: ssh options, in order.
    pub ssh_options: Vec<String>,
    /// `-J`: jump host(s).
    pub jump: Option<String>,
    /// `-S`: the ssh program (default `ssh`).
    pub ssh_program: Option<String>,
    /// `-D`: a local command speaking SFTP on its stdio, run instead of ssh; split on
    /// white space like OpenSSH's `sftp -D`.
    pub server_command: Option<String>,
    /// Requests sent right behind INIT and answered with the handshake (see
    /// [`crate::Sftp::handshake_prefetching`]): what the first operation looks at.
    pub prefetch: crate::Prefetch,
}

impl ConnectOptions {
    /// Options for `host` with defaults.
    pub fn host(host: impl Into<String>) -> Self {
        ConnectOptions {
            host: Some(host.into()),
            ..Default::default()
        }
    }

    /// Options running a local server command instead of ssh.
    pub fn local_server(command: impl Into<String>) -> Self {
        ConnectOptions {
            server_command: Some(command.into()),
            ..Default::default()
        }
    }

    /// The program and arguments to run, without running them.
    pub fn command_line(&self) -> Result<(String, Vec<String>)> {
        if let Some(cmd) = &self.server_command {
            let mut words = cmd.split_whitespace().map(str::to_string);
            let program = words
                .next()
                .ok_or_else(|| Error::InvalidInput("empty server command (-D)".into()))?;
            return Ok((program, words.collect()));
        }
        let host = self
            .host
            .as_deref()
            .ok_or_else(|| Error::InvalidInput("no host given".into()))?;
        check_host(host)?;
        if let Some(user) = &self.user {
            check_word("user", user)?;
        }
        if let Some(jump) = &self.jump {
            check_word("jump host", jump)?;
        }
        let mut args = Vec::new();
        if let Some(f) = &self.config_file {
            args.push("-F".to_string());
            args.push(f.to_string_lossy().into_owned());
        }
        for o in &self.ssh_options {
            args.push("-o".to_string());
            args.push(o.clone());
        }
        for i in &self.identities {
            args.push("-i".to_string());
            args.push(i.to_string_lossy().into_owned());
        }
        if let Some(p) = self.port {
            args.push("-p".to_string());
            args.push(p.to_string());
        }
        if let Some(u) = &self.user {
            args.push("-l".to_string());
            args.push(u.clone());
        }
        if let Some(j) = &self.jump {
            args.push("-J".to_string());
            args.push(j.clone());
        }
        args.extend(HARDENING_OPTIONS.iter().map(|s| s.to_string()));
        args.push("-s".to_string());
        args.push("--".to_string());
        args.push(host.to_string());
        args.push("sftp".to_string());
        let program = self
            .ssh_program
            .clone()
            .unwrap_or_else(|| "ssh".to_string());
        Ok((program, args))
    }

    /// A short name for messages: "ssh to HOST" or the server command.
    pub fn label(&self) -> String {
        match (&self.server_command, &self.host) {
            (Some(cmd), _) => format!("server command '{cmd}'"),
            (None, Some(h)) => match &self.user {
                Some(u) => format!("ssh to {u}@{h}"),
                None => format!("ssh to {h}"),
            },
            (None, None) => "ssh".to_string(),
        }
    }

    /// Starts the child with stdin, stdout and stderr piped. stdin/stdout carry SFTP; the
    /// controlling terminal stays reachable, so ssh can still ask for a password or a
    /// host-key confirmation on `/dev/tty`.
    pub fn spawn(&self) -> Result<ChildPipes> {
        let (program, args) = self.command_line()?;
        log::debug!("running {program} {}", args.join(" "));
        let (ours, theirs) = UnixStream::pair()
            .map_err(|e| Error::local("cannot create a socketpair for the child", e))?;
        let theirs_out = theirs
            .try_clone()
            .map_err(|e| Error::local("cannot duplicate a socket", e))?;
        let child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(OwnedFd::from(theirs_out)))
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                program: program.clone(),
                source,
            })?;
        Ok(ChildPipes {
            child,
            sock: ours,
            label: self.label(),
        })
    }
}

/// Refuses a host that ssh would read as an option (`-oProxyCommand=...`) or that is empty.
pub fn check_host(host: &str) -> Result<()> {
    if host.is_empty() {
        return Err(Error::InvalidInput("empty host name".into()));
    }
    check_word("host", host)
}

fn check_word(what: &str, v: &str) -> Result<()> {
    if v.starts_with('-') {
        return Err(Error::InvalidInput(format!(
            "refusing {what} '{v}': it starts with '-' and would be read as an ssh option"
        )));
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::InvalidInput(format!(
            "refusing {what} '{}': it contains white space or control characters",
            v.escape_default()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_options_come_before_hardening_and_host_after_double_dash() {
        let o = ConnectOptions {
            host: Some("example.org".into()),
            user: Some("bob".into()),
            port: Some(2222),
            ssh_options: vec!["ForwardAgent=yes".into()],
            identities: vec!["/k".into()],
            config_file: Some("/cfg".into()),
            jump: Some("gw".into()),
            ..Default::default()
        };
        let (prog, args) = o.command_line().unwrap();
        assert_eq!(prog, "ssh");
        let user_opt = args.iter().position(|a| a == "ForwardAgent=yes").unwrap();
        let hardening = args.iter().position(|a| a == "-oForwardAgent=no").unwrap();
        assert!(user_opt < hardening);
        assert_eq!(&args[args.len() - 4..], ["-s", "--", "example.org", "sftp"]);
        assert_eq!(&args[..2], ["-F", "/cfg"]);
        assert!(args.windows(2).any(|w| w == ["-p", "2222"]));
        assert!(args.windows(2).any(|w| w == ["-l", "bob"]));
        assert!(args.windows(2).any(|w| w == ["-J", "gw"]));
    }

    #[test]
    fn option_like_hosts_are_refused() {
        for h in ["-oProxyCommand=touch /tmp/pwned", "-v", "", "a b"] {
            let o = ConnectOptions::host(h);
            assert!(
                matches!(o.command_line(), Err(Error::InvalidInput(_))),
                "{h}"
            );
        }
        let o = ConnectOptions {
            host: Some("h".into()),
            user: Some("-x".into()),
            ..Default::default()
        };
        assert!(o.command_line().is_err());
    }

    #[test]
    fn server_command_is_split_on_white_space() {
        let o = ConnectOptions::local_server("/usr/lib/openssh/sftp-server -e -l debug");
        let (p, a) = o.command_line().unwrap();
        assert_eq!(p, "/usr/lib/openssh/sftp-server");
        assert_eq!(a, ["-e", "-l", "debug"]);
    }
}
