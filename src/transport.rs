//! Starting the server end: `ssh [options] -s -- HOST sftp`, or a local server command
//! (`-D`, e.g. `/usr/lib/openssh/sftp-server`) speaking SFTP on its stdio.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

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

/// How long requests may wait with nothing at all from the server, unless
/// [`ConnectOptions::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest `ServerAliveInterval` sftpipe passes to ssh (OpenSSH's `ServerAliveCountMax`
/// of 3 then gives up on a silent server after 45 s).
const MAX_SERVER_ALIVE: u64 = 15;

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
    /// Leave ssh's cipher preference alone. Otherwise, when this CPU has AES instructions
    /// and nothing chose ciphers (neither `ssh_options` nor ssh's configuration files:
    /// `ssh -G` shows OpenSSH's built-in list), AES-GCM moves to the front of that list.
    /// OpenSSH puts ChaCha20-Poly1305 first, which is slower on such CPUs; on this
    /// project's loopback benchmark a 512 MiB upload took 17% less time with AES-GCM. Not
    /// done with `ssh_program`, which may not understand `-G`.
    pub keep_cipher_order: bool,
    /// How long requests in flight may go without a byte from the server before the
    /// session fails ("no answer from HOST for 60 s; giving up") and ssh is killed.
    /// `None`: [`DEFAULT_TIMEOUT`]; zero: wait forever. Only counts after the handshake
    /// (ssh may be asking for a password) and while replies are due: an idle session
    /// never times out. Unless zero, ssh also gets `-oServerAliveInterval` (a quarter of
    /// it, at most 15 s) when neither `ssh_options` nor ssh's configuration set one.
    pub timeout: Option<Duration>,
    /// The most SFTP channels a session opens (`--connections`); `None`:
    /// [`DEFAULT_CONNECTIONS`]; 1: one channel, as OpenSSH's sftp. Extra channels share the
    /// first one's ssh connection (see [`crate::pool`]) and are opened only when the work
    /// gains from them, unless [`ConnectOptions::eager_connections`].
    pub connections: Option<usize>,
    /// Open every channel at the start, and wait for them to be ready before the first
    /// operation, instead of adding them when the work gains from them.
    pub eager_connections: bool,
    /// Give each channel its own ssh connection (each authenticates) instead of sharing
    /// the first one's through OpenSSH's connection multiplexing.
    pub separate_connections: bool,
    /// Which protocol carries transfers (see [`Transport`]); only
    /// [`crate::backend::Backend::connect`] looks at it.
    pub transport: Transport,
}

/// Which file transfer protocol to speak over ssh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// SFTP, or the legacy scp protocol when the server has no SFTP subsystem.
    #[default]
    Auto,
    /// SFTP only.
    Sftp,
    /// The legacy scp protocol only (`scp -t` / `scp -f` run on the server).
    Scp,
}

