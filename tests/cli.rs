//! End-to-end tests of the `sftpipe` binary: against a local `sftp-server` (`-D`) and
//! through a real sshd (the harness in `tests/common`). The "remote" is this machine, so
//! every effect is checked on the local file system.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    KillOnDrop, Sshd, TEST_USER, dir_file_bytes, kill_once_a_file_grows, output_within,
    pid_recording_server, process_alive, random_bytes, read_file, read_pid, send_signal,
    sftp_server_path, wait_until, write_file,
};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn explain(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn run_in(dir: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sftpipe"));
    cmd.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.output().expect("run sftpipe")
}

/// Runs `sftpipe -D sftp-server ARGS`.
fn local(args: &[&str]) -> Output {
    let server = sftp_server_path().display().to_string();
    let mut all = vec!["-D", server.as_str()];
    all.extend_from_slice(args);
    run_in(None, &all)
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", explain(&out));
    out
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(path: &Path, secs: u64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

/// A small tree: a.txt, b.bin, .hidden, sub/c.txt, sub/deeper/d.bin, link -> a.txt.
fn make_tree(root: &Path) {
    write_file(root.join("a.txt"), b"alpha\n");
    write_file(root.join("b.bin"), random_bytes(70_000, 1));
    write_file(root.join(".hidden"), b"h");
    write_file(root.join("sub/c.txt"), b"gamma");
    write_file(root.join("sub/deeper/d.bin"), random_bytes(300_000, 2));
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
}

fn assert_same_tree(a: &Path, b: &Path) {
    for rel in ["a.txt", "b.bin", ".hidden", "sub/c.txt", "sub/deeper/d.bin"] {
        assert_eq!(read_file(a.join(rel)), read_file(b.join(rel)), "{rel}");
    }
    assert_eq!(
        fs::read_link(b.join("link")).unwrap(),
        PathBuf::from("a.txt")
    );
}

// ---------------------------------------------------------------------------------------
// Listing and attributes
// ---------------------------------------------------------------------------------------

#[test]
fn ls_lists_sorted_names_and_hides_dotfiles() {
    let d = tempfile::tempdir().unwrap();
    make_tree(d.path());
    let out = ok(local(&["ls", &p(d.path())]));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines, ["a.txt", "b.bin", "link", "sub"]);

    let out = ok(local(&["ls", "-a", "-1", &p(d.path())]));
    assert!(text(&out.stdout).lines().any(|l| l == ".hidden"));

    // A file operand lists just itself.
    let f = p(&d.path().join("a.txt"));
    let out = ok(local(&["ls", &f]));
    assert_eq!(text(&out.stdout).trim(), f);
}

#[test]
fn ls_long_shows_modes_sizes_and_link_targets() {
    let d = tempfile::tempdir().unwrap();
    make_tree(d.path());
    set_mode(&d.path().join("a.txt"), 0o640);
    set_mode(&d.path().join("sub"), 0o751);
    let out = ok(local(&["ls", "-l", &p(d.path())]));
    let s = text(&out.stdout);
    let line = |name: &str| {
        s.lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("no {name} in {s}"))
            .to_string()
    };
    assert!(line(" a.txt").starts_with("-rw-r----- "), "{s}");
    assert!(line(" a.txt").contains(" 6 "), "{s}");
    assert!(line(" sub").starts_with("drwxr-x--x "), "{s}");
    assert!(line("link -> a.txt").starts_with("lrwxrwxrwx "), "{s}");
    assert!(line(" b.bin").contains(" 70000 "), "{s}");
}

#[test]
fn ls_of_several_operands_prints_headers_and_fails_softly() {
    let d = tempfile::tempdir().unwrap();
    make_tree(d.path());
    let sub = p(&d.path().join("sub"));
    let missing = p(&d.path().join("missing"));
    let out = local(&["ls", &p(d.path()), &sub, &missing]);
    assert_eq!(code(&out), 1, "{}", explain(&out));
    let s = text(&out.stdout);
    assert!(s.contains(&format!("{sub}:\nc.txt\ndeeper\n")), "{s}");
    assert!(text(&out.stderr).contains("missing"), "{}", explain(&out));
}

#[test]
fn stat_shows_type_size_mode_and_times() {
    let d = tempfile::tempdir().unwrap();
    make_tree(d.path());
    let a = d.path().join("a.txt");
    set_mode(&a, 0o604);
    set_mtime(&a, 1_700_000_000);
    let out = ok(local(&["stat", &p(&a), &p(&d.path().join("link"))]));
    let s = text(&out.stdout);
    assert!(s.contains("Type: regular file"), "{s}");
    assert!(s.contains("Size: 6"), "{s}");
    assert!(s.contains("Mode: 0604 (-rw----r--)"), "{s}");
    assert!(s.contains("Uid: 0"), "{s}");
    assert!(s.contains("Modify: 2023-11-14T22:13:20Z"), "{s}");
    assert!(s.contains("link -> a.txt"), "{s}");
    assert!(s.contains("Type: symbolic link"), "{s}");
}

#[test]
fn df_and_realpath() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("x")).unwrap();
    let out = ok(local(&["df", &p(d.path())]));
    let s = text(&out.stdout);
    assert!(s.starts_with("1K-blocks"), "{s}");
    assert!(s.contains('%'), "{s}");
    let out = ok(local(&["df", "-h", "-i", &p(d.path())]));
    assert!(text(&out.stdout).starts_with("Inodes") || text(&out.stdout).contains("Inodes"));
    let out = ok(local(&["df", "-h", &p(d.path())]));
    assert!(text(&out.stdout).starts_with("Size"), "{}", explain(&out));

    let canonical = fs::canonicalize(d.path()).unwrap();
    let twisted = format!("{}/x/../x/.", p(d.path()));
    let out = ok(local(&["realpath", &twisted]));
    assert_eq!(text(&out.stdout).trim(), p(&canonical.join("x")));
}

// ---------------------------------------------------------------------------------------
// Transfers
// ---------------------------------------------------------------------------------------

#[test]
fn get_single_file_into_directory_and_to_a_name() {
    let d = tempfile::tempdir().unwrap();
    let data = random_bytes(200_000, 7);
    write_file(d.path().join("remote/f.bin"), &data);
    let dest = d.path().join("dl");
    fs::create_dir(&dest).unwrap();
    let remote = p(&d.path().join("remote/f.bin"));
    ok(local(&["get", &remote, &p(&dest)]));
    assert_eq!(read_file(dest.join("f.bin")), data);
    ok(local(&["get", &remote, &p(&dest.join("renamed"))]));
    assert_eq!(read_file(dest.join("renamed")), data);
}

#[test]
fn get_preserves_mode_and_mtime_with_p() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("f");
    write_file(&src, b"keep me");
    set_mode(&src, 0o751);
    set_mtime(&src, 1_000_000_000);
    let dest = d.path().join("copy");
    ok(local(&["get", "-p", &p(&src), &p(&dest)]));
    assert_eq!(read_file(&dest), b"keep me");
    let m = fs::metadata(&dest).unwrap();
    assert_eq!(m.mtime(), 1_000_000_000);
    assert_eq!(mode_of(&dest), 0o751);
}

#[test]
fn get_directory_needs_r_and_copies_the_tree() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("tree");
    make_tree(&src);
    let dl = d.path().join("dl");
    fs::create_dir(&dl).unwrap();
    let out = local(&["get", &p(&src), &p(&dl)]);
    assert_eq!(code(&out), 2, "{}", explain(&out));
    assert!(text(&out.stderr).contains("-r"), "{}", explain(&out));

    // Into an existing directory: dl/tree.
    ok(local(&["get", "-r", &p(&src), &p(&dl)]));
    assert_same_tree(&src, &dl.join("tree"));
    // To a new name.
    let fresh = d.path().join("fresh");
    ok(local(&[
        "get",
        "-r",
        "--progress=none",
        &p(&src),
        &p(&fresh),
    ]));
    assert_same_tree(&src, &fresh);
    // -r on a plain file: its OPENDIR, sent with the handshake, fails quietly.
    let one = d.path().join("one");
    ok(local(&["get", "-r", &p(&src.join("a.txt")), &p(&one)]));
    assert_eq!(read_file(&one), read_file(src.join("a.txt")));
}

