//! End-to-end tests of the reprepro publish hook (`sftpipe reprepro-hook`, run through
//! `contrib/reprepro/outsftphook`): a real reprepro repository whose `outhook` publishes
//! over a real sshd (tests/common) into a directory, checked after every step against
//! reprepro's own out dir (byte for byte) and with apt (update + download) in a throwaway
//! apt root. Needs reprepro, dpkg-deb and apt-get (installed with apt-get when missing
//! and possible; the tests skip with a loud notice otherwise).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::{Sshd, random_bytes, read_file, sftp_server_path, sshd_available, write_file};

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

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// reprepro, dpkg-deb and apt-get, installed when missing (as root, with apt-get).
fn tools_available() -> bool {
    static TOOLS: OnceLock<bool> = OnceLock::new();
    *TOOLS.get_or_init(|| {
        let all = || have("reprepro") && have("dpkg-deb") && have("apt-get");
        if all() {
            return true;
        }
        if have("apt-get") {
            eprintln!("installing reprepro and dpkg-dev for the reprepro tests");
            let install = || {
                Command::new("apt-get")
                    .args(["install", "-y", "-qq", "reprepro", "dpkg-dev"])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !install() {
                let _ = Command::new("apt-get")
                    .args(["update", "-qq"])
                    .stdout(Stdio::null())
                    .status();
                install();
            }
        }
        if all() {
            return true;
        }
        eprintln!(
            "\n\n**************************************************************************\n\
             NOTICE: SKIPPING the reprepro end-to-end tests: reprepro, dpkg-deb or apt-get is\n\
             missing and could not be installed (apt-get install reprepro dpkg-dev apt)\n\
             **************************************************************************\n"
        );
        false
    })
}

/// What a directory holds: path → file contents, symlink target or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

fn snapshot_into(root: &Path, rel: &Path, out: &mut BTreeMap<String, Node>) {
    let dir = root.join(rel);
    let Ok(rd) = fs::read_dir(&dir) else { return };
    for e in rd {
        let e = e.unwrap();
        let rel = rel.join(e.file_name());
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).unwrap();
        let key = rel.display().to_string();
        if meta.file_type().is_symlink() {
            out.insert(key, Node::Link(fs::read_link(&path).unwrap()));
        } else if meta.is_dir() {
            out.insert(key, Node::Dir);
            snapshot_into(root, &rel, out);
        } else {
            out.insert(key, Node::File(read_file(&path)));
        }
    }
}

/// The tree below `root`, limited to the top-level entries `only` when given.
fn snapshot(root: &Path, only: Option<&[&str]>) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    match only {
        Some(names) => {
            for n in names {
                let p = root.join(n);
                if p.is_dir() {
                    out.insert(n.to_string(), Node::Dir);
                    snapshot_into(root, Path::new(n), &mut out);
                }
            }
        }
        None => snapshot_into(root, Path::new(""), &mut out),
    }
    out
}

