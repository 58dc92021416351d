//! Several SFTP channels per session (`--connections`), against the real sshd: striped big
//! files, files spread over channels, a channel or the master killed mid-run, a server
//! that refuses channels (MaxSessions), one password prompt for all channels, no control
//! socket left behind, and the cross-channel ordering rules of `sftpipe::pool` with a
//! server that handles one channel's requests late.

mod common;

use common::Sshd;
use common::askpass::{Askpass, password_client_args, password_sshd};
use common::control_dir::{assert_no_control_dirs, fresh_tmpdir, use_tmpdir};
use common::delayed_server::DelayedServer;
use common::ssh_recorder::SshRecorder;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// sftpipe's smallest striped file (`sftpipe::pool::STRIPE_MIN`).
const STRIPE_MIN: usize = 16 << 20;
/// OpenSSH's sftp-server's `max-write-length`: the upload chunk.
const CHUNK: usize = 261_120;

fn explain(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `sftpipe -v --eager-connections [sshd options] ARGS` with TMPDIR set to `tmp` (where the
/// control directory goes), through the recording ssh when given.
fn sftpipe(sshd: &Sshd, tmp: &Path, recorder: Option<&SshRecorder>, args: &[&str]) -> Command {
    let mut cmd = Command::new(common::sftpipe_bin());
    if let Some(r) = recorder {
        cmd.arg("-S").arg(r.program());
    }
    cmd.args(sshd.sftp_args())
        .args(["-v", "--eager-connections"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    use_tmpdir(&mut cmd, tmp);
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run sftpipe")
}

/// Bytes each extra channel moved (sent plus received), from `-v`'s closing lines
/// ("channel N: X bytes sent, Y received").
fn extra_channel_bytes(stderr: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| {
            let rest = l.split("channel ").nth(1)?;
            let (_, rest) = rest.split_once(": ")?;
            let (sent, received) = rest
                .strip_suffix(" received")?
                .split_once(" bytes sent, ")?;
            Some(sent.parse::<u64>().ok()? + received.parse::<u64>().ok()?)
        })
        .collect()
}

fn remote(sshd: &Sshd, path: &Path) -> String {
    format!("{}:{}", sshd.destination(), path.display())
}

/// A file of `n` random bytes.
fn data_file(dir: &Path, name: &str, n: usize, seed: u64) -> PathBuf {
    let p = dir.join(name);
    common::write_file(&p, common::random_bytes(n, seed));
    p
}

#[test]
fn striped_files_are_identical_at_range_and_chunk_boundaries_both_ways() {
    if !common::sshd_available() {
        return;
    }
    let sshd = Sshd::start();
    let work = common::tmpfs_tempdir("channels");
    let tmp = fresh_tmpdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let sizes = [
        STRIPE_MIN - 1,
        STRIPE_MIN,
        STRIPE_MIN + 1,
        STRIPE_MIN + 3 * CHUNK + 7,
        STRIPE_MIN + 8 * CHUNK - 1,
        40 << 20,
    ];
    for (i, n) in sizes.iter().enumerate() {
        data_file(&src, &format!("f{i}"), *n, i as u64 + 1);
    }
    let up = work.path().join("up");
    let out = run(sftpipe(&sshd, tmp.path(), None, &["put", "-r"])
        .arg(&src)
        .arg(remote(&sshd, &up)));
    assert!(out.status.success(), "{}", explain("put -r", &out));
    let moved: u64 = extra_channel_bytes(&out.stderr).iter().sum();
    assert!(
        moved > (8 << 20),
        "the other channels carried {moved} bytes\n{}",
        explain("put -r", &out)
    );
    let diffs = common::tree::differences(&src, &up, 5);
    assert!(diffs.is_empty(), "{diffs:?}");

    let down = work.path().join("down");
    let out = run(sftpipe(&sshd, tmp.path(), None, &["get", "-r"])
        .arg(remote(&sshd, &up))
        .arg(&down));
    assert!(out.status.success(), "{}", explain("get -r", &out));
    let moved: u64 = extra_channel_bytes(&out.stderr).iter().sum();
    assert!(moved > (8 << 20), "{}", explain("get -r", &out));
    for (i, n) in sizes.iter().enumerate() {
        let name = format!("f{i}");
        let got = common::read_file(down.join(&name));
        assert_eq!(got.len(), *n, "{name}");
        assert!(got == common::read_file(src.join(&name)), "{name} differs");
    }
    assert_no_control_dirs(tmp.path());
}

/// Starts `cmd` and, once a file in `dir` ending in `suffix` holds more than `bytes`, kills
/// the ssh that `pick` chooses among the recorded ones; returns sftpipe's output.
fn kill_an_ssh_once_bytes_moved(
    mut cmd: Command,
    recorder: &SshRecorder,
    dir: &Path,
    suffix: &str,
    bytes: u64,
    pick: impl Fn(&common::ssh_recorder::SshInvocation) -> bool,
) -> Output {
    let child: Child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sftpipe");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let grown = fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
            e.file_name().to_string_lossy().ends_with(suffix)
                && e.metadata().is_ok_and(|m| m.len() > bytes)
        });
        if grown {
            let victim = recorder
                .invocations()
                .into_iter()
                .find(|c| c.alive() && pick(c))
                .expect("an ssh to kill");
            common::send_signal(victim.pid, "KILL");
            break;
        }
        assert!(Instant::now() < deadline, "no {suffix} file grew");
        // Polls the size: the kill is triggered by bytes written, not by time.
        std::thread::sleep(Duration::from_millis(1));
    }
    common::output_within(child, Duration::from_secs(120))
}

