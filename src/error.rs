//! Errors of sftpipe, with the context a user needs: which path, which operation, what the
//! server said, and ssh's last words when the connection died.

use std::borrow::Cow;
use std::fmt;
use std::io;

use crate::proto::{DecodeError, StatusCode};

/// Result alias for sftpipe.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the connection to the server is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionError {
    /// What happened, e.g. "ssh exited with status 255".
    pub reason: String,
    /// The last lines ssh (or the local server) wrote to stderr.
    pub stderr_tail: Vec<String>,
    /// The server's name when the connection ended before the server's VERSION: the
    /// connection was never made (ssh could not connect or authenticate).
    pub unreached: Option<String>,
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&printable(&self.reason))?;
        if !self.stderr_tail.is_empty() {
            write!(f, "; its last output:")?;
            for line in &self.stderr_tail {
                write!(f, "\n  {}", printable(line))?;
            }
        }
        Ok(())
    }
}

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused an operation with a STATUS reply.
    #[error("{op} {}: {}", display_path(path), printable(&status_text(*code, message)))]
    Status {
        /// The operation, e.g. "open".
        op: &'static str,
        /// The remote path concerned (empty when none applies).
        path: String,
        /// The status code.
        code: StatusCode,
        /// The server's message, or the code's description when it sent none.
        message: String,
    },
    /// ssh (or the local server) exited, or the pipes broke: "cannot connect to HOST"
    /// before the handshake, else "connection lost".
    #[error("{}", connection_text(.0))]
    Connection(ConnectionError),
    /// ssh or the server command could not be started.
    #[error("cannot start {}: {}", printable(program), plain_io(source))]
    Spawn {
        /// The program that failed to start.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server sent something this client cannot accept.
    #[error("protocol error: {}", printable(.0))]
    Protocol(String),
    /// The server lacks an extension the operation needs.
    #[error("{}", printable(.0))]
    Unsupported(String),
    /// A local file operation failed.
    #[error("{}: {}", printable(context), local_text(source))]
    Local {
        /// What was being done, with the local path.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A bad argument: a refused host, an unsafe name, a malformed operand.
    #[error("{}", printable(.0))]
    InvalidInput(String),
    /// A request larger than the server accepts (its `max-packet-length`, else OpenSSH's
    /// 256 KiB): refused before anything was sent, so the connection goes on.
    #[error(
        "{op} {path}: request too large for the server: {size} bytes, the server accepts at most {max}",
        path = display_path(&shorten(path))
    )]
    RequestTooLarge {
        /// The operation, e.g. "stat".
        op: &'static str,
        /// The remote path concerned (empty when none applies).
        path: String,
        /// The whole packet's size.
        size: usize,
        /// The largest packet the server accepts.
        max: usize,
    },
    /// Some of the files of a batch failed; each is listed.
    #[error("{} of {total} operations failed", failures.len())]
    Partial {
        /// How many operations were attempted.
        total: usize,
        /// Each failure with its path.
        failures: Vec<(String, Error)>,
    },
}

/// A refusal in words that say which side is concerned: a missing file is "remote file
/// not found", with the server's own words when they say more.
fn status_text(code: StatusCode, message: &str) -> String {
    if code != StatusCode::NoSuchFile {
        return message.to_string();
    }
    let generic = message.is_empty() || message.to_ascii_lowercase().starts_with("no such file");
    if generic {
        "remote file not found".into()
    } else {
        format!("remote file not found ({message})")
    }
}

/// A local failure in plain words; a missing file is "local file not found".
fn local_text(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound {
        "local file not found".into()
    } else {
        plain_io(e)
    }
}

fn connection_text(c: &ConnectionError) -> String {
    match &c.unreached {
        Some(peer) => format!("cannot connect to {peer}: {c}"),
        None => format!("connection lost: {c}"),
    }
}

/// An I/O error in plain words: the OS's description without Rust's " (os error N)",
/// and the kind's words for errors without an OS code, e.g. "No such file or directory"
/// rather than "entity not found".
pub fn plain_io(e: &io::Error) -> String {
    if e.raw_os_error().is_some() || e.get_ref().is_some() {
        let text = e.to_string();
        return match text.rfind(" (os error ") {
            Some(cut) if text.ends_with(')') => text[..cut].to_string(),
            _ => text,
        };
    }
    match e.kind() {
        io::ErrorKind::NotFound => "No such file or directory".into(),
        io::ErrorKind::PermissionDenied => "Permission denied".into(),
        io::ErrorKind::AlreadyExists => "File exists".into(),
        io::ErrorKind::IsADirectory => "Is a directory".into(),
        io::ErrorKind::NotADirectory => "Not a directory".into(),
        io::ErrorKind::DirectoryNotEmpty => "Directory not empty".into(),
        io::ErrorKind::UnexpectedEof => "unexpected end of file".into(),
        io::ErrorKind::BrokenPipe => "Broken pipe".into(),
        _ => e.to_string(),
    }
}

/// `s` with control characters (newlines too) escaped: names and messages from a server
/// can hold any byte, and a message must stay one line that cannot move the terminal's
/// cursor or pose as another line.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn display_path(p: &str) -> String {
    if p.is_empty() {
        String::new()
    } else {
        format!("'{}'", printable(p))
    }
}

