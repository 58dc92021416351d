//! SFTP v3 packets, both directions, with OpenSSH's extensions.

use super::attrs::FileAttributes;
use super::wire::{PutWire, Reader};
use super::{DecodeError, ExtensionPairs, ext, kind};

bitflags::bitflags! {
    /// `pflags` of SSH_FXP_OPEN.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct OpenFlags: u32 {
        /// Open for reading.
        const READ = 0x01;
        /// Open for writing.
        const WRITE = 0x02;
        /// Every write goes to the end of the file.
        const APPEND = 0x04;
        /// Create the file if it does not exist.
        const CREAT = 0x08;
        /// Truncate an existing file (needs CREAT).
        const TRUNC = 0x10;
        /// Fail if the file exists (needs CREAT).
        const EXCL = 0x20;
    }
}

/// The order of SSH_FXP_SYMLINK's two paths on the wire.
///
/// The draft (filexfer-02 to -05) sends `linkpath`, then `targetpath`. OpenSSH's
/// sftp-server was written with the two swapped, noticed only once widely deployed, and
/// kept so (its PROTOCOL file, "Reversal of arguments to SSH_FXP_SYMLINK"); its client
/// sends them swapped too, and most servers read them as OpenSSH does (paramiko's
/// SFTPServer, ProFTPD's mod_sftp, ...). Green End's gesftpserver follows the draft unless
/// built otherwise, and says which with its `symlink-order@rjk.greenend.org.uk` extension.
/// `Sftp::symlink_order` holds the rule a client follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SymlinkOrder {
    /// OpenSSH's: target, then link path.
    #[default]
    TargetFirst,
    /// The draft's: link path, then target.
    LinkFirst,
}

impl SymlinkOrder {
    /// The extension by which a server states its order.
    pub const EXTENSION: &'static str = "symlink-order@rjk.greenend.org.uk";

    /// The order an [`SymlinkOrder::EXTENSION`] value names: `linkpath-targetpath` (the
    /// draft's) or `targetpath-linkpath` (OpenSSH's); `None` for anything else.
    pub fn from_announced(value: &[u8]) -> Option<SymlinkOrder> {
        match value {
            b"linkpath-targetpath" => Some(SymlinkOrder::LinkFirst),
            b"targetpath-linkpath" => Some(SymlinkOrder::TargetFirst),
            _ => None,
        }
    }
}

/// Status codes of SSH_FXP_STATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusCode {
    /// Success.
    Ok,
    /// End of file, or no more directory entries.
    Eof,
    /// The path does not exist.
    NoSuchFile,
    /// Permission denied.
    PermissionDenied,
    /// A generic failure (OpenSSH also uses it for "already exists").
    Failure,
    /// The server could not parse the request.
    BadMessage,
    /// No connection (client-side code).
    NoConnection,
    /// Connection lost (client-side code).
    ConnectionLost,
    /// The server does not support the operation.
    OpUnsupported,
    /// A code outside version 3.
    Other(u32),
}

impl StatusCode {
    /// The numeric code.
    pub fn code(self) -> u32 {
        match self {
            StatusCode::Ok => 0,
            StatusCode::Eof => 1,
            StatusCode::NoSuchFile => 2,
            StatusCode::PermissionDenied => 3,
            StatusCode::Failure => 4,
            StatusCode::BadMessage => 5,
            StatusCode::NoConnection => 6,
            StatusCode::ConnectionLost => 7,
            StatusCode::OpUnsupported => 8,
            StatusCode::Other(c) => c,
        }
    }

    /// The code for a number.
    pub fn from_code(c: u32) -> Self {
        match c {
            0 => StatusCode::Ok,
            1 => StatusCode::Eof,
            2 => StatusCode::NoSuchFile,
            3 => StatusCode::PermissionDenied,
            4 => StatusCode::Failure,
            5 => StatusCode::BadMessage,
            6 => StatusCode::NoConnection,
            7 => StatusCode::ConnectionLost,
            8 => StatusCode::OpUnsupported,
            c => StatusCode::Other(c),
        }
    }

