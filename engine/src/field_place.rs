//! Where a configuration field sits in the text it came from: the line of `edges[1].listenPorts`
//! in a TOML or JSON file, so that an error found after parsing (a port listed twice, a short
//! secret) names the line as a parse error does. Both walk the parsers' own spans (toml's
//! spanned document, serde_json's raw values) rather than searching the text.

/// One step of a field path: a key or an array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `edges[1].listenPorts[0]` as steps; `None` for a malformed index.
fn steps(field: &str) -> Option<Vec<Step<'_>>> {
    let mut steps = Vec::new();
    for segment in field.split('.') {
        let (name, indices) = segment.split_once('[').unwrap_or((segment, ""));
        if !name.is_empty() {
            steps.push(Step::Key(name));
        }
        for index in indices.split('[').filter(|part| !part.is_empty()) {
            steps.push(Step::Index(index.trim_end_matches(']').parse().ok()?));
        }
    }
    Some(steps)
}

/// The 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line in TOML `text` of the value at `field`, or of the nearest enclosing value the text
/// holds; `None` when it holds none of the path.
pub(crate) fn toml_line(text: &str, field: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeValue::Table(DeTable::parse(text).ok()?.into_inner());
    let mut span = None;
    let mut value = &root;
    for step in steps(field)? {
        let found = match (step, value) {
            (Step::Key(name), DeValue::Table(table)) => table
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == name)
                .map(|(_, found)| found),
            (Step::Index(index), DeValue::Array(array)) => array.get(index),
            _ => None,
        };
        let Some(found) = found else {
            break;
        };
        span = Some(found.span());
        value = found.get_ref();
    }
    span.map(|span| line_at(text, span.start))
}

/// The line in JSON `text` of the value at `field` (from the document's root), or of the
/// nearest enclosing value it holds.
pub(crate) fn json_line(text: &str, field: &str) -> Option<usize> {
    use serde_json::value::RawValue;
    let mut value: &RawValue = serde_json::from_str(text).ok()?;
    let mut found_any = false;
    for step in steps(field)? {
        let found = match step {
            Step::Key(name) => {
                serde_json::from_str::<std::collections::HashMap<&str, &RawValue>>(value.get())
                    .ok()
                    .and_then(|object| object.get(name).copied())
            }
            Step::Index(index) => serde_json::from_str::<Vec<&RawValue>>(value.get())
                .ok()
                .and_then(|array| array.get(index).copied()),
        };
        let Some(found) = found else {
            break;
        };
        value = found;
        found_any = true;
    }
    // Every raw value borrows from `text`: its address gives its offset.
    let offset = (value.get().as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    found_any.then(|| line_at(text, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_fields_are_placed_on_their_line() {
        let text = "[hub]\ntunnelPort = 1\n\n[[edges]]\nid = \"a\"\n\n[[edges]]\nid = \"b\"\nlistenPorts = [80,\n  80]\n";
        assert_eq!(toml_line(text, "edges[1].listenPorts"), Some(9));
        assert_eq!(toml_line(text, "edges[1].listenPorts[1]"), Some(10));
        assert_eq!(toml_line(text, "edges[0].id"), Some(5));
        assert_eq!(toml_line(text, "hub.tunnelPort"), Some(2));
        assert_eq!(toml_line(text, "edges[1].secret"), Some(7));
        assert_eq!(toml_line(text, "nothing"), None);
    }

    #[test]
    fn json_fields_are_placed_on_their_line() {
        let text =
            "[\n  {\"id\": \"a\"},\n  {\"id\": \"b\",\n   \"listenPorts\": [80,\n     80]}\n]\n";
        assert_eq!(json_line(text, "[1].listenPorts"), Some(4));
        assert_eq!(json_line(text, "[1].listenPorts[1]"), Some(5));
        assert_eq!(json_line(text, "[0].id"), Some(2));
        assert_eq!(json_line(text, "[1].secret"), Some(3));
        assert_eq!(json_line(text, "[7]"), None);
        assert_eq!(json_line("not json", "[0]"), None);
    }
}
