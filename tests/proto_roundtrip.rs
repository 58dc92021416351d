//! The SFTP v3 wire format through the public API of `sftpipe::proto`: every packet both
//! ways, exact bytes for hand-computed cases, hostile input, and property tests.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use sftpipe::proto::wire::Reader;
use sftpipe::proto::{
    ClientPacket, DEFAULT_MAX_PACKET, DecodeError, ExtendedRequest, FileAttributes, Framer, Limits,
    NameEntry, OpenFlags, Request, Response, SFTP_VERSION, ServerPacket, StatusCode, Statvfs,
    SymlinkOrder, encode_write, encode_write_header, kind,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;

// ---------------------------------------------------------------------------------------
// Allocation tracking: proves hostile counts are refused before anything is reserved.

struct Tracking;

thread_local! {
    static LARGEST_ALLOC: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(n: usize) {
    let _ = LARGEST_ALLOC.try_with(|c| {
        if n > c.get() {
            c.set(n)
        }
    });
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// The largest single allocation this thread made while running `f`.
fn largest_allocation_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST_ALLOC.with(|c| c.set(0));
    let v = f();
    (v, LARGEST_ALLOC.with(|c| c.get()))
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn encode_client(p: &ClientPacket) -> Vec<u8> {
    let mut out = Vec::new();
    p.encode(&mut out);
    out
}

fn encode_server(p: &ServerPacket) -> Vec<u8> {
    let mut out = Vec::new();
    p.encode(&mut out);
    out
}

fn request_bytes(id: u32, r: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    r.encode(id, &mut out);
    out
}

fn response_bytes(id: u32, r: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    r.encode(id, &mut out);
    out
}

/// The packet body after checking the length prefix matches.
fn body(wire: &[u8]) -> &[u8] {
    assert!(wire.len() >= 5, "packet too short: {wire:?}");
    let len = u32::from_be_bytes([wire[0], wire[1], wire[2], wire[3]]) as usize;
    assert_eq!(len, wire.len() - 4, "length prefix of {wire:?}");
    &wire[4..]
}

fn attrs_full() -> FileAttributes {
    FileAttributes {
        size: Some(1 << 40),
        uid_gid: Some((1000, 100)),
        permissions: Some(0o100644),
        atime_mtime: Some((1_700_000_000, 1_700_000_001)),
        extended: vec![(b("vendor@example.com"), b("v")), (Vec::new(), Vec::new())],
    }
}

// ---------------------------------------------------------------------------------------
// Samples of every variant, with exhaustive matches so a new variant fails to compile here.

const REQUEST_VARIANTS: usize = 19;
const EXTENDED_VARIANTS: usize = 11;
const RESPONSE_VARIANTS: usize = 6;

fn request_slot(r: &Request) -> usize {
    match r {
        Request::Open { .. } => 0,
        Request::Close { .. } => 1,
        Request::Read { .. } => 2,
        Request::Write { .. } => 3,
        Request::Lstat { .. } => 4,
        Request::Fstat { .. } => 5,
        Request::Setstat { .. } => 6,
        Request::Fsetstat { .. } => 7,
        Request::Opendir { .. } => 8,
        Request::Readdir { .. } => 9,
        Request::Remove { .. } => 10,
        Request::Mkdir { .. } => 11,
        Request::Rmdir { .. } => 12,
        Request::Realpath { .. } => 13,
        Request::Stat { .. } => 14,
        Request::Rename { .. } => 15,
        Request::Readlink { .. } => 16,
        Request::Symlink { .. } => 17,
        Request::Extended(_) => 18,
    }
}

fn extended_slot(e: &ExtendedRequest) -> usize {
    match e {
        ExtendedRequest::PosixRename { .. } => 0,
        ExtendedRequest::Statvfs { .. } => 1,
        ExtendedRequest::Fstatvfs { .. } => 2,
        ExtendedRequest::Hardlink { .. } => 3,
        ExtendedRequest::Fsync { .. } => 4,
        ExtendedRequest::Lsetstat { .. } => 5,
        ExtendedRequest::Limits => 6,
        ExtendedRequest::ExpandPath { .. } => 7,
        ExtendedRequest::CopyData { .. } => 8,
        ExtendedRequest::HomeDirectory { .. } => 9,
        ExtendedRequest::Other { .. } => 10,
    }
}

fn response_slot(r: &Response) -> usize {
    match r {
        Response::Status { .. } => 0,
        Response::Handle(_) => 1,
        Response::Data(_) => 2,
        Response::Name(_) => 3,
        Response::Attrs(_) => 4,
        Response::ExtendedReply(_) => 5,
    }
}

fn sample_extended() -> Vec<ExtendedRequest> {
    vec![
        ExtendedRequest::PosixRename {
            old: b("/a/old"),
            new: b("/a/new"),
        },
        ExtendedRequest::Statvfs { path: b("/") },
        ExtendedRequest::Fstatvfs { handle: b("h7") },
        ExtendedRequest::Hardlink {
            old: b("/a/file"),
            new: b("/a/link"),
        },
        ExtendedRequest::Fsync { handle: b("h8") },
        ExtendedRequest::Lsetstat {
            path: b("/a/sym"),
            attrs: FileAttributes {
                atime_mtime: Some((5, 6)),
                ..Default::default()
            },
        },
        ExtendedRequest::Limits,
        ExtendedRequest::ExpandPath { path: b("~/x") },
        ExtendedRequest::CopyData {
            read_handle: b("r"),
            read_offset: 1,
            length: 0,
            write_handle: b("w"),
            write_offset: u64::MAX,
        },
        ExtendedRequest::HomeDirectory {
            username: b("alice"),
        },
        ExtendedRequest::Other {
            name: b("vendor-op@example.com"),
            data: vec![0, 1, 2, 0xff],
        },
        ExtendedRequest::Other {
            name: vec![0xff, 0xfe],
            data: Vec::new(),
        },
    ]
}

fn sample_requests() -> Vec<Request> {
    let mut v = vec![
        Request::Open {
            path: b("/tmp/f"),
            flags: OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC,
            attrs: FileAttributes::with_permissions(0o644),
        },
        Request::Open {
            path: b("/tmp/g"),
            flags: OpenFlags::READ,
            attrs: FileAttributes::default(),
        },
        Request::Close { handle: b("h0") },
        Request::Read {
            handle: b("h1"),
            offset: 1 << 33,
            len: 32768,
        },
        Request::Write {
            handle: b("h2"),
            offset: 5,
            data: b("hello"),
        },
        Request::Write {
            handle: Vec::new(),
            offset: 0,
            data: Vec::new(),
        },
        Request::Lstat { path: b("/l") },
        Request::Fstat { handle: b("h3") },
        Request::Setstat {
            path: b("/s"),
            attrs: attrs_full(),
        },
        Request::Fsetstat {
            handle: b("h4"),
            attrs: FileAttributes {
                uid_gid: Some((0, 0)),
                ..Default::default()
            },
        },
        Request::Opendir { path: b("/d") },
        Request::Readdir { handle: b("h5") },
        Request::Remove { path: b("/r") },
        Request::Mkdir {
            path: b("/m"),
            attrs: FileAttributes::with_permissions(0o755),
        },
        Request::Rmdir { path: b("/m") },
        Request::Realpath { path: b(".") },
        Request::Stat {
            path: "/ü/é".as_bytes().to_vec(),
        },
        Request::Rename {
            old: b("/o"),
            new: b("/n"),
        },
        Request::Readlink { path: b("/sym") },
        Request::Symlink {
            target: b("/etc/hosts"),
            link: b("/tmp/l"),
            order: SymlinkOrder::TargetFirst,
        },
    ];
    v.extend(sample_extended().into_iter().map(Request::Extended));
    v
}

fn sample_responses() -> Vec<Response> {
    vec![
        Response::Status {
            code: StatusCode::Ok,
            message: Vec::new(),
            language: Vec::new(),
        },
        Response::Status {
            code: StatusCode::NoSuchFile,
            message: b("No such file"),
            language: b("en"),
        },
        Response::Status {
            code: StatusCode::Other(42),
            message: b("odd"),
            language: Vec::new(),
        },
        Response::Handle(b("handle-1")),
        Response::Data(Vec::new()),
        Response::Data(vec![0xab; 300]),
        Response::Name(Vec::new()),
        Response::Name(vec![
            NameEntry {
                filename: b("a.txt"),
                longname: b("-rw-r--r--    1 u g 3 Jan  1 00:00 a.txt"),
                attrs: FileAttributes {
                    size: Some(3),
                    permissions: Some(0o100644),
                    ..Default::default()
                },
            },
            NameEntry {
                filename: b("dir"),
                longname: Vec::new(),
                attrs: attrs_full(),
            },
            NameEntry {
                filename: vec![0xc3, 0x28],
                longname: Vec::new(),
                attrs: FileAttributes::default(),
            },
        ]),
        Response::Attrs(FileAttributes::default()),
        Response::Attrs(attrs_full()),
        Response::ExtendedReply(Vec::new()),
        Response::ExtendedReply(Limits::default().encode()),
        Response::ExtendedReply(Statvfs::default().encode()),
    ]
}

fn sample_client_packets() -> Vec<ClientPacket> {
    let mut v = vec![
        ClientPacket::Init {
            version: SFTP_VERSION,
            extensions: Vec::new(),
        },
        ClientPacket::Init {
            version: 3,
            extensions: vec![(b("x@y"), b("1")), (Vec::new(), Vec::new())],
        },
    ];
    v.extend(
        sample_requests()
            .into_iter()
            .enumerate()
            .map(|(i, request)| ClientPacket::Request {
                id: (i as u32).wrapping_mul(0x0101_0101) ^ 0x8000_0000,
                request,
            }),
    );
    v
}

fn sample_server_packets() -> Vec<ServerPacket> {
    let mut v = vec![
        ServerPacket::Version {
            version: 3,
            extensions: Vec::new(),
        },
        ServerPacket::Version {
            version: 3,
            extensions: vec![
                (b("posix-rename@openssh.com"), b("1")),
                (b("statvfs@openssh.com"), b("2")),
                (b("limits@openssh.com"), b("1")),
            ],
        },
    ];
    v.extend(
        sample_responses()
            .into_iter()
            .enumerate()
            .map(|(i, response)| ServerPacket::Response {
                id: (i as u32).wrapping_mul(0x0301_0301),
                response,
            }),
    );
    v
}

#[test]
fn samples_cover_every_variant() {
    let reqs: BTreeSet<usize> = sample_requests().iter().map(request_slot).collect();
    assert_eq!(reqs.len(), REQUEST_VARIANTS);
    let exts: BTreeSet<usize> = sample_extended().iter().map(extended_slot).collect();
    assert_eq!(exts.len(), EXTENDED_VARIANTS);
    let resps: BTreeSet<usize> = sample_responses().iter().map(response_slot).collect();
    assert_eq!(resps.len(), RESPONSE_VARIANTS);
}

// ---------------------------------------------------------------------------------------
// Round trips of every variant.

#[test]
fn every_request_round_trips() {
    for (i, request) in sample_requests().into_iter().enumerate() {
        let id = 1000 + i as u32;
        let wire = request_bytes(id, &request);
        let body = body(&wire);
        assert_eq!(body[0], request.kind(), "{request:?}");
        assert_eq!(&body[1..5], &id.to_be_bytes(), "{request:?}");
        assert_eq!(request.op_name(), kind::name(request.kind()));
        assert_ne!(request.op_name(), "SSH_FXP_UNKNOWN");

        let via_packet = encode_client(&ClientPacket::Request {
            id,
            request: request.clone(),
        });
        assert_eq!(via_packet, wire);

        assert_eq!(
            ClientPacket::decode(body),
            Ok(ClientPacket::Request {
                id,
                request: request.clone()
            }),
        );
        // A client never accepts a request type from a server.
        assert_eq!(
            ServerPacket::decode(body),
            Err(DecodeError::UnknownType(request.kind()))
        );
    }
}

#[test]
fn every_response_round_trips() {
    for (i, response) in sample_responses().into_iter().enumerate() {
        let id = u32::MAX - i as u32;
        let wire = response_bytes(id, &response);
        let body = body(&wire);
        assert_eq!(body[0], response.kind(), "{response:?}");
        assert_eq!(&body[1..5], &id.to_be_bytes(), "{response:?}");
        let via_packet = encode_server(&ServerPacket::Response {
            id,
            response: response.clone(),
        });
        assert_eq!(via_packet, wire);
        assert_eq!(
            ServerPacket::decode(body),
            Ok(ServerPacket::Response {
                id,
                response: response.clone()
            }),
        );
        assert_eq!(
            ClientPacket::decode(body),
            Err(DecodeError::UnknownType(response.kind()))
        );
    }
}

#[test]
fn init_and_version_round_trip() {
    for p in sample_client_packets() {
        let wire = encode_client(&p);
        assert_eq!(ClientPacket::decode(body(&wire)), Ok(p.clone()));
    }
    for p in sample_server_packets() {
        let wire = encode_server(&p);
        assert_eq!(ServerPacket::decode(body(&wire)), Ok(p.clone()));
    }
}

#[test]
fn encoding_appends_to_the_buffer() {
    let packets = sample_client_packets();
    let mut all = Vec::new();
    let mut expected = Vec::new();
    for p in &packets {
        p.encode(&mut all);
        expected.extend(encode_client(p));
    }
    assert_eq!(all, expected);

    // And a Framer cuts the concatenation back into the same packets.
    let mut f = Framer::new(DEFAULT_MAX_PACKET);
    f.push(&all);
    let mut got = Vec::new();
    while let Some(body) = f.next_packet().unwrap() {
        got.push(ClientPacket::decode(body).unwrap());
    }
    assert_eq!(got, packets);
    assert_eq!(f.buffered(), 0);
}

// ---------------------------------------------------------------------------------------
// Exact bytes, computed by hand from draft-ietf-secsh-filexfer-02 and OpenSSH's sources.

#[test]
fn symlink_sends_target_then_link_like_openssh() {
    let wire = request_bytes(
        7,
        &Request::Symlink {
            target: b("/etc/hosts"),
            link: b("/tmp/l"),
            order: SymlinkOrder::TargetFirst,
        },
    );
    // length 1 + 4 + (4 + 10) + (4 + 6) = 29
    let expected = cat(&[
        &[0, 0, 0, 29, 20, 0, 0, 0, 7, 0, 0, 0, 10],
        b"/etc/hosts",
        &[0, 0, 0, 6],
        b"/tmp/l",
    ]);
    assert_eq!(wire, expected);
}

#[test]
fn symlink_in_the_drafts_order_sends_link_then_target() {
    let wire = request_bytes(
        7,
        &Request::Symlink {
            target: b("/etc/hosts"),
            link: b("/tmp/l"),
            order: SymlinkOrder::LinkFirst,
        },
    );
    let expected = cat(&[
        &[0, 0, 0, 29, 20, 0, 0, 0, 7, 0, 0, 0, 6],
        b"/tmp/l",
        &[0, 0, 0, 10],
        b"/etc/hosts",
    ]);
    assert_eq!(wire, expected);
    let named = |v: &[u8]| SymlinkOrder::from_announced(v);
    assert_eq!(named(b"linkpath-targetpath"), Some(SymlinkOrder::LinkFirst));
    assert_eq!(
        named(b"targetpath-linkpath"),
        Some(SymlinkOrder::TargetFirst)
    );
    assert_eq!(named(b"sideways"), None);
}

#[test]
fn write_bytes() {
    let expected = cat(&[
        &[0, 0, 0, 28, 6, 1, 2, 3, 4, 0, 0, 0, 2, b'H', b'1'],
        &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88],
        &[0, 0, 0, 5],
        b"data!",
    ]);
    let wire = request_bytes(
        0x0102_0304,
        &Request::Write {
            handle: b("H1"),
            offset: 0x1122_3344_5566_7788,
            data: b("data!"),
        },
    );
    assert_eq!(wire, expected);

    // encode_write appends the very same bytes after whatever is in the buffer.
    let mut out = vec![0xee];
    encode_write(
        0x0102_0304,
        b"H1",
        0x1122_3344_5566_7788,
        b"data!",
        &mut out,
    );
    assert_eq!(out[0], 0xee);
    assert_eq!(&out[1..], &expected[..]);

    // encode_write_header is the same packet without its data, which is sent behind it
    // (from a file, by sendfile).
    let mut out = vec![0xee];
    encode_write_header(0x0102_0304, b"H1", 0x1122_3344_5566_7788, 5, &mut out);
    out.extend_from_slice(b"data!");
    assert_eq!(&out[1..], &expected[..]);
}

#[test]
fn open_with_attrs_bytes() {
    let wire = request_bytes(
        3,
        &Request::Open {
            path: b("/f"),
            flags: OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC,
            attrs: FileAttributes {
                size: Some(5),
                permissions: Some(0o644),
                ..Default::default()
            },
        },
    );
    #[rustfmt::skip]
    let expected = [
        0, 0, 0, 31,               // length
        3,                         // SSH_FXP_OPEN
        0, 0, 0, 3,                // id
        0, 0, 0, 2, b'/', b'f',    // filename
        0, 0, 0, 0x1b,             // READ|WRITE|CREAT|TRUNC
        0, 0, 0, 5,                // attr flags SIZE|PERMISSIONS
        0, 0, 0, 0, 0, 0, 0, 5,    // size
        0, 0, 1, 0xa4,             // 0o644
    ];
    assert_eq!(wire, expected);
}

#[test]
fn open_flag_bits_match_the_draft() {
    assert_eq!(OpenFlags::READ.bits(), 0x01);
    assert_eq!(OpenFlags::WRITE.bits(), 0x02);
    assert_eq!(OpenFlags::APPEND.bits(), 0x04);
    assert_eq!(OpenFlags::CREAT.bits(), 0x08);
    assert_eq!(OpenFlags::TRUNC.bits(), 0x10);
    assert_eq!(OpenFlags::EXCL.bits(), 0x20);
    // Unknown bits from a peer survive a round trip rather than being dropped.
    let mut body = vec![kind::OPEN, 0, 0, 0, 1, 0, 0, 0, 1, b'p', 0x40, 0, 0, 0x01];
    body.extend([0, 0, 0, 0]);
    match ClientPacket::decode(&body).unwrap() {
        ClientPacket::Request {
            request: Request::Open { flags, .. },
            ..
        } => assert_eq!(flags.bits(), 0x4000_0001),
        other => panic!("{other:?}"),
    }
}

#[test]
fn status_bytes() {
    let wire = response_bytes(
        5,
        &Response::Status {
            code: StatusCode::NoSuchFile,
            message: b("No such file"),
            language: b("en"),
        },
    );
    let expected = cat(&[
        &[0, 0, 0, 31, 101, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 12],
        b"No such file",
        &[0, 0, 0, 2],
        b"en",
    ]);
    assert_eq!(wire, expected);
}

#[test]
fn status_codes_match_the_draft() {
    let codes = [
        (StatusCode::Ok, 0, "SSH_FX_OK"),
        (StatusCode::Eof, 1, "SSH_FX_EOF"),
        (StatusCode::NoSuchFile, 2, "SSH_FX_NO_SUCH_FILE"),
        (StatusCode::PermissionDenied, 3, "SSH_FX_PERMISSION_DENIED"),
        (StatusCode::Failure, 4, "SSH_FX_FAILURE"),
        (StatusCode::BadMessage, 5, "SSH_FX_BAD_MESSAGE"),
        (StatusCode::NoConnection, 6, "SSH_FX_NO_CONNECTION"),
        (StatusCode::ConnectionLost, 7, "SSH_FX_CONNECTION_LOST"),
        (StatusCode::OpUnsupported, 8, "SSH_FX_OP_UNSUPPORTED"),
    ];
    for (code, n, name) in codes {
        assert_eq!(code.code(), n);
        assert_eq!(StatusCode::from_code(n), code);
        assert_eq!(code.name(), name);
        assert_eq!(code.to_string(), name);
        assert!(!code.description().is_empty());
    }
    assert_eq!(StatusCode::from_code(9), StatusCode::Other(9));
    assert_eq!(StatusCode::Other(77).code(), 77);
}

#[test]
fn init_and_version_bytes() {
    let init = encode_client(&ClientPacket::Init {
        version: 3,
        extensions: Vec::new(),
    });
    assert_eq!(init, [0, 0, 0, 5, 1, 0, 0, 0, 3]);

    let version = encode_server(&ServerPacket::Version {
        version: 3,
        extensions: vec![(b("limits@openssh.com"), b("1"))],
    });
    let expected = cat(&[
        &[0, 0, 0, 32, 2, 0, 0, 0, 3, 0, 0, 0, 18],
        b"limits@openssh.com",
        &[0, 0, 0, 1, b'1'],
    ]);
    assert_eq!(version, expected);
}

#[test]
fn read_close_and_handle_bytes() {
    let read = request_bytes(
        9,
        &Request::Read {
            handle: b("H"),
            offset: 65536,
            len: 32768,
        },
    );
    #[rustfmt::skip]
    let expected = [
        0, 0, 0, 22, 5, 0, 0, 0, 9,
        0, 0, 0, 1, b'H',
        0, 0, 0, 0, 0, 1, 0, 0,
        0, 0, 0x80, 0,
    ];
    assert_eq!(read, expected);

    let close = request_bytes(1, &Request::Close { handle: b("h") });
    assert_eq!(close, [0, 0, 0, 10, 4, 0, 0, 0, 1, 0, 0, 0, 1, b'h']);

    let handle = response_bytes(1, &Response::Handle(b("h")));
    assert_eq!(handle, [0, 0, 0, 10, 102, 0, 0, 0, 1, 0, 0, 0, 1, b'h']);

    let data = response_bytes(1, &Response::Data(b("xyz")));
    assert_eq!(
        data,
        [0, 0, 0, 12, 103, 0, 0, 0, 1, 0, 0, 0, 3, b'x', b'y', b'z']
    );

    let reply = response_bytes(6, &Response::ExtendedReply(vec![9, 9]));
    assert_eq!(reply, [0, 0, 0, 7, 201, 0, 0, 0, 6, 9, 9]);
}

#[test]
fn name_and_attrs_bytes() {
    let name = response_bytes(
        4,
        &Response::Name(vec![NameEntry {
            filename: b("f"),
            longname: b("-rw f"),
            attrs: FileAttributes {
                size: Some(3),
                ..Default::default()
            },
        }]),
    );
    let expected = cat(&[
        &[0, 0, 0, 35, 104, 0, 0, 0, 4, 0, 0, 0, 1],
        &[0, 0, 0, 1, b'f', 0, 0, 0, 5],
        b"-rw f",
        &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3],
    ]);
    assert_eq!(name, expected);

    let attrs = response_bytes(
        8,
        &Response::Attrs(FileAttributes {
            size: Some(0x0102),
            uid_gid: Some((7, 8)),
            permissions: Some(0o40755),
            atime_mtime: Some((0x10, 0x20)),
            extended: vec![(b("k"), b("v"))],
        }),
    );
    #[rustfmt::skip]
    let expected = [
        0, 0, 0, 51, 105, 0, 0, 0, 8,
        0x80, 0, 0, 0x0f,                  // all flags
        0, 0, 0, 0, 0, 0, 1, 2,            // size
        0, 0, 0, 7, 0, 0, 0, 8,            // uid, gid
        0, 0, 0x41, 0xed,                  // 0o40755
        0, 0, 0, 0x10, 0, 0, 0, 0x20,      // atime, mtime
        0, 0, 0, 1,                        // one extended pair
        0, 0, 0, 1, b'k', 0, 0, 0, 1, b'v',
    ];
    assert_eq!(attrs, expected);
}

#[test]
fn extended_request_bytes() {
    let limits = request_bytes(2, &Request::Extended(ExtendedRequest::Limits));
    let expected = cat(&[
        &[0, 0, 0, 27, 200, 0, 0, 0, 2, 0, 0, 0, 18],
        b"limits@openssh.com",
    ]);
    assert_eq!(limits, expected);

    let rename = request_bytes(
        1,
        &Request::Extended(ExtendedRequest::PosixRename {
            old: b("a"),
            new: b("b"),
        }),
    );
    let expected = cat(&[
        &[0, 0, 0, 43, 200, 0, 0, 0, 1, 0, 0, 0, 24],
        b"posix-rename@openssh.com",
        &[0, 0, 0, 1, b'a', 0, 0, 0, 1, b'b'],
    ]);
    assert_eq!(rename, expected);

    let copy = request_bytes(
        1,
        &Request::Extended(ExtendedRequest::CopyData {
            read_handle: b("r"),
            read_offset: 1,
            length: 2,
            write_handle: b("w"),
            write_offset: 3,
        }),
    );
    let expected = cat(&[
        &[0, 0, 0, 52, 200, 0, 0, 0, 1, 0, 0, 0, 9],
        b"copy-data",
        &[
            0, 0, 0, 1, b'r', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2,
        ],
        &[0, 0, 0, 1, b'w', 0, 0, 0, 0, 0, 0, 0, 3],
    ]);
    assert_eq!(copy, expected);

    // An unknown extension's payload goes out verbatim after its name.
    let other = request_bytes(
        1,
        &Request::Extended(ExtendedRequest::Other {
            name: b("x"),
            data: vec![1, 2, 3],
        }),
    );
    assert_eq!(
        other,
        [0, 0, 0, 13, 200, 0, 0, 0, 1, 0, 0, 0, 1, b'x', 1, 2, 3]
    );

    for e in sample_extended() {
        let wire = request_bytes(0, &Request::Extended(e.clone()));
        let name = e.name();
        assert_eq!(&wire[9..13], &(name.len() as u32).to_be_bytes());
        assert_eq!(&wire[13..13 + name.len()], name);
    }
}

#[test]
fn statvfs_and_limits_payloads() {
    let s = Statvfs {
        bsize: 1,
        frsize: 2,
        blocks: 3,
        bfree: 4,
        bavail: 5,
        files: 6,
        ffree: 7,
        favail: 8,
        fsid: 9,
        flag: 10,
        namemax: 11,
    };
    let enc = s.encode();
    assert_eq!(enc.len(), 88);
    for (i, chunk) in enc.chunks(8).enumerate() {
        assert_eq!(chunk, &(i as u64 + 1).to_be_bytes());
    }
    assert_eq!(Statvfs::decode(&enc), Ok(s));
    for cut in 0..enc.len() {
        assert!(Statvfs::decode(&enc[..cut]).is_err(), "cut {cut}");
    }
    let mut long = enc.clone();
    long.push(0);
    assert!(matches!(
        Statvfs::decode(&long),
        Err(DecodeError::TrailingBytes(_, 1))
    ));

    let l = Limits {
        max_packet_length: 262_144 + 1024,
        max_read_length: 261_120,
        max_write_length: 261_120,
        max_open_handles: 0,
    };
    let enc = l.encode();
    assert_eq!(
        enc,
        cat(&[
            &(262_144u64 + 1024).to_be_bytes(),
            &261_120u64.to_be_bytes(),
            &261_120u64.to_be_bytes(),
            &0u64.to_be_bytes(),
        ])
    );
    assert_eq!(Limits::decode(&enc), Ok(l));
    for cut in 0..enc.len() {
        assert!(Limits::decode(&enc[..cut]).is_err(), "cut {cut}");
    }
    let mut long = enc;
    long.push(0);
    assert!(Limits::decode(&long).is_err());
}

// ---------------------------------------------------------------------------------------
// Hostile and malformed input.

fn check_client_truncations(p: &ClientPacket) {
    let wire = encode_client(p);
    let full = body(&wire);
    for cut in 0..full.len() {
        let got = ClientPacket::decode(&full[..cut]);
        let Ok(got) = got else { continue };
        assert_ne!(&got, p, "cut {cut} decoded to the whole packet");
        // Only packets whose last field runs to the end of the packet may decode short.
        match (p, &got) {
            (
                ClientPacket::Init {
                    version,
                    extensions,
                },
                ClientPacket::Init {
                    version: v2,
                    extensions: e2,
                },
            ) => {
                assert_eq!(version, v2);
                assert!(extensions.starts_with(e2), "cut {cut}: {got:?}");
            }
            (
                ClientPacket::Request {
                    id,
                    request: Request::Extended(ExtendedRequest::Other { name, data }),
                },
                ClientPacket::Request {
                    id: id2,
                    request:
                        Request::Extended(ExtendedRequest::Other {
                            name: name2,
                            data: data2,
                        }),
                },
            ) => {
                assert_eq!((id, name), (id2, name2));
                assert!(data.starts_with(data2));
            }
            _ => panic!("cut {cut} of {p:?} decoded as {got:?}"),
        }
    }
}

fn check_server_truncations(p: &ServerPacket) {
    let wire = encode_server(p);
    let full = body(&wire);
    for cut in 0..full.len() {
        let got = ServerPacket::decode(&full[..cut]);
        let Ok(got) = got else { continue };
        // (A STATUS whose message and language are empty may legitimately decode whole.)
        if !matches!(
            p,
            ServerPacket::Response {
                response: Response::Status { .. },
                ..
            }
        ) {
            assert_ne!(&got, p, "cut {cut} decoded to the whole packet");
        }
        match (p, &got) {
            (
                ServerPacket::Version {
                    version,
                    extensions,
                },
                ServerPacket::Version {
                    version: v2,
                    extensions: e2,
                },
            ) => {
                assert_eq!(version, v2);
                assert!(extensions.starts_with(e2), "cut {cut}: {got:?}");
            }
            (
                ServerPacket::Response {
                    id,
                    response: Response::ExtendedReply(data),
                },
                ServerPacket::Response {
                    id: id2,
                    response: Response::ExtendedReply(data2),
                },
            ) => {
                assert_eq!(id, id2);
                assert!(data.starts_with(data2));
            }
            (
                ServerPacket::Response {
                    id,
                    response: Response::Status { code, message, .. },
                },
                ServerPacket::Response {
                    id: id2,
                    response:
                        Response::Status {
                            code: code2,
                            message: message2,
                            language: language2,
                        },
                },
            ) => {
                // Old servers omit the message and language: only these two cuts decode.
                assert_eq!((id, code), (id2, code2));
                assert!(language2.is_empty());
                if cut == 9 {
                    assert!(message2.is_empty());
                } else {
                    assert_eq!(cut, 13 + message.len(), "STATUS cut mid-field decoded");
                    assert_eq!(message, message2);
                }
            }
            _ => panic!("cut {cut} of {p:?} decoded as {got:?}"),
        }
    }
}

#[test]
fn truncated_packets_fail_at_every_cut() {
    for p in sample_client_packets() {
        check_client_truncations(&p);
    }
    for p in sample_server_packets() {
        check_server_truncations(&p);
    }
    assert_eq!(
        ClientPacket::decode(&[]),
        Err(DecodeError::Truncated("client packet"))
    );
    assert_eq!(
        ServerPacket::decode(&[]),
        Err(DecodeError::Truncated("server packet"))
    );
}

#[test]
fn trailing_bytes_are_rejected() {
    for p in sample_client_packets() {
        let mut wire = encode_client(&p);
        wire.push(0);
        let got = ClientPacket::decode(&wire[4..]);
        match &p {
            // Extension pairs run to the end: a stray byte is a truncated pair.
            ClientPacket::Init { .. } => assert!(got.is_err(), "{p:?}: {got:?}"),
            // An unknown extension's payload is opaque and runs to the end.
            ClientPacket::Request {
                request: Request::Extended(ExtendedRequest::Other { .. }),
                ..
            } => assert!(got.is_ok()),
            _ => assert!(
                matches!(got, Err(DecodeError::TrailingBytes(_, 1))),
                "{p:?}: {got:?}"
            ),
        }
    }
    for p in sample_server_packets() {
        let mut wire = encode_server(&p);
        wire.extend([0, 0]);
        let got = ServerPacket::decode(&wire[4..]);
        match &p {
            ServerPacket::Version { .. } => assert!(got.is_err(), "{p:?}: {got:?}"),
            ServerPacket::Response {
                response: Response::ExtendedReply(_),
                ..
            } => assert!(got.is_ok()),
            _ => assert!(
                matches!(got, Err(DecodeError::TrailingBytes(_, 2))),
                "{p:?}: {got:?}"
            ),
        }
    }
}

#[test]
fn unknown_types_are_rejected() {
    let server_kinds = [
        kind::VERSION,
        kind::STATUS,
        kind::HANDLE,
        kind::DATA,
        kind::NAME,
        kind::ATTRS,
        kind::EXTENDED_REPLY,
    ];
    let client_kinds: Vec<u8> = [kind::INIT, kind::EXTENDED]
        .into_iter()
        .chain(kind::OPEN..=kind::SYMLINK)
        .collect();
    for t in 0..=255u8 {
        let body = [t, 0, 0, 0, 1, 0, 0, 0, 0];
        if !server_kinds.contains(&t) {
            assert_eq!(
                ServerPacket::decode(&body),
                Err(DecodeError::UnknownType(t))
            );
        }
        if !client_kinds.contains(&t) {
            assert_eq!(
                ClientPacket::decode(&body),
                Err(DecodeError::UnknownType(t))
            );
        }
        if !server_kinds.contains(&t) && !client_kinds.contains(&t) {
            assert_eq!(kind::name(t), "SSH_FXP_UNKNOWN");
        } else {
            assert!(kind::name(t).starts_with("SSH_FXP_"));
            assert_ne!(kind::name(t), "SSH_FXP_UNKNOWN");
        }
    }
}

#[test]
fn status_from_old_servers_without_message_decodes() {
    let bare = [101, 0, 0, 0, 9, 0, 0, 0, 1];
    assert_eq!(
        ServerPacket::decode(&bare),
        Ok(ServerPacket::Response {
            id: 9,
            response: Response::Status {
                code: StatusCode::Eof,
                message: Vec::new(),
                language: Vec::new(),
            },
        })
    );
    let no_language = cat(&[&[101, 0, 0, 0, 9, 0, 0, 0, 3, 0, 0, 0, 2], b"no"]);
    assert_eq!(
        ServerPacket::decode(&no_language),
        Ok(ServerPacket::Response {
            id: 9,
            response: Response::Status {
                code: StatusCode::PermissionDenied,
                message: b("no"),
                language: Vec::new(),
            },
        })
    );
    // A message cut inside its length is still an error.
    assert!(ServerPacket::decode(&[101, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0]).is_err());
}

#[test]
fn hostile_counts_are_rejected_without_allocating() {
    let mut name = vec![kind::NAME, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
    name.extend([0u8; 64]);
    let (got, largest) = largest_allocation_during(|| ServerPacket::decode(&name));
    assert!(got.is_err(), "{got:?}");
    assert!(
        largest < 4096,
        "allocated {largest} bytes for a hostile NAME count"
    );

    // A count that fits in the bytes present but whose entries are not all there.
    let mut name = vec![kind::NAME, 0, 0, 0, 1, 0, 0, 0, 10];
    name.extend([0u8; 12 * 9]);
    assert!(ServerPacket::decode(&name).is_err());

    let mut attrs = vec![
        kind::ATTRS,
        0,
        0,
        0,
        1,
        0x80,
        0,
        0,
        0,
        0xff,
        0xff,
        0xff,
        0xff,
    ];
    attrs.extend([0u8; 64]);
    let (got, largest) = largest_allocation_during(|| ServerPacket::decode(&attrs));
    assert!(got.is_err(), "{got:?}");
    assert!(
        largest < 4096,
        "allocated {largest} bytes for a hostile attrs count"
    );

    // A string length far past the end.
    let data = [kind::DATA, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xf0, 1, 2, 3];
    let (got, largest) = largest_allocation_during(|| ServerPacket::decode(&data));
    assert_eq!(got, Err(DecodeError::Truncated("SSH_FXP_DATA")));
    assert!(
        largest < 4096,
        "allocated {largest} bytes for a hostile string length"
    );

    // Unknown attribute flags make the rest of the packet unreadable.
    let bad = [kind::ATTRS, 0, 0, 0, 1, 0, 0, 0, 0x10];
    assert_eq!(
        ServerPacket::decode(&bad),
        Err(DecodeError::BadAttrFlags(0x10))
    );
}

#[test]
fn framer_refuses_lengths_over_its_max() {
    let mut f = Framer::new(1000);
    assert_eq!(f.max_packet(), 1000);
    f.push(&[0, 0, 0x03, 0xe9]); // 1001
    let (got, largest) = largest_allocation_during(|| f.next_packet().map(|p| p.is_some()));
    assert_eq!(
        got,
        Err(DecodeError::BadLength {
            len: 1001,
            max: 1000
        })
    );
    assert!(largest < 4096);

    let mut f = Framer::new(DEFAULT_MAX_PACKET);
    f.push(&[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(
        f.next_packet(),
        Err(DecodeError::BadLength {
            len: u32::MAX as usize,
            max: DEFAULT_MAX_PACKET
        })
    );
    assert_eq!(f.buffered(), 4);

    let mut f = Framer::new(10);
    f.push(&[0, 0, 0, 0]);
    assert!(matches!(
        f.next_packet(),
        Err(DecodeError::BadLength { len: 0, .. })
    ));

    // Exactly the maximum is fine, and the maximum can be changed later.
    let mut f = Framer::new(3);
    f.push(&[0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 4]);
    assert_eq!(f.next_packet().unwrap(), Some(&[1u8, 2, 3][..]));
    assert!(f.next_packet().is_err());
    f.set_max_packet(4);
    assert_eq!(f.max_packet(), 4);
    assert_eq!(f.next_packet().unwrap(), None);
    f.push(&[9, 9, 9]);
    assert_eq!(f.next_packet().unwrap(), None);
    f.push(&[9]);
    assert_eq!(f.next_packet().unwrap(), Some(&[9u8, 9, 9, 9][..]));
    assert_eq!(f.buffered(), 0);
}

#[test]
fn framer_reassembles_packets_split_anywhere() {
    let mut stream = Vec::new();
    let packets = sample_server_packets();
    for p in &packets {
        p.encode(&mut stream);
    }
    for chunk in [1, 2, 3, 5, 7, 64, 1000] {
        let mut f = Framer::new(DEFAULT_MAX_PACKET);
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            // Alternate the two ways of feeding it.
            if got.len() % 2 == 0 {
                f.push(piece);
            } else {
                let spare = f.spare(piece.len() + 3);
                spare[..piece.len()].copy_from_slice(piece);
                f.commit(piece.len());
            }
            while let Some(body) = f.next_packet().unwrap() {
                got.push(ServerPacket::decode(body).unwrap());
            }
        }
        assert_eq!(got, packets, "chunk {chunk}");
        assert_eq!(f.buffered(), 0);
    }
}

#[test]
fn attrs_helpers() {
    let a = attrs_full();
    let mut enc = Vec::new();
    a.encode(&mut enc);
    let mut r = Reader::new(&enc, "attrs");
    assert_eq!(FileAttributes::decode(&mut r), Ok(a.clone()));
    assert!(r.finish().is_ok());
    assert_eq!(a.flags().bits(), 0x8000_000f);
    assert!(a.is_file() && !a.is_dir() && !a.is_symlink());
    assert_eq!(a.mtime(), Some(1_700_000_001));
    assert_eq!(FileAttributes::default().flags().bits(), 0);

    // An EXTENDED flag with a zero count decodes to no pairs.
    let zero = [0x80, 0, 0, 0, 0, 0, 0, 0];
    let mut r = Reader::new(&zero, "attrs");
    assert_eq!(
        FileAttributes::decode(&mut r),
        Ok(FileAttributes::default())
    );
}

// ---------------------------------------------------------------------------------------
// Property tests.

const KNOWN_EXTENSIONS: &[&str] = &[
    "posix-rename@openssh.com",
    "statvfs@openssh.com",
    "fstatvfs@openssh.com",
    "hardlink@openssh.com",
    "fsync@openssh.com",
    "lsetstat@openssh.com",
    "limits@openssh.com",
    "expand-path@openssh.com",
    "copy-data",
    "home-directory",
];

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..24)
}

fn arb_attrs() -> impl Strategy<Value = FileAttributes> {
    (
        option::of(any::<u64>()),
        option::of(any::<(u32, u32)>()),
        option::of(any::<u32>()),
        option::of(any::<(u32, u32)>()),
        vec((arb_bytes(), arb_bytes()), 0..3),
    )
        .prop_map(
            |(size, uid_gid, permissions, atime_mtime, extended)| FileAttributes {
                size,
                uid_gid,
                permissions,
                atime_mtime,
                extended,
            },
        )
}

fn arb_extension_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        arb_bytes(),
        "[a-z-]{1,12}@[a-z]{1,8}\\.com".prop_map(String::into_bytes),
    ]
    .prop_filter("a known extension decodes to its own variant", |n| {
        !KNOWN_EXTENSIONS
            .iter()
            .any(|k| k.as_bytes() == n.as_slice())
    })
}

