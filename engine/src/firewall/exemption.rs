//! What the edge lets through whatever a snapshot says, so that no push can cut the edge off
//! from its hub (docs/decisions.md, "Firewall", Exemptions). Not configurable: a blocklist or
//! a rule that covered the hub would otherwise drop the tunnel, and with it the operator's
//! correction.
//!
//! These rules come first in their chains, before the snapshot's own rules:
//! - `input`: `ct direction reply accept`: every packet answering a flow this host opened
//!   (the tunnel, STUN queries, egress dials, DNS), whoever sent it;
//! - `output`: `ct direction original ct state established,related accept`: a flow this host
//!   opened stays open once established (new outbound flows still meet the output rules);
//! - `input` and `output`: every packet to or from each hub tunnel endpoint (address and port,
//!   TCP or UDP) the edge has resolved or connected to. This also covers a tunnel that
//!   conntrack first saw mid-stream (it was up before the first table loaded conntrack), whose
//!   direction conntrack may have taken the wrong way round, and a hub on the same host.

use std::net::SocketAddr;

use ipnet::IpNet;

use super::ruleset::{Chain, CtDirection, Expr, Family, RuleDef};

/// Most hub endpoints remembered: a hub name may resolve to a few addresses, and a moved hub
/// adds one; older ones are forgotten first.
pub(crate) const MAX_HUBS: usize = 16;
/// Comment of the rule exempting flows this host opened.
pub const OWN_FLOWS_COMMENT: &str = "exempt:own-flows";
/// Comment of the rules exempting the hub's tunnel endpoints.
pub(crate) const HUB_COMMENT: &str = "exempt:hub";

/// The exemption for one edge: its hub's tunnel endpoints (most recent first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exemption {
    hubs: Vec<SocketAddr>,
}

impl Exemption {
    /// The exemption for these hub endpoints (IPv4-mapped IPv6 addresses count as IPv4;
    /// duplicates and endpoints beyond [`MAX_HUBS`] are dropped).
    pub fn new(hubs: impl IntoIterator<Item = SocketAddr>) -> Self {
        let mut exemption = Self::default();
        exemption.remember(hubs);
        exemption
    }

    /// Puts `hubs` first (most recent first), keeping at most [`MAX_HUBS`]. True when the set
    /// of endpoints changed.
    pub fn remember(&mut self, hubs: impl IntoIterator<Item = SocketAddr>) -> bool {
        let before = std::mem::take(&mut self.hubs);
        let recent = hubs
            .into_iter()
            .map(|hub| SocketAddr::new(hub.ip().to_canonical(), hub.port()));
        for hub in recent.chain(before.iter().copied()) {
            if !self.hubs.contains(&hub) {
                self.hubs.push(hub);
            }
        }
        self.hubs.truncate(MAX_HUBS);
        let mut old = before;
        let mut new = self.hubs.clone();
        old.sort_unstable();
        new.sort_unstable();
        old != new
    }

    /// The hub endpoints, most recent first.
    pub fn hubs(&self) -> &[SocketAddr] {
        &self.hubs
    }

    /// Every exemption rule, in the order they go at the head of their chains.
    pub fn rules(&self) -> Vec<RuleDef> {
        let mut rules = own_flow_rules();
        rules.extend(self.hubs.iter().flat_map(|hub| hub_rules(*hub)));
        rules
    }
}

/// The rules for flows this host opened (see the module docs).
pub(crate) fn own_flow_rules() -> Vec<RuleDef> {
    vec![
        RuleDef {
            chain: Chain::Input,
            exprs: vec![
                Expr::CtDirection(CtDirection::Reply),
                Expr::Counter,
                Expr::Accept,
            ],
            comment: Some(OWN_FLOWS_COMMENT.to_owned()),
        },
        RuleDef {
            chain: Chain::Output,
            exprs: vec![
                Expr::CtDirection(CtDirection::Original),
                Expr::CtStateEstablishedRelated,
                Expr::Counter,
                Expr::Accept,
            ],
            comment: Some(OWN_FLOWS_COMMENT.to_owned()),
        },
    ]
}

