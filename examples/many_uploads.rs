//! 1,000 small uploads at once over one connection: every call is queued at once and the
//! connection pipelines them; one thread waits for all.
//!
//! ```text
//! cargo run --release --example many_uploads -- -D /usr/lib/openssh/sftp-server /tmp/up
//! ```
mod common;

use futures_util::future::join_all;
use sftpipe::{Client, TransferOptions};

fn main() -> sftpipe::Result<()> {
    let (options, args) = common::options_from_args();
    let dir = args
        .first()
        .cloned()
        .unwrap_or_else(|| "/tmp/sftpipe-many".into());
    let client = Client::connect(&options)?;
    client.mkdir_all(&dir).wait()?;

    let started = std::time::Instant::now();
    // From memory: one call per file, all in flight together.
    let writes =
        (0..1000).map(|i| client.write_file(format!("{dir}/note{i}.txt"), format!("note {i}\n")));
    let failed = sftpipe::block_on(join_all(writes))
        .into_iter()
        .filter(Result::is_err)
        .count();
    println!("1000 writes in {:?}, {failed} failed", started.elapsed());

    // From local files, atomically (temporary name + rename): the same with `put`.
    let local = std::env::temp_dir().join("sftpipe-many-uploads");
    std::fs::create_dir_all(&local).map_err(|e| sftpipe::Error::local("mkdir", e))?;
    let opts = TransferOptions::default();
    let puts: Vec<_> = (0..1000)
        .map(|i| {
            let path = local.join(format!("file{i}"));
            std::fs::write(&path, format!("file {i}\n"))
                .map_err(|e| sftpipe::Error::local("write", e))?;
            Ok(client.put(&path, format!("{dir}/file{i}"), &opts))
        })
        .collect::<sftpipe::Result<_>>()?;
    let started = std::time::Instant::now();
    let bytes: u64 = sftpipe::block_on(join_all(puts))
        .into_iter()
        .filter_map(Result::ok)
        .sum();
    println!("1000 puts ({bytes} bytes) in {:?}", started.elapsed());
    Ok(())
}
