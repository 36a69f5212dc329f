//! PROXY protocol version 2 (spec section 2.2), trimmed to what this project sends and reads:
//! PROXY-command headers for TCP or UDP over IPv4 or IPv6, without TLVs.
//!
//! ```text
//! offset  size  field
//!      0    12  signature  \r\n\r\n\0\r\nQUIT\n
//!     12     1  0x21: version 2, command PROXY
//!     13     1  family (1 INET, 2 INET6) << 4 | transport (1 STREAM, 2 DGRAM)
//!     14     2  length of the address block, big-endian (12 or 36)
//!     16     -  source address, destination address, source port, destination port
//! ```
//!
//! v2 is the only version that can say "UDP", so the edge puts one in every `UDP_OPEN` and the
//! hub writes it to UDP targets; the hub also writes it for TCP targets configured for v2. The
//! only header we read is the edge's `UDP_OPEN` header, so [`parse`] accepts exactly what
//! [`encode`] writes. (The `ppp` crate would read the whole protocol; for two fixed layouts
//! this is less code than its adapter, and the hub reads it once per session, not per datagram.)

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{ProxyHeader, ProxyTransport};

/// The 12 bytes every v2 header starts with. Chosen by the spec to be invalid as the start
/// of HTTP, SSH, TLS and v1, so a receiver cannot mistake ordinary traffic for a header.
pub(crate) const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Version 2, command PROXY.
const VERSION_PROXY: u8 = 0x21;
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const STREAM: u8 = 0x1;
const DGRAM: u8 = 0x2;
/// Address block sizes: two addresses, then two 16-bit ports.
const INET_LEN: u16 = 4 + 4 + 2 + 2;
const INET6_LEN: u16 = 16 + 16 + 2 + 2;

/// Encodes a PROXY-command header (28 bytes for IPv4, 52 for IPv6).
///
/// The header is normalised first (see [`ProxyHeader::new`]), so a mixed pair is written as
/// AF_INET6 with the IPv4 side as `::ffff:a.b.c.d`.
pub fn encode(header: &ProxyHeader, transport: ProxyTransport) -> Vec<u8> {
    let header = ProxyHeader::new(header.source, header.destination);
    let transport = match transport {
        ProxyTransport::Stream => STREAM,
        ProxyTransport::Datagram => DGRAM,
    };
    let mut out = Vec::with_capacity(16 + usize::from(INET6_LEN));
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_PROXY);
    match (header.source, header.destination) {
        (SocketAddr::V4(src), SocketAddr::V4(dst)) => {
            out.push(AF_INET << 4 | transport);
            out.extend_from_slice(&INET_LEN.to_be_bytes());
            out.extend_from_slice(&src.ip().octets());
            out.extend_from_slice(&dst.ip().octets());
        }
        (src, dst) => {
            out.push(AF_INET6 << 4 | transport);
            out.extend_from_slice(&INET6_LEN.to_be_bytes());
            out.extend_from_slice(&ipv6_octets(src));
            out.extend_from_slice(&ipv6_octets(dst));
        }
    }
    out.extend_from_slice(&header.source.port().to_be_bytes());
    out.extend_from_slice(&header.destination.port().to_be_bytes());
    out
}

