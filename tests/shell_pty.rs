//! The interactive shell through a pty (tmux): tab completion of a remote path, and the
//! terminal settings after it exits equal to those before.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Sshd, sftpipe_bin, wait_until, write_file};

fn tmux(socket: &Path, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .arg("-S")
        .arg(socket)
        .args(args)
        .output()
        .expect("run tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screen(socket: &Path) -> String {
    tmux(socket, &["capture-pane", "-p", "-t", "t"])
}

#[test]
fn completes_a_remote_path_and_restores_the_terminal() {
    let sshd = Sshd::start();
    let d = tempfile::tempdir().unwrap();
    let remote = d.path().join("remote");
    write_file(remote.join("a-long-directory-name/inside.txt"), "x\n");
    let socket = d.path().join("tmux.sock");
    let (before, after) = (d.path().join("stty.before"), d.path().join("stty.after"));
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut cmd = vec![quote(&sftpipe_bin().display().to_string())];
    cmd.extend(sshd.sftp_args().iter().map(|a| quote(a)));
    cmd.push(quote(&format!(
        "{}:{}",
        sshd.destination(),
        remote.display()
    )));
    let script = format!(
        "stty -g > {b}; XDG_STATE_HOME={state} {cmd}; stty -g > {a}; sleep 30",
        b = quote(&before.display().to_string()),
        a = quote(&after.display().to_string()),
        state = quote(&d.path().join("state").display().to_string()),
        cmd = cmd.join(" ")
    );
    tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "120",
            "-y",
            "30",
            "sh",
            "-c",
            &script,
        ],
    );
    let _kill = KillTmux(socket.clone());
    wait_until("the prompt", Duration::from_secs(20), || {
        screen(&socket).contains("sftp /")
    });
    tmux(&socket, &["send-keys", "-t", "t", "cd a-lo", "Tab"]);
    wait_until("the completion", Duration::from_secs(10), || {
        screen(&socket).contains("cd a-long-directory-name/")
    });
    tmux(&socket, &["send-keys", "-t", "t", "Enter"]);
    // rustyline discards what is typed before its prompt: wait for each prompt.
    wait_until("the new prompt", Duration::from_secs(10), || {
        screen(&socket).contains("a-long-directory-name>")
    });
    tmux(&socket, &["send-keys", "-t", "t", "pwd", "Enter"]);
    let pwd_shown = || screen(&socket).contains("/a-long-directory-name\n");
    let waited = std::time::Instant::now();
    while !pwd_shown() && waited.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pwd_shown(), "no pwd in:\n{}", screen(&socket));
    tmux(&socket, &["send-keys", "-t", "t", "ls -1", "Enter"]);
    wait_until("ls", Duration::from_secs(10), || {
        screen(&socket).contains("\ninside.txt\nsftp /")
    });
    tmux(&socket, &["send-keys", "-t", "t", "bye", "Enter"]);
    wait_until("the exit", Duration::from_secs(10), || after.exists());
    std::thread::sleep(Duration::from_millis(100));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(!read(&before).is_empty());
    assert_eq!(
        read(&before),
        read(&after),
        "stty -g differs after the shell"
    );
    assert!(
        d.path().join("state/sftpipe/history").exists(),
        "no history file"
    );
}

struct KillTmux(std::path::PathBuf);
impl Drop for KillTmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.0)
            .arg("kill-server")
            .status();
    }
}