/// A 96 MiB file to upload into an empty directory, over a fresh sshd, with TMPDIR set to
/// a fresh directory and (for the kill tests) the recording ssh.
struct BigUpload {
    sshd: Sshd,
    work: tempfile::TempDir,
    tmp: tempfile::TempDir,
    src: PathBuf,
    dest_dir: PathBuf,
    dest: PathBuf,
}

impl BigUpload {
    fn new(seed: u64) -> BigUpload {
        let sshd = Sshd::start();
        let work = common::tmpfs_tempdir("channels");
        let src = data_file(work.path(), "big", 96 << 20, seed);
        let dest_dir = work.path().join("dest");
        fs::create_dir(&dest_dir).unwrap();
        let dest = dest_dir.join("big");
        BigUpload {
            sshd,
            tmp: fresh_tmpdir(),
            work,
            src,
            dest_dir,
            dest,
        }
    }

    /// `sftpipe ... put ARGS SRC DEST`.
    fn put(&self, recorder: Option<&SshRecorder>, args: &[&str]) -> Command {
        let mut cmd = sftpipe(&self.sshd, self.tmp.path(), recorder, &["put"]);
        cmd.args(args)
            .arg(&self.src)
            .arg(remote(&self.sshd, &self.dest));
        cmd
    }

    fn copy_is_exact(&self) -> bool {
        common::read_file(&self.dest) == common::read_file(&self.src)
    }
}

#[test]
fn a_channel_killed_mid_transfer_leaves_the_others_to_finish() {
    if !common::sshd_available() {
        return;
    }
    let up = BigUpload::new(42);
    let (sshd, work, tmp) = (&up.sshd, &up.work, &up.tmp);
    let recorder = SshRecorder::new(work.path());
    let cmd = up.put(Some(&recorder), &[]);
    let out = kill_an_ssh_once_bytes_moved(
        cmd,
        &recorder,
        &up.dest_dir,
        ".sftpipe-tmp",
        16 << 20,
        |c| c.is_control_client(),
    );
    assert!(out.status.success(), "{}", explain("put", &out));
    assert!(up.copy_is_exact(), "the copy differs");
    assert_no_control_dirs(tmp.path());

    // The same for a tree of files spread over the channels, downloading.
    let tree = work.path().join("tree");
    fs::create_dir(&tree).unwrap();
    for i in 0..40 {
        data_file(&tree, &format!("f{i:02}"), 3 << 20, 100 + i);
    }
    let recorder = SshRecorder::new(&work.path().join("rec2"));
    let local = work.path().join("local");
    fs::create_dir(&local).unwrap();
    let mut cmd = sftpipe(sshd, tmp.path(), Some(&recorder), &["get", "-r"]);
    cmd.arg(remote(sshd, &tree)).arg(&local);
    let out = kill_an_ssh_once_bytes_moved(cmd, &recorder, &local.join("tree"), "", 1 << 20, |c| {
        c.is_control_client()
    });
    assert!(out.status.success(), "{}", explain("get -r", &out));
    let diffs = common::tree::differences(&tree, &local.join("tree"), 5);
    assert!(diffs.is_empty(), "{diffs:?}");
}

