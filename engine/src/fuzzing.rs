//! Entry points for the coverage-guided fuzz targets in `fuzz/` (built with the `fuzzing`
//! feature; nothing else uses them). Each takes arbitrary bytes, feeds them to one decoder that
//! sees untrusted input, and panics only when an invariant breaks: a decoder itself must never
//! panic, loop or allocate without bound, and what it accepts must survive a round trip.
// Panicking on a broken invariant is how a fuzz target reports it.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};

use crate::proxy_protocol::{v1, v2, ProxyHeader};
use crate::transport::{control, datagram, frame, handshake};

/// TLS mux frames and QUIC control messages, decoded one after another from one buffer; every
/// accepted frame encodes back to the bytes it came from.
pub fn frames(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(decoded)) = frame::decode(&mut buf) {
        let mut again = BytesMut::new();
        if frame::encode(&decoded, &mut again).is_err() {
            panic!("an accepted frame does not encode: {decoded:?}");
        }
        let mut reread = again.clone();
        assert_eq!(
            frame::decode(&mut reread).ok().flatten().as_ref(),
            Some(&decoded)
        );
    }
    let mut buf = BytesMut::from(data);
    while let Ok(Some(message)) = control::decode(&mut buf) {
        let mut again = BytesMut::new();
        if control::encode(&message, &mut again).is_ok() {
            assert_eq!(control::decode(&mut again).ok().flatten(), Some(message));
        }
    }
}

/// The login hello, the hub's reply line and a pushed CONFIG payload.
pub fn handshake_lines(data: &[u8]) {
    if let Ok(hello) = handshake::parse_hello(data) {
        crate::ident::validate_edge_id(&hello.edge_id).expect("a parsed hello has a valid id");
        if let Some(instance) = &hello.instance {
            assert_eq!(
                handshake::InstanceId::parse(instance.as_str()).as_ref(),
                Some(instance),
                "a parsed instance id is canonical"
            );
        }
    }
    let _ = handshake::parse_reply(data);
    let _ = handshake::parse_config(data);
}

/// PROXY v1 and v2: what parses re-encodes to a header that parses to the same addresses.
pub fn proxy_headers(data: &[u8]) {
    if let Ok((header, used)) = v1::parse(data) {
        assert!(used <= data.len() && used <= v1::MAX_V1_LEN);
        let line = v1::encode(&header);
        let (again, _) = v1::parse(line.as_bytes()).expect("an encoded v1 line parses");
        assert_eq!(again, header);
    }
    if let Some((header, transport)) = v2::parse(data) {
        // Not byte-identical: an INET6 header with IPv4-mapped addresses reads as IPv4.
        let again = v2::parse(&v2::encode(&header, transport));
        assert_eq!(
            again,
            Some((header, transport)),
            "a parsed v2 header survives a round trip"
        );
    }
    // Any address pair (16 + 16 + 2 + 2 bytes) survives both encoders.
    if let Some((addresses, _)) = data.split_first_chunk::<36>() {
        let ip = |bytes: &[u8]| match <[u8; 16]>::try_from(bytes) {
            Ok(octets) => IpAddr::from(octets).to_canonical(),
            Err(_) => IpAddr::from([0u8; 4]),
        };
        let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
        let header = ProxyHeader::new(
            (ip(&addresses[..16]), port(32)).into(),
            (ip(&addresses[16..32]), port(34)).into(),
        );
        let (from_line, _) = v1::parse(v1::encode(&header).as_bytes()).expect("v1 round trip");
        assert_eq!(from_line, header);
        let stream = crate::proxy_protocol::ProxyTransport::Stream;
        assert_eq!(
            v2::parse(&v2::encode(&header, stream)),
            Some((header, stream))
        );
    }
}

/// Connection tokens: what decodes encodes to a token that decodes to the same value.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = crate::token::ConnectionToken::decode(text) {
        let encoded = token.encode().expect("a decoded token encodes");
        assert_eq!(
            crate::token::ConnectionToken::decode(&encoded).ok(),
            Some(token)
        );
    }
}

