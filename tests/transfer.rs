//! Integration tests of the transfer layer (`Session::put/get/put_tree/get_tree` and
//! `Transfer` for concurrent batches) against real OpenSSH: through a throwaway sshd, or a
//! local `sftp-server` (`-D`) for the heavy cases. The "remote" is this machine, so every
//! result is checked on the local file system, byte for byte.

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{Sshd, TEST_USER, random_bytes, read_file, sftp_server_path, sha256_file, write_file};
use sftpipe::task::spawn;
use sftpipe::transfer::{NoProgress, Progress, TransferOptions};
use sftpipe::{ConnectOptions, Error, Session};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

const SSH_OPTIONS: [&str; 5] = [
    "StrictHostKeyChecking=no",
    "UserKnownHostsFile=/dev/null",
    "BatchMode=yes",
    "LogLevel=ERROR",
    "IdentitiesOnly=yes",
];

fn sshd_options(sshd: &Sshd) -> ConnectOptions {
    ConnectOptions {
        host: Some(sshd.host().to_string()),
        port: Some(sshd.port()),
        user: Some(sshd.user()),
        identities: vec![sshd.key_path()],
        ssh_options: SSH_OPTIONS.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn local_options() -> ConnectOptions {
    ConnectOptions::local_server(sftp_server_path().display().to_string())
}

fn connect(options: &ConnectOptions) -> Session {
    Session::connect(options).unwrap_or_else(|e| panic!("connect: {e}"))
}

/// A scratch directory every test user can enter.
fn scratch() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("sftpipe-transfer-")
        .tempdir()
        .expect("tempdir");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
    d
}

/// A local path as the remote path bytes (the "remote" is this machine).
fn r(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn opts() -> TransferOptions {
    TransferOptions::default()
}

/// `-p`: modes and times.
fn preserving() -> TransferOptions {
    TransferOptions {
        preserve_times: true,
        preserve_mode: true,
        ..opts()
    }
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn set_times(p: &Path, atime: u64, mtime: u64) {
    let t = |s| UNIX_EPOCH + Duration::from_secs(s);
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_times(
            fs::FileTimes::new()
                .set_accessed(t(atime))
                .set_modified(t(mtime)),
        )
        .unwrap();
}

/// Runs `f` on its own thread and fails the test if it takes longer than `limit`, so a
/// hang (a leaked permit, a lost wake-up) fails instead of blocking the suite.
fn with_timeout<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no result after {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => panic!("{what}: the thread ended without a result"),
        },
    }
}

/// Writes `size` deterministic pseudo-random bytes, a MiB at a time.
fn make_big_file(path: &Path, size: u64, seed: u64) {
    let mut f = io::BufWriter::new(fs::File::create(path).unwrap());
    let mut left = size;
    let mut block = 0u64;
    while left > 0 {
        let n = left.min(MIB);
        f.write_all(&random_bytes(n as usize, seed ^ (block << 16)))
            .unwrap();
        left -= n;
        block += 1;
    }
    f.flush().unwrap();
}

fn is_temp(name: &[u8]) -> bool {
    name.ends_with(b".sftpipe-tmp")
}

/// Names in `dir` (recursively) that are sftpipe temporary files.
fn temp_files_in(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if is_temp(e.file_name().as_bytes()) {
            found.push(p.clone());
        }
        if e.file_type().unwrap().is_dir() {
            found.extend(temp_files_in(&p));
        }
    }
    found
}

#[derive(Debug, PartialEq, Eq)]
enum Node {
    File(Vec<u8>),
    Dir,
    Link(PathBuf),
}

/// Everything below `root`, by relative path; temporary files are left out when
/// `skip_temp`.
fn snapshot(root: &Path, skip_temp: bool) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, rel: &Path, skip_temp: bool, out: &mut BTreeMap<PathBuf, Node>) {
        for e in fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            if skip_temp && is_temp(e.file_name().as_bytes()) {
                continue;
            }
            let rel = rel.join(e.file_name());
            let full = root.join(&rel);
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.insert(rel, Node::Link(fs::read_link(&full).unwrap()));
            } else if ft.is_dir() {
                out.insert(rel.clone(), Node::Dir);
                walk(root, &rel, skip_temp, out);
            } else {
                out.insert(rel, Node::File(read_file(&full)));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), skip_temp, &mut out);
    out
}