fn arb_extended() -> impl Strategy<Value = ExtendedRequest> {
    prop_oneof![
        (arb_bytes(), arb_bytes()).prop_map(|(old, new)| ExtendedRequest::PosixRename { old, new }),
        arb_bytes().prop_map(|path| ExtendedRequest::Statvfs { path }),
        arb_bytes().prop_map(|handle| ExtendedRequest::Fstatvfs { handle }),
        (arb_bytes(), arb_bytes()).prop_map(|(old, new)| ExtendedRequest::Hardlink { old, new }),
        arb_bytes().prop_map(|handle| ExtendedRequest::Fsync { handle }),
        (arb_bytes(), arb_attrs())
            .prop_map(|(path, attrs)| ExtendedRequest::Lsetstat { path, attrs }),
        Just(ExtendedRequest::Limits),
        arb_bytes().prop_map(|path| ExtendedRequest::ExpandPath { path }),
        (
            arb_bytes(),
            any::<u64>(),
            any::<u64>(),
            arb_bytes(),
            any::<u64>()
        )
            .prop_map(
                |(read_handle, read_offset, length, write_handle, write_offset)| {
                    ExtendedRequest::CopyData {
                        read_handle,
                        read_offset,
                        length,
                        write_handle,
                        write_offset,
                    }
                }
            ),
        arb_bytes().prop_map(|username| ExtendedRequest::HomeDirectory { username }),
        (arb_extension_name(), arb_bytes())
            .prop_map(|(name, data)| ExtendedRequest::Other { name, data }),
    ]
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (arb_bytes(), any::<u32>(), arb_attrs()).prop_map(|(path, flags, attrs)| Request::Open {
            path,
            flags: OpenFlags::from_bits_retain(flags),
            attrs
        }),
        arb_bytes().prop_map(|handle| Request::Close { handle }),
        (arb_bytes(), any::<u64>(), any::<u32>()).prop_map(|(handle, offset, len)| Request::Read {
            handle,
            offset,
            len
        }),
        (arb_bytes(), any::<u64>(), vec(any::<u8>(), 0..300)).prop_map(|(handle, offset, data)| {
            Request::Write {
                handle,
                offset,
                data,
            }
        }),
        arb_bytes().prop_map(|path| Request::Lstat { path }),
        arb_bytes().prop_map(|handle| Request::Fstat { handle }),
        (arb_bytes(), arb_attrs()).prop_map(|(path, attrs)| Request::Setstat { path, attrs }),
        (arb_bytes(), arb_attrs()).prop_map(|(handle, attrs)| Request::Fsetstat { handle, attrs }),
        arb_bytes().prop_map(|path| Request::Opendir { path }),
        arb_bytes().prop_map(|handle| Request::Readdir { handle }),
        arb_bytes().prop_map(|path| Request::Remove { path }),
        (arb_bytes(), arb_attrs()).prop_map(|(path, attrs)| Request::Mkdir { path, attrs }),
        arb_bytes().prop_map(|path| Request::Rmdir { path }),
        arb_bytes().prop_map(|path| Request::Realpath { path }),
        arb_bytes().prop_map(|path| Request::Stat { path }),
        (arb_bytes(), arb_bytes()).prop_map(|(old, new)| Request::Rename { old, new }),
        arb_bytes().prop_map(|path| Request::Readlink { path }),
        // Decoding reads OpenSSH's order, the one a server that announces none takes.
        (arb_bytes(), arb_bytes()).prop_map(|(target, link)| Request::Symlink {
            target,
            link,
            order: SymlinkOrder::TargetFirst,
        }),
        arb_extended().prop_map(Request::Extended),
    ]
}