#[test]
fn killing_the_master_fails_cleanly_and_a_rerun_converges() {
    if !common::sshd_available() {
        return;
    }
    let up = BigUpload::new(7);
    let (dest_dir, dest, tmp) = (&up.dest_dir, &up.dest, &up.tmp);
    let recorder = SshRecorder::new(up.work.path());
    let cmd = up.put(Some(&recorder), &[]);
    let out =
        kill_an_ssh_once_bytes_moved(cmd, &recorder, dest_dir, ".sftpipe-tmp", 16 << 20, |c| {
            c.is_master()
        });
    assert_eq!(out.status.code(), Some(5), "{}", explain("put", &out));
    assert!(!dest.exists(), "a partial file under the final name");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().filter(|l| l.contains("error")).count() <= 2,
        "{stderr}"
    );
    assert_no_control_dirs(tmp.path());

    // `-a` also removes what the killed run left (a partial file shorter than the window
    // that is resumed from is not worth continuing, nor ours to overwrite without it).
    let out = run(&mut up.put(None, &["-a"]));
    assert!(out.status.success(), "{}", explain("rerun", &out));
    assert!(up.copy_is_exact());
    let left: Vec<_> = fs::read_dir(dest_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("big")]);
    assert_no_control_dirs(tmp.path());
}

#[test]
fn a_server_allowing_two_sessions_gets_two_channels_over_one_login() {
    if !common::sshd_available() {
        return;
    }
    let sshd = Sshd::start_with(&["MaxSessions 2"]);
    let work = common::tmpfs_tempdir("channels");
    let tmp = fresh_tmpdir();
    let src = data_file(work.path(), "big", 40 << 20, 3);
    let dest = work.path().join("copy");
    let out = run(
        sftpipe(&sshd, tmp.path(), None, &["--connections", "8", "put"])
            .arg(&src)
            .arg(remote(&sshd, &dest)),
    );
    assert!(out.status.success(), "{}", explain("put", &out));
    assert!(common::read_file(&dest) == common::read_file(&src));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not opened, going on with the others"),
        "{stderr}"
    );
    assert_eq!(extra_channel_bytes(&out.stderr).len(), 1, "{stderr}");
    let logins = sshd.log().matches("Accepted publickey").count();
    assert_eq!(logins, 1, "{}", sshd.log());
    assert_no_control_dirs(tmp.path());
}

#[test]
fn eight_channels_ask_for_the_password_once() {
    if !common::sshd_available() {
        return;
    }
    let (sshd, password) = password_sshd(&[]);
    let work = tempfile::tempdir().unwrap();
    let tmp = fresh_tmpdir();
    let dir = tempfile::tempdir().unwrap();
    sshd.chown_to_user(dir.path());
    let src = data_file(work.path(), "big", 40 << 20, 9);
    let dest = dir.path().join("copy");
    let askpass = Askpass::new(work.path(), &password);
    let mut cmd = askpass.command(common::sftpipe_bin());
    cmd.args(password_client_args(&sshd))
        .args(["-v", "--eager-connections", "--connections", "8", "put"])
        .arg(&src)
        .arg(remote(&sshd, &dest))
        .env_remove("RUST_LOG");
    let out = run(use_tmpdir(&mut cmd, tmp.path()));
    assert!(out.status.success(), "{}", explain("put", &out));
    assert!(common::read_file(&dest) == common::read_file(&src));
    assert_eq!(askpass.count(), 1, "prompts: {:?}", askpass.prompts());
    assert_eq!(
        extra_channel_bytes(&out.stderr).len(),
        7,
        "{}",
        explain("put", &out)
    );
    assert_no_control_dirs(tmp.path());
}