fn assert_same_tree(want: &Path, got: &Path) {
    let (a, b) = (snapshot(want, false), snapshot(got, false));
    if a != b {
        let missing: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).take(10).collect();
        let extra: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).take(10).collect();
        let differ: Vec<_> = a
            .iter()
            .filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v))
            .map(|(k, _)| k)
            .take(10)
            .collect();
        panic!(
            "{} and {} differ: missing {missing:?}, extra {extra:?}, different {differ:?}",
            want.display(),
            got.display()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Contents survive the round trip
// ---------------------------------------------------------------------------------------

#[test]
fn put_and_get_keep_every_byte_of_edge_sizes() {
    let sshd = Sshd::start();
    let s = connect(&sshd_options(&sshd));
    let d = scratch();
    let wc = s.sftp().write_chunk() as u64;
    let rc = s.sftp().read_chunk() as u64;
    let mut sizes = vec![0, 1, wc - 1, wc, wc + 1, rc, rc + 1, 3 * wc + 17];
    sizes.sort();
    sizes.dedup();
    let (src, remote, back) = (
        d.path().join("src"),
        d.path().join("remote"),
        d.path().join("back"),
    );
    for dir in [&src, &remote, &back] {
        fs::create_dir(dir).unwrap();
    }
    for (i, size) in sizes.into_iter().enumerate() {
        let name = format!("size-{size}");
        let (l, rm, b) = (src.join(&name), remote.join(&name), back.join(&name));
        write_file(&l, random_bytes(size as usize, i as u64));
        assert_eq!(s.put(&l, r(&rm), &opts()).unwrap(), size, "put {name}");
        assert_eq!(sha256_file(&rm), sha256_file(&l), "put {name}");
        assert_eq!(s.get(r(&rm), &b, &opts()).unwrap(), size, "get {name}");
        assert_eq!(sha256_file(&b), sha256_file(&l), "get {name}");
    }
    assert!(temp_files_in(&remote).is_empty());
}

#[test]
fn put_and_get_100_mib_via_local_server() {
    let s = connect(&local_options());
    let d = scratch();
    let (l, rm, b) = (
        d.path().join("big"),
        d.path().join("remote"),
        d.path().join("back"),
    );
    make_big_file(&l, 100 * MIB, 100);
    let want = sha256_file(&l);
    let started = Instant::now();
    assert_eq!(s.put(&l, r(&rm), &opts()).unwrap(), 100 * MIB);
    eprintln!("put 100 MiB in {:?}", started.elapsed());
    assert_eq!(sha256_file(&rm), want);
    let started = Instant::now();
    assert_eq!(s.get(r(&rm), &b, &opts()).unwrap(), 100 * MIB);
    eprintln!("get 100 MiB in {:?}", started.elapsed());
    assert_eq!(sha256_file(&b), want);
}

/// 5,000 small files five directories deep, with spaces, unicode and newlines in names,
/// plus an empty directory and a symlink.
fn make_odd_tree(root: &Path) {
    for i in 0..5000u64 {
        let dir = root.join(format!(
            "top {}/ünïcødé ✓ {}/level3/level 4 {}/l5",
            i % 5,
            (i / 5) % 4,
            (i / 20) % 2
        ));
        let name = match i % 4 {
            0 => format!("file {i} with spaces"),
            1 => format!("ünïcødé ✓ {i}"),
            2 if i % 20 == 2 => format!("new\nline {i}"),
            _ => format!("plain-{i}.dat"),
        };
        write_file(dir.join(name), random_bytes((i % 3000) as usize, i));
    }
    fs::create_dir_all(root.join("empty dir ✓")).unwrap();
    std::os::unix::fs::symlink("top 0", root.join("link to top 0")).unwrap();
}

#[test]
fn tree_of_5000_odd_names_round_trips_via_local_server() {
    let s = connect(&local_options());
    let d = scratch();
    let (src, remote, back) = (
        d.path().join("src"),
        d.path().join("remote"),
        d.path().join("back"),
    );
    make_odd_tree(&src);

    let started = Instant::now();
    let report = s.put_tree(&src, r(&remote), &opts());
    eprintln!("put_tree of 5000 files in {:?}", started.elapsed());
    assert!(
        report.is_ok(),
        "{:?}",
        &report.failures[..report.failures.len().min(5)]
    );
    assert_eq!(report.files, 5000);
    assert_eq!(report.symlinks, 1);
    assert_eq!(
        report.dirs, 1,
        "only the empty directory is created on its own"
    );
    assert_same_tree(&src, &remote);

    let started = Instant::now();
    let report = s.get_tree(r(&remote), &back, &opts());
    eprintln!("get_tree of 5000 files in {:?}", started.elapsed());
    assert!(
        report.is_ok(),
        "{:?}",
        &report.failures[..report.failures.len().min(5)]
    );
    assert_eq!(report.files, 5000);
    assert_eq!(report.symlinks, 1);
    assert_same_tree(&src, &back);
}

// ---------------------------------------------------------------------------------------
// Directories
// ---------------------------------------------------------------------------------------

#[test]
fn uploads_create_three_missing_parent_levels() {
    let sshd = Sshd::start();
    let s = connect(&sshd_options(&sshd));
    let d = scratch();
    let src = d.path().join("src.txt");
    write_file(&src, b"deep");
    let target = d.path().join("a/b/c/file.txt");
    assert_eq!(s.put(&src, r(&target), &opts()).unwrap(), 4);
    assert_eq!(read_file(&target), b"deep");

    let tree = d.path().join("tree");
    write_file(tree.join("one"), b"1");
    write_file(tree.join("sub/two"), b"22");
    let dest = d.path().join("x/y/z/tree");
    let report = s.put_tree(&tree, r(&dest), &opts());
    assert!(report.is_ok(), "{:?}", report.failures);
    assert_eq!(report.files, 2);
    assert_same_tree(&tree, &dest);

    // An empty tree still creates its (missing) destination.
    let empty = d.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let dest = d.path().join("p/q/r/empty");
    let report = s.put_tree(&empty, r(&dest), &opts());
    assert!(report.is_ok(), "{:?}", report.failures);
    assert!(dest.is_dir());

    // A file where a parent directory should be is an error naming the path.
    write_file(d.path().join("blocker"), b"b");
    let e = s
        .put(&src, r(&d.path().join("blocker/sub/file")), &opts())
        .unwrap_err();
    assert!(e.status().is_some(), "{e:?}");
    assert!(e.to_string().contains("blocker"), "{e}");
}

#[test]
fn two_uploads_race_for_the_same_new_directory() {
    let sshd = Sshd::start();
    let s = connect(&sshd_options(&sshd));
    let d = scratch();
    let a = d.path().join("a.src");
    let b = d.path().join("b.src");
    write_file(&a, random_bytes(70_000, 1));
    write_file(&b, random_bytes(90_000, 2));

    for round in 0..5 {
        // One Transfer: its DirLocks make the second task wait for the first's mkdir.
        let t = s.transfer(opts(), Rc::new(NoProgress));
        let base = d.path().join(format!("one-{round}"));
        let (ra, rb) = (base.join("new/dir/a"), base.join("new/dir/b"));
        let (ta, tb) = (t.clone(), t.clone());
        let (la, lb) = (a.clone(), b.clone());
        let (pa, pb) = (ra.clone(), rb.clone());
        let (x, y) = s.run(async move {
            let h1 = spawn(async move { ta.upload(&la, r(&pa)).await });
            let h2 = spawn(async move { tb.upload(&lb, r(&pb)).await });
            (h1.await, h2.await)
        });
        assert_eq!(x.unwrap(), 70_000);
        assert_eq!(y.unwrap(), 90_000);
        assert_eq!(read_file(&ra), read_file(&a));
        assert_eq!(read_file(&rb), read_file(&b));

        // Two Transfers with separate DirLocks: both try to mkdir, the loser must
        // tolerate the directory that appeared.
        let t1 = s.transfer(opts(), Rc::new(NoProgress));
        let t2 = s.transfer(opts(), Rc::new(NoProgress));
        let base = d.path().join(format!("two-{round}"));
        let (ra, rb) = (base.join("new/dir/a"), base.join("new/dir/b"));
        let (la, lb) = (a.clone(), b.clone());
        let (pa, pb) = (ra.clone(), rb.clone());
        let (x, y) = s.run(async move {
            let h1 = spawn(async move { t1.upload(&la, r(&pa)).await });
            let h2 = spawn(async move { t2.upload(&lb, r(&pb)).await });
            (h1.await, h2.await)
        });
        assert_eq!(x.unwrap(), 70_000);
        assert_eq!(y.unwrap(), 90_000);
        assert_eq!(read_file(&ra), read_file(&a));
        assert_eq!(read_file(&rb), read_file(&b));

        // Many tasks of several Transfers into one new directory.
        let ts: Vec<_> = (0..4)
            .map(|_| s.transfer(opts(), Rc::new(NoProgress)))
            .collect();
        let base = d.path().join(format!("many-{round}/x/y"));
        let jobs: Vec<_> = (0..20)
            .map(|i| (ts[i % 4].clone(), a.clone(), base.join(format!("f{i}"))))
            .collect();
        let results = s.run(async move {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(t, l, p)| spawn(async move { t.upload(&l, r(&p)).await }))
                .collect();
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await);
            }
            out
        });
        for (i, res) in results.into_iter().enumerate() {
            assert_eq!(res.unwrap(), 70_000, "f{i}");
        }
        assert_eq!(fs::read_dir(&base).unwrap().count(), 20);
    }
}

