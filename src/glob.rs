//! Wildcards in paths, as OpenSSH's sftp expands them: `*`, `?` and `[...]` match within
//! one path component, a backslash escapes the next character, and a name starting with
//! `.` is matched only by a pattern component that starts with `.` too.
//!
//! The matching is independent of where the names come from: [`expand`] takes a function
//! listing a directory (remote, over SFTP; or local, see [`expand_local`]).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

/// Whether `pattern` has an unescaped `*`, `?` or `[`.
pub fn has_magic(pattern: &[u8]) -> bool {
    let mut escaped = false;
    for &b in pattern {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
    }
    false
}

/// `pattern` with its backslash escapes removed (for a component without wildcards).
fn unescape(pattern: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut escaped = false;
    for &b in pattern {
        if b == b'\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(b);
    }
    out
}

/// Matches one path component.
struct Component {
    matcher: GlobMatcher,
    dot: bool,
}

impl Component {
    fn new(pattern: &[u8]) -> Result<Component, String> {
        let text = String::from_utf8_lossy(pattern);
        let glob = GlobBuilder::new(&text)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("bad pattern '{text}': {}", e.kind()))?;
        Ok(Component {
            matcher: glob.compile_matcher(),
            dot: pattern.starts_with(b"."),
        })
    }

    fn matches(&self, name: &[u8]) -> bool {
        if name == b"." || name == b".." || (name.starts_with(b".") && !self.dot) {
            return false;
        }
        self.matcher.is_match(Path::new(OsStr::from_bytes(name)))
    }
}

/// A directory entry as [`expand`]'s lister reports it: its name, and whether it may be
/// a directory (a directory or a symlink), to descend into.
pub type Listed = (Vec<u8>, bool);

/// Expands `pattern` to the existing paths it matches, sorted. `list(dir)` lists a
/// directory (`.` for the current one), or returns `Ok(None)` when it does not exist or
/// is no directory. `Err(message)` from [`BadPattern`] on a malformed `[...]`.
pub fn expand<E>(
    pattern: &[u8],
    mut list: impl FnMut(&[u8]) -> Result<Option<Vec<Listed>>, E>,
) -> Result<Vec<Vec<u8>>, E>
where
    E: From<BadPattern>,
{
    let absolute = pattern.starts_with(b"/");
    let mut paths: Vec<Vec<u8>> = vec![if absolute { b"/".to_vec() } else { Vec::new() }];
    let parts: Vec<&[u8]> = pattern
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if !has_magic(part) {
            let name = unescape(part);
            paths.iter_mut().for_each(|p| *p = join(p, &name));
            continue;
        }
        let comp = Component::new(part).map_err(|m| E::from(BadPattern(m)))?;
        let mut next = Vec::new();
        for dir in &paths {
            let listing = list(if dir.is_empty() { b"." } else { dir })?;
            for (name, maybe_dir) in listing.unwrap_or_default() {
                if (last || maybe_dir) && comp.matches(&name) {
                    next.push(join(dir, &name));
                }
            }
        }
        paths = next;
    }
    if paths.iter().any(|p| p.is_empty()) {
        paths.retain(|p| !p.is_empty());
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    match dir {
        b"" => name.to_vec(),
        d if d.ends_with(b"/") => [d, name].concat(),
        d => [d, b"/", name].concat(),
    }
}

/// A malformed pattern (an unclosed `[`), with a message naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPattern(pub String);

/// Expands a local `pattern` (for a quoted `put 'dist/*' host:`): the paths that exist.
pub fn expand_local(pattern: &Path) -> Result<Vec<std::path::PathBuf>, crate::Error> {
    let found = expand(pattern.as_os_str().as_bytes(), |dir| {
        let entries = match std::fs::read_dir(OsStr::from_bytes(dir)) {
            Ok(e) => e,
            Err(_) => return Ok::<_, crate::Error>(None),
        };
        Ok(Some(
            entries
                .flatten()
                .map(|e| {
                    let maybe_dir = e.file_type().is_ok_and(|t| t.is_dir() || t.is_symlink());
                    (e.file_name().as_bytes().to_vec(), maybe_dir)
                })
                .collect(),
        ))
    })?;
    Ok(found
        .into_iter()
        .map(|p| std::path::PathBuf::from(OsStr::from_bytes(&p)))
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect())
}

impl From<BadPattern> for crate::Error {
    fn from(b: BadPattern) -> Self {
        crate::Error::InvalidInput(b.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &[u8]) -> Result<Option<Vec<Listed>>, crate::Error> {
        let d = |n: &str| (n.as_bytes().to_vec(), true);
        let f = |n: &str| (n.as_bytes().to_vec(), false);
        Ok(match dir {
            b"." => Some(vec![d("logs"), f("a.gz"), f(".h.gz"), f("b*c")]),
            b"logs" => Some(vec![f("x.gz"), f("y.txt"), d("old")]),
            b"/" => Some(vec![d("logs")]),
            b"/logs" => Some(vec![f("z.gz")]),
            _ => None,
        })
    }

    fn names(p: &str) -> Vec<String> {
        expand(p.as_bytes(), tree)
            .unwrap()
            .into_iter()
            .map(|v| String::from_utf8(v).unwrap())
            .collect()
    }

    #[test]
    fn wildcards_match_per_component_and_skip_dotfiles() {
        assert_eq!(names("*.gz"), ["a.gz"]);
        assert_eq!(names(".*.gz"), [".h.gz"]);
        assert_eq!(names("logs/*.gz"), ["logs/x.gz"]);
        assert_eq!(names("*/*.gz"), ["logs/x.gz"]);
        assert_eq!(names("logs/?.*"), ["logs/x.gz", "logs/y.txt"]);
        assert_eq!(names("logs/[xz].gz"), ["logs/x.gz"]);
        assert_eq!(names("/*/*"), ["/logs/z.gz"]);
        assert_eq!(names("b\\*c"), ["b*c"]);
        assert_eq!(names("b\\*?"), ["b*c"]);
        assert!(names("nope/*").is_empty());
        assert!(has_magic(b"a/*") && !has_magic(b"a\\*b") && !has_magic(b"plain"));
        assert!(expand(b"[a", tree).is_err());
    }
}
