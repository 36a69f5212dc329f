//! One compromised edge cannot starve the others (issue #23, item 4), through the real binaries:
//! a hand-driven edge at full tilt takes the hub's whole forwarding and UDP budgets (streams to
//! a target that never reads, a UDP spray), and a second, real edge still gets every TCP
//! connection and UDP session it asks for; QUIC streams that never finish their first line
//! count against `maxStreams`.

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::hand_edge::{self, HandEdge};
use common::target::{Behaviour, Target};
use common::udp_target::UdpEchoTarget;
use common::{edge_start, start_hub, Managed, EDGE_ADDR, EDGE_ID, EDGE_SECRET};
use remoteingress::testing::proxy_protocol::{v1, v2, ProxyHeader, ProxyTransport};
use remoteingress::testing::UdpMessage;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

over_both_transports!(a_hostile_edge_at_full_tilt_leaves_another_edge_its_share);

const HOSTILE: &str = "edge-hostile";
const HOSTILE_SECRET: &str = "hostile-secret-0123456789";
/// The hub's open-file limit: a forwarding budget of 784, 448 of it for UDP sessions.
const HUB_NOFILE: u64 = 1024;
/// Most the hub's resident memory may be while under the attack.
const HUB_RSS_BOUND_MIB: u64 = 256;

fn client_line(port: u16, client: u16) -> Bytes {
    let client: SocketAddr = ([203, 0, 113, 7], client).into();
    Bytes::from(v1::encode(&ProxyHeader::new(
        client,
        ([127, 0, 0, 2], port).into(),
    )))
}

fn udp_open(edge: &HandEdge, session: u32, port: u16) -> bool {
    let client: SocketAddr = ([203, 0, 113, 8], (session % 60_000) as u16 + 1).into();
    let header = v2::encode(
        &ProxyHeader::new(client, ([127, 0, 0, 2], port).into()),
        ProxyTransport::Datagram,
    );
    let open = UdpMessage::Open {
        session,
        header: Bytes::from(header),
    };
    let data = UdpMessage::Data {
        session,
        payload: Bytes::from_static(b"spray"),
    };
    edge.tunnel.send_udp(open).is_ok() && edge.tunnel.send_udp(data).is_ok()
}

/// The hostile edge: UDP sessions and, once `streams_too`, streams to a target that never
/// reads, as many as it can, again and again until `stop`. Returns the number of streams it
/// opened.
async fn full_tilt(
    edge: Arc<HandEdge>,
    hold_port: u16,
    udp_port: u16,
    streams_too: CancellationToken,
    stop: CancellationToken,
) -> u64 {
    let mut session = 0u32;
    let mut opened = 0u64;
    let mut streams = Vec::new();
    while !stop.is_cancelled() {
        for _ in 0..64 {
            session = session.wrapping_add(1);
            udp_open(&edge, session, udp_port);
        }
        if !streams_too.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        for _ in 0..64 {
            let line = client_line(hold_port, (opened % 60_000) as u16 + 1);
            let open =
                tokio::time::timeout(Duration::from_millis(200), edge.tunnel.open_stream(line));
            if let Ok(Ok(mut stream)) = open.await {
                opened += 1;
                let _ = stream.write_all(&[0u8; 1024]).await;
                streams.push(stream);
            }
        }
        tokio::task::yield_now().await;
    }
    opened
}

async fn hub_status(hub: &mut Managed) -> Value {
    hub.ok("getStatus", None).await
}

/// The real edge's TCP echo through `port`, from client number `i`.
async fn tcp_echo(port: u16, i: usize) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect((EDGE_ADDR, port)).await.ok()?;
        let payload = format!("tcp echo {i}");
        stream.write_all(payload.as_bytes()).await.ok()?;
        stream.shutdown().await.ok()?;
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).await.ok()?;
        (echoed == payload.as_bytes()).then_some(())
    };
    tokio::time::timeout(common::DEADLINE, exchange)
        .await
        .ok()
        .flatten()
        .is_some()
}

/// The real edge's UDP echo through `port`, from a new client socket (a new session).
async fn udp_echo(port: u16, i: usize) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let payload = format!("udp echo {i}");
    let edge: SocketAddr = (EDGE_ADDR.parse::<std::net::Ipv4Addr>().unwrap(), port).into();
    let mut buffer = [0u8; 256];
    // A datagram may be dropped while the hub takes a share back: a client would retry too.
    for _ in 0..3 {
        socket.send_to(payload.as_bytes(), edge).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buffer)).await;
        if let Ok(Ok(len)) = reply {
            return &buffer[..len] == payload.as_bytes();
        }
    }
    false
}

