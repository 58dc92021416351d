//! The bytes queued for the server: encoded packets and regions of local files, written
//! with `writev` and `sendfile(2)` as the socket takes them.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::rc::Rc;

use mio::net::UnixStream;

use super::core::Transmit;

/// Bytes waiting to be written to the server, as a queue of segments written with
/// `writev`: no byte is moved once queued. Small packets share a segment. A segment may
/// also be a region of a local file, which `sendfile(2)` moves to the socket without
/// passing it through our memory: on a fast path the copies in and out of a buffer cost
/// as much CPU as the rest of the client, and that CPU is what ssh needs.
#[derive(Default)]
pub(super) struct OutQueue {
    segments: VecDeque<Segment>,
    /// Bytes of the front segment already written.
    front_pos: usize,
    len: usize,
    spare: Vec<Vec<u8>>,
    /// File regions that could not be sent whole (the file shrank, or reading it failed):
    /// their requests went out padded with zeros, to keep the stream framed, and must fail.
    pub(super) spoiled: Vec<(u32, io::Error)>,
}

enum Segment {
    Bytes(Vec<u8>),
    File(FileRegion),
}

/// `len` bytes of `file` from `offset`: the data of request `id`, whose header was queued
/// before it.
struct FileRegion {
    file: Rc<std::fs::File>,
    offset: u64,
    len: usize,
    id: u32,
    /// Set when the file ran short: the rest of the region is sent as zeros.
    padding: bool,
    /// Set when sendfile is not supported for this file (some file systems): the rest is
    /// copied with pread and write.
    copy: bool,
}

impl Segment {
    fn len(&self) -> usize {
        match self {
            Segment::Bytes(v) => v.len(),
            Segment::File(r) => r.len,
        }
    }
}

/// Packets are appended to the last segment until it reaches this size.
const SEGMENT: usize = 64 * 1024;
/// Segments kept for reuse.
const SPARE_SEGMENTS: usize = 16;
/// Bytes moved per `pread`/`write` when a file region cannot be sent with sendfile.
const COPY_CHUNK: usize = 64 * 1024;

impl OutQueue {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends whatever `encode` writes.
    #[cfg(test)]
    fn push_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        let _ = self.try_push_with(|v| {
            encode(v);
            Ok::<bool, ()>(true)
        });
    }

    /// Appends whatever `encode` writes, unless it returns `Ok(false)` or an error: then
    /// its bytes are taken back.
    pub(super) fn try_push_with<E>(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<bool, E>,
    ) -> Result<bool, E> {
        let reuse_last = matches!(self.segments.back(), Some(Segment::Bytes(last))
            if last.len() < SEGMENT && !(self.segments.len() == 1 && self.front_pos > 0));
        if !reuse_last {
            let v = self.spare.pop().unwrap_or_default();
            self.segments.push_back(Segment::Bytes(v));
        }
        let Some(Segment::Bytes(last)) = self.segments.back_mut() else {
            return Ok(false);
        };
        let before = last.len();
        let r = encode(last);
        if matches!(r, Ok(true)) {
            self.len += last.len() - before;
        } else {
            last.truncate(before);
        }
        r
    }

    /// Appends a file region (the data of a request whose header was just pushed).
    pub(super) fn push_file(&mut self, file: Rc<std::fs::File>, offset: u64, len: usize, id: u32) {
        if len == 0 {
            return;
        }
        self.len += len;
        self.segments.push_back(Segment::File(FileRegion {
            file,
            offset,
            len,
            id,
            padding: false,
            copy: false,
        }));
    }

    /// Writes as much as the socket takes; returns the count written.
    pub(super) fn write_to(&mut self, sock: &mut UnixStream) -> io::Result<usize> {
        let mut total = 0;
        while self.len > 0 {
            let (n, offered) = match self.segments.front_mut() {
                Some(Segment::File(region)) => {
                    let offered = region.len - self.front_pos;
                    match send_region(sock, region, self.front_pos, &mut self.spoiled) {
                        Ok(n) => (n, offered),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
                Some(Segment::Bytes(_)) => {
                    let mut iov = [io::IoSlice::new(&[]); 64];
                    let mut k = 0;
                    let mut offered = 0;
                    for (idx, seg) in self.segments.iter().enumerate().take(iov.len()) {
                        let Segment::Bytes(seg) = seg else { break };
                        let from = if idx == 0 { self.front_pos } else { 0 };
                        iov[k] = io::IoSlice::new(&seg[from..]);
                        offered += seg.len() - from;
                        k += 1;
                    }
                    match sock.write_vectored(&iov[..k]) {
                        Ok(n) => (n, offered),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
                None => break,
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            total += n;
            self.consume(n);
            if n < offered {
                // The socket is full; epoll will say when it drains.
                break;
            }
        }
        Ok(total)
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.segments.front() else {
                break;
            };
            let left = front.len() - self.front_pos;
            if n < left {
                self.front_pos += n;
                return;
            }
            n -= left;
            self.front_pos = 0;
            if let Some(Segment::Bytes(mut seg)) = self.segments.pop_front()
                && self.spare.len() < SPARE_SEGMENTS
                && seg.capacity() <= 2 * crate::client::MAX_CHUNK
            {
                seg.clear();
                self.spare.push(seg);
            }
        }
    }
}

impl Transmit for OutQueue {
    fn is_idle(&self) -> bool {
        self.is_empty()
    }

    fn try_push<E>(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<bool, E>,
    ) -> Result<bool, E> {
        self.try_push_with(encode)
    }
}

/// Zeros for a file region that ran short.
static ZEROS: [u8; 16 * 1024] = [0; 16 * 1024];

/// Sends the rest of a file region from `done` bytes in: with sendfile, else by copying,
/// else (the file ran short or could not be read) as zeros, recording the request as
/// spoiled. Returns the bytes written, which the socket may have cut short.
fn send_region(
    sock: &mut UnixStream,
    region: &mut FileRegion,
    done: usize,
    spoiled: &mut Vec<(u32, io::Error)>,
) -> io::Result<usize> {
    let left = region.len - done;
    let at = region.offset + done as u64;
    if !region.padding {
        let sent = if region.copy {
            copy_region(sock, &region.file, at, left)
        } else {
            sendfile_region(sock, &region.file, at, left)
        };
        match sent {
            Ok(0) => {
                spoiled.push((
                    region.id,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file shrank to {at} bytes while it was being sent"),
                    ),
                ));
                region.padding = true;
            }
            Ok(n) => return Ok(n),
            Err(e) if is_socket_error(&e) => return Err(e),
            Err(e) if !region.copy && is_unsupported(&e) => {
                log::debug!("sendfile unsupported for this file ({e}); copying");
                region.copy = true;
                return send_region(sock, region, done, spoiled);
            }
            Err(e) => {
                spoiled.push((region.id, e));
                region.padding = true;
            }
        }
    }
    sock.write(&ZEROS[..left.min(ZEROS.len())])
}

/// Sends up to `len` bytes of `file` from `at` with sendfile; elsewhere than Linux, where
/// sendfile differs or is missing, by copying.
fn sendfile_region(
    sock: &UnixStream,
    file: &std::fs::File,
    at: u64,
    len: usize,
) -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut off = libc::off_t::try_from(at).map_err(|_| io::ErrorKind::InvalidInput)?;
        nix::sys::sendfile::sendfile(sock, file, Some(&mut off), len).map_err(io::Error::from)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    copy_region(sock, file, at, len)
}

/// Sends up to `len` bytes of `file` from `at` through a buffer. Bytes read but not
/// taken by the socket are read again next time (pread does not move a file position).
fn copy_region(
    mut sock: &UnixStream,
    file: &std::fs::File,
    at: u64,
    len: usize,
) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; COPY_CHUNK];
    let want = len.min(buf.len());
    let n = loop {
        match file.read_at(&mut buf[..want], at) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r?,
        }
    };
    if n == 0 {
        return Ok(0);
    }
    sock.write(&buf[..n])
}

