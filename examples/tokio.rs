//! Use from tokio: `Reply` futures are `Send`, so they go into `tokio::spawn`, and they
//! never block the runtime (the connection runs on its own thread). Nothing here needs a
//! tokio feature of sftpipe: smol or `futures::executor` would do the same.
//!
//! ```text
//! cargo run --example tokio -- -D /usr/lib/openssh/sftp-server /etc
//! ```
mod common;

use std::time::Duration;

use sftpipe::Client;

#[tokio::main]
async fn main() -> sftpipe::Result<()> {
    let (options, args) = common::options_from_args();
    let dir = args.first().cloned().unwrap_or_else(|| "/etc".into());
    let client = Client::connect_async(&options).await?;

    let entries = client.read_dir(&dir).await?;
    let tasks: Vec<_> = entries
        .iter()
        .take(100)
        .map(|entry| {
            let client = client.clone();
            let path = format!("{dir}/{}", entry.name_lossy());
            tokio::spawn(async move {
                let attrs = client.lstat(&path).await?;
                Ok::<_, sftpipe::Error>((path, attrs.size.unwrap_or(0)))
            })
        })
        .collect();
    for task in tasks {
        match task.await {
            Ok(Ok((path, size))) => println!("{size:>10} {path}"),
            Ok(Err(e)) => eprintln!("{e}"),
            Err(e) => eprintln!("task failed: {e}"),
        }
    }

    // A timeout is an ordinary tokio future around a Reply.
    match tokio::time::timeout(Duration::from_secs(5), client.statvfs(&dir)).await {
        Ok(Ok(fs)) => println!("{} free blocks", fs.bfree),
        Ok(Err(e)) => eprintln!("statvfs: {e}"),
        Err(_) => eprintln!("statvfs: no answer within 5 s"),
    }
    Ok(())
}
