//! Atomic stream counters, shared by the tasks that move bytes and read by status/summary.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::udp::session::Eviction;

/// Counters of the streams of one tunnel (hub: per connected edge; edge: for the whole edge).
#[derive(Debug, Default)]
pub(crate) struct StreamStats {
    active: AtomicU64,
    opened_total: AtomicU64,
    closed_total: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Hub: streams whose target could not be reached (refused, timed out).
    target_connect_errors: AtomicU64,
}

/// A point-in-time copy of [`StreamStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StreamStatsSnapshot {
    pub active: u64,
    pub opened_total: u64,
    pub closed_total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub target_connect_errors: u64,
}

impl StreamStats {
    /// Counts a stream whose target could not be reached.
    pub(crate) fn target_connect_failed(&self) {
        self.target_connect_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a new stream.
    pub(crate) fn opened(&self) {
        self.opened_total.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the end of a stream and adds its bytes.
    pub(crate) fn closed(&self, bytes_in: u64, bytes_out: u64) {
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        self.closed_total.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StreamStatsSnapshot {
        StreamStatsSnapshot {
            active: self.active.load(Ordering::Relaxed),
            opened_total: self.opened_total.load(Ordering::Relaxed),
            closed_total: self.closed_total.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            target_connect_errors: self.target_connect_errors.load(Ordering::Relaxed),
        }
    }
}

/// Counters of the UDP side of one tunnel.
#[derive(Debug, Default)]
pub(crate) struct UdpStats {
    /// Datagrams dropped: queue full, unknown session, rate limit, or a socket that would block.
    pub dropped: AtomicU64,
    /// Datagrams from clients towards targets.
    pub datagrams_in: AtomicU64,
    /// Datagrams from targets towards clients.
    pub datagrams_out: AtomicU64,
    /// Sessions open now.
    pub sessions: AtomicU64,
    /// Sessions closed because their source address held its most (edge).
    pub evicted_per_source: AtomicU64,
    /// Sessions closed because the table held its most (edge: the edge's cap; hub: the cap
    /// the hub keeps for this edge).
    pub evicted_capacity: AtomicU64,
    /// Datagrams dropped because they would have opened a session above the rate (edge).
    pub rate_limited: AtomicU64,
    /// Sessions refused because the hub-wide cap was reached (hub).
    pub refused: AtomicU64,
    /// Hub: the most sessions it keeps for this edge (the edge's `maxUdpSessions`), set by the
    /// hub's actor whenever the allowed edge changes and read by the edge's session task.
    pub max_sessions: AtomicU64,
}

impl UdpStats {
    /// Counts a session closed to make room.
    pub(crate) fn evicted(&self, reason: Eviction) {
        let counter = match reason {
            Eviction::PerSource => &self.evicted_per_source,
            Eviction::Capacity => &self.evicted_capacity,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A counter's current value.
    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn set_sessions(&self, n: usize) {
        self.sessions
            .store(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Datagrams from clients towards targets, and back.
    pub(crate) fn datagrams(&self) -> (u64, u64) {
        (
            self.datagrams_in.load(Ordering::Relaxed),
            self.datagrams_out.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }
}

/// The UDP sessions one table holds, counted into [`UdpStats::sessions`] by difference: the hub
/// shares an edge's `UdpStats` between the edge's tunnels (a replaced tunnel drains while the
/// new one serves), so a table adds its own change rather than storing its size, and takes its
/// sessions back out when it goes.
#[derive(Debug)]
pub(crate) struct UdpSessionCount {
    stats: std::sync::Arc<UdpStats>,
    counted: u64,
}

impl UdpSessionCount {
    pub(crate) fn new(stats: std::sync::Arc<UdpStats>) -> Self {
        Self { stats, counted: 0 }
    }

    /// The table holds `sessions` now.
    pub(crate) fn set(&mut self, sessions: usize) {
        let sessions = u64::try_from(sessions).unwrap_or(u64::MAX);
        if sessions >= self.counted {
            self.stats
                .sessions
                .fetch_add(sessions - self.counted, Ordering::Relaxed);
        } else {
            self.stats
                .sessions
                .fetch_sub(self.counted - sessions, Ordering::Relaxed);
        }
        self.counted = sessions;
    }
}

impl Drop for UdpSessionCount {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// Decrements `active` (and records the bytes) when dropped, so a stream task that fails or is
/// cancelled anywhere still leaves the counters right.
#[derive(Debug)]
pub(crate) struct OpenStreamGuard<'a> {
    stats: &'a StreamStats,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl<'a> OpenStreamGuard<'a> {
    pub(crate) fn new(stats: &'a StreamStats) -> Self {
        stats.opened();
        Self {
            stats,
            bytes_in: 0,
            bytes_out: 0,
        }
    }
}

impl Drop for OpenStreamGuard<'_> {
    fn drop(&mut self) {
        self.stats.closed(self.bytes_in, self.bytes_out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_counts_of_two_tables_add_up() {
        let stats = std::sync::Arc::new(UdpStats::default());
        let mut draining = UdpSessionCount::new(stats.clone());
        let mut serving = UdpSessionCount::new(stats.clone());
        draining.set(3);
        serving.set(2);
        assert_eq!(stats.sessions(), 5);
        draining.set(1);
        drop(draining);
        assert_eq!(stats.sessions(), 2);
    }

    #[test]
    fn guard_keeps_counters_consistent() {
        let stats = StreamStats::default();
        {
            let mut guard = OpenStreamGuard::new(&stats);
            assert_eq!(stats.snapshot().active, 1);
            guard.bytes_in = 5;
            guard.bytes_out = 7;
        }
        assert_eq!(
            stats.snapshot(),
            StreamStatsSnapshot {
                active: 0,
                opened_total: 1,
                closed_total: 1,
                bytes_in: 5,
                bytes_out: 7,
                target_connect_errors: 0,
            }
        );
    }
}
