//! Running a [`Command`] over the connection and turning the outcome into an answer.

use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use super::request::Command;
use crate::client::Sftp;
use crate::error::Error;
use crate::mirror::{Compare, Filter, MirrorOptions, mirror_up};
use crate::proto::{FileAttributes, FileType, NameEntry, StatusCode, Statvfs};
use crate::task::DirLocks;
use crate::transfer::{Report, Transfer, TransferOptions};

/// At most this many per-path failures are listed in an answer (all are counted).
const MAX_LISTED_FAILURES: usize = 100;

/// The outcome of a command.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// `"ok"`, `"error"` (the operation failed) or `"fail"` (the request was bad).
    pub status: &'static str,
    /// Why it failed; empty on success.
    pub message: String,
    /// For `"error"`: a stable short code (see [`error_code`]).
    pub code: Option<&'static str>,
    /// The result (`null` when there is none).
    pub data: Value,
}

impl Reply {
    /// Success with `data`.
    pub fn ok(data: Value) -> Self {
        Reply {
            status: "ok",
            message: String::new(),
            code: None,
            data,
        }
    }

    /// The operation failed with `e`.
    pub fn error(e: &Error) -> Self {
        Reply {
            status: "error",
            message: e.to_string(),
            code: Some(error_code(e)),
            data: Value::Null,
        }
    }

    /// The request itself was bad.
    pub fn fail(message: impl Into<String>) -> Self {
        Reply {
            status: "fail",
            message: message.into(),
            code: None,
            data: Value::Null,
        }
    }

    /// The answer object, carrying `id` when the command had one.
    pub fn to_json(&self, id: Option<Value>) -> Value {
        let mut v = json!({
            "status": self.status,
            "message": self.message,
            "data": self.data,
        });
        if let Some(code) = self.code {
            v["code"] = json!(code);
        }
        if let Some(id) = id {
            v["id"] = id;
        }
        v
    }
}

/// A stable short code for an error: `not_found`, `permission_denied`, `failure` (the
/// server's generic refusal, also "already exists"), `eof`, `bad_message`, `unsupported`,
/// `connection` (ssh or the connection failed: nothing more will work), `protocol`,
/// `local` (a local file operation failed), `invalid` (e.g. a directory without
/// `recursive`, or a path too long for the server), `partial` (some entries of a tree failed).
pub fn error_code(e: &Error) -> &'static str {
    match e {
        Error::Status { code, .. } => match code {
            StatusCode::NoSuchFile => "not_found",
            StatusCode::PermissionDenied => "permission_denied",
            StatusCode::Eof => "eof",
            StatusCode::BadMessage => "bad_message",
            StatusCode::NoConnection | StatusCode::ConnectionLost => "connection",
            StatusCode::OpUnsupported => "unsupported",
            StatusCode::Ok | StatusCode::Failure | StatusCode::Other(_) => "failure",
        },
        Error::Connection(_) | Error::Spawn { .. } => "connection",
        Error::Protocol(_) => "protocol",
        Error::Unsupported(_) => "unsupported",
        Error::Local { .. } => "local",
        Error::InvalidInput(_) | Error::RequestTooLarge { .. } => "invalid",
        Error::Partial { failures, .. } => {
            if failures.iter().any(|(_, e)| error_code(e) == "connection") {
                "connection"
            } else {
                "partial"
            }
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::File => "file",
        FileType::Dir => "dir",
        FileType::Symlink => "symlink",
        FileType::Other => "other",
        FileType::Unknown => "unknown",
    }
}

/// STAT/LSTAT data; absent attributes are `null`.
pub fn attrs_json(a: &FileAttributes) -> Value {
    json!({
        "size": a.size,
        "mtime": a.mtime(),
        "atime": a.atime_mtime.map(|(at, _)| at),
        "mode": a.permissions,
        "uid": a.uid_gid.map(|(u, _)| u),
        "gid": a.uid_gid.map(|(_, g)| g),
        "type": type_name(a.file_type()),
    })
}

/// LISTDIR data, sorted by name: sftper's `[{name, size, mtime, mode}]`.
pub fn listing_json(mut entries: Vec<NameEntry>) -> Value {
    entries.sort_by(|a, b| a.filename.cmp(&b.filename));
    entries
        .iter()
        .map(|e| {
            json!({
                "name": e.name_lossy(),
                "size": e.attrs.size,
                "mtime": e.attrs.mtime(),
                "mode": e.attrs.permissions,
            })
        })
        .collect()
}

fn statvfs_json(s: &Statvfs) -> Value {
    json!({
        "bsize": s.bsize,
        "frsize": s.frsize,
        "blocks": s.blocks,
        "bfree": s.bfree,
        "bavail": s.bavail,
        "files": s.files,
        "ffree": s.ffree,
        "favail": s.favail,
        "fsid": s.fsid,
        "flag": s.flag,
        "namemax": s.namemax,
    })
}

