//! Integration tests of the blocking library API ([`sftpipe::Session`] and
//! [`sftpipe::File`]) against real OpenSSH: every operation runs through both transports,
//! a local `sftp-server` (`-D`) and `ssh` to a throwaway sshd (`tests/common`). The
//! "remote" is this machine, so each effect is checked on the local file system.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    Sshd, TEST_USER, pid_recording_server, process_alive, random_bytes, read_file, read_pid,
    sftp_server_path, wait_until, write_file, write_script,
};
use sftpipe::proto::ext;
use sftpipe::{ConnectOptions, Error, FileAttributes, OpenFlags, Session, StatusCode};

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// How a test reaches its server.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// `-D sftp-server`, as root.
    Local,
    /// ssh to a throwaway sshd, as root.
    Sshd,
    /// `-D` sftp-server run as [`TEST_USER`] through `setpriv`.
    LocalAsUser,
    /// ssh to a throwaway sshd as [`TEST_USER`].
    SshdAsUser,
}

/// A connected session with a scratch directory. Fields drop in order: the session
/// closes before its sshd goes away.
struct Env {
    session: Session,
    dir: tempfile::TempDir,
    _sshd: Option<Sshd>,
}

const SSH_OPTIONS: [&str; 5] = [
    "StrictHostKeyChecking=no",
    "UserKnownHostsFile=/dev/null",
    "BatchMode=yes",
    "LogLevel=ERROR",
    "IdentitiesOnly=yes",
];

/// Connection options for `sshd` (as its user).
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

/// Makes sure [`TEST_USER`] exists (the harness creates it when starting an sshd for it).
fn ensure_test_user() {
    let exists = Command::new("id")
        .arg(TEST_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        drop(Sshd::start_as(TEST_USER));
    }
}

/// `-D` options running sftp-server as [`TEST_USER`].
fn local_as_user_options() -> ConnectOptions {
    ensure_test_user();
    assert!(
        Path::new("/usr/bin/setpriv").exists(),
        "setpriv (util-linux) is needed to run sftp-server as {TEST_USER}"
    );
    ConnectOptions::local_server(format!(
        "/usr/bin/setpriv --reuid={TEST_USER} --regid={TEST_USER} --clear-groups {}",
        sftp_server_path().display()
    ))
}

/// A scratch directory every test user can enter.
fn scratch() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("sftpipe-session-")
        .tempdir()
        .expect("tempdir");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
    d
}

fn connect(via: Via) -> Env {
    connect_with(via, |_, _| {})
}

/// Connects after `tweak` adjusted the options (it sees the scratch directory).
fn connect_with(via: Via, tweak: impl FnOnce(&mut ConnectOptions, &Path)) -> Env {
    let dir = scratch();
    let (mut options, sshd) = match via {
        Via::Local => (local_options(), None),
        Via::LocalAsUser => (local_as_user_options(), None),
        Via::Sshd => {
            let sshd = Sshd::start();
            (sshd_options(&sshd), Some(sshd))
        }
        Via::SshdAsUser => {
            let sshd = Sshd::start_as(TEST_USER);
            (sshd_options(&sshd), Some(sshd))
        }
    };
    tweak(&mut options, dir.path());
    let session = match Session::connect(&options) {
        Ok(s) => s,
        Err(e) => panic!(
            "connect {via:?}: {e}\n--- sshd log ---\n{}",
            sshd.as_ref().map(|s| s.log()).unwrap_or_default()
        ),
    };
    Env {
        session,
        dir,
        _sshd: sshd,
    }
}

fn run(via: Via, body: fn(&Session, &Path)) {
    let env = connect(via);
    body(&env.session, env.dir.path());
}

/// Generates one `#[test]` per transport for each body `fn(&Session, &Path)`.
macro_rules! both_transports {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn via_local_server() {
                super::run(super::Via::Local, super::$name)
            }
            #[test]
            fn via_sshd() {
                super::run(super::Via::Sshd, super::$name)
            }
        }
    )*};
}

/// The same, with the server running as the unprivileged [`TEST_USER`].
macro_rules! both_transports_as_user {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn via_local_server_as_user() {
                super::run(super::Via::LocalAsUser, super::$name)
            }
            #[test]
            fn via_sshd_as_user() {
                super::run(super::Via::SshdAsUser, super::$name)
            }
        }
    )*};
}

