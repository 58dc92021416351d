//! The `sftpipe` command line: a thin layer over the library.
//!
//! * [`Cli`], [`GlobalArgs`], [`Command`]: the clap definitions.
//! * [`connect`] and [`remote_operands`]: turning options and operands into a session,
//!   shared by every command (and by `mirror` when it comes).
//! * [`TransferArgs`], [`UploadArgs`]: transfer tuning flattened into `get`, `put` (and
//!   `mirror`).
//! * `ops`: the one-shot commands; `transfer`: `get` and `put`; `progress`: their
//!   display; `format`: text output; `exit`: exit codes.

pub mod exit;
pub mod format;
pub mod generate;
pub mod mirror;
pub mod ops;
pub mod progress;
pub mod reprepro;
pub mod scp;
pub mod serve;
pub mod shell;
pub mod transfer;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};
use sftpipe::location::{RemoteSpec, parse_remote};
use sftpipe::transfer::TransferOptions;
use sftpipe::{ConnectOptions, Session};

use exit::{CliError, EXIT_CODES_HELP};
use progress::ProgressMode;

/// The whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "sftpipe",
    version,
    about = "Fast SFTP client driving the system ssh",
    long_about = "Fast SFTP client driving the system ssh.\n\nssh options come before the \
                  command, as with OpenSSH's sftp: sftpipe [OPTIONS] COMMAND [ARGS]... \
                  (-F -o -i -P -l -J may also follow the command). -h means \
                  human-readable sizes (ls -lh, df -h); help is --help.",
    after_help = EXIT_CODES_HELP,
    subcommand_required = false,
    arg_required_else_help = true,
    override_usage = "sftpipe [OPTIONS] COMMAND [ARGS]...\n       \
                      sftpipe [OPTIONS] [-b BATCHFILE] HOST[:DIR]      (a shell, or a batch)",
    disable_help_flag = true
)]
pub struct Cli {
    /// Print help (-h means human-readable sizes, as in ls and df)
    #[arg(long = "help", global = true, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// `sftpipe -h` alone still prints help: no option before the command takes -h.
    #[arg(short = 'h', hide = true, action = ArgAction::Help)]
    pub short_help: Option<bool>,
    /// Connection and logging options.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// Run the sftp-compatible batch file BATCHFILE ('-': standard input) instead of the
    /// interactive shell
    #[arg(short = 'b', value_name = "BATCHFILE")]
    pub batch: Option<String>,
    /// With no command: open a shell (sftp's commands) on HOST, starting in DIR
    #[arg(value_name = "HOST[:DIR]")]
    pub destination: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// ssh's letters also accepted after the command (`sftpipe ls -F cfg host:`), where the
/// command has no option of that letter (`ls -l` stays ls's): id, letter, value name,
/// whether it repeats.
const LATE_SSH: [(&str, char, &str, bool); 6] = [
    ("late_F", 'F', "CONFIGFILE", false),
    ("late_o", 'o', "OPTION", true),
    ("late_i", 'i', "IDENTITY", true),
    ("late_P", 'P', "PORT", false),
    ("late_l", 'l', "USER", false),
    ("late_J", 'J', "JUMP", false),
];

/// ssh's options (for [`misplaced_option`]'s message).
const SSH_LETTERS: [&str; 8] = ["-F", "-o", "-i", "-P", "-l", "-J", "-S", "-D"];

/// The clap command: [`Cli`]'s, with the ssh options of [`LATE_SSH`] added to each
/// command that has no option of that letter.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command().mut_subcommands(|sub| {
        if sub.get_name() == "reprepro-hook" {
            return sub; // It takes them itself.
        }
        let mut sub = sub;
        for (id, letter, value, repeats) in LATE_SSH {
            if sub.get_arguments().any(|a| a.get_short() == Some(letter)) {
                continue;
            }
            let mut arg = clap::Arg::new(id)
                .short(letter)
                .value_name(value)
                .hide(true)
                .action(if repeats {
                    ArgAction::Append
                } else {
                    ArgAction::Set
                });
            if letter == 'P' {
                arg = arg.value_parser(clap::value_parser!(u16).range(1..));
            }
            sub = sub.arg(arg);
        }
        sub
    })
}

