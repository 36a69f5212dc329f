//! Edge authentication: constant-time secret comparison and a per-source limiter that slows down
//! repeated failures (DESIGN section 5, handshake step 3).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Compares two secrets in constant time. Both are hashed first so that neither the content nor
/// the length of the expected secret leaks through timing.
pub fn secrets_match(expected: &str, presented: &str) -> bool {
    let expected = Sha256::digest(expected.as_bytes());
    let presented = Sha256::digest(presented.as_bytes());
    expected.ct_eq(&presented).into()
}

/// Failures allowed per source address within [`FAILURE_WINDOW`] before it is refused.
pub const MAX_FAILURES_PER_WINDOW: u32 = 10;
/// Window of the failure count.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked at most; the oldest are forgotten first (bounds memory under a scan).
const MAX_TRACKED_SOURCES: usize = 10_000;

/// Counts handshake failures per source address (sans-IO: callers pass `now`).
#[derive(Debug, Default)]
pub struct FailureLimiter {
    sources: HashMap<IpAddr, Window>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl FailureLimiter {
    /// True when `source` has used up its failures and must be refused without a handshake.
    pub fn is_blocked(&self, source: IpAddr, now: Instant) -> bool {
        self.sources.get(&source).is_some_and(|window| {
            now.duration_since(window.started) < FAILURE_WINDOW
                && window.failures >= MAX_FAILURES_PER_WINDOW
        })
    }

    /// Records one failed handshake from `source`.
    pub fn record_failure(&mut self, source: IpAddr, now: Instant) {
        if self.sources.len() >= MAX_TRACKED_SOURCES && !self.sources.contains_key(&source) {
            self.forget_expired(now);
            if self.sources.len() >= MAX_TRACKED_SOURCES {
                if let Some(oldest) = self
                    .sources
                    .iter()
                    .min_by_key(|(_, window)| window.started)
                    .map(|(ip, _)| *ip)
                {
                    self.sources.remove(&oldest);
                }
            }
        }
        let window = self.sources.entry(source).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(window.started) >= FAILURE_WINDOW {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
    }

    /// A successful login clears the source's record.
    pub fn record_success(&mut self, source: IpAddr) {
        self.sources.remove(&source);
    }

    fn forget_expired(&mut self, now: Instant) {
        self.sources
            .retain(|_, window| now.duration_since(window.started) < FAILURE_WINDOW);
    }

    /// Number of tracked sources (for tests and status).
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_value() {
        assert!(secrets_match("s3cret", "s3cret"));
        assert!(!secrets_match("s3cret", "s3cres"));
        assert!(!secrets_match("s3cret", "s3cret-longer"));
        assert!(!secrets_match("s3cret", ""));
    }

    #[test]
    fn a_source_is_blocked_after_the_limit_until_the_window_passes() {
        let mut limiter = FailureLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let start = Instant::now();
        for _ in 0..MAX_FAILURES_PER_WINDOW {
            assert!(!limiter.is_blocked(ip, start));
            limiter.record_failure(ip, start);
        }
        assert!(limiter.is_blocked(ip, start + Duration::from_secs(30)));
        assert!(!limiter.is_blocked(other, start));
        assert!(!limiter.is_blocked(ip, start + FAILURE_WINDOW));
        limiter.record_failure(ip, start + FAILURE_WINDOW);
        assert!(!limiter.is_blocked(ip, start + FAILURE_WINDOW));
        limiter.record_success(ip);
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn memory_stays_bounded_under_many_sources() {
        let mut limiter = FailureLimiter::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED_SOURCES as u32 + 500) {
            limiter.record_failure(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(limiter.tracked() <= MAX_TRACKED_SOURCES);
    }
}
