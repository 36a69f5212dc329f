//! How many TCP streams the hub forwards for one edge at once. Each forwarded stream holds a
//! target connection (a descriptor) on the hub, so a compromised edge opening streams without
//! end could starve the hub of descriptors; the edge's own caps do not count, the hub's do.
//! A stream needs a share of its edge's cap (`limits.maxStreams`) and of the hub-wide budget
//! (derived from the open-file limit); otherwise it is refused and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

    /// A permit for one more stream, or `None` (counted) when the edge or the hub is full.
    pub(crate) fn admit(self: &Arc<Self>, budget: &DescriptorBudget) -> Option<StreamPermit> {
        let max = self.max();
        let under_cap = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |active| {
                (active < max).then_some(active + 1)
            })
            .is_ok();
        if !under_cap {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match budget.try_take() {
            Some(permit) => Some(StreamPermit {
                cap: self.clone(),
                _budget: permit,
            }),
            None => {
                self.active.fetch_sub(1, Ordering::AcqRel);
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_capped_per_edge_and_by_the_hub_budget() {
        let budget = DescriptorBudget::new(3);
        let edge = Arc::new(StreamCap::new(2));
        let other = Arc::new(StreamCap::new(10));
        let first = edge.admit(&budget).unwrap();
        let _second = edge.admit(&budget).unwrap();
        assert!(edge.admit(&budget).is_none(), "edge cap");
        let _third = other.admit(&budget).unwrap();
        assert!(other.admit(&budget).is_none(), "hub budget");
        assert_eq!((edge.refused(), other.refused()), (1, 1));
        drop(first);
        assert!(
            edge.admit(&budget).is_some(),
            "a finished stream frees its share"
        );
        edge.set_max(1);
        assert!(
            edge.admit(&budget).is_none(),
            "a lowered cap holds new streams back"
        );
    }
}
