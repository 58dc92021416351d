//! Uploads: one remote `scp -t` (sink) session takes every file and tree of a `put`,
//! pipelined as far as the sinks allow (see the module documentation of [`super`]).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::conn::Conn;
use super::record::{Record, Reply, ReplyParser};
use super::{Report, ScpEvent, ScpOptions, remote_error};
use crate::error::{Error, Result};

/// Bytes read from a local file per write to ssh.
const CHUNK: usize = 256 * 1024;

/// A reply the sink owes, and what it answers.
#[derive(Debug)]
enum Pending {
    /// The `\0` the sink sends when it starts.
    Ready,
    /// A `T` record's.
    Times,
    /// A `C` header's: the file is open on the server.
    Header,
    /// A `D` record's: the directory exists.
    Dir,
    /// A file's final one (its path shown, its size): it is written.
    Written(String, u64),
    /// An `E` record's.
    End,
}

/// The sending side of one sink session.
pub struct Uploader<'a> {
    conn: Conn,
    parser: ReplyParser,
    pending: VecDeque<Pending>,
    o: ScpOptions<'a>,
    /// The remote target as given, for paths in messages.
    target: String,
    /// What happened so far.
    pub report: Report,
}

impl<'a> Uploader<'a> {
    /// The sending side over `conn` (running `scp -t`) to `target` (for messages).
    pub fn new(conn: Conn, target: &[u8], o: ScpOptions<'a>) -> Uploader<'a> {
        Uploader {
            conn,
            parser: ReplyParser::default(),
            pending: VecDeque::from([Pending::Ready]),
            o,
            target: String::from_utf8_lossy(target).into_owned(),
            report: Report::default(),
        }
    }

    /// Sends one local file or (recursively) directory under `name`. An error ends the
    /// session; what failed for one file only is in the report.
    pub fn send(&mut self, local: &Path, name: &[u8]) -> Result<()> {
        let shown = super::join_shown(&self.target, name);
        let meta = match fs::metadata(local) {
            Ok(m) => m,
            Err(e) => {
                let e = Error::local(format!("cannot stat {}", local.display()), e);
                self.report.failures.push((local.display().to_string(), e));
                return Ok(());
            }
        };
        if meta.is_dir() {
            self.send_dir(local, name, &meta, &shown)
        } else {
            self.send_file(local, name, &shown)
        }
    }

    /// Waits for every reply still owed, then ends the session.
    pub fn finish(mut self) -> Result<Report> {
        self.settle()?;
        let exit = self.conn.finish();
        // The sink exits 1 after any warning, which the report already holds.
        match exit {
            Err(e) if self.report.failures.is_empty() => Err(e),
            _ => Ok(self.report),
        }
    }

    fn send_file(&mut self, local: &Path, name: &[u8], shown: &str) -> Result<()> {
        let fail = |r: &mut Report, e: Error| r.failures.push((shown.to_string(), e));
        let opened = File::open(local).and_then(|f| Ok((f.metadata()?, f)));
        let (meta, mut file) = match opened {
            Ok(m) if m.0.is_file() => m,
            Ok(_) => {
                let why = format!("'{}' is not a regular file: skipped", local.display());
                fail(&mut self.report, Error::InvalidInput(why));
                return Ok(());
            }
            Err(e) => {
                fail(
                    &mut self.report,
                    Error::local(format!("cannot open {}", local.display()), e),
                );
                return Ok(());
            }
        };
        let size = meta.len();
        let header = Record::File {
            mode: meta.mode(),
            size,
            name: name.to_vec(),
        };
        let header = match header.encode() {
            Ok(h) => h,
            Err(e) => {
                fail(&mut self.report, e);
                return Ok(());
            }
        };
        self.send_times(&meta)?;
        self.conn.write_all(&header)?;
        self.pending.push_back(Pending::Header);
        // Required wait: a refused header leaves the sink reading the data as records.
        if let Reply::Warning(m) = self.settle()? {
            fail(&mut self.report, remote_error("upload", shown, &m));
            return Ok(());
        }
        self.o.tell(ScpEvent::File(shown, size));
        let status = self.copy(&mut file, size, local)?;
        match status {
            None => {
                self.conn.write_all(b"\0")?;
                self.pending
                    .push_back(Pending::Written(shown.to_string(), size));
            }
            Some(e) => {
                // Sent whole (padded) so the stream stays in step, but marked failed (a
                // status line without the path, which could hold a newline).
                self.conn.write_all(b"\x01sftpipe: local read failed\n")?;
                self.pending.push_back(Pending::Written(String::new(), 0));
                fail(&mut self.report, e);
            }
        }
        Ok(())
    }

    /// Sends exactly `size` bytes of `file`; a file that shrank or failed to read is
    /// padded with zeros and its error returned.
    fn copy(&mut self, file: &mut File, size: u64, local: &Path) -> Result<Option<Error>> {
        let mut buf = vec![0u8; CHUNK.min(size as usize).max(1)];
        let mut left = size;
        let mut failed = None;
        while left > 0 {
            let want = (left.min(buf.len() as u64)) as usize;
            let n = if failed.is_some() {
                buf[..want].fill(0);
                want
            } else {
                match file.read(&mut buf[..want]) {
                    Ok(0) => {
                        let e = std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the file shrank while it was sent",
                        );
                        failed = Some(Error::local(format!("cannot read {}", local.display()), e));
                        continue;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        failed = Some(Error::local(format!("cannot read {}", local.display()), e));
                        continue;
                    }
                }
            };
            self.conn.write_all(&buf[..n])?;
            self.o.tell(ScpEvent::Bytes(n as u64));
            left -= n as u64;
        }
        Ok(failed)
    }

