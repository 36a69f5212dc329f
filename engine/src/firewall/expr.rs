//! Encodes [`Expr`]s as netlink expression attributes.
//!
//! `netlink-packet-netfilter` types meta, payload, cmp, bitwise, lookup and immediate; we use
//! them. It has no types for `ct`, `limit`, `dynset`, `counter` and `reject`, nor for the rule
//! comment (nft's "udata" TLV), so those few attributes are built here by hand from the
//! kernel's `include/uapi/linux/netfilter/nf_tables.h`, each with a unit test of its bytes.

use netlink_packet_core::{DefaultNla, Emitable, NLA_F_NESTED};
use netlink_packet_netfilter::nftables::{
    Bitwise, Cmp, DataAttribute, ExpressionAttribute, Expressions, Immediate, ListAttribute,
    Lookup, Meta, MetaKey, Operator, Payload, Register, Verdict, VerdictAttribute,
};
use remoteingress_ipc_schema::FirewallProtocol;

use super::ruleset::{CtDirection, Expr, Family, Limit, TCP_UDP};
use ipnet::IpNet;

// Payload bases.
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
// `meta nfproto` values.
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
// IP protocol numbers.
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
// Verdicts.
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;

// ct expression (nft_ct.c).
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_DIRECTION: u32 = 1;
/// `ct state new`: bit `NF_CT_STATE_BIT(IP_CT_NEW)`, compared in host byte order.
const CT_STATE_NEW_BIT: u32 = 1 << 3;
/// `ct state established,related`: `NF_CT_STATE_BIT(IP_CT_ESTABLISHED)` and `(IP_CT_RELATED)`.
const CT_STATE_ESTABLISHED_RELATED_BITS: u32 = (1 << 1) | (1 << 2);
/// `ct direction` values (`IP_CT_DIR_ORIGINAL`, `IP_CT_DIR_REPLY`), one byte.
const IP_CT_DIR_ORIGINAL: u8 = 0;
const IP_CT_DIR_REPLY: u8 = 1;
// limit expression (nft_limit.c).
const NFTA_LIMIT_RATE: u16 = 1;
const NFTA_LIMIT_UNIT: u16 = 2;
const NFTA_LIMIT_BURST: u16 = 3;
const NFTA_LIMIT_TYPE: u16 = 4;
const NFTA_LIMIT_FLAGS: u16 = 5;
const NFT_LIMIT_PKTS: u32 = 0;
const NFT_LIMIT_F_INV: u32 = 1;
// dynset expression (nft_dynset.c). EXPR is 7; 8 would be the EXPRESSIONS list.
const NFTA_DYNSET_SET_NAME: u16 = 1;
const NFTA_DYNSET_OP: u16 = 3;
const NFTA_DYNSET_SREG_KEY: u16 = 4;
const NFTA_DYNSET_EXPR: u16 = 7;
const NFT_DYNSET_OP_UPDATE: u32 = 1;
// reject expression (nft_reject.c).
const NFTA_REJECT_TYPE: u16 = 1;
const NFTA_REJECT_ICMP_CODE: u16 = 2;
const NFT_REJECT_TCP_RST: u32 = 1;
const NFT_REJECT_ICMPX_UNREACH: u32 = 2;
const NFT_REJECT_ICMPX_PORT_UNREACH: u8 = 1;
/// nft's rule user data: a TLV list where type 0 is the comment (libnftnl's
/// `NFTNL_UDATA_RULE_COMMENT`), NUL-terminated.
const UDATA_RULE_COMMENT: u8 = 0;

/// One expression as an element of a rule's expression list.
type Element = ListAttribute<ExpressionAttribute>;

/// The expression list of a rule.
pub(crate) fn encode(exprs: &[Expr]) -> Vec<Element> {
    exprs.iter().flat_map(encode_one).collect()
}

