//! Progress of `get` and `put` (and later `mirror`): a bar on stderr, JSON lines on
//! stdout, or nothing; and in every mode the tally of what failed, for the exit code.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sftpipe::Error;
use sftpipe::error::printable;
use sftpipe::transfer::Progress;

use super::exit;
use super::format::human_size;

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar on stderr when stderr is a terminal (and not -q), else nothing.
    Auto,
    /// Always a bar on stderr.
    Bar,
    /// One JSON object per finished file on stdout, then a summary object.
    Json,
    /// Nothing.
    None,
}

#[derive(Default)]
struct Tally {
    files_total: u64,
    files_ok: u64,
    bytes_ok: u64,
    failures: Vec<(String, Error)>,
}

/// Receives a transfer's progress, shows it, and remembers every failure.
pub struct Tracker {
    bar: Option<ProgressBar>,
    json: bool,
    tally: RefCell<Tally>,
    started: Instant,
}

impl Tracker {
    /// A tracker for `mode`; `quiet` (-q) turns the automatic bar off.
    pub fn new(mode: ProgressMode, quiet: bool) -> Rc<Tracker> {
        let want_bar = match mode {
            ProgressMode::Auto => !quiet && std::io::stderr().is_terminal(),
            ProgressMode::Bar => true,
            ProgressMode::Json | ProgressMode::None => false,
        };
        let bar = want_bar.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            match ProgressStyle::with_template(
                "{msg} [{wide_bar}] {binary_bytes}/{binary_total_bytes} \
                 {binary_bytes_per_sec} ETA {eta}",
            ) {
                Ok(style) => bar.set_style(style.progress_chars("=> ")),
                Err(e) => log::debug!("progress template: {e}"),
            }
            bar.set_message("0/0 files");
            bar
        });
        Rc::new(Tracker {
            bar,
            json: mode == ProgressMode::Json,
            tally: RefCell::new(Tally::default()),
            started: Instant::now(),
        })
    }

    fn update_message(&self) {
        if let Some(bar) = &self.bar {
            let t = self.tally.borrow();
            let done = t.files_ok + t.failures.len() as u64;
            bar.set_message(format!("{done}/{} files", t.files_total.max(done)));
        }
    }

    fn json_line(&self, value: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{value}").and_then(|()| out.flush()) {
            log::debug!("cannot write progress to stdout: {e}");
        }
    }

    /// Ends the display and returns the exit code: 0 when nothing failed, the failure's
    /// own code when `single` (one file was asked for), else 1 (5 when the connection
    /// was lost). Without JSON, failures are listed on stderr with a summary line.
    pub fn finish(&self, single: bool) -> i32 {
        let elapsed = self.started.elapsed();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let t = self.tally.borrow();
        let failed = t.failures.len() as u64;
        if self.json {
            self.json_line(serde_json::json!({
                "event": "summary",
                "files": t.files_ok,
                "bytes": t.bytes_ok,
                "failed": failed,
                "elapsed_ms": elapsed.as_millis() as u64,
            }));
        } else {
            // A lost connection fails every remaining file the same way: its (long)
            // message, with ssh's last words, is shown once.
            let mut connection_shown = false;
            for (path, e) in &t.failures {
                if exit::is_connection(e) {
                    if connection_shown {
                        exit::report(format_args!("{path}: not transferred (connection lost)"));
                        continue;
                    }
                    connection_shown = true;
                }
                exit::report(format_args!("{path}: {e}"));
            }
            if failed > 0 && !single {
                eprintln!("sftpipe: {failed} of {} files failed", t.files_ok + failed);
            } else if failed == 0 && self.bar.is_some() {
                eprintln!(
                    "sftpipe: {} file{}, {} in {}",
                    t.files_ok,
                    if t.files_ok == 1 { "" } else { "s" },
                    bytes_text(t.bytes_ok),
                    rate_text(t.bytes_ok, elapsed)
                );
            }
        }
        let ops = if single { 1 } else { usize::MAX };
        exit::batch_code(t.failures.iter().map(|(_, e)| e), ops)
    }
}

fn bytes_text(n: u64) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else {
        format!("{}B", human_size(n))
    }
}

fn rate_text(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return format!("{secs:.1}s");
    }
    let rate = (bytes as f64 / secs) as u64;
    format!("{secs:.1}s ({}/s)", bytes_text(rate))
}

impl Progress for Tracker {
    fn add_total(&self, files: u64, bytes: u64) {
        self.tally.borrow_mut().files_total += files;
        if let Some(bar) = &self.bar {
            bar.inc_length(bytes);
        }
        self.update_message();
    }

    fn transferred(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn file_done(&self, path: &str, bytes: u64, error: Option<&Error>) {
        {
            let mut t = self.tally.borrow_mut();
            match error {
                None => {
                    t.files_ok += 1;
                    t.bytes_ok += bytes;
                }
                // One line per failure, whatever the name holds.
                Some(e) => t
                    .failures
                    .push((printable(path).into_owned(), e.duplicate())),
            }
        }
        if self.json {
            let v = match error {
                None => serde_json::json!({
                    "event": "file", "path": path, "bytes": bytes, "ok": true,
                }),
                Some(e) => serde_json::json!({
                    "event": "file", "path": path, "bytes": bytes, "ok": false,
                    "error": e.to_string(),
                }),
            };
            self.json_line(v);
        }
        self.update_message();
    }
}
