//! PROXY protocol version 1: one human-readable line, spec section 2.1.
//!
//! `PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n`
//!
//! The decoder is strict: exactly one space between fields, CRLF termination, only
//! `TCP4`/`TCP6`, IPv4 octets without leading zeros. A sloppy line is far more likely to
//! mean a misconfigured or hostile peer than a legitimate sender, and a strict parser can
//! never be talked into reading a different client address than the sender meant.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str;

use super::ProxyHeader;

/// Longest v1 line the spec allows, CRLF included (`PROXY UNKNOWN` with two full-length
/// IPv6 addresses and two 5-digit ports). A receiver that has seen this many bytes without
/// a CRLF knows the peer is not speaking v1 and stops waiting.
pub(crate) const MAX_V1_LEN: usize = 107;

/// Every v1 line starts with these bytes; checked first so non-PROXY input fails fast.
const PREFIX: &[u8] = b"PROXY ";

/// Why a buffer does not (yet) hold a valid v1 line.
///
/// Values quoted in the messages come from a line already checked to be printable ASCII of
/// at most [`MAX_V1_LEN`] bytes, so they are short and safe to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum V1Error {
    /// No CRLF yet and fewer than [`MAX_V1_LEN`] bytes seen: read more and parse again.
    #[error("incomplete PROXY v1 header: no CRLF within the bytes received so far")]
    Incomplete,
    /// [`MAX_V1_LEN`] bytes arrived without a CRLF, so this cannot be a v1 line.
    #[error("PROXY v1 header longer than {MAX_V1_LEN} bytes without a CRLF")]
    TooLong,
    /// The input does not start with `"PROXY "`: the peer sent no v1 header.
    #[error("not a PROXY v1 header: input does not start with \"PROXY \"")]
    NotProxy,
    /// A byte before the CRLF is outside printable US-ASCII (0x20..=0x7E), e.g. UTF-8, a NUL
    /// or a tab.
    #[error("PROXY v1 header has byte {byte:#04x} at offset {offset}, not printable US-ASCII")]
    NonAscii {
        /// The offending byte.
        byte: u8,
        /// Its offset from the start of the input.
        offset: usize,
    },
    /// The line ends in a bare LF, or a CR is followed by something other than LF.
    #[error("PROXY v1 header is not terminated by CRLF (bare LF or CR)")]
    MissingCrlf,
    /// Two consecutive spaces, or a space right before the CRLF: fields must be separated by
    /// exactly one space.
    #[error("PROXY v1 header has an empty field (fields must be separated by exactly one space)")]
    EmptyField,
    /// The protocol is neither `TCP4` nor `TCP6`. This includes the spec's `UNKNOWN`, which
    /// we refuse: our edge always knows both addresses, so `UNKNOWN` means a misconfigured
    /// or foreign sender and would silently lose the client IP.
    #[error("unsupported PROXY v1 protocol {protocol:?} (only TCP4 and TCP6 are accepted)")]
    UnsupportedProtocol {
        /// The protocol field as received.
        protocol: String,
    },
    /// `TCP4`/`TCP6` lines need exactly six space-separated fields:
    /// `PROXY proto src dst sport dport`.
    #[error("PROXY v1 header has {found} fields, expected 6")]
    WrongFieldCount {
        /// How many fields the line had.
        found: usize,
    },
    /// An address field is not an IP address (IPv4 in strict dotted-decimal without leading
    /// zeros, or IPv6 text form).
    #[error("invalid address {value:?} in PROXY v1 header")]
    InvalidAddress {
        /// The address field as received.
        value: String,
    },
    /// A valid address of the other family than the protocol field announces (an IPv6
    /// address after `TCP4` or an IPv4 address after `TCP6`).
    #[error("address {value:?} does not match protocol {protocol} in PROXY v1 header")]
    AddressFamilyMismatch {
        /// `"TCP4"` or `"TCP6"`.
        protocol: &'static str,
        /// The address field as received.
        value: String,
    },
    /// A port field is not a decimal number in 0..=65535 made of ASCII digits only (no sign).
    #[error("invalid port {value:?} in PROXY v1 header (expected decimal 0..=65535)")]
    InvalidPort {
        /// The port field as received.
        value: String,
    },
}

