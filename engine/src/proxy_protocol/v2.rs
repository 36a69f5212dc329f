//! PROXY protocol version 2: binary header, spec section 2.2.
//!
//! ```text
//! offset  size  field
//!      0    12  signature  \r\n\r\n\0\r\nQUIT\n
//!     12     1  version (high nibble, must be 2) | command (low nibble: 0 LOCAL, 1 PROXY)
//!     13     1  family (high nibble: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX)
//!               | transport (low nibble: 0 UNSPEC, 1 STREAM, 2 DGRAM)
//!     14     2  length of what follows, big-endian
//!     16     -  addresses (INET 12, INET6 36, UNIX 216 bytes), then optional TLVs
//! ```
//!
//! v2 is the only version that can say "UDP", so the per-datagram path uses it; it is also
//! what many backends prefer, so the hub can turn the edge's v1 line into v2 ([`from_v1`]).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::{ProxyHeader, ProxyTransport, Reader};

/// The 12 bytes every v2 header starts with. Chosen by the spec to be invalid as the start
/// of HTTP, SSH, TLS and v1, so a receiver cannot mistake ordinary traffic for a header.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version/command, family/transport and length: the part read before the
/// length of the rest is known.
pub const FIXED_LEN: usize = 16;

/// Largest declared length (bytes after [`FIXED_LEN`]) that [`parse`] accepts.
///
/// The field allows 65535, but the largest address block is 216 bytes (AF_UNIX) and the
/// TLVs senders attach in practice (ALPN, authority/SNI, unique id, CRC32C, a few SSL
/// fields) fit in the remaining ~300. Refusing more as soon as the fixed part is in means a
/// peer cannot make us wait for, or buffer, up to 64 KiB before the first payload byte.
pub const MAX_PAYLOAD_LEN: usize = 512;

/// Largest whole header [`parse`] accepts: [`FIXED_LEN`] + [`MAX_PAYLOAD_LEN`].
pub const MAX_V2_LEN: usize = FIXED_LEN + MAX_PAYLOAD_LEN;

/// Version 2 in the high nibble of byte 12.
const VERSION: u8 = 0x2;
const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;

const AF_UNSPEC: u8 = 0x0;
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const AF_UNIX: u8 = 0x3;

const TRANSPORT_UNSPEC: u8 = 0x0;
const TRANSPORT_STREAM: u8 = 0x1;
const TRANSPORT_DGRAM: u8 = 0x2;

/// Address block sizes: two addresses, then (for INET/INET6) two 16-bit ports.
const INET_LEN: u16 = 4 + 4 + 2 + 2;
const INET6_LEN: u16 = 16 + 16 + 2 + 2;
const UNIX_LEN: u16 = 108 + 108;

/// What the sender asks of the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum V2Command {
    /// The connection was made by the proxy itself (e.g. a health check): use the real
    /// connection endpoints and ignore any address information.
    Local,
    /// The connection is relayed for a client whose addresses follow.
    Proxy,
}

/// A decoded v2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Header {
    /// LOCAL or PROXY.
    pub command: V2Command,
    /// STREAM or DGRAM; `None` for LOCAL (the spec says to ignore the protocol byte) and for
    /// an UNSPEC transport.
    pub transport: Option<ProxyTransport>,
    /// The client and edge addresses, normalised with [`ProxyHeader::new`]. `None` for
    /// LOCAL, for family UNSPEC and for AF_UNIX: the spec lets a receiver that does not
    /// support a family fall back to UNSPEC (use the real connection endpoints), and a Unix
    /// socket path cannot become a [`SocketAddr`]. Callers that need a client IP should
    /// treat `None` under [`V2Command::Proxy`] as "client address unknown".
    pub addresses: Option<ProxyHeader>,
}