fn encode_one(expr: &Expr) -> Vec<Element> {
    match expr {
        Expr::Nfproto(family) => vec![
            meta(MetaKey::Nfproto),
            cmp_eq(vec![match family {
                Family::V4 => NFPROTO_IPV4,
                Family::V6 => NFPROTO_IPV6,
            }]),
        ],
        Expr::L4proto(protocol) => vec![meta(MetaKey::L4Proto), cmp_eq(vec![ip_proto(*protocol)])],
        Expr::L4protoTcpOrUdp => vec![meta(MetaKey::L4Proto), lookup(TCP_UDP)],
        Expr::Dport(port) => vec![
            payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2),
            cmp_eq(port.to_be_bytes().to_vec()),
        ],
        Expr::Sport(port) => vec![
            payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2),
            cmp_eq(port.to_be_bytes().to_vec()),
        ],
        Expr::Saddr(net) => address_match(net, Address::Source),
        Expr::Daddr(net) => address_match(net, Address::Destination),
        Expr::SaddrIn(family, set) => {
            let mut out = encode_one(&Expr::Nfproto(*family));
            out.push(match family {
                Family::V4 => payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4),
                Family::V6 => payload(NFT_PAYLOAD_NETWORK_HEADER, 8, 16),
            });
            out.push(lookup(set));
            out
        }
        Expr::CtStateNew => ct_state_any_of(CT_STATE_NEW_BIT),
        Expr::CtStateEstablishedRelated => ct_state_any_of(CT_STATE_ESTABLISHED_RELATED_BITS),
        Expr::CtDirection(direction) => vec![
            ct_load(NFT_CT_DIRECTION),
            cmp_eq(vec![match direction {
                CtDirection::Original => IP_CT_DIR_ORIGINAL,
                CtDirection::Reply => IP_CT_DIR_REPLY,
            }]),
        ],
        Expr::LimitOver(limit) => vec![other("limit", limit_attributes(limit))],
        Expr::MeterOver(family, set, limit) => {
            let mut out = vec![match family {
                Family::V4 => payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4),
                Family::V6 => payload(NFT_PAYLOAD_NETWORK_HEADER, 8, 16),
            }];
            out.push(other("dynset", dynset_attributes(set, limit)));
            out
        }
        Expr::Counter => vec![other("counter", Vec::new())],
        Expr::Accept => vec![verdict(NF_ACCEPT)],
        Expr::Drop => vec![verdict(NF_DROP)],
        Expr::RejectTcpReset => vec![other(
            "reject",
            vec![u32_nla(NFTA_REJECT_TYPE, NFT_REJECT_TCP_RST)],
        )],
        Expr::RejectIcmpxPortUnreachable => vec![other(
            "reject",
            vec![
                u32_nla(NFTA_REJECT_TYPE, NFT_REJECT_ICMPX_UNREACH),
                DefaultNla::new(NFTA_REJECT_ICMP_CODE, vec![NFT_REJECT_ICMPX_PORT_UNREACH]),
            ],
        )],
    }
}

/// Which address of the network header a match reads.
#[derive(Clone, Copy)]
enum Address {
    Source,
    Destination,
}

/// `ip saddr|daddr` / `ip6 saddr|daddr` equal to (or, with a prefix, within) `net`.
fn address_match(net: &IpNet, which: Address) -> Vec<Element> {
    let (offset, len, network, mask) = match net {
        IpNet::V4(n) => (
            12,
            4,
            n.network().octets().to_vec(),
            n.netmask().octets().to_vec(),
        ),
        IpNet::V6(n) => (
            8,
            16,
            n.network().octets().to_vec(),
            n.netmask().octets().to_vec(),
        ),
    };
    // The destination follows the source in both headers.
    let offset = match which {
        Address::Source => offset,
        Address::Destination => offset + len,
    };
    let mut out = vec![payload(NFT_PAYLOAD_NETWORK_HEADER, offset, len)];
    if net.prefix_len() < net.max_prefix_len() {
        out.push(bitwise(mask, vec![0; network.len()]));
    }
    out.push(cmp_eq(network));
    out
}

/// `ct <key>` into register 1.
fn ct_load(key: u32) -> Element {
    other(
        "ct",
        vec![u32_nla(NFTA_CT_DREG, 1), u32_nla(NFTA_CT_KEY, key)],
    )
}

