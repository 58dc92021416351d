//! Continuing interrupted transfers without corrupting them.
//!
//! A partial copy — an upload's temporary file, the target of `put -a`, the local file of
//! `get -a` — is continued only when its size and modification time say it can be a
//! prefix of the source (not larger, and written since the source last changed), and the
//! bytes just below where writing resumes agree with the source's (one READ: SFTP has no
//! portable hash). Writing resumes a window below the partial copy's end, not at it: a
//! server that handles WRITEs out of order (some run them on a thread pool) can leave
//! holes in the last window of a transfer killed midway, and a download killed before it
//! could cut its file back leaves the same. A file striped over several channels has
//! requests in flight on each, all within the transfer's byte budget: the window is then
//! that budget (24 MiB by default).
//!
//! Uploads of files larger than that window use a temporary name derived from the source's
//! size and time (`.NAME.r<hash>.sftpipe-tmp`), so a rerun finds what an interrupted run
//! left with one STAT; `-a` lists the directory instead, which also finds the leftovers of
//! other runs, removed once the upload succeeded.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;

use futures_util::FutureExt;
use futures_util::future::{LocalBoxFuture, Shared};

use super::{DEFAULT_BYTES_IN_FLIGHT, DEFAULT_REQUESTS, Transfer, lossy, remote_basename};
use crate::client::Handle;
use crate::error::{Error, Result};
use crate::proto::{FileAttributes, NameEntry, OpenFlags};

/// Bytes compared below the point where a partial copy is continued.
pub(crate) const CHECK_BLOCK: usize = 64 * 1024;

/// The longest part of a target's name kept in its temporary names (NAME_MAX is 255).
pub(crate) const TEMP_BASE_MAX: usize = 180;

const TEMP_SUFFIX: &[u8] = b".sftpipe-tmp";

/// A directory's entries, listed once per batch however many files ask.
pub(crate) type SharedListing = Shared<LocalBoxFuture<'static, Option<Rc<Vec<NameEntry>>>>>;

/// Listings by directory (see [`Transfer::listing`]).
pub(crate) type Listings = Rc<RefCell<HashMap<Vec<u8>, SharedListing>>>;

/// What a partial copy's size and modification time say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Judgement {
    /// The source's size and time (an earlier complete copy with `-p`).
    Complete,
    /// Not larger than the source and written since it last changed: can be a prefix.
    Prefix,
    /// Larger than the source: cannot be a prefix.
    Larger,
    /// Last written before the source last changed (or of unknown time): a copy of an
    /// earlier version, which may differ anywhere even where its last bytes agree.
    Older,
}

/// Judges a partial copy against its source (times in seconds since the epoch).
pub(crate) fn judge(
    partial_size: u64,
    partial_mtime: Option<i64>,
    source_size: u64,
    source_mtime: Option<i64>,
) -> Judgement {
    if partial_size > source_size {
        return Judgement::Larger;
    }
    match (partial_mtime, source_mtime) {
        (Some(p), Some(s)) if p == s && partial_size == source_size => Judgement::Complete,
        (Some(p), Some(s)) if p >= s => Judgement::Prefix,
        _ => Judgement::Older,
    }
}

/// `name` with `id` as an upload's temporary file beside `remote`:
/// `.NAME.<id>.sftpipe-tmp`, within NAME_MAX however long NAME is.
pub(crate) fn temp_name_with_id(remote: &[u8], id: &str) -> Vec<u8> {
    let base = remote_basename(remote);
    let base = &base[..base.len().min(TEMP_BASE_MAX)];
    let mut name = b".".to_vec();
    name.extend_from_slice(base);
    name.push(b'.');
    name.extend_from_slice(id.as_bytes());
    name.extend_from_slice(TEMP_SUFFIX);
    beside(remote, &name)
}

/// The path of `name` in `remote`'s directory, relative when `remote` is a bare name.
pub(crate) fn beside(remote: &[u8], name: &[u8]) -> Vec<u8> {
    match crate::task::dirlock::parent_dir(remote) {
        Some(dir) if remote.contains(&b'/') => super::remote_join(dir, name),
        _ => name.to_vec(),
    }
}

