//! Log setup: lines on stderr as text ([`crate::log_text`]) or JSON, filtered by
//! `REMOTEINGRESS_LOG` (default [`DEFAULT_FILTER`]).
//!
//! JSON lines are tracing-subscriber's, with one addition ([`StructuredJson`]): tracing's field
//! names are fixed at compile time and its values are strings or numbers, so an event's data or
//! a status cannot be given as a JSON object directly. A field named `json.NAME` carries JSON
//! text instead; in a JSON line it becomes the value itself under `NAME` (a nested object), and
//! `json.fields` (an object) becomes fields of the line. Event lines thus read
//! `{"event":"edgeConnected","edgeId":"paris","transport":"quic",...}` rather than an escaped
//! string in `message`. In text lines the same fields print their JSON as it is (escaped).

use std::fmt;

use serde_json::{Map, Value};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::{env_vars, LogFormat};

/// The filter when `REMOTEINGRESS_LOG` is not set: our own lines at info, the TLS and QUIC
/// libraries' only from warn (their info and debug lines are about each handshake).
pub(crate) const DEFAULT_FILTER: &str =
    "info,rustls=warn,quinn=warn,quinn_proto=warn,quinn_udp=warn";

/// Field-name prefix of a field that holds JSON text.
pub(crate) const JSON_PREFIX: &str = "json.";
/// The field whose JSON object's members become fields of the line.
pub(crate) const JSON_FIELDS: &str = "json.fields";

/// The filter: `REMOTEINGRESS_LOG` when set and valid, else [`DEFAULT_FILTER`].
pub(crate) fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env(env_vars::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER))
}

/// Installs the process's log subscriber.
pub fn init(format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match format {
        // Peer-chosen strings must not forge lines or reach the terminal raw.
        LogFormat::Text => logs.fmt_fields(crate::log_text::EscapingFields).init(),
        LogFormat::Json => logs
            .fmt_fields(JsonFields::new())
            .event_format(json_format())
            .init(),
    }
}

/// The JSON line format.
pub(crate) fn json_format() -> StructuredJson {
    StructuredJson(tracing_subscriber::fmt::format().json().flatten_event(true))
}

/// tracing-subscriber's JSON lines with the `json.` fields lifted (see the module doc).
#[derive(Debug)]
pub(crate) struct StructuredJson(Format<Json>);

impl<S, N> FormatEvent<S, N> for StructuredJson
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match lift(&line) {
            Some(lifted) => writer.write_str(&lifted),
            None => writer.write_str(&line),
        }
    }
}

/// `line` with its `json.` fields lifted, or `None` when it has none (or is not an object).
fn lift(line: &str) -> Option<String> {
    if !line.contains(&format!("\"{JSON_PREFIX}")) {
        return None;
    }
    let object: Map<String, Value> = serde_json::from_str(line.trim_end()).ok()?;
    let mut out = Map::with_capacity(object.len() + 8);
    let mut members = Vec::new();
    for (key, value) in &object {
        let Some(name) = key.strip_prefix(JSON_PREFIX) else {
            out.insert(key.clone(), value.clone());
            continue;
        };
        let parsed = value
            .as_str()
            .and_then(|text| serde_json::from_str::<Value>(text).ok());
        match parsed {
            Some(Value::Object(fields)) if key == JSON_FIELDS => members.extend(fields),
            Some(parsed) => {
                out.insert(name.to_owned(), parsed);
            }
            // Not JSON after all: kept as the string it is.
            None => {
                out.insert(name.to_owned(), value.clone());
            }
        }
    }
    // The members go before `target` (tracing's last key). The line's own keys (timestamp,
    // level, event, ...) are never overwritten: a member of the same name is `data.NAME`.
    let rename = |member: String| {
        if object.contains_key(&member) || out.contains_key(&member) {
            format!("data.{member}")
        } else {
            member
        }
    };
    let members: Vec<(String, Value)> = members
        .into_iter()
        .map(|(member, value)| (rename(member), value))
        .collect();
    let target = out.shift_remove("target");
    let mut lifted = out;
    lifted.extend(members);
    if let Some(target) = target {
        lifted.insert("target".to_owned(), target);
    }
    let mut text = serde_json::to_string(&lifted).ok()?;
    text.push('\n');
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields_are_lifted_into_the_line_and_json_values_nested() {
        let line = r#"{"timestamp":"t","level":"INFO","event":"edgeConnected","json.fields":"{\"edgeId\":\"paris\",\"transport\":\"quic\",\"level\":\"x\"}","json.status":"{\"role\":\"hub\"}","json.bad":"not json","target":"remoteingress::event"}"#;
        let lifted: Value = serde_json::from_str(&lift(line).unwrap()).unwrap();
        assert_eq!(
            lifted,
            serde_json::json!({"timestamp":"t","level":"INFO","event":"edgeConnected",
                "status":{"role":"hub"},"bad":"not json","edgeId":"paris","transport":"quic",
                "data.level":"x","target":"remoteingress::event"})
        );
        assert_eq!(lift(r#"{"message":"plain"}"#), None);
    }

    #[test]
    fn the_default_filter_keeps_rustls_and_quinn_at_warn() {
        use tracing::Level;
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(DEFAULT_FILTER))
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::enabled!(target: "remoteingress::hub", Level::INFO));
            assert!(!tracing::enabled!(target: "rustls::conn", Level::INFO));
            assert!(tracing::enabled!(target: "rustls::conn", Level::WARN));
            assert!(!tracing::enabled!(target: "quinn::endpoint", Level::INFO));
            assert!(!tracing::enabled!(target: "quinn_proto::connection", Level::INFO));
            assert!(tracing::enabled!(target: "quinn_proto::connection", Level::WARN));
        });
    }
}
