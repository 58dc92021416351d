//! Parsing command-line operands that may name a remote file.
//!
//! Two spellings are understood, as by OpenSSH's `scp` and `sftp`:
//!
//! * **scp style**, `[user@]host:path`. An operand is remote only if a `:` appears before
//!   any `/`, so `./a:b` and `/tmp/a:b` are local files. An IPv6 address goes in brackets:
//!   `[::1]:path`, `user@[fe80::1]:path`. The path is taken literally and, when relative,
//!   is relative to the login (home) directory. A leading `:` (`:path`) names a remote path
//!   without a host, for use with a local server command (`sftpipe -D`).
//! * **URL style**, `sftp://[user@]host[:port][/path]`. The user and path are
//!   percent-decoded (so any byte, even a non-UTF-8 one, can be named). The slash after
//!   the host only separates; what follows is the path, relative to the home directory
//!   unless it starts with another `/`:
//!
//!   | URL                  | path      |
//!   |----------------------|-----------|
//!   | `sftp://h` or `sftp://h/` | `.` (home) |
//!   | `sftp://h/rel/f`     | `rel/f`   |
//!   | `sftp://h/~/f`       | `~/f`     |
//!   | `sftp://h//abs/f`    | `/abs/f`  |
//!
//!   Connection parameters after `;` in the user part (`user;fingerprint=...@host`) are
//!   ignored, as OpenSSH does; a password (`user:pw@host`) is refused.
//!
//! An empty path always means the remote home directory (`.`).
//!
//! Host and user names that `ssh` would read as options (starting with `-`), and names
//! with white space or control characters, are refused here, before anything runs.
//!
//! ```
//! use sftpipe::location::{Operand, parse_operand};
//! match parse_operand("alice@example.org:backups/db.gz").unwrap() {
//!     Operand::Remote(r) => {
//!         assert_eq!(r.user.as_deref(), Some("alice"));
//!         assert_eq!(r.host.as_deref(), Some("example.org"));
//!         assert_eq!(r.path, b"backups/db.gz");
//!     }
//!     Operand::Local(_) => unreachable!(),
//! }
//! assert!(matches!(parse_operand("./a:b").unwrap(), Operand::Local(_)));
//! assert!(parse_operand("-oProxyCommand=x:y").is_err());
//! ```

use std::path::PathBuf;

/// A remote file: where it is and its path there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoteSpec {
    /// The login user, when the operand names one.
    pub user: Option<String>,
    /// The host; `None` for a host-less operand (`:path`, or any path given to
    /// [`parse_remote`]).
    pub host: Option<String>,
    /// The port (URLs only).
    pub port: Option<u16>,
    /// The remote path as bytes; `.` for the home directory, never empty.
    pub path: Vec<u8>,
}

impl RemoteSpec {
    /// The path as text (invalid UTF-8 replaced), for messages.
    pub fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// What a command-line operand names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// A local path.
    Local(PathBuf),
    /// A remote path, possibly with user, host and port.
    Remote(RemoteSpec),
}

/// Why an operand was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// The host is empty, would be read by ssh as an option, or contains white space or
    /// control characters.
    #[error("refusing host '{host}' in '{operand}': {why}")]
    BadHost {
        /// The host as written.
        host: String,
        /// The whole operand.
        operand: String,
        /// The reason.
        why: &'static str,
    },
    /// The user is empty, would be read by ssh as an option, or contains white space or
    /// control characters.
    #[error("refusing user '{user}' in '{operand}': {why}")]
    BadUser {
        /// The user as written.
        user: String,
        /// The whole operand.
        operand: String,
        /// The reason.
        why: &'static str,
    },
    /// The port is not a number from 1 to 65535.
    #[error("invalid port '{port}' in '{operand}'")]
    BadPort {
        /// The port as written.
        port: String,
        /// The whole operand.
        operand: String,
    },
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding in '{0}'")]
    BadEscape(String),
    /// Another malformed URL (unclosed `[`, a password, text after `]`).
    #[error("malformed URL '{operand}': {why}")]
    BadUrl {
        /// The whole operand.
        operand: String,
        /// The reason.
        why: &'static str,
    },
}

const URL_SCHEME: &str = "sftp://";

/// Parses an operand that may be local or remote (see the module documentation).
pub fn parse_operand(s: &str) -> Result<Operand, LocationError> {
    if has_url_scheme(s) {
        return parse_url(s).map(Operand::Remote);
    }
    match split_scp(s) {
        Some((host_part, path)) => parse_scp(s, host_part, path).map(Operand::Remote),
        None => Ok(Operand::Local(PathBuf::from(s))),
    }
}