/// Channels per session unless [`ConnectOptions::connections`] says otherwise.
pub const DEFAULT_CONNECTIONS: usize = 8;
/// The most channels sftpipe opens, whatever is asked.
pub const MAX_CONNECTIONS: usize = 64;

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

    /// The stall timeout in effect (see [`ConnectOptions::timeout`]); `None`: none.
    pub fn stall_timeout(&self) -> Option<Duration> {
        Some(self.timeout.unwrap_or(DEFAULT_TIMEOUT)).filter(|t| !t.is_zero())
    }

    /// The number of channels in effect (see [`ConnectOptions::connections`]).
    pub fn max_connections(&self) -> usize {
        self.connections
            .unwrap_or(DEFAULT_CONNECTIONS)
            .clamp(1, MAX_CONNECTIONS)
    }

    /// The `ServerAliveInterval` (seconds) that goes with the stall timeout: ssh checks
    /// the server is there a quarter of the timeout after it last heard from it, so with
    /// `ServerAliveCountMax` 3 it notices a dead link before the timeout does.
    fn server_alive_interval(&self) -> Option<u64> {
        let t = self.stall_timeout()?;
        Some((t.as_secs() / 4).clamp(1, MAX_SERVER_ALIVE))
    }

    /// The program and arguments to run, without running them.
    pub fn command_line(&self) -> Result<(String, Vec<String>)> {
        self.command_line_running(["-s", "sftp"])
    }

    /// The program and arguments that run `command` through the remote user's shell
    /// (`ssh [options] -T -- HOST COMMAND`, no terminal): the same options and hardening
    /// as [`ConnectOptions::command_line`]. `command` must be quoted for that shell.
    /// Refused with `server_command`, which speaks SFTP only.
    pub fn remote_command_line(&self, command: &str) -> Result<(String, Vec<String>)> {
        if self.server_command.is_some() {
            return Err(Error::InvalidInput(
                "a local server command (-D) speaks SFTP only: it cannot run remote commands"
                    .into(),
            ));
        }
        self.command_line_running(["-T", command])
    }

    /// [`ConnectOptions::remote_command_line`] with what
    /// [`ConnectOptions::resolved_command_line`] settles.
    pub fn resolved_remote_command_line(&self, command: &str) -> Result<(String, Vec<String>)> {
        let r = self.resolve_line(self.remote_command_line(command)?)?;
        Ok((r.program, r.args))
    }

    /// `[flag] -- HOST what` after the options: `-s sftp` (a subsystem) or `-T COMMAND`.
    fn command_line_running(&self, [flag, what]: [&str; 2]) -> Result<(String, Vec<String>)> {
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
        args.push(flag.to_string());
        args.push("--".to_string());
        args.push(host.to_string());
        args.push(what.to_string());
        let program = self
            .ssh_program
            .clone()
            .unwrap_or_else(|| "ssh".to_string());
        Ok((program, args))
    }

    /// [`ConnectOptions::command_line`] with the cipher preference (see
    /// [`ConnectOptions::keep_cipher_order`]) and `ServerAliveInterval` (see
    /// [`ConnectOptions::timeout`]) settled: this runs `ssh -G` (twice for the ciphers),
    /// which reads ssh's configuration but does not connect. Neither is done with
    /// `ssh_program`, which may not understand `-G`.
    pub fn resolved_command_line(&self) -> Result<(String, Vec<String>)> {
        let r = self.resolve()?;
        Ok((r.program, r.args))
    }

    /// [`ConnectOptions::resolved_command_line`], keeping the `ssh -G` output it read
    /// (for connection sharing, see [`crate::pool`]).
    pub fn resolve(&self) -> Result<Resolved> {
        self.resolve_line(self.command_line()?)
    }

    /// Settles the cipher order and `ServerAliveInterval` of a command line ending with
    /// `FLAG -- HOST WHAT`.
    fn resolve_line(&self, (program, mut args): (String, Vec<String>)) -> Result<Resolved> {
        if self.server_command.is_some() {
            return Ok(Resolved::plain(program, args));
        }
        // A `-S` program is handled as ssh only if it is OpenSSH's (or wraps it).
        if let Some(p) = &self.ssh_program
            && !is_openssh(p)
        {
            log::debug!("{p} is not OpenSSH's ssh: no ssh -G, no connection sharing");
            return Ok(Resolved::plain(program, args));
        }
        let reorder = !self.keep_cipher_order && cpu_has_aes() && self.ssh_program.is_none();
        if !self.keep_cipher_order && !reorder {
            log::debug!("no AES instructions on this CPU: keeping ssh's cipher order");
        }
        let alive = self.server_alive_interval();
        // command_line_running() ends with "FLAG -- HOST WHAT".
        let Some(host_at) = args.len().checked_sub(2) else {
            return Ok(Resolved::plain(program, args));
        };
        if !reorder && alive.is_none() && self.max_connections() == 1 {
            return Ok(Resolved {
                openssh: true,
                ..Resolved::plain(program, args)
            });
        }
        let host = args[host_at].clone();
        let mut effective: Vec<String> = args[..host_at - 2].to_vec();
        effective.extend(["-G".into(), "--".into(), host.clone()]);
        let builtin = ["-F", "/dev/null", "-G", "--", host.as_str()].map(String::from);
        let (effective, builtin) = ssh_g(&program, &effective, reorder.then_some(&builtin[..]));
        let mut extra = Vec::new();
        if let (Some(secs), Some(config)) = (alive, &effective) {
            if config_value(config, "serveraliveinterval").is_some_and(|v| v == "0") {
                extra.push(format!("-oServerAliveInterval={secs}"));
            } else {
                log::debug!("ServerAliveInterval is configured: keeping it");
            }
        }
        if let (Some(e), Some(b)) = (&effective, &builtin)
            && let Some(list) = aes_gcm_first(e, b)
        {
            log::debug!("preferring AES-GCM: Ciphers={list}");
            extra.push(format!("-oCiphers={list}"));
        }
        args.splice(host_at - 2..host_at - 2, extra);
        Ok(Resolved {
            program,
            args,
            config: effective,
            openssh: true,
        })
    }

    /// The server's name for messages: `user@host`, `host`, or the server command.
    pub fn peer(&self) -> String {
        match (&self.server_command, &self.host) {
            (Some(cmd), _) => format!("server command '{cmd}'"),
            (None, Some(h)) => match &self.user {
                Some(u) => format!("{u}@{h}"),
                None => h.clone(),
            },
            (None, None) => "ssh".to_string(),
        }
    }

    /// A short name for messages: "ssh to HOST" or the server command.
    pub fn label(&self) -> String {
        match (&self.server_command, &self.host) {
            (None, Some(_)) => format!("ssh to {}", self.peer()),
            _ => self.peer(),
        }
    }

    /// Starts the child with stdin, stdout and stderr piped. stdin/stdout carry SFTP; the
    /// controlling terminal stays reachable, so ssh can still ask for a password or a
    /// host-key confirmation on `/dev/tty`.
    pub fn spawn(&self) -> Result<ChildPipes> {
        self.resolve()?.spawn(&[], &self.label())
    }
}