/// Why a buffer does not (yet) hold a valid v2 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum V2Error {
    /// Fewer bytes than the fixed 16-byte part, or than 16 + the declared length, and
    /// nothing wrong so far: read more and parse again.
    #[error("incomplete PROXY v2 header: need more bytes")]
    Incomplete,
    /// The input does not start with the 12-byte v2 signature: the peer sent no v2 header.
    #[error("not a PROXY v2 header: signature mismatch")]
    InvalidSignature,
    /// The version nibble is not 2. Later versions may change the layout, so we stop.
    #[error("unsupported PROXY header version {version} (expected 2)")]
    UnsupportedVersion {
        /// The high nibble of byte 12.
        version: u8,
    },
    /// The command nibble is neither LOCAL (0) nor PROXY (1); the spec says to reject it.
    #[error("unknown PROXY v2 command {command:#x} (expected 0 LOCAL or 1 PROXY)")]
    UnknownCommand {
        /// The low nibble of byte 12.
        command: u8,
    },
    /// The address family nibble is none of UNSPEC, INET, INET6, UNIX.
    #[error("unknown PROXY v2 address family {family:#x}")]
    UnknownAddressFamily {
        /// The high nibble of byte 13.
        family: u8,
    },
    /// The transport nibble is none of UNSPEC, STREAM, DGRAM.
    #[error("unknown PROXY v2 transport {transport:#x}")]
    UnknownTransport {
        /// The low nibble of byte 13.
        transport: u8,
    },
    /// A real address family with transport UNSPEC: the spec defines no such combination,
    /// and addresses without a transport would be ambiguous.
    #[error("PROXY v2 address family {family:#x} given with UNSPEC transport")]
    UnspecifiedTransport {
        /// The high nibble of byte 13.
        family: u8,
    },
    /// The declared length exceeds [`MAX_PAYLOAD_LEN`]; refused before waiting for the
    /// bytes so a peer cannot make us buffer up to 64 KiB.
    #[error("PROXY v2 header declares {declared} bytes after the fixed part, more than the {max} we accept")]
    TooLong {
        /// The length field.
        declared: usize,
        /// [`MAX_PAYLOAD_LEN`].
        max: usize,
    },
    /// The declared length is smaller than the address block its family requires.
    #[error("PROXY v2 header declares {declared} bytes, but its address family needs {required}")]
    AddressBlockTooShort {
        /// The length field.
        declared: usize,
        /// The size of the address block for the family.
        required: usize,
    },
}

/// Encodes a PROXY-command header without TLVs (28 bytes for IPv4, 52 for IPv6).
pub fn encode(header: &ProxyHeader, transport: ProxyTransport) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_LEN + usize::from(INET6_LEN));
    encode_into(header, transport, &mut out);
    out
}

/// Appends the header [`encode`] would return to `out`, so the per-datagram path can build
/// header and payload in one reused buffer.
///
/// The header is normalised first (see [`ProxyHeader::new`]), so a mixed pair is written as
/// AF_INET6 with the IPv4 side as `::ffff:a.b.c.d`.
pub fn encode_into(header: &ProxyHeader, transport: ProxyTransport, out: &mut Vec<u8>) {
    let header = header.normalized();
    let transport = match transport {
        ProxyTransport::Stream => TRANSPORT_STREAM,
        ProxyTransport::Datagram => TRANSPORT_DGRAM,
    };
    out.reserve(FIXED_LEN + usize::from(INET6_LEN));
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION << 4 | CMD_PROXY);
    if let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (header.source, header.destination) {
        out.push(AF_INET << 4 | transport);
        out.extend_from_slice(&INET_LEN.to_be_bytes());
        out.extend_from_slice(&src.ip().octets());
        out.extend_from_slice(&dst.ip().octets());
    } else {
        out.push(AF_INET6 << 4 | transport);
        out.extend_from_slice(&INET6_LEN.to_be_bytes());
        out.extend_from_slice(&ipv6_octets(header.source));
        out.extend_from_slice(&ipv6_octets(header.destination));
    }
    out.extend_from_slice(&header.source.port().to_be_bytes());
    out.extend_from_slice(&header.destination.port().to_be_bytes());
}

/// A LOCAL-command header with no addresses: what a proxy sends on its own connections
/// (health checks) so the receiver uses the real endpoints.
pub fn encode_local() -> [u8; FIXED_LEN] {
    let mut out = [0; FIXED_LEN];
    for (dst, src) in out.iter_mut().zip(SIGNATURE) {
        *dst = src;
    }
    if let Some(byte) = out.get_mut(SIGNATURE.len()) {
        *byte = VERSION << 4 | CMD_LOCAL;
    }
    // Family/transport UNSPEC and length 0 are the zeros already there.
    out
}

/// Converts a v1 line's header to the v2 STREAM header bytes (what the hub writes when configured for v2).
///
/// v1 can only describe TCP, hence STREAM.
pub fn from_v1(header: &ProxyHeader) -> Vec<u8> {
    encode(header, ProxyTransport::Stream)
}