/// Formats `header` as a v1 line: `TCP4` when both sides are IPv4, else `TCP6`.
///
/// The header is normalised first (see [`ProxyHeader::new`]), so a mixed pair is written as
/// `TCP6` with the IPv4 side as `::ffff:a.b.c.d`. The result is at most 104 bytes, within
/// `MAX_V1_LEN`.
pub fn encode(header: &ProxyHeader) -> String {
    let header = header.normalized();
    let protocol = if header.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {protocol} {} {} {} {}\r\n",
        header.source.ip(),
        header.destination.ip(),
        header.source.port(),
        header.destination.port(),
    )
}

/// Parses one v1 line at the start of `input`; Ok((header, bytes_consumed)).
///
/// Bytes after the CRLF are not looked at: they belong to the proxied stream, and
/// `bytes_consumed` tells the caller where that starts. The header is normalised with
/// [`ProxyHeader::new`], so `TCP6 ::ffff:1.2.3.4 ::ffff:5.6.7.8` comes back as IPv4.
///
/// Returns [`V1Error::Incomplete`] only while `input` could still become a valid line;
/// anything already wrong (wrong prefix, a bad byte, more than [`MAX_V1_LEN`] bytes without
/// CRLF) is reported at once so the caller can drop the connection without waiting.
pub(crate) fn parse(input: &[u8]) -> Result<(ProxyHeader, usize), V1Error> {
    let seen = input.len().min(PREFIX.len());
    if input.get(..seen) != PREFIX.get(..seen) {
        return Err(V1Error::NotProxy);
    }
    let line_len = find_line_end(input)?;
    let line = input.get(..line_len).ok_or(V1Error::Incomplete)?;
    // `find_line_end` only accepts printable ASCII before the CR, so this cannot fail; the
    // error mapping exists only to avoid an unwrap.
    let line = str::from_utf8(line).map_err(|e| V1Error::NonAscii {
        byte: line.get(e.valid_up_to()).copied().unwrap_or_default(),
        offset: e.valid_up_to(),
    })?;
    let header = parse_fields(line)?;
    Ok((header, line_len + 2))
}

/// Finds the CR of the terminating CRLF within the first [`MAX_V1_LEN`] bytes and returns
/// its offset, i.e. the length of the line without CRLF.
///
/// Scans only up to the first non-printable byte: that byte must be the CR of a CRLF, so
/// anything else is an error that can be reported before the line is complete.
fn find_line_end(input: &[u8]) -> Result<usize, V1Error> {
    let window = input.get(..MAX_V1_LEN).unwrap_or(input);
    let stop = window
        .iter()
        .enumerate()
        .find(|&(_, &b)| !(0x20..=0x7e).contains(&b));
    let too_long_or_incomplete = || {
        if input.len() >= MAX_V1_LEN {
            V1Error::TooLong
        } else {
            V1Error::Incomplete
        }
    };
    match stop {
        None => Err(too_long_or_incomplete()),
        Some((offset, b'\r')) => match window.get(offset + 1) {
            Some(b'\n') => Ok(offset),
            Some(_) => Err(V1Error::MissingCrlf),
            // The CR is the last byte we may look at: either more is coming, or the LF
            // would be byte 108.
            None => Err(too_long_or_incomplete()),
        },
        Some((_, b'\n')) => Err(V1Error::MissingCrlf),
        Some((offset, &byte)) => Err(V1Error::NonAscii { byte, offset }),
    }
}

/// Parses the line without its CRLF; it is known to start with `"PROXY "`.
fn parse_fields(line: &str) -> Result<ProxyHeader, V1Error> {
    // Checked before anything else so that a double space is always reported as such,
    // not as whatever the shifted fields happen to look like.
    if line.split(' ').any(str::is_empty) {
        return Err(V1Error::EmptyField);
    }
    let fields: Vec<&str> = line.split(' ').collect();
    let is_v4 = match fields.get(1).copied() {
        Some("TCP4") => true,
        Some("TCP6") => false,
        Some(other) => {
            return Err(V1Error::UnsupportedProtocol {
                protocol: other.to_owned(),
            })
        }
        None => {
            return Err(V1Error::WrongFieldCount {
                found: fields.len(),
            })
        }
    };
    let [_, _, src_ip, dst_ip, src_port, dst_port] = fields.as_slice() else {
        return Err(V1Error::WrongFieldCount {
            found: fields.len(),
        });
    };
    let source = SocketAddr::new(parse_ip(src_ip, is_v4)?, parse_port(src_port)?);
    let destination = SocketAddr::new(parse_ip(dst_ip, is_v4)?, parse_port(dst_port)?);
    Ok(ProxyHeader::new(source, destination))
}

