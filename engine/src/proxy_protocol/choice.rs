//! Which PROXY header a target gets: the hub's `proxyProtocol`, overridden by an allowed edge's,
//! overridden by a port's (`targetPorts[].proxyProtocol`); the most specific choice wins.
//!
//! The transports read a choice differently, because PROXY v1 is a text line for TCP only:
//! a TCP target gets v1 (the default), v2 or nothing; a UDP target gets v2 (the default, and
//! also what an explicit v1 gets) or nothing. The hub warns about the explicit v1 on UDP
//! ([`EdgeProxyProtocol::udp_ports_asking_for_v1`]); `docs/decisions.md` says why it is not an
//! error.

use std::collections::BTreeMap;

use remoteingress_ipc_schema::ProxyProtocolVersion;

/// One allowed edge's PROXY choices: its own and its ports'. `None` leaves the decision to the
/// level above.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeProxyProtocol {
    /// The edge's `proxyProtocol`.
    pub edge: Option<ProxyProtocolVersion>,
    /// Public port -> its `targetPorts` entry's `proxyProtocol`, where one is given.
    pub ports: BTreeMap<u16, ProxyProtocolVersion>,
}

impl EdgeProxyProtocol {
    /// The explicit choice for public `port`: the port's, else the edge's, else `hub`'s.
    pub fn for_port(
        &self,
        port: u16,
        hub: Option<ProxyProtocolVersion>,
    ) -> Option<ProxyProtocolVersion> {
        self.ports.get(&port).copied().or(self.edge).or(hub)
    }

    /// The UDP ports among `udp_ports` whose explicit choice is v1, which they cannot have:
    /// they get PROXY v2, and the hub says so.
    pub fn udp_ports_asking_for_v1(
        &self,
        udp_ports: &[u16],
        hub: Option<ProxyProtocolVersion>,
    ) -> Vec<u16> {
        udp_ports
            .iter()
            .copied()
            .filter(|&port| self.for_port(port, hub) == Some(ProxyProtocolVersion::V1))
            .collect()
    }
}

/// The header a TCP target gets for an explicit `choice` (v1 when there is none).
pub(crate) fn tcp_header(choice: Option<ProxyProtocolVersion>) -> ProxyProtocolVersion {
    choice.unwrap_or_default()
}

/// Whether a UDP target gets the PROXY v2 DGRAM header for an explicit `choice`: always,
/// except for `none` (v1 has no UDP form, so it means v2 here).
pub(crate) fn udp_has_header(choice: Option<ProxyProtocolVersion>) -> bool {
    choice != Some(ProxyProtocolVersion::None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProxyProtocolVersion::{None as Off, V1, V2};

    #[test]
    fn the_most_specific_choice_wins() {
        let edge = EdgeProxyProtocol {
            edge: Some(Off),
            ports: BTreeMap::from([(443, V2)]),
        };
        assert_eq!(edge.for_port(443, Some(V1)), Some(V2));
        assert_eq!(edge.for_port(22, Some(V1)), Some(Off));
        let plain = EdgeProxyProtocol::default();
        assert_eq!(plain.for_port(22, Some(Off)), Some(Off));
        assert_eq!(plain.for_port(22, None), None);
    }

    #[test]
    fn each_transport_reads_the_choice_its_way() {
        assert_eq!(tcp_header(None), V1);
        assert_eq!(tcp_header(Some(Off)), Off);
        assert_eq!(tcp_header(Some(V2)), V2);
        assert!(udp_has_header(None));
        assert!(udp_has_header(Some(V1)));
        assert!(udp_has_header(Some(V2)));
        assert!(!udp_has_header(Some(Off)));
    }

    #[test]
    fn only_an_explicit_v1_on_udp_is_reported() {
        let edge = EdgeProxyProtocol {
            edge: None,
            ports: BTreeMap::from([(53, Off), (443, V2)]),
        };
        assert!(edge
            .udp_ports_asking_for_v1(&[53, 443, 51820], None)
            .is_empty());
        assert_eq!(
            edge.udp_ports_asking_for_v1(&[53, 443, 51820], Some(V1)),
            vec![51820]
        );
    }
}
