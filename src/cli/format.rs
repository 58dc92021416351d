//! Text output of `ls`, `stat` and `df`: pure functions from attributes to lines.

use std::borrow::Cow;

use sftpipe::proto::Statvfs;
use sftpipe::{FileAttributes, NameEntry};

/// `ls -l` style mode, e.g. `-rw-r--r--` or `drwxr-sr-t`; ten `?` when unknown.
pub fn mode_string(perm: Option<u32>) -> String {
    let Some(p) = perm else {
        return "?".repeat(10);
    };
    let kind = match p & 0o170000 {
        0o100000 => '-',
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '?',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    let bit = |mask: u32, c: char| if p & mask != 0 { c } else { '-' };
    let exec = |x: u32, special: u32, set: char| match (p & x != 0, p & special != 0) {
        (true, true) => set,
        (false, true) => set.to_ascii_uppercase(),
        (true, false) => 'x',
        (false, false) => '-',
    };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(exec(0o100, 0o4000, 's'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(exec(0o010, 0o2000, 's'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(exec(0o001, 0o1000, 't'));
    s
}

/// A human name for the file type.
pub fn type_name(perm: Option<u32>) -> &'static str {
    match perm.map(|p| p & 0o170000) {
        None => "unknown",
        Some(0o100000) => "regular file",
        Some(0o040000) => "directory",
        Some(0o120000) => "symbolic link",
        Some(0o020000) => "character device",
        Some(0o060000) => "block device",
        Some(0o010000) => "fifo",
        Some(0o140000) => "socket",
        Some(_) => "unknown",
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn split_time(secs: u32) -> (i64, u32, u32, u32, u32, u32) {
    let secs = i64::from(secs);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400) as u32;
    (y, mo, d, t / 3600, t / 60 % 60, t % 60)
}

/// ISO-8601 UTC, e.g. `2026-03-01T12:34:56Z`.
pub fn iso_time(secs: u32) -> String {
    let (y, mo, d, h, mi, s) = split_time(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Short UTC time for `ls -l`, e.g. `2026-03-01 12:34`.
pub fn short_time(secs: u32) -> String {
    let (y, mo, d, h, mi, _) = split_time(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}")
}

/// A count with thousands separated by commas (`1,979`).
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Sizes like `df -h`: powers of 1024, one decimal below 10, rounded up.
pub fn human_size(n: u64) -> String {
    const UNITS: [char; 6] = ['K', 'M', 'G', 'T', 'P', 'E'];
    if n < 1024 {
        return n.to_string();
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        let v = (value * 10.0).ceil() / 10.0;
        if v < 10.0 {
            return format!("{v:.1}{}", UNITS[unit]);
        }
        value = v;
    }
    let v = value.ceil();
    if v >= 1024.0 && unit < UNITS.len() - 1 {
        return format!("1.0{}", UNITS[unit + 1]);
    }
    format!("{v:.0}{}", UNITS[unit])
}

/// A name fit for display: unchanged, or on a terminal quoted as GNU `ls` does there
/// (`shell-escape`): `'a b'`, `"it's"`, and `$'a\nb'` for control characters or bytes
/// that are not UTF-8, so a file name cannot drive the terminal and can be pasted back.
pub fn display_name(name: &[u8], tty: bool) -> Cow<'_, str> {
    if !tty {
        return String::from_utf8_lossy(name);
    }
    match std::str::from_utf8(name) {
        Ok(s) if !s.chars().any(char::is_control) => shell_quote(s),
        _ => Cow::Owned(dollar_quote(name)),
    }
}

/// Quotes `s` for a POSIX shell when it holds a character the shell would interpret.
fn shell_quote(s: &str) -> Cow<'_, str> {
    const SPECIAL: &str = " !\"$&'()*;<=>?[\\]^`|";
    let first_special = |c: char| matches!(c, '#' | '~');
    let needs = s.is_empty()
        || s.chars().any(|c| SPECIAL.contains(c))
        || s.starts_with(first_special)
        || s == "{"
        || s == "}";
    if !needs {
        return Cow::Borrowed(s);
    }
    if s.contains('\'') && !s.contains(['"', '$', '`', '\\', '!']) {
        return Cow::Owned(format!("\"{s}\""));
    }
    Cow::Owned(format!("'{}'", s.replace('\'', "'\\''")))
}

/// Bash's `$'...'` quoting: control characters and bytes that are not UTF-8 escaped.
fn dollar_quote(name: &[u8]) -> String {
    let mut out = String::from("$'");
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\x1b' => out.push_str("\\e"),
                '\'' => out.push_str("\\'"),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('\'');
    out
}

/// Lays names out in columns (down, then across) for a terminal `width` wide.
pub fn columns(names: &[String], width: usize) -> Vec<String> {
    if names.is_empty() {
        return Vec::new();
    }
    const GAP: usize = 2;
    let widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    let mut best_rows = names.len();
    for cols in (1..=names.len()).rev() {
        let rows = names.len().div_ceil(cols);
        let cols = names.len().div_ceil(rows);
        let total: usize = (0..cols)
            .map(|c| {
                let w = (0..rows)
                    .filter_map(|r| widths.get(c * rows + r))
                    .max()
                    .copied()
                    .unwrap_or(0);
                if c + 1 < cols { w + GAP } else { w }
            })
            .sum();
        if total <= width {
            best_rows = rows;
            break;
        }
    }
    let rows = best_rows;
    let cols = names.len().div_ceil(rows);
    let col_width: Vec<usize> = (0..cols)
        .map(|c| {
            (0..rows)
                .filter_map(|r| widths.get(c * rows + r))
                .max()
                .copied()
                .unwrap_or(0)
        })
        .collect();
    (0..rows)
        .map(|r| {
            let mut line = String::new();
            for c in 0..cols {
                let Some(name) = names.get(c * rows + r) else {
                    break;
                };
                line.push_str(name);
                let is_last = names.get((c + 1) * rows + r).is_none();
                if !is_last {
                    let pad = col_width[c] + GAP - widths[c * rows + r];
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            line
        })
        .collect()
}

/// One row of `ls -l` before alignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongRow {
    /// Mode string.
    pub mode: String,
    /// Owner name or uid.
    pub owner: String,
    /// Group name or gid.
    pub group: String,
    /// Size in bytes.
    pub size: String,
    /// Modification time.
    pub mtime: String,
    /// Name, with ` -> target` for symlinks.
    pub name: String,
}

/// Owner and group: the names from the server's `longname` when it has the usual
/// `ls -l` shape, else the numeric ids.
pub fn owner_group(attrs: &FileAttributes, longname: Option<&[u8]>) -> (String, String) {
    if let Some(l) = longname {
        let text = String::from_utf8_lossy(l);
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() >= 8 && fields[0].len() == 10 {
            return (fields[2].to_string(), fields[3].to_string());
        }
    }
    match attrs.uid_gid {
        Some((u, g)) => (u.to_string(), g.to_string()),
        None => ("?".into(), "?".into()),
    }
}

/// The server's `ls -l` line for `path`, read from its parent's listing (SFTP v3 gives
/// owner names only there), so that a file shows its owner as its directory's listing
/// would; empty when the parent cannot be listed.
pub fn longname_in_parent(session: &sftpipe::Session, path: &[u8]) -> Vec<u8> {
    let name = sftpipe::transfer::remote_basename(path);
    if !path.ends_with(name) {
        return Vec::new();
    }
    let parent = match path.len() - name.len() {
        0 => b".".as_slice(),
        1 => b"/".as_slice(),
        n => &path[..n - 1],
    };
    match session.read_dir(parent) {
        Ok(entries) => entries
            .into_iter()
            .find(|e| e.filename == name)
            .map(|e| e.longname)
            .unwrap_or_default(),
        Err(e) => {
            log::debug!("owner names of {}: {e}", String::from_utf8_lossy(path));
            Vec::new()
        }
    }
}

/// Builds the `ls -l` row of an entry; `target` is the symlink's target, if read.
pub fn long_row(entry: &NameEntry, name: String, target: Option<String>) -> LongRow {
    let a = &entry.attrs;
    let longname = (!entry.longname.is_empty()).then_some(entry.longname.as_slice());
    let (owner, group) = owner_group(a, longname);
    let name = match target {
        Some(t) => format!("{name} -> {t}"),
        None => name,
    };
    LongRow {
        mode: mode_string(a.permissions),
        owner,
        group,
        size: a.size.map_or_else(|| "?".into(), |s| s.to_string()),
        mtime: a.mtime().map_or_else(|| "?".into(), short_time),
        name,
    }
}

/// Aligns `ls -l` rows into lines.
pub fn long_lines(rows: &[LongRow]) -> Vec<String> {
    let w = |f: fn(&LongRow) -> &str| rows.iter().map(|r| f(r).chars().count()).max().unwrap_or(0);
    let (wo, wg, ws) = (w(|r| &r.owner), w(|r| &r.group), w(|r| &r.size));
    rows.iter()
        .map(|r| {
            format!(
                "{} {:<wo$} {:<wg$} {:>ws$} {} {}",
                r.mode, r.owner, r.group, r.size, r.mtime, r.name
            )
        })
        .collect()
}

/// The `stat` report of one path.
pub fn stat_lines(path: &str, attrs: &FileAttributes, target: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    match target {
        Some(t) => out.push(format!("  File: {path} -> {t}")),
        None => out.push(format!("  File: {path}")),
    }
    out.push(format!("  Type: {}", type_name(attrs.permissions)));
    out.push(format!(
        "  Size: {}",
        attrs.size.map_or_else(|| "?".into(), |s| s.to_string())
    ));
    out.push(match attrs.permissions {
        Some(p) => format!("  Mode: {:04o} ({})", p & 0o7777, mode_string(Some(p))),
        None => "  Mode: ?".into(),
    });
    match attrs.uid_gid {
        Some((u, g)) => {
            out.push(format!("   Uid: {u}"));
            out.push(format!("   Gid: {g}"));
        }
        None => {
            out.push("   Uid: ?".into());
            out.push("   Gid: ?".into());
        }
    }
    match attrs.atime_mtime {
        Some((a, m)) => {
            out.push(format!("Access: {}", iso_time(a)));
            out.push(format!("Modify: {}", iso_time(m)));
        }
        None => {
            out.push("Access: ?".into());
            out.push("Modify: ?".into());
        }
    }
    out
}

/// What `df` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DfMode {
    /// 1 KiB blocks.
    Blocks,
    /// Human-readable sizes (`-h`).
    Human,
    /// Inodes (`-i`).
    Inodes,
}

fn percent(used: u64, avail: u64) -> String {
    let total = used as u128 + avail as u128;
    if total == 0 {
        "-".into()
    } else {
        format!("{}%", (used as u128 * 100).div_ceil(total))
    }
}

/// The header and the line of `df` for one path.
pub fn df_lines(path: &str, s: &Statvfs, mode: DfMode) -> [String; 2] {
    let (header, values) = match mode {
        DfMode::Inodes => {
            let used = s.files.saturating_sub(s.ffree);
            (
                ["Inodes", "IUsed", "IFree", "IUse%"],
                [
                    s.files.to_string(),
                    used.to_string(),
                    s.favail.to_string(),
                    percent(used, s.favail),
                ],
            )
        }
        DfMode::Blocks | DfMode::Human => {
            let unit = if s.frsize == 0 { s.bsize } else { s.frsize };
            let size = s.blocks.saturating_mul(unit);
            let used = s.blocks.saturating_sub(s.bfree).saturating_mul(unit);
            let avail = s.bavail.saturating_mul(unit);
            let show = |n: u64| {
                if mode == DfMode::Human {
                    human_size(n)
                } else {
                    n.div_ceil(1024).to_string()
                }
            };
            let first = if mode == DfMode::Human {
                "Size"
            } else {
                "1K-blocks"
            };
            (
                [first, "Used", "Avail", "Use%"],
                [show(size), show(used), show(avail), percent(used, avail)],
            )
        }
    };
    let w: Vec<usize> = header
        .iter()
        .zip(&values)
        .map(|(h, v)| h.len().max(v.len()))
        .collect();
    [
        format!(
            "{:>w0$} {:>w1$} {:>w2$} {:>w3$} Path",
            header[0],
            header[1],
            header[2],
            header[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        ),
        format!(
            "{:>w0$} {:>w1$} {:>w2$} {:>w3$} {path}",
            values[0],
            values[1],
            values[2],
            values[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(mode_string(Some(0o100644)), "-rw-r--r--");
        assert_eq!(mode_string(Some(0o040755)), "drwxr-xr-x");
        assert_eq!(mode_string(Some(0o120777)), "lrwxrwxrwx");
        assert_eq!(mode_string(Some(0o104755)), "-rwsr-xr-x");
        assert_eq!(mode_string(Some(0o041777)), "drwxrwxrwt");
        assert_eq!(mode_string(Some(0o102644)), "-rw-r-Sr--");
        assert_eq!(mode_string(None), "??????????");
        assert_eq!(type_name(Some(0o100600)), "regular file");
    }

    #[test]
    fn times() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso_time(u32::MAX), "2106-02-07T06:28:15Z");
        assert_eq!(short_time(1_700_000_000), "2023-11-14 22:13");
    }

    #[test]
    fn thousands_are_separated() {
        let cases = [(0, "0"), (999, "999"), (1_000, "1,000"), (1_979, "1,979")];
        for (n, want) in cases {
            assert_eq!(thousands(n), want);
        }
        assert_eq!(thousands(12_345_678), "12,345,678");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0");
        assert_eq!(human_size(1023), "1023");
        assert_eq!(human_size(1024), "1.0K");
        assert_eq!(human_size(1536), "1.5K");
        assert_eq!(human_size(10 * 1024), "10K");
        assert_eq!(human_size(10 * 1024 - 1), "10K");
        assert_eq!(human_size(1024 * 1024 - 1), "1.0M");
        assert_eq!(human_size(5 << 30), "5.0G");
    }

    #[test]
    fn columns_fill_down_then_across() {
        let names: Vec<String> = ["a", "bb", "c", "dddd", "e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(columns(&names, 80), ["a  bb  c  dddd  e"]);
        assert_eq!(columns(&names, 10), ["a   dddd", "bb  e", "c"]);
        assert_eq!(columns(&names, 1).len(), 5);
        assert!(columns(&[], 80).is_empty());
    }

    #[test]
    fn owner_and_group_from_longname() {
        let a = FileAttributes {
            uid_gid: Some((1, 2)),
            ..Default::default()
        };
        let l = b"-rw-r--r--    1 alice    staff         12 Jan  1 00:00 f";
        assert_eq!(owner_group(&a, Some(l)), ("alice".into(), "staff".into()));
        assert_eq!(owner_group(&a, Some(b"garbage")), ("1".into(), "2".into()));
        assert_eq!(owner_group(&a, None), ("1".into(), "2".into()));
    }

    #[test]
    fn long_listing_is_aligned() {
        let mk = |size: &str, name: &str| LongRow {
            mode: "-rw-r--r--".into(),
            owner: "root".into(),
            group: "root".into(),
            size: size.into(),
            mtime: "2023-11-14 22:13".into(),
            name: name.into(),
        };
        let lines = long_lines(&[mk("5", "a"), mk("12345", "b")]);
        assert_eq!(lines[0], "-rw-r--r-- root root     5 2023-11-14 22:13 a");
        assert_eq!(lines[1], "-rw-r--r-- root root 12345 2023-11-14 22:13 b");
    }

    #[test]
    fn terminal_names_are_quoted_as_gnu_ls_does() {
        assert_eq!(display_name(b"a\x1bb", true), "$'a\\eb'");
        assert_eq!(display_name(b"a\x1bb", false), "a\x1bb");
        assert_eq!(display_name(b"a\nb", true), "$'a\\nb'");
        assert_eq!(display_name(b"a\xffb", true), "$'a\\xffb'");
        assert_eq!(display_name(b"plain-name_1.txt", true), "plain-name_1.txt");
        assert_eq!(display_name(b"a b", true), "'a b'");
        assert_eq!(display_name(b"a b", false), "a b");
        assert_eq!(display_name(b"it's", true), "\"it's\"");
        assert_eq!(display_name(b"it's $x", true), "'it'\\''s $x'");
        assert_eq!(display_name(b"~x", true), "'~x'");
        assert_eq!(display_name(b"x~", true), "x~");
    }

    #[test]
    fn df_percent_rounds_up() {
        let s = Statvfs {
            bsize: 4096,
            frsize: 4096,
            blocks: 1000,
            bfree: 400,
            bavail: 300,
            files: 100,
            ffree: 40,
            favail: 40,
            fsid: 0,
            flag: 0,
            namemax: 255,
        };
        let [h, l] = df_lines("/", &s, DfMode::Blocks);
        assert_eq!(h, "1K-blocks Used Avail Use% Path");
        assert_eq!(l, "     4000 2400  1200  67% /");
        let [h, l] = df_lines("/", &s, DfMode::Inodes);
        assert_eq!(h, "Inodes IUsed IFree IUse% Path");
        assert_eq!(l, "   100    60    40   60% /");
        let [h, l] = df_lines("/", &s, DfMode::Human);
        assert_eq!(h, "Size Used Avail Use% Path");
        assert_eq!(l, "4.0M 2.4M  1.2M  67% /");
    }
}
