//! The text log format's field formatter: every field value, the message included, is written
//! with control characters escaped, so that a string a peer chose (an edge id, a report's
//! content, a parse error quoting peer bytes, an SNI name) can neither forge a log line (`\n`,
//! `\r`) nor drive the operator's terminal (ESC sequences), nor reorder the line with Unicode
//! bidi controls. One central place instead of a wrapper at each call site, so a new log
//! statement is safe without anyone remembering to wrap its fields.
//!
//! The JSON format needs none of this: JSON strings escape control characters already.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

/// Formats fields like tracing-subscriber's default (`message` bare, others `name=value`,
/// separated by spaces) with every value escaped by [`Escaping`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EscapingFields;

impl<'writer> FormatFields<'writer> for EscapingFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Visitor {
            writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'writer> {
    writer: Writer<'writer>,
    result: fmt::Result,
    first: bool,
}

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = self.writer.write_str(separator).and_then(|()| {
            // `json.NAME` fields (see `crate::logging`) print as `NAME=`, `json.fields` bare.
            let name = field.name();
            if name != "message" && name != crate::logging::JSON_FIELDS {
                let name = name
                    .strip_prefix(crate::logging::JSON_PREFIX)
                    .unwrap_or(name);
                write!(self.writer, "{name}=")?;
            }
            write!(Escaping(&mut self.writer), "{value:?}")
        });
    }
}

/// Passes text through with control characters, line and paragraph separators and bidi
/// controls written as escapes (`\n`, `\u{1b}`, `\u{202e}`); everything else as it is.
pub(crate) struct Escaping<W>(pub W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| needs_escape(c)) {
            self.0.write_str(&rest[..at])?;
            write!(self.0, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        Escaping(&mut out).write_str(text).unwrap();
        out
    }

    #[test]
    fn control_and_bidi_characters_are_escaped_the_rest_kept() {
        assert_eq!(
            escaped("edge\n2026-01-01 ERROR forged\x1b[31m\r\u{202e}x"),
            "edge\\n2026-01-01 ERROR forged\\u{1b}[31m\\r\\u{202e}x"
        );
        assert_eq!(
            escaped("kante-ü \"quoted\" \\ 東京"),
            "kante-ü \"quoted\" \\ 東京"
        );
        assert_eq!(escaped(""), "");
    }

    #[test]
    fn a_subscriber_with_escaping_fields_writes_one_line_per_event() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .fmt_fields(EscapingFields)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let peer = "id\nWARN forged\x1b[2J";
            tracing::warn!(edge_id = %peer, plain = peer, n = 3, "bad {peer}");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(
            text.contains(r"bad id\nWARN forged\u{1b}[2J edge_id=id\nWARN forged\u{1b}[2J"),
            "{text:?}"
        );
        assert!(
            text.contains(r#"plain="id\nWARN forged\u{1b}[2J" n=3"#),
            "{text:?}"
        );
    }
}
