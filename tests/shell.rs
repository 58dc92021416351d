//! Shell integration: the completion scripts and man pages `sftpipe generate` writes (as
//! the README's install step runs it), the ssh config hosts the completions offer, and
//! help examples that stay copy-pasteable at any terminal width.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{sftpipe_bin, write_file};

fn sftpipe(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(sftpipe_bin())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run sftpipe");
    assert!(
        out.status.success(),
        "sftpipe {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

/// Runs `program args...` if `program` is installed (contrib/test.sh installs zsh and
/// fish); `None` when it is not.
fn run_shell(program: &str, args: &[&str], env: &[(&str, &str)]) -> Option<Output> {
    match Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
    {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("{program} not installed: skipping its checks");
            None
        }
        Err(e) => panic!("run {program}: {e}"),
    }
}

fn completions(shell: &str) -> String {
    let script = stdout(&sftpipe(&["generate", "completions", shell], &[]));
    assert!(script.len() > 1000, "{shell} script too short:\n{script}");
    for sub in ["mirror", "get", "put", "ls"] {
        assert!(script.contains(sub), "{shell} script lacks {sub}");
    }
    script
}

/// A HOME whose ~/.ssh/config names hosts web1 and web2 (one through an Include).
fn home_with_hosts(dir: &Path) {
    write_file(
        dir.join(".ssh/config"),
        "Host web1 *.example.org\n  Port 2222\nInclude conf.d/*\n",
    );
    write_file(dir.join(".ssh/conf.d/extra"), "Host web2 !web3\n");
}

#[test]
fn bash_completion_is_valid_and_offers_ssh_config_hosts_for_operands() {
    let dir = tempfile::tempdir().unwrap();
    let script = completions("bash");
    assert!(script.contains("complete -F _sftpipe_with_hosts"));
    let file = dir.path().join("sftpipe.bash");
    fs::write(&file, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(check.status.success(), "{check:?}");

    let home = dir.path().join("home");
    home_with_hosts(&home);
    let bin = sftpipe_bin().display().to_string();
    // Completes the last word of `words` as bash would, printing one candidate a line.
    let complete = |words: &str| {
        let probe = format!(
            "source {}; COMP_WORDS=({bin} {words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _sftpipe_with_hosts; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        let out = Command::new("bash")
            .args(["-c", &probe])
            .env("HOME", &home)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        stdout(&out)
    };
    let got = complete("get we");
    assert!(got.lines().any(|l| l == "web1:"), "{got}");
    assert!(got.lines().any(|l| l == "web2:"), "{got}");
    assert!(
        !got.contains("example.org") && !got.contains("web3"),
        "{got}"
    );
    assert!(complete("mirror ./src bob@web").contains("bob@web1:"));
    // Not for option values, paths, or before the command.
    assert!(!complete("-F we").contains("web1:"));
    assert!(!complete("get ./we").contains("web1:"));
    assert!(!complete("we").contains("web1:"));
}

#[test]
fn zsh_completion_is_valid_and_completes_operands_with_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let script = completions("zsh");
    assert!(script.starts_with("#compdef sftpipe"));
    assert!(script.contains("_sftpipe_operand"));
    let file = dir.path().join("_sftpipe");
    fs::write(&file, &script).unwrap();
    let file = file.display().to_string();
    let Some(out) = run_shell("zsh", &["-n", &file], &[]) else {
        return;
    };
    assert!(out.status.success(), "{out:?}");
    // The operand completer's host list, with compsys stubbed out (it needs a terminal).
    let home = dir.path().join("home");
    home_with_hosts(&home);
    let probe = format!(
        "compdef() {{ :; }}; source {file}; \
         _alternative() {{ print -r -- \"$@\"; print -rl -- $hosts; }}; _sftpipe_operand"
    );
    let home = home.display().to_string();
    let path = bin_first_path();
    let env = [("HOME", home.as_str()), ("PATH", path.as_str())];
    let out = run_shell("zsh", &["-f", "-c", &probe], &env).unwrap();
    let got = stdout(&out);
    assert!(got.contains("hosts:host:compadd -S : -a hosts"), "{got}");
    assert!(
        got.lines().any(|l| l == "web1") && got.lines().any(|l| l == "web2"),
        "{got}"
    );
}

/// PATH with the sftpipe under test first (the scripts run `sftpipe generate hosts`).
fn bin_first_path() -> String {
    format!(
        "{}:{}",
        sftpipe_bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn fish_completion_is_valid_and_offers_ssh_config_hosts_for_operands() {
    let dir = tempfile::tempdir().unwrap();
    let script = completions("fish");
    assert!(script.contains("complete -c sftpipe"));
    let file = dir.path().join("sftpipe.fish");
    fs::write(&file, &script).unwrap();
    let file = file.display().to_string();
    let Some(out) = run_shell("fish", &["--no-execute", &file], &[]) else {
        return;
    };
    assert!(out.status.success(), "{out:?}");
    let home = dir.path().join("home");
    home_with_hosts(&home);
    let path = bin_first_path();
    let probe = format!("source {file}; complete -C 'sftpipe get we'");
    let home = home.display().to_string();
    let env = [("HOME", home.as_str()), ("PATH", path.as_str())];
    let out = run_shell("fish", &["--no-config", "-c", &probe], &env).unwrap();
    let got = stdout(&out);
    assert!(got.lines().any(|l| l.starts_with("web1:\t")), "{got}");
    assert!(got.lines().any(|l| l.starts_with("web2:\t")), "{got}");
}

#[test]
fn hosts_follow_includes_skip_patterns_and_honour_dash_f() {
    let dir = tempfile::tempdir().unwrap();
    home_with_hosts(dir.path());
    let home = dir.path().display().to_string();
    let got = stdout(&sftpipe(&["generate", "hosts"], &[("HOME", &home)]));
    let got: Vec<&str> = got.lines().collect();
    assert!(got.contains(&"web1") && got.contains(&"web2"), "{got:?}");
    assert!(got.iter().all(|h| !h.contains(['*', '?', '!'])), "{got:?}");
    // -F replaces both ~/.ssh/config and /etc/ssh/ssh_config, as for ssh.
    let cfg = dir.path().join("other");
    write_file(&cfg, "Host only\n");
    let cfg = cfg.display().to_string();
    let out = sftpipe(&["-F", &cfg, "generate", "hosts"], &[("HOME", &home)]);
    assert_eq!(stdout(&out), "only\n");
}

#[test]
fn man_pages_are_generated_for_each_command_and_render() {
    let dir = tempfile::tempdir().unwrap();
    let man1 = dir.path().join("share/man/man1");
    sftpipe(&["generate", "man", &man1.display().to_string()], &[]);
    let page = fs::read_to_string(man1.join("sftpipe.1")).unwrap();
    assert!(page.contains(".TH SFTPIPE 1"), "{page}");
    for sub in ["mirror", "get", "put", "ls", "rm", "serve"] {
        assert!(page.contains(sub), "sftpipe.1 lacks {sub}");
        let sub_page = fs::read_to_string(man1.join(format!("sftpipe-{sub}.1"))).unwrap();
        assert!(sub_page.contains(&format!(".TH SFTPIPE-{}", sub.to_uppercase())));
    }
    assert!(!man1.join("sftpipe-generate.1").exists(), "hidden command");
    // Every page renders without warnings, and examples are not filled into prose.
    for entry in fs::read_dir(&man1).unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new("groff")
            .args(["-man", "-Tascii", "-ww", "-rLL=78n"])
            .arg(&path)
            .env("LC_ALL", "C")
            .output();
        let Ok(out) = out else {
            eprintln!("groff not installed: skipping rendering");
            return;
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "{path:?}: {stderr}"
        );
        if path.ends_with("sftpipe-mirror.1") {
            let text = String::from_utf8_lossy(&out.stdout).replace("\x08", "");
            let example = "sftpipe mirror -n --delete host:backup ./restore";
            assert!(text.lines().any(|l| l.trim() == example), "{text}");
        }
    }
}

/// The example command lines (`  sftpipe ...`, with `\` continuation lines) of a help text.
fn example_lines(help: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut continued = false;
    for line in help.lines() {
        if continued || line.starts_with("  sftpipe ") {
            lines.push(line.to_string());
            continued = line.ends_with('\\');
        }
    }
    lines
}

#[test]
fn help_examples_are_whole_command_lines_at_80_columns() {
    let help = |args: &[&str], cols: &str| stdout(&sftpipe(args, &[("COLUMNS", cols)]));
    let top = help(&["--help"], "10000");
    let commands: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.contains(&"mirror"), "{top}");
    let mut checked = 0;
    for sub in std::iter::once(None).chain(commands.into_iter().map(Some)) {
        // Not -h: it is a command's option where one takes it (ls -h, df -h).
        for prefix in [None, Some("help")] {
            let args: Vec<&str> = match (prefix, sub) {
                (Some(help), Some(sub)) => vec![help, sub],
                (None, Some(sub)) => vec![sub, "--help"],
                (_, None) => vec!["--help"],
            };
            let wide = help(&args, "10000");
            let narrow = help(&args, "80");
            let examples = example_lines(&wide);
            if let Some(last) = examples.last() {
                assert!(!last.ends_with('\\'), "{args:?}: dangling continuation");
            }
            for line in examples {
                assert!(
                    line.len() <= 80,
                    "{args:?}: example longer than 80 columns: {line}"
                );
                assert!(
                    narrow.lines().any(|l| l == line),
                    "{args:?}: example line split at 80 columns: {line}\n{narrow}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10, "only {checked} example lines found");
}

#[test]
fn readme_install_steps_work() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains("cargo install --locked --path ."));
    // --locked needs Cargo.lock to match Cargo.toml.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let meta = Command::new(cargo)
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        meta.status.success(),
        "{}",
        String::from_utf8_lossy(&meta.stderr)
    );

    // Run each documented `sftpipe generate` line with a scratch HOME.
    let home = tempfile::tempdir().unwrap();
    let path = bin_first_path();
    let steps: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("sftpipe generate "))
        .map(|l| l.split(" #").next().unwrap_or(l).trim())
        .collect();
    assert_eq!(steps.len(), 4, "{steps:?}");
    for step in steps {
        let target = step.rsplit(' ').next().unwrap().replace('~', "$HOME");
        let script = format!(
            "set -e; t={target}; if [[ $t == *man1 ]]; then mkdir -p \"$t\"; \
             else mkdir -p \"$(dirname \"$t\")\"; fi; {}",
            step.replace('~', "$HOME")
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .env("HOME", home.path())
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{step}: {out:?}");
    }
    for file in [
        ".local/share/bash-completion/completions/sftpipe",
        ".zfunc/_sftpipe",
        ".config/fish/completions/sftpipe.fish",
        ".local/share/man/man1/sftpipe.1",
        ".local/share/man/man1/sftpipe-mirror.1",
    ] {
        let len = fs::metadata(home.path().join(file)).map(|m| m.len());
        assert!(matches!(len, Ok(n) if n > 1000), "{file}: {len:?}");
    }
}

#[test]
fn demo_says_it_is_building_and_shows_cargo_progress() {
    let dir = tempfile::tempdir().unwrap();
    // A stand-in cargo: records its arguments, prints progress as cargo does, then fails
    // so the demo stops before running anything.
    let args = dir.path().join("args");
    let fake = dir.path().join("cargo");
    common::write_script(
        &fake,
        &format!(
            "echo \"$@\" > {}\necho '   Compiling sftpipe v0.1.0' >&2\nexit 101",
            args.display()
        ),
    );
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/demo.sh"))
        .arg(dir.path().join("dest"))
        .env("CARGO", &fake)
        .env(
            "PATH",
            format!(
                "{}:{}",
                dir.path().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "{stderr}");
    let building = stderr.find("== building").expect("says it is building");
    let compiling = stderr
        .find("Compiling sftpipe")
        .expect("cargo's progress shown");
    assert!(building < compiling, "{stderr}");
    let args = fs::read_to_string(&args).unwrap();
    assert!(args.contains("build --release"), "{args}");
    assert!(!args.contains("-q"), "cargo is quiet: {args}");
}