/// Parses the command line, exiting as clap does on errors and for --help / --version.
/// An option that only goes before the command gets a message saying so.
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    let mut cmd = command();
    let matches = match cmd.try_get_matches_from_mut(std::env::args_os()) {
        Ok(m) => m,
        Err(e) => {
            if let Some(msg) = misplaced_option(&e) {
                cmd.error(clap::error::ErrorKind::UnknownArgument, msg)
                    .exit();
            }
            e.exit()
        }
    };
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some((_, sub)) = matches.subcommand() {
        merge_late_ssh(&mut cli.global.ssh, sub);
    }
    cli
}

/// Adds the ssh options given after the command to those given before it.
fn merge_late_ssh(ssh: &mut SshArgs, m: &clap::ArgMatches) {
    let strings = |id: &str| -> Vec<String> {
        m.try_get_many::<String>(id)
            .ok()
            .flatten()
            .map(|v| v.cloned().collect())
            .unwrap_or_default()
    };
    if let Some(f) = strings("late_F").pop() {
        ssh.config_file = Some(f.into());
    }
    ssh.ssh_options.extend(strings("late_o"));
    ssh.identities
        .extend(strings("late_i").into_iter().map(PathBuf::from));
    if let Ok(Some(&p)) = m.try_get_one::<u16>("late_P") {
        ssh.port = Some(p);
    }
    if let Some(u) = strings("late_l").pop() {
        ssh.user = Some(u);
    }
    if let Some(j) = strings("late_J").pop() {
        ssh.jump = Some(j);
    }
}

/// For an unknown option after the command that is one of ours before it (`-S`, `-D`,
/// `-v`, or an ssh letter the command uses itself), the message to give instead of
/// clap's tip.
fn misplaced_option(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = arg.split('=').next().unwrap_or(arg);
    let top = <Cli as clap::CommandFactory>::command();
    let top = top.get_arguments().find(|a| {
        let short = a.get_short().map(|c| format!("-{c}"));
        let long = a.get_long().map(|l| format!("--{l}"));
        short.as_deref() == Some(flag) || long.as_deref() == Some(flag)
    })?;
    let value = top
        .get_value_names()
        .filter(|_| top.get_action().takes_values())
        .and_then(|v| v.first())
        .map(|v| format!(" {v}"))
        .unwrap_or_default();
    // args_os: a non-UTF-8 argument must not panic here.
    let sub = std::env::args_os()
        .skip(1)
        .filter_map(|a| a.into_string().ok())
        .find(|a| Command::has_subcommand(a))
        .unwrap_or_else(|| "COMMAND".into());
    let what = if SSH_LETTERS.contains(&flag) {
        "ssh options go"
    } else {
        "it goes"
    };
    Some(format!(
        "unexpected '{flag}' after the command: {what} before the command: \
         sftpipe {flag}{value} {sub} ..."
    ))
}

/// Options before the command: how to reach the server, and how much to log. The letters
/// are OpenSSH sftp's.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// How ssh reaches the server.
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Run this local SFTP server command instead of ssh (e.g. /usr/lib/openssh/sftp-server);
    /// remote operands are then plain paths and hosts in them are ignored
    #[arg(short = 'D', value_name = "SERVER_COMMAND")]
    pub server_command: Option<String>,
    /// More log output: -v info, -vv debug, -vvv trace (RUST_LOG overrides)
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    pub verbose: u8,
    /// Print errors only (and no progress bar)
    #[arg(short = 'q', long = "quiet", conflicts_with = "verbose")]
    pub quiet: bool,
    /// Give up (exit 5) when requests get no answer, not a byte from the server, for SECS
    /// seconds [default: 60; 0: wait forever]. An idle connection never times out
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(..=86_400_000))]
    pub timeout: Option<u64>,
    /// Use up to N SFTP channels, each with its own ssh window and server process, sharing
    /// one ssh connection (one login) [default: 8]. Channels are added when the work gains
    /// from them (a round trip long enough to cap one channel); 1: a single channel
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: Option<u16>,
    /// Open all --connections channels at the start, whatever the round trip
    #[arg(long)]
    pub eager_connections: bool,
    /// Give each channel its own ssh connection (and login) instead of sharing one
    #[arg(long)]
    pub separate_connections: bool,
    /// Transfer with the legacy scp protocol (scp -t / scp -f run on the server) instead
    /// of SFTP; only get and put. Without it, servers without SFTP get it anyway
    #[arg(long)]
    pub scp: bool,
}