/// What clients can use: without the `.new` files (temporaries of an interrupted run)
/// and the directories holding nothing else.
fn visible(tree: &BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    let mut v: BTreeMap<String, Node> = tree
        .iter()
        .filter(|(k, _)| !k.ends_with(".new"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let used: Vec<String> = v
        .iter()
        .filter(|(_, n)| **n != Node::Dir)
        .map(|(k, _)| k.clone())
        .collect();
    v.retain(|k, n| *n != Node::Dir || used.iter().any(|u| u.starts_with(&format!("{k}/"))));
    v
}

fn assert_same_tree(what: &str, want: &BTreeMap<String, Node>, got: &BTreeMap<String, Node>) {
    if want == got {
        return;
    }
    let mut diff = String::new();
    for (k, v) in want {
        match got.get(k) {
            None => diff.push_str(&format!("  missing remotely: {k}\n")),
            Some(g) if g != v => diff.push_str(&format!("  differs: {k}\n")),
            _ => {}
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        diff.push_str(&format!("  extra remotely: {k}\n"));
    }
    panic!("{what}: the remote tree is not what it should be:\n{diff}");
}

/// A reprepro repository publishing through the hook into `remote`.
struct Repo {
    dir: tempfile::TempDir,
    base: PathBuf,
    remote: PathBuf,
}

const CODENAME: &str = "test";

impl Repo {
    fn new(sshd: &Sshd) -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("sftpipe-reprepro-")
            .tempdir()
            .unwrap();
        let base = dir.path().join("repo");
        let remote = dir.path().join("remote");
        fs::create_dir_all(base.join("conf")).unwrap();
        fs::create_dir_all(&remote).unwrap();
        // reprepro refuses 'all' in Architectures: Architecture: all packages go into
        // every architecture listed.
        write_file(
            base.join("conf/distributions"),
            format!(
                "Origin: sftpipe\nLabel: sftpipe\nCodename: {CODENAME}\nSuite: testing\n\
                 Components: main\nArchitectures: amd64\nDescription: sftpipe test\n"
            ),
        );
        let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/reprepro/outsftphook");
        write_file(
            base.join("conf/options"),
            format!("outhook {}\n", hook.display()),
        );
        let r = Repo { dir, base, remote };
        r.configure(sshd, "");
        r
    }

    /// Writes conf/outsftphook.conf reaching `sshd`, plus `extra` lines (later lines win).
    fn configure(&self, sshd: &Sshd, extra: &str) {
        write_file(
            self.base.join("conf/outsftphook.conf"),
            format!(
                "# written by tests/reprepro.rs\n\
                 servername {host}\n\
                 username {user}\n\
                 targetdir {target}\n\
                 port {port}\n\
                 identity = {key}\n\
                 ssh_option StrictHostKeyChecking=no\n\
                 ssh_option UserKnownHostsFile=/dev/null\n\
                 ssh_option BatchMode=yes\n\
                 ssh_option LogLevel=ERROR\n\
                 ssh_option IdentitiesOnly=yes\n\
                 {extra}",
                host = sshd.host(),
                user = sshd.user(),
                target = self.remote.display(),
                port = sshd.port(),
                key = sshd.key_path().display(),
            ),
        );
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.dir.path())
            .env("SFTPIPE", env!("CARGO_BIN_EXE_sftpipe"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REPREPRO_") {
                c.env_remove(k);
            }
        }
        c
    }

    /// Runs `reprepro -b BASE ARGS` (which runs the hook).
    fn reprepro(&self, args: &[&str]) -> Output {
        self.command("reprepro")
            .arg("-b")
            .arg(&self.base)
            .args(args)
            .output()
            .expect("run reprepro")
    }

    fn reprepro_ok(&self, args: &[&str]) {
        let out = self.reprepro(args);
        assert!(out.status.success(), "reprepro {args:?}: {}", explain(&out));
    }

    /// Runs the hook by hand, as an admin would: `outsftphook --basedir BASE ARGS`.
    fn hook(&self, args: &[&str]) -> Output {
        let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/reprepro/outsftphook");
        self.command(hook)
            .arg("--basedir")
            .arg(&self.base)
            .args(args)
            .output()
            .expect("run outsftphook")
    }

    /// Builds a tiny `.deb` (a control file and one data file; `payload` bytes of data).
    fn deb(&self, name: &str, version: &str, payload: &[u8]) -> PathBuf {
        let tree = self.dir.path().join(format!("build/{name}-{version}"));
        write_file(
            tree.join("DEBIAN/control"),
            format!(
                "Package: {name}\nVersion: {version}\nArchitecture: all\nSection: misc\n\
                 Priority: optional\nMaintainer: sftpipe tests <tests@example.org>\n\
                 Description: sftpipe test package {name}\n"
            ),
        );
        write_file(tree.join(format!("usr/share/{name}/data")), payload);
        let deb = self.dir.path().join(format!("{name}_{version}_all.deb"));
        let out = Command::new("dpkg-deb")
            .args(["-Znone", "--root-owner-group", "--build"])
            .arg(&tree)
            .arg(&deb)
            .output()
            .expect("run dpkg-deb");
        assert!(out.status.success(), "dpkg-deb: {}", explain(&out));
        deb
    }

    fn includedeb(&self, deb: &Path) -> Output {
        self.reprepro(&["includedeb", CODENAME, deb.to_str().unwrap()])
    }

    fn local_tree(&self) -> BTreeMap<String, Node> {
        snapshot(&self.base, Some(&["pool", "dists"]))
    }

    fn remote_tree(&self) -> BTreeMap<String, Node> {
        snapshot(&self.remote, None)
    }

    /// The remote tree equals reprepro's pool/ and dists/, nothing more (no leftovers).
    fn assert_published(&self, what: &str) {
        assert_same_tree(what, &self.local_tree(), &self.remote_tree());
        assert!(
            self.outlogs().is_empty(),
            "{what}: logs still pending: {:?}",
            self.outlogs()
        );
    }

    /// The `.outlog` files still pending.
    fn outlogs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.base.join("logs"))
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.retain(|p| p.extension().is_some_and(|e| e == "outlog"));
        v.sort();
        v
    }

    /// Runs apt-get with a throwaway root whose only source is the remote directory.
    fn apt(&self, args: &[&str], cwd: &Path) -> Output {
        let root = self.dir.path().join("aptroot");
        for d in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/trusted.gpg.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        write_file(root.join("status"), b"");
        write_file(
            root.join("sources.list"),
            format!(
                "deb [trusted=yes] file:{} {CODENAME} main\n",
                self.remote.display()
            ),
        );
        // Read first, instead of the host's apt.conf.d (and its hooks).
        write_file(
            root.join("apt.conf"),
            format!(
                "Dir \"{r}/\";\nDir::Etc::Parts \"{r}/etc/apt/apt.conf.d\";\n",
                r = root.display()
            ),
        );
        let r = root.display().to_string();
        let opts = [
            format!("Dir={r}/"),
            format!("Dir::State::status={r}/status"),
            format!("Dir::Etc::SourceList={r}/sources.list"),
            "Dir::Etc::SourceParts=/nonexistent".to_string(),
            "Debug::NoLocking=1".to_string(),
            "APT::Sandbox::User=root".to_string(),
            "APT::Architecture=amd64".to_string(),
            "APT::Architectures=amd64".to_string(),
            "Acquire::Languages=none".to_string(),
        ];
        let mut c = Command::new("apt-get");
        c.env("APT_CONFIG", root.join("apt.conf"))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .current_dir(cwd)
            .stdin(Stdio::null())
            .arg("-q");
        for o in &opts {
            c.arg("-o").arg(o);
        }
        c.args(args).output().expect("run apt-get")
    }

    /// apt sees the remote repository: `apt-get update` works, every package of
    /// `present` downloads (and equals the pool file), none of `absent` does.
    fn assert_apt(&self, present: &[(&str, &str)], absent: &[&str]) {
        let out = self.apt(&["update"], self.dir.path());
        assert!(out.status.success(), "apt-get update: {}", explain(&out));
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            !all.contains("W: ") && !all.contains("E: "),
            "apt-get update complained: {all}"
        );
        let dl = self.dir.path().join("download");
        let _ = fs::remove_dir_all(&dl);
        fs::create_dir_all(&dl).unwrap();
        for (name, version) in present {
            let out = self.apt(&["download", &format!("{name}={version}")], &dl);
            assert!(
                out.status.success(),
                "apt-get download {name}={version}: {}",
                explain(&out)
            );
            let file = format!("{name}_{version}_all.deb");
            let pool = self
                .remote
                .join(format!("pool/main/{}/{name}/{file}", &name[..1]));
            assert_eq!(
                read_file(dl.join(&file)),
                read_file(&pool),
                "{file} as downloaded"
            );
        }
        for name in absent {
            let out = self.apt(&["download", name], &dl);
            assert!(
                !out.status.success(),
                "apt-get download {name} should fail: {}",
                explain(&out)
            );
        }
    }
}

