//! Port authorization: the ports an edge is assigned *now*. A stream or UDP session from an edge
//! is forwarded only to a port in its current `listenPorts` / `listenPortsUdp`; anything else is
//! refused and counted. Without this check a compromised edge could reach any port of the
//! target host (an admin service or a database on 127.0.0.1) by forging the PROXY header.
//!
//! The hub actor updates the grant *before* it pushes new ports, so an added port is allowed by
//! the time the edge listens on it, and a removed one is refused for new streams at once. The
//! grant also says which target port a public port goes to (`targetPorts`, else the same) and
//! which PROXY header the edge and the port ask for.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use remoteingress_ipc_schema::{PortProtocol, ProxyProtocolVersion};

use super::client_source::ClientSources;
use crate::config::AllowedEdgeSettings;
use crate::log_limit::SharedLogLimiter;
use crate::proxy_protocol::choice::EdgeProxyProtocol;
use crate::proxy_protocol::ProxyHeader;
use crate::wire_name::Wire;

#[derive(Debug, Default)]
struct Assigned {
    tcp: HashSet<u16>,
    udp: HashSet<u16>,
    /// Public port -> target port, where they differ.
    targets: BTreeMap<u16, u16>,
    /// The edge's and its ports' PROXY header choices.
    proxy_protocol: EdgeProxyProtocol,
}

/// Where an authorised stream or UDP session goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    /// The port dialled on the target host.
    pub(crate) target_port: u16,
    /// The edge's or the port's PROXY choice; `None` leaves it to the hub's.
    pub(crate) proxy_protocol: Option<ProxyProtocolVersion>,
}

/// The ports one connected edge may be forwarded to, and which client addresses it is believed
/// about ([`ClientSources`]).
#[derive(Debug, Default)]
pub(crate) struct PortGrant {
    assigned: RwLock<Assigned>,
    refused: AtomicU64,
    warnings: SharedLogLimiter,
    sources: ClientSources,
}

impl PortGrant {
    #[cfg(test)]
    pub(crate) fn new(
        tcp: &[u16],
        udp: &[u16],
        targets: &BTreeMap<u16, u16>,
        proxy_protocol: &EdgeProxyProtocol,
    ) -> Self {
        let grant = Self::default();
        grant.set(tcp, udp, targets, proxy_protocol);
        grant
    }

    /// Replaces the assigned ports, the port mapping and the PROXY choices.
    pub(crate) fn set(
        &self,
        tcp: &[u16],
        udp: &[u16],
        targets: &BTreeMap<u16, u16>,
        proxy_protocol: &EdgeProxyProtocol,
    ) {
        let assigned = Assigned {
            tcp: tcp.iter().copied().collect(),
            udp: udp.iter().copied().collect(),
            targets: targets.clone(),
            proxy_protocol: proxy_protocol.clone(),
        };
        match self.assigned.write() {
            Ok(mut current) => *current = assigned,
            // Only a panic while replacing two sets poisons this lock; the new value is
            // complete, so store it.
            Err(poisoned) => *poisoned.into_inner() = assigned,
        }
    }

    /// Replaces everything with what `allowed` says now.
    pub(crate) fn set_allowed(&self, allowed: &AllowedEdgeSettings) {
        self.set(
            &allowed.listen_ports,
            &allowed.listen_ports_udp,
            &allowed.target_ports,
            &allowed.proxy_protocol,
        );
    }

    /// Where public `port` goes when it is assigned; otherwise `None`, counting the refusal and
    /// warning (rate-limited). A poisoned lock refuses (fails closed).
    pub(crate) fn route(&self, edge_id: &str, protocol: PortProtocol, port: u16) -> Option<Route> {
        let target = self.assigned.read().ok().and_then(|assigned| {
            let listed = match protocol {
                PortProtocol::Tcp => assigned.tcp.contains(&port),
                PortProtocol::Udp => assigned.udp.contains(&port),
            };
            listed.then(|| Route {
                target_port: assigned.targets.get(&port).copied().unwrap_or(port),
                proxy_protocol: assigned.proxy_protocol.for_port(port, None),
            })
        });
        if target.is_none() {
            let total = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            crate::limited_warn!(
                self.warnings,
                %edge_id, protocol = %Wire(&protocol), port, refused_total = total,
                "edge asked for a port it is not assigned; refused"
            );
        }
        target
    }

