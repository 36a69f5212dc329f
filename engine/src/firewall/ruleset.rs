//! Pure translation of a validated [`Snapshot`] into the nftables objects of our table: which
//! sets exist, which elements they hold, and which rules (as expression lists) go into which
//! chain, in order. No I/O: [`super::netlink`] turns this into messages.
//!
//! Order inside `input` (docs/decisions.md, "Firewall"): the edge's own exemption first
//! ([`super::exemption`]: no snapshot can cut the edge off from its hub), then custom rules in
//! snapshot order (so an `accept` exempts a source from everything after it), then the
//! blocklist, then the rate limits. `forward` gets its custom rules and the blocklist; `output`
//! the exemption and its custom rules.

use ipnet::IpNet;
use remoteingress_ipc_schema::{FirewallAction, FirewallDirection, FirewallProtocol};

use super::exemption::Exemption;
use super::snapshot::{RateLimit, Rule, Snapshot};

/// Name of our table (family `inet`).
pub(crate) const TABLE: &str = "remoteingress";
/// Blocklist sets: kept across updates (re-creating a set that live rules use leaks packets).
pub(crate) const BLOCKED_V4: &str = "blocked_v4";
pub(crate) const BLOCKED_V6: &str = "blocked_v6";
/// A constant set `{ tcp, udp }`, so that "both protocols" is one rule (one rate bucket).
pub(crate) const TCP_UDP: &str = "tcp_udp";
/// Idle time after which a per-source rate-limit entry is forgotten.
pub(crate) const METER_TIMEOUT_MS: u64 = 60_000;
/// Most sources one per-source limit tracks; beyond it new sources are not limited (the
/// kernel cannot add them), which is why it is large.
pub(crate) const METER_SIZE: u32 = 65_535;
/// Longest rule comment the kernel stores.
pub(crate) const MAX_COMMENT: usize = 127;

/// The base chains, hooked at input, forward and output, priority 0, policy accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chain {
    Input,
    Forward,
    Output,
}

impl Chain {
    pub const ALL: [Self; 3] = [Self::Input, Self::Forward, Self::Output];

    pub fn name(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Forward => "forward",
            Self::Output => "output",
        }
    }
}

/// Address family of an address match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// A packet's direction relative to its conntrack entry: `Original` is the way the flow's first
/// packet went, `Reply` the answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtDirection {
    Original,
    Reply,
}

/// One expression of a rule, at the level nft prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta nfproto ipv4|ipv6` (needed before an address load in an `inet` table).
    Nfproto(Family),
    /// `meta l4proto tcp|udp`.
    L4proto(FirewallProtocol),
    /// `meta l4proto @tcp_udp`.
    L4protoTcpOrUdp,
    /// `th dport == port`.
    Dport(u16),
    /// `th sport == port`.
    Sport(u16),
    /// `ip saddr` / `ip6 saddr` equal to (or, with a prefix, within) the network.
    Saddr(IpNet),
    /// `ip daddr` / `ip6 daddr`, likewise.
    Daddr(IpNet),
    /// `ip saddr @set` / `ip6 saddr @set`.
    SaddrIn(Family, &'static str),
    /// `ct state new`.
    CtStateNew,
    /// `ct state established,related`.
    CtStateEstablishedRelated,
    /// `ct direction original|reply`.
    CtDirection(CtDirection),
    /// `limit rate over rate/unit burst b packets`.
    LimitOver(Limit),
    /// `update @set { ip(6) saddr limit rate over ... }`: a limit per source address.
    MeterOver(Family, String, Limit),
    Counter,
    Accept,
    Drop,
    /// `reject with tcp reset`.
    RejectTcpReset,
    /// `reject with icmpx port-unreachable`.
    RejectIcmpxPortUnreachable,
}

/// Parameters of a `limit` expression (packets; each one a new connection or UDP flow here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub rate: u64,
    pub unit_secs: u64,
    pub burst: u32,
}

/// A rule for one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDef {
    pub chain: Chain,
    pub exprs: Vec<Expr>,
    pub comment: Option<String>,
}

/// A per-source rate-limit set (a "meter"), deleted and re-created with each update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterDef {
    pub name: String,
    pub family: Family,
}

/// Everything our table holds for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    pub blocked_v4: Vec<(u32, u32)>,
    pub blocked_v6: Vec<(u128, u128)>,
    pub meters: Vec<MeterDef>,
    pub rules: Vec<RuleDef>,
}

impl Ruleset {
    /// Rules in all chains.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Named sets in the table: the two blocklists, `tcp_udp`, and the meters.
    pub fn set_count(&self) -> usize {
        3 + self.meters.len()
    }

    /// Blocked ranges after merging (what the interval sets hold).
    pub fn blocked_ranges(&self) -> usize {
        self.blocked_v4.len() + self.blocked_v6.len()
    }
}

