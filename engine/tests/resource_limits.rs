//! Resource exhaustion (issue #10): a UDP flood from 15,000 source addresses must leave hub and
//! edge memory and file descriptors bounded, with TCP streams and new edge logins working
//! throughout; and 1,100 idle TCP connections from one address under `ulimit -n 1024` must not
//! lock other clients out. Hub and edge run as real binaries with their open-file limit set.

#[macro_use]
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::target::{Behaviour, Target};
use common::udp_target::UdpEchoTarget;
use common::{fd_count, rss_kib, Managed, Pair, EDGE_ADDR, EDGE_ID, EDGE_SECRET};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Distinct client addresses of the UDP flood.
const FLOOD_SOURCES: u32 = 15_000;
/// Most a role's resident memory may grow during the flood.
const MAX_RSS_GROWTH_KIB: u64 = 64 * 1024;
/// The second edge that logs in while the flood runs.
const LATE_EDGE: &str = "edge-late";

/// Source address number `i` of the flood: 127.10.0.1, 127.10.0.2, ... (all on loopback).
fn flood_source(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        10 + (i / 62_500) as u8,
        (i / 250 % 250) as u8,
        (i % 250 + 1) as u8,
    )
}

/// A TCP connection through the edge to the echo target, checked with one round trip.
async fn tcp_echo_connection(port: u16, from: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let mut stream = tokio::time::timeout(
        common::DEADLINE,
        socket.connect(SocketAddr::from((
            EDGE_ADDR.parse::<Ipv4Addr>().unwrap(),
            port,
        ))),
    )
    .await
    .expect("connect to the edge in time")
    .expect("connect to the edge");
    echo(&mut stream, b"hello").await;
    stream
}

/// One echo round trip on an open connection.
async fn echo(stream: &mut TcpStream, data: &[u8]) {
    stream
        .write_all(data)
        .await
        .expect("write through the tunnel");
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(common::DEADLINE, stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(back, data);
}

/// Waits (bounded) until the edge reports UDP `port` as listening.
async fn wait_listening_udp(edge: &mut Managed, port: u16) {
    common::eventually(
        "the edge listens on the UDP port",
        common::DEADLINE,
        async || {
            (edge.ok("getStatus", None).await["listenPortsUdp"] == json!([port])).then_some(())
        },
    )
    .await;
}

/// A second edge ([`LATE_EDGE`]) logs in to the pair's hub over TLS (a descriptor on the hub).
async fn late_login(pair: &Pair, nofile: u64) -> Managed {
    let mut late = Managed::spawn_with_nofile(nofile).await;
    let mut params = common::edge_start(pair.tunnel_port, Some(&pair.fingerprint));
    params["config"]["edgeId"] = json!(LATE_EDGE);
    params["config"]["bindAddress"] = json!("127.0.0.3");
    late.ok("start", Some(params)).await;
    late.event("tunnelConnected").await;
    late
}

/// Peak figures of one role during a flood.
#[derive(Debug, Default, Clone, Copy)]
struct Peak {
    rss_kib: u64,
    fds: usize,
}

impl Peak {
    fn sample(&mut self, pid: i32) {
        self.rss_kib = self.rss_kib.max(rss_kib(pid));
        self.fds = self.fds.max(fd_count(pid));
    }
}

/// Runs the flood scenario with hub and edge at two open-file limits: 16,384 (room for one
/// socket per source, so unbounded sessions show as memory and descriptors) and 1,024 (a
/// common default, where unbounded sessions starve TCP and logins of descriptors).
macro_rules! over_nofile_limits {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nofile_16384_quic() {
                super::$scenario(16_384, "quic").await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nofile_1024_tcp_tls() {
                super::$scenario(1_024, "tcpTls").await;
            }
        }
    };
}

over_nofile_limits!(
    a_udp_flood_from_15000_sources_keeps_hub_and_edge_bounded_with_tcp_and_logins_working
);