/// Four rules for one hub endpoint: in `input` and `output`, packets from it and packets to it.
pub(crate) fn hub_rules(hub: SocketAddr) -> Vec<RuleDef> {
    let family = if hub.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    let host = IpNet::from(hub.ip());
    let from_hub = vec![
        Expr::Nfproto(family),
        Expr::Saddr(host),
        Expr::L4protoTcpOrUdp,
        Expr::Sport(hub.port()),
        Expr::Counter,
        Expr::Accept,
    ];
    let to_hub = vec![
        Expr::Nfproto(family),
        Expr::Daddr(host),
        Expr::L4protoTcpOrUdp,
        Expr::Dport(hub.port()),
        Expr::Counter,
        Expr::Accept,
    ];
    [Chain::Input, Chain::Output]
        .into_iter()
        .flat_map(|chain| {
            [from_hub.clone(), to_hub.clone()].map(|exprs| RuleDef {
                chain,
                exprs,
                comment: Some(HUB_COMMENT.to_owned()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_a_hub_only_own_flows_are_exempt() {
        let rules = Exemption::default().rules();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].chain, Chain::Input);
        assert_eq!(
            rules[0].exprs,
            vec![
                Expr::CtDirection(CtDirection::Reply),
                Expr::Counter,
                Expr::Accept
            ]
        );
        assert_eq!(rules[1].chain, Chain::Output);
        assert_eq!(
            rules[1].exprs[..2],
            [
                Expr::CtDirection(CtDirection::Original),
                Expr::CtStateEstablishedRelated
            ]
        );
    }

    #[test]
    fn each_hub_is_exempt_both_ways_in_input_and_output() {
        let rules = Exemption::new([addr("192.0.2.10:8443"), addr("[2001:db8::1]:8443")]).rules();
        assert_eq!(rules.len(), 2 + 2 * 4);
        let hub_v4: Vec<_> = rules[2..6].iter().collect();
        assert_eq!(
            hub_v4.iter().map(|r| r.chain).collect::<Vec<_>>(),
            [Chain::Input, Chain::Input, Chain::Output, Chain::Output]
        );
        assert_eq!(
            hub_v4[0].exprs,
            vec![
                Expr::Nfproto(Family::V4),
                Expr::Saddr("192.0.2.10/32".parse().unwrap()),
                Expr::L4protoTcpOrUdp,
                Expr::Sport(8443),
                Expr::Counter,
                Expr::Accept
            ]
        );
        assert_eq!(
            hub_v4[1].exprs,
            vec![
                Expr::Nfproto(Family::V4),
                Expr::Daddr("192.0.2.10/32".parse().unwrap()),
                Expr::L4protoTcpOrUdp,
                Expr::Dport(8443),
                Expr::Counter,
                Expr::Accept
            ]
        );
        assert_eq!(rules[6].exprs[0], Expr::Nfproto(Family::V6));
        assert_eq!(
            rules[6].exprs[1],
            Expr::Saddr("2001:db8::1/128".parse().unwrap())
        );
        assert!(rules
            .iter()
            .all(|r| r.exprs.last() == Some(&Expr::Accept) && r.comment.is_some()));
    }

    #[test]
    fn remembering_hubs_dedups_maps_and_caps() {
        let mut exemption = Exemption::new([addr("[::ffff:192.0.2.1]:443")]);
        assert_eq!(exemption.hubs(), [addr("192.0.2.1:443")]);
        assert!(!exemption.remember([addr("192.0.2.1:443")]), "same set");
        assert!(exemption.remember([addr("192.0.2.2:443"), addr("192.0.2.2:443")]));
        assert_eq!(
            exemption.hubs(),
            [addr("192.0.2.2:443"), addr("192.0.2.1:443")]
        );
        // Reordering is not a change.
        assert!(!exemption.remember([addr("192.0.2.1:443")]));
        assert_eq!(exemption.hubs()[0], addr("192.0.2.1:443"));
        for port in 1..=40u16 {
            exemption.remember([SocketAddr::new("192.0.2.9".parse().unwrap(), port)]);
        }
        assert_eq!(exemption.hubs().len(), MAX_HUBS);
        assert_eq!(exemption.hubs()[0].port(), 40);
    }
}
