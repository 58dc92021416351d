//! Handling errors by kind: `Error::kind()` is the closest `std::io::ErrorKind`, and the
//! variants carry the details (path, server message, ssh's last words).
//!
//! ```text
//! cargo run --example errors -- -D /usr/lib/openssh/sftp-server /no/such/file
//! ```
mod common;

use std::io::ErrorKind;

use sftpipe::{Client, Error};

fn main() {
    let (options, args) = common::options_from_args();
    let client = match Client::connect(&options) {
        Ok(c) => c,
        // ssh could not connect or authenticate: its exit status and last lines are in it.
        Err(Error::Connection(c)) => {
            eprintln!("cannot connect: {}", c.reason);
            for line in &c.stderr_tail {
                eprintln!("  ssh: {line}");
            }
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let path = args
        .first()
        .cloned()
        .unwrap_or_else(|| "/no/such/file".into());
    match client.stat(&path).wait() {
        Ok(attrs) => println!("{path}: {} bytes", attrs.size.unwrap_or(0)),
        Err(e) => match e.kind() {
            ErrorKind::NotFound => println!("{path} does not exist ({e})"),
            ErrorKind::PermissionDenied => println!("not allowed to look at {path}"),
            ErrorKind::ConnectionAborted => println!("connection lost: {e}"),
            _ if e.is_connection() => println!("connection problem: {e}"),
            _ => println!("other failure: {e} (server status {:?})", e.status()),
        },
    }
}
