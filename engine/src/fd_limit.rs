//! The open-file limit (RLIMIT_NOFILE) and the descriptor budgets derived from it.
//!
//! Every public TCP connection costs the edge one descriptor, and every UDP session and every
//! forwarded TCP stream costs the hub one. Running out (EMFILE) does not fail one connection, it
//! fails whatever needs a descriptor next: a tunnel login, a target dial, an accept. So the
//! binary raises its soft limit to the hard limit at start, and the caps that depend on
//! descriptors are derived from the limit with room left for everything else.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept for what is not a per-client socket: stdio, the runtime's epoll and wakers,
/// the tunnel (TLS socket, QUIC endpoint), listeners' accept headroom, STUN, logins.
pub(crate) const RESERVE: u64 = 128;

/// Raises the soft open-file limit to the hard limit (logging both) and returns the soft limit
/// in force afterwards. A failure is logged and the limit left as it was.
pub fn raise_to_hard() -> u64 {
    let (soft, hard) = match rlimit::Resource::NOFILE.get() {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit");
            return current();
        }
    };
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(raised) => {
            tracing::info!(
                soft_before = soft,
                soft = raised,
                hard,
                "open-file limit (RLIMIT_NOFILE)"
            );
            raised
        }
        Err(error) => {
            tracing::warn!(soft, hard, %error, "cannot raise the open-file limit; keeping it");
            soft
        }
    };
    if limit < 4 * RESERVE {
        tracing::warn!(
            limit,
            "the open-file limit leaves room for few clients (TCP connections on an edge, UDP \
             sessions on a hub); raise the hard limit (ulimit -Hn, LimitNOFILE=)"
        );
    }
    limit
}

/// The soft open-file limit in force (1024, the common default, if it cannot be read).
pub(crate) fn current() -> u64 {
    rlimit::Resource::NOFILE
        .get()
        .map_or(1024, |(soft, _)| soft)
}

/// Pause of an accept loop after a failed accept (EMFILE, ENFILE, ENOBUFS...): the listener
/// stays readable, so trying again at once would spin a core until a descriptor is free.
pub(crate) const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// Most handshakes the hub lets be in progress at once, whatever the open-file limit: each is
/// a socket and a TLS or QUIC state that no secret has been shown for yet.
pub(crate) const MAX_PENDING_LOGINS: usize = 1024;

/// UDP sessions the hub may hold at `limit`: half of what the reserve leaves, so that TCP
/// streams (one target connection each) and edge logins always have the other half.
pub(crate) fn hub_udp_sessions(limit: u64) -> u64 {
    limit.saturating_sub(RESERVE) / 2
}

/// Handshakes the hub lets be in progress at `limit` (each holds a socket until its deadline):
/// an eighth of what the reserve leaves, at most [`MAX_PENDING_LOGINS`].
pub(crate) fn hub_pending_logins(limit: u64) -> u64 {
    (limit.saturating_sub(RESERVE) / 8).min(MAX_PENDING_LOGINS as u64)
}

/// Descriptors the hub's forwarded traffic may hold at `limit`, TCP streams (one target
/// connection each) and UDP sessions (one socket each) together: what the reserve and pending
/// logins leave. UDP sessions are further held to [`hub_udp_sessions`], so TCP always has at
/// least the other half and may use whatever UDP does not.
pub(crate) fn hub_forwarding(limit: u64) -> u64 {
    limit
        .saturating_sub(RESERVE)
        .saturating_sub(hub_pending_logins(limit))
}

/// Public TCP connections the edge may hold at `limit` with `listeners` sockets bound: what the
/// reserve and the listeners leave (the tunnel multiplexes, so a connection costs one).
pub(crate) fn edge_connections(limit: u64, listeners: u64) -> u64 {
    limit.saturating_sub(RESERVE.saturating_add(listeners))
}

/// A hub-wide count of descriptor-holding things (UDP sessions, TCP streams) shared by all
/// edges: each holds a permit, given back when dropped. A budget may sit inside a larger one
/// (UDP sessions inside all forwarding); a share then needs room in both.
#[derive(Debug, Clone)]
pub(crate) struct DescriptorBudget {
    permits: Arc<Semaphore>,
    capacity: usize,
    within: Option<Arc<Semaphore>>,
}

/// Which budget had no share left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The budget asked.
    Own,
    /// The budget it sits in.
    Outer,
}

