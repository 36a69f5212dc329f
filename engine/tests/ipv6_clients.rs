//! IPv6 clients are capped per prefix (issue #23 item 5): one customer holds a whole /64 and
//! can use a fresh address per connection, so the edge's per-client caps (TCP connections, UDP
//! sessions) key IPv6 clients on their prefix (`limits.ipv6SourcePrefix`, default 64).
//!
//! The scenario runs in a network namespace of its own (`unshare(CLONE_NEWNET)` on a thread, so
//! the namespace disappears with the thread): there the test puts documentation addresses from
//! two /64s on `lo` and connects from them to the real edge and hub binaries.

#[macro_use]
mod common;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use common::target::{Behaviour, Target};
use common::udp_target::UdpEchoTarget;
use common::Pair;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};

/// Three addresses of one /64 and one of another.
const SAME_64: [&str; 3] = ["2001:db8:a::1", "2001:db8:a::2", "2001:db8:a:0:ffff::3"];
const OTHER_64: &str = "2001:db8:b::1";
/// Where the edge listens.
const EDGE_V6: Ipv6Addr = Ipv6Addr::LOCALHOST;

fn addr(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

/// Connects from `from` to the edge's `port`; `true` when an echo came back through the tunnel,
/// `false` when the edge reset the connection.
async fn tcp_served(from: &str, port: u16) -> (bool, Option<tokio::net::TcpStream>) {
    let socket = TcpSocket::new_v6().expect("socket");
    socket.bind(SocketAddr::new(addr(from), 0)).expect("bind");
    // The reset may reach the socket before connect() returns: that is a refusal too.
    let Ok(mut stream) = socket.connect(SocketAddr::from((EDGE_V6, port))).await else {
        return (false, None);
    };
    let _ = stream.write_all(b"hello").await;
    let mut back = [0u8; 5];
    match tokio::time::timeout(common::DEADLINE, stream.read_exact(&mut back)).await {
        Ok(Ok(_)) if &back == b"hello" => (true, Some(stream)),
        Ok(_) => (false, None),
        Err(_) => panic!("connection from {from} neither served nor reset in time"),
    }
}

/// Opens a UDP flow from `from` and checks its echo.
async fn udp_flow(from: &str, port: u16) -> UdpSocket {
    let socket = UdpSocket::bind(SocketAddr::new(addr(from), 0))
        .await
        .expect("bind");
    socket
        .send_to(b"flow", SocketAddr::from((EDGE_V6, port)))
        .await
        .expect("send");
    let mut buf = [0u8; 16];
    let (len, _) = tokio::time::timeout(common::DEADLINE, socket.recv_from(&mut buf))
        .await
        .expect("UDP echo in time")
        .expect("recv");
    assert_eq!(&buf[..len], b"flow");
    socket
}

async fn one_64_is_one_client() {
    let tcp_target = Target::start(Behaviour::Echo).await;
    let udp_target = UdpEchoTarget::start().await;
    let limits = json!({"maxConnectionsPerSource": 2, "maxUdpSessionsPerSource": 2});
    let fields = json!({"listenPorts": [tcp_target.port], "listenPortsUdp": [udp_target.port],
        "limits": limits});
    let mut pair = Pair::start_configured(
        fields.clone(),
        json!({}),
        json!({"bindAddress": "::1"}),
        "tcpTls",
    )
    .await;
    pair.wait_listening(tcp_target.port).await;
    pair.wait_listening_udp(udp_target.port).await;

    // Two addresses of one /64 fill its two connections; a third address of it is refused,
    // another /64 is served.
    let (served, first) = tcp_served(SAME_64[0], tcp_target.port).await;
    assert!(served, "first connection of the /64 refused");
    let (served, second) = tcp_served(SAME_64[1], tcp_target.port).await;
    assert!(served, "second connection of the /64 refused");
    let (served, _) = tcp_served(SAME_64[2], tcp_target.port).await;
    assert!(
        !served,
        "a third address of the same /64 was served past its cap"
    );
    let (served, _other) = tcp_served(OTHER_64, tcp_target.port).await;
    assert!(served, "another /64 was refused");
    let status = pair.edge.ok("getStatus", None).await;
    assert_eq!(status["limits"]["tcpRefusedPerSource"], 1, "{status}");
    assert_eq!(status["limits"]["ipv6SourcePrefix"], 64, "{status}");

    // UDP: three addresses of one /64 keep two sessions; the other /64 is untouched.
    let mut flows = Vec::new();
    for from in SAME_64 {
        flows.push(udp_flow(from, udp_target.port).await);
    }
    flows.push(udp_flow(OTHER_64, udp_target.port).await);
    common::status_until(
        &mut pair.edge,
        "UDP per-/64 eviction",
        common::DEADLINE,
        |s| s["udpSessions"] == 3 && s["limits"]["udpEvictedPerSource"] == 1,
    )
    .await;

    // The prefix is the hub's to set: with /128 each address is a client of its own.
    let mut exact = fields.clone();
    exact["limits"]["ipv6SourcePrefix"] = json!(128);
    pair.update_test_edge(&exact).await;
    common::status_until(&mut pair.edge, "prefix pushed", common::DEADLINE, |s| {
        s["limits"]["ipv6SourcePrefix"] == 128
    })
    .await;
    let (served, _third) = tcp_served(SAME_64[2], tcp_target.port).await;
    assert!(served, "with /128 a third address was still refused");
    drop((first, second));
}

#[test]
fn ipv6_clients_are_capped_per_64_and_the_prefix_is_configurable() {
    let adds: Vec<String> = SAME_64
        .iter()
        .chain([&OTHER_64])
        .map(|address| format!("-6 addr add {address}/128 dev lo nodad"))
        .collect();
    common::netns::run(&adds, one_64_is_one_client());
}
