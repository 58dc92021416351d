//! Parsing a command message into a typed [`Command`]; every problem is a "fail" answer.

use std::path::PathBuf;

use serde_json::{Map, Value};

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The client's `id` (any JSON value but `null`), echoed in the answer.
    pub id: Option<Value>,
    /// What to do.
    pub command: Command,
}

/// A message that is not a valid command: answered with status `fail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    /// The `id`, when the message was an object that had one.
    pub id: Option<Value>,
    /// What is wrong.
    pub message: String,
}

/// The commands. Remote paths are bytes (from JSON strings); local ones are paths.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Put {
        source: PathBuf,
        dest: Vec<u8>,
        recursive: bool,
        preserve: bool,
    },
    Get {
        source: Vec<u8>,
        dest: PathBuf,
        recursive: bool,
        preserve: bool,
    },
    Listdir {
        path: Vec<u8>,
    },
    Delete {
        path: Vec<u8>,
    },
    Stat {
        path: Vec<u8>,
    },
    Lstat {
        path: Vec<u8>,
    },
    Mkdir {
        path: Vec<u8>,
        parents: bool,
        mode: Option<u32>,
    },
    Rmdir {
        path: Vec<u8>,
    },
    Rename {
        source: Vec<u8>,
        dest: Vec<u8>,
    },
    Symlink {
        target: Vec<u8>,
        path: Vec<u8>,
    },
    Readlink {
        path: Vec<u8>,
    },
    Realpath {
        path: Vec<u8>,
    },
    Chmod {
        path: Vec<u8>,
        mode: u32,
    },
    Statvfs {
        path: Vec<u8>,
    },
    Mirror {
        source: PathBuf,
        dest: Vec<u8>,
        delete: bool,
        exclude: Vec<String>,
    },
}

/// The command names, as answered for an unknown one.
pub const COMMANDS: &str = "PUT, GET, LISTDIR, DELETE, STAT, LSTAT, MKDIR, RMDIR, RENAME, \
                            SYMLINK, READLINK, REALPATH, CHMOD, STATVFS, MIRROR";

impl Command {
    /// The command's name, upper case.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Put { .. } => "PUT",
            Command::Get { .. } => "GET",
            Command::Listdir { .. } => "LISTDIR",
            Command::Delete { .. } => "DELETE",
            Command::Stat { .. } => "STAT",
            Command::Lstat { .. } => "LSTAT",
            Command::Mkdir { .. } => "MKDIR",
            Command::Rmdir { .. } => "RMDIR",
            Command::Rename { .. } => "RENAME",
            Command::Symlink { .. } => "SYMLINK",
            Command::Readlink { .. } => "READLINK",
            Command::Realpath { .. } => "REALPATH",
            Command::Chmod { .. } => "CHMOD",
            Command::Statvfs { .. } => "STATVFS",
            Command::Mirror { .. } => "MIRROR",
        }
    }
}

/// Typed access to `args`, with messages naming the command and argument.
struct Args<'a> {
    command: &'a str,
    map: &'a Map<String, Value>,
}

impl Args<'_> {
    fn present(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<&str, String> {
        match self.present(key) {
            None => Err(format!("{}: missing argument '{key}'", self.command)),
            Some(Value::String(s)) if s.is_empty() => {
                Err(format!("{}: argument '{key}' is empty", self.command))
            }
            Some(Value::String(s)) if s.contains('\0') => Err(format!(
                "{}: argument '{key}' contains a NUL character",
                self.command
            )),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(format!(
                "{}: argument '{key}' must be a string",
                self.command
            )),
        }
    }

    fn remote(&self, key: &str) -> Result<Vec<u8>, String> {
        self.string(key).map(|s| s.as_bytes().to_vec())
    }

    fn local(&self, key: &str) -> Result<PathBuf, String> {
        self.string(key).map(PathBuf::from)
    }

    fn flag(&self, key: &str) -> Result<bool, String> {
        match self.present(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(format!(
                "{}: argument '{key}' must be true or false",
                self.command
            )),
        }
    }

    /// A mode: a number (type bits are ignored, so `st_mode` works) or an octal string.
    fn mode(&self, key: &str) -> Result<Option<u32>, String> {
        let bad = || {
            format!(
                "{}: argument '{key}' must be a mode: a number, or an octal string like \"644\"",
                self.command
            )
        };
        match self.present(key) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let m = n
                    .as_u64()
                    .filter(|&m| m <= u32::MAX as u64)
                    .ok_or_else(bad)?;
                Ok(Some(m as u32 & 0o7777))
            }
            Some(Value::String(s)) => {
                let digits = s.strip_prefix("0o").unwrap_or(s);
                if digits.is_empty() || digits.len() > 6 {
                    return Err(bad());
                }
                match u32::from_str_radix(digits, 8) {
                    Ok(m) if m <= 0o7777 => Ok(Some(m)),
                    _ => Err(bad()),
                }
            }
            Some(_) => Err(bad()),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        let bad = || {
            format!(
                "{}: argument '{key}' must be a list of strings",
                self.command
            )
        };
        match self.present(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
                .collect(),
            Some(_) => Err(bad()),
        }
    }
}

