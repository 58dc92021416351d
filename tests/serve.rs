//! `sftpipe serve`: the JSON command protocol, driven through the real binary with a
//! local `sftp-server` (`-D`; remote paths are then local paths, so every effect is
//! checked on the local file system) and once through a real sshd.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use common::{
    random_bytes, read_file, read_pid, send_signal, sftp_server_path, sftpipe_bin, write_file,
    write_script,
};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Text,
    Binary,
}

/// A running `sftpipe ... serve`, with a thread splitting its stdout into answers.
struct Serve {
    child: Child,
    stdin: Option<ChildStdin>,
    answers: Receiver<(Wire, Value)>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

fn local_server() -> Vec<String> {
    vec!["-D".into(), sftp_server_path().display().to_string()]
}

impl Serve {
    /// `sftpipe GLOBAL... serve SERVE_ARGS...`.
    fn start(global: &[String], serve_args: &[&str]) -> Serve {
        Serve::spawn(
            Command::new(sftpipe_bin())
                .args(global)
                .arg("serve")
                .args(serve_args),
        )
    }

    /// With a local sftp-server.
    fn local(serve_args: &[&str]) -> Serve {
        Serve::start(&local_server(), serve_args)
    }

    fn spawn(cmd: &mut Command) -> Serve {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr = dir.path().join("stderr");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start sftpipe serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, answers) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let first = match r.fill_buf() {
                    Ok([]) | Err(_) => return,
                    Ok(b) => b[0],
                };
                let answer = if first == b'{' {
                    let mut line = Vec::new();
                    r.read_until(b'\n', &mut line).expect("read answer line");
                    assert_eq!(line.last(), Some(&b'\n'), "unterminated text answer");
                    (
                        Wire::Text,
                        serde_json::from_slice(&line).expect("answer is JSON"),
                    )
                } else {
                    let mut len = [0u8; 4];
                    r.read_exact(&mut len).expect("answer length");
                    let mut body = vec![0; u32::from_be_bytes(len) as usize];
                    r.read_exact(&mut body).expect("answer body");
                    (
                        Wire::Binary,
                        serde_json::from_slice(&body).expect("answer is JSON"),
                    )
                };
                if tx.send(answer).is_err() {
                    return;
                }
            }
        });
        Serve {
            stdin: child.stdin.take(),
            child,
            answers,
            stderr,
            _dir: dir,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write to serve");
        stdin.flush().expect("flush");
    }

    fn send(&mut self, wire: Wire, v: &Value) {
        self.send_raw(&frame(wire, v.to_string().as_bytes()));
    }

    fn try_recv(&self) -> Option<(Wire, Value)> {
        match self.answers.recv_timeout(TIMEOUT) {
            Ok(a) => Some(a),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "no answer within {TIMEOUT:?}; stderr:\n{}",
                    self.stderr_text()
                )
            }
        }
    }

    /// The next answer, which must come in `wire`.
    fn recv(&self, wire: Wire) -> Value {
        let (w, v) = self
            .try_recv()
            .unwrap_or_else(|| panic!("output ended; stderr:\n{}", self.stderr_text()));
        assert_eq!(w, wire, "answer {v} came in the wrong framing");
        v
    }

    /// Sends a command without id and returns its answer.
    fn call(&mut self, wire: Wire, command: &str, args: Value) -> Value {
        self.send(wire, &json!({"command": command, "args": args}));
        self.recv(wire)
    }

    /// Like [`Serve::call`], asserting success; returns the data.
    fn ok(&mut self, wire: Wire, command: &str, args: Value) -> Value {
        let a = self.call(wire, command, args.clone());
        assert_eq!(a["status"], "ok", "{command} {args}: {a}");
        assert_eq!(a["message"], "");
        a["data"].clone()
    }

    /// Like [`Serve::call`], asserting an error with `code`.
    fn error(&mut self, wire: Wire, command: &str, args: Value, code: &str) -> Value {
        let a = self.call(wire, command, args.clone());
        assert_eq!(
            (a["status"].as_str(), a["code"].as_str()),
            (Some("error"), Some(code)),
            "{command} {args}: {a}"
        );
        assert!(!a["message"].as_str().unwrap_or_default().is_empty());
        a
    }

    fn close_input(&mut self) {
        self.stdin = None;
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    /// Waits for the exit (the input is left as it is) and checks that nothing more was
    /// written.
    fn wait(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("serve did not exit; stderr:\n{}", self.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(extra) = self.try_recv() {
            panic!("unexpected answer {extra:?}");
        }
        (status, self.stderr_text())
    }

    /// Closes the input and expects a clean exit.
    fn finish(mut self) -> String {
        self.close_input();
        let (status, stderr) = self.wait();
        assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
        stderr
    }
}

fn frame(wire: Wire, body: &[u8]) -> Vec<u8> {
    match wire {
        Wire::Text => {
            let mut v = body.to_vec();
            v.push(b'\n');
            v
        }
        Wire::Binary => {
            let mut v = (body.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(body);
            v
        }
    }
}

fn s(p: &Path) -> String {
    p.to_str().expect("UTF-8 temp path").to_string()
}

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().expect("tempdir");
    let canonical = fs::canonicalize(t.path()).expect("canonicalize");
    (t, canonical)
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).expect("stat").permissions().mode()
}

