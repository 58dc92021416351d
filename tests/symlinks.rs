//! Remote symlinks, checked on disk: made with SYMLINK's paths in the order each server
//! takes (gesftpserver follows the draft and says so), never renamed into place (a server
//! whose RENAME follows links would move the file they point to), and with their own
//! modification times kept where the server can set them (`lsetstat@openssh.com`).

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{gesftpserver_path, read_file, sftpipe_bin, write_file};

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
