//! Message framing of the serve protocol, pure and I/O-free.
//!
//! Two framings, chosen per message unless forced: a message whose first byte is `{` or
//! ASCII white space is *text* (one JSON object ended by `\n`); anything else is *binary*
//! (a big-endian `u32` length, then that many bytes of JSON). Both are bounded: a
//! length prefix over the maximum is refused before anything is allocated for it, and a
//! text line is never buffered beyond the maximum. Input in neither framing (text that
//! does not start with `{`, whose first bytes make an absurd length) is told from its
//! first byte, without waiting for more.

/// A length prefix announcing at least this much (and more than the maximum) is taken
/// for input in no framing rather than for a message too large: no sender writes 64 MiB
/// of JSON, and any printable ASCII first byte makes a length of 512 MiB or more.
pub const IMPLAUSIBLE_LENGTH: u64 = 64 << 20;

/// Bytes of unrecognised input kept to show what it was.
const HEAD: usize = 32;

/// How one message is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One JSON object per line, ended by `\n`.
    Text,
    /// A big-endian `u32` length, then that many bytes of JSON.
    Binary,
}

/// What the decoder found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message body (without length prefix or newline).
    Message {
        /// How it came.
        framing: Framing,
        /// The JSON bytes.
        body: Vec<u8>,
    },
    /// A message over the maximum. Text: its line is skipped and decoding goes on.
    /// Binary: the stream cannot be resynchronised; the decoder is closed.
    Oversized {
        /// How it came.
        framing: Framing,
        /// The length the prefix announced (binary), or `None` for a text line.
        declared: Option<u64>,
        /// The maximum.
        max: usize,
    },
    /// Input in no framing (or, with binary forced, not binary): a first byte that does
    /// not start a text message, and a length prefix of at least
    /// [`IMPLAUSIBLE_LENGTH`], over the maximum — e.g. a line of text not starting with
    /// `{`. Reported as soon as its first byte arrives; the decoder is closed.
    Unrecognised {
        /// The first bytes of the input from there (at most 32).
        head: Vec<u8>,
        /// Whether binary framing was forced (else text would have been accepted).
        forced: bool,
    },
    /// The input ended inside a binary message.
    Truncated {
        /// Bytes of the message (prefix included) that arrived.
        have: usize,
        /// Bytes the message needed, when the prefix was complete.
        want: Option<u64>,
    },
}

/// Splits a byte stream into [`Frame`]s.
///
/// ```
/// use sftpipe::serve::framing::{Decoder, Frame, Framing};
/// let mut d = Decoder::new(None, 1 << 20);
/// d.feed(b"{\"command\": \"STAT\"}\n\x00\x00\x00\x02{}");
/// assert!(matches!(d.next_frame(), Some(Frame::Message { framing: Framing::Text, .. })));
/// assert!(matches!(d.next_frame(), Some(Frame::Message { framing: Framing::Binary, .. })));
/// assert_eq!(d.next_frame(), None);
/// ```
#[derive(Debug)]
pub struct Decoder {
    forced: Option<Framing>,
    max: usize,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    pos: usize,
    /// Text: bytes after `pos` known to hold no newline.
    scanned: usize,
    /// Text: an oversized line is being discarded up to its newline.
    skipping: bool,
    /// Binary: an oversized prefix made the stream unusable.
    closed: bool,
}

/// True for a first byte that starts a text message.
fn starts_text(b: u8) -> bool {
    b == b'{' || b.is_ascii_whitespace()
}

impl Decoder {
    /// A decoder detecting the framing per message (`forced == None`) or using one for
    /// all, with messages of at most `max` bytes.
    pub fn new(forced: Option<Framing>, max: usize) -> Self {
        Decoder {
            forced,
            max,
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            skipping: false,
            closed: false,
        }
    }

    /// True once a binary length over the maximum, or input in no framing, made the
    /// stream unusable.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Appends input. Call [`Decoder::next_frame`] until it returns `None` after each feed.
    pub fn feed(&mut self, mut data: &[u8]) {
        if self.closed {
            return;
        }
        if self.skipping {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.skipping = false;
                    data = &data[i + 1..];
                }
                None => return,
            }
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    fn framing_of_next(&self) -> Option<Framing> {
        let first = *self.buf.get(self.pos)?;
        Some(self.forced.unwrap_or(if starts_text(first) {
            Framing::Text
        } else {
            Framing::Binary
        }))
    }

