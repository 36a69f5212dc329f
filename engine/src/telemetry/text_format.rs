//! Which exposition format a scraper gets from `/metrics`. prometheus-client encodes
//! OpenMetrics only, where a counter family `x` has the samples `x_total`; a scraper that reads
//! the older Prometheus text format (0.0.4) matches samples to families by name, so it types
//! every counter as `untyped`. Scrapers that ask for OpenMetrics (`Accept:
//! application/openmetrics-text`, as Prometheus does) get it as encoded; every other one gets
//! the text format, converted here. The conversion is by hand because no well-kept crate
//! converts between the two: it renames the counter families' `# HELP`/`# TYPE` lines to the
//! `_total` samples they describe and drops what 0.0.4 lacks (`# UNIT`, `# EOF`). It only ever
//! reads text encoded by prometheus-client, where a label value cannot start a line.

use std::collections::HashSet;

/// Content type of OpenMetrics 1.0.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format.
pub(crate) const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// True when the request's `Accept` header asks for OpenMetrics (not refused with `q=0`).
pub(crate) fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let refused = parts.any(|param| {
                param
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// The Prometheus text format (0.0.4) of `openmetrics`.
pub(crate) fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|kind| line.strip_prefix(kind).map(|rest| (kind, rest)));
        if let Some((kind, rest)) = descriptor {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                text.push_str(kind);
                text.push_str(name);
                text.push_str("_total ");
                text.push_str(tail);
                text.push('\n');
                continue;
            }
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_and_eof_is_dropped() {
        let openmetrics = "# HELP ri_streams Streams opened.\n# TYPE ri_streams counter\n\
            ri_streams_total{edge_id=\"a\"} 3\n# HELP ri_up 1 while up.\n# TYPE ri_up gauge\n\
            ri_up 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(openmetrics),
            "# HELP ri_streams_total Streams opened.\n# TYPE ri_streams_total counter\n\
             ri_streams_total{edge_id=\"a\"} 3\n# HELP ri_up 1 while up.\n# TYPE ri_up gauge\n\
             ri_up 1\n"
        );
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
            version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
    }
}