#[test]
fn put_single_file_and_several_into_a_new_directory() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    let b = d.path().join("b");
    write_file(&a, random_bytes(100_000, 3));
    write_file(&b, b"bee");
    let remote = d.path().join("remote");
    fs::create_dir(&remote).unwrap();

    // REMOTE an existing directory: goes in under its name.
    ok(local(&["put", &p(&a), &p(&remote)]));
    assert_eq!(read_file(remote.join("a")), read_file(&a));
    // REMOTE a new name.
    ok(local(&["put", &p(&b), &p(&remote.join("b2"))]));
    assert_eq!(read_file(remote.join("b2")), b"bee");
    // Several files into "new/" (created).
    let target = format!("{}/", p(&remote.join("new")));
    ok(local(&["put", &p(&a), &p(&b), &target]));
    assert_eq!(read_file(remote.join("new/a")), read_file(&a));
    assert_eq!(read_file(remote.join("new/b")), b"bee");
    // Several files to something that is not a directory: usage error.
    let out = local(&["put", &p(&a), &p(&b), &p(&remote.join("nodir"))]);
    assert_eq!(code(&out), 2, "{}", explain(&out));
}

#[test]
fn put_preserves_mode_and_mtime_with_p() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("f");
    write_file(&src, b"xyz");
    set_mode(&src, 0o604);
    set_mtime(&src, 1_234_567_890);
    let dest = d.path().join("up");
    ok(local(&["put", "-p", &p(&src), &p(&dest)]));
    assert_eq!(read_file(&dest), b"xyz");
    assert_eq!(fs::metadata(&dest).unwrap().mtime(), 1_234_567_890);
    assert_eq!(mode_of(&dest), 0o604);
}

#[test]
fn put_tree_needs_r_and_copies_it() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("tree");
    make_tree(&src);
    let remote = d.path().join("remote");
    fs::create_dir(&remote).unwrap();
    let out = local(&["put", &p(&src), &p(&remote)]);
    assert_eq!(code(&out), 2, "{}", explain(&out));

    ok(local(&["put", "-r", &p(&src), &p(&remote)]));
    assert_same_tree(&src, &remote.join("tree"));
    // To a new name, with tuning flags.
    let fresh = d.path().join("fresh");
    ok(local(&[
        "put",
        "-r",
        "--buffer",
        "32K",
        "--requests",
        "4",
        "--max-open",
        "2",
        &p(&src),
        &p(&fresh),
    ]));
    assert_same_tree(&src, &fresh);
}

#[test]
fn progress_json_lines_parse() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("tree");
    make_tree(&src);
    let out = ok(local(&[
        "put",
        "-r",
        "--progress=json",
        &p(&src),
        &p(&d.path().join("up")),
    ]));
    let mut files = 0;
    let mut summary = None;
    for line in text(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect(line);
        match v["event"].as_str() {
            Some("file") => {
                assert_eq!(v["ok"], true, "{line}");
                assert!(v["path"].is_string() && v["bytes"].is_u64(), "{line}");
                files += 1;
            }
            Some("summary") => summary = Some(v),
            // Bytes in flight, at most every 250 ms.
            Some("progress") => {}
            _ => panic!("unexpected line {line}"),
        }
    }
    assert_eq!(files, 5);
    let s = summary.expect("summary line");
    assert_eq!(s["files"], 5);
    assert_eq!(s["failed"], 0);
    assert_eq!(s["bytes"], 6 + 70_000 + 1 + 5 + 300_000);
    assert!(s["elapsed_ms"].is_u64());

    // A failure is an event with an error, and the summary counts it.
    let out = local(&[
        "get",
        "--progress=json",
        &p(&d.path().join("missing")),
        &p(d.path()),
    ]);
    assert_eq!(code(&out), 3, "{}", explain(&out));
    let out = local(&[
        "put",
        "--progress=json",
        &p(&src.join("a.txt")),
        &p(&d.path().join("nodir/x/")),
    ]);
    // REMOTE ending in "/" is created, parents included.
    assert!(out.status.success(), "{}", explain(&out));
}

#[test]
fn failures_in_a_tree_are_listed_and_exit_1() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("tree");
    make_tree(&src);
    // A local directory where a file must go makes that one file fail.
    let dest = d.path().join("dest");
    fs::create_dir_all(dest.join("tree/a.txt")).unwrap();

    let out = local(&["get", "-r", "--progress=json", &p(&src), &p(&dest)]);
    assert_eq!(code(&out), 1, "{}", explain(&out));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    let failed: Vec<_> = lines.iter().filter(|v| v["ok"] == false).collect();
    assert_eq!(failed.len(), 1, "{}", explain(&out));
    assert!(failed[0]["path"].as_str().unwrap().ends_with("a.txt"));
    assert!(failed[0]["error"].as_str().unwrap().contains("a.txt"));
    let summary = lines.last().unwrap();
    assert_eq!(
        (summary["failed"].as_u64(), summary["files"].as_u64()),
        (Some(1), Some(4))
    );
    assert_eq!(
        read_file(dest.join("tree/sub/deeper/d.bin")),
        read_file(src.join("sub/deeper/d.bin"))
    );

    // Without JSON: each failure on stderr, then the count.
    let out = local(&["get", "-r", &p(&src), &p(&dest)]);
    assert_eq!(code(&out), 1, "{}", explain(&out));
    let err = text(&out.stderr);
    assert!(err.contains("a.txt: "), "{err}");
    assert!(err.contains("1 of 5 files failed"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn put_r_and_get_r_land_everything_but_an_unreadable_directory() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    write_file(src.join("top"), b"top");
    write_file(src.join("a/one"), b"one");
    write_file(src.join("bad/inside"), b"unseen");
    let into = d.path().join("into");
    fs::create_dir(&into).unwrap();
    common::give_to_test_user(d.path());
    set_mode(&src.join("bad"), 0o000);
    let put = |target: &Path| {
        common::sftpipe_as_test_user(&["put", "-r", &p(&src), &format!(":{}", p(target))])
    };

    // Into an existing directory: everything else lands in place.
    let out = put(&into);
    assert_eq!(code(&out), 1, "{}", explain(&out));
    let err = text(&out.stderr);
    let named = format!(
        "{}: cannot list {}",
        p(&into.join("src/bad")),
        p(&src.join("bad"))
    );
    assert!(err.contains(&named), "{err}");
    assert!(err.contains("1 of 3 files failed"), "{err}");
    assert_eq!(read_file(into.join("src/top")), b"top");
    assert_eq!(read_file(into.join("src/a/one")), b"one");
    assert!(!into.join("src/bad").exists());

    // A new tree appears whole or not at all: it stays staged, and the message says where.
    let (fresh, staging) = (
        d.path().join("fresh"),
        d.path().join(".fresh.sftpipe-partial"),
    );
    let out = put(&fresh);
    assert_eq!(code(&out), 1, "{}", explain(&out));
    assert!(
        text(&out.stderr).contains(&p(&staging)),
        "{}",
        explain(&out)
    );
    assert!(
        fs::symlink_metadata(&fresh).is_err(),
        "a half-made tree was published"
    );
    assert_eq!(read_file(staging.join("a/one")), b"one");
    // Readable again, the rerun completes the staged tree and moves it into place.
    set_mode(&src.join("bad"), 0o755);
    ok(put(&fresh));
    assert_eq!(read_file(fresh.join("bad/inside")), b"unseen");
    assert_eq!(read_file(fresh.join("top")), b"top");
    assert!(!staging.exists());

    // get -r: a remote directory the server may not list is one failure too.
    set_mode(&src.join("bad"), 0o000);
    let got = d.path().join("got");
    let out = common::sftpipe_as_test_user(&["get", "-r", &format!(":{}", p(&src)), &p(&got)]);
    assert_eq!(code(&out), 1, "{}", explain(&out));
    assert!(
        text(&out.stderr).contains(&p(&src.join("bad"))),
        "{}",
        explain(&out)
    );
    assert_eq!(read_file(got.join("top")), b"top");
    assert_eq!(read_file(got.join("a/one")), b"one");
}

/// Address-space ceilings (`prlimit --as`) of the `put -r` and `get -r` memory guards
/// for 50,000 files, debug build. Measured (VmPeak): `put -r` 63 MiB streaming, 152 MiB
/// when the tree was walked whole first (in a helper thread); `get -r` 43 MiB with a
/// bounded number of directories listed ahead, 68 MiB with every listing held at once.
const PUT_AS_CEILING: u64 = 96 << 20;
const GET_AS_CEILING: u64 = 58 << 20;

/// A tree of 50,000 files for the memory guards, and where it is to land.
fn many_files_tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    common::tree::many_empty_files(&src, 50_000);
    (d, src, dst)
}

