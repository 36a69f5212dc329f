//! Validation of a firewall snapshot ([`FirewallConfig`]) into a [`Snapshot`]: parsed addresses,
//! merged blocklist ranges, parsed rates. The hub runs it before it pushes anything (so an
//! operator gets the JSON path of the bad field) and the edge runs it again on what it receives
//! (the hub is another process, possibly another version).

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use remoteingress_ipc_schema::{
    FirewallAction, FirewallConfig, FirewallDirection, FirewallProtocol,
};

use crate::config::ConfigError;

/// Largest serialised snapshot: it travels inside one CONFIG message (capped at 1 MiB with the
/// rest of the edge's configuration), so a bigger one could never reach the edge.
pub(crate) const MAX_SNAPSHOT_JSON: usize = 900 * 1024;
/// Longest rule or rate-limit id.
pub(crate) const MAX_ID_LEN: usize = 64;
/// Longest comment accepted (the kernel keeps 128 bytes of `rule:<id> <comment>`; longer
/// comments are cut there when applied).
pub(crate) const MAX_COMMENT_LEN: usize = 256;
/// Burst of a rate limit without one (nft's default).
pub(crate) const DEFAULT_BURST: u32 = 5;

/// A validated snapshot, ready for [`super::ruleset::translate`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Blocked IPv4 ranges (inclusive), sorted, neither overlapping nor touching.
    pub blocked_v4: Vec<(u32, u32)>,
    /// Blocked IPv6 ranges (inclusive), sorted, neither overlapping nor touching.
    pub blocked_v6: Vec<(u128, u128)>,
    pub rate_limits: Vec<RateLimit>,
    pub rules: Vec<Rule>,
}

/// A validated rate limit on new connections / new UDP flows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub id: String,
    pub port: u16,
    /// `None` means TCP and UDP (one bucket for both).
    pub protocol: Option<FirewallProtocol>,
    /// Allowed new connections per `unit_secs`.
    pub rate: u64,
    pub unit_secs: u64,
    pub burst: u32,
    pub per_source_ip: bool,
}

/// A validated custom rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub direction: FirewallDirection,
    pub action: FirewallAction,
    pub source: Option<IpNet>,
    pub dest_port: Option<u16>,
    pub protocol: Option<FirewallProtocol>,
    pub comment: Option<String>,
}

/// Validates `config`; `path` is where it sits (e.g. `edges[0].firewallConfig`).
pub fn validate(config: &FirewallConfig, path: &str) -> Result<Snapshot, ConfigError> {
    let size = serde_json::to_vec(config).map_or(usize::MAX, |json| json.len());
    if size > MAX_SNAPSHOT_JSON {
        return Err(ConfigError::new(
            path,
            format!("is {size} bytes as JSON; at most {MAX_SNAPSHOT_JSON} fit in one push"),
        ));
    }
    let (blocked_v4, blocked_v6) = blocklist(
        config.blocked_ips.as_deref().unwrap_or_default(),
        &format!("{path}.blockedIps"),
    )?;
    let mut ids = HashSet::new();
    let rate_limits = config
        .rate_limits
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(index, limit)| {
            let at = format!("{path}.rateLimits[{index}]");
            check_id(&limit.id, &mut ids, &format!("{at}.id"))?;
            if limit.port == 0 {
                return Err(ConfigError::new(format!("{at}.port"), "must be 1..65535"));
            }
            let (rate, unit_secs) =
                parse_rate(&limit.rate).map_err(|e| ConfigError::new(format!("{at}.rate"), e))?;
            let burst = limit.burst.unwrap_or(DEFAULT_BURST);
            if burst == 0 {
                return Err(ConfigError::new(
                    format!("{at}.burst"),
                    "must be at least 1 (omit it for the default of 5)",
                ));
            }
            Ok(RateLimit {
                id: limit.id.clone(),
                port: limit.port,
                protocol: limit.protocol,
                rate,
                unit_secs,
                burst,
                per_source_ip: limit.per_source_ip.unwrap_or(false),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut ids = HashSet::new();
    let rules = config
        .rules
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let at = format!("{path}.rules[{index}]");
            check_id(&rule.id, &mut ids, &format!("{at}.id"))?;
            let source = rule
                .source_ip
                .as_deref()
                .map(|text| {
                    parse_net(text).map_err(|e| ConfigError::new(format!("{at}.sourceIP"), e))
                })
                .transpose()?;
            if rule.dest_port == Some(0) {
                return Err(ConfigError::new(
                    format!("{at}.destPort"),
                    "must be 1..65535",
                ));
            }
            if let Some(comment) = &rule.comment {
                if comment.len() > MAX_COMMENT_LEN || comment.chars().any(char::is_control) {
                    return Err(ConfigError::new(
                        format!("{at}.comment"),
                        format!(
                            "must be at most {MAX_COMMENT_LEN} bytes without control characters"
                        ),
                    ));
                }
            }
            Ok(Rule {
                id: rule.id.clone(),
                direction: rule.direction,
                action: rule.action,
                source,
                dest_port: rule.dest_port,
                protocol: rule.protocol,
                comment: rule.comment.clone(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Snapshot {
        blocked_v4,
        blocked_v6,
        rate_limits,
        rules,
    })
}

/// Ids are unique within their list, non-empty, short, and printable.
fn check_id(id: &str, seen: &mut HashSet<String>, path: &str) -> Result<(), ConfigError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(ConfigError::new(
            path,
            format!("must be 1 to {MAX_ID_LEN} bytes"),
        ));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ConfigError::new(
            path,
            "must not contain whitespace or control characters",
        ));
    }
    if !seen.insert(id.to_owned()) {
        return Err(ConfigError::new(path, format!("duplicate id {id:?}")));
    }
    Ok(())
}

/// Why a `rate` was refused (quoted as given: the operator wrote it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadRate {
    /// Not `N/unit` with a known unit.
    #[error("{0:?} is not a rate like \"100/second\" (units: second, minute, hour, day)")]
    Form(String),
    /// N is 0 or does not fit the kernel's 32 bits.
    #[error("{0:?}: the count must be 1..{max}", max = u32::MAX)]
    Count(String),
}

/// A blocklist or `sourceIP` entry that is neither an address nor a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR")]
struct BadNet(String);

/// `N/second`, `N/minute`, `N/hour` or `N/day` with N >= 1: (N, seconds per unit).
pub(crate) fn parse_rate(text: &str) -> Result<(u64, u64), BadRate> {
    let bad = || BadRate::Form(text.to_owned());
    let (count, unit) = text.split_once('/').ok_or_else(bad)?;
    let count: u64 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 || count > u64::from(u32::MAX) {
        return Err(BadRate::Count(text.to_owned()));
    }
    let unit_secs = match unit.trim() {
        "second" => 1,
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        _ => return Err(bad()),
    };
    Ok((count, unit_secs))
}

/// An address (a /32 or /128) or a CIDR, truncated to its network.
fn parse_net(text: &str) -> Result<IpNet, BadNet> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .map_err(|_| BadNet(text.to_owned()))
}

