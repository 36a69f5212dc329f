//! End-to-end UDP forwarding through a real hub and edge, over both transports: integrity of
//! mixed sizes up to 65,507 bytes, per-session ordering, PROXY v2 headers, idle expiry, floods.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::udp_target::UdpEchoTarget;
use common::{rss_kib, Pair, EDGE_ADDR};
use serde_json::{json, Value};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

over_both_transports!(
    ten_thousand_mixed_datagrams_from_twenty_clients_echo_intact_and_in_order,
    idle_sessions_expire_on_both_sides_and_reopen,
    a_flood_is_survived_with_bounded_memory_and_counted_drops,
);

async fn udp_pair(target: &UdpEchoTarget, hub_config: Value, transport: &str) -> Pair {
    let mut pair = Pair::start_with(
        json!({"listenPortsUdp": [target.port]}),
        hub_config,
        transport,
    )
    .await;
    common::eventually(
        "the edge listens on the UDP port",
        Duration::from_secs(5),
        async || {
            (pair.edge.ok("getStatus", None).await["listenPortsUdp"] == json!([target.port]))
                .then_some(())
        },
    )
    .await;
    pair
}

async fn client_socket() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
    socket
}

/// A datagram of `len` bytes that encodes its sequence number and length, so that a reply can
/// be matched to its request byte for byte.
fn datagram(client: usize, seq: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ seq.wrapping_mul(7) ^ client) as u8)
        .collect()
}

const SMALL: [usize; 6] = [1, 7, 64, 512, 1200, 1400];
const LARGE: [usize; 4] = [4000, 16_384, 40_000, 65_507];

async fn ten_thousand_mixed_datagrams_from_twenty_clients_echo_intact_and_in_order(
    transport: &str,
) {
    let target = UdpEchoTarget::start().await;
    let _pair = udp_pair(&target, json!({}), transport).await;
    // Large datagrams are few at a time, so that kernel socket buffers (rmem_max) never drop
    // them on loopback; small ones go in windows of 8 to check ordering.
    let large_permits = Arc::new(Semaphore::new(4));
    let mut clients = Vec::new();
    for client in 0..20 {
        let large_permits = large_permits.clone();
        let port = target.port;
        clients.push(tokio::spawn(async move {
            let socket = client_socket().await;
            socket.connect((EDGE_ADDR, port)).await.unwrap();
            let mut seq = 0;
            let mut buf = vec![0u8; 70_000];
            while seq < 500 {
                let large = seq % 10 == 9;
                let _permit = if large {
                    Some(large_permits.acquire().await.unwrap())
                } else {
                    None
                };
                let window: Vec<(usize, Vec<u8>)> = if large {
                    vec![(seq, datagram(client, seq, LARGE[(seq / 10) % LARGE.len()]))]
                } else {
                    (seq..(seq + 8).min(500))
                        .take_while(|s| s % 10 != 9)
                        .map(|s| (s, datagram(client, s, SMALL[s % SMALL.len()])))
                        .collect()
                };
                for (_, request) in &window {
                    socket.send(request).await.unwrap();
                }
                for (s, request) in &window {
                    let len = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
                        .await
                        .unwrap_or_else(|_| panic!("client {client}: no reply to datagram {s}"))
                        .unwrap();
                    assert_eq!(
                        &buf[..len],
                        &request[..],
                        "client {client}: reply {s} differs (or is out of order)"
                    );
                }
                seq += window.len();
            }
            socket.local_addr().unwrap()
        }));
    }
    let mut addresses = Vec::new();
    for client in clients {
        addresses.push(
            tokio::time::timeout(Duration::from_secs(180), client)
                .await
                .expect("all clients done within 180 s")
                .unwrap(),
        );
    }
    // One session per client; each header names the client and the edge address it sent to.
    let headers = target.headers();
    let by_client: HashMap<SocketAddr, _> = headers.iter().map(|h| (h.client, h)).collect();
    for address in addresses {
        let header = by_client
            .get(&address)
            .unwrap_or_else(|| panic!("no PROXY header for {address}: {headers:?}"));
        assert_eq!(header.edge, SocketAddr::from(([127, 0, 0, 2], target.port)));
    }
    assert_eq!(
        headers.len(),
        20,
        "one session (one header) per client: {headers:?}"
    );
}

