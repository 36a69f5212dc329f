//! The hub's UDP sessions of one connected edge: one connected UDP socket per session towards
//! `targetHost:<public port>`, the PROXY v2 DGRAM header in front of the first datagram (or of
//! every one), replies back through the tunnel, idle expiry on both sides.
//!
//! The table belongs to the edge's session task; each session's reply reader is its own task
//! and reports activity through an atomic timestamp, so the table stays single-owner.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use remoteingress_ipc_schema::{PortProtocol, UdpProxyHeaderMode};
use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

use super::session::SessionTable;
use crate::hub::forward::ForwardContext;
use crate::limited_warn;
use crate::metrics::UdpStats;
use crate::proxy_protocol::{v2, ProxyTransport};
use crate::transport::datagram::{UdpMessage, MAX_UDP_PAYLOAD};
use crate::transport::tunnel::Tunnel;

/// Most sessions one edge may have open on the hub.
const MAX_SESSIONS: usize = 65_536;
/// Kernel buffers of the per-session sockets.
const SOCKET_BUFFER: usize = 1 << 20;

/// One session towards the target.
#[derive(Debug)]
struct Session {
    socket: Arc<UdpSocket>,
    header: Bytes,
    header_sent: bool,
    reader: AbortHandle,
    /// Milliseconds since `HubUdp::epoch` of the last reply from the target.
    last_reply_ms: Arc<AtomicU64>,
}

/// The UDP sessions of one connected edge.
#[derive(Debug)]
pub(crate) struct HubUdp {
    table: SessionTable<u32, Session>,
    /// The edge's id, grant, settings and warning limiter (shared with its TCP streams).
    context: Arc<ForwardContext>,
    mode: UdpProxyHeaderMode,
    tunnel: Tunnel,
    stats: Arc<UdpStats>,
    epoch: Instant,
}

impl HubUdp {
    pub(crate) fn new(
        context: Arc<ForwardContext>,
        idle: Duration,
        tunnel: Tunnel,
        stats: Arc<UdpStats>,
    ) -> Self {
        Self {
            table: SessionTable::new(idle, MAX_SESSIONS),
            mode: context.settings.udp_proxy_header,
            context,
            tunnel,
            stats,
            epoch: Instant::now(),
        }
    }

    /// Handles one message from the edge.
    pub(crate) async fn handle_from_edge(&mut self, message: UdpMessage) {
        match message {
            UdpMessage::Open { session, header } => self.open(session, header).await,
            UdpMessage::Data { session, payload } => self.data(session, &payload),
            UdpMessage::Close { session } => {
                if let Some(closed) = self.table.remove(session) {
                    closed.reader.abort();
                }
                self.stats.set_sessions(self.table.len());
            }
        }
    }

    async fn open(&mut self, session: u32, header: Bytes) {
        let port = match v2::parse(&header) {
            Ok((parsed, used)) if used == header.len() => match parsed.addresses {
                Some(addresses) if parsed.transport == Some(ProxyTransport::Datagram) => {
                    addresses.destination.port()
                }
                _ => {
                    limited_warn!(self.context.warnings, edge_id = %self.context.edge_id, session, "UDP_OPEN without a DGRAM address header; refused");
                    let _ = self.tunnel.send_udp(UdpMessage::Close { session });
                    return;
                }
            },
            Ok(_) | Err(_) => {
                limited_warn!(
                    self.context.warnings,
                    edge_id = %self.context.edge_id,
                    session,
                    "UDP_OPEN payload is not one PROXY v2 header; refused"
                );
                let _ = self.tunnel.send_udp(UdpMessage::Close { session });
                return;
            }
        };
        if !self
            .context
            .grant
            .allows(&self.context.edge_id, PortProtocol::Udp, port)
        {
            let _ = self.tunnel.send_udp(UdpMessage::Close { session });
            return;
        }
        let socket = match connect(&self.context.settings.target_host, port).await {
            Ok(socket) => Arc::new(socket),
            Err(error) => {
                limited_warn!(self.context.warnings, edge_id = %self.context.edge_id, session, port, %error, "cannot open a UDP socket to the target");
                let _ = self.tunnel.send_udp(UdpMessage::Close { session });
                return;
            }
        };
        let last_reply_ms = Arc::new(AtomicU64::new(0));
        let reader = tokio::spawn(read_replies(
            socket.clone(),
            session,
            self.tunnel.clone(),
            self.stats.clone(),
            last_reply_ms.clone(),
            self.epoch,
        ))
        .abort_handle();
        let value = Session {
            socket,
            header,
            header_sent: false,
            reader,
            last_reply_ms,
        };
        match self.table.insert(session, session, Instant::now(), value) {
            Ok(Some(replaced)) => replaced.reader.abort(),
            Ok(None) => {}
            Err(full) => {
                limited_warn!(self.context.warnings, edge_id = %self.context.edge_id, %full, "UDP session refused");
                let _ = self.tunnel.send_udp(UdpMessage::Close { session });
            }
        }
        self.stats.set_sessions(self.table.len());
    }

