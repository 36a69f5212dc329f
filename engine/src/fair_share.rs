//! Fair shares of the hub-wide budgets (forwarded TCP streams and UDP sessions, each holding a
//! descriptor) between connected edges.
//!
//! An edge takes what is free: one busy edge may use the whole budget while the others need
//! nothing. When a budget is full, an edge still within its fair share (the capacity divided by
//! the connected edges) gets a share back from the edge holding the most, if that one is over
//! its own share: its newest forwarded stream is reset, or its least recently used UDP session
//! closed, and the freed share goes to the waiting edge (the budget serves waiters first). An
//! edge over its share is refused (counted). So a compromised edge at full tilt cannot keep
//! another edge from its share, and the only streams and sessions cut are those of an edge over
//! its share while another wants its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long an edge within its share waits for another edge to give a share back.
pub(crate) const RECLAIM_PATIENCE: Duration = Duration::from_secs(2);

/// Which budget is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    /// Everything forwarded (TCP streams and UDP sessions).
    Forwarded,
    /// UDP sessions (inside [`Budget::Forwarded`]).
    Udp,
}

/// What one edge session holds of the budgets, and the requests to give some back.
#[derive(Debug, Default)]
pub(crate) struct Holding {
    /// The forwarded streams, by admission order, with what resets each.
    streams: Mutex<BTreeMap<u64, CancellationToken>>,
    next_stream: AtomicU64,
    udp_sessions: AtomicUsize,
    /// UDP sessions this holder has been asked to close; the session task does.
    udp_to_shed: AtomicUsize,
    shed: Notify,
}

/// A forwarded stream's place in its [`Holding`]; leaves it when dropped.
#[derive(Debug)]
pub(crate) struct HeldStream {
    holding: Arc<Holding>,
    id: u64,
}

impl Drop for HeldStream {
    fn drop(&mut self) {
        crate::sync::lock(&self.holding.streams).remove(&self.id);
    }
}

/// A UDP session's place in its [`Holding`]; leaves it when dropped.
#[derive(Debug)]
pub(crate) struct HeldSession(Arc<Holding>);