/// The temporary name of every upload of one version of a file (its size and
/// modification time in nanoseconds) to `remote`, so that a rerun finds what an
/// interrupted run left.
pub fn resumable_temp_name(remote: &[u8], size: u64, mtime_ns: i128) -> Vec<u8> {
    // FNV-1a: stable across runs and builds (std's hashers promise neither).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in size.to_le_bytes().iter().chain(&mtime_ns.to_le_bytes()) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    temp_name_with_id(remote, &format!("r{h:016x}"))
}

/// True when `name` is one of the temporary names of uploads to a file named `base`
/// (`.BASE.<id>.sftpipe-tmp`, the id without dots, so `.a.b.1.sftpipe-tmp` belongs to
/// `a.b`, not to `a`).
pub(crate) fn is_temp_of(base: &[u8], name: &[u8]) -> bool {
    let base = &base[..base.len().min(TEMP_BASE_MAX)];
    let Some(rest) = name.strip_prefix(b".") else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(base) else {
        return false;
    };
    let Some(id) = rest
        .strip_prefix(b".")
        .and_then(|r| r.strip_suffix(TEMP_SUFFIX))
    else {
        return false;
    };
    !id.is_empty() && id.iter().all(u8::is_ascii_alphanumeric)
}

/// A local file's modification time in nanoseconds since the epoch.
pub(crate) fn mtime_ns(meta: &fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

impl Transfer {
    /// How far below a partial copy's end writing resumes: the most bytes a transfer
    /// with these options, or with the defaults, keeps in flight for a file of
    /// `source_len` bytes (see the module's documentation): one channel's requests, or,
    /// for a file big enough to be striped over channels, up to the byte budget.
    pub(crate) fn rewind(&self, chunk: usize, source_len: u64) -> u64 {
        let striped = source_len >= crate::pool::STRIPE_MIN;
        let channels = |n: usize| if striped { n } else { 1 };
        let window = |requests: usize, channels: usize, budget: usize| {
            (requests.max(1) * chunk * channels).min(budget) as u64
        };
        let max = self.pool.as_ref().map_or(1, |p| p.max());
        window(
            self.opts.requests,
            channels(max),
            self.opts.max_bytes_in_flight,
        )
        .max(window(
            DEFAULT_REQUESTS,
            channels(crate::transport::DEFAULT_CONNECTIONS),
            DEFAULT_BYTES_IN_FLIGHT,
        ))
    }

    /// Where a partial copy of `size` bytes is continued; `None` when none of it is
    /// safe to keep.
    pub(crate) fn resume_point(&self, size: u64, chunk: usize, source_len: u64) -> Option<u64> {
        Some(size.saturating_sub(self.rewind(chunk, source_len))).filter(|&s| s > 0)
    }

    /// True when the [`CHECK_BLOCK`] bytes below `end` are the same in the remote file
    /// open as `handle` and in the local file `file`.
    pub(crate) async fn agrees_below(
        &self,
        handle: &Handle,
        file: &fs::File,
        local: &Path,
        end: u64,
    ) -> Result<bool> {
        let len = CHECK_BLOCK.min(usize::try_from(end).unwrap_or(CHECK_BLOCK));
        let from = end - len as u64;
        let mut want = vec![0u8; len];
        match file.read_exact_at(&mut want, from) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => {
                return Err(Error::local(format!("cannot read {}", local.display()), e));
            }
        }
        let mut got = Vec::with_capacity(len);
        while got.len() < len {
            let ask = (len - got.len()) as u32;
            match self.sftp.read(handle, from + got.len() as u64, ask).await {
                Ok(Some(data)) if !data.is_empty() => {
                    got.extend_from_slice(&data[..data.len().min(ask as usize)])
                }
                Err(e) if e.is_connection() => return Err(e),
                Err(e) => {
                    log::debug!("cannot read back {}: {e}", lossy(handle.path()));
                    return Ok(false);
                }
                Ok(_) => return Ok(false),
            }
        }
        Ok(got == want)
    }

    /// Opens the remote partial copy `path` (`attrs` from a STAT or listing) to continue
    /// writing it, if it can be a prefix of the local file and its bytes agree; returns
    /// the open handle and where to continue.
    pub(crate) async fn reopen_partial(
        &self,
        path: &[u8],
        attrs: &FileAttributes,
        file: &fs::File,
        local: &Path,
        meta: &fs::Metadata,
        chunk: usize,
    ) -> Result<Option<(Handle, u64)>> {
        use std::os::unix::fs::MetadataExt;
        let size = attrs.size.unwrap_or(0);
        let verdict = judge(
            size,
            attrs.mtime().map(i64::from),
            meta.len(),
            Some(meta.mtime()),
        );
        if !attrs.is_file() || !matches!(verdict, Judgement::Prefix | Judgement::Complete) {
            return Ok(None);
        }
        let Some(start) = self.resume_point(size, chunk, meta.len()) else {
            return Ok(None);
        };
        let handle = match self
            .sftp
            .open(
                path,
                OpenFlags::READ | OpenFlags::WRITE,
                &FileAttributes::default(),
            )
            .await
        {
            Ok(h) => h,
            Err(e) if e.is_connection() => return Err(e),
            Err(e) => {
                log::debug!("cannot reopen {}: {e}", lossy(path));
                return Ok(None);
            }
        };
        if !self.agrees_below(&handle, file, local, start).await? {
            log::info!(
                "{}: not a copy of the start of {}; not resumed",
                lossy(path),
                local.display()
            );
            return Ok(None);
        }
        log::info!(
            "resuming {}: keeping {start} of its {size} bytes",
            lossy(path)
        );
        Ok(Some((handle, start)))
    }

    /// `dir`'s entries, listed once per batch (for `-a`, which looks for the leftovers
    /// of every file); `None` when it cannot be listed.
    pub(crate) async fn listing(&self, dir: &[u8]) -> Option<Rc<Vec<NameEntry>>> {
        let shared = self
            .listings
            .borrow_mut()
            .entry(dir.to_vec())
            .or_insert_with(|| {
                let (sftp, dir) = (self.sftp.clone(), dir.to_vec());
                async move {
                    match sftp.read_dir(&dir).await {
                        Ok(entries) => Some(Rc::new(entries)),
                        Err(e) => {
                            if !e.is_not_found() {
                                log::debug!("cannot list {}: {e}", lossy(&dir));
                            }
                            None
                        }
                    }
                }
                .boxed_local()
                .shared()
            })
            .clone();
        shared.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judgements() {
        use Judgement::*;
        assert_eq!(judge(10, Some(5), 10, Some(5)), Complete);
        assert_eq!(judge(4, Some(5), 10, Some(5)), Prefix);
        assert_eq!(judge(4, Some(9), 10, Some(5)), Prefix);
        assert_eq!(judge(10, Some(9), 10, Some(5)), Prefix);
        assert_eq!(judge(11, Some(9), 10, Some(5)), Larger);
        // An earlier complete copy of an older version: smaller, written before.
        assert_eq!(judge(4, Some(4), 10, Some(5)), Older);
        assert_eq!(judge(4, None, 10, Some(5)), Older);
        assert_eq!(judge(4, Some(9), 10, None), Older);
    }

    #[test]
    fn temp_names_of_a_target() {
        let t = resumable_temp_name(b"/srv/a.iso", 10, 5);
        assert_eq!(t, resumable_temp_name(b"/srv/a.iso", 10, 5));
        assert_ne!(t, resumable_temp_name(b"/srv/a.iso", 10, 6));
        assert_ne!(t, resumable_temp_name(b"/srv/a.iso", 11, 5));
        let name = remote_basename(&t);
        assert!(is_temp_of(b"a.iso", name));
        assert!(is_temp_of(b"a.iso", b".a.iso.1f2e.sftpipe-tmp"));
        assert!(!is_temp_of(b"a", b".a.iso.1f2e.sftpipe-tmp"));
        assert!(!is_temp_of(b"a.iso", b".a.iso..sftpipe-tmp"));
        assert!(!is_temp_of(b"a.iso", b"a.iso.1.sftpipe-tmp"));
        assert!(!is_temp_of(b"a.iso", b".a.iso.1.sftpipe-partial"));
        let long = vec![b'x'; 255];
        assert!(is_temp_of(
            &long,
            remote_basename(&resumable_temp_name(&long, 1, 1))
        ));
        assert!(resumable_temp_name(&long, 1, 1).len() < 255);
    }
}
