//! Tunnel connections whose login is still in progress, and which of them makes way when there
//! are too many (sans-IO: callers pass `now`).
//!
//! A connection costs nothing but a socket and a task before it has sent its TLS ClientHello
//! or a validated QUIC Initial, so a flood of idle connections must never keep an edge from
//! logging in. When the per-source cap ([`MAX_PENDING_PER_SOURCE`]) or the hub-wide cap is
//! reached, a new connection is never refused: the *least advanced* pending connection makes way
//! ([`Stage`]: idle before handshaking, and never one whose login proof was verified), taken from
//! the source holding the most pending connections, the oldest among equals. An edge connection
//! has sent its ClientHello one round trip after its connect, so idle connections, however many
//! and from however many sources, cannot push it out; slow ones (a finished transport handshake,
//! no login) push it out only by opening more pending connections than the hub-wide cap from
//! sources holding at least as many as the edge's, all within the edge's login round trips.
//!
//! The victim search is a scan over at most the hub-wide cap (1,024) entries, and only when a
//! cap is reached: a few microseconds per connection under a flood.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::auth::SourceKey;

/// Handshakes one source may have in progress before its own least advanced one makes way.
pub const MAX_PENDING_PER_SOURCE: u32 = 16;
/// Handshakes all sources together may have in progress (the open-file limit may set fewer).
pub(crate) const MAX_PENDING_TOTAL: usize = crate::fd_limit::MAX_PENDING_LOGINS;

/// How far a pending connection has come; the lower, the sooner it makes way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    /// Connected; no complete TLS ClientHello yet.
    #[default]
    Connected,
    /// Its transport handshake started (a ClientHello, a validated QUIC Initial) and the login
    /// is not decided yet.
    Handshaking,
    /// Its login proof was verified: it is an edge, and never makes way.
    Verified,
}

/// Identifies one pending connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PendingId(u64);

/// An admitted pending connection.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub id: PendingId,
    pub source: SourceKey,
    /// Cancelled when the connection has to make way for a newer one.
    pub evicted: CancellationToken,
}

/// Why a connection was not admitted: every pending connection is verified (only possible with
/// a cap below the number of edges logging in at the same moment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many edges logging in at once")]
pub(crate) struct AllVerified;

#[derive(Debug)]
struct Entry {
    source: SourceKey,
    started: Instant,
    stage: Stage,
    evict: CancellationToken,
}

/// The pending connections of the hub's tunnel port.
#[derive(Debug)]
pub(crate) struct PendingLogins {
    entries: HashMap<PendingId, Entry>,
    per_source: HashMap<SourceKey, u32>,
    max_total: usize,
    next_id: u64,
    evicted: u64,
}

impl PendingLogins {
    /// At most `max_total` (clamped to 1..=[`MAX_PENDING_TOTAL`]) in progress at once.
    pub(crate) fn new(max_total: usize) -> Self {
        Self {
            entries: HashMap::new(),
            per_source: HashMap::new(),
            max_total: max_total.clamp(1, MAX_PENDING_TOTAL),
            next_id: 0,
            evicted: 0,
        }
    }

    /// Admits a connection from `source`, evicting the least advanced pending connection of
    /// that source (at its cap) or of the busiest source (at the hub-wide cap).
    pub(crate) fn admit(
        &mut self,
        source: SourceKey,
        now: Instant,
    ) -> Result<Admitted, AllVerified> {
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= MAX_PENDING_PER_SOURCE {
            self.evict(|entry| entry.source == source)?;
        } else if self.entries.len() >= self.max_total {
            self.evict(|_| true)?;
        }
        let id = PendingId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let evicted = CancellationToken::new();
        self.entries.insert(
            id,
            Entry {
                source,
                started: now,
                stage: Stage::Connected,
                evict: evicted.clone(),
            },
        );
        *self.per_source.entry(source).or_default() += 1;
        Ok(Admitted {
            id,
            source,
            evicted,
        })
    }

