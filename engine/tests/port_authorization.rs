//! What the hub grants an edge, enforced by the hub whatever the edge does: it is forwarded only
//! to the ports it is assigned *now*, and only to as many streams at once as its cap allows.
//! A hand-driven edge (real login) forges OPENs and UDP opens for a port it was not given — a
//! stand-in for an admin service or a database on the target host — on both transports, and
//! again after the hub removes its ports at runtime; and it opens more streams than it may.

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::hand_edge::{self, HandEdge};
use common::target::{Behaviour, Target};
use common::udp_target::UdpEchoTarget;
use common::{start_hub, Managed, EDGE_ID, EDGE_SECRET};
use remoteingress::testing::proxy_protocol::{v1, v2, ProxyHeader, ProxyTransport};
use remoteingress::testing::TunnelStream;
use remoteingress::testing::UdpMessage;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

over_both_transports!(
    an_edge_reaches_only_the_ports_it_is_assigned_now,
    an_edge_gets_no_more_streams_than_its_cap,
);

const CLIENT: &str = "203.0.113.7:5555";

/// Opens a stream as if a client had connected to `port`, sends `payload`, returns what came
/// back before the stream ended (nothing when the hub refused it).
async fn echo_over(edge: &HandEdge, port: u16, payload: &[u8]) -> Vec<u8> {
    let client: SocketAddr = CLIENT.parse().unwrap();
    let line = v1::encode(&ProxyHeader::new(client, ([127, 0, 0, 2], port).into()));
    let Ok(mut stream) = edge.tunnel.open_stream(Bytes::from(line)).await else {
        return Vec::new();
    };
    let mut echoed = Vec::new();
    let exchange = async {
        stream.write_all(payload).await?;
        stream.shutdown().await?;
        stream.read_to_end(&mut echoed).await
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), exchange).await;
    echoed
}

/// Opens UDP session `session` towards `port` and sends one datagram.
fn udp_open_and_send(edge: &HandEdge, session: u32, port: u16, payload: &'static [u8]) {
    let client: SocketAddr = CLIENT.parse().unwrap();
    let header = v2::encode(
        &ProxyHeader::new(client, ([127, 0, 0, 2], port).into()),
        ProxyTransport::Datagram,
    );
    let open = UdpMessage::Open {
        session,
        header: Bytes::from(header),
    };
    edge.tunnel.send_udp(open).unwrap();
    let data = UdpMessage::Data {
        session,
        payload: Bytes::from_static(payload),
    };
    edge.tunnel.send_udp(data).unwrap();
}