fn assert_trees_identical(want: &Path, got: &Path) {
    let diff = common::tree::differences(want, got, 10);
    assert!(diff.is_empty(), "{}", diff.join("\n"));
}

#[test]
fn put_r_of_50000_files_stays_under_a_hard_memory_ceiling() {
    let (_d, src, dst) = many_files_tree();
    let args = ["put", "-r", &p(&src), &format!(":{}", p(&dst))];
    ok(common::sftpipe_under_memory_ceiling(PUT_AS_CEILING, &args));
    assert_trees_identical(&src, &dst);
}

#[test]
fn get_r_of_50000_files_stays_under_a_hard_memory_ceiling() {
    let (_d, src, dst) = many_files_tree();
    let args = ["get", "-r", &format!(":{}", p(&src)), &p(&dst)];
    ok(common::sftpipe_under_memory_ceiling(GET_AS_CEILING, &args));
    assert_trees_identical(&src, &dst);
}

#[test]
fn many_distinct_failures_are_listed_up_to_twenty() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    for i in 0..25 {
        write_file(src.join(format!("locked{i:02}")), b"x");
    }
    write_file(src.join("open"), b"o");
    let dest = d.path().join("dest");
    fs::create_dir(&dest).unwrap();
    common::give_to_test_user(d.path());
    for i in 0..25 {
        set_mode(&src.join(format!("locked{i:02}")), 0o000);
    }
    let out = common::sftpipe_as_test_user(&["put", "-r", &p(&src), &format!(":{}", p(&dest))]);
    assert_eq!(code(&out), 1, "{}", explain(&out));
    let err = text(&out.stderr);
    assert_eq!(
        err.lines().filter(|l| l.contains("locked")).count(),
        20,
        "{err}"
    );
    assert!(err.contains("... and 5 more failures"), "{err}");
    assert!(err.contains("25 of 26 files failed"), "{err}");
    assert_eq!(read_file(dest.join("src/open")), b"o");
}

#[test]
fn resume_continues_partial_files() {
    let d = tempfile::tempdir().unwrap();
    let data = random_bytes(150_000, 9);
    let src = d.path().join("src.bin");
    write_file(&src, &data);
    // Download: the local file holds the first part.
    let dl = d.path().join("dl.bin");
    write_file(&dl, &data[..60_000]);
    ok(local(&["get", "-a", &p(&src), &p(&dl)]));
    assert_eq!(read_file(&dl), data);
    // Upload: the remote file holds the first part.
    let up = d.path().join("up.bin");
    write_file(&up, &data[..70_000]);
    ok(local(&["put", "--resume", "--fsync", &p(&src), &p(&up)]));
    assert_eq!(read_file(&up), data);
    // --inplace writes straight to the name.
    let inplace = d.path().join("inplace.bin");
    ok(local(&["put", "--inplace", &p(&src), &p(&inplace)]));
    assert_eq!(read_file(&inplace), data);
}

#[test]
fn the_largest_buffer_is_lowered_to_what_openssh_accepts() {
    // sftp-server drops the connection on a packet above 256 KiB: a WRITE of 256 KiB of
    // data (plus its header) must be cut to its max-write-length, said once with -v.
    let d = tempfile::tempdir().unwrap();
    let data = random_bytes(3 << 20, 14);
    let src = d.path().join("src.bin");
    write_file(&src, &data);
    for (sub, from, to) in [
        ("put", &src, d.path().join("up.bin")),
        ("get", &src, d.path().join("down.bin")),
    ] {
        let out = ok(local(&["-v", sub, "--buffer", "256K", &p(from), &p(&to)]));
        assert!(read_file(&to) == data, "{sub}: the copy differs");
        let err = text(&out.stderr);
        assert_eq!(err.matches("lowered").count(), 1, "{sub}: {err}");
    }
}

/// A `put` of `new` onto `dst`, killed (with its server) once its temporary file holds
/// 40 MB; returns that file.
fn interrupted_put(new: &Path, dst: &Path) -> PathBuf {
    let server = p(&sftp_server_path());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sftpipe"));
    // Few small requests: slow enough to be caught midway.
    cmd.args(["-D", &server, "put", "--requests", "2", "--buffer", "32768"])
        .args([p(new), p(dst)]);
    kill_once_a_file_grows(&mut cmd, dst.parent().unwrap(), ".sftpipe-tmp", 40_000_000)
}

fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sftpipe-tmp"))
        .collect()
}

/// The bytes the `--progress=json` summary counts.
fn bytes_sent(out: &Output) -> u64 {
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).expect(last);
    assert_eq!(v["event"], "summary", "{stdout}");
    v["bytes"].as_u64().unwrap()
}

#[test]
fn put_a_after_an_interrupted_put_finishes_the_new_version() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("dst");
    let dst = dir.join("f.bin");
    let old = random_bytes(30_000_000, 1);
    write_file(&dst, &old);
    set_mtime(&dst, 1_600_000_000);
    // A leftover of another, older upload to the same name.
    let stale = dir.join(".f.bin.1234abcd.sftpipe-tmp");
    write_file(&stale, random_bytes(5_000_000, 3));
    set_mtime(&stale, 1_600_000_000);
    let src = d.path().join("new.bin");
    let new = random_bytes(64_000_000, 2);
    write_file(&src, &new);

    let temp = interrupted_put(&src, &dst);
    assert!(read_file(&dst) == old, "the old version was touched");
    assert!(temp != stale);
    let out = ok(local(&["-v", "put", "-a", &p(&src), &p(&dst)]));
    assert!(
        read_file(&dst) == new,
        "not the new version\n{}",
        explain(&out)
    );
    let err = text(&out.stderr);
    assert!(err.contains("resuming"), "{err}");
    assert_eq!(temp_files(&dir), Vec::<String>::new(), "{err}");
}

#[test]
fn plain_put_rerun_resumes_its_temporary_file() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("dst");
    fs::create_dir(&dir).unwrap();
    let dst = dir.join("f.bin");
    let src = d.path().join("new.bin");
    let new = random_bytes(64_000_000, 4);
    write_file(&src, &new);

    let temp = interrupted_put(&src, &dst);
    let kept = fs::metadata(&temp).unwrap().len();
    let out = ok(local(&["-v", "put", "--progress=json", &p(&src), &p(&dst)]));
    let sent = bytes_sent(&out);
    // Continued at most the byte budget (24 MiB) below what the interrupted run wrote: a
    // file this big may have been striped over several channels.
    assert!(
        sent <= 64_000_000 - kept + (24 << 20),
        "sent {sent} of 64000000 bytes, {kept} were there\n{}",
        explain(&out)
    );
    assert!(text(&out.stderr).contains("resuming"), "{}", explain(&out));
    assert!(read_file(&dst) == new, "not the new version");
    assert_eq!(temp_files(&dir), Vec::<String>::new());
}

