//! The SFTP version 3 wire format (draft-ietf-secsh-filexfer-02) with OpenSSH's
//! extensions, as pure code: no I/O, no clocks, only bytes in and values out.
//!
//! [`ClientPacket`] and [`ServerPacket`] encode and decode every packet in both directions;
//! [`Framer`] cuts a byte stream into packets and refuses any length above the negotiated
//! maximum before buffering it.

mod attrs;
mod framing;
mod packet;
pub mod wire;

pub use attrs::{AttrFlags, FileAttributes, FileType, mode};
pub use framing::Framer;
pub use packet::{
    ClientPacket, ExtendedRequest, Limits, NameEntry, OpenFlags, Request, Response, ServerPacket,
    StatusCode, Statvfs, SymlinkOrder, encode_write, encode_write_header, encode_write_with,
};

/// Extension name/value pairs of INIT and VERSION.
pub type ExtensionPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The protocol version sftpipe speaks.
pub const SFTP_VERSION: u32 = 3;

/// Default largest packet accepted before `limits@openssh.com` says otherwise: 256 KiB of
/// data plus room for the header, as OpenSSH's own client and server assume.
pub const DEFAULT_MAX_PACKET: usize = 256 * 1024 + 1024;

/// Default largest packet sent (length field included) when the server does not state its
/// `max-packet-length`: OpenSSH's `sftp-server` has always dropped the connection on a
/// packet above 256 KiB (its length field excluded; counting it leaves a margin).
pub const DEFAULT_MAX_REQUEST: usize = 256 * 1024;

/// Packet type bytes.
pub mod kind {
    #![allow(missing_docs)]
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const LSTAT: u8 = 7;
    pub const FSTAT: u8 = 8;
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const OPENDIR: u8 = 11;
    pub const READDIR: u8 = 12;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const REALPATH: u8 = 16;
    pub const STAT: u8 = 17;
    pub const RENAME: u8 = 18;
    pub const READLINK: u8 = 19;
    pub const SYMLINK: u8 = 20;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const NAME: u8 = 104;
    pub const ATTRS: u8 = 105;
    pub const EXTENDED: u8 = 200;
    pub const EXTENDED_REPLY: u8 = 201;

    /// The protocol name of a packet type.
    pub fn name(t: u8) -> &'static str {
        match t {
            INIT => "SSH_FXP_INIT",
            VERSION => "SSH_FXP_VERSION",
            OPEN => "SSH_FXP_OPEN",
            CLOSE => "SSH_FXP_CLOSE",
            READ => "SSH_FXP_READ",
            WRITE => "SSH_FXP_WRITE",
            LSTAT => "SSH_FXP_LSTAT",
            FSTAT => "SSH_FXP_FSTAT",
            SETSTAT => "SSH_FXP_SETSTAT",
            FSETSTAT => "SSH_FXP_FSETSTAT",
            OPENDIR => "SSH_FXP_OPENDIR",
            READDIR => "SSH_FXP_READDIR",
            REMOVE => "SSH_FXP_REMOVE",
            MKDIR => "SSH_FXP_MKDIR",
            RMDIR => "SSH_FXP_RMDIR",
            REALPATH => "SSH_FXP_REALPATH",
            STAT => "SSH_FXP_STAT",
            RENAME => "SSH_FXP_RENAME",
            READLINK => "SSH_FXP_READLINK",
            SYMLINK => "SSH_FXP_SYMLINK",
            STATUS => "SSH_FXP_STATUS",
            HANDLE => "SSH_FXP_HANDLE",
            DATA => "SSH_FXP_DATA",
            NAME => "SSH_FXP_NAME",
            ATTRS => "SSH_FXP_ATTRS",
            EXTENDED => "SSH_FXP_EXTENDED",
            EXTENDED_REPLY => "SSH_FXP_EXTENDED_REPLY",
            _ => "SSH_FXP_UNKNOWN",
        }
    }
}

/// Extension names, and the version strings this client understands.
pub mod ext {
    #![allow(missing_docs)]
    pub const POSIX_RENAME: &str = "posix-rename@openssh.com";
    pub const STATVFS: &str = "statvfs@openssh.com";
    pub const FSTATVFS: &str = "fstatvfs@openssh.com";
    pub const HARDLINK: &str = "hardlink@openssh.com";
    pub const FSYNC: &str = "fsync@openssh.com";
    pub const LSETSTAT: &str = "lsetstat@openssh.com";
    pub const LIMITS: &str = "limits@openssh.com";
    pub const EXPAND_PATH: &str = "expand-path@openssh.com";
    pub const COPY_DATA: &str = "copy-data";
    pub const HOME_DIRECTORY: &str = "home-directory";

    /// The version string (the VERSION pair's value) each extension must carry for this
    /// client to use it; an unknown version is ignored rather than guessed at.
    pub fn understood_version(name: &str) -> Option<&'static str> {
        Some(match name {
            POSIX_RENAME | HARDLINK | FSYNC | LSETSTAT | LIMITS | EXPAND_PATH => "1",
            STATVFS | FSTATVFS => "2",
            COPY_DATA | HOME_DIRECTORY => "1",
            _ => return None,
        })
    }
}

/// Why bytes could not be decoded into a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A field runs past the end of the packet.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// Bytes are left after the last field.
    #[error("{1} unexpected trailing bytes in {0}")]
    TrailingBytes(&'static str, usize),
    /// An unknown packet type.
    #[error("unknown packet type {0}")]
    UnknownType(u8),
    /// Attribute flags with bits this version does not define.
    #[error("unknown attribute flags {0:#x}")]
    BadAttrFlags(u32),
    /// A packet length of zero or above the negotiated maximum.
    #[error("packet length {len} outside 1..={max}")]
    BadLength {
        /// The length field received.
        len: usize,
        /// The maximum in force.
        max: usize,
    },
}