/// IPv6 octets of either family; the IPv4 case only arises for a pair that normalisation
/// made IPv6, where it must be written IPv4-mapped.
fn ipv6_octets(addr: SocketAddr) -> [u8; 16] {
    match addr {
        SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped().octets(),
        SocketAddr::V6(v6) => v6.ip().octets(),
    }
}

/// Ok((header, bytes_consumed)) ; Incomplete when fewer bytes than the fixed part or the declared length.
///
/// Each field is checked as soon as its bytes are present, so garbage is refused at once
/// rather than after waiting for a length that will never arrive; [`V2Error::Incomplete`]
/// means every byte seen so far is still a valid start. TLVs after the address block are
/// skipped without being interpreted (the spec lets receivers ignore them), and therefore
/// their framing and any CRC32C are not checked; they never extend past the declared length.
/// Bytes after the header are not looked at.
pub fn parse(input: &[u8]) -> Result<(V2Header, usize), V2Error> {
    let seen = input.len().min(SIGNATURE.len());
    if input.get(..seen) != SIGNATURE.get(..seen) {
        return Err(V2Error::InvalidSignature);
    }
    let mut reader = Reader::new(input);
    reader.take(SIGNATURE.len()).ok_or(V2Error::Incomplete)?;

    let version_command = reader.take_u8().ok_or(V2Error::Incomplete)?;
    let version = version_command >> 4;
    if version != VERSION {
        return Err(V2Error::UnsupportedVersion { version });
    }
    let command = match version_command & 0x0f {
        CMD_LOCAL => V2Command::Local,
        CMD_PROXY => V2Command::Proxy,
        command => return Err(V2Error::UnknownCommand { command }),
    };

    let family_transport = reader.take_u8().ok_or(V2Error::Incomplete)?;
    // LOCAL: "the receiver must ... discard the protocol block including the family",
    // so the byte is not validated; only the length still matters, to skip the block.
    let protocol = match command {
        V2Command::Local => None,
        V2Command::Proxy => Some(decode_protocol(family_transport)?),
    };

    let declared = usize::from(reader.take_u16_be().ok_or(V2Error::Incomplete)?);
    if declared > MAX_PAYLOAD_LEN {
        return Err(V2Error::TooLong {
            declared,
            max: MAX_PAYLOAD_LEN,
        });
    }
    let required = protocol.map_or(0, |(family, _)| family.address_len());
    if declared < required {
        return Err(V2Error::AddressBlockTooShort { declared, required });
    }
    let payload = reader.take(declared).ok_or(V2Error::Incomplete)?;

    let header = match protocol {
        None => V2Header {
            command,
            transport: None,
            addresses: None,
        },
        Some((family, transport)) => V2Header {
            command,
            transport,
            addresses: decode_addresses(family, payload)?,
        },
    };
    Ok((header, reader.used()))
}

/// The address families the spec defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Unspec,
    Inet,
    Inet6,
    Unix,
}

impl Family {
    /// Size of the address block this family puts before any TLVs.
    fn address_len(self) -> usize {
        usize::from(match self {
            Self::Unspec => 0,
            Self::Inet => INET_LEN,
            Self::Inet6 => INET6_LEN,
            Self::Unix => UNIX_LEN,
        })
    }
}

/// Decodes byte 13 of a PROXY-command header.
fn decode_protocol(byte: u8) -> Result<(Family, Option<ProxyTransport>), V2Error> {
    let family = match byte >> 4 {
        AF_UNSPEC => Family::Unspec,
        AF_INET => Family::Inet,
        AF_INET6 => Family::Inet6,
        AF_UNIX => Family::Unix,
        family => return Err(V2Error::UnknownAddressFamily { family }),
    };
    let transport = match byte & 0x0f {
        TRANSPORT_UNSPEC => None,
        TRANSPORT_STREAM => Some(ProxyTransport::Stream),
        TRANSPORT_DGRAM => Some(ProxyTransport::Datagram),
        transport => return Err(V2Error::UnknownTransport { transport }),
    };
    if family != Family::Unspec && transport.is_none() {
        return Err(V2Error::UnspecifiedTransport { family: byte >> 4 });
    }
    Ok((family, transport))
}