// ---------------------------------------------------------------------------------------

fn every_command(wire: Wire, global: &[String]) {
    let (_t, d) = tempdir();
    let mut srv = Serve::start(global, &[]);
    let r = |p: &str| s(&d.join(p));

    // PUT / GET of one file.
    let data = random_bytes(100_000, 1);
    write_file(d.join("src.bin"), &data);
    let put = srv.ok(
        wire,
        "PUT",
        json!({"source": r("src.bin"), "dest": r("remote/sub/dst.bin")}),
    );
    assert_eq!(put, json!({"bytes": 100_000, "files": 1}));
    assert_eq!(read_file(d.join("remote/sub/dst.bin")), data);
    let get = srv.ok(
        wire,
        "get",
        json!({"source": r("remote/sub/dst.bin"), "dest": r("got.bin")}),
    );
    assert_eq!(get["bytes"], 100_000);
    assert_eq!(read_file(d.join("got.bin")), data);
    srv.error(
        wire,
        "GET",
        json!({"source": r("missing"), "dest": r("x")}),
        "not_found",
    );
    assert!(!d.join("x").exists());
    srv.error(
        wire,
        "PUT",
        json!({"source": r("missing"), "dest": r("x")}),
        "local",
    );

    // Trees.
    write_file(d.join("tree/a"), b"aaa");
    write_file(d.join("tree/b/c"), b"cc");
    write_file(d.join("tree/skip.tmp"), b"t");
    std::os::unix::fs::symlink("a", d.join("tree/link")).expect("symlink");
    srv.error(
        wire,
        "PUT",
        json!({"source": r("tree"), "dest": r("remote/tree")}),
        "invalid",
    );
    let put = srv.ok(
        wire,
        "PUT",
        json!({"source": r("tree"), "dest": r("remote/tree"), "recursive": true}),
    );
    assert_eq!(
        (&put["files"], &put["bytes"], &put["symlinks"]),
        (&json!(3), &json!(6), &json!(1))
    );
    assert_eq!(read_file(d.join("remote/tree/b/c")), b"cc");
    assert_eq!(
        fs::read_link(d.join("remote/tree/link")).unwrap(),
        Path::new("a")
    );
    srv.error(
        wire,
        "GET",
        json!({"source": r("remote/tree"), "dest": r("down")}),
        "invalid",
    );
    let get = srv.ok(
        wire,
        "GET",
        json!({"source": r("remote/tree"), "dest": r("down"), "recursive": true}),
    );
    assert_eq!(get["files"], 3);
    assert_eq!(read_file(d.join("down/b/c")), b"cc");

    // LISTDIR: sftper's fields, sorted, st_mode with type bits.
    let list = srv.ok(wire, "LISTDIR", json!({"path": r("remote/tree")}));
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "link", "skip.tmp"]);
    let a = &list[0];
    assert_eq!(a.as_object().unwrap().len(), 4, "{a}");
    assert_eq!(a["size"], 3);
    assert_eq!(
        a["mode"].as_u64().unwrap() as u32,
        mode_of(&d.join("remote/tree/a"))
    );
    assert_eq!(
        a["mtime"].as_i64().unwrap(),
        fs::metadata(d.join("remote/tree/a")).unwrap().mtime()
    );
    assert_eq!(
        list[1]["mode"].as_u64().unwrap() as u32 & 0o170000,
        0o040000
    );
    assert_eq!(
        list[2]["mode"].as_u64().unwrap() as u32 & 0o170000,
        0o120000
    );
    srv.error(wire, "LISTDIR", json!({"path": r("nope")}), "not_found");

    // STAT / LSTAT.
    let st = srv.ok(wire, "STAT", json!({"path": r("remote/sub/dst.bin")}));
    let meta = fs::metadata(d.join("remote/sub/dst.bin")).unwrap();
    assert_eq!(st["size"], 100_000);
    assert_eq!(st["type"], "file");
    assert_eq!(st["mode"].as_u64().unwrap() as u32, meta.mode());
    assert_eq!(st["uid"].as_u64().unwrap() as u32, meta.uid());
    assert_eq!(st["gid"].as_u64().unwrap() as u32, meta.gid());
    assert_eq!(st["mtime"].as_i64().unwrap(), meta.mtime());
    assert!(st["atime"].is_u64());
    assert_eq!(
        srv.ok(wire, "STAT", json!({"path": r("remote/tree/link")}))["type"],
        "file"
    );
    assert_eq!(
        srv.ok(wire, "LSTAT", json!({"path": r("remote/tree/link")}))["type"],
        "symlink"
    );
    srv.error(wire, "STAT", json!({"path": r("nope")}), "not_found");

    // MKDIR / RMDIR.
    assert_eq!(srv.ok(wire, "MKDIR", json!({"path": r("m1")})), Value::Null);
    assert!(d.join("m1").is_dir());
    srv.error(wire, "MKDIR", json!({"path": r("m1")}), "failure");
    srv.ok(wire, "MKDIR", json!({"path": r("m1"), "parents": true}));
    srv.ok(wire, "MKDIR", json!({"path": r("m2/x/y"), "parents": true}));
    assert!(d.join("m2/x/y").is_dir());
    srv.ok(wire, "MKDIR", json!({"path": r("m3"), "mode": "700"}));
    assert_eq!(mode_of(&d.join("m3")) & 0o777, 0o700);
    srv.error(
        wire,
        "MKDIR",
        json!({"path": r("no/such/parent")}),
        "not_found",
    );
    srv.ok(wire, "RMDIR", json!({"path": r("m1")}));
    assert!(!d.join("m1").exists());
    srv.error(wire, "RMDIR", json!({"path": r("m1")}), "not_found");

    // RENAME replaces the target.
    write_file(d.join("r1"), b"one");
    write_file(d.join("r2"), b"two");
    srv.ok(wire, "RENAME", json!({"source": r("r1"), "dest": r("r2")}));
    assert!(!d.join("r1").exists());
    assert_eq!(read_file(d.join("r2")), b"one");

    // SYMLINK / READLINK / REALPATH.
    srv.ok(wire, "SYMLINK", json!({"target": "r2", "path": r("sl")}));
    assert_eq!(fs::read_link(d.join("sl")).unwrap(), Path::new("r2"));
    assert_eq!(
        srv.ok(wire, "READLINK", json!({"path": r("sl")})),
        json!("r2")
    );
    assert_eq!(
        srv.ok(wire, "REALPATH", json!({"path": r("m2/x/../x")})),
        json!(r("m2/x"))
    );

    // CHMOD: a number (st_mode works) or an octal string.
    srv.ok(wire, "CHMOD", json!({"path": r("r2"), "mode": 0o600}));
    assert_eq!(mode_of(&d.join("r2")) & 0o7777, 0o600);
    srv.ok(wire, "CHMOD", json!({"path": r("r2"), "mode": "0640"}));
    assert_eq!(mode_of(&d.join("r2")) & 0o7777, 0o640);
    srv.ok(wire, "CHMOD", json!({"path": r("r2"), "mode": 0o100604}));
    assert_eq!(mode_of(&d.join("r2")) & 0o7777, 0o604);

    // STATVFS.
    let vfs = srv.ok(wire, "STATVFS", json!({"path": r(".")}));
    assert!(vfs["bsize"].as_u64().unwrap() > 0);
    assert!(vfs["blocks"].is_u64() && vfs["namemax"].is_u64());

    // DELETE: files, symlinks and empty directories, as sftper.
    srv.ok(wire, "DELETE", json!({"path": r("sl")}));
    assert!(fs::symlink_metadata(d.join("sl")).is_err());
    assert!(d.join("r2").exists());
    srv.ok(wire, "DELETE", json!({"path": r("r2")}));
    assert!(!d.join("r2").exists());
    srv.ok(wire, "DELETE", json!({"path": r("m2/x/y")}));
    assert!(!d.join("m2/x/y").exists());
    srv.error(wire, "DELETE", json!({"path": r("m2")}), "failure");
    assert!(d.join("m2/x").is_dir());
    srv.error(wire, "DELETE", json!({"path": r("r2")}), "not_found");

    // MIRROR with delete and exclude.
    write_file(d.join("mirror/stale"), b"old");
    write_file(d.join("mirror/a"), b"different");
    let m = srv.ok(
        wire,
        "MIRROR",
        json!({"source": r("tree"), "dest": r("mirror"), "delete": true, "exclude": ["*.tmp"]}),
    );
    assert_eq!(
        (&m["copied"], &m["deleted"], &m["symlinks"]),
        (&json!(2), &json!(1), &json!(1)),
        "{m}"
    );
    assert_eq!(m["failed"], 0);
    assert_eq!(read_file(d.join("mirror/a")), b"aaa");
    assert_eq!(read_file(d.join("mirror/b/c")), b"cc");
    assert!(!d.join("mirror/stale").exists());
    assert!(!d.join("mirror/skip.tmp").exists());
    let again = srv.ok(
        wire,
        "MIRROR",
        json!({"source": r("tree"), "dest": r("mirror"), "exclude": ["*.tmp"]}),
    );
    assert_eq!(
        (&again["copied"], &again["unchanged"]),
        (&json!(0), &json!(3)),
        "{again}"
    );
    let gone = srv.error(
        wire,
        "MIRROR",
        json!({"source": r("nope"), "dest": r("mirror")}),
        "local",
    );
    assert_eq!(gone["data"]["failed"], 1);

    srv.finish();
}

