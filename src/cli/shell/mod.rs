//! `sftpipe [ssh options] HOST[:DIR]`: the interactive shell, and with `-b FILE` the
//! batch runner, both front ends over the library: a command parser ([`command`],
//! [`words`]) and [`exec`], which runs each command with the session's operations.

pub mod batch;
pub mod command;
pub mod exec;
pub mod interactive;
pub mod jobs;
pub mod reader;
pub mod words;

use std::io::BufRead;

use sftpipe::location::parse_remote;

use super::exit::CliError;
use super::{GlobalArgs, connect};
use exec::Shell;

/// Runs the shell (or, with `batch`, the batch file; `-` is standard input) on the
/// server `destination` names (`HOST`, `HOST:DIR`, `sftp://HOST/DIR`; with `-D` a
/// directory or nothing).
pub fn run(
    g: &GlobalArgs,
    destination: Option<&str>,
    batch: Option<&str>,
) -> Result<i32, CliError> {
    let dest = destination.unwrap_or("");
    let (spec, dir) = if g.server_command.is_some() {
        let spec = parse_remote(dest).ok();
        let dir = spec
            .as_ref()
            .map(|s| s.path.clone())
            .unwrap_or_else(|| dest.as_bytes().to_vec());
        (None, dir)
    } else {
        if dest.is_empty() {
            return Err(CliError::Usage(
                "give a destination: sftpipe [OPTIONS] HOST[:DIR] (or a command, see --help)"
                    .into(),
            ));
        }
        // A bare host has no colon: it is the host, not a local path.
        let with_colon = if dest.contains(':') {
            dest.to_string()
        } else {
            format!("{dest}:")
        };
        let spec = parse_remote(&with_colon)?;
        let dir = spec.path.clone();
        (Some(spec), dir)
    };
    let mut input: Option<Box<dyn BufRead>> = match batch {
        None => None,
        Some("-") => Some(Box::new(std::io::stdin().lock())),
        Some(path) => Some(Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| sftpipe::Error::local(format!("cannot open batch file {path}"), e))?,
        ))),
    };
    if input.is_none() {
        interactive::prepare_signals();
    }
    let session = connect(g, spec.as_ref())?;
    let mut shell = Shell::new(session, g.clone(), &dir)?;
    match &mut input {
        Some(input) => Ok(batch::run(&mut shell, input.as_mut())),
        None => interactive::run(shell),
    }
}
