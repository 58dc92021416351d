//! The interoperability matrix: one scenario of the `sftpipe` command line, run against every
//! SFTP server the harness in `tests/common/servers.rs` can start (OpenSSH sshd, OpenSSH
//! `sftp-server` by `-D`, paramiko, gesftpserver, ProFTPD mod_sftp, asyncssh).
//!
//! Every server maps its remote paths onto a local directory, so each step checks its
//! effect on the local file system. Where a server lacks an extension (see
//! [`Capabilities`]), the step expects sftpipe's fallback or its clear message instead.
//! Steps do not stop at the first failure: each one is recorded and the test fails at the
//! end listing them all, so one run shows everything a server gets wrong.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::process::Output;

use common::servers::{Capabilities, Readlink, Server};
use common::tree::{Node, ODD_LINKS, differences_from, odd_tree, snapshot};
use common::{random_bytes, tmpfs_tempdir, write_file};

/// Files in the tree of the tree and mirror steps.
const TREE_FILES: usize = 300;

/// The size of the big file.
const BIG: usize = 50 << 20;

#[test]
fn openssh_sshd() {
    if let Some(s) = Server::openssh_sshd() {
        scenario(&s);
    }
}

#[test]
fn openssh_sftp_server() {
    if let Some(s) = Server::openssh_sftp_server() {
        scenario(&s);
    }
}

#[test]
fn paramiko() {
    if let Some(s) = Server::paramiko() {
        scenario(&s);
    }
}

#[test]
fn gesftpserver() {
    if let Some(s) = Server::gesftpserver() {
        scenario(&s);
    }
}

#[test]
fn proftpd() {
    if let Some(s) = Server::proftpd() {
        scenario(&s);
    }
}

#[test]
fn asyncssh() {
    if let Some(s) = Server::asyncssh() {
        scenario(&s);
    }
}

/// The whole scenario against `s`; the local side of every transfer lives in a tmpfs.
fn scenario(s: &Server) {
    let local = tmpfs_tempdir("sftpipe-interop-local-");
    let mut c = Checks {
        server: s,
        failures: Vec::new(),
    };
    mkdir_p(&mut c);
    files(&mut c, local.path());
    trees(&mut c, local.path());
    mirrors(&mut c, local.path());
    renames(&mut c);
    links(&mut c);
    attributes(&mut c);
    resume(&mut c, local.path());
    buffer_size(&mut c, local.path());
    c.finish();
}

/// The recorded failures of one server's scenario.
struct Checks<'a> {
    server: &'a Server,
    failures: Vec<String>,
}