#[test]
fn every_command_text() {
    // -vv: debug logs must not leak into the answers.
    let mut global = local_server();
    global.push("-vv".into());
    every_command(Wire::Text, &global);
}

#[test]
fn every_command_binary() {
    every_command(Wire::Binary, &local_server());
}

fn bad_messages(wire: Wire) {
    let mut srv = Serve::local(&[]);
    let fail = |a: &Value, want: &str| {
        assert_eq!(a["status"], "fail", "{a}");
        assert_eq!(a["data"], Value::Null);
        let m = a["message"].as_str().unwrap();
        assert!(m.contains(want), "{want:?} not in {m:?}");
    };
    srv.send_raw(&frame(wire, b"{\"command\": \"STAT\", "));
    fail(&srv.recv(wire), "invalid JSON");
    srv.send_raw(&frame(
        wire,
        b"{\"command\": \"STAT\", \"args\": {\"path\": \"\xff\"}}",
    ));
    fail(&srv.recv(wire), "invalid JSON");
    srv.send_raw(&frame(wire, b" [1, 2]"));
    fail(&srv.recv(wire), "JSON object");
    srv.send(wire, &json!({"command": "FROB", "args": {}, "id": 9}));
    let a = srv.recv(wire);
    fail(&a, "unknown command 'FROB'");
    assert_eq!(a["id"], 9);
    srv.send(wire, &json!({"args": {"path": "/"}}));
    fail(&srv.recv(wire), "missing 'command'");
    fail(
        &srv.call(wire, "STAT", json!({})),
        "missing argument 'path'",
    );
    fail(
        &srv.call(wire, "STAT", json!({"path": 5})),
        "must be a string",
    );
    fail(
        &srv.call(wire, "GET", json!({"source": "/etc/hostname"})),
        "missing argument 'dest'",
    );
    fail(
        &srv.call(
            wire,
            "PUT",
            json!({"source": "a", "dest": "b", "recursive": "yes"}),
        ),
        "true or false",
    );
    fail(
        &srv.call(wire, "CHMOD", json!({"path": "a", "mode": "rwx"})),
        "mode",
    );
    fail(
        &srv.call(
            wire,
            "MIRROR",
            json!({"source": "a", "dest": "b", "exclude": ["a{"]}),
        ),
        "exclude",
    );
    // Still serving.
    assert_eq!(srv.ok(wire, "REALPATH", json!({"path": "/"})), json!("/"));
    srv.finish();
}

