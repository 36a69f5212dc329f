//! Mice under an elephant: request/response latency of a few connections, first alone, then
//! while one stream uploads as fast as it can through the same path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::echo::run_request_response;
use crate::wire::Op;
use crate::CHUNK;

/// Time the elephant gets to reach full speed before the mice start.
const RAMP_UP: Duration = Duration::from_millis(500);

pub(crate) async fn mice(
    addr: SocketAddr,
    conns: usize,
    size: usize,
    duration: Duration,
) -> Result<()> {
    let alone = run_request_response(addr, conns, size, duration).await?;
    let elephant = Elephant::start(addr).await?;
    tokio::time::sleep(RAMP_UP).await;
    let before = CpuTimes::read()?;
    let loaded = run_request_response(addr, conns, size, duration).await?;
    let cpu_busy = CpuTimes::read()?.busy_since(&before);
    let elephant_gbps = elephant.stop().await?;
    let p99_ratio = ratio(&loaded["p99_us"], &alone["p99_us"]);
    let errors = count(&alone["errors"]) + count(&loaded["errors"]);
    println!(
        "{}",
        json!({
            "kind": "mice", "conns": conns, "size": size, "errors": errors,
            "p99_us": loaded["p99_us"], "p99_alone_us": alone["p99_us"], "p99_ratio": p99_ratio,
            "elephant_gbps": elephant_gbps, "cpu_busy": cpu_busy, "alone": alone,
            "loaded": loaded,
        })
    );
    Ok(())
}

fn ratio(numerator: &Value, denominator: &Value) -> f64 {
    let (n, d) = (
        numerator.as_f64().unwrap_or(0.0),
        denominator.as_f64().unwrap_or(0.0),
    );
    if d > 0.0 {
        n / d
    } else {
        0.0
    }
}

fn count(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

/// One upload stream (the target's `S` sink) writing until stopped.
struct Elephant {
    task: JoinHandle<Result<()>>,
    sent: Arc<AtomicU64>,
    started: Instant,
}

impl Elephant {
    async fn start(addr: SocketAddr) -> Result<Self> {
        let mut socket = TcpStream::connect(addr).await?;
        socket.write_all(&Op::Sink.encode(0)).await?;
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let task = tokio::spawn(async move {
            let chunk = vec![0u8; CHUNK];
            loop {
                socket.write_all(&chunk).await?;
                counter.fetch_add(CHUNK as u64, Ordering::Relaxed);
            }
        });
        Ok(Self {
            task,
            sent,
            started: Instant::now(),
        })
    }

    /// Stops the upload (closing its connection) and returns its rate in Gbit/s; fails if the
    /// stream broke while running.
    async fn stop(self) -> Result<f64> {
        let seconds = self.started.elapsed().as_secs_f64();
        let bytes = self.sent.load(Ordering::Relaxed) as f64;
        if self.task.is_finished() {
            self.task.await??;
        } else {
            self.task.abort();
        }
        Ok(bytes * 8.0 / seconds / 1e9)
    }
}

/// The machine's CPU time from /proc/stat (all CPUs, in clock ticks): how busy the machine was
/// while the mice ran beside the elephant says whether their latency is the tunnel's queues or
/// waiting for a CPU.
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    fn read() -> Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|field| field.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        let total: u64 = ticks.iter().take(8).sum();
        Ok(Self {
            busy: total.saturating_sub(idle),
            total,
        })
    }

    /// Share of the CPU time since `before` that was busy.
    fn busy_since(&self, before: &Self) -> f64 {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(before.busy) as f64 / total as f64
    }
}
