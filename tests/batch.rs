//! Batch mode (`sftpipe -b`): the same batch files under OpenSSH's `sftp -b` and
//! `sftpipe -b` against the test sshd, comparing the remote trees, the local trees (for
//! `get`), what they print on stdout and the exit codes.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::tree::{differences, snapshot};
use common::{Sshd, sftpipe_bin, write_file};

/// One client's run: its exit code and stdout (its remote directory's name replaced by
/// `REMOTE`, its local one's by `LOCAL`).
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `batch` with `program` (`sftp` or sftpipe) from a copy of `local` at
/// `work/NAME/local`, starting in the remote directory `work/NAME/remote` (a copy of
/// `remote`); with `stdin` the batch comes on standard input (`-b -`).
fn run_batch(
    sshd: &Sshd,
    program: &Path,
    name: &str,
    work: &Path,
    trees: (&Path, &Path),
    batch: &str,
    stdin: bool,
) -> Run {
    let base = work.join(name);
    let (local, remote) = (base.join("local"), base.join("remote"));
    copy_tree(trees.0, &local);
    copy_tree(trees.1, &remote);
    let file = base.join("batch");
    write_file(&file, batch);
    let mut cmd = Command::new(program);
    cmd.args(sshd.sftp_args())
        .arg("-b")
        .arg(if stdin { "-".into() } else { file.clone() })
        .arg(format!("{}:{}", sshd.destination(), remote.display()))
        .current_dir(&local)
        .env_remove("RUST_LOG")
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run the batch");
    if stdin {
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(batch.as_bytes()).expect("write the batch");
    }
    let out: Output = child.wait_with_output().expect("wait for the batch");
    let text = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .replace(&remote.display().to_string(), "REMOTE")
            .replace(&local.display().to_string(), "LOCAL")
    };
    Run {
        code: out.status.code(),
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp -a");
    assert!(ok.success(), "cp -a {} {}", from.display(), to.display());
}

/// Runs `batch` under both clients and checks they agree on everything; returns the
/// exit code.
fn same_as_sftp(local: &Path, remote: &Path, batch: &str, stdin: bool) -> (Option<i32>, String) {
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let want = run_batch(
        &sshd,
        Path::new("sftp"),
        "sftp",
        work.path(),
        (local, remote),
        batch,
        stdin,
    );
    let got = run_batch(
        &sshd,
        &sftpipe_bin(),
        "sftpipe",
        work.path(),
        (local, remote),
        batch,
        stdin,
    );
    let ctx = format!(
        "batch:\n{batch}\nsftp stderr:\n{}\nsftpipe stderr:\n{}",
        want.stderr, got.stderr
    );
    assert_eq!(got.code, want.code, "exit codes\n{ctx}");
    assert_eq!(got.stdout, want.stdout, "stdout\n{ctx}");
    for side in ["remote", "local"] {
        let (w, g) = (
            work.path().join("sftp").join(side),
            work.path().join("sftpipe").join(side),
        );
        let diff = differences(&w, &g, 20);
        assert!(diff.is_empty(), "{side} trees differ: {diff:#?}\n{ctx}");
    }
    (got.code, got.stdout)
}

/// A local tree to upload and an initial remote one.
fn trees() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let (local, remote) = (d.path().join("l"), d.path().join("r"));
    write_file(local.join("a.txt"), "alpha\n");
    write_file(local.join("b.txt"), "beta\n");
    write_file(local.join("c.log"), "gamma\n");
    write_file(local.join("dist/app-1.0.tar.gz"), vec![7u8; 100_000]);
    write_file(local.join("dist/app-1.0.zip"), vec![9u8; 3_000]);
    write_file(local.join("dist/sub/deep.txt"), "deep\n");
    write_file(local.join("odd name [1].txt"), "odd\n");
    write_file(remote.join("old/one.deb"), "one\n");
    write_file(remote.join("old/two.deb"), "two\n");
    write_file(remote.join("old/notes"), "notes\n");
    fs::create_dir_all(remote.join("incoming")).unwrap();
    (d, local, remote)
}

#[test]
fn a_deploy_script_matches_sftp() {
    let (_d, local, remote) = trees();
    let batch = "\
# deploy
pwd
mkdir releases
cd releases
put a.txt
lcd dist
put app-1.0.tar.gz
put -p app-1.0.zip app.zip
lcd ..
put *.txt
put \"odd name [1].txt\" 'quoted name'
-rm does-not-exist
@put c.log
ls -1
cd ..
put -r dist
rename releases/a.txt releases/renamed.txt
ln -s releases/renamed.txt latest
chmod 600 releases/b.txt
rmdir incoming
lmkdir fetched
get old/*.deb fetched
get old/notes
-get missing-file
version
bye
put never.txt
";
    let (code, out) = same_as_sftp(&local, &remote, batch, false);
    assert_eq!(code, Some(0));
    assert!(out.contains("sftp> ls -1\n"), "{out}");
    assert!(!out.contains("c.log\nsftp"), "@ echoed: {out}");
}

#[test]
fn a_failing_command_stops_the_batch() {
    let (_d, local, remote) = trees();
    let batch = "\
put a.txt
rm no-such-file
put b.txt
";
    let (code, _) = same_as_sftp(&local, &remote, batch, false);
    assert_eq!(code, Some(1));
    // A failing upload (no such local file) in the middle of a run of uploads.
    let batch = "\
put a.txt incoming
put no-such-local incoming
put b.txt incoming
";
    let (code, _) = same_as_sftp(&local, &remote, batch, false);
    assert_eq!(code, Some(1));
    // A failing cd: the rest would land elsewhere.
    let (code, _) = same_as_sftp(&local, &remote, "cd nowhere\nput a.txt\n", true);
    assert_eq!(code, Some(1));
}

#[test]
fn dependent_lines_wait_for_the_uploads_before_them() {
    let (_d, local, remote) = trees();
    let mut batch = String::new();
    for i in 0..40 {
        write_file(
            local.join(format!("many/f{i:02}")),
            format!("file {i}\n").repeat(i * 50 + 1),
        );
        batch.push_str(&format!("put many/f{i:02} incoming\n"));
    }
    // Two uploads to one name: the second one wins, as in order.
    batch.push_str("put a.txt incoming/same\nput b.txt incoming/same\n");
    batch.push_str(
        "\
rename incoming/f00 incoming/first
rename incoming/f03 incoming/f04
rm incoming/f01
get incoming/f02 copy-of-f02
put copy-of-f02 incoming/f02-again
cd incoming
-put nothing-here
ls -1
",
    );
    let (code, out) = same_as_sftp(&local, &remote, &batch, true);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("\nfirst\n") && !out.contains("\nf01\n"),
        "{out}"
    );
}

#[test]
fn globs_and_relative_paths_match_sftp() {
    let (_d, local, remote) = trees();
    let batch = "\
cd old
get *.deb
lcd dist
put *.zip ../incoming
cd ../incoming
put ../../l/b.txt
put '*.zip' literal
-put '*.zip'
ls -1 ../old/*.deb
chmod 700 *
rm *.zip
";
    let (code, _) = same_as_sftp(&local, &remote, batch, false);
    // The literal '*.zip' does not exist locally: the last line's failure stops it.
    assert_eq!(code, Some(1));
    let snap = snapshot(&local);
    assert!(!snap.is_empty());
}
