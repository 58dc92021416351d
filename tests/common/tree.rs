//! Directory trees for transfer tests: a tree of odd names to send, and an exact
//! comparison of two trees (kinds, contents, symlink targets; not times or modes).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::{random_bytes, write_file};

/// One entry of a tree, as compared.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

/// Every entry below `root` (not `root` itself), by path relative to it, symlinks not
/// followed.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
        for e in entries {
            let e = e.unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
            let path = e.path();
            let rel = rel.join(e.file_name());
            let meta = fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
            let node = if meta.is_symlink() {
                Node::Link(
                    fs::read_link(&path)
                        .unwrap_or_else(|e| panic!("readlink {}: {e}", path.display())),
                )
            } else if meta.is_dir() {
                stack.push(rel.clone());
                Node::Dir
            } else {
                Node::File(
                    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
                )
            };
            out.insert(rel, node);
        }
    }
    out
}

/// The differences between the trees at `want` and `got`, at most `limit` of them, one
/// line each; empty when they are the same.
pub fn differences(want: &Path, got: &Path, limit: usize) -> Vec<String> {
    differences_from(&snapshot(want), got, limit)
}

/// The differences between the tree at `got` and the [`snapshot`] `w`, as
/// [`differences`].
pub fn differences_from(w: &BTreeMap<PathBuf, Node>, got: &Path, limit: usize) -> Vec<String> {
    let g = snapshot(got);
    let mut diffs = Vec::new();
    for (path, node) in w {
        match g.get(path) {
            None => diffs.push(format!("{path:?}: missing")),
            Some(other) if other != node => diffs.push(format!(
                "{path:?}: want {}, got {}",
                describe(node),
                describe(other)
            )),
            Some(_) => {}
        }
    }
    for (path, node) in &g {
        if !w.contains_key(path) {
            diffs.push(format!("{path:?}: unexpected {}", describe(node)));
        }
    }
    let n = diffs.len();
    if n > limit {
        diffs.truncate(limit);
        diffs.push(format!("... {} more", n - limit));
    }
    diffs
}

fn describe(n: &Node) -> String {
    match n {
        Node::Dir => "a directory".into(),
        Node::File(b) => format!("a file of {} bytes", b.len()),
        Node::Link(t) => format!("a symlink to {t:?}"),
    }
}

/// Directory names of [`odd_tree`]: spaces, unicode, shell metacharacters, depth.
const ODD_DIRS: [&str; 10] = [
    "plain",
    "with space",
    "ünïcödé",
    "日本語",
    "a/b/c",
    " leading",
    "trailing ",
    "-dash",
    "#hash;semi",
    "quote's \"q\"",
];

/// The symlinks of [`odd_tree`]: (link, target).
pub const ODD_LINKS: [(&str, &str); 4] = [
    ("link-to-file", "plain/f0.txt"),
    ("link-to-dir", "with space"),
    ("ünïcödé/up link", "../plain/f30.txt"),
    ("dangling", "does/not/exist"),
];

/// Writes a tree of `files` regular files spread over [`ODD_DIRS`] with odd names (spaces,
/// unicode, quotes, a `*`, an empty file, one of 200 KB), plus a file named with a newline
/// when `newline` is set, and four symlinks (to a file, to a directory, from a
/// subdirectory upwards, and one dangling). Returns the number of regular files written.
pub fn odd_tree(root: &Path, files: usize, newline: bool) -> usize {
    let mut written = 0;
    for i in 0..files - usize::from(newline) {
        let dir = ODD_DIRS[i % ODD_DIRS.len()];
        let name = match i % 6 {
            0 => format!("f{i}.txt"),
            1 => format!("file {i} with spaces.txt"),
            2 => format!("ü-{i}-€.bin"),
            3 => format!("star*{i}?"),
            4 => format!("{i}.tar.gz"),
            _ => format!(".hidden-{i}"),
        };
        let size = match i {
            0 => 0,
            7 => 200_000,
            _ => (i * 37) % 3000,
        };
        write_file(root.join(dir).join(name), random_bytes(size, i as u64));
        written += 1;
    }
    if newline {
        write_file(root.join("plain/new\nline"), b"a name with a newline\n");
        written += 1;
    }
    for (link, target) in ODD_LINKS {
        symlink(target, root.join(link)).unwrap_or_else(|e| panic!("symlink {link}: {e}"));
    }
    written
}

/// Creates `files` empty files in directories of 1,000 (`tN/sM/fK`, ten `s` per `t`): a
/// tree for the memory guards of the streaming walks (mirror, `put -r`, `get -r`).
pub fn many_empty_files(root: &Path, files: usize) {
    for i in 0..files {
        let (dir, f) = (i / 1000, i % 1000);
        let dir = root.join(format!("t{}/s{}", dir / 10, dir % 10));
        if f == 0 {
            fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        let file = dir.join(format!("f{f}"));
        fs::File::create(&file).unwrap_or_else(|e| panic!("create {}: {e}", file.display()));
    }
}
