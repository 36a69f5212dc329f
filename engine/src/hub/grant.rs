//! Port authorization: the ports an edge is assigned *now*. A stream or UDP session from an edge
//! is forwarded only to a port in its current `listenPorts` / `listenPortsUdp`; anything else is
//! refused and counted. Without this check a compromised edge could reach any port of the
//! target host (an admin service or a database on 127.0.0.1) by forging the PROXY header.
//!
//! The hub actor updates the grant *before* it pushes new ports, so an added port is allowed by
//! the time the edge listens on it, and a removed one is refused for new streams at once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use remoteingress_ipc_schema::PortProtocol;

use crate::log_limit::SharedLogLimiter;

#[derive(Debug, Default)]
struct Assigned {
    tcp: HashSet<u16>,
    udp: HashSet<u16>,
}

/// The ports one connected edge may be forwarded to.
#[derive(Debug, Default)]
pub(crate) struct PortGrant {
    assigned: RwLock<Assigned>,
    refused: AtomicU64,
    warnings: SharedLogLimiter,
}

impl PortGrant {
    pub(crate) fn new(tcp: &[u16], udp: &[u16]) -> Self {
        let grant = Self::default();
        grant.set(tcp, udp);
        grant
    }

    /// Replaces the assigned ports.
    pub(crate) fn set(&self, tcp: &[u16], udp: &[u16]) {
        let assigned = Assigned {
            tcp: tcp.iter().copied().collect(),
            udp: udp.iter().copied().collect(),
        };
        match self.assigned.write() {
            Ok(mut current) => *current = assigned,
            // Only a panic while replacing two sets poisons this lock; the new value is
            // complete, so store it.
            Err(poisoned) => *poisoned.into_inner() = assigned,
        }
    }

    /// True when `port` is assigned; otherwise counts the refusal and warns (rate-limited).
    /// A poisoned lock refuses (fails closed).
    pub(crate) fn allows(&self, edge_id: &str, protocol: PortProtocol, port: u16) -> bool {
        let allowed = self.assigned.read().is_ok_and(|assigned| match protocol {
            PortProtocol::Tcp => assigned.tcp.contains(&port),
            PortProtocol::Udp => assigned.udp.contains(&port),
        });
        if !allowed {
            let total = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            crate::limited_warn!(
                self.warnings,
                %edge_id, ?protocol, port, refused_total = total,
                "edge asked for a port it is not assigned; refused"
            );
        }
        allowed
    }

    /// Streams and UDP sessions refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Warnings suppressed by the rate limit (reported periodically by the session).
    pub(crate) fn take_suppressed_warnings(&self) -> Option<u64> {
        self.warnings.take_suppressed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_current_ports_of_the_right_protocol_pass() {
        let grant = PortGrant::new(&[80, 443], &[53]);
        assert!(grant.allows("e", PortProtocol::Tcp, 443));
        assert!(!grant.allows("e", PortProtocol::Tcp, 53));
        assert!(grant.allows("e", PortProtocol::Udp, 53));
        assert!(!grant.allows("e", PortProtocol::Udp, 80));
        grant.set(&[80], &[]);
        assert!(!grant.allows("e", PortProtocol::Tcp, 443));
        assert!(!grant.allows("e", PortProtocol::Udp, 53));
        assert_eq!(grant.refused(), 4);
    }

    #[test]
    fn a_poisoned_grant_refuses() {
        let grant = std::sync::Arc::new(PortGrant::new(&[80], &[]));
        let clone = grant.clone();
        let _ = std::thread::spawn(move || {
            let _guard = clone.assigned.write().unwrap();
            panic!("poison");
        })
        .join();
        assert!(!grant.allows("e", PortProtocol::Tcp, 80));
    }
}
