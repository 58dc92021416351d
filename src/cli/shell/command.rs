//! The shell's commands: OpenSSH sftp's set with its flags, plus sftpipe's `mirror`,
//! `jobs`, `wait` and `kill`. [`parse`] turns a line into a [`Line`].

use super::words;

/// Flags of `get`/`put` (and `reget`/`reput`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XferFlags {
    /// `-a`: resume.
    pub resume: bool,
    /// `-f`: fsync each file.
    pub fsync: bool,
    /// `-p`/`-P`: keep times and modes.
    pub preserve: bool,
    /// `-r`/`-R`: directories recursively.
    pub recursive: bool,
}

/// Flags of `ls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LsFlags {
    /// `-l` (also implied by `-n`).
    pub long: bool,
    /// `-a`.
    pub all: bool,
    /// `-1`.
    pub one: bool,
    /// `-h`.
    pub human: bool,
    /// `-r`.
    pub reverse: bool,
    /// `-S`.
    pub by_size: bool,
    /// `-t`.
    pub by_time: bool,
    /// `-f`: unsorted.
    pub unsorted: bool,
}

/// One command. Operands are words in glob form (see [`words`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A blank line or a comment.
    Empty,
    /// `ls [-1afhlnrSt] [path]`.
    Ls(LsFlags, Option<String>),
    /// `cd [path]` (none: the login directory).
    Cd(Option<String>),
    /// `lcd [path]` (none: `$HOME`).
    Lcd(Option<String>),
    /// `pwd`.
    Pwd,
    /// `lpwd`.
    Lpwd,
    /// `lls [ls-options [path]]`: the local `ls`.
    Lls(Vec<String>),
    /// `lmkdir path`.
    Lmkdir(String),
    /// `get`/`reget`: source, optional destination.
    Get(XferFlags, String, Option<String>),
    /// `put`/`reput`: source, optional destination.
    Put(XferFlags, String, Option<String>),
    /// `mkdir path`.
    Mkdir(String),
    /// `rmdir path`.
    Rmdir(String),
    /// `rm path`.
    Rm(String),
    /// `rename old new`.
    Rename(String, String),
    /// `ln [-s] old new`: `true` for a symbolic link.
    Ln(bool, String, String),
    /// `chmod mode path`.
    Chmod(u32, String),
    /// `chown uid path`.
    Chown(u32, String),
    /// `chgrp gid path`.
    Chgrp(u32, String),
    /// `df [-hi] [path]`.
    Df {
        /// `-h`.
        human: bool,
        /// `-i`.
        inodes: bool,
        /// The path (default: the cwd).
        path: Option<String>,
    },
    /// `!cmd` (empty: an interactive shell).
    Local(String),
    /// `help` / `?`.
    Help,
    /// `version`.
    Version,
    /// `progress`: toggles the progress display.
    Progress,
    /// `bye`, `exit`, `quit`.
    Quit,
    /// `mirror [options] SRC DEST`: the CLI command's arguments, as words.
    Mirror(Vec<String>),
    /// `jobs`.
    Jobs,
    /// `wait [N]`.
    Wait(Option<usize>),
    /// `kill N`.
    Kill(usize),
}

/// A parsed line: the command and its batch-file prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The command.
    pub command: Command,
    /// Leading `-`: a failure does not stop the batch.
    pub ignore_errors: bool,
    /// Leading `@`: no `sftp>` echo in batch mode.
    pub no_echo: bool,
    /// Trailing `&`: run in the background.
    pub background: bool,
}

/// Command names, for `help` and completion.
pub const NAMES: &[&str] = &[
    "bye", "cd", "chgrp", "chmod", "chown", "df", "exit", "get", "help", "jobs", "kill", "lcd",
    "lls", "lmkdir", "ln", "lpwd", "ls", "mirror", "mkdir", "progress", "put", "pwd", "quit",
    "reget", "rename", "reput", "rm", "rmdir", "symlink", "version", "wait",
];

