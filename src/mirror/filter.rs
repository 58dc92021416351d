//! `--exclude` / `--include` / `--last` patterns, matched against paths relative to the
//! mirror's root.
//!
//! A pattern without `/` matches a name at any depth (`*.tmp`, `.git`); a pattern with `/`
//! matches the whole relative path, `*` not crossing `/` (`dists/*/InRelease`), `**`
//! crossing any number of directories. A leading `/` anchors at the root and is dropped.
//! A trailing `/` matches directories only. An excluded directory excludes everything
//! below it. Includes win over excludes: a path is excluded when it matches an exclude
//! pattern and no include pattern.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// A compiled set of patterns.
#[derive(Debug, Clone)]
pub struct PatternSet {
    any: GlobSet,
    dirs_only: GlobSet,
    patterns: Vec<String>,
}

impl Default for PatternSet {
    fn default() -> Self {
        PatternSet {
            any: GlobSet::empty(),
            dirs_only: GlobSet::empty(),
            patterns: Vec::new(),
        }
    }
}

fn compile(pattern: &str) -> Result<Glob> {
    let anchored = pattern.trim_start_matches('/');
    let full = if anchored.contains('/') || pattern.starts_with('/') {
        anchored.to_string()
    } else {
        format!("**/{anchored}")
    };
    GlobBuilder::new(&full)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| Error::InvalidInput(format!("bad pattern '{pattern}': {e}")))
}

impl PatternSet {
    /// Compiles patterns; an invalid one is an error naming it.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self> {
        let mut any = GlobSetBuilder::new();
        let mut dirs_only = GlobSetBuilder::new();
        for p in patterns {
            let p = p.as_ref();
            if p.is_empty() {
                continue;
            }
            match p.strip_suffix('/') {
                Some(dir) => dirs_only.add(compile(dir)?),
                None => any.add(compile(p)?),
            };
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::InvalidInput(format!("bad pattern: {e}")))
        };
        Ok(PatternSet {
            any: build(any)?,
            dirs_only: build(dirs_only)?,
            patterns: patterns.iter().map(|p| p.as_ref().to_string()).collect(),
        })
    }

    /// True when no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `rel` (relative, `/`-separated) matches.
    pub fn matches(&self, rel: &str, is_dir: bool) -> bool {
        self.any.is_match(rel) || (is_dir && self.dirs_only.is_match(rel))
    }
}

/// Exclude and include patterns together.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    exclude: PatternSet,
    include: PatternSet,
}

impl Filter {
    /// A filter from `--exclude` and `--include` patterns.
    pub fn new<S: AsRef<str>>(exclude: &[S], include: &[S]) -> Result<Self> {
        Ok(Filter {
            exclude: PatternSet::new(exclude)?,
            include: PatternSet::new(include)?,
        })
    }

    /// Reads patterns from a file for `--exclude-from`: one per line; blank lines and
    /// lines starting with `#` are skipped.
    pub fn read_pattern_file(path: &std::path::Path) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::local(format!("cannot read {}", path.display()), e))?;
        Ok(text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect())
    }

    /// True when `rel` is excluded (its parents were checked by the walk already).
    pub fn excluded(&self, rel: &str, is_dir: bool) -> bool {
        self.exclude.matches(rel, is_dir) && !self.include.matches(rel, is_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basename_patterns_match_at_any_depth() {
        let f = Filter::new(&["*.tmp", ".git/"], &[]).unwrap();
        assert!(f.excluded("a.tmp", false));
        assert!(f.excluded("x/y/a.tmp", false));
        assert!(!f.excluded("a.tmpx", false));
        assert!(f.excluded("sub/.git", true));
        assert!(!f.excluded("sub/.git", false));
    }

    #[test]
    fn path_patterns_are_anchored_and_star_stays_in_one_directory() {
        let p = PatternSet::new(&["dists/*/InRelease"]).unwrap();
        assert!(p.matches("dists/bookworm/InRelease", false));
        assert!(!p.matches("dists/a/b/InRelease", false));
        assert!(!p.matches("x/dists/a/InRelease", false));
        let p = PatternSet::new(&["/index.html", "pool/**/*.deb"]).unwrap();
        assert!(p.matches("index.html", false));
        assert!(!p.matches("sub/index.html", false));
        assert!(p.matches("pool/main/h/hello/hello_1.deb", false));
    }

    #[test]
    fn includes_win_over_excludes() {
        let f = Filter::new(&["*.log"], &["keep.log"]).unwrap();
        assert!(f.excluded("a.log", false));
        assert!(!f.excluded("d/keep.log", false));
    }

    #[test]
    fn bad_patterns_are_reported() {
        assert!(Filter::new(&["a[b"], &[]).is_err());
    }
}