    /// The protocol's name for the code, e.g. `SSH_FX_NO_SUCH_FILE`.
    pub fn name(self) -> &'static str {
        match self {
            StatusCode::Ok => "SSH_FX_OK",
            StatusCode::Eof => "SSH_FX_EOF",
            StatusCode::NoSuchFile => "SSH_FX_NO_SUCH_FILE",
            StatusCode::PermissionDenied => "SSH_FX_PERMISSION_DENIED",
            StatusCode::Failure => "SSH_FX_FAILURE",
            StatusCode::BadMessage => "SSH_FX_BAD_MESSAGE",
            StatusCode::NoConnection => "SSH_FX_NO_CONNECTION",
            StatusCode::ConnectionLost => "SSH_FX_CONNECTION_LOST",
            StatusCode::OpUnsupported => "SSH_FX_OP_UNSUPPORTED",
            StatusCode::Other(_) => "SSH_FX_UNKNOWN",
        }
    }

    /// A short human description, used when the server sends no message.
    pub fn description(self) -> &'static str {
        match self {
            StatusCode::Ok => "success",
            StatusCode::Eof => "end of file",
            StatusCode::NoSuchFile => "no such file or directory",
            StatusCode::PermissionDenied => "permission denied",
            StatusCode::Failure => "failure",
            StatusCode::BadMessage => "bad message",
            StatusCode::NoConnection => "no connection",
            StatusCode::ConnectionLost => "connection lost",
            StatusCode::OpUnsupported => "operation unsupported",
            StatusCode::Other(_) => "unknown error",
        }
    }
}

impl std::fmt::Display for StatusCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry of an SSH_FXP_NAME reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// The bare file name (or a full path for REALPATH/READLINK).
    pub filename: Vec<u8>,
    /// `ls -l` style line; servers format it as they like.
    pub longname: Vec<u8>,
    /// Attributes (READDIR fills them; REALPATH sends them empty).
    pub attrs: FileAttributes,
}

impl NameEntry {
    /// The file name as text, with invalid UTF-8 replaced.
    pub fn name_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.filename)
    }
}

/// A request of the OpenSSH extensions (and `copy-data`, `home-directory`), sent as
/// SSH_FXP_EXTENDED with its name.
// Field names are the protocol's own; see the draft.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtendedRequest {
    /// `posix-rename@openssh.com`: rename replacing the target atomically.
    PosixRename { old: Vec<u8>, new: Vec<u8> },
    /// `statvfs@openssh.com`.
    Statvfs { path: Vec<u8> },
    /// `fstatvfs@openssh.com`.
    Fstatvfs { handle: Vec<u8> },
    /// `hardlink@openssh.com`.
    Hardlink { old: Vec<u8>, new: Vec<u8> },
    /// `fsync@openssh.com`.
    Fsync { handle: Vec<u8> },
    /// `lsetstat@openssh.com`: setstat without following a final symlink.
    Lsetstat {
        path: Vec<u8>,
        attrs: FileAttributes,
    },
    /// `limits@openssh.com`.
    Limits,
    /// `expand-path@openssh.com`: realpath that also expands `~`.
    ExpandPath { path: Vec<u8> },
    /// `copy-data`: server-side copy between two open handles.
    CopyData {
        read_handle: Vec<u8>,
        read_offset: u64,
        length: u64,
        write_handle: Vec<u8>,
        write_offset: u64,
    },
    /// `home-directory`: the home directory of a user.
    HomeDirectory { username: Vec<u8> },
    /// Any other extension: its name and raw payload.
    Other { name: Vec<u8>, data: Vec<u8> },
}

