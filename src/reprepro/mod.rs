//! A reprepro publish hook: copies what a reprepro run changed in its out dir to a
//! remote directory over SFTP, so that the remote repository is never seen in a broken
//! state — a drop-in, atomic replacement for reprepro's example `outsftphook.py`.
//!
//! reprepro's `outhook` (in `conf/options`, or `--outhook`) is called after every run
//! with a `.outlog` file describing the changes ([`outlog`]). The hook
//!
//! 1. uploads new pool files, and every changed index file of a distribution as
//!    `<name>.new`, all concurrently ([`exec`]);
//! 2. when all pool files are there, moves each distribution's `.new` files onto their
//!    names with `posix-rename` (atomic), `Release`, `Release.gpg` and `InRelease` last,
//!    then creates its symlinks and removes its deleted files;
//! 3. only if all that succeeded, deletes the pool files reprepro removed.
//!
//! Every completed step is appended to the log as a `DONE` record (the Python hook's
//! format), so a run that fails — the connection dropped, a disk filled up — is resumed
//! by the next one, which skips what is recorded. A log whose steps are all done is
//! renamed to `.done`. Older logs still pending are processed first together with the
//! current one when `autoretry` is set ([`outlog::select_outlogs`]), merged into one
//! [`plan::Plan`] where the newest change of each path wins.
//!
//! The library pieces, in the order the `sftpipe reprepro-hook` command uses them:
//!
//! ```no_run
//! use std::rc::Rc;
//! use sftpipe::reprepro::{self, Dirs, DirOptions, HookConfig, Outlog, Plan, PlanContext};
//! # fn main() -> sftpipe::Result<()> {
//! let dirs = Dirs::resolve(&DirOptions::default(), &|k| std::env::var_os(k));
//! let config = HookConfig::read_optional(&dirs.confdir.join("outsftphook.conf"))?;
//! let given = vec!["logs/1700000000-AbCdEf.outlog".into()];
//! let options = reprepro::SelectOptions { autoretry: config.autoretry.unwrap_or(false), ..Default::default() };
//! let logs = reprepro::select_outlogs(&given, &dirs.logdir, options)?
//!     .iter()
//!     .map(|p| Outlog::read(p))
//!     .collect::<sftpipe::Result<Vec<_>>>()?;
//! let plan = Plan::build(&logs, &PlanContext { outdir: &dirs.outdir, distdir: &dirs.distdir });
//! let recorder = Rc::new(reprepro::OutlogRecorder::new(&plan, false));
//! recorder.start()?;
//! let session = sftpipe::Session::connect(&config.connect_options(&Default::default()))?;
//! let opts = reprepro::ExecOptions { targetdir: config.targetdir.clone().into_bytes(), ..Default::default() };
//! let report = session.run(reprepro::execute(session.sftp(), &plan, &opts, recorder.clone()));
//! assert!(report.is_ok());
//! # Ok(()) }
//! ```

pub mod config;
pub mod exec;
pub mod outlog;
pub mod plan;

pub use config::{DirOptions, Dirs, HookConfig, called_by_reprepro, parse_bool};
pub use exec::{
    DoneSink, ExecOptions, ExecReport, OutlogRecorder, execute, hidden_temp, same_contents,
};
pub use outlog::{
    AS_DOT_NEW, DoneState, LogOrder, Outlog, Record, SelectOptions, append_done, done_path,
    parse_line, pending_outlogs, select_outlogs,
};
pub use plan::{Plan, PlanContext, rename_batches, rename_rank};

/// The configuration file's name, in reprepro's conf directory.
pub const CONFIG_FILE: &str = "outsftphook.conf";

/// The lock file in the log directory that keeps two hook runs from working on the same
/// logs at once.
pub const LOCK_FILE: &str = ".outsftphook.lock";

/// Takes the hook's lock in `logdir`, waiting while another run holds it. `None` when
/// the log directory does not exist (then there is nothing another run could share).
pub fn lock_logdir(logdir: &std::path::Path) -> crate::Result<Option<std::fs::File>> {
    let path = logdir.join(LOCK_FILE);
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(crate::Error::local(
                format!("cannot open {}", path.display()),
                e,
            ));
        }
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            log::warn!("another hook run holds {}; waiting for it", path.display());
            file.lock()
                .map_err(|e| crate::Error::local(format!("cannot lock {}", path.display()), e))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(crate::Error::local(
                format!("cannot lock {}", path.display()),
                e,
            ));
        }
    }
    Ok(Some(file))
}