/// A path cut to a readable length (a path too large for the server can be megabytes).
fn shorten(p: &str) -> String {
    const SHOWN: usize = 120;
    if p.len() <= SHOWN {
        return p.to_string();
    }
    let mut cut = SHOWN;
    while !p.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} bytes)", &p[..cut], p.len())
}

impl Error {
    /// A local I/O error with its context.
    pub fn local(context: impl Into<String>, source: io::Error) -> Self {
        Error::Local {
            context: context.into(),
            source,
        }
    }

    /// The status code, when the server refused.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when the server said the path does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NoSuchFile)
    }

    /// True when the connection is gone (no later operation can succeed).
    pub fn is_connection(&self) -> bool {
        matches!(self, Error::Connection(_) | Error::Spawn { .. })
    }

    /// The closest `std::io::ErrorKind`.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Status { code, .. } => match code {
                StatusCode::NoSuchFile => io::ErrorKind::NotFound,
                StatusCode::PermissionDenied => io::ErrorKind::PermissionDenied,
                StatusCode::Eof => io::ErrorKind::UnexpectedEof,
                StatusCode::OpUnsupported => io::ErrorKind::Unsupported,
                StatusCode::BadMessage => io::ErrorKind::InvalidData,
                StatusCode::NoConnection | StatusCode::ConnectionLost => {
                    io::ErrorKind::ConnectionAborted
                }
                _ => io::ErrorKind::Other,
            },
            Error::Connection(_) => io::ErrorKind::ConnectionAborted,
            Error::Spawn { source, .. } | Error::Local { source, .. } => source.kind(),
            Error::Protocol(_) => io::ErrorKind::InvalidData,
            Error::Unsupported(_) => io::ErrorKind::Unsupported,
            Error::InvalidInput(_) | Error::RequestTooLarge { .. } => io::ErrorKind::InvalidInput,
            Error::Partial { .. } => io::ErrorKind::Other,
        }
    }

    /// A copy for handing one failure to several waiters (local OS errors keep their kind
    /// and text, not their identity).
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Status {
                op,
                path,
                code,
                message,
            } => Error::Status {
                op,
                path: path.clone(),
                code: *code,
                message: message.clone(),
            },
            Error::Connection(c) => Error::Connection(c.clone()),
            Error::Spawn { program, source } => Error::Spawn {
                program: program.clone(),
                source: io::Error::new(source.kind(), plain_io(source)),
            },
            Error::Protocol(m) => Error::Protocol(m.clone()),
            Error::Unsupported(m) => Error::Unsupported(m.clone()),
            Error::Local { context, source } => Error::Local {
                context: context.clone(),
                source: io::Error::new(source.kind(), plain_io(source)),
            },
            Error::InvalidInput(m) => Error::InvalidInput(m.clone()),
            Error::RequestTooLarge {
                op,
                path,
                size,
                max,
            } => Error::RequestTooLarge {
                op,
                path: path.clone(),
                size: *size,
                max: *max,
            },
            Error::Partial { total, failures } => Error::Partial {
                total: *total,
                failures: failures
                    .iter()
                    .map(|(p, e)| (p.clone(), e.duplicate()))
                    .collect(),
            },
        }
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Error::Protocol(e.to_string())
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        io::Error::new(e.kind(), e)
    }
}

/// Recovers the sftpipe error inside an `io::Error` from a [`crate::File`]; any other
/// I/O error becomes [`Error::Local`].
impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            if let Some(inner) = e.into_inner()
                && let Ok(err) = inner.downcast::<Error>()
            {
                return *err;
            }
            return Error::Protocol("lost an error while unwrapping it".into());
        }
        Error::Local {
            context: "I/O".into(),
            source: e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_messages_from_the_server_cannot_break_lines_or_move_the_cursor() {
        let e = Error::Status {
            op: "open",
            path: "/d/\nsftpipe: all done\x1b[2J".into(),
            code: StatusCode::NoSuchFile,
            message: "no\r\nsuch".into(),
        };
        let text = e.to_string();
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert_eq!(
            text,
            "open '/d/\\nsftpipe: all done\\u{1b}[2J': remote file not found (no\\r\\nsuch)"
        );
        let local = Error::local("cannot write /t/a\nb", io::ErrorKind::Other.into());
        assert!(!local.to_string().contains('\n'), "{local}");
        let lost = Error::Connection(ConnectionError {
            reason: "gone\x07".into(),
            stderr_tail: vec!["one\x1b[1m".into(), "two".into()],
            unreached: None,
        });
        assert_eq!(
            lost.to_string(),
            "connection lost: gone\\u{7}; its last output:\n  one\\u{1b}[1m\n  two"
        );
    }

    #[test]
    fn local_errors_are_in_plain_words() {
        let e = Error::local(
            "cannot write /x",
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert_eq!(e.to_string(), "cannot write /x: local file not found");
        assert_eq!(e.duplicate().to_string(), e.to_string());
        let spawn = Error::Spawn {
            program: "ssh".into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert_eq!(spawn.to_string(), "cannot start ssh: Permission denied");
        let custom = io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank");
        assert_eq!(
            Error::local("cannot read /y", custom).to_string(),
            "cannot read /y: the file shrank"
        );
    }
}
