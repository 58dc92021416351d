//! The legacy scp protocol, for servers without an SFTP subsystem: `put`/`put -r` run
//! `scp -t` (a sink) on the server, `get`/`get -r` run `scp -f` (a source), each
//! through ssh with the options and hardening of [`ConnectOptions`] and every path
//! single-quoted for the remote user's shell ([`quote`]).
//!
//! * [`record`]: records (`C`, `D`, `E`, `T`) and replies, sans I/O, lengths bounded.
//! * [`source`]: the checking parser for what a source sends (hostile-safe).
//! * `upload` / `download`: the drivers; `conn`: the ssh child and its pipes.
//!
//! # Which waits are required
//!
//! Found against the real OpenSSH 9.2 `scp -t` (run directly with hand-made streams,
//! and over ssh to OpenSSH's sshd and to Dropbear 2022.83, which runs the system's
//! OpenSSH `scp`) and read in Dropbear's own `scp.c` sink, which has the same loop:
//!
//! * **A `C` header's `\0` must come before its data.** A sink that cannot open the file
//!   answers `\1...` and goes straight back to reading records: data sent behind the
//!   header is then read as records. Sending `C0644 23 isdir\n` (a directory on the
//!   server) with the bytes `C0644 5 evil\nhello\0\0` behind it made OpenSSH's sink
//!   create a file `evil`. So sftpipe waits for every header's answer.
//! * **A `D` record's `\0` must come before the directory's contents**: after a refused
//!   `D` the sink stays in the parent, and the contents would land one level up. A
//!   refused directory is skipped whole (no `E`).
//! * **The final `\0` after a file's data need not be awaited.** The sink reads every
//!   announced byte even when writing fails ("keep reading so we stay sync'd up"), so
//!   the next `T`/`C`/`D`/`E` goes out at once and the answers are matched in order
//!   later. Sending three files without reading any reply worked with OpenSSH's sink.
//! * `T` and `E` are always answered `\0` by a sink that parsed them; they are sent
//!   without waiting. The sink's first `\0` (ready) is not awaited before the first
//!   record either: it is sent before the sink reads anything. Junk from the remote
//!   shell's startup files then shows as a protocol error.
//!
//! So a `put` of n files costs one round trip per file (the header's), not two as with
//! OpenSSH's `scp`, and several sessions share the files (see `parallel`).
//!
//! A source (`scp -f`, for `get`) waits for an answer after every record and after every
//! file's data, but reads nothing else from its input: an answer only says "go on" (a
//! `\1` would make it skip a file, which sftpipe never asks). So sftpipe sends 64 answers
//! ahead and one more per record that takes one: the source streams without waiting,
//! and a download costs no round trip per file. Records are still checked one by one;
//! a refused one ends the session (the answers ahead give a hostile source nothing: it
//! need not wait for answers anyway).
//!
//! # Limits
//!
//! The protocol has no rename: uploads write in place, so an interrupted upload leaves a
//! partial file under its final name (downloads are written to a temporary name and
//! renamed). No links (a tree's links are skipped unless followed), no listing, no
//! removal: commands other than `get` and `put` need SFTP. No wildcards, no resume.

mod conn;
mod download;
mod parallel;
pub mod quote;
pub mod record;
pub mod source;
mod upload;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::proto::StatusCode;
use crate::transport::ConnectOptions;

/// What a transfer did: files and bytes that made it, and each failure with its path.
#[derive(Debug, Default)]
pub struct Report {
    /// Files written whole.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// What failed, with the path shown for it.
    pub failures: Vec<(String, Error)>,
    /// Each file written whole: the path shown for it and its size.
    pub done: Vec<(String, u64)>,
}

/// What a transfer over scp tells while it runs (see [`ScpOptions::progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScpEvent<'e> {
    /// A file starts moving: the path shown for it and its size.
    File(&'e str, u64),
    /// This many more bytes of a file moved.
    Bytes(u64),
}

/// Receives [`ScpEvent`]s, from the threads of parallel sessions too.
pub type ProgressFn<'a> = &'a (dyn Fn(ScpEvent<'_>) + Sync);

/// Options of a transfer over scp.
#[derive(Clone, Copy, Default)]
pub struct ScpOptions<'a> {
    /// Copy directories recursively (`-r`).
    pub recursive: bool,
    /// Keep modification times and permission bits (`-p`).
    pub preserve: bool,
    /// Uploads: send what local links point to (else links in trees are skipped).
    pub follow_links: bool,
    /// Uploads: scp sessions (ssh connections) at once; 0: [`DEFAULT_SESSIONS`].
    pub sessions: usize,
    /// Told as files start and bytes move.
    pub progress: Option<ProgressFn<'a>>,
}

impl std::fmt::Debug for ScpOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScpOptions")
            .field("recursive", &self.recursive)
            .field("preserve", &self.preserve)
            .field("follow_links", &self.follow_links)
            .field("sessions", &self.sessions)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl ScpOptions<'_> {
    /// Tells `event` to [`ScpOptions::progress`], if any.
    fn tell(&self, event: ScpEvent<'_>) {
        if let Some(p) = self.progress {
            p(event);
        }
    }
}

