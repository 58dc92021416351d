//! One handle shared by 8 threads, and what sharing buys: 8 threads each stat-ing 1,000
//! paths against the same 8,000 stats done one after another. The threads' calls share
//! the connection's round trips (each thread waits only for its own answer).
//!
//! ```text
//! cargo run --release --example threads -- -D /usr/lib/openssh/sftp-server /etc/hostname
//! ```
mod common;

use std::time::Instant;

use sftpipe::Client;

const THREADS: usize = 8;
const PER_THREAD: usize = 1000;

fn main() -> sftpipe::Result<()> {
    let (options, args) = common::options_from_args();
    let path = args
        .first()
        .cloned()
        .unwrap_or_else(|| "/etc/hostname".into());
    let client = Client::connect(&options)?;
    client.stat(&path).wait()?;

    let started = Instant::now();
    for _ in 0..THREADS * PER_THREAD {
        client.stat(&path).wait()?;
    }
    let serial = started.elapsed();

    let started = Instant::now();
    let results: Vec<sftpipe::Result<()>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                // Each thread gets its own clone (a reference would do too: Client is Sync).
                let client = client.clone();
                let path = &path;
                s.spawn(move || {
                    (0..PER_THREAD).try_for_each(|_| client.stat(path).wait().map(drop))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or(Ok(())))
            .collect()
    });
    let shared = started.elapsed();
    results.into_iter().collect::<sftpipe::Result<()>>()?;

    println!(
        "{} stats one after another: {serial:?}",
        THREADS * PER_THREAD
    );
    println!("{THREADS} threads x {PER_THREAD} stats on one handle: {shared:?}");
    println!(
        "speed-up: {:.1}x",
        serial.as_secs_f64() / shared.as_secs_f64()
    );
    Ok(())
}
