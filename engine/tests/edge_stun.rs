//! Public IP discovery against a local STUN responder (no traffic leaves loopback): the edge's
//! event and status, and the hub's connected-edge entry, show the mapped address.

mod common;

use std::time::Duration;

use common::{edge_start, start_hub, Managed, EDGE_ID, EDGE_SECRET};
use serde_json::json;

/// Answers every Binding request with a fixed documentation address, so the test proves the
/// edge used the responder's answer and not its own socket address.
async fn stun_responder(mapped: &str) -> (String, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap().to_string();
    let mapped = mapped.parse().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                break;
            };
            if len < 20 {
                continue;
            }
            let mut transaction = [0u8; 12];
            transaction.copy_from_slice(&buf[8..20]);
            let reply = remoteingress::testing::encode_success(&transaction, mapped);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    (address, task)
}

async fn public_ip_is_discovered_and_reported(transport: &str) {
    let (stun, responder) = stun_responder("203.0.113.7:40000").await;
    let mut hub = Managed::spawn().await;
    let (port, fingerprint) = start_hub(&mut hub, json!({})).await;
    hub.ok(
        "updateAllowedEdges",
        Some(json!({"edges": [{"id": EDGE_ID, "secret": EDGE_SECRET, "stunIntervalSecs": 10}]})),
    )
    .await;
    let mut edge = Managed::spawn().await;
    let mut params = edge_start(port, Some(&fingerprint));
    params["config"]["transportMode"] = json!(transport);
    params["config"]["stunServers"] = json!(["127.0.0.1:1", stun]);
    edge.ok("start", Some(params)).await;
    let event = edge.event("publicIpDiscovered").await;
    assert_eq!(event["ip"], "203.0.113.7");
    assert_eq!(edge.ok("getStatus", None).await["publicIp"], "203.0.113.7");
    common::eventually(
        "the hub's connected-edge entry shows the public IP",
        Duration::from_secs(5),
        async || {
            let status = hub.ok("getStatus", None).await;
            (status["connectedEdges"][0]["publicIp"] == "203.0.113.7").then_some(())
        },
    )
    .await;
    responder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ip_over_tls() {
    public_ip_is_discovered_and_reported("tcpTls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ip_over_quic() {
    public_ip_is_discovered_and_reported("quic").await;
}