/// Blocked IPv4 and IPv6 ranges.
type Blocklist = (Vec<(u32, u32)>, Vec<(u128, u128)>);

/// Parses and merges the blocklist: overlapping and touching ranges become one, since the
/// kernel rejects overlapping interval elements.
fn blocklist(entries: &[String], path: &str) -> Result<Blocklist, ConfigError> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (index, text) in entries.iter().enumerate() {
        match parse_net(text).map_err(|e| ConfigError::new(format!("{path}[{index}]"), e))? {
            IpNet::V4(net) => v4.push(net),
            IpNet::V6(net) => v6.push(net),
        }
    }
    let v4 = merge(
        Ipv4Net::aggregate(&v4)
            .iter()
            .map(|n| (u32::from(n.network()), u32::from(n.broadcast()))),
    );
    let v6 = merge(
        Ipv6Net::aggregate(&v6)
            .iter()
            .map(|n| (u128::from(n.network()), u128::from(n.broadcast()))),
    );
    Ok((v4, v6))
}

/// Joins sorted ranges that touch (ipnet's aggregation leaves e.g. 10.0.1.0/24 and
/// 10.0.2.0/24 apart, which as intervals would share a boundary element).
fn merge<T: Copy + Ord + num_like::Successor>(sorted: impl Iterator<Item = (T, T)>) -> Vec<(T, T)> {
    let mut out: Vec<(T, T)> = Vec::new();
    for (start, end) in sorted {
        match out.last_mut() {
            Some(last) if last.1.successor().is_some_and(|next| next >= start) => {
                last.1 = last.1.max(end);
            }
            _ => out.push((start, end)),
        }
    }
    out
}

