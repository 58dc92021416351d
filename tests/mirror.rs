//! `sftpipe mirror`: trees end up identical (content, mtimes, symlinks, empty
//! directories) in both directions, changes converge, deletes respect excludes and
//! `--max-delete`, `--dry-run` changes nothing, and a mirror killed midway never shows a
//! partial file under a final name and converges when rerun.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Sshd, random_bytes, sftp_server_path, write_file};

fn run(server: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sftpipe"))
        .arg("-D")
        .arg(server)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run sftpipe")
}

fn local(args: &[&str]) -> Output {
    run(&sftp_server_path().display().to_string(), args)
}

fn explain(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", explain(&out));
    out
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn remote(p: &Path) -> String {
    format!(":{}", p.display())
}

/// What a tree looks like: per relative path, its kind and content / target, mtime and
/// mode (directories' mtimes included, to the second as SFTP v3 carries them).
#[derive(Debug, PartialEq, Eq)]
enum Node {
    File {
        data: Vec<u8>,
        mtime: i64,
        mode: u32,
    },
    Dir {
        mtime: i64,
    },
    Link {
        target: PathBuf,
    },
}

fn scan(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let m = fs::symlink_metadata(&path).unwrap();
            if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    Node::Link {
                        target: fs::read_link(&path).unwrap(),
                    },
                );
            } else if m.is_dir() {
                walk(root, &path, out);
                out.insert(rel, Node::Dir { mtime: m.mtime() });
            } else {
                out.insert(
                    rel,
                    Node::File {
                        data: fs::read(&path).unwrap(),
                        mtime: m.mtime(),
                        mode: m.permissions().mode() & 0o7777,
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn assert_identical(a: &Path, b: &Path) {
    let (ta, tb) = (scan(a), scan(b));
    let keys_a: Vec<_> = ta.keys().collect();
    let keys_b: Vec<_> = tb.keys().collect();
    assert_eq!(
        keys_a,
        keys_b,
        "different entries in {} and {}",
        a.display(),
        b.display()
    );
    for (k, va) in &ta {
        assert_eq!(Some(va), tb.get(k), "{} differs", k.display());
    }
    assert_eq!(
        fs::metadata(a).unwrap().mtime(),
        fs::metadata(b).unwrap().mtime(),
        "root mtimes differ"
    );
}

fn make_tree(root: &Path) {
    write_file(root.join("top.txt"), b"top\n");
    write_file(root.join("a/one"), random_bytes(70_000, 1));
    write_file(root.join("a/b/c/deep"), random_bytes(300_000, 2));
    write_file(root.join("with space/ünï cødé ✓"), b"unicode\n");
    write_file(root.join("a/.hidden"), b"h");
    write_file(root.join("empty-file"), b"");
    fs::create_dir_all(root.join("empty/dir")).unwrap();
    std::os::unix::fs::symlink("a/one", root.join("link")).unwrap();
    std::os::unix::fs::symlink("../top.txt", root.join("a/uplink")).unwrap();
    fs::set_permissions(root.join("a/one"), fs::Permissions::from_mode(0o600)).unwrap();
    // Old times everywhere, so a copy that forgot them would show.
    for (rel, t) in [
        ("top.txt", 1_500_000_000),
        ("a/one", 1_600_000_000),
        ("a/b/c/deep", 1_400_000_000),
    ] {
        set_mtime(&root.join(rel), t);
    }
}

fn set_mtime(p: &Path, secs: u64) {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(secs);
    fs::File::options()
        .write(true)
        .open(p)
        .or_else(|_| fs::File::open(p))
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

#[test]
fn mirror_up_then_down_gives_identical_trees() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst, back) = (
        d.path().join("src"),
        d.path().join("dst"),
        d.path().join("back"),
    );
    make_tree(&src);
    ok(local(&["mirror", "-p", &s(&src), &remote(&dst)]));
    assert_identical(&src, &dst);
    ok(local(&["mirror", "-p", &remote(&dst), &s(&back)]));
    assert_identical(&src, &back);
}

#[test]
fn changes_additions_and_deletions_converge() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    make_tree(&src);
    ok(local(&["mirror", "-p", &s(&src), &remote(&dst)]));

    // Same size, new content and time; a new file; a deletion; a type change of each kind.
    fs::write(src.join("top.txt"), b"TOP\n").unwrap();
    set_mtime(&src.join("top.txt"), 1_700_000_000);
    write_file(src.join("a/b/new"), b"new file\n");
    fs::remove_file(src.join("empty-file")).unwrap();
    fs::remove_file(src.join("link")).unwrap();
    fs::create_dir(src.join("link")).unwrap(); // symlink -> directory
    fs::remove_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("empty"), b"now a file").unwrap(); // directory -> file
    fs::remove_file(src.join("a/one")).unwrap();
    std::os::unix::fs::symlink("b/new", src.join("a/one")).unwrap(); // file -> symlink

    let out = ok(local(&[
        "mirror",
        "-p",
        "--delete",
        &s(&src),
        &remote(&dst),
    ]));
    assert_identical(&src, &dst);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("deleted"), "{err}");

    // A no-op mirror changes nothing and says so.
    let out = ok(local(&[
        "mirror",
        "-p",
        "--delete",
        &s(&src),
        &remote(&dst),
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mirror: 0 uploaded"), "{err}");
    assert_identical(&src, &dst);
}

#[test]
fn size_only_ignores_times_and_all_recopies() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    write_file(src.join("f"), b"12345");
    ok(local(&["mirror", &s(&src), &remote(&dst)]));
    fs::write(src.join("f"), b"abcde").unwrap();
    set_mtime(&src.join("f"), 1_000_000_000);
    ok(local(&["mirror", "--size-only", &s(&src), &remote(&dst)]));
    assert_eq!(fs::read(dst.join("f")).unwrap(), b"12345");
    ok(local(&["mirror", &s(&src), &remote(&dst)]));
    assert_eq!(fs::read(dst.join("f")).unwrap(), b"abcde");
    fs::write(dst.join("f"), b"XXXXX").unwrap();
    set_mtime(&dst.join("f"), 1_000_000_000);
    ok(local(&["mirror", "--all", &s(&src), &remote(&dst)]));
    assert_eq!(fs::read(dst.join("f")).unwrap(), b"abcde");
}

#[test]
fn delete_respects_excludes_includes_and_max_delete() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    write_file(src.join("keep"), b"k");
    write_file(src.join("skip.tmp"), b"local tmp");
    write_file(src.join("cache/x"), b"c");
    write_file(dst.join("stale"), b"s");
    write_file(dst.join("remote.tmp"), b"r");
    write_file(dst.join("keep.log"), b"l");
    write_file(dst.join("cache/old"), b"o");
    let excludes = [
        "--exclude",
        "*.tmp",
        "--exclude",
        "cache/",
        "--exclude",
        "*.log",
        "--include",
        "keep.log",
    ];

    // --max-delete 1 refuses both deletes (stale, keep.log): exit 1, nothing removed.
    let mut args = vec!["mirror", "--delete", "--max-delete", "1"];
    args.extend(excludes);
    let (s_src, r_dst) = (s(&src), remote(&dst));
    args.extend([s_src.as_str(), r_dst.as_str()]);
    let out = local(&args);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("max-delete"),
        "{}",
        explain(&out)
    );
    assert!(dst.join("stale").exists());

    let mut args = vec!["mirror", "--delete"];
    args.extend(excludes);
    args.extend([s_src.as_str(), r_dst.as_str()]);
    ok(local(&args));
    assert!(dst.join("keep").exists());
    assert!(!dst.join("stale").exists(), "not excluded: deleted");
    assert!(!dst.join("keep.log").exists(), "re-included: deleted");
    assert!(dst.join("remote.tmp").exists(), "excluded: kept");
    assert!(dst.join("cache/old").exists(), "excluded dir: kept");
    assert!(!dst.join("skip.tmp").exists(), "excluded: not uploaded");
    assert!(!dst.join("cache/x").exists(), "excluded dir: not uploaded");

    let mut args = vec!["mirror", "--delete", "--delete-excluded"];
    args.extend(excludes);
    args.extend([s_src.as_str(), r_dst.as_str()]);
    ok(local(&args));
    assert!(!dst.join("remote.tmp").exists());
    assert!(!dst.join("cache").exists());
}

