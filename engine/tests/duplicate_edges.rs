//! Two processes with one edge id (issue #25, "Duplicate edges"): the second is refused with an
//! `edgeDuplicateRefused` event naming both addresses and a `duplicateEdge` failure on its side,
//! the first keeps its tunnel (and an open relay through it) over several refused attempts, the
//! refusals are counted but not as failed logins, and once the first is gone the second takes
//! over within the pause the hub gave it.

#[macro_use]
mod common;

use std::time::Duration;

use common::hand_edge;
use common::target::{Behaviour, Target};
use common::{edge_start, Managed, Pair, EDGE_ID, EDGE_SECRET};
use remoteingress::testing::handshake::InstanceId;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The hub's heartbeat timeout here; a refused instance is told to wait three of them.
const HEARTBEAT_TIMEOUT_SECS: u64 = 3;
const RETRY_AFTER_SECS: u64 = 3 * HEARTBEAT_TIMEOUT_SECS;
/// The second edge's public address (the first one's is [`common::EDGE_ADDR`]).
const SECOND_EDGE_ADDR: &str = "127.0.0.3";

over_both_transports!(a_second_instance_is_refused_and_takes_over_when_the_first_is_gone);

async fn a_second_instance_is_refused_and_takes_over_when_the_first_is_gone(transport: &str) {
    let target = Target::start(Behaviour::Echo).await;
    let metrics_port = free_port();
    let hub_config = json!({
        "metricsAddr": format!("127.0.0.1:{metrics_port}"),
        "performance": {"heartbeatIntervalSecs": 1, "heartbeatTimeoutSecs": HEARTBEAT_TIMEOUT_SECS},
    });
    let mut pair = Pair::start_configured(
        json!({"listenPorts": [target.port]}),
        hub_config,
        json!({}),
        transport,
    )
    .await;
    let port = pair.tunnel_port;
    let metrics = scrape(metrics_port).await;
    assert_eq!(duplicate_refusals(&metrics), 0, "the series starts at 0");

    // A relay through the first edge, open for the whole test.
    pair.wait_listening(target.port).await;
    let mut relay = TcpStream::connect((common::EDGE_ADDR, target.port))
        .await
        .unwrap();
    echo(&mut relay, b"before").await;
    let first = connected_edge(&mut pair.hub).await;
    let first_addr = first["remoteAddr"].as_str().unwrap().to_owned();
    // Over QUIC the edge reconnects once to adopt the hub's performance settings: the same
    // instance replacing its own tunnel, before the second process starts.
    let replaced_before = pair.hub.unclaimed("edgeDisconnected");

    // The second process: same id and secret, its own public address.
    let mut second = Managed::spawn().await;
    let mut params = edge_start(port, Some(&pair.fingerprint));
    params["config"]["transportMode"] = json!(transport);
    params["config"]["bindAddress"] = json!(SECOND_EDGE_ADDR);
    second.ok("start", Some(params)).await;
    let failed = second.event("tunnelConnectFailed").await;
    assert_eq!(failed["reason"], "duplicateEdge", "{failed}");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains(&first_addr) && message.contains("own edge id"),
        "{message}"
    );
    let retry_in = failed["retryInMs"].as_u64().unwrap();
    assert!(
        (RETRY_AFTER_SECS * 1000..=RETRY_AFTER_SECS * 1500).contains(&retry_in),
        "waits the hub's pause, not the backoff's short start: {failed}"
    );
    let status = second.ok("getStatus", None).await;
    assert_eq!(status["connected"], false, "{status}");
    assert_eq!(status["lastErrorReason"], "duplicateEdge", "{status}");

    let refused = pair.hub.event("edgeDuplicateRefused").await;
    assert_eq!(refused["edgeId"], EDGE_ID);
    assert_eq!(refused["connectedAddr"], first_addr.as_str(), "{refused}");
    assert_ne!(refused["refusedAddr"], first_addr.as_str(), "{refused}");
    assert_eq!(refused["retryAfterSecs"], RETRY_AFTER_SECS, "{refused}");

    // More attempts from other processes (hand-driven hellos with fresh instance ids).
    for _ in 0..3 {
        let reply =
            hand_edge::instance_hello(transport, port, EDGE_ID, EDGE_SECRET, &InstanceId::random())
                .await;
        let reply: Value = serde_json::from_str(&reply.unwrap()).unwrap();
        assert_eq!(reply["error"], "duplicateEdge", "{reply}");
        assert_eq!(reply["connectedFrom"], first_addr.as_str(), "{reply}");
        let refused = pair.hub.event("edgeDuplicateRefused").await;
        assert_eq!(refused["connectedAddr"], first_addr.as_str(), "{refused}");
    }

    // The first edge was never disturbed: the same session, its relay still open.
    echo(&mut relay, b"after").await;
    let status = pair.hub.ok("getStatus", None).await;
    let record = status["edges"]
        .as_array()
        .and_then(|edges| edges.iter().find(|edge| edge["edgeId"] == EDGE_ID));
    let last_error = record
        .and_then(|edge| edge["lastError"].as_str())
        .unwrap_or_default();
    assert!(
        last_error.contains("second process") && last_error.contains(&first_addr),
        "{status}"
    );
    let still = connected_edge(&mut pair.hub).await;
    assert_eq!(still["remoteAddr"], first["remoteAddr"], "{still}");
    assert_eq!(still["connectedAtMs"], first["connectedAtMs"], "{still}");
    assert_eq!(pair.hub.unclaimed("edgeDisconnected"), replaced_before);
    assert_eq!(pair.hub.unclaimed("edgeAuthFailed"), 0);
    let status = pair.edge.ok("getStatus", None).await;
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(pair.edge.unclaimed("tunnelDisconnected"), 0);
    let metrics = scrape(metrics_port).await;
    assert!(duplicate_refusals(&metrics) >= 4, "{metrics}");
    assert!(
        metrics.contains("remoteingress_hub_login_failures_total{reason=\"refused\"} 0"),
        "a duplicate is not a failed login: {metrics}"
    );

    // The first process dies: the second takes over within its pause (plus the hub's heartbeat
    // timeout on QUIC, where a killed process sends no close).
    drop(relay);
    pair.edge.child.start_kill().unwrap();
    pair.edge.wait_exit().await;
    let within = Duration::from_millis(retry_in * 2) + Duration::from_secs(HEARTBEAT_TIMEOUT_SECS);
    second
        .wait_for(|line| line["event"] == "tunnelConnected", within)
        .await;
    let now = connected_edge(&mut pair.hub).await;
    assert_ne!(now["remoteAddr"], first["remoteAddr"], "{now}");
    relays_through_second_edge(&mut second, target.port, b"taken over").await;
}