async fn idle_sessions_expire_on_both_sides_and_reopen(transport: &str) {
    let target = UdpEchoTarget::start().await;
    let performance = json!({"udpSessionIdleSecs": 1});
    let mut pair = udp_pair(&target, json!({"performance": performance}), transport).await;
    let socket = client_socket().await;
    socket.connect((EDGE_ADDR, target.port)).await.unwrap();
    let mut buf = [0u8; 64];
    socket.send(b"first").await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..len], b"first");
    assert_eq!(pair.edge.ok("getStatus", None).await["udpSessions"], 1);

    // Both sides drop the session after the idle time.
    common::eventually(
        "sessions expire on both sides",
        common::DEADLINE,
        async || {
            let edge = pair.edge.ok("getStatus", None).await;
            let hub = pair.hub.ok("getStatus", None).await;
            (edge["udpSessions"] == 0 && hub["connectedEdges"][0]["udpSessions"] == 0).then_some(())
        },
    )
    .await;

    // The same client gets a fresh session: a new PROXY header at the target.
    socket.send(b"second").await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..len], b"second");
    let headers = target.headers();
    assert_eq!(headers.len(), 2, "{headers:?}");
    assert_eq!(headers[0].client, headers[1].client);
    assert_ne!(
        headers[0].from, headers[1].from,
        "a new hub-side socket for the new session"
    );
}

async fn a_flood_is_survived_with_bounded_memory_and_counted_drops(transport: &str) {
    let _heavy = common::heavy().await;
    let target = UdpEchoTarget::start().await;
    let mut pair = udp_pair(&target, json!({}), transport).await;
    let (hub_pid, edge_pid) = (pair.hub.pid(), pair.edge.pid());
    let baseline = rss_kib(hub_pid) + rss_kib(edge_pid);
    let socket = client_socket().await;
    socket.connect((EDGE_ADDR, target.port)).await.unwrap();
    let payload = vec![0x5Au8; 512];
    let mut sent = 0u64;
    let flood_deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sent < 200_000 && tokio::time::Instant::now() < flood_deadline {
        if socket.try_send(&payload).is_ok() {
            sent += 1;
        } else {
            socket.writable().await.unwrap();
        }
    }
    // Drain replies for a moment; count them.
    let mut received = 0u64;
    let mut buf = [0u8; 1024];
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf)).await
    {
        received += 1;
    }
    let peak = rss_kib(hub_pid) + rss_kib(edge_pid);
    let edge = pair.edge.ok("getStatus", None).await;
    let hub = pair.hub.ok("getStatus", None).await;
    assert_eq!(edge["connected"], true, "tunnel survived the flood");
    let dropped = edge["udpDropped"].as_u64().unwrap()
        + hub["connectedEdges"][0]["udpDropped"].as_u64().unwrap();
    eprintln!("flood over {transport}: sent {sent}, echoed {received}, counted drops {dropped}, RSS +{} KiB", peak.saturating_sub(baseline));
    assert_eq!(sent, 200_000, "the client sent the whole flood");
    assert!(received > 0, "some datagrams made it through");
    assert!(
        peak.saturating_sub(baseline) < 128 * 1024,
        "edge+hub RSS grew by {} KiB during the flood",
        peak.saturating_sub(baseline)
    );
    // The tunnel still works afterwards.
    socket.send(b"after").await.unwrap();
    let mut got_after = false;
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_millis(50), socket.recv(&mut buf)).await {
            Ok(Ok(len)) if &buf[..len] == b"after" => {
                got_after = true;
                break;
            }
            Ok(_) => {}
            Err(_) => {
                let _ = socket.send(b"after").await;
            }
        }
    }
    assert!(got_after, "datagrams flow after the flood");
}