/// A local path as the remote path bytes (the "remote" is this machine).
fn r(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// The error of a result whose success type has no `Debug` (such as `File`).
fn expect_err<T>(r: sftpipe::Result<T>, what: &str) -> Error {
    match r {
        Ok(_) => panic!("{what}: succeeded but should have failed"),
        Err(e) => e,
    }
}

/// Asserts a STATUS error with `code`, whose message names `path`.
fn assert_status(e: &Error, code: StatusCode, kind: io::ErrorKind, path: &Path) {
    assert_eq!(e.status(), Some(code), "{e:?}");
    assert_eq!(e.kind(), kind, "{e:?}");
    let shown = e.to_string();
    assert!(
        shown.contains(&*path.to_string_lossy()),
        "message {shown:?} does not name {}",
        path.display()
    );
}

/// Runs `f` on its own thread and fails the test if it takes longer than `limit` (a hang
/// becomes a failure instead of blocking the suite). Panics inside `f` propagate.
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
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no answer after {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => panic!("{what}: the thread ended without a result"),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Every operation, through both transports
// ---------------------------------------------------------------------------------------

both_transports!(
    open_flags,
    file_read_write_seek,
    stat_lstat_fstat,
    setstat_chmod_chown_times_truncate,
    fsetstat_and_sync_all,
    read_dir_lists_everything_in_several_batches,
    remove_mkdir_rmdir,
    mkdir_all_creates_deep_paths,
    realpath_and_expand_path,
    renames,
    symlink_readlink_hardlink,
    statvfs_is_sane,
    lsetstat_changes_the_link_not_its_target,
    extensions_and_limits,
    missing_paths_are_not_found_and_named,
);

both_transports_as_user!(
    remove_in_a_foreign_directory_is_permission_denied,
    open_of_a_mode_000_file_is_permission_denied,
);

fn open_flags(s: &Session, dir: &Path) {
    let p = dir.join("f");

    // READ on a missing file.
    let e = expect_err(s.open(r(&p)), "open missing");
    assert_status(&e, StatusCode::NoSuchFile, io::ErrorKind::NotFound, &p);
    assert!(e.is_not_found());
    // WRITE without CREAT does not create.
    let e = expect_err(
        s.open_with(r(&p), OpenFlags::WRITE, &FileAttributes::default()),
        "open WRITE missing",
    );
    assert!(e.is_not_found(), "{e}");
    assert!(!p.exists());

    // create = WRITE|CREAT|TRUNC.
    let mut f = s.create(r(&p)).unwrap();
    f.write_all(b"hello world").unwrap();
    f.close().unwrap();
    assert_eq!(read_file(&p), b"hello world");

    // READ reads it and cannot write.
    let mut f = s.open(r(&p)).unwrap();
    let mut got = Vec::new();
    f.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hello world");
    assert!(f.write_all(b"x").is_err(), "wrote through a READ handle");
    f.close().unwrap();
    assert_eq!(read_file(&p), b"hello world");

    // WRITE|CREAT|TRUNC cuts existing content.
    let mut f = s
        .open_with(
            r(&p),
            OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC,
            &FileAttributes::default(),
        )
        .unwrap();
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        0,
        "TRUNC did not truncate at open"
    );
    f.write_all(b"abc").unwrap();
    f.close().unwrap();
    assert_eq!(read_file(&p), b"abc");

    // WRITE alone overwrites in place, keeping the rest.
    let mut f = s
        .open_with(r(&p), OpenFlags::WRITE, &FileAttributes::default())
        .unwrap();
    f.write_all(b"XY").unwrap();
    f.close().unwrap();
    assert_eq!(read_file(&p), b"XYc");

    // APPEND writes at the end whatever the offset.
    let mut f = s
        .open_with(
            r(&p),
            OpenFlags::WRITE | OpenFlags::APPEND,
            &FileAttributes::default(),
        )
        .unwrap();
    f.write_all(b"def").unwrap();
    f.write_all(b"gh").unwrap();
    f.close().unwrap();
    assert_eq!(read_file(&p), b"XYcdefgh");

    // CREAT|EXCL fails on an existing file and leaves it alone.
    let e = expect_err(
        s.open_with(
            r(&p),
            OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::EXCL,
            &FileAttributes::default(),
        ),
        "EXCL on an existing file",
    );
    assert_status(&e, StatusCode::Failure, io::ErrorKind::Other, &p);
    assert_eq!(read_file(&p), b"XYcdefgh");

    // ... and creates a new one, with the requested permissions.
    let q = dir.join("excl");
    let mut f = s
        .open_with(
            r(&q),
            OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::EXCL,
            &FileAttributes::with_permissions(0o600),
        )
        .unwrap();
    f.write_all(b"new").unwrap();
    f.close().unwrap();
    assert_eq!(read_file(&q), b"new");
    assert_eq!(mode_of(&q), 0o600);

    // READ|WRITE: read, then overwrite at the position reached.
    let mut f = s
        .open_with(
            r(&q),
            OpenFlags::READ | OpenFlags::WRITE,
            &FileAttributes::default(),
        )
        .unwrap();
    let mut two = [0u8; 2];
    f.read_exact(&mut two).unwrap();
    assert_eq!(&two, b"ne");
    f.write_all(b"W!").unwrap();
    f.close().unwrap();
    assert_eq!(read_file(&q), b"neW!");
}

fn file_read_write_seek(s: &Session, dir: &Path) {
    let p = dir.join("data");
    // Several write chunks' worth, so Write::write_all and Read loop.
    let len = s.sftp().write_chunk() * 2 + s.sftp().read_chunk() + 777;
    let data = random_bytes(len, 7);
    let mut f = s.create(r(&p)).unwrap();
    f.write_all(&data).unwrap();
    assert_eq!(f.stream_position().unwrap(), len as u64);
    f.close().unwrap();
    assert_eq!(read_file(&p), data);

    let mut f = s.open(r(&p)).unwrap();
    let mut all = Vec::new();
    f.read_to_end(&mut all).unwrap();
    assert_eq!(all, data);
    // At the end, read returns 0.
    let mut buf = [0u8; 16];
    assert_eq!(f.read(&mut buf).unwrap(), 0);

    // SeekFrom::Start / Current / End.
    assert_eq!(f.seek(SeekFrom::Start(100)).unwrap(), 100);
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..], &data[100..116]);
    assert_eq!(f.seek(SeekFrom::Current(-6)).unwrap(), 110);
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..], &data[110..126]);
    assert_eq!(f.seek(SeekFrom::End(-16)).unwrap(), len as u64 - 16);
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..], &data[len - 16..]);
    assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), len as u64);
    assert_eq!(f.read(&mut buf).unwrap(), 0);
    let e = f.seek(SeekFrom::End(-(len as i64) - 1)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    let e = f.seek(SeekFrom::Current(i64::MIN)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    f.close().unwrap();

    // Write after seeking past the end leaves a hole of zeros; SeekFrom::End appends.
    let mut f = s
        .open_with(
            r(&p),
            OpenFlags::READ | OpenFlags::WRITE,
            &FileAttributes::default(),
        )
        .unwrap();
    f.seek(SeekFrom::End(10)).unwrap();
    f.write_all(b"tail").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"HEAD").unwrap();
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(b"!").unwrap();
    f.close().unwrap();
    let mut want = data.clone();
    want[..4].copy_from_slice(b"HEAD");
    want.extend_from_slice(&[0u8; 10]);
    want.extend_from_slice(b"tail!");
    assert_eq!(read_file(&p), want);
}

fn stat_lstat_fstat(s: &Session, dir: &Path) {
    let file = dir.join("file");
    write_file(&file, vec![5u8; 1234]);
    set_mode(&file, 0o640);
    let sub = dir.join("sub");
    fs::create_dir(&sub).unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink("file", &link).unwrap();
    let dangling = dir.join("dangling");
    std::os::unix::fs::symlink("nowhere", &dangling).unwrap();
    let meta = fs::metadata(&file).unwrap();

    let a = s.stat(r(&file)).unwrap();
    assert!(a.is_file(), "{a:?}");
    assert_eq!(a.size, Some(1234));
    assert_eq!(a.permissions.map(|p| p & 0o7777), Some(0o640));
    assert_eq!(a.mtime(), Some(meta.mtime() as u32));
    assert_eq!(a.atime_mtime.map(|t| t.0), Some(meta.atime() as u32));
    assert_eq!(a.uid_gid, Some((meta.uid(), meta.gid())));
    assert_eq!(s.lstat(r(&file)).unwrap(), a);

    let d = s.stat(r(&sub)).unwrap();
    assert!(d.is_dir(), "{d:?}");
    assert!(s.lstat(r(&sub)).unwrap().is_dir());

    // stat follows the link, lstat shows the link.
    let via_link = s.stat(r(&link)).unwrap();
    assert!(via_link.is_file());
    assert_eq!(via_link.size, Some(1234));
    let l = s.lstat(r(&link)).unwrap();
    assert!(l.is_symlink(), "{l:?}");
    assert_eq!(
        l.size,
        Some(4),
        "a link's size is the length of its target text"
    );

    assert!(s.lstat(r(&dangling)).unwrap().is_symlink());
    let e = s.stat(r(&dangling)).unwrap_err();
    assert_status(
        &e,
        StatusCode::NoSuchFile,
        io::ErrorKind::NotFound,
        &dangling,
    );

    // fstat of an open file.
    let f = s.open(r(&file)).unwrap();
    let fa = f.metadata().unwrap();
    assert!(fa.is_file());
    assert_eq!(fa.size, Some(1234));
    assert_eq!(fa.permissions, a.permissions);
    assert_eq!(fa.mtime(), a.mtime());
    f.close().unwrap();
}