/// `SUB -a` (put or get, both local through `-D`) onto a copy that is not a prefix of the
/// source, or may be an older version, never appends to it.
fn resume_never_appends_to_a_file_that_is_not_a_prefix(sub: &str) {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src.bin");
    let data = random_bytes(6_000_000, 5);
    write_file(&src, &data);
    set_mtime(&src, 1_700_000_000);
    // 32 KiB requests: a partial copy is continued 2 MiB below its end.
    let resume = |dst: &Path| {
        let args = [sub, "-a", "--buffer", "32768", "--progress=json"];
        local(&[&args[..], &[&p(&src), &p(dst)]].concat())
    };
    let other = random_bytes(4_000_000, 6);
    for (name, mtime) in [("newer", None), ("older", Some(1_600_000_000))] {
        // Different bytes: whatever the times say, the file is sent whole.
        let dst = d.path().join(format!("other-{name}.bin"));
        write_file(&dst, &other);
        if let Some(t) = mtime {
            set_mtime(&dst, t);
        }
        let out = ok(resume(&dst));
        assert!(
            read_file(&dst) == data,
            "{sub} {name}: corrupted\n{}",
            explain(&out)
        );
        assert_eq!(bytes_sent(&out), 6_000_000, "{sub} {name}");
    }
    // The source's first bytes, but last modified before the source was: maybe an older
    // version that differs elsewhere. Refused, untouched.
    let dst = d.path().join("older-prefix.bin");
    write_file(&dst, &data[..4_000_000]);
    set_mtime(&dst, 1_600_000_000);
    let out = resume(&dst);
    assert_eq!(code(&out), 2, "{}", explain(&out));
    let hint = format!("with plain {sub}");
    assert!(explain(&out).contains(&hint), "{}", explain(&out));
    assert!(read_file(&dst) == data[..4_000_000]);
    // Written after the source changed: continued.
    let dst = d.path().join("newer-prefix.bin");
    write_file(&dst, &data[..4_000_000]);
    let out = ok(resume(&dst));
    assert!(read_file(&dst) == data);
    assert_eq!(bytes_sent(&out), 6_000_000 - (4_000_000 - (2 << 20)));
}

#[test]
fn put_a_never_appends_to_a_file_that_is_not_a_prefix() {
    resume_never_appends_to_a_file_that_is_not_a_prefix("put");
}

#[test]
fn get_a_never_appends_to_a_file_that_is_not_a_prefix() {
    resume_never_appends_to_a_file_that_is_not_a_prefix("get");
}

// ---------------------------------------------------------------------------------------
// Simple operations
// ---------------------------------------------------------------------------------------

#[test]
fn rm_removes_files_and_f_ignores_missing() {
    let d = tempfile::tempdir().unwrap();
    make_tree(d.path());
    let a = d.path().join("a.txt");
    let link = d.path().join("link");
    ok(local(&["rm", &p(&a), &p(&link)]));
    assert!(!a.exists());
    assert!(fs::symlink_metadata(&link).is_err());
    let out = local(&["rm", &p(&a)]);
    assert_eq!(code(&out), 3, "{}", explain(&out));
    ok(local(&["rm", "-f", &p(&a)]));
}

#[test]
fn mkdir_p_m_and_rmdir() {
    let d = tempfile::tempdir().unwrap();
    let deep = d.path().join("x/y/z");
    let out = local(&["mkdir", &p(&deep)]);
    assert_eq!(code(&out), 3, "{}", explain(&out));
    ok(local(&["mkdir", "-p", &p(&deep)]));
    assert!(deep.is_dir());
    ok(local(&["mkdir", "-p", &p(&deep)]));
    let m = d.path().join("moded");
    ok(local(&["mkdir", "-m", "0705", &p(&m)]));
    assert_eq!(mode_of(&m), 0o705);
    // mkdir of an existing directory without -p fails.
    let out = local(&["mkdir", &p(&m)]);
    assert_eq!(code(&out), 1, "{}", explain(&out));

    ok(local(&["rmdir", &p(&deep), &p(&m)]));
    assert!(!deep.exists() && !m.exists());
    let out = local(&["rmdir", &p(&d.path().join("x"))]);
    assert!(!out.status.success(), "{}", explain(&out));
    assert!(d.path().join("x/y").is_dir());
}

#[test]
fn mv_replaces_an_existing_target_and_moves_into_directories() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    let b = d.path().join("b");
    write_file(&a, b"new");
    write_file(&b, b"old");
    ok(local(&["mv", &p(&a), &p(&b)]));
    assert!(!a.exists());
    assert_eq!(read_file(&b), b"new");

    let dir = d.path().join("dir");
    fs::create_dir(&dir).unwrap();
    ok(local(&["mv", &p(&b), &p(&dir)]));
    assert_eq!(read_file(dir.join("b")), b"new");
}

#[test]
fn ln_hard_and_symbolic() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    write_file(&a, b"x");
    let hard = d.path().join("hard");
    ok(local(&["ln", &p(&a), &p(&hard)]));
    assert_eq!(
        fs::metadata(&a).unwrap().ino(),
        fs::metadata(&hard).unwrap().ino()
    );
    let soft = d.path().join("soft");
    ok(local(&["ln", "-s", "some/where", &p(&soft)]));
    assert_eq!(fs::read_link(&soft).unwrap(), PathBuf::from("some/where"));
}

#[test]
fn chmod_sets_modes() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    let b = d.path().join("b");
    write_file(&a, b"x");
    write_file(&b, b"y");
    ok(local(&["chmod", "600", &p(&a), &p(&b)]));
    assert_eq!((mode_of(&a), mode_of(&b)), (0o600, 0o600));
    ok(local(&["chmod", "0755", &p(&a)]));
    assert_eq!(mode_of(&a), 0o755);
    let out = local(&["chmod", "u+x", &p(&a)]);
    assert_eq!(code(&out), 2, "{}", explain(&out));
}

// ---------------------------------------------------------------------------------------
// Habits from sftp, scp, ls and rm
// ---------------------------------------------------------------------------------------

#[test]
fn h_means_human_readable_and_ls_sorts_by_size_time_and_reverse() {
    let d = tempfile::tempdir().unwrap();
    write_file(d.path().join("big"), random_bytes(5000, 3));
    write_file(d.path().join("mid"), random_bytes(100, 4));
    write_file(d.path().join("small"), b"x");
    set_mtime(&d.path().join("big"), 1_500_000_000);
    set_mtime(&d.path().join("small"), 1_600_000_000);
    set_mtime(&d.path().join("mid"), 1_700_000_000);
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["ls"];
        all.extend_from_slice(args);
        let dir = p(d.path());
        all.push(&dir);
        let out = ok(local(&all));
        text(&out.stdout)
            .lines()
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
            .collect()
    };
    // -lh is a long listing with sizes like 4.9K, not the help text.
    let out = ok(local(&["ls", "-lh", &p(d.path())]));
    let listing = text(&out.stdout);
    assert!(
        listing.contains(" 4.9K ") && !listing.contains("Usage"),
        "{listing}"
    );
    assert_eq!(names(&["-S"]), ["big", "mid", "small"]);
    assert_eq!(names(&["-t"]), ["mid", "small", "big"]);
    assert_eq!(names(&["-rS"]), ["small", "mid", "big"]);
    assert_eq!(names(&["-1r"]), ["small", "mid", "big"]);
    // df -h too; help is --help everywhere (and a bare `sftpipe -h`).
    let out = ok(local(&["df", "-h", &p(d.path())]));
    assert!(text(&out.stdout).contains("Avail"), "{}", explain(&out));
    for args in [
        &["ls", "--help"][..],
        &["df", "--help"],
        &["--help"],
        &["-h"],
    ] {
        let out = ok(run_in(None, args));
        assert!(text(&out.stdout).contains("Usage: sftpipe"), "{args:?}");
    }
}

#[test]
fn a_missing_put_operand_is_named() {
    let out = run_in(None, &["put", "hello.txt"]);
    assert_eq!(code(&out), 2, "{}", explain(&out));
    let err = text(&out.stderr);
    assert!(err.contains("put: missing the REMOTE destination"), "{err}");
    let out = run_in(None, &["put", "host:dir/"]);
    assert_eq!(code(&out), 2, "{}", explain(&out));
    assert!(
        text(&out.stderr).contains("missing the LOCAL file"),
        "{}",
        explain(&out)
    );
}

