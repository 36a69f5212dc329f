//! What a compromised edge can make the hub hold in memory, measured on the real binary: a
//! QUIC edge that stops reading its control stream while provoking replies on it is dropped,
//! with a reason, instead of growing the hub's queue (#23 item 4).

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{hand_edge, rss_kib, start_hub, Managed, EDGE_ID, EDGE_SECRET};
use remoteingress::proxy_protocol::{v2, ProxyHeader, ProxyTransport};
use remoteingress::transport::datagram::encode_open;
use serde_json::json;

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