impl Checks<'_> {
    fn caps(&self) -> Capabilities {
        self.server.caps
    }

    /// Records a failure of `step` unless `ok`.
    fn check(&mut self, step: &str, ok: bool, why: impl FnOnce() -> String) -> bool {
        if !ok {
            self.failures.push(format!("[{step}] {}", why()));
        }
        ok
    }

    /// Runs sftpipe with `args` and records a failure of `step` unless it exits with `code`.
    fn run_expecting(&mut self, step: &str, code: i32, args: &[&OsStr]) -> Output {
        let started = std::time::Instant::now();
        let out = self.server.sftpipe(args);
        let server = self.server;
        eprintln!(
            "{}: {step}: {:.2}s",
            server.name,
            started.elapsed().as_secs_f64()
        );
        self.check(step, out.status.code() == Some(code), || {
            format!(
                "`sftpipe {}` should exit {code}: {}",
                shown(args),
                server.explain(&out)
            )
        });
        out
    }

    /// Runs sftpipe with `args`, expecting success.
    fn run(&mut self, step: &str, args: &[&OsStr]) -> Output {
        self.run_expecting(step, 0, args)
    }

    /// Records a failure unless the trees at `want` and `got` are the same.
    fn same_tree(&mut self, step: &str, want: &Path, got: &Path) {
        self.tree_is(step, &snapshot(want), got, &want.display().to_string());
    }

    /// Records a failure unless the tree at `got` is `want` (named `what` in messages).
    fn tree_is(&mut self, step: &str, want: &BTreeMap<PathBuf, Node>, got: &Path, what: &str) {
        let diffs = if got.is_dir() {
            differences_from(want, got, 12)
        } else {
            vec![format!("{} is not a directory", got.display())]
        };
        self.check(step, diffs.is_empty(), || {
            format!(
                "{} differs from {what}:\n  {}",
                got.display(),
                diffs.join("\n  ")
            )
        });
    }

    /// Runs a download of the tree the server keeps at `src` (its `remote_dir`) and checks
    /// that it landed at `got` as the server's READLINK lets it: with
    /// [`Readlink::Refused`], every symlink fails by name and the rest lands.
    fn download_tree(
        &mut self,
        step: &str,
        args: &[&OsStr],
        src: &Path,
        remote_dir: &str,
        got: &Path,
    ) {
        let refused = self.caps().readlink == Readlink::Refused;
        let out = self.run_expecting(step, if refused { 1 } else { 0 }, args);
        if refused {
            let err = stderr(&out);
            let links: Vec<PathBuf> = snapshot(src)
                .into_iter()
                .filter_map(|(path, node)| matches!(node, Node::Link(_)).then_some(path))
                .collect();
            // `put -r`/`get -r` count failures on a line of their own, a mirror in its summary.
            let failed = format!("sftpipe: {} of ", links.len());
            let in_summary = format!(", {} failed in ", links.len());
            let counted = err.contains(&failed) || err.contains(&in_summary);
            self.check(step, counted, || {
                format!(
                    "want only the links failed ({failed:?}): {}",
                    self.server.explain(&out)
                )
            });
            for link in links {
                self.check(
                    step,
                    err.contains(&format!("{}: readlink", link.display())),
                    || {
                        format!(
                            "no failure named for the link {link:?}: {}",
                            self.server.explain(&out)
                        )
                    },
                );
            }
        }
        let want = as_downloaded(src, self.caps().readlink, remote_dir);
        self.tree_is(
            step,
            &want,
            got,
            &format!("{} as downloaded", src.display()),
        );
    }

    /// Records a failure unless the file at `got` holds `want`.
    fn same_file(&mut self, step: &str, want: &[u8], got: &Path) {
        let have = fs::read(got);
        self.check(
            step,
            have.as_deref().is_ok_and(|h| h == want),
            || match &have {
                Err(e) => format!("{}: {e}", got.display()),
                Ok(h) => format!(
                    "{} has {} bytes, want {}; first difference at byte {}",
                    got.display(),
                    h.len(),
                    want.len(),
                    h.iter()
                        .zip(want)
                        .position(|(a, b)| a != b)
                        .unwrap_or(h.len().min(want.len()))
                ),
            },
        );
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{}: {} step(s) failed:\n\n{}",
            self.server.name,
            self.failures.len(),
            self.failures.join("\n\n")
        );
    }
}

fn shown(args: &[&OsStr]) -> String {
    args.iter()
        .map(|a| format!("{:?}", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `[a, b, ...]` as `&[&OsStr]`.
macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$(OsStr::new(&$a)),*] };
}

/// The final `{"event": ...}` object of a `--progress=json` run's stdout.
fn json_event(out: &Output, event: &str) -> Option<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["event"] == event)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mkdir_p(c: &mut Checks) {
    let s = c.server;
    for step in ["mkdir -p", "mkdir -p (existing)"] {
        c.run(step, args!["mkdir", "-p", s.remote("made/a/b/c")]);
        let dir = s.local("made/a/b/c");
        c.check(step, dir.is_dir(), || {
            format!("{} is not a directory", dir.display())
        });
    }
}

/// put and get of a small and a 50 MiB file, byte for byte.
fn files(c: &mut Checks, local: &Path) {
    let s = c.server;
    let small = b"small file\n".to_vec();
    let big = random_bytes(BIG, 50);
    write_file(local.join("small.txt"), &small);
    write_file(local.join("big.bin"), &big);
    c.run(
        "put small",
        args!["put", local.join("small.txt"), s.remote("files/")],
    );
    c.same_file("put small", &small, &s.local("files/small.txt"));
    c.run(
        "put 50 MiB",
        args!["put", local.join("big.bin"), s.remote("files/big.bin")],
    );
    c.same_file("put 50 MiB", &big, &s.local("files/big.bin"));

    let got = local.join("got");
    fs::create_dir(&got).unwrap_or_else(|e| panic!("mkdir {}: {e}", got.display()));
    c.run("get small", args!["get", s.remote("files/small.txt"), got]);
    c.same_file("get small", &small, &got.join("small.txt"));
    c.run(
        "get 50 MiB",
        args!["get", s.remote("files/big.bin"), got.join("big.bin")],
    );
    c.same_file("get 50 MiB", &big, &got.join("big.bin"));
}