#[test]
fn exclude_from_file() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    write_file(src.join("a.o"), b"o");
    write_file(src.join("b.c"), b"c");
    let list = d.path().join("excludes");
    fs::write(&list, "# objects\n*.o\n\n").unwrap();
    ok(local(&[
        "mirror",
        "--exclude-from",
        &s(&list),
        &s(&src),
        &remote(&dst),
    ]));
    assert!(dst.join("b.c").exists() && !dst.join("a.o").exists());
}

#[test]
fn dry_run_prints_every_action_and_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    make_tree(&src);
    write_file(dst.join("extra"), b"x");
    fs::create_dir_all(dst.join("a")).unwrap();
    write_file(dst.join("a/one"), b"old");
    fs::set_permissions(dst.join("a/one"), fs::Permissions::from_mode(0o644)).unwrap();
    let before = scan(&dst);
    let out = ok(local(&[
        "mirror",
        "-n",
        "-p",
        "--delete",
        &s(&src),
        &remote(&dst),
    ]));
    assert_eq!(scan(&dst), before, "dry run changed the destination");
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "upload top.txt (4 bytes)",
        "upload a/one (70000 bytes)",
        "mkdir empty/",
        "mkdir empty/dir/",
        "symlink link -> a/one",
        "delete extra",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing '{want}' in:\n{text}"
        );
    }
    // Mode only: same size and time, other mode.
    let d2 = tempfile::tempdir().unwrap();
    let (s2, t2) = (d2.path().join("s"), d2.path().join("t"));
    write_file(s2.join("f"), b"same");
    ok(local(&["mirror", &s(&s2), &remote(&t2)]));
    fs::set_permissions(s2.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    let out = ok(local(&["mirror", "-n", "-p", &s(&s2), &remote(&t2)]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("chmod 0600 f"),
        "{}",
        explain(&out)
    );
}

#[test]
fn last_files_land_after_everything_else() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    for i in 0..50 {
        write_file(src.join(format!("pool/p{i}.deb")), random_bytes(10_000, i));
    }
    write_file(src.join("dists/test/InRelease"), b"index");
    // Old directory times: they are sent as soon as the last rename is queued, which with
    // --last is only after the held-back round.
    for (rel, t) in [
        ("dists/test", 1_400_000_000),
        ("dists", 1_500_000_000),
        ("", 1_600_000_000),
    ] {
        set_mtime(&src.join(rel), t);
    }
    let out = ok(local(&[
        "mirror",
        "--last",
        "dists/*/InRelease",
        "--progress=json",
        &s(&src),
        &remote(&dst),
    ]));
    // JSON lines come in completion order: the index must be the last file.
    let files: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "file")
        .map(|v| v["path"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(files.len(), 51, "{files:?}");
    assert!(
        files.last().unwrap().ends_with("dists/test/InRelease"),
        "{files:?}"
    );
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "mirror")
        .expect("mirror summary line");
    assert_eq!(summary["copied"], 51);
    assert_eq!(summary["failed"], 0);
    assert_identical(&src, &dst);
}

