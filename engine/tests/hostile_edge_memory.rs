//! What a compromised edge can make the hub hold in memory, measured on the real binary
//! (#23 item 4): a TLS edge pushing data on hundreds of streams to a target that never reads
//! gets no more than the window budget buffered; an edge that stops reading while provoking
//! frames for itself (QUIC: UDP_CLOSEs on the control stream; TLS: aborts of refused streams)
//! is dropped, with a reason, instead of growing the hub's queues.

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::target::{Behaviour, Target};
use common::{edge_start, hand_edge, rss_kib, start_hub, Managed, EDGE_ID, EDGE_SECRET};
use remoteingress::testing::encode_open;
use remoteingress::testing::proxy_protocol::{v1, v2, ProxyHeader, ProxyTransport};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024;

/// Samples `pid`'s RSS (KiB) every 20 ms into `peak` until `stop` is set.
fn watch_rss(pid: i32) -> (Arc<AtomicU64>, Arc<std::sync::atomic::AtomicBool>) {
    let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (p, s) = (peak.clone(), stop.clone());
    tokio::spawn(async move {
        while !s.load(Ordering::Relaxed) {
            p.fetch_max(rss_kib(pid), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (peak, stop)
}

/// The edge floods UDP opens for a port it was not given; the hub answers each with a
/// UDP_CLOSE on the control stream, which the edge never reads. Before: the hub queued them
/// without bound (24 MiB to 1,036 MiB in 40 s). Now its queue is bounded and it drops the
/// tunnel within seconds, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_edge_that_does_not_read_its_control_stream_is_dropped() {
    let _heavy = common::heavy().await;
    let mut hub = Managed::spawn().await;
    let (tunnel_port, _) = start_hub(&mut hub, json!({})).await;
    let allowed = json!({"id": EDGE_ID, "secret": EDGE_SECRET});
    hub.ok("updateAllowedEdges", Some(json!({"edges": [allowed]})))
        .await;
    let (_endpoint, connection, _send, _recv) =
        hand_edge::quic_login_raw(tunnel_port, EDGE_ID, EDGE_SECRET).await;
    hub.event("edgeConnected").await;

    let (peak, stop) = watch_rss(hub.pid());
    let before = rss_kib(hub.pid());
    let client: SocketAddr = "203.0.113.7:5555".parse().unwrap();
    let header = v2::encode(
        &ProxyHeader::new(client, ([127, 0, 0, 2], 9).into()),
        ProxyTransport::Datagram,
    );
    let started = Instant::now();
    let flooding = connection.clone();
    let flood = tokio::spawn(async move {
        let mut sent = 0u32;
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end && flooding.close_reason().is_none() {
            sent += 1;
            let open = encode_open(sent, &header);
            if flooding.send_datagram_wait(open).await.is_err() {
                break;
            }
        }
        sent
    });
    let event = hub
        .wait_for(
            |line| line["event"] == "edgeDisconnected",
            Duration::from_secs(60),
        )
        .await;
    let dropped_after = started.elapsed();
    let sent = flood.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let growth = peak.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!(
        "dropped after {dropped_after:?} and {sent} UDP opens; hub RSS {} MiB before, +{} MiB at \
         the peak; {event}",
        before / MIB,
        growth / MIB
    );
    let reason = event["data"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("does not read"), "{event}");
    assert!(dropped_after < Duration::from_secs(20), "{dropped_after:?}");
    assert!(growth < 48 * MIB, "hub RSS grew by {} MiB", growth / MIB);
}

/// Streams the hand-driven edge opens to the hung target. Not 1,000 (as reported): on
/// loopback the kernel takes up to about 2.6 MiB per stream off the hub (its socket buffer to
/// the target grows whether the target reads or not), and 1,000 of them push the host's TCP
/// memory into pressure, which stalls every socket, the tunnel's too.
const STREAMS: u64 = 300;
/// The hub's `windowBudgetBytes` in that test.
const BUDGET_MIB: u64 = 64;
/// Bytes each stream pushes: its initial window (1 MiB) beyond what the kernel takes.
const PUSH: usize = 5 << 20;

/// A second, real edge for `port`, logged in as `edge-two` over TLS and listening.
async fn real_edge(tunnel_port: u16, fingerprint: &str, port: u16) -> Managed {
    let mut edge = Managed::spawn().await;
    let mut params = edge_start(tunnel_port, Some(fingerprint));
    params["config"]["edgeId"] = json!("edge-two");
    params["config"]["secret"] = json!("edge-two-secret-0123456789");
    params["config"]["transportMode"] = json!("tcpTls");
    edge.ok("start", Some(params)).await;
    edge.event("tunnelConnected").await;
    common::eventually(
        "the real edge listens",
        Duration::from_secs(10),
        async || {
            let status = edge.ok("getStatus", None).await;
            status["listenPorts"]
                .as_array()
                .is_some_and(|ports| ports.iter().any(|p| p == port))
                .then_some(())
        },
    )
    .await;
    edge
}

/// Before: every stream got its 1 MiB initial window buffered whatever the budget said
/// (1,000 streams: 1,600 MiB, as reported; 300 here: +405 MiB). Now the hub resets the streams
/// over their share of the budget: what it holds stays within the budget, and RSS grows by at
/// most twice the budget plus the relay's 64 KiB per stream plus 32 MiB (see the bound); the
/// edge's tunnel stays up and another edge is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_edge_gets_no_more_than_the_window_budget_buffered() {
    let _heavy = common::heavy().await;
    common::raise_own_nofile();
    // A small receive buffer, so that what the hub sends it stays in the hub (as with a target
    // whose buffers are full), not in the kernel.
    let hung = Target::start_with_recv_buffer(Behaviour::Hold, 4096).await;
    let echo = Target::start(Behaviour::Echo).await;
    let mut hub = Managed::spawn().await;
    let performance = json!({"windowBudgetBytes": BUDGET_MIB << 20});
    let (tunnel_port, fingerprint) = start_hub(&mut hub, json!({"performance": performance})).await;
    let edges = json!([
        {"id": EDGE_ID, "secret": EDGE_SECRET, "listenPorts": [hung.port],
         "limits": {"maxStreams": 4096}},
        {"id": "edge-two", "secret": "edge-two-secret-0123456789", "listenPorts": [echo.port]},
    ]);
    hub.ok("updateAllowedEdges", Some(json!({"edges": edges})))
        .await;
    let edge = hand_edge::login("tcpTls", tunnel_port, EDGE_ID, EDGE_SECRET)
        .await
        .expect("login");
    hub.event("edgeConnected").await;

    let (peak, stop) = watch_rss(hub.pid());
    let before = rss_kib(hub.pid());
    let client: SocketAddr = "203.0.113.7:5555".parse().unwrap();
    let line = Bytes::from(v1::encode(&ProxyHeader::new(
        client,
        ([127, 0, 0, 2], hung.port).into(),
    )));
    let data = Bytes::from(vec![b'x'; PUSH]);
    let mut writers = Vec::new();
    for _ in 0..STREAMS {
        let mut stream = edge.tunnel.open_stream(line.clone()).await.unwrap();
        let data = data.clone();
        writers.push(tokio::spawn(async move {
            // Ends when the hub resets the stream, or blocks for want of credit: bounded.
            let push = stream.write_all(&data);
            let outcome = match tokio::time::timeout(Duration::from_secs(15), push).await {
                Ok(Ok(())) => "written",
                Ok(Err(_)) => "reset",
                Err(_) => "blocked",
            };
            (stream, outcome)
        }));
    }
    let started = Instant::now();
    let mut streams = Vec::new();
    let mut outcomes = std::collections::BTreeMap::new();
    for writer in writers {
        let (stream, outcome) = writer.await.unwrap();
        streams.push(stream);
        *outcomes.entry(outcome).or_insert(0) += 1;
    }
    eprintln!("after {:?}: {outcomes:?}", started.elapsed());
    let growth = peak.load(Ordering::Relaxed).saturating_sub(before);
    let status = hub.ok("getStatus", None).await;
    eprintln!(
        "{STREAMS} streams pushing {} KiB each to a hung target, budget {BUDGET_MIB} MiB: hub RSS \
         {} MiB before, +{} MiB at the peak",
        PUSH / 1024,
        before / MIB,
        growth / MIB
    );
    assert!(!edge.tunnel.is_closed(), "the edge's tunnel survives");
    assert_eq!(
        status["connectedEdges"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    // The resets are counted, and what the hub holds stays within the budget.
    let limits = &status["connectedEdges"][0]["limits"];
    assert!(
        limits["windowBudgetResets"].as_u64().unwrap() > 0,
        "{status}"
    );
    assert!(
        limits["heldBytes"].as_u64().unwrap() <= (BUDGET_MIB << 20) + 65_536,
        "{status}"
    );

    // Another edge is still served through the hub.
    let real = real_edge(tunnel_port, &fingerprint, echo.port).await;
    let mut client = tokio::net::TcpStream::connect(("127.0.0.2", echo.port))
        .await
        .unwrap();
    let mut echoed = [0u8; 5];
    let exchange = async {
        client.write_all(b"hello").await?;
        client.read_exact(&mut echoed).await
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("echo within 10 s")
        .unwrap();
    assert_eq!(&echoed, b"hello");
    stop.store(true, Ordering::Relaxed);
    // The bytes held are capped at the budget; the process's RSS also keeps what the allocator
    // has not returned after streams were reset (up to the budget again, measured), and each
    // stalled stream's relay holds one 64 KiB copy buffer outside the mux.
    let bound = (2 * BUDGET_MIB + 32) * MIB + STREAMS * 64;
    assert!(
        growth < bound,
        "hub RSS grew by {} MiB (bound {} MiB)",
        growth / MIB,
        bound / MIB
    );
    assert!(!edge.tunnel.is_closed(), "the edge's tunnel survives");
    drop(streams);
    drop(real);
}

/// A TLS edge that never reads opens streams to a port it was not given, as fast as it can, and
/// forges PONGs so that the heartbeat keeps it: the hub aborts each stream with a CLOSE_BACK that
/// waits in its writer's queue. Before, that queue grew for as long as the edge kept going;
/// now a full queue drops the edge at once, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_edge_that_does_not_read_is_dropped() {
    use remoteingress::testing::{encode, Frame};
    let _heavy = common::heavy().await;
    let mut hub = Managed::spawn().await;
    let (tunnel_port, _) = start_hub(&mut hub, json!({})).await;
    let allowed = json!({"id": EDGE_ID, "secret": EDGE_SECRET});
    hub.ok("updateAllowedEdges", Some(json!({"edges": [allowed]})))
        .await;
    let mut tls = hand_edge::tls_login_raw(tunnel_port, EDGE_ID, EDGE_SECRET).await;
    hub.event("edgeConnected").await;

    let (peak, stop) = watch_rss(hub.pid());
    let before = rss_kib(hub.pid());
    let client: SocketAddr = "203.0.113.7:5555".parse().unwrap();
    let line = v1::encode(&ProxyHeader::new(client, ([127, 0, 0, 2], 9).into()));
    let started = Instant::now();
    let flood = tokio::spawn(async move {
        let mut opened = 0u32;
        let mut batch = bytes::BytesMut::new();
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            batch.clear();
            for _ in 0..256 {
                opened += 1;
                encode(&Frame::open(opened, line.clone()), &mut batch).unwrap();
            }
            // The hub takes any PONG as a sign of life: no need to read its PINGs.
            encode(&Frame::pong_for(&Frame::ping(0)), &mut batch).unwrap();
            if tls.write_all(&batch).await.is_err() {
                break;
            }
        }
        opened
    });
    let disconnected = hub.wait_for(
        |line| line["event"] == "edgeDisconnected",
        Duration::from_secs(40),
    );
    let event = tokio::time::timeout(Duration::from_secs(30), disconnected).await;
    let dropped_after = started.elapsed();
    let growth = peak.load(Ordering::Relaxed).saturating_sub(before);
    let Ok(event) = event else {
        panic!(
            "not dropped within 30 s; hub RSS {} MiB before, +{} MiB at the peak",
            before / MIB,
            growth / MIB
        );
    };
    let opened = flood.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    eprintln!(
        "dropped after {dropped_after:?} and {opened} OPENs; hub RSS {} MiB before, +{} MiB at \
         the peak; {event}",
        before / MIB,
        growth / MIB
    );
    let reason = event["data"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("does not read"), "{event}");
    assert!(dropped_after < Duration::from_secs(20), "{dropped_after:?}");
    assert!(growth < 96 * MIB, "hub RSS grew by {} MiB", growth / MIB);
}