impl ExtendedRequest {
    /// The extension's name on the wire.
    pub fn name(&self) -> &[u8] {
        match self {
            ExtendedRequest::PosixRename { .. } => ext::POSIX_RENAME.as_bytes(),
            ExtendedRequest::Statvfs { .. } => ext::STATVFS.as_bytes(),
            ExtendedRequest::Fstatvfs { .. } => ext::FSTATVFS.as_bytes(),
            ExtendedRequest::Hardlink { .. } => ext::HARDLINK.as_bytes(),
            ExtendedRequest::Fsync { .. } => ext::FSYNC.as_bytes(),
            ExtendedRequest::Lsetstat { .. } => ext::LSETSTAT.as_bytes(),
            ExtendedRequest::Limits => ext::LIMITS.as_bytes(),
            ExtendedRequest::ExpandPath { .. } => ext::EXPAND_PATH.as_bytes(),
            ExtendedRequest::CopyData { .. } => ext::COPY_DATA.as_bytes(),
            ExtendedRequest::HomeDirectory { .. } => ext::HOME_DIRECTORY.as_bytes(),
            ExtendedRequest::Other { name, .. } => name,
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            ExtendedRequest::PosixRename { old, new } | ExtendedRequest::Hardlink { old, new } => {
                out.put_string(old);
                out.put_string(new);
            }
            ExtendedRequest::Statvfs { path } | ExtendedRequest::ExpandPath { path } => {
                out.put_string(path)
            }
            ExtendedRequest::Fstatvfs { handle } | ExtendedRequest::Fsync { handle } => {
                out.put_string(handle)
            }
            ExtendedRequest::Lsetstat { path, attrs } => {
                out.put_string(path);
                attrs.encode(out);
            }
            ExtendedRequest::Limits => {}
            ExtendedRequest::CopyData {
                read_handle,
                read_offset,
                length,
                write_handle,
                write_offset,
            } => {
                out.put_string(read_handle);
                out.put_u64(*read_offset);
                out.put_u64(*length);
                out.put_string(write_handle);
                out.put_u64(*write_offset);
            }
            ExtendedRequest::HomeDirectory { username } => out.put_string(username),
            ExtendedRequest::Other { data, .. } => out.extend_from_slice(data),
        }
    }

    fn decode_body(name: &[u8], r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let name_str = std::str::from_utf8(name).unwrap_or("");
        Ok(match name_str {
            ext::POSIX_RENAME => ExtendedRequest::PosixRename {
                old: r.string()?,
                new: r.string()?,
            },
            ext::HARDLINK => ExtendedRequest::Hardlink {
                old: r.string()?,
                new: r.string()?,
            },
            ext::STATVFS => ExtendedRequest::Statvfs { path: r.string()? },
            ext::EXPAND_PATH => ExtendedRequest::ExpandPath { path: r.string()? },
            ext::FSTATVFS => ExtendedRequest::Fstatvfs {
                handle: r.string()?,
            },
            ext::FSYNC => ExtendedRequest::Fsync {
                handle: r.string()?,
            },
            ext::LSETSTAT => ExtendedRequest::Lsetstat {
                path: r.string()?,
                attrs: FileAttributes::decode(r)?,
            },
            ext::LIMITS => ExtendedRequest::Limits,
            ext::COPY_DATA => ExtendedRequest::CopyData {
                read_handle: r.string()?,
                read_offset: r.u64()?,
                length: r.u64()?,
                write_handle: r.string()?,
                write_offset: r.u64()?,
            },
            ext::HOME_DIRECTORY => ExtendedRequest::HomeDirectory {
                username: r.string()?,
            },
            _ => ExtendedRequest::Other {
                name: name.to_vec(),
                data: r.rest().to_vec(),
            },
        })
    }
}

/// A client request (every packet a client sends except INIT).
// Field names are the protocol's own; see the draft.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// SSH_FXP_OPEN.
    Open {
        path: Vec<u8>,
        flags: OpenFlags,
        attrs: FileAttributes,
    },
    /// SSH_FXP_CLOSE.
    Close { handle: Vec<u8> },
    /// SSH_FXP_READ.
    Read {
        handle: Vec<u8>,
        offset: u64,
        len: u32,
    },
    /// SSH_FXP_WRITE.
    Write {
        handle: Vec<u8>,
        offset: u64,
        data: Vec<u8>,
    },
    /// SSH_FXP_LSTAT.
    Lstat { path: Vec<u8> },
    /// SSH_FXP_FSTAT.
    Fstat { handle: Vec<u8> },
    /// SSH_FXP_SETSTAT.
    Setstat {
        path: Vec<u8>,
        attrs: FileAttributes,
    },
    /// SSH_FXP_FSETSTAT.
    Fsetstat {
        handle: Vec<u8>,
        attrs: FileAttributes,
    },
    /// SSH_FXP_OPENDIR.
    Opendir { path: Vec<u8> },
    /// SSH_FXP_READDIR.
    Readdir { handle: Vec<u8> },
    /// SSH_FXP_REMOVE.
    Remove { path: Vec<u8> },
    /// SSH_FXP_MKDIR.
    Mkdir {
        path: Vec<u8>,
        attrs: FileAttributes,
    },
    /// SSH_FXP_RMDIR.
    Rmdir { path: Vec<u8> },
    /// SSH_FXP_REALPATH.
    Realpath { path: Vec<u8> },
    /// SSH_FXP_STAT.
    Stat { path: Vec<u8> },
    /// SSH_FXP_RENAME (fails if `new` exists, per the draft).
    Rename { old: Vec<u8>, new: Vec<u8> },
    /// SSH_FXP_READLINK.
    Readlink { path: Vec<u8> },
    /// SSH_FXP_SYMLINK: `link` is made, pointing to `target`; `order` says which of the
    /// two goes first on the wire (see [`SymlinkOrder`]).
    Symlink {
        target: Vec<u8>,
        link: Vec<u8>,
        order: SymlinkOrder,
    },
    /// SSH_FXP_EXTENDED.
    Extended(ExtendedRequest),
}