#[test]
fn missing_source_or_bad_operands_have_distinct_codes() {
    let d = tempfile::tempdir().unwrap();
    let out = local(&[
        "mirror",
        &s(&d.path().join("nope")),
        &remote(&d.path().join("dst")),
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", explain(&out));
    let out = local(&[
        "mirror",
        &remote(&d.path().join("nope")),
        &s(&d.path().join("dst")),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", explain(&out));
    let out = Command::new(env!("CARGO_BIN_EXE_sftpipe"))
        .args(["mirror", "a", "b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
}

#[test]
fn mirror_down_deletes_local_extras_and_replaces_types() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("remote"), d.path().join("local"));
    make_tree(&src);
    write_file(dst.join("extra/file"), b"x");
    write_file(dst.join("top.txt/inner"), b"dir where a file goes");
    ok(local(&[
        "mirror",
        "-p",
        "--delete",
        &remote(&src),
        &s(&dst),
    ]));
    assert_identical(&src, &dst);
}

/// The CLI opens the local side's directories on the remote on a guess, before the
/// remote listing says what they are. Where the remote has a symlink (to a directory
/// elsewhere), the guess lists the link's target; that listing must go unused: the link
/// is replaced by a directory and nothing behind it is touched, even with --delete.
#[test]
fn guessed_directories_never_follow_remote_symlinks() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst, outside) = (
        d.path().join("src"),
        d.path().join("dst"),
        d.path().join("outside"),
    );
    make_tree(&src);
    write_file(src.join("linked/mine"), b"local");
    write_file(outside.join("precious"), b"keep me");
    write_file(outside.join("mine"), b"not this one either");
    ok(local(&["mirror", &s(&src), &remote(&dst)]));
    fs::remove_dir_all(dst.join("linked")).unwrap();
    std::os::unix::fs::symlink(&outside, dst.join("linked")).unwrap();
    // A guessed directory missing on the remote side is created as usual.
    write_file(src.join("brand/new"), b"n");

    ok(local(&["mirror", "--delete", &s(&src), &remote(&dst)]));
    assert_identical(&src, &dst);
    assert!(!dst.join("linked").is_symlink());
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep me");
    assert_eq!(
        fs::read(outside.join("mine")).unwrap(),
        b"not this one either"
    );
}

/// A server command that dies (SIGKILL) after `ms` milliseconds, mid-transfer. The
/// server gets the script's stdin through fd 3: a shell gives a background job /dev/null
/// as stdin, and applies that before any `<&0`.
fn dying_server(dir: &Path, ms: u64) -> String {
    let script = dir.join(format!("dying-server-{ms}.sh"));
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec 3<&0\n{} <&3 >&1 3<&- &\npid=$!\nsleep {}\nkill -9 $pid\nwait\n",
            sftp_server_path().display(),
            ms as f64 / 1000.0
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script.display().to_string()
}

fn temp_files(root: &Path) -> Vec<PathBuf> {
    if !root.exists() {
        return Vec::new();
    }
    scan(root)
        .into_keys()
        .filter(|p| p.to_string_lossy().ends_with(".sftpipe-tmp"))
        .collect()
}

/// 400 files of about 200 KB (one WRITE each) in 8 directories.
fn kill_test_tree(src: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut expected = BTreeMap::new();
    for i in 0..400u64 {
        let rel = format!("d{}/f{i}", i % 8);
        let data = random_bytes(200_000 + (i as usize % 7) * 1000, i);
        write_file(src.join(&rel), &data);
        expected.insert(rel, data);
    }
    expected
}

#[test]
fn killed_mirror_never_shows_partial_files_and_converges_on_rerun() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    let expected = kill_test_tree(&src);
    // An existing destination: files land one by one, each through a temporary name (a
    // missing one is staged whole, see the next test).
    fs::create_dir(&dst).unwrap();
    // A watcher checks, over and over while mirrors run, that every file under a final
    // name is complete (temporary names may hold anything).
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, dst, expected) = (stop.clone(), dst.clone(), expected.clone());
        std::thread::spawn(move || {
            let mut checks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (rel, data) in &expected {
                    if let Ok(got) = fs::read(dst.join(rel)) {
                        assert_eq!(&got, data, "partial or wrong file visible under {rel}");
                        checks += 1;
                    }
                }
            }
            checks
        })
    };
    // Kill the server ever later until two runs were cut off mid-upload (the timing
    // depends on the machine's load); a run that finished resets the destination.
    let mut interrupted = 0;
    for ms in [60, 100, 150, 250, 400, 600, 900, 1400] {
        let out = run(
            &dying_server(d.path(), ms),
            &["mirror", &s(&src), &remote(&dst)],
        );
        if out.status.success() {
            fs::remove_dir_all(&dst).unwrap();
            fs::create_dir(&dst).unwrap();
            continue;
        }
        assert_eq!(out.status.code(), Some(5), "{}", explain(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("connection lost"),
            "{}",
            explain(&out)
        );
        // Proof that the kill hit uploads in flight: their temporary files remain.
        if !temp_files(&dst).is_empty() {
            interrupted += 1;
            if interrupted == 2 {
                break;
            }
        }
    }
    assert!(interrupted > 0, "the server was never killed mid-upload");

    // A plain rerun completes every file; the killed runs' temporary files stay (nothing
    // knows they are abandoned) until a mirror with --delete removes them.
    ok(local(&["mirror", &s(&src), &remote(&dst)]));
    stop.store(true, Ordering::Relaxed);
    let checks = watcher.join().expect("watcher saw a partial file");
    assert!(checks > 0);
    for (rel, data) in &expected {
        assert_eq!(&fs::read(dst.join(rel)).unwrap(), data, "{rel}");
    }
    ok(local(&["mirror", "--delete", &s(&src), &remote(&dst)]));
    assert!(temp_files(&dst).is_empty());
    assert_identical(&src, &dst);
}