async fn a_udp_flood_from_15000_sources_keeps_hub_and_edge_bounded_with_tcp_and_logins_working(
    nofile: u64,
    transport: &str,
) {
    let _heavy = common::heavy().await;
    let nofile = nofile.min(common::raise_own_nofile());
    let udp_target = UdpEchoTarget::start().await;
    let tcp_target = Target::start(Behaviour::Echo).await;

    // Hub and edge, both at `nofile`; a second allowed edge logs in during the flood.
    let edges = json!([
        {"id": EDGE_ID, "secret": EDGE_SECRET,
         "listenPorts": [tcp_target.port], "listenPortsUdp": [udp_target.port]},
        {"id": LATE_EDGE, "secret": EDGE_SECRET},
    ]);
    let mut pair = Pair::start_with_nofile(nofile, edges, json!({}), transport).await;
    pair.wait_listening(tcp_target.port).await;
    wait_listening_udp(&mut pair.edge, udp_target.port).await;

    let (hub_pid, edge_pid) = (pair.hub.pid(), pair.edge.pid());
    let mut open = tcp_echo_connection(tcp_target.port, Ipv4Addr::new(127, 0, 0, 1)).await;
    let (hub_rss0, edge_rss0) = (rss_kib(hub_pid), rss_kib(edge_pid));
    let (hub_fds0, edge_fds0) = (fd_count(hub_pid), fd_count(edge_pid));

    // The flood: one datagram from each source, 3,000 sources a second (paced, not synchronised).
    let edge_udp = SocketAddr::from((EDGE_ADDR.parse::<Ipv4Addr>().unwrap(), udp_target.port));
    let flood = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut sent = 0u32;
        for i in 0..FLOOD_SOURCES {
            if i % 30 == 0 {
                tick.tick().await;
            }
            let socket = std::net::UdpSocket::bind((flood_source(i), 0)).expect("bind a source");
            if socket.send_to(b"flood", edge_udp).is_ok() {
                sent += 1;
            }
        }
        sent
    });

    // Throughout the flood: the open TCP stream echoes, new ones open, and halfway through a
    // second edge logs in.
    let (mut hub_peak, mut edge_peak) = (Peak::default(), Peak::default());
    let mut late_edge = None;
    let mut round = 0u32;
    while !flood.is_finished() {
        round += 1;
        echo(&mut open, format!("during {round}").as_bytes()).await;
        let mut fresh = tcp_echo_connection(tcp_target.port, Ipv4Addr::new(127, 0, 0, 1)).await;
        echo(&mut fresh, b"fresh").await;
        drop(fresh);
        hub_peak.sample(hub_pid);
        edge_peak.sample(edge_pid);
        if late_edge.is_none() && round >= 5 {
            let late = late_login(&pair, nofile).await;
            late_edge = Some(late);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sent = flood.await.unwrap();
    assert_eq!(sent, FLOOD_SOURCES, "every source sent its datagram");
    assert!(
        late_edge.is_some(),
        "a second edge logged in during the flood"
    );

    // After the flood (its sessions live on for the 60 s idle time): once the hub has taken in
    // what the edge sent (its session count holds still), still bounded, still serving.
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut previous = None;
    loop {
        hub_peak.sample(hub_pid);
        edge_peak.sample(edge_pid);
        echo(&mut open, b"after").await;
        let status = pair.hub.ok("getStatus", None).await;
        let sessions = status["connectedEdges"]
            .as_array()
            .and_then(|edges| edges.iter().find(|e| e["edgeId"] == EDGE_ID))
            .map(|e| e["udpSessions"].clone());
        if previous.is_some() && previous == sessions {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "hub sessions never settled"
        );
        previous = sessions;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut fresh = tcp_echo_connection(tcp_target.port, Ipv4Addr::new(127, 0, 0, 1)).await;
    echo(&mut fresh, b"after the flood").await;
    // The same edge id from a new process: the one from the flood goes first (killed, so over
    // QUIC the hub learns it only from its unanswered PING), else the hub would refuse the newcomer
    // as a second instance.
    drop(late_edge);
    let _late = late_login(&pair, nofile).await;

    let edge_status = pair.edge.ok("getStatus", None).await;
    let hub_status = pair.hub.ok("getStatus", None).await;
    eprintln!(
        "UDP flood of {FLOOD_SOURCES} sources over {transport}, nofile {nofile}: \
         hub RSS {} -> {} KiB, fds {hub_fds0} -> {}; edge RSS {} -> {} KiB, fds {edge_fds0} -> {}; \
         edge status {edge_status}; hub status {hub_status}",
        hub_rss0, hub_peak.rss_kib, hub_peak.fds, edge_rss0, edge_peak.rss_kib, edge_peak.fds,
    );
    assert!(
        hub_peak.rss_kib.saturating_sub(hub_rss0) < MAX_RSS_GROWTH_KIB,
        "hub RSS grew from {hub_rss0} to {} KiB",
        hub_peak.rss_kib
    );
    assert!(
        edge_peak.rss_kib.saturating_sub(edge_rss0) < MAX_RSS_GROWTH_KIB,
        "edge RSS grew from {edge_rss0} to {} KiB",
        edge_peak.rss_kib
    );
    // The hub's UDP sessions may use at most half of what the open-file limit leaves.
    let hub_fd_bound = hub_fds0 + (nofile as usize) / 2;
    assert!(
        hub_peak.fds <= hub_fd_bound,
        "hub held {} descriptors (bound {hub_fd_bound})",
        hub_peak.fds
    );
    assert!(
        edge_peak.fds <= edge_fds0 + 64,
        "edge held {} descriptors (from {edge_fds0})",
        edge_peak.fds
    );
}

/// Connections from one address (and their target connections on the hub) cannot take every
/// descriptor of an edge and hub at `ulimit -n 1024`: the edge refuses the surplus with a reset
/// and keeps serving other addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_hundred_idle_connections_from_one_address_under_nofile_1024_leave_others_served() {
    const NOFILE: u64 = 1_024;
    const CONNECTIONS: usize = 1_100;
    let _heavy = common::heavy().await;
    common::raise_own_nofile();
    let target = Target::start(Behaviour::Echo).await;
    let edges = json!([{"id": EDGE_ID, "secret": EDGE_SECRET, "listenPorts": [target.port]}]);
    let mut pair =
        Pair::start_with_nofile(NOFILE, edges, json!({"streamEventMode": "off"}), "tcpTls").await;
    pair.wait_listening(target.port).await;

    // 1,100 idle connections from 127.0.0.5; the surplus is reset by the edge.
    let busy = Ipv4Addr::new(127, 0, 0, 5);
    let edge_addr = SocketAddr::from((EDGE_ADDR.parse::<Ipv4Addr>().unwrap(), target.port));
    let mut held = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((busy, 0))).unwrap();
        if let Ok(Ok(stream)) =
            tokio::time::timeout(common::DEADLINE, socket.connect(edge_addr)).await
        {
            held.push(stream);
        }
    }

    // Another address still gets through, and so does the busy one's first connection.
    let mut other = tcp_echo_connection(target.port, Ipv4Addr::new(127, 0, 0, 6)).await;
    echo(&mut other, b"another client").await;
    echo(&mut held[0], b"first of the busy address").await;

    let status = pair.edge.ok("getStatus", None).await;
    let limits = &status["limits"];
    let per_source = limits["maxConnectionsPerSource"].as_u64().unwrap();
    let refused = limits["tcpRefusedPerSource"].as_u64().unwrap();
    eprintln!(
        "{CONNECTIONS} connections from one address at nofile {NOFILE}: edge fds {}, hub fds {}, \
         edge limits {limits}",
        fd_count(pair.edge.pid()),
        fd_count(pair.hub.pid()),
    );
    assert!(
        per_source < NOFILE / 2,
        "one address may hold at most half of what the fd limit allows: {limits}"
    );
    assert!(
        refused >= CONNECTIONS as u64 - per_source,
        "the surplus was refused and counted: {limits}"
    );
    assert!(status["activeStreams"].as_u64().unwrap() <= per_source + 1);
}