/// A resolved command line (see [`ConnectOptions::resolve`]), ready to start as often as
/// a session needs channels.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The program: ssh, `-S`'s, or `-D`'s.
    pub program: String,
    /// Its arguments; for ssh they end with `-s -- HOST sftp`.
    pub args: Vec<String>,
    /// `ssh -G`'s output for the connection, when it was read.
    pub config: Option<String>,
    /// The program is OpenSSH's ssh (it can share a connection).
    pub openssh: bool,
}

impl Resolved {
    fn plain(program: String, args: Vec<String>) -> Self {
        Resolved {
            program,
            args,
            config: None,
            openssh: false,
        }
    }

    /// A value of the `ssh -G` output (key in lower case).
    pub fn config_value(&self, key: &str) -> Option<&str> {
        config_value(self.config.as_deref()?, key)
    }

    /// True when the command is ssh's (ends with `-s -- HOST sftp`), so ssh options can
    /// go in before `-s`.
    pub fn is_ssh(&self) -> bool {
        self.args.len() >= 4 && self.args[self.args.len() - 4] == "-s"
    }

    /// Starts the child with `ssh_options` (`-oKEY=VALUE` words) added before `-s`; see
    /// [`ConnectOptions::spawn`].
    pub fn spawn(&self, ssh_options: &[String], label: &str) -> Result<ChildPipes> {
        let program = self.program.clone();
        let mut args = self.args.clone();
        if !ssh_options.is_empty() && self.is_ssh() {
            let at = args.len() - 4;
            args.splice(at..at, ssh_options.iter().cloned());
        }
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
            label: label.to_string(),
            remote: self.is_ssh(),
        })
    }
}

/// True when `program -V` says it is OpenSSH (a wrapper that runs ssh counts).
fn is_openssh(program: &str) -> bool {
    Command::new(program)
        .arg("-V")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| {
            let text = [o.stderr, o.stdout].concat();
            String::from_utf8_lossy(&text).contains("OpenSSH")
        })
}

/// The AES-GCM ciphers, moved to the front when nothing else chose ciphers.
const AES_GCM: [&str; 2] = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"];