#[test]
fn killed_fresh_mirror_shows_nothing_and_a_rerun_resumes_its_staged_tree() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    let staging = d.path().join(".dst.sftpipe-partial");
    let expected = kill_test_tree(&src);
    let mut staged_files = 0;
    for ms in [60, 100, 150, 250, 400, 600, 900, 1400] {
        let out = run(
            &dying_server(d.path(), ms),
            &["mirror", &s(&src), &remote(&dst)],
        );
        if out.status.success() {
            assert!(!staging.exists(), "a finished mirror left {staging:?}");
            fs::remove_dir_all(&dst).unwrap();
            continue;
        }
        assert_eq!(out.status.code(), Some(5), "{}", explain(&out));
        // Nothing under the final name until the whole tree is there.
        assert!(!dst.exists(), "a killed fresh mirror made {dst:?}");
        staged_files = expected
            .keys()
            .filter(|rel| staging.join(rel).exists())
            .count();
        if staged_files > 0 {
            break;
        }
    }
    assert!(staged_files > 0, "the server was never killed mid-mirror");

    // What the rerun takes as done (the source's size and time) must be complete: a file
    // sent in one WRITE gets its time only after its data.
    let mut complete = 0;
    for (rel, data) in &expected {
        let Ok(m) = fs::metadata(staging.join(rel)) else {
            continue;
        };
        let src_mtime = fs::metadata(src.join(rel)).unwrap().mtime();
        if m.len() == data.len() as u64 && m.mtime() == src_mtime {
            assert_eq!(&fs::read(staging.join(rel)).unwrap(), data, "{rel}");
            complete += 1;
        }
    }
    let out = ok(local(&["mirror", &s(&src), &remote(&dst)]));
    let summary = format!("mirror: {} uploaded", expected.len() - complete);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&summary),
        "expected '{summary}' ({complete} staged files complete)\n{}",
        explain(&out)
    );
    assert!(!staging.exists());
    assert!(temp_files(&dst).is_empty());
    assert_identical(&src, &dst);
}

