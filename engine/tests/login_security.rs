//! The login as an attacker meets it, through the real binaries: a man in the middle that
//! terminates TLS learns no credential and gets no session; a hub that does not know the secret
//! is refused by the edge; failing sources are slowed down but a correct edge still logs in;
//! bare connects lock nobody out (pending handshakes: `pre_login.rs`); an authenticated edge
//! cannot flood the hub's log.

#[macro_use]
mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use common::hand_edge;
use common::{
    edge_start, start_hub_allowing_test_edge, wait_edge_error, Managed, EDGE_ID, EDGE_SECRET,
};
use remoteingress::testing::handshake::{self, MAX_HELLO_LEN};
use remoteingress::testing::ControlMessage;
use remoteingress::testing::HubIdentity;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

over_both_transports!(an_authenticated_edge_cannot_flood_the_hub_log);

/// A hub allowing [`EDGE_ID`]; returns it and its tunnel port.
async fn hub_with_edge() -> (Managed, u16) {
    let mut hub = Managed::spawn().await;
    let port = start_hub_allowing_test_edge(&mut hub).await;
    (hub, port)
}

/// An unpinned TLS edge (the real binary) pointed at `port`.
async fn unpinned_edge(port: u16) -> Managed {
    let mut edge = Managed::spawn().await;
    edge.ok("start", Some(edge_start(port, None))).await;
    edge
}

/// A TLS server with its own certificate (not the hub's): for every connection it reads the
/// hello line and hands the stream, the line and the bytes after it to `on_hello`.
async fn start_tls_server<F, Fut>(on_hello: F) -> u16
where
    F: Fn(TlsStream<TcpStream>, Vec<u8>, BytesMut) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let identity = HubIdentity::self_signed().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let on_hello = on_hello.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut buffer = BytesMut::new();
                if let Ok(hello) = handshake::read_line(&mut tls, &mut buffer, MAX_HELLO_LEN).await
                {
                    on_hello(tls, hello.to_vec(), buffer).await;
                }
            });
        }
    });
    port
}

/// A TLS-terminating relay: its own certificate towards the edge, a fresh TLS connection to
/// the hub, the hello and everything after it relayed. Records every hello it sees.
async fn start_mitm(hub_port: u16) -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let captured = Arc::new(Mutex::new(Vec::new()));
    let seen = captured.clone();
    let port = start_tls_server(move |mut edge_side, hello, buffer| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(hello.clone());
            let mut hub_side = hand_edge::tls_connect(hub_port).await;
            let mut relayed = BytesMut::from(&hello[..]);
            relayed.put_u8(b'\n');
            relayed.extend_from_slice(&buffer);
            if hub_side.write_all(&relayed).await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut edge_side, &mut hub_side).await;
            }
        }
    })
    .await;
    (port, captured)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_man_in_the_middle_gets_neither_a_credential_nor_a_session() {
    let (mut hub, hub_port) = hub_with_edge().await;
    let (mitm_port, captured) = start_mitm(hub_port).await;
    let mut edge = unpinned_edge(mitm_port).await;

    // The hub refuses the relayed login: the proof was made for the edge<->MITM channel.
    common::assert_wrong_secret(&mut hub).await;
    let status = wait_edge_error(&mut edge).await;
    assert_eq!(status["connected"], false);
    assert_eq!(status["lastErrorReason"], "unauthorized", "{status}");
    let error = status["lastError"].as_str().unwrap();
    assert!(
        error.contains("the hub refused edge") && error.contains("relay"),
        "{status}"
    );
    let hub_status = hub.ok("getStatus", None).await;
    assert_eq!(hub_status["connectedEdges"], json!([]));

    // What the MITM saw holds no secret, and replaying it on a new channel is refused.
    let hello = captured.lock().unwrap().first().cloned().expect("a hello");
    let text = String::from_utf8_lossy(&hello).into_owned();
    assert!(!text.contains(EDGE_SECRET), "secret on the wire: {text}");
    let mut replay = hello.clone();
    replay.push(b'\n');
    let reply = hand_edge::tls_raw(hub_port, &replay).await;
    assert_eq!(reply, Ok("{\"error\":\"unauthorized\"}".to_owned()));
    edge.close_stdin_and_wait().await;
}

