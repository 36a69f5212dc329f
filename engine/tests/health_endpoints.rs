//! `/healthz` and `/metrics` keep answering while idle connections are held open (issue #23
//! item 7): 2,000 idle TCP connections to a hub's metrics listener, then `/healthz` answers
//! within a second, and the connections closed to make room are counted.

#[macro_use]
mod common;

use std::time::Duration;

use common::Managed;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Idle connections the test holds open.
const IDLE: usize = 2_000;

/// One HTTP/1.1 GET on a fresh connection; the whole response, or why there was none in time.
async fn get(port: u16, path: &str, deadline: Duration) -> Result<String, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(String::from_utf8_lossy(&response).into_owned())
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no response within {deadline:?}")))
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_within_a_second_while_2000_idle_connections_are_held() {
    let _heavy = common::heavy().await;
    assert!(common::raise_own_nofile() > IDLE as u64 + 100);
    let port = free_port();
    let mut hub = Managed::spawn().await;
    common::start_hub(
        &mut hub,
        json!({"metricsAddr": format!("127.0.0.1:{port}")}),
    )
    .await;
    let healthy = get(port, "/healthz", common::DEADLINE)
        .await
        .expect("healthz");
    assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");

    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(
            TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("an idle connection"),
        );
    }
    let started = tokio::time::Instant::now();
    let healthy = get(port, "/healthz", Duration::from_secs(1)).await;
    let took = started.elapsed();
    assert!(
        matches!(&healthy, Ok(text) if text.starts_with("HTTP/1.1 200")),
        "/healthz with {IDLE} idle connections held: {healthy:?} after {took:?}"
    );
    let metrics = get(port, "/metrics", Duration::from_secs(1))
        .await
        .expect("/metrics with the idle connections held");
    let displaced = metrics
        .lines()
        .find(|line| {
            line.starts_with("remoteingress_http_connections_shed_total{reason=\"displaced_idle\"}")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|count| count.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no displaced_idle count: {metrics}"));
    assert!(displaced >= (IDLE - 64) as u64, "{displaced}");
    drop(idle);
}
