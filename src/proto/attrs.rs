//! File attributes (draft-ietf-secsh-filexfer-02 §5).

use super::DecodeError;
use super::wire::{PutWire, Reader};

bitflags::bitflags! {
    /// Which fields of [`FileAttributes`] are present on the wire.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct AttrFlags: u32 {
        /// `size` is present.
        const SIZE = 0x0000_0001;
        /// `uid` and `gid` are present.
        const UIDGID = 0x0000_0002;
        /// `permissions` is present.
        const PERMISSIONS = 0x0000_0004;
        /// `atime` and `mtime` are present.
        const ACMODTIME = 0x0000_0008;
        /// Extended name/value pairs follow.
        const EXTENDED = 0x8000_0000;
    }
}

/// The kind of file, taken from the `S_IFMT` bits of the permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device, block device, FIFO or socket.
    Other,
    /// The server did not send permissions.
    Unknown,
}

/// `S_IFMT` and friends; SFTP v3 carries POSIX mode bits unchanged.
pub mod mode {
    /// Mask of the file type bits.
    pub const S_IFMT: u32 = 0o170000;
    /// Regular file.
    pub const S_IFREG: u32 = 0o100000;
    /// Directory.
    pub const S_IFDIR: u32 = 0o040000;
    /// Symbolic link.
    pub const S_IFLNK: u32 = 0o120000;
}

/// Attributes of a remote file. Every field is optional, as on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileAttributes {
    /// Size in bytes.
    pub size: Option<u64>,
    /// Owner and group ids (sent together).
    pub uid_gid: Option<(u32, u32)>,
    /// POSIX mode bits including the file type.
    pub permissions: Option<u32>,
    /// Access and modification times in seconds since the epoch (sent together).
    pub atime_mtime: Option<(u32, u32)>,
    /// Vendor extension pairs.
    pub extended: Vec<(Vec<u8>, Vec<u8>)>,
}

impl FileAttributes {
    /// Attributes that carry only permissions.
    pub fn with_permissions(mode: u32) -> Self {
        FileAttributes {
            permissions: Some(mode),
            ..Default::default()
        }
    }

    /// The flags word describing which fields are present.
    pub fn flags(&self) -> AttrFlags {
        let mut f = AttrFlags::empty();
        f.set(AttrFlags::SIZE, self.size.is_some());
        f.set(AttrFlags::UIDGID, self.uid_gid.is_some());
        f.set(AttrFlags::PERMISSIONS, self.permissions.is_some());
        f.set(AttrFlags::ACMODTIME, self.atime_mtime.is_some());
        f.set(AttrFlags::EXTENDED, !self.extended.is_empty());
        f
    }

    /// The file type, from the permission bits.
    pub fn file_type(&self) -> FileType {
        match self.permissions {
            None => FileType::Unknown,
            Some(p) => match p & mode::S_IFMT {
                mode::S_IFREG => FileType::File,
                mode::S_IFDIR => FileType::Dir,
                mode::S_IFLNK => FileType::Symlink,
                _ => FileType::Other,
            },
        }
    }

    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Dir
    }

    /// True for a regular file.
    pub fn is_file(&self) -> bool {
        self.file_type() == FileType::File
    }

    /// True for a symbolic link (only `lstat` and `readdir` report links).
    pub fn is_symlink(&self) -> bool {
        self.file_type() == FileType::Symlink
    }

    /// Modification time, if sent.
    pub fn mtime(&self) -> Option<u32> {
        self.atime_mtime.map(|(_, m)| m)
    }

    /// Appends the wire encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(self.flags().bits());
        if let Some(size) = self.size {
            out.put_u64(size);
        }
        if let Some((uid, gid)) = self.uid_gid {
            out.put_u32(uid);
            out.put_u32(gid);
        }
        if let Some(p) = self.permissions {
            out.put_u32(p);
        }
        if let Some((a, m)) = self.atime_mtime {
            out.put_u32(a);
            out.put_u32(m);
        }
        if !self.extended.is_empty() {
            out.put_u32(self.extended.len() as u32);
            for (k, v) in &self.extended {
                out.put_string(k);
                out.put_string(v);
            }
        }
    }

    /// Reads attributes from `r`. Unknown flag bits are a protocol error: their fields'
    /// sizes are unknowable, so the rest of the packet could not be trusted.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let bits = r.u32()?;
        let flags = AttrFlags::from_bits(bits).ok_or(DecodeError::BadAttrFlags(bits))?;
        let mut a = FileAttributes::default();
        if flags.contains(AttrFlags::SIZE) {
            a.size = Some(r.u64()?);
        }
        if flags.contains(AttrFlags::UIDGID) {
            a.uid_gid = Some((r.u32()?, r.u32()?));
        }
        if flags.contains(AttrFlags::PERMISSIONS) {
            a.permissions = Some(r.u32()?);
        }
        if flags.contains(AttrFlags::ACMODTIME) {
            a.atime_mtime = Some((r.u32()?, r.u32()?));
        }
        if flags.contains(AttrFlags::EXTENDED) {
            let count = r.u32()? as usize;
            // Each pair needs at least two empty strings (8 bytes): bound before reserving.
            if count > r.remaining() / 8 {
                return Err(DecodeError::Truncated("attrs extended"));
            }
            a.extended.reserve(count);
            for _ in 0..count {
                a.extended.push((r.string()?, r.string()?));
            }
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_round_trips() {
        let a = FileAttributes {
            size: Some(1 << 40),
            uid_gid: Some((1000, 100)),
            permissions: Some(0o100644),
            atime_mtime: Some((1, 2)),
            extended: vec![(b"k@x".to_vec(), b"v".to_vec())],
        };
        let mut v = Vec::new();
        a.encode(&mut v);
        let mut r = Reader::new(&v, "attrs");
        assert_eq!(FileAttributes::decode(&mut r).unwrap(), a);
        r.finish().unwrap();
        assert!(a.is_file());
        assert_eq!(a.mtime(), Some(2));
    }

    #[test]
    fn empty_attrs_are_four_zero_bytes() {
        let mut v = Vec::new();
        FileAttributes::default().encode(&mut v);
        assert_eq!(v, [0, 0, 0, 0]);
    }

    #[test]
    fn unknown_flags_are_rejected() {
        let v = 0x10u32.to_be_bytes();
        let mut r = Reader::new(&v, "attrs");
        assert_eq!(
            FileAttributes::decode(&mut r),
            Err(DecodeError::BadAttrFlags(0x10))
        );
    }

    #[test]
    fn huge_extended_count_is_rejected() {
        let mut v = Vec::new();
        v.put_u32(AttrFlags::EXTENDED.bits());
        v.put_u32(u32::MAX);
        let mut r = Reader::new(&v, "attrs");
        assert!(FileAttributes::decode(&mut r).is_err());
    }

    #[test]
    fn file_types() {
        assert_eq!(
            FileAttributes::with_permissions(0o040755).file_type(),
            FileType::Dir
        );
        assert_eq!(
            FileAttributes::with_permissions(0o120777).file_type(),
            FileType::Symlink
        );
        assert_eq!(
            FileAttributes::with_permissions(0o020666).file_type(),
            FileType::Other
        );
        assert_eq!(FileAttributes::default().file_type(), FileType::Unknown);
    }
}