/// Parses one message body.
pub fn parse_request(body: &[u8]) -> Result<Request, BadRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|e| BadRequest {
        id: None,
        message: format!("invalid JSON: {e}"),
    })?;
    let Value::Object(obj) = value else {
        return Err(BadRequest {
            id: None,
            message: "a command must be a JSON object".into(),
        });
    };
    let id = obj.get("id").filter(|v| !v.is_null()).cloned();
    let fail = |message: String| BadRequest {
        id: id.clone(),
        message,
    };
    let name = match obj.get("command") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(fail("'command' must be a string".into())),
        None => return Err(fail("missing 'command'".into())),
    };
    let empty = Map::new();
    let map = match obj.get("args") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(fail("'args' must be an object".into())),
    };
    let upper = name.to_ascii_uppercase();
    let a = Args {
        command: &upper,
        map,
    };
    let command = parse_command(&upper, &a).map_err(|m| match m {
        None => fail(format!(
            "unknown command '{}' (known: {COMMANDS})",
            name.escape_default()
        )),
        Some(m) => fail(m),
    })?;
    Ok(Request { id, command })
}

/// `Err(None)`: unknown command; `Err(Some(_))`: a bad argument.
fn parse_command(name: &str, a: &Args) -> Result<Command, Option<String>> {
    Ok(match name {
        "PUT" => Command::Put {
            source: a.local("source")?,
            dest: a.remote("dest")?,
            recursive: a.flag("recursive")?,
            preserve: a.flag("preserve")?,
        },
        "GET" => Command::Get {
            source: a.remote("source")?,
            dest: a.local("dest")?,
            recursive: a.flag("recursive")?,
            preserve: a.flag("preserve")?,
        },
        "LISTDIR" => Command::Listdir {
            path: a.remote("path")?,
        },
        "DELETE" => Command::Delete {
            path: a.remote("path")?,
        },
        "STAT" => Command::Stat {
            path: a.remote("path")?,
        },
        "LSTAT" => Command::Lstat {
            path: a.remote("path")?,
        },
        "MKDIR" => Command::Mkdir {
            path: a.remote("path")?,
            parents: a.flag("parents")?,
            mode: a.mode("mode")?,
        },
        "RMDIR" => Command::Rmdir {
            path: a.remote("path")?,
        },
        "RENAME" => Command::Rename {
            source: a.remote("source")?,
            dest: a.remote("dest")?,
        },
        "SYMLINK" => Command::Symlink {
            target: a.remote("target")?,
            path: a.remote("path")?,
        },
        "READLINK" => Command::Readlink {
            path: a.remote("path")?,
        },
        "REALPATH" => Command::Realpath {
            path: a.remote("path")?,
        },
        "CHMOD" => Command::Chmod {
            path: a.remote("path")?,
            mode: a
                .mode("mode")?
                .ok_or_else(|| "CHMOD: missing argument 'mode'".to_string())?,
        },
        "STATVFS" => Command::Statvfs {
            path: a.remote("path")?,
        },
        "MIRROR" => {
            let exclude = a.strings("exclude")?;
            if let Err(e) = crate::mirror::PatternSet::new(&exclude) {
                return Err(Some(format!("MIRROR: bad exclude pattern: {e}")));
            }
            Command::Mirror {
                source: a.local("source")?,
                dest: a.remote("dest")?,
                delete: a.flag("delete")?,
                exclude,
            }
        }
        _ => return Err(None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Request, BadRequest> {
        parse_request(v.to_string().as_bytes())
    }

    #[test]
    fn parses_commands_case_insensitively() {
        let r = parse(json!({"command": "put", "args": {"source": "a", "dest": "/b"}, "id": 3}))
            .unwrap();
        assert_eq!(r.id, Some(json!(3)));
        assert_eq!(
            r.command,
            Command::Put {
                source: "a".into(),
                dest: b"/b".to_vec(),
                recursive: false,
                preserve: false
            }
        );
        let r = parse(json!({"command": "CHMOD", "args": {"path": "x", "mode": "0755"}})).unwrap();
        assert_eq!(r.id, None);
        assert_eq!(
            r.command,
            Command::Chmod {
                path: b"x".to_vec(),
                mode: 0o755
            }
        );
        let r =
            parse(json!({"command": "chmod", "args": {"path": "x", "mode": 0o100644}})).unwrap();
        assert!(matches!(r.command, Command::Chmod { mode: 0o644, .. }));
    }

    #[test]
    fn bad_requests_keep_the_id() {
        let e = parse(json!({"command": "NOPE", "id": "x"})).unwrap_err();
        assert_eq!(e.id, Some(json!("x")));
        assert!(e.message.contains("unknown command"), "{}", e.message);
        for (v, want) in [
            (
                json!({"command": "STAT", "args": {}}),
                "missing argument 'path'",
            ),
            (
                json!({"command": "STAT", "args": {"path": 1}}),
                "must be a string",
            ),
            (json!({"command": "STAT", "args": {"path": ""}}), "is empty"),
            (
                json!({"command": "STAT", "args": {"path": "a\u{0}b"}}),
                "NUL",
            ),
            (
                json!({"command": "STAT", "args": []}),
                "'args' must be an object",
            ),
            (json!({"command": 5}), "'command' must be a string"),
            (json!({"args": {}}), "missing 'command'"),
            (json!([1]), "must be a JSON object"),
            (
                json!({"command": "GET", "args": {"source": "a", "dest": "b", "recursive": 1}}),
                "true or false",
            ),
            (
                json!({"command": "CHMOD", "args": {"path": "a", "mode": "9"}}),
                "mode",
            ),
            (
                json!({"command": "CHMOD", "args": {"path": "a"}}),
                "missing argument 'mode'",
            ),
            (
                json!({"command": "MIRROR", "args": {"source": "a", "dest": "b", "exclude": "x"}}),
                "list of strings",
            ),
        ] {
            let e = parse(v.clone()).unwrap_err();
            assert!(e.message.contains(want), "{v}: {}", e.message);
        }
        let e = parse_request(b"{\"command\": ").unwrap_err();
        assert!(e.message.starts_with("invalid JSON"), "{}", e.message);
    }
}