/// Waits for the hub's answer to `session`: `Some(payload)` for a reply, `None` for a close.
async fn udp_answer(edge: &mut HandEdge, session: u32) -> Option<Bytes> {
    let wait = async {
        loop {
            match edge.incoming.datagrams.recv().await {
                Some(UdpMessage::Data {
                    session: s,
                    payload,
                }) if s == session => return Some(payload),
                Some(UdpMessage::Close { session: s }) if s == session => return None,
                Some(_) => continue,
                None => panic!("tunnel closed"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the hub answers a UDP session with data or a close")
}

/// Waits (bounded) until the hub's status counts `expected` refusals for the edge.
async fn wait_refused(hub: &mut Managed, expected: u64) {
    let what = format!("refusedPorts reaches {expected}");
    common::eventually(&what, Duration::from_secs(5), async || {
        let status = hub.ok("getStatus", None).await;
        (status["connectedEdges"][0]["refusedPorts"].as_u64() == Some(expected)).then_some(())
    })
    .await;
}

async fn an_edge_reaches_only_the_ports_it_is_assigned_now(transport: &str) {
    let assigned = Target::start(Behaviour::Echo).await;
    let internal = Target::start(Behaviour::Echo).await;
    let udp_assigned = UdpEchoTarget::start().await;
    let udp_internal = UdpEchoTarget::start().await;
    let mut hub = Managed::spawn().await;
    let (tunnel_port, _) = start_hub(&mut hub, json!({})).await;
    let allowed = json!({"id": EDGE_ID, "secret": EDGE_SECRET,
        "listenPorts": [assigned.port], "listenPortsUdp": [udp_assigned.port]});
    hub.ok("updateAllowedEdges", Some(json!({"edges": [allowed]})))
        .await;
    let mut edge = hand_edge::login(transport, tunnel_port, EDGE_ID, EDGE_SECRET)
        .await
        .expect("login");
    hub.event("edgeConnected").await;

    // The assigned ports work; the others are refused and never reached.
    assert_eq!(echo_over(&edge, assigned.port, b"hello").await, b"hello");
    assert_eq!(echo_over(&edge, internal.port, b"steal").await, b"");
    assert!(internal.headers().is_empty(), "internal service reached");
    udp_open_and_send(&edge, 1, udp_assigned.port, b"ping");
    assert_eq!(
        udp_answer(&mut edge, 1).await.as_deref(),
        Some(&b"ping"[..])
    );
    udp_open_and_send(&edge, 2, udp_internal.port, b"steal");
    assert_eq!(udp_answer(&mut edge, 2).await, None);
    assert!(udp_internal.headers().is_empty(), "internal UDP reached");
    wait_refused(&mut hub, 2).await;

    // Ports removed at runtime are refused for new streams and sessions at once.
    let removed = json!({"id": EDGE_ID, "secret": EDGE_SECRET});
    hub.ok("updateAllowedEdges", Some(json!({"edges": [removed]})))
        .await;
    assert_eq!(echo_over(&edge, assigned.port, b"again").await, b"");
    udp_open_and_send(&edge, 3, udp_assigned.port, b"again");
    assert_eq!(udp_answer(&mut edge, 3).await, None);
    assert_eq!(
        assigned.headers().len(),
        1,
        "only the first stream was forwarded"
    );
    wait_refused(&mut hub, 4).await;
}

/// Opens a stream to `port` and sends `payload` without closing: an idle client.
/// The write may fail when the hub has already refused the stream (QUIC delivers
/// its STOP_SENDING before our write); `read_echo` then sees the refusal.
async fn open_idle(edge: &HandEdge, port: u16, payload: &[u8]) -> TunnelStream {
    let client: SocketAddr = CLIENT.parse().unwrap();
    let line = v1::encode(&ProxyHeader::new(client, ([127, 0, 0, 2], port).into()));
    let mut stream = edge.tunnel.open_stream(Bytes::from(line)).await.unwrap();
    let _ = stream.write_all(payload).await;
    stream
}

/// Reads `expected` back, or fails; `None` when the stream ended first (refused).
async fn read_echo(stream: &mut TunnelStream, expected: &[u8]) -> Option<()> {
    let mut buf = vec![0u8; expected.len()];
    match tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) if buf == expected => Some(()),
        Ok(_) => None,
        Err(_) => panic!("neither echoed nor refused"),
    }
}

async fn an_edge_gets_no_more_streams_than_its_cap(transport: &str) {
    let target = Target::start(Behaviour::Echo).await;
    let mut hub = Managed::spawn().await;
    let (tunnel_port, _) = start_hub(&mut hub, json!({})).await;
    let allowed = json!({"id": EDGE_ID, "secret": EDGE_SECRET,
        "listenPorts": [target.port], "limits": {"maxStreams": 2}});
    hub.ok("updateAllowedEdges", Some(json!({"edges": [allowed]})))
        .await;
    let edge = hand_edge::login(transport, tunnel_port, EDGE_ID, EDGE_SECRET)
        .await
        .expect("login");
    hub.event("edgeConnected").await;

    let mut first = open_idle(&edge, target.port, b"one").await;
    let mut second = open_idle(&edge, target.port, b"two").await;
    assert_eq!(read_echo(&mut first, b"one").await, Some(()));
    assert_eq!(read_echo(&mut second, b"two").await, Some(()));
    let mut third = open_idle(&edge, target.port, b"three").await;
    assert_eq!(read_echo(&mut third, b"three").await, None, "over the cap");
    let status = hub.ok("getStatus", None).await;
    let limits = &status["connectedEdges"][0]["limits"];
    assert_eq!(limits["maxStreams"], 2, "{status}");
    assert_eq!(limits["streamsRefused"], 1, "{status}");
    assert!(
        status["limits"]["maxForwarded"].as_u64().unwrap() > 0,
        "{status}"
    );

    // A finished stream gives its share back.
    first.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), first.read_to_end(&mut rest)).await;
    drop(first);
    common::eventually("the share comes back", common::DEADLINE, async || {
        let mut again = open_idle(&edge, target.port, b"four").await;
        read_echo(&mut again, b"four").await
    })
    .await;
}
