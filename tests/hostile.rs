//! Hostile servers: the client against a fake server that damages its replies (wrong ids,
//! types, lengths, counts, hostile names, truncation, the stream ending mid-packet).
//!
//! The fake server (`tests/common/fake_server/`) is this test binary itself, run as the
//! `-D` server command, so every case goes through the real spawn path; this file has its
//! own `main` (`harness = false`) so that the binary can be that server. Each case runs
//! one operation — through the library or the `sftpipe` binary — and asserts: it returns
//! within seconds (no hang, no stall), does not panic, fails (if it fails) with clear
//! one-line messages, does not balloon in memory, and writes nothing outside its target.
//!
//! The cases: every operation against the honest fake (which proves the fake right), names
//! listed twice with different types, seeded random damage, hostile names, and the stream
//! ending at the boundaries and fields of every packet of small operations. Longer runs:
//! `SFTPIPE_HOSTILE_ITERATIONS=N` random cases per operation (default 16),
//! `SFTPIPE_HOSTILE_SEED=S` for other seeds, `SFTPIPE_HOSTILE_EVERY_BYTE=1` to end the
//! stream at every byte, `SFTPIPE_HOSTILE_CASE=op/via/plan` (as printed for a failure) to
//! run one case (`SFTPIPE_HOSTILE_REPEAT=N` times).

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::fake_server::tree::{SAMPLE_FILES, sample_bytes};
use common::fake_server::{self, Plan};
use sftpipe::mirror::{MirrorOptions, mirror_down, mirror_up};
use sftpipe::transfer::{NoProgress, TransferOptions};
use sftpipe::{ConnectOptions, Error, Session, StatusCode};

/// A case that takes longer than this hangs.
const DEADLINE: Duration = Duration::from_secs(10);
/// A case that takes longer than this stalls somewhere (cases take milliseconds).
const STALL: Duration = Duration::from_secs(4);
/// Random cases per operation and way of running it, unless `SFTPIPE_HOSTILE_ITERATIONS`.
const DEFAULT_ITERATIONS: u64 = 16;
/// The first random seed, unless `SFTPIPE_HOSTILE_SEED`.
const DEFAULT_SEED: u64 = 0x5EED_0001;
/// Where a name with `..` would land if it escaped (see `HOSTILE_NAMES`).
const ESCAPE: &str = "/tmp/sftpipe-hostile-escape";
/// Growth of this process's peak memory during a case above which something allocated
/// from a hostile length.
const MAX_CASE_GROWTH_KIB: u64 = 64 << 10;
/// Likewise for memory reserved but not (yet) used, such as a vector's capacity.
const MAX_CASE_RESERVED_KIB: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Stat,
    Ls,
    Realpath,
    Readlink,
    /// `get` of one file.
    Get,
    /// `get -r` of a tree: names from the server become local paths.
    GetTree,
    Put,
    PutTree,
    /// `mirror --delete` from the server into a local tree that has stale entries.
    Mirror,
    /// `mirror --delete` of a local tree onto the server's.
    MirrorUp,
    /// `df` (statvfs).
    Df,
}

const OPS: [Op; 11] = [
    Op::Stat,
    Op::Ls,
    Op::Realpath,
    Op::Readlink,
    Op::Get,
    Op::GetTree,
    Op::Put,
    Op::PutTree,
    Op::Mirror,
    Op::MirrorUp,
    Op::Df,
];

impl Op {
    /// Whether the operation reads names from the server (listings, REALPATH, READLINK).
    fn reads_names(self) -> bool {
        matches!(
            self,
            Op::Ls | Op::Realpath | Op::Readlink | Op::GetTree | Op::Mirror | Op::MirrorUp
        )
    }

