//! Prometheus metrics and health endpoints (`metricsAddr`): [`counters`] counts what the events
//! report, [`render`] turns a status snapshot and those counters into the text format, [`server`]
//! serves `/metrics`, `/healthz` and `/readyz`. Nothing here runs on the data path: byte and
//! stream counts are the atomics status already reads, taken at scrape time.

pub(crate) mod counters;
pub(crate) mod render;
pub(crate) mod server;
pub(crate) mod slots;
pub(crate) mod text_format;
