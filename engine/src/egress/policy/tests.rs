use std::collections::HashMap;

use super::*;

fn policy(allow_private: bool) -> EgressPolicy {
    EgressPolicy {
        enabled: true,
        allowed_ports: vec![25, 587],
        host_patterns: None,
        allow_private_ranges: allow_private,
        denied_cidrs: vec![
            "203.0.112.0/24".parse().unwrap(),
            "2001:4860::/32".parse().unwrap(),
        ],
        max_concurrent_streams: 4,
    }
}

/// A resolver for the tests: fixed answers, never the machine's DNS.
fn zone() -> HashMap<&'static str, Vec<IpAddr>> {
    let ips = |list: &[&str]| {
        list.iter()
            .map(|ip| ip.parse().unwrap())
            .collect::<Vec<_>>()
    };
    HashMap::from([
        ("mail.example.net", ips(&["93.184.216.34"])),
        ("example.net", ips(&["93.184.216.35"])),
        ("badexample.net", ips(&["93.184.216.36"])),
        (
            "a.b.example.net",
            ips(&["93.184.216.37", "2606:2800:220:1::1"]),
        ),
        // DNS rebinding: a name that matches the patterns but points inside.
        ("rebind.example.net", ips(&["127.0.0.1"])),
        ("metadata.example.net", ips(&["169.254.169.254"])),
        ("mixed.example.net", ips(&["10.1.2.3", "93.184.216.38"])),
        ("inside.example.net", ips(&["10.1.2.3"])),
        ("v6only.example.net", ips(&["2606:2800:220:1::2"])),
        ("mapped.example.net", ips(&["::ffff:127.0.0.1"])),
        ("denied.example.net", ips(&["203.0.112.9"])),
        ("nothing.example.net", ips(&[])),
    ])
}

/// The whole decision for `host:port`: request checks, the test resolver, address checks.
fn decide(
    policy: &EgressPolicy,
    host: &str,
    port: u16,
    family: AddressFamily,
) -> Result<Vec<IpAddr>, Refusal> {
    let resolved = match check_request(policy, host, port)? {
        Destination::Ip(ip) => vec![ip],
        Destination::Name(name) => zone().get(name.as_str()).cloned().unwrap_or_default(),
    };
    filter_addresses(policy, host, &resolved, family)
}

/// `expected`: "ok <first address>" or a piece of the refusal's text.
fn check(policy: &EgressPolicy, host: &str, port: u16, expected: &str) {
    let verdict = decide(policy, host, port, AddressFamily::Any);
    match (&verdict, expected.strip_prefix("ok ")) {
        (Ok(ips), Some(first)) => assert_eq!(ips[0].to_string(), first, "{host}:{port}"),
        (Err(refusal), None) => assert!(
            refusal.to_string().contains(expected),
            "{host}:{port}: refused with {refusal:?}, expected {expected:?}"
        ),
        _ => panic!("{host}:{port}: got {verdict:?}, expected {expected}"),
    }
}