/// Parses an address of the family the protocol field announced, telling "wrong family"
/// apart from "not an address" so misconfigurations are easy to diagnose.
fn parse_ip(value: &str, is_v4: bool) -> Result<IpAddr, V1Error> {
    // std's IPv4 parser already rejects leading zeros ("01.2.3.4"), as the spec requires.
    let v4 = value.parse::<Ipv4Addr>();
    let v6 = value.parse::<Ipv6Addr>();
    match (is_v4, v4, v6) {
        (true, Ok(ip), _) => Ok(IpAddr::V4(ip)),
        (false, _, Ok(ip)) => Ok(IpAddr::V6(ip)),
        (true, Err(_), Ok(_)) => Err(V1Error::AddressFamilyMismatch {
            protocol: "TCP4",
            value: value.to_owned(),
        }),
        (false, Ok(_), Err(_)) => Err(V1Error::AddressFamilyMismatch {
            protocol: "TCP6",
            value: value.to_owned(),
        }),
        _ => Err(V1Error::InvalidAddress {
            value: value.to_owned(),
        }),
    }
}

/// Parses a port of ASCII digits only.
///
/// `u16::from_str` alone would also take a leading `+`, which the spec's "decimal integer"
/// does not allow. Leading zeros are accepted: the spec forbids them only for IPv4 octets
/// (where they could be read as octal), and a port has no such ambiguity.
fn parse_port(value: &str) -> Result<u16, V1Error> {
    let invalid = || V1Error::InvalidPort {
        value: value.to_owned(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_protocol::test_strategies::socket_addr;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn err(line: &str) -> V1Error {
        parse(line.as_bytes()).unwrap_err()
    }

    #[test]
    fn encodes_tcp4_and_tcp6() {
        let h = ProxyHeader::new(sa("1.2.3.4:1111"), sa("5.6.7.8:2222"));
        assert_eq!(encode(&h), "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n");
        let h = ProxyHeader::new(sa("[2001:db8::1]:443"), sa("[::1]:0"));
        assert_eq!(encode(&h), "PROXY TCP6 2001:db8::1 ::1 443 0\r\n");
    }

    #[test]
    fn encodes_mixed_and_mapped_pairs() {
        let h = ProxyHeader::new(sa("[::ffff:1.2.3.4]:1"), sa("[::ffff:5.6.7.8]:2"));
        assert_eq!(encode(&h), "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
        let mixed = ProxyHeader {
            source: sa("1.2.3.4:1"),
            destination: sa("[2001:db8::1]:2"),
        };
        let line = encode(&mixed);
        assert_eq!(line, "PROXY TCP6 ::ffff:1.2.3.4 2001:db8::1 1 2\r\n");
        assert_eq!(
            parse(line.as_bytes()).unwrap(),
            (
                ProxyHeader::new(mixed.source, mixed.destination),
                line.len()
            )
        );
    }

    #[test]
    fn longest_encoding_fits() {
        let max = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535";
        let line = encode(&ProxyHeader::new(sa(max), sa(max)));
        assert_eq!(line.len(), 104);
        assert!(line.len() <= MAX_V1_LEN);
    }

    #[test]
    fn parses_known_good_lines() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let (h, used) = parse(line).unwrap();
        assert_eq!(
            h,
            ProxyHeader::new(sa("192.0.2.1:56324"), sa("198.51.100.1:443"))
        );
        assert_eq!(used, 45);
        assert_eq!(&line[used..], b"GET / HTTP/1.1\r\n");

        let (h, used) = parse(b"PROXY TCP6 2001:DB8::1 ::1 0 65535\r\n").unwrap();
        assert_eq!(
            h,
            ProxyHeader::new(sa("[2001:db8::1]:0"), sa("[::1]:65535"))
        );
        assert_eq!(used, 36);
    }

    #[test]
    fn tcp6_with_mapped_addresses_normalises_to_ipv4() {
        let (h, _) = parse(b"PROXY TCP6 ::ffff:1.2.3.4 ::ffff:5.6.7.8 1 2\r\n").unwrap();
        assert_eq!(h, ProxyHeader::new(sa("1.2.3.4:1"), sa("5.6.7.8:2")));
        assert!(h.is_ipv4());
    }

    #[test]
    fn accepts_exactly_max_len_and_port_leading_zeros() {
        let g = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY TCP6 {g} {g} 00065535 65535\r\n");
        assert_eq!(line.len(), MAX_V1_LEN);
        let (h, used) = parse(line.as_bytes()).unwrap();
        assert_eq!(used, MAX_V1_LEN);
        assert_eq!(h.source.port(), 65535);

        let longer = format!("PROXY TCP6 {g} {g} 000065535 65535\r\n");
        assert_eq!(parse(longer.as_bytes()), Err(V1Error::TooLong));
    }

    #[test]
    fn incomplete_until_crlf() {
        assert_eq!(parse(b""), Err(V1Error::Incomplete));
        assert_eq!(parse(b"PRO"), Err(V1Error::Incomplete));
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2"),
            Err(V1Error::Incomplete)
        );
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"),
            Err(V1Error::Incomplete)
        );
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 1\r\n";
        for end in 0..line.len() {
            assert_eq!(
                parse(&line[..end]),
                Err(V1Error::Incomplete),
                "prefix {end}"
            );
        }
        assert!(parse(line).is_ok());
    }

    #[test]
    fn too_long() {
        let long = [b"PROXY ".as_slice(), &[b'1'; MAX_V1_LEN]].concat();
        assert_eq!(parse(&long), Err(V1Error::TooLong));
        assert_eq!(parse(&long[..MAX_V1_LEN]), Err(V1Error::TooLong));
        assert_eq!(parse(&long[..MAX_V1_LEN - 1]), Err(V1Error::Incomplete));
        // CR as byte 107: the LF would be byte 108.
        let mut cr_last = long[..MAX_V1_LEN].to_vec();
        cr_last[MAX_V1_LEN - 1] = b'\r';
        cr_last.push(b'\n');
        assert_eq!(parse(&cr_last), Err(V1Error::TooLong));
    }

    #[test]
    fn not_proxy() {
        assert_eq!(err("GET / HTTP/1.1\r\n"), V1Error::NotProxy);
        assert_eq!(err("proxy TCP4"), V1Error::NotProxy);
        assert_eq!(err("PROXYTCP4 "), V1Error::NotProxy);
        assert_eq!(parse(b"X"), Err(V1Error::NotProxy));
        assert_eq!(parse(&v2_signature_start()), Err(V1Error::NotProxy));
    }

    fn v2_signature_start() -> Vec<u8> {
        crate::proxy_protocol::v2::SIGNATURE.to_vec()
    }

    #[test]
    fn non_ascii() {
        assert_eq!(
            err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\u{e9}\r\n"),
            V1Error::NonAscii {
                byte: 0xc3,
                offset: 30
            }
        );
        // Reported before the line is complete.
        assert_eq!(
            parse(b"PROXY TCP4\x00"),
            Err(V1Error::NonAscii {
                byte: 0,
                offset: 10
            })
        );
        assert_eq!(
            err("PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n"),
            V1Error::NonAscii {
                byte: b'\t',
                offset: 10
            }
        );
    }

    #[test]
    fn missing_crlf() {
        assert_eq!(
            err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
            V1Error::MissingCrlf
        );
        assert_eq!(
            err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"),
            V1Error::MissingCrlf
        );
        assert_eq!(
            err("PROXY TCP4 1.2.3.4\r 5.6.7.8 1 2\r\n"),
            V1Error::MissingCrlf
        );
    }

    #[test]
    fn empty_fields() {
        for line in [
            "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            "PROXY \r\n",
        ] {
            assert_eq!(err(line), V1Error::EmptyField, "{line:?}");
        }
    }

    #[test]
    fn unsupported_protocols() {
        for (line, proto) in [
            ("PROXY UNKNOWN\r\n", "UNKNOWN"),
            ("PROXY UNKNOWN ::1 ::1 1 2\r\n", "UNKNOWN"),
            ("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "UDP4"),
            ("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "tcp4"),
        ] {
            assert_eq!(
                err(line),
                V1Error::UnsupportedProtocol {
                    protocol: proto.to_owned()
                }
            );
        }
    }

    #[test]
    fn wrong_field_count() {
        assert_eq!(err("PROXY TCP4\r\n"), V1Error::WrongFieldCount { found: 2 });
        assert_eq!(
            err("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
            V1Error::WrongFieldCount { found: 5 }
        );
        assert_eq!(
            err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"),
            V1Error::WrongFieldCount { found: 7 }
        );
    }

    #[test]
    fn invalid_addresses() {
        for (line, value) in [
            ("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "1.2.3"),
            ("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "01.2.3.4"),
            ("PROXY TCP4 1.2.3.4 256.6.7.8 1 2\r\n", "256.6.7.8"),
            ("PROXY TCP4 localhost 5.6.7.8 1 2\r\n", "localhost"),
            ("PROXY TCP6 ::1%eth0 ::1 1 2\r\n", "::1%eth0"),
            ("PROXY TCP6 [::1] ::1 1 2\r\n", "[::1]"),
            (
                "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n",
                "1:2:3:4:5:6:7:8:9",
            ),
        ] {
            assert_eq!(
                err(line),
                V1Error::InvalidAddress {
                    value: value.to_owned()
                },
                "{line:?}"
            );
        }
    }

    #[test]
    fn family_mismatch() {
        assert_eq!(
            err("PROXY TCP4 ::1 5.6.7.8 1 2\r\n"),
            V1Error::AddressFamilyMismatch {
                protocol: "TCP4",
                value: "::1".to_owned()
            }
        );
        assert_eq!(
            err("PROXY TCP6 ::1 5.6.7.8 1 2\r\n"),
            V1Error::AddressFamilyMismatch {
                protocol: "TCP6",
                value: "5.6.7.8".to_owned()
            }
        );
    }

    #[test]
    fn invalid_ports() {
        for port in ["65536", "+1", "-1", "0x10", "1a", "99999999999999999999"] {
            let line = format!("PROXY TCP4 1.2.3.4 5.6.7.8 {port} 2\r\n");
            assert_eq!(
                err(&line),
                V1Error::InvalidPort {
                    value: port.to_owned()
                },
                "{line:?}"
            );
        }
        assert_eq!(
            err("PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n"),
            V1Error::InvalidPort {
                value: "+2".to_owned()
            }
        );
    }

    #[test]
    fn errors_have_messages() {
        let e = err("PROXY UNKNOWN\r\n");
        assert_eq!(
            e.to_string(),
            "unsupported PROXY v1 protocol \"UNKNOWN\" (only TCP4 and TCP6 are accepted)"
        );
        assert!(V1Error::TooLong.to_string().contains("107"));
    }

    proptest! {
        #[test]
        fn round_trip(a in socket_addr(), b in socket_addr(), tail in proptest::collection::vec(any::<u8>(), 0..16)) {
            let expected = ProxyHeader::new(a, b);
            let line = encode(&ProxyHeader { source: a, destination: b });
            prop_assert!(line.len() <= MAX_V1_LEN);
            let mut input = line.clone().into_bytes();
            input.extend_from_slice(&tail);
            prop_assert_eq!(parse(&input), Ok((expected, line.len())));
            for end in 0..line.len() {
                prop_assert_eq!(parse(&input[..end]), Err(V1Error::Incomplete));
            }
        }

        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok((_, used)) = parse(&input) {
                prop_assert!(used <= input.len());
            }
        }

        #[test]
        fn never_panics_after_prefix(
            body in proptest::collection::vec(
                prop_oneof![Just(b' '), Just(b'\r'), Just(b'\n'), Just(b':'), Just(b'.'), 0x20u8..0x7f, any::<u8>()],
                0..120,
            )
        ) {
            let input = [b"PROXY TCP4 ".as_slice(), &body].concat();
            if let Ok((_, used)) = parse(&input) {
                prop_assert!(used <= input.len());
                prop_assert!(used <= MAX_V1_LEN);
            }
            let input = [b"PROXY TCP6 ".as_slice(), &body].concat();
            if let Ok((_, used)) = parse(&input) {
                prop_assert!(used <= input.len());
            }
        }
    }
}