    /// The next complete frame, or `None` when more input is needed.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.closed || self.skipping {
                return None;
            }
            match self.framing_of_next()? {
                Framing::Binary => return self.next_binary(),
                Framing::Text => match self.next_text()? {
                    // Blank lines are not messages.
                    Frame::Message { body, .. } if body.iter().all(u8::is_ascii_whitespace) => {}
                    f => return Some(f),
                },
            }
        }
    }

    fn next_binary(&mut self) -> Option<Frame> {
        let avail = &self.buf[self.pos..];
        // The least length the prefix can announce, known from its first byte on.
        let mut prefix = [0u8; 4];
        let have = avail.len().min(4);
        prefix[..have].copy_from_slice(&avail[..have]);
        let len = u32::from_be_bytes(prefix) as u64;
        if len > self.max as u64 && len >= IMPLAUSIBLE_LENGTH {
            let head = avail[..avail.len().min(HEAD)].to_vec();
            self.close();
            return Some(Frame::Unrecognised {
                head,
                forced: self.forced == Some(Framing::Binary),
            });
        }
        if have < 4 {
            return None;
        }
        if len > self.max as u64 {
            self.close();
            return Some(Frame::Oversized {
                framing: Framing::Binary,
                declared: Some(len),
                max: self.max,
            });
        }
        let len = len as usize;
        if avail.len() < 4 + len {
            return None;
        }
        let body = avail[4..4 + len].to_vec();
        self.pos += 4 + len;
        self.scanned = 0;
        Some(Frame::Message {
            framing: Framing::Binary,
            body,
        })
    }

    /// Stops decoding for good (the stream cannot be resynchronised), freeing the buffer.
    fn close(&mut self) {
        self.closed = true;
        self.buf = Vec::new();
        self.pos = 0;
    }

    fn next_text(&mut self) -> Option<Frame> {
        let avail = &self.buf[self.pos..];
        let from = self.scanned.min(avail.len());
        match avail[from..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = from + i;
                let frame = if end > self.max {
                    self.oversized_text()
                } else {
                    Frame::Message {
                        framing: Framing::Text,
                        body: avail[..end].to_vec(),
                    }
                };
                self.pos += end + 1;
                self.scanned = 0;
                Some(frame)
            }
            None if avail.len() > self.max => {
                // Drop what is buffered and discard up to the line's end as it arrives.
                self.buf.clear();
                self.pos = 0;
                self.scanned = 0;
                self.skipping = true;
                Some(self.oversized_text())
            }
            None => {
                self.scanned = avail.len();
                None
            }
        }
    }

    fn oversized_text(&self) -> Frame {
        Frame::Oversized {
            framing: Framing::Text,
            declared: None,
            max: self.max,
        }
    }

    /// Called at end of input: an unterminated last text line is a message; a partial
    /// binary message is [`Frame::Truncated`]. Returns `None` when nothing is left.
    pub fn finish(&mut self) -> Option<Frame> {
        if self.closed || self.skipping {
            return None;
        }
        let framing = self.framing_of_next()?;
        let avail = std::mem::take(&mut self.buf).split_off(self.pos);
        self.pos = 0;
        self.scanned = 0;
        match framing {
            Framing::Text if avail.iter().all(u8::is_ascii_whitespace) => None,
            Framing::Text => Some(Frame::Message {
                framing,
                body: avail,
            }),
            Framing::Binary => {
                let want = avail
                    .get(..4)
                    .map(|p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as u64 + 4);
                Some(Frame::Truncated {
                    have: avail.len(),
                    want,
                })
            }
        }
    }
}

