//! The login throttle: slows sources and edge ids whose logins fail, bounds pending handshakes
//! without letting them lock anybody out, and never locks out a good edge (sans-IO: callers
//! pass `now`).
//!
//! - Only *completed* logins that failed (wrong proof, unknown edge id) count. A bare TCP
//!   connect, a port scan or a health checker costs nothing, so a NAT neighbour cannot lock an
//!   edge out.
//! - A source is an IPv4 address or an IPv6 /64 (one customer's prefix).
//! - After [`FREE_FAILURES`] failures of a source, or of an edge id (guessing from rotating
//!   sources), every login from that source or for that id is answered after a growing delay
//!   ([`BASE_DELAY`] doubling, at most [`MAX_DELAY`]), so a correct login still succeeds within a
//!   few seconds while guessing gets slow: each delayed guess holds one of the hub-wide pending
//!   slots for the delay, so the hub answers at most [`MAX_PENDING_TOTAL`] guesses per
//!   [`MAX_DELAY`] whatever the number of sources. The proof is checked before the delay, and a
//!   verified login never makes way for another connection while it waits.
//! - Pending handshakes are bounded per source and in total ([`super::pending`]); at a cap the
//!   least advanced one makes way for the new connection, which is never refused.
//! - Memory is bounded: at most [`MAX_TRACKED_SOURCES`] failure records of each kind; under a
//!   flood of new sources the records with the fewest failures go first, so a slowed source is
//!   not evicted (and thereby pardoned) by an attacker spraying addresses. Edge ids are kept as
//!   a keyed 64-bit hash, not as the (up to 4 KiB) id.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::pending::PendingLogins;
pub(crate) use super::pending::{Admitted, AllVerified, PendingId, Stage, MAX_PENDING_TOTAL};

/// Failed logins a source (or an edge id) may have before its logins are delayed.
pub(crate) const FREE_FAILURES: u32 = 3;
/// Delay after the first failure past [`FREE_FAILURES`]; doubles with each further failure.
pub(crate) const BASE_DELAY: Duration = Duration::from_millis(250);
/// Longest delay: a correct edge from a slowed source logs in within about this.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(3);
/// A source's failures are forgotten this long after its last one.
pub(crate) const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// Sources (and, separately, edge ids) tracked at most.
pub(crate) const MAX_TRACKED_SOURCES: usize = 10_000;

/// A login source: the IPv4 address, or the /64 of an IPv6 address.
pub(crate) use crate::source_key::SourceKey;

/// How a handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The edge logged in.
    Succeeded,
    /// A complete login was refused (wrong proof or unknown edge id).
    Failed,
    /// Anything else: TLS failed, garbage, timeout, peer gone, evicted. Not counted.
    Abandoned,
}

#[derive(Debug, Default, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Option<Instant>,
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

/// Remembered failures per key (a source, an edge id), at most [`MAX_TRACKED_SOURCES`].
#[derive(Debug)]
struct FailureTable<K> {
    records: HashMap<K, Record>,
}

impl<K: Hash + Eq + Copy> FailureTable<K> {
    fn new() -> Self {
        Self {
            records: HashMap::new(),
        }
    }

    fn failures(&self, key: &K, now: Instant) -> u32 {
        self.records
            .get(key)
            .map_or(0, |record| record.failures_at(now))
    }

    fn record(&mut self, key: K, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Succeeded => {
                self.records.remove(&key);
            }
            Outcome::Failed => {
                if !self.records.contains_key(&key) {
                    self.make_room(now);
                }
                let record = self.records.entry(key).or_default();
                record.failures = record.failures_at(now).saturating_add(1);
                record.last_failure = Some(now);
            }
            Outcome::Abandoned => {}
        }
    }

    fn slowed(&self, now: Instant) -> usize {
        self.records
            .values()
            .filter(|record| record.failures_at(now) > FREE_FAILURES)
            .count()
    }

    /// Keeps the table under [`MAX_TRACKED_SOURCES`]: forgets expired records, then the record
    /// with the fewest failures (the oldest among equals).
    fn make_room(&mut self, now: Instant) {
        if self.records.len() < MAX_TRACKED_SOURCES {
            return;
        }
        self.records.retain(|_, record| record.failures_at(now) > 0);
        if self.records.len() < MAX_TRACKED_SOURCES {
            return;
        }
        let victim = self
            .records
            .iter()
            .min_by_key(|(_, record)| (record.failures_at(now), record.last_failure))
            .map(|(key, _)| *key);
        if let Some(victim) = victim {
            self.records.remove(&victim);
        }
    }
}