/// put -r and get -r of a tree of odd names and symlinks.
fn trees(c: &mut Checks, local: &Path) {
    let s = c.server;
    let src = local.join("tree");
    odd_tree(&src, TREE_FILES, c.caps().newline_names);
    c.run("put -r", args!["put", "-r", src, s.remote("tree")]);
    c.same_tree("put -r", &src, &s.local("tree"));

    let down = local.join("down");
    fs::create_dir(&down).unwrap_or_else(|e| panic!("mkdir {}: {e}", down.display()));
    // Compared with the server's copy, so that a failed put -r is not counted twice.
    let (served, remote_dir) = (s.local("tree"), s.remote_path("tree"));
    c.download_tree(
        "get -r",
        args!["get", "-r", s.remote("tree"), down],
        &served,
        &remote_dir,
        &down.join("tree"),
    );
}

/// The tree `src` as a download of its copy at `remote_dir` yields it, given what the
/// server's READLINK answers.
fn as_downloaded(src: &Path, readlink: Readlink, remote_dir: &str) -> BTreeMap<PathBuf, Node> {
    let mut want = snapshot(src);
    want.retain(|_, node| !(readlink == Readlink::Refused && matches!(node, Node::Link(_))));
    if readlink == Readlink::Resolved {
        for (path, node) in want.iter_mut() {
            if let Node::Link(target) = node {
                let dir = Path::new(remote_dir).join(path.parent().unwrap_or(Path::new("")));
                *target = lexical(&dir.join(&*target));
            }
        }
    }
    want
}

/// `path` with `.` and `..` resolved by name (as a server resolving a link does).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A fresh mirror, a mirror with nothing to do, one with --delete, and one back down.
fn mirrors(c: &mut Checks, local: &Path) {
    let s = c.server;
    let src = local.join("mirror-src");
    let files = odd_tree(&src, TREE_FILES, c.caps().newline_names) as u64;
    let links = ODD_LINKS.len() as u64;
    // A link whose target cannot be read is replaced, not compared.
    let relinked = if c.caps().readlink == Readlink::Refused {
        links
    } else {
        0
    };
    let remote = s.remote("mirror");
    let mirror = |c: &mut Checks, step: &str, extra: &[&str]| {
        let mut a: Vec<&OsStr> = vec![OsStr::new("mirror"), OsStr::new("--progress=json")];
        a.extend(extra.iter().map(OsStr::new));
        a.extend([src.as_os_str(), OsStr::new(&remote)]);
        let out = c.run(step, &a);
        c.same_tree(step, &src, &s.local("mirror"));
        let summary = json_event(&out, "mirror");
        c.check(step, summary.is_some(), || {
            format!("no mirror summary on stdout: {}", s.explain(&out))
        });
        summary.unwrap_or_default()
    };

    let first = mirror(c, "mirror", &[]);
    c.check(
        "mirror",
        first["copied"] == files && first["failed"] == 0,
        || format!("want {files} copied, 0 failed: {first}"),
    );

    let again = mirror(c, "mirror (nothing changed)", &[]);
    c.check(
        "mirror (nothing changed)",
        again["copied"] == 0
            && again["symlinks"] == relinked
            && again["unchanged"] == files + links - relinked,
        || format!("want no file sent, {relinked} links replaced: {again}"),
    );

    // Changed: one file rewritten with another size, one added, a directory and the
    // dangling link gone.
    write_file(src.join("plain/f0.txt"), b"now with content");
    write_file(src.join("new file.txt"), b"new");
    let gone = src.join(" leading");
    let gone_files = fs::read_dir(&gone).map(|d| d.count()).unwrap_or(0) as u64;
    fs::remove_dir_all(&gone).unwrap_or_else(|e| panic!("rm -r {}: {e}", gone.display()));
    fs::remove_file(src.join("dangling")).unwrap_or_else(|e| panic!("rm dangling: {e}"));
    let delete = mirror(c, "mirror --delete", &["--delete"]);
    c.check(
        "mirror --delete",
        delete["copied"] == 2 && delete["deleted"] == gone_files + 2,
        || format!("want 2 copied, {} deleted: {delete}", gone_files + 2),
    );

    let back = local.join("mirror-down");
    let (served, remote_dir) = (s.local("mirror"), s.remote_path("mirror"));
    c.download_tree(
        "mirror down",
        args!["mirror", remote, back],
        &served,
        &remote_dir,
        &back,
    );
}

