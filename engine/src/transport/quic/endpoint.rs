//! QUIC endpoints: transport parameters from the performance settings, the hub's server
//! endpoint (dual-stack UDP socket) and the edge's client endpoint.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{TransportConfig, VarInt};

use super::INITIAL_CONCURRENT_STREAMS;
use crate::config::PerformanceSettings;

/// Why QUIC could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuicSetupError {
    #[error("QUIC needs TLS 1.3: {0}")]
    Crypto(String),
    #[error("cannot open the QUIC socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// Largest QUIC stream receive window. quinn has no per-stream auto-tuning (the TLS mux has,
/// `tls_mux/window.rs`), so a QUIC stream always has its whole window: 16 MiB carries 1 Gbit/s
/// up to 130 ms of round trip, and is what one stalled stream (a target that never reads) can
/// pin; the connection's window (the budget) bounds all streams together.
pub const QUIC_STREAM_WINDOW: u32 = 16 << 20;

/// Transport parameters: timeouts derived from the heartbeat settings so that a dead peer is
/// noticed within the heartbeat timeout, the initial stream limit, and datagram buffers.
pub fn transport_config(performance: &PerformanceSettings) -> TransportConfig {
    let mut config = TransportConfig::default();
    config.max_concurrent_bidi_streams(VarInt::from_u32(INITIAL_CONCURRENT_STREAMS));
    config.max_concurrent_uni_streams(VarInt::from_u32(4));
    // Frequent enough that a hub restarted with the same identity answers with a stateless
    // reset within about a second (see `server_endpoint`); a PING frame a second is cheap.
    config.keep_alive_interval(Some(
        performance.heartbeat_interval.min(KEEP_ALIVE_INTERVAL),
    ));
    if let Ok(idle) = quinn::IdleTimeout::try_from(performance.heartbeat_timeout) {
        config.max_idle_timeout(Some(idle));
    }
    config.stream_receive_window(VarInt::from_u32(
        performance.stream_window_max.min(QUIC_STREAM_WINDOW),
    ));
    let connection_window = performance.window_budget.min(u64::from(u32::MAX));
    config.receive_window(VarInt::from_u64(connection_window).unwrap_or(VarInt::MAX));
    config.send_window(connection_window);
    config.datagram_receive_buffer_size(Some(8 << 20));
    config.datagram_send_buffer_size(8 << 20);
    config
}

/// The hub's QUIC endpoint on `port` (UDP), IPv6 dual-stack where available.
/// Longest interval between QUIC keep-alives.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// The hub's QUIC endpoint. `reset_key` keys the stateless resets and the connection ids'
/// integrity check: derived from the hub's persistent identity, both are the same after a
/// restart, so the restarted hub recognises an edge's packet for a connection it no longer knows
/// as one of its own ids and answers with a reset the edge accepts; the edge then reconnects at
/// once instead of waiting for its idle timeout. (With per-start keys the new hub dropped those
/// packets as "invalid CID" and the edge waited 10 s.)
pub fn server_endpoint(
    port: u16,
    tls: Arc<rustls::ServerConfig>,
    performance: &PerformanceSettings,
    reset_key: &[u8; 32],
) -> Result<quinn::Endpoint, QuicSetupError> {
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|e| QuicSetupError::Crypto(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(performance)));
    let socket = bind_udp(port)?;
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

fn bind_udp(port: u16) -> std::io::Result<std::net::UdpSocket> {
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    let dual = (|| {
        let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)?;
        socket.set_only_v6(false)?;
        socket.bind(&v6.into())?;
        Ok::<_, std::io::Error>(socket)
    })();
    match dual {
        Ok(socket) => Ok(socket.into()),
        Err(_) => std::net::UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port))),
    }
}

/// The edge's QUIC client configuration.
pub fn client_config(
    tls: Arc<rustls::ClientConfig>,
    performance: &PerformanceSettings,
) -> Result<quinn::ClientConfig, QuicSetupError> {
    let crypto =
        QuicClientConfig::try_from(tls).map_err(|e| QuicSetupError::Crypto(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport_config(performance)));
    Ok(client)
}

/// A client endpoint able to reach `hub`.
pub fn client_endpoint(hub: SocketAddr) -> Result<quinn::Endpoint, QuicSetupError> {
    let bind: SocketAddr = if hub.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        ([0, 0, 0, 0], 0).into()
    };
    Ok(quinn::Endpoint::client(bind)?)
}
