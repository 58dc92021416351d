//! `outsftphook.conf` and where reprepro's directories are.
//!
//! The configuration file has the keys of reprepro's example `outsftphook.py`, one per
//! line, `key value` (as the Python hook reads it) or `key = value`; blank lines and
//! lines starting with `#` are ignored; an unknown key is an error (as in the Python
//! hook), so a typo does not silently publish somewhere else.
//!
//! | key | meaning |
//! |---|---|
//! | `servername` | host to connect to (an ssh destination or `~/.ssh/config` alias) |
//! | `username` | remote user (`ssh -l`) |
//! | `targetdir` | remote directory the out dir is copied to (empty: the login directory) |
//! | `verbose` | `yes`/`no`: print every completed step |
//! | `autoretry` | `yes`/`no`: process older pending `.outlog` files first |
//! | `debug` | a number; anything above 0 acts like `verbose` (`-vv` shows the SFTP traffic) |
//! | `ssh_config` | `ssh -F` file |
//! | `ssh_option` | `ssh -o` option, e.g. `ssh_option Compression=yes` (repeatable) |
//! | `identity` | `ssh -i` key file (repeatable) |
//! | `port` | `ssh -p` port |
//! | `jump` | `ssh -J` jump host(s) |
//! | `ssh_program` | the ssh program to run instead of `ssh` |
//! | `timeout` | seconds requests may wait with no answer before the run fails (default 60; 0: never) |
//! | `keepdirectories` | `yes`/`no`: keep remote pool directories a deletion left empty (as reprepro's `--keepdirectories`) |
//!
//! Truth values are `yes`, `on`, `1`, `true` or `no`, `off`, `0`, `false`.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::transport::ConnectOptions;

/// The contents of `outsftphook.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookConfig {
    /// `servername`.
    pub servername: Option<String>,
    /// `username`.
    pub username: Option<String>,
    /// `targetdir` (empty: the remote login directory).
    pub targetdir: String,
    /// `debug`.
    pub debug: u32,
    /// `verbose`.
    pub verbose: Option<bool>,
    /// `autoretry`.
    pub autoretry: Option<bool>,
    /// `keepdirectories`.
    pub keep_directories: Option<bool>,
    /// `ssh_config`.
    pub ssh_config: Option<PathBuf>,
    /// `ssh_option`, in order.
    pub ssh_options: Vec<String>,
    /// `identity`, in order.
    pub identities: Vec<PathBuf>,
    /// `port`.
    pub port: Option<u16>,
    /// `jump`.
    pub jump: Option<String>,
    /// `ssh_program`.
    pub ssh_program: Option<String>,
    /// `timeout`, in seconds (see [`ConnectOptions::timeout`]).
    pub timeout: Option<u64>,
}

/// Parses a truth value as the Python hook does.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "on" | "1" | "true" => Some(true),
        "no" | "off" | "0" | "false" => Some(false),
        _ => None,
    }
}

impl HookConfig {
    /// Reads `path`; a missing file is an empty configuration (as for the Python hook).
    pub fn read_optional(path: &Path) -> Result<HookConfig> {
        match fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| {
                    Error::InvalidInput(format!("{}: not valid UTF-8", path.display()))
                })?;
                HookConfig::parse(&text, path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HookConfig::default()),
            Err(e) => Err(Error::local(format!("cannot read {}", path.display()), e)),
        }
    }

    /// Parses the text of a configuration file; `file` is for messages.
    pub fn parse(text: &str, file: &Path) -> Result<HookConfig> {
        let mut c = HookConfig::default();
        for (i, line) in text.lines().enumerate() {
            let bad =
                |why: String| Error::InvalidInput(format!("{}:{}: {why}", file.display(), i + 1));
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let split = line
                .find(|ch: char| ch.is_whitespace() || ch == '=')
                .unwrap_or(line.len());
            let key = &line[..split];
            let rest = line[split..].trim_start();
            let value = rest.strip_prefix('=').unwrap_or(rest).trim();
            let need = |v: &str| -> Result<String> {
                if v.is_empty() {
                    Err(bad(format!("'{key}' needs a value")))
                } else {
                    Ok(v.to_string())
                }
            };
            let truth = |v: &str| {
                parse_bool(v).ok_or_else(|| bad(format!("'{key}': unparseable truth value '{v}'")))
            };
            match key {
                "servername" => c.servername = Some(need(value)?),
                "username" => c.username = Some(need(value)?),
                "targetdir" => c.targetdir = value.to_string(),
                "debug" => {
                    c.debug = value
                        .parse()
                        .map_err(|_| bad(format!("'debug': unparseable number '{value}'")))?
                }
                "verbose" => c.verbose = Some(truth(value)?),
                "autoretry" => c.autoretry = Some(truth(value)?),
                "keepdirectories" => c.keep_directories = Some(truth(value)?),
                "ssh_config" => c.ssh_config = Some(PathBuf::from(need(value)?)),
                "ssh_option" => c.ssh_options.push(need(value)?),
                "identity" => c.identities.push(PathBuf::from(need(value)?)),
                "port" => {
                    c.port = Some(
                        value
                            .parse::<u16>()
                            .ok()
                            .filter(|&p| p > 0)
                            .ok_or_else(|| bad(format!("'port': invalid port '{value}'")))?,
                    )
                }
                "jump" => c.jump = Some(need(value)?),
                "ssh_program" => c.ssh_program = Some(need(value)?),
                "timeout" => {
                    c.timeout = Some(
                        value
                            .parse::<u64>()
                            .map_err(|_| bad(format!("'timeout': invalid seconds '{value}'")))?,
                    )
                }
                _ => return Err(bad(format!("unknown option '{key}'"))),
            }
        }
        Ok(c)
    }
}