impl Drop for HeldSession {
    fn drop(&mut self) {
        self.0.udp_sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Holding {
    /// Registers a forwarded stream that `reset` ends.
    pub(crate) fn hold_stream(self: &Arc<Self>, reset: CancellationToken) -> HeldStream {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        crate::sync::lock(&self.streams).insert(id, reset);
        HeldStream {
            holding: self.clone(),
            id,
        }
    }

    /// Registers a UDP session.
    pub(crate) fn hold_session(self: &Arc<Self>) -> HeldSession {
        self.udp_sessions.fetch_add(1, Ordering::AcqRel);
        HeldSession(self.clone())
    }

    /// UDP sessions this holder was asked to close since the last call.
    pub(crate) fn take_udp_to_shed(&self) -> usize {
        self.udp_to_shed.swap(0, Ordering::AcqRel)
    }

    /// Resolves when this holder is asked to close UDP sessions.
    pub(crate) async fn shed_requested(&self) {
        self.shed.notified().await;
    }

    /// Streams held and not yet asked to give their share back.
    fn streams(&self) -> usize {
        crate::sync::lock(&self.streams)
            .values()
            .filter(|reset| !reset.is_cancelled())
            .count()
    }

    /// UDP sessions held and not yet asked to close.
    fn udp(&self) -> usize {
        self.udp_sessions
            .load(Ordering::Acquire)
            .saturating_sub(self.udp_to_shed.load(Ordering::Acquire))
    }

    /// What it holds of `budget`, less what it was already asked to give back.
    fn held(&self, budget: Budget) -> usize {
        match budget {
            Budget::Forwarded => self.streams() + self.udp(),
            Budget::Udp => self.udp(),
        }
    }

    /// Gives one share of `budget` back: the newest stream not yet reset (for the forwarded
    /// budget), else a UDP session. False when it holds nothing to give.
    fn give_back(&self, budget: Budget) -> bool {
        if budget == Budget::Forwarded {
            let streams = crate::sync::lock(&self.streams);
            if let Some(reset) = streams.values().rev().find(|token| !token.is_cancelled()) {
                reset.cancel();
                return true;
            }
        }
        if self.udp() == 0 {
            return false;
        }
        self.udp_to_shed.fetch_add(1, Ordering::AcqRel);
        self.shed.notify_one();
        true
    }
}

/// The connected edges' holdings.
#[derive(Debug, Default)]
pub(crate) struct Holders {
    holdings: Mutex<Vec<Weak<Holding>>>,
    /// Streams and sessions cut to give a share to an edge within its own.
    reclaimed: AtomicU64,
}

impl Holders {
    /// A new holding, counted among the holders while it lives.
    pub(crate) fn register(&self) -> Arc<Holding> {
        let holding = Arc::new(Holding::default());
        let mut holdings = crate::sync::lock(&self.holdings);
        holdings.retain(|weak| weak.strong_count() > 0);
        holdings.push(Arc::downgrade(&holding));
        holding
    }

    /// `budget` (of `capacity`) is full and `claimant` wants a share: if `claimant` is within
    /// its fair share, asks the holder with the most, if over its share, to give one back.
    /// True when one is being given back (the claimant should wait for it).
    pub(crate) fn reclaim(&self, claimant: &Arc<Holding>, budget: Budget, capacity: usize) -> bool {
        let holdings: Vec<Arc<Holding>> = crate::sync::lock(&self.holdings)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let share = (capacity / holdings.len().max(1)).max(1);
        if claimant.held(budget) >= share {
            return false;
        }
        let reclaimed = holdings
            .iter()
            .filter(|holding| !Arc::ptr_eq(holding, claimant))
            .map(|holding| (holding.held(budget), holding))
            .filter(|(held, _)| *held > share)
            .max_by_key(|(held, _)| *held)
            .is_some_and(|(_, victim)| victim.give_back(budget));
        if reclaimed {
            self.reclaimed.fetch_add(1, Ordering::Relaxed);
        }
        reclaimed
    }

    /// Streams and sessions cut so far to give a share to an edge within its own.
    pub(crate) fn reclaimed(&self) -> u64 {
        self.reclaimed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimant_within_its_share_takes_from_the_edge_over_its_share() {
        let holders = Holders::default();
        let hog = holders.register();
        let modest = holders.register();
        let claimant = holders.register();
        let resets: Vec<CancellationToken> = (0..8).map(|_| CancellationToken::new()).collect();
        let _hog_streams: Vec<HeldStream> = resets
            .iter()
            .map(|reset| hog.hold_stream(reset.clone()))
            .collect();
        let _modest_stream = modest.hold_stream(CancellationToken::new());
        // Capacity 9, three edges: a share of 3.
        assert!(holders.reclaim(&claimant, Budget::Forwarded, 9));
        assert!(resets[7].is_cancelled(), "the newest first");
        assert!(resets[..7].iter().all(|reset| !reset.is_cancelled()));
        assert!(holders.reclaim(&claimant, Budget::Forwarded, 9));
        assert!(resets[6].is_cancelled());
        assert_eq!(holders.reclaimed(), 2);
        // Over its share, the hog gets nothing back from the others.
        assert!(!holders.reclaim(&hog, Budget::Forwarded, 9));
        // A claimant at its share waits for nobody.
        let _held: Vec<HeldStream> = (0..3)
            .map(|_| claimant.hold_stream(CancellationToken::new()))
            .collect();
        assert!(!holders.reclaim(&claimant, Budget::Forwarded, 9));
    }

    #[test]
    fn udp_sessions_are_asked_back_from_the_session_task() {
        let holders = Holders::default();
        let hog = holders.register();
        let claimant = holders.register();
        let _sessions: Vec<HeldSession> = (0..4).map(|_| hog.hold_session()).collect();
        // A share of 2 each: the hog is asked for two, not more.
        assert!(holders.reclaim(&claimant, Budget::Udp, 4));
        assert!(holders.reclaim(&claimant, Budget::Udp, 4));
        assert!(!holders.reclaim(&claimant, Budget::Udp, 4));
        assert_eq!(hog.take_udp_to_shed(), 2);
        assert_eq!(hog.take_udp_to_shed(), 0);
    }

    #[test]
    fn gone_holders_do_not_count() {
        let holders = Holders::default();
        let claimant = holders.register();
        let gone = holders.register();
        drop(gone.hold_stream(CancellationToken::new()));
        drop(gone);
        let hog = holders.register();
        let _streams: Vec<HeldStream> = (0..3)
            .map(|_| hog.hold_stream(CancellationToken::new()))
            .collect();
        // Two holders now (claimant, hog), capacity 4: a share of 2; the hog is over it.
        assert!(holders.reclaim(&claimant, Budget::Forwarded, 4));
    }
}