// ---------------------------------------------------------------------------------------
// Replacement, attributes, resume
// ---------------------------------------------------------------------------------------

#[test]
fn uploads_replace_atomically_and_leave_no_temp_files() {
    let sshd = Sshd::start();
    let s = connect(&sshd_options(&sshd));
    let d = scratch();
    let remote_dir = d.path().join("remote");
    let target = remote_dir.join("target.bin");
    write_file(&target, random_bytes(300_000, 9));
    let old_ino = fs::metadata(&target).unwrap().ino();

    let new = d.path().join("new.bin");
    write_file(&new, random_bytes(100_000, 10));
    assert_eq!(s.put(&new, r(&target), &opts()).unwrap(), 100_000);
    assert_eq!(read_file(&target), read_file(&new));
    assert_ne!(
        fs::metadata(&target).unwrap().ino(),
        old_ino,
        "atomic replacement renames a new file over the old one"
    );
    assert!(
        temp_files_in(&remote_dir).is_empty(),
        "{:?}",
        temp_files_in(&remote_dir)
    );
    assert_eq!(fs::read_dir(&remote_dir).unwrap().count(), 1);

    // In place: the same inode, cut to the new length, still no temp files.
    let inplace = TransferOptions {
        inplace: true,
        ..opts()
    };
    let ino = fs::metadata(&target).unwrap().ino();
    let newer = d.path().join("newer.bin");
    write_file(&newer, random_bytes(5_000, 11));
    assert_eq!(s.put(&newer, r(&target), &inplace).unwrap(), 5_000);
    assert_eq!(read_file(&target), read_file(&newer));
    assert_eq!(fs::metadata(&target).unwrap().ino(), ino);
    assert!(temp_files_in(&remote_dir).is_empty());

    // A failed replacement (a directory in the way) cleans up its temporary file.
    let in_the_way = remote_dir.join("dir");
    fs::create_dir(&in_the_way).unwrap();
    write_file(in_the_way.join("keep"), b"k");
    let e = s.put(&new, r(&in_the_way), &opts()).unwrap_err();
    assert!(e.status().is_some(), "{e:?}");
    assert!(
        temp_files_in(&remote_dir).is_empty(),
        "{:?}",
        temp_files_in(&remote_dir)
    );
    assert_eq!(read_file(in_the_way.join("keep")), b"k");
}

