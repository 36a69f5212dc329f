//! What a party without a secret can do to the hub's tunnel port (issue #23, items 1-3), through
//! the real binaries: idle or slow connections from many addresses, or from the edge's own
//! address, do not keep an edge from logging in; spoofed QUIC Initials count for nothing and
//! are not amplified; unauthenticated QUIC connections cannot make the hub buffer data.

#[macro_use]
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{edge_start, hand_edge, start_hub_allowing_test_edge, Managed};
use remoteingress::config::PerformanceSettings;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

over_both_transports!(
    idle_and_slow_connections_from_64_addresses_do_not_keep_an_edge_out,
    idle_connections_from_the_edges_own_address_do_not_keep_it_out,
);

/// How long a legitimate edge may take to log in under any of these attacks (issue #23).
const LOGIN_BOUND: Duration = Duration::from_secs(3);

/// What an attacking connection does once connected.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attacker {
    /// Sends nothing.
    Idle,
    /// Finishes the TLS handshake and sends half a hello line.
    Slow,
}

/// Connections held open against the tunnel port, each reopened as soon as the hub drops it.
struct Attack {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    opened: Arc<AtomicU64>,
}

impl Attack {
    /// `per_address` connections of `kind` from each of `addresses`.
    fn start(port: u16, addresses: &[Ipv4Addr], per_address: usize, kind: Attacker) -> Self {
        let stop = CancellationToken::new();
        let opened = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for &address in addresses {
            for _ in 0..per_address {
                let stop = stop.clone();
                let opened = opened.clone();
                tasks.spawn(async move {
                    while !stop.is_cancelled() {
                        hold_one(port, address, kind, &stop, &opened).await;
                    }
                });
            }
        }
        Self {
            stop,
            tasks,
            opened,
        }
    }

    /// Waits (bounded) until `count` connections have been opened.
    async fn opened_at_least(&self, count: u64) {
        let opened = self.opened.clone();
        common::eventually(
            "the attack's connections open",
            common::DEADLINE,
            async || (opened.load(Ordering::Relaxed) >= count).then_some(()),
        )
        .await;
    }

    async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// One attacking connection from `address`, held until the hub drops it or `stop`.
async fn hold_one(
    port: u16,
    address: Ipv4Addr,
    kind: Attacker,
    stop: &CancellationToken,
    opened: &AtomicU64,
) {
    let Ok(socket) = TcpSocket::new_v4() else {
        return;
    };
    if socket.bind(SocketAddr::from((address, 0))).is_err() {
        return;
    }
    let connect = socket.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(2), connect).await else {
        return;
    };
    opened.fetch_add(1, Ordering::Relaxed);
    let mut byte = [0u8; 1];
    if kind == Attacker::Idle {
        tokio::select! {
            () = stop.cancelled() => {}
            _ = stream.read(&mut byte) => {}
        }
        return;
    }
    let config = remoteingress::testing::edge_client_config(None, None).expect("client config");
    let connector = tokio_rustls::TlsConnector::from(config);
    let handshake = connector.connect(remoteingress::testing::server_name("127.0.0.1"), stream);
    let mut tls = tokio::select! {
        () = stop.cancelled() => return,
        tls = handshake => match tls {
            Ok(tls) => tls,
            Err(_) => return,
        },
    };
    if tls.write_all(b"{\"edgeId\":\"edge-test\",").await.is_err() {
        return;
    }
    tokio::select! {
        () = stop.cancelled() => {}
        _ = tls.read(&mut byte) => {}
    }
}

/// `count` loopback addresses of the attackers: 127.20.0.1, 127.20.0.2, ...
fn attacker_addresses(count: u8) -> Vec<Ipv4Addr> {
    (1..=count).map(|i| Ipv4Addr::new(127, 20, 0, i)).collect()
}

/// Starts the real edge over `transport` and returns how long it took to log in.
async fn edge_login_time(port: u16, transport: &str) -> (Managed, Duration) {
    let mut edge = Managed::spawn().await;
    let mut params = edge_start(port, None);
    params["config"]["transportMode"] = json!(transport);
    let started = Instant::now();
    edge.ok("start", Some(params)).await;
    edge.event("tunnelConnected").await;
    (edge, started.elapsed())
}

async fn hub_status(hub: &mut Managed) -> Value {
    hub.ok("getStatus", None).await
}

async fn idle_and_slow_connections_from_64_addresses_do_not_keep_an_edge_out(transport: &str) {
    let _heavy = common::heavy().await;
    common::raise_own_nofile();
    let mut hub = Managed::spawn().await;
    let port = start_hub_allowing_test_edge(&mut hub).await;
    let addresses = attacker_addresses(64);
    // 64 addresses x 20 connections, more than the 1,024 the hub lets be pending, half of them
    // past the TLS handshake; every dropped one is reopened at once.
    let idle = Attack::start(port, &addresses[..32], 20, Attacker::Idle);
    let slow = Attack::start(port, &addresses[32..], 20, Attacker::Slow);
    idle.opened_at_least(640).await;
    slow.opened_at_least(640).await;
    common::status_until(
        &mut hub,
        "the hub's pending handshakes are full",
        common::DEADLINE,
        |status| status["handshakesRefused"].as_u64().unwrap_or(0) >= 100,
    )
    .await;
    let (_edge, elapsed) = edge_login_time(port, transport).await;
    eprintln!("{transport} login under 64 attacking addresses took {elapsed:?}");
    assert!(elapsed < LOGIN_BOUND, "{elapsed:?}");
    let status = hub_status(&mut hub).await;
    assert_eq!(status["connectedEdges"].as_array().unwrap().len(), 1);
    idle.stop().await;
    slow.stop().await;
}

