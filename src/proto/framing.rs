//! Cutting a byte stream into SFTP packets.

use super::DecodeError;

/// The framer's buffer is at least this large, so compacting it (moving a partial
/// packet to the front) happens once per several megabytes rather than once per read.
const MIN_BUFFER: usize = 4 << 20;

/// Accumulates bytes from the server and yields whole packet bodies.
///
/// The length prefix is checked against `max_packet` before any byte of the body is kept,
/// so memory stays bounded by one packet plus one read. The buffer is reused: bytes live
/// in `buf[start..end]`, and reads go straight into `buf[end..]`.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_packet: usize,
}

impl Framer {
    /// A framer refusing packets longer than `max_packet` bytes (length field excluded).
    pub fn new(max_packet: usize) -> Self {
        Framer {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_packet,
        }
    }

    /// Changes the maximum, e.g. after `limits@openssh.com` answered.
    pub fn set_max_packet(&mut self, max: usize) {
        self.max_packet = max;
    }

    /// The maximum in force.
    pub fn max_packet(&self) -> usize {
        self.max_packet
    }

    /// Bytes buffered and not yet returned as packets.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        let spare = self.spare(data.len());
        spare[..data.len()].copy_from_slice(data);
        self.commit(data.len());
    }

    /// A spare region of at least `want` bytes to read into directly; call
    /// [`Framer::commit`] with the count read.
    pub fn spare(&mut self, want: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end < want {
            // Move the unconsumed tail (less than one packet) to the front only when it
            // is small against the buffer, so each byte is moved rarely, not once per read.
            if self.start > 0 && self.end - self.start <= self.buf.len() / 4 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < want {
                let size = (self.end + want).max(MIN_BUFFER).max(self.buf.len() * 2);
                // A zeroed allocation costs nothing until its pages are used; `resize`
                // would write all of them first (4 MiB per connection, however short).
                let mut grown = vec![0u8; size];
                grown[..self.end].copy_from_slice(&self.buf[..self.end]);
                self.buf = grown;
            }
        }
        &mut self.buf[self.end..]
    }

    /// Keeps `n` bytes written into the region returned by [`Framer::spare`].
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next complete packet body (type byte onward), if one is buffered.
    pub fn next_packet(&mut self) -> Result<Option<&[u8]>, DecodeError> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len == 0 || len > self.max_packet {
            return Err(DecodeError::BadLength {
                len,
                max: self.max_packet,
            });
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let body_start = self.start + 4;
        self.start = body_start + len;
        Ok(Some(&self.buf[body_start..body_start + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_packets_fed_byte_by_byte() {
        let stream = [0, 0, 0, 2, 9, 8, 0, 0, 0, 1, 7];
        let mut f = Framer::new(16);
        let mut got = Vec::new();
        for b in stream {
            f.push(&[b]);
            while let Some(p) = f.next_packet().unwrap() {
                got.push(p.to_vec());
            }
        }
        assert_eq!(got, vec![vec![9, 8], vec![7]]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn oversized_length_is_refused_before_buffering_the_body() {
        let mut f = Framer::new(1000);
        f.push(&[0, 0, 0x10, 0]);
        assert_eq!(
            f.next_packet(),
            Err(DecodeError::BadLength {
                len: 4096,
                max: 1000
            })
        );
    }

    #[test]
    fn zero_length_is_refused() {
        let mut f = Framer::new(1000);
        f.push(&[0, 0, 0, 0]);
        assert!(f.next_packet().is_err());
    }

    #[test]
    fn spare_and_commit() {
        let mut f = Framer::new(100);
        let s = f.spare(10);
        s[..6].copy_from_slice(&[0, 0, 0, 2, 1, 2]);
        f.commit(6);
        assert_eq!(f.next_packet().unwrap(), Some(&[1u8, 2][..]));
    }
}
