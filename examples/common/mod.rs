//! What every example connects to, from its command line:
//!
//! ```text
//! cargo run --example NAME -- [-p PORT] [-i KEY] [-F CONFIG] [-o KEY=VALUE]... [USER@]HOST [ARGS]
//! cargo run --example NAME -- -D /usr/lib/openssh/sftp-server [ARGS]
//! ```
#![allow(dead_code)]

use sftpipe::ConnectOptions;

/// The connection the command line describes, and the arguments left after it.
pub fn options_from_args() -> (ConnectOptions, Vec<String>) {
    let mut args = std::env::args().skip(1);
    let mut opts = ConnectOptions::default();
    let mut rest = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "-p" => opts = opts.port(value().parse().unwrap_or_else(|_| usage("bad port"))),
            "-i" => opts = opts.identity(value()),
            "-F" => opts = opts.config_file(value()),
            "-o" => opts = opts.option(value()),
            "-D" => {
                opts = ConnectOptions {
                    server_command: Some(value()),
                    ..opts
                }
            }
            _ if opts.host.is_none() && opts.server_command.is_none() => {
                opts = match arg.split_once('@') {
                    Some((user, host)) => ConnectOptions {
                        host: Some(host.into()),
                        ..opts
                    }
                    .user(user),
                    None => ConnectOptions {
                        host: Some(arg),
                        ..opts
                    },
                }
            }
            _ => rest.push(arg),
        }
    }
    if opts.host.is_none() && opts.server_command.is_none() {
        usage("no server given");
    }
    (opts, rest)
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: [-p PORT] [-i KEY] [-F CONFIG] [-o KEY=VALUE]... [USER@]HOST [ARGS]\n   \
         or: -D /usr/lib/openssh/sftp-server [ARGS]"
    );
    std::process::exit(2)
}