/// The one numeric operation [`merge`] needs, for u32 and u128.
mod num_like {
    pub(super) trait Successor: Sized {
        fn successor(self) -> Option<Self>;
    }
    impl Successor for u32 {
        fn successor(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
    impl Successor for u128 {
        fn successor(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    /// Readable form of a blocked IPv4 range (for test assertions).
    fn v4_range(range: (u32, u32)) -> (Ipv4Addr, Ipv4Addr) {
        (Ipv4Addr::from(range.0), Ipv4Addr::from(range.1))
    }

    /// Readable form of a blocked IPv6 range (for test assertions).
    fn v6_range(range: (u128, u128)) -> (Ipv6Addr, Ipv6Addr) {
        (Ipv6Addr::from(range.0), Ipv6Addr::from(range.1))
    }

    fn config(json: &str) -> FirewallConfig {
        serde_json::from_str(json).unwrap()
    }

    fn err(json: &str) -> ConfigError {
        validate(&config(json), "fw").unwrap_err()
    }

    #[test]
    fn bad_fields_are_named_by_path() {
        let cases = [
            (
                r#"{"blockedIps":["1.2.3.4","10.0.0.0/8","nope"]}"#,
                "fw.blockedIps[2]",
            ),
            (r#"{"blockedIps":["10.0.0.0/33"]}"#, "fw.blockedIps[0]"),
            (
                r#"{"rateLimits":[{"id":"a","port":80,"rate":"fast"}]}"#,
                "fw.rateLimits[0].rate",
            ),
            (
                r#"{"rateLimits":[{"id":"a","port":80,"rate":"0/second"}]}"#,
                "fw.rateLimits[0].rate",
            ),
            (
                r#"{"rateLimits":[{"id":"a","port":80,"rate":"5/week"}]}"#,
                "fw.rateLimits[0].rate",
            ),
            (
                r#"{"rateLimits":[{"id":"a","port":0,"rate":"5/second"}]}"#,
                "fw.rateLimits[0].port",
            ),
            (
                r#"{"rateLimits":[{"id":"a","port":1,"rate":"5/second","burst":0}]}"#,
                "fw.rateLimits[0].burst",
            ),
            (
                r#"{"rateLimits":[{"id":"a","port":1,"rate":"5/second"},{"id":"a","port":2,"rate":"5/second"}]}"#,
                "fw.rateLimits[1].id",
            ),
            (
                r#"{"rules":[{"id":"r","direction":"input","action":"drop"},{"id":"r","direction":"input","action":"drop"}]}"#,
                "fw.rules[1].id",
            ),
            (
                r#"{"rules":[{"id":"","direction":"input","action":"drop"}]}"#,
                "fw.rules[0].id",
            ),
            (
                r#"{"rules":[{"id":"r","direction":"input","action":"drop","sourceIP":"x"}]}"#,
                "fw.rules[0].sourceIP",
            ),
            (
                r#"{"rules":[{"id":"r","direction":"input","action":"drop","destPort":0}]}"#,
                "fw.rules[0].destPort",
            ),
            (
                r#"{"rules":[{"id":"r","direction":"input","action":"drop","comment":"a\nb"}]}"#,
                "fw.rules[0].comment",
            ),
        ];
        for (json, path) in cases {
            assert_eq!(err(json).path, path, "{json}");
        }
    }

    #[test]
    fn unknown_enums_and_fields_are_refused_by_the_schema() {
        for json in [
            r#"{"rules":[{"id":"r","direction":"sideways","action":"drop"}]}"#,
            r#"{"rules":[{"id":"r","direction":"input","action":"explode"}]}"#,
            r#"{"rules":[{"id":"r","direction":"input","action":"drop","protocol":"icmp"}]}"#,
            r#"{"blockedIp":[]}"#,
        ] {
            assert!(
                serde_json::from_str::<FirewallConfig>(json).is_err(),
                "{json}"
            );
        }
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("100/second"), Ok((100, 1)));
        assert_eq!(parse_rate("1000/minute"), Ok((1000, 60)));
        assert_eq!(parse_rate("7/hour"), Ok((7, 3600)));
        assert_eq!(parse_rate("2/day"), Ok((2, 86_400)));
        for bad in [
            "",
            "100",
            "/second",
            "-1/second",
            "1.5/second",
            "99999999999/second",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn blocklist_is_truncated_merged_and_split_by_family() {
        let snapshot = validate(
            &config(
                r#"{"blockedIps":["10.0.1.7/24","10.0.2.0/24","10.0.0.0/24","192.0.2.1",
                   "192.0.2.1","2001:db8::/32","2001:db8:1::1","::ffff:0:0/96"]}"#,
            ),
            "fw",
        )
        .unwrap();
        let v4: Vec<_> = snapshot.blocked_v4.iter().map(|r| v4_range(*r)).collect();
        assert_eq!(
            v4,
            vec![
                ("10.0.0.0".parse().unwrap(), "10.0.2.255".parse().unwrap()),
                ("192.0.2.1".parse().unwrap(), "192.0.2.1".parse().unwrap()),
            ]
        );
        assert_eq!(snapshot.blocked_v6.len(), 2);
        assert_eq!(
            v6_range(snapshot.blocked_v6[1]).0,
            "2001:db8::".parse::<Ipv6Addr>().unwrap()
        );
        let all = validate(&config(r#"{"blockedIps":["0.0.0.0/0","1.2.3.4"]}"#), "fw").unwrap();
        assert_eq!(all.blocked_v4, vec![(0, u32::MAX)]);
    }

    #[test]
    fn defaults_and_too_large_snapshots() {
        let snapshot = validate(
            &config(r#"{"rateLimits":[{"id":"a","port":80,"rate":"10/second"}]}"#),
            "fw",
        )
        .unwrap();
        assert_eq!(snapshot.rate_limits[0].burst, DEFAULT_BURST);
        assert!(!snapshot.rate_limits[0].per_source_ip);
        assert_eq!(snapshot.rate_limits[0].protocol, None);

        let huge = FirewallConfig {
            blocked_ips: Some(vec!["203.0.113.200".to_owned(); 70_000]),
            ..Default::default()
        };
        let error = validate(&huge, "fw").unwrap_err();
        assert_eq!(error.path, "fw");
        assert!(error.message.contains("fit in one push"), "{error}");
    }
}