impl Request {
    /// The packet type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Request::Open { .. } => kind::OPEN,
            Request::Close { .. } => kind::CLOSE,
            Request::Read { .. } => kind::READ,
            Request::Write { .. } => kind::WRITE,
            Request::Lstat { .. } => kind::LSTAT,
            Request::Fstat { .. } => kind::FSTAT,
            Request::Setstat { .. } => kind::SETSTAT,
            Request::Fsetstat { .. } => kind::FSETSTAT,
            Request::Opendir { .. } => kind::OPENDIR,
            Request::Readdir { .. } => kind::READDIR,
            Request::Remove { .. } => kind::REMOVE,
            Request::Mkdir { .. } => kind::MKDIR,
            Request::Rmdir { .. } => kind::RMDIR,
            Request::Realpath { .. } => kind::REALPATH,
            Request::Stat { .. } => kind::STAT,
            Request::Rename { .. } => kind::RENAME,
            Request::Readlink { .. } => kind::READLINK,
            Request::Symlink { .. } => kind::SYMLINK,
            Request::Extended(_) => kind::EXTENDED,
        }
    }

    /// A short name for logs and errors.
    pub fn op_name(&self) -> &'static str {
        kind::name(self.kind())
    }

    /// Appends the whole packet (length, type, id, body) to `out`.
    pub fn encode(&self, id: u32, out: &mut Vec<u8>) {
        if let Request::Write {
            handle,
            offset,
            data,
        } = self
        {
            return encode_write(id, handle, *offset, data, out);
        }
        let start = begin_packet(out, self.kind());
        out.put_u32(id);
        match self {
            Request::Open { path, flags, attrs } => {
                out.put_string(path);
                out.put_u32(flags.bits());
                attrs.encode(out);
            }
            Request::Close { handle } | Request::Fstat { handle } | Request::Readdir { handle } => {
                out.put_string(handle)
            }
            Request::Read {
                handle,
                offset,
                len,
            } => {
                out.put_string(handle);
                out.put_u64(*offset);
                out.put_u32(*len);
            }
            Request::Write { .. } => unreachable!("encoded above"),
            Request::Lstat { path }
            | Request::Opendir { path }
            | Request::Remove { path }
            | Request::Rmdir { path }
            | Request::Realpath { path }
            | Request::Stat { path }
            | Request::Readlink { path } => out.put_string(path),
            Request::Setstat { path, attrs } | Request::Mkdir { path, attrs } => {
                out.put_string(path);
                attrs.encode(out);
            }
            Request::Fsetstat { handle, attrs } => {
                out.put_string(handle);
                attrs.encode(out);
            }
            Request::Rename { old, new } => {
                out.put_string(old);
                out.put_string(new);
            }
            Request::Symlink {
                target,
                link,
                order: SymlinkOrder::TargetFirst,
            } => {
                out.put_string(target);
                out.put_string(link);
            }
            Request::Symlink {
                target,
                link,
                order: SymlinkOrder::LinkFirst,
            } => {
                out.put_string(link);
                out.put_string(target);
            }
            Request::Extended(e) => {
                out.put_string(e.name());
                e.encode_body(out);
            }
        }
        end_packet(out, start);
    }
}