#[test]
fn a_table_of_destinations() {
    let closed = policy(false);
    let table: &[(&str, u16, &str)] = &[
        // Loopback, in every spelling.
        ("127.0.0.1", 25, "loopback"),
        ("127.1", 25, "loopback"),
        ("127.0.1", 25, "loopback"),
        ("2130706433", 25, "loopback"),
        ("0x7f000001", 25, "loopback"),
        ("0x7f.1", 25, "loopback"),
        ("017700000001", 25, "loopback"),
        ("0177.0.0.1", 25, "loopback"),
        ("127.0.0.1.", 25, "loopback"),
        ("::1", 25, "loopback"),
        ("[::1]", 25, "loopback"),
        ("::ffff:127.0.0.1", 25, "loopback"),
        ("::ffff:7f00:1", 25, "loopback"),
        ("64:ff9b::7f00:1", 25, "loopback"),
        ("64:ff9b:1::7f00:1", 25, "loopback"),
        // Local-use NAT64 (RFC 8215) in each RFC 6052 layout: /48, /56, /64.
        ("64:ff9b:1:7f00:0:100::", 25, "loopback"),
        ("64:ff9b:1:7f:0:1::", 25, "loopback"),
        ("64:ff9b:1:0:7f:0:100:0", 25, "loopback"),
        (
            "64:ff9b:1:a9fe:a9:fe00::",
            25,
            "link-local (cloud metadata)",
        ),
        // SIIT IPv4-translated (RFC 2765).
        ("::ffff:0:127.0.0.1", 25, "loopback"),
        ("::ffff:0:a9fe:a9fe", 25, "link-local (cloud metadata)"),
        // ISATAP interface ids under any prefix (RFC 5214).
        ("2a01:4f8::5efe:7f00:1", 25, "loopback"),
        (
            "2a00:1450:4001::200:5efe:169.254.169.254",
            25,
            "link-local (cloud metadata)",
        ),
        ("fe80::5efe:7f00:1", 25, "link-local"),
        ("2002:7f00:1::", 25, "loopback"),
        ("2001:0:7f00:1::", 25, "loopback"),
        ("2001:0:5db8:1:0:f227:80ff:fffe", 25, "loopback"),
        ("::127.0.0.1", 25, "loopback"),
        // Unspecified, link-local, metadata.
        ("0.0.0.0", 25, "unspecified"),
        ("0", 25, "unspecified"),
        ("::", 25, "unspecified"),
        ("169.254.169.254", 25, "link-local"),
        ("::ffff:169.254.169.254", 25, "link-local"),
        ("fd00:ec2::254", 25, "cloud metadata"),
        ("fe80::1", 25, "link-local"),
        ("fec0::1", 25, "site-local"),
        // Other special ranges.
        ("100.64.0.1", 25, "shared address space"),
        ("192.0.2.1", 25, "documentation"),
        ("198.51.100.7", 25, "documentation"),
        ("203.0.113.9", 25, "documentation"),
        ("2001:db8::1", 25, "documentation"),
        ("198.18.0.1", 25, "benchmarking"),
        ("198.19.255.255", 25, "benchmarking"),
        ("224.0.0.1", 25, "multicast"),
        ("239.255.255.250", 25, "multicast"),
        ("ff02::1", 25, "multicast"),
        ("255.255.255.255", 25, "broadcast"),
        ("240.0.0.1", 25, "reserved"),
        ("192.0.0.8", 25, "IETF protocol assignments"),
        ("100::1", 25, "discard-only"),
        // Private ranges: refused without allowPrivateRanges.
        ("10.0.0.1", 25, "private range"),
        ("172.16.0.1", 25, "private range"),
        ("172.31.255.255", 25, "private range"),
        ("192.168.1.1", 25, "private range"),
        ("::ffff:10.0.0.1", 25, "private range"),
        ("64:ff9b::a00:1", 25, "private range"),
        ("2002:c0a8:101::", 25, "private range"),
        ("fc00::1", 25, "private range"),
        ("fd12:3456::1", 25, "private range"),
        // Public addresses pass.
        ("172.32.0.1", 25, "ok 172.32.0.1"),
        ("8.8.8.8", 25, "ok 8.8.8.8"),
        ("93.184.216.34", 587, "ok 93.184.216.34"),
        ("2606:2800:220:1::1", 25, "ok 2606:2800:220:1::1"),
        ("::ffff:8.8.8.8", 25, "ok 8.8.8.8"),
        ("64:ff9b::808:808", 25, "ok 64:ff9b::808:808"),
        ("2002:808:808::1", 25, "ok 2002:808:808::1"),
        // deniedCidrs, also through an embedding.
        ("203.0.112.5", 25, "deniedCidrs 203.0.112.0/24"),
        ("::ffff:203.0.112.5", 25, "deniedCidrs 203.0.112.0/24"),
        ("64:ff9b::cb00:7005", 25, "deniedCidrs 203.0.112.0/24"),
        ("2001:4860:4860::8888", 25, "deniedCidrs 2001:4860::/32"),
        // Ports.
        ("8.8.8.8", 26, "port 26 is not in allowedPorts"),
        ("8.8.8.8", 0, "port 0"),
        ("mail.example.net", 443, "port 443"),
        // Names, resolved by the test zone.
        ("mail.example.net", 25, "ok 93.184.216.34"),
        ("MAIL.Example.NET.", 25, "ok 93.184.216.34"),
        ("rebind.example.net", 25, "loopback"),
        ("metadata.example.net", 25, "link-local"),
        ("mapped.example.net", 25, "loopback"),
        ("inside.example.net", 25, "private range"),
        ("mixed.example.net", 25, "ok 93.184.216.38"),
        ("denied.example.net", 25, "deniedCidrs"),
        ("nothing.example.net", 25, "no address"),
        ("unknown.example.net", 25, "no address"),
        // Not host names at all.
        ("", 25, "not a valid host name"),
        ("exa mple.net", 25, "not a valid host name"),
        ("user@example.net", 25, "not a valid host name"),
        ("example.net/path", 25, "not a valid host name"),
        ("-lead.example.net", 25, "not a valid host name"),
        ("a..b", 25, "not a valid host name"),
        ("1.2.3.4.5", 25, "no address"),
        ("256.1.1.1", 25, "no address"),
    ];
    assert!(table.len() >= 60, "{} rows", table.len());
    for &(host, port, expected) in table {
        check(&closed, host, port, expected);
    }
}

