//! Proves the `tests/common` scaffolding for several channels per session (#15) against the
//! real sshd and the real OpenSSH clients: extra sshd config, password logins through a
//! counting askpass, the recording `-S` program, the delaying `-D` server and the check for
//! leftover control directories.

mod common;

use common::Sshd;
use common::askpass::{Askpass, PASSWORD_USER, password_ssh_args, password_sshd};
use common::control_dir::{assert_no_control_dirs, fresh_tmpdir, leftovers};
use common::delayed_server::DelayedServer;
use common::ssh_recorder::SshRecorder;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn explain(what: &str, out: &Output, sshd: &Sshd) -> String {
    format!(
        "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- sshd log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    )
}

/// `program ssh-options -S control -o ControlMaster=no dest ARGS...` through `sshd`.
///
/// When the master's server refuses the session (MaxSessions), ssh says "Session open
/// refused by peer" and then quietly connects on its own (a new login: a second password
/// prompt). `ProxyCommand=false` makes that fallback fail instead; the mux path never uses
/// the ProxyCommand.
fn via_master(program: &Path, sshd: &Sshd, control: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(sshd.ssh_args())
        .arg("-S")
        .arg(control)
        .args(["-o", "ControlMaster=no", "-o", "ProxyCommand=false", "--"])
        .arg(sshd.destination())
        .args(args)
        .stdin(Stdio::null());
    cmd
}

#[test]
fn extra_sshd_config_limits_sessions_and_recorder_sees_master_and_clients() {
    if !common::sshd_available() {
        return;
    }
    let sshd = Sshd::start_with(&["MaxSessions 1"]);
    let config = std::fs::read_to_string(sshd.dir().join("sshd_config")).expect("sshd_config");
    assert!(config.starts_with("MaxSessions 1\n"), "{config}");

    let work = tempfile::tempdir().expect("tempdir");
    let tmp = fresh_tmpdir();
    let recorder = SshRecorder::new(work.path());
    let cm_dir = tmp.path().join("sftpipe-cm.selftest");
    std::fs::create_dir(&cm_dir).expect("mkdir control dir");
    let control = cm_dir.join("cm");

    // The master: no session of its own (-N), listening on the control socket.
    let mut master = Command::new(recorder.program())
        .args(sshd.ssh_args())
        .args(["-M", "-N", "-S"])
        .arg(&control)
        .args(["-o", "ControlPersist=no", "--"])
        .arg(sshd.destination())
        .stdin(Stdio::null())
        .spawn()
        .expect("start the master");
    let _kill = common::KillOnDrop(master.id());
    common::wait_until("the control socket", Duration::from_secs(30), || {
        control.exists()
    });

    // One session through the master holds the only slot (its `cat` ends when the channel
    // closes: nothing outlives the test); a second one is refused.
    let mut holder = via_master(
        recorder.program(),
        &sshd,
        &control,
        &["echo started; exec cat"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .expect("start the first session");
    let _kill_holder = common::KillOnDrop(holder.id());
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the first session");
    assert_eq!(line, "started\n");
    let connections = sshd.log().matches("Connection from").count();
    let second = via_master(recorder.program(), &sshd, &control, &["echo reached"])
        .output()
        .expect("run the second session");
    let why = explain("second", &second, &sshd);
    assert!(!second.status.success(), "{why}");
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("Session open refused"),
        "{why}"
    );
    assert!(second.stdout.is_empty(), "{why}");
    assert_eq!(
        sshd.log().matches("Connection from").count(),
        connections,
        "{why}"
    );

    let calls = recorder.wait_for(3);
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[0].pid, master.id(), "the recorded pid is ssh's own");
    assert!(
        calls[0].is_master() && !calls[0].is_control_client(),
        "{calls:?}"
    );
    for c in &calls[1..] {
        assert!(c.is_control_client() && !c.is_master(), "{c:?}");
        assert_eq!(c.control_path().as_deref(), control.to_str());
        assert_eq!(c.option("controlmaster").as_deref(), Some("no"));
    }
    assert!(calls[1].alive());

    // While the master runs its socket is a leftover; once it is gone, nothing is.
    assert!(
        leftovers(tmp.path()).contains(&control),
        "{:?}",
        leftovers(tmp.path())
    );
    common::send_signal(calls[1].pid, "KILL");
    common::send_signal(calls[0].pid, "TERM");
    let _ = holder.wait();
    let _ = master.wait();
    assert!(!calls[0].alive());
    let still = std::panic::catch_unwind(|| assert_no_control_dirs(tmp.path()));
    assert!(
        still.is_err(),
        "the empty sftpipe-cm.* directory counts as left behind"
    );
    std::fs::remove_dir_all(&cm_dir).expect("remove control dir");
    assert_no_control_dirs(tmp.path());
}

#[test]
fn password_login_asks_the_counting_askpass_once() {
    if !common::sshd_available() {
        return;
    }
    let (sshd, password) = password_sshd(&[]);
    assert_eq!(sshd.user(), PASSWORD_USER);
    // Keys are not accepted: only the password gets in.
    let by_key = sshd.ssh("true");
    assert!(
        !by_key.status.success(),
        "{}",
        explain("key login", &by_key, &sshd)
    );

    let work = tempfile::tempdir().expect("tempdir");
    let askpass = Askpass::new(work.path(), &password);
    assert_eq!(askpass.count(), 0);
    let out = askpass
        .command("ssh")
        .args(password_ssh_args(&sshd))
        .arg("--")
        .arg(sshd.destination())
        .arg("echo in")
        .output()
        .expect("run ssh");
    assert!(
        out.status.success(),
        "{}",
        explain("password login", &out, &sshd)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in\n");
    assert_eq!(askpass.count(), 1, "prompts: {:?}", askpass.prompts());
    assert!(
        askpass.prompts()[0].contains("password"),
        "{:?}",
        askpass.prompts()
    );

    // A wrong password is refused, and that prompt is counted too.
    let wrong = Askpass::new(&work.path().join("wrong"), "not0the0password");
    let out = wrong
        .command("ssh")
        .args(password_ssh_args(&sshd))
        .arg("--")
        .arg(sshd.destination())
        .arg("true")
        .output()
        .expect("run ssh");
    assert!(
        !out.status.success(),
        "{}",
        explain("wrong password", &out, &sshd)
    );
    assert_eq!(wrong.count(), 1, "prompts: {:?}", wrong.prompts());
}

/// OpenSSH's sftp against `server` (`-D`): gets `remote` to `local`; returns the time taken.
fn sftp_get_direct(server: &str, remote: &Path, local: &Path) -> Duration {
    let t0 = Instant::now();
    let out = Command::new("sftp")
        .arg("-D")
        .arg(server)
        .args(["-b", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            let batch = format!("get {} {}\n", remote.display(), local.display());
            c.stdin.take().expect("stdin").write_all(batch.as_bytes())?;
            c.wait_with_output()
        })
        .expect("run sftp -D");
    assert!(
        out.status.success(),
        "sftp -D {server}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    t0.elapsed()
}

#[test]
fn delayed_server_holds_back_only_the_chosen_instance() {
    let work = tempfile::tempdir().expect("tempdir");
    let server = DelayedServer::new(work.path(), 2, 300);
    let data = common::random_bytes(300_000, 15);
    let src = work.path().join("src");
    common::write_file(&src, &data);

    let first = work.path().join("first");
    sftp_get_direct(&server.command(), &src, &first);
    assert_eq!(server.started(), 1);
    assert_eq!(common::read_file(&first), data);
    assert_eq!(
        server.delayed_chunks(),
        None,
        "the first instance is not delayed"
    );

    // The second instance: same bytes, every reply at least 300 ms late (a lower bound,
    // whatever the load), and it says how many chunks it held.
    let second = work.path().join("second");
    let took = sftp_get_direct(&server.command(), &src, &second);
    assert_eq!(server.started(), 2);
    assert!(server.pid(2).is_some());
    assert_eq!(common::read_file(&second), data);
    // The relay notes what it held as it exits, which may be just after the client did.
    common::wait_until("the delayed server's note", Duration::from_secs(10), || {
        server.delayed_chunks().is_some()
    });
    assert!(
        server.delayed_chunks().is_some_and(|n| n >= 2),
        "{:?}",
        server.delayed_chunks()
    );
    assert!(took >= Duration::from_millis(600), "{took:?}");

    let third = work.path().join("third");
    sftp_get_direct(&server.command(), &src, &third);
    assert_eq!(server.started(), 3);
    assert_eq!(common::read_file(&third), data);
}

/// The pieces as the #15 tests will use them, with today's sftpipe (one channel): `-S`
/// through the recorder, a password through the counting askpass, `-D` through the delaying
/// server, TMPDIR scanned afterwards.
#[test]
fn sftpipe_runs_through_each_piece() {
    if !common::sshd_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let tmp = fresh_tmpdir();
    let data = common::random_bytes(200_000, 7);
    let src = work.path().join("src");
    common::write_file(&src, &data);

    // -S: one recorded ssh, running the sftp subsystem, gone afterwards.
    let sshd = Sshd::start();
    let recorder = SshRecorder::new(work.path());
    let dest = work.path().join("via-recorder");
    let mut cmd = Command::new(common::sftpipe_bin());
    cmd.arg("-S")
        .arg(recorder.program())
        .args(sshd.sftp_args())
        .arg("put")
        .arg(&src)
        .arg(format!("{}:{}", sshd.destination(), dest.display()))
        .stdin(Stdio::null());
    let out = common::control_dir::use_tmpdir(&mut cmd, tmp.path())
        .output()
        .expect("run sftpipe");
    assert!(
        out.status.success(),
        "{}",
        explain("sftpipe -S", &out, &sshd)
    );
    assert_eq!(common::read_file(&dest), data);
    // Besides `-V` and `-G` (which tell it is OpenSSH's and read its configuration),
    // one session: a single file of 200 kB does not open more channels.
    let calls: Vec<_> = recorder
        .invocations()
        .into_iter()
        .filter(|c| c.args.iter().any(|a| a == "sftp"))
        .collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(!calls[0].alive());
    assert_no_control_dirs(tmp.path());

    // A password login: asked once.
    let (pw_sshd, password) = password_sshd(&[]);
    let askpass = Askpass::new(work.path(), &password);
    let pw_dir = tempfile::tempdir().expect("tempdir");
    pw_sshd.chown_to_user(pw_dir.path());
    let pw_dest = pw_dir.path().join("via-password");
    let out = askpass
        .command(common::sftpipe_bin())
        .args(common::askpass::password_client_args(&pw_sshd))
        .arg("put")
        .arg(&src)
        .arg(format!("{}:{}", pw_sshd.destination(), pw_dest.display()))
        .output()
        .expect("run sftpipe");
    assert!(
        out.status.success(),
        "{}",
        explain("sftpipe password", &out, &pw_sshd)
    );
    assert_eq!(common::read_file(&pw_dest), data);
    assert_eq!(askpass.count(), 1, "prompts: {:?}", askpass.prompts());

    // -D: the first server started is the delayed one; the copy is still exact.
    let server = DelayedServer::new(work.path(), 1, 50);
    let got = work.path().join("via-delayed");
    let out = Command::new(common::sftpipe_bin())
        .arg("-D")
        .arg(server.command())
        .arg("get")
        .arg(&src)
        .arg(&got)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run sftpipe -D");
    assert!(
        out.status.success(),
        "{}",
        explain("sftpipe -D", &out, &sshd)
    );
    assert_eq!(common::read_file(&got), data);
    assert_eq!(server.started(), 1);
    common::wait_until("the delayed server's note", Duration::from_secs(10), || {
        server.delayed_chunks().is_some()
    });
    assert!(
        server.delayed_chunks().is_some_and(|n| n >= 1),
        "{:?}",
        server.delayed_chunks()
    );
}
