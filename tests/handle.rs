//! Integration tests of [`sftpipe::Client`], the `Send + Sync + Clone` handle: many
//! threads and async runtimes on one connection to real OpenSSH (`-D sftp-server` and a
//! throwaway sshd), and the end of the connection while calls are in flight.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    KillOnDrop, SSH_CLIENT_OPTIONS, Sshd, pid_recording_server, process_alive, read_pid,
    send_signal, sftp_server_path, write_file,
};
use sftpipe::{Client, ConnectOptions, MirrorOptions, Progress, TransferOptions};

const THREADS: usize = 8;
const OPS_PER_THREAD: usize = 500;
/// Files every thread stats (sizes 0..FILES bytes, so each answer is checkable).
const FILES: usize = 50;

fn sshd_options(sshd: &Sshd) -> ConnectOptions {
    SSH_CLIENT_OPTIONS.iter().fold(
        ConnectOptions::host(sshd.host())
            .port(sshd.port())
            .user(sshd.user())
            .identity(sshd.key_path()),
        |opts, o| opts.option(*o),
    )
}

fn local_options() -> ConnectOptions {
    ConnectOptions::local_server(sftp_server_path().display().to_string())
}

/// `FILES` files named by their size, and a directory per thread.
fn populate(dir: &Path) {
    for i in 0..FILES {
        write_file(dir.join(format!("f{i}")), vec![b'x'; i]);
    }
    for t in 0..THREADS {
        fs::create_dir(dir.join(format!("t{t}"))).expect("mkdir");
    }
}

fn remote(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// One thread's (or task's) mix of operations, each answer checked. Blocking or async
/// is the caller's choice: `run` turns a `Reply` into its result.
macro_rules! workload {
    ($client:expr, $dir:expr, $t:expr, $run:ident) => {{
        let (client, dir, t) = ($client, $dir, $t);
        for j in 0..OPS_PER_THREAD {
            let i = (j * 7 + t) % FILES;
            match j % 10 {
                0 => {
                    let own = remote(dir, &format!("t{t}/w{j}"));
                    let data = format!("{t}:{j}").into_bytes();
                    $run!(client.write_file(&own, data.clone())).expect("write");
                    assert_eq!($run!(client.read_file(&own)).expect("read"), data);
                }
                1 => {
                    let entries = $run!(client.read_dir(dir.display().to_string())).expect("ls");
                    assert!(entries.len() >= FILES + THREADS);
                }
                2 => {
                    let err = $run!(client.stat(remote(dir, &format!("missing{j}")))).unwrap_err();
                    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
                }
                _ => {
                    let attrs = $run!(client.stat(remote(dir, &format!("f{i}")))).expect("stat");
                    assert_eq!(attrs.size, Some(i as u64));
                }
            }
        }
    }};
}

macro_rules! blocking {
    ($reply:expr) => {
        $reply.wait()
    };
}

macro_rules! awaiting {
    ($reply:expr) => {
        $reply.await
    };
}

fn eight_threads(options: ConnectOptions) {
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path());
    let client = Client::connect(&options).expect("connect");
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (client, dir) = (client.clone(), dir.path());
            s.spawn(move || workload!(&client, dir, t, blocking));
        }
    });
    // Every write landed where it should.
    for t in 0..THREADS {
        let written = fs::read_dir(dir.path().join(format!("t{t}")))
            .expect("ls")
            .count();
        assert_eq!(written, OPS_PER_THREAD / 10);
    }
}

#[test]
fn eight_threads_share_one_local_server() {
    eight_threads(local_options());
}

#[test]
fn eight_threads_share_one_ssh_connection() {
    if !common::sshd_available() {
        return;
    }
    let sshd = Sshd::start();
    eight_threads(sshd_options(&sshd));
}

/// Runs the workload as `THREADS` tasks plus a big upload and download on `rt`, with a
/// ticker task on the same runtime; returns the ticker's longest period.
fn on_tokio(rt: tokio::runtime::Runtime, options: ConnectOptions) -> Duration {
    // Long enough that a busy 2-core machine does not miss it by itself; the issue saw a
    // blocked runtime miss a 50 ms tick by 2 s.
    const TICK: Duration = Duration::from_millis(100);
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path());
    let big = common::random_bytes(8 << 20, 7);
    write_file(dir.path().join("big"), &big);
    let dir = Arc::new(dir);
    rt.block_on(async move {
        let client = Client::connect_async(&options).await.expect("connect");
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = {
            let done = done.clone();
            tokio::spawn(async move {
                let mut longest = Duration::ZERO;
                let mut last = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    tokio::time::sleep(TICK).await;
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                }
                longest
            })
        };
        let mut tasks = Vec::new();
        for t in 0..THREADS {
            let (client, dir) = (client.clone(), dir.clone());
            tasks.push(tokio::spawn(async move {
                workload!(&client, dir.path(), t, awaiting)
            }));
        }
        let opts = TransferOptions::default();
        let (up, down) = (dir.path().join("big.up"), dir.path().join("big.down"));
        let sent = client.put(dir.path().join("big"), up.display().to_string(), &opts);
        let work = async {
            for task in tasks {
                task.await.expect("task");
            }
            assert_eq!(sent.await.expect("put"), big.len() as u64);
            let got = client.get(up.display().to_string(), &down, &opts).await;
            assert_eq!(got.expect("get"), big.len() as u64);
        };
        tokio::time::timeout(Duration::from_secs(120), work)
            .await
            .expect("the workload did not finish in time");
        assert_eq!(fs::read(&down).expect("downloaded"), big);
        done.store(true, Ordering::Relaxed);
        let longest = ticker.await.expect("ticker");
        assert!(
            longest < 2 * TICK,
            "a {TICK:?} ticker waited {longest:?}: the runtime was blocked"
        );
        eprintln!("longest tick: {longest:?} (period {TICK:?})");
        longest
    })
}