fn ready() -> bool {
    sshd_available() && tools_available()
}

#[test]
fn reprepro_publishes_every_change_atomically() {
    if !ready() {
        return;
    }
    let sshd = Sshd::start();
    let repo = Repo::new(&sshd);
    let a1 = repo.deb("alpha", "1.0", b"alpha one\n");
    let b1 = repo.deb("beta", "1.0", &random_bytes(50_000, 7));
    let b2 = repo.deb("beta", "2.0", &random_bytes(60_000, 8));

    let out = repo.includedeb(&a1);
    assert!(out.status.success(), "{}", explain(&out));
    repo.assert_published("after includedeb alpha");
    repo.assert_apt(&[("alpha", "1.0")], &["beta"]);

    let out = repo.includedeb(&b1);
    assert!(out.status.success(), "{}", explain(&out));
    repo.assert_published("after includedeb beta");
    repo.assert_apt(&[("alpha", "1.0"), ("beta", "1.0")], &[]);

    repo.reprepro_ok(&["remove", CODENAME, "alpha"]);
    repo.assert_published("after remove alpha");
    assert!(
        !repo.remote.join("pool/main/a").exists(),
        "empty pool directories go"
    );
    repo.assert_apt(&[("beta", "1.0")], &["alpha"]);

    let out = repo.includedeb(&b2);
    assert!(out.status.success(), "{}", explain(&out));
    repo.assert_published("after includedeb beta 2.0");
    repo.assert_apt(&[("beta", "2.0")], &["alpha"]);
    assert!(
        !repo
            .remote
            .join("pool/main/b/beta/beta_1.0_all.deb")
            .exists(),
        "the old version left the pool"
    );

    // Every log was processed and renamed.
    let done = fs::read_dir(repo.base.join("logs"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "done")
        })
        .count();
    assert_eq!(done, 4);
}

