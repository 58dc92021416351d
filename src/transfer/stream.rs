//! Streaming one remote file to or from a descriptor that cannot seek (standard input or
//! output in a pipe): `get host:f -` and `put - host:f`.
//!
//! Pipes and sockets are driven by the reactor ([`AsyncFd`]), so waiting for the other
//! end never stalls the connection; other descriptors (a regular file, a terminal,
//! `/dev/null`, which epoll refuses) are read and written directly. Memory stays bounded:
//! one chunk buffer for reading, and at most `requests` requests in flight.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::{Transfer, temp_name};
use crate::client::{read_reply, write_reply};
use crate::error::{Error, Result};
use crate::proto::{FileAttributes, OpenFlags, Request};
use crate::reactor::{AsyncFd, Reactor};

/// Standard input or output (or another descriptor) to stream through.
pub enum StreamFd {
    /// A pipe or socket, awaited in the reactor's loop.
    Polled(Rc<AsyncFd>),
    /// Anything else, read and written directly (never owned: not closed on drop).
    Direct(ManuallyDrop<File>),
}

impl StreamFd {
    /// Wraps `fd`, which must stay open as long as this lives (0 and 1 do).
    pub fn new(reactor: &Rc<Reactor>, fd: RawFd) -> io::Result<StreamFd> {
        let st = nix::sys::stat::fstat(
            // SAFETY: borrowed only for this call; the caller keeps `fd` open.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        )?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFIFO || kind == libc::S_IFSOCK {
            return Ok(StreamFd::Polled(AsyncFd::new(reactor, fd)?));
        }
        // SAFETY: ManuallyDrop keeps the File from closing a descriptor it does not own.
        Ok(StreamFd::Direct(ManuallyDrop::new(unsafe {
            File::from_raw_fd(fd)
        })))
    }

    /// Reads until `buf` is full or the input ends; returns the bytes read.
    async fn fill(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            let n = match self {
                StreamFd::Polled(a) => a.read(&mut buf[got..]).await?,
                StreamFd::Direct(f) => match (&**f).read(&mut buf[got..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        match crate::interrupt::interrupted_message() {
                            Some(m) => return Err(io::Error::other(m)),
                            None => continue,
                        }
                    }
                    r => r?,
                },
            };
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok(got)
    }

    async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        match self {
            StreamFd::Polled(a) => a.write_all(data).await,
            StreamFd::Direct(f) => (&**f).write_all(data),
        }
    }
}

impl Transfer {
    /// Uploads what `input` yields, until it ends, to `remote`: through a temporary name
    /// renamed onto `remote` at the end (unless `inplace`), so a reader never sees part
    /// of it. WRITEs are pipelined, `requests` at most in flight. Returns bytes sent.
    pub async fn upload_stream(&self, input: &StreamFd, remote: &[u8]) -> Result<u64> {
        self.ready().await;
        let dest = if self.opts.inplace {
            remote.to_vec()
        } else {
            temp_name(remote)
        };
        let flags = OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC;
        let handle = self
            .sftp
            .open(&dest, flags, &FileAttributes::with_permissions(0o644))
            .await?;
        let sent = self.send_stream(input, &handle).await;
        let closed = self.sftp.close(handle).await;
        let r = match (sent, closed) {
            (Ok(n), Ok(())) if self.opts.inplace => Ok(n),
            (Ok(n), Ok(())) => self.sftp.rename_replace(&dest, remote).await.map(|()| n),
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        };
        if r.is_err() && !self.opts.inplace && !self.sftp.channel().is_dead() {
            let _ = self.sftp.remove(&dest).await;
        }
        r
    }

    async fn send_stream(&self, input: &StreamFd, handle: &crate::Handle) -> Result<u64> {
        let chunk = self.upload_chunk();
        let requests = self.opts.requests.max(1);
        let mut buf = vec![0u8; chunk];
        let mut inflight = FuturesUnordered::new();
        let mut offset = 0u64;
        loop {
            let n = input
                .fill(&mut buf)
                .await
                .map_err(|e| Error::local("cannot read standard input", e))?;
            if n == 0 {
                break;
            }
            while inflight.len() >= requests {
                if let Some(r) = inflight.next().await {
                    write_reply(handle.path(), r?)?;
                }
            }
            inflight.push(self.sftp.submit_write(handle, offset, &buf[..n]).await?);
            self.progress.transferred(n as u64);
            offset += n as u64;
            if n < chunk {
                break;
            }
        }
        while let Some(r) = inflight.next().await {
            write_reply(handle.path(), r?)?;
        }
        Ok(offset)
    }

    /// Downloads `remote` to `output`, in order, with `requests` READs in flight.
    /// Returns bytes written.
    pub async fn download_stream(&self, remote: &[u8], output: &StreamFd) -> Result<u64> {
        self.ready().await;
        let handle = self
            .sftp
            .open(remote, OpenFlags::READ, &FileAttributes::default())
            .await?;
        let r = self.receive_stream(&handle, output).await;
        let closed = self.sftp.close(handle).await;
        let n = r?;
        closed.map(|()| n)
    }

    async fn receive_stream(&self, handle: &crate::Handle, output: &StreamFd) -> Result<u64> {
        let chunk = self.download_chunk();
        let requests = self.opts.requests.max(1);
        let mut queue = VecDeque::new();
        let mut next = 0u64;
        let mut written = 0u64;
        loop {
            while queue.len() < requests {
                let read = Request::Read {
                    handle: handle.raw().to_vec(),
                    offset: next,
                    len: chunk as u32,
                };
                queue.push_back((next, self.sftp.submit(&read).await?));
                next += chunk as u64;
            }
            let Some((at, pending)) = queue.pop_front() else {
                break;
            };
            let Some(data) = read_reply(handle.path(), pending.await?)? else {
                break; // End of file: the READs queued behind it are dropped.
            };
            written += self.emit(output, &data).await?;
            // A short answer before the end: fetch the rest of this chunk before the next.
            let end = at + chunk as u64;
            let mut pos = at + data.len() as u64;
            while pos < end {
                match self.sftp.read(handle, pos, (end - pos) as u32).await? {
                    Some(d) => {
                        pos += d.len() as u64;
                        written += self.emit(output, &d).await?;
                    }
                    None => return Ok(written),
                }
            }
        }
        Ok(written)
    }

    /// Writes `data` to `output` and counts it as transferred.
    async fn emit(&self, output: &StreamFd, data: &[u8]) -> Result<u64> {
        output
            .write_all(data)
            .await
            .map_err(|e| Error::local("cannot write to standard output", e))?;
        self.progress.transferred(data.len() as u64);
        Ok(data.len() as u64)
    }
}