fn arb_status_code() -> impl Strategy<Value = StatusCode> {
    prop_oneof![0u32..=9, any::<u32>()].prop_map(StatusCode::from_code)
}

fn arb_name_entry() -> impl Strategy<Value = NameEntry> {
    (arb_bytes(), arb_bytes(), arb_attrs()).prop_map(|(filename, longname, attrs)| NameEntry {
        filename,
        longname,
        attrs,
    })
}

fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (arb_status_code(), arb_bytes(), arb_bytes()).prop_map(|(code, message, language)| {
            Response::Status {
                code,
                message,
                language,
            }
        }),
        arb_bytes().prop_map(Response::Handle),
        vec(any::<u8>(), 0..300).prop_map(Response::Data),
        vec(arb_name_entry(), 0..4).prop_map(Response::Name),
        arb_attrs().prop_map(Response::Attrs),
        vec(any::<u8>(), 0..100).prop_map(Response::ExtendedReply),
    ]
}

fn arb_ext_pairs() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    vec((arb_bytes(), arb_bytes()), 0..4)
}

fn arb_client_packet() -> impl Strategy<Value = ClientPacket> {
    prop_oneof![
        1 => (any::<u32>(), arb_ext_pairs())
            .prop_map(|(version, extensions)| ClientPacket::Init { version, extensions }),
        9 => (any::<u32>(), arb_request())
            .prop_map(|(id, request)| ClientPacket::Request { id, request }),
    ]
}

