//! Downloads: one remote `scp -f` (source) session, every record checked by
//! [`SourceParser`], every file written to a temporary name in its directory and renamed
//! into place once whole, nothing created outside the target.

use std::fs::{self, File, FileTimes};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::conn::Conn;
use super::record::Record;
use super::source::{Event, SourceParser};
use super::{Report, ScpEvent, ScpOptions};
use crate::error::{Error, Result};

/// Answers sent before the records they answer.
const ACKS_AHEAD: usize = 64;

/// A file being received.
struct Incoming {
    temp: PathBuf,
    dest: PathBuf,
    file: File,
    mode: u32,
    size: u64,
    times: Option<(u64, u64)>,
}

/// A directory being received.
struct OpenDir {
    path: PathBuf,
    mode: u32,
    times: Option<(u64, u64)>,
}

/// The receiving side of one source session.
pub struct Downloader<'a> {
    conn: Conn,
    parser: SourceParser,
    /// Where the requested file or tree goes (its top-level record is renamed to it).
    dest: PathBuf,
    o: ScpOptions<'a>,
    remote: String,
    dirs: Vec<OpenDir>,
    file: Option<Incoming>,
    report: Report,
    /// The source's input is closed (it exited): answers are not sent any more.
    source_gone: bool,
}

impl<'a> Downloader<'a> {
    /// A download of `remote` (whose last component is `name`) to `dest`.
    pub fn new(
        conn: Conn,
        remote: &[u8],
        name: &[u8],
        dest: &Path,
        o: ScpOptions<'a>,
    ) -> Downloader<'a> {
        Downloader {
            conn,
            parser: SourceParser::new(name, o.recursive),
            dest: dest.to_path_buf(),
            o,
            remote: String::from_utf8_lossy(remote).into_owned(),
            dirs: Vec::new(),
            file: None,
            report: Report::default(),
            source_gone: false,
        }
    }

    /// Receives everything; a refused record ends it with an error, the temporary file
    /// removed and the source killed.
    pub fn run(mut self) -> Result<Report> {
        match self.receive() {
            Ok(()) => {
                let exit = self.conn.finish();
                match exit {
                    // The source exits 1 after any warning, which the report holds.
                    Err(e) if self.report.failures.is_empty() => Err(e),
                    _ => Ok(self.report),
                }
            }
            Err(e) => {
                if let Some(f) = self.file.take() {
                    let _ = fs::remove_file(&f.temp);
                }
                self.conn.abort();
                Err(e)
            }
        }
    }

    fn receive(&mut self) -> Result<()> {
        // The start, and answers ahead: a source reads an answer only to go on (see the
        // module documentation of `scp`), so it never waits a round trip for one.
        self.conn.write_all(&[0; 1 + ACKS_AHEAD])?;
        loop {
            let input = self.conn.peek()?;
            if input.is_empty() {
                if let Some(e) = self.parser.at_eof() {
                    return Err(self.conn.failure().unwrap_or(e));
                }
                if !self.parser.complete() && self.report.failures.is_empty() {
                    let e =
                        Error::Protocol(format!("the server sent nothing for '{}'", self.remote));
                    return Err(self.conn.failure().unwrap_or(e));
                }
                return Ok(());
            }
            let (used, event) = self.parser.feed(input)?;
            if let Some(Event::Data(n)) = &event {
                let data = &input[used - n..used];
                if let Some(f) = &mut self.file {
                    f.file.write_all(data).map_err(|e| {
                        Error::local(format!("cannot write {}", f.temp.display()), e)
                    })?;
                }
                self.o.tell(ScpEvent::Bytes(*n as u64));
            }
            self.conn.consume(used);
            let Some(event) = event else { continue };
            let ack = event.needs_ack();
            self.handle(event)?;
            // With answers ahead the source may be done and gone already: a failed write
            // is no error, what was read tells whether all came.
            if ack && !self.source_gone && self.conn.write_all(b"\0").is_err() {
                self.source_gone = true;
            }
        }
    }

    fn handle(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Start {
                record: Record::File { mode, size, name },
                times,
            } => self.start_file(&name, mode, size, times),
            Event::Start {
                record: Record::Dir { mode, name },
                times,
            } => self.enter_dir(&name, mode, times),
            Event::FileEnd => self.end_file(),
            Event::DirEnd => self.leave_dir(),
            Event::Warning(m) => {
                let hint = if !self.o.recursive && m.ends_with("not a regular file") {
                    " (use get -r for a directory)"
                } else {
                    ""
                };
                let e = super::remote_error("download", &self.remote, &format!("{m}{hint}"));
                self.report.failures.push((self.remote.clone(), e));
                Ok(())
            }
            Event::Start { .. } | Event::Times | Event::Data(_) => Ok(()),
        }
    }

    /// Where a top-level or nested entry called `name` goes.
    fn place(&self, name: &[u8]) -> PathBuf {
        match self.dirs.last() {
            Some(d) => d.path.join(std::ffi::OsStr::from_bytes(name)),
            None => self.dest.clone(),
        }
    }

    fn start_file(
        &mut self,
        name: &[u8],
        mode: u32,
        size: u64,
        times: Option<(u64, u64)>,
    ) -> Result<()> {
        let dest = self.place(name);
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = dest
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let mut temp_name = b".".to_vec();
        temp_name.extend_from_slice(&base);
        temp_name.extend_from_slice(format!(".sftpipe-scp-{}", std::process::id()).as_bytes());
        let temp = dir.join(std::ffi::OsStr::from_bytes(&temp_name));
        let _ = fs::remove_file(&temp);
        // create_new: never through a link someone left at the temporary name.
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| Error::local(format!("cannot create {}", temp.display()), e))?;
        self.o
            .tell(ScpEvent::File(&dest.display().to_string(), size));
        self.file = Some(Incoming {
            temp,
            dest,
            file,
            mode,
            size,
            times,
        });
        Ok(())
    }

    fn end_file(&mut self) -> Result<()> {
        let Some(f) = self.file.take() else {
            return Err(Error::Protocol("file data without a file".into()));
        };
        let written = f.file.metadata().map(|m| m.len()).unwrap_or(0);
        let r = self.settle_file(&f, written);
        if r.is_err() {
            let _ = fs::remove_file(&f.temp);
        }
        r?;
        self.report.files += 1;
        self.report.bytes += f.size;
        self.report
            .done
            .push((f.dest.display().to_string(), f.size));
        Ok(())
    }

    fn settle_file(&self, f: &Incoming, written: u64) -> Result<()> {
        let local = |what: &str, e| Error::local(format!("cannot {what} {}", f.dest.display()), e);
        if written != f.size {
            return Err(Error::Protocol(format!(
                "'{}': {written} bytes arrived, the server announced {}",
                f.dest.display(),
                f.size
            )));
        }
        let mode = if self.o.preserve {
            f.mode & 0o7777
        } else {
            0o666 & !umask()
        };
        f.file
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| local("set the mode of", e))?;
        if self.o.preserve
            && let Some((m, a)) = f.times
        {
            f.file
                .set_times(file_times(m, a)?)
                .map_err(|e| local("set the times of", e))?;
        }
        fs::rename(&f.temp, &f.dest).map_err(|e| local("rename a temporary file to", e))
    }

    fn enter_dir(&mut self, name: &[u8], mode: u32, times: Option<(u64, u64)>) -> Result<()> {
        let path = self.place(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::local(
                    format!("cannot make directory {}", path.display()),
                    std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                ));
            }
            Err(_) => fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .map_err(|e| {
                    Error::local(format!("cannot make directory {}", path.display()), e)
                })?,
        }
        self.dirs.push(OpenDir { path, mode, times });
        Ok(())
    }

    /// A directory is complete: its mode (the record's with `-p`, else the umask's
    /// default) and, with `-p`, its times.
    fn leave_dir(&mut self) -> Result<()> {
        let Some(d) = self.dirs.pop() else {
            return Ok(());
        };
        let mode = if self.o.preserve {
            d.mode & 0o7777
        } else {
            0o777 & !umask()
        };
        fs::set_permissions(&d.path, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::local(format!("cannot set the mode of {}", d.path.display()), e))?;
        if self.o.preserve
            && let Some((m, a)) = d.times
        {
            let times = file_times(m, a)?;
            let r = File::open(&d.path).and_then(|f| f.set_times(times));
            r.map_err(|e| {
                Error::local(format!("cannot set the times of {}", d.path.display()), e)
            })?;
        }
        Ok(())
    }
}

/// The times of a `T` record; one this system cannot represent is a protocol error.
fn file_times(mtime: u64, atime: u64) -> Result<FileTimes> {
    let at = |s: u64| {
        i64::try_from(s)
            .ok()
            .and_then(|_| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)))
            .ok_or_else(|| Error::Protocol(format!("the server sent an impossible time: {s}")))
    };
    Ok(FileTimes::new()
        .set_modified(at(mtime)?)
        .set_accessed(at(atime)?))
}

/// The process's umask (read by setting it and putting it back).
fn umask() -> u32 {
    use nix::sys::stat::{Mode, umask};
    let old = umask(Mode::from_bits_truncate(0o022));
    umask(old);
    old.bits()
}