fn setstat_chmod_chown_times_truncate(s: &Session, dir: &Path) {
    let file = dir.join("file");
    let data = random_bytes(100, 1);
    write_file(&file, &data);

    s.chmod(r(&file), 0o604).unwrap();
    assert_eq!(mode_of(&file), 0o604);
    // The file-type bits in a mode are ignored, not an error.
    s.chmod(r(&file), 0o100_711).unwrap();
    assert_eq!(mode_of(&file), 0o711);

    // Both transports run as root here, so chown to nobody works.
    s.chown(r(&file), 65534, 65534).unwrap();
    let m = fs::metadata(&file).unwrap();
    assert_eq!((m.uid(), m.gid()), (65534, 65534));

    s.set_times(r(&file), 1_000_000_000, 1_100_000_000).unwrap();
    let m = fs::metadata(&file).unwrap();
    assert_eq!(m.mtime(), 1_100_000_000);
    assert_eq!(m.atime(), 1_000_000_000);

    s.truncate(r(&file), 10).unwrap();
    assert_eq!(read_file(&file), &data[..10]);
    s.truncate(r(&file), 5000).unwrap();
    let got = read_file(&file);
    assert_eq!(got.len(), 5000);
    assert_eq!(&got[..10], &data[..10]);
    assert!(got[10..].iter().all(|&b| b == 0));

    // Several attributes in one SETSTAT.
    let attrs = FileAttributes {
        size: Some(3),
        permissions: Some(0o640),
        atime_mtime: Some((1_200_000_000, 1_300_000_000)),
        ..Default::default()
    };
    s.setstat(r(&file), &attrs).unwrap();
    let m = fs::metadata(&file).unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m.permissions().mode() & 0o7777, 0o640);
    assert_eq!(m.mtime(), 1_300_000_000);

    // On a directory too.
    let sub = dir.join("sub");
    fs::create_dir(&sub).unwrap();
    s.chmod(r(&sub), 0o700).unwrap();
    assert_eq!(mode_of(&sub), 0o700);

    let missing = dir.join("missing");
    let e = s.chmod(r(&missing), 0o600).unwrap_err();
    assert_status(
        &e,
        StatusCode::NoSuchFile,
        io::ErrorKind::NotFound,
        &missing,
    );
    assert!(e.to_string().starts_with("chmod "), "{e}");
    let e = s.truncate(r(&missing), 0).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(!missing.exists(), "truncate created the file");
}

fn fsetstat_and_sync_all(s: &Session, dir: &Path) {
    let file = dir.join("file");
    let mut f = s.create(r(&file)).unwrap();
    f.write_all(b"0123456789").unwrap();
    f.sync_all().unwrap();
    f.set_metadata(&FileAttributes {
        size: Some(4),
        permissions: Some(0o600),
        atime_mtime: Some((1_000_000_000, 1_000_000_001)),
        ..Default::default()
    })
    .unwrap();
    let a = f.metadata().unwrap();
    assert_eq!(a.size, Some(4));
    assert_eq!(a.permissions.map(|p| p & 0o7777), Some(0o600));
    assert_eq!(a.mtime(), Some(1_000_000_001));
    let vfs = f.statvfs().unwrap();
    assert!(vfs.bsize > 0 && vfs.blocks > 0, "{vfs:?}");
    f.close().unwrap();
    assert_eq!(read_file(&file), b"0123");
    let m = fs::metadata(&file).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o600);
    assert_eq!(m.mtime(), 1_000_000_001);
}

fn read_dir_lists_everything_in_several_batches(s: &Session, dir: &Path) {
    const N: usize = 350;
    let big = dir.join("big");
    fs::create_dir(&big).unwrap();
    for i in 0..N {
        write_file(big.join(format!("entry-{i:04}")), vec![b'x'; i]);
    }
    fs::create_dir(big.join("a dir")).unwrap();
    std::os::unix::fs::symlink("entry-0001", big.join("a link")).unwrap();

    let entries = s.read_dir(r(&big)).unwrap();
    assert_eq!(entries.len(), N + 2);
    let mut names: Vec<String> = entries
        .iter()
        .map(|e| e.name_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = (0..N).map(|i| format!("entry-{i:04}")).collect();
    want.push("a dir".into());
    want.push("a link".into());
    want.sort();
    assert_eq!(names, want, "no '.', '..', duplicates or omissions");
    for e in &entries {
        let name = e.name_lossy();
        if let Some(i) = name.strip_prefix("entry-") {
            let i: u64 = i.parse().unwrap();
            assert!(e.attrs.is_file(), "{name}: {:?}", e.attrs);
            assert_eq!(e.attrs.size, Some(i), "{name}");
            assert!(e.attrs.mtime().is_some());
        } else if name == "a dir" {
            assert!(e.attrs.is_dir(), "{:?}", e.attrs);
        } else {
            assert!(
                e.attrs.is_symlink(),
                "readdir does not follow links: {:?}",
                e.attrs
            );
        }
    }

    // It took several READDIR replies (OpenSSH sends at most 100 names per reply).
    let sftp = s.sftp().clone();
    let path = r(&big).to_vec();
    let batches = s.run(async move {
        let h = sftp.opendir(&path).await?;
        let mut n = 0;
        while sftp.readdir(&h).await?.is_some() {
            n += 1;
        }
        sftp.close(h).await?;
        Ok::<_, Error>(n)
    });
    assert!(batches.unwrap() >= 4);

    // An empty directory lists as empty; a file or a missing path fails.
    let empty = dir.join("empty");
    fs::create_dir(&empty).unwrap();
    assert!(s.read_dir(r(&empty)).unwrap().is_empty());
    let missing = dir.join("missing");
    let e = s.read_dir(r(&missing)).unwrap_err();
    assert_status(
        &e,
        StatusCode::NoSuchFile,
        io::ErrorKind::NotFound,
        &missing,
    );
    assert!(s.read_dir(r(&big.join("entry-0001"))).is_err());
}

fn remove_mkdir_rmdir(s: &Session, dir: &Path) {
    let file = dir.join("file");
    write_file(&file, b"x");
    s.remove(r(&file)).unwrap();
    assert!(!file.exists());
    let e = s.remove(r(&file)).unwrap_err();
    assert_status(&e, StatusCode::NoSuchFile, io::ErrorKind::NotFound, &file);

    // remove takes a symlink away, not its target.
    let target = dir.join("target");
    write_file(&target, b"t");
    let link = dir.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    s.remove(r(&link)).unwrap();
    assert!(fs::symlink_metadata(&link).is_err());
    assert!(target.exists());

    let sub = dir.join("sub");
    s.mkdir(r(&sub)).unwrap();
    assert!(fs::metadata(&sub).unwrap().is_dir());
    // mkdir of an existing directory fails (OpenSSH says FAILURE).
    let e = s.mkdir(r(&sub)).unwrap_err();
    assert!(e.status().is_some(), "{e:?}");
    assert!(e.to_string().contains(&*sub.to_string_lossy()), "{e}");
    // mkdir below a missing parent fails with NO_SUCH_FILE.
    let orphan = dir.join("no/such/parent");
    let e = s.mkdir(r(&orphan)).unwrap_err();
    assert_status(&e, StatusCode::NoSuchFile, io::ErrorKind::NotFound, &orphan);

    // remove of a directory fails, rmdir of a non-empty one fails.
    assert!(s.remove(r(&sub)).is_err());
    write_file(sub.join("inner"), b"i");
    let e = s.rmdir(r(&sub)).unwrap_err();
    assert!(e.status().is_some(), "{e:?}");
    assert!(e.to_string().contains(&*sub.to_string_lossy()), "{e}");
    assert!(sub.join("inner").exists());
    // rmdir of a file fails.
    assert!(s.rmdir(r(&sub.join("inner"))).is_err());

    s.remove(r(&sub.join("inner"))).unwrap();
    s.rmdir(r(&sub)).unwrap();
    assert!(!sub.exists());
    let e = s.rmdir(r(&sub)).unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

fn mkdir_all_creates_deep_paths(s: &Session, dir: &Path) {
    let deep = dir.join("a/b/c/d/e/f/g/h");
    s.mkdir_all(r(&deep)).unwrap();
    assert!(fs::metadata(&deep).unwrap().is_dir());
    // Idempotent, also with a trailing slash and for a prefix.
    s.mkdir_all(r(&deep)).unwrap();
    s.mkdir_all(format!("{}/", deep.display())).unwrap();
    s.mkdir_all(r(&dir.join("a/b"))).unwrap();
    // Branching off an existing part.
    let branch = dir.join("a/b/x/y");
    s.mkdir_all(r(&branch)).unwrap();
    assert!(branch.is_dir());
    // A file in the way is an error, not success.
    write_file(dir.join("file"), b"f");
    let blocked = dir.join("file/sub/dir");
    let e = s.mkdir_all(r(&blocked)).unwrap_err();
    assert!(e.status().is_some(), "{e:?}");
    let e = s.mkdir_all(r(&dir.join("file"))).unwrap_err();
    assert!(e.to_string().contains("file"), "{e}");
}

/// The passwd entry of the user running the tests (both root transports run as it).
fn own_user() -> nix::unistd::User {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .expect("own passwd entry")
}

fn realpath_and_expand_path(s: &Session, dir: &Path) {
    let canon = fs::canonicalize(dir).unwrap();
    fs::create_dir(dir.join("sub")).unwrap();
    let messy = format!("{}/sub/.././sub//", dir.display());
    assert_eq!(s.realpath(&messy).unwrap(), r(&canon.join("sub")));
    // Links are resolved.
    std::os::unix::fs::symlink("sub", dir.join("link")).unwrap();
    assert_eq!(
        s.realpath(r(&dir.join("link"))).unwrap(),
        r(&canon.join("sub"))
    );
    // "." is some absolute existing directory (the server's working directory: the home
    // directory over ssh, the test's directory with -D).
    let cwd = s.realpath(".").unwrap();
    assert!(cwd.starts_with(b"/"), "{}", String::from_utf8_lossy(&cwd));
    assert!(Path::new(OsStr::from_bytes(&cwd)).is_dir());

    // OpenSSH's expand-path reads "~" and "~/x" relative to the server's working
    // directory (which is the home directory in an ssh session) and "~user" as that
    // user's home.
    assert!(s.sftp().has_extension(ext::EXPAND_PATH));
    assert_eq!(s.expand_path("~").unwrap(), cwd);
    let mut cwd_sub = cwd.clone();
    cwd_sub.extend_from_slice(b"/sftpipe-no-such-name");
    assert_eq!(s.expand_path("~/sftpipe-no-such-name").unwrap(), cwd_sub);
    let me = own_user();
    assert_eq!(s.expand_path(format!("~{}", me.name)).unwrap(), r(&me.dir));
    assert_eq!(
        s.expand_path(format!("{}/sub", dir.display())).unwrap(),
        r(&canon.join("sub"))
    );
    let e = s.expand_path("~sftpipe-no-such-user").unwrap_err();
    assert!(e.status().is_some(), "{e:?}");
}

fn renames(s: &Session, dir: &Path) {
    let a = dir.join("a");
    let b = dir.join("b");
    let c = dir.join("c");
    let d = dir.join("d");
    write_file(&a, b"A");
    write_file(&c, b"C");
    write_file(&d, b"D");

    s.rename(r(&a), r(&b)).unwrap();
    assert!(!a.exists());
    assert_eq!(read_file(&b), b"A");

    // Plain rename refuses to replace.
    let e = s.rename(r(&b), r(&c)).unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::Failure), "{e:?}");
    assert!(e.to_string().contains(&*b.to_string_lossy()), "{e}");
    assert_eq!(read_file(&b), b"A");
    assert_eq!(read_file(&c), b"C");

    // posix-rename replaces atomically.
    s.posix_rename(r(&b), r(&c)).unwrap();
    assert!(!b.exists());
    assert_eq!(read_file(&c), b"A");

    // rename_replace replaces, and also works when nothing is in the way.
    s.rename_replace(r(&d), r(&c)).unwrap();
    assert!(!d.exists());
    assert_eq!(read_file(&c), b"D");
    s.rename_replace(r(&c), r(&a)).unwrap();
    assert_eq!(read_file(&a), b"D");

    // Directories rename too.
    let sub = dir.join("sub");
    fs::create_dir(&sub).unwrap();
    write_file(sub.join("x"), b"x");
    s.rename(r(&sub), r(&dir.join("sub2"))).unwrap();
    assert_eq!(read_file(dir.join("sub2/x")), b"x");

    let missing = dir.join("missing");
    let e = s.rename(r(&missing), r(&dir.join("z"))).unwrap_err();
    assert_status(
        &e,
        StatusCode::NoSuchFile,
        io::ErrorKind::NotFound,
        &missing,
    );
    let e = s.posix_rename(r(&missing), r(&dir.join("z"))).unwrap_err();
    assert_status(
        &e,
        StatusCode::NoSuchFile,
        io::ErrorKind::NotFound,
        &missing,
    );
}