/// Translates a validated snapshot, behind the edge's `exemption`.
pub fn translate(snapshot: &Snapshot, exemption: &Exemption) -> Ruleset {
    let mut rules = exemption.rules();
    for chain in Chain::ALL {
        for rule in snapshot.rules.iter().filter(|r| chain_of(r) == chain) {
            rules.push(custom_rule(chain, rule));
        }
        if chain != Chain::Output {
            for (family, set) in [(Family::V4, BLOCKED_V4), (Family::V6, BLOCKED_V6)] {
                rules.push(RuleDef {
                    chain,
                    exprs: vec![Expr::SaddrIn(family, set), Expr::Counter, Expr::Drop],
                    comment: None,
                });
            }
        }
    }
    let mut meters = Vec::new();
    for (index, limit) in snapshot.rate_limits.iter().enumerate() {
        let comment = Some(format!("rateLimit:{}", limit.id));
        let params = Limit {
            rate: limit.rate,
            unit_secs: limit.unit_secs,
            burst: limit.burst,
        };
        if limit.per_source_ip {
            for family in [Family::V4, Family::V6] {
                let name = meter_name(index, family);
                let mut exprs = vec![Expr::Nfproto(family)];
                exprs.extend(port_match(limit));
                exprs.push(Expr::CtStateNew);
                exprs.push(Expr::MeterOver(family, name.clone(), params));
                exprs.extend([Expr::Counter, Expr::Drop]);
                meters.push(MeterDef { name, family });
                rules.push(RuleDef {
                    chain: Chain::Input,
                    exprs,
                    comment: comment.clone(),
                });
            }
        } else {
            let mut exprs = port_match(limit);
            exprs.extend([
                Expr::CtStateNew,
                Expr::LimitOver(params),
                Expr::Counter,
                Expr::Drop,
            ]);
            rules.push(RuleDef {
                chain: Chain::Input,
                exprs,
                comment,
            });
        }
    }
    Ruleset {
        blocked_v4: snapshot.blocked_v4.clone(),
        blocked_v6: snapshot.blocked_v6.clone(),
        meters,
        rules,
    }
}

/// The meter of the `index`-th rate limit. Indexes, not ids, keep names short and valid
/// whatever characters an id has.
fn meter_name(index: usize, family: Family) -> String {
    match family {
        Family::V4 => format!("rl{index}_v4"),
        Family::V6 => format!("rl{index}_v6"),
    }
}

fn chain_of(rule: &Rule) -> Chain {
    match rule.direction {
        FirewallDirection::Input => Chain::Input,
        FirewallDirection::Forward => Chain::Forward,
        FirewallDirection::Output => Chain::Output,
    }
}

/// `l4proto` and `th dport` for a rate limit (always has a port).
fn port_match(limit: &RateLimit) -> Vec<Expr> {
    vec![protocol_match(limit.protocol), Expr::Dport(limit.port)]
}

fn protocol_match(protocol: Option<FirewallProtocol>) -> Expr {
    protocol.map_or(Expr::L4protoTcpOrUdp, Expr::L4proto)
}