/// Parses a line (`-`/`@` prefixes, `!`, `&` suffix, then the command's words).
pub fn parse(line: &str) -> Result<Line, String> {
    let mut rest = line.trim_start();
    let mut l = Line {
        command: Command::Empty,
        ignore_errors: false,
        no_echo: false,
        background: false,
    };
    // sftp takes one of them, in either order: accept both.
    loop {
        if let Some(r) = rest.strip_prefix('-') {
            l.ignore_errors = true;
            rest = r.trim_start();
        } else if let Some(r) = rest.strip_prefix('@') {
            l.no_echo = true;
            rest = r.trim_start();
        } else {
            break;
        }
    }
    if let Some(cmd) = rest.strip_prefix('!') {
        l.command = Command::Local(cmd.trim().to_string());
        return Ok(l);
    }
    if rest.starts_with('#') {
        return Ok(l);
    }
    let mut ws = words::split(rest)?;
    if ws.last().is_some_and(|w| w == "&") {
        ws.pop();
        l.background = true;
    } else if let Some(w) = ws.last_mut().filter(|w| w.len() > 1 && w.ends_with('&')) {
        w.pop();
        l.background = true;
    }
    let Some(name) = ws.first().cloned() else {
        return Ok(l);
    };
    l.command = command(&name, &ws[1..])?;
    Ok(l)
}

/// Splits leading `-xyz` flags (getopt style, up to `--`) from operands, checking each
/// letter is in `allowed`.
fn flags<'a>(
    cmd: &str,
    args: &'a [String],
    allowed: &str,
) -> Result<(String, &'a [String]), String> {
    let mut letters = String::new();
    let mut i = 0;
    while let Some(a) = args.get(i) {
        if a == "--" {
            i += 1;
            break;
        }
        let Some(f) = a.strip_prefix('-').filter(|f| !f.is_empty()) else {
            break;
        };
        for c in f.chars() {
            if !allowed.contains(c) {
                return Err(format!("{cmd}: Invalid flag -{c}"));
            }
            letters.push(c);
        }
        i += 1;
    }
    Ok((letters, &args[i..]))
}

/// Exactly `n` operands (`optional` more allowed).
fn operands(cmd: &str, args: &[String], n: usize, optional: usize) -> Result<Vec<String>, String> {
    if args.len() < n {
        return Err(format!("You must specify {} for {cmd}", what(n)));
    }
    if args.len() > n + optional {
        return Err(format!("{cmd}: Too many arguments."));
    }
    Ok(args.to_vec())
}

fn what(n: usize) -> &'static str {
    if n > 1 { "two paths" } else { "a path" }
}

fn number(cmd: &str, word: &str, radix: u32, max: u32) -> Result<u32, String> {
    match u32::from_str_radix(&words::unescape(word), radix) {
        Ok(v) if v <= max => Ok(v),
        _ => Err(format!(
            "{cmd}: bad {} '{word}'",
            if radix == 8 { "mode" } else { "id" }
        )),
    }
}