/// STUN responses, with the first 12 bytes as the transaction id the edge would expect.
pub fn stun_response(data: &[u8]) {
    let transaction = data.first_chunk::<12>().copied().unwrap_or_default();
    let _ = crate::stun::parse_response(data, &transaction);
    if let Some(rest) = data.get(12..) {
        let _ = crate::stun::parse_response(rest, &transaction);
    }
}

/// QUIC UDP datagrams and overflow-stream records.
pub fn udp_datagrams(data: &[u8]) {
    if let Ok(message) = datagram::decode(Bytes::copy_from_slice(data)) {
        let encoded = match &message {
            datagram::UdpMessage::Open { session, header } => {
                datagram::encode_open(*session, header)
            }
            datagram::UdpMessage::Data { session, payload } => {
                datagram::encode_data(*session, payload)
            }
            datagram::UdpMessage::Close { .. } => return,
        };
        assert_eq!(encoded, data);
    }
    let mut buf = BytesMut::from(data);
    while let Ok(Some((_, payload))) = datagram::decode_overflow(&mut buf) {
        assert!(payload.len() <= datagram::MAX_UDP_PAYLOAD);
    }
}

/// The IPC stdin reader with a small line cap, and the request decoder on every line.
pub fn ipc_lines(data: &[u8]) {
    const CAP: usize = 64;
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    runtime.block_on(async {
        // A small read buffer, so lines cross buffer boundaries.
        let input = tokio::io::BufReader::with_capacity(7, data);
        let mut reader = crate::ipc::reader::LineReader::new(input, CAP);
        while let Ok(Some(line)) = reader.next_line().await {
            match line {
                crate::ipc::reader::InputLine::Line(line) => {
                    assert!(line.len() <= CAP, "a line over the cap was returned whole");
                    let _ = crate::ipc::dispatch::decode_line(&line);
                }
                crate::ipc::reader::InputLine::Oversized { prefix, len } => {
                    // Only a bounded prefix of an oversized line is kept, for the error event.
                    assert!(len > CAP && prefix.len() <= crate::ipc::reader::KEPT_PREFIX);
                }
            }
        }
    });
    let _ = crate::ipc::dispatch::decode_line(data);
}

/// Firewall snapshots as the hub receives them (JSON) through validation and translation.
pub fn firewall_snapshot(data: &[u8]) {
    let Ok(config) = serde_json::from_slice::<remoteingress_ipc_schema::FirewallConfig>(data)
    else {
        return;
    };
    if let Ok(snapshot) = crate::firewall::snapshot::validate(&config, "firewallConfig") {
        let _ = crate::firewall::ruleset::translate(
            &snapshot,
            &crate::firewall::exemption::Exemption::default(),
        );
    }
}

/// Egress: a policy (JSON up to the first NUL), then a host name (up to the next NUL), then
/// addresses (16 bytes each) standing for what the name resolved to. Whatever the policy
/// allows is never in an always-denied range.
pub fn egress_policy(data: &[u8]) {
    use crate::egress::policy::{check_request, classify, filter_addresses, Class, EgressPolicy};
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(policy), Some(host)) = (parts.next(), parts.next()) else {
        return;
    };
    let Ok(policy) = serde_json::from_slice::<remoteingress_ipc_schema::EgressPolicy>(policy)
    else {
        return;
    };
    let Ok(policy) = EgressPolicy::from_ipc(&policy, "egress") else {
        return;
    };
    let host = String::from_utf8_lossy(host);
    let port = policy.allowed_ports.first().copied().unwrap_or(25);
    let resolved: Vec<IpAddr> = parts
        .next()
        .unwrap_or_default()
        .chunks_exact(16)
        .filter_map(|chunk| <[u8; 16]>::try_from(chunk).ok())
        .map(IpAddr::from)
        .collect();
    let destination = check_request(&policy, &host, port);
    let family = remoteingress_ipc_schema::AddressFamily::Any;
    if let Ok(allowed) = filter_addresses(&policy, &host, &resolved, family) {
        for ip in allowed {
            assert!(
                !matches!(classify(ip), Class::Denied(_)),
                "{ip} is always denied, but {destination:?} let it through"
            );
        }
    }
}