#[test]
fn bad_messages_text() {
    bad_messages(Wire::Text);
}

#[test]
fn bad_messages_binary() {
    bad_messages(Wire::Binary);
}

#[test]
fn huge_length_prefix_is_refused_without_allocating_and_ends_cleanly() {
    // Under a 512 MiB address-space limit, allocating the 4 GiB the prefix announces
    // would abort the process.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -v 524288 && exec \"$@\"", "sh"])
        .arg(sftpipe_bin())
        .args(local_server())
        .arg("serve");
    let mut srv = Serve::spawn(&mut cmd);
    assert_eq!(
        srv.ok(Wire::Binary, "REALPATH", json!({"path": "/"})),
        json!("/")
    );
    srv.send_raw(&[0xff, 0xff, 0xff, 0xff, b'{']);
    let a = srv.recv(Wire::Binary);
    assert_eq!(a["status"], "fail", "{a}");
    assert!(a["message"].as_str().unwrap().contains("4294967295"), "{a}");
    // The stream cannot be resynchronised: the server ends although input stays open,
    // and says that it stopped reading.
    let _ = srv.stdin.as_mut().unwrap().write_all(b"more");
    let (status, stderr) = srv.wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no further input is read"), "{stderr}");
}

#[test]
fn input_in_no_framing_is_refused_and_exits_non_zero() {
    // `echo 'hello world' | sftpipe serve`: not text ('h' is not '{'), and as a length
    // prefix absurd. Nothing after it runs.
    let (_t, d) = tempdir();
    let mut srv = Serve::local(&[]);
    srv.send_raw(b"hello world\n");
    srv.send(
        Wire::Text,
        &json!({"command": "MKDIR", "args": {"path": s(&d.join("x"))}}),
    );
    srv.close_input();
    let a = srv.recv(Wire::Text);
    assert_eq!(a["status"], "fail", "{a}");
    let m = a["message"].as_str().unwrap();
    assert!(
        m.contains("neither JSON lines nor length-prefixed JSON"),
        "{m}"
    );
    assert!(m.contains("hello world"), "{m}");
    let (status, stderr) = srv.wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("sftpipe: serve: input is neither JSON lines nor length-prefixed JSON"),
        "{stderr}"
    );
    assert!(!d.join("x").exists());

    // Told from the first bytes at once, without waiting for a whole length prefix nor
    // for the end of input.
    let mut srv = Serve::local(&[]);
    srv.send_raw(b"hi");
    let a = srv.recv(Wire::Text);
    assert!(a["message"].as_str().unwrap().contains("\"hi\""), "{a}");
    let (status, stderr) = srv.wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
}

