//! Running a [`Plan`] over one SFTP connection.
//!
//! 1. Pool files and the distribution files' `<name>.new` copies are uploaded, all
//!    concurrently. A pool file goes to a hidden temporary name beside it and is moved
//!    into place with a plain RENAME, which never replaces: an existing file is compared
//!    (size, then contents) and counts as done when identical, as an error otherwise.
//! 2. When every pool file is up, each distribution whose `.new` files all arrived is
//!    made visible: every `.new` is moved onto its name with `posix-rename` (atomic: the
//!    old file is there until the new one is), the top-level `Release`, `Release.gpg`
//!    and `InRelease` last; then its symlinks are (re)created — the old link removed and
//!    the new one made in one round trip, never renamed (a RENAME may follow the link) —
//!    and its deleted files removed.
//! 3. Only when all of that succeeded, pool files are deleted (and pool directories left
//!    empty removed, as reprepro does locally).
//!
//! Each completed step is reported to a [`DoneSink`] at once; [`OutlogRecorder`]
//! appends it to its log as a `DONE` record, so a rerun resumes where this one stopped.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::outlog::{self, AS_DOT_NEW};
use super::plan::{
    DistDelete, DistFile, DistGroup, DistSymlink, Plan, PoolDelete, PoolUpload, rename_batches,
};
use crate::client::{Sftp, read_reply};
use crate::error::{Error, Result};
use crate::proto::{FileAttributes, OpenFlags, Request, StatusCode, ext};
use crate::task::dirlock::parent_dir;
use crate::task::{JoinHandle, Semaphore, spawn};
use crate::transfer::{LinkSlot, Transfer, TransferOptions, lossy, remote_basename, remote_join};

/// Receives each completed step.
pub trait DoneSink {
    /// `key` of log number `log` is complete (`message` says how), or with
    /// [`AS_DOT_NEW`] uploaded as `.new`. An error counts as a failure of the step.
    fn record(&self, log: usize, message: &str, key: &str) -> Result<()>;
}

/// Records steps as `DONE` lines in the logs of a plan, and renames each log to `.done`
/// as soon as nothing in it is left to do.
pub struct OutlogRecorder {
    logs: RefCell<Vec<LogState>>,
    verbose: bool,
}

struct LogState {
    path: PathBuf,
    pending: BTreeSet<String>,
    obsoleted: Vec<String>,
    finished: bool,
}

impl OutlogRecorder {
    /// A recorder for the logs of `plan`; `verbose` prints each record on stdout (as
    /// `outsftphook.py --verbose` did).
    pub fn new(plan: &Plan, verbose: bool) -> Self {
        OutlogRecorder {
            logs: RefCell::new(
                plan.logs
                    .iter()
                    .map(|l| LogState {
                        path: l.path.clone(),
                        pending: l.pending.clone(),
                        obsoleted: l.obsoleted.clone(),
                        finished: false,
                    })
                    .collect(),
            ),
            verbose,
        }
    }

    /// Records the entries newer logs override, and renames the logs with nothing left
    /// to do. Call once, before executing.
    pub fn start(&self) -> Result<()> {
        let n = self.logs.borrow().len();
        for i in 0..n {
            let obsoleted = std::mem::take(&mut self.logs.borrow_mut()[i].obsoleted);
            for key in obsoleted {
                self.record(i, "obsoleted", &key)?;
            }
            self.finish_if_done(i)?;
        }
        Ok(())
    }

    /// The logs not (yet) renamed to `.done`.
    pub fn unfinished(&self) -> Vec<PathBuf> {
        self.logs
            .borrow()
            .iter()
            .filter(|l| !l.finished)
            .map(|l| l.path.clone())
            .collect()
    }

    /// The logs renamed to `.done` (their new names).
    pub fn finished(&self) -> Vec<PathBuf> {
        self.logs
            .borrow()
            .iter()
            .filter(|l| l.finished)
            .map(|l| outlog::done_path(&l.path))
            .collect()
    }