#[test]
fn rm_r_removes_a_tree_and_counts_and_rm_rmdir_say_why_not() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("t");
    make_tree(&t);
    for i in 0..40 {
        write_file(t.join(format!("sub/many/{i}")), b"x");
    }
    let outside = d.path().join("outside");
    write_file(outside.join("kept"), b"k");
    std::os::unix::fs::symlink(&outside, t.join("sub/to_outside")).unwrap();

    let out = local(&["rm", &p(&t)]);
    assert_eq!(code(&out), 2, "{}", explain(&out));
    assert!(
        text(&out.stderr).contains("is a directory (use rm -r)"),
        "{}",
        explain(&out)
    );
    let out = local(&["rmdir", &p(&t)]);
    assert_eq!(code(&out), 1, "{}", explain(&out));
    assert!(
        text(&out.stderr).contains("directory not empty"),
        "{}",
        explain(&out)
    );

    let out = ok(local(&["rm", "-r", &p(&t)]));
    assert!(!t.exists());
    // a.txt b.bin .hidden link c.txt d.bin to_outside + 40; t sub deeper many.
    let err = text(&out.stderr);
    assert!(err.contains("removed 47 files, 4 directories"), "{err}");
    // The link was removed, not followed.
    assert!(outside.join("kept").exists());
    let out = local(&["rm", "-r", &p(&t)]);
    assert_eq!(code(&out), 3, "{}", explain(&out));
    ok(local(&["rm", "-rf", &p(&t)]));
}