#[test]
fn mirror_through_sshd() {
    let sshd = Sshd::start();
    let d = tempfile::tempdir().unwrap();
    let (src, dst, back) = (
        d.path().join("src"),
        d.path().join("dst"),
        d.path().join("back"),
    );
    make_tree(&src);
    let mut args: Vec<String> = vec![
        "-P".into(),
        sshd.port().to_string(),
        "-i".into(),
        s(&sshd.key_path()),
    ];
    for o in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "LogLevel=ERROR",
        "IdentitiesOnly=yes",
    ] {
        args.push("-o".into());
        args.push(o.into());
    }
    let go = |extra: &[String]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sftpipe"))
            .args(&args)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        ok(out)
    };
    let r = format!("127.0.0.1:{}", dst.display());
    go(&["mirror".into(), "-p".into(), s(&src), r.clone()]);
    assert_identical(&src, &dst);
    go(&["mirror".into(), "-p".into(), r, s(&back)]);
    assert_identical(&src, &back);
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unreadable_directory_is_one_failure_and_nothing_under_its_counterpart_goes() {
    let d = tempfile::tempdir().unwrap();
    // Up: a local directory the user may not list.
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    write_file(src.join("top"), b"top");
    write_file(src.join("a/one"), b"one");
    write_file(src.join("bad/inside"), b"unseen");
    write_file(dst.join("bad/old"), b"kept");
    write_file(dst.join("bad/sub/deep"), b"kept too");
    // Down: a remote directory the user may not list.
    let (rsrc, back) = (d.path().join("rsrc"), d.path().join("back"));
    write_file(rsrc.join("top"), b"top");
    write_file(rsrc.join("bad/inside"), b"unseen");
    write_file(back.join("bad/old"), b"kept");
    write_file(back.join("stale"), b"stale");
    common::give_to_test_user(d.path());
    set_mode(&src.join("bad"), 0o000);
    set_mode(&rsrc.join("bad"), 0o000);

    let out = common::sftpipe_as_test_user(&["mirror", "--delete", &s(&src), &remote(&dst)]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let err = stderr_of(&out);
    assert!(err.contains(&format!("{}: ", s(&dst.join("bad")))), "{err}");
    assert!(err.contains(&s(&src.join("bad"))), "{err}");
    assert_eq!(fs::read(dst.join("top")).unwrap(), b"top");
    assert_eq!(fs::read(dst.join("a/one")).unwrap(), b"one");
    assert_eq!(fs::read(dst.join("bad/old")).unwrap(), b"kept");
    assert_eq!(fs::read(dst.join("bad/sub/deep")).unwrap(), b"kept too");

    let out = common::sftpipe_as_test_user(&["mirror", "--delete", &remote(&rsrc), &s(&back)]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let err = stderr_of(&out);
    assert!(err.contains(&s(&rsrc.join("bad"))), "{err}");
    assert_eq!(fs::read(back.join("top")).unwrap(), b"top");
    assert_eq!(fs::read(back.join("bad/old")).unwrap(), b"kept");
    // Only the delete the failure holds back is counted, not what lies under the
    // unreadable directory.
    assert!(err.contains("1 delete(s) skipped"), "{err}");
}

#[test]
fn a_fresh_mirror_with_a_failure_stays_staged_until_a_rerun_completes_it() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    let staging = d.path().join(".dst.sftpipe-partial");
    make_tree(&src);
    write_file(src.join("a/secret"), b"not yet readable");
    common::give_to_test_user(d.path());
    set_mode(&src.join("a/secret"), 0o000);

    let out = common::sftpipe_as_test_user(&["mirror", &s(&src), &remote(&dst)]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let err = stderr_of(&out);
    assert!(err.contains("secret"), "{err}");
    assert!(err.contains(&s(&staging)), "{err}");
    assert!(
        fs::symlink_metadata(&dst).is_err(),
        "a half-made tree was published"
    );
    assert_eq!(fs::read(staging.join("top.txt")).unwrap(), b"top\n");

    set_mode(&src.join("a/secret"), 0o644);
    ok(common::sftpipe_as_test_user(&[
        "mirror",
        &s(&src),
        &remote(&dst),
    ]));
    assert!(!staging.exists());
    assert_identical(&src, &dst);
}

/// 30 files of 2 MB: each goes through a temporary name, even into a staging tree.
fn big_files_tree(src: &Path) {
    for i in 0..30u64 {
        write_file(
            src.join(format!("d{}/big{i}", i % 3)),
            random_bytes(2_000_000 + i as usize, 100 + i),
        );
    }
}

#[test]
fn a_resumed_fresh_mirror_publishes_no_temporary_files() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    big_files_tree(&src);
    let out_dir = d.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let (dst, staging) = (out_dir.join("dst"), out_dir.join(".dst.sftpipe-partial"));

    // Killed once 10 MB of 60 have landed, with uploads in flight.
    let server = common::ServerKiller::start(d.path(), &out_dir, 10_000_000);
    let out = run(server.command(), &["mirror", &s(&src), &remote(&dst)]);
    assert!(
        server.finish(),
        "the mirror ended before the server was killed"
    );
    assert_eq!(out.status.code(), Some(5), "{}", explain(&out));
    assert!(!dst.exists());
    assert!(
        !temp_files(&staging).is_empty(),
        "the kill left no temporary file to test with"
    );

    ok(local(&["mirror", &s(&src), &remote(&dst)]));
    assert!(!staging.exists());
    assert_eq!(temp_files(&dst), Vec::<PathBuf>::new());
    assert_identical(&src, &dst);
}

#[test]
fn a_lost_connection_is_reported_once_with_a_count() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    for i in 0..3000u64 {
        write_file(
            src.join(format!("d{}/f{i}", i % 30)),
            random_bytes(2_000, i),
        );
    }
    let out_dir = d.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let dst = out_dir.join("dst");
    let server = common::ServerKiller::start(d.path(), &out_dir, 500_000);
    let out = run(server.command(), &["mirror", &s(&src), &remote(&dst)]);
    assert!(
        server.finish(),
        "the mirror ended before the server was killed"
    );
    assert_eq!(out.status.code(), Some(5), "{}", explain(&out));
    let err = stderr_of(&out);
    assert!(err.lines().count() < 10, "{err}");
    let counted = err.lines().any(|l| {
        l.split_once(" files not transferred: connection lost")
            .and_then(|(n, _)| n.rsplit(' ').next())
            .is_some_and(|n| n.replace(',', "").parse::<u64>().is_ok_and(|n| n > 1))
    });
    assert!(counted, "{err}");
    assert!(err.contains(".dst.sftpipe-partial"), "{err}");
}