impl HookConfig {
    /// The connection to make: what the command line says (`cli`) wins over the
    /// configuration. ssh options from both are passed, the command line's first (ssh
    /// keeps the first value it sees); identities from the configuration are used only
    /// when the command line names none.
    pub fn connect_options(&self, cli: &ConnectOptions) -> ConnectOptions {
        let mut ssh_options = cli.ssh_options.clone();
        ssh_options.extend(self.ssh_options.iter().cloned());
        ConnectOptions {
            host: cli.host.clone().or_else(|| self.servername.clone()),
            user: cli.user.clone().or_else(|| self.username.clone()),
            port: cli.port.or(self.port),
            config_file: cli.config_file.clone().or_else(|| self.ssh_config.clone()),
            identities: if cli.identities.is_empty() {
                self.identities.clone()
            } else {
                cli.identities.clone()
            },
            ssh_options,
            jump: cli.jump.clone().or_else(|| self.jump.clone()),
            ssh_program: cli.ssh_program.clone().or_else(|| self.ssh_program.clone()),
            server_command: cli.server_command.clone(),
            prefetch: cli.prefetch.clone(),
            keep_cipher_order: cli.keep_cipher_order,
            timeout: cli
                .timeout
                .or_else(|| self.timeout.map(std::time::Duration::from_secs)),
            connections: cli.connections,
            eager_connections: cli.eager_connections,
            separate_connections: cli.separate_connections,
            transport: cli.transport,
        }
    }
}

/// Directories given on the command line (each overrides reprepro's environment).
#[derive(Debug, Clone, Default)]
pub struct DirOptions {
    /// `--basedir`.
    pub basedir: Option<PathBuf>,
    /// `--outdir`.
    pub outdir: Option<PathBuf>,
    /// `--logdir`.
    pub logdir: Option<PathBuf>,
    /// `--confdir`.
    pub confdir: Option<PathBuf>,
    /// `--distdir`.
    pub distdir: Option<PathBuf>,
}

/// Where reprepro keeps things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// The out dir: `pool/` and `dists/` are in it.
    pub outdir: PathBuf,
    /// Where the `.outlog` files are.
    pub logdir: PathBuf,
    /// `conf/`: `outsftphook.conf` is in it.
    pub confdir: PathBuf,
    /// The local `dists/` directory (for relative DISTFILE names).
    pub distdir: PathBuf,
}

/// True when reprepro called us: it sets these for every hook.
pub fn called_by_reprepro(env: &dyn Fn(&str) -> Option<OsString>) -> bool {
    [
        "REPREPRO_OUT_DIR",
        "REPREPRO_LOG_DIR",
        "REPREPRO_CONFIG_DIR",
        "REPREPRO_BASE_DIR",
        "REPREPRO_DIST_DIR",
    ]
    .iter()
    .any(|k| env(k).is_some_and(|v| !v.is_empty()))
}