#[test]
fn preserve_times_and_mode_on_put_and_get() {
    let sshd = Sshd::start();
    let s = connect(&sshd_options(&sshd));
    let d = scratch();
    let keep = preserving();

    // put: mode 0777 survives only with preserve_mode (else the server's umask applies).
    let l = d.path().join("local.txt");
    write_file(&l, b"times and modes");
    set_mode(&l, 0o777);
    set_times(&l, 999_999_999, 1_000_000_000);
    let plain = d.path().join("plain.txt");
    s.put(&l, r(&plain), &opts()).unwrap();
    assert_eq!(mode_of(&plain), 0o755);
    assert!(fs::metadata(&plain).unwrap().mtime() > 1_500_000_000);
    // (Reading the source moved its atime: relatime updates an atime older than a day.)
    set_times(&l, 999_999_999, 1_000_000_000);
    let kept = d.path().join("kept.txt");
    s.put(&l, r(&kept), &keep).unwrap();
    let m = fs::metadata(&kept).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o777);
    assert_eq!(m.mtime(), 1_000_000_000);
    assert_eq!(m.atime(), 999_999_999);
    assert_eq!(read_file(&kept), b"times and modes");
    // Also over an existing file (the temp file gets the attributes before the rename).
    set_mode(&l, 0o640);
    set_times(&l, 1_100_000_000, 1_100_000_001);
    s.put(&l, r(&kept), &keep).unwrap();
    let m = fs::metadata(&kept).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o640);
    assert_eq!(m.mtime(), 1_100_000_001);

    // get.
    let remote = d.path().join("remote.txt");
    write_file(&remote, b"remote bytes");
    set_mode(&remote, 0o666);
    set_times(&remote, 1_200_000_000, 1_234_567_890);
    let got_plain = d.path().join("got-plain.txt");
    s.get(r(&remote), &got_plain, &opts()).unwrap();
    assert_eq!(mode_of(&got_plain), 0o644);
    assert_ne!(fs::metadata(&got_plain).unwrap().mtime(), 1_234_567_890);
    set_times(&remote, 1_200_000_000, 1_234_567_890);
    let got = d.path().join("got.txt");
    s.get(r(&remote), &got, &keep).unwrap();
    let m = fs::metadata(&got).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o666);
    assert_eq!(m.mtime(), 1_234_567_890);
    assert_eq!(m.atime(), 1_200_000_000);
    assert_eq!(read_file(&got), b"remote bytes");

    // Trees keep them too.
    let tree = d.path().join("tree");
    write_file(tree.join("sub/f"), b"f");
    set_mode(&tree.join("sub/f"), 0o604);
    set_times(&tree.join("sub/f"), 1_000_000_000, 1_000_000_002);
    let dest = d.path().join("tree-dest");
    assert!(s.put_tree(&tree, r(&dest), &keep).is_ok());
    assert_eq!(mode_of(&dest.join("sub/f")), 0o604);
    assert_eq!(
        fs::metadata(dest.join("sub/f")).unwrap().mtime(),
        1_000_000_002
    );
    let back = d.path().join("tree-back");
    assert!(s.get_tree(r(&dest), &back, &keep).is_ok());
    assert_eq!(mode_of(&back.join("sub/f")), 0o604);
    assert_eq!(
        fs::metadata(back.join("sub/f")).unwrap().mtime(),
        1_000_000_002
    );
}

#[test]
fn preserve_keeps_directory_modes_and_times_of_trees() {
    let sshd = Sshd::start();
    let s = connect(&sshd_options(&sshd));
    let d = scratch();
    let keep = preserving();
    let dir_mtime = |p: &Path| fs::metadata(p).unwrap().mtime() as u64;
    let assert_dirs_kept = |root: &Path, how: &str| {
        for (rel, mode, mtime) in DIRS {
            assert_eq!(mode_of(&root.join(rel)), mode, "{how} {rel:?}");
            assert_eq!(dir_mtime(&root.join(rel)), mtime, "{how} {rel:?}");
        }
    };
    // Deepest first: a directory's time is set after its children's (which move it).
    const DIRS: [(&str, u32, u64); 4] = [
        ("a/b", 0o555, 1_000_000_010),
        ("a", 0o750, 1_000_000_020),
        ("empty", 0o700, 1_000_000_030),
        ("", 0o711, 1_000_000_040),
    ];

    // Directory times are set after their entries land (or they would move), and a
    // read-only directory gets its mode only once its files are in.
    let tree = d.path().join("tree");
    write_file(tree.join("a/b/f"), b"f");
    fs::create_dir_all(tree.join("empty")).unwrap();
    for (rel, mode, mtime) in DIRS {
        let dir = tree.join(rel);
        let t = UNIX_EPOCH + Duration::from_secs(mtime);
        fs::File::open(&dir)
            .unwrap()
            .set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
            .unwrap();
        set_mode(&dir, mode);
    }
    let dest = d.path().join("tree-dest");
    let report = s.put_tree(&tree, r(&dest), &keep);
    assert!(report.is_ok(), "{:?}", report.failures);
    assert_eq!(read_file(dest.join("a/b/f")), b"f");
    assert_dirs_kept(&dest, "put");

    // And back down.
    let back = d.path().join("tree-back");
    let report = s.get_tree(r(&dest), &back, &keep);
    assert!(report.is_ok(), "{:?}", report.failures);
    assert_eq!(read_file(back.join("a/b/f")), b"f");
    assert_dirs_kept(&back, "get");

    // Without -p, directories are the destination's own (fresh times, default modes).
    let plain = d.path().join("tree-plain");
    assert!(s.put_tree(&tree, r(&plain), &opts()).is_ok());
    assert_eq!(mode_of(&plain.join("a/b")), 0o755);
    assert!(dir_mtime(&plain.join("a")) > 1_500_000_000);
}