    /// Records that `id` has come as far as `stage` (never backwards).
    pub(crate) fn advance(&mut self, id: PendingId, stage: Stage) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.stage = entry.stage.max(stage);
        }
    }

    /// Forgets `id` (its handshake ended, or it was evicted already).
    pub(crate) fn release(&mut self, id: PendingId) {
        if let Some(entry) = self.entries.remove(&id) {
            self.forget_source(entry.source);
        }
    }

    /// Connections that made way for newer ones (or were refused: [`AllVerified`]).
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Connections pending now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Evicts the least advanced unverified entry among those `eligible`: lowest stage, then
    /// the source with the most pending, then the oldest.
    fn evict(&mut self, eligible: impl Fn(&Entry) -> bool) -> Result<(), AllVerified> {
        self.evicted = self.evicted.saturating_add(1);
        let per_source = &self.per_source;
        let victim = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.stage < Stage::Verified && eligible(entry))
            .min_by_key(|(id, entry)| {
                let busy = per_source.get(&entry.source).copied().unwrap_or(0);
                (entry.stage, Reverse(busy), entry.started, id.0)
            })
            .map(|(id, _)| *id)
            .ok_or(AllVerified)?;
        if let Some(entry) = self.entries.remove(&victim) {
            entry.evict.cancel();
            self.forget_source(entry.source);
        }
        Ok(())
    }

    fn forget_source(&mut self, source: SourceKey) {
        if let Some(count) = self.per_source.get_mut(&source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_source.remove(&source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::Duration;

    fn source(i: u32) -> SourceKey {
        SourceKey::of(IpAddr::from((0x0a00_0000 + i).to_be_bytes()))
    }

    #[test]
    fn a_source_at_its_cap_makes_way_with_its_own_oldest_idle_connection() {
        let mut pending = PendingLogins::new(MAX_PENDING_TOTAL);
        let start = Instant::now();
        let neighbour: Vec<Admitted> = (0..MAX_PENDING_PER_SOURCE)
            .map(|i| {
                pending
                    .admit(source(1), start + Duration::from_millis(i.into()))
                    .unwrap()
            })
            .collect();
        let other = pending.admit(source(2), start).unwrap();
        // The edge, behind its NAT neighbour's 16 idle connections.
        let edge = pending
            .admit(source(1), start + Duration::from_secs(1))
            .unwrap();
        assert!(neighbour[0].evicted.is_cancelled());
        assert!(neighbour[1..].iter().all(|a| !a.evicted.is_cancelled()));
        assert!(!other.evicted.is_cancelled());
        pending.advance(edge.id, Stage::Handshaking);
        // The neighbour reopens as fast as it likes: only its idle connections make way.
        for i in 0..100 {
            let again = pending
                .admit(source(1), start + Duration::from_secs(2 + i))
                .unwrap();
            assert!(!edge.evicted.is_cancelled(), "after {i} reopenings");
            assert!(!again.evicted.is_cancelled());
        }
        assert_eq!(pending.len(), MAX_PENDING_PER_SOURCE as usize + 1);
        assert_eq!(pending.evicted(), 101);
    }

    #[test]
    fn at_the_hub_wide_cap_the_busiest_source_makes_way() {
        let mut pending = PendingLogins::new(64);
        let start = Instant::now();
        let mut attackers = Vec::new();
        for i in 0..64u32 {
            attackers.push(pending.admit(source(i % 4), start).unwrap());
        }
        let edge = pending
            .admit(source(100), start + Duration::from_secs(1))
            .unwrap();
        pending.advance(edge.id, Stage::Handshaking);
        // Slow attackers (their transport handshake done) reopening whatever is dropped.
        for attacker in &attackers {
            pending.advance(attacker.id, Stage::Handshaking);
        }
        for i in 0..1000 {
            let again = pending
                .admit(source(i % 4), start + Duration::from_secs(2))
                .unwrap();
            pending.advance(again.id, Stage::Handshaking);
            assert!(!edge.evicted.is_cancelled(), "after {i} reopenings");
        }
        assert_eq!(pending.len(), 64);
    }

    #[test]
    fn idle_connections_make_way_before_handshaking_ones_and_verified_never() {
        let mut pending = PendingLogins::new(3);
        let start = Instant::now();
        let verified = pending.admit(source(1), start).unwrap();
        pending.advance(verified.id, Stage::Verified);
        let handshaking = pending.admit(source(2), start).unwrap();
        pending.advance(handshaking.id, Stage::Handshaking);
        let idle = pending
            .admit(source(3), start + Duration::from_secs(5))
            .unwrap();
        pending.admit(source(4), start).unwrap();
        assert!(idle.evicted.is_cancelled(), "the idle one, though newest");
        assert!(!handshaking.evicted.is_cancelled());
        pending.admit(source(5), start).unwrap();
        assert!(!verified.evicted.is_cancelled());

        let mut all_verified = PendingLogins::new(1);
        let only = all_verified.admit(source(1), start).unwrap();
        all_verified.advance(only.id, Stage::Verified);
        assert_eq!(
            all_verified.admit(source(2), start).unwrap_err(),
            AllVerified
        );
    }

    #[test]
    fn released_connections_give_their_slots_back() {
        let mut pending = PendingLogins::new(2);
        let now = Instant::now();
        let a = pending.admit(source(1), now).unwrap();
        let b = pending.admit(source(1), now).unwrap();
        pending.release(a.id);
        pending.release(a.id);
        pending.release(b.id);
        assert!(pending.is_empty());
        assert!(pending.per_source.is_empty());
        assert_eq!(pending.evicted(), 0);
    }
}
