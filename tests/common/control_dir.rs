//! Proof that no ControlMaster socket or directory is left behind. sftpipe makes its private
//! directory `sftpipe-cm.*` under `$XDG_RUNTIME_DIR`, else `$TMPDIR`; a test points TMPDIR
//! at a fresh directory of its own (and unsets XDG_RUNTIME_DIR), then scans that one.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The name prefix of sftpipe's private control directory.
pub const CONTROL_DIR_PREFIX: &str = "sftpipe-cm.";

/// A fresh directory for `TMPDIR`, removed on drop.
pub fn fresh_tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sftpipe-tmpdir-")
        .tempdir()
        .unwrap_or_else(|e| panic!("create a temporary directory: {e}"))
}

/// Makes `cmd` create its temporary files in `tmpdir` only: TMPDIR set, XDG_RUNTIME_DIR
/// unset (it would come first).
pub fn use_tmpdir<'a>(cmd: &'a mut Command, tmpdir: &Path) -> &'a mut Command {
    cmd.env("TMPDIR", tmpdir).env_remove("XDG_RUNTIME_DIR")
}

/// What is left under `parent` that belongs to a control connection: every entry named
/// `sftpipe-cm.*` and every socket, at any depth.
pub fn leftovers(parent: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![parent.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            let named = e
                .file_name()
                .to_string_lossy()
                .starts_with(CONTROL_DIR_PREFIX);
            if named || t.is_socket() {
                found.push(e.path());
            }
            if t.is_dir() {
                todo.push(e.path());
            }
        }
    }
    found.sort();
    found
}

/// Panics, naming them, if [`leftovers`] finds anything under `parent`.
pub fn assert_no_control_dirs(parent: &Path) {
    let left = leftovers(parent);
    assert!(
        left.is_empty(),
        "control directory or socket left behind under {}: {left:?}",
        parent.display()
    );
}
