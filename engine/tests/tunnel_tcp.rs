//! End-to-end TCP forwarding through a real hub and a real edge (`remoteingress-bin
//! --management` each), over TLS on loopback: integrity, PROXY headers, half-close,
//! backpressure, config pushes, reconnect.

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::target::{expected_header, Behaviour, Target};
use common::{eventually, rss_kib, Pair, EDGE_ADDR};
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

over_both_transports!(
    two_hundred_concurrent_connections_echo_one_mib_each_intact,
    half_closed_client_still_gets_the_whole_response,
    slow_target_pushes_back_and_memory_stays_bounded,
    a_target_that_never_reads_stalls_only_its_own_client,
    the_hubs_windows_bound_what_the_edge_holds_for_a_client_that_never_reads,
    ports_added_at_runtime_serve_and_removed_ports_refuse_while_open_ones_finish,
    status_and_stream_events_report_the_traffic,
    summary_mode_emits_stream_summaries_instead_of_per_stream_events,
    v2_proxy_protocol_is_written_when_configured
);

/// Writes 64 KiB chunks to `socket` until none is taken for a second (the pipe to a `peer` that
/// never reads is full, and the connection is not reset); returns the bytes taken.
async fn write_until_stalled(socket: &mut TcpStream, peer: &str) -> usize {
    let chunk = vec![0x5Au8; 64 * 1024];
    let mut sent = 0usize;
    while let Ok(written) =
        tokio::time::timeout(Duration::from_secs(1), socket.write_all(&chunk)).await
    {
        written.unwrap_or_else(|e| panic!("the stream to {peer} was reset: {e}"));
        sent += chunk.len();
        assert!(sent < 1 << 30, "{peer} was sent 1 GiB");
    }
    sent
}

async fn connect_edge(port: u16) -> TcpStream {
    TcpStream::connect((EDGE_ADDR, port))
        .await
        .expect("connect to the edge")
}

/// Sends `data`, half-closes, reads everything back; returns the echo.
async fn echo_round_trip(port: u16, data: Vec<u8>) -> (SocketAddr, Vec<u8>) {
    let socket = connect_edge(port).await;
    let local = socket.local_addr().unwrap();
    let (mut read, mut write) = socket.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(&data).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    read.read_to_end(&mut echoed).await.unwrap();
    writer.await.unwrap();
    (local, echoed)
}

