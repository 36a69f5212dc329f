//! A connection cut anywhere reaches the client as a reset (ECONNRESET), never as a normal end of
//! file that would make a cut-off transfer look complete: the target resetting mid-transfer, the
//! hub killed mid-transfer, and the edge stopped mid-transfer, on both transports.

#[macro_use]
mod common;

use std::time::Duration;

use common::target::{Behaviour, Target};
use common::{Pair, EDGE_ADDR};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

over_both_transports!(
    a_target_reset_mid_transfer_resets_the_client,
    a_hub_killed_mid_transfer_resets_the_client,
    an_edge_stopped_mid_transfer_resets_the_client,
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
    pair.hub.child.start_kill().unwrap();
    pair.hub.wait_exit().await;
    // QUIC notices a vanished hub at its idle timeout (10 s); TLS at once.
    let (_, ended) = read_until_end(&mut client, Duration::from_secs(20)).await;
    let error = ended.expect_err("a reset, not an end of file");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
}

async fn an_edge_stopped_mid_transfer_resets_the_client(transport: &str) {
    let (_target, mut pair, mut client) = mid_transfer(transport).await;
    pair.edge.ok("stop", None).await;
    let (_, ended) = read_until_end(&mut client, Duration::from_secs(10)).await;
    let error = ended.expect_err("a reset, not an end of file");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
}