fn custom_rule(chain: Chain, rule: &Rule) -> RuleDef {
    let mut exprs = Vec::new();
    if let Some(net) = rule.source {
        exprs.push(Expr::Nfproto(match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }));
        exprs.push(Expr::Saddr(net));
    }
    // A port needs a transport protocol to mean anything; "either" is TCP or UDP.
    if rule.protocol.is_some() || rule.dest_port.is_some() {
        exprs.push(protocol_match(rule.protocol));
    }
    if let Some(port) = rule.dest_port {
        exprs.push(Expr::Dport(port));
    }
    exprs.push(Expr::Counter);
    exprs.push(match rule.action {
        FirewallAction::Accept => Expr::Accept,
        FirewallAction::Drop => Expr::Drop,
        FirewallAction::Reject if rule.protocol == Some(FirewallProtocol::Tcp) => {
            Expr::RejectTcpReset
        }
        FirewallAction::Reject => Expr::RejectIcmpxPortUnreachable,
    });
    let mut comment = match &rule.comment {
        Some(text) => format!("rule:{} {text}", rule.id),
        None => format!("rule:{}", rule.id),
    };
    truncate(&mut comment, MAX_COMMENT);
    RuleDef {
        chain,
        exprs,
        comment: Some(comment),
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::super::snapshot::validate;
    use super::*;

    fn ruleset(json: &str) -> Ruleset {
        translate(
            &validate(&serde_json::from_str(json).unwrap(), "fw").unwrap(),
            &Exemption::default(),
        )
    }

    /// The snapshot's own rules in `chain`, after the exemption.
    fn snapshot_rules(set: &Ruleset, chain: Chain) -> Vec<&RuleDef> {
        set.rules
            .iter()
            .filter(|r| r.chain == chain)
            .filter(|r| !r.comment.as_deref().unwrap_or("").starts_with("exempt:"))
            .collect()
    }

    #[test]
    fn empty_snapshot_still_has_the_blocklist_rules() {
        let set = ruleset("{}");
        // Two blocklist rules each in input and forward, and the exemption's two.
        assert_eq!(set.rule_count(), 6);
        assert_eq!(set.set_count(), 3);
        assert!(snapshot_rules(&set, Chain::Output).is_empty());
    }

    #[test]
    fn the_exemption_comes_first_in_input_and_output() {
        let hub: std::net::SocketAddr = "192.0.2.10:8443".parse().unwrap();
        let exemption = Exemption::new([hub]);
        // A snapshot that would drop everything, both ways: the blocklist covers every
        // address, and custom rules drop all input and output.
        let snapshot = validate(
            &serde_json::from_str(
                r#"{"blockedIps":["0.0.0.0/0","::/0"],
                    "rules":[{"id":"in","direction":"input","action":"drop"},
                             {"id":"out","direction":"output","action":"drop"}]}"#,
            )
            .unwrap(),
            "fw",
        )
        .unwrap();
        let set = translate(&snapshot, &exemption);
        assert_eq!(set.blocked_v4, vec![(0, u32::MAX)]);
        for chain in [Chain::Input, Chain::Output] {
            let in_chain: Vec<_> = set.rules.iter().filter(|r| r.chain == chain).collect();
            let exempt = exemption.rules();
            let expected: Vec<_> = exempt.iter().filter(|r| r.chain == chain).collect();
            assert_eq!(expected.len(), 3, "own flows and the hub both ways");
            assert_eq!(&in_chain[..expected.len()], &expected[..], "{chain:?}");
            assert_eq!(
                in_chain[expected.len()].comment.as_deref(),
                Some(if chain == Chain::Input {
                    "rule:in"
                } else {
                    "rule:out"
                })
            );
        }
        // Forward carries no exemption: nothing of the edge's own passes there.
        assert!(set
            .rules
            .iter()
            .filter(|r| r.chain == Chain::Forward)
            .all(|r| r.comment.is_none()));
    }

    #[test]
    fn custom_rules_come_first_then_blocklist_then_rate_limits() {
        let set = ruleset(
            r#"{"blockedIps":["198.51.100.0/24"],
                "rateLimits":[{"id":"http","port":80,"protocol":"tcp","rate":"100/second","burst":50,"perSourceIP":true},
                              {"id":"dns","port":53,"rate":"10/minute"}],
                "rules":[{"id":"mon","direction":"input","action":"accept","sourceIP":"10.0.0.0/24","destPort":9090,"protocol":"tcp","comment":"Prometheus"},
                         {"id":"out","direction":"output","action":"reject","destPort":25}]}"#,
        );
        let input = snapshot_rules(&set, Chain::Input);
        assert_eq!(input[0].comment.as_deref(), Some("rule:mon Prometheus"));
        assert_eq!(
            input[0].exprs,
            vec![
                Expr::Nfproto(Family::V4),
                Expr::Saddr("10.0.0.0/24".parse().unwrap()),
                Expr::L4proto(FirewallProtocol::Tcp),
                Expr::Dport(9090),
                Expr::Counter,
                Expr::Accept
            ]
        );
        assert_eq!(input[1].exprs[0], Expr::SaddrIn(Family::V4, BLOCKED_V4));
        assert_eq!(input[2].exprs[0], Expr::SaddrIn(Family::V6, BLOCKED_V6));
        let limit = Limit {
            rate: 100,
            unit_secs: 1,
            burst: 50,
        };
        assert_eq!(
            input[3].exprs,
            vec![
                Expr::Nfproto(Family::V4),
                Expr::L4proto(FirewallProtocol::Tcp),
                Expr::Dport(80),
                Expr::CtStateNew,
                Expr::MeterOver(Family::V4, "rl0_v4".into(), limit),
                Expr::Counter,
                Expr::Drop
            ]
        );
        assert_eq!(
            input[4].exprs[4],
            Expr::MeterOver(Family::V6, "rl0_v6".into(), limit)
        );
        // A global limit for both protocols is one rule: one bucket.
        assert_eq!(
            input[5].exprs,
            vec![
                Expr::L4protoTcpOrUdp,
                Expr::Dport(53),
                Expr::CtStateNew,
                Expr::LimitOver(Limit {
                    rate: 10,
                    unit_secs: 60,
                    burst: 5
                }),
                Expr::Counter,
                Expr::Drop
            ]
        );
        assert_eq!(input.len(), 6);
        assert_eq!(set.meters.len(), 2);
        let output = snapshot_rules(&set, Chain::Output);
        assert_eq!(
            output[0].exprs,
            vec![
                Expr::L4protoTcpOrUdp,
                Expr::Dport(25),
                Expr::Counter,
                Expr::RejectIcmpxPortUnreachable
            ]
        );
        assert_eq!(snapshot_rules(&set, Chain::Forward).len(), 2);
    }

    #[test]
    fn reject_is_a_reset_for_tcp_and_comments_are_cut() {
        let long = "é".repeat(120);
        let set = ruleset(&format!(
            r#"{{"rules":[{{"id":"r","direction":"input","action":"reject","protocol":"tcp","comment":"{long}"}}]}}"#
        ));
        let rule = snapshot_rules(&set, Chain::Input)[0];
        assert_eq!(rule.exprs.last(), Some(&Expr::RejectTcpReset));
        let comment = rule.comment.as_ref().unwrap();
        assert!(comment.len() <= MAX_COMMENT && comment.starts_with("rule:r é"));
    }
}
