//! Tunnel admission and recovery through the real binaries: bad credentials, garbage, silent
//! peers, non-TLS clients, certificate pinning, and reconnect after the hub is killed.

#[macro_use]
mod common;

use common::hand_edge::{self, quic_raw, tls_raw};

use std::time::Duration;

use common::target::{Behaviour, Target};
use common::{
    edge_start, start_hub, start_hub_allowing_test_edge, Managed, Pair, EDGE_ADDR, EDGE_ID,
    EDGE_SECRET,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_quic_peers_are_refused_and_the_good_edge_keeps_working() {
    let target = Target::start(Behaviour::Echo).await;
    let mut pair = Pair::start(&[target.port], json!({}), "quic").await;
    let port = pair.tunnel_port;
    let refused = hand_edge::login("quic", port, EDGE_ID, "wrong-secret").await;
    assert_eq!(refused.err().unwrap(), UNAUTHORIZED);
    common::assert_wrong_secret(&mut pair.hub).await;
    let reply = quic_raw(port, b"HELLO there\n").await;
    assert!(reply.is_err(), "garbage gets no reply: {reply:?}");
    let event = auth_failed(&mut pair.hub).await;
    assert!(
        event["reason"].as_str().unwrap().starts_with("bad hello"),
        "{event}"
    );
    assert_echo_through_edge(target.port, b"still here").await;
}

/// One echo round trip through the edge: the tunnel still serves.
async fn assert_echo_through_edge(port: u16, payload: &[u8]) {
    let mut client = TcpStream::connect((EDGE_ADDR, port)).await.unwrap();
    client.write_all(payload).await.unwrap();
    client.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed, payload);
}

async fn auth_failed(hub: &mut Managed) -> Value {
    hub.event("edgeAuthFailed").await
}