async fn a_hostile_edge_at_full_tilt_leaves_another_edge_its_share(transport: &str) {
    let _heavy = common::heavy().await;
    let hold = Target::start(Behaviour::Hold).await;
    let echo = Target::start(Behaviour::Echo).await;
    let udp = UdpEchoTarget::start().await;
    let mut hub = Managed::spawn_with_nofile(HUB_NOFILE).await;
    let (port, fingerprint) = start_hub(&mut hub, json!({})).await;
    let huge = json!({"maxStreams": 100_000, "maxUdpSessions": 100_000});
    hub.ok(
        "updateAllowedEdges",
        Some(json!({"edges": [
            {"id": HOSTILE, "secret": HOSTILE_SECRET, "listenPorts": [hold.port],
             "listenPortsUdp": [udp.port], "limits": huge},
            {"id": EDGE_ID, "secret": EDGE_SECRET, "listenPorts": [echo.port],
             "listenPortsUdp": [udp.port]},
        ]})),
    )
    .await;
    let limits = hub_status(&mut hub).await["limits"].clone();
    let (max_forwarded, max_udp) = (
        limits["maxForwarded"].as_u64().unwrap(),
        limits["maxUdpSessions"].as_u64().unwrap(),
    );

    let hostile = Arc::new(
        hand_edge::login(transport, port, HOSTILE, HOSTILE_SECRET)
            .await
            .expect("the hostile edge logs in"),
    );
    hub.event("edgeConnected").await;
    let (streams_too, stop) = (CancellationToken::new(), CancellationToken::new());
    let attack = tokio::spawn(full_tilt(
        hostile.clone(),
        hold.port,
        udp.port,
        streams_too.clone(),
        stop.clone(),
    ));
    common::status_until(
        &mut hub,
        "the hostile edge holds the UDP budget",
        Duration::from_secs(30),
        |status| status["limits"]["udpSessions"].as_u64() == Some(max_udp),
    )
    .await;
    streams_too.cancel();
    common::status_until(
        &mut hub,
        "the hostile edge holds the forwarding budget",
        Duration::from_secs(30),
        |status| {
            let limits = &status["limits"];
            limits["udpSessions"].as_u64().unwrap() + limits["streams"].as_u64().unwrap()
                >= max_forwarded
        },
    )
    .await;

    // A real edge arrives while the attack goes on.
    let mut edge = Managed::spawn().await;
    edge.ok("start", Some(edge_start(port, Some(&fingerprint))))
        .await;
    edge.event("tunnelConnected").await;
    common::status_until(&mut edge, "the edge listens", common::DEADLINE, |status| {
        status["listenPorts"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
            && status["listenPortsUdp"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
    })
    .await;
    let started = Instant::now();
    let mut tcp_ok = 0;
    let mut udp_ok = 0;
    let mut held = Vec::new();
    for i in 0..10 {
        tcp_ok += usize::from(tcp_echo(echo.port, i).await);
        udp_ok += usize::from(udp_echo(udp.port, i).await);
        // Keep TCP shares in use, as busy clients would.
        if let Ok(stream) = TcpStream::connect((EDGE_ADDR, echo.port)).await {
            held.push(stream);
        }
    }
    let rss_mib = common::rss_kib(hub.pid()) / 1024;
    let status = hub_status(&mut hub).await;
    eprintln!(
        "{transport}: beside a hostile edge at full tilt the second edge got {tcp_ok}/10 TCP and {udp_ok}/10 UDP in {:?}; hub RSS {rss_mib} MiB; limits {}",
        started.elapsed(),
        status["limits"]
    );
    stop.cancel();
    let opened = attack.await.unwrap();
    eprintln!("the hostile edge opened {opened} streams");
    assert_eq!((tcp_ok, udp_ok), (10, 10));
    assert!(
        status["limits"]["sharesReclaimed"].as_u64().unwrap() >= 20,
        "{status}"
    );
    assert!(rss_mib < HUB_RSS_BOUND_MIB, "hub RSS {rss_mib} MiB");
    drop(held);
}

/// (The TLS mux has no such phase: an OPEN carries the whole PROXY line and is admitted at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_streams_without_a_first_line_count_against_max_streams() {
    let transport = "quic";
    const MAX_STREAMS: u64 = 10;
    let _heavy = common::heavy().await;
    let hold = Target::start(Behaviour::Hold).await;
    let mut hub = Managed::spawn().await;
    let (port, _) = start_hub(&mut hub, json!({})).await;
    hub.ok(
        "updateAllowedEdges",
        Some(json!({"edges": [{"id": EDGE_ID, "secret": EDGE_SECRET,
            "listenPorts": [hold.port], "limits": {"maxStreams": MAX_STREAMS}}]})),
    )
    .await;
    let edge = hand_edge::login(transport, port, EDGE_ID, EDGE_SECRET)
        .await
        .unwrap();
    let before = common::rss_kib(hub.pid());
    // Half a PROXY line on each stream, never finished, as many streams as the hub lets open.
    let mut open = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until && open.len() < 2_000 {
        let attempt = tokio::time::timeout(
            Duration::from_millis(300),
            edge.tunnel
                .open_stream(Bytes::from_static(b"PROXY TCP4 203.0.113.7")),
        )
        .await;
        match attempt {
            Ok(Ok(stream)) => open.push(stream),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    // Give the hub a moment to see them (it never answers them).
    let status = common::status_until(&mut hub, "the hub sees the edge", common::DEADLINE, |s| {
        s["connectedEdges"].as_array().is_some_and(|e| e.len() == 1)
    })
    .await;
    let growth_kib = common::rss_kib(hub.pid()).saturating_sub(before);
    eprintln!(
        "{transport}: {} half-open streams opened at maxStreams {MAX_STREAMS}; hub RSS +{growth_kib} KiB",
        open.len()
    );
    let headroom = u64::from(remoteingress::testing::STREAM_LIMIT_HEADROOM);
    assert!(
        open.len() as u64 <= MAX_STREAMS + headroom,
        "{} half-open streams",
        open.len()
    );
    // The edge still works within its cap once the half-open streams are gone.
    drop(open);
    assert_eq!(status["connectedEdges"][0]["edgeId"], EDGE_ID);
    assert!(growth_kib < 16 * 1024, "hub RSS +{growth_kib} KiB");
}