/// The output of `ssh -G` with the connection's arguments (`effective`) and, if asked,
/// with `builtin` (OpenSSH's defaults), run at once; `None` for a run that failed.
fn ssh_g(
    program: &str,
    effective: &[String],
    builtin: Option<&[String]>,
) -> (Option<String>, Option<String>) {
    let run = |args: &[String]| {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()
    };
    let output = |child: Option<std::process::Child>| {
        let out = child?.wait_with_output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // Both at once: each takes a few milliseconds, mostly starting up.
    let a = run(effective);
    let b = builtin.and_then(run);
    (output(a), output(b))
}

/// OpenSSH's built-in cipher list with AES-GCM first, if `ssh -G` with the connection's
/// arguments (`effective`) shows that built-in list (`builtin`), i.e. nothing configured
/// ciphers; `None` otherwise.
fn aes_gcm_first(effective: &str, builtin: &str) -> Option<String> {
    match (ciphers_line(effective), ciphers_line(builtin)) {
        (Some(e), Some(b)) if e == b => reorder_aes_gcm_first(&b),
        (Some(e), Some(_)) => {
            log::debug!("ciphers are configured ({e}): keeping them");
            None
        }
        _ => None,
    }
}

/// The value of `key` (lower case) in `ssh -G` output.
fn config_value<'a>(ssh_g_output: &'a str, key: &str) -> Option<&'a str> {
    ssh_g_output.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim())
    })
}

/// The value of `ssh -G`'s `ciphers` line.
fn ciphers_line(ssh_g_output: &str) -> Option<String> {
    config_value(ssh_g_output, "ciphers").map(str::to_string)
}

/// `list` with the AES-GCM ciphers it has moved to the front; `None` if it has none, or
/// already starts with them.
fn reorder_aes_gcm_first(list: &str) -> Option<String> {
    let all: Vec<&str> = list.split(',').filter(|c| !c.is_empty()).collect();
    let (mut front, rest): (Vec<&str>, Vec<&str>) = all.iter().partition(|c| AES_GCM.contains(c));
    if front.is_empty() || all.starts_with(&front) {
        return None;
    }
    front.sort_by_key(|c| AES_GCM.iter().position(|g| g == c));
    front.extend(rest);
    Some(front.join(","))
}

