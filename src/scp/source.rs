//! Reading what a remote `scp -f` (source) sends, sans I/O, and checking it the way
//! a hostile server requires (the CVE-2019-6111 / CVE-2018-20685 class of bugs).
//!
//! [`SourceParser::feed`] turns bytes into [`Event`]s; the driver acks what needs an
//! ack ([`Event::needs_ack`]) and writes the data. The parser refuses names that are
//! not one safe component, a top-level name other than the one requested, a second
//! top-level entry, a directory without `-r`, an `E` that closes nothing, times not
//! followed by a file or directory, a missing status byte after a file's data (more or
//! less data than announced), and a stream that ends inside a file or directory.

use super::record::{MAX_LINE, Record};
use crate::error::{Error, Result};

/// Directory nesting accepted from a server.
pub const MAX_DEPTH: usize = 512;

/// What the stream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A file starts (`Record::File`) or a directory is entered (`Record::Dir`), with the
    /// times of a `T` record before it.
    Start {
        /// The `C` or `D` record.
        record: Record,
        /// `(mtime, atime)` when times came first.
        times: Option<(u64, u64)>,
    },
    /// This many bytes of the current file: the last ones [`SourceParser::feed`] consumed.
    Data(usize),
    /// The current file's bytes are all there and the source says it read them fine.
    FileEnd,
    /// `E`: the current directory is complete.
    DirEnd,
    /// A `T` record (times for what comes next).
    Times,
    /// `\1 message`: the source could not send something; it goes on with the next.
    Warning(String),
}

impl Event {
    /// True when the source waits for a `\0` after this.
    pub fn needs_ack(&self) -> bool {
        matches!(
            self,
            Event::Start { .. } | Event::FileEnd | Event::DirEnd | Event::Times
        )
    }
}

#[derive(Debug)]
enum State {
    /// Reading a record line (or a reply byte at the start of one).
    Line(Vec<u8>),
    /// Inside a file: bytes still to come.
    Data(u64),
    /// After a file's data: its status byte.
    Status,
    /// After `\1`/`\2` following a file's data: the message.
    StatusMessage(Vec<u8>),
}

/// The checking parser for one `scp -f` stream.
#[derive(Debug)]
pub struct SourceParser {
    state: State,
    expected: Vec<u8>,
    recursive: bool,
    depth: usize,
    top_seen: bool,
    times: Option<(u64, u64)>,
}

impl SourceParser {
    /// A parser for the download of the file or (with `recursive`) tree named `expected`
    /// (the requested path's last component, which is all a source may call it).
    pub fn new(expected: &[u8], recursive: bool) -> SourceParser {
        SourceParser {
            state: State::Line(Vec::new()),
            expected: expected.to_vec(),
            recursive,
            depth: 0,
            top_seen: false,
            times: None,
        }
    }

    /// True once the requested file or tree arrived whole.
    pub fn complete(&self) -> bool {
        self.top_seen && self.depth == 0 && matches!(&self.state, State::Line(l) if l.is_empty())
    }

    /// The error for a stream that ended now, or `None` when ending is fine.
    pub fn at_eof(&self) -> Option<Error> {
        let why = match &self.state {
            State::Data(left) => {
                format!("the server closed the stream with {left} bytes of a file missing")
            }
            State::Status | State::StatusMessage(_) => {
                "the server closed the stream after a file's data".into()
            }
            State::Line(l) if !l.is_empty() => {
                "the server closed the stream inside a record".into()
            }
            _ if self.depth > 0 => "the server closed the stream inside a directory".into(),
            _ if self.times.is_some() => "the server closed the stream after a T record".into(),
            _ => return None,
        };
        Some(Error::Protocol(why))
    }

    /// Consumes bytes of `input` up to one event; returns how many and the event.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<Event>)> {
        match &mut self.state {
            State::Data(left) => {
                let n = (*left).min(input.len() as u64) as usize;
                *left -= n as u64;
                if *left == 0 {
                    self.state = State::Status;
                }
                Ok((n, (n > 0).then_some(Event::Data(n))))
            }
            State::Status => {
                let Some(&b) = input.first() else {
                    return Ok((0, None));
                };
                match b {
                    0 => {
                        self.state = State::Line(Vec::new());
                        Ok((1, Some(Event::FileEnd)))
                    }
                    1 | 2 => {
                        self.state = State::StatusMessage(Vec::new());
                        Ok((1, None))
                    }
                    _ => Err(Error::Protocol(
                        "the server sent more data than the file's announced size".into(),
                    )),
                }
            }
            State::StatusMessage(msg) => {
                let (used, line) = take_line(msg, input)?;
                match line {
                    Some(text) => Err(Error::Protocol(format!(
                        "the server failed while sending a file: {}",
                        String::from_utf8_lossy(&text)
                    ))),
                    None => Ok((used, None)),
                }
            }
            State::Line(buf) => {
                if buf.is_empty() {
                    match input.first() {
                        None => return Ok((0, None)),
                        Some(b'\n') => return Err(Error::Protocol("empty scp record".into())),
                        _ => {}
                    }
                }
                let (used, line) = take_line(buf, input)?;
                let Some(line) = line else {
                    return Ok((used, None));
                };
                Ok((used, Some(self.record(&line)?)))
            }
        }
    }

    /// Checks a whole record line and moves on.
    fn record(&mut self, line: &[u8]) -> Result<Event> {
        match line.first() {
            Some(&c @ (1 | 2)) => {
                let text = String::from_utf8_lossy(&line[1..]).trim().to_string();
                if c == 2 {
                    return Err(Error::Protocol(format!("the server gave up: {text}")));
                }
                return Ok(Event::Warning(text));
            }
            Some(0) => return Err(Error::Protocol("a stray \\0 where a record belongs".into())),
            _ => {}
        }
        let record = Record::parse(line)?;
        if self.times.is_some() && matches!(record, Record::EndDir | Record::Times { .. }) {
            return Err(Error::Protocol(
                "a T record not followed by a file or directory".into(),
            ));
        }
        match record {
            Record::Times { mtime, atime } => {
                self.times = Some((mtime, atime));
                Ok(Event::Times)
            }
            Record::EndDir => {
                if self.depth == 0 {
                    return Err(Error::Protocol("an E record closing no directory".into()));
                }
                self.depth -= 1;
                Ok(Event::DirEnd)
            }
            Record::File { size, ref name, .. } => {
                self.top_level(name)?;
                self.state = if size == 0 {
                    State::Status
                } else {
                    State::Data(size)
                };
                Ok(Event::Start {
                    record,
                    times: self.times.take(),
                })
            }
            Record::Dir { ref name, .. } => {
                if !self.recursive {
                    return Err(Error::Protocol(format!(
                        "the server sent directory '{}' for a file download",
                        String::from_utf8_lossy(name)
                    )));
                }
                self.top_level(name)?;
                if self.depth >= MAX_DEPTH {
                    return Err(Error::Protocol(format!(
                        "directories nested deeper than {MAX_DEPTH}"
                    )));
                }
                self.depth += 1;
                Ok(Event::Start {
                    record,
                    times: self.times.take(),
                })
            }
        }
    }

    /// At the top level, only one entry, named as requested.
    fn top_level(&mut self, name: &[u8]) -> Result<()> {
        if self.depth > 0 {
            return Ok(());
        }
        if self.top_seen {
            return Err(Error::Protocol(format!(
                "the server sent '{}' after the requested '{}'",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(&self.expected)
            )));
        }
        if name != self.expected {
            return Err(Error::Protocol(format!(
                "the server sent '{}' instead of the requested '{}'",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(&self.expected)
            )));
        }
        self.top_seen = true;
        Ok(())
    }
}

