//! Connecting with options, then a few calls, blocking.
//!
//! ```text
//! cargo run --example connect -- -p 2222 -i ~/.ssh/id_backup backup@example.org /srv
//! ```
mod common;

use sftpipe::{Client, ConnectOptions};

fn main() -> sftpipe::Result<()> {
    let (options, args) = common::options_from_args();
    // The same thing spelled with the builder:
    let _spelled_out = ConnectOptions::host("example.org")
        .user("backup")
        .port(2222)
        .identity("/home/me/.ssh/id_backup")
        .config_file("/home/me/.ssh/config")
        .option("ConnectTimeout=10")
        .timeout(std::time::Duration::from_secs(30));

    let client = Client::connect(&options)?;
    let dir = args.first().map_or(".", String::as_str);
    let home = client.realpath(dir).wait()?;
    println!("{}:", String::from_utf8_lossy(&home));
    for entry in client.read_dir(&home).wait()? {
        println!(
            "  {:>10} {}",
            entry.attrs.size.unwrap_or(0),
            entry.name_lossy()
        );
    }
    Ok(())
}