    fn say(&self, line: std::fmt::Arguments<'_>) {
        if self.verbose {
            let _ = writeln!(std::io::stdout(), "{line}");
        }
    }

    fn finish_if_done(&self, i: usize) -> Result<()> {
        let (path, done) = {
            let logs = self.logs.borrow();
            let l = &logs[i];
            if l.finished || !l.pending.is_empty() {
                return Ok(());
            }
            (l.path.clone(), outlog::done_path(&l.path))
        };
        fs::rename(&path, &done).map_err(|e| {
            Error::local(
                format!("cannot rename {} to {}", path.display(), done.display()),
                e,
            )
        })?;
        self.logs.borrow_mut()[i].finished = true;
        self.say(format_args!(
            "all done: {} renamed to {}",
            path.display(),
            done.display()
        ));
        Ok(())
    }
}

impl DoneSink for OutlogRecorder {
    fn record(&self, log: usize, message: &str, key: &str) -> Result<()> {
        let path = self.logs.borrow()[log].path.clone();
        outlog::append_done(&path, message, key)?;
        self.say(format_args!("{message}: {key}"));
        if message != AS_DOT_NEW {
            self.logs.borrow_mut()[log].pending.remove(key);
            self.finish_if_done(log)?;
        }
        Ok(())
    }
}

/// How to execute.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// The remote directory the out dir maps to (empty: the login directory).
    pub targetdir: Vec<u8>,
    /// Keep pool directories a deletion leaves empty.
    pub keep_directories: bool,
    /// Transfer tuning (`inplace` is set by the executor).
    pub transfer: TransferOptions,
}

