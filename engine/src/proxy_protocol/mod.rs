//! Sans-IO encoder and decoder for the HAProxy PROXY protocol, versions 1 and 2.
//!
//! The edge accepts the client's connection, so only the edge knows the client's real
//! address. It prepends a PROXY header to what it forwards so that the hub (and the backend
//! behind it) can log, rate-limit and authorise by the client's IP rather than the tunnel's.
//!
//! Nothing here does IO: decoders take the bytes read so far and say either "here is the
//! header and how many bytes it used", "need more bytes" (`Incomplete`), or why the bytes can
//! never form a valid header. That keeps the parsers testable byte-by-byte and usable from
//! both the TCP stream path and the per-datagram UDP path.
//!
//! Specification: <https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt>.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

pub(crate) mod choice;
pub(crate) mod v1;
pub(crate) mod v2;

/// Transport carried by the header: TCP (v1 TCP4/TCP6, v2 STREAM) or UDP (v2 DGRAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyTransport {
    /// A byte stream (TCP): v1 `TCP4`/`TCP6`, v2 transport `STREAM` (0x1).
    Stream,
    /// Datagrams (UDP): only expressible in v2, transport `DGRAM` (0x2).
    Datagram,
}

/// Client (source) and edge-local (destination) addresses of one tunneled connection/datagram.
///
/// Build it with [`ProxyHeader::new`] so that both sides are of one address family: both
/// protocol versions carry a single family for the pair, so a mixed pair cannot be encoded
/// as is. The encoders normalise a hand-built value the same way before writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address, as seen by the edge.
    pub source: SocketAddr,
    /// The address on the edge that the client connected to.
    pub destination: SocketAddr,
}

impl ProxyHeader {
    /// Normalises IPv4-mapped IPv6 (::ffff:a.b.c.d) to IPv4 on both sides; if the families then
    /// differ, maps the IPv4 side to IPv4-mapped IPv6 so both are the same family.
    ///
    /// A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`; writing those as
    /// `TCP4` keeps backend logs and ACLs in the familiar dotted form. IPv6 flow info and
    /// scope id are cleared because neither version of the protocol can carry them, so a
    /// header always equals what the peer will decode from it.
    pub fn new(source: SocketAddr, destination: SocketAddr) -> Self {
        let source = canonical(source);
        let destination = canonical(destination);
        let (source, destination) = match (source, destination) {
            (SocketAddr::V4(s), SocketAddr::V6(_)) => (map_to_v6(s), destination),
            (SocketAddr::V6(_), SocketAddr::V4(d)) => (source, map_to_v6(d)),
            _ => (source, destination),
        };
        Self {
            source,
            destination,
        }
    }

    /// True when both addresses are IPv4, i.e. the header encodes as v1 `TCP4` / v2 `AF_INET`.
    ///
    /// For a hand-built mixed pair this is false, matching the IPv6 header the encoders
    /// write for it.
    pub fn is_ipv4(&self) -> bool {
        self.source.is_ipv4() && self.destination.is_ipv4()
    }

    /// The same header after [`ProxyHeader::new`]'s normalisation; the encoders write this.
    fn normalized(&self) -> Self {
        Self::new(self.source, self.destination)
    }
}