/// Sends one datagram from `socket` and waits for its echo.
async fn udp_echo(socket: &tokio::net::UdpSocket, edge: SocketAddr, data: &[u8]) {
    socket.send_to(data, edge).await.unwrap();
    let mut buf = [0u8; 256];
    let (len, _) = tokio::time::timeout(common::DEADLINE, socket.recv_from(&mut buf))
        .await
        .expect("UDP echo in time")
        .unwrap();
    assert_eq!(&buf[..len], data);
}

async fn udp_client(address: Ipv4Addr) -> tokio::net::UdpSocket {
    tokio::net::UdpSocket::bind((address, 0)).await.unwrap()
}

/// An allowed edge's `limits` are validated with their JSON path, pushed to the edge and applied
/// there at once (and by the hub for UDP); every refusal and eviction is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limits_are_validated_pushed_applied_at_once_and_counted() {
    let udp_target = UdpEchoTarget::start().await;
    let tcp_target = Target::start(Behaviour::Echo).await;
    let limits = json!({"maxConnectionsPerSource": 2, "maxUdpSessions": 8,
        "maxUdpSessionsPerSource": 3, "udpNewSessionsPerSec": 1, "udpNewSessionsBurst": 12});
    let fields = json!({"listenPorts": [tcp_target.port], "listenPortsUdp": [udp_target.port],
        "limits": limits});
    let mut pair = Pair::start_with(fields, json!({}), "tcpTls").await;

    // Bad limits are refused with their path; unknown fields too.
    let bad = |limits: serde_json::Value| json!({"edges": [{"id": EDGE_ID, "secret": EDGE_SECRET, "limits": limits}]});
    let message = pair
        .hub
        .err(
            "updateAllowedEdges",
            Some(bad(
                json!({"maxUdpSessions": 4, "maxUdpSessionsPerSource": 5}),
            )),
            "invalid_config",
        )
        .await;
    assert!(
        message.starts_with("edges[0].limits.maxUdpSessionsPerSource"),
        "{message}"
    );
    let message = pair
        .hub
        .err(
            "updateAllowedEdges",
            Some(bad(json!({"maxUdpSession": 4}))),
            "invalid_params",
        )
        .await;
    assert!(message.contains("edges[0].limits"), "{message}");

    pair.wait_listening(tcp_target.port).await;
    wait_listening_udp(&mut pair.edge, udp_target.port).await;
    let edge_udp = SocketAddr::from((EDGE_ADDR.parse::<Ipv4Addr>().unwrap(), udp_target.port));
    let status = pair.edge.ok("getStatus", None).await;
    assert_eq!(status["limits"]["maxUdpSessions"], 8, "{status}");

    // One address with five flows keeps its three most recent.
    let crowded = Ipv4Addr::new(127, 0, 0, 7);
    let mut crowd = Vec::new();
    for flow in 0..5u8 {
        let socket = udp_client(crowded).await;
        udp_echo(&socket, edge_udp, &[b'c', flow]).await;
        crowd.push(socket);
    }
    common::status_until(
        &mut pair.edge,
        "per-source eviction",
        common::DEADLINE,
        |s| s["udpSessions"] == 3 && s["limits"]["udpEvictedPerSource"] == 2,
    )
    .await;

    // Six more addresses: the table holds eight, the least recently used goes.
    let mut others = Vec::new();
    for i in 0..6u8 {
        let socket = udp_client(Ipv4Addr::new(127, 0, 1, 10 + i)).await;
        udp_echo(&socket, edge_udp, &[b'o', i]).await;
        others.push(socket);
    }
    common::status_until(&mut pair.edge, "capacity eviction", common::DEADLINE, |s| {
        s["udpSessions"] == 8 && s["limits"]["udpEvictedCapacity"] == 1
    })
    .await;

    // The burst (12) is spent: new flows are rate limited, open ones keep working.
    for i in 0..20u8 {
        let socket = std::net::UdpSocket::bind((Ipv4Addr::new(127, 0, 2, 10 + i), 0)).unwrap();
        socket.send_to(b"new", edge_udp).unwrap();
    }
    let status = common::status_until(&mut pair.edge, "rate limit", common::DEADLINE, |s| {
        s["limits"]["udpRateLimited"].as_u64().unwrap_or(0) >= 10
    })
    .await;
    assert!(status["udpSessions"].as_u64().unwrap() <= 8, "{status}");
    udp_echo(&others[5], edge_udp, b"still served").await;

    // Lower limits apply at once, on the edge and on the hub.
    let lower = json!({"edges": [{"id": EDGE_ID, "secret": EDGE_SECRET,
        "listenPorts": [tcp_target.port], "listenPortsUdp": [udp_target.port],
        "limits": {"maxConnectionsPerSource": 2, "maxUdpSessions": 2,
                   "maxUdpSessionsPerSource": 2, "udpNewSessionsPerSec": 1}}]});
    pair.hub.ok("updateAllowedEdges", Some(lower)).await;
    common::status_until(
        &mut pair.edge,
        "lower limits applied",
        common::DEADLINE,
        |s| s["limits"]["maxUdpSessions"] == 2 && s["udpSessions"].as_u64().unwrap_or(9) <= 2,
    )
    .await;
    let hub = pair.hub.ok("getStatus", None).await;
    assert_eq!(
        hub["connectedEdges"][0]["limits"]["maxUdpSessions"], 2,
        "{hub}"
    );

    // Two TCP connections from one address are served, the third is reset and counted.
    let busy = Ipv4Addr::new(127, 0, 0, 8);
    let _first = tcp_echo_connection(tcp_target.port, busy).await;
    let _second = tcp_echo_connection(tcp_target.port, busy).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((busy, 0))).unwrap();
    let edge = SocketAddr::from((EDGE_ADDR.parse::<Ipv4Addr>().unwrap(), tcp_target.port));
    // The reset may reach the socket before connect() returns: that is a refusal too.
    if let Ok(mut third) = socket.connect(edge).await {
        let mut buf = [0u8; 8];
        let _ = third.write_all(b"refused?").await;
        let read = tokio::time::timeout(common::DEADLINE, third.read(&mut buf))
            .await
            .expect("the third connection ends in time");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "third connection was served: {read:?}"
        );
    }
    let _other = tcp_echo_connection(tcp_target.port, Ipv4Addr::new(127, 0, 0, 9)).await;
    let status = pair.edge.ok("getStatus", None).await;
    assert_eq!(status["limits"]["tcpRefusedPerSource"], 1, "{status}");
}