#[test]
fn a_directory_time_that_cannot_be_set_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    write_file(src.join("sub/new"), b"new");
    fs::create_dir_all(dst.join("sub")).unwrap();
    common::give_to_test_user(d.path());
    // Root's, but open to all: the user may add to it, not set its time.
    std::os::unix::fs::chown(dst.join("sub"), Some(0), Some(0)).unwrap();
    set_mode(&dst.join("sub"), 0o777);

    let out = common::sftpipe_as_test_user(&["mirror", &s(&src), &remote(&dst)]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("{}: setstat", s(&dst.join("sub")))),
        "{err}"
    );
    assert_eq!(fs::read(dst.join("sub/new")).unwrap(), b"new");
}

// ---------------------------------------------------------------------------------------
// The streaming mirror up (what the CLI runs) against the whole-tree one (the library's
// `mirror_up_listed`, and every dry run).

/// A destination that differs from [`make_tree`]'s in every way a mirror handles: changed
/// and missing files, a file where a directory goes and the reverse, a link where a file
/// goes and the reverse, a changed link, extras (some excluded), a deep extra tree.
fn stale_destination(dst: &Path) {
    write_file(dst.join("top.txt"), b"old top, longer\n");
    write_file(dst.join("a/one"), b"old");
    write_file(dst.join("a/b"), b"a file where a directory goes");
    fs::create_dir_all(dst.join("empty-file/sub")).unwrap();
    write_file(dst.join("empty-file/sub/x"), b"a tree where a file goes");
    std::os::unix::fs::symlink("somewhere", dst.join("with space")).unwrap();
    write_file(dst.join("link"), b"a file where a link goes");
    std::os::unix::fs::symlink("../elsewhere", dst.join("a/uplink")).unwrap();
    write_file(dst.join("extra"), b"extra");
    write_file(dst.join("extra.tmp"), b"excluded extra");
    write_file(dst.join("gone/deeper/still/f"), b"deep extra");
    write_file(dst.join("gone/g"), b"extra");
}