over_both_transports!(a_restarted_process_replaces_its_killed_predecessor_at_once);

/// A process killed without a goodbye (over QUIC nothing tells the hub) and started again is a
/// new instance while the hub still holds the old tunnel. The hub asks the old tunnel for a PONG
/// and, hearing none, lets the new process in at once rather than after its heartbeat timeout
/// and a retry pause (long here, so that waiting for either would miss the deadline).
async fn a_restarted_process_replaces_its_killed_predecessor_at_once(transport: &str) {
    let target = Target::start(Behaviour::Echo).await;
    let mut pair = Pair::start_configured(
        json!({"listenPorts": [target.port]}),
        json!({"performance": {"heartbeatIntervalSecs": 10, "heartbeatTimeoutSecs": 60}}),
        json!({}),
        transport,
    )
    .await;
    pair.wait_listening(target.port).await;
    let first = connected_edge(&mut pair.hub).await;
    pair.edge.child.start_kill().unwrap();
    pair.edge.wait_exit().await;

    let started = tokio::time::Instant::now();
    let mut again = Managed::spawn().await;
    let mut params = edge_start(pair.tunnel_port, Some(&pair.fingerprint));
    params["config"]["transportMode"] = json!(transport);
    params["config"]["bindAddress"] = json!(SECOND_EDGE_ADDR);
    again.ok("start", Some(params)).await;
    let line = again
        .wait_for(
            |line| line["event"] == "tunnelConnected" || line["event"] == "tunnelConnectFailed",
            common::DEADLINE,
        )
        .await;
    assert_eq!(line["event"], "tunnelConnected", "{line}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "in {:?}, not after the heartbeat timeout",
        started.elapsed()
    );
    let now = connected_edge(&mut pair.hub).await;
    assert_ne!(now["remoteAddr"], first["remoteAddr"], "{now}");
    // The hub shows which process holds the tunnel, as that process names itself.
    let own = again.ok("getStatus", None).await["instanceId"].clone();
    assert!(own.as_str().is_some_and(|id| id.len() == 36), "{own}");
    assert_eq!(now["instanceId"], own, "{now}");
    assert_ne!(now["instanceId"], first["instanceId"], "{now} {first}");
    assert_eq!(pair.hub.unclaimed("edgeDuplicateRefused"), 0);
    relays_through_second_edge(&mut again, target.port, b"back at once").await;
}

/// Once `edge` (on [`SECOND_EDGE_ADDR`]) listens on `port`, one round trip through it.
async fn relays_through_second_edge(edge: &mut Managed, port: u16, payload: &[u8]) {
    common::status_until(edge, "the edge listens", common::DEADLINE, |s| {
        s["listenPorts"]
            .as_array()
            .is_some_and(|ports| ports.iter().any(|p| p == port))
    })
    .await;
    let mut relay = TcpStream::connect((SECOND_EDGE_ADDR, port)).await.unwrap();
    echo(&mut relay, payload).await;
}

/// The hub's one connected edge.
async fn connected_edge(hub: &mut Managed) -> Value {
    let status = hub.ok("getStatus", None).await;
    let edges = status["connectedEdges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{status}");
    edges[0].clone()
}

/// One round trip on an open relay to the echo target.
async fn echo(relay: &mut TcpStream, payload: &[u8]) {
    relay.write_all(payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(common::DEADLINE, relay.read_exact(&mut back))
        .await
        .expect("an echo in time")
        .unwrap();
    assert_eq!(back, payload);
}

/// `remoteingress_hub_duplicate_edge_refusals_total` of the test edge.
fn duplicate_refusals(metrics: &str) -> u64 {
    let series =
        format!("remoteingress_hub_duplicate_edge_refusals_total{{edge_id=\"{EDGE_ID}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no {series}: {metrics}"))
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The hub's `/metrics` text (polled until the listener answers).
async fn scrape(port: u16) -> String {
    common::eventually("/metrics answers", common::DEADLINE, async || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        tokio::time::timeout(common::DEADLINE, stream.read_to_end(&mut response))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        text.starts_with("HTTP/1.1 200").then_some(text)
    })
    .await
}
