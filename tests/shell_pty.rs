//! The interactive shell through a pty (tmux): tab completion of a remote path, the
//! terminal settings after it exits equal to those before, a background `get` with
//! `jobs` and `wait`, and Ctrl-C cancelling a foreground transfer.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::delayed_server::DelayedServer;
use common::{Sshd, random_bytes, sftpipe_bin, wait_until, write_file};

/// A tmux server of its own with one window running a shell command.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn start(dir: &Path, script: &str) -> Tmux {
        let t = Tmux {
            socket: dir.join("tmux.sock"),
        };
        t.run(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "150",
            "-y",
            "40",
            "sh",
            "-c",
            script,
        ]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    /// Types `keys` (tmux key names: "Enter", "Tab", "C-c", or text).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend(keys);
        self.run(&args);
    }

    /// Waits until the screen shows `text`.
    fn expect(&self, text: &str) {
        let limit = Duration::from_secs(20);
        let t0 = std::time::Instant::now();
        while !self.screen().contains(text) {
            assert!(
                t0.elapsed() < limit,
                "no {text:?} on the screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Types a command once the prompt is there (rustyline drops what comes before it),
    /// then Enter.
    fn command(&self, prompt: &str, line: &str) {
        self.expect_prompt(prompt);
        self.keys(&[line, "Enter"]);
    }

    /// Waits for `prompt` as the screen's last non-blank line.
    fn expect_prompt(&self, prompt: &str) {
        let t0 = std::time::Instant::now();
        loop {
            let s = self.screen();
            if s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.trim_end() == prompt)
            {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "no prompt {prompt:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `sftpipe ARGS` as a shell command, with its history under `dir`.
fn sftpipe_line(dir: &Path, args: &[String]) -> String {
    let mut cmd = vec![quote(&sftpipe_bin().display().to_string())];
    cmd.extend(args.iter().map(|a| quote(a)));
    format!(
        "XDG_STATE_HOME={} {}",
        quote(&dir.join("state").display().to_string()),
        cmd.join(" ")
    )
}

#[test]
fn completes_a_remote_path_and_restores_the_terminal() {
    let sshd = Sshd::start();
    let d = tempfile::tempdir().unwrap();
    let remote = d.path().join("remote");
    write_file(remote.join("a-long-directory-name/inside.txt"), "x\n");
    let (before, after) = (d.path().join("stty.before"), d.path().join("stty.after"));
    let mut args = sshd.sftp_args();
    args.push(format!("{}:{}", sshd.destination(), remote.display()));
    let script = format!(
        "stty -g > {b}; {cmd}; stty -g > {a}; sleep 30",
        b = quote(&before.display().to_string()),
        a = quote(&after.display().to_string()),
        cmd = sftpipe_line(d.path(), &args),
    );
    let t = Tmux::start(d.path(), &script);
    let prompt = format!("sftp {}>", remote.display());
    t.expect_prompt(&prompt);
    t.keys(&["cd a-lo", "Tab"]);
    t.expect("cd a-long-directory-name/");
    t.keys(&["Enter"]);
    let inner = format!("sftp {}/a-long-directory-name>", remote.display());
    t.command(&inner, "pwd");
    t.expect(&format!(
        "Remote working directory: {}/a-long-directory-name\n",
        remote.display()
    ));
    t.command(&inner, "ls -1");
    t.expect("\ninside.txt\n");
    t.command(&inner, "bye");
    wait_until("the exit", Duration::from_secs(10), || {
        std::fs::metadata(&after).is_ok_and(|m| m.len() > 0)
    });
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(!read(&before).is_empty());
    assert_eq!(
        read(&before),
        read(&after),
        "stty -g differs after the shell"
    );
    let history = read(&d.path().join("state/sftpipe/history"));
    assert!(history.contains("ls -1"), "history: {history:?}");
}

/// A shell on a local sftp-server that holds every request `delay_ms` (one channel), in
/// `remote`, with a file `big` of `size` bytes; the local side in `local`.
fn slow_shell(d: &Path, delay_ms: u64, size: usize) -> (Tmux, PathBuf, PathBuf, String) {
    let (remote, local) = (d.join("remote"), d.join("local"));
    write_file(remote.join("big"), random_bytes(size, 7));
    std::fs::create_dir_all(&local).unwrap();
    let server = DelayedServer::new(d, 1, delay_ms);
    let args = vec![
        "-D".to_string(),
        server.command(),
        "--connections".into(),
        "1".into(),
        remote.display().to_string(),
    ];
    let script = format!(
        "cd {} && {}; sleep 30",
        quote(&local.display().to_string()),
        sftpipe_line(d, &args)
    );
    let t = Tmux::start(d, &script);
    let prompt = format!("sftp {}>", remote.display());
    (t, remote, local, prompt)
}

#[test]
fn a_background_get_shows_in_jobs_and_wait_waits_for_it() {
    let d = tempfile::tempdir().unwrap();
    let (t, _remote, local, prompt) = slow_shell(d.path(), 100, 4 << 20);
    t.command(&prompt, "get big copy &");
    t.expect("[1] get big copy");
    // The prompt is back while the job runs.
    t.command(&prompt, "jobs");
    t.expect("[1] ");
    t.command(&prompt, "wait");
    t.expect("[1] Done     get big copy");
    assert_eq!(
        std::fs::read(local.join("copy")).unwrap(),
        random_bytes(4 << 20, 7)
    );
    t.command(&prompt, "bye");
}

#[test]
fn ctrl_c_cancels_a_foreground_get_and_the_session_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let (t, _remote, local, prompt) = slow_shell(d.path(), 300, 64 << 20);
    t.command(&prompt, "get big");
    // Once bytes have landed (in the temporary file), Ctrl-C.
    let partial = local.join(".big.sftpipe-part");
    wait_until("bytes of the download", Duration::from_secs(20), || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0)
    });
    t.keys(&["C-c"]);
    t.expect("Interrupted");
    t.command(&prompt, "pwd");
    t.expect("Remote working directory: ");
    assert!(
        !local.join("big").exists(),
        "a partial file under the final name"
    );
    assert!(!partial.exists(), "the temporary file is left");
    // kill N cancels a background job just as cleanly.
    t.command(&prompt, "get big k &");
    let partial = local.join(".k.sftpipe-part");
    wait_until("bytes of the job", Duration::from_secs(20), || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0)
    });
    t.command(&prompt, "kill 1");
    t.expect("[1] Killed   get big k");
    t.command(&prompt, "jobs");
    wait_until("the job's end", Duration::from_secs(10), || {
        !partial.exists()
    });
    assert!(
        !local.join("k").exists(),
        "a partial file under the final name"
    );
    t.command(&prompt, "bye");
}