/// Parses an operand that is known to be remote: a local-looking operand becomes a
/// host-less [`RemoteSpec`] with the operand as its path (as with a local server command,
/// where `/tmp/x` means the server's `/tmp/x`).
pub fn parse_remote(s: &str) -> Result<RemoteSpec, LocationError> {
    match parse_operand(s)? {
        Operand::Remote(r) => Ok(r),
        Operand::Local(_) => Ok(RemoteSpec {
            path: non_empty_path(s.as_bytes().to_vec()),
            ..Default::default()
        }),
    }
}

fn has_url_scheme(s: &str) -> bool {
    s.len() >= URL_SCHEME.len()
        && s.is_char_boundary(URL_SCHEME.len())
        && s[..URL_SCHEME.len()].eq_ignore_ascii_case(URL_SCHEME)
}

fn non_empty_path(p: Vec<u8>) -> Vec<u8> {
    if p.is_empty() { b".".to_vec() } else { p }
}

/// Finds the `host:` of an scp-style operand, following OpenSSH's `colon()`: the first
/// `:` outside brackets, provided no `/` comes before it. Returns (host part, path).
fn split_scp(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix(':') {
        return Some(("", rest));
    }
    let b = s.as_bytes();
    let mut bracket = false;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'[' if i == 0 || b[i - 1] == b'@' => bracket = true,
            b']' if bracket => {
                if b.get(i + 1) == Some(&b':') {
                    return Some((&s[..i + 1], &s[i + 2..]));
                }
                bracket = false;
            }
            b':' if !bracket => return Some((&s[..i], &s[i + 1..])),
            b'/' => return None,
            _ => {}
        }
    }
    None
}

fn parse_scp(operand: &str, host_part: &str, path: &str) -> Result<RemoteSpec, LocationError> {
    let (user, host) = match host_part.rfind('@') {
        Some(i) => (Some(&host_part[..i]), &host_part[i + 1..]),
        None => (None, host_part),
    };
    if user.is_none() && host.is_empty() {
        // ":path": a remote path with no host.
        return Ok(RemoteSpec {
            path: non_empty_path(path.as_bytes().to_vec()),
            ..Default::default()
        });
    }
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner,
        None => host,
    };
    Ok(RemoteSpec {
        user: user.map(|u| check_user(operand, u)).transpose()?,
        host: Some(check_host(operand, host)?),
        port: None,
        path: non_empty_path(path.as_bytes().to_vec()),
    })
}