async fn two_hundred_concurrent_connections_echo_one_mib_each_intact(transport: &str) {
    let _heavy = common::heavy().await;
    let target = Target::start(Behaviour::Echo).await;
    let _pair = Pair::start(&[target.port], json!({}), transport).await;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let port = target.port;
        tasks.push(tokio::spawn(async move {
            let mut data = vec![0u8; 1 << 20];
            rand::rng().fill_bytes(&mut data);
            let sent = Sha256::digest(&data);
            let (local, echoed) = echo_round_trip(port, data).await;
            assert_eq!(echoed.len(), 1 << 20);
            assert_eq!(Sha256::digest(&echoed), sent, "echo differs");
            local
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(
            tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .expect("all echoes within 120 s")
                .unwrap(),
        );
    }
    let headers = target.headers();
    assert_eq!(headers.len(), 200);
    for client in clients {
        let expected = expected_header(client, target.port);
        assert!(headers.contains(&expected), "no header {expected:?}");
    }
}

async fn half_closed_client_still_gets_the_whole_response(transport: &str) {
    let target = Target::start(Behaviour::Respond { len: 3 << 20 }).await;
    let _pair = Pair::start(&[target.port], json!({}), transport).await;
    let (_, response) = echo_round_trip(target.port, b"GET /big HTTP/1.0\r\n\r\n".to_vec()).await;
    assert_eq!(response.len(), 3 << 20);
    assert!(response.iter().all(|&b| b == b'z'));
}

async fn slow_target_pushes_back_and_memory_stays_bounded(transport: &str) {
    let _heavy = common::heavy().await;
    const TOTAL: usize = 256 << 20;
    // 256 KiB per 10 ms: about 25 MB/s, far slower than the client can send.
    let target = Target::start(Behaviour::SlowSink {
        bytes_per_tick: 256 * 1024,
    })
    .await;
    let pair = Pair::start(&[target.port], json!({}), transport).await;
    let (hub_pid, edge_pid) = (pair.hub.pid(), pair.edge.pid());
    let baseline = rss_kib(hub_pid) + rss_kib(edge_pid);

    let socket = connect_edge(target.port).await;
    let (mut read, mut write) = socket.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![0xA5u8; 1 << 20];
        for _ in 0..(TOTAL >> 20) {
            write.write_all(&chunk).await.unwrap();
        }
        write.shutdown().await.unwrap();
    });
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let sampled = peak.clone();
    let sampler = tokio::spawn(async move {
        loop {
            let now = rss_kib(hub_pid) + rss_kib(edge_pid);
            sampled.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(240), read.read_to_string(&mut reply))
        .await
        .expect("slow transfer finishes")
        .unwrap();
    writer.await.unwrap();
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        reply.trim(),
        TOTAL.to_string(),
        "every byte reached the target"
    );
    // Windows are 4 MiB per stream; allow generous slack for buffers and the allocator.
    let grown_kib = peak.saturating_sub(baseline);
    assert!(
        grown_kib < 64 * 1024,
        "edge+hub RSS grew by {grown_kib} KiB while moving 256 MiB to a slow target"
    );
}

/// A target that accepts and never reads: the client's writes stop after a bounded amount
/// (backpressure reaches it through edge, tunnel and hub), edge and hub memory stay bounded, and
/// another stream on the same tunnel keeps flowing.
async fn a_target_that_never_reads_stalls_only_its_own_client(transport: &str) {
    let _heavy = common::heavy().await;
    let stuck = Target::start(Behaviour::Hold).await;
    let echo = Target::start(Behaviour::Echo).await;
    let pair = Pair::start(&[stuck.port, echo.port], json!({}), transport).await;
    let (hub_pid, edge_pid) = (pair.hub.pid(), pair.edge.pid());
    let baseline = rss_kib(hub_pid) + rss_kib(edge_pid);

    let mut socket = connect_edge(stuck.port).await;
    let sent = write_until_stalled(&mut socket, "a target that never reads").await;
    let grown_kib = (rss_kib(hub_pid) + rss_kib(edge_pid)).saturating_sub(baseline);
    // Kernel socket buffers on four sockets (a few MiB each on loopback) plus one stream window.
    assert!(
        sent < 96 << 20,
        "{sent} bytes taken before the writes stalled"
    );
    assert!(
        grown_kib < 48 * 1024,
        "edge+hub RSS grew by {grown_kib} KiB holding a stalled stream"
    );
    let (_, echoed) = echo_round_trip(echo.port, vec![7u8; 1 << 20]).await;
    assert_eq!(
        echoed,
        vec![7u8; 1 << 20],
        "the other stream is not held up"
    );
    eprintln!(
        "{transport}: writes stalled after {} KiB; edge+hub RSS +{grown_kib} KiB",
        sent / 1024
    );
}

/// Bytes queued in the kernel on the IPv4 TCP sockets with `port` at either end (send and
/// receive queues of established sockets, from /proc/net/tcp): on loopback that is the target's,
/// the hub's towards it, the edge's public one and the client's.
fn kernel_queued(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state, queues) = (fields[1], fields[2], fields[3], fields[4]);
            let ours = local.ends_with(&port) || remote.ends_with(&port);
            (ours && state != "0A").then(|| {
                let (tx, rx) = queues.split_once(':').unwrap();
                usize::from_str_radix(tx, 16).unwrap() + usize::from_str_radix(rx, 16).unwrap()
            })
        })
        .sum()
}

