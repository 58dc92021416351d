//! The scp fallback against real servers: OpenSSH's sshd without its SFTP subsystem
//! (the automatic fallback), Dropbear without an sftp-server (embedded hosts), and a
//! hostile scp source run as the "ssh program".

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::dropbear::{Dropbear, dropbear_available};
use common::tree::differences;
use common::{Sshd, random_bytes, read_file, sftpipe_bin, sshd_available, write_file};

const FALLBACK: &str = "; using scp protocol";

fn sftpipe(args: &[String], extra: &[&str]) -> Output {
    Command::new(sftpipe_bin())
        .args(args)
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run sftpipe")
}

fn explain(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Names the remote shell and scp must take literally.
const ODD: [&str; 9] = [
    "plain.txt",
    "sp ace.bin",
    "q'uote\"s",
    "dollar $HOME $(id)",
    "back`id`tick",
    "-dash",
    "sub dir/-x",
    "sub dir/deeper/empty",
    "ünï €",
];

fn odd_local_tree(root: &Path) {
    for (i, name) in ODD.iter().enumerate() {
        let size = match i {
            1 => 300_000,
            7 => 0,
            _ => 100 + i * 777,
        };
        write_file(root.join(name), random_bytes(size, i as u64));
    }
    fs::create_dir_all(root.join("empty dir")).unwrap();
    fs::set_permissions(root.join("plain.txt"), fs::Permissions::from_mode(0o640)).unwrap();
}

/// put, put -r -p, several files into a directory, a target with a newline, get, get -r
/// -p: everything compared byte for byte. `conn` is the connection options and
/// `extra` comes before the command (e.g. --scp); `banner` whether the fallback is said.
fn exercise(conn: &[String], host: &str, banner: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    odd_local_tree(&src);
    let remote = tmp.path().join("remote");
    fs::create_dir_all(&remote).unwrap();
    let r = |rel: &str| format!("{host}:{}/{rel}", remote.display());
    let s = |rel: &str| src.join(rel).display().to_string();

    // One file, to a new name that starts with a dash.
    let out = sftpipe(conn, &["put", &s("sp ace.bin"), &r("-single")]);
    assert!(out.status.success(), "{}", explain(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).contains(FALLBACK),
        banner,
        "{}",
        explain(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in place"),
        "{}",
        explain(&out)
    );
    assert_eq!(
        read_file(remote.join("-single")),
        read_file(src.join("sp ace.bin"))
    );

    // A tree with times and modes.
    let out = sftpipe(conn, &["put", "-r", "-p", &s(""), &r("tree")]);
    assert!(out.status.success(), "{}", explain(&out));
    assert_eq!(
        differences(&src, &remote.join("tree"), 10),
        Vec::<String>::new()
    );
    let (a, b) = (
        fs::metadata(src.join("q'uote\"s")).unwrap(),
        fs::metadata(remote.join("tree/q'uote\"s")).unwrap(),
    );
    assert_eq!(a.mtime(), b.mtime());
    assert_eq!(
        fs::metadata(remote.join("tree/plain.txt")).unwrap().mode() & 0o777,
        0o640
    );

    // Several files into an existing directory; a target whose directory has a newline.
    let into = remote.join("into");
    fs::create_dir_all(&into).unwrap();
    let out = sftpipe(
        conn,
        &[
            "put",
            &s("-dash"),
            &s("back`id`tick"),
            &s("dollar $HOME $(id)"),
            &r("into"),
        ],
    );
    assert!(out.status.success(), "{}", explain(&out));
    for n in ["-dash", "back`id`tick", "dollar $HOME $(id)"] {
        assert_eq!(read_file(into.join(n)), read_file(src.join(n)), "{n}");
    }
    // A tree into an existing directory (over several sessions, times of its top set
    // last), and one over a single session.
    let out = sftpipe(conn, &["put", "-r", "-p", &s(""), &r("into")]);
    assert!(out.status.success(), "{}", explain(&out));
    assert_eq!(
        differences(&src, &into.join("src"), 10),
        Vec::<String>::new()
    );
    let top = |p: &Path| fs::metadata(p).unwrap().mtime();
    assert_eq!(top(&src), top(&into.join("src")));
    assert_eq!(top(&src.join("sub dir")), top(&into.join("src/sub dir")));
    let out = sftpipe(
        conn,
        &["put", "-r", "--max-open", "1", &s(""), &r("one session")],
    );
    assert!(out.status.success(), "{}", explain(&out));
    assert_eq!(
        differences(&src, &remote.join("one session"), 10),
        Vec::<String>::new()
    );
    fs::create_dir_all(remote.join("new\nline")).unwrap();
    let out = sftpipe(conn, &["put", &s("plain.txt"), &r("new\nline/x 'y'")]);
    assert!(out.status.success(), "{}", explain(&out));
    assert_eq!(
        read_file(remote.join("new\nline/x 'y'")),
        read_file(src.join("plain.txt"))
    );

    // Downloads: one file, one from the newline directory, and the tree.
    let got = tmp.path().join("got");
    fs::create_dir_all(&got).unwrap();
    let out = sftpipe(
        conn,
        &["get", &r("tree/q'uote\"s"), &got.display().to_string()],
    );
    assert!(out.status.success(), "{}", explain(&out));
    assert_eq!(
        read_file(got.join("q'uote\"s")),
        read_file(src.join("q'uote\"s"))
    );
    let out = sftpipe(
        conn,
        &[
            "get",
            &r("new\nline/x 'y'"),
            &got.join("-nl").display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", explain(&out));
    assert_eq!(read_file(got.join("-nl")), read_file(src.join("plain.txt")));
    let out = sftpipe(
        conn,
        &[
            "get",
            "-r",
            "-p",
            &r("tree"),
            &got.join("tree").display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", explain(&out));
    assert_eq!(
        differences(&src, &got.join("tree"), 10),
        Vec::<String>::new()
    );
    let b = fs::metadata(got.join("tree/q'uote\"s")).unwrap();
    assert_eq!(a.mtime(), b.mtime());
    let leftovers: Vec<_> = fs::read_dir(&got)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("sftpipe-scp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // What needs SFTP fails with exit 6, saying why.
    let out = sftpipe(conn, &["ls", &r("")]);
    assert_eq!(out.status.code(), Some(6), "{}", explain(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs SFTP"),
        "{}",
        explain(&out)
    );
}

/// A sink that refuses a file (a directory has its name) or a directory (a file has its
/// name): those fail, the rest lands, and nothing of the refused ones lands elsewhere
/// (their data is not read as records, their contents not put one level up).
fn refusals(conn: &[String], host: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    odd_local_tree(&src);
    let got = tmp.path().join("blocked/src");
    fs::create_dir_all(got.join("plain.txt")).unwrap();
    write_file(got.join("sub dir"), b"a file where a directory goes");
    let target = format!("{host}:{}", tmp.path().join("blocked").display());
    let out = sftpipe(conn, &["put", "-r", &src.display().to_string(), &target]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plain.txt") && err.contains("sub dir"),
        "{}",
        explain(&out)
    );
    for name in ODD
        .iter()
        .filter(|n| !n.starts_with("sub dir/") && **n != "plain.txt")
    {
        assert_eq!(
            read_file(got.join(name)),
            read_file(src.join(name)),
            "{name}"
        );
    }
    for stray in ["-x", "deeper", "plain.txt/plain.txt"] {
        assert!(!got.join(stray).exists(), "{stray}: {}", explain(&out));
    }
    assert_eq!(fs::read_dir(got.join("plain.txt")).unwrap().count(), 0);
}

#[test]
fn openssh_without_the_sftp_subsystem_falls_back_to_scp() {
    if !sshd_available() {
        return;
    }
    let sshd = Sshd::start_with_config(common::without_sftp_subsystem);
    let conn = sshd.sftp_args();
    exercise(&conn, &sshd.destination(), true);
    let forced: Vec<String> = [vec!["--scp".to_string()], conn].concat();
    exercise(&forced, &sshd.destination(), false);
    refusals(&forced, &sshd.destination());
    let out = sftpipe(
        &forced,
        &["rm", &format!("{}:/nonexistent", sshd.destination())],
    );
    assert_eq!(out.status.code(), Some(6), "{}", explain(&out));
    // The outcome is told as for SFTP: an object per file and a summary.
    let tmp = tempfile::tempdir().unwrap();
    write_file(tmp.path().join("f"), b"json");
    let dest = format!("{}:{}/g", sshd.destination(), tmp.path().display());
    let out = sftpipe(
        &forced,
        &[
            "put",
            "--progress=json",
            &tmp.path().join("f").display().to_string(),
            &dest,
        ],
    );
    assert!(out.status.success(), "{}", explain(&out));
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        json.contains(r#""event":"file""#) && json.contains(r#""files":1"#),
        "{}",
        explain(&out)
    );
    // Standard input needs SFTP's rename: refused before anything is read or sent.
    let out = sftpipe(
        &forced,
        &["put", "-", &format!("{}:/tmp/x", sshd.destination())],
    );
    assert_eq!(out.status.code(), Some(6), "{}", explain(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs SFTP"), "{}", explain(&out));
}

#[test]
fn dropbear_without_an_sftp_server_falls_back_to_scp() {
    if !dropbear_available() {
        return;
    }
    let db = Dropbear::start();
    let conn = db.sftpipe_args();
    exercise(&conn, "root@127.0.0.1", true);
    let forced: Vec<String> = [vec!["--scp".to_string()], conn].concat();
    exercise(&forced, "root@127.0.0.1", false);
    refusals(&forced, "root@127.0.0.1");
}

/// A fake "ssh" that plays an scp source sending `stream`, then reads until the end.
fn hostile_ssh(dir: &Path, stream: &[u8]) -> String {
    let data = dir.join("stream");
    fs::write(&data, stream).unwrap();
    let script = dir.join("fake-ssh");
    fs::write(
        &script,
        format!("#!/bin/sh\ncat '{}'\nexec cat >/dev/null\n", data.display()),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script.display().to_string()
}

#[test]
fn a_hostile_scp_source_is_refused_and_writes_nothing_outside_the_target() {
    let cases: [(&str, bool, &[u8]); 12] = [
        ("another name", false, b"C0644 3 b\nabc\0"),
        ("a second file", false, b"C0644 3 a\nabc\0C0644 3 b\nabc\0"),
        ("a parent name", false, b"C0644 3 ../a\nabc\0"),
        (
            "an absolute name",
            true,
            b"D0755 0 a\nC0644 3 /tmp/evil\nabc\0E\n",
        ),
        (
            "a dot-dot directory",
            true,
            b"D0755 0 a\nD0755 0 ..\nC0644 3 evil\nabc\0E\nE\n",
        ),
        ("a dot directory", true, b"D0755 0 a\nD0755 0 .\nE\nE\n"),
        (
            "an unmatched E",
            true,
            b"D0755 0 a\nE\nE\nC0644 3 evil\nabc\0",
        ),
        ("an empty name", false, b"C0644 3 \nabc\0"),
        ("a NUL in the name", false, b"C0644 3 a\0b\nabc\0"),
        ("fewer bytes than announced", false, b"C0644 10 a\nabc"),
        ("more bytes than announced", false, b"C0644 1 a\nabc\0"),
        (
            "an impossible time",
            false,
            b"T18446744073709551615 0 0 0\nC0644 3 a\nabc\0",
        ),
    ];
    for (what, recursive, stream) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let ssh = hostile_ssh(tmp.path(), stream);
        let outside = tmp.path().join("outside");
        let target = outside.join("target");
        fs::create_dir_all(&target).unwrap();
        let mut args = vec![
            "-S".to_string(),
            ssh,
            "--scp".into(),
            "get".into(),
            "-p".into(),
        ];
        if recursive {
            args.push("-r".into());
        }
        let dest = target.join("a").display().to_string();
        args.extend(["h:/srv/a".to_string(), dest]);
        let out = sftpipe(&args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{what}: {}", explain(&out));
        assert!(err.contains("protocol error"), "{what}: {}", explain(&out));
        assert!(!err.contains("panicked"), "{what}: {}", explain(&out));
        // Nothing but the target directory and (for trees) the refused tree's top.
        let mut found = Vec::new();
        let mut stack = vec![outside.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    found.push(e.path());
                }
            }
        }
        // The requested file may be whole before a second one is refused.
        if what == "a second file" {
            found.retain(|f| *f != target.join("a") || read_file(f) != b"abc");
        }
        assert!(found.is_empty(), "{what}: files written: {found:?}");
        assert!(
            !Path::new("/tmp/evil").exists()
                || fs::metadata("/tmp/evil").is_ok_and(|m| m.len() != 3),
            "{what}"
        );
        assert!(!tmp.path().join("evil").exists(), "{what}");
    }
}

/// A source whose ssh dies midway (status 255) is a lost connection (exit 5) with ssh's
/// last words, and leaves no partial file behind.
#[test]
fn a_source_cut_off_midway_is_a_lost_connection_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("dying-ssh");
    fs::write(
        &script,
        "#!/bin/sh\nprintf 'C0644 10 a\\nabc'\necho 'Connection reset by peer' >&2\nexit 255\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let target = tmp.path().join("target");
    fs::create_dir_all(&target).unwrap();
    let args = [
        "-S".to_string(),
        script.display().to_string(),
        "--scp".into(),
        "get".into(),
        "h:/srv/a".into(),
        target.display().to_string(),
    ];
    let out = sftpipe(&args, &[]);
    assert_eq!(out.status.code(), Some(5), "{}", explain(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Connection reset by peer"),
        "{}",
        explain(&out)
    );
    assert_eq!(
        fs::read_dir(&target).unwrap().count(),
        0,
        "{}",
        explain(&out)
    );
}

/// SIGTERM while waiting for a sink that never answers: sftpipe ends the ssh child and
/// exits 143. The signal goes once the header has reached the "server" (bytes moved).
#[test]
fn sigterm_while_a_sink_stalls_ends_the_child_and_exits_143() {
    let tmp = tempfile::tempdir().unwrap();
    let recorded = tmp.path().join("recorded");
    let pid_file = tmp.path().join("pid");
    let script = tmp.path().join("stalling-ssh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > '{}'\nprintf '\\0'\nexec cat > '{}'\n",
            pid_file.display(),
            recorded.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let local = tmp.path().join("f");
    write_file(&local, b"data");
    let mut child = Command::new(sftpipe_bin())
        .arg("-S")
        .arg(&script)
        .args(["--scp", "put"])
        .arg(&local)
        .arg("h:/srv/f")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !fs::read(&recorded).is_ok_and(|r| r.starts_with(b"C0644 4 f\n")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the header never arrived"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sftpipe did not end on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert_eq!(out.status.code(), Some(143), "{}", explain(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SIGTERM"),
        "{}",
        explain(&out)
    );
    let pid = fs::read_to_string(&pid_file).unwrap();
    let proc = Path::new("/proc").join(pid.trim());
    while proc.exists()
        && !fs::read_to_string(proc.join("stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the ssh child was left running"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