/// Encodes SSH_FXP_WRITE straight from a borrowed buffer, so file data is copied once.
pub fn encode_write(id: u32, handle: &[u8], offset: u64, data: &[u8], out: &mut Vec<u8>) {
    out.reserve(4 + 1 + 4 + 4 + handle.len() + 8 + 4 + data.len());
    let start = begin_packet(out, kind::WRITE);
    out.put_u32(id);
    out.put_string(handle);
    out.put_u64(offset);
    out.put_string(data);
    end_packet(out, start);
}

/// Encodes SSH_FXP_WRITE up to its data, which the caller sends right behind it: the
/// packet's and the data's lengths both count `data_len` bytes not yet written.
pub fn encode_write_header(id: u32, handle: &[u8], offset: u64, data_len: u32, out: &mut Vec<u8>) {
    let start = begin_packet(out, kind::WRITE);
    out.put_u32(id);
    out.put_string(handle);
    out.put_u64(offset);
    out.put_u32(data_len);
    let len = (out.len() - start - 4) as u32 + data_len;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Encodes SSH_FXP_WRITE whose data `fill` produces in place: `fill(out, max)` gets `out`
/// with at least `max` bytes of spare capacity, appends at most `max` bytes, and returns
/// how many it appended. With zero bytes the packet is not sent (`Ok((0, false))`; the caller
/// takes the header back). Returns the data length and whether a packet was encoded.
pub fn encode_write_with<E>(
    id: u32,
    handle: &[u8],
    offset: u64,
    max: usize,
    out: &mut Vec<u8>,
    fill: impl FnOnce(&mut Vec<u8>, usize) -> Result<usize, E>,
) -> Result<(usize, bool), E> {
    out.reserve(4 + 1 + 4 + 4 + handle.len() + 8 + 4 + max);
    let start = begin_packet(out, kind::WRITE);
    out.put_u32(id);
    out.put_string(handle);
    out.put_u64(offset);
    let len_at = out.len();
    out.put_u32(0);
    let n = fill(out, max)?;
    if n == 0 {
        return Ok((0, false));
    }
    out[len_at..len_at + 4].copy_from_slice(&(n as u32).to_be_bytes());
    end_packet(out, start);
    Ok((n, true))
}

/// A server reply (every packet a server sends except VERSION).
// Field names are the protocol's own; see the draft.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// SSH_FXP_STATUS.
    Status {
        code: StatusCode,
        message: Vec<u8>,
        language: Vec<u8>,
    },
    /// SSH_FXP_HANDLE.
    Handle(Vec<u8>),
    /// SSH_FXP_DATA.
    Data(Vec<u8>),
    /// SSH_FXP_NAME.
    Name(Vec<NameEntry>),
    /// SSH_FXP_ATTRS.
    Attrs(FileAttributes),
    /// SSH_FXP_EXTENDED_REPLY: raw payload, decoded by whoever knows what was asked.
    ExtendedReply(Vec<u8>),
}

impl Response {
    /// The packet type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Response::Status { .. } => kind::STATUS,
            Response::Handle(_) => kind::HANDLE,
            Response::Data(_) => kind::DATA,
            Response::Name(_) => kind::NAME,
            Response::Attrs(_) => kind::ATTRS,
            Response::ExtendedReply(_) => kind::EXTENDED_REPLY,
        }
    }

    /// Appends the whole packet (length, type, id, body) to `out`.
    pub fn encode(&self, id: u32, out: &mut Vec<u8>) {
        let start = begin_packet(out, self.kind());
        out.put_u32(id);
        match self {
            Response::Status {
                code,
                message,
                language,
            } => {
                out.put_u32(code.code());
                out.put_string(message);
                out.put_string(language);
            }
            Response::Handle(h) | Response::Data(h) => out.put_string(h),
            Response::Name(entries) => {
                out.put_u32(entries.len() as u32);
                for e in entries {
                    out.put_string(&e.filename);
                    out.put_string(&e.longname);
                    e.attrs.encode(out);
                }
            }
            Response::Attrs(a) => a.encode(out),
            Response::ExtendedReply(d) => out.extend_from_slice(d),
        }
        end_packet(out, start);
    }
}

