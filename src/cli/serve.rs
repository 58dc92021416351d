//! `sftpipe serve SERVER`: the JSON command protocol on stdin/stdout, for other
//! programs. A thin layer over [`sftpipe::serve`].

use clap::Args;
use sftpipe::location::RemoteSpec;
use sftpipe::serve::{Framing, ServeOptions, serve_stdio};

use super::exit::{self, CliError};
use super::{GlobalArgs, connect, remote_operands};

const PROTOCOL_HELP: &str = "\
Protocol (compatible with sftper's):
  Commands come on standard input, one answer per command goes to standard output;
  log messages go to standard error only. A message starting with '{' or white space
  is text: one JSON object ended by a newline. Anything else is binary: a 4-byte
  big-endian length, then that many bytes of JSON. Each answer uses the framing of its
  command. Messages are limited to 16 MiB.

  command: {\"command\": \"STAT\", \"args\": {\"path\": \"/etc/hostname\"}, \"id\": 7}
  answer:  {\"status\": \"ok\", \"message\": \"\", \"data\": {\"size\": 9, ...}, \"id\": 7}

  status: ok; error (the operation failed; \"code\" says why: not_found,
  permission_denied, failure, connection, local, invalid, partial, ...); or fail (the
  request is bad: invalid JSON, unknown command, missing or mistyped argument).

  Commands with an \"id\" run concurrently and are answered as they finish, with their
  id. Commands without one run one after another and are answered in order (they do
  not wait for commands with an id). End of input ends the server once every command
  is answered.

Commands (case-insensitive; remote paths are used as given, relative ones start at the
login directory; local paths are relative to the current directory):
  PUT      {source: LOCAL, dest: REMOTE, recursive?, preserve?}  -> {bytes, files, ...}
  GET      {source: REMOTE, dest: LOCAL, recursive?, preserve?}  -> {bytes, files, ...}
  LISTDIR  {path}               -> [{name, size, mtime, mode}]
  DELETE   {path}               a file, symlink or empty directory
  STAT, LSTAT {path}            -> {size, mtime, atime, mode, uid, gid, type}
  MKDIR    {path, parents?, mode?}
  RMDIR    {path}
  RENAME   {source, dest}       replaces dest atomically when the server allows
  SYMLINK  {target, path}
  READLINK {path}  REALPATH {path}   -> a string
  CHMOD    {path, mode}         mode: a number, or an octal string such as \"644\"
  STATVFS  {path}               -> {bsize, frsize, blocks, bfree, bavail, ...}
  MIRROR   {source: LOCAL_DIR, dest: REMOTE_DIR, delete?, exclude?: [GLOB]}
                                -> {copied, bytes, deleted, unchanged, ...}

Example:
  echo '{\"command\": \"LISTDIR\", \"args\": {\"path\": \"/tmp\"}}' | sftpipe serve host:

Exit status: 0 when input ended (or the client went away); 1 when reading stopped
early: input in neither framing (a line not starting with '{' such as 'hello world'),
a binary length over the maximum, or a read error (the rest is neither read nor run);
5 when the connection failed (then standard input is not read) or was lost; 2 for a
usage error.";

/// `serve` arguments.
#[derive(Debug, Args)]
#[command(
    about = "Serve a JSON command protocol on stdin/stdout (for other programs)",
    long_about = "Connect to SERVER, then read JSON commands (PUT, GET, LISTDIR, DELETE, \
                  STAT, ...) on standard input and answer each on standard output, as \
                  sftper does. Many commands can run at once over the one connection.",
    after_help = PROTOCOL_HELP
)]
pub struct ServeArgs {
    /// Read and write only text messages (one JSON object per line)
    #[arg(long, conflicts_with = "binary")]
    pub text: bool,
    /// Read and write only binary messages (u32 big-endian length + JSON)
    #[arg(long)]
    pub binary: bool,
    /// sftp://[user@]host[:port] or [user@]host: (may be left out with -D)
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

/// The server `operand` names: no path allowed, a bare `[user@]host` accepted.
fn server_spec(g: &GlobalArgs, operand: Option<&str>) -> Result<Option<RemoteSpec>, CliError> {
    let Some(op) = operand else {
        if g.server_command.is_some() {
            return Ok(None);
        }
        return Err(CliError::Usage(
            "serve needs a server: sftp://[user@]host[:port] or [user@]host:".into(),
        ));
    };
    let op = if op.contains(':') || op.contains('/') {
        op.to_string()
    } else {
        format!("{op}:")
    };
    let (ep, paths) = remote_operands(g, &[op.as_str()], false)?;
    if paths.first().is_some_and(|p| p != b".") {
        return Err(CliError::Usage(format!(
            "'{op}' names a path; serve takes only the server (paths go in each command)"
        )));
    }
    Ok(ep)
}

/// Runs `serve`.
pub fn serve(g: &GlobalArgs, a: &ServeArgs) -> Result<i32, CliError> {
    let spec = server_spec(g, a.server.as_deref())?;
    let session = match connect(g, spec.as_ref()) {
        Ok(s) => s,
        Err(e @ CliError::Usage(_)) => return Err(e),
        Err(e) => {
            exit::report(&e);
            return Ok(exit::CONNECTION);
        }
    };
    let opts = ServeOptions {
        framing: if a.text {
            Some(Framing::Text)
        } else if a.binary {
            Some(Framing::Binary)
        } else {
            None
        },
        ..ServeOptions::default()
    };
    let summary = serve_stdio(&session, &opts)?;
    log::info!(
        "serve: {} message(s) answered{}",
        summary.messages,
        if summary.output_closed {
            " (output closed early)"
        } else {
            ""
        }
    );
    if summary.connection_lost {
        let tail = session.sftp().channel().stderr_tail();
        let mut message = String::from("the connection to the server was lost");
        if !tail.is_empty() {
            message.push_str("; its last output:");
            for line in tail {
                message.push_str("\n  ");
                message.push_str(&line);
            }
        }
        exit::report(message);
        return Ok(exit::CONNECTION);
    }
    if let Some(why) = summary.input_abandoned {
        exit::report(format!("serve: {why}"));
        return Ok(exit::FAILED);
    }
    Ok(exit::SUCCESS)
}
