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

/// RFC 3339 in UTC, to the second (`2024-05-01T12:00:00Z`), for ms since the Unix epoch.
pub fn format_rfc3339(ms: u64) -> String {
    let seconds = ms / 1000;
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Text from a server on one line: as is when printable, else quoted (see
/// [`value_on_one_line`]).
pub fn text_on_one_line(text: &str) -> String {
    value_on_one_line(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_in_utc() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400_999), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_rfc3339(4_102_444_799_000), "2099-12-31T23:59:59Z");
    }

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