/// The children of process `pid`.
fn children(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .arg("-P")
        .arg(pid.to_string())
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A shell on a local sftp-server in `d/remote`, run from a script that records `stty -g`
/// before and after it and its exit code; returns the tmux, the prompt and sftpipe's pid.
fn recorded_shell(d: &Path) -> (Tmux, String, u32) {
    let remote = d.join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    let args = vec![
        "-D".to_string(),
        common::sftp_server_path().display().to_string(),
        "--connections".into(),
        "1".into(),
        remote.display().to_string(),
    ];
    let f = |n: &str| quote(&d.join(n).display().to_string());
    let script = format!(
        "stty -g > {}; {}; echo $? > {}; stty -g > {}; sleep 30",
        f("before"),
        sftpipe_line(d, &args),
        f("rc"),
        f("after")
    );
    let t = Tmux::start(d, &script);
    let prompt = format!("sftp {}>", remote.display());
    t.expect_prompt(&prompt);
    let sh: u32 = t
        .run(&["list-panes", "-t", "t", "-F", "#{pane_pid}"])
        .trim()
        .parse()
        .expect("pane pid");
    let pid = *children(sh).first().expect("sftpipe's pid");
    (t, prompt, pid)
}

/// The exit code and whether `stty -g` was the same before and after.
fn recorded_exit(d: &Path) -> (String, bool) {
    let after = d.join("after");
    wait_until("the shell's exit", Duration::from_secs(20), || {
        std::fs::metadata(&after).is_ok_and(|m| m.len() > 0)
    });
    let read = |n: &str| std::fs::read_to_string(d.join(n)).unwrap_or_default();
    (
        read("rc").trim().to_string(),
        read("before") == read("after") && !read("before").is_empty(),
    )
}

#[test]
fn sigterm_at_the_prompt_restores_the_terminal() {
    let d = tempfile::tempdir().unwrap();
    let (_t, _prompt, pid) = recorded_shell(d.path());
    common::send_signal(pid, "TERM");
    let (rc, same) = recorded_exit(d.path());
    assert_eq!(rc, "143");
    assert!(same, "stty -g differs after SIGTERM");
}

#[test]
fn the_server_dying_ends_the_shell_and_restores_the_terminal() {
    let d = tempfile::tempdir().unwrap();
    let (t, prompt, pid) = recorded_shell(d.path());
    for child in children(pid) {
        common::send_signal(child, "KILL");
    }
    t.command(&prompt, "ls");
    let (rc, same) = recorded_exit(d.path());
    assert_ne!(rc, "0");
    assert!(same, "stty -g differs after the server died");
}
