//! Splitting a command line into words as OpenSSH's sftp does: blanks separate words,
//! `'...'` and `"..."` quote, a backslash escapes the next character (inside double quotes
//! only a quote or a backslash).
//!
//! Each word is kept in *glob form*: a wildcard character that was quoted or escaped
//! stays escaped with a backslash (and so does a literal backslash), so that
//! [`sftpipe::glob`] matches it literally; [`unescape`] gives the plain path.

/// Splits `line` into words in glob form. An unterminated quote is an error.
pub fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => push_literal(&mut cur, c),
            (q, '\\') => {
                in_word = true;
                match chars.peek().copied() {
                    // In double quotes a backslash escapes only `"` and `\`.
                    Some(n) if q.is_none() || n == '"' || n == '\\' => {
                        chars.next();
                        push_literal(&mut cur, n);
                    }
                    Some(_) => push_literal(&mut cur, '\\'),
                    None => return Err("trailing backslash".into()),
                }
            }
            (Some(_), c) => push_literal(&mut cur, c),
            (None, c) => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Appends `c` as a literal: wildcards and backslashes escaped.
fn push_literal(out: &mut String, c: char) {
    if matches!(c, '*' | '?' | '[' | ']' | '\\') {
        out.push('\\');
    }
    out.push(c);
}

/// A word in glob form back to the plain text it stands for.
pub fn unescape(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut escaped = false;
    for c in word.chars() {
        if c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(c);
    }
    out
}

/// Plain text in glob form: its wildcards and backslashes escaped (a directory name
/// prefixed to a pattern).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_literal(&mut out, c);
    }
    out
}

/// Quotes `text` for a command line when it needs it (completion of odd names).
pub fn quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || "-_./~+,:=@%^".contains(c))
    {
        return text.to_string();
    }
    let mut out = String::from("\"");
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(line: &str) -> Vec<String> {
        split(line).unwrap()
    }

    #[test]
    fn blanks_quotes_and_backslashes() {
        assert_eq!(s("  put  a   b "), ["put", "a", "b"]);
        assert_eq!(s("put 'a b' \"c d\""), ["put", "a b", "c d"]);
        assert_eq!(s(r"put a\ b"), ["put", "a b"]);
        assert_eq!(s(r#"get "say \"hi\"""#), ["get", "say \"hi\""]);
        assert_eq!(s("get ''"), ["get", ""]);
        assert_eq!(s("get x'y'z"), ["get", "xyz"]);
        assert!(split("get 'open").is_err());
        assert!(split("get a\\").is_err());
    }

    #[test]
    fn quoted_wildcards_stay_literal() {
        assert_eq!(s("get *.deb"), ["get", "*.deb"]);
        assert_eq!(s("get '*.deb'"), ["get", r"\*.deb"]);
        assert_eq!(s(r"get \*.deb"), ["get", r"\*.deb"]);
        assert_eq!(s(r#"get "a\\b""#), ["get", r"a\\b"]);
        assert!(!sftpipe::glob::has_magic(s("get 'a[1]'")[1].as_bytes()));
        assert_eq!(unescape(&s("get 'a[1]*'")[1]), "a[1]*");
        assert_eq!(unescape(&escape("x*\\y")), "x*\\y");
    }

    #[test]
    fn quoting_round_trips() {
        for t in ["plain", "a b", "q\"uo\\te", "", "*"] {
            assert_eq!(unescape(&s(&format!("x {}", quote(t)))[1]), t);
        }
    }
}
