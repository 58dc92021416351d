//! A mirror with progress callbacks. The progress sink is called on the connection's
//! thread, so it is `Send + Sync` (atomics here). Times are kept by default, as the CLI
//! does, so a second run copies nothing.
//!
//! ```text
//! cargo run --example mirror_progress -- -D /usr/lib/openssh/sftp-server ./site /tmp/site
//! ```
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sftpipe::{Client, Error, MirrorOptions, Progress, TransferOptions};

#[derive(Default)]
struct Meter {
    files_total: AtomicU64,
    bytes_total: AtomicU64,
    bytes_done: AtomicU64,
}

impl Progress for Meter {
    fn add_total(&self, files: u64, bytes: u64) {
        self.files_total.fetch_add(files, Ordering::Relaxed);
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }
    fn transferred(&self, bytes: u64) {
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }
    fn file_done(&self, path: &str, bytes: u64, error: Option<&Error>) {
        let done = self.bytes_done.load(Ordering::Relaxed);
        let total = self.bytes_total.load(Ordering::Relaxed).max(1);
        match error {
            None => eprintln!("[{:>3}%] {path} ({bytes} bytes)", done * 100 / total),
            Some(e) => eprintln!("[fail] {path}: {e}"),
        }
    }
}

fn main() -> sftpipe::Result<()> {
    let (options, args) = common::options_from_args();
    let (Some(local), Some(remote)) = (args.first(), args.get(1)) else {
        eprintln!("usage: ... LOCAL_DIR REMOTE_DIR");
        std::process::exit(2);
    };
    let client = Client::connect(&options)?;
    let meter = Arc::new(Meter::default());
    let mut mirror = MirrorOptions::default();
    mirror.compare.delete = true;
    let report = client
        .with_progress(meter.clone())
        .mirror_up(local, remote, &mirror, &TransferOptions::default())
        .wait()?;
    println!(
        "{} copied ({} bytes), {} unchanged, {} deleted, {} failed",
        report.copied,
        report.bytes,
        report.unchanged,
        report.deleted,
        report.failures.len()
    );
    Ok(())
}