#[test]
fn no_control_socket_is_left_after_failure_or_signals() {
    if !common::sshd_available() {
        return;
    }
    let sshd = Sshd::start();
    let work = common::tmpfs_tempdir("channels");
    let tmp = fresh_tmpdir();

    // A failing command (no such remote file) after a successful connection.
    let out = run(sftpipe(&sshd, tmp.path(), None, &["get"])
        .arg(remote(&sshd, &work.path().join("missing")))
        .arg(work.path().join("x")));
    assert_eq!(out.status.code(), Some(3), "{}", explain("get", &out));
    assert_no_control_dirs(tmp.path());

    // A connection that fails (nothing listens there).
    let mut cmd = Command::new(common::sftpipe_bin());
    cmd.args([
        "-P",
        "1",
        "-o",
        "StrictHostKeyChecking=no",
        "--eager-connections",
    ])
    .args(["ls", "127.0.0.1:/"])
    .stdin(Stdio::null());
    let out = run(use_tmpdir(&mut cmd, tmp.path()));
    assert!(!out.status.success(), "{}", explain("ls", &out));
    assert_no_control_dirs(tmp.path());

    // Interrupted mid-transfer by SIGINT and by SIGTERM. A test run started as a background
    // job of a non-interactive shell has SIGINT ignored, and sftpipe keeps an ignored
    // signal ignored (as under nohup): the children get the default back.
    // SAFETY: sets the default disposition; no handler runs, nothing else in this process
    // relies on SIGINT being ignored.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    let src = data_file(work.path(), "big", 96 << 20, 5);
    for (sig, code) in [("INT", 130), ("TERM", 143)] {
        let dest_dir = work.path().join(format!("dest-{sig}"));
        fs::create_dir(&dest_dir).unwrap();
        // Through a 100 ms relay: on loopback the whole file can land between the check
        // below and the signal, and the run then ends 0 (with a window-bound path the
        // remaining 88 MiB take half a second, hundreds of times the gap).
        let relay = format!(
            "ProxyCommand=/usr/bin/python3 '{}/contrib/bench/delay-relay.py' 127.0.0.1 {} 0.050",
            env!("CARGO_MANIFEST_DIR"),
            sshd.port()
        );
        let mut cmd = sftpipe(&sshd, tmp.path(), None, &["-o", &relay, "put"]);
        cmd.arg(&src)
            .arg(remote(&sshd, &dest_dir.join("big")))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("start sftpipe");
        common::wait_until("bytes to move", Duration::from_secs(60), || {
            common::dir_file_bytes(&dest_dir) > (8 << 20)
        });
        common::send_signal(child.id(), sig);
        let out = common::output_within(child, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(code), "{}", explain(sig, &out));
        assert!(!dest_dir.join("big").exists());
        assert_no_control_dirs(tmp.path());
    }
}