fn symlink_readlink_hardlink(s: &Session, dir: &Path) {
    let file = dir.join("file");
    write_file(&file, b"content");

    // Argument order: target, then the link to create.
    let rel_link = dir.join("rel");
    s.symlink("file", r(&rel_link)).unwrap();
    assert_eq!(fs::read_link(&rel_link).unwrap(), Path::new("file"));
    assert_eq!(read_file(&rel_link), b"content");
    assert_eq!(s.readlink(r(&rel_link)).unwrap(), b"file");

    let abs_link = dir.join("abs");
    s.symlink(r(&file), r(&abs_link)).unwrap();
    assert_eq!(fs::read_link(&abs_link).unwrap(), file);
    assert_eq!(s.readlink(r(&abs_link)).unwrap(), r(&file));

    // A dangling link can be made and read.
    let dangling = dir.join("dangling");
    s.symlink("no/such/thing", r(&dangling)).unwrap();
    assert_eq!(s.readlink(r(&dangling)).unwrap(), b"no/such/thing");

    // symlink onto an existing name fails; readlink of a non-link fails.
    let e = s.symlink("x", r(&file)).unwrap_err();
    assert!(e.status().is_some(), "{e:?}");
    assert_eq!(read_file(&file), b"content");
    assert!(s.readlink(r(&file)).is_err());
    let missing = dir.join("missing");
    let e = s.readlink(r(&missing)).unwrap_err();
    assert_status(
        &e,
        StatusCode::NoSuchFile,
        io::ErrorKind::NotFound,
        &missing,
    );

    // Hard link: the same inode.
    let hard = dir.join("hard");
    s.hardlink(r(&file), r(&hard)).unwrap();
    let (m1, m2) = (fs::metadata(&file).unwrap(), fs::metadata(&hard).unwrap());
    assert_eq!((m1.dev(), m1.ino()), (m2.dev(), m2.ino()));
    assert_eq!(m1.nlink(), 2);
    let e = s.hardlink(r(&file), r(&hard)).unwrap_err();
    assert!(e.status().is_some(), "{e:?}");
    let e = s.hardlink(r(&missing), r(&dir.join("h2"))).unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

fn statvfs_is_sane(s: &Session, dir: &Path) {
    let v = s.statvfs(r(dir)).unwrap();
    assert!(v.bsize > 0, "{v:?}");
    assert!(v.frsize > 0, "{v:?}");
    assert!(v.blocks > 0, "{v:?}");
    assert!(v.bfree <= v.blocks, "{v:?}");
    assert!(v.bavail <= v.bfree, "{v:?}");
    assert!(v.ffree <= v.files, "{v:?}");
    assert!(v.namemax >= 255, "{v:?}");
    // The same file system as the kernel reports.
    let local = nix::sys::statvfs::statvfs(dir).unwrap();
    assert_eq!(v.blocks, local.blocks() as u64);
    assert_eq!(v.frsize, local.fragment_size() as u64);
    let missing = dir.join("missing");
    let e = s.statvfs(r(&missing)).unwrap_err();
    assert_status(
        &e,
        StatusCode::NoSuchFile,
        io::ErrorKind::NotFound,
        &missing,
    );
}

fn lsetstat_changes_the_link_not_its_target(s: &Session, dir: &Path) {
    let file = dir.join("file");
    write_file(&file, b"f");
    let before = fs::metadata(&file).unwrap().mtime();
    let link = dir.join("link");
    std::os::unix::fs::symlink("file", &link).unwrap();
    let times = FileAttributes {
        atime_mtime: Some((1_000_000_000, 1_050_000_000)),
        ..Default::default()
    };
    s.lsetstat(r(&link), &times).unwrap();
    assert_eq!(fs::symlink_metadata(&link).unwrap().mtime(), 1_050_000_000);
    assert_eq!(fs::metadata(&file).unwrap().mtime(), before);
    // setstat on the link changes the target.
    s.setstat(r(&link), &times).unwrap();
    assert_eq!(fs::metadata(&file).unwrap().mtime(), 1_050_000_000);
    // lsetstat on a regular file works like setstat.
    s.lsetstat(r(&file), &FileAttributes::with_permissions(0o600))
        .unwrap();
    assert_eq!(mode_of(&file), 0o600);
}

fn extensions_and_limits(s: &Session, _dir: &Path) {
    let sftp = s.sftp();
    assert_eq!(sftp.server_version(), 3);
    let names: Vec<&str> = sftp.extensions().iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        ext::POSIX_RENAME,
        ext::STATVFS,
        ext::FSTATVFS,
        ext::HARDLINK,
        ext::FSYNC,
        ext::LSETSTAT,
        ext::LIMITS,
        ext::EXPAND_PATH,
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
        assert!(sftp.has_extension(want), "{want} not usable");
    }
    assert!(!sftp.has_extension("no-such@example.org"));

    let l = s.limits().expect("OpenSSH offers limits@openssh.com");
    assert!(l.max_packet_length > 0, "{l:?}");
    assert!(l.max_read_length > 0, "{l:?}");
    assert!(l.max_write_length > 0, "{l:?}");
    assert!(l.max_open_handles > 0, "{l:?}");
    // Chunks follow the limits (capped).
    assert!(sftp.write_chunk() as u64 <= l.max_write_length);
    assert!(sftp.read_chunk() as u64 <= l.max_read_length);
    assert!(
        sftp.write_chunk() > 32 * 1024,
        "chunk {}",
        sftp.write_chunk()
    );
    assert_eq!(sftp.max_open_handles(), Some(l.max_open_handles));
}