#[test]
fn get_to_stdout_and_put_from_stdin_through_a_temporary_name() {
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    let data = random_bytes(3_000_000, 5);
    let src = d.path().join("src.bin");
    write_file(&src, &data);
    // get REMOTE - writes the bytes to stdout (a pipe here), nothing else.
    let out = ok(local(&["get", &p(&src), "-"]));
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "stdout differs from the remote file");
    assert!(!Path::new("-").exists());

    // put - REMOTE: nothing at the target until stdin ends, then all of it at once.
    let dst = d.path().join("dst.bin");
    let server = p(&sftp_server_path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sftpipe"))
        .args(["-D", &server, "put", "-", &p(&dst)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child.id());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&data[..1_000_000]).unwrap();
    wait_until("the temporary file grows", Duration::from_secs(30), || {
        dir_file_bytes(d.path()) >= 3_000_000 + 500_000
    });
    assert!(!dst.exists(), "the target appeared before stdin ended");
    assert_eq!(temp_files(d.path()).len(), 1);
    stdin.write_all(&data[1_000_000..]).unwrap();
    drop(stdin);
    let out = output_within(child, Duration::from_secs(60));
    assert!(out.status.success(), "{}", explain(&out));
    assert!(read_file(&dst) == data, "uploaded bytes differ");
    assert!(temp_files(d.path()).is_empty());

    // stdin from a regular file works too.
    let dst2 = d.path().join("dst2.bin");
    let server_args = ["-D", &server, "put", "-", &p(&dst2)];
    let status = Command::new(env!("CARGO_BIN_EXE_sftpipe"))
        .args(server_args)
        .stdin(fs::File::open(&src).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(read_file(&dst2) == data);
}

#[test]
fn wildcards_match_on_the_remote_side_for_get_rm_and_locally_for_put() {
    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    write_file(logs.join("a.gz"), b"a");
    write_file(logs.join("b.gz"), b"b");
    write_file(logs.join(".hidden.gz"), b"h");
    write_file(logs.join("c.txt"), b"c");
    write_file(logs.join("star*.gz"), b"s");
    // get: every match into the directory; a leading dot only matched explicitly.
    let back = d.path().join("back");
    fs::create_dir(&back).unwrap();
    ok(local(&["get", &format!("{}/*.gz", p(&logs)), &p(&back)]));
    let mut got: Vec<String> = fs::read_dir(&back)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(got, ["a.gz", "b.gz", "star*.gz"]);
    // A backslash escapes a wildcard.
    let one = d.path().join("one");
    ok(local(&[
        "get",
        &format!("{}/star\\*.?z", p(&logs)),
        &p(&one),
    ]));
    assert_eq!(read_file(&one), b"s");
    // Nothing matched: said plainly, exit 3.
    let out = local(&["get", &format!("{}/*.zip", p(&logs)), &p(&back)]);
    assert_eq!(code(&out), 3, "{}", explain(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("no remote file matches '{}/*.zip'", p(&logs))),
        "{err}"
    );

    // rm: the matches go, the rest stays.
    ok(local(&["rm", &format!("{}/[ab].gz", p(&logs))]));
    assert!(!logs.join("a.gz").exists() && !logs.join("b.gz").exists());
    assert!(logs.join(".hidden.gz").exists() && logs.join("c.txt").exists());
    let out = local(&["rm", &format!("{}/*.tmp", p(&logs))]);
    assert_eq!(code(&out), 3, "{}", explain(&out));
    assert!(
        text(&out.stderr).contains("no remote file matches"),
        "{}",
        explain(&out)
    );

    // put: a quoted local pattern is expanded locally.
    let up = d.path().join("up");
    ok(run_in(
        Some(d.path()),
        &[
            "-D",
            &p(&sftp_server_path()),
            "put",
            "logs/*",
            &format!("{}/", p(&up)),
        ],
    ));
    assert!(up.join("c.txt").exists() && up.join("star*.gz").exists());
    assert!(!up.join(".hidden.gz").exists());
    let out = run_in(
        Some(d.path()),
        &["-D", &p(&sftp_server_path()), "put", "logs/*.css", &p(&up)],
    );
    assert_eq!(code(&out), 7, "{}", explain(&out));
    assert!(text(&out.stderr).contains("no local file matches 'logs/*.css'"));
}

// ---------------------------------------------------------------------------------------
// Exit codes and refusals
// ---------------------------------------------------------------------------------------

#[test]
fn exit_codes_for_usage_missing_and_local_errors() {
    let d = tempfile::tempdir().unwrap();
    // clap's own errors.
    assert_eq!(code(&run_in(None, &["ls"])), 2);
    // (A bare word is a host for the shell, as with sftp: an unknown option instead.)
    assert_eq!(code(&run_in(None, &["--frobnicate"])), 2);
    assert_eq!(code(&run_in(None, &["get", "--buffer", "3X", "h:x"])), 2);
    assert_eq!(code(&run_in(None, &["--help"])), 0);
    assert_eq!(code(&run_in(None, &["--version"])), 0);
    // A remote operand without a host (and no -D).
    let out = run_in(None, &["ls", "/tmp"]);
    assert_eq!(code(&out), 2, "{}", explain(&out));
    // Two hosts in one command.
    let out = run_in(None, &["rm", "a:/x", "b:/y"]);
    assert_eq!(code(&out), 2, "{}", explain(&out));
    // Missing remote file.
    let out = local(&["get", &p(&d.path().join("nope")), &p(d.path())]);
    assert_eq!(code(&out), 3, "{}", explain(&out));
    assert!(
        text(&out.stderr).starts_with("sftpipe: "),
        "{}",
        explain(&out)
    );
    let out = local(&["stat", &p(&d.path().join("nope"))]);
    assert_eq!(code(&out), 3, "{}", explain(&out));
    // Missing local file.
    let out = local(&["put", &p(&d.path().join("nope")), &p(d.path())]);
    assert_eq!(code(&out), 7, "{}", explain(&out));
    // Local write error: downloading into a missing directory.
    write_file(d.path().join("f"), b"1");
    let out = local(&[
        "get",
        &p(&d.path().join("f")),
        &p(&d.path().join("no/such/dir/f")),
    ]);
    assert_eq!(code(&out), 7, "{}", explain(&out));
    // A server command that does not exist.
    let out = run_in(None, &["-D", "/nonexistent/sftp-server", "ls", "/"]);
    assert_eq!(code(&out), 5, "{}", explain(&out));
}

#[test]
fn option_like_hosts_are_refused_before_anything_runs() {
    let d = tempfile::tempdir().unwrap();
    let marker = d.path().join("pwned");
    for operand in [
        "-oProxyCommand=touch pwned:x",
        "sftp://-oProxyCommand=touch%20pwned/x",
        "x@-oProxyCommand=touch pwned:y",
    ] {
        // After "--" clap passes it on; the location parser must refuse it.
        let out = run_in(Some(d.path()), &["ls", "--", operand]);
        assert_eq!(code(&out), 2, "{operand}: {}", explain(&out));
        assert!(text(&out.stderr).contains("refusing"), "{}", explain(&out));
        let out = run_in(Some(d.path()), &["get", "--", operand, "."]);
        assert_eq!(code(&out), 2, "{operand}: {}", explain(&out));
        let out = run_in(Some(d.path()), &["put", "--", "local", operand]);
        assert_eq!(code(&out), 2, "{operand}: {}", explain(&out));
    }
    // Without "--", clap refuses it as an unknown option.
    let out = run_in(Some(d.path()), &["ls", "-oProxyCommand=touch pwned:x"]);
    assert_eq!(code(&out), 2, "{}", explain(&out));
    // -l with a dash is refused by the library before spawning.
    let out = run_in(
        Some(d.path()),
        &["-l", "-oProxyCommand=touch pwned", "ls", "h:x"],
    );
    assert_eq!(code(&out), 2, "{}", explain(&out));
    assert!(!marker.exists(), "a ProxyCommand ran");
}

#[test]
fn closed_port_is_a_connection_failure_with_ssh_stderr() {
    let out = run_in(
        None,
        &[
            "-P",
            "1",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
            "ls",
            "127.0.0.1:/",
        ],
    );
    assert_eq!(code(&out), 5, "{}", explain(&out));
    assert!(
        text(&out.stderr).contains("Connection refused"),
        "{}",
        explain(&out)
    );
}

// ---------------------------------------------------------------------------------------
// A server that stops answering; signals
// ---------------------------------------------------------------------------------------

/// `sftpipe GLOBAL... -D SERVER put BIG DEST/big` of a 1 GiB sparse file, caught once
/// the server has written `bytes` of it (its pid recorded, killed if a test fails).
struct Upload {
    sftpipe: Child,
    server: u32,
    dest: PathBuf,
    _server_guard: KillOnDrop,
    _dir: tempfile::TempDir,
}

fn upload_under_way(global: &[&str], bytes: u64) -> Upload {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    fs::File::create(&big).unwrap().set_len(1 << 30).unwrap();
    let dest = dir.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let pidfile = dir.path().join("server.pid");
    let server = pid_recording_server(dir.path(), &pidfile);
    let sftpipe = Command::new(env!("CARGO_BIN_EXE_sftpipe"))
        .args(global)
        .args(["-D", &server, "put", &p(&big), &p(&dest.join("big"))])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let server = read_pid(&pidfile);
    let guard = KillOnDrop(server);
    wait_until("the upload is under way", Duration::from_secs(60), || {
        dir_file_bytes(&dest) >= bytes
    });
    Upload {
        sftpipe,
        server,
        dest,
        _server_guard: guard,
        _dir: dir,
    }
}

#[test]
fn a_server_that_stops_answering_fails_after_the_timeout_with_exit_5() {
    let up = upload_under_way(&["--timeout", "2"], 8 << 20);
    send_signal(up.server, "STOP");
    let stopped = Instant::now();
    let out = output_within(up.sftpipe, Duration::from_secs(30));
    let waited = stopped.elapsed();
    assert_eq!(code(&out), 5, "{}", explain(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("no answer from server command") && err.contains("for 2 s; giving up"),
        "{err}"
    );
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "gave up {waited:?} after the server stopped"
    );
    assert!(
        !up.dest.join("big").exists(),
        "a partial file under the final name"
    );
    wait_until(
        "the stopped server is ended",
        Duration::from_secs(5),
        || !process_alive(up.server),
    );
}

/// Signals `sftpipe` during an upload (the server stopped first when `freeze`) and checks
/// that it ends the server and exits with `128 + signal`, leaving no file under the
/// final name.
fn signal_during_upload(sig: &str, freeze: bool, status: i32) {
    let up = upload_under_way(&[], 8 << 20);
    if freeze {
        // A server that cannot even see the end of its input: only a signal ends it.
        send_signal(up.server, "STOP");
    }
    send_signal(up.sftpipe.id(), sig);
    let out = output_within(up.sftpipe, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(status), "{}", explain(&out));
    assert!(
        text(&out.stderr).contains(&format!("interrupted by SIG{sig}")),
        "{}",
        explain(&out)
    );
    wait_until("the server is ended", Duration::from_secs(5), || {
        !process_alive(up.server)
    });
    assert!(
        !up.dest.join("big").exists(),
        "a partial file under the final name"
    );
}

#[test]
fn sigterm_ends_the_server_and_exits_143() {
    signal_during_upload("TERM", false, 143);
}

#[test]
fn sigint_ends_even_a_stopped_server_and_exits_130() {
    signal_during_upload("INT", true, 130);
}

// ---------------------------------------------------------------------------------------
// Through a real sshd
// ---------------------------------------------------------------------------------------

/// Runs sftpipe with the harness's connection options (`-P port -i key -o ...`).
fn over_ssh(sshd: &Sshd, args: &[&str]) -> Output {
    let mut all: Vec<String> = sshd.sftp_args();
    all.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    run_in(None, &refs)
}

fn ok_ssh(sshd: &Sshd, args: &[&str]) -> Output {
    let out = over_ssh(sshd, args);
    assert!(
        out.status.success(),
        "{}\n--- sshd log ---\n{}",
        explain(&out),
        sshd.log()
    );
    out
}

fn at(path: &Path) -> String {
    format!("127.0.0.1:{}", path.display())
}

#[test]
fn ssh_options_are_accepted_after_the_command() {
    if !common::sshd_available() {
        return;
    }
    let sshd = Sshd::start();
    let d = tempfile::tempdir().unwrap();
    write_file(d.path().join("f"), b"after\n");
    // get with -P -i -o after the command.
    let mut args = vec!["get".to_string()];
    args.extend(sshd.sftp_args());
    args.extend([at(&d.path().join("f")), p(&d.path().join("back"))]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(run_in(None, &refs));
    assert_eq!(read_file(d.path().join("back")), b"after\n");
    // ls -l -F CONFIG: -l stays ls's long format, -F is ssh's.
    let cfg = d.path().join("ssh_config");
    let mut conf = format!(
        "Host *\n  Port {}\n  IdentityFile {}\n",
        sshd.port(),
        sshd.key_path().display()
    );
    for o in [
        "StrictHostKeyChecking no",
        "UserKnownHostsFile /dev/null",
        "BatchMode yes",
    ] {
        conf.push_str(&format!("  {o}\n"));
    }
    write_file(&cfg, conf);
    let out = ok(run_in(None, &["ls", "-l", "-F", &p(&cfg), &at(d.path())]));
    assert!(text(&out.stdout).contains("-rw-"), "{}", explain(&out));
    // An option that only goes before the command says so.
    let out = run_in(None, &["ls", "-S", "-D", "x", "h:"]);
    assert_eq!(code(&out), 2, "{}", explain(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("ssh options go before the command: sftpipe -D"),
        "{err}"
    );
    assert!(!err.contains("-- -D"), "{err}");
}

#[test]
fn ssh_every_command_round_trip() {
    if !common::sshd_available() {
        return;
    }
    let sshd = Sshd::start();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    make_tree(&src);
    let remote = d.path().join("remote");

    // put -r, then ls and ls -l.
    ok_ssh(&sshd, &["put", "-r", "-p", &p(&src), &at(&remote)]);
    assert_same_tree(&src, &remote);
    let out = ok_ssh(&sshd, &["ls", &at(&remote)]);
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        ["a.txt", "b.bin", "link", "sub"]
    );
    let out = ok_ssh(
        &sshd,
        &["ls", "-l", &format!("sftp://root@127.0.0.1/{}", p(&remote))],
    );
    let s = text(&out.stdout);
    assert!(s.contains("lrwxrwxrwx root root"), "{s}");
    assert!(s.contains("link -> a.txt"), "{s}");

    // get a file and the tree back.
    let back = d.path().join("back");
    ok_ssh(&sshd, &["get", "-r", &at(&remote), &p(&back)]);
    assert_same_tree(&src, &back);
    let one = d.path().join("one.bin");
    ok_ssh(&sshd, &["get", &at(&remote.join("b.bin")), &p(&one)]);
    assert_eq!(read_file(&one), read_file(src.join("b.bin")));

    // stat, chmod, mkdir -p, mv, ln, ln -s, rm, rmdir, df, realpath.
    let out = ok_ssh(&sshd, &["stat", &at(&remote.join("a.txt"))]);
    assert!(text(&out.stdout).contains("Type: regular file"));
    ok_ssh(&sshd, &["chmod", "600", &at(&remote.join("a.txt"))]);
    assert_eq!(mode_of(&remote.join("a.txt")), 0o600);
    ok_ssh(&sshd, &["mkdir", "-p", &at(&remote.join("n/e/w"))]);
    assert!(remote.join("n/e/w").is_dir());
    // The second operand inherits the host.
    ok_ssh(
        &sshd,
        &[
            "mv",
            &at(&remote.join("a.txt")),
            &p(&remote.join("sub/c.txt")),
        ],
    );
    assert_eq!(read_file(remote.join("sub/c.txt")), b"alpha\n");
    ok_ssh(
        &sshd,
        &[
            "ln",
            &at(&remote.join("b.bin")),
            &at(&remote.join("b.hard")),
        ],
    );
    assert_eq!(
        fs::metadata(remote.join("b.bin")).unwrap().ino(),
        fs::metadata(remote.join("b.hard")).unwrap().ino()
    );
    ok_ssh(&sshd, &["ln", "-s", "b.bin", &at(&remote.join("b.soft"))]);
    assert_eq!(
        fs::read_link(remote.join("b.soft")).unwrap(),
        PathBuf::from("b.bin")
    );
    ok_ssh(
        &sshd,
        &[
            "rm",
            &at(&remote.join("b.hard")),
            &at(&remote.join("b.soft")),
        ],
    );
    assert!(!remote.join("b.hard").exists());
    ok_ssh(&sshd, &["rmdir", &at(&remote.join("n/e/w"))]);
    assert!(!remote.join("n/e/w").exists());
    let out = ok_ssh(&sshd, &["df", "-h", &at(&remote)]);
    assert!(text(&out.stdout).starts_with("Size"));
    let out = ok_ssh(&sshd, &["realpath", "127.0.0.1:"]);
    assert_eq!(text(&out.stdout).trim(), "/root");

    // Missing remote file through ssh: 3.
    let out = over_ssh(&sshd, &["get", &at(&remote.join("missing")), &p(d.path())]);
    assert_eq!(code(&out), 3, "{}", explain(&out));
}

#[test]
fn ssh_put_several_files_concurrently_with_json_progress() {
    if !common::sshd_available() {
        return;
    }
    let sshd = Sshd::start();
    let d = tempfile::tempdir().unwrap();
    let mut locals = Vec::new();
    for i in 0..12 {
        let f = d.path().join(format!("f{i}"));
        write_file(&f, random_bytes(10_000 + i * 1000, i as u64));
        locals.push(p(&f));
    }
    let dest = d.path().join("dest");
    let target = format!("{}/", at(&dest));
    let mut args = vec!["put", "--progress=json"];
    args.extend(locals.iter().map(String::as_str));
    args.push(&target);
    let out = ok_ssh(&sshd, &args);
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    assert_eq!(lines.len(), 13);
    assert_eq!(lines[12]["event"], "summary");
    assert_eq!(lines[12]["files"], 12);
    for i in 0..12 {
        assert_eq!(
            read_file(dest.join(format!("f{i}"))),
            read_file(d.path().join(format!("f{i}")))
        );
    }
}

#[test]
fn ssh_put_r_stages_a_new_tree_and_reports_its_final_paths() {
    if !common::sshd_available() {
        return;
    }
    let sshd = Sshd::start();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    for i in 0..30 {
        write_file(
            src.join(format!("d{}/f{i}", i % 3)),
            random_bytes(3_000 + i * 100, i as u64),
        );
    }
    let dest = d.path().join("site");
    let staging = d.path().join(".site.sftpipe-partial");
    // Left by an interrupted run: a temporary file and a name the tree no longer has.
    write_file(staging.join("d0/.f0.99.sftpipe-tmp"), b"half");
    write_file(staging.join("stale"), b"gone from the tree");

    let mut args = sshd.sftp_args();
    args.extend(["-v", "put", "-r", "--progress=json"].map(String::from));
    args.extend([p(&src), at(&dest)]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_in(None, &refs);
    assert!(out.status.success(), "{}", explain(&out));
    assert!(
        text(&out.stderr).contains("resuming the staged tree"),
        "{}",
        explain(&out)
    );
    let files: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .filter(|v: &serde_json::Value| v["event"] == "file")
        .collect();
    assert_eq!(files.len(), 30);
    for f in &files {
        let path = f["path"].as_str().unwrap();
        assert!(path.starts_with(&p(&dest)), "{path}");
        assert_eq!(f["ok"], true, "{f}");
    }
    for i in 0..30 {
        let rel = format!("d{}/f{i}", i % 3);
        assert_eq!(
            read_file(dest.join(&rel)),
            read_file(src.join(&rel)),
            "{rel}"
        );
    }
    assert!(!staging.exists());
    assert!(!dest.join("stale").exists());
    assert!(!dest.join("d0/.f0.99.sftpipe-tmp").exists());
}

#[test]
fn a_low_open_file_limit_bounds_the_concurrent_files() {
    // Each file task holds a local descriptor: more tasks than `ulimit -n` admits would
    // fail with EMFILE, whatever --max-open says.
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    for i in 0..150 {
        write_file(
            src.join(format!("d{}/f{i}", i % 5)),
            random_bytes(500 + i, i as u64),
        );
    }
    let server = sftp_server_path().display().to_string();
    let limited = |args: &[&str]| {
        let out = Command::new("prlimit")
            .arg("--nofile=64:64")
            .arg(env!("CARGO_BIN_EXE_sftpipe"))
            .args(["-D", &server].iter().chain(args))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run prlimit");
        assert!(out.status.success(), "{}", explain(&out));
        assert!(
            text(&out.stderr).contains("open-file limit"),
            "{}",
            explain(&out)
        );
    };
    let same = |copy: &Path| {
        for i in 0..150 {
            let rel = format!("d{}/f{i}", i % 5);
            assert_eq!(
                read_file(src.join(&rel)),
                read_file(copy.join(&rel)),
                "{rel}"
            );
        }
    };
    let up = d.path().join("up");
    limited(&["put", "-r", "--max-open", "200", &p(&src), &p(&up)]);
    same(&up);
    let down = d.path().join("down");
    limited(&["get", "-r", "--max-open", "200", &p(&up), &p(&down)]);
    same(&down);
}

#[test]
fn ssh_permission_denied_is_4() {
    if !common::sshd_available() {
        return;
    }
    let sshd = Sshd::start_as(TEST_USER);
    let d = tempfile::tempdir().unwrap();
    sshd.chown_to_user(d.path());
    let secret = d.path().join("secret");
    write_file(&secret, b"root only");
    // Root-owned, mode 0600: the test user may not read it.
    std::os::unix::fs::chown(&secret, Some(0), Some(0)).unwrap();
    set_mode(&secret, 0o600);
    let out = over_ssh(
        &sshd,
        &[
            "get",
            &format!("{TEST_USER}@127.0.0.1:{}", p(&secret)),
            &p(&d.path().join("x")),
        ],
    );
    assert_eq!(code(&out), 4, "{}\n{}", explain(&out), sshd.log());
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

#[test]
fn a_connection_never_made_reads_cannot_connect_with_ssh_words() {
    let mut args = common::refused_ssh_args();
    args.extend(["ls".to_string(), "127.0.0.1:".to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_in(None, &refs);
    assert_eq!(code(&out), 5, "{}", explain(&out));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("sftpipe: cannot connect to 127.0.0.1: "),
        "{}",
        explain(&out)
    );
    assert!(err.contains("Connection refused"), "{}", explain(&out));
    assert!(!err.contains("connection lost"), "{}", explain(&out));
}

#[test]
fn not_found_says_remote_or_local_in_plain_words() {
    let d = tempfile::tempdir().unwrap();
    let missing = p(&d.path().join("missing"));
    let out = local(&["get", &format!(":{missing}"), &p(&d.path().join("x"))]);
    assert_eq!(code(&out), 3, "{}", explain(&out));
    assert_eq!(
        text(&out.stderr).trim(),
        format!("sftpipe: stat '{missing}': remote file not found")
    );

    let out = local(&["put", &missing, &format!(":{}", p(&d.path().join("x")))]);
    assert_eq!(code(&out), 7, "{}", explain(&out));
    let err = text(&out.stderr);
    assert!(err.contains(&missing), "{}", explain(&out));
    assert!(err.contains("local file not found"), "{}", explain(&out));
}

#[test]
fn local_errors_have_no_rust_isms() {
    let d = tempfile::tempdir().unwrap();
    write_file(d.path().join("f"), b"x");
    // A download into a path under a regular file: ENOTDIR from the OS.
    let dest = p(&d.path().join("f/sub/x"));
    let out = local(&["get", &format!(":{}", p(&d.path().join("f"))), &dest]);
    assert!(!out.status.success(), "{}", explain(&out));
    let err = text(&out.stderr);
    assert!(err.contains("Not a directory"), "{}", explain(&out));
    for rust in ["os error", "entity not found", "(os "] {
        assert!(!err.contains(rust), "{rust}: {}", explain(&out));
    }
}

#[test]
fn upload_errors_name_the_target_not_the_temporary_file() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("hello.txt");
    write_file(&f, random_bytes(300_000, 9));
    let locked = d.path().join("locked");
    fs::create_dir(&locked).unwrap();
    common::give_to_test_user(d.path());
    set_mode(&locked, 0o555);
    let target = p(&locked.join("hello.txt"));
    // As the test user: root would write into the read-only directory.
    let out = common::sftpipe_as_test_user(&["put", &p(&f), &format!(":{target}")]);
    assert_eq!(code(&out), 4, "{}", explain(&out));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("'{target}'")), "{}", explain(&out));
    assert!(!err.contains("sftpipe-tmp"), "{}", explain(&out));
}

#[test]
fn mirror_of_a_file_says_so_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("hello.txt");
    write_file(&f, b"hi\n");
    let up = local(&["mirror", &p(&f), &format!(":{}", p(&d.path().join("m")))]);
    let down = local(&["mirror", &format!(":{}", p(&f)), &p(&d.path().join("m2"))]);
    for (out, verb) in [(up, "put"), (down, "get")] {
        assert_eq!(code(&out), 2, "{}", explain(&out));
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{}", explain(&out));
        assert!(
            err.contains("mirror takes directories"),
            "{}",
            explain(&out)
        );
        assert!(err.contains(&p(&f)), "{}", explain(&out));
        assert!(err.contains(&format!("use {verb}")), "{}", explain(&out));
    }
    assert!(!d.path().join("m").exists() && !d.path().join("m2").exists());
}

#[test]
fn ls_quotes_names_on_a_terminal_as_gnu_ls_does() {
    let d = tempfile::tempdir().unwrap();
    for name in ["a b", "plain", "x\ny", "it's"] {
        write_file(d.path().join(name), b"x");
    }
    let server = p(&sftp_server_path());
    let shown = common::sftpipe_on_a_tty(&["-D", &server, "ls", "-1", &p(d.path())]);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines, ["'a b'", "\"it's\"", "plain", "$'x\\ny'"], "{shown}");
    // Not on a terminal: the names as they are.
    let out = ok(local(&["ls", "-1", &p(d.path())]));
    assert_eq!(text(&out.stdout), "a b\nit's\nplain\nx\ny\n");
}

