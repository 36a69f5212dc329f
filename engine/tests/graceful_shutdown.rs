//! Graceful stop (`shutdownGraceSecs`): the stopping side takes no new connections, lets open
//! transfers finish within the grace period, resets the ones still open at its end, and exits 0.
//! With 20 transfers open: the 10 that finish during the grace complete byte for byte, the 10
//! that don't are reset (ECONNRESET, never an end of file) no earlier than the deadline.

#[macro_use]
mod common;

use std::io::ErrorKind;
use std::time::Duration;

use common::target::{Behaviour, Target};
use common::{Pair, EDGE_ADDR};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

over_both_transports!(
    an_edge_stop_finishes_short_transfers_and_resets_the_rest,
    a_hub_sigterm_finishes_short_transfers_and_resets_the_rest,
);

const GRACE: Duration = Duration::from_secs(3);
const TRANSFERS: usize = 20;

/// Opens a connection through the tunnel to the echo target and checks one exchange.
async fn open_transfer(port: u16, n: usize) -> TcpStream {
    let mut client = TcpStream::connect((EDGE_ADDR, port)).await.unwrap();
    let hello = format!("transfer {n}\n");
    client.write_all(hello.as_bytes()).await.unwrap();
    let mut echoed = vec![0u8; hello.len()];
    client.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, hello.as_bytes());
    client
}

/// Finishes a transfer: the rest of the request and its end; the whole echo must come back,
/// then a normal end of file.
async fn finish_transfer(mut client: TcpStream) {
    let rest = vec![b'x'; 100_000];
    client.write_all(&rest).await.unwrap();
    client.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut echoed))
        .await
        .expect("the echo ends in time")
        .expect("a complete transfer, not a reset");
    assert_eq!(echoed, rest, "the whole rest came back");
}

/// Waits for the reset of a transfer that was left open; returns when it came.
async fn reset_of(mut client: TcpStream) -> Instant {
    let mut buf = [0u8; 1];
    match tokio::time::timeout(GRACE + Duration::from_secs(10), client.read(&mut buf))
        .await
        .expect("the open transfer ends")
    {
        Ok(n) => panic!("an open transfer ended normally ({n} bytes), not with a reset"),
        Err(error) => assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}"),
    }
    Instant::now()
}

/// A hub and an edge with `GRACE` on both, an echo target, and `TRANSFERS` open transfers.
async fn twenty_open_transfers(transport: &str) -> (Target, Pair, Vec<TcpStream>) {
    let target = Target::start(Behaviour::Echo).await;
    let grace = json!(GRACE.as_secs());
    let mut pair = Pair::start_configured(
        json!({"listenPorts": [target.port]}),
        json!({"shutdownGraceSecs": grace}),
        json!({"shutdownGraceSecs": grace}),
        transport,
    )
    .await;
    pair.wait_listening(target.port).await;
    let mut transfers = Vec::new();
    for n in 0..TRANSFERS {
        transfers.push(open_transfer(target.port, n).await);
    }
    (target, pair, transfers)
}

/// Half the transfers finish during the grace period; the others stay open and must be reset
/// at its end, not before.
async fn check_grace(transfers: Vec<TcpStream>, stop_sent: Instant) {
    let mut transfers = transfers.into_iter();
    let short: Vec<_> = transfers.by_ref().take(TRANSFERS / 2).collect();
    let long: Vec<_> = transfers.collect();
    for client in short {
        finish_transfer(client).await;
    }
    // Waited for one after the other: each read only says when its reset came at the latest.
    for client in long {
        let after = reset_of(client).await - stop_sent;
        assert!(
            after >= GRACE - Duration::from_millis(300),
            "reset {after:?} after the stop, before the {GRACE:?} grace period was over"
        );
    }
}

/// Waits until a new client of the stopping hub is reset instead of forwarded.
async fn new_streams_are_refused(port: u16) {
    common::eventually(
        "new streams to be refused",
        Duration::from_secs(5),
        || async {
            let mut client = TcpStream::connect((EDGE_ADDR, port)).await.ok()?;
            client.write_all(b"late\n").await.ok()?;
            let mut buf = [0u8; 5];
            match client.read_exact(&mut buf).await {
                Err(error) if error.kind() == ErrorKind::ConnectionReset => Some(()),
                _ => None,
            }
        },
    )
    .await;
}

async fn an_edge_stop_finishes_short_transfers_and_resets_the_rest(transport: &str) {
    let (target, mut pair, transfers) = twenty_open_transfers(transport).await;
    let stop_sent = Instant::now();
    let stop = pair.edge.send("stop", None).await;
    // The public port closes at once: new clients are refused, not left waiting.
    common::eventually(
        "the public port to close",
        Duration::from_secs(5),
        || async {
            match TcpStream::connect((EDGE_ADDR, target.port)).await {
                Err(error) if error.kind() == ErrorKind::ConnectionRefused => Some(()),
                _ => None,
            }
        },
    )
    .await;
    check_grace(transfers, stop_sent).await;
    let answer = pair.edge.response(&stop).await;
    assert!(answer.get("error").is_none(), "{answer}");
    assert_eq!(pair.edge.close_stdin_and_wait().await, 0);
}

async fn a_hub_sigterm_finishes_short_transfers_and_resets_the_rest(transport: &str) {
    let (target, mut pair, transfers) = twenty_open_transfers(transport).await;
    let stop_sent = Instant::now();
    common::signal(pair.hub.pid(), "TERM");
    // The hub takes no new streams: a new client is reset, not forwarded.
    new_streams_are_refused(target.port).await;
    check_grace(transfers, stop_sent).await;
    assert_eq!(pair.hub.wait_exit().await, 0, "exit code after SIGTERM");
}

/// A second SIGTERM cuts the grace period short: the open transfer is reset at once.
#[tokio::test]
async fn a_second_sigterm_resets_at_once() {
    let target = Target::start(Behaviour::Echo).await;
    let mut pair = Pair::start_configured(
        json!({"listenPorts": [target.port]}),
        json!({"shutdownGraceSecs": 600}),
        json!({}),
        "tcpTls",
    )
    .await;
    pair.wait_listening(target.port).await;
    let open = open_transfer(target.port, 0).await;
    common::signal(pair.hub.pid(), "TERM");
    // The first signal is being handled once new streams are refused.
    new_streams_are_refused(target.port).await;
    let second = Instant::now();
    common::signal(pair.hub.pid(), "TERM");
    let reset = reset_of(open).await;
    assert!(
        reset - second < Duration::from_secs(5),
        "{:?}",
        reset - second
    );
    assert_eq!(pair.hub.wait_exit().await, 0);
}