    fn data(&mut self, session: u32, payload: &[u8]) {
        let mode = self.mode;
        let Some(entry) = self.table.touch(session, Instant::now()) else {
            // Unknown (expired, or its open was lost): tell the edge so it re-opens.
            self.stats.drop_one();
            let _ = self.tunnel.send_udp(UdpMessage::Close { session });
            return;
        };
        let with_header = mode == UdpProxyHeaderMode::Every || !entry.header_sent;
        let sent = if with_header {
            let mut datagram = BytesMut::with_capacity(entry.header.len() + payload.len());
            datagram.extend_from_slice(&entry.header);
            datagram.extend_from_slice(payload);
            entry.socket.try_send(&datagram)
        } else {
            entry.socket.try_send(payload)
        };
        match sent {
            Ok(_) => {
                entry.header_sent = true;
                self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::trace!(session, %error, "datagram to the target dropped");
                self.stats.drop_one();
            }
        }
    }

    /// Closes sessions idle in both directions past the timeout, on both sides.
    pub(crate) fn expire(&mut self) {
        let epoch = self.epoch;
        let expired = self.table.expire_with(Instant::now(), |session| {
            match session.last_reply_ms.load(Ordering::Relaxed) {
                0 => None,
                ms => Some(epoch + Duration::from_millis(ms)),
            }
        });
        for (session, closed) in expired {
            closed.reader.abort();
            let _ = self.tunnel.send_udp(UdpMessage::Close { session });
        }
        self.stats.set_sessions(self.table.len());
    }

    /// Ends every session (the tunnel is gone).
    pub(crate) fn close_all(&mut self) {
        for (_, closed) in self.table.drain() {
            closed.reader.abort();
        }
        self.stats.set_sessions(0);
    }
}

/// A UDP socket connected to the target's `port`.
async fn connect(host: &str, port: u16) -> std::io::Result<UdpSocket> {
    let target = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host} has no address")))?;
    let local: SocketAddr = match target.ip() {
        IpAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(local),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&local.into())?;
    let socket = UdpSocket::from_std(socket.into())?;
    socket.connect(target).await?;
    // A new socket is not known to be writable until the reactor has seen it; without this,
    // the session's first datagram (the one with the PROXY header) would meet WouldBlock.
    socket.writable().await?;
    Ok(socket)
}

/// Replies from the target go back through the tunnel; drops are counted.
async fn read_replies(
    socket: Arc<UdpSocket>,
    session: u32,
    tunnel: Tunnel,
    stats: Arc<UdpStats>,
    last_reply_ms: Arc<AtomicU64>,
    epoch: Instant,
) {
    let mut buffer = vec![0u8; MAX_UDP_PAYLOAD + 1];
    loop {
        let len = match socket.recv(&mut buffer).await {
            Ok(len) => len,
            // ICMP port unreachable and friends: keep the session; the target may come back.
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(_) => return,
        };
        let elapsed = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        last_reply_ms.store(elapsed.max(1), Ordering::Relaxed);
        let payload = Bytes::copy_from_slice(buffer.get(..len).unwrap_or_default());
        match tunnel.send_udp(UdpMessage::Data { session, payload }) {
            Ok(()) => {
                stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(crate::transport::quic::UdpSendError::Closed) => return,
            Err(crate::transport::quic::UdpSendError::Full) => stats.drop_one(),
        }
    }
}
