//! A program for `-S` that runs the real `ssh` and records every invocation (its pid and
//! arguments), so a test can find one channel's ssh (say, the second started) and kill it
//! once bytes moved, or see which invocations were ControlMaster clients.

use super::{process_alive, wait_until, write_script};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The real client the recorder runs.
pub const REAL_SSH: &str = "/usr/bin/ssh";

/// The recorder: a script plus the directory it records into.
pub struct SshRecorder {
    script: PathBuf,
    dir: PathBuf,
}

/// One recorded start of `ssh`.
#[derive(Debug, Clone)]
pub struct SshInvocation {
    /// The pid of the ssh process itself (the script `exec`s it).
    pub pid: u32,
    /// Its arguments, without the program name.
    pub args: Vec<String>,
}

impl SshRecorder {
    /// Writes the script into `dir` (a path without single quotes); it records into
    /// `dir/ssh-calls/`.
    pub fn new(dir: &Path) -> SshRecorder {
        let calls = dir.join("ssh-calls");
        fs::create_dir_all(&calls).unwrap_or_else(|e| panic!("mkdir {}: {e}", calls.display()));
        let script = dir.join("recording-ssh");
        // The arguments first, then the pid in `order` (appended: the start order), so a
        // pid listed there always has its arguments; `exec` keeps the pid the ssh's.
        write_script(
            &script,
            &format!(
                "d='{calls}'\nprintf '%s\\0' \"$@\" > \"$d/$$.args\"\n\
                 echo $$ >> \"$d/order\"\nexec {REAL_SSH} \"$@\"",
                calls = calls.display()
            ),
        );
        SshRecorder { script, dir: calls }
    }

    /// The program to pass to `-S`.
    pub fn program(&self) -> &Path {
        &self.script
    }

    /// Every invocation so far, in the order they started.
    pub fn invocations(&self) -> Vec<SshInvocation> {
        let order = fs::read_to_string(self.dir.join("order")).unwrap_or_default();
        order
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .map(|pid| {
                let raw = fs::read(self.dir.join(format!("{pid}.args"))).unwrap_or_default();
                let args = raw
                    .split(|&b| b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                SshInvocation { pid, args }
            })
            .collect()
    }

    /// Waits (at most a minute) until `n` invocations were recorded and returns them.
    pub fn wait_for(&self, n: usize) -> Vec<SshInvocation> {
        let mut seen = Vec::new();
        wait_until(
            &format!("{n} ssh invocations"),
            Duration::from_secs(60),
            || {
                seen = self.invocations();
                seen.len() >= n
            },
        );
        seen
    }
}

impl SshInvocation {
    /// The value of ssh option `name` (case-insensitive) as given with `-o Name=value`,
    /// `-oName=value` or `-o "Name value"`; the first one wins, as in ssh.
    pub fn option(&self, name: &str) -> Option<String> {
        let mut it = self.args.iter();
        while let Some(a) = it.next() {
            let spec = if a == "-o" {
                it.next().map(String::as_str)
            } else {
                a.strip_prefix("-o")
            };
            let Some(spec) = spec else { continue };
            let (key, value) = spec
                .split_once(['=', ' '])
                .map(|(k, v)| (k.trim(), v.trim()))
                .unwrap_or((spec, ""));
            if key.eq_ignore_ascii_case(name) {
                return Some(value.to_string());
            }
        }
        None
    }

    /// True when the arguments hold the flag `flag` (e.g. "-M", "-N") on its own.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.args.iter().any(|a| a == flag)
    }

    /// The control socket: `-S PATH` or `-o ControlPath=PATH`.
    pub fn control_path(&self) -> Option<String> {
        let s = self.args.iter().position(|a| a == "-S");
        s.and_then(|i| self.args.get(i + 1).cloned())
            .or_else(|| self.option("ControlPath"))
            .filter(|p| !p.eq_ignore_ascii_case("none"))
    }

    /// True for a master: `-M` or `ControlMaster` yes/auto/ask/autoask.
    pub fn is_master(&self) -> bool {
        self.has_flag("-M")
            || self
                .option("ControlMaster")
                .is_some_and(|v| !v.eq_ignore_ascii_case("no"))
    }

    /// True for a client of a master: a control path, and not a master itself.
    pub fn is_control_client(&self) -> bool {
        self.control_path().is_some() && !self.is_master()
    }

    /// True while the ssh process runs.
    pub fn alive(&self) -> bool {
        process_alive(self.pid)
    }
}
