//! Connection slots of the health/metrics endpoints. A fixed number of connections may be open;
//! one that has not yet sent a request is *idle*. When all slots are taken, a new connection
//! displaces the oldest idle one (which is closed) rather than being turned away, so a pile of
//! idle connections (a port scanner, a slowloris) cannot keep `/healthz` from answering a real
//! probe; only when every slot is busy serving a request is the new connection refused. Both
//! are counted. With the per-request deadline this keeps the endpoints answering while any
//! number of idle connections is held open.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// How a connection was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A free slot.
    Free,
    /// The oldest idle connection was closed to make room.
    Displaced,
}

#[derive(Debug)]
struct State {
    next_id: u64,
    open: usize,
    /// Connections that have not sent a request yet, oldest first.
    idle: VecDeque<(u64, CancellationToken)>,
}

/// The slots of one endpoint listener.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    state: Mutex<State>,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            state: Mutex::new(State {
                next_id: 0,
                open: 0,
                idle: VecDeque::new(),
            }),
        })
    }

    /// A slot for a new connection (idle until [`Slot::busy`]), or `None` when every slot is
    /// serving a request. A displaced connection's token is cancelled; it gives its slot back as
    /// it closes, so the open count exceeds `max` only by connections already being closed.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<(Slot, Admission)> {
        let mut state = crate::sync::lock(&self.state);
        let admission = if state.open < self.max {
            Admission::Free
        } else if let Some((_, oldest)) = state.idle.pop_front() {
            oldest.cancel();
            Admission::Displaced
        } else {
            return None;
        };
        let id = state.next_id;
        state.next_id += 1;
        state.open += 1;
        let closed = CancellationToken::new();
        state.idle.push_back((id, closed.clone()));
        Some((
            Slot {
                slots: self.clone(),
                id,
                closed,
            },
            admission,
        ))
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        crate::sync::lock(&self.state).open
    }
}

/// One connection's slot; gives it back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    id: u64,
    closed: CancellationToken,
}

impl Slot {
    /// Cancelled when a newer connection displaced this one.
    pub(crate) fn displaced(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// The connection sent a request: it can no longer be displaced.
    pub(crate) fn busy(&self) {
        let id = self.id;
        crate::sync::lock(&self.slots.state)
            .idle
            .retain(|(idle, _)| *idle != id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.busy();
        let mut state = crate::sync::lock(&self.slots.state);
        state.open = state.open.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connections_are_displaced_oldest_first_busy_ones_never() {
        let slots = Slots::new(2);
        let (first, how) = slots.admit().unwrap();
        assert_eq!(how, Admission::Free);
        let (second, _) = slots.admit().unwrap();
        let (third, how) = slots.admit().unwrap();
        assert_eq!(how, Admission::Displaced);
        assert!(first.displaced().is_cancelled());
        assert!(!second.displaced().is_cancelled());
        drop(first);
        assert_eq!(slots.open(), 2);
        second.busy();
        third.busy();
        assert!(slots.admit().is_none(), "every slot is serving a request");
        drop(third);
        let (_fourth, how) = slots.admit().unwrap();
        assert_eq!(how, Admission::Free);
        assert!(!second.displaced().is_cancelled());
    }
}