fn missing_paths_are_not_found_and_named(s: &Session, dir: &Path) {
    let missing = dir.join("no such file ✓");
    for (op, e) in [
        ("stat", s.stat(r(&missing)).unwrap_err()),
        ("lstat", s.lstat(r(&missing)).unwrap_err()),
        ("remove", s.remove(r(&missing)).unwrap_err()),
        ("rmdir", s.rmdir(r(&missing)).unwrap_err()),
        ("open", expect_err(s.open(r(&missing)), "open")),
    ] {
        assert_status(
            &e,
            StatusCode::NoSuchFile,
            io::ErrorKind::NotFound,
            &missing,
        );
        assert!(matches!(e, Error::Status { .. }), "{e:?}");
        assert!(!e.is_connection());
        let shown = e.to_string();
        assert!(shown.starts_with(op), "{shown}");
        assert_eq!(
            shown,
            format!("{op} '{}': remote file not found", missing.display())
        );
    }
    // The session is still good.
    assert!(s.stat(r(dir)).unwrap().is_dir());
}

// ---------------------------------------------------------------------------------------
// Permission errors, with the server running as an unprivileged user
// ---------------------------------------------------------------------------------------

fn remove_in_a_foreign_directory_is_permission_denied(s: &Session, dir: &Path) {
    // `dir` and everything in it belong to root; the server runs as TEST_USER.
    let locked = dir.join("locked");
    fs::create_dir(&locked).unwrap();
    set_mode(&locked, 0o755);
    let victim = locked.join("victim");
    write_file(&victim, b"v");
    set_mode(&victim, 0o666);

    let e = s.remove(r(&victim)).unwrap_err();
    assert_status(
        &e,
        StatusCode::PermissionDenied,
        io::ErrorKind::PermissionDenied,
        &victim,
    );
    assert!(victim.exists());
    let newdir = locked.join("new");
    let e = s.mkdir(r(&newdir)).unwrap_err();
    assert_status(
        &e,
        StatusCode::PermissionDenied,
        io::ErrorKind::PermissionDenied,
        &newdir,
    );
    let e = s.rename(r(&victim), r(&locked.join("moved"))).unwrap_err();
    assert_status(
        &e,
        StatusCode::PermissionDenied,
        io::ErrorKind::PermissionDenied,
        &victim,
    );
    let e = s.chown(r(&victim), 0, 0).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e:?}");
    // Writing into the world-writable file is allowed, though.
    let mut f = s
        .open_with(r(&victim), OpenFlags::WRITE, &FileAttributes::default())
        .unwrap();
    f.write_all(b"W").unwrap();
    f.close().unwrap();
    assert_eq!(read_file(&victim), b"W");
}

fn open_of_a_mode_000_file_is_permission_denied(s: &Session, dir: &Path) {
    let own = dir.join("own");
    fs::create_dir(&own).unwrap();
    let secret = own.join("secret");
    write_file(&secret, b"secret");
    Command::new("chown")
        .arg("-R")
        .arg(format!("{TEST_USER}:"))
        .arg(&own)
        .status()
        .unwrap();
    set_mode(&secret, 0o000);

    let e = expect_err(s.open(r(&secret)), "open of a mode 000 file");
    assert_status(
        &e,
        StatusCode::PermissionDenied,
        io::ErrorKind::PermissionDenied,
        &secret,
    );
    assert_eq!(
        e.to_string(),
        format!("open '{}': Permission denied", secret.display())
    );
    let e = expect_err(s.create(r(&secret)), "create over a mode 000 file");
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e:?}");
    // The owner may chmod it back and then read it.
    s.chmod(r(&secret), 0o600).unwrap();
    let mut got = String::new();
    s.open(r(&secret))
        .unwrap()
        .read_to_string(&mut got)
        .unwrap();
    assert_eq!(got, "secret");
}

// ---------------------------------------------------------------------------------------
// Connection failures
// ---------------------------------------------------------------------------------------

fn connect_err(options: &ConnectOptions) -> Error {
    let options = options.clone();
    with_timeout(Duration::from_secs(30), "connect", move || {
        Session::connect(&options).err()
    })
    .expect("connect succeeded but should have failed")
}