#[test]
fn forced_binary_framing_refuses_text() {
    let mut srv = Serve::local(&["--binary"]);
    srv.send_raw(b"{\"command\": \"STAT\"}\n");
    let a = srv.recv(Wire::Binary);
    assert_eq!(a["status"], "fail");
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .contains("not length-prefixed JSON"),
        "{a}"
    );
    let (status, stderr) = srv.wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
}

#[test]
fn forced_text_framing_takes_any_line() {
    let mut srv = Serve::local(&["--text"]);
    srv.send_raw(b"[\"not a command\"]\n");
    let a = srv.recv(Wire::Text);
    assert_eq!(a["status"], "fail");
    assert_eq!(
        srv.ok(Wire::Text, "REALPATH", json!({"path": "/"})),
        json!("/")
    );
    srv.finish();
}

#[test]
fn overlong_text_line_is_skipped() {
    let mut srv = Serve::local(&[]);
    let mut line = b"{\"command\": \"STAT\", \"args\": {\"path\": \"".to_vec();
    line.resize(17 << 20, b'x');
    line.extend_from_slice(b"\"}}\n");
    srv.send_raw(&line);
    let a = srv.recv(Wire::Text);
    assert_eq!(a["status"], "fail", "{a}");
    assert!(a["message"].as_str().unwrap().contains("maximum"), "{a}");
    assert_eq!(
        srv.ok(Wire::Text, "REALPATH", json!({"path": "/"})),
        json!("/")
    );
    srv.finish();
}

#[test]
fn partial_message_then_end_of_input() {
    // Binary: the message is cut short; it is refused and the server ends cleanly.
    for partial in [&[0u8, 0][..], &[0, 0, 0, 100, b'{', b'"'][..]] {
        let mut srv = Serve::local(&[]);
        srv.send_raw(partial);
        srv.close_input();
        let a = srv.recv(Wire::Binary);
        assert_eq!(a["status"], "fail", "{a}");
        assert!(
            a["message"].as_str().unwrap().contains("input ended"),
            "{a}"
        );
        srv.finish();
    }
    // Text: an unterminated last line counts as a line.
    let mut srv = Serve::local(&[]);
    srv.send_raw(b"{\"command\": \"STAT\", \"args\": {\"pa");
    srv.close_input();
    assert_eq!(srv.recv(Wire::Text)["status"], "fail");
    srv.finish();
    let mut srv = Serve::local(&[]);
    srv.send_raw(b"{\"command\": \"REALPATH\", \"args\": {\"path\": \"/\"}}");
    srv.close_input();
    assert_eq!(srv.recv(Wire::Text)["data"], "/");
    srv.finish();
}