const UNAUTHORIZED: &str = "{\"error\":\"unauthorized\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_are_refused_and_the_good_edge_keeps_working() {
    let target = Target::start(Behaviour::Echo).await;
    let mut pair = Pair::start(&[target.port], json!({}), "tcpTls").await;
    let port = pair.tunnel_port;

    let refused = hand_edge::login("tcpTls", port, EDGE_ID, "wrong-secret").await;
    assert_eq!(refused.err().unwrap(), UNAUTHORIZED);
    common::assert_wrong_secret(&mut pair.hub).await;

    let refused = hand_edge::login("tcpTls", port, "nobody", "secret").await;
    assert_eq!(refused.err().unwrap(), UNAUTHORIZED);
    assert_eq!(
        auth_failed(&mut pair.hub).await["reason"],
        "unknown edge id"
    );

    // The hello of an edge from before the channel-bound login (the secret in clear).
    let reply = tls_raw(port, format!("EDGE {EDGE_ID} {EDGE_SECRET}\n").as_bytes()).await;
    assert!(reply.is_err(), "an old hello gets no reply: {reply:?}");
    let event = auth_failed(&mut pair.hub).await;
    assert!(
        event["reason"].as_str().unwrap().contains("upgrade"),
        "{event}"
    );

    let reply = tls_raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(reply.is_err(), "garbage gets no reply: {reply:?}");
    let event = auth_failed(&mut pair.hub).await;
    assert!(
        event["reason"].as_str().unwrap().starts_with("bad hello"),
        "{event}"
    );

    // Not TLS at all.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    plain
        .write_all(b"EDGE edge-test test-secret-0123456789\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut sink)).await;
    let event = auth_failed(&mut pair.hub).await;
    assert!(event["reason"].as_str().unwrap().contains("TLS"), "{event}");

    // The good edge was never disturbed.
    assert_echo_through_edge(target.port, b"still here").await;
    let status = pair.hub.ok("getStatus", None).await;
    assert_eq!(status["connectedEdges"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_sends_its_hello_is_dropped_at_the_deadline() {
    let mut hub = Managed::spawn().await;
    let (port, _) = start_hub(&mut hub, json!({})).await;
    let started = std::time::Instant::now();
    let mut tls = hand_edge::tls_connect(port).await;
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "hub closed the silent connection");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(9) && elapsed < Duration::from_secs(14),
        "{elapsed:?}"
    );
    let event = hub.event("edgeAuthFailed").await;
    assert!(
        event["reason"].as_str().unwrap().contains("within"),
        "{event}"
    );
}

/// A pinned fingerprint that is not the hub's: the edge refuses the hub as not verified and
/// says both fingerprints and what to do, over either transport.
async fn an_edge_with_the_wrong_pin_refuses_the_hub_and_says_why(transport: &str) {
    let mut hub = Managed::spawn().await;
    let (port, actual) = start_hub(&mut hub, json!({})).await;
    hub.ok(
        "updateAllowedEdges",
        Some(json!({"edges": [{"id": EDGE_ID, "secret": EDGE_SECRET}]})),
    )
    .await;
    let mut edge = Managed::spawn().await;
    let pinned = "00".repeat(32);
    let mut start = edge_start(port, Some(&pinned));
    start["config"]["transportMode"] = json!(transport);
    edge.ok("start", Some(start)).await;
    let status = common::wait_edge_error(&mut edge).await;
    assert_eq!(status["lastErrorReason"], "hubNotVerified", "{status}");
    let error = status["lastError"].as_str().unwrap();
    for needle in [actual.as_str(), &pinned, "token issue", "hub-identity.pem"] {
        assert!(error.contains(needle), "{needle} not in: {error}");
    }
    let hub_status = hub.ok("getStatus", None).await;
    assert_eq!(hub_status["connectedEdges"], json!([]));
}

over_both_transports!(an_edge_with_the_wrong_pin_refuses_the_hub_and_says_why);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_reconnects_over_tls_after_the_hub_is_killed() {
    edge_reconnects_after_the_hub_is_killed("tcpTls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_reconnects_over_quic_after_the_hub_is_killed() {
    edge_reconnects_after_the_hub_is_killed("quic").await;
}

async fn edge_reconnects_after_the_hub_is_killed(transport: &str) {
    let target = Target::start(Behaviour::Echo).await;
    // A fixed certificate, so the restarted hub has the fingerprint the edge pinned.
    let certified = rcgen::generate_simple_self_signed(vec!["hub.test".to_owned()]).unwrap();
    let tls =
        json!({"certPem": certified.cert.pem(), "keyPem": certified.key_pair.serialize_pem()});
    // Short heartbeats so that a dead hub is noticed in seconds on QUIC too (UDP has no RST).
    let performance = json!({"heartbeatIntervalSecs": 1, "heartbeatTimeoutSecs": 3});
    let mut pair = Pair::start(
        &[target.port],
        json!({"tls": tls, "performance": performance}),
        transport,
    )
    .await;
    let tunnel_port = pair.tunnel_port;

    // Traffic flows while the hub dies.
    let mut client = TcpStream::connect((EDGE_ADDR, target.port)).await.unwrap();
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).await.unwrap();
    pair.hub.child.start_kill().unwrap();
    pair.hub.wait_exit().await;

    let reason = pair.edge.event("tunnelDisconnected").await;
    assert!(reason["reason"].is_string());
    // While down, new clients are refused at once.
    let refused = TcpStream::connect((EDGE_ADDR, target.port)).await;
    if let Ok(mut socket) = refused {
        let mut sink = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut sink)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "refused quickly: {read:?}"
        );
    }

    // A new hub on the same port with the same certificate and the same edge allowed.
    let mut hub = Managed::spawn().await;
    let config = json!({"tunnelPort": tunnel_port, "tls": tls, "performance": performance});
    common::start_retrying(&mut hub, json!({"role": "hub", "config": config})).await;
    hub.ok(
        "updateAllowedEdges",
        Some(json!({"edges": [{"id": EDGE_ID, "secret": EDGE_SECRET, "listenPorts": [target.port]}]})),
    )
    .await;
    hub.event("edgeConnected").await;
    pair.edge.event("tunnelConnected").await;
    assert_echo_through_edge(target.port, b"again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failed_attempt_is_an_event_with_its_reason_and_the_next_retry() {
    let mut hub = Managed::spawn().await;
    let port = start_hub_allowing_test_edge(&mut hub).await;
    let mut edge = Managed::spawn().await;
    let mut params = edge_start(port, None);
    params["config"]["secret"] = json!("not-the-secret-0123456789");
    edge.ok("start", Some(params)).await;
    for attempt in 1..=2 {
        let event = edge.event("tunnelConnectFailed").await;
        assert_eq!(event["reason"], "unauthorized", "{event}");
        assert_eq!(event["attempt"], attempt, "{event}");
        assert!(event["retryInMs"].as_u64().unwrap() > 0, "{event}");
    }
    let status = edge.ok("getStatus", None).await;
    assert_eq!(status["lastErrorReason"], "unauthorized", "{status}");

    // A hub that is not there is reported at once, not after seconds of silence.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut lonely = Managed::spawn().await;
    lonely
        .ok("start", Some(edge_start(closed_port, None)))
        .await;
    let started = std::time::Instant::now();
    let event = lonely.event("tunnelConnectFailed").await;
    assert_eq!(event["reason"], "unreachable", "{event}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