/// IPv6 octets of either family; the IPv4 case only arises for a pair that normalisation made
/// IPv6, where it must be written IPv4-mapped.
fn ipv6_octets(addr: SocketAddr) -> [u8; 16] {
    match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// Reads a header [`encode`] wrote: `input` must be exactly one PROXY-command INET or INET6
/// header, no TLVs, nothing after it. `None` for anything else (it comes from an edge, which may
/// be compromised: the hub refuses the session).
pub(crate) fn parse(input: &[u8]) -> Option<(ProxyHeader, ProxyTransport)> {
    let (signature, rest) = input.split_first_chunk::<12>()?;
    let ([version, protocol, len_hi, len_lo], addresses) = rest.split_first_chunk::<4>()?;
    if *signature != SIGNATURE || *version != VERSION_PROXY {
        return None;
    }
    let transport = match protocol & 0x0f {
        STREAM => ProxyTransport::Stream,
        DGRAM => ProxyTransport::Datagram,
        _ => return None,
    };
    let declared = u16::from_be_bytes([*len_hi, *len_lo]);
    let (src, dst, ports) = match (protocol >> 4, declared, addresses.len()) {
        (AF_INET, INET_LEN, 12) => {
            let (src, rest) = addresses.split_first_chunk::<4>()?;
            let (dst, ports) = rest.split_first_chunk::<4>()?;
            (
                Ipv4Addr::from(*src).into(),
                Ipv4Addr::from(*dst).into(),
                ports,
            )
        }
        (AF_INET6, INET6_LEN, 36) => {
            let (src, rest) = addresses.split_first_chunk::<16>()?;
            let (dst, ports) = rest.split_first_chunk::<16>()?;
            (
                Ipv6Addr::from(*src).into(),
                Ipv6Addr::from(*dst).into(),
                ports,
            )
        }
        _ => return None,
    };
    let [sp_hi, sp_lo, dp_hi, dp_lo] = *ports else {
        return None;
    };
    let header = ProxyHeader::new(
        SocketAddr::new(src, u16::from_be_bytes([sp_hi, sp_lo])),
        SocketAddr::new(dst, u16::from_be_bytes([dp_hi, dp_lo])),
    );
    Some((header, transport))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_protocol::test_strategies::socket_addr;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[rustfmt::skip]
    const TCP4_BYTES: [u8; 28] = [
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
        0x21,       // version 2, PROXY
        0x11,       // AF_INET, STREAM
        0x00, 0x0C, // 12 bytes follow
        1, 2, 3, 4, // source 1.2.3.4
        5, 6, 7, 8, // destination 5.6.7.8
        0x04, 0x57, // source port 1111
        0x08, 0xAE, // destination port 2222
    ];

    #[rustfmt::skip]
    const UDP6_BYTES: [u8; 52] = [
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
        0x21,
        0x22,       // AF_INET6, DGRAM
        0x00, 0x24, // 36 bytes follow
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // 2001:db8::1
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // 2001:db8::2
        0x01, 0xBB, // source port 443
        0x20, 0xFB, // destination port 8443
    ];

    #[test]
    fn known_vectors_from_the_spec_layout() {
        let tcp4 = ProxyHeader::new(sa("1.2.3.4:1111"), sa("5.6.7.8:2222"));
        assert_eq!(encode(&tcp4, ProxyTransport::Stream), TCP4_BYTES);
        assert_eq!(parse(&TCP4_BYTES), Some((tcp4, ProxyTransport::Stream)));
        let udp6 = ProxyHeader::new(sa("[2001:db8::1]:443"), sa("[2001:db8::2]:8443"));
        assert_eq!(encode(&udp6, ProxyTransport::Datagram), UDP6_BYTES);
        assert_eq!(parse(&UDP6_BYTES), Some((udp6, ProxyTransport::Datagram)));
    }

    #[test]
    fn a_mixed_pair_is_written_as_ipv6_with_the_ipv4_side_mapped() {
        let mixed = ProxyHeader {
            source: sa("1.2.3.4:1"),
            destination: sa("[2001:db8::2]:2"),
        };
        let bytes = encode(&mixed, ProxyTransport::Datagram);
        assert_eq!(bytes.len(), 52);
        assert_eq!(
            &bytes[16..32],
            &Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped().octets()
        );
    }

    #[test]
    fn refuses_anything_encode_does_not_write() {
        let altered = |at: usize, value: u8| {
            let mut bytes = TCP4_BYTES.to_vec();
            bytes[at] = value;
            bytes
        };
        let mut with_tlv = TCP4_BYTES.to_vec();
        with_tlv[15] = 15;
        with_tlv.extend_from_slice(&[0x04, 0, 0]);
        let mut trailing = TCP4_BYTES.to_vec();
        trailing.push(0);
        for bad in [
            altered(0, b'x'),  // signature
            altered(12, 0x20), // LOCAL
            altered(12, 0x31), // version 3
            altered(13, 0x31), // AF_UNIX
            altered(13, 0x01), // AF_UNSPEC
            altered(13, 0x10), // transport UNSPEC
            altered(13, 0x21), // INET6 family with an INET block
            altered(15, 36),   // declared length differs from the block
            with_tlv,
            trailing,
            TCP4_BYTES[..27].to_vec(),
            Vec::new(),
        ] {
            assert_eq!(parse(&bad), None, "{bad:02x?}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(a in socket_addr(), b in socket_addr(), udp in any::<bool>()) {
            let transport = if udp { ProxyTransport::Datagram } else { ProxyTransport::Stream };
            let expected = ProxyHeader::new(a, b);
            let bytes = encode(&ProxyHeader { source: a, destination: b }, transport);
            prop_assert_eq!(bytes.len(), if expected.is_ipv4() { 28 } else { 52 });
            prop_assert_eq!(parse(&bytes), Some((expected, transport)));
        }

        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..80), signed in any::<bool>()) {
            let mut bytes = if signed { SIGNATURE.to_vec() } else { Vec::new() };
            bytes.extend_from_slice(&input);
            let _ = parse(&bytes);
        }
    }
}