fn parse_url(operand: &str) -> Result<RemoteSpec, LocationError> {
    let rest = &operand[URL_SCHEME.len()..];
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let user = match userinfo {
        None => None,
        Some(u) => {
            // "user;fingerprint=..." carries connection parameters: ignored, like OpenSSH.
            let u = u.split(';').next().unwrap_or_default();
            if u.contains(':') {
                return Err(LocationError::BadUrl {
                    operand: operand.to_string(),
                    why: "passwords in URLs are not supported",
                });
            }
            let decoded =
                percent_decode(u).ok_or_else(|| LocationError::BadEscape(operand.to_string()))?;
            let decoded = String::from_utf8(decoded).map_err(|_| LocationError::BadUser {
                user: u.to_string(),
                operand: operand.to_string(),
                why: "it is not valid UTF-8",
            })?;
            Some(check_user(operand, &decoded)?)
        }
    };
    let (host, port) = if let Some(after) = hostport.strip_prefix('[') {
        let Some(end) = after.find(']') else {
            return Err(LocationError::BadUrl {
                operand: operand.to_string(),
                why: "unclosed '[' in the host",
            });
        };
        let tail = &after[end + 1..];
        let port = if tail.is_empty() {
            None
        } else if let Some(p) = tail.strip_prefix(':') {
            Some(p)
        } else {
            return Err(LocationError::BadUrl {
                operand: operand.to_string(),
                why: "unexpected text after ']'",
            });
        };
        (&after[..end], port)
    } else {
        match hostport.find(':') {
            Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
            None => (hostport, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => {
                return Err(LocationError::BadPort {
                    port: p.to_string(),
                    operand: operand.to_string(),
                });
            }
        },
    };
    let path = percent_decode(path).ok_or_else(|| LocationError::BadEscape(operand.to_string()))?;
    Ok(RemoteSpec {
        user,
        host: Some(check_host(operand, host)?),
        port,
        path: non_empty_path(path),
    })
}

/// Why a host or user name cannot be handed to ssh, if it cannot.
fn refusal(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.starts_with('-') {
        Some("it starts with '-' and would be read as an ssh option")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains white space or control characters")
    } else {
        None
    }
}

fn check_host(operand: &str, host: &str) -> Result<String, LocationError> {
    match refusal(host) {
        None => Ok(host.to_string()),
        Some(why) => Err(LocationError::BadHost {
            host: host.to_string(),
            operand: operand.to_string(),
            why,
        }),
    }
}

fn check_user(operand: &str, user: &str) -> Result<String, LocationError> {
    match refusal(user) {
        None => Ok(user.to_string()),
        Some(why) => Err(LocationError::BadUser {
            user: user.to_string(),
            operand: operand.to_string(),
            why,
        }),
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = hex_value(*b.get(i + 1)?)?;
            let lo = hex_value(*b.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(s: &str) -> RemoteSpec {
        match parse_operand(s) {
            Ok(Operand::Remote(r)) => r,
            other => panic!("{s}: expected remote, got {other:?}"),
        }
    }

    fn spec(user: Option<&str>, host: &str, port: Option<u16>, path: &[u8]) -> RemoteSpec {
        RemoteSpec {
            user: user.map(str::to_string),
            host: Some(host.to_string()),
            port,
            path: path.to_vec(),
        }
    }

    #[test]
    fn scp_style() {
        assert_eq!(remote("h:/etc/x"), spec(None, "h", None, b"/etc/x"));
        assert_eq!(remote("u@h:rel/x"), spec(Some("u"), "h", None, b"rel/x"));
        assert_eq!(remote("h:"), spec(None, "h", None, b"."));
        assert_eq!(remote("h:a:b"), spec(None, "h", None, b"a:b"));
        assert_eq!(remote("a@b@h:x"), spec(Some("a@b"), "h", None, b"x"));
        assert_eq!(remote("h:~/x"), spec(None, "h", None, b"~/x"));
    }

    #[test]
    fn colon_after_slash_is_local() {
        for s in ["./a:b", "/a:b", "dir/x:y", "plain", "", "a/b"] {
            assert_eq!(
                parse_operand(s),
                Ok(Operand::Local(PathBuf::from(s))),
                "{s}"
            );
        }
    }

    #[test]
    fn brackets_hold_ipv6() {
        assert_eq!(remote("[::1]:/x"), spec(None, "::1", None, b"/x"));
        assert_eq!(
            remote("u@[fe80::1%eth0]:f"),
            spec(Some("u"), "fe80::1%eth0", None, b"f")
        );
        // Unclosed bracket: no host separator found before the '/'.
        assert!(matches!(parse_operand("[::1/x"), Ok(Operand::Local(_))));
    }

    #[test]
    fn leading_colon_is_hostless_remote() {
        let r = remote(":/tmp/x");
        assert_eq!(r.host, None);
        assert_eq!(r.path, b"/tmp/x");
        assert_eq!(remote(":").path, b".");
    }

    #[test]
    fn urls() {
        assert_eq!(remote("sftp://h"), spec(None, "h", None, b"."));
        assert_eq!(remote("sftp://h/"), spec(None, "h", None, b"."));
        assert_eq!(remote("sftp://h/rel/f"), spec(None, "h", None, b"rel/f"));
        assert_eq!(remote("sftp://h/~/f"), spec(None, "h", None, b"~/f"));
        assert_eq!(remote("sftp://h//abs/f"), spec(None, "h", None, b"/abs/f"));
        assert_eq!(
            remote("SFTP://bob@h:2222//srv"),
            spec(Some("bob"), "h", Some(2222), b"/srv")
        );
        assert_eq!(
            remote("sftp://[::1]:22/x"),
            spec(None, "::1", Some(22), b"x")
        );
        assert_eq!(remote("sftp://h:/x"), spec(None, "h", None, b"x"));
        assert_eq!(
            remote("sftp://j%40x;fingerprint=abc@h/a%20b%ff"),
            spec(Some("j@x"), "h", None, b"a b\xff")
        );
    }

    #[test]
    fn bad_urls() {
        for s in [
            "sftp://h:0/x",
            "sftp://h:70000/x",
            "sftp://h:+22/x",
            "sftp://h:x/",
            "sftp://u:pw@h/",
            "sftp://[::1/x",
            "sftp://[::1]x/",
            "sftp://h/%zz",
            "sftp://h/%4",
            "sftp:///x",
            "sftp://",
        ] {
            assert!(parse_operand(s).is_err(), "{s}");
        }
    }

    #[test]
    fn option_like_names_are_refused() {
        for s in [
            "-oProxyCommand=touch x:y",
            "-v:x",
            "-oProxyCommand=x@h:y",
            "sftp://-oProxyCommand=x/y",
            "sftp://-x@h/y",
            "a b:c",
            "u@:x",
            "@h:x",
        ] {
            assert!(parse_operand(s).is_err(), "{s}");
        }
        // A leading dash in a *path* is fine.
        assert_eq!(remote("h:-x").path, b"-x");
    }

    #[test]
    fn parse_remote_takes_local_looking_operands_as_paths() {
        let r = parse_remote("/tmp/x").unwrap();
        assert_eq!((r.host, r.path), (None, b"/tmp/x".to_vec()));
        assert_eq!(parse_remote("").unwrap().path, b".");
        assert_eq!(parse_remote("h:y").unwrap().host.as_deref(), Some("h"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%2f"), Some(b"a/b/".to_vec()));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%g0"), None);
        assert_eq!(percent_decode("é"), Some("é".as_bytes().to_vec()));
    }
}
