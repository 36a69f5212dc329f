//! A public port that is busy when the hub assigns it is retried until it can be bound, and the
//! hub sees the failure (with the error) while it lasts.

mod common;

use std::time::Duration;

use common::target::{Behaviour, Target};
use common::{status_until, Pair, EDGE_ADDR};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_is_retried_and_reported_to_the_hub() {
    let target = Target::start(Behaviour::Echo).await;
    // Someone else holds the edge's port when the hub assigns it.
    let squatter = std::net::TcpListener::bind((EDGE_ADDR, target.port)).unwrap();
    let mut pair = Pair::start(&[target.port], json!({}), "tcpTls").await;
    let port = target.port;
    let edge = status_until(
        &mut pair.edge,
        "edge reports the failure",
        Duration::from_secs(15),
        |s| s["portBindFailures"][0]["port"] == port,
    )
    .await;
    assert!(
        edge["portBindFailures"][0]["error"]
            .as_str()
            .unwrap()
            .contains("in use"),
        "{edge}"
    );
    status_until(
        &mut pair.hub,
        "hub shows the failure",
        Duration::from_secs(15),
        |s| s["connectedEdges"][0]["portBindFailures"][0]["port"] == port,
    )
    .await;

    drop(squatter);
    status_until(
        &mut pair.edge,
        "edge listens after the retry",
        Duration::from_secs(15),
        |s| s["listenPorts"] == json!([port]) && s["portBindFailures"] == json!([]),
    )
    .await;
    status_until(
        &mut pair.hub,
        "hub sees the failure cleared",
        Duration::from_secs(15),
        |s| s["connectedEdges"][0]["portBindFailures"] == json!([]),
    )
    .await;
    let mut client = TcpStream::connect((EDGE_ADDR, port)).await.unwrap();
    client.write_all(b"bound at last").await.unwrap();
    client.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"bound at last");
}
