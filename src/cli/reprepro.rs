//! `sftpipe reprepro-hook`: reprepro's `outhook`, publishing over SFTP (see
//! [`sftpipe::reprepro`]). `contrib/reprepro/outsftphook` is the executable reprepro's
//! `conf/options` points at; it runs this command with its arguments.

use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;

use clap::Args;
use sftpipe::reprepro::{
    self, DirOptions, Dirs, ExecOptions, ExecReport, HookConfig, Outlog, OutlogRecorder, Plan,
    PlanContext, SelectOptions,
};
use sftpipe::{ConnectOptions, Error, Session};

use super::GlobalArgs;
use super::exit::{self, CliError};
use super::format::human_size;

/// `reprepro-hook` arguments.
#[derive(Debug, Args)]
#[command(
    about = "reprepro outhook: publish a reprepro repository's changes over SFTP, atomically",
    long_about = "reprepro outhook: publish the changes a reprepro run made (described by its \
                  .outlog file) to a remote directory over SFTP, so that the remote repository \
                  is never seen in a broken state. A drop-in replacement for reprepro's example \
                  outsftphook.py, reading the same conf/outsftphook.conf.\n\n\
                  New pool files are uploaded first; then each distribution's changed index \
                  files, uploaded as NAME.new, are renamed into place atomically (Release, \
                  Release.gpg and InRelease last); then symlinks and deletions; pool files are \
                  deleted only when everything else succeeded. Progress is recorded in the \
                  .outlog (DONE lines), so a failed run is resumed by the next; a finished log \
                  is renamed to .done.\n\n\
                  reprepro passes the directories in REPREPRO_* environment variables; when run \
                  by hand, give --basedir (or --outdir, --logdir, --confdir). ssh options given \
                  here win over the configuration file's.",
    after_help = "Configuration (conf/outsftphook.conf, 'key value' or 'key = value' lines, # \
        comments):\n  servername HOST   username USER   targetdir /srv/www/debian\n  \
        verbose yes|no    autoretry yes|no  debug N   keepdirectories yes|no\n  \
        ssh_config FILE   ssh_option OPT (repeatable)   identity FILE (repeatable)\n  \
        port N   jump HOST   ssh_program PROGRAM   timeout SECS (default 60; 0: never)\n\n\
        Examples:\n  \
        conf/options:  outhook /usr/share/sftpipe/outsftphook\n  \
        sftpipe reprepro-hook --basedir /srv/repo --pending     # retry what failed\n  \
        sftpipe reprepro-hook --basedir /srv/repo -n --pending  # show, change nothing\n\n\
        Exit status: 0 all done; 1 some steps failed (rerun to resume); 2 bad arguments, \
        configuration or .outlog, or older logs pending; 5 connection failed or lost; 3, 4, \
        6, 7 as for the other commands."
)]
pub struct HookArgs {
    /// The .outlog file(s) to process (reprepro passes one)
    #[arg(value_name = "OUTLOG")]
    pub outlogs: Vec<PathBuf>,
    /// Process every pending .outlog in the log directory instead
    #[arg(long)]
    pub pending: bool,
    /// Process older pending .outlog files together with the given one (also 'autoretry
    /// yes' in the configuration)
    #[arg(long)]
    pub autoretry: bool,
    /// Do not look for older pending .outlog files
    #[arg(long, conflicts_with_all = ["pending", "autoretry"])]
    pub ignore_pending: bool,
    /// Go ahead although older .outlog files are pending (they are left for later), or the
    /// ones given are not in order
    #[arg(long)]
    pub force_order: bool,
    /// Print what would be done; change nothing (no connection is made)
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print every completed step (as outsftphook.py --verbose)
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Keep remote pool directories left empty by deletions
    #[arg(long)]
    pub keep_directories: bool,
    /// Base directory (default: $REPREPRO_BASE_DIR, else the current directory)
    #[arg(long, value_name = "DIR")]
    pub basedir: Option<PathBuf>,
    /// Out directory holding pool/ and dists/ (default: the base directory)
    #[arg(long, value_name = "DIR")]
    pub outdir: Option<PathBuf>,
    /// Directory of the .outlog files (default: BASEDIR/logs)
    #[arg(long, value_name = "DIR")]
    pub logdir: Option<PathBuf>,
    /// reprepro's conf directory, holding outsftphook.conf (default: BASEDIR/conf)
    #[arg(long, value_name = "DIR")]
    pub confdir: Option<PathBuf>,
    /// Local dists directory (default: OUTDIR/dists)
    #[arg(long, value_name = "DIR")]
    pub distdir: Option<PathBuf>,
    /// Configuration file (default: CONFDIR/outsftphook.conf)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Accepted for compatibility with outsftphook.py; above 0 acts like --verbose
    #[arg(long = "debug-sftp", value_name = "N", hide = true)]
    pub debug_sftp: Option<u32>,
    /// ssh flags (they win over the configuration file's)
    #[command(flatten)]
    pub ssh: super::SshArgs,
    /// Remote files open at once; default: from the server's limits (else 64)
    #[arg(long = "max-open", value_name = "N")]
    pub max_open: Option<usize>,
}

