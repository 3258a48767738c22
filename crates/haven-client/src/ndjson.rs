//! Splits a byte stream into newline-delimited lines, for the NDJSON watch stream.
//!
//! HTTP chunks do not respect line boundaries: one chunk may hold half a line, or three
//! lines and the start of a fourth. The decoder keeps the unfinished tail between chunks
//! and refuses to buffer a line longer than its limit, so a server that never sends a
//! newline cannot make the client grow without bound.

/// Longest watch line accepted. A put event carries one key and one value, base64-encoded
/// when binary (4/3 of the value) or JSON-escaped when text (at most 6 bytes per control
/// byte, but such values are rare); the limit leaves room for the fully escaped worst case.
pub const WATCH_LINE_BYTES_MAX: usize =
    6 * haven_core::limits::VALUE_BYTES_MAX + 2 * haven_core::limits::KEY_BYTES_MAX + 1024;

/// A line was longer than the decoder's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineTooLong {
    pub limit: usize,
}

/// Accumulates chunks and hands out complete lines (without `\n` or `\r\n`).
#[derive(Debug)]
pub struct LineDecoder {
    buffer: Vec<u8>,
    line_bytes_max: usize,
}

impl LineDecoder {
    pub fn new(line_bytes_max: usize) -> Self {
        LineDecoder { buffer: Vec::new(), line_bytes_max }
    }

    /// Adds `chunk` and returns the lines it completed, in order; blank lines are skipped
    /// (they carry nothing and some servers use them as keep-alives).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(newline);
            if self.buffer.len() + head.len() > self.line_bytes_max {
                self.buffer.clear();
                return Err(LineTooLong { limit: self.line_bytes_max });
            }
            self.buffer.extend_from_slice(head);
            let mut line = std::mem::take(&mut self.buffer);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                lines.push(line);
            }
            rest = &tail[1..];
        }
        if self.buffer.len() + rest.len() > self.line_bytes_max {
            self.buffer.clear();
            return Err(LineTooLong { limit: self.line_bytes_max });
        }
        self.buffer.extend_from_slice(rest);
        Ok(lines)
    }

    /// Bytes of an unfinished line; a stream that ends with some was cut mid-line.
    pub fn pending_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Forgets an unfinished line: after a reconnect the stream starts on a line boundary.
    pub fn reset(&mut self) {
        self.buffer.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(decoder: &mut LineDecoder, chunk: &str) -> Vec<String> {
        decoder.push(chunk.as_bytes()).unwrap().into_iter().map(|l| String::from_utf8(l).unwrap()).collect()
    }

    #[test]
    fn a_line_split_across_chunks_is_joined() {
        let mut d = LineDecoder::new(100);
        assert!(lines(&mut d, r#"{"type":"pro"#).is_empty());
        assert_eq!(d.pending_bytes(), 12);
        assert_eq!(lines(&mut d, "gress\",\"revision\":1}\n"), [r#"{"type":"progress","revision":1}"#]);
        assert_eq!(d.pending_bytes(), 0);
    }

    #[test]
    fn several_lines_in_one_chunk_and_a_tail() {
        let mut d = LineDecoder::new(100);
        assert_eq!(lines(&mut d, "a\nb\r\n\n  \nc"), ["a", "b"]);
        assert_eq!(lines(&mut d, "\n"), ["c"]);
    }

    /// Every split point of a stream gives the same lines as the whole stream.
    #[test]
    fn every_split_point_gives_the_same_lines() {
        let stream = "one\ntwo\r\nthree\n\nfour\n";
        for split in 0..=stream.len() {
            let mut d = LineDecoder::new(100);
            let mut got = lines(&mut d, &stream[..split]);
            got.extend(lines(&mut d, &stream[split..]));
            assert_eq!(got, ["one", "two", "three", "four"], "split at {split}");
        }
        // And byte by byte.
        let mut d = LineDecoder::new(100);
        let got: Vec<String> = stream.chars().flat_map(|c| lines(&mut d, &c.to_string())).collect();
        assert_eq!(got, ["one", "two", "three", "four"]);
    }

    #[test]
    fn a_line_longer_than_the_limit_is_refused() {
        let mut d = LineDecoder::new(4);
        assert_eq!(lines(&mut d, "1234\n"), ["1234"]);
        assert!(d.push(b"123").is_ok());
        assert_eq!(d.push(b"45"), Err(LineTooLong { limit: 4 }));
        let mut d = LineDecoder::new(4);
        assert_eq!(d.push(b"12345\n"), Err(LineTooLong { limit: 4 }));
    }

    #[test]
    fn reset_drops_a_partial_line() {
        let mut d = LineDecoder::new(100);
        assert!(lines(&mut d, "half").is_empty());
        d.reset();
        assert_eq!(lines(&mut d, "whole\n"), ["whole"]);
    }
}