/// `ct state` with any of `bits` (host byte order, as the kernel stores the state).
fn ct_state_any_of(bits: u32) -> Vec<Element> {
    vec![
        ct_load(NFT_CT_STATE),
        bitwise(bits.to_ne_bytes().to_vec(), vec![0; 4]),
        element(Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::NotEqual),
            Cmp::Data(DataAttribute::Value(vec![0; 4])),
        ])),
    ]
}

fn ip_proto(protocol: FirewallProtocol) -> u8 {
    match protocol {
        FirewallProtocol::Tcp => IPPROTO_TCP,
        FirewallProtocol::Udp => IPPROTO_UDP,
    }
}

/// The `inet_proto` keys of the `tcp_udp` set.
pub(crate) fn tcp_udp_keys() -> [Vec<u8>; 2] {
    [vec![IPPROTO_TCP], vec![IPPROTO_UDP]]
}

fn element(expressions: Expressions) -> Element {
    ListAttribute::from(expressions)
}

fn other(name: &str, attributes: Vec<DefaultNla>) -> Element {
    element(Expressions::Other {
        expression_type: name.to_owned(),
        attributes,
    })
}

fn meta(key: MetaKey) -> Element {
    element(Expressions::Meta(vec![
        Meta::DestinationRegister(Register::Reg1),
        Meta::Key(key),
    ]))
}

fn cmp_eq(value: Vec<u8>) -> Element {
    element(Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(Operator::Equal),
        Cmp::Data(DataAttribute::Value(value)),
    ]))
}

fn payload(base: u32, offset: u32, len: u32) -> Element {
    element(Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ]))
}

fn bitwise(mask: Vec<u8>, xor: Vec<u8>) -> Element {
    let len = u32::try_from(mask.len()).unwrap_or(u32::MAX);
    element(Expressions::Bitwise(vec![
        Bitwise::SourceRegister(Register::Reg1),
        Bitwise::DestinationRegister(Register::Reg1),
        Bitwise::Length(len),
        Bitwise::Mask(DataAttribute::Value(mask)),
        Bitwise::Xor(DataAttribute::Value(xor)),
    ]))
}

fn lookup(set: &str) -> Element {
    element(Expressions::Lookup(vec![
        Lookup::Set(set.to_owned()),
        Lookup::SourceRegister(Register::Reg1),
    ]))
}

fn verdict(code: u32) -> Element {
    element(Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
            Verdict::Other(code),
        )])),
    ]))
}