#[test]
fn resume_completes_partial_downloads_and_uploads() {
    let sshd = Sshd::start();
    let s = connect(&sshd_options(&sshd));
    let d = scratch();
    // 32 KiB requests, 64 in flight: a partial copy is continued 2 MiB below its end (a
    // server that reorders WRITEs may have left holes there).
    const REWIND: u64 = 2 * MIB;
    let resume = TransferOptions {
        resume: true,
        chunk: Some(32 * 1024),
        ..opts()
    };
    let size: u64 = 8 * MIB + 12_345;
    let half = size / 2;
    let src = d.path().join("src.bin");
    make_big_file(&src, size, 42);
    // Older than the copies made below: a copy with the source's size and time (to the
    // second) counts as complete.
    set_times(&src, 1_600_000_000, 1_600_000_000);
    let data = read_file(&src);

    // Download: the local file holds the first half, with one byte changed so that a
    // restart from zero would be noticed.
    let local = d.path().join("partial-download.bin");
    let mut first = data[..half as usize].to_vec();
    first[10] ^= 0xff;
    write_file(&local, &first);
    assert_eq!(
        s.get(r(&src), &local, &resume).unwrap(),
        size - (half - REWIND)
    );
    let got = read_file(&local);
    assert_eq!(got.len() as u64, size);
    assert_eq!(got[10], first[10], "the existing part was fetched again");
    assert_eq!(&got[11..], &data[11..]);
    // Fixed up and resumed again: only the last window is fetched again.
    write_file(&local, &data);
    assert_eq!(s.get(r(&src), &local, &resume).unwrap(), REWIND);
    assert_eq!(sha256_file(&local), sha256_file(&src));

    // Upload: the remote copy is cut to half, with one byte changed.
    let remote = d.path().join("partial-upload.bin");
    write_file(&remote, &first);
    assert_eq!(
        s.put(&src, r(&remote), &resume).unwrap(),
        size - (half - REWIND)
    );
    let got = read_file(&remote);
    assert_eq!(got.len() as u64, size);
    assert_eq!(got[10], first[10], "the existing part was sent again");
    assert_eq!(&got[11..], &data[11..]);
    // Really truncated (via the library) and resumed: sha matches.
    fs::copy(&src, &remote).unwrap();
    s.truncate(r(&remote), half).unwrap();
    assert_eq!(
        s.put(&src, r(&remote), &resume).unwrap(),
        size - (half - REWIND)
    );
    assert_eq!(sha256_file(&remote), sha256_file(&src));
    assert!(temp_files_in(d.path()).is_empty());
    // Resuming a complete upload sends only the last window again.
    assert_eq!(s.put(&src, r(&remote), &resume).unwrap(), REWIND);
    assert_eq!(sha256_file(&remote), sha256_file(&src));
    // With -p times, a copy with the source's size and time is complete: nothing moves.
    let keep = TransferOptions {
        preserve_times: true,
        ..resume.clone()
    };
    s.put(&src, r(&remote), &keep).unwrap();
    assert_eq!(s.put(&src, r(&remote), &keep).unwrap(), 0);
    s.get(r(&src), &local, &keep).unwrap();
    assert_eq!(s.get(r(&src), &local, &keep).unwrap(), 0);
}

// ---------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------

#[test]
fn server_killed_mid_upload_leaves_no_partial_file_and_a_rerun_resumes_it() {
    let d = scratch();
    let src = d.path().join("big.src");
    make_big_file(&src, 200 * MIB, 200);
    let want = sha256_file(&src);
    let dest_dir = d.path().join("dest");
    fs::create_dir(&dest_dir).unwrap();
    let target = dest_dir.join("big.bin");
    let killer = common::ServerKiller::start(d.path(), &dest_dir, 50_000_000);
    let server = killer.command().to_string();

    let (s2, t2) = (src.clone(), target.clone());
    let e = with_timeout(
        Duration::from_secs(120),
        "put to a dying server",
        move || {
            let s = connect(&ConnectOptions::local_server(server));
            match s.put(&s2, r(&t2), &opts()) {
                Ok(n) => {
                    panic!("put of 200 MiB succeeded ({n} bytes) although the server was killed")
                }
                Err(e) => e,
            }
        },
    );
    eprintln!("put to a dying server: {e}");
    assert!(matches!(e, Error::Connection(_)), "{e:?}");
    assert!(e.to_string().contains("server command"), "{e}");
    assert!(
        fs::symlink_metadata(&target).is_err(),
        "a partial file exists under the final name"
    );
    // Only a temporary file may be left.
    for e in fs::read_dir(&dest_dir).unwrap() {
        let name = e.unwrap().file_name();
        assert!(is_temp(name.as_bytes()), "unexpected {name:?}");
    }

    // A rerun with a healthy server completes, continuing the temporary file.
    let s = connect(&local_options());
    let sent = s.put(&src, r(&target), &opts()).unwrap();
    assert!(sent < 200 * MIB, "the interrupted upload was not resumed");
    assert_eq!(sha256_file(&target), want);
    assert!(temp_files_in(&dest_dir).is_empty());
}

#[test]
fn server_killed_mid_tree_upload_leaves_no_partial_file_and_a_rerun_completes() {
    let d = scratch();
    let src = d.path().join("src");
    // Small files that finish early, and large ones that are cut off.
    for i in 0..100u64 {
        write_file(
            src.join(format!("small/s{i:03}")),
            random_bytes(10_000 + i as usize, i),
        );
    }
    fs::create_dir_all(src.join("large")).unwrap();
    for i in 0..6u64 {
        make_big_file(&src.join(format!("large/l{i}")), 30 * MIB, 1000 + i);
    }
    let dest = d.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let killer = common::ServerKiller::start(d.path(), &dest, 60_000_000);
    let server = killer.command().to_string();

    // Few requests per file, so the six large files together stay within the byte budget
    // (see `concurrent_large_uploads_share_the_byte_budget` for what happens otherwise).
    let fitting = TransferOptions {
        requests: 8,
        ..opts()
    };
    let rerun = fitting.clone();
    let (s2, d2) = (src.clone(), dest.clone());
    let report = with_timeout(
        Duration::from_secs(120),
        "put_tree to a dying server",
        move || {
            let s = connect(&ConnectOptions::local_server(server));
            s.put_tree(&s2, r(&d2), &fitting)
        },
    );
    assert!(
        !report.is_ok(),
        "the tree upload succeeded although the server was killed"
    );
    assert_eq!(
        report.files as usize + report.failures.len(),
        106,
        "{report:?}"
    );
    for (path, e) in &report.failures {
        assert!(e.is_connection(), "{path}: {e:?}");
    }
    eprintln!(
        "{} files done, {} failed before the rerun",
        report.files,
        report.failures.len()
    );
    // Every file under its final name is complete.
    let want = snapshot(&src, false);
    for (rel, node) in snapshot(&dest, true) {
        match want.get(&rel) {
            Some(w) => assert!(w == &node, "{} is partial", rel.display()),
            None => panic!("unexpected {}", rel.display()),
        }
    }

    // A rerun completes everything.
    let (s2, d2) = (src.clone(), dest.clone());
    let report = with_timeout(Duration::from_secs(120), "rerun of put_tree", move || {
        let s = connect(&local_options());
        s.put_tree(&s2, r(&d2), &rerun)
    });
    assert!(report.is_ok(), "{:?}", report.failures);
    assert_eq!(report.files, 106);
    assert!(
        snapshot(&dest, true) == want,
        "the rerun did not restore the tree"
    );
}

