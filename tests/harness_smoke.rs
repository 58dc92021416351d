//! Proves the test harness in `tests/common`: the throwaway sshd accepts the real OpenSSH
//! `ssh` and `sftp` clients, as root and as an unprivileged user, and dies when told to.

mod common;

use common::{Sshd, TEST_USER};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn explain(what: &str, out: &Output, sshd: &Sshd) -> String {
    format!(
        "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- sshd log ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        sshd.log()
    )
}

/// Runs OpenSSH's `sftp` in batch mode against `sshd` with `batch` on stdin.
fn sftp_batch(sshd: &Sshd, batch: &str) -> Output {
    let mut child = Command::new("sftp")
        .args(["-b", "-"])
        .args(sshd.sftp_args())
        .arg(sshd.destination())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sftp");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(batch.as_bytes())
        .expect("write sftp batch");
    child.wait_with_output().expect("wait for sftp")
}

/// A directory on the local disk that `sshd`'s user can write to.
fn scratch_for(sshd: &Sshd) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    sshd.chown_to_user(d.path());
    d
}

#[test]
fn ssh_runs_a_command_as_root() {
    if !common::sshd_available() {
        return;
    }
    let sshd = Sshd::start();
    assert_eq!(sshd.host(), "127.0.0.1");
    assert_eq!(sshd.user(), "root");
    let out = Command::new("ssh")
        .args(sshd.ssh_args())
        .args(["--", "127.0.0.1", "echo", "hi"])
        .stdin(Stdio::null())
        .output()
        .expect("run ssh");
    assert!(out.status.success(), "{}", explain("ssh", &out, &sshd));
    assert_eq!(text(&out.stdout), "hi\n");
    assert!(
        sshd.log().contains("Accepted publickey for root"),
        "{}",
        sshd.log()
    );
}

#[test]
fn ssh_args_are_the_documented_options() {
    if !common::sshd_available() {
        return;
    }
    let sshd = Sshd::start();
    let port = sshd.port().to_string();
    let key = sshd.key_path().display().to_string();
    let expected: Vec<&str> = vec![
        "-p",
        &port,
        "-i",
        &key,
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentitiesOnly=yes",
    ];
    assert_eq!(sshd.ssh_args(), expected);
    assert!(sshd.key_path().exists());
}

#[test]
fn openssh_sftp_puts_a_file_as_root() {
    if !common::sshd_available() {
        return;
    }
    let sshd = Sshd::start();
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let src = local.path().join("sub/payload.bin");
    let data = common::random_bytes(300_000, 7);
    common::write_file(&src, &data);
    let dst = remote.path().join("landed.bin");

    let out = sftp_batch(&sshd, &format!("put {} {}\n", src.display(), dst.display()));
    assert!(out.status.success(), "{}", explain("sftp put", &out, &sshd));
    assert_eq!(common::read_file(&dst), data);
    assert_eq!(common::sha256_file(&dst), common::sha256_file(&src));
}

#[test]
fn unprivileged_user_logs_in_and_modes_are_enforced() {
    if !common::sshd_available() {
        return;
    }
    let sshd = Sshd::start_as(TEST_USER);
    assert_eq!(sshd.user(), TEST_USER);

    let out = sshd.ssh("id -un");
    assert!(
        out.status.success(),
        "{}",
        explain("ssh id -un", &out, &sshd)
    );
    assert_eq!(text(&out.stdout).trim(), TEST_USER);

    // A directory handed to the user accepts an upload...
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("f.txt");
    common::write_file(&src, b"unprivileged\n");
    let mine = scratch_for(&sshd);
    let dst = mine.path().join("f.txt");
    let out = sftp_batch(&sshd, &format!("put {} {}\n", src.display(), dst.display()));
    assert!(out.status.success(), "{}", explain("sftp put", &out, &sshd));
    assert_eq!(common::read_file(&dst), b"unprivileged\n");

    // ...while a root-owned 0755 directory refuses it, which root alone would not show.
    let roots = tempfile::tempdir().unwrap();
    fs_chmod(roots.path(), 0o755);
    let denied = roots.path().join("f.txt");
    let out = sftp_batch(
        &sshd,
        &format!("put {} {}\n", src.display(), denied.display()),
    );
    assert!(
        !out.status.success(),
        "{}",
        explain("sftp put", &out, &sshd)
    );
    assert!(
        text(&out.stderr)
            .to_lowercase()
            .contains("permission denied"),
        "{}",
        explain("sftp put", &out, &sshd)
    );
    assert!(!denied.exists());
}

#[test]
fn parallel_servers_for_the_test_user_start_without_racing() {
    if !common::sshd_available() {
        return;
    }
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let sshd = Sshd::start_as(TEST_USER);
                let out = sshd.ssh("id -un");
                assert!(
                    out.status.success(),
                    "{}",
                    explain("ssh id -un", &out, &sshd)
                );
                assert_eq!(text(&out.stdout).trim(), TEST_USER);
                sshd.port()
            })
        })
        .collect();
    let mut ports: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4, "two servers shared a port");
}

#[test]
fn kill_drops_open_sessions_and_refuses_new_ones() {
    if !common::sshd_available() {
        return;
    }
    let mut sshd = Sshd::start();
    assert!(sshd.is_running());
    let mut session = Command::new("ssh")
        .args(sshd.ssh_args())
        .args(["--", "127.0.0.1", "echo up; sleep 60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ssh");
    // Wait until the session runs, so its server-side processes exist.
    let mut first = [0u8; 3];
    std::io::Read::read_exact(session.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"up\n");

    sshd.kill();
    assert!(!sshd.is_running());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = session.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = session.kill();
            panic!("ssh session survived the server being killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());

    let out = sshd.ssh("true");
    assert!(!out.status.success(), "a killed server still answered");
    sshd.kill(); // idempotent
}

#[test]
fn helpers_behave() {
    assert_eq!(common::random_bytes(1000, 1), common::random_bytes(1000, 1));
    assert_ne!(common::random_bytes(64, 1), common::random_bytes(64, 2));
    assert_eq!(common::random_bytes(13, 0).len(), 13);
    assert!(common::random_bytes(0, 5).is_empty());

    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("a/b/c.txt");
    common::write_file(&f, b"abc");
    assert_eq!(common::read_file(&f), b"abc");
    assert_eq!(
        common::sha256_file(&f),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );

    if common::sshd_available() {
        let p = common::sftp_server_path();
        assert!(p.is_absolute() && p.exists(), "{}", p.display());
    }
    let bin = common::sftpipe_bin();
    assert!(bin.exists(), "{} was not built", bin.display());
}

fn fs_chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}