fn mirror_options(delete: bool) -> sftpipe::mirror::MirrorOptions {
    use sftpipe::mirror::{Compare, Filter, MirrorOptions, PatternSet};
    MirrorOptions {
        compare: Compare {
            delete,
            last: PatternSet::new(&["a/b/c/deep"]).unwrap(),
            ..Compare::default()
        },
        filter: Filter::new(&["*.tmp"], &[] as &[&str]).unwrap(),
        ..MirrorOptions::default()
    }
}

/// Mirrors `src` up into `dst` over a `-D` session, streamed or listed whole first.
fn mirror_up_with(src: &Path, dst: &Path, streamed: bool, delete: bool) -> sftpipe::MirrorReport {
    use sftpipe::mirror::{mirror_up, mirror_up_listed, snapshot_local};
    use sftpipe::transfer::{NoProgress, TransferOptions};
    let session = sftpipe::Session::connect(&sftpipe::ConnectOptions::local_server(
        sftp_server_path().display().to_string(),
    ))
    .unwrap();
    let t = session.transfer(TransferOptions::default(), std::rc::Rc::new(NoProgress));
    let opts = mirror_options(delete);
    let remote = dst.as_os_str().as_encoded_bytes();
    if streamed {
        session.run(mirror_up(&t, src, remote, &opts))
    } else {
        let local = snapshot_local(src, &opts);
        session.run(mirror_up_listed(&t, src, local, remote, &opts))
    }
}

/// Mirrors the remote `src` down into `dst`, streamed or listed whole first.
fn mirror_down_with(src: &Path, dst: &Path, streamed: bool, delete: bool) -> sftpipe::MirrorReport {
    use sftpipe::mirror::{mirror_down, mirror_down_listed, snapshot_local};
    use sftpipe::transfer::{NoProgress, TransferOptions};
    let session = sftpipe::Session::connect(&sftpipe::ConnectOptions::local_server(
        sftp_server_path().display().to_string(),
    ))
    .unwrap();
    let t = session.transfer(TransferOptions::default(), std::rc::Rc::new(NoProgress));
    let opts = mirror_options(delete);
    let remote = src.as_os_str().as_encoded_bytes();
    if streamed {
        session.run(mirror_down(&t, remote, dst, &opts))
    } else {
        let local = snapshot_local(dst, &opts);
        session.run(mirror_down_listed(&t, remote, dst, local, &opts))
    }
}

#[test]
fn streamed_and_whole_tree_mirrors_make_the_same_tree_and_report() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    make_tree(&src);
    write_file(src.join("skip.tmp"), b"excluded");
    for delete in [false, true] {
        let (streamed, listed) = (
            d.path().join(format!("streamed-{delete}")),
            d.path().join(format!("listed-{delete}")),
        );
        stale_destination(&streamed);
        stale_destination(&listed);
        let a = mirror_up_with(&src, &streamed, true, delete);
        let b = mirror_up_with(&src, &listed, false, delete);
        assert!(
            a.is_ok() && b.is_ok(),
            "{:?} / {:?}",
            a.failures,
            b.failures
        );
        assert_eq!(scan(&streamed), scan(&listed), "delete: {delete}");
        let counts = |r: &sftpipe::MirrorReport| {
            let c = (r.copied, r.bytes, r.dirs_created, r.symlinks, r.deleted);
            (c, r.unchanged)
        };
        assert_eq!(counts(&a), counts(&b), "delete: {delete}");
        assert_eq!(
            fs::read(streamed.join("extra.tmp")).unwrap(),
            b"excluded extra"
        );
        assert!(!streamed.join("skip.tmp").exists());
        assert_eq!(streamed.join("gone").exists(), !delete);
        // A second run finds nothing to do either way.
        let again = mirror_up_with(&src, &streamed, true, delete);
        assert!(again.is_ok(), "{:?}", again.failures);
        assert_eq!((again.copied, again.deleted, again.symlinks), (0, 0, 0));
    }
    // Down, into stale local copies, streamed and listed whole.
    for delete in [false, true] {
        let served = d.path().join(format!("served-{delete}"));
        ok(local(&["mirror", &s(&src), &remote(&served)]));
        let (streamed, listed) = (
            d.path().join(format!("down-s-{delete}")),
            d.path().join(format!("down-l-{delete}")),
        );
        stale_destination(&streamed);
        stale_destination(&listed);
        let a = mirror_down_with(&served, &streamed, true, delete);
        let b = mirror_down_with(&served, &listed, false, delete);
        assert!(
            a.is_ok() && b.is_ok(),
            "{:?} / {:?}",
            a.failures,
            b.failures
        );
        assert_eq!(scan(&streamed), scan(&listed), "down, delete: {delete}");
        assert_eq!(
            (
                a.copied,
                a.bytes,
                a.dirs_created,
                a.symlinks,
                a.deleted,
                a.unchanged
            ),
            (
                b.copied,
                b.bytes,
                b.dirs_created,
                b.symlinks,
                b.deleted,
                b.unchanged
            ),
        );
    }
    // Fresh (staged) trees too.
    let (streamed, listed) = (d.path().join("fresh-s"), d.path().join("fresh-l"));
    assert!(mirror_up_with(&src, &streamed, true, true).is_ok());
    assert!(mirror_up_with(&src, &listed, false, true).is_ok());
    assert_eq!(scan(&streamed), scan(&listed));
    assert_eq!(
        fs::metadata(&streamed).unwrap().mtime(),
        fs::metadata(&src).unwrap().mtime()
    );
}

