//! The login throttle: slows sources whose logins fail, bounds pending handshakes, and never
//! locks out a good edge (sans-IO: callers pass `now`).
//!
//! - Only *completed* logins that failed (wrong proof, unknown edge id) count. A bare TCP
//!   connect, a port scan or a health checker costs nothing, so a NAT neighbour cannot lock an
//!   edge out.
//! - A source is an IPv4 address or an IPv6 /64 (one customer's prefix).
//! - After [`FREE_FAILURES`] failures a source's logins are answered after a growing delay
//!   ([`BASE_DELAY`] doubling, at most [`MAX_DELAY`]), so a correct login from a slowed source
//!   still succeeds within a few seconds while guessing gets slow.
//! - At most [`MAX_PENDING_PER_SOURCE`] handshakes per source and [`MAX_PENDING_TOTAL`] in all
//!   may be in progress (slowloris handshakes hold one until the handshake deadline); beyond
//!   that a connection is refused at once and counted.
//! - Memory is bounded: at most [`MAX_TRACKED_SOURCES`] records; under a flood of new sources
//!   the records with the fewest failures go first, so a slowed source is not evicted (and
//!   thereby pardoned) by an attacker spraying addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Failed logins a source may have before its logins are delayed.
pub const FREE_FAILURES: u32 = 3;
/// Delay after the first failure past [`FREE_FAILURES`]; doubles with each further failure.
pub const BASE_DELAY: Duration = Duration::from_millis(250);
/// Longest delay: a correct edge from a slowed source logs in within about this.
pub const MAX_DELAY: Duration = Duration::from_secs(3);
/// A source's failures are forgotten this long after its last one.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// Handshakes one source may have in progress.
pub const MAX_PENDING_PER_SOURCE: u32 = 16;
/// Handshakes all sources together may have in progress.
pub const MAX_PENDING_TOTAL: usize = 1024;
/// Sources tracked at most.
pub const MAX_TRACKED_SOURCES: usize = 10_000;

/// A login source: the IPv4 address, or the /64 of an IPv6 address.
pub use crate::source_key::SourceKey;

/// Why a handshake was refused before it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many handshakes in progress from this source ({MAX_PENDING_PER_SOURCE})")]
    SourceBusy,
    #[error("too many handshakes in progress")]
    HubBusy,
}

/// How a handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The edge logged in.
    Succeeded,
    /// A complete login was refused (wrong proof or unknown edge id).
    Failed,
    /// Anything else: TLS failed, garbage, timeout, peer gone. Not counted.
    Abandoned,
}

#[derive(Debug, Default, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Option<Instant>,
    pending: u32,
}

impl Record {
    /// Failures still remembered at `now`.
    fn failures_at(&self, now: Instant) -> u32 {
        match self.last_failure {
            Some(at) if now.saturating_duration_since(at) < FAILURE_MEMORY => self.failures,
            _ => 0,
        }
    }
}

/// Per-source login state of the hub.
#[derive(Debug)]
pub struct LoginThrottle {
    sources: HashMap<SourceKey, Record>,
    pending_total: usize,
    max_pending_total: usize,
    refused: u64,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(MAX_PENDING_TOTAL)
    }
}

/// Locks the throttle; `None` when a panic poisoned it, and callers then refuse the login
/// (fail closed): a throttle in an unknown state must not let guessing through unslowed.
pub fn lock(throttle: &Mutex<LoginThrottle>) -> Option<MutexGuard<'_, LoginThrottle>> {
    match throttle.lock() {
        Ok(guard) => Some(guard),
        Err(_) => {
            tracing::error!("login throttle poisoned by a panic; refusing logins");
            None
        }
    }
}

/// The delay for a source with `failures` remembered failures.
pub fn delay_for(failures: u32) -> Duration {
    let Some(over) = failures.checked_sub(FREE_FAILURES + 1) else {
        return Duration::ZERO;
    };
    BASE_DELAY
        .checked_mul(1u32 << over.min(16))
        .map_or(MAX_DELAY, |delay| delay.min(MAX_DELAY))
}