fn arb_server_packet() -> impl Strategy<Value = ServerPacket> {
    prop_oneof![
        1 => (any::<u32>(), arb_ext_pairs())
            .prop_map(|(version, extensions)| ServerPacket::Version { version, extensions }),
        9 => (any::<u32>(), arb_response())
            .prop_map(|(id, response)| ServerPacket::Response { id, response }),
    ]
}

fn arb_statvfs() -> impl Strategy<Value = Statvfs> {
    vec(any::<u64>(), 11).prop_map(|v| Statvfs {
        bsize: v[0],
        frsize: v[1],
        blocks: v[2],
        bfree: v[3],
        bavail: v[4],
        files: v[5],
        ffree: v[6],
        favail: v[7],
        fsid: v[8],
        flag: v[9],
        namemax: v[10],
    })
}

/// Decodes everything a Framer yields from `chunks`, in both directions; returns how many
/// packets it cut. Never panics, whatever the input.
fn frame_and_decode(max: usize, chunks: &[Vec<u8>]) -> usize {
    let mut f = Framer::new(max);
    let mut n = 0;
    for c in chunks {
        f.push(c);
        loop {
            match f.next_packet() {
                Ok(Some(body)) => {
                    assert!(!body.is_empty() && body.len() <= max);
                    let _ = ServerPacket::decode(body);
                    let _ = ClientPacket::decode(body);
                    n += 1;
                }
                Ok(None) => break,
                Err(DecodeError::BadLength { len, max: m }) => {
                    assert_eq!(m, max);
                    assert!(len == 0 || len > max);
                    return n;
                }
                Err(e) => panic!("framer returned {e:?}"),
            }
        }
    }
    n
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        let _ = ServerPacket::decode(&bytes);
        let _ = ClientPacket::decode(&bytes);
        let _ = Statvfs::decode(&bytes);
        let _ = Limits::decode(&bytes);
        let mut r = Reader::new(&bytes, "attrs");
        let _ = FileAttributes::decode(&mut r);
    }

    #[test]
    fn decoders_never_panic_on_known_types(
        t in prop::sample::select(vec![1u8, 2, 3, 6, 9, 12, 16, 20, 101, 102, 103, 104, 105, 200, 201]),
        rest in vec(any::<u8>(), 0..256),
    ) {
        let mut body = vec![t];
        body.extend(rest);
        let _ = ServerPacket::decode(&body);
        let _ = ClientPacket::decode(&body);
    }

    #[test]
    fn framer_never_panics(
        max in 1usize..2048,
        chunks in vec(vec(any::<u8>(), 0..128), 0..16),
    ) {
        frame_and_decode(max, &chunks);
    }

    #[test]
    fn framer_never_panics_on_plausible_lengths(
        lens in vec(1u32..64, 1..8),
        fill in any::<u8>(),
        split in 1usize..17,
    ) {
        let mut stream = Vec::new();
        for l in &lens {
            stream.extend(l.to_be_bytes());
            stream.extend(std::iter::repeat_n(fill, *l as usize));
        }
        let chunks: Vec<Vec<u8>> = stream.chunks(split).map(<[u8]>::to_vec).collect();
        prop_assert_eq!(frame_and_decode(64, &chunks), lens.len());
    }

    #[test]
    fn requests_round_trip(id in any::<u32>(), request in arb_request()) {
        let wire = request_bytes(id, &request);
        let decoded = ClientPacket::decode(body(&wire));
        prop_assert_eq!(decoded, Ok(ClientPacket::Request { id, request }));
    }

    #[test]
    fn responses_round_trip(id in any::<u32>(), response in arb_response()) {
        let wire = response_bytes(id, &response);
        let decoded = ServerPacket::decode(body(&wire));
        prop_assert_eq!(decoded, Ok(ServerPacket::Response { id, response }));
    }

    #[test]
    fn client_packets_round_trip_and_never_decode_short(p in arb_client_packet()) {
        let wire = encode_client(&p);
        prop_assert_eq!(ClientPacket::decode(body(&wire)), Ok(p.clone()));
        check_client_truncations(&p);
    }

    #[test]
    fn server_packets_round_trip_and_never_decode_short(p in arb_server_packet()) {
        let wire = encode_server(&p);
        prop_assert_eq!(ServerPacket::decode(body(&wire)), Ok(p.clone()));
        check_server_truncations(&p);
    }

    #[test]
    fn attrs_round_trip(a in arb_attrs(), tail in vec(any::<u8>(), 0..8)) {
        let mut enc = Vec::new();
        a.encode(&mut enc);
        let attr_len = enc.len();
        enc.extend(&tail);
        let mut r = Reader::new(&enc, "attrs");
        prop_assert_eq!(FileAttributes::decode(&mut r), Ok(a.clone()));
        prop_assert_eq!(r.remaining(), tail.len());
        prop_assert_eq!(u32::from_be_bytes([enc[0], enc[1], enc[2], enc[3]]), a.flags().bits());
        for cut in 0..attr_len {
            let mut r = Reader::new(&enc[..cut], "attrs");
            prop_assert!(FileAttributes::decode(&mut r).is_err(), "cut {}", cut);
        }
    }

    #[test]
    fn framed_streams_round_trip(
        packets in vec(arb_server_packet(), 1..8),
        split in 1usize..64,
    ) {
        let mut stream = Vec::new();
        for p in &packets {
            p.encode(&mut stream);
        }
        let mut f = Framer::new(DEFAULT_MAX_PACKET);
        let mut got = Vec::new();
        for piece in stream.chunks(split) {
            f.push(piece);
            while let Some(b) = f.next_packet().unwrap() {
                got.push(ServerPacket::decode(b).unwrap());
            }
        }
        prop_assert_eq!(got, packets);
        prop_assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn statvfs_and_limits_round_trip(s in arb_statvfs(), l in any::<[u64; 4]>()) {
        prop_assert_eq!(Statvfs::decode(&s.encode()), Ok(s));
        let l = Limits {
            max_packet_length: l[0],
            max_read_length: l[1],
            max_write_length: l[2],
            max_open_handles: l[3],
        };
        prop_assert_eq!(Limits::decode(&l.encode()), Ok(l));
    }
}
