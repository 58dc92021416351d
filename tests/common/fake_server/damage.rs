//! How a [`Plan`] damages the replies on their way out.

use std::collections::HashSet;
use std::io::Write;

use sftpipe::proto::{
    ExtendedRequest, FileAttributes, Limits, NameEntry, Request, Response, ServerPacket,
    StatusCode, Statvfs, kind,
};

use super::{Plan, Reply, tree::extensions};
use crate::common::random_bytes;

/// One reply in this many is damaged by [`Plan::Random`].
pub const RATE: u64 = 6;

/// A small seeded generator (xorshift64*), so every damage is reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Applies a [`Plan`] to the replies.
pub struct Damage {
    plan: Plan,
    rng: Rng,
    /// Bytes written so far.
    sent: usize,
    /// Request ids received, so that "an id never sent" really is one.
    pub seen: HashSet<u32>,
}

impl Damage {
    pub fn new(plan: Plan) -> Damage {
        let seed = match plan {
            Plan::Random(s) | Plan::Names(s) => s,
            _ => 1,
        };
        Damage {
            plan,
            rng: Rng::new(seed),
            sent: 0,
            seen: HashSet::new(),
        }
    }

    /// The bytes to send for a batch of replies, and whether to hang up after them.
    pub fn render(&mut self, mut batch: Vec<Reply>) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut hang_up = false;
        match self.plan {
            Plan::Honest => batch.iter().for_each(|r| r.packet.encode(&mut out)),
            Plan::HangUpAfter(limit) => {
                batch.iter().for_each(|r| r.packet.encode(&mut out));
                if self.sent + out.len() >= limit {
                    out.truncate(limit - self.sent);
                    hang_up = true;
                }
            }
            Plan::Names(_) | Plan::Twins => {
                for reply in batch {
                    match reply.packet {
                        ServerPacket::Response {
                            id,
                            response: Response::Name(entries),
                        } => {
                            let entries = match self.plan {
                                Plan::Twins => twins(entries),
                                _ => hostile_names(&mut self.rng, entries),
                            };
                            let response = Response::Name(entries);
                            ServerPacket::Response { id, response }.encode(&mut out);
                        }
                        other => other.encode(&mut out),
                    }
                }
            }
            Plan::Random(_) => {
                if batch.len() > 1 && self.rng.one_in(RATE) {
                    self.shuffle_or_swap(&mut batch);
                }
                if self.rng.one_in(RATE) {
                    self.chatter();
                }
                for reply in batch {
                    if hang_up {
                        break;
                    }
                    if self.rng.one_in(RATE) {
                        hang_up = self.damage(reply, &mut out);
                    } else {
                        reply.packet.encode(&mut out);
                    }
                }
            }
        }
        self.sent += out.len();
        (out, hang_up)
    }

    /// Writes to stderr what a confused server might: a line too long for any buffer,
    /// thousands of lines, terminal escapes, bytes that are not UTF-8.
    fn chatter(&mut self) {
        let noise: Vec<u8> = match self.rng.below(4) {
            0 => vec![b'x'; 1 << 20],
            1 => b"line\n".repeat(5000),
            2 => b"\x1b[2J\x1b[31mred\r\x07\n".to_vec(),
            _ => random_bytes(1000, self.rng.next()),
        };
        let _ = std::io::stderr().write_all(&noise);
    }

    /// Replies in another order (which servers may do), or two replies' ids swapped.
    fn shuffle_or_swap(&mut self, batch: &mut [Reply]) {
        let n = batch.len() as u64;
        if self.rng.one_in(2) {
            for i in (1..batch.len()).rev() {
                batch.swap(i, self.rng.below(i as u64 + 1) as usize);
            }
            return;
        }
        let (a, b) = (self.rng.below(n) as usize, self.rng.below(n) as usize);
        let ids = |r: &Reply| match r.packet {
            ServerPacket::Response { id, .. } => Some(id),
            ServerPacket::Version { .. } => None,
        };
        if let (Some(ia), Some(ib)) = (ids(&batch[a]), ids(&batch[b])) {
            set_id(&mut batch[a].packet, ib);
            set_id(&mut batch[b].packet, ia);
        }
    }

    /// An id the client never used.
    fn unused_id(&mut self) -> u32 {
        loop {
            let id = match self.rng.below(3) {
                0 => 0,
                1 => u32::MAX - self.rng.below(4) as u32,
                _ => self.rng.next() as u32,
            };
            if !self.seen.contains(&id) {
                return id;
            }
        }
    }

    /// Writes `reply` damaged in one random way; returns true to hang up after it.
    fn damage(&mut self, reply: Reply, out: &mut Vec<u8>) -> bool {
        let mut encoded = Vec::new();
        reply.packet.encode(&mut encoded);
        match self.rng.below(16) {
            0..=6 => self.wrong_content(reply, &encoded, out),
            7..=11 => self.wrong_bytes(&encoded, out),
            _ => return self.broken_stream(&encoded, out),
        }
        false
    }

    /// A well-framed packet that says something wrong: an id never sent, a second reply,
    /// hostile fields or another kind of reply, a packet of a random type before it.
    fn wrong_content(&mut self, reply: Reply, encoded: &[u8], out: &mut Vec<u8>) {
        let Reply { request, packet } = reply;
        match self.rng.below(7) {
            0 => {
                let mut p = packet;
                set_id(&mut p, self.unused_id());
                p.encode(out);
            }
            1 => {
                out.extend_from_slice(encoded);
                out.extend_from_slice(encoded);
            }
            2 => {
                if self.rng.one_in(2) {
                    let version = ServerPacket::Version {
                        version: 3,
                        extensions: Vec::new(),
                    };
                    version.encode(out);
                } else {
                    let len = 1 + self.rng.below(24) as usize;
                    let mut body = random_bytes(len, self.rng.next());
                    body[0] = self.rng.pick(&[0, 1, 2, 101, 102, 103, 104, 105, 201, 255]);
                    frame(&body, out);
                }
                out.extend_from_slice(encoded);
            }
            _ => {
                let request = request.as_ref().map(|r| &r.1);
                hostile_packet(&mut self.rng, packet, request).encode(out);
            }
        }
    }

    /// The packet's bytes damaged, its framing kept: the body cut short at any byte, bytes
    /// after its last field, one byte changed, a NAME count that disagrees.
    fn wrong_bytes(&mut self, encoded: &[u8], out: &mut Vec<u8>) {
        let body = &encoded[4..];
        match self.rng.below(5) {
            0 => frame(&body[..self.rng.below(body.len() as u64) as usize], out),
            1 => {
                let tail = random_bytes(1 + self.rng.below(9) as usize, self.rng.next());
                frame(&[body, &tail].concat(), out);
            }
            2 => match raw_count(encoded, &mut self.rng) {
                Some(raw) => out.extend_from_slice(&raw),
                None => out.extend_from_slice(encoded),
            },
            _ => {
                // Anywhere but a reply's id (changing that could answer another request in
                // its place and leave this one unanswered).
                let mut bytes = encoded.to_vec();
                let id = if body[0] == kind::VERSION { 0..0 } else { 5..9 };
                let choices: Vec<usize> = (4..bytes.len()).filter(|i| !id.contains(i)).collect();
                if !choices.is_empty() {
                    let at = choices[self.rng.below(choices.len() as u64) as usize];
                    bytes[at] ^= 1 << self.rng.below(8);
                    if self.rng.one_in(3) {
                        bytes[at] = self.rng.pick(&[0, 0xff, 0x7f, 0x80]);
                    }
                }
                out.extend_from_slice(&bytes);
            }
        }
    }

    /// Damage the framing cannot survive, after which the stream ends: a wrong length, the
    /// stream cut at any byte of the packet, garbage as a confused server would print.
    fn broken_stream(&mut self, encoded: &[u8], out: &mut Vec<u8>) -> bool {
        match self.rng.below(3) {
            0 => {
                let len = u32::from_be_bytes([encoded[0], encoded[1], encoded[2], encoded[3]]);
                let wrong = match self.rng.below(5) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => len.saturating_add(1 + self.rng.below(64) as u32),
                    3 => len.saturating_sub(1 + self.rng.below(len as u64) as u32),
                    _ => 16 << 20,
                };
                out.extend_from_slice(&wrong.to_be_bytes());
                out.extend_from_slice(&encoded[4..]);
            }
            1 => out.extend_from_slice(&encoded[..self.rng.below(encoded.len() as u64) as usize]),
            _ => {
                let n = 1 + self.rng.below(40) as usize;
                out.extend_from_slice(&random_bytes(n, self.rng.next()));
            }
        }
        true
    }
}