#[test]
fn private_ranges_only_when_allowed_and_never_the_always_denied_ones() {
    let open = policy(true);
    check(&open, "10.0.0.1", 25, "ok 10.0.0.1");
    check(&open, "fd12:3456::1", 25, "ok fd12:3456::1");
    check(&open, "inside.example.net", 25, "ok 10.1.2.3");
    check(&open, "mixed.example.net", 25, "ok 10.1.2.3");
    check(&open, "127.0.0.1", 25, "loopback");
    check(&open, "169.254.169.254", 25, "link-local");
    check(&open, "fd00:ec2::254", 25, "cloud metadata");
    check(&open, "100.64.0.1", 25, "shared address space");
    check(&open, "203.0.112.5", 25, "deniedCidrs");
}

#[test]
fn host_patterns_match_exact_names_and_names_below_a_suffix() {
    let mut patterns = policy(false);
    patterns.host_patterns = Some(
        ["*.example.net", "smtp.example.org", "8.8.8.8"]
            .iter()
            .map(|p| HostPattern::parse(p).unwrap())
            .collect(),
    );
    check(&patterns, "mail.example.net", 25, "ok 93.184.216.34");
    check(&patterns, "a.b.example.net", 25, "ok 93.184.216.37");
    check(&patterns, "MAIL.EXAMPLE.NET.", 25, "ok 93.184.216.34");
    check(
        &patterns,
        "example.net",
        25,
        "matches no allowedHostPatterns",
    );
    check(
        &patterns,
        "badexample.net",
        25,
        "matches no allowedHostPatterns",
    );
    check(&patterns, "smtp.example.org", 25, "no address");
    check(
        &patterns,
        "other.example.org",
        25,
        "matches no allowedHostPatterns",
    );
    check(&patterns, "8.8.8.8", 25, "ok 8.8.8.8");
    check(&patterns, "0x8.8.8.8", 25, "ok 8.8.8.8");
    check(&patterns, "8.8.4.4", 25, "matches no allowedHostPatterns");
    // A matching name is still judged by where it points.
    check(&patterns, "rebind.example.net", 25, "loopback");
}

#[test]
fn disabled_refuses_everything_first() {
    let mut disabled = policy(true);
    disabled.enabled = false;
    check(&disabled, "8.8.8.8", 25, "disabled");
    check(&disabled, "8.8.8.8", 1, "disabled");
}