/// Encodes one answer in `framing`: compact JSON plus `\n`, or length prefix plus JSON.
/// Serialised JSON never holds a raw newline, so a text answer is always one line.
pub fn encode(framing: Framing, value: &serde_json::Value) -> Vec<u8> {
    let json = value.to_string();
    let mut out = Vec::with_capacity(json.len() + 4);
    match framing {
        Framing::Text => {
            out.extend_from_slice(json.as_bytes());
            out.push(b'\n');
        }
        Framing::Binary => {
            out.extend_from_slice(&(json.len() as u32).to_be_bytes());
            out.extend_from_slice(json.as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(framing: Framing, body: &[u8]) -> Option<Frame> {
        Some(Frame::Message {
            framing,
            body: body.to_vec(),
        })
    }

    fn binary(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn mixed_framings_byte_by_byte() {
        let mut input = b"{\"a\":1}\n".to_vec();
        input.extend(binary(b"{\"b\":2}"));
        input.extend(b"\n  \r\n {\"c\":3}\r\n");
        input.extend(binary(b""));
        let mut d = Decoder::new(None, 100);
        let mut frames = Vec::new();
        for b in &input {
            d.feed(std::slice::from_ref(b));
            while let Some(f) = d.next_frame() {
                frames.push(Some(f));
            }
        }
        assert_eq!(d.finish(), None);
        assert_eq!(
            frames,
            vec![
                msg(Framing::Text, b"{\"a\":1}"),
                msg(Framing::Binary, b"{\"b\":2}"),
                msg(Framing::Text, b" {\"c\":3}\r"),
                msg(Framing::Binary, b""),
            ]
        );
    }

    #[test]
    fn huge_prefix_closes_without_allocating() {
        let mut d = Decoder::new(None, 1 << 24);
        d.feed(&[0x03, 0xff, 0xff]);
        // Under IMPLAUSIBLE_LENGTH: the whole prefix is awaited to say what it announces.
        assert_eq!(d.next_frame(), None);
        d.feed(&[0xff, b'x']);
        assert_eq!(
            d.next_frame(),
            Some(Frame::Oversized {
                framing: Framing::Binary,
                declared: Some(0x03ff_ffff),
                max: 1 << 24
            })
        );
        assert!(d.is_closed());
        assert!(d.buf.capacity() < 1024);
        d.feed(b"{\"a\":1}\n");
        assert_eq!(d.next_frame(), None);
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn input_in_no_framing_is_told_from_its_first_byte() {
        let mut d = Decoder::new(None, 1 << 24);
        d.feed(b"{}\nh");
        assert_eq!(d.next_frame(), msg(Framing::Text, b"{}"));
        // One byte of "hello world" is enough: no prefix starting with 'h' is plausible.
        assert_eq!(
            d.next_frame(),
            Some(Frame::Unrecognised {
                head: b"h".to_vec(),
                forced: false
            })
        );
        assert!(d.is_closed());
        d.feed(b"ello world\n{}\n");
        assert_eq!(d.next_frame(), None);
        assert_eq!(d.finish(), None);

        let mut d = Decoder::new(None, 1 << 24);
        d.feed(&[0xff; 40]);
        assert!(matches!(
            d.next_frame(),
            Some(Frame::Unrecognised { head, .. }) if head.len() == HEAD
        ));
        // A maximum above IMPLAUSIBLE_LENGTH admits what it admits.
        let mut d = Decoder::new(None, 1 << 30);
        d.feed(&[0x05, 0, 0]);
        assert_eq!(d.next_frame(), None);
        assert!(!d.is_closed());
    }

    #[test]
    fn long_text_line_is_skipped_and_decoding_resumes() {
        let mut d = Decoder::new(None, 10);
        d.feed(b"{\"aaaaaaaa");
        assert_eq!(d.next_frame(), None);
        d.feed(b"aaaa");
        assert!(matches!(
            d.next_frame(),
            Some(Frame::Oversized {
                framing: Framing::Text,
                ..
            })
        ));
        d.feed(b"more junk");
        assert_eq!(d.next_frame(), None);
        assert!(d.buf.len() < 20);
        d.feed(b"junk\n{}\n");
        assert_eq!(d.next_frame(), msg(Framing::Text, b"{}"));
        // A line over the maximum that arrives whole is refused too.
        d.feed(b"{\"bbbbbbbbbbbb\"}\n{}\n");
        assert!(matches!(d.next_frame(), Some(Frame::Oversized { .. })));
        assert_eq!(d.next_frame(), msg(Framing::Text, b"{}"));
    }

    #[test]
    fn forced_framings() {
        let mut d = Decoder::new(Some(Framing::Text), 100);
        d.feed(b"[1]\n");
        assert_eq!(d.next_frame(), msg(Framing::Text, b"[1]"));
        let mut d = Decoder::new(Some(Framing::Binary), 100);
        d.feed(b"{\"a\":1}\n");
        assert_eq!(
            d.next_frame(),
            Some(Frame::Unrecognised {
                head: b"{\"a\":1}\n".to_vec(),
                forced: true
            })
        );
    }

    #[test]
    fn end_of_input() {
        let mut d = Decoder::new(None, 100);
        d.feed(b"{\"a\":");
        assert_eq!(d.next_frame(), None);
        assert_eq!(d.finish(), msg(Framing::Text, b"{\"a\":"));
        let mut d = Decoder::new(None, 100);
        d.feed(&[0, 0, 0, 9, b'{']);
        assert_eq!(d.next_frame(), None);
        assert_eq!(
            d.finish(),
            Some(Frame::Truncated {
                have: 5,
                want: Some(13)
            })
        );
        let mut d = Decoder::new(None, 100);
        d.feed(&[0, 0]);
        assert_eq!(
            d.finish(),
            Some(Frame::Truncated {
                have: 2,
                want: None
            })
        );
    }

    #[test]
    fn encodes_both_framings() {
        let v = serde_json::json!({"message": "a\nb"});
        let t = encode(Framing::Text, &v);
        assert_eq!(t.iter().filter(|&&b| b == b'\n').count(), 1);
        let b = encode(Framing::Binary, &v);
        assert_eq!(
            u32::from_be_bytes(b[..4].try_into().unwrap()) as usize,
            b.len() - 4
        );
    }
}