/// mv onto an existing file, and mv of a symlink (the link moves, not its target).
fn renames(c: &mut Checks) {
    let s = c.server;
    write_file(s.local("mv/old.txt"), b"old");
    write_file(s.local("mv/new.txt"), b"to be replaced");
    let out = c.run(
        "mv onto a file",
        args!["mv", s.remote("mv/old.txt"), s.remote("mv/new.txt")],
    );
    c.same_file("mv onto a file", b"old", &s.local("mv/new.txt"));
    c.check("mv onto a file", !s.local("mv/old.txt").exists(), || {
        "mv/old.txt still exists".into()
    });
    if !c.caps().posix_rename {
        c.check(
            "mv onto a file",
            stderr(&out).contains("lacks posix-rename"),
            || {
                format!(
                    "no warning that the replacement is not atomic: {}",
                    s.explain(&out)
                )
            },
        );
    }

    write_file(s.local("mv/target.txt"), b"target");
    symlink("target.txt", s.local("mv/link")).unwrap_or_else(|e| panic!("symlink: {e}"));
    let (from, to) = (s.remote("mv/link"), s.remote("mv/link2"));
    let mv_link = args!["mv", from, to];
    if c.caps().lstat_follows {
        // Its RENAME would move target.txt: refused, nothing moved.
        let out = c.run_expecting("mv a symlink", 6, mv_link);
        c.check(
            "mv a symlink",
            stderr(&out).contains("would move the file it points to"),
            || format!("want the refusal explained: {}", s.explain(&out)),
        );
        let kept = fs::read_link(s.local("mv/link"));
        c.check(
            "mv a symlink",
            kept.as_ref().is_ok_and(|t| t == Path::new("target.txt")),
            || format!("mv/link should be left as it was: {kept:?}"),
        );
    } else {
        c.run("mv a symlink", mv_link);
        let moved = fs::read_link(s.local("mv/link2"));
        c.check(
            "mv a symlink",
            moved.as_ref().is_ok_and(|t| t == Path::new("target.txt")),
            || format!("mv/link2 should be a symlink to target.txt: {moved:?}"),
        );
    }
    c.same_file("mv a symlink", b"target", &s.local("mv/target.txt"));
}

/// ln -s (the target stored as given, read back by stat), and a hard link.
fn links(c: &mut Checks) {
    let s = c.server;
    write_file(s.local("ln/file"), b"linked");
    c.run("ln -s", args!["ln", "-s", "../ln/file", s.remote("ln/sym")]);
    let target = fs::read_link(s.local("ln/sym"));
    c.check(
        "ln -s",
        target.as_ref().is_ok_and(|t| t == Path::new("../ln/file")),
        || format!("ln/sym should be a symlink to ../ln/file: {target:?}"),
    );
    stat_of_symlink(c);

    if c.caps().hardlink {
        c.run("ln", args!["ln", s.remote("ln/file"), s.remote("ln/hard")]);
        let inode = |p: &str| fs::symlink_metadata(s.local(p)).map(|m| m.ino()).ok();
        c.check(
            "ln",
            inode("ln/hard").is_some() && inode("ln/hard") == inode("ln/file"),
            || "ln/hard is not a hard link of ln/file".into(),
        );
    } else {
        let out = c.run_expecting(
            "ln (no hardlink@)",
            6,
            args!["ln", s.remote("ln/file"), s.remote("ln/hard")],
        );
        c.check(
            "ln (no hardlink@)",
            stderr(&out).contains("hardlink@openssh.com"),
            || {
                format!(
                    "the message should name the missing extension: {}",
                    s.explain(&out)
                )
            },
        );
    }
}

/// `stat` of the link `ln -s` made: its target, as far as the server tells it.
fn stat_of_symlink(c: &mut Checks) {
    let s = c.server;
    let step = "stat of a symlink";
    let sym = s.remote("ln/sym");
    let (want, code) = match (c.caps().lstat_follows, c.caps().readlink) {
        (true, _) => ("Type: regular file".to_string(), 0),
        (false, Readlink::Stored) => ("-> ../ln/file".to_string(), 0),
        (false, Readlink::Resolved) => (format!("-> {}", s.remote_path("ln/file")), 0),
        (false, Readlink::Refused) => (format!("readlink '{}'", s.remote_path("ln/sym")), 3),
    };
    let out = c.run_expecting(step, code, args!["stat", sym]);
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    c.check(step, shown.contains(&want), || {
        format!("want {want:?}: {}", s.explain(&out))
    });
}

