//! Remote symlinks, checked on disk: made with SYMLINK's paths in the order each server
//! takes (gesftpserver follows the draft and says so), never renamed into place (a server
//! whose RENAME follows links would move the file they point to), and with their own
//! modification times kept where the server can set them (`lsetstat@openssh.com`).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{LoggedSftpServer, gesftpserver_path, read_file, sftpipe_bin, write_file};

/// Runs sftpipe with `-D server` in the working directory `cwd`.
fn run_in(cwd: &Path, server: &str, args: &[&str]) -> Output {
    Command::new(sftpipe_bin())
        .arg("-D")
        .arg(server)
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run sftpipe")
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn remote(p: &Path) -> String {
    format!(":{}", p.display())
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn link_of(p: &Path) -> PathBuf {
    fs::read_link(p).unwrap_or_else(|e| panic!("{} is not a symlink: {e}", p.display()))
}

fn own_mtime(p: &Path) -> i64 {
    fs::symlink_metadata(p).unwrap().mtime()
}

/// Sets a symlink's own modification time (`touch -h`).
fn touch_link(p: &Path, secs: i64) {
    let st = Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{secs}"))
        .arg(p)
        .status()
        .expect("run touch");
    assert!(st.success(), "touch -h {}", p.display());
}

/// A file with links beside it and below it: `f`, `l -> f`, `d/up -> ../f`, and
/// `gone -> nowhere` (dangling).
fn tree_with_links(root: &Path) {
    write_file(root.join("f"), b"the target\n");
    fs::create_dir_all(root.join("d")).unwrap();
    symlink("f", root.join("l")).unwrap();
    symlink("../f", root.join("d/up")).unwrap();
    symlink("nowhere", root.join("gone")).unwrap();
}

fn assert_links(root: &Path) {
    assert_eq!(link_of(&root.join("l")), PathBuf::from("f"));
    assert_eq!(link_of(&root.join("d/up")), PathBuf::from("../f"));
    assert_eq!(link_of(&root.join("gone")), PathBuf::from("nowhere"));
    assert_eq!(read_file(root.join("f")), b"the target\n");
    assert!(fs::symlink_metadata(root.join("f")).unwrap().is_file());
}

fn assert_empty(dir: &Path) {
    let stray: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        stray.is_empty(),
        "stray entries in the server's cwd: {stray:?}"
    );
}

/// gesftpserver announces `symlink-order@rjk.greenend.org.uk linkpath-targetpath`: `ln -s`,
/// `put -r` and `mirror` make the links it is asked for, and none in its working directory.
#[test]
fn gesftpserver_gets_symlinks_in_the_order_it_announces() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst, cwd) = (
        d.path().join("src"),
        d.path().join("dst"),
        d.path().join("cwd"),
    );
    fs::create_dir_all(&cwd).unwrap();
    fs::create_dir_all(&dst).unwrap();
    tree_with_links(&src);
    let server = gesftpserver_path().display().to_string();

    ok(run_in(
        &cwd,
        &server,
        &["ln", "-s", "f", &remote(&dst.join("made"))],
    ));
    assert_eq!(link_of(&dst.join("made")), PathBuf::from("f"));

    ok(run_in(
        &cwd,
        &server,
        &["mirror", &s(&src), &remote(&dst.join("m"))],
    ));
    assert_links(&dst.join("m"));
    ok(run_in(
        &cwd,
        &server,
        &["put", "-r", &s(&src), &remote(&dst.join("p"))],
    ));
    assert_links(&dst.join("p"));
    assert_empty(&cwd);

    // It has no lsetstat: links compare by target, so a second mirror has nothing to do.
    let again = ok(run_in(
        &cwd,
        &server,
        &["mirror", "-n", &s(&src), &remote(&dst.join("m"))],
    ));
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(said.trim().is_empty(), "a no-op mirror planned: {said}");
}

/// The lines of a server log that rename something whose path ends in one of `names`.
fn renames_of<'a>(log: &'a str, names: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains("rename"))
        .filter(|l| names.iter().any(|n| l.contains(&format!("/{n}\""))))
        .collect()
}

/// A symlink is made under its own name, never renamed into place (ProFTPD's RENAME follows
/// a link and would move its target onto the link's name): in a new tree, onto a link that
/// points elsewhere (mirror and `put -r`), and onto a file.
#[test]
fn symlinks_next_to_their_targets_are_never_renamed() {
    let d = tempfile::tempdir().unwrap();
    let server = LoggedSftpServer::new(d.path());
    let (src, dst, put) = (
        d.path().join("src"),
        d.path().join("dst"),
        d.path().join("put"),
    );
    tree_with_links(&src);
    let cmd = server.command();
    let links = ["l", "up", "gone"];
    // Into the directory `put`: the tree lands as put/src, anew, then over itself.
    let into_put = format!("{}/", remote(&put));
    let dst2 = put.join("src");

    ok(run_in(d.path(), &cmd, &["mirror", &s(&src), &remote(&dst)]));
    ok(run_in(d.path(), &cmd, &["put", "-r", &s(&src), &into_put]));
    let log = server.take_log();
    assert_eq!(renames_of(&log, &links), Vec::<&str>::new(), "{log}");
    assert!(log.contains("symlink old \"f\" new"), "{log}");
    assert_links(&dst);
    assert_links(&dst2);

    // Links that change target, a file that becomes a link, and a link that becomes a
    // file: the mirror removes that link before the file's rename lands on its name.
    fs::remove_file(src.join("gone")).unwrap();
    write_file(src.join("gone"), b"now a file\n");
    write_file(src.join("g"), b"another\n");
    fs::remove_file(src.join("l")).unwrap();
    symlink("g", src.join("l")).unwrap();
    write_file(dst.join("was-file"), b"replace me\n");
    write_file(dst2.join("was-file"), b"replace me\n");
    symlink("f", src.join("was-file")).unwrap();
    ok(run_in(d.path(), &cmd, &["mirror", &s(&src), &remote(&dst)]));
    ok(run_in(d.path(), &cmd, &["put", "-r", &s(&src), &into_put]));
    let log = server.take_log();
    assert_eq!(
        renames_of(&log, &["l", "was-file"]),
        Vec::<&str>::new(),
        "{log}"
    );
    let gone = format!("remove name \"{}\"", dst.join("gone").display());
    let renamed = renames_of(&log, &["gone"]);
    let (removed, renamed) = (log.find(&gone), renamed.first().and_then(|r| log.find(r)));
    assert!(removed.is_some() && removed < renamed, "{log}");
    assert_eq!(read_file(dst.join("gone")), b"now a file\n");
    for root in [&dst, &dst2] {
        assert_eq!(link_of(&root.join("l")), PathBuf::from("g"));
        assert_eq!(link_of(&root.join("was-file")), PathBuf::from("f"));
        assert_eq!(read_file(root.join("f")), b"the target\n");
        assert_eq!(read_file(root.join("g")), b"another\n");
    }
}