impl LoginThrottle {
    /// A throttle letting at most `max_pending_total` handshakes (and never more than
    /// [`MAX_PENDING_TOTAL`]) be in progress: the hub derives it from its open-file limit.
    pub fn new(max_pending_total: usize) -> Self {
        Self {
            sources: HashMap::new(),
            pending_total: 0,
            max_pending_total: max_pending_total.clamp(1, MAX_PENDING_TOTAL),
            refused: 0,
        }
    }

    /// Starts a handshake from `ip`, or refuses it (counted) when too many are in progress.
    pub fn begin(&mut self, ip: IpAddr, now: Instant) -> Result<SourceKey, Refusal> {
        let key = SourceKey::of(ip);
        let pending = self.sources.get(&key).map_or(0, |record| record.pending);
        let refusal = if pending >= MAX_PENDING_PER_SOURCE {
            Some(Refusal::SourceBusy)
        } else if self.pending_total >= self.max_pending_total {
            Some(Refusal::HubBusy)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.refused = self.refused.saturating_add(1);
            return Err(refusal);
        }
        if !self.sources.contains_key(&key) {
            self.make_room(now);
        }
        self.sources.entry(key).or_default().pending += 1;
        self.pending_total += 1;
        Ok(key)
    }

    /// How long to hold a login from `key` before checking it.
    pub fn delay(&self, key: SourceKey, now: Instant) -> Duration {
        self.sources
            .get(&key)
            .map_or(Duration::ZERO, |record| delay_for(record.failures_at(now)))
    }

    /// Ends a handshake started with [`Self::begin`].
    pub fn finish(&mut self, key: SourceKey, outcome: Outcome, now: Instant) {
        let Some(record) = self.sources.get_mut(&key) else {
            return;
        };
        if record.pending > 0 {
            record.pending -= 1;
            self.pending_total = self.pending_total.saturating_sub(1);
        }
        match outcome {
            Outcome::Succeeded => {
                record.failures = 0;
                record.last_failure = None;
            }
            Outcome::Failed => {
                record.failures = record.failures_at(now).saturating_add(1);
                record.last_failure = Some(now);
            }
            Outcome::Abandoned => {}
        }
        if record.pending == 0 && record.failures_at(now) == 0 {
            self.sources.remove(&key);
        }
    }

    /// Connections refused because too many handshakes were in progress.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Sources whose logins are delayed now.
    pub fn slowed_sources(&self, now: Instant) -> usize {
        self.sources
            .values()
            .filter(|record| record.failures_at(now) > FREE_FAILURES)
            .count()
    }