impl Dirs {
    /// Resolves the directories: an option given wins; else reprepro's environment
    /// (`REPREPRO_OUT_DIR`, `REPREPRO_LOG_DIR`, `REPREPRO_CONFIG_DIR`,
    /// `REPREPRO_BASE_DIR`, `REPREPRO_DIST_DIR`); else, when not called by reprepro, the
    /// `outdir`/`logdir`/`distdir` lines of `conf/options`; else reprepro's defaults below
    /// the base directory (`--basedir`, else the current directory).
    pub fn resolve(o: &DirOptions, env: &dyn Fn(&str) -> Option<OsString>) -> Dirs {
        let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let basedir = o
            .basedir
            .clone()
            .or_else(|| var("REPREPRO_BASE_DIR"))
            .unwrap_or_else(|| PathBuf::from("."));
        let confdir = o
            .confdir
            .clone()
            .or_else(|| var("REPREPRO_CONFIG_DIR"))
            .or_else(|| var("REPREPRO_CONF_DIR"))
            .unwrap_or_else(|| basedir.join("conf"));
        let from_options = if called_by_reprepro(env) {
            OptionsFile::default()
        } else {
            OptionsFile::read(&confdir.join("options"))
        };
        let expand = |v: &str, outdir: Option<&Path>| -> PathBuf {
            if let Some(r) = v.strip_prefix("+b/") {
                basedir.join(r)
            } else if let Some(r) = v.strip_prefix("+c/") {
                confdir.join(r)
            } else if let (Some(r), Some(out)) = (v.strip_prefix("+o/"), outdir) {
                out.join(r)
            } else {
                PathBuf::from(v)
            }
        };
        let outdir = o
            .outdir
            .clone()
            .or_else(|| var("REPREPRO_OUT_DIR"))
            .or_else(|| from_options.outdir.as_deref().map(|v| expand(v, None)))
            .unwrap_or_else(|| basedir.clone());
        let logdir = o
            .logdir
            .clone()
            .or_else(|| var("REPREPRO_LOG_DIR"))
            .or_else(|| {
                from_options
                    .logdir
                    .as_deref()
                    .map(|v| expand(v, Some(&outdir)))
            })
            .unwrap_or_else(|| basedir.join("logs"));
        let distdir = o
            .distdir
            .clone()
            .or_else(|| var("REPREPRO_DIST_DIR"))
            .or_else(|| {
                from_options
                    .distdir
                    .as_deref()
                    .map(|v| expand(v, Some(&outdir)))
            })
            .unwrap_or_else(|| outdir.join("dists"));
        Dirs {
            outdir,
            logdir,
            confdir,
            distdir,
        }
    }
}

/// The directory settings of reprepro's `conf/options`.
#[derive(Debug, Default)]
struct OptionsFile {
    outdir: Option<String>,
    logdir: Option<String>,
    distdir: Option<String>,
}