/// A server with its own certificate that answers every hello with `reply`.
async fn start_fake_hub(reply: String) -> u16 {
    start_tls_server(move |mut tls, _, _| {
        let reply = reply.clone();
        async move {
            let _ = tls.write_all(format!("{reply}\n").as_bytes()).await;
            let _ = tls.flush().await;
            let mut sink = Vec::new();
            let _ = tls.read_to_end(&mut sink).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_the_secret_is_refused_by_the_edge() {
    let fake_proof = "ab".repeat(32);
    for reply in [
        // A hub of the old protocol, or an impostor that cannot prove anything.
        r#"{"listenPorts":[18080],"listenPortsUdp":[]}"#.to_owned(),
        // An impostor guessing a proof.
        format!(r#"{{"hubProof":"{fake_proof}","listenPorts":[18080],"listenPortsUdp":[]}}"#),
    ] {
        let port = start_fake_hub(reply.clone()).await;
        let mut edge = unpinned_edge(port).await;
        let status = wait_edge_error(&mut edge).await;
        let error = status["lastError"].as_str().unwrap();
        assert!(
            error.contains("hubProof") || error.contains("proof does not match"),
            "{reply}: {error}"
        );
        assert_eq!(status["connected"], false, "{status}");
        assert_eq!(
            status["listenPorts"],
            json!([]),
            "no config taken: {status}"
        );
        edge.close_stdin_and_wait().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_connects_lock_nobody_out() {
    let (mut hub, port) = hub_with_edge().await;
    // A health checker or port scanner on the edge's address: connect and close, many times.
    // When the hub has not yet seen earlier ones close, it is at its per-source cap of pending
    // handshakes and resets the newest at once, which the connect itself may report: fine here.
    for _ in 0..30 {
        if let Ok(socket) = TcpStream::connect(("127.0.0.1", port)).await {
            drop(socket);
        }
    }
    let mut edge = unpinned_edge(port).await;
    edge.event("tunnelConnected").await;
    let status = hub.ok("getStatus", None).await;
    assert_eq!(status["slowedSources"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_is_slowed_but_a_correct_edge_still_logs_in() {
    let (mut hub, port) = hub_with_edge().await;
    let mut durations = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        let refused = hand_edge::login("tcpTls", port, EDGE_ID, "guess").await;
        assert!(refused.is_err());
        durations.push(started.elapsed());
    }
    // The first failures are free; then each one waits longer.
    assert!(
        durations[..4]
            .iter()
            .all(|d| *d < Duration::from_millis(200)),
        "{durations:?}"
    );
    assert!(durations[6] >= Duration::from_millis(900), "{durations:?}");
    let status = hub.ok("getStatus", None).await;
    assert_eq!(status["slowedSources"], 1, "{status}");

    // The real edge from the same (slowed) source gets in within a few seconds.
    let mut edge = Managed::spawn().await;
    let started = Instant::now();
    edge.ok("start", Some(edge_start(port, None))).await;
    edge.event("tunnelConnected").await;
    let elapsed = started.elapsed();
    eprintln!("login from a slowed source took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    assert!(
        elapsed >= Duration::from_secs(1),
        "it was slowed: {elapsed:?}"
    );
    let status = hub.ok("getStatus", None).await;
    assert_eq!(status["slowedSources"], 0, "success clears: {status}");
}

async fn an_authenticated_edge_cannot_flood_the_hub_log(transport: &str) {
    let mut hub = Managed::spawn_capturing_stderr().await;
    let port = start_hub_allowing_test_edge(&mut hub).await;
    let edge = hand_edge::login(transport, port, EDGE_ID, EDGE_SECRET)
        .await
        .expect("login");
    hub.event("edgeConnected").await;
    let before = hub.stderr_bytes.as_ref().unwrap().load(Ordering::Relaxed);
    // PINGs the wrong way (edge to hub) are a protocol oddity the hub warns about. 100,000 of
    // them in bursts that fit the edge's control queue (a larger burst is a peer that does not
    // read, for our own sender): after each, a report; once the hub shows it, the PINGs before
    // it were handled (or dropped: the hub's own control queue is bounded too).
    for burst in 0..25u64 {
        for seq in 0..4_000u64 {
            edge.tunnel
                .send_control(ControlMessage::ping(burst * 4_000 + seq))
                .unwrap();
        }
        let ip = format!("192.0.2.{}", burst + 1);
        let report = ControlMessage::config(format!(r#"{{"publicIp":"{ip}"}}"#).into_bytes());
        common::eventually(
            "the report reaches the hub",
            Duration::from_secs(30),
            async || {
                // Sent again each time: the hub drops what does not fit its control queue.
                edge.tunnel.send_control(report.clone()).unwrap();
                let status = hub.ok("getStatus", None).await;
                (status["connectedEdges"][0]["publicIp"] == ip.as_str()).then_some(())
            },
        )
        .await;
    }
    let logged = hub.stderr_bytes.as_ref().unwrap().load(Ordering::Relaxed) - before;
    assert!(
        logged < 16 * 1024,
        "{logged} bytes of log for 100,000 bad PINGs"
    );
    // The tunnel survived it.
    let status = hub.ok("getStatus", None).await;
    assert_eq!(status["connectedEdges"].as_array().unwrap().len(), 1);
}
