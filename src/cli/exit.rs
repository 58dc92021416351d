//! Exit codes and the CLI's error type.

use std::fmt;

use sftpipe::location::LocationError;
use sftpipe::{Error, StatusCode};

/// Everything worked.
pub const SUCCESS: i32 = 0;
/// Some operations failed (a batch partly failed, or one of several operands, or the
/// server refused an operation for another reason than the ones below).
pub const FAILED: i32 = 1;
/// Bad command line or invalid operand (refused host name, directory without `-r`, ...).
pub const USAGE: i32 = 2;
/// A remote path does not exist.
pub const NOT_FOUND: i32 = 3;
/// The server denied permission.
pub const PERMISSION: i32 = 4;
/// ssh could not be started, could not connect or authenticate, or the connection died.
pub const CONNECTION: i32 = 5;
/// The server broke the protocol or lacks a needed extension or operation.
pub const PROTOCOL: i32 = 6;
/// A local file operation failed.
pub const LOCAL: i32 = 7;

/// The exit code after catching signal `sig` (SIGINT 130, SIGTERM 143, SIGHUP 129), as a
/// shell reports a process the signal killed.
pub fn interrupted(sig: i32) -> i32 {
    128 + sig
}

/// The table shown at the end of `sftpipe --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0  success
  1  some operations failed (part of a batch, or one of several operands)
  2  usage error or invalid operand (refused host name, directory without -r, ...)
  3  remote path not found
  4  permission denied
  5  ssh failed: cannot start, connect or authenticate, connection lost, or no
     answer within --timeout
  6  protocol error, or the server lacks a needed extension
  7  local file error
  129, 130, 143  ended by SIGHUP, SIGINT, SIGTERM (the ssh or -D child is ended too)

Remote operands are [user@]host:path (scp style; a ':' after a '/' means a local file)
or sftp://[user@]host[:port]/path (percent-encoded; '//abs' is absolute, 'rel' and '~/x'
are relative to the home directory). A user or port in the operand wins over -l / -P.
Operands after the first remote one of ls, stat, rm, mkdir, rmdir, mv, ln, chmod and
realpath may leave out the host.";

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// The command line is wrong.
    Usage(String),
    /// The library failed.
    Sftp(Error),
    /// Standard output was closed (`sftpipe ls | head`): stop quietly.
    StdoutClosed,
    /// A wildcard pattern matched nothing (`remote`: on the server, else locally).
    NoMatch {
        /// The pattern as given.
        pattern: String,
        /// Where it was matched.
        remote: bool,
    },
}

/// The error for a failed write to standard output.
pub fn stdout_error(e: std::io::Error) -> CliError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        CliError::StdoutClosed
    } else {
        CliError::Sftp(Error::local("cannot write to standard output", e))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) => f.write_str(m),
            CliError::Sftp(e) => write!(f, "{e}"),
            CliError::StdoutClosed => f.write_str("standard output closed"),
            CliError::NoMatch { pattern, remote } => {
                let side = if *remote { "remote" } else { "local" };
                write!(f, "no {side} file matches '{pattern}'")
            }
        }
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::Sftp(e)
    }
}

impl From<LocationError> for CliError {
    fn from(e: LocationError) -> Self {
        CliError::Usage(e.to_string())
    }
}

impl CliError {
    /// The exit code for this error.
    pub fn code(&self) -> i32 {
        match self {
            CliError::Usage(_) => USAGE,
            CliError::Sftp(e) => code_of(e),
            CliError::StdoutClosed => SUCCESS,
            CliError::NoMatch { remote: true, .. } => NOT_FOUND,
            CliError::NoMatch { remote: false, .. } => LOCAL,
        }
    }

    /// True when the connection is gone, so later operations cannot succeed either.
    pub fn is_connection(&self) -> bool {
        matches!(self, CliError::Sftp(e) if is_connection(e))
    }
}

/// True for errors after which the connection is unusable.
pub fn is_connection(e: &Error) -> bool {
    e.is_connection()
        || matches!(
            e.status(),
            Some(StatusCode::NoConnection | StatusCode::ConnectionLost)
        )
}

/// The exit code for a library error.
pub fn code_of(e: &Error) -> i32 {
    match e {
        Error::Status { code, .. } => match code {
            StatusCode::NoSuchFile => NOT_FOUND,
            StatusCode::PermissionDenied => PERMISSION,
            StatusCode::NoConnection | StatusCode::ConnectionLost => CONNECTION,
            StatusCode::BadMessage | StatusCode::OpUnsupported => PROTOCOL,
            _ => FAILED,
        },
        Error::Connection(_) | Error::Spawn { .. } => CONNECTION,
        Error::Protocol(_) | Error::Unsupported(_) => PROTOCOL,
        Error::Local { .. } => LOCAL,
        Error::InvalidInput(_) | Error::RequestTooLarge { .. } => USAGE,
        Error::Partial { failures, .. } => {
            if failures.iter().any(|(_, e)| is_connection(e)) {
                CONNECTION
            } else {
                FAILED
            }
        }
    }
}

/// The exit code of a batch: 0 when nothing failed; a lost connection wins; a batch of a
/// single operation takes that operation's code; otherwise 1.
pub fn batch_code<'a>(failures: impl IntoIterator<Item = &'a Error>, operations: usize) -> i32 {
    let failures: Vec<&Error> = failures.into_iter().collect();
    match failures.as_slice() {
        [] => SUCCESS,
        f if f.iter().any(|e| is_connection(e)) => CONNECTION,
        [only] if operations <= 1 => code_of(only),
        _ => FAILED,
    }
}

/// Makes text from the server safe to print on a terminal: control characters other
/// than newline and tab are shown escaped.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints `sftpipe: <message>` on stderr.
pub fn report(message: impl fmt::Display) {
    // After SIGINT or SIGTERM every failure is its consequence: `run` says it once.
    if sftpipe::interrupt::caught().is_some() {
        return;
    }
    eprintln!("sftpipe: {}", sanitize(&message.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: StatusCode) -> Error {
        Error::Status {
            op: "open",
            path: "/x".into(),
            code,
            message: "m".into(),
        }
    }

    #[test]
    fn codes() {
        assert_eq!(code_of(&status(StatusCode::NoSuchFile)), NOT_FOUND);
        assert_eq!(code_of(&status(StatusCode::PermissionDenied)), PERMISSION);
        assert_eq!(code_of(&status(StatusCode::Failure)), FAILED);
        assert_eq!(code_of(&status(StatusCode::OpUnsupported)), PROTOCOL);
        assert_eq!(code_of(&Error::Unsupported("x".into())), PROTOCOL);
        assert_eq!(
            code_of(&Error::local("x", std::io::ErrorKind::NotFound.into())),
            LOCAL
        );
        assert_eq!(CliError::Usage("x".into()).code(), USAGE);
    }

    #[test]
    fn batches() {
        let nf = status(StatusCode::NoSuchFile);
        let lost = Error::Connection(sftpipe::ConnectionError {
            reason: "gone".into(),
            stderr_tail: vec![],
            unreached: None,
        });
        assert_eq!(batch_code([], 3), SUCCESS);
        assert_eq!(batch_code([&nf], 1), NOT_FOUND);
        assert_eq!(batch_code([&nf], 2), FAILED);
        assert_eq!(batch_code([&nf, &lost], 2), CONNECTION);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(sanitize("a\x1b[2Jb\nc"), "a\\u{1b}[2Jb\nc");
    }
}