fn closed_port_options() -> ConnectOptions {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    ConnectOptions {
        host: Some("127.0.0.1".into()),
        port: Some(port),
        ssh_options: SSH_OPTIONS.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn ssh_to_a_closed_port_is_connection_refused() {
    let e = connect_err(&closed_port_options());
    let shown = e.to_string();
    assert!(matches!(e, Error::Connection(_)), "{e:?}");
    assert!(e.is_connection());
    assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
    assert!(shown.contains("Connection refused"), "{shown}");
    assert!(shown.contains("ssh to 127.0.0.1"), "{shown}");
    if let Error::Connection(c) = &e {
        assert!(
            c.stderr_tail
                .iter()
                .any(|l| l.contains("Connection refused")),
            "{c:?}"
        );
    }
}

#[test]

fn ssh_to_a_closed_port_reports_the_exit_status() {
    let e = connect_err(&closed_port_options());
    let shown = e.to_string();
    assert!(matches!(e, Error::Connection(_)), "{e:?}");
    assert!(shown.contains("Connection refused"), "{shown}");
    assert!(shown.contains("exited with status 255"), "{shown}");
}

fn unknown_key_options(sshd: &Sshd, dir: &Path) -> ConnectOptions {
    let key = dir.join("stranger");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    ConnectOptions {
        identities: vec![key],
        ..sshd_options(sshd)
    }
}

#[test]
fn ssh_with_an_unknown_key_is_permission_denied() {
    let sshd = Sshd::start();
    let d = scratch();
    let e = connect_err(&unknown_key_options(&sshd, d.path()));
    let shown = e.to_string();
    assert!(matches!(e, Error::Connection(_)), "{e:?}");
    assert!(e.is_connection());
    assert!(shown.contains("Permission denied"), "{shown}");
    assert!(shown.contains("ssh to root@127.0.0.1"), "{shown}");
}

#[test]

fn ssh_with_an_unknown_key_reports_the_exit_status() {
    let sshd = Sshd::start();
    let d = scratch();
    let e = connect_err(&unknown_key_options(&sshd, d.path()));
    let shown = e.to_string();
    assert!(shown.contains("Permission denied"), "{shown}");
    assert!(shown.contains("exited with status 255"), "{shown}");
}

#[test]
fn option_like_hosts_users_and_jumps_never_run_a_proxy_command() {
    let d = scratch();
    let marker = d.path().join("MARKER");
    // Without white space too, so the leading '-' is what is refused.
    let script = d.path().join("proxy");
    write_script(&script, &format!("touch {}", marker.display()));
    let with_space = format!("-oProxyCommand=touch {}", marker.display());
    let without_space = format!("-oProxyCommand={}", script.display());
    for bad in [&with_space, &without_space] {
        let as_host = ConnectOptions {
            host: Some(bad.clone()),
            ..Default::default()
        };
        let as_user = ConnectOptions {
            host: Some("127.0.0.1".into()),
            user: Some(bad.clone()),
            ..Default::default()
        };
        let as_jump = ConnectOptions {
            host: Some("127.0.0.1".into()),
            jump: Some(bad.clone()),
            ..Default::default()
        };
        for o in [as_host, as_user, as_jump] {
            let e = connect_err(&o);
            assert!(matches!(e, Error::InvalidInput(_)), "{o:?}: {e:?}");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains("refusing"), "{e}");
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(!marker.exists(), "a ProxyCommand ran");
}

#[test]
fn a_missing_ssh_program_is_a_spawn_error() {
    let options = ConnectOptions {
        host: Some("127.0.0.1".into()),
        ssh_program: Some("/nonexistent/sftpipe-no-such-ssh".into()),
        ..Default::default()
    };
    let e = connect_err(&options);
    assert!(matches!(e, Error::Spawn { .. }), "{e:?}");
    assert!(e.is_connection());
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(
        e.to_string().contains("/nonexistent/sftpipe-no-such-ssh"),
        "{e}"
    );
    // Likewise a -D command that does not exist.
    let e = connect_err(&ConnectOptions::local_server("/nonexistent/sftp-server -e"));
    assert!(matches!(e, Error::Spawn { .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/sftp-server"), "{e}");
}

fn kill_pid_in(pidfile: &Path) {
    let pid = fs::read_to_string(pidfile).unwrap();
    let status = Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Opens a FIFO for reading: the server blocks in open(2) until a writer comes, so the
/// request stays in flight for as long as the test likes.
fn open_blocks_on_a_fifo(session: &Session, dir: &Path) -> Error {
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let started = Instant::now();
    let e = expect_err(session.open(r(&fifo)), "open of a FIFO whose server died");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "noticed the death after {:?}",
        started.elapsed()
    );
    e
}

/// A request the server never answers (it blocks opening a FIFO nobody writes to) fails
/// after the timeout, and the server is killed; an idle session never times out.
#[test]
fn a_request_left_unanswered_fails_after_the_timeout() {
    let d = scratch();
    let pidfile = d.path().join("pid");
    let options = ConnectOptions {
        timeout: Some(Duration::from_millis(1500)),
        ..ConnectOptions::local_server(pid_recording_server(d.path(), &pidfile))
    };
    let dir = d.path().to_path_buf();
    let (e, waited) = with_timeout(
        Duration::from_secs(60),
        "an unanswered request",
        move || {
            let session = Session::connect(&options).unwrap();
            // Idle for longer than the timeout: nothing is due, so nothing fails.
            std::thread::sleep(Duration::from_secs(2));
            assert!(session.stat(r(&dir)).unwrap().is_dir());
            let fifo = dir.join("fifo");
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
            let started = Instant::now();
            let e = expect_err(session.open(r(&fifo)), "open of a FIFO nobody writes to");
            (e, started.elapsed())
        },
    );
    assert!(matches!(e, Error::Connection(_)), "{e:?}");
    let shown = e.to_string();
    assert!(
        shown.contains("no answer from server command") && shown.contains("for 1.5 s; giving up"),
        "{shown}"
    );
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(10),
        "gave up after {waited:?}"
    );
    let server = read_pid(&pidfile);
    wait_until("the server is killed", Duration::from_secs(5), || {
        !process_alive(server)
    });
}

#[test]
fn local_server_killed_while_a_request_waits_is_a_connection_error() {
    let d = scratch();
    let pidfile = d.path().join("pid");
    let cmd = pid_recording_server(d.path(), &pidfile);
    let dir = d.path().to_path_buf();
    let (e, later) = with_timeout(
        Duration::from_secs(60),
        "request to a dying server",
        move || {
            let session = Session::connect(&ConnectOptions::local_server(cmd)).unwrap();
            assert!(session.stat(r(&dir)).unwrap().is_dir());
            let killer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                kill_pid_in(&pidfile);
            });
            let e = open_blocks_on_a_fifo(&session, &dir);
            killer.join().unwrap();
            // Every later operation fails at once the same way.
            let later = session.stat(r(&dir)).unwrap_err();
            (e, later)
        },
    );
    for e in [&e, &later] {
        assert!(matches!(e, Error::Connection(_)), "{e:?}");
        assert!(e.is_connection());
        let shown = e.to_string();
        assert!(shown.contains("server command"), "{shown}");
        assert!(
            shown.contains("killed") || shown.contains("signal"),
            "{shown}"
        );
    }
}

#[test]
fn sshd_killed_while_a_request_waits_is_a_connection_error() {
    let (e, later) = with_timeout(Duration::from_secs(60), "request to a dying sshd", || {
        let mut sshd = Sshd::start();
        let session = Session::connect(&sshd_options(&sshd)).unwrap();
        let d = scratch();
        assert!(session.stat(r(d.path())).unwrap().is_dir());
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            sshd.kill();
            sshd
        });
        let e = open_blocks_on_a_fifo(&session, d.path());
        drop(killer.join().unwrap());
        let later = session.read_dir(r(d.path())).unwrap_err();
        (e, later)
    });
    for e in [&e, &later] {
        assert!(matches!(e, Error::Connection(_)), "{e:?}");
        let shown = e.to_string();
        assert!(shown.contains("ssh to root@127.0.0.1"), "{shown}");
        assert!(shown.contains("exited with status 255"), "{shown}");
    }
}

#[test]
fn local_server_killed_between_operations_fails_the_next_one() {
    let d = scratch();
    let pidfile = d.path().join("pid");
    let cmd = pid_recording_server(d.path(), &pidfile);
    let dir = d.path().to_path_buf();
    let e = with_timeout(
        Duration::from_secs(60),
        "operation after the server died",
        move || {
            let session = Session::connect(&ConnectOptions::local_server(cmd)).unwrap();
            assert!(session.stat(r(&dir)).unwrap().is_dir());
            kill_pid_in(&pidfile);
            // Let it die completely before the next request is written.
            std::thread::sleep(Duration::from_millis(200));
            session.stat(r(&dir)).unwrap_err()
        },
    );
    assert!(matches!(e, Error::Connection(_)), "{e:?}");
    let shown = e.to_string();
    assert!(
        shown.contains("killed") || shown.contains("signal"),
        "{shown}"
    );
}

#[test]
fn sshd_killed_between_operations_fails_the_next_one() {
    let e = with_timeout(Duration::from_secs(60), "operation after sshd died", || {
        let mut sshd = Sshd::start();
        let session = Session::connect(&sshd_options(&sshd)).unwrap();
        let d = scratch();
        assert!(session.stat(r(d.path())).unwrap().is_dir());
        sshd.kill();
        // Give ssh time to notice and exit before the next request is written.
        std::thread::sleep(Duration::from_millis(1000));
        let e = session.stat(r(d.path())).unwrap_err();
        let again = session.read_dir(r(d.path())).unwrap_err();
        assert!(matches!(again, Error::Connection(_)), "{again:?}");
        e
    });
    assert!(matches!(e, Error::Connection(_)), "{e:?}");
    let shown = e.to_string();
    assert!(shown.contains("ssh to root@127.0.0.1"), "{shown}");
    assert!(shown.contains("status 255"), "{shown}");
}

#[test]
fn local_server_that_exits_is_a_connection_error_with_its_status_and_words() {
    // The "server" reads our INIT (9 bytes), says why on stderr, and exits: the error
    // carries both the exit status and the words.
    let d = scratch();
    let script = d.path().join("complain");
    write_script(
        &script,
        "head -c 9 >/dev/null\necho 'cannot serve today' >&2\nexit 3",
    );
    let e = connect_err(&ConnectOptions::local_server(script.display().to_string()));
    assert!(matches!(e, Error::Connection(_)), "{e:?}");
    assert!(e.is_connection());
    let shown = e.to_string();
    assert!(shown.contains("server command"), "{shown}");
    assert!(shown.contains("exited with status 3"), "{shown}");
    assert!(shown.contains("cannot serve today"), "{shown}");

    // One that exits without reading anything, a moment after starting.
    let script = d.path().join("quit");
    write_script(&script, "echo 'not today' >&2\nsleep 0.3\nexit 4");
    let e = connect_err(&ConnectOptions::local_server(script.display().to_string()));
    assert!(matches!(e, Error::Connection(_)), "{e:?}");
    let shown = e.to_string();
    assert!(shown.contains("not today"), "{shown}");

    // /bin/false, many times: whether it is gone before INIT is even written is a race,
    // and either way the answer is a connection error, never a panic.
    for _ in 0..30 {
        let e = connect_err(&ConnectOptions::local_server("/bin/false"));
        assert!(matches!(e, Error::Connection(_)), "{e:?}");
        assert!(e.to_string().contains("server command '/bin/false'"), "{e}");
    }
}

#[test]

fn local_server_that_exits_at_once_is_a_connection_error_with_its_status() {
    // Repeated: whether the child is gone before INIT is written (EPIPE) or after
    // (ECONNRESET on the next read) is a race.
    for _ in 0..30 {
        let e = connect_err(&ConnectOptions::local_server("/bin/false"));
        assert!(matches!(e, Error::Connection(_)), "{e:?}");
        let shown = e.to_string();
        assert!(shown.contains("server command '/bin/false'"), "{shown}");
        assert!(shown.contains("exited with status 1"), "{shown}");
    }
}

#[test]
fn local_server_printing_garbage_is_a_protocol_error_not_a_hang() {
    let d = scratch();
    // A huge length prefix, then junk; then the "server" lingers so only the bytes can
    // end the session.
    let huge = d.path().join("huge");
    write_script(&huge, "printf '\\377\\377\\377\\377hello'\nexec sleep 30");
    // A plausible length but a packet type that does not exist.
    let bad_type = d.path().join("bad_type");
    write_script(
        &bad_type,
        "printf '\\000\\000\\000\\005\\377abcd'\nexec sleep 30",
    );
    // Text, as from a shell profile that talks.
    let chatty = d.path().join("chatty");
    write_script(&chatty, "echo 'Welcome to the server!'\nexec sleep 30");
    for script in [huge, bad_type, chatty] {
        let started = Instant::now();
        let e = connect_err(&ConnectOptions::local_server(script.display().to_string()));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}: took {:?}",
            script.display(),
            started.elapsed()
        );
        assert!(
            matches!(e, Error::Connection(_) | Error::Protocol(_)),
            "{}: {e:?}",
            script.display()
        );
        let shown = e.to_string();
        assert!(
            shown.contains("protocol") || shown.contains("packet"),
            "{}: {shown}",
            script.display()
        );
    }
}

