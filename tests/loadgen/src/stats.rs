//! Latency tallies and readings of other processes' memory.

use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Latencies (in nanoseconds) of completed operations and the count of failed ones.
pub(crate) struct Tally {
    latencies: Histogram<u64>,
    errors: u64,
}

impl Tally {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            latencies: Histogram::new(3)?,
            errors: 0,
        })
    }

    pub(crate) fn record(&mut self, latency: Duration) -> Result<()> {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latencies.record(nanos.max(1))?;
        Ok(())
    }

    /// Counts a failed operation; the first one of each tally is printed to stderr.
    pub(crate) fn fail(&mut self, error: &anyhow::Error) {
        if self.errors == 0 {
            eprintln!("ri-loadgen: {error:#}");
        }
        self.errors += 1;
    }

    pub(crate) fn merge(&mut self, other: &Self) -> Result<()> {
        self.latencies.add(&other.latencies)?;
        self.errors += other.errors;
        Ok(())
    }

    /// Completed operations.
    pub(crate) fn count(&self) -> u64 {
        self.latencies.len()
    }

    /// Failed operations.
    pub(crate) fn errors(&self) -> u64 {
        self.errors
    }

    pub(crate) fn quantile_us(&self, quantile: f64) -> f64 {
        self.latencies.value_at_quantile(quantile) as f64 / 1e3
    }

    /// `count`, `errors`, the rate over `elapsed` (named `rate_name`) and p50/p99/p999.
    pub(crate) fn summary(&self, rate_name: &str, elapsed: Duration) -> Value {
        let rate = self.count() as f64 / elapsed.as_secs_f64();
        json!({
            "count": self.count(), "errors": self.errors, "seconds": elapsed.as_secs_f64(),
            rate_name: rate,
            "p50_us": self.quantile_us(0.5),
            "p99_us": self.quantile_us(0.99),
            "p999_us": self.quantile_us(0.999),
        })
    }
}

/// Resident set size of process `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .with_context(|| format!("no VmRSS in {path}"))?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse()
        .with_context(|| format!("VmRSS {kib:?} in {path}"))
}