/// What happened.
#[derive(Debug, Default)]
pub struct ExecReport {
    /// Files uploaded (pool files and `.new` copies).
    pub uploaded: u64,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Pool files found on the server with the right contents.
    pub already_present: u64,
    /// `.new` files moved into place.
    pub renamed: u64,
    /// Symlinks created or replaced.
    pub symlinks: u64,
    /// Files deleted (distribution and pool).
    pub deleted: u64,
    /// Empty pool directories removed.
    pub dirs_removed: u64,
    /// Each failed step: its path (relative to the target directory) and error.
    pub failures: Vec<(String, Error)>,
    /// Steps not attempted because earlier ones failed, with why.
    pub held_back: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl ExecReport {
    /// True when nothing failed.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// A hidden temporary name beside `remote` (`dir/.name.new`): fixed, so a rerun after
/// an interrupted upload overwrites its leftover instead of leaving another one; hidden,
/// so it can never be one of reprepro's pool or index files.
pub fn hidden_temp(remote: &[u8]) -> Vec<u8> {
    let mut name = b".".to_vec();
    name.extend_from_slice(remote_basename(remote));
    name.extend_from_slice(b".new");
    match parent_dir(remote) {
        Some(dir) if remote.contains(&b'/') => remote_join(dir, &name),
        _ => name,
    }
}

fn differs(remote: &[u8]) -> Error {
    Error::Status {
        op: "upload",
        path: lossy(remote),
        code: StatusCode::Failure,
        message: "a different file of that name is already in the remote pool; refusing to \
                  replace it"
            .into(),
    }
}

struct Ctx {
    sftp: Sftp,
    transfer: Transfer,
    target: Vec<u8>,
    sink: Rc<dyn DoneSink>,
    report: RefCell<ExecReport>,
    slots: Semaphore,
}

enum PoolOutcome {
    Uploaded(u64),
    Present,
}

impl Ctx {
    fn remote(&self, key: &str) -> Vec<u8> {
        remote_join(&self.target, key.as_bytes())
    }

    fn fail(&self, key: &str, e: Error) {
        log::debug!("{key}: {e}");
        self.report.borrow_mut().failures.push((key.to_string(), e));
    }

    fn record(&self, log: usize, message: &str, key: &str) -> bool {
        match self.sink.record(log, message, key) {
            Ok(()) => true,
            Err(e) => {
                self.fail(key, e);
                false
            }
        }
    }

    fn uploaded(&self, bytes: u64) {
        let mut r = self.report.borrow_mut();
        r.uploaded += 1;
        r.bytes += bytes;
    }

    fn failed(&self) -> bool {
        !self.report.borrow().failures.is_empty()
    }

    async fn discard(&self, temp: &[u8]) {
        if self.sftp.channel().is_dead() {
            return;
        }
        if let Err(e) = self.sftp.remove(temp).await
            && !e.is_not_found()
        {
            log::warn!("could not remove temporary file {}: {e}", lossy(temp));
        }
    }

    // ---- pool files ----

    async fn pool_upload(&self, u: &PoolUpload) -> bool {
        let remote = self.remote(&u.key);
        match self.put_pool_file(&u.local, &remote, u.replace).await {
            Ok(PoolOutcome::Uploaded(n)) => {
                self.uploaded(n);
                self.record(u.log, "done", &u.key)
            }
            Ok(PoolOutcome::Present) => {
                self.report.borrow_mut().already_present += 1;
                self.record(u.log, "present", &u.key)
            }
            Err(e) => {
                self.fail(&u.key, e);
                false
            }
        }
    }

    async fn put_pool_file(
        &self,
        local: &Path,
        remote: &[u8],
        replace: bool,
    ) -> Result<PoolOutcome> {
        let size = fs::metadata(local)
            .map_err(|e| Error::local(format!("cannot read {}", local.display()), e))?
            .len();
        match self.sftp.stat(remote).await {
            Ok(a) => {
                if self.same_file(&a, local, remote, size).await? {
                    return Ok(PoolOutcome::Present);
                }
                if !replace {
                    return Err(differs(remote));
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let temp = hidden_temp(remote);
        let sent = match self.transfer.upload(local, &temp).await {
            Ok(n) => n,
            Err(e) => {
                self.discard(&temp).await;
                return Err(e);
            }
        };
        if replace {
            // The remote file is the one an older log deleted: replace it atomically.
            return match self.sftp.posix_rename(&temp, remote).await {
                Ok(()) => Ok(PoolOutcome::Uploaded(sent)),
                Err(e) => {
                    self.discard(&temp).await;
                    Err(e)
                }
            };
        }
        // A plain RENAME never replaces an existing file.
        let err = match self.sftp.rename(&temp, remote).await {
            Ok(()) => return Ok(PoolOutcome::Uploaded(sent)),
            Err(e) => e,
        };
        if err.is_connection() {
            return Err(err);
        }
        // Did the file appear meanwhile?
        let outcome = match self.sftp.stat(remote).await {
            Ok(a) => match self.same_file(&a, local, remote, size).await {
                Ok(true) => Ok(PoolOutcome::Present),
                Ok(false) => Err(differs(remote)),
                Err(e) => Err(e),
            },
            Err(_) => Err(err),
        };
        self.discard(&temp).await;
        outcome
    }

    /// True when the remote file (with attributes `a`) has the contents of `local`:
    /// sizes first, then the bytes.
    async fn same_file(
        &self,
        a: &FileAttributes,
        local: &Path,
        remote: &[u8],
        size: u64,
    ) -> Result<bool> {
        if !a.is_file() || a.size != Some(size) {
            return Ok(false);
        }
        let _permit = self.transfer.open_files.acquire(1).await;
        same_contents(&self.sftp, remote, local, size).await
    }

    /// Removes a remote file for a delete record: NO_SUCH_FILE counts as done. Returns the
    /// DONE message, or `None` after recording the failure.
    async fn remove_for(&self, remote: &[u8], key: &str) -> Option<&'static str> {
        match self.sftp.remove(remote).await {
            Ok(()) => {
                self.report.borrow_mut().deleted += 1;
                Some("deleted")
            }
            Err(e) if e.is_not_found() => Some("already deleted"),
            Err(e) => {
                self.fail(key, e);
                None
            }
        }
    }

    async fn pool_delete(&self, d: &PoolDelete) -> bool {
        let remote = self.remote(&d.key);
        let Some(message) = self.remove_for(&remote, &d.key).await else {
            return false;
        };
        // An upload of it interrupted earlier may have left its temporary file.
        self.discard(&hidden_temp(&remote)).await;
        self.record(d.log, message, &d.key)
    }

    /// Removes the directories above `deleted` keys that are now empty, deepest first;
    /// failures (not empty, gone) are expected and ignored.
    async fn remove_empty_dirs(&self, deleted: &[&str]) {
        let mut by_depth: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
        for key in deleted {
            let mut cur = *key;
            while let Some(i) = cur.rfind('/') {
                cur = &cur[..i];
                by_depth
                    .entry(cur.matches('/').count())
                    .or_default()
                    .insert(cur);
            }
        }
        for (_, dirs) in by_depth.into_iter().rev() {
            let mut rmdirs: FuturesUnordered<_> = dirs
                .into_iter()
                .map(|d| {
                    let path = self.remote(d);
                    async move { (d, self.sftp.rmdir(&path).await) }
                })
                .collect();
            while let Some((d, r)) = rmdirs.next().await {
                match r {
                    Ok(()) => {
                        log::debug!("removed empty directory {d}");
                        self.report.borrow_mut().dirs_removed += 1;
                    }
                    Err(e) => log::debug!("kept directory {d}: {e}"),
                }
            }
        }
    }

    // ---- distributions ----

    async fn upload_new(&self, f: &DistFile) -> bool {
        let new = self.remote(&format!("{}.new", f.key));
        match self.transfer.upload(&f.local, &new).await {
            Ok(n) => {
                self.uploaded(n);
                self.record(f.log, AS_DOT_NEW, &f.key)
            }
            Err(e) => {
                self.fail(&f.key, e);
                false
            }
        }
    }

    async fn rename_into_place(&self, f: &DistFile) -> bool {
        let new = self.remote(&format!("{}.new", f.key));
        let fin = self.remote(&f.key);
        let mut r = self.sftp.posix_rename(&new, &fin).await;
        if f.uploaded && matches!(&r, Err(e) if e.is_not_found()) {
            // The .new an earlier run uploaded is gone (say it was renamed, but the record
            // did not make it to the log): upload it again.
            log::info!("{}.new is gone; uploading it again", f.key);
            r = match self.transfer.upload(&f.local, &new).await {
                Ok(n) => {
                    self.uploaded(n);
                    self.sftp.posix_rename(&new, &fin).await
                }
                Err(e) => Err(e),
            };
        }
        match r {
            Ok(()) => {
                self.report.borrow_mut().renamed += 1;
                self.record(f.log, "done", &f.key)
            }
            Err(e) => {
                self.fail(&f.key, e);
                false
            }
        }
    }

    async fn symlink(&self, s: &DistSymlink) -> bool {
        let link = self.remote(&s.key);
        match self.replace_symlink(s.target.as_bytes(), &link).await {
            Ok(()) => {
                self.report.borrow_mut().symlinks += 1;
                self.record(s.log, "symlink done", &s.key)
            }
            Err(e) => {
                self.fail(&s.key, e);
                false
            }
        }
    }

    /// Makes `link` → `target` in place of whatever link or file is there: REMOVE and
    /// SYMLINK in one round trip, not a temporary link renamed over it (a RENAME that
    /// follows links, as ProFTPD's does, would move the directory it points to instead).
    async fn replace_symlink(&self, target: &[u8], link: &[u8]) -> Result<()> {
        self.transfer
            .upload_symlink(target, link, None, LinkSlot::Taken)
            .await
    }

    async fn dist_delete(&self, d: &DistDelete) -> bool {
        let Some(message) = self.remove_for(&self.remote(&d.key), &d.key).await else {
            return false;
        };
        self.record(d.log, message, &d.key)
    }

    /// Makes one distribution visible: renames (Release files last), then symlinks and
    /// deletions. Stops at the first batch with a failure.
    async fn finalize(&self, g: &DistGroup) {
        for batch in rename_batches(&g.files, |f| f.name.as_str()) {
            let mut renames: FuturesUnordered<_> = batch
                .into_iter()
                .map(|f| self.rename_into_place(f))
                .collect();
            let mut ok = true;
            while let Some(r) = renames.next().await {
                ok &= r;
            }
            if !ok {
                self.report.borrow_mut().held_back.push(format!(
                    "{}: a rename failed; the rest of it was not made visible",
                    g.reldir
                ));
                return;
            }
        }
        let mut rest: FuturesUnordered<
            std::pin::Pin<Box<dyn std::future::Future<Output = bool> + '_>>,
        > = FuturesUnordered::new();
        for s in &g.symlinks {
            rest.push(Box::pin(self.symlink(s)));
        }
        for d in &g.deletes {
            rest.push(Box::pin(self.dist_delete(d)));
        }
        while rest.next().await.is_some() {}
    }
}

/// Compares a remote file with a local one of `size` bytes, with several READs in
/// flight. A short read is completed before comparing; a remote file that ends early
/// differs.
pub async fn same_contents(sftp: &Sftp, remote: &[u8], local: &Path, size: u64) -> Result<bool> {
    const IN_FLIGHT: usize = 16;
    let lctx = |e| Error::local(format!("cannot read {}", local.display()), e);
    let mut file = fs::File::open(local).map_err(lctx)?;
    let h = sftp
        .open(remote, OpenFlags::READ, &FileAttributes::default())
        .await?;
    sftp.limits().await;
    let chunk = sftp.read_chunk() as u64;
    let mut pending = VecDeque::new();
    let mut next = 0u64;
    let mut buf = vec![0u8; chunk as usize];
    let same = loop {
        while pending.len() < IN_FLIGHT && next < size {
            let len = chunk.min(size - next);
            let req = Request::Read {
                handle: h.raw().to_vec(),
                offset: next,
                len: len as u32,
            };
            pending.push_back((next, len, sftp.submit(&req).await?));
            next += len;
        }
        let Some((offset, len, reply)) = pending.pop_front() else {
            break true;
        };
        let Some(mut data) = read_reply(remote, reply.await?)? else {
            break false;
        };
        while (data.len() as u64) < len {
            let at = offset + data.len() as u64;
            match sftp.read(&h, at, (len - data.len() as u64) as u32).await? {
                Some(more) if !more.is_empty() => data.extend_from_slice(&more),
                _ => break,
            }
        }
        if data.len() as u64 != len {
            break false;
        }
        let want = &mut buf[..len as usize];
        file.read_exact(want).map_err(lctx)?;
        if data != *want {
            break false;
        }
    };
    drop(pending);
    let _ = sftp.close(h).await;
    Ok(same)
}

/// Runs `plan` over `sftp`, reporting every completed step to `sink`.
pub async fn execute(
    sftp: &Sftp,
    plan: &Plan,
    opts: &ExecOptions,
    sink: Rc<dyn DoneSink>,
) -> ExecReport {
    let started = Instant::now();
    let mut topts = opts.transfer.clone();
    // Pool files go to temporary names and `.new` files are temporaries themselves: the
    // executor does every rename.
    topts.inplace = true;
    topts.resume = false;
    let transfer = Transfer::new(sftp, topts);
    let limit = transfer.open_files.capacity() * 2 + 16;
    let ctx = Rc::new(Ctx {
        sftp: sftp.clone(),
        transfer,
        target: opts.targetdir.clone(),
        sink,
        report: RefCell::new(ExecReport::default()),
        slots: Semaphore::new(limit),
    });
    let finish = |ctx: Rc<Ctx>| {
        let mut r = std::mem::take(&mut *ctx.report.borrow_mut());
        r.elapsed = started.elapsed();
        r
    };

    let needs_rename = !plan.dists.is_empty() || plan.pool_uploads.iter().any(|u| u.replace);
    if needs_rename && !sftp.has_extension(ext::POSIX_RENAME) {
        ctx.fail(
            "",
            Error::Unsupported(format!(
                "the server lacks {}, so index files cannot be replaced atomically; nothing \
                 was changed",
                ext::POSIX_RENAME
            )),
        );
        return finish(ctx);
    }

    // 1. Uploads.
    let mut pool: Vec<JoinHandle<bool>> = Vec::new();
    for u in &plan.pool_uploads {
        let (c, u) = (ctx.clone(), u.clone());
        let slot = ctx.slots.acquire(1).await;
        pool.push(spawn(async move {
            let ok = c.pool_upload(&u).await;
            drop(slot);
            ok
        }));
    }
    let mut news: Vec<(usize, JoinHandle<bool>)> = Vec::new();
    for (gi, g) in plan.dists.iter().enumerate() {
        for f in g.files.iter().filter(|f| !f.uploaded) {
            let (c, f) = (ctx.clone(), f.clone());
            let slot = ctx.slots.acquire(1).await;
            news.push((
                gi,
                spawn(async move {
                    let ok = c.upload_new(&f).await;
                    drop(slot);
                    ok
                }),
            ));
        }
    }
    let mut pool_ok = true;
    for h in pool {
        pool_ok &= h.await;
    }
    let mut group_ok = vec![true; plan.dists.len()];
    for (gi, h) in news {
        group_ok[gi] &= h.await;
    }

    // 2. Distributions become visible, each on its own once all its files are up, and
    //    only when every pool file they may refer to is there.
    if !plan.dists.is_empty() {
        if !pool_ok {
            ctx.report
                .borrow_mut()
                .held_back
                .push("no distribution was made visible: some pool files failed to upload".into());
        } else {
            let mut tasks = Vec::new();
            for (gi, g) in plan.dists.iter().enumerate() {
                if !group_ok[gi] {
                    ctx.report.borrow_mut().held_back.push(format!(
                        "{}: not made visible: some of its files failed to upload",
                        g.reldir
                    ));
                    continue;
                }
                let (c, g) = (ctx.clone(), g.clone());
                tasks.push(spawn(async move { c.finalize(&g).await }));
            }
            for t in tasks {
                t.await;
            }
        }
    }

    // 3. Pool deletions, only after everything else succeeded.
    if !plan.pool_deletes.is_empty() {
        if ctx.failed() || !ctx.report.borrow().held_back.is_empty() {
            ctx.report.borrow_mut().held_back.push(format!(
                "{} pool deletion(s) held back until everything else succeeds",
                plan.pool_deletes.len()
            ));
        } else {
            let mut tasks = Vec::new();
            for d in &plan.pool_deletes {
                let (c, d) = (ctx.clone(), d.clone());
                let slot = ctx.slots.acquire(1).await;
                tasks.push(spawn(async move {
                    let ok = c.pool_delete(&d).await;
                    drop(slot);
                    (d.key, ok)
                }));
            }
            let mut deleted = Vec::new();
            for t in tasks {
                let (key, ok) = t.await;
                if ok {
                    deleted.push(key);
                }
            }
            if !opts.keep_directories && !ctx.sftp.channel().is_dead() {
                let keys: Vec<&str> = deleted.iter().map(String::as_str).collect();
                ctx.remove_empty_dirs(&keys).await;
            }
        }
    }
    finish(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_temporaries_sit_beside_the_file() {
        assert_eq!(
            hidden_temp(b"/srv/r/pool/main/a/a.deb"),
            b"/srv/r/pool/main/a/.a.deb.new"
        );
        assert_eq!(hidden_temp(b"pool/a.deb"), b"pool/.a.deb.new");
        assert_eq!(hidden_temp(b"a.deb"), b".a.deb.new");
    }
}
