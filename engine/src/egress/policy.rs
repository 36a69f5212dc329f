//! The egress policy: may this edge dial `host:port` for the hub, and at which addresses?
//! Pure (no sockets, no clock); the resolver is passed in, so the order of the checks — the part
//! that keeps a compromised hub or a rebinding DNS name from reaching the edge's own network — is
//! tested without the machine's DNS.
//!
//! Order (security critical): port in `allowedPorts` -> host matches `allowedHostPatterns` ->
//! resolve -> drop every address in `deniedCidrs` or in an always-denied range -> private
//! (RFC 1918, ULA) only with `allowPrivateRanges` -> the address family preference orders what
//! is left. A literal IP (in any spelling `inet_aton` accepts: `127.1`, `0x7f.1`, `2130706433`)
//! takes the same address checks. IPv6 addresses that carry an IPv4 address (IPv4-mapped and
//! -compatible, SIIT `::ffff:0:0/96`, NAT64 `64:ff9b::/96` and local-use `64:ff9b:1::/48`, 6to4
//! `2002::/16`, Teredo `2001::/32`, ISATAP interface ids) are judged by it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use remoteingress_ipc_schema::{AddressFamily, EgressPolicy as IpcPolicy};

use crate::host_name::MAX_HOST_LEN;

/// A validated egress policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct EgressPolicy {
    pub enabled: bool,
    pub allowed_ports: Vec<u16>,
    /// `None`: any host.
    pub host_patterns: Option<Vec<HostPattern>>,
    pub allow_private_ranges: bool,
    pub denied_cidrs: Vec<IpNet>,
    /// Open egress streams allowed at once.
    pub max_concurrent_streams: u32,
}

/// Default cap on open egress streams of one edge.
pub(crate) const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 64;

/// One entry of `allowedHostPatterns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// This name exactly (normalised).
    Exact(String),
    /// `*.suffix`: any name below `suffix`, not `suffix` itself.
    Below(String),
}

