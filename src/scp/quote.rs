//! Quoting for the remote user's POSIX shell, which runs `scp -t`/`scp -f` with the
//! paths as arguments: each path becomes one word, nothing in it expanded.

/// `word` as one single-quoted POSIX shell word: `'` becomes `'\''`, everything else
/// (spaces, `$`, backquotes, newlines, any byte) stays literal between the quotes.
pub fn shell_quote(word: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(word.len() + 2);
    out.push(b'\'');
    for &b in word {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// A remote path as scp's argument: a leading `-` gets `./` in front so that scp does
/// not read it as an option, and `~/` (the login directory, where the command starts)
/// is dropped since quoting stops the shell from expanding it. An empty path is `.`.
pub fn remote_arg(path: &[u8]) -> Vec<u8> {
    let path = path.strip_prefix(b"~/").unwrap_or(path);
    match path {
        b"" | b"~" => b".".to_vec(),
        p if p.starts_with(b"-") => [b"./", p].concat(),
        p => p.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn quotes_are_closed_escaped_and_reopened() {
        assert_eq!(shell_quote(b"a b"), b"'a b'");
        assert_eq!(shell_quote(b"it's"), b"'it'\\''s'");
        assert_eq!(shell_quote(b""), b"''");
    }

    #[test]
    fn dashes_and_tildes_become_plain_paths() {
        assert_eq!(remote_arg(b"-rf"), b"./-rf");
        assert_eq!(remote_arg(b"~/x"), b"x");
        assert_eq!(remote_arg(b""), b".");
        assert_eq!(remote_arg(b"/abs/-x"), b"/abs/-x");
    }

    /// Through a real `sh`: every odd word comes back as exactly one argument.
    #[test]
    fn sh_reads_each_quoted_word_back_unchanged() {
        use std::os::unix::ffi::OsStrExt;
        let words: [&[u8]; 7] = [
            b"sp ace",
            b"q'uo\"te",
            b"$HOME $(id) `id`",
            b"new\nline",
            b"-n",
            b"*?[a]",
            b"\\back\\slash\t",
        ];
        let mut line = b"printf '%s\\0' ".to_vec();
        for w in words {
            line.extend(shell_quote(w));
            line.push(b' ');
        }
        let out = Command::new("sh")
            .arg("-c")
            .arg(std::ffi::OsStr::from_bytes(&line))
            .output()
            .unwrap();
        let got: Vec<&[u8]> = out
            .stdout
            .split(|&b| b == 0)
            .filter(|w| !w.is_empty())
            .collect();
        assert_eq!(got, words);
    }
}
