//! `Tunnel`, `TunnelIncoming` and `TunnelStream`: the only transport types the hub and edge see.
//!
//! Hub and edge code never touch frames or QUIC streams; they open and accept streams and send
//! control messages through these enums, so TLS and QUIC differ only inside `transport/`
//! (the QUIC transport adds its variants here).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use remoteingress_ipc_schema::TunnelTransport;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::control::ControlMessage;
use super::datagram::{UdpMessage, UdpSendError};
use super::frame::{Frame, FrameError, CONTROL_STREAM};
use super::handshake::{encode_config, EdgeConfigPush, HandshakeError};
use super::path_rtt::PathRttProbe;
use super::quic::{self, QuicHandle, QuicStream};
use super::tls_mux::{
    Mux, MuxConfig, MuxError, MuxHandle, MuxIncoming, MuxStream, QosSettings, Side, WindowSettings,
};
use crate::config::PerformanceSettings;

/// Why a tunnel operation failed. Each variant keeps the transport's own error (as its
/// source), so a caller can tell a closed tunnel from a refused frame without reading text;
/// the Display is the source's, as the logs showed it before.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The QUIC tunnel's control stream is gone (or no longer read).
    #[error("the tunnel is closed")]
    Closed,
    /// The TLS mux refused: closed, no stream id, a frame this side may not send.
    #[error("{0}")]
    Mux(#[from] MuxError),
    /// A control message that is not a valid frame (payload too long).
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// A QUIC stream could not be opened or its first line sent.
    #[error("{0}")]
    QuicOpen(#[from] quic::OpenError),
    /// The configuration push could not be encoded.
    #[error("{0}")]
    Encode(#[from] HandshakeError),
}

/// A running tunnel (cheap to clone).
#[derive(Clone, Debug)]
pub enum Tunnel {
    Tls(MuxHandle),
    Quic(QuicHandle),
}

/// What arrives on a tunnel, as independent receivers so one task can wait on all of them.
/// Both transports deliver control and UDP messages in the same types.
#[derive(Debug)]
pub struct TunnelIncoming {
    pub streams: IncomingStreams,
    /// CONFIG, PING, PONG (and, on QUIC, UDP_CLOSE is delivered as a UDP message instead).
    pub control: mpsc::Receiver<ControlMessage>,
    pub datagrams: mpsc::Receiver<UdpMessage>,
}

/// Streams the peer opened.
#[derive(Debug)]
pub enum IncomingStreams {
    Tls(mpsc::Receiver<(MuxStream, Bytes)>),
    Quic(mpsc::Receiver<(QuicStream, Bytes)>),
}

/// One tunneled TCP connection.
#[derive(Debug)]
pub enum TunnelStream {
    Tls(MuxStream),
    Quic(QuicStream),
}

fn window_settings(performance: &PerformanceSettings) -> WindowSettings {
    WindowSettings {
        min: performance.stream_window_min,
        max: performance.stream_window_max,
        budget: performance.window_budget,
    }
}

/// Unsent bytes the kernel may hold for a TLS tunnel socket (TCP_NOTSENT_LOWAT). The mux
/// prioritises frames in user space (control > data > sustained); without this cap the kernel
/// would queue megabytes of an elephant's data ahead of a mouse's frame, and the priority would
/// be lost in the socket buffer. The usual value for multiplexed protocols (HTTP/2 servers);
/// it costs single-stream throughput a little (about 8 % on loopback).
pub(crate) const TLS_SOCKET_NOTSENT_LOWAT: u32 = 256 * 1024;

/// Tunes a TCP socket that carries a TLS tunnel: no Nagle delay, small unsent backlog. Returns
/// the probe that will feed the socket's round-trip time to the mux ([`Tunnel::start_tls`]).
pub(crate) fn tune_tunnel_socket(socket: &tokio::net::TcpStream) -> Option<PathRttProbe> {
    let _ = socket.set_nodelay(true);
    let sock = socket2::SockRef::from(socket);
    if let Err(error) = sock.set_tcp_notsent_lowat(TLS_SOCKET_NOTSENT_LOWAT) {
        tracing::debug!(%error, "TCP_NOTSENT_LOWAT not available");
    }
    PathRttProbe::new(socket)
}

fn qos_settings(performance: &PerformanceSettings) -> QosSettings {
    QosSettings {
        sustained_after: performance.sustained_after,
        sustained_threshold_bytes_per_sec: performance.sustained_threshold_bytes_per_sec,
        sustained_drain_bytes_per_sec: performance.sustained_drain_bytes_per_sec,
    }
}

impl Tunnel {
    /// Starts a TLS tunnel whose handshake is done; `leftover` holds bytes read after the
    /// handshake line; `rtt` (from [`tune_tunnel_socket`]) lets receive windows auto-tune.
    /// The tunnel's tasks run on `tasks`, the role's tracker, so that a stop waits for them.
    pub fn start_tls<T>(
        io: T,
        leftover: BytesMut,
        side: Side,
        performance: &PerformanceSettings,
        rtt: Option<PathRttProbe>,
        tasks: &TaskTracker,
    ) -> (Self, TunnelIncoming)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let config = MuxConfig {
            side,
            window: window_settings(performance),
            qos: qos_settings(performance),
        };
        let (handle, incoming) = Mux::start(io, leftover, config, CancellationToken::new(), tasks);
        if let Some(probe) = rtt {
            probe.track(handle.clone(), tasks);
        }
        let MuxIncoming {
            streams,
            control,
            datagrams,
        } = incoming;
        (
            Self::Tls(handle),
            TunnelIncoming {
                streams: IncomingStreams::Tls(streams),
                control,
                datagrams,
            },
        )
    }

    /// Starts a QUIC tunnel whose handshake is done on the control stream; `leftover` holds
    /// control bytes already read after the handshake line. The tunnel's tasks run on `tasks`.
    pub fn start_quic(
        connection: quinn::Connection,
        control_send: quinn::SendStream,
        control_recv: quinn::RecvStream,
        leftover: BytesMut,
        side: Side,
        tasks: &TaskTracker,
    ) -> (Self, TunnelIncoming) {
        // Streams the hub accepts start with a PROXY v1 line; streams an edge accepts (egress)
        // start with a JSON request line.
        let first_line_cap = match side {
            Side::Hub => crate::proxy_protocol::v1::MAX_V1_LEN,
            Side::Edge => 4096,
        };
        let (handle, incoming) = quic::start(
            connection,
            control_send,
            control_recv,
            leftover,
            side,
            first_line_cap,
            tasks,
        );
        (
            Self::Quic(handle),
            TunnelIncoming {
                streams: IncomingStreams::Quic(incoming.streams),
                control: incoming.control,
                datagrams: incoming.datagrams,
            },
        )
    }

    /// The transport in use.
    pub fn transport(&self) -> TunnelTransport {
        match self {
            Self::Tls(_) => TunnelTransport::TcpTls,
            Self::Quic(_) => TunnelTransport::Quic,
        }
    }

    /// Opens a stream to the hub (edge side); `proxy_line` is the client's PROXY v1 line.
    pub async fn open_stream(&self, proxy_line: Bytes) -> Result<TunnelStream, TunnelError> {
        match self {
            Self::Tls(mux) => Ok(TunnelStream::Tls(mux.open_stream(proxy_line)?)),
            Self::Quic(quic) => Ok(TunnelStream::Quic(quic.open_stream(proxy_line).await?)),
        }
    }

    /// Sends a control message (CONFIG, PING, PONG) without waiting.
    pub fn send_control(&self, message: ControlMessage) -> Result<(), TunnelError> {
        match self {
            Self::Tls(mux) => {
                let frame = Frame::new(CONTROL_STREAM, message.frame_type, message.payload)?;
                Ok(mux.send_control(frame)?)
            }
            Self::Quic(quic) => quic.send_control(message).map_err(|_| TunnelError::Closed),
        }
    }

    /// Pushes a configuration to the edge (hub side).
    pub fn push_config(&self, config: &EdgeConfigPush) -> Result<(), TunnelError> {
        let payload = encode_config(config)?;
        self.send_control(ControlMessage::config(payload))
    }

    /// Queues a UDP message without waiting; `Full` means the caller drops (and counts) it.
    pub fn send_udp(&self, message: UdpMessage) -> Result<(), UdpSendError> {
        match self {
            Self::Tls(mux) => mux.send_udp(message),
            Self::Quic(quic) => quic.send_udp(message),
        }
    }

    /// The TLS mux's counters (`None` over QUIC).
    pub fn mux_stats(&self) -> Option<super::tls_mux::MuxStats> {
        match self {
            Self::Tls(mux) => Some(mux.stats()),
            Self::Quic(_) => None,
        }
    }

    /// Bytes received from the peer so far, counted by the transport as they arrive: growth
    /// shows the peer is there, however busy the application is (`hub::liveness`).
    pub fn received_bytes(&self) -> u64 {
        match self {
            Self::Tls(mux) => mux.received_bytes(),
            Self::Quic(quic) => quic.received_bytes(),
        }
    }

    /// Streams currently open on this tunnel.
    pub fn active_streams(&self) -> usize {
        match self {
            Self::Tls(mux) => mux.active_streams(),
            Self::Quic(quic) => quic.active_streams(),
        }
    }

    /// Holds the streams the peer may have open at once, those still sending their first line
    /// included, to `max` (the hub: the edge's `maxStreams`). The TLS mux admits each stream at
    /// its OPEN and has no such phase: nothing to do there.
    pub fn cap_streams(&self, max: u64) {
        if let Self::Quic(quic) = self {
            quic.cap_streams(max);
        }
    }

    /// Closes the tunnel; every stream fails.
    pub fn close(&self) {
        match self {
            Self::Tls(mux) => mux.close(),
            Self::Quic(quic) => quic.close(),
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Self::Tls(mux) => mux.is_closed(),
            Self::Quic(quic) => quic.is_closed(),
        }
    }

    /// Resolves when the tunnel has ended, with the reason.
    pub async fn closed(&self) -> String {
        match self {
            Self::Tls(mux) => mux.closed().await.to_string(),
            Self::Quic(quic) => quic.closed().await,
        }
    }
}

impl IncomingStreams {
    /// The next stream the peer opened, with its OPEN payload; `None` once the tunnel ended.
    pub async fn next(&mut self) -> Option<(TunnelStream, Bytes)> {
        match self {
            Self::Tls(streams) => streams
                .recv()
                .await
                .map(|(stream, open)| (TunnelStream::Tls(stream), open)),
            Self::Quic(streams) => streams
                .recv()
                .await
                .map(|(stream, open)| (TunnelStream::Quic(stream), open)),
        }
    }
}

impl TunnelStream {
    /// Stream id (unique per tunnel while open).
    pub fn id(&self) -> u64 {
        match self {
            Self::Tls(stream) => u64::from(stream.id()),
            Self::Quic(stream) => stream.id(),
        }
    }

    /// Aborts the stream: the peer sees a reset, not a normal end (see `relay::RelayError`).
    pub fn abort(self) {
        match self {
            Self::Tls(stream) => stream.abort(),
            Self::Quic(stream) => stream.abort(),
        }
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Quic(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Quic(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tls(stream) => Pin::new(stream).poll_flush(cx),
            Self::Quic(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Quic(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::transport::frame::MAX_CONFIG_PAYLOAD;

    /// A TLS tunnel of `side` over one end of an in-memory pipe (the other end is returned so
    /// that the tunnel stays open).
    fn tls_tunnel(side: Side) -> (Tunnel, TunnelIncoming, tokio::io::DuplexStream) {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let performance = PerformanceSettings::default();
        let (tunnel, incoming) = Tunnel::start_tls(
            near,
            BytesMut::new(),
            side,
            &performance,
            None,
            &TaskTracker::new(),
        );
        (tunnel, incoming, far)
    }

    #[tokio::test]
    async fn errors_keep_the_transports_error_as_their_source() {
        let (hub, _incoming, _far) = tls_tunnel(Side::Hub);
        let refused = hub.open_stream(Bytes::new()).await.unwrap_err();
        assert!(
            matches!(refused, TunnelError::Mux(MuxError::NotEdge)),
            "{refused:?}"
        );
        assert_eq!(refused.to_string(), "only the edge opens streams");
        assert!(refused.source().is_some());

        let huge = ControlMessage::config(vec![b' '; MAX_CONFIG_PAYLOAD + 1]);
        let refused = hub.send_control(huge).unwrap_err();
        assert!(
            matches!(
                refused,
                TunnelError::Frame(FrameError::PayloadTooLong { .. })
            ),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_closed_tls_tunnel_says_so() {
        let (edge, _incoming, far) = tls_tunnel(Side::Edge);
        drop(far);
        let end = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let error = loop {
            match edge.send_control(ControlMessage::ping(1)) {
                Err(error) => break error,
                Ok(()) if tokio::time::Instant::now() < end => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Ok(()) => panic!("the tunnel never closed"),
            }
        };
        assert!(
            matches!(error, TunnelError::Mux(MuxError::Closed)),
            "{error:?}"
        );
        assert_eq!(error.to_string(), "the tunnel is closed");
    }
}