    fn name(self) -> &'static str {
        match self {
            Op::Stat => "stat",
            Op::Ls => "ls",
            Op::Realpath => "realpath",
            Op::Readlink => "readlink",
            Op::Get => "get",
            Op::GetTree => "get-tree",
            Op::Put => "put",
            Op::PutTree => "put-tree",
            Op::Mirror => "mirror",
            Op::MirrorUp => "mirror-up",
            Op::Df => "df",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Library,
    Cli,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    op: Op,
    via: Via,
    plan: Plan,
    /// Work on the small subtree (`/data/sub`), for the byte-by-byte sweeps.
    small: bool,
}

impl Case {
    fn new(op: Op, via: Via, plan: Plan, small: bool) -> Case {
        Case {
            op,
            via,
            plan,
            small,
        }
    }

    fn id(&self) -> String {
        let via = match self.via {
            Via::Library => "lib",
            Via::Cli => "cli",
        };
        let size = if self.small { "/small" } else { "" };
        format!("{}/{via}/{}{size}", self.op.name(), self.plan.arg())
    }

    fn parse(s: &str) -> Option<Case> {
        let mut parts = s.split('/');
        let (op, via, plan) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Case {
            op: *OPS.iter().find(|o| o.name() == op)?,
            via: match via {
                "lib" => Via::Library,
                "cli" => Via::Cli,
                _ => return None,
            },
            plan: Plan::parse(plan)?,
            small: parts.next() == Some("small"),
        })
    }

    /// The remote file, or tree, the operation reads.
    fn remote_file(&self) -> &'static str {
        if self.small {
            "/data/sub/b"
        } else {
            "/data/big.bin"
        }
    }

    fn remote_tree(&self) -> &'static str {
        if self.small { "/data/sub" } else { "/data" }
    }
}

/// The name this file's one test answers to in `cargo test` filters.
const NAME: &str = "hostile_servers";

/// Whether libtest's arguments (`cargo test [FILTER] -- [--skip S] [--ignored] ...`)
/// select this test; `--list` lists it.
fn selected() -> bool {
    let mut args = std::env::args().skip(1);
    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--list" => {
                println!("{NAME}: test");
                return false;
            }
            "--ignored" => return false,
            "--skip" => skips.extend(args.next()),
            a if !a.starts_with('-') => filters.push(a.to_string()),
            _ => {}
        }
    }
    (filters.is_empty() || filters.iter().any(|f| NAME.contains(f.as_str())))
        && !skips.iter().any(|s| NAME.contains(s.as_str()))
}