fn concurrent_ids(wire: Wire) {
    const N: usize = 200;
    let (_t, d) = tempdir();
    for i in 0..N {
        write_file(d.join(format!("src/f{i}")), random_bytes(i * 100, i as u64));
    }
    let mut srv = Serve::local(&[]);
    // All PUTs are sent before any answer is read.
    let mut batch = Vec::new();
    for i in 0..N {
        let cmd = json!({"command": "PUT", "id": format!("put-{i}"),
            "args": {"source": s(&d.join(format!("src/f{i}"))), "dest": s(&d.join(format!("dst/f{i}")))}});
        batch.extend(frame(wire, cmd.to_string().as_bytes()));
    }
    srv.send_raw(&batch);
    let mut seen = HashMap::new();
    for _ in 0..N {
        let a = srv.recv(wire);
        assert_eq!(a["status"], "ok", "{a}");
        let id = a["id"].as_str().expect("string id").to_string();
        let i: usize = id.strip_prefix("put-").unwrap().parse().unwrap();
        assert_eq!(a["data"]["bytes"], i * 100);
        assert!(seen.insert(id, ()).is_none(), "an id answered twice");
    }
    for i in 0..N {
        assert_eq!(
            read_file(d.join(format!("dst/f{i}"))),
            random_bytes(i * 100, i as u64)
        );
    }
    let mut batch = Vec::new();
    for i in 0..N {
        let cmd =
            json!({"command": "STAT", "id": i, "args": {"path": s(&d.join(format!("dst/f{i}")))}});
        batch.extend(frame(wire, cmd.to_string().as_bytes()));
    }
    srv.send_raw(&batch);
    // End of input right away: every pending command is still answered.
    srv.close_input();
    let mut ids = vec![0; N];
    for _ in 0..N {
        let a = srv.recv(wire);
        let i = a["id"].as_u64().expect("numeric id") as usize;
        assert_eq!(a["data"]["size"], i * 100, "{a}");
        ids[i] += 1;
    }
    assert!(ids.iter().all(|&n| n == 1), "{ids:?}");
    let (status, stderr) = srv.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn concurrent_commands_with_ids_text() {
    concurrent_ids(Wire::Text);
}

#[test]
fn concurrent_commands_with_ids_binary() {
    concurrent_ids(Wire::Binary);
}

#[test]
fn a_request_too_large_for_the_server_fails_alone() {
    // sftp-server exits on a packet above 256 KiB, which would fail every command in
    // flight: a STAT of a 300,000-byte path must be refused unsent, while a transfer runs.
    let (_t, d) = tempdir();
    let data = random_bytes(4 << 20, 21);
    write_file(d.join("big"), &data);
    let huge = format!("{}/{}", s(&d), "x".repeat(300_000 - s(&d).len() - 1));
    assert_eq!(huge.len(), 300_000);
    let mut srv = Serve::local(&[]);
    let mut batch = Vec::new();
    for cmd in [
        json!({"command": "PUT", "id": "put", "args": {"source": s(&d.join("big")), "dest": s(&d.join("copy"))}}),
        json!({"command": "STAT", "id": "huge", "args": {"path": huge}}),
        json!({"command": "STAT", "id": "dir", "args": {"path": s(&d)}}),
    ] {
        batch.extend(frame(Wire::Text, cmd.to_string().as_bytes()));
    }
    srv.send_raw(&batch);
    let mut answers = HashMap::new();
    for _ in 0..3 {
        let a = srv.recv(Wire::Text);
        answers.insert(a["id"].as_str().expect("string id").to_string(), a);
    }
    let a = &answers["huge"];
    assert_eq!(
        (&a["status"], &a["code"]),
        (&json!("error"), &json!("invalid")),
        "{a}"
    );
    let message = a["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("stat '{}", s(&d))),
        "{message}"
    );
    assert!(
        message.contains(
            "request too large for the server: 300013 bytes, the server accepts at most 262144"
        ),
        "{message}"
    );
    assert!(message.len() < 1000, "the path is shortened: {message}");
    assert_eq!(answers["put"]["status"], "ok", "{}", answers["put"]);
    assert_eq!(answers["dir"]["data"]["type"], "dir", "{}", answers["dir"]);
    assert!(read_file(d.join("copy")) == data);
    // The session goes on.
    assert_eq!(
        srv.ok(Wire::Text, "REALPATH", json!({"path": "/"})),
        json!("/")
    );
    srv.finish();
}

fn idless_in_order(wire: Wire) {
    let (_t, d) = tempdir();
    let mut srv = Serve::local(&[]);
    // What each id-less answer must be, in order: a size, an error code, or "fail".
    let mut expected = Vec::new();
    let mut batch = Vec::new();
    let mut push = |body: &[u8]| batch.extend(frame(wire, body));
    for i in 0..60usize {
        write_file(d.join(format!("f{i}")), vec![b'x'; i]);
        let path = s(&d.join(format!("f{i}")));
        match i % 6 {
            // Interleaved commands with ids, answered whenever.
            0 => push(
                json!({"command": "STAT", "id": i, "args": {"path": path}})
                    .to_string()
                    .as_bytes(),
            ),
            1 => {
                push(b"{not json");
                expected.push(json!("fail"));
                push(
                    json!({"command": "STAT", "args": {"path": s(&d.join("missing"))}})
                        .to_string()
                        .as_bytes(),
                );
                expected.push(json!("not_found"));
            }
            _ => {
                push(
                    json!({"command": "STAT", "args": {"path": path}})
                        .to_string()
                        .as_bytes(),
                );
                expected.push(json!(i));
            }
        }
    }
    srv.send_raw(&batch);
    srv.close_input();
    let mut got = Vec::new();
    let mut with_id = 0;
    while let Some((w, a)) = srv.try_recv() {
        assert_eq!(w, wire);
        if a.get("id").is_some() {
            with_id += 1;
            continue;
        }
        got.push(match a["status"].as_str().unwrap() {
            "ok" => a["data"]["size"].clone(),
            "error" => a["code"].clone(),
            other => json!(other),
        });
    }
    assert_eq!(with_id, 10);
    assert_eq!(got, expected);
    let (status, _) = srv.wait();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn idless_commands_are_answered_in_order_text() {
    idless_in_order(Wire::Text);
}

#[test]
fn idless_commands_are_answered_in_order_binary() {
    idless_in_order(Wire::Binary);
}

#[test]
fn id_less_commands_run_one_after_another() {
    // MKDIR then PUT into it then LISTDIR, without waiting for answers in between.
    let (_t, d) = tempdir();
    write_file(d.join("f"), b"data");
    let mut srv = Serve::local(&[]);
    let mut batch = Vec::new();
    for (c, a) in [
        ("MKDIR", json!({"path": s(&d.join("new"))})),
        (
            "PUT",
            json!({"source": s(&d.join("f")), "dest": s(&d.join("new/f"))}),
        ),
        ("LISTDIR", json!({"path": s(&d.join("new"))})),
        ("DELETE", json!({"path": s(&d.join("new/f"))})),
        ("RMDIR", json!({"path": s(&d.join("new"))})),
    ] {
        batch.extend(frame(
            Wire::Binary,
            json!({"command": c, "args": a}).to_string().as_bytes(),
        ));
    }
    srv.send_raw(&batch);
    let answers: Vec<Value> = (0..5).map(|_| srv.recv(Wire::Binary)).collect();
    assert!(answers.iter().all(|a| a["status"] == "ok"), "{answers:?}");
    assert_eq!(answers[2]["data"][0]["name"], "f");
    assert!(!d.join("new").exists());
    srv.finish();
}

#[test]
fn end_of_input_waits_for_running_transfers() {
    let (_t, d) = tempdir();
    let data = random_bytes(24 << 20, 7);
    write_file(d.join("big"), &data);
    let mut srv = Serve::local(&[]);
    srv.send(
        Wire::Text,
        &json!({"command": "PUT", "id": "big", "args": {"source": s(&d.join("big")), "dest": s(&d.join("copy"))}}),
    );
    srv.close_input();
    let a = srv.recv(Wire::Text);
    assert_eq!(
        (&a["status"], &a["id"]),
        (&json!("ok"), &json!("big")),
        "{a}"
    );
    assert_eq!(read_file(d.join("copy")), data);
    let (status, _) = srv.wait();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn connection_failure_exits_5_without_reading_input() {
    // The input stays open: the server must not wait for it.
    let mut srv = Serve::start(&["-D".into(), "/nonexistent/sftp-server".into()], &[]);
    let (status, stderr) = srv_wait_keep_input(&mut srv);
    assert_eq!(status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("/nonexistent/sftp-server"), "{stderr}");
    assert!(srv.try_recv().is_none(), "something was written to stdout");
}

fn srv_wait_keep_input(srv: &mut Serve) -> (ExitStatus, String) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(s) = srv.child.try_wait().expect("try_wait") {
            return (s, srv.stderr_text());
        }
        assert!(Instant::now() < deadline, "serve did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn usage_errors() {
    for args in [
        vec!["serve"],
        vec!["serve", "host:/some/path"],
        vec!["serve", "--text", "--binary", "h:"],
    ] {
        let out = Command::new(sftpipe_bin())
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run sftpipe");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn help_documents_the_protocol() {
    let out = Command::new(sftpipe_bin())
        .args(["serve", "--help"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "LISTDIR",
        "\"status\"",
        "big-endian",
        "--binary",
        "\"id\"",
        "Example",
    ] {
        assert!(text.contains(word), "{word} missing from:\n{text}");
    }
}

#[test]
fn through_sshd_then_connection_lost() {
    if !common::sshd_available() {
        return;
    }
    let mut sshd = common::Sshd::start();
    // ssh's -p is sftpipe's -P, as with OpenSSH's sftp.
    let global: Vec<String> = sshd
        .ssh_args()
        .into_iter()
        .map(|a| if a == "-p" { "-P".to_string() } else { a })
        .collect();
    let (_t, d) = tempdir();
    write_file(d.join("up"), b"over ssh");
    let url = format!("sftp://{}@{}:{}", sshd.user(), sshd.host(), sshd.port());
    let mut srv = Serve::start(&global, &[url.as_str()]);
    let wire = Wire::Binary;
    srv.ok(
        wire,
        "PUT",
        json!({"source": s(&d.join("up")), "dest": s(&d.join("remote"))}),
    );
    assert_eq!(read_file(d.join("remote")), b"over ssh");
    let list = srv.ok(wire, "LISTDIR", json!({"path": s(&d)}));
    assert_eq!(list.as_array().unwrap().len(), 2);
    srv.ok(
        wire,
        "GET",
        json!({"source": s(&d.join("remote")), "dest": s(&d.join("down"))}),
    );
    assert_eq!(read_file(d.join("down")), b"over ssh");
    srv.error(
        wire,
        "STAT",
        json!({"path": s(&d.join("nope"))}),
        "not_found",
    );

    // The host goes away: commands answer "connection", the server keeps answering
    // until end of input, then exits 5.
    sshd.kill();
    let a = srv.call(wire, "STAT", json!({"path": s(&d)}));
    assert_eq!(
        (&a["status"], &a["code"]),
        (&json!("error"), &json!("connection")),
        "{a}"
    );
    let a = srv.call(wire, "NOPE", json!({}));
    assert_eq!(a["status"], "fail");
    srv.close_input();
    let (status, stderr) = srv.wait();
    assert_eq!(status.code(), Some(5), "{stderr}");
}

/// The server dies but the `-D` command around it lingers with the connection closed,
/// as ssh may: the session gives up waiting for its exit status without holding up the
/// event loop, so answers that need no connection keep coming at once meanwhile.
#[test]
fn a_connection_failing_slowly_does_not_hold_up_other_answers() {
    let (_t, d) = tempdir();
    let pidfile = d.join("server.pid");
    let script = d.join("lingering-server");
    write_script(
        &script,
        &format!(
            "sh -c 'echo $$ > {pid}; exec {server}'\nexec >&- <&- 2>&-\nexec sleep 30",
            pid = pidfile.display(),
            server = sftp_server_path().display()
        ),
    );
    let mut srv = Serve::start(&["-D".into(), s(&script)], &["--text"]);
    let wire = Wire::Text;
    srv.ok(wire, "STAT", json!({"path": s(&d)}));
    send_signal(read_pid(&pidfile), "KILL");
    srv.send(
        wire,
        &json!({"command": "STAT", "args": {"path": s(&d)}, "id": 1}),
    );
    // Bad requests, one at a time, until the STAT's error comes: none may wait.
    let mut slowest = Duration::ZERO;
    let mut stat_answered = false;
    while !stat_answered {
        let sent = Instant::now();
        srv.send_raw(b"not json\n");
        let mut a = srv.recv(wire);
        if a["id"] == 1 {
            assert_eq!(a["code"], "connection", "{a}");
            stat_answered = true;
            a = srv.recv(wire);
        }
        slowest = slowest.max(sent.elapsed());
        assert_eq!(a["status"], "fail", "{a}");
    }
    assert!(
        slowest < Duration::from_secs(1),
        "an answer waited {slowest:?} while the connection failed"
    );
    srv.close_input();
    let (status, stderr) = srv.wait();
    assert_eq!(status.code(), Some(5), "{stderr}");
}

/// sftper's README example, verbatim (the spec is checked against when present).
const SFTPER_SNIPPET: &str = r#"from subprocess import Popen, PIPE
log = open("sftper.log", "wb")
p = Popen(["./sftper", "sftp://localhost"],
          stdout=PIPE, stdin=PIPE, stderr=log, bufsize=0)
import json, os, struct
dat = json.dumps({"command": "LISTDIR", "args":{"path": "/path"}}).encode()
p.stdin.write(struct.pack('!I', len(dat)) + dat)
import json, os, struct
num = struct.unpack('!I', p.stdout.read(4))[0]
dat = p.stdout.read(num)
assert len(dat) == num
zult = json.loads(dat)
"#;

const SFTPER_SPEC: &str = "/work/shared/seeds/sftper-json-protocol.txt";

fn python3_available() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("NOTICE: python3 not found; skipping a test that runs Python");
    }
    ok
}

fn run_sftper_snippet(dir: &Path, snippet: &str) -> Value {
    let script = format!(
        "{snippet}\nprint(json.dumps(zult))\np.stdin.close()\nassert p.wait() == 0, 'exit status'\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .output()
        .expect("run python3");
    let log = fs::read_to_string(dir.join("sftper.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "python failed: {}\nsftper.log:\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the snippet printed JSON")
}

#[test]
fn sftper_readme_snippet_runs_as_written() {
    if !python3_available() {
        return;
    }
    if let Ok(spec) = fs::read_to_string(SFTPER_SPEC) {
        for line in SFTPER_SNIPPET.lines() {
            assert!(spec.contains(line.trim()), "not in the spec: {line}");
        }
    }
    let (_t, d) = tempdir();
    let wrapper = d.join("sftper");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' -D {} serve \"$@\"\n",
            sftpipe_bin().display(),
            sftp_server_path().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();

    // As written: "/path" normally does not exist, so the listing fails with not_found.
    let zult = run_sftper_snippet(&d, SFTPER_SNIPPET);
    match zult["status"].as_str() {
        Some("ok") => assert!(zult["data"].is_array(), "{zult}"),
        Some("error") => {
            assert_eq!(zult["code"], "not_found", "{zult}");
            assert!(
                zult["message"].as_str().unwrap().contains("/path"),
                "{zult}"
            );
        }
        _ => panic!("not a LISTDIR result: {zult}"),
    }
    // The same with a directory that exists.
    write_file(d.join("listed/file"), b"12345");
    let zult = run_sftper_snippet(&d, &SFTPER_SNIPPET.replace("/path", &s(&d.join("listed"))));
    assert_eq!(zult["status"], "ok", "{zult}");
    assert_eq!(zult["data"][0]["name"], "file");
    assert_eq!(zult["data"][0]["size"], 5);
}

#[test]
fn python_client_unittests_pass() {
    if !python3_available() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/python");
    let out = Command::new("python3")
        .args(["-m", "unittest", "-v"])
        .current_dir(&dir)
        .env("SFTPIPE", sftpipe_bin())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3 -m unittest");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python client tests failed:\n{err}");
    assert!(
        err.contains("Ran ") && !err.contains("Ran 0 tests"),
        "{err}"
    );
    assert!(
        !err.contains("skipped"),
        "python tests were skipped:\n{err}"
    );
}
