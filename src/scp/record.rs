//! The legacy scp protocol's records and replies, sans I/O: encoding what the client
//! sends to a sink, and parsing, with bounded lengths, what a sink or source answers.

use crate::error::{Error, Result};

/// The longest record line accepted from a server (OpenSSH's and Dropbear's scp read
/// lines into 2048-byte buffers; names up to `NAME_MAX` fit well below this).
pub const MAX_LINE: usize = 4096;

/// One control record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `C<mode> <size> <name>`: a file's header; `size` bytes and a status byte follow.
    File {
        /// Permission bits (at most `0o7777`).
        mode: u32,
        /// Bytes of data that follow.
        size: u64,
        /// The file's name: one path component.
        name: Vec<u8>,
    },
    /// `D<mode> 0 <name>`: enter a directory (created if missing).
    Dir {
        /// Permission bits.
        mode: u32,
        /// The directory's name: one path component.
        name: Vec<u8>,
    },
    /// `E`: leave the directory.
    EndDir,
    /// `T<mtime> 0 <atime> 0`: times for the next `C` or `D`.
    Times {
        /// Modification time, seconds since the epoch.
        mtime: u64,
        /// Access time, seconds since the epoch.
        atime: u64,
    },
}

/// Why a name cannot be one path component on either side, or `None` when it can.
pub fn bad_name(name: &[u8]) -> Option<&'static str> {
    match name {
        b"" => Some("an empty name"),
        b"." | b".." => Some("a '.' or '..' name"),
        n if n.contains(&b'/') => Some("a name with '/'"),
        n if n.contains(&0) => Some("a name with a NUL byte"),
        n if n.contains(&b'\n') => Some("a name with a newline"),
        _ => None,
    }
}

impl Record {
    /// The record's line, newline included. Refuses a name that is not one component or
    /// holds a newline (the protocol ends a record at the first newline).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let (kind, mode, size, name) = match self {
            Record::File { mode, size, name } => ('C', mode, *size, name),
            Record::Dir { mode, name } => ('D', mode, 0, name),
            Record::EndDir => return Ok(b"E\n".to_vec()),
            Record::Times { mtime, atime } => return Ok(format!("T{mtime} 0 {atime} 0\n").into()),
        };
        if let Some(why) = bad_name(name) {
            return Err(Error::InvalidInput(format!(
                "'{}' cannot be sent over the scp protocol: {why}",
                String::from_utf8_lossy(name)
            )));
        }
        let mut line = format!("{kind}{:04o} {size} ", mode & 0o7777).into_bytes();
        line.extend_from_slice(name);
        line.push(b'\n');
        Ok(line)
    }

    /// Parses one record line (without its newline) from a source, refusing what is
    /// malformed and names that are not exactly one safe path component.
    pub fn parse(line: &[u8]) -> Result<Record> {
        let bad = |why: &str| {
            Error::Protocol(format!(
                "bad scp record '{}': {why}",
                String::from_utf8_lossy(&line[..line.len().min(200)])
            ))
        };
        let (&kind, rest) = line.split_first().ok_or_else(|| bad("empty"))?;
        match kind {
            b'E' if rest.is_empty() => Ok(Record::EndDir),
            b'T' => {
                let f: Vec<&[u8]> = rest.split(|&b| b == b' ').collect();
                let [m, mu, a, au] = f[..] else {
                    return Err(bad("expected T<mtime> 0 <atime> 0"));
                };
                let (mtime, atime) = (number(m), number(a));
                match (mtime, number(mu), atime, number(au)) {
                    (Some(mtime), Some(mu), Some(atime), Some(au))
                        if mu < 1_000_000 && au < 1_000_000 =>
                    {
                        Ok(Record::Times { mtime, atime })
                    }
                    _ => Err(bad("bad times")),
                }
            }
            b'C' | b'D' => {
                let mut f = rest.splitn(3, |&b| b == b' ');
                let (Some(m), Some(s), Some(name)) = (f.next(), f.next(), f.next()) else {
                    return Err(bad("expected <mode> <size> <name>"));
                };
                let mode = octal(m).ok_or_else(|| bad("bad mode"))?;
                let size = number(s).ok_or_else(|| bad("bad size"))?;
                if let Some(why) = bad_name(name) {
                    return Err(bad(&format!("the server sent {why}")));
                }
                let name = name.to_vec();
                Ok(if kind == b'C' {
                    Record::File { mode, size, name }
                } else {
                    Record::Dir { mode, name }
                })
            }
            _ => Err(bad("unknown record type")),
        }
    }
}

/// A decimal number of at most 20 digits, no sign.
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Permission bits as exactly 4 octal digits, as OpenSSH and Dropbear send and take.
fn octal(s: &[u8]) -> Option<u32> {
    if s.len() != 4 || !s.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    let m = u32::from_str_radix(std::str::from_utf8(s).ok()?, 8).ok()?;
    (m <= 0o7777).then_some(m)
}