impl GlobalArgs {
    /// `--timeout` for [`ConnectOptions::timeout`].
    pub fn timeout(&self) -> Option<std::time::Duration> {
        self.timeout.map(std::time::Duration::from_secs)
    }
}

/// ssh's connection flags with OpenSSH sftp's letters, shared by the global options and
/// `reprepro-hook` (which reprepro runs with arguments of its own).
#[derive(Debug, Clone, Default, Args)]
pub struct SshArgs {
    /// ssh configuration file
    #[arg(short = 'F', value_name = "CONFIGFILE")]
    pub config_file: Option<PathBuf>,
    /// ssh option, e.g. -o Compression=yes (repeatable)
    #[arg(short = 'o', value_name = "OPTION", action = ArgAction::Append)]
    pub ssh_options: Vec<String>,
    /// Identity (private key) file (repeatable)
    #[arg(short = 'i', value_name = "IDENTITY", action = ArgAction::Append)]
    pub identities: Vec<PathBuf>,
    /// Port to connect to (a port in an sftp:// operand wins)
    #[arg(short = 'P', value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Remote user (a user@ in an operand wins)
    #[arg(short = 'l', value_name = "USER")]
    pub user: Option<String>,
    /// Jump host(s), as ssh -J
    #[arg(short = 'J', value_name = "JUMP")]
    pub jump: Option<String>,
    /// ssh program to run instead of "ssh"
    #[arg(short = 'S', value_name = "PROGRAM")]
    pub ssh_program: Option<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List remote directories (or files)
    Ls(ops::LsArgs),
    /// Show attributes of remote paths (not following symlinks)
    Stat(ops::StatArgs),
    /// Download a remote file or tree
    Get(transfer::GetArgs),
    /// Upload local files or trees
    Put(transfer::PutArgs),
    /// Remove remote files or symlinks (with -r, directory trees)
    Rm(ops::RmArgs),
    /// Create remote directories
    Mkdir(ops::MkdirArgs),
    /// Remove empty remote directories
    Rmdir(ops::RmdirArgs),
    /// Rename a remote path, replacing the target atomically when the server allows
    Mv(ops::MvArgs),
    /// Create a remote hard link, or with -s a symbolic link
    Ln(ops::LnArgs),
    /// Change permission bits of remote paths
    Chmod(ops::ChmodArgs),
    /// Show remote file system usage
    Df(ops::DfArgs),
    /// Print canonical absolute remote paths
    Realpath(ops::RealpathArgs),
    /// Make DEST an exact copy of SRC (local → remote, or remote → local)
    Mirror(mirror::MirrorArgs),
    /// Serve a JSON command protocol on stdin/stdout (for other programs)
    Serve(serve::ServeArgs),
    /// reprepro outhook: publish a reprepro repository's changes over SFTP, atomically
    #[command(name = "reprepro-hook")]
    RepreproHook(reprepro::HookArgs),
    /// Shell completions, man pages, ssh config hosts (for packaging; see the README)
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

/// Transfer tuning shared by `get`, `put` (and `mirror`).
#[derive(Debug, Clone, Args)]
pub struct TransferArgs {
    /// Preserve modification times and permission bits (of directories too, set once
    /// their contents have landed)
    #[arg(short = 'p', long = "preserve")]
    pub preserve: bool,
    /// Requests in flight per file
    #[arg(long, value_name = "N", default_value_t = sftpipe::transfer::DEFAULT_REQUESTS,
          value_parser = parse_requests)]
    pub requests: usize,
    /// Bytes per read/write request (512 to 256K; suffixes K, M), lowered to what the server
    /// accepts; default: the server's limit
    #[arg(long, value_name = "SIZE", value_parser = parse_buffer)]
    pub buffer: Option<usize>,
    /// Remote files open at once; default: from the server's limits (else 64)
    #[arg(long = "max-open", value_name = "N", value_parser = parse_max_open)]
    pub max_open: Option<usize>,
    /// Progress display: auto (bar on a terminal), bar, json (lines on stdout), none
    #[arg(long, value_name = "MODE", value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

