//! `sftpipe`: the command-line frontend. Everything lives in [`cli`].

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::try_parse().unwrap_or_else(|e| e.exit());
    cli::init_logging(&args.global);
    std::process::exit(cli::run(args));
}