/// A `-D` server that logs every request (sftp-server's INFO log) to `log`.
fn logging_server(dir: &Path, log: &Path) -> String {
    let script = dir.join("logging-server");
    common::write_script(
        &script,
        &format!(
            "exec {} -e -l INFO 2>>{}",
            sftp_server_path().display(),
            log.display()
        ),
    );
    script.display().to_string()
}

#[test]
fn deletes_come_after_every_upload_landed_and_not_at_all_after_a_failure() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    for i in 0..300u64 {
        write_file(src.join(format!("d{}/f{i}", i % 7)), random_bytes(3_000, i));
    }
    for i in 0..40u64 {
        write_file(dst.join(format!("d{}/old{i}", i % 9)), b"extra");
    }
    write_file(dst.join("old-dir/deep/x"), b"extra");
    let log = d.path().join("server.log");
    let out = run(
        &logging_server(d.path(), &log),
        &["mirror", "--delete", &s(&src), &remote(&dst)],
    );
    ok(out);
    let log = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let last_write = lines
        .iter()
        .rposition(|l| {
            l.contains("flags WRITE") || l.contains("rename old") || l.contains("close \"")
        })
        .expect("uploads in the log");
    let first_delete = lines
        .iter()
        .position(|l| l.contains("remove name") || l.contains("rmdir name"))
        .expect("deletes in the log");
    assert!(
        last_write < first_delete,
        "a delete before the last upload landed:\n{}",
        lines[first_delete.min(last_write)..=first_delete.max(last_write)].join("\n")
    );
    assert_identical(&src, &dst);

    // One upload fails: nothing at all is deleted.
    write_file(src.join("d0/secret"), b"unreadable");
    write_file(src.join("d2/new"), b"lands");
    write_file(dst.join("d1/late-extra"), b"kept");
    common::give_to_test_user(d.path());
    set_mode(&src.join("d0/secret"), 0o000);
    let out = common::sftpipe_as_test_user(&["mirror", "--delete", &s(&src), &remote(&dst)]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(
        stderr_of(&out).contains("delete(s) skipped"),
        "{}",
        explain(&out)
    );
    assert_eq!(fs::read(dst.join("d1/late-extra")).unwrap(), b"kept");
    assert_eq!(fs::read(dst.join("d2/new")).unwrap(), b"lands");
}

/// A hard address-space ceiling for the memory guard: a few times what the streaming
/// mirror of 200,000 files needs in a debug build (about 48 MiB of address space, 33 MiB
/// resident), well under what listing the whole tree first took (over 160 MiB).
const MIRROR_AS_CEILING: u64 = 96 << 20;

/// Mirrors `files` empty files (in directories of 1,000) up under [`MIRROR_AS_CEILING`],
/// fresh (a staged tree) and then with nothing to do: both compare every file.
fn mirror_under_a_memory_ceiling(files: usize) {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    common::tree::many_empty_files(&src, files);
    let mirror = || {
        let args = ["mirror", &s(&src), &remote(&dst)];
        common::sftpipe_under_memory_ceiling(MIRROR_AS_CEILING, &args)
    };
    let out = ok(mirror());
    let n = files.to_string();
    assert!(
        stderr_of(&out).contains(&format!("{n} uploaded")),
        "{}",
        explain(&out)
    );
    let out = ok(mirror());
    assert!(
        stderr_of(&out).contains(&format!("{n} unchanged")),
        "{}",
        explain(&out)
    );
    assert_eq!(fs::read_dir(dst.join("t0/s0")).unwrap().count(), 1000);
}

/// The size the issue asks for (#17): about 20 s in a debug build, the longest test, and
/// worth it, since what it guards shows at this size (the whole-tree listing the streaming
/// mirror replaced needed over 160 MiB here).
#[test]
fn a_mirror_of_200000_files_stays_under_a_hard_memory_ceiling() {
    mirror_under_a_memory_ceiling(200_000);
}