#[test]
fn a_new_tree_appears_whole_even_when_the_server_dies_midway() {
    let d = scratch();
    let src = d.path().join("src");
    for i in 0..200u64 {
        write_file(
            src.join(format!("d{}/s{i:03}", i % 4)),
            random_bytes(20_000 + i as usize, i),
        );
    }
    fs::create_dir_all(src.join("large")).unwrap();
    for i in 0..4u64 {
        make_big_file(&src.join(format!("large/l{i}")), 30 * MIB, 2000 + i);
    }
    std::os::unix::fs::symlink("d0/s000", src.join("link")).unwrap();
    let out = d.path().join("out");
    fs::create_dir(&out).unwrap();
    let dest = out.join("tree");
    let staging = out.join(".tree.sftpipe-partial");
    let killer = common::ServerKiller::start(d.path(), &out, 40_000_000);
    let server = killer.command().to_string();
    let fitting = TransferOptions {
        requests: 8,
        ..opts()
    };
    let (s2, d2, o2) = (src.clone(), dest.clone(), fitting.clone());
    let report = with_timeout(
        Duration::from_secs(120),
        "new tree to a dying server",
        move || {
            let s = connect(&ConnectOptions::local_server(server));
            s.put_tree(&s2, r(&d2), &o2)
        },
    );
    assert!(
        !report.is_ok(),
        "the upload succeeded although the server was killed"
    );
    assert!(
        fs::symlink_metadata(&dest).is_err(),
        "the new tree is visible before it is complete"
    );
    assert!(staging.is_dir(), "no staged tree was left to resume");
    // Failures name the final paths, not the staging directory.
    for (path, e) in &report.failures {
        assert!(e.is_connection(), "{path}: {e:?}");
        assert!(!path.contains("sftpipe-partial"), "{path}");
    }

    // A rerun resumes the staged tree and moves it into place.
    let (s2, d2) = (src.clone(), dest.clone());
    let report = with_timeout(
        Duration::from_secs(120),
        "rerun of the new tree",
        move || connect(&local_options()).put_tree(&s2, r(&d2), &fitting),
    );
    assert!(report.is_ok(), "{:?}", report.failures);
    assert_eq!((report.files, report.symlinks), (204, 1));
    assert_same_tree(&src, &dest);
    assert!(!staging.exists(), "the staging directory is left");
    assert_eq!(
        fs::read_dir(&out).unwrap().count(),
        1,
        "{:?}",
        fs::read_dir(&out).unwrap().collect::<Vec<_>>()
    );
}

#[test]
fn a_staged_tree_left_behind_is_cleared_of_what_the_upload_would_keep_wrong() {
    let d = scratch();
    let src = d.path().join("src");
    write_file(src.join("same"), b"new contents");
    write_file(src.join("was-a-dir"), b"file now");
    write_file(src.join("sub/was-a-file/inner"), b"dir now");
    write_file(src.join("sub/kept"), b"kept");
    std::os::unix::fs::symlink("same", src.join("link")).unwrap();
    let dest = d.path().join("site");
    // What a killed run of another version of the tree left.
    let staging = d.path().join(".site.sftpipe-partial");
    write_file(staging.join("same"), b"old, longer contents");
    write_file(staging.join("gone"), b"no longer in the tree");
    write_file(staging.join(".same.1a2b3c.sftpipe-tmp"), b"half");
    write_file(staging.join("was-a-dir/deep/x"), b"x");
    write_file(staging.join("sub/was-a-file"), b"a file");
    write_file(staging.join("sub/old-dir/y"), b"y");
    std::os::unix::fs::symlink("gone", staging.join("sub/kept")).unwrap();
    write_file(staging.join("link"), b"a file where a link goes");

    let s = connect(&local_options());
    let report = s.put_tree(&src, r(&dest), &opts());
    assert!(report.is_ok(), "{:?}", report.failures);
    assert_same_tree(&src, &dest);
    assert!(!staging.exists(), "the staging directory is left");
}

/// Counts file_done calls.
#[derive(Default)]
struct Counting {
    done: Cell<u64>,
    failed: Cell<u64>,
}

impl Progress for Counting {
    fn file_done(&self, _path: &str, _bytes: u64, error: Option<&Error>) {
        self.done.set(self.done.get() + 1);
        if error.is_some() {
            self.failed.set(self.failed.get() + 1);
        }
    }
}

/// A destination owned by the test user holding a root-owned `ro/` directory; the tree
/// has 100 files at the top and `refused` files in `ro/`.
fn refused_fixture(root: &Path, name: &str, refused: usize) -> (PathBuf, PathBuf) {
    let src = root.join(format!("{name}-src"));
    for i in 0..100u64 {
        write_file(
            src.join(format!("f{i:03}")),
            random_bytes(2_000 + i as usize, i),
        );
    }
    for i in 0..refused {
        write_file(
            src.join(format!(
                "ro/x{}",
                if i == 0 { String::new() } else { i.to_string() }
            )),
            b"no",
        );
    }
    let dest = root.join(format!("{name}-dest"));
    fs::create_dir(&dest).unwrap();
    Command::new("chown")
        .arg(format!("{TEST_USER}:"))
        .arg(&dest)
        .status()
        .unwrap();
    if refused > 0 {
        let ro = dest.join("ro");
        fs::create_dir(&ro).unwrap();
        set_mode(&ro, 0o755);
    }
    (src, dest)
}

