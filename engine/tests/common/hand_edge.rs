//! A hand-driven edge: the test does the real login itself (TLS or QUIC, channel-bound proof)
//! and then runs the library's tunnel, so it can send what a real edge never would (forged
//! OPENs, UDP opens for ports it was not given, raw hello lines).

use std::time::Duration;

use bytes::BytesMut;
use remoteingress::config::PerformanceSettings;
use remoteingress::testing::handshake::{self, HubReply, MAX_REPLY_LEN};
use remoteingress::testing::login::{self, ChannelBinding};
use remoteingress::testing::Side;
use remoteingress::testing::{Tunnel, TunnelIncoming};
use remoteingress_ipc_schema::Secret;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::task::TaskTracker;

/// How long a reply may take (the hub may slow a login down by up to 3 s).
const REPLY_DEADLINE: Duration = Duration::from_secs(12);

/// A logged-in hand-driven edge.
pub struct HandEdge {
    pub tunnel: Tunnel,
    pub incoming: TunnelIncoming,
    /// Keeps the QUIC endpoint alive.
    _endpoint: Option<quinn::Endpoint>,
}

/// TLS to the hub's tunnel port, without a pin (like an unpinned edge).
pub async fn tls_connect(port: u16) -> TlsStream<TcpStream> {
    let config = remoteingress::testing::edge_client_config(None, None).unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    connector
        .connect(remoteingress::testing::server_name("127.0.0.1"), socket)
        .await
        .unwrap()
}

/// A QUIC connection to the hub's tunnel port, without a pin.
pub async fn quic_connect(port: u16) -> (quinn::Endpoint, quinn::Connection) {
    quic_connect_with(port, &PerformanceSettings::default()).await
}

/// [`quic_connect`] with the windows of `performance` (a hostile edge picks its own).
pub async fn quic_connect_with(
    port: u16,
    performance: &PerformanceSettings,
) -> (quinn::Endpoint, quinn::Connection) {
    let tls = remoteingress::testing::edge_client_config(None, None).unwrap();
    let config = remoteingress::testing::client_config(tls, performance).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connection = endpoint
        .connect_with(config, ([127, 0, 0, 1], port).into(), "localhost")
        .unwrap()
        .await
        .unwrap();
    (endpoint, connection)
}

/// The hello a real edge with `secret` would send over the channel with `binding`.
pub fn hello_line(binding: &ChannelBinding, edge_id: &str, secret: &str) -> Vec<u8> {
    let proof = login::edge_proof(&Secret::new(secret), binding, edge_id);
    // The three-field hello of an edge older than instance ids: it replaces a connected edge.
    handshake::encode_hello(edge_id, &proof, None).unwrap()
}

/// Sends the hello of edge process `instance` (the four-field form, with a right proof) over
/// `transport` (`"tcpTls"` or `"quic"`); the hub's reply line, or why there was none.
pub async fn instance_hello(
    transport: &str,
    port: u16,
    edge_id: &str,
    secret: &str,
    instance: &handshake::InstanceId,
) -> Result<String, String> {
    let line = |binding: &ChannelBinding| {
        let proof = login::edge_proof(&Secret::new(secret), binding, edge_id);
        handshake::encode_hello(edge_id, &proof, Some(instance)).unwrap()
    };
    if transport == "tcpTls" {
        let mut tls = tls_connect(port).await;
        let binding = ChannelBinding::from_tls(tls.get_ref().1).unwrap();
        exchange(&mut tls, &line(&binding), &mut BytesMut::new()).await
    } else {
        let (_endpoint, connection) = quic_connect(port).await;
        let binding = ChannelBinding::from_quic(&connection).unwrap();
        let (send, recv) = connection.open_bi().await.unwrap();
        let mut control = tokio::io::join(recv, send);
        exchange(&mut control, &line(&binding), &mut BytesMut::new()).await
    }
}

/// Writes `line` and reads the hub's reply line; `Err` with what was read when the hub closed
/// without a full line. The buffer keeps bytes past the reply.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    line: &[u8],
    buffer: &mut BytesMut,
) -> Result<String, String> {
    io.write_all(line).await.unwrap();
    io.flush().await.unwrap();
    match tokio::time::timeout(
        REPLY_DEADLINE,
        handshake::read_line(io, buffer, MAX_REPLY_LEN),
    )
    .await
    {
        Ok(Ok(reply)) => Ok(String::from_utf8_lossy(&reply).into_owned()),
        Ok(Err(error)) => Err(format!("no reply line: {error}")),
        Err(_) => Err("no reply within the deadline".to_owned()),
    }
}

/// Sends a raw line over TLS; returns the reply line or why there was none.
pub async fn tls_raw(port: u16, line: &[u8]) -> Result<String, String> {
    let mut tls = tls_connect(port).await;
    exchange(&mut tls, line, &mut BytesMut::new()).await
}

