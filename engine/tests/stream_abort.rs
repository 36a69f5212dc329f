//! A connection cut anywhere reaches the client as a reset (ECONNRESET), never as a normal end of
//! file that would make a cut-off transfer look complete: the target resetting mid-transfer, the
//! hub killed mid-transfer, and the edge stopped mid-transfer, on both transports. A process
//! killed outright (-9, no code of ours runs) must do the same to the sockets it held: the edge's
//! clients and the hub's targets see a reset, not the FIN a plain close would send.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::target::{Behaviour, Target};
use common::{Pair, EDGE_ADDR};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

over_both_transports!(
    a_target_reset_mid_transfer_resets_the_client,
    a_hub_killed_mid_transfer_resets_the_client,
    an_edge_stopped_mid_transfer_resets_the_client,
    an_edge_killed_mid_download_resets_the_client,
    a_hub_killed_mid_upload_resets_the_target,
);

/// Reads until the connection ends; returns the bytes read and how it ended.
async fn read_until_end(
    client: &mut TcpStream,
    deadline: Duration,
) -> (usize, std::io::Result<()>) {
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(deadline, async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => total += n,
                Err(error) => return Err(error),
            }
        }
    })
    .await
    .expect("the connection ends in time");
    (total, ended)
}

async fn a_target_reset_mid_transfer_resets_the_client(transport: &str) {
    let target = Target::start(Behaviour::ResetAfter { len: 100_000 }).await;
    let mut pair = Pair::start(&[target.port], json!({}), transport).await;
    pair.wait_listening(target.port).await;
    // The whole exchange (the target sends and resets, the edge resets the client) can beat
    // connect() to the socket's error slot: then connect itself reports the reset.
    let (read, ended) = match TcpStream::connect((EDGE_ADDR, target.port)).await {
        Ok(mut client) => read_until_end(&mut client, Duration::from_secs(10)).await,
        Err(error) => (0, Err(error)),
    };
    let error = ended.expect_err("a reset, not an end of file");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    assert!(read <= 100_000, "{read}");
}

/// A client in the middle of an endless download through a fresh hub and edge. The edge stops
/// at once (`shutdownGraceSecs: 0`); the grace period has its own tests (graceful_shutdown.rs).
async fn mid_transfer(transport: &str) -> (Target, Pair, TcpStream) {
    let target = Target::start(Behaviour::Stream).await;
    let mut pair = Pair::start_configured(
        json!({"listenPorts": [target.port]}),
        json!({}),
        json!({"shutdownGraceSecs": 0}),
        transport,
    )
    .await;
    pair.wait_listening(target.port).await;
    let mut client = TcpStream::connect((EDGE_ADDR, target.port)).await.unwrap();
    let mut first = vec![0u8; 1024];
    client.read_exact(&mut first).await.unwrap();
    (target, pair, client)
}

async fn a_hub_killed_mid_transfer_resets_the_client(transport: &str) {
    let (_target, mut pair, mut client) = mid_transfer(transport).await;
    let killed = Instant::now();
    pair.hub.child.start_kill().unwrap();
    pair.hub.wait_exit().await;
    // QUIC notices a vanished hub at its idle timeout (10 s); TLS at once.
    let (_, ended) = read_until_end(&mut client, Duration::from_secs(20)).await;
    let error = ended.expect_err("a reset, not an end of file");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    eprintln!(
        "{transport}: hub killed: client reset {:?} later",
        killed.elapsed()
    );
}

async fn an_edge_stopped_mid_transfer_resets_the_client(transport: &str) {
    let (_target, mut pair, mut client) = mid_transfer(transport).await;
    let stopped = Instant::now();
    pair.edge.ok("stop", None).await;
    let (_, ended) = read_until_end(&mut client, Duration::from_secs(10)).await;
    let error = ended.expect_err("a reset, not an end of file");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    eprintln!(
        "{transport}: edge stopped: client reset {:?} later",
        stopped.elapsed()
    );
}

async fn an_edge_killed_mid_download_resets_the_client(transport: &str) {
    let (_target, mut pair, mut client) = mid_transfer(transport).await;
    let killed = Instant::now();
    pair.edge.child.start_kill().unwrap();
    pair.edge.wait_exit().await;
    let (_, ended) = read_until_end(&mut client, Duration::from_secs(10)).await;
    let error = ended.expect_err("a reset, not an end of file");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    eprintln!(
        "{transport}: edge killed: client reset {:?} later",
        killed.elapsed()
    );
}

async fn a_hub_killed_mid_upload_resets_the_target(transport: &str) {
    // A target that reads an upload and reports how its read ended.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        let mut started = Some(started_tx);
        let ended = loop {
            match socket.read(&mut buf).await {
                Ok(0) => break Ok(total),
                Ok(n) => total += n,
                Err(error) => break Err(error),
            }
            if total > 1 << 20 {
                if let Some(started) = started.take() {
                    let _ = started.send(());
                }
            }
        };
        let _ = ended_tx.send(ended);
    });
    let mut pair = Pair::start_configured(
        json!({"listenPorts": [port]}),
        json!({}),
        json!({"shutdownGraceSecs": 0}),
        transport,
    )
    .await;
    pair.wait_listening(port).await;
    let client = TcpStream::connect((EDGE_ADDR, port)).await.unwrap();
    let (_read, mut write) = client.into_split();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let chunk = vec![0x42u8; 64 * 1024];
        while write.write_all(&chunk).await.is_ok() {}
    });
    tokio::time::timeout(Duration::from_secs(10), started_rx)
        .await
        .expect("the upload reaches the target")
        .unwrap();
    pair.hub.child.start_kill().unwrap();
    pair.hub.wait_exit().await;
    let ended = tokio::time::timeout(Duration::from_secs(10), ended_rx)
        .await
        .expect("the target's read ends")
        .unwrap();
    writer.abort();
    let error = ended.expect_err("a reset at the target, not an end of file");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
}