#[test]
fn one_refused_file_among_a_hundred_is_reported_and_the_rest_land() {
    let sshd = Sshd::start_as(TEST_USER);
    let options = sshd_options(&sshd);
    let d = scratch();
    for (name, max_open) in [("default", None), ("four", Some(4))] {
        let (src, dest) = refused_fixture(d.path(), name, 1);
        let (o, s2, d2) = (options.clone(), src.clone(), dest.clone());
        let (files, failures, done, failed) = with_timeout(
            Duration::from_secs(60),
            "tree upload with a refused file",
            move || {
                let s = connect(&o);
                let progress = Rc::new(Counting::default());
                let t = s.transfer(TransferOptions { max_open, ..opts() }, progress.clone());
                let report = s.run(t.upload_tree(&s2, r(&d2)));
                let failures: Vec<(String, io::ErrorKind, String)> = report
                    .failures
                    .iter()
                    .map(|(p, e)| (p.clone(), e.kind(), e.to_string()))
                    .collect();
                (
                    report.files,
                    failures,
                    progress.done.get(),
                    progress.failed.get(),
                )
            },
        );
        assert_eq!(failures.len(), 1, "{name}: {failures:?}");
        let (path, kind, shown) = &failures[0];
        assert!(path.ends_with("/ro/x"), "{name}: {path}");
        assert_eq!(*kind, io::ErrorKind::PermissionDenied, "{name}: {shown}");
        assert!(shown.contains("ro/"), "{name}: {shown}");
        assert_eq!(files, 100, "{name}");
        assert_eq!((done, failed), (101, 1), "{name}: progress calls");
        for i in 0..100 {
            let f = format!("f{i:03}");
            assert_eq!(
                read_file(dest.join(&f)),
                read_file(src.join(&f)),
                "{name}: {f}"
            );
        }
        assert_eq!(fs::read_dir(dest.join("ro")).unwrap().count(), 0);
        assert!(
            temp_files_in(&dest).is_empty(),
            "{:?}",
            temp_files_in(&dest)
        );
    }
}

#[test]
fn refused_files_return_their_permits() {
    // Ten refused files with two open-file permits: a permit leaked per failure would
    // stall the batch, and the next batch on the same Transfer.
    let sshd = Sshd::start_as(TEST_USER);
    let options = sshd_options(&sshd);
    let d = scratch();
    let (src, dest) = refused_fixture(d.path(), "ten", 10);
    let (src2, dest2) = refused_fixture(d.path(), "again", 0);
    let (o, paths) = (
        options.clone(),
        (src.clone(), dest.clone(), src2.clone(), dest2.clone()),
    );
    let (first, second) = with_timeout(
        Duration::from_secs(60),
        "batches with refusals",
        move || {
            let (src, dest, src2, dest2) = paths;
            let s = connect(&o);
            let t = s.transfer(
                TransferOptions {
                    max_open: Some(2),
                    ..opts()
                },
                Rc::new(NoProgress),
            );
            let a = s.run(t.upload_tree(&src, r(&dest)));
            let b = s.run(t.upload_tree(&src2, r(&dest2)));
            ((a.files, a.failures.len()), (b.files, b.failures.len()))
        },
    );
    assert_eq!(first, (100, 10));
    assert_eq!(second, (100, 0));
    assert_same_tree(&src2, &dest2);
}

#[test]
fn bounded_queue_still_makes_progress() {
    let s = connect(&local_options());
    let d = scratch();
    let (l, rm) = (d.path().join("big"), d.path().join("remote"));
    make_big_file(&l, 100 * MIB, 7);
    let tight = TransferOptions {
        requests: 4,
        max_bytes_in_flight: MIB as usize,
        ..opts()
    };
    let started = Instant::now();
    assert_eq!(s.put(&l, r(&rm), &tight).unwrap(), 100 * MIB);
    eprintln!("bounded put of 100 MiB in {:?}", started.elapsed());
    assert_eq!(sha256_file(&rm), sha256_file(&l));
    let back = d.path().join("back");
    assert_eq!(s.get(r(&rm), &back, &tight).unwrap(), 100 * MIB);
    assert_eq!(sha256_file(&back), sha256_file(&l));
}

/// Six 30 MiB files and a hundred small ones in a tree, for the byte-budget tests.
fn six_large_files(root: &Path) -> PathBuf {
    let src = root.join("tree");
    fs::create_dir_all(src.join("large")).unwrap();
    for i in 0..6u64 {
        make_big_file(&src.join(format!("large/l{i}")), 30 * MIB, 500 + i);
    }
    for i in 0..100u64 {
        write_file(
            src.join(format!("small/s{i:03}")),
            random_bytes(10_000 + i as usize, i),
        );
    }
    src
}

#[test]

fn concurrent_large_uploads_share_the_byte_budget() {
    // Defaults: 64 requests of ~255 KiB per file (16 MiB), 24 MiB in flight over all
    // files, so two large files can each hold part of the budget in replies they do not
    // collect while waiting for more. Hangs in about half the runs, depending on how the
    // files' requests interleave.
    let d = scratch();
    let src = six_large_files(d.path());
    let dest = d.path().join("dest");
    let (s2, d2) = (src.clone(), dest.clone());
    let report = with_timeout(
        Duration::from_secs(30),
        "put_tree of six large files",
        move || {
            let s = connect(&local_options());
            s.put_tree(&s2, r(&d2), &opts())
        },
    );
    assert!(report.is_ok(), "{:?}", report.failures);
    assert_same_tree(&src, &dest);
}

#[test]

fn one_upload_with_more_requests_than_the_budget_holds() {
    let d = scratch();
    let (l, rm) = (d.path().join("src"), d.path().join("remote"));
    make_big_file(&l, 8 * MIB, 8);
    let tight = TransferOptions {
        requests: 16,
        max_bytes_in_flight: MIB as usize,
        ..opts()
    };
    let (l2, r2) = (l.clone(), rm.clone());
    let n = with_timeout(Duration::from_secs(30), "bounded put", move || {
        let s = connect(&local_options());
        s.put(&l2, r(&r2), &tight).unwrap()
    });
    assert_eq!(n, 8 * MIB);
    assert_eq!(sha256_file(&rm), sha256_file(&l));
}