/// chmod, rm, rmdir, df, realpath.
fn attributes(c: &mut Checks) {
    let s = c.server;
    write_file(s.local("attrs/f"), b"f");
    fs::create_dir_all(s.local("attrs/empty")).unwrap_or_else(|e| panic!("mkdir: {e}"));
    c.run("chmod", args!["chmod", "640", s.remote("attrs/f")]);
    let mode = fs::metadata(s.local("attrs/f")).map(|m| m.permissions().mode() & 0o7777);
    c.check("chmod", mode.as_ref().is_ok_and(|&m| m == 0o640), || {
        format!(
            "mode {:?}, want 640",
            mode.as_ref().map(|m| format!("{m:o}"))
        )
    });
    c.run("rm", args!["rm", s.remote("attrs/f")]);
    c.check("rm", !s.local("attrs/f").exists(), || {
        "attrs/f still exists".into()
    });
    c.run("rmdir", args!["rmdir", s.remote("attrs/empty")]);
    c.check("rmdir", !s.local("attrs/empty").exists(), || {
        "attrs/empty still exists".into()
    });

    if c.caps().statvfs {
        let out = c.run("df", args!["df", s.remote("")]);
        c.check(
            "df",
            String::from_utf8_lossy(&out.stdout).lines().count() == 2,
            || format!("want a header and one line: {}", s.explain(&out)),
        );
    } else {
        let out = c.run_expecting("df (no statvfs@)", 6, args!["df", s.remote("")]);
        c.check(
            "df (no statvfs@)",
            stderr(&out).contains("statvfs@openssh.com"),
            || {
                format!(
                    "the message should name the missing extension: {}",
                    s.explain(&out)
                )
            },
        );
    }

    let out = c.run("realpath", args!["realpath", s.remote("attrs/../attrs/./")]);
    let want = s.remote_path("attrs");
    let got = String::from_utf8_lossy(&out.stdout);
    c.check("realpath", got.trim_end_matches('\n') == want, || {
        format!("want {want:?}, got {got:?}")
    });
}

/// put -a and get -a continue a truncated file: from a window below its size (what a
/// transfer keeps in flight: for a file big enough to be striped over channels, the byte
/// budget of 24 MiB, see `transfer::resume`), not from 0.
fn resume(c: &mut Checks, local: &Path) {
    let s = c.server;
    let full = random_bytes(40_000_000, 3);
    let part = 32_000_000;
    let resumed = |b: &serde_json::Value| {
        b.as_u64()
            .is_some_and(|b| b >= (full.len() - part) as u64 && b < full.len() as u64)
    };
    write_file(local.join("resume.bin"), &full);
    write_file(s.local("resume/up.bin"), &full[..part]);
    let out = c.run(
        "put -a",
        args![
            "put",
            "-a",
            "--progress=json",
            local.join("resume.bin"),
            s.remote("resume/up.bin")
        ],
    );
    c.same_file("put -a", &full, &s.local("resume/up.bin"));
    let sent = json_event(&out, "summary").map(|v| v["bytes"].clone());
    c.check("put -a", sent.as_ref().is_some_and(resumed), || {
        format!(
            "want the {} missing bytes and at most a window more sent: {sent:?}",
            full.len() - part
        )
    });

    write_file(local.join("resume-down.bin"), &full[..part]);
    let out = c.run(
        "get -a",
        args![
            "get",
            "-a",
            "--progress=json",
            s.remote("resume/up.bin"),
            local.join("resume-down.bin")
        ],
    );
    c.same_file("get -a", &full, &local.join("resume-down.bin"));
    let got = json_event(&out, "summary").map(|v| v["bytes"].clone());
    c.check("get -a", got.as_ref().is_some_and(resumed), || {
        format!(
            "want the {} missing bytes and at most a window more received: {got:?}",
            full.len() - part
        )
    });
}

/// `--buffer 256K` (the most sftpipe accepts) works with every server: it is lowered to
/// what the server allows.
fn buffer_size(c: &mut Checks, local: &Path) {
    let s = c.server;
    let data = random_bytes(5 << 20, 5);
    write_file(local.join("buffer.bin"), &data);
    c.run(
        "put --buffer 256K",
        args![
            "put",
            "--buffer",
            "256K",
            local.join("buffer.bin"),
            s.remote("buffer.bin")
        ],
    );
    c.same_file("put --buffer 256K", &data, &s.local("buffer.bin"));
    // Its own source, so that a failed put does not fail the get too.
    write_file(s.local("buffer-src.bin"), &data);
    c.run(
        "get --buffer 256K",
        args![
            "get",
            "--buffer",
            "256K",
            s.remote("buffer-src.bin"),
            local.join("buffer-down.bin")
        ],
    );
    c.same_file("get --buffer 256K", &data, &local.join("buffer-down.bin"));
}
