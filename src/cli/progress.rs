//! Progress of `get` and `put` (and later `mirror`): a bar on stderr, JSON lines on
//! stdout, or nothing; and in every mode the tally of what failed, for the exit code.

use std::cell::{Cell, RefCell};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sftpipe::Error;
use sftpipe::error::printable;
use sftpipe::transfer::Progress;

use super::exit;
use super::format::thousands;

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar on stderr when stderr is a terminal (and not -q), else nothing.
    Auto,
    /// A bar on stderr; when stderr is not a terminal, a line a second instead
    /// (`  12.3 MiB  45%  8.1 MiB/s  file`).
    Bar,
    /// On stdout: a progress object every 250 ms while bytes move, one object per
    /// finished file, then a summary object.
    Json,
    /// Nothing.
    None,
}

/// The moment this process started (first asked from `main`): summaries count from it,
/// so their time includes connecting.
pub fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// How often `--progress=bar` writes a line when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(1);
/// How often `--progress=json` writes a progress object.
const JSON_EVERY: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Tally {
    files_total: u64,
    files_ok: u64,
    bytes_ok: u64,
    failures: Vec<(String, Error)>,
}

/// Bytes in flight, for the periodic lines and JSON objects.
struct Live {
    bytes: u64,
    total: u64,
    /// The file bytes last moved for (the latest in flight).
    file: PathBuf,
    /// When the last line or object went out, and the byte count then.
    last: (Instant, u64),
}

/// Receives a transfer's progress, shows it, and remembers every failure.
pub struct Tracker {
    bar: Option<ProgressBar>,
    /// `--progress=bar` without a terminal: periodic lines instead.
    lines: bool,
    json: bool,
    /// Whether [`Tracker::finish`] prints the "N files, SIZE in TIME" line (a mirror
    /// prints its own summary).
    summary: Cell<bool>,
    tally: RefCell<Tally>,
    live: RefCell<Live>,
}