/// True when the CPU has AES instructions (x86 `aes`, Arm `aes` feature), where AES-GCM
/// outruns ChaCha20-Poly1305. Read from /proc/cpuinfo once; false where that is missing.
fn cpu_has_aes() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
            info.lines()
                .filter(|l| l.starts_with("flags") || l.starts_with("Features"))
                .any(|l| l.split_whitespace().any(|w| w == "aes"))
        })
    })
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
    fn remote_commands_get_the_same_options_and_no_terminal() {
        let o = ConnectOptions {
            host: Some("example.org".into()),
            port: Some(2222),
            ..Default::default()
        };
        let (_, args) = o.remote_command_line("scp -t 'a b'").unwrap();
        assert_eq!(
            &args[args.len() - 4..],
            ["-T", "--", "example.org", "scp -t 'a b'"]
        );
        assert!(args.iter().any(|a| a == "-oForwardAgent=no"));
        assert!(args.windows(2).any(|w| w == ["-p", "2222"]));
        let local = ConnectOptions::local_server("/usr/lib/openssh/sftp-server");
        assert!(local.remote_command_line("scp -t .").is_err());
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
    fn aes_gcm_moves_to_the_front_keeping_the_rest_in_order() {
        let builtin = "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,\
                       aes128-gcm@openssh.com,aes256-gcm@openssh.com";
        assert_eq!(
            reorder_aes_gcm_first(builtin).as_deref(),
            Some(
                "aes128-gcm@openssh.com,aes256-gcm@openssh.com,\
                 chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr"
            )
        );
        assert_eq!(
            reorder_aes_gcm_first("aes128-ctr,chacha20-poly1305@openssh.com"),
            None
        );
        assert_eq!(
            reorder_aes_gcm_first("aes128-gcm@openssh.com,aes128-ctr"),
            None
        );
        assert_eq!(
            ciphers_line("user root\nciphers a,b\nmacs m\n").as_deref(),
            Some("a,b")
        );
    }

    /// Through the real `ssh -G`: ciphers nobody chose are reordered, chosen ones kept.
    #[test]
    fn configured_ciphers_are_kept_and_only_the_builtin_list_is_reordered() {
        if !cpu_has_aes() {
            return; // nothing is reordered on such a CPU; the pure part is tested above
        }
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        let chosen = dir.path().join("chosen");
        std::fs::write(&chosen, "Host *\n  Ciphers aes256-ctr\n").unwrap();
        let opts = |config: &std::path::Path, options: &[&str]| ConnectOptions {
            host: Some("example.invalid".into()),
            config_file: Some(config.to_path_buf()),
            ssh_options: options.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let ciphers_arg = |o: &ConnectOptions| {
            let (_, args) = o.resolved_command_line().unwrap();
            assert_eq!(
                &args[args.len() - 4..],
                ["-s", "--", "example.invalid", "sftp"]
            );
            args.into_iter().find(|a| a.starts_with("-oCiphers="))
        };
        let reordered = ciphers_arg(&opts(&empty, &[])).expect("AES-GCM preferred");
        assert!(
            reordered.starts_with("-oCiphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,"),
            "{reordered}"
        );
        assert!(
            reordered.contains("chacha20-poly1305@openssh.com"),
            "{reordered}"
        );
        assert_eq!(ciphers_arg(&opts(&chosen, &[])), None);
        assert_eq!(ciphers_arg(&opts(&empty, &["Ciphers=aes128-ctr"])), None);
        let kept = ConnectOptions {
            keep_cipher_order: true,
            ..opts(&empty, &[])
        };
        assert_eq!(ciphers_arg(&kept), None);
    }

    /// Through the real `ssh -G`: `ServerAliveInterval` goes with the stall timeout,
    /// after the user's options and before the host, unless something set it.
    #[test]
    fn server_alive_interval_follows_the_timeout_unless_configured() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        let chosen = dir.path().join("chosen");
        std::fs::write(&chosen, "Host *\n  ServerAliveInterval 7\n").unwrap();
        let opts =
            |config: &std::path::Path, options: &[&str], timeout: Option<u64>| ConnectOptions {
                host: Some("example.invalid".into()),
                config_file: Some(config.to_path_buf()),
                ssh_options: options.iter().map(|s| s.to_string()).collect(),
                timeout: timeout.map(Duration::from_secs),
                ..Default::default()
            };
        let alive = |o: &ConnectOptions| {
            let (_, args) = o.resolved_command_line().unwrap();
            let at = args
                .iter()
                .position(|a| a.starts_with("-oServerAliveInterval="));
            if let Some(at) = at {
                let user = args.iter().position(|a| a == "-F").unwrap();
                assert!(user < at && at < args.len() - 4, "{args:?}");
            }
            at.map(|at| args[at].clone())
        };
        let with = |secs: u64| Some(format!("-oServerAliveInterval={secs}"));
        assert_eq!(alive(&opts(&empty, &[], None)), with(15));
        assert_eq!(alive(&opts(&empty, &[], Some(600))), with(15));
        assert_eq!(alive(&opts(&empty, &[], Some(8))), with(2));
        assert_eq!(alive(&opts(&empty, &[], Some(2))), with(1));
        assert_eq!(alive(&opts(&empty, &[], Some(0))), None);
        assert_eq!(alive(&opts(&chosen, &[], None)), None);
        assert_eq!(alive(&opts(&empty, &["ServerAliveInterval=5"], None)), None);
        // A -S program that is OpenSSH's ssh is handled as ssh; another is left alone.
        let program = |p: &str| ConnectOptions {
            ssh_program: Some(p.into()),
            ..opts(&empty, &[], None)
        };
        assert_eq!(alive(&program("ssh")), with(15));
        assert_eq!(alive(&program("true")), None);
        let (_, args) = ConnectOptions::local_server("/bin/sftp-server")
            .resolved_command_line()
            .unwrap();
        assert!(args.is_empty(), "{args:?}");
    }

    #[test]
    fn ssh_g_values_are_found_by_key() {
        let out = "user root\nserveraliveinterval 0\nserveralivecountmax 3\n";
        assert_eq!(config_value(out, "serveraliveinterval"), Some("0"));
        assert_eq!(config_value(out, "serveralivecountmax"), Some("3"));
        assert_eq!(config_value(out, "serveralive"), None);
    }

    #[test]
    fn server_command_is_split_on_white_space() {
        let o = ConnectOptions::local_server("/usr/lib/openssh/sftp-server -e -l debug");
        let (p, a) = o.command_line().unwrap();
        assert_eq!(p, "/usr/lib/openssh/sftp-server");
        assert_eq!(a, ["-e", "-l", "debug"]);
    }
}