/// An `error` answer for a batch with failures, `data` keeping the counts. One failure
/// answers with its own code and message; several with `partial` (or `connection`).
fn batch_reply(mut data: Value, done: u64, failures: Vec<(String, Error)>) -> Reply {
    data["failed"] = json!(failures.len());
    let Some((_, first)) = failures.first() else {
        return Reply::ok(data);
    };
    let (message, code) = if failures.len() == 1 {
        (first.to_string(), error_code(first))
    } else {
        let message = format!(
            "{} of {} operations failed; the first: {first}",
            failures.len(),
            done + failures.len() as u64
        );
        let connection = failures.iter().any(|(_, e)| error_code(e) == "connection");
        (message, if connection { "connection" } else { "partial" })
    };
    data["failures"] = failures
        .iter()
        .take(MAX_LISTED_FAILURES)
        .map(|(path, e)| json!({"path": path, "message": e.to_string(), "code": error_code(e)}))
        .collect();
    Reply {
        status: "error",
        message,
        code: Some(code),
        data,
    }
}

fn report_reply(r: Report) -> Reply {
    let mut data =
        json!({"bytes": r.bytes, "files": r.files, "dirs": r.dirs, "symlinks": r.symlinks});
    if !r.kept_staged.is_empty() {
        data["kept_staged"] = json!(r.kept_staged);
    }
    batch_reply(data, r.files + r.dirs + r.symlinks, r.failures)
}

fn to_reply(r: crate::Result<Value>) -> Reply {
    match r {
        Ok(v) => Reply::ok(v),
        Err(e) => Reply::error(&e),
    }
}

/// What every command shares: the connection and the transfer limits (open handles and
/// bytes in flight over all concurrent transfers).
pub struct Executor {
    sftp: Sftp,
    transfer: Transfer,
}

impl Executor {
    /// An executor over `sftp` with default transfer options.
    pub fn new(sftp: &Sftp) -> Self {
        Executor {
            sftp: sftp.clone(),
            transfer: Transfer::new(sftp, TransferOptions::default()),
        }
    }

    /// A transfer context for one command: the shared limits, but its own report and its
    /// own directory locks (a lock remembers "exists" or "failed" for good, which must
    /// not outlive the command: a later RMDIR or chmod may change the answer).
    fn fork(&self, preserve: bool, preserve_times: bool) -> Transfer {
        let base = self.transfer.options();
        self.transfer.fork(TransferOptions {
            preserve_times: preserve || preserve_times || base.preserve_times,
            preserve_mode: preserve || base.preserve_mode,
            ..base.clone()
        })
    }

    /// Runs one command to its answer.
    pub async fn execute(&self, cmd: Command) -> Reply {
        let sftp = &self.sftp;
        let done = |r: crate::Result<()>| to_reply(r.map(|()| Value::Null));
        match cmd {
            Command::Put {
                source,
                dest,
                recursive,
                preserve,
            } => self.put(&source, &dest, recursive, preserve).await,
            Command::Get {
                source,
                dest,
                recursive,
                preserve,
            } => self.get(&source, &dest, recursive, preserve).await,
            Command::Listdir { path } => to_reply(sftp.read_dir(&path).await.map(listing_json)),
            Command::Delete { path } => done(self.delete(&path).await),
            Command::Stat { path } => to_reply(sftp.stat(&path).await.map(|a| attrs_json(&a))),
            Command::Lstat { path } => to_reply(sftp.lstat(&path).await.map(|a| attrs_json(&a))),
            Command::Mkdir {
                path,
                parents: true,
                mode,
            } => {
                let locks = DirLocks::new(sftp.clone());
                let locks = match mode {
                    Some(m) => locks.with_dir_mode(m),
                    None => locks,
                };
                done(locks.ensure_dir(&path).await)
            }
            Command::Mkdir {
                path,
                parents: false,
                mode,
            } => {
                let attrs = mode
                    .map(FileAttributes::with_permissions)
                    .unwrap_or_default();
                done(sftp.mkdir(&path, &attrs).await)
            }
            Command::Rmdir { path } => done(sftp.rmdir(&path).await),
            Command::Rename { source, dest } => done(sftp.move_entry(&source, &dest).await),
            Command::Symlink { target, path } => done(sftp.symlink(&target, &path).await),
            Command::Readlink { path } => {
                to_reply(sftp.readlink(&path).await.map(|t| json!(lossy(&t))))
            }
            Command::Realpath { path } => {
                to_reply(sftp.realpath(&path).await.map(|t| json!(lossy(&t))))
            }
            Command::Chmod { path, mode } => done(sftp.chmod(&path, mode).await),
            Command::Statvfs { path } => {
                to_reply(sftp.statvfs(&path).await.map(|s| statvfs_json(&s)))
            }
            Command::Mirror {
                source,
                dest,
                delete,
                exclude,
            } => self.mirror(&source, &dest, delete, &exclude).await,
        }
    }