impl HookArgs {
    fn dir_options(&self) -> DirOptions {
        DirOptions {
            basedir: self.basedir.clone(),
            outdir: self.outdir.clone(),
            logdir: self.logdir.clone(),
            confdir: self.confdir.clone(),
            distdir: self.distdir.clone(),
        }
    }

    /// The ssh options of the command line: those before the command, then these.
    fn cli_connect(&self, g: &GlobalArgs) -> ConnectOptions {
        let mut ssh_options = g.ssh.ssh_options.clone();
        ssh_options.extend(self.ssh.ssh_options.iter().cloned());
        let mut identities = g.ssh.identities.clone();
        identities.extend(self.ssh.identities.iter().cloned());
        ConnectOptions {
            host: None,
            user: self.ssh.user.clone().or_else(|| g.ssh.user.clone()),
            port: self.ssh.port.or(g.ssh.port),
            config_file: self
                .ssh
                .config_file
                .clone()
                .or_else(|| g.ssh.config_file.clone()),
            identities,
            ssh_options,
            jump: self.ssh.jump.clone().or_else(|| g.ssh.jump.clone()),
            ssh_program: self
                .ssh
                .ssh_program
                .clone()
                .or_else(|| g.ssh.ssh_program.clone()),
            server_command: g.server_command.clone(),
            prefetch: Default::default(),
            keep_cipher_order: false,
            timeout: g.timeout(),
            connections: g.connections.map(usize::from),
            eager_connections: g.eager_connections,
            separate_connections: g.separate_connections,
            transport: sftpipe::Transport::Sftp,
        }
    }
}

fn say(line: impl std::fmt::Display) -> Result<(), CliError> {
    writeln!(std::io::stdout(), "{}", exit::sanitize(&line.to_string())).map_err(exit::stdout_error)
}