/// Bytes of a download the hub and the edge hold (in their buffers and the tunnel) for a client
/// that never reads, for a hub started with `hub_config`: the target writes 64 KiB chunks until
/// none is taken for a second, and what the kernel queues on the target's, the hub's, the edge's
/// public and the client's sockets is taken off. The edge's receive window for the stream is
/// what bounds it (it carries the downloads).
async fn held_for_a_client_that_never_reads(
    hub_config: serde_json::Value,
    transport: &str,
) -> usize {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut pair = Pair::start(&[port], hub_config, transport).await;
    pair.wait_listening(port).await;
    let _client = connect_edge(port).await;
    let (mut accepted, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let sent = write_until_stalled(&mut accepted, "a client that never reads").await;
    sent.saturating_sub(kernel_queued(port))
}

/// The hub's `performance` settings reach the edge (pushed at connect): its status shows them,
/// and its download windows follow them: a stalled download is held to about 256 KiB instead of
/// the default 4 MiB start window (the edge ignored the push before and held 4 MiB).
async fn the_hubs_windows_bound_what_the_edge_holds_for_a_client_that_never_reads(transport: &str) {
    let _heavy = common::heavy().await;
    let small = json!({"performance": {
        "streamWindowMaxBytes": 262144,
        "streamWindowMinBytes": 65536,
        "heartbeatTimeoutSecs": 12
    }});
    let with_defaults = held_for_a_client_that_never_reads(json!({}), transport).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut pair = Pair::start(&[port], small.clone(), transport).await;
    let status = pair.edge.ok("getStatus", None).await;
    for (field, value) in small["performance"].as_object().unwrap() {
        assert_eq!(&status["performance"][field], value, "{field}: {status}");
    }
    drop(pair);
    let with_small_windows = held_for_a_client_that_never_reads(small, transport).await;
    eprintln!(
        "{transport}: a stalled download held {} KiB with the default windows, {} KiB with \
         256 KiB windows",
        with_defaults / 1024,
        with_small_windows / 1024
    );
    assert!(
        with_defaults > 3 << 20,
        "{with_defaults} bytes held with the default 4 MiB start window"
    );
    assert!(
        with_small_windows < 1 << 20,
        "the edge did not follow the hub's 256 KiB windows: {with_small_windows} bytes held"
    );
}

async fn ports_added_at_runtime_serve_and_removed_ports_refuse_while_open_ones_finish(
    transport: &str,
) {
    let first = Target::start(Behaviour::Echo).await;
    let second = Target::start(Behaviour::Echo).await;
    let mut pair = Pair::start(&[first.port], json!({}), transport).await;

    let started = std::time::Instant::now();
    pair.hub
        .ok(
            "updateAllowedEdges",
            Some(
                json!({"edges": [{"id": common::EDGE_ID, "secret": common::EDGE_SECRET,
                "listenPorts": [first.port, second.port]}]}),
            ),
        )
        .await;
    let updated = pair.edge.event("portsUpdated").await;
    let mut expected = vec![first.port, second.port];
    expected.sort_unstable();
    assert_eq!(updated["listenPorts"], json!(expected));
    let (_, echoed) = echo_round_trip(second.port, b"hello".to_vec()).await;
    assert_eq!(echoed, b"hello");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "new port served within 1 s"
    );

    // Open a connection on the first port, then remove that port.
    let mut open = connect_edge(first.port).await;
    open.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    open.read_exact(&mut buf).await.unwrap();
    pair.hub
        .ok(
            "updateAllowedEdges",
            Some(
                json!({"edges": [{"id": common::EDGE_ID, "secret": common::EDGE_SECRET,
                "listenPorts": [second.port]}]}),
            ),
        )
        .await;
    pair.edge.event("portsUpdated").await;
    eventually("removed port refuses", Duration::from_secs(2), || async {
        TcpStream::connect((EDGE_ADDR, first.port))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    // The open connection still works and finishes cleanly.
    open.write_all(b"after").await.unwrap();
    open.shutdown().await.unwrap();
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"after");
}

async fn status_and_stream_events_report_the_traffic(transport: &str) {
    let target = Target::start(Behaviour::Echo).await;
    let mut pair = Pair::start(&[target.port], json!({}), transport).await;
    let (client, echoed) = echo_round_trip(target.port, vec![7u8; 1000]).await;
    assert_eq!(echoed.len(), 1000);
    let opened = pair.hub.event("streamOpened").await;
    assert_eq!(opened["edgeId"], common::EDGE_ID);
    assert_eq!(opened["clientAddr"], client.to_string());
    assert_eq!(opened["port"], target.port);
    let closed = pair.hub.event("streamClosed").await;
    assert_eq!(closed["bytesIn"], 1000);
    assert_eq!(closed["bytesOut"], 1000);
    let status = pair.hub.ok("getStatus", None).await;
    let edge = &status["connectedEdges"][0];
    assert_eq!(edge["edgeId"], common::EDGE_ID);
    assert_eq!(edge["transport"], transport);
    assert_eq!(edge["streamsOpenedTotal"], 1);
    let edge_status = pair.edge.ok("getStatus", None).await;
    assert_eq!(edge_status["connected"], true);
    assert_eq!(edge_status["hubVerified"], true);
    assert_eq!(edge_status["listenPorts"], json!([target.port]));
}

async fn summary_mode_emits_stream_summaries_instead_of_per_stream_events(transport: &str) {
    let target = Target::start(Behaviour::Echo).await;
    let mut pair = Pair::start(
        &[target.port],
        json!({"streamEventMode": "summary"}),
        transport,
    )
    .await;
    echo_round_trip(target.port, b"x".to_vec()).await;
    let summary = pair
        .hub
        .wait_for(
            |line| line["event"] == "streamSummary" && line["data"]["streamsClosedTotal"] == 1,
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(summary["data"]["edgeId"], common::EDGE_ID);
    assert_eq!(summary["data"]["activeStreams"], 0);
}

async fn v2_proxy_protocol_is_written_when_configured(transport: &str) {
    // A raw listener that captures the first bytes the hub writes.
    let target = Target::start(Behaviour::Echo).await;
    drop(target);
    let listener = loop {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        if std::net::TcpListener::bind((EDGE_ADDR, port)).is_ok() {
            break listener;
        }
    };
    let port = listener.local_addr().unwrap().port();
    let _pair = Pair::start(&[port], json!({"proxyProtocol": "v2"}), transport).await;
    let client = tokio::spawn(async move {
        let mut socket = connect_edge(port).await;
        socket.write_all(b"payload").await.unwrap();
        socket.local_addr().unwrap()
    });
    let (mut accepted, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut header = [0u8; 28 + 7];
    accepted.read_exact(&mut header).await.unwrap();
    let client = client.await.unwrap();
    assert_eq!(&header[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(header[12], 0x21, "version 2, PROXY");
    assert_eq!(header[13], 0x11, "TCP over IPv4");
    assert_eq!(&header[16..20], &[127, 0, 0, 1]);
    assert_eq!(&header[20..24], &[127, 0, 0, 2]);
    assert_eq!(u16::from_be_bytes([header[24], header[25]]), client.port());
    assert_eq!(u16::from_be_bytes([header[26], header[27]]), port);
    assert_eq!(&header[28..], b"payload");
}