/// A big-endian u32 attribute, as nf_tables expects numbers.
fn u32_nla(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

fn u64_nla(kind: u16, value: u64) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

/// `limit rate over R/unit burst B packets`.
fn limit_attributes(limit: &Limit) -> Vec<DefaultNla> {
    vec![
        u64_nla(NFTA_LIMIT_RATE, limit.rate),
        u64_nla(NFTA_LIMIT_UNIT, limit.unit_secs),
        u32_nla(NFTA_LIMIT_BURST, limit.burst),
        u32_nla(NFTA_LIMIT_TYPE, NFT_LIMIT_PKTS),
        u32_nla(NFTA_LIMIT_FLAGS, NFT_LIMIT_F_INV),
    ]
}

/// `update @set { <key in reg 1> limit ... }`: the element's own limit counts per key.
fn dynset_attributes(set: &str, limit: &Limit) -> Vec<DefaultNla> {
    let mut name = set.as_bytes().to_vec();
    name.push(0);
    // The nested expression is one NFTA_EXPR_NAME + NFTA_EXPR_DATA pair, emitted by the crate.
    let inner = [
        ExpressionAttribute::Name("limit".to_owned()),
        ExpressionAttribute::Data(Expressions::Other {
            expression_type: "limit".to_owned(),
            attributes: limit_attributes(limit),
        }),
    ];
    let mut nested = vec![0; inner.as_slice().buffer_len()];
    inner.as_slice().emit(&mut nested);
    vec![
        DefaultNla::new(NFTA_DYNSET_SET_NAME, name),
        u32_nla(NFTA_DYNSET_OP, NFT_DYNSET_OP_UPDATE),
        u32_nla(NFTA_DYNSET_SREG_KEY, 1),
        DefaultNla::new(NFTA_DYNSET_EXPR | NLA_F_NESTED, nested),
    ]
}

/// A rule's user data carrying its comment, as nft stores it (so `nft list` prints it).
pub(crate) fn comment_udata(comment: &str) -> Vec<u8> {
    let mut value = comment.as_bytes().to_vec();
    value.push(0);
    let len = u8::try_from(value.len()).unwrap_or(u8::MAX);
    value.truncate(usize::from(len));
    let mut out = vec![UDATA_RULE_COMMENT, len];
    out.extend(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(elements: &[Element]) -> Vec<u8> {
        let mut out = vec![0; elements.buffer_len()];
        elements.emit(&mut out);
        out
    }

    fn nla_bytes(nla: &DefaultNla) -> Vec<u8> {
        let mut out = vec![0; nla.buffer_len()];
        nla.emit(&mut out);
        out
    }

    /// `[len u16][type u16][value]` padded to 4 bytes, little-endian header as netlink has it.
    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = 4 + value.len();
        let mut out = (len as u16).to_le_bytes().to_vec();
        out.extend(kind.to_le_bytes());
        out.extend(value);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out
    }

    /// One list element `{ NFTA_EXPR_NAME name, NFTA_EXPR_DATA { data } }`.
    fn expression(name: &str, data: &[u8]) -> Vec<u8> {
        let mut name_z = name.as_bytes().to_vec();
        name_z.push(0);
        let mut inner = tlv(1, &name_z);
        inner.extend(tlv(2 | NLA_F_NESTED, data));
        tlv(1 | NLA_F_NESTED, &inner)
    }

    #[test]
    fn ct_state_new_bytes() {
        let encoded = bytes(&encode(&[Expr::CtStateNew]));
        let mut ct = tlv(NFTA_CT_DREG, &1u32.to_be_bytes());
        ct.extend(tlv(NFTA_CT_KEY, &0u32.to_be_bytes()));
        let expected_ct = expression("ct", &ct);
        assert_eq!(&encoded[..expected_ct.len()], &expected_ct[..]);
        // The bitwise mask is the host-order state bit 0x08.
        assert!(encoded
            .windows(8)
            .any(|w| w == tlv(1, &CT_STATE_NEW_BIT.to_ne_bytes()).as_slice()));
    }

    #[test]
    fn ct_direction_and_established_bytes() {
        let mut ct = tlv(NFTA_CT_DREG, &1u32.to_be_bytes());
        ct.extend(tlv(NFTA_CT_KEY, &1u32.to_be_bytes()));
        let reply = bytes(&encode(&[Expr::CtDirection(CtDirection::Reply)]));
        let expected_ct = expression("ct", &ct);
        assert_eq!(&reply[..expected_ct.len()], &expected_ct[..]);
        // One byte compared: IP_CT_DIR_REPLY.
        assert!(reply.windows(8).any(|w| w == tlv(1, &[1]).as_slice()));
        let original = bytes(&encode(&[Expr::CtDirection(CtDirection::Original)]));
        assert!(original.windows(8).any(|w| w == tlv(1, &[0]).as_slice()));
        // established (0x02) | related (0x04) in host order.
        let established = bytes(&encode(&[Expr::CtStateEstablishedRelated]));
        assert!(established
            .windows(8)
            .any(|w| w == tlv(1, &6u32.to_ne_bytes()).as_slice()));
    }

    #[test]
    fn limit_bytes() {
        let limit = Limit {
            rate: 100,
            unit_secs: 60,
            burst: 7,
        };
        let mut data = tlv(NFTA_LIMIT_RATE, &100u64.to_be_bytes());
        data.extend(tlv(NFTA_LIMIT_UNIT, &60u64.to_be_bytes()));
        data.extend(tlv(NFTA_LIMIT_BURST, &7u32.to_be_bytes()));
        data.extend(tlv(NFTA_LIMIT_TYPE, &0u32.to_be_bytes()));
        data.extend(tlv(NFTA_LIMIT_FLAGS, &1u32.to_be_bytes()));
        assert_eq!(
            bytes(&encode(&[Expr::LimitOver(limit)])),
            expression("limit", &data)
        );
    }

    #[test]
    fn dynset_bytes() {
        let limit = Limit {
            rate: 5,
            unit_secs: 1,
            burst: 2,
        };
        let attributes = dynset_attributes("rl0_v4", &limit);
        assert_eq!(nla_bytes(&attributes[0]), tlv(1, b"rl0_v4\0"));
        assert_eq!(nla_bytes(&attributes[1]), tlv(3, &1u32.to_be_bytes()));
        assert_eq!(nla_bytes(&attributes[2]), tlv(4, &1u32.to_be_bytes()));
        let mut limit_data = tlv(NFTA_LIMIT_RATE, &5u64.to_be_bytes());
        limit_data.extend(tlv(NFTA_LIMIT_UNIT, &1u64.to_be_bytes()));
        limit_data.extend(tlv(NFTA_LIMIT_BURST, &2u32.to_be_bytes()));
        limit_data.extend(tlv(NFTA_LIMIT_TYPE, &0u32.to_be_bytes()));
        limit_data.extend(tlv(NFTA_LIMIT_FLAGS, &1u32.to_be_bytes()));
        let mut nested = tlv(1, b"limit\0");
        nested.extend(tlv(2 | NLA_F_NESTED, &limit_data));
        // NFTA_DYNSET_EXPR is 7, nested.
        assert_eq!(nla_bytes(&attributes[3]), tlv(7 | NLA_F_NESTED, &nested));
    }

    #[test]
    fn counter_and_reject_bytes() {
        assert_eq!(bytes(&encode(&[Expr::Counter])), expression("counter", &[]));
        assert_eq!(
            bytes(&encode(&[Expr::RejectTcpReset])),
            expression("reject", &tlv(1, &1u32.to_be_bytes()))
        );
        let mut icmpx = tlv(1, &2u32.to_be_bytes());
        icmpx.extend(tlv(2, &[1]));
        assert_eq!(
            bytes(&encode(&[Expr::RejectIcmpxPortUnreachable])),
            expression("reject", &icmpx)
        );
    }

    #[test]
    fn comment_udata_bytes() {
        assert_eq!(comment_udata("rule:a"), b"\x00\x07rule:a\x00".to_vec());
    }

    #[test]
    fn addresses_and_ports_are_network_order() {
        let encoded = bytes(&encode(&[
            Expr::Dport(443),
            Expr::Saddr("10.1.0.0/16".parse().unwrap()),
        ]));
        assert!(encoded
            .windows(8)
            .any(|w| w == tlv(1, &[0x01, 0xbb]).as_slice()));
        assert!(encoded
            .windows(8)
            .any(|w| w == tlv(1, &[255, 255, 0, 0]).as_slice()));
        assert!(encoded
            .windows(8)
            .any(|w| w == tlv(1, &[10, 1, 0, 0]).as_slice()));
    }

    #[test]
    fn source_port_and_destination_address_offsets() {
        let payload_offset = |expr: Expr| {
            let encoded = bytes(&encode(&[expr]));
            // NFTA_PAYLOAD_OFFSET is attribute 3.
            (0..64u32)
                .find(|o| {
                    encoded
                        .windows(8)
                        .any(|w| w == tlv(3, &o.to_be_bytes()).as_slice())
                })
                .unwrap()
        };
        assert_eq!(payload_offset(Expr::Sport(1)), 0);
        assert_eq!(payload_offset(Expr::Dport(1)), 2);
        assert_eq!(
            payload_offset(Expr::Saddr("192.0.2.1/32".parse().unwrap())),
            12
        );
        assert_eq!(
            payload_offset(Expr::Daddr("192.0.2.1/32".parse().unwrap())),
            16
        );
        assert_eq!(
            payload_offset(Expr::Saddr("2001:db8::1/128".parse().unwrap())),
            8
        );
        assert_eq!(
            payload_offset(Expr::Daddr("2001:db8::1/128".parse().unwrap())),
            24
        );
    }
}