fn main() {
    fake_server::run_if_asked();
    if !selected() {
        return;
    }
    let escaped_before = Path::new(ESCAPE).exists();
    let started = Instant::now();
    let tally = match std::env::var("SFTPIPE_HOSTILE_CASE") {
        Ok(c) => {
            let case = Case::parse(&c).unwrap_or_else(|| panic!("bad SFTPIPE_HOSTILE_CASE {c}"));
            let repeat = env_u64("SFTPIPE_HOSTILE_REPEAT", 1) as usize;
            run_all(vec![case; repeat], repeat == 1)
        }
        Err(_) => {
            let mut tally = run_all(all_cases(), false);
            tally.add(run_all(sweep_cases(), false));
            tally
        }
    };
    eprintln!(
        "hostile servers: {} cases in {:.1}s: {} succeeded, {} failed with clear errors, {} \
         broke a rule; peak memory {} MiB",
        tally.succeeded + tally.refused + tally.failures.len(),
        started.elapsed().as_secs_f64(),
        tally.succeeded,
        tally.refused,
        tally.failures.len(),
        peak_rss_kib() / 1024,
    );
    let failures = tally.failures;
    let mut failed = !failures.is_empty();
    for (case, why) in &failures {
        let id = case.id();
        eprintln!(
            "FAILED {id} ({why})\n  rerun: SFTPIPE_HOSTILE_CASE={id} cargo test --test hostile"
        );
    }
    if Path::new(ESCAPE).exists() && !escaped_before {
        eprintln!("FAILED: {ESCAPE} exists: a name from the server escaped its target");
        failed = true;
    }
    if failed {
        std::process::exit(1);
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every operation against the honest server, then with seeded damage (the sweeps come
/// from [`sweep_cases`]).
fn all_cases() -> Vec<Case> {
    let iterations = env_u64("SFTPIPE_HOSTILE_ITERATIONS", DEFAULT_ITERATIONS);
    let seed = env_u64("SFTPIPE_HOSTILE_SEED", DEFAULT_SEED);
    let mut cases = Vec::new();
    for via in [Via::Library, Via::Cli] {
        for op in OPS {
            for small in [false, true] {
                cases.push(Case::new(op, via, Plan::Honest, small));
                // Names listed twice with different types (a directory and a link) once
                // made a mirror write through a local link out of its tree.
                if op.reads_names() {
                    cases.push(Case::new(op, via, Plan::Twins, small));
                }
            }
        }
    }
    for op in OPS {
        for i in 0..iterations {
            for via in [Via::Library, Via::Cli] {
                let seed = seed.wrapping_add(i * 1000 + op as u64 * 7 + via as u64);
                cases.push(Case::new(op, via, Plan::Random(seed), false));
                if op.reads_names() {
                    cases.push(Case::new(op, via, Plan::Names(seed), false));
                }
            }
        }
    }
    cases
}

/// What a batch of cases came to.
#[derive(Default)]
struct Tally {
    /// Cases whose operation succeeded.
    succeeded: usize,
    /// Cases whose operation failed, as it should, with clear errors.
    refused: usize,
    /// Cases that broke a rule, with which.
    failures: Vec<(Case, String)>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.succeeded += other.succeeded;
        self.refused += other.refused;
        self.failures.extend(other.failures);
    }
}

/// Runs the cases on a few threads.
fn run_all(cases: Vec<Case>, verbose: bool) -> Tally {
    let queue = Arc::new(Mutex::new(VecDeque::from(cases)));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let (queue, tally) = (queue.clone(), tally.clone());
            std::thread::spawn(move || {
                loop {
                    let Some(case) = queue.lock().unwrap().pop_front() else {
                        break;
                    };
                    let outcome = run_case(case, verbose);
                    let mut tally = tally.lock().unwrap();
                    match outcome {
                        Ok(true) => tally.succeeded += 1,
                        Ok(false) => tally.refused += 1,
                        Err(why) => {
                            eprintln!("FAILED {}: {why}", case.id());
                            tally.failures.push((case, why));
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a worker thread panicked");
    }
    std::mem::take(&mut *tally.lock().unwrap())
}

/// The stream ending at byte N, for each small operation through the library: at and
/// around every packet's boundaries and fields (length, type, id, first field), its
/// middle and last byte — or, with `SFTPIPE_HOSTILE_EVERY_BYTE=1`, at every byte.
fn sweep_cases() -> Vec<Case> {
    let every_byte = std::env::var_os("SFTPIPE_HOSTILE_EVERY_BYTE").is_some();
    let mut cases = Vec::new();
    for op in OPS {
        let lengths = honest_layout(op);
        let total: usize = lengths.iter().sum();
        let mut points = std::collections::BTreeSet::from([total]);
        let mut start = 0;
        for len in lengths {
            // The packet's start, inside and after its length, after its type, after its
            // id, after its first field, its middle and its last byte.
            for at in [0, 2, 4, 5, 9, 13, len / 2, len - 1] {
                if at < len {
                    points.insert(start + at);
                }
            }
            start += len;
        }
        if every_byte {
            points.extend(0..total);
        }
        let hang_up = |n| Case::new(op, Via::Library, Plan::HangUpAfter(n), true);
        cases.extend(points.into_iter().map(hang_up));
    }
    cases
}

/// The length of every packet the honest server sends for `op` on the small tree.
fn honest_layout(op: Op) -> Vec<usize> {
    let case = Case::new(op, Via::Library, Plan::Honest, true);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let layout = dir.path().join("layout");
    if let Err(why) = run_library(case, &Scratch::new(), Some(&layout)) {
        panic!("{}: {why}", case.id());
    }
    let text = fs::read_to_string(&layout).unwrap_or_default();
    text.lines().filter_map(|l| l.parse().ok()).collect()
}

// ---------------------------------------------------------------------------------------
// One case.

/// A case's local files: `work/target` is what the operation may change; `work/outside`
/// is the trap the fake server's links point into; `work/src` holds what `put` sends.
struct Scratch {
    _dir: tempfile::TempDir,
    root: PathBuf,
    target: PathBuf,
    trap: PathBuf,
    src: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        // On a RAM file system when there is one: a case makes a dozen files.
        let shm = Path::new("/dev/shm");
        let parent = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("sftpipe-hostile-")
            .tempdir_in(parent)
            .expect("a temporary directory");
        let root = dir.path().to_path_buf();
        let work = root.join("work");
        let (target, trap, src) = (work.join("target"), work.join("outside"), work.join("src"));
        common::write_file(trap.join("victim"), "the local victim\n");
        common::write_file(root.join("sentinel"), "beside the work directory\n");
        common::write_file(src.join("up.txt"), common::random_bytes(2000, 1));
        common::write_file(src.join("tree/x"), "x\n");
        common::write_file(src.join("tree/y/z"), common::random_bytes(5000, 2));
        // The mirror's stale local tree: a file to delete, files to replace, a directory
        // where the server has a file, and links out of the tree where it has directories
        // (a mirror must replace them, never write through them).
        let mirror = target.join("mirror");
        common::write_file(mirror.join("stale.txt"), "stale\n");
        common::write_file(mirror.join("a.txt"), "old\n");
        common::write_file(mirror.join("b"), "old\n");
        common::write_file(mirror.join("empty/inside"), "a directory\n");
        std::os::unix::fs::symlink("../../outside", mirror.join("sub")).expect("a symlink");
        std::os::unix::fs::symlink(&trap, mirror.join("deep")).expect("a symlink");
        Scratch {
            _dir: dir,
            root,
            target,
            trap,
            src,
        }
    }
}

impl Drop for Scratch {
    /// Opens up what `-p` may have made unwritable (mode 0 from a hostile server), so the
    /// temporary directory can be removed without root.
    fn drop(&mut self) {
        let mut stack = vec![self.target.clone()];
        while let Some(dir) = stack.pop() {
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o755));
            for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
}

/// Every path under `root` but `skip`, with what identifies its content.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path == skip {
                continue;
            }
            let Ok(m) = fs::symlink_metadata(&path) else {
                continue;
            };
            let what = if m.is_dir() {
                stack.push(path.clone());
                format!("dir {:o}", m.mode())
            } else if m.file_type().is_symlink() {
                format!("link to {:?}", fs::read_link(&path).ok())
            } else {
                let bytes = fs::read(&path).unwrap_or_default();
                let mtime = (m.mtime(), m.mtime_nsec());
                format!("file {:o} {mtime:?} {bytes:?}", m.mode())
            };
            out.insert(path, what);
        }
    }
    out
}

/// Runs one case; `Ok(true)` when the operation succeeded, `Ok(false)` when it failed as
/// it should, `Err` with what went wrong otherwise.
fn run_case(case: Case, verbose: bool) -> Result<bool, String> {
    let scratch = Scratch::new();
    let before = snapshot(&scratch.root, &scratch.target);
    let (peak, peak_virtual) = (peak_rss_kib(), status_kib("VmPeak:"));
    let started = Instant::now();
    let errors = match case.via {
        Via::Library => run_library(case, &scratch, None)?,
        Via::Cli => run_cli(case, &scratch)?,
    };
    if started.elapsed() > STALL {
        return Err(format!("took {:.1?}: a stall", started.elapsed()));
    }
    let growth = peak_rss_kib().saturating_sub(peak);
    let reserved = status_kib("VmPeak:").saturating_sub(peak_virtual);
    if growth > MAX_CASE_GROWTH_KIB || reserved > MAX_CASE_RESERVED_KIB {
        return Err(format!(
            "peak memory grew by {} MiB ({} MiB reserved)",
            growth >> 10,
            reserved >> 10
        ));
    }
    let after = snapshot(&scratch.root, &scratch.target);
    if before != after {
        let changed: Vec<_> = after
            .iter()
            .filter(|(p, v)| before.get(*p) != Some(v))
            .map(|(p, _)| p.display().to_string())
            .chain(
                before
                    .keys()
                    .filter(|p| !after.contains_key(*p))
                    .map(|p| format!("{} (removed)", p.display())),
            )
            .collect();
        return Err(format!("changed outside the target: {changed:?}"));
    }
    if verbose {
        eprintln!("{}: {errors:#?}", case.id());
    }
    for e in &errors {
        if let Some(why) = unclear(e) {
            return Err(format!("{why}: {e:?}"));
        }
    }
    if case.plan == Plan::Honest && !errors.is_empty() {
        return Err(format!("failed against the honest server: {errors:?}"));
    }
    Ok(errors.is_empty())
}

/// Why an error message is not a clear one, if it is not.
fn unclear(message: &str) -> Option<&'static str> {
    if message.trim().is_empty() {
        Some("an empty error message")
    } else if message.contains("panicked") {
        Some("a panic")
    } else if message.contains("fake server:") {
        // Its own complaint (in the server's last words): e.g. a request it could not
        // decode, which a client must never send.
        Some("the fake server failed")
    } else if message.contains("os error") {
        Some("an OS error number instead of words")
    } else if message.contains("Custom {") || message.contains("kind: ") {
        Some("a Rust debug format")
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------
// Through the library.

/// Runs the case's operation on a thread of its own, under the deadline; returns the
/// messages of every error it reported. The server writes its packets' lengths to
/// `layout`.
fn run_library(
    case: Case,
    scratch: &Scratch,
    layout: Option<&Path>,
) -> Result<Vec<String>, String> {
    let (tx, rx) = mpsc::channel();
    let command = fake_server::command(case.plan, &scratch.trap, layout);
    let (target, src) = (scratch.target.clone(), scratch.src.clone());
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(|| {
            let options = ConnectOptions::local_server(command);
            let session = Session::connect(&options).map_err(|e| vec![e])?;
            let r = library_op(case, &session, &target, &src);
            drop(session);
            r
        });
        let _ = tx.send(outcome);
    });
    match rx.recv_timeout(DEADLINE) {
        Err(_) => Err(format!("no answer within {DEADLINE:?}: a hang")),
        Ok(Err(panic)) => Err(format!("panicked: {}", panic_text(&panic))),
        Ok(Ok(Ok(()))) => Ok(Vec::new()),
        Ok(Ok(Err(errors))) => {
            for e in &errors {
                if let Error::Status {
                    code: StatusCode::Ok,
                    ..
                } = e
                {
                    return Err(format!("an error for a status that said success: {e}"));
                }
            }
            Ok(errors.iter().flat_map(messages).collect())
        }
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// An error's message and those of the failures it lists.
fn messages(e: &Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    if let Error::Partial { failures, .. } = e {
        for (path, e) in failures {
            out.extend(messages(e).into_iter().map(|m| format!("{path}: {m}")));
        }
    }
    out
}

/// What to check about a successful operation against the honest server.
type LibResult = Result<(), Vec<Error>>;

fn wrong(what: String) -> Vec<Error> {
    vec![Error::InvalidInput(format!("wrong result: {what}"))]
}

fn library_op(case: Case, s: &Session, target: &Path, src: &Path) -> LibResult {
    let honest = case.plan == Plan::Honest;
    let opts = TransferOptions::default();
    let failures = |f: Vec<(String, Error)>| -> LibResult {
        if f.is_empty() {
            Ok(())
        } else {
            Err(f.into_iter().map(|(_, e)| e).collect())
        }
    };
    match case.op {
        Op::Stat => {
            let a = s.stat("/data/a.txt").map_err(|e| vec![e])?;
            let l = s.lstat("/data/link").map_err(|e| vec![e])?;
            if honest && (a.size != Some(300) || !l.is_symlink()) {
                return Err(wrong(format!("{a:?} {l:?}")));
            }
        }
        Op::Ls => {
            let names: Vec<_> = s.read_dir(case.remote_tree()).map_err(|e| vec![e])?;
            if honest && names.len() != if case.small { 2 } else { 7 } {
                return Err(wrong(format!("{names:?}")));
            }
        }
        Op::Realpath => {
            let p = s.realpath("/data/sub/../a.txt").map_err(|e| vec![e])?;
            if honest && p != b"/data/a.txt" {
                return Err(wrong(String::from_utf8_lossy(&p).into()));
            }
        }
        Op::Readlink => {
            let t = s.readlink("/data/link").map_err(|e| vec![e])?;
            if honest && t != b"a.txt" {
                return Err(wrong(String::from_utf8_lossy(&t).into()));
            }
        }
        Op::Get => {
            let dest = target.join("file");
            s.get(case.remote_file(), &dest, &opts)
                .map_err(|e| vec![e])?;
            let rel = case.remote_file().trim_start_matches("/data/");
            let len = SAMPLE_FILES
                .iter()
                .find(|(r, _)| *r == rel)
                .map_or(0, |f| f.1);
            if honest && fs::read(&dest).ok() != Some(sample_bytes(rel, len)) {
                return Err(wrong(format!("{} differs", dest.display())));
            }
        }
        Op::GetTree => {
            let dest = target.join("tree");
            failures(s.get_tree(case.remote_tree(), &dest, &opts).failures)?;
            if honest {
                check_tree(case, &dest).map_err(wrong)?;
            }
        }
        Op::Put => {
            s.put(&src.join("up.txt"), "/upload/up.txt", &opts)
                .map_err(|e| vec![e])?;
            let a = s.stat("/upload/up.txt").map_err(|e| vec![e])?;
            if honest && a.size != Some(2000) {
                return Err(wrong(format!("{a:?}")));
            }
        }
        Op::PutTree => {
            failures(
                s.put_tree(&src.join("tree"), "/upload/tree", &opts)
                    .failures,
            )?;
            let a = s.stat("/upload/tree/y/z").map_err(|e| vec![e])?;
            if honest && a.size != Some(5000) {
                return Err(wrong(format!("{a:?}")));
            }
        }
        Op::Mirror => {
            let dest = target.join("mirror");
            let t = s.transfer(opts, std::rc::Rc::new(NoProgress));
            let mut mo = MirrorOptions::default();
            mo.compare.delete = true;
            let report = s.run(mirror_down(&t, case.remote_tree().as_bytes(), &dest, &mo));
            failures(report.failures)?;
            if honest {
                check_tree(case, &dest).map_err(wrong)?;
                if dest.join("stale.txt").exists() {
                    return Err(wrong("stale.txt was not deleted".into()));
                }
            }
        }
        Op::MirrorUp => {
            let t = s.transfer(opts, std::rc::Rc::new(NoProgress));
            let mut mo = MirrorOptions::default();
            mo.compare.delete = true;
            let tree = case.remote_tree();
            let report = s.run(mirror_up(&t, &src.join("tree"), tree.as_bytes(), &mo));
            failures(report.failures)?;
            let z = s.stat(format!("{tree}/y/z")).map_err(|e| vec![e])?;
            let gone = s
                .stat(format!("{tree}/deep"))
                .is_err_and(|e| e.is_not_found());
            if honest && (z.size != Some(5000) || !gone) {
                return Err(wrong(format!("{z:?}, deep deleted: {gone}")));
            }
        }
        Op::Df => {
            let v = s.statvfs("/data").map_err(|e| vec![e])?;
            if honest && v.namemax != 255 {
                return Err(wrong(format!("{v:?}")));
            }
        }
    }
    Ok(())
}

/// The honest server's tree arrived whole under `dest`.
fn check_tree(case: Case, dest: &Path) -> Result<(), String> {
    let prefix = if case.small { "sub/" } else { "" };
    for (rel, len) in SAMPLE_FILES {
        let Some(local) = rel.strip_prefix(prefix) else {
            continue;
        };
        if fs::read(dest.join(local)).ok() != Some(sample_bytes(rel, *len)) {
            return Err(format!("{local} differs under {}", dest.display()));
        }
    }
    if !case.small && fs::read_link(dest.join("link")).ok() != Some(PathBuf::from("a.txt")) {
        return Err("link is not a symlink to a.txt".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Through the command line.

/// The command line of the case's operation (after `sftpipe -q -D SERVER`). Downloads
/// keep modes and times (`-p`), so the server's attributes are applied too.
fn cli_args(case: Case, scratch: &Scratch) -> Vec<String> {
    let target = |p: &str| scratch.target.join(p).display().to_string();
    let src = |p: &str| scratch.src.join(p).display().to_string();
    let tree = case.remote_tree();
    // `get -r` of `..` goes into the existing directory under the name the server's
    // REALPATH gives it.
    let up = if case.small {
        "/data/sub/deep/.."
    } else {
        "/data/sub/.."
    };
    let words: Vec<String> = match case.op {
        Op::Stat => vec!["stat".into(), "/data/a.txt".into(), "/data/link".into()],
        Op::Ls => vec!["ls".into(), "-l".into(), tree.into()],
        Op::Realpath => vec!["realpath".into(), "/data/sub/../a.txt".into()],
        Op::Readlink => vec!["ls".into(), "-l".into(), "/data/link".into()],
        Op::Get => vec!["get -p".into(), case.remote_file().into(), target("file")],
        Op::GetTree => vec!["get -r -p".into(), up.into(), target("")],
        Op::Put => vec!["put".into(), src("up.txt"), "/upload/up.txt".into()],
        Op::PutTree => vec!["put -r".into(), src("tree"), "/upload/tree".into()],
        Op::Mirror => vec![
            "mirror --delete -p".into(),
            format!(":{tree}"),
            target("mirror"),
        ],
        Op::MirrorUp => vec!["mirror --delete".into(), src("tree"), format!(":{tree}")],
        Op::Df => vec!["df -h".into(), "/data".into()],
    };
    // Options go with their command word; operands may not be split.
    let (command, operands) = words.split_at(1);
    let mut args: Vec<String> = command[0].split(' ').map(String::from).collect();
    args.extend_from_slice(operands);
    args
}

/// Runs the `sftpipe` binary under the deadline; returns its error lines.
fn run_cli(case: Case, scratch: &Scratch) -> Result<Vec<String>, String> {
    let server = fake_server::command(case.plan, &scratch.trap, None);
    let mut child = Command::new(common::sftpipe_bin())
        .args(["-q", "-D", &server])
        .args(cli_args(case, scratch))
        .current_dir(&scratch.root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sftpipe: {e}"))?;
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = pipe.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < DEADLINE => {
                std::thread::sleep(Duration::from_millis(2))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("sftpipe did not exit within {DEADLINE:?}: a hang"));
            }
        }
    };
    let _stdout = out.join();
    let stderr = err.join().unwrap_or_default();
    if matches!(status.code(), Some(101) | None) {
        return Err(format!("sftpipe crashed ({status}): {stderr}"));
    }
    // With -q, stderr holds only errors: one line each (a lost connection's last words
    // indented below it), and nothing that drives the terminal.
    if stderr.contains('\x1b') {
        return Err(format!("a raw escape sequence on stderr: {stderr:?}"));
    }
    let mut lines = Vec::new();
    for line in stderr.lines() {
        match line.strip_prefix("sftpipe: ") {
            Some(message) => lines.push(message.to_string()),
            None if line.starts_with("  ") => lines.push(line.trim().to_string()),
            None => return Err(format!("a line that is no error message: {line:?}")),
        }
    }
    if !status.success() && lines.is_empty() {
        Err(format!(
            "sftpipe failed ({status}) without saying why: {stderr:?}"
        ))
    } else {
        Ok(lines)
    }
}

/// The peak resident memory of this process, from `/proc/self/status`.
fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

fn status_kib(field: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