impl Tracker {
    /// A tracker for `mode`; `quiet` (-q) turns the automatic bar off.
    pub fn new(mode: ProgressMode, quiet: bool) -> Rc<Tracker> {
        let tty = std::io::stderr().is_terminal();
        let want_bar = match mode {
            ProgressMode::Auto => !quiet && tty,
            ProgressMode::Bar => tty,
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
            lines: mode == ProgressMode::Bar && !tty,
            json: mode == ProgressMode::Json,
            summary: Cell::new(true),
            tally: RefCell::new(Tally::default()),
            live: RefCell::new(Live {
                bytes: 0,
                total: 0,
                file: PathBuf::new(),
                last: (Instant::now(), 0),
            }),
        })
    }

    /// Leaves the summary line to the caller (a mirror prints its own).
    pub fn without_summary(&self) {
        self.summary.set(false);
    }

    fn update_message(&self) {
        if let Some(bar) = &self.bar {
            let t = self.tally.borrow();
            let done = t.files_ok + t.failures.len() as u64;
            let total = t.files_total.max(done);
            let live = self.live.borrow();
            let name = short_name(&live.file);
            if total <= 1 && !name.is_empty() {
                bar.set_message(name);
            } else if name.is_empty() {
                bar.set_message(format!("{done}/{total} files"));
            } else {
                bar.set_message(format!("{name} {done}/{total}"));
            }
        }
    }

    /// Counts `bytes` of `file` and, when due, writes a progress line or JSON object.
    fn moved(&self, file: Option<&Path>, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
        let mut live = self.live.borrow_mut();
        live.bytes += bytes;
        let renamed = file.is_some_and(|f| f != live.file);
        if let Some(f) = file.filter(|_| renamed) {
            live.file = f.to_path_buf();
        }
        if !self.lines && !self.json {
            drop(live);
            if renamed {
                self.update_message();
            }
            return;
        }
        let now = Instant::now();
        let every = if self.json { JSON_EVERY } else { LINE_EVERY };
        let (at, before) = live.last;
        if now.duration_since(at) < every {
            return;
        }
        live.last = (now, live.bytes);
        let name = printable(&live.file.to_string_lossy()).into_owned();
        if self.json {
            self.json_line(serde_json::json!({
                "event": "progress", "bytes": live.bytes, "total": live.total, "file": name,
            }));
        } else {
            let rate = (live.bytes - before) as f64 / now.duration_since(at).as_secs_f64();
            let percent = match live.total {
                0 => "  - ".to_string(),
                t => format!("{:3}%", (live.bytes.min(t) * 100 / t)),
            };
            eprintln!(
                "{:>11} {percent} {:>11}/s  {name}",
                binary_size(live.bytes),
                binary_size(rate as u64)
            );
        }
    }

    fn json_line(&self, value: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{value}").and_then(|()| out.flush()) {
            log::debug!("cannot write progress to stdout: {e}");
        }
    }

    /// Ends the display without a word: the caller reports.
    pub fn finish_silently(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Ends the display and returns the exit code: 0 when nothing failed, the failure's
    /// own code when `single` (one file was asked for), else 1 (5 when the connection
    /// was lost). Without JSON, failures are listed on stderr with a summary line.
    pub fn finish(&self, single: bool) -> i32 {
        let elapsed = process_start().elapsed();
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
            report_failures(&t.failures);
            let summary = self.summary.get();
            if summary && failed > 0 && !single {
                eprintln!(
                    "sftpipe: {} of {} files failed",
                    thousands(failed),
                    thousands(t.files_ok + failed)
                );
            } else if summary && failed == 0 && (self.bar.is_some() || self.lines) {
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

/// How many distinct failures are listed on stderr one by one; `-v` logs the rest.
const MAX_LISTED: usize = 20;

/// Lists failures on stderr: each with its own cause on its own line (the first
/// [`MAX_LISTED`], then a count), and those of a lost connection, which fails every file
/// still to go the same way, as one line: their count and the cause. `-v` logs every name.
fn report_failures(failures: &[(String, Error)]) {
    let (lost, other): (Vec<_>, Vec<_>) =
        failures.iter().partition(|(_, e)| exit::is_connection(e));
    for (i, (path, e)) in other.iter().enumerate() {
        if i < MAX_LISTED {
            exit::report(format_args!("{path}: {e}"));
        } else {
            log::info!("{path}: {e}");
        }
    }
    if other.len() > MAX_LISTED {
        let more = (other.len() - MAX_LISTED) as u64;
        exit::report(format_args!(
            "... and {} more failure{} (-v lists them)",
            thousands(more),
            if more == 1 { "" } else { "s" }
        ));
    }
    match lost.as_slice() {
        [] => {}
        [(path, e)] => exit::report(format_args!("{path}: {e}")),
        _ => {
            for (path, _) in &lost {
                log::info!("{path}: not transferred (connection lost)");
            }
            // The connection's own error carries ssh's last words.
            let cause = (lost.iter().map(|(_, e)| e))
                .find(|e| e.is_connection())
                .unwrap_or(&lost[0].1);
            exit::report(format_args!(
                "{} files not transferred: {cause}",
                thousands(lost.len() as u64)
            ));
        }
    }
}

/// A size in binary units, as the bar shows them: `512 B`, `12.3 KiB`, `4.0 GiB`.
pub fn binary_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn bytes_text(n: u64) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else {
        binary_size(n)
    }
}

/// The time since the process started (connecting included) and the average rate.
pub fn rate_text(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return format!("{secs:.1}s");
    }
    let rate = (bytes as f64 / secs) as u64;
    format!("{secs:.1}s ({}/s)", binary_size(rate))
}

/// The file name shown in the bar: the last component, cut to a readable width.
fn short_name(path: &Path) -> String {
    const SHOWN: usize = 30;
    let name = path
        .file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy();
    let name = printable(&name).into_owned();
    match name.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &name[..cut]),
        None => name,
    }
}

impl Progress for Tracker {
    fn add_total(&self, files: u64, bytes: u64) {
        self.tally.borrow_mut().files_total += files;
        self.live.borrow_mut().total += bytes;
        if let Some(bar) = &self.bar {
            bar.inc_length(bytes);
        }
        self.update_message();
    }

    fn transferred(&self, bytes: u64) {
        self.moved(None, bytes);
    }

    fn file_transferred(&self, local: &Path, bytes: u64) {
        self.moved(Some(local), bytes);
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