async fn idle_connections_from_the_edges_own_address_do_not_keep_it_out(transport: &str) {
    let _heavy = common::heavy().await;
    let mut hub = Managed::spawn().await;
    let port = start_hub_allowing_test_edge(&mut hub).await;
    // A NAT neighbour of the edge (the same address) holding 16 idle connections, and more.
    let neighbour = Attack::start(port, &[Ipv4Addr::LOCALHOST], 24, Attacker::Idle);
    neighbour.opened_at_least(24).await;
    common::status_until(
        &mut hub,
        "the source's pending handshakes are full",
        common::DEADLINE,
        |status| status["handshakesRefused"].as_u64().unwrap_or(0) >= 8,
    )
    .await;
    let (_edge, elapsed) = edge_login_time(port, transport).await;
    eprintln!("{transport} login beside 24 idle connections from its address took {elapsed:?}");
    assert!(elapsed < LOGIN_BOUND, "{elapsed:?}");
    neighbour.stop().await;
}

/// An idle connection is closed once it has sent no ClientHello for the deadline, and one that
/// makes way for a newer connection is closed at once; neither is an `edgeAuthFailed` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_client_hello_deadline_and_make_way() {
    let mut hub = Managed::spawn().await;
    let port = start_hub_allowing_test_edge(&mut hub).await;
    let connect = || async {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind((Ipv4Addr::new(127, 21, 0, 1), 0).into())
            .unwrap();
        socket
            .connect((Ipv4Addr::LOCALHOST, port).into())
            .await
            .unwrap()
    };
    let started = Instant::now();
    let mut first = connect().await;
    let mut rest = Vec::new();
    for _ in 1..remoteingress::testing::MAX_PENDING_PER_SOURCE {
        rest.push(connect().await);
    }
    // One more from the same address: the oldest idle one makes way.
    let _newest = connect().await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(common::DEADLINE, first.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let status = hub_status(&mut hub).await;
    assert_eq!(status["handshakesRefused"], 1, "{status}");
    // The others are closed once the ClientHello deadline has passed.
    let read = tokio::time::timeout(Duration::from_secs(10), rest[0].read(&mut byte)).await;
    let elapsed = started.elapsed();
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    let deadline = remoteingress::testing::CLIENT_HELLO_DEADLINE;
    assert!(
        elapsed >= deadline && elapsed < deadline + Duration::from_secs(2),
        "{elapsed:?}"
    );
    // No event for connections that never started a handshake.
    assert!(
        hand_edge::login("tcpTls", port, common::EDGE_ID, common::EDGE_SECRET)
            .await
            .is_ok()
    );
    let first = hub
        .wait_for(
            |line| line["event"] == "edgeAuthFailed" || line["event"] == "edgeConnected",
            common::DEADLINE,
        )
        .await;
    assert_eq!(first["event"], "edgeConnected", "{first}");
}

/// A fresh QUIC Initial for the hub at `hub`, as a client's first datagram (1,200 bytes).
fn initial_packet(config: &quinn::ClientConfig, hub: SocketAddr) -> Vec<u8> {
    let mut endpoint = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let (_, mut connection) = endpoint
        .connect(Instant::now(), config.clone(), hub, "localhost")
        .expect("connect");
    let mut packet = Vec::new();
    let _transmit = connection
        .poll_transmit(Instant::now(), 1, &mut packet)
        .expect("an Initial");
    packet
}

fn quic_client_config() -> quinn::ClientConfig {
    let tls = remoteingress::testing::edge_client_config(None, None).unwrap();
    remoteingress::testing::client_config(tls, &PerformanceSettings::default()).unwrap()
}

/// Sends one fresh Initial from each of `sources` and closes the socket at once: the source
/// cannot answer (spoofed).
async fn spoof_initials(config: &quinn::ClientConfig, hub: SocketAddr, sources: &[Ipv4Addr]) {
    for &source in sources {
        let Ok(socket) = UdpSocket::bind((source, 0)).await else {
            continue;
        };
        let _ = socket.send_to(&initial_packet(config, hub), hub).await;
    }
}