#[test]
fn ls_long_shows_owners_alike_for_a_file_and_its_directory() {
    let d = tempfile::tempdir().unwrap();
    write_file(d.path().join("f"), b"x");
    let listing = ok(local(&["ls", "-l", &p(d.path())]));
    let alone = ok(local(&["ls", "-l", &p(&d.path().join("f"))]));
    let owners = |out: &Output| -> Vec<String> {
        let t = text(&out.stdout);
        let line = t
            .lines()
            .find(|l| l.ends_with('f'))
            .unwrap_or_default()
            .to_string();
        line.split_whitespace()
            .skip(1)
            .take(2)
            .map(str::to_string)
            .collect()
    };
    assert_eq!(owners(&listing).len(), 2, "{}", explain(&listing));
    assert_eq!(owners(&listing), owners(&alone), "{}", explain(&alone));
}

// ---------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------

/// A 64 MiB file sent one 4 KiB request at a time: a transfer of a few seconds.
const SLOW: [&str; 4] = ["--requests", "1", "--buffer", "4K"];

#[test]
fn progress_json_reports_bytes_in_flight_before_the_file_ends() {
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big.bin");
    write_file(&big, random_bytes(64 << 20, 3));
    let mut args = vec!["put", "--progress=json"];
    args.extend(SLOW);
    let dest = format!(":{}", p(&d.path().join("up.bin")));
    let source = p(&big);
    args.extend([source.as_str(), dest.as_str()]);
    let out = ok(local(&args));
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    let first = events.iter().position(|v| v["event"] == "progress");
    let done = events.iter().position(|v| v["event"] == "file");
    let (Some(first), Some(done)) = (first, done) else {
        panic!("{}", explain(&out));
    };
    assert!(first < done, "{}", explain(&out));
    let v = &events[first];
    assert_eq!(v["total"], 64 << 20, "{v}");
    assert!(v["bytes"].as_u64().is_some_and(|b| b < 64 << 20), "{v}");
    assert_eq!(v["file"], p(&big), "{v}");
}

