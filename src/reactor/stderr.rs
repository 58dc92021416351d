//! The child's stderr: logged line by line, its last lines kept for error messages.

use std::collections::VecDeque;

/// Lines of stderr kept for error messages.
const TAIL_LINES: usize = 20;
/// A stderr line longer than this is cut, so a chatty child cannot grow memory.
const LINE_MAX: usize = 4096;

/// The last lines the child wrote to stderr, and the line it is writing.
#[derive(Default)]
pub(super) struct StderrTail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl StderrTail {
    /// Takes bytes from stderr: each whole line is logged and kept (empty ones dropped).
    pub(super) fn push(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial)
                    .trim_end()
                    .to_string();
                self.partial.clear();
                if line.is_empty() {
                    continue;
                }
                log::info!(target: "sftpipe::ssh", "{line}");
                if self.lines.len() == TAIL_LINES {
                    self.lines.pop_front();
                }
                self.lines.push_back(line);
            } else if self.partial.len() < LINE_MAX && b != b'\r' {
                self.partial.push(b);
            }
        }
    }

    /// The lines kept, oldest first.
    pub(super) fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_cut_to_their_maximum() {
        let mut t = StderrTail::default();
        for i in 0..TAIL_LINES + 5 {
            t.push(format!("line {i}\r\n\n").as_bytes());
        }
        t.push(&vec![b'x'; LINE_MAX * 2]);
        t.push(b"\nunfinished");
        let lines = t.lines();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines[0], "line 6");
        assert_eq!(lines[TAIL_LINES - 1].len(), LINE_MAX);
    }
}