/// A share of a [`DescriptorBudget`] (and of the budget it sits in).
#[derive(Debug)]
pub(crate) struct BudgetPermit {
    _own: OwnedSemaphorePermit,
    _within: Option<OwnedSemaphorePermit>,
}

impl DescriptorBudget {
    pub(crate) fn new(capacity: u64) -> Self {
        let capacity = usize::try_from(capacity)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            within: None,
        }
    }

    /// A budget of `capacity` whose shares also count against `outer`.
    pub(crate) fn within(outer: &Self, capacity: u64) -> Self {
        Self {
            within: Some(outer.permits.clone()),
            ..Self::new(capacity)
        }
    }

    /// One share, given back when the permit is dropped; `None` when all are taken.
    pub(crate) fn try_take(&self) -> Option<BudgetPermit> {
        let own = self.permits.clone().try_acquire_owned().ok()?;
        let within = match &self.within {
            Some(outer) => Some(outer.clone().try_acquire_owned().ok()?),
            None => None,
        };
        Some(BudgetPermit {
            _own: own,
            _within: within,
        })
    }

    /// One share: a free one, or one given back for this caller. When a budget is full,
    /// `reclaim` is asked to have one given back (false: give up) and the caller waits for it,
    /// at most until `patience` has passed in all. Waiters are served first come, first served,
    /// before anyone who only tries (tokio's semaphore is fair), so a share given back while
    /// this caller waits goes to it.
    pub(crate) async fn take_fairly(
        &self,
        patience: std::time::Duration,
        mut reclaim: impl FnMut(Full) -> bool,
    ) -> Option<BudgetPermit> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut own = None;
        let mut within = None;
        // Each round either completes the permit or waits for a share given back.
        for _ in 0..4 {
            if own.is_none() {
                own = self.permits.clone().try_acquire_owned().ok();
            }
            if let (Some(_), Some(outer), None) = (&own, &self.within, &within) {
                within = outer.clone().try_acquire_owned().ok();
            }
            let full = match (&own, &self.within, &within) {
                (None, _, _) => Full::Own,
                (Some(_), Some(_), None) => Full::Outer,
                (Some(_), _, _) => {
                    return own.map(|own| BudgetPermit {
                        _own: own,
                        _within: within,
                    })
                }
            };
            if !reclaim(full) {
                return None;
            }
            let semaphore = match (full, &self.within) {
                (Full::Outer, Some(outer)) => outer.clone(),
                _ => self.permits.clone(),
            };
            let permit = tokio::time::timeout_at(deadline, semaphore.acquire_owned())
                .await
                .ok()?
                .ok()?;
            match full {
                Full::Own => own = Some(permit),
                Full::Outer => within = Some(permit),
            }
        }
        None
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Shares taken now, across all edges.
    pub(crate) fn in_use(&self) -> usize {
        self.capacity
            .saturating_sub(self.permits.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nested_budget_needs_room_in_both() {
        let all = DescriptorBudget::new(3);
        let udp = DescriptorBudget::within(&all, 2);
        let a = udp.try_take().unwrap();
        let _b = udp.try_take().unwrap();
        assert!(udp.try_take().is_none(), "its own cap");
        let _c = all.try_take().unwrap();
        assert!(
            all.try_take().is_none(),
            "the outer cap counts the inner shares"
        );
        drop(a);
        assert_eq!((udp.in_use(), all.in_use()), (1, 2));
        assert!(udp.try_take().is_some());
    }

    #[test]
    fn budgets_leave_room_and_never_underflow() {
        assert_eq!(hub_udp_sessions(1024), 448);
        assert_eq!(hub_udp_sessions(16_384), 8128);
        assert_eq!(hub_udp_sessions(64), 0);
        assert_eq!(hub_pending_logins(1024), 112);
        assert_eq!(hub_forwarding(1024), 784);
        assert_eq!(hub_pending_logins(1 << 20), 1024);
        assert_eq!(hub_forwarding(64), 0);
        assert_eq!(edge_connections(1024, 2), 894);
        assert_eq!(edge_connections(100, 2), 0);
        assert_eq!(edge_connections(u64::MAX, u64::MAX), 0);
    }

    #[test]
    fn the_current_limit_is_readable() {
        assert!(current() >= 1);
    }
}