pub use parallel::DEFAULT_SESSIONS;

/// A server reached over the legacy scp protocol.
#[derive(Debug, Clone)]
pub struct Scp {
    opts: ConnectOptions,
}

impl Scp {
    /// scp over ssh with `opts` (a local `server_command` is refused when used).
    pub fn new(opts: ConnectOptions) -> Scp {
        Scp { opts }
    }

    /// The connection options.
    pub fn options(&self) -> &ConnectOptions {
        &self.opts
    }

    /// Uploads `locals` (each under its own name) to `remote` over one `scp -t`: into it
    /// when it is a directory (it must be, for several), else as that name. In place.
    pub fn put(
        &self,
        locals: &[(PathBuf, Vec<u8>)],
        remote: &[u8],
        o: ScpOptions,
    ) -> Result<Report> {
        let sessions = if o.sessions == 0 {
            DEFAULT_SESSIONS
        } else {
            o.sessions
        };
        if sessions > 1 {
            match locals {
                [(local, name)] if o.recursive && local.is_dir() => {
                    if let Some(r) =
                        parallel::put_tree(&self.opts, local, name, remote, o, sessions)?
                    {
                        return Ok(r);
                    }
                }
                [_, _, ..] => return parallel::put_many(&self.opts, locals, remote, o, sessions),
                _ => {}
            }
        }
        let mut flags = scp_flags(&o);
        if locals.len() > 1 {
            flags.push_str(" -d");
        }
        let conn = conn::Conn::start(&self.opts, &command("-t", &flags, remote)?)?;
        let mut up = upload::Uploader::new(conn, remote, o);
        for (local, name) in locals {
            up.send(local, name)?;
        }
        up.finish()
    }

    /// Downloads the file (or with `recursive` the tree) `remote` to `dest`, which is
    /// the new name of the file or of the tree's top directory (an existing directory
    /// there is merged into). Every record is checked; see [`source`].
    pub fn get(&self, remote: &[u8], dest: &Path, o: ScpOptions) -> Result<Report> {
        let name = crate::transfer::remote_basename(remote);
        if let Some(why) = record::bad_name(name) {
            return Err(Error::InvalidInput(format!(
                "cannot download '{}' over scp: its last component is {why}; name the file \
                 or directory itself",
                String::from_utf8_lossy(remote)
            )));
        }
        let conn = conn::Conn::start(&self.opts, &command("-f", &scp_flags(&o), remote)?)?;
        download::Downloader::new(conn, remote, name, dest, o).run()
    }
}

/// ` -r` and ` -p` as `o` asks.
fn scp_flags(o: &ScpOptions) -> String {
    let mut f = String::new();
    if o.recursive {
        f.push_str(" -r");
    }
    if o.preserve {
        f.push_str(" -p");
    }
    f
}

/// `scp MODE FLAGS 'PATH'` for the remote shell.
fn command(mode: &str, flags: &str, path: &[u8]) -> Result<String> {
    let quoted = quote::shell_quote(&quote::remote_arg(path));
    let quoted = String::from_utf8(quoted).map_err(|_| {
        Error::InvalidInput(format!(
            "remote path '{}' is not valid UTF-8",
            String::from_utf8_lossy(path)
        ))
    })?;
    Ok(format!("scp{flags} {mode} {quoted}"))
}

/// `dir/name` for messages.
fn join_shown(dir: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if dir.is_empty() || dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// A sink's or source's complaint as an error, with the status code its words mean
/// (so that exit codes match SFTP's: not found 3, permission 4).
fn remote_error(op: &'static str, path: &str, message: &str) -> Error {
    let lower = message.to_ascii_lowercase();
    let code = if lower.contains("no such file") {
        StatusCode::NoSuchFile
    } else if lower.contains("permission denied") {
        StatusCode::PermissionDenied
    } else {
        StatusCode::Failure
    };
    let message = message.strip_prefix("scp: ").unwrap_or(message).to_string();
    Error::Status {
        op,
        path: path.to_string(),
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_quote_the_path() {
        assert_eq!(
            command("-t", " -r", b"a b'c").unwrap(),
            "scp -r -t 'a b'\\''c'"
        );
        assert_eq!(command("-f", "", b"-x").unwrap(), "scp -f './-x'");
        assert_eq!(command("-t", "", b"").unwrap(), "scp -t '.'");
    }
}
