//! `sftpipe`: the command-line frontend. Everything lives in [`cli`].

mod cli;

fn main() {
    // Summaries count from here: their time includes connecting.
    cli::progress::process_start();
    let args = cli::parse();
    cli::init_logging(&args.global);
    // End the ssh or -D child on SIGINT, SIGTERM and SIGHUP instead of leaving it behind.
    if let Err(e) = sftpipe::interrupt::catch_signals() {
        log::warn!("cannot catch signals: {e}");
    }
    // Each concurrent file task holds a local descriptor; the common soft limit of 1024
    // would otherwise cap --max-open below what servers allow.
    sftpipe::transfer::raise_fd_limit();
    std::process::exit(cli::run(args));
}