/// Rule 2 of `sftpipe::pool`: the second server started handles every request 150 ms late.
/// A fresh tree's MKDIRs may go out on either channel; nothing beneath a directory may go
/// out on the other before the MKDIR is answered, and directory times are set after the
/// files in them landed. Either mistake shows: a failed OPEN, or a directory time that
/// a late file bumped.
#[test]
fn the_ordering_rules_hold_with_one_channel_late() {
    let work = common::tmpfs_tempdir("channels");
    let logged = common::LoggedSftpServer::new(work.path());
    let server = DelayedServer::with_server(work.path(), 2, 150, Path::new(&logged.command()));
    let src = work.path().join("src");
    for d in 0..6 {
        for e in 0..3 {
            let dir = src.join(format!("d{d}/e{e}"));
            fs::create_dir_all(&dir).unwrap();
            // Five a directory, over three channels: the first file of a directory (the
            // one that creates it) lands on each channel in turn.
            for f in 0..5 {
                common::write_file(dir.join(format!("f{f}")), format!("{d}{e}{f}"));
            }
        }
    }
    // Old directory times, so a bump by a late file cannot go unseen.
    let old = fs::FileTimes::new()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000));
    for entry in walk_dirs(&src) {
        fs::File::open(&entry).unwrap().set_times(old).unwrap();
    }
    // An existing destination: no staging, so directory times go out early, behind the
    // last request that changes each directory.
    let dest = work.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let out = Command::new(common::sftpipe_bin())
        .args([
            "-D",
            &server.command(),
            "-v",
            "--eager-connections",
            "--connections",
            "3",
        ])
        .arg("mirror")
        .arg(&src)
        .arg(&dest)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run sftpipe");
    assert!(out.status.success(), "{}", explain("mirror", &out));
    assert!(server.started() >= 2);
    let late: u64 = extra_channel_bytes(&out.stderr).iter().sum();
    assert!(late > 0, "{}", explain("mirror", &out));
    let diffs = common::tree::differences(&src, &dest, 5);
    assert!(diffs.is_empty(), "{diffs:?}");
    // Each file opened once: an OPEN sent beneath a MKDIR not yet handled would fail
    // and be sent again.
    let log = logged.take_log();
    let opens = log.lines().filter(|l| l.contains("open \"")).count();
    assert_eq!(opens, 90, "{log}");
    for dir in walk_dirs(&src) {
        let rel = dir.strip_prefix(&src).unwrap();
        let got = fs::metadata(dest.join(rel)).unwrap().mtime();
        assert_eq!(got, 1_000_000_000, "{} time", rel.display());
    }
}

fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        for e in fs::read_dir(&out[i]).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                out.push(e.path());
            }
        }
        i += 1;
    }
    out
}

/// `-a` and the resumed temporary file of a striped transfer: chunks of several channels
/// were in flight when sftpipe was killed (holes below the end of the partial file); the
/// rerun continues a budget below that end and the result is exact.
#[test]
fn a_striped_transfer_killed_midway_resumes_exactly() {
    if !common::sshd_available() {
        return;
    }
    let up = BigUpload::new(11);
    let (sshd, work, tmp, src, dest) = (&up.sshd, &up.work, &up.tmp, &up.src, &up.dest);

    // Upload killed, then plain put (which continues its own temporary file).
    let mut cmd = up.put(None, &[]);
    let partial = common::kill_once_a_file_grows(&mut cmd, &up.dest_dir, ".sftpipe-tmp", 48 << 20);
    assert!(partial.exists() && !dest.exists());
    let out = run(&mut up.put(None, &[]));
    assert!(out.status.success(), "{}", explain("put again", &out));
    assert!(up.copy_is_exact(), "upload differs");
    assert!(!partial.exists(), "the temporary file is left");

    // Download killed, then get -a.
    let local_dir = work.path().join("local");
    fs::create_dir(&local_dir).unwrap();
    let local = local_dir.join("big");
    let mut cmd = sftpipe(sshd, tmp.path(), None, &["get"]);
    cmd.arg(remote(sshd, dest)).arg(&local);
    common::kill_once_a_file_grows(&mut cmd, &local_dir, "big", 48 << 20);
    let out = run(sftpipe(sshd, tmp.path(), None, &["get", "-a"])
        .arg(remote(sshd, dest))
        .arg(&local));
    assert!(out.status.success(), "{}", explain("get -a", &out));
    assert!(
        common::read_file(&local) == common::read_file(src),
        "download differs"
    );
    assert_no_control_dirs(tmp.path());
}
