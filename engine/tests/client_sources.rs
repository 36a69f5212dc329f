//! The hub refuses PROXY source addresses no public client can have (issue #23 item 7): an edge
//! that is not on the hub's host and not `privateClients` may not claim loopback clients or
//! clients at its own address; refusals are counted per edge (`refusedSources`).
//!
//! Runs in a network namespace of its own with documentation addresses on its `lo`, so
//! the edge reaches the hub from a non-loopback address (192.0.2.2 -> 192.0.2.1) as it would
//! over a network; clients connect from loopback, from the edge's own address and from a
//! "public" 192.0.2.3.

#[macro_use]
mod common;

use std::net::{Ipv4Addr, SocketAddr};

use common::target::{Behaviour, Target};
use common::udp_target::UdpEchoTarget;
use common::Pair;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};

const HUB: &str = "192.0.2.1";
const EDGE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const PUBLIC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);

/// Connects from `from` to the edge's `port`; true when an echo came back through the tunnel.
async fn tcp_served(from: Ipv4Addr, port: u16) -> bool {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((from, 0))).expect("bind");
    let Ok(mut stream) = socket.connect(SocketAddr::from((EDGE, port))).await else {
        return false;
    };
    let _ = stream.write_all(b"hello").await;
    let mut back = [0u8; 5];
    match tokio::time::timeout(common::DEADLINE, stream.read_exact(&mut back)).await {
        Ok(Ok(_)) => &back == b"hello",
        Ok(Err(_)) => false,
        Err(_) => panic!("connection from {from} neither served nor reset in time"),
    }
}

async fn refused_sources(pair: &mut Pair, at_least: u64) -> serde_json::Value {
    common::status_until(&mut pair.hub, "refusedSources", common::DEADLINE, |s| {
        s["connectedEdges"][0]["refusedSources"]
            .as_u64()
            .unwrap_or(0)
            >= at_least
    })
    .await
}

async fn scenario() {
    let tcp_target = Target::start(Behaviour::Echo).await;
    let udp_target = UdpEchoTarget::start().await;
    let fields = json!({"listenPorts": [tcp_target.port], "listenPortsUdp": [udp_target.port]});
    let mut pair = Pair::start_configured(
        fields.clone(),
        json!({}),
        json!({"hubHost": HUB, "bindAddress": EDGE.to_string()}),
        "tcpTls",
    )
    .await;
    pair.wait_listening(tcp_target.port).await;
    pair.wait_listening_udp(udp_target.port).await;

    assert!(
        tcp_served(PUBLIC, tcp_target.port).await,
        "a public client was refused"
    );
    assert!(
        !tcp_served(Ipv4Addr::LOCALHOST, tcp_target.port).await,
        "a loopback client was forwarded"
    );
    refused_sources(&mut pair, 1).await;
    assert!(
        !tcp_served(EDGE, tcp_target.port).await,
        "a client at the edge's own address was forwarded"
    );
    refused_sources(&mut pair, 2).await;
    // UDP: the loopback flow's session is refused (no echo), and counted.
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    udp.send_to(b"udp", (EDGE, udp_target.port))
        .await
        .expect("send");
    let status = refused_sources(&mut pair, 3).await;
    assert_eq!(status["connectedEdges"][0]["refusedPorts"], 0, "{status}");
    assert!(
        udp_target.headers().is_empty(),
        "{:?}",
        udp_target.headers()
    );
    assert_eq!(tcp_target.headers().len(), 1, "{:?}", tcp_target.headers());

    // privateClients: the edge serves local clients, loopback is believed.
    let mut private = fields.clone();
    private["privateClients"] = json!(true);
    pair.update_test_edge(&private).await;
    assert!(
        tcp_served(Ipv4Addr::LOCALHOST, tcp_target.port).await,
        "a loopback client of a privateClients edge was refused"
    );
}

#[test]
fn loopback_and_own_address_clients_are_refused_unless_the_edge_serves_local_clients() {
    let setup: Vec<String> = [HUB.parse().unwrap(), EDGE, PUBLIC]
        .iter()
        .map(|address: &Ipv4Addr| format!("addr add {address}/32 dev lo"))
        .collect();
    common::netns::run(&setup, scenario());
}