/// Reads the address block at the start of `payload`; the rest (TLVs) is skipped.
fn decode_addresses(family: Family, payload: &[u8]) -> Result<Option<ProxyHeader>, V2Error> {
    let mut reader = Reader::new(payload);
    // `parse` already checked the length; this error only replaces a panic.
    let short = V2Error::AddressBlockTooShort {
        declared: payload.len(),
        required: family.address_len(),
    };
    let header = match family {
        Family::Unspec | Family::Unix => None,
        Family::Inet => {
            let src = Ipv4Addr::from(reader.take_array::<4>().ok_or(short)?);
            let dst = Ipv4Addr::from(reader.take_array::<4>().ok_or(short)?);
            let src_port = reader.take_u16_be().ok_or(short)?;
            let dst_port = reader.take_u16_be().ok_or(short)?;
            Some(ProxyHeader::new(
                SocketAddr::V4(SocketAddrV4::new(src, src_port)),
                SocketAddr::V4(SocketAddrV4::new(dst, dst_port)),
            ))
        }
        Family::Inet6 => {
            let src = Ipv6Addr::from(reader.take_array::<16>().ok_or(short)?);
            let dst = Ipv6Addr::from(reader.take_array::<16>().ok_or(short)?);
            let src_port = reader.take_u16_be().ok_or(short)?;
            let dst_port = reader.take_u16_be().ok_or(short)?;
            Some(ProxyHeader::new(
                SocketAddr::V6(SocketAddrV6::new(src, src_port, 0, 0)),
                SocketAddr::V6(SocketAddrV6::new(dst, dst_port, 0, 0)),
            ))
        }
    };
    // TLVs: bounded by the declared length, not interpreted.
    let _tlvs = reader.rest();
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_protocol::test_strategies::socket_addr;
    use crate::proxy_protocol::v1;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const SIG: [u8; 12] = [
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
    ];

    /// Signature + version/command + family/transport + length, then `rest`.
    fn raw(ver_cmd: u8, fam: u8, len: u16, rest: &[u8]) -> Vec<u8> {
        let mut v = SIG.to_vec();
        v.push(ver_cmd);
        v.push(fam);
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(rest);
        v
    }

    fn tcp4() -> ProxyHeader {
        ProxyHeader::new(sa("1.2.3.4:1111"), sa("5.6.7.8:2222"))
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
    const TCP6_BYTES: [u8; 52] = [
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
        0x21,       // version 2, PROXY
        0x21,       // AF_INET6, STREAM
        0x00, 0x24, // 36 bytes follow
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // 2001:db8::1
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // 2001:db8::2
        0x01, 0xBB, // source port 443
        0x20, 0xFB, // destination port 8443
    ];

    #[rustfmt::skip]
    const UDP4_BYTES: [u8; 28] = [
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
        0x21,
        0x12,       // AF_INET, DGRAM
        0x00, 0x0C,
        10, 0, 0, 1,
        10, 0, 0, 2,
        0x00, 0x35, // 53
        0xFF, 0xFF, // 65535
    ];

    #[rustfmt::skip]
    const UDP6_BYTES: [u8; 52] = [
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
        0x21,
        0x22,       // AF_INET6, DGRAM
        0x00, 0x24,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4, // ::ffff:1.2.3.4
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // 2001:db8::2
        0x00, 0x00, // 0
        0x00, 0x01, // 1
    ];

    #[test]
    fn signature_matches_spec() {
        assert_eq!(SIGNATURE, SIG);
    }

    #[test]
    fn encodes_known_vectors() {
        assert_eq!(encode(&tcp4(), ProxyTransport::Stream), TCP4_BYTES);
        let tcp6 = ProxyHeader::new(sa("[2001:db8::1]:443"), sa("[2001:db8::2]:8443"));
        assert_eq!(encode(&tcp6, ProxyTransport::Stream), TCP6_BYTES);
        let udp4 = ProxyHeader::new(sa("10.0.0.1:53"), sa("10.0.0.2:65535"));
        assert_eq!(encode(&udp4, ProxyTransport::Datagram), UDP4_BYTES);
        // Mixed families: the IPv4 side is written IPv4-mapped.
        let mixed = ProxyHeader {
            source: sa("1.2.3.4:0"),
            destination: sa("[2001:db8::2]:1"),
        };
        assert_eq!(encode(&mixed, ProxyTransport::Datagram), UDP6_BYTES);
    }

    #[test]
    fn encode_into_appends() {
        let mut buf = b"xx".to_vec();
        encode_into(&tcp4(), ProxyTransport::Stream, &mut buf);
        buf.extend_from_slice(b"payload");
        assert_eq!(&buf[..2], b"xx");
        assert_eq!(&buf[2..30], &TCP4_BYTES);
        assert_eq!(&buf[30..], b"payload");
    }

    #[test]
    fn from_v1_writes_stream_header() {
        let (h, _) = v1::parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n").unwrap();
        assert_eq!(from_v1(&h), TCP4_BYTES);
    }

    #[test]
    fn parses_known_vectors() {
        let mut input = TCP4_BYTES.to_vec();
        input.extend_from_slice(b"GET /");
        let (h, used) = parse(&input).unwrap();
        assert_eq!(used, 28);
        assert_eq!(
            h,
            V2Header {
                command: V2Command::Proxy,
                transport: Some(ProxyTransport::Stream),
                addresses: Some(tcp4()),
            }
        );

        let (h, used) = parse(&TCP6_BYTES).unwrap();
        assert_eq!(used, 52);
        assert_eq!(
            h.addresses,
            Some(ProxyHeader::new(
                sa("[2001:db8::1]:443"),
                sa("[2001:db8::2]:8443")
            ))
        );

        let (h, _) = parse(&UDP4_BYTES).unwrap();
        assert_eq!(h.transport, Some(ProxyTransport::Datagram));
        assert_eq!(
            h.addresses,
            Some(ProxyHeader::new(sa("10.0.0.1:53"), sa("10.0.0.2:65535")))
        );

        let (h, _) = parse(&UDP6_BYTES).unwrap();
        assert_eq!(h.addresses.unwrap().source, sa("[::ffff:1.2.3.4]:0"));
    }

    #[test]
    fn inet6_with_mapped_addresses_normalises_to_ipv4() {
        let mut block = Vec::new();
        for ip in ["::ffff:1.2.3.4", "::ffff:5.6.7.8"] {
            block.extend_from_slice(&ip.parse::<Ipv6Addr>().unwrap().octets());
        }
        block.extend_from_slice(&[0x04, 0x57, 0x08, 0xAE]);
        let (h, _) = parse(&raw(0x21, 0x21, 36, &block)).unwrap();
        assert_eq!(h.addresses, Some(tcp4()));
    }

    #[test]
    fn skips_tlvs_within_declared_length() {
        // PP2_TYPE_NOOP (0x04) with 3 bytes of padding, then an ALPN (0x01) "h2".
        let tlvs = [0x04, 0x00, 0x03, 0, 0, 0, 0x01, 0x00, 0x02, b'h', b'2'];
        let mut body = TCP4_BYTES[16..].to_vec();
        body.extend_from_slice(&tlvs);
        let mut input = raw(0x21, 0x11, body.len() as u16, &body);
        let header_len = input.len();
        input.extend_from_slice(b"data");
        let (h, used) = parse(&input).unwrap();
        assert_eq!(used, header_len);
        assert_eq!(used, 28 + tlvs.len());
        assert_eq!(h.addresses, Some(tcp4()));
        for end in 0..header_len {
            assert_eq!(
                parse(&input[..end]),
                Err(V2Error::Incomplete),
                "prefix {end}"
            );
        }
    }

    #[test]
    fn local_command() {
        let local = encode_local();
        assert_eq!(local, raw(0x20, 0x00, 0, &[]).as_slice());
        let expected = V2Header {
            command: V2Command::Local,
            transport: None,
            addresses: None,
        };
        assert_eq!(parse(&local), Ok((expected.clone(), 16)));
        // The protocol byte is ignored for LOCAL, even if invalid, and the block skipped.
        let odd = raw(0x20, 0xff, 3, &[1, 2, 3]);
        assert_eq!(parse(&odd), Ok((expected.clone(), 19)));
        // A LOCAL with INET addresses is fine too; they are discarded.
        let mut with_addrs = TCP4_BYTES;
        with_addrs[12] = 0x20;
        assert_eq!(parse(&with_addrs), Ok((expected, 28)));
    }

    #[test]
    fn unspec_and_unix_have_no_addresses() {
        let (h, used) = parse(&raw(0x21, 0x00, 0, &[])).unwrap();
        assert_eq!(used, 16);
        assert_eq!(
            h,
            V2Header {
                command: V2Command::Proxy,
                transport: None,
                addresses: None
            }
        );

        let unix = raw(0x21, 0x31, 216, &[b'/'; 216]);
        let (h, used) = parse(&unix).unwrap();
        assert_eq!(used, 232);
        assert_eq!(h.transport, Some(ProxyTransport::Stream));
        assert_eq!(h.addresses, None);
        let (h, _) = parse(&raw(0x21, 0x32, 216, &[0; 216])).unwrap();
        assert_eq!(h.transport, Some(ProxyTransport::Datagram));
    }

    #[test]
    fn incomplete() {
        assert_eq!(parse(&[]), Err(V2Error::Incomplete));
        assert_eq!(parse(&SIG[..5]), Err(V2Error::Incomplete));
        assert_eq!(parse(&SIG), Err(V2Error::Incomplete));
        assert_eq!(parse(&TCP4_BYTES[..15]), Err(V2Error::Incomplete));
        assert_eq!(parse(&TCP4_BYTES[..27]), Err(V2Error::Incomplete));
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let unix = raw(0x21, 0x31, 216, &[0; 216]);
        let local = encode_local();
        for full in [
            &TCP4_BYTES[..],
            &TCP6_BYTES,
            &UDP4_BYTES,
            &UDP6_BYTES,
            &unix,
            &local,
        ] {
            for end in 0..full.len() {
                assert_eq!(
                    parse(&full[..end]),
                    Err(V2Error::Incomplete),
                    "prefix {end}"
                );
            }
            assert!(parse(full).is_ok());
        }
    }

    #[test]
    fn invalid_signature() {
        assert_eq!(parse(b"PROXY TCP4 "), Err(V2Error::InvalidSignature));
        assert_eq!(parse(b"\r\n\r\n\x01"), Err(V2Error::InvalidSignature));
        assert_eq!(parse(b"G"), Err(V2Error::InvalidSignature));
        let mut bad = TCP4_BYTES;
        bad[11] = b'\r';
        assert_eq!(parse(&bad), Err(V2Error::InvalidSignature));
    }

    #[test]
    fn unsupported_version() {
        for (byte, version) in [(0x11, 1), (0x31, 3), (0x01, 0), (0xf1, 15)] {
            assert_eq!(
                parse(&raw(byte, 0x11, 12, &[0; 12])),
                Err(V2Error::UnsupportedVersion { version })
            );
        }
        // Reported as soon as byte 12 is in.
        let mut early = SIG.to_vec();
        early.push(0x10);
        assert_eq!(
            parse(&early),
            Err(V2Error::UnsupportedVersion { version: 1 })
        );
    }

    #[test]
    fn unknown_command() {
        assert_eq!(
            parse(&raw(0x22, 0x11, 12, &[0; 12])),
            Err(V2Error::UnknownCommand { command: 2 })
        );
        assert_eq!(
            parse(&raw(0x2f, 0x11, 12, &[0; 12])),
            Err(V2Error::UnknownCommand { command: 0xf })
        );
    }

    #[test]
    fn unknown_family_and_transport() {
        assert_eq!(
            parse(&raw(0x21, 0x41, 12, &[0; 12])),
            Err(V2Error::UnknownAddressFamily { family: 4 })
        );
        assert_eq!(
            parse(&raw(0x21, 0x13, 12, &[0; 12])),
            Err(V2Error::UnknownTransport { transport: 3 })
        );
        for (byte, family) in [(0x10, 1), (0x20, 2), (0x30, 3)] {
            assert_eq!(
                parse(&raw(0x21, byte, 216, &[0; 216])),
                Err(V2Error::UnspecifiedTransport { family })
            );
        }
        // Reported as soon as byte 13 is in.
        let mut early = SIG.to_vec();
        early.extend_from_slice(&[0x21, 0x51]);
        assert_eq!(
            parse(&early),
            Err(V2Error::UnknownAddressFamily { family: 5 })
        );
    }

    #[test]
    fn too_long_is_refused_without_waiting() {
        let header = raw(0x21, 0x11, (MAX_PAYLOAD_LEN + 1) as u16, &[]);
        assert_eq!(
            parse(&header),
            Err(V2Error::TooLong {
                declared: MAX_PAYLOAD_LEN + 1,
                max: MAX_PAYLOAD_LEN
            })
        );
        assert_eq!(
            parse(&raw(0x20, 0x00, u16::MAX, &[])),
            Err(V2Error::TooLong {
                declared: 65535,
                max: MAX_PAYLOAD_LEN
            })
        );
        // Exactly the cap is accepted.
        let max = raw(0x21, 0x11, MAX_PAYLOAD_LEN as u16, &[0; MAX_PAYLOAD_LEN]);
        assert_eq!(parse(&max).map(|(_, used)| used), Ok(MAX_V2_LEN));
    }

    #[test]
    fn address_block_too_short() {
        for (fam, declared, required) in [
            (0x11, 11, 12),
            (0x12, 0, 12),
            (0x21, 35, 36),
            (0x22, 12, 36),
            (0x31, 215, 216),
        ] {
            let input = raw(0x21, fam, declared as u16, &vec![0; declared]);
            assert_eq!(
                parse(&input),
                Err(V2Error::AddressBlockTooShort { declared, required })
            );
            // Known from the fixed part alone.
            assert_eq!(
                parse(&input[..FIXED_LEN]),
                Err(V2Error::AddressBlockTooShort { declared, required })
            );
        }
    }

    #[test]
    fn decode_addresses_never_panics_on_short_block() {
        assert_eq!(
            decode_addresses(Family::Inet6, &[0; 5]),
            Err(V2Error::AddressBlockTooShort {
                declared: 5,
                required: 36
            })
        );
    }

    #[test]
    fn errors_have_messages() {
        assert_eq!(
            V2Error::TooLong {
                declared: 600,
                max: 512
            }
            .to_string(),
            "PROXY v2 header declares 600 bytes after the fixed part, more than the 512 we accept"
        );
        assert_eq!(
            V2Error::UnknownCommand { command: 2 }.to_string(),
            "unknown PROXY v2 command 0x2 (expected 0 LOCAL or 1 PROXY)"
        );
    }

    fn transport() -> impl Strategy<Value = ProxyTransport> {
        prop_oneof![Just(ProxyTransport::Stream), Just(ProxyTransport::Datagram)]
    }

    proptest! {
        #[test]
        fn round_trip(
            a in socket_addr(),
            b in socket_addr(),
            t in transport(),
            tail in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let expected = ProxyHeader::new(a, b);
            let bytes = encode(&ProxyHeader { source: a, destination: b }, t);
            prop_assert_eq!(bytes.len(), if expected.is_ipv4() { 28 } else { 52 });
            let mut input = bytes.clone();
            input.extend_from_slice(&tail);
            let (h, used) = parse(&input).unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(h, V2Header {
                command: V2Command::Proxy,
                transport: Some(t),
                addresses: Some(expected),
            });
            for end in 0..bytes.len() {
                prop_assert_eq!(parse(&input[..end]), Err(V2Error::Incomplete));
            }
        }

        #[test]
        fn v1_and_v2_agree(a in socket_addr(), b in socket_addr()) {
            let (from_line, _) = v1::parse(v1::encode(&ProxyHeader::new(a, b)).as_bytes()).unwrap();
            let (h, _) = parse(&from_v1(&from_line)).unwrap();
            prop_assert_eq!(h.addresses, Some(ProxyHeader::new(a, b)));
        }

        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok((_, used)) = parse(&input) {
                prop_assert!(used <= input.len());
            }
        }

        #[test]
        fn never_panics_after_signature(
            ver_cmd in prop_oneof![Just(0x20u8), Just(0x21u8), any::<u8>()],
            fam in prop_oneof![Just(0x11u8), Just(0x21u8), Just(0x31u8), Just(0u8), any::<u8>()],
            len in prop_oneof![0u16..=600, any::<u16>()],
            body in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let input = raw(ver_cmd, fam, len, &body);
            match parse(&input) {
                Ok((_, used)) => {
                    prop_assert!(used <= input.len());
                    prop_assert_eq!(used, FIXED_LEN + usize::from(len));
                    prop_assert!(used <= MAX_V2_LEN);
                }
                Err(V2Error::Incomplete) => {
                    prop_assert!(input.len() < FIXED_LEN + usize::from(len));
                }
                Err(_) => {}
            }
        }
    }
}
