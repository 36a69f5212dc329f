//! QUIC endpoints: transport parameters from the performance settings, the hub's server
//! endpoint (dual-stack UDP socket) and the edge's client endpoint.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{TransportConfig, VarInt};

use super::{stream_ceiling, INITIAL_CONCURRENT_STREAMS};
use crate::config::PerformanceSettings;

/// Why QUIC could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuicSetupError {
    #[error("QUIC needs TLS 1.3: {0}")]
    Crypto(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("cannot open the QUIC socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// Largest QUIC stream receive window. quinn has no per-stream auto-tuning (the TLS mux has,
/// `tls_mux/window.rs`), so a QUIC stream always has its whole window, and a bulk stream keeps
/// that much in flight ahead of every other stream's packets: at 16 MiB, 64-byte requests
/// beside one upload had a p99 of 60-72 ms on loopback, at 4 MiB 18-28 ms. So QUIC keeps 4 MiB
/// (one stream: about 420 Mbit/s at 80 ms) until it has per-stream tuning of its own.
pub(crate) const QUIC_STREAM_WINDOW: u32 = 4 << 20;

/// What of the performance settings goes into a QUIC connection's transport parameters, which
/// are fixed in its handshake (an edge that learns other settings from its hub reconnects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TransportParameters {
    stream_window: u32,
    connection_window: u64,
    keep_alive: Duration,
    idle_timeout: Duration,
}

impl From<&PerformanceSettings> for TransportParameters {
    fn from(performance: &PerformanceSettings) -> Self {
        Self {
            stream_window: performance.stream_window_max.min(QUIC_STREAM_WINDOW),
            connection_window: performance.window_budget.min(u64::from(u32::MAX)),
            // Frequent enough that a hub restarted with the same identity answers with a
            // stateless reset within about a second (see `server_endpoint`); a PING frame a
            // second is cheap.
            keep_alive: performance.heartbeat_interval.min(KEEP_ALIVE_INTERVAL),
            idle_timeout: performance.heartbeat_timeout,
        }
    }
}

/// Transport parameters: timeouts derived from the heartbeat settings so that a dead peer is
/// noticed within the heartbeat timeout, the initial stream limit, and datagram buffers.
pub(crate) fn transport_config(performance: &PerformanceSettings) -> TransportConfig {
    let parameters = TransportParameters::from(performance);
    let mut config = TransportConfig::default();
    config.max_concurrent_bidi_streams(VarInt::from_u32(INITIAL_CONCURRENT_STREAMS));
    config.max_concurrent_uni_streams(VarInt::from_u32(UNI_STREAMS));
    config.keep_alive_interval(Some(parameters.keep_alive));
    if let Ok(idle) = quinn::IdleTimeout::try_from(parameters.idle_timeout) {
        config.max_idle_timeout(Some(idle));
    }
    config.stream_receive_window(VarInt::from_u32(parameters.stream_window));
    config.receive_window(VarInt::from_u64(parameters.connection_window).unwrap_or(VarInt::MAX));
    config.send_window(parameters.connection_window);
    // BBR, not quinn's default Cubic: Cubic (no HyStart) overshoots slow start on a long path,
    // loses a large part of its window at once and climbs back slowly; over an emulated 1 Gbit/s
    // 80 ms link one stream got 0.09 Gbit/s with Cubic and 0.70 with BBR (0.01 vs 0.56 with
    // 0.1 % loss); on loopback the two were within the noise (docs/performance.md).
    config.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    config.datagram_receive_buffer_size(Some(8 << 20));
    config.datagram_send_buffer_size(8 << 20);
    config
}

/// Connection-level receive window of a peer that has not logged in: its hello line (at most
/// 4 KiB) fits, and nothing much more is buffered for it, however many streams it tries (it may
/// open only the control stream) or whatever stream windows it sees.
pub(crate) const PRE_LOGIN_WINDOW: u32 = 16 * 1024;
/// Unidirectional streams (the UDP overflow streams) the peer may have open at once.
const UNI_STREAMS: u32 = 4;

/// The hub's transport parameters for a connection that has not logged in yet: one
/// bidirectional stream (the control stream), no unidirectional ones, and a
/// [`PRE_LOGIN_WINDOW`] for the whole connection. [`open_after_login`] grants the rest.
fn pre_login_transport_config(performance: &PerformanceSettings) -> TransportConfig {
    let mut config = transport_config(performance);
    config.max_concurrent_bidi_streams(VarInt::from_u32(1));
    config.max_concurrent_uni_streams(VarInt::from_u32(0));
    config.receive_window(VarInt::from_u32(PRE_LOGIN_WINDOW));
    config
}

/// Grants a logged-in peer the windows of `performance` and up to `max_streams` streams at once
/// besides its control stream and [`super::STREAM_LIMIT_HEADROOM`] (quinn sends the new limits at
/// once).
pub(crate) fn open_after_login(
    connection: &quinn::Connection,
    performance: &PerformanceSettings,
    max_streams: u64,
) {
    let parameters = TransportParameters::from(performance);
    connection
        .set_receive_window(VarInt::from_u64(parameters.connection_window).unwrap_or(VarInt::MAX));
    let streams = stream_ceiling(max_streams).min(INITIAL_CONCURRENT_STREAMS);
    connection.set_max_concurrent_bi_streams(VarInt::from_u32(streams));
    connection.set_max_concurrent_uni_streams(VarInt::from_u32(UNI_STREAMS));
}

/// Reads and drops the datagrams of a peer that has not logged in (it gets no UDP service yet,
/// and quinn would otherwise keep up to the datagram receive buffer for it); returns when the
/// connection ends.
pub(crate) async fn discard_datagrams(connection: &quinn::Connection) {
    while connection.read_datagram().await.is_ok() {}
}

/// Incoming connection attempts quinn keeps before the hub has handled them (a Retry, or the
/// start of a handshake); beyond it new attempts are refused. The accept loop handles each at
/// once, so this is only reached under a flood faster than that loop.
const MAX_INCOMING: usize = 4096;
/// Bytes quinn buffers for one such attempt, and for all of them (default 10 MiB / 100 MiB:
/// 0-RTT data, which the tunnel does not use).
const INCOMING_BUFFER: u64 = 16 * 1024;
const INCOMING_BUFFER_TOTAL: u64 = 4 << 20;

/// Longest interval between QUIC keep-alives.
pub(crate) const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// The hub's QUIC endpoint on `port` (UDP), IPv6 dual-stack where available. `reset_key` keys
/// the stateless resets and the connection ids' integrity check: derived from the hub's
/// persistent identity, both are the same after a restart, so the restarted hub recognises an
/// edge's packet for a connection it no longer knows as one of its own ids and answers with a
/// reset the edge accepts; the edge then reconnects at once instead of waiting for its idle
/// timeout. (With per-start keys the new hub dropped those packets as "invalid CID" and the
/// edge waited 10 s.)
pub(crate) fn server_endpoint(
    address: Option<IpAddr>,
    port: u16,
    tls: Arc<rustls::ServerConfig>,
    performance: &PerformanceSettings,
    reset_key: &[u8; 32],
) -> Result<quinn::Endpoint, QuicSetupError> {
    let crypto = QuicServerConfig::try_from(tls)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server
        .transport_config(Arc::new(pre_login_transport_config(performance)))
        .max_incoming(MAX_INCOMING)
        .incoming_buffer_size(INCOMING_BUFFER)
        .incoming_buffer_size_total(INCOMING_BUFFER_TOTAL);
    let socket = bind_udp(address, port)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    let cid_key = u64::from_le_bytes(
        ring::digest::digest(&ring::digest::SHA256, reset_key).as_ref()[..8]
            .try_into()
            .unwrap_or([0; 8]),
    );
    let mut endpoint = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        reset_key,
    )));
    endpoint.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    Ok(quinn::Endpoint::new(
        endpoint,
        Some(server),
        socket,
        runtime,
    )?)
}