/// Errors of the socket (the server went away), as opposed to the file.
fn is_socket_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::Interrupted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::NotConnected
    )
}

/// sendfile refused for this file or system: copying will do.
fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::ESPIPE | libc::EOVERFLOW)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Writes `q` to one end of a socket pair, draining the other end, until it is empty.
    fn drain_through_socket(q: &mut OutQueue) -> Vec<u8> {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while !q.is_empty() {
            q.write_to(&mut ours).unwrap();
            loop {
                match theirs.read(&mut buf) {
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        got
    }

    fn file_with(data: &[u8]) -> Rc<std::fs::File> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        Rc::new(f)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn file_regions_go_out_between_queued_bytes_in_order() {
        let data = pattern(600 * 1024);
        let file = file_with(&data);
        for copy in [false, true] {
            let mut q = OutQueue::default();
            q.push_with(|v| v.extend_from_slice(b"head"));
            q.push_file(file.clone(), 1000, 300 * 1024, 7);
            q.push_with(|v| v.extend_from_slice(b"mid"));
            q.push_file(file.clone(), 0, 10, 8);
            q.push_with(|v| v.extend_from_slice(b"tail"));
            if copy {
                for seg in &mut q.segments {
                    if let Segment::File(r) = seg {
                        r.copy = true;
                    }
                }
            }
            assert_eq!(q.len(), 4 + 300 * 1024 + 3 + 10 + 4);
            let got = drain_through_socket(&mut q);
            let mut want = b"head".to_vec();
            want.extend_from_slice(&data[1000..1000 + 300 * 1024]);
            want.extend_from_slice(b"mid");
            want.extend_from_slice(&data[..10]);
            want.extend_from_slice(b"tail");
            assert!(
                got == want,
                "copy={copy}: {} bytes, want {}",
                got.len(),
                want.len()
            );
            assert!(q.spoiled.is_empty());
        }
    }

    #[test]
    fn a_region_past_the_end_of_its_file_is_padded_and_its_request_spoiled() {
        let data = pattern(100 * 1024);
        let file = file_with(&data);
        let mut q = OutQueue::default();
        q.push_file(file, 60 * 1024, 80 * 1024, 42);
        q.push_with(|v| v.extend_from_slice(b"next"));
        let got = drain_through_socket(&mut q);
        assert_eq!(got.len(), 80 * 1024 + 4, "the stream keeps its framing");
        assert_eq!(&got[..40 * 1024], &data[60 * 1024..]);
        assert!(got[40 * 1024..80 * 1024].iter().all(|&b| b == 0));
        assert_eq!(&got[80 * 1024..], b"next");
        assert_eq!(q.spoiled.len(), 1);
        assert_eq!(q.spoiled[0].0, 42);
        assert_eq!(q.spoiled[0].1.kind(), io::ErrorKind::UnexpectedEof);
    }
}