/// `count` spoofed source addresses: 127.30.0.1, ...
fn spoofed_sources(count: u32) -> Vec<Ipv4Addr> {
    (0..count)
        .map(|i| Ipv4Addr::new(127, 30 + (i / 250) as u8, 0, (i % 250 + 1) as u8))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_quic_initials_count_for_nothing_and_are_not_amplified() {
    let _heavy = common::heavy().await;
    common::raise_own_nofile();
    let mut hub = Managed::spawn().await;
    let port = start_hub_allowing_test_edge(&mut hub).await;
    let hub_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let config = quic_client_config();

    // Amplification: 50 sources that do read what comes back, one Initial each.
    let mut listeners = Vec::new();
    let mut sent = 0usize;
    for source in spoofed_sources(50) {
        let socket = UdpSocket::bind((source, 0)).await.unwrap();
        let packet = initial_packet(&config, hub_addr);
        sent += socket.send_to(&packet, hub_addr).await.unwrap();
        listeners.push(socket);
    }
    let mut received = 0usize;
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut buffer = vec![0u8; 65_536];
    for socket in &listeners {
        while let Ok(Ok(n)) = tokio::time::timeout_at(until, socket.recv(&mut buffer)).await {
            received += n;
        }
    }
    drop(listeners);
    let ratio = received as f64 / sent as f64;
    eprintln!("{sent} bytes of Initials drew {received} bytes ({ratio:.2}x)");
    assert!(ratio <= 3.0, "amplified {ratio:.2}x");

    // The flood: 1,100 sources every 4 s, and 16 from the edge's own address every 0.5 s.
    let stop = CancellationToken::new();
    let flood = {
        let stop = stop.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let sources = spoofed_sources(1_100);
            let own = vec![Ipv4Addr::LOCALHOST; 16];
            let mut round = 0u32;
            while !stop.is_cancelled() {
                if round.is_multiple_of(8) {
                    spoof_initials(&config, hub_addr, &sources).await;
                }
                spoof_initials(&config, hub_addr, &own).await;
                round += 1;
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        })
    };
    // Let two rounds of the flood land before the edges try.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for transport in ["quic", "tcpTls"] {
        let (mut edge, elapsed) = edge_login_time(port, transport).await;
        eprintln!("{transport} login under a spoofed Initial flood took {elapsed:?}");
        assert!(elapsed < LOGIN_BOUND, "{transport}: {elapsed:?}");
        edge.close_stdin_and_wait().await;
    }
    stop.cancel();
    flood.await.unwrap();
    let status = hub_status(&mut hub).await;
    assert_eq!(status["handshakesRefused"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_quic_connections_cannot_make_the_hub_buffer() {
    let _heavy = common::heavy().await;
    let mut hub = Managed::spawn().await;
    let port = start_hub_allowing_test_edge(&mut hub).await;
    let hub_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let pid = hub.pid();
    // Settle the hub's allocator with one full login first.
    let edge = hand_edge::login("quic", port, common::EDGE_ID, common::EDGE_SECRET)
        .await
        .unwrap();
    drop(edge);
    let before = common::rss_kib(pid);
    let config = quic_client_config();
    let pushed = Arc::new(AtomicU64::new(0));
    let mut clients = JoinSet::new();
    for i in 0..100u8 {
        let config = config.clone();
        let pushed = pushed.clone();
        clients.spawn(async move {
            let bind = SocketAddr::from((Ipv4Addr::new(127, 40, 0, i + 1), 0));
            let endpoint = quinn::Endpoint::client(bind).unwrap();
            let Ok(connection) = endpoint
                .connect_with(config, hub_addr, "localhost")
                .unwrap()
                .await
            else {
                return;
            };
            // Datagrams, a second stream, and a hello that never ends.
            let junk = bytes::Bytes::from(vec![b'x'; 1_000]);
            for _ in 0..2_000 {
                if connection.send_datagram(junk.clone()).is_err() {
                    break;
                }
            }
            let extra = connection.clone();
            let pushed_extra = pushed.clone();
            let second = tokio::spawn(async move {
                if let Ok((mut send, _recv)) = extra.open_bi().await {
                    while send.write_all(&[b'y'; 4_096]).await.is_ok() {
                        pushed_extra.fetch_add(4_096, Ordering::Relaxed);
                    }
                }
            });
            if let Ok((mut send, _recv)) = connection.open_bi().await {
                while send.write_all(&[b'z'; 4_096]).await.is_ok() {
                    pushed.fetch_add(4_096, Ordering::Relaxed);
                }
            }
            second.abort();
            drop(endpoint);
        });
    }
    // Peak RSS while they push, for 8 s (the handshake deadline ends them after 10 s).
    let mut peak = before;
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        peak = peak.max(common::rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "100 unauthenticated QUIC connections pushed {} KiB (accepted by flow control); hub RSS {} -> {} KiB (+{growth_mib} MiB)",
        pushed.load(Ordering::Relaxed) / 1024,
        before,
        peak
    );
    assert!(growth_mib < 32, "hub RSS grew {growth_mib} MiB");
    clients.abort_all();
    while clients.join_next().await.is_some() {}
    // The hub still logs an edge in.
    assert!(
        hand_edge::login("quic", port, common::EDGE_ID, common::EDGE_SECRET)
            .await
            .is_ok()
    );
}