/// The UDP socket on `address`, or on all addresses (dual-stack where available) when none.
fn bind_udp(address: Option<IpAddr>, port: u16) -> std::io::Result<std::net::UdpSocket> {
    if let Some(ip) = address {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
        size_buffers(&socket);
        return Ok(socket);
    }
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    let dual = (|| {
        let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)?;
        socket.set_only_v6(false)?;
        socket.bind(&v6.into())?;
        Ok::<_, std::io::Error>(socket)
    })();
    let socket = match dual {
        Ok(socket) => socket.into(),
        Err(_) => std::net::UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port)))?,
    };
    size_buffers(&socket);
    Ok(socket)
}

/// Kernel buffer asked for each way of a QUIC socket. The default (about 208 KiB) holds some
/// 90 full-size packets: a burst of a fast path, or a moment the process is not scheduled,
/// overflows it, and QUIC reads every such drop as congestion (measured over an emulated
/// 1 Gbit/s, 20 ms link: 0.05 Gbit/s with the default).
const UDP_SOCKET_BUFFER: usize = 8 << 20;

/// Asks for [`UDP_SOCKET_BUFFER`] each way; the kernel caps the request at `net.core.rmem_max` /
/// `wmem_max`, which is then said once per socket (the fix is the operator's sysctl).
fn size_buffers(socket: &std::net::UdpSocket) {
    let socket = socket2::SockRef::from(socket);
    let _ = socket.set_recv_buffer_size(UDP_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_SOCKET_BUFFER);
    // Linux reports twice what it granted (the doubling covers its bookkeeping).
    let recv = socket.recv_buffer_size().unwrap_or(0) / 2;
    let send = socket.send_buffer_size().unwrap_or(0) / 2;
    if recv < UDP_SOCKET_BUFFER / 2 || send < UDP_SOCKET_BUFFER / 2 {
        tracing::warn!(
            recv_bytes = recv,
            send_bytes = send,
            wanted = UDP_SOCKET_BUFFER,
            "the kernel capped the QUIC socket's buffers (net.core.rmem_max / wmem_max): \
             fast or long paths will see drops; raise both to at least 4194304"
        );
    }
}

/// The edge's QUIC client configuration.
pub fn client_config(
    tls: Arc<rustls::ClientConfig>,
    performance: &PerformanceSettings,
) -> Result<quinn::ClientConfig, QuicSetupError> {
    let crypto = QuicClientConfig::try_from(tls)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport_config(performance)));
    Ok(client)
}

/// `config` with the transport parameters of `performance`: a connection's parameters (its
/// download windows among them) are fixed in its handshake, so each connection is made with the
/// performance settings the edge knows at that moment.
pub(crate) fn with_performance(
    config: &quinn::ClientConfig,
    performance: &PerformanceSettings,
) -> quinn::ClientConfig {
    let mut config = config.clone();
    config.transport_config(Arc::new(transport_config(performance)));
    config
}

/// A client endpoint able to reach `hub`.
pub(crate) fn client_endpoint(hub: SocketAddr) -> Result<quinn::Endpoint, QuicSetupError> {
    let bind: SocketAddr = if hub.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        ([0, 0, 0, 0], 0).into()
    };
    let socket = std::net::UdpSocket::bind(bind)?;
    size_buffers(&socket);
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        runtime,
    )?)
}
