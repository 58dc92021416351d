//! Uploads over several scp sessions at once (separate ssh connections): the per-file
//! round trip of the protocol is then paid by each session for its share only.
//!
//! * Several local operands (into a directory, `-d`): each session takes a share.
//! * One directory (`put -r DIR host:REMOTE`): scp decides on the server whether
//!   `REMOTE` is an existing directory (the tree goes into it) or the tree's new name.
//!   Session 0 finds out first (`[ -d REMOTE ]`, printed by a `sh -c` wrapper before
//!   it runs `scp -t`), sends the tree's `D` and waits for it; the other sessions wait
//!   in `read` until told where the tree's top now is, then `cd` there and take their
//!   share of its entries. Session 0 sends the `E` last, after every other session is
//!   done, so that with `-p` the top's times are set after everything landed.

use std::fs;
use std::path::{Path, PathBuf};

use super::conn::Conn;
use super::quote::{remote_arg, shell_quote};
use super::upload::{Uploader, list_dir};
use super::{Report, ScpOptions, join_shown, scp_flags};
use crate::error::{Error, Result};
use crate::transport::ConnectOptions;

/// Sessions used when [`ScpOptions::sessions`] is 0. Dropbear drops a client's sixth
/// connection still authenticating (`MAX_UNAUTH_PER_IP` 5); OpenSSH starts refusing at 10
/// (`MaxStartups`). At 20 ms RTT 8 sessions were only 15-25% faster than 4 for 500 files.
pub const DEFAULT_SESSIONS: usize = 4;

/// What a file costs besides its bytes, in bytes: about one round trip of throughput.
const PER_FILE: u64 = 64 * 1024;

/// One share of the work: local paths with the names they get.
type Share = Vec<(PathBuf, Vec<u8>)>;

/// `sh -c 'SCRIPT' sh ARGS...`, each argument quoted.
fn sh(script: &str, args: &[&[u8]]) -> Result<String> {
    let mut line = b"sh -c ".to_vec();
    line.extend(shell_quote(script.as_bytes()));
    line.extend_from_slice(b" sh");
    for a in args {
        line.push(b' ');
        line.extend(shell_quote(a));
    }
    String::from_utf8(line)
        .map_err(|_| Error::InvalidInput("a remote path or name is not valid UTF-8".into()))
}

/// Several local operands into the directory `remote`, over `n` sessions.
pub fn put_many(
    opts: &ConnectOptions,
    locals: &[(PathBuf, Vec<u8>)],
    remote: &[u8],
    o: ScpOptions,
    n: usize,
) -> Result<Report> {
    let shares = partition(locals.to_vec(), n, o);
    let command = format!(
        "scp{} -d -t {}",
        scp_flags(&o),
        String::from_utf8_lossy(&shell_quote(&remote_arg(remote)))
    );
    let results = std::thread::scope(|scope| {
        let workers: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let command = &command;
                scope.spawn(move || {
                    let conn = Conn::start(opts, command)?;
                    let mut up = Uploader::new(conn, remote, o);
                    for (path, name) in &share {
                        up.send(path, name)?;
                    }
                    up.finish()
                })
            })
            .collect();
        workers.into_iter().map(join).collect::<Vec<_>>()
    });
    merge(results)
}