/// Everything a client sends.
// Field names are the protocol's own; see the draft.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientPacket {
    /// SSH_FXP_INIT with the client's version and extension pairs.
    Init {
        version: u32,
        extensions: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// A request with its id.
    Request { id: u32, request: Request },
}

impl ClientPacket {
    /// Appends the framed packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ClientPacket::Init {
                version,
                extensions,
            } => encode_version(kind::INIT, *version, extensions, out),
            ClientPacket::Request { id, request } => request.encode(*id, out),
        }
    }

    /// Decodes one packet body (type byte onward, without the length), as a server would.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body, "client packet");
        let t = r.u8()?;
        if t == kind::INIT {
            let version = r.u32()?;
            let extensions = decode_ext_pairs(&mut r)?;
            return Ok(ClientPacket::Init {
                version,
                extensions,
            });
        }
        let mut r = Reader::new(r.rest(), kind::name(t));
        let id = r.u32()?;
        let request = match t {
            kind::OPEN => Request::Open {
                path: r.string()?,
                flags: OpenFlags::from_bits_retain(r.u32()?),
                attrs: FileAttributes::decode(&mut r)?,
            },
            kind::CLOSE => Request::Close {
                handle: r.string()?,
            },
            kind::READ => Request::Read {
                handle: r.string()?,
                offset: r.u64()?,
                len: r.u32()?,
            },
            kind::WRITE => Request::Write {
                handle: r.string()?,
                offset: r.u64()?,
                data: r.string()?,
            },
            kind::LSTAT => Request::Lstat { path: r.string()? },
            kind::FSTAT => Request::Fstat {
                handle: r.string()?,
            },
            kind::SETSTAT => Request::Setstat {
                path: r.string()?,
                attrs: FileAttributes::decode(&mut r)?,
            },
            kind::FSETSTAT => Request::Fsetstat {
                handle: r.string()?,
                attrs: FileAttributes::decode(&mut r)?,
            },
            kind::OPENDIR => Request::Opendir { path: r.string()? },
            kind::READDIR => Request::Readdir {
                handle: r.string()?,
            },
            kind::REMOVE => Request::Remove { path: r.string()? },
            kind::MKDIR => Request::Mkdir {
                path: r.string()?,
                attrs: FileAttributes::decode(&mut r)?,
            },
            kind::RMDIR => Request::Rmdir { path: r.string()? },
            kind::REALPATH => Request::Realpath { path: r.string()? },
            kind::STAT => Request::Stat { path: r.string()? },
            kind::RENAME => Request::Rename {
                old: r.string()?,
                new: r.string()?,
            },
            kind::READLINK => Request::Readlink { path: r.string()? },
            // As a server that announces no other order reads it: OpenSSH's.
            kind::SYMLINK => Request::Symlink {
                target: r.string()?,
                link: r.string()?,
                order: SymlinkOrder::TargetFirst,
            },
            kind::EXTENDED => {
                let name = r.string()?;
                Request::Extended(ExtendedRequest::decode_body(&name, &mut r)?)
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(ClientPacket::Request { id, request })
    }
}

/// Everything a server sends.
// Field names are the protocol's own; see the draft.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerPacket {
    /// SSH_FXP_VERSION with the server's version and extension pairs.
    Version {
        version: u32,
        extensions: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// A reply to request `id`.
    Response { id: u32, response: Response },
}