    async fn put(&self, source: &Path, dest: &[u8], recursive: bool, preserve: bool) -> Reply {
        let meta = match fs::metadata(source) {
            Ok(m) => m,
            Err(e) => {
                return Reply::error(&Error::local(
                    format!("cannot stat {}", source.display()),
                    e,
                ));
            }
        };
        let t = self.fork(preserve, false);
        if meta.is_dir() {
            if !recursive {
                return Reply::error(&Error::InvalidInput(format!(
                    "{} is a directory (set \"recursive\": true)",
                    source.display()
                )));
            }
            return report_reply(t.upload_tree(source, dest).await);
        }
        to_reply(
            t.upload(source, dest)
                .await
                .map(|n| json!({"bytes": n, "files": 1})),
        )
    }

    async fn get(&self, source: &[u8], dest: &Path, recursive: bool, preserve: bool) -> Reply {
        // The STAT replaces the FSTAT a download would do, so it costs no extra round trip.
        let attrs = match self.sftp.stat(source).await {
            Ok(a) => a,
            Err(e) => return Reply::error(&e),
        };
        let t = self.fork(preserve, false);
        if attrs.is_dir() {
            if !recursive {
                return Reply::error(&Error::InvalidInput(format!(
                    "{} is a directory (set \"recursive\": true)",
                    lossy(source)
                )));
            }
            return report_reply(t.download_tree(source, dest).await);
        }
        to_reply(
            t.download(source, dest, Some(&attrs))
                .await
                .map(|n| json!({"bytes": n, "files": 1})),
        )
    }

    /// Removes a file or symlink, or (as sftper does) an empty directory.
    async fn delete(&self, path: &[u8]) -> crate::Result<()> {
        match self.sftp.remove(path).await {
            Err(e) if !e.is_not_found() && error_code(&e) != "connection" => {
                match self.sftp.rmdir(path).await {
                    Ok(()) => Ok(()),
                    Err(_) => Err(e),
                }
            }
            r => r,
        }
    }

    async fn mirror(&self, source: &Path, dest: &[u8], delete: bool, exclude: &[String]) -> Reply {
        let filter = match Filter::new(exclude, &[]) {
            Ok(f) => f,
            Err(e) => return Reply::fail(format!("MIRROR: bad exclude pattern: {e}")),
        };
        let opts = MirrorOptions {
            compare: Compare {
                delete,
                ..Compare::default()
            },
            filter,
            ..MirrorOptions::default()
        };
        let t = self.fork(false, true);
        let r = mirror_up(&t, source, dest, &opts).await;
        let data = json!({
            "copied": r.copied,
            "bytes": r.bytes,
            "dirs_created": r.dirs_created,
            "symlinks": r.symlinks,
            "chmods": r.chmods,
            "deleted": r.deleted,
            "unchanged": r.unchanged,
            "deletes_skipped": r.deletes_skipped,
            "last_skipped": r.last_skipped,
            "tree_kept": r.tree_kept,
        });
        let done = r.copied + r.dirs_created + r.symlinks + r.chmods + r.deleted;
        batch_reply(data, done, r.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_carry_code_and_id() {
        let e = Error::Status {
            op: "stat",
            path: "/x".into(),
            code: StatusCode::NoSuchFile,
            message: "No such file".into(),
        };
        let v = Reply::error(&e).to_json(Some(json!(7)));
        assert_eq!(
            v,
            json!({"status": "error", "code": "not_found", "message": "stat '/x': remote file not found",
                   "data": null, "id": 7})
        );
        let v = Reply::fail("bad").to_json(None);
        assert_eq!(v, json!({"status": "fail", "message": "bad", "data": null}));
    }

    #[test]
    fn batches_with_failures() {
        let nf = || Error::Status {
            op: "open",
            path: "/a".into(),
            code: StatusCode::NoSuchFile,
            message: "No such file".into(),
        };
        let r = batch_reply(json!({}), 3, vec![("/a".into(), nf())]);
        assert_eq!((r.status, r.code), ("error", Some("not_found")));
        let r = batch_reply(json!({}), 3, vec![("/a".into(), nf()), ("/b".into(), nf())]);
        assert_eq!(r.code, Some("partial"));
        assert!(
            r.message.starts_with("2 of 5 operations failed"),
            "{}",
            r.message
        );
        assert_eq!(r.data["failures"].as_array().map(Vec::len), Some(2));
        assert_eq!(batch_reply(json!({}), 3, vec![]).status, "ok");
    }
}