impl TransferArgs {
    /// The library options these flags describe (direction-specific ones left default).
    pub fn options(&self) -> TransferOptions {
        TransferOptions {
            requests: self.requests,
            chunk: self.buffer,
            preserve_times: self.preserve,
            preserve_mode: self.preserve,
            max_open: self.max_open,
            ..TransferOptions::default()
        }
    }
}

/// Upload-only flags shared by `put` (and `mirror`).
#[derive(Debug, Clone, Args)]
pub struct UploadArgs {
    /// Follow local symlinks and upload what they point to (default: recreate the links)
    #[arg(short = 'L', long = "copy-links")]
    pub copy_links: bool,
    /// Ask the server to fsync each file before closing it (fsync@openssh.com)
    #[arg(long)]
    pub fsync: bool,
    /// Write straight to the final name instead of a temporary name renamed at the end
    #[arg(long)]
    pub inplace: bool,
}

impl UploadArgs {
    /// Applies these flags to `opts`.
    pub fn apply(&self, opts: &mut TransferOptions) {
        opts.follow_links = self.copy_links;
        opts.fsync = self.fsync;
        opts.inplace = self.inplace;
    }
}

/// Parses a size with an optional suffix K, M or G (powers of 1024, case-insensitive,
/// optionally followed by `B` or `iB`): `256K`, `1M`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (digits, shift) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 10),
        Some('m') => (&body[..body.len() - 1], 20),
        Some('g') => (&body[..body.len() - 1], 30),
        _ => (body, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid size '{s}' (expected e.g. 4096, 256K, 1M)"));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("size '{s}' is too large"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

fn parse_buffer(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    let max = sftpipe::client::MAX_CHUNK as u64;
    if !(512..=max).contains(&n) {
        return Err(format!("buffer size must be from 512 to {}K", max / 1024));
    }
    Ok(n as usize)
}

fn parse_requests(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err("expected a number from 1 to 4096".into()),
    }
}

fn parse_max_open(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=sftpipe::transfer::MAX_OPEN_CAP).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number from 1 to {}",
            sftpipe::transfer::MAX_OPEN_CAP
        )),
    }
}

/// Parses an octal mode (`644`, `0755`, `4755`).
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(format!(
            "invalid mode '{s}' (expected octal, e.g. 644 or 0755)"
        ));
    }
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("mode '{s}' is out of range (at most 7777)")),
    }
}

