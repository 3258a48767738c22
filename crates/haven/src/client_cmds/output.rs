//! Writing answers for people and for scripts.
//!
//! Everything goes through [`print_line`], [`print_json`] or [`print_bytes`], which turn a
//! closed stdout into [`StdoutClosed`] (a normal end when piping into `head`) instead of
//! the panic `println!` would give.

use std::io::Write;

use base64::Engine;
use serde::Serialize;

/// Stdout was closed by its reader; the command ends successfully.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

fn stdout_error(error: std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::anyhow!("cannot write to stdout: {error}")
    }
}

/// Prints one line (the newline is added).
pub fn print_line(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").and_then(|()| stdout.flush()).map_err(stdout_error)
}

/// Prints `value` as one line of JSON.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string(value).map_err(|error| anyhow::anyhow!("cannot encode JSON: {error}"))?;
    print_line(&text)
}

/// Prints bytes exactly, with nothing added.
pub fn print_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes).and_then(|()| stdout.flush()).map_err(stdout_error)
}

/// A value on one line: printable text as is, text with control characters (newlines,
/// escapes that could rewrite the terminal) as a quoted JSON string, binary as
/// `base64:...`.
pub fn value_on_one_line(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_string(),
        Ok(text) => serde_json::Value::String(text.to_string()).to_string(),
        Err(_) => format!("base64:{}", base64::engine::general_purpose::STANDARD.encode(value)),
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut line = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index == last {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        line.trim_end().to_string()
    };
    let mut lines = vec![render(header.to_vec())];
    lines.extend(rows.iter().map(|row| render(row.iter().map(String::as_str).collect())));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_on_one_line() {
        assert_eq!(value_on_one_line(b"10.0.0.5"), "10.0.0.5");
        assert_eq!(value_on_one_line(b"two\nlines"), "\"two\\nlines\"");
        assert_eq!(value_on_one_line(b"\x1b[2J"), "\"\\u001b[2J\"");
        assert_eq!(value_on_one_line(&[0xff, 0]), "base64:/wA=");
        assert_eq!(value_on_one_line(b""), "");
    }

    #[test]
    fn tables_align_columns() {
        let lines = table(
            &["ID", "ROLE", "URL"],
            &[vec!["1".into(), "leader".into(), "http://a".into()], vec!["12".into(), "learner".into(), "-".into()]],
        );
        assert_eq!(lines, ["ID  ROLE     URL", "1   leader   http://a", "12  learner  -"]);
    }
}