/// With lsetstat (OpenSSH ≥ 8.?), a mirror gives links their own times, both ways, and so
/// does `put -r -p`; a link whose time alone changed gets its time set, not re-made; a
/// mirror of an unchanged tree does nothing.
#[test]
fn mirrors_keep_the_own_times_of_symlinks() {
    let d = tempfile::tempdir().unwrap();
    let server = LoggedSftpServer::new(d.path());
    let cmd = server.command();
    let (src, dst, back, put) = (
        d.path().join("src"),
        d.path().join("dst"),
        d.path().join("back"),
        d.path().join("put"),
    );
    tree_with_links(&src);
    touch_link(&src.join("l"), 1_000_000_000);
    touch_link(&src.join("d/up"), 1_100_000_000);

    ok(run_in(d.path(), &cmd, &["mirror", &s(&src), &remote(&dst)]));
    assert_eq!(own_mtime(&dst.join("l")), 1_000_000_000);
    assert_eq!(own_mtime(&dst.join("d/up")), 1_100_000_000);
    ok(run_in(
        d.path(),
        &cmd,
        &["put", "-r", "-p", &s(&src), &remote(&put)],
    ));
    assert_eq!(own_mtime(&put.join("l")), 1_000_000_000);
    ok(run_in(
        d.path(),
        &cmd,
        &["mirror", &remote(&dst), &s(&back)],
    ));
    assert_eq!(own_mtime(&back.join("l")), 1_000_000_000);
    assert_eq!(own_mtime(&back.join("d/up")), 1_100_000_000);
    assert_links(&back);

    touch_link(&src.join("l"), 1_200_000_000);
    server.take_log();
    ok(run_in(d.path(), &cmd, &["mirror", &s(&src), &remote(&dst)]));
    let log = server.take_log();
    assert!(
        !log.contains("symlink old"),
        "re-made a link for its time:\n{log}"
    );
    assert_eq!(own_mtime(&dst.join("l")), 1_200_000_000);
    assert_eq!(link_of(&dst.join("l")), PathBuf::from("f"));

    let planned = |from: String, to: String| {
        let out = ok(run_in(d.path(), &cmd, &["mirror", "-n", &from, &to]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(planned(s(&src), remote(&dst)), "");
    assert_eq!(planned(remote(&dst), s(&back)), "touch -h l");
    ok(run_in(
        d.path(),
        &cmd,
        &["mirror", &remote(&dst), &s(&back)],
    ));
    assert_eq!(own_mtime(&back.join("l")), 1_200_000_000);
    assert_eq!(planned(remote(&dst), s(&back)), "");
}

/// reprepro-hook replaces a distribution's link by REMOVE + SYMLINK, never by renaming a
/// temporary link over it: on a server whose RENAME follows links (ProFTPD), that would
/// move the directory the link points to.
#[test]
fn reprepro_links_are_replaced_without_a_rename() {
    let d = tempfile::tempdir().unwrap();
    let server = LoggedSftpServer::new(d.path());
    let (base, published) = (d.path().join("repo"), d.path().join("published"));
    write_file(
        base.join("conf/outsftphook.conf"),
        format!("targetdir {}\n", published.display()),
    );
    write_file(published.join("dists/t/main/Packages"), b"packages\n");
    symlink("elsewhere", published.join("dists/t/current")).unwrap();
    let log = base.join("logs/1700000000-aaaaaa.outlog");
    write_file(
        &log,
        "BEGIN-DISTRIBUTION\tt\tdists/t\ttesting\n\
         DISTSYMLINK\tdists/t\tcurrent\tmain\n\
         END-DISTRIBUTION\tt\tdists/t\ttesting\n",
    );
    let out = common::reprepro_hook_command(server.command(), &base)
        .arg(&log)
        .current_dir(d.path())
        .output()
        .expect("run sftpipe");
    ok(out);
    let said = server.take_log();
    assert_eq!(
        renames_of(&said, &["current"]),
        Vec::<&str>::new(),
        "{said}"
    );
    let dist = published.join("dists/t");
    assert_eq!(link_of(&dist.join("current")), PathBuf::from("main"));
    assert_eq!(read_file(dist.join("main/Packages")), b"packages\n");
}