fn command(name: &str, args: &[String]) -> Result<Command, String> {
    use Command as C;
    let opt = |v: &mut Vec<String>| v.pop();
    Ok(match name {
        "ls" | "dir" => {
            let (f, rest) = flags(name, args, "1afhlnrSt")?;
            let mut ops = operands(name, rest, 0, 1)?;
            let ls = LsFlags {
                long: f.contains('l') || f.contains('n'),
                all: f.contains('a'),
                one: f.contains('1'),
                human: f.contains('h'),
                reverse: f.contains('r'),
                by_size: f.contains('S'),
                by_time: f.contains('t'),
                unsorted: f.contains('f'),
            };
            C::Ls(ls, opt(&mut ops))
        }
        "cd" | "chdir" => C::Cd(opt(&mut operands(name, args, 0, 1)?)),
        "lcd" | "lchdir" => C::Lcd(opt(&mut operands(name, args, 0, 1)?)),
        "pwd" => {
            operands(name, args, 0, 0)?;
            C::Pwd
        }
        "lpwd" => {
            operands(name, args, 0, 0)?;
            C::Lpwd
        }
        "lls" | "ldir" => C::Lls(args.iter().map(|w| words::unescape(w)).collect()),
        "lmkdir" => C::Lmkdir(operands(name, args, 1, 0)?.remove(0)),
        "get" | "reget" | "put" | "reput" => {
            let (f, rest) = flags(name, args, "afpPrR")?;
            let mut ops = operands(name, rest, 1, 1)?;
            let xf = XferFlags {
                resume: f.contains('a') || name.starts_with("re"),
                fsync: f.contains('f'),
                preserve: f.contains('p') || f.contains('P'),
                recursive: f.contains('r') || f.contains('R'),
            };
            let dst = if ops.len() > 1 { ops.pop() } else { None };
            let src = ops.remove(0);
            if name.ends_with("get") {
                C::Get(xf, src, dst)
            } else {
                C::Put(xf, src, dst)
            }
        }
        "mkdir" => C::Mkdir(operands(name, args, 1, 0)?.remove(0)),
        "rmdir" => C::Rmdir(operands(name, args, 1, 0)?.remove(0)),
        "rm" | "del" => C::Rm(operands(name, args, 1, 0)?.remove(0)),
        "rename" => {
            let (_, rest) = flags(name, args, "l")?;
            let mut o = operands(name, rest, 2, 0)?;
            let new = o.remove(1);
            C::Rename(o.remove(0), new)
        }
        "ln" | "symlink" => {
            let (f, rest) = flags(name, args, "s")?;
            let mut o = operands(name, rest, 2, 0)?;
            let new = o.remove(1);
            C::Ln(name == "symlink" || f.contains('s'), o.remove(0), new)
        }
        "chmod" | "chown" | "chgrp" => {
            let (_, rest) = flags(name, args, "h")?;
            if rest.len() < 2 {
                return Err(format!(
                    "You must specify a {} and a path for {name}",
                    if name == "chmod" { "mode" } else { "id" }
                ));
            }
            let [value, path] = <[String; 2]>::try_from(operands(name, rest, 2, 0)?)
                .map_err(|_| format!("{name}: Too many arguments."))?;
            match name {
                "chmod" => C::Chmod(number(name, &value, 8, 0o7777)?, path),
                "chown" => C::Chown(number(name, &value, 10, u32::MAX)?, path),
                _ => C::Chgrp(number(name, &value, 10, u32::MAX)?, path),
            }
        }
        "df" => {
            let (f, rest) = flags(name, args, "hi")?;
            let path = opt(&mut operands(name, rest, 0, 1)?);
            C::Df {
                human: f.contains('h'),
                inodes: f.contains('i'),
                path,
            }
        }
        "help" | "?" => C::Help,
        "version" => C::Version,
        "progress" => C::Progress,
        "bye" | "exit" | "quit" => C::Quit,
        "mirror" => C::Mirror(args.iter().map(|w| words::unescape(w)).collect()),
        "jobs" => C::Jobs,
        "wait" => match operands(name, args, 0, 1)?.pop() {
            Some(n) => C::Wait(Some(job_number(name, &n)?)),
            None => C::Wait(None),
        },
        "kill" => C::Kill(job_number(name, &operands(name, args, 1, 0)?[0])?),
        _ => return Err(format!("Invalid command \"{name}\".")),
    })
}

fn job_number(cmd: &str, w: &str) -> Result<usize, String> {
    let w = words::unescape(w);
    w.trim_start_matches('%')
        .parse()
        .map_err(|_| format!("{cmd}: '{w}' is no job number (see jobs)"))
}

/// The text `help` prints.
pub const HELP: &str = "\
Available commands:
bye                                Quit sftp
cd path                            Change remote directory to 'path'
chgrp [-h] grp path                Change group of file 'path' to 'grp'
chmod [-h] mode path               Change permissions of file 'path' to 'mode'
chown [-h] own path                Change owner of file 'path' to 'own'
df [-hi] [path]                    Display statistics for current directory or
                                   filesystem containing 'path'