#[test]
fn the_address_family_filters_and_orders() {
    let open = policy(false);
    let first = |family| decide(&open, "a.b.example.net", 25, family).map(|ips| ips[0].to_string());
    assert_eq!(first(AddressFamily::Any).unwrap(), "93.184.216.37");
    assert_eq!(first(AddressFamily::Ipv6).unwrap(), "2606:2800:220:1::1");
    assert_eq!(
        first(AddressFamily::PreferIpv6).unwrap(),
        "2606:2800:220:1::1"
    );
    assert_eq!(first(AddressFamily::PreferIpv4).unwrap(), "93.184.216.37");
    let v4_only = decide(&open, "v6only.example.net", 25, AddressFamily::Ipv4);
    assert!(matches!(v4_only, Err(Refusal::NoAddress(_))), "{v4_only:?}");
}

#[test]
fn the_ipc_policy_is_validated_with_paths() {
    let ipc = |json: serde_json::Value| serde_json::from_value::<IpcPolicy>(json).unwrap();
    let ok = EgressPolicy::from_ipc(
        &ipc(
            serde_json::json!({"enabled": true, "deniedCidrs": ["10.0.0.0/8", "192.0.2.1"],
            "allowedHostPatterns": ["*.Example.net.", "mail.example.org"]}),
        ),
        "edges[0].egress",
    )
    .unwrap();
    assert_eq!(ok.allowed_ports, vec![25]);
    assert_eq!(ok.max_concurrent_streams, DEFAULT_MAX_CONCURRENT_STREAMS);
    assert_eq!(
        ok.host_patterns.unwrap()[0],
        HostPattern::Below("example.net".into())
    );
    for (json, path) in [
        (
            serde_json::json!({"deniedCidrs": ["10.0.0.0/33"]}),
            "edges[0].egress.deniedCidrs[0]",
        ),
        (
            serde_json::json!({"allowedHostPatterns": ["ok.net", "bad host"]}),
            "edges[0].egress.allowedHostPatterns[1]",
        ),
        (
            serde_json::json!({"allowedPorts": [25, 0]}),
            "edges[0].egress.allowedPorts",
        ),
        (
            serde_json::json!({"maxConcurrentStreams": 0}),
            "edges[0].egress.maxConcurrentStreams",
        ),
    ] {
        let error = EgressPolicy::from_ipc(&ipc(json), "edges[0].egress").unwrap_err();
        assert_eq!(error.path, path, "{error}");
    }
}

#[test]
fn embedded_addresses_are_found() {
    let inner = |ip: &str| embedded_ipv4(ip.parse().unwrap());
    assert_eq!(
        inner("2002:c000:0201::1"),
        vec![Ipv4Addr::new(192, 0, 2, 1)]
    );
    assert_eq!(
        inner("2001:0:4136:e378:8000:63bf:3fff:fdd2"),
        vec![
            Ipv4Addr::new(65, 54, 227, 120),
            Ipv4Addr::new(192, 0, 2, 45)
        ]
    );
    assert_eq!(
        inner("::ffff:0:192.0.2.7"),
        vec![Ipv4Addr::new(192, 0, 2, 7)]
    );
    assert_eq!(
        inner("2001:4860:1:2:200:5efe:c000:207"),
        vec![Ipv4Addr::new(192, 0, 2, 7)]
    );
    // 192.0.2.33 in the local-use /48, /56, /64 and /96 layouts: each is found.
    for ip in [
        "64:ff9b:1:c000:2:2100::",
        "64:ff9b:1:c0:0:221::",
        "64:ff9b:1:0:c0:2:2100:0",
        "64:ff9b:1::c000:221",
    ] {
        assert!(
            inner(ip).contains(&Ipv4Addr::new(192, 0, 2, 33)),
            "{ip}: {:?}",
            inner(ip)
        );
    }
    // A /96 address is not read in the shorter layouts (its suffix is not zero there).
    assert_eq!(inner("64:ff9b:1::808:808"), vec![Ipv4Addr::new(8, 8, 8, 8)]);
    assert!(inner("::").is_empty() && inner("::1").is_empty() && inner("8.8.8.8").is_empty());
}
