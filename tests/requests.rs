//! SFTP requests per file, pinned: what the README states for a fresh (staged) tree, a
//! tree uploaded over an existing one, a mirror's fresh, changed and unchanged files, and
//! `get -r`. Counted from OpenSSH sftp-server's own `DEBUG3` log, so a change that adds a
//! request per file (a STAT before each OPEN, a READ too many) fails here.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{LoggedSftpServer, random_bytes, request_counts, sftpipe_bin, write_file};

const DIRS: usize = 2;
const PER_DIR: usize = 10;
const FILES: usize = DIRS * PER_DIR;

/// `DIRS` directories of `PER_DIR` 4 KiB files each.
fn tree(root: &Path) {
    for d in 0..DIRS {
        for f in 0..PER_DIR {
            let seed = (d * PER_DIR + f) as u64;
            write_file(root.join(format!("d{d}/f{f}")), random_bytes(4096, seed));
        }
    }
}

/// Runs sftpipe over `server` and returns the requests it sent, by kind.
fn requests(server: &LoggedSftpServer, args: &[&str]) -> BTreeMap<String, usize> {
    server.take_log();
    let out = Command::new(sftpipe_bin())
        .arg("-D")
        .arg(server.command())
        .args(args)
        .arg("--progress=none")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run sftpipe");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    request_counts(&server.take_log())
}

fn count(c: &BTreeMap<String, usize>, kind: &str) -> usize {
    c.get(kind).copied().unwrap_or(0)
}

/// Requests of the kinds in `per_file`, and of all other kinds (directories, the
/// handshake's limits): `(per_file_total, other_total)`.
fn split(c: &BTreeMap<String, usize>, per_file: &[&str]) -> (usize, usize) {
    let mine: usize = per_file.iter().map(|k| count(c, k)).sum();
    (mine, c.values().sum::<usize>() - mine)
}

/// At most this many requests per directory and per run that are not per file (MKDIR,
/// OPENDIR, READDIRs read ahead, CLOSE of a listing, STAT of the roots, SETSTAT of a
/// directory): fewer than the files, so one more request per file goes over it.
fn overhead_limit() -> usize {
    8 * (DIRS + 1) + 6
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn requests_per_file_stay_at_their_minimum() {
    let d = tempfile::tempdir().unwrap();
    let server = LoggedSftpServer::with_level(d.path(), "DEBUG3");
    let src = d.path().join("src");
    tree(&src);
    let (put, mirrored, got) = (d.path().join("put"), d.path().join("m"), d.path().join("g"));
    let remote = |p: &Path| format!(":{}", p.display());

    // put -r of a new tree (staged, renamed into place once): OPEN, WRITE, CLOSE.
    let c = requests(&server, &["put", "-r", &s(&src), &remote(&put)]);
    for kind in ["open", "write", "close"] {
        assert_eq!(count(&c, kind), FILES, "{kind}: {c:?}");
    }
    assert!(count(&c, "posix-rename") <= 1, "{c:?}");
    let (_, other) = split(&c, &["open", "write", "close"]);
    assert!(other <= overhead_limit(), "{c:?}");

    // put -r over that tree: each file to a temporary name, renamed onto its own.
    let c = requests(&server, &["put", "-r", &s(&src), &remote(&put)]);
    for kind in ["write", "close", "posix-rename"] {
        assert_eq!(count(&c, kind), FILES, "{kind}: {c:?}");
    }
    let (_, other) = split(&c, &["open", "write", "close", "posix-rename"]);
    assert!(count(&c, "open") <= FILES + DIRS + 1, "{c:?}");
    assert!(other <= overhead_limit(), "{c:?}");

    // A fresh mirror (staged): OPEN, WRITE, FSETSTAT (the time), CLOSE.
    let c = requests(&server, &["mirror", &s(&src), &remote(&mirrored)]);
    for kind in ["open", "write", "fsetstat", "close"] {
        assert_eq!(count(&c, kind), FILES, "{kind}: {c:?}");
    }
    let (_, other) = split(&c, &["open", "write", "fsetstat", "close"]);
    assert!(other <= overhead_limit(), "{c:?}");

    // One changed file: its OPEN, WRITE, FSETSTAT, CLOSE and rename; the rest of the
    // tree costs the listings only.
    write_file(src.join("d1/f3"), random_bytes(4097, 99));
    let c = requests(&server, &["mirror", &s(&src), &remote(&mirrored)]);
    for kind in ["open", "write", "fsetstat", "posix-rename"] {
        assert_eq!(count(&c, kind), 1, "{kind}: {c:?}");
    }
    assert!(c.values().sum::<usize>() <= 5 + overhead_limit(), "{c:?}");

    // Nothing changed: no request names a file.
    let c = requests(&server, &["mirror", &s(&src), &remote(&mirrored)]);
    for kind in ["open", "write", "fsetstat", "posix-rename", "stat"] {
        assert!(count(&c, kind) <= 2, "{kind}: {c:?}");
    }
    assert!(c.values().sum::<usize>() <= overhead_limit(), "{c:?}");

    // get -r: OPEN, a READ of the data, a READ that meets the end, CLOSE.
    let c = requests(&server, &["get", "-r", &remote(&mirrored), &s(&got)]);
    assert_eq!(count(&c, "open"), FILES, "{c:?}");
    assert_eq!(count(&c, "read"), 2 * FILES, "{c:?}");
    assert!(count(&c, "close") <= FILES + DIRS + 1, "{c:?}");
    let (_, other) = split(&c, &["open", "read", "close"]);
    assert!(other <= overhead_limit(), "{c:?}");
}