/// Adds `input` to `buf` up to a newline; returns the bytes used and, at the newline,
/// the whole line (without it). Lines are bounded by [`MAX_LINE`].
fn take_line(buf: &mut Vec<u8>, input: &[u8]) -> Result<(usize, Option<Vec<u8>>)> {
    let (used, done) = match input.iter().position(|&b| b == b'\n') {
        Some(i) => (i + 1, true),
        None => (input.len(), false),
    };
    let body = if done { &input[..used - 1] } else { input };
    if buf.len() + body.len() > MAX_LINE {
        return Err(Error::Protocol(format!(
            "scp record longer than {MAX_LINE} bytes"
        )));
    }
    buf.extend_from_slice(body);
    Ok((used, done.then(|| std::mem::take(buf))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All events of `stream` fed in pieces of `step` bytes, data counted per file.
    fn run(expected: &str, recursive: bool, stream: &[u8], step: usize) -> Result<Vec<Event>> {
        let mut p = SourceParser::new(expected.as_bytes(), recursive);
        let mut out = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let end = (at + step).min(stream.len());
            let (used, ev) = p.feed(&stream[at..end])?;
            at += used;
            match (ev, out.last_mut()) {
                (Some(Event::Data(n)), Some(Event::Data(m))) => *m += n,
                (Some(e), _) => out.push(e),
                (None, _) => {}
            }
        }
        match p.at_eof() {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    #[test]
    fn a_tree_in_any_split_gives_the_same_events() {
        let s = b"D0755 0 top\nT5 0 6 0\nC0644 3 a b\nxyz\0C0600 0 e\n\0D0700 0 sub\nE\nE\n";
        let want = run("top", true, s, s.len()).unwrap();
        assert_eq!(want.iter().filter(|e| e.needs_ack()).count(), 9);
        assert_eq!(
            want[2],
            Event::Start {
                record: Record::File {
                    mode: 0o644,
                    size: 3,
                    name: b"a b".to_vec()
                },
                times: Some((5, 6)),
            }
        );
        for step in 1..8 {
            assert_eq!(run("top", true, s, step).unwrap(), want, "step {step}");
        }
    }

    #[test]
    fn hostile_streams_are_refused() {
        let cases: [(&str, bool, &[u8]); 14] = [
            ("a", false, b"C0644 1 b\nx\0"),
            ("a", false, b"C0644 1 a\nx\0C0644 1 b\ny\0"),
            ("a", false, b"C0644 1 ../a\nx\0"),
            ("a", false, b"D0755 0 a\nE\n"),
            ("d", true, b"D0755 0 d\nC0644 1 /etc/x\nx\0E\n"),
            ("d", true, b"D0755 0 d\nC0644 1 ..\nx\0E\n"),
            ("d", true, b"D0755 0 d\nD0755 0 .\nE\nE\n"),
            ("d", true, b"D0755 0 d\nE\nE\n"),
            ("d", true, b"D0755 0 d\nC0644 1 x\nx\0"),
            ("a", false, b"C0644 5 a\nxy"),
            ("a", false, b"C0644 1 a\nxyz"),
            ("a", false, b"C0644 1 a\nx\x01read error\n"),
            ("a", false, b"T1 0 1 0\nE\n"),
            ("a", false, b"\x02no\n"),
        ];
        for (name, r, s) in cases {
            assert!(
                run(name, r, s, 3).is_err(),
                "{}",
                String::from_utf8_lossy(s)
            );
        }
        let long = [&b"C0644 1 "[..], &vec![b'a'; MAX_LINE]].concat();
        assert!(run("a", false, &long, 100).is_err());
        assert!(run("a", false, b"\x01scp: a: No such file\n", 4).unwrap()[0] != Event::FileEnd);
    }
}