impl ServerPacket {
    /// Appends the framed packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ServerPacket::Version {
                version,
                extensions,
            } => encode_version(kind::VERSION, *version, extensions, out),
            ServerPacket::Response { id, response } => response.encode(*id, out),
        }
    }

    /// Decodes one packet body (type byte onward, without the length), as a client would.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body, "server packet");
        let t = r.u8()?;
        if t == kind::VERSION {
            let version = r.u32()?;
            let extensions = decode_ext_pairs(&mut r)?;
            return Ok(ServerPacket::Version {
                version,
                extensions,
            });
        }
        let mut r = Reader::new(r.rest(), kind::name(t));
        let id = r.u32()?;
        let response = match t {
            kind::STATUS => Response::Status {
                code: StatusCode::from_code(r.u32()?),
                message: r.optional_string()?,
                language: r.optional_string()?,
            },
            kind::HANDLE => Response::Handle(r.string()?),
            kind::DATA => Response::Data(r.string()?),
            kind::NAME => {
                let count = r.u32()? as usize;
                // An entry is at least two empty strings and a flags word: 12 bytes.
                if count > r.remaining() / 12 {
                    return Err(DecodeError::Truncated("SSH_FXP_NAME"));
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    entries.push(NameEntry {
                        filename: r.string()?,
                        longname: r.string()?,
                        attrs: FileAttributes::decode(&mut r)?,
                    });
                }
                Response::Name(entries)
            }
            kind::ATTRS => Response::Attrs(FileAttributes::decode(&mut r)?),
            kind::EXTENDED_REPLY => Response::ExtendedReply(r.rest().to_vec()),
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(ServerPacket::Response { id, response })
    }
}

fn begin_packet(out: &mut Vec<u8>, t: u8) -> usize {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(t);
    start
}

fn end_packet(out: &mut [u8], start: usize) {
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn encode_version(t: u8, version: u32, extensions: &[(Vec<u8>, Vec<u8>)], out: &mut Vec<u8>) {
    let start = begin_packet(out, t);
    out.put_u32(version);
    for (k, v) in extensions {
        out.put_string(k);
        out.put_string(v);
    }
    end_packet(out, start);
}

fn decode_ext_pairs(r: &mut Reader<'_>) -> Result<ExtensionPairs, DecodeError> {
    let mut pairs = Vec::new();
    while !r.is_empty() {
        pairs.push((r.string()?, r.string()?));
    }
    Ok(pairs)
}

/// Reply of `statvfs@openssh.com` and `fstatvfs@openssh.com`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Statvfs {
    /// File system block size.
    pub bsize: u64,
    /// Fundamental block size.
    pub frsize: u64,
    /// Blocks in total (in `frsize` units).
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks for unprivileged users.
    pub bavail: u64,
    /// Inodes in total.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Free inodes for unprivileged users.
    pub favail: u64,
    /// File system id.
    pub fsid: u64,
    /// Mount flags (bit 0 read-only, bit 1 nosuid).
    pub flag: u64,
    /// Longest file name.
    pub namemax: u64,
}

impl Statvfs {
    /// Decodes the payload of the EXTENDED_REPLY.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload, "statvfs reply");
        let s = Statvfs {
            bsize: r.u64()?,
            frsize: r.u64()?,
            blocks: r.u64()?,
            bfree: r.u64()?,
            bavail: r.u64()?,
            files: r.u64()?,
            ffree: r.u64()?,
            favail: r.u64()?,
            fsid: r.u64()?,
            flag: r.u64()?,
            namemax: r.u64()?,
        };
        r.finish()?;
        Ok(s)
    }

    /// Encodes the payload of the EXTENDED_REPLY.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(88);
        for x in [
            self.bsize,
            self.frsize,
            self.blocks,
            self.bfree,
            self.bavail,
            self.files,
            self.ffree,
            self.favail,
            self.fsid,
            self.flag,
            self.namemax,
        ] {
            v.put_u64(x);
        }
        v
    }
}

/// Reply of `limits@openssh.com`. Zero means "no limit stated".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Largest packet the server accepts, header included.
    pub max_packet_length: u64,
    /// Largest READ length the server serves in one reply.
    pub max_read_length: u64,
    /// Largest WRITE length the server accepts.
    pub max_write_length: u64,
    /// How many handles may be open at once.
    pub max_open_handles: u64,
}

impl Limits {
    /// Decodes the payload of the EXTENDED_REPLY.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload, "limits reply");
        let l = Limits {
            max_packet_length: r.u64()?,
            max_read_length: r.u64()?,
            max_write_length: r.u64()?,
            max_open_handles: r.u64()?,
        };
        r.finish()?;
        Ok(l)
    }

    /// Encodes the payload of the EXTENDED_REPLY.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        v.put_u64(self.max_packet_length);
        v.put_u64(self.max_read_length);
        v.put_u64(self.max_write_length);
        v.put_u64(self.max_open_handles);
        v
    }
}