#[test]
fn failed_runs_are_resumed_and_converge() {
    if !ready() {
        return;
    }
    let sshd = Sshd::start();
    let repo = Repo::new(&sshd);
    let a1 = repo.deb("alpha", "1.0", b"alpha one\n");
    let big = repo.deb("gamma", "1.0", &random_bytes(3 << 20, 3));
    let c1 = repo.deb("delta", "1.0", b"delta\n");
    let a2 = repo.deb("alpha", "2.0", b"alpha two\n");

    let out = repo.includedeb(&a1);
    assert!(out.status.success(), "{}", explain(&out));
    repo.assert_published("baseline");
    let baseline = repo.remote_tree();

    // 1. The connection is cut in the middle of the big upload: ssh's input ends after
    //    1 MiB of requests, so ssh and the server go away mid-file. (dd passes each read
    //    on at once, where head would keep the first packets in its stdio buffer; cat
    //    keeps ssh from making dd's input, the same socket as its output, non-blocking.)
    let cut = repo.dir.path().join("cut-ssh");
    write_file(
        &cut,
        "#!/bin/sh\ndd bs=65536 iflag=count_bytes count=1048576 status=none | ssh \"$@\" | cat\n",
    );
    fs::set_permissions(&cut, fs::Permissions::from_mode(0o755)).unwrap();
    repo.configure(&sshd, &format!("ssh_program {}\n", cut.display()));
    let out = repo.includedeb(&big);
    assert!(
        !out.status.success(),
        "the hook must fail: {}",
        explain(&out)
    );
    assert!(
        text(&out.stderr).contains("connection"),
        "{}",
        explain(&out)
    );
    assert_eq!(repo.outlogs().len(), 1, "the log stays pending");
    // The big file was cut short under its hidden temporary name; the indexes are up as
    // .new files (recorded), waiting for the pool.
    let partial = repo.remote.join("pool/main/g/gamma/.gamma_1.0_all.deb.new");
    let partial_len = fs::metadata(&partial)
        .unwrap_or_else(|e| panic!("{}: {e}: {}", partial.display(), explain(&out)))
        .len();
    assert!(
        partial_len < fs::metadata(&big).unwrap().len(),
        "cut mid-file"
    );
    let recorded = fs::read_to_string(&repo.outlogs()[0]).unwrap();
    assert!(
        !recorded
            .lines()
            .any(|l| l.starts_with("DONE") && l.contains("gamma")),
        "{recorded}"
    );
    assert!(
        !recorded.contains("DONE\tdone\t"),
        "nothing was made visible: {recorded}"
    );
    // Nothing the clients see changed: no index points at the half-uploaded file.
    assert_same_tree(
        "after the cut",
        &visible(&baseline),
        &visible(&repo.remote_tree()),
    );

    // 2. Without autoretry, a newer run refuses to publish over the pending one.
    repo.configure(&sshd, "");
    let out = repo.reprepro(&["remove", CODENAME, "alpha"]);
    assert!(!out.status.success(), "{}", explain(&out));
    assert!(
        text(&out.stderr).contains("older logs are still pending"),
        "{}",
        explain(&out)
    );
    assert_eq!(repo.outlogs().len(), 2);
    assert_same_tree(
        "after the refusal",
        &visible(&baseline),
        &visible(&repo.remote_tree()),
    );

    // A dry run shows the merged plan and changes nothing.
    let out = repo.hook(&["--pending", "--dry-run"]);
    assert!(out.status.success(), "{}", explain(&out));
    let plan = text(&out.stdout);
    assert!(
        plan.contains("upload pool/main/g/gamma/gamma_1.0_all.deb"),
        "{plan}"
    );
    assert!(
        plan.contains("delete pool/main/a/alpha/alpha_1.0_all.deb"),
        "{plan}"
    );
    assert!(
        plan.contains("rename dists/test/Release.new to Release"),
        "{plan}"
    );
    assert_eq!(repo.outlogs().len(), 2);

    // 3. Run by hand with --pending: everything converges, leftovers included.
    let out = repo.hook(&["--pending", "--verbose"]);
    assert!(out.status.success(), "{}", explain(&out));
    repo.assert_published("after --pending");
    repo.assert_apt(&[("gamma", "1.0")], &["alpha"]);

    // 4. ssh fails for one run (nothing listens on the port); with autoretry the next
    //    reprepro run takes the pending log along.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    repo.configure(&sshd, &format!("autoretry yes\nport {closed}\n"));
    let before = repo.remote_tree();
    let out = repo.includedeb(&c1);
    assert!(!out.status.success(), "{}", explain(&out));
    assert_eq!(repo.outlogs().len(), 1);
    assert_same_tree("after the failed connect", &before, &repo.remote_tree());

    repo.configure(&sshd, "autoretry yes\n");
    let out = repo.includedeb(&a2);
    assert!(out.status.success(), "{}", explain(&out));
    repo.assert_published("after autoretry");
    repo.assert_apt(&[("alpha", "2.0"), ("delta", "1.0"), ("gamma", "1.0")], &[]);
}