/// Requests sent without waiting for their replies (dropped handles' CLOSEs, fire-and-forget
/// SETSTATs) must all be applied before the session ends: OpenSSH's sftp-server exits at
/// end of input and drops requests it read but had not handled yet, so the session must
/// not close its side until every request is answered.
#[test]
fn requests_not_awaited_are_applied_before_the_session_ends() {
    for via in [Via::Local, Via::Sshd] {
        let Env {
            session,
            dir: tmp,
            _sshd,
        } = connect(via);
        let dir = tmp.path().to_path_buf();
        let sftp = session.sftp().clone();
        session.run(async {
            for i in 0..200 {
                let path = dir.join(format!("d{i}"));
                let req = sftpipe::proto::Request::Mkdir {
                    path: r(&path).to_vec(),
                    attrs: FileAttributes::default(),
                };
                // The reply is dropped unread.
                drop(sftp.submit(&req).await.expect("queue a MKDIR"));
            }
        });
        drop(sftp);
        drop(session);
        for i in 0..200 {
            assert!(
                dir.join(format!("d{i}")).is_dir(),
                "MKDIR {i} was dropped ({via:?})"
            );
        }
    }
}

/// STATs sent with INIT are answered with the handshake and taken by the first `stat` of
/// their path; later ones, and other paths, go to the server as usual.
fn prefetched_stats(via: Via) {
    let env = connect_with(via, |o, dir| {
        fs::write(dir.join("there"), b"12345").unwrap();
        fs::create_dir(dir.join("sub")).unwrap();
        fs::create_dir(dir.join("unused")).unwrap();
        o.prefetch.stats = vec![
            r(&dir.join("there")).to_vec(),
            r(&dir.join("absent")).to_vec(),
        ];
        o.prefetch.dirs = vec![
            r(dir).to_vec(),
            r(&dir.join("unused")).to_vec(),
            r(&dir.join("absent")).to_vec(),
        ];
        o.prefetch.guessed_dirs = vec![
            r(&dir.join("sub")).to_vec(),
            r(&dir.join("there")).to_vec(),
            r(&dir.join("gone")).to_vec(),
        ];
    });
    let (s, dir) = (&env.session, env.dir.path());
    let sftp = s.sftp();
    let there = r(&dir.join("there")).to_vec();
    let absent = r(&dir.join("absent")).to_vec();
    assert!(sftp.has_prefetched_stat(&there));
    assert!(sftp.has_prefetched_stat(&absent));
    assert!(!sftp.has_prefetched_stat(r(dir)));
    assert_eq!(s.stat(&there).unwrap().size, Some(5));
    assert!(!sftp.has_prefetched_stat(&there), "taken once");
    let e = expect_err(s.stat(&absent), "stat of a missing path");
    assert_status(
        &e,
        StatusCode::NoSuchFile,
        io::ErrorKind::NotFound,
        &dir.join("absent"),
    );
    // The next STAT asks the server again and sees the change.
    fs::write(dir.join("there"), b"1234567").unwrap();
    assert_eq!(s.stat(&there).unwrap().size, Some(7));
    // The limits asked for right behind INIT arrived as well.
    assert!(s.limits().is_some_and(|l| l.max_open_handles > 0));
    // A prefetched OPENDIR serves the listing; a missing directory fails as usual.
    let mut names: Vec<Vec<u8>> = s
        .read_dir(r(dir))
        .unwrap()
        .into_iter()
        .map(|e| e.filename)
        .collect();
    names.sort();
    assert_eq!(names, [&b"sub"[..], b"there", b"unused"]);
    let e = expect_err(
        s.read_dir(r(&dir.join("absent"))),
        "listing a missing directory",
    );
    assert_status(
        &e,
        StatusCode::NoSuchFile,
        io::ErrorKind::NotFound,
        &dir.join("absent"),
    );
    // Guessed OPENDIRs: a directory lists from the guess; a file or a missing path
    // fails (OpenSSH says NO_SUCH_FILE for both, which is taken as the answer).
    let mut guessed = sftp.guessed_dirs();
    guessed.sort();
    assert_eq!(guessed.len(), 3);
    fs::write(dir.join("sub/new"), b"").unwrap();
    let names: Vec<Vec<u8>> = s
        .read_dir(r(&dir.join("sub")))
        .unwrap()
        .into_iter()
        .map(|e| e.filename)
        .collect();
    assert!(names.is_empty() || names == [&b"new"[..]], "{names:?}");
    expect_err(s.read_dir(r(&dir.join("there"))), "listing a file");
    fs::create_dir(dir.join("gone")).unwrap();
    let e = expect_err(
        s.read_dir(r(&dir.join("gone"))),
        "a guess that found nothing",
    );
    assert!(e.is_not_found(), "{e}");
    assert!(sftp.guessed_dirs().is_empty(), "each guess taken once");
    assert_eq!(s.read_dir(r(&dir.join("gone"))).unwrap().len(), 0);
    // The one nobody took is closed on request, and the session goes on.
    s.run(sftp.discard_prefetched());
    assert_eq!(s.read_dir(r(&dir.join("unused"))).unwrap().len(), 0);
}