#[test]
fn progress_bar_without_a_terminal_writes_periodic_lines_in_binary_units() {
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big.bin");
    write_file(&big, random_bytes(8 << 20, 4));
    // 2,048 requests one at a time, each held 1 ms by the server: over 2 s, whatever the
    // machine, so periodic lines (once a second) must show.
    let server = common::delayed_server::DelayedServer::new(d.path(), 1, 1);
    let command = server.command();
    let mut args = vec!["-D", command.as_str(), "put", "--progress=bar"];
    args.extend(SLOW);
    let dest = format!(":{}", p(&d.path().join("up.bin")));
    let source = p(&big);
    args.extend([source.as_str(), dest.as_str()]);
    let out = ok(run_in(None, &args));
    let err = text(&out.stderr);
    let periodic: Vec<&str> = err
        .lines()
        .filter(|l| l.contains('%') && l.contains("MiB/s") && l.ends_with("big.bin"))
        .collect();
    assert!(!periodic.is_empty(), "{}", explain(&out));
    let summary = err.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("sftpipe: 1 file, 8.0 MiB in "),
        "{}",
        explain(&out)
    );
}

#[test]
fn progress_bar_on_a_terminal_names_the_file() {
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("named-in-the-bar.bin");
    write_file(&big, random_bytes(16 << 20, 5));
    let server = p(&sftp_server_path());
    let dest = format!(":{}", p(&d.path().join("up.bin")));
    let mut args = vec!["-D", server.as_str(), "put", "--progress=bar"];
    args.extend(SLOW);
    let source = p(&big);
    args.extend([source.as_str(), dest.as_str()]);
    let shown = common::sftpipe_on_a_tty(&args);
    assert!(shown.contains("named-in-the-bar.bin ["), "{shown}");
}

#[test]
fn mirror_prints_one_summary_in_binary_units() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    make_tree(&src);
    let out = ok(local(&[
        "mirror",
        "--progress=bar",
        &p(&src),
        &format!(":{}", p(&d.path().join("dst"))),
    ]));
    let err = text(&out.stderr);
    let summaries: Vec<&str> = err.lines().filter(|l| l.starts_with("sftpipe:")).collect();
    assert_eq!(summaries.len(), 1, "{}", explain(&out));
    assert!(
        summaries[0].starts_with("sftpipe: mirror: 5 uploaded (361.3 KiB)"),
        "{}",
        explain(&out)
    );
}

#[test]
fn summary_time_includes_connecting() {
    let d = tempfile::tempdir().unwrap();
    // A server that takes a second to answer, as a slow ssh login does.
    let server = d.path().join("slow-server");
    common::write_script(
        &server,
        &format!("sleep 1\nexec {}", sftp_server_path().display()),
    );
    write_file(d.path().join("f"), b"x");
    let out = run_in(
        None,
        &[
            "-D",
            &p(&server),
            "put",
            "--progress=bar",
            &p(&d.path().join("f")),
            &format!(":{}", p(&d.path().join("g"))),
        ],
    );
    assert!(out.status.success(), "{}", explain(&out));
    let err = text(&out.stderr);
    let secs: f64 = err
        .rsplit_once(" in ")
        .and_then(|(_, t)| t.split('s').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{}", explain(&out)));
    assert!(secs >= 1.0, "{}", explain(&out));
}