    /// Number of tracked sources.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// Keeps the table under [`MAX_TRACKED_SOURCES`]: forgets expired records, then the idle
    /// record with the fewest failures (the oldest among equals).
    fn make_room(&mut self, now: Instant) {
        if self.sources.len() < MAX_TRACKED_SOURCES {
            return;
        }
        self.sources
            .retain(|_, record| record.pending > 0 || record.failures_at(now) > 0);
        if self.sources.len() < MAX_TRACKED_SOURCES {
            return;
        }
        let victim = self
            .sources
            .iter()
            .filter(|(_, record)| record.pending == 0)
            .min_by_key(|(_, record)| (record.failures_at(now), record.last_failure))
            .map(|(key, _)| *key);
        if let Some(victim) = victim {
            self.sources.remove(&victim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn fail(throttle: &mut LoginThrottle, source: IpAddr, now: Instant) {
        let key = throttle.begin(source, now).unwrap();
        throttle.finish(key, Outcome::Failed, now);
    }

    #[test]
    fn the_delay_grows_from_zero_to_the_cap() {
        let delays: Vec<Duration> = (0..12).map(delay_for).collect();
        assert!(delays[..=FREE_FAILURES as usize]
            .iter()
            .all(|d| d.is_zero()));
        assert_eq!(delays[FREE_FAILURES as usize + 1], BASE_DELAY);
        assert_eq!(delays[FREE_FAILURES as usize + 2], BASE_DELAY * 2);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(delay_for(11), MAX_DELAY);
        assert_eq!(delay_for(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn only_failed_logins_count_and_success_clears() {
        let mut throttle = LoginThrottle::default();
        let now = Instant::now();
        let source = ip("192.0.2.1");
        for _ in 0..100 {
            let key = throttle.begin(source, now).unwrap();
            throttle.finish(key, Outcome::Abandoned, now);
        }
        assert_eq!(throttle.tracked(), 0, "bare connects leave nothing behind");
        for _ in 0..10 {
            fail(&mut throttle, source, now);
        }
        let key = SourceKey::of(source);
        assert_eq!(throttle.delay(key, now), MAX_DELAY);
        assert_eq!(throttle.slowed_sources(now), 1);
        assert!(throttle
            .delay(SourceKey::of(ip("192.0.2.2")), now)
            .is_zero());
        let key = throttle.begin(source, now).unwrap();
        throttle.finish(key, Outcome::Succeeded, now);
        assert!(throttle.delay(key, now).is_zero());
        assert_eq!(throttle.tracked(), 0);
    }

    #[test]
    fn failures_are_forgotten_after_the_memory() {
        let mut throttle = LoginThrottle::default();
        let start = Instant::now();
        let source = ip("192.0.2.1");
        for _ in 0..10 {
            fail(&mut throttle, source, start);
        }
        let later = start + FAILURE_MEMORY;
        assert!(throttle.delay(SourceKey::of(source), later).is_zero());
        fail(&mut throttle, source, later);
        assert!(throttle.delay(SourceKey::of(source), later).is_zero());
    }

    #[test]
    fn ipv6_sources_are_keyed_by_their_64() {
        let mut throttle = LoginThrottle::default();
        let now = Instant::now();
        for host in 1..=10 {
            fail(&mut throttle, ip(&format!("2001:db8:1:2::{host:x}")), now);
        }
        assert_eq!(throttle.tracked(), 1);
        let same_prefix = SourceKey::of(ip("2001:db8:1:2:ffff::1"));
        assert_eq!(throttle.delay(same_prefix, now), MAX_DELAY);
        assert!(throttle
            .delay(SourceKey::of(ip("2001:db8:1:3::1")), now)
            .is_zero());
        assert_eq!(
            SourceKey::of(ip("::ffff:192.0.2.7")),
            SourceKey::of(ip("192.0.2.7"))
        );
    }

    #[test]
    fn pending_handshakes_are_bounded_per_source_and_in_total() {
        let mut throttle = LoginThrottle::default();
        let now = Instant::now();
        let source = ip("192.0.2.1");
        let keys: Vec<SourceKey> = (0..MAX_PENDING_PER_SOURCE)
            .map(|_| throttle.begin(source, now).unwrap())
            .collect();
        assert_eq!(throttle.begin(source, now), Err(Refusal::SourceBusy));
        assert!(throttle.begin(ip("192.0.2.2"), now).is_ok());
        throttle.finish(keys[0], Outcome::Abandoned, now);
        assert!(throttle.begin(source, now).is_ok());
        assert_eq!(throttle.refused(), 1);

        let mut throttle = LoginThrottle::default();
        for i in 0..MAX_PENDING_TOTAL as u32 {
            throttle
                .begin(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), now)
                .unwrap();
        }
        assert_eq!(throttle.begin(ip("192.0.2.9"), now), Err(Refusal::HubBusy));
    }

    #[test]
    fn a_poisoned_throttle_is_not_handed_out() {
        let throttle = std::sync::Arc::new(Mutex::new(LoginThrottle::default()));
        assert!(lock(&throttle).is_some());
        let clone = throttle.clone();
        let _ = std::thread::spawn(move || {
            let _guard = clone.lock().unwrap();
            panic!("poison");
        })
        .join();
        assert!(lock(&throttle).is_none());
    }

    #[test]
    fn a_flood_of_new_sources_does_not_evict_slowed_ones() {
        let mut throttle = LoginThrottle::default();
        let now = Instant::now();
        let attacker = ip("198.51.100.1");
        for _ in 0..10 {
            fail(&mut throttle, attacker, now);
        }
        for i in 0..(MAX_TRACKED_SOURCES as u32 * 2) {
            fail(
                &mut throttle,
                IpAddr::from((0x0a00_0000 + i).to_be_bytes()),
                now,
            );
        }
        assert!(throttle.tracked() <= MAX_TRACKED_SOURCES);
        assert_eq!(throttle.delay(SourceKey::of(attacker), now), MAX_DELAY);
    }
}