fn set_id(p: &mut ServerPacket, new: u32) {
    if let ServerPacket::Response { id, .. } = p {
        *id = new;
    }
}

/// Frames a packet body.
fn frame(body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// A NAME reply whose count field disagrees with its entries.
fn raw_count(encoded: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
    if encoded.get(4) != Some(&kind::NAME) || encoded.len() < 13 {
        return None;
    }
    let mut raw = encoded.to_vec();
    let count = u32::from_be_bytes([raw[9], raw[10], raw[11], raw[12]]);
    let wrong = match rng.below(4) {
        0 => count + 1,
        1 => count.saturating_sub(1),
        2 => u32::MAX,
        _ => 0x0100_0000,
    };
    raw[9..13].copy_from_slice(&wrong.to_be_bytes());
    Some(raw)
}

/// Names no server should send in a listing, or in answer to REALPATH or READLINK.
const HOSTILE_NAMES: &[&[u8]] = &[
    b"..",
    b".",
    b"",
    b"../x",
    b"../../../../../../../../../../tmp/sftpipe-hostile-escape",
    b"a/b",
    b"/etc/passwd",
    b"x\0y",
    b"\0",
    b"./x",
    b"x/",
    b"/",
    b"~",
    b"\n\x1b[2J",
];

/// Existing names of the sample tree, for duplicates with another type.
const EXISTING_NAMES: &[&[u8]] = &[
    b"a.txt", b"sub", b"link", b"escape", b"hole", b"empty", b"big.bin", b"deep", b"b", b"c",
];

/// File types, as permission bits (or none at all).
const TYPES: &[Option<u32>] = &[
    Some(0o100644),
    Some(0o040755),
    Some(0o120777),
    Some(0o010644),
    Some(0o140755),
    Some(0o7777),
    None,
];

/// `packet` with its content made hostile: the same kind of reply with odd fields, or a
/// reply of another kind.
fn hostile_packet(rng: &mut Rng, packet: ServerPacket, request: Option<&Request>) -> ServerPacket {
    let ServerPacket::Response { id, response } = packet else {
        return hostile_version(rng);
    };
    let response = if rng.one_in(3) {
        other_response(rng, request)
    } else {
        match response {
            Response::Name(entries) => Response::Name(hostile_names(rng, entries)),
            Response::Attrs(a) => Response::Attrs(hostile_attrs(rng, a)),
            Response::Data(d) => Response::Data(hostile_data(rng, d, request)),
            Response::Handle(h) => Response::Handle(match rng.below(3) {
                0 => Vec::new(),
                1 => vec![b'h'; 200_000],
                _ => [h.as_slice(), b"x"].concat(),
            }),
            Response::ExtendedReply(d) => Response::ExtendedReply(match rng.below(4) {
                0 => Vec::new(),
                1 => d[..d.len() / 2].to_vec(),
                2 => hostile_statvfs(rng),
                _ => hostile_limits(rng),
            }),
            Response::Status { .. } => other_response(rng, request),
        }
    };
    ServerPacket::Response { id, response }
}

fn hostile_version(rng: &mut Rng) -> ServerPacket {
    let version = rng.pick(&[0, 1, 2, 3, 4, 6, u32::MAX]);
    let mut extensions = extensions();
    match rng.below(3) {
        0 => extensions.clear(),
        1 => {
            for (_, v) in extensions.iter_mut() {
                *v = rng.pick(&[&b""[..], b"0", b"99", b"\xff"]).to_vec();
            }
        }
        _ => extensions.push((vec![0xff; 300], random_bytes(64, rng.next()))),
    }
    ServerPacket::Version {
        version,
        extensions,
    }
}

/// `limits@openssh.com` with odd values (a read or write size of at least 512 bytes, so
/// that a transfer stays quick: smaller ones are legal, only slow).
fn hostile_limits(rng: &mut Rng) -> Vec<u8> {
    let mut value = || rng.pick(&[0, 1, 512, 4096, 1 << 20, u64::MAX, u32::MAX as u64 + 1]);
    let mut l = Limits {
        max_packet_length: value(),
        max_read_length: value(),
        max_write_length: value(),
        max_open_handles: value(),
    };
    l.max_read_length = l.max_read_length.max(512);
    l.max_write_length = l.max_write_length.max(512);
    l.encode()
}

/// `statvfs@openssh.com` with extreme values (sizes that overflow when multiplied).
fn hostile_statvfs(rng: &mut Rng) -> Vec<u8> {
    let mut value = || rng.pick(&[0, 1, 4096, u64::MAX, 1 << 63]);
    Statvfs {
        bsize: value(),
        frsize: value(),
        blocks: value(),
        bfree: value(),
        bavail: value(),
        files: value(),
        ffree: value(),
        favail: value(),
        fsid: value(),
        flag: value(),
        namemax: value(),
    }
    .encode()
}

/// A reply of a random kind, with content that is plausible for some other request.
fn other_response(rng: &mut Rng, request: Option<&Request>) -> Response {
    let code = rng.pick(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1000, u32::MAX]);
    match rng.below(7) {
        0 | 1 => Response::Status {
            code: StatusCode::from_code(code),
            message: match rng.below(4) {
                0 => Vec::new(),
                1 => vec![b'm'; 100_000],
                2 => b"\xff\xfe bad \x1b[31mutf-8\n".to_vec(),
                _ => b"a message".to_vec(),
            },
            language: Vec::new(),
        },
        2 => Response::Handle(b"h999".to_vec()),
        3 => Response::Data(random_bytes(rng.below(100) as usize, rng.next())),
        4 => Response::Name(hostile_names(rng, Vec::new())),
        5 => Response::Attrs(hostile_attrs(rng, FileAttributes::default())),
        _ => Response::ExtendedReply(match request {
            Some(Request::Extended(ExtendedRequest::Limits)) => hostile_limits(rng),
            _ => random_bytes(rng.below(100) as usize, rng.next()),
        }),
    }
}