/// One local directory `local` (sent as `name`) to `remote`, over `n` sessions; `None`
/// when it does not split (fewer than two entries, names that are not UTF-8).
pub fn put_tree(
    opts: &ConnectOptions,
    local: &Path,
    name: &[u8],
    remote: &[u8],
    o: ScpOptions,
    n: usize,
) -> Result<Option<Report>> {
    let Ok(entries) = list_dir(local) else {
        return Ok(None);
    };
    let Ok(meta) = fs::metadata(local) else {
        return Ok(None);
    };
    if entries.len() < 2 || std::str::from_utf8(name).is_err() {
        return Ok(None);
    }
    let target = remote_arg(remote);
    let first = sh(
        &format!(
            "if [ -d \"$1\" ]; then echo D; else echo F; fi; exec scp{} -t \"$1\"",
            scp_flags(&o)
        ),
        &[&target],
    )?;
    let others = sh(
        &format!(
            "read -r w || exit 1; if [ \"$w\" = D ]; then cd \"$1/$2\"; else cd \"$1\"; fi || exit 1; exec scp{} -d -t .",
            scp_flags(&o)
        ),
        &[&target, name],
    )?;
    let mut shares = partition(entries, n, o).into_iter();
    let mine = shares.next().unwrap_or_default();
    // Every connection starts now: their handshakes overlap.
    let mut conns = Vec::new();
    for share in shares {
        conns.push((Conn::start(opts, &others)?, share));
    }
    let mut conn0 = Conn::start(opts, &first)?;
    let into_dir = match conn0.read_line(8)?.as_slice() {
        b"D" => true,
        b"F" => false,
        other => {
            return Err(Error::Protocol(format!(
                "unexpected output from the remote shell: '{}'",
                String::from_utf8_lossy(other)
            )));
        }
    };
    let remote_shown = String::from_utf8_lossy(remote).into_owned();
    let top = if into_dir {
        join_shown(&remote_shown, name)
    } else {
        remote_shown
    };
    let mut up0 = Uploader::new(conn0, remote, o);
    if !up0.open_dir(name, &meta, &top)? {
        return up0.finish().map(Some); // The other sessions end when dropped.
    }
    up0.show_under(&top);
    let word: &[u8] = if into_dir { b"D\n" } else { b"F\n" };
    let results = std::thread::scope(|scope| {
        let workers: Vec<_> = conns
            .into_iter()
            .map(|(mut conn, share)| {
                let top = &top;
                scope.spawn(move || {
                    conn.write_all(word)?;
                    let mut up = Uploader::new(conn, top.as_bytes(), o);
                    for (path, name) in &share {
                        up.send_entry(path, name)?;
                    }
                    up.finish()
                })
            })
            .collect();
        let mut own = Ok(());
        for (path, name) in &mine {
            own = up0.send_entry(path, name);
            if own.is_err() {
                break;
            }
        }
        let mut results: Vec<Result<Report>> = workers.into_iter().map(join).collect();
        results.push(
            own.and_then(|()| up0.close_dir())
                .and_then(|()| up0.finish()),
        );
        results
    });
    merge(results).map(Some)
}

fn join(h: std::thread::ScopedJoinHandle<'_, Result<Report>>) -> Result<Report> {
    h.join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The reports added up; the first session error wins.
fn merge(results: Vec<Result<Report>>) -> Result<Report> {
    let mut all = Report::default();
    for r in results {
        let r = r?;
        all.files += r.files;
        all.bytes += r.bytes;
        all.failures.extend(r.failures);
        all.done.extend(r.done);
    }
    Ok(all)
}

/// `items` in `n` shares of about equal cost (bytes, and [`PER_FILE`] per file), each
/// share in name order.
fn partition(items: Share, n: usize, o: ScpOptions) -> Vec<Share> {
    let mut weighed: Vec<(u64, (PathBuf, Vec<u8>))> =
        items.into_iter().map(|i| (cost(&i.0, o), i)).collect();
    weighed.sort_by_key(|w| std::cmp::Reverse(w.0));
    let n = n.clamp(1, weighed.len().max(1));
    let mut shares: Vec<(u64, Share)> = (0..n).map(|_| (0, Vec::new())).collect();
    for (w, item) in weighed {
        if let Some(s) = shares.iter_mut().min_by_key(|s| s.0) {
            s.0 += w;
            s.1.push(item);
        }
    }
    shares
        .into_iter()
        .map(|(_, mut s)| {
            s.sort_by(|a, b| a.1.cmp(&b.1));
            s
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// What sending `path` costs (a directory: everything below it, when recursive).
fn cost(path: &Path, o: ScpOptions) -> u64 {
    let meta = if o.follow_links {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    };
    match meta {
        Ok(m) if m.is_dir() && o.recursive => {
            let below = list_dir(path).unwrap_or_default();
            PER_FILE + below.iter().map(|(p, _)| cost(p, o)).sum::<u64>()
        }
        Ok(m) if m.is_file() => PER_FILE + m.len(),
        _ => PER_FILE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_balance_cost_and_keep_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut items = Vec::new();
        for (name, size) in [
            ("a", 1_000_000),
            ("b", 10),
            ("c", 10),
            ("d", 10),
            ("e", 900_000),
        ] {
            let p = dir.path().join(name);
            fs::write(&p, vec![0u8; size]).unwrap();
            items.push((p, name.as_bytes().to_vec()));
        }
        let o = ScpOptions::default();
        let shares = partition(items.clone(), 2, o);
        let names: Vec<Vec<&[u8]>> = shares
            .iter()
            .map(|s| s.iter().map(|i| &i.1[..]).collect())
            .collect();
        // Greedy by cost: a and e apart, the small ones filling up the lighter share.
        assert_eq!(names, [vec![&b"a"[..], b"d"], vec![b"b", b"c", b"e"]]);
        assert_eq!(partition(items.clone(), 9, o).len(), 5);
        assert_eq!(partition(items, 1, o).len(), 1);
    }

    #[test]
    fn wrappers_quote_their_arguments() {
        assert_eq!(
            sh("echo \"$1\"", &[b"a'b"]).unwrap(),
            "sh -c 'echo \"$1\"' sh 'a'\\''b'"
        );
    }
}