    /// Whether `header`'s client address is one this edge may claim; a refusal is counted and
    /// warned about (rate-limited).
    pub(crate) fn source_allowed(&self, edge_id: &str, header: &ProxyHeader) -> bool {
        match self.sources.check(header) {
            Ok(()) => true,
            Err((why, total)) => {
                crate::limited_warn!(
                    self.warnings,
                    %edge_id, client = %header.source, why = why.as_str(), refused_total = total,
                    "edge claimed a client address no public client can have; refused"
                );
                false
            }
        }
    }

    /// The client-address policy of this edge.
    pub(crate) fn sources(&self) -> &ClientSources {
        &self.sources
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

    const NO_MAP: &BTreeMap<u16, u16> = &BTreeMap::new();

    fn no_choice() -> EdgeProxyProtocol {
        EdgeProxyProtocol::default()
    }

    /// The target port of `port` when it is assigned.
    fn target_port(grant: &PortGrant, protocol: PortProtocol, port: u16) -> Option<u16> {
        grant
            .route("e", protocol, port)
            .map(|route| route.target_port)
    }

    #[test]
    fn only_current_ports_of_the_right_protocol_pass() {
        let grant = PortGrant::new(&[80, 443], &[53], NO_MAP, &no_choice());
        assert_eq!(target_port(&grant, PortProtocol::Tcp, 443), Some(443));
        assert_eq!(target_port(&grant, PortProtocol::Tcp, 53), None);
        assert_eq!(target_port(&grant, PortProtocol::Udp, 53), Some(53));
        assert_eq!(target_port(&grant, PortProtocol::Udp, 80), None);
        grant.set(&[80], &[], NO_MAP, &no_choice());
        assert_eq!(target_port(&grant, PortProtocol::Tcp, 443), None);
        assert_eq!(target_port(&grant, PortProtocol::Udp, 53), None);
        assert_eq!(grant.refused(), 4);
    }

    #[test]
    fn a_mapped_port_goes_to_its_target_port() {
        let map = BTreeMap::from([(443, 8443), (53, 5353)]);
        let grant = PortGrant::new(&[80, 443], &[53], &map, &no_choice());
        assert_eq!(target_port(&grant, PortProtocol::Tcp, 443), Some(8443));
        assert_eq!(target_port(&grant, PortProtocol::Tcp, 80), Some(80));
        assert_eq!(target_port(&grant, PortProtocol::Udp, 53), Some(5353));
        // The mapping does not assign a port by itself.
        assert_eq!(target_port(&grant, PortProtocol::Tcp, 53), None);
    }

    #[test]
    fn the_route_carries_the_port_s_or_the_edge_s_proxy_choice() {
        let choice = EdgeProxyProtocol {
            edge: Some(ProxyProtocolVersion::None),
            ports: BTreeMap::from([(443, ProxyProtocolVersion::V2)]),
        };
        let grant = PortGrant::new(&[22, 443], &[], NO_MAP, &choice);
        let route = |port| grant.route("e", PortProtocol::Tcp, port).unwrap();
        assert_eq!(route(443).proxy_protocol, Some(ProxyProtocolVersion::V2));
        assert_eq!(route(22).proxy_protocol, Some(ProxyProtocolVersion::None));
        grant.set(&[22], &[], NO_MAP, &no_choice());
        assert_eq!(route(22).proxy_protocol, None, "the hub's choice applies");
    }

    #[test]
    fn a_poisoned_grant_refuses() {
        let grant = std::sync::Arc::new(PortGrant::new(&[80], &[], NO_MAP, &no_choice()));
        let clone = grant.clone();
        let _ = std::thread::spawn(move || {
            let _guard = clone.assigned.write().unwrap();
            panic!("poison");
        })
        .join();
        assert_eq!(target_port(&grant, PortProtocol::Tcp, 80), None);
    }
}
