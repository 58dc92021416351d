//! The library's public surface, compared with the checked-in list
//! `contrib/public-api.txt`: a change to a public signature fails here until the list is
//! regenerated on purpose (`SFTPIPE_BLESS_API=1 cargo test --test public_api`), so that
//! every API change shows up in review as a diff of that file.
//!
//! This stands in for `cargo semver-checks` (which needs a published baseline and a long
//! install): it lists every `pub` item and field of the library's sources (not the CLI's)
//! by file, with its whole signature, from the source text.

use std::fs;
use std::path::{Path, PathBuf};

const LIST: &str = "contrib/public-api.txt";

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `pub` declaration of one file, each on one line with white space collapsed.
fn public_items(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line.starts_with("#[cfg(test)]") {
            break; // the unit tests are the rest of the file
        }
        if !line.starts_with("pub ") {
            continue;
        }
        let mut item = line.to_string();
        // A signature spread over several lines ends at its body or semicolon; a field or
        // variant at its comma; a `use` list only at its semicolon.
        let is_use = item.starts_with("pub use ");
        let is_fn = is_use || item.starts_with("pub fn ") || item.starts_with("pub async fn ");
        let ended = |item: &str| {
            item.ends_with(';')
                || (!is_use && item.contains('{'))
                || (!is_fn && item.ends_with(','))
        };
        while !ended(&item) {
            match lines.next() {
                Some(next) => {
                    item.push(' ');
                    item.push_str(next.trim());
                }
                None => break,
            }
        }
        let item = if is_use {
            item.as_str()
        } else {
            item.split('{').next().unwrap_or("").trim_end()
        };
        items.push(item.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    items
}

fn current() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    let mut out = String::new();
    for file in files {
        let rel = file.strip_prefix(root).expect("under the crate");
        if rel.starts_with("src/cli") || rel == Path::new("src/main.rs") {
            continue; // the binary's modules are not the library's API
        }
        let text = fs::read_to_string(&file).expect("read source");
        for item in public_items(&text) {
            out.push_str(&format!("{}: {item}\n", rel.display()));
        }
    }
    out
}

#[test]
fn the_public_api_matches_the_checked_in_list() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(LIST);
    let now = current();
    if std::env::var_os("SFTPIPE_BLESS_API").is_some() {
        fs::write(&path, &now).expect("write the list");
        return;
    }
    let listed = fs::read_to_string(&path).unwrap_or_default();
    if listed == now {
        return;
    }
    let old: std::collections::BTreeSet<&str> = listed.lines().collect();
    let new: std::collections::BTreeSet<&str> = now.lines().collect();
    let mut diff = String::new();
    for gone in old.difference(&new) {
        diff.push_str(&format!("- {gone}\n"));
    }
    for added in new.difference(&old) {
        diff.push_str(&format!("+ {added}\n"));
    }
    panic!(
        "the public API differs from {LIST}:\n{diff}\nIf the change is intended, regenerate the \
         list with `SFTPIPE_BLESS_API=1 cargo test --test public_api` and commit it (a removed \
         or changed line is a breaking change: bump the version accordingly)."
    );
}