/// A listing with hostile names added or substituted, duplicates of existing names with
/// another type, or no entries at all.
fn hostile_names(rng: &mut Rng, mut entries: Vec<NameEntry>) -> Vec<NameEntry> {
    let entry = |name: &[u8], perm: Option<u32>| NameEntry {
        filename: name.to_vec(),
        longname: name.to_vec(),
        attrs: FileAttributes {
            size: Some(5),
            permissions: perm,
            ..Default::default()
        },
    };
    match rng.below(5) {
        0 => entries.clear(),
        1 if !entries.is_empty() => {
            let i = rng.below(entries.len() as u64) as usize;
            entries[i].filename = rng.pick(HOSTILE_NAMES).to_vec();
        }
        2 => {
            for _ in 0..1 + rng.below(3) {
                let (name, perm) = (rng.pick(EXISTING_NAMES), rng.pick(TYPES));
                entries.insert(
                    rng.below(entries.len() as u64 + 1) as usize,
                    entry(name, perm),
                );
            }
        }
        3 => {
            for _ in 0..1 + rng.below(3) {
                let (name, perm) = (rng.pick(HOSTILE_NAMES), rng.pick(TYPES));
                entries.push(entry(name, perm));
            }
        }
        _ => {
            for e in entries.iter_mut() {
                e.attrs = hostile_attrs(rng, e.attrs.clone());
            }
            entries.extend(entries.clone());
        }
    }
    entries
}