impl HostPattern {
    fn parse(text: &str) -> Result<Self, BadHostName> {
        match text.strip_prefix("*.") {
            Some(suffix) => Ok(Self::Below(normalise_name(suffix)?)),
            None => match parse_ip(text) {
                Some(ip) => Ok(Self::Exact(ip.to_string())),
                None => Ok(Self::Exact(normalise_name(text)?)),
            },
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host == name,
            Self::Below(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl EgressPolicy {
    /// Validates the IPC policy; errors name the field below `path`.
    pub(crate) fn from_ipc(
        policy: &IpcPolicy,
        path: &str,
    ) -> Result<Self, crate::config::ConfigError> {
        use crate::config::ConfigError;
        if let Some(port) = policy.allowed_ports.iter().find(|&&port| port == 0) {
            return Err(ConfigError::new(
                format!("{path}.allowedPorts"),
                format!("port {port} is not a port"),
            ));
        }
        let host_patterns = policy
            .allowed_host_patterns
            .as_ref()
            .map(|patterns| {
                patterns
                    .iter()
                    .enumerate()
                    .map(|(index, pattern)| {
                        HostPattern::parse(pattern).map_err(|e| {
                            ConfigError::new(format!("{path}.allowedHostPatterns[{index}]"), e)
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let denied_cidrs = policy
            .denied_cidrs
            .iter()
            .flatten()
            .enumerate()
            .map(|(index, cidr)| {
                parse_cidr(cidr)
                    .ok_or_else(|| {
                        ConfigError::new(
                            format!("{path}.deniedCidrs[{index}]"),
                            format!("{cidr:?} is not an IP address or CIDR"),
                        )
                    })
                    .map(|net| net.trunc())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_concurrent_streams = policy
            .max_concurrent_streams
            .unwrap_or(DEFAULT_MAX_CONCURRENT_STREAMS);
        if max_concurrent_streams == 0 {
            return Err(ConfigError::new(
                format!("{path}.maxConcurrentStreams"),
                "must be at least 1 (disable egress with enabled: false)",
            ));
        }
        Ok(Self {
            enabled: policy.enabled,
            allowed_ports: policy.allowed_ports.clone(),
            host_patterns,
            allow_private_ranges: policy.allow_private_ranges,
            denied_cidrs,
            max_concurrent_streams,
        })
    }
}

fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Why a request was refused: the rule, for the edge's answer and the hub's event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("egress is disabled for this edge")]
    Disabled,
    #[error("port {0} is not in allowedPorts")]
    Port(u16),
    #[error("{0:?} is not a valid host name or IP address")]
    BadHost(String),
    #[error("{0:?} matches no allowedHostPatterns entry")]
    Host(String),
    #[error("{ip} is denied ({rule})")]
    Address { ip: IpAddr, rule: String },
    #[error("{0:?} has no address of the requested family")]
    NoAddress(String),
}

/// What to dial: a literal address, or a name to resolve first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    Ip(IpAddr),
    Name(String),
}

/// The checks before resolving: enabled, port, host syntax and patterns.
pub(crate) fn check_request(
    policy: &EgressPolicy,
    host: &str,
    port: u16,
) -> Result<Destination, Refusal> {
    if !policy.enabled {
        return Err(Refusal::Disabled);
    }
    if !policy.allowed_ports.contains(&port) {
        return Err(Refusal::Port(port));
    }
    let destination = match parse_ip(host) {
        Some(ip) => Destination::Ip(ip),
        None => {
            Destination::Name(normalise_name(host).map_err(|_| Refusal::BadHost(host.to_owned()))?)
        }
    };
    if let Some(patterns) = &policy.host_patterns {
        let key = match &destination {
            Destination::Ip(ip) => ip.to_string(),
            Destination::Name(name) => name.clone(),
        };
        if !patterns.iter().any(|pattern| pattern.matches(&key)) {
            return Err(Refusal::Host(host.to_owned()));
        }
    }
    Ok(destination)
}

/// The checks after resolving: drops denied addresses and orders the rest by `family`. Refuses
/// with the first address's rule when none is left. An IPv4-mapped address counts (and is
/// dialled) as the IPv4 address it is.
pub(crate) fn filter_addresses(
    policy: &EgressPolicy,
    host: &str,
    resolved: &[IpAddr],
    family: AddressFamily,
) -> Result<Vec<IpAddr>, Refusal> {
    let wanted: Vec<IpAddr> = resolved
        .iter()
        .map(IpAddr::to_canonical)
        .filter(|ip| match family {
            AddressFamily::Ipv4 => ip.is_ipv4(),
            AddressFamily::Ipv6 => ip.is_ipv6(),
            _ => true,
        })
        .collect();
    let mut first_refusal = None;
    let mut allowed = Vec::new();
    for ip in wanted {
        match judge(policy, ip) {
            Ok(()) => allowed.push(ip),
            Err(refusal) => {
                first_refusal.get_or_insert(refusal);
            }
        }
    }
    if allowed.is_empty() {
        return Err(first_refusal.unwrap_or_else(|| Refusal::NoAddress(host.to_owned())));
    }
    match family {
        AddressFamily::PreferIpv4 => allowed.sort_by_key(|ip| !ip.is_ipv4()),
        AddressFamily::PreferIpv6 => allowed.sort_by_key(|ip| !ip.is_ipv6()),
        _ => {}
    }
    Ok(allowed)
}

/// One address against `deniedCidrs`, the always-denied ranges and the private ranges.
pub(crate) fn judge(policy: &EgressPolicy, ip: IpAddr) -> Result<(), Refusal> {
    let ip = ip.to_canonical();
    let refuse = |rule: String| Err(Refusal::Address { ip, rule });
    if let Some(net) = policy.denied_cidrs.iter().find(|net| net.contains(&ip)) {
        return refuse(format!("deniedCidrs {net}"));
    }
    for inner in embedded_ipv4(ip) {
        if let Some(net) = policy
            .denied_cidrs
            .iter()
            .find(|net| net.contains(&IpAddr::V4(inner)))
        {
            return refuse(format!("deniedCidrs {net} (embedded {inner})"));
        }
    }
    match classify(ip) {
        Class::Public => Ok(()),
        Class::Private if policy.allow_private_ranges => Ok(()),
        Class::Private => refuse("private range (allowPrivateRanges is false)".to_owned()),
        Class::Denied(range) => refuse(range.to_owned()),
    }
}

/// What kind of address this is, for egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Public,
    /// RFC 1918 or IPv6 ULA: only with `allowPrivateRanges`.
    Private,
    /// Never dialled; the name of the range.
    Denied(&'static str),
}

/// Classifies an address; IPv6 addresses that carry an IPv4 one take the stricter class.
pub(crate) fn classify(ip: IpAddr) -> Class {
    match ip.to_canonical() {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            let own = classify_v6(v6);
            embedded_ipv4(IpAddr::V6(v6))
                .into_iter()
                .map(classify_v4)
                .fold(own, stricter)
        }
    }
}

fn stricter(a: Class, b: Class) -> Class {
    match (a, b) {
        (Class::Denied(range), _) | (_, Class::Denied(range)) => Class::Denied(range),
        (Class::Private, _) | (_, Class::Private) => Class::Private,
        _ => Class::Public,
    }
}

/// Always-denied IPv4 ranges, most specific first where they overlap.
const DENIED_V4: &[(&str, &str)] = &[
    ("0.0.0.0/8", "unspecified / this network"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("100.64.0.0/10", "shared address space (CGN)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("198.18.0.0/15", "benchmarking"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
];
const PRIVATE_V4: &[&str] = &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

/// Always-denied IPv6 ranges (the embedded-IPv4 ones are judged by their IPv4 instead).
const DENIED_V6: &[(&str, &str)] = &[
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
    ("100::/64", "discard-only"),
    ("2001:db8::/32", "documentation"),
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "ORCHID"),
    ("2001:20::/28", "ORCHIDv2"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing SIDs"),
];
const PRIVATE_V6: &[&str] = &["fc00::/7"];

fn in_ranges(ip: IpAddr, ranges: &[&str]) -> bool {
    ranges
        .iter()
        .filter_map(|range| range.parse::<IpNet>().ok())
        .any(|net| net.contains(&ip))
}

fn denied_by(ip: IpAddr, ranges: &[(&str, &'static str)]) -> Option<&'static str> {
    ranges.iter().find_map(|(range, name)| {
        range
            .parse::<IpNet>()
            .ok()
            .filter(|net| net.contains(&ip))
            .map(|_| *name)
    })
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let ip = IpAddr::V4(ip);
    if let Some(range) = denied_by(ip, DENIED_V4) {
        Class::Denied(range)
    } else if in_ranges(ip, PRIVATE_V4) {
        Class::Private
    } else {
        Class::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    let ip = IpAddr::V6(ip);
    if let Some(range) = denied_by(ip, DENIED_V6) {
        Class::Denied(range)
    } else if in_ranges(ip, PRIVATE_V6) {
        Class::Private
    } else {
        Class::Public
    }
}

/// The IPv4 addresses an IPv6 address carries: IPv4-mapped (`::ffff:0:0/96`), IPv4-translated
/// (SIIT, RFC 2765: `::ffff:0:a.b.c.d`) and -compatible (`::/96`), NAT64 (`64:ff9b::/96`), 6to4
/// (`2002::/16`), Teredo (`2001::/32`: server and client), an ISATAP interface id
/// (`…:0:5efe:a.b.c.d` or `…:200:5efe:a.b.c.d` in the low 64 bits, RFC 5214, under any
/// prefix), and local-use NAT64 (`64:ff9b:1::/48`, RFC 8215).
///
/// The local-use prefix is an operator's choice of length within the /48, and RFC 6052 places
/// the IPv4 address differently for each (/48: octets 6-7 and 9-10, /56: 7 and 9-11, /64: 9-12,
/// /96: octets 12-15; octet 8 is always skipped). Each layout whose reserved bits are zero (octet
/// 8 and the suffix after the IPv4 address, as RFC 6052 requires) is read, and the strictest
/// decides: an address that reads as loopback in any plausible layout is refused. (Reading every
/// layout regardless would make each `/96` address `0.0.0.0` under the `/48` layout.)
pub(crate) fn embedded_ipv4(ip: IpAddr) -> Vec<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else {
        return Vec::new();
    };
    let bits = u128::from(v6);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    let octets = v6.octets();
    let from = |at: [usize; 4]| Ipv4Addr::from(at.map(|i| octets[i]));
    let segments = v6.segments();
    let mut found = match segments {
        [0, 0, 0, 0, 0, 0xffff, _, _] => vec![low32],
        [0, 0, 0, 0, 0xffff, 0, _, _] => vec![low32],
        // IPv4-compatible; `::` and `::1` are judged as themselves.
        [0, 0, 0, 0, 0, 0, _, _] if bits > 1 => vec![low32],
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => vec![low32],
        [0x64, 0xff9b, 1, ..] => {
            let layouts = [
                ([6, 7, 9, 10], 11),
                ([7, 9, 10, 11], 12),
                ([9, 10, 11, 12], 13),
            ];
            let plausible =
                |suffix: usize| octets[8] == 0 && octets[suffix..].iter().all(|&o| o == 0);
            layouts
                .into_iter()
                .filter(|&(_, suffix)| plausible(suffix))
                .map(|(at, _)| from(at))
                .chain([low32])
                .collect()
        }
        [0x2002, ..] => vec![Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32)],
        [0x2001, 0, ..] => vec![
            Ipv4Addr::from(((bits >> 64) & 0xffff_ffff) as u32),
            Ipv4Addr::from(!((bits & 0xffff_ffff) as u32)),
        ],
        _ => Vec::new(),
    };
    if matches!(segments, [_, _, _, _, 0 | 0x200, 0x5efe, _, _]) {
        found.push(low32);
    }
    found.dedup();
    found
}

/// A literal IP address: IPv6 (optionally in brackets), or IPv4 in any spelling `inet_aton`
/// accepts (1 to 4 parts; decimal, `0x` hex or `0` octal; the last part fills the rest), since
/// that is how the resolver would read it.
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.strip_suffix('.').unwrap_or(text);
    let unbracketed = text
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(v6) = unbracketed.parse::<Ipv6Addr>() {
        return Some(IpAddr::V6(v6));
    }
    parse_ipv4_loose(text).map(IpAddr::V4)
}

fn parse_ipv4_loose(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let numbers: Vec<u64> = parts
        .iter()
        .map(|part| parse_number(part))
        .collect::<Option<_>>()?;
    let (head, last) = numbers.split_at(numbers.len() - 1);
    if head.iter().any(|&n| n > 0xff) {
        return None;
    }
    let last_bits = 8 * (4 - head.len() as u32);
    if last[0] >= 1u64 << last_bits {
        return None;
    }
    let value = head
        .iter()
        .fold(0u64, |acc, &n| (acc << 8) | n)
        .checked_shl(last_bits)?
        | last[0];
    Some(Ipv4Addr::from(u32::try_from(value).ok()?))
}

fn parse_number(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        return if hex.is_empty() {
            Some(0)
        } else {
            u64::from_str_radix(hex, 16).ok()
        };
    }
    if part.len() > 1 && part.starts_with('0') {
        return u64::from_str_radix(&part[1..], 8).ok();
    }
    part.parse().ok()
}

/// A host name [`normalise_name`] refused (quoted as given: the operator wrote it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid host name")]
pub(crate) struct BadHostName(String);

/// Lower case, without one trailing dot; letters, digits, `-` and `_` in labels of 1-63 bytes.
pub(crate) fn normalise_name(host: &str) -> Result<String, BadHostName> {
    let lower = host.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let valid_label = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.is_empty() || name.len() > MAX_HOST_LEN || !name.split('.').all(valid_label) {
        return Err(BadHostName(host.to_owned()));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests;
