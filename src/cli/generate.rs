//! `sftpipe generate ...` (hidden): shell completions and man pages from the clap
//! definitions, and the ssh config host names the completions offer for remote operands.
//!
//! Completions are clap_complete's static scripts (its dynamic engine is still unstable)
//! plus a small hook per shell that calls `sftpipe generate hosts` and offers `host:`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Subcommand, ValueEnum};
use clap_complete::Shell;
use sftpipe::Error;

use super::exit::{self, CliError, stdout_error};
use super::{Cli, GlobalArgs};

/// `generate` arguments.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to generate.
    #[command(subcommand)]
    pub what: Generate,
}

/// What `generate` writes.
#[derive(Debug, Subcommand)]
pub enum Generate {
    /// Print a completion script for SHELL on stdout
    Completions {
        /// bash, zsh or fish
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Write man pages (sftpipe.1, sftpipe-COMMAND.1) into DIR, created when missing
    Man {
        /// Output directory, e.g. ~/.local/share/man/man1
        dir: PathBuf,
    },
    /// Print the host names of the ssh configuration (-F, else ~/.ssh/config and
    /// /etc/ssh/ssh_config), one a line; the completion scripts call this
    Hosts,
}

/// The shells we write completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    /// GNU bash
    Bash,
    /// Z shell
    Zsh,
    /// fish
    Fish,
}

/// Runs `sftpipe generate ...`.
pub fn generate(global: &GlobalArgs, args: &GenerateArgs) -> Result<i32, CliError> {
    let mut out = std::io::stdout().lock();
    match &args.what {
        Generate::Completions { shell } => {
            out.write_all(completions(*shell).as_bytes())
                .map_err(stdout_error)?;
        }
        Generate::Man { dir } => man_pages(dir)?,
        Generate::Hosts => {
            for host in config_hosts(&config_files(global)) {
                writeln!(out, "{host}").map_err(stdout_error)?;
            }
        }
    }
    out.flush().map_err(stdout_error)?;
    Ok(exit::SUCCESS)
}

/// Writes `sftpipe.1` and one page per visible subcommand into `dir`.
fn man_pages(dir: &Path) -> Result<(), CliError> {
    let local = |e| Error::local(format!("cannot write man pages to {}", dir.display()), e);
    std::fs::create_dir_all(dir).map_err(local)?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let subs = cmd.get_subcommands().filter(|s| !s.is_hide_set());
    for page in std::iter::once(&cmd).chain(subs) {
        let man = clap_mangen::Man::new(page.clone());
        let path = dir.join(man.get_filename());
        let title = man.get_filename().trim_end_matches(".1").to_uppercase();
        let mut roff = Vec::new();
        man.title(title).render(&mut roff).map_err(local)?;
        let roff = verbatim_examples(&String::from_utf8_lossy(&roff));
        std::fs::write(&path, roff)
            .map_err(|e| Error::local(format!("cannot write {}", path.display()), e))?;
    }
    Ok(())
}

/// Fixes clap_mangen's roff: indented lines (examples, tables) are set unfilled so man
/// does not join or wrap them, the after-help section is called NOTES, and non-ASCII
/// characters become groff escapes (man in a C locale rejects raw UTF-8).
fn verbatim_examples(roff: &str) -> String {
    let mut out = String::with_capacity(roff.len());
    let mut unfilled = false;
    for line in roff.lines() {
        let indented = line.starts_with("  ");
        if indented != unfilled {
            out.push_str(if indented { ".nf\n" } else { ".fi\n" });
            unfilled = indented;
        }
        let line = if line == ".SH EXTRA" {
            ".SH NOTES"
        } else {
            line
        };
        for c in line.chars() {
            if c.is_ascii() {
                out.push(c);
            } else {
                out.push_str(&format!("\\[u{:04X}]", c as u32));
            }
        }
        out.push('\n');
    }
    if unfilled {
        out.push_str(".fi\n");
    }
    out
}

