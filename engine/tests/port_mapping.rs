//! `targetPorts`: a public port forwarded to a different port on the target, TCP and UDP, on
//! both transports. The PROXY header still names the public port; the other ports keep their
//! number; a mapping changed at runtime applies to new connections.

#[macro_use]
mod common;

use common::target::{expected_header, Behaviour, Target};
use common::udp_target::UdpEchoTarget;
use common::{tcp_round_trip, udp_round_trip, Pair, EDGE_ADDR, EDGE_ID, EDGE_SECRET};
use serde_json::json;

over_both_transports!(a_mapped_port_reaches_its_target_port_with_the_public_port_in_the_header,);

/// A port free on 127.0.0.2 (TCP and UDP) for the edge to listen on, other than `not`.
fn free_public_port(not: u16) -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind((EDGE_ADDR, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if port != not && std::net::UdpSocket::bind((EDGE_ADDR, port)).is_ok() {
            return port;
        }
    }
}

async fn a_mapped_port_reaches_its_target_port_with_the_public_port_in_the_header(transport: &str) {
    let target = Target::start(Behaviour::Echo).await;
    let udp_target = UdpEchoTarget::start().await;
    let public = free_public_port(target.port);
    let public_udp = free_public_port(udp_target.port);
    let mut pair = Pair::start_with(
        json!({"listenPorts": [public], "listenPortsUdp": [public_udp],
            "targetPorts": [{"port": public, "targetPort": target.port},
                            {"port": public_udp, "targetPort": udp_target.port}]}),
        json!({}),
        transport,
    )
    .await;
    pair.wait_listening(public).await;

    let (back, client) = tcp_round_trip(public, b"mapped").await;
    assert_eq!(back, b"mapped");
    assert_eq!(
        target.headers(),
        vec![expected_header(client, public)],
        "the header names the public port"
    );

    let answer = udp_round_trip(public_udp, b"ping").await;
    assert_eq!(answer, b"ping");
    let seen = udp_target.headers();
    assert_eq!(
        seen[0].edge.port(),
        public_udp,
        "the UDP header names the public port"
    );

    // Without the mapping the public port's own number is dialled, where nothing listens.
    let unmapped = json!({"id": EDGE_ID, "secret": EDGE_SECRET, "listenPorts": [public]});
    pair.hub
        .ok("updateAllowedEdges", Some(json!({"edges": [unmapped]})))
        .await;
    let (back, _) = tcp_round_trip(public, b"nobody").await;
    assert!(
        back.is_empty(),
        "nothing listens on the public port's number at the target"
    );
    assert_eq!(target.headers().len(), 1);
}