    fn send_dir(
        &mut self,
        local: &Path,
        name: &[u8],
        meta: &fs::Metadata,
        shown: &str,
    ) -> Result<()> {
        let entries = match list_dir(local) {
            Ok(e) => e,
            Err(e) => {
                self.report.failures.push((shown.to_string(), e));
                return Ok(());
            }
        };
        if !self.open_dir(name, meta, shown)? {
            return Ok(());
        }
        let target = std::mem::replace(&mut self.target, shown.to_string());
        let mut r = Ok(());
        for (path, name) in entries {
            r = self.send_entry(&path, &name);
            if r.is_err() {
                break;
            }
        }
        self.target = target;
        r?;
        self.close_dir()
    }

    /// Sends `D` for a directory (with `T` first with `-p`) and waits for its answer:
    /// false when the sink refused it (then it is in the report, and nothing goes in).
    /// The directory's entries go next (shown under `shown`), then [`Uploader::close_dir`].
    pub fn open_dir(&mut self, name: &[u8], meta: &fs::Metadata, shown: &str) -> Result<bool> {
        let record = Record::Dir {
            mode: meta.mode(),
            name: name.to_vec(),
        };
        let record = match record.encode() {
            Ok(r) => r,
            Err(e) => {
                self.report.failures.push((shown.to_string(), e));
                return Ok(false);
            }
        };
        self.send_times(meta)?;
        self.conn.write_all(&record)?;
        self.pending.push_back(Pending::Dir);
        // Required wait: after a refused D the sink would put the contents one level up.
        if let Reply::Warning(m) = self.settle()? {
            self.report
                .failures
                .push((shown.to_string(), remote_error("upload", shown, &m)));
            return Ok(false);
        }
        Ok(true)
    }

    /// Sends `E`: the directory [`Uploader::open_dir`] opened is complete (with `-p` the
    /// sink sets its times now).
    pub fn close_dir(&mut self) -> Result<()> {
        self.conn.write_all(&Record::EndDir.encode()?)?;
        self.pending.push_back(Pending::End);
        Ok(())
    }

    /// Paths in messages are shown under `dir` from now on.
    pub fn show_under(&mut self, dir: &str) {
        self.target = dir.to_string();
    }

    /// An entry of a directory being sent: links are followed with `follow_links`, else
    /// skipped (scp cannot make links).
    pub fn send_entry(&mut self, path: &Path, name: &[u8]) -> Result<()> {
        let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if is_link && !self.o.follow_links {
            let shown = super::join_shown(&self.target, name);
            let why = format!(
                "'{}' is a symbolic link: skipped (the scp protocol cannot make links; -L \
                 sends what it points to)",
                path.display()
            );
            self.report.failures.push((shown, Error::InvalidInput(why)));
            return Ok(());
        }
        self.send(path, name)
    }

    fn send_times(&mut self, meta: &fs::Metadata) -> Result<()> {
        if !self.o.preserve {
            return Ok(());
        }
        let t = Record::Times {
            mtime: meta.mtime().max(0) as u64,
            atime: meta.atime().max(0) as u64,
        };
        self.conn.write_all(&t.encode()?)?;
        self.pending.push_back(Pending::Times);
        Ok(())
    }

    /// Reads replies until none is owed; returns the last one (the one a caller waits
    /// for). Warnings for written files go into the report; a fatal reply ends it all.
    fn settle(&mut self) -> Result<Reply> {
        let mut last = Reply::Ok;
        while let Some(p) = self.pending.pop_front() {
            let reply = self.next_reply()?;
            match (&p, &reply) {
                (_, Reply::Fatal(m)) => return Err(remote_error("upload", &self.target, m)),
                (Pending::Ready, Reply::Warning(m)) => {
                    return Err(remote_error("upload", &self.target, m));
                }
                (Pending::Written(shown, size), Reply::Ok) if !shown.is_empty() => {
                    self.report.files += 1;
                    self.report.bytes += size;
                    self.report.done.push((shown.clone(), *size));
                }
                (Pending::Written(shown, _), Reply::Warning(m)) if !shown.is_empty() => {
                    let e = remote_error("upload", shown, m);
                    self.report.failures.push((shown.clone(), e));
                }
                (Pending::Times | Pending::End, Reply::Warning(m)) => {
                    let e = remote_error("upload", &self.target, m);
                    self.report.failures.push((self.target.clone(), e));
                }
                _ => {}
            }
            last = reply;
        }
        Ok(last)
    }

    fn next_reply(&mut self) -> Result<Reply> {
        loop {
            let input = self.conn.peek()?;
            if input.is_empty() {
                return Err(self.ended());
            }
            let (used, reply) = self.parser.feed(input)?;
            self.conn.consume(used);
            if let Some(r) = reply {
                return Ok(r);
            }
        }
    }

    /// The error for a sink that stopped answering: ssh's exit and last words.
    fn ended(&mut self) -> Error {
        self.conn.lost()
    }
}

/// A directory's entries, sorted by name: each path with its name.
pub fn list_dir(dir: &Path) -> Result<Vec<(std::path::PathBuf, Vec<u8>)>> {
    let entries = fs::read_dir(dir)
        .and_then(|d| d.collect::<std::io::Result<Vec<_>>>())
        .map_err(|e| Error::local(format!("cannot list {}", dir.display()), e))?;
    let mut out: Vec<_> = entries
        .into_iter()
        .map(|e| (e.path(), e.file_name().as_bytes().to_vec()))
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}