/// Each entry followed by one of the same name and another type (see [`Plan::Twins`]).
fn twins(entries: Vec<NameEntry>) -> Vec<NameEntry> {
    let mut out = Vec::with_capacity(entries.len() * 2);
    for e in entries {
        let mut twin = e.clone();
        let dir = e.attrs.is_dir();
        twin.attrs.permissions = Some(if dir { 0o120777 } else { 0o040755 });
        out.push(e);
        out.push(twin);
    }
    out
}

fn hostile_attrs(rng: &mut Rng, mut a: FileAttributes) -> FileAttributes {
    match rng.below(5) {
        0 => a.size = Some(rng.pick(&[0, 1, u64::MAX, i64::MAX as u64 + 1, 1 << 40])),
        1 => a.permissions = rng.pick(TYPES),
        2 => a.atime_mtime = Some(rng.pick(&[(0, 0), (u32::MAX, u32::MAX)])),
        3 => a = FileAttributes::default(),
        _ => a.extended = vec![(b"x@example.org".to_vec(), vec![0; 1000]); 3],
    }
    a
}

/// DATA longer or shorter than asked, or empty.
fn hostile_data(rng: &mut Rng, mut d: Vec<u8>, request: Option<&Request>) -> Vec<u8> {
    let asked = match request {
        Some(Request::Read { len, .. }) => *len as usize,
        _ => d.len(),
    };
    match rng.below(3) {
        0 => d.truncate(d.len().min(1)),
        1 => d.clear(),
        _ => d.resize(asked + 1 + rng.below(70_000) as usize, b'D'),
    }
    d
}