impl OptionsFile {
    fn read(path: &Path) -> OptionsFile {
        let mut o = OptionsFile::default();
        let Ok(text) = fs::read_to_string(path) else {
            return o;
        };
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(k), Some(v)) = (words.next(), words.next()) else {
                continue;
            };
            let k = k.trim_start_matches("--");
            match k {
                "outdir" => o.outdir = Some(v.to_string()),
                "logdir" => o.logdir = Some(v.to_string()),
                "distdir" => o.distdir = Some(v.to_string()),
                _ => {}
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_style_and_equals_style() {
        let text = "# comment\n\nservername repo.example.org\nusername  uploader\n\
                    targetdir = /srv/www/debian\nverbose yes\nautoretry=off\ndebug 0\n\
                    ssh_option Compression=yes\nssh_option = ConnectTimeout=5\n\
                    identity /k1\nidentity /k2\nport 2222\nssh_config=/cfg\n\
                    keepdirectories true\njump gw\nssh_program /bin/ssh2\ntimeout 90\n";
        let c = HookConfig::parse(text, Path::new("x.conf")).unwrap();
        assert_eq!(c.servername.as_deref(), Some("repo.example.org"));
        assert_eq!(c.username.as_deref(), Some("uploader"));
        assert_eq!(c.targetdir, "/srv/www/debian");
        assert_eq!(c.verbose, Some(true));
        assert_eq!(c.autoretry, Some(false));
        assert_eq!(c.keep_directories, Some(true));
        assert_eq!(c.debug, 0);
        assert_eq!(c.ssh_options, ["Compression=yes", "ConnectTimeout=5"]);
        assert_eq!(c.identities, [PathBuf::from("/k1"), PathBuf::from("/k2")]);
        assert_eq!(c.port, Some(2222));
        assert_eq!(c.ssh_config.as_deref(), Some(Path::new("/cfg")));
        assert_eq!(c.jump.as_deref(), Some("gw"));
        assert_eq!(c.ssh_program.as_deref(), Some("/bin/ssh2"));
        assert_eq!(c.timeout, Some(90));
        // An empty targetdir is the login directory.
        assert_eq!(
            HookConfig::parse("targetdir\n", Path::new("x"))
                .unwrap()
                .targetdir,
            ""
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        for (text, want) in [
            (
                "servername h\nbogus 1\n",
                "x.conf:2: unknown option 'bogus'",
            ),
            (
                "verbose maybe\n",
                "x.conf:1: 'verbose': unparseable truth value 'maybe'",
            ),
            ("debug lots\n", "x.conf:1: 'debug'"),
            ("port 0\n", "x.conf:1: 'port'"),
            ("port 70000\n", "x.conf:1: 'port'"),
            ("servername\n", "x.conf:1: 'servername' needs a value"),
            ("timeout soon\n", "x.conf:1: 'timeout'"),
        ] {
            let e = HookConfig::parse(text, Path::new("x.conf")).unwrap_err();
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn command_line_wins_over_the_file() {
        let c = HookConfig::parse(
            "servername h\nusername u\nport 2222\nidentity /k\nssh_option A=1\nssh_config /f\n\
             timeout 9\n",
            Path::new("x"),
        )
        .unwrap();
        let o = c.connect_options(&ConnectOptions::default());
        assert_eq!(o.host.as_deref(), Some("h"));
        assert_eq!(o.user.as_deref(), Some("u"));
        assert_eq!(o.port, Some(2222));
        assert_eq!(o.identities, [PathBuf::from("/k")]);
        assert_eq!(o.config_file.as_deref(), Some(Path::new("/f")));
        assert_eq!(o.timeout, Some(std::time::Duration::from_secs(9)));
        let cli = ConnectOptions {
            user: Some("v".into()),
            port: Some(22),
            identities: vec!["/c".into()],
            ssh_options: vec!["A=2".into()],
            config_file: Some("/g".into()),
            timeout: Some(std::time::Duration::ZERO),
            ..Default::default()
        };
        let o = c.connect_options(&cli);
        assert_eq!(o.user.as_deref(), Some("v"));
        assert_eq!(o.port, Some(22));
        assert_eq!(o.identities, [PathBuf::from("/c")]);
        assert_eq!(o.ssh_options, ["A=2", "A=1"]);
        assert_eq!(o.config_file.as_deref(), Some(Path::new("/g")));
        assert_eq!(o.timeout, Some(std::time::Duration::ZERO));
    }

    #[test]
    fn missing_file_is_empty() {
        let c = HookConfig::read_optional(Path::new("/nonexistent/outsftphook.conf")).unwrap();
        assert_eq!(c, HookConfig::default());
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn reprepro_environment() {
        let env = env_of(&[
            ("REPREPRO_BASE_DIR", "repo"),
            ("REPREPRO_OUT_DIR", "/out"),
            ("REPREPRO_LOG_DIR", "repo/logs"),
            ("REPREPRO_CONFIG_DIR", "repo/conf"),
            ("REPREPRO_DIST_DIR", "/out/dists"),
        ]);
        let d = Dirs::resolve(&DirOptions::default(), &env);
        assert_eq!(
            d,
            Dirs {
                outdir: "/out".into(),
                logdir: "repo/logs".into(),
                confdir: "repo/conf".into(),
                distdir: "/out/dists".into(),
            }
        );
        // Options given explicitly still win.
        let o = DirOptions {
            logdir: Some("/l".into()),
            ..Default::default()
        };
        assert_eq!(Dirs::resolve(&o, &env).logdir, PathBuf::from("/l"));
    }

    #[test]
    fn options_and_defaults_without_environment() {
        let env = env_of(&[]);
        let o = DirOptions {
            basedir: Some("/b".into()),
            ..Default::default()
        };
        let d = Dirs::resolve(&o, &env);
        assert_eq!(d.outdir, PathBuf::from("/b"));
        assert_eq!(d.logdir, PathBuf::from("/b/logs"));
        assert_eq!(d.confdir, PathBuf::from("/b/conf"));
        assert_eq!(d.distdir, PathBuf::from("/b/dists"));

        // conf/options is honoured when reprepro did not call us.
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("conf")).unwrap();
        fs::write(
            t.path().join("conf/options"),
            "verbose\noutdir +b/public\nlogdir /var/log/repo\n",
        )
        .unwrap();
        let o = DirOptions {
            basedir: Some(t.path().to_path_buf()),
            ..Default::default()
        };
        let d = Dirs::resolve(&o, &env);
        assert_eq!(d.outdir, t.path().join("public"));
        assert_eq!(d.logdir, PathBuf::from("/var/log/repo"));
        assert_eq!(d.distdir, t.path().join("public/dists"));
    }
}
