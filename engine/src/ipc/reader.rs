//! stdin line reader with a per-line byte cap.
//!
//! A line over the cap is not buffered: the reader keeps its first bytes for the error report,
//! discards the rest up to the next newline, and carries on with the following line. So a
//! misbehaving host can neither exhaust memory nor desynchronise the protocol.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest accepted request line (docs/architecture.md, "IPC contract").
pub(crate) const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Bytes of an oversized line kept for the `ipcError` report.
pub(crate) const KEPT_PREFIX: usize = 256;

/// One unit of input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InputLine {
    /// A complete line, without its `\n` (and without a trailing `\r`).
    Line(Vec<u8>),
    /// A line longer than the cap; `prefix` holds its first bytes, `len` its full length.
    Oversized { prefix: Vec<u8>, len: usize },
}

/// Reads capped lines from a buffered reader.
#[derive(Debug)]
pub(crate) struct LineReader<R> {
    inner: R,
    max: usize,
    buf: Vec<u8>,
    /// `Some(len)` while skipping the rest of an oversized line.
    discarding: Option<usize>,
    prefix: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            max,
            buf: Vec::new(),
            discarding: None,
            prefix: Vec::new(),
        }
    }

    /// The next line, or `None` at end of input. A final line without `\n` still counts.
    pub(crate) async fn next_line(&mut self) -> std::io::Result<Option<InputLine>> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                return Ok(self.finish_line());
            }
            let (chunk, found_newline) = match memchr::memchr(b'\n', available) {
                Some(at) => (&available[..at], true),
                None => (available, false),
            };
            let consumed = chunk.len() + usize::from(found_newline);
            match self.discarding.as_mut() {
                Some(len) => *len += chunk.len(),
                None if self.buf.len() + chunk.len() > self.max => {
                    let total = self.buf.len() + chunk.len();
                    let mut prefix = std::mem::take(&mut self.buf);
                    let room = KEPT_PREFIX.saturating_sub(prefix.len());
                    prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    prefix.truncate(KEPT_PREFIX);
                    prefix.shrink_to_fit();
                    self.prefix = prefix;
                    self.discarding = Some(total);
                }
                None => self.buf.extend_from_slice(chunk),
            }
            self.inner.consume(consumed);
            if found_newline {
                if let Some(line) = self.finish_line() {
                    return Ok(Some(line));
                }
            }
        }
    }

    /// Completes the current line (at a newline or at end of input).
    fn finish_line(&mut self) -> Option<InputLine> {
        if let Some(len) = self.discarding.take() {
            return Some(InputLine::Oversized {
                prefix: std::mem::take(&mut self.prefix),
                len,
            });
        }
        if self.buf.is_empty() {
            return None;
        }
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(InputLine::Line(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    async fn read_all(input: &[u8], max: usize, capacity: usize) -> Vec<InputLine> {
        let mut reader = LineReader::new(BufReader::with_capacity(capacity, input), max);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_a_final_partial_line() {
        let lines = read_all(b"a\nbb\r\n\nccc", 100, 2).await;
        assert_eq!(
            lines,
            vec![
                InputLine::Line(b"a".to_vec()),
                InputLine::Line(b"bb".to_vec()),
                InputLine::Line(b"ccc".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn oversized_line_is_reported_and_the_next_line_survives() {
        let mut input = vec![b'x'; 1000];
        input.extend_from_slice(b"\nok\n");
        for capacity in [1, 7, 64, 4096] {
            let lines = read_all(&input, 100, capacity).await;
            assert_eq!(lines.len(), 2, "capacity {capacity}");
            match &lines[0] {
                InputLine::Oversized { prefix, len } => {
                    assert_eq!(*len, 1000);
                    assert!(prefix.len() <= KEPT_PREFIX && prefix.iter().all(|&b| b == b'x'));
                }
                other => panic!("expected oversized, got {other:?}"),
            }
            assert_eq!(lines[1], InputLine::Line(b"ok".to_vec()));
        }
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_cap_is_accepted() {
        let mut input = vec![b'y'; 100];
        input.push(b'\n');
        let lines = read_all(&input, 100, 16).await;
        assert_eq!(lines, vec![InputLine::Line(vec![b'y'; 100])]);
    }
}