/// A peer address as the project reports and keys it: `::ffff:a.b.c.d` (what dual-stack sockets
/// report for IPv4 peers) becomes `a.b.c.d`, and IPv6 flow info and scope id are dropped (no
/// header can carry them). The one place this normalisation lives.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Turns `a.b.c.d` into `::ffff:a.b.c.d`, the IPv6 form that still names the IPv4 peer.
fn map_to_v6(addr: SocketAddrV4) -> SocketAddr {
    let ip: Ipv4Addr = *addr.ip();
    SocketAddr::V6(SocketAddrV6::new(ip.to_ipv6_mapped(), addr.port(), 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv6Addr};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn new_unmaps_ipv4_mapped_on_both_sides() {
        let h = ProxyHeader::new(sa("[::ffff:1.2.3.4]:1111"), sa("[::ffff:5.6.7.8]:2222"));
        assert_eq!(h.source, sa("1.2.3.4:1111"));
        assert_eq!(h.destination, sa("5.6.7.8:2222"));
        assert!(h.is_ipv4());
    }

    #[test]
    fn new_maps_ipv4_side_when_families_differ() {
        let h = ProxyHeader::new(sa("1.2.3.4:1111"), sa("[2001:db8::1]:443"));
        assert_eq!(h.source, sa("[::ffff:1.2.3.4]:1111"));
        assert_eq!(h.destination, sa("[2001:db8::1]:443"));
        assert!(!h.is_ipv4());

        let h = ProxyHeader::new(sa("[2001:db8::1]:1111"), sa("5.6.7.8:443"));
        assert_eq!(h.source, sa("[2001:db8::1]:1111"));
        assert_eq!(h.destination, sa("[::ffff:5.6.7.8]:443"));
    }

    #[test]
    fn new_mapped_v6_against_real_v6_stays_mapped() {
        let h = ProxyHeader::new(sa("[::ffff:1.2.3.4]:1"), sa("[2001:db8::1]:2"));
        assert_eq!(h.source, sa("[::ffff:1.2.3.4]:1"));
        assert!(!h.is_ipv4());
    }

    #[test]
    fn new_keeps_plain_pairs_and_is_idempotent() {
        let v4 = ProxyHeader::new(sa("1.2.3.4:1"), sa("5.6.7.8:2"));
        assert_eq!(v4.source, sa("1.2.3.4:1"));
        assert!(v4.is_ipv4());
        let v6 = ProxyHeader::new(sa("[::1]:1"), sa("[fe80::1]:2"));
        assert_eq!(v6.destination, sa("[fe80::1]:2"));
        assert!(!v6.is_ipv4());
        for h in [v4, v6] {
            assert_eq!(ProxyHeader::new(h.source, h.destination), h);
        }
    }

    #[test]
    fn new_clears_flowinfo_and_scope_id() {
        let src = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 7, 3));
        let h = ProxyHeader::new(src, src);
        assert_eq!(
            h.source,
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 0, 0))
        );
    }

    #[test]
    fn ipv4_compatible_is_not_unmapped() {
        // Only ::ffff:0:0/96 is "mapped"; the deprecated ::a.b.c.d form is a real IPv6 address.
        let ip: Ipv6Addr = "::1.2.3.4".parse().unwrap();
        let h = ProxyHeader::new(
            SocketAddr::new(IpAddr::V6(ip), 1),
            SocketAddr::new(IpAddr::V6(ip), 2),
        );
        assert!(!h.is_ipv4());
    }

    #[test]
    fn is_ipv4_false_for_hand_built_mixed_pair() {
        let h = ProxyHeader {
            source: sa("1.2.3.4:1"),
            destination: sa("[::1]:2"),
        };
        assert!(!h.is_ipv4());
        assert_eq!(h.normalized().source, sa("[::ffff:1.2.3.4]:1"));
    }
}

/// Address generators shared by the v1 and v2 property tests.
#[cfg(test)]
mod test_strategies {
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

    /// Plain IPv4, arbitrary IPv6, IPv4-mapped IPv6 and edge values, so that normalisation
    /// and mixed-family handling are exercised often, not by luck.
    fn ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
            any::<[u8; 4]>().prop_map(|o| IpAddr::V6(Ipv4Addr::from(o).to_ipv6_mapped())),
            Just(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            Just(IpAddr::V4(Ipv4Addr::BROADCAST)),
            Just(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            Just(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            Just(IpAddr::V6(Ipv6Addr::from([0xff; 16]))),
        ]
    }

    /// Any socket address, including IPv6 flow info and scope id that the protocol drops.
    pub(super) fn socket_addr() -> impl Strategy<Value = SocketAddr> {
        (ip(), any::<u16>(), any::<u32>(), any::<u32>()).prop_map(
            |(ip, port, flow, scope)| match ip {
                IpAddr::V4(_) => SocketAddr::new(ip, port),
                IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, flow, scope)),
            },
        )
    }
}