/// Runs `reprepro-hook`.
pub fn hook(g: &GlobalArgs, a: &HookArgs) -> Result<i32, CliError> {
    let dirs = Dirs::resolve(&a.dir_options(), &|k| std::env::var_os(k));
    let config_path = a
        .config
        .clone()
        .unwrap_or_else(|| dirs.confdir.join(reprepro::CONFIG_FILE));
    let config = HookConfig::read_optional(&config_path)?;
    let verbose = !g.quiet
        && (a.verbose
            || config.verbose.unwrap_or(false)
            || config.debug > 0
            || a.debug_sftp.unwrap_or(0) > 0);
    let select = SelectOptions {
        pending: a.pending,
        autoretry: a.autoretry || config.autoretry.unwrap_or(false),
        ignore_pending: a.ignore_pending,
        force_order: a.force_order,
    };

    // Another run (by hand, say) must not work on the same logs meanwhile.
    let _lock = if a.dry_run {
        None
    } else {
        reprepro::lock_logdir(&dirs.logdir)?
    };
    let selected = reprepro::select_outlogs(&a.outlogs, &dirs.logdir, select)?;
    if selected.is_empty() {
        if verbose {
            say("nothing to do: no pending .outlog files")?;
        }
        return Ok(exit::SUCCESS);
    }
    let mut logs = Vec::with_capacity(selected.len());
    for p in &selected {
        log::info!("reading {}", p.display());
        logs.push(Outlog::read(p)?);
    }
    let plan = Plan::build(
        &logs,
        &PlanContext {
            outdir: &dirs.outdir,
            distdir: &dirs.distdir,
        },
    );

    let cli = a.cli_connect(g);
    let connect = config.connect_options(&cli);
    if a.dry_run {
        let target = if config.targetdir.is_empty() {
            "(the login directory)".to_string()
        } else {
            config.targetdir.clone()
        };
        say(format_args!("target: {} {target}", connect.label()))?;
        for l in &selected {
            say(format_args!("log: {}", l.display()))?;
        }
        for line in plan.describe() {
            say(line)?;
        }
        say(format_args!(
            "{} step(s) planned, {} already done",
            plan.operations(),
            plan.already_done
        ))?;
        return Ok(exit::SUCCESS);
    }

    let recorder = Rc::new(OutlogRecorder::new(&plan, verbose));
    recorder.start()?;
    if plan.is_empty() {
        if verbose {
            say("nothing left to do remotely")?;
        }
        return Ok(exit::SUCCESS);
    }
    if connect.server_command.is_none() && connect.host.is_none() {
        return Err(CliError::Usage(format!(
            "no servername configured (set 'servername' in {})",
            config_path.display()
        )));
    }
    log::info!("connecting: {}", connect.label());
    let session = Session::connect(&connect)?;
    let mut topts = sftpipe::transfer::TransferOptions::default();
    if let Some(n) = a.max_open {
        topts.max_open = Some(n.clamp(1, sftpipe::transfer::MAX_OPEN_CAP));
    }
    let opts = ExecOptions {
        targetdir: config.targetdir.clone().into_bytes(),
        keep_directories: a.keep_directories || config.keep_directories.unwrap_or(false),
        transfer: topts,
    };
    let report = session.run(reprepro::execute(
        session.sftp(),
        &plan,
        &opts,
        recorder.clone(),
    ));
    drop(session);
    Ok(finish(
        &report,
        &recorder,
        plan.operations(),
        g.quiet,
        verbose,
    ))
}

/// Prints failures (a lost connection once, not once per step), what was held back and,
/// when verbose, a summary; returns the exit code.
fn finish(
    r: &ExecReport,
    recorder: &OutlogRecorder,
    operations: usize,
    quiet: bool,
    verbose: bool,
) -> i32 {
    let mut connection: Option<&Error> = None;
    let mut lost = 0;
    for (path, e) in &r.failures {
        if exit::is_connection(e) {
            connection.get_or_insert(e);
            lost += 1;
        } else if path.is_empty() {
            exit::report(e);
        } else {
            exit::report(format_args!("{path}: {e}"));
        }
    }
    if let Some(e) = connection {
        exit::report(format_args!("{e} ({lost} step(s) not done)"));
    }
    if !r.is_ok() {
        for h in &r.held_back {
            exit::report(h);
        }
        let left: Vec<String> = recorder
            .unfinished()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        if !left.is_empty() {
            exit::report(format_args!(
                "not finished, run again to resume (e.g. with --pending): {}",
                left.join(", ")
            ));
        }
    }
    if verbose && !quiet {
        let _ = writeln!(
            std::io::stdout(),
            "{} uploaded ({}B), {} already present, {} renamed, {} symlinks, {} deleted, \
             {} dirs removed, {} failed in {:.2}s",
            r.uploaded,
            human_size(r.bytes),
            r.already_present,
            r.renamed,
            r.symlinks,
            r.deleted,
            r.dirs_removed,
            r.failures.len(),
            r.elapsed.as_secs_f64()
        );
    }
    match r.failures.as_slice() {
        // Refused before anything was tried (say the server lacks posix-rename).
        [(path, e)] if path.is_empty() => exit::code_of(e),
        f => exit::batch_code(f.iter().map(|(_, e)| e), operations.max(2)),
    }
}