/// Sends a raw line on a QUIC control stream; returns the reply line or why there was none.
pub async fn quic_raw(port: u16, line: &[u8]) -> Result<String, String> {
    let (_endpoint, connection) = quic_connect(port).await;
    let (send, recv) = connection.open_bi().await.unwrap();
    let mut control = tokio::io::join(recv, send);
    exchange(&mut control, line, &mut BytesMut::new()).await
}

/// Logs in as `edge_id` with `secret` over `transport` (`"tcpTls"` or `"quic"`). `Err` holds the
/// hub's reply (or why there was none) when the login was refused.
pub async fn login(
    transport: &str,
    port: u16,
    edge_id: &str,
    secret: &str,
) -> Result<HandEdge, String> {
    let performance = PerformanceSettings::default();
    if transport == "tcpTls" {
        let mut tls = tls_connect(port).await;
        let binding = ChannelBinding::from_tls(tls.get_ref().1).unwrap();
        let mut buffer = BytesMut::new();
        let reply = exchange(
            &mut tls,
            &hello_line(&binding, edge_id, secret),
            &mut buffer,
        )
        .await?;
        check_accepted(&reply, &binding, edge_id, secret)?;
        let (tunnel, incoming) = Tunnel::start_tls(
            tls,
            buffer,
            Side::Edge,
            &performance,
            None,
            &TaskTracker::new(),
        );
        Ok(HandEdge {
            tunnel,
            incoming,
            _endpoint: None,
        })
    } else {
        let (endpoint, connection) = quic_connect(port).await;
        let (send, recv, buffer) = quic_hello(&connection, edge_id, secret).await?;
        let (tunnel, incoming) = Tunnel::start_quic(
            connection,
            send,
            recv,
            buffer,
            Side::Edge,
            &TaskTracker::new(),
        );
        Ok(HandEdge {
            tunnel,
            incoming,
            _endpoint: Some(endpoint),
        })
    }
}

/// A QUIC login as `edge_id` that stops there: the connection and the control stream, no
/// tunnel tasks, so the test decides what is read (nothing, to play a peer that stops reading).
/// Its stream windows are 64 KiB, so the hub's writes to it block early.
pub async fn quic_login_raw(
    port: u16,
    edge_id: &str,
    secret: &str,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
) {
    let performance = PerformanceSettings {
        stream_window_max: 64 * 1024,
        stream_window_min: 64 * 1024,
        ..PerformanceSettings::default()
    };
    let (endpoint, connection) = quic_connect_with(port, &performance).await;
    let (send, recv, _) = quic_hello(&connection, edge_id, secret)
        .await
        .expect("login accepted");
    (endpoint, connection, send, recv)
}

/// The login on a QUIC connection's control stream: the stream's two halves and the bytes read
/// past the reply; `Err` holds the hub's reply (or why there was none) when it was refused.
async fn quic_hello(
    connection: &quinn::Connection,
    edge_id: &str,
    secret: &str,
) -> Result<(quinn::SendStream, quinn::RecvStream, BytesMut), String> {
    let binding = ChannelBinding::from_quic(connection).unwrap();
    let (send, recv) = connection.open_bi().await.unwrap();
    let mut control = tokio::io::join(recv, send);
    let mut buffer = BytesMut::new();
    let reply = exchange(
        &mut control,
        &hello_line(&binding, edge_id, secret),
        &mut buffer,
    )
    .await?;
    check_accepted(&reply, &binding, edge_id, secret)?;
    let (recv, send) = control.into_inner();
    Ok((send, recv, buffer))
}

/// A TLS login as `edge_id` that stops there: the TLS stream, no tunnel tasks, so the test
/// writes raw frames and reads nothing (a peer that stops reading).
pub async fn tls_login_raw(port: u16, edge_id: &str, secret: &str) -> TlsStream<TcpStream> {
    let mut tls = tls_connect(port).await;
    let binding = ChannelBinding::from_tls(tls.get_ref().1).unwrap();
    let mut buffer = BytesMut::new();
    let line = hello_line(&binding, edge_id, secret);
    let reply = exchange(&mut tls, &line, &mut buffer)
        .await
        .expect("a reply");
    check_accepted(&reply, &binding, edge_id, secret).expect("login accepted");
    tls
}

/// The reply accepts the login and carries a valid hub proof.
fn check_accepted(
    reply: &str,
    binding: &ChannelBinding,
    edge_id: &str,
    secret: &str,
) -> Result<(), String> {
    match handshake::parse_reply(reply.as_bytes()).map_err(|e| format!("{e}: {reply}"))? {
        HubReply::Rejected { .. } | HubReply::Duplicate(_) => Err(reply.to_owned()),
        HubReply::Accepted { hub_proof, .. } => {
            assert!(
                login::verify_hub_proof(&Secret::new(secret), binding, edge_id, &hub_proof),
                "the hub's proof must verify"
            );
            Ok(())
        }
    }
}