#[test]
fn tokio_multi_thread_runtime_is_never_blocked() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    on_tokio(rt, local_options());
}

#[test]
fn tokio_current_thread_runtime_is_never_blocked() {
    if !common::sshd_available() {
        return;
    }
    let sshd = Sshd::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    on_tokio(rt, sshd_options(&sshd));
}

/// A connection to a `-D` server whose pid is known, and a scratch directory.
fn pid_server() -> (Client, u32, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("pid");
    let command = pid_recording_server(dir.path(), &pidfile);
    let client = Client::connect(&ConnectOptions::local_server(command)).expect("connect");
    let pid = read_pid(&pidfile);
    (client, pid, dir)
}

#[test]
fn dropping_the_handle_fails_calls_in_flight_and_ends_the_server() {
    let (client, pid, dir) = pid_server();
    let _kill = KillOnDrop(pid);
    client
        .stat(dir.path().display().to_string())
        .wait()
        .expect("stat");
    // A stopped server answers nothing: every call below stays in flight.
    send_signal(pid, "STOP");
    let path = dir.path().display().to_string();
    let replies: Vec<_> = (0..100).map(|_| client.stat(&path)).collect();
    let put = client.put(
        dir.path().join("pid"),
        format!("{path}/copy"),
        &TransferOptions::default(),
    );
    // The drop waits for the server to go, so it runs on its own thread.
    let dropper = std::thread::spawn(move || drop(client));
    for reply in replies {
        let err = reply.wait().unwrap_err();
        assert!(err.is_connection(), "{err}");
    }
    assert!(put.wait().unwrap_err().is_connection());
    dropper.join().expect("drop");
    assert!(!process_alive(pid), "the server outlived its last handle");
}

#[test]
fn a_dead_connection_fails_pending_and_new_calls() {
    let (client, pid, dir) = pid_server();
    let path = dir.path().display().to_string();
    send_signal(pid, "STOP");
    let pending = client.stat(&path);
    send_signal(pid, "KILL");
    assert!(pending.wait().unwrap_err().is_connection());
    let err = client.stat(&path).wait().unwrap_err();
    assert!(err.is_connection(), "{err}");
}

/// Counts what the mirror reports, from the connection's thread.
#[derive(Default)]
struct Counter {
    files: AtomicU64,
    bytes: AtomicU64,
}

impl Progress for Counter {
    fn transferred(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    fn file_done(&self, _: &str, _: u64, error: Option<&sftpipe::Error>) {
        assert!(error.is_none());
        self.files.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_library_mirror_keeps_times_like_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    fs::create_dir(&src).expect("mkdir");
    for i in 0..20 {
        write_file(src.join(format!("f{i}")), vec![b'y'; 100 + i]);
    }
    let client = Client::connect(&local_options()).expect("connect");
    let counter = Arc::new(Counter::default());
    let (mopts, topts) = (MirrorOptions::default(), TransferOptions::default());
    let first = client
        .with_progress(counter.clone())
        .mirror_up(&src, dst.display().to_string(), &mopts, &topts)
        .wait()
        .expect("mirror");
    assert!(first.is_ok(), "{:?}", first.failures);
    assert_eq!(first.copied, 20);
    assert_eq!(counter.files.load(Ordering::Relaxed), 20);
    assert_eq!(
        counter.bytes.load(Ordering::Relaxed),
        (100..120).sum::<u64>()
    );
    let again = client
        .mirror_up(&src, dst.display().to_string(), &mopts, &topts)
        .wait()
        .expect("mirror");
    assert_eq!((again.copied, again.unchanged), (0, 20));
}

/// A progress sink that tries a blocking call on the connection's own thread.
struct WaitsInCallback {
    client: std::sync::Mutex<Option<Client>>,
    outcome: std::sync::Mutex<Option<sftpipe::Result<sftpipe::FileAttributes>>>,
}

impl Progress for WaitsInCallback {
    fn file_done(&self, path: &str, _: u64, _: Option<&sftpipe::Error>) {
        let client = self.client.lock().expect("lock").clone();
        if let Some(client) = client {
            *self.outcome.lock().expect("lock") = Some(client.stat(path).wait());
        }
    }
}

#[test]
fn a_blocking_call_from_a_progress_callback_fails_instead_of_hanging() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir(dir.path().join("src")).expect("mkdir");
    write_file(dir.path().join("src/a"), b"a");
    let client = Client::connect(&local_options()).expect("connect");
    let sink = Arc::new(WaitsInCallback {
        client: std::sync::Mutex::new(Some(client.clone())),
        outcome: std::sync::Mutex::new(None),
    });
    let remote = dir.path().join("b").display().to_string();
    client
        .with_progress(sink.clone())
        .put_tree(dir.path().join("src"), remote, &TransferOptions::default())
        .wait()
        .expect("put");
    // The sink's clone would keep the connection open.
    sink.client.lock().expect("lock").take();
    let outcome = sink
        .outcome
        .lock()
        .expect("lock")
        .take()
        .expect("file_done called");
    let err = outcome.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
}

#[test]
fn a_failed_connect_is_an_error_not_a_handle() {
    let missing = ConnectOptions::local_server("/nonexistent/sftp-server");
    let err = Client::connect(&missing).unwrap_err();
    assert!(err.is_connection(), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/sftp-server"),
        "{err}"
    );
}
