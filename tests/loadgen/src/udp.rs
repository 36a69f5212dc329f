//! UDP echo rate and latency: flows each keeping a window of datagrams in flight.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::net::UdpSocket;

/// Datagrams sent and echoes received, over all flows.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
}

pub(crate) async fn udp_rate(
    addr: SocketAddr,
    flows: usize,
    size: usize,
    window: usize,
    duration: Duration,
) -> Result<()> {
    let counters = Arc::new(Counters::default());
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..flows {
        tasks.push(tokio::spawn(flow(
            addr,
            size,
            window,
            end,
            counters.clone(),
        )));
    }
    let mut histogram = Histogram::<u64>::new(3)?;
    for task in tasks {
        histogram.add(task.await??)?;
    }
    let seconds = duration.as_secs_f64();
    let sent = counters.sent.load(Ordering::Relaxed);
    let received = counters.received.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({
            "kind": "udp", "flows": flows, "size": size, "sent": sent, "received": received,
            "pps": received as f64 / seconds,
            "loss": if sent == 0 { 0.0 } else { 1.0 - received as f64 / sent as f64 },
            "p50_us": histogram.value_at_quantile(0.5) as f64 / 1e3,
            "p99_us": histogram.value_at_quantile(0.99) as f64 / 1e3,
        })
    );
    Ok(())
}

/// One flow: a connected socket sending timestamped datagrams, `window` in flight.
async fn flow(
    addr: SocketAddr,
    size: usize,
    window: usize,
    end: Instant,
    counters: Arc<Counters>,
) -> Result<Histogram<u64>> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let socket = UdpSocket::bind(local).await?;
    socket.connect(addr).await?;
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut payload = vec![0u8; size.max(8)];
    let mut buf = vec![0u8; 65_536];
    let epoch = Instant::now();
    let mut in_flight = 0usize;
    while Instant::now() < end {
        while in_flight < window {
            let stamp = epoch.elapsed().as_nanos() as u64;
            payload[..8].copy_from_slice(&stamp.to_be_bytes());
            socket.send(&payload).await?;
            counters.sent.fetch_add(1, Ordering::Relaxed);
            in_flight += 1;
        }
        match tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await {
            Ok(Ok(len)) if len >= 8 => {
                let mut stamp = [0u8; 8];
                stamp.copy_from_slice(&buf[..8]);
                let rtt =
                    (epoch.elapsed().as_nanos() as u64).saturating_sub(u64::from_be_bytes(stamp));
                histogram.record(rtt.max(1))?;
                counters.received.fetch_add(1, Ordering::Relaxed);
                in_flight -= 1;
            }
            Ok(_) => {}
            // A lost datagram: stop waiting for it.
            Err(_) => in_flight = in_flight.saturating_sub(1),
        }
    }
    // Collect the stragglers.
    while in_flight > 0 {
        match tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await {
            Ok(Ok(_)) => {
                counters.received.fetch_add(1, Ordering::Relaxed);
                in_flight -= 1;
            }
            _ => break,
        }
    }
    Ok(histogram)
}