/// The subcommands whose operands may be remote (where completion offers `host:`).
fn remote_commands() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_positionals().next().is_some())
        .map(|c| c.get_name().to_string())
        .filter(|n| !["serve", "reprepro-hook"].contains(&n.as_str()))
        .collect()
}

/// The completion script for `shell`: clap_complete's, plus the host hook.
pub fn completions(shell: CompletionShell) -> String {
    let mut cmd = Cli::command();
    let target = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(target, &mut cmd, "sftpipe", &mut buf);
    let script = String::from_utf8_lossy(&buf).into_owned();
    let commands = remote_commands().join(" ");
    match shell {
        CompletionShell::Bash => script + &BASH_HOOK.replace("@COMMANDS@", &commands),
        CompletionShell::Zsh => zsh_with_hosts(&script),
        CompletionShell::Fish => script + &FISH_HOOK.replace("@COMMANDS@", &commands),
    }
}

/// Wraps clap's `_sftpipe` and adds `host:` (or `user@host:`) for operands after a
/// command that takes remote ones.
const BASH_HOOK: &str = r#"
# sftpipe: ssh config host names for remote operands (from `sftpipe generate hosts`).
_sftpipe_with_hosts() {
    _sftpipe "$@"
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} i w found=
    case $prev in -[FoiPlJSD]|--timeout) return 0 ;; esac
    case $cur in -*|*/*|*:*) return 0 ;; esac
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        case " @COMMANDS@ " in *" $w "*) found=1; break ;; esac
    done
    [[ -n $found ]] || return 0
    local user= h
    [[ $cur == *@* ]] && user=${cur%%@*}@
    while IFS= read -r h; do
        [[ $user$h == "$cur"* ]] && COMPREPLY+=("$user$h:")
    done < <("${COMP_WORDS[0]}" generate hosts 2>/dev/null)
    [[ ${COMPREPLY[*]} == *: ]] && compopt -o nospace 2>/dev/null
    return 0
}
complete -F _sftpipe_with_hosts -o nosort -o bashdefault -o default sftpipe
"#;

/// fish completes files for operands by itself; this adds `host:` after the commands.
const FISH_HOOK: &str = r#"
# sftpipe: ssh config host names for remote operands (from `sftpipe generate hosts`).
complete -c sftpipe -n "__fish_seen_subcommand_from @COMMANDS@" -a "(sftpipe generate hosts 2>/dev/null | string replace -r '\$' ':')" -d 'ssh host'
"#;

/// Completes operands with files or `host:`.
const ZSH_HOOK: &str = r#"
# sftpipe: operands are local files or ssh config hosts (from `sftpipe generate hosts`).
(( $+functions[_sftpipe_operand] )) ||
_sftpipe_operand() {
    local -a hosts
    hosts=(${(f)"$(sftpipe generate hosts 2>/dev/null)"})
    _alternative 'files:file:_files' "hosts:host:compadd -S : -a hosts"
}
"#;

/// clap's zsh script with its operands (`':name -- help:_default'` lines) completed by
/// `_sftpipe_operand`, defined before the script's last lines run `_sftpipe`.
fn zsh_with_hosts(script: &str) -> String {
    let mut out = String::with_capacity(script.len() + ZSH_HOOK.len());
    for line in script.lines() {
        let t = line.trim_start();
        let operand = t.starts_with("':") || t.starts_with("'*:");
        match line.strip_suffix(":_default' \\") {
            Some(head) if operand => out.push_str(&format!("{head}:_sftpipe_operand' \\")),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    match out.rfind("\nif [ \"$funcstack[1]\" = \"_sftpipe\" ]") {
        Some(i) => out.insert_str(i + 1, ZSH_HOOK.trim_start()),
        None => out.push_str(ZSH_HOOK),
    }
    out
}

/// The ssh configuration files to read: `-F` alone (as ssh does), else the user's and the
/// system's.
fn config_files(global: &GlobalArgs) -> Vec<PathBuf> {
    if let Some(f) = &global.ssh.config_file {
        return vec![f.clone()];
    }
    let mut files = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        files.push(Path::new(&home).join(".ssh/config"));
    }
    files.push(PathBuf::from("/etc/ssh/ssh_config"));
    files
}

/// The literal host names (no `*`, `?` or `!` patterns) of `Host` lines in `files` and the
/// files they `Include`, sorted. Unreadable files are skipped: this feeds completion.
pub fn config_hosts(files: &[PathBuf]) -> BTreeSet<String> {
    let mut hosts = BTreeSet::new();
    for f in files {
        read_config(f, &mut hosts, 0);
    }
    hosts
}

fn read_config(file: &Path, hosts: &mut BTreeSet<String>, depth: u32) {
    // ssh itself stops at 16 levels of Include; this also ends Include loops.
    if depth > 16 {
        return;
    }
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    for line in text.lines() {
        let line = line.trim();
        let (key, rest) = line
            .split_once(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or((line, ""));
        let words = rest
            .trim_start_matches(|c: char| c == '=' || c.is_whitespace())
            .split_whitespace()
            .map(|w| w.trim_matches('"'));
        if key.eq_ignore_ascii_case("host") {
            hosts.extend(
                words
                    .filter(|w| !w.is_empty() && !w.contains(['*', '?', '!']))
                    .map(str::to_string),
            );
        } else if key.eq_ignore_ascii_case("include") {
            for pattern in words {
                for f in include_files(file, pattern) {
                    read_config(&f, hosts, depth + 1);
                }
            }
        }
    }
}

/// The files an `Include PATTERN` in `from` names: `~/` is the home directory, a relative
/// path is relative to `~/.ssh` (user config) or `/etc/ssh` (system config), and a glob
/// in the last component is expanded.
fn include_files(from: &Path, pattern: &str) -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let path = match (pattern.strip_prefix("~/"), &home) {
        (Some(rest), Some(h)) => h.join(rest),
        _ if pattern.starts_with('/') => PathBuf::from(pattern),
        _ if from.starts_with("/etc/ssh") => Path::new("/etc/ssh").join(pattern),
        _ => match &home {
            Some(h) => h.join(".ssh").join(pattern),
            None => from.parent().unwrap_or(Path::new("/")).join(pattern),
        },
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let (Some(dir), Some(name)) = (path.parent(), name) else {
        return Vec::new();
    };
    if !name.contains(['*', '?', '[']) {
        return vec![path];
    }
    let Ok(glob) = globset::Glob::new(&name) else {
        return Vec::new();
    };
    let matcher = glob.compile_matcher();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| matcher.is_match(e.file_name()))
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_from_host_lines_and_includes_without_patterns() {
        let dir = tempfile::tempdir().unwrap();
        let conf_d = dir.path().join("conf.d");
        std::fs::create_dir(&conf_d).unwrap();
        std::fs::write(
            dir.path().join("config"),
            format!(
                "# comment\nHost alpha beta *.wild !neg\n  HostName 10.0.0.1\n\
                 host=gamma\nMatch host delta\nHost \"quoted\" ques?\nInclude {}/*.conf\n\
                 Include {}/missing\n",
                conf_d.display(),
                dir.path().display()
            ),
        )
        .unwrap();
        // An Include loop ends.
        let again = format!("Host included\nInclude {}/config\n", dir.path().display());
        std::fs::write(conf_d.join("a.conf"), again).unwrap();
        std::fs::write(conf_d.join("b.other"), "Host not-included\n").unwrap();
        let hosts = config_hosts(&[dir.path().join("config")]);
        let got: Vec<&str> = hosts.iter().map(String::as_str).collect();
        assert_eq!(got, ["alpha", "beta", "gamma", "included", "quoted"]);
    }

    #[test]
    fn zsh_operands_complete_hosts_and_the_hook_comes_before_the_call() {
        let script = completions(CompletionShell::Zsh);
        assert!(script.contains(":_sftpipe_operand' \\"), "{script}");
        let hook = script.find("_sftpipe_operand() {").unwrap();
        let call = script.rfind("_sftpipe \"$@\"").unwrap();
        assert!(hook < call);
    }
}
