//! How many TCP streams the hub forwards for one edge at once. Each forwarded stream holds a
//! target connection (a descriptor) on the hub, so a compromised edge opening streams without
//! end could starve the hub of descriptors; the edge's own caps do not count, the hub's do.
//! A stream needs a share of its edge's cap (`limits.maxStreams`) and of the hub-wide budget
//! (derived from the open-file limit), which edges share fairly ([`crate::fair_share`]);
//! otherwise it is refused and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::fair_share::{Budget, HeldStream, Holders, Holding, RECLAIM_PATIENCE};
use crate::fd_limit::{BudgetPermit, DescriptorBudget};

/// One edge's stream cap and counters (the actor changes `max` when the edge's limits change).
#[derive(Debug, Default)]
pub(crate) struct StreamCap {
    max: AtomicU64,
    active: AtomicU64,
    refused: AtomicU64,
}

/// A forwarded stream's share of its edge's cap and of the hub's budget; both are given back
/// when it is dropped.
#[derive(Debug)]
pub(crate) struct StreamPermit {
    cap: Arc<StreamCap>,
    _budget: BudgetPermit,
    _held: HeldStream,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.cap.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl StreamCap {
    pub(crate) fn new(max: u32) -> Self {
        let cap = Self::default();
        cap.set_max(max);
        cap
    }

    pub(crate) fn set_max(&self, max: u32) {
        self.max.store(u64::from(max), Ordering::Relaxed);
    }

    pub(crate) fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// A permit for one more stream that `reset` ends, at once when the edge is under its cap
    /// and the hub's budget has room (no task or wait needed for the common case).
    pub(crate) fn try_admit(
        self: &Arc<Self>,
        budget: &DescriptorBudget,
        holding: &Arc<Holding>,
        reset: &CancellationToken,
    ) -> Admission {
        if !self.take_slot() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Admission::Refused;
        }
        match budget.try_take() {
            Some(permit) => Admission::Now(self.permit(permit, holding, reset.clone())),
            None => {
                self.active.fetch_sub(1, Ordering::AcqRel);
                Admission::BudgetFull
            }
        }
    }

    /// A permit for one more stream that `reset` ends, or `None` (counted) when the edge is at
    /// its cap, or the hub's budget is full and no other edge over its fair share gives one back
    /// within [`RECLAIM_PATIENCE`].
    pub(crate) async fn admit(
        self: &Arc<Self>,
        budget: &DescriptorBudget,
        holders: &Holders,
        holding: &Arc<Holding>,
        reset: CancellationToken,
    ) -> Option<StreamPermit> {
        if !self.take_slot() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let permit = budget
            .take_fairly(RECLAIM_PATIENCE, |_| {
                holders.reclaim(holding, Budget::Forwarded, budget.capacity())
            })
            .await;
        match permit {
            Some(permit) => Some(self.permit(permit, holding, reset)),
            None => {
                self.active.fetch_sub(1, Ordering::AcqRel);
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// One more active stream, if under the cap.
    fn take_slot(&self) -> bool {
        let max = self.max();
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |active| {
                (active < max).then_some(active + 1)
            })
            .is_ok()
    }

    fn permit(
        self: &Arc<Self>,
        budget: BudgetPermit,
        holding: &Arc<Holding>,
        reset: CancellationToken,
    ) -> StreamPermit {
        StreamPermit {
            cap: self.clone(),
            _budget: budget,
            _held: holding.hold_stream(reset),
        }
    }
}

/// What [`StreamCap::try_admit`] decided.
#[derive(Debug)]
pub(crate) enum Admission {
    Now(StreamPermit),
    /// The edge is at its cap (counted).
    Refused,
    /// The hub's budget is full: [`StreamCap::admit`] may get a share back from another edge.
    BudgetFull,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_are_capped_per_edge_and_by_the_hub_budget() {
        let budget = DescriptorBudget::new(3);
        let holders = Holders::default();
        let (mine, theirs) = (holders.register(), holders.register());
        let edge = Arc::new(StreamCap::new(2));
        let other = Arc::new(StreamCap::new(10));
        let admit = |cap: &Arc<StreamCap>, holding: &Arc<Holding>| {
            let (cap, holding) = (cap.clone(), holding.clone());
            let (budget, holders) = (&budget, &holders);
            async move {
                cap.admit(budget, holders, &holding, CancellationToken::new())
                    .await
            }
        };
        let first = admit(&edge, &mine).await.unwrap();
        let _second = admit(&edge, &mine).await.unwrap();
        assert!(admit(&edge, &mine).await.is_none(), "edge cap");
        let _third = admit(&other, &theirs).await.unwrap();
        assert!(
            admit(&other, &theirs).await.is_none(),
            "hub budget, and nobody over a share of 1 to give one back"
        );
        assert_eq!((edge.refused(), other.refused()), (1, 1));
        drop(first);
        assert!(
            admit(&edge, &mine).await.is_some(),
            "a finished stream frees its share"
        );
        edge.set_max(1);
        assert!(
            admit(&edge, &mine).await.is_none(),
            "a lowered cap holds new streams back"
        );
    }

    #[tokio::test]
    async fn an_edge_within_its_share_gets_one_back_from_an_edge_over_it() {
        let budget = DescriptorBudget::new(4);
        let holders = Holders::default();
        let (hog, modest) = (holders.register(), holders.register());
        let hog_cap = Arc::new(StreamCap::new(100));
        let modest_cap = Arc::new(StreamCap::new(100));
        let mut hog_streams = Vec::new();
        for _ in 0..4 {
            let reset = CancellationToken::new();
            let permit = hog_cap
                .admit(&budget, &holders, &hog, reset.clone())
                .await
                .unwrap();
            hog_streams.push((permit, reset));
        }
        // The hog's newest stream is reset; its task ends and drops the permit.
        let (newest, reset) = hog_streams.pop().unwrap();
        let ended = tokio::spawn(async move {
            reset.cancelled().await;
            drop(newest);
        });
        let permit = modest_cap
            .admit(&budget, &holders, &modest, CancellationToken::new())
            .await;
        assert!(permit.is_some());
        ended.await.unwrap();
        // The hog, over its share of 2, gets nothing while the budget is full.
        assert!(hog_cap
            .admit(&budget, &holders, &hog, CancellationToken::new())
            .await
            .is_none());
    }
}
