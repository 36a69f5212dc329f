//! `EventSink`: how the hub and edge report events without knowing who listens.
//!
//! In management mode the events become JSON lines on stdout; in CLI mode they become log lines or
//! JSON lines (`--json`); in tests they are collected. Emitting never blocks and never fails: the
//! data path must not stall because a consumer of telemetry is slow. When the queue is full an
//! event is dropped, counted, and the drop is logged (at most once per second).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use remoteingress_ipc_schema::Event;
use tokio::sync::mpsc;

use crate::log_limit::{LogLimiter, SharedLogLimiter};
use crate::telemetry::counters::EventCounters;

/// Capacity of the event queue between the engine and the consumer.
pub(crate) const EVENT_QUEUE_CAPACITY: usize = 16 * 1024;

/// A cloneable handle that delivers [`Event`]s to one consumer.
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: Option<mpsc::Sender<Event>>,
    dropped: Arc<DropCounter>,
    /// Every event is counted here first (for `/metrics`), delivered or not.
    counters: Arc<EventCounters>,
}

#[derive(Debug)]
struct DropCounter {
    count: AtomicU64,
    /// One warning a second at most.
    warnings: SharedLogLimiter,
}

impl Default for DropCounter {
    fn default() -> Self {
        Self {
            count: AtomicU64::new(0),
            warnings: SharedLogLimiter::new(LogLimiter::once_a_second()),
        }
    }
}

impl EventSink {
    /// A sink and the receiving end its consumer reads.
    pub fn channel() -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE_CAPACITY);
        (
            Self {
                tx: Some(tx),
                dropped: Arc::default(),
                counters: Arc::default(),
            },
            rx,
        )
    }

    /// A sink that discards everything (for library users that poll status instead).
    pub fn discard() -> Self {
        Self {
            tx: None,
            dropped: Arc::default(),
            counters: Arc::default(),
        }
    }

    /// Queues an event for the consumer; drops it (counted) if the queue is full.
    pub(crate) fn emit(&self, event: Event) {
        self.counters.observe(&event);
        let Some(tx) = &self.tx else { return };
        match tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.note_drop(),
        }
    }

    /// What the events counted so far.
    pub(crate) fn counters(&self) -> &EventCounters {
        &self.counters
    }

    /// Events dropped because the consumer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.count.load(Ordering::Relaxed)
    }

    fn note_drop(&self) {
        let total = self.dropped.count.fetch_add(1, Ordering::Relaxed) + 1;
        crate::limited_warn!(
            self.dropped.warnings,
            total,
            "event consumer is too slow; events dropped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remoteingress_ipc_schema::{Event, TunnelDisconnectedEvent};

    fn sample() -> Event {
        Event::TunnelDisconnected(TunnelDisconnectedEvent {
            reason: "test".into(),
        })
    }

    #[tokio::test]
    async fn delivers_in_order_and_counts_drops_when_full() {
        let (sink, mut rx) = EventSink::channel();
        for _ in 0..EVENT_QUEUE_CAPACITY + 5 {
            sink.emit(sample());
        }
        assert_eq!(sink.dropped(), 5);
        assert_eq!(rx.recv().await, Some(sample()));
    }

    #[test]
    fn discard_sink_accepts_events() {
        let sink = EventSink::discard();
        sink.emit(sample());
        assert_eq!(sink.dropped(), 0);
    }
}