/// A sink's or source's answer to one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `\0`: done.
    Ok,
    /// `\1 message\n`: this step failed, the session goes on.
    Warning(String),
    /// `\2 message\n`: the session is over.
    Fatal(String),
}

/// Splits a stream of replies (`\0`, or `\1`/`\2` and a message line) into [`Reply`]s.
#[derive(Debug, Default)]
pub struct ReplyParser {
    /// The code and message so far of a reply whose newline has not come yet.
    partial: Option<(u8, Vec<u8>)>,
}

impl ReplyParser {
    /// Consumes bytes of `input` up to and including one whole reply; returns how many
    /// it consumed and the reply, if one completed.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<Reply>)> {
        let mut used = 0;
        for &b in input {
            used += 1;
            let Some((code, msg)) = &mut self.partial else {
                match b {
                    0 => return Ok((used, Some(Reply::Ok))),
                    1 | 2 => self.partial = Some((b, Vec::new())),
                    other => {
                        return Err(Error::Protocol(format!(
                            "unexpected byte {other:#04x} from the scp sink where a reply \
                             belongs"
                        )));
                    }
                }
                continue;
            };
            if b != b'\n' {
                if msg.len() >= MAX_LINE {
                    return Err(Error::Protocol("scp reply longer than 4096 bytes".into()));
                }
                msg.push(b);
                continue;
            }
            let text = String::from_utf8_lossy(msg).trim().to_string();
            let reply = if *code == 1 {
                Reply::Warning(text)
            } else {
                Reply::Fatal(text)
            };
            self.partial = None;
            return Ok((used, Some(reply)));
        }
        Ok((used, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_encode_as_openssh_sends_them() {
        let c = Record::File {
            mode: 0o100644,
            size: 21,
            name: b"a b".to_vec(),
        };
        assert_eq!(c.encode().unwrap(), b"C0644 21 a b\n");
        let d = Record::Dir {
            mode: 0o755,
            name: b"-d".to_vec(),
        };
        assert_eq!(d.encode().unwrap(), b"D0755 0 -d\n");
        assert_eq!(Record::EndDir.encode().unwrap(), b"E\n");
        let t = Record::Times { mtime: 1, atime: 2 };
        assert_eq!(t.encode().unwrap(), b"T1 0 2 0\n");
        for bad in [&b"a\nb"[..], b"a/b", b"..", b"", b"a\0"] {
            let r = Record::File {
                mode: 0o644,
                size: 0,
                name: bad.to_vec(),
            };
            assert!(r.encode().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn records_parse_back_and_bad_ones_are_refused() {
        for r in [
            Record::File {
                mode: 0o4755,
                size: u64::MAX,
                name: b"x $`'".to_vec(),
            },
            Record::Dir {
                mode: 0o700,
                name: b"d".to_vec(),
            },
            Record::EndDir,
            Record::Times {
                mtime: 1_700_000_000,
                atime: 3,
            },
        ] {
            let line = r.encode().unwrap();
            assert_eq!(Record::parse(&line[..line.len() - 1]).unwrap(), r);
        }
        for bad in [
            &b"C0644 5 ../x"[..],
            b"C0644 5 /etc/passwd",
            b"C0644 5 a/b",
            b"C0644 5 .",
            b"C0644 5 ..",
            b"C0644 5 ",
            b"C0644 5 a\0b",
            b"C0644 -5 a",
            b"C0644 5",
            b"C9999 5 a",
            b"C0644 99999999999999999999999 a",
            b"D0755 0 ..",
            b"Ex",
            b"T1 0 2",
            b"T1 0 2 x",
            b"X",
            b"",
            b"C064 5 a b c",
        ] {
            assert!(
                Record::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // The name is everything after the second space.
        assert_eq!(
            Record::parse(b"C0644 1 a b").unwrap(),
            Record::File {
                mode: 0o644,
                size: 1,
                name: b"a b".to_vec()
            }
        );
    }

    #[test]
    fn replies_split_across_reads() {
        let mut p = ReplyParser::default();
        assert_eq!(p.feed(b"\0\x01scp: x").unwrap(), (1, Some(Reply::Ok)));
        assert_eq!(p.feed(b"\x01scp: x").unwrap(), (7, None));
        assert_eq!(
            p.feed(b": denied\n\0").unwrap(),
            (9, Some(Reply::Warning("scp: x: denied".into())))
        );
        assert_eq!(
            p.feed(b"\x02bye\n").unwrap(),
            (5, Some(Reply::Fatal("bye".into())))
        );
        assert!(p.feed(b"junk").is_err());
        let mut p = ReplyParser::default();
        let long = [vec![1u8], vec![b'a'; MAX_LINE + 1]].concat();
        assert!(p.feed(&long).is_err());
    }
}