/// Per-source and per-edge-id login state of the hub.
#[derive(Debug)]
pub(crate) struct LoginThrottle {
    sources: FailureTable<SourceKey>,
    edge_ids: FailureTable<u64>,
    /// Keys the edge-id hashes, so that nobody can aim ids at one record.
    id_hasher: RandomState,
    pending: PendingLogins,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(MAX_PENDING_TOTAL)
    }
}

/// Locks the throttle; `None` when a panic poisoned it, and callers then refuse the login
/// (fail closed): a throttle in an unknown state must not let guessing through unslowed.
pub(crate) fn lock(throttle: &Mutex<LoginThrottle>) -> Option<MutexGuard<'_, LoginThrottle>> {
    match throttle.lock() {
        Ok(guard) => Some(guard),
        Err(_) => {
            tracing::error!("login throttle poisoned by a panic; refusing logins");
            None
        }
    }
}

/// The delay for a source with `failures` remembered failures.
pub(crate) fn delay_for(failures: u32) -> Duration {
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
    pub(crate) fn new(max_pending_total: usize) -> Self {
        Self {
            sources: FailureTable::new(),
            edge_ids: FailureTable::new(),
            id_hasher: RandomState::new(),
            pending: PendingLogins::new(max_pending_total),
        }
    }

    /// Starts a handshake from `ip`; at a cap, the least advanced pending one makes way.
    pub(crate) fn begin(&mut self, ip: IpAddr, now: Instant) -> Result<Admitted, AllVerified> {
        self.pending.admit(SourceKey::of(ip), now)
    }

    /// Records how far a pending handshake has come.
    pub(crate) fn advance(&mut self, id: PendingId, stage: Stage) {
        self.pending.advance(id, stage);
    }

    /// How long to hold a login from `source` for `edge_id` before answering it.
    pub(crate) fn delay(&self, source: SourceKey, edge_id: &str, now: Instant) -> Duration {
        let failures = self
            .sources
            .failures(&source, now)
            .max(self.edge_ids.failures(&self.id_key(edge_id), now));
        delay_for(failures)
    }

    /// Ends a handshake started with [`Self::begin`]; `edge_id` once its hello was read.
    pub(crate) fn finish(
        &mut self,
        admitted: &Admitted,
        edge_id: Option<&str>,
        outcome: Outcome,
        now: Instant,
    ) {
        self.pending.release(admitted.id);
        self.sources.record(admitted.source, outcome, now);
        if let Some(edge_id) = edge_id {
            let key = self.id_key(edge_id);
            self.edge_ids.record(key, outcome, now);
        }
    }

    /// Connections that made way for newer ones because too many handshakes were in progress.
    pub(crate) fn refused(&self) -> u64 {
        self.pending.evicted()
    }

    /// Sources whose logins are delayed now.
    pub(crate) fn slowed_sources(&self, now: Instant) -> usize {
        self.sources.slowed(now)
    }

    /// Edge ids whose logins are delayed now (guessed at from several sources).
    pub(crate) fn slowed_edge_ids(&self, now: Instant) -> usize {
        self.edge_ids.slowed(now)
    }

    /// Number of tracked sources (with remembered failures).
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.sources.records.len()
    }

    fn id_key(&self, edge_id: &str) -> u64 {
        self.id_hasher.hash_one(edge_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::pending::MAX_PENDING_PER_SOURCE;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn attempt(throttle: &mut LoginThrottle, source: IpAddr, id: &str, outcome: Outcome) {
        let now = Instant::now();
        let admitted = throttle.begin(source, now).unwrap();
        throttle.finish(&admitted, Some(id), outcome, now);
    }

    fn fail(throttle: &mut LoginThrottle, source: IpAddr, now: Instant) {
        let admitted = throttle.begin(source, now).unwrap();
        throttle.finish(&admitted, Some("edge-1"), Outcome::Failed, now);
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
            let admitted = throttle.begin(source, now).unwrap();
            throttle.finish(&admitted, None, Outcome::Abandoned, now);
        }
        assert_eq!(throttle.tracked(), 0, "bare connects leave nothing behind");
        for _ in 0..10 {
            fail(&mut throttle, source, now);
        }
        let key = SourceKey::of(source);
        assert_eq!(throttle.delay(key, "another-edge", now), MAX_DELAY);
        assert_eq!(throttle.slowed_sources(now), 1);
        assert!(throttle
            .delay(SourceKey::of(ip("192.0.2.2")), "another-edge", now)
            .is_zero());
        attempt(&mut throttle, source, "edge-1", Outcome::Succeeded);
        assert!(throttle.delay(key, "edge-1", now).is_zero());
        assert_eq!(throttle.tracked(), 0);
    }

    #[test]
    fn guessing_one_edge_id_from_rotating_sources_is_slowed_too() {
        let mut throttle = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..10u32 {
            let source = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            attempt(&mut throttle, source, "edge-1", Outcome::Failed);
        }
        let fresh = SourceKey::of(ip("192.0.2.200"));
        assert_eq!(throttle.slowed_sources(now), 0, "no source failed often");
        assert_eq!(throttle.slowed_edge_ids(now), 1);
        assert_eq!(throttle.delay(fresh, "edge-1", now), MAX_DELAY);
        assert!(throttle.delay(fresh, "edge-2", now).is_zero());
        attempt(
            &mut throttle,
            ip("192.0.2.200"),
            "edge-1",
            Outcome::Succeeded,
        );
        assert!(throttle.delay(fresh, "edge-1", now).is_zero());
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
        assert!(throttle
            .delay(SourceKey::of(source), "edge-1", later)
            .is_zero());
        fail(&mut throttle, source, later);
        assert!(throttle
            .delay(SourceKey::of(source), "edge-1", later)
            .is_zero());
    }

    #[test]
    fn ipv6_sources_are_keyed_by_their_64() {
        let mut throttle = LoginThrottle::default();
        let now = Instant::now();
        for host in 1..=10 {
            let admitted = throttle
                .begin(ip(&format!("2001:db8:1:2::{host:x}")), now)
                .unwrap();
            throttle.finish(&admitted, None, Outcome::Failed, now);
        }
        assert_eq!(throttle.tracked(), 1);
        let same_prefix = SourceKey::of(ip("2001:db8:1:2:ffff::1"));
        assert_eq!(throttle.delay(same_prefix, "edge-1", now), MAX_DELAY);
        assert!(throttle
            .delay(SourceKey::of(ip("2001:db8:1:3::1")), "edge-1", now)
            .is_zero());
        assert_eq!(
            SourceKey::of(ip("::ffff:192.0.2.7")),
            SourceKey::of(ip("192.0.2.7"))
        );
    }

    #[test]
    fn pending_handshakes_make_way_and_are_counted() {
        let mut throttle = LoginThrottle::default();
        let now = Instant::now();
        let source = ip("192.0.2.1");
        let first = throttle.begin(source, now).unwrap();
        for _ in 1..MAX_PENDING_PER_SOURCE {
            throttle.begin(source, now).unwrap();
        }
        assert_eq!(throttle.refused(), 0);
        throttle.begin(source, now).unwrap();
        assert!(first.evicted.is_cancelled());
        assert_eq!(throttle.refused(), 1);
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
            let admitted = throttle
                .begin(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), now)
                .unwrap();
            throttle.finish(&admitted, Some(&format!("id-{i}")), Outcome::Failed, now);
        }
        assert!(throttle.tracked() <= MAX_TRACKED_SOURCES);
        assert!(throttle.edge_ids.records.len() <= MAX_TRACKED_SOURCES);
        assert_eq!(
            throttle.delay(SourceKey::of(attacker), "unrelated", now),
            MAX_DELAY
        );
        assert_eq!(
            throttle.delay(SourceKey::of(ip("192.0.2.9")), "edge-1", now),
            MAX_DELAY,
            "the much-guessed id stays slowed"
        );
    }
}