exit                               Quit sftp
get [-afpR] remote [local]         Download file
help                               Display this help text
lcd path                           Change local directory to 'path'
lls [ls-options [path]]            Display local directory listing
lmkdir path                        Create local directory
ln [-s] oldpath newpath            Link remote file (-s for symlink)
lpwd                               Print local working directory
ls [-1afhlnrSt] [path]             Display remote directory listing
mkdir path                         Create remote directory
progress                           Toggle display of progress meter
put [-afpR] local [remote]         Upload file
pwd                                Display remote working directory
quit                               Quit sftp
reget [-fpR] remote [local]        Resume download file
rename oldpath newpath             Rename remote file
reput [-fpR] local [remote]        Resume upload file
rm path                            Delete remote file
rmdir path                         Remove remote directory
symlink oldpath newpath            Symlink remote file
version                            Show SFTP version
!command                           Execute 'command' in local shell
!                                  Escape to local shell
?                                  Synonym for help
sftpipe's own:
mirror [options] src dest          Make dest a copy of src (one side remote;
                                   options as `sftpipe mirror`)
COMMAND &                          Run a transfer in the background
jobs                               List background transfers
wait [N]                           Wait for background transfers (or job N)
kill N                             Cancel background job N
";

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        parse(line).unwrap().command
    }

    #[test]
    fn prefixes_and_background() {
        let l = parse("-rm x").unwrap();
        assert!(l.ignore_errors && !l.no_echo);
        let l = parse("@put a").unwrap();
        assert!(l.no_echo && !l.ignore_errors);
        let l = parse("-@ get a &").unwrap();
        assert!(l.no_echo && l.ignore_errors && l.background);
        assert!(parse("get a&").unwrap().background);
        assert_eq!(cmd(""), Command::Empty);
        assert_eq!(cmd("# note"), Command::Empty);
        assert_eq!(cmd("!ls -l"), Command::Local("ls -l".into()));
    }

    #[test]
    fn transfers() {
        let all = XferFlags {
            resume: true,
            fsync: true,
            preserve: true,
            recursive: true,
        };
        assert_eq!(
            cmd("get -afpR a b"),
            Command::Get(all, "a".into(), Some("b".into()))
        );
        assert_eq!(
            cmd("put -a -f -P -r a"),
            Command::Put(all, "a".into(), None)
        );
        let resume = XferFlags {
            resume: true,
            ..XferFlags::default()
        };
        assert_eq!(cmd("reput x"), Command::Put(resume, "x".into(), None));
        assert!(parse("get").is_err());
        assert!(parse("get -z a").is_err());
        assert!(parse("put a b c").is_err());
        assert_eq!(
            cmd("get -- -a"),
            Command::Get(XferFlags::default(), "-a".into(), None)
        );
    }

    #[test]
    fn others() {
        let ls = cmd("ls -la /x");
        assert!(matches!(ls, Command::Ls(f, Some(ref p)) if f.long && f.all && p == "/x"));
        assert_eq!(cmd("chmod 0644 f"), Command::Chmod(0o644, "f".into()));
        assert!(parse("chmod 9 f").is_err());
        assert_eq!(cmd("chown 1000 f"), Command::Chown(1000, "f".into()));
        assert_eq!(cmd("ln -s a b"), Command::Ln(true, "a".into(), "b".into()));
        assert_eq!(cmd("ln a b"), Command::Ln(false, "a".into(), "b".into()));
        assert_eq!(
            cmd("df -h"),
            Command::Df {
                human: true,
                inodes: false,
                path: None
            }
        );
        assert_eq!(cmd("cd"), Command::Cd(None));
        assert_eq!(cmd("kill %2"), Command::Kill(2));
        assert_eq!(cmd("quit"), Command::Quit);
        assert!(parse("frobnicate").is_err());
        assert!(parse("pwd x").is_err());
        assert_eq!(
            cmd("mirror --delete a 'b c'"),
            Command::Mirror(vec!["--delete".into(), "a".into(), "b c".into()])
        );
    }
}