/// A hand-written log through a local sftp-server (`-D`): symlinks, deletions, pool
/// files already there, refusals, parse errors and DONE records.
#[test]
fn handwritten_logs_through_a_local_server() {
    let Ok(server) = std::panic::catch_unwind(sftp_server_path) else {
        eprintln!("NOTICE: no sftp-server; skipping");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("repo");
    let remote = t.path().join("remote");
    fs::create_dir_all(&remote).unwrap();
    write_file(
        base.join("conf/outsftphook.conf"),
        format!("targetdir {}\n", remote.display()),
    );
    write_file(base.join("pool/main/a/a/a_1_all.deb"), b"package a");
    write_file(base.join("pool/main/b/b/b_1_all.deb"), b"package b");
    write_file(base.join("dists/t/Release"), b"release 2");
    write_file(base.join("dists/t/main/Packages"), b"packages 2");
    let d = base.join("dists/t").display().to_string();
    let log = base.join("logs/1700000000-aaaaaa.outlog");
    let lines = format!(
        "POOLNEW\tpool/main/a/a/a_1_all.deb\nPOOLNEW\tpool/main/b/b/b_1_all.deb\n\
         BEGIN-DISTRIBUTION\tt\tdists/t\ttesting\n\
         DISTFILE\tdists/t\tRelease\t{d}/Release\n\
         DISTFILE\tdists/t\tmain/Packages\t{d}/main/Packages\n\
         DISTSYMLINK\tdists/t\tcurrent\tmain\n\
         DISTDELETE\tdists/t\tmain/Packages.bz2\n\
         DISTDELETE\tdists/t\tmain/Sources.gz\n\
         END-DISTRIBUTION\tt\tdists/t\ttesting\n\
         POOLDELETE\tpool/main/o/old/old_0_all.deb\n"
    );
    let run = |args: &[&str]| {
        common::reprepro_hook_command(&server, &base)
            .args(args)
            .output()
            .unwrap()
    };
    let logp = log.to_str().unwrap();

    // A line that does not parse: an error naming file and line, nothing changed.
    write_file(&log, format!("{lines}DISTFILE\tdists/t\tbroken\n"));
    let out = run(&[logp]);
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    assert!(
        text(&out.stderr).contains(&format!("{logp}:11: DISTFILE takes 3 argument(s)")),
        "{}",
        explain(&out)
    );
    assert!(snapshot(&remote, None).is_empty());

    // The old state on the server: an old Release, a stale link, b already there, a
    // file the deletion removes, and the old pool file.
    write_file(remote.join("dists/t/Release"), b"release 1");
    write_file(remote.join("dists/t/main/Packages.bz2"), b"old");
    std::os::unix::fs::symlink("elsewhere", remote.join("dists/t/current")).unwrap();
    write_file(remote.join("pool/main/b/b/b_1_all.deb"), b"package b");
    write_file(remote.join("pool/main/o/old/old_0_all.deb"), b"old");

    // A different a already on the server is never replaced: the distribution stays as
    // it was and the pool deletion waits.
    write_file(remote.join("pool/main/a/a/a_1_all.deb"), b"package A");
    write_file(&log, &lines);
    let out = run(&[logp]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(
        text(&out.stderr).contains("refusing to replace it"),
        "{}",
        explain(&out)
    );
    assert_eq!(read_file(remote.join("dists/t/Release")), b"release 1");
    assert!(remote.join("pool/main/o/old/old_0_all.deb").exists());
    let recorded = fs::read_to_string(&log).unwrap();
    assert!(
        recorded.contains("DONE\tpresent\tpool/main/b/b/b_1_all.deb\n"),
        "{recorded}"
    );
    assert!(
        recorded.contains("DONE\tasdotnew\tdists/t/Release\n"),
        "{recorded}"
    );
    assert!(
        !recorded
            .lines()
            .any(|l| l.starts_with("DONE") && l.ends_with("/a_1_all.deb")),
        "{recorded}"
    );

    // Fixed on the server: the rerun finishes the job from the records. (One recorded
    // .new has vanished meanwhile: it is uploaded again rather than failing the rename.)
    fs::remove_file(remote.join("pool/main/a/a/a_1_all.deb")).unwrap();
    fs::remove_file(remote.join("dists/t/Release.new")).unwrap();
    let out = run(&["-v", logp]);
    assert!(out.status.success(), "{}", explain(&out));
    let said = text(&out.stdout);
    assert!(
        !said.contains("asdotnew"),
        "the .new files were not uploaded again: {said}"
    );
    assert!(said.contains("done: dists/t/Release"), "{said}");
    assert!(
        said.contains("already deleted: dists/t/main/Sources.gz"),
        "{said}"
    );
    assert!(!log.exists());
    let done = fs::read_to_string(base.join("logs/1700000000-aaaaaa.done")).unwrap();
    assert!(
        done.contains("DONE\tsymlink done\tdists/t/current\n"),
        "{done}"
    );
    assert!(
        done.contains("DONE\tdeleted\tpool/main/o/old/old_0_all.deb\n"),
        "{done}"
    );
    assert_eq!(read_file(remote.join("dists/t/Release")), b"release 2");
    assert_eq!(
        read_file(remote.join("pool/main/a/a/a_1_all.deb")),
        b"package a"
    );
    assert_eq!(
        fs::read_link(remote.join("dists/t/current")).unwrap(),
        Path::new("main")
    );
    assert!(!remote.join("dists/t/main/Packages.bz2").exists());
    assert!(
        !remote.join("pool/main/o").exists(),
        "emptied pool directories are removed"
    );
    let mut want = snapshot(&base, Some(&["pool", "dists"]));
    want.insert("dists/t/current".into(), Node::Link("main".into()));
    assert_same_tree("hand-written log", &want, &snapshot(&remote, None));

    // Nothing pending: nothing to do.
    let out = run(&["--pending"]);
    assert!(out.status.success(), "{}", explain(&out));
}
