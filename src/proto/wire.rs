//! Primitive SSH wire encodings (RFC 4251 §5): `uint8`, `uint32`, `uint64`, `string`.
//!
//! The [`Reader`] never allocates from a length it has not checked against the bytes it
//! actually holds, so a hostile length field costs nothing.

use super::DecodeError;

/// Appends SSH wire values to a byte buffer.
pub trait PutWire {
    /// Appends one byte.
    fn put_u8(&mut self, v: u8);
    /// Appends a big-endian `uint32`.
    fn put_u32(&mut self, v: u32);
    /// Appends a big-endian `uint64`.
    fn put_u64(&mut self, v: u64);
    /// Appends a `string`: a `uint32` length, then the bytes.
    fn put_string(&mut self, v: &[u8]);
}

impl PutWire for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_string(&mut self, v: &[u8]) {
        // A string longer than u32::MAX cannot be framed; callers bound their inputs far below.
        self.put_u32(v.len() as u32);
        self.extend_from_slice(v);
    }
}

/// A cursor over a received packet.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `buf`; `what` names the packet in error messages.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True when every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(self.what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a big-endian `uint32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a big-endian `uint64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// Reads a `string` as a borrowed slice; the length is checked against what is left.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// Reads a `string` into an owned buffer.
    pub fn string(&mut self) -> Result<Vec<u8>, DecodeError> {
        Ok(self.bytes()?.to_vec())
    }

    /// Reads a `string` that may be missing at the very end of the packet (old servers
    /// omit the message and language tag of STATUS).
    pub fn optional_string(&mut self) -> Result<Vec<u8>, DecodeError> {
        if self.buf.is_empty() {
            Ok(Vec::new())
        } else {
            self.string()
        }
    }

    /// Everything not yet consumed.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.what, self.buf.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut v = Vec::new();
        v.put_u8(7);
        v.put_u32(0xdead_beef);
        v.put_u64(u64::MAX - 1);
        v.put_string(b"hello");
        let mut r = Reader::new(&v, "test");
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u32().unwrap(), 0xdead_beef);
        assert_eq!(r.u64().unwrap(), u64::MAX - 1);
        assert_eq!(r.bytes().unwrap(), b"hello");
        r.finish().unwrap();
    }

    #[test]
    fn hostile_string_length_is_rejected_without_allocating() {
        let v = [0xff, 0xff, 0xff, 0xff, b'a'];
        let mut r = Reader::new(&v, "test");
        assert_eq!(r.bytes(), Err(DecodeError::Truncated("test")));
    }

    #[test]
    fn trailing_bytes_are_reported() {
        let v = [1u8, 2];
        let mut r = Reader::new(&v, "x");
        r.u8().unwrap();
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes("x", 1)));
    }
}