/// Sets up `env_logger`: warnings by default, `-v` info, `-vv` debug, `-vvv` trace, `-q`
/// errors only; `RUST_LOG` overrides.
pub fn init_logging(global: &GlobalArgs) {
    let level = if global.quiet {
        "error"
    } else {
        match global.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let detailed = global.verbose >= 2;
    let start = std::time::Instant::now();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(move |buf, record| {
            let level = record.level().as_str().to_ascii_lowercase();
            if detailed {
                writeln!(
                    buf,
                    "sftpipe: {:9.6} {level}: [{}] {}",
                    start.elapsed().as_secs_f64(),
                    record.target(),
                    record.args()
                )
            } else {
                writeln!(buf, "sftpipe: {level}: {}", record.args())
            }
        })
        .init();
}

/// Runs the command and returns the exit code; errors are printed on stderr.
pub fn run(cli: Cli) -> i32 {
    let g = &cli.global;
    let Some(command) = cli.command else {
        return finish(shell::run(
            g,
            cli.destination.as_deref(),
            cli.batch.as_deref(),
        ));
    };
    if let Some(extra) = cli
        .destination
        .as_deref()
        .or(cli.batch.as_deref().map(|_| "-b"))
    {
        return finish(Err(CliError::Usage(format!(
            "'{extra}' goes with no command (the shell or a batch): sftpipe [OPTIONS] \
             [-b BATCHFILE] HOST[:DIR]"
        ))));
    }
    if g.scp && !matches!(command, Command::Get(_) | Command::Put(_)) {
        let e = CliError::Sftp(sftpipe::Error::Unsupported(
            "--scp: only get and put work over the scp protocol; this command needs SFTP".into(),
        ));
        exit::report(&e);
        return e.code();
    }
    let result = match command {
        Command::Ls(a) => ops::ls(g, &a),
        Command::Stat(a) => ops::stat(g, &a),
        Command::Get(a) => transfer::get(g, &a),
        Command::Put(a) => transfer::put(g, &a),
        Command::Rm(a) => ops::rm(g, &a),
        Command::Mkdir(a) => ops::mkdir(g, &a),
        Command::Rmdir(a) => ops::rmdir(g, &a),
        Command::Mv(a) => ops::mv(g, &a),
        Command::Ln(a) => ops::ln(g, &a),
        Command::Chmod(a) => ops::chmod(g, &a),
        Command::Df(a) => ops::df(g, &a),
        Command::Realpath(a) => ops::realpath(g, &a),
        Command::Mirror(a) => mirror::mirror(g, &a),
        Command::Serve(a) => serve::serve(g, &a),
        Command::RepreproHook(a) => reprepro::hook(g, &a),
        Command::Generate(a) => generate::generate(g, &a),
    };
    finish(result)
}

/// The exit code for a command's result (errors printed on stderr).
fn finish(result: Result<i32, CliError>) -> i32 {
    if let Some(sig) = sftpipe::interrupt::caught() {
        // What failed, failed because of it; the child is gone (the session ended it).
        log::warn!("interrupted by {}", sftpipe::interrupt::signal_name(sig));
        return exit::interrupted(sig);
    }
    match result {
        Ok(code) => code,
        Err(CliError::StdoutClosed) => exit::SUCCESS,
        Err(e) => {
            exit::report(&e);
            e.code()
        }
    }
}

/// Parses remote operands and checks that they name one server.
///
/// Returns the operand naming the server (`None` with `-D`, where hosts are ignored with
/// a warning) and each operand's path. With `inherit_host`, operands without a host take
/// the host of the others (`rm h:a b`); otherwise each must name one (unless `-D`).
pub fn remote_operands<S: AsRef<str>>(
    global: &GlobalArgs,
    operands: &[S],
    inherit_host: bool,
) -> Result<(Option<RemoteSpec>, Vec<Vec<u8>>), CliError> {
    let mut specs = Vec::with_capacity(operands.len());
    for op in operands {
        specs.push((op.as_ref(), parse_remote(op.as_ref())?));
    }
    let paths = specs.iter().map(|(_, s)| s.path.clone()).collect();
    if global.server_command.is_some() {
        for (op, s) in &specs {
            if let Some(h) = &s.host {
                log::warn!("ignoring host '{h}' in '{op}': -D runs a local server command");
            }
        }
        return Ok((None, paths));
    }
    let mut endpoint: Option<RemoteSpec> = None;
    for (op, s) in &specs {
        let Some(host) = &s.host else {
            if inherit_host {
                continue;
            }
            return Err(no_host(op));
        };
        let Some(ep) = &mut endpoint else {
            endpoint = Some(RemoteSpec {
                path: Vec::new(),
                ..s.clone()
            });
            continue;
        };
        if ep.host.as_deref() != Some(host.as_str()) {
            return Err(CliError::Usage(format!(
                "all remote operands must be on one host: '{op}' names '{host}', \
                 another names '{}'",
                ep.host.as_deref().unwrap_or_default()
            )));
        }
        match (&ep.user, &s.user) {
            (Some(a), Some(b)) if a != b => {
                return Err(CliError::Usage(format!(
                    "all remote operands must use one login: '{op}' names user '{b}', \
                     another '{a}'"
                )));
            }
            (None, Some(b)) => ep.user = Some(b.clone()),
            _ => {}
        }
        match (ep.port, s.port) {
            (Some(a), Some(b)) if a != b => {
                return Err(CliError::Usage(format!(
                    "all remote operands must use one port: '{op}' names port {b}, another {a}"
                )));
            }
            (None, Some(b)) => ep.port = Some(b),
            _ => {}
        }
    }
    match endpoint {
        Some(ep) => Ok((Some(ep), paths)),
        None => Err(no_host(operands.first().map_or("", |o| o.as_ref()))),
    }
}

fn no_host(op: &str) -> CliError {
    CliError::Usage(format!(
        "'{op}' names no host: write host:path or sftp://host/path (or give -D for a \
         local server)"
    ))
}

/// The connection options for `spec` (the operand naming the server; ignored with -D).
/// A user or port in the operand wins over `-l` / `-P`.
pub fn connect_options(
    global: &GlobalArgs,
    spec: Option<&RemoteSpec>,
) -> Result<ConnectOptions, CliError> {
    let mut o = ConnectOptions {
        config_file: global.ssh.config_file.clone(),
        identities: global.ssh.identities.clone(),
        ssh_options: global.ssh.ssh_options.clone(),
        jump: global.ssh.jump.clone(),
        ssh_program: global.ssh.ssh_program.clone(),
        server_command: global.server_command.clone(),
        timeout: global.timeout(),
        connections: global.connections.map(usize::from),
        eager_connections: global.eager_connections,
        separate_connections: global.separate_connections,
        transport: if global.scp {
            sftpipe::Transport::Scp
        } else {
            sftpipe::Transport::Auto
        },
        ..ConnectOptions::default()
    };
    if o.server_command.is_none() {
        let spec = spec.ok_or_else(|| no_host(""))?;
        o.host = spec.host.clone();
        o.user = spec.user.clone().or_else(|| global.ssh.user.clone());
        o.port = spec.port.or(global.ssh.port);
    }
    Ok(o)
}

/// Connects to the server `spec` names (or runs the `-D` command).
pub fn connect(global: &GlobalArgs, spec: Option<&RemoteSpec>) -> Result<Session, CliError> {
    connect_prefetching(global, spec, &[], &[])
}

/// [`connect`], with a STAT of each of `stats` and an OPENDIR of each of `dirs` answered
/// along with the handshake (paths starting with `~` are left out: they are expanded after
/// connecting).
pub fn connect_prefetching(
    global: &GlobalArgs,
    spec: Option<&RemoteSpec>,
    stats: &[&[u8]],
    dirs: &[&[u8]],
) -> Result<Session, CliError> {
    connect_with(
        global,
        spec,
        sftpipe::Prefetch {
            stats: stats.iter().map(|p| p.to_vec()).collect(),
            dirs: dirs.iter().map(|p| p.to_vec()).collect(),
            guessed_dirs: Vec::new(),
        },
    )
}

/// [`connect`], with `prefetch` sent along with the handshake (paths starting with `~`
/// are left out: they are expanded after connecting).
pub fn connect_with(
    global: &GlobalArgs,
    spec: Option<&RemoteSpec>,
    prefetch: sftpipe::Prefetch,
) -> Result<Session, CliError> {
    let o = sftp_options(global, spec, prefetch)?;
    if o.transport == sftpipe::Transport::Scp {
        return Err(CliError::Sftp(sftpipe::backend::needs_sftp(
            "this operation",
            &o,
        )));
    }
    log::info!("connecting: {}", o.label());
    match Session::connect(&o) {
        Err(sftpipe::Error::Connection(c)) if sftpipe::backend::no_sftp(&c) => Err(CliError::Sftp(
            sftpipe::backend::needs_sftp("this operation", &o),
        )),
        r => Ok(r?),
    }
}

/// [`connect_options`] with `prefetch` (paths starting with `~` left out: they are
/// expanded after connecting).
pub fn sftp_options(
    global: &GlobalArgs,
    spec: Option<&RemoteSpec>,
    mut prefetch: sftpipe::Prefetch,
) -> Result<ConnectOptions, CliError> {
    let mut o = connect_options(global, spec)?;
    for paths in [
        &mut prefetch.stats,
        &mut prefetch.dirs,
        &mut prefetch.guessed_dirs,
    ] {
        paths.retain(|p| !p.starts_with(b"~"));
    }
    o.prefetch = prefetch;
    Ok(o)
}

/// Expands a leading `~` or `~user` of a remote path with `expand-path@openssh.com`;
/// without that extension `~/x` becomes `x` (relative paths start at the login directory).
pub fn expand_tilde(session: &Session, path: &[u8]) -> Result<Vec<u8>, CliError> {
    if !path.starts_with(b"~") {
        return Ok(path.to_vec());
    }
    let (head, rest) = match path.iter().position(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (path, &b""[..]),
    };
    let base = if session
        .sftp()
        .has_extension(sftpipe::proto::ext::EXPAND_PATH)
    {
        session.expand_path(head)?
    } else if head == b"~" {
        b".".to_vec()
    } else {
        return Err(CliError::Usage(format!(
            "cannot expand '{}': the server lacks expand-path@openssh.com",
            String::from_utf8_lossy(head)
        )));
    };
    Ok(if rest.is_empty() {
        base
    } else {
        sftpipe::transfer::remote_join(&base, rest)
    })
}

/// The remote paths `path` (tilde already expanded) names: itself, or with wildcards the
/// existing paths they match on the server (sorted; none is an error naming `operand`).
pub fn expand_remote(
    session: &Session,
    operand: &str,
    path: &[u8],
) -> Result<Vec<Vec<u8>>, CliError> {
    if !sftpipe::glob::has_magic(path) {
        return Ok(vec![path.to_vec()]);
    }
    let found = sftpipe::glob::expand(path, |dir| match session.read_dir(dir) {
        Ok(entries) => Ok(Some(
            entries
                .into_iter()
                .map(|e| {
                    let maybe_dir = e.attrs.is_dir() || e.attrs.is_symlink();
                    (e.filename, maybe_dir)
                })
                .collect(),
        )),
        // Not there, or not a directory (OpenSSH says plain failure): nothing matches.
        Err(e) if e.is_not_found() || e.status() == Some(sftpipe::StatusCode::Failure) => Ok(None),
        Err(e) => Err(e),
    })?;
    if found.is_empty() {
        return Err(CliError::NoMatch {
            pattern: operand.to_string(),
            remote: true,
        });
    }
    Ok(found)
}

/// Command-line paths that may not be UTF-8, for remote operands that must be.
pub fn utf8_operand(s: &OsString) -> Result<&str, CliError> {
    s.to_str().ok_or_else(|| {
        CliError::Usage(format!(
            "remote operand '{}' is not valid UTF-8 (percent-encode it in an sftp:// URL)",
            s.to_string_lossy()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
        command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256K"), Ok(256 << 10));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("3kb"), Ok(3 << 10));
        for bad in ["", "K", "1.5M", "-1", "1T", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_buffer("256K").is_ok());
        assert!(parse_buffer("1M").is_err());
        assert!(parse_buffer("100").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert_eq!(parse_mode("0755"), Ok(0o755));
        assert_eq!(parse_mode("4755"), Ok(0o4755));
        for bad in ["", "8", "rwx", "77777", "u+x"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
    }

    fn global() -> GlobalArgs {
        GlobalArgs::default()
    }

    #[test]
    fn operands_must_agree_on_the_server() {
        let g = global();
        let (ep, paths) = remote_operands(&g, &["u@h:/a", "h:b", "c"], true).unwrap();
        let ep = ep.unwrap();
        assert_eq!(
            (ep.user.as_deref(), ep.host.as_deref()),
            (Some("u"), Some("h"))
        );
        assert_eq!(paths, [b"/a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert!(remote_operands(&g, &["h:/a", "k:/b"], true).is_err());
        assert!(remote_operands(&g, &["u@h:/a", "v@h:/b"], true).is_err());
        assert!(remote_operands(&g, &["h:/a", "c"], false).is_err());
        assert!(remote_operands(&g, &["/a"], true).is_err());
        assert!(matches!(
            remote_operands(&g, &["-oProxyCommand=x:y"], true),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn server_command_ignores_hosts() {
        let g = GlobalArgs {
            server_command: Some("/bin/false".into()),
            ..global()
        };
        let (ep, paths) = remote_operands(&g, &["h:/a", "/b", ":c"], false).unwrap();
        assert!(ep.is_none());
        assert_eq!(paths, [b"/a".to_vec(), b"/b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn operand_user_and_port_win_over_flags() {
        let g = GlobalArgs {
            ssh: SshArgs {
                user: Some("flag".into()),
                port: Some(22),
                ..SshArgs::default()
            },
            ..global()
        };
        let (ep, _) = remote_operands(&g, &["sftp://op@h:2222/x"], false).unwrap();
        let o = connect_options(&g, ep.as_ref()).unwrap();
        assert_eq!((o.user.as_deref(), o.port), (Some("op"), Some(2222)));
        let (ep, _) = remote_operands(&g, &["h:x"], false).unwrap();
        let o = connect_options(&g, ep.as_ref()).unwrap();
        assert_eq!((o.user.as_deref(), o.port), (Some("flag"), Some(22)));
    }
}