#[test]
fn prefetched_stats_via_local_server() {
    prefetched_stats(Via::Local);
}

#[test]
fn prefetched_stats_via_sshd() {
    prefetched_stats(Via::Sshd);
}

// ---------------------------------------------------------------------------------------
// Requests above the server's packet limit
// ---------------------------------------------------------------------------------------

/// A path of exactly `len` bytes inside `dir`.
fn path_of_len(dir: &Path, len: usize) -> Vec<u8> {
    let mut p = r(dir).to_vec();
    p.push(b'/');
    p.resize(len, b'x');
    p
}

/// sftp-server exits on a packet above its limit (256 KiB), failing everything in flight:
/// such a request must fail alone, before anything is sent, naming the operation and path.
fn requests_too_large_for_the_server_fail_alone(via: Via) {
    let env = connect_with(via, |o, dir| {
        // Asked with the handshake, it would kill the connection before any operation.
        o.prefetch.stats = vec![path_of_len(dir, 300_000)];
        o.prefetch.dirs = vec![path_of_len(dir, 300_000)];
    });
    let (s, dir) = (&env.session, env.dir.path());
    let sftp = s.sftp();
    let huge = path_of_len(dir, 300_000);
    let limit = s
        .limits()
        .expect("OpenSSH states its limits")
        .max_packet_length;
    assert_eq!(sftp.max_request() as u64, limit);
    let e = s.stat(&huge).unwrap_err();
    match &e {
        Error::RequestTooLarge { op, size, max, .. } => {
            assert_eq!((*op, *size, *max as u64), ("stat", 300_000 + 13, limit))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("stat '{}/xxx", dir.display())),
        "{shown}"
    );
    assert!(
        shown.ends_with(&format!(
            "request too large for the server: 300013 bytes, the server accepts at most {limit}"
        )),
        "{shown}"
    );
    assert!(shown.len() < 1000, "the path is shortened: {shown}");
    // The connection goes on, and a listing of the same path is refused the same way.
    assert!(s.stat(r(dir)).unwrap().is_dir());
    let e = s.read_dir(&huge).unwrap_err();
    assert!(
        matches!(e, Error::RequestTooLarge { op: "opendir", .. }),
        "{e:?}"
    );

    // A WRITE above the limit fails alone too, naming the file; the handle stays usable.
    let file = dir.join("f");
    s.run(async {
        let flags = OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC;
        let h = sftp
            .open(r(&file), flags, &FileAttributes::default())
            .await?;
        let e = sftp.write(&h, 0, &vec![7; 300_000]).await.unwrap_err();
        assert!(
            matches!(e, Error::RequestTooLarge { op: "write", .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains(&*file.to_string_lossy()), "{e}");
        let most = sftp.max_write_chunk();
        sftp.write(&h, 0, &vec![7; most]).await?;
        sftp.close(h).await
    })
    .unwrap();
    let most = sftp.max_write_chunk() as u64;
    assert!(most <= s.limits().unwrap().max_write_length);
    assert_eq!(fs::metadata(&file).unwrap().len(), most);
}

#[test]
fn requests_too_large_for_the_server_fail_alone_via_local_server() {
    requests_too_large_for_the_server_fail_alone(Via::Local);
}

#[test]
fn requests_too_large_for_the_server_fail_alone_via_sshd() {
    requests_too_large_for_the_server_fail_alone(Via::Sshd);
}

/// The descriptors a process holds open.
fn open_fds(pid: &str) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the server's descriptors")
        .count()
}

#[test]
fn a_close_dropped_before_it_was_sent_still_closes_the_handle() {
    use futures_util::FutureExt;
    use sftpipe::proto::Request;
    const FILES: usize = 20;
    let d = scratch();
    let pidfile = d.path().join("pid");
    let session = Session::connect(&ConnectOptions::local_server(pid_recording_server(
        d.path(),
        &pidfile,
    )))
    .unwrap();
    let src = d.path().join("src");
    write_file(&src, b"data");
    let sink = d.path().join("sink");
    let pid = fs::read_to_string(&pidfile).unwrap().trim().to_string();
    let before = open_fds(&pid);
    let sftp = session.sftp().clone();
    session
        .run(async {
            let mut handles = Vec::new();
            for _ in 0..FILES {
                handles.push(
                    sftp.open(r(&src), OpenFlags::READ, &Default::default())
                        .await?,
                );
            }
            let flags = OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC;
            let w = sftp.open(r(&sink), flags, &Default::default()).await?;
            // Queue 8 MiB of WRITEs without yielding to the event loop: the outgoing
            // queue is then above its high-water mark, and a CLOSE waits for room.
            let chan = sftp.channel();
            for i in 0..64u64 {
                let data = vec![1; 128 * 1024];
                let write = Request::Write {
                    handle: w.raw().to_vec(),
                    offset: i * data.len() as u64,
                    data,
                };
                chan.abandon(chan.send(&write)?);
            }
            for h in handles {
                // Polled once, then dropped while it waits for room.
                let pending = sftp.close(h).now_or_never();
                assert!(pending.is_none(), "the CLOSE did not have to wait for room");
            }
            sftp.close(w).await?;
            // Answered after everything queued before it (the server goes in order).
            sftp.stat(r(d.path())).await
        })
        .unwrap();
    assert_eq!(fs::metadata(&sink).unwrap().len(), 8 << 20);
    assert_eq!(
        open_fds(&pid),
        before,
        "server handles leaked by dropped closes"
    );
}
