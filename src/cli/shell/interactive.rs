//! The interactive shell.

use super::exec::Shell;
use crate::cli::exit::CliError;

/// Signal set-up before ssh starts (placeholder).
pub fn prepare_signals() {}

/// Runs the interactive shell.
pub fn run(_sh: &mut Shell) -> Result<i32, CliError> {
    Err(CliError::Usage(
        "the interactive shell is not there yet: use -b".into(),
    ))
}