#[test]

fn concurrent_large_downloads_share_the_byte_budget() {
    let d = scratch();
    let src = six_large_files(d.path());
    let back = d.path().join("back");
    let (s2, b2) = (src.clone(), back.clone());
    let report = with_timeout(
        Duration::from_secs(30),
        "get_tree of six large files",
        move || {
            let s = connect(&local_options());
            s.get_tree(r(&s2), &b2, &opts())
        },
    );
    assert!(report.is_ok(), "{:?}", report.failures);
    assert_same_tree(&src, &back);
}

#[test]

fn one_download_with_more_requests_than_the_budget_holds() {
    let d = scratch();
    let (rm, b) = (d.path().join("remote"), d.path().join("back"));
    make_big_file(&rm, 8 * MIB, 9);
    let tight = TransferOptions {
        requests: 16,
        max_bytes_in_flight: MIB as usize,
        ..opts()
    };
    let (r2, b2) = (rm.clone(), b.clone());
    let n = with_timeout(Duration::from_secs(30), "bounded get", move || {
        let s = connect(&local_options());
        s.get(r(&r2), &b2, &tight).unwrap()
    });
    assert_eq!(n, 8 * MIB);
    assert_eq!(sha256_file(&b), sha256_file(&rm));
}

#[test]

fn server_killed_mid_upload_says_how_it_died() {
    let d = scratch();
    let src = d.path().join("src");
    make_big_file(&src, 64 * MIB, 64);
    let dest_dir = d.path().join("dest");
    fs::create_dir(&dest_dir).unwrap();
    let killer = common::ServerKiller::start(d.path(), &dest_dir, 16_000_000);
    let server = killer.command().to_string();
    let target = dest_dir.join("file");
    let e = with_timeout(
        Duration::from_secs(60),
        "put to a dying server",
        move || {
            let s = connect(&ConnectOptions::local_server(server));
            s.put(&src, r(&target), &opts()).unwrap_err()
        },
    );
    let shown = e.to_string();
    assert!(matches!(e, Error::Connection(_)), "{e:?}");
    assert!(
        shown.contains("killed") || shown.contains("signal"),
        "{shown}"
    );
}

/// Large WRITEs take their data straight from the file when the socket takes it: a file
/// that is shorter by then must fail its upload without breaking the connection's framing.
#[test]
fn a_write_from_a_file_that_shrank_fails_and_the_connection_goes_on() {
    let d = scratch();
    let src = d.path().join("src");
    let data = random_bytes(200 * 1024, 9);
    write_file(&src, &data);
    let dest = d.path().join("dest");
    let s = connect(&local_options());
    let sftp = s.sftp().clone();
    let file = Rc::new(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&src)
            .unwrap(),
    );
    let (bad, good) = s.run(async {
        let h = sftp
            .open(
                r(&dest),
                sftpipe::OpenFlags::WRITE | sftpipe::OpenFlags::CREAT | sftpipe::OpenFlags::TRUNC,
                &sftpipe::FileAttributes::default(),
            )
            .await
            .unwrap();
        // The size was known as 200 KiB (one WRITE within the server's limit); the file shrinks before its data is sent.
        file.set_len(70 * 1024).unwrap();
        let bad = sftp
            .submit_write_file_region(&h, 0, &file, 0, 200 * 1024)
            .await
            .unwrap()
            .await;
        let good = sftp
            .submit_write_file_region(&h, 0, &file, 0, 70 * 1024)
            .await
            .unwrap()
            .await;
        sftp.close(h).await.unwrap();
        (bad, good)
    });
    let e = bad.unwrap_err();
    assert!(e.to_string().contains("shrank"), "{e}");
    good.unwrap();
    // The next requests are understood: the padded packet kept the stream framed.
    assert_eq!(s.stat(r(&dest)).unwrap().size, Some(200 * 1024));
    let mut want = data[..70 * 1024].to_vec();
    want.resize(200 * 1024, 0);
    assert!(read_file(&dest) == want);
}

/// A file truncated while `put` sends it: the upload fails naming it, nothing appears under
/// the final name, and the session uploads the next file intact.
#[test]
fn a_file_truncated_during_put_fails_cleanly() {
    let d = scratch();
    let src = d.path().join("src");
    // Sparse: gigabytes of zeros cost nothing to store, and take seconds to send.
    fs::File::create(&src).unwrap().set_len(4 << 30).unwrap();
    let dest_dir = d.path().join("dest");
    fs::create_dir(&dest_dir).unwrap();
    let (watch_dir, watch_src) = (dest_dir.clone(), src.clone());
    let truncator = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let started = fs::read_dir(&watch_dir).unwrap().flatten().any(|e| {
                e.file_name().to_string_lossy().ends_with(".sftpipe-tmp")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            });
            if started {
                fs::OpenOptions::new()
                    .write(true)
                    .open(&watch_src)
                    .unwrap()
                    .set_len(MIB)
                    .unwrap();
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    });
    let s = connect(&local_options());
    let target = dest_dir.join("file");
    let e = s.put(&src, r(&target), &opts()).unwrap_err();
    assert!(truncator.join().unwrap(), "the upload never started");
    let shown = e.to_string();
    assert!(shown.contains("shrank"), "{shown}");
    assert!(shown.contains(&src.display().to_string()), "{shown}");
    assert!(!target.exists());
    assert_eq!(
        fs::read_dir(&dest_dir).unwrap().count(),
        0,
        "temp file left"
    );

    let next = d.path().join("next");
    write_file(&next, random_bytes(3 * MIB as usize, 10));
    s.put(&next, r(&target), &opts()).unwrap();
    assert_eq!(sha256_file(&next), sha256_file(&target));
}
